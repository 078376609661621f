//! Resolving an agent's current session on the shared bucket table.
//!
//! [`SessionTracker`] holds only validated settings; all state is in the
//! [`SharedStore`], so any number of trackers (one per Envoy worker VM) can
//! use the same table. [`SessionTracker::resolve`] returns a [`Resolved`]:
//! the id and an [`Outcome`] saying whether the session was continued or
//! started, and why. Failures are [`SessionError`]s.
//!
//! See the crate documentation for the protocol and why it is correct.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::bucket::{Bucket, Entry, Fingerprint};
use crate::config::{ConfigError, SessionConfig};
use crate::id::{RandomError, RandomSource, SessionId};
use crate::store::{SetError, SharedStore, StoreError};

/// Every bucket key starts with this; the bucket index follows in decimal.
pub const KEY_PREFIX: &str = "warrant.session.v1.";

/// A live session's `last_seen` is only rewritten when it is at least this
/// old (1 s), so an agent costs at most one shared-data write per second.
/// The price: `last_seen` can lag the agent's last request by up to 1 s, so
/// a session may end up to 1 s before the configured idle timeout.
pub const TOUCH_INTERVAL_MILLIS: i64 = 1000;

/// How many times [`SessionTracker::resolve`] reads a bucket before giving
/// up with [`SessionError::Contended`].
pub const MAX_ATTEMPTS: u32 = 8;

/// Hashed in front of every agent name, so that our fingerprints cannot be
/// confused with any other use of SHA-256 over agent names.
const FINGERPRINT_DOMAIN: &[u8] = b"warrant.session.v1\0";

/// The shared-data key of bucket `index`: `warrant.session.v1.<index>`.
pub fn bucket_key(index: u32) -> String {
    format!("{KEY_PREFIX}{index}")
}

/// Finds and keeps one session per agent across every worker that shares a
/// store.
#[derive(Debug, Clone)]
pub struct SessionTracker {
    idle_timeout_millis: i64,
    bucket_count: u32,
}

impl SessionTracker {
    /// A tracker for a validated configuration.
    ///
    /// # Errors
    ///
    /// The [`ConfigError`] of [`SessionConfig::validate`].
    pub fn new(config: &SessionConfig) -> Result<SessionTracker, ConfigError> {
        config.validate()?;
        // Validation caps the timeout at 7 days, far inside i64 milliseconds.
        let idle_timeout_millis = i64::try_from(config.idle_timeout_secs)
            .ok()
            .and_then(|secs| secs.checked_mul(1000))
            .ok_or(ConfigError::IdleTimeout { found: config.idle_timeout_secs })?;
        Ok(SessionTracker { idle_timeout_millis, bucket_count: config.bucket_count() })
    }

    /// The idle timeout in milliseconds.
    pub fn idle_timeout_millis(&self) -> i64 {
        self.idle_timeout_millis
    }

    /// How many buckets (shared-data keys) the table has.
    pub fn bucket_count(&self) -> u32 {
        self.bucket_count
    }

    /// The bucket index that `agent` hashes to.
    pub fn bucket_of(&self, agent: &str) -> u32 {
        self.locate(agent).1
    }

    /// Creates every bucket key that does not exist yet, empty.
    ///
    /// Call it from `on_configure` in every VM. Creating a key is the one
    /// write that cannot be a compare-and-swap (shared data has no
    /// create-if-absent); doing all of them before requests arrive leaves
    /// every request with compare-and-swap writes only. Keys that exist are
    /// only read, so calling it again (a new VM, a reconfiguration) changes
    /// nothing. Returns how many keys it created.
    ///
    /// # Errors
    ///
    /// [`SessionError::Read`] or [`SessionError::Write`] when the store fails.
    pub fn prepare(&self, store: &dyn SharedStore) -> Result<u32, SessionError> {
        let mut created = 0u32;
        for index in 0..self.bucket_count {
            let key = bucket_key(index);
            let (_, cas) = store.get(&key).map_err(|source| SessionError::read(&key, source))?;
            if cas.is_none() {
                create_empty(store, &key)?;
                created = created.saturating_add(1);
            }
        }
        Ok(created)
    }

