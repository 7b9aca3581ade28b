//! Every error a client sees: one table from [`AppError`] to HTTP status and stable code.
//! A 5xx never shows internals; it carries the request id so the log entry can be found.

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use casebook_app::AppError;
use serde_json::json;

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: serde_json::Value,
    pub request_id: Option<String>,
    pub www_authenticate: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: serde_json::Value::Null,
            request_id: None,
            www_authenticate: false,
        }
    }

    #[must_use]
    pub fn with_request_id(mut self, id: Option<String>) -> Self {
        self.request_id = id;
        self
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message);
        e.www_authenticate = true;
        e
    }
}

/// The request id of a request (set by the request-id layer).
pub fn request_id(headers: &HeaderMap) -> Option<String> {
    headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        use StatusCode as S;
        match e {
            AppError::Validation(fields) => {
                let summary = fields.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
                let mut err = Self::new(
                    S::UNPROCESSABLE_ENTITY,
                    "validation_failed",
                    format!("the request is not valid: {summary}"),
                );
                err.details = json!({ "fields": fields });
                err
            }
            AppError::NotFound(what) => Self::new(S::NOT_FOUND, "not_found", format!("{what} not found")),
            AppError::Forbidden(what) => {
                Self::new(S::FORBIDDEN, "forbidden", format!("you do not have permission to {what}"))
            }
            AppError::Unauthenticated(m) => Self::unauthenticated(m),
            AppError::InvalidCredentials => {
                Self::new(S::UNAUTHORIZED, "invalid_credentials", "invalid username or password")
            }
            AppError::AccountLocked => Self::new(S::FORBIDDEN, "account_locked", e.to_string()),
            AppError::PasswordChangeRequired => Self::new(S::FORBIDDEN, "password_change_required", e.to_string()),
            AppError::Conflict(m) => Self::new(S::CONFLICT, "conflict", m),
            AppError::Rejected { code, message, details } => {
                // A save based on an old version conflicts with the newer one; everything else
                // refused is unprocessable input.
                let status = match code {
                    "stale_version" => S::CONFLICT,
                    "file_too_large" => S::PAYLOAD_TOO_LARGE,
                    _ => S::UNPROCESSABLE_ENTITY,
                };
                let mut err = Self::new(status, code, message);
                err.details = details;
                err
            }
            AppError::InvalidTransition(m) => Self::new(S::CONFLICT, "invalid_status_transition", m),
            AppError::Internal(inner) => {
                tracing::error!(error = %inner, source = ?std::error::Error::source(&inner), "internal error");
                Self::new(
                    S::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "something went wrong on the server; the request id identifies it in the log",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "code": self.code,
            "message": self.message,
            "details": self.details,
            "request_id": self.request_id,
        });
        let mut res = (self.status, Json(body)).into_response();
        if self.www_authenticate {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer, Basic realm=\"Casebook\""));
        }
        res
    }
}

/// Unknown paths.
pub async fn not_found(headers: HeaderMap, uri: axum::http::Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "route_not_found", format!("no such endpoint: {}", uri.path()))
        .with_request_id(request_id(&headers))
}

/// JSON body extractor whose rejections are our JSON errors (malformed JSON, wrong fields,
/// wrong content type, too large).
pub struct JsonBody<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::rejection::JsonRejection;
        let rid = request_id(req.headers());
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(rej) => {
                let (status, code) = match &rej {
                    JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
                    JsonRejection::JsonDataError(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
                    JsonRejection::MissingJsonContentType(_) => {
                        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
                    }
                    _ if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
                    }
                    _ => (StatusCode::BAD_REQUEST, "bad_request"),
                };
                Err(ApiError::new(status, code, rej.body_text()).with_request_id(rid))
            }
        }
    }
}
