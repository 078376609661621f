use ed25519_dalek::{Signer, SigningKey};
use rusqlite::Connection;
use warrant_wire::AuditRecord;

use crate::chain::{hash_fields, FieldValue};

use super::*;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[1; 32])
}

fn records(from: usize, to: usize) -> Vec<AuditRecord> {
    (from..to)
        .map(|i| AuditRecord {
            message_id: format!("m-{i}"),
            from: "alice".into(),
            ..Default::default()
        })
        .collect()
}

/// A chain of `n` entries with a checkpoint after every `every` entries
/// (and one at the end).
fn chain(n: usize, every: usize) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let mut store = Store::open(&path).unwrap();
    let mut at = 0;
    while at < n {
        let next = (at + every).min(n);
        store.append_batch(&records(at, next), 5).unwrap();
        store.checkpoint(&key(), 6).unwrap();
        at = next;
    }
    (dir, path)
}

fn tamper(path: &Path, sql: &str) {
    Connection::open(path).unwrap().execute_batch(sql).unwrap();
}

fn with_key() -> Options {
    Options { key: Some(key().verifying_key()), ..Options::default() }
}

#[test]
fn intact_chain_verifies_with_signatures() {
    let (_d, path) = chain(10, 4);
    let report = verify(&path, &with_key()).unwrap();
    assert!(report.valid, "{report:?}");
    assert_eq!((report.entries, report.head_seq, report.checkpoints), (10, 10, 3));
    assert_eq!(report.signature_check, SignatureCheck::Valid);
    assert_eq!(
        report.key_fingerprint,
        Some(warrant_delegation::keys::fingerprint(&key().verifying_key()))
    );
    assert_eq!(report.latest_checkpoint.map(|c| c.seq), Some(10));
    assert_eq!(report.unsigned_entries, 0);
}

#[test]
fn signature_states_without_key_and_without_checkpoints() {
    let (_d, path) = chain(3, 3);
    assert_eq!(
        verify(&path, &Options::default()).unwrap().signature_check,
        SignatureCheck::Skipped
    );
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("audit.db");
    Store::open(&bare).unwrap().append_batch(&records(0, 2), 1).unwrap();
    let report = verify(&bare, &with_key()).unwrap();
    assert!(report.valid);
    assert_eq!((report.signature_check, report.unsigned_entries), (SignatureCheck::Unsigned, 2));
    let (_d, empty) = chain(0, 1);
    let report = verify(&empty, &Options::default()).unwrap();
    assert!(report.valid && report.head_seq == 0);
}

