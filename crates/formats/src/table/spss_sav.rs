//! SPSS system files (`.sav`), uncompressed, little-endian, UTF-8, as described in GNU PSPP's
//! "System File Format" appendix.
//!
//! - Header record (`$FL2`) with the case count, filled in at [`SavWriter::finish`] (so the
//!   output must be `Write + Seek`).
//! - Variable records (type 2) with 8-character names, and the long names (up to 64
//!   characters, [`short_names`] with 64, then with 8 for the dictionary record) in record 7
//!   subtype 13; the mappings are [`SavWriter::long_names`] and [`SavWriter::short_names`].
//! - Variable labels (cut at 255 bytes on a character boundary), file label (64 bytes).
//! - Value labels (records 3 and 4) for numeric columns whose codes are numbers (codes that are
//!   not are left out); labels are cut at 120 bytes. Value labels of text columns are not
//!   written (they would need record 7 subtype 21); keep them in the data dictionary.
//! - Numbers: IEEE doubles, missing is SYSMIS (-f64::MAX); formats `F11.0` for integers and
//!   `F16.6` for decimals.
//! - Dates: seconds since 1582-10-14 with format `DATE11`; datetimes `DATETIME20`; times:
//!   seconds since midnight with `TIME8`.
//! - Text: fixed width ([`ColumnSpec::width`], default 200), at most 255 bytes: very long
//!   strings (record 7 subtype 14) are not supported. Encoding declared in record 7 subtype 20.
//! - Record 7 subtypes 3 and 4 (machine integer and floating-point info) and the 999 end record.

use std::io::{self, Seek, SeekFrom, Write};

use super::{Cell, ColumnKind, TableSpec, cut, fixed, invalid, parse_cell, parse_decimal, short_names};

/// Longest text column supported (no very long strings).
pub const MAX_TEXT_WIDTH: u16 = 255;

/// SPSS's system-missing value.
pub const SYSMIS: f64 = -f64::MAX;

/// Days from 1582-10-14 (SPSS's epoch) to 1960-01-01.
const DAYS_1582_TO_1960: f64 = 137_775.0;

/// Streams one table into an SPSS system file.
#[derive(Debug)]
pub struct SavWriter<W: Write + Seek> {
    out: W,
    start: u64,
    spec: TableSpec,
    long_names: Vec<String>,
    short_names: Vec<String>,
    /// Bytes per column in a case: 8 for numbers, the width rounded up to 8 for text.
    slots: Vec<usize>,
    rows: u64,
    buf: Vec<u8>,
}

impl<W: Write + Seek> SavWriter<W> {
    /// Writes the dictionary. Errors: a text width above 255 or 0.
    pub fn new(mut out: W, spec: TableSpec) -> io::Result<Self> {
        let start = out.stream_position()?;
        let long_names = short_names(&spec.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>(), 64);
        let short = short_names(&long_names, 8);
        let mut slots = Vec::with_capacity(spec.columns.len());
        for c in &spec.columns {
            slots.push(if c.kind == ColumnKind::Text {
                let w = c.text_width();
                if w == 0 || w > MAX_TEXT_WIDTH {
                    return Err(invalid(format!(
                        "column {}: text width {w} is outside 1..={MAX_TEXT_WIDTH} for SPSS (no very long strings)",
                        c.name
                    )));
                }
                usize::from(w).div_ceil(8) * 8
            } else {
                8
            });
        }
        let case_size: usize = slots.iter().sum::<usize>() / 8;

        let mut h = Vec::new();
        let now = super::utc(spec.created);
        let month = super::month_abbr(now);
        h.extend_from_slice(b"$FL2");
        h.extend_from_slice(&fixed("@(#) SPSS DATA FILE Casebook", 60, b' '));
        i32s(&mut h, &[2, case_size as i32, 0, 0, -1]);
        h.extend_from_slice(&100.0f64.to_le_bytes());
        h.extend_from_slice(format!("{:02} {month} {:02}", now.day(), now.year().rem_euclid(100)).as_bytes());
        h.extend_from_slice(format!("{:02}:{:02}:{:02}", now.hour(), now.minute(), now.second()).as_bytes());
        h.extend_from_slice(&fixed(&spec.label, 64, b' '));
        h.extend_from_slice(&[0; 3]);

        // Variable records; `index` is each variable's 1-based position in 8-byte units.
        let mut indexes = Vec::with_capacity(spec.columns.len());
        let mut index = 1i32;
        for ((c, name), slot) in spec.columns.iter().zip(&short).zip(&slots) {
            indexes.push(index);
            let (kind, format) = match c.kind {
                ColumnKind::Text => (i32::from(c.text_width()), format_code(1, c.text_width(), 0)),
                ColumnKind::Integer => (0, format_code(5, 11, 0)),
                ColumnKind::Decimal => (0, format_code(5, 16, 6)),
                ColumnKind::Date => (0, format_code(20, 11, 0)),
                ColumnKind::DateTime => (0, format_code(22, 20, 0)),
                ColumnKind::Time => (0, format_code(21, 8, 0)),
            };
            let has_label = !c.label.is_empty();
            i32s(&mut h, &[2, kind, i32::from(has_label), 0, format, format]);
            h.extend_from_slice(&fixed(name, 8, b' '));
            if has_label {
                let label = cut(&c.label, 255);
                i32s(&mut h, &[label.len() as i32]);
                h.extend_from_slice(&fixed(label, label.len().div_ceil(4) * 4, b' '));
            }
            for _ in 1..slot / 8 {
                i32s(&mut h, &[2, -1, 0, 0, 0, 0]);
                h.extend_from_slice(&[b' '; 8]);
            }
            index += (slot / 8) as i32;
        }

        // Value labels of numeric columns.
        for (c, index) in spec.columns.iter().zip(&indexes) {
            if !c.kind.is_numeric() {
                continue;
            }
            let labels: Vec<(f64, &str)> = c
                .value_labels
                .iter()
                .filter_map(|(code, label)| Some((parse_decimal(code)?, cut(label, 120))))
                .collect();
            if labels.is_empty() {
                continue;
            }
            i32s(&mut h, &[3, labels.len() as i32]);
            for (value, label) in labels {
                h.extend_from_slice(&value.to_le_bytes());
                h.push(label.len() as u8);
                h.extend_from_slice(label.as_bytes());
                let used = 1 + label.len();
                h.resize(h.len() + (used.div_ceil(8) * 8 - used), b' ');
            }
            i32s(&mut h, &[4, 1, *index]);
        }

        // Machine integer info: version 1.0.0, no machine code, IEEE, endianness little, UTF-8.
        i32s(&mut h, &[7, 3, 4, 8, 1, 0, 0, -1, 1, 1, 2, 65001]);
        // Machine floating-point info: SYSMIS, HIGHEST, LOWEST.
        i32s(&mut h, &[7, 4, 8, 3]);
        h.extend_from_slice(&SYSMIS.to_le_bytes());
        h.extend_from_slice(&f64::MAX.to_le_bytes());
        h.extend_from_slice(&f64::from_bits(0xFFEF_FFFF_FFFF_FFFE).to_le_bytes());
        // Long variable names.
        let pairs: Vec<String> = short.iter().zip(&long_names).map(|(s, l)| format!("{s}={l}")).collect();
        let text = pairs.join("\t");
        i32s(&mut h, &[7, 13, 1, text.len() as i32]);
        h.extend_from_slice(text.as_bytes());
        // Character encoding.
        i32s(&mut h, &[7, 20, 1, 5]);
        h.extend_from_slice(b"UTF-8");
        // End of dictionary.
        i32s(&mut h, &[999, 0]);
        out.write_all(&h)?;
        Ok(SavWriter { out, start, spec, long_names, short_names: short, slots, rows: 0, buf: Vec::new() })
    }

