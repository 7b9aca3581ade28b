//! `/health` and Prometheus-style `/metrics`, and the middleware that counts requests.

use crate::AppState;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// Request counters and a latency histogram.
#[derive(Debug, Default)]
pub struct Metrics {
    by_class: [AtomicU64; 6],
    buckets: [AtomicU64; 10],
    count: AtomicU64,
    sum_micros: AtomicU64,
    in_flight: AtomicU64,
}

impl Metrics {
    fn record(&self, status: StatusCode, seconds: f64) {
        let class = (status.as_u16() / 100) as usize;
        if let Some(c) = self.by_class.get(class) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        self.sum_micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, db_up: bool) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP casebook_http_requests_total HTTP requests answered, by status class.");
        let _ = writeln!(out, "# TYPE casebook_http_requests_total counter");
        for class in 1..=5 {
            let _ = writeln!(
                out,
                "casebook_http_requests_total{{class=\"{class}xx\"}} {}",
                self.by_class[class].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP casebook_http_request_duration_seconds Time to answer HTTP requests.");
        let _ = writeln!(out, "# TYPE casebook_http_request_duration_seconds histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "casebook_http_request_duration_seconds_bucket{{le=\"{b}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "casebook_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
        #[allow(clippy::cast_precision_loss)]
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "casebook_http_request_duration_seconds_sum {sum}");
        let _ = writeln!(out, "casebook_http_request_duration_seconds_count {count}");
        let _ = writeln!(out, "# HELP casebook_http_requests_in_flight Requests being answered now.");
        let _ = writeln!(out, "# TYPE casebook_http_requests_in_flight gauge");
        let _ = writeln!(out, "casebook_http_requests_in_flight {}", self.in_flight.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP casebook_database_up Whether the database answered.");
        let _ = writeln!(out, "# TYPE casebook_database_up gauge");
        let _ = writeln!(out, "casebook_database_up {}", u8::from(db_up));
        out
    }
}

/// Middleware: counts every request and its latency.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    state.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let res = next.run(req).await;
    state.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    state.metrics.record(res.status(), start.elapsed().as_secs_f64());
    res
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/health", get(health)).route("/metrics", get(metrics))
}

async fn health(State(state): State<AppState>) -> Response {
    if state.app.store().ping().await {
        (StatusCode::OK, axum::Json(serde_json::json!({"status": "ok", "database": "ok"}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "unavailable", "database": "unreachable"})),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let up = state.app.store().ping().await;
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render(up)).into_response()
}
