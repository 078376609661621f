//! The chain commands of the `warrant-audit` binary: `serve`, `verify`,
//! `checkpoint export`, `quarantine ...` and `page`. Each is a clap argument
//! type with a `run` method returning the exit status; `main.rs` only
//! dispatches.
//!
//! Exit status, for every command here: 0 success (for `verify`: nothing
//! wrong found); 1 `verify` found a problem (in text and `--json` mode
//! alike); 2 the command could not run (bad arguments, a missing or
//! unreadable database, a malformed key or checkpoint file).
//!
//! Defaults shared by every command: the database is `warrant-audit.db`; the
//! key directory is the database's directory, holding `warrant-audit.key`
//! and `warrant-audit.pub` ([`crate::keyfile`]).

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use ed25519_dalek::VerifyingKey;

use crate::checkpoint::CheckpointFile;
use crate::keyfile;
use crate::quarantine::{self, Verdict};
use crate::server::{CheckpointPolicy, ListenAddr, ServeOptions};
use crate::store::{latest_checkpoint, read_chain_id, Durability, Store};
use crate::verify::{self, Options};

/// `warrant-audit serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The chain database (created, mode 0600, if absent).
    #[arg(long, default_value = "warrant-audit.db")]
    pub db: PathBuf,
    /// gRPC listen address: IP:PORT (loopback by default; port 0 picks a
    /// free port) or unix:PATH for a Unix socket (mode 0660). Printed on
    /// stdout as `warrant-audit: listening grpc=ADDR`.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen: ListenAddr,
    /// Largest record accepted over gRPC, in bytes; a larger one is
    /// refused (OUT_OF_RANGE), in a batch with the whole batch.
    #[arg(long, default_value_t = crate::server::MAX_RECORD_BYTES as u32,
          value_parser = clap::value_parser!(u32).range(1024..))]
    pub max_record_bytes: u32,
    /// Audit page listen address (loopback by default), printed on stdout as
    /// `warrant-audit: listening http=ADDR`.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub http_listen: SocketAddr,
    /// Directory of the signing key pair `warrant-audit.key`/`.pub`, created
    /// on first start. Default: the database's directory.
    #[arg(long)]
    pub key_dir: Option<PathBuf>,
    /// Sign a checkpoint once this many entries are not covered.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_every: u64,
    /// Sign a checkpoint once the oldest uncovered entry is this many
    /// milliseconds old.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_interval_ms: u64,
    /// How far a commit is synced before its records are acknowledged:
    /// `full` fsyncs the WAL at every commit (an acknowledged record survives
    /// a power loss); `normal` leaves the sync to the operating system until
    /// the next WAL checkpoint (it survives a crash of the sidecar, not
    /// necessarily of the machine) and saves the commit's fsync wait.
    #[arg(long, value_enum, default_value_t = Durability::Full)]
    pub synchronous: Durability,
}

/// `warrant-audit verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// The chain database (opened read-only, never changed).
    #[arg(long, default_value = "warrant-audit.db")]
    pub db: PathBuf,
    /// Public key for checkpoint signatures (oktsec PEM or base64). Default:
    /// `warrant-audit.pub` in the database's directory, if present;
    /// otherwise signatures are skipped.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Check only the newest N entries, anchored at the newest signed
    /// checkpoint before them. Default: every entry.
    #[arg(long)]
    pub limit: Option<u64>,
    /// An exported checkpoint (`checkpoint export`) the database must still
    /// contain: finds a truncated tail or a rolled-back database.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `warrant-audit checkpoint ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum CheckpointCommand {
    /// Write the latest signed checkpoint as JSON, to keep the head elsewhere.
    Export {
        /// The chain database (opened read-only).
        #[arg(long, default_value = "warrant-audit.db")]
        db: PathBuf,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// `warrant-audit quarantine ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum QuarantineCommand {
    /// List quarantined requests, newest first, with their review state.
    List {
        /// The chain database (opened read-only).
        #[arg(long, default_value = "warrant-audit.db")]
        db: PathBuf,
        /// JSON Lines: `{"type":"quarantine","data":{...}}` per request.
        #[arg(long)]
        json: bool,
    },
    /// Show one quarantined request and its content.
    Show {
        /// The message id.
        id: String,
        /// The chain database (opened read-only).
        #[arg(long, default_value = "warrant-audit.db")]
        db: PathBuf,
    },
    /// Approve a pending request (appends a `quarantine_approved` entry).
    Approve(DecideArgs),
    /// Reject a pending request (appends a `quarantine_rejected` entry).
    Reject(DecideArgs),
}

