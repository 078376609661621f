//! The engine: compiled rules, and the evaluation of request content into
//! findings and a verdict.
//!
//! [`Engine`] is built once per VM (in the filter's `on_configure`) from the
//! built-in library plus the `rules` configuration, and then only read.
//! Building refuses every problem (bad regex, unknown id in an override,
//! duplicate id), so nothing fails at request time.
//!
//! # How a text is scanned
//!
//! Running ~750 regexes over every body is what makes naive engines slow,
//! and a single `RegexSet` over all of them thrashes its lazy DFA on large
//! bodies. Instead:
//!
//! 1. The text is NFKC-normalised.
//! 2. One Aho-Corasick automaton holds, for every pattern, up to four sets
//!    of folded literals such that every match contains a string of each
//!    set (see `compile`). One pass over the (folded) text gives the
//!    candidate patterns (a string of each of their sets occurs) and, for
//!    each, the lines where its best set occurs. Patterns that need a
//!    non-ASCII character are skipped on ASCII text.
//! 3. A candidate pattern that cannot match a line feed is run only on
//!    those lines. Other candidates, and the few patterns without a usable
//!    literal ([`CompileReport::unfiltered`]), are run anchored at each
//!    occurrence of their start literals (strings one of which every match
//!    starts with, also in the automaton) when the text is ASCII, which
//!    finds what a search of the whole text finds; else on the whole text.
//!    Every search is a single small regex, so the work is linear in the
//!    text size with small constants.
//! 4. Base64 and hex blobs are decoded and the decoded text is scanned the
//!    same way (once, not recursively); findings there carry the blob's line.
//!
//! # Semantics
//!
//! - `match_mode: any`: a finding for each line on which some pattern
//!   matches (at most [`MAX_LINES_PER_RULE`] lines per rule and part).
//!   `all`: one finding when every pattern matches somewhere in the part,
//!   at the first match of the first pattern, whose text is each pattern's
//!   first match joined by ` + `.
//! - A finding is dropped when an exclude pattern matches on its line or the
//!   3 lines before it.
//! - In message text (Markdown), findings inside a code fence are lowered
//!   one severity step.
//! - Each finding contributes a verdict: block if the sender's
//!   `block_categories` holds the rule's category, else the rule's override,
//!   else its severity's verdict ([`Severity::verdict`]).
//! - One finding is kept per line of each part: the one with the strictest
//!   contribution, then the highest severity, then the smallest rule id.
//!   (oktsec ranked by severity alone, so a low rule overridden to `block`
//!   could lose its line to a medium rule and the block was lost.)
//! - The verdict is the strictest contribution; findings are sorted by
//!   severity (highest first), then line, and cut to [`MAX_FINDINGS`].

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::Mutex;

use regex_automata::{Anchored, Input, Match};

use crate::compile::{
    fold, prepare_pattern, ByteSet, LazyRegex, PatternProblem, PreparedPattern, RegexBudget,
};
use crate::config::RulesConfig;
use crate::content::TargetSet;
use crate::decode::decoded_blobs;
use crate::error::{InvalidRegex, RuleError};
use crate::literals::Prefilter;
use crate::redact::{cut, Redactor, MAX_RAW_MATCH_BYTES};
use crate::rule::{parse_rules, MatchMode, Pattern, Rule};
use crate::text::{fenced_lines, normalise, LineIndex};
use crate::{ContentKind, ContentPart, Encoding, Evaluation, Finding, Severity, Verdict};

/// The most findings an [`Evaluation`] lists (the verdict counts them all).
pub const MAX_FINDINGS: usize = 100;

/// The most lines one `match_mode: any` rule reports per content part.
pub const MAX_LINES_PER_RULE: usize = 64;

/// Lines before the hit line that exclude patterns also look at.
const EXCLUDE_LINES_BEFORE: u32 = 3;

/// The "set" of a prefilter literal that is one of a pattern's start
/// literals (`PreparedPattern::starts`) rather than one of its required
/// literal sets (0 to `MAX_CONJUNCTS - 1`).
const START_SET: u8 = u8::MAX;

/// `LiteralHit::first_case` bits: a match can start with the start
/// literal's first byte as it is (lower case, for a letter), or with its
/// upper case.
const LOWER_CASE: u8 = 1;
const UPPER_CASE: u8 = 2;

/// Compiled rules, ready to scan. Build once (per VM), use for every request.
#[derive(Debug)]
pub struct Engine {
    rules: Vec<CompiledRule>,
    patterns: Vec<CompiledPattern>,
    /// Folded literals of all patterns; `None` when no pattern has one.
    prefilter: Option<Prefilter>,
    /// For each prefilter literal, the patterns that require it or start
    /// with it, entries split by what a hit of the literal does, with the
    /// targets of the entry's rule (so that a hit needs no lookups).
    literal_hits: Vec<LiteralHits>,
    /// Patterns without a usable literal: searched in every text.
    unfiltered: Vec<u32>,
    /// Per sender, the categories that block.
    agents: BTreeMap<String, BTreeSet<String>>,
    redactor: Redactor,
    report: CompileReport,
    /// Prefilter buffers kept between scans.
    scratch: Mutex<Vec<Scratch>>,
    /// The built regexes' memory against `rules.regex_memory_bytes`.
    regexes: RegexBudget,
}

/// What an engine's built regexes hold ([`Engine::regex_memory`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegexMemory {
    /// Heap bytes of the regexes built now: their automata and a new
    /// search cache each (the lazy DFA's cache grows from there).
    pub bytes: usize,
    /// Regexes built since the engine was made (a dropped one that is
    /// needed again counts again).
    pub builds: u64,
    /// Regexes dropped to stay within `rules.regex_memory_bytes`.
    pub drops: u64,
    /// The most [`RegexMemory::bytes`] held at once since the engine was
    /// made, during scans too.
    pub peak_bytes: usize,
}

