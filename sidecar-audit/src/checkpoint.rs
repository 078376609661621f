//! Signed checkpoints: the sidecar's Ed25519 signature over the chain head.
//!
//! A hash chain shows an edited or removed entry only up to the head an
//! attacker leaves behind; a checkpoint pins the head with a signature that
//! only the holder of the sidecar's private key can make. The sidecar writes
//! one at least every `--checkpoint-every` entries or
//! `--checkpoint-interval-ms` milliseconds, and at shutdown (see
//! [`crate::server`]); `checkpoint export` copies the latest one out, and
//! `verify --checkpoint FILE` later proves the database still holds that
//! head (no truncated tail, no rollback).
//!
//! Types, by state: a [`Checkpoint`] is what gets signed; a
//! [`SignedCheckpoint`] is one as stored or exported, signature not yet
//! checked; a [`VerifiedCheckpoint`] can only be made by
//! [`SignedCheckpoint::verify`]. [`CheckpointFile`] is the exported JSON.
//!
//! # Signed bytes, format version 1
//!
//! The signature is Ed25519 (RFC 8032, pure, no pre-hash) over exactly these
//! 93 bytes:
//!
//! ```text
//! "warrant-audit-checkpoint" 0x00   domain tag, 25 bytes
//! u32 big-endian   format version   (1)
//! 16 bytes         chain id
//! u64 big-endian   seq              (the last entry covered)
//! 32 bytes         head hash        (that entry's entry_hash)
//! i64 big-endian   time             (Unix nanoseconds, the sidecar's clock)
//! ```
//!
//! The domain tag keeps a checkpoint signature from being valid as any other
//! message signed with the same key, and the chain id keeps it from being
//! replayed onto another chain.

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The domain tag that starts the signed bytes.
pub const DOMAIN_TAG: &[u8] = b"warrant-audit-checkpoint\0";
/// The version of the signed-bytes format.
pub const FORMAT_VERSION: u32 = 1;
/// Length of [`Checkpoint::signed_bytes`].
pub const SIGNED_LEN: usize = 25 + 4 + 16 + 8 + 32 + 8;

/// What a checkpoint asserts: the chain `chain_id` had head `head_hash` at
/// `seq`, at `time_unix_nanos`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The chain id.
    pub chain_id: [u8; 16],
    /// The seq of the last entry covered.
    pub seq: u64,
    /// That entry's hash.
    pub head_hash: [u8; 32],
    /// When it was signed (Unix ns, the sidecar's clock).
    pub time_unix_nanos: i64,
}

impl Checkpoint {
    /// The exact bytes signed (see the module doc).
    pub fn signed_bytes(&self) -> [u8; SIGNED_LEN] {
        let mut out = [0u8; SIGNED_LEN];
        let parts: [&[u8]; 6] = [
            DOMAIN_TAG,
            &FORMAT_VERSION.to_be_bytes(),
            &self.chain_id,
            &self.seq.to_be_bytes(),
            &self.head_hash,
            &self.time_unix_nanos.to_be_bytes(),
        ];
        let mut at = 0;
        for part in parts {
            // The parts add up to SIGNED_LEN by construction.
            out[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        out
    }

    /// Signs it.
    pub fn sign(self, key: &SigningKey) -> SignedCheckpoint {
        let signature = key.sign(&self.signed_bytes()).to_bytes().to_vec();
        SignedCheckpoint {
            checkpoint: self,
            key_fingerprint: warrant_delegation::keys::fingerprint(&key.verifying_key()),
            signature,
        }
    }
}

/// A checkpoint with its signature, as stored in the `checkpoints` table or
/// read from an exported file. Nothing about it is trusted until
/// [`SignedCheckpoint::verify`] has run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// What was signed.
    pub checkpoint: Checkpoint,
    /// The signer's key fingerprint as recorded (hex SHA-256 of the public
    /// key). Informational: only the signature proves who signed.
    pub key_fingerprint: String,
    /// The signature as stored: 64 bytes when well formed.
    pub signature: Vec<u8>,
}

/// A checkpoint whose signature verified with `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    checkpoint: Checkpoint,
    key_fingerprint: String,
}

/// Why a checkpoint signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The signature is not 64 bytes (blanked or cut).
    MalformedSignature {
        /// Its length.
        len: usize,
    },
    /// The signature does not verify with the key.
    BadSignature {
        /// Fingerprint of the key tried.
        key_fingerprint: String,
    },
}

