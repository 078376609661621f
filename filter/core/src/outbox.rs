//! The async audit buffer: records the filter has already acted on, kept
//! until the sidecar acknowledges them (`audit.mode = "async"`).
//!
//! One [`Outbox`] lives in each VM (each Envoy worker). The filter pushes
//! an encoded record and lets the request go on at once; the root
//! context's timer asks [`Outbox::due`] what to send, dispatches each
//! record as a unary `Append` call and reports the answer with
//! [`Outbox::acknowledged`] or [`Outbox::failed`]. A record leaves the
//! buffer only when the sidecar acknowledged it; retransmitting is safe
//! because the sidecar stores a `message_id` once.
//!
//! State owned here, and nothing else (no host calls, no clock: the caller
//! passes `now_ms`, a monotonic time in milliseconds):
//! - the bounded queue of unacknowledged records, oldest first;
//! - which of them are in flight, by call token;
//! - the retry backoff after failed calls: while it runs nothing is sent,
//!   and once it ends a single record probes the sidecar; a full window of
//!   [`OutboxConfig::max_in_flight`] calls resumes after a success;
//! - the overflow count: a record pushed into a full buffer is dropped and
//!   counted; [`Outbox::take_gap`] then hands the count to the caller once
//!   the sidecar answers again, to be recorded as a gap record (the one
//!   record allowed beyond the capacity), so the chain shows the hole.

use std::collections::{BTreeMap, VecDeque};

use sha2::{Digest, Sha256};
use warrant_wire::AuditRecord;

/// The `decision` of a gap record.
pub const GAP_DECISION: &str = "audit_gap";

/// The record that stands for `dropped` records this VM could not keep
/// (its buffer was full while the sidecar did not answer). Layout:
/// `status` `error`, `decision` [`GAP_DECISION`], `reason`
/// `"N audit records dropped: the filter's buffer was full"`, `notes`
/// `["dropped=N"]`, the node, and the hash of an empty body; no sender,
/// recipient or request line, since it stands for many requests.
pub fn gap_record(
    node: &str,
    message_id: String,
    dropped: u64,
    now_unix_nanos: i64,
) -> AuditRecord {
    AuditRecord {
        message_id,
        received_at_unix_nanos: now_unix_nanos,
        body_sha256: hex::encode(Sha256::digest(b"")),
        status: "error".into(),
        decision: GAP_DECISION.into(),
        reason: format!("{dropped} audit records dropped: the filter's buffer was full"),
        node: node.to_string(),
        identity_source: "none".into(),
        signature: "unsigned".into(),
        notes: vec![format!("dropped={dropped}")],
        ..Default::default()
    }
}

/// Limits and retry timing of an [`Outbox`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxConfig {
    /// Records held at most (not counting one gap record).
    pub capacity: usize,
    /// Calls in flight at most while the sidecar answers.
    pub max_in_flight: usize,
    /// Wait after the first failed call, in milliseconds; doubled on each
    /// further failure.
    pub backoff_base_ms: u64,
    /// Longest wait between attempts, in milliseconds.
    pub backoff_max_ms: u64,
}

impl OutboxConfig {
    /// The timing the filter uses: 50 ms after a first failure, doubling up
    /// to 500 ms, so a sidecar that comes back is found within about half a
    /// second; 32 calls in flight.
    pub fn with_capacity(capacity: usize) -> OutboxConfig {
        OutboxConfig { capacity, max_in_flight: 32, backoff_base_ms: 50, backoff_max_ms: 500 }
    }
}

/// A record to send now: its key (for [`Outbox::dispatched`]) and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// Identifies the record inside the outbox.
    pub key: u64,
    /// The encoded `AuditRecord`.
    pub bytes: Vec<u8>,
}

/// The buffer was full: the record was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow {
    /// Records dropped since the outbox was created.
    pub dropped_total: u64,
}

/// What an answer settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// The record is stored; it left the buffer.
    Remove {
        /// Its `message_id`.
        message_id: String,
    },
    /// The call failed; the record stays and is sent again after the
    /// backoff.
    Retry {
        /// Its `message_id`.
        message_id: String,
        /// How long until the next attempt, in milliseconds.
        backoff_ms: u64,
        /// Failed calls since the last success, this one included (1 for
        /// the first failure of a run, which is worth a log line).
        failures: u32,
    },
    /// The token was not ours (or already settled).
    Ignore,
}

