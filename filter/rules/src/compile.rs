//! Turning one pattern into what the engine runs: a regex, the literals that
//! any match must contain (for the Aho-Corasick prefilter), and whether a
//! match can span lines.
//!
//! Rule files were written for Go's RE2. Two differences matter and are
//! bridged here rather than left to surprise rule authors:
//! - RE2's `\d`, `\s`, `\w` and `\b` are ASCII; Rust's are Unicode. We parse
//!   the pattern and rewrite these to their ASCII forms before compiling, so
//!   rules mean what they meant in RE2. (It also keeps the automata small:
//!   a Unicode `\w` is hundreds of ranges, and the lazy DFA gives up on
//!   Unicode `\b` when it meets a non-ASCII byte.)
//! - Syntax RE2 has and Rust lacks (`\Q…\E`, `\C`) is refused with a hint.
//!
//! Required literals come from our own walk over the HIR (see
//! [`required_literals`]). They are "folded": each character is lowercased
//! with [`char::to_lowercase`], and characters that cannot occur in
//! NFKC-normalised text (such as `ſ` or the Kelvin sign, which `(?i)` adds
//! to `s` and `k`) are left out. The engine folds the scanned text the same
//! way, so a pattern can only match a text whose folded form contains one of
//! its literals.

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::OnceLock;

use regex_automata::meta;
use regex_syntax::ast::{self, Ast};
use regex_syntax::hir::{Class, Hir, HirKind};
use unicode_normalization::{is_nfkc_quick, IsNormalized, UnicodeNormalization};

use crate::rule::PatternKind;

/// A pattern parsed, analysed and ready to be compiled.
#[derive(Debug)]
pub(crate) struct PreparedPattern {
    /// The regex (for `contains`, an escaped case-insensitive literal),
    /// built on first use.
    pub(crate) regex: LazyRegex,
    /// Folded strings of which every match contains at least one; `None`
    /// when no useful set exists and the pattern must run on every text.
    pub(crate) literals: Option<Vec<String>>,
    /// Whether no match can contain a line feed, so that searching only the
    /// lines where a literal occurs finds every match.
    pub(crate) single_line: bool,
}

/// A regex whose automata are built on first use.
///
/// Building the automata of the whole library costs about 300 ms natively
/// (measured 2026-12-03: forward and reverse NFAs of 447 patterns, most of
/// it in bounded repetitions of Unicode classes such as `[^\n]{0,400}`),
/// while parsing and analysing it costs a fraction of that. Most patterns
/// never become candidates in ordinary traffic, so a VM builds only the few
/// it needs, once each. Parsing at load time still refuses every syntax
/// error; what is left to fail later is only the automaton size limit, and
/// [`Engine::compile_all`](crate::Engine::compile_all) checks that (the
/// library's tests call it, custom rules are built eagerly).
#[derive(Debug)]
pub(crate) struct LazyRegex {
    hir: Hir,
    built: OnceLock<Result<meta::Regex, PatternProblem>>,
}

impl LazyRegex {
    fn new(hir: Hir) -> LazyRegex {
        LazyRegex { hir, built: OnceLock::new() }
    }

    /// The regex, built now if it was not yet; `None` if it cannot be
    /// built (see [`LazyRegex::build`]).
    pub(crate) fn get(&self) -> Option<&meta::Regex> {
        self.build().ok()
    }

    /// Builds the regex if it was not yet.
    pub(crate) fn build(&self) -> Result<&meta::Regex, &PatternProblem> {
        self.built.get_or_init(|| build(&self.hir)).as_ref()
    }
}

/// Why a pattern did not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PatternProblem {
    pub(crate) reason: String,
    pub(crate) span: Option<Range<usize>>,
    pub(crate) hint: Option<String>,
}

/// The shortest literal, in bytes, worth a prefilter entry. Shorter ones
/// (`rm`, `nc`) occur inside too many ordinary words to save work.
pub(crate) const MIN_LITERAL_BYTES: usize = 3;

