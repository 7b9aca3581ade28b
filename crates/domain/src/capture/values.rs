//! One item value: what a site user typed or an import carried, parsed once into the canonical
//! text Casebook stores, and read back as a typed [`Value`] for the expression engine.
//!
//! Every value is stored as text (as OpenClinica's `item_data.value`, at most
//! [`MAX_VALUE_CHARS`] characters), so one canonical spelling per value matters: audit trails,
//! exports, double data entry and "did the value change?" all compare texts.
//!
//! # Canonical texts (OpenClinica data model §2)
//! | Type | Canonical | Also accepted |
//! |---|---|---|
//! | ST (text) | the text, trimmed, `\r\n` → `\n`, ≤ `length` (default 4000) characters | |
//! | INT | `-?[1-9][0-9]*` or `0` (no `+`, no leading zeros), fits 64 bits | `+5`, `007` |
//! | REAL | `-?digits[.digits]`, rounded half away from zero to `decimals` when the item has them | `.5`, `5.`, `+1.25` |
//! | DATE | `YYYY-MM-DD` | `2015-8-3`, `2015/08/03`, `03-Aug-2015`, `3 aug 2015`, `03-August-2015` |
//! | PDATE | `YYYY`, `YYYY-MM` or `YYYY-MM-DD` | `Aug-2015`, `2015-8`, and every DATE form |
//! | DATETIME | `YYYY-MM-DDTHH:MM:SSZ` (UTC) | `T` or a space, seconds optional, `Z` or `±HH[:MM]` (converted to UTC), `03-Aug-2015 10:30` |
//! | TIME | `HH:MM:SS` | `9:05`, `09:05:30`, `10:30:00.000+02:00` |
//! | BL | `true` / `false` | `yes`/`no`, `y`/`n`, `1`/`0`, any case |
//! | FILE | the stored file reference as given (trimmed) | |
//! | single choice | a code of the item's code list | a unique case-insensitive match of a code |
//! | multiple choice | the chosen codes in code-list order joined by `,` | `a,b`, `b, a`, `a b` |
//!
//! # Decisions
//! - **Empty is not a value.** Empty or blank input is refused with the code `empty`: the caller
//!   treats it as clearing the item, never stores `""`.
//! - **Surrounding whitespace is not data:** every input is trimmed. Control characters other than
//!   tab and newline are refused (PostgreSQL cannot store NUL).
//! - **Width before rounding (§2.3).** An item's `length` on INT/REAL counts the whole string as
//!   typed (sign, leading zeros, point), checked before REAL rounding. REAL is rounded only when the
//!   item has `decimals`: OpenClinica's default of 4 belongs to its importer, which knows the
//!   source; XLSForm `decimal` questions keep what was typed. Trailing zeros typed within the
//!   allowed decimals are kept (`1.50` says the measurement has two decimals).
//! - **Dates are year first or day–month name–year.** `2015-8-3` is unambiguous and accepted;
//!   `3/8/2015` is not (day-first or month-first depends on the country) and is refused, with the
//!   forms that are accepted in the message. English month abbreviations (and full names), any
//!   case, as OpenClinica displays dates (`dd-MMM-yyyy`). Years have four digits, from 0001.
//! - **Date-times are stored in UTC.** An input without an offset is read as UTC: a caller that
//!   knows the site's time zone appends its offset before calling. Fractions of seconds are
//!   dropped (an EDC records to the second).
//! - **A time of day keeps its wall-clock reading.** An offset on a time (ODK writes
//!   `10:30:00.000+02:00`) is dropped: without a date it cannot be converted to UTC.
//! - **Multiple choices are a set.** Canonical = codes in code-list order joined by `,`
//!   (OpenClinica's stored form, §1.9); the input may be separated by commas or, when no comma is
//!   present, by spaces (XLSForm); a repeated code counts once. When the input has a comma, only
//!   commas separate, so codes containing spaces work; codes containing a comma cannot be stored.
//! - **Codes are matched exactly**, then case-insensitively when exactly one code matches.

use time::{Date, Month, PrimitiveDateTime, Time, UtcOffset};

use crate::design::{CodeList, DataType, ItemDef, NULL_FLAVOURS};
use crate::expr::{PartialDate, Value};

/// The most characters any stored value may have (OpenClinica `item_data.value varchar(4000)`).
pub const MAX_VALUE_CHARS: usize = 4000;

/// Why an input is not a value of an item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValueError {
    /// A stable machine code: `empty`, `no_value`, `invalid_character`, `too_long`,
    /// `not_an_integer`, `not_a_number`, `out_of_range`, `not_a_date`, `not_a_partial_date`,
    /// `not_a_date_time`, `not_a_time`, `not_a_boolean`, `not_in_code_list`,
    /// `not_a_null_flavour`, `null_flavour_not_allowed`.
    pub code: &'static str,
    /// For a site user: `'12a' is not a whole number`.
    pub message: String,
}

