//! Preparing scanned text: NFKC normalisation, line positions and Markdown
//! code fences.
//!
//! [`LineIndex`] maps byte offsets to 1-based lines and back; the engine
//! works in lines because findings, exclude windows and fences are all
//! defined per line. A line is the text between two `\n` (a trailing `\r`
//! stays part of its line).

use std::borrow::Cow;
use std::ops::Range;

use unicode_normalization::{is_nfkc_quick, IsNormalized, UnicodeNormalization};

/// NFKC form of `text`, borrowed when it is already normal (always for
/// ASCII).
pub(crate) fn normalise(text: &str) -> Cow<'_, str> {
    if text.is_ascii() || is_nfkc_quick(text.chars()) == IsNormalized::Yes {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.nfkc().collect())
    }
}

/// Start offsets of the lines of one text.
#[derive(Debug)]
pub(crate) struct LineIndex {
    /// `starts[i]` is the offset of line `i + 1`.
    starts: Vec<usize>,
    len: usize,
}

impl LineIndex {
    pub(crate) fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(memchr::memchr_iter(b'\n', text.as_bytes()).map(|at| at + 1));
        LineIndex { starts, len: text.len() }
    }

    /// Number of lines (a text without `\n` has one).
    #[cfg(test)]
    pub(crate) fn count(&self) -> u32 {
        u32::try_from(self.starts.len()).unwrap_or(u32::MAX)
    }

    /// The 1-based line holding byte `offset`.
    pub(crate) fn line_of(&self, offset: usize) -> u32 {
        let index = self.starts.partition_point(|&start| start <= offset);
        u32::try_from(index.max(1)).unwrap_or(u32::MAX)
    }

    /// Byte range of lines `first..=last` (1-based), without the final `\n`.
    pub(crate) fn lines(&self, first: u32, last: u32) -> Range<usize> {
        let start = self.start(first);
        let end = match self.starts.get(last as usize) {
            Some(next) => next.saturating_sub(1),
            None => self.len,
        };
        start..end.max(start)
    }

    fn start(&self, line: u32) -> usize {
        let index = (line as usize).saturating_sub(1);
        self.starts.get(index).copied().unwrap_or(self.len)
    }
}

/// The 1-based line ranges (inclusive) covered by Markdown code fences: from
/// an opening fence line (up to three spaces, then three or more backticks
/// or tildes) to the closing fence line (the same character, at least as
/// many, nothing else), or to the end of the text when it is not closed.
pub(crate) fn fenced_lines(text: &str) -> Vec<Range<u32>> {
    let mut fences = Vec::new();
    let mut open: Option<(u32, char, usize)> = None;
    let mut number = 0u32;
    for line in text.split('\n') {
        number = number.saturating_add(1);
        let Some((marker, length, rest)) = fence_marker(line) else { continue };
        match open {
            None => open = Some((number, marker, length)),
            Some((start, open_marker, open_length)) => {
                if marker == open_marker && length >= open_length && rest.trim().is_empty() {
                    fences.push(start..number.saturating_add(1));
                    open = None;
                }
            }
        }
    }
    if let Some((start, _, _)) = open {
        fences.push(start..number.saturating_add(1));
    }
    fences
}

fn fence_marker(line: &str) -> Option<(char, usize, &str)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let body = line.get(indent..)?;
    let marker = body.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let length = body.len() - body.trim_start_matches(marker).len();
    (length >= 3).then(|| (marker, length, body.get(length..).unwrap_or("")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_index_maps_offsets_and_ranges() {
        let text = "ab\ncd\r\n\nef";
        let index = LineIndex::new(text);
        assert_eq!(index.count(), 4);
        assert_eq!(index.line_of(0), 1);
        assert_eq!(index.line_of(2), 1);
        assert_eq!(index.line_of(3), 2);
        assert_eq!(index.line_of(9), 4);
        assert_eq!(&text[index.lines(2, 2)], "cd\r");
        assert_eq!(&text[index.lines(1, 3)], "ab\ncd\r\n");
        assert_eq!(&text[index.lines(4, 4)], "ef");
    }

    #[test]
    fn fences_cover_open_to_close_and_unclosed_to_end() {
        let text = "a\n```bash\nrm -rf /\n```\nb\n  ~~~~\nx\n~~~\ny\n~~~~\n```\nz";
        assert_eq!(fenced_lines(text), vec![2..5, 6..11, 11..13]);
    }

    #[test]
    fn normalise_maps_fullwidth_and_borrows_ascii() {
        assert!(matches!(normalise("plain"), Cow::Borrowed(_)));
        assert_eq!(normalise("ｉｎｓｍｏｄ"), "insmod");
    }
}