/// The buffer of unacknowledged records (see the module doc).
#[derive(Debug)]
pub struct Outbox {
    config: OutboxConfig,
    entries: VecDeque<Entry>,
    /// Call token to entry key.
    in_flight: BTreeMap<u32, u64>,
    next_key: u64,
    /// Failed calls since the last success.
    failures: u32,
    /// Nothing is sent before this time.
    resume_at_ms: u64,
    dropped_unreported: u64,
    dropped_total: u64,
    /// Whether a call succeeded since the last drop: the sidecar is known
    /// to answer. (No failure yet is not the same: the calls sent before
    /// the drop may simply not have been answered.)
    acknowledged_since_drop: bool,
    /// The gap record in the buffer, if any (one at a time).
    gap_key: Option<u64>,
}

#[derive(Debug)]
struct Entry {
    key: u64,
    message_id: String,
    bytes: Vec<u8>,
    sending: bool,
}

impl Outbox {
    /// An empty outbox.
    pub fn new(config: OutboxConfig) -> Outbox {
        Outbox {
            config,
            entries: VecDeque::new(),
            in_flight: BTreeMap::new(),
            next_key: 0,
            failures: 0,
            resume_at_ms: 0,
            dropped_unreported: 0,
            dropped_total: 0,
            acknowledged_since_drop: false,
            gap_key: None,
        }
    }

    /// Queues a record.
    ///
    /// # Errors
    /// [`Overflow`] when the buffer holds [`OutboxConfig::capacity`]
    /// records: this one is dropped and counted for the next gap record.
    pub fn push(&mut self, message_id: String, bytes: Vec<u8>) -> Result<(), Overflow> {
        let held = self.entries.len().saturating_sub(usize::from(self.gap_key.is_some()));
        if held >= self.config.capacity {
            self.dropped_unreported += 1;
            self.dropped_total += 1;
            self.acknowledged_since_drop = false;
            return Err(Overflow { dropped_total: self.dropped_total });
        }
        self.insert(message_id, bytes);
        Ok(())
    }

    /// The number of dropped records to report in a gap record, when there
    /// are some, no gap record is waiting already, and the last call
    /// succeeded after the last drop (the sidecar is back). The count is
    /// taken: pass the gap record to [`Outbox::push_gap`].
    pub fn take_gap(&mut self) -> Option<u64> {
        if self.dropped_unreported == 0 || self.gap_key.is_some() || !self.acknowledged_since_drop {
            return None;
        }
        Some(std::mem::take(&mut self.dropped_unreported))
    }

    /// Queues the gap record built for [`Outbox::take_gap`]'s count. It is
    /// never dropped: it is the one record held beyond the capacity.
    pub fn push_gap(&mut self, message_id: String, bytes: Vec<u8>) {
        let key = self.insert(message_id, bytes);
        self.gap_key = Some(key);
    }

    /// Records to send at `now_ms`, oldest first, marked as in flight:
    /// none during a backoff, one probe after failures, else enough to
    /// fill the window. Report each call with [`Outbox::dispatched`] or
    /// [`Outbox::not_dispatched`].
    pub fn due(&mut self, now_ms: u64) -> Vec<Due> {
        if now_ms < self.resume_at_ms {
            return Vec::new();
        }
        let window = if self.failures > 0 { 1 } else { self.config.max_in_flight };
        let sending = self.entries.iter().filter(|e| e.sending).count();
        let room = window.saturating_sub(sending);
        let mut due = Vec::new();
        for entry in self.entries.iter_mut().filter(|e| !e.sending).take(room) {
            entry.sending = true;
            due.push(Due { key: entry.key, bytes: entry.bytes.clone() });
        }
        due
    }

    /// The call for `key` is under way with `token`.
    pub fn dispatched(&mut self, key: u64, token: u32) {
        self.in_flight.insert(token, key);
    }

    /// The call for `key` could not be made: it counts as a failure.
    pub fn not_dispatched(&mut self, key: u64, now_ms: u64) -> Settled {
        self.settle_failure(key, now_ms)
    }

