//! Excel workbooks (.xlsx, ECMA-376 SpreadsheetML) out, streamed: each data row is written as
//! XML straight into the deflated zip entry of its worksheet, so memory does not grow with rows.
//!
//! The workbook is minimal and self-contained: `[Content_Types].xml`, `_rels/.rels`,
//! `xl/workbook.xml`, `xl/_rels/workbook.xml.rels`, `xl/styles.xml` and one
//! `xl/worksheets/sheetN.xml` per sheet. Text uses inline strings (`t="inlineStr"`), so there is
//! no shared-string table to hold in memory. Row 1 of every data sheet is the column names (bold,
//! frozen); integer and decimal cells are numbers (Excel keeps about 15 significant digits);
//! date, date-time and time cells are ISO 8601 **text**, as given — lossless, partial dates
//! survive, and no time zone is dropped; a missing cell is left out.
//!
//! A worksheet holds at most 1,048,576 rows, so past [`XlsxOptions::max_rows_per_sheet`] data
//! rows (default 1,048,575 under the header) the writer starts a new sheet named
//! `<sheet_name>_2`, `_3`, … with the header again. [`XlsxWriter::add_sheet`] adds small sheets
//! of text (a data dictionary, see [`dictionary_rows`]) after the data sheets.
//!
//! Characters XML 1.0 cannot carry (control characters other than tab, line feed and carriage
//! return) are written in SpreadsheetML's `_xHHHH_` escape, and a literal `_xHHHH_` in the text
//! has its underscore escaped (`_x005F_`) so that it reads back as written. A cell longer than
//! Excel's 32,767 characters is an error naming its row and column.

use std::fmt::Write as _;
use std::io::{Seek, Write};

use zip::ZipWriter;
use zip::write::SimpleFileOptions;

use crate::table_model::{ColumnKind, TableError, TableSpec, canonical_cell, check_width};

/// The most data rows a worksheet can hold under its header row.
pub const MAX_DATA_ROWS: u64 = 1_048_575;
/// The most characters Excel keeps in a cell.
pub const MAX_CELL_CHARS: usize = 32_767;

/// How the data goes into sheets.
#[derive(Debug, Clone)]
pub struct XlsxOptions {
    /// The name of the first data sheet; later ones get `_2`, `_3`, …
    pub sheet_name: String,
    /// Data rows per sheet before a new sheet starts (1..=[`MAX_DATA_ROWS`]).
    pub max_rows_per_sheet: u64,
}

impl Default for XlsxOptions {
    fn default() -> Self {
        Self { sheet_name: "data".to_owned(), max_rows_per_sheet: MAX_DATA_ROWS }
    }
}

/// Streams one table, and any extra sheets, as an .xlsx workbook.
pub struct XlsxWriter<W: Write + Seek> {
    zip: ZipWriter<W>,
    spec: TableSpec,
    options: XlsxOptions,
    /// Every sheet's name, in tab order so far (data sheets).
    sheets: Vec<String>,
    /// Extra sheets: name and finished worksheet XML, written at finish.
    extra: Vec<(String, Vec<u8>)>,
    rows: u64,
    rows_in_sheet: u64,
    line: String,
}

const MAIN_NS: &str = "http://schemas.openxmlformats.org/spreadsheetml/2006/main";
const REL_NS: &str = "http://schemas.openxmlformats.org/officeDocument/2006/relationships";
const PKG_REL_NS: &str = "http://schemas.openxmlformats.org/package/2006/relationships";
const XML_DECL: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n";

impl<W: Write + Seek> XlsxWriter<W> {
    /// Starts the workbook and its first data sheet (with the header row).
    pub fn new(out: W, spec: TableSpec, options: XlsxOptions) -> Result<Self, TableError> {
        if !(1..=MAX_DATA_ROWS).contains(&options.max_rows_per_sheet) {
            return Err(TableError::Invalid(format!(
                "max_rows_per_sheet must be 1..={MAX_DATA_ROWS}, not {}",
                options.max_rows_per_sheet
            )));
        }
        if spec.columns.is_empty() || spec.columns.len() > 16_384 {
            return Err(TableError::Invalid(format!(
                "a worksheet holds 1..=16384 columns, not {}",
                spec.columns.len()
            )));
        }
        check_sheet_name(&options.sheet_name, &[])?;
        let mut writer = Self {
            zip: ZipWriter::new(out).set_auto_large_file(),
            spec,
            options,
            sheets: Vec::new(),
            extra: Vec::new(),
            rows: 0,
            rows_in_sheet: 0,
            line: String::new(),
        };
        writer.start_data_sheet()?;
        Ok(writer)
    }

