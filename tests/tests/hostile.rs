//! Hostile input through a real Envoy: replayed envelopes across workers,
//! content-type tricks, HTTP/2 trailers, bodiless requests, and a battery of
//! more than 200 malformed or hostile requests, each with its exact status,
//! decision and one audit record, after which the filter is still healthy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::Signer;
use warrant_delegation::{encode_header, mint, MintRequest, Timestamp};
use warrant_e2e::agents::{now_secs, rfc3339, Agent};
use warrant_e2e::stack::{Options, Reply, Stack};

const DELEGATION: &str = "x-oktsec-delegation";
const AGENT: &str = "x-warrant-agent";

/// The battery's plugin configuration: everything through it is for `bob`,
/// so delegation scopes and ACLs have a fixed recipient.
fn start(concurrency: u32) -> Stack {
    Stack::start(Options {
        concurrency,
        patch: Box::new(|json| json["recipient"]["name"] = "bob".into()),
        ..Options::default()
    })
}

/// A chain from `by` to `to` for recipient `bob`, limited to `tools` (none:
/// any tool), valid from `at` for an hour.
fn chain(by: &Agent, to: &str, tools: &[&str], at: i64) -> String {
    let request = MintRequest {
        delegator: &by.name,
        delegate: to,
        scope: vec!["bob".to_string()],
        tools: tools.iter().map(|t| t.to_string()).collect(),
        ttl: Duration::from_secs(3600),
        max_depth: 3,
        parent: None,
    };
    encode_header(&[mint(&by.key, &request, Timestamp::from_unix_secs(at)).unwrap()])
}

fn tools_call(id: u64, tool: &str, arguments: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": tool, "arguments": arguments},
    })
}

