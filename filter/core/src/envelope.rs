//! The oktsec message envelope: a JSON body
//! `{from, to, content, signature?, timestamp?, intent?, metadata?}`.
//!
//! Signature: standard padded base64 of an Ed25519 signature by the sender's
//! key over the UTF-8 bytes of `from + "\n" + to + "\n" + content + "\n" +
//! timestamp`, where `timestamp` is the exact string sent (RFC 3339). A
//! signed envelope must carry its timestamp, and the timestamp must be at
//! most `envelope_max_age_secs` old and `envelope_max_future_secs` ahead.
//!
//! Parsing is strict where oktsec was lax: unknown or duplicate fields and
//! non-string values are refused (oktsec matched names case-insensitively
//! and ignored the rest), because a lax parser lets two components read
//! two different messages out of one body.

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use curve25519_dalek::edwards::CompressedEdwardsY;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::Deserialize;

/// A parsed (not yet verified) envelope.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Claimed sender.
    pub from: String,
    /// Recipient.
    pub to: String,
    /// The message text; this is what gets scanned.
    pub content: String,
    /// Base64 Ed25519 signature, when signed.
    #[serde(default)]
    pub signature: Option<String>,
    /// RFC 3339 time the sender signed at.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// Declared intent (recorded, not enforced).
    #[serde(default)]
    pub intent: Option<String>,
    /// Free-form string metadata (accepted, not used).
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The body is JSON but not a valid envelope (400).
    Malformed(String),
    /// The timestamp is missing from a signed envelope, unparseable, or
    /// outside the accepted window (400).
    BadTimestamp(String),
    /// The signature does not verify, or the sender has no key, or the key
    /// is revoked (403 `identity_rejected`).
    Rejected(String),
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::Malformed(why) => write!(f, "invalid envelope: {why}"),
            EnvelopeError::BadTimestamp(why) => write!(f, "invalid envelope timestamp: {why}"),
            EnvelopeError::Rejected(why) => write!(f, "envelope signature rejected: {why}"),
        }
    }
}

impl std::error::Error for EnvelopeError {}

impl Envelope {
    /// Whether a JSON object looks like an envelope: it has a `from`, `to`
    /// or `content` member and is not JSON-RPC.
    pub fn is_envelope_shaped(object: &serde_json::Map<String, serde_json::Value>) -> bool {
        !object.contains_key("jsonrpc")
            && (object.contains_key("from")
                || object.contains_key("to")
                || object.contains_key("content"))
    }

    /// Parses an envelope from a JSON value already known to be
    /// envelope-shaped.
    ///
    /// # Errors
    /// [`EnvelopeError::Malformed`] naming the field at fault.
    pub fn from_value(value: serde_json::Value) -> Result<Envelope, EnvelopeError> {
        let envelope: Envelope = serde_path_to_error::deserialize(value).map_err(|e| {
            EnvelopeError::Malformed(format!("field `{}`: {}", e.path(), e.inner()))
        })?;
        if envelope.from.is_empty() {
            return Err(EnvelopeError::Malformed("field `from`: must not be empty".into()));
        }
        if envelope.to.is_empty() {
            return Err(EnvelopeError::Malformed("field `to`: must not be empty".into()));
        }
        Ok(envelope)
    }

    /// The exact bytes the sender signs: `from`, `to`, `content` and the
    /// timestamp, one per line.
    pub fn signed_payload(&self, timestamp: &str) -> Vec<u8> {
        self.signed_parts(timestamp).concat()
    }

