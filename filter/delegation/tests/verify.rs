//! Every refusal of parsing and verification, each asserting its exact
//! variant, plus the hardened checks oktsec lacks and hostile headers.

mod common;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE};
use base64::Engine as _;
use common::*;
use ed25519_dalek::{Signer as _, Verifier as _};
use warrant_delegation::keys::fingerprint;
use warrant_delegation::{
    encode_json, Chain, DelegationError, ErrorKind, Limits, NameDefect, TimeError, Token,
    VerifyPolicy,
};

fn parse(header: &[u8]) -> Result<Chain, DelegationError> {
    Chain::parse(header, &Limits::default())
}

fn two_hop() -> Vec<Token> {
    build(&[hop("human", "agent-a"), hop("agent-a", "test-agent")])
}

// --- header decoding ---

#[test]
fn url_safe_base64_is_refused() {
    // A chain whose JSON encodes to '+' or '/' in standard base64; force one
    // by a scope entry of '>' characters ("Pj4+" in base64).
    let tokens = build(&[hop("human", "test-agent").scope(&["target-agent", ">>>>>>"])]);
    let json = encode_json(&tokens);
    let url_safe = URL_SAFE.encode(&json);
    assert_ne!(url_safe, STANDARD.encode(&json), "test needs a '+' or '/' in the header");
    assert!(matches!(parse(url_safe.as_bytes()), Err(DelegationError::InvalidBase64 { .. })));
}

#[test]
fn unpadded_base64_is_refused() {
    let json = encode_json(&two_hop());
    let unpadded = STANDARD_NO_PAD.encode(&json);
    assert_ne!(json.len() % 3, 0, "test needs padding");
    assert!(matches!(parse(unpadded.as_bytes()), Err(DelegationError::InvalidBase64 { .. })));
}

