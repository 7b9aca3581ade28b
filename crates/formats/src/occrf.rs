//! OpenClinica 3 CRF design templates → a [`FormVersion`].
//!
//! A template is one workbook per CRF version with the sheets `CRF` (name, version and notes,
//! exactly one row), `Sections` (pages), `Groups` (item groups; missing in very old templates)
//! and `Items` (one row per item, 27 columns). OpenClinica reads only BIFF8 `.xls`; we read
//! `.xlsx` too, since [`Workbook::from_bytes`] does. Facts from the reference
//! `openclinica-data-model.md` §1.5–1.11, §2 and §3; the code is ours.
//!
//! Reading follows the template's own rules:
//! - columns are found by header, ignoring case and the trailing `*` that v3.9 and LibreClinica
//!   templates put on required columns, so templates with or without WIDTH_DECIMAL both read;
//! - a sheet ends after 5 consecutive empty rows (later rows are ignored, with a warning);
//! - items without a GROUP_LABEL belong to the group `Ungrouped` (`IG_<CRF5>_UNGROUPED`); GRID
//!   groups repeat, NON-REPEATING groups only group;
//! - response sets are named by RESPONSE_LABEL within the CRF: a label used again with blank
//!   options reuses the earlier set, with different options is an error;
//! - calculations may only use items defined earlier in the sheet;
//! - every problem is reported with its sheet, row and column header, and reading goes on so a
//!   data manager sees them all at once.
//!
//! Item and group OIDs are kept from an existing form with the same names (so versions share
//! items), otherwise generated as OpenClinica does ([`oid::generate_form_part`]) with a
//! deterministic collision suffix. Code lists are named `CL_` + `<CRF name>_<RESPONSE_LABEL>`.

use std::collections::{HashMap, HashSet};

use casebook_domain::design::{
    Check, CheckRule, CodeList, CodeListItem, Comparator, ConditionalDisplay, DataType, Expression, FormDef,
    FormSource, FormVersion, ItemDef, ItemGroup, Repeat, Required, Section, Text, Widget,
};
use casebook_domain::expr::{self, CompareOp, OcValidation, Reference};
use casebook_domain::oid::{self, FormPartKind, Oid, OidKind};

use crate::diagnostic::{Diagnostics, Location, at, sheet};
use crate::workbook::{Sheet, Workbook};
use crate::xlsform::{Context, ExpressionCell, ImportedForm};

/// A sheet ends after this many consecutive empty rows.
const EMPTY_ROWS_END_SHEET: usize = 5;

/// The group of items that name none.
const UNGROUPED: &str = "Ungrouped";

/// The longest OID of a measurement unit (`MU_` + unit).
const MU_OID_MAX: usize = 35;

/// The longest OID.
const OID_MAX: usize = 40;

/// Whether a workbook looks like an OpenClinica 3 CRF template (it has `CRF` and `Items`
/// sheets), as opposed to an XLSForm.
#[must_use]
pub fn is_crf_template(wb: &Workbook) -> bool {
    wb.sheet("CRF").is_some() && wb.sheet("Items").is_some()
}

/// The CRF_NAME of a template, so the caller can find the existing form a new version belongs
/// to before importing.
#[must_use]
pub fn crf_name(wb: &Workbook) -> Option<String> {
    let s = wb.sheet("CRF")?;
    let mut ignored = Diagnostics::default();
    let t = Table::read(s, &mut ignored);
    let row = t.rows.first()?;
    Some(t.get(row, "CRF_NAME").to_owned()).filter(|n| !n.is_empty())
}

/// Reads an OpenClinica 3 CRF design template into a new form version.
///
/// Returns the form (when the sheets and their columns are there) and every problem found.
/// Callers must refuse the upload when the diagnostics contain an error.
#[must_use]
pub fn import(wb: &Workbook, ctx: Context<'_>) -> (Option<ImportedForm>, Diagnostics) {
    let mut d = Diagnostics::default();
    let (Some(crf_sheet), Some(sections_sheet), Some(items_sheet)) =
        (wb.sheet("CRF"), wb.sheet("Sections"), wb.sheet("Items"))
    else {
        let missing: Vec<&str> =
            ["CRF", "Sections", "Items"].into_iter().filter(|name| wb.sheet(name).is_none()).collect();
        let present: Vec<&str> = wb.sheets.iter().map(|s| s.name.as_str()).collect();
        d.error(
            Location::File,
            format!(
                "An OpenClinica CRF template needs the sheets CRF, Sections and Items; this workbook has no {} sheet (it has: {}).",
                missing.iter().map(|m| format!("'{m}'")).collect::<Vec<_>>().join(", "),
                if present.is_empty() { "no sheets".to_owned() } else { present.join(", ") }
            ),
        );
        return (None, d);
    };
    let crf = Table::read(crf_sheet, &mut d);
    let sections = Table::read(sections_sheet, &mut d);
    let groups = wb.sheet("Groups").map(|s| Table::read(s, &mut d));
    let items = Table::read(items_sheet, &mut d);
    crf.require(&["CRF_NAME", "VERSION", "VERSION_DESCRIPTION", "REVISION_NOTES"], &mut d);
    sections.require(&["SECTION_LABEL", "SECTION_TITLE"], &mut d);
    if let Some(g) = &groups {
        g.require(&["GROUP_LABEL"], &mut d);
    }
    items.require(&["ITEM_NAME", "DESCRIPTION_LABEL", "SECTION_LABEL", "RESPONSE_TYPE", "DATA_TYPE"], &mut d);
    if d.has_errors() {
        return (None, d);
    }

    let header = read_crf(&crf, &mut d);
    let taken_outside = ctx.taken.cloned().unwrap_or_default();
    let form_oid = ctx.existing.map_or_else(
        || oid::generate(OidKind::Form, &header.name, |c| taken_outside.contains(c), sequence()),
        |f| f.oid.clone(),
    );
    let mut taken = taken_outside;
    let mut random = sequence();
    let version_oid = ctx.existing.and_then(|f| f.version(&header.version)).map_or_else(
        || {
            oid::generate_form_part(
                FormPartKind::Version,
                form_oid.as_str(),
                &header.name,
                &header.version,
                |c| taken.contains(c),
                &mut random,
            )
        },
        |v| v.oid.clone(),
    );
    taken.insert(version_oid.to_string());

    let section_list = read_sections(&sections, &mut d);
    let group_defs = groups.as_ref().map(|g| read_groups(g, &mut d)).unwrap_or_default();

    let mut reader = ItemReader {
        t: &items,
        d,
        ctx,
        crf_name: header.name.clone(),
        form_oid: form_oid.clone(),
        taken,
        random: Box::new(sequence()),
        sections: section_list.iter().map(|s| s.label.clone()).collect(),
        group_defs,
        groups: Vec::new(),
        first_rows: HashMap::new(),
        names: HashMap::new(),
        infos: Vec::new(),
        items: Vec::new(),
        response_sets: HashMap::new(),
        code_lists: Vec::new(),
        units: HashMap::new(),
        used_groups: HashMap::new(),
        previous_group: None,
        scds: Vec::new(),
        expression_cells: Vec::new(),
        checked_cells: Vec::new(),
    };
    for r in &items.rows {
        let name = items.get(r, "ITEM_NAME");
        if !name.is_empty() {
            reader.first_rows.entry(name.to_owned()).or_insert(r.n);
        }
    }
    for r in &items.rows {
        reader.item(r);
    }
    reader.check_conditional_displays();
    let ItemReader {
        mut d,
        items: item_defs,
        groups: used_groups,
        code_lists,
        expression_cells,
        checked_cells,
        group_defs,
        ..
    } = reader;

    if item_defs.is_empty() && !d.has_errors() {
        d.error(sheet(&items.name), "The CRF has no items.");
    }
    for g in &group_defs {
        if !used_groups.iter().any(|u| u.name == g.name) {
            d.warning(
                at(&g.sheet, g.row, Some(&g.label_header)),
                format!("Group '{}' has no items; it is left out of the CRF version.", g.name),
            );
        }
    }
    for s in &section_list {
        if !item_defs.iter().any(|i| i.section == s.label) {
            d.warning(sheet(&sections.name), format!("Section '{}' has no items; its page will be empty.", s.label));
        }
    }

    let version = FormVersion {
        oid: version_oid,
        label: header.version,
        description: Some(header.description).filter(|s| !s.is_empty()),
        revision_notes: Some(header.revision_notes).filter(|s| !s.is_empty()),
        source: FormSource::OcCrfTemplate,
        default_language: None,
        languages: Vec::new(),
        sections: section_list,
        groups: used_groups,
        items: item_defs,
        code_lists,
    };
    crate::design_check::check_expressions(&version, &checked_cells, &HashSet::new(), &mut d);
    (Some(ImportedForm { form_name: header.name, form_oid, version, expression_cells }), d)
}