/// What an [`Engine`] was built from; printed by `warrant-audit rules
/// validate` and the benchmark.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CompileReport {
    /// Rules compiled (after `disabled` and `ignore`).
    pub rules: usize,
    /// Patterns compiled, exclude patterns not counted.
    pub patterns: usize,
    /// Distinct literals in the prefilter.
    pub literals: usize,
    /// Heap bytes of the prefilter automata (an Aho-Corasick NFA over
    /// every literal, a DFA over the ASCII ones).
    pub prefilter_bytes: usize,
    /// Patterns with no usable literal, as `RULE-ID patterns[N]`: each runs
    /// on every text, so keep this list short.
    pub unfiltered: Vec<String>,
    /// Rules whose `targets` select no content kind: they never fire.
    pub inert: Vec<String>,
}

impl Engine {
    /// Compiles the built-in library (unless `config.builtin` is false) plus
    /// what `config` adds, and applies its settings.
    ///
    /// # Errors
    /// A bad rule, a duplicate id, or a setting naming an unknown rule id or
    /// category; see [`RuleError`].
    pub fn new(config: &RulesConfig) -> Result<Engine, RuleError> {
        let base = if config.builtin { crate::builtin_rules()? } else { Vec::new() };
        // The library's automata are built on first use (its tests build
        // them all); custom rules are built now so that a bad one is
        // refused with the configuration.
        let eager_from = base.len();
        Engine::build(base, config, eager_from)
    }

    /// Like [`Engine::new`], with `rules` in place of the built-in library
    /// (`config.builtin` is not consulted). Used to scan with a rule
    /// directory of one's own.
    ///
    /// # Errors
    /// As for [`Engine::new`].
    pub fn from_rules(rules: Vec<Rule>, config: &RulesConfig) -> Result<Engine, RuleError> {
        Engine::build(rules, config, 0)
    }

    /// Builds every regex not built yet, so that a rule whose automaton
    /// exceeds the size limit is reported now rather than silently never
    /// matching. [`Engine::new`] leaves the library's regexes to be built on
    /// first use; [`Engine::from_rules`] builds everything.
    ///
    /// # Errors
    /// [`RuleError::InvalidRegex`] for the first regex that cannot be built.
    pub fn compile_all(&self) -> Result<(), RuleError> {
        for rule in &self.rules {
            let patterns =
                self.patterns.get(rule.patterns.start as usize..rule.patterns.end as usize);
            for pattern in patterns.unwrap_or_default().iter().chain(&rule.excludes) {
                let built = pattern.regex.build(&self.regexes);
                built.map_err(|problem| pattern.error(rule, problem))?;
                self.trim_regexes();
            }
        }
        Ok(())
    }

    /// What the built regexes hold now, and how many were built and dropped.
    pub fn regex_memory(&self) -> RegexMemory {
        self.regexes.memory()
    }

    /// Inside a scan, before each pattern's searches: drops regexes until
    /// the built ones fit `rules.regex_memory_bytes` again, so that a scan
    /// that makes most of the library candidates (a body holding every
    /// library example, say) does not build all of it at once (about 40
    /// MiB). First those this scan used already, most recent first (a
    /// pattern is searched once per scan, so they are done; dropping the
    /// oldest instead would drop, at each step, the regex a later pattern
    /// of the same scan needs, as a cycle through more regexes than fit
    /// always does to LRU); then, if that is not enough, the least recently
    /// used.
    fn trim_during_scan(&self) {
        if self.regexes.excess() == 0 {
            return;
        }
        let since = self.regexes.scan_started();
        let mut this_scan: Vec<(u64, &LazyRegex)> =
            self.built_regexes().filter(|&(used, _)| used >= since).collect();
        this_scan.sort_unstable_by_key(|&(used, _)| std::cmp::Reverse(used));
        for (_, regex) in this_scan {
            if self.regexes.excess() == 0 {
                return;
            }
            regex.drop_built(&self.regexes);
        }
        self.trim_regexes();
    }

    /// Every built regex (patterns and excludes) with when it was last used.
    fn built_regexes(&self) -> impl Iterator<Item = (u64, &LazyRegex)> {
        let excludes = self.rules.iter().flat_map(|r| r.excludes.iter());
        self.patterns.iter().chain(excludes).filter_map(|p| Some((p.regex.last_used()?, &p.regex)))
    }

    /// Drops the least recently used regexes until the built ones fit
    /// `rules.regex_memory_bytes` again. Called after each scan, and by
    /// [`Engine::trim_during_scan`].
    fn trim_regexes(&self) {
        if self.regexes.excess() == 0 {
            return;
        }
        let mut built: Vec<(u64, &LazyRegex)> = self.built_regexes().collect();
        built.sort_unstable_by_key(|&(used, _)| used);
        for (_, regex) in built {
            if self.regexes.excess() == 0 {
                break;
            }
            regex.drop_built(&self.regexes);
        }
    }

    /// Compiles `rules` plus `config.custom`; the regexes of rules from
    /// index `eager_from` on (in `rules` followed by the custom rules) are
    /// built now, the others on first use.
    fn build(
        mut rules: Vec<Rule>,
        config: &RulesConfig,
        eager_from: usize,
    ) -> Result<Engine, RuleError> {
        // 1. Custom rules are added, never replace.
        for (index, text) in config.custom.iter().enumerate() {
            rules.extend(parse_rules(&format!("rules.custom[{index}]"), text)?);
        }
        check_unique_ids(&rules)?;

        // 2. Every id and category the settings name must exist.
        let ids: BTreeSet<&str> = rules.iter().map(|r| r.id.as_str()).collect();
        let unknown = |setting: &str, id: &str| RuleError::UnknownRuleId {
            setting: setting.to_string(),
            id: id.to_string(),
        };
        if let Some(id) = config.disabled.iter().find(|id| !ids.contains(id.as_str())) {
            return Err(unknown("rules.disabled", id));
        }
        if let Some(id) = config.overrides.keys().find(|id| !ids.contains(id.as_str())) {
            return Err(unknown("rules.overrides", id));
        }
        let categories: BTreeSet<&str> = rules.iter().map(|r| r.category.as_str()).collect();
        let mut agents = BTreeMap::new();
        for (agent, settings) in &config.agents {
            let blocked: BTreeSet<String> = settings.block_categories.iter().cloned().collect();
            if let Some(category) = blocked.iter().find(|c| !categories.contains(c.as_str())) {
                return Err(RuleError::UnknownCategory {
                    setting: format!("rules.agents.{agent}.block_categories"),
                    category: category.clone(),
                });
            }
            agents.insert(agent.clone(), blocked);
        }

        // 3. Compile what runs: not disabled, not overridden to `ignore`.
        let mut builder = Builder::default();
        for (index, rule) in rules.iter().enumerate() {
            let overridden = config.overrides.get(&rule.id).copied();
            let ignored = overridden.is_some_and(|o| o.verdict().is_none());
            if ignored || config.disabled.contains(&rule.id) {
                continue;
            }
            builder.add(rule, overridden.and_then(|o| o.verdict()), index >= eager_from)?;
        }

        // 4. One automaton over every literal.
        builder.finish(agents, config.regex_memory_bytes)
    }

