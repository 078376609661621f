//! A bounded per-VM cache of verified chains.
//!
//! Verifying a 3-hop chain costs three Ed25519 verifications (about 160 µs
//! each in Envoy's V8, reference §6.3), while agents resend the same header
//! on every request. [`ChainCache`] remembers each [`VerifiedChain`] until it
//! stops being valid, so a repeated header costs a map lookup.
//!
//! - **Key**: the exact header bytes and the recipient (a chain valid for one
//!   recipient may not be valid for another), in a hash map: a fast
//!   non-cryptographic hash (foldhash, hashbrown's default, seeded per VM)
//!   picks the bucket and a full byte comparison decides, so equality is
//!   exact and a hit costs neither a SHA-256 pass over the header (about
//!   4 µs in V8 for 1.6 KB) nor a walk down an ordered map whose keys share
//!   long prefixes (chains from one issuer differ only deep inside; 1.7 µs
//!   per hit in V8 with 1024 entries before this map). The chain hash
//!   (SHA-256) is computed once, at verification, and kept in the entry.
//!   Only verified chains are stored, so nobody can fill a bucket with
//!   crafted colliding keys. The price is memory, bounded below.
//! - **Expiry**: an entry is dropped once `now` passes the chain's earliest
//!   `expires_at`. (Its `issued_at` checks only get easier with time.)
//! - **Bounds**: at most `capacity` entries and, with
//!   [`ChainCache::with_byte_limit`], at most that many bytes of entries
//!   (each counted by [`entry_bytes`]: the key's header and recipient, the
//!   verified chain's strings and lists, and the fixed parts). While an
//!   insertion would pass either bound, the entry inserted first is
//!   evicted; a chain larger than the whole byte bound is not cached. The
//!   entry bound alone lets a VM hold `capacity` chains near
//!   `max_header_bytes`, and an entry counts about 2.3 times its header
//!   (the header, the decoded tokens, the ids): about 20 MiB with the
//!   defaults, which the Wasm memory budget does not allow; the byte bound
//!   holds it to what the operator sets.
//! - **Invalidation**: entries are tied to [`VerifyPolicy::generation`]. The
//!   first call with another generation empties the cache, so a new config
//!   (keys, revocations, limits) applies to the very next request. Callers
//!   must change the generation whenever the config or key store changes.
//! - Failures are not cached: a refused header is verified again each time
//!   (bounded by the parse limits).
//!
//! The cache holds no clock; every call takes `now`. It is not shared between
//! Envoy worker threads (each has its own VM).

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use hashbrown::{Equivalent, HashMap};

use crate::chain::{Chain, VerifiedChain, VerifyPolicy};
use crate::error::DelegationError;
use crate::keys::KeyStore;
use crate::time::Timestamp;

/// Verified chains by header and recipient, bounded, expiring.
#[derive(Debug, Clone)]
pub struct ChainCache {
    capacity: usize,
    byte_limit: usize,
    /// Sum of the entries' [`entry_bytes`].
    bytes: usize,
    generation: u64,
    next_sequence: u64,
    entries: HashMap<Arc<Key>, Entry>,
    by_age: BTreeMap<u64, Arc<Key>>,
    stats: CacheStats,
}

/// Counters of a [`ChainCache`] since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that found no valid entry.
    pub misses: u64,
    /// Entries dropped because they expired.
    pub expired: u64,
    /// Entries evicted to make room.
    pub evicted: u64,
    /// Verified chains not cached because one alone passes the byte bound.
    pub too_large: u64,
    /// Times entries were dropped by a generation change, or
    /// [`ChainCache::clear`] was called.
    pub invalidations: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    chain: Arc<VerifiedChain>,
    sequence: u64,
    /// What the entry counts against the byte bound.
    bytes: usize,
}