#[test]
fn garbage_json_is_refused_with_its_position() {
    let cases: [(&str, &[u8]); 7] = [
        ("not json", b"hello"),
        ("object, not array", br#"{"delegator":"human"}"#),
        ("null", b"null"),
        ("array of numbers", b"[1,2]"),
        ("truncated", br#"[{"delegator":"hu"#),
        ("trailing bytes", br#"[]x"#),
        ("string depth", br#"[{"chain_depth":"0"}]"#),
    ];
    for (name, json) in cases {
        let got = parse(STANDARD.encode(json).as_bytes());
        assert!(
            matches!(got, Err(DelegationError::InvalidJson { line: 1, .. })),
            "{name}: {got:?}"
        );
    }
}

#[test]
fn repeated_keys_are_refused() {
    let json = br#"[{"delegator":"human","delegator":"mallory"}]"#;
    assert!(matches!(
        parse(STANDARD.encode(json).as_bytes()),
        Err(DelegationError::InvalidJson { .. })
    ));
}

#[test]
fn empty_array_is_refused() {
    assert_eq!(parse(STANDARD.encode("[]").as_bytes()), Err(DelegationError::EmptyChain));
}

#[test]
fn header_of_64_kib_is_refused_before_decoding() {
    let header = "A".repeat(64 * 1024);
    assert_eq!(
        parse(header.as_bytes()),
        Err(DelegationError::HeaderTooLarge { bytes: 65536, cap: 8192 })
    );
}

#[test]
fn thousand_token_chain_is_refused_by_size_then_by_count() {
    let one = build(&[hop("human", "test-agent")]).remove(0);
    let tokens = vec![one; 1000];
    let header = header(&tokens);
    assert!(matches!(parse(header.as_bytes()), Err(DelegationError::HeaderTooLarge { .. })));
    let roomy = Limits { max_header_bytes: usize::MAX, max_tokens: 16 };
    assert_eq!(
        Chain::parse(header.as_bytes(), &roomy),
        Err(DelegationError::TooManyTokens { cap: 16 })
    );
}

#[test]
fn token_count_cap_is_exact() {
    let one = build(&[hop("human", "test-agent")]).remove(0);
    let limits = Limits { max_header_bytes: usize::MAX, max_tokens: 3 };
    assert_eq!(Chain::parse(header(&vec![one.clone(); 3]).as_bytes(), &limits).unwrap().len(), 3);
    assert_eq!(
        Chain::parse(header(&vec![one; 4]).as_bytes(), &limits),
        Err(DelegationError::TooManyTokens { cap: 3 })
    );
}

#[test]
fn bad_names_are_refused_at_parse() {
    let cases: [(&str, &str, &str, &str, NameDefect); 5] = [
        ("delegator", "delegator", "", "delegator", NameDefect::Empty),
        ("delegate", "delegate", r#""a\nb""#, "delegate", NameDefect::ControlCharacter),
        ("scope comma", "scope", r#"["a,b"]"#, "scope", NameDefect::Comma),
        ("scope empty entry", "scope", r#"[""]"#, "scope", NameDefect::Empty),
        ("tools", "allowed_tools", r#"["Read,Write"]"#, "allowed_tools", NameDefect::Comma),
    ];
    for (name, key, value, field, defect) in cases {
        let mut object = serde_json::json!({
            "delegator": "human",
            "delegate": "x",
            "issued_at": "2026-03-24T12:00:00Z",
            "expires_at": "2026-03-24T13:00:00Z",
        });
        let value = if value.is_empty() {
            serde_json::json!("")
        } else {
            serde_json::from_str(value).unwrap()
        };
        object[key] = value;
        let json = serde_json::to_string(&[object]).unwrap();
        assert_eq!(
            parse(STANDARD.encode(json).as_bytes()),
            Err(DelegationError::InvalidName { hop: 0, field, defect }),
            "{name}"
        );
    }
}

#[test]
fn bad_or_missing_times_are_refused_at_parse() {
    let cases = [
        (
            r#""issued_at":"yesterday","expires_at":"2026-03-24T13:00:00Z""#,
            "issued_at",
            TimeError::Syntax,
        ),
        (r#""issued_at":"2026-03-24T12:00:00Z""#, "expires_at", TimeError::Syntax),
        (
            r#""issued_at":"2026-02-30T12:00:00Z","expires_at":"x""#,
            "issued_at",
            TimeError::FieldRange,
        ),
    ];
    for (times, field, reason) in cases {
        let json = format!(r#"[{{"delegator":"human","delegate":"x",{times}}}]"#);
        assert_eq!(
            parse(STANDARD.encode(json).as_bytes()),
            Err(DelegationError::InvalidTime { hop: 0, field, reason }),
            "{times}"
        );
    }
}

// --- verification, in plan order ---

#[test]
fn recipient_outside_the_last_scope_is_refused_before_signatures() {
    let mut tokens = build(&[hop("human", "test-agent").scope(&["other-agent"])]);
    tokens[0].signature = "garbage".into();
    assert_eq!(
        verify(&tokens),
        Err(DelegationError::NotInScope { recipient: "target-agent".into() })
    );
}

#[test]
fn chain_depth_must_equal_the_position() {
    let mut tokens = two_hop();
    tokens[1].chain_depth = 5;
    tokens[1].max_depth = 5;
    resign(&mut tokens[1], &key("agent-a"));
    assert_eq!(verify(&tokens), Err(DelegationError::WrongChainDepth { hop: 1, found: 5 }));
}

#[test]
fn max_depth_may_not_grow_along_the_chain() {
    let tokens =
        build(&[hop("human", "agent-a").max_depth(1), hop("agent-a", "test-agent").max_depth(9)]);
    assert_eq!(
        verify(&tokens),
        Err(DelegationError::MaxDepthGrown { hop: 1, max_depth: 9, parent_max_depth: 1 })
    );
}

#[test]
fn stored_token_id_must_match_the_payload() {
    let mut tokens = build(&[hop("human", "test-agent")]);
    let computed = tokens[0].token_id.clone();
    tokens[0].token_id = "f".repeat(64);
    assert_eq!(
        verify(&tokens),
        Err(DelegationError::TokenIdMismatch { hop: 0, stored: "f".repeat(64), computed })
    );
}

#[test]
fn absent_token_id_is_fine_on_an_unreferenced_token() {
    // oktsec's hand-built test tokens carry no token_id.
    let mut tokens = two_hop();
    tokens[1].token_id.clear();
    assert!(verify(&tokens).is_ok());
}

#[test]
fn blanked_token_id_of_a_linked_hop_is_a_clean_refusal() {
    // oktsec panics here (reference §2.4 f): hop 0's id is unsigned, so a
    // captured header can be edited to blank it.
    let mut tokens = two_hop();
    tokens[0].token_id.clear();
    assert_eq!(verify(&tokens), Err(DelegationError::MissingTokenId { hop: 0 }));
    let mut tokens = two_hop();
    tokens[0].token_id = "abc".into();
    assert!(matches!(verify(&tokens), Err(DelegationError::TokenIdMismatch { hop: 0, .. })));
}

#[test]
fn root_must_not_name_a_parent() {
    let mut tokens = build(&[hop("human", "test-agent")]);
    tokens[0].parent_token_id = "a".repeat(64);
    resign(&mut tokens[0], &key("human"));
    assert_eq!(
        verify(&tokens),
        Err(DelegationError::BrokenLink { hop: 0, expected: String::new(), found: "a".repeat(64) })
    );
}

#[test]
fn delegator_must_be_the_previous_delegate() {
    let mut tokens = build(&[hop("human", "agent-a"), hop("agent-b", "test-agent")]);
    tokens[1].parent_token_id = tokens[0].token_id.clone();
    resign(&mut tokens[1], &key("agent-b"));
    assert_eq!(
        verify(&tokens),
        Err(DelegationError::Discontinuous {
            hop: 1,
            expected: "agent-a".into(),
            found: "agent-b".into()
        })
    );
}

#[test]
fn scope_may_not_add_recipients() {
    let tokens = build(&[
        hop("human", "agent-a").scope(&["target-agent"]),
        hop("agent-a", "test-agent").scope(&["target-agent", "bank"]),
    ]);
    assert_eq!(
        verify(&tokens),
        Err(DelegationError::ScopeExceeded { hop: 1, entry: "bank".into() })
    );
}

#[test]
fn expiry_is_inclusive_to_the_nanosecond() {
    let tokens = build(&[hop("human", "test-agent").valid(-60, 0)]);
    assert!(verify(&tokens).is_ok(), "now == expires_at still passes");
    let policy = VerifyPolicy::new();
    let chain = Chain::parse(header(&tokens).as_bytes(), policy.limits()).unwrap();
    let just_after = warrant_delegation::Timestamp::from_unix(NOW_SECS, 1).unwrap();
    assert_eq!(
        chain.verify(&cast(), &policy, "target-agent", just_after),
        Err(DelegationError::Expired { hop: 0, expired_at: now(), now: just_after })
    );
}

#[test]
fn issued_at_more_than_30_seconds_ahead_is_refused() {
    assert!(verify(&build(&[hop("human", "test-agent").valid(30, 3600)])).is_ok());
    assert_eq!(
        verify(&build(&[hop("human", "test-agent").valid(31, 3600)])),
        Err(DelegationError::IssuedInFuture {
            hop: 0,
            issued_at: at(31),
            now: now(),
            skew_secs: 30
        })
    );
}

#[test]
fn revoked_delegator_by_name_or_fingerprint_is_refused() {
    let tokens = two_hop();
    let print = fingerprint(&key("agent-a").verifying_key());
    for entry in ["agent-a".to_string(), print.clone(), print.to_ascii_uppercase()] {
        let policy = VerifyPolicy::new().revoke(&entry);
        assert_eq!(
            verify_with(&header(&tokens), &cast(), &policy, "target-agent"),
            Err(DelegationError::Revoked {
                hop: 1,
                delegator: "agent-a".into(),
                fingerprint: print.clone()
            }),
            "{entry}"
        );
    }
}

#[test]
fn missing_signature_is_an_encoding_error() {
    let mut tokens = build(&[hop("human", "test-agent")]);
    tokens[0].signature.clear();
    assert_eq!(verify(&tokens), Err(DelegationError::InvalidSignatureEncoding { hop: 0 }));
}

#[test]
fn legacy_five_field_signature_is_refused() {
    let mut tokens = build(&[hop("human", "test-agent")]);
    let t = &tokens[0];
    let legacy = format!(
        "{}\n{}\n{}\n{}\n{}",
        t.delegator,
        t.delegate,
        t.scope.join(","),
        t.issued_at.to_rfc3339_seconds(),
        t.expires_at.to_rfc3339_seconds()
    );
    tokens[0].signature = STANDARD.encode(key("human").sign(legacy.as_bytes()).to_bytes());
    assert_eq!(
        verify(&tokens),
        Err(DelegationError::BadSignature { hop: 0, delegator: "human".into() })
    );
}

#[test]
fn non_canonical_signature_scalar_is_refused() {
    let mut tokens = build(&[hop("human", "test-agent")]);
    let mut sig = STANDARD.decode(&tokens[0].signature).unwrap();
    sig[63] |= 0xe0; // S >= 2^253 > L: not a reduced scalar
    tokens[0].signature = STANDARD.encode(&sig);
    assert_eq!(
        verify(&tokens),
        Err(DelegationError::BadSignature { hop: 0, delegator: "human".into() })
    );
}

#[test]
fn small_order_key_cannot_sign_everything() {
    // With the identity point as public key, R = identity and S = 0 satisfy
    // the plain (cofactorless) equation for every message. `verify_strict`
    // refuses weak keys, so a misconfigured key cannot admit any chain.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let weak = ed25519_dalek::VerifyingKey::from_bytes(&identity).unwrap();
    let mut forged = [0u8; 64];
    forged[0] = 1;
    let signature = ed25519_dalek::Signature::from_bytes(&forged);
    assert!(weak.verify(b"anything", &signature).is_ok(), "premise: plain verify accepts");

    let mut tokens = build(&[hop("human", "test-agent")]);
    tokens[0].signature = STANDARD.encode(forged);
    let mut keys = warrant_delegation::keys::KeyStore::new();
    keys.insert("human", weak);
    assert_eq!(
        verify_with(&header(&tokens), &keys, &VerifyPolicy::new(), "target-agent"),
        Err(DelegationError::BadSignature { hop: 0, delegator: "human".into() })
    );
}

#[test]
fn structural_fault_is_found_before_any_signature() {
    // Hop 0 has a bad signature, hop 1 a wrong depth: the cheap check wins.
    let mut tokens = two_hop();
    resign(&mut tokens[0], &key("mallory"));
    tokens[1].parent_token_id = tokens[0].token_id.clone();
    tokens[1].chain_depth = 7;
    tokens[1].max_depth = 7;
    assert!(matches!(verify(&tokens), Err(DelegationError::WrongChainDepth { hop: 1, .. })));
}

#[test]
fn verified_chain_reports_every_fact() {
    let tokens = build(&[
        hop("human", "agent-a").scope(&["*"]).valid(-10, 7200),
        hop("agent-a", "test-agent").scope(&["target-agent"]).valid(0, 600).tools(&["Read"]),
    ]);
    let h = header(&tokens);
    let chain = verify_with(&h, &cast(), &VerifyPolicy::new(), "target-agent").unwrap();
    assert_eq!(chain.root(), "human");
    assert_eq!(chain.parent(), "agent-a");
    assert_eq!(chain.delegate(), "test-agent");
    assert_eq!(chain.depth(), 2);
    assert_eq!(chain.expires_at(), at(600));
    assert_eq!(chain.scope(), &strings(&["target-agent"])[..]);
    assert_eq!(chain.tools(), Some(&strings(&["Read"])[..]));
    assert_eq!(chain.summary(), "human -> test-agent");
    assert_eq!(chain.to_string(), "human -> agent-a -> test-agent");
    let ids: Vec<String> = tokens.iter().map(|t| t.token_id.clone()).collect();
    assert_eq!(chain.token_ids(), &ids[..]);
    let json = STANDARD.decode(&h).unwrap();
    assert_eq!(chain.chain_hash(), hex::encode(<sha2::Sha256 as sha2::Digest>::digest(json)));
    let text = chain.format_text();
    assert!(text.contains("chain:      human -> agent-a -> test-agent (2 tokens)"), "{text}");
    assert!(text.contains("tools:      Read"), "{text}");
}

#[test]
fn ignoring_the_recipient_is_visible_in_the_result() {
    let tokens = build(&[hop("human", "test-agent").scope(&["other"])]);
    let policy = VerifyPolicy::new();
    let chain = Chain::parse(header(&tokens).as_bytes(), policy.limits()).unwrap();
    let verified = chain.verify_ignoring_recipient(&cast(), &policy, now()).unwrap();
    assert_eq!(verified.recipient(), None);
}

#[test]
fn refusal_kinds_follow_the_fault() {
    let cases = [
        (parse(b"!!!!").unwrap_err(), ErrorKind::Malformed),
        (verify(&build(&[hop("stranger", "test-agent")])).unwrap_err(), ErrorKind::Forged),
        (
            verify(&build(&[hop("human", "test-agent").valid(-9, -1)])).unwrap_err(),
            ErrorKind::Expired,
        ),
        (verify(&build(&[hop("human", "t").scope(&["x"])])).unwrap_err(), ErrorKind::Policy),
    ];
    for (error, kind) in cases {
        assert_eq!(error.kind(), kind, "{error}");
    }
}
