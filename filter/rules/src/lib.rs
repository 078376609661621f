//! Detection rules: the engine that scans request content and turns findings
//! into a verdict.
//!
//! STUB (foundation): this is a three-rule placeholder that fixes the API the
//! filter uses. The real engine and the rule library replace the internals.
//!
//! Main types: [`RulesConfig`] (the `rules` section of the plugin config),
//! [`Engine`] (compiled once per VM), [`ContentPart`] (what is scanned),
//! [`Evaluation`] (findings plus [`Verdict`]).

use serde::Deserialize;

/// How bad a finding is. Ordered: `Info < Low < Medium < High < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Informational only; never changes the verdict.
    Info,
    /// Low; never changes the verdict.
    Low,
    /// Medium: flag.
    Medium,
    /// High: quarantine.
    High,
    /// Critical: block.
    Critical,
}

impl Severity {
    /// The lowercase name used in rule files, records and replies.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// What the filter does with a request. Ordered by strictness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// Forward unchanged.
    Clean,
    /// Forward, marked `x-oktsec-verdict: flag`.
    Flag,
    /// Hold for review: answered 202, not forwarded.
    Quarantine,
    /// Refuse: answered 403, not forwarded.
    Block,
}

/// Which part of a request a piece of content came from. Rule `targets`
/// select parts by these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentKind {
    /// The `content` of a message envelope (target name `message.md`).
    Message,
    /// The tool name of an MCP `tools/call` (target name `tool.name`).
    ToolName,
    /// The arguments of an MCP `tools/call`, as JSON text (`tool.arguments`).
    ToolArguments,
    /// Any other request body, as text (`body.txt`).
    Body,
}

/// One piece of content to scan.
#[derive(Debug, Clone, Copy)]
pub struct ContentPart<'a> {
    /// Where it came from.
    pub kind: ContentKind,
    /// The text.
    pub text: &'a str,
}

/// One rule that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Rule id, for example `CE-009`.
    pub rule_id: String,
    /// Rule name.
    pub name: String,
    /// Severity after adjustments (for example inside a code fence).
    pub severity: Severity,
    /// Rule category.
    pub category: String,
    /// The matched text, credentials redacted, bounded in length.
    pub matched: String,
    /// 1-based line of the match.
    pub line: u32,
}

/// Findings and the verdict they lead to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// Findings, most severe first.
    pub findings: Vec<Finding>,
    /// The verdict after overrides.
    pub verdict: Verdict,
}

/// The `rules` section of the filter's plugin configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {}

/// Why rules could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    message: String,
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RuleError {}

/// Compiled rules, ready to scan. Build once (per VM), use for every request.
#[derive(Debug)]
pub struct Engine {
    rules: Vec<(&'static str, &'static str, Severity, &'static str, &'static str)>,
}

impl Engine {
    /// Compiles the built-in library plus what `config` adds.
    ///
    /// # Errors
    /// A bad rule or override, naming it.
    pub fn new(_config: &RulesConfig) -> Result<Engine, RuleError> {
        Ok(Engine {
            rules: vec![
                (
                    "PI-001",
                    "Instruction override",
                    Severity::Critical,
                    "prompt-injection",
                    "ignore all previous instructions",
                ),
                ("CL-001", "AWS access key id", Severity::High, "credential-leak", "akia"),
                ("EX-001", "Exfiltration wording", Severity::Medium, "exfiltration", "exfiltrate"),
            ],
        })
    }

    /// Scans the parts and decides, for the given sender.
    pub fn evaluate(&self, parts: &[ContentPart<'_>], _sender: &str) -> Evaluation {
        let mut findings = Vec::new();
        for part in parts {
            let lower = part.text.to_lowercase();
            for (id, name, severity, category, needle) in &self.rules {
                if let Some(at) = lower.find(needle) {
                    let line = lower[..at].matches('\n').count() as u32 + 1;
                    findings.push(Finding {
                        rule_id: (*id).to_string(),
                        name: (*name).to_string(),
                        severity: *severity,
                        category: (*category).to_string(),
                        matched: (*needle).to_string(),
                        line,
                    });
                }
            }
        }
        findings.sort_by(|a, b| b.severity.cmp(&a.severity));
        let verdict = findings
            .iter()
            .map(|f| match f.severity {
                Severity::Critical => Verdict::Block,
                Severity::High => Verdict::Quarantine,
                Severity::Medium => Verdict::Flag,
                _ => Verdict::Clean,
            })
            .max()
            .unwrap_or(Verdict::Clean);
        Evaluation { findings, verdict }
    }
}
