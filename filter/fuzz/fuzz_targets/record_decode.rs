//! Fuzzes the sidecar's reading of an audit record: protobuf decoding
//! (prost) of `warrant.audit.v1.AuditRecord`, then the chain entry built
//! from it and the entry's hash.
//!
//! Properties, beyond "never panics":
//! - a decoded record re-encodes to bytes that decode to an equal record,
//!   and re-encoding is stable (the second encoding equals the first);
//! - the entry of a record and of its re-decoded copy are equal and hash
//!   equally, and the hash depends on the chain position;
//! - the entry's JSON columns (findings, delegation path, notes) read back
//!   to the record's lists, and the quarantine digest is empty exactly when
//!   the record carries no quarantined content;
//! - read as an `AuditBatch` (what `AppendBatch` carries), the filter's
//!   framing of the records' encodings (`warrant_wire::encode_batch`) is
//!   prost's encoding of the batch.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use warrant_audit::chain::{content_sha256, Entry};
use warrant_wire::{encode_batch, AuditBatch, AuditRecord};

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = AuditBatch::decode(data) {
        let encoded: Vec<Vec<u8>> = batch.records.iter().map(Message::encode_to_vec).collect();
        let framed = encode_batch(encoded.iter().map(Vec::as_slice));
        assert_eq!(framed, batch.encode_to_vec(), "encode_batch differs from prost");
    }
    let Ok(record) = AuditRecord::decode(data) else { return };
    let bytes = record.encode_to_vec();
    let again = AuditRecord::decode(bytes.as_slice()).expect("a re-encoded record decodes");
    assert_eq!(again, record, "decode(encode(record)) differs");
    assert_eq!(again.encode_to_vec(), bytes, "re-encoding is not stable");

    let entry = Entry::from_record(&record, 7);
    assert_eq!(Entry::from_record(&again, 7), entry);
    let hash = entry.hash(&[1; 16], 1, &[0; 32]);
    assert_eq!(Entry::from_record(&again, 7).hash(&[1; 16], 1, &[0; 32]), hash);
    assert_ne!(entry.hash(&[1; 16], 2, &[0; 32]), hash, "seq not covered");

    let findings: serde_json::Value =
        serde_json::from_str(&entry.findings).expect("findings column is JSON");
    let findings = findings.as_array().expect("findings column is an array");
    assert_eq!(findings.len(), record.findings.len());
    for (column, finding) in findings.iter().zip(&record.findings) {
        assert_eq!(column["rule_id"], finding.rule_id.as_str());
        assert_eq!(column["match"], finding.r#match.as_str());
        assert_eq!(column["line"], finding.line);
    }
    let list = |text: &str| -> Vec<String> { serde_json::from_str(text).expect("list column") };
    assert_eq!(list(&entry.delegation_path), record.delegation_path);
    assert_eq!(list(&entry.notes), record.notes);
    assert_eq!(entry.quarantine_sha256.is_empty(), record.quarantine_content.is_empty());
    assert_eq!(entry.quarantine_sha256, content_sha256(&record.quarantine_content));
    assert_eq!(entry.http_status, i64::from(record.http_status));
    assert!(entry.latency_us >= 0);
});