    fn start_data_sheet(&mut self) -> Result<(), TableError> {
        let name = match self.sheets.len() {
            0 => self.options.sheet_name.clone(),
            n => sheet_name_with_suffix(&self.options.sheet_name, n + 1),
        };
        check_sheet_name(&name, &self.sheets)?;
        self.sheets.push(name);
        let path = format!("xl/worksheets/sheet{}.xml", self.sheets.len());
        self.zip.start_file(path, entry_options())?;
        self.line.clear();
        sheet_start(&mut self.line, true);
        self.line.push_str("<row r=\"1\">");
        for (i, column) in self.spec.columns.iter().enumerate() {
            inline_string(&mut self.line, i, 1, &column.name, true);
        }
        self.line.push_str("</row>");
        self.zip.write_all(self.line.as_bytes())?;
        self.rows_in_sheet = 0;
        Ok(())
    }

    /// Writes one data row: one cell per column, `None` for missing. The row is checked whole
    /// before any of it is written.
    pub fn row(&mut self, cells: &[Option<&str>]) -> Result<(), TableError> {
        let n = self.rows + 1;
        check_width(&self.spec, n, cells)?;
        let mut values = Vec::with_capacity(cells.len());
        for (column, cell) in self.spec.columns.iter().zip(cells) {
            let value = canonical_cell(column, n, *cell)?;
            if value.as_ref().is_some_and(|v| v.chars().count() > MAX_CELL_CHARS) {
                return Err(TableError::Invalid(format!(
                    "row {n}, column {}: longer than Excel's {MAX_CELL_CHARS} characters",
                    column.name
                )));
            }
            values.push(value);
        }
        // A full sheet is closed only when another row comes, so that a table of exactly
        // max_rows_per_sheet rows makes no empty sheet.
        if self.rows_in_sheet == self.options.max_rows_per_sheet {
            self.zip.write_all(b"</sheetData></worksheet>")?;
            self.start_data_sheet()?;
        }
        let r = self.rows_in_sheet + 2;
        self.line.clear();
        let _ = write!(self.line, "<row r=\"{r}\">");
        for (i, (column, value)) in self.spec.columns.iter().zip(&values).enumerate() {
            let Some(value) = value else { continue };
            match column.kind {
                ColumnKind::Integer | ColumnKind::Decimal => {
                    let _ = write!(self.line, "<c r=\"{}{r}\"><v>{value}</v></c>", column_letters(i));
                }
                _ => inline_string(&mut self.line, i, r, value, false),
            }
        }
        self.line.push_str("</row>");
        self.zip.write_all(self.line.as_bytes())?;
        self.rows_in_sheet += 1;
        self.rows = n;
        Ok(())
    }

    /// Adds a sheet of text after the data sheets (e.g. a dictionary); the first row is shown
    /// bold as a header. Its name must be a valid, unused sheet name.
    pub fn add_sheet(&mut self, name: &str, rows: &[Vec<String>]) -> Result<(), TableError> {
        let mut taken = self.sheets.clone();
        taken.extend(self.extra.iter().map(|(n, _)| n.clone()));
        // Later data sheets take `<sheet_name>_N`; keep those names free.
        if name.to_lowercase().starts_with(&format!("{}_", self.options.sheet_name.to_lowercase())) {
            return Err(TableError::Invalid(format!("sheet name {name:?} is kept for data sheets")));
        }
        check_sheet_name(name, &taken)?;
        let mut xml = String::new();
        sheet_start(&mut xml, false);
        for (i, row) in rows.iter().enumerate() {
            if row.len() > 16_384 {
                return Err(TableError::Invalid(format!("sheet {name}: row {} has more than 16384 cells", i + 1)));
            }
            let r = i as u64 + 1;
            let _ = write!(xml, "<row r=\"{r}\">");
            for (c, text) in row.iter().enumerate() {
                if text.chars().count() > MAX_CELL_CHARS {
                    return Err(TableError::Invalid(format!(
                        "sheet {name}: cell {}{r} is too long",
                        column_letters(c)
                    )));
                }
                if !text.is_empty() {
                    inline_string(&mut xml, c, r, text, r == 1);
                }
            }
            xml.push_str("</row>");
        }
        xml.push_str("</sheetData></worksheet>");
        self.extra.push((name.to_owned(), xml.into_bytes()));
        Ok(())
    }