/// The tamper battery: each case is found at its seq, with its kind.
#[test]
fn tampering_is_found_at_the_right_seq() {
    let other = SigningKey::from_bytes(&[2; 32]);
    let forged = other.sign(b"anything").to_bytes();
    let forged_sql =
        format!("UPDATE checkpoints SET signature = x'{}' WHERE seq = 8", hex::encode(forged));
    let cases: Vec<(&str, String, u64, BreakKind)> = vec![
        ("edited text field", "UPDATE entries SET from_agent = 'alicf' WHERE seq = 3".into(), 3, BreakKind::EntryHash),
        ("edited integer", "UPDATE entries SET latency_us = 9 WHERE seq = 2".into(), 2, BreakKind::EntryHash),
        ("edited quarantine hash", "UPDATE entries SET quarantine_sha256 = 'ab' WHERE seq = 5".into(), 5, BreakKind::EntryHash),
        ("changed type", "UPDATE entries SET http_status = 'x' WHERE seq = 4".into(), 4, BreakKind::FieldType),
        ("deleted middle entry", "DELETE FROM entries WHERE seq = 3".into(), 3, BreakKind::Sequence),
        (
            "inserted entry",
            "UPDATE entries SET seq = seq + 1000 WHERE seq >= 6; UPDATE entries SET seq = seq - 999 WHERE seq >= 1006;
             INSERT INTO entries SELECT 6, 'forged', received_at_ns, appended_at_ns, node, from_agent, to_agent, method,
               authority, path, body_sha256, status, decision, reason, http_status, latency_us, identity_source,
               signature, key_fingerprint, session_id, delegation_chain_hash, delegation_root, delegation_parent,
               delegation_depth, delegation_path, findings, notes, quarantine_sha256, refers_to, prev_hash, entry_hash
             FROM entries WHERE seq = 7;".into(),
            6,
            BreakKind::EntryHash,
        ),
        (
            "reordered entries",
            "UPDATE entries SET seq = 100 WHERE seq = 2; UPDATE entries SET seq = 2 WHERE seq = 3;
             UPDATE entries SET seq = 3 WHERE seq = 100;".into(),
            2,
            BreakKind::Link,
        ),
        ("edited link", "UPDATE entries SET prev_hash = zeroblob(32) WHERE seq = 5".into(), 5, BreakKind::Link),
        ("other chain id", "UPDATE chain SET chain_id = zeroblob(16)".into(), 1, BreakKind::EntryHash),
        ("blanked checkpoint signature", "UPDATE checkpoints SET signature = x'' WHERE seq = 8".into(), 8, BreakKind::CheckpointSignature),
        ("forged checkpoint signature", forged_sql, 8, BreakKind::CheckpointSignature),
        ("checkpoint head rewritten", "UPDATE checkpoints SET head_hash = zeroblob(32) WHERE seq = 4".into(), 4, BreakKind::CheckpointSignature),
        (
            "truncated tail with its checkpoint left",
            "DELETE FROM entries WHERE seq > 9".into(),
            10,
            BreakKind::CheckpointBeyondHead,
        ),
    ];
    // Also with the 10 entries in 3 ranges.
    let in_ranges = Options { split: Split { max_ranges: 3, min_range_entries: 3 }, ..with_key() };
    for (name, sql, seq, kind) in cases {
        let (_d, path) = chain(10, 4);
        tamper(&path, &sql);
        for options in [&with_key(), &in_ranges] {
            let report = verify(&path, options).unwrap();
            let broken =
                report.broken.clone().unwrap_or_else(|| panic!("case {name}: not detected"));
            assert_eq!((broken.seq, broken.kind), (seq, kind), "case {name}: {broken:?}");
            assert!(!report.valid, "case {name}");
        }
    }
}

#[test]
fn a_rewritten_chain_is_caught_by_its_checkpoints() {
    // Recompute every hash after an edit (anyone can), keep the stored
    // checkpoints: the checkpoint at seq 4 no longer names entry 4.
    let (_d, path) = chain(10, 4);
    let chain_id = read_chain_id(&Store::open_read_only(&path).unwrap()).unwrap();
    let conn = Connection::open(&path).unwrap();
    conn.execute("UPDATE entries SET from_agent = 'mallory' WHERE seq = 2", []).unwrap();
    rehash_from(&conn, &chain_id, 2);
    drop(conn);
    let report = verify(&path, &Options::default()).unwrap();
    let broken = report.broken.unwrap();
    assert_eq!((broken.seq, broken.kind), (4, BreakKind::CheckpointHead));
}

#[test]
fn wrong_key_makes_every_signature_invalid() {
    let (_d, path) = chain(5, 5);
    let wrong = SigningKey::from_bytes(&[3; 32]).verifying_key();
    let report = verify(&path, &Options { key: Some(wrong), ..Options::default() }).unwrap();
    assert_eq!(report.signature_check, SignatureCheck::Invalid);
    let broken = report.broken.unwrap();
    assert_eq!((broken.seq, broken.kind), (5, BreakKind::CheckpointSignature));
    assert!(broken.reason.contains("does not verify"), "{}", broken.reason);
}

#[test]
fn limit_checks_the_newest_entries_from_a_checkpoint_before_them() {
    // As one range, and in 3 ranges from the anchor on.
    for split in [Split::default(), Split { max_ranges: 3, min_range_entries: 2 }] {
        let (_d, path) = chain(20, 5);
        let limited = Options { limit: Some(7), split, ..with_key() };
        // An edit before the anchor is outside the window.
        tamper(&path, "UPDATE entries SET from_agent = 'x' WHERE seq = 2");
        let conn = Store::open_read_only(&path).unwrap();
        let (report, ranges) = verify_pinned(&conn, &limited, &mut |_, _| {}, &mut || {}).unwrap();
        assert!(report.valid, "{report:?}");
        assert_eq!((report.first_seq, report.entries), (11, 10));
        assert_eq!(ranges, split.ranges(10));
        // An edit inside it is found.
        tamper(&path, "UPDATE entries SET from_agent = 'x' WHERE seq = 17");
        let broken = verify(&path, &limited).unwrap().broken.unwrap();
        assert_eq!((broken.seq, broken.kind), (17, BreakKind::EntryHash));
        // The full check finds the first.
        let full = Options { limit: None, ..limited };
        assert_eq!(verify(&path, &full).unwrap().broken.unwrap().seq, 2);
    }
}

