//! Stata `.dta` format 118 (Stata 14 and later), little-endian (`LSF`), UTF-8, as described in
//! Stata's "dta" file format documentation: tagged sections `<stata_dta><header>…</header>
//! <map>…`, data rows of fixed width, then value labels.
//!
//! - Names: at most 32 characters ([`short_names`] with 32); the mapping is
//!   [`DtaWriter::names`]. Labels: dataset and variable labels cut to 80 characters.
//! - Numbers: `double` (`%12.0g` for integers, `%10.0g` for decimals); missing is Stata's `.`
//!   (0x7FE0000000000000). Values at or above 2^1023 are an error (Stata reads them as missing).
//! - Dates: days since 1960-01-01 with `%td`; datetimes: milliseconds since 1960-01-01 with
//!   `%tc`; times: milliseconds since midnight with `%tcHH:MM:SS`.
//! - Text: `strN` with N the column width ([`ColumnSpec::width`], default 200), at most 2045
//!   bytes; `strL` is not written. Missing text is the empty string.
//! - Value labels: for numeric columns, the codes that are integers (codes that are not, and
//!   all value labels of text columns, are left out: Stata labels only integers). The label
//!   set has the variable's name.
//!
//! The header's row count and the map's offsets of the sections after the data are only known
//! at the end: [`DtaWriter::finish`] seeks back to fill them, so the output must be
//! `Write + Seek`.

use std::io::{self, Seek, SeekFrom, Write};

use super::{Cell, ColumnKind, TableSpec, fixed, invalid, parse_cell, short_names};

/// Longest `strN` column.
pub const MAX_TEXT_WIDTH: u16 = 2045;

/// Stata's system missing `.` for doubles.
pub const MISSING: u64 = 0x7FE0_0000_0000_0000;

const TYPE_DOUBLE: u16 = 65526;

/// Streams one dataset into a Stata 118 file.
#[derive(Debug)]
pub struct DtaWriter<W: Write + Seek> {
    out: W,
    start: u64,
    spec: TableSpec,
    names: Vec<String>,
    widths: Vec<usize>,
    /// Offset (from `start`) of the N value in the header, and of the map.
    n_at: u64,
    map_at: u64,
    map: [u64; 14],
    rows: u64,
    buf: Vec<u8>,
}

impl<W: Write + Seek> DtaWriter<W> {
    /// Writes everything up to `<data>`. Errors: a text width above 2045 or 0, more than
    /// 32767 columns.
    pub fn new(mut out: W, spec: TableSpec) -> io::Result<Self> {
        let start = out.stream_position()?;
        let names = short_names(&spec.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>(), 32);
        let k = u16::try_from(spec.columns.len())
            .ok()
            .filter(|k| *k <= 32767)
            .ok_or_else(|| invalid(format!("{} columns: Stata takes at most 32767", spec.columns.len())))?;
        let mut widths = Vec::with_capacity(spec.columns.len());
        for c in &spec.columns {
            widths.push(if c.kind == ColumnKind::Text {
                let w = c.text_width();
                if w == 0 || w > MAX_TEXT_WIDTH {
                    return Err(invalid(format!(
                        "column {}: text width {w} is outside 1..={MAX_TEXT_WIDTH} for Stata strN",
                        c.name
                    )));
                }
                usize::from(w)
            } else {
                8
            });
        }

        let mut map = [0u64; 14];
        let mut h: Vec<u8> = Vec::new();
        h.extend_from_slice(b"<stata_dta><header><release>118</release><byteorder>LSF</byteorder><K>");
        h.extend_from_slice(&k.to_le_bytes());
        h.extend_from_slice(b"</K><N>");
        let n_at = h.len() as u64;
        h.extend_from_slice(&0u64.to_le_bytes());
        h.extend_from_slice(b"</N><label>");
        let label = chars(&spec.label, 80);
        h.extend_from_slice(&(label.len() as u16).to_le_bytes());
        h.extend_from_slice(label.as_bytes());
        h.extend_from_slice(b"</label><timestamp>");
        let now = super::utc(spec.created);
        let month = super::month_abbr(now);
        let stamp = format!("{:02} {month} {:04} {:02}:{:02}", now.day(), now.year(), now.hour(), now.minute());
        h.push(stamp.len() as u8);
        h.extend_from_slice(stamp.as_bytes());
        h.extend_from_slice(b"</timestamp></header>");
        map[1] = h.len() as u64;
        let map_at = h.len() as u64 + 5;
        h.extend_from_slice(b"<map>");
        h.extend_from_slice(&[0; 14 * 8]);
        h.extend_from_slice(b"</map>");

        map[2] = h.len() as u64;
        h.extend_from_slice(b"<variable_types>");
        for (c, w) in spec.columns.iter().zip(&widths) {
            let t = if c.kind == ColumnKind::Text { *w as u16 } else { TYPE_DOUBLE };
            h.extend_from_slice(&t.to_le_bytes());
        }
        h.extend_from_slice(b"</variable_types>");

        map[3] = h.len() as u64;
        h.extend_from_slice(b"<varnames>");
        for name in &names {
            h.extend_from_slice(&fixed(name, 129, 0));
        }
        h.extend_from_slice(b"</varnames>");

        map[4] = h.len() as u64;
        h.extend_from_slice(b"<sortlist>");
        h.resize(h.len() + 2 * (usize::from(k) + 1), 0);
        h.extend_from_slice(b"</sortlist>");

        map[5] = h.len() as u64;
        h.extend_from_slice(b"<formats>");
        for (c, w) in spec.columns.iter().zip(&widths) {
            let format = match c.kind {
                ColumnKind::Text => format!("%{w}s"),
                ColumnKind::Integer => "%12.0g".to_owned(),
                ColumnKind::Decimal => "%10.0g".to_owned(),
                ColumnKind::Date => "%td".to_owned(),
                ColumnKind::DateTime => "%tc".to_owned(),
                ColumnKind::Time => "%tcHH:MM:SS".to_owned(),
            };
            h.extend_from_slice(&fixed(&format, 57, 0));
        }
        h.extend_from_slice(b"</formats>");

        map[6] = h.len() as u64;
        h.extend_from_slice(b"<value_label_names>");
        for (c, name) in spec.columns.iter().zip(&names) {
            let labelled = !value_labels(c).is_empty();
            h.extend_from_slice(&fixed(if labelled { name } else { "" }, 129, 0));
        }
        h.extend_from_slice(b"</value_label_names>");

        map[7] = h.len() as u64;
        h.extend_from_slice(b"<variable_labels>");
        for c in &spec.columns {
            h.extend_from_slice(&fixed(chars(&c.label, 80), 321, 0));
        }
        h.extend_from_slice(b"</variable_labels>");

        map[8] = h.len() as u64;
        h.extend_from_slice(b"<characteristics></characteristics>");
        map[9] = h.len() as u64;
        h.extend_from_slice(b"<data>");
        out.write_all(&h)?;
        Ok(DtaWriter { out, start, spec, names, widths, n_at, map_at, map, rows: 0, buf: Vec::new() })
    }

