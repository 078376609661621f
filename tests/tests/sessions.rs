//! Sessions end to end: one session per agent across Envoy's workers,
//! carried upstream and back, explicit headers kept or replaced.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use warrant_e2e::stack::{Options, Stack};

const HEADER: &str = "x-oktsec-session";

/// Downstream connections per worker, from Envoy's per-worker listener stats.
fn connections_per_worker(stack: &Stack) -> BTreeMap<String, u64> {
    let url = format!(
        "http://{}/stats?format=json&filter=worker_[0-9]+\\.downstream_cx_total",
        stack.envoy.admin
    );
    let body = ureq::get(&url).call().unwrap().into_string().unwrap();
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut per_worker = BTreeMap::new();
    for stat in json["stats"].as_array().into_iter().flatten() {
        let name = stat["name"].as_str().unwrap_or_default();
        if let Some(worker) = name.split('.').find(|part| part.starts_with("worker_")) {
            *per_worker.entry(worker.to_string()).or_default() +=
                stat["value"].as_u64().unwrap_or(0);
        }
    }
    per_worker
}

#[test]
fn one_agent_keeps_one_session_across_workers_and_connections() {
    let stack = Stack::start(Options { concurrency: 2, ..Options::default() });
    let mut ids = BTreeSet::new();
    for i in 0..24 {
        // Each call opens a new connection (no shared agent), so the kernel
        // spreads them over both workers.
        let reply = stack.post_json(
            "/v1/message",
            &[],
            &stack.alice.envelope("bob", &format!("status {i}")),
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
        ids.insert(reply.header(HEADER).expect("session header on the response").to_string());
    }
    let workers = connections_per_worker(&stack);
    assert!(
        workers.len() >= 2 && workers.values().all(|n| *n > 0),
        "both workers must serve: {workers:?}"
    );
    assert_eq!(ids.len(), 1, "one agent, one session: {ids:?}");
    let id = ids.into_iter().next().unwrap();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{id}"
    );
    for seen in stack.upstream.seen() {
        assert_eq!(seen.header(HEADER), Some(id.as_str()), "the upstream sees the session");
    }
    assert!(stack.records().iter().all(|r| r.session_id == id));
}

#[test]
fn different_agents_get_different_sessions() {
    let stack = Stack::start(Options::default());
    let a = stack.post_json("/v1/message", &[], &stack.alice.envelope("bob", "hello"));
    let b = stack.post_json("/v1/message", &[], &stack.bob.envelope("alice", "hello"));
    assert_ne!(a.header(HEADER), b.header(HEADER));
}

#[test]
fn explicit_session_is_kept_verbatim_and_a_malformed_one_is_replaced() {
    let stack = Stack::start(Options::default());
    let resolved = stack
        .post_json("/v1/message", &[], &stack.alice.envelope("bob", "first"))
        .header(HEADER)
        .unwrap()
        .to_string();

    let explicit = "upstream-trace:42.a_b";
    let reply = stack.post_json(
        "/v1/message",
        &[(HEADER, explicit)],
        &stack.alice.envelope("bob", "second"),
    );
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header(HEADER), Some(explicit));
    assert_eq!(stack.upstream.seen().last().unwrap().header(HEADER), Some(explicit));

    let malformed = "has spaces and/slashes";
    let reply = stack.post_json(
        "/v1/message",
        &[(HEADER, malformed)],
        &stack.alice.envelope("bob", "third"),
    );
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header(HEADER),
        Some(resolved.as_str()),
        "a malformed id is replaced by the resolved one"
    );
    assert_eq!(stack.upstream.seen().last().unwrap().header(HEADER), Some(resolved.as_str()));

    let records = stack.records();
    assert_eq!(records[1].session_id, explicit);
    assert_eq!(records[2].session_id, resolved);
    assert!(records[2].notes.contains("malformed session header replaced"), "{}", records[2].notes);
}

