//! Offline verification of a chain database: the library behind
//! `warrant-audit verify`, the page's badge and `/api/verify`.
//!
//! [`verify`] opens the database read-only (it never writes) and checks, in
//! this order:
//! 1. when a key is given, the signature of every stored checkpoint (a
//!    blanked or cut signature is malformed even without a key);
//! 2. every entry in `seq` order from the first one checked (seq 1, or with
//!    [`Options::limit`] the entry after the newest checkpoint before the
//!    last N entries, whose stored hash must equal the checkpoint's head):
//!    a. `seq` is the previous one plus one: a deleted or inserted entry
//!    shows here;
//!    b. `prev_hash` equals the previous entry's hash: reordered or spliced
//!    entries show here;
//!    c. every column has its type and the hash recomputed from the stored
//!    columns ([`crate::chain`]) equals the stored `entry_hash`: an
//!    edited byte shows here;
//!    d. a checkpoint at this seq names this entry's hash: an entry rewritten
//!    together with every later hash shows here;
//! 3. no checkpoint lies beyond the last entry (a truncated tail whose
//!    checkpoint was left behind);
//! 4. every quarantined content still hashes to its entry's
//!    `quarantine_sha256`;
//! 5. with an exported checkpoint ([`Options::external`]): it is of this
//!    chain, its signature verifies (when a key is given), the database
//!    reaches its seq (else a truncated tail or a rollback to an older copy)
//!    and holds its head hash there (else a rollback or a rewrite).
//!
//! The report names the first problem by seq (the lowest seq among the
//! problems found), with what was expected and what was found.
//!
//! Everything is read from one snapshot of the database, also while a
//! sidecar appends. Step 2, nearly all of the time, is shared among threads
//! ([`Split`]): long chains are cut into ranges walked at once, each on a
//! read-only connection of its own, all pinned on the snapshot the others
//! read; the result is the one a walk entry after entry gives.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};

use anyhow::{anyhow, Context as _};
use ed25519_dalek::VerifyingKey;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension as _};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::chain::{hashed_bytes, hashed_texts, Entry, HashedField};
use crate::checkpoint::{CheckpointError, CheckpointFile, SignedCheckpoint};
use crate::store::{checkpoints, read_chain_id, read_head, Store};

/// What to verify against.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The public key for checkpoint signatures; `None` skips them.
    pub key: Option<VerifyingKey>,
    /// Check only the newest N entries, anchored at the newest checkpoint
    /// before them. `None` (the default) checks every entry.
    pub limit: Option<u64>,
    /// An exported checkpoint the database must still contain.
    pub external: Option<SignedCheckpoint>,
    /// How the walk over the entries is shared among threads; the default
    /// suits the machine.
    pub split: Split,
}

/// The result of a verification that could run.
///
/// `verify --json` prints it as one JSON object:
///
/// ```json
/// {"valid": false, "entries": 7, "first_seq": 1, "head_seq": 42,
///  "head_hash": "<64 hex>", "chain_id": "<32 hex>",
///  "broken": {"seq": 7, "kind": "entry_hash",
///             "reason": "entry hash mismatch: a stored field was changed",
///             "expected": "<64 hex>", "found": "<64 hex>"},
///  "signature_check": "valid", "key_fingerprint": "<64 hex>",
///  "checkpoints": 3, "latest_checkpoint": {<a CheckpointFile>},
///  "unsigned_entries": 2, "checkpoint_file_seq": null}
/// ```
///
/// - `valid`: no problem found; `broken` is `null` exactly when it is true;
/// - `entries`: entries checked (up to and including a broken one);
/// - `first_seq`: the first seq checked (1 unless `--limit` anchored later);
/// - `head_seq`, `head_hash`: the database's last entry (0 and zeros when
///   empty), as stored;
/// - `broken.kind`: one of the [`BreakKind`] names;
/// - `signature_check`: see [`SignatureCheck`]; `key_fingerprint` is the
///   hex SHA-256 of the key used, `null` without one;
/// - `checkpoints`: stored checkpoints examined;
/// - `latest_checkpoint`: the newest stored checkpoint in the
///   [`CheckpointFile`] form, `null` when there is none;
/// - `unsigned_entries`: entries after the latest checkpoint (a running
///   sidecar covers them within its checkpoint interval);
/// - `checkpoint_file_seq`: the seq of the `--checkpoint` file checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Whether everything checked out.
    pub valid: bool,
    /// Entries checked.
    pub entries: u64,
    /// First seq checked.
    pub first_seq: u64,
    /// Seq of the last stored entry.
    pub head_seq: u64,
    /// Hex hash of the last stored entry.
    pub head_hash: String,
    /// Hex chain id.
    pub chain_id: String,
    /// The first problem, if any.
    pub broken: Option<Broken>,
    /// The outcome of the signature checks.
    pub signature_check: SignatureCheck,
    /// Fingerprint of the key used.
    pub key_fingerprint: Option<String>,
    /// Stored checkpoints examined.
    pub checkpoints: u64,
    /// The newest stored checkpoint.
    pub latest_checkpoint: Option<CheckpointFile>,
    /// Entries not covered by a stored checkpoint.
    pub unsigned_entries: u64,
    /// Seq of the exported checkpoint checked, if one was given.
    pub checkpoint_file_seq: Option<u64>,
}

