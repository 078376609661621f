//! The key → bytes store that sessions live in, reached through a trait.
//!
//! In Envoy the store is proxy-wasm *shared data*: one map per `vm_id`,
//! global to the process and shared by the VMs of every worker thread. The
//! filter glue implements [`SharedStore`] over the host calls; tests use
//! [`MemoryStore`], which keeps the same semantics in a mutex-guarded map so
//! that several threads can play several workers.
//!
//! The semantics both must follow (proxy-wasm ABI 0.2.1, cpp-host
//! `shared_data.cc`):
//!
//! - every value carries a *cas* number that changes on each write;
//! - [`SharedStore::set`] with `Some(cas)` fails with
//!   [`SetError::CasMismatch`] when the key was written since that cas was
//!   read; `None` (or a cas of 0) writes unconditionally;
//! - a key that was never written reads as `(None, None)`, and a write to it
//!   succeeds whatever cas is given: there is **no create-if-absent**;
//! - there is no TTL, no delete (removing writes an empty value and the key
//!   stays) and no key listing, so memory is bounded only by bounding the set
//!   of keys.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Access to a shared, compare-and-swap key → bytes store.
///
/// Implemented by the filter glue over proxy-wasm shared data, and by
/// [`MemoryStore`] for tests. The tracker only ever calls these two methods.
pub trait SharedStore {
    /// Reads `key`, returning its value and the cas of that value.
    ///
    /// - A key that was never written: `(None, None)`.
    /// - A key that holds an empty value: `(None, Some(cas))` or
    ///   `(Some(vec![]), Some(cas))`; both mean "exists, empty" (the Rust SDK
    ///   returns the first form).
    /// - Otherwise `(Some(bytes), Some(cas))`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the host reports a failure other than "not found".
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError>;

    /// Writes `value` under `key` if `cas` still matches the stored value's
    /// cas, or unconditionally when `cas` is `None` or the key does not exist.
    ///
    /// # Errors
    ///
    /// [`SetError::CasMismatch`] when the key was written since `cas` was
    /// read; [`SetError::Store`] for any other host failure.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError>;
}

/// A store call failed for a reason other than a stale cas.
///
/// The glue fills in what the host said (for example the proxy-wasm status
/// name); the tracker passes it on inside its own error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    detail: String,
}

impl StoreError {
    /// Makes an error from the host's description of the failure.
    pub fn new(detail: impl Into<String>) -> StoreError {
        StoreError { detail: detail.into() }
    }

    /// The host's description of the failure.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shared data call failed: {}", self.detail)
    }
}

impl std::error::Error for StoreError {}

/// Why [`SharedStore::set`] did not write.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SetError {
    /// The key was written by someone else since its cas was read. This is
    /// the expected outcome of a lost race: re-read and try again.
    CasMismatch,
    /// The host refused the write for another reason.
    Store(StoreError),
}

impl fmt::Display for SetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetError::CasMismatch => {
                f.write_str("shared data write: expected the cas that was read, found a newer one")
            }
            SetError::Store(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for SetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SetError::CasMismatch => None,
            SetError::Store(error) => Some(error),
        }
    }
}

impl From<StoreError> for SetError {
    fn from(error: StoreError) -> SetError {
        SetError::Store(error)
    }
}

/// An in-process [`SharedStore`] with proxy-wasm shared data semantics.
///
/// One mutex guards one map, like the host's. Cas numbers come from one
/// counter for the whole store, start at 1 and skip 0 when they wrap (0
/// means "unconditional"). Share it between threads with `Arc` or scoped
/// threads to emulate several Envoy workers.
///
/// It also counts what a test wants to assert: keys, stored bytes, writes.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<MemoryInner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// How many keys exist (including keys holding an empty value).
    pub fn key_count(&self) -> usize {
        self.lock().entries.len()
    }

    /// The bytes held: the sum of every key's and every value's length. The
    /// host's own per-entry overhead is not included.
    pub fn stored_bytes(&self) -> u64 {
        self.lock().entries.iter().fold(0u64, |total, (key, (value, _))| {
            let entry = u64::try_from(key.len().saturating_add(value.len())).unwrap_or(u64::MAX);
            total.saturating_add(entry)
        })
    }

    /// How many successful writes the store has taken.
    pub fn write_count(&self) -> u64 {
        self.lock().writes
    }

    /// The raw value under `key`, if the key exists.
    pub fn value(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().entries.get(key).map(|(value, _)| value.clone())
    }

    /// The keys that exist, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.lock().entries.keys().cloned().collect();
        keys.sort();
        keys
    }

    fn lock(&self) -> MutexGuard<'_, MemoryInner> {
        // A poisoned lock means a test thread panicked while holding it; the
        // map itself is still consistent (every update is a single insert),
        // so carry on rather than panic in library code.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        let inner = self.lock();
        let Some((value, cas)) = inner.entries.get(key) else {
            return Ok((None, None));
        };
        // Like the Rust SDK: an empty value comes back as `None`.
        let value = if value.is_empty() { None } else { Some(value.clone()) };
        Ok((value, Some(*cas)))
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        let mut inner = self.lock();
        if let (Some((_, current)), Some(expected)) = (inner.entries.get(key), cas) {
            if expected != 0 && expected != *current {
                return Err(SetError::CasMismatch);
            }
        }
        let next = inner.next_cas();
        inner.entries.insert(key.to_owned(), (value.to_vec(), next));
        inner.writes = inner.writes.saturating_add(1);
        Ok(())
    }
}

