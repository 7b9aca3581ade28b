//! Site isolation: a site-level user never sees another site's records (one test per role).

use crate::{TestApp, both};
use reqwest::StatusCode;
use serde_json::Value;

async fn isolated(t: &TestApp, username: &str) {
    let key = t.key(username).await;
    let (s, sites) = t.get(&key, "/api/v1/studies/S_DEMO/sites").await;
    assert_eq!(s, StatusCode::OK);
    let oids: Vec<&str> = sites["sites"].as_array().unwrap().iter().map(|x| x["oid"].as_str().unwrap()).collect();
    assert_eq!(oids, ["S_DEMOA"], "{username} sees only site A");
    assert_eq!(t.get(&key, "/api/v1/studies/S_DEMO/sites/S_DEMOA").await.0, StatusCode::OK);
    let (s, e) = t.get(&key, "/api/v1/studies/S_DEMO/sites/S_DEMOB").await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{username} cannot read site B");
    let (_, roles) = t.get(&key, "/api/v1/studies/S_DEMO/roles").await;
    assert!(
        roles["roles"].as_array().unwrap().iter().all(|r| r["site_oid"] != "S_DEMOB"),
        "{username}: no site B roles"
    );
    assert_eq!(t.get(&key, "/api/v1/studies/S_DEMO/audit?site_oid=S_DEMOB").await.0, StatusCode::NOT_FOUND);
    let (_, page) = t.get(&key, "/api/v1/studies/S_DEMO/audit?limit=1000").await;
    let records = page["records"].as_array().unwrap();
    assert!(!records.is_empty());
    let site_a = t.app.store().study_by_oid("S_DEMOA").await.unwrap().unwrap().id;
    assert!(records.iter().all(|r| r["site_id"].as_i64() == Some(site_a)), "{username} audit only of site A");
    let text = serde_json::to_string(&page).unwrap();
    assert!(!text.contains("S_DEMOB"), "{username}: nothing about site B");
    // Editing a site is for study-level managers.
    let (s, _) = t
        .send(&key, reqwest::Method::PATCH, "/api/v1/studies/S_DEMO/sites/S_DEMOA", serde_json::json!({"reason": "x"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _): (StatusCode, Value) = t
        .send(&key, reqwest::Method::PATCH, "/api/v1/studies/S_DEMO/sites/S_DEMOB", serde_json::json!({"reason": "x"}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

both!(site_investigator_is_isolated, investigator_t);
async fn investigator_t(t: TestApp) {
    isolated(&t, "demo_investigator").await;
}

both!(site_crc_is_isolated, crc_t);
async fn crc_t(t: TestApp) {
    isolated(&t, "demo_crc").await;
}

both!(site_monitor_is_isolated, monitor_t);
async fn monitor_t(t: TestApp) {
    isolated(&t, "demo_site_monitor").await;
}

both!(site_data_entry_is_isolated, entry_t);
async fn entry_t(t: TestApp) {
    isolated(&t, "demo_site_entry").await;
}

both!(study_level_users_see_every_site, study_level_t);
async fn study_level_t(t: TestApp) {
    for u in ["demo_dm", "demo_director", "demo_specialist", "demo_entry", "demo_monitor", "demo_admin"] {
        let key = t.key(u).await;
        let (_, sites) = t.get(&key, "/api/v1/studies/S_DEMO/sites").await;
        assert_eq!(sites["sites"].as_array().unwrap().len(), 2, "{u}");
        assert_eq!(t.get(&key, "/api/v1/studies/S_DEMO/sites/S_DEMOB").await.0, StatusCode::OK, "{u}");
    }
}
