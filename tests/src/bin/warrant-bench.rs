//! `warrant-bench`: Envoy with Warrant against the same Envoy without it, on
//! loopback, and one markdown table of the results. `scripts/bench` builds
//! and runs it (and the component benchmarks whose output it is given).
//!
//! ```text
//! warrant-bench [--quick] [--reps N] [--seconds S] [--out FILE] [--dir DIR] [--concurrency N]
//!               [--criterion NAME=FILE]... [--command TEXT] [--only chains|scans|chains,scans] [--facts LIST]
//! ```
//!
//! `--only chains` starts only the baseline and the Warrant stack of step 4b
//! (no start-up timing, no saturation or size runs) and runs step 4b;
//! `--only scans` starts only that Warrant stack and runs step 4c;
//! `--only chains,scans` runs both steps on the same stacks. Step 5
//! (memory) follows whatever ran.
//!
//! What it does, in order:
//! 1. checks which audit modes the built filter accepts (`audit.mode`
//!    `sync`/`async`, by `envoy --mode validate`);
//! 2. times `envoy --mode validate` on the filter config and on the baseline
//!    (the same config without the wasm filter), alternating;
//! 3. starts one stack per configuration (baseline, Warrant with audit sync,
//!    the same with the sidecar at `--synchronous normal`, and with audit
//!    async when available), each with its own upstream and
//!    sidecar, and times each one's first request (rules compile lazily);
//! 4. for each body size (1 KiB, 64 KiB, 1 MiB) and traffic kind (MCP
//!    `tools/call`, signed envelope; both with a 2-hop delegation chain),
//!    repeats: for each configuration, in an order that rotates every
//!    repetition, a `wrk` saturation run and then a fixed-rate open-loop run;
//!    then (4b), on one Warrant stack, signed envelopes without a chain,
//!    with a cached 3-hop chain and with a new 3-hop chain per request,
//!    interleaved in one run per repetition (latency, and the filter's own
//!    time per request from its `warrant.work` counters), then the no-chain
//!    and cached requests in turn, once as an open loop and once saturated
//!    (the filter's time); and (4c) envelope prose, MCP
//!    arguments and mixed traffic of each size through that stack, with
//!    the rule engine's throughput read from the filter's scan counters;
//!    and (4d) every example of the rule library once through each Warrant
//!    stack, so that nearly every pattern's regex has been built;
//! 5. reads each VM's linear memory from `/proc/PID/smaps`;
//! 6. prints the table (and writes it to `--out`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use warrant_delegation::Timestamp;
use warrant_e2e::bench::{
    self, open_loop, parse_criterion, spread, wrk, BenchStack, Cast, Client, CriterionResult,
    Setup, Traffic,
};
use warrant_e2e::envoy::Ports;

/// How long and how often.
struct Plan {
    reps: usize,
    saturation: Duration,
    latency: Duration,
    validate_reps: usize,
}

/// Body sizes, with the fixed request rate of the latency runs.
const SIZES: [(&str, usize, f64); 3] =
    [("1 KiB", 1 << 10, 200.0), ("64 KiB", 64 << 10, 50.0), ("1 MiB", 1 << 20, 4.0)];
const TRAFFIC: [Traffic; 2] = [Traffic::McpToolsCall, Traffic::SignedEnvelope];
/// Connections of the saturation runs (`wrk -t1 -cN`).
const WRK_CONNECTIONS: u32 = 16;
/// Connections of the fixed-rate runs.
const OPEN_LOOP_CONNECTIONS: usize = 8;

/// One repetition of one configuration on one cell.
#[derive(Debug, Clone, Copy)]
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    samples: usize,
    failures: u64,
    /// Records the filter dropped during the run because its `async`
    /// buffer was full (Envoy's `warrant.audit.dropped`; the chain counts
    /// them in gap records).
    audit_dropped: u64,
    /// Chain runs: the median over the run's triples (requests 3t, 3t + 1,
    /// 3t + 2, see [`CHAIN_ORDER`]) of this case's latency minus the
    /// no-chain request's of the same triple, in µs. NaN elsewhere.
    paired_us: f64,
    /// Chain runs: the mean of this case's latencies between their 10th and
    /// 90th percentiles, in ms (less swayed than the p50 by where the
    /// median falls in a distribution with several modes). NaN elsewhere.
    trimmed_ms: f64,
    /// Chain runs through Warrant: the filter's own time per request of
    /// this case, in µs, from its work counters (the time of its callbacks
    /// by the host clock, summed per chain check; see [`work_counters`]).
    /// NaN elsewhere.
    work_us: f64,
}

type Cell = (usize, Traffic); // (size index, traffic)

/// Envoy's counter of records a full `async` buffer dropped.
const AUDIT_DROPPED: &str = "wasmcustom.warrant.audit.dropped";

