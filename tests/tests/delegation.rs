//! Delegation chains end to end: oktsec v0.13's six handler scenarios, the
//! twelve hardened (#171) ones, and hostile headers, through a real Envoy.
//!
//! Under Warrant every request carrying a chain must come from an
//! authenticated sender (the hardened rule), so the six v0.13 scenarios are
//! sent signed; their expected outcomes are unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine as _;
use warrant_delegation::{encode_header, mint, MintRequest, Timestamp, Token};
use warrant_e2e::agents::{now_secs, Agent};
use warrant_e2e::stack::{Options, Reply, Stack};

const HEADER: &str = "x-oktsec-delegation";

struct World {
    human: Agent,
    sender: Agent,
    mid: Agent,
}

impl World {
    fn new() -> World {
        World {
            human: Agent::new("human"),
            sender: Agent::new("test-agent"),
            mid: Agent::new("agent-mid"),
        }
    }

    fn keys_patch(&self, extra: serde_json::Value) -> Box<dyn Fn(&mut serde_json::Value)> {
        let keys = [&self.human, &self.sender, &self.mid]
            .map(|a| (a.name.clone(), serde_json::Value::from(a.public_base64())));
        Box::new(move |json| {
            for (name, key) in &keys {
                json["keys"][name] = key.clone();
            }
            for (k, v) in extra.as_object().unwrap() {
                json[k] = v.clone();
            }
        })
    }

    fn start(&self, extra: serde_json::Value) -> Stack {
        Stack::start(Options { patch: self.keys_patch(extra), ..Options::default() })
    }
}

fn token(
    by: &Agent,
    to: &str,
    scope: &[&str],
    parent: Option<&warrant_delegation::VerifiedChain>,
    at: i64,
) -> Token {
    let request = MintRequest {
        delegator: &by.name,
        delegate: to,
        scope: scope.iter().map(|s| s.to_string()).collect(),
        tools: vec![],
        ttl: Duration::from_secs(3600),
        max_depth: 3,
        parent,
    };
    mint(&by.key, &request, Timestamp::from_unix_secs(at)).unwrap()
}

fn one_hop(w: &World, to: &str, scope: &[&str]) -> String {
    encode_header(&[token(&w.human, to, scope, None, now_secs())])
}

fn send(stack: &Stack, w: &World, header: Option<&str>, to: &str) -> Reply {
    // A new message each time: the same signed envelope twice is a replay.
    static SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let body = w.sender.envelope(to, &format!("Please summarize the quarterly report ({n})"));
    let headers: Vec<(&str, &str)> = header.map(|h| vec![(HEADER, h)]).unwrap_or_default();
    stack.post_json("/v1/message", &headers, &body)
}

fn decision(reply: &Reply) -> String {
    if reply.status == 200 {
        return "delivered".into();
    }
    reply.json()["policy_decision"].as_str().unwrap_or("?").to_string()
}

/// No VM failed or was reloaded, and a valid request still passes.
fn assert_filter_healthy(stack: &Stack, w: &World) {
    stack.envoy.assert_no_vm_failure();
    assert_eq!(
        send(stack, w, Some(&one_hop(w, "test-agent", &["target-agent"])), "target-agent").status,
        200
    );
}

#[test]
fn oktsec_v013_handler_scenarios() {
    let w = World::new();
    let stack = w.start(serde_json::json!({}));
    let expired =
        encode_header(&[token(&w.human, "test-agent", &["target-agent"], None, now_secs() - 7200)]);
    let forged = {
        let impostor = Agent { name: "human".into(), key: Agent::new("x").key };
        encode_header(&[token(&impostor, "test-agent", &["target-agent"], None, now_secs())])
    };
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("valid chain", Some(one_hop(&w, "test-agent", &["target-agent"])), "delivered"),
        ("expired token", Some(expired), "delegation_invalid"),
        ("invalid signature", Some(forged), "delegation_invalid"),
        ("not required, none provided", None, "delivered"),
        (
            "scope violation",
            Some(one_hop(&w, "test-agent", &["other-agent"])),
            "delegation_invalid",
        ),
    ];
    for (name, header, want) in &cases {
        assert_eq!(
            decision(&send(&stack, &w, header.as_deref(), "target-agent")),
            *want,
            "scenario {name}"
        );
    }
    let records = stack.records();
    assert_eq!(records[0].delegation_root, "human");
    assert_eq!(records[0].delegation_depth, 1);
    assert_eq!(records[0].delegation_path, r#"["human","test-agent"]"#);

    let required = w.start(serde_json::json!({"delegation": {"require_delegation": true}}));
    assert_eq!(
        decision(&send(&required, &w, None, "target-agent")),
        "delegation_required",
        "required, none provided"
    );
}