#[test]
fn local_replies_carry_the_session_too() {
    let stack = Stack::start(Options::default());
    let reply =
        stack.post_json("/v1/message", &[], &stack.alice.envelope("bob", "insmod /tmp/rootkit.ko"));
    assert_eq!(reply.status, 202);
    let id = reply.header(HEADER).expect("session on a local reply");
    assert_eq!(stack.records()[0].session_id, id);
}

#[test]
fn sessions_command_reports_each_agents_session_from_the_chain() {
    let stack = Stack::start(Options::default());
    let send = |agent: &warrant_e2e::agents::Agent, content: &str| {
        stack.post_json("/v1/message", &[], &agent.envelope("carol", content))
    };
    // alice: two clean messages and one the rules block; bob: one flagged.
    let alice_id =
        send(&stack.alice, "Please summarize the report").header(HEADER).unwrap().to_string();
    assert_eq!(send(&stack.alice, "And the appendix too").status, 200);
    let blocked = send(&stack.alice, "echo /cmd > /sys/fs/cgroup/memory/release_agent");
    assert_eq!(blocked.status, 403, "{}", blocked.body);
    let bob = send(&stack.bob, "capsh --print | grep Current");
    assert_eq!(bob.status, 200, "{}", bob.body);
    let bob_id = bob.header(HEADER).unwrap().to_string();
    let evidence = stack.stop();

    let output = std::process::Command::new(warrant_e2e::audit_bin())
        .args(["sessions", "--json", "--since", "1h", "--db"])
        .arg(evidence.db())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let session = |id: &str| {
        lines
            .iter()
            .find(|l| l["type"] == "session" && l["data"]["session_id"] == id)
            .unwrap_or_else(|| panic!("no session {id} in {lines:?}"))["data"]
            .clone()
    };
    let a = session(&alice_id);
    assert_eq!((a["records"].as_u64(), a["blocks"].as_u64()), (Some(3), Some(1)));
    assert_eq!(a["senders"], serde_json::json!(["alice"]));
    assert_eq!(a["risk_score"].as_u64(), Some(10));
    let b = session(&bob_id);
    assert_eq!((b["records"].as_u64(), b["flags"].as_u64()), (Some(1), Some(1)));
    assert_eq!(b["risk_score"].as_u64(), Some(1));
    assert_eq!(lines.last().unwrap()["data"]["sessions"].as_u64(), Some(2));
    // Newest first: bob's session has the latest record.
    assert_eq!(lines[0]["data"]["session_id"], bob_id.as_str());
}

#[test]
fn a_full_session_table_evicts_the_least_recently_seen_agent() {
    // One bucket of 8 slots: the smallest table, so that 40 agents overflow
    // it in a real Envoy as 100,000 overflow the default one (the native
    // test `hundred_thousand_agents_stay_within_the_configured_keys_and_bytes`
    // checks the byte bound at that scale).
    let stack = Stack::start(Options {
        patch: Box::new(|json| json["sessions"]["max_sessions"] = 8.into()),
        ..Options::default()
    });
    let call = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "search_docs", "arguments": {"query": "revenue"}}});
    let session_of = |agent: &str| {
        let reply = stack.post_json("/mcp", &[("x-warrant-agent", agent)], &call);
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.header(HEADER).unwrap().to_string()
    };
    let first: Vec<String> = (0..40).map(|i| session_of(&format!("agent-{i}"))).collect();
    assert_eq!(first.iter().collect::<BTreeSet<_>>().len(), 40, "40 agents, 40 sessions");
    // The 8 most recent agents are still tracked: same session again.
    for (i, id) in first.iter().enumerate().skip(32) {
        assert_eq!(&session_of(&format!("agent-{i}")), id, "agent-{i} was evicted");
    }
    // The oldest was evicted long ago: its next request starts a new one.
    assert_ne!(session_of("agent-0"), first[0], "agent-0 kept a slot in a full table");
}
