//! Review over the API: event status actions by role, electronic signatures of events and
//! casebooks (and how later changes break them), source data verification (and how later
//! changes reset it); on both databases.

use crate::{PASSWORD, TestApp, both};
use casebook_store::Db;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const STUDY: &str = "/api/v1/studies/S_DEMO/participants";
pub(crate) const MEANING: &str = "I attest that I have reviewed these data and that they are accurate and complete";

/// A participant at DEMO-A with the baseline scheduled; returns its label.
pub(crate) async fn enrol(t: &TestApp, crc: &str) -> String {
    let (s, p) = t
        .post(
            crc,
            STUDY,
            json!({"site": "S_DEMOA", "sex": "f", "date_of_birth": "1980-05-05", "enrolled_on": "2026-01-10"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let label = p["label"].as_str().unwrap().to_owned();
    schedule(t, crc, &label, "SE_BASELINE").await;
    label
}

async fn schedule(t: &TestApp, key: &str, label: &str, event: &str) {
    let (s, e) = t.post(key, &format!("{STUDY}/{label}/events"), json!({"event": event})).await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
}

fn form_path(label: &str, event: &str) -> String {
    format!("{STUDY}/{label}/events/{event}/1/forms/F_VITAL_SIGNS")
}

pub(crate) fn event_path(label: &str, event: &str) -> String {
    format!("{STUDY}/{label}/events/{event}/1")
}

/// Saves values into the vital signs; returns the response.
async fn save(t: &TestApp, key: &str, label: &str, event: &str, values: Value) -> (StatusCode, Value) {
    let (_, book) = t.get(key, &format!("{STUDY}/{label}")).await;
    let version = book["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_oid"] == event)
        .and_then(|e| e["forms"].as_array().unwrap().iter().find(|f| f["form_oid"] == "F_VITAL_SIGNS"))
        .map(|f| f["version"].clone())
        .unwrap_or(Value::Null);
    t.send(key, Method::PUT, &form_path(label, event), json!({"expected_version": version, "values": values})).await
}

/// Every required vital sign (and one ECG reading).
fn all_vitals() -> Value {
    json!([
        {"item": "vs_date", "value": "2026-01-10"}, {"item": "weight", "value": "64"}, {"item": "height", "value": "170"},
        {"item": "sys", "value": "118"}, {"item": "dia", "value": "76"}, {"item": "abnormal", "value": "no"},
        {"item": "ecg_time", "row": 1, "value": "09:30"}, {"item": "hr", "row": 1, "value": "68"}
    ])
}

/// Fills and completes the vital signs of `event`: the event completes by itself.
pub(crate) async fn complete_vitals(t: &TestApp, crc: &str, label: &str, event: &str) {
    let (s, saved) = save(t, crc, label, event, all_vitals()).await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    let version = saved["form"]["version"].as_i64().unwrap();
    let (s, done) =
        t.post(crc, &format!("{}/complete", form_path(label, event)), json!({"expected_version": version})).await;
    assert_eq!(s, StatusCode::OK, "{done}");
    assert_eq!(done["event_status"], "completed", "{done}");
}

async fn set_status(t: &TestApp, key: &str, label: &str, status: &str) -> (StatusCode, Value) {
    t.post(key, &format!("{}/status", event_path(label, "SE_BASELINE")), json!({"status": status, "reason": "test"}))
        .await
}

async fn review(t: &TestApp, key: &str, label: &str) -> Value {
    let (s, r) = t.get(key, &format!("{STUDY}/{label}/review")).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    r
}

fn baseline(review: &Value) -> &Value {
    review["events"].as_array().unwrap().iter().find(|e| e["event_oid"] == "SE_BASELINE").unwrap()
}

/// An audit record's new value (stored as JSON text).
fn new_value(record: &Value) -> Value {
    record["new_value"].as_str().and_then(|s| serde_json::from_str(s).ok()).unwrap_or(Value::Null)
}

async fn actions(t: &TestApp) -> Vec<String> {
    let dm = t.key("demo_dm").await;
    let (_, audit) = t.get(&dm, "/api/v1/studies/S_DEMO/audit?limit=1000").await;
    audit["records"].as_array().unwrap().iter().filter_map(|r| r["action"].as_str().map(str::to_owned)).collect()
}

both!(event_status_actions_follow_roles_and_rules, status_t);
async fn status_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    let dm = t.key("demo_dm").await;
    let monitor = t.key("demo_monitor").await;
    let label = enrol(&t, &crc).await;

    // Completing by hand needs every required form complete.
    let (s, e) = set_status(&t, &crc, &label, "completed").await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::CONFLICT, Some("invalid_status_transition")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("required form"), "{e}");

    // Once data entry started, the event can be stopped but not skipped.
    let (s, saved) = save(&t, &crc, &label, "SE_BASELINE", json!([{"item": "weight", "value": "64"}])).await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    let (s, e) = set_status(&t, &crc, &label, "skipped").await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert!(e["message"].as_str().unwrap().contains("data entry has started"), "{e}");
    let (s, e) = set_status(&t, &crc, &label, "scheduled").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "never back to scheduled: {e}");

    // A CRC may not lock; a data manager may not lock while a started required form is incomplete.
    let (s, e) = set_status(&t, &crc, &label, "locked").await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")), "{e}");
    let (s, e) = set_status(&t, &dm, &label, "locked").await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");

    // A monitor does not enter data, so does not stop events either.
    let (s, _) = set_status(&t, &monitor, &label, "stopped").await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Stopped events refuse data; reopening brings data entry back.
    let (s, ev) = set_status(&t, &crc, &label, "stopped").await;
    assert_eq!((s, ev["status"].as_str()), (StatusCode::OK, Some("stopped")), "{ev}");
    let (s, e) = save(&t, &crc, &label, "SE_BASELINE", json!([{"item": "height", "value": "170"}])).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert!(e["message"].as_str().unwrap().contains("stopped"), "{e}");
    let (s, ev) = set_status(&t, &crc, &label, "data_entry_started").await;
    assert_eq!((s, ev["status"].as_str()), (StatusCode::OK, Some("data_entry_started")), "{ev}");

    // Complete the form: the event completes; then the data manager locks it.
    complete_vitals(&t, &crc, &label, "SE_BASELINE").await;
    let (s, ev) = set_status(&t, &dm, &label, "locked").await;
    assert_eq!((s, ev["status"].as_str()), (StatusCode::OK, Some("locked")), "{ev}");
    assert_eq!(ev["locked_from"], "completed", "{ev}");

    // A locked event refuses data, with a clear error; and refuses other moves.
    let (s, e) = save(&t, &crc, &label, "SE_BASELINE", json!([{"item": "weight", "value": "65"}])).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::CONFLICT, Some("invalid_status_transition")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("the event is locked"), "{e}");
    let (s, _) = set_status(&t, &crc, &label, "stopped").await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = set_status(&t, &crc, &label, "unlocked").await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Unlocking returns to the status before locking; data can change again.
    let (s, ev) = set_status(&t, &dm, &label, "unlocked").await;
    assert_eq!((s, ev["status"].as_str()), (StatusCode::OK, Some("completed")), "{ev}");
    assert!(ev.get("locked_from").is_none(), "{ev}");
    let (s, e) = save(&t, &crc, &label, "SE_BASELINE", json!([{"item": "weight", "value": "65"}])).await;
    assert_eq!(s, StatusCode::OK, "{e}");

    // A scheduled event without data can be skipped, and reopened later.
    let other = enrol(&t, &crc).await;
    let (s, ev) = set_status(&t, &crc, &other, "skipped").await;
    assert_eq!((s, ev["status"].as_str()), (StatusCode::OK, Some("skipped")), "{ev}");
    let (s, _) = set_status(&t, &dm, &other, "locked").await;
    assert_eq!(s, StatusCode::CONFLICT, "an event without forms cannot be locked");

    // Other sites' users do not see the participant at all.
    let crc_b = t.key("demo_crc_b").await;
    let (s, _) = set_status(&t, &crc_b, &label, "stopped").await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Every manual move is audited with its reason.
    let dm_key = t.key("demo_dm").await;
    let (_, audit) = t.get(&dm_key, "/api/v1/studies/S_DEMO/audit?limit=1000").await;
    let manual: Vec<&Value> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "event.status_changed" && new_value(r)["manual"] == true)
        .collect();
    let moves: Vec<String> = manual.iter().filter_map(|r| new_value(r)["status"].as_str().map(str::to_owned)).collect();
    for m in ["stopped", "data_entry_started", "locked", "completed", "skipped"] {
        assert!(moves.iter().any(|x| x == m), "{m} not audited: {moves:?}");
    }
    assert!(manual.iter().all(|r| r["reason"] == "test"), "{manual:?}");
}