#[test]
fn exported_checkpoint_finds_truncation_and_rollback() {
    let (_d, path) = chain(10, 4);
    let conn = Store::open_read_only(&path).unwrap();
    let chain_id = read_chain_id(&conn).unwrap();
    let exported = crate::store::latest_checkpoint(&conn, &chain_id).unwrap().unwrap();
    drop(conn);
    let options = Options { external: Some(exported.clone()), ..with_key() };
    assert!(verify(&path, &options).unwrap().valid);

    // Truncated tail, its checkpoints removed too.
    let (_d2, cut) = chain(10, 4);
    std::fs::copy(&path, &cut).unwrap();
    tamper(&cut, "DELETE FROM entries WHERE seq > 7; DELETE FROM checkpoints WHERE seq > 7;");
    assert!(verify(&cut, &with_key()).unwrap().valid, "undetectable without the file");
    let broken = verify(&cut, &options).unwrap().broken.unwrap();
    assert_eq!((broken.seq, broken.kind), (8, BreakKind::Truncated));

    // Rolled back to an old copy, then extended differently.
    let (_d3, rolled) = chain(10, 4);
    std::fs::copy(&path, &rolled).unwrap();
    tamper(&rolled, "DELETE FROM entries WHERE seq > 7; DELETE FROM checkpoints WHERE seq > 7;");
    let mut store = Store::open(&rolled).unwrap();
    store.append_batch(&records(100, 105), 9).unwrap();
    store.checkpoint(&key(), 10).unwrap();
    drop(store);
    let broken = verify(&rolled, &options).unwrap().broken.unwrap();
    assert_eq!((broken.seq, broken.kind), (10, BreakKind::RolledBack));

    // Another chain's checkpoint.
    let (_d4, other) = chain(10, 4);
    let broken = verify(&other, &options).unwrap().broken.unwrap();
    assert_eq!(broken.kind, BreakKind::CheckpointChain);

    // A forged file signature.
    let mut forged = exported;
    forged.checkpoint.seq = 9;
    let options = Options { external: Some(forged), ..with_key() };
    let report = verify(&path, &options).unwrap();
    assert_eq!(report.broken.unwrap().kind, BreakKind::CheckpointSignature);
    assert_eq!(report.signature_check, SignatureCheck::Invalid);
}

#[test]
fn changed_quarantine_content_is_found_at_its_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let mut store = Store::open(&path).unwrap();
    let mut batch = records(0, 3);
    batch[1].quarantine_content = b"rm -rf /".to_vec();
    batch[1].status = "quarantined".into();
    store.append_batch(&batch, 1).unwrap();
    drop(store);
    assert!(verify(&path, &Options::default()).unwrap().valid);
    tamper(&path, "UPDATE quarantine SET content = x'00'");
    let broken = verify(&path, &Options::default()).unwrap().broken.unwrap();
    assert_eq!((broken.seq, broken.kind), (2, BreakKind::QuarantineContent));
}

