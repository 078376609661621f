//! Tests for [`SessionTracker`]; the clock is the `now_millis` argument.

use std::collections::HashSet;
use std::sync::{Barrier, Mutex};

use super::*;
use crate::id::{OsRandom, SeededRandom};
use crate::store::MemoryStore;

const T0: i64 = 1_700_000_000_000;
const SECOND: i64 = 1000;

fn tracker_with(idle_timeout_secs: u64, max_sessions: u32) -> SessionTracker {
    let config = SessionConfig { idle_timeout_secs, max_sessions, ..SessionConfig::default() };
    SessionTracker::new(&config).unwrap()
}

fn default_tracker() -> SessionTracker {
    SessionTracker::new(&SessionConfig::default()).unwrap()
}

fn is_lower_hex_32(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[test]
fn new_agent_gets_a_new_32_hex_session() {
    let (tracker, store) = (default_tracker(), MemoryStore::new());
    let resolved = tracker.resolve(&store, "agent-a", T0, &mut OsRandom).unwrap();
    assert_eq!(resolved.outcome, Outcome::Started);
    assert!(resolved.is_new());
    assert!(is_lower_hex_32(&resolved.id.to_hex()), "{}", resolved.id);
}

#[test]
fn same_agent_gets_the_same_id() {
    let (tracker, store) = (default_tracker(), MemoryStore::new());
    let mut random = SeededRandom::new(1);
    let first = tracker.resolve(&store, "agent-a", T0, &mut random).unwrap();
    let second = tracker.resolve(&store, "agent-a", T0 + 5 * SECOND, &mut random).unwrap();
    assert_eq!(second.id, first.id);
    assert_eq!(second.outcome, Outcome::Continued);
    assert!(!second.is_new());
}

#[test]
fn different_agents_get_different_ids() {
    let (tracker, store) = (default_tracker(), MemoryStore::new());
    let mut random = SeededRandom::new(1);
    let a = tracker.resolve(&store, "agent-a", T0, &mut random).unwrap();
    let b = tracker.resolve(&store, "agent-b", T0, &mut random).unwrap();
    assert_ne!(a.id, b.id);
    assert_eq!(tracker.lookup(&store, "agent-a", T0).unwrap(), Some(a.id));
    assert_eq!(tracker.lookup(&store, "agent-b", T0).unwrap(), Some(b.id));
}

#[test]
fn idle_past_the_timeout_gives_a_new_id_and_at_the_timeout_does_not() {
    let tracker = tracker_with(60, 16_384);
    let store = MemoryStore::new();
    let mut random = SeededRandom::new(1);
    let first = tracker.resolve(&store, "agent-a", T0, &mut random).unwrap();

    let at_limit = tracker.resolve(&store, "agent-a", T0 + 60 * SECOND, &mut random).unwrap();
    assert_eq!(at_limit.id, first.id, "idle exactly the timeout is still live");

    let later = T0 + 120 * SECOND + 1;
    assert_eq!(tracker.lookup(&store, "agent-a", later).unwrap(), None);
    let after = tracker.resolve(&store, "agent-a", later, &mut random).unwrap();
    assert_ne!(after.id, first.id);
    assert_eq!(after.outcome, Outcome::Restarted);
}

#[test]
fn request_inside_the_timeout_keeps_the_session_alive() {
    let tracker = tracker_with(60, 16_384);
    let store = MemoryStore::new();
    let mut random = SeededRandom::new(1);
    let first = tracker.resolve(&store, "agent-a", T0, &mut random).unwrap();
    let refresh = tracker.resolve(&store, "agent-a", T0 + 50 * SECOND, &mut random).unwrap();
    // 100 s after the start but only 50 s after the refresh.
    let later = tracker.resolve(&store, "agent-a", T0 + 100 * SECOND, &mut random).unwrap();
    assert_eq!(refresh.id, first.id);
    assert_eq!(later.id, first.id);
    assert_eq!(later.outcome, Outcome::Continued);
}

#[test]
fn last_seen_is_written_at_most_once_per_touch_interval() {
    let (tracker, store) = (default_tracker(), MemoryStore::new());
    let mut random = SeededRandom::new(1);
    tracker.resolve(&store, "agent-a", T0, &mut random).unwrap();
    // One create of the empty bucket, one write of the new session.
    assert_eq!(store.write_count(), 2);

    for offset in [1, 500, SECOND - 1] {
        tracker.resolve(&store, "agent-a", T0 + offset, &mut random).unwrap();
    }
    assert_eq!(store.write_count(), 2, "requests within 1 s of last_seen must not write");

    tracker.resolve(&store, "agent-a", T0 + SECOND, &mut random).unwrap();
    assert_eq!(store.write_count(), 3, "a request 1 s after last_seen touches it");
}

#[test]
fn touch_lag_ends_a_session_at_most_one_second_early() {
    // last_seen stays at T0 for a request at T0 + 999 ms, so the session
    // expires 60 s after T0, not 60 s after T0 + 999 ms.
    let tracker = tracker_with(60, 16_384);
    let store = MemoryStore::new();
    let mut random = SeededRandom::new(1);
    let first = tracker.resolve(&store, "agent-a", T0, &mut random).unwrap();
    tracker.resolve(&store, "agent-a", T0 + 999, &mut random).unwrap();
    let after = tracker.resolve(&store, "agent-a", T0 + 60 * SECOND + 1, &mut random).unwrap();
    assert_ne!(after.id, first.id);
}

#[test]
fn clock_going_backwards_keeps_the_session_and_never_moves_last_seen_back() {
    let (tracker, store) = (tracker_with(60, 8), MemoryStore::new());
    let mut random = SeededRandom::new(1);
    let first = tracker.resolve(&store, "agent-a", T0, &mut random).unwrap();
    let writes = store.write_count();
    let earlier = tracker.resolve(&store, "agent-a", T0 - 3_600 * SECOND, &mut random).unwrap();
    assert_eq!(earlier.id, first.id);
    assert_eq!(earlier.outcome, Outcome::Continued);
    assert_eq!(store.write_count(), writes);
    let bucket = Bucket::decode(&store.value(&bucket_key(0)).unwrap());
    assert_eq!(bucket.entries()[0].last_seen_millis, T0);
}

#[test]
fn idle_sessions_are_replaced_when_a_full_bucket_needs_a_slot() {
    // One bucket of 8 slots: every agent shares it.
    let (tracker, store) = (tracker_with(60, 8), MemoryStore::new());
    let mut random = SeededRandom::new(1);
    for i in 0..8 {
        let resolved = tracker.resolve(&store, &format!("old-{i}"), T0, &mut random).unwrap();
        assert_eq!(resolved.outcome, Outcome::Started);
    }
    // One old agent stays active; the other seven go idle.
    tracker.resolve(&store, "old-3", T0 + 50 * SECOND, &mut random).unwrap();

    let later = T0 + 61 * SECOND;
    let newcomer = tracker.resolve(&store, "new-0", later, &mut random).unwrap();
    assert_eq!(newcomer.outcome, Outcome::ReplacedIdle);
    assert_eq!(tracker.lookup(&store, "old-0", later).unwrap(), None, "oldest idle evicted");
    assert!(tracker.lookup(&store, "old-3", later).unwrap().is_some(), "active one kept");
    let bucket = Bucket::decode(&store.value(&bucket_key(0)).unwrap());
    assert_eq!(bucket.entries().len(), 8);
    assert_eq!(store.key_count(), 1);
}

#[test]
fn full_bucket_of_live_sessions_evicts_the_least_recently_seen() {
    let (tracker, store) = (tracker_with(1800, 8), MemoryStore::new());
    let mut random = SeededRandom::new(1);
    for i in 0..8 {
        tracker.resolve(&store, &format!("live-{i}"), T0 + i * SECOND, &mut random).unwrap();
    }
    let now = T0 + 10 * SECOND;
    let newcomer = tracker.resolve(&store, "newcomer", now, &mut random).unwrap();
    assert_eq!(newcomer.outcome, Outcome::EvictedLive);
    assert_eq!(tracker.lookup(&store, "live-0", now).unwrap(), None);
    for i in 1..8 {
        assert!(tracker.lookup(&store, &format!("live-{i}"), now).unwrap().is_some(), "live-{i}");
    }
    let back = tracker.resolve(&store, "live-0", now, &mut random).unwrap();
    assert!(back.is_new(), "an evicted agent starts a new session");
}

#[test]
fn a_thousand_sessions_have_unique_ids() {
    let (tracker, store) = (default_tracker(), MemoryStore::new());
    let ids: HashSet<SessionId> = (0..1000)
        .map(|i| tracker.resolve(&store, &format!("agent-{i}"), T0, &mut OsRandom).unwrap().id)
        .collect();
    assert_eq!(ids.len(), 1000);
}

/// Each round, every emulated worker resolves the same new agent at once.
/// Without `prepare` this fails now and then (about 1 round in 200 on the
/// 2-core dev box, 2026-12-03): that is the creation race described in the
/// crate doc, shown deterministically by
/// `known_limit_unprepared_bucket_create_can_split_a_first_session`.
#[test]
#[cfg_attr(target_os = "wasi", ignore = "needs threads; wasm32-wasip1 has none")]
fn concurrent_first_requests_from_emulated_workers_agree_on_one_id() {
    const WORKERS: usize = 8;
    const ROUNDS: usize = 200;
    let tracker = default_tracker();
    let store = YieldingStore(MemoryStore::new());
    let barrier = Barrier::new(WORKERS);
    let results: Mutex<Vec<(usize, Resolved)>> = Mutex::new(Vec::new());

    std::thread::scope(|scope| {
        for worker in 0..WORKERS {
            let (tracker, store, barrier, results) = (&tracker, &store, &barrier, &results);
            scope.spawn(move || {
                let mut random = SeededRandom::new(worker as u64 + 1);
                // Like on_configure in every worker VM, before any request.
                tracker.prepare(store).unwrap();
                for round in 0..ROUNDS {
                    barrier.wait();
                    let agent = format!("agent-{round}");
                    let resolved = tracker.resolve(store, &agent, T0, &mut random).unwrap();
                    results.lock().unwrap().push((round, resolved));
                }
            });
        }
    });

    let results = results.into_inner().unwrap();
    let mut contended_rounds = 0;
    for round in 0..ROUNDS {
        let of_round: Vec<Resolved> =
            results.iter().filter(|(r, _)| *r == round).map(|(_, resolved)| *resolved).collect();
        assert_eq!(of_round.len(), WORKERS);
        let ids: HashSet<SessionId> = of_round.iter().map(|r| r.id).collect();
        assert_eq!(ids.len(), 1, "round {round}: workers disagree: {of_round:?}");
        let started = of_round.iter().filter(|r| r.is_new()).count();
        assert_eq!(started, 1, "round {round}: exactly one worker starts the session");
        if of_round.iter().any(|r| r.attempts > 1) {
            contended_rounds += 1;
        }
    }
    // Scheduling decides how often a worker loses, so only require that it
    // happened at all; --nocapture shows the count.
    println!("rounds with a lost compare-and-swap: {contended_rounds} of {ROUNDS}");
    assert!(contended_rounds > 0, "no round raced, so the test showed nothing");
}

/// Gives up the CPU between a read and the write that follows it, so that
/// emulated workers interleave there as often as possible.
struct YieldingStore(MemoryStore);

impl SharedStore for YieldingStore {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        let read = self.0.get(key);
        std::thread::yield_now();
        read
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        self.0.set(key, value, cas)
    }
}

