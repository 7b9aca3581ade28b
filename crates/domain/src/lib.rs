//! The Casebook domain: the vocabulary of a clinical trial EDC as plain Rust types.
//!
//! Everything here is pure: no database, no network, no files, no wall clock (time comes in
//! through [`clock::Clock`]). Values are parsed once into types with private fields so the
//! rest of the system can rely on them being valid ("parse, don't validate").

pub mod audit;
pub mod capture;
pub mod clock;
pub mod design;
pub mod expr;
pub mod notes;
pub mod oid;
pub mod password;
pub mod role;
pub mod rules;
pub mod study;
pub mod user;

/// A problem with one named field of an input, reported to the user as-is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// The field (JSON key, form field or CLI flag) that is wrong.
    pub field: String,
    /// What is wrong with it, in words a user understands.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Checks a free-text field: trimmed, not longer than `max` characters, optionally required.
///
/// Returns the trimmed text (`None` for an empty optional field).
pub fn text_field(
    field: &str,
    value: Option<&str>,
    max: usize,
    required: bool,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let trimmed = value.map(str::trim).unwrap_or_default();
    if trimmed.is_empty() {
        if required {
            errors.push(FieldError::new(field, "is required"));
        }
        return None;
    }
    if trimmed.chars().count() > max {
        errors.push(FieldError::new(field, format!("must be at most {max} characters")));
        return None;
    }
    if trimmed.chars().any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') {
        errors.push(FieldError::new(field, "must not contain control characters"));
        return None;
    }
    Some(trimmed.to_owned())
}
