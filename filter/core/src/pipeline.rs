//! One request, from head and body to a decision and its audit record.
//!
//! [`evaluate`] runs the steps in order and stops at the first refusal:
//! 1. read the body ([`crate::extract`]): unreadable JSON is 400;
//! 2. name the recipient: the envelope's `to`, else `recipient.name`, else
//!    `recipient.authorities[:authority]`, else `:authority`;
//! 3. identify the sender ([`crate::identity`]): 400, 401 or 403;
//! 4. resolve the session (never refuses; see [`Env`]);
//! 5. verify and bind the delegation chain, when there is one: 401 or 403;
//! 6. check suspension and the ACL against the principal
//!    ([`crate::authority`]): 403;
//! 7. refuse a signed envelope seen before within its window
//!    ([`crate::replay`]): 403, or 503 when the table cannot say;
//! 8. scan the content with the rules and turn the verdict into a decision.
//!
//! Every path yields an [`Outcome`]: the decision, the headers to add, and
//! exactly one [`AuditRecord`].

use sha2::{Digest, Sha256};
use warrant_delegation::{authorize, tool_allowed, ChainCache, Timestamp, VerifiedChain};
use warrant_rules::Finding;
use warrant_session::{parse_explicit, Explicit, RandomSource, SessionId, SharedStore};
use warrant_wire::AuditRecord;

use crate::config::{IdentitySource, Policy};
use crate::decision::{reply_body, Decision};
use crate::extract::{extract_limited, BodyKind};
use crate::facts::Fact;
use crate::identity::{identify, SignatureState};
use crate::request::RequestHead;

/// The header set on a forwarded, flagged request.
pub const VERDICT_HEADER: &str = "x-oktsec-verdict";

/// What a decision needs from the VM besides the request: the host's shared
/// data (sessions), randomness (new session ids) and the VM's cache of
/// verified chains.
pub struct Env<'a> {
    /// Cross-worker shared data.
    pub store: &'a dyn SharedStore,
    /// A CSPRNG.
    pub random: &'a mut dyn RandomSource,
    /// Verified delegation chains of this VM.
    pub chains: &'a mut ChainCache,
    /// The host's clock in nanoseconds, any origin: only the difference of
    /// two readings is used, to time the scan ([`Outcome::scan`]).
    pub clock: fn() -> u64,
}

impl std::fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env").finish_non_exhaustive()
    }
}

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
    pub forward_headers: Vec<(String, String)>,
    /// Headers to set on the response (forwarded or local): the session.
    pub response_headers: Vec<(String, String)>,
    /// The audit record, complete but for `latency_micros`.
    pub record: AuditRecord,
    /// What the filter verified, for Envoy's own filters and access logs
    /// (see [`crate::facts`]), only those the configuration's `facts`
    /// lists: `sender` only when authenticated; the `delegation_*` facts
    /// only when the chain verified and is bound to the sender.
    pub facts: Vec<(Fact, String)>,
    /// What step 8 scanned and how long it took; zero when the request was
    /// refused before the scan.
    pub scan: ScanCost,
    /// What the request's delegation chain needed of step 5.
    pub chain: ChainCheck,
}

/// What a request's delegation chain needed: the filter counts its time on
/// each request by this, so Envoy's stats tell what a cached chain and a
/// verification cost against a request without a chain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ChainCheck {
    /// No chain header.
    #[default]
    None,
    /// A chain header on a request refused before step 5 looked at it
    /// (its body unreadable, its sender not authenticated, ...).
    Unchecked,
    /// Answered by the VM's cache of verified chains.
    Cached,
    /// Parsed and its signatures checked (not in the cache), whether or
    /// not it verified.
    Verified,
}

impl ChainCheck {
    /// Every value, in a fixed order.
    pub const ALL: [ChainCheck; 4] =
        [ChainCheck::None, ChainCheck::Unchecked, ChainCheck::Cached, ChainCheck::Verified];

    /// The value's name in metric names and labels.
    pub fn label(self) -> &'static str {
        match self {
            ChainCheck::None => "none",
            ChainCheck::Unchecked => "unchecked",
            ChainCheck::Cached => "cached",
            ChainCheck::Verified => "verified",
        }
    }

    /// What a request with `head` needed, from the chain cache's counters
    /// before and after its evaluation.
    fn of(
        head: &RequestHead,
        before: warrant_delegation::CacheStats,
        after: warrant_delegation::CacheStats,
    ) -> ChainCheck {
        if head.delegation_header.is_none() {
            ChainCheck::None
        } else if after.hits > before.hits {
            ChainCheck::Cached
        } else if after.misses > before.misses {
            ChainCheck::Verified
        } else {
            ChainCheck::Unchecked
        }
    }
}

/// The content a request's scan read and the time it took, by
/// [`Env::clock`]: the filter sums both into counters, so Envoy's own
/// stats tell the rule engine's throughput in its VMs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanCost {
    /// Bytes of content scanned (all parts, before normalisation).
    pub bytes: u64,
    /// Nanoseconds the rule engine's evaluation took.
    pub nanos: u64,
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
    env: &mut Env<'_>,
    head: &RequestHead,
    body: &[u8],
    message_id: &str,
    now_unix_nanos: i64,
) -> Outcome {
    let before = env.chains.stats();
    let mut outcome = decide(policy, env, head, body, message_id, now_unix_nanos);
    outcome.chain = ChainCheck::of(head, before, env.chains.stats());
    outcome
}