/// A store that lets another worker run between our read and our write of
/// the bucket, once.
struct InterleavingStore<'a> {
    inner: &'a MemoryStore,
    before_next_cas_write: Mutex<Option<Box<dyn FnOnce() + 'a>>>,
}

impl SharedStore for InterleavingStore<'_> {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        self.inner.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        if cas.is_some() {
            if let Some(other_worker) = self.before_next_cas_write.lock().unwrap().take() {
                other_worker();
            }
        }
        self.inner.set(key, value, cas)
    }
}

#[test]
fn worker_that_loses_the_race_adopts_the_winners_id() {
    let tracker = default_tracker();
    let store = MemoryStore::new();
    assert_eq!(tracker.prepare(&store).unwrap(), 2048);
    let winner: Mutex<Option<Resolved>> = Mutex::new(None);
    let racing = InterleavingStore {
        inner: &store,
        before_next_cas_write: Mutex::new(Some(Box::new(|| {
            let resolved = tracker.resolve(&store, "agent-a", T0, &mut SeededRandom::new(2));
            *winner.lock().unwrap() = Some(resolved.unwrap());
        }))),
    };

    let loser = tracker.resolve(&racing, "agent-a", T0, &mut SeededRandom::new(1)).unwrap();
    let winner = winner.lock().unwrap().unwrap();
    assert_eq!(winner.outcome, Outcome::Started);
    assert_eq!(loser.id, winner.id);
    assert_eq!(loser.outcome, Outcome::Continued);
    assert_eq!(loser.attempts, 2);
}

