//! The native REST API under `/api/v1`.

use crate::AppState;
use crate::auth::{Auth, SESSION_COOKIE, set_cookie};
use crate::error::{ApiError, JsonBody, request_id};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use casebook_app::accounts::{NewUserInput, UserAction, UserPatch};
use casebook_app::audit::Paging;
use casebook_app::studies::{NewSiteInput, NewStudyInput, RoleInput, StudyUpdate};
use casebook_domain::audit::Channel;
use casebook_domain::study::StudyStatus;
use serde::Deserialize;
use serde_json::json;

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// Adds the request id to an application error.
pub(crate) trait WithRid<T> {
    fn rid(self, headers: &HeaderMap) -> ApiResult<T>;
}

impl<T> WithRid<T> for Result<T, casebook_app::AppError> {
    fn rid(self, headers: &HeaderMap) -> ApiResult<T> {
        self.map_err(|e| ApiError::from(e).with_request_id(request_id(headers)))
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .route("/me", get(me))
        .route("/me/password", post(change_password))
        .route("/me/api-keys", get(list_keys).post(create_key))
        .route("/me/api-keys/{id}", delete(revoke_key))
        .route("/users", get(list_users).post(create_user))
        .route("/users/{username}", get(get_user).patch(update_user))
        .route("/users/{username}/lock", post(lock_user))
        .route("/users/{username}/unlock", post(unlock_user))
        .route("/users/{username}/remove", post(remove_user))
        .route("/users/{username}/restore", post(restore_user))
        .route("/users/{username}/reset-password", post(reset_password))
        .route("/users/{username}/audit", get(user_audit))
        .route("/studies", get(list_studies).post(create_study))
        .route("/studies/{oid}", get(get_study).patch(update_study))
        .route("/studies/{oid}/status", post(study_status))
        .route("/studies/{oid}/sites", get(list_sites).post(create_site))
        .route("/studies/{oid}/sites/{site}", get(get_site).patch(update_site))
        .route("/studies/{oid}/sites/{site}/status", post(site_status))
        .route("/studies/{oid}/roles", get(list_roles).post(assign_role))
        .route("/studies/{oid}/roles/{username}", delete(remove_role))
        .route("/studies/{oid}/audit", get(study_audit))
        .route("/audit", get(entity_audit))
        .route("/audit/verify", post(verify_audit))
        .route("/openapi.json", get(crate::docs::openapi))
        .merge(crate::design_api::routes())
        .merge(crate::capture_api::routes())
        .merge(crate::review_api::routes())
        .merge(crate::matrix_api::routes())
        .merge(crate::notes_api::routes())
        .merge(crate::rules_api::routes())
        .merge(crate::clinical_api::routes())
        .merge(crate::jobs_api::routes())
        .merge(crate::extracts_api::routes())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: String,
    password: String,
}

/// Signs in with a password and starts a browser session (cookie); returns the CSRF token
/// to send as `X-CSRF-Token` on writes.
async fn login(State(s): State<AppState>, headers: HeaderMap, JsonBody(b): JsonBody<LoginBody>) -> ApiResult<Response> {
    let session = s.app.login(&b.username, &b.password, Channel::Api, request_id(&headers)).await.rid(&headers)?;
    let cookie = set_cookie(SESSION_COOKIE, &session.token, "/", s.web.secure_cookies, None);
    let body = Json(json!({"csrf_token": session.csrf_token, "must_change_password": session.must_change_password}));
    Ok(([(header::SET_COOKIE, cookie)], body).into_response())
}

async fn logout(State(s): State<AppState>, headers: HeaderMap, Auth(p): Auth) -> ApiResult<Response> {
    s.app.logout(&p).await.rid(&headers)?;
    let cookie = set_cookie(SESSION_COOKIE, "", "/", s.web.secure_cookies, Some(0));
    Ok(([(header::SET_COOKIE, cookie)], StatusCode::NO_CONTENT).into_response())
}

async fn me(State(s): State<AppState>, headers: HeaderMap, Auth(p): Auth) -> ApiResult<Json<serde_json::Value>> {
    let user = s.app.store().user_by_id(p.user_id).await.map_err(casebook_app::AppError::from).rid(&headers)?;
    let user = user.map(casebook_app::accounts::UserView::from);
    let roles = s.app.my_roles(&p).await.rid(&headers)?;
    let via = match p.via {
        casebook_app::auth::Via::Session { .. } => "session",
        casebook_app::auth::Via::ApiKey { .. } => "api_key",
        casebook_app::auth::Via::Cli => "cli",
    };
    Ok(Json(json!({"user": user, "roles": roles, "authenticated_by": via})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    current_password: String,
    new_password: String,
}

async fn change_password(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    JsonBody(b): JsonBody<PasswordBody>,
) -> ApiResult<StatusCode> {
    s.app.change_password(&p, &b.current_password, &b.new_password).await.rid(&headers)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_keys(State(s): State<AppState>, headers: HeaderMap, Auth(p): Auth) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(json!({"api_keys": s.app.api_keys(&p).await.rid(&headers)?})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    name: String,
}

async fn create_key(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    JsonBody(b): JsonBody<KeyBody>,
) -> ApiResult<Response> {
    let key = s.app.create_api_key(&p, &b.name).await.rid(&headers)?;
    Ok((StatusCode::CREATED, Json(key)).into_response())
}

async fn revoke_key(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    s.app.revoke_api_key(&p, id).await.rid(&headers)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_users(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(json!({"users": s.app.list_users(&p).await.rid(&headers)?})))
}

async fn create_user(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    JsonBody(b): JsonBody<NewUserInput>,
) -> ApiResult<Response> {
    let created = s.app.create_user(&p, b).await.rid(&headers)?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn get_user(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(u): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(s.app.get_user(&p, &u).await.rid(&headers)?).into_response())
}

async fn update_user(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(u): Path<String>,
    JsonBody(b): JsonBody<UserPatch>,
) -> ApiResult<Response> {
    Ok(Json(s.app.update_user(&p, &u, b).await.rid(&headers)?).into_response())
}

async fn user_action(
    s: &AppState,
    headers: &HeaderMap,
    p: &casebook_app::Principal,
    u: &str,
    a: UserAction,
) -> ApiResult<Response> {
    Ok(Json(s.app.set_user_status(p, u, a).await.rid(headers)?).into_response())
}

async fn lock_user(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(u): Path<String>,
) -> ApiResult<Response> {
    user_action(&s, &headers, &p, &u, UserAction::Lock).await
}

async fn unlock_user(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(u): Path<String>,
) -> ApiResult<Response> {
    user_action(&s, &headers, &p, &u, UserAction::Unlock).await
}

async fn remove_user(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(u): Path<String>,
) -> ApiResult<Response> {
    user_action(&s, &headers, &p, &u, UserAction::Remove).await
}

async fn restore_user(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(u): Path<String>,
) -> ApiResult<Response> {
    user_action(&s, &headers, &p, &u, UserAction::Restore).await
}

async fn reset_password(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(u): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let password = s.app.reset_password(&p, &u).await.rid(&headers)?;
    Ok(Json(json!({"username": u, "temporary_password": password, "must_change_password": true})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    #[serde(default)]
    after: i64,
    #[serde(default = "default_limit")]
    limit: i64,
    site_oid: Option<String>,
    entity_type: Option<String>,
    entity_id: Option<String>,
}

fn default_limit() -> i64 {
    100
}

async fn user_audit(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(u): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Response> {
    Ok(Json(s.app.user_audit(&p, &u, Paging { after: q.after, limit: q.limit }).await.rid(&headers)?).into_response())
}

async fn list_studies(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(json!({"studies": s.app.list_studies(&p).await.rid(&headers)?})))
}

async fn create_study(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    JsonBody(b): JsonBody<NewStudyInput>,
) -> ApiResult<Response> {
    Ok((StatusCode::CREATED, Json(s.app.create_study(&p, b).await.rid(&headers)?)).into_response())
}

async fn get_study(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(s.app.get_study(&p, &oid).await.rid(&headers)?).into_response())
}

async fn update_study(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
    JsonBody(b): JsonBody<StudyUpdate>,
) -> ApiResult<Response> {
    Ok(Json(s.app.update_study(&p, &oid, b).await.rid(&headers)?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusBody {
    status: String,
    reason: Option<String>,
}

fn parse_status(b: &StatusBody, headers: &HeaderMap) -> ApiResult<StudyStatus> {
    b.status
        .parse::<StudyStatus>()
        .map_err(|e| ApiError::from(casebook_app::AppError::from(e)).with_request_id(request_id(headers)))
}

async fn study_status(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
    JsonBody(b): JsonBody<StatusBody>,
) -> ApiResult<Response> {
    let to = parse_status(&b, &headers)?;
    Ok(Json(s.app.set_study_status(&p, &oid, to, b.reason).await.rid(&headers)?).into_response())
}

async fn list_sites(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(json!({"sites": s.app.list_sites(&p, &oid).await.rid(&headers)?})))
}

async fn create_site(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
    JsonBody(b): JsonBody<NewSiteInput>,
) -> ApiResult<Response> {
    Ok((StatusCode::CREATED, Json(s.app.create_site(&p, &oid, b).await.rid(&headers)?)).into_response())
}

async fn get_site(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((oid, site)): Path<(String, String)>,
) -> ApiResult<Response> {
    Ok(Json(s.app.get_site(&p, &oid, &site).await.rid(&headers)?).into_response())
}

async fn update_site(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((oid, site)): Path<(String, String)>,
    JsonBody(b): JsonBody<StudyUpdate>,
) -> ApiResult<Response> {
    Ok(Json(s.app.update_site(&p, &oid, &site, b).await.rid(&headers)?).into_response())
}

async fn site_status(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((oid, site)): Path<(String, String)>,
    JsonBody(b): JsonBody<StatusBody>,
) -> ApiResult<Response> {
    let to = parse_status(&b, &headers)?;
    Ok(Json(s.app.set_site_status(&p, &oid, &site, to, b.reason).await.rid(&headers)?).into_response())
}

async fn list_roles(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(json!({"roles": s.app.list_roles(&p, &oid).await.rid(&headers)?})))
}

async fn assign_role(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
    JsonBody(b): JsonBody<RoleInput>,
) -> ApiResult<Response> {
    Ok((StatusCode::CREATED, Json(s.app.assign_role(&p, &oid, b).await.rid(&headers)?)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteQuery {
    site_oid: Option<String>,
}

async fn remove_role(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((oid, u)): Path<(String, String)>,
    Query(q): Query<SiteQuery>,
) -> ApiResult<StatusCode> {
    s.app.remove_role(&p, &oid, &u, q.site_oid.as_deref()).await.rid(&headers)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn study_audit(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Response> {
    let page = s
        .app
        .study_audit(&p, &oid, q.site_oid.as_deref(), Paging { after: q.after, limit: q.limit })
        .await
        .rid(&headers)?;
    Ok(Json(page).into_response())
}

async fn entity_audit(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Query(q): Query<PageQuery>,
) -> ApiResult<Response> {
    let (Some(t), Some(id)) = (q.entity_type.as_deref(), q.entity_id.as_deref()) else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "entity_type and entity_id are required query parameters",
        )
        .with_request_id(request_id(&headers)));
    };
    Ok(Json(s.app.entity_audit(&p, t, id, Paging { after: q.after, limit: q.limit }).await.rid(&headers)?)
        .into_response())
}

async fn verify_audit(State(s): State<AppState>, headers: HeaderMap, Auth(p): Auth) -> ApiResult<Response> {
    if !p.user_type.is_admin() {
        return Err(ApiError::from(casebook_app::AppError::Forbidden("verify the audit trail (administrators only)"))
            .with_request_id(request_id(&headers)));
    }
    let report = s.app.verify_audit().await.rid(&headers)?;
    Ok(Json(json!({"intact": report.is_intact(), "report": report})).into_response())
}
