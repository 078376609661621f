//! The per-VM chain cache: hits, expiry, eviction (by entries and by
//! bytes), invalidation.

// Helpers outside `#[test]` functions unwrap too.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use warrant_delegation::cache::entry_bytes;
use warrant_delegation::config::{DEFAULT_CACHE_BYTES, DEFAULT_CACHE_ENTRIES};
use warrant_delegation::keys::KeyStore;
use warrant_delegation::{ChainCache, DelegationError, Timestamp, VerifyPolicy};

fn header_for(delegate: &'static str, expires: i64) -> String {
    header(&build(&[hop("human", delegate).valid(0, expires)]))
}

fn check(
    cache: &mut ChainCache,
    header: &str,
    keys: &KeyStore,
    policy: &VerifyPolicy,
    now: Timestamp,
) -> Result<String, DelegationError> {
    cache.verify(header.as_bytes(), "target-agent", keys, policy, now).map(|c| c.delegate().into())
}

#[test]
fn second_verification_is_a_hit_even_without_keys() {
    let mut cache = ChainCache::new(8);
    let h = header_for("agent-a", 3600);
    let policy = VerifyPolicy::new();
    assert_eq!(check(&mut cache, &h, &cast(), &policy, now()).unwrap(), "agent-a");
    // An empty key store would fail a real verification: success proves a hit.
    assert_eq!(check(&mut cache, &h, &KeyStore::new(), &policy, now()).unwrap(), "agent-a");
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, cache.len()), (1, 1, 1));
}

#[test]
fn entries_are_keyed_by_recipient_too() {
    let mut cache = ChainCache::new(8);
    let h = header(&build(&[hop("human", "agent-a").scope(&["*"])]));
    let policy = VerifyPolicy::new();
    cache.verify(h.as_bytes(), "x", &cast(), &policy, now()).unwrap();
    cache.verify(h.as_bytes(), "y", &cast(), &policy, now()).unwrap();
    assert_eq!(cache.len(), 2);
    assert!(cache.verify(h.as_bytes(), "z", &KeyStore::new(), &policy, now()).is_err());
}

#[test]
fn refusals_are_not_cached() {
    let mut cache = ChainCache::new(8);
    let h = header_for("agent-a", 3600);
    let policy = VerifyPolicy::new();
    assert!(check(&mut cache, &h, &KeyStore::new(), &policy, now()).is_err());
    assert!(cache.is_empty());
    assert!(check(&mut cache, &h, &cast(), &policy, now()).is_ok());
}

#[test]
fn entry_expires_with_the_earliest_token() {
    let mut cache = ChainCache::new(8);
    let tokens =
        build(&[hop("human", "agent-a").valid(0, 7200), hop("agent-a", "agent-b").valid(0, 60)]);
    let h = header(&tokens);
    let policy = VerifyPolicy::new();
    assert!(check(&mut cache, &h, &cast(), &policy, now()).is_ok());
    assert!(
        check(&mut cache, &h, &KeyStore::new(), &policy, at(60)).is_ok(),
        "still valid at 60 s"
    );
    assert_eq!(
        check(&mut cache, &h, &cast(), &policy, at(61)),
        Err(DelegationError::Expired { hop: 1, expired_at: at(60), now: at(61) })
    );
    assert_eq!(cache.stats().expired, 1);
    assert!(cache.is_empty());
}

#[test]
fn oldest_entry_is_evicted_when_full() {
    let mut cache = ChainCache::new(2);
    let policy = VerifyPolicy::new();
    let (a, b, c) =
        (header_for("agent-a", 3600), header_for("agent-b", 3600), header_for("agent-c", 3600));
    for h in [&a, &b, &c] {
        check(&mut cache, h, &cast(), &policy, now()).unwrap();
    }
    assert_eq!((cache.len(), cache.stats().evicted), (2, 1));
    let nobody = KeyStore::new();
    assert!(check(&mut cache, &a, &nobody, &policy, now()).is_err(), "a was evicted");
    assert!(check(&mut cache, &b, &nobody, &policy, now()).is_ok());
    assert!(check(&mut cache, &c, &nobody, &policy, now()).is_ok());
}

