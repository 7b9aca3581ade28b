//! Extract runs over the API, on SQLite and PostgreSQL: queued, run in the background with their
//! progress, archived with each file's size and SHA-256, downloadable by who may see the data;
//! site users get their sites; roles without the extract permission are refused.

use crate::{TestApp, both};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn wait(t: &TestApp, key: &str, id: &str) -> Value {
    for _ in 0..400 {
        let (s, run) = t.get(key, &format!("/api/v1/extracts/{id}")).await;
        assert_eq!(s, StatusCode::OK, "{run}");
        if run["status"] != "queued" && run["status"] != "running" {
            return run;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("extract run {id} did not finish");
}

both!(extract_runs_are_archived_and_downloadable_by_who_may_see_the_data, runs_t);
async fn runs_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    let dm = t.key("demo_dm").await;
    let inv = t.key("demo_investigator").await;
    // Data at both sites.
    for (user, site) in [("demo_crc", "S_DEMOA"), ("demo_crc_b", "S_DEMOB")] {
        let key = t.key(user).await;
        let (s, p) = t
            .post(
                &key,
                "/api/v1/studies/S_DEMO/participants",
                json!({"site": site, "sex": "f", "date_of_birth": "1980-05-05", "enrolled_on": "2026-01-10"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{p}");
        let label = p["label"].as_str().unwrap().to_owned();
        let (s, e) = t
            .post(&key, &format!("/api/v1/studies/S_DEMO/participants/{label}/events"), json!({"event": "SE_BASELINE"}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{e}");
        let path = format!("/api/v1/studies/S_DEMO/participants/{label}/events/SE_BASELINE/1/forms/F_VITAL_SIGNS");
        let (s, f) = t
            .send(
                &key,
                reqwest::Method::PUT,
                &path,
                json!({"values": [{"item": "weight", "value": if site == "S_DEMOA" { "61.5" } else { "92" }}]}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{f}");
    }

    // A data manager's long extract of the study.
    let (s, run) = t.post(&dm, "/api/v1/studies/S_DEMO/extracts", json!({"format": "csv-long"})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{run}");
    assert!(run["status"] == "queued" || run["status"] == "running" || run["status"] == "completed", "{run}");
    let id = run["id"].as_str().unwrap().to_owned();
    let done = wait(&t, &dm, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!((done["participants"].as_i64(), done["total"].as_i64()), (Some(2), Some(2)), "{done}");
    assert!(done["cutoff_at"].is_string() && done["design_version"].is_i64(), "{done}");
    let files = done["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{done}");
    assert_eq!(files[0]["name"], "S_DEMO_csv-long.csv");
    assert_eq!(files[0]["sha256"].as_str().unwrap().len(), 64);
    let r = crate::client()
        .get(t.url(&format!("/api/v1/extracts/{id}/files/S_DEMO_csv-long.csv")))
        .bearer_auth(&dm)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let body = r.text().await.unwrap();
    assert_eq!(body.len() as u64, files[0]["bytes"].as_u64().unwrap());
    assert!(body.contains(",61.5,") && body.contains(",92,"), "{body}");
    // No other path can be named.
    let (s, _) = t.get(&dm, &format!("/api/v1/extracts/{id}/files/..%2F..%2Fcasebook.db")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // The investigator at DEMO-A: their site only; they do not see the data manager's run.
    let (s, run) = t.post(&inv, "/api/v1/studies/S_DEMO/extracts", json!({"format": "csv-wide"})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{run}");
    let mine = wait(&t, &inv, run["id"].as_str().unwrap()).await;
    assert_eq!((mine["status"].as_str(), mine["participants"].as_i64()), (Some("completed"), Some(1)), "{mine}");
    let r = crate::client()
        .get(t.url(&format!("/api/v1/extracts/{}/files/S_DEMO_csv-wide.csv", mine["id"].as_str().unwrap())))
        .bearer_auth(&inv)
        .send()
        .await
        .unwrap();
    let body = r.text().await.unwrap();
    assert!(body.contains("61.5") && !body.contains(",92"), "{body}");
    let (s, _) = t.get(&inv, &format!("/api/v1/extracts/{id}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, list) = t.get(&inv, "/api/v1/studies/S_DEMO/extracts").await;
    assert_eq!(list["runs"].as_array().unwrap().len(), 1, "{list}");
    let (_, list) = t.get(&dm, "/api/v1/studies/S_DEMO/extracts").await;
    assert_eq!(list["runs"].as_array().unwrap().len(), 2, "{list}");

    // Retry makes a new run; a finished run cannot be cancelled; a CRC may not extract.
    let (s, again) = t.post(&dm, &format!("/api/v1/extracts/{id}/retry"), json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{again}");
    assert_ne!(again["id"], id.as_str());
    assert_eq!(wait(&t, &dm, again["id"].as_str().unwrap()).await["status"], "completed");
    let (s, _) = t.post(&dm, &format!("/api/v1/extracts/{id}/cancel"), json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, e) = t.post(&crc, "/api/v1/studies/S_DEMO/extracts", json!({"format": "csv-long"})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    let (s, e) = t.post(&dm, "/api/v1/studies/S_DEMO/extracts", json!({"format": "sav"})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");

    // A dataset: the weight only, of forms not complete; saved twice, two versions.
    let put = |body: Value| {
        let dm = dm.clone();
        let t = &t;
        async move { t.send(&dm, reqwest::Method::PUT, "/api/v1/studies/S_DEMO/datasets/Weights", body).await }
    };
    let (s, d) = put(json!({"items": ["I_VITAL_WEIGHT", "I_NOPE"], "events": ["SE_NOPE"]})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{d}");
    assert!(d.to_string().contains("I_NOPE") && d.to_string().contains("SE_NOPE"), "{d}");
    let (s, d) = put(json!({"items": ["I_VITAL_WEIGHT"]})).await;
    assert_eq!((s, d["version"].as_i64()), (StatusCode::OK, Some(1)), "{d}");
    let (s, d) =
        put(json!({"items": ["I_VITAL_WEIGHT"], "form_status": "not_complete", "description": "weights"})).await;
    assert_eq!((s, d["version"].as_i64()), (StatusCode::OK, Some(2)), "{d}");
    let (_, list) = t.get(&dm, "/api/v1/studies/S_DEMO/datasets").await;
    assert_eq!(list["datasets"].as_array().unwrap().len(), 1, "{list}");
    let (s, run) =
        t.post(&dm, "/api/v1/studies/S_DEMO/extracts", json!({"format": "csv-long", "dataset": "weights"})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{run}");
    let done = wait(&t, &dm, run["id"].as_str().unwrap()).await;
    assert_eq!((done["dataset"].as_str(), done["dataset_version"].as_i64()), (Some("Weights"), Some(2)), "{done}");
    let r = crate::client()
        .get(t.url(&format!("/api/v1/extracts/{}/files/S_DEMO_csv-long.csv", done["id"].as_str().unwrap())))
        .bearer_auth(&dm)
        .send()
        .await
        .unwrap();
    let body = r.text().await.unwrap();
    let rows: Vec<&str> = body.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{body}");
    assert!(rows.iter().all(|r| r.contains(",I_VITAL_WEIGHT,")), "{body}");
}

// A run left running by a stopped server is marked failed when one starts; a queued one runs.
both!(extract_runs_survive_a_restart, restart_t);
async fn restart_t(t: TestApp) {
    let study = t.app.store().study_by_oid("S_DEMO").await.unwrap().unwrap();
    let dm = t.app.store().user_by_username("demo_dm").await.unwrap().unwrap();
    for (id, status) in
        [("00000000-0000-4000-8000-0000000000a1", "running"), ("00000000-0000-4000-8000-0000000000a2", "queued")]
    {
        t.app
            .store()
            .insert_extract_run(&casebook_store::extracts::NewExtractRun {
                id,
                study_id: study.id,
                scope_oid: "S_DEMO",
                format: "csv-long",
                include_phi: false,
                created_by: Some(dm.id),
                dataset: None,
                changed_since: None,
            })
            .await
            .unwrap();
        if status == "running" {
            assert!(t.app.store().start_extract_run(id, t.app.store().clock().now(), None, 0).await.unwrap());
        }
    }
    let (failed, resumed) = t.app.resume_extracts().await.unwrap();
    assert_eq!((failed, resumed), (1, 1));
    let key = t.key("demo_dm").await;
    let (_, run) = t.get(&key, "/api/v1/extracts/00000000-0000-4000-8000-0000000000a1").await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(run["error"].as_str().unwrap().contains("interrupted"), "{run}");
    assert_eq!(wait(&t, &key, "00000000-0000-4000-8000-0000000000a2").await["status"], "completed");
}

// A daily schedule starts its run once when due (whatever the number of calls); "changed only"
// takes the participants changed since the previous run's cut-off; old runs' files are pruned
// by the retention setting, their record kept.
both!(scheduled_and_changed_since_extracts_and_retention, schedule_t);
async fn schedule_t(t: TestApp) {
    let dm = t.key("demo_dm").await;
    let crc = t.key("demo_crc").await;
    let enrol = |n: u32| {
        let crc = crc.clone();
        let t = &t;
        async move {
            let (s, p) = t
                .post(
                    &crc,
                    "/api/v1/studies/S_DEMO/participants",
                    json!({"site": "S_DEMOA", "sex": "f", "date_of_birth": "1980-05-05", "enrolled_on": "2026-01-10"}),
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{p} ({n})");
        }
    };
    enrol(1).await;
    enrol(2).await;
    // Bad schedules are refused with every field named.
    let (s, e) = t
        .post(
            &dm,
            "/api/v1/studies/S_DEMO/extract-schedules",
            json!({"format": "nope", "every": "weekly", "at": "25:00", "dataset": "missing"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    for field in ["format", "at", "weekday", "dataset"] {
        assert!(e.to_string().contains(field), "{field}: {e}");
    }
    // The clock is 09:00 UTC; daily at 10:00, changed only.
    let (s, sched) = t
        .post(
            &dm,
            "/api/v1/studies/S_DEMO/extract-schedules",
            json!({"format": "csv-long", "every": "daily", "at": "10:00", "changed_only": true}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{sched}");
    assert!(t.app.run_due_schedules().await.unwrap().is_empty(), "not due before 10:00");
    t.clock.advance(time::Duration::hours(1) + time::Duration::minutes(1));
    let first = t.app.run_due_schedules().await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(t.app.run_due_schedules().await.unwrap().is_empty(), "a due run starts once");
    let run = wait(&t, &dm, &first[0]).await;
    assert_eq!((run["status"].as_str(), run["participants"].as_i64()), (Some("completed"), Some(2)), "{run}");
    assert!(run["changed_since"].is_null(), "the first run takes everything: {run}");

    // A day later: one new participant; the next run takes only it.
    t.clock.advance(time::Duration::hours(12));
    enrol(3).await;
    t.clock.advance(time::Duration::hours(12));
    let second = t.app.run_due_schedules().await.unwrap();
    assert_eq!(second.len(), 1);
    let run2 = wait(&t, &dm, &second[0]).await;
    assert_eq!(run2["changed_since"], run["cutoff_at"], "{run2}");
    assert_eq!(run2["participants"], 1, "{run2}");
    let (_, list) = t.get(&dm, "/api/v1/studies/S_DEMO/extract-schedules").await;
    assert_eq!(list["schedules"][0]["last_run"], second[0].as_str(), "{list}");

    // Stopped: no more runs.
    let (s, _) =
        t.send(&dm, reqwest::Method::DELETE, &format!("/api/v1/extract-schedules/{}", sched["id"]), json!({})).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    t.clock.advance(time::Duration::days(1));
    assert!(t.app.run_due_schedules().await.unwrap().is_empty());

    // Retention: runs finished more than 30 days ago lose their files, keep their record.
    t.clock.advance(time::Duration::days(31));
    assert!(t.app.prune_extracts(30).await.unwrap() >= 2);
    let (_, pruned) = t.get(&dm, &format!("/api/v1/extracts/{}", first[0])).await;
    assert!(pruned["pruned_at"].is_string(), "{pruned}");
    let (s, _) = t.get(&dm, &format!("/api/v1/extracts/{}/files/S_DEMO_csv-long.csv", first[0])).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

// Cancelling: a queued run ends cancelled at once; a running one is asked to stop (it stops at
// its next page); a finished one cannot be cancelled.
both!(extract_runs_can_be_cancelled_while_queued_or_running, cancel_t);
async fn cancel_t(t: TestApp) {
    let study = t.app.store().study_by_oid("S_DEMO").await.unwrap().unwrap();
    let dm = t.app.store().user_by_username("demo_dm").await.unwrap().unwrap();
    let key = t.key("demo_dm").await;
    for id in ["00000000-0000-4000-8000-0000000000b1", "00000000-0000-4000-8000-0000000000b2"] {
        t.app
            .store()
            .insert_extract_run(&casebook_store::extracts::NewExtractRun {
                id,
                study_id: study.id,
                scope_oid: "S_DEMO",
                format: "csv-long",
                include_phi: false,
                created_by: Some(dm.id),
                dataset: None,
                changed_since: None,
            })
            .await
            .unwrap();
    }
    let (s, run) = t.post(&key, "/api/v1/extracts/00000000-0000-4000-8000-0000000000b1/cancel", json!({})).await;
    assert_eq!((s, run["status"].as_str()), (StatusCode::OK, Some("cancelled")), "{run}");
    let running = "00000000-0000-4000-8000-0000000000b2";
    assert!(t.app.store().start_extract_run(running, t.app.store().clock().now(), None, 10).await.unwrap());
    let (s, run) = t.post(&key, &format!("/api/v1/extracts/{running}/cancel"), json!({})).await;
    assert_eq!((s, run["status"].as_str()), (StatusCode::OK, Some("running")), "{run}");
    let (s, _) = t.post(&key, "/api/v1/extracts/00000000-0000-4000-8000-0000000000b1/cancel", json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT);
}

// A dataset picks its participant, event and form columns and a range of event start dates.
both!(datasets_choose_their_columns_and_date_range, columns_t);
async fn columns_t(t: TestApp) {
    let dm = t.key("demo_dm").await;
    let crc = t.key("demo_crc").await;
    for (dob, start) in [("1980-05-05", "2026-02-01T09:00:00Z"), ("1990-12-31", "2026-06-01T09:00:00Z")] {
        let (s, p) = t
            .post(
                &crc,
                "/api/v1/studies/S_DEMO/participants",
                json!({"site": "S_DEMOA", "sex": "f", "date_of_birth": dob, "enrolled_on": "2026-01-10"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{p}");
        let label = p["label"].as_str().unwrap();
        let (s, e) = t
            .post(
                &crc,
                &format!("/api/v1/studies/S_DEMO/participants/{label}/events"),
                json!({"event": "SE_BASELINE", "start": start}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{e}");
    }
    let put = |body: Value| {
        let dm = dm.clone();
        let t = &t;
        async move { t.send(&dm, reqwest::Method::PUT, "/api/v1/studies/S_DEMO/datasets/Ages", body).await }
    };
    let (s, e) = put(json!({"participant_columns": ["shoe_size"], "event_columns": ["weather"], "start_from": "2026-03-01", "start_to": "2026-01-01"})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    for needle in ["shoe_size", "weather", "start_to"] {
        assert!(e.to_string().contains(needle), "{needle}: {e}");
    }
    let (s, d) = put(json!({
        "events": ["SE_BASELINE"], "participant_columns": ["sex"], "event_columns": ["start_date", "age_at_event"],
        "form_columns": [], "start_from": "2026-01-01", "start_to": "2026-03-31"
    }))
    .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    let (_, run) =
        t.post(&dm, "/api/v1/studies/S_DEMO/extracts", json!({"format": "csv-wide", "dataset": "Ages"})).await;
    let done = wait(&t, &dm, run["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
    let r = crate::client()
        .get(t.url(&format!("/api/v1/extracts/{}/files/S_DEMO_csv-wide.csv", done["id"].as_str().unwrap())))
        .bearer_auth(&dm)
        .send()
        .await
        .unwrap();
    let body = r.text().await.unwrap();
    let mut lines = body.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(&header[..5], ["SubjectID", "SubjectOID", "Sex", "StartDate_E1", "AgeAtEvent_E1"], "{body}");
    assert!(
        !header.iter().any(|h| h.starts_with("CRFVersion") || h.starts_with("EventStatus") || *h == "Site"),
        "{body}"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    // The first participant's visit is in the range (age 45), the second's is not (left empty).
    assert!(rows.iter().any(|r| r[3] == "2026-02-01" && r[4] == "45"), "{body}");
    assert!(rows.iter().any(|r| r[3].is_empty() && r[4].is_empty()), "{body}");
}
