//! The SQLite database that holds the chain.
//!
//! State it owns (schema version 2, in `PRAGMA user_version`):
//! - `chain`: one row, the chain id and entry format version, fixed at
//!   creation;
//! - `entries`: one row per record, `seq` then the columns of
//!   [`Entry::FIELDS`] then `prev_hash` and `entry_hash` (32-byte blobs);
//! - `checkpoints`: signed heads, one row per covered `seq`: `seq`,
//!   `head_hash` (blob), `time_ns`, `key_fingerprint` (hex),
//!   `signature` (64-byte blob) — see [`crate::checkpoint`];
//! - `quarantine`: `message_id` and `content` (blob) of quarantined
//!   requests, kept outside the chain; each entry stores the SHA-256 of its
//!   content in `quarantine_sha256`, which is hashed.
//!
//! A database of another schema version is refused with both numbers.
//!
//! Durability: WAL journal with `synchronous = FULL` by default. A
//! transaction is on disk (the WAL fsynced) before `COMMIT` returns, so an
//! acknowledged record survives a process crash and a power loss.
//! [`Store::append_batch`] appends many records in one transaction (group
//! commit), which is how the cost of that fsync is shared.
//! [`Durability::Normal`] (`serve --synchronous normal`) skips that fsync:
//! `COMMIT` returns once the WAL is written to the operating system, which
//! syncs it at WAL checkpoints; a record then survives a crash of the
//! sidecar but not necessarily a power loss or a crash of the machine.
//!
//! Every write starts an `IMMEDIATE` transaction and reads the head inside
//! it, so two writers (the running sidecar and a `quarantine approve`) are
//! serialized by SQLite's lock and never fork the chain.
//!
//! [`Store::open`] is the writer (the `serve` command); [`Store::open_read_only`]
//! is for `verify` and the page, and never changes the file.

use std::path::Path;

use anyhow::{bail, Context as _};
use ed25519_dalek::SigningKey;
use rusqlite::{params_from_iter, Connection, OpenFlags, OptionalExtension, Transaction};
use warrant_wire::AuditRecord;

use crate::chain::{Entry, FieldValue, FORMAT_VERSION};
use crate::checkpoint::{Checkpoint, SignedCheckpoint};

/// The schema version in `PRAGMA user_version`. Version 2 added the
/// `checkpoints` and `quarantine` tables and the `quarantine_sha256` and
/// `refers_to` entry columns.
pub const SCHEMA_VERSION: i64 = 2;

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

/// How far `COMMIT` syncs before it returns: SQLite's `synchronous` in WAL
/// mode (`serve --synchronous full|normal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Durability {
    /// `synchronous = FULL`: the WAL is fsynced at every commit. An
    /// acknowledged record survives a power loss.
    #[default]
    Full,
    /// `synchronous = NORMAL`: the WAL is written at every commit and
    /// fsynced at WAL checkpoints. An acknowledged record survives a crash
    /// of the sidecar; a power loss or a crash of the machine can take the
    /// last commits back (the chain stays whole, only shorter).
    Normal,
}

impl Durability {
    /// The value of `PRAGMA synchronous` (0 OFF, 1 NORMAL, 2 FULL).
    #[must_use]
    pub fn pragma(self) -> i64 {
        match self {
            Durability::Full => 2,
            Durability::Normal => 1,
        }
    }
}

impl Store {
    /// Sets how far each commit is synced (default [`Durability::Full`]).
    ///
    /// # Errors
    /// SQLite refuses the pragma.
    pub fn set_durability(&self, durability: Durability) -> anyhow::Result<()> {
        self.conn.pragma_update(None, "synchronous", durability.pragma())?;
        Ok(())
    }

    /// The `synchronous` level in force on the writer's connection.
    #[cfg(test)]
    fn synchronous(&self) -> anyhow::Result<i64> {
        Ok(self.conn.pragma_query_value(None, "synchronous", |r| r.get(0))?)
    }