/// A deterministic stand-in for OpenClinica's random collision suffix: 1, 2, 3 …, so the same
/// file always yields the same OIDs.
fn sequence() -> impl FnMut() -> u16 {
    let mut n: u16 = 0;
    move || {
        n = n.wrapping_add(1);
        n
    }
}

/// Header names as the template's code reads them: case-insensitive, without the `*` that
/// marks required columns in v3.9 and LibreClinica templates.
fn canonical_header(header: &str) -> String {
    header.trim().trim_end_matches('*').trim().to_ascii_uppercase()
}

/// One data row of a sheet.
struct Row<'w> {
    n: usize,
    cells: &'w [String],
}

/// A sheet with its columns by canonical header and the rows OpenClinica would read.
struct Table<'w> {
    name: String,
    columns: HashMap<String, usize>,
    /// Header texts as written (without the `*`), for messages.
    headers: Vec<String>,
    rows: Vec<Row<'w>>,
}

impl<'w> Table<'w> {
    fn read(s: &'w Sheet, d: &mut Diagnostics) -> Self {
        let (header_row, raw) = s.header().unwrap_or_default();
        let headers: Vec<String> = raw.iter().map(|h| h.trim().trim_end_matches('*').trim().to_owned()).collect();
        let mut columns = HashMap::new();
        for (i, h) in headers.iter().enumerate() {
            if !h.is_empty() {
                columns.entry(canonical_header(h)).or_insert(i);
            }
        }
        let mut rows = Vec::new();
        let mut previous = header_row;
        for (n, cells) in s.data_rows() {
            if n - previous > EMPTY_ROWS_END_SHEET {
                d.warning(
                    at(&s.name, *n, None),
                    format!(
                        "Row {n} and the rows after it are not read: an OpenClinica template sheet ends after {EMPTY_ROWS_END_SHEET} empty rows (rows {}–{} are empty).",
                        previous + 1,
                        n - 1
                    ),
                );
                break;
            }
            rows.push(Row { n: *n, cells });
            previous = *n;
        }
        Self { name: s.name.clone(), columns, headers, rows }
    }

    fn require(&self, columns: &[&str], d: &mut Diagnostics) {
        for c in columns {
            if !self.columns.contains_key(*c) {
                d.error(sheet(&self.name), format!("The {} sheet has no {c} column.", self.name));
            }
        }
    }

    fn has(&self, column: &str) -> bool {
        self.columns.contains_key(column)
    }