/// Parses and analyses a pattern of the given kind; the automata are
/// built on first use. Patterns that match the empty string are refused:
/// they would fire on (or exclude) every text.
pub(crate) fn prepare_pattern(
    kind: PatternKind,
    value: &str,
) -> Result<PreparedPattern, PatternProblem> {
    let source = match kind {
        PatternKind::Regex => value.to_string(),
        // Content is NFKC-normalised before matching, so the needle is too.
        PatternKind::Contains => {
            let needle: String = value.nfkc().collect();
            format!("(?i){}", regex_syntax::escape(&needle))
        }
    };
    let hir = parse_re2(&source)?;
    if hir.properties().minimum_len() == Some(0) {
        return Err(PatternProblem {
            reason: "it matches the empty string, so it would match every text".into(),
            span: None,
            hint: Some("require at least one character, e.g. `+` instead of `*`".into()),
        });
    }
    Ok(PreparedPattern {
        literals: required_literals(&hir),
        single_line: !can_match_newline(&hir),
        regex: LazyRegex::new(hir),
    })
}

/// Compiles a regex of our own (the redactor's), with the same RE2 rules.
pub(crate) fn compile_internal(pattern: &str) -> Result<meta::Regex, PatternProblem> {
    let hir = parse_re2(pattern)?;
    build(&hir)
}

/// Parses with RE2's ASCII meaning of `\d \s \w \b` and translates to HIR.
fn parse_re2(pattern: &str) -> Result<Hir, PatternProblem> {
    let mut ast = ast::parse::ParserBuilder::new()
        .nest_limit(100)
        .build()
        .parse(pattern)
        .map_err(|e| problem(pattern, e.kind().to_string(), e.span()))?;
    asciify(&mut ast);
    regex_syntax::hir::translate::TranslatorBuilder::new()
        .build()
        .translate(pattern, &ast)
        .map_err(|e| problem(pattern, e.kind().to_string(), e.span()))
}

fn build(hir: &Hir) -> Result<meta::Regex, PatternProblem> {
    meta::Builder::new().build_from_hir(hir).map_err(|e| PatternProblem {
        reason: e.to_string(),
        span: None,
        hint: None,
    })
}

fn problem(pattern: &str, reason: String, span: &ast::Span) -> PatternProblem {
    let range = span.start.offset..span.end.offset;
    let at = pattern.get(range.start..).unwrap_or("");
    let hint = if at.starts_with("\\Q") || at.starts_with("\\E") {
        Some("RE2's \\Q...\\E quoting does not exist in Rust's regex; escape each character")
    } else if at.starts_with("\\C") {
        Some("RE2's \\C (any byte) does not exist in Rust's regex; use . instead")
    } else if at.starts_with("\\Z") {
        Some("use \\z for the end of the text")
    } else if ["(?=", "(?!", "(?<=", "(?<!"].iter().any(|p| at.starts_with(p)) {
        Some("look-around is supported neither by RE2 nor by Rust's regex; use exclude_patterns")
    } else if at.len() >= 2
        && at.starts_with('\\')
        && at[1..].starts_with(|c: char| c.is_ascii_digit())
    {
        Some("backreferences are supported neither by RE2 nor by Rust's regex")
    } else {
        None
    };
    PatternProblem { reason, span: Some(range), hint: hint.map(str::to_string) }
}

/// Rewrites Perl classes and word boundaries to their ASCII forms in place:
/// `\d` becomes `[[:digit:]]`, `\S` `[^[:space:]]`, `\b` `(?-u:\b)`.
fn asciify(node: &mut Ast) {
    match node {
        Ast::ClassPerl(perl) => {
            let item = ast::ClassSetItem::Ascii(perl_to_ascii(perl, false));
            *node = Ast::class_bracketed(ast::ClassBracketed {
                span: perl.span,
                negated: perl.negated,
                kind: ast::ClassSet::Item(item),
            });
        }
        Ast::ClassBracketed(bracketed) => asciify_set(&mut bracketed.kind),
        Ast::Assertion(assertion) if is_word_assertion(&assertion.kind) => {
            let span = assertion.span;
            let inner = std::mem::replace(node, Ast::empty(span));
            *node = Ast::group(ast::Group {
                span,
                kind: ast::GroupKind::NonCapturing(ast::Flags {
                    span,
                    items: vec![
                        ast::FlagsItem { span, kind: ast::FlagsItemKind::Negation },
                        ast::FlagsItem { span, kind: ast::FlagsItemKind::Flag(ast::Flag::Unicode) },
                    ],
                }),
                ast: Box::new(inner),
            });
        }
        Ast::Repetition(repetition) => asciify(&mut repetition.ast),
        Ast::Group(group) => asciify(&mut group.ast),
        Ast::Alternation(alternation) => alternation.asts.iter_mut().for_each(asciify),
        Ast::Concat(concat) => concat.asts.iter_mut().for_each(asciify),
        _ => {}
    }
}

