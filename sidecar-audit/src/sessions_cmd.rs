//! `warrant-audit sessions [--since DURATION] [--json]`: sessions from the
//! audit chain.
//!
//! The command reads audit records as [`RecordRow`]s (the caller queries
//! the store), and this module turns them into one [`SessionSummary`] per
//! session id: first and last record time, record count, distinct senders,
//! blocks, quarantines, content flags and a risk score, newest first. It
//! renders them as a text table ([`render_text`]) or as JSON Lines
//! ([`render_json_lines`]). [`parse_duration`] reads the `--since` value and
//! [`cutoff_unix_nanos`] turns it into the time passed to [`summarize`].
//!
//! Everything here is pure: no clock, no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Risk points per blocked record.
pub const BLOCK_WEIGHT: u64 = 10;
/// Risk points per quarantined record.
pub const QUARANTINE_WEIGHT: u64 = 5;
/// Risk points per content-flagged record.
pub const FLAG_WEIGHT: u64 = 1;

/// The longest `--since` window accepted: 36,500 days (about 100 years).
pub const MAX_SINCE: Duration = Duration::from_secs(36_500 * 86_400);

/// The audit record fields a session summary needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRow {
    /// When the sidecar received the record, in nanoseconds since the Unix
    /// epoch.
    pub received_at_unix_nanos: i64,
    /// The sending agent's name.
    pub from_agent: String,
    /// The session id (resolved or explicit). Rows with an empty id are not
    /// summarized.
    pub session_id: String,
    /// The record's status; `"blocked"` and `"quarantined"` count.
    pub status: String,
    /// The record's decision; `"content_flagged"` counts as a flag.
    pub decision: String,
}

/// One session, as reported by the `sessions` command.
///
/// JSON form (one `data` object of a `{"type": "session"}` line):
///
/// ```json
/// {"session_id": "00112233445566778899aabbccddeeff",
///  "start": "2025-01-02T03:04:05.5Z", "end": "2025-01-02T03:09:00Z",
///  "start_unix_nanos": 1735787045500000000, "end_unix_nanos": 1735787340000000000,
///  "records": 12, "sender_count": 2, "senders": ["agent-a", "agent-b"],
///  "blocks": 1, "quarantines": 0, "flags": 3, "risk_score": 13}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionSummary {
    /// The session id.
    pub session_id: String,
    /// The first record's time, RFC 3339 in UTC (fractional seconds only
    /// when non-zero).
    pub start: String,
    /// The last record's time, RFC 3339 in UTC.
    pub end: String,
    /// The first record's time in Unix nanoseconds.
    pub start_unix_nanos: i64,
    /// The last record's time in Unix nanoseconds.
    pub end_unix_nanos: i64,
    /// How many records the session has.
    pub records: u64,
    /// How many distinct senders the session has.
    pub sender_count: u64,
    /// The distinct senders, sorted.
    pub senders: Vec<String>,
    /// Records with status `blocked`.
    pub blocks: u64,
    /// Records with status `quarantined`.
    pub quarantines: u64,
    /// Records with decision `content_flagged`.
    pub flags: u64,
    /// `10 · blocks + 5 · quarantines + flags` (saturating).
    pub risk_score: u64,
}

/// Summarizes the sessions in `rows`, newest first (by last record, then by
/// first record, then by id).
///
/// With `since_unix_nanos`, only sessions with a record at or after that
/// time are reported; those are summarized over *all* their rows, so a
/// session that began before the cutoff shows its whole story.
pub fn summarize(rows: &[RecordRow], since_unix_nanos: Option<i64>) -> Vec<SessionSummary> {
    let mut sessions: BTreeMap<&str, Tally<'_>> = BTreeMap::new();
    for row in rows.iter().filter(|row| !row.session_id.is_empty()) {
        sessions.entry(row.session_id.as_str()).or_insert_with(|| Tally::new(row)).add(row);
    }

    let mut summaries: Vec<SessionSummary> = sessions
        .into_iter()
        .filter(|(_, tally)| since_unix_nanos.is_none_or(|since| tally.end >= since))
        .map(|(id, tally)| tally.into_summary(id))
        .collect();
    summaries.sort_by(|a, b| {
        (b.end_unix_nanos, b.start_unix_nanos)
            .cmp(&(a.end_unix_nanos, a.start_unix_nanos))
            .then_with(|| a.session_id.cmp(&b.session_id))
    });
    summaries
}