    /// Scans the parts and decides, for the given sender (the agent name
    /// `rules.agents` is keyed by).
    pub fn evaluate(&self, parts: &[ContentPart<'_>], sender: &str) -> Evaluation {
        // 1. Scan every part.
        let mut found: Vec<(usize, RawFinding)> = Vec::new();
        for (index, part) in parts.iter().enumerate() {
            let raw = self.scan_part(part.text, part.kind, None);
            found.extend(raw.into_iter().map(|f| (index, f)));
        }

        // 2. What each finding contributes.
        let blocked = self.agents.get(sender);
        let contribution = |f: &RawFinding| -> Verdict {
            let Some(rule) = self.rules.get(f.rule as usize) else { return Verdict::Clean };
            if blocked.is_some_and(|b| b.contains(&rule.category)) {
                return Verdict::Block;
            }
            rule.verdict.unwrap_or_else(|| f.severity.verdict())
        };
        let mut ranked: Vec<(usize, RawFinding, Verdict)> =
            found.into_iter().map(|(part, f)| (part, f.clone(), contribution(&f))).collect();

        // 3. One finding per line of each part: strictest contribution, then
        //    severity, then smallest rule id (this also leaves one per rule
        //    and line).
        ranked.sort_by(|a, b| {
            (a.0, a.1.line)
                .cmp(&(b.0, b.1.line))
                .then(b.2.cmp(&a.2))
                .then(b.1.severity.cmp(&a.1.severity))
                .then_with(|| self.rule_id(a.1.rule).cmp(self.rule_id(b.1.rule)))
                .then(a.1.decoded.is_some().cmp(&b.1.decoded.is_some()))
        });
        ranked.dedup_by(|later, kept| later.0 == kept.0 && later.1.line == kept.1.line);

        // 4. Verdict over all, then order, cut and redact.
        let verdict = ranked.iter().map(|r| r.2).max().unwrap_or(Verdict::Clean);
        ranked.sort_by(|a, b| {
            b.1.severity
                .cmp(&a.1.severity)
                .then(a.1.line.cmp(&b.1.line))
                .then(a.0.cmp(&b.0))
                .then_with(|| self.rule_id(a.1.rule).cmp(self.rule_id(b.1.rule)))
        });
        ranked.truncate(MAX_FINDINGS);
        let findings = ranked
            .into_iter()
            .filter_map(|(part, f, verdict)| {
                let rule = self.rules.get(f.rule as usize)?;
                Some(Finding {
                    rule_id: rule.id.clone(),
                    name: rule.name.clone(),
                    severity: f.severity,
                    category: rule.category.clone(),
                    matched: self.redactor.finish(&f.matched, rule.sensitive),
                    line: f.line,
                    kind: parts.get(part).map_or(ContentKind::Body, |p| p.kind),
                    decoded: f.decoded,
                    verdict,
                })
            })
            .collect();
        self.trim_regexes();
        Evaluation { findings, verdict }
    }

    /// What the engine was built from.
    pub fn report(&self) -> &CompileReport {
        &self.report
    }

    /// Whether rule `id` fires on `text` read as `kind`, on its own (no
    /// other rule competes for the line). `None` if no such rule runs.
    pub fn rule_fires(&self, id: &str, text: &str, kind: ContentKind) -> Option<bool> {
        let index = self.rules.iter().position(|r| r.id == id)?;
        let index = u32::try_from(index).ok()?;
        let fires = !self.scan_part(text, kind, Some(index)).is_empty();
        self.trim_regexes();
        Some(fires)
    }

    /// Ids of every rule that fires on `text` read as `kind`, before any
    /// per-line deduplication, sorted.
    pub fn rules_firing(&self, text: &str, kind: ContentKind) -> Vec<&str> {
        let ids: BTreeSet<&str> =
            self.scan_part(text, kind, None).iter().map(|f| self.rule_id(f.rule)).collect();
        self.trim_regexes();
        ids.into_iter().collect()
    }

    fn rule_id(&self, rule: u32) -> &str {
        self.rules.get(rule as usize).map_or("", |r| r.id.as_str())
    }

    /// Every finding of the rules that apply to `kind` (or only of rule
    /// `only`), before deduplication across rules.
    fn scan_part(&self, raw: &str, kind: ContentKind, only: Option<u32>) -> Vec<RawFinding> {
        self.regexes.start_scan();
        // 1. NFKC, then match.
        let text = normalise(raw);
        let lines = LineIndex::new(&text);
        let mut found = self.match_text(&text, &lines, kind, only);

        // 2. Decoded blobs: scanned once, reported at the blob's line.
        for blob in decoded_blobs(&text) {
            let decoded = normalise(&blob.text);
            let inner = LineIndex::new(&decoded);
            let line = lines.line_of(blob.start);
            for mut finding in self.match_text(&decoded, &inner, kind, only) {
                finding.line = line;
                finding.decoded = Some(blob.encoding);
                found.push(finding);
            }
        }

        // 3. Markdown code fences lower severity one step.
        if kind.is_markdown() && !found.is_empty() {
            let fences = fenced_lines(&text);
            for finding in &mut found {
                if fences.iter().any(|fence| fence.contains(&finding.line)) {
                    finding.severity = finding.severity.lowered();
                }
            }
        }
        found
    }

    /// Prefilter, then verify candidate rules, on one normalised text.
    fn match_text(
        &self,
        text: &str,
        lines: &LineIndex,
        kind: ContentKind,
        only: Option<u32>,
    ) -> Vec<RawFinding> {
        let candidates = self.candidates(text, kind, only);
        let hits = &candidates.scratch.slots;
        let mut found = Vec::new();
        for &index in &candidates.rules {
            let Some(rule) = self.rules.get(index as usize) else { continue };
            if only.is_some_and(|o| o != index) || !rule.targets.contains(kind) {
                continue;
            }
            let slots = hits.get(rule.patterns.start as usize..rule.patterns.end as usize);
            let Some(slots) = slots else { continue };
            let searches = rule.patterns.clone().zip(slots.iter());
            let wanted = match rule.match_mode {
                MatchMode::Any => slots.iter().any(|h| h.active),
                MatchMode::All => slots.iter().all(|h| h.active),
            };
            if !wanted {
                continue;
            }
            match rule.match_mode {
                MatchMode::Any => {
                    for (line, m) in self.any_matches(text, lines, searches) {
                        if !self.excluded(rule, text, lines, line) {
                            found.push(RawFinding::new(index, rule, line, text, m));
                        }
                    }
                }
                MatchMode::All => {
                    let Some(firsts) = self.all_matches(text, lines, searches) else { continue };
                    let Some(first) = firsts.first() else { continue };
                    let line = lines.line_of(first.start());
                    if self.excluded(rule, text, lines, line) {
                        continue;
                    }
                    let mut finding = RawFinding::new(index, rule, line, text, *first);
                    finding.matched = firsts
                        .iter()
                        .map(|m| cut(text.get(m.range()).unwrap_or(""), MAX_RAW_MATCH_BYTES))
                        .collect::<Vec<_>>()
                        .join(" + ");
                    found.push(finding);
                }
            }
        }
        self.recycle(candidates.scratch);
        found
    }

    /// Buffers for a prefilter pass: kept ones if there are (allocating
    /// and clearing them was a large part of a small scan inside V8).
    fn scratch(&self) -> Scratch {
        let kept = self.scratch.lock().ok().and_then(|mut kept| kept.pop());
        kept.unwrap_or_else(|| {
            let mut slots = Vec::new();
            slots.resize_with(self.patterns.len(), Hits::default);
            let seen = vec![0; self.literal_hits.len().div_ceil(64)];
            Scratch { slots, touched: Vec::new(), seen, start_hits: Vec::new() }
        })
    }

    /// Clears `scratch` and keeps it for the next pass (with the slots'
    /// buffers: growing them again was a sixth of a 1 KiB scan).
    fn recycle(&self, mut scratch: Scratch) {
        for &pattern in &scratch.touched {
            if let Some(slot) = scratch.slots.get_mut(pattern as usize) {
                slot.clear();
            }
        }
        scratch.touched.clear();
        scratch.seen.fill(0);
        scratch.start_hits.clear();
        if let Ok(mut kept) = self.scratch.lock() {
            if kept.len() < MAX_KEPT_SCRATCH {
                kept.push(scratch);
            }
        }
    }

    /// For each pattern: `None` if it cannot match `text`, else where to
    /// search.
    fn candidates(&self, text: &str, kind: ContentKind, only: Option<u32>) -> Candidates {
        // `touched`: patterns whose slot was filled, so that the work after
        // the pass is proportional to them rather than to the library.
        let Scratch { slots: mut hits, mut touched, seen: mut literal_seen, mut start_hits } =
            self.scratch();
        let applies = |pattern: u32| -> Option<&CompiledPattern> {
            let entry = self.patterns.get(pattern as usize)?;
            let rule = self.rules.get(entry.rule as usize)?;
            let wanted = only.is_none_or(|o| o == entry.rule) && rule.targets.contains(kind);
            wanted.then_some(entry)
        };
        let ascii = text.is_ascii();
        for &pattern in &self.unfiltered {
            let Some(entry) = applies(pattern) else { continue };
            if ascii && entry.needs_non_ascii {
                continue;
            }
            if let Some(slot) = slot_of(&mut hits, &mut touched, pattern) {
                slot.whole = true;
            }
        }
        let Some(prefilter) = &self.prefilter else {
            return Candidates::new(
                Scratch { slots: hits, touched, seen: literal_seen, start_hits },
                &self.patterns,
            );
        };

        // 1. One pass over the literals. ASCII text is searched as is (the
        //    automaton ignores ASCII case); other text is folded the way
        //    the literals were. Folding keeps line feeds, so line numbers
        //    agree with the normalised text.
        let folded;
        let haystack = if ascii {
            text.as_bytes()
        } else {
            folded = fold(text);
            folded.as_bytes()
        };
        let mut line: u32 = 1;
        let mut counted = 0;
        for found in prefilter.occurrences(haystack, ascii) {
            // The line of the hit's last byte, counted only when a
            // single-line pattern needs it (hits come in order of their
            // end, so the count only moves forward).
            let last = found.end.saturating_sub(1).max(found.start);
            let mut line_of_hit = || {
                if last > counted {
                    let newlines = haystack
                        .get(counted..last)
                        .map_or(0, |s| memchr::memchr_iter(b'\n', s).count());
                    line = line.saturating_add(u32::try_from(newlines).unwrap_or(u32::MAX));
                    counted = last;
                }
                line
            };
            let literal = found.literal;
            let Some(entries) = self.literal_hits.get(literal) else { continue };
            let wanted =
                |e: &LiteralHit| e.targets.contains(kind) && only.is_none_or(|o| o == e.rule);
            // What `once` entries do is the same at every occurrence, so
            // only the first one of each literal counts. The bit also
            // answers, after the pass, whether a later set occurred.
            let (word, bit) = (literal / 64, 1u64 << (literal % 64));
            if literal_seen.get(word).is_some_and(|w| w & bit == 0) {
                if let Some(w) = literal_seen.get_mut(word) {
                    *w |= bit;
                }
                for e in &entries.once {
                    if !wanted(e) {
                        continue;
                    }
                    let Some(slot) = slot_of(&mut hits, &mut touched, e.pattern) else { continue };
                    slot.best = true;
                    slot.whole = true;
                }
            }
            for e in &entries.lines {
                if !wanted(e) {
                    continue;
                }
                let Some(slot) = slot_of(&mut hits, &mut touched, e.pattern) else { continue };
                slot.best = true;
                // Lines come from the best set: every match is on a line
                // holding one of its strings.
                if !slot.whole {
                    let line = line_of_hit();
                    if slot.lines.last() != Some(&line) {
                        slot.lines.push(line);
                    }
                }
            }
            // Offsets in `text` only when it was not folded. Which
            // patterns they go to is decided after the pass: most start
            // literals belong to patterns that do not become candidates.
            if ascii && !entries.starts.is_empty() {
                start_hits.push((literal, found.start));
            }
        }

        // 2. A pattern is a candidate only if a string of every one of
        //    its literal sets occurs somewhere.
        let mut anchored = false;
        for &pattern in &touched {
            let (Some(slot), Some(entry)) =
                (hits.get_mut(pattern as usize), self.patterns.get(pattern as usize))
            else {
                continue;
            };
            let occurred = |set: &Vec<usize>| {
                set.iter()
                    .any(|&l| literal_seen.get(l / 64).is_some_and(|w| w & (1 << (l % 64)) != 0))
            };
            let candidate =
                entry.unfiltered() || (slot.best && entry.later_sets.iter().all(occurred));
            if !candidate {
                slot.clear();
                continue;
            }
            // Every match starts at one of the start literals' hits, so
            // anchored searches there replace a search of the whole text
            // (ASCII text: the hits' offsets are `text`'s).
            slot.anchored = slot.whole && ascii && entry.starts;
            anchored |= slot.anchored;
        }

        // 3. The start hits of the patterns searched anchored.
        if anchored {
            for &(literal, start) in &start_hits {
                let Some(entries) = self.literal_hits.get(literal) else { continue };
                // No match starts here if it cannot start with this byte:
                // the literal was found ignoring case, and a
                // case-sensitive pattern (`\b(DE|GB|...)\d{2}`) skips the
                // hits inside ordinary words (`code`).
                let case = if haystack.get(start).is_some_and(u8::is_ascii_uppercase) {
                    UPPER_CASE
                } else {
                    LOWER_CASE
                };
                for e in entries.starts.iter().filter(|e| e.first_case & case != 0) {
                    if let Some(slot) = hits.get_mut(e.pattern as usize) {
                        if slot.anchored {
                            slot.starts.push(start);
                        }
                    }
                }
            }
            for &pattern in &touched {
                if let Some(slot) = hits.get_mut(pattern as usize) {
                    if slot.anchored {
                        slot.starts.sort_unstable();
                        slot.starts.dedup();
                    }
                }
            }
        }
        Candidates::new(
            Scratch { slots: hits, touched, seen: literal_seen, start_hits },
            &self.patterns,
        )
    }

    /// `match_mode: any`: the first match on each line, over the patterns in
    /// order, at most [`MAX_LINES_PER_RULE`] lines.
    fn any_matches<'a>(
        &self,
        text: &str,
        lines: &LineIndex,
        searches: impl Iterator<Item = (u32, &'a Hits)>,
    ) -> BTreeMap<u32, Match> {
        let mut by_line: BTreeMap<u32, Match> = BTreeMap::new();
        for (pattern, hits) in searches {
            if !hits.active {
                continue;
            }
            self.trim_during_scan();
            let Some(regex) =
                self.patterns.get(pattern as usize).and_then(|p| p.regex.get(&self.regexes))
            else {
                continue;
            };
            if hits.anchored {
                // The same matches as `find_iter`: the leftmost match from
                // `at` starts at the first start hit where an anchored
                // search matches.
                let mut at = 0;
                for &start in &hits.starts {
                    if start < at {
                        continue;
                    }
                    let input = Input::new(text).range(start..).anchored(Anchored::Yes);
                    let Some(m) = regex.search(&input) else { continue };
                    at = m.end();
                    let line = lines.line_of(m.start());
                    if by_line.len() >= MAX_LINES_PER_RULE && !by_line.contains_key(&line) {
                        break;
                    }
                    by_line.entry(line).or_insert(m);
                }
                continue;
            }
            if hits.whole {
                for m in regex.find_iter(Input::new(text)) {
                    let line = lines.line_of(m.start());
                    if by_line.len() >= MAX_LINES_PER_RULE && !by_line.contains_key(&line) {
                        break;
                    }
                    by_line.entry(line).or_insert(m);
                }
                continue;
            }
            for &line in &hits.lines {
                if by_line.contains_key(&line) {
                    continue;
                }
                if by_line.len() >= MAX_LINES_PER_RULE {
                    break;
                }
                let input = Input::new(text).range(lines.lines(line, line));
                if let Some(m) = regex.search(&input) {
                    by_line.insert(line, m);
                }
            }
        }
        by_line
    }

    /// `match_mode: all`: each pattern's first match, or `None` if one of
    /// them does not match.
    fn all_matches<'a>(
        &self,
        text: &str,
        lines: &LineIndex,
        searches: impl Iterator<Item = (u32, &'a Hits)>,
    ) -> Option<Vec<Match>> {
        let mut firsts = Vec::new();
        for (pattern, hits) in searches {
            if !hits.active {
                return None;
            }
            self.trim_during_scan();
            let regex = self.patterns.get(pattern as usize)?.regex.get(&self.regexes)?;
            let first = if hits.anchored {
                hits.starts.iter().find_map(|&start| {
                    regex.search(&Input::new(text).range(start..).anchored(Anchored::Yes))
                })
            } else if hits.whole {
                regex.find(Input::new(text))
            } else {
                hits.lines.iter().find_map(|&line| {
                    regex.search(&Input::new(text).range(lines.lines(line, line)))
                })
            };
            firsts.push(first?);
        }
        Some(firsts)
    }

    /// Whether an exclude pattern of `rule` matches on `line` or the lines
    /// just before it.
    fn excluded(&self, rule: &CompiledRule, text: &str, lines: &LineIndex, line: u32) -> bool {
        if rule.excludes.is_empty() {
            return false;
        }
        let window = lines.lines(line.saturating_sub(EXCLUDE_LINES_BEFORE).max(1), line);
        rule.excludes.iter().any(|x| {
            x.regex
                .get(&self.regexes)
                .is_some_and(|regex| regex.is_match(Input::new(text).range(window.clone())))
        })
    }
}

/// Fails on the first id used twice, naming both places.
///
/// # Errors
/// [`RuleError::DuplicateId`].
pub fn check_unique_ids(rules: &[Rule]) -> Result<(), RuleError> {
    let mut seen: BTreeMap<&str, &Rule> = BTreeMap::new();
    for rule in rules {
        if let Some(first) = seen.insert(rule.id.as_str(), rule) {
            return Err(RuleError::DuplicateId {
                id: rule.id.clone(),
                file: rule.source.file.clone(),
                line: rule.source.line,
                first_file: first.source.file.clone(),
                first_line: first.source.line,
            });
        }
    }
    Ok(())
}

#[derive(Debug)]
struct CompiledRule {
    id: String,
    name: String,
    category: String,
    severity: Severity,
    match_mode: MatchMode,
    targets: TargetSet,
    /// Where the rule was defined, for errors from [`Engine::compile_all`].
    file: String,
    /// Indices into `Engine::patterns`.
    patterns: Range<u32>,
    excludes: Vec<CompiledPattern>,
    /// The override, if any (never `ignore`: those rules are not compiled).
    verdict: Option<Verdict>,
    sensitive: bool,
}

#[derive(Debug)]
struct CompiledPattern {
    regex: LazyRegex,
    single_line: bool,
    /// Number of literal sets in the prefilter (0 for unfiltered patterns).
    sets: u8,
    /// The prefilter ids of the literals of each required set after the
    /// best one. They are looked up after the pass, for the patterns
    /// whose best set occurred, rather than handled at each hit: they are
    /// the less selective sets (`all`, `the`), whose literals occur in
    /// most texts and belong to many patterns.
    later_sets: Vec<Vec<usize>>,
    needs_non_ascii: bool,
    /// Whether the pattern has start literals in the prefilter.
    starts: bool,
    /// The bytes a match can start with.
    first_bytes: ByteSet,
    rule: u32,
    /// `patterns[N]` or `exclude_patterns[N]`, its line and text, for
    /// errors from [`Engine::compile_all`].
    key: String,
    line: u32,
    value: String,
}

impl CompiledPattern {
    /// A pattern of rule `index`; its regex is built now if `eager`.
    fn new(
        rule: &Rule,
        index: u32,
        pattern: &Pattern,
        key: String,
        eager: bool,
    ) -> Result<(CompiledPattern, Literals), RuleError> {
        let error = |problem: PatternProblem| invalid_regex(rule, pattern, &key, problem);
        let PreparedPattern { regex, literals, single_line, needs_non_ascii, starts, first_bytes } =
            prepare_pattern(pattern.kind, &pattern.value).map_err(error)?;
        // Built now only to refuse it with the configuration if it cannot
        // be; the engine builds it again on first use, within its budget.
        if eager {
            let budget = RegexBudget::new(0);
            regex.build(&budget).map_err(error)?;
            regex.drop_built(&budget);
        }
        let compiled = CompiledPattern {
            regex,
            single_line,
            sets: u8::try_from(literals.len()).unwrap_or(u8::MAX),
            later_sets: Vec::new(),
            needs_non_ascii,
            first_bytes,
            starts: !starts.is_empty(),
            rule: index,
            key: key.clone(),
            line: pattern.line,
            value: pattern.value.clone(),
        };
        Ok((compiled, Literals { sets: literals, starts }))
    }

