//! Audit delivery and failures, with real processes: the sidecar killed
//! (SIGKILL), frozen (SIGSTOP) and restarted on its port with its database
//! and keys; Envoy killed and restarted; in both `audit.mode`s.
//!
//! The guarantee checked throughout: in `sync` mode every request that got
//! an answer other than 503 has its record in the chain, whatever crashed;
//! in `async` mode requests go on while the sidecar is away and their
//! records arrive once it is back, or a gap record says how many were lost.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};
use warrant_e2e::agents::Agent;
use warrant_e2e::envoy::Envoy;
use warrant_e2e::sidecar::verify;
use warrant_e2e::stack::{Options, Stack};
use warrant_e2e::wait;

/// A stack in `mode`, with `patch` applied after it.
fn stack_in(mode: &str, concurrency: u32, patch: fn(&mut serde_json::Value)) -> Stack {
    let mode = mode.to_string();
    Stack::start(Options {
        concurrency,
        patch: Box::new(move |json| {
            json["audit"]["mode"] = mode.clone().into();
            patch(json);
        }),
        ..Options::default()
    })
}

/// POSTs `body` to Envoy on `port`: the status and body, or `None` when
/// no answer came (connection refused or reset).
fn post(port: u16, body: &str) -> Option<(u16, String)> {
    let url = format!("http://127.0.0.1:{port}/v1/message");
    let result = ureq::post(&url)
        .timeout(Duration::from_secs(20))
        .set("content-type", "application/json")
        .send_string(body);
    let response = match result {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(_) => return None,
    };
    let status = response.status();
    Some((status, response.into_string().unwrap_or_default()))
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn body_hashes(stack: &Stack) -> HashSet<String> {
    stack.records().into_iter().map(|r| r.body_sha256).collect()
}

fn assert_chain_verifies(stack: &Stack) {
    let out = verify(&stack.db(), &[]);
    assert!(
        out.status.success(),
        "verify failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends requests with unique bodies from `threads` threads until
/// stopped, to whatever port `port` holds; collects (body hash, status)
/// of every answered request.
struct Load {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<(String, u16)>>>,
    /// Status and body of every answer other than 200.
    others: Arc<Mutex<Vec<(u16, String)>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(agent: &Agent, port: Arc<AtomicU16>, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let others = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|t| {
                let (stop, answers, port) = (stop.clone(), answers.clone(), port.clone());
                let others = others.clone();
                let agent = agent.clone();
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let text = agent.envelope("bob", &format!("load {t}-{n}")).to_string();
                        if let Some((status, body)) = post(port.load(Ordering::Relaxed), &text) {
                            answers.lock().unwrap().push((sha256_hex(&text), status));
                            if status != 200 {
                                others.lock().unwrap().push((status, body));
                            }
                        }
                    }
                })
            })
            .collect();
        Load { stop, answers, others, threads }
    }

    /// Answers with `status` so far.
    fn count(&self, status: u16) -> usize {
        self.answers.lock().unwrap().iter().filter(|(_, s)| *s == status).count()
    }

    /// Waits until `more` further answers with `status` came.
    fn wait_for(&self, status: u16, more: usize, what: &str) {
        let target = self.count(status) + more;
        wait::until(Duration::from_secs(30), what, || (self.count(status) >= target).then_some(()));
    }

    fn finish(self) -> Vec<(String, u16)> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
        Arc::try_unwrap(self.answers).unwrap().into_inner().unwrap()
    }
}

/// Kills the sidecar, then kills Envoy and starts it again: Envoy starts
/// while the sidecar is down.
fn start_envoy_with_the_sidecar_down(stack: &mut Stack, concurrency: u32) {
    stack.sidecar.kill();
    stack.envoy.process.kill();
    stack.envoy = Envoy::start(&stack.dir.join("envoy.yaml"), &stack.dir, concurrency);
}

