//! CDISC Dataset-JSON v1.1 out, streamed: the header, `columns`, then one `rows` entry per
//! [`DatasetJsonWriter::row`] written straight to the output, so memory does not grow with rows.
//!
//! Shape (from the v1.1 JSON schema): a single object with `datasetJSONCreationDateTime`,
//! `datasetJSONVersion` ("1.1"), the optional `fileOID`, `dbLastModifiedDateTime`, `originator`,
//! `sourceSystem` {name, version}, `studyOID`, `metaDataVersionOID`, `metaDataRef`, then
//! `itemGroupOID`, `records`, `name`, `label`, `columns` [{itemOID, name, label, dataType,
//! keySequence?}] and `rows` [[value, …]].
//!
//! `records` must be known before the rows to go in the header: give it to
//! [`DatasetJsonWriter::new`] (the writer checks the count at [`DatasetJsonWriter::finish`]), or
//! give `None` and it is written after `rows` (JSON object members are unordered and the schema
//! sets no order; readers that stream may prefer it first).
//!
//! Types: Text → `string`, Integer → `integer` (a JSON integer), Decimal → `decimal` (a JSON
//! *string* holding the canonical decimal, as v1.1 does for decimals so that no precision is lost
//! to binary floating point), Date → `date`, DateTime → `datetime`, Time → `time` (ISO 8601
//! strings as given). A missing cell is `null`. Value labels have no place in Dataset-JSON (they
//! belong to Define-XML) and are not written.

use std::io::{BufWriter, Write};

use serde::Serialize;

use crate::table_model::{ColumnKind, TableError, TableSpec, canonical_cell, check_width};

/// The dataset-level metadata of a Dataset-JSON file besides the [`TableSpec`].
#[derive(Debug, Clone, Default)]
pub struct DatasetJsonMeta {
    /// When the file was created, ISO 8601 date-time (e.g. `2026-11-22T12:00:00Z`). Required.
    pub creation_date_time: String,
    pub file_oid: Option<String>,
    pub db_last_modified_date_time: Option<String>,
    pub originator: Option<String>,
    /// `(name, version)` of the system the data comes from.
    pub source_system: Option<(String, String)>,
    pub study_oid: Option<String>,
    pub metadata_version_oid: Option<String>,
    pub metadata_ref: Option<String>,
    /// The itemOID of each column, in column order; when empty, `IT.<dataset>.<column>`.
    pub item_oids: Vec<String>,
    /// The key columns by name, in key order (written as `keySequence` 1, 2, …).
    pub keys: Vec<String>,
}

/// Streams one dataset as Dataset-JSON v1.1.
pub struct DatasetJsonWriter<W: Write> {
    out: BufWriter<W>,
    spec: TableSpec,
    records: Option<u64>,
    rows: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Column<'a> {
    #[serde(rename = "itemOID")]
    item_oid: String,
    name: &'a str,
    label: &'a str,
    data_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_sequence: Option<usize>,
}

/// The Dataset-JSON `dataType` of a column kind.
pub fn data_type(kind: ColumnKind) -> &'static str {
    match kind {
        ColumnKind::Text => "string",
        ColumnKind::Integer => "integer",
        ColumnKind::Decimal => "decimal",
        ColumnKind::Date => "date",
        ColumnKind::DateTime => "datetime",
        ColumnKind::Time => "time",
    }
}

