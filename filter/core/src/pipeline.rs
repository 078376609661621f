//! One request, from head and body to a decision and its audit record.
//!
//! [`evaluate`] runs the steps in order and stops at the first refusal:
//! 1. read the body ([`crate::extract`]): unreadable JSON is 400;
//! 2. identify the sender ([`crate::identity`]): 400, 401 or 403;
//! 3. name the recipient: the envelope's `to`, else `recipient.name`, else
//!    `recipient.authorities[:authority]`, else `:authority`;
//! 4. scan the content with the rules and turn the verdict into a decision.
//!
//! Every path yields an [`Outcome`]: the decision, the local reply (when the
//! request is not forwarded) and exactly one [`AuditRecord`].

use sha2::{Digest, Sha256};
use warrant_rules::Finding;
use warrant_wire::AuditRecord;

use crate::config::Policy;
use crate::decision::{reply_body, Decision};
use crate::extract::{extract, BodyKind, ExtractError};
use crate::identity::{identify, SignatureState};
use crate::request::RequestHead;

/// The header set on a forwarded, flagged request.
pub const VERDICT_HEADER: &str = "x-oktsec-verdict";

/// What to do with a request, and the record of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The decision.
    pub decision: Decision,
    /// Why (for rejections) or a one-line summary.
    pub message: String,
    /// Findings behind the decision.
    pub findings: Vec<Finding>,
    /// Headers to set on the request before forwarding it.
    pub forward_headers: Vec<(&'static str, String)>,
    /// The audit record, complete but for `latency_micros`.
    pub record: AuditRecord,
}

impl Outcome {
    /// The JSON body of the local reply (also for the 503 the glue sends
    /// when the audit fails).
    pub fn reply_body(&self, decision: Decision) -> Vec<u8> {
        reply_body(decision, &self.record.message_id, &self.findings, &self.message)
    }
}

/// Decides on a request whose whole body has arrived.
pub fn evaluate(
    policy: &Policy,
    head: &RequestHead,
    body: &[u8],
    message_id: &str,
    now_unix_nanos: i64,
) -> Outcome {
    let mut record = base_record(policy, head, message_id);
    record.body_sha256 = hex::encode(Sha256::digest(body));
    let now_secs = now_unix_nanos.div_euclid(1_000_000_000);

    // 1. Read the body.
    let envelopes =
        policy.config.identity.sources.contains(&crate::config::IdentitySource::Envelope);
    let extracted = match extract(head, body, envelopes) {
        Ok(extracted) => extracted,
        Err(e) => {
            record.to = recipient(policy, head, None);
            return finish(record, Decision::InvalidRequest, reason(&e), Vec::new());
        }
    };
    let envelope = match &extracted.kind {
        BodyKind::Envelope(e) => Some(e.as_ref()),
        _ => None,
    };
    record.to = recipient(policy, head, envelope.map(|e| e.to.as_str()));

    // 2. Identify the sender.
    let sender = match identify(policy, head, envelope, now_secs) {
        Ok(sender) => sender,
        Err(refusal) => {
            record.from = refusal.sender.name;
            record.signature = refusal.sender.signature.as_str().into();
            record.key_fingerprint = refusal.sender.key_fingerprint;
            return finish(record, refusal.decision, refusal.reason, Vec::new());
        }
    };
    record.from = sender.name.clone();
    record.identity_source = sender.source.map_or("none", |s| s.as_str()).into();
    record.signature = sender.signature.as_str().into();
    record.key_fingerprint = sender.key_fingerprint;

    // 3. Scan and decide.
    let evaluation = policy.rules.evaluate(&extracted.content_parts(), &sender.name);
    let decision = Decision::from_verdict(evaluation.verdict);
    let message = match evaluation.findings.first() {
        Some(top) => format!("{} by rule {} ({})", decision.code(), top.rule_id, top.name),
        None => decision.code().to_string(),
    };
    if sender.signature != SignatureState::Verified {
        record.notes.push("sender not authenticated".into());
    }
    finish(record, decision, message, evaluation.findings)
}

/// The outcome for a request refused before its body was read (for example
/// a `content-length` over the limit, or a bodiless request that fails).
pub fn refuse_early(
    policy: &Policy,
    head: &RequestHead,
    message_id: &str,
    decision: Decision,
    message: String,
) -> Outcome {
    let mut record = base_record(policy, head, message_id);
    record.to = recipient(policy, head, None);
    finish(record, decision, message, Vec::new())
}