    /// The variable names used, in column order (at most 32 characters).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Writes one observation; `cells` has one entry per column.
    pub fn row(&mut self, cells: &[Option<&str>]) -> io::Result<()> {
        let row = self.rows + 1;
        if cells.len() != self.spec.columns.len() {
            return Err(invalid(format!("row {row}: {} cells for {} columns", cells.len(), self.spec.columns.len())));
        }
        self.buf.clear();
        for ((column, cell), width) in self.spec.columns.iter().zip(cells).zip(&self.widths) {
            let bits = match (parse_cell(column, row, *cell)?, column.kind) {
                (Cell::Text(t), _) => {
                    self.buf.extend_from_slice(&fixed(t, *width, 0));
                    continue;
                }
                (Cell::Missing, ColumnKind::Text) => {
                    self.buf.resize(self.buf.len() + width, 0);
                    continue;
                }
                (Cell::Missing, _) => MISSING,
                (Cell::Number(x), kind) => {
                    let x = if matches!(kind, ColumnKind::DateTime | ColumnKind::Time) { x * 1000.0 } else { x };
                    if x >= f64::from_bits(MISSING) {
                        return Err(invalid(format!(
                            "row {row}, column {}: {x} is beyond Stata's largest double",
                            column.name
                        )));
                    }
                    x.to_bits()
                }
            };
            self.buf.extend_from_slice(&bits.to_le_bytes());
        }
        self.out.write_all(&self.buf)?;
        self.rows += 1;
        Ok(())
    }

    /// Writes the value labels and the end, fills in the row count and the map, and returns the
    /// output (positioned at its end).
    pub fn finish(mut self) -> io::Result<W> {
        let here = |out: &mut W, start: u64| -> io::Result<u64> { Ok(out.stream_position()? - start) };
        self.out.write_all(b"</data>")?;
        self.map[10] = here(&mut self.out, self.start)?;
        self.out.write_all(b"<strls></strls>")?;
        self.map[11] = here(&mut self.out, self.start)?;
        let mut t = Vec::new();
        t.extend_from_slice(b"<value_labels>");
        for (c, name) in self.spec.columns.iter().zip(&self.names) {
            let labels = value_labels(c);
            if labels.is_empty() {
                continue;
            }
            let mut text = Vec::new();
            let mut offsets = Vec::new();
            for (_, label) in &labels {
                offsets.push(text.len() as i32);
                text.extend_from_slice(label.as_bytes());
                text.push(0);
            }
            let n = labels.len();
            let len = 8 + 8 * n + text.len();
            t.extend_from_slice(b"<lbl>");
            t.extend_from_slice(&(len as i32).to_le_bytes());
            t.extend_from_slice(&fixed(name, 129, 0));
            t.extend_from_slice(&[0; 3]);
            t.extend_from_slice(&(n as i32).to_le_bytes());
            t.extend_from_slice(&(text.len() as i32).to_le_bytes());
            for o in offsets {
                t.extend_from_slice(&o.to_le_bytes());
            }
            for (value, _) in &labels {
                t.extend_from_slice(&value.to_le_bytes());
            }
            t.extend_from_slice(&text);
            t.extend_from_slice(b"</lbl>");
        }
        t.extend_from_slice(b"</value_labels>");
        self.out.write_all(&t)?;
        self.map[12] = here(&mut self.out, self.start)?;
        self.out.write_all(b"</stata_dta>")?;
        let end = self.out.stream_position()?;
        self.map[13] = end - self.start;

        self.out.seek(SeekFrom::Start(self.start + self.n_at))?;
        self.out.write_all(&self.rows.to_le_bytes())?;
        self.out.seek(SeekFrom::Start(self.start + self.map_at))?;
        let mut m = Vec::with_capacity(14 * 8);
        for offset in self.map {
            m.extend_from_slice(&offset.to_le_bytes());
        }
        self.out.write_all(&m)?;
        self.out.seek(SeekFrom::Start(end))?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// The value labels Stata can hold for a column: integer codes of a numeric column, in the
/// order given, labels cut to 32000 bytes.
fn value_labels(c: &super::ColumnSpec) -> Vec<(i32, &str)> {
    if !c.kind.is_numeric() {
        return Vec::new();
    }
    c.value_labels
        .iter()
        .filter_map(|(code, label)| Some((code.trim().parse::<i32>().ok()?, super::cut(label, 32_000))))
        .collect()
}

/// `s` cut to at most `n` characters.
fn chars(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}
