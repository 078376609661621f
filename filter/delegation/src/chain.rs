//! Delegation chains: parsing a header, verifying it, and what a verified
//! chain tells.
//!
//! - [`Chain`]: the tokens of one header, parsed under [`Limits`] but not
//!   verified. It can only be read or verified.
//! - [`VerifiedChain`]: what [`Chain::verify`] returns when every check holds.
//!   Its fields are private and nothing else builds one, so code that takes a
//!   `&VerifiedChain` knows the checks ran.
//! - [`VerifyPolicy`]: what verification depends on besides the keys: the
//!   revocation list, the allowed clock skew, the parse limits, and the
//!   config generation that [`crate::ChainCache`] keys on.
//!
//! # Header
//!
//! The header value is standard padded base64 of the JSON array of tokens
//! (see [`crate::token`]), root first: `tokens[0]` is granted by the root
//! authority and the last token names the delegate who sends the request.
//!
//! # Chain hash
//!
//! [`Chain::chain_hash`] is the lowercase hex SHA-256 of the exact decoded
//! header bytes (the JSON text). Because only canonical base64 is accepted,
//! the decoded bytes and the header are in one-to-one correspondence, so the
//! hash is stable and independent of any implementation's re-serialisation.
//! It differs from oktsec's `ChainHash`, which hashes Go's re-marshalled
//! token array (its key order, `RFC3339Nano` times and HTML escaping).
//!
//! # Scope and tools
//!
//! A scope lists recipients; `"*"` allows any recipient and an empty scope
//! allows none ([`scope_allows`]). Along a chain each scope must be a subset
//! of the previous one ([`first_scope_escalation`]): a parent with `"*"`
//! accepts any child, a child with `"*"` under a parent without it escalates,
//! and an empty child is a subset. The effective tool set is the
//! intersection of the non-empty `allowed_tools` lists ([`intersect_tools`]);
//! `None` means "all tools". Unlike oktsec, once some hop restricts the tools
//! the set stays restricted: disjoint lists give the empty set (no tools),
//! not "all tools".

use std::collections::BTreeSet;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::de::{DeserializeSeed, Error as _, IgnoredAny, SeqAccess, Visitor};
use sha2::{Digest, Sha256};

use crate::config::DelegationConfig;
use crate::error::{DelegationError, EVIDENCE_CHARS};
use crate::keys::KeyStore;
use crate::time::Timestamp;
use crate::token::{Token, WireToken};

/// Bounds on the work spent on one header, checked before the work grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest header value accepted, in bytes (of the base64 text).
    /// Default 8192.
    pub max_header_bytes: usize,
    /// Most tokens accepted in one chain. Default 16.
    pub max_tokens: usize,
}

/// Default of [`Limits::max_header_bytes`].
pub const DEFAULT_MAX_HEADER_BYTES: usize = 8192;
/// Default of [`Limits::max_tokens`].
pub const DEFAULT_MAX_TOKENS: usize = 16;
/// Default of [`VerifyPolicy::future_skew_secs`]: how far in the future an
/// `issued_at` may lie.
pub const DEFAULT_FUTURE_SKEW_SECS: i64 = 30;

/// What verification depends on besides the keys.
///
/// Built with [`VerifyPolicy::new`] and the `with_*`/[`VerifyPolicy::revoke`]
/// methods, or from the filter config with [`VerifyPolicy::from_config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyPolicy {
    revoked: BTreeSet<String>,
    future_skew_secs: i64,
    limits: Limits,
    generation: u64,
}

/// The tokens of one header, parsed but not verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    tokens: Vec<Token>,
    hash: [u8; 32],
}

/// A chain whose every check held at verification time. Only
/// [`Chain::verify`] and [`Chain::verify_ignoring_recipient`] build one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedChain {
    tokens: Vec<Token>,
    token_ids: Vec<String>,
    path: Vec<String>,
    tools: Option<Vec<String>>,
    expires_at: Timestamp,
    chain_hash: String,
    recipient: Option<String>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_header_bytes: DEFAULT_MAX_HEADER_BYTES, max_tokens: DEFAULT_MAX_TOKENS }
    }
}

impl VerifyPolicy {
    /// Nothing revoked, 30 s of skew, default [`Limits`], generation 0.
    pub fn new() -> VerifyPolicy {
        VerifyPolicy {
            revoked: BTreeSet::new(),
            future_skew_secs: DEFAULT_FUTURE_SKEW_SECS,
            limits: Limits::default(),
            generation: 0,
        }
    }

