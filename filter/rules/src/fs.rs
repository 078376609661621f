//! Loading rule files from disk, for `warrant-audit rules` (feature `fs`).
//! The filter never uses this: its rules are embedded or come inline in the
//! plugin configuration.

use std::fs;
use std::path::{Path, PathBuf};

use crate::engine::check_unique_ids;
use crate::error::RuleError;
use crate::rule::{parse_rules, Rule};

/// The largest rule file accepted, in bytes (1 MiB, Aguara's limit; Aguara
/// skips larger files, we refuse them).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Loads every `.yaml` and `.yml` file under `dir` (recursively, in sorted
/// path order). Rules are named by the path as `dir` was given plus the
/// file's path below it.
///
/// # Errors
/// An unreadable directory or file, a file over [`MAX_FILE_BYTES`], any
/// parse error, or an id used twice.
pub fn load_dir(dir: impl AsRef<Path>) -> Result<Vec<Rule>, RuleError> {
    let mut files = Vec::new();
    collect(dir.as_ref(), &mut files)?;
    files.sort();
    let mut rules = Vec::new();
    for file in files {
        rules.extend(load_file(&file)?);
    }
    check_unique_ids(&rules)?;
    Ok(rules)
}

/// Loads one rule file.
///
/// # Errors
/// As for [`load_dir`].
pub fn load_file(path: impl AsRef<Path>) -> Result<Vec<Rule>, RuleError> {
    let path = path.as_ref();
    let name = path.display().to_string();
    let io = |e: std::io::Error| RuleError::Io { path: name.clone(), message: e.to_string() };
    let size = fs::metadata(path).map_err(io)?.len();
    if size > MAX_FILE_BYTES {
        return Err(RuleError::FileTooLarge { file: name, size, limit: MAX_FILE_BYTES });
    }
    let text = fs::read_to_string(path).map_err(io)?;
    parse_rules(&name, &text)
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), RuleError> {
    let io = |e: std::io::Error| RuleError::Io {
        path: dir.display().to_string(),
        message: e.to_string(),
    };
    for entry in fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            collect(&path, files)?;
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            files.push(path);
        }
    }
    Ok(())
}
