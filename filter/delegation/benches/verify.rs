//! Verification cost: one hop, a cold 3-hop chain, and a cached 3-hop chain.
//!
//! Run with `cargo bench -p warrant-delegation --bench verify`. Not run by
//! tests. Native numbers only; the wasm cost in Envoy's V8 is about 3–4×
//! higher for the signature work (reference `envoy-proxy-wasm.md` §6.3).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};
use warrant_delegation::keys::KeyStore;
use warrant_delegation::{
    encode_header, mint, Chain, ChainCache, MintRequest, Timestamp, VerifiedChain, VerifyPolicy,
};

const NAMES: [&str; 4] = ["human", "agent-a", "agent-b", "agent-c"];

fn key(name: &str) -> SigningKey {
    SigningKey::from_bytes(&Sha256::digest(name.as_bytes()).into())
}

/// A header of `hops` tokens human → agent-a → ..., the key store, and now.
fn fixture(hops: usize) -> (String, KeyStore, Timestamp) {
    let now = Timestamp::from_unix_secs(1_774_353_600);
    let mut keys = KeyStore::new();
    for name in NAMES {
        keys.insert(name, key(name).verifying_key());
    }
    let policy = VerifyPolicy::new();
    let mut parent: Option<VerifiedChain> = None;
    for i in 0..hops {
        let request = MintRequest {
            delegator: NAMES[i],
            delegate: NAMES[i + 1],
            scope: vec!["target-agent".into()],
            tools: vec!["Read".into(), "Bash".into()],
            ttl: Duration::from_secs(3600),
            max_depth: 3,
            parent: parent.as_ref(),
        };
        let token = mint(&key(NAMES[i]), &request, now).unwrap();
        let mut tokens = parent.map(|p| p.tokens().to_vec()).unwrap_or_default();
        tokens.push(token);
        let chain = Chain::parse(encode_header(&tokens).as_bytes(), policy.limits()).unwrap();
        parent = Some(chain.verify_ignoring_recipient(&keys, &policy, now).unwrap());
    }
    let header = encode_header(parent.unwrap().tokens());
    (header, keys, now)
}

fn benches(c: &mut Criterion) {
    let policy = VerifyPolicy::new();
    for hops in [1, 3] {
        let (header, keys, now) = fixture(hops);
        c.bench_function(&format!("parse+verify {hops}-hop (cold)"), |b| {
            b.iter(|| {
                let chain = Chain::parse(black_box(header.as_bytes()), policy.limits()).unwrap();
                chain.verify(&keys, &policy, "target-agent", now).unwrap()
            })
        });
    }

    let (header, keys, now) = fixture(3);
    c.bench_function("parse only 3-hop", |b| {
        b.iter(|| Chain::parse(black_box(header.as_bytes()), policy.limits()).unwrap())
    });
    let mut cache = ChainCache::new(1024);
    cache.verify(header.as_bytes(), "target-agent", &keys, &policy, now).unwrap();
    c.bench_function("cached 3-hop (hit)", |b| {
        b.iter(|| {
            cache.verify(black_box(header.as_bytes()), "target-agent", &keys, &policy, now).unwrap()
        })
    });
    c.bench_function("sha256 of the 3-hop header (for comparison)", |b| {
        b.iter(|| Sha256::digest(black_box(header.as_bytes())))
    });
    eprintln!("3-hop header: {} bytes", header.len());
}

criterion_group! {
    name = verify;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(verify);
