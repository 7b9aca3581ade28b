//! Every demo role against the data capture actions, as OpenClinica's matrix (§7.2) says:
//! allowed, refused (403), or — for another site's users — not even visible (404).

use crate::{TestApp, both};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const OK: u16 = 200;
const NO: u16 = 403;
const HIDDEN: u16 = 404;

/// (user, enrol at DEMO-A, enter data, remove a participant, lock an event, verify a form)
const MATRIX: &[(&str, u16, u16, u16, u16, u16)] = &[
    ("demo_admin", OK, OK, OK, OK, OK),
    ("demo_dm", OK, OK, OK, OK, OK),
    ("demo_director", OK, OK, OK, OK, OK),
    ("demo_specialist", OK, OK, OK, NO, NO),
    ("demo_entry", OK, OK, NO, NO, NO),
    ("demo_monitor", NO, NO, NO, NO, OK),
    ("demo_investigator", OK, OK, OK, NO, NO),
    ("demo_crc", OK, OK, NO, NO, NO),
    ("demo_site_monitor", NO, NO, NO, NO, OK),
    ("demo_site_entry", OK, OK, NO, NO, NO),
    ("demo_crc_b", HIDDEN, HIDDEN, HIDDEN, HIDDEN, HIDDEN),
    ("demo_investigator_b", HIDDEN, HIDDEN, HIDDEN, HIDDEN, HIDDEN),
];

fn vitals() -> Value {
    json!([
        {"item": "vs_date", "value": "2026-01-10"}, {"item": "weight", "value": "70"}, {"item": "height", "value": "175"},
        {"item": "sys", "value": "120"}, {"item": "dia", "value": "80"}, {"item": "abnormal", "value": "no"},
        {"item": "ecg_time", "value": "09:00"}, {"item": "hr", "value": "70"}
    ])
}

fn code(s: StatusCode) -> u16 {
    match s.as_u16() {
        200 | 201 => OK,
        other => other,
    }
}

both!(every_role_meets_the_permission_matrix, roles_t);
async fn roles_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    let dm = t.key("demo_dm").await;
    let enrol = json!({"site": "S_DEMOA", "sex": "f", "date_of_birth": "1980-01-01", "enrolled_on": "2026-01-10"});
    // A participant whose baseline vitals are complete: to lock its event and verify its form.
    let (_, p) = t.post(&crc, "/api/v1/studies/S_DEMO/participants", enrol.clone()).await;
    let done = format!("/api/v1/studies/S_DEMO/participants/{}", p["label"].as_str().unwrap());
    t.post(&crc, &format!("{done}/events"), json!({"event": "SE_BASELINE"})).await;
    let form = format!("{done}/events/SE_BASELINE/1/forms/F_VITAL_SIGNS");
    let (_, saved) = t.send(&crc, Method::PUT, &form, json!({"values": vitals()})).await;
    let (s, c) = t.post(&crc, &format!("{form}/complete"), json!({"expected_version": saved["form"]["version"]})).await;
    assert_eq!(s, StatusCode::OK, "{c}");

    for (user, may_enrol, may_enter, may_remove, may_lock, may_verify) in MATRIX {
        let key = t.key(user).await;
        let (s, p) = t.post(&key, "/api/v1/studies/S_DEMO/participants", enrol.clone()).await;
        assert_eq!(code(s), *may_enrol, "{user} enrolling: {p}");

        // Enter data into a participant of DEMO-A (enrolled by the CRC).
        let (_, mine) = t.post(&crc, "/api/v1/studies/S_DEMO/participants", enrol.clone()).await;
        let base = format!("/api/v1/studies/S_DEMO/participants/{}", mine["label"].as_str().unwrap());
        t.post(&crc, &format!("{base}/events"), json!({"event": "SE_BASELINE"})).await;
        let (s, e) = t
            .send(
                &key,
                Method::PUT,
                &format!("{base}/events/SE_BASELINE/1/forms/F_VITAL_SIGNS"),
                json!({"values": [{"item": "weight", "value": "70"}]}),
            )
            .await;
        assert_eq!(code(s), *may_enter, "{user} entering data: {e}");

        let (s, e) = t.post(&key, &format!("{base}/remove"), json!({"reason": "role test"})).await;
        assert_eq!(code(s), *may_remove, "{user} removing: {e}");

        let (s, e) = t.post(&key, &format!("{done}/events/SE_BASELINE/1/status"), json!({"status": "locked"})).await;
        assert_eq!(code(s), *may_lock, "{user} locking: {e}");
        if s.is_success() {
            let (s, e) =
                t.post(&dm, &format!("{done}/events/SE_BASELINE/1/status"), json!({"status": "unlocked"})).await;
            assert_eq!(s, StatusCode::OK, "{e}");
        }

        let (s, e) = t.post(&key, &format!("{form}/sdv"), json!({"verified": true})).await;
        assert_eq!(code(s), *may_verify, "{user} verifying: {e}");
        if s.is_success() {
            let (s, e) = t.post(&dm, &format!("{form}/sdv"), json!({"verified": false})).await;
            assert_eq!(s, StatusCode::OK, "{e}");
        }
    }
}