    /// The agent's session at `now_millis`: its live session, or a new one.
    ///
    /// Two workers resolving the same agent at the same moment get the same
    /// id (see the crate documentation, "Races"). Never blocks and never
    /// loops more than [`MAX_ATTEMPTS`] times.
    ///
    /// # Errors
    ///
    /// - [`SessionError::Read`] / [`SessionError::Write`]: the store failed.
    /// - [`SessionError::Contended`]: the bucket changed between every read
    ///   and write, [`MAX_ATTEMPTS`] times in a row.
    /// - [`SessionError::Random`]: no random bytes for a new id.
    ///
    /// # Example
    ///
    /// ```
    /// use warrant_session::{
    ///     MemoryStore, Outcome, SeededRandom, SessionConfig, SessionTracker,
    /// };
    ///
    /// let tracker = SessionTracker::new(&SessionConfig::default())?;
    /// let store = MemoryStore::new();
    /// tracker.prepare(&store)?;
    /// let mut random = SeededRandom::new(7);
    ///
    /// let first = tracker.resolve(&store, "agent-a", 1_000_000, &mut random)?;
    /// assert_eq!(first.outcome, Outcome::Started);
    /// assert_eq!(first.id.to_hex().len(), 32);
    ///
    /// // Ten minutes later, on another worker: the same session.
    /// let again = tracker.resolve(&store, "agent-a", 1_600_000, &mut random)?;
    /// assert_eq!(again.id, first.id);
    /// assert_eq!(again.outcome, Outcome::Continued);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn resolve(
        &self,
        store: &dyn SharedStore,
        agent: &str,
        now_millis: i64,
        random: &mut dyn RandomSource,
    ) -> Result<Resolved, SessionError> {
        // Plan:
        // 1. Hash the agent to its fingerprint and bucket.
        // 2. Read the bucket; a key never written is first created empty.
        // 3. Decide on the decoded bucket: continue the live session, or start
        //    one (in the agent's old slot, a free slot, or over the least
        //    recently seen slot).
        // 4. Write back with the cas that was read, unless nothing changed.
        //    On a cas mismatch, go back to 2: the re-read shows the winner's
        //    write, so a worker that lost a race adopts the winner's session.
        // 5. After MAX_ATTEMPTS reads, give up.

        // 1.
        let (fingerprint, index) = self.locate(agent);
        let key = bucket_key(index);
        // Drawn at most once: an id from a lost attempt was never published,
        // so the next attempt may use it.
        let mut fresh: Option<SessionId> = None;

        for attempt in 1..=MAX_ATTEMPTS {
            // 2.
            let (value, cas) =
                store.get(&key).map_err(|source| SessionError::read(&key, source))?;
            let Some(cas) = cas else {
                create_empty(store, &key)?;
                continue;
            };
            let mut bucket = Bucket::decode(value.as_deref().unwrap_or_default());

            // 3.
            let decision = self.decide(&mut bucket, fingerprint, now_millis, &mut fresh, random)?;
            let resolved =
                Resolved { id: decision.id, outcome: decision.outcome, attempts: attempt };
            if !decision.write {
                return Ok(resolved);
            }

            // 4.
            match store.set(&key, &bucket.encode(), Some(cas)) {
                Ok(()) => return Ok(resolved),
                Err(SetError::CasMismatch) => continue,
                Err(SetError::Store(source)) => return Err(SessionError::write(&key, source)),
            }
        }

        // 5.
        Err(SessionError::Contended { key, attempts: MAX_ATTEMPTS })
    }

    /// The agent's live session at `now_millis`, without changing anything.
    ///
    /// # Errors
    ///
    /// [`SessionError::Read`] when the store fails.
    pub fn lookup(
        &self,
        store: &dyn SharedStore,
        agent: &str,
        now_millis: i64,
    ) -> Result<Option<SessionId>, SessionError> {
        let (fingerprint, index) = self.locate(agent);
        let key = bucket_key(index);
        let (value, _) = store.get(&key).map_err(|source| SessionError::read(&key, source))?;
        let bucket = Bucket::decode(value.as_deref().unwrap_or_default());
        let live = bucket
            .entries()
            .iter()
            .find(|entry| entry.agent == fingerprint && self.is_live(entry, now_millis))
            .map(|entry| entry.id);
        Ok(live)
    }

    /// Applies one request at `now` to the bucket and says whether it
    /// changed.
    fn decide(
        &self,
        bucket: &mut Bucket,
        agent: Fingerprint,
        now: i64,
        fresh: &mut Option<SessionId>,
        random: &mut dyn RandomSource,
    ) -> Result<Decision, SessionError> {
        let found = bucket.position(&agent).and_then(|i| Some((i, *bucket.entries().get(i)?)));
        if let Some((index, entry)) = found {
            if self.is_live(&entry, now) {
                // A clock that went backwards gives a negative idle time:
                // the session stays live and last_seen never moves back.
                let write = now.saturating_sub(entry.last_seen_millis) >= TOUCH_INTERVAL_MILLIS;
                if write {
                    bucket.touch(index, now);
                }
                return Ok(Decision { id: entry.id, outcome: Outcome::Continued, write });
            }
        }

        let id = match *fresh {
            Some(id) => id,
            None => {
                let id = SessionId::generate(random).map_err(SessionError::Random)?;
                *fresh = Some(id);
                id
            }
        };
        let replaced =
            bucket.insert(Entry { agent, id, started_at_millis: now, last_seen_millis: now });
        let outcome = match replaced {
            None => Outcome::Started,
            Some(old) if old.agent == agent => Outcome::Restarted,
            Some(old) if !self.is_live(&old, now) => Outcome::ReplacedIdle,
            Some(_) => Outcome::EvictedLive,
        };
        Ok(Decision { id, outcome, write: true })
    }

    /// Live while the time since `last_seen` is at most the idle timeout.
    fn is_live(&self, entry: &Entry, now: i64) -> bool {
        now.saturating_sub(entry.last_seen_millis) <= self.idle_timeout_millis
    }

    /// The agent's fingerprint (digest bytes 0..16) and bucket index (digest
    /// bytes 16..24 as a big-endian u64, modulo the bucket count).
    fn locate(&self, agent: &str) -> (Fingerprint, u32) {
        let digest: [u8; 32] =
            Sha256::new().chain_update(FINGERPRINT_DOMAIN).chain_update(agent).finalize().into();
        // Both ranges lie inside the 32-byte digest, so the defaults are
        // never used.
        let fingerprint: Fingerprint =
            digest.get(..16).and_then(|bytes| bytes.try_into().ok()).unwrap_or_default();
        let word: [u8; 8] =
            digest.get(16..24).and_then(|bytes| bytes.try_into().ok()).unwrap_or_default();
        let index = u64::from_be_bytes(word).checked_rem(u64::from(self.bucket_count)).unwrap_or(0);
        // The remainder is below bucket_count, a u32.
        (fingerprint, u32::try_from(index).unwrap_or(0))
    }
}

