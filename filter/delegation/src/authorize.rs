//! What a verified chain permits for one request.
//!
//! Verification ([`crate::Chain::verify`]) proves the grants hold; these
//! functions decide whether they cover the request at hand: the sender must
//! be the chain's final delegate ([`bind_sender`]), the chain may not be
//! longer than the sender's cap ([`check_depth`]), and an MCP `tools/call`
//! must name a tool of the effective tool set ([`tool_allowed`]).
//! [`authorize`] runs the first two in the order the decisions are made.

use crate::chain::VerifiedChain;
use crate::config::{DelegationConfig, DepthCap};
use crate::error::DelegationError;

/// The decision code for a `tools/call` whose tool is outside the chain's
/// effective tool set.
pub const SCOPE_VIOLATION_DECISION: &str = "delegation_scope_violation";

/// Checks that the authenticated `sender` is the chain's final delegate.
/// Without this a chain issued to one agent could be replayed by any other.
///
/// # Errors
/// [`DelegationError::SenderMismatch`] naming both.
pub fn bind_sender(chain: &VerifiedChain, sender: &str) -> Result<(), DelegationError> {
    if chain.delegate() == sender {
        return Ok(());
    }
    Err(DelegationError::SenderMismatch {
        delegate: chain.delegate().to_string(),
        sender: sender.to_string(),
    })
}

/// Checks the chain's token count against a cap.
///
/// # Errors
/// [`DelegationError::DepthExceeded`] (decision `delegation_depth_exceeded`).
pub fn check_depth(chain: &VerifiedChain, cap: DepthCap) -> Result<(), DelegationError> {
    match cap {
        DepthCap::Tokens(cap) if chain.depth() > cap => {
            Err(DelegationError::DepthExceeded { tokens: chain.depth(), cap })
        }
        _ => Ok(()),
    }
}

/// Whether the chain lets its delegate call `tool`: true when no hop
/// restricts tools, otherwise when the effective set names it exactly.
/// A `false` answer is decision [`SCOPE_VIOLATION_DECISION`].
pub fn tool_allowed(chain: &VerifiedChain, tool: &str) -> bool {
    chain.tools().is_none_or(|tools| tools.iter().any(|t| t == tool))
}

/// Binds the chain to `sender`, then applies the sender's depth cap from
/// `config`: the hardened (oktsec #171) order.
///
/// # Errors
/// [`DelegationError::SenderMismatch`] or [`DelegationError::DepthExceeded`].
pub fn authorize(
    chain: &VerifiedChain,
    sender: &str,
    config: &DelegationConfig,
) -> Result<(), DelegationError> {
    bind_sender(chain, sender)?;
    check_depth(chain, config.depth_cap(sender))
}