fn main() {
    let args = Args::parse();
    let plan = if args.quick {
        Plan {
            reps: 2,
            saturation: Duration::from_secs(2),
            latency: Duration::from_secs(2),
            validate_reps: 2,
        }
    } else {
        Plan {
            reps: 3,
            saturation: Duration::from_secs(10),
            latency: Duration::from_secs(10),
            validate_reps: 5,
        }
    };
    let mut plan = plan;
    if let Some(reps) = args.reps {
        plan.reps = reps.max(1);
    }
    if let Some(seconds) = args.seconds {
        plan.saturation = Duration::from_secs(seconds.max(1));
        plan.latency = Duration::from_secs(seconds.max(1));
    }
    let started = Instant::now();
    let dir = args.dir.clone();
    std::fs::create_dir_all(&dir).expect("work dir");
    let cast = Cast { facts: args.facts.clone(), ..Cast::new() };
    let mut report = Report::default();

    // 1. Which audit modes does the built filter accept?
    let modes = audit_modes(&cast, &dir);
    eprintln!("warrant-bench: audit.mode support: {modes:?}");
    let mut setups = vec![Setup::Baseline, Setup::Sync, Setup::SyncNormal];
    if modes.async_mode {
        setups.push(Setup::Async);
    }
    setups.push(Setup::Floor);
    // The stack the chain and scan steps pick: async when available, else
    // sync.
    let warrant = if modes.async_mode { Setup::Async } else { Setup::Sync };
    if args.only.contains(&Only::Chains) {
        setups = vec![Setup::Baseline, warrant];
    } else if args.only.contains(&Only::Scans) {
        setups = vec![warrant];
    }
    let mode_of = |setup: Setup| match setup {
        Setup::Baseline | Setup::Floor => None,
        Setup::Sync | Setup::SyncNormal => modes.sync_mode.then_some("sync"),
        Setup::Async => Some("async"),
    };

    // 2. Start-up cost, by `envoy --mode validate`.
    let filter_config = dir.join("validate-filter.yaml");
    let baseline_config = dir.join("validate-baseline.yaml");
    let ports = Ports { audit: 1, upstream: 1 };
    bench::render(Setup::Sync, &filter_config, ports, &cast.patch(mode_of(Setup::Sync)));
    bench::render(Setup::Baseline, &baseline_config, ports, &cast.patch(None));
    let (mut validate_filter, mut validate_base) = (Vec::new(), Vec::new());
    let validate_reps = if !args.only.is_empty() { 0 } else { plan.validate_reps };
    for _ in 0..validate_reps {
        let (ok_f, t_f) = bench::time_validate(&filter_config);
        let (ok_b, t_b) = bench::time_validate(&baseline_config);
        assert!(ok_f && ok_b, "envoy --mode validate failed on the bench configs");
        validate_filter.push(t_f * 1000.0);
        validate_base.push(t_b * 1000.0);
    }
    eprintln!("warrant-bench: validate ms, filter {validate_filter:?}, baseline {validate_base:?}");

    // 3. The stacks.
    let mut stacks = Vec::new();
    let mut first_request = BTreeMap::new();
    for setup in &setups {
        let stack_dir = dir.join(format!("{setup:?}").to_lowercase());
        eprintln!("warrant-bench: starting {}", setup.name());
        let stack = BenchStack::start(*setup, mode_of(*setup), &cast, &stack_dir, args.concurrency);
        let chain = cast.delegation_header();
        let request = Traffic::McpToolsCall.request(&cast, &chain, 1 << 10, 1);
        let t = Instant::now();
        let status = Client::new(stack.port()).send(&request);
        first_request.insert(*setup, t.elapsed().as_secs_f64() * 1000.0);
        check(&stack, &request, status.ok(), "first request");
        warm_up(&stack, &cast);
        stacks.push(stack);
    }
    // 4. The runs.
    let mut runs: BTreeMap<(Cell, Setup), Vec<Run>> = BTreeMap::new();
    let total_cells = SIZES.len() * TRAFFIC.len() * plan.reps * setups.len();
    let mut done = 0;
    let sizes = if !args.only.is_empty() { &SIZES[..0] } else { &SIZES[..] };
    for (size_index, (size_name, size, rate)) in sizes.iter().enumerate() {
        for traffic in TRAFFIC {
            for rep in 0..plan.reps {
                let mut order = setups.clone();
                order.rotate_left(rep % setups.len());
                for setup in order {
                    done += 1;
                    let stack = stacks.iter().find(|s| s.setup == setup).expect("stack");
                    eprintln!(
                        "warrant-bench: [{done}/{total_cells}] {} {size_name} rep {} {} ({:.0} s)",
                        traffic.name(),
                        rep + 1,
                        setup.name(),
                        started.elapsed().as_secs_f64()
                    );
                    // Fresh chain and envelope timestamps each run.
                    let chain = cast.delegation_header();
                    let seed = (rep * 1000 + size_index * 10) as u64 + 7;
                    let request = traffic.request(&cast, &chain, *size, seed);
                    check(stack, &request, Client::new(stack.port()).send(&request).ok(), "probe");
                    let file = dir.join("request.bin");
                    std::fs::write(&file, &request).expect("write request");
                    let dropped_before = stack.envoy.stat(AUDIT_DROPPED);
                    let saturation =
                        wrk(stack.port(), &file, &dir, plan.saturation, WRK_CONNECTIONS)
                            .unwrap_or_else(|e| panic!("wrk: {e}"));
                    let requests = vec![Arc::new(request)];
                    let latency = open_loop(
                        stack.port(),
                        &requests,
                        *rate,
                        plan.latency,
                        OPEN_LOOP_CONNECTIONS,
                    );
                    let run = Run {
                        rps: saturation.rps,
                        p50_ms: latency.quantile_ms(0.50),
                        p99_ms: latency.quantile_ms(0.99),
                        samples: latency.latencies_us.len(),
                        failures: saturation.non_2xx
                            + saturation.errors
                            + latency.non_200
                            + latency.errors
                            + latency.dropped,
                        audit_dropped: stack.envoy.stat(AUDIT_DROPPED) - dropped_before,
                        paired_us: f64::NAN,
                        work_us: f64::NAN,
                        trimmed_ms: f64::NAN,
                    };
                    eprintln!(
                        "warrant-bench:   {:.0} req/s; at {rate}/s p50 {:.3} ms p99 {:.3} ms \
                         ({} samples); failures {}; audit records dropped {}",
                        run.rps,
                        run.p50_ms,
                        run.p99_ms,
                        run.samples,
                        run.failures,
                        run.audit_dropped
                    );
                    runs.entry(((size_index, traffic), setup)).or_default().push(run);
                }
            }
        }
    }

    // 4b. What a delegation chain adds, on the same Warrant Envoy.
    let chains = args.runs(Only::Chains);
    let chain_runs = if chains {
        chain_cost(&stacks, &cast, &plan, &dir)
    } else {
        ChainResults {
            setup: chain_stacks(&stacks).0.setup.name().to_string(),
            runs: ChainRuns::new(),
            pairs: BTreeMap::new(),
            cpu: BTreeMap::new(),
        }
    };

    // 4c. The rule engine's throughput inside Envoy.
    let scans = if args.runs(Only::Scans) {
        scan_in_envoy(&stacks, &cast, &plan, &dir)
    } else {
        ScanRuns::new()
    };

    // Envoy writes its log file every few seconds (`--file-flush-interval-msecs`,
    // 10 s by default): read the start-up lines once the runs are over.
    let configure_ms: Vec<f64> = stacks
        .iter()
        .filter(|s| s.setup.runs_warrant())
        .flat_map(|s| bench::vm_configure_times(&s.envoy.log()))
        .collect();

    // 4d. Every example of the rule library once through each Warrant
    //     stack: text that makes nearly every pattern a candidate, so the
    //     memory below includes the built regexes' worst case (bounded by
    //     `rules.regex_memory_bytes`).
    let examples = library_examples(&stacks, &cast);

    // 5. Memory, after all the traffic.
    let mut memory = BTreeMap::new();
    for stack in &stacks {
        let pid = stack.envoy.process.pid();
        memory.insert(stack.setup, (bench::rss(pid), bench::wasm_memories(pid)));
    }

    // 6. The table.
    if args.only.is_empty() {
        report.e2e(&plan, &setups, &runs);
        report.startup(&validate_filter, &validate_base, &configure_ms, &first_request);
    }
    report.memory(&memory, args.concurrency, &args.only, examples);
    report.chains(&chain_runs);
    report.scans(&chain_runs.setup, &scans);
    report.components(&args.criterion, modes.async_mode);
    let text = report.render(&args, &plan, started.elapsed());
    println!("{text}");
    if let Some(out) = &args.out {
        std::fs::write(out, &text).unwrap_or_else(|e| panic!("write {}: {e}", out.display()));
    }
    drop(stacks);
}

/// A delegation chain on a request, for [`chain_cost`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ChainCase {
    /// No `x-oktsec-delegation` header: the reference.
    None,
    /// The same 3-hop chain on every request: verified once per VM, then
    /// served from the VM's cache.
    Cached,
    /// A different 3-hop chain on every request: every request verifies
    /// three signatures.
    Cold,
}

impl ChainCase {
    const ALL: [ChainCase; 3] = [ChainCase::None, ChainCase::Cached, ChainCase::Cold];

    /// The filter's chain check for this case's requests: the label of
    /// its work counters.
    fn chain_check(self) -> &'static str {
        match self {
            ChainCase::None => "none",
            ChainCase::Cached => "cached",
            ChainCase::Cold => "verified",
        }
    }

    fn name(self) -> &'static str {
        match self {
            ChainCase::None => "no chain",
            ChainCase::Cached => "cached 3-hop chain",
            ChainCase::Cold => "cold 3-hop chain (new on every request)",
        }
    }
}

/// The filter's work counters of `case` (`warrant.work.<check>.requests`
/// and `.nanoseconds`): decided requests and their callbacks' time.
fn work_counters(stack: &BenchStack, case: ChainCase) -> (u64, u64) {
    let name = |what| format!("wasmcustom.warrant.work.{}.{what}", case.chain_check());
    (stack.envoy.stat(&name("requests")), stack.envoy.stat(&name("nanoseconds")))
}

/// The fixed request rate of the chain runs, all cases together.
const CHAIN_RATE: f64 = 200.0;

/// The cases of a chain run's requests, slot `i` being `CHAIN_ORDER[i % 6]`:
/// triples of one request of each case, the no-chain and cached ones
/// swapping places from one triple to the next. A cold request's
/// verification can delay the request sent right after it on the same
/// worker; so each of the two follows a cold one equally often, and their
/// difference is not biased by it (with `i mod 3`, only the no-chain
/// request ever followed a cold one).
const CHAIN_ORDER: [ChainCase; 6] = [
    ChainCase::None,
    ChainCase::Cached,
    ChainCase::Cold,
    ChainCase::Cached,
    ChainCase::None,
    ChainCase::Cold,
];

/// Connections of the chain runs: prime to the six of [`CHAIN_ORDER`], so
/// that every connection (and so every worker it landed on) carries every
/// case alike. With 8, the even connections carried only no-chain and cold
/// requests and the odd ones only cached and cold ones, and the p50s of
/// the two cases differed by which worker their connections had (±120 µs).
const CHAIN_CONNECTIONS: usize = 7;

/// The stacks the chain steps use: Warrant with audit async when
/// available, else sync; and the baseline, if it runs.
fn chain_stacks(stacks: &[BenchStack]) -> (&BenchStack, Option<&BenchStack>) {
    let stack = stacks
        .iter()
        .find(|s| s.setup == Setup::Async)
        .or_else(|| stacks.iter().find(|s| s.setup == Setup::Sync))
        .expect("a Warrant stack");
    (stack, stacks.iter().find(|s| s.setup == Setup::Baseline))
}

