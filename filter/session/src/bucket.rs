//! The stored form of the session table: buckets of slots, and their bytes.
//!
//! The table is a fixed number of *buckets*. Each bucket is one shared-data
//! key, `warrant.session.v1.<index>`, and holds up to [`WAYS`] *slots*; each
//! slot is one [`Entry`]: one agent's current session. All slots of a bucket
//! are read and written together, so one compare-and-swap on one key orders
//! every change to the sessions of all agents that hash to that bucket.
//!
//! # Value format (version 1)
//!
//! All integers are big-endian.
//!
//! ```text
//! offset  size  field
//! 0       1     format version, 1
//! 1       1     slot count n, 0..=8
//! 2       48·n  n entries:
//!   +0    16      agent fingerprint (see below)
//!   +16   16      session id (raw bytes)
//!   +32   8       started_at, i64 milliseconds since the Unix epoch
//!   +40   8       last_seen, i64 milliseconds since the Unix epoch
//! ```
//!
//! For example, a bucket holding one session is 50 bytes:
//! `01 01 <16 fingerprint bytes> <16 id bytes> <8 started> <8 last seen>`.
//! A full bucket is [`MAX_BUCKET_LEN`] = 386 bytes.
//!
//! The *agent fingerprint* is the first 16 bytes of
//! SHA-256(`"warrant.session.v1\0"` ‖ agent name); the agent name itself is
//! not stored, so a slot has a fixed size whatever the name's length.
//!
//! Decoding is total: any value that is not exactly this layout (wrong
//! version, count above 8, length not `2 + 48·n`, or the same fingerprint
//! twice) decodes as an empty bucket, never as an error or a panic. The next
//! write then replaces it. An empty or missing value is an empty bucket too.

use crate::id::SessionId;

/// Slots per bucket.
pub const WAYS: usize = 8;

/// Bytes of one encoded slot.
pub const ENTRY_LEN: usize = 48;

/// Bytes before the slots: version and count.
pub const HEADER_LEN: usize = 2;

/// The largest encoded bucket: `HEADER_LEN + WAYS · ENTRY_LEN` = 386.
pub const MAX_BUCKET_LEN: usize = HEADER_LEN + WAYS * ENTRY_LEN;

/// The value format version written in byte 0.
pub const FORMAT_VERSION: u8 = 1;

/// The 16-byte stand-in for an agent name inside a slot.
pub type Fingerprint = [u8; 16];

/// One slot: an agent's current session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Which agent (see the module doc for how it is computed).
    pub agent: Fingerprint,
    /// The session's id.
    pub id: SessionId,
    /// When the session started, in Unix milliseconds.
    pub started_at_millis: i64,
    /// When a request of the session was last recorded, in Unix
    /// milliseconds (updated at most once per touch interval).
    pub last_seen_millis: i64,
}

/// The decoded value of one bucket key: at most [`WAYS`] entries with
/// distinct agents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bucket {
    entries: Vec<Entry>,
}

impl Bucket {
    /// Decodes a stored value. Anything malformed gives an empty bucket.
    pub fn decode(bytes: &[u8]) -> Bucket {
        decode_strict(bytes).unwrap_or_default()
    }