    /// Closes the last data sheet, writes the extra sheets and the workbook parts, and returns
    /// the output.
    pub fn finish(mut self) -> Result<W, TableError> {
        self.zip.write_all(b"</sheetData></worksheet>")?;
        let extra = std::mem::take(&mut self.extra);
        for (name, xml) in extra {
            self.sheets.push(name);
            self.zip.start_file(format!("xl/worksheets/sheet{}.xml", self.sheets.len()), entry_options())?;
            self.zip.write_all(&xml)?;
        }
        let n = self.sheets.len();

        let mut types = String::from(XML_DECL);
        types.push_str(
            "<Types xmlns=\"http://schemas.openxmlformats.org/package/2006/content-types\">\
             <Default Extension=\"rels\" ContentType=\"application/vnd.openxmlformats-package.relationships+xml\"/>\
             <Default Extension=\"xml\" ContentType=\"application/xml\"/>\
             <Override PartName=\"/xl/workbook.xml\" \
             ContentType=\"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml\"/>\
             <Override PartName=\"/xl/styles.xml\" \
             ContentType=\"application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml\"/>",
        );
        for i in 1..=n {
            let _ = write!(
                types,
                "<Override PartName=\"/xl/worksheets/sheet{i}.xml\" \
                 ContentType=\"application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml\"/>"
            );
        }
        types.push_str("</Types>");
        self.part("[Content_Types].xml", &types)?;

        let rels = format!(
            "{XML_DECL}<Relationships xmlns=\"{PKG_REL_NS}\"><Relationship Id=\"rId1\" \
             Type=\"{REL_NS}/officeDocument\" Target=\"xl/workbook.xml\"/></Relationships>"
        );
        self.part("_rels/.rels", &rels)?;

        let mut workbook = format!("{XML_DECL}<workbook xmlns=\"{MAIN_NS}\" xmlns:r=\"{REL_NS}\"><sheets>");
        for (i, name) in self.sheets.iter().enumerate() {
            let _ = write!(workbook, "<sheet name=\"{}\" sheetId=\"{}\" r:id=\"rId{}\"/>", escape(name), i + 1, i + 1);
        }
        workbook.push_str("</sheets></workbook>");
        self.part("xl/workbook.xml", &workbook)?;

        let mut wb_rels = format!("{XML_DECL}<Relationships xmlns=\"{PKG_REL_NS}\">");
        for i in 1..=n {
            let _ = write!(
                wb_rels,
                "<Relationship Id=\"rId{i}\" Type=\"{REL_NS}/worksheet\" Target=\"worksheets/sheet{i}.xml\"/>"
            );
        }
        let _ = write!(wb_rels, "<Relationship Id=\"rId{}\" Type=\"{REL_NS}/styles\" Target=\"styles.xml\"/>", n + 1);
        wb_rels.push_str("</Relationships>");
        self.part("xl/_rels/workbook.xml.rels", &wb_rels)?;

        // Style 0 is the default; style 1 is bold, for header rows.
        let styles = format!(
            "{XML_DECL}<styleSheet xmlns=\"{MAIN_NS}\">\
             <fonts count=\"2\"><font><sz val=\"11\"/><name val=\"Calibri\"/></font>\
             <font><b/><sz val=\"11\"/><name val=\"Calibri\"/></font></fonts>\
             <fills count=\"2\"><fill><patternFill patternType=\"none\"/></fill>\
             <fill><patternFill patternType=\"gray125\"/></fill></fills>\
             <borders count=\"1\"><border><left/><right/><top/><bottom/><diagonal/></border></borders>\
             <cellStyleXfs count=\"1\"><xf numFmtId=\"0\" fontId=\"0\" fillId=\"0\" borderId=\"0\"/></cellStyleXfs>\
             <cellXfs count=\"2\"><xf numFmtId=\"0\" fontId=\"0\" fillId=\"0\" borderId=\"0\" xfId=\"0\"/>\
             <xf numFmtId=\"0\" fontId=\"1\" fillId=\"0\" borderId=\"0\" xfId=\"0\" applyFont=\"1\"/></cellXfs>\
             <cellStyles count=\"1\"><cellStyle name=\"Normal\" xfId=\"0\" builtinId=\"0\"/></cellStyles>\
             </styleSheet>"
        );
        self.part("xl/styles.xml", &styles)?;
        Ok(self.zip.finish()?)
    }

    fn part(&mut self, path: &str, xml: &str) -> Result<(), TableError> {
        self.zip.start_file(path, entry_options())?;
        self.zip.write_all(xml.as_bytes())?;
        Ok(())
    }
}

