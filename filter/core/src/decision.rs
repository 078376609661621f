//! The closed set of decisions, how each maps to HTTP, and the JSON body of
//! a local reply.
//!
//! | decision | status | HTTP | request |
//! | --- | --- | --- | --- |
//! | `allow` | `delivered` | upstream's | forwarded unchanged |
//! | `content_flagged` | `delivered` | upstream's | forwarded with `x-oktsec-verdict: flag` |
//! | `content_quarantined` | `quarantined` | 202 | held, not forwarded |
//! | `content_blocked` | `blocked` | 403 | not forwarded |
//! | `identity_rejected` | `rejected` | 403 | bad signature, unknown or revoked key, or a claimed sender that is not the authenticated one |
//! | `signature_required` | `rejected` | 401 | no source authenticated the sender |
//! | `invalid_request` | `rejected` | 400 | unreadable JSON, bad envelope, bad timestamp |
//! | `payload_too_large` | `rejected` | 413 | body over `max_body_bytes` |
//! | `unsupported_encoding` | `rejected` | 415 | a compressed (`content-encoding`) body, which cannot be scanned |
//! | `delegation_required` | `rejected` | 401 | no chain while `delegation.require_delegation` is set |
//! | `delegation_invalid` | `rejected` | 403 | a chain that does not verify or is not the sender's |
//! | `delegation_depth_exceeded` | `rejected` | 403 | more tokens than the sender's cap |
//! | `delegation_scope_violation` | `rejected` | 403 | an MCP tool outside the chain's tools |
//! | `agent_suspended` | `rejected` | 403 | the sender or the chain's root is suspended |
//! | `recipient_suspended` | `rejected` | 403 | the recipient is suspended |
//! | `acl_denied` | `rejected` | 403 | the sender (or chain root) may not message the recipient |
//! | `replay_detected` | `rejected` | 403 | a signed envelope already accepted within its timestamp window (same signature) |
//! | `replay_check_unavailable` | `error` | 503 | the replay table could not be read or written, or its bucket is full of live entries (raise `replay.capacity`) |
//! | `audit_unavailable` | `error` | 503 | the sidecar did not acknowledge the record in time |
//!
//! The chain can also hold `audit_gap` records (status `error`): no
//! request's decision, but the count of records an `async` filter dropped
//! (see [`crate::outbox::gap_record`]).
//!
//! The local reply body is JSON:
//! `{"status":"blocked","policy_decision":"content_blocked","message_id":"…","rules_triggered":[…],"message":"…"}`
//! where `rules_triggered` is always an array (possibly empty) of
//! `{rule_id,name,severity,category,match}`.

use serde_json::json;
use warrant_rules::{Finding, Verdict};

/// What the filter decided about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Decision {
    /// Forward unchanged.
    Allow,
    /// Forward, marked as flagged.
    ContentFlagged,
    /// Hold for review (202).
    ContentQuarantined,
    /// Refuse the content (403).
    ContentBlocked,
    /// The sender's signature or claimed identity is not acceptable (403).
    IdentityRejected,
    /// No authenticated sender (401).
    SignatureRequired,
    /// The request cannot be read (400).
    InvalidRequest,
    /// The body is over the limit (413).
    PayloadTooLarge,
    /// The body is compressed and so cannot be scanned (415).
    UnsupportedEncoding,
    /// A chain is required and missing (401).
    DelegationRequired,
    /// The chain does not verify or does not belong to the sender (403).
    DelegationInvalid,
    /// The chain has more tokens than the sender's cap (403).
    DelegationDepthExceeded,
    /// The MCP tool called is outside the chain's tools (403).
    DelegationScopeViolation,
    /// The sender or the chain's root is suspended (403).
    AgentSuspended,
    /// The recipient is suspended (403).
    RecipientSuspended,
    /// The ACL does not let the sender (or root) message the recipient (403).
    AclDenied,
    /// The signed envelope was accepted before, within its window (403).
    ReplayDetected,
    /// Whether the envelope is a replay cannot be established (503).
    ReplayCheckUnavailable,
    /// The audit sidecar did not take the record (503).
    AuditUnavailable,
}

impl Decision {
    /// Every decision, for metrics and documentation.
    pub const ALL: [Decision; 19] = [
        Decision::Allow,
        Decision::ContentFlagged,
        Decision::ContentQuarantined,
        Decision::ContentBlocked,
        Decision::IdentityRejected,
        Decision::SignatureRequired,
        Decision::InvalidRequest,
        Decision::PayloadTooLarge,
        Decision::UnsupportedEncoding,
        Decision::DelegationRequired,
        Decision::DelegationInvalid,
        Decision::DelegationDepthExceeded,
        Decision::DelegationScopeViolation,
        Decision::AgentSuspended,
        Decision::RecipientSuspended,
        Decision::AclDenied,
        Decision::ReplayDetected,
        Decision::ReplayCheckUnavailable,
        Decision::AuditUnavailable,
    ];

