//! The audit chain's entry format and its hash: the one place that defines
//! which bytes an entry hash covers.
//!
//! # Entry hash, format version 2
//!
//! ```text
//! entry_hash = SHA-256(
//!     "warrant-audit-entry" 0x00      domain tag, 20 bytes
//!     u32 big-endian  format version  (2)
//!     16 bytes        chain id        (random, fixed when the chain is created)
//!     u64 big-endian  seq             (1, 2, 3, ... assigned by the sidecar)
//!     32 bytes        prev_hash       (the previous entry's hash; 32 zero bytes for seq 1)
//!     fields, in the order of [`Entry::FIELDS`]:
//!         text:    u32 big-endian byte length, then the UTF-8 bytes
//!         integer: i64 big-endian (8 bytes)
//! )
//! ```
//!
//! Every stored column of an entry is a field, so editing any byte of any
//! column changes the hash. Length prefixes make the encoding unambiguous
//! (`"ab" + "c"` and `"a" + "bc"` hash differently). Lists (findings, the
//! delegation path, notes) are stored and hashed as canonical JSON text:
//! the exact bytes in the column are the bytes hashed. The chain id keeps
//! entries from being spliced between two chains; `seq` and `prev_hash` fix
//! the order, which the sidecar assigns (not the clients' clocks).
//!
//! Version 2 added two fields at the end: `quarantine_sha256` (the hex
//! SHA-256 of a quarantined request's content, which itself is kept outside
//! the chain in the `quarantine` table, so that it can be shown to a
//! reviewer without being part of every hash) and `refers_to` (the message
//! id of the entry a quarantine decision is about). Version 1 chains are
//! not read by this build.
//!
//! # Example
//!
//! An entry with every text field empty and every integer 0, in chain
//! `00..00` at seq 1, hashes the 20-byte tag, `00 00 00 02`, 16 zero bytes,
//! `00 .. 00 01`, 32 zero bytes, then 28 fields: `00 00 00 00` for each
//! empty text and eight zero bytes for each integer.

use sha2::{Digest, Sha256};
use warrant_wire::AuditRecord;

/// The version of the hash format above.
pub const FORMAT_VERSION: u32 = 2;
/// The domain tag that starts every hashed entry.
pub const DOMAIN_TAG: &[u8] = b"warrant-audit-entry\0";

/// One stored entry: the columns of the `entries` table but `seq`,
/// `prev_hash` and `entry_hash`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// The filter's message id (unique).
    pub message_id: String,
    /// When the filter received the request (Unix ns, the filter's clock).
    pub received_at_ns: i64,
    /// When the sidecar appended the entry (Unix ns, the sidecar's clock).
    pub appended_at_ns: i64,
    /// The Envoy (hop) that decided.
    pub node: String,
    /// Sender.
    pub from_agent: String,
    /// Recipient.
    pub to_agent: String,
    /// HTTP method.
    pub method: String,
    /// `:authority`.
    pub authority: String,
    /// `:path`.
    pub path: String,
    /// Hex SHA-256 of the request body.
    pub body_sha256: String,
    /// Status (`delivered`, `blocked`, ...).
    pub status: String,
    /// Decision code.
    pub decision: String,
    /// Rejection reason.
    pub reason: String,
    /// HTTP status answered (0 when forwarded).
    pub http_status: i64,
    /// Decision latency in microseconds.
    pub latency_us: i64,
    /// How the sender was identified.
    pub identity_source: String,
    /// verified, unsigned or invalid.
    pub signature: String,
    /// Fingerprint of the key that verified the sender.
    pub key_fingerprint: String,
    /// Session id.
    pub session_id: String,
    /// Delegation chain hash.
    pub delegation_chain_hash: String,
    /// Delegation root.
    pub delegation_root: String,
    /// Last delegator.
    pub delegation_parent: String,
    /// Token count.
    pub delegation_depth: i64,
    /// Names root..delegate, JSON array text.
    pub delegation_path: String,
    /// Findings, JSON array text of `{rule_id,name,severity,category,match,line}`.
    pub findings: String,
    /// Notes, JSON array text.
    pub notes: String,
    /// Lowercase hex SHA-256 of the quarantined content kept in the
    /// `quarantine` table; empty when the record carried none.
    pub quarantine_sha256: String,
    /// For a quarantine decision (`quarantine_approved`,
    /// `quarantine_rejected`): the message id of the quarantined entry it
    /// decides. Empty for every other entry.
    pub refers_to: String,
}