/// Every answer other than 503 has its record in the chain.
fn assert_every_answered_request_is_recorded(stack: &Stack, answers: &[(String, u16)]) {
    let stored = body_hashes(stack);
    let missing: Vec<_> =
        answers.iter().filter(|(sha, status)| *status != 503 && !stored.contains(sha)).collect();
    assert!(missing.is_empty(), "answered without a record: {missing:?}");
    let forwarded = answers.iter().filter(|(_, s)| *s == 200).count();
    assert!(forwarded > 0, "no request went through: {answers:?}");
}

#[test]
fn sync_sidecar_down_answers_503_and_the_upstream_sees_nothing() {
    let mut stack = stack_in("sync", 2, |_| {});
    start_envoy_with_the_sidecar_down(&mut stack, 2);

    let reply = stack.post_json("/v1/message", &[], &stack.alice.envelope("bob", "while down"));
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.json()["policy_decision"], "audit_unavailable");
    assert!(stack.upstream.seen().is_empty(), "the upstream saw {:?}", stack.upstream.seen());

    stack.sidecar.restart();
    let text = stack.alice.envelope("bob", "after the restart").to_string();
    wait::until(Duration::from_secs(30), "a 200 once the sidecar is back", || {
        post(stack.envoy.port, &text).filter(|(status, _)| *status == 200)
    });
    let records = stack.records();
    assert!(records.iter().all(|r| r.decision == "allow"), "{records:?}");
    assert!(body_hashes(&stack).contains(&sha256_hex(&text)));
    assert!(!body_hashes(&stack).is_empty());
    assert_chain_verifies(&stack);
}

/// A gRPC server posing as the sidecar: it answers every call with
/// `grpc-status: 13` and a `grpc-message` whose bytes are not UTF-8 (an
/// HTTP/2 field value may hold bytes 0x80-0xFF), as a server that is not
/// Warrant's, or a broken proxy in front of it, may. Stopped on drop.
struct RefusingGrpc {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// The refusal's message: "refused " and two bytes that are not UTF-8.
const REFUSAL: &[u8] = b"refused \xff\xfe";

impl RefusingGrpc {
    fn start() -> RefusingGrpc {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let serve = async {
                    loop {
                        let Ok((socket, _)) = listener.accept().await else { continue };
                        tokio::spawn(RefusingGrpc::connection(socket));
                    }
                };
                tokio::select! {
                    () = serve => {}
                    _ = stopped => {}
                }
            });
        });
        RefusingGrpc { port, stop: Some(stop), thread: Some(thread) }
    }

    /// Serves one HTTP/2 connection: every stream gets the refusal.
    async fn connection(socket: tokio::net::TcpStream) {
        let Ok(mut connection) = h2::server::handshake(socket).await else { return };
        while let Some(Ok((request, respond))) = connection.accept().await {
            tokio::spawn(RefusingGrpc::refuse(request, respond));
        }
    }

    /// Reads the call to its end, then answers it with the refusal.
    async fn refuse(
        request: http::Request<h2::RecvStream>,
        mut respond: h2::server::SendResponse<bytes::Bytes>,
    ) {
        let mut body = request.into_body();
        while let Some(Ok(chunk)) = body.data().await {
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        let head = http::Response::builder()
            .status(200)
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        let Ok(mut stream) = respond.send_response(head, false) else { return };
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("13"));
        trailers.insert("grpc-message", http::HeaderValue::from_bytes(REFUSAL).unwrap());
        let _ = stream.send_trailers(trailers);
    }
}

impl Drop for RefusingGrpc {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn sync_a_refusal_whose_message_is_not_utf8_answers_503_and_the_filter_lives_on() {
    let mut stack = stack_in("sync", 1, |_| {});
    let refusing = RefusingGrpc::start();
    // Envoy again, its audit cluster on the refusing server.
    stack.envoy.process.kill();
    let config = stack.dir.join("envoy.yaml");
    let keys = serde_json::json!({
        "alice": stack.alice.public_base64(),
        "bob": stack.bob.public_base64(),
    });
    warrant_e2e::envoy::render(
        &warrant_e2e::repo_root().join("envoy/envoy.yaml"),
        &config,
        warrant_e2e::envoy::Ports { audit: refusing.port, upstream: stack.upstream.port() },
        &|json| {
            json["keys"] = keys.clone();
            json["audit"]["mode"] = "sync".into();
        },
    );
    stack.envoy = Envoy::start(&config, &stack.dir, 1);

