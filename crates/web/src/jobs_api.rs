//! Import jobs over HTTP: natively (`/api/v1/studies/{oid}/clinical-data/import-jobs`,
//! `/api/v1/jobs/{id}`) and as OpenClinica 4 scripts call them
//! (`{ctx}/pages/auth/api/clinicaldata/import` answering `job uuid: <uuid>`,
//! `{ctx}/pages/auth/api/jobs/{uuid}/downloadFile`, `DELETE {ctx}/pages/auth/api/jobs/{uuid}`),
//! reference `openclinica-api.md` §5.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use casebook_app::AppError;
use casebook_app::jobs::{ImportMode, JobLog};

use crate::AppState;
use crate::api::{ApiResult, WithRid};
use crate::auth::Auth;

/// Native routes (under `/api/v1`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/studies/{oid}/clinical-data/import-jobs",
            post(start).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/studies/{oid}/jobs", get(list))
        .route("/jobs/{id}", get(one).delete(remove))
        .route("/jobs/{id}/cancel", post(cancel))
        .route("/jobs/{id}/log.csv", get(log))
}

/// OpenClinica 4 routes (under the OpenClinica context path).
pub fn openclinica_routes() -> Router<AppState> {
    Router::new()
        .route("/pages/auth/api/clinicaldata/import", post(oc_start).layer(axum::extract::DefaultBodyLimit::disable()))
        .route("/pages/auth/api/jobs/{id}/downloadFile", get(oc_download))
        .route("/pages/auth/api/jobs/{id}", axum::routing::delete(oc_delete))
        .route("/pages/auth/api/studies/{oid}/jobs", get(list))
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StartQuery {
    file_name: Option<String>,
    /// `all-or-nothing` (default), `per-record` or `dry-run`.
    mode: Option<String>,
}

async fn start(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
    Query(q): Query<StartQuery>,
    req: axum::extract::Request,
) -> ApiResult<Response> {
    let mode = ImportMode::parse(q.mode.as_deref().unwrap_or("all-or-nothing")).rid(&headers)?;
    let upload = crate::upload::spool(&s, req).await.rid(&headers)?;
    let name = q.file_name.or(upload.file_name).unwrap_or_else(|| "clinical-data.xml".to_owned());
    let job = s.app.start_import_job(&p, Some(&oid), &name, upload.source, mode).await.rid(&headers)?;
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

/// Asks a running job to stop; answers the job (still running until it has stopped).
async fn cancel(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok((StatusCode::ACCEPTED, Json(s.app.cancel_job(&p, &id).await.rid(&headers)?)).into_response())
}

async fn list(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
) -> ApiResult<Response> {
    let jobs = s.app.jobs(&p, &oid).await.rid(&headers)?;
    Ok(Json(serde_json::json!({ "jobs": jobs })).into_response())
}

async fn one(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(s.app.job(Some(&p), &id).await.rid(&headers)?).into_response())
}

async fn remove(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    s.app.delete_job(&p, &id).await.rid(&headers)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn csv_response(file_name: &str, csv: String) -> Response {
    let disposition = format!("attachment; filename=\"{}\"", file_name.replace(['"', '\r', '\n'], ""));
    ([(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()), (header::CONTENT_DISPOSITION, disposition)], csv)
        .into_response()
}

async fn log(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    match s.app.job_log(&p, &id).await.rid(&headers)? {
        JobLog::Csv { file_name, csv } => Ok(csv_response(&file_name, csv)),
        JobLog::InProgress => Err(AppError::InvalidTransition("the job is still running".into())).rid(&headers),
        JobLog::Missing => Err(AppError::NotFound("job log")).rid(&headers),
    }
}

/// OpenClinica 4: the file as a multipart `file` part or the raw body; imported per record.
async fn oc_start(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    req: axum::extract::Request,
) -> ApiResult<Response> {
    let upload = crate::upload::spool(&s, req).await.rid(&headers)?;
    let name = upload.file_name.unwrap_or_else(|| "clinical-data.xml".to_owned());
    let job = s.app.start_import_job(&p, None, &name, upload.source, ImportMode::PerRecord).await.rid(&headers)?;
    Ok((StatusCode::OK, format!("job uuid: {}", job.id)).into_response())
}

/// OpenClinica 4 answers these conditions with plain codes (and 200 for most of them).
async fn oc_download(State(s): State<AppState>, Auth(p): Auth, Path(id): Path<String>) -> Response {
    match s.app.job_log(&p, &id).await {
        Ok(JobLog::Csv { file_name, csv }) => csv_response(&file_name, csv),
        Ok(JobLog::InProgress) => (StatusCode::OK, "error.jobInProgress").into_response(),
        Ok(JobLog::Missing) => (StatusCode::OK, "error.noLogFileFound").into_response(),
        Err(AppError::NotFound(_)) => (StatusCode::NOT_FOUND, "error.invalidUuid").into_response(),
        Err(_) => (StatusCode::OK, "errorCode.noSufficientPrivileges").into_response(),
    }
}

async fn oc_delete(State(s): State<AppState>, Auth(p): Auth, Path(id): Path<String>) -> Response {
    match s.app.delete_job(&p, &id).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(AppError::NotFound(_)) => (StatusCode::NOT_FOUND, "error.invalidUuid").into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, [("X-runtimeApp-error", e.to_string())]).into_response(),
    }
}
