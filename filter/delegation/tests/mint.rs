//! Minting tokens and extending chains: what is minted verifies, and what
//! would not verify is refused at minting.

mod common;

use common::*;
use warrant_delegation::{
    encode_header, extend_header, mint, Chain, DelegationError, MintRequest, NameDefect, TimeError,
    Timestamp, VerifiedChain, VerifyPolicy,
};

fn request<'a>(
    delegator: &'a str,
    delegate: &'a str,
    parent: Option<&'a VerifiedChain>,
) -> MintRequest<'a> {
    MintRequest {
        delegator,
        delegate,
        scope: strings(&["target-agent"]),
        tools: vec![],
        ttl: hours(4),
        max_depth: 3,
        parent,
    }
}

fn verify_header(header: &str) -> Result<VerifiedChain, DelegationError> {
    verify_with(header, &cast(), &VerifyPolicy::new(), "target-agent")
}

#[test]
fn minted_root_token_verifies_and_carries_go_style_times() {
    let now = Timestamp::from_unix(NOW_SECS, 123_400_000).unwrap();
    let token = mint(&key("human"), &request("human", "agent-a", None), now).unwrap();
    assert_eq!((token.chain_depth, token.parent_token_id.as_str()), (0, ""));
    assert_eq!(token.token_id, token.computed_token_id());
    let json =
        String::from_utf8(warrant_delegation::encode_json(std::slice::from_ref(&token))).unwrap();
    assert!(json.contains(r#""issued_at":"2026-03-24T12:00:00.1234Z""#), "{json}");
    assert!(json.contains(r#""expires_at":"2026-03-24T16:00:00.1234Z""#), "{json}");
    let chain = verify_header(&encode_header(&[token])).unwrap();
    assert_eq!(chain.delegate(), "agent-a");
}

#[test]
fn extending_a_verified_chain_gives_a_chain_that_verifies() {
    let root = mint(&key("human"), &request("human", "agent-a", None), now()).unwrap();
    let policy = VerifyPolicy::new();
    let parsed = Chain::parse(encode_header(&[root]).as_bytes(), policy.limits()).unwrap();
    let parent = parsed.verify_ignoring_recipient(&cast(), &policy, now()).unwrap();
    let mut req = request("agent-a", "agent-b", Some(&parent));
    req.tools = strings(&["Read"]);
    let hop = mint(&key("agent-a"), &req, now()).unwrap();
    assert_eq!(hop.chain_depth, 1);
    assert_eq!(&hop.parent_token_id, &parent.token_ids()[0]);
    let chain = verify_header(&extend_header(&parent, &hop)).unwrap();
    assert_eq!(chain.path_text(), "human -> agent-a -> agent-b");
    assert_eq!(chain.tools(), Some(&strings(&["Read"])[..]));
}

#[test]
fn minting_refuses_what_verification_would_refuse() {
    let parent = verify(&build(&[hop("human", "agent-a").max_depth(1)])).unwrap();
    let cases: Vec<(&str, MintRequest<'_>, DelegationError)> = vec![
        (
            "empty delegate",
            request("human", "", None),
            DelegationError::InvalidName { hop: 0, field: "delegate", defect: NameDefect::Empty },
        ),
        (
            "comma in scope",
            MintRequest { scope: strings(&["a,b"]), ..request("human", "x", None) },
            DelegationError::InvalidName { hop: 0, field: "scope", defect: NameDefect::Comma },
        ),
        (
            "negative max_depth",
            MintRequest { max_depth: -1, ..request("human", "x", None) },
            DelegationError::MaxDepthExceeded { hop: 0, chain_depth: 0, max_depth: -1 },
        ),
        (
            "expiry past year 9999",
            MintRequest { ttl: hours(24 * 365 * 9000), ..request("human", "x", None) },
            DelegationError::InvalidTime {
                hop: 0,
                field: "expires_at",
                reason: TimeError::OutOfRange,
            },
        ),
        (
            "wrong delegator for the parent",
            request("agent-b", "x", Some(&parent)),
            DelegationError::Discontinuous {
                hop: 1,
                expected: "agent-a".into(),
                found: "agent-b".into(),
            },
        ),
        (
            "max_depth grows",
            MintRequest { max_depth: 2, ..request("agent-a", "x", Some(&parent)) },
            DelegationError::MaxDepthGrown { hop: 1, max_depth: 2, parent_max_depth: 1 },
        ),
        (
            "scope widens",
            MintRequest {
                scope: strings(&["*"]),
                max_depth: 1,
                ..request("agent-a", "x", Some(&parent))
            },
            DelegationError::ScopeExceeded { hop: 1, entry: "*".into() },
        ),
    ];
    for (name, req, want) in cases {
        assert_eq!(mint(&key(req.delegator), &req, now()), Err(want), "{name}");
    }
}

#[test]
fn depth_past_max_is_refused_when_extending() {
    let parent = verify(&build(&[hop("human", "agent-a").max_depth(0)])).unwrap();
    let req = MintRequest { max_depth: 0, ..request("agent-a", "agent-b", Some(&parent)) };
    assert_eq!(
        mint(&key("agent-a"), &req, now()),
        Err(DelegationError::MaxDepthExceeded { hop: 1, chain_depth: 1, max_depth: 0 })
    );
}

#[test]
fn text_summary_names_the_grant() {
    let token = mint(&key("human"), &request("human", "agent-a", None), now()).unwrap();
    let text = token.format_text();
    assert!(text.starts_with(&format!("token id:   {}\n", token.token_id)), "{text}");
    assert!(text.contains("delegate:   agent-a\n"), "{text}");
    assert!(text.contains("tools:      all\n"), "{text}");
    assert!(text.contains("expires at: 2026-03-24T16:00:00Z\n"), "{text}");
    assert!(text.contains("parent:     none (root token)\n"), "{text}");
}
