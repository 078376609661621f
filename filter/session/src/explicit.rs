//! Explicit session ids: the value of the session header sent by the caller.
//!
//! An agent (or the Warrant-protected hop before it) may name its session in
//! the session header. [`parse_explicit`] accepts the value verbatim when it
//! is 1 to [`EXPLICIT_MAX_LEN`] characters of `A-Z a-z 0-9 . _ : -`
//! ([`EXPLICIT_RULE`]); the 32-hex ids this crate makes always qualify.
//! Anything else is [`Explicit::Malformed`]: the filter then uses the
//! resolved session and the audit record notes the [`Malformation`], never
//! the raw value.
//!
//! An explicit id does not touch the session table: it is neither stored
//! nor refreshed.

use std::fmt;

/// The longest accepted explicit session id, in bytes (all accepted
/// characters are ASCII, so bytes and characters agree).
pub const EXPLICIT_MAX_LEN: usize = 128;

/// The accepted form, in words, for documentation and messages.
pub const EXPLICIT_RULE: &str = "1 to 128 characters of A-Z a-z 0-9 . _ : -";

/// The result of checking an explicit session header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Explicit<'a> {
    /// Well formed; use it verbatim.
    Valid(&'a str),
    /// Not well formed; use the resolved session and record why.
    Malformed(Malformation),
}

/// Why an explicit session header value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Malformation {
    /// The header was present with an empty value.
    Empty,
    /// Longer than [`EXPLICIT_MAX_LEN`] bytes.
    TooLong {
        /// The value's length in bytes.
        length: usize,
    },
    /// A byte outside `A-Z a-z 0-9 . _ : -`.
    ForbiddenByte {
        /// The 0-based offset of the first such byte.
        position: usize,
    },
}

/// Checks a session header value (raw bytes, as the host returns them).
pub fn parse_explicit(value: &[u8]) -> Explicit<'_> {
    if value.is_empty() {
        return Explicit::Malformed(Malformation::Empty);
    }
    if value.len() > EXPLICIT_MAX_LEN {
        return Explicit::Malformed(Malformation::TooLong { length: value.len() });
    }
    if let Some(position) = value.iter().position(|&b| !is_allowed(b)) {
        return Explicit::Malformed(Malformation::ForbiddenByte { position });
    }
    match std::str::from_utf8(value) {
        Ok(text) => Explicit::Valid(text),
        // Unreachable: every allowed byte is ASCII. Kept total anyway.
        Err(error) => {
            Explicit::Malformed(Malformation::ForbiddenByte { position: error.valid_up_to() })
        }
    }
}

/// The accepted form of an explicit session id, in words.
pub fn explicit_rule() -> &'static str {
    EXPLICIT_RULE
}

impl fmt::Display for Malformation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformation::Empty => {
                write!(f, "explicit session id: expected {EXPLICIT_RULE}, found an empty value")
            }
            Malformation::TooLong { length } => write!(
                f,
                "explicit session id: expected at most {EXPLICIT_MAX_LEN} characters, \
                 found {length}"
            ),
            Malformation::ForbiddenByte { position } => write!(
                f,
                "explicit session id: expected only A-Z a-z 0-9 . _ : -, found another byte \
                 at offset {position}"
            ),
        }
    }
}

impl std::error::Error for Malformation {}

fn is_allowed(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b':' | b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_header_table() {
        let max = "a".repeat(128);
        let over = "a".repeat(129);
        let cases: Vec<(&str, &[u8], Explicit<'_>)> = vec![
            (
                "oktsec example",
                b"my-custom-session-id-123",
                Explicit::Valid("my-custom-session-id-123"),
            ),
            (
                "our own id",
                b"00112233445566778899aabbccddeeff",
                Explicit::Valid("00112233445566778899aabbccddeeff"),
            ),
            ("every allowed class", b"AZaz09._:-", Explicit::Valid("AZaz09._:-")),
            ("one character", b"x", Explicit::Valid("x")),
            ("128 characters", max.as_bytes(), Explicit::Valid(&max)),
            (
                "129 characters",
                over.as_bytes(),
                Explicit::Malformed(Malformation::TooLong { length: 129 }),
            ),
            ("empty", b"", Explicit::Malformed(Malformation::Empty)),
            ("space", b"a b", Explicit::Malformed(Malformation::ForbiddenByte { position: 1 })),
            ("slash", b"a/b", Explicit::Malformed(Malformation::ForbiddenByte { position: 1 })),
            (
                "newline injection",
                b"ok\r\nx-evil: 1",
                Explicit::Malformed(Malformation::ForbiddenByte { position: 2 }),
            ),
            (
                "non-ascii",
                "caf\u{e9}".as_bytes(),
                Explicit::Malformed(Malformation::ForbiddenByte { position: 3 }),
            ),
            (
                "invalid utf-8",
                &[b'a', 0xff],
                Explicit::Malformed(Malformation::ForbiddenByte { position: 1 }),
            ),
            ("nul", b"\0", Explicit::Malformed(Malformation::ForbiddenByte { position: 0 })),
        ];
        for (name, value, want) in cases {
            assert_eq!(parse_explicit(value), want, "case {name}");
        }
    }

    #[test]
    fn every_malformation_formats_without_the_value() {
        let cases = [
            (
                Malformation::Empty,
                "explicit session id: expected 1 to 128 characters of A-Z a-z 0-9 . _ : -, \
                 found an empty value",
            ),
            (
                Malformation::TooLong { length: 129 },
                "explicit session id: expected at most 128 characters, found 129",
            ),
            (
                Malformation::ForbiddenByte { position: 4 },
                "explicit session id: expected only A-Z a-z 0-9 . _ : -, found another byte \
                 at offset 4",
            ),
        ];
        for (malformation, want) in cases {
            assert_eq!(malformation.to_string(), want);
        }
        assert_eq!(explicit_rule(), EXPLICIT_RULE);
    }
}