/// Arguments of `quarantine approve|reject`.
#[derive(Debug, Clone, Args)]
pub struct DecideArgs {
    /// The message id of the quarantined request.
    pub id: String,
    /// The chain database.
    #[arg(long, default_value = "warrant-audit.db")]
    pub db: PathBuf,
    /// Who decides. Default: `$USER`.
    #[arg(long)]
    pub reviewer: Option<String>,
    /// Directory of the signing key; when `warrant-audit.key` is there, a
    /// checkpoint covering the decision is signed with it. Default: the
    /// database's directory.
    #[arg(long)]
    pub key_dir: Option<PathBuf>,
}

/// `warrant-audit page`: the audit page alone, read-only, for a database
/// that no sidecar serves (a copy kept as evidence).
#[derive(Debug, Clone, Args)]
pub struct PageArgs {
    /// The chain database (opened read-only).
    #[arg(long, default_value = "warrant-audit.db")]
    pub db: PathBuf,
    /// Public key for checkpoint signatures; default as for `verify`.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Listen address, printed on stdout as `warrant-audit: listening http=ADDR`.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub http_listen: SocketAddr,
}

impl ServeArgs {
    /// Runs the sidecar until SIGTERM or SIGINT.
    ///
    /// # Errors
    /// See [`crate::server::serve`].
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let key_dir = self.key_dir.unwrap_or_else(|| keyfile::default_key_dir(&self.db));
        let options = ServeOptions {
            db: self.db,
            listen: self.listen,
            max_record_bytes: self.max_record_bytes as usize,
            http_listen: self.http_listen,
            key_dir,
            checkpoints: CheckpointPolicy {
                every: self.checkpoint_every,
                interval: Duration::from_millis(self.checkpoint_interval_ms),
            },
            durability: self.synchronous,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        runtime.block_on(crate::server::serve(options))?;
        Ok(ExitCode::SUCCESS)
    }
}

impl VerifyArgs {
    /// Verifies and prints the report.
    ///
    /// # Errors
    /// The check cannot run (exit status 2).
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let key = resolve_key(self.key.as_deref(), &self.db)?;
        let external = match &self.checkpoint {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("{}: cannot read", path.display()))?;
                Some(
                    CheckpointFile::parse(&text)
                        .with_context(|| format!("{}: bad checkpoint file", path.display()))?,
                )
            }
            None => None,
        };
        let options = Options { key, limit: self.limit, external, ..Options::default() };
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "verifying {bar:40} {pos}/{len} entries ({per_sec}, eta {eta})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        let report = verify::verify_with_progress(&self.db, &options, &mut |done, total| {
            if let Some(bar) = &bar {
                bar.set_length(total);
                bar.set_position(done);
            }
        })?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        if self.json {
            print_out(&format!("{}\n", serde_json::to_string(&report)?))?;
        } else {
            print_out(&verify::render_text(&report))?;
        }
        Ok(if report.valid { ExitCode::SUCCESS } else { ExitCode::from(1) })
    }
}

