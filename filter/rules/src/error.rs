//! Why a rule file, a rule or the `rules` configuration was refused.
//!
//! [`RuleError`] is the one error type of this crate. Every variant carries
//! where the problem is (file and 1-based line, or the configuration key) and
//! which rule or key is at fault, so that `warrant-audit rules validate` and
//! the filter's `on_configure` can print one precise line. Nothing in this
//! crate fails at request time: all these errors come from loading.

use std::fmt;
use std::ops::Range;

/// A rule file, a rule or a `rules` setting that cannot be used.
///
/// `file` is the name the rules were loaded under: a path for files on disk,
/// the file name for the built-in library, or `rules.custom[N]` for rules
/// given inline in the plugin configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RuleError {
    /// The text is not valid YAML, or a value has the wrong shape (a string
    /// where a list is expected, say).
    Yaml {
        /// Where the rules came from.
        file: String,
        /// 1-based line of the problem.
        line: u32,
        /// What the YAML parser said, without its position.
        message: String,
    },
    /// A key that the rule format does not define.
    UnknownKey {
        /// Where the rules came from.
        file: String,
        /// 1-based line of the key.
        line: u32,
        /// The rule's id, when it could be read.
        rule: Option<String>,
        /// The unknown key.
        key: String,
    },
    /// A required key (`id`, `name`, `severity`, `category`, `patterns`,
    /// a pattern's `type` or `value`) is absent or empty.
    MissingKey {
        /// Where the rules came from.
        file: String,
        /// 1-based line of the rule (or of its pattern).
        line: u32,
        /// The rule's id, when there is one.
        rule: Option<String>,
        /// The missing key.
        key: String,
    },
    /// A key has a value outside what the format allows.
    InvalidValue {
        /// Where the rules came from.
        file: String,
        /// 1-based line of the key.
        line: u32,
        /// The rule's id.
        rule: String,
        /// The key, for example `severity` or `patterns[2].type`.
        key: String,
        /// What is allowed.
        expected: &'static str,
        /// What the file says.
        found: String,
    },
    /// A pattern that Rust's regex syntax does not accept, or that matches
    /// the empty string.
    InvalidRegex(Box<InvalidRegex>),
    /// Two rules share an id.
    DuplicateId {
        /// The id.
        id: String,
        /// Where the second rule is.
        file: String,
        /// Its line.
        line: u32,
        /// Where the first rule is.
        first_file: String,
        /// Its line.
        first_line: u32,
    },
    /// A setting names a rule id that no loaded rule has.
    UnknownRuleId {
        /// The setting, for example `rules.overrides`.
        setting: String,
        /// The id.
        id: String,
    },
    /// `block_categories` names a category that no loaded rule has.
    UnknownCategory {
        /// The setting, for example `rules.agents.billing.block_categories`.
        setting: String,
        /// The category.
        category: String,
    },
    /// The compiled library exceeds a limit of the prefilter or the engine.
    TooLarge {
        /// What is too large.
        what: String,
        /// What the limit or the library said.
        message: String,
    },
    /// A rule file or directory could not be read.
    Io {
        /// The path.
        path: String,
        /// What the operating system said.
        message: String,
    },
    /// A rule file is larger than the loader accepts.
    FileTooLarge {
        /// The path.
        file: String,
        /// Its size in bytes.
        size: u64,
        /// The largest size accepted, in bytes.
        limit: u64,
    },
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleError::Yaml { file, line, message } => {
                write!(f, "{file}:{line}: invalid rule yaml: {message}")
            }
            RuleError::UnknownKey { file, line, rule, key } => {
                write!(f, "{file}:{line}: unknown key `{key}`")?;
                if let Some(rule) = rule {
                    write!(f, " in rule {rule}")?;
                }
                Ok(())
            }
            RuleError::MissingKey { file, line, rule, key } => match rule {
                Some(rule) => write!(f, "{file}:{line}: rule {rule}: missing key `{key}`"),
                None => write!(f, "{file}:{line}: rule document: missing key `{key}`"),
            },
            RuleError::InvalidValue { file, line, rule, key, expected, found } => {
                write!(f, "{file}:{line}: rule {rule}: `{key}`: expected {expected}, found {found}")
            }
            RuleError::InvalidRegex(error) => error.fmt(f),
            RuleError::DuplicateId { id, file, line, first_file, first_line } => write!(
                f,
                "{file}:{line}: duplicate rule id {id}, first defined at {first_file}:{first_line}"
            ),
            RuleError::UnknownRuleId { setting, id } => {
                write!(f, "{setting}: unknown rule id `{id}`")
            }
            RuleError::UnknownCategory { setting, category } => {
                write!(f, "{setting}: unknown category `{category}`")
            }
            RuleError::TooLarge { what, message } => {
                write!(f, "rule library too large for the {what}: {message}")
            }
            RuleError::Io { path, message } => write!(f, "{path}: {message}"),
            RuleError::FileTooLarge { file, size, limit } => write!(
                f,
                "{file}: rule file too large: expected at most {limit} bytes, found {size}"
            ),
        }
    }
}

impl std::error::Error for RuleError {}

/// The details of [`RuleError::InvalidRegex`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRegex {
    /// Where the rules came from.
    pub file: String,
    /// 1-based line of the pattern's `value`.
    pub line: u32,
    /// The rule's id.
    pub rule: String,
    /// Which pattern, for example `patterns[1]` or `exclude_patterns[0]`.
    pub key: String,
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: String,
    /// Byte range of the offending part of `pattern`, when known.
    pub span: Option<Range<usize>>,
    /// How to fix it, when the cause is a known RE2/Rust difference.
    pub hint: Option<String>,
}

impl fmt::Display for InvalidRegex {
    /// `FILE:LINE: rule ID: KEY: invalid regex: REASON`, then the pattern
    /// with carets under the span, then the hint after a blank line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let InvalidRegex { file, line, rule, key, pattern, reason, span, hint } = self;
        write!(f, "{file}:{line}: rule {rule}: {key}: invalid regex: {reason}")?;
        write!(f, "\n    {pattern}")?;
        if let Some(span) = span {
            write!(f, "\n    {}", caret_line(pattern, span))?;
        }
        if let Some(hint) = hint {
            write!(f, "\n\nhint: {hint}")?;
        }
        Ok(())
    }
}

/// Spaces up to the start of `span` and one `^` per character of it (at
/// least one), counted in characters so that the carets line up under the
/// pattern for non-ASCII text too.
fn caret_line(pattern: &str, span: &Range<usize>) -> String {
    let start = pattern.get(..span.start).map_or(0, |s| s.chars().count());
    let width = pattern.get(span.start..span.end).map_or(1, |s| s.chars().count()).max(1);
    let mut line = " ".repeat(start);
    line.push_str(&"^".repeat(width));
    line
}
