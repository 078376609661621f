//! The real audit sidecar, `warrant-audit serve`, on a free port.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::process::Guard;

/// A running sidecar.
pub struct Sidecar {
    pub process: Guard,
    /// The gRPC port (0 when it listens on a Unix socket).
    pub port: u16,
    /// The gRPC address as printed (`127.0.0.1:PORT` or `unix:PATH`).
    pub grpc: String,
    /// The audit page's port.
    pub http_port: u16,
    pub db: PathBuf,
    pub log: PathBuf,
    /// The serve flags it was started with, besides `--listen` (kept by
    /// [`Sidecar::restart`]).
    pub flags: Vec<String>,
}

impl Sidecar {
    /// Starts `warrant-audit serve` on `db`, with its log in `dir`, and
    /// waits until it listens.
    pub fn start(db: &Path, dir: &Path) -> Sidecar {
        Sidecar::start_on(db, dir, "127.0.0.1:0")
    }

    /// Like [`Sidecar::start`], on a given listen address (to come back on
    /// the same port after a restart).
    pub fn start_on(db: &Path, dir: &Path, listen: &str) -> Sidecar {
        Sidecar::start_with(db, dir, &["--listen", listen])
    }

    /// Like [`Sidecar::start_on`], with more serve flags (`flags`), which a
    /// restart keeps.
    pub fn start_flagged(db: &Path, dir: &Path, listen: &str, flags: &[String]) -> Sidecar {
        let mut args = vec!["--listen", listen];
        args.extend(flags.iter().map(String::as_str));
        let mut sidecar = Sidecar::start_with(db, dir, &args);
        sidecar.flags = flags.to_vec();
        sidecar
    }

    /// `warrant-audit [ARGS] serve --db DB` with `args` (global flags such
    /// as `--debug` and serve flags alike: clap takes both after `serve`),
    /// waiting until it printed both addresses.
    pub fn start_with(db: &Path, dir: &Path, args: &[&str]) -> Sidecar {
        let log = dir.join("sidecar.log");
        let stderr =
            std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("sidecar log");
        let mut child = Command::new(crate::audit_bin())
            .args(["serve", "--db"])
            .arg(db)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn warrant-audit");
        let stdout = child.stdout.take().expect("piped stdout");
        let process = Guard::new("warrant-audit", child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut grpc = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("warrant-audit: listening grpc=") {
                    grpc = Some(addr.to_string());
                } else if let Some(addr) = line.strip_prefix("warrant-audit: listening http=") {
                    let http = addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
                    let _ = tx.send(grpc.take().zip(http));
                }
            }
        });
        let (grpc, http_port) = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(addresses)) => addresses,
            _ => panic!(
                "warrant-audit did not report its addresses; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        };
        let port = if grpc.starts_with("unix:") {
            0
        } else {
            grpc.rsplit(':').next().and_then(|p| p.parse().ok()).expect("grpc port")
        };
        Sidecar { process, port, grpc, http_port, db: db.to_path_buf(), log, flags: Vec::new() }
    }

    /// The audit page's base URL.
    pub fn page_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Starts it again on the same port, database and key directory (the
    /// previous process must be gone: see [`Sidecar::kill`]).
    pub fn restart(&mut self) {
        let dir = self.log.parent().expect("log has a directory").to_path_buf();
        let listen = format!("127.0.0.1:{}", self.port);
        *self = Sidecar::start_flagged(&self.db, &dir, &listen, &self.flags);
    }

    /// Kills it (SIGKILL), as a crash would, and reaps it.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Stops it gracefully (SIGTERM: it commits what is queued and closes).
    pub fn stop(&mut self) {
        let status = self.process.stop(Duration::from_secs(10));
        assert!(status.is_some_and(|s| s.success()), "sidecar exited with {status:?}");
    }
}

/// Runs `warrant-audit verify --db DB [extra...]`.
pub fn verify(db: &Path, extra: &[&str]) -> Output {
    Command::new(crate::audit_bin())
        .args(["verify", "--db"])
        .arg(db)
        .args(extra)
        .output()
        .expect("run verify")
}