/// Signed 1 KiB envelopes through one Warrant stack (audit async when
/// available, else sync), without a chain, with one cached 3-hop chain, and
/// with a fresh 3-hop chain per request, **interleaved in one run** (in the
/// order of [`CHAIN_ORDER`]), so the three cases share the same moments,
/// connections and machine load, and drift between runs (the main noise on
/// a shared machine) cancels out of their difference. Each repetition is one
/// run of 3 × the latency length at [`CHAIN_RATE`] in total, so every case
/// gets as many samples as a run of its own would. The same requests then
/// go through the baseline Envoy (no filter), which tells what the bigger
/// header costs Envoy and the upstream whatever the filter does. Returns the
/// Warrant stack's name and the runs by (stack is the baseline, case).
fn chain_cost(stacks: &[BenchStack], cast: &Cast, plan: &Plan, dir: &Path) -> ChainResults {
    let (stack, baseline) = chain_stacks(stacks);
    let cases = ChainCase::ALL.len();
    let mut runs = ChainRuns::new();
    let mut pairs: BTreeMap<ScanLoad, Vec<PairWork>> = BTreeMap::new();
    let mut cpu: BTreeMap<bool, Vec<PairWork>> = BTreeMap::new();
    let duration = plan.latency * cases as u32;
    let slots = (CHAIN_RATE * duration.as_secs_f64()).round() as usize;
    for rep in 0..plan.reps {
        let now = warrant_e2e::agents::now_secs();
        let seed = rep as u64 * 31 + 5;
        let none = Arc::new(Traffic::SignedEnvelope.request(cast, "", 1 << 10, seed));
        let cached = cast.chain(3, now);
        let cached = Arc::new(Traffic::SignedEnvelope.request(cast, &cached, 1 << 10, seed));
        // Cold chains issued one second apart, going back from now, at a
        // nanosecond that is the repetition's: every header differs, within
        // a run and from earlier runs' (which VMs may still cache), so no VM
        // ever finds one in its cache. One more than the run uses, for the
        // probe.
        let mut cold = (0..=slots / cases + 1).map(|i| {
            let at = Timestamp::from_unix(now - i as i64 - 1, rep as u32 + 1);
            let chain = cast.chain_at(3, at.expect("a time in range"));
            Arc::new(Traffic::SignedEnvelope.request(cast, &chain, 1 << 10, seed))
        });
        let probe = cold.next().expect("a cold chain");
        for (request, what) in [(&none, "no chain"), (&cached, "cached chain"), (&probe, "cold")] {
            for stack in std::iter::once(stack).chain(baseline) {
                check(stack, request, Client::new(stack.port()).send(request).ok(), what);
            }
        }
        let requests: Vec<Arc<Vec<u8>>> = (0..slots)
            .map(|i| match CHAIN_ORDER[i % CHAIN_ORDER.len()] {
                ChainCase::None => Arc::clone(&none),
                ChainCase::Cached => Arc::clone(&cached),
                ChainCase::Cold => cold.next().expect("enough cold chains"),
            })
            .collect();
        let mut order: Vec<&BenchStack> = std::iter::once(stack).chain(baseline).collect();
        let stacks_used = order.len();
        order.rotate_left(rep % stacks_used);
        for stack in order {
            eprintln!(
                "warrant-bench: chains rep {} ({}, {} requests interleaved over {} s)",
                rep + 1,
                stack.setup.name(),
                slots,
                duration.as_secs()
            );
            let is_baseline = stack.setup == Setup::Baseline;
            let work_before: Vec<(u64, u64)> = if is_baseline {
                Vec::new()
            } else {
                ChainCase::ALL.iter().map(|c| work_counters(stack, *c)).collect()
            };
            let latency =
                open_loop(stack.port(), &requests, CHAIN_RATE, duration, CHAIN_CONNECTIONS);
            // Failures are not attributed to a case: count them all on each.
            let failures = latency.non_200 + latency.errors + latency.dropped;
            // Request i of the run is slot i (the list is as long as the run).
            let mut by_slot: Vec<Option<i64>> = vec![None; slots];
            for (us, i) in latency.latencies_us.iter().zip(&latency.requests) {
                by_slot[*i] = i64::try_from(*us).ok();
            }
            // The work counters move when Envoy logs a stream, which can be
            // after its response: wait until every answered request is
            // counted. (A cached chain's first request on a worker the
            // probe did not reach counts as verified: one per worker.)
            let work_after: Vec<(u64, u64)> = if is_baseline {
                Vec::new()
            } else {
                let answered = latency.latencies_us.len() as u64;
                warrant_e2e::wait::until(Duration::from_secs(10), "the run's work counters", || {
                    let now: Vec<(u64, u64)> =
                        ChainCase::ALL.iter().map(|c| work_counters(stack, *c)).collect();
                    let counted: u64 = now.iter().zip(&work_before).map(|(n, b)| n.0 - b.0).sum();
                    (counted >= answered).then_some(now)
                })
            };
            for (c, case) in ChainCase::ALL.into_iter().enumerate() {
                let which = |i: usize| CHAIN_ORDER[i % CHAIN_ORDER.len()] == case;
                let work_us = match (work_before.get(c), work_after.get(c)) {
                    (Some((r0, n0)), Some((r1, n1))) if r1 > r0 => {
                        (n1 - n0) as f64 / (r1 - r0) as f64 / 1000.0
                    }
                    _ => f64::NAN,
                };
                // Within each triple: this case's latency minus the
                // no-chain request's.
                let mut paired: Vec<i64> = by_slot
                    .chunks_exact(cases)
                    .enumerate()
                    .filter_map(|(t, triple)| {
                        let order = &CHAIN_ORDER[(t % 2) * cases..][..cases];
                        let at = |c: ChainCase| order.iter().position(|o| *o == c);
                        Some(triple[at(case)?]? - triple[at(ChainCase::None)?]?)
                    })
                    .collect();
                paired.sort_unstable();
                let paired_us =
                    paired.get(paired.len().saturating_sub(1) / 2).map_or(f64::NAN, |d| *d as f64);
                let run = Run {
                    rps: 0.0,
                    trimmed_ms: latency.trimmed_mean_ms_of(which),
                    p50_ms: latency.quantile_ms_of(0.50, which),
                    p99_ms: latency.quantile_ms_of(0.99, which),
                    samples: latency.count_of(which),
                    failures,
                    audit_dropped: 0,
                    paired_us,
                    work_us,
                };
                eprintln!(
                    "warrant-bench:   {}: p50 {:.3} ms p99 {:.3} ms trimmed mean {:.3} ms ({} \
                     samples), paired difference {:.0} µs, filter time {:.1} µs; failures {}",
                    case.name(),
                    run.p50_ms,
                    run.p99_ms,
                    run.trimmed_ms,
                    run.samples,
                    run.paired_us,
                    run.work_us,
                    run.failures
                );
                runs.entry((is_baseline, case)).or_default().push(run);
            }
        }
        for load in [ScanLoad::OpenLoop, ScanLoad::Saturation] {
            let work = chain_pair(stack, [&none, &cached], dir, plan, load);
            eprintln!(
                "warrant-bench: chains rep {} no chain and cached in turn, {load:?}: filter time \
                 {:.1} µs no chain, {:.1} µs cached, at {:.0} req/s",
                rep + 1,
                work.none_us,
                work.cached_us,
                work.rps
            );
            pairs.entry(load).or_default().push(work);
        }
        for stack in std::iter::once(stack).chain(baseline) {
            let work = chain_cpu(stack, [&none, &cached], dir, plan, rep);
            eprintln!(
                "warrant-bench: chains rep {} {} CPU time per request, saturated blocks: {:.1} µs \
                 no chain, {:.1} µs cached; added, median of the pairs of blocks: {:.1} µs",
                rep + 1,
                stack.setup.name(),
                work.none_us,
                work.cached_us,
                work.added_us
            );
            cpu.entry(stack.setup == Setup::Baseline).or_default().push(work);
        }
    }
    ChainResults { setup: stack.setup.name().to_string(), runs, pairs, cpu }
}

/// Blocks per case of [`chain_cpu`].
const CPU_BLOCKS: usize = 10;

