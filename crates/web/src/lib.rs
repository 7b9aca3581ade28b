//! The HTTP edge: the native REST API (`/api/v1`), the OpenClinica-compatible sign-in, the
//! minimal HTML pages, health and metrics.
//!
//! Handlers turn requests into use-case calls on [`casebook_app::App`] and results into
//! responses; they hold no business rules and no SQL. Errors become JSON
//! `{code, message, details, request_id}` in one place ([`error`]).

mod api;
mod auth;
mod capture_api;
mod clinical_api;
mod design_api;
mod docs;
pub mod error;
mod extracts_api;
mod html;
mod jobs_api;
mod matrix_api;
mod metrics;
mod notes_api;
mod oc_metadata;
mod openclinica;
mod review_api;
mod rules_api;
mod upload;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, StatusCode};
use casebook_app::App;
use std::sync::Arc;
use std::time::Duration;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use metrics::Metrics;

/// Settings of the HTTP layer.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSettings {
    /// Largest request body accepted, in bytes (import files excepted).
    pub body_limit_bytes: usize,
    /// Largest clinical data import file accepted, in bytes (spooled to a temporary file, so
    /// memory does not grow with it).
    pub import_limit_bytes: u64,
    /// A request taking longer is answered 408.
    pub request_timeout_seconds: u64,
    /// Mark cookies `Secure` (set when served over HTTPS).
    pub secure_cookies: bool,
    /// Where the OpenClinica 3 compatible paths are mounted.
    pub openclinica_context: String,
}

impl Default for WebSettings {
    fn default() -> Self {
        Self {
            body_limit_bytes: 10 * 1024 * 1024,
            import_limit_bytes: 4 * 1024 * 1024 * 1024,
            request_timeout_seconds: 60,
            secure_cookies: false,
            openclinica_context: "/OpenClinica".to_owned(),
        }
    }
}

impl WebSettings {
    /// # Errors
    /// A message naming the setting that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if !(1024..=1024 * 1024 * 1024).contains(&self.body_limit_bytes) {
            return Err(format!(
                "http.body_limit_bytes must be between 1024 and 1073741824 (got {})",
                self.body_limit_bytes
            ));
        }
        if !(1024 * 1024..=1024 * 1024 * 1024 * 1024).contains(&self.import_limit_bytes) {
            return Err(format!(
                "http.import_limit_bytes must be between 1048576 (1 MiB) and 1099511627776 (1 TiB) (got {})",
                self.import_limit_bytes
            ));
        }
        if !(1..=3600).contains(&self.request_timeout_seconds) {
            return Err(format!(
                "http.request_timeout_seconds must be between 1 and 3600 (got {})",
                self.request_timeout_seconds
            ));
        }
        let c = &self.openclinica_context;
        if !c.starts_with('/')
            || c.len() < 2
            || c.ends_with('/')
            || c.contains(|ch: char| !(ch.is_ascii_alphanumeric() || "-_/".contains(ch)))
        {
            return Err(format!("http.openclinica_context must look like /OpenClinica (got '{c}')"));
        }
        Ok(())
    }
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub app: App,
    pub web: Arc<WebSettings>,
    pub metrics: Arc<Metrics>,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let oc = state.web.openclinica_context.clone();
    let timeout = Duration::from_secs(state.web.request_timeout_seconds);
    Router::new()
        .merge(html::routes())
        .merge(docs::routes())
        .merge(metrics::routes())
        .nest("/api/v1", api::routes())
        .nest(&oc, openclinica::routes())
        .fallback(error::not_found)
        .layer(DefaultBodyLimit::max(state.web.body_limit_bytes))
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

/// Serves until `shutdown` completes, then finishes requests in flight.
///
/// # Errors
/// When the listener fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}
