//! Minting tokens and extending chains.
//!
//! [`mint`] signs a new token described by a [`MintRequest`]. Without a
//! parent it is a root grant (`chain_depth` 0); with a parent
//! [`VerifiedChain`] it is the next hop, and `chain_depth`,
//! `parent_token_id` and the narrowing rules come from the parent, so the
//! result verifies as part of the extended chain. [`extend_header`] then
//! gives the header of the parent's tokens plus the new one.
//!
//! Times are written as UTC `RFC3339Nano` (see [`crate::Timestamp`]); the
//! signed payload carries them at second precision.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey};

use crate::chain::{first_scope_escalation, VerifiedChain};
use crate::error::DelegationError;
use crate::time::TimeError;
use crate::time::Timestamp;
use crate::token::{check_name, encode_header, Token};

/// What to grant in a new token.
#[derive(Debug, Clone)]
pub struct MintRequest<'a> {
    /// Who grants; the signing key must be theirs. With a parent it must be
    /// the parent's final delegate.
    pub delegator: &'a str,
    /// Who receives the grant.
    pub delegate: &'a str,
    /// Recipients the delegate may message (`"*"` = any). With a parent it
    /// must be a subset of the parent's scope.
    pub scope: Vec<String>,
    /// Tools the delegate may use; empty = all (still narrowed by the
    /// parent's tools at verification).
    pub tools: Vec<String>,
    /// How long the grant lasts from `now`. (The chain as a whole expires
    /// at its earliest token.)
    pub ttl: Duration,
    /// The largest `chain_depth` the token accepts (oktsec's default is 3).
    /// With a parent it may not exceed the parent's last `max_depth`.
    pub max_depth: i64,
    /// The chain this token extends, verified; `None` for a root grant.
    pub parent: Option<&'a VerifiedChain>,
}

/// Default token lifetime of the CLI (oktsec's `--ttl 4h`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(4 * 3600);
/// Default `max_depth` of a minted token (oktsec's `--max-depth 3`).
pub const DEFAULT_TOKEN_MAX_DEPTH: i64 = 3;

/// Mints a signed token, issued at `now`, with its `token_id` set.
///
/// # Errors
/// Refuses a request whose token would not verify:
/// [`DelegationError::InvalidName`] for a bad name,
/// [`DelegationError::InvalidTime`] when `now + ttl` overflows or leaves the
/// years 0000 to 9999, [`DelegationError::MaxDepthExceeded`] when the new
/// `chain_depth` exceeds `max_depth`, and with a parent
/// [`DelegationError::Discontinuous`], [`DelegationError::MaxDepthGrown`]
/// and [`DelegationError::ScopeExceeded`]. The `hop` of these errors is the
/// new token's index.
pub fn mint(
    key: &SigningKey,
    request: &MintRequest<'_>,
    now: Timestamp,
) -> Result<Token, DelegationError> {
    // 1. Position in the chain, from the parent.
    let hop = request.parent.map_or(0, VerifiedChain::depth);
    let chain_depth = i64::try_from(hop).unwrap_or(i64::MAX);
    let parent_token = request.parent.and_then(|p| p.tokens().last());
    let parent_token_id =
        request.parent.and_then(|p| p.token_ids().last()).cloned().unwrap_or_default();

    // 2. Names, and the times the token will carry.
    check_name(hop, "delegator", request.delegator)?;
    check_name(hop, "delegate", request.delegate)?;
    for entry in &request.scope {
        check_name(hop, "scope", entry)?;
    }
    for tool in &request.tools {
        check_name(hop, "allowed_tools", tool)?;
    }
    let bad_expiry =
        DelegationError::InvalidTime { hop, field: "expires_at", reason: TimeError::OutOfRange };
    let expires_at = now.checked_add(request.ttl).ok_or(bad_expiry.clone())?;
    if !now.in_go_year_range() {
        return Err(DelegationError::InvalidTime {
            hop,
            field: "issued_at",
            reason: TimeError::OutOfRange,
        });
    }
    if !expires_at.in_go_year_range() {
        return Err(bad_expiry);
    }

    // 3. The checks verification will make, so a bad request fails here.
    if chain_depth > request.max_depth {
        return Err(DelegationError::MaxDepthExceeded {
            hop,
            chain_depth,
            max_depth: request.max_depth,
        });
    }
    if let Some(parent) = parent_token {
        if parent.delegate != request.delegator {
            return Err(DelegationError::Discontinuous {
                hop,
                expected: parent.delegate.clone(),
                found: request.delegator.to_string(),
            });
        }
        if request.max_depth > parent.max_depth {
            return Err(DelegationError::MaxDepthGrown {
                hop,
                max_depth: request.max_depth,
                parent_max_depth: parent.max_depth,
            });
        }
        if let Some(entry) = first_scope_escalation(&request.scope, &parent.scope) {
            return Err(DelegationError::ScopeExceeded { hop, entry: entry.clone() });
        }
    }

    // 4. Build, hash and sign the 9-field payload.
    let mut token = Token {
        delegator: request.delegator.to_string(),
        delegate: request.delegate.to_string(),
        scope: request.scope.clone(),
        issued_at: now,
        expires_at,
        signature: String::new(),
        token_id: String::new(),
        parent_token_id,
        chain_depth,
        max_depth: request.max_depth,
        allowed_tools: request.tools.clone(),
    };
    let payload = token.signed_payload();
    token.token_id = token.computed_token_id();
    token.signature = STANDARD.encode(key.sign(&payload).to_bytes());
    Ok(token)
}

/// The header of `parent`'s tokens followed by `token` (made by [`mint`]
/// with that parent).
pub fn extend_header(parent: &VerifiedChain, token: &Token) -> String {
    let mut tokens = parent.tokens().to_vec();
    tokens.push(token.clone());
    encode_header(&tokens)
}
