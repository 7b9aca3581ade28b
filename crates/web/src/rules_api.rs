//! The rules API: import an OpenClinica rules file (or preview it), list the current rules,
//! enable or disable one, and run the rules over the study's data (or dry-run them).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use casebook_app::rules::RuleEnableInput;
use casebook_app::rules_engine::BatchInput;

use crate::AppState;
use crate::api::{ApiResult, WithRid};
use crate::auth::Auth;
use crate::error::JsonBody;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/studies/{oid}/rules", get(list).post(import))
        .route("/studies/{oid}/rules/run", post(run))
        .route("/studies/{oid}/rules/{rule}/enabled", post(enabled))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportQuery {
    file_name: Option<String>,
    /// Check and show the rules without saving them.
    #[serde(default)]
    preview: bool,
}

/// The body is the rules XML file.
async fn import(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
    Query(q): Query<ImportQuery>,
    body: Bytes,
) -> ApiResult<Response> {
    let name = q.file_name.unwrap_or_else(|| "rules.xml".to_owned());
    let out = s.app.import_rules(&p, &oid, &name, &body, q.preview).await.rid(&headers)?;
    let status = if out.saved { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(out)).into_response())
}

async fn list(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
) -> ApiResult<Response> {
    let out = s.app.rules(&p, &oid).await.rid(&headers)?;
    Ok(Json(serde_json::json!({ "rules": out })).into_response())
}

async fn enabled(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((oid, rule)): Path<(String, String)>,
    JsonBody(b): JsonBody<RuleEnableInput>,
) -> ApiResult<Response> {
    let out = s.app.set_rule_enabled(&p, &oid, &rule, b).await.rid(&headers)?;
    Ok(Json(serde_json::json!({ "rules": out })).into_response())
}

async fn run(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
    JsonBody(b): JsonBody<BatchInput>,
) -> ApiResult<Response> {
    Ok(Json(s.app.run_rules_batch(&p, &oid, b).await.rid(&headers)?).into_response())
}
