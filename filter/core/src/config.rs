//! The plugin configuration: the JSON that Envoy passes to `on_configure`
//! (a `google.protobuf.StringValue` in the Envoy YAML; Istio's `pluginConfig`
//! arrives the same way).
//!
//! Parsing is strict: unknown fields are refused, every error names the
//! field by its path (for example `identity.sources[1]`), and a
//! configuration that parses but makes no sense (an unknown key format, a
//! zero timeout) is refused too. [`Policy::from_json`] is the only way in;
//! the filter returns `false` from `on_configure` on any error, so Envoy's
//! `--mode validate` and xDS both refuse a bad configuration.
//!
//! [`PluginConfig`] is the raw document; [`Policy`] is the compiled form
//! (parsed keys, compiled rules) shared by every request of a VM.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use warrant_delegation::keys::{self, KeyStore};
use warrant_delegation::{DelegationConfig, VerifyPolicy};
use warrant_rules::{Engine, RulesConfig};
use warrant_session::{SessionConfig, SessionTracker};

use crate::facts::{Fact, FactSet};
use crate::replay::{ReplayConfig, ReplayGuard, CAPACITY_RANGE};

/// The JSON document, as written by the operator. Every field has a default
/// except where noted, so `{}` is a valid (if not very useful) configuration
/// that requires an authenticated sender and has no keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Name of this Envoy (this hop) in audit records. Default `""`.
    #[serde(default)]
    pub node: String,
    /// Where audit records go.
    #[serde(default)]
    pub audit: AuditConfig,
    /// How the sender is identified.
    #[serde(default)]
    pub identity: IdentityConfig,
    /// Agents' Ed25519 public keys by agent name: standard base64 of the raw
    /// 32 bytes, or oktsec's `OKTSEC ED25519 PUBLIC KEY` PEM block.
    /// Default: none.
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
    /// How the recipient is named when the request does not say.
    #[serde(default)]
    pub recipient: RecipientConfig,
    /// Largest request body the filter buffers and scans, in bytes. Larger
    /// requests are refused with 413. Default 1 MiB; at most 64 MiB. Keep it
    /// at or below the listener's `per_connection_buffer_limit_bytes`.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u32,
    /// Detection rules: overrides and additions to the built-in library.
    #[serde(default)]
    pub rules: RulesConfig,
    /// Delegation chains (`X-Oktsec-Delegation`): header name, whether a
    /// chain is required, size and depth caps, revoked delegators.
    #[serde(default)]
    pub delegation: DelegationConfig,
    /// Session tracking (`X-Oktsec-Session`): header, idle timeout, bound.
    #[serde(default)]
    pub sessions: SessionConfig,
    /// Replay detection for signed envelopes: on/off and table capacity.
    #[serde(default)]
    pub replay: ReplayConfig,
    /// Deepest nesting of arrays and objects accepted in a JSON body;
    /// deeper bodies are refused with 400. Default 32; 1 to 128.
    #[serde(default = "default_max_json_depth")]
    pub max_json_depth: u32,
    /// Per-agent authority: who may message whom, who is suspended. Keyed
    /// by agent name. With a delegation chain, the chain's root is the agent
    /// whose authority counts. Default: none (everyone may message anyone).
    #[serde(default)]
    pub agents: BTreeMap<String, AgentPolicy>,
    /// What an agent missing from `agents` may do when `agents` is not
    /// empty: `allow` (default) or `deny`.
    #[serde(default)]
    pub default_policy: DefaultPolicy,
    /// Which verified facts the filter sets as filter state for Envoy's
    /// RBAC and access logs (see [`crate::facts`]). Default: all of them.
    #[serde(default = "default_facts")]
    pub facts: Vec<Fact>,
}

fn default_facts() -> Vec<Fact> {
    Fact::ALL.to_vec()
}

/// One agent's authority.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentPolicy {
    /// Recipients this agent may message; `"*"` means any. Empty (the
    /// default) means any.
    #[serde(default)]
    pub can_message: Vec<String>,
    /// A suspended agent's requests are refused (`agent_suspended`), and
    /// so are requests to it (`recipient_suspended`). Default `false`.
    #[serde(default)]
    pub suspended: bool,
}

/// What unknown agents may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultPolicy {
    /// Unknown agents may message anyone.
    #[default]
    Allow,
    /// Unknown agents are refused (`acl_denied`).
    Deny,
}