pub(crate) async fn sign(t: &TestApp, key: &str, path: &str, username: &str, password: &str) -> (StatusCode, Value) {
    t.post(key, &format!("{path}/sign"), json!({"username": username, "password": password, "meaning": MEANING})).await
}

both!(signing_an_event_and_breaking_the_signature, sign_t);
async fn sign_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    let inv = t.key("demo_investigator").await;
    let dm = t.key("demo_dm").await;
    let label = enrol(&t, &crc).await;
    let path = event_path(&label, "SE_BASELINE");

    // Only completed events are signed.
    let (s, e) = sign(&t, &inv, &path, "demo_investigator", PASSWORD).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    complete_vitals(&t, &crc, &label, "SE_BASELINE").await;

    // Re-authentication: the signer's own username and password; investigators only.
    let (s, e) = sign(&t, &inv, &path, "demo_investigator", "Wrong-password-9").await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("validation_failed")), "{e}");
    let (s, e) = sign(&t, &inv, &path, "demo_crc", PASSWORD).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "someone else's username: {e}");
    let (s, e) = sign(&t, &crc, &path, "demo_crc", PASSWORD).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a CRC cannot sign: {e}");
    let (s, e) = sign(&t, &dm, &path, "demo_dm", PASSWORD).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a data manager cannot sign: {e}");
    let (s, e) = t
        .post(
            &inv,
            &format!("{path}/sign"),
            json!({"username": "demo_investigator", "password": PASSWORD, "meaning": " "}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "a signature states its meaning: {e}");
    assert_eq!(baseline(&review(&t, &inv, &label).await)["status"], "completed", "nothing was signed");

    // The investigator signs: who, when, what it means, and a hash of the data.
    let (s, sig) = sign(&t, &inv, &path, "demo_investigator", PASSWORD).await;
    assert_eq!(s, StatusCode::OK, "{sig}");
    assert_eq!(sig["scope"], "event");
    assert_eq!(sig["event_oid"], "SE_BASELINE");
    assert_eq!(sig["signer_username"], "demo_investigator");
    assert_eq!(sig["signer_name"], "Ivan Investigator");
    assert_eq!(sig["meaning"], MEANING);
    assert_eq!(sig["signed_at"], "2026-11-22T09:00:00Z");
    assert_eq!(sig["status"], "in_force");
    assert_eq!(sig["data_hash"].as_str().unwrap().len(), 64, "{sig}");
    assert_eq!(baseline(&review(&t, &crc, &label).await)["status"], "signed");
    let (s, _) = sign(&t, &inv, &path, "demo_investigator", PASSWORD).await;
    assert_eq!(s, StatusCode::CONFLICT, "already signed");

    // A later change to the signed data: back to completed, the signature broken and shown so.
    t.clock.advance(time::Duration::hours(2));
    let (s, saved) = save(&t, &crc, &label, "SE_BASELINE", json!([{"item": "weight", "value": "65"}])).await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    assert_eq!(saved["event_status"], "completed", "{saved}");
    let (s, sigs) = t.get(&crc, &format!("{STUDY}/{label}/signatures")).await;
    assert_eq!(s, StatusCode::OK);
    let broken = &sigs["signatures"][0];
    assert_eq!(broken["status"], "broken", "{sigs}");
    assert_eq!(broken["broken_at"], "2026-11-22T11:00:00Z", "{sigs}");
    assert!(broken["broken_reason"].as_str().unwrap().contains("F_VITAL_SIGNS"), "{sigs}");
    assert!(broken["broken_audit_seq"].as_i64().unwrap() > broken["audit_seq"].as_i64().unwrap(), "{sigs}");
    let r = review(&t, &inv, &label).await;
    assert_eq!(baseline(&r)["status"], "completed");
    assert_eq!(r["signatures"][0]["status"], "broken");

    // Signing again makes a new signature over the new data; the broken one stays.
    let (s, again) = sign(&t, &inv, &path, "demo_investigator", PASSWORD).await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_ne!(again["data_hash"], broken["data_hash"], "the data changed, so does the hash");
    let (_, sigs) = t.get(&inv, &format!("{STUDY}/{label}/signatures")).await;
    let states: Vec<&str> =
        sigs["signatures"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(states, ["broken", "in_force"]);

    // Signatures are never rewritten or deleted, even in the database.
    let db = t.app.store().db().clone();
    for sql in
        ["UPDATE signatures SET meaning = 'forged'", "DELETE FROM signatures", "UPDATE signatures SET broken_at = NULL"]
    {
        let refused = match &db {
            Db::Sqlite(p) => sqlx::query(sql).execute(p).await.is_err(),
            Db::Postgres(p) => sqlx::query(sql).execute(p).await.is_err(),
        };
        assert!(refused, "{sql} must be refused");
    }

    // Another site's investigator does not even see the participant.
    let inv_b = t.key("demo_investigator_b").await;
    let (s, _) = sign(&t, &inv_b, &path, "demo_investigator_b", PASSWORD).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let actions = actions(&t).await;
    for a in ["event.signed", "signature.broken", "signature.refused"] {
        assert!(actions.iter().any(|x| x == a), "{a} missing");
    }
}

both!(signing_a_casebook, casebook_t);
async fn casebook_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    let inv = t.key("demo_investigator").await;
    let label = enrol(&t, &crc).await;
    let casebook = format!("{STUDY}/{label}");
    complete_vitals(&t, &crc, &label, "SE_BASELINE").await;
    schedule(&t, &crc, &label, "SE_FOLLOWUP").await;

    // Every event must be completed, stopped or skipped.
    let (s, e) = sign(&t, &inv, &casebook, "demo_investigator", PASSWORD).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("casebook_not_ready")), "{e}");
    assert_eq!(e["details"]["events"][0]["event_oid"], "SE_FOLLOWUP", "{e}");
    let (s, e) = sign(&t, &inv, &casebook, "demo_investigator", "Wrong-password-9").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let (s, ev) =
        t.post(&crc, &format!("{}/status", event_path(&label, "SE_FOLLOWUP")), json!({"status": "skipped"})).await;
    assert_eq!(s, StatusCode::OK, "{ev}");
    let (s, e) = sign(&t, &crc, &casebook, "demo_crc", PASSWORD).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");

    let (s, sig) = sign(&t, &inv, &casebook, "demo_investigator", PASSWORD).await;
    assert_eq!(s, StatusCode::OK, "{sig}");
    assert_eq!(sig["scope"], "casebook");
    assert!(sig.get("event_oid").is_none(), "{sig}");
    let (_, book) = t.get(&crc, &casebook).await;
    assert_eq!(book["participant"]["status"], "signed", "{book}");
    let (s, _) = sign(&t, &inv, &casebook, "demo_investigator", PASSWORD).await;
    assert_eq!(s, StatusCode::CONFLICT, "already signed");

    // A change anywhere in the casebook un-signs it.
    let (s, saved) = save(&t, &crc, &label, "SE_BASELINE", json!([{"item": "sys", "value": "119"}])).await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    let (_, book) = t.get(&crc, &casebook).await;
    assert_eq!(book["participant"]["status"], "available", "{book}");
    let r = review(&t, &inv, &label).await;
    assert_eq!(r["status"], "available");
    assert_eq!(r["signatures"][0]["scope"], "casebook");
    assert_eq!(r["signatures"][0]["status"], "broken", "{r}");
    let actions = actions(&t).await;
    for a in ["participant.signed", "participant.status_changed", "signature.broken"] {
        assert!(actions.iter().any(|x| x == a), "{a} missing");
    }
}