    // Twice on the one worker: the second request finds the VM alive.
    for text in ["first", "second"] {
        let reply = stack.post_json("/v1/message", &[], &stack.alice.envelope("bob", text));
        assert_eq!(reply.status, 503, "{text}: {}", reply.body);
        assert_eq!(reply.json()["policy_decision"], "audit_unavailable", "{text}");
    }
    assert!(stack.upstream.seen().is_empty(), "the upstream saw {:?}", stack.upstream.seen());
    stack.envoy.assert_no_vm_failure();
    // The refusal's message reached the filter, its bad bytes replaced
    // (Envoy writes its log file every few seconds).
    let line = "audit sidecar refused the record: grpc status 13: refused \u{fffd}\u{fffd}";
    wait::until(Duration::from_secs(30), "both refusals in Envoy's log", || {
        (stack.envoy.log().matches(line).count() == 2).then_some(())
    });
}

#[test]
fn sync_frozen_sidecar_answers_503_until_it_continues() {
    let stack = stack_in("sync", 2, |json| json["audit"]["timeout_ms"] = 300.into());
    stack.sidecar.process.signal("STOP");

    let reply = stack.post_json("/v1/message", &[], &stack.alice.envelope("bob", "frozen"));
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.json()["policy_decision"], "audit_unavailable");
    assert!(stack.upstream.seen().is_empty(), "the upstream saw {:?}", stack.upstream.seen());

    stack.sidecar.process.signal("CONT");
    let text = stack.alice.envelope("bob", "thawed").to_string();
    wait::until(Duration::from_secs(30), "a 200 once the sidecar continues", || {
        post(stack.envoy.port, &text).filter(|(status, _)| *status == 200)
    });
    assert!(body_hashes(&stack).contains(&sha256_hex(&text)));
    assert_eq!(stack.upstream.seen().len(), 1);
    assert_chain_verifies(&stack);
}

#[test]
fn async_frozen_sidecar_holds_no_request_and_gets_the_records_after() {
    let stack = stack_in("async", 2, |json| json["audit"]["timeout_ms"] = 300.into());
    stack.sidecar.process.signal("STOP");

    let mut sent = Vec::new();
    for n in 0..4 {
        let text = stack.alice.envelope("bob", &format!("frozen {n}")).to_string();
        let (status, body) = post(stack.envoy.port, &text).expect("an answer");
        assert_eq!(status, 200, "{body}");
        sent.push(sha256_hex(&text));
    }
    assert_eq!(stack.upstream.seen().len(), 4);

    stack.sidecar.process.signal("CONT");
    wait::until(Duration::from_secs(10), "the buffered records", || {
        let stored = body_hashes(&stack);
        sent.iter().all(|sha| stored.contains(sha)).then_some(())
    });
    assert_eq!(stack.records().len(), 4, "each record once");
    assert_chain_verifies(&stack);
}

