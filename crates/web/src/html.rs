//! The minimal HTML pages: sign-in, landing page, password change, API keys, sign-out.
//! Every form that changes state carries a CSRF token (the session's, or before sign-in a
//! double-submit cookie). The full Study Runner UI comes later.

use crate::AppState;
use crate::auth::{LOGIN_CSRF_COOKIE, OC_SESSION_COOKIE, SESSION_COOKIE, cookie, resolve, set_cookie};
use crate::error::request_id;
use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use casebook_app::auth::Via;
use casebook_app::{App, AppError, Principal};
use casebook_domain::audit::Channel;
use serde::Deserialize;

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content='width=device-width,initial-scale=1'>\
         <title>{} · Casebook</title><style>\
         body{{font-family:system-ui,sans-serif;margin:0;color:#1d2733;background:#f4f6f8}}\
         header{{background:#183a5a;color:#fff;padding:.7rem 1.2rem;display:flex;justify-content:space-between;align-items:center}}\
         header a,header button{{color:#fff}}main{{max-width:52rem;margin:1.5rem auto;background:#fff;padding:1.2rem 1.6rem;border-radius:8px;box-shadow:0 1px 3px #0002}}\
         label{{display:block;margin:.6rem 0 .2rem}}input{{padding:.45rem;width:100%;max-width:22rem;box-sizing:border-box}}\
         button{{padding:.45rem 1rem;margin-top:.8rem;cursor:pointer}}.error{{background:#fde8e8;color:#8a1c1c;padding:.6rem;border-radius:4px}}\
         .notice{{background:#e8f3fd;padding:.6rem;border-radius:4px}}table{{border-collapse:collapse;width:100%}}td,th{{text-align:left;padding:.35rem;border-bottom:1px solid #e2e6ea}}\
         code{{background:#eef1f4;padding:.1rem .3rem;border-radius:3px}}form.inline{{display:inline}}</style></head>\
         <body><header><strong>Casebook</strong><span><a href=/api/docs>API docs</a></span></header><main>{}</main></body></html>",
        escape(title),
        body
    ))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(landing))
        .route("/studies/{oid}/design", get(design_page))
        .route("/login", get(login_page).post(login_submit))
        .route("/logout", axum::routing::post(logout))
        .route("/account/password", get(password_page).post(password_submit))
        .route("/account/api-keys", axum::routing::post(create_key))
        .route("/account/api-keys/revoke", axum::routing::post(revoke_key))
}

/// A fresh login CSRF token and the cookie that carries it.
pub fn login_csrf(secure: bool) -> (String, String) {
    let token = casebook_app::secrets::random_token(16);
    let c = set_cookie(LOGIN_CSRF_COOKIE, &token, "/", secure, Some(3600));
    (token, c)
}

/// The sign-in form, posting to `action` with the field names given (ours or OpenClinica's).
pub fn login_form(action: &str, user_field: &str, pass_field: &str, csrf: &str, message: Option<&str>) -> String {
    let msg = message.map(|m| format!("<p class=error role=alert>{}</p>", escape(m))).unwrap_or_default();
    format!(
        "<h1>Sign in</h1>{msg}<form method=post action='{}'>\
         <input type=hidden name=csrf_token value='{}'>\
         <label for=u>Username</label><input id=u name='{user_field}' autocomplete=username required autofocus>\
         <label for=p>Password</label><input id=p type=password name='{pass_field}' autocomplete=current-password required>\
         <button type=submit>Sign in</button></form>",
        escape(action),
        escape(csrf)
    )
}

async fn login_page(State(s): State<AppState>) -> Response {
    let (token, c) = login_csrf(s.web.secure_cookies);
    ([(header::SET_COOKIE, c)], page("Sign in", &login_form("/login", "username", "password", &token, None)))
        .into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    csrf_token: Option<String>,
}

fn login_error(s: &AppState, status: StatusCode, message: &str) -> Response {
    let (token, c) = login_csrf(s.web.secure_cookies);
    (
        status,
        [(header::SET_COOKIE, c)],
        page("Sign in", &login_form("/login", "username", "password", &token, Some(message))),
    )
        .into_response()
}

/// Whether a form's login CSRF token matches its cookie.
pub fn login_csrf_ok(headers: &HeaderMap, form_token: Option<&str>) -> bool {
    match (cookie(headers, LOGIN_CSRF_COOKIE), form_token) {
        (Some(c), Some(f)) => !c.is_empty() && casebook_app::secrets::constant_time_eq(c, f),
        _ => false,
    }
}

async fn login_submit(State(s): State<AppState>, headers: HeaderMap, Form(f): Form<LoginForm>) -> Response {
    if !login_csrf_ok(&headers, f.csrf_token.as_deref()) {
        return login_error(
            &s,
            StatusCode::FORBIDDEN,
            "The form expired or did not come from this site. Please sign in again.",
        );
    }
    match s.app.login(&f.username, &f.password, Channel::Ui, request_id(&headers)).await {
        Ok(session) => {
            let c = set_cookie(SESSION_COOKIE, &session.token, "/", s.web.secure_cookies, None);
            let to = if session.must_change_password { "/account/password" } else { "/" };
            ([(header::SET_COOKIE, c)], Redirect::to(to)).into_response()
        }
        Err(AppError::AccountLocked) => {
            login_error(&s, StatusCode::FORBIDDEN, "Your account is locked. Ask an administrator to unlock it.")
        }
        Err(AppError::InvalidCredentials) => login_error(&s, StatusCode::UNAUTHORIZED, "Invalid username or password."),
        Err(e) => {
            tracing::error!(error = %e, "sign-in failed");
            login_error(
                &s,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sign-in failed because of a server problem. Please try again.",
            )
        }
    }
}

/// The signed-in browser user, or a redirect to the sign-in page.
async fn browser_user(app: &App, headers: &HeaderMap) -> Result<Principal, Response> {
    match resolve(app, headers).await {
        Ok(Some(p)) if matches!(p.via, Via::Session { .. }) => Ok(p),
        _ => Err(Redirect::to("/login").into_response()),
    }
}

fn csrf_of(p: &Principal) -> &str {
    match &p.via {
        Via::Session { csrf_token, .. } => csrf_token,
        _ => "",
    }
}

/// The landing page: who you are, your roles, your API keys.
pub async fn landing(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let p = match browser_user(&s.app, &headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    if p.must_change_password {
        return Redirect::to("/account/password").into_response();
    }
    landing_body(&s, &p, None).await
}

async fn landing_body(s: &AppState, p: &Principal, notice: Option<String>) -> Response {
    let roles = s.app.my_roles(p).await.unwrap_or_default();
    let keys = s.app.api_keys(p).await.unwrap_or_default();
    let csrf = escape(csrf_of(p));
    let mut body = format!(
        "<h1>Welcome, {}</h1><p>User type: <code>{}</code></p>{}",
        escape(&p.username),
        p.user_type.as_str(),
        notice.unwrap_or_default()
    );
    body.push_str("<h2>Your studies and roles</h2>");
    if roles.is_empty() {
        body.push_str("<p>You have no study roles yet.</p>");
    } else {
        body.push_str("<table><tr><th>Study</th><th>Site</th><th>Role</th></tr>");
        for r in &roles {
            body.push_str(&format!(
                "<tr><td><a href='/studies/{0}/design'>{0}</a></td><td>{1}</td><td>{2}</td></tr>",
                escape(&r.study_oid),
                escape(r.site_oid.as_deref().unwrap_or("all sites")),
                escape(&r.label)
            ));
        }
        body.push_str("</table>");
    }
    body.push_str("<h2>API keys</h2><table><tr><th>Name</th><th>Prefix</th><th>Last used</th><th></th></tr>");
    for k in &keys {
        let action = if k.revoked_at.is_some() {
            "revoked".to_owned()
        } else {
            format!(
                "<form class=inline method=post action=/account/api-keys/revoke><input type=hidden name=csrf_token value='{csrf}'>\
                 <input type=hidden name=id value='{}'><button>Revoke</button></form>",
                k.id
            )
        };
        let used = k.last_used_at.map_or_else(|| "never".to_owned(), |t| t.to_string());
        body.push_str(&format!(
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{action}</td></tr>",
            escape(&k.name),
            escape(&k.prefix),
            escape(&used)
        ));
    }
    body.push_str(&format!(
        "</table><form method=post action=/account/api-keys><input type=hidden name=csrf_token value='{csrf}'>\
         <label for=kn>New key name</label><input id=kn name=name required maxlength=100><button>Create API key</button></form>\
         <p><a href=/account/password>Change password</a></p>\
         <form method=post action=/logout><input type=hidden name=csrf_token value='{csrf}'><button>Sign out</button></form>"
    ));
    page("Home", &body).into_response()
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf_token: Option<String>,
}

fn csrf_refused() -> Response {
    (
        StatusCode::FORBIDDEN,
        page(
            "Refused",
            "<p class=error>The form expired or did not come from this site. Go back, reload and try again.</p>",
        ),
    )
        .into_response()
}

async fn logout(State(s): State<AppState>, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    let p = match browser_user(&s.app, &headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    if !App::csrf_ok(&p, f.csrf_token.as_deref()) {
        return csrf_refused();
    }
    if let Err(e) = s.app.logout(&p).await {
        tracing::error!(error = %e, "logout failed");
    }
    let c1 = set_cookie(SESSION_COOKIE, "", "/", s.web.secure_cookies, Some(0));
    let c2 = set_cookie(OC_SESSION_COOKIE, "", &s.web.openclinica_context, s.web.secure_cookies, Some(0));
    (axum::response::AppendHeaders([(header::SET_COOKIE, c1), (header::SET_COOKIE, c2)]), Redirect::to("/login"))
        .into_response()
}

fn password_form(p: &Principal, message: Option<&str>) -> String {
    let intro = if p.must_change_password {
        "<p class=notice>You must choose a new password before you continue.</p>"
    } else {
        ""
    };
    let msg = message.map(|m| format!("<p class=error role=alert>{}</p>", escape(m))).unwrap_or_default();
    format!(
        "<h1>Change password</h1>{intro}{msg}<form method=post action=/account/password>\
         <input type=hidden name=csrf_token value='{}'>\
         <label for=c>Current password</label><input id=c type=password name=current_password autocomplete=current-password required>\
         <label for=n>New password</label><input id=n type=password name=new_password autocomplete=new-password required>\
         <button>Change password</button></form>",
        escape(csrf_of(p))
    )
}

async fn password_page(State(s): State<AppState>, headers: HeaderMap) -> Response {
    match browser_user(&s.app, &headers).await {
        Ok(p) => page("Change password", &password_form(&p, None)).into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct PasswordForm {
    csrf_token: Option<String>,
    current_password: String,
    new_password: String,
}

async fn password_submit(State(s): State<AppState>, headers: HeaderMap, Form(f): Form<PasswordForm>) -> Response {
    let p = match browser_user(&s.app, &headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    if !App::csrf_ok(&p, f.csrf_token.as_deref()) {
        return csrf_refused();
    }
    match s.app.change_password(&p, &f.current_password, &f.new_password).await {
        Ok(()) => {
            let c = set_cookie(SESSION_COOKIE, "", "/", s.web.secure_cookies, Some(0));
            let (token, lc) = login_csrf(s.web.secure_cookies);
            let body = format!(
                "<p class=notice>Your password was changed. Sign in with the new password.</p>{}",
                login_form("/login", "username", "password", &token, None)
            );
            (axum::response::AppendHeaders([(header::SET_COOKIE, c), (header::SET_COOKIE, lc)]), page("Sign in", &body))
                .into_response()
        }
        Err(AppError::Validation(errors)) => {
            let m = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
            (StatusCode::UNPROCESSABLE_ENTITY, page("Change password", &password_form(&p, Some(&m)))).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "password change failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                page("Change password", &password_form(&p, Some("A server problem stopped the change."))),
            )
                .into_response()
        }
    }
}

#[derive(Deserialize)]
struct KeyForm {
    csrf_token: Option<String>,
    name: String,
}

async fn create_key(State(s): State<AppState>, headers: HeaderMap, Form(f): Form<KeyForm>) -> Response {
    let p = match browser_user(&s.app, &headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    if !App::csrf_ok(&p, f.csrf_token.as_deref()) {
        return csrf_refused();
    }
    if p.must_change_password {
        return Redirect::to("/account/password").into_response();
    }
    let notice = match s.app.create_api_key(&p, &f.name).await {
        Ok(k) => format!(
            "<p class=notice>New API key <strong>{}</strong>: <code id=new-key>{}</code><br>Copy it now: it is shown only once.</p>",
            escape(&k.name),
            escape(&k.key)
        ),
        Err(e) => format!("<p class=error>{}</p>", escape(&e.to_string())),
    };
    landing_body(&s, &p, Some(notice)).await
}

#[derive(Deserialize)]
struct RevokeForm {
    csrf_token: Option<String>,
    id: i64,
}

async fn revoke_key(State(s): State<AppState>, headers: HeaderMap, Form(f): Form<RevokeForm>) -> Response {
    let p = match browser_user(&s.app, &headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    if !App::csrf_ok(&p, f.csrf_token.as_deref()) {
        return csrf_refused();
    }
    let notice = match s.app.revoke_api_key(&p, f.id).await {
        Ok(()) => "<p class=notice>The key was revoked.</p>".to_owned(),
        Err(e) => format!("<p class=error>{}</p>", escape(&e.to_string())),
    };
    landing_body(&s, &p, Some(notice)).await
}

/// A study's design as people read it: versions and environments, events and their forms, and
/// links to the printable forms and ODM exports.
async fn design_page(
    State(s): State<AppState>,
    headers: HeaderMap,
    axum::extract::Path(oid): axum::extract::Path<String>,
) -> Response {
    use casebook_app::design::Which;
    let p = match browser_user(&s.app, &headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let versions = match s.app.design_versions(&p, &oid).await {
        Ok(v) => v,
        Err(e) => {
            let status = crate::error::ApiError::from(e).status;
            return (status, page("Design", "<p class=error>This study does not exist or you have no role in it.</p>"))
                .into_response();
        }
    };
    let oc = &s.web.openclinica_context;
    let mut body = format!("<h1>Design of {}</h1>", escape(&oid));
    if versions.is_empty() {
        body.push_str("<p>No version of the design has been published yet.</p>");
    } else {
        body.push_str("<h2>Published versions</h2><table><tr><th>Version</th><th>Environment</th><th>Published</th><th>Hash</th></tr>");
        for v in versions.iter().rev() {
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                v.number,
                v.environment,
                escape(&v.published_at.to_string()),
                escape(&v.hash[..12.min(v.hash.len())])
            ));
        }
        body.push_str("</table>");
    }
    let which = if versions.iter().any(|v| v.production_at.is_some()) { Which::Production } else { Which::Test };
    if let Ok(design) = s.app.design(&p, &oid, which).await {
        body.push_str(&format!(
            "<h2>Events ({})</h2><table><tr><th>Event</th><th>Type</th><th>Forms</th></tr>",
            if which == Which::Production { "Production" } else { "Test" }
        ));
        for e in &design.events {
            let forms: Vec<String> = e
                .forms
                .iter()
                .map(|f| {
                    let name = design.form(f.form_oid.as_str()).map_or(f.form_oid.as_str(), |x| x.name.as_str());
                    format!("{}{}", escape(name), if f.required { " (required)" } else { "" })
                })
                .collect();
            body.push_str(&format!(
                "<tr><td>{} <small><code>{}</code></small></td><td>{}{}</td><td>{}</td></tr>",
                escape(&e.name),
                escape(e.oid.as_str()),
                e.event_type.odm(),
                if e.repeating { ", repeating" } else { "" },
                forms.join("<br>")
            ));
        }
        body.push_str("</table><h2>Forms</h2><table><tr><th>Form</th><th>Version</th><th>Items</th><th></th></tr>");
        for f in &design.forms {
            for v in &f.versions {
                body.push_str(&format!(
                    "<tr><td>{}</td><td>{} <small><code>{}</code></small></td><td>{}</td><td><a href='{oc}/rest/metadata/html/print/{}/*/{}'>print blank form</a></td></tr>",
                    escape(&f.name),
                    escape(&v.label),
                    escape(v.oid.as_str()),
                    v.items.len(),
                    escape(&oid),
                    escape(v.oid.as_str())
                ));
            }
        }
        body.push_str("</table>");
    }
    body.push_str(&format!(
        "<h2>Exports</h2><p>CDISC ODM: <a href='/api/v1/studies/{0}/design/odm?format=odm13&version=production'>1.3.2</a> · \
         <a href='/api/v1/studies/{0}/design/odm?format=odm13-oc&version=production'>1.3.2 with OpenClinica extensions</a> · \
         <a href='/api/v1/studies/{0}/design/odm?format=odm2&version=production'>2.0</a></p><p><a href=/>Home</a></p>",
        escape(&oid)
    ));
    page(&format!("Design of {oid}"), &body).into_response()
}
