//! The study design API under `/api/v1/studies/{oid}/design`: upload forms, define events,
//! read the draft and published versions, diff, publish to Test, promote to Production.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use casebook_app::design::{EventInput, Which};
use serde::Deserialize;

use crate::AppState;
use crate::api::{ApiResult, WithRid};
use crate::auth::Auth;
use crate::error::JsonBody;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/studies/{oid}/design", get(read_design))
        .route("/studies/{oid}/design/forms", get(list_forms).post(upload_form))
        .route("/studies/{oid}/design/forms/{form}/versions/{version}", get(form_version))
        .route("/studies/{oid}/design/events", get(list_events).post(create_event))
        .route("/studies/{oid}/design/items", get(list_items))
        .route("/studies/{oid}/design/events/{event}", put(replace_event))
        .route("/studies/{oid}/design/diff", get(design_diff))
        .route("/studies/{oid}/design/odm", get(export_odm).post(import_odm))
        .route("/studies/{oid}/design/publish", post(publish))
        .route("/studies/{oid}/design/versions", get(versions))
        .route("/studies/{oid}/design/versions/{number}/promote", post(promote))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionQuery {
    version: Option<String>,
}

async fn read_design(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
    Query(q): Query<VersionQuery>,
) -> ApiResult<Response> {
    let which = Which::parse(q.version.as_deref().unwrap_or("draft")).rid(&headers)?;
    Ok(Json(s.app.design(&p, &oid, which).await.rid(&headers)?).into_response())
}

fn which(q: Option<&str>, headers: &HeaderMap) -> ApiResult<Which> {
    Which::parse(q.unwrap_or("draft")).rid(headers)
}

async fn list_forms(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
    Query(q): Query<VersionQuery>,
) -> ApiResult<Response> {
    let w = which(q.version.as_deref(), &headers)?;
    Ok(Json(s.app.design_forms(&p, &oid, w).await.rid(&headers)?).into_response())
}

async fn form_version(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((oid, form, version)): Path<(String, String, String)>,
    Query(q): Query<VersionQuery>,
) -> ApiResult<Response> {
    let w = which(q.version.as_deref(), &headers)?;
    let v = s.app.design_form_version(&p, &oid, w, &version).await.rid(&headers)?;
    if !v.oid.as_str().starts_with(form.as_str()) {
        return Err(casebook_app::AppError::NotFound("form version")).rid(&headers);
    }
    Ok(Json(v).into_response())
}

async fn list_events(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
    Query(q): Query<VersionQuery>,
) -> ApiResult<Response> {
    let w = which(q.version.as_deref(), &headers)?;
    Ok(Json(s.app.design(&p, &oid, w).await.rid(&headers)?.events).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemsQuery {
    version: Option<String>,
    form: Option<String>,
}

async fn list_items(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
    Query(q): Query<ItemsQuery>,
) -> ApiResult<Response> {
    let w = which(q.version.as_deref(), &headers)?;
    Ok(Json(s.app.design_items(&p, &oid, w, q.form.as_deref()).await.rid(&headers)?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadQuery {
    /// The uploaded file's name; its extension says what it is.
    file_name: Option<String>,
    /// An event (OID) to add the form to.
    event: Option<String>,
}

/// The body is the file itself; its name comes from `?file_name=` or the `X-File-Name` header.
async fn upload_form(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
    Query(q): Query<UploadQuery>,
    body: Bytes,
) -> ApiResult<Response> {
    let name = q
        .file_name
        .or_else(|| headers.get("x-file-name").and_then(|v| v.to_str().ok()).map(str::to_owned))
        .unwrap_or_default();
    if name.is_empty() {
        return Err(casebook_app::AppError::invalid("file_name", "give the file name as ?file_name= or X-File-Name"))
            .rid(&headers);
    }
    if body.is_empty() {
        return Err(casebook_app::AppError::invalid("file", "the request body (the file) is empty")).rid(&headers);
    }
    let out = s.app.upload_form(&p, &oid, &name, &body, q.event.as_deref()).await.rid(&headers)?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

async fn create_event(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
    JsonBody(b): JsonBody<EventInput>,
) -> ApiResult<Response> {
    let e = s.app.save_event(&p, &oid, None, b).await.rid(&headers)?;
    Ok((StatusCode::CREATED, Json(e)).into_response())
}

async fn replace_event(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((oid, event)): Path<(String, String)>,
    JsonBody(b): JsonBody<EventInput>,
) -> ApiResult<Response> {
    Ok(Json(s.app.save_event(&p, &oid, Some(&event), b).await.rid(&headers)?).into_response())
}

async fn design_diff(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(s.app.design_diff(&p, &oid).await.rid(&headers)?).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    notes: Option<String>,
}

async fn publish(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
    JsonBody(b): JsonBody<PublishBody>,
) -> ApiResult<Response> {
    let out = s.app.publish_design(&p, &oid, b.notes).await.rid(&headers)?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

async fn versions(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(s.app.design_versions(&p, &oid).await.rid(&headers)?).into_response())
}

async fn promote(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((oid, number)): Path<(String, i32)>,
) -> ApiResult<Response> {
    Ok(Json(s.app.promote_design(&p, &oid, number).await.rid(&headers)?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    /// `odm13` (default), `odm13-oc` or `odm2`.
    format: Option<String>,
    version: Option<String>,
}

async fn export_odm(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
    Query(q): Query<ExportQuery>,
) -> ApiResult<Response> {
    let w = which(q.version.as_deref(), &headers)?;
    let xml = s.app.export_design(&p, &oid, w, q.format.as_deref().unwrap_or("odm13")).await.rid(&headers)?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/xml; charset=utf-8")], xml).into_response())
}

/// The body is the ODM XML file; its name (for the audit trail) from `?file_name=`.
async fn import_odm(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
    Query(q): Query<UploadQuery>,
    body: Bytes,
) -> ApiResult<Response> {
    let name = q.file_name.unwrap_or_else(|| "metadata.xml".to_owned());
    let out = s.app.import_design_odm(&p, &oid, &name, &body).await.rid(&headers)?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}
