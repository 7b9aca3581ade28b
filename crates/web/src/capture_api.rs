//! The data capture API: participants, their events and forms.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use casebook_app::capture::{EnrolInput, ScheduleInput};
use casebook_app::dde::{DdeCompleteInput, DdeInput};
use casebook_app::entry::{CompleteFormInput, SaveFormInput};
use serde::Deserialize;

use crate::AppState;
use crate::api::{ApiResult, WithRid};
use crate::auth::Auth;
use crate::error::JsonBody;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/studies/{oid}/participants", get(list).post(enrol))
        .route("/studies/{oid}/participants/{participant}", get(casebook))
        .route("/studies/{oid}/participants/{participant}/events", post(schedule))
        .route("/studies/{oid}/participants/{participant}/remove", post(remove))
        .route("/studies/{oid}/participants/{participant}/restore", post(restore))
        .route("/studies/{oid}/participants/{participant}/reassign", post(reassign))
        .route("/studies/{oid}/participants/{participant}/audit", get(audit))
        .route(
            "/studies/{oid}/participants/{participant}/events/{event}/{repeat}/forms/{form}",
            axum::routing::put(save_form),
        )
        .route(
            "/studies/{oid}/participants/{participant}/events/{event}/{repeat}/forms/{form}/complete",
            post(complete_form),
        )
        .route(
            "/studies/{oid}/participants/{participant}/events/{event}/{repeat}/forms/{form}/files",
            post(upload_file),
        )
        .route("/studies/{oid}/files/{id}", get(download_file))
        .route(
            "/studies/{oid}/participants/{participant}/events/{event}/{repeat}/forms/{form}/double-entry",
            axum::routing::put(key_dde),
        )
        .route(
            "/studies/{oid}/participants/{participant}/events/{event}/{repeat}/forms/{form}/double-entry/complete",
            post(complete_dde),
        )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    site: Option<String>,
    after: Option<String>,
    limit: Option<i64>,
}

async fn list(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let out = s
        .app
        .list_participants(&p, &oid, q.site.as_deref(), q.after.as_deref(), q.limit.unwrap_or(100))
        .await
        .rid(&headers)?;
    Ok(Json(out).into_response())
}

async fn enrol(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
    JsonBody(b): JsonBody<EnrolInput>,
) -> ApiResult<Response> {
    let out = s.app.enrol(&p, &oid, b).await.rid(&headers)?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

async fn casebook(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((oid, participant)): Path<(String, String)>,
) -> ApiResult<Response> {
    Ok(Json(s.app.casebook(&p, &oid, &participant).await.rid(&headers)?).into_response())
}

async fn schedule(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((oid, participant)): Path<(String, String)>,
    JsonBody(b): JsonBody<ScheduleInput>,
) -> ApiResult<Response> {
    let out = s.app.schedule_event(&p, &oid, &participant, b).await.rid(&headers)?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

type FormPath = Path<(String, String, String, i32, String)>;

async fn save_form(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((oid, participant, event, repeat, form)): FormPath,
    JsonBody(b): JsonBody<SaveFormInput>,
) -> ApiResult<Response> {
    let out = s.app.save_form(&p, &oid, &participant, &event, repeat, &form, b).await.rid(&headers)?;
    Ok(Json(out).into_response())
}

async fn complete_form(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((oid, participant, event, repeat, form)): FormPath,
    JsonBody(b): JsonBody<CompleteFormInput>,
) -> ApiResult<Response> {
    let out = s.app.complete_form(&p, &oid, &participant, &event, repeat, &form, b).await.rid(&headers)?;
    Ok(Json(out).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: Option<String>,
}

async fn remove(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((oid, participant)): Path<(String, String)>,
    JsonBody(b): JsonBody<ReasonBody>,
) -> ApiResult<Response> {
    Ok(Json(s.app.remove_participant(&p, &oid, &participant, b.reason).await.rid(&headers)?).into_response())
}

async fn restore(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((oid, participant)): Path<(String, String)>,
    JsonBody(b): JsonBody<ReasonBody>,
) -> ApiResult<Response> {
    Ok(Json(s.app.restore_participant(&p, &oid, &participant, b.reason).await.rid(&headers)?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReassignBody {
    site: String,
    reason: Option<String>,
}

async fn reassign(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((oid, participant)): Path<(String, String)>,
    JsonBody(b): JsonBody<ReassignBody>,
) -> ApiResult<Response> {
    Ok(Json(s.app.reassign_participant(&p, &oid, &participant, &b.site, b.reason).await.rid(&headers)?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// One event, form or value under the participant: `SE_X[1]`, `SE_X[1]/F_Y/IG_G[1]/I_A`.
    within: Option<String>,
    after: Option<i64>,
    limit: Option<i64>,
}

async fn audit(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((oid, participant)): Path<(String, String)>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Response> {
    let rows = s
        .app
        .participant_audit(&p, &oid, &participant, q.within.as_deref(), q.after.unwrap_or(0), q.limit.unwrap_or(1000))
        .await
        .rid(&headers)?;
    Ok(Json(rows).into_response())
}

async fn key_dde(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((oid, participant, event, repeat, form)): FormPath,
    JsonBody(b): JsonBody<DdeInput>,
) -> ApiResult<Response> {
    let out = s.app.key_double_entry(&p, &oid, &participant, &event, repeat, &form, b).await.rid(&headers)?;
    Ok(Json(out).into_response())
}

async fn complete_dde(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((oid, participant, event, repeat, form)): FormPath,
    JsonBody(b): JsonBody<DdeCompleteInput>,
) -> ApiResult<Response> {
    let out = s.app.complete_double_entry(&p, &oid, &participant, &event, repeat, &form, b).await.rid(&headers)?;
    Ok(Json(out).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileQuery {
    item: String,
    row: Option<u32>,
    expected_version: Option<i64>,
    file_name: Option<String>,
}

/// The body is the file; its name from `?file_name=` or `X-File-Name`.
async fn upload_file(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((oid, participant, event, repeat, form)): FormPath,
    Query(q): Query<FileQuery>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let name = q
        .file_name
        .or_else(|| headers.get("x-file-name").and_then(|v| v.to_str().ok()).map(str::to_owned))
        .unwrap_or_default();
    let out = s
        .app
        .upload_file_value(
            &p,
            &oid,
            &participant,
            &event,
            repeat,
            &form,
            &q.item,
            q.row.unwrap_or(1),
            q.expected_version,
            &name,
            &body,
        )
        .await
        .rid(&headers)?;
    Ok(Json(out).into_response())
}

async fn download_file(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((oid, id)): Path<(String, i64)>,
) -> ApiResult<Response> {
    let (info, content) = s.app.download_file(&p, &oid, id).await.rid(&headers)?;
    let disposition = format!("attachment; filename=\"{}\"", info.file_name.replace(['"', '\\'], "_"));
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, info.content_type),
            (axum::http::header::CONTENT_DISPOSITION, disposition),
            (axum::http::HeaderName::from_static("x-content-sha256"), info.sha256),
        ],
        content,
    )
        .into_response())
}
