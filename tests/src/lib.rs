//! The end-to-end harness: starts the real parts on loopback and drives
//! them, for the tests in `tests/tests/` and for `warrant-demo`.
//!
//! - [`process`]: child processes that are stopped when dropped;
//! - [`upstream`]: a real HTTP upstream that records what reaches it;
//! - [`sidecar`]: the `warrant-audit serve` binary;
//! - [`envoy`]: the real Envoy (from the project venv) with the real
//!   `warrant_filter.wasm`, configured from `envoy/envoy.yaml`;
//! - [`stack`]: all three wired together on free ports;
//! - [`agents`]: keys and signed envelopes for test agents;
//! - [`wait`]: waiting on a condition (never a fixed sleep);
//! - [`bench`]: the pieces of the performance harness (`warrant-bench`).
//!
//! Ports: every process binds port 0 and reports the port it got (the
//! sidecar on stdout, Envoy through its admin API), so runs never collide.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(missing_docs, unreachable_pub, missing_debug_implementations)]

pub mod agents;
pub mod bench;
pub mod envoy;
pub mod mesh;
pub mod process;
pub mod sidecar;
pub mod stack;
pub mod upstream;
pub mod wait;

use std::path::PathBuf;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The path of a built artifact, with a hint when it is missing.
fn artifact(env: &str, default: PathBuf) -> PathBuf {
    let path = std::env::var_os(env).map(PathBuf::from).unwrap_or(default);
    assert!(
        path.exists(),
        "{} not found\n\nhint: run scripts/setup (or set {env}) first",
        path.display()
    );
    path
}

/// The Envoy binary (`WARRANT_ENVOY`, default `.venv/bin/envoy`).
pub fn envoy_bin() -> PathBuf {
    artifact("WARRANT_ENVOY", repo_root().join(".venv/bin/envoy"))
}

/// The filter (`WARRANT_WASM`, default the release wasm32-wasip1 build).
pub fn wasm_path() -> PathBuf {
    artifact("WARRANT_WASM", repo_root().join("target/wasm32-wasip1/release/warrant_filter.wasm"))
}

/// The bench's floor filter (`WARRANT_FLOOR_WASM`, default the release
/// wasm32-wasip1 build of `tests/floor-filter`).
pub fn floor_wasm_path() -> PathBuf {
    let default = "target/wasm32-wasip1/release/warrant_floor_filter.wasm";
    artifact("WARRANT_FLOOR_WASM", repo_root().join(default))
}

/// The sidecar binary (`WARRANT_AUDIT_BIN`, default the debug build).
pub fn audit_bin() -> PathBuf {
    artifact("WARRANT_AUDIT_BIN", repo_root().join("target/debug/warrant-audit"))
}