fn asciify_set(set: &mut ast::ClassSet) {
    match set {
        ast::ClassSet::Item(item) => asciify_item(item),
        ast::ClassSet::BinaryOp(op) => {
            asciify_set(&mut op.lhs);
            asciify_set(&mut op.rhs);
        }
    }
}

fn asciify_item(item: &mut ast::ClassSetItem) {
    match item {
        ast::ClassSetItem::Perl(perl) => {
            *item = ast::ClassSetItem::Ascii(perl_to_ascii(perl, perl.negated));
        }
        ast::ClassSetItem::Bracketed(bracketed) => asciify_set(&mut bracketed.kind),
        ast::ClassSetItem::Union(union) => union.items.iter_mut().for_each(asciify_item),
        _ => {}
    }
}

fn perl_to_ascii(perl: &ast::ClassPerl, negated: bool) -> ast::ClassAscii {
    let kind = match perl.kind {
        ast::ClassPerlKind::Digit => ast::ClassAsciiKind::Digit,
        ast::ClassPerlKind::Space => ast::ClassAsciiKind::Space,
        ast::ClassPerlKind::Word => ast::ClassAsciiKind::Word,
    };
    ast::ClassAscii { span: perl.span, kind, negated }
}

fn is_word_assertion(kind: &ast::AssertionKind) -> bool {
    !matches!(
        kind,
        ast::AssertionKind::StartLine
            | ast::AssertionKind::EndLine
            | ast::AssertionKind::StartText
            | ast::AssertionKind::EndText
    )
}

/// Whether some match of `hir` can contain `\n`.
fn can_match_newline(hir: &Hir) -> bool {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => false,
        HirKind::Literal(literal) => literal.0.contains(&b'\n'),
        HirKind::Class(Class::Unicode(class)) => {
            class.ranges().iter().any(|r| r.start() <= '\n' && '\n' <= r.end())
        }
        HirKind::Class(Class::Bytes(class)) => {
            class.ranges().iter().any(|r| r.start() <= b'\n' && b'\n' <= r.end())
        }
        HirKind::Repetition(repetition) => {
            repetition.max != Some(0) && can_match_newline(&repetition.sub)
        }
        HirKind::Capture(capture) => can_match_newline(&capture.sub),
        HirKind::Concat(subs) | HirKind::Alternation(subs) => subs.iter().any(can_match_newline),
    }
}

/// Largest set of strings kept while extracting literals.
const MAX_SET: usize = 64;
/// Longest string kept while extracting literals, in bytes.
const MAX_STRING: usize = 64;
/// Largest character class expanded into literals, in characters.
const MAX_CLASS: usize = 8;

type Set = BTreeSet<String>;

/// What the walk knows about the strings a sub-expression matches.
#[derive(Debug, Clone, Default)]
struct Info {
    /// Every string it can match (folded), when that set is small.
    exact: Option<Set>,
    /// Strings of which every match contains one (folded); `None` if unknown.
    required: Option<Set>,
}

/// Folded literals such that every match of `hir` contains one of them, or
/// `None` if the best such set has a string shorter than
/// [`MIN_LITERAL_BYTES`].
pub(crate) fn required_literals(hir: &Hir) -> Option<Vec<String>> {
    let info = analyse(hir);
    let best = better(info.required, info.exact)?;
    (score(&best) >= MIN_LITERAL_BYTES).then(|| best.into_iter().collect())
}

fn analyse(hir: &Hir) -> Info {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => exact(Set::from([String::new()])),
        HirKind::Literal(literal) => match std::str::from_utf8(&literal.0) {
            Ok(text) => exact(Set::from([fold(text)])),
            Err(_) => Info::default(),
        },
        HirKind::Class(class) => match class_strings(class) {
            Some(set) => exact(set),
            None => Info::default(),
        },
        HirKind::Capture(capture) => analyse(&capture.sub),
        HirKind::Repetition(repetition) => {
            let sub = analyse(&repetition.sub);
            match (repetition.min, repetition.max) {
                (_, Some(0)) => exact(Set::from([String::new()])),
                (0, Some(1)) => match sub.exact {
                    Some(mut set) => {
                        set.insert(String::new());
                        exact(set)
                    }
                    None => Info::default(),
                },
                (0, _) => Info::default(),
                (1, Some(1)) => sub,
                _ => Info { exact: None, required: better(sub.required, sub.exact) },
            }
        }
        HirKind::Concat(subs) => analyse_concat(subs),
        HirKind::Alternation(subs) => analyse_alternation(subs),
    }
}