    /// The policy of the `delegation` config section. `generation` must
    /// change whenever the config or the key store changes, so cached
    /// verifications made under the old ones are dropped.
    pub fn from_config(config: &DelegationConfig, generation: u64) -> VerifyPolicy {
        let policy = VerifyPolicy::new().with_limits(config.limits()).with_generation(generation);
        config.revoked.iter().fold(policy, |policy, entry| policy.revoke(entry))
    }

    /// Adds a revoked delegator: an agent name, or a key fingerprint (64 hex
    /// digits, matched case-insensitively). A chain with a hop signed by a
    /// revoked name or key is refused.
    pub fn revoke(mut self, name_or_fingerprint: &str) -> VerifyPolicy {
        let entry = if is_fingerprint(name_or_fingerprint) {
            name_or_fingerprint.to_ascii_lowercase()
        } else {
            name_or_fingerprint.to_string()
        };
        self.revoked.insert(entry);
        self
    }

    /// Sets how many seconds an `issued_at` may lie past `now` (default 30).
    pub fn with_future_skew_secs(mut self, secs: i64) -> VerifyPolicy {
        self.future_skew_secs = secs;
        self
    }

    /// Sets the parse limits (default [`Limits::default`]).
    pub fn with_limits(mut self, limits: Limits) -> VerifyPolicy {
        self.limits = limits;
        self
    }

    /// Sets the config generation (default 0).
    pub fn with_generation(mut self, generation: u64) -> VerifyPolicy {
        self.generation = generation;
        self
    }

    /// The parse limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The config generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The allowed skew for `issued_at`, in seconds.
    pub fn future_skew_secs(&self) -> i64 {
        self.future_skew_secs
    }

    /// Whether a delegator is revoked by name or by its key's fingerprint.
    pub fn is_revoked(&self, name: &str, fingerprint: &str) -> bool {
        self.revoked.contains(name) || self.revoked.contains(fingerprint)
    }
}