impl ValueError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// Parses what a user or an import typed for `item` into its canonical stored text (see the
/// module documentation for every type's canonical form and the friendly forms accepted).
///
/// `code_list` is the item's code list when it has one: single-choice items must hold one of its
/// codes, multiple-choice items (checkbox, multi-select) a set of them.
///
/// # Errors
/// A [`ValueError`] with a stable code and a message for the site user; `empty` for blank input
/// (which the caller treats as clearing the item).
pub fn canonical_value(item: &ItemDef, code_list: Option<&CodeList>, raw: &str) -> Result<String, ValueError> {
    if !item.widget.holds_value() {
        return Err(ValueError::new("no_value", "this item is a note and holds no value"));
    }
    let text = clean_input(raw)?;
    let canonical = match code_list {
        Some(list) if item.widget.is_multi() => multiple_choice(list, &text)?,
        Some(list) => single_choice(list, &text)?,
        None => by_data_type(item, &text)?,
    };
    let chars = canonical.chars().count();
    if chars > MAX_VALUE_CHARS {
        return Err(ValueError::new(
            "too_long",
            format!("the value is {chars} characters long; at most {MAX_VALUE_CHARS} are allowed"),
        ));
    }
    Ok(canonical)
}

/// Checks a null flavour entered instead of a value (`UNK`, or its meaning `unknown`, any case)
/// against the codes the event's form allows, and gives its code (`UNK`).
///
/// # Errors
/// `empty`, `not_a_null_flavour` (not one of OpenClinica's codes) or `null_flavour_not_allowed`
/// (not allowed for this form in this event).
pub fn null_flavour(code: &str, allowed: &[String]) -> Result<String, ValueError> {
    let code = code.trim();
    if code.is_empty() {
        return Err(ValueError::new("empty", "no null flavour was given"));
    }
    let Some((known, meaning)) =
        NULL_FLAVOURS.iter().find(|(c, meaning)| c.eq_ignore_ascii_case(code) || meaning.eq_ignore_ascii_case(code))
    else {
        let all: Vec<&str> = NULL_FLAVOURS.iter().map(|(c, _)| *c).collect();
        return Err(ValueError::new(
            "not_a_null_flavour",
            format!("'{}' is not a null flavour (one of {})", shown(code), all.join(", ")),
        ));
    };
    if allowed.iter().any(|a| a.trim().eq_ignore_ascii_case(known)) {
        return Ok((*known).to_owned());
    }
    let message = if allowed.is_empty() {
        format!("{known} ({meaning}) is not allowed: this form allows no null flavours")
    } else {
        format!("{known} ({meaning}) is not allowed in this form; allowed: {}", allowed.join(", "))
    };
    Err(ValueError::new("null_flavour_not_allowed", message))
}

/// The typed value the expression engine sees for a stored canonical text: numbers, dates,
/// times, booleans by the item's data type, a list of codes for multiple choices, [`Value::Missing`]
/// for `""`. Text that does not read as its type (which canonical texts always do) stays text.
#[must_use]
pub fn to_expr_value(item: &ItemDef, canonical: &str) -> Value {
    if canonical.is_empty() {
        return Value::Missing;
    }
    if item.widget.is_multi() {
        return Value::MultiSelect(
            canonical.split(',').map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned).collect(),
        );
    }
    let typed = match item.data_type {
        DataType::Text | DataType::File => None,
        DataType::Integer => canonical.parse().ok().map(Value::Integer),
        DataType::Real => canonical.trim().parse::<f64>().ok().filter(|f| f.is_finite()).map(Value::Decimal),
        DataType::Date => date(canonical).ok().map(Value::Date),
        DataType::PartialDate => PartialDate::parse(canonical).map(Value::PartialDate),
        DataType::DateTime => {
            date_time(canonical).ok().map(|(d, t)| Value::DateTime(PrimitiveDateTime::new(d, t).assume_utc()))
        }
        DataType::Time => clock_time(canonical).map(Value::Time),
        DataType::Boolean => boolean(canonical).ok().map(|b| Value::Boolean(b == "true")),
    };
    typed.unwrap_or_else(|| Value::Text(canonical.to_owned()))
}

/// Trims, normalises line ends, refuses blank input and control characters.
fn clean_input(raw: &str) -> Result<String, ValueError> {
    let text = raw.trim().replace("\r\n", "\n");
    if text.is_empty() {
        return Err(ValueError::new("empty", "no value was given"));
    }
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(ValueError::new("invalid_character", "the value contains a control character"));
    }
    Ok(text)
}

/// The input as quoted in a message: at most 40 characters.
fn shown(text: &str) -> String {
    if text.chars().count() <= 40 {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(40).collect::<String>())
    }
}

fn by_data_type(item: &ItemDef, text: &str) -> Result<String, ValueError> {
    match item.data_type {
        DataType::Text => plain_text(item, text),
        DataType::File => Ok(text.to_owned()),
        DataType::Integer => integer(item, text),
        DataType::Real => real(item, text),
        DataType::Date => date(text).map(format_date),
        DataType::PartialDate => partial_date(text),
        DataType::DateTime => date_time(text).map(|(d, t)| format!("{}T{}Z", format_date(d), format_time(t))),
        DataType::Time => clock_time(text).map(format_time).ok_or_else(|| {
            ValueError::new("not_a_time", format!("'{}' is not a time of day (write 14:30 or 14:30:15)", shown(text)))
        }),
        DataType::Boolean => boolean(text).map(str::to_owned),
    }
}

