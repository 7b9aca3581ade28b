//! Form data entry over the API: types, hard and soft checks, skip logic, calculations, repeating
//! rows, null flavours, stale saves, completion and the event's own status; on both databases.

use crate::{TestApp, both};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Form<'a> {
    t: &'a TestApp,
    key: String,
    path: String,
}

impl Form<'_> {
    async fn save(&self, body: Value) -> (StatusCode, Value) {
        self.t.send(&self.key, Method::PUT, &self.path, body).await
    }
    async fn complete(&self, body: Value) -> (StatusCode, Value) {
        self.t.post(&self.key, &format!("{}/complete", self.path), body).await
    }
}

fn value<'v>(form: &'v Value, item: &str, row: i64) -> Option<&'v str> {
    form["values"].as_array()?.iter().find(|v| v["item_oid"] == item && v["row"] == row)?["value"].as_str()
}

async fn participant_with(t: &TestApp, key: &str, event: &str) -> String {
    let (s, p) = t
        .post(
            key,
            "/api/v1/studies/S_DEMO/participants",
            json!({"site": "S_DEMOA", "sex": "m", "date_of_birth": "1970-01-01", "enrolled_on": "2026-01-10"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let label = p["label"].as_str().unwrap().to_owned();
    let (s, e) =
        t.post(key, &format!("/api/v1/studies/S_DEMO/participants/{label}/events"), json!({"event": event})).await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    label
}

both!(vital_signs_are_checked_calculated_and_completed, vitals_t);
async fn vitals_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    let label = participant_with(&t, &crc, "SE_BASELINE").await;
    let f = Form {
        t: &t,
        key: crc.clone(),
        path: format!("/api/v1/studies/S_DEMO/participants/{label}/events/SE_BASELINE/1/forms/F_VITAL_SIGNS"),
    };

    // Wrong types are refused, each named, and nothing is saved.
    let (s, e) = f.save(json!({"values": [{"item": "weight", "value": "heavy"}, {"item": "vs_date", "value": "2026-02-30"}, {"item": "nope", "value": "1"}]})).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_values")), "{e}");
    let problems: Vec<&str> =
        e["details"]["problems"].as_array().unwrap().iter().map(|p| p["item_oid"].as_str().unwrap()).collect();
    assert_eq!(problems, vec!["I_VITAL_WEIGHT", "I_VITAL_VS_DATE", "nope"], "{e}");
    let (_, book) = t.get(&crc, &format!("/api/v1/studies/S_DEMO/participants/{label}")).await;
    assert_eq!(book["events"][0]["forms"], json!([]), "a refused first save starts nothing");

    // A partial save starts the form, computes the BMI and starts the event.
    let (s, saved) = f
        .save(json!({"values": [
            {"item": "vs_date", "value": "2026-01-10"}, {"item": "weight", "value": "72.5"}, {"item": "height", "value": "180"},
            {"item": "sys", "value": "120"}, {"item": "dia", "value": "80"}, {"item": "abnormal", "value": "yes"},
            {"item": "abnormal_desc", "value": "Mild pallor"}
        ]}))
        .await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    assert_eq!(saved["event_status"], "data_entry_started");
    assert_eq!(value(&saved["form"], "I_VITAL_BMI", 1), Some("22.4"), "{saved}");
    assert_eq!(saved["form"]["status"], "initial_data_entry");
    let version = saved["form"]["version"].as_i64().unwrap();

    // A save without the version, or with an old one, is refused: no lost update.
    let (s, e) = f.save(json!({"values": [{"item": "sys", "value": "121"}]})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let (s, e) = f.save(json!({"expected_version": version - 1, "values": [{"item": "sys", "value": "121"}]})).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::CONFLICT, Some("stale_version")), "{e}");
    assert_eq!(value(&e["details"]["current"], "I_VITAL_SYS", 1), Some("120"), "the current form comes back: {e}");

    // A hard check (diastolic must be below systolic) refuses the value.
    let (s, e) = f.save(json!({"expected_version": version, "values": [{"item": "dia", "value": "130"}]})).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("check_failed")), "{e}");
    assert!(e["details"]["problems"][0]["message"].as_str().unwrap().contains("lower than systolic"), "{e}");

    // Skip logic: answering "no" hides the description, whose value is cleared (and audited).
    let (s, saved) =
        f.save(json!({"expected_version": version, "values": [{"item": "abnormal", "value": "no"}]})).await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    assert_eq!(value(&saved["form"], "I_VITAL_ABNORMAL_DESC", 1), None, "{saved}");
    let version = saved["form"]["version"].as_i64().unwrap();

    // Null flavours: allowed codes only.
    let (s, e) =
        f.save(json!({"expected_version": version, "values": [{"item": "height", "null_flavour": "NI"}]})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");

    // Repeating rows: add two ECG readings, remove the second.
    let (s, saved) = f
        .save(json!({"expected_version": version, "values": [
            {"item": "ecg_time", "row": 1, "value": "09:30"}, {"item": "hr", "row": 1, "value": "70"},
            {"item": "ecg_time", "row": 2, "value": "10:30"}, {"item": "hr", "row": 2, "value": "300"}
        ]}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "heart rate 300 fails its check: {saved}");
    let (s, saved) = f
        .save(json!({"expected_version": version, "values": [
            {"item": "ecg_time", "row": 1, "value": "09:30"}, {"item": "hr", "row": 1, "value": "70"},
            {"item": "ecg_time", "row": 2, "value": "10:30"}, {"item": "hr", "row": 2, "value": "80"}
        ]}))
        .await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    assert_eq!(value(&saved["form"], "I_VITAL_HR", 2), Some("80"));
    let version = saved["form"]["version"].as_i64().unwrap();
    let (s, saved) = f.save(json!({"expected_version": version, "remove_rows": [{"group": "ecg", "row": 2}]})).await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    assert_eq!(value(&saved["form"], "I_VITAL_HR", 2), None);
    let version = saved["form"]["version"].as_i64().unwrap();

    // Completion needs every required item; then the event (whose only required form this is)
    // completes by itself.
    let (s, e) = f.save(json!({"expected_version": version, "values": [{"item": "weight", "value": ""}]})).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let version = e["form"]["version"].as_i64().unwrap();
    let (s, e) = f.complete(json!({"expected_version": version})).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("form_incomplete")), "{e}");
    assert!(e.to_string().contains("I_VITAL_WEIGHT"), "{e}");
    let (s, saved) =
        f.save(json!({"expected_version": version, "values": [{"item": "weight", "value": "72.5"}]})).await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    let version = saved["form"]["version"].as_i64().unwrap();
    let (s, done) = f.complete(json!({"expected_version": version})).await;
    assert_eq!(s, StatusCode::OK, "{done}");
    assert_eq!(done["form"]["status"], "complete");
    assert_eq!(done["event_status"], "completed");

    // Every change is in the audit trail, with the skip-logic clearing and the calculation.
    let dm = t.key("demo_dm").await;
    let (_, audit) = t.get(&dm, "/api/v1/studies/S_DEMO/audit?limit=500").await;
    let actions: Vec<&str> = audit["records"].as_array().unwrap().iter().filter_map(|r| r["action"].as_str()).collect();
    for a in [
        "form.started",
        "item_data.value_saved",
        "item_data.calculated",
        "item_data.cleared_by_skip_logic",
        "item_data.row_removed",
        "form.completed",
        "event.status_changed",
    ] {
        assert!(actions.contains(&a), "{a} missing");
    }

    // Other sites and read-only roles cannot write.
    let crc_b = t.key("demo_crc_b").await;
    let other = Form { t: &t, key: crc_b, path: f.path.clone() };
    let (s, _) = other.save(json!({"values": []})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let monitor = t.key("demo_monitor").await;
    let ro = Form { t: &t, key: monitor, path: f.path.clone() };
    let (s, _) = ro.save(json!({"values": []})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

both!(soft_checks_need_a_note, soft_t);
async fn soft_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    let label = participant_with(&t, &crc, "SE_ADVERSEEVENTS").await;
    let f = Form {
        t: &t,
        key: crc.clone(),
        path: format!("/api/v1/studies/S_DEMO/participants/{label}/events/SE_ADVERSEEVENTS/1/forms/F_ADVERSEEVENT"),
    };
    // OpenClinica validations are soft: outside the range the value needs a note.
    let (s, e) =
        f.save(json!({"values": [{"item": "WEIGHT", "value": "12"}, {"item": "HEIGHT", "value": "170"}]})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["details"]["problems"][0]["code"], "soft_check_needs_note", "{e}");
    let (s, saved) = f
        .save(json!({"values": [{"item": "WEIGHT", "value": "12"}, {"item": "HEIGHT", "value": "170"}],
                     "notes": [{"item": "WEIGHT", "text": "Paediatric participant, weight confirmed"}]}))
        .await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    assert!(saved["open_issues"].as_array().unwrap().iter().any(|i| i["item_oid"] == "I_ADVER_WEIGHT"), "{saved}");
    // The note is a Failed Validation Check thread on the value, assigned to the form's owner.
    let (s, list) = t.get(&crc, &format!("/api/v1/studies/S_DEMO/notes?participant={label}")).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let thread = &list["threads"][0];
    assert_eq!(
        (thread["type"].as_str(), thread["status"].as_str(), thread["item_oid"].as_str()),
        (Some("failed_validation_check"), Some("new"), Some("I_ADVER_WEIGHT")),
        "{list}"
    );
    assert_eq!(thread["description"], "Paediatric participant, weight confirmed", "{list}");
    assert_eq!(thread["assigned_to"], "demo_crc", "{list}");
    // A note on an item the form does not have is refused, and nothing is saved.
    let version = saved["form"]["version"].as_i64().unwrap();
    let (s, e) = f
        .save(json!({"expected_version": version, "values": [{"item": "HEIGHT", "value": "171"}],
                     "notes": [{"item": "NOPE", "text": "?"}]}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e.to_string().contains("NOPE"), "{e}");
    // OpenClinica's func: calculation runs on the server.
    let bmi = value(&saved["form"], "I_ADVER_BMI", 1).unwrap();
    assert!(bmi.starts_with("4.1"), "{bmi}");
}

both!(design_changes_show_their_impact_on_collected_data, impact_t);
async fn impact_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    for _ in 0..2 {
        let label = participant_with(&t, &crc, "SE_BASELINE").await;
        let f = Form {
            t: &t,
            key: crc.clone(),
            path: format!("/api/v1/studies/S_DEMO/participants/{label}/events/SE_BASELINE/1/forms/F_VITAL_SIGNS"),
        };
        let (s, e) = f.save(json!({"values": [{"item": "weight", "value": "70"}]})).await;
        assert_eq!(s, StatusCode::OK, "{e}");
    }
    // A new version of the vital signs that turns weight into a whole number.
    let dm = t.key("demo_dm").await;
    let v2 = "
        | survey |
        | | type | name | label | bind::oc:itemgroup |
        | | integer | weight | Weight (kg) | vs |
        | settings |
        | | form_title | form_id | version |
        | | Vital signs | vital_signs | v2.0 |
    ";
    let r = crate::client()
        .post(t.url("/api/v1/studies/S_DEMO/design/forms?file_name=v2.md"))
        .bearer_auth(&dm)
        .body(v2)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let (_, d) = t.get(&dm, "/api/v1/studies/S_DEMO/design/diff").await;
    assert_eq!(d["publishable"], false, "{d}");
    assert_eq!(
        d["impact"],
        json!([{"form_version_oid": "F_VITAL_SIGNS_V10", "forms_with_data": 2, "changes": ["changed item I_VITAL_WEIGHT"]}]),
        "{d}"
    );
    let (s, e) = t.post(&dm, "/api/v1/studies/S_DEMO/design/publish", json!({})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(e["message"].as_str().unwrap().contains("2 form(s) with data would be affected"), "{e}");
}

both!(reason_for_change_is_enforced_after_completion, rfc_t);
async fn rfc_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    let label = participant_with(&t, &crc, "SE_BASELINE").await;
    let f = Form {
        t: &t,
        key: crc.clone(),
        path: format!("/api/v1/studies/S_DEMO/participants/{label}/events/SE_BASELINE/1/forms/F_VITAL_SIGNS"),
    };
    let (s, saved) = f
        .save(json!({"values": [
            {"item": "vs_date", "value": "2026-01-10"}, {"item": "weight", "value": "80"}, {"item": "height", "value": "175"},
            {"item": "sys", "value": "130"}, {"item": "dia", "value": "85"}, {"item": "abnormal", "value": "no"},
            {"item": "ecg_time", "value": "08:00"}, {"item": "hr", "value": "60"}
        ]}))
        .await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    let (s, done) = f.complete(json!({"expected_version": saved["form"]["version"]})).await;
    assert_eq!(s, StatusCode::OK, "{done}");
    let version = done["form"]["version"].as_i64().unwrap();

    // The data manager turns on forced reasons for change.
    let dm = t.key("demo_dm").await;
    let (s, st) = t
        .send(&dm, Method::PATCH, "/api/v1/studies/S_DEMO", json!({"parameters": {"admin_forced_reason_for_change": true, "participant_id_generation": "auto_editable", "participant_id_template": "{site}-{n:04}"}}))
        .await;
    assert_eq!(s, StatusCode::OK, "{st}");

    let (s, e) = f.save(json!({"expected_version": version, "values": [{"item": "weight", "value": "81"}]})).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("reason_for_change_required")), "{e}");
    assert_eq!(e["details"]["problems"][0]["item_oid"], "I_VITAL_WEIGHT");
    let (s, saved) = f
        .save(json!({"expected_version": version, "values": [{"item": "weight", "value": "81"}],
                     "notes": [{"item": "weight", "text": "Transcription error, source says 81 kg"}]}))
        .await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    assert_eq!(saved["form"]["status"], "complete", "administrative editing keeps the form complete");
    assert_eq!(value(&saved["form"], "I_VITAL_BMI", 1), Some("26.4"), "the BMI follows: {saved}");
    let (_, audit) = t.get(&dm, &format!("/api/v1/studies/S_DEMO/participants/{label}/audit")).await;
    let rows: Vec<(String, Value)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let new: Value = serde_json::from_str(r["new_value"].as_str().unwrap_or("null")).unwrap();
            (r["action"].as_str().unwrap().to_owned(), new)
        })
        .collect();
    assert!(rows.iter().any(|(a, v)| a == "item_data.updated_after_complete" && v["value"] == "81"), "{audit}");
    assert!(rows.iter().any(|(a, v)| a == "note.created" && v["type"] == "reason_for_change"), "{audit}");
    // One value's history alone.
    let (_, weight) = t
        .get(&dm, &format!("/api/v1/studies/S_DEMO/participants/{label}/audit?within=SE_BASELINE[1]/F_VITAL_SIGNS/IG_VITAL_VS[1]/I_VITAL_WEIGHT"))
        .await;
    let actions: Vec<&str> = weight.as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions, vec!["item_data.value_saved", "item_data.updated_after_complete", "note.created"], "{weight}");
}

