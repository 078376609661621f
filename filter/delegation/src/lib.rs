//! Identity material and delegation chains for Warrant.
//!
//! An agent acting for a person or another agent carries the chain of
//! grants in the `X-Oktsec-Delegation` header, in oktsec v0.13's wire format.
//! This crate parses, verifies, caches and mints such chains. It is pure
//! logic: no clock (callers pass `now`), no I/O, no panics; it builds for
//! `wasm32-wasip1` (the Envoy filter) and natively (the sidecar CLI).
//!
//! Modules and main types:
//! - [`keys`]: Ed25519 keys in oktsec's formats, fingerprints, and the
//!   [`keys::KeyStore`] mapping agent names to public keys.
//! - [`token`]: one [`Token`], its JSON form, its signed payload and its id;
//!   [`encode_header`].
//! - [`chain`]: [`Chain::parse`] under [`Limits`], then [`Chain::verify`]
//!   under a [`VerifyPolicy`] gives a [`VerifiedChain`], the only proof that
//!   the checks ran. The chain hash is defined there.
//! - [`mod@authorize`]: what a verified chain permits for a request:
//!   [`bind_sender`], [`check_depth`], [`tool_allowed`], [`authorize()`].
//! - [`cache`]: [`ChainCache`], verified chains per VM until they expire.
//! - [`mod@mint`]: [`mint()`] a token from a [`MintRequest`], [`extend_header`].
//! - [`config`]: the filter config's `delegation` section,
//!   [`DelegationConfig`].
//! - [`error`]: [`DelegationError`], every refusal with its evidence and the
//!   decision code the client sees.
//! - [`time`]: [`Timestamp`] and RFC 3339 as Go reads and writes it.
//!
//! # Example
//! ```
//! use std::time::Duration;
//! use ed25519_dalek::SigningKey;
//! use warrant_delegation::keys::KeyStore;
//! use warrant_delegation::*;
//!
//! let human = SigningKey::from_bytes(&[1; 32]);
//! let mut keys = KeyStore::new();
//! keys.insert("human", human.verifying_key());
//! let now = Timestamp::from_unix_secs(1_774_353_600);
//!
//! let request = MintRequest {
//!     delegator: "human",
//!     delegate: "agent-a",
//!     scope: vec!["target-agent".into()],
//!     tools: vec![],
//!     ttl: Duration::from_secs(3600),
//!     max_depth: 3,
//!     parent: None,
//! };
//! let token = mint(&human, &request, now).unwrap();
//! let header = encode_header(&[token]);
//!
//! let policy = VerifyPolicy::new();
//! let chain = Chain::parse(header.as_bytes(), policy.limits()).unwrap();
//! let verified = chain.verify(&keys, &policy, "target-agent", now).unwrap();
//! assert_eq!((verified.root(), verified.delegate()), ("human", "agent-a"));
//! assert!(bind_sender(&verified, "agent-a").is_ok());
//! ```

pub mod authorize;
pub mod cache;
pub mod chain;
pub mod config;
pub mod error;
pub mod keys;
pub mod mint;
pub mod time;
pub mod token;

pub use authorize::{authorize, bind_sender, check_depth, tool_allowed, SCOPE_VIOLATION_DECISION};
pub use cache::{CacheStats, ChainCache};
pub use chain::{
    first_scope_escalation, format_path, intersect_tools, scope_allows, Chain, Limits,
    VerifiedChain, VerifyPolicy,
};
pub use config::{AgentDelegation, ConfigError, DelegationConfig, DepthCap};
pub use error::{DelegationError, ErrorKind, NameDefect};
pub use mint::{extend_header, mint, MintRequest};
pub use time::{TimeError, Timestamp};
pub use token::{encode_header, encode_json, Token};
