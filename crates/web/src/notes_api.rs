//! The discrepancy note API: open threads, reply, read one thread, list and export the threads
//! of a study (filtered), and the notification outbox for administrators.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use casebook_app::notes::{NoteListParams, OpenNoteInput, ReplyInput};

use crate::AppState;
use crate::api::{ApiResult, WithRid};
use crate::auth::Auth;
use crate::error::{ApiError, JsonBody, request_id};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/studies/{oid}/notes", get(list).post(open))
        .route("/studies/{oid}/notes.csv", get(csv))
        .route("/studies/{oid}/notes/{id}", get(one))
        .route("/studies/{oid}/notes/{id}/replies", post(reply))
        .route("/outbox", get(outbox))
}

fn query(headers: &HeaderMap, q: Result<Query<NoteListParams>, QueryRejection>) -> Result<NoteListParams, ApiError> {
    q.map(|Query(p)| p).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()).with_request_id(request_id(headers))
    })
}

async fn list(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
    q: Result<Query<NoteListParams>, QueryRejection>,
) -> ApiResult<Response> {
    let params = query(&headers, q)?;
    Ok(Json(s.app.notes(&p, &oid, &params).await.rid(&headers)?).into_response())
}

async fn csv(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
    q: Result<Query<NoteListParams>, QueryRejection>,
) -> ApiResult<Response> {
    let params = query(&headers, q)?;
    let body = s.app.notes_csv(&p, &oid, &params).await.rid(&headers)?;
    let name = format!("attachment; filename=\"{oid}_notes.csv\"");
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()), (header::CONTENT_DISPOSITION, name)], body)
        .into_response())
}

async fn open(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
    JsonBody(b): JsonBody<OpenNoteInput>,
) -> ApiResult<Response> {
    let out = s.app.open_note(&p, &oid, b).await.rid(&headers)?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

async fn one(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((oid, id)): Path<(String, i64)>,
) -> ApiResult<Response> {
    Ok(Json(s.app.note(&p, &oid, id).await.rid(&headers)?).into_response())
}

async fn reply(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((oid, id)): Path<(String, i64)>,
    JsonBody(b): JsonBody<ReplyInput>,
) -> ApiResult<Response> {
    Ok(Json(s.app.reply_to_note(&p, &oid, id, b).await.rid(&headers)?).into_response())
}

async fn outbox(State(s): State<AppState>, headers: HeaderMap, Auth(p): Auth) -> ApiResult<Response> {
    let out = s.app.outbox(&p).await.rid(&headers)?;
    Ok(Json(serde_json::json!({ "messages": out })).into_response())
}