fn full_vitals(weight: &str) -> Value {
    json!([
        {"item": "vs_date", "value": "2026-01-10"}, {"item": "weight", "value": weight}, {"item": "height", "value": "180"},
        {"item": "sys", "value": "120"}, {"item": "dia", "value": "80"}, {"item": "abnormal", "value": "no"},
        {"item": "ecg_time", "value": "09:00"}, {"item": "hr", "value": "70"}
    ])
}

both!(double_data_entry_is_rekeyed_and_resolved, dde_t);
async fn dde_t(t: TestApp) {
    // The data manager asks for double data entry of the vital signs at baseline.
    let dm = t.key("demo_dm").await;
    let (s, e) = t
        .send(&dm, Method::PUT, "/api/v1/studies/S_DEMO/design/events/SE_BASELINE",
              json!({"name": "Baseline", "type": "scheduled", "forms": [{"form": "F_VITAL_SIGNS", "required": true, "double_data_entry": true}]}))
        .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let (s, p) = t.post(&dm, "/api/v1/studies/S_DEMO/design/publish", json!({"notes": "DDE for vitals"})).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let (s, _) = t
        .post(&dm, &format!("/api/v1/studies/S_DEMO/design/versions/{}/promote", p["version"]["number"]), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);

    let crc = t.key("demo_crc").await;
    let label = participant_with(&t, &crc, "SE_BASELINE").await;
    let f = Form {
        t: &t,
        key: crc.clone(),
        path: format!("/api/v1/studies/S_DEMO/participants/{label}/events/SE_BASELINE/1/forms/F_VITAL_SIGNS"),
    };
    let (s, saved) = f.save(json!({"values": full_vitals("72.5")})).await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    let (s, ide) = f.complete(json!({"expected_version": saved["form"]["version"]})).await;
    assert_eq!(s, StatusCode::OK, "{ide}");
    assert_eq!(
        (ide["form"]["status"].as_str(), ide["form"]["double_data_entry"].as_str()),
        (Some("initial_data_entry"), Some("awaiting_dde"))
    );
    assert_eq!(ide["event_status"], "data_entry_started", "the event waits for the second pass");

    // The first pass is closed; the same person may not re-key within 12 hours.
    let (s, e) =
        f.save(json!({"expected_version": ide["form"]["version"], "values": [{"item": "sys", "value": "121"}]})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    let dde = format!("{}/double-entry", f.path);
    let (s, e) = t.send(&crc, Method::PUT, &dde, json!({"values": full_vitals("72.5")})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    assert!(e["message"].as_str().unwrap().contains("12 hours"), "{e}");

    // A colleague re-keys; one value differs.
    let inv = t.key("demo_investigator").await;
    let (s, cmp) = t.send(&inv, Method::PUT, &dde, json!({"values": full_vitals("75.2")})).await;
    assert_eq!(s, StatusCode::OK, "{cmp}");
    assert_eq!(
        cmp["mismatches"],
        json!([{"item_oid": "I_VITAL_WEIGHT", "group_oid": "IG_VITAL_VS", "row": 1, "first": "72.5", "second": "75.2"}])
    );
    assert_eq!(cmp["matched"], 7);

    // Completing needs the mismatch resolved; then the form and the event are complete.
    let (_, book) = t.get(&inv, &format!("/api/v1/studies/S_DEMO/participants/{label}")).await;
    let version = book["events"][0]["forms"][0]["version"].as_i64().unwrap();
    let (s, e) = t.post(&inv, &format!("{dde}/complete"), json!({"expected_version": version})).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("double_entry_unresolved")), "{e}");
    assert_eq!(e["details"]["problems"][0]["item_oid"], "I_VITAL_WEIGHT");
    let (s, done) = t
        .post(
            &inv,
            &format!("{dde}/complete"),
            json!({"expected_version": version, "resolutions": [{"item": "weight", "value": "72.5"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{done}");
    assert_eq!(
        (done["form"]["status"].as_str(), done["form"]["double_data_entry"].as_str()),
        (Some("complete"), Some("done"))
    );
    assert_eq!(done["event_status"], "completed");
    assert_eq!(value(&done["form"], "I_VITAL_WEIGHT", 1), Some("72.5"));

    // After 12 hours the first person may re-key another participant's form themself.
    let label2 = participant_with(&t, &crc, "SE_BASELINE").await;
    let f2 = Form {
        t: &t,
        key: crc.clone(),
        path: format!("/api/v1/studies/S_DEMO/participants/{label2}/events/SE_BASELINE/1/forms/F_VITAL_SIGNS"),
    };
    let (_, saved) = f2.save(json!({"values": full_vitals("80")})).await;
    let (s, _) = f2.complete(json!({"expected_version": saved["form"]["version"]})).await;
    assert_eq!(s, StatusCode::OK);
    t.clock.advance(time::Duration::hours(12));
    let (s, cmp) =
        t.send(&crc, Method::PUT, &format!("{}/double-entry", f2.path), json!({"values": full_vitals("80")})).await;
    assert_eq!(s, StatusCode::OK, "{cmp}");
    assert_eq!(cmp["mismatches"], json!([]));
}

both!(files_are_item_values, files_t);
async fn files_t(t: TestApp) {
    // A consent form with a scanned signature page, in a new common event.
    let dm = t.key("demo_dm").await;
    let consent = "
        | survey |
        | | type | name | label | bind::oc:itemgroup |
        | | date | consent_date | Date of consent | consent |
        | | file | consent_scan | Signed consent (scan) | consent |
        | settings |
        | | form_title | form_id | version |
        | | Consent | consent | v1 |
    ";
    let r = crate::client()
        .post(t.url("/api/v1/studies/S_DEMO/design/forms?file_name=consent.md"))
        .bearer_auth(&dm)
        .body(consent)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let (s, e) = t
        .post(
            &dm,
            "/api/v1/studies/S_DEMO/design/events",
            json!({"name": "Consent", "type": "common", "forms": [{"form": "F_CONSENT"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    let (_, p) = t.post(&dm, "/api/v1/studies/S_DEMO/design/publish", json!({})).await;
    let (s, _) = t
        .post(&dm, &format!("/api/v1/studies/S_DEMO/design/versions/{}/promote", p["version"]["number"]), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);

    let crc = t.key("demo_crc").await;
    let label = participant_with(&t, &crc, "SE_CONSENT").await;
    let files = format!("/api/v1/studies/S_DEMO/participants/{label}/events/SE_CONSENT/1/forms/F_CONSENT/files");
    let upload = |name: &'static str, body: Vec<u8>, item: &'static str| {
        let url = t.url(&format!("{files}?item={item}&file_name={name}"));
        let key = crc.clone();
        async move {
            let r = crate::client().post(url).bearer_auth(key).body(body).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // Refused: a disguised executable, an unknown type, an empty file, a non-file item.
    let (s, e) = upload("scan.pdf", b"MZ\x90\x00 not a pdf".to_vec(), "consent_scan").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e["message"].as_str().unwrap().contains("not a .pdf file"), "{e}");
    let (s, _) = upload("scan.exe", b"MZ".to_vec(), "consent_scan").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = upload("scan.pdf", Vec::new(), "consent_scan").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = upload("scan.pdf", b"%PDF-1.7 ...".to_vec(), "consent_date").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

    let pdf = b"%PDF-1.7\n% a tiny test document\n%%EOF\n".to_vec();
    let (s, saved) = upload("signed consent.pdf", pdf.clone(), "consent_scan").await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    let reference = value(&saved["form"], "I_CONSE_CONSENT_SCAN", 1).unwrap().to_owned();
    assert!(reference.starts_with("files/") && reference.ends_with("/signed consent.pdf"), "{reference}");
    let id: i64 = reference.split('/').nth(1).unwrap().parse().unwrap();

    // The file comes back byte for byte to those who see the participant, and to nobody else.
    let r = crate::client()
        .get(t.url(&format!("/api/v1/studies/S_DEMO/files/{id}")))
        .bearer_auth(&crc)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/pdf");
    assert_eq!(r.bytes().await.unwrap().to_vec(), pdf);
    let crc_b = t.key("demo_crc_b").await;
    let r = crate::client()
        .get(t.url(&format!("/api/v1/studies/S_DEMO/files/{id}")))
        .bearer_auth(&crc_b)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

both!(an_unchanged_save_changes_nothing, noop_t);
async fn noop_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    let label = participant_with(&t, &crc, "SE_BASELINE").await;
    let f = Form {
        t: &t,
        key: crc.clone(),
        path: format!("/api/v1/studies/S_DEMO/participants/{label}/events/SE_BASELINE/1/forms/F_VITAL_SIGNS"),
    };
    let (s, saved) = f.save(json!({"values": [{"item": "weight", "value": "70"}]})).await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    let version = saved["form"]["version"].as_i64().unwrap();
    // The same value again (spaces around it are not part of it): nothing changes, nothing is
    // audited, and the version stays.
    let (s, same) = f.save(json!({"expected_version": version, "values": [{"item": "weight", "value": " 70 "}]})).await;
    assert_eq!(s, StatusCode::OK, "{same}");
    assert_eq!(same["form"]["version"].as_i64(), Some(version), "nothing changed, so the version stays");
}

both!(frozen_and_locked_studies_take_no_data, frozen_t);
async fn frozen_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    // A participant whose baseline vitals are complete, prepared before the study is frozen.
    let done_label = participant_with(&t, &crc, "SE_BASELINE").await;
    let done_path =
        format!("/api/v1/studies/S_DEMO/participants/{done_label}/events/SE_BASELINE/1/forms/F_VITAL_SIGNS");
    let (_, saved) = t.send(&crc, Method::PUT, &done_path, json!({"values": full_vitals("70")})).await;
    let (s, c) =
        t.post(&crc, &format!("{done_path}/complete"), json!({"expected_version": saved["form"]["version"]})).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    let label = participant_with(&t, &crc, "SE_BASELINE").await;
    let f = Form {
        t: &t,
        key: crc.clone(),
        path: format!("/api/v1/studies/S_DEMO/participants/{label}/events/SE_BASELINE/1/forms/F_VITAL_SIGNS"),
    };
    let dm = t.key("demo_dm").await;
    let (s, e) =
        t.post(&dm, "/api/v1/studies/S_DEMO/status", json!({"status": "frozen", "reason": "interim analysis"})).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let (s, e) = f.save(json!({"values": [{"item": "weight", "value": "70"}]})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a frozen study takes no site entry: {e}");
    // Study-level staff may still clean completed forms while frozen (administrative editing).
    let dm_done = Form { t: &t, key: dm.clone(), path: done_path.clone() };
    let crc_done = Form { t: &t, key: crc.clone(), path: dm_done.path.clone() };
    let (_, book) = t.get(&dm, &format!("/api/v1/studies/S_DEMO/participants/{done_label}")).await;
    let version = book["events"][0]["forms"][0]["version"].as_i64().unwrap();
    let (s, e) =
        crc_done.save(json!({"expected_version": version, "values": [{"item": "weight", "value": "71"}]})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "site staff cannot edit while frozen: {e}");
    let (s, e) =
        dm_done.save(json!({"expected_version": version, "values": [{"item": "weight", "value": "71"}]})).await;
    assert_eq!(s, StatusCode::OK, "the data manager cleans a completed form while frozen: {e}");
    let (s, _) = t
        .post(
            &crc,
            "/api/v1/studies/S_DEMO/participants",
            json!({"site": "S_DEMOA", "sex": "f", "date_of_birth": "1980-01-01", "enrolled_on": "2026-01-10"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, e) =
        t.post(&dm, "/api/v1/studies/S_DEMO/status", json!({"status": "locked", "reason": "database lock"})).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let dm_form = Form { t: &t, key: dm.clone(), path: f.path.clone() };
    let (s, _) = dm_form.save(json!({"values": [{"item": "weight", "value": "70"}]})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "nobody writes in a locked study");
    // Reading still works.
    let (s, _) = t.get(&crc, &format!("/api/v1/studies/S_DEMO/participants/{label}")).await;
    assert_eq!(s, StatusCode::OK);
    for to in ["frozen", "available"] {
        let (s, e) = t.post(&dm, "/api/v1/studies/S_DEMO/status", json!({"status": to, "reason": "reopened"})).await;
        assert_eq!(s, StatusCode::OK, "{e}");
    }
    let (s, e) = f.save(json!({"values": [{"item": "weight", "value": "70"}]})).await;
    assert_eq!(s, StatusCode::OK, "{e}");
}

both!(sites_use_the_versions_allowed_for_them, site_versions_t);
async fn site_versions_t(t: TestApp) {
    let dm = t.key("demo_dm").await;
    let v2 = "
        | survey |
        | | type | name | label | bind::oc:itemgroup |
        | | date | vs_date | Date of measurement | vs |
        | | decimal | weight | Weight (kg) | vs |
        | | decimal | waist | Waist (cm) | vs |
        | settings |
        | | form_title | form_id | version |
        | | Vital signs | vital_signs | v2.0 |
    ";
    let r = crate::client()
        .post(t.url("/api/v1/studies/S_DEMO/design/forms?file_name=v2.md"))
        .bearer_auth(&dm)
        .body(v2)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let settings = |sites: Value| json!({"name": "Baseline", "type": "scheduled", "forms": [{"form": "F_VITAL_SIGNS", "default_version": "v2.0", "site_settings": sites}]});
    let (s, e) = t
        .send(&dm, Method::PUT, "/api/v1/studies/S_DEMO/design/events/SE_BASELINE", settings(json!({"S_NOPE": {}})))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e["message"].as_str().unwrap().contains("S_NOPE is not a site"), "{e}");
    let (s, e) = t
        .send(
            &dm,
            Method::PUT,
            "/api/v1/studies/S_DEMO/design/events/SE_BASELINE",
            settings(json!({"S_DEMOA": {"allowed_versions": ["v1.0"]}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let (_, p) = t.post(&dm, "/api/v1/studies/S_DEMO/design/publish", json!({})).await;
    let (s, _) = t
        .post(&dm, &format!("/api/v1/studies/S_DEMO/design/versions/{}/promote", p["version"]["number"]), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);

    // DEMO-A keeps version 1.0; DEMO-B starts in the event's default, version 2.0.
    for (user, site, expected) in
        [("demo_crc", "S_DEMOA", "F_VITAL_SIGNS_V10"), ("demo_crc_b", "S_DEMOB", "F_VITAL_SIGNS_V20")]
    {
        let key = t.key(user).await;
        let (_, p) = t
            .post(
                &key,
                "/api/v1/studies/S_DEMO/participants",
                json!({"site": site, "sex": "f", "date_of_birth": "1980-01-01", "enrolled_on": "2026-01-10"}),
            )
            .await;
        let label = p["label"].as_str().unwrap().to_owned();
        t.post(&key, &format!("/api/v1/studies/S_DEMO/participants/{label}/events"), json!({"event": "SE_BASELINE"}))
            .await;
        let path = format!("/api/v1/studies/S_DEMO/participants/{label}/events/SE_BASELINE/1/forms/F_VITAL_SIGNS");
        if site == "S_DEMOA" {
            let (s, e) =
                t.send(&key, Method::PUT, &path, json!({"form_version": "F_VITAL_SIGNS_V20", "values": []})).await;
            assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
        }
        let (s, saved) = t.send(&key, Method::PUT, &path, json!({"values": [{"item": "weight", "value": "70"}]})).await;
        assert_eq!(s, StatusCode::OK, "{saved}");
        assert_eq!(saved["form"]["form_version_oid"], expected, "{user}");
    }
}

both!(hidden_values_refused_when_the_design_says_so, hidden_refuse_t);
async fn hidden_refuse_t(t: TestApp) {
    let dm = t.key("demo_dm").await;
    let event = |hidden: &str| {
        json!({"name": "Baseline", "type": "scheduled",
               "forms": [{"form": "F_VITAL_SIGNS", "required": true, "hidden_values": hidden}]})
    };
    let path = "/api/v1/studies/S_DEMO/design/events/SE_BASELINE";
    let (s, e) = t.send(&dm, Method::PUT, path, event("sometimes")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e.to_string().contains("forms[0].hidden_values") && e.to_string().contains("sometimes"), "{e}");
    let (s, e) = t.send(&dm, Method::PUT, path, event("refuse")).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let (_, p) = t.post(&dm, "/api/v1/studies/S_DEMO/design/publish", json!({})).await;
    let (s, _) = t
        .post(&dm, &format!("/api/v1/studies/S_DEMO/design/versions/{}/promote", p["version"]["number"]), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);

    let crc = t.key("demo_crc").await;
    let label = participant_with(&t, &crc, "SE_BASELINE").await;
    let f = Form {
        t: &t,
        key: crc.clone(),
        path: format!("/api/v1/studies/S_DEMO/participants/{label}/events/SE_BASELINE/1/forms/F_VITAL_SIGNS"),
    };
    let (s, saved) = f
        .save(json!({"values": [{"item": "abnormal", "value": "yes"}, {"item": "abnormal_desc", "value": "pale"}]}))
        .await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    let version = saved["form"]["version"].as_i64().unwrap();

    // "no" would hide the description, which still holds "pale": refused, nothing saved.
    let (s, e) = f.save(json!({"expected_version": version, "values": [{"item": "abnormal", "value": "no"}]})).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("hidden_item_value")), "{e}");
    let problem = &e["details"]["problems"][0];
    assert_eq!(
        (problem["item_oid"].as_str(), problem["value"].as_str()),
        (Some("I_VITAL_ABNORMAL_DESC"), Some("pale")),
        "{e}"
    );
    // A value typed into a hidden item is refused the same way.
    let (s, e) = f
        .save(json!({"expected_version": version, "values": [
            {"item": "abnormal", "value": "no"}, {"item": "abnormal_desc", "value": "still pale"}]}))
        .await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("hidden_item_value")), "{e}");
    let (_, book) = t.get(&crc, &format!("/api/v1/studies/S_DEMO/participants/{label}")).await;
    let form =
        book["events"][0]["forms"].as_array().unwrap().iter().find(|f| f["form_oid"] == "F_VITAL_SIGNS").unwrap();
    assert_eq!(form["version"].as_i64(), Some(version), "nothing was saved: {form}");

    // Clearing the description in the same save is accepted.
    let (s, saved) = f
        .save(json!({"expected_version": version, "values": [
            {"item": "abnormal", "value": "no"}, {"item": "abnormal_desc", "value": null}]}))
        .await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    assert_eq!(value(&saved["form"], "I_VITAL_ABNORMAL", 1), Some("no"), "{saved}");
    assert_eq!(value(&saved["form"], "I_VITAL_ABNORMAL_DESC", 1), None, "{saved}");
}
