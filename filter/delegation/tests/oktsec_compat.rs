//! Interoperability with oktsec v0.13 and its 21 identity-package unit
//! scenarios (reference `oktsec-v0.13.md` §2.9), restated in Warrant's terms.
//! Where Warrant is deliberately stricter the test says so.

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::*;
use ed25519_dalek::Signer as _;
use sha2::{Digest, Sha256};
use warrant_delegation::{
    first_scope_escalation, format_path, intersect_tools, scope_allows, Chain, DelegationError,
    Limits, VerifyPolicy,
};

/// Builds a one-token header exactly as oktsec's Go code lays it out: the
/// payload as a literal, the JSON as a literal in Go's key order with
/// `RFC3339Nano` times, HTML-escaped `&`, and std padded base64.
fn go_style_header(delegate: &str, issued: &str, expires: &str) -> String {
    let payload = format!(
        "human\n{delegate}\ntarget-agent,a&b-agent\n2026-03-24T12:00:00Z\n\
         2026-03-24T13:00:00Z\n\n0\n3\nBash,Read"
    );
    let signature = STANDARD.encode(key("human").sign(payload.as_bytes()).to_bytes());
    let token_id = hex::encode(Sha256::digest(payload.as_bytes()));
    let json = format!(
        r#"[{{"delegator":"human","delegate":"{delegate}","scope":["target-agent","a\u0026b-agent"],"issued_at":"{issued}","expires_at":"{expires}","signature":"{signature}","token_id":"{token_id}","chain_depth":0,"max_depth":3,"allowed_tools":["Bash","Read"]}}]"#
    );
    STANDARD.encode(json)
}

#[test]
fn token_laid_out_like_oktsec_verifies_unchanged() {
    let header = go_style_header(
        "test-agent",
        "2026-03-24T12:00:00.123456789Z",
        "2026-03-24T13:00:00.123456789Z",
    );
    let chain = verify_with(&header, &cast(), &VerifyPolicy::new(), "a&b-agent").unwrap();
    assert_eq!((chain.root(), chain.delegate(), chain.depth()), ("human", "test-agent", 1));
    assert_eq!(chain.tools(), Some(&strings(&["Bash", "Read"])[..]));
    let decoded = STANDARD.decode(&header).unwrap();
    assert_eq!(chain.chain_hash(), hex::encode(Sha256::digest(decoded)));
}

#[test]
fn offsets_and_fractions_do_not_change_the_signed_payload() {
    // Same instants, written with offsets: the payload uses UTC seconds.
    let header =
        go_style_header("test-agent", "2026-03-24T14:00:00.5+02:00", "2026-03-24T08:00:00-05:00");
    assert!(verify_with(&header, &cast(), &VerifyPolicy::new(), "target-agent").is_ok());
}