fn analyse_concat(subs: &[Hir]) -> Info {
    let mut run = Some(Set::from([String::new()]));
    let mut required: Option<Set> = None;
    let mut all_exact = true;
    for sub in subs {
        let info = analyse(sub);
        let joined = match (&run, &info.exact) {
            // Once the run is a usable literal, do not multiply it by a
            // class (`insmod\s` would become six strings for one byte more).
            (Some(left), Some(right)) if right.len() > 1 && score(left) >= MIN_LITERAL_BYTES => {
                None
            }
            (Some(left), Some(right)) => cross(left, right),
            _ => None,
        };
        if joined.is_some() {
            run = joined;
            continue;
        }
        // The run cannot grow: keep what it has, start again after `sub`.
        all_exact = false;
        required = better(required, run.take());
        required = better(required, better(info.required, info.exact.clone()));
        run = Some(info.exact.unwrap_or_else(|| Set::from([String::new()])));
    }
    if all_exact {
        return exact(run.unwrap_or_default());
    }
    Info { exact: None, required: better(required, run) }
}

fn analyse_alternation(subs: &[Hir]) -> Info {
    let infos: Vec<Info> = subs.iter().map(analyse).collect();
    let mut exact_union = Some(Set::new());
    let mut required_union = Some(Set::new());
    for info in infos {
        exact_union = union(exact_union, info.exact.clone());
        required_union = union(required_union, better(info.required, info.exact));
    }
    Info { exact: exact_union, required: required_union }
}

fn exact(set: Set) -> Info {
    Info { exact: Some(set), required: None }
}

fn union(left: Option<Set>, right: Option<Set>) -> Option<Set> {
    let mut left = left?;
    left.extend(right?);
    (left.len() <= MAX_SET).then_some(left)
}

fn cross(left: &Set, right: &Set) -> Option<Set> {
    if left.len().saturating_mul(right.len()) > MAX_SET {
        return None;
    }
    let mut out = Set::new();
    for a in left {
        for b in right {
            if a.len() + b.len() > MAX_STRING {
                return None;
            }
            out.insert(format!("{a}{b}"));
        }
    }
    Some(out)
}

/// The better of two requirement sets: the one whose shortest string is
/// longer, then the smaller one.
fn better(a: Option<Set>, b: Option<Set>) -> Option<Set> {
    match (a, b) {
        (Some(a), Some(b)) => {
            let (sa, sb) = (score(&a), score(&b));
            if sb > sa || (sb == sa && b.len() < a.len()) {
                Some(b)
            } else {
                Some(a)
            }
        }
        (a, b) => a.or(b).filter(|set| score(set) > 0),
    }
}

/// The length in bytes of the shortest string (0 for an empty set, which
/// cannot be used as a requirement).
fn score(set: &Set) -> usize {
    set.iter().map(String::len).min().unwrap_or(0)
}

/// The folded strings a small class matches, dropping members that NFKC
/// text cannot contain.
fn class_strings(class: &Class) -> Option<Set> {
    let mut members: Vec<char> = Vec::new();
    match class {
        Class::Unicode(class) => {
            for range in class.iter() {
                for c in range.start()..=range.end() {
                    members.push(c);
                    if members.len() > MAX_CLASS * 4 {
                        return None;
                    }
                }
            }
        }
        Class::Bytes(class) => {
            for range in class.iter() {
                for b in range.start()..=range.end() {
                    if !b.is_ascii() {
                        return None;
                    }
                    members.push(char::from(b));
                    if members.len() > MAX_CLASS * 4 {
                        return None;
                    }
                }
            }
        }
    }
    let set: Set = members
        .into_iter()
        .filter(|c| c.is_ascii() || is_nfkc_quick(std::iter::once(*c)) != IsNormalized::No)
        .map(|c| c.to_lowercase().collect())
        .collect();
    (!set.is_empty() && set.len() <= MAX_CLASS).then_some(set)
}

