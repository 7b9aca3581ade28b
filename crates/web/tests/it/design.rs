//! Study design over the API: upload an XLSForm, define events, diff, publish to Test, promote
//! to Production, refuse changes that would reinterpret data; on SQLite and PostgreSQL.

use crate::{TestApp, both, client};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The demo study's XLSForm, shipped in the repository.
const VITAL_SIGNS: &[u8] = include_bytes!("../../../../demo/forms/vital_signs.xlsx");

async fn upload(
    t: &TestApp,
    key: &str,
    study: &str,
    file: &str,
    bytes: Vec<u8>,
    event: Option<&str>,
) -> (StatusCode, Value) {
    let mut url = format!("/api/v1/studies/{study}/design/forms?file_name={file}");
    if let Some(e) = event {
        url.push_str(&format!("&event={e}"));
    }
    let r = client().post(t.url(&url)).bearer_auth(key).body(bytes).send().await.unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// A second version of the vital signs form as an XLSForm in markdown: `weight` changes type
/// when `weight_type` is `integer`.
fn vital_signs_v2(version: &str, weight_type: &str) -> Vec<u8> {
    format!(
        "
        | survey |
        | | type | name | label | bind::oc:itemgroup | constraint |
        | | date | vs_date | Date of measurement | vs | . <= today() |
        | | {weight_type} | weight | Weight (kg) | vs | . > 0 |
        | | decimal | height | Height (cm) | vs | |
        | | integer | temp | Temperature | vs | |
        | settings |
        | | form_title | form_id | version |
        | | Vital signs | vital_signs | {version} |
        "
    )
    .into_bytes()
}

async fn new_study(t: &TestApp, admin: &str) {
    let (s, b) = t.post(admin, "/api/v1/studies", json!({"protocol_id": "DSGN", "name": "Design study"})).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
}

both!(publish_to_test_and_production, publish_t);
async fn publish_t(t: TestApp) {
    let admin = t.key("demo_admin").await;
    new_study(&t, &admin).await;

    // Nothing to publish yet.
    let (s, e) = t.post(&admin, "/api/v1/studies/S_DSGN/design/publish", json!({})).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("design_incomplete")), "{e}");

    let (s, ev) = t
        .post(&admin, "/api/v1/studies/S_DSGN/design/events", json!({"name": "Baseline visit", "type": "scheduled"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{ev}");
    assert_eq!(ev["oid"], "SE_BASELINEVISIT");

    // A corrupt workbook is refused with a clear message and changes nothing.
    let (s, e) = upload(&t, &admin, "S_DSGN", "broken.xlsx", b"PK\x03\x04 not really a zip".to_vec(), None).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("design_rejected")), "{e}");
    assert!(e["details"]["diagnostics"][0]["message"].as_str().unwrap().contains("not a readable"), "{e}");

    // An XLSForm with several problems: all reported, with sheet/row/column, nothing saved.
    let bad = "
        | survey |
        | | type | name | label | relevant |
        | | integer | age | Age | |
        | | integer | age | Age again | |
        | | select_one nolist | q | Q | |
        | | begin repeat | r | R | |
        | | text | x | X | ${agee} > 3 |
        | settings |
        | | form_id | version |
        | | vital_signs | v1.0 |
    ";
    let (s, e) = upload(&t, &admin, "S_DSGN", "bad.md", bad.as_bytes().to_vec(), None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let diags = e["details"]["diagnostics"].as_array().unwrap();
    let text = e.to_string();
    assert!(diags.len() >= 3, "{e}");
    assert!(text.contains("already used on row 2") && text.contains("\"row\":3"), "{e}");
    assert!(text.contains("nolist"), "{e}");
    assert!(text.contains("never closed"), "{e}");
    assert!(text.contains("unknown item 'agee'"), "{e}");
    let (_, draft) = t.get(&admin, "/api/v1/studies/S_DSGN/design").await;
    assert_eq!(draft["forms"], json!([]), "a refused upload saves nothing: {draft}");

    // The shipped XLSForm loads into the draft and into the event.
    let (s, up) =
        upload(&t, &admin, "S_DSGN", "vital_signs.xlsx", VITAL_SIGNS.to_vec(), Some("SE_BASELINEVISIT")).await;
    assert_eq!(s, StatusCode::CREATED, "{up}");
    assert_eq!(up["form_oid"], "F_VITAL_SIGNS");
    assert_eq!(up["version_oid"], "F_VITAL_SIGNS_V10");
    assert_eq!(up["items"], 12, "{up}");
    assert_eq!(up["item_groups"], 2, "{up}");
    let (_, draft) = t.get(&admin, "/api/v1/studies/S_DSGN/design?version=draft").await;
    let items = draft["forms"][0]["versions"][0]["items"].as_array().unwrap();
    let weight = items.iter().find(|i| i["name"] == "weight").unwrap();
    assert_eq!(weight["oid"], "I_VITAL_WEIGHT");
    assert_eq!(weight["data_type"], "REAL");
    assert_eq!(weight["label"]["translations"]["Français (fr)"], "Poids (kg)");
    assert_eq!(weight["checks"][0]["rule"]["expression"]["source"], ". >= 20 and . <= 300");
    let hr = items.iter().find(|i| i["name"] == "hr").unwrap();
    let groups = draft["forms"][0]["versions"][0]["groups"].as_array().unwrap();
    let ecg = groups.iter().find(|g| g["oid"] == hr["group_oid"]).unwrap();
    assert!(ecg["repeat"].is_object(), "ECG readings repeat: {ecg}");
    assert_eq!(draft["events"][0]["forms"][0]["form_oid"], "F_VITAL_SIGNS");

    let (s, d) = t.get(&admin, "/api/v1/studies/S_DSGN/design/diff").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(d["publishable"], true, "{d}");
    assert_eq!(d["against"], Value::Null);

    let (s, p) = t.post(&admin, "/api/v1/studies/S_DSGN/design/publish", json!({"notes": "first"})).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    assert_eq!(p["version"]["number"], 1);
    assert_eq!(p["version"]["environment"], "test");
    let hash1 = p["version"]["hash"].as_str().unwrap().to_owned();
    assert_eq!(hash1.len(), 64);

    let (s, e) = t.post(&admin, "/api/v1/studies/S_DSGN/design/publish", json!({})).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("design_unchanged")));

    let (s, v) = t.post(&admin, "/api/v1/studies/S_DSGN/design/versions/1/promote", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["environment"], "production");
    let (s, e) = t.post(&admin, "/api/v1/studies/S_DSGN/design/versions/1/promote", json!({})).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::CONFLICT, Some("invalid_status_transition")));
    let (s, prod) = t.get(&admin, "/api/v1/studies/S_DSGN/design?version=production").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(prod["forms"][0]["oid"], "F_VITAL_SIGNS");

    // Re-using a published version label is refused.
    let (s, e) = upload(&t, &admin, "S_DSGN", "v.md", vital_signs_v2("v1.0", "decimal"), None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e.to_string().contains("is published and cannot be replaced"), "{e}");

    // A new version that changes an item's data type is accepted into the draft, shown as
    // refused in the diff, and cannot be published.
    let (s, up) = upload(&t, &admin, "S_DSGN", "v.md", vital_signs_v2("v2.0", "integer"), None).await;
    assert_eq!(s, StatusCode::CREATED, "{up}");
    let (_, d) = t.get(&admin, "/api/v1/studies/S_DSGN/design/diff").await;
    assert_eq!(d["against"], 1);
    assert_eq!(d["publishable"], false, "{d}");
    let refused: Vec<&Value> =
        d["diff"]["changes"].as_array().unwrap().iter().filter(|c| c["refused"].is_string()).collect();
    assert_eq!(refused.len(), 1, "{d}");
    assert_eq!(refused[0]["oid"], "I_VITAL_WEIGHT");
    assert!(refused[0]["refused"].as_str().unwrap().contains("from REAL to INT"), "{d}");
    let (s, e) = t.post(&admin, "/api/v1/studies/S_DSGN/design/publish", json!({})).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("design_change_refused")), "{e}");

    // Fixing the upload (same draft label, replaced) makes it publishable: items keep their OIDs.
    let (s, up) = upload(&t, &admin, "S_DSGN", "v.md", vital_signs_v2("v2.0", "decimal"), None).await;
    assert_eq!(s, StatusCode::CREATED, "{up}");
    assert_eq!(up["replaced"], true);
    let (_, d) = t.get(&admin, "/api/v1/studies/S_DSGN/design/diff").await;
    assert_eq!(d["publishable"], true, "{d}");
    let added: Vec<&str> = d["diff"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "added")
        .map(|c| c["oid"].as_str().unwrap())
        .collect();
    assert_eq!(added, vec!["F_VITAL_SIGNS_V20", "I_VITAL_TEMP"], "{d}");
    let (s, p) = t.post(&admin, "/api/v1/studies/S_DSGN/design/publish", json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    assert_eq!(p["version"]["number"], 2);
    let (_, versions) = t.get(&admin, "/api/v1/studies/S_DSGN/design/versions").await;
    let envs: Vec<&str> = versions.as_array().unwrap().iter().map(|v| v["environment"].as_str().unwrap()).collect();
    assert_eq!(envs, vec!["production", "test"]);
    // Version 1 is still exactly what was published.
    let (_, v1) = t.get(&admin, "/api/v1/studies/S_DSGN/design/versions").await;
    assert_eq!(v1[0]["hash"], hash1.as_str());

    // Every design change is in the study's audit trail.
    let (_, audit) = t.get(&admin, "/api/v1/studies/S_DSGN/audit").await;
    let actions: Vec<&str> = audit["records"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    for a in ["design.event_saved", "design.form_uploaded", "design.published", "design.promoted"] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
}

both!(only_builders_change_designs, builders_t);
async fn builders_t(t: TestApp) {
    // The demo study's monitor and a site CRC may read but not build; a site user cannot see
    // another study at all.
    for user in ["demo_monitor", "demo_crc", "demo_entry"] {
        let key = t.key(user).await;
        let (s, e) = upload(&t, &key, "S_DEMO", "vital_signs.xlsx", VITAL_SIGNS.to_vec(), None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{user}: {e}");
        let (s, e) = t.post(&key, "/api/v1/studies/S_DEMO/design/publish", json!({})).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{user}: {e}");
        let (s, _) = t.get(&key, "/api/v1/studies/S_DEMO/design").await;
        assert_eq!(s, StatusCode::OK, "{user} reads the design");
    }
    // Listing: forms with versions, one version whole, items with their versions, events.
    let (s, forms) = t.get(&dm_list_key(&t).await, "/api/v1/studies/S_DEMO/design/forms?version=production").await;
    assert_eq!(s, StatusCode::OK, "{forms}");
    assert_eq!(forms[0]["oid"], "F_VITAL_SIGNS");
    assert_eq!(forms[0]["versions"][0]["oid"], "F_VITAL_SIGNS_V10");
    assert_eq!(forms[0]["versions"][0]["items"], 12);
    let key = dm_list_key(&t).await;
    let (s, v) = t.get(&key, "/api/v1/studies/S_DEMO/design/forms/F_VITAL_SIGNS/versions/F_VITAL_SIGNS_V10").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["label"], "v1.0");
    let (s, _) = t.get(&key, "/api/v1/studies/S_DEMO/design/forms/F_VITAL_SIGNS/versions/F_NOPE_V1").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, items) = t.get(&key, "/api/v1/studies/S_DEMO/design/items?form=F_VITAL_SIGNS").await;
    let hr = items.as_array().unwrap().iter().find(|i| i["name"] == "hr").unwrap();
    assert_eq!(
        (hr["oid"].as_str(), hr["data_type"].as_str(), hr["repeating"].as_bool()),
        (Some("I_VITAL_HR"), Some("INT"), Some(true))
    );
    let (s, _) = t.get(&key, "/api/v1/studies/S_DEMO/design/items?form=F_NOPE").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, events) = t.get(&key, "/api/v1/studies/S_DEMO/design/events?version=test").await;
    assert_eq!(events.as_array().unwrap().len(), 3);
    let (s, e) = t.get(&key, "/api/v1/studies/S_DEMO/design/events?version=banana").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");

    // The design as ODM metadata, valid against the official schemas (xmllint).
    for (format, xsd) in [("odm13", "xsd-1.3.2/ODM1-3-2.xsd"), ("odm2", "xsd-2.0/ODM.xsd")] {
        let r = client()
            .get(t.url(&format!("/api/v1/studies/S_DEMO/design/odm?format={format}&version=production")))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/xml"));
        let xml = r.text().await.unwrap();
        assert!(xml.contains("F_VITAL_SIGNS_V10") && xml.contains("I_VITAL_WEIGHT"), "{format}");
        xmllint(&xml, xsd);
    }
    let (s, e) = t.get(&key, "/api/v1/studies/S_DEMO/design/odm?format=sas").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");

    // The demo study's design was published from the shipped forms and is in Production.
    let dm = t.key("demo_dm").await;
    let (s, prod) = t.get(&dm, "/api/v1/studies/S_DEMO/design?version=production").await;
    assert_eq!(s, StatusCode::OK, "{prod}");
    let events: Vec<&str> = prod["events"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(events, vec!["Baseline", "Follow-up", "Adverse events"]);
    // The OpenClinica CRF template (.xls) became the adverse events form, in the common event.
    assert_eq!(prod["events"][2]["forms"][0]["form_oid"], "F_ADVERSEEVENT");
    assert_eq!(prod["events"][2]["type"], "common");
    assert_eq!(prod["events"][0]["forms"][0]["form_oid"], "F_VITAL_SIGNS");
    assert_eq!(prod["events"][1]["repeating"], true);
    let (s, e) =
        t.post(&dm, "/api/v1/studies/S_DEMO/design/events", json!({"name": "Week 4", "type": "fortnightly"})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e["message"].as_str().unwrap().contains("'fortnightly' is not scheduled"), "{e}");
    let (s, e) = t
        .post(&dm, "/api/v1/studies/S_DEMO/design/events", json!({"name": "Week 4", "forms": [{"form": "F_NOPE"}]}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e["message"].as_str().unwrap().contains("forms[0].form"), "{e}");
    let (s, e) = upload(&t, &dm, "S_DEMO", "notes.txt", b"hello".to_vec(), None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
}

async fn dm_list_key(t: &TestApp) -> String {
    t.key("demo_monitor").await
}

/// Validates XML with xmllint against one of the official CDISC schemas in the shared fixtures.
pub(crate) fn xmllint(xml: &str, xsd: &str) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let fixtures = std::env::var("CASEBOOK_FIXTURES")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures").to_owned());
    let schema = std::path::Path::new(&fixtures).join("odm").join(xsd);
    assert!(schema.is_file(), "the ODM schemas are missing at {}", schema.display());
    let file = std::env::temp_dir().join(format!("casebook-xmllint-{}-{n}.xml", std::process::id()));
    std::fs::write(&file, xml).unwrap();
    let out = std::process::Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema"])
        .arg(&schema)
        .arg(&file)
        .output()
        .expect("xmllint is required (apt-get install -y libxml2-utils; .ci/run installs it)");
    let _ = std::fs::remove_file(&file);
    assert!(out.status.success(), "{xsd}: {}", String::from_utf8_lossy(&out.stderr));
}

async fn post_xml(t: &TestApp, key: &str, study: &str, xml: Vec<u8>) -> (StatusCode, Value) {
    let url = format!("/api/v1/studies/{study}/design/odm?file_name=metadata.xml");
    let r = client().post(t.url(&url)).bearer_auth(key).body(xml).send().await.unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

both!(odm_metadata_round_trip, odm_round_trip_t);
async fn odm_round_trip_t(t: TestApp) {
    let admin = t.key("demo_admin").await;
    new_study(&t, &admin).await;

    // A DTD is refused before anything is read, and nothing is saved.
    let evil = br#"<?xml version="1.0"?><!DOCTYPE ODM [<!ENTITY x SYSTEM "file:///etc/passwd">]><ODM>&x;</ODM>"#;
    let (s, e) = post_xml(&t, &admin, "S_DSGN", evil.to_vec()).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("design_rejected")), "{e}");
    assert!(e.to_string().contains("DTD") || e.to_string().contains("DOCTYPE"), "{e}");
    assert!(e["details"]["diagnostics"][0]["location"]["line"].is_number(), "{e}");

    // The demo design leaves as ODM with OpenClinica extensions and comes back into another study.
    let r = client()
        .get(t.url("/api/v1/studies/S_DEMO/design/odm?format=odm13-oc&version=production"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let xml = r.bytes().await.unwrap().to_vec();
    let (s, out) = post_xml(&t, &admin, "S_DSGN", xml).await;
    assert_eq!(s, StatusCode::CREATED, "{out}");
    assert_eq!(out["source_study_oid"], "S_DEMO");
    assert_eq!(out["events"].as_array().unwrap().len(), 3, "{out}");
    let (_, demo) = t.get(&admin, "/api/v1/studies/S_DEMO/design/items?version=production").await;
    let (_, copy) = t.get(&admin, "/api/v1/studies/S_DSGN/design/items?version=draft").await;
    let shape = |v: &Value| {
        let mut x: Vec<(String, String, bool)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["oid"].as_str().unwrap().to_owned(),
                    i["data_type"].as_str().unwrap().to_owned(),
                    i["repeating"].as_bool().unwrap(),
                )
            })
            .collect();
        x.sort();
        x
    };
    assert_eq!(shape(&demo), shape(&copy), "items, types and repeats survive the round trip");
    let (s, p) = t.post(&admin, "/api/v1/studies/S_DSGN/design/publish", json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");

    // Importing it again after publishing would replace published versions: refused.
    let r = client()
        .get(t.url("/api/v1/studies/S_DEMO/design/odm?format=odm13-oc&version=production"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let (s, e) = post_xml(&t, &admin, "S_DSGN", r.bytes().await.unwrap().to_vec()).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e.to_string().contains("is published and cannot be replaced"), "{e}");
}
