//! Scanning speed of the engine with the full built-in library, against a
//! naive `RegexSet` and a naive per-rule loop over the same bodies.
//!
//! Run with `cargo bench -p warrant-rules --bench scan`. Before the Criterion
//! groups it prints a summary table (compile time, MB/s per body size, the
//! ratios to the naive engines) and checks linearity: the run fails if a
//! body takes more than twice its linear projection from the next smaller
//! size (issue 5). The bodies are realistic agent traffic: prose, Markdown,
//! JSON, logs, shell and code, generated deterministically.

// A benchmark that cannot load the library has nothing to measure: failing
// loudly is right here.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use warrant_rules::{builtin_rules, ContentKind, ContentPart, Engine, PatternKind, RulesConfig};

const SIZES: [(&str, usize); 3] = [("1KiB", 1 << 10), ("64KiB", 64 << 10), ("1MiB", 1 << 20)];

/// A naive `RegexSet` at 1 MiB would take about a minute per scan (it is
/// already seconds at 64 KiB on the reference machine), so it is measured up
/// to 64 KiB only.
const REGEXSET_MAX: usize = 64 << 10;

#[path = "support/bodies.rs"]
mod bodies;

/// Ordinary agent traffic of `size` bytes ([`bodies::mixed`]).
fn body(size: usize) -> String {
    bodies::mixed(size)
}

/// Every pattern of the library as `regex` source (`contains` escaped).
fn sources() -> Vec<String> {
    let rules = builtin_rules().expect("library parses");
    rules
        .iter()
        .flat_map(|r| r.patterns.iter())
        .map(|p| match p.kind {
            PatternKind::Regex => p.value.clone(),
            PatternKind::Contains => format!("(?i){}", regex::escape(&p.value)),
        })
        .collect()
}

/// All patterns in one `RegexSet`. Its NFA size limit is raised so that it
/// builds at all (the default 10 MiB refuses it); the lazy DFA cache keeps
/// its default size, as a naive user would have it.
fn naive_set(sources: &[String]) -> regex::RegexSet {
    regex::RegexSetBuilder::new(sources).size_limit(1 << 30).build().expect("set compiles")
}

/// One regex per rule pattern, run over the whole text.
struct PerRuleLoop(Vec<regex::Regex>);

impl PerRuleLoop {
    fn new(sources: &[String]) -> PerRuleLoop {
        let build = |s: &String| regex::RegexBuilder::new(s).size_limit(1 << 30).build();
        PerRuleLoop(sources.iter().map(|s| build(s).expect("pattern compiles")).collect())
    }

    fn scan(&self, text: &str) -> usize {
        self.0.iter().filter(|r| r.is_match(text)).count()
    }
}

fn engine_scan(engine: &Engine, text: &str) -> usize {
    let parts = [ContentPart { kind: ContentKind::Message, text }];
    engine.evaluate(&parts, "bench-agent").findings.len()
}

/// Mean seconds per call over at least `min_time`.
fn time(min_time: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut runs = 0u32;
    while start.elapsed() < min_time || runs < 3 {
        f();
        runs += 1;
    }
    start.elapsed().as_secs_f64() / f64::from(runs)
}

fn mb_per_s(bytes: usize, seconds: f64) -> f64 {
    bytes as f64 / seconds / 1e6
}

/// The summary table and the linearity check.
fn summary() {
    let started = Instant::now();
    let engine = Engine::new(&RulesConfig::default()).expect("library compiles");
    let compile = started.elapsed();
    let started = Instant::now();
    let fresh = Engine::new(&RulesConfig::default()).expect("library compiles");
    fresh.compile_all().expect("library builds");
    let compile_all = started.elapsed();
    let report = engine.report();
    println!(
        "\nlibrary: {} rules, {} patterns, {} literals, {} unfiltered",
        report.rules,
        report.patterns,
        report.literals,
        report.unfiltered.len(),
    );
    println!(
        "Engine::new {:.1} ms (automata built on first use); with every automaton built {:.1} ms",
        compile.as_secs_f64() * 1e3,
        compile_all.as_secs_f64() * 1e3
    );
    let sources = sources();
    let started = Instant::now();
    let set = naive_set(&sources);
    println!("naive RegexSet compiled in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
    let per_rule = PerRuleLoop::new(&sources);

    println!("\n| body | engine MB/s | per-rule loop MB/s | RegexSet MB/s | engine vs loop | engine vs set |");
    println!("|---|---|---|---|---|---|");
    let mut previous: Option<(usize, f64)> = None;
    let mut failures = Vec::new();
    for (name, size) in SIZES {
        let text = body(size);
        let min_time = Duration::from_millis(500);
        let engine_s = time(min_time, || {
            black_box(engine_scan(&engine, &text));
        });
        let loop_s = time(min_time, || {
            black_box(per_rule.scan(&text));
        });
        let set_s = (size <= REGEXSET_MAX).then(|| {
            time(Duration::from_millis(1), || {
                black_box(set.matches(&text).len());
            })
        });
        let set_text = set_s.map_or("not run".to_string(), |s| format!("{:.1}", mb_per_s(size, s)));
        let set_ratio = set_s.map_or("-".to_string(), |s| format!("{:.1}x", s / engine_s));
        println!(
            "| {name} | {:.1} | {:.1} | {set_text} | {:.1}x | {set_ratio} |",
            mb_per_s(size, engine_s),
            mb_per_s(size, loop_s),
            loop_s / engine_s,
        );
        if let Some((previous_size, previous_s)) = previous {
            let projection = previous_s * size as f64 / previous_size as f64;
            if engine_s > 2.0 * projection {
                failures.push(format!(
                    "{name}: {:.2} ms, more than twice the linear projection {:.2} ms",
                    engine_s * 1e3,
                    projection * 1e3
                ));
            }
        }
        previous = Some((size, engine_s));
    }
    if !failures.is_empty() {
        eprintln!("linearity check failed:\n{}", failures.join("\n"));
        std::process::exit(1);
    }
    println!("linearity check passed (each size within 2x of its projection from the previous)\n");
}

fn benches(c: &mut Criterion) {
    summary();
    let engine = Engine::new(&RulesConfig::default()).expect("library compiles");
    let sources = sources();
    let set = naive_set(&sources);
    let per_rule = PerRuleLoop::new(&sources);

    let mut compile = c.benchmark_group("compile");
    compile.sample_size(10);
    compile.bench_function("library", |b| {
        b.iter(|| Engine::new(&RulesConfig::default()).expect("library compiles"))
    });
    compile.finish();

    let mut group = c.benchmark_group("scan");
    group.sample_size(10).measurement_time(Duration::from_secs(3));
    for (name, size) in SIZES {
        let text = body(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("engine", name), &text, |b, text| {
            b.iter(|| engine_scan(&engine, text))
        });
        group.bench_with_input(BenchmarkId::new("per_rule_loop", name), &text, |b, text| {
            b.iter(|| per_rule.scan(text))
        });
        if size <= REGEXSET_MAX {
            group.bench_with_input(BenchmarkId::new("regexset", name), &text, |b, text| {
                b.iter(|| set.matches(text).len())
            });
        }
    }
    group.finish();
}

criterion_group!(scan, benches);
criterion_main!(scan);