    fn get(&self, r: &Row<'w>, column: &str) -> &'w str {
        self.columns.get(column).and_then(|i| r.cells.get(*i)).map_or("", |s| s.trim())
    }

    fn header_of(&self, column: &str) -> String {
        self.columns.get(column).and_then(|i| self.headers.get(*i)).cloned().unwrap_or_else(|| column.to_owned())
    }

    fn loc(&self, r: &Row<'_>, column: &str) -> Location {
        at(&self.name, r.n, Some(&self.header_of(column)))
    }

    /// A text cell, with its limit and, when `required`, a complaint if it is empty.
    fn text(&self, d: &mut Diagnostics, r: &Row<'w>, column: &str, max: usize, required: bool) -> &'w str {
        let v = self.get(r, column);
        if v.is_empty() {
            if required {
                d.error(self.loc(r, column), format!("{} is required.", self.header_of(column)));
            }
        } else {
            let len = v.chars().count();
            if len > max {
                d.error(
                    self.loc(r, column),
                    format!("{} is {len} characters long; at most {max} are allowed.", self.header_of(column)),
                );
            }
        }
        v
    }

    /// An optional text cell as an `Option`.
    fn optional(&self, d: &mut Diagnostics, r: &Row<'w>, column: &str, max: usize) -> Option<String> {
        Some(self.text(d, r, column, max, false).to_owned()).filter(|s| !s.is_empty())
    }
}

fn has_space(text: &str) -> bool {
    text.chars().any(char::is_whitespace)
}

/// The CRF sheet's one row.
struct CrfHeader {
    name: String,
    version: String,
    description: String,
    revision_notes: String,
}

fn read_crf(t: &Table<'_>, d: &mut Diagnostics) -> CrfHeader {
    let Some(r) = t.rows.first() else {
        d.error(
            sheet(&t.name),
            "The CRF sheet has no data row: give CRF_NAME, VERSION, VERSION_DESCRIPTION and REVISION_NOTES on row 2.",
        );
        return CrfHeader {
            name: String::new(),
            version: String::new(),
            description: String::new(),
            revision_notes: String::new(),
        };
    };
    for extra in t.rows.iter().skip(1) {
        d.error(
            at(&t.name, extra.n, None),
            "The CRF sheet has exactly one data row (one template is one CRF version); remove this row.",
        );
    }
    CrfHeader {
        name: t.text(d, r, "CRF_NAME", 255, true).to_owned(),
        version: t.text(d, r, "VERSION", 255, true).to_owned(),
        description: t.text(d, r, "VERSION_DESCRIPTION", 4000, true).to_owned(),
        revision_notes: t.text(d, r, "REVISION_NOTES", 255, true).to_owned(),
    }
}

fn read_sections(t: &Table<'_>, d: &mut Diagnostics) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    let mut rows: HashMap<String, usize> = HashMap::new();
    for r in &t.rows {
        let label = t.text(d, r, "SECTION_LABEL", 255, true);
        let title = t.text(d, r, "SECTION_TITLE", 2000, true);
        let subtitle = t.optional(d, r, "SUBTITLE", 2000);
        let instructions = t.optional(d, r, "INSTRUCTIONS", 2000);
        t.text(d, r, "PAGE_NUMBER", 5, false);
        if label.is_empty() {
            continue;
        }
        if has_space(label) {
            d.error(
                t.loc(r, "SECTION_LABEL"),
                format!("SECTION_LABEL '{label}' contains a space; section labels may not contain spaces."),
            );
        }
        if let Some(previous) = rows.get(label) {
            d.error(
                t.loc(r, "SECTION_LABEL"),
                format!("SECTION_LABEL '{label}' is already used on row {previous}; section labels must be unique."),
            );
            continue;
        }
        rows.insert(label.to_owned(), r.n);
        out.push(Section { label: label.to_owned(), title: Text::plain(title), subtitle, instructions });
    }
    if out.is_empty() && !d.has_errors() {
        d.error(sheet(&t.name), "The Sections sheet defines no section; every item needs one.");
    }
    out
}

/// A group as the Groups sheet defines it.
struct GroupDef {
    name: String,
    sheet: String,
    row: usize,
    label_header: String,
    header: String,
    repeat: Option<Repeat>,
    hidden: bool,
}

fn read_groups(t: &Table<'_>, d: &mut Diagnostics) -> Vec<GroupDef> {
    // Templates 2.2–3.0 have no GROUP_LAYOUT column: every group there is a repeating table.
    let layout_column = t.has("GROUP_LAYOUT");
    let mut out: Vec<GroupDef> = Vec::new();
    for r in &t.rows {
        let label = t.text(d, r, "GROUP_LABEL", 255, true);
        let header = t.text(d, r, "GROUP_HEADER", 255, false);
        let layout = t.get(r, "GROUP_LAYOUT");
        let repeating = if layout_column {
            match layout.to_ascii_uppercase().as_str() {
                "GRID" => true,
                "" | "NON-REPEATING" | "NON_REPEATING" | "NONREPEATING" => false,
                _ => {
                    d.error(
                        t.loc(r, "GROUP_LAYOUT"),
                        format!("GROUP_LAYOUT '{layout}' is not GRID or NON-REPEATING (blank means NON-REPEATING)."),
                    );
                    false
                }
            }
        } else {
            true
        };
        let count = |column: &str, d: &mut Diagnostics| -> Option<u32> {
            let v = t.get(r, column);
            if v.is_empty() {
                return None;
            }
            match v.parse::<u32>() {
                Ok(k) if k >= 1 => Some(k),
                _ => {
                    d.error(
                        t.loc(r, column),
                        format!("{} '{v}' is not a whole number of rows (1 or more).", t.header_of(column)),
                    );
                    None
                }
            }
        };
        let initial = count("GROUP_REPEAT_NUMBER", d);
        let max = count("GROUP_REPEAT_MAX", d);
        let status = t.get(r, "GROUP_DISPLAY_STATUS");
        let hidden = display_status(status).unwrap_or_else(|| {
            d.error(
                t.loc(r, "GROUP_DISPLAY_STATUS"),
                format!("GROUP_DISPLAY_STATUS '{status}' is not SHOW or HIDE (blank means SHOW)."),
            );
            false
        });
        if label.is_empty() {
            continue;
        }
        if has_space(label) {
            d.error(
                t.loc(r, "GROUP_LABEL"),
                format!("GROUP_LABEL '{label}' contains a space; group labels may not contain spaces."),
            );
        }
        if let Some(previous) = out.iter().find(|g| g.name == label) {
            d.error(
                t.loc(r, "GROUP_LABEL"),
                format!("GROUP_LABEL '{label}' is already used on row {}; group labels must be unique.", previous.row),
            );
            continue;
        }
        let repeat = repeating.then(|| {
            let initial_rows = initial.unwrap_or(1);
            let max_rows = max.unwrap_or(40);
            if max_rows < initial_rows {
                d.warning(
                    t.loc(r, "GROUP_REPEAT_MAX"),
                    format!("GROUP_REPEAT_MAX {max_rows} is less than GROUP_REPEAT_NUMBER {initial_rows}; {max_rows} rows are shown."),
                );
            }
            Repeat { initial_rows: initial_rows.min(max_rows), max_rows: Some(max_rows), count: None }
        });
        out.push(GroupDef {
            name: label.to_owned(),
            sheet: t.name.clone(),
            row: r.n,
            label_header: t.header_of("GROUP_LABEL"),
            header: header.to_owned(),
            repeat,
            hidden,
        });
    }
    out
}

/// `SHOW`/blank → visible, `HIDE` → hidden.
fn display_status(text: &str) -> Option<bool> {
    match text.to_ascii_uppercase().as_str() {
        "" | "SHOW" => Some(false),
        "HIDE" => Some(true),
        _ => None,
    }
}

/// `0`/blank → no, `1` → yes.
fn flag(text: &str) -> Option<bool> {
    match text {
        "" | "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

/// The ten RESPONSE_TYPEs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponseType {
    Text,
    Textarea,
    SingleSelect,
    Radio,
    MultiSelect,
    Checkbox,
    Calculation,
    GroupCalculation,
    File,
    InstantCalculation,
}

impl ResponseType {
    fn parse(text: &str) -> Option<Self> {
        Some(match text.trim().to_ascii_lowercase().replace(['_', ' '], "-").as_str() {
            "text" => Self::Text,
            "textarea" => Self::Textarea,
            "single-select" => Self::SingleSelect,
            "radio" => Self::Radio,
            "multi-select" => Self::MultiSelect,
            "checkbox" => Self::Checkbox,
            "calculation" => Self::Calculation,
            "group-calculation" => Self::GroupCalculation,
            "file" => Self::File,
            "instant-calculation" => Self::InstantCalculation,
            _ => return None,
        })
    }

    fn widget(self) -> Widget {
        match self {
            Self::Text => Widget::Text,
            Self::Textarea => Widget::Textarea,
            Self::SingleSelect => Widget::SingleSelect,
            Self::Radio => Widget::Radio,
            Self::MultiSelect => Widget::MultiSelect,
            Self::Checkbox => Widget::Checkbox,
            Self::Calculation | Self::InstantCalculation => Widget::Calculation,
            Self::GroupCalculation => Widget::GroupCalculation,
            Self::File => Widget::File,
        }
    }

    fn has_options(self) -> bool {
        matches!(self, Self::SingleSelect | Self::Radio | Self::MultiSelect | Self::Checkbox)
    }

    fn is_calculated(self) -> bool {
        matches!(self, Self::Calculation | Self::GroupCalculation | Self::InstantCalculation)
    }
}

/// The data types a template may use (§2.1): not BL, DATETIME, TIME.
fn template_data_type(text: &str) -> Option<DataType> {
    match text.trim().to_ascii_uppercase().as_str() {
        "ST" | "INT" | "REAL" | "DATE" | "PDATE" | "FILE" => DataType::parse_code(text),
        _ => None,
    }
}

/// A comma list with `\,` for a comma inside an entry; a trailing comma adds no entry.
fn split_options(text: &str) -> Vec<String> {
    if text.trim().is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&',') => {
                current.push(',');
                chars.next();
            }
            ',' => out.push(std::mem::take(&mut current).trim().to_owned()),
            _ => current.push(c),
        }
    }
    out.push(current.trim().to_owned());
    if out.len() > 1 && out.last().is_some_and(String::is_empty) {
        out.pop();
    }
    out
}

