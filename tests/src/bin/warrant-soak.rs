//! `warrant-soak`: mixed agent traffic through a real Envoy with the filter
//! for a long time, then the figures that show whether anything leaks or
//! breaks. `scripts/soak` builds and runs it; it is not part of
//! `scripts/test`.
//!
//! ```text
//! warrant-soak [--minutes N] [--rate R] [--keep DIR]
//! ```
//!
//! It starts the usual stack (sidecar, Envoy with 2 workers, upstream) and
//! sends, at `R` requests per second (default 100) for `N` minutes
//! (default 10), a rotating mix whose answers are all known in advance:
//! clean envelopes and MCP calls (200), flagged content (200), quarantined
//! (202) and blocked (403) content, a forged signature (403), an
//! unparseable body (400), and a delegated request with a valid chain
//! (200). Every envelope and chain is minted fresh, so none is stale or a
//! replay. Every 30 s it samples each VM's linear memory and Envoy's RSS.
//! At the end it stops everything and runs `warrant-audit verify`.
//!
//! Exit status 0 only if no request got an unexpected answer, the chain
//! verifies with its signatures, and no VM's memory grew by more than a
//! small tolerance between the first sample after warm-up and the last.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use warrant_e2e::agents::Agent;
use warrant_e2e::bench::{self, Client};
use warrant_e2e::stack::{Options, Stack};

