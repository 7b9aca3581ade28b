//! The table model shared by the tabular writers ([`crate::table_json`], [`crate::table_xlsx`]):
//! a dataset of named, typed columns whose cells arrive as canonical text, one row at a time.
//!
//! Cells are `Option<&str>`: `None` is a missing value. Text, date, date-time and time cells are
//! written as given; integer and decimal cells must parse ([`integer`], [`decimal`]) or the
//! writer fails with [`TableError::Cell`], naming the column and the 1-based data row.

use std::borrow::Cow;

/// A dataset: its name (e.g. an item group OID), label and columns in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub name: String,
    pub label: String,
    pub columns: Vec<ColumnSpec>,
}

/// One column: name, label, kind and the labels of its coded values (code -> label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSpec {
    pub name: String,
    pub label: String,
    pub kind: ColumnKind,
    pub value_labels: Vec<(String, String)>,
}

/// What a column holds; the cells are canonical text of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Text,
    Integer,
    Decimal,
    /// ISO 8601 `YYYY-MM-DD`.
    Date,
    /// RFC 3339.
    DateTime,
    /// `HH:MM[:SS]`.
    Time,
}

/// Why a table could not be written.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("row {row}, column {column}: {value:?} is not {expected}")]
    Cell { row: u64, column: String, value: String, expected: &'static str },
    #[error("row {row} has {got} cells but the table has {expected} columns")]
    Width { row: u64, expected: usize, got: usize },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("zip: {0}")]
    Zip(#[from] zip::result::ZipError),
}

/// The canonical form of an integer (`[+-]?[0-9]+`): no `+`, no leading zeros, no `-0`; `None`
/// when `text` is not an integer.
pub fn integer(text: &str) -> Option<String> {
    let (negative, digits) = split_sign(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = digits.trim_start_matches('0');
    Some(match (negative, digits.is_empty()) {
        (_, true) => "0".to_owned(),
        (true, false) => format!("-{digits}"),
        (false, false) => digits.to_owned(),
    })
}

/// The canonical form of a decimal (`[+-]?([0-9]+(.[0-9]*)?|.[0-9]+)`, the lexical space of
/// xs:decimal, no exponent): no `+`, a digit before and after any `.`, no redundant leading zeros;
/// trailing fraction zeros are kept (they carry the precision). `None` when not a decimal.
pub fn decimal(text: &str) -> Option<String> {
    let (negative, body) = split_sign(text);
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int) || !frac.is_none_or(all_digits) || (int.is_empty() && frac.is_none_or(str::is_empty)) {
        return None;
    }
    let int = match int.trim_start_matches('0') {
        "" => "0",
        i => i,
    };
    let mut out = String::with_capacity(text.len() + 2);
    let zero = int == "0" && frac.is_none_or(|f| f.bytes().all(|b| b == b'0'));
    if negative && !zero {
        out.push('-');
    }
    out.push_str(int);
    if let Some(f) = frac.filter(|f| !f.is_empty()) {
        out.push('.');
        out.push_str(f);
    }
    Some(out)
}

fn split_sign(text: &str) -> (bool, &str) {
    match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    }
}

/// The value to write for one cell (`None` = missing): numeric cells canonicalised, others as
/// given. `row` is the 1-based data row number for errors.
pub(crate) fn canonical_cell<'a>(
    column: &ColumnSpec,
    row: u64,
    cell: Option<&'a str>,
) -> Result<Option<Cow<'a, str>>, TableError> {
    let Some(text) = cell else { return Ok(None) };
    let (parsed, expected) = match column.kind {
        ColumnKind::Integer => (integer(text), "an integer"),
        ColumnKind::Decimal => (decimal(text), "a decimal number"),
        _ => return Ok(Some(Cow::Borrowed(text))),
    };
    match parsed {
        Some(v) => Ok(Some(Cow::Owned(v))),
        None => Err(TableError::Cell { row, column: column.name.clone(), value: text.to_owned(), expected }),
    }
}

/// Fails unless `cells` has one cell per column.
pub(crate) fn check_width(spec: &TableSpec, row: u64, cells: &[Option<&str>]) -> Result<(), TableError> {
    if cells.len() == spec.columns.len() {
        Ok(())
    } else {
        Err(TableError::Width { row, expected: spec.columns.len(), got: cells.len() })
    }
}
