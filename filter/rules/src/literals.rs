//! The literal pass: every occurrence of every prefilter literal in a
//! text, which is most of a scan.
//!
//! [`Prefilter`] holds two automata over the engine's folded (lowercase)
//! literals and [`Prefilter::occurrences`] picks one per text:
//! - [`LiteralDfa`], an Aho-Corasick DFA over the ASCII literals, for
//!   ASCII text (which can hold no other literal): one table load a byte;
//! - aho-corasick's contiguous NFA over every literal, for folded
//!   non-ASCII text, driven by hand ([`NfaOccurrences`]).
//!
//! Both report what aho-corasick's `find_overlapping_iter` reports, in the
//! same order, ignoring ASCII case (the tests check it).
//!
//! Why a DFA of our own: the NFA follows failure links and decodes state
//! headers at each byte, which was most of a prose scan; aho-corasick's
//! own DFA over the library's 4739 literals halved that but took 13.5 MiB
//! per VM (measured 2026-12-04): 147 byte classes (the non-ASCII literals
//! bring UTF-8 bytes) rounded up to a stride of 256, times 4-byte entries,
//! times 13640 states. [`LiteralDfa`] holds only the ASCII literals,
//! whose 71 distinct bytes plus one class for every other byte give 72
//! classes, and does not round the stride up: 12686 states take 3.5 MiB.

use std::collections::VecDeque;

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::nfa::contiguous::NFA;
use aho_corasick::{BuildError, MatchKind};

/// One occurrence of a prefilter literal: its id (its index in the
/// engine's literal list) and its byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Occurrence {
    pub(crate) literal: usize,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// The automata over the prefilter literals.
#[derive(Debug)]
pub(crate) struct Prefilter {
    nfa: NFA,
    /// `None` when no literal is ASCII.
    dfa: Option<LiteralDfa>,
}

impl Prefilter {
    /// Builds both automata over `literals` (folded), identified by their
    /// index.
    ///
    /// # Errors
    /// When the NFA would be too large.
    pub(crate) fn new(literals: &[&str]) -> Result<Prefilter, BuildError> {
        let nfa = NFA::builder()
            // Dense near the root, where most of the search happens. No
            // prefilter: `NfaOccurrences` drives the automaton itself.
            .dense_depth(4)
            .match_kind(MatchKind::Standard)
            .ascii_case_insensitive(true)
            .prefilter(false)
            .build(literals)?;
        Ok(Prefilter { nfa, dfa: LiteralDfa::new(literals, MAX_DFA_BYTES) })
    }

    /// Heap bytes of both automata.
    pub(crate) fn memory_usage(&self) -> usize {
        self.nfa.memory_usage() + self.dfa.as_ref().map_or(0, LiteralDfa::memory_usage)
    }

    /// Every occurrence of every literal in `haystack`, overlapping ones
    /// too, in order of their end (at one end: the longest first).
    /// `ascii`: whether `haystack` is ASCII (then upper case is searched
    /// as is; other text must be folded the way the literals were).
    pub(crate) fn occurrences<'a>(&'a self, haystack: &'a [u8], ascii: bool) -> Pass<'a> {
        match &self.dfa {
            Some(dfa) if ascii => {
                Pass::Dfa(DfaOccurrences { dfa, haystack, at: 0, state: 0, next: 0, end: 0 })
            }
            _ => match self.nfa.start_state(aho_corasick::Anchored::No) {
                Ok(sid) => Pass::Nfa(NfaOccurrences {
                    nfa: &self.nfa,
                    haystack,
                    at: 0,
                    sid,
                    next: 0,
                    len: 0,
                }),
                Err(_) => Pass::Empty,
            },
        }
    }
}

/// The iterator of [`Prefilter::occurrences`].
#[derive(Debug)]
pub(crate) enum Pass<'a> {
    Dfa(DfaOccurrences<'a>),
    Nfa(NfaOccurrences<'a>),
    Empty,
}

impl Iterator for Pass<'_> {
    type Item = Occurrence;

    #[inline]
    fn next(&mut self) -> Option<Occurrence> {
        match self {
            Pass::Dfa(dfa) => dfa.next(),
            Pass::Nfa(nfa) => nfa.next(),
            Pass::Empty => None,
        }
    }
}

