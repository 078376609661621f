//! The sidecar's checkpoint signing key on disk: one name, used by every
//! command.
//!
//! The key pair lives in a key directory as
//! - `warrant-audit.key`: the private key, oktsec PEM block
//!   `OKTSEC ED25519 PRIVATE KEY` (seed then public key, 64 bytes), mode 0600;
//! - `warrant-audit.pub`: the public key, PEM block
//!   `OKTSEC ED25519 PUBLIC KEY`, mode 0644.
//!
//! The key directory defaults to the directory of the database
//! ([`default_key_dir`]), so `serve --db /var/lib/warrant/audit.db` signs
//! with `/var/lib/warrant/warrant-audit.key` and `verify --db
//! /var/lib/warrant/audit.db` checks with `/var/lib/warrant/warrant-audit.pub`
//! unless `--key` names another file. `serve` creates the pair on first start
//! ([`load_or_create`]).
//!
//! A public key found next to the database proves only that whoever could
//! write the database directory also signed it. For evidence that holds
//! against that person, keep a copy of `warrant-audit.pub` (or its
//! fingerprint, which `verify` prints) elsewhere and pass it with `--key`.
//! The formats are those of [`warrant_delegation::keys`].

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use ed25519_dalek::{SigningKey, VerifyingKey};
use warrant_delegation::keys::{
    parse_private_key, parse_public_key, private_key_pem, public_key_pem,
};

/// The file name stem of the key pair.
pub const KEY_NAME: &str = "warrant-audit";

/// The key directory used when none is given: the database's directory
/// (`.` for a bare file name).
pub fn default_key_dir(db: &Path) -> PathBuf {
    match db.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `<dir>/warrant-audit.key`.
pub fn private_key_path(dir: &Path) -> PathBuf {
    dir.join(format!("{KEY_NAME}.key"))
}

/// `<dir>/warrant-audit.pub`.
pub fn public_key_path(dir: &Path) -> PathBuf {
    dir.join(format!("{KEY_NAME}.pub"))
}

/// Loads the signing key from `dir`, creating the pair when the private key
/// is absent. Writes a missing public key file from the private key. Returns
/// whether the pair was created.
///
/// # Errors
/// A file cannot be read, written or parsed, or the public key file does
/// not belong to the private key.
pub fn load_or_create(dir: &Path) -> anyhow::Result<(SigningKey, bool)> {
    let private = private_key_path(dir);
    let public = public_key_path(dir);
    let (key, created) = if private.exists() {
        let text = std::fs::read_to_string(&private)
            .with_context(|| format!("{}: cannot read", private.display()))?;
        let key =
            parse_private_key(&text).with_context(|| format!("{}: bad key", private.display()))?;
        (key, false)
    } else {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness for a key: {e}"))?;
        let key = SigningKey::from_bytes(&seed);
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create directory", dir.display()))?;
        write_new(&private, private_key_pem(&key).as_bytes(), 0o600)?;
        (key, true)
    };
    if public.exists() {
        let found = load_public(&public)?;
        if found != key.verifying_key() {
            bail!(
                "{}: public key does not belong to {}\n\nhint: move the stale public key away; \
                 it is rewritten from the private key",
                public.display(),
                private.display()
            );
        }
    } else {
        write_new(&public, public_key_pem(&key.verifying_key()).as_bytes(), 0o644)?;
    }
    Ok((key, created))
}

/// Loads the signing key from `dir` if it exists.
///
/// # Errors
/// The file exists but cannot be read or parsed.
pub fn load_existing(dir: &Path) -> anyhow::Result<Option<SigningKey>> {
    let private = private_key_path(dir);
    if !private.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&private)
        .with_context(|| format!("{}: cannot read", private.display()))?;
    let key =
        parse_private_key(&text).with_context(|| format!("{}: bad key", private.display()))?;
    Ok(Some(key))
}

/// Reads a public key file (oktsec PEM, or base64 of the raw 32 bytes).
///
/// # Errors
/// The file cannot be read or is not a public key.
pub fn load_public(path: &Path) -> anyhow::Result<VerifyingKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    parse_public_key(&text).with_context(|| format!("{}: not a public key", path.display()))
}

/// Creates `path` with `mode` (never overwriting: an existing file is an
/// error saying so), writes `bytes` and syncs them. Shared by the sidecar's
/// signing key and `keygen`.
pub(crate) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).with_context(|| {
        if path.exists() {
            format!("{}: already exists", path.display())
        } else {
            format!("{}: cannot create", path.display())
        }
    })?;
    file.write_all(bytes).with_context(|| format!("{}: cannot write", path.display()))?;
    file.sync_all().with_context(|| format!("{}: cannot sync", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_call_creates_a_private_pair_and_later_calls_load_it() {
        let dir = tempfile::tempdir().unwrap();
        let (key, created) = load_or_create(dir.path()).unwrap();
        assert!(created);
        let (again, created) = load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(key.to_bytes(), again.to_bytes());
        assert_eq!(load_public(&public_key_path(dir.path())).unwrap(), key.verifying_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(private_key_path(dir.path())), 0o600);
            assert_eq!(mode(public_key_path(dir.path())), 0o644);
        }
    }

    #[test]
    fn a_public_key_of_another_pair_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path()).unwrap();
        let other = SigningKey::from_bytes(&[4; 32]).verifying_key();
        std::fs::write(public_key_path(dir.path()), public_key_pem(&other)).unwrap();
        let err = format!("{:#}", load_or_create(dir.path()).unwrap_err());
        assert!(err.contains("public key does not belong to"), "{err}");
    }

    #[test]
    fn default_key_dir_is_the_database_directory() {
        assert_eq!(default_key_dir(Path::new("/var/lib/w/audit.db")), Path::new("/var/lib/w"));
        assert_eq!(default_key_dir(Path::new("audit.db")), Path::new("."));
    }
}
