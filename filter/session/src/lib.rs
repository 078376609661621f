//! Session tracking (placeholder; see the session tracking issue).
//!
//! The filter will resolve one session per agent across all Envoy workers,
//! on proxy-wasm shared data reached through a trait.