/// Renders summaries as a text table, one session per line, times to the
/// second. Ends with a newline; says `no sessions` when there are none.
pub fn render_text(summaries: &[SessionSummary]) -> String {
    if summaries.is_empty() {
        return "no sessions\n".to_owned();
    }
    let id_width = summaries.iter().map(|s| s.session_id.len()).max().unwrap_or(0).max(7);
    let mut out = format!(
        "{:<id_width$}  {:<20}  {:<20}  {:>7}  {:>6}  {:>11}  {:>5}  {:>4}  SENDERS\n",
        "SESSION", "START", "END", "RECORDS", "BLOCKS", "QUARANTINES", "FLAGS", "RISK"
    );
    for s in summaries {
        out.push_str(&format!(
            "{:<id_width$}  {:<20}  {:<20}  {:>7}  {:>6}  {:>11}  {:>5}  {:>4}  {} ({})\n",
            s.session_id,
            rfc3339_seconds(s.start_unix_nanos),
            rfc3339_seconds(s.end_unix_nanos),
            s.records,
            s.blocks,
            s.quarantines,
            s.flags,
            s.risk_score,
            s.sender_count,
            s.senders.join(", "),
        ));
    }
    out
}

/// Renders summaries as JSON Lines: one `{"type":"session","data":{…}}` line
/// per session (see [`SessionSummary`]), then one
/// `{"type":"summary","data":{"sessions":N,"records":M}}` line.
pub fn render_json_lines(summaries: &[SessionSummary]) -> String {
    let mut out = String::new();
    for summary in summaries {
        push_json_line(&mut out, &Line { kind: "session", data: summary });
    }
    let records = summaries.iter().fold(0u64, |total, s| total.saturating_add(s.records));
    let totals = Totals { sessions: summaries.len() as u64, records };
    push_json_line(&mut out, &Line { kind: "summary", data: &totals });
    out
}

/// Parses a `--since` window: a positive whole number and one unit, `s`,
/// `m`, `h`, `d` (24 h) or `w` (7 d), such as `30m`, `24h` or `7d`.
///
/// # Errors
///
/// [`DurationError::Malformed`] for anything else;
/// [`DurationError::TooLarge`] above [`MAX_SINCE`].
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let malformed = || DurationError::Malformed { found: text.to_owned() };
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(malformed)?;
    let (number, unit) = text.split_at_checked(split).ok_or_else(malformed)?;
    if number.is_empty() {
        return Err(malformed());
    }
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(malformed()),
    };
    let too_large = || DurationError::TooLarge { found: text.to_owned() };
    let count: u64 = number.parse().map_err(|_| too_large())?;
    if count == 0 {
        return Err(malformed());
    }
    let window = Duration::from_secs(count.checked_mul(unit_secs).ok_or_else(too_large)?);
    if window > MAX_SINCE {
        return Err(too_large());
    }
    Ok(window)
}

/// The cutoff for [`summarize`]: `now` minus `window`, in Unix nanoseconds
/// (saturating at the earliest representable time).
pub fn cutoff_unix_nanos(now_unix_nanos: i64, window: Duration) -> i64 {
    let window = i64::try_from(window.as_nanos()).unwrap_or(i64::MAX);
    now_unix_nanos.saturating_sub(window)
}

/// Formats Unix nanoseconds as RFC 3339 in UTC, with fractional seconds
/// only when they are not zero.
pub fn rfc3339(unix_nanos: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_nanos))
        .ok()
        .and_then(|time| time.format(&Rfc3339).ok())
        // Every i64 of nanoseconds is within years 1677..2263, which RFC 3339
        // can show; this fallback is not expected to be used.
        .unwrap_or_else(|| format!("{unix_nanos}ns"))
}

