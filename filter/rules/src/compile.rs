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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use regex_automata::meta;
use regex_syntax::ast::{self, Ast};
use regex_syntax::hir::literal::{ExtractKind, Extractor};
use regex_syntax::hir::{Class, Hir, HirKind};
use unicode_normalization::{is_nfkc_quick, IsNormalized, UnicodeNormalization};

use crate::engine::RegexMemory;
use crate::rule::PatternKind;

/// A pattern parsed, analysed and ready to be compiled.
#[derive(Debug)]
pub(crate) struct PreparedPattern {
    /// The regex (for `contains`, an escaped case-insensitive literal),
    /// built on first use.
    pub(crate) regex: LazyRegex,
    /// Sets of folded strings such that every match contains a string of
    /// each set (best set first); empty when no useful set exists and the
    /// pattern must run on every text.
    pub(crate) literals: Vec<Vec<String>>,
    /// Whether no match can contain a line feed, so that searching only the
    /// lines where a literal occurs finds every match.
    pub(crate) single_line: bool,
    /// Whether every match contains a non-ASCII character.
    pub(crate) needs_non_ascii: bool,
    /// Folded strings one of which every match starts with (each at least
    /// [`MIN_START_BYTES`]), when there are few enough; empty otherwise.
    /// On ASCII text the engine runs the regex anchored at their
    /// occurrences instead of over the whole text.
    pub(crate) starts: Vec<String>,
    /// The bytes a match can start with.
    pub(crate) first_bytes: ByteSet,
}

/// A set of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct ByteSet([u64; 4]);

impl ByteSet {
    fn all() -> ByteSet {
        ByteSet([u64::MAX; 4])
    }

    fn add_range(&mut self, first: u8, last: u8) {
        for b in first..=last {
            if let Some(word) = self.0.get_mut(usize::from(b / 64)) {
                *word |= 1 << (b % 64);
            }
        }
    }

    pub(crate) fn contains(&self, b: u8) -> bool {
        self.0.get(usize::from(b / 64)).is_some_and(|word| word & (1 << (b % 64)) != 0)
    }
}

/// A regex whose automata are built on first use, and dropped again when
/// the engine's [`RegexBudget`] is exceeded.
///
/// Building the automata of the whole library costs about 300 ms natively
/// (measured 2026-12-03: forward and reverse NFAs of 447 patterns, most of
/// it in bounded repetitions of Unicode classes such as `[^\n]{0,400}`),
/// while parsing and analysing it costs a fraction of that. Most patterns
/// never become candidates in ordinary traffic, so a VM builds only the few
/// it needs. Parsing at load time still refuses every syntax error; what is
/// left to fail later is only the automaton size limit, and
/// [`Engine::compile_all`](crate::Engine::compile_all) checks that (the
/// library's tests call it, custom rules are built eagerly).
///
/// Built and searched, the library's regexes take about 50 MiB of a VM's
/// linear memory (measured 2026-12-04 in V8: 22.6 MiB with none built,
/// 75.9 MiB after every example of the library was scanned; `EX-006` alone
/// takes 1 MB natively), which traffic that makes every pattern a candidate
/// sooner or later would reach. So the engine keeps at most
/// [`RegexBudget`]'s limit of them between scans, dropping the least
/// recently used, and builds a dropped one again when it is needed.
#[derive(Debug)]
pub(crate) struct LazyRegex {
    /// The pattern as RE2 syntax, parsed again to build: holding the
    /// library's parsed patterns (HIR) instead took about 5 MiB per VM
    /// (22.6 against 17.2 MiB for the engine in V8 before any scan).
    source: Box<str>,
    state: Mutex<Built>,
}

/// What a [`LazyRegex`] holds.
#[derive(Debug)]
enum Built {
    Not,
    /// Its heap bytes and when it was last used ([`RegexBudget`]'s clock).
    Regex {
        regex: Arc<meta::Regex>,
        bytes: usize,
        used: u64,
    },
    /// A build that failed fails again: kept.
    Failed(PatternProblem),
}

impl LazyRegex {
    fn new(source: String) -> LazyRegex {
        LazyRegex { source: source.into_boxed_str(), state: Mutex::new(Built::Not) }
    }

    /// The regex, built now if it is not; `None` if it cannot be built
    /// (see [`LazyRegex::build`]).
    pub(crate) fn get(&self, budget: &RegexBudget) -> Option<Arc<meta::Regex>> {
        self.build(budget).ok()
    }