/// The NFA driven by hand, so that a hit costs no call through the
/// generic search (measured 2026-12-04: `find_overlapping_iter`'s per-call
/// bookkeeping was a large part of a 1 KiB scan, which holds about 200
/// hits).
#[derive(Debug)]
pub(crate) struct NfaOccurrences<'a> {
    nfa: &'a NFA,
    haystack: &'a [u8],
    /// Offset just after the last byte fed to the automaton.
    at: usize,
    sid: StateID,
    /// Matches of `sid` reported so far, and how many it has.
    next: usize,
    len: usize,
}

impl Iterator for NfaOccurrences<'_> {
    type Item = Occurrence;

    #[inline]
    fn next(&mut self) -> Option<Occurrence> {
        loop {
            if self.next < self.len {
                let pid = self.nfa.match_pattern(self.sid, self.next);
                self.next += 1;
                let end = self.at;
                let start = end.saturating_sub(self.nfa.pattern_len(pid));
                return Some(Occurrence { literal: pid.as_usize(), start, end });
            }
            let &byte = self.haystack.get(self.at)?;
            self.sid = self.nfa.next_state(aho_corasick::Anchored::No, self.sid, byte);
            self.at += 1;
            self.next = 0;
            self.len = if self.nfa.is_match(self.sid) { self.nfa.match_len(self.sid) } else { 0 };
        }
    }
}

/// Set in a transition when its target state ends at least one literal;
/// the rest of the entry is then an index into `LiteralDfa::matching`.
const MATCH: u32 = 1 << 31;

/// An Aho-Corasick DFA over ASCII literals, ignoring ASCII case. States
/// are numbered in the order the trie was built; a state's row starts at
/// `number * stride` in `transitions`, and a transition holds its target's
/// row offset (so a step is one load), or for a matching target [`MATCH`]
/// and the target's index in `matching` (a division by the stride there
/// was 2% of a 1 KiB scan, natively). State 0 is the root.
#[derive(Debug)]
pub(crate) struct LiteralDfa {
    /// The class of each byte (ASCII upper case as its lower case; bytes
    /// in no literal share class 0).
    classes: [u8; 256],
    /// A row per state, an entry per class.
    transitions: Vec<u32>,
    /// The states that end a literal.
    matching: Vec<MatchingState>,
    /// The literals each matching state ends, by range.
    matches: Vec<u32>,
    /// Byte length of each literal, by id (0 for ids not in the DFA).
    lengths: Vec<u32>,
}

/// Largest transition table built, in bytes. The library's takes 3.5 MiB;
/// many more custom literals could grow it past the VM's memory budget
/// (it grows with states times classes), and then the NFA, which grows
/// with the literals' length only, searches ASCII text too.
const MAX_DFA_BYTES: usize = 8 << 20;

