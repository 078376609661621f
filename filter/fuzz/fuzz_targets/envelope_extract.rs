//! Fuzzes body extraction with the bytes as a request body, read as JSON
//! (`application/json`, envelopes on and off) and as `text/plain`, and
//! verifies every envelope that parses against a fixed key.
//!
//! Properties, beyond "never panics":
//! - JSON: the body is refused when serde_json cannot read it, or has a
//!   duplicate key or nesting past the cap (stricter than serde_json), or,
//!   for an envelope-shaped object, when it is not a valid envelope;
//! - an extracted envelope's `from`, `to` and `content` are the JSON
//!   values, and so is every duplicate of those members: a body that says
//!   two things must not be read as one of them;
//! - the only part scanned for an envelope is its `content`, as a message;
//! - with envelopes off, nothing is read as an envelope;
//! - an envelope verifies only if it is signed, timestamped within the
//!   window and the signature checks out with plain Ed25519 too;
//! - `text/plain` is read as JSON when it parses as a JSON object or
//!   array; otherwise it is never refused and scans the body as lossy
//!   UTF-8.

#![no_main]

use ed25519_dalek::Signature;
use libfuzzer_sys::fuzz_target;
use warrant_core::envelope::{parse_rfc3339, Envelope, EnvelopeError};
use warrant_core::extract::{extract, BodyKind, ExtractError, Part};
use warrant_core::request::RequestHead;
use warrant_fuzz::{key, object_entries, plain_json, values_of, NOW_SECS};
use warrant_rules::ContentKind;

fuzz_target!(|data: &[u8]| {
    json(data);
    text(data);
});

fn head(content_type: &str) -> RequestHead {
    RequestHead { content_type: content_type.into(), ..Default::default() }
}

fn json(data: &[u8]) {
    let got = extract(&head("application/json"), data, true);
    let parsed = plain_json(data);
    let extracted = match got {
        Err(ExtractError::InvalidJson(why)) => {
            // Stricter than serde_json: duplicate keys and deep nesting.
            let stricter = why.contains("duplicate key") || why.contains("nesting deeper");
            assert!(parsed.is_err() || stricter, "serde_json reads what extract refused: {why}");
            return;
        }
        Err(ExtractError::Envelope(EnvelopeError::Malformed(_))) => {
            let value = parsed.expect("a malformed envelope is still JSON");
            let object = value.as_object().expect("only an object can be an envelope");
            assert!(Envelope::is_envelope_shaped(object));
            return;
        }
        Err(e @ (ExtractError::InvalidToolCall(_) | ExtractError::Envelope(_))) => {
            assert!(parsed.is_ok(), "{e}");
            return;
        }
        Err(e @ ExtractError::InvalidBatch(_)) => {
            assert!(parsed.is_ok_and(|v| v.is_array()), "only an array is a batch: {e}");
            return;
        }
        Ok(extracted) => extracted,
    };
    if data.is_empty() {
        assert_eq!(extracted.kind, BodyKind::Empty);
        return;
    }
    assert!(parsed.is_ok(), "extract read JSON that serde_json refuses");

    // Envelopes off: the same body is never an envelope.
    let off = extract(&head("application/json"), data, false);
    assert!(!matches!(off, Ok(ref e) if matches!(e.kind, BodyKind::Envelope(_))));

    let BodyKind::Envelope(envelope) = &extracted.kind else { return };
    let entries = object_entries(data).expect("an envelope is a JSON object");
    for (field, want) in
        [("from", &envelope.from), ("to", &envelope.to), ("content", &envelope.content)]
    {
        let values = values_of(&entries, field);
        assert!(!values.is_empty(), "envelope without `{field}`");
        for value in values {
            assert_eq!(value.as_str(), Some(want.as_str()), "`{field}` read differently");
        }
    }
    assert!(extracted.parts.is_empty(), "an envelope's content is not copied into parts");
    let parts = extracted.content_parts();
    assert_eq!(parts.len(), 1);
    assert_eq!((parts[0].kind, parts[0].text), (ContentKind::Message, envelope.content.as_str()));

    let public = key("alice").verifying_key();
    if envelope.verify(&public, NOW_SECS, 300, 30).is_ok() {
        let timestamp = envelope.timestamp.as_deref().expect("verified without a timestamp");
        let at = parse_rfc3339(timestamp).expect("verified with a bad timestamp");
        assert!((NOW_SECS - 300..=NOW_SECS + 30).contains(&at), "verified outside the window");
        let raw = base64_decode(envelope.signature.as_deref().expect("verified unsigned"));
        let signature = Signature::from_slice(&raw).expect("verified a short signature");
        public
            .verify_strict(&envelope.signed_payload(timestamp), &signature)
            .expect("verified, yet the signature does not verify");
    }
}

fn text(data: &[u8]) {
    // Text that parses as a JSON object or array is read as JSON (and may
    // be refused as such); any other text is never refused.
    let json = plain_json(data).is_ok_and(|v| v.is_object() || v.is_array());
    let extracted = match extract(&head("text/plain"), data, true) {
        Ok(extracted) => extracted,
        Err(e) => {
            assert!(json, "text refused: {e}");
            return;
        }
    };
    if data.is_empty() {
        assert_eq!(extracted.kind, BodyKind::Empty);
        return;
    }
    if extracted.kind != BodyKind::Text {
        assert!(json, "text read as {:?}", extracted.kind);
        return;
    }
    let want = String::from_utf8_lossy(data).into_owned();
    assert_eq!(extracted.parts, vec![Part { kind: ContentKind::Body, text: want }]);
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).expect("verified non-base64")
}
