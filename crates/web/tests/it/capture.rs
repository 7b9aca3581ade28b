//! Data capture over the API: enrolment with the study's parameters, automatic IDs under
//! concurrency, scheduling, site visibility; on SQLite and PostgreSQL.

use crate::{TestApp, both};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn enrol_body(site: &str) -> Value {
    json!({"site": site, "sex": "f", "date_of_birth": "1980-04-02", "enrolled_on": "2026-01-10"})
}

both!(enrolment_follows_the_study_parameters, enrol_t);
async fn enrol_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    // The demo numbers participants automatically with the template {site}-{n:04}.
    let (s, p) = t.post(&crc, "/api/v1/studies/S_DEMO/participants", enrol_body("S_DEMOA")).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    assert_eq!(p["label"], "DEMO-A-0001");
    assert_eq!(p["oid"], "SS_DEMOA000");
    assert_eq!(p["site_oid"], "S_DEMOA");
    assert_eq!(p["status"], "available");

    // A manual ID is allowed (auto-editable) and unique per study, whatever the case.
    let mut body = enrol_body("S_DEMOA");
    body["label"] = json!("A-100");
    let (s, p) = t.post(&crc, "/api/v1/studies/S_DEMO/participants", body.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    body["label"] = json!("a-100");
    let (s, e) = t.post(&crc, "/api/v1/studies/S_DEMO/participants", body).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")), "{e}");

    // Every wrong field is named at once, and nothing is written.
    let (s, e) = t
        .post(
            &crc,
            "/api/v1/studies/S_DEMO/participants",
            json!({"site": "S_DEMOA", "sex": "x", "date_of_birth": "1980-02-30", "enrolled_on": "2999-01-01"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let fields: Vec<&str> =
        e["details"]["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap()).collect();
    assert_eq!(fields, vec!["sex", "date_of_birth", "enrolled_on"], "{e}");
    let (_, list) = t.get(&crc, "/api/v1/studies/S_DEMO/participants").await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");

    // A site user cannot enrol at another site, and a monitor cannot enrol at all.
    let (s, _) = t.post(&crc, "/api/v1/studies/S_DEMO/participants", enrol_body("S_DEMOB")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let monitor = t.key("demo_monitor").await;
    let (s, _) = t.post(&monitor, "/api/v1/studies/S_DEMO/participants", enrol_body("S_DEMOA")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // DEMO-B staff see neither the list entries nor the casebook of DEMO-A participants.
    let crc_b = t.key("demo_crc_b").await;
    let (_, list) = t.get(&crc_b, "/api/v1/studies/S_DEMO/participants").await;
    assert_eq!(list, json!([]));
    let (s, _) = t.get(&crc_b, "/api/v1/studies/S_DEMO/participants/DEMO-A-0001").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, p) = t.post(&crc_b, "/api/v1/studies/S_DEMO/participants", enrol_body("S_DEMOB")).await;
    assert_eq!((s, p["label"].as_str()), (StatusCode::CREATED, Some("DEMO-B-0002")), "{p}");

    // The monitor (study level) sees everyone; enrolment is in the audit trail.
    let (_, list) = t.get(&monitor, "/api/v1/studies/S_DEMO/participants").await;
    assert_eq!(list.as_array().unwrap().len(), 3);
    let dm = t.key("demo_dm").await;
    let (_, audit) = t.get(&dm, "/api/v1/studies/S_DEMO/audit").await;
    let enrolled =
        audit["records"].as_array().unwrap().iter().filter(|r| r["action"] == "participant.enrolled").count();
    assert_eq!(enrolled, 3);
}

both!(automatic_ids_do_not_race, race_t);
async fn race_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let base = t.url("/api/v1/studies/S_DEMO/participants");
        let key = crc.clone();
        tasks.push(tokio::spawn(async move {
            let r = crate::client().post(base).bearer_auth(key).json(&enrol_body("S_DEMOA")).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
            let p = r.json::<Value>().await.unwrap();
            (p["label"].as_str().unwrap().to_owned(), p["oid"].as_str().unwrap().to_owned())
        }));
    }
    let mut made = Vec::new();
    for task in tasks {
        made.push(task.await.unwrap());
    }
    made.sort();
    let labels: Vec<&str> = made.iter().map(|(l, _)| l.as_str()).collect();
    let expected: Vec<String> = (1..=12).map(|n| format!("DEMO-A-{n:04}")).collect();
    assert_eq!(labels, expected);
    // OpenClinica's OID keeps 8 characters of the ID (SS_DEMOA000, SS_DEMOA001); the IDs that
    // share them with an earlier one get their whole ID, not a random suffix.
    let oids: Vec<&str> = made.iter().map(|(_, o)| o.as_str()).collect();
    let mut distinct = oids.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 12, "{oids:?}");
    for (label, oid) in &made {
        let whole = format!("SS_{}", label.replace('-', ""));
        assert!(*oid == whole[..11] || *oid == whole, "{label}: {oid}");
    }
}

both!(events_are_scheduled_once_or_repeatedly, schedule_t);
async fn schedule_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    let (_, p) = t.post(&crc, "/api/v1/studies/S_DEMO/participants", enrol_body("S_DEMOA")).await;
    let path = format!("/api/v1/studies/S_DEMO/participants/{}/events", p["label"].as_str().unwrap());
    let (s, e) = t.post(&crc, &path, json!({"event": "SE_BASELINE", "start": "2026-01-12T09:30:00Z"})).await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    assert_eq!((e["repeat_key"].as_i64(), e["status"].as_str()), (Some(1), Some("scheduled")));
    let (s, e) = t.post(&crc, &path, json!({"event": "SE_BASELINE"})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    for k in 1..=2 {
        let (s, e) = t.post(&crc, &path, json!({"event": "SE_FOLLOWUP", "start": "2026-02-01"})).await;
        assert_eq!((s, e["repeat_key"].as_i64()), (StatusCode::CREATED, Some(k)), "{e}");
    }
    let (s, e) = t.post(&crc, &path, json!({"event": "SE_NOPE", "start": "yesterday"})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        e["message"].as_str().unwrap().contains("SE_NOPE") && e["message"].as_str().unwrap().contains("start"),
        "{e}"
    );
    let (_, book) = t.get(&crc, &format!("/api/v1/studies/S_DEMO/participants/{}", p["oid"].as_str().unwrap())).await;
    let events: Vec<(String, i64)> = book["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_owned(), e["repeat_key"].as_i64().unwrap()))
        .collect();
    assert_eq!(events, vec![("Baseline".to_owned(), 1), ("Follow-up".to_owned(), 1), ("Follow-up".to_owned(), 2)]);
}

both!(remove_restore_reassign_and_audit, lifecycle_t);
async fn lifecycle_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    let (_, p) = t.post(&crc, "/api/v1/studies/S_DEMO/participants", enrol_body("S_DEMOA")).await;
    let label = p["label"].as_str().unwrap().to_owned();
    let base = format!("/api/v1/studies/S_DEMO/participants/{label}");
    for event in ["SE_BASELINE", "SE_FOLLOWUP"] {
        let (s, _) = t.post(&crc, &format!("{base}/events"), json!({"event": event})).await;
        assert_eq!(s, StatusCode::CREATED);
    }
    // Only data managers, study directors and investigators remove; a CRC cannot.
    let (s, _) = t.post(&crc, &format!("{base}/remove"), json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let inv = t.key("demo_investigator").await;
    let (s, r) = t.post(&inv, &format!("{base}/remove"), json!({"reason": "Enrolled by mistake"})).await;
    assert_eq!((s, r["status"].as_str()), (StatusCode::OK, Some("removed")), "{r}");
    let (_, book) = t.get(&crc, &base).await;
    let removal: Vec<&str> =
        book["events"].as_array().unwrap().iter().map(|e| e["removal"].as_str().unwrap()).collect();
    assert_eq!(removal, vec!["auto_removed", "auto_removed"]);
    // A removed participant takes no data and cannot be removed twice.
    let (s, _) = t.post(&crc, &format!("{base}/events"), json!({"event": "SE_FOLLOWUP"})).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = t.post(&inv, &format!("{base}/remove"), json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, r) = t.post(&inv, &format!("{base}/restore"), json!({})).await;
    assert_eq!((s, r["status"].as_str()), (StatusCode::OK, Some("available")), "{r}");
    let (_, book) = t.get(&crc, &base).await;
    assert!(book["events"].as_array().unwrap().iter().all(|e| e["removal"] == "available"), "{book}");

    // Reassigning to DEMO-B is for data managers; afterwards DEMO-A staff no longer see it.
    let (s, _) = t.post(&inv, &format!("{base}/reassign"), json!({"site": "S_DEMOB"})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let dm = t.key("demo_dm").await;
    let (s, r) = t.post(&dm, &format!("{base}/reassign"), json!({"site": "S_DEMOB", "reason": "Moved city"})).await;
    assert_eq!((s, r["site_oid"].as_str()), (StatusCode::OK, Some("S_DEMOB")), "{r}");
    let (s, _) = t.get(&crc, &base).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let crc_b = t.key("demo_crc_b").await;
    let (s, _) = t.get(&crc_b, &base).await;
    assert_eq!(s, StatusCode::OK);

    // The participant's audit trail holds all of it, including its events.
    let (s, audit) = t.get(&dm, &format!("{base}/audit")).await;
    assert_eq!(s, StatusCode::OK, "{audit}");
    let actions: Vec<&str> = audit.as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        vec![
            "participant.enrolled",
            "event.scheduled",
            "event.scheduled",
            "participant.removed",
            "participant.restored",
            "participant.reassigned"
        ]
    );
    let reasons: Vec<&str> = audit.as_array().unwrap().iter().filter_map(|r| r["reason"].as_str()).collect();
    assert_eq!(reasons, vec!["Enrolled by mistake", "Moved city"]);
}