/// Envoy's CPU time per request (all its threads, from the scheduler's
/// accounting) for the no-chain and the cached request, each saturating
/// `stack` by itself with `wrk` in blocks of a fifth of the saturation
/// length (at least a second) that alternate between the two
/// ([`CPU_BLOCKS`] each, the first case alternating between repetitions).
/// Everything Envoy does for a request counts: the codec, the filter, the
/// filter state, the upstream and audit connections; what trails a block
/// (the `async` records sent on the next tick) falls into the next, of the
/// other case. The added time is the median over the pairs of adjacent
/// blocks of the cached block's time per request minus the no-chain
/// block's: the machine's drift over a repetition (the sidecar's
/// checkpoints, other processes) moves both blocks of a pair alike, and one
/// disturbed block moves one pair, not the result.
fn chain_cpu(
    stack: &BenchStack,
    requests: [&Arc<Vec<u8>>; 2],
    dir: &Path,
    plan: &Plan,
    rep: usize,
) -> PairWork {
    let files = [0, 1].map(|i| {
        let file = dir.join(format!("chain-cpu-{i}.bin"));
        std::fs::write(&file, requests[i].as_slice()).expect("write request");
        file
    });
    let block = (plan.saturation / 5).max(Duration::from_secs(1));
    let pid = stack.envoy.process.pid();
    let (mut nanos, mut sent, mut seconds) = ([0u64; 2], [0u64; 2], 0.0);
    let mut pair = [0.0f64; 2];
    let mut added = Vec::with_capacity(CPU_BLOCKS);
    for b in 0..2 * CPU_BLOCKS {
        let case = (b + rep) % 2;
        let before = bench::cpu_nanos(pid);
        let run = wrk(stack.port(), &files[case], dir, block, WRK_CONNECTIONS)
            .unwrap_or_else(|e| panic!("wrk: {e}"));
        let used = bench::cpu_nanos(pid) - before;
        assert_eq!(run.non_2xx + run.errors, 0, "CPU block through {}", stack.setup.name());
        nanos[case] += used;
        sent[case] += run.requests;
        seconds += block.as_secs_f64();
        pair[case] = used as f64 / run.requests.max(1) as f64 / 1000.0;
        if b % 2 == 1 {
            added.push(pair[1] - pair[0]);
        }
    }
    let us = |i: usize| nanos[i] as f64 / sent[i].max(1) as f64 / 1000.0;
    let rps = (sent[0] + sent[1]) as f64 / seconds;
    PairWork { none_us: us(0), cached_us: us(1), added_us: bench::spread(&added).1, rps }
}

/// What [`chain_cost`] measured.
struct ChainResults {
    /// The Warrant stack's name.
    setup: String,
    runs: ChainRuns,
    /// The runs of [`chain_pair`] by load, a run per repetition.
    pairs: BTreeMap<ScanLoad, Vec<PairWork>>,
    /// The blocks of [`chain_cpu`] by (through the baseline Envoy), one
    /// result per repetition.
    cpu: BTreeMap<bool, Vec<PairWork>>,
}

/// Chain runs by (through the baseline Envoy, case).
type ChainRuns = BTreeMap<(bool, ChainCase), Vec<Run>>;

/// One run of [`chain_pair`]: the filter's time per request of each case,
/// in µs, and the run's rate.
#[derive(Debug, Clone, Copy)]
struct PairWork {
    none_us: f64,
    cached_us: f64,
    /// What the cached request adds: `cached_us - none_us`, or for
    /// [`chain_cpu`] the median of its pairs of blocks.
    added_us: f64,
    rps: f64,
}

/// The no-chain and the cached request in turn through `stack`, without
/// the cold requests of the interleaved runs (whose verifications evict
/// what the next request on their worker needs, unevenly between the cases
/// as connections fall on workers): the filter's time per request of each,
/// from its work counters. As an open loop at [`CHAIN_RATE`] over
/// [`CHAIN_CONNECTIONS`] for twice the latency length (workers that wait
/// between requests), or saturated by `wrk` with [`WRK_CONNECTIONS`] for the
/// saturation length (workers that go from one request to the next).
fn chain_pair(
    stack: &BenchStack,
    [none, cached]: [&Arc<Vec<u8>>; 2],
    dir: &Path,
    plan: &Plan,
    load: ScanLoad,
) -> PairWork {
    let cases = [ChainCase::None, ChainCase::Cached, ChainCase::Cold];
    let before = cases.map(|c| work_counters(stack, c));
    let (requests, rps, failures) = match load {
        ScanLoad::OpenLoop => {
            let requests = [Arc::clone(none), Arc::clone(cached)];
            let duration = plan.latency * 2;
            let run = open_loop(stack.port(), &requests, CHAIN_RATE, duration, CHAIN_CONNECTIONS);
            let answered = run.latencies_us.len() as u64;
            (answered, CHAIN_RATE, run.non_200 + run.errors + run.dropped)
        }
        ScanLoad::Saturation => {
            let files = [(none, "none"), (cached, "cached")].map(|(request, name)| {
                let file = dir.join(format!("chain-{name}.bin"));
                std::fs::write(&file, request.as_slice()).expect("write request");
                file
            });
            let files = [files[0].as_path(), files[1].as_path()];
            let run =
                bench::wrk_cycling(stack.port(), &files, dir, plan.saturation, WRK_CONNECTIONS)
                    .unwrap_or_else(|e| panic!("wrk: {e}"));
            (run.requests, run.rps, run.non_2xx + run.errors)
        }
    };
    assert_eq!(failures, 0, "chain run through {} ({load:?})", stack.setup.name());
    // Counted when Envoy logs each stream: wait for all of them. (A cached
    // chain's first request on a worker counts as verified.)
    let after = warrant_e2e::wait::until(Duration::from_secs(10), "the work counters", || {
        let now = cases.map(|c| work_counters(stack, c));
        let counted: u64 = now.iter().zip(&before).map(|(n, b)| n.0 - b.0).sum();
        (counted >= requests).then_some(now)
    });
    let us = |i: usize| {
        let requests = after[i].0 - before[i].0;
        (after[i].1 - before[i].1) as f64 / requests.max(1) as f64 / 1000.0
    };
    PairWork { none_us: us(0), cached_us: us(1), added_us: us(1) - us(0), rps }
}

/// Sends every true- and false-positive example of the built-in library,
/// as a signed envelope each, through every Warrant stack; returns how many
/// each stack got. Any answer will do (the true positives are blocked or
/// quarantined): what counts is that each was scanned.
fn library_examples(stacks: &[BenchStack], cast: &Cast) -> usize {
    let rules = warrant_rules::builtin_rules().expect("the built-in library parses");
    let texts: Vec<&String> = rules.iter().flat_map(|r| r.examples.all()).collect();
    for stack in stacks.iter().filter(|s| s.setup.runs_warrant()) {
        eprintln!("warrant-bench: {} library examples through {}", texts.len(), stack.setup.name());
        let mut client = Client::new(stack.port());
        for text in &texts {
            let body = cast.sender.envelope(&cast.recipient, text).to_string();
            let request = bench::raw_request("/v1/message", body.as_bytes(), "", "");
            let status = client.send(&request).unwrap_or_else(|e| panic!("example: {e}"));
            assert!(matches!(status, 200 | 202 | 403), "example {text:?} answered {status}");
        }
    }
    texts.len()
}

/// The body kinds of [`scan_in_envoy`].
const SCAN_TRAFFIC: [Traffic; 3] =
    [Traffic::SignedEnvelope, Traffic::McpToolsCall, Traffic::MixedEnvelope];
/// How long each run of [`scan_in_envoy`] lasts.
const SCAN_RUN: Duration = Duration::from_secs(4);
/// Envoy's counters of the filter's scans.
const SCAN_BYTES: &str = "wasmcustom.warrant.scan.bytes";
const SCAN_NANOS: &str = "wasmcustom.warrant.scan.nanoseconds";

