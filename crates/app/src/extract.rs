//! Extracts for analysis as tables, written to a directory: CSV **wide** (one row per
//! participant, OpenClinica's column names `NAME_E<event>[_<repeat>]_C<form>[_<row>]`, reference
//! `openclinica-data-model.md` §12.2), CSV **long** (one row per value) and tab-delimited wide,
//! each with a data dictionary. The data are read a page of participants at a time, as the ODM
//! export reads them, and written as they are read: memory holds one page and one row.
//!
//! What is in it: the participants the user may see (site users: their sites; removed records
//! left out), every form of the design in Production but those hidden from a site user's site,
//! every item of every version of a form (one column whatever the version), PHI items only when
//! asked and allowed. Values are written as stored (canonical text, codes of code lists; the
//! dictionary decodes them), a null flavour in its own column (long) or as the value (wide).
//! Cells are quoted as RFC 4180 asks and otherwise left as they are: an analysis file must hold
//! the data exactly, so no spreadsheet-formula guard is added.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use casebook_domain::design::{FormDef, ItemDef, StudyDesign};
use casebook_domain::role::Permission;
use casebook_store::capture::{FormDataRow, ItemDataRow, ParticipantRow, StudyEventRow};
use casebook_store::export::ExportFilter;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::auth::Principal;
use crate::error::anyhow_like::internal;
use crate::export::scope_sites;
use crate::{App, AppError};

/// Participants read per page.
const PAGE: i64 = 25;

/// A tabular format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    /// Comma-separated, one row per participant.
    CsvWide,
    /// Comma-separated, one row per value.
    CsvLong,
    /// Tab-delimited, one row per participant.
    Tsv,
    /// Excel workbook: the wide table (split across sheets past Excel's rows) and a dictionary sheet.
    Xlsx,
    /// SPSS system file of the wide table, with variable and value labels.
    Spss,
    /// SAS XPORT v5 transport file of the wide table, with a formats program for code lists.
    Sas,
    /// Stata .dta (format 118) of the wide table, with variable and value labels.
    Stata,
    /// The wide table as CSV and an R script that reads it with factors and labels.
    R,
    /// CDISC Dataset-JSON v1.1, one dataset (file) per item group.
    DatasetJson,
    /// Apache Parquet, one file per item group, typed columns.
    Parquet,
    /// CDISC ODM 1.3.2 clinical data.
    Odm13,
    /// CDISC ODM 1.3.2 clinical data with OpenClinica's extensions.
    Odm13Oc,
    /// CDISC ODM 1.3.2 full: the design, AdminData and the clinical data with audit records and
    /// signatures, in one document.
    Odm13Full,
    /// Tab-delimited, one row per value.
    TsvLong,
    /// A format module (templates an administrator added): the wide table through its templates.
    Module,
}

impl TableFormat {
    /// The format by its name (`csv-wide`, `csv-long`, `tsv`).
    ///
    /// # Errors
    /// [`AppError::Validation`] naming the formats there are.
    pub fn parse(name: &str) -> Result<Self, AppError> {
        match name.trim() {
            "csv-wide" | "csv" => Ok(Self::CsvWide),
            "csv-long" => Ok(Self::CsvLong),
            "tsv" => Ok(Self::Tsv),
            "xlsx" => Ok(Self::Xlsx),
            "spss" => Ok(Self::Spss),
            "sas" => Ok(Self::Sas),
            "stata" => Ok(Self::Stata),
            "r" => Ok(Self::R),
            "dataset-json" => Ok(Self::DatasetJson),
            "parquet" => Ok(Self::Parquet),
            "odm13" => Ok(Self::Odm13),
            "odm13-oc" => Ok(Self::Odm13Oc),
            "odm13-full" => Ok(Self::Odm13Full),
            "tsv-long" => Ok(Self::TsvLong),
            other => Err(AppError::invalid(
                "format",
                format!(
                    "'{other}' is not csv-wide, csv-long, tsv, tsv-long, xlsx, spss, sas, stata, r, dataset-json, parquet, odm13, odm13-oc or odm13-full"
                ),
            )),
        }
    }

    /// The format's name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::CsvWide => "csv-wide",
            Self::CsvLong => "csv-long",
            Self::Tsv => "tsv",
            Self::Xlsx => "xlsx",
            Self::Spss => "spss",
            Self::Sas => "sas",
            Self::Stata => "stata",
            Self::R => "r",
            Self::DatasetJson => "dataset-json",
            Self::Parquet => "parquet",
            Self::Odm13 => "odm13",
            Self::Odm13Oc => "odm13-oc",
            Self::Odm13Full => "odm13-full",
            Self::TsvLong => "tsv-long",
            Self::Module => "module",
        }
    }

    fn delimiter(self) -> char {
        if matches!(self, Self::Tsv | Self::TsvLong) { '\t' } else { ',' }
    }

    /// The dictionary's extension (text formats: the table's).
    fn extension(self) -> &'static str {
        if matches!(self, Self::Tsv | Self::TsvLong) { "tsv" } else { "csv" }
    }

    /// A binary file of typed columns (values only; null flavours are missing values there).
    fn typed(self) -> bool {
        matches!(self, Self::Xlsx | Self::Spss | Self::Sas | Self::Stata)
    }
}

/// Which forms an extract takes by their status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FormStatusFilter {
    /// Complete forms only.
    Complete,
    /// Forms not complete only.
    NotComplete,
    /// Both.
    #[default]
    Both,
}

/// A dataset definition: what an extract holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetDefinition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Event OIDs; empty: every event.
    #[serde(default)]
    pub events: Vec<String>,
    /// Item OIDs; empty: every item.
    #[serde(default)]
    pub items: Vec<String>,
    #[serde(default)]
    pub form_status: FormStatusFilter,
    /// Items marked PHI too (for users allowed to see them).
    #[serde(default)]
    pub include_phi: bool,
    /// Participant columns besides the ID and OID, of `site`, `status`, `sex`, `date_of_birth`,
    /// `enrolment_date`, `secondary_id`, `group`; `None`: all but `group`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant_columns: Option<Vec<String>>,
    /// Event columns, of `start_date`, `end_date`, `status`, `location`, `age_at_event`;
    /// `None`: `start_date` and `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_columns: Option<Vec<String>>,
    /// Form columns, of `version`, `status`; `None`: both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form_columns: Option<Vec<String>>,
    /// Only event occurrences starting on or after this date (`YYYY-MM-DD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_from: Option<String>,
    /// Only event occurrences starting on or before this date (`YYYY-MM-DD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_to: Option<String>,
    /// Only participants with a change after this time (set by a run, not saved with a dataset).
    #[serde(skip)]
    pub changed_since: Option<time::OffsetDateTime>,
}

/// A saved dataset version as clients see it.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetView {
    pub name: String,
    pub version: i32,
    pub definition: DatasetDefinition,
    pub created_by: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: time::OffsetDateTime,
}

/// One file an extract wrote.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ExtractedFile {
    pub name: String,
    pub bytes: u64,
    /// Hex SHA-256 of the file.
    pub sha256: String,
}

/// What an extract wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExtractOutcome {
    pub format: &'static str,
    pub participants: usize,
    pub values: usize,
    /// The data table, then the dictionary.
    pub files: Vec<ExtractedFile>,
    /// The PHI items left out (the user may not see them, or did not ask).
    pub phi_left_out: Vec<String>,
}

/// A file being written, hashed and counted as it goes.
struct HashedFile {
    out: std::io::BufWriter<std::fs::File>,
    hash: Sha256,
    bytes: u64,
    name: String,
    delimiter: char,
}

impl HashedFile {
    fn create(dir: &Path, name: String, delimiter: char) -> Result<Self, AppError> {
        let path: PathBuf = dir.join(&name);
        let file = std::fs::File::create(&path)
            .map_err(|e| crate::error::anyhow_like::msg(format!("creating {}: {e}", path.display())))?;
        Ok(Self { out: std::io::BufWriter::new(file), hash: Sha256::new(), bytes: 0, name, delimiter })
    }

    fn row<S: AsRef<str>>(&mut self, cells: &[S]) -> Result<(), AppError> {
        let mut line = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                line.push(self.delimiter);
            }
            line.push_str(&quote(c.as_ref(), self.delimiter));
        }
        line.push_str("\r\n");
        self.hash.update(line.as_bytes());
        self.bytes += line.len() as u64;
        self.out.write_all(line.as_bytes()).map_err(internal)
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<(), AppError> {
        self.hash.update(bytes);
        self.bytes += bytes.len() as u64;
        self.out.write_all(bytes).map_err(internal)
    }

    fn finish(mut self) -> Result<ExtractedFile, AppError> {
        self.out.flush().map_err(internal)?;
        Ok(ExtractedFile { name: self.name, bytes: self.bytes, sha256: hex::encode(self.hash.finalize()) })
    }
}

/// Where the data table goes: a text file, or one of the typed formats' writers.
enum DataSink {
    Text(HashedFile),
    Xlsx(Box<casebook_formats::table_xlsx::XlsxWriter<std::io::BufWriter<std::fs::File>>>, String),
    Spss(casebook_formats::table::spss_sav::SavWriter<std::io::BufWriter<std::fs::File>>, String),
    Sas(casebook_formats::table::sas_xpt::XptWriter<std::io::BufWriter<std::fs::File>>, String),
    Stata(casebook_formats::table::stata_dta::DtaWriter<std::io::BufWriter<std::fs::File>>, String),
    Module(Box<crate::modules::ModuleRenderer>, HashedFile, Vec<String>),
}

fn typed_error(e: impl std::fmt::Display) -> AppError {
    AppError::Rejected {
        code: "extract_value",
        message: format!("a value does not fit its column's type: {e}"),
        details: serde_json::Value::Null,
    }
}

/// Size and SHA-256 of a file written by a typed writer (read back once).
fn hashed(dir: &Path, name: &str) -> Result<ExtractedFile, AppError> {
    use std::io::Read;
    let path = dir.join(name);
    let mut f = std::fs::File::open(&path).map_err(internal)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(internal)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok(ExtractedFile { name: name.to_owned(), bytes, sha256: hex::encode(hash.finalize()) })
}