#[test]
fn hardened_scenarios() {
    let w = World::new();
    let acl = serde_json::json!({
        "default_policy": "deny",
        "agents": {"human": {"can_message": ["target-agent"]}, "test-agent": {}, "target-agent": {}},
        "delegation": {"agents": {"test-agent": {"max_depth": 1}}},
    });
    let stack = w.start(acl);
    let valid = one_hop(&w, "test-agent", &["target-agent"]);
    let two_hops = {
        let first = token(&w.human, "agent-mid", &["target-agent"], None, now_secs());
        let header = encode_header(std::slice::from_ref(&first));
        let mut keys = warrant_delegation::keys::KeyStore::new();
        keys.insert("human", w.human.key.verifying_key());
        let policy = warrant_delegation::VerifyPolicy::new();
        let parsed = warrant_delegation::Chain::parse(header.as_bytes(), policy.limits()).unwrap();
        let verified = parsed
            .verify_ignoring_recipient(&keys, &policy, Timestamp::from_unix_secs(now_secs()))
            .unwrap();
        let second = token(&w.mid, "test-agent", &["target-agent"], Some(&verified), now_secs());
        encode_header(&[first, second])
    };
    let unsigned = {
        let body = serde_json::json!({"from": "test-agent", "to": "target-agent", "content": "hi"});
        stack.post_json("/v1/message", &[(HEADER, valid.as_str())], &body)
    };
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("uses root authority for ACL", Some(valid.clone()), "delivered"),
        (
            "delegate must match sender",
            Some(one_hop(&w, "other-agent", &["target-agent"])),
            "delegation_invalid",
        ),
        ("depth exceeded blocks", Some(two_hops.clone()), "delegation_depth_exceeded"),
        ("missing header still allowed by default", None, "delivered"),
        (
            "invalid header rejected even when not required",
            Some("bm90IGEgY2hhaW4=".into()),
            "delegation_invalid",
        ),
        (
            "expired token rejected",
            Some(encode_header(&[token(
                &w.human,
                "test-agent",
                &["target-agent"],
                None,
                now_secs() - 7200,
            )])),
            "delegation_invalid",
        ),
        (
            "scope violation",
            Some(one_hop(&w, "test-agent", &["other-agent"])),
            "delegation_invalid",
        ),
    ];
    for (name, header, want) in &cases {
        assert_eq!(
            decision(&send(&stack, &w, header.as_deref(), "target-agent")),
            *want,
            "scenario {name}"
        );
    }
    assert_eq!(decision(&unsigned), "signature_required", "requires verified delegate signature");

    // The audit stores the hash, never the raw header.
    let records = stack.records();
    assert!(records.iter().all(|r| !r.delegation_chain_hash.contains(&valid)));
    assert!(records.iter().any(|r| r.delegation_chain_hash.len() == 64));
    let db = std::fs::read(stack.db()).unwrap();
    assert!(!db.windows(valid.len()).any(|w| w == valid.as_bytes()), "raw header stored");

    let root_lacks_acl = w.start(serde_json::json!({
        "default_policy": "deny",
        "agents": {"test-agent": {"can_message": ["target-agent"]}, "target-agent": {}},
    }));
    assert_eq!(
        decision(&send(&root_lacks_acl, &w, Some(&valid), "target-agent")),
        "acl_denied",
        "root lacks ACL"
    );
    let suspended = w.start(serde_json::json!({"agents": {"human": {"suspended": true}}}));
    assert_eq!(
        decision(&send(&suspended, &w, Some(&valid), "target-agent")),
        "agent_suspended",
        "suspended root"
    );
    let required = w.start(serde_json::json!({"delegation": {"require_delegation": true}}));
    assert_eq!(
        decision(&send(&required, &w, None, "target-agent")),
        "delegation_required",
        "missing header, required"
    );
}