    /// The sidecar acknowledged the call `token`.
    pub fn acknowledged(&mut self, token: u32) -> Settled {
        let Some(key) = self.in_flight.remove(&token) else {
            return Settled::Ignore;
        };
        self.failures = 0;
        self.resume_at_ms = 0;
        self.acknowledged_since_drop = true;
        let Some(index) = self.entries.iter().position(|e| e.key == key) else {
            return Settled::Ignore;
        };
        if self.gap_key == Some(key) {
            self.gap_key = None;
        }
        match self.entries.remove(index) {
            Some(entry) => Settled::Remove { message_id: entry.message_id },
            None => Settled::Ignore,
        }
    }

    /// The call `token` failed (transport error, timeout, or an error
    /// status from the sidecar).
    pub fn failed(&mut self, token: u32, now_ms: u64) -> Settled {
        match self.in_flight.remove(&token) {
            Some(key) => self.settle_failure(key, now_ms),
            None => Settled::Ignore,
        }
    }

    /// Records waiting for an acknowledgement (gap record included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether every record was acknowledged.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records dropped because the buffer was full, since creation.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    fn insert(&mut self, message_id: String, bytes: Vec<u8>) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        self.entries.push_back(Entry { key, message_id, bytes, sending: false });
        key
    }

    fn settle_failure(&mut self, key: u64, now_ms: u64) -> Settled {
        self.failures = self.failures.saturating_add(1);
        let shift = (self.failures - 1).min(16);
        let backoff_ms = self
            .config
            .backoff_base_ms
            .saturating_mul(1u64 << shift)
            .min(self.config.backoff_max_ms);
        self.resume_at_ms = now_ms.saturating_add(backoff_ms);
        let Some(entry) = self.entries.iter_mut().find(|e| e.key == key) else {
            return Settled::Ignore;
        };
        entry.sending = false;
        Settled::Retry { message_id: entry.message_id.clone(), backoff_ms, failures: self.failures }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(capacity: usize) -> Outbox {
        Outbox::new(OutboxConfig {
            capacity,
            max_in_flight: 2,
            backoff_base_ms: 10,
            backoff_max_ms: 40,
        })
    }

    fn push(outbox: &mut Outbox, id: &str) -> Result<(), Overflow> {
        outbox.push(id.to_string(), id.as_bytes().to_vec())
    }

    /// Sends what is due at `now`, giving tokens from `token` on.
    fn send(outbox: &mut Outbox, now: u64, token: &mut u32) -> Vec<(u32, Vec<u8>)> {
        let mut sent = Vec::new();
        for due in outbox.due(now) {
            *token += 1;
            outbox.dispatched(due.key, *token);
            sent.push((*token, due.bytes));
        }
        sent
    }

    #[test]
    fn records_leave_only_when_acknowledged_oldest_first() {
        let mut outbox = outbox(8);
        let mut token = 0;
        for id in ["a", "b", "c"] {
            push(&mut outbox, id).unwrap();
        }
        let sent = send(&mut outbox, 0, &mut token);
        assert_eq!(sent.iter().map(|s| s.1.clone()).collect::<Vec<_>>(), [b"a", b"b"]);
        assert!(send(&mut outbox, 0, &mut token).is_empty(), "window of 2 is full");
        assert_eq!(outbox.acknowledged(sent[1].0), Settled::Remove { message_id: "b".into() });
        let next = send(&mut outbox, 0, &mut token);
        assert_eq!(next.iter().map(|s| s.1.clone()).collect::<Vec<_>>(), [b"c"]);
        assert_eq!(outbox.len(), 2);
        assert_eq!(outbox.acknowledged(sent[1].0), Settled::Ignore, "settled twice");
    }

    #[test]
    fn failure_backs_off_doubling_then_probes_with_one_record() {
        let mut outbox = outbox(8);
        let mut token = 0;
        for id in ["a", "b", "c"] {
            push(&mut outbox, id).unwrap();
        }
        let sent = send(&mut outbox, 100, &mut token);
        let settled = outbox.failed(sent[0].0, 100);
        assert_eq!(settled, Settled::Retry { message_id: "a".into(), backoff_ms: 10, failures: 1 });
        assert!(outbox.due(109).is_empty(), "still backing off");
        // "b" is still in flight, so the probe window of one is full.
        assert!(outbox.due(110).is_empty());
        assert!(matches!(outbox.failed(sent[1].0, 110), Settled::Retry { backoff_ms: 20, .. }));
        assert!(outbox.due(129).is_empty());
        let probe = send(&mut outbox, 130, &mut token);
        assert_eq!(probe.len(), 1, "one probe after failures");
        assert_eq!(probe[0].1, b"a", "the oldest record first");
        assert!(matches!(outbox.failed(probe[0].0, 130), Settled::Retry { backoff_ms: 40, .. }));
        let probe = send(&mut outbox, 170, &mut token);
        assert!(matches!(outbox.failed(probe[0].0, 170), Settled::Retry { backoff_ms: 40, .. }));
        // The sidecar is back: the window opens again.
        let probe = send(&mut outbox, 210, &mut token);
        assert!(matches!(outbox.acknowledged(probe[0].0), Settled::Remove { .. }));
        assert_eq!(send(&mut outbox, 210, &mut token).len(), 2);
    }

    #[test]
    fn a_call_that_cannot_be_made_is_retried() {
        let mut outbox = outbox(8);
        push(&mut outbox, "a").unwrap();
        let due = outbox.due(0);
        assert!(matches!(outbox.not_dispatched(due[0].key, 0), Settled::Retry { .. }));
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox.due(10).len(), 1);
    }

    #[test]
    fn overflow_is_counted_and_reported_once_the_sidecar_answers() {
        let mut outbox = outbox(2);
        let mut token = 0;
        push(&mut outbox, "a").unwrap();
        push(&mut outbox, "b").unwrap();
        assert_eq!(push(&mut outbox, "c"), Err(Overflow { dropped_total: 1 }));
        assert_eq!(push(&mut outbox, "d"), Err(Overflow { dropped_total: 2 }));
        assert_eq!(outbox.take_gap(), None, "no call answered yet");
        let sent = send(&mut outbox, 0, &mut token);
        assert_eq!(outbox.take_gap(), None, "calls in flight, none answered");
        outbox.failed(sent[0].0, 0);
        outbox.failed(sent[1].0, 0);
        assert_eq!(outbox.take_gap(), None, "the sidecar is still down");

        let probe = send(&mut outbox, 20, &mut token);
        outbox.acknowledged(probe[0].0);
        assert_eq!(outbox.take_gap(), Some(2));
        assert_eq!(outbox.take_gap(), None, "taken");
        outbox.push_gap("gap-1".into(), b"gap".to_vec());
        assert_eq!(outbox.len(), 2, "b and the gap record");

        // The gap record does not use a slot; a further overflow waits for
        // the first gap record to be acknowledged.
        push(&mut outbox, "e").unwrap();
        assert!(push(&mut outbox, "f").is_err());
        assert_eq!(outbox.take_gap(), None, "one gap record at a time");
        let sent = send(&mut outbox, 20, &mut token);
        assert_eq!(sent.iter().map(|s| s.1.clone()).collect::<Vec<_>>(), [&b"b"[..], b"gap"]);
        for (t, _) in sent {
            outbox.acknowledged(t);
        }
        assert_eq!(outbox.take_gap(), Some(1));
        assert_eq!(outbox.dropped_total(), 3);
    }

    #[test]
    fn gap_record_names_the_count() {
        let record = gap_record("hop-1", "id".into(), 3, 5);
        assert_eq!(record.decision, "audit_gap");
        assert_eq!(record.status, "error");
        assert_eq!(record.notes, ["dropped=3"]);
        assert!(record.reason.starts_with("3 audit records dropped"), "{}", record.reason);
        assert_eq!(record.node, "hop-1");
    }

    #[test]
    fn unknown_tokens_are_ignored() {
        let mut outbox = outbox(2);
        assert_eq!(outbox.acknowledged(7), Settled::Ignore);
        assert_eq!(outbox.failed(7, 0), Settled::Ignore);
        assert!(outbox.is_empty());
    }
}
