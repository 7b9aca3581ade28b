//! SAS XPORT version 5 transport files (`.xpt`), as described in SAS technical paper TS-140
//! ("The record layout of a data set in SAS transport (XPORT) format"): 80-byte records, a
//! library header, one member with its 140-byte namestr records, then the observations,
//! blank-padded to a multiple of 80 bytes. This is the format the FDA accepts for submissions.
//!
//! - Names: variable and dataset names at most 8 characters ([`short_names`] with 8); the
//!   mapping is [`XptWriter::names`].
//! - Labels: variable and dataset labels at most 40 bytes (longer ones are cut at a character
//!   boundary; the full labels belong in the data dictionary).
//! - Numbers: 8-byte IBM System/370 hexadecimal floating point, converted exactly from IEEE 754
//!   doubles; missing is SAS's `.` (0x2E then zeros). Magnitudes above about 7.2e75 are an error;
//!   below about 5.4e-79 they become 0.
//! - Dates: SAS date values (days since 1960-01-01) with format `E8601DA10.`; datetimes: seconds
//!   since 1960-01-01 with `E8601DT19.`; times: seconds since midnight with `TIME8.`.
//! - Text: fixed width ([`ColumnSpec::width`], default 200, at most 200 in v5), blank-padded,
//!   written as UTF-8 bytes (the format has no encoding field; read with UTF-8).
//! - Value labels are not part of the format: [`sas_formats_program`] gives a SAS program with
//!   `PROC FORMAT` for them.
//!
//! Streaming: only `Write` is needed, nothing is buffered per row.

use std::io::{self, Write};

use super::{Cell, ColumnKind, ColumnSpec, TableSpec, fixed, invalid, parse_cell, short_names};

/// Longest character variable in a v5 transport file.
pub const MAX_TEXT_WIDTH: u16 = 200;

const RECORD: usize = 80;

/// Streams one dataset into a SAS XPORT v5 file.
#[derive(Debug)]
pub struct XptWriter<W: Write> {
    out: W,
    spec: TableSpec,
    names: Vec<String>,
    widths: Vec<usize>,
    rows: u64,
    data_bytes: u64,
    buf: Vec<u8>,
}

impl<W: Write> XptWriter<W> {
    /// Writes the headers and namestrs. Errors: a text width above 200 or 0.
    pub fn new(mut out: W, spec: TableSpec) -> io::Result<Self> {
        let names = short_names(&spec.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>(), 8);
        let dataset = short_names(std::slice::from_ref(&spec.name), 8).remove(0);
        let mut widths = Vec::with_capacity(spec.columns.len());
        for c in &spec.columns {
            widths.push(match c.kind {
                ColumnKind::Text => {
                    let w = c.text_width();
                    if w == 0 || w > MAX_TEXT_WIDTH {
                        return Err(invalid(format!(
                            "column {}: text width {w} is outside 1..={MAX_TEXT_WIDTH} for SAS XPORT v5",
                            c.name
                        )));
                    }
                    usize::from(w)
                }
                _ => 8,
            });
        }
        if spec.columns.len() > 9999 {
            return Err(invalid(format!("{} columns: SAS XPORT v5 takes at most 9999", spec.columns.len())));
        }
        let stamp = sas_timestamp(spec.created);
        let mut h = Vec::with_capacity(RECORD * (8 + 2 * spec.columns.len()));
        header(&mut h, "LIBRARY", "000000000000000000000000000000  ");
        h.extend_from_slice(b"SAS     SAS     SASLIB  6.06    bsd4.2  ");
        h.extend_from_slice(&[b' '; 24]);
        h.extend_from_slice(stamp.as_bytes());
        h.extend_from_slice(stamp.as_bytes());
        h.extend_from_slice(&[b' '; 64]);
        header(&mut h, "MEMBER ", "000000000000000001600000000140  ");
        header(&mut h, "DSCRPTR", "000000000000000000000000000000  ");
        h.extend_from_slice(b"SAS     ");
        h.extend_from_slice(&fixed(&dataset, 8, b' '));
        h.extend_from_slice(b"SASDATA 6.06    bsd4.2  ");
        h.extend_from_slice(&[b' '; 24]);
        h.extend_from_slice(stamp.as_bytes());
        h.extend_from_slice(stamp.as_bytes());
        h.extend_from_slice(&[b' '; 16]);
        h.extend_from_slice(&fixed(&spec.label, 40, b' '));
        h.extend_from_slice(&[b' '; 8]);
        header(&mut h, "NAMESTR", &format!("000000{:04}00000000000000000000  ", spec.columns.len()));
        let mut pos = 0u32;
        for (i, (c, name)) in spec.columns.iter().zip(&names).enumerate() {
            let width = widths[i];
            let (format, format_width): (&str, u16) = match c.kind {
                ColumnKind::Text | ColumnKind::Integer | ColumnKind::Decimal => ("", 0),
                ColumnKind::Date => ("E8601DA", 10),
                ColumnKind::DateTime => ("E8601DT", 19),
                ColumnKind::Time => ("TIME", 8),
            };
            h.extend_from_slice(&(if c.kind == ColumnKind::Text { 2u16 } else { 1u16 }).to_be_bytes());
            h.extend_from_slice(&0u16.to_be_bytes());
            h.extend_from_slice(&(width as u16).to_be_bytes());
            h.extend_from_slice(&(i as u16 + 1).to_be_bytes());
            h.extend_from_slice(&fixed(name, 8, b' '));
            h.extend_from_slice(&fixed(&c.label, 40, b' '));
            h.extend_from_slice(&fixed(format, 8, b' '));
            h.extend_from_slice(&format_width.to_be_bytes());
            h.extend_from_slice(&0u16.to_be_bytes()); // decimals
            h.extend_from_slice(&0u16.to_be_bytes()); // left-justified
            h.extend_from_slice(&[0; 2]);
            h.extend_from_slice(&[b' '; 8]); // no informat
            h.extend_from_slice(&[0; 4]);
            h.extend_from_slice(&pos.to_be_bytes());
            h.extend_from_slice(&[0; 52]);
            pos += width as u32;
        }
        pad(&mut h, b' ');
        header(&mut h, "OBS    ", "000000000000000000000000000000  ");
        out.write_all(&h)?;
        Ok(XptWriter { out, spec, names, widths, rows: 0, data_bytes: 0, buf: Vec::new() })
    }