/// The rule engine's throughput inside Envoy's VMs: per repetition, for
/// each body kind ([`SCAN_TRAFFIC`]) and size ([`SIZES`]), an open-loop
/// run at the size's rate and a saturating one ([`ScanLoad`]), each of
/// [`SCAN_RUN`], through the Warrant stack, and the filter's scan counters
/// (the content it scanned and the time the rule engine took, by the host
/// clock) read before and after: MB/s is the bytes over the nanoseconds. A busy worker scans with the caches Envoy's
/// own work left, which a benchmark of the engine alone does not see.
/// Mixed traffic at 1 MiB is 960 KiB of content, so that its envelope
/// (JSON escapes included) stays under the filter's 1 MiB `max_body_bytes`.
fn scan_in_envoy(stacks: &[BenchStack], cast: &Cast, plan: &Plan, dir: &Path) -> ScanRuns {
    let (stack, _) = chain_stacks(stacks);
    let mut runs = ScanRuns::new();
    for rep in 0..plan.reps {
        for (size_index, (size_name, size, rate)) in SIZES.iter().enumerate() {
            for traffic in SCAN_TRAFFIC {
                let size = if traffic == Traffic::MixedEnvelope && *size == 1 << 20 {
                    960 << 10
                } else {
                    *size
                };
                let request = traffic.request(cast, "", size, rep as u64 + 3);
                check(stack, &request, Client::new(stack.port()).send(&request).ok(), "scan");
                let file = dir.join("scan-request.bin");
                std::fs::write(&file, &request).expect("write request");
                let request = Arc::new(request);
                for load in [ScanLoad::OpenLoop, ScanLoad::Saturation] {
                    let mb_s = scan_run(stack, &request, &file, dir, *rate, load);
                    eprintln!(
                        "warrant-bench: scan in Envoy, {} {size_name} rep {} {load:?}: {mb_s:.1} \
                         MB/s",
                        traffic.name(),
                        rep + 1
                    );
                    runs.entry((size_index, traffic, load)).or_default().push(mb_s);
                }
            }
        }
    }
    runs
}

/// How [`scan_in_envoy`] and [`chain_pair`] load the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ScanLoad {
    /// Open loop at the size's rate of [`SIZES`]: a worker that waits
    /// between requests, and whose caches other work fills meanwhile.
    OpenLoop,
    /// `wrk` with [`WRK_CONNECTIONS`]: workers that go from one request to
    /// the next.
    Saturation,
}

/// One run of [`scan_in_envoy`]: the scan counters' bytes over
/// nanoseconds, in MB/s.
fn scan_run(
    stack: &BenchStack,
    request: &Arc<Vec<u8>>,
    file: &Path,
    dir: &Path,
    rate: f64,
    load: ScanLoad,
) -> f64 {
    let (bytes, nanos) = (stack.envoy.stat(SCAN_BYTES), stack.envoy.stat(SCAN_NANOS));
    let failures = match load {
        ScanLoad::OpenLoop => {
            let requests = std::slice::from_ref(request);
            let run = open_loop(stack.port(), requests, rate, SCAN_RUN, OPEN_LOOP_CONNECTIONS);
            run.non_200 + run.errors + run.dropped
        }
        ScanLoad::Saturation => {
            let run = wrk(stack.port(), file, dir, SCAN_RUN, WRK_CONNECTIONS)
                .unwrap_or_else(|e| panic!("wrk: {e}"));
            run.non_2xx + run.errors
        }
    };
    assert_eq!(failures, 0, "scan run through {} ({load:?})", stack.setup.name());
    let bytes = stack.envoy.stat(SCAN_BYTES) - bytes;
    let nanos = stack.envoy.stat(SCAN_NANOS) - nanos;
    if nanos == 0 {
        f64::NAN
    } else {
        bytes as f64 * 1000.0 / nanos as f64
    }
}

/// Scan throughput in Envoy (MB/s per repetition) by (size index, kind,
/// load).
type ScanRuns = BTreeMap<(usize, Traffic, ScanLoad), Vec<f64>>;

/// Sends requests of every kind over several connections, so that every
/// worker's VM has compiled its rules and verified the chain before runs.
fn warm_up(stack: &BenchStack, cast: &Cast) {
    let chain = cast.delegation_header();
    let requests: Vec<Arc<Vec<u8>>> =
        TRAFFIC.iter().map(|t| Arc::new(t.request(cast, &chain, 1 << 10, 2))).collect();
    let result = open_loop(stack.port(), &requests, 200.0, Duration::from_millis(500), 8);
    assert_eq!(
        result.non_200 + result.errors + result.dropped,
        0,
        "warm-up of {} failed: {result:?}",
        stack.setup.name()
    );
}

/// Panics with the answer's body when a request is not answered 200.
fn check(stack: &BenchStack, request: &[u8], status: Option<u16>, what: &str) {
    if status == Some(200) {
        return;
    }
    let answer = Client::send_verbose(stack.port(), request);
    panic!(
        "{what} through {} was not answered 200 ({status:?}); again: {answer:?}\nenvoy log: {}",
        stack.setup.name(),
        stack.envoy.log.display()
    );
}

#[derive(Debug, Clone, Copy)]
struct Modes {
    sync_mode: bool,
    async_mode: bool,
}

/// Whether the built filter accepts `audit.mode` `sync` and `async`.
fn audit_modes(cast: &Cast, dir: &std::path::Path) -> Modes {
    let ports = Ports { audit: 1, upstream: 1 };
    let accepts = |mode: Option<&'static str>| {
        let config = dir.join(format!("probe-{}.yaml", mode.unwrap_or("none")));
        bench::render(Setup::Sync, &config, ports, &cast.patch(mode));
        bench::time_validate(&config).0
    };
    assert!(
        accepts(None),
        "the filter refuses the bench configuration; run envoy --mode validate on {}",
        dir.join("probe-none.yaml").display()
    );
    Modes { sync_mode: accepts(Some("sync")), async_mode: accepts(Some("async")) }
}

// ---------------------------------------------------------------------------
// Arguments

struct Args {
    quick: bool,
    /// `--reps N`: repetitions (overrides the plan's).
    reps: Option<usize>,
    /// `--seconds S`: length of each saturation and latency run.
    seconds: Option<u64>,
    out: Option<PathBuf>,
    dir: PathBuf,
    concurrency: u32,
    criterion: Vec<(String, PathBuf)>,
    command: String,
    /// `--only chains|scans|chains,scans`: only those steps and their
    /// stacks (empty: everything).
    only: Vec<Only>,
    /// `--facts LIST`: the filter's `facts` setting (comma-separated, empty
    /// for none) instead of its default (all).
    facts: Option<Vec<String>>,
}

/// A step `--only` runs by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Only {
    /// Step 4b and its stacks: the baseline and one Warrant stack.
    Chains,
    /// Step 4c and its one Warrant stack.
    Scans,
}

impl Args {
    /// Whether `step` runs: every step without `--only`.
    fn runs(&self, step: Only) -> bool {
        self.only.is_empty() || self.only.contains(&step)
    }

    fn parse() -> Args {
        let mut args = Args {
            quick: false,
            reps: None,
            seconds: None,
            out: None,
            dir: std::env::temp_dir().join(format!("warrant-bench-{}", std::process::id())),
            concurrency: 2,
            criterion: Vec::new(),
            command: "scripts/bench".into(),
            only: Vec::new(),
            facts: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let mut value = || it.next().unwrap_or_else(|| usage(&format!("{arg} needs a value")));
            match arg.as_str() {
                "--quick" => args.quick = true,
                "--reps" => args.reps = Some(value().parse().unwrap_or_else(|_| usage("--reps N"))),
                "--seconds" => {
                    args.seconds = Some(value().parse().unwrap_or_else(|_| usage("--seconds S")))
                }
                "--out" => args.out = Some(value().into()),
                "--dir" => args.dir = value().into(),
                "--concurrency" => {
                    args.concurrency = value().parse().unwrap_or_else(|_| usage("--concurrency N"))
                }
                "--criterion" => {
                    let v = value();
                    let (name, file) = v.split_once('=').unwrap_or_else(|| usage("NAME=FILE"));
                    args.criterion.push((name.to_string(), file.into()));
                }
                "--command" => args.command = value(),
                "--only" => {
                    for step in value().split(',') {
                        let step = match step {
                            "chains" => Only::Chains,
                            "scans" => Only::Scans,
                            other => usage(&format!("--only {other}: `chains` or `scans`")),
                        };
                        if !args.only.contains(&step) {
                            args.only.push(step);
                        }
                    }
                }
                "--facts" => {
                    let list = value();
                    let facts = list.split(',').filter(|f| !f.is_empty()).map(str::to_string);
                    args.facts = Some(facts.collect());
                }
                "-h" | "--help" => usage(""),
                other => usage(&format!("unknown argument {other}")),
            }
        }
        args
    }
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("warrant-bench: {problem}");
    }
    eprintln!(
        "usage: warrant-bench [--quick] [--reps N] [--seconds S] [--out FILE] [--dir DIR] [--concurrency N] \
         [--criterion NAME=FILE]... [--command TEXT] [--only chains|scans|chains,scans] [--facts LIST]"
    );
    std::process::exit(2);
}