#[test]
fn other_agents_write_in_the_same_bucket_is_not_lost() {
    let tracker = tracker_with(1800, 8);
    let store = MemoryStore::new();
    tracker.prepare(&store).unwrap();
    let racing = InterleavingStore {
        inner: &store,
        before_next_cas_write: Mutex::new(Some(Box::new(|| {
            tracker.resolve(&store, "agent-b", T0, &mut SeededRandom::new(2)).unwrap();
        }))),
    };
    let a = tracker.resolve(&racing, "agent-a", T0, &mut SeededRandom::new(1)).unwrap();
    assert_eq!(a.outcome, Outcome::Started);
    assert_eq!(a.attempts, 2);
    assert_eq!(tracker.lookup(&store, "agent-a", T0).unwrap(), Some(a.id));
    assert!(tracker.lookup(&store, "agent-b", T0).unwrap().is_some(), "b's session was lost");
}

/// A store whose first read of each key says "absent" even after another
/// worker created it: the stale read of a worker descheduled between its
/// read and its create.
struct StaleAbsentStore<'a> {
    inner: &'a MemoryStore,
    before_first_create: Mutex<Option<Box<dyn FnOnce() + 'a>>>,
}

impl SharedStore for StaleAbsentStore<'_> {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        self.inner.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        if cas.is_none() {
            if let Some(other_worker) = self.before_first_create.lock().unwrap().take() {
                other_worker();
            }
        }
        self.inner.set(key, value, cas)
    }
}

