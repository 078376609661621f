//! Fuzzes the rule engine (the built-in library, default settings) with
//! arbitrary text in up to four content parts of arbitrary kinds.
//!
//! Input: parts separated by `0xff` (never valid UTF-8, so never inside
//! text); each part's first byte picks its [`ContentKind`], the rest is its
//! text (lossy UTF-8).
//!
//! Properties, beyond "never panics":
//! - at most [`MAX_FINDINGS`] findings, most severe first, each of a kind
//!   that was scanned, on a line from 1 on;
//! - every finding's `matched` is at most 200 bytes, and every redaction
//!   marker in it is whole (`[REDACTED:TYPE:len=N]`) unless the cut at 200
//!   bytes ends it;
//! - with default settings each finding contributes its severity's verdict,
//!   and the verdict is the strictest of them (clean with none);
//! - a credential planted in the text is never copied into a finding;
//! - an engine whose built regexes are bounded below the library's needs
//!   (`rules.regex_memory_bytes` of 1 MiB: once the inputs have made
//!   enough patterns candidates, it drops and rebuilds regexes) gives the
//!   same evaluation, and holds at most that much after each.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use warrant_rules::redact::MAX_MATCHED_BYTES;
use warrant_rules::{
    ContentKind, ContentPart, Engine, Evaluation, RulesConfig, Verdict, MAX_FINDINGS,
};

/// A well-formed AWS access key id (the documentation's example).
const PLANTED: &str = "AKIAIOSFODNN7EXAMPLE";

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::new(&Default::default()).expect("the built-in library compiles"))
}

/// The bound of [`small_engine`]'s built regexes.
const SMALL_BUDGET: usize = 1 << 20;

fn small_engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let config = RulesConfig { regex_memory_bytes: SMALL_BUDGET, ..RulesConfig::default() };
        Engine::new(&config).expect("the built-in library compiles")
    })
}

fuzz_target!(|data: &[u8]| {
    let parts: Vec<(ContentKind, String)> = data
        .split(|b| *b == 0xff)
        .take(4)
        .map(|chunk| match chunk.split_first() {
            Some((first, text)) => (
                ContentKind::ALL[usize::from(*first) % ContentKind::ALL.len()],
                String::from_utf8_lossy(text).into_owned(),
            ),
            None => (ContentKind::Body, String::new()),
        })
        .collect();
    let borrowed: Vec<ContentPart<'_>> =
        parts.iter().map(|(kind, text)| ContentPart { kind: *kind, text }).collect();
    let evaluation = engine().evaluate(&borrowed, "fuzz");
    check(&evaluation, &parts);
    assert_eq!(small_engine().evaluate(&borrowed, "fuzz"), evaluation, "with a small regex bound");
    let held = small_engine().regex_memory().bytes;
    assert!(held <= SMALL_BUDGET, "{held} bytes of regexes held after a scan");

    // The same text with a credential planted in the middle of the first
    // part, between blanks.
    let Some((kind, text)) = parts.first() else { return };
    let mut at = text.len() / 2;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let planted = format!("{} {PLANTED} {}", &text[..at], &text[at..]);
    let mut with_key = borrowed.clone();
    with_key[0] = ContentPart { kind: *kind, text: &planted };
    let evaluation = engine().evaluate(&with_key, "fuzz");
    for finding in &evaluation.findings {
        assert!(
            !finding.matched.contains(PLANTED),
            "{} copied the planted key: {:?}",
            finding.rule_id,
            finding.matched
        );
    }
});

fn check(evaluation: &Evaluation, parts: &[(ContentKind, String)]) {
    assert!(evaluation.findings.len() <= MAX_FINDINGS);
    let mut strictest = Verdict::Clean;
    for (i, finding) in evaluation.findings.iter().enumerate() {
        assert!(finding.matched.len() <= MAX_MATCHED_BYTES, "{finding:?}");
        check_markers(&finding.matched, parts);
        assert!(parts.iter().any(|(kind, _)| *kind == finding.kind), "{finding:?}");
        assert!(finding.line >= 1, "{finding:?}");
        assert_eq!(finding.verdict, finding.severity.verdict(), "{finding:?}");
        if let Some(previous) = i.checked_sub(1).and_then(|p| evaluation.findings.get(p)) {
            assert!(previous.severity >= finding.severity, "findings out of order");
        }
        strictest = strictest.max(finding.verdict);
    }
    assert_eq!(evaluation.verdict, strictest, "{evaluation:?}");
}

/// Every `[REDACTED:` starts `[REDACTED:TYPE:len=N]`, or runs to the end of
/// the text (cut there). Only checked when the content cannot spell a
/// marker itself (ASCII without `REDACTED`: NFKC folds full-width letters).
fn check_markers(matched: &str, parts: &[(ContentKind, String)]) {
    if parts.iter().any(|(_, t)| !t.is_ascii() || t.to_ascii_uppercase().contains("REDACTED")) {
        return;
    }
    const OPEN: &str = "[REDACTED:";
    let mut from = 0;
    while let Some(at) = matched[from..].find(OPEN).map(|i| i + from) {
        let marker = &matched[at + OPEN.len()..];
        let Some(end) = marker.find(']') else {
            // The longest marker is about 45 bytes.
            assert!(at + 45 >= MAX_MATCHED_BYTES, "an unfinished marker: {matched:?}");
            return;
        };
        let body = &marker[..end];
        let (kind, len) = body
            .split_once(":len=")
            .unwrap_or_else(|| panic!("marker without a length: {matched:?}"));
        assert!(
            !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
            "marker type {kind:?} in {matched:?}"
        );
        assert!(len.parse::<usize>().is_ok(), "marker length {len:?} in {matched:?}");
        from = at + OPEN.len() + end + 1;
    }
}