impl CheckpointCommand {
    /// Runs the subcommand.
    ///
    /// # Errors
    /// The database cannot be read, holds no checkpoint, or the file cannot
    /// be written.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            CheckpointCommand::Export { db, out } => {
                let conn = Store::open_read_only(&db)?;
                let chain_id = read_chain_id(&conn)?;
                let latest = latest_checkpoint(&conn, &chain_id)?.ok_or_else(|| {
                    anyhow::anyhow!("{}: no checkpoint yet (the chain is empty)", db.display())
                })?;
                let text = format!("{}\n", serde_json::to_string_pretty(&latest.to_file())?);
                match out {
                    Some(path) => std::fs::write(&path, text)
                        .with_context(|| format!("{}: cannot write", path.display()))?,
                    None => print_out(&text)?,
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

impl QuarantineCommand {
    /// Runs the subcommand.
    ///
    /// # Errors
    /// The database cannot be read or written, or the decision is refused
    /// ([`quarantine::QuarantineError`]).
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            QuarantineCommand::List { db, json } => {
                let conn = Store::open_read_only(&db)?;
                let items = quarantine::list(&conn)?;
                let mut out = String::new();
                for item in &items {
                    if json {
                        let line = serde_json::json!({ "type": "quarantine", "data": item });
                        out.push_str(&format!("{line}\n"));
                    } else {
                        out.push_str(&format!(
                            "{:>8}  {}  {} -> {}  {}\n",
                            item.seq,
                            item.message_id,
                            item.from,
                            item.to,
                            state_text(&item.state)
                        ));
                    }
                }
                if !json && items.is_empty() {
                    out.push_str("no quarantined requests\n");
                }
                print_out(&out)?;
            }
            QuarantineCommand::Show { id, db } => {
                let conn = Store::open_read_only(&db)?;
                let (item, content) = quarantine::show(&conn, &id)?;
                let mut out = format!(
                    "Message: {}\nSeq: {}\nFrom: {}\nTo: {}\nReceived: {}\nState: {}\n\
                     Findings: {}\nContent SHA-256: {}\n\n",
                    item.message_id,
                    item.seq,
                    item.from,
                    item.to,
                    crate::sessions_cmd::rfc3339(item.received_at_ns),
                    state_text(&item.state),
                    item.findings,
                    if item.content_sha256.is_empty() {
                        "(none kept)"
                    } else {
                        &item.content_sha256
                    },
                );
                out.push_str(&String::from_utf8_lossy(&content));
                if !content.is_empty() {
                    out.push('\n');
                }
                print_out(&out)?;
            }
            QuarantineCommand::Approve(args) => args.decide(Verdict::Approve)?,
            QuarantineCommand::Reject(args) => args.decide(Verdict::Reject)?,
        }
        Ok(ExitCode::SUCCESS)
    }
}

impl DecideArgs {
    fn decide(self, verdict: Verdict) -> anyhow::Result<()> {
        let reviewer = self
            .reviewer
            .or_else(|| std::env::var("USER").ok())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "unknown".into());
        let key_dir = self.key_dir.unwrap_or_else(|| keyfile::default_key_dir(&self.db));
        let key = keyfile::load_existing(&key_dir)?;
        if !self.db.exists() {
            anyhow::bail!("{}: audit database not found", self.db.display());
        }
        let mut store = Store::open(&self.db)?;
        let appended = quarantine::decide(
            &mut store,
            &self.id,
            verdict,
            &reviewer,
            key.as_ref(),
            crate::server::now_ns(),
        )?;
        print_out(&format!(
            "{} {} by {reviewer} at seq {}{}\n",
            self.id,
            verdict.decision(),
            appended.seq,
            if key.is_some() { " (signed checkpoint)" } else { "" }
        ))
    }
}

impl PageArgs {
    /// Serves the page until SIGTERM or SIGINT.
    ///
    /// # Errors
    /// The key cannot be read or the address cannot be bound.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let key = resolve_key(self.key.as_deref(), &self.db)?;
        Store::open_read_only(&self.db)?;
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind(self.http_listen)
                .await
                .map_err(|e| anyhow::anyhow!("{}: cannot listen: {e}", self.http_listen))?;
            println!("warrant-audit: listening http={}", listener.local_addr()?);
            let _ = std::io::stdout().flush();
            let state = crate::page::PageState { db: self.db, key, metrics: Default::default() };
            crate::page::serve(listener, state, crate::server::shutdown_signal()).await
        })?;
        Ok(ExitCode::SUCCESS)
    }
}

/// The key to verify with: `--key` (which must load), else the default
/// public key file if it exists, else none.
fn resolve_key(explicit: Option<&Path>, db: &Path) -> anyhow::Result<Option<VerifyingKey>> {
    if let Some(path) = explicit {
        return keyfile::load_public(path).map(Some);
    }
    let default = keyfile::public_key_path(&keyfile::default_key_dir(db));
    if default.exists() {
        return keyfile::load_public(&default).map(Some);
    }
    Ok(None)
}

fn state_text(state: &quarantine::State) -> String {
    match state {
        quarantine::State::Pending => "pending".into(),
        quarantine::State::Approved { reviewer, seq } => {
            format!("approved by {reviewer} at seq {seq}")
        }
        quarantine::State::Rejected { reviewer, seq } => {
            format!("rejected by {reviewer} at seq {seq}")
        }
    }
}

/// Writes results to stdout; a closed pipe (`| head`) is not an error.
fn print_out(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
