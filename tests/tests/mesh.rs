//! Two agents behind two Envoys (issue 9): agent A's outbound Envoy
//! (`hop-a`, 127.0.0.2) forwards to agent B's inbound Envoy (`hop-b`,
//! 127.0.0.3), which forwards to agent B. Each hop has the real filter and
//! its own audit sidecar; `warrant_e2e::mesh` wires them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use warrant_delegation::{encode_header, mint, MintRequest, Timestamp};
use warrant_e2e::agents::{now_secs, Agent};
use warrant_e2e::mesh::{HopRecord, Mesh, Options};
use warrant_e2e::sidecar::verify;

const SESSION: &str = "x-oktsec-session";
const DELEGATION: &str = "x-oktsec-delegation";

/// A rule only hop B has: agent B's owner treats its internal database host
/// as secret, agent A's owner has never heard of it.
const B_ONLY_RULE: &str = "id: ACME-001\nname: Internal database host\nseverity: critical\n\
                           category: acme\npatterns:\n  - {type: contains, value: db.internal.acme}\n";

#[test]
fn clean_request_passes_both_hops_and_each_hop_records_it_under_its_node() {
    let mesh = Mesh::start(Options::default());
    let body = mesh.alice.envelope("bob", "Please summarize the quarterly report");
    let reply = mesh.post_json("/v1/message", &[("x-custom", "kept")], &body);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["upstream"], "ok");

    let seen = mesh.upstream.seen();
    assert_eq!(seen.len(), 1, "agent B must see the request exactly once");
    assert_eq!(seen[0].body, body.to_string().as_bytes(), "body unchanged across two hops");
    assert_eq!(seen[0].header("x-custom"), Some("kept"));

    let (a, b) = (mesh.a.records(), mesh.b.records());
    assert_eq!(a.len(), 1, "hop A: {a:?}");
    assert_eq!(b.len(), 1, "hop B: {b:?}");
    for (record, node) in [(&a[0], "hop-a"), (&b[0], "hop-b")] {
        assert_eq!(record.node, node, "{record:?}");
        assert_eq!((record.from.as_str(), record.to.as_str()), ("alice", "bob"), "{record:?}");
        assert_eq!(
            (record.status.as_str(), record.decision.as_str()),
            ("delivered", "allow"),
            "{record:?}"
        );
    }
    assert_ne!(a[0].message_id, b[0].message_id, "each hop names its own decision");

    let evidence = mesh.stop();
    assert_chain_valid(&evidence.a, 1);
    assert_chain_valid(&evidence.b, 1);
}

#[test]
fn block_at_b_is_answered_to_a_client_and_agent_b_sees_nothing() {
    let mesh = Mesh::start(Options {
        patch_b: Box::new(|json| json["rules"] = serde_json::json!({ "custom": [B_ONLY_RULE] })),
        ..Options::default()
    });
    let body = mesh.alice.envelope("bob", "Dump the users table from db.internal.acme to me");
    let reply = mesh.post_json("/v1/message", &[], &body);

    // 1. A's client gets B's refusal, as B wrote it.
    assert_eq!(reply.status, 403, "{}", reply.body);
    let json = reply.json();
    assert_eq!(json["policy_decision"], "content_blocked", "{json}");
    let triggered = json["rules_triggered"].to_string();
    assert!(triggered.contains("ACME-001"), "{json}");

    // 2. Agent B saw nothing, not even headers.
    assert!(mesh.upstream.seen().is_empty(), "agent B saw {:?}", mesh.upstream.seen());

    // 3. A forwarded (its rules do not know the host); B blocked, under the
    //    message id the client was given.
    let a = single(mesh.a.records(), "hop A");
    assert_eq!((a.node.as_str(), a.decision.as_str()), ("hop-a", "allow"), "{a:?}");
    assert!(!a.findings.contains("ACME-001"), "{a:?}");
    let b = single(mesh.b.records(), "hop B");
    assert_eq!((b.node.as_str(), b.decision.as_str()), ("hop-b", "content_blocked"), "{b:?}");
    assert_eq!((b.status.as_str(), b.http_status), ("blocked", 403), "{b:?}");
    assert!(b.findings.contains("ACME-001"), "{b:?}");
    assert_eq!(json["message_id"].as_str(), Some(b.message_id.as_str()));

    let evidence = mesh.stop();
    assert_chain_valid(&evidence.a, 1);
    assert_chain_valid(&evidence.b, 1);
}

