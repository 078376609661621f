//! A bounded per-VM cache of verified chains.
//!
//! Verifying a 3-hop chain costs three Ed25519 verifications (about 160 µs
//! each in Envoy's V8, reference §6.3), while agents resend the same header
//! on every request. [`ChainCache`] remembers each [`VerifiedChain`] until it
//! stops being valid, so a repeated header costs a map lookup.
//!
//! - **Key**: the exact header bytes and the recipient (a chain valid for one
//!   recipient may not be valid for another). Keying on the bytes rather than
//!   on a hash of them makes equality exact and spares a SHA-256 pass over
//!   the header on every hit, which is the main cost of a hit in wasm; the
//!   price is memory: at most `capacity × (max_header_bytes + recipient)`
//!   bytes of keys (8 MiB for the defaults).
//! - **Expiry**: an entry is dropped once `now` passes the chain's earliest
//!   `expires_at`. (Its `issued_at` checks only get easier with time.)
//! - **Bound**: when full, the entry inserted first is evicted.
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
use std::sync::Arc;

use crate::chain::{Chain, VerifiedChain, VerifyPolicy};
use crate::error::DelegationError;
use crate::keys::KeyStore;
use crate::time::Timestamp;

/// Verified chains by header and recipient, bounded, expiring.
#[derive(Debug, Clone)]
pub struct ChainCache {
    capacity: usize,
    generation: u64,
    next_sequence: u64,
    entries: BTreeMap<Arc<[u8]>, Entry>,
    by_age: BTreeMap<u64, Arc<[u8]>>,
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
    /// Times entries were dropped by a generation change, or
    /// [`ChainCache::clear`] was called.
    pub invalidations: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    chain: Arc<VerifiedChain>,
    sequence: u64,
}

impl ChainCache {
    /// An empty cache holding at most `capacity` chains (0: cache nothing).
    pub fn new(capacity: usize) -> ChainCache {
        ChainCache {
            capacity,
            generation: 0,
            next_sequence: 0,
            entries: BTreeMap::new(),
            by_age: BTreeMap::new(),
            stats: CacheStats::default(),
        }
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
        let key = cache_key(header, recipient);
        let Some(entry) = self.entries.get(key.as_slice()) else {
            self.stats.misses += 1;
            return None;
        };
        if now > entry.chain.expires_at() {
            let sequence = entry.sequence;
            self.entries.remove(key.as_slice());
            self.by_age.remove(&sequence);
            self.stats.expired += 1;
            self.stats.misses += 1;
            return None;
        }
        self.stats.hits += 1;
        Some(Arc::clone(&entry.chain))
    }

    /// Stores a chain verified under `generation` for `header` and
    /// `recipient`, evicting the oldest entry when full. Private: only
    /// [`ChainCache::verify`] knows the chain came from that header.
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
        let key: Arc<[u8]> = cache_key(header, recipient).into();
        if let Some(old) = self.entries.remove(&key) {
            self.by_age.remove(&old.sequence);
        }
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.by_age.pop_first() else { break };
            self.entries.remove(&oldest);
            self.stats.evicted += 1;
        }
        let sequence = self.next_sequence;
        self.next_sequence = self.next_sequence.wrapping_add(1);
        self.by_age.insert(sequence, Arc::clone(&key));
        self.entries.insert(key, Entry { chain, sequence });
    }

    /// Drops every entry (e.g. after a revocation).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.by_age.clear();
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

/// The header bytes, a 0 byte, then the recipient. A valid header never
/// holds a 0 byte (it is base64), and any header with one fails to parse and
/// is never stored, so the split is unambiguous for stored keys.
fn cache_key(header: &[u8], recipient: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(header.len() + 1 + recipient.len());
    key.extend_from_slice(header);
    key.push(0);
    key.extend_from_slice(recipient.as_bytes());
    key
}
