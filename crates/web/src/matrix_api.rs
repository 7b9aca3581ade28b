//! The participant matrix API: `GET /api/v1/studies/{oid}/matrix`, one page of participants by
//! events with statuses and form counts, filtered, sorted and paged by cursor.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use casebook_app::AppError;
use casebook_app::matrix::{MATRIX_PARAMS, MatrixParams};
use casebook_domain::FieldError;

use crate::AppState;
use crate::api::{ApiResult, WithRid};
use crate::auth::Auth;
use crate::error::{ApiError, request_id};

pub fn routes() -> Router<AppState> {
    Router::new().route("/studies/{oid}/matrix", get(matrix))
}

/// The query string as matrix parameters: each known at most once, nothing unknown.
fn params(pairs: Vec<(String, String)>) -> Result<MatrixParams, AppError> {
    let mut p = MatrixParams::default();
    let mut errors = Vec::new();
    for (name, value) in pairs {
        let slot = match name.as_str() {
            "site" => &mut p.site,
            "status" => &mut p.status,
            "q" => &mut p.q,
            "event" => &mut p.event,
            "event_status" => &mut p.event_status,
            "sort" => &mut p.sort,
            "page_size" => &mut p.page_size,
            "after" => &mut p.after,
            _ => {
                errors.push(FieldError::new(
                    name.clone(),
                    format!("unknown parameter; the matrix takes {}", MATRIX_PARAMS.join(", ")),
                ));
                continue;
            }
        };
        if slot.replace(value).is_some() {
            errors.push(FieldError::new(name, "given more than once"));
        }
    }
    if errors.is_empty() { Ok(p) } else { Err(AppError::Validation(errors)) }
}

async fn matrix(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(pairs) = query.map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()).with_request_id(request_id(&headers))
    })?;
    let params = params(pairs).rid(&headers)?;
    Ok(Json(s.app.matrix(&p, &oid, &params).await.rid(&headers)?).into_response())
}
