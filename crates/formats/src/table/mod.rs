//! Tabular statistical files: SAS XPORT v5 transport ([`sas_xpt`]), SPSS system files
//! ([`spss_sav`]) and Stata 118 ([`stata_dta`]), written from the public format descriptions.
//!
//! Every writer takes the same model, a [`TableSpec`], and streams rows of cells given as
//! canonical text (`Some("64.5")`, `Some("2024-03-05")`, `None` for missing): `new(out, spec)`,
//! then `row(&cells)` per row, then `finish()`, which returns the output. Memory does not grow
//! with the number of rows. A cell that does not parse for its column kind is an
//! [`io::ErrorKind::InvalidData`] error naming the column and the (1-based) row.
//!
//! Variable names in these formats are short and restricted; [`short_names`] maps column names
//! to valid ones and every writer exposes the mapping it used (`names()`), for the caller to put
//! in the data dictionary.

pub mod sas_xpt;
pub mod spss_sav;
pub mod stata_dta;

use std::collections::HashSet;
use std::io;

use time::format_description::well_known::Rfc3339;
use time::macros::{date, format_description};
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time};

/// A table to write: its dataset name and label, and its columns in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    /// Dataset name (mapped with [`short_names`] where the format has one).
    pub name: String,
    pub label: String,
    pub columns: Vec<ColumnSpec>,
    /// The creation time the headers record (take it from the injected clock,
    /// `casebook_domain::clock`); written in UTC.
    pub created: OffsetDateTime,
}

/// One column: its name (e.g. `WEIGHT_E1_C1`, may be long), label, kind and value labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSpec {
    pub name: String,
    pub label: String,
    pub kind: ColumnKind,
    /// Code → label, in display order.
    pub value_labels: Vec<(String, String)>,
    /// Width in bytes (UTF-8) of a [`ColumnKind::Text`] column; [`DEFAULT_TEXT_WIDTH`] when
    /// `None`. A longer value is an error, never truncated. Ignored for other kinds.
    pub width: Option<u16>,
}

/// Text width when a [`ColumnSpec`] gives none.
pub const DEFAULT_TEXT_WIDTH: u16 = 200;

impl ColumnSpec {
    /// A column without value labels or width hint.
    pub fn new(name: &str, label: &str, kind: ColumnKind) -> Self {
        ColumnSpec { name: name.to_owned(), label: label.to_owned(), kind, value_labels: Vec::new(), width: None }
    }

    /// The text width in bytes: the hint or [`DEFAULT_TEXT_WIDTH`].
    pub fn text_width(&self) -> u16 {
        self.width.unwrap_or(DEFAULT_TEXT_WIDTH)
    }
}

/// What a column holds, and the canonical text its cells arrive in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Text,
    /// `-12`, `64`: stored as a double (exact up to 2^53).
    Integer,
    /// `64.5`, `-0.25`, `1e3`: stored as a double.
    Decimal,
    /// ISO `YYYY-MM-DD`.
    Date,
    /// RFC 3339 (`2024-03-05T14:30:00Z`, `…+02:00`, fractions allowed), normalised to UTC; a
    /// value without offset (`2024-03-05T14:30:00`) is taken as is.
    DateTime,
    /// `HH:MM` or `HH:MM:SS`.
    Time,
}

impl ColumnKind {
    /// Whether the column is stored as a number (all kinds but [`ColumnKind::Text`]).
    pub fn is_numeric(self) -> bool {
        !matches!(self, ColumnKind::Text)
    }
}

/// Makes unique, valid variable names of at most `max` characters (`max` ≥ 2), one per input,
/// in order: SAS v5 needs 8, SPSS 64 (8 in its dictionary record), Stata 32.
///
/// Rules, deterministic and depending only on the names before in the list:
/// 1. ASCII letters are uppercased; any other character but digits and `_` becomes `_`;
/// 2. a name that is empty or does not start with a letter gets a `V` in front;
/// 3. the name is cut to `max` characters;
/// 4. a name already taken (by an earlier column), or an SPSS reserved word (`ALL AND BY EQ GE
///    GT LE LT NE NOT OR TO WITH`), gets the smallest numeric suffix from 2 up that makes it
///    unique, cutting the name further to keep within `max`: `WEIGHT_E1_C1`, `WEIGHT_E1_C2` at 8
///    give `WEIGHT_E`, `WEIGHT_2`.
pub fn short_names(names: &[String], max: usize) -> Vec<String> {
    const RESERVED: [&str; 13] = ["ALL", "AND", "BY", "EQ", "GE", "GT", "LE", "LT", "NE", "NOT", "OR", "TO", "WITH"];
    let max = max.max(2);
    let mut taken: HashSet<String> = RESERVED.iter().map(|s| (*s).to_owned()).collect();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let mut base: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c.to_ascii_uppercase() } else { '_' })
            .collect();
        if !base.starts_with(|c: char| c.is_ascii_alphabetic()) {
            base.insert(0, 'V');
        }
        base.truncate(max);
        let mut candidate = base.clone();
        let mut n = 2u64;
        while taken.contains(&candidate) {
            let suffix = n.to_string();
            let keep = max.saturating_sub(suffix.len()).min(base.len()).max(1);
            candidate = format!("{}{suffix}", &base[..keep]);
            n += 1;
        }
        taken.insert(candidate.clone());
        out.push(candidate);
    }
    out
}

/// A parsed cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Cell<'a> {
    Missing,
    Text(&'a str),
    Number(f64),
}

