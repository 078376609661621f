//! The agent-facing tools of the `warrant-audit` binary: keys, delegation
//! tokens, session summaries and rule files. (The chain commands, `serve`,
//! `verify`, `checkpoint`, `quarantine` and `page`, are in
//! [`crate::commands`].)
//!
//! Each module holds one command: a clap argument type, defined once with
//! its short and long help, and a `run` function returning the exit status;
//! `main.rs` only dispatches.
//!
//! - [`keygen`]: `keygen`, an agent's Ed25519 key pair in oktsec's formats;
//! - [`keys`]: `keys envoy-config`, and reading a directory of public keys;
//! - [`delegate`]: `delegate`, minting a token or extending a chain;
//! - [`sessions`]: `sessions`, sessions summarized from the audit chain;
//! - [`rules`]: `rules validate|test|scan`, on top of `warrant-rules`.
//!
//! Exit status, for every command here: 0 success; 1 a check found a
//! problem (`rules validate`, `rules test`); 2 the command could not run
//! (bad arguments, missing or unreadable files, a key that does not parse,
//! a parent chain that does not verify). Results go to stdout; errors go to
//! stderr as `error: ...`, the path or flag first.

pub mod delegate;
pub mod keygen;
pub mod keys;
pub mod rules;
pub mod sessions;