async fn sdv(t: &TestApp, key: &str, label: &str, verified: bool) -> (StatusCode, Value) {
    t.post(key, &format!("{}/sdv", form_path(label, "SE_BASELINE")), json!({"verified": verified})).await
}

fn vitals_sdv(review: &Value) -> Value {
    baseline(review)["forms"].as_array().unwrap().iter().find(|f| f["form_oid"] == "F_VITAL_SIGNS").unwrap()["sdv"]
        .clone()
}

both!(source_data_verification, sdv_t);
async fn sdv_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    let monitor = t.key("demo_monitor").await;
    let site_monitor = t.key("demo_site_monitor").await;
    let label = enrol(&t, &crc).await;

    // Only started, complete forms are verified.
    let (s, _) = sdv(&t, &monitor, &label, true).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "nothing started yet");
    let (s, saved) = save(&t, &crc, &label, "SE_BASELINE", json!([{"item": "weight", "value": "64"}])).await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    let (s, e) = sdv(&t, &monitor, &label, true).await;
    assert_eq!(s, StatusCode::CONFLICT, "an incomplete form: {e}");
    assert!(e["message"].as_str().unwrap().contains("complete"), "{e}");
    complete_vitals(&t, &crc, &label, "SE_BASELINE").await;

    // The requirement is shown with the state; CRCs do not verify.
    let before = vitals_sdv(&review(&t, &crc, &label).await);
    assert_eq!(before["requirement"], "full", "{before}");
    assert_eq!(before["status"], "not_verified", "{before}");
    let (s, _) = sdv(&t, &crc, &label, true).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // The monitor verifies; verifying twice is refused; the site monitor may withdraw and redo it.
    let (s, f) = sdv(&t, &monitor, &label, true).await;
    assert_eq!(s, StatusCode::OK, "{f}");
    assert_eq!(f["sdv"]["status"], "verified", "{f}");
    assert_eq!(f["sdv"]["verified_by"], "demo_monitor", "{f}");
    assert_eq!(f["sdv"]["verified_at"], "2026-11-22T09:00:00Z", "{f}");
    let (s, _) = sdv(&t, &monitor, &label, true).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, f) = sdv(&t, &site_monitor, &label, false).await;
    assert_eq!((s, f["sdv"]["status"].as_str()), (StatusCode::OK, Some("not_verified")), "{f}");
    let (s, f) = sdv(&t, &site_monitor, &label, true).await;
    assert_eq!((s, f["sdv"]["verified_by"].as_str()), (StatusCode::OK, Some("demo_site_monitor")), "{f}");

    // A later change to the data: changed since verified.
    t.clock.advance(time::Duration::minutes(30));
    let (s, saved) = save(&t, &crc, &label, "SE_BASELINE", json!([{"item": "height", "value": "171"}])).await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    let after = vitals_sdv(&review(&t, &monitor, &label).await);
    assert_eq!(after["status"], "changed_since_verified", "{after}");
    assert_eq!(after["changed_at"], "2026-11-22T09:30:00Z", "{after}");
    assert_eq!(after["verified_by"], "demo_site_monitor", "the last verification is still shown: {after}");

    // Verifying again clears the flag.
    let (s, f) = sdv(&t, &monitor, &label, true).await;
    assert_eq!((s, f["sdv"]["status"].as_str()), (StatusCode::OK, Some("verified")), "{f}");
    let after = vitals_sdv(&review(&t, &monitor, &label).await);
    assert_eq!((after["status"].as_str(), &after["changed_at"]), (Some("verified"), &Value::Null), "{after}");

    let actions = actions(&t).await;
    for a in ["form.sdv_verified", "form.sdv_unverified", "form.sdv_reset"] {
        assert!(actions.iter().any(|x| x == a), "{a} missing");
    }
}