impl DataSink {
    /// The typed writer for `format` over the wide table's columns.
    fn typed(
        format: TableFormat,
        dir: &Path,
        base: &str,
        w: &Wide,
        created: time::OffsetDateTime,
    ) -> Result<Self, AppError> {
        use casebook_formats::{table, table_model};
        let ext = match format {
            TableFormat::Xlsx => "xlsx",
            TableFormat::Spss => "sav",
            TableFormat::Sas => "xpt",
            _ => "dta",
        };
        let name = format!("{base}.{ext}");
        let file = std::fs::File::create(dir.join(&name)).map_err(internal)?;
        let out = std::io::BufWriter::new(file);
        if format == TableFormat::Xlsx {
            let kind = Kind::model;
            let spec = table_model::TableSpec {
                name: base.to_owned(),
                label: base.to_owned(),
                columns: w
                    .names
                    .iter()
                    .zip(&w.info)
                    .map(|(n, c)| table_model::ColumnSpec {
                        name: n.clone(),
                        label: c.label.clone(),
                        kind: kind(c.kind),
                        value_labels: c.value_labels.clone(),
                    })
                    .collect(),
            };
            let writer = casebook_formats::table_xlsx::XlsxWriter::new(
                out,
                spec,
                casebook_formats::table_xlsx::XlsxOptions::default(),
            )
            .map_err(typed_error)?;
            return Ok(Self::Xlsx(Box::new(writer), name));
        }
        let kind = Kind::stat;
        // Text columns are fixed-width in these formats: an item's declared length, else a
        // width every value of a form field fits in practice (SAS's limit is 200; Stata's
        // classic str244, not its 2045, which would make every row 2 KB a text column).
        let max_text: u16 = match format {
            TableFormat::Sas => 200,
            TableFormat::Spss => 255,
            _ => 244,
        };
        let spec = table::TableSpec {
            name: base.to_owned(),
            label: base.to_owned(),
            columns: w
                .names
                .iter()
                .zip(&w.info)
                .map(|(n, c)| {
                    let mut col = table::ColumnSpec::new(n, &c.label, kind(c.kind));
                    col.value_labels.clone_from(&c.value_labels);
                    col.width = Some(c.width.unwrap_or(max_text).min(max_text));
                    col
                })
                .collect(),
            created,
        };
        Ok(match format {
            TableFormat::Spss => Self::Spss(table::spss_sav::SavWriter::new(out, spec).map_err(typed_error)?, name),
            TableFormat::Sas => Self::Sas(table::sas_xpt::XptWriter::new(out, spec).map_err(typed_error)?, name),
            _ => Self::Stata(table::stata_dta::DtaWriter::new(out, spec).map_err(typed_error)?, name),
        })
    }

    /// The short names a typed format gave the columns (`None`: the names as they are).
    fn short_names(&self) -> Option<Vec<String>> {
        match self {
            Self::Spss(w, _) => Some(w.long_names().to_vec()),
            Self::Sas(w, _) => Some(w.names().to_vec()),
            Self::Stata(w, _) => Some(w.names().to_vec()),
            Self::Text(_) | Self::Xlsx(..) | Self::Module(..) => None,
        }
    }

    fn row<S: AsRef<str>>(&mut self, cells: &[S]) -> Result<(), AppError> {
        let typed: Vec<Option<&str>> = cells.iter().map(|c| Some(c.as_ref()).filter(|c| !c.is_empty())).collect();
        match self {
            Self::Text(f) => f.row(cells),
            Self::Module(r, f, names) => {
                let row: serde_json::Map<String, serde_json::Value> = names
                    .iter()
                    .zip(cells)
                    .map(|(n, c)| (n.clone(), serde_json::Value::String(c.as_ref().to_owned())))
                    .collect();
                let cell = |i: usize| cells.get(i).map_or("", AsRef::as_ref).to_owned();
                let named = |n: &str| row.get(n).cloned().unwrap_or(serde_json::Value::String(String::new()));
                let participant = serde_json::json!({
                    "label": cell(0), "oid": cell(1), "site": named("Site"), "status": named("Status"),
                });
                let text = r.row(serde_json::json!({
                    "row": row,
                    "cells": cells.iter().map(|c| c.as_ref().to_owned()).collect::<Vec<_>>(),
                    "participant": participant,
                }))?;
                f.raw(text.as_bytes())
            }
            Self::Xlsx(w, _) => w.row(&typed).map_err(typed_error),
            Self::Spss(w, _) => w.row(&typed).map_err(typed_error),
            Self::Sas(w, _) => w.row(&typed).map_err(typed_error),
            Self::Stata(w, _) => w.row(&typed).map_err(typed_error),
        }
    }

    fn finish(self, dir: &Path, dictionary_sheet: Vec<Vec<String>>) -> Result<ExtractedFile, AppError> {
        use std::io::Write as _;
        let name = match self {
            Self::Text(f) => return f.finish(),
            Self::Module(r, mut f, _) => {
                f.raw(r.footer()?.as_bytes())?;
                return f.finish();
            }
            Self::Xlsx(mut w, name) => {
                w.add_sheet("dictionary", &dictionary_sheet).map_err(typed_error)?;
                w.finish().map_err(typed_error)?.flush().map_err(internal)?;
                name
            }
            Self::Spss(w, name) => {
                w.finish().map_err(typed_error)?.flush().map_err(internal)?;
                name
            }
            Self::Sas(w, name) => {
                w.finish().map_err(typed_error)?.flush().map_err(internal)?;
                name
            }
            Self::Stata(w, name) => {
                w.finish().map_err(typed_error)?.flush().map_err(internal)?;
                name
            }
        };
        hashed(dir, &name)
    }
}

