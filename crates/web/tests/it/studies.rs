//! Studies, OIDs, statuses and roles.

use crate::{TestApp, both};
use reqwest::StatusCode;
use serde_json::json;

both!(study_lifecycle, study_lifecycle_t);
async fn study_lifecycle_t(t: TestApp) {
    let admin = t.key("demo_admin").await;
    let (s, st) = t
        .post(
            &admin,
            "/api/v1/studies",
            json!({"protocol_id": "Cardio-2026 trial", "name": "Cardio", "phase": "phase3"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{st}");
    assert_eq!(st["oid"], "S_CARDIO20");
    assert_eq!(st["status"], "design");
    // Same normalised OID → collision suffix; same protocol ID (any case) → conflict.
    let (s, st2) =
        t.post(&admin, "/api/v1/studies", json!({"protocol_id": "cardio-2026 other", "name": "Other"})).await;
    assert_eq!(s, StatusCode::CREATED);
    let oid2 = st2["oid"].as_str().unwrap();
    assert!(oid2.starts_with("S_CARDIO20_") && oid2.len() > 11, "{oid2}");
    let (s, e) = t.post(&admin, "/api/v1/studies", json!({"protocol_id": "CARDIO-2026 TRIAL", "name": "Dup"})).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")));
    let (s, e) = t
        .post(
            &admin,
            "/api/v1/studies",
            json!({"protocol_id": "", "name": "", "parameters": {"participant_id_template": "{x}"}}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    // Status machine.
    let (s, e) = t.post(&admin, "/api/v1/studies/S_CARDIO20/status", json!({"status": "locked"})).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::CONFLICT, Some("invalid_status_transition")));
    for to in ["available", "frozen", "locked", "frozen", "available"] {
        let (s, r) = t.post(&admin, "/api/v1/studies/S_CARDIO20/status", json!({"status": to, "reason": "test"})).await;
        assert_eq!((s, r["status"].as_str()), (StatusCode::OK, Some(to)));
    }
    let (s, _) = t.post(&admin, "/api/v1/studies/S_CARDIO20/status", json!({"status": "design"})).await;
    assert_eq!(s, StatusCode::CONFLICT);
    // A data manager of DEMO cannot see CARDIO at all, nor create studies.
    let dm = t.key("demo_dm").await;
    assert_eq!(t.get(&dm, "/api/v1/studies/S_CARDIO20").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        t.post(&dm, "/api/v1/studies", json!({"protocol_id": "X1", "name": "X"})).await.0,
        StatusCode::FORBIDDEN
    );
    // ...but edits DEMO, with the change audited with old and new values.
    let (s, r) = t
        .send(
            &dm,
            reqwest::Method::PATCH,
            "/api/v1/studies/S_DEMO",
            json!({"details": {"protocol_id": "DEMO", "name": "Demo renamed"}, "reason": "typo"}),
        )
        .await;
    assert_eq!((s, r["details"]["name"].as_str()), (StatusCode::OK, Some("Demo renamed")));
    let (_, page) = t.get(&dm, "/api/v1/studies/S_DEMO/audit?limit=1000").await;
    let last =
        page["records"].as_array().unwrap().iter().rev().find(|r| r["action"] == "study.updated").unwrap().clone();
    assert!(last["old_value"].as_str().unwrap().contains("Casebook demo study"));
    assert!(last["new_value"].as_str().unwrap().contains("Demo renamed"));
    assert_eq!(last["reason"], "typo");
    assert_eq!(last["actor_username"], "demo_dm");
    assert_eq!(last["channel"], "api");
}

both!(role_assignment, role_assignment_t);
async fn role_assignment_t(t: TestApp) {
    let dm = t.key("demo_dm").await;
    let admin = t.key("demo_admin").await;
    t.post(
        &admin,
        "/api/v1/users",
        json!({"username": "nurse", "first_name": "N", "last_name": "U", "email": "n@example.org"}),
    )
    .await;
    // Data manager is not offered at a site.
    let (s, e) = t
        .post(
            &dm,
            "/api/v1/studies/S_DEMO/roles",
            json!({"username": "nurse", "role": "coordinator", "site_oid": "S_DEMOA"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(e["message"].as_str().unwrap().contains("not a role at a site"), "{e}");
    let (s, r) = t
        .post(
            &dm,
            "/api/v1/studies/S_DEMO/roles",
            json!({"username": "nurse", "role": "Clinical Research Coordinator", "site_oid": "S_DEMOA"}),
        )
        .await;
    assert_eq!(
        (s, r["role_name"].as_str(), r["label"].as_str()),
        (StatusCode::CREATED, Some("ra"), Some("Clinical Research Coordinator"))
    );
    let (s, _) = t.post(&dm, "/api/v1/studies/S_DEMO/roles", json!({"username": "nurse", "role": "monitor"})).await;
    assert_eq!(s, StatusCode::CONFLICT);
    // Site users cannot assign roles.
    let inv = t.key("demo_investigator").await;
    assert_eq!(
        t.post(&inv, "/api/v1/studies/S_DEMO/roles", json!({"username": "nurse", "role": "monitor"})).await.0,
        StatusCode::FORBIDDEN
    );
    let r = crate::client()
        .delete(t.url("/api/v1/studies/S_DEMO/roles/nurse?site_oid=S_DEMOA"))
        .bearer_auth(&dm)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (_, page) = t.get(&dm, "/api/v1/studies/S_DEMO/audit?limit=1000").await;
    let actions: Vec<&str> =
        page["records"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert!(actions.ends_with(&["role.assigned", "role.removed"]), "{actions:?}");
}