async fn sdv_items(t: &TestApp, key: &str, label: &str, verified: bool, items: Value) -> (StatusCode, Value) {
    t.post(key, &format!("{}/sdv", form_path(label, "SE_FOLLOWUP")), json!({"verified": verified, "items": items}))
        .await
}

fn followup_sdv(review: &Value) -> Value {
    let event = review["events"].as_array().unwrap().iter().find(|e| e["event_oid"] == "SE_FOLLOWUP").unwrap();
    event["forms"][0]["sdv"].clone()
}

fn item_states(sdv: &Value) -> Vec<(String, String)> {
    sdv["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| (i["item_oid"].as_str().unwrap().to_owned(), i["status"].as_str().unwrap().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}

both!(item_level_source_data_verification, item_sdv_t);
async fn item_sdv_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    let monitor = t.key("demo_monitor").await;
    let label = enrol(&t, &crc).await;
    schedule(&t, &crc, &label, "SE_FOLLOWUP").await;
    complete_vitals(&t, &crc, &label, "SE_FOLLOWUP").await;

    // The demo's follow-up asks for weight and blood pressure to be verified one by one.
    let sdv = followup_sdv(&review(&t, &monitor, &label).await);
    assert_eq!(sdv["requirement"], "partial", "{sdv}");
    assert_eq!(sdv["sdv_items"], json!(["I_VITAL_WEIGHT", "I_VITAL_SYS", "I_VITAL_DIA"]), "{sdv}");

    // The design names its items, which must exist, under a partial requirement.
    let dm = t.key("demo_dm").await;
    let event = |sdv: &str, items: Value| {
        json!({"name": "Follow-up", "type": "scheduled", "repeating": true,
               "forms": [{"form": "F_VITAL_SIGNS", "sdv": sdv, "sdv_items": items}]})
    };
    let path = "/api/v1/studies/S_DEMO/design/events/SE_FOLLOWUP";
    let (s, e) = t.send(&dm, Method::PUT, path, event("partial", json!(["weight", "I_NOPE"]))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e.to_string().contains("forms[0].sdv_items[1]") && e.to_string().contains("I_NOPE"), "{e}");
    let (s, e) = t.send(&dm, Method::PUT, path, event("full", json!(["weight"]))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e.to_string().contains("partial"), "{e}");

    // Unknown items and empty values are named; nothing changes.
    let (s, e) =
        sdv_items(&t, &monitor, &label, true, json!([{"item": "weight"}, {"item": "nope"}, {"item": "hr", "row": 5}]))
            .await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("sdv_refused")), "{e}");
    let codes: Vec<&str> =
        e["details"]["problems"].as_array().unwrap().iter().map(|p| p["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["unknown_item", "no_value"], "{e}");
    assert!(item_states(&followup_sdv(&review(&t, &monitor, &label).await)).is_empty());
    let (s, _) = sdv_items(&t, &crc, &label, true, json!([{"item": "weight"}])).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "CRCs do not verify");

    // Two of the three: the form is not verified yet; the third verifies it.
    let (s, f) = sdv_items(&t, &monitor, &label, true, json!([{"item": "weight"}, {"item": "I_VITAL_SYS"}])).await;
    assert_eq!(s, StatusCode::OK, "{f}");
    assert_eq!(f["sdv"]["status"], "not_verified", "{f}");
    assert_eq!(item_states(&f["sdv"]), pairs(&[("I_VITAL_SYS", "verified"), ("I_VITAL_WEIGHT", "verified")]), "{f}");
    let (s, e) = sdv_items(&t, &monitor, &label, true, json!([{"item": "weight"}])).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("sdv_refused")), "twice: {e}");
    let (s, f) = sdv_items(&t, &monitor, &label, true, json!([{"item": "dia"}])).await;
    assert_eq!((s, f["sdv"]["status"].as_str()), (StatusCode::OK, Some("verified")), "{f}");

    // A change to an item that needs no verification resets the form but no value.
    t.clock.advance(time::Duration::minutes(10));
    let (s, saved) = save(&t, &crc, &label, "SE_FOLLOWUP", json!([{"item": "height", "value": "171"}])).await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    let sdv = followup_sdv(&review(&t, &monitor, &label).await);
    assert_eq!(sdv["status"], "changed_since_verified", "{sdv}");
    let all_verified =
        pairs(&[("I_VITAL_DIA", "verified"), ("I_VITAL_SYS", "verified"), ("I_VITAL_WEIGHT", "verified")]);
    assert_eq!(item_states(&sdv), all_verified, "{sdv}");

    // A change to a verified value resets exactly that value.
    let (s, saved) = save(&t, &crc, &label, "SE_FOLLOWUP", json!([{"item": "weight", "value": "65"}])).await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    let sdv = followup_sdv(&review(&t, &monitor, &label).await);
    assert_eq!(
        item_states(&sdv),
        pairs(&[
            ("I_VITAL_DIA", "verified"),
            ("I_VITAL_SYS", "verified"),
            ("I_VITAL_WEIGHT", "changed_since_verified")
        ]),
        "{sdv}"
    );
    let weight = sdv["items"].as_array().unwrap().iter().find(|i| i["item_oid"] == "I_VITAL_WEIGHT").unwrap();
    assert_eq!(weight["changed_at"], "2026-11-22T09:10:00Z", "{sdv}");

    // Re-verifying the changed value alone verifies the form again.
    let (s, f) = sdv_items(&t, &monitor, &label, true, json!([{"item": "weight"}])).await;
    assert_eq!((s, f["sdv"]["status"].as_str()), (StatusCode::OK, Some("verified")), "{f}");
    assert_eq!(item_states(&f["sdv"]), all_verified, "{f}");

    // Withdrawing one value's verification withdraws the form's.
    let (s, f) = sdv_items(&t, &monitor, &label, false, json!([{"item": "sys"}])).await;
    assert_eq!((s, f["sdv"]["status"].as_str()), (StatusCode::OK, Some("not_verified")), "{f}");

    // Every step is audited, the reset naming the value.
    let dm = t.key("demo_dm").await;
    let (_, audit) = t.get(&dm, "/api/v1/studies/S_DEMO/audit?limit=1000").await;
    let records = audit["records"].as_array().unwrap();
    let reset: Vec<&str> =
        records.iter().filter(|r| r["action"] == "item.sdv_reset").map(|r| r["entity_id"].as_str().unwrap()).collect();
    assert_eq!(reset.len(), 1, "{reset:?}");
    assert!(reset[0].ends_with("SE_FOLLOWUP[1]/F_VITAL_SIGNS/IG_VITAL_VS[1]/I_VITAL_WEIGHT"), "{reset:?}");
    for a in ["item.sdv_verified", "item.sdv_unverified", "form.sdv_verified", "form.sdv_unverified"] {
        assert!(records.iter().any(|r| r["action"] == a), "{a} missing");
    }
}

