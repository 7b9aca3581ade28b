//! A spreadsheet as the design importers see it: named sheets of text cells.
//!
//! Read from `.xlsx`/`.xls` bytes (calamine) or from the markdown tables pyxform's tests and
//! documentation use. Rows keep the numbers the spreadsheet shows (1-based, header included), so
//! every diagnostic points at the cell a user can find.

use std::io::Cursor;

use calamine::{Data, Reader};

/// A sheet: its name and rows of trimmed text cells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sheet {
    pub name: String,
    /// `(row number as shown in the spreadsheet, cells)`; cells are indexed by column from A.
    pub rows: Vec<(usize, Vec<String>)>,
}

impl Sheet {
    /// The first non-empty row is the header row; returns its row number and lower-cased,
    /// trimmed header texts (original spelling kept for messages).
    #[must_use]
    pub fn header(&self) -> Option<(usize, Vec<String>)> {
        self.rows.iter().find(|(_, cells)| cells.iter().any(|c| !c.is_empty())).map(|(n, c)| (*n, c.clone()))
    }

    /// The data rows after the header, skipping rows whose cells are all empty.
    pub fn data_rows(&self) -> impl Iterator<Item = &(usize, Vec<String>)> {
        let header_row = self.header().map_or(0, |(n, _)| n);
        self.rows.iter().filter(move |(n, cells)| *n > header_row && cells.iter().any(|c| !c.is_empty()))
    }
}

/// A workbook: sheets in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workbook {
    pub sheets: Vec<Sheet>,
}

/// Why a file is not a readable workbook.
#[derive(Debug, thiserror::Error)]
pub enum WorkbookError {
    #[error(
        "the workbook is password-protected: remove the password (in Excel: File › Info › Protect Workbook › Encrypt with Password) and upload it again"
    )]
    Encrypted,
    #[error(
        "the file is not a readable .xlsx or .xls workbook ({0}); if it is password-protected, remove the password and upload it again"
    )]
    Unreadable(String),
    #[error("sheet '{sheet}' cannot be read: {message}")]
    Sheet { sheet: String, message: String },
}

impl Workbook {
    /// Finds a sheet by name, ignoring case and surrounding spaces.
    #[must_use]
    pub fn sheet(&self, name: &str) -> Option<&Sheet> {
        self.sheets.iter().find(|s| s.name.trim().eq_ignore_ascii_case(name))
    }

    /// Reads `.xlsx`, `.xlsm`, `.xls` or `.ods` bytes.
    ///
    /// # Errors
    /// When the bytes are not a workbook (corrupt, encrypted, another format) or a sheet cannot
    /// be decoded.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, WorkbookError> {
        if is_encrypted_office_file(bytes) {
            return Err(WorkbookError::Encrypted);
        }
        let mut book = calamine::open_workbook_auto_from_rs(Cursor::new(bytes.to_vec()))
            .map_err(|e| WorkbookError::Unreadable(e.to_string()))?;
        let names = book.sheet_names().clone();
        let mut sheets = Vec::with_capacity(names.len());
        for name in names {
            let range = book
                .worksheet_range(&name)
                .map_err(|e| WorkbookError::Sheet { sheet: name.clone(), message: e.to_string() })?;
            let (row0, col0) = range.start().unwrap_or((0, 0));
            let mut rows = Vec::new();
            for (i, row) in range.rows().enumerate() {
                let mut cells = vec![String::new(); col0 as usize];
                cells.extend(row.iter().map(cell_text));
                while cells.last().is_some_and(String::is_empty) {
                    cells.pop();
                }
                rows.push((row0 as usize + i + 1, cells));
            }
            sheets.push(Sheet { name, rows });
        }
        Ok(Self { sheets })
    }

    /// Reads the markdown form used by pyxform's tests: a line `| sheet |` starts a sheet, the
    /// following `| | a | b |` lines are its rows (first column empty), `\|` escapes a pipe.
    #[must_use]
    pub fn from_markdown(md: &str) -> Self {
        let mut sheets: Vec<Sheet> = Vec::new();
        for line in md.lines() {
            let t = line.trim();
            if !t.starts_with('|') {
                continue;
            }
            let cells = split_markdown_row(t);
            let Some((first, rest)) = cells.split_first() else { continue };
            if !first.is_empty() {
                sheets.push(Sheet { name: first.clone(), rows: Vec::new() });
                continue;
            }
            if rest.iter().all(|c| c.chars().all(|ch| ch == '-' || ch == ':' || ch == ' ')) && !rest.is_empty() {
                // A markdown separator line (`|---|---|`) when one is used.
                if rest.iter().any(|c| c.contains('-')) {
                    continue;
                }
            }
            if let Some(sheet) = sheets.last_mut() {
                let n = sheet.rows.len() + 1;
                let mut row: Vec<String> = rest.to_vec();
                while row.last().is_some_and(String::is_empty) {
                    row.pop();
                }
                sheet.rows.push((n, row));
            }
        }
        Self { sheets }
    }
}