/// Where and how audit records are sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The Envoy cluster (HTTP/2) of the audit sidecar's gRPC port.
    /// Default `warrant_audit`.
    #[serde(default = "default_audit_cluster")]
    pub cluster: String,
    /// How long a request waits for the sidecar's acknowledgement before it
    /// is answered 503 `audit_unavailable`. Default 1000 ms.
    #[serde(default = "default_audit_timeout_ms")]
    pub timeout_ms: u32,
    /// When a request goes on: after its record is acknowledged (`sync`,
    /// the default) or at once, with the record buffered and retransmitted
    /// until acknowledged (`async`).
    #[serde(default)]
    pub mode: AuditMode,
    /// `async` only: records each VM (Envoy worker) holds while the
    /// sidecar does not acknowledge them; past it records are dropped,
    /// counted and later reported by a gap record. Default 1024, at most
    /// 1048576.
    #[serde(default = "default_buffer_records")]
    pub buffer_records: u32,
}

/// When a request goes on relative to its audit record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditMode {
    /// Hold the request until the sidecar acknowledges its record; answer
    /// 503 `audit_unavailable` when it does not in `timeout_ms`.
    #[default]
    Sync,
    /// Decide and go on at once; deliver the record from a buffer.
    Async,
}

impl AuditMode {
    /// The name used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditMode::Sync => "sync",
            AuditMode::Async => "async",
        }
    }
}

/// Largest `audit.buffer_records` accepted.
pub const MAX_BUFFER_RECORDS: u32 = 1 << 20;

/// How the sender is identified and authenticated.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Sources tried in order; the first that authenticates a sender wins.
    /// Default `["envelope", "mtls", "header"]`.
    #[serde(default = "default_sources")]
    pub sources: Vec<IdentitySource>,
    /// Refuse requests whose sender no source authenticates, with 401
    /// `signature_required`. Default `true`.
    #[serde(default = "default_true")]
    pub require_authenticated: bool,
    /// The request header that carries the sender's name for the `header`
    /// source. It must be set by a filter earlier in the chain that has
    /// authenticated the caller (for example `jwt_authn`'s
    /// `claim_to_headers`), and that filter must overwrite any value the
    /// client sent. Default `x-warrant-agent`.
    #[serde(default = "default_identity_header")]
    pub header: String,
    /// mTLS peers: the peer certificate's URI SAN (a SPIFFE id) mapped to an
    /// agent name. A peer whose SAN is not listed is not identified by this
    /// source. Default: none.
    #[serde(default)]
    pub spiffe: BTreeMap<String, String>,
    /// Oldest acceptable signed-envelope `timestamp`, in seconds. Default 300.
    #[serde(default = "default_max_age")]
    pub envelope_max_age_secs: u32,
    /// Furthest a signed-envelope `timestamp` may be in the future, in
    /// seconds. Default 30.
    #[serde(default = "default_max_future")]
    pub envelope_max_future_secs: u32,
    /// Fingerprints (lowercase hex SHA-256 of the raw public key) of keys
    /// that no longer authenticate anyone. Default: none.
    #[serde(default)]
    pub revoked_keys: Vec<String>,
}

/// One way of identifying the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentitySource {
    /// The `from` of an oktsec message envelope, authenticated by its
    /// Ed25519 signature.
    Envelope,
    /// The mTLS peer certificate's URI SAN, through the `spiffe` map.
    Mtls,
    /// A header set by an earlier, authenticating Envoy filter.
    Header,
}

impl IdentitySource {
    /// The name used in records and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentitySource::Envelope => "envelope",
            IdentitySource::Mtls => "mtls",
            IdentitySource::Header => "header",
        }
    }
}

/// How the recipient is named when the envelope does not say.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientConfig {
    /// A fixed recipient for everything through this filter (typical for an
    /// agent's inbound sidecar). Default: none.
    #[serde(default)]
    pub name: Option<String>,
    /// Recipient by `:authority` (host, with or without port, exactly as
    /// sent). Checked after `name`; failing both, the `:authority` itself is
    /// the recipient. Default: none.
    #[serde(default)]
    pub authorities: BTreeMap<String, String>,
}