/// A numeric cell's value in the units the formats share: dates in days since 1960-01-01,
/// datetimes in seconds since 1960-01-01T00:00:00, times in seconds since midnight.
pub(crate) fn parse_cell<'a>(column: &ColumnSpec, row: u64, cell: Option<&'a str>) -> io::Result<Cell<'a>> {
    let Some(text) = cell else { return Ok(Cell::Missing) };
    let bad = |what: &str| {
        io::Error::new(io::ErrorKind::InvalidData, format!("row {row}, column {}: {text:?} is not {what}", column.name))
    };
    Ok(match column.kind {
        ColumnKind::Text => {
            let width = usize::from(column.text_width());
            if text.len() > width {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "row {row}, column {}: text of {} bytes is longer than the column width {width}",
                        column.name,
                        text.len()
                    ),
                ));
            }
            Cell::Text(text)
        }
        ColumnKind::Integer => {
            let value: i64 = text.trim().parse().map_err(|_| bad("an integer"))?;
            if value.unsigned_abs() > 1 << 53 {
                return Err(bad("an integer within ±2^53 (exact as a double)"));
            }
            Cell::Number(value as f64)
        }
        ColumnKind::Decimal => Cell::Number(parse_decimal(text).ok_or_else(|| bad("a decimal number"))?),
        ColumnKind::Date => Cell::Number(parse_date(text).ok_or_else(|| bad("a date (YYYY-MM-DD)"))? as f64),
        ColumnKind::DateTime => Cell::Number(parse_datetime(text).ok_or_else(|| bad("an RFC 3339 date and time"))?),
        ColumnKind::Time => Cell::Number(parse_time(text).ok_or_else(|| bad("a time (HH:MM or HH:MM:SS)"))?),
    })
}

/// A finite decimal number: optional sign, digits with an optional point, optional exponent.
pub(crate) fn parse_decimal(text: &str) -> Option<f64> {
    let t = text.trim();
    let valid = !t.is_empty()
        && t.chars().all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | 'e' | 'E'))
        && t.chars().any(|c| c.is_ascii_digit());
    let value: f64 = if valid { t.parse().ok()? } else { return None };
    value.is_finite().then_some(value)
}

const EPOCH_1960: Date = date!(1960 - 01 - 01);

/// Days since 1960-01-01.
pub(crate) fn parse_date(text: &str) -> Option<i64> {
    let d = Date::parse(text.trim(), format_description!("[year]-[month]-[day]")).ok()?;
    Some(i64::from(d.to_julian_day() - EPOCH_1960.to_julian_day()))
}

/// Seconds since 1960-01-01T00:00:00 (UTC when the text has an offset).
pub(crate) fn parse_datetime(text: &str) -> Option<f64> {
    let t = text.trim();
    let pdt = match OffsetDateTime::parse(t, &Rfc3339) {
        Ok(odt) => {
            let utc = odt.to_offset(time::UtcOffset::UTC);
            PrimitiveDateTime::new(utc.date(), utc.time())
        }
        Err(_) => PrimitiveDateTime::parse(
            t,
            format_description!(
                version = 2,
                "[year]-[month]-[day][first [T] [t] [ ]][hour]:[minute][optional [:[second][optional [.[subsecond]]]]]"
            ),
        )
        .ok()?,
    };
    let days = i64::from(pdt.date().to_julian_day() - EPOCH_1960.to_julian_day());
    Some(days as f64 * 86_400.0 + seconds_of(pdt.time()))
}

/// Seconds since midnight.
pub(crate) fn parse_time(text: &str) -> Option<f64> {
    let t = Time::parse(
        text.trim(),
        format_description!(version = 2, "[hour]:[minute][optional [:[second][optional [.[subsecond]]]]]"),
    )
    .ok()?;
    Some(seconds_of(t))
}

fn seconds_of(t: Time) -> f64 {
    f64::from(u32::from(t.hour()) * 3600 + u32::from(t.minute()) * 60 + u32::from(t.second()))
        + f64::from(t.nanosecond()) / 1e9
}

/// `s` cut to at most `max` bytes at a character boundary.
pub(crate) fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `s` as exactly `len` bytes: cut at a character boundary, padded with `pad`.
pub(crate) fn fixed(s: &str, len: usize, pad: u8) -> Vec<u8> {
    let mut v = cut(s, len).as_bytes().to_vec();
    v.resize(len, pad);
    v
}

/// Three-letter English month abbreviation, capitalised (`Jan`).
pub(crate) fn month_abbr(t: OffsetDateTime) -> &'static str {
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        [usize::from(u8::from(t.month())) - 1]
}

/// `created` in UTC.
pub(crate) fn utc(t: OffsetDateTime) -> OffsetDateTime {
    t.to_offset(time::UtcOffset::UTC)
}

pub(crate) fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn short_names_truncate_and_number_collisions() {
        let got = short_names(&names(&["WEIGHT_E1_C1", "WEIGHT_E1_C2", "weight_2", "1abc", "a b", "and", ""]), 8);
        assert_eq!(got, ["WEIGHT_E", "WEIGHT_2", "WEIGHT_3", "V1ABC", "A_B", "AND2", "V"]);
    }

    #[test]
    fn parses_canonical_text() {
        assert_eq!(parse_date("1960-01-02"), Some(1));
        assert_eq!(parse_date("1959-12-31"), Some(-1));
        assert_eq!(parse_datetime("1960-01-01T01:00:00+01:00"), Some(0.0));
        assert_eq!(parse_datetime("1960-01-02T00:00:01.5"), Some(86_401.5));
        assert_eq!(parse_time("01:02"), Some(3720.0));
        assert_eq!(parse_decimal("-0.25"), Some(-0.25));
        assert_eq!(parse_decimal("inf"), None);
        assert_eq!(parse_decimal("."), None);
    }
}
