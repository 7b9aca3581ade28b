//! HTTP contract tests: the real server on 127.0.0.1:0 over a fresh database per test, every
//! test run on SQLite and on PostgreSQL.
//!
//! PostgreSQL comes from `CASEBOOK_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each test creates and drops its own
//! database. Setting it to `off` skips the PostgreSQL half, and says so loudly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)] // test database names use the wall clock for uniqueness

mod accounts;
mod audit;
mod auth;
mod capture;
mod clinical;
mod design;
mod entry;
mod extracts;
mod matrix;
mod notes;
mod oc_metadata;
mod review;
mod roles;
mod rules;
mod sites;
mod studies;

use casebook_app::{App, SecuritySettings};
use casebook_domain::clock::ManualClock;
use casebook_store::{Backend, Store};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;

pub const PASSWORD: &str = casebook_app::demo::DEMO_PASSWORD;

/// A running server with the demo study loaded.
pub struct TestApp {
    pub base: String,
    pub app: App,
    pub clock: Arc<ManualClock>,
    _db: TestDb,
    _dir: Option<TempDir>,
}

pub struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A PostgreSQL database made for one test, dropped afterwards.
pub struct TestDb(Option<(String, String)>);

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin_url, name)) = self.0.take() {
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    if let Ok(mut c) = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url).await {
                        let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut c).await;
                    }
                });
            })
            .join();
        }
    }
}

pub fn pg_admin_url() -> Option<String> {
    let url = std::env::var("CASEBOOK_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    if url == "off" {
        eprintln!("!!! SKIPPED: PostgreSQL half of this test (CASEBOOK_TEST_POSTGRES=off). CI runs it. !!!");
        return None;
    }
    Some(url)
}

fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}_{}_{}_{}", std::process::id(), nanos, N.fetch_add(1, Ordering::Relaxed))
}

/// Settings for tests: cheap argon2 so hundreds of sign-ins stay fast; everything else default.
pub fn test_security() -> SecuritySettings {
    SecuritySettings { argon2_memory_kib: 1024, argon2_iterations: 1, ..SecuritySettings::default() }
}

/// Starts a server on the backend; `None` when PostgreSQL is switched off.
pub async fn spawn(backend: Backend) -> Option<TestApp> {
    let (url, guard, dir) = match backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join(unique_name("casebook_test"));
            std::fs::create_dir_all(&dir).unwrap();
            (format!("sqlite://{}", dir.join("test.db").display()), TestDb(None), Some(TempDir(dir)))
        }
        Backend::Postgres => {
            let admin = pg_admin_url()?;
            let name = unique_name("cb_test");
            let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
                .await
                .expect("PostgreSQL reachable for tests");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut c).await.unwrap();
            let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap();
            (format!("{base}/{name}"), TestDb(Some((admin, name))), None)
        }
    };
    let db = casebook_store::connect(&url, 5).await.unwrap();
    db.migrate().await.unwrap();
    let clock = Arc::new(ManualClock::new(time::macros::datetime!(2026-11-22 09:00 UTC)));
    let store = Store::new(db, clock.clone());
    let app = App::new(store, test_security());
    assert!(app.seed_demo().await.unwrap());
    let state = casebook_web::AppState {
        app: app.clone(),
        web: Arc::new(casebook_web::WebSettings {
            body_limit_bytes: 64 * 1024,
            import_limit_bytes: 16 * 1024 * 1024,
            ..Default::default()
        }),
        metrics: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(casebook_web::serve(listener, state, std::future::pending()));
    Some(TestApp { base: format!("http://{addr}"), app, clock, _db: guard, _dir: dir })
}

/// A browser-like client: keeps cookies, does not follow redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Signs in through the JSON API; returns the client (holding the cookie) and CSRF token.
    pub async fn session(&self, username: &str) -> (reqwest::Client, String) {
        let c = client();
        let r = c
            .post(self.url("/api/v1/auth/login"))
            .json(&json!({"username": username, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "login of {username}");
        let body: Value = r.json().await.unwrap();
        (c, body["csrf_token"].as_str().unwrap().to_owned())
    }

    /// An API key of `username` (demo password).
    pub async fn key(&self, username: &str) -> String {
        self.key_with_password(username, PASSWORD).await
    }

    /// An API key of `username`, signing in with `password`.
    pub async fn key_with_password(&self, username: &str, password: &str) -> String {
        let c = client();
        let r = c
            .post(self.url("/api/v1/auth/login"))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "login of {username}");
        let csrf = r.json::<Value>().await.unwrap()["csrf_token"].as_str().unwrap().to_owned();
        let r = c
            .post(self.url("/api/v1/me/api-keys"))
            .header("x-csrf-token", csrf)
            .json(&json!({"name": "test"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_owned()
    }

    pub async fn get(&self, key: &str, path: &str) -> (StatusCode, Value) {
        let r = client().get(self.url(path)).bearer_auth(key).send().await.unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn send(&self, key: &str, method: reqwest::Method, path: &str, body: Value) -> (StatusCode, Value) {
        let r = client().request(method, self.url(path)).bearer_auth(key).json(&body).send().await.unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, key: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(key, reqwest::Method::POST, path, body).await
    }
}

/// Declares a test that runs once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! both {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body($crate::spawn(casebook_store::Backend::Sqlite).await.unwrap()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(app) = $crate::spawn(casebook_store::Backend::Postgres).await {
                    super::$body(app).await;
                }
            }
        }
    };
}
