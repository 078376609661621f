//! The SQLite database that holds the chain.
//!
//! State it owns: one `chain` row (the chain id and format version, fixed at
//! creation) and the `entries` table (one row per record, ordered by `seq`).
//! `PRAGMA user_version` holds the schema version; a database of another
//! version is refused with both numbers.
//!
//! Durability: WAL journal with `synchronous = FULL`. A transaction is on
//! disk (the WAL fsynced) before `COMMIT` returns, so an acknowledged record
//! survives a process crash and a power loss. [`Store::append_batch`]
//! appends many records in one transaction (group commit), which is how the
//! cost of that fsync is shared.
//!
//! [`Store::open`] is the writer (the `serve` command); [`Store::open_read_only`]
//! is for `verify` and never changes the file.

use std::path::Path;

use anyhow::{bail, Context as _};
use rusqlite::{params_from_iter, Connection, OpenFlags, OptionalExtension};
use warrant_wire::AuditRecord;

use crate::chain::{Entry, FieldValue, FORMAT_VERSION};

/// The schema version in `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 1;

/// An open chain database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    chain_id: [u8; 16],
    head: Head,
}

/// The last entry: what the next one links to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Its seq (0 for an empty chain).
    pub seq: u64,
    /// Its hash (zeros for an empty chain).
    pub hash: [u8; 32],
}

/// The result of appending one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Position in the chain.
    pub seq: u64,
    /// Entry hash.
    pub hash: [u8; 32],
    /// Whether the record had been stored before (same message id).
    pub duplicate: bool,
}

