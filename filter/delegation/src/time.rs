//! Points in time, as delegation tokens write them.
//!
//! [`Timestamp`] is a UTC instant with nanosecond precision. The crate never
//! reads a clock: callers pass "now" as a `Timestamp` (in the filter, from the
//! proxy-wasm host clock; in the CLI, from the system clock).
//!
//! Text forms (RFC 3339, as Go's `time` package reads and writes them):
//! - [`Timestamp::parse_rfc3339`] accepts `YYYY-MM-DDTHH:MM:SS`, an optional
//!   fraction of one or more digits (digits past the ninth are dropped), then
//!   `Z` or a `+HH:MM` / `-HH:MM` offset. Example:
//!   `2026-03-24T14:00:00.5+02:00` is `2026-03-24T12:00:00.5Z`.
//! - [`Timestamp`]'s `Display` writes Go's `RFC3339Nano` in UTC: the fraction
//!   has its trailing zeros trimmed and is left out when zero, e.g.
//!   `2026-03-24T12:00:00.123Z`.
//! - [`Timestamp::to_rfc3339_seconds`] writes UTC at second precision, the
//!   form that goes into the signed payload, e.g. `2026-03-24T12:00:00Z`.
//!
//! Only years 0000 to 9999 (after conversion to UTC) are accepted, as in Go's
//! JSON encoding of times.

use std::fmt;
use std::time::Duration;

/// A UTC instant: seconds since the Unix epoch plus nanoseconds.
///
/// Ordering is chronological.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    secs: i64,
    nanos: u32,
}

/// Why a text is not an accepted RFC 3339 time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeError {
    /// The text does not have the `YYYY-MM-DDTHH:MM:SS` shape with a zone.
    Syntax,
    /// A field is out of its range (month 13, day 31 in April, hour 24, ...).
    FieldRange,
    /// The instant is outside the years 0000 to 9999 in UTC, or arithmetic
    /// on it overflowed.
    OutOfRange,
}

impl Timestamp {
    /// The Unix epoch, 1970-01-01T00:00:00Z.
    pub const UNIX_EPOCH: Timestamp = Timestamp { secs: 0, nanos: 0 };

    /// An instant from Unix seconds and nanoseconds; `None` when
    /// `nanos >= 1_000_000_000`.
    pub fn from_unix(secs: i64, nanos: u32) -> Option<Timestamp> {
        (nanos < NANOS_PER_SEC).then_some(Timestamp { secs, nanos })
    }

    /// An instant from whole Unix seconds.
    pub fn from_unix_secs(secs: i64) -> Timestamp {
        Timestamp { secs, nanos: 0 }
    }

    /// An instant from Unix nanoseconds (the proxy-wasm clock's unit).
    pub fn from_unix_nanos(nanos: i64) -> Timestamp {
        let secs = nanos.div_euclid(i64::from(NANOS_PER_SEC));
        // rem_euclid of a positive divisor lies in 0..1e9, which fits in u32.
        let sub = u32::try_from(nanos.rem_euclid(i64::from(NANOS_PER_SEC))).unwrap_or(0);
        Timestamp { secs, nanos: sub }
    }

    /// Whole seconds since the Unix epoch (rounded towards the past).
    pub fn unix_secs(self) -> i64 {
        self.secs
    }

    /// The nanoseconds past [`Timestamp::unix_secs`], below one billion.
    pub fn subsec_nanos(self) -> u32 {
        self.nanos
    }

    /// This instant moved later by `duration`; `None` on overflow.
    pub fn checked_add(self, duration: Duration) -> Option<Timestamp> {
        let secs = i64::try_from(duration.as_secs()).ok()?;
        let mut secs = self.secs.checked_add(secs)?;
        let mut nanos = self.nanos + duration.subsec_nanos();
        if nanos >= NANOS_PER_SEC {
            nanos -= NANOS_PER_SEC;
            secs = secs.checked_add(1)?;
        }
        Some(Timestamp { secs, nanos })
    }

    /// This instant moved by `secs` seconds (either way), saturating at the
    /// ends of the `i64` range.
    pub fn saturating_add_secs(self, secs: i64) -> Timestamp {
        Timestamp { secs: self.secs.saturating_add(secs), nanos: self.nanos }
    }

