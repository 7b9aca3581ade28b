//! The password policy. Hashing itself (argon2id) lives in `app`, which owns CPU-heavy work.

use crate::FieldError;

/// What a new password must satisfy. Configurable per installation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordPolicy {
    /// Minimum length in characters.
    pub min_length: usize,
    /// Maximum length in characters (bounds the hashing work).
    pub max_length: usize,
    /// Require at least one letter and one digit.
    pub require_letter_and_digit: bool,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self { min_length: 10, max_length: 128, require_letter_and_digit: true }
    }
}

impl PasswordPolicy {
    /// Checks a proposed password for `username`; returns every rule it breaks.
    #[must_use]
    pub fn check(&self, username: &str, password: &str) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let len = password.chars().count();
        if len < self.min_length {
            errors.push(FieldError::new("password", format!("must be at least {} characters", self.min_length)));
        }
        if len > self.max_length {
            errors.push(FieldError::new("password", format!("must be at most {} characters", self.max_length)));
        }
        if self.require_letter_and_digit
            && !(password.chars().any(char::is_alphabetic) && password.chars().any(|c| c.is_ascii_digit()))
        {
            errors.push(FieldError::new("password", "must contain at least one letter and one digit"));
        }
        if !username.is_empty() && password.to_lowercase().contains(&username.to_lowercase()) {
            errors.push(FieldError::new("password", "must not contain the username"));
        }
        errors
    }

    /// Checks the policy itself (from configuration).
    ///
    /// # Errors
    /// A message naming the setting that is out of range.
    pub fn validate(&self) -> Result<(), String> {
        if !(8..=128).contains(&self.min_length) {
            return Err(format!("security.password.min_length must be between 8 and 128 (got {})", self.min_length));
        }
        if self.max_length < self.min_length || self.max_length > 1024 {
            return Err(format!(
                "security.password.max_length must be between min_length ({}) and 1024 (got {})",
                self.min_length, self.max_length
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_reports_every_broken_rule() {
        let p = PasswordPolicy::default();
        assert!(p.check("jane", "correct-horse-7").is_empty());
        assert_eq!(p.check("jane", "short1").len(), 1);
        assert_eq!(p.check("jane", "no digits here at all").len(), 1);
        let errs = p.check("jane", "JANE123");
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs.iter().any(|e| e.message.contains("username")));
    }

    #[test]
    fn policy_validation() {
        assert!(PasswordPolicy::default().validate().is_ok());
        assert!(PasswordPolicy { min_length: 4, ..PasswordPolicy::default() }.validate().is_err());
    }
}
