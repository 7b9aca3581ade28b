//! Discrepancy notes over the API: who opens which type, the query workflow per role, notes on
//! participant, event and form fields, lists with filters and CSV, site isolation, the outbox and
//! the audit; on both databases.

use crate::{TestApp, both};
use reqwest::StatusCode;
use serde_json::{Value, json};

const NOTES: &str = "/api/v1/studies/S_DEMO/notes";

/// A DEMO-A participant with the baseline vital signs started by the CRC; returns its label.
async fn participant_with_vitals(t: &TestApp, crc: &str) -> String {
    let (s, p) = t
        .post(
            crc,
            "/api/v1/studies/S_DEMO/participants",
            json!({"site": "S_DEMOA", "sex": "f", "date_of_birth": "1980-05-05", "enrolled_on": "2026-01-10"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let label = p["label"].as_str().unwrap().to_owned();
    let base = format!("/api/v1/studies/S_DEMO/participants/{label}");
    let (s, e) = t.post(crc, &format!("{base}/events"), json!({"event": "SE_BASELINE"})).await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    let (s, e) = t
        .send(
            crc,
            reqwest::Method::PUT,
            &format!("{base}/events/SE_BASELINE/1/forms/F_VITAL_SIGNS"),
            json!({"values": [{"item": "weight", "value": "64"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    label
}

pub(crate) fn query_on_weight(label: &str, description: &str) -> Value {
    json!({"participant": label, "event": "SE_BASELINE", "form": "F_VITAL_SIGNS", "item": "weight",
           "type": "query", "description": description})
}

async fn reply(t: &TestApp, key: &str, id: i64, body: Value) -> (StatusCode, Value) {
    t.post(key, &format!("{NOTES}/{id}/replies"), body).await
}

both!(the_query_workflow_follows_each_role, workflow_t);
async fn workflow_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    let monitor = t.key("demo_site_monitor").await;
    let label = participant_with_vitals(&t, &crc).await;

    // Site staff do not raise queries; monitors raise only queries.
    let (s, _) = t.post(&crc, NOTES, query_on_weight(&label, "?")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let mut annotation = query_on_weight(&label, "fine");
    annotation["type"] = json!("annotation");
    let (s, _) = t.post(&monitor, NOTES, annotation).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // The monitor's query goes to the form's owner.
    let (s, q) = t.post(&monitor, NOTES, query_on_weight(&label, "Source says 46 kg")).await;
    assert_eq!(s, StatusCode::CREATED, "{q}");
    assert_eq!((q["status"].as_str(), q["assigned_to"].as_str()), (Some("new"), Some("demo_crc")), "{q}");
    assert!(
        q["entity_key"].as_str().unwrap().ends_with("/SE_BASELINE[1]/F_VITAL_SIGNS/IG_VITAL_VS[1]/I_VITAL_WEIGHT"),
        "{q}"
    );
    assert_eq!(q["notes"].as_array().unwrap().len(), 1, "{q}");
    let id = q["id"].as_i64().unwrap();

    // The CRC answers: a proposed resolution, back to the monitor. The CRC may not close it.
    let (s, r) = reply(&t, &crc, id, json!({"description": "Transcription error, corrected to 46"})).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(
        (r["status"].as_str(), r["assigned_to"].as_str()),
        (Some("resolution_proposed"), Some("demo_site_monitor")),
        "{r}"
    );
    let (s, e) = reply(&t, &crc, id, json!({"description": "done", "status": "closed"})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");

    // The monitor's reply closes it by default; the CRC cannot reopen it, the monitor can.
    t.clock.advance(time::Duration::hours(2));
    let (s, r) = reply(&t, &monitor, id, json!({"description": "Verified against source"})).await;
    assert_eq!((s, r["status"].as_str()), (StatusCode::OK, Some("closed")), "{r}");
    assert_eq!(r["closed_at"], "2026-11-22T11:00:00Z", "{r}");
    let (s, e) = reply(&t, &crc, id, json!({"description": "one more thing", "status": "updated"})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert!(e["message"].as_str().unwrap().contains("reopen"), "{e}");
    let (s, e) = reply(&t, &monitor, id, json!({"description": "again", "status": "resolution_proposed"})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    let (s, r) =
        reply(&t, &monitor, id, json!({"description": "Reopened: the unit is wrong", "status": "updated"})).await;
    assert_eq!((s, r["status"].as_str(), &r["closed_at"]), (StatusCode::OK, Some("updated"), &Value::Null), "{r}");

    // The thread keeps every note with its author and status.
    let (_, thread) = t.get(&crc, &format!("{NOTES}/{id}")).await;
    let notes: Vec<(&str, &str)> = thread["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["author"].as_str().unwrap(), n["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        notes,
        [
            ("demo_site_monitor", "new"),
            ("demo_crc", "resolution_proposed"),
            ("demo_site_monitor", "closed"),
            ("demo_site_monitor", "updated")
        ]
    );
    assert_eq!(thread["messages"], 4, "{thread}");

    // Unknown statuses and empty descriptions are named.
    let (s, e) = reply(&t, &monitor, id, json!({"description": " ", "status": "done"})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e.to_string().contains("description") && e.to_string().contains("'done'"), "{e}");

    // Assignees were told by e-mail (kept in the outbox without a mail server); only
    // administrators read the outbox.
    let (s, _) = t.get(&crc, "/api/v1/outbox").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let admin = t.key("demo_admin").await;
    let (s, out) = t.get(&admin, "/api/v1/outbox").await;
    assert_eq!(s, StatusCode::OK, "{out}");
    let to: Vec<&str> = out["messages"].as_array().unwrap().iter().map(|m| m["to"].as_str().unwrap()).collect();
    assert!(to.contains(&"demo_crc@demo.casebook.invalid"), "{out}");
    assert!(to.contains(&"demo_site_monitor@demo.casebook.invalid"), "{out}");
    assert!(out["messages"].as_array().unwrap().iter().all(|m| m["status"] == "queued"), "{out}");
    assert!(out["messages"][0]["subject"].as_str().unwrap().contains(&format!("DN_{id}")), "{out}");

    // Every step is audited.
    let dm = t.key("demo_dm").await;
    let (_, audit) = t.get(&dm, "/api/v1/studies/S_DEMO/audit?limit=1000").await;
    let actions: Vec<&str> = audit["records"].as_array().unwrap().iter().filter_map(|r| r["action"].as_str()).collect();
    assert_eq!(actions.iter().filter(|a| **a == "note.created").count(), 1, "{actions:?}");
    assert_eq!(actions.iter().filter(|a| **a == "note.replied").count(), 3, "{actions:?}");
}

both!(notes_on_fields_lists_and_isolation, fields_t);
async fn fields_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    let dm = t.key("demo_dm").await;
    let label = participant_with_vitals(&t, &crc).await;

    // An annotation on the participant's date of birth has no workflow.
    let (s, a) = t
        .post(
            &crc,
            NOTES,
            json!({"participant": label, "column": "date_of_birth", "type": "annotation",
                                   "description": "DOB from the hospital record"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!((a["entity_type"].as_str(), a["status"].as_str()), (Some("participant"), Some("not_applicable")), "{a}");
    assert_eq!(a["assigned_to"], Value::Null, "{a}");
    let (s, e) = reply(&t, &dm, a["id"].as_i64().unwrap(), json!({"description": "ok", "status": "closed"})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");

    // A data manager's query on the event's location.
    let (s, q) = t
        .post(
            &dm,
            NOTES,
            json!({"participant": label, "event": "SE_BASELINE", "column": "location",
                                  "type": "query", "description": "Which clinic?", "assigned_to": "demo_investigator"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{q}");
    assert_eq!((q["entity_type"].as_str(), q["column"].as_str()), (Some("event"), Some("location")), "{q}");
    assert_eq!(q["assigned_to"], "demo_investigator", "{q}");

    // Bad input is named, and nothing is stored.
    let bad = [
        (
            json!({"participant": label, "column": "shoe_size", "type": "annotation", "description": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "shoe_size",
        ),
        (
            json!({"participant": label, "column": "sex", "type": "bogus", "description": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bogus",
        ),
        (
            json!({"participant": label, "column": "sex", "type": "annotation", "description": ""}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "description",
        ),
        (
            json!({"participant": label, "event": "SE_BASELINE", "item": "weight", "type": "annotation", "description": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "form",
        ),
        (
            json!({"participant": label, "event": "SE_BASELINE", "form": "F_VITAL_SIGNS", "item": "nope", "type": "annotation", "description": "x"}),
            StatusCode::NOT_FOUND,
            "item",
        ),
        (
            json!({"participant": label, "event": "SE_FOLLOWUP", "column": "location", "type": "annotation", "description": "x"}),
            StatusCode::NOT_FOUND,
            "event",
        ),
        (
            json!({"participant": label, "column": "sex", "type": "annotation", "description": "x", "assigned_to": "demo_crc_b"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "demo_crc_b",
        ),
        (
            json!({"participant": "NOPE-9", "column": "sex", "type": "annotation", "description": "x"}),
            StatusCode::NOT_FOUND,
            "participant",
        ),
    ];
    for (body, status, named) in bad {
        let (s, e) = t.post(&crc, NOTES, body.clone()).await;
        assert_eq!(s, status, "{body} -> {e}");
        assert!(e.to_string().contains(named), "{body} -> {e}");
    }
    let (_, all) = t.get(&dm, NOTES).await;
    assert_eq!(all["total"], 2, "{all}");

    // Lists filter by status, type, assignee and age, with counts.
    let (_, open) = t.get(&dm, &format!("{NOTES}?status=open")).await;
    assert_eq!(open["total"], 1, "{open}");
    assert_eq!(open["counts"], json!({"new": 1}), "{open}");
    let (_, mine) = t.get(&t.key("demo_investigator").await, &format!("{NOTES}?assignee=me")).await;
    assert_eq!(mine["threads"][0]["description"], "Which clinic?", "{mine}");
    let (_, annotations) = t.get(&dm, &format!("{NOTES}?type=annotation&participant={label}")).await;
    assert_eq!(annotations["total"], 1, "{annotations}");
    t.clock.advance(time::Duration::days(3));
    let (_, old) = t.get(&dm, &format!("{NOTES}?min_age_days=2")).await;
    assert_eq!(old["total"], 2, "{old}");
    assert_eq!(old["threads"][1]["days_open"], 3, "{old}");
    let (_, young) = t.get(&dm, &format!("{NOTES}?max_age_days=1")).await;
    assert_eq!(young["total"], 0, "{young}");
    let (s, e) = t.get(&dm, &format!("{NOTES}?status=pending&limit=0")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e.to_string().contains("pending") && e.to_string().contains("limit"), "{e}");
    let (s, _) = t.get(&dm, &format!("{NOTES}?colour=red")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, page) = t.get(&dm, &format!("{NOTES}?limit=1")).await;
    assert_eq!((page["threads"].as_array().unwrap().len(), page["next_offset"].as_i64()), (1, Some(1)), "{page}");

    // The participant matrix flags the open thread.
    let (_, m) = t.get(&dm, &format!("/api/v1/studies/S_DEMO/matrix?q={label}")).await;
    assert_eq!(m["rows"][0]["open_notes"], 1, "{m}");

    // CSV of the same selection.
    let r = crate::client().get(t.url(&format!("{NOTES}.csv?status=open"))).bearer_auth(&dm).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let body = r.text().await.unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 2, "{body}");
    assert!(lines[0].starts_with("id,participant,site,"), "{body}");
    assert!(lines[1].contains("Which clinic?") && lines[1].contains("location") && lines[1].contains(&label), "{body}");

    // Another site's staff see none of it.
    let crc_b = t.key("demo_crc_b").await;
    let (_, theirs) = t.get(&crc_b, NOTES).await;
    assert_eq!(theirs["total"], 0, "{theirs}");
    let (s, _) = t.get(&crc_b, &format!("{NOTES}/{}", q["id"])).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = reply(&t, &crc_b, q["id"].as_i64().unwrap(), json!({"description": "x"})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// A minimal SMTP server on 127.0.0.1:0 that accepts every message and keeps its text.
async fn smtp_sink() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = got.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::new(r);
            w.write_all(b"220 sink ready\r\n").await.unwrap();
            let mut data: Option<String> = None;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                    break;
                }
                if let Some(d) = data.as_mut() {
                    if line == ".\r\n" {
                        keep.lock().unwrap().push(data.take().unwrap());
                        w.write_all(b"250 queued\r\n").await.unwrap();
                    } else {
                        d.push_str(&line);
                    }
                    continue;
                }
                let reply: &[u8] = match line.get(..4).unwrap_or("") {
                    "EHLO" => b"250-sink\r\n250 8BITMIME\r\n",
                    "DATA" => {
                        data = Some(String::new());
                        b"354 go on\r\n"
                    }
                    "QUIT" => b"221 bye\r\n",
                    _ => b"250 ok\r\n",
                };
                w.write_all(reply).await.unwrap();
                if line.starts_with("QUIT") {
                    break;
                }
            }
        }
    });
    (port, got)
}

both!(notifications_go_out_through_smtp_and_failures_are_kept, smtp_t);
async fn smtp_t(t: TestApp) {
    use casebook_app::mail::{Delivery, MailSettings};
    let crc = t.key("demo_crc").await;
    let monitor = t.key("demo_site_monitor").await;
    let admin = t.key("demo_admin").await;
    let label = participant_with_vitals(&t, &crc).await;
    let (s, q) = t.post(&monitor, NOTES, query_on_weight(&label, "Source says 46 kg")).await;
    assert_eq!(s, StatusCode::CREATED, "{q}");

    // Without a relay nothing is sent, and the message stays queued.
    let none = t.app.deliver_outbox(&MailSettings::default()).await.unwrap();
    assert_eq!(none, Delivery::default());

    let (port, got) = smtp_sink().await;
    let relay = MailSettings { smtp_host: "127.0.0.1".into(), smtp_port: port, ..MailSettings::default() };
    let d = t.app.deliver_outbox(&relay).await.unwrap();
    assert_eq!(d, Delivery { sent: 1, retrying: 0, failed: 0 });
    let mails = got.lock().unwrap().clone();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(mails[0].contains("To: demo_crc@demo.casebook.invalid\r\n"), "{}", mails[0]);
    assert!(
        mails[0].contains(&format!("Subject: [Casebook] Query DN_{} assigned to you (New)", q["id"])),
        "{}",
        mails[0]
    );
    assert!(mails[0].contains("Source says 46 kg"), "{}", mails[0]);
    let (_, out) = t.get(&admin, "/api/v1/outbox").await;
    assert_eq!(out["messages"][0]["status"], "sent", "{out}");
    assert_eq!(t.app.deliver_outbox(&relay).await.unwrap(), Delivery::default(), "sent once only");

    // A relay that is down: retried, then marked failed with the reason; never dropped.
    let (s, _) = t.post(&crc, &format!("{NOTES}/{}/replies", q["id"]), json!({"description": "Corrected"})).await;
    assert_eq!(s, StatusCode::OK);
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let down = MailSettings { smtp_port: dead_port, max_attempts: 2, timeout_seconds: 2, ..relay };
    assert_eq!(t.app.deliver_outbox(&down).await.unwrap(), Delivery { sent: 0, retrying: 1, failed: 0 });
    assert_eq!(t.app.deliver_outbox(&down).await.unwrap(), Delivery { sent: 0, retrying: 0, failed: 1 });
    let (_, out) = t.get(&admin, "/api/v1/outbox").await;
    let last = &out["messages"][0];
    assert_eq!((last["status"].as_str(), last["attempts"].as_i64()), (Some("failed"), Some(2)), "{out}");
    assert!(last["last_error"].as_str().unwrap().contains("connecting"), "{out}");
    assert_eq!(last["to"], "demo_site_monitor@demo.casebook.invalid", "{out}");
}

// Every demo role: who opens which type, and who sets which status in a reply to a new query.
both!(every_role_opens_and_sets_what_openclinica_allows, roles_t);
async fn roles_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    let dm = t.key("demo_dm").await;
    let label = participant_with_vitals(&t, &crc).await;
    // (user, opens [failed_validation_check, annotation, query, reason_for_change],
    //  sets [new, updated, resolution_proposed, closed])
    let table: [(&str, [bool; 4], [bool; 4]); 9] = [
        ("demo_dm", [true, true, true, true], [true, true, true, true]),
        ("demo_director", [true, true, true, true], [true, true, true, true]),
        ("demo_specialist", [true, true, false, true], [false, true, true, false]),
        ("demo_entry", [true, true, false, true], [false, true, true, false]),
        ("demo_monitor", [false, false, true, false], [true, true, false, true]),
        ("demo_investigator", [true, true, false, true], [false, true, true, false]),
        ("demo_crc", [true, true, false, true], [false, true, true, false]),
        ("demo_site_monitor", [false, false, true, false], [true, true, false, true]),
        ("demo_site_entry", [true, true, false, true], [false, true, true, false]),
    ];
    let types = ["failed_validation_check", "annotation", "query", "reason_for_change"];
    let statuses = ["new", "updated", "resolution_proposed", "closed"];
    for (user, opens, sets) in table {
        let key = t.key(user).await;
        for (ty, expected) in types.iter().zip(opens) {
            let mut body = query_on_weight(&label, &format!("{user} opens {ty}"));
            body["type"] = json!(ty);
            let (s, e) = t.post(&key, NOTES, body).await;
            let want = if expected { StatusCode::CREATED } else { StatusCode::FORBIDDEN };
            assert_eq!(s, want, "{user} opening {ty}: {e}");
        }
        for (status, expected) in statuses.iter().zip(sets) {
            let (s, q) = t.post(&dm, NOTES, query_on_weight(&label, "a new query")).await;
            assert_eq!(s, StatusCode::CREATED, "{q}");
            let (s, e) =
                reply(&t, &key, q["id"].as_i64().unwrap(), json!({"description": "reply", "status": status})).await;
            let want = if expected { StatusCode::OK } else { StatusCode::FORBIDDEN };
            assert_eq!(s, want, "{user} setting {status}: {e}");
        }
    }
}

// A form hidden from sites: site staff cannot write notes on it (as if it did not exist).
both!(notes_on_a_form_hidden_from_sites_are_refused_to_site_staff, hidden_t);
async fn hidden_t(t: TestApp) {
    let dm = t.key("demo_dm").await;
    let (s, e) = t
        .send(&dm, reqwest::Method::PUT, "/api/v1/studies/S_DEMO/design/events/SE_BASELINE",
              json!({"name": "Baseline", "type": "scheduled", "forms": [{"form": "F_VITAL_SIGNS", "hidden_from_sites": true}]}))
        .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let (_, p) = t.post(&dm, "/api/v1/studies/S_DEMO/design/publish", json!({})).await;
    let (s, _) = t
        .post(&dm, &format!("/api/v1/studies/S_DEMO/design/versions/{}/promote", p["version"]["number"]), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let label = participant_with_vitals(&t, &dm).await;
    let crc = t.key("demo_crc").await;
    let mut annotation = query_on_weight(&label, "seen");
    annotation["type"] = json!("annotation");
    let (s, e) = t.post(&crc, NOTES, annotation).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    let (s, q) = t.post(&dm, NOTES, query_on_weight(&label, "Check the weight")).await;
    assert_eq!(s, StatusCode::CREATED, "{q}");
    let id = q["id"].as_i64().unwrap();

    // Study staff list it; site staff see neither the thread, nor it counted, nor it in the CSV.
    let (_, all) = t.get(&dm, &format!("{NOTES}?participant={label}")).await;
    assert_eq!(all["total"], 1, "{all}");
    assert_eq!(all["threads"][0]["id"], id);
    let (s, site) = t.get(&crc, &format!("{NOTES}?participant={label}")).await;
    assert_eq!(s, StatusCode::OK, "{site}");
    assert_eq!(site["total"], 0, "a thread on a hidden form is listed to site staff: {site}");
    assert!(site["threads"].as_array().unwrap().is_empty(), "{site}");
    let (s, _) = t.get(&crc, &format!("{NOTES}/{id}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = t.get(&dm, &format!("{NOTES}/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    let (_, csv) = crate::clinical::get_text(&t, &crc, &format!("{NOTES}.csv?participant={label}")).await;
    assert!(!csv.contains("Check the weight"), "{csv}");
    let (_, csv) = crate::clinical::get_text(&t, &dm, &format!("{NOTES}.csv?participant={label}")).await;
    assert!(csv.contains("Check the weight"), "{csv}");
}
