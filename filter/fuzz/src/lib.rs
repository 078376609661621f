//! Fixtures shared by the fuzz targets and the corpus generator: a fixed
//! clock, deterministic keys, the plugin configuration of the `pipeline`
//! target, the text format its inputs use, and a JSON reader that keeps
//! duplicate keys (to compare what Warrant read with everything a body
//! says). Seeds minted by `make_corpus` with these verify inside the
//! targets.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};
use warrant_core::request::{decode_header_map, encode_header_map, HeaderNames, RequestHead};
use warrant_delegation::keys::KeyStore;
use warrant_delegation::Timestamp;

/// The agents whose keys the fuzz key store holds.
pub const AGENTS: [&str; 4] = ["human", "agent-a", "agent-b", "agent-c"];

/// The fixed "now" of the fuzz targets, in Unix seconds: 2026-03-24T12:00:00Z.
pub const NOW_SECS: i64 = 1_774_353_600;

/// The fixed "now" of the fuzz targets: 2026-03-24T12:00:00Z.
pub fn now() -> Timestamp {
    Timestamp::from_unix_secs(NOW_SECS)
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

/// An oktsec envelope from `from`, signed with [`key`]`(from)` at
/// `timestamp` (RFC 3339).
pub fn signed_envelope(from: &str, to: &str, content: &str, timestamp: &str) -> serde_json::Value {
    let payload = format!("{from}\n{to}\n{content}\n{timestamp}");
    let signature = STANDARD.encode(key(from).sign(payload.as_bytes()).to_bytes());
    serde_json::json!({
        "from": from, "to": to, "content": content,
        "timestamp": timestamp, "signature": signature,
    })
}

/// The plugin configuration of the `pipeline` target: the keys of `alice`
/// and `human` (the root of seeded delegation chains), an mTLS peer for
/// `alice`, one suspended agent, everything else default (envelope, mTLS
/// and header sources; an authenticated sender required; the built-in
/// rules).
pub fn pipeline_config() -> String {
    let public = |name: &str| STANDARD.encode(key(name).verifying_key().as_bytes());
    serde_json::json!({
        "node": "fuzz",
        "keys": {"alice": public("alice"), "human": public("human")},
        "identity": {"spiffe": {"spiffe://fuzz/alice": "alice"}},
        "agents": {"mallory": {"suspended": true}},
    })
    .to_string()
}

/// The header names of the default configuration.
pub const HEADER_NAMES: HeaderNames<'static> = HeaderNames {
    identity: "x-warrant-agent",
    delegation: "x-oktsec-delegation",
    session: "x-oktsec-session",
};

/// Reads a `pipeline` input: header lines `name: value` (names lowercased,
/// pseudo-headers such as `:method` included; `peer-san: URI` sets an mTLS
/// peer SAN instead of a header), an empty line, then the body bytes. Input
/// without an empty line is all headers. Values may hold any bytes but a
/// newline (HTTP's `obs-text` included); lines with no `:` after their
/// first byte are skipped. The headers reach the [`RequestHead`] the way
/// the filter reads them: written in the host's header-map serialisation
/// and read back with [`decode_header_map`], which must give the same pairs.
pub fn parse_request(data: &[u8]) -> (RequestHead, &[u8]) {
    let (head_bytes, body) = match find(data, b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &data[data.len()..]),
    };
    let mut headers: Vec<(Vec<u8>, &[u8])> = Vec::new();
    let mut sans = Vec::new();
    for line in head_bytes.split(|b| *b == b'\n') {
        // Skip the first byte when looking for the separator, so that
        // pseudo-headers (`:path: /x`) split after their name.
        let Some(at) = line.get(1..).and_then(|rest| rest.iter().position(|b| *b == b':')) else {
            continue;
        };
        let at = at + 1;
        let name = line[..at].trim_ascii().to_ascii_lowercase();
        let value = line[at + 1..].trim_ascii_start();
        if name == b"peer-san" {
            sans.push(String::from_utf8_lossy(value).into_owned());
        } else {
            headers.push((name, value));
        }
    }
    let serialized = encode_header_map(&headers);
    let pairs = decode_header_map(&serialized).expect("an encoded header map decodes");
    assert!(
        pairs.iter().map(|(n, v)| (*n, *v)).eq(headers.iter().map(|(n, v)| (n.as_slice(), *v))),
        "the header map round trip changed the headers"
    );
    let mut head = RequestHead::from_headers(pairs, &HEADER_NAMES);
    head.peer_uri_sans = sans;
    head.received_at_unix_nanos = NOW_SECS * 1_000_000_000;
    (head, body)
}

/// Writes a `pipeline` input (the inverse of [`parse_request`]).
pub fn format_request(headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\n").as_bytes());
    }
    out.push(b'\n');
    out.extend_from_slice(body);
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The members of a JSON object in document order, duplicates kept; `None`
/// when `bytes` is not a JSON object (or is too deep for serde_json).
pub fn object_entries(bytes: &[u8]) -> Option<Vec<(String, serde_json::Value)>> {
    let entries: Entries = serde_json::from_slice(bytes).ok()?;
    Some(entries.0)
}

/// The members of a JSON object, duplicates kept (see [`object_entries`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Entries(pub Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Entries, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    entries.push((key, map.next_value_seed(Plain)?));
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// Every value `key` has in `entries` (more than one when duplicated).
pub fn values_of<'a>(
    entries: &'a [(String, serde_json::Value)],
    key: &str,
) -> Vec<&'a serde_json::Value> {
    entries.iter().filter(|(k, _)| k == key).map(|(_, v)| v).collect()
}

/// JSON text read into a `serde_json::Value` by this crate's own visitor
/// (later duplicates win, as in serde_json's `Value`). Use it, not
/// `serde_json::from_slice::<Value>`, as the targets' reference reader: with
/// serde_json's `raw_value` feature on (axum turns it on in this build,
/// through warrant-audit), `Value` refuses an object whose key is serde_json's
/// private raw-value token, though the text is valid JSON and the filter,
/// built without that feature, reads it.
///
/// # Errors
/// The text is not JSON (or nests deeper than serde_json's limit).
pub fn plain_json(bytes: &[u8]) -> Result<serde_json::Value, serde_json::Error> {
    use serde::de::DeserializeSeed as _;
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = Plain.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// Builds a `serde_json::Value` from any JSON (see [`plain_json`]).
struct Plain;

impl<'de> serde::de::DeserializeSeed<'de> for Plain {
    type Value = serde_json::Value;
    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Plain {
    type Value = serde_json::Value;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok(b.into())
    }
    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        Ok(n.into())
    }
    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(n.into())
    }
    fn visit_f64<E>(self, f: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(s.into())
    }
    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(s.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Plain)? {
            items.push(item);
        }
        Ok(serde_json::Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(Plain)?;
            members.insert(key, value);
        }
        Ok(serde_json::Value::Object(members))
    }
}
