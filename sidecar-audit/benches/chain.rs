//! The audit chain's speed, measured against plain SQLite in the same run.
//!
//! `cargo bench -p warrant-audit --bench chain [-- --records N --rounds R]`
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
//! checkpoint signature checked). Its `cpu` rate is per second of the
//! reading thread's CPU time (the hashing thread runs beside it); the rate
//! per second of both threads' CPU time is printed after the summary.
//!
//! The goals (issue 6): chain ≥ 50,000 records/s on 2 cores and ≥ half the
//! plain rate of the same run; verify ≥ 1,000,000 entries/s. The rates are
//! medians over the rounds; the ratio is the median of each round's
//! chain/plain, so a noisy neighbour slows both sides of a pair.
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
use warrant_audit::verify::{verify_connection, Options};
use warrant_wire::AuditRecord;

const BATCH: usize = 512;
const CHECKPOINT_EVERY: usize = 1000;
const WRITER_CLIENTS: usize = 256;

struct Args {
    records: usize,
    rounds: usize,
}

fn args() -> Args {
    let mut out = Args { records: 100_000, rounds: 5 };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--records" => out.records = value.parse().expect("--records N"),
            "--rounds" => out.rounds = value.parse().expect("--rounds R"),
            "--measurement-time" => {
                if value.parse::<f64>().unwrap_or(3.0) < 2.0 {
                    out = Args { records: 20_000, rounds: 3 };
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

/// Verifies the chain database; returns entries per second of wall time,
/// of this (the reading) thread's CPU time, and of the process's CPU time
/// (both threads: reading and hashing).
fn verify(db: &Path, expected: u64) -> (f64, f64, f64) {
    let conn = Store::open_read_only(db).unwrap();
    let options = Options { key: Some(key().verifying_key()), ..Options::default() };
    let (start, cpu, all) = (Instant::now(), thread_cpu(), process_cpu());
    let report = verify_connection(&conn, &options, &mut |_, _| {}).unwrap();
    let n = report.entries as f64;
    let rates =
        (n / start.elapsed().as_secs_f64(), n / (thread_cpu() - cpu), n / (process_cpu() - all));
    assert!(report.valid, "{report:?}");
    assert_eq!(report.entries, expected);
    rates
}

/// This thread's time on a CPU, in seconds (`/proc/thread-self/schedstat`,
/// nanoseconds): what a run costs when no other process wants the core.
fn thread_cpu() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse::<f64>().ok()))
        .map_or(f64::NAN, |ns| ns / 1e9)
}

/// The process's time on CPUs, in seconds, over all its threads, also
/// those that have ended (`/proc/self/stat` utime + stime, in the kernel's
/// USER_HZ ticks, 100 per second on Linux: a 10 ms resolution).
fn process_cpu() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime is field 14.
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks =
                fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(f64::NAN)
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
    let mut all: Vec<[f64; 8]> = Vec::new();
    let mut verify_cpu: Vec<f64> = Vec::new();
    let mut verify_all: Vec<f64> = Vec::new();
    for round in 0..args.rounds {
        let (p, p_cpu) = plain(&dir.path().join(format!("plain-{round}.db")), &records);
        let chain_db = dir.path().join(format!("chain-{round}.db"));
        let (c, c_cpu) = chain(&chain_db, &records);
        let (w, b) = writer(&dir.path().join(format!("writer-{round}.db")), &records);
        let (v, v_cpu, v_all) = verify(&chain_db, args.records as u64);
        eprintln!(
            "round {round}: plain {p:.0}/s (cpu {p_cpu:.0}/s), chain {c:.0}/s (cpu {c_cpu:.0}/s) \
             ratio {:.2}, writer {w:.0}/s (batches of {b:.0}), verify {v:.0}/s (cpu: reading thread {v_cpu:.0}/s, both {v_all:.0}/s)",
            c / p
        );
        all.push([p, p_cpu, c, c_cpu, c / p, w, b, v]);
        verify_cpu.push(v_cpu);
        verify_all.push(v_all);
        for name in ["plain", "chain", "writer"] {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(dir.path().join(format!("{name}-{round}.db{suffix}")));
            }
        }
    }
    let column = |i: usize| all.iter().map(|r| r[i]).collect::<Vec<f64>>();
    report("audit/append/plain", &column(0));
    report("audit/append/chain", &column(2));
    report("audit/append/writer", &column(5));
    report("audit/verify", &column(7));
    let m = |i: usize| median(&column(i));
    let (chain_rate, ratio, verify_rate) = (m(2), m(4), m(7));
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!();
    println!(
        "  summary ({} records x {} rounds, medians; cpu = per second on a CPU):",
        args.records, args.rounds
    );
    println!("    plain SQLite inserts     {:>10.0} records/s   cpu {:>10.0}/s", m(0), m(1));
    println!(
        "    chain + checkpoints      {chain_rate:>10.0} records/s   cpu {:>10.0}/s   goal >= 50000: {}",
        m(3),
        verdict(chain_rate >= 50_000.0)
    );
    println!(
        "    chain / plain            {ratio:>10.2}                                goal >= 0.50: {}",
        verdict(ratio >= 0.5)
    );
    println!("    writer thread            {:>10.0} records/s   (mean batch {:.0})", m(5), m(6));
    println!(
        "    verify                   {verify_rate:>10.0} entries/s   cpu {:>10.0}/s   goal >= 1000000: {}",
        median(&verify_cpu),
        verdict(verify_rate >= 1_000_000.0)
    );
    println!(
        "      (verify cpu: per second of the reading thread; both threads together: {:.0}/s)",
        median(&verify_all)
    );
}