impl SignedCheckpoint {
    /// Checks the signature with `key`.
    ///
    /// # Errors
    /// [`CheckpointError`] when it is malformed or does not verify.
    pub fn verify(&self, key: &VerifyingKey) -> Result<VerifiedCheckpoint, CheckpointError> {
        let bytes: [u8; 64] = self
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| CheckpointError::MalformedSignature { len: self.signature.len() })?;
        let key_fingerprint = warrant_delegation::keys::fingerprint(key);
        key.verify(&self.checkpoint.signed_bytes(), &Signature::from_bytes(&bytes)).map_err(
            |_| CheckpointError::BadSignature { key_fingerprint: key_fingerprint.clone() },
        )?;
        Ok(VerifiedCheckpoint { checkpoint: self.checkpoint, key_fingerprint })
    }

    /// The exported JSON form.
    pub fn to_file(&self) -> CheckpointFile {
        use base64::Engine as _;
        let c = &self.checkpoint;
        CheckpointFile {
            format: FORMAT_VERSION,
            chain_id: hex::encode(c.chain_id),
            seq: c.seq,
            head_hash: hex::encode(c.head_hash),
            time: crate::sessions_cmd::rfc3339(c.time_unix_nanos),
            time_unix_nanos: c.time_unix_nanos,
            key_fingerprint: self.key_fingerprint.clone(),
            signature: base64::engine::general_purpose::STANDARD.encode(&self.signature),
        }
    }
}

impl VerifiedCheckpoint {
    /// What was verified.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The fingerprint of the key it verified with.
    pub fn key_fingerprint(&self) -> &str {
        &self.key_fingerprint
    }
}

impl std::fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckpointError::MalformedSignature { len } => {
                write!(f, "checkpoint signature is malformed: expected 64 bytes, found {len}")
            }
            CheckpointError::BadSignature { key_fingerprint } => {
                write!(f, "checkpoint signature does not verify with key {key_fingerprint}")
            }
        }
    }
}

impl std::error::Error for CheckpointError {}

/// A signed checkpoint as `checkpoint export` writes it and
/// `verify --checkpoint` reads it: one JSON object.
///
/// ```json
/// {"format": 1,
///  "chain_id": "<32 hex>", "seq": 4200, "head_hash": "<64 hex>",
///  "time": "2026-03-24T10:00:00.5Z", "time_unix_nanos": 1774346400500000000,
///  "key_fingerprint": "<64 hex>", "signature": "<88 characters of base64>"}
/// ```
///
/// `signature` is standard padded base64 of the 64-byte Ed25519 signature
/// over the signed bytes of the module doc, built from `chain_id`, `seq`,
/// `head_hash` and `time_unix_nanos`; `time` is the same instant in RFC 3339
/// UTC, for people (it is not read back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointFile {
    /// The signed-bytes format version (1).
    pub format: u32,
    /// Lowercase hex chain id.
    pub chain_id: String,
    /// The seq of the last entry covered.
    pub seq: u64,
    /// Lowercase hex entry hash at `seq`.
    pub head_hash: String,
    /// RFC 3339 UTC of `time_unix_nanos`.
    pub time: String,
    /// When it was signed (Unix ns).
    pub time_unix_nanos: i64,
    /// Hex SHA-256 of the signer's public key.
    pub key_fingerprint: String,
    /// Standard base64 of the signature.
    pub signature: String,
}

/// Why an exported checkpoint file cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileError {
    /// Not the JSON object described on [`CheckpointFile`].
    Json(String),
    /// A format version this build does not read.
    Format {
        /// The version found.
        found: u32,
    },
    /// A field that does not decode.
    Field {
        /// The field.
        name: &'static str,
        /// What it should be.
        expected: &'static str,
    },
}

impl CheckpointFile {
    /// Parses the JSON text of an exported checkpoint.
    ///
    /// # Errors
    /// [`FileError`] when it is not JSON of this shape, of another format
    /// version, or a field does not decode.
    pub fn parse(text: &str) -> Result<SignedCheckpoint, FileError> {
        use base64::Engine as _;
        let file: CheckpointFile =
            serde_json::from_str(text).map_err(|e| FileError::Json(e.to_string()))?;
        if file.format != FORMAT_VERSION {
            return Err(FileError::Format { found: file.format });
        }
        let chain_id = decode_hex::<16>(&file.chain_id)
            .ok_or(FileError::Field { name: "chain_id", expected: "32 hex digits" })?;
        let head_hash = decode_hex::<32>(&file.head_hash)
            .ok_or(FileError::Field { name: "head_hash", expected: "64 hex digits" })?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(&file.signature)
            .map_err(|_| FileError::Field { name: "signature", expected: "standard base64" })?;
        Ok(SignedCheckpoint {
            checkpoint: Checkpoint {
                chain_id,
                seq: file.seq,
                head_hash,
                time_unix_nanos: file.time_unix_nanos,
            },
            key_fingerprint: file.key_fingerprint,
            signature,
        })
    }
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileError::Json(e) => write!(f, "checkpoint file is not a checkpoint object: {e}"),
            FileError::Format { found } => write!(
                f,
                "checkpoint file format {found} is not supported (this build reads {FORMAT_VERSION})"
            ),
            FileError::Field { name, expected } => {
                write!(f, "checkpoint file field `{name}` is malformed: expected {expected}")
            }
        }
    }
}