#[test]
fn verify_never_writes() {
    let (_d, path) = chain(3, 3);
    let before = std::fs::read(&path).unwrap();
    verify(&path, &with_key()).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn missing_file_is_an_error_not_a_broken_chain() {
    let err = verify(Path::new("/nonexistent/audit.db"), &Options::default()).unwrap_err();
    assert!(format!("{err:#}").contains("audit database not found"), "{err:#}");
}

#[test]
fn text_report_names_state_and_counts_with_separators() {
    let (_d, path) = chain(3, 3);
    let text = render_text(&verify(&path, &with_key()).unwrap());
    assert!(text.contains("Chain: VALID (3 entries)"), "{text}");
    assert!(text.contains("Signature: VALID (1 checkpoints, key fingerprint "), "{text}");
    assert_eq!(thousands(1_234_567), "1,234,567");
    assert_eq!(thousands(999), "999");
}

/// The splits every walk case runs with, on a chain of 562 entries: one
/// range hashed on the reading thread, one range hashed on a second thread,
/// and 2, 3 and 5 ranges (starting at 282; 188 and 375; 113, 225, 338 and
/// 450).
fn splits() -> [Split; 5] {
    [
        Split { max_ranges: 1, min_range_entries: 1 },
        Split { max_ranges: 2, min_range_entries: 400 },
        Split { max_ranges: 2, min_range_entries: 100 },
        Split { max_ranges: 3, min_range_entries: 100 },
        Split { max_ranges: 8, min_range_entries: 100 },
    ]
}

/// [`walk`] over every entry of the database at `path`, with its
/// connections opened and pinned as [`verify_connection`] does; also the
/// ranges it was walked in.
fn walk_split(path: &Path, split: Split) -> (Walked, usize) {
    let conn = Store::open_read_only(path).unwrap();
    let readers = open_readers(&conn, &Options { split, ..Options::default() });
    let mut ranges = pin_snapshot(&conn, readers, &mut || {}).unwrap();
    let chain_id = read_chain_id(&conn).unwrap();
    let stored = checkpoints(&conn, &chain_id).unwrap();
    let head_seq = read_head(&conn).unwrap().seq;
    let start = (1, [0; 32], head_seq);
    walk(&conn, &mut ranges, &chain_id, &stored, start, split, &mut |_, _| {}).unwrap()
}

/// The walk, however split over threads and ranges, finds what checking one
/// entry after the other finds: the same first broken seq, kind, reason,
/// expected and found, and the same count, for tampering at the first and
/// last entry, at both sides of batch boundaries and of range boundaries
/// (a range's first and last position), and for two problems in
/// neighbouring batches or ranges where the later one is the kind the
/// reading thread finds first (or the one a later range finds first).
#[test]
fn every_split_walk_reports_what_an_entry_by_entry_walk_reports() {
    let b = BATCH_ENTRIES as u64;
    let n = 2 * b + 50;
    let (_d, original) = chain(n as usize, 47);
    let edit = |seq: u64| format!("UPDATE entries SET from_agent = 'alicf' WHERE seq = {seq};");
    let link = |seq: u64| format!("UPDATE entries SET prev_hash = zeroblob(32) WHERE seq = {seq};");
    let retype = |seq: u64| format!("UPDATE entries SET latency_us = 'x' WHERE seq = {seq};");
    let delete = |seq: u64| format!("DELETE FROM entries WHERE seq = {seq};");
    let not_utf8 =
        |seq: u64| format!("UPDATE entries SET node = CAST(x'ff' AS TEXT) WHERE seq = {seq};");
    let short = |seq: u64| format!("UPDATE entries SET entry_hash = x'00' WHERE seq = {seq};");
    let head =
        |seq: u64| format!("UPDATE checkpoints SET head_hash = zeroblob(32) WHERE seq = {seq};");
    let mut cases: Vec<(String, u64, BreakKind)> = vec![
        (String::new(), 0, BreakKind::EntryHash),
        (edit(1), 1, BreakKind::EntryHash),
        (edit(n), n, BreakKind::EntryHash),
        (link(n), n, BreakKind::Link),
        (delete(n), n, BreakKind::CheckpointBeyondHead),
        (short(1), 1, BreakKind::EntryHash),
        (head(94), 94, BreakKind::CheckpointHead),
        // A hash mismatch comes before a checkpoint at the same entry.
        (edit(235) + &head(235), 235, BreakKind::EntryHash),
        // Late in one batch, early in the next: the reading thread finds the
        // second first.
        (edit(b) + &link(b + 1), b, BreakKind::EntryHash),
        (edit(b) + &delete(b + 2), b, BreakKind::EntryHash),
        (edit(b - 1) + &retype(b + 1), b - 1, BreakKind::EntryHash),
        (edit(2 * b) + &short(2 * b + 1), 2 * b, BreakKind::EntryHash),
        (edit(b) + &edit(b + 1), b, BreakKind::EntryHash),
        (edit(b) + &not_utf8(b + 1), b, BreakKind::EntryHash),
        (not_utf8(b + 1), b + 1, BreakKind::FieldType),
        (not_utf8(n), n, BreakKind::FieldType),
        // Within one entry, the first column's problem, wherever found.
        (not_utf8(b) + &retype(b), b, BreakKind::FieldType),
        (not_utf8(1) + &short(1), 1, BreakKind::FieldType),
        (not_utf8(94) + &head(94), 94, BreakKind::FieldType),
        // The reading thread's problem is the earlier one.
        (link(b) + &edit(b - 3), b - 3, BreakKind::EntryHash),
        (link(b - 1) + &edit(b + 5), b - 1, BreakKind::Link),
        (retype(b + 1) + &edit(2 * b), b + 1, BreakKind::FieldType),
        // Checkpoints at the first position of a range (of 2 and of 3).
        (head(282), 282, BreakKind::CheckpointHead),
        (head(188), 188, BreakKind::CheckpointHead),
        // A problem at the end of one range, another in the next, which is
        // found first.
        (edit(281) + &edit(283), 281, BreakKind::EntryHash),
        (short(187) + &link(188), 187, BreakKind::EntryHash),
        (retype(374) + &delete(376), 374, BreakKind::FieldType),
        (not_utf8(112) + &edit(113), 112, BreakKind::FieldType),
        (delete(281) + &delete(282), 281, BreakKind::Sequence),
        (delete(282) + &delete(283), 282, BreakKind::Sequence),
        (link(225) + &edit(449), 225, BreakKind::Link),
    ];
    for seq in [b - 1, b, b + 1, 2 * b, 2 * b + 1, 187, 188, 189, 281, 282, 283, 374, 375, 450] {
        cases.push((edit(seq), seq, BreakKind::EntryHash));
        cases.push((link(seq), seq, BreakKind::Link));
        cases.push((delete(seq), seq, BreakKind::Sequence));
    }
    for (sql, seq, kind) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        std::fs::copy(&original, &path).unwrap();
        tamper(&path, &sql);
        let conn = Store::open_read_only(&path).unwrap();
        let chain_id = read_chain_id(&conn).unwrap();
        let stored = checkpoints(&conn, &chain_id).unwrap();
        let head_seq = read_head(&conn).unwrap().seq;
        let expected = walk_entry_by_entry(&conn, &chain_id, &stored, head_seq);
        for split in splits() {
            let (walked, ranges) = walk_split(&path, split);
            assert_eq!(walked, expected, "{sql} {split:?}");
            assert_eq!(ranges, split.ranges(head_seq), "{sql} {split:?}");
            let options = Options { split, ..Options::default() };
            let (report, _) = verify_pinned(&conn, &options, &mut |_, _| {}, &mut || {}).unwrap();
            assert_eq!(report.entries, expected.entries, "{sql} {split:?}");
            if sql.is_empty() {
                assert!(report.valid && report.entries == n, "{split:?}: {report:?}");
                continue;
            }
            let broken = report.broken.unwrap_or_else(|| panic!("{sql}: not detected"));
            assert_eq!((broken.seq, broken.kind), (seq, kind), "{sql} {split:?}: {broken:?}");
            if let Some(first) = &expected.broken {
                assert_eq!(&broken, first, "{sql} {split:?}");
            }
        }
    }
}

