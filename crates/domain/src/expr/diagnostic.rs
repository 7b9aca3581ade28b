//! Problems found in an expression, with where they are.

use std::ops::Range;

/// How serious a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The expression is refused.
    Error,
    /// The expression works but probably does not do what was meant.
    Warning,
}

/// One problem in one expression.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExprDiagnostic {
    /// Byte range in the expression source (`source[span]` is the offending text).
    pub span: Range<usize>,
    /// What is wrong, in words a data manager understands.
    pub message: String,
    /// Error or warning.
    pub severity: Severity,
}

impl ExprDiagnostic {
    pub(crate) fn error(span: Range<usize>, message: impl Into<String>) -> Self {
        Self { span, message: message.into(), severity: Severity::Error }
    }

    pub(crate) fn warning(span: Range<usize>, message: impl Into<String>) -> Self {
        Self { span, message: message.into(), severity: Severity::Warning }
    }

    /// Whether this is an error (not a warning).
    #[must_use]
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl std::fmt::Display for ExprDiagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{kind} at {}..{}: {}", self.span.start, self.span.end, self.message)
    }
}

/// The 1-based column (in characters, as a person counts) of a byte offset.
pub(crate) fn column(source: &str, byte: usize) -> usize {
    source.get(..byte).map_or(byte, |s| s.chars().count()) + 1
}
