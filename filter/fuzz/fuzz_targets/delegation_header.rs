//! Fuzzes the delegation header parser and verifier.
//!
//! Input: raw header bytes, or (first byte `!`) a mint request.
//! Properties, beyond "never panics":
//! - a parsed chain re-encoded with `encode_header` parses to the same tokens
//!   and verifies to the same facts or the same refusal (the chain hash is
//!   the only fact allowed to differ: it hashes the exact bytes);
//! - a verified chain's facts are consistent (path, depth, parent);
//! - mint → encode → parse → verify succeeds for whatever `mint` accepts.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use warrant_delegation::{
    encode_header, mint, scope_allows, tool_allowed, Chain, DelegationError, Limits, MintRequest,
    VerifiedChain, VerifyPolicy,
};
use warrant_fuzz::{key, keys, now, AGENTS};

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((b'!', rest)) => mint_round_trip(rest),
        _ => header(data),
    }
});

fn header(data: &[u8]) {
    let keys = keys();
    let policy = VerifyPolicy::new().revoke("agent-c");
    let Ok(chain) = Chain::parse(data, policy.limits()) else { return };
    let verified = chain.verify(&keys, &policy, "target-agent", now());
    if let Ok(v) = &verified {
        check_facts(v, &chain);
    }

    // Re-encoding may grow the text (defaults become explicit), so the size
    // cap is lifted for the second parse; the token cap stays.
    let again = encode_header(chain.tokens());
    let roomy = Limits { max_header_bytes: usize::MAX, ..*policy.limits() };
    let reparsed = Chain::parse(again.as_bytes(), &roomy).expect("re-encoded chain parses");
    assert_eq!(reparsed.tokens(), chain.tokens(), "re-encoding changed the tokens");
    let reverified = reparsed.verify(&keys, &policy, "target-agent", now());
    match (&verified, &reverified) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.path(), b.path());
            assert_eq!(a.tools(), b.tools());
            assert_eq!(a.expires_at(), b.expires_at());
            assert_eq!(a.token_ids(), b.token_ids());
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "re-encoding changed the refusal"),
        (a, b) => panic!("re-encoding changed the outcome: {a:?} vs {b:?}"),
    }
}

fn check_facts(v: &VerifiedChain, chain: &Chain) {
    assert_eq!(v.depth(), chain.len());
    assert_eq!(v.path().len(), v.depth() + 1);
    assert_eq!(v.path().first().map(String::as_str), Some(v.root()));
    assert_eq!(v.path().last().map(String::as_str), Some(v.delegate()));
    assert_eq!(v.chain_hash(), chain.chain_hash());
    assert!(scope_allows(v.scope(), "target-agent"));
    if let Some(tools) = v.tools() {
        assert!(tools.iter().all(|t| tool_allowed(v, t)));
    }
}

/// `rest` as `delegator|delegate|ttl-secs|max-depth|scope,..|tools,..`
/// (fields may be missing or garbage: defaults fill in).
fn mint_round_trip(rest: &[u8]) {
    let text = String::from_utf8_lossy(rest);
    let mut fields = text.split('|');
    let pick = |f: Option<&str>| {
        let i = f.and_then(|s| s.bytes().next()).map_or(0, usize::from);
        AGENTS[i % AGENTS.len()]
    };
    let delegator = pick(fields.next());
    let delegate = fields.next().unwrap_or("agent-a").to_string();
    let ttl = fields.next().and_then(|s| s.parse::<u64>().ok()).unwrap_or(3600);
    let max_depth = fields.next().and_then(|s| s.parse::<i64>().ok()).unwrap_or(3);
    let list = |f: Option<&str>| -> Vec<String> {
        f.map(|s| s.split(',').map(str::to_string).collect()).unwrap_or_default()
    };
    let scope = list(fields.next());
    let tools = list(fields.next());
    let request = MintRequest {
        delegator,
        delegate: &delegate,
        scope: scope.clone(),
        tools: tools.clone(),
        ttl: Duration::from_secs(ttl),
        max_depth,
        parent: None,
    };
    let Ok(token) = mint(&key(delegator), &request, now()) else { return };
    let header = encode_header(&[token]);
    let limits = Limits { max_header_bytes: usize::MAX, ..Limits::default() };
    let chain = Chain::parse(header.as_bytes(), &limits).expect("minted header parses");
    let recipient = scope.first().cloned().unwrap_or_default();
    match chain.verify(&keys(), &VerifyPolicy::new(), &recipient, now()) {
        Ok(v) => {
            assert_eq!((v.root(), v.delegate()), (delegator, delegate.as_str()));
            assert_eq!(v.tools().map(<[String]>::to_vec), (!tools.is_empty()).then_some(tools));
        }
        // An empty scope allows no recipient: the only acceptable refusal.
        Err(DelegationError::NotInScope { .. }) if scope.is_empty() => {}
        Err(e) => panic!("minted token refused: {e}"),
    }
}