both!(verifying_a_whole_form_verifies_its_values, form_sdv_items_t);
async fn form_sdv_items_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    let monitor = t.key("demo_monitor").await;
    let label = enrol(&t, &crc).await;
    complete_vitals(&t, &crc, &label, "SE_BASELINE").await;
    let (s, f) = sdv(&t, &monitor, &label, true).await;
    assert_eq!(s, StatusCode::OK, "{f}");
    // Full SDV: each value is recorded as verified, so a later change names the value.
    let (_, book) = t.get(&crc, &format!("{STUDY}/{label}")).await;
    let held = book["events"][0]["forms"][0]["values"].as_array().unwrap().len();
    assert!(held >= 8, "{book}");
    assert_eq!(item_states(&f["sdv"]).iter().filter(|(_, s)| s == "verified").count(), held, "{f}");
    let (s, saved) = save(&t, &crc, &label, "SE_BASELINE", json!([{"item": "hr", "row": 1, "value": "70"}])).await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    let sdv_now = vitals_sdv(&review(&t, &monitor, &label).await);
    let changed: Vec<(String, String)> = item_states(&sdv_now).into_iter().filter(|(_, s)| s != "verified").collect();
    assert_eq!(changed, pairs(&[("I_VITAL_HR", "changed_since_verified")]), "{sdv_now}");
    // Verifying the form again verifies the changed value; withdrawing it withdraws every value's.
    let (s, f) = sdv(&t, &monitor, &label, true).await;
    assert_eq!(s, StatusCode::OK, "{f}");
    assert!(item_states(&f["sdv"]).iter().all(|(_, s)| s == "verified"), "{f}");
    let (s, f) = sdv(&t, &monitor, &label, false).await;
    assert_eq!(s, StatusCode::OK, "{f}");
    assert!(item_states(&f["sdv"]).iter().all(|(_, s)| s == "not_verified"), "{f}");
}
