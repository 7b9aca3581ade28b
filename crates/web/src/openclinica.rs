//! OpenClinica 3 compatible sign-in, so existing scripts log in unchanged
//! (reference `openclinica-api.md` §2.1): `GET {ctx}/pages/login/login`,
//! `POST {ctx}/j_spring_security_check` (`j_username`, `j_password`) answering with the same
//! redirects (success → `{ctx}/MainMenu`; failure → `?action=errorLogin`; locked →
//! `?action=errorLocked`), and `{ctx}/j_spring_security_logout`.
//!
//! Scripts do not send CSRF tokens, so the OpenClinica form accepts a post without one, but
//! only when the browser did not mark it as coming from another site (`Origin` header of a
//! different host): that keeps login-CSRF out while keeping scripts working.

use crate::AppState;
use crate::auth::{Auth, LOGIN_CSRF_COOKIE, OC_SESSION_COOKIE, SESSION_COOKIE, cookie, set_cookie};
use crate::error::request_id;
use crate::html::{login_csrf, login_csrf_ok, login_form, page};
use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use casebook_app::AppError;
use casebook_domain::audit::Channel;
use serde::Deserialize;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/pages/login/login", get(login_page))
        .route("/j_spring_security_check", post(login_check))
        .route("/j_spring_security_logout", get(logout).post(logout))
        .route("/MainMenu", get(crate::html::landing))
        .route("/pages/auth/api/v1/system/systemstatus", post(system_status))
        .merge(crate::oc_metadata::routes())
        .merge(crate::clinical_api::openclinica_routes())
        .merge(crate::jobs_api::openclinica_routes())
}

#[derive(Deserialize)]
struct LoginQuery {
    action: Option<String>,
}

async fn login_page(State(s): State<AppState>, Query(q): Query<LoginQuery>) -> Response {
    let message = match q.action.as_deref() {
        Some("errorLogin") => Some("Invalid username or password."),
        Some("errorLocked") => Some("Your account is locked. Ask an administrator to unlock it."),
        _ => None,
    };
    let ctx = &s.web.openclinica_context;
    let (token, c) = login_csrf(s.web.secure_cookies);
    let form = login_form(&format!("{ctx}/j_spring_security_check"), "j_username", "j_password", &token, message);
    ([(header::SET_COOKIE, c)], page("Sign in", &form)).into_response()
}

#[derive(Deserialize)]
struct OcLogin {
    j_username: Option<String>,
    j_password: Option<String>,
    csrf_token: Option<String>,
}

/// Whether the request came from a page of another site.
fn cross_site(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|origin| origin.split_once("://").map(|(_, h)| h) != Some(host))
}

async fn login_check(State(s): State<AppState>, headers: HeaderMap, Form(f): Form<OcLogin>) -> Response {
    let ctx = s.web.openclinica_context.clone();
    let fail = |action: &str| found(&format!("{ctx}/pages/login/login?action={action}"));
    let form_token_ok = match f.csrf_token.as_deref() {
        Some(t) => cookie(&headers, LOGIN_CSRF_COOKIE).is_some() && login_csrf_ok(&headers, Some(t)),
        None => true,
    };
    if cross_site(&headers) || !form_token_ok {
        return (
            StatusCode::FORBIDDEN,
            page("Refused", "<p class=error>Sign-in refused: the form came from another site.</p>"),
        )
            .into_response();
    }
    let (Some(user), Some(pass)) = (f.j_username, f.j_password) else { return fail("errorLogin") };
    match s.app.login(&user, &pass, Channel::Ui, request_id(&headers)).await {
        Ok(session) => {
            let secure = s.web.secure_cookies;
            let c1 = set_cookie(SESSION_COOKIE, &session.token, "/", secure, None);
            let c2 = set_cookie(OC_SESSION_COOKIE, &session.token, &ctx, secure, None);
            let to =
                if session.must_change_password { "/account/password".to_owned() } else { format!("{ctx}/MainMenu") };
            (axum::response::AppendHeaders([(header::SET_COOKIE, c1), (header::SET_COOKIE, c2)]), found(&to))
                .into_response()
        }
        Err(AppError::AccountLocked) => fail("errorLocked"),
        Err(AppError::InvalidCredentials) => fail("errorLogin"),
        Err(e) => {
            tracing::error!(error = %e, "OpenClinica sign-in failed");
            fail("errorLogin")
        }
    }
}

async fn logout(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if cross_site(&headers) {
        return StatusCode::FORBIDDEN.into_response();
    }
    if let Ok(Some(p)) = crate::auth::resolve(&s.app, &headers).await
        && let Err(e) = s.app.logout(&p).await
    {
        tracing::error!(error = %e, "logout failed");
    }
    let ctx = &s.web.openclinica_context;
    let c1 = set_cookie(SESSION_COOKIE, "", "/", s.web.secure_cookies, Some(0));
    let c2 = set_cookie(OC_SESSION_COOKIE, "", ctx, s.web.secure_cookies, Some(0));
    (
        axum::response::AppendHeaders([(header::SET_COOKIE, c1), (header::SET_COOKIE, c2)]),
        found(&format!("{ctx}/pages/login/login")),
    )
        .into_response()
}

/// `POST /pages/auth/api/v1/system/systemstatus` (API key as HTTP Basic): version and
/// database state.
async fn system_status(State(s): State<AppState>, Auth(_p): Auth) -> Response {
    let db = if s.app.store().ping().await { "PASS" } else { "FAIL" };
    axum::Json(serde_json::json!({
        "Casebook Version": env!("CARGO_PKG_VERSION"),
        "Database Connection": db,
    }))
    .into_response()
}

/// A `302 Found` redirect, as Spring Security answers (scripts look at `Location`).
fn found(location: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, location.to_owned())]).into_response()
}
