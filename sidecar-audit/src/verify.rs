//! Offline verification of a chain database.
//!
//! [`verify`] opens the database read-only and walks every entry in `seq`
//! order, checking for each, in this order:
//! 1. `seq` is the previous one plus one (starting at 1): a deleted or
//!    inserted entry shows here;
//! 2. `prev_hash` equals the previous entry's `entry_hash` (zeros for
//!    seq 1): reordered or spliced entries show here;
//! 3. every column has its type, and the hash recomputed from the stored
//!    columns (see [`crate::chain`]) equals the stored `entry_hash`: an
//!    edited byte in any column shows here.
//!
//! It stops at the first broken entry and reports its seq, what was
//! expected and what was found. It never writes to the database.

use std::path::Path;

use anyhow::Context as _;
use rusqlite::types::ValueRef;
use serde::Serialize;

use crate::chain::{Entry, FieldValue};
use crate::store::{read_chain_id, Store};

/// The result of a verification that could run.
///
/// JSON (`verify --json`), one object:
/// `{"valid":true,"entries":42,"chain_id":"<32 hex>","head_seq":42,"head_hash":"<64 hex>","broken":null}`;
/// when broken, `broken` is `{"seq":7,"reason":"...","expected":"...","found":"..."}`
/// and `valid` is false.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Whether every entry checked out.
    pub valid: bool,
    /// Entries checked (up to and including the broken one).
    pub entries: u64,
    /// Hex chain id.
    pub chain_id: String,
    /// Seq of the last entry checked.
    pub head_seq: u64,
    /// Hex hash of the last intact entry.
    pub head_hash: String,
    /// The first broken entry, if any.
    pub broken: Option<Broken>,
}

/// The first entry that does not check out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Broken {
    /// Its seq.
    pub seq: u64,
    /// What is wrong.
    pub reason: String,
    /// What the chain says it should be.
    pub expected: String,
    /// What is stored.
    pub found: String,
}

/// Verifies the database at `path`.
///
/// # Errors
/// When verification cannot run at all (missing or unreadable file, wrong
/// schema): exit status 2, as opposed to a broken chain (a [`Report`] with
/// `valid: false`, exit status 1).
pub fn verify(path: &Path) -> anyhow::Result<Report> {
    let conn = Store::open_read_only(path)?;
    let chain_id = read_chain_id(&conn).with_context(|| path.display().to_string())?;
    let names = Entry::FIELDS.join(", ");
    let mut stmt = conn.prepare(&format!(
        "SELECT seq, {names}, prev_hash, entry_hash FROM entries ORDER BY seq"
    ))?;
    let mut rows = stmt.query([])?;
    let mut report = Report {
        valid: true,
        entries: 0,
        chain_id: hex::encode(chain_id),
        head_seq: 0,
        head_hash: hex::encode([0u8; 32]),
        broken: None,
    };
    let mut prev = [0u8; 32];
    while let Some(row) = rows.next()? {
        let expected_seq = report.head_seq + 1;
        report.entries += 1;
        let fail = |reason: &str, expected: String, found: String| Broken {
            seq: expected_seq,
            reason: reason.to_string(),
            expected,
            found,
        };
        let broken = check_row(row, expected_seq, &chain_id, &prev, fail)?;
        match broken {
            Err(broken) => {
                report.valid = false;
                report.head_seq = broken.seq;
                report.broken = Some(broken);
                return Ok(report);
            }
            Ok(hash) => {
                prev = hash;
                report.head_seq = expected_seq;
                report.head_hash = hex::encode(hash);
            }
        }
    }
    Ok(report)
}