/// The outcome of the signature checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureCheck {
    /// Every checkpoint signature verified, and there was at least one.
    Valid,
    /// A checkpoint signature did not verify (or was malformed).
    Invalid,
    /// No key was given or found: signatures were not checked.
    Skipped,
    /// A key was given but no checkpoint exists to check.
    Unsigned,
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Broken {
    /// The seq it is at (for a missing tail: the first missing seq).
    pub seq: u64,
    /// What kind of problem.
    pub kind: BreakKind,
    /// What is wrong, in words.
    pub reason: String,
    /// What the chain says it should be.
    pub expected: String,
    /// What is stored.
    pub found: String,
}

/// The kinds of problem, as named in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BreakKind {
    /// A seq is missing or extra (an entry deleted or inserted).
    Sequence,
    /// `prev_hash` is not the previous entry's hash.
    Link,
    /// A column holds a value of the wrong type.
    FieldType,
    /// The recomputed hash differs from the stored one.
    EntryHash,
    /// A stored checkpoint names another head hash than the entry has.
    CheckpointHead,
    /// A stored checkpoint lies beyond the last entry.
    CheckpointBeyondHead,
    /// A checkpoint signature is malformed or does not verify.
    CheckpointSignature,
    /// The exported checkpoint is of another chain.
    CheckpointChain,
    /// The database ends before the exported checkpoint's seq.
    Truncated,
    /// The entry at the exported checkpoint's seq has another hash.
    RolledBack,
    /// Quarantined content does not match its entry's hash of it.
    QuarantineContent,
}