    /// Parses an RFC 3339 time with an optional fraction and any offset.
    ///
    /// # Errors
    /// [`TimeError`] says whether the shape, a field, or the year range is
    /// wrong.
    ///
    /// # Example
    /// ```
    /// use warrant_delegation::Timestamp;
    /// let t = Timestamp::parse_rfc3339("2026-03-24T14:00:00.5+02:00").unwrap();
    /// assert_eq!(t.to_string(), "2026-03-24T12:00:00.5Z");
    /// ```
    pub fn parse_rfc3339(text: &str) -> Result<Timestamp, TimeError> {
        let b = text.as_bytes();
        // 1. The fixed-width date and time: YYYY-MM-DDTHH:MM:SS.
        let year = digits(b, 0, 4)?;
        expect_byte(b, 4, b'-')?;
        let month = digits(b, 5, 2)?;
        expect_byte(b, 7, b'-')?;
        let day = digits(b, 8, 2)?;
        expect_byte(b, 10, b'T')?;
        let hour = digits(b, 11, 2)?;
        expect_byte(b, 13, b':')?;
        let minute = digits(b, 14, 2)?;
        expect_byte(b, 16, b':')?;
        let second = digits(b, 17, 2)?;
        let valid_day = day >= 1 && day <= days_in_month(year, month);
        if !(1..=12).contains(&month) || !valid_day || hour > 23 || minute > 59 || second > 59 {
            return Err(TimeError::FieldRange);
        }

        // 2. An optional fraction: '.' and at least one digit.
        let mut at = 19;
        let mut nanos: u32 = 0;
        if b.get(at) == Some(&b'.') {
            at += 1;
            let start = at;
            while let Some(d) = b.get(at).filter(|c| c.is_ascii_digit()) {
                if at - start < 9 {
                    nanos = nanos * 10 + u32::from(d - b'0');
                }
                at += 1;
            }
            let used = at - start;
            if used == 0 {
                return Err(TimeError::Syntax);
            }
            for _ in used..9 {
                nanos *= 10;
            }
        }

        // 3. The zone: 'Z' or +HH:MM / -HH:MM, and nothing after it.
        let offset_secs = match b.get(at) {
            Some(b'Z') if b.len() == at + 1 => 0,
            Some(&sign @ (b'+' | b'-')) if b.len() == at + 6 => {
                let oh = digits(b, at + 1, 2)?;
                expect_byte(b, at + 3, b':')?;
                let om = digits(b, at + 4, 2)?;
                if oh > 23 || om > 59 {
                    return Err(TimeError::FieldRange);
                }
                let off = oh * 3600 + om * 60;
                if sign == b'-' {
                    -off
                } else {
                    off
                }
            }
            _ => return Err(TimeError::Syntax),
        };

        // 4. Local time minus the offset gives UTC; keep years 0..=9999.
        let local =
            days_from_civil(year, month, day) * SECS_PER_DAY + hour * 3600 + minute * 60 + second;
        let stamp = Timestamp { secs: local - offset_secs, nanos };
        if !stamp.in_go_year_range() {
            return Err(TimeError::OutOfRange);
        }
        Ok(stamp)
    }

    /// UTC at second precision (`2026-03-24T12:00:00Z`): the form of the
    /// signed payload. Sub-seconds are dropped, not rounded.
    pub fn to_rfc3339_seconds(self) -> String {
        let (date, time) = self.civil();
        format!("{date}T{time}Z")
    }

    /// Whether the instant lies in the years 0000 to 9999 in UTC.
    pub(crate) fn in_go_year_range(self) -> bool {
        let (year, _, _) = civil_from_days(self.secs.div_euclid(SECS_PER_DAY));
        (0..=9999).contains(&year)
    }

    /// `("YYYY-MM-DD", "HH:MM:SS")` in UTC.
    fn civil(self) -> (String, String) {
        let days = self.secs.div_euclid(SECS_PER_DAY);
        let in_day = self.secs.rem_euclid(SECS_PER_DAY);
        let (y, m, d) = civil_from_days(days);
        let date = format!("{y:04}-{m:02}-{d:02}");
        let time = format!("{:02}:{:02}:{:02}", in_day / 3600, in_day / 60 % 60, in_day % 60);
        (date, time)
    }
}

impl fmt::Display for Timestamp {
    /// Go's `RFC3339Nano` in UTC: trailing zeros of the fraction trimmed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (date, time) = self.civil();
        write!(f, "{date}T{time}")?;
        if self.nanos != 0 {
            let frac = format!("{:09}", self.nanos);
            write!(f, ".{}", frac.trim_end_matches('0'))?;
        }
        f.write_str("Z")
    }
}

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeError::Syntax => "expected YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM)",
            TimeError::FieldRange => "a date, time or offset field is out of range",
            TimeError::OutOfRange => "expected a year from 0000 to 9999 in UTC",
        })
    }
}

impl std::error::Error for TimeError {}

const NANOS_PER_SEC: u32 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// `count` ASCII digits at `at` as a number.
fn digits(b: &[u8], at: usize, count: usize) -> Result<i64, TimeError> {
    let field = b.get(at..at + count).ok_or(TimeError::Syntax)?;
    field.iter().try_fold(0i64, |acc, &c| {
        if c.is_ascii_digit() {
            Ok(acc * 10 + i64::from(c - b'0'))
        } else {
            Err(TimeError::Syntax)
        }
    })
}