impl ChainCache {
    /// An empty cache holding at most `capacity` chains (0: cache nothing),
    /// of any size until [`ChainCache::with_byte_limit`] bounds them.
    pub fn new(capacity: usize) -> ChainCache {
        ChainCache {
            capacity,
            byte_limit: usize::MAX,
            bytes: 0,
            generation: 0,
            next_sequence: 0,
            entries: HashMap::new(),
            by_age: BTreeMap::new(),
            stats: CacheStats::default(),
        }
    }

    /// The same cache, holding at most `bytes` of entries (see
    /// [`entry_bytes`]).
    #[must_use]
    pub fn with_byte_limit(mut self, bytes: usize) -> ChainCache {
        self.byte_limit = bytes;
        self.shrink_to(0, 0);
        self
    }

    /// Returns the cached verification of `header` for `recipient`, or parses
    /// and verifies it and caches the result.
    ///
    /// # Errors
    /// Any [`DelegationError`] of [`Chain::parse`] or [`Chain::verify`].
    pub fn verify(
        &mut self,
        header: &[u8],
        recipient: &str,
        keys: &KeyStore,
        policy: &VerifyPolicy,
        now: Timestamp,
    ) -> Result<Arc<VerifiedChain>, DelegationError> {
        if let Some(chain) = self.lookup(header, recipient, policy.generation(), now) {
            return Ok(chain);
        }
        let chain = Chain::parse(header, policy.limits())?.verify(keys, policy, recipient, now)?;
        let chain = Arc::new(chain);
        self.insert(header, recipient, policy.generation(), Arc::clone(&chain));
        Ok(chain)
    }

    /// The cached chain for `header` and `recipient`, if one was stored under
    /// `generation` and has not expired at `now`.
    pub fn lookup(
        &mut self,
        header: &[u8],
        recipient: &str,
        generation: u64,
        now: Timestamp,
    ) -> Option<Arc<VerifiedChain>> {
        self.adopt(generation);
        let key = KeyRef { header, recipient };
        let Some(entry) = self.entries.get(&key) else {
            self.stats.misses += 1;
            return None;
        };
        if now > entry.chain.expires_at() {
            let (sequence, bytes) = (entry.sequence, entry.bytes);
            self.entries.remove(&key);
            self.by_age.remove(&sequence);
            self.bytes = self.bytes.saturating_sub(bytes);
            self.stats.expired += 1;
            self.stats.misses += 1;
            return None;
        }
        self.stats.hits += 1;
        Some(Arc::clone(&entry.chain))
    }

    /// Stores a chain verified under `generation` for `header` and
    /// `recipient`, evicting the oldest entries while a bound would be
    /// passed. Private: only [`ChainCache::verify`] knows the chain came
    /// from that header.
    fn insert(
        &mut self,
        header: &[u8],
        recipient: &str,
        generation: u64,
        chain: Arc<VerifiedChain>,
    ) {
        self.adopt(generation);
        if self.capacity == 0 {
            return;
        }
        let bytes = entry_bytes(header, recipient, &chain);
        if bytes > self.byte_limit {
            self.stats.too_large += 1;
            return;
        }
        let key = Arc::new(Key { header: header.into(), recipient: recipient.into() });
        if let Some(old) = self.entries.remove(&key) {
            self.by_age.remove(&old.sequence);
            self.bytes = self.bytes.saturating_sub(old.bytes);
        }
        self.shrink_to(1, bytes);
        let sequence = self.next_sequence;
        self.next_sequence = self.next_sequence.wrapping_add(1);
        self.by_age.insert(sequence, Arc::clone(&key));
        self.entries.insert(key, Entry { chain, sequence, bytes });
        self.bytes = self.bytes.saturating_add(bytes);
    }

    /// Evicts the oldest entries until `entries` more entries of `bytes`
    /// more bytes fit within both bounds.
    fn shrink_to(&mut self, entries: usize, bytes: usize) {
        while self.entries.len().saturating_add(entries) > self.capacity
            || self.bytes.saturating_add(bytes) > self.byte_limit
        {
            let Some((_, oldest)) = self.by_age.pop_first() else { break };
            if let Some(entry) = self.entries.remove(&oldest) {
                self.bytes = self.bytes.saturating_sub(entry.bytes);
            }
            self.stats.evicted += 1;
        }
    }