#[test]
fn new_generation_drops_entries_so_revocation_applies_at_once() {
    let mut cache = ChainCache::new(8);
    let h = header_for("agent-a", 3600);
    let before = VerifyPolicy::new().with_generation(1);
    check(&mut cache, &h, &cast(), &before, now()).unwrap();
    let after = VerifyPolicy::new().revoke("human").with_generation(2);
    assert!(matches!(
        check(&mut cache, &h, &cast(), &after, now()),
        Err(DelegationError::Revoked { hop: 0, .. })
    ));
    assert_eq!((cache.generation(), cache.stats().invalidations), (2, 1));
}

#[test]
fn clear_empties_the_cache() {
    let mut cache = ChainCache::new(8);
    check(&mut cache, &header_for("agent-a", 3600), &cast(), &VerifyPolicy::new(), now()).unwrap();
    cache.clear();
    assert!(cache.is_empty());
}

#[test]
fn zero_capacity_caches_nothing() {
    let mut cache = ChainCache::new(0);
    let h = header_for("agent-a", 3600);
    let policy = VerifyPolicy::new();
    assert!(check(&mut cache, &h, &cast(), &policy, now()).is_ok());
    assert!(cache.is_empty());
    assert!(check(&mut cache, &h, &KeyStore::new(), &policy, now()).is_err());
}

#[test]
fn many_entries_hit_exactly_and_leave_in_insertion_order() {
    let mut cache = ChainCache::new(64);
    let policy = VerifyPolicy::new();
    // Headers of one shape that differ only deep inside (the expiry).
    let headers: Vec<String> = (0..100).map(|i| header_for("agent-a", 3600 + i)).collect();
    for h in &headers {
        check(&mut cache, h, &cast(), &policy, now()).unwrap();
    }
    assert_eq!((cache.len(), cache.stats().evicted), (64, 36));
    let nobody = KeyStore::new();
    for (i, h) in headers.iter().enumerate() {
        assert_eq!(check(&mut cache, h, &nobody, &policy, now()).is_ok(), i >= 36, "header {i}");
    }
}

#[test]
fn a_header_one_byte_off_a_cached_one_is_verified_again() {
    let mut cache = ChainCache::new(8);
    let policy = VerifyPolicy::new();
    let h = header_for("agent-a", 3600);
    check(&mut cache, &h, &cast(), &policy, now()).unwrap();
    // Same length, one base64 character changed near the end (before the
    // padding): not served from the cache, and it fails on its own.
    let mut bytes = h.clone().into_bytes();
    let last = bytes.iter().rposition(|b| *b != b'=').unwrap();
    let i = last - 3;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let edited = String::from_utf8(bytes).unwrap();
    assert_eq!(edited.len(), h.len());
    assert!(check(&mut cache, &edited, &cast(), &policy, now()).is_err());
    assert_eq!(cache.stats().hits, 0);
    // A longer header that starts with the cached one is no hit either.
    let longer = format!("{h}AAAA");
    assert!(check(&mut cache, &longer, &cast(), &policy, now()).is_err());
    assert_eq!((cache.stats().hits, cache.len()), (0, 1));
}

/// A 3-hop chain like the benchmark's (scopes of one or two agents, a few
/// tools), with its header.
fn three_hops(expires: i64) -> String {
    header(&build(&[
        hop("human", "agent-a").scope(&["*"]).valid(0, expires),
        hop("agent-a", "agent-b").scope(&["agent-c", "target-agent"]).tools(&["search", "read"]),
        hop("agent-b", "agent-c").scope(&["target-agent"]).tools(&["search"]),
    ]))
}

