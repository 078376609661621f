//! What evaluation produces: [`Finding`]s, the [`Verdict`] they lead to, and
//! the [`Severity`] scale both are built on.
//!
//! These are the types the filter reads after [`Engine::evaluate`]
//! (crate::Engine::evaluate): it copies findings into the audit record and
//! the reply, and maps the verdict to a decision.

use crate::ContentKind;

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

    /// Reads a severity name in any case (`HIGH`, `High`, `high`).
    pub fn parse(text: &str) -> Option<Severity> {
        let severity = match text.trim().to_ascii_lowercase().as_str() {
            "info" => Severity::Info,
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            _ => return None,
        };
        Some(severity)
    }

    /// One step lower, as for a finding inside a Markdown code fence
    /// (`Info` stays `Info`).
    pub fn lowered(self) -> Severity {
        match self {
            Severity::Critical => Severity::High,
            Severity::High => Severity::Medium,
            Severity::Medium => Severity::Low,
            Severity::Low | Severity::Info => Severity::Info,
        }
    }

    /// The verdict a finding of this severity gives when no override
    /// applies: critical blocks, high quarantines, medium flags, low and
    /// info change nothing.
    pub fn verdict(self) -> Verdict {
        match self {
            Severity::Critical => Verdict::Block,
            Severity::High => Verdict::Quarantine,
            Severity::Medium => Verdict::Flag,
            Severity::Low | Severity::Info => Verdict::Clean,
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

impl Verdict {
    /// The lowercase name: `clean`, `flag`, `quarantine`, `block`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Clean => "clean",
            Verdict::Flag => "flag",
            Verdict::Quarantine => "quarantine",
            Verdict::Block => "block",
        }
    }
}

/// How a finding's text was hidden in the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// Found inside a base64 blob, after decoding it.
    Base64,
    /// Found inside a hex blob, after decoding it.
    Hex,
}

/// One rule that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Rule id, for example `CE-009`.
    pub rule_id: String,
    /// Rule name.
    pub name: String,
    /// Severity after adjustments (one step lower inside a code fence).
    pub severity: Severity,
    /// Rule category.
    pub category: String,
    /// The matched text, credentials redacted, at most 200 bytes. For a
    /// `match_mode: all` rule, each pattern's first match joined by ` + `.
    pub matched: String,
    /// 1-based line of the match within its content part (for a decoded
    /// blob, the line of the blob).
    pub line: u32,
    /// Which content part the match is in.
    pub kind: ContentKind,
    /// Set when the match was found by decoding a base64 or hex blob.
    pub decoded: Option<Encoding>,
    /// What this finding contributes to the verdict, after overrides and the
    /// sender's `block_categories`.
    pub verdict: Verdict,
}

/// Findings and the verdict they lead to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// Findings, most severe first, then by line; at most
    /// [`MAX_FINDINGS`](crate::MAX_FINDINGS).
    pub findings: Vec<Finding>,
    /// The verdict after overrides: the strictest of every finding's
    /// contribution (computed before the list is cut).
    pub verdict: Verdict,
}
