//! The async audit buffer: records the filter has already acted on, kept
//! until the sidecar acknowledges them (`audit.mode = "async"`).
//!
//! One [`Outbox`] lives in each VM (each Envoy worker). The filter pushes
//! an encoded record and lets the request go on at once; the root
//! context's timer (and every answer) asks [`Outbox::due`] what to send,
//! dispatches each call (an `AppendBatch` of the records waiting, oldest
//! first, up to the batch limits) and reports the answer with
//! [`Outbox::acknowledged`], [`Outbox::failed`] or
//! [`Outbox::unimplemented`]. A record leaves the buffer only when the
//! sidecar acknowledged it; retransmitting is safe because the sidecar
//! stores a `message_id` once. A sidecar that predates `AppendBatch` gets
//! one `Append` call per record instead.
//!
//! State owned here, and nothing else (no host calls, no clock: the caller
//! passes `now_ms`, a monotonic time in milliseconds):
//! - the bounded queue of unacknowledged records, oldest first;
//! - which of them are in flight, in which call, by call token;
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
    /// Records in one `AppendBatch` call at most.
    pub max_batch_records: usize,
    /// Bytes of encoded records in one call at most (a record bigger than
    /// this still goes, alone).
    pub max_batch_bytes: usize,
    /// Wait after the first failed call, in milliseconds; doubled on each
    /// further failure.
    pub backoff_base_ms: u64,
    /// Longest wait between attempts, in milliseconds.
    pub backoff_max_ms: u64,
}

impl OutboxConfig {
    /// The settings the filter uses: 50 ms after a first failure, doubling
    /// up to 500 ms, so a sidecar that comes back is found within about
    /// half a second; at most 4 calls in flight, each with up to 256
    /// records or 1 MiB. A small window makes the batches grow with the
    /// load: what arrives while the calls are out goes in the next ones.
    pub fn with_capacity(capacity: usize) -> OutboxConfig {
        OutboxConfig {
            capacity,
            max_in_flight: 4,
            max_batch_records: 256,
            max_batch_bytes: 1 << 20,
            backoff_base_ms: 50,
            backoff_max_ms: 500,
        }
    }
}

/// A call to make now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// Identifies the call inside the outbox (for [`Outbox::dispatched`]).
    pub call: u64,
    /// `AppendBatch` (the bytes are an `AuditBatch`), or `Append` (one
    /// encoded `AuditRecord`) once the sidecar refused batches.
    pub batch: bool,
    /// The request message.
    pub bytes: Vec<u8>,
    /// How many records it carries.
    pub records: usize,
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
    /// The call's records are stored; they left the buffer.
    Removed {
        /// How many.
        records: usize,
    },
    /// The call failed; its records stay and are sent again after the
    /// backoff.
    Retry {
        /// The `message_id` of its oldest record.
        message_id: String,
        /// How many records it carried.
        records: usize,
        /// How long until the next attempt, in milliseconds.
        backoff_ms: u64,
        /// Failed calls since the last success, this one included (1 for
        /// the first failure of a run, which is worth a log line).
        failures: u32,
    },
    /// The sidecar does not know `AppendBatch` (an older version): from
    /// now on every record goes in its own `Append` call, at once.
    BatchesRefused,
    /// The token was not ours (or already settled).
    Ignore,
}

/// The buffer of unacknowledged records (see the module doc).
#[derive(Debug)]
pub struct Outbox {
    config: OutboxConfig,
    entries: VecDeque<Entry>,
    /// Calls made or about to be made, not settled yet, and whether each
    /// is an `AppendBatch`.
    open_calls: BTreeMap<u64, bool>,
    /// Call token to call key.
    in_flight: BTreeMap<u32, u64>,
    next_key: u64,
    next_call: u64,
    /// Whether calls are `AppendBatch` (until the sidecar refuses one).
    batching: bool,
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
    /// The call carrying it, while one does.
    call: Option<u64>,
}

