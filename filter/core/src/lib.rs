//! The filter's pure logic, built and tested natively; the proxy-wasm crate
//! (`warrant-filter`) is a thin adapter over it.
//!
//! A request flows through these modules in order:
//! - [`config`]: the plugin configuration (JSON), validated strictly and
//!   compiled once per VM into a [`config::Policy`];
//! - [`request`]: what the filter learned from the request headers
//!   ([`request::RequestHead`]);
//! - [`envelope`]: the oktsec message envelope and its Ed25519 signature;
//! - [`extract`]: which text of the body gets scanned (envelope content, MCP
//!   `tools/call` name and arguments, or the raw body);
//! - [`identity`]: who sent the request and whether that is authenticated;
//! - [`replay`]: signed envelopes seen before within their window, on a
//!   bounded table in shared data;
//! - [`decision`]: the closed set of decisions, their HTTP mapping and the
//!   local reply body;
//! - [`pipeline`]: runs all of the above and yields an [`pipeline::Outcome`]
//!   with the decision, its audit record and the [`facts`] for Envoy;
//! - [`message_id`]: the UUID v4 text that names each record;
//! - [`outbox`]: the bounded buffer of records waiting for the sidecar's
//!   acknowledgement in `audit.mode = "async"` (retries, backoff, gaps).
//!
//! Nothing here calls the proxy host: time, randomness and header values are
//! passed in, so every path is testable natively and on wasm32.

pub mod authority;
pub mod config;
pub mod decision;
pub mod envelope;
pub mod extract;
pub mod facts;
pub mod identity;
pub mod message_id;
pub mod outbox;
pub mod pipeline;
pub mod replay;
pub mod request;
