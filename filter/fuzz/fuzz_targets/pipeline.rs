//! Fuzzes the whole decision for one request: arbitrary header fields and
//! body through `warrant_core::pipeline::evaluate`, with a fixed policy
//! ([`warrant_fuzz::pipeline_config`]) and a fresh in-memory session store,
//! seeded randomness and chain cache per input.
//!
//! Input: header lines `name: value` (values any bytes but a newline), an
//! empty line, the body (see [`warrant_fuzz::parse_request`]; `peer-san:
//! URI` plays an mTLS peer). The headers go through the host's header-map
//! serialisation and `decode_header_map` first, as in the filter.
//!
//! Properties, beyond "never panics":
//! - the header map decodes to the pairs it was encoded from, and the raw
//!   input read as a header map is an error or pairs, never a panic;
//! - the outcome carries one complete record: the given message id, the
//!   body's SHA-256, and `decision`, `status` and `http_status` as the
//!   decision maps them ([`Decision::code`], [`Decision::status`],
//!   [`Decision::http_status`], 0 when forwarded);
//! - the record survives protobuf encoding unchanged;
//! - a refusal without findings records its reason; a forwarded request
//!   has an authenticated sender (the policy requires one), and carries the
//!   verdict header exactly when flagged;
//! - the local reply is JSON naming the same decision and message id;
//! - the scan's time is the clock between two readings or nothing (the
//!   clock steps 1,000 ns per reading);
//! - the chain check is `None` exactly without a chain header, and a
//!   forwarded chain was verified now (the cache is fresh per input).

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use sha2::{Digest, Sha256};
use warrant_core::config::Policy;
use warrant_core::decision::Decision;
use warrant_core::pipeline::{evaluate, ChainCheck, Env, VERDICT_HEADER};
use warrant_delegation::ChainCache;
use warrant_fuzz::{parse_request, pipeline_config, NOW_SECS};
use warrant_session::{MemoryStore, SeededRandom};
use warrant_wire::AuditRecord;

const MESSAGE_ID: &str = "00000000-0000-4000-8000-000000000000";

fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| Policy::from_json(pipeline_config().as_bytes()).expect("config"))
}

/// A clock 1,000 ns later at every reading.
fn clock() -> u64 {
    static NANOS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NANOS.fetch_add(1000, std::sync::atomic::Ordering::Relaxed)
}

fuzz_target!(|data: &[u8]| {
    let policy = policy();
    let _ = warrant_core::request::decode_header_map(data);
    let (head, body) = parse_request(data);
    let store = MemoryStore::new();
    policy.sessions.prepare(&store).expect("memory store");
    let mut random = SeededRandom::new(7);
    let mut chains = ChainCache::new(4);
    let mut env = Env { store: &store, random: &mut random, chains: &mut chains, clock };
    let outcome = evaluate(policy, &mut env, &head, body, MESSAGE_ID, NOW_SECS * 1_000_000_000);
    assert!(matches!(outcome.scan.nanos, 0 | 1000), "{:?}", outcome.scan);
    assert_eq!(outcome.chain == ChainCheck::None, head.delegation_header.is_none());

    let decision = outcome.decision;
    let record = &outcome.record;
    assert_eq!(record.message_id, MESSAGE_ID);
    assert_eq!(record.decision, decision.code());
    assert_eq!(record.status, decision.status());
    assert_eq!(record.http_status, decision.http_status().unwrap_or(0));
    assert_eq!(record.body_sha256, hex(&Sha256::digest(body)));
    assert_eq!(record.findings.len(), outcome.findings.len());
    assert_eq!(AuditRecord::decode(record.encode_to_vec().as_slice()).as_ref(), Ok(record));

    if !decision.forwards() && outcome.findings.is_empty() {
        assert!(!record.reason.is_empty(), "refused without a reason: {decision:?}");
    }
    if decision.forwards() {
        assert_eq!(record.signature, "verified", "forwarded an unauthenticated request");
        assert_ne!(record.identity_source, "none");
        if head.delegation_header.is_some() {
            assert_eq!(record.delegation_chain_hash.len(), 64, "forwarded an unverified chain");
            assert_eq!(outcome.chain, ChainCheck::Verified);
        }
    }
    let flagged = outcome.forward_headers.iter().any(|(name, _)| name == VERDICT_HEADER);
    assert_eq!(flagged, decision == Decision::ContentFlagged);

    let reply: serde_json::Value =
        serde_json::from_slice(&outcome.reply_body(decision)).expect("reply is JSON");
    assert_eq!(reply["policy_decision"], decision.code());
    assert_eq!(reply["message_id"], MESSAGE_ID);
});

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