impl Chain {
    /// Parses a header value into tokens, without verifying them.
    ///
    /// The size cap is checked before decoding and the token cap while the
    /// JSON array is read, so an oversized header costs at most
    /// `max_header_bytes` of decoding.
    ///
    /// # Errors
    /// [`DelegationError::HeaderTooLarge`], [`DelegationError::InvalidBase64`]
    /// (URL-safe and unpadded forms included), [`DelegationError::InvalidJson`],
    /// [`DelegationError::TooManyTokens`], [`DelegationError::EmptyChain`],
    /// [`DelegationError::InvalidName`] and [`DelegationError::InvalidTime`].
    pub fn parse(header_value: &[u8], limits: &Limits) -> Result<Chain, DelegationError> {
        // 1. Size first: nothing is decoded from an oversized header.
        if header_value.len() > limits.max_header_bytes {
            return Err(DelegationError::HeaderTooLarge {
                bytes: header_value.len(),
                cap: limits.max_header_bytes,
            });
        }

        // 2. Strict base64: standard alphabet, canonical padding.
        let json = STANDARD
            .decode(header_value)
            .map_err(|source| DelegationError::InvalidBase64 { source })?;

        // 3. A JSON array of at most `max_tokens` token objects.
        let wire = parse_token_array(&json, limits.max_tokens)?;
        if wire.is_empty() {
            return Err(DelegationError::EmptyChain);
        }

        // 4. Names and times of every token.
        let tokens = wire
            .into_iter()
            .enumerate()
            .map(|(hop, wire)| Token::from_wire(wire, hop))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Chain { tokens, hash: Sha256::digest(&json).into() })
    }

    /// The tokens, root first. Never empty.
    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// The number of tokens (at least 1).
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Always false: parsing refuses an empty chain. Present for the
    /// `len`/`is_empty` convention.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Lowercase hex SHA-256 of the decoded header bytes (see the module
    /// doc, "Chain hash").
    pub fn chain_hash(&self) -> String {
        hex::encode(self.hash)
    }

    /// Verifies the chain for a request to `recipient` at time `now`.
    ///
    /// Checks, in this order (the first failure is returned):
    /// 1. `recipient` is in the last token's scope (or it holds `"*"`);
    /// 2. for each hop, with no key or signature work: `chain_depth` equals
    ///    the hop index and is at most the token's `max_depth`; a present
    ///    `token_id` equals the SHA-256 of the payload; the root has no
    ///    `parent_token_id`, and a later hop's names the previous token,
    ///    which must carry its `token_id`; the delegator is the previous
    ///    delegate; `max_depth` and scope do not grow; the token is not
    ///    expired and not issued more than the skew into the future;
    /// 3. for each hop: the delegator has a key, neither its name nor its
    ///    key fingerprint is revoked, and the signature verifies strictly
    ///    (`verify_strict`: no small-order keys, no malleable signatures)
    ///    over the 9-field payload. The legacy 5-field payload never
    ///    verifies.
    ///
    /// Structure is checked for all hops before any signature, so a
    /// malformed chain never costs a signature verification.
    ///
    /// # Errors
    /// The first failed check, as the matching [`DelegationError`] variant.
    pub fn verify(
        &self,
        keys: &KeyStore,
        policy: &VerifyPolicy,
        recipient: &str,
        now: Timestamp,
    ) -> Result<VerifiedChain, DelegationError> {
        self.verify_inner(keys, policy, Some(recipient), now)
    }

    /// Verifies the chain like [`Chain::verify`] but skips the recipient
    /// check (step 1). Meant for extending a chain with a new hop, where no
    /// request and so no recipient exists. **Do not use it to admit a
    /// request**: the result's [`VerifiedChain::recipient`] is `None`.
    ///
    /// # Errors
    /// As [`Chain::verify`], except [`DelegationError::NotInScope`].
    pub fn verify_ignoring_recipient(
        &self,
        keys: &KeyStore,
        policy: &VerifyPolicy,
        now: Timestamp,
    ) -> Result<VerifiedChain, DelegationError> {
        self.verify_inner(keys, policy, None, now)
    }

    fn verify_inner(
        &self,
        keys: &KeyStore,
        policy: &VerifyPolicy,
        recipient: Option<&str>,
        now: Timestamp,
    ) -> Result<VerifiedChain, DelegationError> {
        // 1. The recipient must be in the last token's scope. Cheap, so it
        //    runs before any signature (scopes only narrow, so the last
        //    scope is the tightest).
        let last = self.tokens.last().ok_or(DelegationError::EmptyChain)?;
        if let Some(recipient) = recipient {
            if !scope_allows(&last.scope, recipient) {
                return Err(DelegationError::NotInScope { recipient: recipient.to_string() });
            }
        }

        // 2. Structure and validity period of every hop, no crypto.
        let latest_issue = now.saturating_add_secs(policy.future_skew_secs);
        let mut payloads = Vec::with_capacity(self.tokens.len());
        let mut token_ids: Vec<String> = Vec::with_capacity(self.tokens.len());
        let mut tools: Option<Vec<String>> = None;
        let mut expires_at = last.expires_at;
        let mut previous: Option<&Token> = None;
        for (hop, token) in self.tokens.iter().enumerate() {
            // 2a. Position and depth bound.
            let index = i64::try_from(hop).unwrap_or(i64::MAX);
            if token.chain_depth != index {
                return Err(DelegationError::WrongChainDepth { hop, found: token.chain_depth });
            }
            if token.chain_depth > token.max_depth {
                return Err(DelegationError::MaxDepthExceeded {
                    hop,
                    chain_depth: token.chain_depth,
                    max_depth: token.max_depth,
                });
            }

            // 2b. The stored id, when present, must be the payload's hash.
            let payload = token.signed_payload();
            let computed = hex::encode(Sha256::digest(&payload));
            if !token.token_id.is_empty() && token.token_id != computed {
                return Err(DelegationError::TokenIdMismatch {
                    hop,
                    stored: token.token_id.clone(),
                    computed,
                });
            }

            // 2c. Links to the previous hop: id, names, depth bound, scope.
            match (previous, token_ids.last()) {
                (Some(parent), Some(parent_id)) => {
                    check_link(hop, token, parent, parent_id)?;
                }
                _ if !token.parent_token_id.is_empty() => {
                    return Err(DelegationError::BrokenLink {
                        hop,
                        expected: String::new(),
                        found: token.parent_token_id.clone(),
                    });
                }
                _ => {}
            }

            // 2d. Validity period. `now` equal to `expires_at` still passes,
            //     like Go's `now.After(expires_at)`.
            if now > token.expires_at {
                return Err(DelegationError::Expired { hop, expired_at: token.expires_at, now });
            }
            if token.issued_at > latest_issue {
                return Err(DelegationError::IssuedInFuture {
                    hop,
                    issued_at: token.issued_at,
                    now,
                    skew_secs: policy.future_skew_secs,
                });
            }

            tools = intersect_tools(tools, &token.allowed_tools);
            expires_at = expires_at.min(token.expires_at);
            payloads.push(payload);
            token_ids.push(computed);
            previous = Some(token);
        }

        // 3. Keys, revocation and signatures, hop by hop.
        for (hop, (token, payload)) in self.tokens.iter().zip(&payloads).enumerate() {
            let unknown =
                || DelegationError::UnknownDelegator { hop, delegator: token.delegator.clone() };
            let key = keys.key(&token.delegator).ok_or_else(unknown)?;
            let fingerprint = keys.fingerprint(&token.delegator).ok_or_else(unknown)?;
            if policy.is_revoked(&token.delegator, fingerprint) {
                return Err(DelegationError::Revoked {
                    hop,
                    delegator: token.delegator.clone(),
                    fingerprint: fingerprint.to_string(),
                });
            }
            let signature = token.decoded_signature(hop)?;
            if key.verify_strict(payload, &signature).is_err() {
                return Err(DelegationError::BadSignature {
                    hop,
                    delegator: token.delegator.clone(),
                });
            }
        }

        let path = format_path_names(&self.tokens);
        Ok(VerifiedChain {
            tokens: self.tokens.clone(),
            token_ids,
            path,
            tools,
            expires_at,
            chain_hash: self.chain_hash(),
            recipient: recipient.map(str::to_string),
        })
    }
}

