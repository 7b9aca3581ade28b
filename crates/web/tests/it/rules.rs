//! Rules over the API: import with preview, versions and disabling; running in batch (and as a
//! dry run that writes nothing); firing on save in the save's transaction; the demo's rules on
//! the demo data. On both databases.

use crate::{TestApp, both};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const RULES: &str = "/api/v1/studies/S_DEMO/rules";
const DEMO_RULES: &str = include_str!("../../../../demo/rules/demo_rules.xml");

async fn import(t: &TestApp, key: &str, xml: &str, preview: bool) -> (StatusCode, Value) {
    let r = crate::client()
        .post(t.url(&format!("{RULES}?file_name=rules.xml&preview={preview}")))
        .bearer_auth(key)
        .body(xml.to_owned())
        .send()
        .await
        .unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

fn changes(out: &Value) -> Vec<(String, String, i64)> {
    out["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["rule_oid"].as_str().unwrap().to_owned(),
                c["change"].as_str().unwrap().to_owned(),
                c["version"].as_i64().unwrap(),
            )
        })
        .collect()
}

async fn actions(t: &TestApp) -> Vec<Value> {
    let dm = t.key("demo_dm").await;
    let (_, audit) = t.get(&dm, "/api/v1/studies/S_DEMO/audit?limit=1000").await;
    audit["records"].as_array().unwrap().clone()
}

both!(rules_are_previewed_imported_versioned_and_disabled, import_t);
async fn import_t(t: TestApp) {
    let dm = t.key("demo_dm").await;
    let crc = t.key("demo_crc").await;

    // A preview shows every rule at its target and saves nothing.
    let (s, p) = import(&t, &dm, DEMO_RULES, true).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["saved"], false);
    assert_eq!(p["rules"].as_array().unwrap().len(), 7, "{p}");
    assert!(changes(&p).iter().all(|(_, c, v)| c == "new" && *v == 1), "{p}");
    let tachy = p["rules"].as_array().unwrap().iter().find(|r| r["rule_oid"] == "R_VS_TACHYCARDIA").unwrap();
    assert_eq!(tachy["target"], "F_VITAL_SIGNS.IG_VITAL_ECG[ALL].I_VITAL_HR", "{p}");
    let (_, list) = t.get(&dm, RULES).await;
    assert_eq!(list["rules"], json!([]), "{list}");

    // Site staff do not manage rules.
    let (s, _) = import(&t, &crc, DEMO_RULES, false).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let (s, out) = import(&t, &dm, DEMO_RULES, false).await;
    assert_eq!(s, StatusCode::CREATED, "{out}");
    let (_, list) = t.get(&dm, RULES).await;
    let rules = list["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 7, "{list}");
    assert!(rules.iter().all(|r| r["version"] == 1 && r["enabled"] == true), "{list}");

    // The same file again changes nothing; a changed message makes version 2 of that rule only.
    let (_, again) = import(&t, &dm, DEMO_RULES, false).await;
    assert!(changes(&again).iter().all(|(_, c, _)| c == "unchanged"), "{again}");
    let changed = DEMO_RULES.replace("Heart rate above 120 bpm", "Heart rate over 120 bpm");
    let (s, out) = import(&t, &dm, &changed, false).await;
    assert_eq!(s, StatusCode::CREATED, "{out}");
    let versions: Vec<_> = changes(&out).into_iter().filter(|(_, c, _)| c != "unchanged").collect();
    assert_eq!(versions, [("R_VS_TACHYCARDIA".to_owned(), "new_version".to_owned(), 2)]);

    // Bad files are refused whole, each problem named; nothing changes.
    let (s, e) =
        import(&t, &dm, &changed.replace("IG_VITAL_ECG[ALL].I_VITAL_HR", "IG_VITAL_ECG[ALL].I_VITAL_HRX"), false).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("rules_rejected")), "{e}");
    assert!(e.to_string().contains("I_VITAL_HRX"), "{e}");
    let (s, e) = import(&t, &dm, "<RuleImport>\n  <RuleAssignment>\n</RuleImport>", false).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["details"]["diagnostics"][0]["location"]["kind"], "xml", "{e}");
    let (s, e) = import(&t, &dm, "<!DOCTYPE x [<!ENTITY a \"b\">]><RuleImport/>", false).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let (_, list) = t.get(&dm, RULES).await;
    assert_eq!(list["rules"].as_array().unwrap().len(), 7, "{list}");

    // Disabling, once.
    let path = format!("{RULES}/R_VS_TACHYCARDIA/enabled");
    let (s, r) = t.post(&dm, &path, json!({"enabled": false})).await;
    assert_eq!((s, &r["rules"][0]["enabled"]), (StatusCode::OK, &json!(false)), "{r}");
    let (s, _) = t.post(&dm, &path, json!({"enabled": false})).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = t.post(&dm, &format!("{RULES}/R_NOPE/enabled"), json!({"enabled": false})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let audit = actions(&t).await;
    for a in ["rules.imported", "rule.created", "rule.new_version", "rule.disabled"] {
        assert!(audit.iter().any(|r| r["action"] == a), "{a} missing");
    }
}

