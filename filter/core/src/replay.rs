//! Replay detection for signed envelopes, across all of Envoy's workers.
//!
//! A signed envelope is valid for a window of time (its `timestamp` at most
//! `identity.envelope_max_age_secs` old and `envelope_max_future_secs`
//! ahead). Inside that window, anyone who saw it once could send it again
//! and be authenticated as its sender. [`ReplayGuard::observe`] remembers
//! every verified envelope's signature until its window has closed and says
//! whether it has been seen before; the pipeline refuses a second sighting
//! with 403 `replay_detected`.
//!
//! # Where the state lives
//!
//! Like sessions (see `warrant-session`, whose [`SharedStore`] trait this
//! reuses), the state is in proxy-wasm shared data: process-global, with
//! compare-and-swap writes, but no create-if-absent, no TTL, no delete and
//! no key listing. So the guard works on a fixed table of
//! `B = ceil(capacity / WAYS)` bucket keys, `warrant.replay.v1.0` …
//! `warrant.replay.v1.<B-1>`, created empty by [`ReplayGuard::prepare`] in
//! `on_configure` of every VM.
//!
//! # The stored format (version 1)
//!
//! ```text
//! offset  size  field
//! 0       1     format version, 1
//! 1       1     entry count n, 0..=16
//! 2       24·n  n entries:
//!   +0    16      signature fingerprint
//!   +16   8       expires_at, i64 Unix seconds, big-endian
//! ```
//!
//! A full bucket is [`MAX_BUCKET_LEN`] = 386 bytes. The *fingerprint* is
//! SHA-256(`"warrant.replay.v1\0"` ‖ raw signature bytes); bytes 0..16 are
//! stored, bytes 16..24 (mod `B`) pick the bucket. The raw bytes (not the
//! base64 text) are hashed, so two spellings of one signature are one
//! entry; `verify_strict` already refuses malleable signatures, so one
//! message has one accepted signature per key. Decoding is total: any value
//! that is not exactly this layout reads as an empty bucket.
//!
//! # Expiry
//!
//! An envelope stamped `t` verifies while `now - t <= max_age`, so its entry
//! expires at `t + max_age + 1`. An expired entry is dropped the next time
//! its bucket is written. After expiry the envelope fails the timestamp
//! check anyway (400), so forgetting it opens nothing.
//!
//! # The write protocol and races
//!
//! [`ReplayGuard::observe`] reads the bucket and its cas; if a live entry has
//! the fingerprint, the envelope is a replay (no write). Otherwise it adds
//! the entry (dropping expired ones) and writes back with the cas. The host
//! serialises writes to a key and refuses a stale cas, so of two workers
//! racing with the same envelope exactly one write succeeds; the other
//! gets `CasMismatch`, re-reads, finds the winner's entry and reports a
//! replay. At most [`MAX_ATTEMPTS`] reads, then [`ReplayError::Contended`].
//!
//! # The memory bound, and what happens when it is reached
//!
//! At most `B · (386 + key length)` bytes of shared data, whatever the
//! traffic: about 3.3 MB for the default capacity of 131,072. When a bucket
//! holds [`WAYS`] live entries, a new envelope cannot be remembered without
//! forgetting one that can still be replayed, so the guard refuses it
//! ([`ReplayError::Full`], answered 503 `replay_check_unavailable`) rather
//! than open a replay hole. Size `replay.capacity` above the number of signed
//! envelopes expected within one window (`max_age + max_future` seconds);
//! because hashing spreads unevenly, a bucket fills before the table does.
//!
//! # What is not promised
//!
//! - The table is per Envoy process: two pods (or an Envoy restart) do not
//!   share it, so an envelope accepted by one hop's Envoy can be accepted
//!   once by another Envoy that it is replayed to.
//! - A client that retries an envelope whose first attempt was refused after
//!   this check (for example 503 `audit_unavailable`) gets
//!   `replay_detected`: a retry needs a fresh timestamp and signature.
//! - Signatures are hashed without a secret key, so an authenticated agent
//!   can grind messages until [`WAYS`] of them land in one bucket (about
//!   `B` signatures each) and, for one window, have every other envelope
//!   that hashes there refused with 503. That refuses, never accepts a
//!   replay; a keyed hash needs a key all VMs share (see `warrant-session`,
//!   same limitation).
//! - Two different messages with the same signature cannot exist, but the
//!   same message (sender, recipient, content and timestamp to the second)
//!   sent twice is, by design, a replay.

use std::fmt;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use warrant_session::{SetError, SharedStore, StoreError};

/// Entries per bucket.
pub const WAYS: usize = 16;

/// Bytes of one encoded entry: fingerprint and expiry.
pub const ENTRY_LEN: usize = 24;