// ---------------------------------------------------------------------------
// The report

#[derive(Default)]
struct Report {
    rows: Vec<[String; 5]>,
}

fn fmt_spread((min, med, max): (f64, f64, f64), unit: &str, digits: usize) -> String {
    if med.is_nan() {
        return "–".into();
    }
    format!("{med:.digits$}{unit} [{min:.digits$}–{max:.digits$}]")
}

fn verdict(ok: bool) -> String {
    if ok { "met" } else { "**missed**" }.into()
}

/// The verdict on an added cost in µs, one value per repetition, against
/// `goal_us` (and `ok`, the run's other conditions): met when every
/// repetition is within the goal, missed when none is; between, the
/// median decides, unless the repetitions spread over more than the goal
/// itself, a measurement too coarse to tell.
fn cost_verdict(values: &[f64], goal_us: f64, ok: bool) -> String {
    let (min, median, max) = spread(values);
    if !ok || min > goal_us {
        return verdict(false);
    }
    if max <= goal_us {
        return verdict(true);
    }
    if max - min > goal_us {
        return format!(
            "not resolved: the repetitions spread over {:.0} µs, more than the goal",
            max - min
        );
    }
    verdict(median <= goal_us)
}

impl Report {
    fn row(&mut self, measure: String, body: &str, value: String, goal: &str, result: String) {
        self.rows.push([measure, body.into(), value, goal.into(), result]);
    }

    /// A row without a goal.
    fn figure(&mut self, measure: String, body: &str, value: String) {
        self.row(measure, body, value, "", String::new());
    }

    fn e2e(&mut self, plan: &Plan, setups: &[Setup], runs: &BTreeMap<(Cell, Setup), Vec<Run>>) {
        for (size_index, (size_name, _, rate)) in SIZES.iter().enumerate() {
            for traffic in TRAFFIC {
                let cell = (size_index, traffic);
                let Some(base) = runs.get(&(cell, Setup::Baseline)) else { continue };
                let t = traffic.name();
                let base_rps: Vec<f64> = base.iter().map(|r| r.rps).collect();
                self.row(
                    format!("{t}: throughput at saturation, baseline"),
                    size_name,
                    fmt_spread(spread(&base_rps), " req/s", 0),
                    "",
                    String::new(),
                );
                let p50: Vec<f64> = base.iter().map(|r| r.p50_ms).collect();
                let p99: Vec<f64> = base.iter().map(|r| r.p99_ms).collect();
                self.row(
                    format!("{t}: latency p50 / p99 at {rate} req/s, baseline"),
                    size_name,
                    format!(
                        "{} / {}",
                        fmt_spread(spread(&p50), " ms", 3),
                        fmt_spread(spread(&p99), " ms", 3)
                    ),
                    "",
                    String::new(),
                );
                for setup in setups.iter().filter(|s| **s != Setup::Baseline) {
                    let Some(with) = runs.get(&(cell, *setup)) else { continue };
                    let name = setup.name();
                    let ratio: Vec<f64> =
                        with.iter().zip(base).map(|(w, b)| w.rps / b.rps).collect();
                    let (goal, ok) = throughput_goal(size_index, *setup, spread(&ratio).1);
                    let dropped: u64 = with.iter().map(|r| r.audit_dropped).sum();
                    let dropped = if dropped == 0 {
                        String::new()
                    } else {
                        format!("; {dropped} audit records dropped, buffer full (in gap records)")
                    };
                    self.row(
                        format!("{t}: throughput ratio to baseline, {name}"),
                        size_name,
                        fmt_spread(spread(&ratio), "×", 2) + &dropped,
                        goal,
                        ok.map(verdict).unwrap_or_default(),
                    );
                    let add50: Vec<f64> =
                        with.iter().zip(base).map(|(w, b)| w.p50_ms - b.p50_ms).collect();
                    let add99: Vec<f64> =
                        with.iter().zip(base).map(|(w, b)| w.p99_ms - b.p99_ms).collect();
                    let (goal, ok) = latency_goal(size_index, *setup, spread(&add99).1);
                    self.row(
                        format!("{t}: added latency p50 / p99 at {rate} req/s, {name}"),
                        size_name,
                        format!(
                            "{} / {}",
                            fmt_spread(spread(&add50), " ms", 3),
                            fmt_spread(spread(&add99), " ms", 3)
                        ),
                        goal,
                        ok.map(verdict).unwrap_or_default(),
                    );
                }
                let failures: u64 = setups
                    .iter()
                    .filter_map(|s| runs.get(&(cell, *s)))
                    .flatten()
                    .map(|r| r.failures)
                    .sum();
                let samples: usize = setups
                    .iter()
                    .filter_map(|s| runs.get(&(cell, *s)))
                    .flatten()
                    .map(|r| r.samples)
                    .min()
                    .unwrap_or(0);
                let goal = if size_index == 2 { "no errors" } else { "" };
                self.row(
                    format!(
                        "{t}: failed requests, all configurations and runs \
                         (fewest latency samples in a run: {samples})"
                    ),
                    size_name,
                    failures.to_string(),
                    goal,
                    if size_index == 2 { verdict(failures == 0) } else { String::new() },
                );
            }
        }
        if !setups.contains(&Setup::Async) {
            self.row(
                "Warrant, audit async".into(),
                "all",
                "not available yet: the filter refuses `audit.mode`".into(),
                "1 KiB: ≥ 0.85×, added p99 ≤ 0.5 ms",
                "not measured".into(),
            );
        }
        let _ = plan;
    }