    /// The variable names used, in column order (at most 8 characters).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Writes one observation; `cells` has one entry per column.
    pub fn row(&mut self, cells: &[Option<&str>]) -> io::Result<()> {
        if cells.len() != self.spec.columns.len() {
            return Err(invalid(format!(
                "row {}: {} cells for {} columns",
                self.rows + 1,
                cells.len(),
                self.spec.columns.len()
            )));
        }
        self.buf.clear();
        for ((column, cell), width) in self.spec.columns.iter().zip(cells).zip(&self.widths) {
            match parse_cell(column, self.rows + 1, *cell)? {
                Cell::Missing if column.kind == ColumnKind::Text => self.buf.resize(self.buf.len() + width, b' '),
                Cell::Missing => self.buf.extend_from_slice(&[b'.', 0, 0, 0, 0, 0, 0, 0]),
                Cell::Text(t) => self.buf.extend_from_slice(&fixed(t, *width, b' ')),
                Cell::Number(x) => self.buf.extend_from_slice(
                    &ibm_double(x)
                        .ok_or_else(|| {
                            invalid(format!(
                                "row {}, column {}: {x} is too large for an IBM floating-point number",
                                self.rows + 1,
                                column.name
                            ))
                        })?
                        .to_be_bytes(),
                ),
            }
        }
        self.out.write_all(&self.buf)?;
        self.rows += 1;
        self.data_bytes += self.buf.len() as u64;
        Ok(())
    }

