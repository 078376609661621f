//! Times `pipeline::evaluate` on one request, natively or inside V8:
//!
//! ```text
//! cargo run --release -p warrant-core --example evaluate -- POLICY.json REQUEST.http [N] [FLUSH_MIB]
//! cargo build --release --target wasm32-wasip1 -p warrant-core --example evaluate
//! node --no-liftoff --no-wasm-lazy-compilation scripts/wasm-test-runner.mjs \
//!     target/wasm32-wasip1/release/examples/evaluate.wasm POLICY.json REQUEST.http [N] [FLUSH_MIB]
//! ```
//!
//! `POLICY.json` is the filter's plugin configuration; `REQUEST.http` a raw
//! HTTP/1.1 request (head, blank line, body), such as the ones
//! `warrant-bench` sends. It evaluates the request once (building the
//! lazily compiled automata), then `N` more times (default 2000) and prints
//! the mean. With `FLUSH_MIB`, it writes that many MiB of other memory
//! before each timed call (not timed), as a busy Envoy worker does between
//! two requests: the scan then runs with cold caches, which is how it runs
//! under load. On paths a Wasm module can read (under the repository for
//! the Node runner).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Instant;

use warrant_core::config::Policy;
use warrant_core::pipeline::{evaluate, Env};
use warrant_core::request::{HeaderNames, RequestHead};
use warrant_delegation::ChainCache;
use warrant_session::{MemoryStore, SeededRandom};

/// Nanoseconds since the first reading (the scan timing's clock).
fn clock() -> u64 {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    u64::try_from(ORIGIN.get_or_init(Instant::now).elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: evaluate POLICY.json REQUEST.http [N] [FLUSH_MIB]");
        std::process::exit(2);
    }
    let policy = std::fs::read(&args[1]).expect("read the policy");
    let request = std::fs::read(&args[2]).expect("read the request");
    let n: usize = args.get(3).map_or(2000, |s| s.parse().expect("N"));
    let flush_mib: usize = args.get(4).map_or(0, |s| s.parse().expect("FLUSH_MIB"));

    let split = request.windows(4).position(|w| w == b"\r\n\r\n").expect("a blank line");
    let head = std::str::from_utf8(&request[..split]).expect("an ASCII head");
    let body = &request[split + 4..];
    let mut lines = head.split("\r\n");
    let mut start = lines.next().expect("a request line").split(' ');
    let mut headers = vec![
        (":method".to_string(), start.next().unwrap_or("POST").to_string()),
        (":path".to_string(), start.next().unwrap_or("/").to_string()),
    ];
    for line in lines {
        let (name, value) = line.split_once(':').expect("name: value");
        let name = name.trim().to_ascii_lowercase();
        let name = if name == "host" { ":authority".to_string() } else { name };
        headers.push((name, value.trim().to_string()));
    }

    let t = Instant::now();
    let policy = Policy::from_json(&policy).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("Policy::from_json: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    linear_memory("with the policy");
    let names = HeaderNames {
        identity: &policy.config.identity.header,
        delegation: &policy.config.delegation.header,
        session: &policy.config.sessions.header,
    };
    let store = MemoryStore::new();
    let mut random = SeededRandom::new(1);
    let mut chains = ChainCache::new(warrant_delegation::config::DEFAULT_CACHE_ENTRIES);
    let mut env = Env { store: &store, random: &mut random, chains: &mut chains, clock };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    let mut head =
        RequestHead::from_headers(headers.iter().map(|(n, v)| (n.as_str(), v.as_str())), &names);
    head.received_at_unix_nanos = now;

    let t = Instant::now();
    let first = evaluate(&policy, &mut env, &head, body, "m-0", now);
    let first_ms = t.elapsed().as_secs_f64() * 1e3;
    eprintln!(
        "decision: {} ({}); first call {first_ms:.1} ms",
        first.decision.code(),
        first.message
    );
    linear_memory("after the first call");

    let mut other = vec![0u8; flush_mib << 20];
    let mut timed = 0.0;
    for i in 0..n {
        for byte in other.iter_mut().step_by(64) {
            *byte = byte.wrapping_add(1);
        }
        std::hint::black_box(&other);
        let id = format!("m-{}", i + 1);
        let t = Instant::now();
        let outcome = evaluate(&policy, &mut env, &head, body, &id, now);
        timed += t.elapsed().as_secs_f64();
        std::hint::black_box(outcome);
    }
    println!(
        "evaluate: {:.2} µs a request (mean of {n}; {flush_mib} MiB written between calls)",
        timed * 1e6 / n.max(1) as f64
    );
    linear_memory("after the timed calls");
}

/// Inside V8: the linear memory the module has grown to (it never
/// shrinks; the request and the driver's buffers included).
fn linear_memory(when: &str) {
    #[cfg(target_arch = "wasm32")]
    eprintln!(
        "linear memory {when}: {:.1} MiB",
        (core::arch::wasm32::memory_size(0) << 16) as f64 / (1024.0 * 1024.0)
    );
    #[cfg(not(target_arch = "wasm32"))]
    let _ = when;
}
