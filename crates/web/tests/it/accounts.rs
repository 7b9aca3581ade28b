//! Account administration and the first-login password change.

use crate::{TestApp, both, client};
use reqwest::StatusCode;
use serde_json::{Value, json};

both!(first_login_password_change, first_login_t);
async fn first_login_t(t: TestApp) {
    let admin = t.key("demo_admin").await;
    let (s, created) = t
        .post(
            &admin,
            "/api/v1/users",
            json!({"username": "newbie", "first_name": "New", "last_name": "Bie", "email": "newbie@example.org"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let temp = created["temporary_password"].as_str().unwrap().to_owned();
    assert_eq!(created["user"]["must_change_password"], true);
    assert!(created["user"].get("password_hash").is_none());
    let c = client();
    let login: Value = c
        .post(t.url("/api/v1/auth/login"))
        .json(&json!({"username": "newbie", "password": temp}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(login["must_change_password"], true);
    let csrf = login["csrf_token"].as_str().unwrap();
    let r = c.get(t.url("/api/v1/studies")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "password_change_required");
    // The policy is enforced, with every broken rule named.
    let r = c
        .post(t.url("/api/v1/me/password"))
        .header("x-csrf-token", csrf)
        .json(&json!({"current_password": temp, "new_password": "newbie1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["details"]["fields"].as_array().unwrap().len(), 2, "{e}");
    let r = c
        .post(t.url("/api/v1/me/password"))
        .header("x-csrf-token", csrf)
        .json(&json!({"current_password": temp, "new_password": "a-Good-passw0rd"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let c2 = client();
    let login: Value = c2
        .post(t.url("/api/v1/auth/login"))
        .json(&json!({"username": "newbie", "password": "a-Good-passw0rd"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(login["must_change_password"], false);
    assert_eq!(c2.get(t.url("/api/v1/studies")).send().await.unwrap().status(), StatusCode::OK);
}

both!(user_admin_rules_and_bad_input, user_admin_t);
async fn user_admin_t(t: TestApp) {
    let admin = t.key("demo_admin").await;
    let dm = t.key("demo_dm").await;
    // Duplicate usernames are a conflict and change nothing.
    let (s, e) = t
        .post(
            &admin,
            "/api/v1/users",
            json!({"username": "demo_dm", "first_name": "X", "last_name": "Y", "email": "x@example.org"}),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")));
    // Every problem at once.
    let (s, e) = t
        .post(
            &admin,
            "/api/v1/users",
            json!({"username": "a b", "first_name": "", "last_name": "Y", "email": "nope", "user_type": "king"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> =
        e["details"]["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["username", "first_name", "email", "user_type"]);
    // Malformed JSON and unknown fields.
    let r = client()
        .post(t.url("/api/v1/users"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "malformed_json");
    let (s, e) = t.post(&admin, "/api/v1/users", json!({"username": "u", "surprise": 1})).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_body")));
    // Oversized bodies.
    let big = "x".repeat(100 * 1024);
    let r =
        client().post(t.url("/api/v1/users")).bearer_auth(&admin).json(&json!({"username": big})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Non-administrators cannot create users; business admins cannot touch technical admins.
    let (s, _) = t
        .post(
            &dm,
            "/api/v1/users",
            json!({"username": "x1", "first_name": "X", "last_name": "Y", "email": "x@example.org"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = t.post(&admin, "/api/v1/users", json!({"username": "biz", "first_name": "B", "last_name": "A", "email": "b@example.org", "user_type": "business_administrator", "password": "Business-admin-1"})).await;
    assert_eq!(s, StatusCode::CREATED);
    t.app.set_password_cli("biz", "Business-admin-2").await.unwrap();
    let biz = t.key_with_password("biz", "Business-admin-2").await;
    let (s, _) = t.post(&biz, "/api/v1/users/demo_admin/lock", json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Remove keeps the account, ends access, and can be restored.
    let crc = t.key("demo_crc").await;
    let (s, u) = t.post(&admin, "/api/v1/users/demo_crc/remove", json!({})).await;
    assert_eq!((s, u["status"].as_str()), (StatusCode::OK, Some("removed")));
    assert_eq!(t.get(&crc, "/api/v1/me").await.0, StatusCode::UNAUTHORIZED, "keys revoked on removal");
    let (s, e) = t.post(&admin, "/api/v1/users/demo_crc/remove", json!({})).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::CONFLICT, Some("invalid_status_transition")));
    let (s, _) = t.post(&admin, "/api/v1/users/demo_crc/restore", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    // Password reset gives a temporary password that must be changed.
    let (s, r) = t.post(&admin, "/api/v1/users/demo_crc/reset-password", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let r = client()
        .post(t.url("/api/v1/auth/login"))
        .json(&json!({"username": "demo_crc", "password": r["temporary_password"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["must_change_password"], true);
    // Every change is audited.
    let (_, page) = t.get(&admin, "/api/v1/users/demo_crc/audit").await;
    let actions: Vec<&str> =
        page["records"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
    for a in ["user.created", "user.removed", "user.restored", "user.password_reset", "login.succeeded"] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
}
