//! The quarantine review queue: quarantined requests and their decisions.
//!
//! A quarantined request is an entry with status `quarantined`. When the
//! filter sent its scanned content (`quarantine_content`), the content sits
//! in the `quarantine` table and the entry holds its SHA-256
//! (`quarantine_sha256`), so a reviewer sees exactly what was scanned and
//! `verify` notices if it is changed.
//!
//! A decision never edits an entry: [`decide`] appends a new entry
//!
//! | column        | value                                             |
//! |---------------|---------------------------------------------------|
//! | `message_id`  | `quarantine-decision:<message id decided>`        |
//! | `status`      | `reviewed`                                        |
//! | `decision`    | `quarantine_approved` or `quarantine_rejected`    |
//! | `refers_to`   | the message id decided                            |
//! | `from_agent`  | the reviewer                                      |
//! | `reason`      | `approved by <reviewer>` / `rejected by <reviewer>` |
//! | times         | `received_at_ns` = `appended_at_ns` = now         |
//!
//! (other text columns empty, lists `[]`, integers 0), and when the signing
//! key is at hand a checkpoint covering it in the same transaction. The
//! message id makes a second decision on the same request impossible: the
//! store's unique index refuses it. A request is `pending` until a decision
//! entry refers to it. Warrant does not re-deliver approved requests; the
//! queue is a record for human review.

use ed25519_dalek::SigningKey;
use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

use crate::chain::Entry;
use crate::store::{Appended, Store};

/// The message id prefix of decision entries.
pub const DECISION_PREFIX: &str = "quarantine-decision:";

/// One quarantined request and where its review stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    /// Seq of the quarantined entry.
    pub seq: u64,
    /// Its message id.
    pub message_id: String,
    /// Sender.
    pub from: String,
    /// Recipient.
    pub to: String,
    /// When the filter received it (Unix ns).
    pub received_at_ns: i64,
    /// The findings, JSON array text as stored.
    pub findings: String,
    /// Hex SHA-256 of the content, empty when none was sent.
    pub content_sha256: String,
    /// Where the review stands.
    pub state: State,
}

/// Where a review stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// No decision yet.
    Pending,
    /// Approved by `reviewer`, recorded at `seq`.
    Approved {
        /// Who decided.
        reviewer: String,
        /// Seq of the decision entry.
        seq: u64,
    },
    /// Rejected by `reviewer`, recorded at `seq`.
    Rejected {
        /// Who decided.
        reviewer: String,
        /// Seq of the decision entry.
        seq: u64,
    },
}

/// A reviewer's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Approve the request.
    Approve,
    /// Reject the request.
    Reject,
}

/// Why a decision was not recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QuarantineError {
    /// No entry has this message id.
    NotFound {
        /// The id asked for.
        message_id: String,
    },
    /// The entry exists but was not quarantined.
    NotQuarantined {
        /// The id asked for.
        message_id: String,
        /// Its status.
        status: String,
    },
    /// A decision is already recorded.
    AlreadyDecided {
        /// The id asked for.
        message_id: String,
        /// The decision found.
        decision: String,
        /// Its seq.
        seq: u64,
    },
    /// The database refused the read or the append.
    Storage(String),
}

impl Verdict {
    /// The decision code recorded.
    pub fn decision(self) -> &'static str {
        match self {
            Verdict::Approve => "quarantine_approved",
            Verdict::Reject => "quarantine_rejected",
        }
    }
}

/// Every quarantined request, newest first.
///
/// # Errors
/// A query fails.
pub fn list(conn: &Connection) -> Result<Vec<Item>, QuarantineError> {
    query_items(conn, "WHERE e.status = 'quarantined' ORDER BY e.seq DESC", None)
}

/// One quarantined request and its content (empty when none was kept).
///
/// # Errors
/// [`QuarantineError::NotFound`] or [`QuarantineError::NotQuarantined`].
pub fn show(conn: &Connection, message_id: &str) -> Result<(Item, Vec<u8>), QuarantineError> {
    let item = quarantined(conn, message_id)?;
    let content: Option<Vec<u8>> = conn
        .query_row("SELECT content FROM quarantine WHERE message_id = ?1", [message_id], |r| {
            r.get(0)
        })
        .optional()
        .map_err(storage)?;
    Ok((item, content.unwrap_or_default()))
}