fn base_record(policy: &Policy, head: &RequestHead, message_id: &str) -> AuditRecord {
    AuditRecord {
        message_id: message_id.to_string(),
        received_at_unix_nanos: head.received_at_unix_nanos,
        method: head.method.clone(),
        authority: head.authority.clone(),
        path: head.path.clone(),
        node: policy.config.node.clone(),
        identity_source: "none".into(),
        signature: SignatureState::Unsigned.as_str().into(),
        ..Default::default()
    }
}

fn finish(
    mut record: AuditRecord,
    decision: Decision,
    message: String,
    findings: Vec<Finding>,
) -> Outcome {
    record.status = decision.status().into();
    record.decision = decision.code().into();
    record.http_status = decision.http_status().unwrap_or(0);
    if !decision.forwards() && findings.is_empty() {
        record.reason = message.clone();
    }
    record.findings = findings
        .iter()
        .map(|f| warrant_wire::Finding {
            rule_id: f.rule_id.clone(),
            name: f.name.clone(),
            severity: f.severity.as_str().into(),
            category: f.category.clone(),
            r#match: f.matched.clone(),
            line: f.line,
        })
        .collect();
    let forward_headers = match decision {
        Decision::ContentFlagged => vec![(VERDICT_HEADER, "flag".to_string())],
        _ => Vec::new(),
    };
    Outcome { decision, message, findings, forward_headers, record }
}

fn recipient(policy: &Policy, head: &RequestHead, envelope_to: Option<&str>) -> String {
    let config = &policy.config.recipient;
    envelope_to
        .map(str::to_string)
        .or_else(|| config.name.clone())
        .or_else(|| config.authorities.get(&head.authority).cloned())
        .unwrap_or_else(|| head.authority.clone())
}

