//! Why a delegation chain was refused.
//!
//! [`DelegationError`] is one enum for every refusal, grouped by cause (see
//! [`ErrorKind`]): the header is malformed, the chain is not provably valid
//! (forged, tampered or mis-built), a token is outside its validity period,
//! or a valid chain does not authorise this request. Each variant carries
//! the evidence: the hop index (0 = root token), the names and the values
//! compared. [`DelegationError::decision`] maps a refusal to the decision
//! code the client sees; the `Display` text is for logs and audit records.
//!
//! Display texts quote at most [`EVIDENCE_CHARS`] characters of any string
//! taken from the header (also inside JSON parser messages), so a log line
//! stays short and never carries a whole token or signature.

use std::fmt;

use crate::time::{TimeError, Timestamp};

/// The most characters of a header-supplied string that `Display` prints.
pub const EVIDENCE_CHARS: usize = 16;

/// A refused delegation chain, with the evidence for the refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DelegationError {
    // --- Malformed: the header is not a well-formed chain ---
    /// The header value is longer than the configured cap (checked before
    /// any decoding).
    HeaderTooLarge {
        /// Bytes in the header value.
        bytes: usize,
        /// The cap, `max_header_bytes`.
        cap: usize,
    },
    /// The header is not standard padded base64 (URL-safe and unpadded
    /// forms are refused).
    InvalidBase64 {
        /// What the decoder found.
        source: base64::DecodeError,
    },
    /// The decoded bytes are not a JSON array of token objects.
    InvalidJson {
        /// 1-based line of the error in the decoded JSON.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The JSON parser's description, at most 120 characters, with any
        /// quoted value cut to [`EVIDENCE_CHARS`] characters.
        reason: String,
    },
    /// The array holds no token.
    EmptyChain,
    /// The array holds more tokens than the configured cap; parsing stopped
    /// at the first token past it.
    TooManyTokens {
        /// The cap, `max_tokens`.
        cap: usize,
    },
    /// A name (delegator, delegate, scope entry, tool) is empty or contains
    /// a comma or control character, which would make the signed payload
    /// ambiguous.
    InvalidName {
        /// Index of the token.
        hop: usize,
        /// The JSON key: `delegator`, `delegate`, `scope` or `allowed_tools`.
        field: &'static str,
        /// What is wrong with it.
        defect: NameDefect,
    },
    /// A time field is missing or not an accepted RFC 3339 time, or a minted
    /// expiry overflowed.
    InvalidTime {
        /// Index of the token.
        hop: usize,
        /// The JSON key: `issued_at` or `expires_at`.
        field: &'static str,
        /// What is wrong with it.
        reason: TimeError,
    },
    /// The signature is missing or not standard base64 of 64 bytes.
    InvalidSignatureEncoding {
        /// Index of the token.
        hop: usize,
    },

    // --- Forged: the chain does not hold together ---
    /// `chain_depth` is not the token's index.
    WrongChainDepth {
        /// Index of the token (the expected depth).
        hop: usize,
        /// The `chain_depth` it carries.
        found: i64,
    },
    /// `chain_depth` is larger than the token's own `max_depth`.
    MaxDepthExceeded {
        /// Index of the token.
        hop: usize,
        /// Its `chain_depth`.
        chain_depth: i64,
        /// Its `max_depth`.
        max_depth: i64,
    },
    /// A token raises `max_depth` above the previous token's.
    MaxDepthGrown {
        /// Index of the token.
        hop: usize,
        /// Its `max_depth`.
        max_depth: i64,
        /// The previous token's `max_depth`.
        parent_max_depth: i64,
    },
    /// A `token_id` is present but is not the SHA-256 of the token's payload.
    TokenIdMismatch {
        /// Index of the token.
        hop: usize,
        /// The `token_id` it carries.
        stored: String,
        /// The SHA-256 hex of its payload.
        computed: String,
    },
    /// A token that a later hop links to carries no `token_id`.
    MissingTokenId {
        /// Index of the token without an id.
        hop: usize,
    },
    /// `parent_token_id` does not name the previous token (or, at the root,
    /// is not empty).
    BrokenLink {
        /// Index of the token.
        hop: usize,
        /// The previous token's id (empty at the root).
        expected: String,
        /// The `parent_token_id` it carries.
        found: String,
    },
    /// A token's delegator is not the previous token's delegate.
    Discontinuous {
        /// Index of the token.
        hop: usize,
        /// The previous token's delegate.
        expected: String,
        /// This token's delegator.
        found: String,
    },
    /// A token's scope is wider than the previous token's.
    ScopeExceeded {
        /// Index of the token.
        hop: usize,
        /// The first scope entry the previous token does not grant.
        entry: String,
    },
    /// No public key is configured for a delegator.
    UnknownDelegator {
        /// Index of the token.
        hop: usize,
        /// The delegator's name.
        delegator: String,
    },
    /// A delegator's name or key fingerprint is on the revocation list.
    Revoked {
        /// Index of the token.
        hop: usize,
        /// The delegator's name.
        delegator: String,
        /// The fingerprint of the delegator's configured key.
        fingerprint: String,
    },
    /// The signature does not verify (strictly) under the delegator's key.
    BadSignature {
        /// Index of the token.
        hop: usize,
        /// The delegator's name.
        delegator: String,
    },

    // --- Expired: a token is outside its validity period ---
    /// `now` is after a token's `expires_at`.
    Expired {
        /// Index of the token.
        hop: usize,
        /// The token's expiry.
        expired_at: Timestamp,
        /// The time of the check.
        now: Timestamp,
    },
    /// A token's `issued_at` is further in the future than the allowed skew.
    IssuedInFuture {
        /// Index of the token.
        hop: usize,
        /// The token's issue time.
        issued_at: Timestamp,
        /// The time of the check.
        now: Timestamp,
        /// The allowed clock skew in seconds.
        skew_secs: i64,
    },

    // --- Policy: a valid chain that does not authorise this request ---
    /// The recipient is not in the last token's scope.
    NotInScope {
        /// The request's recipient.
        recipient: String,
    },
    /// The chain's final delegate is not the authenticated sender.
    SenderMismatch {
        /// The chain's final delegate.
        delegate: String,
        /// The authenticated sender.
        sender: String,
    },
    /// The chain has more tokens than the sender's depth cap.
    DepthExceeded {
        /// Tokens in the chain.
        tokens: usize,
        /// The sender's cap.
        cap: usize,
    },
}

