//! Apache Parquet out: one table, typed columns, streamed a row group at a time (rows are held
//! until a row group is full — [`ROW_GROUP_ROWS`] — then written, so memory is bounded by a row
//! group, not the table).
//!
//! Column types: text is `BYTE_ARRAY` (`String`), integers `INT64`, decimals `DOUBLE`, dates
//! `INT32` (`Date`: days since 1970-01-01), date-times `INT64` (`Timestamp` in milliseconds,
//! UTC; a value without offset is taken as UTC), times `INT32` (`Time` in milliseconds). Every
//! column is optional: a missing cell is a null. A cell that does not parse for its column is an
//! error naming the row (from 1) and the column.

use std::io::Write;
use std::sync::Arc;

use parquet::basic::{LogicalType, Repetition, TimeUnit, Type as Physical};
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;

use crate::table_model::{ColumnKind, TableError, TableSpec};

/// Rows written per row group.
pub const ROW_GROUP_ROWS: usize = 10_000;

/// One column's buffered values and definition levels.
enum Buffer {
    Text(Vec<ByteArray>),
    Int64(Vec<i64>),
    Double(Vec<f64>),
    Int32(Vec<i32>),
}

/// Streams one table as a Parquet file.
pub struct ParquetWriter<W: Write + Send> {
    writer: SerializedFileWriter<W>,
    spec: TableSpec,
    buffers: Vec<(Buffer, Vec<i16>)>,
    buffered: usize,
    row: u64,
}

fn cell_error(row: u64, column: &str, value: &str, expected: &'static str) -> TableError {
    TableError::Cell { row, column: column.to_owned(), value: value.to_owned(), expected }
}

fn parquet_error(e: parquet::errors::ParquetError) -> TableError {
    TableError::Invalid(format!("parquet: {e}"))
}

impl<W: Write + Send> ParquetWriter<W> {
    /// Starts the file with the table's schema.
    ///
    /// # Errors
    /// A schema Parquet refuses, or the output failing.
    pub fn new(out: W, spec: TableSpec) -> Result<Self, TableError> {
        let mut fields = Vec::with_capacity(spec.columns.len());
        let mut buffers = Vec::with_capacity(spec.columns.len());
        for c in &spec.columns {
            let (physical, logical, buffer) = match c.kind {
                ColumnKind::Text => (Physical::BYTE_ARRAY, Some(LogicalType::String), Buffer::Text(Vec::new())),
                ColumnKind::Integer => (Physical::INT64, None, Buffer::Int64(Vec::new())),
                ColumnKind::Decimal => (Physical::DOUBLE, None, Buffer::Double(Vec::new())),
                ColumnKind::Date => (Physical::INT32, Some(LogicalType::Date), Buffer::Int32(Vec::new())),
                ColumnKind::DateTime => (
                    Physical::INT64,
                    Some(LogicalType::Timestamp { is_adjusted_to_u_t_c: true, unit: TimeUnit::MILLIS }),
                    Buffer::Int64(Vec::new()),
                ),
                ColumnKind::Time => (
                    Physical::INT32,
                    Some(LogicalType::Time { is_adjusted_to_u_t_c: false, unit: TimeUnit::MILLIS }),
                    Buffer::Int32(Vec::new()),
                ),
            };
            let field = Type::primitive_type_builder(&c.name, physical)
                .with_repetition(Repetition::OPTIONAL)
                .with_logical_type(logical)
                .build()
                .map_err(parquet_error)?;
            fields.push(Arc::new(field));
            buffers.push((buffer, Vec::new()));
        }
        let schema = Type::group_type_builder("schema").with_fields(fields).build().map_err(parquet_error)?;
        let props = Arc::new(WriterProperties::builder().set_created_by("Casebook".to_owned()).build());
        let writer = SerializedFileWriter::new(out, Arc::new(schema), props).map_err(parquet_error)?;
        Ok(Self { writer, spec, buffers, buffered: 0, row: 0 })
    }

