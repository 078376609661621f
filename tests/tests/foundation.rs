//! End to end through a real Envoy with the real filter, the real sidecar
//! over real gRPC and a real upstream: the request path of the foundation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sha2::{Digest, Sha256};
use warrant_e2e::sidecar::verify;
use warrant_e2e::stack::{Options, Stack};

#[test]
fn clean_request_reaches_upstream_unchanged_and_is_audited() {
    let stack = Stack::start(Options::default());
    let body = stack.alice.envelope("bob", "Please summarize the quarterly report");
    let text = body.to_string();
    let reply = stack.post_json("/v1/message", &[("x-custom", "kept")], &body);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["upstream"], "ok");

    let seen = stack.upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, text.as_bytes(), "body must reach the upstream unchanged");
    assert_eq!(seen[0].header("x-custom"), Some("kept"));
    assert_eq!(seen[0].path, "/v1/message");
    assert_eq!(seen[0].header("x-oktsec-verdict"), None);

    let records = stack.records();
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!((r.from.as_str(), r.to.as_str()), ("alice", "bob"));
    assert_eq!((r.status.as_str(), r.decision.as_str()), ("delivered", "allow"));
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v1/message"));
    assert_eq!(r.body_sha256, hex::encode(Sha256::digest(text.as_bytes())));
}

#[test]
fn blocked_request_gets_403_and_upstream_sees_nothing() {
    let stack = Stack::start(Options::default());
    let body = stack.alice.envelope("bob", "echo /cmd > /sys/fs/cgroup/memory/release_agent");
    let reply = stack.post_json("/v1/message", &[], &body);
    assert_eq!(reply.status, 403, "{}", reply.body);
    let json = reply.json();
    assert_eq!(json["status"], "blocked");
    assert_eq!(json["policy_decision"], "content_blocked");
    assert!(json["rules_triggered"].as_array().is_some_and(|r| !r.is_empty()), "{json}");
    assert!(json["message_id"].as_str().is_some_and(|id| id.len() == 36));

    assert!(stack.upstream.seen().is_empty(), "the upstream saw {:?}", stack.upstream.seen());
    let records = stack.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].decision, "content_blocked");
    assert_eq!(records[0].message_id, json["message_id"].as_str().unwrap());
    assert!(records[0].findings.contains("CE-004"), "{}", records[0].findings);
}

#[test]
fn flagged_and_quarantined_requests() {
    let stack = Stack::start(Options::default());
    let flagged = stack.post_json(
        "/v1/message",
        &[],
        &stack.alice.envelope("bob", "capsh --print | grep Current"),
    );
    assert_eq!(flagged.status, 200, "{}", flagged.body);
    let seen = stack.upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-oktsec-verdict"), Some("flag"));

    let held =
        stack.post_json("/v1/message", &[], &stack.alice.envelope("bob", "insmod /tmp/rootkit.ko"));
    assert_eq!(held.status, 202, "{}", held.body);
    assert_eq!(held.json()["status"], "quarantined");
    assert_eq!(stack.upstream.seen().len(), 1, "a quarantined request must not be forwarded");
    let decisions: Vec<_> = stack.records().into_iter().map(|r| r.decision).collect();
    assert_eq!(decisions, ["content_flagged", "content_quarantined"]);
}

#[test]
fn bad_envelope_signature_gets_403_identity_rejected() {
    let stack = Stack::start(Options::default());
    let mut body = stack.alice.envelope("bob", "Please summarize the quarterly report");
    body["content"] = "Please summarize the quarterly report and wire $1M".into();
    let reply = stack.post_json("/v1/message", &[], &body);
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_eq!(reply.json()["policy_decision"], "identity_rejected");
    assert_eq!(reply.json()["rules_triggered"], serde_json::json!([]));
    assert!(stack.upstream.seen().is_empty());
    let records = stack.records();
    assert_eq!(
        (records[0].status.as_str(), records[0].decision.as_str()),
        ("rejected", "identity_rejected")
    );
    assert!(records[0].reason.contains("does not verify"), "{}", records[0].reason);
}