    /// [`Envelope::signed_payload`] in pieces, so that verifying it does
    /// not copy the content (up to `max_body_bytes`) into one buffer.
    fn signed_parts<'a>(&'a self, timestamp: &'a str) -> [&'a [u8]; 7] {
        let (from, to, content) =
            (self.from.as_bytes(), self.to.as_bytes(), self.content.as_bytes());
        [from, b"\n", to, b"\n", content, b"\n", timestamp.as_bytes()]
    }

    /// Verifies the signature against `key` and the timestamp against `now`.
    ///
    /// # Errors
    /// [`EnvelopeError::BadTimestamp`] for a missing or out-of-window
    /// timestamp; [`EnvelopeError::Rejected`] for a signature that does not
    /// verify (with `verify_strict`, which also refuses malleable signatures
    /// and weak keys).
    pub fn verify(
        &self,
        key: &VerifyingKey,
        now_unix_secs: i64,
        max_age_secs: u32,
        max_future_secs: u32,
    ) -> Result<(), EnvelopeError> {
        let Some(signature) = &self.signature else {
            return Err(EnvelopeError::Rejected("envelope is not signed".into()));
        };
        // 1. The timestamp is part of the payload: without it nothing can
        //    be checked (oktsec filled in its own time, so such messages
        //    could never verify).
        let Some(timestamp) = &self.timestamp else {
            return Err(EnvelopeError::BadTimestamp("a signed envelope needs `timestamp`".into()));
        };
        let at = parse_rfc3339(timestamp).ok_or_else(|| {
            EnvelopeError::BadTimestamp(format!("`timestamp` is not RFC 3339: {timestamp:?}"))
        })?;

        // 2. The window: old messages and messages from the future are
        //    refused before any signature work.
        let age = now_unix_secs.saturating_sub(at);
        if age > i64::from(max_age_secs) {
            return Err(EnvelopeError::BadTimestamp(format!(
                "`timestamp` is {age} s old, more than {max_age_secs} s"
            )));
        }
        if -age > i64::from(max_future_secs) {
            return Err(EnvelopeError::BadTimestamp(format!(
                "`timestamp` is {} s in the future, more than {max_future_secs} s",
                -age
            )));
        }

        // 3. The signature itself.
        let raw = STANDARD
            .decode(signature)
            .map_err(|_| EnvelopeError::Rejected("signature is not standard base64".into()))?;
        let signature = Signature::from_slice(&raw).map_err(|_| {
            EnvelopeError::Rejected(format!("signature has {} bytes, expected 64", raw.len()))
        })?;
        if verify_strict_parts(key, &self.signed_parts(timestamp), &signature) {
            Ok(())
        } else {
            Err(EnvelopeError::Rejected(format!("signature does not verify for {:?}", self.from)))
        }
    }
}

/// `verify_strict` over a message given in pieces: a signed 1 MiB content
/// is hashed where it lies instead of being copied into one buffer first
/// (the VM's linear memory never shrinks, so such a copy's peak would stay).
/// The same checks as `verify_strict`: a canonical `S` (in
/// `verify_stream`), neither the key nor `R` of small order, then `R`
/// recomputed over the pieces.
fn verify_strict_parts(key: &VerifyingKey, parts: &[&[u8]], signature: &Signature) -> bool {
    if key.is_weak() {
        return false;
    }
    match CompressedEdwardsY(*signature.r_bytes()).decompress() {
        Some(r) if !r.is_small_order() => {}
        _ => return false,
    }
    let Ok(mut stream) = key.verify_stream(signature) else { return false };
    for part in parts {
        stream.update(part);
    }
    stream.finalize_and_verify().is_ok()
}

