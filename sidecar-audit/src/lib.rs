//! Warrant's audit sidecar: it receives every decision the filter makes over
//! gRPC and appends it to a hash chain in SQLite, and it proves that chain
//! intact offline.
//!
//! - [`chain`]: the entry format and exactly which bytes are hashed;
//! - [`checkpoint`]: signed heads, exactly which bytes are signed, and the
//!   exported checkpoint file;
//! - [`keyfile`]: the signing key pair on disk and its default location;
//! - [`store`]: the SQLite database (schema, durability, group commit);
//! - [`server`]: the tonic service, its writer thread and the checkpoint
//!   schedule;
//! - [`verify`]: the read-only verifier behind `warrant-audit verify`;
//! - [`quarantine`]: the review queue and its decision records;
//! - [`page`]: the read-only audit page, `/api/verify` and `/metrics`;
//! - [`metrics`]: the sidecar's counters in Prometheus text form;
//! - [`commands`]: the chain commands of the binary (`serve`, `verify`,
//!   `checkpoint`, `quarantine`, `page`).
//! - [`cli`]: the agent-facing commands of the binary (`keygen`,
//!   `delegate`, `keys`, `sessions`, `rules`).

pub mod chain;
pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod keyfile;
pub mod metrics;
pub mod page;
pub mod quarantine;
pub mod server;
pub mod sessions_cmd;
pub mod store;
pub mod verify;

/// The tonic service generated from the one proto file.
#[allow(missing_docs, unreachable_pub, missing_debug_implementations, clippy::all)]
pub mod proto {
    tonic::include_proto!("warrant.audit.v1");
}