/// An encrypted Office file is an OLE compound file holding an `EncryptedPackage` stream.
fn is_encrypted_office_file(bytes: &[u8]) -> bool {
    const OLE: [u8; 8] = [0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
    let name: Vec<u8> = "EncryptedPackage".encode_utf16().flat_map(u16::to_le_bytes).collect();
    bytes.starts_with(&OLE) && bytes.windows(name.len()).any(|w| w == name.as_slice())
}

fn split_markdown_row(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|');
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut cells = Vec::new();
    let mut cur = String::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cur.push('|');
                chars.next();
            }
            '|' => cells.push(std::mem::take(&mut cur).trim().to_owned()),
            _ => cur.push(c),
        }
    }
    cells.push(cur.trim().to_owned());
    cells
}

fn cell_text(d: &Data) -> String {
    match d {
        Data::Empty => String::new(),
        Data::String(s) => s.trim().to_owned(),
        Data::Int(i) => i.to_string(),
        #[allow(clippy::cast_possible_truncation, clippy::float_cmp)]
        Data::Float(f) => {
            if f.fract() == 0.0 && f.abs() < 1e15 {
                format!("{}", *f as i64)
            } else {
                f.to_string()
            }
        }
        Data::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_owned(),
        Data::DateTime(dt) => excel_serial_to_iso(dt.as_f64()),
        Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::Error(e) => format!("#ERROR {e:?}"),
    }
}

/// An Excel date serial (days since 1899-12-30, fraction = time of day) as ISO 8601 text.
fn excel_serial_to_iso(serial: f64) -> String {
    #[allow(clippy::cast_possible_truncation)]
    let days = serial.floor() as i64;
    #[allow(clippy::cast_possible_truncation)]
    let seconds = ((serial - serial.floor()) * 86_400.0).round() as i64;
    let epoch = time::macros::date!(1899 - 12 - 30);
    let Some(date) = epoch.checked_add(time::Duration::days(days)) else { return serial.to_string() };
    if seconds == 0 {
        return date.to_string();
    }
    let (h, m, s) = (seconds / 3600, (seconds % 3600) / 60, seconds % 60);
    format!("{date}T{h:02}:{m:02}:{s:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_tables_become_sheets() {
        let wb = Workbook::from_markdown(
            "
            | survey |
            | | type | name | label |
            | | text | a\\|b | A \\| B |
            | choices |
            | | list_name | name | label |
            ",
        );
        assert_eq!(wb.sheets.len(), 2);
        let s = wb.sheet("SURVEY").unwrap();
        assert_eq!(s.header().unwrap().1, vec!["type", "name", "label"]);
        let rows: Vec<_> = s.data_rows().collect();
        assert_eq!(rows[0].0, 2);
        assert_eq!(rows[0].1, vec!["text", "a|b", "A | B"]);
    }

    #[test]
    fn excel_serials_become_iso_dates() {
        assert_eq!(excel_serial_to_iso(45_000.0), "2023-03-15");
        assert_eq!(excel_serial_to_iso(45_000.5), "2023-03-15T12:00:00");
    }

    #[test]
    fn garbage_is_not_a_workbook() {
        let err = Workbook::from_bytes(b"not a spreadsheet at all").unwrap_err();
        assert!(err.to_string().contains("not a readable .xlsx or .xls workbook"), "{err}");
    }
}