#[test]
fn hostile_headers_get_clear_rejections_and_the_filter_keeps_serving() {
    let w = World::new();
    let stack = w.start(serde_json::json!({}));
    // A valid 2-hop header with hop 0's token_id blanked (oktsec panics here).
    let blanked = {
        let first = token(&w.human, "agent-mid", &["target-agent"], None, now_secs());
        let mut keys = warrant_delegation::keys::KeyStore::new();
        keys.insert("human", w.human.key.verifying_key());
        let policy = warrant_delegation::VerifyPolicy::new();
        let header = encode_header(std::slice::from_ref(&first));
        let parsed = warrant_delegation::Chain::parse(header.as_bytes(), policy.limits()).unwrap();
        let verified = parsed
            .verify_ignoring_recipient(&keys, &policy, Timestamp::from_unix_secs(now_secs()))
            .unwrap();
        let second = token(&w.mid, "test-agent", &["target-agent"], Some(&verified), now_secs());
        let mut first = first;
        first.token_id = String::new();
        encode_header(&[first, second])
    };
    // A valid chain re-encoded URL-safe and unpadded; mint until the two
    // encodings really differ (a '+', '/' or '=' in the standard one).
    let url_safe = (0..64)
        .find_map(|i| {
            let extra = format!("x{i}");
            let standard = one_hop(&w, "test-agent", &["target-agent", &extra]);
            let json = STANDARD.decode(&standard).unwrap();
            let url_safe = URL_SAFE.encode(&json).replace('=', "");
            (url_safe != standard).then_some(url_safe)
        })
        .unwrap();
    let big = "A".repeat(64 * 1024);
    let cases: Vec<(&str, String, &[u16])> = vec![
        ("blanked token_id", blanked, &[403]),
        ("url-safe unpadded base64", url_safe, &[403]),
        ("empty array", STANDARD.encode("[]"), &[403]),
        ("garbage json", STANDARD.encode("{not json"), &[403]),
        ("64 KiB header", big, &[403, 431]),
    ];
    for (name, header, statuses) in &cases {
        let reply = send(&stack, &w, Some(header), "target-agent");
        assert!(statuses.contains(&reply.status), "case {name}: {} {}", reply.status, reply.body);
        if reply.status == 403 {
            assert_eq!(reply.json()["policy_decision"], "delegation_invalid", "case {name}");
        }
    }
    // 1,000 tokens: far over the header cap (and over Envoy's own header
    // limit, which answers 431 before any filter runs).
    let thousand: Vec<Token> = (0..1000)
        .map(|_| token(&w.human, "test-agent", &["target-agent"], None, now_secs()))
        .collect();
    let reply = send(&stack, &w, Some(&encode_header(&thousand)), "target-agent");
    assert!([403, 431].contains(&reply.status), "1,000 tokens: {}", reply.status);
    assert!(stack.upstream.seen().is_empty(), "nothing hostile reached the upstream");
    assert_filter_healthy(&stack, &w);
}

/// The filter's time on each decided request goes to the work counters of
/// what its chain needed: one request without a chain, one verification,
/// then the VM's cache (one worker, so one VM), and a chain on an unsigned
/// request that is refused before it is looked at.
#[test]
fn filter_time_is_counted_by_what_the_chain_needed() {
    let w = World::new();
    let stack = Stack::start(Options {
        concurrency: 1,
        patch: w.keys_patch(serde_json::json!({})),
        ..Options::default()
    });
    let chain = one_hop(&w, "test-agent", &["target-agent"]);
    assert_eq!(send(&stack, &w, None, "target-agent").status, 200);
    for _ in 0..4 {
        assert_eq!(send(&stack, &w, Some(&chain), "target-agent").status, 200);
    }
    let body = serde_json::json!({"from": "test-agent", "to": "target-agent", "content": "hi"});
    let unsigned = stack.post_json("/v1/message", &[(HEADER, chain.as_str())], &body);
    assert_eq!(decision(&unsigned), "signature_required");
    let counts = |check: &str| {
        let stat =
            |what: &str| stack.envoy.stat(&format!("wasmcustom.warrant.work.{check}.{what}"));
        (stat("requests"), stat("nanoseconds"))
    };
    let want = [("none", 1), ("verified", 1), ("cached", 3), ("unchecked", 1)];
    // Counted when Envoy logs the stream, which can be after the client
    // has its response.
    warrant_e2e::wait::until(Duration::from_secs(10), "the work counters", || {
        want.iter().all(|(check, n)| counts(check).0 == *n).then_some(())
    });
    for (check, _) in want {
        assert!(counts(check).1 > 0, "no time counted for {check}");
    }
    // The labels Envoy's stats_tags give them.
    let metrics = ureq::get(&format!("http://{}/stats/prometheus", stack.envoy.admin))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    for series in [
        r#"warrant_work_requests{chain="cached"} 3"#,
        r#"warrant_work_requests{chain="verified"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == series), "no {series} in {metrics}");
    }
}

/// envoy/examples/rbac-on-delegation.yaml, put into envoy.yaml the way its
/// comments say: the RBAC filter before the router, the access log on the
/// HTTP connection manager (to `log`).
fn template_with_rbac_example(dir: &std::path::Path, log: &std::path::Path) -> std::path::PathBuf {
    use serde_yaml::Value;
    let root = warrant_e2e::repo_root();
    let read = |p: &str| -> Value {
        serde_yaml::from_str(&std::fs::read_to_string(root.join(p)).unwrap()).unwrap()
    };
    let example = read("envoy/examples/rbac-on-delegation.yaml");
    let mut doc = read("envoy/envoy.yaml");
    let hcm = &mut doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"];
    let filters = hcm["http_filters"].as_sequence_mut().unwrap();
    let router = filters.len() - 1;
    filters.insert(router, example["http_filter"].clone());
    let mut access_log = example["access_log"].clone();
    access_log["typed_config"]["path"] = log.display().to_string().into();
    hcm["access_log"] = Value::Sequence(vec![access_log]);
    let path = dir.join("envoy-rbac-template.yaml");
    std::fs::write(&path, serde_yaml::to_string(&doc).unwrap()).unwrap();
    path
}

