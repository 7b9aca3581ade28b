//! Problems found in an uploaded file, each with where it is.
//!
//! Importers never stop at the first problem: they collect every [`Diagnostic`] so a data manager
//! fixes the whole file in one pass. Any [`Severity::Error`] refuses the upload; warnings are
//! shown and the upload proceeds.

use std::fmt;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Error,
    Warning,
}

/// Where in the uploaded file a problem is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Location {
    /// The file as a whole.
    File,
    /// A sheet, and optionally a row (1-based, as the spreadsheet shows it) and column header.
    Sheet {
        sheet: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        row: Option<usize>,
        #[serde(skip_serializing_if = "Option::is_none")]
        column: Option<String>,
    },
    /// A position in an XML file (1-based line and column).
    Xml { line: usize, column: usize },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File => f.write_str("file"),
            Self::Sheet { sheet, row, column } => {
                write!(f, "sheet '{sheet}'")?;
                if let Some(r) = row {
                    write!(f, ", row {r}")?;
                }
                if let Some(c) = column {
                    write!(f, ", column '{c}'")?;
                }
                Ok(())
            }
            Self::Xml { line, column } => write!(f, "line {line}, column {column}"),
        }
    }
}

/// One problem in an uploaded file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub location: Location,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{s}: {}: {}", self.location, self.message)
    }
}

/// A list of diagnostics being collected.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn error(&mut self, location: Location, message: impl Into<String>) {
        self.0.push(Diagnostic { severity: Severity::Error, location, message: message.into() });
    }

    pub fn warning(&mut self, location: Location, message: impl Into<String>) {
        self.0.push(Diagnostic { severity: Severity::Warning, location, message: message.into() });
    }

    #[must_use]
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Error)
    }
}

/// A location in a sheet.
#[must_use]
pub fn at(sheet: &str, row: usize, column: Option<&str>) -> Location {
    Location::Sheet { sheet: sheet.to_owned(), row: Some(row), column: column.map(str::to_owned) }
}

/// A whole sheet.
#[must_use]
pub fn sheet(sheet: &str) -> Location {
    Location::Sheet { sheet: sheet.to_owned(), row: None, column: None }
}
