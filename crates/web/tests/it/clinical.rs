//! Clinical data out as ODM over the native API and OpenClinica 3's REST paths: valid against
//! the CDISC schema, every value present, site isolation, filters, changed-since, JSON; on both
//! databases.

use crate::{TestApp, both};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn enrol(t: &TestApp, key: &str, site: &str) -> String {
    let (s, p) = t
        .post(
            key,
            "/api/v1/studies/S_DEMO/participants",
            json!({"site": site, "sex": "f", "date_of_birth": "1980-05-05", "enrolled_on": "2026-10-30"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let label = p["label"].as_str().unwrap().to_owned();
    let (s, e) = t
        .post(key, &format!("/api/v1/studies/S_DEMO/participants/{label}/events"), json!({"event": "SE_BASELINE"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    label
}

async fn save_vitals(t: &TestApp, key: &str, label: &str, values: Value) -> Value {
    let path = format!("/api/v1/studies/S_DEMO/participants/{label}/events/SE_BASELINE/1/forms/F_VITAL_SIGNS");
    let (_, book) = t.get(key, &format!("/api/v1/studies/S_DEMO/participants/{label}")).await;
    let version = book["events"][0]["forms"].as_array().and_then(|f| f.first()).map(|f| f["version"].clone());
    let (s, saved) = t.send(key, Method::PUT, &path, json!({"expected_version": version, "values": values})).await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    saved
}

pub(crate) async fn get_text(t: &TestApp, key: &str, path: &str) -> (StatusCode, String) {
    let r = crate::client().get(t.url(path)).bearer_auth(key).send().await.unwrap();
    let s = r.status();
    (s, r.text().await.unwrap())
}

fn count(xml: &str, needle: &str) -> usize {
    xml.matches(needle).count()
}

both!(clinical_data_export_is_valid_complete_and_filtered, export_t);
async fn export_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    let crc_b = t.key("demo_crc_b").await;
    let dm = t.key("demo_dm").await;
    let a1 = enrol(&t, &crc, "S_DEMOA").await;
    let a2 = enrol(&t, &crc, "S_DEMOA").await;
    let b1 = enrol(&t, &crc_b, "S_DEMOB").await;
    let full = json!([
        {"item": "vs_date", "value": "2026-11-01"}, {"item": "weight", "value": "64.5"}, {"item": "height", "value": "170"},
        {"item": "sys", "value": "118"}, {"item": "dia", "value": "76"}, {"item": "abnormal", "value": "yes"},
        {"item": "abnormal_desc", "value": "Murmur <grade 2> & \"soft\""},
        {"item": "ecg_time", "row": 1, "value": "09:30"}, {"item": "hr", "row": 1, "value": "70"},
        {"item": "ecg_time", "row": 2, "value": "09:45"}, {"item": "hr", "row": 2, "value": "72"}
    ]);
    let saved = save_vitals(&t, &crc, &a1, full).await;
    let stored = saved["form"]["values"].as_array().unwrap().len();
    save_vitals(&t, &crc_b, &b1, json!([{"item": "weight", "value": "80"}])).await;

    // The whole study: valid ODM 1.3.2, every participant, every stored value.
    let (s, xml) = get_text(&t, &dm, "/api/v1/studies/S_DEMO/clinical-data").await;
    assert_eq!(s, StatusCode::OK, "{xml}");
    crate::design::xmllint(&xml, "xsd-1.3.2/ODM1-3-2.xsd");
    assert_eq!(count(&xml, "<SubjectData "), 3, "{xml}");
    assert_eq!(count(&xml, "<ItemData "), stored + 1, "{xml}");
    assert!(xml.contains(r#"<FormData FormOID="F_VITAL_SIGNS_V10">"#), "{xml}");
    assert!(xml.contains(r#"ItemGroupRepeatKey="2""#), "{xml}");
    assert!(xml.contains("Murmur &lt;grade 2&gt; &amp; &quot;soft&quot;"), "{xml}");
    assert!(!xml.contains("OpenClinica"), "plain ODM: {xml}");

    // Site staff get their site only.
    let (_, theirs) = get_text(&t, &crc_b, "/api/v1/studies/S_DEMO/clinical-data").await;
    assert_eq!(count(&theirs, "<SubjectData "), 1, "{theirs}");
    assert!(
        theirs.contains(&format!(r#"SubjectKey="SS_{}""#, b1.replace('-', "")))
            || theirs.contains(&b1)
            || theirs.contains("SubjectKey"),
        "{theirs}"
    );
    let (s, _) = get_text(&t, &crc_b, &format!("/api/v1/studies/S_DEMO/clinical-data?participant={a1}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // With OpenClinica's attributes; one participant; one form; bad filters named.
    let (_, oc) =
        get_text(&t, &dm, &format!("/api/v1/studies/S_DEMO/clinical-data?format=odm13-oc&participant={a1}")).await;
    assert_eq!(count(&oc, "<SubjectData "), 1, "{oc}");
    assert!(oc.contains(&format!(r#"OpenClinica:StudySubjectID="{a1}""#)), "{oc}");
    assert!(oc.contains(r#"OpenClinica:Status="initial data entry""#), "{oc}");
    let (_, none) = get_text(&t, &dm, "/api/v1/studies/S_DEMO/clinical-data?form=F_ADVERSEEVENT").await;
    assert_eq!(count(&none, "<FormData "), 0, "{none}");
    let (s, e) = get_text(&t, &dm, "/api/v1/studies/S_DEMO/clinical-data?event=SE_NOPE").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e.contains("SE_NOPE"), "{e}");
    let (s, _) = get_text(&t, &dm, "/api/v1/studies/S_DEMO/clinical-data?format=csv").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

    // Changed since: only what changed after the time.
    t.clock.advance(time::Duration::hours(1));
    save_vitals(&t, &crc, &a2, json!([{"item": "weight", "value": "70"}])).await;
    let since = "2026-11-22T09:30:00Z";
    let (_, delta) = get_text(&t, &dm, &format!("/api/v1/studies/S_DEMO/clinical-data?changed_since={since}")).await;
    assert_eq!(count(&delta, "<SubjectData "), 1, "{delta}");
    assert_eq!(count(&delta, "<ItemData "), 1, "{delta}");
    assert!(delta.contains(r#"Value="70""#), "{delta}");
    crate::design::xmllint(&delta, "xsd-1.3.2/ODM1-3-2.xsd");
    let (s, _) = get_text(&t, &dm, "/api/v1/studies/S_DEMO/clinical-data?changed_since=yesterday").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}

both!(openclinica_clinical_data_paths_answer_as_openclinica, oc_t);
async fn oc_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    let crc_b = t.key("demo_crc_b").await;
    let a1 = enrol(&t, &crc, "S_DEMOA").await;
    let b1 = enrol(&t, &crc_b, "S_DEMOB").await;
    save_vitals(&t, &crc, &a1, json!([{"item": "weight", "value": "64.5"}, {"item": "sys", "value": "118"}])).await;
    save_vitals(&t, &crc_b, &b1, json!([{"item": "weight", "value": "80"}])).await;
    let dm = t.key("demo_dm").await;

    // XML for one participant by label, every event and form.
    let (s, xml) = get_text(&t, &dm, &format!("/OpenClinica/rest/clinicaldata/xml/view/S_DEMO/{a1}/*/*")).await;
    assert_eq!(s, StatusCode::OK, "{xml}");
    assert_eq!(count(&xml, "<SubjectData "), 1, "{xml}");
    assert!(xml.contains(r#"xmlns:OpenClinica="http://www.openclinica.org/ns/odm_ext_v130/v3.1""#), "{xml}");
    assert!(xml.contains(r#"<ItemData ItemOID="I_VITAL_WEIGHT" Value="64.5"/>"#), "{xml}");
    // Through a site's OID: that site only; the form by its version OID.
    let (_, site) =
        get_text(&t, &dm, "/OpenClinica/rest/clinicaldata/xml/view/S_DEMOB/*/SE_BASELINE/F_VITAL_SIGNS_V10").await;
    assert_eq!(count(&site, "<SubjectData "), 1, "{site}");
    assert!(site.contains(r#"Value="80""#), "{site}");
    // JSON in OpenClinica's shape.
    let (s, body) =
        get_text(&t, &dm, "/OpenClinica/rest/clinicaldata/json/view/S_DEMO/*/*/*?includeDNs=n&includeAudits=N").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let json: Value = serde_json::from_str(&body).unwrap();
    let subjects = json["ODM"]["ClinicalData"]["SubjectData"].as_array().unwrap_or_else(|| panic!("{json}"));
    assert_eq!(subjects.len(), 2, "{json}");
    assert!(subjects.iter().any(|s| s["@OpenClinica:StudySubjectID"] == a1.as_str()), "{json}");
    // Unknown subject: 404; a site user asking for the study: their site only.
    let (s, _) = get_text(&t, &dm, "/OpenClinica/rest/clinicaldata/xml/view/S_DEMO/NOPE-1/*/*").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, theirs) = get_text(&t, &crc_b, "/OpenClinica/rest/clinicaldata/xml/view/S_DEMO/*/*/*").await;
    assert_eq!(count(&theirs, "<SubjectData "), 1, "{theirs}");
    let (s, _) = get_text(&t, &crc_b, "/OpenClinica/rest/clinicaldata/xml/view/S_DEMOA/*/*/*").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Bad flags are named.
    let (s, e) = get_text(&t, &dm, "/OpenClinica/rest/clinicaldata/xml/view/S_DEMO/*/*/*?includeDNs=maybe").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    // An event nobody has: the participant is there, with no event data.
    let (s, body) = get_text(&t, &crc_b, "/OpenClinica/rest/clinicaldata/json/view/S_DEMOB/*/SE_FOLLOWUP/*").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let json: Value = serde_json::from_str(&body).unwrap();
    let subject = &json["ODM"]["ClinicalData"]["SubjectData"];
    assert_eq!(subject["@OpenClinica:StudySubjectID"], b1.as_str(), "{json}");
    assert!(subject.get("StudyEventData").is_none(), "{json}");
}

fn line_of(text: &str, needle: &str) -> usize {
    let at = text.find(needle).unwrap_or_else(|| panic!("{needle} not in the file"));
    text[..at].matches('\n').count() + 1
}

async fn dry_run(t: &TestApp, key: &str, xml: &str) -> (StatusCode, Value) {
    let r = crate::client()
        .post(t.url("/api/v1/studies/S_DEMO/clinical-data/import?dry_run=true&file_name=test.xml"))
        .bearer_auth(key)
        .body(xml.to_owned())
        .send()
        .await
        .unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

fn codes(report: &Value, kind: &str) -> Vec<String> {
    report[kind].as_array().unwrap().iter().map(|p| p["code"].as_str().unwrap().to_owned()).collect()
}

both!(an_import_dry_run_checks_every_record_and_writes_nothing, import_t);
async fn import_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    let a1 = enrol(&t, &crc, "S_DEMOA").await;
    let full = json!([
        {"item": "vs_date", "value": "2026-11-01"}, {"item": "weight", "value": "64.5"}, {"item": "height", "value": "170"},
        {"item": "sys", "value": "118"}, {"item": "dia", "value": "76"}, {"item": "abnormal", "value": "no"},
        {"item": "ecg_time", "row": 1, "value": "09:30"}, {"item": "hr", "row": 1, "value": "70"},
        {"item": "ecg_time", "row": 2, "value": "09:45"}, {"item": "hr", "row": 2, "value": "72"}
    ]);
    save_vitals(&t, &crc, &a1, full).await;
    let (_, exported) =
        get_text(&t, &crc, &format!("/api/v1/studies/S_DEMO/clinical-data?format=odm13-oc&participant={a1}")).await;
    let values = count(&exported, "<ItemData ");

    // Our own export checks clean (the calculated BMI is noted as ignored).
    let (s, report) = dry_run(&t, &crc, &exported).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["accepted"], true, "{report}");
    assert_eq!((report["participants"].as_i64(), report["forms"].as_i64()), (Some(1), Some(1)), "{report}");
    assert_eq!(report["values"].as_u64(), Some(values as u64), "{report}");
    assert_eq!(report["flavour"], "openclinica3", "{report}");
    assert!(codes(&report, "warnings").iter().all(|c| c == "calculated_ignored"), "{report}");

    // Three bad values in one file: each reported, with its line, item, row and value.
    let bad = exported
        .replace(r#"ItemOID="I_VITAL_WEIGHT" Value="64.5""#, r#"ItemOID="I_VITAL_WEIGHT" Value="heavy""#)
        .replace(r#"ItemOID="I_VITAL_SYS""#, r#"ItemOID="I_VITAL_NOPE""#)
        .replace(r#"ItemOID="I_VITAL_DIA" Value="76""#, r#"ItemOID="I_VITAL_DIA" Value="300""#);
    let (s, report) = dry_run(&t, &crc, &bad).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{report}");
    assert_eq!(report["accepted"], false, "{report}");
    let errors = report["errors"].as_array().unwrap();
    let weight = errors.iter().find(|e| e["item"] == "I_VITAL_WEIGHT").unwrap_or_else(|| panic!("{report}"));
    assert_eq!(weight["line"].as_u64(), Some(line_of(&bad, r#"Value="heavy""#) as u64), "{report}");
    assert_eq!(
        (weight["value"].as_str(), weight["participant"].as_str()),
        (Some("heavy"), Some(a1.as_str())),
        "{report}"
    );
    assert!(errors.iter().any(|e| e["item"] == "I_VITAL_NOPE" && e["code"] == "unknown_item"), "{report}");
    assert!(errors.iter().any(|e| e["item"] == "I_VITAL_DIA"), "a failed hard check: {report}");

    // Records that cannot be placed: another study, an unknown participant, an unscheduled event.
    for (from, to, code) in [
        (r#"StudyOID="S_DEMO""#, r#"StudyOID="S_OTHER""#, "wrong_study"),
        (
            &format!(r#"OpenClinica:StudySubjectID="{a1}""#)[..],
            r#"OpenClinica:StudySubjectID="NOPE-9""#,
            "unknown_participant",
        ),
        (
            r#"StudyEventOID="SE_BASELINE""#,
            r#"StudyEventOID="SE_FOLLOWUP" StudyEventRepeatKey="3""#,
            "event_not_scheduled",
        ),
    ] {
        let xml = if code == "unknown_participant" {
            let key = exported.split("SubjectKey=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
            exported.replace(from, to).replace(&format!(r#"SubjectKey="{key}""#), r#"SubjectKey="SS_NOPE""#)
        } else {
            exported.replace(from, to)
        };
        let (_, report) = dry_run(&t, &crc, &xml).await;
        assert!(codes(&report, "errors").contains(&code.to_owned()), "{code}: {report}");
    }

    // Unreadable files: malformed (with its line) and a DTD with an entity.
    let cut = &exported[..exported.len() - 40];
    let (_, report) = dry_run(&t, &crc, cut).await;
    assert_eq!(report["errors"][0]["code"], "unreadable", "{report}");
    assert!(report["errors"][0]["line"].as_u64().unwrap() > 1, "{report}");
    let bomb = exported.replacen("<ODM", "<!DOCTYPE ODM [<!ENTITY a \"aaaaaaaaaa\">]>\n<ODM", 1);
    let (_, report) = dry_run(&t, &crc, &bomb).await;
    assert_eq!(report["accepted"], false, "{report}");

    // Nothing was written; writing is not available yet; monitors do not import.
    let (_, book) = t.get(&crc, &format!("/api/v1/studies/S_DEMO/participants/{a1}")).await;
    let weight = book["events"][0]["forms"][0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["item_oid"] == "I_VITAL_WEIGHT")
        .unwrap()
        .clone();
    assert_eq!(weight["value"], "64.5", "{book}");
    let monitor = t.key("demo_monitor").await;
    let (s, _) = dry_run(&t, &monitor, &exported).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Another site's staff cannot reach this participant.
    let crc_b = t.key("demo_crc_b").await;
    let (_, report) = dry_run(&t, &crc_b, &exported).await;
    assert!(codes(&report, "errors").contains(&"unknown_participant".to_owned()), "{report}");
}

async fn import(t: &TestApp, key: &str, xml: &str) -> (StatusCode, Value) {
    let r = crate::client()
        .post(t.url("/api/v1/studies/S_DEMO/clinical-data/import?file_name=test.xml"))
        .bearer_auth(key)
        .body(xml.to_owned())
        .send()
        .await
        .unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

both!(an_import_writes_all_or_nothing_with_checks_rules_and_audit, write_t);
async fn write_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    let dm = t.key("demo_dm").await;
    let a1 = enrol(&t, &crc, "S_DEMOA").await;
    let a2 = enrol(&t, &crc, "S_DEMOA").await;
    let full = |weight: &str| {
        json!([
            {"item": "vs_date", "value": "2026-11-01"}, {"item": "weight", "value": weight}, {"item": "height", "value": "170"},
            {"item": "sys", "value": "118"}, {"item": "dia", "value": "76"}, {"item": "abnormal", "value": "no"},
            {"item": "ecg_time", "row": 1, "value": "09:30"}, {"item": "hr", "row": 1, "value": "70"}
        ])
    };
    save_vitals(&t, &crc, &a1, full("64.5")).await;
    save_vitals(&t, &crc, &a2, full("80")).await;
    let (_, exported) = get_text(&t, &dm, "/api/v1/studies/S_DEMO/clinical-data?format=odm13-oc").await;
    // The demo's rules run on import too (the fast heart rate raises a note).
    let rules = include_str!("../../../../demo/rules/demo_rules.xml");
    let r = crate::client()
        .post(t.url("/api/v1/studies/S_DEMO/rules?file_name=r.xml"))
        .bearer_auth(&dm)
        .body(rules)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    // One bad value: nothing at all is written, the good changes included.
    let bad = exported
        .replacen(r#"ItemOID="I_VITAL_WEIGHT" Value="64.5""#, r#"ItemOID="I_VITAL_WEIGHT" Value="66""#, 1)
        .replacen(r#"ItemOID="I_VITAL_WEIGHT" Value="80""#, r#"ItemOID="I_VITAL_WEIGHT" Value="eighty""#, 1);
    let (s, report) = import(&t, &crc, &bad).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{report}");
    assert_eq!((report["accepted"].as_bool(), report["written_forms"].as_i64()), (Some(false), Some(0)), "{report}");
    let weight = |book: &Value| {
        book["events"][0]["forms"][0]["values"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["item_oid"] == "I_VITAL_WEIGHT")
            .unwrap()["value"]
            .clone()
    };
    let (_, book) = t.get(&crc, &format!("/api/v1/studies/S_DEMO/participants/{a1}")).await;
    assert_eq!(weight(&book), "64.5", "nothing written: {book}");

    // A good file: written in one go, audited as saves, forms completed, rules run.
    let good = exported
        .replacen(r#"ItemOID="I_VITAL_WEIGHT" Value="64.5""#, r#"ItemOID="I_VITAL_WEIGHT" Value="66""#, 1)
        .replacen(r#"ItemOID="I_VITAL_HR" Value="70""#, r#"ItemOID="I_VITAL_HR" Value="130""#, 1)
        .replace(r#"OpenClinica:Status="initial data entry""#, r#"OpenClinica:Status="data entry complete""#);
    let (s, report) = import(&t, &crc, &good).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!((report["written_forms"].as_i64(), report["completed_forms"].as_i64()), (Some(1), Some(2)), "{report}");
    let (_, book) = t.get(&crc, &format!("/api/v1/studies/S_DEMO/participants/{a1}")).await;
    assert_eq!(weight(&book), "66", "{book}");
    assert_eq!(book["events"][0]["forms"][0]["status"], "complete", "{book}");
    let bmi = book["events"][0]["forms"][0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["item_oid"] == "I_VITAL_BMI")
        .unwrap()["value"]
        .clone();
    assert_eq!(bmi, "22.8", "recomputed: {book}");
    let (_, audit) = t.get(&dm, &format!("/api/v1/studies/S_DEMO/participants/{a1}/audit")).await;
    let records = audit.as_array().unwrap_or_else(|| panic!("{audit}"));
    assert!(
        records
            .iter()
            .any(|r| r["action"] == "item_data.value_saved"
                && r["entity_id"].as_str().unwrap().ends_with("I_VITAL_WEIGHT")),
        "{audit}"
    );
    assert!(records.iter().any(|r| r["action"] == "form.completed"), "{audit}");
    let (_, notes) = t.get(&dm, &format!("/api/v1/studies/S_DEMO/notes?participant={a1}")).await;
    assert!(notes["threads"].as_array().unwrap().iter().any(|n| n["item_oid"] == "I_VITAL_HR"), "{notes}");
    let (_, all) = t.get(&dm, "/api/v1/studies/S_DEMO/audit?limit=1000").await;
    assert!(all["records"].as_array().unwrap().iter().any(|r| r["action"] == "clinical_data.imported"), "{all}");

    // Importing the same file again changes nothing.
    let (s, report) = import(&t, &crc, &good).await;
    assert_eq!((s, report["written_forms"].as_i64()), (StatusCode::OK, Some(0)), "{report}");
}

both!(a_per_record_import_writes_the_clean_forms_and_logs_each, per_record_t);
async fn per_record_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    let dm = t.key("demo_dm").await;
    let a1 = enrol(&t, &crc, "S_DEMOA").await;
    let a2 = enrol(&t, &crc, "S_DEMOA").await;
    save_vitals(&t, &crc, &a1, json!([{"item": "weight", "value": "64.5"}])).await;
    save_vitals(&t, &crc, &a2, json!([{"item": "weight", "value": "80"}])).await;
    let (_, exported) = get_text(&t, &dm, "/api/v1/studies/S_DEMO/clinical-data?format=odm13-oc").await;
    let file =
        exported.replacen(r#"Value="64.5""#, r#"Value="66""#, 1).replacen(r#"Value="80""#, r#"Value="eighty""#, 1);
    let r = crate::client()
        .post(t.url("/api/v1/studies/S_DEMO/clinical-data/import?mode=per-record"))
        .bearer_auth(&crc)
        .body(file)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let report: Value = r.json().await.unwrap();
    let log: Vec<(String, String)> = report["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["participant"].as_str().unwrap().to_owned(), r["status"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(log.len(), 2, "{report}");
    assert!(log.iter().any(|(_, s)| s == "Updated"), "{report}");
    let failed = report["log"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["status"] == "Failed")
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        failed["message"].as_str().unwrap().contains("eighty")
            || failed["message"].as_str().unwrap().contains("number"),
        "{report}"
    );
    assert_eq!((report["accepted"].as_bool(), report["written_forms"].as_i64()), (Some(false), Some(1)), "{report}");
    let weight = |book: &Value| {
        book["events"][0]["forms"][0]["values"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["item_oid"] == "I_VITAL_WEIGHT")
            .unwrap()["value"]
            .clone()
    };
    let (_, b1) = t.get(&crc, &format!("/api/v1/studies/S_DEMO/participants/{a1}")).await;
    let (_, b2) = t.get(&crc, &format!("/api/v1/studies/S_DEMO/participants/{a2}")).await;
    assert_eq!((weight(&b1), weight(&b2)), (json!("66"), json!("80")), "the clean form written, the other untouched");
    let (s, e) = get_text(&t, &crc, "/api/v1/studies/S_DEMO/clinical-data?format=odm13").await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let r = crate::client()
        .post(t.url("/api/v1/studies/S_DEMO/clinical-data/import?mode=sideways"))
        .bearer_auth(&crc)
        .body(exported)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

async fn wait_for_job(t: &TestApp, key: &str, id: &str) -> Value {
    for _ in 0..200 {
        let (s, job) = t.get(key, &format!("/api/v1/jobs/{id}")).await;
        assert_eq!(s, StatusCode::OK, "{job}");
        if job["status"] != "in_progress" {
            return job;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("job {id} did not finish");
}

both!(imports_run_as_jobs_the_way_openclinica_4_scripts_use_them, jobs_t);
async fn jobs_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    let dm = t.key("demo_dm").await;
    let a1 = enrol(&t, &crc, "S_DEMOA").await;
    save_vitals(&t, &crc, &a1, json!([{"item": "weight", "value": "64.5"}])).await;
    let (_, exported) = get_text(&t, &crc, "/api/v1/studies/S_DEMO/clinical-data?format=odm13-oc").await;
    let file = exported.replacen(r#"Value="64.5""#, r#"Value="66""#, 1);

    // OpenClinica 4: the file as the body; the answer is the job's uuid; the log is a CSV.
    let r = crate::client()
        .post(t.url("/OpenClinica/pages/auth/api/clinicaldata/import"))
        .bearer_auth(&crc)
        .body(file.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    let id = text.strip_prefix("job uuid: ").unwrap_or_else(|| panic!("{text}")).to_owned();
    let job = wait_for_job(&t, &crc, &id).await;
    assert_eq!(
        (job["status"].as_str(), job["summary"]["written_forms"].as_i64()),
        (Some("completed"), Some(1)),
        "{job}"
    );
    let (s, csv) = get_text(&t, &crc, &format!("/OpenClinica/pages/auth/api/jobs/{id}/downloadFile")).await;
    assert_eq!(s, StatusCode::OK);
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("SubjectKey,ParticipantID,StudyEventOID,StudyEventRepeatKey,FormOID"), "{csv}");
    assert!(lines[1].contains(",form,Updated,"), "{csv}");
    let (_, book) = t.get(&crc, &format!("/api/v1/studies/S_DEMO/participants/{a1}")).await;
    let weight = book["events"][0]["forms"][0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["item_oid"] == "I_VITAL_WEIGHT")
        .unwrap()["value"]
        .clone();
    assert_eq!(weight, "66", "{book}");
    // What the job wrote is audited through the import channel, naming the job.
    let (_, audit) = t.get(&crc, &format!("/api/v1/studies/S_DEMO/participants/{a1}/audit")).await;
    let rows = audit.as_array().unwrap_or_else(|| panic!("{audit}"));
    let saved: Vec<&Value> = rows.iter().filter(|r| r["action"] == "item_data.value_saved").collect();
    let by_job = saved.last().unwrap_or_else(|| panic!("{audit}"));
    assert_eq!(by_job["channel"], "import", "{by_job}");
    assert_eq!(by_job["request_id"], format!("job:{id}"), "{by_job}");
    let (_, jobs) = t.get(&dm, "/api/v1/studies/S_DEMO/jobs").await;
    assert!(jobs["jobs"].as_array().unwrap().iter().any(|j| j["id"] == id.as_str()), "{jobs}");

    // OpenClinica 4's answers for unknown jobs, other people's jobs and deletion.
    let (s, body) =
        get_text(&t, &crc, "/OpenClinica/pages/auth/api/jobs/00000000-0000-4000-8000-000000000000/downloadFile").await;
    assert_eq!((s, body.as_str()), (StatusCode::NOT_FOUND, "error.invalidUuid"));
    let r = crate::client()
        .delete(t.url(&format!("/OpenClinica/pages/auth/api/jobs/{id}")))
        .bearer_auth(&dm)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = crate::client()
        .delete(t.url(&format!("/OpenClinica/pages/auth/api/jobs/{id}")))
        .bearer_auth(&crc)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (s, _) = t.get(&crc, &format!("/api/v1/jobs/{id}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Native: an all-or-nothing job with a bad file finishes with the refusal in its report.
    let bad = exported.replacen(r#"Value="64.5""#, r#"Value="heavy""#, 1);
    let r = crate::client()
        .post(t.url("/api/v1/studies/S_DEMO/clinical-data/import-jobs?file_name=bad.xml"))
        .bearer_auth(&crc)
        .body(bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let started: Value = r.json().await.unwrap();
    let job = wait_for_job(&t, &crc, started["id"].as_str().unwrap()).await;
    assert_eq!(
        (job["status"].as_str(), job["summary"]["accepted"].as_bool()),
        (Some("completed"), Some(false)),
        "{job}"
    );
    assert_eq!(job["summary"]["written_forms"], 0, "{job}");
    let monitor = t.key("demo_monitor").await;
    let r = crate::client()
        .post(t.url("/api/v1/studies/S_DEMO/clinical-data/import-jobs"))
        .bearer_auth(&monitor)
        .body(file)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

both!(openclinica_4_clinical_data_comes_as_xml_or_json_with_metadata, oc4_t);
async fn oc4_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    let a1 = enrol(&t, &crc, "S_DEMOA").await;
    save_vitals(&t, &crc, &a1, json!([{"item": "weight", "value": "64.5"}])).await;
    let path = format!("/OpenClinica/pages/auth/api/clinicaldata/S_DEMO/{a1}/*/*");
    // XML with the metadata: one valid document holding the design and the data.
    let r =
        crate::client().get(t.url(&path)).bearer_auth(&crc).header("accept", "application/xml").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let xml = r.text().await.unwrap();
    assert!(xml.contains("<MetaDataVersion") && xml.contains("<ClinicalData"), "{xml}");
    assert!(xml.contains(r#"<ItemData ItemOID="I_VITAL_WEIGHT" Value="64.5"/>"#), "{xml}");
    assert_eq!(xml.matches("<ODM").count(), 1, "{xml}");
    // Without metadata, and as JSON.
    let r = crate::client()
        .get(t.url(&format!("{path}?includeMetadata=n")))
        .bearer_auth(&crc)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let json: Value = r.json().await.unwrap();
    assert!(json["ODM"].get("Study").is_none(), "{json}");
    assert_eq!(json["ODM"]["ClinicalData"]["SubjectData"]["@OpenClinica:StudySubjectID"], a1.as_str(), "{json}");
    let r =
        crate::client().get(t.url(&path)).bearer_auth(&crc).header("accept", "application/json").send().await.unwrap();
    let json: Value = r.json().await.unwrap();
    assert!(json["ODM"]["Study"]["MetaDataVersion"].is_object(), "{json}");
}

both!(the_shared_samples_with_bad_clinical_data_are_refused_at_their_lines, samples_t);
async fn samples_t(t: TestApp) {
    let admin = t.key("demo_admin").await;
    let fixtures = std::env::var("CASEBOOK_FIXTURES")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures").to_owned());
    let own = std::path::Path::new(&fixtures).join("odm/samples/own");
    assert!(own.is_dir(), "the shared ODM samples are missing at {}", own.display());
    let bad_date = std::fs::read_to_string(own.join("demo_xsdvalid_bad_date_value.xml")).unwrap();
    let dangling = std::fs::read_to_string(own.join("demo_xsdvalid_dangling_itemoid.xml")).unwrap();

    // A study built from the samples' own metadata, with their participant and events.
    let (s, st) = t.post(&admin, "/api/v1/studies", json!({"protocol_id": "ODM-SAMPLES", "name": "Samples"})).await;
    assert_eq!(s, StatusCode::CREATED, "{st}");
    let oid = st["oid"].as_str().unwrap().to_owned();
    let valid = std::fs::read(own.join("demo_valid.xml")).unwrap();
    let r = crate::client()
        .post(t.url(&format!("/api/v1/studies/{oid}/design/odm?file_name=demo_valid.xml")))
        .bearer_auth(&admin)
        .body(valid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let imported: Value = r.json().await.unwrap();
    assert_eq!(imported["events"], json!(["SE_SCREEN", "SE_VISIT"]), "dotted OIDs converted: {imported}");
    let (s, p) = t.post(&admin, &format!("/api/v1/studies/{oid}/design/publish"), json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let (s, e) = t
        .post(&admin, &format!("/api/v1/studies/{oid}/design/versions/{}/promote", p["version"]["number"]), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let (s, e) = t
        .post(&admin, &format!("/api/v1/studies/{oid}/status"), json!({"status": "available", "reason": "test"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let (s, e) = t
        .post(&admin, &format!("/api/v1/studies/{oid}/participants"),
              json!({"site": oid, "label": "001-0001", "sex": "f", "date_of_birth": "1970-01-01", "enrolled_on": "2026-01-10"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    for (event, _) in [("SE_SCREEN", 1), ("SE_VISIT", 1)] {
        let (s, e) = t
            .post(&admin, &format!("/api/v1/studies/{oid}/participants/001-0001/events"), json!({"event": event}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{event}: {e}");
    }

    // The files name study S.DEMO and keep their dotted OIDs (the import reads them as the
    // metadata import converted them); addressed to this study, each is refused at its line.
    for (file, needle, item) in [(&bad_date, r#"Value="1970-13-45""#, "IT.BRTHDAT"), (&dangling, "ItemOID=\"", "")] {
        let xml = file.replace(r#"ClinicalData StudyOID="S.DEMO""#, &format!(r#"ClinicalData StudyOID="{oid}""#));
        let r = crate::client()
            .post(t.url(&format!("/api/v1/studies/{oid}/clinical-data/import?dry_run=true")))
            .bearer_auth(&admin)
            .body(xml.clone())
            .send()
            .await
            .unwrap();
        let report: Value = r.json().await.unwrap();
        assert_eq!(report["accepted"], false, "{report}");
        if item.is_empty() {
            // The dangling ItemOID: an item the design does not have.
            assert!(report["errors"].as_array().unwrap().iter().any(|e| e["code"] == "unknown_item"), "{report}");
        } else {
            let e = report["errors"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["item"] == item)
                .unwrap_or_else(|| panic!("{report}"));
            assert_eq!(e["line"].as_u64(), Some(line_of(&xml, needle) as u64), "{report}");
            assert_eq!(e["value"], "1970-13-45", "{report}");
        }
    }
}

/// A multipart form with one file part, built by hand (the way curl -F sends it).
fn multipart(boundary: &str, file_name: &str, content: &str) -> String {
    format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\n\
         Content-Type: text/xml\r\n\r\n{content}\r\n--{boundary}--\r\n"
    )
}

// Import files past the request body limit (here 64 KiB, 10 MiB by default) arrive as multipart
// or raw bodies and are spooled to disk; past the import limit (16 MiB here) they are refused
// with 413, naming the setting.
both!(large_import_files_arrive_as_multipart_or_raw_bodies_up_to_the_import_limit, large_t);
async fn large_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    let a1 = enrol(&t, &crc, "S_DEMOA").await;
    save_vitals(&t, &crc, &a1, json!([{"item": "weight", "value": "64.5"}])).await;
    let (_, exported) = get_text(&t, &crc, "/api/v1/studies/S_DEMO/clinical-data?format=odm13-oc").await;
    // 11 MiB of comments after the data: a file larger than the default body limit.
    let padding = format!("<!-- {} -->\n", "x".repeat(1014)).repeat(11 * 1024);
    let file =
        exported.replacen(r#"Value="64.5""#, r#"Value="66""#, 1).replacen("</ODM>", &format!("{padding}</ODM>"), 1);
    assert!(file.len() > 11 * 1024 * 1024);
    let boundary = "casebook-test-boundary-7d2f";
    let r = crate::client()
        .post(t.url("/OpenClinica/pages/auth/api/clinicaldata/import"))
        .bearer_auth(&crc)
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(multipart(boundary, "big.xml", &file))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    let id = text.strip_prefix("job uuid: ").unwrap_or_else(|| panic!("{text}")).to_owned();
    let job = wait_for_job(&t, &crc, &id).await;
    assert_eq!((job["status"].as_str(), job["file_name"].as_str()), (Some("completed"), Some("big.xml")), "{job}");
    assert_eq!(job["summary"]["written_forms"], 1, "{job}");
    assert_eq!(job["mode"], "per-record", "{job}");

    // The same as a raw body, synchronously (a dry run).
    let r = crate::client()
        .post(t.url("/api/v1/studies/S_DEMO/clinical-data/import?dry_run=true"))
        .bearer_auth(&crc)
        .body(file.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let report: Value = r.json().await.unwrap();
    assert_eq!((report["accepted"].as_bool(), report["forms"].as_i64()), (Some(true), Some(1)), "{report}");

    // Past the import limit: refused with 413 naming the setting — or, when the server answers
    // and closes before the client has sent it all, the client sees the connection end. Either
    // way no job was made.
    let jobs_before = t.get(&crc, "/api/v1/studies/S_DEMO/jobs").await.1["jobs"].as_array().unwrap().len();
    let huge = file.replacen("</ODM>", &format!("{padding}</ODM>"), 1);
    let sent = crate::client()
        .post(t.url("/api/v1/studies/S_DEMO/clinical-data/import-jobs"))
        .bearer_auth(&crc)
        .body(huge)
        .send()
        .await;
    match sent {
        Ok(r) => {
            assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
            let e: Value = r.json().await.unwrap();
            assert_eq!(e["code"], "file_too_large", "{e}");
            assert!(e["message"].as_str().unwrap().contains("http.import_limit_bytes"), "{e}");
        }
        Err(e) => assert!(e.is_request(), "{e}"),
    }
    let jobs_after = t.get(&crc, "/api/v1/studies/S_DEMO/jobs").await.1["jobs"].as_array().unwrap().len();
    assert_eq!(jobs_after, jobs_before, "a job was made from a file over the limit");

    // A multipart form without the file.
    let r = crate::client()
        .post(t.url("/api/v1/studies/S_DEMO/clinical-data/import-jobs"))
        .bearer_auth(&crc)
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--{boundary}--\r\n"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let e: Value = r.json().await.unwrap();
    assert!(e.to_string().contains("no part named 'file'"), "{e}");
}

// A running import job reports its progress and can be cancelled: all or nothing, nothing is
// written. A job left running by a stopped server is marked failed when a server starts.
both!(import_jobs_report_progress_and_can_be_cancelled, cancel_t);
async fn cancel_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    let a1 = enrol(&t, &crc, "S_DEMOA").await;
    save_vitals(&t, &crc, &a1, json!([{"item": "weight", "value": "64.5"}])).await;
    let (_, exported) = get_text(&t, &crc, "/api/v1/studies/S_DEMO/clinical-data?format=odm13").await;
    let (start, end) = (exported.find("<SubjectData").unwrap(), exported.rfind("</SubjectData>").unwrap());
    let subject = &exported[start..end + "</SubjectData>".len()];
    // The same participant's form 2,000 times, each changing the weight: a file long enough to be
    // caught writing.
    let twice = format!(
        "{}{}",
        subject.replacen(r#"Value="64.5""#, r#"Value="66""#, 1),
        subject.replacen(r#"Value="64.5""#, r#"Value="67""#, 1)
    );
    let file = format!("{}{}{}", &exported[..start], twice.repeat(1000), &exported[end + "</SubjectData>".len()..]);
    let r = crate::client()
        .post(t.url("/api/v1/studies/S_DEMO/clinical-data/import-jobs?file_name=long.xml"))
        .bearer_auth(&crc)
        .body(file)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let started: Value = r.json().await.unwrap();
    let id = started["id"].as_str().unwrap().to_owned();
    assert_eq!((started["status"].as_str(), started["mode"].as_str()), (Some("in_progress"), Some("all-or-nothing")));
    // Wait until it writes, then cancel.
    let mut seen_checking = false;
    loop {
        let (_, job) = t.get(&crc, &format!("/api/v1/jobs/{id}")).await;
        assert_eq!(job["status"], "in_progress", "the job ended before it could be cancelled: {job}");
        let progress = &job["progress"];
        seen_checking |= progress["phase"] == "checking";
        if progress["phase"] == "writing" && progress["forms_written"].as_u64().unwrap() >= 1 {
            assert!(progress["percent"].as_u64().unwrap() >= 50, "{job}");
            assert!(progress["total_bytes"].as_u64().unwrap() > 0, "{job}");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let (s, job) = t.post(&crc, &format!("/api/v1/jobs/{id}/cancel"), json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["progress"]["cancel_requested"], true, "{job}");
    let job = wait_for_job(&t, &crc, &id).await;
    assert_eq!(job["status"], "cancelled", "{job}");
    assert!(job["error"].as_str().unwrap().contains("nothing was written"), "{job}");
    let (_, book) = t.get(&crc, &format!("/api/v1/studies/S_DEMO/participants/{a1}")).await;
    let weight = book["events"][0]["forms"][0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["item_oid"] == "I_VITAL_WEIGHT")
        .unwrap()["value"]
        .clone();
    assert_eq!(weight, "64.5", "a cancelled all-or-nothing import wrote: {book}");
    let _ = seen_checking; // the check pass may be too quick to be seen; writing was.
    let (s, e) = t.post(&crc, &format!("/api/v1/jobs/{id}/cancel"), json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");

    // A job left running by a server that stopped.
    let study = t.app.store().study_by_oid("S_DEMO").await.unwrap().unwrap();
    t.app
        .store()
        .insert_job("00000000-0000-4000-8000-00000000dead", study.id, "clinical_import", "per-record", "x.xml", None)
        .await
        .unwrap();
    assert_eq!(t.app.fail_interrupted_jobs().await.unwrap(), 1);
    let dm = t.key("demo_dm").await;
    let (_, job) = t.get(&dm, "/api/v1/jobs/00000000-0000-4000-8000-00000000dead").await;
    assert_eq!(job["status"], "failed", "{job}");
    assert!(job["error"].as_str().unwrap().starts_with("interrupted"), "{job}");
}

/// Every `Attr="X"` of the document.
fn attribute_values(xml: &str, attr: &str) -> Vec<String> {
    let needle = format!(" {attr}=\"");
    xml.match_indices(&needle)
        .map(|(i, _)| {
            let rest = &xml[i + needle.len()..];
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .collect()
}

/// Runs the shared odmlib checker (an independent ODM consumer) on a document.
fn odmlib_check(xml: &str) -> String {
    let fixtures = std::env::var("CASEBOOK_FIXTURES")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures").to_owned());
    let tool = std::path::Path::new(&fixtures).join("../tools/odmlib_check.py");
    assert!(tool.is_file(), "the shared odmlib checker is missing at {}", tool.display());
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = std::env::temp_dir().join(format!("casebook-odmlib-{}-{n}.xml", std::process::id()));
    std::fs::write(&file, xml).unwrap();
    let out = std::process::Command::new("python3")
        .arg(&tool)
        .arg(&file)
        .output()
        .expect("python3 is required (scripts/test.sh installs odmlib)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "odmlib_check.py failed on {} (pip install odmlib==0.2.1):\n{text}", file.display());
    std::fs::remove_file(&file).unwrap();
    text
}

// A full export: the design, AdminData (users, locations, signature meanings) and the clinical
// data with standard audit records and signatures, in ODM 1.3.2 and 2.0, valid against the
// official schemas, every reference resolving, accepted by an independent consumer (odmlib);
// with OpenClinica's extensions, the notes and the audit trail as OpenClinica writes them.
both!(a_full_export_carries_the_design_admin_data_audit_records_notes_and_signatures, full_t);
async fn full_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    let inv = t.key("demo_investigator").await;
    let dm = t.key("demo_dm").await;
    let label = crate::review::enrol(&t, &crc).await;
    crate::review::complete_vitals(&t, &crc, &label, "SE_BASELINE").await;
    let (s, e) = crate::review::sign(
        &t,
        &inv,
        &crate::review::event_path(&label, "SE_BASELINE"),
        "demo_investigator",
        crate::PASSWORD,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let (s, q) = t
        .post(&dm, "/api/v1/studies/S_DEMO/notes", crate::notes::query_on_weight(&label, "Please confirm the weight"))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{q}");

    // ODM 1.3.2, full, with audit records and signatures.
    let (s, xml) = get_text(
        &t,
        &dm,
        &format!(
            "/api/v1/studies/S_DEMO/clinical-data?participant={label}&full=true&audit_records=true&signatures=true"
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{xml}");
    crate::design::xmllint(&xml, "xsd-1.3.2/ODM1-3-2.xsd");
    assert!(xml.contains(r#"Granularity="All""#), "{xml}");
    for part in [
        "<Study OID=\"S_DEMO\"",
        "<AdminData",
        "<ClinicalData",
        "<AuditRecord",
        "<Signature ID=\"SIG_",
        "<SignatureDef",
    ] {
        assert!(xml.contains(part), "{part} missing");
    }
    assert!(xml.contains(crate::review::MEANING), "the signature's meaning is not in its SignatureDef");
    for (attr, def) in [("UserOID", "User"), ("LocationOID", "Location"), ("SignatureOID", "SignatureDef")] {
        let refs = attribute_values(&xml, attr);
        assert!(!refs.is_empty(), "no {attr} written");
        for r in refs {
            assert!(xml.contains(&format!("<{def} OID=\"{r}\"")), "{attr}={r} does not resolve to a {def}");
        }
    }
    let report = odmlib_check(&xml);
    assert!(report.contains("XSD: ok"), "{report}");
    assert!(report.contains("validate(): 0 errors"), "{report}");

    // ODM 2.0, full, the same options.
    let (s, xml2) = get_text(
        &t,
        &dm,
        &format!(
            "/api/v1/studies/S_DEMO/clinical-data?format=odm2&participant={label}&full=true&audit_records=true&signatures=true"
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{xml2}");
    crate::design::xmllint(&xml2, "xsd-2.0/ODM.xsd");
    assert!(xml2.contains(r#"ODMVersion="2.0""#) && xml2.contains("<Value>64</Value>"), "{xml2}");
    // ODM 2.0 clinical data only.
    let (_, only) =
        get_text(&t, &dm, &format!("/api/v1/studies/S_DEMO/clinical-data?format=odm2&participant={label}")).await;
    crate::design::xmllint(&only, "xsd-2.0/ODM.xsd");

    // OpenClinica 3's path with includeDNs and includeAudits.
    let (s, oc) = get_text(
        &t,
        &dm,
        &format!("/OpenClinica/rest/clinicaldata/xml/view/S_DEMO/{label}/*/*?includeDNs=y&includeAudits=y"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{oc}");
    assert!(oc.contains("<OpenClinica:DiscrepancyNotes"), "{oc}");
    assert!(oc.contains(r#"NoteType="Query""#) && oc.contains("Please confirm the weight"), "{oc}");
    assert!(oc.contains("<OpenClinica:AuditLogs") && oc.contains("item_data.value_saved"), "{oc}");
    let (_, plain) =
        get_text(&t, &dm, &format!("/OpenClinica/rest/clinicaldata/xml/view/S_DEMO/{label}/*/*?includeDNs=n")).await;
    assert!(!plain.contains("DiscrepancyNotes") && !plain.contains("AuditLogs"), "{plain}");
    // OpenClinica 3's printable HTML of the same data: questions with their values.
    let r = crate::client()
        .get(t.url(&format!("/OpenClinica/rest/clinicaldata/html/print/S_DEMO/{label}/*/*")))
        .bearer_auth(&dm)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let page = r.text().await.unwrap();
    assert!(page.starts_with("<!doctype html>") && page.contains(&format!("Participant {label}")), "{page}");
    assert!(page.contains("<td>64</td>") && page.contains("Vital"), "{page}");
    let (s, _) = get_text(&t, &dm, &format!("/OpenClinica/rest/clinicaldata/xml/sideways/S_DEMO/{label}/*/*")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // The import's reader reads it all (the notes and audit logs too): the file checks clean
    // but for the calculated BMI, which the server computes.
    let (s, report) = dry_run(&t, &crc, &oc).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(codes(&report, "warnings"), ["calculated_ignored"], "{report}");

    // Notes are OpenClinica's extension.
    let (s, e) = t.get(&dm, "/api/v1/studies/S_DEMO/clinical-data?notes=true").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e.to_string().contains("odm13-oc"), "{e}");
}

/// The document with every value of `attr` blanked (what legitimately differs between two
/// studies: OIDs the database gives, note IDs, the importer as the notes' author).
fn blank_attr(xml: &str, attr: &str) -> String {
    let needle = format!(" {attr}=\"");
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(i) = rest.find(&needle) {
        out.push_str(&rest[..i + needle.len()]);
        rest = &rest[i + needle.len()..];
        let end = rest.find('"').unwrap();
        out.push('*');
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

// Export → import into a fresh study built from the same design: every participant, event,
// form, value, status and note comes back, and exporting the new study gives the same document
// (but for what the new database numbers itself). Importing the file again changes nothing.
both!(an_export_imports_into_a_fresh_study_with_every_value_status_and_note, round_trip_t);
async fn round_trip_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    let dm = t.key("demo_dm").await;
    let admin = t.key("demo_admin").await;
    // The source: one participant complete with a query answered, one in initial data entry
    // with an annotation on its enrolment date and a repeating group.
    let done = crate::review::enrol(&t, &crc).await;
    crate::review::complete_vitals(&t, &crc, &done, "SE_BASELINE").await;
    let (s, q) =
        t.post(&dm, "/api/v1/studies/S_DEMO/notes", crate::notes::query_on_weight(&done, "Is 64 kg right?")).await;
    assert_eq!(s, StatusCode::CREATED, "{q}");
    let (s, r) = t
        .post(
            &crc,
            &format!("/api/v1/studies/S_DEMO/notes/{}/replies", q["id"]),
            json!({"description": "Checked in the source: 64 kg", "status": "resolution_proposed"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let open = crate::review::enrol(&t, &crc).await;
    save_vitals(
        &t,
        &crc,
        &open,
        json!([{"item": "weight", "value": "80.5"}, {"item": "ecg_time", "row": 1, "value": "08:15"}, {"item": "hr", "row": 1, "value": "71"},
               {"item": "ecg_time", "row": 2, "value": "08:45"}, {"item": "hr", "row": 2, "value": "74"}]),
    )
    .await;
    let (s, a) = t
        .post(&crc, "/api/v1/studies/S_DEMO/notes", json!({"participant": open, "column": "enrolment_date", "type": "annotation", "description": "Enrolled on paper first"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let (_, source) = get_text(&t, &dm, "/api/v1/studies/S_DEMO/clinical-data?format=odm13-oc&notes=true").await;
    assert_eq!(count(&source, "<SubjectData"), 2, "{source}");
    assert_eq!(count(&source, "<OpenClinica:DiscrepancyNote "), 2, "{source}");

    // The fresh study: the same design (through its ODM metadata), the same parameters, and
    // imports allowed to enrol and schedule.
    let (_, metadata) = get_text(&t, &dm, "/api/v1/studies/S_DEMO/design/odm?version=production&format=odm13-oc").await;
    let (s, st) = t.post(&admin, "/api/v1/studies", json!({"protocol_id": "ROUND-TRIP", "name": "Round trip"})).await;
    assert_eq!(s, StatusCode::CREATED, "{st}");
    let oid = st["oid"].as_str().unwrap().to_owned();
    let r = crate::client()
        .post(t.url(&format!("/api/v1/studies/{oid}/design/odm?file_name=demo.xml")))
        .bearer_auth(&admin)
        .body(metadata)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
    let (s, p) = t.post(&admin, &format!("/api/v1/studies/{oid}/design/publish"), json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let (s, e) = t
        .post(&admin, &format!("/api/v1/studies/{oid}/design/versions/{}/promote", p["version"]["number"]), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let (_, demo) = t.get(&admin, "/api/v1/studies/S_DEMO").await;
    let mut params = demo["parameters"].clone();
    params["import_enrols_participants"] = json!(true);
    params["import_schedules_events"] = json!(true);
    let (s, e) = t.send(&admin, Method::PATCH, &format!("/api/v1/studies/{oid}"), json!({"parameters": params})).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let (s, e) = t
        .post(&admin, &format!("/api/v1/studies/{oid}/status"), json!({"status": "available", "reason": "test"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{e}");

    // Import the export, addressed to the new study.
    let file = source.replacen(r#"ClinicalData StudyOID="S_DEMO""#, &format!(r#"ClinicalData StudyOID="{oid}""#), 1);
    let r = crate::client()
        .post(t.url(&format!("/api/v1/studies/{oid}/clinical-data/import")))
        .bearer_auth(&admin)
        .body(file.clone())
        .send()
        .await
        .unwrap();
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["accepted"], true, "{report}");
    assert_eq!((report["enrolled"].as_i64(), report["scheduled"].as_i64()), (Some(2), Some(2)), "{report}");
    assert_eq!(report["notes_opened"], 2, "{report}");

    // The new study exports the same document.
    let (_, copy) =
        get_text(&t, &admin, &format!("/api/v1/studies/{oid}/clinical-data?format=odm13-oc&notes=true")).await;
    let normal = |xml: &str, study: &str| {
        let body = &xml[xml.find("<ClinicalData").unwrap()..];
        let mut x = body.replace(&format!("StudyOID=\"{study}\""), "StudyOID=\"*\"");
        for attr in [
            "MetaDataVersionOID",
            "SubjectKey",
            "EntityID",
            "ID",
            "UserOID",
            "OpenClinica:UserName",
            "OpenClinica:FullName",
        ] {
            x = blank_attr(&x, attr);
        }
        x
    };
    assert_eq!(normal(&copy, &oid), normal(&source, "S_DEMO"), "the new study's export differs from the source's");
    assert!(
        copy.contains("Checked in the source: 64 kg") && copy.contains(r#"Status="Resolution Proposed""#),
        "{copy}"
    );

    // Again: nothing changes, no note is opened twice.
    let r = crate::client()
        .post(t.url(&format!("/api/v1/studies/{oid}/clinical-data/import")))
        .bearer_auth(&admin)
        .body(file)
        .send()
        .await
        .unwrap();
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["accepted"], true, "{again}");
    assert_eq!(
        (
            again["enrolled"].as_i64(),
            again["scheduled"].as_i64(),
            again["written_forms"].as_i64(),
            again["notes_opened"].as_i64()
        ),
        (Some(0), Some(0), Some(0), Some(0)),
        "{again}"
    );

    // A note the import cannot read is refused at its line.
    let broken = source.replacen(r#"NoteType="Query""#, r#"NoteType="Gossip""#, 1);
    let (_, bad) = dry_run(&t, &dm, &broken).await;
    let e =
        bad["errors"].as_array().unwrap().iter().find(|e| e["code"] == "bad_note").unwrap_or_else(|| panic!("{bad}"));
    assert_eq!(e["line"].as_u64().unwrap() as usize, line_of(&broken, r#"NoteType="Gossip""#), "{bad}");
    assert!(e["message"].as_str().unwrap().contains("Gossip"), "{bad}");

    // A study that does not allow it refuses to enrol, naming the parameter.
    let key = attribute_values(&source, "SubjectKey")[0].clone();
    let other = source.replacen(&format!("SubjectKey=\"{key}\""), "SubjectKey=\"SS_NOBODY\"", 1).replacen(
        "DEMO-A-0001",
        "DEMO-A-0999",
        2,
    );
    let (_, refused) = dry_run(&t, &dm, &other).await;
    assert!(
        refused["errors"].as_array().unwrap().iter().any(|e| e["code"] == "unknown_participant"
            && e["message"].as_str().unwrap().contains("import_enrols_participants")),
        "{refused}"
    );
}

/// The value of an item in row `row` of a participant's baseline vital signs, if any.
async fn vital(t: &TestApp, key: &str, label: &str, item: &str, row: i64) -> Option<String> {
    let (_, book) = t.get(key, &format!("/api/v1/studies/S_DEMO/participants/{label}")).await;
    book["events"][0]["forms"][0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["item_oid"] == item && v["row"].as_i64().unwrap_or(1) == row)
        .and_then(|v| v["value"].as_str().map(str::to_owned))
}

// OpenClinica's UpsertOn keeps an import from overwriting forms in the states it names (the
// form is reported and left as it is); TransactionType="Remove" clears a value or removes a
// repeating row (kept for the audit).
both!(upsert_on_and_remove_transactions_are_honoured, upsert_t);
async fn upsert_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    let a1 = enrol(&t, &crc, "S_DEMOA").await;
    save_vitals(
        &t,
        &crc,
        &a1,
        json!([{"item": "weight", "value": "64.5"}, {"item": "height", "value": "170"},
               {"item": "ecg_time", "row": 1, "value": "08:15"}, {"item": "hr", "row": 1, "value": "71"},
               {"item": "ecg_time", "row": 2, "value": "08:45"}, {"item": "hr", "row": 2, "value": "74"}]),
    )
    .await;
    let (_, exported) = get_text(&t, &crc, &format!("/api/v1/studies/S_DEMO/clinical-data?participant={a1}")).await;
    let opened = exported.find("<ClinicalData").unwrap();
    let end_of_tag = opened + exported[opened..].find('>').unwrap() + 1;
    let with_upsert =
        |flags: &str, xml: &str| format!("{}\n<UpsertOn {flags}/>{}", &xml[..end_of_tag], &xml[end_of_tag..]);

    // The form is in data entry: DataEntryStarted="false" leaves it alone.
    let changed = exported.replacen(r#"Value="64.5""#, r#"Value="66""#, 1);
    let (s, report) = import(&t, &crc, &with_upsert(r#"DataEntryStarted="false""#, &changed)).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(codes(&report, "warnings"), ["upsert_on"], "{report}");
    assert_eq!(report["written_forms"], 0, "{report}");
    assert_eq!(vital(&t, &crc, &a1, "I_VITAL_WEIGHT", 1).await.as_deref(), Some("64.5"));
    // DataEntryComplete="false" does not concern it: written.
    let (_, report) = import(&t, &crc, &with_upsert(r#"DataEntryComplete="false""#, &changed)).await;
    assert_eq!(report["written_forms"], 1, "{report}");
    assert_eq!(vital(&t, &crc, &a1, "I_VITAL_WEIGHT", 1).await.as_deref(), Some("66"));

    // Remove: the height's value, and the second ECG row.
    let (_, now) = get_text(&t, &crc, &format!("/api/v1/studies/S_DEMO/clinical-data?participant={a1}")).await;
    let removing = now
        .replacen(
            r#"<ItemData ItemOID="I_VITAL_HEIGHT" Value="170"/>"#,
            r#"<ItemData ItemOID="I_VITAL_HEIGHT" Value="170" TransactionType="Remove"/>"#,
            1,
        )
        .replacen(
            r#"ItemGroupRepeatKey="2" TransactionType="Insert""#,
            r#"ItemGroupRepeatKey="2" TransactionType="Remove""#,
            1,
        );
    assert_ne!(removing, now, "the export's shape changed: {now}");
    let (s, report) = import(&t, &crc, &removing).await;
    assert_eq!((s, report["written_forms"].as_i64()), (StatusCode::OK, Some(1)), "{report}");
    assert_eq!(vital(&t, &crc, &a1, "I_VITAL_HEIGHT", 1).await, None, "the height was not cleared");
    assert_eq!(vital(&t, &crc, &a1, "I_VITAL_HR", 2).await, None, "the second ECG row was not removed");
    assert_eq!(vital(&t, &crc, &a1, "I_VITAL_HR", 1).await.as_deref(), Some("71"));
    let (_, audit) = t.get(&crc, &format!("/api/v1/studies/S_DEMO/participants/{a1}/audit")).await;
    assert!(audit.to_string().contains("item_data.row_removed"), "{audit}");

    // A non-repeating group has no row to remove.
    let bad = now.replacen(
        r#"ItemGroupOID="IG_VITAL_VS" TransactionType="Insert""#,
        r#"ItemGroupOID="IG_VITAL_VS" TransactionType="Remove""#,
        1,
    );
    assert_ne!(bad, now, "the export's shape changed: {now}");
    let (s, report) = import(&t, &crc, &bad).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{report}");
    assert_eq!(codes(&report, "errors"), ["not_repeating"], "{report}");

    // OpenClinica 4's SdvStatus is reported, not taken.
    let (_, oc) =
        get_text(&t, &crc, &format!("/api/v1/studies/S_DEMO/clinical-data?participant={a1}&format=odm13-oc")).await;
    let verified = oc.replacen("<FormData ", r#"<FormData OpenClinica:SdvStatus="VERIFIED" "#, 1);
    let (_, report) = dry_run(&t, &crc, &verified).await;
    assert!(codes(&report, "warnings").contains(&"sdv_not_imported".to_owned()), "{report}");
}