/// Verifies the database at `path`, reporting progress as
/// `progress(entries checked, entries to check)` every few thousand entries.
///
/// # Errors
/// When verification cannot run at all (missing or unreadable file, wrong
/// schema): exit status 2, as opposed to a problem found (a [`Report`] with
/// `valid: false`, exit status 1).
pub fn verify_with_progress(
    path: &Path,
    options: &Options,
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<Report> {
    let conn = Store::open_read_only(path)?;
    verify_connection(&conn, options, progress).with_context(|| path.display().to_string())
}

/// [`verify_with_progress`] without progress.
///
/// # Errors
/// As [`verify_with_progress`].
pub fn verify(path: &Path, options: &Options) -> anyhow::Result<Report> {
    verify_with_progress(path, options, &mut |_, _| {})
}

/// Verifies an open database, reading one snapshot of it: a sidecar
/// appending meanwhile moves neither the head nor any entry under the
/// check.
///
/// When a file is behind `conn` (not an in-memory database) and there are
/// entries enough for two ranges of [`Options::split`], the entries are
/// walked in contiguous ranges at once, each on its own thread over its own
/// read-only connection to that file (opened as [`Store::open_read_only`]
/// opens them); those connections are made to read the snapshot `conn`
/// reads, or, when a commit keeps coming in between, the entries are walked
/// as one range on `conn`. The report is the same either way.
///
/// # Errors
/// A query fails.
pub fn verify_connection(
    conn: &Connection,
    options: &Options,
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<Report> {
    verify_pinned(conn, options, progress, &mut || {}).map(|(report, _)| report)
}

/// [`verify_connection`], calling `between` while it pins the snapshot
/// (after `conn` has begun reading, before the range connections have:
/// tests commit there), and also giving the number of ranges walked.
fn verify_pinned(
    conn: &Connection,
    options: &Options,
    progress: &mut dyn FnMut(u64, u64),
    between: &mut dyn FnMut(),
) -> anyhow::Result<(Report, usize)> {
    let readers = open_readers(conn, options);
    let mut ranges = pin_snapshot(conn, readers, between)?;
    let result = run(conn, &mut ranges, options, progress);
    for reader in std::iter::once(conn).chain(&ranges) {
        let _ = reader.execute_batch("COMMIT");
    }
    result
}

/// Attempts at pinning one snapshot on every connection before the walk
/// falls back to one range.
const PIN_ATTEMPTS: usize = 3;

/// The connections a walk in ranges needs, to the file behind the one
/// verified: one per range and a sentinel (see [`pin_snapshot`]).
struct Readers {
    sentinel: Connection,
    ranges: Vec<Connection>,
}

/// Opens [`Readers`] when the entries to check are enough for two ranges
/// or more. How many is decided from the head read outside the snapshot,
/// an estimate that only sets how many connections are opened: [`walk`]
/// splits the entries of the snapshot itself. `None` (walk as one range)
/// also when there is no file or a connection does not open; the error, if
/// it is one, then shows on `conn`.
fn open_readers(conn: &Connection, options: &Options) -> Option<Readers> {
    let path = Path::new(conn.path().filter(|p| !p.is_empty())?);
    let head = read_head(conn).ok()?.seq;
    let entries = options.limit.map_or(head, |limit| limit.min(head));
    let count = options.split.ranges(entries);
    if count < 2 {
        return None;
    }
    let open = || Store::open_read_only(path).ok();
    let sentinel = open()?;
    let ranges = (0..count).map(|_| open()).collect::<Option<Vec<_>>>()?;
    Some(Readers { sentinel, ranges })
}

/// Begins the read transactions, all on one snapshot: that of `conn` and,
/// when they can be made to read the same, those of the `readers`' range
/// connections, which it returns (none: walk as one range on `conn`).
///
/// Why the snapshots are one. In WAL mode a read transaction reads the
/// database as of the last commit before it began (SQLite's "WAL mode",
/// section "Concurrency"): it takes the WAL index header published by that
/// commit and keeps it until it ends. Every commit publishes a new header,
/// with a counter (`iChange`) one higher. `PRAGMA data_version`, run
/// outside a transaction, begins a read transaction of its own, and its
/// value changes when another connection committed since this connection's
/// previous read (SQLite's documentation of the pragma; in the code, the
/// header it takes differs from the one it kept, which resets the cache and
/// counts up the version). So one attempt:
/// 1. the sentinel (a connection that never holds a transaction open) reads
///    `data_version`;
/// 2. `conn`, then each range connection, begins a read transaction and
///    reads the head from `entries` (a read is what starts it);
/// 3. the sentinel reads `data_version` again.
///
/// Equal values mean no commit between 1 and 3, and every transaction of 2
/// began in between: each took the header of the same last commit, so all
/// read one snapshot. Different values end every transaction of 2, and the
/// attempt is repeated (up to [`PIN_ATTEMPTS`] times, then one range). The
/// heads read in 2 must be equal too; they would differ only if the path
/// led to another file than `conn`'s (replaced meanwhile). A database in
/// rollback-journal mode is covered too: there a read transaction holds a
/// shared lock under which nobody commits, and `data_version` follows the
/// file's change counter. On read-only media (`immutable=1`) nothing can
/// commit at all.
fn pin_snapshot(
    conn: &Connection,
    readers: Option<Readers>,
    between: &mut dyn FnMut(),
) -> anyhow::Result<Vec<Connection>> {
    if let Some(readers) = readers {
        for _ in 0..PIN_ATTEMPTS {
            match pin_once(conn, &readers, between) {
                Ok(true) => return Ok(readers.ranges),
                Ok(false) => {}
                // One range then; an error of `conn` shows again below.
                Err(_) => break,
            }
        }
    }
    conn.execute_batch("BEGIN DEFERRED")?;
    Ok(Vec::new())
}

/// One attempt of [`pin_snapshot`]: `true` with every transaction begun on
/// one snapshot, `false` (or an error) with every transaction ended.
fn pin_once(
    conn: &Connection,
    readers: &Readers,
    between: &mut dyn FnMut(),
) -> anyhow::Result<bool> {
    let data_version =
        |c: &Connection| c.pragma_query_value(None, "data_version", |r| r.get::<_, i64>(0));
    let before = data_version(&readers.sentinel)?;
    conn.execute_batch("BEGIN DEFERRED")?;
    let mut pin = || -> anyhow::Result<bool> {
        let head = read_head(conn)?;
        between();
        let mut same = true;
        for range in &readers.ranges {
            range.execute_batch("BEGIN DEFERRED")?;
            same &= read_head(range)? == head;
        }
        Ok(same && data_version(&readers.sentinel)? == before)
    };
    let pinned = pin();
    if !matches!(pinned, Ok(true)) {
        for reader in std::iter::once(conn).chain(&readers.ranges) {
            // Fails only for a connection whose transaction did not begin.
            let _ = reader.execute_batch("ROLLBACK");
        }
    }
    pinned
}

fn run(
    conn: &Connection,
    ranges: &mut [Connection],
    options: &Options,
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<(Report, usize)> {
    let chain_id = read_chain_id(conn)?;
    let head = read_head(conn)?;
    let stored = checkpoints(conn, &chain_id)?;
    let mut problems: Vec<Broken> = Vec::new();
    let mut report = Report {
        valid: true,
        entries: 0,
        first_seq: 1,
        head_seq: head.seq,
        head_hash: hex::encode(head.hash),
        chain_id: hex::encode(chain_id),
        broken: None,
        signature_check: SignatureCheck::Skipped,
        key_fingerprint: options.key.as_ref().map(warrant_delegation::keys::fingerprint),
        checkpoints: stored.len() as u64,
        latest_checkpoint: stored.last().map(SignedCheckpoint::to_file),
        unsigned_entries: head.seq - stored.last().map_or(0, |c| c.checkpoint.seq.min(head.seq)),
        checkpoint_file_seq: options.external.as_ref().map(|c| c.checkpoint.seq),
    };

    // 1. Checkpoint signatures.
    let mut signatures_bad = false;
    for signed in &stored {
        if let Some(problem) = check_signature(signed, options.key.as_ref(), "stored") {
            signatures_bad = true;
            problems.push(problem);
            break;
        }
    }

    // 2. Entries, from the anchor on.
    let mut anchor: Option<&SignedCheckpoint> = None;
    if let Some(limit) = options.limit {
        let start = head.seq.saturating_sub(limit) + 1;
        anchor = stored.iter().rev().find(|c| c.checkpoint.seq < start);
    }
    let mut prev = [0u8; 32];
    if let Some(anchor) = anchor {
        let c = &anchor.checkpoint;
        report.first_seq = c.seq + 1;
        prev = c.head_hash;
        let at = entry_hash_at(conn, c.seq).ok().flatten();
        if at.as_deref() != Some(c.head_hash.as_slice()) {
            problems.push(Broken {
                seq: c.seq,
                kind: BreakKind::CheckpointHead,
                reason: format!("the anchor checkpoint at seq {} names another head hash", c.seq),
                expected: hex::encode(c.head_hash),
                found: at.map_or_else(|| "<no entry>".into(), hex::encode),
            });
        }
    }
    let (walked, walked_in) = walk(
        conn,
        ranges,
        &chain_id,
        &stored,
        (report.first_seq, prev, head.seq),
        options.split,
        progress,
    )?;
    report.entries = walked.entries;
    if let Some(problem) = walked.broken {
        problems.push(problem);
    } else {
        // 3. Checkpoints beyond the last entry.
        if let Some(beyond) = stored.iter().find(|c| c.checkpoint.seq > head.seq) {
            problems.push(Broken {
                seq: head.seq + 1,
                kind: BreakKind::CheckpointBeyondHead,
                reason: format!(
                    "a checkpoint covers seq {} but the chain ends at seq {} \
                     (entries were removed from the end)",
                    beyond.checkpoint.seq, head.seq
                ),
                expected: format!("seq {}", beyond.checkpoint.seq),
                found: format!("seq {}", head.seq),
            });
        }
    }

    // 4. Quarantined content.
    if let Some(problem) = check_quarantine(conn)? {
        problems.push(problem);
    }

    // 5. The exported checkpoint.
    if let Some(external) = &options.external {
        let c = &external.checkpoint;
        if c.chain_id != chain_id {
            problems.push(Broken {
                seq: c.seq,
                kind: BreakKind::CheckpointChain,
                reason: "the checkpoint file is of another chain".into(),
                expected: hex::encode(c.chain_id),
                found: hex::encode(chain_id),
            });
        } else if let Some(problem) = check_signature(external, options.key.as_ref(), "exported") {
            signatures_bad = true;
            problems.push(problem);
        } else if c.seq > head.seq {
            problems.push(Broken {
                seq: head.seq + 1,
                kind: BreakKind::Truncated,
                reason: format!(
                    "the checkpoint file covers seq {} but the chain ends at seq {} \
                     (a truncated tail or a rolled-back database)",
                    c.seq, head.seq
                ),
                expected: format!("seq {}", c.seq),
                found: format!("seq {}", head.seq),
            });
        } else {
            let found = entry_hash_at(conn, c.seq).ok().flatten();
            if found.as_deref() != Some(c.head_hash.as_slice()) {
                problems.push(Broken {
                    seq: c.seq,
                    kind: BreakKind::RolledBack,
                    reason: format!(
                        "entry {} is not the one the checkpoint file signs \
                         (a rolled-back or rewritten database)",
                        c.seq
                    ),
                    expected: hex::encode(c.head_hash),
                    found: found.map_or_else(|| "<no entry>".into(), hex::encode),
                });
            }
        }
    }

    report.signature_check = match (&options.key, signatures_bad) {
        (_, true) => SignatureCheck::Invalid,
        (None, false) => SignatureCheck::Skipped,
        (Some(_), false) if stored.is_empty() && options.external.is_none() => {
            SignatureCheck::Unsigned
        }
        (Some(_), false) => SignatureCheck::Valid,
    };
    report.broken = problems.into_iter().min_by_key(|p| p.seq);
    report.valid = report.broken.is_none();
    Ok((report, walked_in))
}

/// What [`walk`] found.
#[derive(Debug, PartialEq, Eq)]
struct Walked {
    entries: u64,
    broken: Option<Broken>,
}

/// Entries per [`Batch`]: about 180 kB of hashed bytes for filter-shaped
/// entries, which stays in the caches between the two threads.
const BATCH_ENTRIES: usize = 256;

/// Batches queued for the hashing thread before the reading thread waits.
const BATCHES_QUEUED: usize = 4;

/// Ranges walked at once at most, whatever the machine.
pub const MAX_RANGES: usize = 8;

/// The default [`Split::min_range_entries`].
pub const MIN_RANGE_ENTRIES: u64 = 50_000;

/// How often the progress of a walk in ranges is reported.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// How [`verify_connection`] shares the walk over the entries (step 2)
/// among threads.
///
/// `n` entries to check are split into `min(max_ranges, n /
/// min_range_entries)` contiguous ranges of about equal size. With two or
/// more, each range is read on a thread and read-only connection of its
/// own and hashed on a second thread. With one, the walk reads on the
/// calling thread and hashes on a second one when there are
/// `min_range_entries` entries or more and `max_ranges` is not 1 (else on
/// the calling thread too). The report does not depend on the split.
///
/// Measured 2026-12-04 on this 2-core machine shared with other builds
/// (load 4–5; a throwaway program verifying a chain of 200,000 entries six
/// times, in turn with each build): two
/// ranges hashing on their reading threads took 1.40 µs of CPU per entry,
/// two ranges with a hashing thread each 1.44 µs, but the latter finished
/// sooner every time (1.4–2.6 s against 1.6–5.3 s): four threads get more
/// of cores shared with other processes than two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    /// The most ranges at once. Default: the machine's available
    /// parallelism (1 when unknown), at most [`MAX_RANGES`].
    pub max_ranges: usize,
    /// The fewest entries a range has, and that a lone range needs for a
    /// hashing thread of its own. Default: [`MIN_RANGE_ENTRIES`], so a
    /// thread and a connection cost under 1% of their range's time.
    pub min_range_entries: u64,
}

impl Default for Split {
    fn default() -> Split {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Split { max_ranges: cores.min(MAX_RANGES), min_range_entries: MIN_RANGE_ENTRIES }
    }
}

impl Split {
    /// How many ranges `entries` entries are walked in (at least 1).
    pub fn ranges(self, entries: u64) -> usize {
        let most = entries / self.min_range_entries.max(1);
        usize::try_from(most).unwrap_or(usize::MAX).clamp(1, self.max_ranges.max(1))
    }
}

/// Entries read and checked by the reading thread, on their way to be
/// hashed: the bytes each entry hash covers
/// ([`crate::chain::hashed_bytes`]) back to back, and per entry where its
/// bytes end and what is stored.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    entries: Vec<Hashable>,
}

impl Batch {
    fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
    }
}

