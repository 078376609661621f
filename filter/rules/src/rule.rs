//! The rule file format: parsing YAML rule documents into [`Rule`] values.
//!
//! A rule file holds one rule per YAML document, documents separated by
//! `---` lines (Aguara's format, which oktsec uses too; `rules/README.md`
//! specifies every key). [`parse_rules`] checks everything that can be
//! checked without compiling regexes: unknown keys, required keys, the
//! severity, match mode and pattern type spellings, pattern length and the
//! `owasp_asi` ids. Regexes are checked when an [`Engine`](crate::Engine) is
//! built, and duplicate ids when rules from several files are put together.
//!
//! Main types: [`Rule`], [`Pattern`], [`PatternKind`], [`MatchMode`],
//! [`Examples`], [`Source`].

use serde::Deserialize;

use crate::error::RuleError;
use crate::Severity;

/// The longest pattern value accepted, in characters (Aguara's limit;
/// repeated in the error message text).
pub const MAX_PATTERN_CHARS: usize = 4096;

/// One detection rule, as written in a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Unique id, for example `CE-009`.
    pub id: String,
    /// Short human name.
    pub name: String,
    /// What the rule detects and why it matters; may be empty.
    pub description: String,
    /// How bad a finding of this rule is.
    pub severity: Severity,
    /// Category, for example `container-escape`; used by `block_categories`.
    pub category: String,
    /// Which content kinds the rule applies to; empty means all of them.
    pub targets: Vec<String>,
    /// Whether any pattern or all patterns must match.
    pub match_mode: MatchMode,
    /// What to look for; never empty.
    pub patterns: Vec<Pattern>,
    /// Matches of these on the hit line or the 3 lines before it cancel a
    /// finding.
    pub exclude_patterns: Vec<Pattern>,
    /// What to do about a finding; may be empty.
    pub remediation: String,
    /// Texts the rule must and must not fire on.
    pub examples: Examples,
    /// OWASP Top 10 for Agentic Applications ids, `ASI01` to `ASI10`.
    pub owasp_asi: Vec<String>,
    /// When set, the whole matched text is redacted, not only the credential
    /// shapes the redactor knows (Aguara's `sensitive` key).
    pub sensitive: bool,
    /// Where the rule was defined.
    pub source: Source,
}

/// Where a rule was defined.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Source {
    /// The file name (or `rules.custom[N]`).
    pub file: String,
    /// 1-based line of the rule's `id` key.
    pub line: u32,
}

/// How a rule's patterns combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MatchMode {
    /// One finding per line on which any pattern matches.
    #[default]
    Any,
    /// One finding when every pattern matches somewhere in the content.
    All,
}

/// One pattern of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// Regex or substring.
    pub kind: PatternKind,
    /// The regex, or the substring.
    pub value: String,
    /// 1-based line of the pattern's `value` key in its file.
    pub line: u32,
}

/// The two pattern types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternKind {
    /// A regular expression (Rust `regex` syntax, RE2-compatible in practice;
    /// `\d`, `\s`, `\w` and `\b` are ASCII-only as in RE2).
    Regex,
    /// A case-insensitive substring.
    Contains,
}

/// A rule's self-test texts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Examples {
    /// Each of these must fire the rule.
    pub true_positive: Vec<String>,
    /// None of these may fire the rule.
    pub false_positive: Vec<String>,
}

impl Examples {
    /// Every example text: the true positives, then the false positives.
    pub fn all(&self) -> impl Iterator<Item = &String> {
        self.true_positive.iter().chain(&self.false_positive)
    }
}

/// Parses every rule document in `text`, which came from `file`.
///
/// Documents that hold nothing (only comments or blank lines) are skipped.
///
/// # Errors
/// The first problem found, as a [`RuleError`] naming `file`, the line and
/// the key or rule id.
pub fn parse_rules(file: &str, text: &str) -> Result<Vec<Rule>, RuleError> {
    let mut rules = Vec::new();
    for document in split_documents(text) {
        if document.is_blank() {
            continue;
        }
        rules.push(parse_document(file, &document)?);
    }
    Ok(rules)
}