    /// The regex, built now (and counted in `budget`) if it is not.
    pub(crate) fn build(&self, budget: &RegexBudget) -> Result<Arc<meta::Regex>, PatternProblem> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *state {
            Built::Regex { regex, used, .. } => {
                *used = budget.tick();
                return Ok(Arc::clone(regex));
            }
            Built::Failed(problem) => return Err(problem.clone()),
            Built::Not => {}
        }
        match compile_internal(&self.source) {
            Ok(regex) => {
                // The automata, and the search cache each regex keeps
                // beside them (as it is new: the lazy DFA's grows from
                // there), about as much again.
                let bytes = regex.memory_usage() + regex.create_cache().memory_usage();
                budget.built(bytes);
                let regex = Arc::new(regex);
                *state = Built::Regex { regex: Arc::clone(&regex), bytes, used: budget.tick() };
                Ok(regex)
            }
            Err(problem) => {
                *state = Built::Failed(problem.clone());
                Err(problem)
            }
        }
    }

    /// When the regex was last used, if it is built.
    pub(crate) fn last_used(&self) -> Option<u64> {
        match &*self.state.lock().unwrap_or_else(PoisonError::into_inner) {
            Built::Regex { used, .. } => Some(*used),
            Built::Not | Built::Failed(_) => None,
        }
    }

    /// Drops the built regex (it is built again on its next use), giving
    /// its bytes back to `budget`.
    pub(crate) fn drop_built(&self, budget: &RegexBudget) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Built::Regex { bytes, .. } = &*state {
            budget.dropped(*bytes);
            *state = Built::Not;
        }
    }
}

/// How much the built regexes of one engine may keep between scans, and
/// what they keep now.
#[derive(Debug)]
pub(crate) struct RegexBudget {
    limit: usize,
    used: AtomicUsize,
    clock: AtomicU64,
    builds: AtomicU64,
    drops: AtomicU64,
    peak: AtomicUsize,
    /// The clock when the current scan began ([`RegexBudget::start_scan`]).
    scan_start: AtomicU64,
}