impl Default for AuditConfig {
    fn default() -> AuditConfig {
        AuditConfig {
            cluster: default_audit_cluster(),
            timeout_ms: default_audit_timeout_ms(),
            mode: AuditMode::Sync,
            buffer_records: default_buffer_records(),
        }
    }
}

impl Default for IdentityConfig {
    fn default() -> IdentityConfig {
        IdentityConfig {
            sources: default_sources(),
            require_authenticated: true,
            header: default_identity_header(),
            spiffe: BTreeMap::new(),
            envelope_max_age_secs: default_max_age(),
            envelope_max_future_secs: default_max_future(),
            revoked_keys: Vec::new(),
        }
    }
}

/// Largest `max_body_bytes` accepted: 64 MiB.
pub const MAX_BODY_LIMIT: u32 = 64 * 1024 * 1024;

/// Largest `max_json_depth` accepted (serde_json's own recursion limit).
pub const MAX_JSON_DEPTH_LIMIT: u32 = 128;

fn default_max_json_depth() -> u32 {
    32
}
fn default_max_body_bytes() -> u32 {
    1024 * 1024
}
fn default_audit_cluster() -> String {
    "warrant_audit".into()
}
fn default_audit_timeout_ms() -> u32 {
    1000
}
fn default_buffer_records() -> u32 {
    1024
}
fn default_sources() -> Vec<IdentitySource> {
    vec![IdentitySource::Envelope, IdentitySource::Mtls, IdentitySource::Header]
}
fn default_true() -> bool {
    true
}
fn default_identity_header() -> String {
    "x-warrant-agent".into()
}
fn default_max_age() -> u32 {
    300
}
fn default_max_future() -> u32 {
    30
}

/// A configuration error, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: String,
    message: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError { field: field.into(), message: message.into() }
    }

    /// The path of the field at fault, for example `identity.sources[1]`
    /// (`.` for the document itself).
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong with it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid plugin configuration: field `{}`: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The compiled configuration, shared by every request of a VM.
#[derive(Debug)]
pub struct Policy {
    /// The document it was compiled from.
    pub config: PluginConfig,
    /// Agents' public keys.
    pub keys: KeyStore,
    /// Compiled detection rules.
    pub rules: Engine,
    /// Delegation verification policy (limits, revocations).
    pub delegation: VerifyPolicy,
    /// Session tracking over shared data.
    pub sessions: SessionTracker,
    /// Replay detection over shared data (`None` when disabled).
    pub replay: Option<ReplayGuard>,
    /// The facts the filter sets (`facts`).
    pub facts: FactSet,
}

impl Policy {
    /// Parses, validates and compiles a configuration.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first field at fault.
    pub fn from_json(bytes: &[u8]) -> Result<Policy, ConfigError> {
        // 1. Parse strictly, keeping the path of a failing field.
        let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
        let config: PluginConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            // A syntax error has no field path ("?"): it is the document's.
            let path = match e.path().to_string() {
                p if p == "?" => ".".to_string(),
                p => p,
            };
            ConfigError::new(path, strip_position(&e.inner().to_string()))
        })?;

        // 2. Check what the types cannot say.
        validate(&config)?;

        // 3. Compile keys and rules.
        let mut store = KeyStore::new();
        for (name, text) in &config.keys {
            let key = keys::parse_public_key(text)
                .map_err(|e| ConfigError::new(format!("keys.{name}"), e.to_string()))?;
            store.insert(name.clone(), key);
        }
        let rules =
            Engine::new(&config.rules).map_err(|e| ConfigError::new("rules", e.to_string()))?;
        let delegation = VerifyPolicy::from_config(&config.delegation, 0);
        let sessions = SessionTracker::new(&config.sessions)
            .map_err(|e| ConfigError::new("sessions", e.to_string()))?;
        let replay = config.replay.enabled.then(|| ReplayGuard::new(config.replay.capacity));
        let facts = FactSet::of(&config.facts);
        Ok(Policy { config, keys: store, rules, delegation, sessions, replay, facts })
    }
}

