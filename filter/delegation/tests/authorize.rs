//! Sender binding, depth caps and tool scope: the hardened (oktsec #171)
//! decisions on top of a verified chain.

mod common;

use common::*;
use warrant_delegation::{
    authorize, bind_sender, check_depth, tool_allowed, DelegationConfig, DelegationError, DepthCap,
};

#[test]
fn delegate_must_be_the_sender() {
    let chain = verify(&build(&[hop("human", "other-agent")])).unwrap();
    assert!(bind_sender(&chain, "other-agent").is_ok());
    let error = bind_sender(&chain, "test-agent").unwrap_err();
    assert_eq!(
        error,
        DelegationError::SenderMismatch {
            delegate: "other-agent".into(),
            sender: "test-agent".into()
        }
    );
    assert_eq!(error.decision(), "delegation_invalid");
}

#[test]
fn depth_cap_counts_tokens() {
    let chain =
        verify(&build(&[hop("human", "agent-mid"), hop("agent-mid", "test-agent")])).unwrap();
    assert!(check_depth(&chain, DepthCap::Tokens(2)).is_ok());
    assert!(check_depth(&chain, DepthCap::Unlimited).is_ok());
    let error = check_depth(&chain, DepthCap::Tokens(1)).unwrap_err();
    assert_eq!(error, DelegationError::DepthExceeded { tokens: 2, cap: 1 });
    assert_eq!(error.decision(), "delegation_depth_exceeded");
}

#[test]
fn hardened_depth_exceeded_scenario() {
    // #171 DepthExceededBlocksInProxy: test-agent capped at 1, chain of 2.
    let config: DelegationConfig =
        serde_json::from_str(r#"{"agents": {"test-agent": {"max_depth": 1}}}"#).unwrap();
    let chain =
        verify(&build(&[hop("human", "agent-mid"), hop("agent-mid", "test-agent")])).unwrap();
    assert_eq!(
        authorize(&chain, "test-agent", &config),
        Err(DelegationError::DepthExceeded { tokens: 2, cap: 1 })
    );
}

#[test]
fn default_cap_is_three_tokens() {
    let config = DelegationConfig::default();
    let three = verify(&build(&[
        hop("human", "agent-a"),
        hop("agent-a", "agent-b"),
        hop("agent-b", "test-agent"),
    ]))
    .unwrap();
    assert!(authorize(&three, "test-agent", &config).is_ok());
    let four = verify(&build(&[
        hop("human", "agent-a").max_depth(4),
        hop("agent-a", "agent-b").max_depth(4),
        hop("agent-b", "agent-c").max_depth(4),
        hop("agent-c", "test-agent").max_depth(4),
    ]))
    .unwrap();
    assert_eq!(
        authorize(&four, "test-agent", &config),
        Err(DelegationError::DepthExceeded { tokens: 4, cap: 3 })
    );
}

#[test]
fn sender_binding_is_checked_before_the_depth_cap() {
    let config: DelegationConfig =
        serde_json::from_str(r#"{"agents": {"test-agent": {"max_depth": 0}}}"#).unwrap();
    let chain = verify(&build(&[hop("human", "other-agent")])).unwrap();
    assert!(matches!(
        authorize(&chain, "test-agent", &config),
        Err(DelegationError::SenderMismatch { .. })
    ));
}

#[test]
fn tools_are_allowed_by_the_effective_set() {
    let all = verify(&build(&[hop("human", "test-agent")])).unwrap();
    assert!(tool_allowed(&all, "anything"));
    let read = verify(&build(&[
        hop("human", "agent-a").tools(&["Read", "Bash"]),
        hop("agent-a", "test-agent").tools(&["Read"]),
    ]))
    .unwrap();
    assert!(tool_allowed(&read, "Read"));
    assert!(!tool_allowed(&read, "Bash"));
    assert!(!tool_allowed(&read, "read"));
    let none = verify(&build(&[
        hop("human", "agent-a").tools(&["Bash"]),
        hop("agent-a", "test-agent").tools(&["Read"]),
    ]))
    .unwrap();
    assert_eq!(none.tools(), Some(&[][..]));
    assert!(!tool_allowed(&none, "Read"));
    assert!(!tool_allowed(&none, "Bash"));
}