/// Whether an option code is a value of the data type (§2.1 canonical forms).
fn fits(value: &str, data_type: DataType) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let unsigned = |s: &str| s.strip_prefix('-').unwrap_or(s).to_owned();
    match data_type {
        DataType::Integer => digits(&unsigned(value)),
        DataType::Real => {
            let u = unsigned(value);
            match u.split_once('.') {
                Some((a, b)) => digits(a) && digits(b),
                None => digits(&u),
            }
        }
        DataType::Date => full_date(value),
        DataType::PartialDate => {
            full_date(value)
                || (value.len() == 4 && digits(value))
                || (value.len() == 7 && full_date(&format!("{value}-01")) && value.as_bytes().get(4) == Some(&b'-'))
        }
        _ => true,
    }
}

fn full_date(value: &str) -> bool {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    value.len() == 10 && time::Date::parse(value, &format).is_ok()
}

/// WIDTH_DECIMAL `w(d)` (§2.3) → (length, decimals).
fn width_decimal(text: &str, data_type: DataType) -> Result<(Option<u32>, Option<u32>), String> {
    if matches!(data_type, DataType::Date | DataType::PartialDate | DataType::File) {
        return Err(format!("WIDTH_DECIMAL is not allowed for DATA_TYPE {}.", data_type.code()));
    }
    let (w, d) = match text.split_once('(') {
        Some((w, rest)) => {
            let Some(d) = rest.strip_suffix(')') else {
                return Err(format!("WIDTH_DECIMAL '{text}' is not of the form w(d), e.g. 5(2)."));
            };
            (w.trim(), Some(d.trim()))
        }
        None => (text.trim(), None),
    };
    let max_width = if data_type == DataType::Text { 4000 } else { 26 };
    let width = if w.eq_ignore_ascii_case("w") {
        None
    } else {
        match w.parse::<u32>() {
            Ok(k) if (1..=max_width).contains(&k) => Some(k),
            _ => {
                return Err(format!(
                    "WIDTH_DECIMAL '{text}': the width must be a number from 1 to {max_width} for DATA_TYPE {} (or the letter w).",
                    data_type.code()
                ));
            }
        }
    };
    let decimals = match d {
        None => None,
        Some(d) if d.eq_ignore_ascii_case("d") => None,
        Some(d) => {
            if data_type != DataType::Real {
                return Err(format!(
                    "WIDTH_DECIMAL '{text}': decimals are only allowed for DATA_TYPE REAL (write {}(d) or leave them out).",
                    w
                ));
            }
            match d.parse::<u32>() {
                Ok(k) if (1..=20).contains(&k) && width.is_none_or(|w| k <= w) => Some(k),
                _ => {
                    return Err(format!(
                        "WIDTH_DECIMAL '{text}': the decimals must be a number from 1 to 20, not more than the width."
                    ));
                }
            }
        }
    };
    Ok((width, decimals))
}

/// What the reader remembers of an item for checks of later rows.
struct ItemInfo {
    name: String,
    row: usize,
    section: String,
    group: Option<String>,
    response: Option<ResponseType>,
    /// Option codes of option items.
    options: Vec<String>,
    /// Index in the item list, when the item could be built.
    index: Option<usize>,
}

/// A response set as first defined.
struct ResponseSet {
    row: usize,
    texts: Vec<String>,
    values: Vec<String>,
    /// The first definition had errors (reported there); later uses report nothing more.
    broken: bool,
    /// Code list OIDs made from it, by data type.
    code_lists: HashMap<DataType, Oid>,
}

/// A simple conditional display waiting for every item to be known.
struct PendingScd {
    item: usize,
    location: Location,
}

/// A group in use, with where its OID came from.
struct UsedGroup {
    oid: Oid,
    repeating: bool,
    section: String,
    first_row: usize,
}

struct ItemReader<'a, 'w> {
    t: &'a Table<'w>,
    d: Diagnostics,
    ctx: Context<'a>,
    crf_name: String,
    form_oid: Oid,
    taken: HashSet<String>,
    random: Box<dyn FnMut() -> u16>,
    sections: Vec<String>,
    group_defs: Vec<GroupDef>,
    /// Groups in order of first use.
    groups: Vec<ItemGroup>,
    /// The first row of every ITEM_NAME in the sheet, to tell "later" from "unknown".
    first_rows: HashMap<String, usize>,
    /// Items read so far, by name → index in `infos`.
    names: HashMap<String, usize>,
    infos: Vec<ItemInfo>,
    items: Vec<ItemDef>,
    response_sets: HashMap<String, ResponseSet>,
    code_lists: Vec<CodeList>,
    /// Measurement unit OID → (unit, row).
    units: HashMap<String, (String, usize)>,
    used_groups: HashMap<String, UsedGroup>,
    previous_group: Option<String>,
    scds: Vec<PendingScd>,
    expression_cells: Vec<ExpressionCell>,
    /// The expression cells the form-wide check reads (those whose inputs all exist).
    checked_cells: Vec<ExpressionCell>,
}