impl VerifiedChain {
    /// The root authority: the first token's delegator.
    pub fn root(&self) -> &str {
        self.tokens.first().map_or("", |t| t.delegator.as_str())
    }

    /// The final delegate: the agent the chain authorises to act.
    pub fn delegate(&self) -> &str {
        self.tokens.last().map_or("", |t| t.delegate.as_str())
    }

    /// The last token's delegator: who handed authority to the delegate.
    pub fn parent(&self) -> &str {
        self.tokens.last().map_or("", |t| t.delegator.as_str())
    }

    /// The number of tokens ("depth" in oktsec's audit rows): 1 for a
    /// direct grant root → delegate.
    pub fn depth(&self) -> usize {
        self.tokens.len()
    }

    /// Lowercase hex SHA-256 of the decoded header (see the module doc).
    pub fn chain_hash(&self) -> &str {
        &self.chain_hash
    }

    /// Every name from the root to the delegate: `depth() + 1` entries.
    pub fn path(&self) -> &[String] {
        &self.path
    }

    /// The path joined by `" -> "`, e.g. `human -> agent-a -> agent-b`.
    pub fn path_text(&self) -> String {
        self.path.join(" -> ")
    }

    /// oktsec's audit summary: `root -> delegate` for up to 2 tokens,
    /// otherwise `root -> ... -> delegate (N hops)`.
    pub fn summary(&self) -> String {
        if self.depth() <= 2 {
            format!("{} -> {}", self.root(), self.delegate())
        } else {
            format!("{} -> ... -> {} ({} hops)", self.root(), self.delegate(), self.depth())
        }
    }

    /// The effective tool set: `None` means all tools; `Some(&[])` none.
    pub fn tools(&self) -> Option<&[String]> {
        self.tools.as_deref()
    }

    /// Bytes this chain holds on the heap: its strings' capacities and its
    /// lists' buffers (allocator overhead not counted). The chain cache
    /// counts it against its byte bound.
    pub fn heap_bytes(&self) -> usize {
        fn strings(list: &[String], capacity: usize) -> usize {
            capacity * size_of::<String>() + list.iter().map(String::capacity).sum::<usize>()
        }
        let tokens: usize = self
            .tokens
            .iter()
            .map(|t| {
                [&t.delegator, &t.delegate, &t.signature, &t.token_id, &t.parent_token_id]
                    .iter()
                    .map(|s| s.capacity())
                    .sum::<usize>()
                    + strings(&t.scope, t.scope.capacity())
                    + strings(&t.allowed_tools, t.allowed_tools.capacity())
            })
            .sum();
        self.tokens.capacity() * size_of::<Token>()
            + tokens
            + strings(&self.token_ids, self.token_ids.capacity())
            + strings(&self.path, self.path.capacity())
            + self.tools.as_ref().map_or(0, |tools| strings(tools, tools.capacity()))
            + self.chain_hash.capacity()
            + self.recipient.as_ref().map_or(0, String::capacity)
    }