fn plain_text(item: &ItemDef, text: &str) -> Result<String, ValueError> {
    let max = item.length.and_then(|l| usize::try_from(l).ok()).map_or(MAX_VALUE_CHARS, |l| l.min(MAX_VALUE_CHARS));
    let chars = text.chars().count();
    if chars > max {
        return Err(ValueError::new(
            "too_long",
            format!("the text is {chars} characters long; at most {max} are allowed"),
        ));
    }
    Ok(text.to_owned())
}

/// OpenClinica's width (§2.3): the whole string as typed, sign and point included.
fn check_width(item: &ItemDef, text: &str) -> Result<(), ValueError> {
    let Some(width) = item.length.and_then(|l| usize::try_from(l).ok()) else {
        return Ok(());
    };
    if text.chars().count() > width {
        return Err(ValueError::new(
            "too_long",
            format!("'{}' is longer than the {width} characters allowed", shown(text)),
        ));
    }
    Ok(())
}

fn split_sign(text: &str) -> (bool, &str) {
    if let Some(rest) = text.strip_prefix('-') { (true, rest) } else { (false, text.strip_prefix('+').unwrap_or(text)) }
}

fn integer(item: &ItemDef, text: &str) -> Result<String, ValueError> {
    let (negative, digits) = split_sign(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueError::new("not_an_integer", format!("'{}' is not a whole number", shown(text))));
    }
    check_width(item, text)?;
    let magnitude = digits.trim_start_matches('0');
    let canonical = match (negative, magnitude) {
        (_, "") => "0".to_owned(),
        (true, m) => format!("-{m}"),
        (false, m) => m.to_owned(),
    };
    if canonical.parse::<i64>().is_err() {
        return Err(ValueError::new("out_of_range", format!("'{}' is too large a number", shown(text))));
    }
    Ok(canonical)
}

fn real(item: &ItemDef, text: &str) -> Result<String, ValueError> {
    let (negative, body) = split_sign(text);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
        let hint = if text.contains(',') { " (use a point for decimals: 12.5)" } else { "" };
        return Err(ValueError::new("not_a_number", format!("'{}' is not a number{hint}", shown(text))));
    }
    check_width(item, text)?;
    let int = match int.trim_start_matches('0') {
        "" => "0",
        i => i,
    };
    let (int, frac) = match item.decimals.and_then(|d| usize::try_from(d).ok()) {
        Some(d) if frac.len() > d => round_half_away(int, frac, d),
        _ => (int.to_owned(), frac.to_owned()),
    };
    let zero = int.bytes().chain(frac.bytes()).all(|b| b == b'0');
    let sign = if negative && !zero { "-" } else { "" };
    let canonical = if frac.is_empty() { format!("{sign}{int}") } else { format!("{sign}{int}.{frac}") };
    if !canonical.parse::<f64>().is_ok_and(f64::is_finite) {
        return Err(ValueError::new("out_of_range", format!("'{}' is too large a number", shown(text))));
    }
    Ok(canonical)
}

/// Rounds `int.frac` to `d` decimals, half away from zero, on the decimal digits themselves (no
/// binary floating point: 1.005 rounds to 1.01).
fn round_half_away(int: &str, frac: &str, d: usize) -> (String, String) {
    let up = frac.as_bytes().get(d).is_some_and(|b| *b >= b'5');
    let mut all: Vec<u8> = int.bytes().chain(frac.bytes().take(d)).collect();
    if up {
        let mut carry = true;
        for b in all.iter_mut().rev() {
            if *b == b'9' {
                *b = b'0';
            } else {
                *b += 1;
                carry = false;
                break;
            }
        }
        if carry {
            all.insert(0, b'1');
        }
    }
    let split = all.len() - d;
    let text = |bytes: &[u8]| bytes.iter().map(|b| char::from(*b)).collect::<String>();
    (text(&all[..split]), text(&all[split..]))
}

fn boolean(text: &str) -> Result<&'static str, ValueError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "1" => Ok("true"),
        "false" | "no" | "n" | "0" => Ok("false"),
        _ => Err(ValueError::new("not_a_boolean", format!("'{}' is not yes or no", shown(text)))),
    }
}

const MONTHS: [(&str, &str); 12] = [
    ("jan", "january"),
    ("feb", "february"),
    ("mar", "march"),
    ("apr", "april"),
    ("may", "may"),
    ("jun", "june"),
    ("jul", "july"),
    ("aug", "august"),
    ("sep", "september"),
    ("oct", "october"),
    ("nov", "november"),
    ("dec", "december"),
];

fn month_by_name(name: &str) -> Option<Month> {
    let lower = name.to_ascii_lowercase();
    let index = MONTHS
        .iter()
        .position(|(short, long)| lower == *short || lower == *long || lower == "sept" && *short == "sep")?;
    Month::try_from(u8::try_from(index + 1).ok()?).ok()
}

fn month_by_number(text: &str) -> Option<Month> {
    (matches!(text.len(), 1 | 2) && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse::<u8>().ok())
        .flatten()
        .and_then(|m| Month::try_from(m).ok())
}