/// The session a request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    /// The session's id.
    pub id: SessionId,
    /// Whether the session was continued or started, and why.
    pub outcome: Outcome,
    /// How many times the bucket was read (1 when there was no race).
    pub attempts: u32,
}

impl Resolved {
    /// True when this request started the session.
    pub fn is_new(&self) -> bool {
        self.outcome != Outcome::Continued
    }
}

/// What [`SessionTracker::resolve`] did to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The agent's live session was found (possibly one another worker had
    /// just started). Its id is returned.
    Continued,
    /// A session was started in a free slot.
    Started,
    /// The agent's previous session had been idle past the timeout; a new
    /// one was started in its slot.
    Restarted,
    /// A session was started in the slot of another agent's session that
    /// had been idle past the timeout.
    ReplacedIdle,
    /// A session was started by evicting another agent's *live* session,
    /// the least recently seen in the bucket: the table is under pressure
    /// (more live agents than capacity, or a flood of agent names). That
    /// agent's next request starts a new session.
    EvictedLive,
}

/// Session tracking could not resolve a session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionError {
    /// Reading a bucket failed.
    Read {
        /// The bucket key.
        key: String,
        /// What the store said.
        source: StoreError,
    },
    /// Writing a bucket failed for a reason other than a stale cas.
    Write {
        /// The bucket key.
        key: String,
        /// What the store said.
        source: StoreError,
    },
    /// Every attempt lost a compare-and-swap race.
    Contended {
        /// The bucket key.
        key: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// No random bytes for a new session id.
    Random(RandomError),
}

impl SessionError {
    fn read(key: &str, source: StoreError) -> SessionError {
        SessionError::Read { key: key.to_owned(), source }
    }

    fn write(key: &str, source: StoreError) -> SessionError {
        SessionError::Write { key: key.to_owned(), source }
    }
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Read { key, source } => {
                write!(f, "session bucket {key}: read failed: {source}")
            }
            SessionError::Write { key, source } => {
                write!(f, "session bucket {key}: write failed: {source}")
            }
            SessionError::Contended { key, attempts } => write!(
                f,
                "session bucket {key}: expected a compare-and-swap to succeed within \
                 {attempts} attempts, found the bucket changed before every write"
            ),
            SessionError::Random(source) => write!(f, "new session id: {source}"),
        }
    }
}

impl std::error::Error for SessionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SessionError::Read { source, .. } | SessionError::Write { source, .. } => Some(source),
            SessionError::Contended { .. } => None,
            SessionError::Random(source) => Some(source),
        }
    }
}

/// What one request does to a decoded bucket.
struct Decision {
    id: SessionId,
    outcome: Outcome,
    /// False when the bucket is unchanged (a live session seen within the
    /// touch interval), so no write is needed.
    write: bool,
}

/// Writes an empty bucket to a key that did not exist. Unconditional, since
/// the host has no create-if-absent; harmless when racing other creators
/// because they all write the same empty value (see the crate doc, "Races").
fn create_empty(store: &dyn SharedStore, key: &str) -> Result<(), SessionError> {
    match store.set(key, &Bucket::default().encode(), None) {
        Ok(()) | Err(SetError::CasMismatch) => Ok(()),
        Err(SetError::Store(source)) => Err(SessionError::write(key, source)),
    }
}

#[cfg(test)]
mod tests;