/// Lowercases each character on its own (no context rules such as the Greek
/// final sigma), exactly as the engine folds scanned text.
pub(crate) fn fold(text: &str) -> String {
    if text.is_ascii() {
        return text.to_ascii_lowercase();
    }
    text.chars().flat_map(char::to_lowercase).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regex(pattern: &str) -> meta::Regex {
        let prepared = prepare_pattern(PatternKind::Regex, pattern).unwrap();
        prepared.regex.get().unwrap().clone()
    }

    fn literals(pattern: &str) -> Option<Vec<String>> {
        prepare_pattern(PatternKind::Regex, pattern).unwrap().literals
    }

    #[test]
    fn literal_extraction_finds_required_strings() {
        let cases: &[(&str, &str, Option<&[&str]>)] = &[
            ("plain literal", "insmod", Some(&["insmod"])),
            ("case folded", "(?i)ReLease_Agent", Some(&["release_agent"])),
            ("longest piece of a concat", r"(?i)ignore\s+all\s+previous", Some(&["previous"])),
            ("alternation", r"(?i)\b(insmod|modprobe)\s", Some(&["insmod", "modprobe"])),
            ("optional char expands", "(?i)ab?cd", Some(&["abcd", "acd"])),
            ("class after a usable run ends it", "docker[._]sock", Some(&["docker"])),
            ("small class expands", "[._]sock", Some(&[".sock", "_sock"])),
            (
                "zero-width chars",
                "[\u{200B}\u{200C}\u{200D}]",
                Some(&["\u{200B}", "\u{200C}", "\u{200D}"]),
            ),
            ("no literal", r"[A-Za-z0-9+/]{40,}", None),
            ("too short", r"\bnc\s+-e", None),
            ("optional branch spoils alternation", "(?:abcdef|x*)y", None),
            ("repetition keeps requirement", "(?:secret_key)+=", Some(&["secret_key"])),
        ];
        for (name, pattern, want) in cases {
            let want = want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(literals(pattern), want, "{name}: {pattern}");
        }
    }

    #[test]
    fn newline_analysis_separates_single_line_patterns() {
        let cases = [
            ("dot stays on a line", "foo.*bar", true),
            ("spaces cross lines", r"foo\s+bar", false),
            ("negated class crosses", "foo[^x]bar", false),
            ("dot with s flag crosses", "(?s)foo.bar", false),
            ("horizontal space", "foo[ \t]+bar", true),
        ];
        for (name, pattern, single) in cases {
            let compiled = prepare_pattern(PatternKind::Regex, pattern).unwrap();
            assert_eq!(compiled.single_line, single, "{name}");
        }
    }

    #[test]
    fn perl_classes_and_word_boundaries_are_ascii_as_in_re2() {
        let digit = regex(r"^\d+$");
        assert!(digit.is_match("123"));
        assert!(!digit.is_match("١٢٣"), "Arabic-Indic digits are not \\d in RE2");
        let word = regex(r"\bcat\b");
        assert!(word.is_match("a cat."));
        assert!(word.is_match("écat"), "é is not an ASCII word character");
        let negated = regex(r"a[^\s]b\Sc");
        assert!(negated.is_match("axbyc"));
        assert!(!negated.is_match("a b c"));
    }

    #[test]
    fn contains_is_a_case_insensitive_normalised_substring() {
        let compiled = prepare_pattern(PatternKind::Contains, "Docker.SOCK").unwrap();
        let regex = compiled.regex.get().unwrap();
        assert!(regex.is_match("see /var/run/docker.sock"));
        assert!(!regex.is_match("dockerxsock"));
        assert_eq!(compiled.literals, Some(vec!["docker.sock".to_string()]));
        let fullwidth = prepare_pattern(PatternKind::Contains, "ｉｎｓｍｏｄ").unwrap();
        assert!(fullwidth.regex.get().unwrap().is_match("INSMOD"));
    }

    #[test]
    fn re2_only_syntax_gets_a_span_and_hint() {
        let err = prepare_pattern(PatternKind::Regex, r"a\Q.b\E").unwrap_err();
        assert_eq!(err.span, Some(1..3));
        assert!(err.hint.unwrap().contains("\\Q"));
        let err = prepare_pattern(PatternKind::Regex, "(?=x)y").unwrap_err();
        assert!(err.hint.unwrap().contains("look-around"));
        let err = prepare_pattern(PatternKind::Regex, "(ab").unwrap_err();
        assert_eq!(err.reason, "unclosed group");
    }
}