#[test]
fn async_requests_go_on_while_the_sidecar_is_down_and_their_records_follow() {
    let mut stack = stack_in("async", 2, |_| {});
    start_envoy_with_the_sidecar_down(&mut stack, 2);

    let mut sent = Vec::new();
    for n in 0..6 {
        let text = stack.alice.envelope("bob", &format!("async {n}")).to_string();
        let (status, body) = post(stack.envoy.port, &text).expect("an answer");
        assert_eq!(status, 200, "{body}");
        sent.push(sha256_hex(&text));
    }
    assert_eq!(stack.upstream.seen().len(), 6, "forwarded without waiting for the sidecar");
    // A refusal does not wait either, and is not forwarded.
    let blocked =
        stack.alice.envelope("bob", "echo /cmd > /sys/fs/cgroup/memory/release_agent").to_string();
    let (status, body) = post(stack.envoy.port, &blocked).expect("an answer");
    assert_eq!(status, 403, "{body}");
    sent.push(sha256_hex(&blocked));
    assert_eq!(stack.upstream.seen().len(), 6);
    assert!(stack.records().is_empty());
    assert_eq!(stack.envoy.stat("wasmcustom.warrant.audit.buffered"), 7);

    // Nothing else is sent: the filter's retries deliver them.
    stack.sidecar.restart();
    wait::until(Duration::from_secs(10), "the buffered records", || {
        let stored = body_hashes(&stack);
        sent.iter().all(|sha| stored.contains(sha)).then_some(())
    });
    let records = stack.records();
    assert_eq!(records.len(), 7, "each record once: {records:?}");
    let blocked = records.iter().filter(|r| r.decision == "content_blocked").count();
    let allowed = records.iter().filter(|r| r.decision == "allow").count();
    assert_eq!((allowed, blocked), (6, 1), "{records:?}");
    wait::until(Duration::from_secs(10), "an empty buffer", || {
        (stack.envoy.stat("wasmcustom.warrant.audit.buffered") == 0).then_some(())
    });
    assert_eq!(stack.envoy.stat("wasmcustom.warrant.audit.dropped"), 0);
    assert_chain_verifies(&stack);
}

#[test]
fn async_overflow_is_counted_and_recorded_as_a_gap() {
    // One worker, so one buffer of two records takes every request.
    let mut stack = stack_in("async", 1, |json| json["audit"]["buffer_records"] = 2.into());
    stack.sidecar.kill();

    let mut sent = Vec::new();
    for n in 0..6 {
        let text = stack.alice.envelope("bob", &format!("overflow {n}")).to_string();
        let (status, body) = post(stack.envoy.port, &text).expect("an answer");
        assert_eq!(status, 200, "{body}");
        sent.push(sha256_hex(&text));
    }
    assert_eq!(stack.envoy.stat("wasmcustom.warrant.audit.dropped"), 4);
    assert_eq!(stack.envoy.stat("wasmcustom.warrant.audit.buffered"), 2);

    stack.sidecar.restart();
    let gap = wait::until(Duration::from_secs(10), "the gap record", || {
        stack.records().into_iter().find(|r| r.decision == "audit_gap")
    });
    assert_eq!(gap.status, "error");
    assert!(gap.notes.contains("dropped=4"), "{gap:?}");
    assert!(gap.reason.starts_with("4 audit records dropped"), "{gap:?}");
    // The first two were kept and arrive too; the other four are the gap.
    wait::until(Duration::from_secs(10), "the two kept records", || {
        let stored = body_hashes(&stack);
        sent[..2].iter().all(|sha| stored.contains(sha)).then_some(())
    });
    let stored = body_hashes(&stack);
    assert!(sent[2..].iter().all(|sha| !stored.contains(sha)));
    assert_eq!(stack.records().len(), 3);
    assert_chain_verifies(&stack);
}

#[test]
fn sidecar_killed_under_load_loses_no_acknowledged_record() {
    sidecar_killed_under_load(stack_in("sync", 2, |_| {}));
}

/// The same with `serve --synchronous normal`: commits are not fsynced, but
/// a crash of the sidecar alone loses nothing acknowledged either (the
/// operating system still has what was written).
#[test]
fn sidecar_killed_under_load_loses_nothing_with_synchronous_normal() {
    let stack = Stack::start(Options {
        sidecar_flags: vec!["--synchronous".into(), "normal".into()],
        ..Options::default()
    });
    assert!(
        std::fs::read_to_string(&stack.sidecar.log).unwrap().contains("durability=Normal"),
        "the sidecar runs with synchronous = NORMAL"
    );
    sidecar_killed_under_load(stack);
}