/// Parses an RFC 3339 date-time (`2026-03-24T12:00:00Z`, with optional
/// fractional seconds and a `Z` or `±hh:mm` offset) to Unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    if !matches!(b.get(10), Some(b'T' | b't'))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        let s = text.get(from..to)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = text.get(19..)?;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = fraction.get(digits..)?;
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes().get(3) != Some(&b':') {
                return None;
            }
            let h: i64 = rest.get(1..3)?.parse().ok()?;
            let m: i64 = rest.get(4..6)?.parse().ok()?;
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 3600 + m * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Formats Unix seconds as RFC 3339 UTC with second precision.
pub fn format_rfc3339(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

// Howard Hinnant's civil-calendar algorithms (public domain descriptions).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    const NOW: i64 = 1_790_000_000;

    fn signed(key: &SigningKey, content: &str, timestamp: &str) -> Envelope {
        let mut envelope = Envelope {
            from: "alice".into(),
            to: "bob".into(),
            content: content.into(),
            signature: None,
            timestamp: Some(timestamp.into()),
            intent: None,
            metadata: None,
        };
        let signature = key.sign(&envelope.signed_payload(timestamp));
        envelope.signature = Some(STANDARD.encode(signature.to_bytes()));
        envelope
    }

    #[test]
    fn rfc3339_round_trips_and_accepts_offsets_and_fractions() {
        assert_eq!(parse_rfc3339(&format_rfc3339(NOW)), Some(NOW));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00.123+01:00"), Some(0));
        assert_eq!(parse_rfc3339("2026-03-24T12:00:00Z"), Some(1_774_353_600));
        for bad in [
            "",
            "2026-03-24",
            "2026-13-01T00:00:00Z",
            "2026-03-24T12:00:00",
            "2026-03-24T12:00:00.Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn good_signature_verifies_and_tampering_does_not() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let ts = format_rfc3339(NOW);
        let envelope = signed(&key, "hello", &ts);
        assert_eq!(envelope.verify(&key.verifying_key(), NOW, 300, 30), Ok(()));
        let mut tampered = envelope.clone();
        tampered.content.push('!');
        assert!(matches!(
            tampered.verify(&key.verifying_key(), NOW, 300, 30),
            Err(EnvelopeError::Rejected(_))
        ));
        let other = SigningKey::from_bytes(&[2; 32]).verifying_key();
        assert!(matches!(envelope.verify(&other, NOW, 300, 30), Err(EnvelopeError::Rejected(_))));
    }

    /// The pieces verify exactly when their concatenation does under
    /// `verify_strict`: for the signed message, and for every single-bit
    /// change to the message, to `R` and to `S`.
    #[test]
    fn verifying_in_pieces_agrees_with_verify_strict() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let public = key.verifying_key();
        let parts: [&[u8]; 4] = [b"alice", b"\n", b"bob\ncontent \xe2\x9c\x93", b""];
        let message = parts.concat();
        let good = key.sign(&message).to_bytes();
        let mut cases = vec![(message.clone(), good)];
        for bit in 0..message.len() * 8 {
            let mut changed = message.clone();
            changed[bit / 8] ^= 1 << (bit % 8);
            cases.push((changed, good));
        }
        for bit in 0..512 {
            let mut changed = good;
            changed[bit / 8] ^= 1 << (bit % 8);
            cases.push((message.clone(), changed));
        }
        for (message, signature) in cases {
            let signature = Signature::from_bytes(&signature);
            let strict = public.verify_strict(&message, &signature).is_ok();
            // The same bytes cut at every point agree too.
            for cut in [0, 1, message.len() / 2, message.len()] {
                let (head, tail) = message.split_at(cut);
                assert_eq!(verify_strict_parts(&public, &[head, tail], &signature), strict);
            }
        }
    }

    /// What the stream verifier alone would accept and `verify_strict`
    /// refuses: the identity as the key and as `R` with `S = 0` "signs"
    /// every message. The pieces refuse it too.
    #[test]
    fn verifying_in_pieces_refuses_small_order_points() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = VerifyingKey::from_bytes(&identity).unwrap();
        let mut forged = [0u8; 64];
        forged[0] = 1;
        let forged = Signature::from_bytes(&forged);
        let message: &[u8] = b"anything";
        let mut stream = weak.verify_stream(&forged).unwrap();
        stream.update(message);
        assert!(stream.finalize_and_verify().is_ok(), "the unchecked forgery verifies");
        assert!(weak.verify_strict(message, &forged).is_err());
        assert!(!verify_strict_parts(&weak, &[message], &forged));
        // A small-order `R` under a sound key is refused before hashing.
        let sound = SigningKey::from_bytes(&[7; 32]).verifying_key();
        assert!(!verify_strict_parts(&sound, &[message], &forged));
    }

    #[test]
    fn timestamp_window_is_enforced() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let old = signed(&key, "x", &format_rfc3339(NOW - 301));
        let future = signed(&key, "x", &format_rfc3339(NOW + 31));
        let edge = signed(&key, "x", &format_rfc3339(NOW - 300));
        let public = key.verifying_key();
        assert!(matches!(old.verify(&public, NOW, 300, 30), Err(EnvelopeError::BadTimestamp(_))));
        assert!(matches!(
            future.verify(&public, NOW, 300, 30),
            Err(EnvelopeError::BadTimestamp(_))
        ));
        assert_eq!(edge.verify(&public, NOW, 300, 30), Ok(()));
    }

    #[test]
    fn strict_parsing_names_the_field() {
        let parse = |json: &str| Envelope::from_value(serde_json::from_str(json).unwrap());
        let err = parse(r#"{"from":"a","to":"b","content":5}"#).unwrap_err();
        assert!(err.to_string().contains("field `content`"), "{err}");
        let err = parse(r#"{"from":"a","to":"b","content":"x","extra":1}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `extra`"), "{err}");
        let err = parse(r#"{"from":"","to":"b","content":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("field `from`"), "{err}");
        assert!(parse(r#"{"from":"a","to":"b","content":"x","metadata":{"k":"v"}}"#).is_ok());
    }

    #[test]
    fn signed_envelope_without_timestamp_is_refused() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let mut envelope = signed(&key, "x", &format_rfc3339(NOW));
        envelope.timestamp = None;
        assert!(matches!(
            envelope.verify(&key.verifying_key(), NOW, 300, 30),
            Err(EnvelopeError::BadTimestamp(_))
        ));
    }
}