/// A commit between the pinned transactions is seen, and the attempt
/// repeated: the ranges then read the later snapshot, all of them. When
/// commits keep coming, the walk is one range, still on one snapshot.
#[test]
fn a_commit_while_pinning_is_seen_and_the_snapshot_pinned_again() {
    let (_d, path) = chain(1000, 100);
    let conn = Store::open_read_only(&path).unwrap();
    let options = Options { split: Split { max_ranges: 3, min_range_entries: 200 }, ..with_key() };
    let mut writer = Store::open(&path).unwrap();
    let mut next = 1000;
    let mut calls = 0;
    let mut commit_first = || {
        calls += 1;
        if calls == 1 {
            writer.append_batch(&records(next, next + 7), 9).unwrap();
            next += 7;
        }
    };
    let (report, ranges) =
        verify_pinned(&conn, &options, &mut |_, _| {}, &mut commit_first).unwrap();
    assert_eq!((calls, ranges), (2, 3));
    assert!(report.valid, "{report:?}");
    assert_eq!((report.head_seq, report.entries, report.unsigned_entries), (1007, 1007, 7));

    // A commit that leaves the entries as they are (the head too), each
    // time: seen all the same, and then one range.
    let other = Connection::open(&path).unwrap();
    other.execute_batch("CREATE TABLE scratch (x)").unwrap();
    let mut calls = 0;
    let mut commit_always = || {
        calls += 1;
        other.execute("INSERT INTO scratch VALUES (?1)", [calls]).unwrap();
    };
    let (report, ranges) =
        verify_pinned(&conn, &options, &mut |_, _| {}, &mut commit_always).unwrap();
    assert_eq!((calls, ranges), (PIN_ATTEMPTS, 1));
    assert!(report.valid, "{report:?}");
    assert_eq!((report.head_seq, report.entries, report.unsigned_entries), (1007, 1007, 7));
}

