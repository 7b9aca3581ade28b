//! Who is calling: session cookies (browser), `Authorization: Bearer <key>` and
//! OpenClinica-style `Authorization: Basic base64(<key>:<anything>)` (API keys), and the
//! CSRF rule for cookie-authenticated writes.

use crate::AppState;
use crate::error::{ApiError, request_id};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use base64::Engine;
use casebook_app::{App, Principal};

pub const SESSION_COOKIE: &str = "casebook_session";
/// The cookie OpenClinica clients know; set on the OpenClinica login path as well.
pub const OC_SESSION_COOKIE: &str = "JSESSIONID";
pub const LOGIN_CSRF_COOKIE: &str = "casebook_login_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The value of a cookie in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value.
pub fn set_cookie(name: &str, value: &str, path: &str, secure: bool, max_age: Option<i64>) -> String {
    let mut c = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Lax");
    if secure {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    c
}

/// How a request authenticates, before resolution.
pub enum Credentials {
    ApiKey(String),
    Session(String),
    None,
}

/// Reads credentials from the headers.
///
/// # Errors
/// A 401 for an `Authorization` header that is not a usable Bearer or Basic value.
pub fn credentials(headers: &HeaderMap) -> Result<Credentials, ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value =
            value.to_str().map_err(|_| ApiError::unauthenticated("the Authorization header is not readable text"))?;
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        return match scheme.to_ascii_lowercase().as_str() {
            "bearer" => Ok(Credentials::ApiKey(rest.trim().to_owned())),
            "basic" => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(rest.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        ApiError::unauthenticated("Invalid authentication token: Basic credentials are not base64")
                    })?;
                let (key, _password) = decoded.split_once(':').ok_or_else(|| {
                    ApiError::unauthenticated("Invalid authentication token: expected <api key>:<any password>")
                })?;
                Ok(Credentials::ApiKey(key.trim().to_owned()))
            }
            _ => Err(ApiError::unauthenticated("unsupported Authorization scheme: use Bearer <api key> or Basic")),
        };
    }
    match cookie(headers, SESSION_COOKIE).or_else(|| cookie(headers, OC_SESSION_COOKIE)) {
        Some(token) if !token.is_empty() => Ok(Credentials::Session(token.to_owned())),
        _ => Ok(Credentials::None),
    }
}

/// Resolves the caller, if any credentials were sent.
///
/// # Errors
/// 401 for bad, expired or revoked credentials.
pub async fn resolve(app: &App, headers: &HeaderMap) -> Result<Option<Principal>, ApiError> {
    let rid = request_id(headers);
    let principal = match credentials(headers).map_err(|e| e.with_request_id(rid.clone()))? {
        Credentials::ApiKey(key) => app.authenticate_api_key(&key, rid.clone()).await,
        Credentials::Session(token) => app.authenticate_session(&token, rid.clone()).await,
        Credentials::None => return Ok(None),
    };
    principal.map(Some).map_err(|e| ApiError::from(e).with_request_id(rid))
}

/// An authenticated API caller. For cookie sessions, unsafe methods need the session's CSRF
/// token in `X-CSRF-Token`; a user who must change their password can only do that.
pub struct Auth(pub Principal);

/// Paths a user with a pending password change may still use.
const PASSWORD_CHANGE_PATHS: [&str; 3] = ["/me", "/me/password", "/auth/logout"];

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let rid = request_id(&parts.headers);
        let Some(p) = resolve(&state.app, &parts.headers).await? else {
            return Err(ApiError::unauthenticated("sign in, or send an API key as Authorization: Bearer <key>")
                .with_request_id(rid));
        };
        let unsafe_method = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if unsafe_method {
            let token = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
            if !App::csrf_ok(&p, token) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "csrf_failed",
                    "missing or wrong X-CSRF-Token header (required for browser sessions)",
                )
                .with_request_id(rid));
            }
        }
        let path = parts.uri.path();
        if p.must_change_password
            && !PASSWORD_CHANGE_PATHS.iter().any(|x| path == *x || path.ends_with(&format!("/api/v1{x}")))
        {
            return Err(ApiError::from(casebook_app::AppError::PasswordChangeRequired).with_request_id(rid));
        }
        Ok(Self(p))
    }
}
