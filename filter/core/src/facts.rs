//! The verified facts the filter hands to Envoy's own filters and access
//! logs, and the configuration's choice of which ones it sets.
//!
//! The glue sets each fact as a Wasm property `warrant.<name>`, which Envoy
//! keeps as the filter state object `wasm.warrant.<name>` of the request.
//! Each one is a host call that makes Envoy allocate and index a filter
//! state object for the request, so the `facts` setting lets a deployment
//! set only what its RBAC rules and access logs read (all of them by
//! default).

use serde::Deserialize;

/// One fact the filter can set on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fact {
    /// The decision code (`allow`, `content_flagged`, ...), on every
    /// decided request.
    Decision,
    /// The authenticated sender; absent when nobody was authenticated.
    Sender,
    /// The session id, when sessions are enabled.
    Session,
    /// The chain's root (its first delegator).
    DelegationRoot,
    /// The chain's final delegate (the sender: the chain is bound to it).
    DelegationDelegate,
    /// The chain's token count.
    DelegationDepth,
    /// The chain hash (see the README).
    DelegationChainHash,
    /// Every name along the chain, root first, comma-separated.
    DelegationPath,
    /// The effective tools, comma-separated; absent when the chain allows
    /// every tool.
    DelegationTools,
}

impl Fact {
    /// Every fact, in the order the filter sets them.
    pub const ALL: [Fact; 9] = [
        Fact::Decision,
        Fact::Sender,
        Fact::Session,
        Fact::DelegationRoot,
        Fact::DelegationDelegate,
        Fact::DelegationDepth,
        Fact::DelegationChainHash,
        Fact::DelegationPath,
        Fact::DelegationTools,
    ];

    /// The fact's name in the configuration (`delegation_root`).
    pub fn name(self) -> &'static str {
        self.property().trim_start_matches(PROPERTY_PREFIX)
    }

    /// The Wasm property the filter sets (`warrant.delegation_root`); Envoy
    /// names its filter state object `wasm.` followed by this.
    pub fn property(self) -> &'static str {
        match self {
            Fact::Decision => "warrant.decision",
            Fact::Sender => "warrant.sender",
            Fact::Session => "warrant.session",
            Fact::DelegationRoot => "warrant.delegation_root",
            Fact::DelegationDelegate => "warrant.delegation_delegate",
            Fact::DelegationDepth => "warrant.delegation_depth",
            Fact::DelegationChainHash => "warrant.delegation_chain_hash",
            Fact::DelegationPath => "warrant.delegation_path",
            Fact::DelegationTools => "warrant.delegation_tools",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// The prefix of every fact's property name.
pub const PROPERTY_PREFIX: &str = "warrant.";

/// A set of facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FactSet(u16);

impl FactSet {
    /// Every fact (the default).
    pub fn all() -> FactSet {
        FactSet::of(&Fact::ALL)
    }

    /// The given facts.
    pub fn of(facts: &[Fact]) -> FactSet {
        FactSet(facts.iter().fold(0, |bits, fact| bits | fact.bit()))
    }

    /// Whether `fact` is in the set.
    pub fn contains(self, fact: Fact) -> bool {
        self.0 & fact.bit() != 0
    }

    /// Whether any of the `delegation_*` facts is in the set.
    pub fn any_delegation(self) -> bool {
        Fact::ALL[3..].iter().any(|fact| self.contains(*fact))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_properties_and_config_spelling_agree() {
        for fact in Fact::ALL {
            assert_eq!(fact.property(), format!("{PROPERTY_PREFIX}{}", fact.name()));
            let parsed: Fact = serde_json::from_value(fact.name().into()).unwrap();
            assert_eq!(parsed, fact);
        }
        assert!(serde_json::from_value::<Fact>("root".into()).is_err());
    }

    #[test]
    fn sets() {
        let all = FactSet::all();
        assert!(Fact::ALL.iter().all(|f| all.contains(*f)));
        assert!(all.any_delegation());
        let some = FactSet::of(&[Fact::Sender, Fact::DelegationRoot]);
        assert!(some.contains(Fact::Sender) && some.contains(Fact::DelegationRoot));
        assert!(!some.contains(Fact::Decision) && !some.contains(Fact::DelegationPath));
        assert!(some.any_delegation());
        assert!(!FactSet::of(&[Fact::Decision, Fact::Session]).any_delegation());
        assert!(!FactSet::of(&[]).any_delegation());
    }
}
