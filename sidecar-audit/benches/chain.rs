//! The audit chain's speed, measured against plain SQLite in the same run.
//!
//! `cargo bench -p warrant-audit --bench chain [-- --records N --rounds R]
//! [--only verify]`
//!
//! Every round writes the same records (shaped like the filter's: ids,
//! names, hex hashes, a session; about 450 bytes of columns) into fresh
//! database files, in this order:
//!
//! - **plain**: batched `INSERT`s of the same rows into the same `entries`
//!   table (a database made by [`Store::open`]: same schema, same indexes,
//!   WAL with `synchronous = FULL`), 512 rows per transaction: what storing
//!   the records costs with no chain (no hashing, no head read, no
//!   duplicate lookup, no checkpoints);
//! - **chain**: [`Store::append_batch_signed`] with the same batches,
//!   signing a checkpoint (in the batch's transaction) each time 1000
//!   entries are uncovered (the sidecar's default `--checkpoint-every`):
//!   the durable chain, as the writer thread does it;
//! - **writer**: the sidecar's real writer thread ([`Writer`]) fed by 256
//!   concurrent tasks on a two-thread runtime, with the default checkpoint
//!   policy: group commit sizes as the load makes them;
//!
//! and then **verify**: [`verify_connection`] with the key over the chain
//! database just written (every entry recomputed and linked, every
//! checkpoint signature checked), twice, in alternating order: with the
//! default [`Split`] (the entries in ranges over the machine's cores), and
//! as one range (a reading thread and a hashing thread: what `verify` did
//! before ranges), the baseline of the same round. The `cpu` rates are per
//! second of CPU time of the whole process (every thread, also those that
//! ended); for one range also per second of the reading thread's.
//! `--only verify` leaves out plain and writer (the chain is still
//! written: it is what is verified).
//!
//! The goals (issue 6): chain ≥ 50,000 records/s on 2 cores and ≥ half the
//! plain rate of the same run; verify ≥ 1,000,000 entries/s. The rates are
//! medians over the rounds; the ratios are the medians of each round's
//! chain/plain and ranges/one range, so a noisy neighbour slows both sides
//! of a pair.
//!
//! Output: Criterion-style `time:`/`thrpt:` lines (per record; what
//! `scripts/bench` reads), then a summary with the ratio and the goals. The
//! Criterion options `scripts/bench` passes are accepted; a
//! `--measurement-time` under 2 s (its `--quick`) means fewer records.
//! Files go to a temporary directory (`WARRANT_BENCH_DIR` to choose the
//! file system: fsync cost is the file system's).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use rusqlite::params_from_iter;
use rusqlite::types::{ToSqlOutput, ValueRef};
use warrant_audit::chain::{Entry, FieldValue};
use warrant_audit::metrics::Metrics;
use warrant_audit::server::{CheckpointPolicy, Writer};
use warrant_audit::store::Store;
use warrant_audit::verify::{verify_connection, Options, Split};
use warrant_wire::AuditRecord;

const BATCH: usize = 512;
const CHECKPOINT_EVERY: usize = 1000;
const WRITER_CLIENTS: usize = 256;

struct Args {
    records: usize,
    rounds: usize,
    only_verify: bool,
}

fn args() -> Args {
    let mut out = Args { records: 100_000, rounds: 5, only_verify: false };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--records" => out.records = value.parse().expect("--records N"),
            "--rounds" => out.rounds = value.parse().expect("--rounds R"),
            "--only" => {
                assert_eq!(value, "verify", "--only verify");
                out.only_verify = true;
            }
            "--measurement-time" => {
                if value.parse::<f64>().unwrap_or(3.0) < 2.0 {
                    (out.records, out.rounds) = (20_000, 3);
                }
            }
            // Other Criterion options (--bench, --warm-up-time, ...).
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    out
}