/// A cell as RFC 4180 asks (quoted when it holds the delimiter, a quote or a line break).
fn quote(s: &str, delimiter: char) -> String {
    if s.contains(delimiter) || s.contains(['"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// The items of a form across its versions, in the order they first appear.
fn form_items(form: &FormDef) -> Vec<&ItemDef> {
    let mut out: Vec<&ItemDef> = Vec::new();
    for v in &form.versions {
        for i in &v.items {
            if !out.iter().any(|x| x.oid == i.oid) {
                out.push(i);
            }
        }
    }
    out
}

/// Whether an item's group repeats (in any version).
fn repeating_group(form: &FormDef, group_oid: &str) -> bool {
    form.versions.iter().flat_map(|v| v.groups.iter()).any(|g| g.oid.as_str() == group_oid && g.is_repeating())
}

/// Attribute columns of an event or form: (column index, attribute name).
type AttributeColumns = Vec<(usize, &'static str)>;

/// Where a value goes in the wide table.
type Slot = (String, i32, String, String, i32, String);

/// The wide table's columns: the participant's, then per event occurrence its own and per form
/// its own and its items'.
struct Wide {
    names: Vec<String>,
    /// Per column: its label, kind, value labels and text width (typed formats).
    info: Vec<ColumnInfo>,
    /// Item values by their place.
    items: HashMap<Slot, usize>,
    /// Event start and status by (event, repeat).
    /// Event attribute columns by (event, repeat): (column, attribute).
    events: HashMap<(String, i32), AttributeColumns>,
    /// Form version and status by (event, repeat, form).
    /// Form attribute columns by (event, repeat, form): (column, attribute).
    forms: HashMap<(String, i32, String), AttributeColumns>,
    /// Dictionary rows: column, event, form, item.
    dictionary: Vec<(String, String, String, ItemDef)>,
}

/// What a typed column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Integer,
    Decimal,
    Date,
    DateTime,
    Time,
}

impl Kind {
    /// The kind in the model of the xlsx, Dataset-JSON and Parquet writers.
    fn model(self) -> casebook_formats::table_model::ColumnKind {
        use casebook_formats::table_model::ColumnKind as K;
        match self {
            Self::Text => K::Text,
            Self::Integer => K::Integer,
            Self::Decimal => K::Decimal,
            Self::Date => K::Date,
            Self::DateTime => K::DateTime,
            Self::Time => K::Time,
        }
    }

    /// The kind in the model of the SAS, SPSS and Stata writers.
    fn stat(self) -> casebook_formats::table::ColumnKind {
        use casebook_formats::table::ColumnKind as K;
        match self {
            Self::Text => K::Text,
            Self::Integer => K::Integer,
            Self::Decimal => K::Decimal,
            Self::Date => K::Date,
            Self::DateTime => K::DateTime,
            Self::Time => K::Time,
        }
    }
}

/// A wide column as the typed formats describe it.
#[derive(Debug, Clone)]
struct ColumnInfo {
    label: String,
    kind: Kind,
    value_labels: Vec<(String, String)>,
    width: Option<u16>,
}

impl ColumnInfo {
    fn plain(label: &str, kind: Kind) -> Self {
        Self { label: label.to_owned(), kind, value_labels: Vec::new(), width: None }
    }

    fn of_item(form: &FormDef, item: &ItemDef) -> Self {
        use casebook_domain::design::DataType as D;
        let multi = matches!(
            item.widget,
            casebook_domain::design::Widget::Checkbox | casebook_domain::design::Widget::MultiSelect
        );
        let kind = match item.data_type {
            D::Integer if !multi => Kind::Integer,
            D::Real if !multi => Kind::Decimal,
            D::Date => Kind::Date,
            D::DateTime => Kind::DateTime,
            D::Time => Kind::Time,
            _ => Kind::Text,
        };
        let value_labels = item
            .code_list
            .as_ref()
            .and_then(|oid| form.versions.iter().rev().flat_map(|v| v.code_lists.iter()).find(|c| &c.oid == oid))
            .map(|c| c.items.iter().map(|i| (i.value.clone(), i.label.text.clone())).collect())
            .unwrap_or_default();
        let label = if item.label.text.is_empty() { item.name.clone() } else { item.label.text.clone() };
        let width = item.length.and_then(|l| u16::try_from(l).ok()).filter(|l| *l > 0).map(|l| l.min(2000));
        Self { label, kind, value_labels, width }
    }
}

/// Participant attributes: (dataset name, column name, kind), in column order.
const PARTICIPANT_ATTRIBUTES: [(&str, &str, Kind); 7] = [
    ("site", "Site", Kind::Text),
    ("status", "Status", Kind::Text),
    ("sex", "Sex", Kind::Text),
    ("date_of_birth", "DateOfBirth", Kind::Text),
    ("enrolment_date", "EnrolmentDate", Kind::Date),
    ("secondary_id", "SecondaryID", Kind::Text),
    ("group", "Group", Kind::Text),
];
/// Event attributes: (dataset name, column prefix, label, kind).
const EVENT_ATTRIBUTES: [(&str, &str, &str, Kind); 5] = [
    ("start_date", "StartDate", "start date", Kind::Date),
    ("end_date", "EndDate", "end date", Kind::Date),
    ("status", "EventStatus", "status", Kind::Text),
    ("location", "Location", "location", Kind::Text),
    ("age_at_event", "AgeAtEvent", "age at the event (years)", Kind::Integer),
];
/// Form attributes: (dataset name, column prefix, label).
const FORM_ATTRIBUTES: [(&str, &str, &str); 2] =
    [("version", "CRFVersion", "version"), ("status", "CRFStatus", "status")];

/// The attribute columns a dataset asks for.
struct Attributes {
    participant: Vec<&'static str>,
    event: Vec<&'static str>,
    form: Vec<&'static str>,
}

impl Attributes {
    fn of(d: &DatasetDefinition) -> Self {
        let pick = |asked: &Option<Vec<String>>, all: &[&'static str], default: &[&'static str]| -> Vec<&'static str> {
            match asked {
                None => default.to_vec(),
                Some(list) => all.iter().copied().filter(|a| list.iter().any(|x| x == a)).collect(),
            }
        };
        let p_all: Vec<&'static str> = PARTICIPANT_ATTRIBUTES.iter().map(|a| a.0).collect();
        let e_all: Vec<&'static str> = EVENT_ATTRIBUTES.iter().map(|a| a.0).collect();
        let f_all: Vec<&'static str> = FORM_ATTRIBUTES.iter().map(|a| a.0).collect();
        Self {
            participant: pick(&d.participant_columns, &p_all, &p_all[..6]),
            event: pick(&d.event_columns, &e_all, &["start_date", "status"]),
            form: pick(&d.form_columns, &f_all, &f_all),
        }
    }
}

/// The unknown attribute names of a dataset, as field errors.
fn attribute_errors(d: &DatasetDefinition) -> Vec<casebook_domain::FieldError> {
    let mut out = Vec::new();
    let known_p: Vec<&str> = PARTICIPANT_ATTRIBUTES.iter().map(|a| a.0).collect();
    let known_e: Vec<&str> = EVENT_ATTRIBUTES.iter().map(|a| a.0).collect();
    let known_f: Vec<&str> = FORM_ATTRIBUTES.iter().map(|a| a.0).collect();
    for (field, asked, known) in [
        ("participant_columns", &d.participant_columns, &known_p),
        ("event_columns", &d.event_columns, &known_e),
        ("form_columns", &d.form_columns, &known_f),
    ] {
        for (i, a) in asked.iter().flatten().enumerate() {
            if !known.contains(&a.as_str()) {
                out.push(casebook_domain::FieldError::new(
                    format!("{field}[{i}]"),
                    format!("'{a}' is not one of {}", known.join(", ")),
                ));
            }
        }
    }
    for (field, v) in [("start_from", &d.start_from), ("start_to", &d.start_to)] {
        if let Some(v) = v
            && iso_date(v).is_none()
        {
            out.push(casebook_domain::FieldError::new(field, format!("'{v}' is not a date YYYY-MM-DD")));
        }
    }
    if let (Some(a), Some(b)) = (d.start_from.as_deref().and_then(iso_date), d.start_to.as_deref().and_then(iso_date))
        && b < a
    {
        out.push(casebook_domain::FieldError::new("start_to", "is before start_from"));
    }
    out
}

fn iso_date(s: &str) -> Option<time::Date> {
    time::Date::parse(s.trim(), time::macros::format_description!("[year]-[month]-[day]")).ok()
}

/// Whole years from a date of birth (`YYYY-MM-DD`, or a year) to a date.
fn age_at(dob: &str, at: time::Date) -> Option<i32> {
    if let Ok(d) = time::Date::parse(dob, time::macros::format_description!("[year]-[month]-[day]")) {
        let mut years = at.year() - d.year();
        if (at.month() as u8, at.day()) < (d.month() as u8, d.day()) {
            years -= 1;
        }
        return Some(years);
    }
    dob.parse::<i32>().ok().map(|y| at.year() - y)
}

fn wide_columns(
    design: &StudyDesign,
    shape: &casebook_store::export::DataShape,
    included: &dyn Fn(&str, &ItemDef) -> bool,
    attrs: &Attributes,
) -> Wide {
    let chosen: Vec<&(&str, &str, Kind)> =
        PARTICIPANT_ATTRIBUTES.iter().filter(|a| attrs.participant.contains(&a.0)).collect();
    let mut names: Vec<String> = vec!["SubjectID".to_owned(), "SubjectOID".to_owned()];
    let mut info = vec![ColumnInfo::plain("SubjectID", Kind::Text), ColumnInfo::plain("SubjectOID", Kind::Text)];
    for (_, column, kind) in chosen {
        names.push((*column).to_owned());
        info.push(ColumnInfo::plain(column, *kind));
    }
    let mut w = Wide {
        names,
        info,
        items: HashMap::new(),
        events: HashMap::new(),
        forms: HashMap::new(),
        dictionary: Vec::new(),
    };
    for (e_pos, def) in design.events.iter().enumerate() {
        let Some(&(_, max_repeat)) = shape.0.iter().find(|(e, _)| e == def.oid.as_str()) else { continue };
        for repeat in 1..=max_repeat {
            let se = if def.repeating { format!("E{}_{repeat}", e_pos + 1) } else { format!("E{}", e_pos + 1) };
            let mut cols = Vec::new();
            for (attr, prefix, label, kind) in EVENT_ATTRIBUTES.iter().filter(|a| attrs.event.contains(&a.0)) {
                cols.push((w.names.len(), *attr));
                w.names.push(format!("{prefix}_{se}"));
                w.info.push(ColumnInfo::plain(&format!("{} {repeat}: {label}", def.name), *kind));
            }
            w.events.insert((def.oid.to_string(), repeat), cols);
            for (c_pos, ef) in def.forms.iter().enumerate() {
                let Some(form) = design.form(ef.form_oid.as_str()) else { continue };
                let sc = format!("{se}_C{}", c_pos + 1);
                let mut cols = Vec::new();
                for (attr, prefix, label) in FORM_ATTRIBUTES.iter().filter(|a| attrs.form.contains(&a.0)) {
                    cols.push((w.names.len(), *attr));
                    w.names.push(format!("{prefix}_{sc}"));
                    w.info.push(ColumnInfo::plain(&format!("{}: {label}", form.name), Kind::Text));
                }
                w.forms.insert((def.oid.to_string(), repeat, form.oid.to_string()), cols);
                for item in form_items(form) {
                    if !included(form.oid.as_str(), item) {
                        continue;
                    }
                    let rows = if repeating_group(form, item.group_oid.as_str()) {
                        shape
                            .1
                            .iter()
                            .find(|(e, f, g, _)| {
                                e == def.oid.as_str() && f == form.oid.as_str() && g == item.group_oid.as_str()
                            })
                            .map_or(1, |x| x.3.max(1))
                    } else {
                        0
                    };
                    for row in if rows == 0 { 1..=1 } else { 1..=rows } {
                        let name = if rows == 0 {
                            format!("{}_{sc}", item.name.to_ascii_uppercase())
                        } else {
                            format!("{}_{sc}_{row}", item.name.to_ascii_uppercase())
                        };
                        w.items.insert(
                            (
                                def.oid.to_string(),
                                repeat,
                                form.oid.to_string(),
                                item.group_oid.to_string(),
                                row,
                                item.oid.to_string(),
                            ),
                            w.names.len(),
                        );
                        w.dictionary.push((name.clone(), def.oid.to_string(), form.oid.to_string(), item.clone()));
                        w.info.push(ColumnInfo::of_item(form, item));
                        w.names.push(name);
                    }
                }
            }
        }
    }
    w
}

/// A dictionary row's decoded code list (`code=label; …`), from the newest version that has it.
fn decode_list(form: Option<&FormDef>, item: &ItemDef) -> String {
    let Some(list_oid) = &item.code_list else { return String::new() };
    form.into_iter()
        .flat_map(|f| f.versions.iter().rev())
        .flat_map(|v| v.code_lists.iter())
        .find(|c| &c.oid == list_oid)
        .map(|c| c.items.iter().map(|i| format!("{}={}", i.value, i.label.text)).collect::<Vec<_>>().join("; "))
        .unwrap_or_default()
}

impl App {
    /// Writes a study's (or one site's) data as a table and its dictionary into `dir`.
    ///
    /// # Errors
    /// [`AppError::NotFound`] for an unknown or invisible study or site;
    /// [`AppError::Forbidden`] without the extract permission; a failure writing the files.
    pub async fn extract_tables(
        &self,
        who: &Principal,
        study_or_site_oid: &str,
        format: TableFormat,
        selection: &DatasetDefinition,
        dir: &Path,
    ) -> Result<ExtractOutcome, AppError> {
        self.extract_tables_for(who, study_or_site_oid, format, None, selection, dir, None).await
    }

    /// The format modules there are (built in and added), and the problems of those left out.
    #[must_use]
    pub fn format_modules(&self) -> (Vec<crate::modules::FormatModule>, Vec<String>) {
        crate::modules::load_modules(self.extracts.modules.as_deref())
    }

    /// [`Self::extract_tables`] by format name: a built-in format or a module's.
    ///
    /// # Errors
    /// As [`Self::extract_tables`]; [`AppError::Validation`] for a name that is neither (with
    /// the problems of a module that was left out).
    pub async fn extract_named(
        &self,
        who: &Principal,
        study_or_site_oid: &str,
        format: &str,
        selection: &DatasetDefinition,
        dir: &Path,
    ) -> Result<ExtractOutcome, AppError> {
        match self.resolve_format(format)? {
            (f, None) => self.extract_tables_for(who, study_or_site_oid, f, None, selection, dir, None).await,
            (f, Some(m)) => self.extract_tables_for(who, study_or_site_oid, f, Some(&m), selection, dir, None).await,
        }
    }

    /// A built-in format, or a module by its name.
    fn resolve_format(&self, name: &str) -> Result<(TableFormat, Option<crate::modules::FormatModule>), AppError> {
        if let Ok(f) = TableFormat::parse(name) {
            return Ok((f, None));
        }
        let (modules, problems) = self.format_modules();
        match modules.into_iter().find(|m| m.manifest.name == name.trim()) {
            Some(m) => Ok((TableFormat::Module, Some(m))),
            None => {
                let mut message = format!(
                    "'{name}' is not csv-wide, csv-long, tsv, tsv-long, xlsx, spss, sas, stata, r, dataset-json, parquet, odm13, odm13-oc, odm13-full or a format module"
                );
                if !problems.is_empty() {
                    message.push_str(&format!(" (modules left out: {})", problems.join("; ")));
                }
                Err(AppError::invalid("format", message))
            }
        }
    }

    /// [`Self::extract_tables`], recording the participants written in run `run` after each page.
    #[allow(clippy::too_many_lines, clippy::too_many_arguments)]
    async fn extract_tables_for(
        &self,
        who: &Principal,
        study_or_site_oid: &str,
        format: TableFormat,
        module: Option<&crate::modules::FormatModule>,
        selection: &DatasetDefinition,
        dir: &Path,
        run: Option<&str>,
    ) -> Result<ExtractOutcome, AppError> {
        let include_phi = selection.include_phi;
        let event_selected = |e: &str| selection.events.is_empty() || selection.events.iter().any(|x| x == e);
        let in_range = |e: &StudyEventRow| {
            let start = e.start_at.map(|t| t.date());
            match (selection.start_from.as_deref().and_then(iso_date), selection.start_to.as_deref().and_then(iso_date))
            {
                (None, None) => true,
                (from, to) => start.is_some_and(|d| from.is_none_or(|f| d >= f) && to.is_none_or(|t| d <= t)),
            }
        };
        let status_selected = |status: &str| match selection.form_status {
            FormStatusFilter::Both => true,
            FormStatusFilter::Complete => status == "complete",
            FormStatusFilter::NotComplete => status != "complete",
        };
        let (target, study) = self.study_or_site(study_or_site_oid).await?;
        let (study, access) = self.study_with_access(who, &study.oid).await?;
        let sites = self.store().sites_of(study.id).await?;
        let may = Self::may_extract(&access, &study, &sites);
        if !may {
            return Err(AppError::Forbidden("extract data in this study"));
        }
        let site_ids = scope_sites(&target, &access)?;
        let site_user = !access.study_wide();
        let phi_allowed = include_phi && access.can_study(Permission::ManageStudy);
        let design = match self.production_design_opt(study.id).await? {
            Some((_, d)) => d,
            None => std::sync::Arc::new(StudyDesign::default()),
        };
        let filter = ExportFilter {
            study_id: study.id,
            site_ids,
            participant_id: None,
            changed_since: selection.changed_since,
            include_removed: false,
        };
        let mut phi_left_out: Vec<String> = Vec::new();
        for f in &design.forms {
            for i in form_items(f) {
                if i.phi && !phi_allowed && !phi_left_out.contains(&i.oid.to_string()) {
                    phi_left_out.push(i.oid.to_string());
                }
            }
        }
        let included = |_form: &str, item: &ItemDef| {
            (!item.phi || phi_allowed)
                && (selection.items.is_empty() || selection.items.iter().any(|x| x == item.oid.as_str()))
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| crate::error::anyhow_like::msg(format!("creating {}: {e}", dir.display())))?;
        let base = format!("{}_{}", study.oid, module.map_or(format.name(), |m| m.manifest.name.as_str()));
        if matches!(format, TableFormat::Odm13 | TableFormat::Odm13Oc | TableFormat::Odm13Full) {
            let full = format == TableFormat::Odm13Full;
            let req = crate::export::ClinicalExport {
                openclinica: format == TableFormat::Odm13Oc,
                audit_records: full,
                signatures: full,
                ..Default::default()
            };
            let mut file = HashedFile::create(dir, format!("{base}.xml"), ',')?;
            let mut failed = None;
            let sink = |chunk: Vec<u8>| {
                if failed.is_none()
                    && let Err(e) = file.raw(&chunk)
                {
                    failed = Some(e);
                }
                std::future::ready(failed.is_none())
            };
            let count = if full {
                self.export_full(who, study_or_site_oid, &req, sink).await?
            } else {
                self.export_clinical(who, study_or_site_oid, &req, sink).await?
            };
            if let Some(e) = failed {
                return Err(e);
            }
            return Ok(ExtractOutcome {
                format: format.name(),
                participants: count.participants,
                values: count.values,
                files: vec![file.finish()?],
                phi_left_out: Vec::new(),
            });
        }
        let mut dictionary =
            HashedFile::create(dir, format!("{base}_dictionary.{}", format.extension()), format.delimiter())?;
        let site_oid_of = |id: i64| sites.iter().find(|s| s.id == id).map_or(study.oid.clone(), |s| s.oid.clone());
        let hidden = |p: &ParticipantRow, event_oid: &str, form_oid: &str| {
            site_user
                && design
                    .event(event_oid)
                    .and_then(|d| d.forms.iter().find(|x| x.form_oid.as_str() == form_oid))
                    .is_some_and(|x| x.hidden_at(Some(&site_oid_of(p.site_id))))
        };

        if matches!(format, TableFormat::DatasetJson | TableFormat::Parquet) {
            return self
                .extract_dataset_json(
                    format == TableFormat::Parquet,
                    &study,
                    &design,
                    &filter,
                    dir,
                    &base,
                    &|form, item| included(form, item),
                    &|e| event_selected(e),
                    &|st| status_selected(st),
                    &|p, e, f| hidden(p, e, f),
                    phi_left_out,
                )
                .await;
        }
        let wide = if matches!(format, TableFormat::CsvLong | TableFormat::TsvLong) {
            None
        } else {
            let mut shape = self.store().extract_shape(&filter).await?;
            shape.0.retain(|(e, _)| event_selected(e));
            Some(wide_columns(&design, &shape, &included, &Attributes::of(selection)))
        };
        let mut data = match (&wide, module) {
            (Some(w), Some(m)) => {
                let stamp = self
                    .store()
                    .clock()
                    .now()
                    .format(&time::format_description::well_known::Rfc3339)
                    .map_err(internal)?;
                let columns: Vec<serde_json::Value> = w
                    .names
                    .iter()
                    .zip(&w.info)
                    .map(|(n, c)| {
                        let item = w.dictionary.iter().find(|d| &d.0 == n).map(|d| d.3.oid.to_string());
                        let labels: serde_json::Map<String, serde_json::Value> = c
                            .value_labels
                            .iter()
                            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                            .collect();
                        serde_json::json!({
                            "name": n, "label": c.label, "kind": format!("{:?}", c.kind).to_lowercase(),
                            "item_oid": item, "value_labels": labels,
                        })
                    })
                    .collect();
                let renderer = crate::modules::ModuleRenderer::new(
                    m,
                    serde_json::json!({
                        "study": {"oid": study.oid, "name": study.name},
                        "columns": columns,
                        "extracted_at": stamp,
                    }),
                )?;
                let mut file = HashedFile::create(dir, format!("{base}.{}", m.manifest.extension), ',')?;
                file.raw(renderer.header()?.as_bytes())?;
                DataSink::Module(Box::new(renderer), file, w.names.clone())
            }
            (Some(w), None) if format.typed() => DataSink::typed(format, dir, &base, w, self.store().clock().now())?,
            _ => DataSink::Text(HashedFile::create(dir, format!("{base}.{}", format.extension()), format.delimiter())?),
        };
        let module_sink = matches!(data, DataSink::Module(..));
        let mut sheet: Vec<Vec<String>> = Vec::new();
        match &wide {
            Some(w) => {
                if !format.typed() && !module_sink {
                    data.row(&w.names)?;
                }
                let short = data.short_names();
                let header = [
                    "Column",
                    "ShortName",
                    "ItemOID",
                    "ItemName",
                    "Question",
                    "DataType",
                    "Units",
                    "CodeList",
                    "EventOID",
                    "FormOID",
                    "PHI",
                ];
                dictionary.row(&header)?;
                sheet.push(header.iter().map(|h| (*h).to_owned()).collect());
                for (column, event, form, item) in &w.dictionary {
                    let list = decode_list(design.form(form), item);
                    let short_name = short
                        .as_ref()
                        .and_then(|s| w.names.iter().position(|n| n == column).and_then(|i| s.get(i)))
                        .cloned()
                        .unwrap_or_else(|| column.clone());
                    let cells = [
                        column.clone(),
                        short_name,
                        item.oid.to_string(),
                        item.name.clone(),
                        item.label.text.clone(),
                        format!("{:?}", item.data_type),
                        item.units.clone().unwrap_or_default(),
                        list,
                        event.clone(),
                        form.clone(),
                        if item.phi { "Yes" } else { "No" }.to_owned(),
                    ];
                    dictionary.row(&cells)?;
                    sheet.push(cells.to_vec());
                }
            }
            None => {
                data.row(&[
                    "SubjectID",
                    "SubjectOID",
                    "Site",
                    "EventOID",
                    "EventRepeat",
                    "FormOID",
                    "FormVersion",
                    "FormStatus",
                    "ItemGroupOID",
                    "ItemGroupRepeat",
                    "ItemOID",
                    "ItemName",
                    "Value",
                    "NullFlavour",
                ])?;
                dictionary
                    .row(&["ItemOID", "ItemName", "Question", "DataType", "Units", "CodeList", "FormOID", "PHI"])?;
                for form in &design.forms {
                    for item in form_items(form).into_iter().filter(|i| included(form.oid.as_str(), i)) {
                        dictionary.row(&[
                            item.oid.as_str(),
                            &item.name,
                            &item.label.text,
                            &format!("{:?}", item.data_type),
                            item.units.as_deref().unwrap_or(""),
                            &decode_list(Some(form), item),
                            form.oid.as_str(),
                            if item.phi { "Yes" } else { "No" },
                        ])?;
                    }
                }
            }
        }

        let mut outcome =
            ExtractOutcome { format: format.name(), participants: 0, values: 0, files: Vec::new(), phi_left_out };
        let mut after = 0;
        loop {
            let page = self.store().export_participants(&filter, after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            let ids: Vec<i64> = page.iter().map(|p| p.id).collect();
            let mut events: Vec<StudyEventRow> = self.store().export_events(&ids).await?;
            events.retain(|e| e.removal == "available");
            let event_ids: Vec<i64> = events.iter().map(|e| e.id).collect();
            let mut forms: Vec<FormDataRow> = self.store().export_forms(&event_ids).await?;
            forms.retain(|f| f.removal == "available");
            let form_ids: Vec<i64> = forms.iter().map(|f| f.id).collect();
            let values: Vec<ItemDataRow> = self.store().export_values(&form_ids).await?;
            for p in &page {
                outcome.participants += 1;
                let site = site_oid_of(p.site_id);
                let mut row: Vec<String> =
                    wide.as_ref().map(|w| vec![String::new(); w.names.len()]).unwrap_or_default();
                if let Some(w) = &wide {
                    row[0].clone_from(&p.label);
                    row[1].clone_from(&p.oid);
                    for (i, name) in w.names.iter().enumerate().skip(2).take(PARTICIPANT_ATTRIBUTES.len()) {
                        row[i] = match name.as_str() {
                            "Site" => site.clone(),
                            "Status" => p.status.clone(),
                            "Sex" => p.sex.clone().unwrap_or_default(),
                            "DateOfBirth" => p.date_of_birth.clone().unwrap_or_default(),
                            "EnrolmentDate" => p.enrolled_on.clone(),
                            "SecondaryID" => p.secondary_label.clone().unwrap_or_default(),
                            "Group" => p.group_name.clone().unwrap_or_default(),
                            _ => break,
                        };
                    }
                }
                for e in
                    events.iter().filter(|e| e.participant_id == p.id && event_selected(&e.event_oid) && in_range(e))
                {
                    if let Some(cols) = wide.as_ref().and_then(|w| w.events.get(&(e.event_oid.clone(), e.repeat_key))) {
                        for (i, attr) in cols {
                            row[*i] = match *attr {
                                "start_date" => e.start_at.map(|t| t.date().to_string()).unwrap_or_default(),
                                "end_date" => e.end_at.map(|t| t.date().to_string()).unwrap_or_default(),
                                "status" => e.status.clone(),
                                "location" => e.location.clone().unwrap_or_default(),
                                _ => p
                                    .date_of_birth
                                    .as_deref()
                                    .zip(e.start_at)
                                    .and_then(|(dob, start)| age_at(dob, start.date()))
                                    .map(|a| a.to_string())
                                    .unwrap_or_default(),
                            };
                        }
                    }
                    for f in forms.iter().filter(|f| {
                        f.study_event_id == e.id && !hidden(p, &e.event_oid, &f.form_oid) && status_selected(&f.status)
                    }) {
                        let version_label = design
                            .form_version(&f.form_version_oid)
                            .map_or(f.form_version_oid.clone(), |(_, v)| v.label.clone());
                        if let Some(cols) = wide
                            .as_ref()
                            .and_then(|w| w.forms.get(&(e.event_oid.clone(), e.repeat_key, f.form_oid.clone())))
                        {
                            for (i, attr) in cols {
                                row[*i] = if *attr == "version" { version_label.clone() } else { f.status.clone() };
                            }
                        }
                        let Some(form_def) = design.form(&f.form_oid) else { continue };
                        let items = form_items(form_def);
                        let item_def = |oid: &str| items.iter().copied().find(|i| i.oid.as_str() == oid);
                        let start = values.partition_point(|v| v.form_data_id < f.id);
                        let end = values.partition_point(|v| v.form_data_id <= f.id);
                        for v in &values[start..end] {
                            let Some(def) = item_def(&v.item_oid) else { continue };
                            if !included(&f.form_oid, def) {
                                continue;
                            }
                            // Typed formats hold values only: a null flavour is a missing value there.
                            let shown = if format.typed() {
                                v.value.clone().unwrap_or_default()
                            } else {
                                v.value.clone().or_else(|| v.null_flavour.clone()).unwrap_or_default()
                            };
                            match &wide {
                                Some(w) => {
                                    let row_key =
                                        if repeating_group(form_def, &v.group_oid) { v.row_number } else { 1 };
                                    let key = (
                                        e.event_oid.clone(),
                                        e.repeat_key,
                                        f.form_oid.clone(),
                                        v.group_oid.clone(),
                                        row_key,
                                        v.item_oid.clone(),
                                    );
                                    if let Some(i) = w.items.get(&key) {
                                        row[*i] = shown;
                                        outcome.values += 1;
                                    }
                                }
                                None => {
                                    data.row(&[
                                        p.label.as_str(),
                                        &p.oid,
                                        &site,
                                        &e.event_oid,
                                        &e.repeat_key.to_string(),
                                        &f.form_oid,
                                        &version_label,
                                        &f.status,
                                        &v.group_oid,
                                        &v.row_number.to_string(),
                                        &v.item_oid,
                                        &def.name,
                                        v.value.as_deref().unwrap_or(""),
                                        v.null_flavour.as_deref().unwrap_or(""),
                                    ])?;
                                    outcome.values += 1;
                                }
                            }
                        }
                    }
                }
                if wide.is_some() {
                    data.row(&row)?;
                }
            }
            if let Some(id) = run {
                self.store().extract_progress(id, i32::try_from(outcome.participants).unwrap_or(i32::MAX)).await?;
                if self.extracts.cancelled().contains(id) {
                    return Err(AppError::Conflict("the extract was cancelled while it ran".to_owned()));
                }
            }
        }
        outcome.files.push(data.finish(dir, sheet)?);
        outcome.files.push(dictionary.finish()?);
        if format == TableFormat::R
            && let Some(w) = &wide
        {
            let mut script = HashedFile::create(dir, format!("{base}.R"), ',')?;
            script.raw(r_script(&format!("{base}.csv"), w).as_bytes())?;
            outcome.files.push(script.finish()?);
        }
        if format == TableFormat::Sas
            && let Some(w) = &wide
        {
            // The formats program that gives SAS the code lists' labels.
            let spec = casebook_formats::table::TableSpec {
                name: base.clone(),
                label: base.clone(),
                columns: w
                    .names
                    .iter()
                    .zip(&w.info)
                    .map(|(n, c)| {
                        let kind = if matches!(c.kind, Kind::Text) {
                            casebook_formats::table::ColumnKind::Text
                        } else {
                            casebook_formats::table::ColumnKind::Decimal
                        };
                        let mut col = casebook_formats::table::ColumnSpec::new(n, &c.label, kind);
                        col.value_labels.clone_from(&c.value_labels);
                        col
                    })
                    .collect(),
                created: self.store().clock().now(),
            };
            let mut program = HashedFile::create(dir, format!("{base}_formats.sas"), ',')?;
            program.raw(casebook_formats::table::sas_xpt::sas_formats_program(&spec).as_bytes())?;
            outcome.files.push(program.finish()?);
        }
        Ok(outcome)
    }
}

/// Where extract runs keep their files and how many run at once.
#[derive(Debug)]
pub struct ExtractSettings {
    dir: PathBuf,
    slots: tokio::sync::Semaphore,
    /// Where administrators add format modules.
    modules: Option<PathBuf>,
    /// Runs asked to stop while running (checked between pages).
    cancelled: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl ExtractSettings {
    fn cancelled(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.cancelled.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[must_use]
    pub fn new(dir: PathBuf, concurrent: usize) -> Self {
        Self {
            dir,
            slots: tokio::sync::Semaphore::new(concurrent.max(1)),
            modules: None,
            cancelled: std::sync::Mutex::default(),
        }
    }

    /// Format modules are read from `dir` too.
    #[must_use]
    pub fn with_modules(mut self, dir: PathBuf) -> Self {
        self.modules = Some(dir);
        self
    }
}

/// An extract run as clients see it.
#[derive(Debug, Clone, Serialize)]
pub struct ExtractRunView {
    pub id: String,
    pub study_oid: String,
    /// The study's or a site's OID.
    pub scope: String,
    pub format: String,
    pub include_phi: bool,
    /// The dataset and version it extracts (`None`: every item).
    pub dataset: Option<String>,
    pub dataset_version: Option<i32>,
    /// Only participants with a change after this time (a "changed since" run).
    #[serde(with = "time::serde::rfc3339::option")]
    pub changed_since: Option<time::OffsetDateTime>,
    /// When the retention setting removed its files (the row stays, as the archive's record).
    #[serde(with = "time::serde::rfc3339::option")]
    pub pruned_at: Option<time::OffsetDateTime>,
    /// `queued`, `running`, `completed`, `failed` or `cancelled`.
    pub status: String,
    /// Participants written so far, of `total`.
    pub participants: i32,
    pub total: Option<i32>,
    pub files: Vec<ExtractedFile>,
    /// The design version in Production when it ran.
    pub design_version: Option<i32>,
    /// The data as of this time.
    #[serde(with = "time::serde::rfc3339::option")]
    pub cutoff_at: Option<time::OffsetDateTime>,
    pub error: Option<String>,
    pub created_by: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<time::OffsetDateTime>,
}

fn files_of(json: Option<&str>) -> Vec<ExtractedFile> {
    #[derive(serde::Deserialize)]
    struct F {
        name: String,
        bytes: u64,
        sha256: String,
    }
    json.and_then(|j| serde_json::from_str::<Vec<F>>(j).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|f| ExtractedFile { name: f.name, bytes: f.bytes, sha256: f.sha256 })
        .collect()
}

impl App {
    /// Queues an extract of a study or site in a format; it runs in the background as soon as a
    /// slot is free. Answers the run at once.
    ///
    /// # Errors
    /// As [`Self::extract_tables`]'s permission checks; [`AppError::Validation`] for an unknown
    /// format.
    pub async fn start_extract(
        &self,
        who: &Principal,
        study_or_site_oid: &str,
        format: &str,
        include_phi: bool,
        dataset: Option<&str>,
        changed_since: Option<time::OffsetDateTime>,
    ) -> Result<ExtractRunView, AppError> {
        let (resolved, module) = self.resolve_format(format)?;
        let format_name = module.as_ref().map_or(resolved.name(), |m| m.manifest.name.as_str()).to_owned();
        let (target, study) = self.study_or_site(study_or_site_oid).await?;
        let (study, access) = self.study_with_access(who, &study.oid).await?;
        let sites = self.store().sites_of(study.id).await?;
        let may = Self::may_extract(&access, &study, &sites);
        if !may {
            return Err(AppError::Forbidden("extract data in this study"));
        }
        if target.parent_id.is_some() && !access.sees_site(target.id) {
            return Err(AppError::NotFound("study"));
        }
        let dataset = match dataset.map(str::trim).filter(|d| !d.is_empty()) {
            Some(name) => Some(self.store().dataset(study.id, name).await?.ok_or(AppError::NotFound("dataset"))?),
            None => None,
        };
        let id = crate::jobs::uuid_v4();
        self.store()
            .insert_extract_run(&casebook_store::extracts::NewExtractRun {
                dataset: dataset.as_ref().map(|d| (d.name.as_str(), d.version)),
                changed_since,
                id: &id,
                study_id: study.id,
                scope_oid: &target.oid,
                format: &format_name,
                include_phi,
                created_by: Some(who.user_id),
            })
            .await?;
        self.spawn_extract(who.clone(), id.clone());
        self.extract_run(Some(who), &id).await
    }

    /// Runs a queued extract in the background when a slot is free.
    fn spawn_extract(&self, who: Principal, id: String) {
        let app = self.clone();
        tokio::spawn(async move {
            let Ok(_slot) = app.extracts.slots.acquire().await else { return };
            let outcome = app.run_extract(&who, &id).await;
            let cancelled = app.extracts.cancelled().remove(&id);
            let ended = match outcome {
                Ok(()) => Ok(()),
                Err(_) if cancelled => {
                    let _ = std::fs::remove_dir_all(app.extracts.dir.join(&id));
                    let why = "cancelled while it ran; its partial files were removed";
                    app.store().finish_extract_run(&id, "cancelled", None, Some(why)).await
                }
                Err(e) => {
                    tracing::warn!(run = %id, error = %e, "an extract run failed");
                    app.store().finish_extract_run(&id, "failed", None, Some(&e.to_string())).await
                }
            };
            if let Err(e) = ended {
                tracing::error!(run = %id, error = %e, "recording the end of an extract run failed");
            }
        });
    }

    async fn run_extract(&self, who: &Principal, id: &str) -> Result<(), AppError> {
        let row = self.store().extract_run(id).await?.ok_or(AppError::NotFound("extract run"))?;
        let (format, module) = self.resolve_format(&row.format)?;
        let (target, study) = self.study_or_site(&row.scope_oid).await?;
        let (_, access) = self.study_with_access(who, &study.oid).await?;
        let site_ids = scope_sites(&target, &access)?;
        let total = self.store().count_extract_participants(study.id, site_ids.as_deref()).await?;
        let design = self.production_design_opt(study.id).await?.map(|(n, _)| n);
        let cutoff = self.store().clock().now();
        if !self.store().start_extract_run(id, cutoff, design, i32::try_from(total).unwrap_or(i32::MAX)).await? {
            return Ok(()); // cancelled while queued
        }
        let mut selection = match (&row.dataset_name, row.dataset_version) {
            (Some(name), Some(version)) => {
                let d = self
                    .store()
                    .dataset_version(study.id, name, version)
                    .await?
                    .ok_or(AppError::NotFound("dataset"))?;
                serde_json::from_str::<DatasetDefinition>(&d.definition).map_err(internal)?
            }
            _ => DatasetDefinition::default(),
        };
        selection.include_phi |= row.include_phi;
        selection.changed_since = row.changed_since;
        let dir = self.extracts.dir.join(id);
        let outcome =
            self.extract_tables_for(who, &row.scope_oid, format, module.as_ref(), &selection, &dir, Some(id)).await?;
        self.store().extract_progress(id, i32::try_from(outcome.participants).unwrap_or(i32::MAX)).await?;
        let files = serde_json::to_string(&outcome.files).map_err(internal)?;
        self.store().finish_extract_run(id, "completed", Some(&files), None).await?;
        Ok(())
    }

    /// A run, if the user may see it: study-level users see the study's runs, site-level users
    /// the runs they started (their data are their sites').
    ///
    /// # Errors
    /// [`AppError::NotFound`] for an unknown or invisible run.
    pub async fn extract_run(&self, who: Option<&Principal>, id: &str) -> Result<ExtractRunView, AppError> {
        let row = self.store().extract_run(id).await?.ok_or(AppError::NotFound("extract run"))?;
        let study = self.store().study_by_id(row.study_id).await?.ok_or(AppError::NotFound("extract run"))?;
        if let Some(who) = who {
            let (_, access) =
                self.study_with_access(who, &study.oid).await.map_err(|_| AppError::NotFound("extract run"))?;
            if !access.study_wide() && row.created_by != Some(who.user_id) {
                return Err(AppError::NotFound("extract run"));
            }
        }
        Ok(ExtractRunView {
            id: row.id,
            study_oid: study.oid,
            scope: row.scope_oid,
            format: row.format,
            include_phi: row.include_phi,
            dataset: row.dataset_name,
            dataset_version: row.dataset_version,
            changed_since: row.changed_since,
            pruned_at: row.pruned_at,
            status: row.status,
            participants: row.participants,
            total: row.total,
            files: files_of(row.files.as_deref()),
            design_version: row.design_version,
            cutoff_at: row.cutoff_at,
            error: row.error,
            created_by: row.created_by_username,
            created_at: row.created_at,
            finished_at: row.finished_at,
        })
    }

    /// A study's runs the user may see, newest first: the archive.
    ///
    /// # Errors
    /// [`AppError::NotFound`] for an invisible study.
    pub async fn extract_runs(&self, who: &Principal, study_oid: &str) -> Result<Vec<ExtractRunView>, AppError> {
        let (study, access) = self.study_with_access(who, study_oid).await?;
        let mut out = Vec::new();
        for row in self.store().extract_runs_of(study.id).await? {
            if access.study_wide() || row.created_by == Some(who.user_id) {
                out.push(self.extract_run(None, &row.id).await?);
            }
        }
        Ok(out)
    }

    /// Cancels a queued run, or asks a running one to stop at its next page (its partial files
    /// are removed and it ends `cancelled`).
    ///
    /// # Errors
    /// [`AppError::NotFound`]; [`AppError::InvalidTransition`] for a finished run.
    pub async fn cancel_extract(&self, who: &Principal, id: &str) -> Result<ExtractRunView, AppError> {
        let run = self.extract_run(Some(who), id).await?;
        if run.status == "running" {
            // It stops at its next page, removes what it wrote and ends cancelled.
            self.extracts.cancelled().insert(id.to_owned());
            return self.extract_run(Some(who), id).await;
        }
        if !self.store().cancel_queued_extract(id).await? {
            return Err(AppError::InvalidTransition(format!("the run is {}, not queued or running", run.status)));
        }
        self.extract_run(Some(who), id).await
    }

    /// Runs an extract again with the same settings (a new run; the old one stays archived).
    ///
    /// # Errors
    /// As [`Self::start_extract`].
    pub async fn retry_extract(&self, who: &Principal, id: &str) -> Result<ExtractRunView, AppError> {
        let run = self.extract_run(Some(who), id).await?;
        self.start_extract(who, &run.scope, &run.format, run.include_phi, run.dataset.as_deref(), run.changed_since)
            .await
    }

    /// The path of one file of a completed run, if the user may see the run and the file is one
    /// of the run's (no other path can be named).
    ///
    /// # Errors
    /// [`AppError::NotFound`].
    pub async fn extract_file(&self, who: &Principal, id: &str, name: &str) -> Result<PathBuf, AppError> {
        let run = self.extract_run(Some(who), id).await?;
        if run.pruned_at.is_some() {
            return Err(AppError::NotFound("extract file (removed by the retention setting)"));
        }
        let file = run.files.iter().find(|f| f.name == name).ok_or(AppError::NotFound("extract file"))?;
        Ok(self.extracts.dir.join(&run.id).join(&file.name))
    }

    /// At start-up: runs a stopped server left running are marked failed; queued runs are
    /// started again (as the users who queued them). Returns (failed, resumed).
    ///
    /// # Errors
    /// On database failure.
    pub async fn resume_extracts(&self) -> Result<(u64, usize), AppError> {
        let failed =
            self.store().fail_interrupted_extracts("interrupted: the server stopped while it ran; retry it").await?;
        let queued = self.store().queued_extract_runs().await?;
        let mut resumed = 0;
        for row in queued {
            let Some(user) = row.created_by_username.clone() else { continue };
            match self.cli_principal(Some(&user)).await {
                Ok(who) => {
                    self.spawn_extract(who, row.id.clone());
                    resumed += 1;
                }
                Err(e) => {
                    self.store()
                        .finish_extract_run(&row.id, "failed", None, Some(&format!("its user cannot run it now: {e}")))
                        .await?;
                }
            }
        }
        Ok((failed, resumed))
    }
}

impl App {
    /// Saves a dataset definition: a new name makes version 1, an existing one its next version
    /// (earlier versions stay, runs name theirs). Every wrong event, item or name is listed.
    ///
    /// # Errors
    /// [`AppError::Forbidden`] without the extract permission; [`AppError::Validation`].
    pub async fn save_dataset(
        &self,
        who: &Principal,
        study_oid: &str,
        name: &str,
        definition: DatasetDefinition,
    ) -> Result<DatasetView, AppError> {
        let (study, access) = self.study_with_access(who, study_oid).await?;
        let sites = self.store().sites_of(study.id).await?;
        let may = Self::may_extract(&access, &study, &sites);
        if !may {
            return Err(AppError::Forbidden("define datasets in this study"));
        }
        let name = name.trim();
        let mut errors = Vec::new();
        if name.is_empty()
            || name.chars().count() > 100
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_-. ".contains(c))
        {
            errors.push(casebook_domain::FieldError::new(
                "name",
                "1 to 100 letters, digits, spaces, '.', '_' or '-' (it names the files)",
            ));
        }
        let design = self.production_design_opt(study.id).await?.map(|(_, d)| d).unwrap_or_default();
        for (i, e) in definition.events.iter().enumerate() {
            if design.event(e).is_none() {
                errors.push(casebook_domain::FieldError::new(
                    format!("events[{i}]"),
                    format!("the design has no event {e}"),
                ));
            }
        }
        for (i, item) in definition.items.iter().enumerate() {
            let known = design.forms.iter().any(|f| form_items(f).iter().any(|x| x.oid.as_str() == item));
            if !known {
                errors.push(casebook_domain::FieldError::new(
                    format!("items[{i}]"),
                    format!("the design has no item {item}"),
                ));
            }
        }
        errors.extend(attribute_errors(&definition));
        if !errors.is_empty() {
            return Err(AppError::Validation(errors));
        }
        let text = serde_json::to_string(&definition).map_err(internal)?;
        let mut tx = self.store().write(who.actor()).await?;
        let version = tx.save_dataset(study.id, name, &text).await?;
        tx.audit(
            casebook_domain::audit::AuditEntry::new("dataset.saved", "dataset", format!("{}/{name}", study.oid))
                .study(Some(study.id), None)
                .new_value(serde_json::json!({ "version": version, "definition": definition })),
        )
        .await?;
        tx.commit().await?;
        self.dataset(who, study_oid, name).await
    }

    /// The newest version of a dataset.
    ///
    /// # Errors
    /// [`AppError::NotFound`].
    pub async fn dataset(&self, who: &Principal, study_oid: &str, name: &str) -> Result<DatasetView, AppError> {
        let (study, _) = self.study_with_access(who, study_oid).await?;
        let row = self.store().dataset(study.id, name).await?.ok_or(AppError::NotFound("dataset"))?;
        dataset_view(row)
    }

    /// A study's datasets (newest versions).
    ///
    /// # Errors
    /// [`AppError::NotFound`] for an invisible study.
    pub async fn datasets(&self, who: &Principal, study_oid: &str) -> Result<Vec<DatasetView>, AppError> {
        let (study, _) = self.study_with_access(who, study_oid).await?;
        self.store().datasets_of(study.id).await?.into_iter().map(dataset_view).collect()
    }
}

fn dataset_view(row: casebook_store::datasets::DatasetRow) -> Result<DatasetView, AppError> {
    Ok(DatasetView {
        name: row.name,
        version: row.version,
        definition: serde_json::from_str(&row.definition).map_err(internal)?,
        created_by: row.created_by_username,
        created_at: row.created_at,
    })
}

/// R code that reads the wide CSV, turns coded columns into factors with their labels and gives
/// every column its label (`attr(x, "label")`, as Hmisc and haven read it).
fn r_script(csv: &str, w: &Wide) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut out = format!(
        "# Generated by Casebook: reads {csv} with its factors and labels.\n\
         data <- read.csv({}, stringsAsFactors = FALSE, check.names = FALSE, na.strings = \"\", \
         fileEncoding = \"UTF-8\")\n",
        q(csv)
    );
    for (name, info) in w.names.iter().zip(&w.info) {
        if !info.value_labels.is_empty() {
            let levels: Vec<String> = info.value_labels.iter().map(|(c, _)| q(c)).collect();
            let labels: Vec<String> = info.value_labels.iter().map(|(_, l)| q(l)).collect();
            out.push_str(&format!(
                "data[[{n}]] <- factor(data[[{n}]], levels = c({}), labels = c({}))\n",
                levels.join(", "),
                labels.join(", "),
                n = q(name)
            ));
        }
        out.push_str(&format!("attr(data[[{}]], \"label\") <- {}\n", q(name), q(&info.label)));
    }
    out
}

/// One item group's file writer.
enum GroupWriter {
    Json(casebook_formats::table_json::DatasetJsonWriter<std::io::BufWriter<std::fs::File>>),
    Parquet(Box<casebook_formats::table_parquet::ParquetWriter<std::io::BufWriter<std::fs::File>>>),
}

/// A per-item-group writer, with where its items go.
struct GroupFile {
    writer: GroupWriter,
    name: String,
    /// Item OID → column index (after the six key columns).
    items: HashMap<String, usize>,
    width: usize,
}

impl App {
    /// Dataset-JSON or Parquet: one file per item group of the design (`{base}_{GROUP}.json` or
    /// `.parquet`), a record per participant, event occurrence, form and group row, the keys
    /// first.
    #[allow(clippy::too_many_arguments, clippy::too_many_lines)]
    async fn extract_dataset_json(
        &self,
        parquet: bool,
        study: &casebook_store::studies::StudyRow,
        design: &StudyDesign,
        filter: &ExportFilter,
        dir: &Path,
        base: &str,
        included: &(dyn Fn(&str, &ItemDef) -> bool + Sync),
        event_selected: &(dyn Fn(&str) -> bool + Sync),
        status_selected: &(dyn Fn(&str) -> bool + Sync),
        hidden: &(dyn Fn(&ParticipantRow, &str, &str) -> bool + Sync),
        phi_left_out: Vec<String>,
    ) -> Result<ExtractOutcome, AppError> {
        use casebook_formats::table_json::{DatasetJsonMeta, DatasetJsonWriter};
        use casebook_formats::table_model::{ColumnKind as K, ColumnSpec, TableSpec};
        let now = self.store().clock().now();
        let stamp = now.format(&time::format_description::well_known::Rfc3339).map_err(internal)?;
        let mdv = self.production_design_opt(study.id).await?.map(|(n, _)| format!("v{n}"));
        let mut groups: HashMap<(String, String), GroupFile> = HashMap::new();
        for form in &design.forms {
            let items = form_items(form);
            let mut group_oids: Vec<String> = Vec::new();
            for i in &items {
                if !group_oids.contains(&i.group_oid.to_string()) {
                    group_oids.push(i.group_oid.to_string());
                }
            }
            for g in group_oids {
                let mine: Vec<&&ItemDef> =
                    items.iter().filter(|i| i.group_oid.as_str() == g && included(form.oid.as_str(), i)).collect();
                let key = |n: &str, l: &str, k: K| ColumnSpec {
                    name: n.into(),
                    label: l.into(),
                    kind: k,
                    value_labels: Vec::new(),
                };
                let mut columns = vec![
                    key("SUBJID", "Participant", K::Text),
                    key("SITEID", "Site", K::Text),
                    key("VISIT", "Event OID", K::Text),
                    key("VISITNUM", "Event occurrence", K::Integer),
                    key("FORMOID", "Form", K::Text),
                    key("IGSEQ", "Row of the item group", K::Integer),
                ];
                let mut item_oids: Vec<String> = ["SUBJID", "SITEID", "VISIT", "VISITNUM", "FORMOID", "IGSEQ"]
                    .iter()
                    .map(|c| format!("IT.{g}.{c}"))
                    .collect();
                let mut map = HashMap::new();
                for (k, i) in mine.iter().enumerate() {
                    let info = ColumnInfo::of_item(form, i);
                    let kind = info.kind.model();
                    columns.push(ColumnSpec {
                        name: i.name.to_ascii_uppercase(),
                        label: info.label,
                        kind,
                        value_labels: Vec::new(),
                    });
                    item_oids.push(i.oid.to_string());
                    map.insert(i.oid.to_string(), 6 + k);
                }
                let width = columns.len();
                let name = format!("{base}_{g}.{}", if parquet { "parquet" } else { "json" });
                let file = std::fs::File::create(dir.join(&name)).map_err(internal)?;
                let meta = DatasetJsonMeta {
                    creation_date_time: stamp.clone(),
                    file_oid: Some(format!("{base}.{g}")),
                    originator: Some("Casebook".into()),
                    source_system: Some(("Casebook".into(), env!("CARGO_PKG_VERSION").into())),
                    study_oid: Some(study.oid.clone()),
                    metadata_version_oid: mdv.clone(),
                    item_oids,
                    keys: vec!["SUBJID".into(), "VISIT".into(), "VISITNUM".into(), "IGSEQ".into()],
                    ..DatasetJsonMeta::default()
                };
                let spec = TableSpec { name: g.clone(), label: format!("{} — {g}", form.name), columns };
                let writer = if parquet {
                    GroupWriter::Parquet(Box::new(
                        casebook_formats::table_parquet::ParquetWriter::new(std::io::BufWriter::new(file), spec)
                            .map_err(typed_error)?,
                    ))
                } else {
                    GroupWriter::Json(
                        DatasetJsonWriter::new(std::io::BufWriter::new(file), spec, &meta, None)
                            .map_err(typed_error)?,
                    )
                };
                groups.insert((form.oid.to_string(), g.clone()), GroupFile { writer, name, items: map, width });
            }
        }
        let sites = self.store().sites_of(study.id).await?;
        let mut outcome =
            ExtractOutcome { format: "dataset-json", participants: 0, values: 0, files: Vec::new(), phi_left_out };
        let mut after = 0;
        loop {
            let page = self.store().export_participants(filter, after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            let ids: Vec<i64> = page.iter().map(|p| p.id).collect();
            let mut events = self.store().export_events(&ids).await?;
            events.retain(|e| e.removal == "available" && event_selected(&e.event_oid));
            let event_ids: Vec<i64> = events.iter().map(|e| e.id).collect();
            let mut forms = self.store().export_forms(&event_ids).await?;
            forms.retain(|f| f.removal == "available" && status_selected(&f.status));
            let form_ids: Vec<i64> = forms.iter().map(|f| f.id).collect();
            let values = self.store().export_values(&form_ids).await?;
            for p in &page {
                outcome.participants += 1;
                let site = sites.iter().find(|s| s.id == p.site_id).map_or(study.oid.clone(), |s| s.oid.clone());
                for e in events.iter().filter(|e| e.participant_id == p.id) {
                    for f in forms.iter().filter(|f| f.study_event_id == e.id && !hidden(p, &e.event_oid, &f.form_oid))
                    {
                        let start = values.partition_point(|v| v.form_data_id < f.id);
                        let end = values.partition_point(|v| v.form_data_id <= f.id);
                        // The form's values by (group, row), in order.
                        let mut rows: Vec<((String, i32), Vec<&ItemDataRow>)> = Vec::new();
                        for v in &values[start..end] {
                            let k = (v.group_oid.clone(), v.row_number);
                            match rows.iter_mut().find(|(x, _)| *x == k) {
                                Some((_, list)) => list.push(v),
                                None => rows.push((k, vec![v])),
                            }
                        }
                        for ((g, row), list) in rows {
                            let Some(gf) = groups.get_mut(&(f.form_oid.clone(), g)) else { continue };
                            let mut cells: Vec<Option<String>> = vec![None; gf.width];
                            cells[0] = Some(p.label.clone());
                            cells[1] = Some(site.clone());
                            cells[2] = Some(e.event_oid.clone());
                            cells[3] = Some(e.repeat_key.to_string());
                            cells[4] = Some(f.form_oid.clone());
                            cells[5] = Some(row.to_string());
                            let mut any = false;
                            for v in list {
                                if let (Some(i), Some(value)) = (gf.items.get(&v.item_oid), &v.value) {
                                    cells[*i] = Some(value.clone());
                                    outcome.values += 1;
                                    any = true;
                                }
                            }
                            if any {
                                let refs: Vec<Option<&str>> = cells.iter().map(Option::as_deref).collect();
                                match &mut gf.writer {
                                    GroupWriter::Json(w) => w.row(&refs).map_err(typed_error)?,
                                    GroupWriter::Parquet(w) => w.row(&refs).map_err(typed_error)?,
                                }
                            }
                        }
                    }
                }
            }
        }
        let mut files: Vec<GroupFile> = groups.into_values().collect();
        files.sort_by(|a, b| a.name.cmp(&b.name));
        for gf in files {
            use std::io::Write as _;
            match gf.writer {
                GroupWriter::Json(w) => w.finish().map_err(typed_error)?.flush().map_err(internal)?,
                GroupWriter::Parquet(w) => w.finish().map_err(typed_error)?.flush().map_err(internal)?,
            }
            outcome.files.push(hashed(dir, &gf.name)?);
        }
        Ok(outcome)
    }
}

/// A scheduled extract: what to run, and when (UTC).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleInput {
    pub format: String,
    /// A site's OID (default: the study).
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default)]
    pub dataset: Option<String>,
    #[serde(default)]
    pub include_phi: bool,
    /// `daily` or `weekly`.
    pub every: String,
    /// `HH:MM`, UTC.
    pub at: String,
    /// Weekly: `monday` … `sunday`.
    #[serde(default)]
    pub weekday: Option<String>,
    /// Only participants changed since the schedule's previous run (nightly ETL).
    #[serde(default)]
    pub changed_only: bool,
}

/// A schedule as clients see it.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleView {
    pub id: i64,
    pub scope: String,
    pub format: String,
    pub dataset: Option<String>,
    pub include_phi: bool,
    pub every: String,
    /// `HH:MM` UTC.
    pub at: String,
    pub weekday: Option<String>,
    pub changed_only: bool,
    pub active: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_run_at: Option<time::OffsetDateTime>,
    pub last_run: Option<String>,
    pub created_by: Option<String>,
}

const WEEKDAYS: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];