impl RegexBudget {
    /// A budget of `limit` heap bytes, each regex counted as its automata
    /// (`meta::Regex::memory_usage`) plus a new search cache.
    pub(crate) fn new(limit: usize) -> RegexBudget {
        RegexBudget {
            limit,
            used: AtomicUsize::new(0),
            clock: AtomicU64::new(0),
            builds: AtomicU64::new(0),
            drops: AtomicU64::new(0),
            peak: AtomicUsize::new(0),
            scan_start: AtomicU64::new(0),
        }
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// Marks the start of a scan: regexes used from now on were used by it.
    /// (An engine shared by threads scanning at once mixes their marks,
    /// which changes only which regexes a trim drops first.)
    pub(crate) fn start_scan(&self) {
        self.scan_start.store(self.clock.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// The clock at the start of the current scan.
    pub(crate) fn scan_started(&self) -> u64 {
        self.scan_start.load(Ordering::Relaxed)
    }

    fn built(&self, bytes: usize) {
        let used = self.used.fetch_add(bytes, Ordering::Relaxed).saturating_add(bytes);
        self.peak.fetch_max(used, Ordering::Relaxed);
        self.builds.fetch_add(1, Ordering::Relaxed);
    }

    fn dropped(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
        self.drops.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes over the limit, if any.
    pub(crate) fn excess(&self) -> usize {
        self.used.load(Ordering::Relaxed).saturating_sub(self.limit)
    }

    /// What the built regexes hold now, and the counts since the engine
    /// was made.
    pub(crate) fn memory(&self) -> RegexMemory {
        RegexMemory {
            bytes: self.used.load(Ordering::Relaxed),
            builds: self.builds.load(Ordering::Relaxed),
            drops: self.drops.load(Ordering::Relaxed),
            peak_bytes: self.peak.load(Ordering::Relaxed),
        }
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
        needs_non_ascii: requires_non_ascii(&hir),
        starts: start_literals(&hir),
        first_bytes: first_bytes(&hir),
        regex: LazyRegex::new(source),
    })
}

/// Compiles a regex with the library's RE2 rules: the redactor's own, and a
/// [`LazyRegex`]'s from its source.
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

/// The most each of a regex's lazy DFA caches (forward and reverse) may
/// grow to before it is cleared (regex-automata's default is 2 MiB). The
/// budget counts a regex's cache as it is new, so this bounds what its
/// searches add to that. Measured in V8 (2026-12-04, 22:30 UTC): with the
/// bound held within scans, a 1 MiB body of every library example between
/// runs of random non-ASCII text took a VM to 50.6 MiB with 2 MiB caches and
/// 41.6 MiB with 256 KiB; 64 KiB made the 1 MiB mixed benchmark body three
/// times slower, 256 KiB left every benchmark body's speed as it was (see
/// rules/README.md, "Memory of the built regexes").
const HYBRID_CACHE_BYTES: usize = 256 << 10;

fn build(hir: &Hir) -> Result<meta::Regex, PatternProblem> {
    meta::Builder::new()
        .configure(meta::Config::new().hybrid_cache_capacity(HYBRID_CACHE_BYTES))
        .build_from_hir(hir)
        .map_err(|e| PatternProblem { reason: e.to_string(), span: None, hint: None })
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

/// Largest product of two sets joined while extracting literals.
const MAX_CROSS: usize = 64;
/// Largest set of strings kept while extracting literals.
const MAX_SET: usize = 256;
/// Longest string kept while extracting literals, in bytes.
const MAX_STRING: usize = 64;
/// Largest character class expanded into literals when it has ASCII
/// members (`[._]`, case pairs), in characters.
const MAX_CLASS: usize = 8;
/// Largest class with ASCII members expanded into start literals: ten,
/// for `\d`. A card number's `4\d{3}` then starts with `40` to `49`,
/// where an anchored search is cheaper than searching the whole text for
/// the pattern, which has no required literal.
const MAX_START_CLASS: usize = 10;
/// Largest class of only non-ASCII characters expanded into literals
/// (homoglyphs, invisible characters): each member is a rare string.
const MAX_WIDE_CLASS: usize = 256;
/// A set scoring this much is selective enough that regex-syntax's
/// extraction is not tried as well.
const GOOD_LITERAL_SCORE: usize = 5;
/// regex-syntax's extraction is tried only when the walk's best set
/// scores less than this.
const EXTRACT_BELOW_SCORE: usize = 4;
/// Most literal sets a pattern requires together.
pub(crate) const MAX_CONJUNCTS: usize = 4;

type Set = BTreeSet<String>;

/// What the walk knows about the strings a sub-expression matches.
#[derive(Debug, Clone, Default)]
struct Info {
    /// Every string it can match (folded), when that set is small.
    exact: Option<Set>,
    /// Sets of which every match contains a string of each (folded): a
    /// conjunction of disjunctions. Empty if nothing is known.
    all: Vec<Set>,
}

impl Info {
    /// The best single set every match contains a string of.
    fn best(&self) -> Option<Set> {
        let mut best: Option<Set> = None;
        for set in self.all.iter().chain(&self.exact) {
            best = better(best, Some(set.clone()));
        }
        best.filter(|set| score(set) > 0)
    }
}

/// Folded literal sets that every match of `hir` contains a string of each,
/// best first, at most [`MAX_CONJUNCTS`]; empty when no set scores at least
/// [`MIN_LITERAL_BYTES`] (non-ASCII characters count three).
pub(crate) fn required_literals(hir: &Hir) -> Vec<Vec<String>> {
    let info = analyse(hir);
    let mut sets: Vec<Set> = info.all.into_iter().chain(info.exact).collect();
    // regex-syntax's prefix and suffix sets see through the factoring the
    // translator does (`ssn|social` becomes `s(?:sn|ocial)`), which our walk
    // sees as a one-byte run followed by an alternation.
    // Extraction is costly on big case-insensitive alternations (it was a
    // third of `Engine::new`), so it is only asked for when the walk found
    // nothing selective. On the 2026-12-04 library, two thirds of the
    // extractions for walks scoring 4 changed nothing, and the others only
    // added a weak fourth set (`do\s`, `npm\s`).
    let walked = sets.iter().map(score).max().unwrap_or(0);
    let kinds: &[ExtractKind] = if walked >= EXTRACT_BELOW_SCORE {
        &[]
    } else {
        &[ExtractKind::Prefix, ExtractKind::Suffix]
    };
    for kind in kinds.iter().cloned() {
        // A higher total than the default 250: `(?i)` gives each `s` three
        // variants (`S`, `s`, `ſ`), so case-insensitive words exceed 250
        // quickly, and folding merges the variants again.
        let seq = Extractor::new().kind(kind).limit_total(1024).extract(hir);
        let folded: Option<Set> = seq.literals().and_then(|literals| {
            literals.iter().map(|l| std::str::from_utf8(l.as_bytes()).ok().map(fold)).collect()
        });
        // Variants with characters NFKC text cannot hold (`ſ` for `s`)
        // can never occur, so leaving them out keeps the set required.
        let folded = folded.map(|set| set.into_iter().filter(|s| occurs_in_nfkc(s)).collect());
        sets.extend(folded.filter(|set: &Set| !set.is_empty() && set.len() <= MAX_SET));
    }
    // Without a selective set, a set of strings that each hold a character
    // ordinary text seldom has (`@` for e-mail lists) still spares most
    // texts a search.
    if sets.iter().any(|set| score(set) >= MIN_LITERAL_BYTES) {
        sets.retain(|set| score(set) >= MIN_LITERAL_BYTES);
    } else {
        sets.retain(|set| !set.is_empty() && set.iter().all(|s| s.bytes().any(is_rare_byte)));
    }
    sets.sort_by(|a, b| score(b).cmp(&score(a)).then(a.len().cmp(&b.len())));
    sets.dedup();
    // A set implied by a better one (each of whose strings contains one of
    // its strings) adds no filtering.
    // When the weaker set is smaller and still selective (`ignore` against
    // `ignore ` and five other blanks), it replaces the stronger one: fewer
    // automaton entries for almost the same filtering.
    let mut kept: Vec<Set> = Vec::new();
    for set in sets {
        match kept.iter_mut().find(|better| implies(better, &set)) {
            Some(better) if set.len() < better.len() && score(&set) >= GOOD_LITERAL_SCORE - 1 => {
                *better = set;
            }
            Some(_) => {}
            None => kept.push(set),
        }
    }
    let mut sets = kept;
    sets.truncate(MAX_CONJUNCTS);
    sets.into_iter().map(|set| set.into_iter().collect()).collect()
}

/// The shortest start literal, in bytes. One-byte starts (`#`, `-`) occur
/// too often for an anchored search at each to beat one search over the
/// whole text.
pub(crate) const MIN_START_BYTES: usize = 2;

/// Folded prefixes of which every match of `hir` starts with one (see
/// [`PreparedPattern::starts`]); empty when they are unknown, too many or
/// too short.
pub(crate) fn start_literals(hir: &Hir) -> Vec<String> {
    // Our own walk, which folds case as it goes (a `(?i)` class becomes one
    // string); regex-syntax's extraction multiplies case variants and gives
    // up on the big case-insensitive alternations rules are made of.
    let Some(set) = prefixes(hir).map(|(set, _)| set).filter(usable_starts) else {
        return Vec::new();
    };
    // A string that starts with another adds nothing: the shorter one
    // occurs wherever it does.
    let all: Vec<String> = set.into_iter().collect();
    all.iter()
        .filter(|s| !all.iter().any(|t| t.len() < s.len() && s.starts_with(t.as_str())))
        .cloned()
        .collect()
}

/// The bytes a match of `hir` can start with (every byte when it can
/// match the empty string, which patterns cannot).
pub(crate) fn first_bytes(hir: &Hir) -> ByteSet {
    let mut set = ByteSet::default();
    if add_first_bytes(hir, &mut set) {
        return ByteSet::all();
    }
    set
}

/// Adds the bytes a non-empty match of `hir` can start with to `set`;
/// returns whether `hir` can also match the empty string (so that what
/// follows it can start a match too).
fn add_first_bytes(hir: &Hir, set: &mut ByteSet) -> bool {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => true,
        HirKind::Literal(literal) => match literal.0.first() {
            Some(&b) => {
                set.add_range(b, b);
                false
            }
            None => true,
        },
        HirKind::Class(Class::Unicode(class)) => {
            for range in class.ranges() {
                let (first, last) = (u32::from(range.start()), u32::from(range.end()));
                if first < 0x80 {
                    set.add_range(first as u8, last.min(0x7F) as u8);
                }
                // A non-ASCII character starts with a UTF-8 lead byte.
                if last >= 0x80 {
                    set.add_range(0xC0, 0xFF);
                }
            }
            false
        }
        HirKind::Class(Class::Bytes(class)) => {
            for range in class.ranges() {
                set.add_range(range.start(), range.end());
            }
            false
        }
        HirKind::Capture(capture) => add_first_bytes(&capture.sub, set),
        HirKind::Repetition(repetition) => {
            add_first_bytes(&repetition.sub, set) || repetition.min == 0
        }
        HirKind::Concat(subs) => subs.iter().all(|sub| add_first_bytes(sub, set)),
        HirKind::Alternation(subs) => {
            // Every branch adds its bytes (no short circuit).
            let mut empty = false;
            for sub in subs {
                empty |= add_first_bytes(sub, set);
            }
            empty
        }
    }
}

/// Longest start literal kept, in bytes.
const MAX_START_BYTES: usize = 8;

/// Whether a start set is worth anchored searches: not empty, not too
/// many strings, none shorter than [`MIN_START_BYTES`] unless it is one
/// punctuation character that ordinary text and JSON seldom hold.
fn usable_starts(set: &Set) -> bool {
    let short_ok = |s: &String| match s.as_bytes() {
        [b] => b"#-*/<|=$`~!@%^&;\\".contains(b),
        _ => false,
    };
    !set.is_empty()
        && set.len() <= MAX_SET
        && set.iter().all(|s| s.len() >= MIN_START_BYTES || short_ok(s))
}

/// Folded strings one of which every match of `hir` starts with, and
/// whether they are exactly its matches (so that what follows can be
/// appended). `None` when unknown (a big class, an optional start).
fn prefixes(hir: &Hir) -> Option<(Set, bool)> {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Some((Set::from([String::new()]), true)),
        HirKind::Literal(literal) => {
            let text = std::str::from_utf8(&literal.0).ok()?;
            Some(clip(Set::from([fold(text)])))
        }
        HirKind::Class(class) => Some((class_strings(class, MAX_START_CLASS)?, true)),
        HirKind::Capture(capture) => prefixes(&capture.sub),
        HirKind::Repetition(repetition) => {
            if repetition.min == 0 {
                return None;
            }
            let (set, exact) = prefixes(&repetition.sub)?;
            Some((set, exact && repetition.max == Some(1)))
        }
        HirKind::Concat(subs) => prefixes_concat(subs, MAX_START_BYTES),
        HirKind::Alternation(subs) => {
            let mut all = Set::new();
            let mut all_exact = true;
            for sub in subs {
                let (set, exact) = prefixes(sub)?;
                all.extend(set);
                all_exact &= exact;
                if all.len() > MAX_SET {
                    return None;
                }
            }
            Some((all, all_exact))
        }
    }
}

/// Like [`prefixes`] for a concatenation; strings need only be `wanted`
/// bytes long (what comes after is not looked at).
fn prefixes_concat(subs: &[Hir], wanted: usize) -> Option<(Set, bool)> {
    let Some((first, rest)) = subs.split_first() else {
        return Some((Set::from([String::new()]), true));
    };
    if wanted == 0 {
        return Some((Set::from([String::new()]), false));
    }
    // An optional piece: a match starts with it or with what follows.
    if let HirKind::Repetition(repetition) = first.kind() {
        if repetition.min == 0 {
            let (mut with, _) = prefixes(&repetition.sub)?;
            let (without, _) = prefixes_concat(rest, wanted)?;
            with.extend(without);
            return (with.len() <= MAX_SET).then_some((with, false));
        }
    }
    let (head, exact) = prefixes(first)?;
    let shortest = head.iter().map(String::len).min().unwrap_or(0);
    if !exact || shortest >= wanted {
        return Some((head, false));
    }
    match prefixes_concat(rest, wanted - shortest) {
        // An empty head (`\b`, `^`) joins nothing: the tail is the answer
        // however many strings it has (`cross` would refuse more than
        // `MAX_CROSS`).
        Some((tail, tail_exact)) if head.len() == 1 && shortest == 0 => Some((tail, tail_exact)),
        Some((tail, tail_exact)) => match cross_up_to(&head, &tail, MAX_SET) {
            Some(joined) => {
                let (joined, clipped) = clip(joined);
                Some((joined, tail_exact && clipped))
            }
            None => Some((head, false)),
        },
        None => Some((head, false)),
    }
}

/// Cuts strings to [`MAX_START_BYTES`] (on a character boundary); the
/// flag is false when something was cut.
fn clip(set: Set) -> (Set, bool) {
    let mut exact = true;
    let set = set
        .into_iter()
        .map(|s| {
            if s.len() <= MAX_START_BYTES {
                return s;
            }
            exact = false;
            let mut end = MAX_START_BYTES;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s[..end].to_string()
        })
        .collect();
    (set, exact)
}

/// Bytes rare enough in ordinary prose, Markdown and JSON that a literal
/// holding one is selective even when short.
fn is_rare_byte(b: u8) -> bool {
    b"@`|$\\~^".contains(&b)
}

/// Whether every string of `strong` contains a string of `weak`.
fn implies(strong: &Set, weak: &Set) -> bool {
    strong.iter().all(|s| weak.iter().any(|w| s.contains(w.as_str())))
}

/// Whether `text` can occur in NFKC-normalised text, as far as its
/// characters go.
fn occurs_in_nfkc(text: &str) -> bool {
    text.chars().all(|c| c.is_ascii() || is_nfkc_quick(std::iter::once(c)) != IsNormalized::No)
}

/// Whether every match of `hir` contains a non-ASCII character, so that
/// the pattern cannot match ASCII text.
pub(crate) fn requires_non_ascii(hir: &Hir) -> bool {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => false,
        HirKind::Literal(literal) => !literal.0.is_ascii(),
        HirKind::Class(Class::Unicode(class)) => {
            class.ranges().iter().all(|r| !r.start().is_ascii())
        }
        HirKind::Class(Class::Bytes(class)) => class.ranges().iter().all(|r| !r.start().is_ascii()),
        HirKind::Repetition(repetition) => {
            repetition.min > 0 && requires_non_ascii(&repetition.sub)
        }
        HirKind::Capture(capture) => requires_non_ascii(&capture.sub),
        HirKind::Concat(subs) => subs.iter().any(requires_non_ascii),
        HirKind::Alternation(subs) => !subs.is_empty() && subs.iter().all(requires_non_ascii),
    }
}

fn analyse(hir: &Hir) -> Info {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => exact(Set::from([String::new()])),
        HirKind::Literal(literal) => match std::str::from_utf8(&literal.0) {
            Ok(text) => exact(Set::from([fold(text)])),
            Err(_) => Info::default(),
        },
        HirKind::Class(class) => match class_strings(class, MAX_CLASS) {
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
                _ => Info { exact: None, all: sub.all.into_iter().chain(sub.exact).collect() },
            }
        }
        HirKind::Concat(subs) => analyse_concat(subs),
        HirKind::Alternation(subs) => analyse_alternation(subs),
    }
}