    fn chains(&mut self, results: &ChainResults) {
        let (setup, runs) = (&results.setup, &results.runs);
        let Some(none) = runs.get(&(false, ChainCase::None)) else { return };
        let p50: Vec<f64> = none.iter().map(|r| r.p50_ms).collect();
        let p99: Vec<f64> = none.iter().map(|r| r.p99_ms).collect();
        self.figure(
            format!(
                "signed envelope, no chain / cached / cold chain interleaved at {CHAIN_RATE} \
                 req/s in total, {setup}: p50 / p99, no chain"
            ),
            "1 KiB",
            format!(
                "{} / {}",
                fmt_spread(spread(&p50), " ms", 3),
                fmt_spread(spread(&p99), " ms", 3)
            ),
        );
        // The filter's own time per request, from its work counters.
        let work = |case: ChainCase| -> Vec<f64> {
            let runs = runs.get(&(false, case)).map(Vec::as_slice).unwrap_or_default();
            runs.iter().map(|r| r.work_us).filter(|w| !w.is_nan()).collect()
        };
        let none_work = work(ChainCase::None);
        if !none_work.is_empty() {
            self.figure(
                format!(
                    "the filter's own time per request (its `warrant.work` counters: the time of \
                     its callbacks by the host clock, per request), no chain, {setup}"
                ),
                "1 KiB",
                fmt_spread(spread(&none_work), " µs", 1),
            );
        }
        for (case, goal_us) in [(ChainCase::Cached, 10.0), (ChainCase::Cold, 600.0)] {
            let with = work(case);
            if with.is_empty() || with.len() != none_work.len() {
                continue;
            }
            let added: Vec<f64> = with.iter().zip(&none_work).map(|(w, n)| w - n).collect();
            let ratio: Vec<f64> = with.iter().zip(&none_work).map(|(w, n)| w / n).collect();
            self.row(
                format!(
                    "{}: added filter time per request, its work counters minus the no-chain \
                     requests' of the same interleaved run (ratio), {setup}",
                    case.name()
                ),
                "1 KiB",
                format!(
                    "{} ({})",
                    fmt_spread(spread(&added), " µs", 1),
                    fmt_spread(spread(&ratio), "×", 2)
                ),
                &format!("≤ {goal_us:.0} µs"),
                cost_verdict(&added, goal_us, true),
            );
        }
        for (load, pairs) in &results.pairs {
            let added: Vec<f64> = pairs.iter().map(|w| w.cached_us - w.none_us).collect();
            let ratio: Vec<f64> = pairs.iter().map(|w| w.cached_us / w.none_us).collect();
            let none: Vec<f64> = pairs.iter().map(|w| w.none_us).collect();
            let how = match load {
                ScanLoad::OpenLoop => {
                    format!("open loop at {CHAIN_RATE} req/s over {CHAIN_CONNECTIONS} connections")
                }
                ScanLoad::Saturation => {
                    let rps: Vec<f64> = pairs.iter().map(|w| w.rps).collect();
                    let rps = fmt_spread(spread(&rps), " req/s", 0);
                    format!("saturated by `wrk -c{WRK_CONNECTIONS}` ({rps})")
                }
            };
            self.row(
                format!(
                    "cached 3-hop chain: added filter time per request, no-chain and cached \
                     requests in turn ({how}), the work counters' time per request minus the \
                     no-chain requests' of the same run (ratio; the no-chain requests' own \
                     {}), {setup}",
                    fmt_spread(spread(&none), " µs", 1)
                ),
                "1 KiB",
                format!(
                    "{} ({})",
                    fmt_spread(spread(&added), " µs", 1),
                    fmt_spread(spread(&ratio), "×", 2)
                ),
                "≤ 10 µs",
                cost_verdict(&added, 10.0, true),
            );
        }
        if let Some(own) = results.cpu.get(&false) {
            let added: Vec<f64> = own.iter().map(|w| w.added_us).collect();
            let ratio: Vec<f64> = own.iter().map(|w| 1.0 + w.added_us / w.none_us).collect();
            let none: Vec<f64> = own.iter().map(|w| w.none_us).collect();
            let base = results.cpu.get(&true).map(Vec::as_slice).unwrap_or_default();
            let base: Vec<f64> = base.iter().map(|w| w.added_us).collect();
            self.row(
                format!(
                    "cached 3-hop chain: added Envoy CPU time per request (all its threads), \
                     saturated by `wrk -c{WRK_CONNECTIONS}` in blocks alternating no-chain and \
                     cached requests, {CPU_BLOCKS} each, the median of the pairs' differences (ratio; the no-chain requests' own {}); \
                     the same through the baseline Envoy (no filter): the header's cost to \
                     Envoy, {setup}",
                    fmt_spread(spread(&none), " µs", 1)
                ),
                "1 KiB",
                format!(
                    "{} ({}); baseline Envoy {}",
                    fmt_spread(spread(&added), " µs", 1),
                    fmt_spread(spread(&ratio), "×", 3),
                    fmt_spread(spread(&base), " µs", 1)
                ),
                "≤ 10 µs",
                cost_verdict(&added, 10.0, true),
            );
        }
        // Added p50 in µs per repetition, and the ratio of p50s.
        let added = |baseline: bool, case: ChainCase| -> Option<(Vec<f64>, Vec<f64>, u64)> {
            let none = runs.get(&(baseline, ChainCase::None))?;
            let with = runs.get(&(baseline, case))?;
            let added = with.iter().zip(none).map(|(w, n)| (w.p50_ms - n.p50_ms) * 1000.0);
            let ratio = with.iter().zip(none).map(|(w, n)| w.p50_ms / n.p50_ms);
            Some((added.collect(), ratio.collect(), with.iter().map(|r| r.failures).sum()))
        };
        for (case, goal_us) in [(ChainCase::Cached, 10.0), (ChainCase::Cold, 600.0)] {
            let Some((with, ratio, failures)) = added(false, case) else { continue };
            self.row(
                format!(
                    "{}: added p50 latency per request, p50 minus the no-chain p50 of the same \
                     interleaved run (ratio of p50s), {setup}; failures {failures}",
                    case.name()
                ),
                "1 KiB",
                format!(
                    "{} ({})",
                    fmt_spread(spread(&with), " µs", 0),
                    fmt_spread(spread(&ratio), "×", 3)
                ),
                &format!("≤ {goal_us:.0} µs"),
                cost_verdict(&with, goal_us, failures == 0),
            );
            let trimmed = |baseline: bool| -> Vec<f64> {
                let (Some(none), Some(with)) =
                    (runs.get(&(baseline, ChainCase::None)), runs.get(&(baseline, case)))
                else {
                    return Vec::new();
                };
                with.iter().zip(none).map(|(w, n)| (w.trimmed_ms - n.trimmed_ms) * 1000.0).collect()
            };
            let (own, base) = (trimmed(false), trimmed(true));
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            self.figure(
                format!(
                    "{}: added trimmed-mean latency (10th to 90th percentile), minus the \
                     no-chain requests' of the same run, {setup}; mean over the repetitions; \
                     the same through the baseline Envoy",
                    case.name()
                ),
                "1 KiB",
                format!(
                    "{} (mean {:.1} µs); baseline Envoy {} (mean {:.1} µs)",
                    fmt_spread(spread(&own), " µs", 0),
                    mean(&own),
                    fmt_spread(spread(&base), " µs", 0),
                    mean(&base)
                ),
            );
            let paired: Vec<f64> = runs
                .get(&(false, case))
                .map(|r| r.iter().map(|r| r.paired_us).collect())
                .unwrap_or_default();
            self.figure(
                format!(
                    "{}: median over the run's triples of (its latency minus the no-chain \
                     request's of the same triple), {setup}",
                    case.name()
                ),
                "1 KiB",
                fmt_spread(spread(&paired), " µs", 0),
            );
            let Some((base, _, _)) = added(true, case) else { continue };
            let own: Vec<f64> = with.iter().zip(&base).map(|(w, b)| w - b).collect();
            self.figure(
                format!(
                    "{}: the same requests through the baseline Envoy (no filter): added p50 \
                     (the header's cost to Envoy and the upstream); Warrant's added p50 minus \
                     it (the filter's own share)",
                    case.name()
                ),
                "1 KiB",
                format!(
                    "{}; filter's share {}",
                    fmt_spread(spread(&base), " µs", 0),
                    fmt_spread(spread(&own), " µs", 0)
                ),
            );
        }
    }

    fn scans(&mut self, setup: &str, runs: &ScanRuns) {
        for (size_index, (size_name, _, rate)) in SIZES.iter().enumerate() {
            let goal = match size_index {
                0 => Some(100.0),
                2 => Some(50.0),
                _ => None,
            };
            for load in [ScanLoad::OpenLoop, ScanLoad::Saturation] {
                let figures: Vec<(f64, f64, f64)> = SCAN_TRAFFIC
                    .iter()
                    .filter_map(|t| runs.get(&(size_index, *t, load)).map(|r| spread(r)))
                    .collect();
                if figures.is_empty() {
                    continue;
                }
                let how = match load {
                    ScanLoad::OpenLoop => format!("open loop at {rate} req/s"),
                    ScanLoad::Saturation => format!("saturated (`wrk -c{WRK_CONNECTIONS}`)"),
                };
                let value: Vec<String> = figures.iter().map(|f| fmt_spread(*f, "", 1)).collect();
                let met = |g: f64| verdict(figures.iter().all(|f| f.1 >= g));
                self.row(
                    format!(
                        "rule engine inside Envoy (the filter's `warrant.scan` counters: bytes \
                         of content ÷ the engine's time), {setup}, {how}: envelope prose / MCP \
                         arguments / mixed traffic, MB/s"
                    ),
                    size_name,
                    value.join(" / "),
                    &goal.map_or(String::new(), |g| format!("≥ {g:.0} MB/s")),
                    goal.map_or(String::new(), met),
                );
            }
        }
    }

    fn startup(
        &mut self,
        filter: &[f64],
        base: &[f64],
        configure: &[f64],
        first: &BTreeMap<Setup, f64>,
    ) {
        let extra: Vec<f64> = filter.iter().zip(base).map(|(f, b)| f - b).collect();
        let med = spread(&extra).1;
        self.row(
            "VM start, full library: `envoy --mode validate` with the filter minus without \
             (compiles the module, runs on_configure)"
                .into(),
            "–",
            format!(
                "{} (with {}, without {})",
                fmt_spread(spread(&extra), " ms", 0),
                fmt_spread(spread(filter), " ms", 0),
                fmt_spread(spread(base), " ms", 0)
            ),
            "≤ 300 ms",
            verdict(med <= 300.0),
        );
        self.row(
            "VM start: on_vm_start → on_configure done, per VM (Envoy's wasm log timestamps, \
             ms resolution)"
                .into(),
            "–",
            format!("{} over {} VMs", fmt_spread(spread(configure), " ms", 0), configure.len()),
            "",
            String::new(),
        );
        let base_first = first.get(&Setup::Baseline).copied().unwrap_or(f64::NAN);
        for (setup, ms) in first.iter().filter(|(s, _)| **s != Setup::Baseline) {
            self.row(
                format!(
                    "First request after start, {} (rules compile lazily on first use), \
                     minus baseline's first request",
                    setup.name()
                ),
                "1 KiB",
                format!("{:.0} ms ({ms:.0} ms vs {base_first:.1} ms)", ms - base_first),
                "",
                String::new(),
            );
        }
    }