/// What is wrong with a name in a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameDefect {
    /// The name is empty.
    Empty,
    /// The name contains `,`, the separator of lists in the payload.
    Comma,
    /// The name contains a control character (`\n` separates payload
    /// fields; others have no business in a name and spoil log lines).
    ControlCharacter,
}

/// Who is at fault for a [`DelegationError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The header cannot be decoded into tokens.
    Malformed,
    /// The tokens do not form a provably valid chain.
    Forged,
    /// A token is expired or not yet valid.
    Expired,
    /// The chain is valid but does not authorise this request.
    Policy,
}

impl DelegationError {
    /// The decision code sent to the client: `delegation_depth_exceeded` for
    /// [`DelegationError::DepthExceeded`], `delegation_invalid` for every
    /// other refusal. The client never sees more than this.
    pub fn decision(&self) -> &'static str {
        match self {
            DelegationError::DepthExceeded { .. } => "delegation_depth_exceeded",
            _ => "delegation_invalid",
        }
    }

    /// Who is at fault: the grouping of the variants.
    pub fn kind(&self) -> ErrorKind {
        use DelegationError as E;
        match self {
            E::HeaderTooLarge { .. }
            | E::InvalidBase64 { .. }
            | E::InvalidJson { .. }
            | E::EmptyChain
            | E::TooManyTokens { .. }
            | E::InvalidName { .. }
            | E::InvalidTime { .. }
            | E::InvalidSignatureEncoding { .. } => ErrorKind::Malformed,
            E::WrongChainDepth { .. }
            | E::MaxDepthExceeded { .. }
            | E::MaxDepthGrown { .. }
            | E::TokenIdMismatch { .. }
            | E::MissingTokenId { .. }
            | E::BrokenLink { .. }
            | E::Discontinuous { .. }
            | E::ScopeExceeded { .. }
            | E::UnknownDelegator { .. }
            | E::Revoked { .. }
            | E::BadSignature { .. } => ErrorKind::Forged,
            E::Expired { .. } | E::IssuedInFuture { .. } => ErrorKind::Expired,
            E::NotInScope { .. } | E::SenderMismatch { .. } | E::DepthExceeded { .. } => {
                ErrorKind::Policy
            }
        }
    }

    /// The index of the token at fault, when one token is.
    pub fn hop(&self) -> Option<usize> {
        use DelegationError as E;
        match self {
            E::InvalidName { hop, .. }
            | E::InvalidTime { hop, .. }
            | E::InvalidSignatureEncoding { hop }
            | E::WrongChainDepth { hop, .. }
            | E::MaxDepthExceeded { hop, .. }
            | E::MaxDepthGrown { hop, .. }
            | E::TokenIdMismatch { hop, .. }
            | E::MissingTokenId { hop }
            | E::BrokenLink { hop, .. }
            | E::Discontinuous { hop, .. }
            | E::ScopeExceeded { hop, .. }
            | E::UnknownDelegator { hop, .. }
            | E::Revoked { hop, .. }
            | E::BadSignature { hop, .. }
            | E::Expired { hop, .. }
            | E::IssuedInFuture { hop, .. } => Some(*hop),
            _ => None,
        }
    }
}

