//! Fixtures shared by the integration tests: deterministic keys, a fixed
//! clock, and a builder for correctly linked and signed chains that tests
//! then tamper with.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey};
use sha2::{Digest, Sha256};
use warrant_delegation::keys::KeyStore;
use warrant_delegation::{
    encode_header, Chain, DelegationError, Timestamp, Token, VerifiedChain, VerifyPolicy,
};

/// 2026-03-24T12:00:00Z, the fixed "now" of every test.
pub const NOW_SECS: i64 = 1_774_353_600;

pub fn now() -> Timestamp {
    Timestamp::from_unix_secs(NOW_SECS)
}

pub fn at(offset_secs: i64) -> Timestamp {
    Timestamp::from_unix_secs(NOW_SECS + offset_secs)
}

/// A key derived from the agent's name, so every test agrees on it.
pub fn key(name: &str) -> SigningKey {
    SigningKey::from_bytes(&Sha256::digest(name.as_bytes()).into())
}

/// A store with the keys of `names`.
pub fn keys(names: &[&str]) -> KeyStore {
    let mut store = KeyStore::new();
    for name in names {
        store.insert(*name, key(name).verifying_key());
    }
    store
}

/// The usual cast: a human and three agents.
pub fn cast() -> KeyStore {
    keys(&["human", "agent-a", "agent-b", "agent-c", "test-agent", "agent-mid"])
}

/// One hop to build: defaults are scope `[target-agent]`, all tools,
/// issued now, valid for an hour, max_depth 3.
#[derive(Clone)]
pub struct Hop {
    pub delegator: &'static str,
    pub delegate: &'static str,
    pub scope: Vec<String>,
    pub tools: Vec<String>,
    pub issued: i64,
    pub expires: i64,
    pub max_depth: i64,
}

pub fn hop(delegator: &'static str, delegate: &'static str) -> Hop {
    Hop {
        delegator,
        delegate,
        scope: strings(&["target-agent"]),
        tools: vec![],
        issued: 0,
        expires: 3600,
        max_depth: 3,
    }
}

impl Hop {
    pub fn scope(mut self, scope: &[&str]) -> Hop {
        self.scope = strings(scope);
        self
    }
    pub fn tools(mut self, tools: &[&str]) -> Hop {
        self.tools = strings(tools);
        self
    }
    pub fn valid(mut self, issued: i64, expires: i64) -> Hop {
        self.issued = issued;
        self.expires = expires;
        self
    }
    pub fn max_depth(mut self, max_depth: i64) -> Hop {
        self.max_depth = max_depth;
        self
    }
}

pub fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Correctly linked and signed tokens for `hops`.
pub fn build(hops: &[Hop]) -> Vec<Token> {
    let mut tokens: Vec<Token> = Vec::new();
    for (depth, h) in hops.iter().enumerate() {
        let mut token = Token {
            delegator: h.delegator.into(),
            delegate: h.delegate.into(),
            scope: h.scope.clone(),
            issued_at: at(h.issued),
            expires_at: at(h.expires),
            signature: String::new(),
            token_id: String::new(),
            parent_token_id: tokens.last().map(|t| t.token_id.clone()).unwrap_or_default(),
            chain_depth: depth as i64,
            max_depth: h.max_depth,
            allowed_tools: h.tools.clone(),
        };
        resign(&mut token, &key(h.delegator));
        tokens.push(token);
    }
    tokens
}

/// Recomputes the token id and signs with `key` (after a tamper that should
/// get past the signature check).
pub fn resign(token: &mut Token, key: &SigningKey) {
    token.token_id = token.computed_token_id();
    token.signature = STANDARD.encode(key.sign(&token.signed_payload()).to_bytes());
}

pub fn header(tokens: &[Token]) -> String {
    encode_header(tokens)
}

/// Parses and verifies under the default policy for `target-agent` at `now`.
pub fn verify(tokens: &[Token]) -> Result<VerifiedChain, DelegationError> {
    verify_with(&header(tokens), &cast(), &VerifyPolicy::new(), "target-agent")
}

pub fn verify_with(
    header: &str,
    keys: &KeyStore,
    policy: &VerifyPolicy,
    recipient: &str,
) -> Result<VerifiedChain, DelegationError> {
    Chain::parse(header.as_bytes(), policy.limits())?.verify(keys, policy, recipient, now())
}

pub fn hours(h: u64) -> Duration {
    Duration::from_secs(h * 3600)
}