/// Growth of a VM's resident linear memory, from the first sample after
/// warm-up to the last, that still counts as flat: V8 and the allocator
/// keep some slack, and one more 64 KiB page or two is not a leak.
const FLAT_TOLERANCE_BYTES: u64 = 1 << 20;
/// How long the warm-up is before the first memory sample that counts.
const WARM_UP: Duration = Duration::from_secs(60);
/// How often memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let (minutes, rate, keep) = parse_args();
    let duration = Duration::from_secs_f64(minutes * 60.0);
    println!("warrant-soak: {minutes} min at {rate} req/s through Envoy (2 workers) with Warrant");
    let stack = Stack::start(Options { dir: keep.clone(), ..Options::default() });
    let pid = stack.envoy.process.pid();
    let mallory = Agent::new("mallory");
    let mut client = Client::new(stack.envoy.port);

    let started = Instant::now();
    let mut next_sample = Duration::ZERO;
    let mut samples: Vec<(f64, Vec<u64>, u64)> = Vec::new();
    let (mut sent, mut unexpected, mut by_status) = (0u64, 0u64, std::collections::BTreeMap::new());
    let interval = Duration::from_secs_f64(1.0 / rate);
    while started.elapsed() < duration {
        let due = interval * u32::try_from(sent).unwrap_or(u32::MAX);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait); // pacing the load, not waiting on a result
        }
        let (request, expected) = request(&stack, &mallory, sent);
        let status = client.send(&request).unwrap_or(0);
        *by_status.entry(status).or_insert(0u64) += 1;
        if status != expected {
            unexpected += 1;
            if unexpected <= 10 {
                eprintln!("warrant-soak: request {sent}: expected {expected}, got {status}");
            }
        }
        sent += 1;
        if started.elapsed() >= next_sample {
            let vms = bench::wasm_memories(pid);
            let rss = bench::rss(pid);
            let at = started.elapsed().as_secs_f64();
            println!(
                "warrant-soak: {at:>5.0} s  {sent} requests, {unexpected} unexpected; VM memory {} MiB; Envoy RSS {:.1} MiB",
                vms.iter().map(|b| format!("{:.2}", mib(*b))).collect::<Vec<_>>().join(" / "),
                mib(rss)
            );
            samples.push((at, vms, rss));
            next_sample += SAMPLE_EVERY;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let records = stack.records().len();
    let evidence = stack.stop();
    let verify = warrant_e2e::sidecar::verify(&evidence.db(), &[]);
    let verify_text = String::from_utf8_lossy(&verify.stdout).to_string();

    // Memory: the first sample after warm-up against the last.
    let warm = samples.iter().find(|(at, _, _)| *at >= WARM_UP.as_secs_f64());
    let last = samples.last();
    let mut flat = true;
    let mut memory_line = String::from("not enough samples (run longer than the warm-up)");
    if let (Some((t0, vms0, rss0)), Some((t1, vms1, rss1))) = (warm, last) {
        flat = vms0.len() == vms1.len()
            && vms0.iter().zip(vms1).all(|(a, b)| b.saturating_sub(*a) <= FLAT_TOLERANCE_BYTES);
        memory_line = format!(
            "VM memory at {t0:.0} s: {} MiB; at {t1:.0} s: {} MiB; Envoy RSS {:.1} -> {:.1} MiB",
            vms0.iter().map(|b| format!("{:.2}", mib(*b))).collect::<Vec<_>>().join(" / "),
            vms1.iter().map(|b| format!("{:.2}", mib(*b))).collect::<Vec<_>>().join(" / "),
            mib(*rss0),
            mib(*rss1)
        );
    }
    let verified = verify.status.code() == Some(0);
    println!("\nwarrant-soak summary");
    println!(
        "  duration        {elapsed:.0} s, {sent} requests ({:.0} req/s)",
        sent as f64 / elapsed
    );
    println!("  answers         {by_status:?}");
    println!("  unexpected      {unexpected}");
    println!("  audit records   {records}");
    println!("  memory          {memory_line} ({})", if flat { "flat" } else { "GREW" });
    println!("  verify          exit {:?}", verify.status.code());
    print!("{verify_text}");
    if let Some(dir) = &keep {
        println!("Evidence kept in {}.", dir.display());
    }
    let ok = unexpected == 0 && verified && flat && records as u64 == sent;
    if records as u64 != sent {
        println!("  MISMATCH: {sent} requests but {records} audit records");
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The `n`-th request of the mix and the status it must get.
fn request(stack: &Stack, mallory: &Agent, n: u64) -> (Vec<u8>, u16) {
    let text = |i: u64| format!("Please summarize the status report number {i} for the team");
    match n % 8 {
        0 => (envelope(&stack.alice, "bob", &text(n), &[]), 200),
        1 => {
            let call = serde_json::json!({"jsonrpc": "2.0", "id": n, "method": "tools/call",
                "params": {"name": "search_docs", "arguments": {"query": text(n)}}});
            (raw("/mcp", &[("x-warrant-agent", "alice")], call.to_string().as_bytes()), 200)
        }
        // Numbered, so two in the same second are two messages, not a
        // replay of one signed envelope.
        2 => {
            let content = format!("capsh --print | grep Current (soak request {n})");
            (envelope(&stack.alice, "bob", &content, &[]), 200)
        }
        3 => {
            let content = format!("insmod /tmp/rootkit.ko (soak request {n})");
            (envelope(&stack.alice, "bob", &content, &[]), 202)
        }
        4 => {
            let content =
                format!("echo /cmd > /sys/fs/cgroup/memory/release_agent (soak request {n})");
            (envelope(&stack.bob, "alice", &content, &[]), 403)
        }
        5 => {
            let mut forged = mallory.envelope("bob", &text(n));
            forged["from"] = "alice".into();
            (raw("/v1/message", &[], forged.to_string().as_bytes()), 403)
        }
        6 => (raw("/v1/message", &[], b"{\"from\": \"alice\", "), 400),
        _ => {
            let chain =
                stack.alice.grant("alice", "bob", &["research-agent"], Duration::from_secs(600));
            let headers = [("x-oktsec-delegation", chain.as_str())];
            (envelope(&stack.bob, "research-agent", &text(n), &headers), 200)
        }
    }
}

fn envelope(agent: &Agent, to: &str, content: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    raw("/v1/message", headers, agent.envelope(to, content).to_string().as_bytes())
}

fn raw(path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: bob.agents.local\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn parse_args() -> (f64, f64, Option<PathBuf>) {
    let (mut minutes, mut rate, mut keep) = (10.0, 100.0, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage(&format!("{arg} needs a value")));
        match arg.as_str() {
            "--minutes" => minutes = value().parse().unwrap_or_else(|_| usage("--minutes N")),
            "--rate" => rate = value().parse().unwrap_or_else(|_| usage("--rate R")),
            "--keep" => keep = Some(PathBuf::from(value())),
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if !(minutes > 0.0 && rate > 0.0) {
        usage("--minutes and --rate must be positive");
    }
    (minutes, rate, keep)
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("warrant-soak: {problem}");
    }
    eprintln!("usage: warrant-soak [--minutes N] [--rate R] [--keep DIR]");
    std::process::exit(2);
}
