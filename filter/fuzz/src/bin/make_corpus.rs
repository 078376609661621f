//! Writes the seed corpus of the `delegation_header` target into
//! `corpus/delegation_header/` (run from `filter/fuzz`). Seeds are minted at
//! the targets' fixed clock with the targets' keys, so the valid ones verify.

use std::fs;
use std::time::Duration;

use warrant_delegation::{
    encode_header, encode_json, mint, Chain, MintRequest, Timestamp, Token,
};
use warrant_fuzz::{key, keys, now, AGENTS};

fn chain(hops: usize, tools: &[&str], ttl: Duration) -> Vec<Token> {
    chain_at(hops, tools, ttl, now())
}

fn chain_at(hops: usize, tools: &[&str], ttl: Duration, at: Timestamp) -> Vec<Token> {
    let mut tokens: Vec<Token> = Vec::new();
    for i in 0..hops {
        let parent = if tokens.is_empty() {
            None
        } else {
            let header = encode_header(&tokens);
            let parsed = Chain::parse(header.as_bytes(), &Default::default()).unwrap();
            Some(parsed.verify_ignoring_recipient(&keys(), &Default::default(), at).unwrap())
        };
        let request = MintRequest {
            delegator: AGENTS[i],
            delegate: AGENTS[i + 1],
            scope: vec!["target-agent".into(), "other-agent".into()],
            tools: tools.iter().map(|t| t.to_string()).collect(),
            ttl,
            max_depth: 3,
            parent: parent.as_ref(),
        };
        tokens.push(mint(&key(AGENTS[i]), &request, at).unwrap());
    }
    tokens
}

fn main() {
    let dir = "corpus/delegation_header";
    fs::create_dir_all(dir).unwrap();
    let hour = Duration::from_secs(3600);
    let write = |name: &str, bytes: &[u8]| fs::write(format!("{dir}/{name}"), bytes).unwrap();

    write("valid-1-hop", encode_header(&chain(1, &[], hour)).as_bytes());
    write("valid-3-hop-tools", encode_header(&chain(3, &["Read", "Bash"], hour)).as_bytes());
    write("valid-3-hop", encode_header(&chain(3, &[], hour)).as_bytes());
    let two_hours_ago = now().saturating_add_secs(-7200);
    write("expired", encode_header(&chain_at(1, &[], hour, two_hours_ago)).as_bytes());

    let mut blanked = chain(2, &[], hour);
    blanked[0].token_id.clear();
    write("blanked-token-id-2-hop", encode_header(&blanked).as_bytes());

    // An unknown key holding "???>>>" makes '/' and '+' appear in the base64.
    let json = String::from_utf8(encode_json(&chain(2, &["Read"], hour))).unwrap();
    let json = json.replacen('{', r#"{"x":"???>>>","#, 1);
    let url_safe = encode_header_text(&json).replace('+', "-").replace('/', "_");
    assert!(url_safe.contains(['-', '_']));
    write("url-safe", url_safe.as_bytes());
    write("empty-array", b"W10=");
    write("garbage", b"not base64 at all");

    let json = String::from_utf8(encode_json(&chain(1, &[], hour))).unwrap();
    let offsets = json.replace("T12:00:00Z", "T14:00:00+02:00").replacen('{', r#"{"x":null,"#, 1);
    write("offsets-unknown-key", encode_header_text(&offsets).as_bytes());

    write("mint-request", b"!a|agent-b|3600|3|target-agent|Read,Bash");
}

fn encode_header_text(json: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(json)
}