    /// The earliest `expires_at` of the tokens: when the chain stops being
    /// valid.
    pub fn expires_at(&self) -> Timestamp {
        self.expires_at
    }

    /// The recipient checked against the scope; `None` when verified by
    /// [`Chain::verify_ignoring_recipient`].
    pub fn recipient(&self) -> Option<&str> {
        self.recipient.as_deref()
    }

    /// The last token's scope: the recipients the delegate may message.
    pub fn scope(&self) -> &[String] {
        self.tokens.last().map_or(&[], |t| t.scope.as_slice())
    }

    /// The verified tokens, root first.
    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// The id (payload hash) of each token, recomputed, root first.
    pub fn token_ids(&self) -> &[String] {
        &self.token_ids
    }

    /// A human-readable summary, one `label: value` per line.
    pub fn format_text(&self) -> String {
        let tools = match self.tools() {
            None => "all".to_string(),
            Some([]) => "none".to_string(),
            Some(tools) => tools.join(", "),
        };
        format!(
            "chain:      {} ({} tokens)\nchain hash: {}\nscope:      {}\ntools:      {tools}\n\
             expires at: {}\n",
            self.path_text(),
            self.depth(),
            self.chain_hash,
            self.scope().join(", "),
            self.expires_at,
        )
    }
}

impl fmt::Display for VerifiedChain {
    /// The path, e.g. `human -> agent-a`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path_text())
    }
}

impl Default for VerifyPolicy {
    fn default() -> VerifyPolicy {
        VerifyPolicy::new()
    }
}

/// Whether a scope lets its holder message `recipient`: an entry equals it
/// or is `"*"`. Exact, case-sensitive; an empty scope allows nothing.
pub fn scope_allows(scope: &[String], recipient: &str) -> bool {
    scope.iter().any(|entry| entry == "*" || entry == recipient)
}

/// The first entry of `child` that `parent` does not grant, if any. A parent
/// holding `"*"` grants everything; otherwise a child `"*"` is an
/// escalation, and every other entry must appear in the parent.
pub fn first_scope_escalation<'a>(child: &'a [String], parent: &[String]) -> Option<&'a String> {
    if parent.iter().any(|p| p == "*") {
        return None;
    }
    child.iter().find(|entry| !parent.contains(entry))
}

/// Narrows a running tool set by one hop's `allowed_tools`: an empty list
/// leaves it as is; otherwise the result holds the running set's entries
/// that the list also holds (all of the list when the set is `None`, "all
/// tools"). Entries keep the running set's order.
pub fn intersect_tools(running: Option<Vec<String>>, allowed: &[String]) -> Option<Vec<String>> {
    if allowed.is_empty() {
        return running;
    }
    Some(match running {
        None => allowed.to_vec(),
        Some(current) => current.into_iter().filter(|tool| allowed.contains(tool)).collect(),
    })
}

/// The path of names from the root to the final delegate, joined by
/// `" -> "`; empty for no tokens. It reads names as given and does not
/// check continuity (only [`Chain::verify`] does).
pub fn format_path(tokens: &[Token]) -> String {
    format_path_names(tokens).join(" -> ")
}

/// Checks hop `hop` against the previous token `parent` (whose recomputed
/// id is `parent_id`).
fn check_link(
    hop: usize,
    token: &Token,
    parent: &Token,
    parent_id: &str,
) -> Result<(), DelegationError> {
    // A token that is linked to must say its id. (oktsec compares against
    // the stored id and cuts it to 16 chars unchecked, which panics when it
    // is short; here an absent id is a refusal, and a present one already
    // equals the recomputed id.)
    if parent.token_id.is_empty() {
        return Err(DelegationError::MissingTokenId { hop: hop.saturating_sub(1) });
    }
    if token.parent_token_id != parent_id {
        return Err(DelegationError::BrokenLink {
            hop,
            expected: parent_id.to_string(),
            found: token.parent_token_id.clone(),
        });
    }
    if token.delegator != parent.delegate {
        return Err(DelegationError::Discontinuous {
            hop,
            expected: parent.delegate.clone(),
            found: token.delegator.clone(),
        });
    }
    if token.max_depth > parent.max_depth {
        return Err(DelegationError::MaxDepthGrown {
            hop,
            max_depth: token.max_depth,
            parent_max_depth: parent.max_depth,
        });
    }
    if let Some(entry) = first_scope_escalation(&token.scope, &parent.scope) {
        return Err(DelegationError::ScopeExceeded { hop, entry: entry.clone() });
    }
    Ok(())
}