#[test]
fn known_limit_unprepared_bucket_create_can_split_a_first_session() {
    // Documents the one race the protocol cannot close (crate doc, "Races"):
    // worker 1 reads "absent"; worker 2 creates the bucket and writes its
    // session; worker 1's unconditional create then wipes that session.
    let tracker = default_tracker();
    let store = MemoryStore::new();
    let other: Mutex<Option<Resolved>> = Mutex::new(None);
    let stale = StaleAbsentStore {
        inner: &store,
        before_first_create: Mutex::new(Some(Box::new(|| {
            let resolved = tracker.resolve(&store, "agent-a", T0, &mut SeededRandom::new(2));
            *other.lock().unwrap() = Some(resolved.unwrap());
        }))),
    };
    let first = tracker.resolve(&stale, "agent-a", T0, &mut SeededRandom::new(1)).unwrap();
    let other = other.lock().unwrap().unwrap();
    assert_ne!(first.id, other.id, "if this fails, the limit is gone: update the crate doc");
    // From then on every worker agrees on the surviving session.
    let next = tracker.resolve(&store, "agent-a", T0 + 1, &mut SeededRandom::new(3)).unwrap();
    assert_eq!(next.id, first.id);
}

#[test]
fn prepare_creates_every_bucket_once_so_requests_never_create() {
    let tracker = tracker_with(1800, 64);
    let store = MemoryStore::new();
    assert_eq!(tracker.prepare(&store).unwrap(), 8);
    assert_eq!(tracker.prepare(&store).unwrap(), 0, "a second VM creates nothing");
    assert_eq!(store.key_count(), 8);
    assert_eq!(store.write_count(), 8);

    // A session written before another VM's prepare survives it.
    let resolved = tracker.resolve(&store, "agent-a", T0, &mut SeededRandom::new(1)).unwrap();
    assert_eq!(resolved.attempts, 1, "no create needed on a prepared table");
    tracker.prepare(&store).unwrap();
    assert_eq!(tracker.lookup(&store, "agent-a", T0).unwrap(), Some(resolved.id));
}