impl<W: Write> DatasetJsonWriter<W> {
    /// Writes the header and columns. `records`: the number of rows that will follow, written
    /// before them and checked at [`finish`](Self::finish); `None` writes the count after the rows.
    pub fn new(out: W, spec: TableSpec, meta: &DatasetJsonMeta, records: Option<u64>) -> Result<Self, TableError> {
        if meta.creation_date_time.is_empty() {
            return Err(TableError::Invalid("Dataset-JSON needs datasetJSONCreationDateTime".into()));
        }
        if !meta.item_oids.is_empty() && meta.item_oids.len() != spec.columns.len() {
            return Err(TableError::Invalid(format!(
                "{} itemOIDs for {} columns",
                meta.item_oids.len(),
                spec.columns.len()
            )));
        }
        if let Some(key) = meta.keys.iter().find(|k| !spec.columns.iter().any(|c| &c.name == *k)) {
            return Err(TableError::Invalid(format!("key column {key} is not a column")));
        }
        let mut out = BufWriter::new(out);
        let member = |out: &mut BufWriter<W>, first: bool, key: &str, value: &dyn erased::Json| {
            out.write_all(if first { b"{" } else { b"," })?;
            serde_json::to_writer(&mut *out, key).map_err(std::io::Error::from)?;
            out.write_all(b":")?;
            value.write(out)
        };
        member(&mut out, true, "datasetJSONCreationDateTime", &meta.creation_date_time)?;
        member(&mut out, false, "datasetJSONVersion", &"1.1")?;
        let optional = [
            ("fileOID", &meta.file_oid),
            ("dbLastModifiedDateTime", &meta.db_last_modified_date_time),
            ("originator", &meta.originator),
        ];
        for (key, value) in optional {
            if let Some(v) = value {
                member(&mut out, false, key, v)?;
            }
        }
        if let Some((name, version)) = &meta.source_system {
            member(&mut out, false, "sourceSystem", &SourceSystem { name, version })?;
        }
        let optional = [
            ("studyOID", &meta.study_oid),
            ("metaDataVersionOID", &meta.metadata_version_oid),
            ("metaDataRef", &meta.metadata_ref),
        ];
        for (key, value) in optional {
            if let Some(v) = value {
                member(&mut out, false, key, v)?;
            }
        }
        member(&mut out, false, "itemGroupOID", &spec.name)?;
        if let Some(n) = records {
            member(&mut out, false, "records", &n)?;
        }
        member(&mut out, false, "name", &spec.name)?;
        member(&mut out, false, "label", &spec.label)?;
        let columns: Vec<Column<'_>> = spec
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| Column {
                item_oid: meta.item_oids.get(i).cloned().unwrap_or_else(|| format!("IT.{}.{}", spec.name, c.name)),
                name: &c.name,
                label: &c.label,
                data_type: data_type(c.kind),
                key_sequence: meta.keys.iter().position(|k| k == &c.name).map(|p| p + 1),
            })
            .collect();
        member(&mut out, false, "columns", &columns)?;
        drop(columns);
        out.write_all(b",\"rows\":[")?;
        Ok(Self { out, spec, records, rows: 0 })
    }

    /// Writes one row: one cell per column, `None` for missing.
    pub fn row(&mut self, cells: &[Option<&str>]) -> Result<(), TableError> {
        let n = self.rows + 1;
        check_width(&self.spec, n, cells)?;
        if let Some(records) = self.records.filter(|r| n > *r) {
            return Err(TableError::Invalid(format!("more rows than the {records} records announced")));
        }
        // Validate the whole row before writing any of it, so an error leaves no partial row.
        let mut values = Vec::with_capacity(cells.len());
        for (column, cell) in self.spec.columns.iter().zip(cells) {
            values.push(canonical_cell(column, n, *cell)?);
        }
        self.out.write_all(if n == 1 { b"\n[" } else { b",\n[" })?;
        for (i, (column, value)) in self.spec.columns.iter().zip(&values).enumerate() {
            if i > 0 {
                self.out.write_all(b",")?;
            }
            match (value, column.kind) {
                (None, _) => self.out.write_all(b"null")?,
                // The canonical integer is a valid JSON number as it stands.
                (Some(v), ColumnKind::Integer) => self.out.write_all(v.as_bytes())?,
                (Some(v), _) => serde_json::to_writer(&mut self.out, v.as_ref()).map_err(std::io::Error::from)?,
            }
        }
        self.out.write_all(b"]")?;
        self.rows = n;
        Ok(())
    }

    /// Closes the document and returns the output. Fails if fewer rows came than announced.
    pub fn finish(mut self) -> Result<W, TableError> {
        match self.records {
            Some(records) if records != self.rows => {
                return Err(TableError::Invalid(format!("{} rows written but {records} records announced", self.rows)));
            }
            Some(_) => self.out.write_all(b"\n]}")?,
            None => write!(self.out, "\n],\"records\":{}}}", self.rows)?,
        }
        self.out.into_inner().map_err(|e| TableError::Io(e.into_error()))
    }
}

#[derive(Serialize)]
struct SourceSystem<'a> {
    name: &'a str,
    version: &'a str,
}

mod erased {
    use std::io::Write;

    /// A value written as JSON through a `dyn` reference.
    pub trait Json {
        fn write(&self, out: &mut dyn Write) -> Result<(), crate::table_model::TableError>;
    }

    impl<T: serde::Serialize + ?Sized> Json for T {
        fn write(&self, out: &mut dyn Write) -> Result<(), crate::table_model::TableError> {
            serde_json::to_writer(out, self).map_err(|e| std::io::Error::from(e).into())
        }
    }
}