fn record(i: usize) -> AuditRecord {
    let hex = |tag: u8| {
        let mut s = format!("{i:016x}");
        while s.len() < 64 {
            s.push(char::from(b'a' + (tag + s.len() as u8) % 6));
        }
        s
    };
    AuditRecord {
        message_id: format!("{:08x}-bench-4000-8000-{i:012x}", i as u32),
        received_at_unix_nanos: 1_790_000_000_000_000_000 + i as i64,
        node: "envoy-bench".into(),
        from: format!("agent-{}", i % 16),
        to: "bob".into(),
        method: "POST".into(),
        authority: "bob.agents.local".into(),
        path: "/v1/message".into(),
        body_sha256: hex(1),
        status: "delivered".into(),
        decision: "allow".into(),
        http_status: 0,
        latency_micros: 180 + (i % 50) as u64,
        identity_source: "envelope".into(),
        signature: "verified".into(),
        key_fingerprint: hex(2),
        session_id: format!("{:032x}", i / 100),
        ..Default::default()
    }
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

/// Plain batched inserts of the same rows; returns records per second of
/// wall time and of this thread's CPU time.
fn plain(db: &Path, records: &[AuditRecord]) -> (f64, f64) {
    drop(Store::open(db).unwrap());
    let mut conn = rusqlite::Connection::open(db).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    let names = Entry::FIELDS.join(", ");
    let marks: Vec<String> = (1..=Entry::FIELDS.len() + 3).map(|i| format!("?{i}")).collect();
    let sql = format!(
        "INSERT INTO entries (seq, {names}, prev_hash, entry_hash) VALUES ({})",
        marks.join(", ")
    );
    let zeros = [0u8; 32];
    let (start, cpu) = (Instant::now(), thread_cpu());
    let mut seq = 0i64;
    for batch in records.chunks(BATCH) {
        let tx = conn.transaction().unwrap();
        {
            let mut stmt = tx.prepare_cached(&sql).unwrap();
            for record in batch {
                seq += 1;
                // Bound as the store binds: borrowed, no copies.
                let entry = Entry::from_record(record, 1);
                let mut values: Vec<ToSqlOutput<'_>> = Vec::with_capacity(31);
                values.push(ToSqlOutput::Borrowed(ValueRef::Integer(seq)));
                values.extend(entry.values().into_iter().map(|v| match v {
                    FieldValue::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
                    FieldValue::Integer(n) => ToSqlOutput::Borrowed(ValueRef::Integer(n)),
                }));
                values.push(ToSqlOutput::Borrowed(ValueRef::Blob(&zeros)));
                values.push(ToSqlOutput::Borrowed(ValueRef::Blob(&zeros)));
                stmt.execute(params_from_iter(values)).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let n = records.len() as f64;
    (n / start.elapsed().as_secs_f64(), n / (thread_cpu() - cpu))
}

/// The durable chain with checkpoints; returns records per second of wall
/// time and of this thread's CPU time (which leaves out waiting for fsync).
fn chain(db: &Path, records: &[AuditRecord]) -> (f64, f64) {
    let key = key();
    let mut store = Store::open(db).unwrap();
    let (start, cpu) = (Instant::now(), thread_cpu());
    let mut uncovered = 0;
    for batch in records.chunks(BATCH) {
        // As the writer thread does: a checkpoint due with a batch goes in
        // its transaction.
        let due = uncovered + batch.len() >= CHECKPOINT_EVERY;
        let (_, signed) = store.append_batch_signed(batch, 1, due.then_some(&key)).unwrap();
        uncovered += batch.len();
        if due {
            signed.expect("a new checkpoint");
            uncovered = 0;
        }
    }
    store.checkpoint(&key, 3).unwrap();
    let n = records.len() as f64;
    (n / start.elapsed().as_secs_f64(), n / (thread_cpu() - cpu))
}

/// The writer thread fed by concurrent tasks; returns records per second
/// and the mean batch size.
fn writer(db: &Path, records: &[AuditRecord]) -> (f64, f64) {
    let store = Store::open(db).unwrap();
    let metrics = Arc::new(Metrics::default());
    let (writer, done) =
        Writer::start(store, key(), CheckpointPolicy::default(), metrics.clone()).unwrap();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let per_client = records.len().div_ceil(WRITER_CLIENTS);
    let start = Instant::now();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for chunk in records.chunks(per_client) {
            let writer = writer.clone();
            let chunk = chunk.to_vec();
            tasks.push(tokio::spawn(async move {
                for record in chunk {
                    writer.append(record).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    drop(writer);
    done.recv_timeout(Duration::from_secs(60)).unwrap();
    let text = metrics.render(Default::default(), 0);
    let batches = metric(&text, "warrant_audit_batches_total ").max(1.0);
    (records.len() as f64 / elapsed, records.len() as f64 / batches)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Verifies the chain database split by `split`; returns entries per
/// second of wall time, of this thread's CPU time (the reading thread when
/// the walk is one range) and of the process's CPU time (every thread).
fn verify(db: &Path, expected: u64, split: Split) -> (f64, f64, f64) {
    let conn = Store::open_read_only(db).unwrap();
    let options = Options { key: Some(key().verifying_key()), split, ..Options::default() };
    let (start, cpu, all) = (Instant::now(), thread_cpu(), process_cpu());
    let report = verify_connection(&conn, &options, &mut |_, _| {}).unwrap();
    let n = report.entries as f64;
    let rates =
        (n / start.elapsed().as_secs_f64(), n / (thread_cpu() - cpu), n / (process_cpu() - all));
    assert!(report.valid, "{report:?}");
    assert_eq!(report.entries, expected);
    rates
}

/// This thread's time on a CPU, in seconds: what a run costs when no other
/// process wants the core.
fn thread_cpu() -> f64 {
    cpu_seconds(rustix::time::ClockId::ThreadCPUTime)
}

/// The process's time on CPUs, in seconds, over all its threads, also
/// those that have ended.
fn process_cpu() -> f64 {
    cpu_seconds(rustix::time::ClockId::ProcessCPUTime)
}

fn cpu_seconds(clock: rustix::time::ClockId) -> f64 {
    let t = rustix::time::clock_gettime(clock);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(*v), hi.max(*v)))
}

/// A duration per element, in Criterion's units.
fn per(seconds: f64) -> String {
    if seconds < 1e-6 {
        format!("{:.4} ns", seconds * 1e9)
    } else if seconds < 1e-3 {
        format!("{:.4} µs", seconds * 1e6)
    } else {
        format!("{:.4} ms", seconds * 1e3)
    }
}

fn rate(per_second: f64) -> String {
    if per_second >= 1e6 {
        format!("{:.4} Melem/s", per_second / 1e6)
    } else {
        format!("{:.4} Kelem/s", per_second / 1e3)
    }
}

/// Prints one Criterion-style result from per-round rates.
fn report(id: &str, rates: &[f64]) {
    let (lo, hi) = min_max(rates);
    let mid = median(rates);
    println!("{id:<24}time:   [{} {} {}]", per(1.0 / hi), per(1.0 / mid), per(1.0 / lo));
    println!("{:<24}thrpt:  [{} {} {}]", "", rate(lo), rate(mid), rate(hi));
}

/// One round's rates: (wall, CPU) for plain and chain, (rate, mean batch)
/// for the writer, and [`verify`]'s three for each split.
struct Round {
    plain: (f64, f64),
    chain: (f64, f64),
    writer: (f64, f64),
    ranges: (f64, f64, f64),
    one: (f64, f64, f64),
}

fn main() {
    let args = args();
    let records: Vec<AuditRecord> = (0..args.records).map(record).collect();
    let dir = match std::env::var_os("WARRANT_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    eprintln!(
        "chain bench: {} records x {} rounds in {} ({} cores)",
        args.records,
        args.rounds,
        dir.path().display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // One range with its hashing thread, as `verify` walked before ranges.
    let one_range = Split { max_ranges: 2, min_range_entries: args.records as u64 };
    let mut rows: Vec<Round> = Vec::new();
    for round in 0..args.rounds {
        let (p, p_cpu) = if args.only_verify {
            (f64::NAN, f64::NAN)
        } else {
            plain(&dir.path().join(format!("plain-{round}.db")), &records)
        };
        let chain_db = dir.path().join(format!("chain-{round}.db"));
        let (c, c_cpu) = chain(&chain_db, &records);
        let (w, b) = if args.only_verify {
            (f64::NAN, f64::NAN)
        } else {
            writer(&dir.path().join(format!("writer-{round}.db")), &records)
        };
        let n = args.records as u64;
        let (ranges, one) = if round % 2 == 0 {
            let ranges = verify(&chain_db, n, Split::default());
            (ranges, verify(&chain_db, n, one_range))
        } else {
            let one = verify(&chain_db, n, one_range);
            (verify(&chain_db, n, Split::default()), one)
        };
        eprintln!(
            "round {round}: plain {p:.0}/s (cpu {p_cpu:.0}/s), chain {c:.0}/s (cpu {c_cpu:.0}/s) \
             ratio {:.2}, writer {w:.0}/s (batches of {b:.0}), verify {:.0}/s (cpu {:.0}/s), \
             one range {:.0}/s (cpu: reading thread {:.0}/s, both {:.0}/s)",
            c / p,
            ranges.0,
            ranges.2,
            one.0,
            one.1,
            one.2
        );
        let row = Round { plain: (p, p_cpu), chain: (c, c_cpu), writer: (w, b), ranges, one };
        rows.push(row);
        for name in ["plain", "chain", "writer"] {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(dir.path().join(format!("{name}-{round}.db{suffix}")));
            }
        }
    }
    let column = |f: fn(&Round) -> f64| rows.iter().map(f).collect::<Vec<f64>>();
    let m = |f: fn(&Round) -> f64| median(&column(f));
    if !args.only_verify {
        report("audit/append/plain", &column(|r| r.plain.0));
        report("audit/append/chain", &column(|r| r.chain.0));
        report("audit/append/writer", &column(|r| r.writer.0));
    }
    report("audit/verify", &column(|r| r.ranges.0));
    report("audit/verify/one-range", &column(|r| r.one.0));
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!();
    println!(
        "  summary ({} records x {} rounds, medians; cpu = per second on a CPU):",
        args.records, args.rounds
    );
    if !args.only_verify {
        let (chain_rate, ratio) = (m(|r| r.chain.0), m(|r| r.chain.0 / r.plain.0));
        println!(
            "    plain SQLite inserts     {:>10.0} records/s   cpu {:>10.0}/s",
            m(|r| r.plain.0),
            m(|r| r.plain.1)
        );
        println!(
            "    chain + checkpoints      {chain_rate:>10.0} records/s   cpu {:>10.0}/s   goal >= 50000: {}",
            m(|r| r.chain.1),
            verdict(chain_rate >= 50_000.0)
        );
        println!(
            "    chain / plain            {ratio:>10.2}                                goal >= 0.50: {}",
            verdict(ratio >= 0.5)
        );
        println!(
            "    writer thread            {:>10.0} records/s   (mean batch {:.0})",
            m(|r| r.writer.0),
            m(|r| r.writer.1)
        );
    }
    let verify_rate = m(|r| r.ranges.0);
    println!(
        "    verify                   {verify_rate:>10.0} entries/s   cpu {:>10.0}/s   goal >= 1000000: {}",
        m(|r| r.ranges.2),
        verdict(verify_rate >= 1_000_000.0)
    );
    println!(
        "    verify, one range        {:>10.0} entries/s   cpu {:>10.0}/s   (reading thread {:.0}/s)",
        m(|r| r.one.0),
        m(|r| r.one.2),
        m(|r| r.one.1)
    );
    println!(
        "    verify / one range       {:>10.2}   ({} ranges by default on this machine)",
        m(|r| r.ranges.0 / r.one.0),
        Split::default().ranges(args.records as u64)
    );
}