/// A store where every compare-and-swap write loses.
struct AlwaysStale(MemoryStore);

impl SharedStore for AlwaysStale {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        self.0.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        match cas {
            Some(_) => Err(SetError::CasMismatch),
            None => self.0.set(key, value, cas),
        }
    }
}

#[test]
fn persistent_contention_gives_up_after_max_attempts() {
    let tracker = default_tracker();
    let store = AlwaysStale(MemoryStore::new());
    tracker.prepare(&store).unwrap();
    let error = tracker.resolve(&store, "agent-a", T0, &mut SeededRandom::new(1)).unwrap_err();
    let key = bucket_key(tracker.bucket_of("agent-a"));
    assert_eq!(error, SessionError::Contended { key, attempts: MAX_ATTEMPTS });
}

/// A store whose every call fails.
struct Broken;

impl SharedStore for Broken {
    fn get(&self, _: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        Err(StoreError::new("InternalFailure"))
    }

    fn set(&self, _: &str, _: &[u8], _: Option<u32>) -> Result<(), SetError> {
        Err(SetError::Store(StoreError::new("InternalFailure")))
    }
}

/// Reads work (a prepared, empty table); writes fail.
struct ReadOnly(MemoryStore);

impl SharedStore for ReadOnly {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        self.0.get(key)
    }

    fn set(&self, _: &str, _: &[u8], _: Option<u32>) -> Result<(), SetError> {
        Err(SetError::Store(StoreError::new("Unimplemented")))
    }
}

struct NoRandom;

impl RandomSource for NoRandom {
    fn fill(&mut self, _: &mut [u8]) -> Result<(), RandomError> {
        Err(RandomError::new("no entropy"))
    }
}

#[test]
fn store_and_random_failures_are_reported_with_the_bucket_key() {
    let tracker = tracker_with(1800, 8);
    let key = bucket_key(0);

    let read = tracker.resolve(&Broken, "agent-a", T0, &mut SeededRandom::new(1)).unwrap_err();
    assert_eq!(
        read,
        SessionError::Read { key: key.clone(), source: StoreError::new("InternalFailure") }
    );
    assert_eq!(tracker.prepare(&Broken).unwrap_err(), read);
    assert_eq!(tracker.lookup(&Broken, "agent-a", T0).unwrap_err(), read);

    let read_only = ReadOnly(MemoryStore::new());
    let create = tracker.resolve(&read_only, "agent-a", T0, &mut SeededRandom::new(1));
    let want_write =
        SessionError::Write { key: key.clone(), source: StoreError::new("Unimplemented") };
    assert_eq!(create.unwrap_err(), want_write, "creating the bucket fails");

    read_only.0.set(&key, &Bucket::default().encode(), None).unwrap();
    let write = tracker.resolve(&read_only, "agent-a", T0, &mut SeededRandom::new(1));
    assert_eq!(write.unwrap_err(), want_write, "writing the session fails");

    let random = tracker.resolve(&MemoryStore::new(), "agent-a", T0, &mut NoRandom).unwrap_err();
    assert_eq!(random, SessionError::Random(RandomError::new("no entropy")));
}

#[test]
fn every_session_error_variant_formats() {
    let key = "warrant.session.v1.7".to_owned();
    let cases = [
        (
            SessionError::Read { key: key.clone(), source: StoreError::new("BadArgument") },
            "session bucket warrant.session.v1.7: read failed: shared data call failed: \
             BadArgument",
        ),
        (
            SessionError::Write { key: key.clone(), source: StoreError::new("BadArgument") },
            "session bucket warrant.session.v1.7: write failed: shared data call failed: \
             BadArgument",
        ),
        (
            SessionError::Contended { key, attempts: 8 },
            "session bucket warrant.session.v1.7: expected a compare-and-swap to succeed \
             within 8 attempts, found the bucket changed before every write",
        ),
        (
            SessionError::Random(RandomError::new("no entropy")),
            "new session id: random source failed: no entropy",
        ),
    ];
    for (error, want) in cases {
        assert_eq!(error.to_string(), want);
    }
}