/// The steps of [`evaluate`].
fn decide(
    policy: &Policy,
    env: &mut Env<'_>,
    head: &RequestHead,
    body: &[u8],
    message_id: &str,
    now_unix_nanos: i64,
) -> Outcome {
    let mut record = base_record(policy, head, message_id);
    record.body_sha256 = hex::encode(Sha256::digest(body));
    let now_secs = now_unix_nanos.div_euclid(1_000_000_000);

    // 1. Read the body.
    let envelopes = policy.config.identity.sources.contains(&IdentitySource::Envelope);
    let depth = policy.config.max_json_depth;
    let extracted = match extract_limited(head, body, envelopes, depth) {
        Ok(extracted) => extracted,
        Err(e) => {
            record.to = recipient(policy, head, None);
            let session = session(policy, env, head, None, now_unix_nanos, &mut record);
            return finish(
                policy,
                record,
                session,
                Decision::InvalidRequest,
                e.to_string(),
                Vec::new(),
            );
        }
    };
    let envelope = match &extracted.kind {
        BodyKind::Envelope(e) => Some(e.as_ref()),
        _ => None,
    };

    // 2. The recipient.
    record.to = recipient(policy, head, envelope.map(|e| e.to.as_str()));

    // 3. The sender.
    let sender = match identify(policy, head, envelope, now_secs) {
        Ok(sender) => sender,
        Err(refusal) => {
            record.from = refusal.sender.name;
            record.signature = refusal.sender.signature.as_str().into();
            record.key_fingerprint = refusal.sender.key_fingerprint;
            let session = session(policy, env, head, None, now_unix_nanos, &mut record);
            return finish(policy, record, session, refusal.decision, refusal.reason, Vec::new());
        }
    };
    record.from = sender.name.clone();
    record.identity_source = sender.source.map_or("none", |s| s.as_str()).into();
    record.signature = sender.signature.as_str().into();
    record.key_fingerprint = sender.key_fingerprint.clone();
    let authenticated = sender.signature == SignatureState::Verified;
    if !authenticated {
        record.notes.push("sender not authenticated".into());
    }

    // 4. The session: tracked per authenticated sender only, so a claimed
    //    name cannot join or refresh another agent's session.
    let tracked = authenticated.then_some(sender.name.as_str());
    let session = session(policy, env, head, tracked, now_unix_nanos, &mut record);

    // 5. Delegation.
    let delegation = &policy.config.delegation;
    let mut root = None;
    let mut chain_facts = Vec::new();
    if let Some(header) = &head.delegation_header {
        if !authenticated {
            let why = "a delegation chain needs an authenticated sender".to_string();
            return finish(policy, record, session, Decision::SignatureRequired, why, Vec::new());
        }
        let now = Timestamp::from_unix_nanos(now_unix_nanos);
        let verified = env.chains.verify(header, &record.to, &policy.keys, &policy.delegation, now);
        let chain = match verified {
            Ok(chain) => chain,
            Err(e) => {
                let decision = Decision::from_delegation_code(e.decision());
                return finish(policy, record, session, decision, e.to_string(), Vec::new());
            }
        };
        record.delegation_chain_hash = chain.chain_hash().to_string();
        record.delegation_root = chain.root().to_string();
        record.delegation_parent = chain.parent().to_string();
        record.delegation_depth = u32::try_from(chain.depth()).unwrap_or(u32::MAX);
        record.delegation_path = chain.path().to_vec();
        if let Err(e) = authorize(&chain, &sender.name, delegation) {
            let decision = Decision::from_delegation_code(e.decision());
            return finish(policy, record, session, decision, e.to_string(), Vec::new());
        }
        // Every call of a batch counts: one tool outside the chain refuses
        // the whole request.
        if let Some(tool) = extracted.tools().into_iter().find(|t| !tool_allowed(&chain, t)) {
            let why = format!("tool {tool:?} is outside the delegated tools");
            let decision = Decision::DelegationScopeViolation;
            return finish(policy, record, session, decision, why, Vec::new());
        }
        root = Some(chain.root().to_string());
        if policy.facts.any_delegation() {
            chain_facts = Fact::ALL
                .into_iter()
                .filter(|fact| policy.facts.contains(*fact))
                .filter_map(|fact| Some((fact, chain_fact(&chain, fact)?)))
                .collect();
        }
    } else if delegation.require_delegation {
        let why = format!("a delegation chain is required (header {})", delegation.header);
        return finish(policy, record, session, Decision::DelegationRequired, why, Vec::new());
    }

    // 6. Authority.
    if let Err((decision, why)) =
        crate::authority::check(policy, &sender.name, root.as_deref(), &record.to)
    {
        return finish(policy, record, session, decision, why, Vec::new());
    }

    // 7. Replay: only an envelope whose signature verified (the `envelope`
    //    source authenticated the sender) is remembered. Checked after the
    //    refusals above, so an envelope refused for its chain or ACL is not
    //    used up; a replayed one would be refused the same way again.
    if let (Some(guard), Some(envelope), Some(IdentitySource::Envelope)) =
        (&policy.replay, envelope, sender.source)
    {
        if let Err((decision, why)) = check_replay(policy, guard, env, envelope, now_secs) {
            return finish(policy, record, session, decision, why, Vec::new());
        }
    }

    // 8. Scan and decide.
    let parts = extracted.content_parts();
    let bytes = parts.iter().map(|p| p.text.len() as u64).sum();
    let started = (env.clock)();
    let evaluation = policy.rules.evaluate(&parts, &sender.name);
    let scan = ScanCost { bytes, nanos: (env.clock)().saturating_sub(started) };
    let decision = Decision::from_verdict(evaluation.verdict);
    let message = match evaluation.findings.first() {
        Some(top) => format!("{} by rule {} ({})", decision.code(), top.rule_id, top.name),
        None => decision.code().to_string(),
    };
    let mut outcome = finish(policy, record, session, decision, message, evaluation.findings);
    outcome.facts.extend(chain_facts);
    outcome.scan = scan;
    outcome
}