    /// Adds a row (`None` = missing); the whole row is checked before any of it is kept.
    ///
    /// # Errors
    /// A cell that does not fit its column (row and column named), a row of the wrong width.
    pub fn row(&mut self, cells: &[Option<&str>]) -> Result<(), TableError> {
        self.row += 1;
        if cells.len() != self.spec.columns.len() {
            return Err(TableError::Width { row: self.row, expected: self.spec.columns.len(), got: cells.len() });
        }
        // Parse first: a bad row leaves nothing behind.
        let mut parsed: Vec<Option<Parsed>> = Vec::with_capacity(cells.len());
        for (c, cell) in self.spec.columns.iter().zip(cells) {
            parsed.push(match cell {
                None => None,
                Some(v) => Some(parse(c.kind, v).ok_or_else(|| cell_error(self.row, &c.name, v, expected(c.kind)))?),
            });
        }
        for ((buffer, levels), value) in self.buffers.iter_mut().zip(parsed) {
            levels.push(i16::from(value.is_some()));
            match (buffer, value) {
                (_, None) => {}
                (Buffer::Text(v), Some(Parsed::Text(s))) => v.push(ByteArray::from(s.into_bytes())),
                (Buffer::Int64(v), Some(Parsed::Int64(n))) => v.push(n),
                (Buffer::Double(v), Some(Parsed::Double(n))) => v.push(n),
                (Buffer::Int32(v), Some(Parsed::Int32(n))) => v.push(n),
                _ => return Err(TableError::Invalid("a value of the wrong type for its column".into())),
            }
        }
        self.buffered += 1;
        if self.buffered >= ROW_GROUP_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the buffered rows as a row group.
    fn flush(&mut self) -> Result<(), TableError> {
        if self.buffered == 0 {
            return Ok(());
        }
        let mut group = self.writer.next_row_group().map_err(parquet_error)?;
        for (buffer, levels) in &mut self.buffers {
            let Some(mut column) = group.next_column().map_err(parquet_error)? else {
                return Err(TableError::Invalid("parquet: fewer columns than the schema".into()));
            };
            match buffer {
                Buffer::Text(v) => column.typed::<ByteArrayType>().write_batch(v, Some(levels), None),
                Buffer::Int64(v) => column.typed::<Int64Type>().write_batch(v, Some(levels), None),
                Buffer::Double(v) => column.typed::<DoubleType>().write_batch(v, Some(levels), None),
                Buffer::Int32(v) => column.typed::<Int32Type>().write_batch(v, Some(levels), None),
            }
            .map_err(parquet_error)?;
            column.close().map_err(parquet_error)?;
            match buffer {
                Buffer::Text(v) => v.clear(),
                Buffer::Int64(v) => v.clear(),
                Buffer::Double(v) => v.clear(),
                Buffer::Int32(v) => v.clear(),
            }
            levels.clear();
        }
        group.close().map_err(parquet_error)?;
        self.buffered = 0;
        Ok(())
    }

    /// Writes the last row group and the footer; returns the output.
    ///
    /// # Errors
    /// The output failing.
    pub fn finish(mut self) -> Result<W, TableError> {
        self.flush()?;
        self.writer.into_inner().map_err(parquet_error)
    }
}

enum Parsed {
    Text(String),
    Int64(i64),
    Double(f64),
    Int32(i32),
}

fn expected(kind: ColumnKind) -> &'static str {
    match kind {
        ColumnKind::Text => "text",
        ColumnKind::Integer => "an integer",
        ColumnKind::Decimal => "a decimal number",
        ColumnKind::Date => "a date (YYYY-MM-DD)",
        ColumnKind::DateTime => "a date and time (RFC 3339)",
        ColumnKind::Time => "a time (HH:MM[:SS])",
    }
}

fn parse(kind: ColumnKind, v: &str) -> Option<Parsed> {
    let v = v.trim();
    Some(match kind {
        ColumnKind::Text => Parsed::Text(v.to_owned()),
        ColumnKind::Integer => Parsed::Int64(crate::table_model::integer(v)?.parse().ok()?),
        ColumnKind::Decimal => Parsed::Double(v.parse::<f64>().ok().filter(|f| f.is_finite())?),
        ColumnKind::Date => {
            let d = time::Date::parse(v, time::macros::format_description!("[year]-[month]-[day]")).ok()?;
            Parsed::Int32(d.to_julian_day() - time::macros::date!(1970 - 01 - 01).to_julian_day())
        }
        ColumnKind::DateTime => {
            let t =
                time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339).ok().or_else(|| {
                    let fmt =
                        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute][optional [:[second]]]");
                    time::PrimitiveDateTime::parse(v, fmt).ok().map(time::PrimitiveDateTime::assume_utc)
                })?;
            Parsed::Int64(i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()?)
        }
        ColumnKind::Time => {
            let fmt = time::macros::format_description!("[hour]:[minute][optional [:[second]]]");
            let t = time::Time::parse(v, fmt).ok()?;
            let (h, m, s) = t.as_hms();
            Parsed::Int32((i32::from(h) * 3600 + i32::from(m) * 60 + i32::from(s)) * 1000)
        }
    })
}