    /// Whether the pattern has no literal and runs on every text.
    fn unfiltered(&self) -> bool {
        self.sets == 0
    }

    fn error(&self, rule: &CompiledRule, problem: PatternProblem) -> RuleError {
        RuleError::InvalidRegex(Box::new(InvalidRegex {
            file: rule.file.clone(),
            line: self.line,
            rule: rule.id.clone(),
            key: self.key.clone(),
            pattern: self.value.clone(),
            reason: problem.reason,
            span: problem.span,
            hint: problem.hint,
        }))
    }
}

/// A pattern's prefilter strings: its required literal sets and its start
/// literals.
#[derive(Debug)]
struct Literals {
    sets: Vec<Vec<String>>,
    starts: Vec<String>,
}

/// The slot of `pattern`, made active (and recorded in `touched`) if it
/// was not.
fn slot_of<'a>(hits: &'a mut [Hits], touched: &mut Vec<u32>, pattern: u32) -> Option<&'a mut Hits> {
    let slot = hits.get_mut(pattern as usize)?;
    if !slot.active {
        slot.active = true;
        touched.push(pattern);
    }
    Some(slot)
}

/// The buffers of one prefilter pass. Between passes (in
/// `Engine::scratch`) every slot is inactive and empty, `touched` is empty
/// and `seen` is all zero.
#[derive(Debug, Default)]
struct Scratch {
    /// For each pattern: inactive if it cannot match the text, else where
    /// to search.
    slots: Vec<Hits>,
    /// The patterns whose slot was filled during the pass.
    touched: Vec<u32>,
    /// A bit per prefilter literal: whether it occurred yet.
    seen: Vec<u64>,
    /// Each occurrence of a literal that is a start literal of some
    /// pattern, with its offset, in the order of the pass.
    start_hits: Vec<(usize, usize)>,
}