fn analyse_concat(subs: &[Hir]) -> Info {
    let mut run = Set::from([String::new()]);
    let mut all: Vec<Set> = Vec::new();
    let mut all_exact = true;
    for sub in subs {
        let info = analyse(sub);
        let joined = match &info.exact {
            // Once the run is a usable literal, do not multiply it by a
            // class (`insmod\s` would become six strings for one byte more).
            Some(right) if right.len() > 1 && score(&run) >= MIN_LITERAL_BYTES => None,
            Some(right) => cross(&run, right),
            None => None,
        };
        if let Some(joined) = joined {
            run = joined;
            continue;
        }
        // The run cannot grow: keep it as a requirement, start again.
        all_exact = false;
        all.push(std::mem::take(&mut run));
        all.extend(info.all);
        run = info.exact.unwrap_or_else(|| Set::from([String::new()]));
    }
    if all_exact {
        return exact(run);
    }
    all.push(run);
    all.retain(|set| score(set) > 0);
    Info { exact: None, all }
}

fn analyse_alternation(subs: &[Hir]) -> Info {
    let mut exact_union = Some(Set::new());
    let mut best_union = Some(Set::new());
    for info in subs.iter().map(analyse) {
        best_union = union(best_union, info.best());
        exact_union = union(exact_union, info.exact);
    }
    Info { exact: exact_union, all: best_union.into_iter().collect() }
}