/// The value of a `delegation_*` fact of a verified chain; `None` for the
/// other facts, and for `delegation_tools` when the chain limits no tool.
fn chain_fact(chain: &VerifiedChain, fact: Fact) -> Option<String> {
    Some(match fact {
        Fact::DelegationRoot => chain.root().to_string(),
        Fact::DelegationDelegate => chain.delegate().to_string(),
        Fact::DelegationDepth => chain.depth().to_string(),
        Fact::DelegationChainHash => chain.chain_hash().to_string(),
        Fact::DelegationPath => chain.path().join(","),
        Fact::DelegationTools => chain.tools()?.join(","),
        Fact::Decision | Fact::Sender | Fact::Session => return None,
    })
}

/// Observes a verified envelope in the replay table.
fn check_replay(
    policy: &Policy,
    guard: &crate::replay::ReplayGuard,
    env: &Env<'_>,
    envelope: &crate::envelope::Envelope,
    now_secs: i64,
) -> Result<(), (Decision, String)> {
    use crate::replay::Sighting;
    use base64::Engine as _;

    // Verified moments ago, so both parse; refuse rather than assume.
    let unavailable = |why: String| (Decision::ReplayCheckUnavailable, why);
    let raw = envelope
        .signature
        .as_deref()
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .ok_or_else(|| unavailable("verified envelope without a decodable signature".into()))?;
    let stamped = envelope
        .timestamp
        .as_deref()
        .and_then(crate::envelope::parse_rfc3339)
        .ok_or_else(|| unavailable("verified envelope without a timestamp".into()))?;
    let max_age = i64::from(policy.config.identity.envelope_max_age_secs);
    let expires = stamped.saturating_add(max_age).saturating_add(1);
    match guard.observe(env.store, &raw, expires, now_secs) {
        Ok(Sighting::First) => Ok(()),
        Ok(Sighting::Replayed) => Err((
            Decision::ReplayDetected,
            format!(
                "this signed envelope (timestamp {}) was already accepted; sign each message afresh",
                envelope.timestamp.as_deref().unwrap_or("")
            ),
        )),
        Err(e) => Err(unavailable(e.to_string())),
    }
}

/// The outcome for a request refused before its body was read (for example
/// a `content-length` over the limit).
pub fn refuse_early(
    policy: &Policy,
    env: &mut Env<'_>,
    head: &RequestHead,
    message_id: &str,
    decision: Decision,
    message: String,
) -> Outcome {
    let mut record = base_record(policy, head, message_id);
    record.to = recipient(policy, head, None);
    let session = session(policy, env, head, None, head.received_at_unix_nanos, &mut record);
    let mut outcome = finish(policy, record, session, decision, message, Vec::new());
    if head.delegation_header.is_some() {
        outcome.chain = ChainCheck::Unchecked;
    }
    outcome
}