impl<'w> ItemReader<'_, 'w> {
    fn item(&mut self, r: &Row<'w>) {
        let t = self.t;
        let name = t.text(&mut self.d, r, "ITEM_NAME", 255, true);
        if name.is_empty() {
            return;
        }
        if has_space(name) {
            self.d.error(
                t.loc(r, "ITEM_NAME"),
                format!("ITEM_NAME '{name}' contains a space; item names may not contain spaces."),
            );
        }
        if let Some(&i) = self.names.get(name) {
            self.d.error(
                t.loc(r, "ITEM_NAME"),
                format!(
                    "ITEM_NAME '{name}' is already used on row {}; item names must be unique in a CRF (they are case-sensitive).",
                    self.infos[i].row
                ),
            );
            return;
        }
        let d = &mut self.d;
        let description = t.text(d, r, "DESCRIPTION_LABEL", 4000, true);
        let left = t.text(d, r, "LEFT_ITEM_TEXT", 2000, false);
        let units = t.optional(d, r, "UNITS", 64);
        let right_text = t.optional(d, r, "RIGHT_ITEM_TEXT", 2000);
        let header = t.optional(d, r, "HEADER", 2000);
        let subheader = t.optional(d, r, "SUBHEADER", 240);
        let question_number = t.optional(d, r, "QUESTION_NUMBER", 20);
        let default_value = t.optional(d, r, "DEFAULT_VALUE", 4000);
        let mut extra = std::collections::BTreeMap::new();
        for (column, key, max) in [
            ("PARENT_ITEM", "parent_item", 255),
            ("COLUMN_NUMBER", "column_number", 10),
            ("PAGE_NUMBER", "page_number", 5),
        ] {
            if let Some(v) = t.optional(d, r, column, max) {
                extra.insert(key.to_owned(), v);
            }
        }
        let column_number = t.get(r, "COLUMN_NUMBER");
        if !column_number.is_empty() && !column_number.parse::<u32>().is_ok_and(|k| k >= 1) {
            d.error(
                t.loc(r, "COLUMN_NUMBER"),
                format!("COLUMN_NUMBER '{column_number}' is not a whole number (1 or more)."),
            );
        }
        let parent = t.get(r, "PARENT_ITEM");
        if !parent.is_empty() && !self.names.contains_key(parent) {
            d.warning(
                t.loc(r, "PARENT_ITEM"),
                format!("PARENT_ITEM '{parent}' is not an item defined above; the indentation is ignored."),
            );
        }

        // Section and group.
        let section = t.text(d, r, "SECTION_LABEL", 255, true);
        if !section.is_empty() && !self.sections.iter().any(|s| s == section) {
            let hint = expr::did_you_mean(section, &self.sections)
                .map(|s| format!(" Did you mean '{s}'?"))
                .unwrap_or_default();
            d.error(
                t.loc(r, "SECTION_LABEL"),
                format!("SECTION_LABEL '{section}' is not defined on the Sections sheet.{hint}"),
            );
        }
        let group_label = t.text(d, r, "GROUP_LABEL", 255, false);
        let group = self.group(r, if group_label.is_empty() { UNGROUPED } else { group_label }, section);

        // Response and data type.
        let raw_type = t.text(&mut self.d, r, "RESPONSE_TYPE", 40, true);
        let response = if raw_type.is_empty() {
            None
        } else {
            let parsed = ResponseType::parse(raw_type);
            if parsed.is_none() {
                self.d.error(
                    t.loc(r, "RESPONSE_TYPE"),
                    format!("RESPONSE_TYPE '{raw_type}' is not one of text, textarea, single-select, radio, multi-select, checkbox, calculation, group-calculation, file, instant-calculation."),
                );
            }
            parsed
        };
        let raw_data_type = t.text(&mut self.d, r, "DATA_TYPE", 10, true);
        let data_type = if raw_data_type.is_empty() {
            None
        } else {
            let parsed = template_data_type(raw_data_type);
            if parsed.is_none() {
                self.d.error(
                    t.loc(r, "DATA_TYPE"),
                    format!("DATA_TYPE '{raw_data_type}' is not one of ST, INT, REAL, DATE, PDATE, FILE."),
                );
            }
            parsed
        };
        match (response, data_type) {
            (Some(ResponseType::File), Some(dt)) if dt != DataType::File => {
                self.d.error(t.loc(r, "DATA_TYPE"), format!("A file item must have DATA_TYPE FILE, not {}.", dt.code()))
            }
            (Some(rt), Some(DataType::File)) if rt != ResponseType::File => {
                self.d.error(t.loc(r, "DATA_TYPE"), "DATA_TYPE FILE is only for items with RESPONSE_TYPE file.")
            }
            _ => {}
        }
        let data_type_or_text = data_type.unwrap_or(DataType::Text);

        let (length, decimals) = self.width_decimal(r, data_type);
        let (code_list, options) = self.response_options(r, response, data_type_or_text);
        let calculation = self.calculation(r, name, response, group.as_ref().map(|(g, _)| g.as_str()));
        if response == Some(ResponseType::InstantCalculation)
            && let Some(trigger) = self.instant_calculation(r, section, group.as_ref().map(|(g, _)| g.as_str()))
        {
            extra.insert("instant_calculation_trigger".to_owned(), trigger);
            extra.insert("instant_calculation".to_owned(), t.get(r, "RESPONSE_VALUES_OR_CALCULATIONS").to_owned());
        }
        let checks = self.validation(r, data_type);
        let units = units.filter(|u| self.unit(r, u));

        let d = &mut self.d;
        let layout = t.get(r, "RESPONSE_LAYOUT");
        let appearance = match layout.to_ascii_lowercase().as_str() {
            "" => None,
            l @ ("horizontal" | "vertical") => Some(l.to_owned()),
            _ => {
                d.warning(
                    t.loc(r, "RESPONSE_LAYOUT"),
                    format!("RESPONSE_LAYOUT '{layout}' is not Horizontal or Vertical; it is ignored."),
                );
                None
            }
        };
        let phi_text = t.get(r, "PHI");
        let phi = flag(phi_text).unwrap_or_else(|| {
            d.error(t.loc(r, "PHI"), format!("PHI '{phi_text}' must be 1 (yes), 0 or blank (no)."));
            false
        });
        let required_text = t.get(r, "REQUIRED");
        let required = flag(required_text).unwrap_or_else(|| {
            d.error(t.loc(r, "REQUIRED"), format!("REQUIRED '{required_text}' must be 1 (yes), 0 or blank (no)."));
            false
        });
        let status = t.get(r, "ITEM_DISPLAY_STATUS");
        let hidden = display_status(status).unwrap_or_else(|| {
            d.error(
                t.loc(r, "ITEM_DISPLAY_STATUS"),
                format!("ITEM_DISPLAY_STATUS '{status}' is not SHOW or HIDE (blank means SHOW)."),
            );
            false
        });
        let conditional_display = self.conditional_display(r, name, hidden);
        let (conditional_display, scd_location) = conditional_display.unzip();

        let info_index = self.infos.len();
        self.names.insert(name.to_owned(), info_index);
        let mut info = ItemInfo {
            name: name.to_owned(),
            row: r.n,
            section: section.to_owned(),
            group: group.as_ref().map(|(g, _)| g.clone()),
            response,
            options,
            index: None,
        };
        if let (Some((_, group_oid)), Some(response), Some(data_type)) = (group, response, data_type) {
            let oid = self.item_oid(name);
            info.index = Some(self.items.len());
            if let Some(location) = scd_location {
                self.scds.push(PendingScd { item: self.items.len(), location });
            }
            self.items.push(ItemDef {
                oid,
                name: name.to_owned(),
                group_oid,
                section: section.to_owned(),
                data_type,
                widget: response.widget(),
                length,
                decimals,
                units,
                code_list,
                label: Text::plain(left),
                hint: Text::default(),
                right_text,
                question_number,
                header,
                subheader,
                brief_description: None,
                description: Some(description.to_owned()).filter(|s| !s.is_empty()),
                phi,
                required: if required { Required::Yes } else { Required::No },
                required_message: None,
                default_value,
                readonly: response.is_calculated(),
                hidden,
                checks,
                calculation,
                relevant: None,
                conditional_display,
                choice_filter: None,
                appearance,
                external: None,
                extra,
            });
        }
        self.infos.push(info);
    }

    /// The group of an item: checks that it exists, that GRID items are contiguous and in one
    /// section, and that the item stays in its group across versions. Returns the group name
    /// and OID.
    fn group(&mut self, r: &Row<'w>, label: &str, section: &str) -> Option<(String, Oid)> {
        let t = self.t;
        let def = self.group_defs.iter().find(|g| g.name == label);
        if def.is_none() && label != UNGROUPED {
            let names: Vec<&str> = self.group_defs.iter().map(|g| g.name.as_str()).collect();
            let hint = expr::did_you_mean(label, &names).map(|s| format!(" Did you mean '{s}'?")).unwrap_or_default();
            let where_ = if self.group_defs.is_empty() && !t.has("GROUP_LABEL") {
                String::new()
            } else {
                " on the Groups sheet".to_owned()
            };
            self.d.error(t.loc(r, "GROUP_LABEL"), format!("GROUP_LABEL '{label}' is not defined{where_}.{hint}"));
            self.previous_group = None;
            return None;
        }
        let repeating = def.is_some_and(|g| g.repeat.is_some());
        if let Some(existing) = self.ctx.existing
            && let Some(previous) = previous_group_of(existing, t.get(r, "ITEM_NAME"))
            && previous != label
        {
            self.d.error(
                t.loc(r, "GROUP_LABEL"),
                format!(
                    "Item '{}' is in group '{previous}' in earlier versions of this CRF; an item cannot move to another group ('{label}').",
                    t.get(r, "ITEM_NAME")
                ),
            );
        }
        if let Some(used) = self.used_groups.get(label) {
            if used.repeating {
                if self.previous_group.as_deref() != Some(label) {
                    self.d.error(
                        t.loc(r, "GROUP_LABEL"),
                        format!("The items of GRID group '{label}' must be next to each other: this row is separated from the group's items above it (from row {}).", used.first_row),
                    );
                }
                if !section.is_empty() && !used.section.is_empty() && used.section != section {
                    self.d.error(
                        t.loc(r, "SECTION_LABEL"),
                        format!("The items of GRID group '{label}' must be in one section: this item is in '{section}', the group in '{}'.", used.section),
                    );
                }
            }
            self.previous_group = Some(label.to_owned());
            return Some((label.to_owned(), used.oid.clone()));
        }
        let oid = self.ctx.existing.and_then(|f| f.group_oid(label)).cloned().unwrap_or_else(|| {
            let taken = &self.taken;
            oid::generate_form_part(
                FormPartKind::ItemGroup,
                self.form_oid.as_str(),
                &self.crf_name,
                label,
                |c| taken.contains(c),
                &mut self.random,
            )
        });
        self.taken.insert(oid.to_string());
        let (header, repeat, hidden) =
            def.map_or((String::new(), None, false), |g| (g.header.clone(), g.repeat.clone(), g.hidden));
        self.groups.push(ItemGroup {
            oid: oid.clone(),
            name: label.to_owned(),
            header: Text::plain(header),
            repeat,
            hidden,
            relevant: None,
        });
        self.used_groups.insert(
            label.to_owned(),
            UsedGroup { oid: oid.clone(), repeating, section: section.to_owned(), first_row: r.n },
        );
        self.previous_group = Some(label.to_owned());
        Some((label.to_owned(), oid))
    }

    fn item_oid(&mut self, name: &str) -> Oid {
        let oid = self.ctx.existing.and_then(|f| f.item_oid(name)).cloned().unwrap_or_else(|| {
            let taken = &self.taken;
            oid::generate_form_part(
                FormPartKind::Item,
                self.form_oid.as_str(),
                &self.crf_name,
                name,
                |c| taken.contains(c),
                &mut self.random,
            )
        });
        self.taken.insert(oid.to_string());
        oid
    }

    fn width_decimal(&mut self, r: &Row<'w>, data_type: Option<DataType>) -> (Option<u32>, Option<u32>) {
        let t = self.t;
        let text = t.text(&mut self.d, r, "WIDTH_DECIMAL", 10, false);
        let Some(data_type) = data_type.filter(|_| !text.is_empty()) else { return (None, None) };
        width_decimal(text, data_type).unwrap_or_else(|m| {
            self.d.error(t.loc(r, "WIDTH_DECIMAL"), m);
            (None, None)
        })
    }

    /// The response set of an option item: its code list and codes.
    fn response_options(
        &mut self,
        r: &Row<'w>,
        response: Option<ResponseType>,
        data_type: DataType,
    ) -> (Option<Oid>, Vec<String>) {
        let t = self.t;
        let d = &mut self.d;
        let label = t.text(d, r, "RESPONSE_LABEL", 80, false);
        let texts_cell = t.text(d, r, "RESPONSE_OPTIONS_TEXT", 4000, false);
        let values_cell = t.text(d, r, "RESPONSE_VALUES_OR_CALCULATIONS", 4000, false);
        if !response.is_some_and(ResponseType::has_options) {
            return (None, Vec::new());
        }
        if label.is_empty() {
            d.error(
                t.loc(r, "RESPONSE_LABEL"),
                "RESPONSE_LABEL is required for items with options (it names the response set).",
            );
        }
        let (texts, values) = (split_options(texts_cell), split_options(values_cell));
        let reuse = self.response_sets.get(label).filter(|_| !label.is_empty());
        let (texts, values) = match reuse {
            // Its first definition was refused, and said so.
            Some(set) if set.broken => return (None, set.values.clone()),
            Some(set) if texts.is_empty() && values.is_empty() => (set.texts.clone(), set.values.clone()),
            Some(set) => {
                if set.texts != texts || set.values != values {
                    d.error(
                        t.loc(r, "RESPONSE_LABEL"),
                        format!("RESPONSE_LABEL '{label}' was defined on row {} with other options; reuse it with the same options (or blank options), or choose a new label.", set.row),
                    );
                    return (None, values);
                }
                (texts, values)
            }
            None => {
                let mut ok = true;
                if texts.is_empty() {
                    d.error(
                        t.loc(r, "RESPONSE_OPTIONS_TEXT"),
                        "RESPONSE_OPTIONS_TEXT is required: list the option texts separated by commas.",
                    );
                    ok = false;
                }
                if values.is_empty() {
                    d.error(
                        t.loc(r, "RESPONSE_VALUES_OR_CALCULATIONS"),
                        "RESPONSE_VALUES_OR_CALCULATIONS is required: list the option codes separated by commas.",
                    );
                    ok = false;
                }
                if ok && texts.len() != values.len() {
                    d.error(
                        t.loc(r, "RESPONSE_VALUES_OR_CALCULATIONS"),
                        format!("There are {} option texts but {} option values; they must pair up (write \\, for a comma inside an option).", texts.len(), values.len()),
                    );
                    ok = false;
                }
                let mut seen = HashSet::new();
                for v in &values {
                    if v.is_empty() {
                        d.error(t.loc(r, "RESPONSE_VALUES_OR_CALCULATIONS"), "An option value is empty.");
                        ok = false;
                    } else if !seen.insert(v.as_str()) {
                        d.error(
                            t.loc(r, "RESPONSE_VALUES_OR_CALCULATIONS"),
                            format!("The option value '{v}' appears twice."),
                        );
                        ok = false;
                    }
                }
                if !label.is_empty() {
                    self.response_sets.insert(
                        label.to_owned(),
                        ResponseSet {
                            row: r.n,
                            texts: texts.clone(),
                            values: values.clone(),
                            broken: !ok,
                            code_lists: HashMap::new(),
                        },
                    );
                }
                if !ok {
                    return (None, values);
                }
                (texts, values)
            }
        };
        let wrong: Vec<&str> = values.iter().filter(|v| !fits(v, data_type)).map(String::as_str).collect();
        if !wrong.is_empty() {
            self.d.error(
                t.loc(r, "RESPONSE_VALUES_OR_CALCULATIONS"),
                format!(
                    "The option values {} are not {} values (DATA_TYPE {}).",
                    wrong.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(", "),
                    kind_name(data_type),
                    data_type.code()
                ),
            );
            return (None, values);
        }
        if data_type == DataType::File {
            return (None, values);
        }
        let oid = self.code_list(label, data_type, &texts, &values);
        (Some(oid), values)
    }

    /// The code list of a response set for a data type, made on first use.
    fn code_list(&mut self, label: &str, data_type: DataType, texts: &[String], values: &[String]) -> Oid {
        if let Some(oid) = self.response_sets.get(label).and_then(|s| s.code_lists.get(&data_type)) {
            return oid.clone();
        }
        let items: Vec<CodeListItem> = texts
            .iter()
            .zip(values)
            .map(|(t, v)| CodeListItem {
                value: v.clone(),
                label: Text::plain(t.clone()),
                extra: std::collections::BTreeMap::new(),
            })
            .collect();
        let kept = self.ctx.existing.and_then(|f| {
            f.versions
                .iter()
                .rev()
                .flat_map(|v| &v.code_lists)
                .find(|c| c.name == label && c.data_type == data_type && c.items == items)
        });
        let oid = if let Some(c) = kept {
            c.oid.clone()
        } else {
            let prefix_len = OID_MAX - 3;
            let base = format!("CL_{}", oid::normalise_key(&format!("{}_{label}", self.crf_name), prefix_len));
            let mut candidate = base.clone();
            let mut k = 1;
            while self.taken.contains(&candidate) || Oid::parse(&candidate).is_err() {
                k += 1;
                let suffix = format!("_{k}");
                candidate = format!("{}{suffix}", base.chars().take(OID_MAX - suffix.len()).collect::<String>());
            }
            self.taken.insert(candidate.clone());
            Oid::parse(&candidate).unwrap_or_else(|_| self.form_oid.clone())
        };
        self.code_lists.push(CodeList { oid: oid.clone(), name: label.to_owned(), data_type, items });
        if let Some(set) = self.response_sets.get_mut(label) {
            set.code_lists.insert(data_type, oid.clone());
        }
        oid
    }

    /// A `func:` calculation of a calculation or group-calculation item, with its inputs
    /// checked: defined earlier in the sheet, numbers, in the item's group (calculation) or in
    /// another, repeating group (group-calculation).
    fn calculation(
        &mut self,
        r: &Row<'w>,
        name: &str,
        response: Option<ResponseType>,
        group: Option<&str>,
    ) -> Option<Expression> {
        if !matches!(response, Some(ResponseType::Calculation | ResponseType::GroupCalculation)) {
            return None;
        }
        let t = self.t;
        let column = "RESPONSE_VALUES_OR_CALCULATIONS";
        let source = t.get(r, column);
        let loc = t.loc(r, column);
        let body = source.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case("func"));
        if body.is_none() {
            self.d.error(
                loc,
                format!("A calculation is written in {column} as 'func: …' (for example func: weight / (height * height)); found '{source}'."),
            );
            return None;
        }
        let parsed = match expr::parse_oc_calculation(source) {
            Ok(e) => e,
            Err(problems) => {
                for p in problems {
                    let m = format!("Calculation of '{name}': {}", p.message);
                    if p.is_error() { self.d.error(loc.clone(), m) } else { self.d.warning(loc.clone(), m) }
                }
                return None;
            }
        };
        // Whether the form-wide check ([`crate::design_check`]) can resolve every input; if not,
        // the problem is reported here and the check would only repeat it.
        let mut resolvable = true;
        let group_calculation = response == Some(ResponseType::GroupCalculation);
        for reference in parsed.references() {
            let Reference::ItemName(input) = reference else { continue };
            let Some(&i) = self.names.get(input.as_str()) else {
                let m = match self.first_rows.get(input.as_str()) {
                    Some(row) if *row == r.n => format!("The calculation of '{name}' uses the item itself."),
                    Some(row) => format!(
                        "The calculation of '{name}' uses '{input}', which is defined later (row {row}); a calculation may only use items defined above it."
                    ),
                    None => {
                        let hint = expr::did_you_mean(input, self.names.keys())
                            .map(|s| format!(" Did you mean '{s}'?"))
                            .unwrap_or_default();
                        format!("The calculation of '{name}' uses '{input}', which is not an item of this CRF.{hint}")
                    }
                };
                self.d.error(loc.clone(), m);
                resolvable = false;
                continue;
            };
            let info = &self.infos[i];
            resolvable &= info.index.is_some();
            let input_group = info.group.as_deref();
            if group_calculation {
                let input_repeats = input_group.is_some_and(|g| self.used_groups.get(g).is_some_and(|u| u.repeating));
                if input_group == group || !input_repeats {
                    self.d.error(
                        loc.clone(),
                        format!("The group-calculation of '{name}' uses '{input}', which must be in a GRID group other than the item's own."),
                    );
                }
            } else if group.is_some() && input_group != group {
                self.d.error(
                    loc.clone(),
                    format!(
                        "The calculation of '{name}' uses '{input}' of group '{}'; a calculation uses items of its own group ('{}').",
                        input_group.unwrap_or(UNGROUPED),
                        group.unwrap_or(UNGROUPED)
                    ),
                );
            }
        }
        let expression = Expression::oc(source);
        let cell = ExpressionCell {
            location: loc,
            owner: name.to_owned(),
            column: "calculation".to_owned(),
            expression: expression.clone(),
        };
        if resolvable {
            self.checked_cells.push(cell.clone());
        } else {
            for w in parsed.parse_warnings() {
                self.d.warning(cell.location.clone(), format!("Calculation of '{name}': {}", w.message));
            }
        }
        self.expression_cells.push(cell);
        Some(expression)
    }

    /// `func: onchange(TRIGGER, _CURRENT_DATE)`: the trigger is an earlier item of the same
    /// section (and group when the group repeats). Returns the trigger.
    fn instant_calculation(&mut self, r: &Row<'w>, section: &str, group: Option<&str>) -> Option<String> {
        let t = self.t;
        let column = "RESPONSE_VALUES_OR_CALCULATIONS";
        let source = t.get(r, column);
        let loc = t.loc(r, column);
        let call = source
            .split_once(':')
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case("func"))
            .map(|(_, b)| b.trim())
            .and_then(|b| {
                let open = b.find('(')?;
                b[..open].trim().eq_ignore_ascii_case("onchange").then_some(())?;
                b[open + 1..].strip_suffix(')')
            });
        let args: Vec<&str> = call.map(|a| a.split(',').map(str::trim).collect()).unwrap_or_default();
        let [trigger, value] = args.as_slice() else {
            self.d.error(
                loc,
                format!(
                    "An instant-calculation is written 'func: onchange(TRIGGER_ITEM, _CURRENT_DATE)'; found '{source}'."
                ),
            );
            return None;
        };
        if !value.eq_ignore_ascii_case("_CURRENT_DATE") && !value.eq_ignore_ascii_case("_CURRENT_DATE_TIME") {
            self.d.error(loc.clone(), format!("onchange() sets _CURRENT_DATE or _CURRENT_DATE_TIME, not '{value}'."));
        }
        match self.names.get(*trigger).map(|i| &self.infos[*i]) {
            None => {
                let m = if self.first_rows.contains_key(*trigger) {
                    format!("The trigger '{trigger}' of onchange() must be defined above this item.")
                } else {
                    format!("The trigger '{trigger}' of onchange() is not an item of this CRF.")
                };
                self.d.error(loc, m);
            }
            Some(info) => {
                if info.section != section {
                    self.d.error(
                        loc.clone(),
                        format!("The trigger '{trigger}' of onchange() must be in the same section ('{section}')."),
                    );
                }
                let repeating = group.is_some_and(|g| self.used_groups.get(g).is_some_and(|u| u.repeating));
                if repeating && info.group.as_deref() != group {
                    self.d.error(loc, format!("The trigger '{trigger}' of onchange() must be in the same GRID group."));
                }
            }
        }
        Some((*trigger).to_owned())
    }

    /// VALIDATION and VALIDATION_ERROR_MESSAGE → checks.
    fn validation(&mut self, r: &Row<'w>, data_type: Option<DataType>) -> Vec<Check> {
        let t = self.t;
        let source = t.text(&mut self.d, r, "VALIDATION", 1000, false);
        let message = t.text(&mut self.d, r, "VALIDATION_ERROR_MESSAGE", 255, false);
        if source.is_empty() {
            return Vec::new();
        }
        if message.is_empty() {
            self.d.error(
                t.loc(r, "VALIDATION_ERROR_MESSAGE"),
                "VALIDATION_ERROR_MESSAGE is required when VALIDATION is set (it is shown when the check fails).",
            );
        }
        let validation = match expr::parse_oc_validation(source) {
            Ok(v) => v,
            Err(problems) => {
                for p in problems {
                    self.d.error(t.loc(r, "VALIDATION"), format!("VALIDATION '{source}': {}", p.message));
                }
                return Vec::new();
            }
        };
        // OpenClinica saves a value failing a validation only with a discrepancy note: a soft
        // check in Casebook's terms (saved with a query).
        let check = |rule| Check { rule, message: Text::plain(message), hard: false };
        let range = |op: CompareOp, value: f64| CheckRule::Range {
            comparator: match op {
                CompareOp::Gt => Comparator::GT,
                CompareOp::Ge => Comparator::GE,
                CompareOp::Lt => Comparator::LT,
                CompareOp::Le => Comparator::LE,
                CompareOp::Eq => Comparator::EQ,
                CompareOp::Ne => Comparator::NE,
            },
            values: vec![expr::format_number(value)],
        };
        if let OcValidation::Regexp(re) = &validation {
            return vec![check(CheckRule::Regexp { pattern: re.pattern().to_owned() })];
        }
        if let Some(dt) = data_type.filter(|dt| !matches!(dt, DataType::Integer | DataType::Real)) {
            self.d.warning(
                t.loc(r, "VALIDATION"),
                format!("VALIDATION '{source}' compares numbers but the item's DATA_TYPE is {}; values that are not numbers will fail it.", dt.code()),
            );
        }
        validation.range_checks().into_iter().map(|(op, v)| check(range(op, v))).collect()
    }

    /// Checks UNITS' measurement unit OID; `false` drops the unit.
    fn unit(&mut self, r: &Row<'w>, unit: &str) -> bool {
        let t = self.t;
        let full = format!("MU_{}", oid::normalise_key(unit, usize::MAX));
        if full.len() > MU_OID_MAX {
            self.d.error(
                t.loc(r, "UNITS"),
                format!("UNITS '{unit}' would make the measurement unit OID {full} ({} characters); it must be at most {MU_OID_MAX}: shorten the unit.", full.len()),
            );
            return false;
        }
        let oid = oid::measurement_unit(unit).to_string();
        match self.units.get(&oid) {
            Some((other, row)) if other != unit => {
                self.d.error(
                    t.loc(r, "UNITS"),
                    format!("UNITS '{unit}' and '{other}' (row {row}) both make the measurement unit OID {oid}; write the unit the same way."),
                );
                false
            }
            Some(_) => true,
            None => {
                self.units.insert(oid, (unit.to_owned(), r.n));
                true
            }
        }
    }

    /// SIMPLE_CONDITIONAL_DISPLAY `CONTROL_ITEM_NAME, OPTION_VALUE, message`; the control item is
    /// checked once every item is known.
    fn conditional_display(&mut self, r: &Row<'w>, name: &str, hidden: bool) -> Option<(ConditionalDisplay, Location)> {
        let t = self.t;
        let column = "SIMPLE_CONDITIONAL_DISPLAY";
        let text = t.get(r, column);
        if text.is_empty() {
            return None;
        }
        let mut parts = text.splitn(3, ',').map(str::trim);
        let (control, value, message) =
            (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if control.is_empty() || value.is_empty() {
            self.d.error(
                t.loc(r, column),
                format!("SIMPLE_CONDITIONAL_DISPLAY '{text}' is not 'CONTROL_ITEM_NAME, OPTION_VALUE, message'."),
            );
            return None;
        }
        if !hidden {
            self.d.error(
                t.loc(r, "ITEM_DISPLAY_STATUS"),
                format!("Item '{name}' has a SIMPLE_CONDITIONAL_DISPLAY, so its ITEM_DISPLAY_STATUS must be HIDE (it is shown when '{control}' is '{value}')."),
            );
        }
        if control == name {
            self.d.error(t.loc(r, column), format!("Item '{name}' cannot control its own display."));
            return None;
        }
        let display = ConditionalDisplay {
            control_item: control.to_owned(),
            option_value: value.to_owned(),
            message: message.to_owned(),
        };
        Some((display, t.loc(r, column)))
    }

    /// The control item of each SCD exists, has options, is in the same section, and the value
    /// is one of its options.
    fn check_conditional_displays(&mut self) {
        for scd in std::mem::take(&mut self.scds) {
            let Some(item) = self.items.get(scd.item) else { continue };
            let Some(cd) = &item.conditional_display else { continue };
            let Some(control) = self.names.get(&cd.control_item).map(|i| &self.infos[*i]) else {
                let hint = expr::did_you_mean(&cd.control_item, self.names.keys())
                    .map(|s| format!(" Did you mean '{s}'?"))
                    .unwrap_or_default();
                self.d.error(
                    scd.location,
                    format!(
                        "The SIMPLE_CONDITIONAL_DISPLAY of '{}' names '{}', which is not an item of this CRF.{hint}",
                        item.name, cd.control_item
                    ),
                );
                continue;
            };
            if !control.response.is_some_and(ResponseType::has_options) {
                self.d.error(
                    scd.location,
                    format!("The SIMPLE_CONDITIONAL_DISPLAY of '{}' is controlled by '{}', which has no options (its RESPONSE_TYPE must be radio, single-select, checkbox or multi-select).", item.name, control.name),
                );
                continue;
            }
            if control.section != item.section {
                self.d.error(
                    scd.location.clone(),
                    format!("The SIMPLE_CONDITIONAL_DISPLAY of '{}' is controlled by '{}' in section '{}'; the control item must be in the same section ('{}').", item.name, control.name, control.section, item.section),
                );
            }
            if !control.options.contains(&cd.option_value) {
                self.d.error(
                    scd.location,
                    format!("The SIMPLE_CONDITIONAL_DISPLAY of '{}' waits for '{}' = '{}', which is not one of its option values ({}).", item.name, control.name, cd.option_value, control.options.join(", ")),
                );
            }
        }
    }
}

fn kind_name(data_type: DataType) -> &'static str {
    match data_type {
        DataType::Integer => "whole-number",
        DataType::Real => "number",
        DataType::Date => "date (YYYY-MM-DD)",
        DataType::PartialDate => "partial date (YYYY, YYYY-MM or YYYY-MM-DD)",
        _ => "valid",
    }
}

/// The group an item of this name had in the latest earlier version.
fn previous_group_of(form: &FormDef, item: &str) -> Option<String> {
    form.versions.iter().rev().find_map(|v| {
        let i = v.item(item)?;
        v.group(i.group_oid.as_str()).map(|g| g.name.clone())
    })
}