fn exact(set: Set) -> Info {
    Info { exact: Some(set), all: Vec::new() }
}

fn union(left: Option<Set>, right: Option<Set>) -> Option<Set> {
    let mut left = left?;
    left.extend(right?);
    (left.len() <= MAX_SET).then_some(left)
}

fn cross(left: &Set, right: &Set) -> Option<Set> {
    cross_up_to(left, right, MAX_CROSS)
}

/// Every string of `left` followed by every string of `right`; `None` when
/// that would be more than `limit` strings or one longer than
/// [`MAX_STRING`]. Start literals take up to [`MAX_SET`]: a case-sensitive
/// country code followed by a digit (`DE0` to `LU9`, 170 strings) hits far
/// less often than the code alone, which occurs inside ordinary words.
fn cross_up_to(left: &Set, right: &Set, limit: usize) -> Option<Set> {
    if left.len().saturating_mul(right.len()) > limit {
        return None;
    }
    let mut out = Set::new();
    for a in left {
        for b in right {
            if a.len() + b.len() > MAX_STRING {
                return None;
            }
            let mut joined = String::with_capacity(a.len() + b.len());
            joined.push_str(a);
            joined.push_str(b);
            out.insert(joined);
        }
    }
    Some(out)
}

/// The better of two requirement sets: the one whose weakest string scores
/// higher, then the smaller one.
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
        (a, b) => a.or(b),
    }
}

