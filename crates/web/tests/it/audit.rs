//! The audit trail: refused UPDATE/DELETE at the database, tamper evidence, docs.

use crate::{TestApp, both};
use casebook_store::Db;
use reqwest::StatusCode;
use serde_json::json;

async fn exec(db: &Db, sql: &'static str) -> Result<u64, sqlx::Error> {
    match db {
        Db::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|r| r.rows_affected()),
        Db::Postgres(p) => sqlx::query(sql).execute(p).await.map(|r| r.rows_affected()),
    }
}

both!(audit_rows_cannot_be_changed, audit_immutable_t);
async fn audit_immutable_t(t: TestApp) {
    let db = t.app.store().db().clone();
    t.app.verify_audit().await.unwrap(); // seal, so audit_seals has rows to attack
    for sql in [
        "UPDATE audit_events SET actor_username = 'mallory'",
        "DELETE FROM audit_events",
        "UPDATE audit_seals SET hash = 'x'",
    ] {
        let err = exec(&db, sql).await.expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    let report = t.app.verify_audit().await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert!(report.sealed > 20);
}

both!(tampering_is_found, tamper_t);
async fn tamper_t(t: TestApp) {
    let admin = t.key("demo_admin").await;
    let (s, r) = t.post(&admin, "/api/v1/audit/verify", json!({})).await;
    assert_eq!((s, r["intact"].as_bool()), (StatusCode::OK, Some(true)));
    let sealed = r["report"]["sealed"].as_i64().unwrap();
    // Someone with direct database access disables the guard and rewrites history.
    let db = t.app.store().db().clone();
    match &db {
        Db::Sqlite(_) => {
            exec(&db, "DROP TRIGGER audit_events_no_update").await.unwrap();
        }
        Db::Postgres(_) => {
            exec(&db, "ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update_delete").await.unwrap();
        }
    }
    let n = exec(&db, "UPDATE audit_events SET new_value = '{\"status\":\"active\"}' WHERE seq = 5").await.unwrap();
    assert_eq!(n, 1);
    let (_, r) = t.post(&admin, "/api/v1/audit/verify", json!({})).await;
    assert_eq!(r["intact"], false, "{r}");
    assert_eq!(r["report"]["first_break"]["seq"], 5);
    assert_eq!(r["report"]["first_break"]["position"], 5);
    assert!(r["report"]["first_break"]["problem"].as_str().unwrap().contains("altered"));
    assert!(sealed >= 5);
    // Non-administrators may not run it.
    let dm = t.key("demo_dm").await;
    assert_eq!(t.post(&dm, "/api/v1/audit/verify", json!({})).await.0, StatusCode::FORBIDDEN);
}

both!(api_docs_describe_every_endpoint, docs_t);
async fn docs_t(t: TestApp) {
    let (s, doc) = t.get("", "/api/v1/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 20);
    let key = t.key("demo_admin").await;
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let concrete = path
                .replace("{oid}", "S_DEMO")
                .replace("{site}", "S_DEMOA")
                .replace("{username}", "demo_dm")
                .replace("{id}", "1");
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r =
                crate::client().request(m, t.url(&concrete)).bearer_auth(&key).json(&json!({})).send().await.unwrap();
            let body = r.text().await.unwrap();
            assert!(!body.contains("route_not_found"), "{method} {path} is documented but not served");
        }
    }
    let html = crate::client().get(t.url("/api/docs")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("/api/v1/studies/{oid}/sites"));
    let (s, e) = t.get(&key, "/api/v1/nope").await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::NOT_FOUND, Some("route_not_found")));
    assert!(e["request_id"].is_string());
}