/// Records a decision on a pending request by appending a decision entry
/// (and, with `key`, a checkpoint covering it).
///
/// # Errors
/// The request is unknown, not quarantined or already decided, or the
/// database refused the append.
pub fn decide(
    store: &mut Store,
    message_id: &str,
    verdict: Verdict,
    reviewer: &str,
    key: Option<&SigningKey>,
    now_ns: i64,
) -> Result<Appended, QuarantineError> {
    let item = quarantined(store.connection(), message_id)?;
    if let State::Approved { seq, .. } | State::Rejected { seq, .. } = item.state {
        let decision = match item.state {
            State::Approved { .. } => Verdict::Approve.decision(),
            _ => Verdict::Reject.decision(),
        };
        return Err(QuarantineError::AlreadyDecided {
            message_id: message_id.into(),
            decision: decision.into(),
            seq,
        });
    }
    let verb = match verdict {
        Verdict::Approve => "approved",
        Verdict::Reject => "rejected",
    };
    let entry = Entry {
        message_id: format!("{DECISION_PREFIX}{message_id}"),
        received_at_ns: now_ns,
        appended_at_ns: now_ns,
        from_agent: reviewer.into(),
        status: "reviewed".into(),
        decision: verdict.decision().into(),
        reason: format!("{verb} by {reviewer}"),
        delegation_path: "[]".into(),
        findings: "[]".into(),
        notes: "[]".into(),
        refers_to: message_id.into(),
        ..Entry::default()
    };
    let (appended, _) =
        store.append_entry(&entry, key, now_ns).map_err(|e| storage(format!("{e:#}")))?;
    Ok(appended)
}

fn quarantined(conn: &Connection, message_id: &str) -> Result<Item, QuarantineError> {
    let status: Option<String> = conn
        .query_row("SELECT status FROM entries WHERE message_id = ?1", [message_id], |r| r.get(0))
        .optional()
        .map_err(storage)?;
    match status {
        None => Err(QuarantineError::NotFound { message_id: message_id.into() }),
        Some(status) if status != "quarantined" => {
            Err(QuarantineError::NotQuarantined { message_id: message_id.into(), status })
        }
        Some(_) => query_items(conn, "WHERE e.message_id = ?1", Some(message_id))?
            .pop()
            .ok_or_else(|| QuarantineError::NotFound { message_id: message_id.into() }),
    }
}

fn query_items(
    conn: &Connection,
    filter: &str,
    param: Option<&str>,
) -> Result<Vec<Item>, QuarantineError> {
    let sql = format!(
        "SELECT e.seq, e.message_id, e.from_agent, e.to_agent, e.received_at_ns, e.findings,
                e.quarantine_sha256, d.seq, d.decision, d.from_agent
         FROM entries e LEFT JOIN entries d ON d.refers_to = e.message_id
              AND d.message_id = '{DECISION_PREFIX}' || e.message_id
         {filter}"
    );
    let mut stmt = conn.prepare(&sql).map_err(storage)?;
    let map = |r: &rusqlite::Row<'_>| {
        let decision_seq: Option<i64> = r.get(7)?;
        let decision: Option<String> = r.get(8)?;
        let reviewer: Option<String> = r.get(9)?;
        let state = match (decision_seq, decision.as_deref()) {
            (Some(seq), Some("quarantine_approved")) => {
                State::Approved { reviewer: reviewer.unwrap_or_default(), seq: seq as u64 }
            }
            (Some(seq), Some(_)) => {
                State::Rejected { reviewer: reviewer.unwrap_or_default(), seq: seq as u64 }
            }
            _ => State::Pending,
        };
        Ok(Item {
            seq: r.get::<_, i64>(0)? as u64,
            message_id: r.get(1)?,
            from: r.get(2)?,
            to: r.get(3)?,
            received_at_ns: r.get(4)?,
            findings: r.get(5)?,
            content_sha256: r.get(6)?,
            state,
        })
    };
    let rows = match param {
        Some(p) => stmt.query_map([p], map),
        None => stmt.query_map([], map),
    }
    .map_err(storage)?;
    rows.collect::<Result<_, _>>().map_err(storage)
}

fn storage(e: impl std::fmt::Display) -> QuarantineError {
    QuarantineError::Storage(e.to_string())
}

impl std::fmt::Display for QuarantineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuarantineError::NotFound { message_id } => {
                write!(f, "message {message_id} is not in the audit chain")
            }
            QuarantineError::NotQuarantined { message_id, status } => write!(
                f,
                "message {message_id} was not quarantined: expected status quarantined, \
                 found {status}"
            ),
            QuarantineError::AlreadyDecided { message_id, decision, seq } => {
                write!(f, "message {message_id} is already decided: {decision} at seq {seq}")
            }
            QuarantineError::Storage(e) => write!(f, "audit database: {e}"),
        }
    }
}