/// How selective a set is: the score of its weakest string, where each
/// ASCII character counts one and each other character three (they are
/// rare in most traffic). 0 for an empty set or one holding `""`.
fn score(set: &Set) -> usize {
    let string_score = |s: &String| s.chars().map(|c| if c.is_ascii() { 1 } else { 3 }).sum();
    set.iter().map(string_score).min().unwrap_or(0)
}

/// The folded strings a small class matches, dropping members that NFKC
/// text cannot contain; `None` when it has more than `limit` members with
/// an ASCII one (or more than [`MAX_WIDE_CLASS`] others).
fn class_strings(class: &Class, limit: usize) -> Option<Set> {
    // Big classes (`[^\n]`, `\p{L}`) are refused before their members
    // are listed (listing them was a tenth of `Engine::new` inside V8).
    // A Unicode range's code-point count exceeds its character count by
    // the surrogates it spans, 2048 at most over the whole class.
    let code_points: u32 = match class {
        Class::Unicode(class) => class
            .iter()
            .map(|r| u32::from(r.end()) - u32::from(r.start()) + 1)
            .fold(0, u32::saturating_add)
            .saturating_sub(2048),
        Class::Bytes(class) => class
            .iter()
            .map(|r| u32::from(r.end()) - u32::from(r.start()) + 1)
            .fold(0, u32::saturating_add),
    };
    if code_points as usize > MAX_WIDE_CLASS * 2 {
        return None;
    }
    let mut members: Vec<char> = Vec::new();
    let mut push = |c: char| {
        members.push(c);
        members.len() <= MAX_WIDE_CLASS * 2
    };
    let complete = match class {
        Class::Unicode(class) => {
            class.iter().all(|range| (range.start()..=range.end()).all(&mut push))
        }
        Class::Bytes(class) => class.iter().all(|range| {
            (range.start()..=range.end()).all(|b| b.is_ascii() && push(char::from(b)))
        }),
    };
    if !complete {
        return None;
    }
    let limit = if members.iter().all(|c| !c.is_ascii()) { MAX_WIDE_CLASS } else { limit };
    let set: Set = members
        .into_iter()
        .filter(|c| occurs_in_nfkc(c.encode_utf8(&mut [0; 4])))
        .map(|c| c.to_lowercase().collect())
        .collect();
    (!set.is_empty() && set.len() <= limit).then_some(set)
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
        (*prepared.regex.get(&RegexBudget::new(usize::MAX)).unwrap()).clone()
    }

    fn literals(pattern: &str) -> Vec<Vec<String>> {
        prepare_pattern(PatternKind::Regex, pattern).unwrap().literals
    }

    #[test]
    fn literal_extraction_finds_required_strings() {
        let cases: &[(&str, &str, &[&[&str]])] = &[
            ("plain literal", "insmod", &[&["insmod"]]),
            ("case folded", "(?i)ReLease_Agent", &[&["release_agent"]]),
            (
                "each piece of a concat is required",
                r"(?i)ignore\s+all\s+previous",
                &[&["previous"], &["ignore"], &["all"]],
            ),
            ("alternation", r"(?i)\b(insmod|modprobe)\s", &[&["insmod", "modprobe"]]),
            ("optional char expands", "(?i)ab?cd", &[&["abcd", "acd"]]),
            (
                "class after a usable run ends it",
                "docker[._]sock",
                &[&["docker"], &[".sock", "_sock"]],
            ),
            ("small class expands", "[._]sock", &[&[".sock", "_sock"]]),
            (
                "zero-width chars",
                "[\u{200B}\u{200C}\u{200D}]",
                &[&["\u{200B}", "\u{200C}", "\u{200D}"]],
            ),
            ("wide class of homoglyphs", "[a-z][\u{0430}\u{0410}]", &[&["\u{0430}"]]),
            ("no literal", r"[A-Za-z0-9+/]{40,}", &[]),
            ("too short", r"\bnc\b", &[]),
            ("optional branch spoils alternation", "(?:abcdef|x*)y", &[]),
            (
                "factored alternation",
                r"(?i)\b(ssn|social\s+security)\s*\d",
                &[&[
                    "social\t",
                    "social\n",
                    "social\u{b}",
                    "social\u{c}",
                    "social\r",
                    "social ",
                    "ssn",
                ]],
            ),
            ("repetition keeps requirement", "(?:secret_key)+=", &[&["secret_key"]]),
        ];
        for (name, pattern, want) in cases {
            let want: Vec<Vec<String>> =
                want.iter().map(|set| set.iter().map(|s| s.to_string()).collect()).collect();
            assert_eq!(literals(pattern), want, "{name}: {pattern}");
        }
    }

    #[test]
    fn start_literals_are_the_prefixes_every_match_begins_with() {
        let starts = |pattern: &str| prepare_pattern(PatternKind::Regex, pattern).unwrap().starts;
        assert_eq!(
            starts(r"(?i)\b(rm|curl)\s"),
            [
                "curl\t",
                "curl\n",
                "curl\u{b}",
                "curl\u{c}",
                "curl\r",
                "curl ",
                "rm\t",
                "rm\n",
                "rm\u{b}",
                "rm\u{c}",
                "rm\r",
                "rm "
            ]
        );
        // A digit class counts as ten strings.
        assert_eq!(starts(r"x4\d{3}").len(), 10);
        // After `\b`, an alternation of more strings than two sets may be
        // joined into (`MAX_CROSS`) still gives them all.
        let card = starts(r"\b(4\d{3}|5[1-5]\d{2}|2[2-7]\d{2}|6011|65\d{2})\d{12}\b");
        assert_eq!(card.len(), 10 + 50 + 60 + 1 + 10);
        assert!(card.contains(&"41".to_string()) && card.contains(&"553".to_string()));
        // Joining a set with the next one may give up to `MAX_SET` starts.
        let iban = starts(r"\b(DE|GB|FR|ES|IT|NL|BE|CH|AT|IE|PL|PT|SE|DK|NO|FI|LU)\d{2}");
        assert_eq!(iban.len(), 170);
        assert!(iban.contains(&"de4".to_string()) && !iban.contains(&"de".to_string()));
        // One-byte starts are refused unless rare punctuation.
        assert!(starts(r"a\w+").is_empty());
        assert_eq!(starts(r"@\w+"), ["@"]);
    }

    #[test]
    fn first_bytes_are_those_a_match_can_start_with() {
        let first = |pattern: &str| {
            let set = prepare_pattern(PatternKind::Regex, pattern).unwrap().first_bytes;
            (0..=255u8).filter(|&b| set.contains(b)).map(char::from).collect::<String>()
        };
        assert_eq!(first(r"\b(DE|GB)\d{2}"), "DG");
        assert_eq!(first("(?i)ab"), "Aa");
        assert_eq!(first(r"x?y*z"), "xyz");
        assert_eq!(first(r"(?m)^\s*(-\s+)?run"), "\t\n\u{b}\u{c}\r -r");
        let homoglyph = prepare_pattern(PatternKind::Regex, "[\u{0430}]").unwrap().first_bytes;
        assert!(homoglyph.contains(0xD0) && !homoglyph.contains(b'a'));
    }

    #[test]
    fn non_ascii_requirement_is_detected() {
        let cases = [
            ("homoglyph class", "[a-z][\u{0430}\u{0435}][a-z]", true),
            ("marks", r"\p{M}{6,}", true),
            ("optional", "a[\u{0430}]?", false),
            ("ascii", "abc", false),
            ("either", "(?:\u{0430}|b)", false),
        ];
        for (name, pattern, want) in cases {
            assert_eq!(
                prepare_pattern(PatternKind::Regex, pattern).unwrap().needs_non_ascii,
                want,
                "{name}"
            );
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
        let budget = RegexBudget::new(usize::MAX);
        let regex = compiled.regex.get(&budget).unwrap();
        assert!(regex.is_match("see /var/run/docker.sock"));
        assert!(!regex.is_match("dockerxsock"));
        assert_eq!(compiled.literals, vec![vec!["docker.sock".to_string()]]);
        let fullwidth = prepare_pattern(PatternKind::Contains, "ｉｎｓｍｏｄ").unwrap();
        assert!(fullwidth.regex.get(&budget).unwrap().is_match("INSMOD"));
    }

    /// A regex counts its bytes once while built, is built again after it
    /// was dropped, and a failed build stays failed.
    #[test]
    fn lazy_regexes_count_in_their_budget_and_build_again_after_a_drop() {
        let counts =
            |bytes, builds, drops, peak_bytes| RegexMemory { bytes, builds, drops, peak_bytes };
        let budget = RegexBudget::new(0);
        let lazy = prepare_pattern(PatternKind::Regex, "(?i)a[^\\n]{0,40}b").unwrap().regex;
        assert_eq!((lazy.last_used(), budget.memory()), (None, counts(0, 0, 0, 0)));
        let first = lazy.get(&budget).unwrap();
        // The automata and a new search cache.
        let bytes = first.memory_usage() + first.create_cache().memory_usage();
        assert!(first.memory_usage() > 0 && bytes > first.memory_usage());
        assert_eq!(budget.memory(), counts(bytes, 1, 0, bytes));
        assert_eq!(budget.excess(), bytes);
        // A second use builds nothing and moves the clock.
        let used = lazy.last_used().unwrap();
        assert!(lazy.get(&budget).unwrap().is_match("A x B"));
        assert!(lazy.last_used().unwrap() > used);
        assert_eq!(budget.memory(), counts(bytes, 1, 0, bytes));
        lazy.drop_built(&budget);
        lazy.drop_built(&budget);
        assert_eq!((lazy.last_used(), budget.memory()), (None, counts(0, 1, 1, bytes)));
        assert!(lazy.get(&budget).unwrap().is_match("a-b"));
        assert_eq!(budget.memory(), counts(bytes, 2, 1, bytes));
        // Over the NFA size limit: fails at every use, counts nothing.
        let huge = prepare_pattern(PatternKind::Regex, "(?:[^\\n]{1000}){200}").unwrap().regex;
        let budget = RegexBudget::new(0);
        assert!(huge.build(&budget).is_err() && huge.build(&budget).is_err());
        assert_eq!((huge.last_used(), budget.memory()), (None, counts(0, 0, 0, 0)));
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
