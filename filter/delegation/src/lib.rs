//! Identity material and delegation chains.
//!
//! - [`keys`]: Ed25519 public and private keys in oktsec's formats (raw
//!   32-byte base64, or PEM blocks), fingerprints, and the [`keys::KeyStore`]
//!   that maps agent names to public keys.
//!
//! Delegation chains (the `X-Oktsec-Delegation` header) are built on top of
//! these keys.

pub mod keys;