impl std::error::Error for QuarantineError {}

#[cfg(test)]
mod tests {
    use warrant_wire::AuditRecord;

    use super::*;
    use crate::verify::{verify, Options};

    fn record(id: &str, status: &str, content: &[u8]) -> AuditRecord {
        AuditRecord {
            message_id: id.into(),
            from: "alice".into(),
            to: "bob".into(),
            status: status.into(),
            quarantine_content: content.to_vec(),
            ..Default::default()
        }
    }

    fn store() -> (tempfile::TempDir, std::path::PathBuf, Store) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let mut store = Store::open(&path).unwrap();
        store
            .append_batch(
                &[
                    record("q1", "quarantined", b"insmod /tmp/rootkit.ko"),
                    record("d1", "delivered", b""),
                    record("q2", "quarantined", b""),
                ],
                1,
            )
            .unwrap();
        (dir, path, store)
    }

    #[test]
    fn queue_lists_quarantined_requests_newest_first_with_content() {
        let (_d, _p, store) = store();
        let items = list(store.connection()).unwrap();
        let ids: Vec<_> = items.iter().map(|i| i.message_id.as_str()).collect();
        assert_eq!(ids, ["q2", "q1"]);
        assert!(items.iter().all(|i| i.state == State::Pending));
        let (item, content) = show(store.connection(), "q1").unwrap();
        assert_eq!(content, b"insmod /tmp/rootkit.ko");
        assert_eq!(item.content_sha256, crate::chain::content_sha256(&content));
    }

    #[test]
    fn decisions_append_entries_and_never_edit_the_quarantined_one() {
        let (_d, path, mut store) = store();
        let key = SigningKey::from_bytes(&[1; 32]);
        let before: Vec<u8> = store
            .connection()
            .query_row("SELECT entry_hash FROM entries WHERE seq = 1", [], |r| r.get(0))
            .unwrap();
        let approved = decide(&mut store, "q1", Verdict::Approve, "carol", Some(&key), 9).unwrap();
        assert_eq!(approved.seq, 4);
        let rejected = decide(&mut store, "q2", Verdict::Reject, "dave", None, 10).unwrap();
        assert_eq!(rejected.seq, 5);
        let after: Vec<u8> = store
            .connection()
            .query_row("SELECT entry_hash FROM entries WHERE seq = 1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(before, after);
        let states: Vec<_> =
            list(store.connection()).unwrap().into_iter().map(|i| i.state).collect();
        assert_eq!(
            states,
            [
                State::Rejected { reviewer: "dave".into(), seq: 5 },
                State::Approved { reviewer: "carol".into(), seq: 4 },
            ]
        );
        let report =
            verify(&path, &Options { key: Some(key.verifying_key()), ..Default::default() })
                .unwrap();
        assert!(report.valid, "{report:?}");
        assert_eq!(report.latest_checkpoint.map(|c| c.seq), Some(4));
    }

    #[test]
    fn refusals_name_the_message() {
        let (_d, _p, mut store) = store();
        decide(&mut store, "q1", Verdict::Approve, "carol", None, 9).unwrap();
        let cases = [
            ("unknown", "nope", QuarantineError::NotFound { message_id: "nope".into() }),
            (
                "not quarantined",
                "d1",
                QuarantineError::NotQuarantined {
                    message_id: "d1".into(),
                    status: "delivered".into(),
                },
            ),
            (
                "decided twice",
                "q1",
                QuarantineError::AlreadyDecided {
                    message_id: "q1".into(),
                    decision: "quarantine_approved".into(),
                    seq: 4,
                },
            ),
        ];
        for (name, id, want) in cases {
            let got = decide(&mut store, id, Verdict::Reject, "dave", None, 10).unwrap_err();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn errors_format_once_each() {
        let messages = [
            QuarantineError::NotFound { message_id: "m".into() }.to_string(),
            QuarantineError::NotQuarantined { message_id: "m".into(), status: "blocked".into() }
                .to_string(),
            QuarantineError::AlreadyDecided {
                message_id: "m".into(),
                decision: "quarantine_rejected".into(),
                seq: 3,
            }
            .to_string(),
            QuarantineError::Storage("disk full".into()).to_string(),
        ];
        assert_eq!(
            messages,
            [
                "message m is not in the audit chain",
                "message m was not quarantined: expected status quarantined, found blocked",
                "message m is already decided: quarantine_rejected at seq 3",
                "audit database: disk full",
            ]
        );
    }
}
