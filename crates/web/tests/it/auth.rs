//! Sign-in through the HTML form and the OpenClinica contract, sessions, CSRF, API keys.

use crate::{PASSWORD, TestApp, both, client};
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn hidden_csrf(html: &str) -> String {
    let at = html.find("name=csrf_token value='").expect("csrf field") + "name=csrf_token value='".len();
    html[at..].split('\'').next().unwrap().to_owned()
}

both!(health_and_login_pages, health_and_login_pages_t);
async fn health_and_login_pages_t(t: TestApp) {
    let r = client().get(t.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["database"], "ok");
    for path in ["/login", "/OpenClinica/pages/login/login"] {
        let r = client().get(t.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let html = r.text().await.unwrap();
        assert!(html.contains("type=password"), "{path} shows a sign-in form");
    }
    let html = client().get(t.url("/OpenClinica/pages/login/login")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("name='j_username'") && html.contains("/OpenClinica/j_spring_security_check"));
    let m = client().get(t.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("casebook_http_requests_total") && m.contains("casebook_database_up 1"));
}

both!(html_form_sign_in_and_out, html_form_sign_in_and_out_t);
async fn html_form_sign_in_and_out_t(t: TestApp) {
    let c = client();
    // Without a session the landing page sends you to sign in.
    let r = c.get(t.url("/")).send().await.unwrap();
    assert_eq!(r.headers()["location"], "/login");
    let form = c.get(t.url("/login")).send().await.unwrap().text().await.unwrap();
    let csrf = hidden_csrf(&form);
    // A post without the CSRF token is refused and signs nobody in.
    let r =
        client().post(t.url("/login")).form(&[("username", "demo_dm"), ("password", PASSWORD)]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Wrong password: the form again, with a message.
    let r = c
        .post(t.url("/login"))
        .form(&[("username", "demo_dm"), ("password", "nope"), ("csrf_token", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let html = r.text().await.unwrap();
    assert!(html.contains("Invalid username or password"));
    let csrf = hidden_csrf(&html);
    let r = c
        .post(t.url("/login"))
        .form(&[("username", "demo_dm"), ("password", PASSWORD), ("csrf_token", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/");
    let home = c.get(t.url("/")).send().await.unwrap().text().await.unwrap();
    assert!(home.contains("Welcome, demo_dm"), "{home}");
    assert!(home.contains("Data Manager") && home.contains("S_DEMO"));
    // Logging out needs the session's CSRF token.
    let r = c.post(t.url("/logout")).form(&[("csrf_token", "wrong")]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let session_csrf = hidden_csrf(&home);
    let r = c.post(t.url("/logout")).form(&[("csrf_token", &session_csrf)]).send().await.unwrap();
    assert_eq!(r.headers()["location"], "/login");
    let r = c.get(t.url("/")).send().await.unwrap();
    assert_eq!(r.headers()["location"], "/login", "signed out");
}

both!(openclinica_session_login, openclinica_session_login_t);
async fn openclinica_session_login_t(t: TestApp) {
    let c = client();
    let r = c
        .post(t.url("/OpenClinica/j_spring_security_check"))
        .form(&[("j_username", "demo_crc"), ("j_password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(r.headers()["location"], "/OpenClinica/MainMenu");
    let cookies: Vec<_> = r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    assert!(cookies.iter().any(|c| c.starts_with("JSESSIONID=")), "{cookies:?}");
    // The cookie then works for reads, as scripts expect.
    let me: Value = c.get(t.url("/api/v1/me")).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["user"]["username"], "demo_crc");
    assert_eq!(me["authenticated_by"], "session");
    let r = c.get(t.url("/OpenClinica/MainMenu")).send().await.unwrap();
    assert!(r.text().await.unwrap().contains("Welcome, demo_crc"));
    // Failure and unknown user redirect to errorLogin.
    for (u, p) in [("demo_crc", "wrong"), ("nobody", "x")] {
        let r = client()
            .post(t.url("/OpenClinica/j_spring_security_check"))
            .form(&[("j_username", u), ("j_password", p)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FOUND);
        assert_eq!(r.headers()["location"], "/OpenClinica/pages/login/login?action=errorLogin");
    }
    // A post made by another site's page is refused (login CSRF).
    let r = client()
        .post(t.url("/OpenClinica/j_spring_security_check"))
        .header("origin", "http://evil.example")
        .form(&[("j_username", "demo_crc"), ("j_password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Logout ends the session.
    let r = c.get(t.url("/OpenClinica/j_spring_security_logout")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let r = c.get(t.url("/api/v1/me")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

both!(lockout_after_failures, lockout_after_failures_t);
async fn lockout_after_failures_t(t: TestApp) {
    let admin = t.key("demo_admin").await;
    for i in 1..=4 {
        let r = client()
            .post(t.url("/api/v1/auth/login"))
            .json(&json!({"username": "demo_monitor", "password": "bad"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "attempt {i}");
        assert_eq!(r.json::<Value>().await.unwrap()["code"], "invalid_credentials");
    }
    // The fifth consecutive failure locks (default security.lockout_after = 5).
    let r = client()
        .post(t.url("/OpenClinica/j_spring_security_check"))
        .form(&[("j_username", "demo_monitor"), ("j_password", "bad")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["location"], "/OpenClinica/pages/login/login?action=errorLocked");
    // Now even the right password is refused.
    let r = client()
        .post(t.url("/api/v1/auth/login"))
        .json(&json!({"username": "demo_monitor", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "account_locked");
    let (s, u) = t.get(&admin, "/api/v1/users/demo_monitor").await;
    assert_eq!((s, u["status"].as_str()), (StatusCode::OK, Some("locked")));
    // An administrator unlocks; sign-in works again.
    let (s, u) = t.post(&admin, "/api/v1/users/demo_monitor/unlock", json!({})).await;
    assert_eq!((s, u["status"].as_str(), u["failed_logins"].as_i64()), (StatusCode::OK, Some("active"), Some(0)));
    t.session("demo_monitor").await;
    // The audit trail shows every event, in order.
    let (_, page) = t.get(&admin, "/api/v1/users/demo_monitor/audit?limit=1000").await;
    let actions: Vec<&str> =
        page["records"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
    let tail: Vec<&str> =
        actions.iter().copied().filter(|a| a.starts_with("login") || a.starts_with("user.")).collect();
    let expected = [
        "login.failed",
        "login.failed",
        "login.failed",
        "login.failed",
        "login.failed",
        "user.locked",
        "login.refused_locked",
        "user.unlocked",
        "login.succeeded",
    ];
    assert!(tail.ends_with(&expected), "{tail:?}");
}

both!(api_keys_bearer_basic_and_revocation, api_keys_t);
async fn api_keys_t(t: TestApp) {
    let (c, csrf) = t.session("demo_specialist").await;
    // Writes with a session need the CSRF header.
    let r = c.post(t.url("/api/v1/me/api-keys")).json(&json!({"name": "etl"})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "csrf_failed");
    let r = c
        .post(t.url("/api/v1/me/api-keys"))
        .header("x-csrf-token", &csrf)
        .json(&json!({"name": "etl"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    let prefix = created["prefix"].as_str().unwrap();
    assert!(key.starts_with(prefix));
    // Listing shows the prefix, never the secret.
    let listed = c.get(t.url("/api/v1/me/api-keys")).send().await.unwrap().text().await.unwrap();
    assert!(listed.contains(prefix) && !listed.contains(&key));
    // Bearer.
    let (s, me) = t.get(&key, "/api/v1/me").await;
    assert_eq!(
        (s, me["user"]["username"].as_str(), me["authenticated_by"].as_str()),
        (StatusCode::OK, Some("demo_specialist"), Some("api_key"))
    );
    // OpenClinica-style Basic: key as username, any password.
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{key}:whatever"));
    let r = client().get(t.url("/api/v1/me")).header("authorization", format!("Basic {basic}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = client()
        .post(t.url("/OpenClinica/pages/auth/api/v1/system/systemstatus"))
        .header("authorization", format!("Basic {basic}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["Database Connection"], "PASS");
    // Basic without the colon is refused, as OpenClinica does.
    let nocolon = base64::engine::general_purpose::STANDARD.encode(&key);
    let r = client().get(t.url("/api/v1/me")).header("authorization", format!("Basic {nocolon}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Malformed and unknown keys.
    for bad in ["nonsense", "cbk_0000000000000000000000000000000000000000"] {
        let (s, e) = t.get(bad, "/api/v1/me").await;
        assert_eq!((s, e["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthenticated")), "{bad}");
    }
    let r = client().get(t.url("/api/v1/me")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key("www-authenticate"));
    // Revoke: both forms stop working.
    let id = created["id"].as_i64().unwrap();
    let r = c.delete(t.url(&format!("/api/v1/me/api-keys/{id}"))).header("x-csrf-token", &csrf).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (s, _) = t.get(&key, "/api/v1/me").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let r = client().get(t.url("/api/v1/me")).header("authorization", format!("Basic {basic}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Revoking again is "not found"; last-used time was recorded.
    let r = c.delete(t.url(&format!("/api/v1/me/api-keys/{id}"))).header("x-csrf-token", &csrf).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let keys: Value = c.get(t.url("/api/v1/me/api-keys")).send().await.unwrap().json().await.unwrap();
    assert!(keys["api_keys"][0]["last_used_at"].is_string() && keys["api_keys"][0]["revoked_at"].is_string());
}

both!(sessions_expire_when_idle, sessions_expire_t);
async fn sessions_expire_t(t: TestApp) {
    let (c, _) = t.session("demo_entry").await;
    t.clock.advance(time::Duration::minutes(29));
    assert_eq!(c.get(t.url("/api/v1/me")).send().await.unwrap().status(), StatusCode::OK);
    t.clock.advance(time::Duration::minutes(29));
    assert_eq!(c.get(t.url("/api/v1/me")).send().await.unwrap().status(), StatusCode::OK, "use keeps it alive");
    t.clock.advance(time::Duration::minutes(31));
    let r = c.get(t.url("/api/v1/me")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.unwrap().contains("expired"));
}

both!(login_rotates_the_session, rotation_t);
async fn rotation_t(t: TestApp) {
    let c = client();
    let first: Value = c
        .post(t.url("/api/v1/auth/login"))
        .json(&json!({"username": "demo_dm", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let second: Value = c
        .post(t.url("/api/v1/auth/login"))
        .json(&json!({"username": "demo_dm", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(first["csrf_token"], second["csrf_token"], "a new session (and CSRF token) at every sign-in");
    let r = c
        .post(t.url("/api/v1/auth/logout"))
        .header("x-csrf-token", second["csrf_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(c.get(t.url("/api/v1/me")).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
}
