//! Warrant's audit sidecar: it receives every decision the filter makes over
//! gRPC and appends it to a hash chain in SQLite, and it proves that chain
//! intact offline.
//!
//! - [`chain`]: the entry format and exactly which bytes are hashed;
//! - [`store`]: the SQLite database (schema, durability, group commit);
//! - [`server`]: the tonic service and its writer thread;
//! - [`verify`]: the read-only verifier behind `warrant-audit verify`.

pub mod chain;
pub mod server;
pub mod sessions_cmd;
pub mod store;
pub mod verify;

/// The tonic service generated from the one proto file.
#[allow(missing_docs, unreachable_pub, missing_debug_implementations, clippy::all)]
pub mod proto {
    tonic::include_proto!("warrant.audit.v1");
}
