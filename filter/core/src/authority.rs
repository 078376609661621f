//! Who may message whom: suspension and the `can_message` ACL.
//!
//! The principal whose authority counts is the chain's root when the request
//! carries a verified delegation chain, and the sender otherwise (oktsec
//! #171's semantics: a delegate acts with its delegator's authority, never
//! its own). The sender itself must not be suspended either.
//!
//! With no `agents` configured, everyone may message anyone.

use crate::config::{DefaultPolicy, Policy};
use crate::decision::Decision;

/// Checks suspension and the ACL; `Err` carries the decision and a reason.
///
/// # Errors
/// `agent_suspended`, `recipient_suspended` or `acl_denied`.
pub fn check(
    policy: &Policy,
    sender: &str,
    root: Option<&str>,
    recipient: &str,
) -> Result<(), (Decision, String)> {
    let agents = &policy.config.agents;
    if agents.is_empty() {
        return Ok(());
    }
    let principal = root.unwrap_or(sender);

    // 1. Suspension: the sender, the principal, the recipient.
    for (who, name) in [("sender", sender), ("delegation root", principal)] {
        if agents.get(name).is_some_and(|a| a.suspended) {
            return Err((Decision::AgentSuspended, format!("{who} {name:?} is suspended")));
        }
    }
    if agents.get(recipient).is_some_and(|a| a.suspended) {
        return Err((
            Decision::RecipientSuspended,
            format!("recipient {recipient:?} is suspended"),
        ));
    }

    // 2. The principal's ACL.
    let allowed = match agents.get(principal) {
        None => policy.config.default_policy == DefaultPolicy::Allow,
        Some(agent) if agent.can_message.is_empty() => true,
        Some(agent) => agent.can_message.iter().any(|to| to == "*" || to == recipient),
    };
    if allowed {
        return Ok(());
    }
    let whose = if root.is_some() { "delegation root" } else { "sender" };
    Err((Decision::AclDenied, format!("{whose} {principal:?} may not message {recipient:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: &str) -> Policy {
        Policy::from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn no_agents_means_everyone_may_message_anyone() {
        assert_eq!(check(&policy("{}"), "a", None, "b"), Ok(()));
    }

    #[test]
    fn acl_and_suspension_table() {
        let p = policy(
            r#"{"default_policy": "deny", "agents": {
                "human": {"can_message": ["target"]},
                "open": {},
                "star": {"can_message": ["*"]},
                "gone": {"suspended": true},
                "target": {}
            }}"#,
        );
        // (case, sender, delegation root, recipient, expected refusal)
        type Case<'a> = (&'a str, &'a str, Option<&'a str>, &'a str, Option<Decision>);
        let cases: &[Case<'_>] = &[
            ("listed recipient", "human", None, "target", None),
            ("unlisted recipient", "human", None, "other", Some(Decision::AclDenied)),
            ("empty list allows all", "open", None, "other", None),
            ("star allows all", "star", None, "other", None),
            ("unknown sender under deny", "stranger", None, "target", Some(Decision::AclDenied)),
            ("root's authority counts", "open", Some("human"), "other", Some(Decision::AclDenied)),
            ("root allows what the delegate could not", "stranger", Some("human"), "target", None),
            ("suspended sender", "gone", None, "target", Some(Decision::AgentSuspended)),
            ("suspended root", "open", Some("gone"), "target", Some(Decision::AgentSuspended)),
            ("suspended recipient", "human", None, "gone", Some(Decision::RecipientSuspended)),
        ];
        for (name, sender, root, to, want) in cases {
            let got = check(&p, sender, *root, to).err().map(|(d, _)| d);
            assert_eq!(got, *want, "case {name}");
        }
    }
}