/// Checks one row; `Ok(Ok(hash))` when intact, `Ok(Err(broken))` when not.
fn check_row(
    row: &rusqlite::Row<'_>,
    expected_seq: u64,
    chain_id: &[u8; 16],
    prev: &[u8; 32],
    fail: impl Fn(&str, String, String) -> Broken,
) -> anyhow::Result<Result<[u8; 32], Broken>> {
    // 1. Position.
    let seq: i64 = row.get(0)?;
    if u64::try_from(seq).ok() != Some(expected_seq) {
        let mut broken =
            fail("entry missing or out of sequence", expected_seq.to_string(), seq.to_string());
        broken.reason = format!(
            "expected seq {expected_seq}, found seq {seq} (an entry was deleted or inserted)"
        );
        return Ok(Err(broken));
    }

    // 2. Link.
    let n = Entry::FIELDS.len();
    let stored_prev = blob(row.get_ref(n + 1)?);
    if stored_prev.as_deref() != Some(prev.as_slice()) {
        let found = stored_prev.map(hex::encode).unwrap_or_else(|| "<not a blob>".into());
        return Ok(Err(fail(
            "chain link broken: prev_hash is not the previous entry's hash",
            hex::encode(prev),
            found,
        )));
    }

    // 3. Content.
    let mut entry = Entry::default();
    for (i, name) in Entry::FIELDS.iter().enumerate() {
        let value = row.get_ref(i + 1)?;
        if let Err(found) = set_field(&mut entry, i, value) {
            return Ok(Err(fail(
                &format!("column {name} has the wrong type"),
                "its declared type".into(),
                found,
            )));
        }
    }
    let computed = entry.hash(chain_id, expected_seq, prev);
    let stored = blob(row.get_ref(n + 2)?);
    if stored.as_deref() != Some(computed.as_slice()) {
        let found = stored.map(hex::encode).unwrap_or_else(|| "<not a blob>".into());
        return Ok(Err(fail(
            "entry hash mismatch: a stored field was changed",
            hex::encode(computed),
            found,
        )));
    }
    Ok(Ok(computed))
}

fn blob(value: ValueRef<'_>) -> Option<Vec<u8>> {
    match value {
        ValueRef::Blob(b) => Some(b.to_vec()),
        _ => None,
    }
}

/// Sets field `i` of `entry` from a column value, refusing a value of the
/// wrong type (SQLite's columns are not strictly typed).
fn set_field(entry: &mut Entry, i: usize, value: ValueRef<'_>) -> Result<(), String> {
    let template = Entry::default();
    let kind = template.values().get(i).copied();
    match (kind, value) {
        (Some(FieldValue::Text(_)), ValueRef::Text(bytes)) => {
            let text = String::from_utf8(bytes.to_vec())
                .map_err(|_| "text that is not UTF-8".to_string())?;
            *text_field(entry, i).ok_or("unknown column")? = text;
            Ok(())
        }
        (Some(FieldValue::Integer(_)), ValueRef::Integer(n)) => {
            *int_field(entry, i).ok_or("unknown column")? = n;
            Ok(())
        }
        (_, other) => Err(format!("{:?}", other.data_type())),
    }
}

fn text_field(e: &mut Entry, i: usize) -> Option<&mut String> {
    Some(match i {
        0 => &mut e.message_id,
        3 => &mut e.node,
        4 => &mut e.from_agent,
        5 => &mut e.to_agent,
        6 => &mut e.method,
        7 => &mut e.authority,
        8 => &mut e.path,
        9 => &mut e.body_sha256,
        10 => &mut e.status,
        11 => &mut e.decision,
        12 => &mut e.reason,
        15 => &mut e.identity_source,
        16 => &mut e.signature,
        17 => &mut e.key_fingerprint,
        18 => &mut e.session_id,
        19 => &mut e.delegation_chain_hash,
        20 => &mut e.delegation_root,
        21 => &mut e.delegation_parent,
        23 => &mut e.delegation_path,
        24 => &mut e.findings,
        25 => &mut e.notes,
        _ => return None,
    })
}