/// One YAML document of a rule file, with its first line number in the file.
#[derive(Debug)]
struct Document<'a> {
    text: &'a str,
    /// 1-based line of `text`'s first line in the file.
    first_line: u32,
}

impl Document<'_> {
    fn is_blank(&self) -> bool {
        self.text.lines().all(|line| {
            let line = line.trim();
            line.is_empty() || line.starts_with('#')
        })
    }

    /// The file line of the first line whose key (after indentation and a
    /// list dash) is `key`, at or after the `nth` such line; the document's
    /// first line when there is none.
    fn key_line(&self, key: &str, nth: usize) -> u32 {
        let mut seen = 0;
        for (index, line) in self.text.lines().enumerate() {
            let stripped = line.trim_start().trim_start_matches("- ").trim_start();
            let stripped = stripped.trim_start_matches(['"', '\'']);
            let leading = stripped
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start_matches(['"', '\'']).starts_with(':'));
            // Flow mappings: `- {type: regex, value: ...}`.
            let flow = [format!("{{{key}:"), format!(", {key}:")];
            if leading || flow.iter().any(|f| line.contains(f.as_str())) {
                if seen == nth {
                    return self.line_at(index);
                }
                seen += 1;
            }
        }
        self.first_line
    }

    /// Like [`Document::key_line`], counting only lines after the first
    /// line whose key is `section`.
    fn key_line_in(&self, section: &str, key: &str, nth: usize) -> u32 {
        let section_line = self.key_line(section, 0);
        let skip = usize::try_from(section_line.saturating_sub(self.first_line)).unwrap_or(0);
        let mut offset = 0;
        for line in self.text.split_inclusive('\n').take(skip.saturating_add(1)) {
            offset += line.len();
        }
        let rest = Document {
            text: self.text.get(offset..).unwrap_or(""),
            first_line: section_line.saturating_add(1),
        };
        match rest.text.is_empty() {
            true => self.first_line,
            false => rest.key_line(key, nth),
        }
    }

    fn line_at(&self, index: usize) -> u32 {
        self.first_line.saturating_add(u32::try_from(index).unwrap_or(u32::MAX))
    }

    /// The `id:` value, read without YAML parsing, for errors raised before
    /// the document could be parsed.
    fn raw_id(&self) -> Option<String> {
        self.text.lines().find_map(|line| {
            let value = line.strip_prefix("id:")?.trim();
            let value = value.trim_matches(['"', '\'']).trim();
            (!value.is_empty()).then(|| value.to_string())
        })
    }
}

/// The YAML shape of a rule. Every key is optional here so that a missing
/// one is reported by [`parse_document`] with the rule id and a line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Option<String>,
    name: Option<String>,
    description: Option<String>,
    severity: Option<String>,
    category: Option<String>,
    targets: Option<Vec<String>>,
    match_mode: Option<String>,
    patterns: Option<Vec<RawPattern>>,
    exclude_patterns: Option<Vec<RawPattern>>,
    remediation: Option<String>,
    examples: Option<RawExamples>,
    owasp_asi: Option<Vec<String>>,
    sensitive: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPattern {
    #[serde(rename = "type")]
    kind: Option<String>,
    value: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExamples {
    true_positive: Option<Vec<String>>,
    false_positive: Option<Vec<String>>,
}

/// Splits a file at document markers: a line that is `---` (optionally
/// followed by blanks or a comment) starts a new document, and a line that
/// is `...` ends one. Block scalars are indented, so a marker at column 0
/// cannot be inside one.
fn split_documents(text: &str) -> Vec<Document<'_>> {
    let mut documents = Vec::new();
    let mut start = 0;
    let mut start_line: u32 = 1;
    let mut offset = 0;
    let mut line_number: u32 = 1;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_marker = bare == "..." || is_document_start(bare);
        if is_marker {
            documents.push(Document {
                text: text.get(start..offset).unwrap_or(""),
                first_line: start_line,
            });
            start = offset + line.len();
            start_line = line_number.saturating_add(1);
        }
        offset += line.len();
        line_number = line_number.saturating_add(1);
    }
    documents.push(Document { text: text.get(start..).unwrap_or(""), first_line: start_line });
    documents
}