/// The largest encoded bucket: 2 + 16 · 24 = 386 bytes.
pub const MAX_BUCKET_LEN: usize = 2 + WAYS * ENTRY_LEN;

/// Every bucket key starts with this; the index follows in decimal.
pub const KEY_PREFIX: &str = "warrant.replay.v1.";

/// Reads of a bucket before [`ReplayGuard::observe`] gives up.
pub const MAX_ATTEMPTS: u32 = 8;

const FORMAT_VERSION: u8 = 1;
const FINGERPRINT_DOMAIN: &[u8] = b"warrant.replay.v1\0";

/// Smallest and largest accepted `replay.capacity`.
pub const CAPACITY_RANGE: std::ops::RangeInclusive<u32> = 16..=1_048_576;

/// The `replay` section of the plugin configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    /// Refuse a signed envelope seen before within its window. Default
    /// `true`.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How many envelopes the table can remember at once (rounded up to a
    /// multiple of [`WAYS`]). Default 131,072: with the default 330 s window
    /// and buckets filling unevenly, room for about 200 signed envelopes a
    /// second, sustained. 16 to 1,048,576.
    #[serde(default = "default_capacity")]
    pub capacity: u32,
}

impl Default for ReplayConfig {
    fn default() -> ReplayConfig {
        ReplayConfig { enabled: true, capacity: default_capacity() }
    }
}

fn default_true() -> bool {
    true
}
fn default_capacity() -> u32 {
    131_072
}

/// Whether an envelope was seen before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sighting {
    /// First time: it is now remembered until it expires.
    First,
    /// A live entry has the same signature.
    Replayed,
}

/// Why a sighting could not be established (the request is refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayError {
    /// The store failed.
    Store {
        /// The bucket key.
        key: String,
        /// What the store said.
        source: StoreError,
    },
    /// Every attempt lost a compare-and-swap race.
    Contended {
        /// The bucket key.
        key: String,
    },
    /// The bucket holds [`WAYS`] live entries.
    Full {
        /// The bucket key.
        key: String,
    },
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Store { key, source } => write!(f, "replay table {key}: {source}"),
            ReplayError::Contended { key } => {
                write!(f, "replay table {key}: still contended after {MAX_ATTEMPTS} attempts")
            }
            ReplayError::Full { key } => {
                write!(f, "replay table {key}: all {WAYS} entries are live; raise replay.capacity")
            }
        }
    }
}

impl std::error::Error for ReplayError {}

/// Remembers signatures on a fixed table in a [`SharedStore`].
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    bucket_count: u32,
}

impl ReplayGuard {
    /// A guard for `capacity` entries (rounded up to a multiple of
    /// [`WAYS`]; a capacity of 0 is treated as one bucket).
    pub fn new(capacity: u32) -> ReplayGuard {
        let ways = WAYS as u32;
        ReplayGuard { bucket_count: capacity.div_ceil(ways).max(1) }
    }

    /// How many buckets (shared-data keys) the table has.
    pub fn bucket_count(&self) -> u32 {
        self.bucket_count
    }

    /// Creates every bucket key that does not exist yet, empty; call it in
    /// `on_configure` of every VM (why: see `warrant-session`'s
    /// `SessionTracker::prepare`). Returns how many keys it created.
    ///
    /// # Errors
    /// [`ReplayError::Store`] when the store fails.
    pub fn prepare(&self, store: &dyn SharedStore) -> Result<u32, ReplayError> {
        let mut created = 0u32;
        for index in 0..self.bucket_count {
            let key = bucket_key(index);
            let (_, cas) = store.get(&key).map_err(|source| store_error(&key, source))?;
            if cas.is_none() {
                create_empty(store, &key)?;
                created = created.saturating_add(1);
            }
        }
        Ok(created)
    }

    /// Records `signature` (the raw bytes) as seen until `expires_at_secs`
    /// and says whether a live entry already had it.
    ///
    /// # Errors
    /// [`ReplayError`] when the table cannot say; the caller must refuse
    /// the request then, since it cannot rule out a replay.
    pub fn observe(
        &self,
        store: &dyn SharedStore,
        signature: &[u8],
        expires_at_secs: i64,
        now_secs: i64,
    ) -> Result<Sighting, ReplayError> {
        // 1. Fingerprint and bucket.
        let (fingerprint, index) = self.locate(signature);
        let key = bucket_key(index);
        for _ in 0..MAX_ATTEMPTS {
            // 2. Read; a key never written is first created empty.
            let (value, cas) = store.get(&key).map_err(|source| store_error(&key, source))?;
            let Some(cas) = cas else {
                create_empty(store, &key)?;
                continue;
            };
            let mut entries = decode(value.as_deref().unwrap_or_default());

            // 3. Decide on the live entries.
            entries.retain(|(_, expires)| *expires > now_secs);
            if entries.iter().any(|(print, _)| *print == fingerprint) {
                return Ok(Sighting::Replayed);
            }
            if entries.len() >= WAYS {
                return Err(ReplayError::Full { key });
            }
            entries.push((fingerprint, expires_at_secs));

            // 4. Write back with the cas that was read.
            match store.set(&key, &encode(&entries), Some(cas)) {
                Ok(()) => return Ok(Sighting::First),
                Err(SetError::CasMismatch) => continue,
                Err(SetError::Store(source)) => return Err(store_error(&key, source)),
                Err(other) => {
                    return Err(store_error(&key, StoreError::new(other.to_string())));
                }
            }
        }
        Err(ReplayError::Contended { key })
    }