/// `verify` in ranges while the sidecar's store appends: every report is
/// of one snapshot (intact, every entry up to its head checked, that head's
/// hash the one stored), and the ranges were used.
#[test]
fn ranges_read_one_snapshot_while_a_writer_appends() {
    let (_d, path) = chain(2000, 500);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let options = Options { split: Split { max_ranges: 3, min_range_entries: 300 }, ..with_key() };
    let reports = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut store = Store::open(&path).unwrap();
            let mut next = 2000;
            while !stop.load(Ordering::Relaxed) {
                store.append_batch(&records(next, next + 3), 9).unwrap();
                next += 3;
                if next % 30 == 0 {
                    store.checkpoint(&key(), 10).unwrap();
                }
            }
        });
        let conn = Store::open_read_only(&path).unwrap();
        let mut reports = Vec::new();
        let mut in_ranges = 0;
        while reports.len() < 1000 && (in_ranges < 30 || reports.len() < 60) {
            let (report, ranges) =
                verify_pinned(&conn, &options, &mut |_, _| {}, &mut || {}).unwrap();
            in_ranges += usize::from(ranges > 1);
            reports.push(report);
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        assert!(in_ranges > 0, "no walk in ranges in {} runs", reports.len());
        reports
    });
    let conn = Store::open_read_only(&path).unwrap();
    let mut last = 0;
    for report in reports {
        assert!(report.valid, "{report:?}");
        assert_eq!(report.entries, report.head_seq, "{report:?}");
        let at: Vec<u8> = conn
            .query_row(
                "SELECT entry_hash FROM entries WHERE seq = ?1",
                [report.head_seq as i64],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(report.head_hash, hex::encode(at));
        assert!(report.head_seq >= last);
        last = report.head_seq;
    }
    assert!(last > 2000, "the writer appended nothing meanwhile");
}

/// Steps 2a–2d as their definition reads: one entry after the other, each
/// hash recomputed before the next row is read.
fn walk_entry_by_entry(
    conn: &Connection,
    chain_id: &[u8; 16],
    stored: &[SignedCheckpoint],
    head_seq: u64,
) -> Walked {
    let names = Entry::FIELDS.join(", ");
    let sql = format!("SELECT seq, {names}, prev_hash, entry_hash FROM entries ORDER BY seq");
    let mut stmt = conn.prepare(&sql).unwrap();
    let mut rows = stmt.query([]).unwrap();
    let kinds = Entry::default().values().map(|k| matches!(k, FieldValue::Text(_)));
    let n = Entry::FIELDS.len();
    let mut pending = stored.iter().peekable();
    let (mut prev, mut expected_seq, mut entries) = ([0u8; 32], 1u64, 0u64);
    let walked = |entries, seq, kind, reason: String, expected: String, found: String| Walked {
        entries,
        broken: Some(Broken { seq, kind, reason, expected, found }),
    };
    while let Some(row) = rows.next().unwrap() {
        entries += 1;
        let seq: i64 = row.get(0).unwrap();
        if seq as u64 != expected_seq {
            let reason = format!(
                "expected seq {expected_seq}, found seq {seq} (an entry was deleted or inserted)"
            );
            return walked(
                entries,
                expected_seq,
                BreakKind::Sequence,
                reason,
                expected_seq.to_string(),
                seq.to_string(),
            );
        }
        let stored_prev = row.get_ref(n + 1).unwrap();
        if blob(stored_prev) != Some(prev.as_slice()) {
            let reason = "chain link broken: prev_hash is not the previous entry's hash".into();
            return walked(
                entries,
                expected_seq,
                BreakKind::Link,
                reason,
                hex::encode(prev),
                show_blob(stored_prev),
            );
        }
        let mut values = Vec::new();
        for (i, text) in kinds.iter().enumerate() {
            match (text, row.get_ref(i + 1).unwrap()) {
                (true, ValueRef::Text(t)) => match std::str::from_utf8(t) {
                    Ok(text) => values.push(FieldValue::Text(text)),
                    Err(_) => {
                        let reason =
                            format!("column {} holds text that is not UTF-8", Entry::FIELDS[i]);
                        let (expected, found) = ("UTF-8 text".into(), hex::encode(t));
                        return walked(
                            entries,
                            expected_seq,
                            BreakKind::FieldType,
                            reason,
                            expected,
                            found,
                        );
                    }
                },
                (false, ValueRef::Integer(v)) => values.push(FieldValue::Integer(v)),
                (true, other) | (false, other) => {
                    let want = if *text { "TEXT" } else { "INTEGER" };
                    let reason = format!("column {} has the wrong type", Entry::FIELDS[i]);
                    let found = format!("{:?}", other.data_type()).to_uppercase();
                    return walked(
                        entries,
                        expected_seq,
                        BreakKind::FieldType,
                        reason,
                        want.into(),
                        found,
                    );
                }
            }
        }
        let computed = hash_fields(chain_id, expected_seq, &prev, values);
        let stored_hash = row.get_ref(n + 2).unwrap();
        if blob(stored_hash) != Some(computed.as_slice()) {
            let reason = "entry hash mismatch: a stored field was changed".into();
            return walked(
                entries,
                expected_seq,
                BreakKind::EntryHash,
                reason,
                hex::encode(computed),
                show_blob(stored_hash),
            );
        }
        while let Some(c) = pending.next_if(|c| c.checkpoint.seq <= expected_seq) {
            if c.checkpoint.head_hash != computed || c.checkpoint.seq != expected_seq {
                let reason = format!(
                    "the checkpoint at seq {} names another head hash than the entry has",
                    c.checkpoint.seq
                );
                let expected = hex::encode(c.checkpoint.head_hash);
                return walked(
                    entries,
                    expected_seq,
                    BreakKind::CheckpointHead,
                    reason,
                    expected,
                    hex::encode(computed),
                );
            }
        }
        prev = computed;
        expected_seq += 1;
    }
    assert!(entries <= head_seq);
    Walked { entries, broken: None }
}