/// A field's value, for hashing and storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValue<'a> {
    /// A text column.
    Text(&'a str),
    /// An integer column.
    Integer(i64),
}

impl Entry {
    /// Column names in hash order. The `entries` table has these columns
    /// plus `seq`, `prev_hash` and `entry_hash`.
    pub const FIELDS: [&'static str; 28] = [
        "message_id",
        "received_at_ns",
        "appended_at_ns",
        "node",
        "from_agent",
        "to_agent",
        "method",
        "authority",
        "path",
        "body_sha256",
        "status",
        "decision",
        "reason",
        "http_status",
        "latency_us",
        "identity_source",
        "signature",
        "key_fingerprint",
        "session_id",
        "delegation_chain_hash",
        "delegation_root",
        "delegation_parent",
        "delegation_depth",
        "delegation_path",
        "findings",
        "notes",
        "quarantine_sha256",
        "refers_to",
    ];

    /// Which of [`Entry::FIELDS`] are text (the others are integers).
    pub const TEXT: [bool; 28] = {
        let mut text = [true; 28];
        text[1] = false; // received_at_ns
        text[2] = false; // appended_at_ns
        text[13] = false; // http_status
        text[14] = false; // latency_us
        text[22] = false; // delegation_depth
        text
    };

    /// Builds the entry for a record received now.
    pub fn from_record(record: &AuditRecord, appended_at_ns: i64) -> Entry {
        let findings: Vec<_> = record
            .findings
            .iter()
            .map(|f| {
                serde_json::json!({
                    "rule_id": f.rule_id, "name": f.name, "severity": f.severity,
                    "category": f.category, "match": f.r#match, "line": f.line,
                })
            })
            .collect();
        Entry {
            message_id: record.message_id.clone(),
            received_at_ns: record.received_at_unix_nanos,
            appended_at_ns,
            node: record.node.clone(),
            from_agent: record.from.clone(),
            to_agent: record.to.clone(),
            method: record.method.clone(),
            authority: record.authority.clone(),
            path: record.path.clone(),
            body_sha256: record.body_sha256.clone(),
            status: record.status.clone(),
            decision: record.decision.clone(),
            reason: record.reason.clone(),
            http_status: i64::from(record.http_status),
            latency_us: i64::try_from(record.latency_micros).unwrap_or(i64::MAX),
            identity_source: record.identity_source.clone(),
            signature: record.signature.clone(),
            key_fingerprint: record.key_fingerprint.clone(),
            session_id: record.session_id.clone(),
            delegation_chain_hash: record.delegation_chain_hash.clone(),
            delegation_root: record.delegation_root.clone(),
            delegation_parent: record.delegation_parent.clone(),
            delegation_depth: i64::from(record.delegation_depth),
            delegation_path: json_text(&record.delegation_path),
            findings: serde_json::Value::Array(findings).to_string(),
            notes: json_text(&record.notes),
            quarantine_sha256: content_sha256(&record.quarantine_content),
            refers_to: String::new(),
        }
    }