/// One entry of a [`Batch`].
struct Hashable {
    seq: u64,
    end: usize,
    stored: [u8; 32],
}

/// Positions `first_seq` to `last_seq` (to the last row when `None`) of a
/// walk, the first linking from `prev`.
#[derive(Debug, Clone, Copy)]
struct Range {
    first_seq: u64,
    prev: [u8; 32],
    last_seq: Option<u64>,
}

/// Steps 2a–2d over the entries from `first_seq` on, linking from `prev`,
/// on `conn` as one range, or split by `split` over the `ranges`
/// connections (which read the snapshot of `conn`: [`pin_snapshot`]).
/// Gives what an entry-by-entry walk gives, and how many ranges it took.
///
/// One range: two threads share the work ([`walk_range`]). This one reads
/// the rows in seq order, checks what is sequential (a, b, d) and the
/// column types (c), and copies the bytes each entry hash covers into a
/// [`Batch`]; a second thread checks that the text is UTF-8 and recomputes
/// the hashes (the rest of c). The result is the one an entry-by-entry walk
/// gives, because:
/// - b and d compare with the stored hashes, which are the recomputed ones
///   up to the first mismatch, and a problem c finds at an entry comes
///   before anything b or d find at that entry or later;
/// - the reading thread hands over only the entries before the first problem
///   it finds (and that entry too when the problem is d, which an
///   entry-by-entry walk checks after c), so what the hashing thread finds
///   is always the earlier problem; where this thread finds a problem in c
///   itself, it checks the UTF-8 of the columns before it first;
/// - the hashing thread stops at its first problem, and its closed channel
///   stops the reading thread.
///
/// Hashing each full batch on the reading thread instead, before it reads
/// on, finds the same, for the same reasons.
///
/// Ranges: the positions are cut into contiguous ranges, each walked as
/// above (hashing on its own thread), the one from `first_seq` linking from
/// `prev` and each later one from the stored `entry_hash` of the entry
/// before its first position, read on its own connection. A range reads the
/// rows from its first position on and stops once it has checked its last
/// one, so a row missing at either end of it is found as the single walk
/// finds it (expected seq X, found seq X + 1). The result is the first
/// problem of the first range with one, with the entries of the ranges
/// before it counted in full, which is what the single walk gives:
/// - a range without a problem checked every one of its positions, each a
///   row with that seq, a hash recomputed equal to the stored one, and
///   links from the range before; so the single walk reaches the next range
///   with the same count and the same `prev` (the stored hash of the entry
///   before it, equal to the recomputed one);
/// - from the same `prev` and position, a range finds what the single walk
///   finds from there on (the argument above for its own walk), and
///   checkpoints are checked at the position they name in whichever range
///   holds it;
/// - where the range before has a problem, the single walk stops there, and
///   what the later range found (even from a made-up `prev` when the entry
///   before it is missing or malformed) is not used.
fn walk(
    conn: &Connection,
    ranges: &mut [Connection],
    chain_id: &[u8; 16],
    stored: &[SignedCheckpoint],
    (first_seq, prev, head_seq): (u64, [u8; 32], u64),
    split: Split,
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<(Walked, usize)> {
    let total = head_seq.saturating_sub(first_seq) + 1;
    let count = if ranges.len() < 2 { 1 } else { split.ranges(total).min(ranges.len()) };
    let walked = if count == 1 {
        let whole = Range { first_seq, prev, last_seq: None };
        let hash_thread = split.max_ranges > 1 && total >= split.min_range_entries;
        walk_range(conn, chain_id, stored, whole, hash_thread, &mut |n| progress(n, total))?
    } else {
        walk_ranges(&mut ranges[..count], chain_id, stored, (first_seq, prev, total), progress)?
    };
    if walked.broken.is_none() {
        progress(walked.entries, total);
    }
    Ok((walked, count))
}

/// The ranges of [`walk`], one per connection, each on a thread of its own,
/// over `total` positions from `first_seq` on. This thread reports the
/// progress meanwhile.
fn walk_ranges(
    conns: &mut [Connection],
    chain_id: &[u8; 16],
    stored: &[SignedCheckpoint],
    (first_seq, prev, total): (u64, [u8; 32], u64),
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<Walked> {
    let count = conns.len() as u128;
    let start = |i: usize| first_seq + (u128::from(total) * i as u128 / count) as u64;
    let checked = AtomicU64::new(0);
    let last = conns.len() - 1;
    std::thread::scope(|scope| {
        let (running, finished) = mpsc::channel::<()>();
        let mut threads = Vec::with_capacity(conns.len());
        for (i, conn) in conns.iter_mut().enumerate() {
            let (running, checked) = (running.clone(), &checked);
            let first_seq = start(i);
            let last_seq = (i < last).then(|| start(i + 1) - 1);
            threads.push(scope.spawn(move || {
                let _running = running;
                let prev = match i {
                    0 => prev,
                    // Made up when missing or malformed: the range before
                    // then has a problem, and this range's result is unused.
                    _ => stored_hash(conn, first_seq - 1)?.unwrap_or([0; 32]),
                };
                let range = Range { first_seq, prev, last_seq };
                let mut reported = 0;
                walk_range(conn, chain_id, stored, range, true, &mut |n| {
                    checked.fetch_add(n - reported, Ordering::Relaxed);
                    reported = n;
                })
            }));
        }
        drop(running);
        while let Err(RecvTimeoutError::Timeout) = finished.recv_timeout(PROGRESS_EVERY) {
            progress(checked.load(Ordering::Relaxed), total);
        }
        let mut entries = 0;
        for thread in threads {
            let walked = thread.join().map_err(|_| anyhow!("a walking thread panicked"))??;
            entries += walked.entries;
            if walked.broken.is_some() {
                return Ok(Walked { entries, broken: walked.broken });
            }
        }
        Ok(Walked { entries, broken: None })
    })
}

/// The stored `entry_hash` at `seq`, when there is one of 32 bytes.
fn stored_hash(conn: &Connection, seq: u64) -> anyhow::Result<Option<[u8; 32]>> {
    Ok(entry_hash_at(conn, seq)?.and_then(|h| <[u8; 32]>::try_from(h).ok()))
}

/// The stored `entry_hash` column at `seq`, as it is (`None`: no entry).
fn entry_hash_at(conn: &Connection, seq: u64) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.query_row("SELECT entry_hash FROM entries WHERE seq = ?1", [seq as i64], |r| r.get(0))
        .optional()
}

/// One range of [`walk`]: read on this thread, hashed on a second one
/// (`hash_thread`) or here, each batch once full. `checked` is told the
/// entries read so far every few thousand.
fn walk_range(
    conn: &Connection,
    chain_id: &[u8; 16],
    stored: &[SignedCheckpoint],
    range: Range,
    hash_thread: bool,
    checked: &mut dyn FnMut(u64),
) -> anyhow::Result<Walked> {
    let (read, hashed) = if hash_thread {
        std::thread::scope(|scope| {
            let (to_hasher, batches) = mpsc::sync_channel(BATCHES_QUEUED);
            let (recycle, recycled) = mpsc::sync_channel(BATCHES_QUEUED + 1);
            let hasher = scope.spawn(move || hash_batches(&batches, &recycle));
            let read = read_entries(conn, chain_id, stored, range, checked, &mut |batch| {
                let next = recycled.try_recv().unwrap_or_default();
                to_hasher.send(std::mem::replace(batch, next)).is_ok()
            });
            drop(to_hasher);
            let hashed = hasher.join().map_err(|_| anyhow!("the hashing thread panicked"))?;
            anyhow::Ok((read, hashed))
        })?
    } else {
        let mut hashed = None;
        let read = read_entries(conn, chain_id, stored, range, checked, &mut |batch| {
            hashed = hash_batch(batch);
            batch.clear();
            hashed.is_none()
        });
        (read, hashed)
    };
    let read = read?;
    Ok(match hashed {
        Some(broken) => Walked { entries: broken.seq - range.first_seq + 1, broken: Some(broken) },
        None => read,
    })
}

/// The reading part of [`walk_range`]: every step but the hashing, which
/// it leaves to `hand_over` a batch at a time (`hand_over` takes the
/// batch's entries and answers whether to read on). Stops at its first
/// problem, after the range's last position, or when hashing found one.
fn read_entries(
    conn: &Connection,
    chain_id: &[u8; 16],
    stored: &[SignedCheckpoint],
    Range { first_seq, mut prev, last_seq }: Range,
    checked: &mut dyn FnMut(u64),
    hand_over: &mut dyn FnMut(&mut Batch) -> bool,
) -> anyhow::Result<Walked> {
    let names = Entry::FIELDS.join(", ");
    let mut stmt = conn.prepare(&format!(
        "SELECT seq, {names}, prev_hash, entry_hash FROM entries WHERE seq >= ?1 ORDER BY seq"
    ))?;
    let mut rows = stmt.query([first_seq as i64])?;
    let n = Entry::FIELDS.len();
    let mut pending = stored.iter().filter(|c| c.checkpoint.seq >= first_seq).peekable();
    let mut expected_seq = first_seq;
    let mut entries = 0u64;
    let mut batch = Batch::default();
    let broken = 'rows: loop {
        let Some(row) = rows.next()? else { break None };
        entries += 1;
        if entries.is_multiple_of(16_384) {
            checked(entries);
        }
        let broken = |kind, reason: String, expected: String, found: String| {
            Some(Broken { seq: expected_seq, kind, reason, expected, found })
        };

        // a. Position.
        let seq: i64 = row.get(0)?;
        if u64::try_from(seq).ok() != Some(expected_seq) {
            break broken(
                BreakKind::Sequence,
                format!(
                    "expected seq {expected_seq}, found seq {seq} (an entry was deleted or inserted)"
                ),
                expected_seq.to_string(),
                seq.to_string(),
            );
        }

        // b. Link.
        let stored_prev = row.get_ref(n + 1)?;
        if blob(stored_prev) != Some(prev.as_slice()) {
            break broken(
                BreakKind::Link,
                "chain link broken: prev_hash is not the previous entry's hash".into(),
                hex::encode(prev),
                show_blob(stored_prev),
            );
        }

        // c. Content: the column types here; that text is UTF-8 and the
        // hash on the other thread (or here, when this entry is broken
        // anyway, so that the first problem in it is the one reported).
        let mut values = [HashedField::Integer(0); 28];
        for (i, (slot, text)) in values.iter_mut().zip(Entry::TEXT).enumerate() {
            let value = row.get_ref(i + 1)?;
            *slot = match (text, value) {
                (true, ValueRef::Text(bytes)) => HashedField::Text(bytes),
                (false, ValueRef::Integer(v)) => HashedField::Integer(v),
                (_, other) => {
                    if let Some(problem) = first_not_utf8(expected_seq, &values[..i]) {
                        break 'rows Some(problem);
                    }
                    break 'rows broken(
                        BreakKind::FieldType,
                        format!("column {} has the wrong type", Entry::FIELDS[i]),
                        if text { "TEXT" } else { "INTEGER" }.into(),
                        format!("{:?}", other.data_type()).to_uppercase(),
                    );
                }
            };
        }
        let stored_hash = row.get_ref(n + 2)?;
        let Some(hash) = blob(stored_hash).and_then(|b| <[u8; 32]>::try_from(b).ok()) else {
            if let Some(problem) = first_not_utf8(expected_seq, &values) {
                break Some(problem);
            }
            let mut bytes = Vec::new();
            hashed_bytes(chain_id, expected_seq, &prev, values, |b| bytes.extend_from_slice(b));
            let computed: [u8; 32] = Sha256::digest(&bytes).into();
            break Some(hash_mismatch(expected_seq, computed, show_blob(stored_hash)));
        };
        hashed_bytes(chain_id, expected_seq, &prev, values, |b| batch.bytes.extend_from_slice(b));
        batch.entries.push(Hashable { seq: expected_seq, end: batch.bytes.len(), stored: hash });

        // d. Checkpoints at this seq (against the stored hash: see `walk`).
        while let Some(c) = pending.next_if(|c| c.checkpoint.seq <= expected_seq) {
            if c.checkpoint.head_hash != hash || c.checkpoint.seq != expected_seq {
                break 'rows broken(
                    BreakKind::CheckpointHead,
                    format!(
                        "the checkpoint at seq {} names another head hash than the entry has",
                        c.checkpoint.seq
                    ),
                    hex::encode(c.checkpoint.head_hash),
                    hex::encode(hash),
                );
            }
        }
        prev = hash;
        expected_seq += 1;
        if batch.entries.len() == BATCH_ENTRIES && !hand_over(&mut batch) {
            // Hashing found a problem, which is the result then.
            break None;
        }
        if last_seq.is_some_and(|last| expected_seq > last) {
            break None;
        }
    };
    if !batch.entries.is_empty() {
        // A problem found here is the result (see `walk_range`).
        hand_over(&mut batch);
    }
    Ok(Walked { entries, broken })
}