fn expect_byte(b: &[u8], at: usize, want: u8) -> Result<(), TimeError> {
    if b.get(at) == Some(&want) {
        Ok(())
    } else {
        Err(TimeError::Syntax)
    }
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the well-known
/// era/day-of-era decomposition, eras of 400 years).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y.rem_euclid(400);
    let shifted_month = (month + 9) % 12; // March = 0 ... February = 11
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`]: `(year, month, day)`.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utc_offsets_and_fractions_like_go() {
        let cases = [
            ("1970-01-01T00:00:00Z", 0, 0),
            ("2026-03-24T12:00:00Z", 1_774_353_600, 0),
            ("2026-03-24T14:00:00+02:00", 1_774_353_600, 0),
            ("2026-03-24T11:30:00-00:30", 1_774_353_600, 0),
            ("2026-03-24T12:00:00.5Z", 1_774_353_600, 500_000_000),
            ("2026-03-24T12:00:00.123456789Z", 1_774_353_600, 123_456_789),
            ("2026-03-24T12:00:00.1234567891234Z", 1_774_353_600, 123_456_789),
            ("2024-02-29T00:00:00Z", 1_709_164_800, 0),
            ("1969-12-31T23:59:59Z", -1, 0),
            ("0000-01-01T00:00:00Z", -62_167_219_200, 0),
            ("9999-12-31T23:59:59Z", 253_402_300_799, 0),
        ];
        for (text, secs, nanos) in cases {
            let t = Timestamp::parse_rfc3339(text).unwrap();
            assert_eq!((t.unix_secs(), t.subsec_nanos()), (secs, nanos), "{text}");
        }
    }

    #[test]
    fn rejects_malformed_times_with_the_reason() {
        let cases = [
            ("", TimeError::Syntax),
            ("2026-03-24", TimeError::Syntax),
            ("2026-03-24 12:00:00Z", TimeError::Syntax),
            ("2026-03-24t12:00:00Z", TimeError::Syntax),
            ("2026-03-24T12:00:00", TimeError::Syntax),
            ("2026-03-24T12:00:00z", TimeError::Syntax),
            ("2026-03-24T12:00:00.Z", TimeError::Syntax),
            ("2026-03-24T12:00:00Z ", TimeError::Syntax),
            ("2026-03-24T12:00:00+0200", TimeError::Syntax),
            ("+026-03-24T12:00:00Z", TimeError::Syntax),
            ("2026-13-01T00:00:00Z", TimeError::FieldRange),
            ("2025-02-29T00:00:00Z", TimeError::FieldRange),
            ("2026-04-31T00:00:00Z", TimeError::FieldRange),
            ("2026-03-24T24:00:00Z", TimeError::FieldRange),
            ("2026-03-24T12:00:60Z", TimeError::FieldRange),
            ("2026-03-24T12:00:00+24:00", TimeError::FieldRange),
            ("0000-01-01T00:00:00+01:00", TimeError::OutOfRange),
            ("9999-12-31T23:59:59-01:00", TimeError::OutOfRange),
        ];
        for (text, want) in cases {
            assert_eq!(Timestamp::parse_rfc3339(text), Err(want), "{text:?}");
        }
    }

    #[test]
    fn displays_go_rfc3339nano_in_utc() {
        let cases = [
            ("2026-03-24T14:00:00+02:00", "2026-03-24T12:00:00Z"),
            ("2026-03-24T12:00:00.120Z", "2026-03-24T12:00:00.12Z"),
            ("2026-03-24T12:00:00.000000001Z", "2026-03-24T12:00:00.000000001Z"),
            ("1969-12-31T23:59:59.5Z", "1969-12-31T23:59:59.5Z"),
        ];
        for (text, want) in cases {
            assert_eq!(Timestamp::parse_rfc3339(text).unwrap().to_string(), want);
        }
    }

    #[test]
    fn payload_form_drops_subseconds() {
        let t = Timestamp::parse_rfc3339("2026-03-24T12:00:00.999Z").unwrap();
        assert_eq!(t.to_rfc3339_seconds(), "2026-03-24T12:00:00Z");
    }

    #[test]
    fn unix_nanos_split_towards_the_past() {
        let t = Timestamp::from_unix_nanos(-1);
        assert_eq!((t.unix_secs(), t.subsec_nanos()), (-1, 999_999_999));
        let t = Timestamp::from_unix_nanos(1_500_000_000);
        assert_eq!((t.unix_secs(), t.subsec_nanos()), (1, 500_000_000));
        assert_eq!(Timestamp::from_unix(0, 1_000_000_000), None);
    }

    #[test]
    fn checked_add_carries_nanos_and_detects_overflow() {
        let t = Timestamp::from_unix(10, 600_000_000).unwrap();
        let later = t.checked_add(Duration::new(1, 500_000_000)).unwrap();
        assert_eq!((later.unix_secs(), later.subsec_nanos()), (12, 100_000_000));
        assert_eq!(Timestamp::from_unix_secs(i64::MAX).checked_add(Duration::from_secs(1)), None);
    }

    #[test]
    fn civil_conversion_round_trips_over_four_centuries() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn every_time_error_formats() {
        for e in [TimeError::Syntax, TimeError::FieldRange, TimeError::OutOfRange] {
            assert!(!e.to_string().is_empty());
        }
    }
}
