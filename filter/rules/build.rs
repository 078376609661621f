//! Embeds the rule library: lists `rules/*.yaml` and `rules/*.yml` (top level
//! of the repository's `rules/` directory, sorted by name) and writes
//! `$OUT_DIR/builtin_rules.rs`, a table of `(file name, include_str!(..))`.
//! An empty or missing directory gives an empty table.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let dir = manifest.join("..").join("..").join("rules");
    // A directory path makes Cargo rerun when any file in it is added,
    // removed or changed.
    println!("cargo:rerun-if-changed={}", dir.display());

    let mut files: Vec<PathBuf> = match fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.is_file() && is_yaml(path))
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();

    let mut out = String::from("pub(crate) static BUILTIN_FILES: &[(&str, &str)] = &[\n");
    for path in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let absolute = fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        let _ =
            writeln!(out, "    ({name:?}, include_str!({:?})),", absolute.display().to_string());
    }
    out.push_str("];\n");

    let target = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default()).join("builtin_rules.rs");
    if let Err(error) = fs::write(&target, out) {
        println!("cargo:warning=cannot write {}: {error}", target.display());
        std::process::exit(1);
    }
}

fn is_yaml(path: &std::path::Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}
