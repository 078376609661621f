//! `warrant-audit keygen`: an agent's Ed25519 key pair in oktsec's formats.
//!
//! Writes `DIR/NAME.key` (PEM block `OKTSEC ED25519 PRIVATE KEY`, the
//! 32-byte seed followed by the 32-byte public key; created with mode 0600,
//! so it is never readable by others, not even for a moment) and
//! `DIR/NAME.pub` (PEM block `OKTSEC ED25519 PUBLIC KEY`, the raw 32 bytes;
//! mode 0644), then prints both paths and the key's fingerprint (lowercase
//! hex SHA-256 of the raw public key). See [`warrant_delegation::keys`].
//!
//! An existing `NAME.key` or `NAME.pub` is never overwritten without
//! `--force`: the private key would be lost, and a key directory also holds
//! other agents' public keys. With `--force` each file is written to a
//! temporary file and renamed over the old one, so a crash leaves either
//! the old or the new file, never a truncated one.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::Args;
use ed25519_dalek::SigningKey;
use warrant_delegation::keys::{fingerprint, private_key_pem, public_key_pem};

use crate::cli::keys::check_file_name;
use crate::keyfile::write_new;

/// Create an agent's key pair: NAME.key (mode 0600) and NAME.pub.
///
/// The files use oktsec's PEM formats, so oktsec and Warrant read the same
/// key directory. Give the agents the private key; give the filter the
/// public one (`warrant-audit keys envoy-config` prints the `keys` map).
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// The agent's name; also the files' name.
    ///
    /// 1 to 256 characters without '/', '\', ',' or control characters, not
    /// starting with '.'.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// The key directory (created if absent).
    #[arg(long, value_name = "DIR", default_value = "keys")]
    pub dir: PathBuf,
    /// Replace an existing key pair of that name.
    ///
    /// The old private key is lost, and tokens it signed stop verifying
    /// once the filter has the new public key.
    #[arg(long)]
    pub force: bool,
}

/// Runs `keygen`.
///
/// # Errors
/// A bad name, a key file that exists (without `--force`), no randomness,
/// or a file that cannot be written.
pub fn run(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    // 1. The name, and the files it gives.
    check_file_name(&args.name).context("--name")?;
    let private = args.dir.join(format!("{}.key", args.name));
    let public = args.dir.join(format!("{}.pub", args.name));
    if !args.force {
        for path in [&private, &public] {
            if path.exists() {
                bail!(
                    "{}: already exists\n\nhint: pass --force to replace the key pair \
                     (the old private key is lost)",
                    path.display()
                );
            }
        }
    }

    // 2. A fresh key.
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness for a key: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);

    // 3. The files: the private key first, so a public key never exists
    //    without its private half.
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("{}: cannot create directory", args.dir.display()))?;
    let private_pem = private_key_pem(&key);
    let public_pem = public_key_pem(&key.verifying_key());
    if args.force {
        replace(&private, private_pem.as_bytes(), 0o600)?;
        replace(&public, public_pem.as_bytes(), 0o644)?;
    } else {
        write_new(&private, private_pem.as_bytes(), 0o600)?;
        if let Err(e) = write_new(&public, public_pem.as_bytes(), 0o644) {
            // Leave nothing half made: this run created the private key.
            let _ = std::fs::remove_file(&private);
            return Err(e);
        }
    }

    println!("private key: {} (mode 0600)", private.display());
    println!("public key:  {}", public.display());
    println!("fingerprint: {}", fingerprint(&key.verifying_key()));
    Ok(ExitCode::SUCCESS)
}

/// Writes `bytes` to a new temporary file beside `path` with `mode`, then
/// renames it over `path`.
fn replace(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let file_name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let temporary = path.with_file_name(format!(".{file_name}.{}.tmp", hex::encode(suffix)));
    write_new(&temporary, bytes, mode)?;
    std::fs::rename(&temporary, path).map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        anyhow::Error::new(e).context(format!("{}: cannot replace", path.display()))
    })
}