/// A `--since` value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DurationError {
    /// Not a positive whole number followed by s, m, h, d or w.
    Malformed {
        /// The value given.
        found: String,
    },
    /// Longer than [`MAX_SINCE`].
    TooLarge {
        /// The value given.
        found: String,
    },
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurationError::Malformed { found } => write!(
                f,
                "--since: expected a positive whole number followed by s, m, h, d or w, \
                 found {found:?}\n\nexamples: 30m, 24h, 7d"
            ),
            DurationError::TooLarge { found } => {
                write!(f, "--since: expected at most 36500d, found {found:?}")
            }
        }
    }
}

impl std::error::Error for DurationError {}

/// Running counts for one session.
struct Tally<'a> {
    start: i64,
    end: i64,
    records: u64,
    senders: BTreeSet<&'a str>,
    blocks: u64,
    quarantines: u64,
    flags: u64,
}

impl<'a> Tally<'a> {
    fn new(first: &RecordRow) -> Tally<'a> {
        Tally {
            start: first.received_at_unix_nanos,
            end: first.received_at_unix_nanos,
            records: 0,
            senders: BTreeSet::new(),
            blocks: 0,
            quarantines: 0,
            flags: 0,
        }
    }

    fn add(&mut self, row: &'a RecordRow) {
        self.start = self.start.min(row.received_at_unix_nanos);
        self.end = self.end.max(row.received_at_unix_nanos);
        self.records = self.records.saturating_add(1);
        self.senders.insert(&row.from_agent);
        let count = |flag: bool| u64::from(flag);
        self.blocks = self.blocks.saturating_add(count(row.status == "blocked"));
        self.quarantines = self.quarantines.saturating_add(count(row.status == "quarantined"));
        self.flags = self.flags.saturating_add(count(row.decision == "content_flagged"));
    }

    fn into_summary(self, session_id: &str) -> SessionSummary {
        let risk_score = self
            .blocks
            .saturating_mul(BLOCK_WEIGHT)
            .saturating_add(self.quarantines.saturating_mul(QUARANTINE_WEIGHT))
            .saturating_add(self.flags.saturating_mul(FLAG_WEIGHT));
        SessionSummary {
            session_id: session_id.to_owned(),
            start: rfc3339(self.start),
            end: rfc3339(self.end),
            start_unix_nanos: self.start,
            end_unix_nanos: self.end,
            records: self.records,
            sender_count: self.senders.len() as u64,
            senders: self.senders.into_iter().map(str::to_owned).collect(),
            blocks: self.blocks,
            quarantines: self.quarantines,
            flags: self.flags,
            risk_score,
        }
    }
}

/// One JSON Lines record: `{"type": kind, "data": data}`.
#[derive(Serialize)]
struct Line<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    data: &'a T,
}

/// The final JSON Lines record.
#[derive(Serialize)]
struct Totals {
    sessions: u64,
    records: u64,
}

fn push_json_line<T: Serialize>(out: &mut String, line: &Line<'_, T>) {
    // Serializing these plain structs (strings and integers) cannot fail;
    // should it ever, the line is skipped rather than the command aborted.
    if let Ok(json) = serde_json::to_string(line) {
        out.push_str(&json);
        out.push('\n');
    }
}

