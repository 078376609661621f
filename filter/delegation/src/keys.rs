//! Ed25519 keys in the formats oktsec uses, and a store of agents' keys.
//!
//! Formats accepted for a public key (the `keys` map of the filter config,
//! `NAME.pub` files):
//! - standard padded base64 of the raw 32-byte key (hex, URL-safe or
//!   unpadded base64 are refused);
//! - a PEM block of type `OKTSEC ED25519 PUBLIC KEY` holding the raw 32 bytes.
//!
//! A private key (`NAME.key`) is a PEM block of type
//! `OKTSEC ED25519 PRIVATE KEY` holding 64 bytes: the 32-byte seed followed
//! by the 32-byte public key (Go's `ed25519.PrivateKey` layout). On loading,
//! the public half must match the seed.
//!
//! A fingerprint is the lowercase hex SHA-256 of the 32 raw public-key bytes.

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// PEM tag of a public key file.
pub const PUBLIC_PEM_TAG: &str = "OKTSEC ED25519 PUBLIC KEY";
/// PEM tag of a private key file.
pub const PRIVATE_PEM_TAG: &str = "OKTSEC ED25519 PRIVATE KEY";

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// Neither valid base64 of 32 bytes nor a PEM block.
    Malformed(String),
    /// A PEM block of an unexpected type.
    WrongPemTag {
        /// The tag that was wanted.
        expected: &'static str,
        /// The tag that was found.
        found: String,
    },
    /// The right encoding, the wrong number of bytes.
    WrongLength {
        /// Bytes wanted.
        expected: usize,
        /// Bytes found.
        found: usize,
    },
    /// The bytes are not a valid Ed25519 point, or a private key's public
    /// half does not match its seed.
    Invalid(String),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Malformed(why) => write!(f, "malformed key: {why}"),
            KeyError::WrongPemTag { expected, found } => {
                write!(f, "wrong PEM block: expected {expected:?}, found {found:?}")
            }
            KeyError::WrongLength { expected, found } => {
                write!(f, "wrong key length: expected {expected} bytes, found {found}")
            }
            KeyError::Invalid(why) => write!(f, "invalid key: {why}"),
        }
    }
}

impl std::error::Error for KeyError {}

/// Parses a public key given as base64 of the raw 32 bytes or as an oktsec
/// PEM block.
///
/// # Errors
/// [`KeyError`] says what is wrong with the text.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, KeyError> {
    let text = text.trim();
    let raw = if text.starts_with("-----BEGIN") {
        pem_contents(text, PUBLIC_PEM_TAG)?
    } else {
        STANDARD.decode(text).map_err(|e| KeyError::Malformed(format!("not base64: {e}")))?
    };
    let bytes: [u8; 32] = raw
        .as_slice()
        .try_into()
        .map_err(|_| KeyError::WrongLength { expected: 32, found: raw.len() })?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| KeyError::Invalid(e.to_string()))
}

/// Parses an oktsec private key PEM block (64 bytes: seed, then public key).
///
/// # Errors
/// [`KeyError`] if the block is missing, of another type, of another length,
/// or if its public half does not belong to its seed.
pub fn parse_private_key(text: &str) -> Result<SigningKey, KeyError> {
    let raw = pem_contents(text.trim(), PRIVATE_PEM_TAG)?;
    if raw.len() != 64 {
        return Err(KeyError::WrongLength { expected: 64, found: raw.len() });
    }
    let mut seed = [0u8; 32];
    seed.copy_from_slice(&raw[..32]);
    let key = SigningKey::from_bytes(&seed);
    if key.verifying_key().as_bytes()[..] != raw[32..] {
        return Err(KeyError::Invalid("public half does not match the seed".into()));
    }
    Ok(key)
}

/// Encodes a public key as an oktsec PEM block.
pub fn public_key_pem(key: &VerifyingKey) -> String {
    pem::encode(&pem::Pem::new(PUBLIC_PEM_TAG, key.as_bytes().to_vec()))
}