fn is_document_start(line: &str) -> bool {
    match line.strip_prefix("---") {
        Some(rest) => {
            let rest = rest.trim();
            rest.is_empty() || rest.starts_with('#')
        }
        None => false,
    }
}

fn parse_document(file: &str, document: &Document<'_>) -> Result<Rule, RuleError> {
    // 1. Shape: YAML syntax, unknown keys, value types.
    let raw: RawRule =
        serde_yaml::from_str(document.text).map_err(|error| yaml_error(file, document, &error))?;

    // 2. Required keys, starting with the id that every later error names.
    let missing = |rule: Option<&str>, key: &str| RuleError::MissingKey {
        file: file.to_string(),
        line: document.key_line("id", 0),
        rule: rule.map(str::to_string),
        key: key.to_string(),
    };
    let id = non_empty(raw.id).ok_or_else(|| missing(None, "id"))?;
    let name = non_empty(raw.name).ok_or_else(|| missing(Some(&id), "name"))?;
    let category = non_empty(raw.category).ok_or_else(|| missing(Some(&id), "category"))?;
    let severity_text = non_empty(raw.severity).ok_or_else(|| missing(Some(&id), "severity"))?;
    let raw_patterns = raw.patterns.unwrap_or_default();
    if raw_patterns.is_empty() {
        return Err(missing(Some(&id), "patterns"));
    }

    // 3. Enumerated values, any case.
    let invalid =
        |key: &str, line: u32, expected: &'static str, found: &str| RuleError::InvalidValue {
            file: file.to_string(),
            line,
            rule: id.clone(),
            key: key.to_string(),
            expected,
            found: format!("{found:?}"),
        };
    let severity = Severity::parse(&severity_text).ok_or_else(|| {
        let expected = "one of critical, high, medium, low, info";
        invalid("severity", document.key_line("severity", 0), expected, &severity_text)
    })?;
    let match_mode = match raw.match_mode.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("any") => MatchMode::Any,
        Some("all") => MatchMode::All,
        Some(_) => {
            let found = raw.match_mode.as_deref().unwrap_or_default();
            let line = document.key_line("match_mode", 0);
            return Err(invalid("match_mode", line, "any or all", found));
        }
    };
    let owasp_asi = raw.owasp_asi.unwrap_or_default();
    if let Some(bad) = owasp_asi.iter().find(|asi| !is_asi_id(asi)) {
        let line = document.key_line("owasp_asi", 0);
        return Err(invalid("owasp_asi", line, "ids ASI01 to ASI10", bad));
    }

    // 4. Patterns: type and value present, value within the length limit.
    let convert = |list: Vec<RawPattern>, key: &str| -> Result<Vec<Pattern>, RuleError> {
        let mut patterns = Vec::with_capacity(list.len());
        for (index, raw) in list.into_iter().enumerate() {
            let name = format!("{key}[{index}]");
            let line = document.key_line_in(key, "value", index);
            let kind_text = raw.kind.unwrap_or_default();
            let kind = match kind_text.to_ascii_lowercase().as_str() {
                "regex" => PatternKind::Regex,
                "contains" => PatternKind::Contains,
                "" => return Err(missing(Some(&id), &format!("{name}.type"))),
                _ => {
                    let key = format!("{name}.type");
                    return Err(invalid(&key, line, "regex or contains", &kind_text));
                }
            };
            let value = raw.value.unwrap_or_default();
            if value.is_empty() {
                return Err(missing(Some(&id), &format!("{name}.value")));
            }
            let chars = value.chars().count();
            if chars > MAX_PATTERN_CHARS {
                let found = format!("{chars} characters");
                return Err(invalid(&name, line, "at most 4096 characters", &found));
            }
            patterns.push(Pattern { kind, value, line });
        }
        Ok(patterns)
    };
    let patterns = convert(raw_patterns, "patterns")?;
    let exclude_patterns = convert(raw.exclude_patterns.unwrap_or_default(), "exclude_patterns")?;

    let examples = raw.examples.map_or_else(Examples::default, |e| Examples {
        true_positive: e.true_positive.unwrap_or_default(),
        false_positive: e.false_positive.unwrap_or_default(),
    });
    Ok(Rule {
        source: Source { file: file.to_string(), line: document.key_line("id", 0) },
        id,
        name,
        description: raw.description.unwrap_or_default(),
        severity,
        category,
        targets: raw.targets.unwrap_or_default(),
        match_mode,
        patterns,
        exclude_patterns,
        remediation: raw.remediation.unwrap_or_default(),
        examples,
        owasp_asi,
        sensitive: raw.sensitive.unwrap_or(false),
    })
}