/// The session of a request: a well-formed explicit header verbatim; else
/// the tracked session of `agent`; else (nobody authenticated, or the store
/// failed) a fresh id that is not tracked. A malformed header and a store
/// failure are noted in the record.
fn session(
    policy: &Policy,
    env: &mut Env<'_>,
    head: &RequestHead,
    agent: Option<&str>,
    now_unix_nanos: i64,
    record: &mut AuditRecord,
) -> String {
    if !policy.config.sessions.enabled {
        return String::new();
    }
    if let Some(value) = &head.session_header {
        match parse_explicit(value) {
            Explicit::Valid(id) => return id.to_string(),
            Explicit::Malformed(why) => {
                record.notes.push(format!("malformed session header replaced: {why}"));
            }
        }
    }
    if let Some(agent) = agent {
        let now_millis = now_unix_nanos.div_euclid(1_000_000);
        match policy.sessions.resolve(env.store, agent, now_millis, env.random) {
            Ok(resolved) => return resolved.id.to_hex(),
            Err(e) => record.notes.push(format!("session store unavailable: {e}")),
        }
    }
    match SessionId::generate(env.random) {
        Ok(id) => id.to_hex(),
        Err(e) => {
            record.notes.push(format!("no session id: {e}"));
            String::new()
        }
    }
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
    policy: &Policy,
    mut record: AuditRecord,
    session: String,
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
    let mut forward_headers = Vec::new();
    let mut response_headers = Vec::new();
    if decision == Decision::ContentFlagged {
        forward_headers.push((VERDICT_HEADER.to_string(), "flag".to_string()));
    }
    if !session.is_empty() {
        let name = policy.config.sessions.header.clone();
        forward_headers.push((name.clone(), session.clone()));
        response_headers.push((name, session.clone()));
    }
    let wanted = policy.facts;
    let mut facts = Vec::new();
    if wanted.contains(Fact::Decision) {
        facts.push((Fact::Decision, decision.code().to_string()));
    }
    if wanted.contains(Fact::Sender) && record.signature == SignatureState::Verified.as_str() {
        facts.push((Fact::Sender, record.from.clone()));
    }
    if wanted.contains(Fact::Session) && !session.is_empty() {
        facts.push((Fact::Session, session.clone()));
    }
    record.session_id = session;
    let (scan, chain) = (ScanCost::default(), ChainCheck::None);
    Outcome {
        decision,
        message,
        findings,
        forward_headers,
        response_headers,
        record,
        facts,
        scan,
        chain,
    }
}