impl LiteralDfa {
    /// Builds the DFA over the ASCII strings of `literals` (lowercase; the
    /// others are left out), identified by their index. `None` when there
    /// is none, or when the transition table would take more than
    /// `max_bytes`.
    pub(crate) fn new(literals: &[&str], max_bytes: usize) -> Option<LiteralDfa> {
        // 1. The alphabet: one class per byte that occurs in a literal.
        let mut ascii: Vec<(&[u8], u32)> = literals
            .iter()
            .zip(0u32..)
            .filter(|(l, _)| l.is_ascii() && !l.is_empty())
            .map(|(l, id)| (l.as_bytes(), id))
            .collect();
        if ascii.is_empty() {
            return None;
        }
        let mut classes = [0u8; 256];
        let mut stride = 1usize;
        for (bytes, _) in &ascii {
            for &b in *bytes {
                let lower = b.to_ascii_lowercase();
                if classes[usize::from(lower)] == 0 {
                    classes[usize::from(lower)] = u8::try_from(stride).ok()?;
                    stride += 1;
                }
            }
        }
        for upper in b'A'..=b'Z' {
            classes[usize::from(upper)] = classes[usize::from(upper.to_ascii_lowercase())];
        }

        // 2. The trie, in one allocation of its exact size: a sorted list
        //    has as many distinct prefixes as the sum of each string's
        //    length past what it shares with the one before. (Wasm memory
        //    never shrinks, so a growing table would cost its peak.)
        ascii.sort_unstable();
        let mut states = 1usize;
        let mut previous: &[u8] = &[];
        for (bytes, _) in &ascii {
            let shared = bytes.iter().zip(previous).take_while(|(a, b)| a == b).count();
            states += bytes.len() - shared;
            previous = bytes;
        }
        let cells = states.checked_mul(stride)?;
        if u32::try_from(cells).ok()? >= MATCH || cells.saturating_mul(4) > max_bytes {
            return None;
        }
        let mut transitions = vec![0u32; cells];
        // During construction an entry of 0 means "no edge": no edge of a
        // trie leads back to the root.
        let mut own: Vec<Option<u32>> = vec![None; states];
        let mut next_state = 1usize;
        for &(bytes, id) in &ascii {
            let mut state = 0usize;
            for &b in bytes {
                let cell = state * stride + usize::from(classes[usize::from(b)]);
                let entry = transitions.get_mut(cell)?;
                if *entry == 0 {
                    *entry = u32::try_from(next_state * stride).ok()?;
                    next_state += 1;
                }
                state = *entry as usize / stride;
            }
            *own.get_mut(state)? = Some(id);
        }

        // 3. Failure links in breadth-first order turn the trie into the
        //    DFA: a missing edge takes the failure state's transition,
        //    which is final because that state is shallower. A state's
        //    matches are its own literal, then its failure state's.
        let mut fail = vec![0usize; states];
        let mut match_ranges = vec![(0u32, 0u32); states];
        let mut matches: Vec<u32> = Vec::new();
        let mut queue: VecDeque<usize> = VecDeque::new();
        for class in 0..stride {
            let child = *transitions.get(class)? as usize / stride;
            if child != 0 {
                let start = u32::try_from(matches.len()).ok()?;
                matches.extend(*own.get(child)?);
                *match_ranges.get_mut(child)? = (start, u32::try_from(matches.len()).ok()?);
                queue.push_back(child);
            }
        }
        while let Some(state) = queue.pop_front() {
            let failure = *fail.get(state)?;
            for class in 0..stride {
                let cell = state * stride + class;
                let through_failure = *transitions.get(failure * stride + class)?;
                let entry = transitions.get_mut(cell)?;
                if *entry == 0 {
                    *entry = through_failure;
                    continue;
                }
                let child = *entry as usize / stride;
                let child_failure = through_failure as usize / stride;
                *fail.get_mut(child)? = child_failure;
                let (from, to) = *match_ranges.get(child_failure)?;
                let start = u32::try_from(matches.len()).ok()?;
                matches.extend(*own.get(child)?);
                matches.extend_from_within(from as usize..to as usize);
                *match_ranges.get_mut(child)? = (start, u32::try_from(matches.len()).ok()?);
                queue.push_back(child);
            }
        }

        // 4. Transitions into matching states point into `matching`.
        let mut matching = Vec::new();
        let mut index_of = vec![u32::MAX; states];
        for (state, &(from, to)) in match_ranges.iter().enumerate() {
            if to > from {
                *index_of.get_mut(state)? = u32::try_from(matching.len()).ok()?;
                let row = u32::try_from(state * stride).ok()?;
                matching.push(MatchingState { row, from, to });
            }
        }
        for entry in &mut transitions {
            let index = index_of.get(*entry as usize / stride).copied().unwrap_or(u32::MAX);
            if index != u32::MAX {
                *entry = MATCH | index;
            }
        }
        let lengths = literals
            .iter()
            .map(|l| if l.is_ascii() { u32::try_from(l.len()).unwrap_or(0) } else { 0 })
            .collect();
        Some(LiteralDfa { classes, transitions, matching, matches, lengths })
    }