/// RFC 3339 to the second, for the text table.
fn rfc3339_seconds(unix_nanos: i64) -> String {
    rfc3339(unix_nanos.saturating_sub(unix_nanos.rem_euclid(1_000_000_000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000_000;
    /// 2025-01-02T03:04:05Z.
    const T0: i64 = 1_735_787_045 * SEC;

    fn row(at: i64, agent: &str, session: &str, status: &str, decision: &str) -> RecordRow {
        RecordRow {
            received_at_unix_nanos: at,
            from_agent: agent.to_owned(),
            session_id: session.to_owned(),
            status: status.to_owned(),
            decision: decision.to_owned(),
        }
    }

    fn sample() -> Vec<RecordRow> {
        vec![
            row(T0, "agent-a", "s1", "delivered", "allow"),
            row(T0 + 10 * SEC, "agent-b", "s1", "blocked", "block"),
            row(T0 + 20 * SEC, "agent-a", "s1", "quarantined", "quarantine"),
            row(T0 + 30 * SEC, "agent-a", "s1", "delivered", "content_flagged"),
            row(T0 + 5 * SEC, "agent-c", "s2", "delivered", "allow"),
            row(T0 + 100 * SEC, "agent-c", "s2", "delivered", "content_flagged"),
            row(T0 + 50 * SEC, "agent-d", "", "delivered", "allow"),
        ]
    }

    #[test]
    fn summarize_counts_records_senders_blocks_quarantines_flags_and_risk() {
        let summaries = summarize(&sample(), None);
        assert_eq!(summaries.len(), 2, "rows without a session id are skipped");
        let s1 = summaries.iter().find(|s| s.session_id == "s1").unwrap();
        assert_eq!(
            *s1,
            SessionSummary {
                session_id: "s1".into(),
                start: "2025-01-02T03:04:05Z".into(),
                end: "2025-01-02T03:04:35Z".into(),
                start_unix_nanos: T0,
                end_unix_nanos: T0 + 30 * SEC,
                records: 4,
                sender_count: 2,
                senders: vec!["agent-a".into(), "agent-b".into()],
                blocks: 1,
                quarantines: 1,
                flags: 1,
                risk_score: 16,
            }
        );
    }

    #[test]
    fn summaries_are_newest_first_by_end() {
        let ids: Vec<String> =
            summarize(&sample(), None).into_iter().map(|s| s.session_id).collect();
        assert_eq!(ids, ["s2", "s1"]);
    }

    #[test]
    fn equal_ends_order_by_later_start_then_id() {
        let rows = vec![
            row(T0, "a", "early-start", "delivered", "allow"),
            row(T0 + SEC, "a", "early-start", "delivered", "allow"),
            row(T0 + SEC, "a", "zz-late-start", "delivered", "allow"),
            row(T0 + SEC, "a", "aa-late-start", "delivered", "allow"),
        ];
        let ids: Vec<String> = summarize(&rows, None).into_iter().map(|s| s.session_id).collect();
        assert_eq!(ids, ["aa-late-start", "zz-late-start", "early-start"]);
    }

    #[test]
    fn since_keeps_sessions_with_a_record_after_it_and_counts_all_their_rows() {
        let summaries = summarize(&sample(), Some(T0 + 31 * SEC));
        assert_eq!(summaries.len(), 1);
        assert_eq!(summaries[0].session_id, "s2");
        assert_eq!(summaries[0].records, 2, "the row before the cutoff still counts");

        let at_end = summarize(&sample(), Some(T0 + 30 * SEC));
        assert_eq!(at_end.len(), 2, "a record exactly at the cutoff is inside");
        assert!(summarize(&sample(), Some(T0 + 101 * SEC)).is_empty());
    }

    #[test]
    fn risk_score_weights_blocks_ten_quarantines_five_flags_one() {
        let mut rows = Vec::new();
        for _ in 0..3 {
            rows.push(row(T0, "a", "s", "blocked", "block"));
        }
        for _ in 0..2 {
            rows.push(row(T0, "a", "s", "quarantined", "quarantine"));
        }
        rows.push(row(T0, "a", "s", "delivered", "content_flagged"));
        let summary = &summarize(&rows, None)[0];
        assert_eq!((summary.blocks, summary.quarantines, summary.flags), (3, 2, 1));
        assert_eq!(summary.risk_score, 41);
    }

    #[test]
    fn text_table_shows_one_line_per_session_to_the_second() {
        let rows = vec![
            row(T0 + SEC / 2, "agent-a", "s1", "blocked", "block"),
            row(T0 + 90 * SEC, "agent-b", "s1", "delivered", "content_flagged"),
        ];
        let text = render_text(&summarize(&rows, None));
        let want = [
            concat!(
                "SESSION  START                 END                   ",
                "RECORDS  BLOCKS  QUARANTINES  FLAGS  RISK  SENDERS"
            ),
            concat!(
                "s1       2025-01-02T03:04:05Z  2025-01-02T03:05:35Z  ",
                "      2       1            0      1    11  2 (agent-a, agent-b)"
            ),
        ];
        assert_eq!(text.lines().collect::<Vec<_>>(), want);
        assert!(text.ends_with('\n'));
        assert_eq!(render_text(&[]), "no sessions\n");
    }

    #[test]
    fn json_lines_have_a_type_and_data_envelope_and_a_final_summary() {
        let rows = vec![row(T0 + SEC / 2, "agent-a", "s1", "blocked", "block")];
        let out = render_json_lines(&summarize(&rows, None));
        let lines: Vec<serde_json::Value> =
            out.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            serde_json::json!({"type": "session", "data": {
                "session_id": "s1",
                "start": "2025-01-02T03:04:05.5Z",
                "end": "2025-01-02T03:04:05.5Z",
                "start_unix_nanos": T0 + SEC / 2,
                "end_unix_nanos": T0 + SEC / 2,
                "records": 1, "sender_count": 1, "senders": ["agent-a"],
                "blocks": 1, "quarantines": 0, "flags": 0, "risk_score": 10
            }})
        );
        assert_eq!(
            lines[1],
            serde_json::json!({"type": "summary", "data": {"sessions": 1, "records": 1}})
        );
        assert_eq!(
            render_json_lines(&[]),
            "{\"type\":\"summary\",\"data\":{\"sessions\":0,\"records\":0}}\n"
        );
    }

    #[test]
    fn rfc3339_is_utc_with_fraction_only_when_present() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(T0 + 1), "2025-01-02T03:04:05.000000001Z");
        assert_eq!(rfc3339(-SEC), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339_seconds(T0 + SEC - 1), "2025-01-02T03:04:05Z");
        assert_eq!(rfc3339_seconds(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn parse_duration_table() {
        let cases: Vec<(&str, Result<Duration, DurationError>)> = vec![
            ("90s", Ok(Duration::from_secs(90))),
            ("30m", Ok(Duration::from_secs(1_800))),
            ("24h", Ok(Duration::from_secs(86_400))),
            ("7d", Ok(Duration::from_secs(604_800))),
            ("2w", Ok(Duration::from_secs(1_209_600))),
            ("36500d", Ok(MAX_SINCE)),
            ("36501d", Err(DurationError::TooLarge { found: "36501d".into() })),
            (
                "99999999999999999999s",
                Err(DurationError::TooLarge { found: "99999999999999999999s".into() }),
            ),
            (
                "9999999999999999999w",
                Err(DurationError::TooLarge { found: "9999999999999999999w".into() }),
            ),
            ("", Err(DurationError::Malformed { found: "".into() })),
            ("30", Err(DurationError::Malformed { found: "30".into() })),
            ("m", Err(DurationError::Malformed { found: "m".into() })),
            ("0h", Err(DurationError::Malformed { found: "0h".into() })),
            ("-5m", Err(DurationError::Malformed { found: "-5m".into() })),
            ("1.5h", Err(DurationError::Malformed { found: "1.5h".into() })),
            ("5 m", Err(DurationError::Malformed { found: "5 m".into() })),
            ("5M", Err(DurationError::Malformed { found: "5M".into() })),
            ("5mm", Err(DurationError::Malformed { found: "5mm".into() })),
            ("1h30m", Err(DurationError::Malformed { found: "1h30m".into() })),
            ("7天", Err(DurationError::Malformed { found: "7天".into() })),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), want, "case {text:?}");
        }
    }

    #[test]
    fn every_duration_error_formats() {
        let cases = [
            (
                DurationError::Malformed { found: "30".into() },
                "--since: expected a positive whole number followed by s, m, h, d or w, \
                 found \"30\"\n\nexamples: 30m, 24h, 7d",
            ),
            (
                DurationError::TooLarge { found: "36501d".into() },
                "--since: expected at most 36500d, found \"36501d\"",
            ),
        ];
        for (error, want) in cases {
            assert_eq!(error.to_string(), want);
        }
    }

    #[test]
    fn cutoff_subtracts_the_window_and_saturates() {
        assert_eq!(cutoff_unix_nanos(T0, Duration::from_secs(60)), T0 - 60 * SEC);
        assert_eq!(cutoff_unix_nanos(i64::MIN + 5, Duration::from_secs(1)), i64::MIN);
        assert_eq!(cutoff_unix_nanos(0, Duration::MAX), -i64::MAX);
    }
}