#[test]
fn malformed_stored_bucket_is_treated_as_empty_and_repaired() {
    let tracker = tracker_with(1800, 8);
    let store = MemoryStore::new();
    store.set(&bucket_key(0), b"\x01\x05garbage", None).unwrap();
    let resolved = tracker.resolve(&store, "agent-a", T0, &mut SeededRandom::new(1)).unwrap();
    assert_eq!(resolved.outcome, Outcome::Started);
    let bucket = Bucket::decode(&store.value(&bucket_key(0)).unwrap());
    assert_eq!(bucket.entries().len(), 1);
}

#[test]
fn hundred_thousand_agents_stay_within_the_configured_keys_and_bytes() {
    let config = SessionConfig::default();
    let tracker = SessionTracker::new(&config).unwrap();
    let store = MemoryStore::new();
    let mut random = SeededRandom::new(42);
    const AGENTS: i64 = 100_000;
    let mut evicted_live = 0u32;
    // One new agent per millisecond: all of them are still inside the
    // 30-minute timeout, so every slot reuse evicts a live session.
    for i in 0..AGENTS {
        let resolved = tracker.resolve(&store, &format!("agent-{i}"), T0 + i, &mut random).unwrap();
        assert!(resolved.is_new());
        if resolved.outcome == Outcome::EvictedLive {
            evicted_live += 1;
        }
    }
    let now = T0 + AGENTS;

    // The bound: 2,048 keys, each at most 386 bytes plus its key.
    assert_eq!(store.key_count(), 2048);
    assert!(store.stored_bytes() <= config.max_stored_bytes());
    assert_eq!(store.stored_bytes(), config.max_stored_bytes() - key_shortfall(2048));
    assert_eq!(u64::from(evicted_live), 100_000 - config.capacity());

    // Every slot is in use, and the oldest agents were evicted.
    let sessions: usize = store
        .keys()
        .iter()
        .map(|key| Bucket::decode(&store.value(key).unwrap()).entries().len())
        .sum();
    assert_eq!(sessions as u64, config.capacity());
    for i in 0..1000 {
        assert_eq!(tracker.lookup(&store, &format!("agent-{i}"), now).unwrap(), None, "{i}");
    }
    for i in (AGENTS - 100)..AGENTS {
        assert!(tracker.lookup(&store, &format!("agent-{i}"), now).unwrap().is_some(), "{i}");
    }
}

/// How many bytes shorter than the longest key the keys of a table of
/// `buckets` are, in total (max_stored_bytes assumes every key is longest).
fn key_shortfall(buckets: u32) -> u64 {
    let longest = bucket_key(buckets - 1).len();
    (0..buckets).map(|i| (longest - bucket_key(i).len()) as u64).sum()
}

#[test]
fn agents_spread_over_buckets() {
    let tracker = default_tracker();
    let buckets: HashSet<u32> = (0..10_000).map(|i| tracker.bucket_of(&format!("a{i}"))).collect();
    // 10,000 names over 2,048 buckets leave about 15 empty; far from all in one.
    assert!(buckets.len() > 2000, "only {} buckets used", buckets.len());
    assert!(buckets.iter().all(|&b| b < 2048));
}

#[test]
fn bucket_keys_are_prefix_and_decimal_index() {
    assert_eq!(bucket_key(0), "warrant.session.v1.0");
    assert_eq!(bucket_key(2047), "warrant.session.v1.2047");
}

#[test]
fn tracker_refuses_an_invalid_config() {
    let config = SessionConfig { idle_timeout_secs: 0, ..SessionConfig::default() };
    assert_eq!(SessionTracker::new(&config).unwrap_err(), ConfigError::IdleTimeout { found: 0 });
    let tracker = default_tracker();
    assert_eq!(tracker.idle_timeout_millis(), 1_800_000);
    assert_eq!(tracker.bucket_count(), 2048);
}