    /// Heap bytes of the DFA.
    pub(crate) fn memory_usage(&self) -> usize {
        self.transitions.len() * 4
            + self.matching.len() * 12
            + self.matches.len() * 4
            + self.lengths.len() * 4
    }
}

/// A state of [`LiteralDfa`] that ends at least one literal.
#[derive(Debug, Clone, Copy)]
struct MatchingState {
    /// Its row offset in `transitions`.
    row: u32,
    /// Its literals: `matches[from..to]`, its own first, then those of its
    /// failure state.
    from: u32,
    to: u32,
}

/// [`Prefilter::occurrences`] on ASCII text.
#[derive(Debug)]
pub(crate) struct DfaOccurrences<'a> {
    dfa: &'a LiteralDfa,
    haystack: &'a [u8],
    /// Offset just after the last byte fed to the DFA.
    at: usize,
    /// The current state's row offset.
    state: u32,
    /// The matches of the current state not reported yet (in `matches`).
    next: u32,
    end: u32,
}

impl Iterator for DfaOccurrences<'_> {
    type Item = Occurrence;

    #[inline]
    fn next(&mut self) -> Option<Occurrence> {
        let dfa = self.dfa;
        if self.next >= self.end {
            // The hot loop: one load per byte until a matching state.
            let mut state = self.state as usize;
            let mut at = self.at;
            loop {
                let &byte = self.haystack.get(at)?;
                at += 1;
                let class = usize::from(dfa.classes[usize::from(byte)]);
                let entry = *dfa.transitions.get(state + class)?;
                if entry & MATCH != 0 {
                    let target = dfa.matching.get((entry & !MATCH) as usize)?;
                    (self.state, self.next, self.end) = (target.row, target.from, target.to);
                    break;
                }
                state = entry as usize;
            }
            self.at = at;
        }
        let literal = *dfa.matches.get(self.next as usize)? as usize;
        self.next += 1;
        let length = *dfa.lengths.get(literal)? as usize;
        Some(Occurrence { literal, start: self.at.saturating_sub(length), end: self.at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both automata report what aho-corasick's own overlapping search
    /// reports over the same literals, in the same order, ignoring ASCII
    /// case.
    #[test]
    fn occurrences_equal_overlapping_search() {
        let literals =
            ["he", "she", "his", "hers", "the ", "e ", "s", "ell", "\u{e9}t\u{e9}", "a\tb"];
        let prefilter = Prefilter::new(&literals).unwrap();
        let reference = aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(literals)
            .unwrap();
        let texts = ["UsHers the shell his", "", "s", "ssss", "\u{e9}t\u{e9} the\nhe", "A\tB HERS"];
        for text in texts {
            let theirs: Vec<(usize, usize, usize)> = reference
                .find_overlapping_iter(text)
                .map(|m| (m.pattern().as_usize(), m.start(), m.end()))
                .collect();
            for ascii in [false, true].into_iter().filter(|&a| !a || text.is_ascii()) {
                let ours: Vec<(usize, usize, usize)> = prefilter
                    .occurrences(text.as_bytes(), ascii)
                    .map(|o| (o.literal, o.start, o.end))
                    .collect();
                assert_eq!(ours, theirs, "{text:?}, ascii {ascii}");
            }
        }
    }

    #[test]
    fn no_ascii_literal_or_too_big_a_table_gives_no_dfa() {
        assert!(LiteralDfa::new(&["\u{e9}t\u{e9}"], MAX_DFA_BYTES).is_none());
        assert!(LiteralDfa::new(&[], MAX_DFA_BYTES).is_none());
        // 1 + 5 states of 5 classes (4 letters and the rest): 120 bytes.
        assert!(LiteralDfa::new(&["hello", "he"], 120).is_some());
        assert!(LiteralDfa::new(&["hello", "he"], 119).is_none());
    }
}
