//! The errors use cases return. The web layer maps each variant to one HTTP status and one
//! stable code; nothing else decides how an error looks to a client.

use casebook_domain::FieldError;
use casebook_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Input broke one or more rules; every problem is listed.
    #[error("the request is not valid")]
    Validation(Vec<FieldError>),
    /// The thing does not exist, or the caller may not know it exists.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The caller is known but lacks the permission.
    #[error("you do not have permission to {0}")]
    Forbidden(&'static str),
    /// No valid credentials (no session, expired session, bad or revoked key).
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// Username or password wrong (deliberately the same for both).
    #[error("invalid username or password")]
    InvalidCredentials,
    /// The account is locked.
    #[error("the account is locked; ask an administrator to unlock it")]
    AccountLocked,
    /// The user must change their password before doing anything else.
    #[error("you must change your password before continuing")]
    PasswordChangeRequired,
    /// The record already exists (duplicate username, protocol ID, role).
    #[error("{0}")]
    Conflict(String),
    /// The status change is not allowed from the current status.
    #[error("{0}")]
    InvalidTransition(String),
    /// An uploaded file or a change was refused; `details` lists every problem with its place.
    #[error("{message}")]
    Rejected { code: &'static str, message: String, details: serde_json::Value },
    /// Something failed inside; details go to the log, never to the client.
    #[error("internal error")]
    Internal(#[source] anyhow_like::Internal),
}

impl AppError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => Self::Conflict("a record with the same unique value already exists".to_owned()),
            other => Self::Internal(anyhow_like::Internal(Box::new(other))),
        }
    }
}

impl From<Vec<FieldError>> for AppError {
    fn from(e: Vec<FieldError>) -> Self {
        Self::Validation(e)
    }
}

impl From<FieldError> for AppError {
    fn from(e: FieldError) -> Self {
        Self::Validation(vec![e])
    }
}

pub mod anyhow_like {
    //! A boxed internal error that keeps its source chain for the log.
    #[derive(Debug)]
    pub struct Internal(pub Box<dyn std::error::Error + Send + Sync>);

    impl std::fmt::Display for Internal {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            self.0.fmt(f)
        }
    }

    impl std::error::Error for Internal {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.0)
        }
    }

    /// Wraps any error as internal.
    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> super::AppError {
        super::AppError::Internal(Internal(Box::new(e)))
    }

    /// An internal error from a message.
    pub fn msg(m: impl Into<String>) -> super::AppError {
        let s: String = m.into();
        super::AppError::Internal(Internal(s.into()))
    }
}
