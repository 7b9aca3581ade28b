//! Runtime values of expressions, and how they are written as text when stored.

use std::fmt;

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

/// A value read from the data or computed by an expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Empty or unanswered (also the result of an impossible computation, like `1 div 0`).
    Missing,
    /// Text, and single-select choice codes.
    Text(String),
    /// A whole number.
    Integer(i64),
    /// A number with decimals (binary floating point; rounding for storage is the caller's).
    Decimal(f64),
    /// True or false.
    Boolean(bool),
    /// A calendar date.
    Date(Date),
    /// A date and time with its UTC offset.
    DateTime(OffsetDateTime),
    /// A time of day.
    Time(Time),
    /// An OpenClinica PDATE: year, year-month or a full date.
    PartialDate(PartialDate),
    /// The chosen codes of a multiple-choice item, in the order stored.
    MultiSelect(Vec<String>),
}

impl Value {
    /// Whether the value counts as empty: missing, empty text or no choice selected.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        match self {
            Self::Missing => true,
            Self::Text(t) => t.is_empty(),
            Self::MultiSelect(v) => v.is_empty(),
            Self::Decimal(d) => d.is_nan(),
            _ => false,
        }
    }

    /// The value as stored text: integers and whole decimals without `.0`, decimals without an
    /// exponent, dates `YYYY-MM-DD`, date-times RFC 3339, times `HH:MM:SS`, booleans
    /// `true`/`false`, multiple choices separated by a space (the XLSForm convention; the
    /// OpenClinica layer joins [`Value::MultiSelect`] with commas itself). Missing is `""`.
    #[must_use]
    pub fn to_text(&self) -> String {
        match self {
            Self::Missing => String::new(),
            Self::Text(t) => t.clone(),
            Self::Integer(i) => i.to_string(),
            Self::Decimal(d) => format_number(*d),
            Self::Boolean(b) => b.to_string(),
            Self::Date(d) => format_date(*d),
            Self::DateTime(dt) => format_date_time(*dt),
            Self::Time(t) => format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second()),
            Self::PartialDate(p) => p.to_string(),
            Self::MultiSelect(v) => v.join(" "),
        }
    }
}

/// Formats a number for storage: no exponent, no trailing `.0`, `""` for NaN and infinities.
#[must_use]
pub fn format_number(d: f64) -> String {
    if !d.is_finite() {
        return String::new();
    }
    if d == 0.0 {
        // Also turns -0 into 0.
        return "0".to_owned();
    }
    // `Display` for f64 prints the shortest text that reads back to the same number and never
    // uses an exponent. Beyond 15 significant digits that text shows binary noise
    // (0.1 + 0.2 = 0.30000000000000004), so it is rounded to 15 as spreadsheets do.
    let shortest = d.to_string();
    let significant = shortest.trim_start_matches(['-', '0', '.']).chars().filter(char::is_ascii_digit).count();
    if significant <= 15 {
        return shortest;
    }
    #[allow(clippy::cast_possible_truncation)] // log10 of a finite f64 is within ±400
    let magnitude = d.abs().log10().floor() as i32 + 1;
    let decimals = usize::try_from(15 - magnitude).unwrap_or(0);
    let fixed = format!("{d:.decimals$}");
    if fixed.contains('.') { fixed.trim_end_matches('0').trim_end_matches('.').to_owned() } else { fixed }
}

/// An OpenClinica partial date (PDATE): `YYYY`, `YYYY-MM` or `YYYY-MM-DD`.
///
/// In comparisons it stands for the interval of days it may be: `2020` is before
/// `2021-03-05`, but whether `2021` is before `2021-03-05` is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PartialDate {
    year: i32,
    month: Option<Month>,
    day: Option<u8>,
}

impl PartialDate {
    /// Parses `YYYY`, `YYYY-MM` or `YYYY-MM-DD` (a real calendar date).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let parts: Vec<&str> = text.split('-').collect();
        let num = |s: &str, len: usize| {
            (s.len() == len && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<i32>().ok()).flatten()
        };
        match parts.as_slice() {
            [y] => Some(Self { year: num(y, 4)?, month: None, day: None }),
            [y, m] => {
                let month = Month::try_from(u8::try_from(num(m, 2)?).ok()?).ok()?;
                Some(Self { year: num(y, 4)?, month: Some(month), day: None })
            }
            [_, _, _] => parse_date(text).map(Self::from_date),
            _ => None,
        }
    }

    /// A complete date as a partial date.
    #[must_use]
    pub fn from_date(d: Date) -> Self {
        Self { year: d.year(), month: Some(d.month()), day: Some(d.day()) }
    }

    /// The year.
    #[must_use]
    pub fn year(&self) -> i32 {
        self.year
    }

    /// The month, when known.
    #[must_use]
    pub fn month(&self) -> Option<Month> {
        self.month
    }

    /// The day of the month, when known.
    #[must_use]
    pub fn day(&self) -> Option<u8> {
        self.day
    }

    /// The full date, when the day is known.
    #[must_use]
    pub fn as_date(&self) -> Option<Date> {
        Date::from_calendar_date(self.year, self.month?, self.day?).ok()
    }

    /// The first day it may be.
    #[must_use]
    pub fn earliest(&self) -> Date {
        let month = self.month.unwrap_or(Month::January);
        Date::from_calendar_date(self.year, month, self.day.unwrap_or(1)).unwrap_or(Date::MIN)
    }

    /// The last day it may be.
    #[must_use]
    pub fn latest(&self) -> Date {
        let month = self.month.unwrap_or(Month::December);
        let day = self.day.unwrap_or_else(|| month.length(self.year));
        Date::from_calendar_date(self.year, month, day).unwrap_or(Date::MAX)
    }
}

