//! The review API: event status actions, electronic signatures of events and casebooks, source
//! data verification, and a participant's review state.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use casebook_app::review::{EventStatusInput, SdvInput, SignInput};

use crate::AppState;
use crate::api::{ApiResult, WithRid};
use crate::auth::Auth;
use crate::error::JsonBody;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/studies/{oid}/participants/{participant}/review", get(review))
        .route("/studies/{oid}/participants/{participant}/signatures", get(signatures))
        .route("/studies/{oid}/participants/{participant}/sign", post(sign_casebook))
        .route("/studies/{oid}/participants/{participant}/events/{event}/{repeat}/status", post(event_status))
        .route("/studies/{oid}/participants/{participant}/events/{event}/{repeat}/sign", post(sign_event))
        .route("/studies/{oid}/participants/{participant}/events/{event}/{repeat}/forms/{form}/sdv", post(sdv))
}

type EventPath = Path<(String, String, String, i32)>;

async fn review(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((oid, participant)): Path<(String, String)>,
) -> ApiResult<Response> {
    Ok(Json(s.app.review(&p, &oid, &participant).await.rid(&headers)?).into_response())
}

async fn signatures(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((oid, participant)): Path<(String, String)>,
) -> ApiResult<Response> {
    let out = s.app.signatures(&p, &oid, &participant).await.rid(&headers)?;
    Ok(Json(serde_json::json!({ "signatures": out })).into_response())
}

async fn sign_casebook(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((oid, participant)): Path<(String, String)>,
    JsonBody(b): JsonBody<SignInput>,
) -> ApiResult<Response> {
    Ok(Json(s.app.sign_casebook(&p, &oid, &participant, b).await.rid(&headers)?).into_response())
}

async fn event_status(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((oid, participant, event, repeat)): EventPath,
    JsonBody(b): JsonBody<EventStatusInput>,
) -> ApiResult<Response> {
    let out = s.app.set_event_status(&p, &oid, &participant, &event, repeat, b).await.rid(&headers)?;
    Ok(Json(out).into_response())
}

async fn sign_event(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((oid, participant, event, repeat)): EventPath,
    JsonBody(b): JsonBody<SignInput>,
) -> ApiResult<Response> {
    Ok(Json(s.app.sign_event(&p, &oid, &participant, &event, repeat, b).await.rid(&headers)?).into_response())
}

async fn sdv(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((oid, participant, event, repeat, form)): Path<(String, String, String, i32, String)>,
    JsonBody(b): JsonBody<SdvInput>,
) -> ApiResult<Response> {
    let out = s.app.set_sdv(&p, &oid, &participant, &event, repeat, &form, b).await.rid(&headers)?;
    Ok(Json(out).into_response())
}
