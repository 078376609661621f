//! The `rules` section of the filter's plugin configuration: which built-in
//! rules run, how their findings count, and which rules are added.
//!
//! Every field is optional; `{}` (or no `rules` section) means the built-in
//! library with severity-based verdicts. Unknown keys are refused, and so
//! are rule ids and categories that no loaded rule has, so a typo cannot
//! silently switch a rule off. Example:
//!
//! ```json
//! {
//!   "builtin": true,
//!   "disabled": ["PI-012"],
//!   "overrides": {"CE-002": "quarantine", "EX-004": "ignore"},
//!   "custom": ["id: ACME-001\nname: Internal host\nseverity: high\ncategory: acme\npatterns:\n  - {type: contains, value: db.internal.acme}\n"],
//!   "agents": {"billing-bot": {"block_categories": ["exfiltration"]}}
//! }
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::Verdict;

/// The `rules` section of the filter's plugin configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// Whether the built-in library is loaded. Default `true`; with `false`
    /// only `custom` rules run.
    #[serde(default = "default_builtin")]
    pub builtin: bool,
    /// Rule ids that do not run at all. Default empty.
    #[serde(default)]
    pub disabled: Vec<String>,
    /// Per rule id, what its findings contribute instead of the
    /// severity-based verdict. Default empty.
    #[serde(default)]
    pub overrides: BTreeMap<String, Override>,
    /// Extra rules, each string the text of a rule file (one or more YAML
    /// documents). They are added to the library; an id that is already
    /// taken is an error. Errors name them `rules.custom[N]`. Default empty.
    #[serde(default)]
    pub custom: Vec<String>,
    /// Per sender (agent name, as the filter identifies it), settings that
    /// apply to that agent's requests only. Default empty.
    #[serde(default)]
    pub agents: BTreeMap<String, AgentRules>,
    /// The most heap the built regexes keep between scans, in bytes (their
    /// automata and search caches). A pattern's regex is built the first
    /// time the pattern is a candidate; past this the least recently used
    /// are dropped after a scan and built again when needed. Default
    /// [`DEFAULT_REGEX_MEMORY_BYTES`] (8 MiB; the whole library built takes
    /// about 40 MiB counted so).
    #[serde(default = "default_regex_memory_bytes")]
    pub regex_memory_bytes: usize,
}

/// Default of [`RulesConfig::regex_memory_bytes`].
pub const DEFAULT_REGEX_MEMORY_BYTES: usize = 8 << 20;

impl Default for RulesConfig {
    fn default() -> RulesConfig {
        RulesConfig {
            builtin: true,
            disabled: Vec::new(),
            overrides: BTreeMap::new(),
            custom: Vec::new(),
            agents: BTreeMap::new(),
            regex_memory_bytes: DEFAULT_REGEX_MEMORY_BYTES,
        }
    }
}

/// Settings for one agent.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRules {
    /// Categories whose findings block this agent's requests, whatever their
    /// severity or override. Default empty.
    #[serde(default)]
    pub block_categories: Vec<String>,
}

/// What a rule's findings contribute to the verdict, replacing the
/// severity-based one. Spelled in kebab case in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Override {
    /// Drop the rule's findings (the same as listing it in `disabled`; kept
    /// because oktsec configurations use it).
    Ignore,
    /// Block.
    Block,
    /// Quarantine.
    Quarantine,
    /// Flag, and let the request through.
    AllowAndFlag,
}

impl Override {
    /// The verdict a finding contributes, or `None` for `Ignore`.
    pub fn verdict(self) -> Option<Verdict> {
        match self {
            Override::Ignore => None,
            Override::Block => Some(Verdict::Block),
            Override::Quarantine => Some(Verdict::Quarantine),
            Override::AllowAndFlag => Some(Verdict::Flag),
        }
    }
}

fn default_builtin() -> bool {
    true
}

fn default_regex_memory_bytes() -> usize {
    DEFAULT_REGEX_MEMORY_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_object_is_the_default() {
        let config: RulesConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config, RulesConfig::default());
        assert!(config.builtin);
    }

    #[test]
    fn every_field_parses() {
        let config: RulesConfig = serde_json::from_str(
            r#"{"builtin": false, "disabled": ["A"], "overrides": {"B": "allow-and-flag", "C": "ignore"},
                "custom": ["id: X"], "agents": {"bot": {"block_categories": ["exfiltration"]}}}"#,
        )
        .unwrap();
        assert!(!config.builtin);
        assert_eq!(config.overrides["B"], Override::AllowAndFlag);
        assert_eq!(config.overrides["C"].verdict(), None);
        assert_eq!(config.agents["bot"].block_categories, vec!["exfiltration"]);
    }

    #[test]
    fn unknown_keys_and_override_values_are_refused() {
        assert!(serde_json::from_str::<RulesConfig>(r#"{"disable": []}"#).is_err());
        assert!(serde_json::from_str::<RulesConfig>(r#"{"overrides": {"A": "drop"}}"#).is_err());
        assert!(serde_json::from_str::<RulesConfig>(r#"{"agents": {"a": {"block": []}}}"#).is_err());
    }
}