    /// The values in [`Entry::FIELDS`] order.
    pub fn values(&self) -> [FieldValue<'_>; 28] {
        use FieldValue::{Integer as I, Text as T};
        [
            T(&self.message_id),
            I(self.received_at_ns),
            I(self.appended_at_ns),
            T(&self.node),
            T(&self.from_agent),
            T(&self.to_agent),
            T(&self.method),
            T(&self.authority),
            T(&self.path),
            T(&self.body_sha256),
            T(&self.status),
            T(&self.decision),
            T(&self.reason),
            I(self.http_status),
            I(self.latency_us),
            T(&self.identity_source),
            T(&self.signature),
            T(&self.key_fingerprint),
            T(&self.session_id),
            T(&self.delegation_chain_hash),
            T(&self.delegation_root),
            T(&self.delegation_parent),
            I(self.delegation_depth),
            T(&self.delegation_path),
            T(&self.findings),
            T(&self.notes),
            T(&self.quarantine_sha256),
            T(&self.refers_to),
        ]
    }

    /// The entry hash (see the module doc).
    pub fn hash(&self, chain_id: &[u8; 16], seq: u64, prev_hash: &[u8; 32]) -> [u8; 32] {
        hash_fields(chain_id, seq, prev_hash, self.values())
    }
}

/// The entry hash of the module doc over field values given in
/// [`Entry::FIELDS`] order. [`Entry::hash`] calls it; the verifier calls it
/// on values borrowed from a row, without building an [`Entry`].
pub fn hash_fields<'a>(
    chain_id: &[u8; 16],
    seq: u64,
    prev_hash: &[u8; 32],
    values: impl IntoIterator<Item = FieldValue<'a>>,
) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let fields = values.into_iter().map(HashedField::from);
    hashed_bytes(chain_id, seq, prev_hash, fields, |bytes| hasher.update(bytes));
    hasher.finalize().into()
}

/// A field as [`hashed_bytes`] takes it: a [`FieldValue`] whose text may not
/// have been checked to be UTF-8 yet (the verifier checks it on another
/// thread than the one that copies it out of the row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashedField<'a> {
    /// A text column's bytes.
    Text(&'a [u8]),
    /// An integer column.
    Integer(i64),
}

impl<'a> From<FieldValue<'a>> for HashedField<'a> {
    fn from(value: FieldValue<'a>) -> Self {
        match value {
            FieldValue::Text(text) => HashedField::Text(text.as_bytes()),
            FieldValue::Integer(n) => HashedField::Integer(n),
        }
    }
}

/// Hands the bytes an entry hash covers (the module doc), in order, to
/// `sink`: [`hash_fields`] feeds them to SHA-256; the verifier copies them
/// out of a row into a buffer that another thread hashes.
pub fn hashed_bytes<'a>(
    chain_id: &[u8; 16],
    seq: u64,
    prev_hash: &[u8; 32],
    fields: impl IntoIterator<Item = HashedField<'a>>,
    mut sink: impl FnMut(&[u8]),
) {
    sink(DOMAIN_TAG);
    sink(&FORMAT_VERSION.to_be_bytes());
    sink(chain_id);
    sink(&seq.to_be_bytes());
    sink(prev_hash);
    for field in fields {
        match field {
            HashedField::Text(text) => {
                // A column is at most SQLite's 1 GB limit, far below u32::MAX.
                let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
                sink(&len.to_be_bytes());
                sink(text);
            }
            HashedField::Integer(n) => sink(&n.to_be_bytes()),
        }
    }
}

/// The text fields in the bytes [`hashed_bytes`] gave for an entry with
/// the columns of [`Entry::FIELDS`], as (index in [`Entry::FIELDS`], bytes),
/// in order. Stops early on bytes that are not such an entry.
pub fn hashed_texts(hashed: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    const HEADER: usize = 20 + 4 + 16 + 8 + 32;
    let texts = Entry::TEXT;
    let mut at = HEADER;
    (0..Entry::FIELDS.len())
        .map_while(move |i| {
            if !texts[i] {
                at += 8;
                return Some(None);
            }
            let len = hashed.get(at..at + 4)?;
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            let text = hashed.get(at + 4..at + 4 + len)?;
            at += 4 + len;
            Some(Some((i, text)))
        })
        .flatten()
}