impl fmt::Display for PartialDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}", self.year)?;
        if let Some(m) = self.month {
            write!(f, "-{:02}", u8::from(m))?;
        }
        if let Some(d) = self.day {
            write!(f, "-{d:02}")?;
        }
        Ok(())
    }
}

/// Julian day number of 1970-01-01, the epoch ODK counts dates from.
const EPOCH_JULIAN_DAY: i64 = 2_440_588;

/// Days since 1970-01-01.
pub(crate) fn days_since_epoch(d: Date) -> i64 {
    i64::from(d.to_julian_day()) - EPOCH_JULIAN_DAY
}

/// The date `days` after 1970-01-01.
pub(crate) fn date_from_days(days: i64) -> Option<Date> {
    let jd = days.checked_add(EPOCH_JULIAN_DAY)?;
    Date::from_julian_day(i32::try_from(jd).ok()?).ok()
}

/// Fractional days since 1970-01-01 of the local date and time (the offset is kept, so that
/// `${visit_time} > today()` compares in the participant's local time).
pub(crate) fn fractional_days(dt: OffsetDateTime) -> f64 {
    let seconds = f64::from(dt.hour()) * 3600.0
        + f64::from(dt.minute()) * 60.0
        + f64::from(dt.second())
        + f64::from(dt.nanosecond()) / 1e9;
    to_f64(days_since_epoch(dt.date())) + seconds / 86_400.0
}

/// `i64` to `f64` (dates and counts are far below 2^53, where this is exact).
#[allow(clippy::cast_precision_loss)]
pub(crate) fn to_f64(i: i64) -> f64 {
    i as f64
}

/// `YYYY-MM-DD`, also `YYYY/MM/DD` (OpenClinica).
pub(crate) fn parse_date(text: &str) -> Option<Date> {
    let t = text.trim().as_bytes();
    if t.len() != 10 || !(t[4] == t[7] && (t[4] == b'-' || t[4] == b'/')) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i32> {
        let s = t.get(r)?;
        if !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(s).ok()?.parse().ok()
    };
    let month = Month::try_from(u8::try_from(num(5..7)?).ok()?).ok()?;
    Date::from_calendar_date(num(0..4)?, month, u8::try_from(num(8..10)?).ok()?).ok()
}

/// RFC 3339, or `YYYY-MM-DDTHH:MM[:SS[.fff]]` without offset (read as UTC).
pub(crate) fn parse_date_time(text: &str) -> Option<OffsetDateTime> {
    let text = text.trim();
    if let Ok(dt) = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
        return Some(dt);
    }
    let (date, time) = text.split_once(['T', ' '])?;
    let date = parse_date(date)?;
    let time = parse_time(time)?;
    Some(PrimitiveDateTime::new(date, time).assume_utc())
}

/// `HH:MM[:SS[.fff]]`, ignoring a trailing UTC offset (`10:30:00.000+01:00`).
pub(crate) fn parse_time(text: &str) -> Option<Time> {
    let text = text.trim();
    let end = text.find(['+', 'Z', 'z']).or_else(|| text.get(1..).and_then(|t| t.find('-').map(|i| i + 1)));
    let text = end.map_or(text, |e| &text[..e]);
    let mut parts = text.split(':');
    let num = |s: Option<&str>| -> Option<u8> {
        let s = s?;
        (s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
    };
    let hour = num(parts.next())?;
    let minute = num(parts.next())?;
    let (second, nanos) = match parts.next() {
        None => (0, 0),
        Some(s) => {
            let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
            let nanos = if frac.is_empty() {
                0
            } else {
                let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
                digits.parse().ok()?
            };
            (num(Some(whole))?, nanos)
        }
    };
    if parts.next().is_some() {
        return None;
    }
    Time::from_hms_nano(hour, minute, second, nanos).ok()
}

pub(crate) fn format_date(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

pub(crate) fn format_date_time(dt: OffsetDateTime) -> String {
    dt.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// XPath number syntax: optional `-`, digits with an optional `.` (surrounding space allowed).
/// Returns the number, and whether it was written without a decimal point.
pub(crate) fn parse_number(text: &str) -> Option<(f64, bool)> {
    let t = text.trim();
    let digits = t.strip_prefix('-').unwrap_or(t);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let valid = (!int.is_empty() || !frac.is_empty())
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit());
    if !valid {
        return None;
    }
    Some((t.parse().ok()?, !digits.contains('.')))
}