impl fmt::Display for DelegationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use DelegationError as E;
        match self {
            E::HeaderTooLarge { bytes, cap } => {
                write!(
                    f,
                    "delegation header too large: expected at most {cap} bytes, found {bytes}"
                )
            }
            E::InvalidBase64 { source } => {
                f.write_str("delegation header is not standard padded base64: ")?;
                match source {
                    base64::DecodeError::InvalidByte(at, byte) => {
                        write!(f, "byte {byte:#04x} at offset {at} is not in the alphabet")
                    }
                    base64::DecodeError::InvalidLength(len) => {
                        write!(f, "{len} symbols is not a whole number of padded blocks")
                    }
                    base64::DecodeError::InvalidLastSymbol(at, _) => {
                        write!(f, "last symbol at offset {at} has non-zero trailing bits")
                    }
                    base64::DecodeError::InvalidPadding => f.write_str("padding missing or wrong"),
                }
            }
            E::InvalidJson { line, column, reason } => write!(
                f,
                "delegation chain is not a json array of tokens \
                 (line {line}, column {column}): {reason}"
            ),
            E::EmptyChain => f.write_str("delegation chain is empty: expected at least one token"),
            E::TooManyTokens { cap } => {
                write!(f, "delegation chain too long: expected at most {cap} tokens, found more")
            }
            E::InvalidName { hop, field, defect } => write!(f, "hop {hop}: {field} {defect}"),
            E::InvalidTime { hop, field, reason } => {
                write!(f, "hop {hop}: {field} is not a valid rfc 3339 time: {reason}")
            }
            E::InvalidSignatureEncoding { hop } => write!(
                f,
                "hop {hop}: signature encoding invalid: expected standard base64 of 64 bytes"
            ),
            E::WrongChainDepth { hop, found } => {
                write!(f, "hop {hop}: chain_depth wrong: expected {hop}, found {found}")
            }
            E::MaxDepthExceeded { hop, chain_depth, max_depth } => write!(
                f,
                "hop {hop}: chain_depth exceeds max_depth: expected at most {max_depth}, \
                 found {chain_depth}"
            ),
            E::MaxDepthGrown { hop, max_depth, parent_max_depth } => write!(
                f,
                "hop {hop}: max_depth grows along the chain: expected at most \
                 {parent_max_depth}, found {max_depth}"
            ),
            E::TokenIdMismatch { hop, stored, computed } => write!(
                f,
                "hop {hop}: token_id does not match the payload: expected {}, found {}",
                Evidence(computed),
                Evidence(stored)
            ),
            E::MissingTokenId { hop } => {
                write!(f, "hop {hop}: token_id missing: the next hop links to this token")
            }
            E::BrokenLink { hop, expected, found } => write!(
                f,
                "hop {hop}: parent_token_id mismatch: expected {}, found {}",
                Evidence(expected),
                Evidence(found)
            ),
            E::Discontinuous { hop, expected, found } => write!(
                f,
                "hop {hop}: delegator is not the previous delegate: expected {}, found {}",
                Evidence(expected),
                Evidence(found)
            ),
            E::ScopeExceeded { hop, entry } => write!(
                f,
                "hop {hop}: scope escalation: {} is not granted by the previous hop",
                Evidence(entry)
            ),
            E::UnknownDelegator { hop, delegator } => {
                write!(f, "hop {hop}: unknown delegator {} (no public key)", Evidence(delegator))
            }
            E::Revoked { hop, delegator, fingerprint } => write!(
                f,
                "hop {hop}: delegator {} is revoked (key {})",
                Evidence(delegator),
                Evidence(fingerprint)
            ),
            E::BadSignature { hop, delegator } => {
                write!(f, "hop {hop}: signature verification failed for {}", Evidence(delegator))
            }
            E::Expired { hop, expired_at, now } => {
                write!(f, "hop {hop}: token expired: expected now ({now}) <= {expired_at}")
            }
            E::IssuedInFuture { hop, issued_at, now, skew_secs } => write!(
                f,
                "hop {hop}: token issued in the future: expected issued_at <= now ({now}) \
                 + {skew_secs}s, found {issued_at}"
            ),
            E::NotInScope { recipient } => {
                write!(f, "recipient {} not in delegation scope", Evidence(recipient))
            }
            E::SenderMismatch { delegate, sender } => write!(
                f,
                "sender is not the chain's delegate: expected {}, found {}",
                Evidence(delegate),
                Evidence(sender)
            ),
            E::DepthExceeded { tokens, cap } => {
                write!(f, "delegation too deep: expected at most {cap} tokens, found {tokens}")
            }
        }
    }
}

