//! XLSForm (ODK, and OpenClinica 4's form format) → a [`FormVersion`].
//!
//! Reads the `survey`, `choices` and `settings` sheets of a [`Workbook`], with the column and
//! type spellings pyxform accepts (`select_one x` / `select one x`, `begin_group` / `begin group`,
//! `label::English (en)` …) and OpenClinica's `bind::oc:*` columns. Every problem is reported with
//! its sheet, row and column; the caller refuses the upload if any error remains.
//!
//! Mapping to the study definition (as OpenClinica 4 does it):
//! - data items belong to the item group named in `bind::oc:itemgroup`; without it, items in a
//!   repeat belong to a group named after the repeat and other items to `ungrouped`;
//! - a `begin repeat` is a repeating item group (nested repeats are refused: ODM item groups do
//!   not nest); `repeat_count` fixes its row count;
//! - each top-level `begin group` is a section (page); items outside groups are in `main`;
//! - item names must be unique in the whole form, because they become OIDs and dataset columns
//!   (pyxform only asks for uniqueness within the parent group);
//! - device metadata questions (`start`, `end`, `deviceid` …) are ignored with a warning.
//!
//! Expressions are collected with their cells and checked by [`crate::design_check`] once the
//! whole form is known, so references to later questions resolve.

use std::collections::{BTreeMap, HashMap, HashSet};

use casebook_domain::design::{
    Check, CheckRule, CodeList, CodeListItem, DataType, Expression, FormSource, FormVersion, ItemDef, ItemGroup,
    Repeat, Required, Section, Text, Widget,
};
use casebook_domain::oid::{self, FormPartKind, Oid, OidKind};

use crate::diagnostic::{Diagnostics, Location, at, sheet};
use crate::workbook::{Sheet, Workbook};

/// A form read from an XLSForm: the form's identity and the new version.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedForm {
    /// `form_title` (or `form_id`): the form's name.
    pub form_name: String,
    pub form_oid: Oid,
    pub version: FormVersion,
    /// Where each expression came from, for diagnostics of the checker.
    pub expression_cells: Vec<ExpressionCell>,
}

/// An expression and the cell it was written in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpressionCell {
    pub location: Location,
    /// The item (or group) the expression belongs to, by name.
    pub owner: String,
    /// `relevant`, `constraint`, `calculation`, `required`, `choice_filter`, `repeat_count`.
    pub column: String,
    pub expression: Expression,
}

/// What the importer needs to know about the study the form goes into.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    /// The existing form with the same OID, so items keep their OIDs across versions.
    pub existing: Option<&'a casebook_domain::design::FormDef>,
    /// OIDs already used elsewhere in the study (collision suffixes avoid them).
    pub taken: Option<&'a HashSet<String>>,
    /// The file name without extension, used as the form id when `settings` has none.
    pub file_stem: Option<&'a str>,
}

/// Canonical survey column names, with the spellings pyxform accepts.
fn canonical_column(header: &str) -> String {
    let h = header.trim();
    let (base, lang) = match h.split_once("::") {
        Some((b, rest)) => (b.trim(), Some(rest.trim())),
        // The older single-colon spelling (`label:English`) for translatable texts.
        None => match h.split_once(':') {
            Some((b, rest))
                if matches!(
                    b.trim().to_ascii_lowercase().as_str(),
                    "label" | "hint" | "constraint_message" | "required_message" | "image" | "audio" | "video"
                ) =>
            {
                (b.trim(), Some(rest.trim()))
            }
            _ => (h, None),
        },
    };
    let lower = base.to_ascii_lowercase();
    let base = match lower.as_str() {
        "relevance" | "relevant" => "relevant",
        "constraint message" | "constraint_message" | "jr:constraintmsg" => "constraint_message",
        "required message" | "required_message" | "jr:requiredmsg" => "required_message",
        "calculate" | "calculation" => "calculation",
        "read_only" | "readonly" | "read only" => "readonly",
        "list name" | "list_name" => "list_name",
        "choice filter" | "choice_filter" => "choice_filter",
        "repeat_count" | "jr:count" | "repeat count" => "repeat_count",
        "default" => "default",
        other => other,
    };
    match lang {
        Some(l) if matches!(base, "bind" | "instance" | "body") => format!("{base}::{l}"),
        Some(l) if base == "media" => format!("media::{l}"),
        Some(l) => format!("{base}::{l}"),
        None => base.to_owned(),
    }
}

/// A sheet with its columns by canonical name.
struct Table {
    columns: HashMap<String, usize>,
    /// The header texts as written, for messages.
    headers: Vec<String>,
}

impl Table {
    fn new(sheet: &Sheet) -> Self {
        let headers = sheet.header().map(|(_, h)| h).unwrap_or_default();
        let mut columns = HashMap::new();
        for (i, h) in headers.iter().enumerate() {
            if !h.is_empty() {
                columns.entry(canonical_column(h)).or_insert(i);
            }
        }
        Self { columns, headers }
    }