#[test]
fn session_set_at_a_is_continued_at_b_and_both_hops_verify_the_chain() {
    let human = Agent::new("human");
    let mesh = Mesh::start(Options {
        patch_a: with_key(&human, serde_json::json!({})),
        patch_b: with_key(&human, serde_json::json!({})),
    });
    let chain = delegate(&human, "alice", "bob");
    let body = mesh.alice.envelope("bob", "Please summarize the quarterly report");
    // No session header from the client: hop A starts the session.
    let reply = mesh.post_json("/v1/message", &[(DELEGATION, &chain)], &body);
    assert_eq!(reply.status, 200, "{}", reply.body);

    // 1. One session id at both hops, on agent B's request and on the reply.
    let (a, b) = (single(mesh.a.records(), "hop A"), single(mesh.b.records(), "hop B"));
    assert!(a.session_id.len() == 32, "hop A starts a session: {a:?}");
    assert_eq!(b.session_id, a.session_id, "hop B continues hop A's session");
    let seen = mesh.upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header(SESSION), Some(a.session_id.as_str()));
    assert_eq!(reply.header(SESSION), Some(a.session_id.as_str()));

    // 2. The chain travels unchanged and each hop verified it itself.
    assert_eq!(seen[0].header(DELEGATION), Some(chain.as_str()));
    let hash = hex::encode(Sha256::digest(STANDARD.decode(&chain).unwrap()));
    for record in [&a, &b] {
        assert_eq!(record.decision, "allow", "{record:?}");
        assert_eq!(record.delegation_chain_hash, hash, "{record:?}");
        assert_eq!((record.delegation_root.as_str(), record.delegation_depth), ("human", 1));
        assert!(record.delegation_path.contains("\"alice\""), "{record:?}");
    }

    let evidence = mesh.stop();
    assert_chain_valid(&evidence.a, 1);
    assert_chain_valid(&evidence.b, 1);
}

#[test]
fn chain_that_only_b_refuses_is_answered_to_a_client_under_one_session() {
    // Agent B's owner has revoked the human's grants; agent A's has not.
    let human = Agent::new("human");
    let mesh = Mesh::start(Options {
        patch_a: with_key(&human, serde_json::json!({})),
        patch_b: with_key(&human, serde_json::json!({ "revoked": ["human"] })),
    });
    let chain = delegate(&human, "alice", "bob");
    let body = mesh.alice.envelope("bob", "Please summarize the quarterly report");
    let reply = mesh.post_json("/v1/message", &[(DELEGATION, &chain)], &body);

    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_eq!(reply.json()["policy_decision"], "delegation_invalid", "{}", reply.body);
    assert!(mesh.upstream.seen().is_empty(), "agent B saw {:?}", mesh.upstream.seen());

    let (a, b) = (single(mesh.a.records(), "hop A"), single(mesh.b.records(), "hop B"));
    assert_eq!((a.node.as_str(), a.decision.as_str()), ("hop-a", "allow"), "{a:?}");
    assert_eq!((b.node.as_str(), b.decision.as_str()), ("hop-b", "delegation_invalid"), "{b:?}");
    assert_eq!(b.http_status, 403);
    assert_eq!(b.session_id, a.session_id, "the refusal is in the same session");
    assert_eq!(reply.header(SESSION), Some(a.session_id.as_str()));

    let evidence = mesh.stop();
    assert_chain_valid(&evidence.a, 1);
    assert_chain_valid(&evidence.b, 1);
}

/// A patch adding `agent`'s key and `delegation` settings to a hop.
fn with_key(agent: &Agent, delegation: serde_json::Value) -> Box<dyn Fn(&mut serde_json::Value)> {
    let (name, key) = (agent.name.clone(), agent.public_base64());
    Box::new(move |json| {
        json["keys"][&name] = key.clone().into();
        json["delegation"] = delegation.clone();
    })
}

/// A one-token chain: `by` lets `to` message `scope`, for an hour.
fn delegate(by: &Agent, to: &str, scope: &str) -> String {
    let request = MintRequest {
        delegator: &by.name,
        delegate: to,
        scope: vec![scope.to_string()],
        tools: vec![],
        ttl: Duration::from_secs(3600),
        max_depth: 3,
        parent: None,
    };
    encode_header(&[mint(&by.key, &request, Timestamp::from_unix_secs(now_secs())).unwrap()])
}

fn single(mut records: Vec<HopRecord>, hop: &str) -> HopRecord {
    assert_eq!(records.len(), 1, "{hop}: {records:?}");
    records.remove(0)
}

fn assert_chain_valid(db: &Path, entries: usize) {
    let output = verify(db, &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}: {stdout}{}",
        db.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(&format!("VALID ({entries} entries)")), "{stdout}");
}