/// A stack with the RBAC example in place (see
/// [`template_with_rbac_example`]), its plugin config changed by `patch`;
/// two requests to `/admin/reports` from bob, for alice through a chain
/// (answered 200) and on his own (RBAC's 403), then `more` requests; the
/// access log's first `lines` lines (and the directory holding the log).
fn rbac_example_run(
    patch: impl Fn(&mut serde_json::Value) + Send + Sync + 'static,
    more: impl Fn(&Stack, &dyn Fn(u32) -> serde_json::Value),
    lines: usize,
) -> (Stack, Reply, Vec<String>, tempfile::TempDir) {
    let scratch = tempfile::tempdir().unwrap();
    let log = scratch.path().join("access.log");
    let template = template_with_rbac_example(scratch.path(), &log);
    let stack = Stack::start(Options { template, patch: Box::new(patch), ..Options::default() });
    let chain = stack.alice.grant("alice", "bob", &["research-agent"], Duration::from_secs(3600));
    // A new message per request: the same signed envelope twice is a replay.
    let body = |n: u32| stack.bob.envelope("research-agent", &format!("List reports, part {n}"));

    // bob acting for alice may use /admin/.
    let delegated = stack.post_json("/admin/reports", &[(HEADER, &chain)], &body(1));
    assert_eq!(delegated.status, 200, "{}", delegated.body);
    // bob on his own may not: Warrant allows it, Envoy's RBAC refuses.
    let alone = stack.post_json("/admin/reports", &[], &body(2));
    assert_eq!(alone.status, 403, "{}", alone.body);
    assert!(alone.body.contains("RBAC"), "{}", alone.body);
    more(&stack, &body);

    // Envoy flushes the access log on a timer.
    let what = format!("{lines} access log lines");
    let text = warrant_e2e::wait::until(Duration::from_secs(10), &what, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let found: Vec<String> = text.lines().map(str::to_string).collect();
        (found.len() >= lines).then_some(found)
    });
    (stack, delegated, text, scratch)
}

#[test]
fn verified_chain_root_drives_envoy_rbac_and_access_logs() {
    // Anything but /admin/ passes.
    let elsewhere = |stack: &Stack, body: &dyn Fn(u32) -> serde_json::Value| {
        let reply = stack.post_json("/v1/message", &[], &body(3));
        assert_eq!(reply.status, 200, "{}", reply.body);
    };
    let (stack, delegated, lines, _log) = rbac_example_run(|_| {}, elsewhere, 3);
    let seen: Vec<String> = stack.upstream.seen().iter().map(|s| s.path.clone()).collect();
    assert_eq!(seen, ["/admin/reports", "/v1/message"]);

    // The access log prints the same facts.
    let hash = stack.records()[0].delegation_chain_hash.clone();
    assert!(!hash.is_empty());
    assert!(lines[0].contains("/admin/reports 200 decision=allow sender=bob root=alice depth=1"));
    assert!(lines[0].contains(&format!("chain={hash}")), "{}", lines[0]);
    assert!(lines[1].contains("/admin/reports 403 decision=allow sender=bob root=- depth=-"));
    let session = delegated.header("x-oktsec-session").unwrap();
    assert!(lines[0].contains(&format!("session={session}")), "{}", lines[0]);
}

/// With `facts` listing only what the RBAC rule reads, the rule works as
/// before and nothing else is set: the access log's other facts are "-",
/// while the audit record keeps everything.
#[test]
fn only_the_configured_facts_reach_envoy() {
    let only_root =
        |json: &mut serde_json::Value| json["facts"] = serde_json::json!(["delegation_root"]);
    let (stack, _, lines, _log) = rbac_example_run(only_root, |_, _| {}, 2);
    assert!(
        lines[0].contains(
            "/admin/reports 200 decision=- sender=- root=alice depth=- chain=- session=-"
        ),
        "{}",
        lines[0]
    );
    let record = &stack.records()[0];
    assert_eq!((record.delegation_root.as_str(), record.delegation_depth), ("alice", 1));
    assert_eq!(record.from, "bob");
    assert!(!record.delegation_chain_hash.is_empty());
}
