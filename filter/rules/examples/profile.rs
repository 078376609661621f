//! A small driver for profiling the engine with the full library under
//! `valgrind --tool=callgrind` or `perf stat` (instruction counts are
//! repeatable on a shared machine, wall-clock time is not).
//!
//! ```text
//! cargo build --release -p warrant-rules --example profile
//! valgrind --tool=callgrind --toggle-collect=profile::scan_all \
//!     target/release/examples/profile mixed 65536 10
//! ```
//!
//! Arguments: body kind (`mixed`: the benchmark's traffic lines as a
//! message; `mcp`: a `tools/call` arguments JSON of prose; `prose`: envelope
//! prose as a message; `hostile`: every library example, each followed by
//! random non-ASCII text, made to build most regexes and grow their caches), body size in bytes, scans, `lazy` to build
//! automata on first use as a VM does (else all are built first; any other
//! word, such as `eager`, does that), and optionally a number of MiB of
//! other memory to write before each scan, as a busy worker does between
//! two requests: those scans (timed one by one, the writing not timed) run
//! with cold caches; and `examples` as a sixth argument to scan every
//! example of the library once before, which builds nearly every pattern's
//! regex (within `rules.regex_memory_bytes`).
//!
//! `WARRANT_REGEX_MEMORY=BYTES` sets `rules.regex_memory_bytes`.
//!
//! It also builds for `wasm32-wasip1`, to run inside V8 with Node's WASI,
//! with Envoy's V8 flags `--no-liftoff --no-wasm-lazy-compilation` (see
//! `rules/README.md`, Performance). It prints the
//! findings of one scan, so a change that alters results shows.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::hint::black_box;

use warrant_rules::{ContentKind, ContentPart, Engine, RulesConfig};

#[path = "../benches/support/bodies.rs"]
mod bodies;

#[inline(never)]
fn scan_all(engine: &Engine, kind: ContentKind, text: &str, scans: usize) -> usize {
    let mut total = 0;
    for _ in 0..scans {
        let parts = [ContentPart { kind, text }];
        total += black_box(engine.evaluate(black_box(&parts), "bench-agent")).findings.len();
    }
    total
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map_or("mixed", String::as_str);
    let size: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64 << 10);
    let scans: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10);
    let (kind, text) = match what {
        "mixed" => (ContentKind::Message, bodies::mixed(size)),
        "mcp" => (ContentKind::ToolArguments, bodies::mcp_arguments(size, 7)),
        "prose" => (ContentKind::Message, bodies::prose(size, 7)),
        "hostile" => (ContentKind::Message, hostile(size)),
        other => panic!("unknown body kind {other}: mixed, mcp, prose or hostile"),
    };
    let started = std::time::Instant::now();
    let mut config = RulesConfig::default();
    // WARRANT_REGEX_MEMORY: `rules.regex_memory_bytes` other than the default.
    if let Some(bytes) = std::env::var("WARRANT_REGEX_MEMORY").ok().and_then(|v| v.parse().ok()) {
        config.regex_memory_bytes = bytes;
    }
    let engine = Engine::new(&config).expect("library compiles");
    eprintln!(
        "Engine::new: {:.1} ms; prefilter {} literals, {:.1} MiB",
        started.elapsed().as_secs_f64() * 1e3,
        engine.report().literals,
        engine.report().prefilter_bytes as f64 / (1024.0 * 1024.0)
    );
    // `lazy`: build automata on first use, as a VM does.
    if args.get(4).map(String::as_str) != Some("lazy") {
        engine.compile_all().expect("library builds");
    }
    linear_memory("with the engine built");
    // `examples` as the sixth argument: every example of the library
    // scanned once first, one text at a time, as `warrant-bench` step 4d
    // sends them (nearly every pattern becomes a candidate).
    if args.get(6).map(String::as_str) == Some("examples") {
        let rules = warrant_rules::builtin_rules().expect("library parses");
        for rule in &rules {
            for text in rule.examples.all() {
                black_box(
                    engine.evaluate(&[ContentPart { kind: ContentKind::Message, text }], "a"),
                );
            }
        }
        linear_memory("after every example of the library");
    }
    let parts = [ContentPart { kind, text: &text }];
    let evaluation = engine.evaluate(&parts, "bench-agent");
    linear_memory("after one scan");
    println!("{what} {} bytes: verdict {:?}", text.len(), evaluation.verdict);
    for f in &evaluation.findings {
        println!("  {} line {} {:?}", f.rule_id, f.line, f.matched);
    }
    let started = std::time::Instant::now();
    let total = scan_all(&engine, kind, &text, scans);
    let seconds = started.elapsed().as_secs_f64() / scans.max(1) as f64;
    println!(
        "{scans} scans, {total} findings, {:.3} ms per scan, {:.1} MB/s",
        seconds * 1e3,
        text.len() as f64 / seconds / 1e6
    );
    let flush_mib: usize = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(0);
    if flush_mib > 0 {
        let mut other = vec![0u8; flush_mib << 20];
        let mut cold = std::time::Duration::ZERO;
        for round in 0..scans {
            other.fill(round as u8);
            black_box(&other);
            let started = std::time::Instant::now();
            let parts = [ContentPart { kind, text: &text }];
            black_box(engine.evaluate(black_box(&parts), "bench-agent"));
            cold += started.elapsed();
        }
        let seconds = cold.as_secs_f64() / scans.max(1) as f64;
        println!(
            "cold caches ({flush_mib} MiB written before each scan): {:.3} ms per scan, {:.1} MB/s",
            seconds * 1e3,
            text.len() as f64 / seconds / 1e6
        );
    }
    linear_memory("after the scans");
    let regexes = engine.regex_memory();
    println!(
        "regexes: {:.2} MiB built now, {} builds, {} drops",
        regexes.bytes as f64 / (1024.0 * 1024.0),
        regexes.builds,
        regexes.drops
    );
}

/// A body made to grow the regexes' lazy DFA caches: every example of the
/// library (so nearly every pattern is a candidate), each followed on the
/// same line by 300 pseudo-random characters from several scripts, to
/// `size` bytes.
fn hostile(size: usize) -> String {
    let rules = warrant_rules::builtin_rules().expect("library parses");
    let examples: Vec<&String> = rules.iter().flat_map(|r| r.examples.all()).collect();
    let ranges = [(0x00c0u32, 0x024f), (0x0370, 0x03ff), (0x0400, 0x04ff), (0x4e00, 0x9fff)];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut text = String::with_capacity(size + 4096);
    'fill: loop {
        for example in &examples {
            text.push_str(&example.replace('\n', " "));
            for _ in 0..300 {
                let (lo, hi) = ranges[(next() % 4) as usize];
                let c = char::from_u32(lo + (next() % u64::from(hi - lo)) as u32).unwrap_or(' ');
                text.push(c);
                if next() % 7 == 0 {
                    text.push(' ');
                }
            }
            text.push(' ');
            if text.len() >= size {
                break 'fill;
            }
        }
    }
    text
}

/// Inside V8: the linear memory the module has grown to (it never
/// shrinks), the body and the driver's copies of it included.
fn linear_memory(when: &str) {
    #[cfg(target_arch = "wasm32")]
    println!(
        "linear memory {when}: {:.1} MiB",
        (core::arch::wasm32::memory_size(0) << 16) as f64 / (1024.0 * 1024.0)
    );
    #[cfg(not(target_arch = "wasm32"))]
    let _ = when;
}
