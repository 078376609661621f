//! `warrant-audit keys envoy-config`, and reading a key directory.
//!
//! A key directory holds agents' keys as oktsec lays them out: `NAME.pub`
//! (public key) and, for agents whose keys live here, `NAME.key` (private
//! key, mode 0600); the agent's name is the file name without its
//! extension. The formats are those of [`warrant_delegation::keys`].
//! [`load_public_keys`] reads every `*.pub` of a directory; `delegate` uses
//! it to verify a parent chain, `keys envoy-config` to print the filter's
//! `keys` map.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use ed25519_dalek::VerifyingKey;
use warrant_delegation::keys::{parse_public_key, public_key_base64};

/// The largest key file read, in bytes (64 KiB, as oktsec's loader).
pub const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// The longest agent name accepted (the filter's limit).
pub const MAX_NAME_CHARS: usize = 256;

/// Agents' public keys.
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// What to do with the keys.
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// `warrant-audit keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print the filter's `keys` map from a directory of public keys.
    ///
    /// Reads every `NAME.pub` in DIR (not recursively) and prints one JSON
    /// object, `{"keys": {"NAME": "BASE64", ...}}`, names sorted, each value
    /// standard base64 of the raw 32-byte key: the `keys` member of the
    /// filter's plugin configuration. A file that is not a public key is an
    /// error (exit 2), so no key is silently left out.
    EnvoyConfig {
        /// The key directory.
        #[arg(long, value_name = "DIR", default_value = "keys")]
        dir: PathBuf,
    },
}

/// Runs `keys ...`.
///
/// # Errors
/// The directory or a `.pub` file cannot be read, or a file is not a
/// public key.
pub fn run(args: KeysArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        KeysCommand::EnvoyConfig { dir } => {
            let keys = load_public_keys(&dir)?;
            if keys.is_empty() {
                bail!("{}: no public keys (NAME.pub files) found", dir.display());
            }
            print!("{}", envoy_config(&keys));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The `{"keys": {...}}` object for `keys`, pretty-printed, with a final
/// newline. Names are sorted (the map's order).
pub fn envoy_config(keys: &BTreeMap<String, VerifyingKey>) -> String {
    let map: serde_json::Map<String, serde_json::Value> = keys
        .iter()
        .map(|(name, key)| (name.clone(), serde_json::Value::String(public_key_base64(key))))
        .collect();
    let object = serde_json::json!({ "keys": map });
    // A map of strings always serializes; the fallback is never used.
    let mut text = serde_json::to_string_pretty(&object).unwrap_or_default();
    text.push('\n');
    text
}

/// Reads every `NAME.pub` directly in `dir` (sub-directories are not
/// entered), keyed by `NAME`.
///
/// # Errors
/// The directory cannot be listed; a `.pub` file is unreadable, larger
/// than [`MAX_KEY_FILE_BYTES`], not a public key, or has a name that is not
/// a valid agent name ([`check_file_name`]).
pub fn load_public_keys(dir: &Path) -> anyhow::Result<BTreeMap<String, VerifyingKey>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list directory", dir.display()))?;
    let mut keys = BTreeMap::new();
    for entry in entries {
        let path =
            entry.with_context(|| format!("{}: cannot list directory", dir.display()))?.path();
        if path.extension().is_none_or(|ext| ext != "pub") || !path.is_file() {
            continue;
        }
        let Some(name) = path.file_stem().and_then(|stem| stem.to_str()) else {
            bail!("{}: file name is not UTF-8", path.display());
        };
        check_file_name(name).with_context(|| path.display().to_string())?;
        keys.insert(name.to_string(), load_public_key(&path)?);
    }
    Ok(keys)
}

/// Reads one public key file (oktsec PEM, or base64 of the raw 32 bytes).
///
/// # Errors
/// The file cannot be read, is larger than [`MAX_KEY_FILE_BYTES`], or is
/// not a public key.
pub fn load_public_key(path: &Path) -> anyhow::Result<VerifyingKey> {
    let text = read_small(path)?;
    parse_public_key(&text).with_context(|| format!("{}: not a public key", path.display()))
}

/// Reads a small text file (a key or a token), refusing anything over
/// [`MAX_KEY_FILE_BYTES`].
///
/// # Errors
/// The file cannot be read, is too large or is not UTF-8.
pub fn read_small(path: &Path) -> anyhow::Result<String> {
    let size =
        std::fs::metadata(path).with_context(|| format!("{}: cannot read", path.display()))?.len();
    if size > MAX_KEY_FILE_BYTES {
        bail!(
            "{}: file too large: expected at most {MAX_KEY_FILE_BYTES} bytes, found {size}",
            path.display()
        );
    }
    std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))
}

/// Checks that `name` can be both an agent name and a file name in a key
/// directory: 1 to [`MAX_NAME_CHARS`] characters, no `/`, `\`, `,` or
/// control character, and not starting with `.` (no hidden files, no `..`).
///
/// # Errors
/// Says which rule the name breaks.
pub fn check_file_name(name: &str) -> anyhow::Result<()> {
    let count = name.chars().count();
    if count == 0 || count > MAX_NAME_CHARS {
        bail!("agent name: expected 1 to {MAX_NAME_CHARS} characters, found {count}");
    }
    if let Some(bad) = name.chars().find(|c| matches!(c, '/' | '\\' | ',') || c.is_control()) {
        bail!("agent name: expected no '/', '\\', ',' or control character, found {bad:?} in {name:?}");
    }
    if name.starts_with('.') {
        bail!("agent name: expected no leading '.', found {name:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_table() {
        let long = "a".repeat(MAX_NAME_CHARS + 1);
        let cases: [(&str, &str, Option<&str>); 9] = [
            ("plain", "agent-a", None),
            ("underscore and dots", "_proxy.v2", None),
            ("non-ascii letters", "agént", None),
            ("empty", "", Some("expected 1 to 256 characters, found 0")),
            ("too long", &long, Some("found 257")),
            ("slash", "a/b", Some("found '/'")),
            ("comma", "a,b", Some("found ','")),
            ("newline", "a\nb", Some("found '\\n'")),
            ("leading dot", "..", Some("no leading '.'")),
        ];
        for (case, name, want) in cases {
            let got = check_file_name(name).map_err(|e| e.to_string());
            match want {
                None => assert!(got.is_ok(), "{case}: {got:?}"),
                Some(want) => {
                    let err = got.unwrap_err();
                    assert!(err.contains(want), "{case}: {err}");
                }
            }
        }
    }
}