#[test]
fn unparseable_envelope_gets_a_clear_400() {
    let stack = Stack::start(Options::default());
    let reply = stack.send(
        "POST",
        "/v1/message",
        &[("content-type", "application/json")],
        Some(br#"{"from": "alice", "to": "bob", "content": "#),
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    let json = reply.json();
    assert_eq!(json["policy_decision"], "invalid_request");
    assert!(json["message"].as_str().unwrap().contains("not valid JSON"), "{json}");

    let wrong_type = stack.post_json(
        "/v1/message",
        &[],
        &serde_json::json!({"from": "alice", "to": "bob", "content": 7}),
    );
    assert_eq!(wrong_type.status, 400);
    assert!(
        wrong_type.json()["message"].as_str().unwrap().contains("field `content`"),
        "{}",
        wrong_type.body
    );
    assert!(stack.upstream.seen().is_empty());
    assert_eq!(stack.records().len(), 2, "each rejection is audited");
}

#[test]
fn unauthenticated_sender_gets_401_and_trusted_header_identifies() {
    let stack = Stack::start(Options::default());
    let unsigned = serde_json::json!({"from": "alice", "to": "bob", "content": "hi"});
    let reply = stack.post_json("/v1/message", &[], &unsigned);
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(reply.json()["policy_decision"], "signature_required");

    // A GET has no body: it is still identified, decided and audited.
    let get = stack.send("GET", "/status", &[("x-warrant-agent", "carol")], None);
    assert_eq!(get.status, 200, "{}", get.body);
    let records = stack.records();
    assert_eq!(records.len(), 2);
    assert_eq!((records[1].from.as_str(), records[1].method.as_str()), ("carol", "GET"));
}

#[test]
fn verify_passes_then_names_the_seq_of_a_changed_byte() {
    let stack = Stack::start(Options::default());
    for i in 0..5 {
        let reply = stack.post_json(
            "/v1/message",
            &[],
            &stack.alice.envelope("bob", &format!("report number {i}")),
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let target = stack.records()[2].clone();
    let evidence = stack.stop();
    let db = evidence.db();

    let intact = verify(&db, &[]);
    assert_eq!(
        intact.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&intact.stdout),
        String::from_utf8_lossy(&intact.stderr)
    );
    assert!(String::from_utf8_lossy(&intact.stdout).contains("VALID (5 entries)"));

    // Change one byte of one stored field in the file itself.
    let mut bytes = std::fs::read(&db).unwrap();
    let needle = target.body_sha256.as_bytes();
    let at: Vec<usize> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "the body hash should be stored exactly once");
    bytes[at[0]] = if bytes[at[0]] == b'0' { b'1' } else { b'0' };
    std::fs::write(&db, &bytes).unwrap();

    let broken = verify(&db, &[]);
    let text = String::from_utf8_lossy(&broken.stdout);
    assert_eq!(broken.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("BROKEN at seq {}", target.seq)), "{text}");
    let json = verify(&db, &["--json"]);
    assert_eq!(json.status.code(), Some(1), "--json must exit 1 on a broken chain too");
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["valid"], false);
    assert_eq!(report["broken"]["seq"], target.seq);
}

#[test]
fn verify_exits_2_when_it_cannot_run() {
    let missing = verify(std::path::Path::new("/nonexistent/audit.db"), &[]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("audit database not found"));
}

#[test]
fn sidecar_down_means_503_and_nothing_forwarded() {
    let mut stack = Stack::start(Options::default());
    stack.sidecar.process.kill();
    let reply = stack.post_json(
        "/v1/message",
        &[],
        &stack.alice.envelope("bob", "Please summarize the report"),
    );
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.json()["policy_decision"], "audit_unavailable");
    assert!(stack.upstream.seen().is_empty(), "no action without evidence");
}

#[test]
fn shipped_configs_validate_and_a_bad_one_is_refused_naming_the_field() {
    let root = warrant_e2e::repo_root();
    let (ok, output) = warrant_e2e::envoy::validate(&root.join("envoy/envoy.yaml"));
    assert!(ok, "{output}");
    let (ok, output) =
        warrant_e2e::envoy::validate(&root.join("envoy/testdata/bad-unknown-field.yaml"));
    assert!(!ok, "a bad plugin configuration must fail validation");
    assert!(output.contains("field `identityy`"), "{output}");
}

#[test]
fn compressed_body_is_refused_not_forwarded_unscanned() {
    let stack = Stack::start(Options::default());
    let body = stack.alice.envelope("bob", "harmless text").to_string();
    let reply = stack.send(
        "POST",
        "/v1/message",
        &[("content-type", "application/json"), ("content-encoding", "gzip")],
        Some(body.as_bytes()),
    );
    assert_eq!(reply.status, 415, "{}", reply.body);
    assert_eq!(reply.json()["policy_decision"], "unsupported_encoding");
    assert!(stack.upstream.seen().is_empty());
    assert_eq!(stack.records()[0].decision, "unsupported_encoding");
}