    /// Drops every entry (e.g. after a revocation).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.by_age.clear();
        self.bytes = 0;
        self.stats.invalidations += 1;
    }

    /// The number of cached chains.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache holds no chain.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The most chains held at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The most bytes of entries held at once (`usize::MAX`: no bound).
    pub fn byte_limit(&self) -> usize {
        self.byte_limit
    }

    /// What the cached entries count against the byte bound.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The generation of the cached entries.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Counters since the cache was made.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Empties the cache if its entries belong to another generation.
    fn adopt(&mut self, generation: u64) {
        if generation != self.generation {
            if !self.entries.is_empty() {
                self.clear();
            }
            self.generation = generation;
        }
    }
}

/// What an entry for `chain`, verified from `header` for `recipient`, counts
/// against the byte bound: the key's bytes, the chain's heap bytes
/// ([`VerifiedChain::heap_bytes`]), and the fixed size of the key, the chain
/// and the entry with its map slots and age index. Allocator overhead is
/// not counted.
pub fn entry_bytes(header: &[u8], recipient: &str, chain: &VerifiedChain) -> usize {
    const FIXED: usize = size_of::<Key>()
        + 2 * size_of::<usize>() // the key's `Arc` counts
        + size_of::<VerifiedChain>()
        + 2 * size_of::<usize>() // the chain's `Arc` counts
        + size_of::<(Arc<Key>, Entry)>() // the map's slot
        + size_of::<(u64, Arc<Key>)>(); // the age index's
    header.len() + recipient.len() + chain.heap_bytes() + FIXED
}

/// What an entry is stored under: the exact header bytes and the recipient.
#[derive(Debug, PartialEq, Eq)]
struct Key {
    header: Box<[u8]>,
    recipient: Box<str>,
}

/// A [`Key`] borrowed from a request, to look one up without copying the
/// header.
#[derive(Debug)]
struct KeyRef<'a> {
    header: &'a [u8],
    recipient: &'a str,
}

// `Key` and `KeyRef` must hash alike: the same fields, in the same order,
// through the same `Hash` impls (`Box<T>` hashes as `T`).
impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        KeyRef { header: &self.header, recipient: &self.recipient }.hash(state);
    }
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.header.hash(state);
        self.recipient.hash(state);
    }
}

impl Equivalent<Arc<Key>> for KeyRef<'_> {
    fn equivalent(&self, key: &Arc<Key>) -> bool {
        same_bytes(&key.header, self.header) && *key.recipient == *self.recipient
    }
}

/// `a == b`, eight bytes at a time: in wasm32 `[u8]` equality is a byte
/// loop (libc `memcmp`), and a hit compares the whole header.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a_words, b_words) = (a.chunks_exact(8), b.chunks_exact(8));
    let tails_equal = a_words.remainder() == b_words.remainder();
    tails_equal && a_words.zip(b_words).all(|(x, y)| word(x) == word(y))
}

/// An 8-byte chunk as a number (any fixed byte order would do).
fn word(chunk: &[u8]) -> u64 {
    // Always 8 bytes (from `chunks_exact(8)`); no panic path either way.
    u64::from_le_bytes(chunk.try_into().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_is_slice_equality() {
        let base: Vec<u8> = (0..=40u8).collect();
        for len in 0..base.len() {
            let a = &base[..len];
            assert!(same_bytes(a, a), "len {len}");
            assert!(!same_bytes(a, &base[..len + 1]), "len {len}");
            for i in 0..len {
                let mut b = a.to_vec();
                b[i] ^= 1;
                assert!(!same_bytes(a, &b), "len {len}, byte {i}");
            }
        }
    }
}