impl std::error::Error for DelegationError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DelegationError::InvalidBase64 { source } => Some(source),
            DelegationError::InvalidTime { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

impl fmt::Display for NameDefect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameDefect::Empty => "is empty",
            NameDefect::Comma => "contains a comma",
            NameDefect::ControlCharacter => "contains a control character",
        })
    }
}

/// A header-supplied string in a message: quoted with escapes, at most
/// [`EVIDENCE_CHARS`] characters, `...` when cut.
struct Evidence<'a>(&'a str);

impl fmt::Display for Evidence<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = self.0.chars();
        let head: String = chars.by_ref().take(EVIDENCE_CHARS).collect();
        let cut = if chars.next().is_some() { "..." } else { "" };
        write!(f, "{head:?}{cut}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_unix_secs(secs)
    }

    /// One value of every variant, with its exact message.
    fn every_variant() -> Vec<(DelegationError, &'static str)> {
        use DelegationError as E;
        let s = String::from;
        vec![
            (
                E::HeaderTooLarge { bytes: 9000, cap: 8192 },
                "delegation header too large: expected at most 8192 bytes, found 9000",
            ),
            (
                E::InvalidBase64 { source: base64::DecodeError::InvalidByte(2, b'-') },
                "delegation header is not standard padded base64: \
                 byte 0x2d at offset 2 is not in the alphabet",
            ),
            (
                E::InvalidJson { line: 1, column: 2, reason: s("expected value") },
                "delegation chain is not a json array of tokens (line 1, column 2): \
                 expected value",
            ),
            (E::EmptyChain, "delegation chain is empty: expected at least one token"),
            (
                E::TooManyTokens { cap: 16 },
                "delegation chain too long: expected at most 16 tokens, found more",
            ),
            (
                E::InvalidName { hop: 1, field: "scope", defect: NameDefect::Comma },
                "hop 1: scope contains a comma",
            ),
            (
                E::InvalidTime { hop: 0, field: "issued_at", reason: TimeError::Syntax },
                "hop 0: issued_at is not a valid rfc 3339 time: \
                 expected YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM)",
            ),
            (
                E::InvalidSignatureEncoding { hop: 2 },
                "hop 2: signature encoding invalid: expected standard base64 of 64 bytes",
            ),
            (
                E::WrongChainDepth { hop: 1, found: 0 },
                "hop 1: chain_depth wrong: expected 1, found 0",
            ),
            (
                E::MaxDepthExceeded { hop: 2, chain_depth: 2, max_depth: 1 },
                "hop 2: chain_depth exceeds max_depth: expected at most 1, found 2",
            ),
            (
                E::MaxDepthGrown { hop: 1, max_depth: 9, parent_max_depth: 3 },
                "hop 1: max_depth grows along the chain: expected at most 3, found 9",
            ),
            (
                E::TokenIdMismatch { hop: 0, stored: s("abc"), computed: "f".repeat(64) },
                "hop 0: token_id does not match the payload: \
                 expected \"ffffffffffffffff\"..., found \"abc\"",
            ),
            (
                E::MissingTokenId { hop: 0 },
                "hop 0: token_id missing: the next hop links to this token",
            ),
            (
                E::BrokenLink { hop: 1, expected: s(""), found: s("x") },
                "hop 1: parent_token_id mismatch: expected \"\", found \"x\"",
            ),
            (
                E::Discontinuous { hop: 1, expected: s("a"), found: s("b\n") },
                "hop 1: delegator is not the previous delegate: expected \"a\", found \"b\\n\"",
            ),
            (
                E::ScopeExceeded { hop: 1, entry: s("*") },
                "hop 1: scope escalation: \"*\" is not granted by the previous hop",
            ),
            (
                E::UnknownDelegator { hop: 0, delegator: s("mallory") },
                "hop 0: unknown delegator \"mallory\" (no public key)",
            ),
            (
                E::Revoked { hop: 0, delegator: s("human"), fingerprint: "a".repeat(64) },
                "hop 0: delegator \"human\" is revoked (key \"aaaaaaaaaaaaaaaa\"...)",
            ),
            (
                E::BadSignature { hop: 1, delegator: s("human") },
                "hop 1: signature verification failed for \"human\"",
            ),
            (
                E::Expired { hop: 0, expired_at: t(0), now: t(1) },
                "hop 0: token expired: expected now (1970-01-01T00:00:01Z) <= \
                 1970-01-01T00:00:00Z",
            ),
            (
                E::IssuedInFuture { hop: 0, issued_at: t(100), now: t(0), skew_secs: 30 },
                "hop 0: token issued in the future: expected issued_at <= now \
                 (1970-01-01T00:00:00Z) + 30s, found 1970-01-01T00:01:40Z",
            ),
            (
                E::NotInScope { recipient: s("target") },
                "recipient \"target\" not in delegation scope",
            ),
            (
                E::SenderMismatch { delegate: s("a"), sender: s("b") },
                "sender is not the chain's delegate: expected \"a\", found \"b\"",
            ),
            (
                E::DepthExceeded { tokens: 4, cap: 3 },
                "delegation too deep: expected at most 3 tokens, found 4",
            ),
        ]
    }

    #[test]
    fn every_variant_formats_as_one_lowercase_line() {
        for (error, want) in every_variant() {
            let text = error.to_string();
            assert_eq!(text, want);
            assert!(!text.contains('\n'), "{text}");
            assert!(!text.ends_with('.'), "{text}");
        }
    }

    #[test]
    fn only_the_depth_cap_has_its_own_decision() {
        for (error, _) in every_variant() {
            let want = if matches!(error, DelegationError::DepthExceeded { .. }) {
                "delegation_depth_exceeded"
            } else {
                "delegation_invalid"
            };
            assert_eq!(error.decision(), want, "{error}");
        }
    }

    #[test]
    fn kinds_and_hops_are_reported() {
        let e = DelegationError::BadSignature { hop: 3, delegator: "x".into() };
        assert_eq!((e.kind(), e.hop()), (ErrorKind::Forged, Some(3)));
        let e = DelegationError::EmptyChain;
        assert_eq!((e.kind(), e.hop()), (ErrorKind::Malformed, None));
        let e = DelegationError::NotInScope { recipient: "x".into() };
        assert_eq!(e.kind(), ErrorKind::Policy);
    }

    #[test]
    fn evidence_is_cut_on_a_char_boundary() {
        let long = "é".repeat(40);
        let text = Evidence(&long).to_string();
        assert_eq!(text, format!("{:?}...", "é".repeat(EVIDENCE_CHARS)));
    }
}