/// Most `Scratch`es an engine keeps (one per scan running at once).
const MAX_KEPT_SCRATCH: usize = 4;

/// The outcome of the prefilter pass over one text.
#[derive(Debug)]
struct Candidates {
    scratch: Scratch,
    /// The rules with at least one candidate pattern, ascending.
    rules: Vec<u32>,
}

impl Candidates {
    fn new(scratch: Scratch, patterns: &[CompiledPattern]) -> Candidates {
        let slots = &scratch.slots;
        let mut rules: Vec<u32> = scratch
            .touched
            .iter()
            .filter(|&&p| slots.get(p as usize).is_some_and(|h| h.active))
            .filter_map(|&p| patterns.get(p as usize).map(|entry| entry.rule))
            .collect();
        rules.sort_unstable();
        rules.dedup();
        Candidates { scratch, rules }
    }
}

/// What a hit of one prefilter literal does, split by how often it
/// matters. Only a pattern's best set and its start literals have
/// entries: the other sets are checked after the pass, for the patterns
/// whose best set occurred (`CompiledPattern::later_sets`).
#[derive(Debug, Default)]
struct LiteralHits {
    /// The best set of patterns that can match across lines: only the
    /// literal's first occurrence matters.
    once: Vec<LiteralHit>,
    /// The best set of single-line patterns: every occurrence adds its
    /// line.
    lines: Vec<LiteralHit>,
    /// Start literals: every occurrence adds its offset, for the
    /// patterns searched anchored.
    starts: Vec<LiteralHit>,
}