    /// Opens (creating if absent) a database for writing. A new file is
    /// created with mode 0600 and a fresh random chain id.
    ///
    /// # Errors
    /// The file cannot be opened or created, or holds another schema.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        // SQLite says only "unable to open database file" when the file or
        // its directory cannot be written (a read-only file system, for
        // example), because WAL mode needs the -wal and -shm files: ask the
        // file system first, so the error says what is wrong.
        if path.exists() {
            if let Err(e) = std::fs::OpenOptions::new().append(true).open(path) {
                bail!(
                    "{}: the database is not writable ({e}); the sidecar appends to it, \
                     so it cannot serve it (`verify` and `page` can still read it)",
                    path.display()
                );
            }
        }
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

    /// Opens an existing database strictly read-only (`verify`, the page).
    ///
    /// # Errors
    /// The file is missing or unreadable, or holds another schema.
    pub fn open_read_only(path: &Path) -> anyhow::Result<Connection> {
        if !path.exists() {
            bail!("{}: audit database not found", path.display());
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(path, flags)
            .with_context(|| format!("{}: cannot open read-only", path.display()))?;
        conn.pragma_update(None, "query_only", true)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut version = conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0));
        // A WAL database needs its -shm file even to be read; on read-only
        // media (evidence copied to a read-only mount, say) SQLite cannot
        // create it. Nothing can change such a file, so it may be opened as
        // immutable (SQLite's `immutable=1`), which needs no -shm.
        let conn = match version {
            Err(_) if on_read_only_file_system(path) => {
                let uri = format!("file:{}?immutable=1", uri_path(path));
                let conn = Connection::open_with_flags(&uri, flags)
                    .with_context(|| format!("{}: cannot open read-only", path.display()))?;
                conn.pragma_update(None, "query_only", true)?;
                version = conn.pragma_query_value(None, "user_version", |r| r.get(0));
                conn
            }
            _ => conn,
        };
        let version = version
            .with_context(|| format!("{}: not a readable SQLite database", path.display()))?;
        // Read pages through a memory map instead of a read() per page:
        // `verify` walks every page once. (Only reads: SQLite never writes
        // through the map unless told to.)
        conn.pragma_update(None, "mmap_size", 1_i64 << 30)?;
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

    /// The head as of this store's last read or write.
    pub fn head(&self) -> Head {
        self.head
    }

    /// The underlying connection, for reads.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Appends records in one transaction. A record whose message id is
    /// already stored is not stored again; its existing position is
    /// returned with `duplicate: true`. A record's `quarantine_content`, when
    /// not empty, goes to the `quarantine` table in the same transaction.
    ///
    /// On any error nothing of the batch is stored.
    ///
    /// # Errors
    /// SQLite refused the transaction (disk full, read-only file, ...).
    pub fn append_batch(
        &mut self,
        records: &[AuditRecord],
        now_ns: i64,
    ) -> anyhow::Result<Vec<Appended>> {
        Ok(self.append_batch_signed(records, now_ns, None)?.0)
    }

    /// [`Store::append_batch`], and with `sign` a checkpoint of the new head
    /// in the same transaction (so one sync covers both; `None` when the
    /// head was already covered). This is how the writer thread signs: a
    /// checkpoint costs no commit of its own.
    ///
    /// # Errors
    /// As [`Store::append_batch`]; nothing is stored.
    pub fn append_batch_signed(
        &mut self,
        records: &[AuditRecord],
        now_ns: i64,
        sign: Option<&SigningKey>,
    ) -> anyhow::Result<(Vec<Appended>, Option<SignedCheckpoint>)> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut head = read_head(&tx)?;
        let mut out = Vec::with_capacity(records.len());
        {
            let mut existing =
                tx.prepare_cached("SELECT seq, entry_hash FROM entries WHERE message_id = ?1")?;
            for record in records {
                let found: Option<(i64, Vec<u8>)> = existing
                    .query_row([&record.message_id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                if let Some((seq, hash)) = found {
                    out.push(Appended { seq: seq as u64, hash: to_hash(&hash), duplicate: true });
                    continue;
                }
                let entry = Entry::from_record(record, now_ns);
                head = insert_entry(&tx, &self.chain_id, head, &entry)?;
                if !record.quarantine_content.is_empty() {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO quarantine (message_id, content) VALUES (?1, ?2)",
                    )?
                    .execute(rusqlite::params![record.message_id, record.quarantine_content])?;
                }
                out.push(Appended { seq: head.seq, hash: head.hash, duplicate: false });
            }
        }
        let signed = match sign {
            Some(key) => insert_checkpoint(&tx, &self.chain_id, head, key, now_ns)?,
            None => None,
        };
        tx.commit()?;
        self.head = head;
        Ok((out, signed))
    }