impl Store {
    /// Opens (creating if absent) a database for writing. A new file is
    /// created with mode 0600 and a fresh random chain id.
    ///
    /// # Errors
    /// The file cannot be opened or created, or holds another schema.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        create_private(path)?;
        let conn =
            Connection::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version == 0 {
            init_schema(&conn)
                .with_context(|| format!("{}: cannot create the schema", path.display()))?;
        } else if version != SCHEMA_VERSION {
            bail!(
                "{}: schema version {version} is not supported (this build reads {SCHEMA_VERSION})",
                path.display()
            );
        }
        let chain_id = read_chain_id(&conn).with_context(|| path.display().to_string())?;
        let head = read_head(&conn)?;
        Ok(Store { conn, chain_id, head })
    }

    /// Opens an existing database strictly read-only (`verify`).
    ///
    /// # Errors
    /// The file is missing or unreadable, or holds another schema.
    pub fn open_read_only(path: &Path) -> anyhow::Result<Connection> {
        if !path.exists() {
            bail!("{}: audit database not found", path.display());
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .with_context(|| format!("{}: cannot open read-only", path.display()))?;
        conn.pragma_update(None, "query_only", true)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .with_context(|| format!("{}: not a readable SQLite database", path.display()))?;
        if version != SCHEMA_VERSION {
            bail!(
                "{}: schema version {version} is not supported (this build reads {SCHEMA_VERSION})",
                path.display()
            );
        }
        Ok(conn)
    }

    /// The chain id.
    pub fn chain_id(&self) -> [u8; 16] {
        self.chain_id
    }

    /// The current head.
    pub fn head(&self) -> Head {
        self.head
    }

    /// Appends records in one transaction. A record whose message id is
    /// already stored is not stored again; its existing position is
    /// returned with `duplicate: true`.
    ///
    /// On any error nothing of the batch is stored and the head is
    /// unchanged.
    ///
    /// # Errors
    /// SQLite refused the transaction (disk full, read-only file, ...).
    pub fn append_batch(
        &mut self,
        records: &[AuditRecord],
        now_ns: i64,
    ) -> anyhow::Result<Vec<Appended>> {
        let saved = self.head;
        let result = self.append_in_transaction(records, now_ns);
        if result.is_err() {
            self.head = saved;
        }
        result
    }

    fn append_in_transaction(
        &mut self,
        records: &[AuditRecord],
        now_ns: i64,
    ) -> anyhow::Result<Vec<Appended>> {
        let tx = self.conn.transaction()?;
        let mut out = Vec::with_capacity(records.len());
        {
            let mut existing =
                tx.prepare_cached("SELECT seq, entry_hash FROM entries WHERE message_id = ?1")?;
            let mut insert = tx.prepare_cached(&insert_sql())?;
            for record in records {
                let found: Option<(i64, Vec<u8>)> = existing
                    .query_row([&record.message_id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                if let Some((seq, hash)) = found {
                    out.push(Appended { seq: seq as u64, hash: to_hash(&hash), duplicate: true });
                    continue;
                }
                let entry = Entry::from_record(record, now_ns);
                let seq = self.head.seq + 1;
                let hash = entry.hash(&self.chain_id, seq, &self.head.hash);
                let mut values: Vec<rusqlite::types::Value> = vec![(seq as i64).into()];
                values.extend(entry.values().iter().map(|v| match v {
                    FieldValue::Text(t) => rusqlite::types::Value::Text((*t).to_string()),
                    FieldValue::Integer(n) => rusqlite::types::Value::Integer(*n),
                }));
                values.push(self.head.hash.to_vec().into());
                values.push(hash.to_vec().into());
                insert.execute(params_from_iter(values))?;
                self.head = Head { seq, hash };
                out.push(Appended { seq, hash, duplicate: false });
            }
        }
        tx.commit()?;
        Ok(out)
    }
}

/// Creates the file with mode 0600 when it does not exist yet, so the
/// database is never world-readable, not even for a moment.
fn create_private(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create directory", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).with_context(|| format!("{}: cannot create", path.display()))?;
    Ok(())
}

fn init_schema(conn: &Connection) -> anyhow::Result<()> {
    let mut chain_id = [0u8; 16];
    getrandom::fill(&mut chain_id)
        .map_err(|e| anyhow::anyhow!("no randomness for the chain id: {e}"))?;
    let columns: Vec<String> = Entry::FIELDS
        .iter()
        .zip(Entry::default().values())
        .map(|(name, value)| match value {
            FieldValue::Text(_) => format!("{name} TEXT NOT NULL"),
            FieldValue::Integer(_) => format!("{name} INTEGER NOT NULL"),
        })
        .collect();
    let sql = format!(
        "BEGIN;
         CREATE TABLE chain (
             id INTEGER PRIMARY KEY CHECK (id = 1),
             chain_id BLOB NOT NULL,
             format_version INTEGER NOT NULL
         );
         CREATE TABLE entries (
             seq INTEGER PRIMARY KEY,
             {},
             prev_hash BLOB NOT NULL,
             entry_hash BLOB NOT NULL
         );
         CREATE UNIQUE INDEX entries_message_id ON entries(message_id);
         CREATE INDEX entries_session ON entries(session_id) WHERE session_id != '';
         PRAGMA user_version = {SCHEMA_VERSION};
         COMMIT;",
        columns.join(",\n             ")
    );
    conn.execute_batch(&sql)?;
    conn.execute(
        "INSERT INTO chain (id, chain_id, format_version) VALUES (1, ?1, ?2)",
        rusqlite::params![chain_id.to_vec(), FORMAT_VERSION],
    )?;
    Ok(())
}

fn insert_sql() -> String {
    let names = Entry::FIELDS.join(", ");
    let marks: Vec<String> = (1..=Entry::FIELDS.len() + 3).map(|i| format!("?{i}")).collect();
    format!(
        "INSERT INTO entries (seq, {names}, prev_hash, entry_hash) VALUES ({})",
        marks.join(", ")
    )
}

/// Reads the chain id and checks the format version.
///
/// # Errors
/// The row is missing or malformed, or of another format.
pub fn read_chain_id(conn: &Connection) -> anyhow::Result<[u8; 16]> {
    let (id, format): (Vec<u8>, i64) = conn
        .query_row("SELECT chain_id, format_version FROM chain WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .context("the chain row is missing")?;
    if format != i64::from(FORMAT_VERSION) {
        bail!("chain format version {format} is not supported (this build reads {FORMAT_VERSION})");
    }
    id.as_slice()
        .try_into()
        .map_err(|_| anyhow::anyhow!("chain id has {} bytes, expected 16", id.len()))
}

fn read_head(conn: &Connection) -> anyhow::Result<Head> {
    let last: Option<(i64, Vec<u8>)> = conn
        .query_row("SELECT seq, entry_hash FROM entries ORDER BY seq DESC LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    Ok(match last {
        Some((seq, hash)) => Head { seq: seq as u64, hash: to_hash(&hash) },
        None => Head { seq: 0, hash: [0; 32] },
    })
}

fn to_hash(bytes: &[u8]) -> [u8; 32] {
    let mut hash = [0u8; 32];
    if bytes.len() == 32 {
        hash.copy_from_slice(bytes);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> AuditRecord {
        AuditRecord {
            message_id: id.into(),
            from: "alice".into(),
            status: "delivered".into(),
            ..Default::default()
        }
    }

    #[test]
    fn appends_link_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let mut store = Store::open(&path).unwrap();
        let first = store.append_batch(&[record("a"), record("b")], 1).unwrap();
        assert_eq!(first.iter().map(|a| a.seq).collect::<Vec<_>>(), vec![1, 2]);
        let chain_id = store.chain_id();
        drop(store);
        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.chain_id(), chain_id);
        assert_eq!(store.head().seq, 2);
        let next = store.append_batch(&[record("c")], 2).unwrap();
        assert_eq!(next[0].seq, 3);
    }

    #[test]
    fn retransmission_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("audit.db")).unwrap();
        let first = store.append_batch(&[record("a")], 1).unwrap();
        let again = store.append_batch(&[record("a"), record("a"), record("b")], 2).unwrap();
        assert_eq!(again[0], Appended { duplicate: true, ..first[0].clone() });
        assert!(again[1].duplicate);
        assert_eq!((again[2].seq, again[2].duplicate), (2, false));
    }

    #[test]
    #[cfg(unix)]
    fn new_database_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        drop(Store::open(&path).unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn other_schema_versions_are_refused_with_both_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        drop(Store::open(&path).unwrap());
        Connection::open(&path).unwrap().pragma_update(None, "user_version", 7).unwrap();
        let err = Store::open(&path).unwrap_err().to_string();
        assert!(err.contains("schema version 7") && err.contains("reads 1"), "{err}");
    }
}