fn validate(config: &PluginConfig) -> Result<(), ConfigError> {
    if config.audit.cluster.trim().is_empty() {
        return Err(ConfigError::new("audit.cluster", "must name an Envoy cluster"));
    }
    if config.audit.timeout_ms == 0 || config.audit.timeout_ms > 60_000 {
        return Err(ConfigError::new(
            "audit.timeout_ms",
            format!("expected 1..=60000, found {}", config.audit.timeout_ms),
        ));
    }
    let buffer = config.audit.buffer_records;
    if buffer == 0 || buffer > MAX_BUFFER_RECORDS {
        return Err(ConfigError::new(
            "audit.buffer_records",
            format!("expected 1..={MAX_BUFFER_RECORDS}, found {buffer}"),
        ));
    }
    if config.max_body_bytes == 0 || config.max_body_bytes > MAX_BODY_LIMIT {
        return Err(ConfigError::new(
            "max_body_bytes",
            format!("expected 1..={MAX_BODY_LIMIT}, found {}", config.max_body_bytes),
        ));
    }
    if config.max_json_depth == 0 || config.max_json_depth > MAX_JSON_DEPTH_LIMIT {
        return Err(ConfigError::new(
            "max_json_depth",
            format!("expected 1..={MAX_JSON_DEPTH_LIMIT}, found {}", config.max_json_depth),
        ));
    }
    if !CAPACITY_RANGE.contains(&config.replay.capacity) {
        return Err(ConfigError::new(
            "replay.capacity",
            format!(
                "expected {}..={}, found {}",
                CAPACITY_RANGE.start(),
                CAPACITY_RANGE.end(),
                config.replay.capacity
            ),
        ));
    }
    for (i, fact) in config.facts.iter().enumerate() {
        if config.facts[..i].contains(fact) {
            return Err(ConfigError::new(
                format!("facts[{i}]"),
                format!("`{}` is listed twice", fact.name()),
            ));
        }
    }
    let identity = &config.identity;
    if identity.sources.is_empty() {
        return Err(ConfigError::new("identity.sources", "must list at least one source"));
    }
    for (i, source) in identity.sources.iter().enumerate() {
        if identity.sources[..i].contains(source) {
            return Err(ConfigError::new(
                format!("identity.sources[{i}]"),
                format!("`{}` is listed twice", source.as_str()),
            ));
        }
    }
    if !is_header_name(&identity.header) {
        return Err(ConfigError::new(
            "identity.header",
            format!("expected a lowercase HTTP header name, found {:?}", identity.header),
        ));
    }
    for (san, name) in &identity.spiffe {
        if !san.starts_with("spiffe://") {
            return Err(ConfigError::new(
                format!("identity.spiffe.{san}"),
                "expected a URI SAN starting with spiffe://",
            ));
        }
        check_agent_name(&format!("identity.spiffe.{san}"), name)?;
    }
    if identity.envelope_max_age_secs == 0 {
        return Err(ConfigError::new("identity.envelope_max_age_secs", "must be at least 1"));
    }
    for (i, print) in identity.revoked_keys.iter().enumerate() {
        if print.len() != 64
            || !print.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(ConfigError::new(
                format!("identity.revoked_keys[{i}]"),
                "expected 64 lowercase hex characters (SHA-256 of the raw public key)",
            ));
        }
    }
    for name in config.keys.keys() {
        check_agent_name(&format!("keys.{name}"), name)?;
    }
    config.delegation.validate().map_err(|e| {
        ConfigError::new(
            format!("delegation.{}", e.field.trim_start_matches("delegation.")),
            e.reason,
        )
    })?;
    config.sessions.validate().map_err(|e| ConfigError::new("sessions", e.to_string()))?;
    for (name, agent) in &config.agents {
        check_agent_name(&format!("agents.{name}"), name)?;
        for (i, to) in agent.can_message.iter().enumerate() {
            if to != "*" {
                check_agent_name(&format!("agents.{name}.can_message[{i}]"), to)?;
            }
        }
    }
    if let Some(name) = &config.recipient.name {
        check_agent_name("recipient.name", name)?;
    }
    for (authority, name) in &config.recipient.authorities {
        check_agent_name(&format!("recipient.authorities.{authority}"), name)?;
    }
    Ok(())
}