fn int_field(e: &mut Entry, i: usize) -> Option<&mut i64> {
    Some(match i {
        1 => &mut e.received_at_ns,
        2 => &mut e.appended_at_ns,
        13 => &mut e.http_status,
        14 => &mut e.latency_us,
        22 => &mut e.delegation_depth,
        _ => return None,
    })
}

/// The human-readable report.
pub fn render_text(report: &Report) -> String {
    let mut out = String::from("\n");
    match &report.broken {
        None if report.entries == 0 => out.push_str("  Chain: EMPTY (no entries)\n"),
        None => out.push_str(&format!("  Chain: VALID ({} entries)\n", report.entries)),
        Some(b) => {
            out.push_str(&format!("  Chain: BROKEN at seq {}\n", b.seq));
            out.push_str(&format!("  Reason: {}\n", b.reason));
            out.push_str(&format!("  Expected: {}\n", b.expected));
            out.push_str(&format!("  Found: {}\n", b.found));
        }
    }
    out.push_str(&format!("  Chain id: {}\n", report.chain_id));
    if report.broken.is_none() && report.entries > 0 {
        out.push_str(&format!("  Head: seq {} hash {}\n", report.head_seq, report.head_hash));
    }
    out
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;
    use warrant_wire::AuditRecord;

    use super::*;

    fn chain(n: usize) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let mut store = Store::open(&path).unwrap();
        let records: Vec<_> = (0..n)
            .map(|i| AuditRecord {
                message_id: format!("m-{i}"),
                from: "alice".into(),
                ..Default::default()
            })
            .collect();
        store.append_batch(&records, 5).unwrap();
        (dir, path)
    }

    fn tamper(path: &Path, sql: &str) {
        Connection::open(path).unwrap().execute_batch(sql).unwrap();
    }

    #[test]
    fn intact_and_empty_chains_are_valid() {
        let (_d, path) = chain(5);
        let report = verify(&path).unwrap();
        assert!(report.valid);
        assert_eq!((report.entries, report.head_seq), (5, 5));
        let (_d, empty) = chain(0);
        assert!(verify(&empty).unwrap().valid);
    }

    #[test]
    fn tampering_is_found_at_the_right_seq() {
        let cases: &[(&str, &str, u64, &str)] = &[
            ("edited field", "UPDATE entries SET from_agent = 'alicf' WHERE seq = 3", 3, "hash mismatch"),
            ("edited integer", "UPDATE entries SET latency_us = 9 WHERE seq = 2", 2, "hash mismatch"),
            ("changed type", "UPDATE entries SET http_status = 'x' WHERE seq = 4", 4, "wrong type"),
            ("deleted middle", "DELETE FROM entries WHERE seq = 3", 3, "deleted or inserted"),
            (
                "reordered",
                "UPDATE entries SET seq = 100 WHERE seq = 2; UPDATE entries SET seq = 2 WHERE seq = 3;
                 UPDATE entries SET seq = 3 WHERE seq = 100;",
                2,
                "chain link broken",
            ),
            ("edited link", "UPDATE entries SET prev_hash = zeroblob(32) WHERE seq = 5", 5, "chain link broken"),
            ("other chain id", "UPDATE chain SET chain_id = zeroblob(16)", 1, "hash mismatch"),
        ];
        for (name, sql, seq, reason) in cases {
            let (_d, path) = chain(6);
            tamper(&path, sql);
            let report = verify(&path).unwrap();
            let broken = report.broken.unwrap_or_else(|| panic!("case {name}: not detected"));
            assert_eq!(broken.seq, *seq, "case {name}");
            assert!(broken.reason.contains(reason), "case {name}: {}", broken.reason);
        }
    }

    #[test]
    fn verify_never_writes() {
        let (_d, path) = chain(3);
        let before = std::fs::read(&path).unwrap();
        verify(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn missing_file_is_an_error_not_a_broken_chain() {
        let err = verify(Path::new("/nonexistent/audit.db")).unwrap_err().to_string();
        assert!(err.contains("audit database not found"), "{err}");
    }
}