/// A DEMO-A participant with complete baseline vital signs (visit 2026-11-01, heart rate 130 in
/// the first ECG reading); returns its label.
async fn participant_with_baseline(t: &TestApp, crc: &str) -> (String, Value) {
    let (s, p) = t
        .post(
            crc,
            "/api/v1/studies/S_DEMO/participants",
            json!({"site": "S_DEMOA", "sex": "f", "date_of_birth": "1980-05-05", "enrolled_on": "2026-10-30"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let label = p["label"].as_str().unwrap().to_owned();
    let base = format!("/api/v1/studies/S_DEMO/participants/{label}");
    let (s, e) = t.post(crc, &format!("{base}/events"), json!({"event": "SE_BASELINE"})).await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    let values = json!([
        {"item": "vs_date", "value": "2026-11-01"}, {"item": "weight", "value": "64"}, {"item": "height", "value": "170"},
        {"item": "sys", "value": "118"}, {"item": "dia", "value": "76"}, {"item": "abnormal", "value": "no"},
        {"item": "ecg_time", "row": 1, "value": "09:30"}, {"item": "hr", "row": 1, "value": "130"}
    ]);
    let (s, saved) = t
        .send(crc, Method::PUT, &format!("{base}/events/SE_BASELINE/1/forms/F_VITAL_SIGNS"), json!({"values": values}))
        .await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    (label, saved)
}

async fn events_of(t: &TestApp, key: &str, label: &str) -> Vec<Value> {
    let (_, book) = t.get(key, &format!("/api/v1/studies/S_DEMO/participants/{label}")).await;
    book["events"].as_array().unwrap().clone()
}

both!(rules_run_in_batch_and_a_dry_run_writes_nothing, batch_t);
async fn batch_t(t: TestApp) {
    let dm = t.key("demo_dm").await;
    let crc = t.key("demo_crc").await;
    let (label, saved) = participant_with_baseline(&t, &crc).await;
    assert!(saved.get("rules").is_none(), "no rules yet: {saved}");
    let (s, _) = import(&t, &dm, DEMO_RULES, false).await;
    assert_eq!(s, StatusCode::CREATED);

    // The dry run says what would happen, and nothing happens.
    let (s, dry) = t.post(&dm, &format!("{RULES}/run"), json!({"dry_run": true})).await;
    assert_eq!(s, StatusCode::OK, "{dry}");
    assert_eq!(dry["counts"]["discrepancy_note/would_apply"], 1, "{dry}");
    assert_eq!(dry["counts"]["event/would_apply"], 1, "{dry}");
    let (_, notes) = t.get(&dm, "/api/v1/studies/S_DEMO/notes").await;
    assert_eq!(notes["total"], 0, "{notes}");
    assert!(events_of(&t, &dm, &label).await.iter().all(|e| e["event_oid"] != "SE_FOLLOWUP"));

    // The run does it: a note on the fast heart rate, the follow-up 28 days after the visit.
    let (s, run) = t.post(&dm, &format!("{RULES}/run"), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{run}");
    assert_eq!(
        (&run["counts"]["discrepancy_note/applied"], &run["counts"]["event/applied"]),
        (&json!(1), &json!(1)),
        "{run}"
    );
    let (_, notes) = t.get(&dm, "/api/v1/studies/S_DEMO/notes").await;
    let note = &notes["threads"][0];
    assert_eq!(
        (note["type"].as_str(), note["item_oid"].as_str(), note["row"].as_i64()),
        (Some("failed_validation_check"), Some("I_VITAL_HR"), Some(1)),
        "{notes}"
    );
    assert!(note["description"].as_str().unwrap().starts_with("Heart rate above 120"), "{notes}");
    assert_eq!(note["assigned_to"], "demo_crc", "{notes}");
    let follow_up = events_of(&t, &dm, &label).await.into_iter().find(|e| e["event_oid"] == "SE_FOLLOWUP").unwrap();
    assert!(follow_up["start"].as_str().unwrap().starts_with("2026-11-29"), "{follow_up}");

    // Again on unchanged data: nothing is repeated.
    let (_, again) = t.post(&dm, &format!("{RULES}/run"), json!({})).await;
    assert_eq!(again["counts"]["discrepancy_note/already_done"], 1, "{again}");
    assert!(again["counts"].get("event/applied").is_none(), "{again}");
    let (_, notes) = t.get(&dm, "/api/v1/studies/S_DEMO/notes").await;
    assert_eq!(notes["total"], 1, "{notes}");

    let (s, _) = t.post(&crc, &format!("{RULES}/run"), json!({"dry_run": true})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = t.post(&dm, &format!("{RULES}/run"), json!({"rule": "R_NOPE"})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

both!(rules_fire_on_save_in_the_same_transaction, save_t);
async fn save_t(t: TestApp) {
    let dm = t.key("demo_dm").await;
    let crc = t.key("demo_crc").await;
    let (s, _) = import(&t, &dm, DEMO_RULES, false).await;
    assert_eq!(s, StatusCode::CREATED);

    // Saving the baseline schedules the follow-up and notes the heart rate.
    let (label, saved) = participant_with_baseline(&t, &crc).await;
    let fired: Vec<(&str, &str)> = saved["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["action"].as_str().unwrap(), f["outcome"].as_str().unwrap()))
        .collect();
    assert!(fired.contains(&("event", "applied")) && fired.contains(&("discrepancy_note", "applied")), "{saved}");
    assert!(events_of(&t, &crc, &label).await.iter().any(|e| e["event_oid"] == "SE_FOLLOWUP"));

    // An adverse event assessment without weight gets the baseline weight, audited; a serious
    // event opens a note and e-mails the safety desk.
    let base = format!("/api/v1/studies/S_DEMO/participants/{label}");
    let (s, e) = t.post(&crc, &format!("{base}/events"), json!({"event": "SE_ADVERSEEVENTS"})).await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    let ae = format!("{base}/events/SE_ADVERSEEVENTS/1/forms/F_ADVERSEEVENT");
    let values = json!([
        {"item": "AE_ANY", "value": "1"}, {"item": "AE_TERM", "value": "Syncope"}, {"item": "AE_START", "value": "2026-11-10"},
        {"item": "AE_SEV", "value": "3"}, {"item": "AE_SER", "value": "1"}, {"item": "HOSP", "value": "1"}
    ]);
    let (s, saved) = t.send(&crc, Method::PUT, &ae, json!({"values": values})).await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    let weight =
        saved["form"]["values"].as_array().unwrap().iter().find(|v| v["item_oid"] == "I_ADVER_WEIGHT").cloned();
    assert_eq!(weight.as_ref().and_then(|w| w["value"].as_str()), Some("64"), "{saved}");
    let kinds: Vec<&str> = saved["rules"].as_array().unwrap().iter().map(|f| f["action"].as_str().unwrap()).collect();
    for k in ["insert", "discrepancy_note", "email", "show"] {
        assert!(kinds.contains(&k), "{k} in {saved}");
    }
    let audit = actions(&t).await;
    let inserted = audit.iter().find(|r| r["action"] == "item_data.inserted_by_rule").unwrap();
    assert!(inserted["entity_id"].as_str().unwrap().ends_with("/I_ADVER_WEIGHT"), "{inserted}");
    assert!(inserted["reason"].as_str().unwrap().contains("R_AE_WEIGHT_EMPTY"), "{inserted}");
    let admin = t.key("demo_admin").await;
    let (_, out) = t.get(&admin, "/api/v1/outbox").await;
    let safety = |out: &Value| {
        out["messages"].as_array().unwrap().iter().filter(|m| m["to"] == "safety@demo.casebook.invalid").count()
    };
    assert_eq!(safety(&out), 1, "{out}");

    // Saving again without changing the serious event repeats neither note nor e-mail.
    let version = saved["form"]["version"].as_i64().unwrap();
    let (s, saved) = t
        .send(
            &crc,
            Method::PUT,
            &ae,
            json!({"expected_version": version, "values": [{"item": "COMMENTS", "value": "Seen in A&E"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    let (_, notes) = t.get(&dm, &format!("/api/v1/studies/S_DEMO/notes?participant={label}&item=I_ADVER_AE_SER")).await;
    assert_eq!(notes["total"], 1, "{notes}");
    let (_, out) = t.get(&admin, "/api/v1/outbox").await;
    assert_eq!(safety(&out), 1, "{out}");
}

both!(the_demo_data_shows_the_rules_at_work, demo_t);
async fn demo_t(t: TestApp) {
    assert_eq!(t.app.seed_demo_data().await.unwrap(), 8);
    let dm = t.key("demo_dm").await;
    let (_, notes) = t.get(&dm, "/api/v1/studies/S_DEMO/notes?type=failed_validation_check").await;
    assert!(
        notes["threads"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["description"].as_str().unwrap().starts_with("Serious adverse event")),
        "{notes}"
    );
    let audit = actions(&t).await;
    assert!(audit.iter().any(|r| r["action"] == "item_data.inserted_by_rule"), "an inserted value");
    assert!(
        audit.iter().any(|r| r["action"] == "event.scheduled"
            && r["entity_id"].as_str().unwrap().ends_with("/SE_FOLLOWUP[1]")
            && r["reason"].as_str().unwrap_or("").contains("R_VS_SCHEDULE_FOLLOWUP")),
        "a follow-up scheduled by rule"
    );
    // A dry run over the demo data finds nothing new to do.
    let (s, dry) = t.post(&dm, &format!("{RULES}/run"), json!({"dry_run": true})).await;
    assert_eq!(s, StatusCode::OK, "{dry}");
    assert!(
        dry["counts"].as_object().unwrap().keys().all(|k| !k.ends_with("/would_apply") || k.starts_with("event")),
        "{dry}"
    );
}

both!(scheduled_rules_run_once_a_day_after_their_time, schedule_t);
async fn schedule_t(t: TestApp) {
    let dm = t.key("demo_dm").await;
    let crc = t.key("demo_crc").await;
    let (_label, _) = participant_with_baseline(&t, &crc).await;
    let target = r#"<Target Context="OC_RULES_V1">F_VITAL_SIGNS.IG_VITAL_ECG[ALL].I_VITAL_HR</Target>"#;
    assert!(DEMO_RULES.contains(target));
    let xml = DEMO_RULES.replace(target, &format!(r#"{target}<RunOnSchedule Time="10:00"/>"#));
    let (s, out) = import(&t, &dm, &xml, false).await;
    assert_eq!(s, StatusCode::CREATED, "{out}");
    let (_, list) = t.get(&dm, RULES).await;
    let tachy = list["rules"].as_array().unwrap().iter().find(|r| r["rule_oid"] == "R_VS_TACHYCARDIA").unwrap().clone();
    assert_eq!(tachy["schedule"], "10:00", "{list}");
    async fn notes(t: &TestApp, dm: &str) -> i64 {
        t.get(dm, "/api/v1/studies/S_DEMO/notes").await.1["total"].as_i64().unwrap()
    }

    // 09:00: not yet. 10:30: it runs, once.
    assert_eq!(t.app.run_scheduled_rules().await.unwrap(), 0);
    assert_eq!(notes(&t, &dm).await, 0);
    t.clock.advance(time::Duration::minutes(90));
    assert_eq!(t.app.run_scheduled_rules().await.unwrap(), 1);
    assert_eq!(notes(&t, &dm).await, 1);
    assert_eq!(t.app.run_scheduled_rules().await.unwrap(), 0, "once a day");
    // The next day it runs again, without repeating the note on unchanged data.
    t.clock.advance(time::Duration::days(1));
    assert_eq!(t.app.run_scheduled_rules().await.unwrap(), 1);
    assert_eq!(notes(&t, &dm).await, 1);
    let runs = actions(&t).await.iter().filter(|r| r["action"] == "rules.scheduled_run").count();
    assert_eq!(runs, 2);
}

both!(rules_run_in_the_phase_their_actions_ask_for, phase_t);
async fn phase_t(t: TestApp) {
    // Vital signs at baseline are keyed twice; a rule acts only in double data entry.
    let dm = t.key("demo_dm").await;
    let (s, e) = t
        .send(&dm, Method::PUT, "/api/v1/studies/S_DEMO/design/events/SE_BASELINE",
              json!({"name": "Baseline", "type": "scheduled", "forms": [{"form": "F_VITAL_SIGNS", "required": true, "double_data_entry": true}]}))
        .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let (_, p) = t.post(&dm, "/api/v1/studies/S_DEMO/design/publish", json!({})).await;
    let (s, _) = t
        .post(&dm, &format!("/api/v1/studies/S_DEMO/design/versions/{}/promote", p["version"]["number"]), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let xml = r#"<RuleImport>
  <RuleAssignment>
    <Target Context="OC_RULES_V1">SE_BASELINE.F_VITAL_SIGNS.IG_VITAL_VS.I_VITAL_SYS</Target>
    <RuleRef OID="R_DDE_SYS">
      <DiscrepancyNoteAction IfExpressionEvaluates="true">
        <Run AdministrativeDataEntry="false" InitialDataEntry="false" DoubleDataEntry="true" ImportDataEntry="false" Batch="false"/>
        <Message>Systolic above 100 mmHg: checked after double data entry</Message>
      </DiscrepancyNoteAction>
    </RuleRef>
  </RuleAssignment>
  <RuleDef OID="R_DDE_SYS" Name="Systolic above 100"><Expression Context="OC_RULES_V1">I_VITAL_SYS gt 100</Expression></RuleDef>
</RuleImport>"#;
    let (s, out) = import(&t, &dm, xml, false).await;
    assert_eq!(s, StatusCode::CREATED, "{out}");

    let crc = t.key("demo_crc").await;
    let (s, p) = t
        .post(
            &crc,
            "/api/v1/studies/S_DEMO/participants",
            json!({"site": "S_DEMOA", "sex": "m", "date_of_birth": "1970-01-01", "enrolled_on": "2026-10-30"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let label = p["label"].as_str().unwrap().to_owned();
    let base = format!("/api/v1/studies/S_DEMO/participants/{label}");
    t.post(&crc, &format!("{base}/events"), json!({"event": "SE_BASELINE"})).await;
    let form = format!("{base}/events/SE_BASELINE/1/forms/F_VITAL_SIGNS");
    let values = json!([
        {"item": "vs_date", "value": "2026-11-01"}, {"item": "weight", "value": "64"}, {"item": "height", "value": "170"},
        {"item": "sys", "value": "118"}, {"item": "dia", "value": "76"}, {"item": "abnormal", "value": "no"},
        {"item": "ecg_time", "row": 1, "value": "09:30"}, {"item": "hr", "row": 1, "value": "70"}
    ]);
    let (s, saved) = t.send(&crc, Method::PUT, &form, json!({"values": values})).await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    assert!(saved.get("rules").is_none(), "not in initial data entry: {saved}");
    let (s, ide) =
        t.post(&crc, &format!("{form}/complete"), json!({"expected_version": saved["form"]["version"]})).await;
    assert_eq!(s, StatusCode::OK, "{ide}");
    let notes = |v: &Value| v["total"].as_i64().unwrap();
    assert_eq!(notes(&t.get(&dm, "/api/v1/studies/S_DEMO/notes").await.1), 0);

    // The second pass by a colleague, completed: now the rule acts.
    let inv = t.key("demo_investigator").await;
    let (s, cmp) = t.send(&inv, Method::PUT, &format!("{form}/double-entry"), json!({"values": values})).await;
    assert_eq!(s, StatusCode::OK, "{cmp}");
    let (_, book) = t.get(&inv, &base).await;
    let version = book["events"][0]["forms"][0]["version"].as_i64().unwrap();
    let (s, done) = t.post(&inv, &format!("{form}/double-entry/complete"), json!({"expected_version": version})).await;
    assert_eq!(s, StatusCode::OK, "{done}");
    assert_eq!(done["rules"][0]["action"], "discrepancy_note", "{done}");
    let (_, list) = t.get(&dm, "/api/v1/studies/S_DEMO/notes").await;
    assert_eq!(notes(&list), 1, "{list}");
    assert!(list["threads"][0]["description"].as_str().unwrap().starts_with("Systolic above 100"), "{list}");
}