/// One pattern a prefilter literal belongs to.
#[derive(Debug, Clone, Copy)]
struct LiteralHit {
    pattern: u32,
    /// The rule of the pattern, and the content kinds it applies to.
    rule: u32,
    targets: TargetSet,
    /// For a start literal: [`LOWER_CASE`] and/or [`UPPER_CASE`], the
    /// forms of its first byte a match can start with.
    first_case: u8,
}

/// Where one candidate pattern has to be searched.
#[derive(Debug, Default)]
struct Hits {
    /// Whether the pattern is a candidate; the other fields are empty
    /// when not.
    active: bool,
    /// Search the whole text (or, if `anchored`, at `starts`).
    whole: bool,
    /// Else search these lines (ascending, distinct).
    lines: Vec<u32>,
    /// Whether a string of the pattern's best literal set occurs.
    best: bool,
    /// Offsets where one of the pattern's start literals occurs.
    starts: Vec<usize>,
    /// Search anchored at each of `starts` instead of the whole text.
    anchored: bool,
}

impl Hits {
    /// Inactive and empty, keeping the buffers.
    fn clear(&mut self) {
        self.active = false;
        self.whole = false;
        self.lines.clear();
        self.best = false;
        self.starts.clear();
        self.anchored = false;
    }
}

/// A finding before deduplication and redaction.
#[derive(Debug, Clone)]
struct RawFinding {
    rule: u32,
    line: u32,
    severity: Severity,
    /// At most [`MAX_RAW_MATCH_BYTES`], not yet redacted.
    matched: String,
    decoded: Option<Encoding>,
}

