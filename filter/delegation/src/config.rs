//! The `delegation` section of the filter config.
//!
//! [`DelegationConfig`] is read from JSON (unknown keys are an error) and
//! checked with [`DelegationConfig::validate`]. From it come the parse
//! [`Limits`], the [`VerifyPolicy`](crate::chain::VerifyPolicy) (via
//! `VerifyPolicy::from_config`) and each sender's [`DepthCap`].
//!
//! # Example
//! ```json
//! {
//!   "header": "x-oktsec-delegation",
//!   "require_delegation": false,
//!   "max_header_bytes": 8192,
//!   "max_tokens": 16,
//!   "default_max_depth": 3,
//!   "agents": { "planner": { "max_depth": 1 }, "orchestrator": { "max_depth": -1 } },
//!   "revoked": ["old-bot", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"],
//!   "cache_entries": 1024,
//!   "cache_bytes": 4194304
//! }
//! ```
//! Every key is optional; an empty object gives the defaults.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::chain::{Limits, DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_TOKENS};

/// The `delegation` section of the filter config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DelegationConfig {
    /// Name of the request header carrying the chain, matched
    /// case-insensitively by Envoy (write it in lower case). Default
    /// `"x-oktsec-delegation"`.
    pub header: String,
    /// Whether a request without the header is refused (401
    /// `delegation_required`). An invalid header is refused either way.
    /// Default `false`.
    pub require_delegation: bool,
    /// Largest header value accepted, in bytes, checked before decoding.
    /// Default 8192.
    pub max_header_bytes: usize,
    /// Most tokens parsed from one header, whoever sends it. Default 16.
    pub max_tokens: usize,
    /// Most tokens a sender's chain may have unless `agents` says otherwise
    /// (403 `delegation_depth_exceeded` past it). Default 3.
    pub default_max_depth: usize,
    /// Per-agent overrides, by sender name. Default none.
    pub agents: BTreeMap<String, AgentDelegation>,
    /// Revoked delegators: agent names, or key fingerprints (64 hex digits,
    /// the SHA-256 of the raw public key). A chain with a hop signed by one
    /// of them is refused. Default none.
    pub revoked: Vec<String>,
    /// Verified chains cached per VM (0 disables the cache). Default 1024.
    pub cache_entries: usize,
    /// Bytes of verified chains cached per VM, each counted as its header,
    /// recipient and decoded tokens (see `cache::entry_bytes`); the oldest
    /// go first, and a chain larger than this is not cached. Default 4 MiB,
    /// which holds the default 1,024 entries for 3-hop chains with a 1.7 KB
    /// header (3.9 KiB each; a test checks it); larger chains fit fewer.
    pub cache_bytes: usize,
}

/// Per-agent delegation settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentDelegation {
    /// Most tokens a chain sent by this agent may have. Absent: the
    /// section's `default_max_depth`. `0`: this agent may not send under a
    /// chain at all. Negative: no per-agent cap (`max_tokens` still
    /// applies). oktsec treats 0 as "use the default"; Warrant does not,
    /// because absence already says that. Default absent.
    pub max_depth: Option<i64>,
}

/// How many tokens a sender's chain may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepthCap {
    /// At most this many tokens.
    Tokens(usize),
    /// No per-agent cap.
    Unlimited,
}

/// An invalid `delegation` config section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The offending key, e.g. `delegation.max_tokens`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Default of [`DelegationConfig::header`].
pub const DEFAULT_HEADER: &str = "x-oktsec-delegation";
/// Default of [`DelegationConfig::default_max_depth`].
pub const DEFAULT_MAX_DEPTH: usize = 3;
/// Default of [`DelegationConfig::cache_entries`].
pub const DEFAULT_CACHE_ENTRIES: usize = 1024;
/// Default of [`DelegationConfig::cache_bytes`].
pub const DEFAULT_CACHE_BYTES: usize = 4 << 20;