/// Agent names appear in signed payloads joined by `\n` and `,`, so those
/// (and other control characters) would make them ambiguous.
fn check_agent_name(field: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > 256 || name.chars().any(|c| c == ',' || c.is_control()) {
        return Err(ConfigError::new(
            field,
            format!("expected an agent name of 1..=256 characters without ',' or control characters, found {name:?}"),
        ));
    }
    Ok(())
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// serde_json appends " at line L column C" to its messages; the field path
/// is more useful and the document is usually a one-line StringValue.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(json: &str) -> ConfigError {
        Policy::from_json(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn empty_document_gets_secure_defaults() {
        let policy = Policy::from_json(b"{}").unwrap();
        assert!(policy.config.identity.require_authenticated);
        assert_eq!(policy.config.audit.cluster, "warrant_audit");
        assert_eq!(policy.config.max_body_bytes, 1024 * 1024);
        assert_eq!(policy.config.identity.sources.len(), 3);
        assert_eq!(policy.config.audit.mode, AuditMode::Sync);
        assert_eq!(policy.config.audit.buffer_records, 1024);
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, &str, &str)] = &[
            ("unknown top-level field", r#"{"bogus": 1}"#, "bogus"),
            ("unknown nested field", r#"{"audit": {"clusterr": "x"}}"#, "audit.clusterr"),
            ("wrong type", r#"{"max_body_bytes": "big"}"#, "max_body_bytes"),
            (
                "unknown source",
                r#"{"identity": {"sources": ["envelope", "dns"]}}"#,
                "identity.sources[1]",
            ),
            (
                "duplicate source",
                r#"{"identity": {"sources": ["mtls", "mtls"]}}"#,
                "identity.sources[1]",
            ),
            ("zero timeout", r#"{"audit": {"timeout_ms": 0}}"#, "audit.timeout_ms"),
            ("zero buffer", r#"{"audit": {"buffer_records": 0}}"#, "audit.buffer_records"),
            ("unknown mode", r#"{"audit": {"mode": "later"}}"#, "audit.mode"),
            ("empty cluster", r#"{"audit": {"cluster": " "}}"#, "audit.cluster"),
            ("body limit too big", r#"{"max_body_bytes": 100000000}"#, "max_body_bytes"),
            ("bad key", r#"{"keys": {"alice": "AAAA"}}"#, "keys.alice"),
            ("bad header name", r#"{"identity": {"header": "X Agent"}}"#, "identity.header"),
            (
                "bad spiffe id",
                r#"{"identity": {"spiffe": {"dns://x": "a"}}}"#,
                "identity.spiffe.dns://x",
            ),
            ("comma in name", r#"{"recipient": {"name": "a,b"}}"#, "recipient.name"),
            (
                "bad revoked print",
                r#"{"identity": {"revoked_keys": ["abc"]}}"#,
                "identity.revoked_keys[0]",
            ),
            ("not json", "{", "."),
            ("bad delegation cap", r#"{"delegation": {"max_tokens": 0}}"#, "delegation.max_tokens"),
            (
                "unknown delegation key",
                r#"{"delegation": {"requires": true}}"#,
                "delegation.requires",
            ),
            ("bad session timeout", r#"{"sessions": {"idle_timeout_secs": 0}}"#, "sessions"),
            ("bad default policy", r#"{"default_policy": "maybe"}"#, "default_policy"),
            ("replay table too small", r#"{"replay": {"capacity": 1}}"#, "replay.capacity"),
            ("unknown replay key", r#"{"replay": {"ttl": 1}}"#, "replay.ttl"),
            ("json depth zero", r#"{"max_json_depth": 0}"#, "max_json_depth"),
            ("json depth too deep", r#"{"max_json_depth": 129}"#, "max_json_depth"),
            (
                "bad acl entry",
                r#"{"agents": {"a": {"can_message": ["x,y"]}}}"#,
                "agents.a.can_message[0]",
            ),
            ("unknown fact", r#"{"facts": ["sender", "root"]}"#, "facts[1]"),
            ("duplicate fact", r#"{"facts": ["sender", "session", "sender"]}"#, "facts[2]"),
        ];
        for (name, json, field) in cases {
            assert_eq!(error(json).field(), *field, "case {name}: {}", error(json));
        }
    }

    #[test]
    fn message_names_field_and_problem() {
        assert_eq!(
            error(r#"{"audit": {"timeout_ms": 0}}"#).to_string(),
            "invalid plugin configuration: field `audit.timeout_ms`: expected 1..=60000, found 0"
        );
        let unknown = error(r#"{"bogus": 1}"#).to_string();
        assert!(unknown.contains("unknown field `bogus`"), "{unknown}");
    }
}