fn recipient(policy: &Policy, head: &RequestHead, envelope_to: Option<&str>) -> String {
    let config = &policy.config.recipient;
    envelope_to
        .map(str::to_string)
        .or_else(|| config.name.clone())
        .or_else(|| config.authorities.get(&head.authority).cloned())
        .unwrap_or_else(|| head.authority.clone())
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use ed25519_dalek::{Signer, SigningKey};

    use std::time::Duration;

    use warrant_delegation::{encode_header, mint, MintRequest};
    use warrant_session::{MemoryStore, SeededRandom};

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
        run_in(&MemoryStore::new(), policy, head, body)
    }

    fn run_in(store: &MemoryStore, policy: &Policy, head: &RequestHead, body: &[u8]) -> Outcome {
        // A new seed per request, as a real CSPRNG would differ.
        static SEED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let mut random = SeededRandom::new(SEED.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let mut chains = ChainCache::new(16);
        let mut env = Env { store, random: &mut random, chains: &mut chains, clock: test_clock };
        evaluate(policy, &mut env, head, body, "m-1", NOW * 1_000_000_000)
    }

    /// A clock 1,000 ns later at every reading.
    fn test_clock() -> u64 {
        static NANOS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        NANOS.fetch_add(1000, std::sync::atomic::Ordering::Relaxed)
    }

    #[test]
    fn scan_cost_is_the_content_read_and_the_clock_between() {
        let text = "please summarize the quarterly report";
        let out = run(&policy(""), &json_head(), &envelope(text, &alice(), "alice"));
        assert_eq!(out.decision, Decision::Allow);
        // The clock is read twice around the scan and nowhere else.
        assert_eq!(out.scan, ScanCost { bytes: text.len() as u64, nanos: 1000 });
        // Refused before the scan: nothing scanned.
        let refused = run(&policy(""), &json_head(), b"{not json");
        assert_eq!(refused.scan, ScanCost::default());
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
        assert_eq!(flagged.forward_headers[0], (VERDICT_HEADER.to_string(), "flag".to_string()));
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

    fn human() -> SigningKey {
        SigningKey::from_bytes(&[5; 32])
    }

    fn delegating_policy(extra: &str) -> Policy {
        let alice = STANDARD.encode(alice().verifying_key().as_bytes());
        let human = STANDARD.encode(human().verifying_key().as_bytes());
        let json = format!(r#"{{"keys":{{"alice":"{alice}","human":"{human}"}}{extra}}}"#);
        Policy::from_json(json.as_bytes()).unwrap()
    }

    fn chain_to(delegate: &str, scope: &str, tools: &[&str]) -> String {
        let request = MintRequest {
            delegator: "human",
            delegate,
            scope: vec![scope.into()],
            tools: tools.iter().map(|t| t.to_string()).collect(),
            ttl: Duration::from_secs(3600),
            max_depth: 3,
            parent: None,
        };
        let token = mint(&human(), &request, Timestamp::from_unix_secs(NOW - 10)).unwrap();
        encode_header(&[token])
    }

    fn with_chain(header: &str) -> RequestHead {
        RequestHead { delegation_header: Some(header.as_bytes().to_vec()), ..json_head() }
    }

    #[test]
    fn valid_chain_is_verified_bound_and_recorded() {
        let p = delegating_policy("");
        let out = run(
            &p,
            &with_chain(&chain_to("alice", "bob", &[])),
            &envelope("hi", &alice(), "alice"),
        );
        assert_eq!(out.decision, Decision::Allow, "{}", out.message);
        let r = &out.record;
        assert_eq!((r.delegation_root.as_str(), r.delegation_parent.as_str()), ("human", "human"));
        assert_eq!(r.delegation_depth, 1);
        assert_eq!(r.delegation_path, vec!["human".to_string(), "alice".to_string()]);
        assert_eq!(r.delegation_chain_hash.len(), 64);
    }

    #[test]
    fn chain_check_says_what_the_chain_needed() {
        let p = delegating_policy("");
        let store = MemoryStore::new();
        let mut random = SeededRandom::new(7);
        let mut chains = ChainCache::new(16);
        let mut env =
            Env { store: &store, random: &mut random, chains: &mut chains, clock: test_clock };
        let at = NOW * 1_000_000_000;
        // A new envelope each time: a signed one is accepted once.
        let mut n = 0;
        let mut check = |head: &RequestHead, body: Option<&[u8]>| {
            n += 1;
            let signed = envelope(&format!("hi {n}"), &alice(), "alice");
            let body = body.unwrap_or(&signed);
            let out = evaluate(&p, &mut env, head, body, "m-1", at);
            (out.decision, out.chain)
        };
        let chain = with_chain(&chain_to("alice", "bob", &[]));
        assert_eq!(check(&json_head(), None), (Decision::Allow, ChainCheck::None));
        assert_eq!(check(&chain, None), (Decision::Allow, ChainCheck::Verified));
        assert_eq!(check(&chain, None), (Decision::Allow, ChainCheck::Cached));
        // A chain that does not verify is checked all the same.
        let garbage = with_chain("not base64!");
        assert_eq!(check(&garbage, None), (Decision::DelegationInvalid, ChainCheck::Verified));
        // Refused before step 5: the chain was not looked at.
        let unsigned = br#"{"from":"alice","to":"bob","content":"hi"}"#;
        assert_eq!(
            check(&chain, Some(unsigned)),
            (Decision::SignatureRequired, ChainCheck::Unchecked)
        );
        assert_eq!(
            check(&chain, Some(b"{not json")),
            (Decision::InvalidRequest, ChainCheck::Unchecked)
        );
        let early = |head: &RequestHead| {
            let mut chains = ChainCache::new(0);
            let mut random = SeededRandom::new(8);
            let mut env =
                Env { store: &store, random: &mut random, chains: &mut chains, clock: test_clock };
            refuse_early(&p, &mut env, head, "m-2", Decision::PayloadTooLarge, "big".into()).chain
        };
        assert_eq!(early(&chain), ChainCheck::Unchecked);
        assert_eq!(early(&json_head()), ChainCheck::None);
    }

    #[test]
    fn facts_are_exported_only_once_verified() {
        let p = delegating_policy("");
        let fact = |out: &Outcome, name: &str| {
            out.facts.iter().find(|(n, _)| n.name() == name).map(|(_, v)| v.clone())
        };
        let chain = with_chain(&chain_to("alice", "bob", &["search"]));
        let out = run(&p, &chain, &envelope("hi", &alice(), "alice"));
        assert_eq!(fact(&out, "decision").as_deref(), Some("allow"));
        assert_eq!(fact(&out, "sender").as_deref(), Some("alice"));
        assert_eq!(fact(&out, "delegation_root").as_deref(), Some("human"));
        assert_eq!(fact(&out, "delegation_delegate").as_deref(), Some("alice"));
        assert_eq!(fact(&out, "delegation_depth").as_deref(), Some("1"));
        assert_eq!(fact(&out, "delegation_path").as_deref(), Some("human,alice"));
        assert_eq!(fact(&out, "delegation_tools").as_deref(), Some("search"));
        assert_eq!(
            fact(&out, "delegation_chain_hash"),
            Some(out.record.delegation_chain_hash.clone())
        );
        assert_eq!(fact(&out, "session"), Some(out.record.session_id.clone()));

        // A chain that is not the sender's: refused, and no chain facts.
        let stolen = with_chain(&chain_to("carol", "bob", &[]));
        let out = run(&p, &stolen, &envelope("hi", &alice(), "alice"));
        assert_eq!(out.decision, Decision::DelegationInvalid, "{}", out.message);
        assert_eq!(fact(&out, "delegation_root"), None);
        // Nobody authenticated: no sender fact.
        let unsigned = br#"{"from":"alice","to":"bob","content":"hi"}"#;
        let out = run(&p, &json_head(), unsigned);
        assert_eq!(fact(&out, "sender"), None);
        assert_eq!(fact(&out, "decision").as_deref(), Some("signature_required"));
    }

    #[test]
    fn only_the_configured_facts_are_exported() {
        let names = |out: &Outcome| out.facts.iter().map(|(f, _)| f.name()).collect::<Vec<_>>();
        let chain = with_chain(&chain_to("alice", "bob", &["search"]));
        let body = envelope("hi", &alice(), "alice");
        let all = run(&delegating_policy(""), &chain, &body);
        assert_eq!(all.decision, Decision::Allow, "{}", all.message);
        assert_eq!(
            names(&all),
            [
                "decision",
                "sender",
                "session",
                "delegation_root",
                "delegation_delegate",
                "delegation_depth",
                "delegation_chain_hash",
                "delegation_path",
                "delegation_tools",
            ]
        );
        let some = delegating_policy(r#","facts":["delegation_path","sender"]"#);
        let out = run(&some, &chain, &body);
        assert_eq!(names(&out), ["sender", "delegation_path"]);
        assert_eq!(out.facts[1].1, "human,alice");
        let none = run(&delegating_policy(r#","facts":[]"#), &chain, &body);
        assert!(none.facts.is_empty());
        // The record does not depend on what is exported.
        assert_eq!(none.record.delegation_path, all.record.delegation_path);
        assert_eq!(none.record.delegation_root, "human");
    }

    #[test]
    fn delegation_refusals() {
        let p = delegating_policy("");
        let signed = envelope("hi", &alice(), "alice");
        let cases: Vec<(&str, RequestHead, Vec<u8>, Decision)> = vec![
            (
                "chain for someone else",
                with_chain(&chain_to("carol", "bob", &[])),
                signed.clone(),
                Decision::DelegationInvalid,
            ),
            (
                "recipient outside scope",
                with_chain(&chain_to("alice", "dave", &[])),
                signed.clone(),
                Decision::DelegationInvalid,
            ),
            (
                "garbage header",
                with_chain("not base64!"),
                signed.clone(),
                Decision::DelegationInvalid,
            ),
            (
                "chain on an unauthenticated request",
                with_chain(&chain_to("alice", "bob", &[])),
                br#"{"from":"alice","to":"bob","content":"hi"}"#.to_vec(),
                Decision::SignatureRequired,
            ),
        ];
        let lax = delegating_policy(r#","identity":{"require_authenticated":false}"#);
        for (name, head, body, want) in cases {
            let policy = if want == Decision::SignatureRequired { &lax } else { &p };
            let out = run(policy, &head, &body);
            assert_eq!(out.decision, want, "case {name}: {}", out.message);
            assert!(!out.record.reason.is_empty(), "case {name}");
        }
        let required = delegating_policy(r#","delegation":{"require_delegation":true}"#);
        assert_eq!(run(&required, &json_head(), &signed).decision, Decision::DelegationRequired);
        let capped = delegating_policy(r#","delegation":{"agents":{"alice":{"max_depth":0}}}"#);
        let out = run(&capped, &with_chain(&chain_to("alice", "bob", &[])), &signed);
        assert_eq!(out.decision, Decision::DelegationDepthExceeded, "{}", out.message);
    }

    #[test]
    fn mcp_tool_outside_the_chain_is_a_scope_violation() {
        let p = delegating_policy("");
        let call = |tool: &str| {
            serde_json::json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":tool,"arguments":{}}})
                .to_string()
                .into_bytes()
        };
        let mut head = with_chain(&chain_to("alice", "bob.local", &["read_file"]));
        head.identity_header = Some("alice".into());
        assert_eq!(run(&p, &head, &call("read_file")).decision, Decision::Allow);
        assert_eq!(
            run(&p, &head, &call("delete_file")).decision,
            Decision::DelegationScopeViolation
        );
    }

    #[test]
    fn every_call_of_a_batch_is_checked_against_the_chain() {
        let p = delegating_policy("");
        let mut head = with_chain(&chain_to("alice", "bob.local", &["read_file"]));
        head.identity_header = Some("alice".into());
        let call = |id: u32, tool: &str| serde_json::json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":{}}});
        let batch = |tools: &[&str]| {
            let calls: Vec<_> = tools.iter().zip(1..).map(|(t, id)| call(id, t)).collect();
            serde_json::Value::Array(calls).to_string().into_bytes()
        };
        assert_eq!(run(&p, &head, &batch(&["read_file", "read_file"])).decision, Decision::Allow);
        let out = run(&p, &head, &batch(&["read_file", "delete_file"]));
        assert_eq!(out.decision, Decision::DelegationScopeViolation, "{}", out.message);
        assert!(out.message.contains("delete_file"), "{}", out.message);
        let dup = br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"read_file","name":"delete_file"}}"#;
        assert_eq!(run(&p, &head, dup).decision, Decision::InvalidRequest);
    }

    #[test]
    fn authority_is_the_chain_root() {
        let p = delegating_policy(
            r#","default_policy":"deny","agents":{"human":{"can_message":["bob"]}}"#,
        );
        let signed = envelope("hi", &alice(), "alice");
        assert_eq!(run(&p, &json_head(), &signed).decision, Decision::AclDenied);
        let out = run(&p, &with_chain(&chain_to("alice", "bob", &[])), &signed);
        assert_eq!(out.decision, Decision::Allow, "{}", out.message);
    }

    #[test]
    fn the_same_signed_envelope_twice_is_a_replay() {
        let p = policy("");
        let store = MemoryStore::new();
        let body = envelope("hi", &alice(), "alice");
        assert_eq!(run_in(&store, &p, &json_head(), &body).decision, Decision::Allow);
        let again = run_in(&store, &p, &json_head(), &body);
        assert_eq!(again.decision, Decision::ReplayDetected, "{}", again.message);
        assert_eq!(again.record.http_status, 403);
        assert_eq!(again.record.from, "alice", "the replay is recorded under the sender");
        assert!(again.record.reason.contains("already accepted"), "{}", again.record.reason);
        // Another message of the same sender is not a replay.
        let other = envelope("hi again", &alice(), "alice");
        assert_eq!(run_in(&store, &p, &json_head(), &other).decision, Decision::Allow);
        // Off: no table, both pass.
        let off = policy(r#","replay":{"enabled":false}"#);
        let store = MemoryStore::new();
        assert_eq!(run_in(&store, &off, &json_head(), &body).decision, Decision::Allow);
        assert_eq!(run_in(&store, &off, &json_head(), &body).decision, Decision::Allow);
        assert!(
            store.keys().iter().all(|k| !k.starts_with("warrant.replay")),
            "disabled replay writes nothing"
        );
    }

    #[test]
    fn an_envelope_refused_before_the_replay_check_is_not_used_up() {
        let p = policy(r#","default_policy":"deny","agents":{"bob":{}}"#);
        let store = MemoryStore::new();
        let body = envelope("hi", &alice(), "alice");
        for _ in 0..2 {
            assert_eq!(run_in(&store, &p, &json_head(), &body).decision, Decision::AclDenied);
        }
    }

    #[test]
    fn a_full_replay_table_refuses_with_503() {
        let p = policy(r#","replay":{"capacity":16}"#);
        let store = MemoryStore::new();
        for n in 0..16 {
            let body = envelope(&format!("m {n}"), &alice(), "alice");
            assert_eq!(run_in(&store, &p, &json_head(), &body).decision, Decision::Allow);
        }
        let out = run_in(&store, &p, &json_head(), &envelope("one more", &alice(), "alice"));
        assert_eq!(out.decision, Decision::ReplayCheckUnavailable, "{}", out.message);
        assert_eq!(out.decision.http_status(), Some(503));
    }

    #[test]
    fn sessions_follow_the_authenticated_sender() {
        let p = policy("");
        let store = MemoryStore::new();
        // Distinct messages: the same signed envelope twice is a replay.
        let body = |n: u32| envelope(&format!("hi {n}"), &alice(), "alice");
        let first = run_in(&store, &p, &json_head(), &body(1));
        let second = run_in(&store, &p, &json_head(), &body(2));
        assert_eq!(first.record.session_id.len(), 32);
        assert_eq!(first.record.session_id, second.record.session_id);
        assert!(first
            .forward_headers
            .contains(&("x-oktsec-session".to_string(), first.record.session_id.clone())));
        assert_eq!(
            first.response_headers,
            vec![("x-oktsec-session".to_string(), first.record.session_id.clone())]
        );

        let explicit = RequestHead { session_header: Some(b"trace-42:a".to_vec()), ..json_head() };
        assert_eq!(run_in(&store, &p, &explicit, &body(3)).record.session_id, "trace-42:a");

        let malformed = RequestHead { session_header: Some(b"bad id!".to_vec()), ..json_head() };
        let out = run_in(&store, &p, &malformed, &body(4));
        assert_eq!(out.record.session_id, first.record.session_id);
        assert!(
            out.record.notes.iter().any(|n| n.starts_with("malformed session header")),
            "{:?}",
            out.record.notes
        );

        // A rejected, unauthenticated claim gets an untracked id.
        let unsigned = br#"{"from":"alice","to":"bob","content":"hi"}"#;
        let out = run_in(&store, &p, &json_head(), unsigned);
        assert_eq!(out.decision, Decision::SignatureRequired);
        assert_ne!(out.record.session_id, first.record.session_id);
    }

    /// Where the time of a request with a cached 3-hop chain goes, in the
    /// engine the filter runs in: run it in Node's V8 with
    /// `CARGO_TARGET_WASM32_WASIP1_RUNNER="$PWD/scripts/wasm-test-runner" cargo test
    /// --release --target wasm32-wasip1 -p warrant-core chain_path_cost -- --ignored
    /// --nocapture` (natively it runs too). It prints medians of interleaved
    /// samples and asserts nothing about time (a benchmark, not a test).
    #[test]
    #[ignore = "a benchmark: prints timings"]
    fn chain_path_cost() {
        use prost::Message as _;
        use std::time::Instant;
        let (a1, a2) = (SigningKey::from_bytes(&[6; 32]), SigningKey::from_bytes(&[7; 32]));
        let b64 = |k: &SigningKey| STANDARD.encode(k.verifying_key().as_bytes());
        let json = format!(
            r#"{{"keys":{{"alice":"{}","human":"{}","a1":"{}","a2":"{}"}}}}"#,
            b64(&alice()),
            b64(&human()),
            b64(&a1),
            b64(&a2)
        );
        let p = Policy::from_json(json.as_bytes()).unwrap();
        let now = Timestamp::from_unix_secs(NOW - 10);
        type Parent<'a> = Option<&'a warrant_delegation::VerifiedChain>;
        let hop = |key: &SigningKey, from: &str, to: &str, parent: Parent, at: Timestamp| {
            let request = MintRequest {
                delegator: from,
                delegate: to,
                scope: vec!["bob".into()],
                tools: vec![],
                ttl: Duration::from_secs(3600),
                max_depth: 3,
                parent,
            };
            mint(key, &request, at).unwrap()
        };
        let verify = |header: &str| {
            let chain = warrant_delegation::Chain::parse(header.as_bytes(), p.delegation.limits());
            chain.unwrap().verify(&p.keys, &p.delegation, "bob", now).unwrap()
        };
        let three_hops = |at: Timestamp| {
            let h1 = encode_header(&[hop(&human(), "human", "a1", None, at)]);
            let c1 = verify(&h1);
            let h2 = warrant_delegation::extend_header(&c1, &hop(&a1, "a1", "a2", Some(&c1), at));
            let c2 = verify(&h2);
            warrant_delegation::extend_header(&c2, &hop(&a2, "a2", "alice", Some(&c2), at))
        };
        let h3 = three_hops(now);
        let body = envelope(&"x".repeat(900), &alice(), "alice");
        let plain = json_head();
        let chained = with_chain(&h3);
        let store = MemoryStore::new();
        let mut random = SeededRandom::new(1);
        // Full, as in Envoy under varied traffic: the default 1024 entries,
        // the other 1023 being chains issued at other seconds.
        let capacity = warrant_delegation::config::DEFAULT_CACHE_ENTRIES;
        let mut chains = ChainCache::new(capacity);
        for i in 1..capacity {
            let header = three_hops(Timestamp::from_unix_secs(NOW - 10 - i as i64));
            chains.verify(header.as_bytes(), "bob", &p.keys, &p.delegation, now).unwrap();
        }
        let mut env =
            Env { store: &store, random: &mut random, chains: &mut chains, clock: test_clock };
        let at = NOW * 1_000_000_000;
        let out = evaluate(&p, &mut env, &chained, &body, "m-1", at);
        assert_eq!((out.decision, out.record.delegation_depth), (Decision::Allow, 3));
        let headers_plain: Vec<(String, String)> =
            (0..8).map(|i| (format!("x-header-{i}"), "v".repeat(20))).collect();
        let mut headers_chained = headers_plain.clone();
        headers_chained.push(("x-oktsec-delegation".into(), h3.clone()));
        let names = crate::request::HeaderNames {
            identity: &p.config.identity.header,
            delegation: &p.config.delegation.header,
            session: &p.config.sessions.header,
        };

        let n = 2000;
        let mut samples: Vec<[f64; 8]> = Vec::with_capacity(n);
        let us = |t: Instant| t.elapsed().as_secs_f64() * 1e6;
        for i in 0..n {
            let id = format!("m-{i}");
            let mut row = [0.0; 8];
            let t = Instant::now();
            let plain_out = evaluate(&p, &mut env, &plain, &body, &id, at);
            row[0] = us(t);
            let t = Instant::now();
            let chained_out = evaluate(&p, &mut env, &chained, &body, &id, at);
            row[1] = us(t);
            let t = Instant::now();
            let hit = env.chains.verify(h3.as_bytes(), "bob", &p.keys, &p.delegation, now);
            row[2] = us(t);
            assert!(hit.is_ok());
            let t = Instant::now();
            let bytes = plain_out.record.encode_to_vec();
            row[3] = us(t);
            let t = Instant::now();
            let chained_bytes = chained_out.record.encode_to_vec();
            row[4] = us(t);
            assert!(chained_bytes.len() > bytes.len());
            let iter = |h: &[(String, String)]| {
                RequestHead::from_headers(h.iter().map(|(n, v)| (n.as_str(), v.as_str())), &names)
            };
            let t = Instant::now();
            let _ = iter(&headers_plain);
            row[5] = us(t);
            let t = Instant::now();
            let _ = iter(&headers_chained);
            row[6] = us(t);
            let t = Instant::now();
            let _ = hex::encode(Sha256::digest(h3.as_bytes()));
            row[7] = us(t);
            samples.push(row);
        }
        let median = |k: usize| {
            let mut v: Vec<f64> = samples[n / 10..].iter().map(|r| r[k]).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let diff = {
            let mut v: Vec<f64> = samples[n / 10..].iter().map(|r| r[1] - r[0]).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!("chain_path_cost ({} header bytes, median of {} samples):", h3.len(), n - n / 10);
        println!("  evaluate, no chain          {:8.2} µs", median(0));
        println!("  evaluate, cached 3-hop      {:8.2} µs", median(1));
        println!("  difference (per pair)       {:8.2} µs", diff);
        println!("  ChainCache::verify (hit)    {:8.2} µs", median(2));
        println!("  record encode, no chain     {:8.2} µs", median(3));
        println!("  record encode, 3-hop chain  {:8.2} µs", median(4));
        println!("  RequestHead, 8 headers      {:8.2} µs", median(5));
        println!("  RequestHead, + chain header {:8.2} µs", median(6));
        println!("  SHA-256 + hex of the header {:8.2} µs", median(7));
    }
}