#[derive(Debug, Default)]
struct MemoryInner {
    entries: HashMap<String, (Vec<u8>, u32)>,
    last_cas: u32,
    writes: u64,
}

impl MemoryInner {
    fn next_cas(&mut self) -> u32 {
        self.last_cas = self.last_cas.checked_add(1).unwrap_or(1);
        self.last_cas
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_written_key_reads_as_absent_without_cas() {
        let store = MemoryStore::new();
        assert_eq!(store.get("k").unwrap(), (None, None));
    }

    #[test]
    fn write_to_absent_key_succeeds_whatever_cas_is_given() {
        let store = MemoryStore::new();
        store.set("k", b"v", Some(12345)).unwrap();
        let (value, cas) = store.get("k").unwrap();
        assert_eq!(value.as_deref(), Some(&b"v"[..]));
        assert!(cas.is_some());
    }

    #[test]
    fn stale_cas_is_refused_and_fresh_cas_is_taken() {
        let store = MemoryStore::new();
        store.set("k", b"one", None).unwrap();
        let (_, stale) = store.get("k").unwrap();
        store.set("k", b"two", stale).unwrap();
        assert_eq!(store.set("k", b"three", stale), Err(SetError::CasMismatch));
        assert_eq!(store.get("k").unwrap().0.as_deref(), Some(&b"two"[..]));
    }

    #[test]
    fn no_cas_and_zero_cas_write_unconditionally() {
        let store = MemoryStore::new();
        store.set("k", b"one", None).unwrap();
        store.set("k", b"two", None).unwrap();
        store.set("k", b"three", Some(0)).unwrap();
        assert_eq!(store.get("k").unwrap().0.as_deref(), Some(&b"three"[..]));
        assert_eq!(store.write_count(), 3);
    }

    #[test]
    fn empty_value_keeps_the_key_and_reads_as_none_with_cas() {
        let store = MemoryStore::new();
        store.set("k", b"v", None).unwrap();
        store.set("k", b"", None).unwrap();
        let (value, cas) = store.get("k").unwrap();
        assert_eq!(value, None);
        assert!(cas.is_some());
        assert_eq!(store.key_count(), 1);
        assert_eq!(store.keys(), vec!["k".to_owned()]);
    }

    #[test]
    fn stored_bytes_counts_keys_and_values() {
        let store = MemoryStore::new();
        store.set("ab", b"xyz", None).unwrap();
        store.set("c", b"", None).unwrap();
        assert_eq!(store.stored_bytes(), 6);
        assert_eq!(store.value("ab"), Some(b"xyz".to_vec()));
        assert_eq!(store.value("missing"), None);
    }

    #[test]
    fn cas_counter_skips_zero_when_it_wraps() {
        let mut inner = MemoryInner { last_cas: u32::MAX, ..MemoryInner::default() };
        assert_eq!(inner.next_cas(), 1);
    }

    #[test]
    fn every_error_variant_formats() {
        let cases = [
            (
                SetError::CasMismatch,
                "shared data write: expected the cas that was read, found a newer one",
            ),
            (
                SetError::Store(StoreError::new("InternalFailure")),
                "shared data call failed: InternalFailure",
            ),
        ];
        for (error, want) in cases {
            assert_eq!(error.to_string(), want);
        }
        assert_eq!(StoreError::new("x").detail(), "x");
    }
}