    /// Encodes the bucket in the version 1 format.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX_BUCKET_LEN);
        out.push(FORMAT_VERSION);
        // At most WAYS (8) entries by construction, so this never saturates.
        out.push(u8::try_from(self.entries.len()).unwrap_or(u8::MAX));
        for entry in &self.entries {
            out.extend_from_slice(&entry.agent);
            out.extend_from_slice(entry.id.as_bytes());
            out.extend_from_slice(&entry.started_at_millis.to_be_bytes());
            out.extend_from_slice(&entry.last_seen_millis.to_be_bytes());
        }
        out
    }

    /// The entries, in slot order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The slot index holding `agent`, if any.
    pub fn position(&self, agent: &Fingerprint) -> Option<usize> {
        self.entries.iter().position(|entry| entry.agent == *agent)
    }

    /// True when every slot is taken.
    pub fn is_full(&self) -> bool {
        self.entries.len() >= WAYS
    }

    /// Puts `entry` into the bucket: over the slot of the same agent, else
    /// into a free slot, else over the least recently seen entry (the lowest
    /// slot wins a tie). Returns the entry it replaced, if any.
    pub fn insert(&mut self, entry: Entry) -> Option<Entry> {
        let target = self.position(&entry.agent).or_else(|| {
            if self.is_full() {
                self.least_recently_seen()
            } else {
                None
            }
        });
        match target.and_then(|index| self.entries.get_mut(index)) {
            Some(slot) => Some(std::mem::replace(slot, entry)),
            None => {
                self.entries.push(entry);
                None
            }
        }
    }

    /// Sets `last_seen_millis` of the entry at `index`; no-op when absent.
    pub(crate) fn touch(&mut self, index: usize, now_millis: i64) {
        if let Some(entry) = self.entries.get_mut(index) {
            entry.last_seen_millis = now_millis;
        }
    }

    /// The slot whose entry was seen least recently (lowest index on ties).
    pub fn least_recently_seen(&self) -> Option<usize> {
        self.entries
            .iter()
            .enumerate()
            .min_by_key(|(index, entry)| (entry.last_seen_millis, *index))
            .map(|(index, _)| index)
    }
}

/// Decodes the exact layout, or `None`.
fn decode_strict(bytes: &[u8]) -> Option<Bucket> {
    let (&version, rest) = bytes.split_first()?;
    let (&count, body) = rest.split_first()?;
    let count = usize::from(count);
    if version != FORMAT_VERSION || count > WAYS || body.len() != count.checked_mul(ENTRY_LEN)? {
        return None;
    }

    let mut bucket = Bucket { entries: Vec::with_capacity(count) };
    for chunk in body.chunks_exact(ENTRY_LEN) {
        let entry = decode_entry(chunk)?;
        if bucket.position(&entry.agent).is_some() {
            return None;
        }
        bucket.entries.push(entry);
    }
    Some(bucket)
}