impl RawFinding {
    fn new(rule: u32, compiled: &CompiledRule, line: u32, text: &str, m: Match) -> RawFinding {
        RawFinding {
            rule,
            line,
            severity: compiled.severity,
            matched: cut(text.get(m.range()).unwrap_or(""), MAX_RAW_MATCH_BYTES).to_string(),
            decoded: None,
        }
    }
}

/// Collects compiled rules, patterns and literals while an engine is built.
#[derive(Debug, Default)]
struct Builder {
    rules: Vec<CompiledRule>,
    patterns: Vec<CompiledPattern>,
    literal_ids: BTreeMap<String, usize>,
    literal_patterns: Vec<Vec<(u32, u8)>>,
    unfiltered: Vec<u32>,
    report: CompileReport,
}

impl Builder {
    fn add(&mut self, rule: &Rule, verdict: Option<Verdict>, eager: bool) -> Result<(), RuleError> {
        let index = u32::try_from(self.rules.len()).map_err(|_| too_large("rules"))?;
        let first = u32::try_from(self.patterns.len()).map_err(|_| too_large("patterns"))?;
        for (n, pattern) in rule.patterns.iter().enumerate() {
            let key = format!("patterns[{n}]");
            let (mut compiled, Literals { sets: literals, starts }) =
                CompiledPattern::new(rule, index, pattern, key, eager)?;
            let id = u32::try_from(self.patterns.len()).map_err(|_| too_large("patterns"))?;
            if literals.is_empty() {
                self.unfiltered.push(id);
                self.report.unfiltered.push(format!("{} patterns[{n}]", rule.id));
            }
            // Single-line patterns with literals are searched on their
            // lines; start literals serve the others.
            let starts =
                if compiled.single_line && !literals.is_empty() { Vec::new() } else { starts };
            compiled.starts = !starts.is_empty();
            let sets =
                (0u8..).zip(literals).chain((!starts.is_empty()).then_some((START_SET, starts)));
            for (set, strings) in sets {
                let mut later = Vec::new();
                for literal in strings {
                    let next = self.literal_patterns.len();
                    let slot = *self.literal_ids.entry(literal).or_insert(next);
                    if slot == next {
                        self.literal_patterns.push(Vec::new());
                    }
                    if set != 0 && set != START_SET {
                        later.push(slot);
                    } else if let Some(list) = self.literal_patterns.get_mut(slot) {
                        list.push((id, set));
                    }
                }
                if !later.is_empty() {
                    compiled.later_sets.push(later);
                }
            }
            self.patterns.push(compiled);
        }
        let last = u32::try_from(self.patterns.len()).map_err(|_| too_large("patterns"))?;
        let mut excludes = Vec::with_capacity(rule.exclude_patterns.len());
        for (n, pattern) in rule.exclude_patterns.iter().enumerate() {
            let key = format!("exclude_patterns[{n}]");
            excludes.push(CompiledPattern::new(rule, index, pattern, key, eager)?.0);
        }
        let targets = TargetSet::from_targets(&rule.targets);
        if targets.is_empty() {
            self.report.inert.push(rule.id.clone());
        }
        self.rules.push(CompiledRule {
            id: rule.id.clone(),
            name: rule.name.clone(),
            category: rule.category.clone(),
            severity: rule.severity,
            match_mode: rule.match_mode,
            targets,
            file: rule.source.file.clone(),
            patterns: first..last,
            excludes,
            verdict,
            sensitive: rule.sensitive,
        });
        Ok(())
    }

