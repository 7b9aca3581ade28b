//! Extract runs over HTTP: queue one (`POST /api/v1/studies/{oid}/extracts`), follow it
//! (`GET /api/v1/extracts/{id}`: status and progress), list a study's archive, cancel a queued
//! run, retry one, and download its files — authorised like the data they hold.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::AppState;
use crate::api::{ApiResult, WithRid};
use crate::auth::Auth;

/// Native routes (under `/api/v1`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/studies/{oid}/extracts", post(start).get(list))
        .route("/studies/{oid}/datasets", get(datasets))
        .route("/studies/{oid}/datasets/{name}", get(dataset).put(save_dataset))
        .route("/extracts/{id}", get(one))
        .route("/extracts/{id}/cancel", post(cancel))
        .route("/extracts/{id}/retry", post(retry))
        .route("/extracts/{id}/files/{name}", get(download))
        .route("/studies/{oid}/extract-schedules", post(add_schedule).get(schedules))
        .route("/extract-schedules/{id}", axum::routing::delete(stop_schedule))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StartInput {
    /// `csv-wide`, `csv-long` or `tsv`.
    format: String,
    /// A site's OID to extract that site only (default: the study, or a site user's sites).
    #[serde(default)]
    site: Option<String>,
    #[serde(default)]
    include_phi: bool,
    /// A saved dataset (its newest version); default: every item.
    #[serde(default)]
    dataset: Option<String>,
    /// RFC 3339: only participants with a change after this time.
    #[serde(default)]
    changed_since: Option<String>,
}

async fn start(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
    Json(input): Json<StartInput>,
) -> ApiResult<Response> {
    let scope = input.site.unwrap_or(oid);
    let since = crate::clinical_api::changed_since(input.changed_since.as_deref()).rid(&headers)?;
    let run = s
        .app
        .start_extract(&p, &scope, &input.format, input.include_phi, input.dataset.as_deref(), since)
        .await
        .rid(&headers)?;
    Ok((StatusCode::ACCEPTED, Json(run)).into_response())
}

async fn list(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
) -> ApiResult<Response> {
    let runs = s.app.extract_runs(&p, &oid).await.rid(&headers)?;
    Ok(Json(serde_json::json!({ "runs": runs })).into_response())
}

async fn one(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(s.app.extract_run(Some(&p), &id).await.rid(&headers)?).into_response())
}

async fn cancel(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(s.app.cancel_extract(&p, &id).await.rid(&headers)?).into_response())
}

async fn retry(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok((StatusCode::ACCEPTED, Json(s.app.retry_extract(&p, &id).await.rid(&headers)?)).into_response())
}

/// A run's file, streamed from disk.
async fn download(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let path = s.app.extract_file(&p, &id, &name).await.rid(&headers)?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| casebook_app::anyhow_like::msg(format!("opening {}: {e}", path.display())))
        .rid(&headers)?;
    let stream = futures_util::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(buf), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    let content_type =
        if name.ends_with(".tsv") { "text/tab-separated-values; charset=utf-8" } else { "text/csv; charset=utf-8" };
    let disposition = format!("attachment; filename=\"{}\"", name.replace(['"', '\r', '\n'], ""));
    Ok((
        [(header::CONTENT_TYPE, content_type.to_owned()), (header::CONTENT_DISPOSITION, disposition)],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

async fn datasets(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(serde_json::json!({ "datasets": s.app.datasets(&p, &oid).await.rid(&headers)? })).into_response())
}

async fn dataset(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((oid, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    Ok(Json(s.app.dataset(&p, &oid, &name).await.rid(&headers)?).into_response())
}

/// Saves a dataset definition: a new name is version 1, an existing one its next version.
async fn save_dataset(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((oid, name)): Path<(String, String)>,
    Json(definition): Json<casebook_app::extract::DatasetDefinition>,
) -> ApiResult<Response> {
    Ok(Json(s.app.save_dataset(&p, &oid, &name, definition).await.rid(&headers)?).into_response())
}

async fn add_schedule(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
    Json(input): Json<casebook_app::extract::ScheduleInput>,
) -> ApiResult<Response> {
    Ok((StatusCode::CREATED, Json(s.app.add_schedule(&p, &oid, input).await.rid(&headers)?)).into_response())
}

async fn schedules(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(serde_json::json!({ "schedules": s.app.schedules(&p, &oid).await.rid(&headers)? })).into_response())
}

async fn stop_schedule(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    s.app.stop_schedule(&p, id).await.rid(&headers)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