    /// The variable names (up to 64 characters), in column order.
    pub fn long_names(&self) -> &[String] {
        &self.long_names
    }

    /// The 8-character names of the dictionary records, in column order.
    pub fn short_names(&self) -> &[String] {
        &self.short_names
    }

    /// Writes one case; `cells` has one entry per column.
    pub fn row(&mut self, cells: &[Option<&str>]) -> io::Result<()> {
        let row = self.rows + 1;
        if cells.len() != self.spec.columns.len() {
            return Err(invalid(format!("row {row}: {} cells for {} columns", cells.len(), self.spec.columns.len())));
        }
        self.buf.clear();
        for ((column, cell), slot) in self.spec.columns.iter().zip(cells).zip(&self.slots) {
            let value = match (parse_cell(column, row, *cell)?, column.kind) {
                (Cell::Text(t), _) => {
                    self.buf.extend_from_slice(&fixed(t, *slot, b' '));
                    continue;
                }
                (Cell::Missing, ColumnKind::Text) => {
                    self.buf.resize(self.buf.len() + slot, b' ');
                    continue;
                }
                (Cell::Missing, _) => SYSMIS,
                (Cell::Number(days), ColumnKind::Date) => (days + DAYS_1582_TO_1960) * 86_400.0,
                (Cell::Number(seconds), ColumnKind::DateTime) => seconds + DAYS_1582_TO_1960 * 86_400.0,
                (Cell::Number(x), _) => x,
            };
            self.buf.extend_from_slice(&value.to_le_bytes());
        }
        self.out.write_all(&self.buf)?;
        self.rows += 1;
        Ok(())
    }

    /// Writes the case count into the header and returns the output (positioned at its end).
    pub fn finish(mut self) -> io::Result<W> {
        let end = self.out.stream_position()?;
        self.out.seek(SeekFrom::Start(self.start + 80))?;
        let count = i32::try_from(self.rows).unwrap_or(-1);
        self.out.write_all(&count.to_le_bytes())?;
        self.out.seek(SeekFrom::Start(end))?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn i32s(h: &mut Vec<u8>, values: &[i32]) {
    for v in values {
        h.extend_from_slice(&v.to_le_bytes());
    }
}

/// A print/write format: type, width, decimals packed in an int32.
fn format_code(kind: i32, width: u16, decimals: i32) -> i32 {
    kind << 16 | i32::from(width) << 8 | decimals
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    #[test]
    fn epoch_offset() {
        let days = date!(1960 - 01 - 01).to_julian_day() - date!(1582 - 10 - 14).to_julian_day();
        assert_eq!(f64::from(days), super::DAYS_1582_TO_1960);
    }
}