    /// Pads the last record with blanks and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        let rest = (RECORD as u64 - self.data_bytes % RECORD as u64) % RECORD as u64;
        self.out.write_all(&vec![b' '; rest as usize])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn header(h: &mut Vec<u8>, kind: &str, tail: &str) {
    h.extend_from_slice(format!("HEADER RECORD*******{kind} HEADER RECORD!!!!!!!{tail}").as_bytes());
}

fn pad(h: &mut Vec<u8>, byte: u8) {
    let rest = (RECORD - h.len() % RECORD) % RECORD;
    h.resize(h.len() + rest, byte);
}

/// `ddMMMyy:hh:mm:ss`, the transport file's timestamp.
fn sas_timestamp(created: time::OffsetDateTime) -> String {
    let now = super::utc(created);
    let month = super::month_abbr(now).to_uppercase();
    format!(
        "{:02}{month}{:02}:{:02}:{:02}:{:02}",
        now.day(),
        now.year().rem_euclid(100),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// The IBM System/370 double (sign bit, 7-bit excess-64 base-16 exponent, 56-bit fraction)
/// equal to `x`: exact, as an IEEE double's 53 significant bits fit the 56-bit fraction at any
/// hexadecimal alignment. `None` when `|x|` is beyond the IBM range (about 7.2e75) or not
/// finite; magnitudes below the IBM range (about 5.4e-79) give 0.
pub fn ibm_double(x: f64) -> Option<u64> {
    if !x.is_finite() {
        return None;
    }
    if x == 0.0 {
        return Some(0);
    }
    let bits = x.to_bits();
    let sign = bits >> 63;
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let (mantissa, e2) = if biased == 0 {
        // Subnormal: far below the IBM range.
        return Some(0);
    } else {
        // x = mantissa / 2^53 * 2^e2 with mantissa / 2^53 in [0.5, 1).
        ((bits & ((1 << 52) - 1)) | (1 << 52), biased - 1022)
    };
    let e16 = e2.div_euclid(4) + i32::from(e2.rem_euclid(4) != 0);
    let shift = 4 * e16 - e2; // 0..=3
    let fraction = (mantissa << 3) >> shift;
    let exponent = e16 + 64;
    if exponent > 127 {
        return None;
    }
    if exponent < 0 {
        return Some(0);
    }
    Some(sign << 63 | (exponent as u64) << 56 | fraction)
}

/// A SAS program defining the value labels of `spec` as formats (`PROC FORMAT; VALUE …`) and
/// attaching them to the variables of the dataset read from the transport file, using the same
/// 8-character names as [`XptWriter`]. Numeric columns get numeric formats (codes that are not
/// numbers are left out, with a comment); text columns get `$` formats. Format names are the
/// variable name followed by `F`. Empty when no column has value labels.
pub fn sas_formats_program(spec: &TableSpec) -> String {
    let names = short_names(&spec.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>(), 8);
    let dataset = short_names(std::slice::from_ref(&spec.name), 8).remove(0);
    let labelled: Vec<(&ColumnSpec, &String)> =
        spec.columns.iter().zip(&names).filter(|(c, _)| !c.value_labels.is_empty()).collect();
    if labelled.is_empty() {
        return String::new();
    }
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut p = format!(
        "/* Value labels of {} ({}), as SAS formats. Read the transport file first, e.g.\n   \
         LIBNAME xpt XPORT 'file.xpt'; DATA {dataset}; SET xpt.{dataset}; RUN; */\nPROC FORMAT;\n",
        dataset,
        spec.label.replace("*/", "* /")
    );
    let mut attach = Vec::new();
    for (column, name) in &labelled {
        let text = column.kind == ColumnKind::Text;
        let format = format!("{}{name}F", if text { "$" } else { "" });
        p.push_str(&format!("  VALUE {format}\n"));
        for (code, label) in &column.value_labels {
            if text {
                p.push_str(&format!("    {} = {}\n", quote(code), quote(label)));
            } else if let Some(n) = super::parse_decimal(code) {
                p.push_str(&format!("    {n} = {}\n", quote(label)));
            } else {
                p.push_str(&format!("    /* code {} is not a number: left out */\n", code.replace("*/", "* /")));
            }
        }
        p.push_str("  ;\n");
        attach.push(format!("{name} {format}."));
    }
    p.push_str(&format!("RUN;\n\nDATA {dataset};\n  SET {dataset};\n  FORMAT {};\nRUN;\n", attach.join(" ")));
    p
}

#[cfg(test)]
mod tests {
    use super::ibm_double;

    #[test]
    fn ibm_conversion_matches_ts140_examples() {
        assert_eq!(ibm_double(1.0), Some(0x4110_0000_0000_0000));
        assert_eq!(ibm_double(-1.0), Some(0xC110_0000_0000_0000));
        assert_eq!(ibm_double(0.5), Some(0x4080_0000_0000_0000));
        assert_eq!(ibm_double(100.0), Some(0x4264_0000_0000_0000));
        assert_eq!(ibm_double(0.1), Some(0x4019_9999_9999_999A));
        assert_eq!(ibm_double(0.0), Some(0));
        assert_eq!(ibm_double(1e80), None);
    }
}