    fn cell<'r>(&self, row: &'r [String], column: &str) -> &'r str {
        self.columns.get(column).and_then(|i| row.get(*i)).map_or("", |s| s.trim())
    }

    fn header_of(&self, column: &str) -> String {
        self.columns.get(column).and_then(|i| self.headers.get(*i)).cloned().unwrap_or_else(|| column.to_owned())
    }

    /// Translations of a text column: `label::French (fr)` → ("French (fr)", text).
    fn translations(&self, row: &[String], base: &str) -> BTreeMap<String, String> {
        let prefix = format!("{base}::");
        let mut out = BTreeMap::new();
        for (name, i) in &self.columns {
            if let Some(lang) = name.strip_prefix(&prefix) {
                if base == "media" || lang.contains("::") {
                    continue;
                }
                if let Some(v) = row.get(*i).map(|s| s.trim()).filter(|s| !s.is_empty()) {
                    out.insert(lang.to_owned(), v.to_owned());
                }
            }
        }
        out
    }

    fn text(&self, row: &[String], base: &str, default_language: Option<&str>) -> Text {
        let mut translations = self.translations(row, base);
        let mut text = self.cell(row, base).to_owned();
        if text.is_empty() {
            let pick = default_language
                .and_then(|l| translations.get(l).cloned())
                .or_else(|| translations.values().next().cloned());
            if let Some(t) = pick {
                text = t;
            }
        }
        if let Some(l) = default_language
            && translations.get(l) == Some(&text)
        {
            translations.remove(l);
        }
        Text { text, translations }
    }
}

/// Names as XML (and ODK) accept them: a letter or underscore, then letters, digits, `_`, `-`, `.`.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

const NAME_RULE: &str = "Names must begin with a letter or underscore; after the first character they may contain letters, digits, underscores, hyphens or periods.";

fn yes(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "true()" | "1" | "y" => Some(true),
        "no" | "false" | "false()" | "0" | "n" | "" => Some(false),
        _ => None,
    }
}