/// What the entry of `h` counts, from the cache itself.
fn bytes_of(h: &str) -> usize {
    let mut cache = ChainCache::new(1);
    check(&mut cache, h, &cast(), &VerifyPolicy::new(), now()).unwrap();
    cache.bytes()
}

#[test]
fn entries_count_their_header_and_decoded_chain() {
    let h = three_hops(3600);
    let chain = cast_chain(&h);
    let counted = bytes_of(&h);
    assert_eq!(counted, entry_bytes(h.as_bytes(), "target-agent", &chain));
    // At least the key and the decoded tokens' text (4,004 bytes for a
    // header of 1,716 when written); at most a few times the header.
    assert!(counted > h.len() * 2, "{counted} for a header of {}", h.len());
    assert!(counted < h.len() * 4, "{counted} for a header of {}", h.len());
    // The default bound holds the default 1,024 entries of such chains.
    assert!(
        DEFAULT_CACHE_ENTRIES * counted <= DEFAULT_CACHE_BYTES,
        "1,024 x {counted} bytes is over the default {DEFAULT_CACHE_BYTES}"
    );
}

fn cast_chain(h: &str) -> std::sync::Arc<warrant_delegation::VerifiedChain> {
    let mut cache = ChainCache::new(0);
    cache.verify(h.as_bytes(), "target-agent", &cast(), &VerifyPolicy::new(), now()).unwrap()
}

#[test]
fn the_byte_bound_evicts_the_oldest_and_counts_what_stays() {
    let (a, b, c) = (three_hops(3600), three_hops(3601), three_hops(3602));
    let each = bytes_of(&a);
    assert_eq!((bytes_of(&b), bytes_of(&c)), (each, each), "same shapes, same sizes");
    // Room for two and a half: the third insertion evicts the first.
    let mut cache = ChainCache::new(64).with_byte_limit(each * 5 / 2);
    let policy = VerifyPolicy::new();
    for h in [&a, &b, &c] {
        check(&mut cache, h, &cast(), &policy, now()).unwrap();
    }
    assert_eq!((cache.len(), cache.bytes(), cache.stats().evicted), (2, 2 * each, 1));
    let nobody = KeyStore::new();
    assert!(check(&mut cache, &a, &nobody, &policy, now()).is_err(), "a was evicted");
    assert!(check(&mut cache, &b, &nobody, &policy, now()).is_ok());
    assert!(check(&mut cache, &c, &nobody, &policy, now()).is_ok());
}

#[test]
fn a_chain_larger_than_the_byte_bound_is_not_cached() {
    let h = three_hops(3600);
    let mut cache = ChainCache::new(64).with_byte_limit(bytes_of(&h) - 1);
    let policy = VerifyPolicy::new();
    assert!(check(&mut cache, &h, &cast(), &policy, now()).is_ok());
    assert_eq!((cache.len(), cache.bytes(), cache.stats().too_large), (0, 0, 1));
    assert!(check(&mut cache, &h, &KeyStore::new(), &policy, now()).is_err());
}

#[test]
fn a_smaller_byte_bound_evicts_at_once_and_bytes_go_with_the_entries() {
    let policy = VerifyPolicy::new();
    let headers: Vec<String> = (0..4).map(|i| three_hops(60 + i)).collect();
    let mut cache = ChainCache::new(64);
    for h in &headers {
        check(&mut cache, h, &cast(), &policy, now()).unwrap();
    }
    let each = bytes_of(&headers[0]);
    assert_eq!(cache.bytes(), 4 * each);
    let mut cache = cache.with_byte_limit(2 * each);
    assert_eq!((cache.len(), cache.bytes(), cache.stats().evicted), (2, 2 * each, 2));
    // Expiry (the first left expires at 62 s) and clearing give bytes back.
    assert!(check(&mut cache, &headers[2], &cast(), &policy, at(63)).is_err());
    assert_eq!((cache.len(), cache.bytes()), (1, each));
    cache.clear();
    assert_eq!(cache.bytes(), 0);
}
