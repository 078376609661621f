//! `warrant-audit`: the audit sidecar and its command-line tools.
//!
//! Exit status: 0 success (for `verify`: the chain is intact); 1 `verify`
//! found the chain broken; 2 the command could not run (bad arguments,
//! missing or unreadable files). Results go to stdout, diagnostics to
//! stderr.

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
    /// Receive records from the filter over gRPC and append them to the
    /// chain, sign checkpoints, and serve the audit page.
    Serve(warrant_audit::commands::ServeArgs),
    /// Prove the chain intact (exit 0), or find the first problem (exit 1).
    Verify(warrant_audit::commands::VerifyArgs),
    /// Signed checkpoints of the chain head.
    #[command(subcommand)]
    Checkpoint(warrant_audit::commands::CheckpointCommand),
    /// Review quarantined requests; decisions are appended to the chain.
    #[command(subcommand)]
    Quarantine(warrant_audit::commands::QuarantineCommand),
    /// Serve the audit page alone, read-only, for a database copy.
    Page(warrant_audit::commands::PageArgs),
    // The agent-facing tools; their help is on their argument types.
    Keygen(warrant_audit::cli::keygen::KeygenArgs),
    Delegate(warrant_audit::cli::delegate::DelegateArgs),
    Keys(warrant_audit::cli::keys::KeysArgs),
    Sessions(warrant_audit::cli::sessions::SessionsArgs),
    Rules(warrant_audit::cli::rules::RulesArgs),
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
        // Colours only on a terminal, not in log files and collectors.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
        Command::Serve(args) => args.run(),
        Command::Verify(args) => args.run(),
        Command::Checkpoint(command) => command.run(),
        Command::Quarantine(command) => command.run(),
        Command::Page(args) => args.run(),
        Command::Keygen(args) => warrant_audit::cli::keygen::run(args),
        Command::Delegate(args) => warrant_audit::cli::delegate::run(args),
        Command::Keys(args) => warrant_audit::cli::keys::run(args),
        Command::Sessions(args) => warrant_audit::cli::sessions::run(args),
        Command::Rules(args) => warrant_audit::cli::rules::run(args),
    }
}