/// A data dictionary for [`XlsxWriter::add_sheet`]: a header row, then one row per column
/// (name, label, type) followed by one row per coded value (column name, code, value label).
pub fn dictionary_rows(spec: &TableSpec) -> Vec<Vec<String>> {
    let mut rows = vec![["column", "label", "type", "code", "value label"].map(String::from).to_vec()];
    for c in &spec.columns {
        let kind = match c.kind {
            ColumnKind::Text => "text",
            ColumnKind::Integer => "integer",
            ColumnKind::Decimal => "decimal",
            ColumnKind::Date => "date",
            ColumnKind::DateTime => "datetime",
            ColumnKind::Time => "time",
        };
        rows.push(vec![c.name.clone(), c.label.clone(), kind.to_owned(), String::new(), String::new()]);
        for (code, label) in &c.value_labels {
            rows.push(vec![c.name.clone(), String::new(), String::new(), code.clone(), label.clone()]);
        }
    }
    rows
}

fn entry_options() -> SimpleFileOptions {
    SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated)
}

/// The worksheet's opening up to `<sheetData>`; `freeze_header` keeps row 1 in view.
fn sheet_start(out: &mut String, freeze_header: bool) {
    out.push_str(XML_DECL);
    let _ = write!(out, "<worksheet xmlns=\"{MAIN_NS}\">");
    if freeze_header {
        out.push_str(
            "<sheetViews><sheetView workbookViewId=\"0\"><pane ySplit=\"1\" topLeftCell=\"A2\" \
             activePane=\"bottomLeft\" state=\"frozen\"/></sheetView></sheetViews>",
        );
    }
    out.push_str("<sheetData>");
}

fn inline_string(out: &mut String, column: usize, row: u64, text: &str, bold: bool) {
    let style = if bold { " s=\"1\"" } else { "" };
    let space = if text.starts_with(char::is_whitespace) || text.ends_with(char::is_whitespace) {
        " xml:space=\"preserve\""
    } else {
        ""
    };
    let _ = write!(out, "<c r=\"{}{row}\"{style} t=\"inlineStr\"><is><t{space}>", column_letters(column));
    escape_into(out, text);
    out.push_str("</t></is></c>");
}

/// The column letters of a 0-based column index: 0 → A, 25 → Z, 26 → AA.
pub fn column_letters(index: usize) -> String {
    let mut n = index + 1;
    let mut letters = Vec::new();
    while n > 0 {
        let rem = (n - 1) % 26;
        letters.push(b'A' + rem as u8);
        n = (n - 1) / 26;
    }
    letters.reverse();
    String::from_utf8(letters).unwrap_or_default()
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    escape_into(&mut out, text);
    out
}

/// XML text escaping plus SpreadsheetML's `_xHHHH_` for characters XML cannot carry.
fn escape_into(out: &mut String, text: &str) {
    let bytes = text.as_bytes();
    for (i, ch) in text.char_indices() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\t' | '\n' | '\r' => out.push(ch),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {
                let _ = write!(out, "_x{:04X}_", c as u32);
            }
            '_' if is_escape_at(bytes, i) => out.push_str("_x005F_"),
            c => out.push(c),
        }
    }
}

/// Whether `_xHHHH_` starts at byte `i`.
fn is_escape_at(bytes: &[u8], i: usize) -> bool {
    bytes.len() >= i + 7
        && bytes[i + 1] == b'x'
        && bytes[i + 2..i + 6].iter().all(u8::is_ascii_hexdigit)
        && bytes[i + 6] == b'_'
}

fn sheet_name_with_suffix(base: &str, n: usize) -> String {
    let suffix = format!("_{n}");
    let keep = 31 - suffix.chars().count();
    let base: String = base.chars().take(keep).collect();
    format!("{base}{suffix}")
}

/// Excel's rules for sheet names: 1–31 characters, none of `[]:*?/\`, not starting or ending
/// with `'`, not "History", unique regardless of case.
fn check_sheet_name(name: &str, taken: &[String]) -> Result<(), TableError> {
    let bad = name.is_empty()
        || name.chars().count() > 31
        || name.contains(['[', ']', ':', '*', '?', '/', '\\'])
        || name.starts_with('\'')
        || name.ends_with('\'')
        || name.eq_ignore_ascii_case("history")
        || name.chars().any(char::is_control);
    if bad {
        return Err(TableError::Invalid(format!("{name:?} is not a valid Excel sheet name")));
    }
    if taken.iter().any(|t| t.to_lowercase() == name.to_lowercase()) {
        return Err(TableError::Invalid(format!("sheet name {name:?} is used twice")));
    }
    Ok(())
}