    fn locate(&self, signature: &[u8]) -> ([u8; 16], u32) {
        let digest = Sha256::new_with_prefix(FINGERPRINT_DOMAIN).chain_update(signature).finalize();
        let mut fingerprint = [0u8; 16];
        fingerprint.copy_from_slice(&digest[..16]);
        let mut pick = [0u8; 8];
        pick.copy_from_slice(&digest[16..24]);
        let index = u64::from_be_bytes(pick) % u64::from(self.bucket_count);
        // `index < bucket_count`, a u32.
        (fingerprint, u32::try_from(index).unwrap_or(0))
    }
}

/// The shared-data key of bucket `index`.
pub fn bucket_key(index: u32) -> String {
    format!("{KEY_PREFIX}{index}")
}

fn store_error(key: &str, source: StoreError) -> ReplayError {
    ReplayError::Store { key: key.to_owned(), source }
}

fn create_empty(store: &dyn SharedStore, key: &str) -> Result<(), ReplayError> {
    match store.set(key, &encode(&[]), None) {
        Ok(()) | Err(SetError::CasMismatch) => Ok(()),
        Err(SetError::Store(source)) => Err(store_error(key, source)),
        Err(other) => Err(store_error(key, StoreError::new(other.to_string()))),
    }
}

fn encode(entries: &[([u8; 16], i64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAX_BUCKET_LEN);
    out.push(FORMAT_VERSION);
    // At most WAYS (16) entries by construction.
    out.push(u8::try_from(entries.len()).unwrap_or(u8::MAX));
    for (print, expires) in entries {
        out.extend_from_slice(print);
        out.extend_from_slice(&expires.to_be_bytes());
    }
    out
}

/// The entries of a stored value; anything malformed is an empty bucket.
fn decode(bytes: &[u8]) -> Vec<([u8; 16], i64)> {
    let valid = match bytes {
        [FORMAT_VERSION, count, body @ ..] => {
            usize::from(*count) <= WAYS && body.len() == usize::from(*count) * ENTRY_LEN
        }
        _ => false,
    };
    if !valid {
        return Vec::new();
    }
    bytes[2..]
        .chunks_exact(ENTRY_LEN)
        .map(|chunk| {
            let mut print = [0u8; 16];
            print.copy_from_slice(&chunk[..16]);
            let mut expires = [0u8; 8];
            expires.copy_from_slice(&chunk[16..]);
            (print, i64::from_be_bytes(expires))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use warrant_session::MemoryStore;

    use super::*;

    const NOW: i64 = 1_790_000_000;

    fn signature(n: u32) -> Vec<u8> {
        let mut bytes = vec![0u8; 64];
        bytes[..4].copy_from_slice(&n.to_be_bytes());
        bytes
    }

    #[test]
    fn second_sighting_within_the_window_is_a_replay_and_after_it_is_not() {
        let guard = ReplayGuard::new(64);
        let store = MemoryStore::new();
        guard.prepare(&store).unwrap();
        let sig = signature(1);
        assert_eq!(guard.observe(&store, &sig, NOW + 300, NOW), Ok(Sighting::First));
        assert_eq!(guard.observe(&store, &sig, NOW + 300, NOW + 299), Ok(Sighting::Replayed));
        // Expired: forgotten (the timestamp check refuses it by then).
        assert_eq!(guard.observe(&store, &sig, NOW + 900, NOW + 300), Ok(Sighting::First));
        assert_eq!(guard.observe(&store, &signature(2), NOW + 300, NOW), Ok(Sighting::First));
    }

    #[test]
    fn memory_is_bounded_by_the_bucket_count_whatever_the_traffic() {
        let guard = ReplayGuard::new(1024);
        assert_eq!(guard.bucket_count(), 64);
        let store = MemoryStore::new();
        assert_eq!(guard.prepare(&store).unwrap(), 64);
        assert_eq!(guard.prepare(&store).unwrap(), 0, "prepare is idempotent");
        // 100,000 envelopes, each expiring a second after it was seen.
        for n in 0..100_000u32 {
            let now = NOW + i64::from(n);
            let got = guard.observe(&store, &signature(n), now + 1, now);
            assert_eq!(got, Ok(Sighting::First), "envelope {n}");
        }
        assert_eq!(store.key_count(), 64);
        let limit = 64 * (MAX_BUCKET_LEN + KEY_PREFIX.len() + 2);
        assert!(store.stored_bytes() <= limit as u64, "{} bytes", store.stored_bytes());
    }

    #[test]
    fn a_bucket_full_of_live_entries_refuses_rather_than_forgets() {
        let guard = ReplayGuard::new(16);
        let store = MemoryStore::new();
        guard.prepare(&store).unwrap();
        for n in 0..16 {
            assert_eq!(guard.observe(&store, &signature(n), NOW + 300, NOW), Ok(Sighting::First));
        }
        let full = guard.observe(&store, &signature(99), NOW + 300, NOW);
        assert!(matches!(full, Err(ReplayError::Full { .. })), "{full:?}");
        // The remembered ones are still replays; once they expire there
        // is room again.
        assert_eq!(guard.observe(&store, &signature(3), NOW + 300, NOW), Ok(Sighting::Replayed));
        assert_eq!(
            guard.observe(&store, &signature(99), NOW + 700, NOW + 300),
            Ok(Sighting::First)
        );
    }

    #[test]
    #[cfg_attr(target_os = "wasi", ignore = "needs threads; wasm32-wasip1 has none")]
    fn racing_workers_with_one_envelope_accept_it_exactly_once() {
        // 8 threads play 8 Envoy workers; each round they all observe the
        // same new signature at once. Exactly one may see it first.
        let guard = ReplayGuard::new(4096);
        let store = MemoryStore::new();
        guard.prepare(&store).unwrap();
        for round in 0..200u32 {
            let firsts = AtomicUsize::new(0);
            let barrier = std::sync::Barrier::new(8);
            std::thread::scope(|scope| {
                for _ in 0..8 {
                    scope.spawn(|| {
                        barrier.wait();
                        match guard.observe(&store, &signature(round), NOW + 300, NOW) {
                            Ok(Sighting::First) => {
                                firsts.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(Sighting::Replayed) => {}
                            Err(e) => panic!("round {round}: {e}"),
                        }
                    });
                }
            });
            assert_eq!(firsts.load(Ordering::SeqCst), 1, "round {round}");
        }
    }

    #[test]
    fn never_prepared_keys_are_created_and_malformed_values_read_as_empty() {
        let guard = ReplayGuard::new(16);
        let store = MemoryStore::new();
        assert_eq!(guard.observe(&store, &signature(1), NOW + 1, NOW), Ok(Sighting::First));
        store.set(&bucket_key(0), b"\x01\x05garbage", None).unwrap();
        assert_eq!(guard.observe(&store, &signature(1), NOW + 1, NOW), Ok(Sighting::First));
        for bytes in [&b""[..], b"\x02\x00", b"\x01\x11", b"\x01\x01short"] {
            assert!(decode(bytes).is_empty(), "{bytes:?}");
        }
        let entries = vec![([7u8; 16], -5i64), ([8u8; 16], i64::MAX)];
        assert_eq!(decode(&encode(&entries)), entries);
        assert_eq!(encode(&entries).len(), 2 + 2 * ENTRY_LEN);
    }

    #[test]
    fn store_failures_are_errors_never_a_pass() {
        struct Broken;
        impl SharedStore for Broken {
            fn get(&self, _: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
                Err(StoreError::new("InternalFailure"))
            }
            fn set(&self, _: &str, _: &[u8], _: Option<u32>) -> Result<(), SetError> {
                Err(SetError::CasMismatch)
            }
        }
        let got = ReplayGuard::new(16).observe(&Broken, &signature(1), NOW + 1, NOW);
        assert!(matches!(got, Err(ReplayError::Store { .. })), "{got:?}");
        assert!(got.unwrap_err().to_string().contains("InternalFailure"));

        struct Contended(MemoryStore);
        impl SharedStore for Contended {
            fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
                self.0.get(key)
            }
            fn set(&self, _: &str, _: &[u8], _: Option<u32>) -> Result<(), SetError> {
                Err(SetError::CasMismatch)
            }
        }
        let store = Contended(MemoryStore::new());
        store.0.set(&bucket_key(0), &encode(&[]), None).unwrap();
        let got = ReplayGuard::new(16).observe(&store, &signature(1), NOW + 1, NOW);
        assert!(matches!(got, Err(ReplayError::Contended { .. })), "{got:?}");
    }
}
