//! `warrant-audit sessions`: the sessions in the audit chain, newest first.
//!
//! Reads every entry's time, sender, session id, status and decision from
//! the database (opened read-only; the database is never changed) and hands
//! them to [`crate::sessions_cmd`], which summarizes and renders them. The
//! clock is read here, once, to turn `--since` into a cutoff.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::Args;

use crate::sessions_cmd::{
    cutoff_unix_nanos, parse_duration, render_json_lines, render_text, summarize, RecordRow,
};
use crate::store::Store;

/// Summarize sessions from the audit chain, newest first.
///
/// One line per session id: first and last record, records, blocks,
/// quarantines, content flags, a risk score (10 per block, 5 per
/// quarantine, 1 per flag) and the distinct senders. Records without a
/// session id are left out.
#[derive(Debug, Args)]
pub struct SessionsArgs {
    /// The chain database (opened read-only, never changed).
    #[arg(long, value_name = "PATH", default_value = "warrant-audit.db")]
    pub db: PathBuf,
    /// Only sessions with a record in this window before now, such as 30m,
    /// 24h or 7d.
    ///
    /// A positive whole number and one unit: s, m, h, d or w. A session
    /// that started before the window is still summarized over all its
    /// records.
    #[arg(long, value_name = "DURATION", value_parser = parse_since)]
    pub since: Option<Duration>,
    /// Print JSON Lines: one {"type":"session","data":{...}} per session,
    /// then one {"type":"summary","data":{"sessions":N,"records":M}}.
    #[arg(long)]
    pub json: bool,
}

/// Runs `sessions`.
///
/// # Errors
/// The database is missing, unreadable or of another schema.
pub fn run(args: SessionsArgs) -> anyhow::Result<ExitCode> {
    let cutoff = match args.since {
        None => None,
        Some(window) => Some(cutoff_unix_nanos(now_unix_nanos()?, window)),
    };
    let rows = read_rows(&args.db)?;
    let summaries = summarize(&rows, cutoff);
    if args.json {
        print!("{}", render_json_lines(&summaries));
    } else {
        print!("{}", render_text(&summaries));
    }
    Ok(ExitCode::SUCCESS)
}

/// Every entry with a session id, as [`RecordRow`]s.
fn read_rows(db: &std::path::Path) -> anyhow::Result<Vec<RecordRow>> {
    let conn = Store::open_read_only(db)?;
    let context = || format!("{}: cannot read entries", db.display());
    let mut statement = conn
        .prepare(
            "SELECT received_at_ns, from_agent, session_id, status, decision \
             FROM entries WHERE session_id != '' ORDER BY seq",
        )
        .with_context(context)?;
    let rows = statement
        .query_map([], |row| {
            Ok(RecordRow {
                received_at_unix_nanos: row.get(0)?,
                from_agent: row.get(1)?,
                session_id: row.get(2)?,
                status: row.get(3)?,
                decision: row.get(4)?,
            })
        })
        .with_context(context)?
        .collect::<Result<Vec<_>, _>>()
        .with_context(context)?;
    Ok(rows)
}

fn parse_since(text: &str) -> Result<Duration, String> {
    // The error already names the flag; clap adds its own prefix.
    parse_duration(text).map_err(|e| {
        let message = e.to_string();
        message.strip_prefix("--since: ").unwrap_or(&message).to_string()
    })
}

fn now_unix_nanos() -> anyhow::Result<i64> {
    let since_epoch =
        SystemTime::now().duration_since(UNIX_EPOCH).context("the clock is before 1970")?;
    i64::try_from(since_epoch.as_nanos()).context("the clock is past 2262")
}