/// Per-worker connection counters of the agents listener, from Envoy's
/// admin API: `listener.<address>.worker_<n>.downstream_cx_total`.
fn connections_per_worker(stack: &Stack) -> BTreeMap<String, u64> {
    let stats =
        ureq::get(&format!("http://{}/stats?filter=downstream_cx_total", stack.envoy.admin))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
    stats
        .lines()
        .filter(|l| l.starts_with("listener.") && !l.starts_with("listener.admin"))
        .filter_map(|l| {
            let (name, value) = l.split_once(": ")?;
            let worker = name.split('.').find(|part| part.starts_with("worker_"))?;
            Some((worker.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// No VM failed or was reloaded (Envoy's wasm stats), and a valid request
/// still passes.
fn assert_filter_healthy(stack: &Stack) {
    stack.envoy.assert_no_vm_failure();
    let body = stack.alice.envelope("bob", "Still here after all that?");
    let reply = stack.post_json("/v1/message", &[], &body);
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[test]
fn a_replayed_envelope_is_refused_on_every_worker_and_audited() {
    let stack = start(2);
    let body = stack.alice.envelope("bob", "Transfer 10 credits to carol").to_string();
    // `connection: close`: every request on its own connection, which the
    // kernel hands to either worker (SO_REUSEPORT).
    let post = || {
        let headers = [("content-type", "application/json"), ("connection", "close")];
        stack.send("POST", "/v1/message", &headers, Some(body.as_bytes()))
    };
    let before = connections_per_worker(&stack);
    let first = post();
    assert_eq!(first.status, 200, "{}", first.body);
    let after_first = connections_per_worker(&stack);
    let first_worker = after_first
        .iter()
        .find(|(w, n)| before.get(*w).copied().unwrap_or(0) < **n)
        .map(|(w, _)| w.clone())
        .expect("some worker took the first connection");

    // Replays until one lands on the other worker (each lands on one of
    // two, so this ends quickly; 64 tries make a miss vanishingly rare).
    let mut replays = 0;
    let mut other_worker_saw_it = false;
    while !other_worker_saw_it && replays < 64 {
        let was = connections_per_worker(&stack);
        let reply = post();
        replays += 1;
        assert_eq!(reply.status, 403, "replay {replays}: {}", reply.body);
        assert_eq!(reply.json()["policy_decision"], "replay_detected", "{}", reply.body);
        let now = connections_per_worker(&stack);
        other_worker_saw_it =
            now.iter().any(|(w, n)| *w != first_worker && was.get(w).copied().unwrap_or(0) < *n);
    }
    assert!(other_worker_saw_it, "no replay reached the worker other than {first_worker}");

    assert_eq!(stack.upstream.seen().len(), 1, "only the first copy reaches the upstream");
    let records = stack.records();
    assert_eq!(records.len(), 1 + replays, "every copy is audited");
    assert_eq!(records[0].decision, "allow");
    for r in &records[1..] {
        assert_eq!((r.decision.as_str(), r.http_status), ("replay_detected", 403), "{r:?}");
        assert_eq!(r.from, "alice");
    }
    // The same words signed afresh are a new message.
    let fresh =
        stack.alice.envelope_at("bob", "Transfer 10 credits to carol", &rfc3339(now_secs() + 1));
    assert_eq!(stack.post_json("/v1/message", &[], &fresh).status, 200);
}

#[test]
fn bodiless_requests_are_identified_delegation_checked_and_audited() {
    let stack = start(1);
    let ok = chain(&stack.bob, "alice", &[], now_secs());
    let forged = chain(&Agent::new("bob"), "alice", &[], now_secs());
    let get = |headers: &[(&str, &str)]| stack.send("GET", "/status", headers, None);

    assert_eq!(get(&[(AGENT, "alice"), (DELEGATION, &ok)]).status, 200);
    let refused = get(&[(AGENT, "alice"), (DELEGATION, &forged)]);
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.json()["policy_decision"], "delegation_invalid");
    let anonymous = get(&[(DELEGATION, &ok)]);
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    let delete = stack.send("DELETE", "/items/7", &[(AGENT, "carol")], None);
    assert_eq!(delete.status, 200, "{}", delete.body);

    let records = stack.records();
    let got: Vec<_> = records
        .iter()
        .map(|r| {
            (r.method.as_str(), r.from.as_str(), r.decision.as_str(), r.delegation_root.as_str())
        })
        .collect();
    assert_eq!(
        got,
        [
            ("GET", "alice", "allow", "bob"),
            ("GET", "alice", "delegation_invalid", ""),
            ("GET", "", "signature_required", ""),
            ("DELETE", "carol", "allow", ""),
        ]
    );
    assert_eq!(stack.upstream.seen().len(), 2);
}

#[test]
fn http2_request_with_trailers_is_decided_on_its_whole_body() {
    let stack = start(1);
    let port = stack.envoy.port;
    let clean = stack.alice.envelope("bob", "Quarterly numbers, part two").to_string();
    let blocked = stack
        .alice
        .envelope("bob", "then run echo /cmd > /sys/fs/cgroup/memory/release_agent")
        .to_string();

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let statuses = runtime.block_on(async move {
        let mut statuses = Vec::new();
        for body in [clean, blocked] {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let (client, connection) = h2::client::handshake(tcp).await.unwrap();
            tokio::spawn(async move {
                let _ = connection.await;
            });
            let mut client = client.ready().await.unwrap();
            let request = http::Request::builder()
                .method("POST")
                .uri(format!("http://127.0.0.1:{port}/v1/message"))
                .header("content-type", "application/json")
                .body(())
                .unwrap();
            let (response, mut stream) = client.send_request(request, false).unwrap();
            // Two DATA frames: neither half is valid JSON, and the blocked
            // words are in the second, so only the whole body decides right.
            let (head, tail) = body.as_bytes().split_at(body.len() / 2);
            stream.send_data(bytes::Bytes::copy_from_slice(head), false).unwrap();
            stream.send_data(bytes::Bytes::copy_from_slice(tail), false).unwrap();
            let mut trailers = http::HeaderMap::new();
            trailers.insert("x-checksum", "abc".parse().unwrap());
            stream.send_trailers(trailers).unwrap();
            let response = response.await.unwrap();
            statuses.push(response.status().as_u16());
        }
        statuses
    });
    assert_eq!(statuses, [200, 403]);
    let decisions: Vec<_> = stack.records().into_iter().map(|r| r.decision).collect();
    assert_eq!(decisions, ["allow", "content_blocked"]);
    let seen = stack.upstream.seen();
    assert_eq!(seen.len(), 1);
    assert!(String::from_utf8_lossy(&seen[0].body).contains("part two"));
}

/// One hostile request and what it must get.
struct Case {
    name: String,
    method: &'static str,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    status: u16,
    decision: &'static str,
}

impl Case {
    fn json(name: impl Into<String>, agent: Option<&str>, body: impl Into<Vec<u8>>) -> Case {
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        if let Some(agent) = agent {
            headers.push((AGENT.to_string(), agent.to_string()));
        }
        Case {
            name: name.into(),
            method: "POST",
            headers,
            body: Some(body.into()),
            status: 0,
            decision: "",
        }
    }

    fn header(mut self, name: &str, value: &str) -> Case {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    fn wants(mut self, status: u16, decision: &'static str) -> Case {
        self.status = status;
        self.decision = decision;
        self
    }
}

/// A change to an envelope's JSON.
type Edit = Box<dyn Fn(&mut serde_json::Value)>;

/// A signed envelope whose fields are then changed by `edit` (after
/// signing, so the signature covers the original).
/// HTTP allows any byte from 0x80 up in a header value (`obs-text`), and
/// Envoy passes such values to the filter. The proxy-wasm SDK's reading of
/// the headers (`get_map`) panics on them, which killed the worker's VM on
/// one request from anyone (this test's first case answered 503 without a
/// record); the filter now reads the host's bytes itself. Each request gets
/// its decision and one record, and the filter stays healthy. A forwarded
/// request still carries such a header upstream (but the session header,
/// which the filter replaces), where this test's upstream (tiny_http, ASCII
/// headers only) drops the connection: Envoy answers 503 for it, and the
/// record shows what the filter decided.
#[test]
fn header_values_that_are_not_utf8_get_defined_answers_and_leave_the_filter_healthy() {
    let stack = start(1);
    let ok = chain(&stack.bob, "alice", &[], now_secs());
    let body = br#"{"note":"status report"}"#;
    let request = |extra: &[u8]| {
        let mut raw = format!(
            "POST /v1/message HTTP/1.1\r\nhost: bob\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(extra);
        raw.extend_from_slice(b"\r\n");
        raw.extend_from_slice(body);
        raw
    };
    let alice = &b"x-warrant-agent: alice\r\n"[..];
    let chain_header =
        |tail: &[u8]| [alice, b"x-oktsec-delegation: ", ok.as_bytes(), tail].concat();
    // (case, extra header lines, status, decision, sender recorded)
    let upstream_drops = 503;
    let cases: Vec<(&str, Vec<u8>, u16, &str, &str)> = vec![
        (
            "latin-1 in another header",
            [alice, b"x-note: caf\xe9\r\n"].concat(),
            upstream_drops,
            "allow",
            "alice",
        ),
        (
            "0xff in the identity header",
            b"x-warrant-agent: al\xffice\r\n".to_vec(),
            400,
            "invalid_request",
            "",
        ),
        ("0xff after a valid chain", chain_header(b"\xff\r\n"), 403, "delegation_invalid", "alice"),
        (
            "0x80 in the session header",
            [alice, b"x-oktsec-session: s\x80\xff\r\n"].concat(),
            200, // the filter replaces the malformed session id upstream
            "allow",
            "alice",
        ),
        ("the valid chain, after all that", chain_header(b"\r\n"), 200, "allow", "alice"),
    ];
    for (name, extra, status, _, _) in &cases {
        let (got, text) =
            warrant_e2e::bench::Client::send_verbose(stack.envoy.port, &request(extra))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, *status, "{name}: {text}");
    }
    let records = stack.records();
    let got: Vec<(&str, &str)> =
        records.iter().map(|r| (r.decision.as_str(), r.from.as_str())).collect();
    let want: Vec<(&str, &str)> = cases.iter().map(|c| (c.3, c.4)).collect();
    assert_eq!(got, want);
    assert!(records[3].notes.contains("malformed session header replaced"), "{}", records[3].notes);
    assert_eq!(records[4].delegation_root, "bob");
    assert_filter_healthy(&stack);
}

fn edited(agent: &Agent, edit: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
    let mut value = agent.envelope("bob", "A perfectly ordinary message");
    edit(&mut value);
    value.to_string().into_bytes()
}

/// A signed envelope with `timestamp` as given (signed over that string).
fn stamped(agent: &Agent, timestamp: &str) -> Vec<u8> {
    agent.envelope_at("bob", "hello", timestamp).to_string().into_bytes()
}

#[allow(clippy::too_many_lines)]
fn battery(stack: &Stack) -> Vec<Case> {
    let alice = &stack.alice;
    let bob = &stack.bob;
    let mut cases = Vec::new();
    let clean = br#"{"note":"hello"}"#.to_vec();

    // 1. Envelopes and identity.
    let unsigned = serde_json::json!({"from":"alice","to":"bob","content":"hi"}).to_string();
    cases.push(
        Case::json("unsigned envelope", None, unsigned.clone()).wants(401, "signature_required"),
    );
    cases.push(
        Case::json("unsigned envelope claiming alice, header says bob", Some("bob"), unsigned)
            .wants(403, "identity_rejected"),
    );
    let signature_edits: Vec<(&str, serde_json::Value)> = vec![
        ("signature not base64", "!!!".into()),
        ("signature of 10 bytes", STANDARD.encode([7u8; 10]).into()),
        ("signature of 65 bytes", STANDARD.encode([7u8; 65]).into()),
        ("signature all zeros", STANDARD.encode([0u8; 64]).into()),
        ("signature url-safe alphabet", "-_".repeat(43).into()),
    ];
    for (name, signature) in signature_edits {
        let body = edited(alice, |v| v["signature"] = signature.clone());
        cases.push(Case::json(name, None, body).wants(403, "identity_rejected"));
    }
    let tampered: Vec<(&str, &str, serde_json::Value)> = vec![
        ("content changed after signing", "content", "A perfectly ordinary message!".into()),
        ("recipient changed after signing", "to", "carol".into()),
        ("sender swapped to bob", "from", "bob".into()),
        ("sender without a key", "from", "mallory".into()),
    ];
    for (name, field, value) in tampered {
        let body = edited(alice, |v| v[field] = value.clone());
        cases.push(Case::json(name, None, body).wants(403, "identity_rejected"));
    }
    let signed_by_bob = {
        let ts = rfc3339(now_secs());
        let payload = format!("alice\nbob\nhi\n{ts}");
        let signature = STANDARD.encode(bob.key.sign(payload.as_bytes()).to_bytes());
        serde_json::json!({"from":"alice","to":"bob","content":"hi","timestamp":ts,"signature":signature})
            .to_string()
    };
    cases.push(
        Case::json("alice's envelope signed by bob", None, signed_by_bob)
            .wants(403, "identity_rejected"),
    );
    let malformed: Vec<(&str, Edit)> = vec![
        (
            "timestamp removed",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("timestamp");
            }),
        ),
        ("unknown field", Box::new(|v| v["priority"] = "high".into())),
        ("content is a number", Box::new(|v| v["content"] = 5.into())),
        ("content is null", Box::new(|v| v["content"] = serde_json::Value::Null)),
        ("from is empty", Box::new(|v| v["from"] = "".into())),
        ("to is empty", Box::new(|v| v["to"] = "".into())),
        ("to is an array", Box::new(|v| v["to"] = serde_json::json!(["bob"]))),
        ("metadata with a number", Box::new(|v| v["metadata"] = serde_json::json!({"n": 1}))),
        ("intent is an object", Box::new(|v| v["intent"] = serde_json::json!({}))),
        ("signature is a number", Box::new(|v| v["signature"] = 1.into())),
        (
            "content missing",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("content");
            }),
        ),
    ];
    for (name, edit) in malformed {
        cases.push(Case::json(name, None, edited(alice, edit)).wants(400, "invalid_request"));
    }
    let now = now_secs();
    let timestamps = [
        String::new(),
        "0".into(),
        "yesterday".into(),
        "1700000000".into(),
        "2026-13-01T00:00:00Z".into(),
        "2026-02-30T00:00:00Z".into(),
        "2026-01-01 00:00:00".into(),
        "9999-12-31T23:59:59Z".into(),
        "1970-01-01T00:00:00Z".into(),
        rfc3339(now - 3600),
        rfc3339(now + 3600),
        rfc3339(now - 301),
    ];
    for ts in timestamps {
        let name = format!("timestamp {ts:?}");
        cases.push(Case::json(name, None, stamped(alice, &ts)).wants(400, "invalid_request"));
    }
    for value in ["a,b", &"x".repeat(300)] {
        let name = format!("identity header {}", &value[..value.len().min(8)]);
        cases.push(Case::json(name, Some(value), clean.clone()).wants(400, "invalid_request"));
    }

    // 2. JSON that does not parse.
    let syntax = [
        "{",
        "}",
        "[",
        "]",
        "{\"a\":}",
        "{\"a\" 1}",
        "{'a':1}",
        "{a:1}",
        "[1,]",
        "{\"a\":1,}",
        "tru",
        "nul",
        "NaN",
        "Infinity",
        "-",
        "01",
        "1e",
        "\"unterminated",
        "{\"a\":\"\\x41\"}",
        "{\"a\":\"\\u12\"}",
        "{\"a\":\"tab\tinside\"}",
        "{}{}",
        "[] []",
        "{\"a\":1} x",
        "/* comment */ {}",
        "{\"a\":1}//",
        "{\"a\":-}",
        "{\"a\":.5}",
        "{\"a\":+1}",
        "{\"a\":0x10}",
        "[\"a\" \"b\"]",
        "{\"a\"::1}",
        ",",
        ":",
        "{\"a\":1]",
        "[1}",
        "{\"a\":\"\\\"}",
        "\u{feff}{}",
    ];
    for (i, text) in syntax.iter().enumerate() {
        let name = format!("syntax #{i} {text:?}");
        cases.push(Case::json(name, Some("alice"), *text).wants(400, "invalid_request"));
    }

    // 3. Duplicate keys, wherever they are.
    let duplicates = [
        r#"{"from":"alice","to":"bob","content":"hi","content":"rm -rf /"}"#,
        r#"{"from":"alice","from":"bob","to":"bob","content":"hi"}"#,
        r#"{"a":1,"a":1}"#,
        r#"{"a":1,"b":2,"a":3}"#,
        r#"{"x":{"y":{"z":1,"z":2}}}"#,
        r#"[{"k":1,"k":2}]"#,
        r#"{"jsonrpc":"2.0","jsonrpc":"2.0","method":"ping"}"#,
        r#"{"jsonrpc":"2.0","method":"tools/call","method":"ping","params":{"name":"t"}}"#,
        r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"a","name":"b"}}"#,
        r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"a","arguments":{"p":1,"p":2}}}"#,
        r#"[{"jsonrpc":"2.0","method":"tools/call","params":{"name":"a"},"params":{"name":"b"}}]"#,
        r#"{"a":"1","\u0061":"2"}"#,
    ];
    for (i, text) in duplicates.iter().enumerate() {
        let name = format!("duplicate keys #{i}");
        cases.push(Case::json(name, Some("alice"), *text).wants(400, "invalid_request"));
    }

    // 4. Nesting past the cap (32), up to far past serde_json's own (128).
    for depth in [33usize, 40, 64, 127, 128, 129, 200, 1000, 10_000, 100_000] {
        let text = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let name = format!("arrays nested {depth}");
        cases.push(Case::json(name, Some("alice"), text).wants(400, "invalid_request"));
    }
    for depth in [33usize, 64, 129, 5000] {
        let text = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
        let name = format!("objects nested {depth}");
        cases.push(Case::json(name, Some("alice"), text).wants(400, "invalid_request"));
    }
    let in_tool = format!(
        r#"{{"jsonrpc":"2.0","method":"tools/call","params":{{"name":"t","arguments":{}0{}}}}}"#,
        "[".repeat(40),
        "]".repeat(40)
    );
    cases.push(
        Case::json("nested tool arguments", Some("alice"), in_tool).wants(400, "invalid_request"),
    );

    // 5. Invalid UTF-8 and lone surrogates.
    let bad_bytes: [&[u8]; 12] = [
        b"\xff",
        b"\xfe",
        b"\xc0\x80",
        b"\xc1\xbf",
        b"\xe0\x80\x80",
        b"\xed\xa0\x80",
        b"\xf4\x90\x80\x80",
        b"\xf8\x88\x80\x80\x80",
        b"\x80",
        b"\xc3",
        b"\xe2\x82",
        b"\xf0\x9f\x98",
    ];
    for (i, bytes) in bad_bytes.iter().enumerate() {
        let mut in_value = b"{\"note\":\"a".to_vec();
        in_value.extend_from_slice(bytes);
        in_value.extend_from_slice(b"b\"}");
        let mut in_key = b"{\"k".to_vec();
        in_key.extend_from_slice(bytes);
        in_key.extend_from_slice(b"\":1}");
        let value_case =
            Case::json(format!("invalid utf-8 #{i} in a value"), Some("alice"), in_value);
        cases.push(value_case.wants(400, "invalid_request"));
        let key_case = Case::json(format!("invalid utf-8 #{i} in a key"), Some("alice"), in_key);
        cases.push(key_case.wants(400, "invalid_request"));
    }
    for escape in [r"\ud800", r"\udfff", r"\ud800\u0041", r"\udc00\ud800", r"\ud83d"] {
        let text = format!(r#"{{"note":"x{escape}y"}}"#);
        let name = format!("lone surrogate {escape}");
        cases.push(Case::json(name, Some("alice"), text).wants(400, "invalid_request"));
    }

    // 6. JSON-RPC calls and batches that are not well formed.
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file"}}"#;
    let bad_calls = [
        r#"{"jsonrpc":"2.0","method":"tools/call"}"#.to_string(),
        r#"{"jsonrpc":"2.0","method":"tools/call","params":null}"#.into(),
        r#"{"jsonrpc":"2.0","method":"tools/call","params":[]}"#.into(),
        r#"{"jsonrpc":"2.0","method":"tools/call","params":"read_file"}"#.into(),
        r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":1}}"#.into(),
        r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":null}}"#.into(),
        r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":["a"]}}"#.into(),
        r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":{}}}"#.into(),
        r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":true}}"#.into(),
        r#"{"jsonrpc":"2.0","method":"tools/call","params":{"arguments":{}}}"#.into(),
        r#"{"method":"tools/call","params":{}}"#.into(),
        format!("[{call},1]"),
        format!("[{call},\"x\"]"),
        format!("[{call},null]"),
        format!("[{call},[]]"),
        format!("[{call},true]"),
        format!("[1,{call}]"),
        format!("[{call},{{\"jsonrpc\":\"2.0\",\"method\":\"tools/call\",\"params\":{{}}}}]"),
        format!("[{call},[{call}]]"),
    ];
    for (i, text) in bad_calls.iter().enumerate() {
        let name = format!("malformed JSON-RPC #{i}");
        cases.push(Case::json(name, Some("alice"), text.clone()).wants(400, "invalid_request"));
    }

    // 7. Delegation headers that are not chains, on POST and on bodiless
    //    requests of every method.
    let garbage = [
        "x".to_string(),
        "!!!".into(),
        "====".into(),
        "null".into(),
        "[]".into(),
        "e30=".into(),
        "W10=".into(),
        STANDARD.encode(r#"[{"a":1}]"#),
        STANDARD.encode([0u8; 1]),
        STANDARD.encode([1u8; 16]),
        STANDARD.encode([2u8; 64]),
        STANDARD.encode([3u8; 300]),
        "a.b.c".into(),
        "a,b,c".into(),
        "   ".into(),
        "%00%01".into(),
        "A".repeat(9000),
        format!("{},{}", STANDARD.encode([4u8; 40]), STANDARD.encode([5u8; 40])),
        STANDARD.encode("{\"delegator\":\"bob\"}"),
        STANDARD.encode("[".repeat(1000)),
    ];
    for (i, value) in garbage.iter().enumerate() {
        let name = format!("garbage chain #{i} on POST");
        let case = Case::json(name, Some("alice"), clean.clone()).header(DELEGATION, value);
        cases.push(case.wants(403, "delegation_invalid"));
    }
    for (i, value) in garbage.iter().enumerate().take(12) {
        let method = ["GET", "DELETE", "PUT", "OPTIONS"][i % 4];
        cases.push(Case {
            name: format!("garbage chain #{i} on bodiless {method}"),
            method,
            headers: vec![(AGENT.into(), "alice".into()), (DELEGATION.into(), value.clone())],
            body: None,
            status: 403,
            decision: "delegation_invalid",
        });
    }
    let now = now_secs();
    let chains: Vec<(&str, String)> = vec![
        ("chain for someone else", chain(bob, "carol", &[], now)),
        ("chain from a forged bob", chain(&Agent::new("bob"), "alice", &[], now)),
        ("chain from an unknown delegator", chain(&Agent::new("zed"), "alice", &[], now)),
        ("chain expired", chain(bob, "alice", &[], now - 7200)),
        ("chain from the future", chain(bob, "alice", &[], now + 7200)),
    ];
    for (name, value) in chains {
        let case = Case::json(name, Some("alice"), clean.clone()).header(DELEGATION, &value);
        cases.push(case.wants(403, "delegation_invalid"));
    }
    let good = chain(bob, "alice", &[], now);
    let anonymous = Case::json("chain on an anonymous request", None, clean.clone());
    cases.push(anonymous.header(DELEGATION, &good).wants(401, "signature_required"));

    // 8. Tools outside the chain, however they are wrapped.
    let read_only = chain(bob, "alice", &["read_file"], now);
    let no_args = serde_json::json!({});
    let one = |tool: &str| tools_call(1, tool, no_args.clone()).to_string();
    let batch_of = |tools: &[&str]| {
        let calls: Vec<_> =
            tools.iter().zip(1..).map(|(t, id)| tools_call(id, t, no_args.clone())).collect();
        serde_json::Value::Array(calls).to_string()
    };
    let mut fifty = vec!["read_file"; 50];
    fifty.push("delete_file");
    let outside: Vec<(&str, String, &str)> = vec![
        ("tool outside the chain", one("shell"), "application/json"),
        ("tool name with other case", one("Read_File"), "application/json"),
        ("tool name with a trailing space", one("read_file "), "application/json"),
        ("batch with one tool outside", batch_of(&["read_file", "shell"]), "application/json"),
        ("batch of one tool outside", batch_of(&["shell"]), "application/json"),
        ("batch of fifty and one outside", batch_of(&fifty), "application/json"),
        (
            "tools/call without jsonrpc",
            r#"{"method":"tools/call","params":{"name":"shell"}}"#.into(),
            "application/json",
        ),
        ("tools/call labelled text/plain", one("shell"), "text/plain"),
        (
            "batch labelled application/octet-stream",
            batch_of(&["read_file", "shell"]),
            "application/octet-stream",
        ),
        ("tools/call labelled +json", one("shell"), "application/vnd.mcp+json"),
    ];
    for (name, body, content_type) in outside {
        let mut case = Case::json(name, Some("alice"), body).header(DELEGATION, &read_only);
        case.headers[0].1 = content_type.to_string();
        cases.push(case.wants(403, "delegation_scope_violation"));
    }

    // 9. Words the rules block, hidden in escapes, batches and metadata.
    let attack = "echo /cmd > /sys/fs/cgroup/memory/release_agent";
    let escaped: String = attack.chars().map(|c| format!("\\u{:04x}", c as u32)).collect();
    let hidden = [
        format!(r#"{{"note":"{escaped}"}}"#),
        format!(r#"{{"{escaped}":1}}"#),
        format!(
            r#"[{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"read_file","arguments":{{}}}}}},{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"run","arguments":{{"cmd":"{escaped}"}}}}}}]"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"run","arguments":{{}},"_meta":{{"x":"{escaped}"}}}}}}"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"notes/add","params":{{"deep":[[["{escaped}"]]]}}}}"#
        ),
    ];
    for (i, text) in hidden.iter().enumerate() {
        let name = format!("hidden attack #{i}");
        cases.push(Case::json(name, Some("alice"), text.clone()).wants(403, "content_blocked"));
    }
    let mut text_case = Case::json("attack as plain text", Some("alice"), attack);
    text_case.headers[0].1 = "text/plain".into();
    cases.push(text_case.wants(403, "content_blocked"));

    // 10. Compressed bodies, declared in any spelling.
    for encoding in
        ["gzip", "br", "deflate", "zstd", "compress", "x-custom", "GZIP", "gzip, identity"]
    {
        let case = Case::json(format!("content-encoding {encoding}"), Some("alice"), clean.clone());
        cases.push(case.header("content-encoding", encoding).wants(415, "unsupported_encoding"));
    }

    // 11. Over the body limit (1 MiB), declared by content-length.
    let huge = format!(r#"{{"note":"{}"}}"#, "a".repeat(1_100_000));
    cases.push(
        Case::json("body over the limit", Some("alice"), huge).wants(413, "payload_too_large"),
    );
    let long_value = format!(r#"{{"note":"{}"}}"#, "é".repeat(600_000));
    cases.push(
        Case::json("multibyte body over the limit", Some("alice"), long_value)
            .wants(413, "payload_too_large"),
    );

    cases
}

#[test]
fn hostile_battery_gets_defined_refusals_one_record_each_and_leaves_the_filter_healthy() {
    let stack = start(2);
    let cases = battery(&stack);
    assert!(cases.len() >= 200, "only {} cases", cases.len());

    // Replays: each pair's first copy passes, the second is refused.
    let mut replays = Vec::new();
    for i in 0..10 {
        let body = stack.alice.envelope("bob", &format!("status report {i}"));
        let first = stack.post_json("/v1/message", &[], &body);
        assert_eq!(first.status, 200, "{}", first.body);
        replays.push((format!("replay #{i}"), stack.post_json("/v1/message", &[], &body)));
    }

    let mut failures = Vec::new();
    let mut replies: Vec<(String, u16, &str, Reply)> = Vec::new();
    for case in &cases {
        let headers: Vec<(&str, &str)> =
            case.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let reply = stack.send(case.method, "/hostile", &headers, case.body.as_deref());
        let decision = serde_json::from_str::<serde_json::Value>(&reply.body)
            .ok()
            .and_then(|j| j["policy_decision"].as_str().map(str::to_string))
            .unwrap_or_default();
        if (reply.status, decision.as_str()) != (case.status, case.decision) {
            failures.push(format!(
                "{}: got {} {decision:?}, want {} {:?}: {}",
                case.name, reply.status, case.status, case.decision, reply.body
            ));
        }
        replies.push((case.name.clone(), case.status, case.decision, reply));
    }
    for (name, reply) in replays {
        replies.push((name, 403, "replay_detected", reply));
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert!(stack.upstream.seen().len() == 10, "only the 10 first copies reach the upstream");

    // Exactly one record per request, with the reply's decision.
    let records = stack.records();
    assert_eq!(records.len(), replies.len() + 10, "one record per request");
    for (name, status, decision, reply) in &replies {
        let id = reply.json()["message_id"].as_str().unwrap_or_default().to_string();
        let mine: Vec<_> = records.iter().filter(|r| r.message_id == id).collect();
        assert_eq!(mine.len(), 1, "{name}: {} records for message {id:?}", mine.len());
        assert_eq!(
            (mine[0].decision.as_str(), mine[0].http_status),
            (*decision, i64::from(*status)),
            "{name}"
        );
    }
    assert_filter_healthy(&stack);
    // Its record was acknowledged before the reply, so it is there now.
    assert_eq!(stack.records().len(), records.len() + 1);
}