/// Question types Casebook collects, and the ones it knowingly does not.
enum QType {
    Input(DataType, Widget),
    SelectOne(String, bool),
    SelectMultiple(String, bool),
    Calculate,
    Note,
    Acknowledge,
    Hidden,
    Metadata,
    BeginGroup,
    EndGroup,
    BeginRepeat,
    EndRepeat,
    Unsupported(&'static str),
    Unknown,
}

fn question_type(raw: &str) -> QType {
    let t = raw.trim();
    let lower = t.to_ascii_lowercase();
    let words: Vec<&str> = lower.split_whitespace().collect();
    let original: Vec<&str> = t.split_whitespace().collect();
    let first = words.first().copied().unwrap_or("");
    if let Some(q) = select_type(&words, &original) {
        return q;
    }
    match (first, words.get(1).copied()) {
        ("begin", Some("group")) | ("begin_group", _) => QType::BeginGroup,
        ("end", Some("group")) | ("end_group", _) => QType::EndGroup,
        ("begin", Some("repeat")) | ("begin_repeat", _) => QType::BeginRepeat,
        ("end", Some("repeat")) | ("end_repeat", _) => QType::EndRepeat,
        ("begin", Some("loop")) | ("begin_loop", _) | ("end", Some("loop")) | ("end_loop", _) => {
            QType::Unsupported("loops")
        }
        ("select_one_from_file" | "select_multiple_from_file" | "select_one_external", _) => {
            QType::Unsupported("choices from external files")
        }
        ("select", Some("one_from_file" | "multiple_from_file")) => QType::Unsupported("choices from external files"),
        ("text" | "string", None) | ("phone", Some("number")) | ("add", Some("text")) => {
            QType::Input(DataType::Text, Widget::Text)
        }
        ("add", Some("integer")) => QType::Input(DataType::Integer, Widget::Number),
        ("add", Some("decimal")) => QType::Input(DataType::Real, Widget::Number),
        ("add", Some("date")) => QType::Input(DataType::Date, Widget::Date),
        ("add", Some("photo" | "image" | "audio" | "video")) | ("photo", None) => {
            QType::Input(DataType::File, Widget::File)
        }
        ("add", Some("location")) | ("location", None) => QType::Input(DataType::Text, Widget::Text),
        ("add", Some("note")) => QType::Note,
        ("integer" | "int", None) => QType::Input(DataType::Integer, Widget::Number),
        ("decimal", None) => QType::Input(DataType::Real, Widget::Number),
        ("date", None) => QType::Input(DataType::Date, Widget::Date),
        ("datetime", None) => QType::Input(DataType::DateTime, Widget::DateTime),
        ("time", None) => QType::Input(DataType::Time, Widget::Time),
        ("image" | "file" | "audio" | "video", None) => QType::Input(DataType::File, Widget::File),
        ("barcode" | "geopoint" | "geotrace" | "geoshape" | "gps", None) => QType::Input(DataType::Text, Widget::Text),
        ("calculate", None) => QType::Calculate,
        ("note", None) => QType::Note,
        ("acknowledge", None) => QType::Acknowledge,
        ("hidden", None) => QType::Hidden,
        (
            "start" | "end" | "today" | "deviceid" | "username" | "email" | "phonenumber" | "simserial"
            | "subscriberid" | "audit" | "start-geopoint" | "imei" | "uri:deviceid",
            None,
        ) => QType::Metadata,
        ("range", None) => QType::Unsupported("range questions"),
        ("rank", _) => QType::Unsupported("rank questions"),
        ("include", _) => QType::Unsupported("including other forms"),
        ("trigger", None) => QType::Unsupported("trigger questions"),
        ("csv-external" | "xml-external", None) => QType::Unsupported("external secondary instances"),
        ("osm", _) => QType::Unsupported("OpenStreetMap questions"),
        ("background-geopoint", None) => QType::Unsupported("background geopoint"),
        ("background-audio", None) => QType::Unsupported("background audio recording"),
        _ => QType::Unknown,
    }
}

/// `select_one x`, `select one x`, `select one from x`, `select_multiple x`, `select all that
/// apply [from] x`, with `or_other` / `or specify other`; the list name keeps its spelling.
fn select_type(words: &[&str], original: &[&str]) -> Option<QType> {
    let patterns: [(&[&str], bool); 9] = [
        (&["select", "one", "from"], false),
        (&["select", "all", "that", "apply", "from"], true),
        (&["select", "all", "that", "apply"], true),
        (&["select_all_that_apply"], true),
        (&["select", "one"], false),
        (&["select", "multiple"], true),
        (&["select_one"], false),
        (&["select1"], false),
        (&["select_multiple"], true),
    ];
    let (prefix, multiple) = patterns.iter().find(|(p, _)| words.starts_with(p))?;
    let mut rest: Vec<&str> = original[prefix.len()..].to_vec();
    let rest_lower: Vec<&str> = words[prefix.len()..].to_vec();
    let mut or_other = false;
    if rest_lower.ends_with(&["or", "specify", "other"]) {
        rest.truncate(rest.len() - 3);
        or_other = true;
    } else if rest_lower.ends_with(&["or_other"]) {
        rest.truncate(rest.len() - 1);
        or_other = true;
    }
    if rest.len() != 1 || rest[0].ends_with("_from_file") || words[0].contains("from_file") {
        return None;
    }
    let list = rest[0].to_owned();
    Some(if *multiple { QType::SelectMultiple(list, or_other) } else { QType::SelectOne(list, or_other) })
}

/// Whether a form uses only XLSForm features Casebook supports (for the conformance corpus).
#[must_use]
pub fn unsupported_features(wb: &Workbook) -> Vec<String> {
    let mut out = Vec::new();
    for s in &wb.sheets {
        let n = s.name.trim().to_ascii_lowercase();
        if matches!(n.as_str(), "entities" | "external_choices" | "osm") {
            out.push(format!("sheet '{}'", s.name));
        }
    }
    if let Some(s) = wb.sheet("survey") {
        let t = Table::new(s);
        for col in ["parameters", "trigger", "save_to", "body::rows", "body::accuracyThreshold"] {
            if t.columns.contains_key(col) {
                out.push(format!("column '{col}'"));
            }
        }
        for (_, row) in s.data_rows() {
            for col in ["relevant", "constraint", "calculation", "required", "choice_filter", "repeat_count", "default"]
            {
                let text = t.cell(row, col);
                if text.is_empty() || yes(text).is_some() {
                    continue;
                }
                if text.contains("last-saved#") || text.contains("position(") {
                    out.push("ODK-only XPath functions".to_owned());
                    continue;
                }
                let parsed = if col == "choice_filter" {
                    casebook_domain::expr::parse_choice_filter(text)
                } else {
                    casebook_domain::expr::parse_xpath(text)
                };
                if let Err(errors) = parsed
                    && errors.iter().any(|e| e.message.contains("not supported"))
                {
                    out.push("XPath functions or paths Casebook does not evaluate".to_owned());
                }
            }
        }
        let mut repeat_depth = 0usize;
        for (_, row) in s.data_rows() {
            let raw = t.cell(row, "type");
            match question_type(raw) {
                QType::Unsupported(what) => out.push(what.to_owned()),
                QType::BeginRepeat => {
                    repeat_depth += 1;
                    if repeat_depth > 1 {
                        out.push("nested repeats".to_owned());
                    }
                }
                QType::EndRepeat => repeat_depth = repeat_depth.saturating_sub(1),
                QType::SelectOne(..) | QType::SelectMultiple(..) if raw.contains("${") => {
                    out.push("choices from earlier answers".to_owned());
                }
                _ => {}
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

struct Container {
    kind: ContainerKind,
    name: String,
    row: usize,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum ContainerKind {
    Group,
    Repeat,
}

/// The form's key (`settings` `form_id`), which decides whether an upload is a new version of an
/// existing form.
#[must_use]
pub fn form_key(wb: &Workbook) -> Option<String> {
    let s = wb.sheet("settings")?;
    let t = Table::new(s);
    let (_, row) = s.data_rows().next()?;
    Some(t.cell(row, "form_id").to_owned()).filter(|v| !v.is_empty())
}

/// Reads an XLSForm workbook into a new form version.
///
/// Returns the form (when the sheets could be read far enough to build one) and every problem
/// found. Callers must refuse the upload when the diagnostics contain an error.
#[must_use]
#[allow(clippy::too_many_lines)]
pub fn import(wb: &Workbook, ctx: Context<'_>) -> (Option<ImportedForm>, Diagnostics) {
    let mut d = Diagnostics::default();
    let Some(survey_sheet) = wb.sheet("survey") else {
        let names: Vec<&str> = wb.sheets.iter().map(|s| s.name.as_str()).collect();
        d.error(
            Location::File,
            format!("You must have a sheet named 'survey'. The workbook has: {}.", names.join(", ")),
        );
        return (None, d);
    };
    let survey = Table::new(survey_sheet);
    for s in &wb.sheets {
        let n = s.name.trim().to_ascii_lowercase();
        if !matches!(n.as_str(), "survey" | "choices" | "settings") {
            d.warning(
                sheet(&s.name),
                format!("Sheet '{}' is not part of an XLSForm Casebook reads; it is ignored.", s.name),
            );
        }
    }
    for required in ["type", "name"] {
        if !survey.columns.contains_key(required) {
            d.error(sheet("survey"), format!("The survey sheet must have a '{required}' column."));
        }
    }
    if d.has_errors() {
        return (None, d);
    }

    // Settings.
    let mut settings: HashMap<String, String> = HashMap::new();
    if let Some(s) = wb.sheet("settings") {
        let t = Table::new(s);
        if let Some((_, row)) = s.data_rows().next() {
            for (name, i) in &t.columns {
                if let Some(v) = row.get(*i).filter(|v| !v.is_empty()) {
                    settings.insert(name.clone(), v.trim().to_owned());
                }
            }
        }
    }
    let form_id = settings.get("form_id").cloned().or_else(|| ctx.file_stem.map(str::to_owned)).unwrap_or_default();
    let form_name = settings.get("form_title").cloned().unwrap_or_else(|| form_id.clone());
    if form_name.is_empty() {
        d.error(sheet("settings"), "The form needs a name: set form_title or form_id on the settings sheet.");
    }
    let version_label = settings.get("version").cloned().unwrap_or_else(|| {
        d.warning(sheet("settings"), "No version on the settings sheet; this upload is labelled version '1'.");
        "1".to_owned()
    });
    let default_language = settings.get("default_language").cloned();

    // Choices.
    let mut lists: BTreeMap<String, (usize, Vec<CodeListItem>)> = BTreeMap::new();
    // `${name}` references in texts (labels, hints, messages, media), checked once all names are known.
    let mut piped: Vec<(Location, String)> = Vec::new();
    let allow_dup_choices = settings.get("allow_choice_duplicates").and_then(|v| yes(v)).unwrap_or(false);
    let choices_sheet = wb.sheet("choices");
    if let Some(cs) = choices_sheet {
        let t = Table::new(cs);
        let name_col = if t.columns.contains_key("name") { "name" } else { "value" };
        if !t.columns.contains_key("list_name") {
            d.error(sheet(&cs.name), "The choices sheet must have a 'list_name' column.");
        }
        let mut seen: HashSet<(String, String)> = HashSet::new();
        for (n, row) in cs.data_rows() {
            let list = t.cell(row, "list_name");
            if list.is_empty() {
                continue;
            }
            let value = t.cell(row, name_col);
            if value.is_empty() {
                d.error(
                    at(&cs.name, *n, Some(&t.header_of(name_col))),
                    format!("Choices must have a name (list '{list}')."),
                );
                continue;
            }
            if !seen.insert((list.to_owned(), value.to_owned())) && !allow_dup_choices {
                d.error(
                    at(&cs.name, *n, Some(&t.header_of(name_col))),
                    format!(
                        "Choice names must be unique for each choice list: '{value}' appears twice in list '{list}'."
                    ),
                );
            }
            collect_piped(&t, row, &cs.name, *n, &mut piped);
            let mut label = t.text(row, "label", default_language.as_deref());
            if label.text.is_empty() {
                label.text = value.to_owned();
            }
            let mut extra = BTreeMap::new();
            for (col, i) in &t.columns {
                if matches!(col.as_str(), "list_name" | "name" | "value" | "label")
                    || col.starts_with("label::")
                    || col.starts_with("media::")
                {
                    continue;
                }
                if let Some(v) = row.get(*i).filter(|v| !v.is_empty()) {
                    extra.insert(col.clone(), v.trim().to_owned());
                }
            }
            let entry = lists.entry(list.to_owned()).or_insert((*n, Vec::new()));
            entry.1.push(CodeListItem { value: value.to_owned(), label, extra });
        }
    }

    // Identity and OIDs.
    let taken_outside = ctx.taken.cloned().unwrap_or_default();
    let form_oid = ctx.existing.map_or_else(
        || oid::generate(OidKind::Form, &form_id, |c| taken_outside.contains(c), sequence()),
        |f| f.oid.clone(),
    );
    let mut taken: HashSet<String> = taken_outside.clone();
    let mut random = sequence();
    let version_oid = ctx.existing.and_then(|f| f.version(&version_label)).map_or_else(
        || {
            oid::generate_form_part(
                FormPartKind::Version,
                form_oid.as_str(),
                &form_name,
                &version_label,
                |c| taken.contains(c),
                &mut random,
            )
        },
        |v| v.oid.clone(),
    );
    taken.insert(version_oid.to_string());

    // Survey rows.
    let mut stack: Vec<Container> = Vec::new();
    let mut sections: Vec<Section> = Vec::new();
    let mut groups: Vec<ItemGroup> = Vec::new();
    let mut items: Vec<ItemDef> = Vec::new();
    let mut used_lists: BTreeMap<String, Oid> = BTreeMap::new();
    let mut code_lists: Vec<CodeList> = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut metadata_names: HashSet<String> = HashSet::new();
    let mut groups_and_repeats: HashSet<String> = HashSet::new();
    let mut expression_cells = Vec::new();
    let mut repeat_groups: HashMap<String, String> = HashMap::new(); // repeat name -> group name
    let mut group_in_repeat: HashMap<String, Option<String>> = HashMap::new();
    let mut group_oids: HashMap<String, Oid> = HashMap::new();
    let mut languages: HashSet<String> = HashSet::new();
    let main_section = "main".to_owned();
    let sheet_name = survey_sheet.name.clone();
    if survey.columns.contains_key("value") && survey.columns.contains_key("name") {
        d.error(
            sheet(&sheet_name),
            "The survey sheet has both 'name' and 'value' columns, which are two names for the same column; rename or remove one.",
        );
    }
    let root_name = settings.get("name").cloned().unwrap_or_else(|| "data".to_owned());
    if !valid_name(&root_name) {
        d.error(at("settings", 2, Some("name")), format!("The form name '{root_name}' is invalid. {NAME_RULE}"));
    }
    if let Some(instance_name) = settings.get("instance_name") {
        for r in piped_names(instance_name) {
            piped.push((at("settings", 2, Some("instance_name")), r));
        }
    }

    for col in survey.columns.keys() {
        for base in ["label::", "hint::"] {
            if let Some(l) = col.strip_prefix(base) {
                languages.insert(l.to_owned());
            }
        }
    }

    for (n, row) in survey_sheet.data_rows() {
        let n = *n;
        let loc = |col: &str| at(&sheet_name, n, Some(col));
        let raw_type = survey.cell(row, "type");
        let name = survey.cell(row, "name");
        if raw_type.is_empty() {
            if !name.is_empty() {
                d.error(loc("type"), format!("Question '{name}' has no type."));
            }
            continue;
        }
        let qtype = question_type(raw_type);
        let is_end = matches!(qtype, QType::EndGroup | QType::EndRepeat);
        if !is_end && !matches!(qtype, QType::Metadata) && name.is_empty() {
            d.error(loc("name"), format!("Question or group with no name (type '{raw_type}')."));
            continue;
        }
        if !is_end && !name.is_empty() && !valid_name(name) {
            d.error(loc("name"), format!("The name '{name}' is invalid. {NAME_RULE}"));
            continue;
        }
        if !is_end && name == "meta" {
            d.error(loc("name"), format!("The name '{name}' is reserved for form metadata."));
            continue;
        }
        collect_piped(&survey, row, &sheet_name, n, &mut piped);
        let label = survey.text(row, "label", default_language.as_deref());
        let hint = survey.text(row, "hint", default_language.as_deref());
        let section_name = stack
            .iter()
            .find(|c| c.kind == ContainerKind::Group)
            .map_or_else(|| main_section.clone(), |c| c.name.clone());
        let current_repeat = stack.iter().rev().find(|c| c.kind == ContainerKind::Repeat).map(|c| c.name.clone());

        match qtype {
            QType::BeginGroup | QType::BeginRepeat => {
                let kind =
                    if matches!(qtype, QType::BeginGroup) { ContainerKind::Group } else { ContainerKind::Repeat };
                if kind == ContainerKind::Repeat && name == root_name {
                    d.error(
                        loc("name"),
                        format!("The repeat name '{name}' is the name of the form's root element; choose another."),
                    );
                }
                if kind == ContainerKind::Repeat && current_repeat.is_some() {
                    d.error(
                        loc("type"),
                        format!(
                            "Repeat '{name}' is inside repeat '{}'. Nested repeats are not supported: item groups in CDISC ODM and OpenClinica do not nest.",
                            current_repeat.unwrap_or_default()
                        ),
                    );
                }
                if let Some(prev) = names.insert(name.to_owned(), n) {
                    d.error(
                        loc("name"),
                        format!("The name '{name}' is already used on row {prev}. Questions, groups and repeats must have unique names in a form."),
                    );
                }
                if kind == ContainerKind::Group && stack.is_empty() {
                    sections.push(Section {
                        label: name.to_owned(),
                        title: if label.is_empty() { Text::plain(name) } else { label.clone() },
                        subtitle: None,
                        instructions: None,
                    });
                }
                if kind == ContainerKind::Repeat {
                    let group_name = survey.cell(row, "bind::oc:itemgroup");
                    let group_name = if group_name.is_empty() { name } else { group_name };
                    repeat_groups.insert(name.to_owned(), group_name.to_owned());
                    let count = survey.cell(row, "repeat_count");
                    let count = if count.is_empty() {
                        None
                    } else if let Ok(k) = count.parse::<u32>() {
                        Some((k, None))
                    } else {
                        let e = Expression::xpath(count);
                        expression_cells.push(ExpressionCell {
                            location: loc(&survey.header_of("repeat_count")),
                            owner: name.to_owned(),
                            column: "repeat_count".into(),
                            expression: e.clone(),
                        });
                        Some((1, Some(e)))
                    };
                    let (initial, fixed) = count.unwrap_or((1, None));
                    let relevant = survey.cell(row, "relevant");
                    let relevant = (!relevant.is_empty()).then(|| {
                        let e = Expression::xpath(relevant);
                        expression_cells.push(ExpressionCell {
                            location: loc(&survey.header_of("relevant")),
                            owner: name.to_owned(),
                            column: "relevant".into(),
                            expression: e.clone(),
                        });
                        e
                    });
                    let oid = ctx.existing.and_then(|f| f.group_oid(group_name)).cloned().unwrap_or_else(|| {
                        let o = oid::generate_form_part(
                            FormPartKind::ItemGroup,
                            form_oid.as_str(),
                            &form_name,
                            group_name,
                            |c| taken.contains(c),
                            &mut random,
                        );
                        taken.insert(o.to_string());
                        o
                    });
                    if group_oids.contains_key(group_name) {
                        d.error(loc("bind::oc:itemgroup"), format!("Item group '{group_name}' is used by more than one repeat or outside this repeat; a repeating group belongs to one repeat."));
                    }
                    group_oids.insert(group_name.to_owned(), oid.clone());
                    group_in_repeat.insert(group_name.to_owned(), Some(name.to_owned()));
                    groups.push(ItemGroup {
                        oid,
                        name: group_name.to_owned(),
                        header: label.clone(),
                        repeat: Some(Repeat { initial_rows: initial, max_rows: None, count: fixed.or(None) }),
                        hidden: false,
                        relevant,
                    });
                } else {
                    let relevant = survey.cell(row, "relevant");
                    if !relevant.is_empty() {
                        expression_cells.push(ExpressionCell {
                            location: loc(&survey.header_of("relevant")),
                            owner: name.to_owned(),
                            column: "relevant".into(),
                            expression: Expression::xpath(relevant),
                        });
                    }
                }
                groups_and_repeats.insert(name.to_owned());
                stack.push(Container { kind, name: name.to_owned(), row: n });
                continue;
            }
            QType::EndGroup | QType::EndRepeat => {
                let kind = if matches!(qtype, QType::EndGroup) { ContainerKind::Group } else { ContainerKind::Repeat };
                let what = if kind == ContainerKind::Group { "group" } else { "repeat" };
                match stack.last() {
                    Some(top) if top.kind == kind => {
                        stack.pop();
                    }
                    Some(top) => {
                        let other = if top.kind == ContainerKind::Group { "group" } else { "repeat" };
                        d.error(
                            loc("type"),
                            format!(
                                "Unmatched 'end_{what}': the open container is {other} '{}' (row {}).",
                                top.name, top.row
                            ),
                        );
                        stack.pop();
                    }
                    None => {
                        d.error(loc("type"), format!("Unmatched 'end_{what}'. No matching 'begin_{what}' was found."))
                    }
                }
                continue;
            }
            QType::Metadata => {
                if !name.is_empty() {
                    metadata_names.insert(name.to_owned());
                }
                d.warning(
                    loc("type"),
                    format!("Device metadata '{raw_type}' is not collected by Casebook; the row is ignored."),
                );
                continue;
            }
            QType::Unsupported(what) => {
                d.error(loc("type"), format!("Question type '{raw_type}' is not supported by Casebook ({what})."));
                continue;
            }
            QType::Unknown => {
                d.error(loc("type"), format!("Unknown question type '{raw_type}'."));
                continue;
            }
            _ => {}
        }

        if let Some(prev) = names.insert(name.to_owned(), n) {
            d.error(
                loc("name"),
                format!("The name '{name}' is already used on row {prev}. Item names must be unique in a form (they become OIDs and dataset columns)."),
            );
            continue;
        }

        let (data_type, widget, list) = match &qtype {
            QType::Input(t, w) => (*t, *w, None),
            QType::SelectOne(l, o) => {
                let appearance = survey.cell(row, "appearance").to_ascii_lowercase();
                let w = if appearance.contains("minimal") || appearance.contains("autocomplete") {
                    Widget::SingleSelect
                } else {
                    Widget::Radio
                };
                (DataType::Text, w, Some((l.clone(), *o)))
            }
            QType::SelectMultiple(l, o) => {
                let appearance = survey.cell(row, "appearance").to_ascii_lowercase();
                let w = if appearance.contains("minimal") { Widget::MultiSelect } else { Widget::Checkbox };
                (DataType::Text, w, Some((l.clone(), *o)))
            }
            QType::Calculate => (DataType::Text, Widget::Calculation, None),
            QType::Note => (DataType::Text, Widget::Note, None),
            QType::Acknowledge => (DataType::Text, Widget::Acknowledge, None),
            QType::Hidden => (DataType::Text, Widget::Text, None),
            _ => continue,
        };

        let code_list = match &list {
            None => None,
            Some((list_name, or_other)) => {
                if choices_sheet.is_none() {
                    d.error(
                        loc("type"),
                        format!("There should be a choices sheet in this XLSForm: question '{name}' uses list '{list_name}'."),
                    );
                    None
                } else if let Some((_, options)) = lists.get(list_name) {
                    let key = if *or_other { format!("{list_name} or_other") } else { list_name.clone() };
                    let oid = used_lists.entry(key.clone()).or_insert_with(|| {
                        let base = format!("CL_{}", oid::normalise_key(&format!("{form_id}_{key}"), 30));
                        let mut candidate: String = base.chars().take(40).collect();
                        let mut k = 1;
                        while taken.contains(&candidate) {
                            k += 1;
                            candidate = format!("{}_{k}", &base.chars().take(35).collect::<String>());
                        }
                        taken.insert(candidate.clone());
                        let oid = Oid::parse(&candidate).unwrap_or_else(|_| form_oid.clone());
                        let mut options = options.clone();
                        if *or_other {
                            options.push(CodeListItem {
                                value: "other".into(),
                                label: Text::plain("Other"),
                                extra: BTreeMap::new(),
                            });
                        }
                        code_lists.push(CodeList {
                            oid: oid.clone(),
                            name: key.clone(),
                            data_type: DataType::Text,
                            items: options,
                        });
                        oid
                    });
                    Some(oid.clone())
                } else {
                    d.error(loc("type"), format!("List name not in choices sheet: '{list_name}' (question '{name}')."));
                    None
                }
            }
        };

        // Item group.
        let oc_group = survey.cell(row, "bind::oc:itemgroup");
        let group_name = match (&current_repeat, oc_group.is_empty()) {
            (Some(r), true) => repeat_groups.get(r).cloned().unwrap_or_else(|| r.clone()),
            (Some(r), false) => {
                let expected = repeat_groups.get(r).cloned().unwrap_or_else(|| r.clone());
                if oc_group != expected {
                    d.error(
                        loc(&survey.header_of("bind::oc:itemgroup")),
                        format!("Item '{name}' is in repeat '{r}', whose item group is '{expected}', but names group '{oc_group}'. Items in a repeat must share its group."),
                    );
                }
                expected
            }
            (None, true) => "ungrouped".to_owned(),
            (None, false) => oc_group.to_owned(),
        };
        match group_in_repeat.get(&group_name) {
            Some(Some(r)) if current_repeat.as_deref() != Some(r.as_str()) => {
                d.error(
                    loc(&survey.header_of("bind::oc:itemgroup")),
                    format!("Item group '{group_name}' repeats (repeat '{r}'), so item '{name}' outside that repeat cannot be in it."),
                );
            }
            Some(_) => {}
            None => {
                let oid = ctx.existing.and_then(|f| f.group_oid(&group_name)).cloned().unwrap_or_else(|| {
                    let o = oid::generate_form_part(
                        FormPartKind::ItemGroup,
                        form_oid.as_str(),
                        &form_name,
                        &group_name,
                        |c| taken.contains(c),
                        &mut random,
                    );
                    taken.insert(o.to_string());
                    o
                });
                group_oids.insert(group_name.clone(), oid.clone());
                group_in_repeat.insert(group_name.clone(), None);
                groups.push(ItemGroup {
                    oid,
                    name: group_name.clone(),
                    header: Text::default(),
                    repeat: None,
                    hidden: false,
                    relevant: None,
                });
            }
        }
        let Some(group_oid) = group_oids.get(&group_name).cloned() else { continue };

        let has_calculation = !survey.cell(row, "calculation").is_empty()
            || survey
                .columns
                .iter()
                .any(|(c, i)| (c.starts_with("media::") || c == "image") && row.get(*i).is_some_and(|v| !v.is_empty()));
        if label.is_empty() && hint.is_empty() && !has_calculation && !matches!(qtype, QType::Calculate | QType::Hidden)
        {
            d.error(loc("label"), format!("The question '{name}' has no label or hint."));
        }

        let mut push_expr = |column: &str, text: &str| -> Option<Expression> {
            if text.is_empty() {
                return None;
            }
            let e = Expression::xpath(text);
            expression_cells.push(ExpressionCell {
                location: at(&sheet_name, n, Some(&survey.header_of(column))),
                owner: name.to_owned(),
                column: column.to_owned(),
                expression: e.clone(),
            });
            Some(e)
        };
        let required_text = survey.cell(row, "required");
        let required = match yes(required_text) {
            Some(true) => Required::Yes,
            Some(false) => Required::No,
            None => push_expr("required", required_text).map_or(Required::No, Required::When),
        };
        let relevant = push_expr("relevant", survey.cell(row, "relevant"));
        let calculation = push_expr("calculation", survey.cell(row, "calculation"));
        let default_text = survey.cell(row, "default");
        let dynamic_default = default_text.contains('(') || default_text.contains("${") || default_text.contains('/');
        if matches!(qtype, QType::Calculate) && calculation.is_none() && !dynamic_default {
            d.error(loc("calculation"), format!("Missing calculation for '{name}'."));
        }
        let choice_filter = push_expr("choice_filter", survey.cell(row, "choice_filter"));
        if choice_filter.is_some() && list.as_ref().is_some_and(|(_, or_other)| *or_other) {
            d.error(loc("choice_filter"), format!("Choice filter not supported with or_other (question '{name}')."));
        }
        let has_big_image = survey
            .columns
            .iter()
            .any(|(c, i)| c.starts_with("media::big-image") && row.get(*i).is_some_and(|v| !v.is_empty()));
        let has_image = survey.columns.iter().any(|(c, i)| {
            (c == "image" || c.starts_with("media::image")) && row.get(*i).is_some_and(|v| !v.is_empty())
        });
        if has_big_image && !has_image {
            d.error(loc("media::big-image"), format!("To use big-image, question '{name}' must also have an image."));
        }
        let mut checks = Vec::new();
        if let Some(e) = push_expr("constraint", survey.cell(row, "constraint")) {
            let mut message = survey.text(row, "constraint_message", default_language.as_deref());
            if message.is_empty() {
                message = Text::plain("Value not allowed");
            }
            checks.push(Check { rule: CheckRule::Constraint { expression: e }, message, hard: true });
        }
        let required_message =
            Some(survey.text(row, "required_message", default_language.as_deref())).filter(|t| !t.is_empty());
        let readonly = !matches!(yes(survey.cell(row, "readonly")), Some(false) | None)
            || matches!(qtype, QType::Calculate | QType::Note);
        let default_value = Some(survey.cell(row, "default").to_owned()).filter(|s| !s.is_empty());
        let appearance = Some(survey.cell(row, "appearance").to_owned()).filter(|s| !s.is_empty());
        let external = Some(survey.cell(row, "bind::oc:external").to_owned()).filter(|s| !s.is_empty());
        let mut extra = BTreeMap::new();
        for (col, i) in &survey.columns {
            if (col.starts_with("media::") || col.starts_with("instance::") || col == "image" || col == "parameters")
                && let Some(v) = row.get(*i).filter(|v| !v.is_empty())
            {
                extra.insert(col.clone(), v.trim().to_owned());
            }
        }
        let oid = ctx.existing.and_then(|f| f.item_oid(name)).cloned().unwrap_or_else(|| {
            let o = oid::generate_form_part(
                FormPartKind::Item,
                form_oid.as_str(),
                &form_name,
                name,
                |c| taken.contains(c),
                &mut random,
            );
            taken.insert(o.to_string());
            o
        });
        items.push(ItemDef {
            oid,
            name: name.to_owned(),
            group_oid,
            section: section_name,
            data_type,
            widget,
            length: None,
            decimals: None,
            units: None,
            code_list,
            label,
            hint,
            right_text: None,
            question_number: None,
            header: None,
            subheader: None,
            brief_description: Some(survey.cell(row, "bind::oc:briefdescription").to_owned()).filter(|s| !s.is_empty()),
            description: Some(survey.cell(row, "bind::oc:description").to_owned()).filter(|s| !s.is_empty()),
            phi: false,
            required,
            required_message,
            default_value,
            readonly,
            hidden: matches!(qtype, QType::Hidden),
            checks,
            calculation,
            relevant,
            conditional_display: None,
            choice_filter,
            appearance,
            external,
            extra,
        });
    }
    for (location, r) in piped {
        if metadata_names.contains(&r) {
            d.warning(
                location,
                format!("'{r}' is device metadata, which Casebook does not collect; the reference shows nothing."),
            );
        } else if !names.contains_key(&r) {
            d.error(
                location,
                format!(
                    "Reference variables must contain a name from the survey sheet. Could not find the name '{r}'."
                ),
            );
        }
    }
    for open in stack.iter().rev() {
        let what = if open.kind == ContainerKind::Group { "group" } else { "repeat" };
        d.error(
            at(&sheet_name, open.row, Some("type")),
            format!("Unmatched 'begin_{what}': {what} '{}' is never closed with 'end_{what}'.", open.name),
        );
    }
    if items.is_empty() && !d.has_errors() {
        d.error(sheet(&sheet_name), "The form has no questions.");
    }
    // Sections: `main` first when items use it, then the top-level groups in order.
    if items.iter().any(|i| i.section == main_section) {
        sections.insert(
            0,
            Section {
                label: main_section.clone(),
                title: Text::plain(form_name.clone()),
                subtitle: None,
                instructions: None,
            },
        );
    }
    sections.retain(|s| items.iter().any(|i| i.section == s.label));
    groups.retain(|g| items.iter().any(|i| i.group_oid == g.oid));
    let mut languages: Vec<String> = languages.into_iter().collect();
    languages.sort();

    let version = FormVersion {
        oid: version_oid,
        label: version_label,
        description: None,
        revision_notes: None,
        source: FormSource::XlsForm,
        default_language,
        languages,
        sections,
        groups,
        items,
        code_lists,
    };
    let mut without_value: HashSet<String> = metadata_names;
    without_value.extend(groups_and_repeats);
    crate::design_check::check_expressions(&version, &expression_cells, &without_value, &mut d);
    (Some(ImportedForm { form_name, form_oid, version, expression_cells }), d)
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

/// The names referenced as `${name}` in a text.
fn piped_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        let name = after[..end].trim();
        out.push(name.strip_prefix("last-saved#").unwrap_or(name).to_owned());
        rest = &after[end + 1..];
    }
    out
}

/// Collects `${name}` references from a row's display texts (not its expressions: those are
/// checked by the expression checker).
fn collect_piped(t: &Table, row: &[String], sheet_name: &str, n: usize, out: &mut Vec<(Location, String)>) {
    for (col, i) in &t.columns {
        let base = col.split("::").next().unwrap_or("");
        let is_text = matches!(
            base,
            "label"
                | "hint"
                | "guidance_hint"
                | "constraint_message"
                | "required_message"
                | "media"
                | "image"
                | "audio"
                | "video"
        );
        if !is_text {
            continue;
        }
        if let Some(v) = row.get(*i) {
            for r in piped_names(v) {
                out.push((at(sheet_name, n, Some(t.headers.get(*i).map_or(col.as_str(), String::as_str))), r));
            }
        }
    }
}
