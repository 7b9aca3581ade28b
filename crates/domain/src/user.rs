//! User accounts: usernames, user types and account statuses.

use crate::FieldError;
use std::fmt;
use std::str::FromStr;

/// A username: 1..=64 characters of letters, digits, `.`, `_`, `-` and `@`, starting with a
/// letter or digit. Compared case-sensitively, as OpenClinica does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Username(String);

impl Username {
    /// # Errors
    /// A [`FieldError`] on field `username` describing what is wrong.
    pub fn parse(text: &str) -> Result<Self, FieldError> {
        let t = text.trim();
        if t.is_empty() {
            return Err(FieldError::new("username", "is required"));
        }
        if t.chars().count() > 64 {
            return Err(FieldError::new("username", "must be at most 64 characters"));
        }
        let first_ok = t.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        let all_ok = t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
        if !first_ok || !all_ok {
            return Err(FieldError::new(
                "username",
                "must start with a letter or digit and contain only letters, digits, '.', '_', '-' and '@'",
            ));
        }
        Ok(Self(t.to_owned()))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Global user type (OpenClinica `user_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserType {
    /// Manages everything, including other administrators.
    TechnicalAdministrator,
    /// Manages studies, users and sites, but not technical administrators.
    BusinessAdministrator,
    /// Works only through study and site roles.
    User,
}

impl UserType {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TechnicalAdministrator => "technical_administrator",
            Self::BusinessAdministrator => "business_administrator",
            Self::User => "user",
        }
    }

    /// Administrators see and manage every study.
    #[must_use]
    pub fn is_admin(self) -> bool {
        !matches!(self, Self::User)
    }

    /// Whether a user of this type may create, edit, lock or reset a user of type `other`.
    #[must_use]
    pub fn may_manage(self, other: UserType) -> bool {
        match self {
            Self::TechnicalAdministrator => true,
            Self::BusinessAdministrator => other != Self::TechnicalAdministrator,
            Self::User => false,
        }
    }
}

impl FromStr for UserType {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace([' ', '-'], "_").as_str() {
            "technical_administrator" | "tech_admin" => Ok(Self::TechnicalAdministrator),
            "business_administrator" | "business_admin" | "sysadmin" => Ok(Self::BusinessAdministrator),
            "user" => Ok(Self::User),
            _ => Err(FieldError::new(
                "user_type",
                format!("'{s}' is not a user type: use technical_administrator, business_administrator or user"),
            )),
        }
    }
}

/// Account status. Accounts are never deleted: removal is a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    Active,
    /// Locked after too many failed sign-ins, or by an administrator.
    Locked,
    /// Removed by an administrator; may be restored.
    Removed,
}

impl UserStatus {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Locked => "locked",
            Self::Removed => "removed",
        }
    }
}

impl FromStr for UserStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(Self::Active),
            "locked" => Ok(Self::Locked),
            "removed" => Ok(Self::Removed),
            other => Err(format!("unknown user status '{other}'")),
        }
    }
}

/// Checks an e-mail address loosely: one `@`, something on each side, a dot in the domain.
///
/// # Errors
/// A [`FieldError`] on field `email`.
pub fn parse_email(text: &str) -> Result<String, FieldError> {
    let t = text.trim();
    let valid = t.len() <= 254
        && t.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        })
        && !t.chars().any(char::is_whitespace)
        && t.matches('@').count() == 1;
    if valid { Ok(t.to_owned()) } else { Err(FieldError::new("email", format!("'{t}' is not an e-mail address"))) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert!(Username::parse("jane.doe@site-1").is_ok());
        assert_eq!(Username::parse("  bob ").map(|u| u.0), Ok("bob".to_owned()));
        assert!(Username::parse("").is_err());
        assert!(Username::parse("_x").is_err());
        assert!(Username::parse("a b").is_err());
        assert!(Username::parse("a<b").is_err());
    }

    #[test]
    fn business_admins_cannot_manage_technical_admins() {
        assert!(UserType::TechnicalAdministrator.may_manage(UserType::TechnicalAdministrator));
        assert!(!UserType::BusinessAdministrator.may_manage(UserType::TechnicalAdministrator));
        assert!(UserType::BusinessAdministrator.may_manage(UserType::User));
        assert!(!UserType::User.may_manage(UserType::User));
    }

    #[test]
    fn emails() {
        assert!(parse_email("a@b.org").is_ok());
        assert!(parse_email("a@b").is_err());
        assert!(parse_email("a b@c.org").is_err());
        assert!(parse_email("@c.org").is_err());
    }
}