/// The `quarantine_sha256` of some content: lowercase hex SHA-256, or the
/// empty string for no content.
pub fn content_sha256(content: &[u8]) -> String {
    if content.is_empty() {
        String::new()
    } else {
        hex::encode(Sha256::digest(content))
    }
}

fn json_text(items: &[String]) -> String {
    serde_json::Value::from(items.to_vec()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_covers_every_field_position_and_chain() {
        let entry = Entry {
            message_id: "m".into(),
            from_agent: "ab".into(),
            to_agent: "c".into(),
            ..Default::default()
        };
        let base = entry.hash(&[0; 16], 1, &[0; 32]);
        let shifted = Entry { from_agent: "a".into(), to_agent: "bc".into(), ..entry.clone() };
        assert_ne!(base, shifted.hash(&[0; 16], 1, &[0; 32]), "length prefixes must disambiguate");
        assert_ne!(base, entry.hash(&[1; 16], 1, &[0; 32]), "chain id is covered");
        assert_ne!(base, entry.hash(&[0; 16], 2, &[0; 32]), "seq is covered");
        assert_ne!(base, entry.hash(&[0; 16], 1, &[1; 32]), "prev hash is covered");
        assert_eq!(base, entry.clone().hash(&[0; 16], 1, &[0; 32]), "deterministic");
    }

    #[test]
    fn text_kinds_and_hashed_texts_follow_the_fields() {
        let entry = Entry { node: "n".into(), refers_to: "r".into(), ..Default::default() };
        let kinds = entry.values().map(|v| matches!(v, FieldValue::Text(_)));
        assert_eq!(kinds, Entry::TEXT);
        let mut bytes = Vec::new();
        let fields = entry.values().map(HashedField::from);
        hashed_bytes(&[3; 16], 9, &[4; 32], fields, |b| bytes.extend_from_slice(b));
        let texts: Vec<(usize, &[u8])> = hashed_texts(&bytes).collect();
        assert_eq!(texts.len(), 23);
        assert_eq!(texts[1], (3, b"n".as_slice()));
        assert_eq!(texts[22], (27, b"r".as_slice()));
        assert_eq!(hashed_texts(&bytes[..bytes.len() - 1]).count(), 22, "cut short");
    }

    #[test]
    fn every_field_changes_the_hash() {
        let entry = Entry::default();
        let base = entry.hash(&[0; 16], 1, &[0; 32]);
        for i in 0..Entry::FIELDS.len() {
            let mut changed = entry.clone();
            match i {
                0 => changed.message_id.push('x'),
                1 => changed.received_at_ns += 1,
                2 => changed.appended_at_ns += 1,
                3 => changed.node.push('x'),
                4 => changed.from_agent.push('x'),
                5 => changed.to_agent.push('x'),
                6 => changed.method.push('x'),
                7 => changed.authority.push('x'),
                8 => changed.path.push('x'),
                9 => changed.body_sha256.push('x'),
                10 => changed.status.push('x'),
                11 => changed.decision.push('x'),
                12 => changed.reason.push('x'),
                13 => changed.http_status += 1,
                14 => changed.latency_us += 1,
                15 => changed.identity_source.push('x'),
                16 => changed.signature.push('x'),
                17 => changed.key_fingerprint.push('x'),
                18 => changed.session_id.push('x'),
                19 => changed.delegation_chain_hash.push('x'),
                20 => changed.delegation_root.push('x'),
                21 => changed.delegation_parent.push('x'),
                22 => changed.delegation_depth += 1,
                23 => changed.delegation_path.push('x'),
                24 => changed.findings.push('x'),
                25 => changed.notes.push('x'),
                26 => changed.quarantine_sha256.push('x'),
                27 => changed.refers_to.push('x'),
                _ => unreachable!(),
            }
            assert_ne!(changed.hash(&[0; 16], 1, &[0; 32]), base, "field {}", Entry::FIELDS[i]);
        }
    }
}