impl std::error::Error for FileError {}

fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    hex::decode(text).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint { chain_id: [7; 16], seq: 42, head_hash: [9; 32], time_unix_nanos: 5 }
    }

    #[test]
    fn signed_bytes_follow_the_documented_layout() {
        let bytes = checkpoint().signed_bytes();
        assert_eq!(bytes.len(), 93);
        assert_eq!(&bytes[..25], b"warrant-audit-checkpoint\0");
        assert_eq!(&bytes[25..29], &[0, 0, 0, 1]);
        assert_eq!(&bytes[29..45], &[7; 16]);
        assert_eq!(&bytes[45..53], &42u64.to_be_bytes());
        assert_eq!(&bytes[53..85], &[9; 32]);
        assert_eq!(&bytes[85..], &5i64.to_be_bytes());
    }

    #[test]
    fn signature_verifies_with_the_signer_only() {
        let signed = checkpoint().sign(&key(1));
        let verified = signed.verify(&key(1).verifying_key()).unwrap();
        assert_eq!(verified.checkpoint(), &checkpoint());
        assert_eq!(signed.key_fingerprint, verified.key_fingerprint());
        let wrong = key(2).verifying_key();
        assert_eq!(
            signed.verify(&wrong),
            Err(CheckpointError::BadSignature {
                key_fingerprint: warrant_delegation::keys::fingerprint(&wrong)
            })
        );
    }

    #[test]
    fn every_signed_field_is_covered() {
        let signed = checkpoint().sign(&key(1));
        let public = key(1).verifying_key();
        type Change = (&'static str, fn(&mut Checkpoint));
        let changes: [Change; 4] = [
            ("chain id", |c| c.chain_id[0] ^= 1),
            ("seq", |c| c.seq += 1),
            ("head hash", |c| c.head_hash[31] ^= 1),
            ("time", |c| c.time_unix_nanos += 1),
        ];
        for (name, change) in changes {
            let mut forged = signed.clone();
            change(&mut forged.checkpoint);
            assert!(
                matches!(forged.verify(&public), Err(CheckpointError::BadSignature { .. })),
                "{name}"
            );
        }
    }

    #[test]
    fn blank_signature_is_malformed() {
        let mut signed = checkpoint().sign(&key(1));
        signed.signature.clear();
        assert_eq!(
            signed.verify(&key(1).verifying_key()),
            Err(CheckpointError::MalformedSignature { len: 0 })
        );
    }

    #[test]
    fn file_round_trips() {
        let signed = checkpoint().sign(&key(3));
        let text = serde_json::to_string(&signed.to_file()).unwrap();
        assert_eq!(CheckpointFile::parse(&text).unwrap(), signed);
    }

    #[test]
    fn bad_files_are_refused_with_the_field() {
        let good = serde_json::to_value(checkpoint().sign(&key(3)).to_file()).unwrap();
        let cases: [(&str, &str, serde_json::Value, FileError); 3] = [
            ("format", "format", 2.into(), FileError::Format { found: 2 }),
            (
                "short chain id",
                "chain_id",
                "00".into(),
                FileError::Field { name: "chain_id", expected: "32 hex digits" },
            ),
            (
                "signature not base64",
                "signature",
                "!!".into(),
                FileError::Field { name: "signature", expected: "standard base64" },
            ),
        ];
        for (name, field, value, want) in cases {
            let mut bad = good.clone();
            bad[field] = value;
            assert_eq!(CheckpointFile::parse(&bad.to_string()), Err(want), "{name}");
        }
        assert!(matches!(CheckpointFile::parse("[]"), Err(FileError::Json(_))));
    }

    #[test]
    fn errors_format_once_each() {
        let messages = [
            CheckpointError::MalformedSignature { len: 3 }.to_string(),
            CheckpointError::BadSignature { key_fingerprint: "ab".into() }.to_string(),
            FileError::Json("x".into()).to_string(),
            FileError::Format { found: 9 }.to_string(),
            FileError::Field { name: "seq", expected: "a number" }.to_string(),
        ];
        assert_eq!(
            messages,
            [
                "checkpoint signature is malformed: expected 64 bytes, found 3",
                "checkpoint signature does not verify with key ab",
                "checkpoint file is not a checkpoint object: x",
                "checkpoint file format 9 is not supported (this build reads 1)",
                "checkpoint file field `seq` is malformed: expected a number",
            ]
        );
    }
}
