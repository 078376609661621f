//! `warrant-audit`: the audit sidecar and its command-line tools.
//!
//! Exit status: 0 success (for `verify`: the chain is intact); 1 `verify`
//! found the chain broken; 2 the command could not run (bad arguments,
//! missing or unreadable files). Results go to stdout, diagnostics to
//! stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "warrant-audit", version, about = "Warrant's audit sidecar and tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log decisions (debug level) to stderr.
    #[arg(long, global = true)]
    debug: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Receive records from the filter over gRPC and append them to the chain.
    Serve {
        /// The chain database (created, mode 0600, if absent).
        #[arg(long, default_value = "warrant-audit.db")]
        db: PathBuf,
        /// gRPC listen address. Port 0 picks a free port, printed on stdout.
        #[arg(long, default_value = "127.0.0.1:50051")]
        listen: std::net::SocketAddr,
    },
    /// Prove the chain intact (exit 0), or find the first broken entry (exit 1).
    Verify {
        /// The chain database (opened read-only).
        #[arg(long, default_value = "warrant-audit.db")]
        db: PathBuf,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    let level = if cli.debug { "debug" } else { "info" };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .init();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { db, listen } => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(warrant_audit::server::serve(
                warrant_audit::server::ServeOptions { db, listen },
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { db, json } => {
            let report = warrant_audit::verify::verify(&db)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", warrant_audit::verify::render_text(&report));
            }
            Ok(if report.valid { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
    }
}