    /// The decision for a content verdict.
    pub fn from_verdict(verdict: Verdict) -> Decision {
        match verdict {
            Verdict::Clean => Decision::Allow,
            Verdict::Flag => Decision::ContentFlagged,
            Verdict::Quarantine => Decision::ContentQuarantined,
            Verdict::Block => Decision::ContentBlocked,
        }
    }

    /// The `policy_decision` code.
    pub fn code(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::ContentFlagged => "content_flagged",
            Decision::ContentQuarantined => "content_quarantined",
            Decision::ContentBlocked => "content_blocked",
            Decision::IdentityRejected => "identity_rejected",
            Decision::SignatureRequired => "signature_required",
            Decision::InvalidRequest => "invalid_request",
            Decision::PayloadTooLarge => "payload_too_large",
            Decision::UnsupportedEncoding => "unsupported_encoding",
            Decision::DelegationRequired => "delegation_required",
            Decision::DelegationInvalid => "delegation_invalid",
            Decision::DelegationDepthExceeded => "delegation_depth_exceeded",
            Decision::DelegationScopeViolation => "delegation_scope_violation",
            Decision::AgentSuspended => "agent_suspended",
            Decision::RecipientSuspended => "recipient_suspended",
            Decision::AclDenied => "acl_denied",
            Decision::ReplayDetected => "replay_detected",
            Decision::ReplayCheckUnavailable => "replay_check_unavailable",
            Decision::AuditUnavailable => "audit_unavailable",
        }
    }

    /// The record's `status`.
    pub fn status(self) -> &'static str {
        match self {
            Decision::Allow | Decision::ContentFlagged => "delivered",
            Decision::ContentQuarantined => "quarantined",
            Decision::ContentBlocked => "blocked",
            Decision::AuditUnavailable | Decision::ReplayCheckUnavailable => "error",
            _ => "rejected",
        }
    }

    /// The HTTP status of the local reply, or `None` when the request is
    /// forwarded.
    pub fn http_status(self) -> Option<u32> {
        match self {
            Decision::Allow | Decision::ContentFlagged => None,
            Decision::ContentQuarantined => Some(202),
            Decision::ContentBlocked
            | Decision::IdentityRejected
            | Decision::DelegationInvalid
            | Decision::DelegationDepthExceeded
            | Decision::DelegationScopeViolation
            | Decision::AgentSuspended
            | Decision::RecipientSuspended
            | Decision::AclDenied
            | Decision::ReplayDetected => Some(403),
            Decision::SignatureRequired | Decision::DelegationRequired => Some(401),
            Decision::InvalidRequest => Some(400),
            Decision::PayloadTooLarge => Some(413),
            Decision::UnsupportedEncoding => Some(415),
            Decision::AuditUnavailable | Decision::ReplayCheckUnavailable => Some(503),
        }
    }

    /// The decision for a delegation refusal code (see
    /// `DelegationError::decision`).
    pub fn from_delegation_code(code: &str) -> Decision {
        match code {
            "delegation_depth_exceeded" => Decision::DelegationDepthExceeded,
            "delegation_scope_violation" => Decision::DelegationScopeViolation,
            _ => Decision::DelegationInvalid,
        }
    }

    /// Whether the request goes on upstream.
    pub fn forwards(self) -> bool {
        self.http_status().is_none()
    }
}

/// The JSON body of a local reply (see the module doc).
pub fn reply_body(
    decision: Decision,
    message_id: &str,
    findings: &[Finding],
    message: &str,
) -> Vec<u8> {
    let rules: Vec<_> = findings
        .iter()
        .map(|f| {
            json!({
                "rule_id": f.rule_id,
                "name": f.name,
                "severity": f.severity.as_str(),
                "category": f.category,
                "match": f.matched,
            })
        })
        .collect();
    let body = json!({
        "status": decision.status(),
        "policy_decision": decision.code(),
        "message_id": message_id,
        "rules_triggered": rules,
        "message": message,
    });
    let mut bytes = body.to_string().into_bytes();
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_decision_has_a_consistent_mapping() {
        for decision in Decision::ALL {
            assert!(!decision.code().is_empty());
            assert_eq!(decision.forwards(), decision.status() == "delivered", "{decision:?}");
        }
        assert_eq!(Decision::ContentQuarantined.http_status(), Some(202));
        assert_eq!(Decision::SignatureRequired.http_status(), Some(401));
    }

    #[test]
    fn reply_always_has_a_rules_array() {
        let body = reply_body(Decision::IdentityRejected, "m-1", &[], "bad signature");
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["rules_triggered"], json!([]));
        assert_eq!(value["policy_decision"], "identity_rejected");
        assert_eq!(value["status"], "rejected");
        assert_eq!(value["message_id"], "m-1");
    }
}