/// Recomputes every hash from `seq` on, as an attacker without the key
/// could.
fn rehash_from(conn: &Connection, chain_id: &[u8; 16], seq: u64) {
    let names = Entry::FIELDS.join(", ");
    let mut prev: [u8; 32] = conn
        .query_row("SELECT entry_hash FROM entries WHERE seq = ?1", [seq as i64 - 1], |r| {
            r.get::<_, Vec<u8>>(0)
        })
        .unwrap()
        .try_into()
        .unwrap();
    let seqs: Vec<i64> = conn
        .prepare("SELECT seq FROM entries WHERE seq >= ?1 ORDER BY seq")
        .unwrap()
        .query_map([seq as i64], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for s in seqs {
        let hash = conn
            .query_row(&format!("SELECT {names} FROM entries WHERE seq = ?1"), [s], |row| {
                let values: Vec<FieldValue<'_>> = (0..Entry::FIELDS.len())
                    .map(|i| match row.get_ref(i).unwrap() {
                        ValueRef::Integer(n) => FieldValue::Integer(n),
                        ValueRef::Text(t) => FieldValue::Text(std::str::from_utf8(t).unwrap()),
                        other => panic!("{other:?}"),
                    })
                    .collect();
                Ok(hash_fields(chain_id, s as u64, &prev, values))
            })
            .unwrap();
        conn.execute(
            "UPDATE entries SET prev_hash = ?1, entry_hash = ?2 WHERE seq = ?3",
            rusqlite::params![prev.to_vec(), hash.to_vec(), s],
        )
        .unwrap();
        prev = hash;
    }
}

/// Progress in ranges counts up to every entry, never beyond, and the last
/// call says all were checked.
#[test]
fn progress_in_ranges_ends_at_every_entry() {
    let (_d, path) = chain(40_000, 1000);
    let conn = Store::open_read_only(&path).unwrap();
    let split = Split { max_ranges: 2, min_range_entries: 10_000 };
    let mut calls = Vec::new();
    let (report, ranges) = verify_pinned(
        &conn,
        &Options { split, ..with_key() },
        &mut |done, total| calls.push((done, total)),
        &mut || {},
    )
    .unwrap();
    assert!(report.valid && ranges == 2, "{ranges} {report:?}");
    assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0), "{calls:?}");
    assert!(calls.iter().all(|&(done, total)| total == 40_000 && done <= total), "{calls:?}");
    assert_eq!(calls.last(), Some(&(40_000, 40_000)));
}