    /// Appends one entry built by the caller (a quarantine decision) and, if
    /// `key` is given, a checkpoint covering it, in one transaction.
    ///
    /// # Errors
    /// The message id is already stored, or SQLite refused the transaction.
    pub fn append_entry(
        &mut self,
        entry: &Entry,
        key: Option<&SigningKey>,
        now_ns: i64,
    ) -> anyhow::Result<(Appended, Option<SignedCheckpoint>)> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let head = read_head(&tx)?;
        let head = insert_entry(&tx, &self.chain_id, head, entry)
            .with_context(|| format!("cannot append entry {}", entry.message_id))?;
        let signed = match key {
            Some(key) => insert_checkpoint(&tx, &self.chain_id, head, key, now_ns)?,
            None => None,
        };
        tx.commit()?;
        self.head = head;
        Ok((Appended { seq: head.seq, hash: head.hash, duplicate: false }, signed))
    }

    /// Signs the current head and stores the checkpoint, unless the chain is
    /// empty or its head is already covered (then `None`).
    ///
    /// # Errors
    /// SQLite refused the transaction.
    pub fn checkpoint(
        &mut self,
        key: &SigningKey,
        now_ns: i64,
    ) -> anyhow::Result<Option<SignedCheckpoint>> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let head = read_head(&tx)?;
        let signed = insert_checkpoint(&tx, &self.chain_id, head, key, now_ns)?;
        tx.commit()?;
        self.head = head;
        Ok(signed)
    }
}

/// The latest stored checkpoint, if any.
///
/// # Errors
/// The query fails.
pub fn latest_checkpoint(
    conn: &Connection,
    chain_id: &[u8; 16],
) -> anyhow::Result<Option<SignedCheckpoint>> {
    let mut all = read_checkpoints(conn, chain_id, "ORDER BY seq DESC LIMIT 1")?;
    Ok(all.pop())
}

/// Every stored checkpoint, by seq.
///
/// # Errors
/// The query fails.
pub fn checkpoints(
    conn: &Connection,
    chain_id: &[u8; 16],
) -> anyhow::Result<Vec<SignedCheckpoint>> {
    read_checkpoints(conn, chain_id, "ORDER BY seq")
}