impl DelegationConfig {
    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad key: a header name that is empty
    /// or not a lower-case HTTP token, a zero `max_header_bytes` or
    /// `max_tokens`, or an empty `revoked` entry.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let header_ok = !self.header.is_empty()
            && self.header.bytes().all(|b| b.is_ascii_lowercase() || b"0123456789-_.".contains(&b));
        if !header_ok {
            return Err(ConfigError::new("header", "expected a lower-case HTTP header name"));
        }
        if self.max_header_bytes == 0 {
            return Err(ConfigError::new("max_header_bytes", "expected at least 1"));
        }
        if self.max_tokens == 0 {
            return Err(ConfigError::new("max_tokens", "expected at least 1"));
        }
        if self.revoked.iter().any(String::is_empty) {
            return Err(ConfigError::new("revoked", "expected no empty entries"));
        }
        Ok(())
    }

    /// The parse limits of this section.
    pub fn limits(&self) -> Limits {
        Limits { max_header_bytes: self.max_header_bytes, max_tokens: self.max_tokens }
    }

    /// The depth cap for chains sent by `sender` (see
    /// [`AgentDelegation::max_depth`]).
    pub fn depth_cap(&self, sender: &str) -> DepthCap {
        match self.agents.get(sender).and_then(|agent| agent.max_depth) {
            None => DepthCap::Tokens(self.default_max_depth),
            Some(n) if n < 0 => DepthCap::Unlimited,
            Some(n) => DepthCap::Tokens(usize::try_from(n).unwrap_or(usize::MAX)),
        }
    }
}

impl Default for DelegationConfig {
    fn default() -> DelegationConfig {
        DelegationConfig {
            header: DEFAULT_HEADER.to_string(),
            require_delegation: false,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_tokens: DEFAULT_MAX_TOKENS,
            default_max_depth: DEFAULT_MAX_DEPTH,
            agents: BTreeMap::new(),
            revoked: Vec::new(),
            cache_entries: DEFAULT_CACHE_ENTRIES,
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

impl ConfigError {
    fn new(field: &str, reason: &str) -> ConfigError {
        ConfigError { field: format!("delegation.{field}"), reason: reason.to_string() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<DelegationConfig, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn empty_section_gives_the_documented_defaults() {
        let config = parse("{}").unwrap();
        assert_eq!(config, DelegationConfig::default());
        assert_eq!(config.header, "x-oktsec-delegation");
        assert!(!config.require_delegation);
        assert_eq!((config.max_header_bytes, config.max_tokens), (8192, 16));
        assert_eq!((config.default_max_depth, config.cache_entries), (3, 1024));
        assert_eq!(config.cache_bytes, 4 * 1024 * 1024);
        assert_eq!(config.validate(), Ok(()));
        let bounded = parse(r#"{"cache_bytes": 65536}"#).unwrap();
        assert_eq!((bounded.cache_bytes, bounded.cache_entries), (65536, 1024));
        assert!(parse(r#"{"cache_bytes": -1}"#).is_err());
    }

    #[test]
    fn unknown_keys_are_refused_at_both_levels() {
        assert!(parse(r#"{"max_depth": 3}"#).is_err());
        assert!(parse(r#"{"agents": {"a": {"max_delegation_depth": 1}}}"#).is_err());
    }

    #[test]
    fn depth_cap_follows_agent_overrides() {
        let config = parse(
            r#"{"default_max_depth": 2,
                "agents": {"one": {"max_depth": 1}, "none": {"max_depth": 0},
                           "any": {"max_depth": -1}, "dflt": {}}}"#,
        )
        .unwrap();
        let cases = [
            ("one", DepthCap::Tokens(1)),
            ("none", DepthCap::Tokens(0)),
            ("any", DepthCap::Unlimited),
            ("dflt", DepthCap::Tokens(2)),
            ("stranger", DepthCap::Tokens(2)),
        ];
        for (sender, want) in cases {
            assert_eq!(config.depth_cap(sender), want, "{sender}");
        }
    }

    #[test]
    fn nonsense_values_are_named_by_validate() {
        let cases = [
            (r#"{"header": ""}"#, "delegation.header"),
            (r#"{"header": "X-Oktsec-Delegation"}"#, "delegation.header"),
            (r#"{"header": "x delegation"}"#, "delegation.header"),
            (r#"{"max_header_bytes": 0}"#, "delegation.max_header_bytes"),
            (r#"{"max_tokens": 0}"#, "delegation.max_tokens"),
            (r#"{"revoked": [""]}"#, "delegation.revoked"),
        ];
        for (json, field) in cases {
            let error = parse(json).unwrap().validate().unwrap_err();
            assert_eq!(error.field, field, "{json}");
            assert!(error.to_string().starts_with(field));
        }
    }
}