/// The hashing thread of [`walk_range`]: [`hash_batch`] on each batch in
/// order, stopping at the first problem. Emptied batches go back over
/// `recycle` when it has room.
fn hash_batches(batches: &Receiver<Batch>, recycle: &SyncSender<Batch>) -> Option<Broken> {
    for mut batch in batches {
        if let Some(problem) = hash_batch(&batch) {
            return Some(problem);
        }
        batch.clear();
        let _ = recycle.try_send(batch);
    }
    None
}

/// Checks that each entry's text in `batch` is UTF-8 and recomputes its
/// hash, stopping at the first entry where either fails.
fn hash_batch(batch: &Batch) -> Option<Broken> {
    let mut start = 0;
    for entry in &batch.entries {
        let hashed = &batch.bytes[start..entry.end];
        for (column, text) in hashed_texts(hashed) {
            if std::str::from_utf8(text).is_err() {
                return Some(not_utf8(entry.seq, column, text));
            }
        }
        let computed: [u8; 32] = Sha256::digest(hashed).into();
        if computed != entry.stored {
            return Some(hash_mismatch(entry.seq, computed, hex::encode(entry.stored)));
        }
        start = entry.end;
    }
    None
}

/// The first text among `values` (the first columns of the entry at `seq`)
/// that is not UTF-8.
fn first_not_utf8(seq: u64, values: &[HashedField<'_>]) -> Option<Broken> {
    values.iter().enumerate().find_map(|(column, value)| match value {
        HashedField::Text(text) if std::str::from_utf8(text).is_err() => {
            Some(not_utf8(seq, column, text))
        }
        _ => None,
    })
}

fn not_utf8(seq: u64, column: usize, text: &[u8]) -> Broken {
    Broken {
        seq,
        kind: BreakKind::FieldType,
        reason: format!("column {} holds text that is not UTF-8", Entry::FIELDS[column]),
        expected: "UTF-8 text".into(),
        found: hex::encode(text),
    }
}

fn hash_mismatch(seq: u64, computed: [u8; 32], found: String) -> Broken {
    Broken {
        seq,
        kind: BreakKind::EntryHash,
        reason: "entry hash mismatch: a stored field was changed".into(),
        expected: hex::encode(computed),
        found,
    }
}

/// Step 1 for one checkpoint: `None` when it verifies or there is no key
/// (a signature of the wrong length is reported even then).
fn check_signature(
    signed: &SignedCheckpoint,
    key: Option<&VerifyingKey>,
    which: &str,
) -> Option<Broken> {
    let seq = signed.checkpoint.seq;
    let error = match key {
        Some(key) => signed.verify(key).err()?,
        None if signed.signature.len() == 64 => return None,
        None => CheckpointError::MalformedSignature { len: signed.signature.len() },
    };
    let (expected, found) = match &error {
        CheckpointError::MalformedSignature { len } => {
            ("64 bytes".to_string(), format!("{len} bytes"))
        }
        CheckpointError::BadSignature { key_fingerprint } => (
            format!("a signature by key {key_fingerprint}"),
            format!("a signature recorded as by key {}", signed.key_fingerprint),
        ),
    };
    Some(Broken {
        seq,
        kind: BreakKind::CheckpointSignature,
        reason: format!("{which} {error} (checkpoint at seq {seq})"),
        expected,
        found,
    })
}

/// Step 4: the first quarantined content whose hash its entry does not hold.
fn check_quarantine(conn: &Connection) -> anyhow::Result<Option<Broken>> {
    let mut stmt = conn.prepare(
        "SELECT q.message_id, q.content, e.seq, e.quarantine_sha256
         FROM quarantine q LEFT JOIN entries e ON e.message_id = q.message_id
         ORDER BY e.seq",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        let content = blob(row.get_ref(1)?).unwrap_or_default();
        let seq: Option<i64> = row.get(2)?;
        let stored: Option<String> = row.get(3)?;
        let computed = crate::chain::content_sha256(content);
        if stored.as_deref() != Some(computed.as_str()) {
            return Ok(Some(Broken {
                seq: seq.map_or(0, |s| s as u64),
                kind: BreakKind::QuarantineContent,
                reason: format!("quarantined content of message {id} was changed"),
                expected: stored.unwrap_or_else(|| "<no entry>".into()),
                found: computed,
            }));
        }
    }
    Ok(None)
}

fn blob(value: ValueRef<'_>) -> Option<&[u8]> {
    match value {
        ValueRef::Blob(b) => Some(b),
        _ => None,
    }
}

fn show_blob(value: ValueRef<'_>) -> String {
    blob(value).map_or_else(|| "<not a blob>".into(), hex::encode)
}

/// The human-readable report, in the spirit of oktsec's `verify-chain`.
pub fn render_text(report: &Report) -> String {
    let mut out = String::from("\n");
    match &report.broken {
        None if report.head_seq == 0 => out.push_str("  Chain: EMPTY (no entries)\n"),
        None => out.push_str(&format!("  Chain: VALID ({} entries)\n", thousands(report.entries))),
        Some(b) => {
            out.push_str(&format!("  Chain: BROKEN at seq {} of {}\n", b.seq, report.head_seq));
            out.push_str(&format!("  Reason: {}\n", b.reason));
            out.push_str(&format!("  Expected: {}\n", b.expected));
            out.push_str(&format!("  Found: {}\n", b.found));
        }
    }
    if report.first_seq > 1 {
        out.push_str(&format!(
            "  Checked: seq {} to {} (anchored at the checkpoint at seq {})\n",
            report.first_seq,
            report.head_seq,
            report.first_seq - 1
        ));
    }
    let fingerprint = report.key_fingerprint.as_deref().unwrap_or("");
    out.push_str(&match report.signature_check {
        SignatureCheck::Valid => format!(
            "  Signature: VALID ({} checkpoints, key fingerprint {fingerprint})\n",
            report.checkpoints
        ),
        SignatureCheck::Invalid => {
            format!("  Signature: INVALID (key fingerprint {fingerprint})\n")
        }
        SignatureCheck::Skipped => "  Signature: SKIPPED (no key)\n".to_string(),
        SignatureCheck::Unsigned => {
            format!("  Signature: NONE (no checkpoint to check; key fingerprint {fingerprint})\n")
        }
    });
    if let Some(c) = &report.latest_checkpoint {
        out.push_str(&format!("  Last checkpoint: seq {} at {}\n", c.seq, c.time));
    }
    if report.unsigned_entries > 0 {
        out.push_str(&format!(
            "  Unsigned tail: {} entries after the last checkpoint\n",
            report.unsigned_entries
        ));
    }
    if let Some(seq) = report.checkpoint_file_seq {
        out.push_str(&format!("  Checkpoint file: seq {seq}\n"));
    }
    out.push_str(&format!("  Chain id: {}\n", report.chain_id));
    if report.head_seq > 0 {
        out.push_str(&format!("  Head: seq {} hash {}\n", report.head_seq, report.head_hash));
    }
    out
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests;