/// Encodes a private key as an oktsec PEM block (seed followed by public key).
pub fn private_key_pem(key: &SigningKey) -> String {
    let mut raw = key.to_bytes().to_vec();
    raw.extend_from_slice(key.verifying_key().as_bytes());
    pem::encode(&pem::Pem::new(PRIVATE_PEM_TAG, raw))
}

/// Standard padded base64 of the raw public key.
pub fn public_key_base64(key: &VerifyingKey) -> String {
    STANDARD.encode(key.as_bytes())
}

/// Lowercase hex SHA-256 of the raw 32-byte public key.
pub fn fingerprint(key: &VerifyingKey) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn pem_contents(text: &str, tag: &'static str) -> Result<Vec<u8>, KeyError> {
    let block = pem::parse(text).map_err(|e| KeyError::Malformed(format!("bad PEM: {e}")))?;
    if block.tag() != tag {
        return Err(KeyError::WrongPemTag { expected: tag, found: block.tag().to_string() });
    }
    Ok(block.into_contents())
}

/// Agents' public keys by name, with their fingerprints.
#[derive(Debug, Clone, Default)]
pub struct KeyStore {
    keys: BTreeMap<String, (VerifyingKey, String)>,
}

impl KeyStore {
    /// An empty store.
    pub fn new() -> KeyStore {
        KeyStore::default()
    }

    /// Adds (or replaces) an agent's key.
    pub fn insert(&mut self, name: impl Into<String>, key: VerifyingKey) {
        let print = fingerprint(&key);
        self.keys.insert(name.into(), (key, print));
    }

    /// The key of an agent.
    pub fn key(&self, name: &str) -> Option<&VerifyingKey> {
        self.keys.get(name).map(|(k, _)| k)
    }

    /// The fingerprint of an agent's key.
    pub fn fingerprint(&self, name: &str) -> Option<&str> {
        self.keys.get(name).map(|(_, p)| p.as_str())
    }

    /// How many keys the store holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    #[test]
    fn public_key_round_trips_through_base64_and_pem() {
        let public = key().verifying_key();
        assert_eq!(parse_public_key(&public_key_base64(&public)).unwrap(), public);
        assert_eq!(parse_public_key(&public_key_pem(&public)).unwrap(), public);
    }

    #[test]
    fn private_key_round_trips_through_pem() {
        let parsed = parse_private_key(&private_key_pem(&key())).unwrap();
        assert_eq!(parsed.to_bytes(), key().to_bytes());
    }

    #[test]
    fn wrong_lengths_and_tags_are_named() {
        assert_eq!(
            parse_public_key("AAAA").unwrap_err(),
            KeyError::WrongLength { expected: 32, found: 3 }
        );
        let private = private_key_pem(&key());
        assert!(matches!(parse_public_key(&private), Err(KeyError::WrongPemTag { .. })));
        assert!(matches!(parse_public_key("not base64!"), Err(KeyError::Malformed(_))));
    }

    #[test]
    fn unpadded_base64_is_rejected() {
        let public = key().verifying_key();
        let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(public.as_bytes());
        assert!(matches!(parse_public_key(&unpadded), Err(KeyError::Malformed(_))));
    }

    #[test]
    fn mismatched_private_halves_are_refused() {
        let mut raw = key().to_bytes().to_vec();
        raw.extend_from_slice(SigningKey::from_bytes(&[8u8; 32]).verifying_key().as_bytes());
        let text = pem::encode(&pem::Pem::new(PRIVATE_PEM_TAG, raw));
        assert!(matches!(parse_private_key(&text), Err(KeyError::Invalid(_))));
    }

    #[test]
    fn fingerprint_is_sha256_hex_of_raw_key() {
        let public = key().verifying_key();
        assert_eq!(fingerprint(&public), hex::encode(Sha256::digest(public.as_bytes())));
        assert_eq!(fingerprint(&public).len(), 64);
    }
}