fn reason(e: &ExtractError) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;
    use crate::envelope::format_rfc3339;

    const NOW: i64 = 1_790_000_000;

    fn alice() -> SigningKey {
        SigningKey::from_bytes(&[3; 32])
    }

    fn policy(extra: &str) -> Policy {
        policy_with(extra, "")
    }

    fn policy_with(extra: &str, identity: &str) -> Policy {
        let key = STANDARD.encode(alice().verifying_key().as_bytes());
        let json = format!(
            r#"{{"node":"n1","keys":{{"alice":"{key}"}},"identity":{{"spiffe":{{"spiffe://t/alice":"alice"}}{identity}}}{extra}}}"#
        );
        Policy::from_json(json.as_bytes()).unwrap()
    }

    fn json_head() -> RequestHead {
        RequestHead {
            method: "POST".into(),
            path: "/v1/message".into(),
            authority: "bob.local".into(),
            content_type: "application/json".into(),
            received_at_unix_nanos: NOW * 1_000_000_000,
            ..Default::default()
        }
    }

    fn envelope(content: &str, key: &SigningKey, from: &str) -> Vec<u8> {
        let ts = format_rfc3339(NOW);
        let payload = format!("{from}\nbob\n{content}\n{ts}");
        let sig = STANDARD.encode(key.sign(payload.as_bytes()).to_bytes());
        serde_json::json!({"from": from, "to": "bob", "content": content, "timestamp": ts, "signature": sig})
            .to_string()
            .into_bytes()
    }

    fn run(policy: &Policy, head: &RequestHead, body: &[u8]) -> Outcome {
        evaluate(policy, head, body, "m-1", NOW * 1_000_000_000)
    }

    #[test]
    fn signed_clean_envelope_is_allowed_and_recorded() {
        let out = run(&policy(""), &json_head(), &envelope("please summarize", &alice(), "alice"));
        assert_eq!(out.decision, Decision::Allow);
        let r = &out.record;
        assert_eq!((r.from.as_str(), r.to.as_str()), ("alice", "bob"));
        assert_eq!((r.status.as_str(), r.decision.as_str()), ("delivered", "allow"));
        assert_eq!(r.signature, "verified");
        assert_eq!(r.identity_source, "envelope");
        assert_eq!(r.key_fingerprint.len(), 64);
        assert_eq!(r.node, "n1");
        assert_eq!(r.body_sha256.len(), 64);
        assert_eq!(r.http_status, 0);
    }

    #[test]
    fn content_verdicts_map_to_decisions() {
        let p = policy("");
        let cases = [
            ("echo /cmd > /sys/fs/cgroup/memory/release_agent", Decision::ContentBlocked, 403),
            ("insmod /tmp/rootkit.ko", Decision::ContentQuarantined, 202),
            ("capsh --print | grep Current", Decision::ContentFlagged, 0),
        ];
        for (text, decision, status) in cases {
            let out = run(&p, &json_head(), &envelope(text, &alice(), "alice"));
            assert_eq!(out.decision, decision, "{text}");
            assert_eq!(out.record.http_status, status);
            assert!(!out.record.findings.is_empty());
        }
        let flagged = run(&p, &json_head(), &envelope("capsh --print", &alice(), "alice"));
        assert_eq!(flagged.forward_headers, vec![(VERDICT_HEADER, "flag".to_string())]);
    }

    #[test]
    fn identity_refusals() {
        let p = policy("");
        let mallory = SigningKey::from_bytes(&[9; 32]);
        let forged = run(&p, &json_head(), &envelope("hi", &mallory, "alice"));
        assert_eq!(forged.decision, Decision::IdentityRejected);
        assert_eq!(forged.record.signature, "invalid");
        assert_eq!(forged.record.from, "alice");

        let unknown = run(&p, &json_head(), &envelope("hi", &mallory, "mallory"));
        assert_eq!(unknown.decision, Decision::IdentityRejected);

        let unsigned = br#"{"from":"alice","to":"bob","content":"hi"}"#;
        assert_eq!(run(&p, &json_head(), unsigned).decision, Decision::SignatureRequired);

        let lax = policy_with("", r#","require_authenticated":false"#);
        let out = run(&lax, &json_head(), unsigned);
        assert_eq!(out.decision, Decision::Allow);
        assert_eq!(out.record.signature, "unsigned");
    }

    #[test]
    fn mtls_and_header_sources_identify_and_must_match_the_envelope() {
        let p = policy("");
        let mut head = json_head();
        head.peer_uri_sans = vec!["spiffe://t/alice".into()];
        let unsigned_as_alice = br#"{"from":"alice","to":"bob","content":"hi"}"#;
        let out = run(&p, &head, unsigned_as_alice);
        assert_eq!(out.decision, Decision::Allow);
        assert_eq!(out.record.identity_source, "mtls");

        let spoof = br#"{"from":"carol","to":"bob","content":"hi"}"#;
        assert_eq!(run(&p, &head, spoof).decision, Decision::IdentityRejected);

        let mut head = json_head();
        head.content_type = "text/plain".into();
        head.identity_header = Some("dave".into());
        let out = run(&p, &head, b"hello");
        assert_eq!((out.decision, out.record.from.as_str()), (Decision::Allow, "dave"));
        assert_eq!(out.record.identity_source, "header");
    }

    #[test]
    fn unreadable_bodies_are_400_with_a_record() {
        let out = run(&policy(""), &json_head(), b"{\"from\": \"alice\", ");
        assert_eq!(out.decision, Decision::InvalidRequest);
        assert_eq!(out.record.decision, "invalid_request");
        assert!(out.record.reason.contains("not valid JSON"), "{}", out.record.reason);
        let stale = {
            let ts = format_rfc3339(NOW - 3600);
            let payload = format!("alice\nbob\nhi\n{ts}");
            let sig = STANDARD.encode(alice().sign(payload.as_bytes()).to_bytes());
            serde_json::json!({"from":"alice","to":"bob","content":"hi","timestamp":ts,"signature":sig}).to_string()
        };
        assert_eq!(
            run(&policy(""), &json_head(), stale.as_bytes()).decision,
            Decision::InvalidRequest
        );
    }

    #[test]
    fn recipient_falls_back_through_config_to_authority() {
        let mut head = json_head();
        head.identity_header = Some("alice".into());
        head.content_type = String::new();
        assert_eq!(run(&policy(""), &head, b"").record.to, "bob.local");
        let named = policy(r#","recipient":{"authorities":{"bob.local":"bob"}}"#);
        assert_eq!(run(&named, &head, b"").record.to, "bob");
        let fixed = policy(r#","recipient":{"name":"agent-b","authorities":{"bob.local":"bob"}}"#);
        assert_eq!(run(&fixed, &head, b"").record.to, "agent-b");
    }
}
