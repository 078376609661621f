//! The sidecar's counters, and their Prometheus text form for `/metrics`.
//!
//! [`Metrics`] is shared (in an `Arc`) by the writer thread, which counts,
//! and the page server, which renders. Gauges about the chain itself (last
//! seq, checkpoint age) are read from the database at scrape time by the
//! page, so they are right even for a database another process writes.
//!
//! Exposed names (text format 0.0.4):
//!
//! | name                                   | type    | meaning                              |
//! |----------------------------------------|---------|--------------------------------------|
//! | `warrant_audit_records_appended_total` | counter | records stored (not duplicates)      |
//! | `warrant_audit_duplicates_total`       | counter | retransmissions answered from storage |
//! | `warrant_audit_batches_total`          | counter | group commits                        |
//! | `warrant_audit_append_errors_total`    | counter | batches SQLite refused               |
//! | `warrant_audit_checkpoints_total`      | counter | checkpoints signed and stored        |
//! | `warrant_audit_checkpoint_errors_total`| counter | checkpoints that could not be stored |
//! | `warrant_audit_last_seq`               | gauge   | seq of the last entry                |
//! | `warrant_audit_last_checkpoint_seq`    | gauge   | seq the newest checkpoint covers     |
//! | `warrant_audit_unsigned_entries`       | gauge   | entries after the newest checkpoint  |
//! | `warrant_audit_checkpoint_age_seconds` | gauge   | now minus the newest checkpoint's time (absent without one) |

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters kept by the writer.
#[derive(Debug, Default)]
pub struct Metrics {
    records_appended: AtomicU64,
    duplicates: AtomicU64,
    batches: AtomicU64,
    append_errors: AtomicU64,
    checkpoints: AtomicU64,
    checkpoint_errors: AtomicU64,
}

/// The chain's state at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChainGauges {
    /// Seq of the last entry.
    pub last_seq: u64,
    /// Seq and time (Unix ns) of the newest checkpoint.
    pub last_checkpoint: Option<(u64, i64)>,
}

impl Metrics {
    /// Counts one committed batch.
    pub fn batch_committed(&self, appended: u64, duplicates: u64) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.records_appended.fetch_add(appended, Ordering::Relaxed);
        self.duplicates.fetch_add(duplicates, Ordering::Relaxed);
    }

    /// Counts one refused batch.
    pub fn batch_failed(&self) {
        self.append_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one stored checkpoint.
    pub fn checkpoint_stored(&self) {
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one checkpoint that could not be stored.
    pub fn checkpoint_failed(&self) {
        self.checkpoint_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Records appended so far.
    pub fn records_appended(&self) -> u64 {
        self.records_appended.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn render(&self, chain: ChainGauges, now_ns: i64) -> String {
        let mut out = String::new();
        let counters = [
            ("records_appended_total", "Records stored (not duplicates).", &self.records_appended),
            ("duplicates_total", "Retransmitted records answered from storage.", &self.duplicates),
            ("batches_total", "Group commits.", &self.batches),
            ("append_errors_total", "Batches the database refused.", &self.append_errors),
            ("checkpoints_total", "Checkpoints signed and stored.", &self.checkpoints),
            (
                "checkpoint_errors_total",
                "Checkpoints that could not be stored.",
                &self.checkpoint_errors,
            ),
        ];
        for (name, help, value) in counters {
            metric(&mut out, name, help, "counter", value.load(Ordering::Relaxed).to_string());
        }
        let covered = chain.last_checkpoint.map_or(0, |(seq, _)| seq);
        metric(&mut out, "last_seq", "Seq of the last entry.", "gauge", chain.last_seq.to_string());
        metric(
            &mut out,
            "last_checkpoint_seq",
            "Seq the newest checkpoint covers.",
            "gauge",
            covered.to_string(),
        );
        metric(
            &mut out,
            "unsigned_entries",
            "Entries after the newest checkpoint.",
            "gauge",
            chain.last_seq.saturating_sub(covered).to_string(),
        );
        if let Some((_, time)) = chain.last_checkpoint {
            let age = now_ns.saturating_sub(time).max(0) as f64 / 1e9;
            metric(
                &mut out,
                "checkpoint_age_seconds",
                "Seconds since the newest checkpoint was signed.",
                "gauge",
                format!("{age:.3}"),
            );
        }
        out
    }
}

fn metric(out: &mut String, name: &str, help: &str, kind: &str, value: String) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP warrant_audit_{name} {help}");
    let _ = writeln!(out, "# TYPE warrant_audit_{name} {kind}");
    let _ = writeln!(out, "warrant_audit_{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_chain_gauges() {
        let metrics = Metrics::default();
        metrics.batch_committed(3, 1);
        metrics.batch_failed();
        metrics.checkpoint_stored();
        let text = metrics.render(
            ChainGauges { last_seq: 10, last_checkpoint: Some((8, 1_000_000_000)) },
            3_500_000_000,
        );
        for line in [
            "warrant_audit_records_appended_total 3",
            "warrant_audit_duplicates_total 1",
            "warrant_audit_batches_total 1",
            "warrant_audit_append_errors_total 1",
            "warrant_audit_checkpoints_total 1",
            "warrant_audit_last_seq 10",
            "warrant_audit_last_checkpoint_seq 8",
            "warrant_audit_unsigned_entries 2",
            "warrant_audit_checkpoint_age_seconds 2.500",
            "# TYPE warrant_audit_last_seq gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn no_checkpoint_means_no_age() {
        let text = Metrics::default().render(ChainGauges::default(), 5);
        assert!(!text.contains("checkpoint_age_seconds"), "{text}");
    }
}