fn read_checkpoints(
    conn: &Connection,
    chain_id: &[u8; 16],
    order: &str,
) -> anyhow::Result<Vec<SignedCheckpoint>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT seq, head_hash, time_ns, key_fingerprint, signature FROM checkpoints {order}"
    ))?;
    let rows = stmt.query_map([], |r| {
        let seq: i64 = r.get(0)?;
        let head: Vec<u8> = r.get(1)?;
        Ok(SignedCheckpoint {
            checkpoint: Checkpoint {
                chain_id: *chain_id,
                seq: seq as u64,
                head_hash: to_hash(&head),
                time_unix_nanos: r.get(2)?,
            },
            key_fingerprint: r.get(3)?,
            signature: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn insert_entry(
    tx: &Transaction<'_>,
    chain_id: &[u8; 16],
    head: Head,
    entry: &Entry,
) -> anyhow::Result<Head> {
    use rusqlite::types::{ToSqlOutput, ValueRef};
    let seq = head.seq + 1;
    let hash = entry.hash(chain_id, seq, &head.hash);
    // Borrowed values: no copy of the text columns per insert.
    let mut values: Vec<ToSqlOutput<'_>> = Vec::with_capacity(Entry::FIELDS.len() + 3);
    values.push(ToSqlOutput::Borrowed(ValueRef::Integer(seq as i64)));
    values.extend(entry.values().into_iter().map(|v| match v {
        FieldValue::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
        FieldValue::Integer(n) => ToSqlOutput::Borrowed(ValueRef::Integer(n)),
    }));
    values.push(ToSqlOutput::Borrowed(ValueRef::Blob(&head.hash)));
    values.push(ToSqlOutput::Borrowed(ValueRef::Blob(&hash)));
    tx.prepare_cached(insert_sql())?.execute(params_from_iter(values))?;
    Ok(Head { seq, hash })
}

fn insert_checkpoint(
    tx: &Transaction<'_>,
    chain_id: &[u8; 16],
    head: Head,
    key: &SigningKey,
    now_ns: i64,
) -> anyhow::Result<Option<SignedCheckpoint>> {
    let covered: Option<i64> =
        tx.query_row("SELECT MAX(seq) FROM checkpoints", [], |r| r.get(0))?;
    if head.seq == 0 || covered.is_some_and(|c| c as u64 >= head.seq) {
        return Ok(None);
    }
    let signed = Checkpoint {
        chain_id: *chain_id,
        seq: head.seq,
        head_hash: head.hash,
        time_unix_nanos: now_ns,
    }
    .sign(key);
    tx.prepare_cached(
        "INSERT INTO checkpoints (seq, head_hash, time_ns, key_fingerprint, signature)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(rusqlite::params![
        head.seq as i64,
        head.hash.to_vec(),
        now_ns,
        signed.key_fingerprint,
        signed.signature,
    ])?;
    Ok(Some(signed))
}

/// Whether `path` is on a file system mounted read-only.
fn on_read_only_file_system(path: &Path) -> bool {
    matches!(
        std::fs::OpenOptions::new().append(true).open(path),
        Err(e) if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem
    )
}

/// `path` for an SQLite `file:` URI: `%`, `?` and `#` percent-encoded.
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3f"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
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
         CREATE INDEX entries_refers_to ON entries(refers_to) WHERE refers_to != '';
         CREATE TABLE checkpoints (
             seq INTEGER PRIMARY KEY,
             head_hash BLOB NOT NULL,
             time_ns INTEGER NOT NULL,
             key_fingerprint TEXT NOT NULL,
             signature BLOB NOT NULL
         );
         CREATE TABLE quarantine (
             message_id TEXT PRIMARY KEY,
             content BLOB NOT NULL
         );
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

/// The entry insert, built once (it was rebuilt per entry, which cost more
/// than the insert's own binding).
fn insert_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let names = Entry::FIELDS.join(", ");
        let marks: Vec<String> = (1..=Entry::FIELDS.len() + 3).map(|i| format!("?{i}")).collect();
        format!(
            "INSERT INTO entries (seq, {names}, prev_hash, entry_hash) VALUES ({})",
            marks.join(", ")
        )
    })
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

/// Reads the head: the entry with the highest seq.
///
/// # Errors
/// The query fails.
pub fn read_head(conn: &Connection) -> anyhow::Result<Head> {
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
    fn durability_sets_the_writers_synchronous_level() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("audit.db")).unwrap();
        assert_eq!(store.synchronous().unwrap(), Durability::Full.pragma());
        store.set_durability(Durability::Normal).unwrap();
        assert_eq!(store.synchronous().unwrap(), 1);
        store.set_durability(Durability::Full).unwrap();
        assert_eq!(store.synchronous().unwrap(), 2);
    }

    #[test]
    fn uri_path_encodes_what_a_uri_would_read_as_syntax() {
        assert_eq!(uri_path(Path::new("/a b/c%d?e#f.db")), "/a b/c%25d%3fe%23f.db");
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
    fn a_batch_and_its_checkpoint_commit_together() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("audit.db")).unwrap();
        let key = SigningKey::from_bytes(&[5; 32]);
        let (appended, signed) =
            store.append_batch_signed(&[record("a"), record("b")], 1, Some(&key)).unwrap();
        let signed = signed.expect("a checkpoint of the new head");
        assert_eq!((signed.checkpoint.seq, signed.checkpoint.head_hash), (2, appended[1].hash));
        signed.verify(&key.verifying_key()).unwrap();
        // Only a retransmission: the head is covered, nothing new is signed.
        let (again, signed) = store.append_batch_signed(&[record("b")], 2, Some(&key)).unwrap();
        assert!(again[0].duplicate && signed.is_none());
        let (_, unsigned) = store.append_batch_signed(&[record("c")], 3, None).unwrap();
        assert!(unsigned.is_none());
        let stored = checkpoints(store.connection(), &store.chain_id()).unwrap();
        assert_eq!(stored.iter().map(|c| c.checkpoint.seq).collect::<Vec<_>>(), vec![2]);
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
        assert!(err.contains("schema version 7") && err.contains("reads 2"), "{err}");
    }
}
