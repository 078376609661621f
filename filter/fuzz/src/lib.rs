//! Fixtures shared by the fuzz targets and the corpus generator: a fixed
//! clock and deterministic keys, so seeds minted by `make_corpus` verify
//! inside the target.

use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};
use warrant_delegation::keys::KeyStore;
use warrant_delegation::Timestamp;

/// The agents whose keys the fuzz key store holds.
pub const AGENTS: [&str; 4] = ["human", "agent-a", "agent-b", "agent-c"];

/// The fixed "now" of the fuzz targets: 2026-03-24T12:00:00Z.
pub fn now() -> Timestamp {
    Timestamp::from_unix_secs(1_774_353_600)
}

/// The signing key of an agent, derived from its name.
pub fn key(name: &str) -> SigningKey {
    SigningKey::from_bytes(&Sha256::digest(name.as_bytes()).into())
}

/// A key store with every agent of [`AGENTS`].
pub fn keys() -> KeyStore {
    let mut store = KeyStore::new();
    for name in AGENTS {
        store.insert(name, key(name).verifying_key());
    }
    store
}