#[test]
fn unknown_json_keys_are_ignored_like_go() {
    let mut tokens = build(&[hop("human", "test-agent")]);
    tokens[0].allowed_tools = vec![];
    let json = String::from_utf8(warrant_delegation::encode_json(&tokens)).unwrap();
    let json = json.replacen('{', r#"{"future_field":{"x":[1,2]},"#, 1);
    let header = STANDARD.encode(json);
    assert!(verify_with(&header, &cast(), &VerifyPolicy::new(), "target-agent").is_ok());
}

// --- the 21 identity-package scenarios ---

#[test]
fn s01_single_hop_verifies() {
    let chain = verify(&build(&[hop("human", "test-agent")])).unwrap();
    assert_eq!((chain.root(), chain.delegate(), chain.parent()), ("human", "test-agent", "human"));
    assert_eq!(chain.depth(), 1);
}

#[test]
fn s02_wildcard_scope_allows_any_recipient() {
    let tokens = build(&[hop("human", "test-agent").scope(&["*"])]);
    let chain = verify_with(&header(&tokens), &cast(), &VerifyPolicy::new(), "anyone").unwrap();
    assert_eq!(chain.recipient(), Some("anyone"));
}

#[test]
fn s03_expired_token_is_refused() {
    let tokens = build(&[hop("human", "test-agent").valid(-7200, -3600)]);
    assert_eq!(
        verify(&tokens),
        Err(DelegationError::Expired { hop: 0, expired_at: at(-3600), now: now() })
    );
}

#[test]
fn s04_token_signed_with_the_wrong_key_is_refused() {
    let mut tokens = build(&[hop("human", "test-agent")]);
    resign(&mut tokens[0], &key("mallory"));
    assert_eq!(
        verify(&tokens),
        Err(DelegationError::BadSignature { hop: 0, delegator: "human".into() })
    );
}

#[test]
fn s05_null_token_is_refused_as_malformed() {
    // oktsec: VerifyDelegation(nil). Here the nearest input is `[null]`.
    let header = STANDARD.encode("[null]");
    let error = Chain::parse(header.as_bytes(), &Limits::default()).unwrap_err();
    assert!(matches!(error, DelegationError::InvalidJson { .. }), "{error:?}");
}

#[test]
fn s06_tampered_scope_breaks_the_signature() {
    let mut tokens = build(&[hop("human", "test-agent")]);
    tokens[0].scope = strings(&["*"]);
    tokens[0].token_id = tokens[0].computed_token_id(); // the id is unsigned
    assert_eq!(
        verify(&tokens),
        Err(DelegationError::BadSignature { hop: 0, delegator: "human".into() })
    );
}

#[test]
fn s07_scope_allows_exact_names_or_star_and_empty_allows_nothing() {
    let cases: [(&[&str], &str, bool); 6] = [
        (&["target-agent"], "target-agent", true),
        (&["target-agent"], "Target-Agent", false),
        (&["other"], "target-agent", false),
        (&["other", "*"], "target-agent", true),
        (&["target"], "target-agent", false),
        (&[], "target-agent", false),
    ];
    for (scope, recipient, want) in cases {
        assert_eq!(scope_allows(&strings(scope), recipient), want, "{scope:?} {recipient}");
    }
}

#[test]
fn s08_two_hop_chain_reports_root_delegate_tools_and_hash() {
    let tokens = build(&[
        hop("human", "agent-a").tools(&["Bash", "Read"]),
        hop("agent-a", "agent-b").tools(&["Bash", "Read"]),
    ]);
    let chain = verify(&tokens).unwrap();
    assert_eq!((chain.root(), chain.delegate(), chain.parent()), ("human", "agent-b", "agent-a"));
    assert_eq!(chain.depth(), 2);
    assert_eq!(chain.tools(), Some(&strings(&["Bash", "Read"])[..]));
    assert_eq!(chain.chain_hash().len(), 64);
    assert_eq!(chain.path(), &strings(&["human", "agent-a", "agent-b"])[..]);
}

#[test]
fn s09_three_hop_chain_narrows_tools() {
    let tokens = build(&[
        hop("human", "agent-a").tools(&["Bash", "Read", "Write"]),
        hop("agent-a", "agent-b").tools(&["Bash", "Read"]),
        hop("agent-b", "agent-c").tools(&["Read"]),
    ]);
    let chain = verify(&tokens).unwrap();
    assert_eq!(chain.tools(), Some(&strings(&["Read"])[..]));
    assert_eq!(chain.depth(), 3);
    assert_eq!(chain.summary(), "human -> ... -> agent-c (3 hops)");
}

#[test]
fn s10_empty_chain_is_refused() {
    let header = STANDARD.encode("[]");
    assert_eq!(
        Chain::parse(header.as_bytes(), &Limits::default()),
        Err(DelegationError::EmptyChain)
    );
}

#[test]
fn s11_broken_linkage_is_refused() {
    let mut tokens = build(&[hop("human", "agent-a"), hop("agent-a", "test-agent")]);
    tokens[1].parent_token_id = "0".repeat(64);
    resign(&mut tokens[1], &key("agent-a"));
    assert_eq!(
        verify(&tokens),
        Err(DelegationError::BrokenLink {
            hop: 1,
            expected: tokens[0].token_id.clone(),
            found: "0".repeat(64),
        })
    );
}

#[test]
fn s12_scope_escalation_to_star_is_refused() {
    let tokens = build(&[
        hop("human", "agent-a").scope(&["target-x"]),
        hop("agent-a", "test-agent").scope(&["*"]),
    ]);
    assert_eq!(verify(&tokens), Err(DelegationError::ScopeExceeded { hop: 1, entry: "*".into() }));
}

#[test]
fn s13_max_depth_one_accepts_two_tokens() {
    let tokens =
        build(&[hop("human", "agent-a").max_depth(1), hop("agent-a", "test-agent").max_depth(1)]);
    assert_eq!(verify(&tokens).unwrap().depth(), 2);
}

#[test]
fn s14_max_depth_one_refuses_three_tokens() {
    let tokens = build(&[
        hop("human", "agent-a").max_depth(1),
        hop("agent-a", "agent-b").max_depth(1),
        hop("agent-b", "test-agent").max_depth(1),
    ]);
    assert_eq!(
        verify(&tokens),
        Err(DelegationError::MaxDepthExceeded { hop: 2, chain_depth: 2, max_depth: 1 })
    );
}

#[test]
fn s15_impersonated_hop_is_refused() {
    // agent-b signs a hop that claims agent-a as its delegator.
    let mut tokens = build(&[hop("human", "agent-a"), hop("agent-a", "test-agent")]);
    resign(&mut tokens[1], &key("agent-b"));
    assert_eq!(
        verify(&tokens),
        Err(DelegationError::BadSignature { hop: 1, delegator: "agent-a".into() })
    );
}

#[test]
fn s16_expired_middle_hop_is_refused() {
    let tokens = build(&[
        hop("human", "agent-a"),
        hop("agent-a", "agent-b").valid(-7200, -60),
        hop("agent-b", "test-agent"),
    ]);
    assert_eq!(
        verify(&tokens),
        Err(DelegationError::Expired { hop: 1, expired_at: at(-60), now: now() })
    );
}

#[test]
fn s17_unknown_delegator_is_refused() {
    let tokens = build(&[hop("stranger", "test-agent")]);
    assert_eq!(
        verify(&tokens),
        Err(DelegationError::UnknownDelegator { hop: 0, delegator: "stranger".into() })
    );
}

#[test]
fn s18_format_path_lists_every_name() {
    let tokens = build(&[hop("human", "agent-a"), hop("agent-a", "agent-b")]);
    assert_eq!(format_path(&tokens), "human -> agent-a -> agent-b");
    assert_eq!(verify(&tokens).unwrap().path_text(), "human -> agent-a -> agent-b");
}

#[test]
fn s19_format_path_of_nothing_is_empty() {
    assert_eq!(format_path(&[]), "");
}

#[test]
fn s20_scope_subset_table() {
    type Case<'a> = (&'a str, &'a [&'a str], &'a [&'a str], Option<&'a str>);
    let cases: [Case<'_>; 7] = [
        ("parent star accepts anything", &["*", "x"], &["*"], None),
        ("child star under named parent escalates", &["*"], &["a", "b"], Some("*")),
        ("subset", &["a"], &["a", "b"], None),
        ("equal", &["a", "b"], &["b", "a"], None),
        ("extra entry escalates", &["a", "c"], &["a", "b"], Some("c")),
        ("empty child is a subset", &[], &["a"], None),
        ("non-empty child of empty parent escalates", &["a"], &[], Some("a")),
    ];
    for (name, child, parent, want) in cases {
        let child = strings(child);
        let got = first_scope_escalation(&child, &strings(parent)).map(String::as_str);
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn s21_intersect_tools_table() {
    let some = |items: &[&str]| Some(strings(items));
    type Case<'a> = (&'a str, Option<Vec<String>>, &'a [&'a str], Option<Vec<String>>);
    let cases: [Case<'_>; 6] = [
        ("all, then none listed", None, &[], None),
        ("all, then a list", None, &["Read", "Bash"], some(&["Read", "Bash"])),
        ("a list, then none listed", some(&["Read"]), &[], some(&["Read"])),
        (
            "overlap keeps running order",
            some(&["Bash", "Read"]),
            &["Read", "Bash"],
            some(&["Bash", "Read"]),
        ),
        ("narrowing", some(&["Bash", "Read"]), &["Read", "Write"], some(&["Read"])),
        // oktsec returns "all tools" here; Warrant keeps it at none.
        ("disjoint gives none, not all", some(&["Bash"]), &["Read"], some(&[])),
    ];
    for (name, running, allowed, want) in cases {
        assert_eq!(intersect_tools(running, &strings(allowed)), want, "{name}");
    }
}

#[test]
fn s22_token_id_is_deterministic_and_covers_every_field() {
    let a = build(&[hop("human", "test-agent")]);
    let b = build(&[hop("human", "test-agent")]);
    assert_eq!(a[0].token_id, b[0].token_id);
    assert_eq!(a[0].token_id, hex::encode(Sha256::digest(a[0].signed_payload())));
    let c = build(&[hop("human", "test-agent").tools(&["Read"])]);
    assert_ne!(a[0].token_id, c[0].token_id);
}