/// Maps a serde_yaml error to our variants. serde_yaml reports positions
/// relative to the document text; we add the document's first line.
fn yaml_error(file: &str, document: &Document<'_>, error: &serde_yaml::Error) -> RuleError {
    let relative = error.location().map_or(1, |l| u32::try_from(l.line()).unwrap_or(1));
    let line = document.first_line.saturating_add(relative.saturating_sub(1));
    let message = error.to_string();
    // serde_yaml appends " at line L column C"; the line is ours to give.
    let message = match message.find(" at line ") {
        Some(at) => message.get(..at).unwrap_or(&message).to_string(),
        None => message,
    };
    // Nested keys come with a path first: "patterns[0]: unknown field `x`".
    if let Some(rest) = message.find("unknown field `").and_then(|at| message.get(at + 15..)) {
        let key = rest.split('`').next().unwrap_or_default().to_string();
        return RuleError::UnknownKey {
            file: file.to_string(),
            line,
            rule: document.raw_id(),
            key,
        };
    }
    let message = match document.raw_id() {
        Some(id) => format!("rule {id}: {message}"),
        None => message,
    };
    RuleError::Yaml { file: file.to_string(), line, message }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// `ASI01` to `ASI10`, upper case.
fn is_asi_id(text: &str) -> bool {
    let Some(digits) = text.strip_prefix("ASI") else { return false };
    matches!(digits.parse::<u8>(), Ok(1..=10)) && digits.len() == 2
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_RULES: &str = "\
# leading comment document
---
id: T-001
name: First
severity: HIGH
category: test
patterns:
  - type: contains
    value: alpha
---
id: T-002
name: Second
severity: low
category: test
match_mode: ALL
patterns:
  - type: regex
    value: 'b(eta)+'
  - type: contains
    value: gamma
owasp_asi: [ASI01, ASI10]
";

    #[test]
    fn parses_several_documents_with_lines_and_any_case_values() {
        let rules = parse_rules("t.yaml", TWO_RULES).unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].id, "T-001");
        assert_eq!(rules[0].severity, Severity::High);
        assert_eq!(rules[0].source, Source { file: "t.yaml".into(), line: 3 });
        assert_eq!(rules[1].match_mode, MatchMode::All);
        assert_eq!(rules[1].source.line, 11);
        assert_eq!(
            rules[1].patterns[1],
            Pattern { kind: PatternKind::Contains, value: "gamma".into(), line: 20 }
        );
        assert_eq!(rules[1].owasp_asi, vec!["ASI01", "ASI10"]);
    }

    #[test]
    fn unknown_top_level_key_names_file_line_key_and_rule() {
        let text = "id: X-1\nname: n\nseverity: low\ncategory: c\npattern: oops\npatterns:\n  - {type: contains, value: a}\n";
        let err = parse_rules("f.yaml", text).unwrap_err();
        assert_eq!(
            err,
            RuleError::UnknownKey {
                file: "f.yaml".into(),
                line: 5,
                rule: Some("X-1".into()),
                key: "pattern".into()
            }
        );
        assert_eq!(err.to_string(), "f.yaml:5: unknown key `pattern` in rule X-1");
    }

    #[test]
    fn unknown_nested_key_in_second_document_has_file_line() {
        let text = "id: A-1\nname: n\nseverity: low\ncategory: c\npatterns:\n  - {type: contains, value: a}\n---\nid: A-2\nname: n\nseverity: low\ncategory: c\npatterns:\n  - type: contains\n    valu: a\n";
        let err = parse_rules("g.yaml", text).unwrap_err();
        assert_eq!(
            err,
            RuleError::UnknownKey {
                file: "g.yaml".into(),
                line: 14,
                rule: Some("A-2".into()),
                key: "valu".into()
            }
        );
    }

    #[test]
    fn bad_severity_names_rule_and_line() {
        let text = "id: S-1\nname: n\nseverity: severe\ncategory: c\npatterns:\n  - {type: contains, value: a}\n";
        let err = parse_rules("s.yaml", text).unwrap_err();
        assert_eq!(err.to_string(), "s.yaml:3: rule S-1: `severity`: expected one of critical, high, medium, low, info, found \"severe\"");
    }

    #[test]
    fn bad_match_mode_pattern_type_and_asi_are_refused() {
        let base = "id: M-1\nname: n\nseverity: low\ncategory: c\n";
        let cases = [
            ("match_mode: some\npatterns:\n  - {type: contains, value: a}\n", "match_mode"),
            ("patterns:\n  - {type: glob, value: a}\n", "patterns[0].type"),
            ("owasp_asi: [ASI11]\npatterns:\n  - {type: contains, value: a}\n", "owasp_asi"),
        ];
        for (tail, want_key) in cases {
            let err = parse_rules("m.yaml", &format!("{base}{tail}")).unwrap_err();
            match err {
                RuleError::InvalidValue { key, rule, .. } => {
                    assert_eq!(key, want_key);
                    assert_eq!(rule, "M-1");
                }
                other => panic!("{want_key}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn missing_keys_are_named() {
        let cases = [
            (
                "name: n\nseverity: low\ncategory: c\npatterns:\n  - {type: contains, value: a}\n",
                None,
                "id",
            ),
            (
                "id: Q-1\nseverity: low\ncategory: c\npatterns:\n  - {type: contains, value: a}\n",
                Some("Q-1"),
                "name",
            ),
            (
                "id: Q-1\nname: n\nseverity: low\ncategory: c\npatterns: []\n",
                Some("Q-1"),
                "patterns",
            ),
            (
                "id: Q-1\nname: n\nseverity: low\ncategory: c\npatterns:\n  - {type: regex}\n",
                Some("Q-1"),
                "patterns[0].value",
            ),
        ];
        for (text, want_rule, want_key) in cases {
            match parse_rules("q.yaml", text).unwrap_err() {
                RuleError::MissingKey { rule, key, .. } => {
                    assert_eq!(rule.as_deref(), want_rule);
                    assert_eq!(key, want_key);
                }
                other => panic!("{want_key}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn syntax_error_has_file_line() {
        let text = "id: Y-1\nname: [unclosed\n";
        match parse_rules("y.yaml", text).unwrap_err() {
            RuleError::Yaml { file, line, .. } => {
                assert_eq!(file, "y.yaml");
                assert!(line >= 2, "line {line}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn overlong_pattern_is_refused() {
        let long = "a".repeat(MAX_PATTERN_CHARS + 1);
        let text = format!("id: L-1\nname: n\nseverity: low\ncategory: c\npatterns:\n  - type: contains\n    value: {long}\n");
        match parse_rules("l.yaml", &text).unwrap_err() {
            RuleError::InvalidValue { key, line, .. } => {
                assert_eq!(key, "patterns[0]");
                assert_eq!(line, 7);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