fn decode_entry(chunk: &[u8]) -> Option<Entry> {
    let agent: Fingerprint = chunk.get(0..16)?.try_into().ok()?;
    let id: [u8; SessionId::LEN] = chunk.get(16..32)?.try_into().ok()?;
    let started: [u8; 8] = chunk.get(32..40)?.try_into().ok()?;
    let last_seen: [u8; 8] = chunk.get(40..48)?.try_into().ok()?;
    Some(Entry {
        agent,
        id: SessionId::from_bytes(id),
        started_at_millis: i64::from_be_bytes(started),
        last_seen_millis: i64::from_be_bytes(last_seen),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{RandomSource, SeededRandom};

    fn entry(agent: u8, last_seen: i64) -> Entry {
        Entry {
            agent: [agent; 16],
            id: SessionId::from_bytes([agent.wrapping_add(100); 16]),
            started_at_millis: last_seen - 5,
            last_seen_millis: last_seen,
        }
    }

    fn bucket_of(entries: &[Entry]) -> Bucket {
        Bucket { entries: entries.to_vec() }
    }

    #[test]
    fn encode_matches_the_documented_layout() {
        let bytes = bucket_of(&[entry(1, 0x0102)]).encode();
        assert_eq!(bytes.len(), 50);
        assert_eq!(&bytes[..2], &[1, 1]);
        assert_eq!(&bytes[2..18], &[1; 16]);
        assert_eq!(&bytes[18..34], &[101; 16]);
        assert_eq!(&bytes[34..42], &0x00fd_i64.to_be_bytes());
        assert_eq!(&bytes[42..50], &[0, 0, 0, 0, 0, 0, 0x01, 0x02]);
    }

    #[test]
    fn full_bucket_encodes_to_max_bucket_len_and_round_trips() {
        let full = bucket_of(&(0..8).map(|i| entry(i, i64::from(i) * -7)).collect::<Vec<_>>());
        let bytes = full.encode();
        assert_eq!(bytes.len(), MAX_BUCKET_LEN);
        assert_eq!(Bucket::decode(&bytes), full);
    }

    #[test]
    fn malformed_values_decode_as_empty() {
        let good = bucket_of(&[entry(1, 10), entry(2, 20)]).encode();
        let mut wrong_version = good.clone();
        wrong_version[0] = 2;
        let mut count_too_high = good.clone();
        count_too_high[1] = 3;
        let mut count_above_ways = vec![1, 9];
        count_above_ways.extend(std::iter::repeat_n(0, 9 * ENTRY_LEN));
        let mut duplicate_agent = good.clone();
        duplicate_agent[2 + ENTRY_LEN..2 + ENTRY_LEN + 16].copy_from_slice(&[1; 16]);
        let mut trailing_byte = good.clone();
        trailing_byte.push(0);

        let cases: [(&str, &[u8]); 8] = [
            ("empty", &[]),
            ("version only", &[1]),
            ("wrong version", &wrong_version),
            ("count says more than present", &count_too_high),
            ("count above ways", &count_above_ways),
            ("same agent twice", &duplicate_agent),
            ("trailing byte", &trailing_byte),
            ("truncated entry", &good[..good.len() - 1]),
        ];
        for (name, bytes) in cases {
            assert_eq!(Bucket::decode(bytes), Bucket::default(), "case {name}");
        }
        assert_eq!(Bucket::decode(&good).entries().len(), 2);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_valid_decodes_round_trip() {
        // A poor man's fuzz run: random lengths and contents, plus random
        // single-byte corruptions of valid encodings.
        let mut random = SeededRandom::new(0x5e55);
        for round in 0..20_000u32 {
            let mut len_byte = [0u8; 2];
            random.fill(&mut len_byte).unwrap();
            let len = usize::from(u16::from_le_bytes(len_byte)) % (MAX_BUCKET_LEN + 8);
            let mut bytes = vec![0u8; len];
            random.fill(&mut bytes).unwrap();
            if round % 2 == 0 && len >= 2 {
                // Make the header plausible so the entry decoding runs.
                bytes[0] = FORMAT_VERSION;
                bytes[1] = u8::try_from((len - 2) / ENTRY_LEN).unwrap_or(0);
            }
            let bucket = Bucket::decode(&bytes);
            if !bucket.entries().is_empty() {
                assert_eq!(bucket.encode(), bytes, "round {round}: decode then encode differs");
            }
        }
    }

    #[test]
    fn insert_replaces_same_agent_then_fills_free_slot_then_evicts_least_recent() {
        let mut bucket = bucket_of(&[entry(1, 10), entry(2, 20)]);
        let replaced = bucket.insert(entry(2, 30));
        assert_eq!(replaced.map(|e| e.last_seen_millis), Some(20));
        assert_eq!(bucket.insert(entry(3, 5)), None);
        assert_eq!(bucket.entries().len(), 3);

        let mut full = bucket_of(&(0..8).map(|i| entry(i, 100 - i64::from(i))).collect::<Vec<_>>());
        let evicted = full.insert(entry(50, 200)).unwrap();
        assert_eq!(evicted.agent, [7; 16], "slot 7 had the oldest last_seen");
        assert_eq!(full.entries().len(), WAYS);
        assert!(full.position(&[50; 16]).is_some());
    }

    #[test]
    fn least_recently_seen_prefers_the_lowest_slot_on_ties() {
        let bucket = bucket_of(&[entry(1, 10), entry(2, 5), entry(3, 5)]);
        assert_eq!(bucket.least_recently_seen(), Some(1));
        assert_eq!(Bucket::default().least_recently_seen(), None);
    }
}