    fn memory(
        &mut self,
        memory: &BTreeMap<Setup, (u64, Vec<u64>)>,
        concurrency: u32,
        only: &[Only],
        examples: usize,
    ) {
        const MIB: f64 = 1024.0 * 1024.0;
        let runs = if only.is_empty() {
            "the runs".to_string()
        } else {
            let steps: Vec<&str> = only
                .iter()
                .map(|s| match s {
                    Only::Chains => "the chain step (4b)",
                    Only::Scans => "the scan step (4c)",
                })
                .collect();
            steps.join(" and ")
        };
        let after = format!("{runs} and the library's {examples} examples (4d)");
        // `--only scans` starts no baseline: then no RSS row.
        let base_rss = memory.get(&Setup::Baseline).map(|m| m.0);
        for (setup, (rss, vms)) in memory.iter().filter(|(s, _)| s.runs_warrant()) {
            let sizes: Vec<f64> = vms.iter().map(|b| *b as f64 / MIB).collect();
            let max = sizes.iter().copied().fold(0.0_f64, f64::max);
            self.row(
                format!(
                    "Wasm linear memory per VM after {after}, {} (resident pages of each V8 \
                     wasm memory reservation in /proc/PID/smaps; {} VMs expected: {} workers \
                     + main)",
                    setup.name(),
                    concurrency + 1,
                    concurrency
                ),
                "–",
                format!(
                    "{} (largest {max:.1} MiB; VMs found: {})",
                    sizes.iter().map(|s| format!("{s:.1}")).collect::<Vec<_>>().join(", ") + " MiB",
                    sizes.len()
                ),
                "≤ 32 MiB",
                if sizes.is_empty() { "not found".into() } else { verdict(max <= 32.0) },
            );
            let Some(base_rss) = base_rss else { continue };
            self.row(
                format!("Envoy RSS after {after}, {} minus baseline", setup.name()),
                "–",
                format!(
                    "{:.1} MiB ({:.1} vs {:.1} MiB)",
                    (*rss as f64 - base_rss as f64) / MIB,
                    *rss as f64 / MIB,
                    base_rss as f64 / MIB
                ),
                "",
                String::new(),
            );
        }
    }

    fn components(&mut self, files: &[(String, PathBuf)], _async: bool) {
        for (name, file) in files {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let results = parse_criterion(&text);
            if results.is_empty() {
                self.row(
                    format!("component `{name}`: no Criterion results (see {})", file.display()),
                    "–",
                    "–".into(),
                    "",
                    String::new(),
                );
                continue;
            }
            for r in &results {
                let body = ["1KiB", "16KiB", "64KiB", "256KiB", "1MiB"]
                    .iter()
                    .find(|s| r.id.ends_with(*s))
                    .map_or("–".to_string(), |s| s.replace("KiB", " KiB").replace("MiB", " MiB"));
                let value = match &r.throughput {
                    Some(t) => format!("{} ({t})", r.time),
                    None => r.time.clone(),
                };
                self.row(format!("component `{name}`: {}", r.id), &body, value, "", String::new());
            }
            if name.starts_with("warrant-rules") {
                self.linearity(&results);
            }
        }
    }

    /// Time per byte at 1 MiB over time per byte at 64 KiB, for the engine.
    fn linearity(&mut self, results: &[CriterionResult]) {
        let find = |suffix: &str| {
            results.iter().find(|r| r.id.contains("engine") && r.id.ends_with(suffix))
        };
        if let (Some(small), Some(large)) = (find("64KiB"), find("1MiB")) {
            let ratio = (large.seconds / 16.0) / small.seconds;
            self.row(
                "rule scan linearity: time per byte at 1 MiB ÷ at 64 KiB (engine, full library)"
                    .into(),
                "1 MiB",
                format!("{ratio:.2}"),
                "linear (≤ 2)",
                verdict(ratio <= 2.0),
            );
        }
    }

    fn render(&self, args: &Args, plan: &Plan, elapsed: Duration) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "| Measure | Body | Value: median [min–max] | Goal | Result |");
        let _ = writeln!(out, "|---|---|---|---|---|");
        for [measure, body, value, goal, result] in &self.rows {
            let _ = writeln!(out, "| {measure} | {body} | {value} | {goal} | {result} |");
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "- Machine: {}.", bench::machine());
        let _ = writeln!(
            out,
            "- Envoy: `--concurrency {}`, one stack per configuration (own upstream and sidecar), \
             all on 127.0.0.1; the load generators share the same CPUs.",
            args.concurrency
        );
        let _ = writeln!(
            out,
            "- Saturation: `wrk -t1 -c{WRK_CONNECTIONS} -d{}s`; latency: fixed-rate open loop \
             over {OPEN_LOOP_CONNECTIONS} keep-alive connections, measured from each request's \
             scheduled send time, {} s per run; {} repetitions, configurations rotated between \
             repetitions; ratios and added latencies are paired within a repetition.",
            plan.saturation.as_secs(),
            plan.latency.as_secs(),
            plan.reps
        );
        let _ = writeln!(
            out,
            "- Chain rows: per repetition one open-loop run of {} s at {CHAIN_RATE} req/s in \
             total over {CHAIN_CONNECTIONS} connections, request i being no chain / cached / cold in the order no chain, cached, cold, cached, no chain, cold (each of the first two follows a cold one equally often), so each case's p50 is \
             compared with the no-chain p50 of the same run.",
            plan.latency.as_secs() * ChainCase::ALL.len() as u64
        );
        let _ = writeln!(out, "- Wall time: {:.0} s.", elapsed.as_secs_f64());
        if let Some(facts) = &args.facts {
            let _ =
                writeln!(out, "- The filter's `facts` setting: `{facts:?}` (default: all nine).");
        }
        let _ = writeln!(out, "- Command: `{}`", args.command);
        out
    }
}

/// The issue's throughput goals: (goal text, met?).
fn throughput_goal(size_index: usize, setup: Setup, ratio: f64) -> (&'static str, Option<bool>) {
    match (size_index, setup) {
        // The floor is a reference, not Warrant: no goal.
        (_, Setup::Floor) => ("", None),
        (0, Setup::Async) => ("≥ 0.85×", Some(ratio >= 0.85)),
        (1, _) => ("≥ 0.60×", Some(ratio >= 0.60)),
        _ => ("", None),
    }
}

/// The issue's latency goals on the added p99: (goal text, met?).
fn latency_goal(size_index: usize, setup: Setup, added_p99: f64) -> (&'static str, Option<bool>) {
    match (size_index, setup) {
        (0, Setup::Async) => ("p99 ≤ +0.5 ms", Some(added_p99 <= 0.5)),
        (0, Setup::Sync | Setup::SyncNormal) => ("p99 ≤ +2 ms", Some(added_p99 <= 2.0)),
        _ => ("", None),
    }
}

#[cfg(test)]
mod tests {
    use super::cost_verdict;

    #[test]
    fn a_cost_is_judged_only_when_its_repetitions_agree_within_the_goal() {
        assert_eq!(cost_verdict(&[7.4, 7.5, 9.4], 10.0, true), "met");
        assert_eq!(cost_verdict(&[7.4, 7.5, 9.4], 10.0, false), "**missed**");
        // Every repetition over the goal, however far apart.
        assert_eq!(cost_verdict(&[12.0, 18.4, 23.9], 10.0, true), "**missed**");
        // Across the goal: the median, if the spread is finer than the goal.
        assert_eq!(cost_verdict(&[6.7, 8.5, 11.3], 10.0, true), "met");
        assert_eq!(cost_verdict(&[8.0, 10.5, 11.0], 10.0, true), "**missed**");
        let coarse = cost_verdict(&[-27.0, 3.4, 17.8], 10.0, true);
        assert!(coarse.starts_with("not resolved: the repetitions spread over 45 µs"), "{coarse}");
    }
}