fn schedule_view(r: casebook_store::extracts::ScheduleRow) -> ScheduleView {
    ScheduleView {
        id: r.id,
        scope: r.scope_oid,
        format: r.format,
        dataset: r.dataset_name,
        include_phi: r.include_phi,
        every: r.every,
        at: format!("{:02}:{:02}", r.at_minute / 60, r.at_minute % 60),
        weekday: r.weekday.and_then(|d| WEEKDAYS.get(usize::try_from(d - 1).ok()?)).map(|d| (*d).to_owned()),
        changed_only: r.changed_only,
        active: r.active,
        last_run_at: r.last_run_at,
        last_run: r.last_run_id,
        created_by: r.created_by_username,
    }
}

/// The latest time a schedule was due at or before `now`.
fn last_due(r: &casebook_store::extracts::ScheduleRow, now: time::OffsetDateTime) -> time::OffsetDateTime {
    let now = now.to_offset(time::UtcOffset::UTC);
    let minute = time::Duration::minutes(i64::from(r.at_minute));
    let mut due = now.date().midnight().assume_utc() + minute;
    if due > now {
        due -= time::Duration::days(1);
    }
    if r.every == "weekly"
        && let Some(weekday) = r.weekday
    {
        while i32::from(due.weekday().number_from_monday()) != weekday {
            due -= time::Duration::days(1);
        }
    }
    due
}