fn format_path_names(tokens: &[Token]) -> Vec<String> {
    let root = tokens.first().map(|t| t.delegator.clone());
    root.into_iter().chain(tokens.iter().map(|t| t.delegate.clone())).collect()
}

fn is_fingerprint(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Reads the JSON array, refusing it as soon as it holds more than `cap`
/// tokens.
fn parse_token_array(json: &[u8], cap: usize) -> Result<Vec<WireToken>, DelegationError> {
    let overflow = std::cell::Cell::new(false);
    let mut reader = serde_json::Deserializer::from_slice(json);
    let result = TokenArray { cap, overflow: &overflow }
        .deserialize(&mut reader)
        .and_then(|tokens| reader.end().map(|()| tokens));
    result.map_err(|error| {
        if overflow.get() {
            DelegationError::TooManyTokens { cap }
        } else {
            json_error(&error)
        }
    })
}

fn json_error(error: &serde_json::Error) -> DelegationError {
    let full = error.to_string();
    // serde_json appends " at line L column C"; the fields carry those.
    let reason = match full.rfind(" at line ") {
        Some(at) if error.line() != 0 => full.get(..at).unwrap_or(&full),
        _ => full.as_str(),
    };
    DelegationError::InvalidJson {
        line: error.line(),
        column: error.column(),
        reason: shorten_quotes(reason),
    }
}

/// Keeps a parser message short and free of header contents: each quoted
/// string (serde quotes offending values Debug-style) is cut to
/// [`EVIDENCE_CHARS`] characters, control characters become spaces, and the
/// whole is cut to 120 characters.
fn shorten_quotes(message: &str) -> String {
    let mut out = String::new();
    let mut quoted: Option<usize> = None; // chars kept inside the current quote
    let mut escaped = false;
    for c in message.chars() {
        match quoted {
            Some(kept) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    quoted = None;
                    if kept > EVIDENCE_CHARS {
                        out.push_str("...");
                    }
                    out.push('"');
                    continue;
                }
                if kept < EVIDENCE_CHARS {
                    out.push(if c.is_control() { ' ' } else { c });
                }
                quoted = Some(kept + 1);
            }
            None => {
                if c == '"' {
                    quoted = Some(0);
                }
                out.push(if c.is_control() { ' ' } else { c });
            }
        }
    }
    out.chars().take(120).collect()
}

/// A serde seed that reads a JSON array of tokens and stops past `cap`.
struct TokenArray<'a> {
    cap: usize,
    overflow: &'a std::cell::Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for TokenArray<'_> {
    type Value = Vec<WireToken>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for TokenArray<'_> {
    type Value = Vec<WireToken>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of delegation tokens")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut tokens = Vec::new();
        loop {
            if tokens.len() >= self.cap {
                // One more element of any shape means the cap is exceeded;
                // it is skimmed, not built into a token.
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    self.overflow.set(true);
                    return Err(A::Error::custom("too many tokens"));
                }
                return Ok(tokens);
            }
            match seq.next_element::<WireToken>()? {
                Some(token) => tokens.push(token),
                None => return Ok(tokens),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_messages_keep_quoted_values_short() {
        let long = format!("invalid type: string \"{}\", expected i64", "A".repeat(88));
        assert_eq!(
            shorten_quotes(&long),
            "invalid type: string \"AAAAAAAAAAAAAAAA...\", expected i64"
        );
        assert_eq!(shorten_quotes(r#"unknown "a\"b" x"#), r#"unknown "a\"b" x"#);
        assert_eq!(shorten_quotes("a\nb"), "a b");
        assert_eq!(shorten_quotes(&"x".repeat(500)).len(), 120);
    }
}
