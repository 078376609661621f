//! Session ids and the randomness they are drawn from.
//!
//! A [`SessionId`] is 16 random bytes, written as 32 lowercase hex
//! characters (the oktsec format: not a UUID, no dashes, no version bits).
//! The bytes come from a [`RandomSource`]: [`OsRandom`] in the filter
//! (`getrandom`, which on wasm32-wasip1 in Envoy is WASI `random_get`, backed
//! by BoringSSL's CSPRNG), [`SeededRandom`] in tests that need repeatable ids.

use std::fmt;

/// A session id: 16 bytes, shown as 32 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId([u8; SessionId::LEN]);

impl SessionId {
    /// The number of bytes in an id.
    pub const LEN: usize = 16;

    /// Draws a new id from `random`.
    ///
    /// # Errors
    ///
    /// [`RandomError`] when the source cannot produce bytes.
    pub fn generate(random: &mut dyn RandomSource) -> Result<SessionId, RandomError> {
        let mut bytes = [0u8; SessionId::LEN];
        random.fill(&mut bytes)?;
        Ok(SessionId(bytes))
    }

    /// The id made of exactly these bytes.
    pub const fn from_bytes(bytes: [u8; SessionId::LEN]) -> SessionId {
        SessionId(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; SessionId::LEN] {
        &self.0
    }

    /// The 32 lowercase hex characters that go into headers and records.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.to_hex())
    }
}

/// A source of random bytes for new session ids.
pub trait RandomSource {
    /// Fills `bytes` completely.
    ///
    /// # Errors
    ///
    /// [`RandomError`] when no bytes could be produced.
    fn fill(&mut self, bytes: &mut [u8]) -> Result<(), RandomError>;
}

/// The operating system's CSPRNG through `getrandom`.
///
/// In Envoy on wasm32-wasip1 this is WASI `random_get`, which the host
/// serves from BoringSSL `RAND_bytes` (up to 64 KiB per call; we ask for 16).
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandom;

impl RandomSource for OsRandom {
    fn fill(&mut self, bytes: &mut [u8]) -> Result<(), RandomError> {
        getrandom::fill(bytes).map_err(|error| RandomError::new(error.to_string()))
    }
}

/// A deterministic generator (SplitMix64) for tests. Not random: never use it
/// for real session ids.
///
/// Different seeds give different sequences, so emulated workers in a test
/// can each have their own.
#[derive(Debug, Clone)]
pub struct SeededRandom {
    state: u64,
}

impl SeededRandom {
    /// A generator whose output depends only on `seed`.
    pub fn new(seed: u64) -> SeededRandom {
        SeededRandom { state: seed }
    }

    fn next_word(&mut self) -> u64 {
        // SplitMix64 (Steele, Lea, Flood 2014): a Weyl sequence, then a
        // bijective mixing function, so every state gives a distinct word.
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl RandomSource for SeededRandom {
    fn fill(&mut self, bytes: &mut [u8]) -> Result<(), RandomError> {
        for chunk in bytes.chunks_mut(8) {
            let word = self.next_word().to_le_bytes();
            for (byte, source) in chunk.iter_mut().zip(word) {
                *byte = source;
            }
        }
        Ok(())
    }
}

/// A random source produced no bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RandomError {
    detail: String,
}

impl RandomError {
    /// Makes an error from the source's description of the failure.
    pub fn new(detail: impl Into<String>) -> RandomError {
        RandomError { detail: detail.into() }
    }

    /// The source's description of the failure.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for RandomError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "random source failed: {}", self.detail)
    }
}

impl std::error::Error for RandomError {}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn is_lower_hex_32(text: &str) -> bool {
        text.len() == 32 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    #[test]
    fn id_is_32_lowercase_hex_characters_of_its_bytes() {
        let id = SessionId::from_bytes([
            0x00, 0x01, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ]);
        assert_eq!(id.to_hex(), "00012233445566778899aabbccddeeff");
        assert_eq!(id.to_string(), id.to_hex());
        assert_eq!(format!("{id:?}"), "SessionId(00012233445566778899aabbccddeeff)");
        assert_eq!(id.as_bytes()[2], 0x22);
    }

    #[test]
    fn os_random_ids_are_lowercase_hex_and_a_thousand_are_unique() {
        let mut random = OsRandom;
        let ids: HashSet<String> =
            (0..1000).map(|_| SessionId::generate(&mut random).unwrap().to_hex()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| is_lower_hex_32(id)), "not all ids are 32 lowercase hex");
    }

    #[test]
    fn seeded_random_repeats_for_a_seed_and_differs_between_seeds() {
        let a1 = SessionId::generate(&mut SeededRandom::new(1)).unwrap();
        let a2 = SessionId::generate(&mut SeededRandom::new(1)).unwrap();
        let b = SessionId::generate(&mut SeededRandom::new(2)).unwrap();
        assert_eq!(a1, a2);
        assert_ne!(a1, b);
    }

    #[test]
    fn seeded_random_fills_odd_lengths_completely() {
        let mut bytes = [0u8; 13];
        SeededRandom::new(7).fill(&mut bytes).unwrap();
        assert!(bytes[8..].iter().any(|&b| b != 0), "tail was not filled");
    }

    #[test]
    fn random_error_formats() {
        let error = RandomError::new("unsupported");
        assert_eq!(error.to_string(), "random source failed: unsupported");
        assert_eq!(error.detail(), "unsupported");
    }
}