fn sidecar_killed_under_load(mut stack: Stack) {
    let port = Arc::new(AtomicU16::new(stack.envoy.port));
    let load = Load::start(&stack.alice, port, 3);

    for round in 1..=3 {
        load.wait_for(200, 10, &format!("round {round}: requests through"));
        stack.sidecar.kill();
        load.wait_for(503, 1, &format!("round {round}: a 503 while the sidecar is down"));
        stack.sidecar.restart();
    }
    load.wait_for(200, 10, "requests through after the last restart");
    let answers = load.finish();

    assert_every_answered_request_is_recorded(&stack, &answers);
    let seqs: Vec<i64> = stack.records().iter().map(|r| r.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "the chain continues across restarts, no holes: {seqs:?}"
    );
    assert_chain_verifies(&stack);
}

#[test]
fn async_sidecar_killed_under_load_every_record_arrives_or_is_in_a_gap() {
    let mut stack = stack_in("async", 2, |json| json["audit"]["buffer_records"] = 64.into());
    let port = Arc::new(AtomicU16::new(stack.envoy.port));
    let load = Load::start(&stack.alice, port, 3);

    for round in 1..=3 {
        load.wait_for(200, 20, &format!("round {round}: requests through"));
        stack.sidecar.kill();
        load.wait_for(200, 20, &format!("round {round}: requests through, sidecar down"));
        stack.sidecar.restart();
    }
    load.wait_for(200, 20, "requests through after the last restart");
    let others = load.others.lock().unwrap().clone();
    let answers = load.finish();
    // The filter never refuses a clean request in async mode, sidecar or
    // not: no answer is one of Warrant's (a JSON body naming a decision).
    // Envoy's own errors about the upstream (a test server on a loaded
    // machine) are not the filter's; their requests were forwarded and
    // have records like the others.
    let refusals: Vec<&(u16, String)> =
        others.iter().filter(|(_, body)| body.contains("policy_decision")).collect();
    assert!(refusals.is_empty(), "async refused clean requests: {refusals:?}");
    if !others.is_empty() {
        eprintln!("answers from Envoy, not the filter: {others:?}");
    }

    // Each answered request has its record, or is counted in a gap record.
    let dropped = stack.envoy.stat("wasmcustom.warrant.audit.dropped");
    let missing = || {
        let stored = body_hashes(&stack);
        answers.iter().filter(|(sha, _)| !stored.contains(sha)).count() as u64
    };
    let gaps = || -> u64 {
        let notes = stack.records().into_iter().filter(|r| r.decision == "audit_gap");
        notes
            .filter_map(|r| {
                let start = r.notes.find("dropped=")? + "dropped=".len();
                let digits: String =
                    r.notes[start..].chars().take_while(char::is_ascii_digit).collect();
                digits.parse::<u64>().ok()
            })
            .sum()
    };
    wait::until(Duration::from_secs(20), "every record or its gap", || {
        (missing() == dropped && gaps() == dropped).then_some(())
    });
    let seqs: Vec<i64> = stack.records().iter().map(|r| r.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert_chain_verifies(&stack);
}

#[test]
fn envoy_killed_under_load_loses_no_acknowledged_record() {
    let mut stack = stack_in("sync", 2, |_| {});
    let port = Arc::new(AtomicU16::new(stack.envoy.port));
    let load = Load::start(&stack.alice, port.clone(), 3);

    for round in 1..=2 {
        load.wait_for(200, 10, &format!("round {round}: requests through"));
        stack.envoy.process.kill();
        stack.envoy = Envoy::start(&stack.dir.join("envoy.yaml"), &stack.dir, 2);
        port.store(stack.envoy.port, Ordering::Relaxed);
    }
    load.wait_for(200, 10, "requests through the last Envoy");
    let answers = load.finish();

    assert_every_answered_request_is_recorded(&stack, &answers);
    assert_chain_verifies(&stack);
}