    fn finish(
        self,
        agents: BTreeMap<String, BTreeSet<String>>,
        regex_memory_bytes: usize,
    ) -> Result<Engine, RuleError> {
        let mut literals: Vec<(usize, String)> =
            self.literal_ids.into_iter().map(|(literal, id)| (id, literal)).collect();
        literals.sort();
        let strings: Vec<&str> = literals.iter().map(|(_, literal)| literal.as_str()).collect();
        let prefilter = if strings.is_empty() {
            None
        } else {
            Some(Prefilter::new(&strings).map_err(|e| RuleError::TooLarge {
                what: "prefilter".into(),
                message: e.to_string(),
            })?)
        };
        let report = CompileReport {
            rules: self.rules.len(),
            patterns: self.patterns.len(),
            literals: literals.len(),
            prefilter_bytes: prefilter.as_ref().map_or(0, Prefilter::memory_usage),
            ..self.report
        };
        // (`strings` lists the literals by id, as `literal_patterns` does.)
        let literal_hits = self
            .literal_patterns
            .iter()
            .zip(&strings)
            .map(|(entries, literal)| {
                let mut hits = LiteralHits::default();
                for &(pattern, set) in entries {
                    let Some(compiled) = self.patterns.get(pattern as usize) else { continue };
                    let Some(rule) = self.rules.get(compiled.rule as usize) else { continue };
                    let mut hit = LiteralHit {
                        pattern,
                        rule: compiled.rule,
                        targets: rule.targets,
                        first_case: 0,
                    };
                    match set {
                        START_SET => {
                            let first = literal.as_bytes().first().copied().unwrap_or(0);
                            let can_start = |b: u8| compiled.first_bytes.contains(b);
                            hit.first_case = u8::from(can_start(first)) * LOWER_CASE
                                + u8::from(can_start(first.to_ascii_uppercase())) * UPPER_CASE;
                            // A start no match can begin with needs no entry.
                            if hit.first_case != 0 {
                                hits.starts.push(hit);
                            }
                        }
                        _ if compiled.single_line => hits.lines.push(hit),
                        _ => hits.once.push(hit),
                    }
                }
                hits
            })
            .collect();
        Ok(Engine {
            rules: self.rules,
            patterns: self.patterns,
            prefilter,
            literal_hits,
            unfiltered: self.unfiltered,
            agents,
            redactor: Redactor::new(),
            report,
            scratch: Mutex::new(Vec::new()),
            regexes: RegexBudget::new(regex_memory_bytes),
        })
    }
}

fn invalid_regex(rule: &Rule, pattern: &Pattern, key: &str, problem: PatternProblem) -> RuleError {
    RuleError::InvalidRegex(Box::new(InvalidRegex {
        file: rule.source.file.clone(),
        line: pattern.line,
        rule: rule.id.clone(),
        key: key.to_string(),
        pattern: pattern.value.clone(),
        reason: problem.reason,
        span: problem.span,
        hint: problem.hint,
    }))
}

fn too_large(what: &str) -> RuleError {
    RuleError::TooLarge { what: what.to_string(), message: "more than 2^32 entries".into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On ASCII text the library's literal DFA reports what its NFA
    /// reports, in the same order: on every example, upper-cased too, and
    /// on all of them joined.
    #[test]
    fn library_dfa_occurrences_equal_nfa_occurrences() {
        let engine = Engine::new(&RulesConfig::default()).unwrap();
        let prefilter = engine.prefilter.as_ref().unwrap();
        let rules = crate::builtin_rules().unwrap();
        let mut texts: Vec<String> = rules
            .iter()
            .flat_map(|r| r.examples.all())
            .filter(|t| t.is_ascii())
            .flat_map(|t| [t.clone(), t.to_ascii_uppercase()])
            .collect();
        texts.push(texts.join("\n"));
        let mut total = 0;
        for text in &texts {
            let key = |o: crate::literals::Occurrence| (o.literal, o.start, o.end);
            let ours: Vec<_> = prefilter.occurrences(text.as_bytes(), true).map(key).collect();
            let theirs: Vec<_> = prefilter.occurrences(text.as_bytes(), false).map(key).collect();
            assert_eq!(ours, theirs, "{text:?}");
            total += ours.len();
        }
        assert!(total > 10_000, "only {total} occurrences");
    }

    /// Anchored searches at the start literals find exactly what a search
    /// of the whole text finds, for every library pattern, on every
    /// example of the library joined into one text (so that patterns meet
    /// each other's hits, lines and line feeds).
    #[test]
    fn anchored_search_at_starts_equals_whole_text_search() {
        // No regex bound: this calls the searches without scans, so a bound
        // would drop and rebuild a regex between the two searches compared.
        let config = RulesConfig { regex_memory_bytes: usize::MAX, ..RulesConfig::default() };
        let engine = Engine::new(&config).unwrap();
        let rules = crate::builtin_rules().unwrap();
        let mut texts: Vec<String> =
            rules.iter().flat_map(|r| r.examples.all()).filter(|t| t.is_ascii()).cloned().collect();
        texts.push(texts.join("\n"));
        texts.push(texts.join("  "));
        let mut anchored_searches = 0;
        for text in &texts {
            let lines = LineIndex::new(text);
            for kind in ContentKind::ALL {
                let mut hits = engine.candidates(text, kind, None).scratch.slots;
                for index in 0..hits.len() {
                    let Some(slot) = hits.get(index) else { continue };
                    if !slot.anchored {
                        continue;
                    }
                    anchored_searches += 1;
                    let pattern = u32::try_from(index).unwrap();
                    let once = |hits: &Vec<Hits>| {
                        let slot = std::iter::once((pattern, &hits[index]));
                        let any = engine.any_matches(text, &lines, slot.clone());
                        (any, engine.all_matches(text, &lines, slot))
                    };
                    let anchored = once(&hits);
                    hits[index].anchored = false;
                    let whole = once(&hits);
                    let value = &engine.patterns[index].value;
                    assert_eq!(anchored, whole, "pattern {value} on {text:?}");
                }
            }
        }
        assert!(anchored_searches > 100, "only {anchored_searches} anchored searches");
    }
}