fn year(text: &str) -> Option<i32> {
    (text.len() == 4 && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
        .filter(|y| *y >= 1)
}

fn day(text: &str) -> Option<u8> {
    (matches!(text.len(), 1 | 2) && text.bytes().all(|b| b.is_ascii_digit())).then(|| text.parse().ok()).flatten()
}

/// A date with what is known of it, as typed.
enum DateShape {
    Year(i32),
    Month(i32, Month),
    /// A full date whose day may not exist (`2015-02-30`).
    Day(i32, Month, u8),
}

/// Reads `YYYY`, `YYYY-M[M]`, `YYYY-M[M]-D[D]` (also with `/`), `MMM-YYYY` and `D[D]-MMM-YYYY`
/// (also with `/` or spaces).
fn date_shape(text: &str) -> Option<DateShape> {
    let text = text.trim();
    let separator = text.chars().find(|c| matches!(c, '-' | '/' | ' '));
    let parts: Vec<&str> = match separator {
        Some(' ') => text.split_whitespace().collect(),
        Some(s) => text.split(s).collect(),
        None => vec![text],
    };
    match parts.as_slice() {
        [y] => Some(DateShape::Year(year(y)?)),
        [y, m] if y.len() == 4 => Some(DateShape::Month(year(y)?, month_by_number(m)?)),
        [m, y] => Some(DateShape::Month(year(y)?, month_by_name(m)?)),
        [y, m, d] if y.len() == 4 => Some(DateShape::Day(year(y)?, month_by_number(m)?, day(d)?)),
        [d, m, y] => Some(DateShape::Day(year(y)?, month_by_name(m)?, day(d)?)),
        _ => None,
    }
}

fn calendar_date(y: i32, m: Month, d: u8, text: &str) -> Result<Date, ValueError> {
    Date::from_calendar_date(y, m, d).map_err(|_| {
        ValueError::new("not_a_date", format!("'{}' is not a date: {m} {y} has {} days", shown(text), m.length(y)))
    })
}

fn date(text: &str) -> Result<Date, ValueError> {
    match date_shape(text) {
        Some(DateShape::Day(y, m, d)) => calendar_date(y, m, d, text),
        Some(_) => Err(ValueError::new(
            "not_a_date",
            format!("'{}' is not a full date: the day is needed (write 2015-08-03 or 03-Aug-2015)", shown(text)),
        )),
        None => Err(ValueError::new(
            "not_a_date",
            format!("'{}' is not a date (write 2015-08-03 or 03-Aug-2015)", shown(text)),
        )),
    }
}

fn partial_date(text: &str) -> Result<String, ValueError> {
    match date_shape(text) {
        Some(DateShape::Year(y)) => Ok(format!("{y:04}")),
        Some(DateShape::Month(y, m)) => Ok(format!("{y:04}-{:02}", u8::from(m))),
        Some(DateShape::Day(y, m, d)) => calendar_date(y, m, d, text).map(format_date),
        None => Err(ValueError::new(
            "not_a_partial_date",
            format!("'{}' is not a date (write 2015, 2015-08, 2015-08-03, Aug-2015 or 03-Aug-2015)", shown(text)),
        )),
    }
}

/// `HH:MM[:SS[.fff]]`, hours may have one digit; the fraction is dropped.
fn clock_time(text: &str) -> Option<Time> {
    let (text, _offset) = split_offset(text)?;
    let mut parts = text.split(':');
    let two = |s: &str, max_len: usize| {
        (!s.is_empty() && s.len() <= max_len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u8>().ok())
            .flatten()
    };
    let hour = two(parts.next()?, 2)?;
    let minute = parts.next().filter(|m| m.len() == 2).and_then(|m| two(m, 2))?;
    let second = match parts.next() {
        None => 0,
        Some(s) => {
            let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
            if whole.len() != 2 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            two(whole, 2)?
        }
    };
    if parts.next().is_some() {
        return None;
    }
    Time::from_hms(hour, minute, second).ok()
}

/// Splits a trailing `Z` or `±HH[:MM]` / `±HHMM` offset from a time.
fn split_offset(text: &str) -> Option<(&str, Option<UtcOffset>)> {
    let text = text.trim();
    if let Some(rest) = text.strip_suffix(['Z', 'z']) {
        return Some((rest.trim_end(), Some(UtcOffset::UTC)));
    }
    let Some(at) = text.find(['+', '-']) else {
        return Some((text, None));
    };
    let (time, offset) = text.split_at(at);
    let negative = offset.starts_with('-');
    let body = offset.get(1..)?;
    let digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
    let (hours, minutes) = match (body.len(), body.split_once(':')) {
        (2, None) => (body, "00"),
        (4, None) => (body.get(..2)?, body.get(2..)?),
        (5, Some((h, m))) => (h, m),
        _ => return None,
    };
    if !digits(hours) || !digits(minutes) {
        return None;
    }
    let (hours, minutes): (i8, i8) = (hours.parse().ok()?, minutes.parse().ok()?);
    if hours > 23 || minutes > 59 {
        return None;
    }
    let (h, m) = if negative { (-hours, -minutes) } else { (hours, minutes) };
    Some((time.trim_end(), Some(UtcOffset::from_hms(h, m, 0).ok()?)))
}

/// A date and a time (with an optional offset, UTC when absent), converted to UTC.
fn date_time(text: &str) -> Result<(Date, Time), ValueError> {
    let refused = || {
        ValueError::new(
            "not_a_date_time",
            format!(
                "'{}' is not a date and time (write 2015-08-03 14:30, 2015-08-03T14:30:00+02:00 or 03-Aug-2015 14:30)",
                shown(text)
            ),
        )
    };
    let candidates = text.char_indices().filter(|(_, c)| matches!(c, 'T' | 't' | ' '));
    for (at, c) in candidates {
        let (left, right) = (&text[..at], &text[at + c.len_utf8()..]);
        let Some(DateShape::Day(y, m, d)) = date_shape(left) else {
            continue;
        };
        let Some((clock, offset)) = split_offset(right) else {
            continue;
        };
        let Some(t) = clock_time(clock) else {
            continue;
        };
        let date = Date::from_calendar_date(y, m, d).map_err(|_| {
            ValueError::new(
                "not_a_date_time",
                format!("'{}' is not a date and time: {m} {y} has {} days", shown(text), m.length(y)),
            )
        })?;
        let utc = PrimitiveDateTime::new(date, t)
            .assume_offset(offset.unwrap_or(UtcOffset::UTC))
            .checked_to_offset(UtcOffset::UTC)
            .ok_or_else(refused)?;
        return Ok((utc.date(), utc.time()));
    }
    if matches!(date_shape(text), Some(DateShape::Day(..))) {
        return Err(ValueError::new(
            "not_a_date_time",
            format!("'{}' has no time: write it after the date (2015-08-03 14:30)", shown(text)),
        ));
    }
    Err(refused())
}

fn format_date(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

fn format_time(t: Time) -> String {
    format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
}

/// The index of the code list item whose code is `text`: exact, else the only one matching when
/// case is ignored.
fn find_code(list: &CodeList, text: &str) -> Option<usize> {
    if let Some(i) = list.items.iter().position(|c| c.value == text) {
        return Some(i);
    }
    let mut matches = list.items.iter().enumerate().filter(|(_, c)| c.value.eq_ignore_ascii_case(text));
    match (matches.next(), matches.next()) {
        (Some((i, _)), None) => Some(i),
        _ => None,
    }
}

fn choices_hint(list: &CodeList) -> String {
    let codes: Vec<&str> = list.items.iter().take(12).map(|c| c.value.as_str()).collect();
    let more = if list.items.len() > codes.len() { ", …" } else { "" };
    format!("{}{more}", codes.join(", "))
}

fn single_choice(list: &CodeList, text: &str) -> Result<String, ValueError> {
    match find_code(list, text) {
        Some(i) => Ok(list.items.get(i).map(|c| c.value.clone()).unwrap_or_default()),
        None => Err(ValueError::new(
            "not_in_code_list",
            format!("'{}' is not one of the choices ({})", shown(text), choices_hint(list)),
        )),
    }
}

fn multiple_choice(list: &CodeList, text: &str) -> Result<String, ValueError> {
    let parts: Vec<&str> = if text.contains(',') {
        text.split(',').map(str::trim).filter(|p| !p.is_empty()).collect()
    } else if find_code(list, text).is_some() {
        vec![text]
    } else {
        text.split_whitespace().collect()
    };
    let mut chosen = vec![false; list.items.len()];
    let mut unknown = Vec::new();
    for part in parts {
        match find_code(list, part) {
            Some(i) => {
                if let Some(c) = chosen.get_mut(i) {
                    *c = true;
                }
            }
            None => unknown.push(format!("'{}'", shown(part))),
        }
    }
    if !unknown.is_empty() {
        let what = if unknown.len() == 1 { "is not one of" } else { "are not among" };
        return Err(ValueError::new(
            "not_in_code_list",
            format!("{} {what} the choices ({})", unknown.join(", "), choices_hint(list)),
        ));
    }
    let codes: Vec<&str> =
        list.items.iter().zip(&chosen).filter(|(_, chosen)| **chosen).map(|(c, _)| c.value.as_str()).collect();
    if codes.is_empty() {
        return Err(ValueError::new("empty", "no choice was given"));
    }
    Ok(codes.join(","))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::design::{CodeListItem, Required, Text, Widget};
    use crate::oid::Oid;

    /// An item with every optional setting left out.
    pub(crate) fn item(name: &str, data_type: DataType) -> ItemDef {
        let widget = match data_type {
            DataType::Date | DataType::PartialDate => Widget::Date,
            DataType::DateTime => Widget::DateTime,
            DataType::Time => Widget::Time,
            DataType::Integer | DataType::Real => Widget::Number,
            DataType::File => Widget::File,
            _ => Widget::Text,
        };
        ItemDef {
            oid: Oid::parse(&format!("I_{}", name.to_ascii_uppercase())).unwrap(),
            name: name.to_owned(),
            group_oid: Oid::parse("IG_MAIN").unwrap(),
            section: "main".to_owned(),
            data_type,
            widget,
            length: None,
            decimals: None,
            units: None,
            code_list: None,
            label: Text::plain(name),
            hint: Text::default(),
            right_text: None,
            question_number: None,
            header: None,
            subheader: None,
            brief_description: None,
            description: None,
            phi: false,
            required: Required::No,
            required_message: None,
            default_value: None,
            readonly: false,
            hidden: false,
            checks: vec![],
            calculation: None,
            relevant: None,
            conditional_display: None,
            choice_filter: None,
            appearance: None,
            external: None,
            extra: std::collections::BTreeMap::new(),
        }
    }

    pub(crate) fn code_list(oid: &str, codes: &[&str]) -> CodeList {
        CodeList {
            oid: Oid::parse(oid).unwrap(),
            name: oid.to_ascii_lowercase(),
            data_type: DataType::Text,
            items: codes
                .iter()
                .map(|c| CodeListItem { value: (*c).to_owned(), label: Text::plain(*c), extra: Default::default() })
                .collect(),
        }
    }

    /// `Ok(canonical)` or `Err(code)`.
    fn check(item: &ItemDef, list: Option<&CodeList>, cases: &[(&str, Result<&str, &str>)]) {
        for (raw, expected) in cases {
            let got = canonical_value(item, list, raw);
            let got = got.as_ref().map(String::as_str).map_err(|e| e.code);
            assert_eq!(got, *expected, "input {raw:?} for {:?} {:?}", item.data_type, item.widget);
        }
    }

    #[test]
    fn integers() {
        let mut i = item("age", DataType::Integer);
        check(
            &i,
            None,
            &[
                ("42", Ok("42")),
                (" 42 ", Ok("42")),
                ("+42", Ok("42")),
                ("007", Ok("7")),
                ("-0", Ok("0")),
                ("000", Ok("0")),
                ("-15", Ok("-15")),
                ("9223372036854775807", Ok("9223372036854775807")),
                ("9223372036854775808", Err("out_of_range")),
                ("12a", Err("not_an_integer")),
                ("5.0", Err("not_an_integer")),
                ("1,000", Err("not_an_integer")),
                ("-", Err("not_an_integer")),
                ("", Err("empty")),
                ("   ", Err("empty")),
            ],
        );
        i.length = Some(3);
        check(
            &i,
            None,
            &[("999", Ok("999")), ("-99", Ok("-99")), ("1000", Err("too_long")), ("0007", Err("too_long"))],
        );
        let e = canonical_value(&i, None, "12a").unwrap_err();
        assert_eq!(e.message, "'12a' is not a whole number");
    }

    #[test]
    fn reals_round_to_decimals_after_the_width_check() {
        let mut r = item("weight", DataType::Real);
        check(
            &r,
            None,
            &[
                ("72.5", Ok("72.5")),
                ("72.50", Ok("72.50")),
                ("072.5", Ok("72.5")),
                (".5", Ok("0.5")),
                ("5.", Ok("5")),
                ("+1.25", Ok("1.25")),
                ("-0.0", Ok("0.0")),
                ("-3.14159", Ok("-3.14159")),
                ("12,5", Err("not_a_number")),
                ("1.2.3", Err("not_a_number")),
                (".", Err("not_a_number")),
                ("1e3", Err("not_a_number")),
                ("abc", Err("not_a_number")),
            ],
        );
        assert!(canonical_value(&r, None, "12,5").unwrap_err().message.contains("use a point"));
        r.decimals = Some(2);
        check(
            &r,
            None,
            &[
                ("1.005", Ok("1.01")),
                ("2.675", Ok("2.68")),
                ("1.004", Ok("1.00")),
                ("9.999", Ok("10.00")),
                ("99.995", Ok("100.00")),
                ("-1.005", Ok("-1.01")),
                ("-0.001", Ok("0.00")),
                ("1.5", Ok("1.5")),
                ("3", Ok("3")),
            ],
        );
        // WIDTH_DECIMAL 5(2): the width counts the typed text before rounding.
        r.length = Some(5);
        check(
            &r,
            None,
            &[("12.34", Ok("12.34")), ("12.345", Err("too_long")), ("-1.234", Err("too_long")), ("1.234", Ok("1.23"))],
        );
    }

    #[test]
    fn dates() {
        let d = item("visit", DataType::Date);
        check(
            &d,
            None,
            &[
                ("2015-08-03", Ok("2015-08-03")),
                ("2015-8-3", Ok("2015-08-03")),
                ("2015/08/03", Ok("2015-08-03")),
                ("03-Aug-2015", Ok("2015-08-03")),
                ("3-aug-2015", Ok("2015-08-03")),
                ("03-AUG-2015", Ok("2015-08-03")),
                ("3 August 2015", Ok("2015-08-03")),
                ("03/Sep/2015", Ok("2015-09-03")),
                ("2016-02-29", Ok("2016-02-29")),
                ("2000-02-29", Ok("2000-02-29")),
                ("1900-02-29", Err("not_a_date")),
                ("2015-02-29", Err("not_a_date")),
                ("2015-02-30", Err("not_a_date")),
                ("2015-13-01", Err("not_a_date")),
                ("31-Apr-2015", Err("not_a_date")),
                ("3/8/2015", Err("not_a_date")),
                ("08-03-15", Err("not_a_date")),
                ("2015-08", Err("not_a_date")),
                ("Aug-2015", Err("not_a_date")),
                ("0000-01-01", Err("not_a_date")),
                ("2015-08-03T10:00", Err("not_a_date")),
                ("03-Agu-2015", Err("not_a_date")),
            ],
        );
        assert_eq!(
            canonical_value(&d, None, "2015-02-30").unwrap_err().message,
            "'2015-02-30' is not a date: February 2015 has 28 days"
        );
    }

    #[test]
    fn partial_dates() {
        let p = item("onset", DataType::PartialDate);
        check(
            &p,
            None,
            &[
                ("2015", Ok("2015")),
                ("2015-08", Ok("2015-08")),
                ("2015-8", Ok("2015-08")),
                ("Aug-2015", Ok("2015-08")),
                ("aug 2015", Ok("2015-08")),
                ("2015-08-03", Ok("2015-08-03")),
                ("03-Aug-2015", Ok("2015-08-03")),
                ("2012-02-29", Ok("2012-02-29")),
                ("2015-02-29", Err("not_a_date")),
                ("2015-13", Err("not_a_partial_date")),
                ("15", Err("not_a_partial_date")),
                ("08-2015", Err("not_a_partial_date")),
                ("UNK-2015", Err("not_a_partial_date")),
            ],
        );
    }

    #[test]
    fn date_times_are_stored_in_utc() {
        let dt = item("dosed_at", DataType::DateTime);
        check(
            &dt,
            None,
            &[
                ("2015-08-03T10:30", Ok("2015-08-03T10:30:00Z")),
                ("2015-08-03T10:30:15", Ok("2015-08-03T10:30:15Z")),
                ("2015-08-03 10:30", Ok("2015-08-03T10:30:00Z")),
                ("2015-08-03T10:30:00Z", Ok("2015-08-03T10:30:00Z")),
                ("2015-08-03T10:30:00.750Z", Ok("2015-08-03T10:30:00Z")),
                ("2015-08-03T10:30:00+02:00", Ok("2015-08-03T08:30:00Z")),
                ("2015-08-03T10:30+0200", Ok("2015-08-03T08:30:00Z")),
                ("2015-08-03T22:30:00-05:00", Ok("2015-08-04T03:30:00Z")),
                ("2015-08-03 01:00 +05", Ok("2015-08-02T20:00:00Z")),
                ("2016-02-28T23:30-01:00", Ok("2016-02-29T00:30:00Z")),
                ("03-Aug-2015 10:30", Ok("2015-08-03T10:30:00Z")),
                ("3 Oct 2015 9:05", Ok("2015-10-03T09:05:00Z")),
                ("03-OCT-2015T09:05", Ok("2015-10-03T09:05:00Z")),
                ("2015-08-03", Err("not_a_date_time")),
                ("2015-08-03T25:00", Err("not_a_date_time")),
                ("2015-08-03T10:60", Err("not_a_date_time")),
                ("2015-02-30T10:00", Err("not_a_date_time")),
                ("2015-08-03T10:30+25:00", Err("not_a_date_time")),
                ("10:30", Err("not_a_date_time")),
            ],
        );
    }

    #[test]
    fn times() {
        let t = item("taken_at", DataType::Time);
        check(
            &t,
            None,
            &[
                ("14:30", Ok("14:30:00")),
                ("9:05", Ok("09:05:00")),
                ("09:05:30", Ok("09:05:30")),
                ("10:30:00.000+02:00", Ok("10:30:00")),
                ("23:59:59", Ok("23:59:59")),
                ("00:00", Ok("00:00:00")),
                ("24:00", Err("not_a_time")),
                ("12:60", Err("not_a_time")),
                ("12:5", Err("not_a_time")),
                ("1230", Err("not_a_time")),
                ("10:30 PM", Err("not_a_time")),
            ],
        );
    }

    #[test]
    fn booleans_text_and_files() {
        let b = item("consent", DataType::Boolean);
        check(
            &b,
            None,
            &[
                ("true", Ok("true")),
                ("Yes", Ok("true")),
                ("1", Ok("true")),
                ("FALSE", Ok("false")),
                ("n", Ok("false")),
                ("maybe", Err("not_a_boolean")),
            ],
        );
        let mut t = item("comment", DataType::Text);
        let long = "x".repeat(4001);
        let max = "é".repeat(4000);
        check(
            &t,
            None,
            &[
                ("  hello  ", Ok("hello")),
                ("line 1\r\nline 2", Ok("line 1\nline 2")),
                ("tab\there", Ok("tab\there")),
                (max.as_str(), Ok(max.as_str())),
                (long.as_str(), Err("too_long")),
                ("nul\0byte", Err("invalid_character")),
            ],
        );
        t.length = Some(5);
        check(&t, None, &[("abcde", Ok("abcde")), ("abcdef", Err("too_long"))]);
        let f = item("scan", DataType::File);
        check(&f, None, &[("files/2015/scan.pdf", Ok("files/2015/scan.pdf")), ("", Err("empty"))]);
        let mut note = item("intro", DataType::Text);
        note.widget = Widget::Note;
        check(&note, None, &[("anything", Err("no_value"))]);
    }

    #[test]
    fn single_choices_are_codes_of_the_list() {
        let list = code_list("CL_YN", &["yes", "no", "Y"]);
        let mut r = item("smoker", DataType::Text);
        r.widget = Widget::Radio;
        check(
            &r,
            Some(&list),
            &[
                ("yes", Ok("yes")),
                (" no ", Ok("no")),
                ("YES", Ok("yes")),
                ("Y", Ok("Y")),
                ("y", Ok("Y")),
                ("maybe", Err("not_in_code_list")),
                ("yes,no", Err("not_in_code_list")),
            ],
        );
        assert_eq!(
            canonical_value(&r, Some(&list), "maybe").unwrap_err().message,
            "'maybe' is not one of the choices (yes, no, Y)"
        );
        let ints = code_list("CL_SEV", &["1", "2", "3"]);
        let mut s = item("severity", DataType::Integer);
        s.widget = Widget::SingleSelect;
        check(&s, Some(&ints), &[("2", Ok("2")), ("4", Err("not_in_code_list"))]);
    }

    #[test]
    fn multiple_choices_are_sets_in_code_list_order() {
        let list = code_list("CL_SYM", &["fever", "cough", "rash", "sore throat"]);
        let mut m = item("symptoms", DataType::Text);
        m.widget = Widget::Checkbox;
        check(
            &m,
            Some(&list),
            &[
                ("fever", Ok("fever")),
                ("rash,fever", Ok("fever,rash")),
                ("rash, fever", Ok("fever,rash")),
                ("rash fever", Ok("fever,rash")),
                ("cough cough", Ok("cough")),
                ("fever,fever,rash", Ok("fever,rash")),
                ("sore throat", Ok("sore throat")),
                ("sore throat,fever", Ok("fever,sore throat")),
                ("FEVER,Cough", Ok("fever,cough")),
                (",fever,", Ok("fever")),
                (",", Err("empty")),
                ("fever,flu", Err("not_in_code_list")),
                ("flu pain", Err("not_in_code_list")),
            ],
        );
        assert_eq!(
            canonical_value(&m, Some(&list), "flu pain").unwrap_err().message,
            "'flu', 'pain' are not among the choices (fever, cough, rash, sore throat)"
        );
        m.widget = Widget::MultiSelect;
        assert_eq!(canonical_value(&m, Some(&list), "cough rash").unwrap(), "cough,rash");
    }

    #[test]
    fn null_flavours_must_be_allowed_by_the_form() {
        let allowed = vec!["NI".to_owned(), "UNK".to_owned()];
        assert_eq!(null_flavour("UNK", &allowed).unwrap(), "UNK");
        assert_eq!(null_flavour(" unk ", &allowed).unwrap(), "UNK");
        assert_eq!(null_flavour("unknown", &allowed).unwrap(), "UNK");
        assert_eq!(null_flavour("NASK", &allowed).unwrap_err().code, "null_flavour_not_allowed");
        assert_eq!(null_flavour("XYZ", &allowed).unwrap_err().code, "not_a_null_flavour");
        assert_eq!(null_flavour("", &allowed).unwrap_err().code, "empty");
        let none = null_flavour("NI", &[]).unwrap_err();
        assert_eq!(none.code, "null_flavour_not_allowed");
        assert!(none.message.contains("allows no null flavours"));
    }

    #[test]
    fn canonical_texts_become_typed_values() {
        use time::macros::{date, datetime, time};
        let v = |dt: DataType, text: &str| to_expr_value(&item("x", dt), text);
        assert_eq!(v(DataType::Integer, "42"), Value::Integer(42));
        assert_eq!(v(DataType::Real, "72.50"), Value::Decimal(72.5));
        assert_eq!(v(DataType::Date, "2015-08-03"), Value::Date(date!(2015 - 08 - 03)));
        assert_eq!(v(DataType::PartialDate, "2015-08"), Value::PartialDate(PartialDate::parse("2015-08").unwrap()));
        assert_eq!(v(DataType::DateTime, "2015-08-03T08:30:00Z"), Value::DateTime(datetime!(2015-08-03 08:30 UTC)));
        assert_eq!(v(DataType::Time, "09:05:00"), Value::Time(time!(09:05)));
        assert_eq!(v(DataType::Boolean, "false"), Value::Boolean(false));
        assert_eq!(v(DataType::Text, "hello"), Value::Text("hello".into()));
        assert_eq!(v(DataType::Integer, ""), Value::Missing);
        assert_eq!(v(DataType::Integer, "not a number"), Value::Text("not a number".into()));
        let mut m = item("symptoms", DataType::Text);
        m.widget = Widget::Checkbox;
        assert_eq!(to_expr_value(&m, "fever,rash"), Value::MultiSelect(vec!["fever".into(), "rash".into()]));
    }

    #[test]
    fn canonical_values_are_fixed_points() {
        // Parsing a canonical text again gives the same text, for every type.
        let cases = [
            (DataType::Integer, "-17"),
            (DataType::Real, "0.50"),
            (DataType::Date, "2016-02-29"),
            (DataType::PartialDate, "2016-02"),
            (DataType::DateTime, "2016-02-29T23:59:59Z"),
            (DataType::Time, "23:59:59"),
            (DataType::Boolean, "true"),
            (DataType::Text, "a, b"),
        ];
        for (dt, text) in cases {
            let i = item("x", dt);
            assert_eq!(canonical_value(&i, None, text).unwrap(), text, "{dt:?}");
            assert!(dt == DataType::Text || !matches!(to_expr_value(&i, text), Value::Text(_)), "{dt:?}");
        }
    }
}