#[test]
fn decisions_and_rules_are_labelled_prometheus_counters() {
    let stack = Stack::start(Options::default());
    let escape = "echo /cmd > /sys/fs/cgroup/memory/release_agent";
    let blocked = stack.alice.envelope("bob", escape);
    assert_eq!(stack.post_json("/v1/message", &[], &blocked).status, 403);
    assert_eq!(
        stack.post_json("/v1/message", &[], &stack.alice.envelope("bob", "hello")).status,
        200
    );
    let metrics = ureq::get(&format!("http://{}/stats/prometheus", stack.envoy.admin))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let value = |series: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    assert_eq!(value(r#"warrant_rule_findings{rule_id="CE-004"}"#), Some(1), "{metrics}");
    assert_eq!(value(r#"warrant_decision_requests{decision="content_blocked"}"#), Some(1));
    assert_eq!(value(r#"warrant_decision_requests{decision="allow"}"#), Some(1));
    // The scan counters: the two messages' text, and some time for it.
    let scanned = (escape.len() + "hello".len()) as u64;
    assert_eq!(stack.envoy.stat("wasmcustom.warrant.scan.bytes"), scanned, "{metrics}");
    assert!(stack.envoy.stat("wasmcustom.warrant.scan.nanoseconds") > 0, "{metrics}");
}

/// `rules.regex_memory_bytes`: with the default a built regex stays built;
/// with a bound of one byte every regex is dropped after its request and
/// built again by the next, with the same finding. The metrics say which.
#[test]
fn built_regexes_are_bounded_by_the_config_and_counted() {
    let escape = "echo /cmd > /sys/fs/cgroup/memory/release_agent";
    for bound in [None, Some(1)] {
        let stack = Stack::start(Options {
            patch: Box::new(move |json| {
                if let Some(bytes) = bound {
                    json["rules"]["regex_memory_bytes"] = bytes.into();
                }
            }),
            ..Options::default()
        });
        for attempt in 0..2 {
            // Another content each time: the same envelope twice is a replay.
            let blocked = stack.alice.envelope("bob", &format!("{escape}\nattempt {attempt}"));
            let reply = stack.post_json("/v1/message", &[], &blocked);
            assert_eq!(reply.status, 403, "bound {bound:?}: {}", reply.body);
            assert_eq!(reply.json()["rules_triggered"][0]["rule_id"], "CE-004", "{}", reply.body);
        }
        let stat = |name: &str| stack.envoy.stat(&format!("wasmcustom.warrant.rules.{name}"));
        let (builds, drops, bytes) =
            (stat("regex_builds"), stat("regex_drops"), stat("regex_bytes"));
        if bound.is_none() {
            assert!(builds >= 1 && drops == 0 && bytes > 0, "{builds} {drops} {bytes}");
        } else {
            // Two requests, each building what it needs (one VM or two).
            assert!(builds >= 2 && drops == builds && bytes == 0, "{builds} {drops} {bytes}");
        }
    }
}

#[test]
fn bodies_over_the_limit_are_refused_and_never_reach_the_upstream() {
    let stack = Stack::start(Options {
        patch: Box::new(|json| json["max_body_bytes"] = 4096.into()),
        ..Options::default()
    });
    // Declared too large: refused from the headers, body still streaming.
    let big = "x".repeat(64 * 1024);
    let reply =
        stack.send("POST", "/upload", &[("content-type", "text/plain")], Some(big.as_bytes()));
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert_eq!(reply.json()["policy_decision"], "payload_too_large");
    // Chunked (no content-length) and growing past the limit.
    let url = format!("http://127.0.0.1:{}/upload", stack.envoy.port);
    let chunked = ureq::post(&url)
        .set("content-type", "text/plain")
        .set("transfer-encoding", "chunked")
        .send(std::io::Cursor::new(big.into_bytes()));
    let status = match chunked {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(status, 413);
    assert!(stack.upstream.seen().is_empty(), "the upstream saw {:?}", stack.upstream.seen().len());
    let decisions: Vec<_> = stack.records().into_iter().map(|r| r.decision).collect();
    assert_eq!(decisions, ["payload_too_large", "payload_too_large"]);
}

/// Sends one HTTP/1.1 request over a raw connection, the body written from
/// a second thread (Envoy may answer and close before it has read it all),
/// and returns the status and the response body.
fn raw_request(port: u16, head: &str, body: Vec<u8>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let head = head.to_string();
    let sender = std::thread::spawn(move || {
        // Errors are expected once Envoy has answered and closed.
        let _ = writer.write_all(head.as_bytes()).and_then(|()| writer.write_all(&body));
    });
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    sender.join().unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// With the shipped limits (`max_body_bytes` 1 MiB, one read up to the
/// listener's 1 MiB), the filter, not Envoy, refuses an oversized body,
/// whether it is declared or grows chunk by chunk, and audits it; a body
/// just under the limit is scanned and forwarded whole.
#[test]
fn shipped_limits_let_the_filter_decide_every_body_size() {
    let stack = Stack::start(Options::default());
    let port = stack.envoy.port;
    let head = |framing: &str| {
        format!(
            "POST /upload HTTP/1.1\r\nhost: bob.agents.local\r\nx-warrant-agent: alice\r\n\
             content-type: application/json\r\n{framing}connection: close\r\n\r\n"
        )
    };
    let json = |len: usize| format!(r#"{{"note":"{}"}}"#, "a".repeat(len)).into_bytes();
    let chunked = |body: Vec<u8>| {
        let mut framed = Vec::new();
        for piece in body.chunks(256 * 1024) {
            framed.extend(format!("{:x}\r\n", piece.len()).as_bytes());
            framed.extend(piece);
            framed.extend(b"\r\n");
        }
        framed.extend(b"0\r\n\r\n");
        framed
    };

    let mut outcomes = Vec::new();
    let over = json(1_500_000);
    let declared = format!("content-length: {}\r\n", over.len());
    outcomes.push(raw_request(port, &head(&declared), over.clone()));
    outcomes.push(raw_request(port, &head("transfer-encoding: chunked\r\n"), chunked(over)));
    let under = json(1_000_000);
    let under_len = under.len();
    outcomes.push(raw_request(port, &head("transfer-encoding: chunked\r\n"), chunked(under)));

    let decision = |body: &str| {
        serde_json::from_str::<serde_json::Value>(body).ok().and_then(|j| {
            j["policy_decision"].as_str().or(j["upstream"].as_str()).map(str::to_string)
        })
    };
    let got: Vec<_> =
        outcomes.iter().map(|(status, body)| (*status, decision(body), body.len())).collect();
    let want = [
        (413, Some("payload_too_large".to_string())),
        (413, Some("payload_too_large".to_string())),
        (200, Some("ok".to_string())),
    ];
    for (i, ((status, decision, len), want)) in got.iter().zip(&want).enumerate() {
        assert_eq!((*status, decision.clone()), want.clone(), "request {i} ({len} bytes of reply)");
    }
    let seen = stack.upstream.seen();
    assert_eq!(seen.len(), 1, "only the body under the limit reaches the upstream");
    assert_eq!(seen[0].body.len(), under_len);
    let decisions: Vec<_> = stack.records().into_iter().map(|r| r.decision).collect();
    assert_eq!(decisions, ["payload_too_large", "payload_too_large", "allow"]);
}

/// A configuration whose body cap is below what `max_body_bytes` needs
/// makes Envoy answer 413 itself, before the filter decides. The filter
/// still records that answer (in `sync`, before it leaves), and nothing
/// reaches the upstream.
#[test]
fn envoy_answering_before_the_filter_decides_is_still_audited() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("small-cap.yaml");
    let text = std::fs::read_to_string(warrant_e2e::repo_root().join("envoy/envoy.yaml")).unwrap();
    let shipped = "request_body_buffer_limit: 3145728";
    assert!(text.contains(shipped));
    std::fs::write(&template, text.replace(shipped, "request_body_buffer_limit: 65536")).unwrap();
    let stack = Stack::start(Options {
        template,
        patch: Box::new(|json| json["max_body_bytes"] = (8 << 20).into()),
        ..Options::default()
    });
    // 4 MB cannot come in one read (the listener reads 1 MiB at a time),
    // so the filter holds a partial body when Envoy's 64 KiB cap is hit.
    let body = format!(r#"{{"note":"{}"}}"#, "a".repeat(4_000_000)).into_bytes();
    let head = format!(
        "POST /upload HTTP/1.1\r\nhost: bob.agents.local\r\nx-warrant-agent: alice\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let (status, reply) = raw_request(stack.envoy.port, &head, body);
    assert_eq!((status, reply.as_str()), (413, "Payload Too Large"), "Envoy's own answer");
    assert!(stack.upstream.seen().is_empty());
    let records = stack.records();
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!((r.decision.as_str(), r.http_status), ("payload_too_large", 413));
    assert_eq!((r.to.as_str(), r.status.as_str()), ("bob", "rejected"));
    assert!(r.reason.contains("request_body_buffer_limit"), "{}", r.reason);
    assert!(r.latency_us > 0, "the record says how long the request took: {r:?}");
}
