//! Readers and writers of study designs and clinical data files.
//!
//! No database and no IO of its own: importers take bytes or parsed sheets and return domain
//! types with every problem found ([`diagnostic::Diagnostics`]); writers take domain types and a
//! `Write`.

pub mod design_check;
pub mod diagnostic;
pub mod occrf;
pub mod odm;
pub mod rules;
pub mod table;
pub mod table_json;
pub mod table_model;
pub mod table_parquet;
pub mod table_xlsx;
pub mod workbook;
pub mod xlsform;