impl App {
    /// Adds a scheduled extract (by whoever may extract); every wrong field is named.
    ///
    /// # Errors
    /// [`AppError::Forbidden`]; [`AppError::Validation`].
    pub async fn add_schedule(
        &self,
        who: &Principal,
        study_oid: &str,
        input: ScheduleInput,
    ) -> Result<ScheduleView, AppError> {
        let (study, access) = self.study_with_access(who, study_oid).await?;
        let sites = self.store().sites_of(study.id).await?;
        let may = Self::may_extract(&access, &study, &sites);
        if !may {
            return Err(AppError::Forbidden("schedule extracts in this study"));
        }
        let mut errors = Vec::new();
        if let Err(AppError::Validation(mut e)) = self.resolve_format(&input.format) {
            errors.append(&mut e);
        }
        let scope = match input.site.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            Some(site) => match sites.iter().find(|s| s.oid == site && access.sees_site(s.id)) {
                Some(s) => s.oid.clone(),
                None => {
                    errors.push(casebook_domain::FieldError::new("site", format!("{site} is not a site you see")));
                    String::new()
                }
            },
            None => study.oid.clone(),
        };
        if let Some(d) = input.dataset.as_deref()
            && self.store().dataset(study.id, d).await?.is_none()
        {
            errors.push(casebook_domain::FieldError::new("dataset", format!("there is no dataset {d}")));
        }
        let at_minute = input.at.trim().split_once(':').and_then(|(h, m)| {
            let (h, m) = (h.parse::<i32>().ok()?, m.parse::<i32>().ok()?);
            ((0..24).contains(&h) && (0..60).contains(&m)).then_some(h * 60 + m)
        });
        if at_minute.is_none() {
            errors.push(casebook_domain::FieldError::new("at", format!("'{}' is not a UTC time HH:MM", input.at)));
        }
        let weekday = input.weekday.as_deref().map(|w| WEEKDAYS.iter().position(|d| d.eq_ignore_ascii_case(w.trim())));
        match (input.every.as_str(), weekday) {
            ("daily", None) => {}
            ("weekly", Some(Some(_))) => {}
            ("weekly", _) => errors.push(casebook_domain::FieldError::new(
                "weekday",
                "a weekly extract needs a weekday (monday … sunday)",
            )),
            ("daily", Some(_)) => {
                errors.push(casebook_domain::FieldError::new("weekday", "a daily extract takes no weekday"))
            }
            (other, _) => {
                errors.push(casebook_domain::FieldError::new("every", format!("'{other}' is not daily or weekly")))
            }
        }
        if !errors.is_empty() {
            return Err(AppError::Validation(errors));
        }
        let id = self
            .store()
            .insert_schedule(&casebook_store::extracts::NewSchedule {
                study_id: study.id,
                scope_oid: &scope,
                format: input.format.trim(),
                dataset_name: input.dataset.as_deref(),
                include_phi: input.include_phi,
                every: &input.every,
                at_minute: at_minute.unwrap_or(0),
                weekday: weekday.flatten().map(|w| i32::try_from(w + 1).unwrap_or(1)),
                changed_only: input.changed_only,
                created_by: Some(who.user_id),
            })
            .await?;
        Ok(schedule_view(self.store().schedule(id).await?.ok_or(AppError::NotFound("schedule"))?))
    }

    /// A study's schedules (site users: theirs).
    ///
    /// # Errors
    /// [`AppError::NotFound`] for an invisible study.
    pub async fn schedules(&self, who: &Principal, study_oid: &str) -> Result<Vec<ScheduleView>, AppError> {
        let (study, access) = self.study_with_access(who, study_oid).await?;
        Ok(self
            .store()
            .schedules_of(study.id)
            .await?
            .into_iter()
            .filter(|r| access.study_wide() || r.created_by == Some(who.user_id))
            .map(schedule_view)
            .collect())
    }

    /// Stops a schedule (its runs stay in the archive).
    ///
    /// # Errors
    /// [`AppError::NotFound`] for an unknown or invisible schedule.
    pub async fn stop_schedule(&self, who: &Principal, id: i64) -> Result<(), AppError> {
        let row = self.store().schedule(id).await?.ok_or(AppError::NotFound("schedule"))?;
        let study = self.store().study_by_id(row.study_id).await?.ok_or(AppError::NotFound("schedule"))?;
        let (_, access) = self.study_with_access(who, &study.oid).await.map_err(|_| AppError::NotFound("schedule"))?;
        if !access.study_wide() && row.created_by != Some(who.user_id) {
            return Err(AppError::NotFound("schedule"));
        }
        self.store().deactivate_schedule(id).await?;
        Ok(())
    }

    /// Starts the runs of the schedules due now (each claimed once, whichever server asks
    /// first), as the users who scheduled them; a "changed only" schedule takes the changes
    /// since its previous run's data cut-off. Returns the runs started.
    ///
    /// # Errors
    /// On database failure.
    pub async fn run_due_schedules(&self) -> Result<Vec<String>, AppError> {
        let now = self.store().clock().now();
        let mut started = Vec::new();
        for r in self.store().active_schedules().await? {
            let due = last_due(&r, now);
            if r.created_at > due || r.last_run_at.is_some_and(|t| t >= due) {
                continue;
            }
            if !self.store().claim_schedule(r.id, due, now).await? {
                continue;
            }
            let Some(user) = r.created_by_username.clone() else { continue };
            let since = match (&r.last_run_id, r.changed_only) {
                (Some(previous), true) => self.store().extract_run(previous).await?.and_then(|p| p.cutoff_at),
                _ => None,
            };
            let run = match self.cli_principal(Some(&user)).await {
                Ok(who) => {
                    self.start_extract(&who, &r.scope_oid, &r.format, r.include_phi, r.dataset_name.as_deref(), since)
                        .await
                }
                Err(e) => Err(e),
            };
            match run {
                Ok(run) => {
                    self.store().schedule_ran(r.id, &run.id).await?;
                    started.push(run.id);
                }
                Err(e) => tracing::warn!(schedule = r.id, error = %e, "a scheduled extract could not start"),
            }
        }
        Ok(started)
    }

    /// Removes the files of runs finished more than `days` ago (their rows stay, marked
    /// pruned); returns how many runs it pruned.
    ///
    /// # Errors
    /// On database failure.
    pub async fn prune_extracts(&self, days: u32) -> Result<usize, AppError> {
        let before = self.store().clock().now() - time::Duration::days(i64::from(days));
        let ids = self.store().runs_to_prune(before).await?;
        for id in &ids {
            let dir = self.extracts.dir.join(id);
            if dir.exists()
                && let Err(e) = std::fs::remove_dir_all(&dir)
            {
                tracing::warn!(run = %id, error = %e, "removing an old extract's files failed");
                continue;
            }
            self.store().mark_pruned(id).await?;
        }
        Ok(ids.len())
    }
}

impl App {
    /// Whether the user may extract in a study: at study level, or at one of the sites they see.
    fn may_extract(
        access: &crate::access::Access,
        study: &casebook_store::studies::StudyRow,
        sites: &[casebook_store::studies::StudyRow],
    ) -> bool {
        Self::may(access, study, study, Permission::Extract)
            || sites.iter().any(|s| access.sees_site(s.id) && Self::may(access, study, s, Permission::Extract))
    }
}