impl Outbox {
    /// An empty outbox.
    pub fn new(config: OutboxConfig) -> Outbox {
        Outbox {
            config,
            entries: VecDeque::new(),
            open_calls: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            next_key: 0,
            next_call: 0,
            batching: true,
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

    /// Calls to make at `now_ms`, their records oldest first and marked as
    /// in flight: none during a backoff; after failures, one probe call
    /// with one record; else enough calls to fill the window, each with as
    /// many waiting records as the batch limits allow (one per call once
    /// the sidecar refused batches). Report each call with
    /// [`Outbox::dispatched`] or [`Outbox::not_dispatched`].
    pub fn due(&mut self, now_ms: u64) -> Vec<Due> {
        if now_ms < self.resume_at_ms {
            return Vec::new();
        }
        let probing = self.failures > 0;
        let window = if probing { 1 } else { self.config.max_in_flight };
        let per_call = if probing || !self.batching { 1 } else { self.config.max_batch_records };
        let mut due = Vec::new();
        let mut waiting = self.entries.iter_mut().filter(|e| e.call.is_none()).peekable();
        while self.open_calls.len() < window && waiting.peek().is_some() {
            let call = self.next_call;
            self.next_call += 1;
            let mut records: Vec<&[u8]> = Vec::new();
            let mut bytes = 0;
            while let Some(entry) = waiting.next_if(|e| {
                records.is_empty()
                    || (records.len() < per_call
                        && bytes + e.bytes.len() <= self.config.max_batch_bytes)
            }) {
                entry.call = Some(call);
                bytes += entry.bytes.len();
                records.push(&entry.bytes);
            }
            let message = if self.batching {
                warrant_wire::encode_batch(records.iter().copied())
            } else {
                records.concat()
            };
            due.push(Due { call, batch: self.batching, bytes: message, records: records.len() });
            self.open_calls.insert(call, self.batching);
        }
        due
    }

    /// The call `call` is under way with `token`.
    pub fn dispatched(&mut self, call: u64, token: u32) {
        self.in_flight.insert(token, call);
    }

    /// The call `call` could not be made: it counts as a failure.
    pub fn not_dispatched(&mut self, call: u64, now_ms: u64) -> Settled {
        self.settle_failure(call, now_ms)
    }

    /// The sidecar acknowledged the call `token`: all its records are
    /// stored.
    pub fn acknowledged(&mut self, token: u32) -> Settled {
        let Some(call) = self.in_flight.remove(&token) else {
            return Settled::Ignore;
        };
        self.open_calls.remove(&call);
        self.failures = 0;
        self.resume_at_ms = 0;
        self.acknowledged_since_drop = true;
        let before = self.entries.len();
        let gap_key = self.gap_key;
        let mut gap_stored = false;
        self.entries.retain(|e| {
            let carried = e.call == Some(call);
            gap_stored |= carried && Some(e.key) == gap_key;
            !carried
        });
        if gap_stored {
            self.gap_key = None;
        }
        match before - self.entries.len() {
            0 => Settled::Ignore,
            records => Settled::Removed { records },
        }
    }

    /// The call `token` failed (transport error, timeout, or an error
    /// status from the sidecar).
    pub fn failed(&mut self, token: u32, now_ms: u64) -> Settled {
        match self.in_flight.remove(&token) {
            Some(call) => self.settle_failure(call, now_ms),
            None => Settled::Ignore,
        }
    }

    /// The call `token` was answered UNIMPLEMENTED. For an `AppendBatch`
    /// call (also one sent before an earlier refusal) this means the
    /// sidecar predates it: batching stops for good and the records are
    /// free to go again at once, one per `Append` call (no backoff: the
    /// sidecar answers). For an `Append` call it is a failure.
    pub fn unimplemented(&mut self, token: u32, now_ms: u64) -> Settled {
        let Some(&call) = self.in_flight.get(&token) else {
            return Settled::Ignore;
        };
        if self.open_calls.get(&call) != Some(&true) {
            return self.failed(token, now_ms);
        }
        self.in_flight.remove(&token);
        self.release(call);
        self.batching = false;
        Settled::BatchesRefused
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
        self.entries.push_back(Entry { key, message_id, bytes, call: None });
        key
    }

    /// Frees the records of `call` to be sent again; returns how many and
    /// the oldest one's `message_id`.
    fn release(&mut self, call: u64) -> (usize, Option<String>) {
        self.open_calls.remove(&call);
        let mut released = 0;
        let mut oldest = None;
        for entry in self.entries.iter_mut().filter(|e| e.call == Some(call)) {
            entry.call = None;
            released += 1;
            oldest.get_or_insert_with(|| entry.message_id.clone());
        }
        (released, oldest)
    }

    fn settle_failure(&mut self, call: u64, now_ms: u64) -> Settled {
        self.failures = self.failures.saturating_add(1);
        let shift = (self.failures - 1).min(16);
        let backoff_ms = self
            .config
            .backoff_base_ms
            .saturating_mul(1u64 << shift)
            .min(self.config.backoff_max_ms);
        self.resume_at_ms = now_ms.saturating_add(backoff_ms);
        match self.release(call) {
            (records, Some(message_id)) => {
                Settled::Retry { message_id, records, backoff_ms, failures: self.failures }
            }
            (_, None) => Settled::Ignore,
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use warrant_wire::AuditBatch;

    use super::*;

    /// An outbox with a window of 2 calls of one record each (batches are
    /// tested with [`batching`]), short backoffs.
    fn outbox(capacity: usize) -> Outbox {
        batching(capacity, 1, 1 << 20)
    }

    fn batching(capacity: usize, max_batch_records: usize, max_batch_bytes: usize) -> Outbox {
        Outbox::new(OutboxConfig {
            capacity,
            max_in_flight: 2,
            max_batch_records,
            max_batch_bytes,
            backoff_base_ms: 10,
            backoff_max_ms: 40,
        })
    }

    fn record(id: &str) -> Vec<u8> {
        AuditRecord { message_id: id.into(), ..Default::default() }.encode_to_vec()
    }

    fn push(outbox: &mut Outbox, id: &str) -> Result<(), Overflow> {
        outbox.push(id.to_string(), record(id))
    }

    /// The `message_id`s a call carries, decoding its message as the
    /// sidecar does.
    fn ids(due: &Due) -> Vec<String> {
        let records = if due.batch {
            AuditBatch::decode(due.bytes.as_slice()).unwrap().records
        } else {
            vec![AuditRecord::decode(due.bytes.as_slice()).unwrap()]
        };
        assert_eq!(records.len(), due.records);
        records.into_iter().map(|r| r.message_id).collect()
    }

    /// Sends what is due at `now`, giving tokens from `token` on; returns
    /// each call's token and record ids.
    fn send(outbox: &mut Outbox, now: u64, token: &mut u32) -> Vec<(u32, Vec<String>)> {
        let mut sent = Vec::new();
        for due in outbox.due(now) {
            *token += 1;
            outbox.dispatched(due.call, *token);
            sent.push((*token, ids(&due)));
        }
        sent
    }

    fn flat(sent: &[(u32, Vec<String>)]) -> Vec<Vec<&str>> {
        sent.iter().map(|(_, ids)| ids.iter().map(String::as_str).collect()).collect()
    }

    #[test]
    fn records_leave_only_when_acknowledged_oldest_first() {
        let mut outbox = outbox(8);
        let mut token = 0;
        for id in ["a", "b", "c"] {
            push(&mut outbox, id).unwrap();
        }
        let sent = send(&mut outbox, 0, &mut token);
        assert_eq!(flat(&sent), [["a"], ["b"]]);
        assert!(send(&mut outbox, 0, &mut token).is_empty(), "window of 2 is full");
        assert_eq!(outbox.acknowledged(sent[1].0), Settled::Removed { records: 1 });
        let next = send(&mut outbox, 0, &mut token);
        assert_eq!(flat(&next), [["c"]]);
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
        assert_eq!(
            settled,
            Settled::Retry { message_id: "a".into(), records: 1, backoff_ms: 10, failures: 1 }
        );
        assert!(outbox.due(109).is_empty(), "still backing off");
        // "b" is still in flight, so the probe window of one is full.
        assert!(outbox.due(110).is_empty());
        assert!(matches!(outbox.failed(sent[1].0, 110), Settled::Retry { backoff_ms: 20, .. }));
        assert!(outbox.due(129).is_empty());
        let probe = send(&mut outbox, 130, &mut token);
        assert_eq!(probe.len(), 1, "one probe after failures");
        assert_eq!(probe[0].1, ["a"], "the oldest record first");
        assert!(matches!(outbox.failed(probe[0].0, 130), Settled::Retry { backoff_ms: 40, .. }));
        let probe = send(&mut outbox, 170, &mut token);
        assert!(matches!(outbox.failed(probe[0].0, 170), Settled::Retry { backoff_ms: 40, .. }));
        // The sidecar is back: the window opens again.
        let probe = send(&mut outbox, 210, &mut token);
        assert!(matches!(outbox.acknowledged(probe[0].0), Settled::Removed { records: 1 }));
        assert_eq!(send(&mut outbox, 210, &mut token).len(), 2);
    }

    #[test]
    fn a_call_that_cannot_be_made_is_retried() {
        let mut outbox = outbox(8);
        push(&mut outbox, "a").unwrap();
        let due = outbox.due(0);
        assert!(matches!(outbox.not_dispatched(due[0].call, 0), Settled::Retry { .. }));
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
        outbox.push_gap("gap".into(), record("gap"));
        assert_eq!(outbox.len(), 2, "b and the gap record");

        // The gap record does not use a slot; a further overflow waits for
        // the first gap record to be acknowledged.
        push(&mut outbox, "e").unwrap();
        assert!(push(&mut outbox, "f").is_err());
        assert_eq!(outbox.take_gap(), None, "one gap record at a time");
        let sent = send(&mut outbox, 20, &mut token);
        assert_eq!(flat(&sent), [["b"], ["gap"]]);
        for (t, _) in sent {
            outbox.acknowledged(t);
        }
        assert_eq!(outbox.take_gap(), Some(1));
        assert_eq!(outbox.dropped_total(), 3);
    }

    #[test]
    fn a_call_carries_what_waits_up_to_the_batch_limits() {
        let mut outbox = batching(16, 3, 1 << 20);
        let mut token = 0;
        for id in ["a", "b", "c", "d", "e", "f", "g"] {
            push(&mut outbox, id).unwrap();
        }
        let sent = send(&mut outbox, 0, &mut token);
        assert_eq!(flat(&sent), [["a", "b", "c"], ["d", "e", "f"]]);
        assert!(send(&mut outbox, 0, &mut token).is_empty(), "window of 2 calls is full");
        push(&mut outbox, "h").unwrap();
        assert_eq!(outbox.acknowledged(sent[1].0), Settled::Removed { records: 3 });
        assert_eq!(outbox.len(), 5);
        // What arrived while the calls were out goes together.
        let next = send(&mut outbox, 0, &mut token);
        assert_eq!(flat(&next), [["g", "h"]]);
        assert_eq!(outbox.acknowledged(sent[0].0), Settled::Removed { records: 3 });
        assert_eq!(outbox.acknowledged(next[0].0), Settled::Removed { records: 2 });
        assert!(outbox.is_empty());
    }

    #[test]
    fn the_byte_limit_closes_a_batch_and_a_big_record_goes_alone() {
        let size = record("a").len();
        let mut outbox = batching(16, 10, 2 * size);
        let mut token = 0;
        push(&mut outbox, "a").unwrap();
        push(&mut outbox, "b").unwrap();
        outbox.push("big".into(), record(&"x".repeat(3 * size))).unwrap();
        push(&mut outbox, "c").unwrap();
        let sent = send(&mut outbox, 0, &mut token);
        assert_eq!(flat(&sent), [vec!["a", "b"], vec![&*"x".repeat(3 * size)]]);
        for (t, _) in &sent {
            outbox.acknowledged(*t);
        }
        assert_eq!(flat(&send(&mut outbox, 0, &mut token)), [["c"]]);
    }

    #[test]
    fn a_failed_batch_keeps_its_records_and_one_record_probes() {
        let mut outbox = batching(16, 8, 1 << 20);
        let mut token = 0;
        for id in ["a", "b", "c"] {
            push(&mut outbox, id).unwrap();
        }
        let sent = send(&mut outbox, 0, &mut token);
        assert_eq!(flat(&sent), [["a", "b", "c"]]);
        assert_eq!(
            outbox.failed(sent[0].0, 0),
            Settled::Retry { message_id: "a".into(), records: 3, backoff_ms: 10, failures: 1 }
        );
        assert_eq!(outbox.len(), 3);
        let probe = send(&mut outbox, 10, &mut token);
        assert_eq!(flat(&probe), [["a"]], "one record probes");
        assert_eq!(outbox.acknowledged(probe[0].0), Settled::Removed { records: 1 });
        assert_eq!(flat(&send(&mut outbox, 10, &mut token)), [["b", "c"]]);
    }

    #[test]
    fn a_sidecar_without_batches_gets_one_append_per_record_at_once() {
        let mut outbox = batching(16, 8, 1 << 20);
        let mut token = 0;
        for id in ["a", "b", "c"] {
            push(&mut outbox, id).unwrap();
        }
        let first = outbox.due(0);
        assert!(first[0].batch);
        outbox.dispatched(first[0].call, 1);
        assert_eq!(outbox.unimplemented(1, 0), Settled::BatchesRefused);
        token += 1;
        // No backoff: the sidecar answers, it only wants single records.
        let due = outbox.due(0);
        assert!(due.iter().all(|d| !d.batch && d.records == 1));
        assert_eq!(due.iter().map(ids).collect::<Vec<_>>(), [["a"], ["b"]]);
        for d in &due {
            token += 1;
            outbox.dispatched(d.call, token);
        }
        assert_eq!(outbox.acknowledged(token), Settled::Removed { records: 1 });
        // UNIMPLEMENTED for an Append is a failure like any other.
        assert!(matches!(
            outbox.unimplemented(token - 1, 0),
            Settled::Retry { backoff_ms: 10, .. }
        ));
        assert_eq!(outbox.len(), 2);
    }

    #[test]
    fn every_batch_in_flight_when_batches_are_refused_goes_again_at_once() {
        let mut outbox = batching(16, 2, 1 << 20);
        for id in ["a", "b", "c", "d"] {
            push(&mut outbox, id).unwrap();
        }
        let first = outbox.due(0);
        assert_eq!(first.iter().map(ids).collect::<Vec<_>>(), [["a", "b"], ["c", "d"]]);
        outbox.dispatched(first[0].call, 1);
        outbox.dispatched(first[1].call, 2);
        assert_eq!(outbox.unimplemented(1, 0), Settled::BatchesRefused);
        // The second batch was sent before the refusal: refused the same
        // way, not a failure with a backoff.
        assert_eq!(outbox.unimplemented(2, 0), Settled::BatchesRefused);
        let due = outbox.due(0);
        assert!(due.iter().all(|d| !d.batch));
        assert_eq!(due.iter().map(ids).collect::<Vec<_>>(), [["a"], ["b"]]);
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
