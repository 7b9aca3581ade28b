//! The participant matrix over the API: cursor paging returns everyone once and in order,
//! filters and sorts, site users see (and count) only their sites, cells follow data entry,
//! bad parameters are named; on SQLite and PostgreSQL.

use crate::{TestApp, both};
use casebook_store::Db;
use reqwest::{Method, StatusCode};
use serde_json::json;

const MATRIX: &str = "/api/v1/studies/S_DEMO/matrix";

/// Enrols a participant over the API; returns its ID.
async fn enrol(t: &TestApp, key: &str, site: &str, label: Option<&str>, enrolled_on: &str) -> String {
    let mut body = json!({"site": site, "sex": "f", "date_of_birth": "1980-04-02", "enrolled_on": enrolled_on});
    if let Some(l) = label {
        body["label"] = json!(l);
    }
    let (s, p) = t.post(key, "/api/v1/studies/S_DEMO/participants", body).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    p["label"].as_str().unwrap().to_owned()
}

/// Every page of a matrix query, following `next`: (labels in order, totals seen, pages).
async fn walk(t: &TestApp, key: &str, query: &str) -> (Vec<String>, Vec<i64>, usize) {
    let mut labels = Vec::new();
    let mut totals = Vec::new();
    let mut pages = 0;
    let mut after: Option<String> = None;
    loop {
        let cursor = after.as_deref().map(|c| format!("&after={c}")).unwrap_or_default();
        let (s, page) = t.get(key, &format!("{MATRIX}?{query}{cursor}")).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        pages += 1;
        labels.extend(page["rows"].as_array().unwrap().iter().map(|r| r["label"].as_str().unwrap().to_owned()));
        totals.push(page["total"].as_i64().unwrap());
        match page["next"].as_str() {
            Some(c) => after = Some(c.to_owned()),
            None => break,
        }
        assert!(pages < 100, "paging does not end");
    }
    (labels, totals, pages)
}

/// 13 participants at DEMO-A (11 automatic IDs, two manual ones in another case), 4 at DEMO-B,
/// enrolled on different days.
async fn population(t: &TestApp) -> (Vec<String>, Vec<String>) {
    let crc = t.key("demo_crc").await;
    let crc_b = t.key("demo_crc_b").await;
    let mut a = Vec::new();
    let mut b = Vec::new();
    for i in 0..11 {
        a.push(enrol(t, &crc, "S_DEMOA", None, &format!("2026-03-{:02}", 20 - i)).await);
    }
    a.push(enrol(t, &crc, "S_DEMOA", Some("alpha-7"), "2026-01-05").await);
    a.push(enrol(t, &crc, "S_DEMOA", Some("Alpha-10"), "2026-01-05").await);
    for i in 0..4 {
        b.push(enrol(t, &crc_b, "S_DEMOB", None, &format!("2026-02-{:02}", 10 + i)).await);
    }
    (a, b)
}

fn by_key(labels: &[String]) -> Vec<String> {
    let mut v = labels.to_vec();
    v.sort_by_key(|l| l.to_lowercase());
    v
}

both!(paging_returns_everyone_once_in_order, paging_t);
async fn paging_t(t: TestApp) {
    let (a, b) = population(&t).await;
    let all: Vec<String> = a.iter().chain(&b).cloned().collect();
    let monitor = t.key("demo_monitor").await;

    // By ID, 4 a page: 17 participants in 5 pages, each once, in case-insensitive ID order.
    let (labels, totals, pages) = walk(&t, &monitor, "page_size=4").await;
    assert_eq!(labels, by_key(&all));
    assert_eq!(pages, 5);
    assert!(totals.iter().all(|n| *n == 17), "{totals:?}");

    // Descending, and a page size that divides the total: the last page has no `next`.
    let (labels, _, pages) = walk(&t, &monitor, "sort=-label&page_size=17").await;
    let mut desc = by_key(&all);
    desc.reverse();
    assert_eq!((labels, pages), (desc, 1));

    // By enrolment date, ties broken by ID; and the reverse.
    let (labels, _, _) = walk(&t, &monitor, "sort=enrolled&page_size=3").await;
    let (_, page) = t.get(&monitor, &format!("{MATRIX}?page_size=100")).await;
    let mut expected: Vec<(String, String)> = page["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["enrolled_on"].as_str().unwrap().to_owned(), r["label"].as_str().unwrap().to_owned()))
        .collect();
    expected.sort_by_key(|(d, l)| (d.clone(), l.to_lowercase()));
    assert_eq!(labels, expected.iter().map(|(_, l)| l.clone()).collect::<Vec<_>>());
    assert_eq!(labels[..2], ["Alpha-10".to_owned(), "alpha-7".to_owned()]);
    let (mut rev, _, _) = walk(&t, &monitor, "sort=-enrolled&page_size=5").await;
    rev.reverse();
    assert_eq!(rev, labels);

    // By site: DEMO-A's participants, then DEMO-B's, each by ID.
    let (labels, _, _) = walk(&t, &monitor, "sort=site&page_size=6").await;
    assert_eq!(labels, [by_key(&a), by_key(&b)].concat());
}

both!(filters_narrow_the_rows_and_the_total, filters_t);
async fn filters_t(t: TestApp) {
    let (a, b) = population(&t).await;
    let monitor = t.key("demo_monitor").await;

    let (s, page) = t.get(&monitor, &format!("{MATRIX}?site=S_DEMOB")).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_eq!(page["total"], 4);
    assert!(page["rows"].as_array().unwrap().iter().all(|r| r["site_oid"] == "S_DEMOB"), "{page}");

    // The ID prefix is case-insensitive.
    let (labels, totals, _) = walk(&t, &monitor, "q=ALPHA").await;
    assert_eq!((labels, totals[0]), (vec!["Alpha-10".to_owned(), "alpha-7".to_owned()], 2));
    let (labels, _, _) = walk(&t, &monitor, "q=demo-b&sort=-label").await;
    let mut expected = by_key(&b);
    expected.reverse();
    assert_eq!(labels, expected);

    // Removed participants are hidden unless asked for. (No use case removes participants
    // yet, so the test marks one removed in the database.)
    let removed = a[3].clone();
    let n = match t.app.store().db() {
        Db::Sqlite(p) => sqlx::query("UPDATE participants SET status = 'removed' WHERE label = $1")
            .bind(&removed)
            .execute(p)
            .await
            .unwrap()
            .rows_affected(),
        Db::Postgres(p) => sqlx::query("UPDATE participants SET status = 'removed' WHERE label = $1")
            .bind(&removed)
            .execute(p)
            .await
            .unwrap()
            .rows_affected(),
    };
    assert_eq!(n, 1);
    let (labels, totals, _) = walk(&t, &monitor, "page_size=50").await;
    assert!(!labels.contains(&removed));
    assert_eq!(totals[0], 16);
    let (labels, _, _) = walk(&t, &monitor, "status=removed").await;
    assert_eq!(labels, vec![removed.clone()]);
    let (s, page) = t.get(&monitor, &format!("{MATRIX}?status=removed")).await;
    assert_eq!((s, page["rows"][0]["status"].as_str()), (StatusCode::OK, Some("removed")));
    let (_, totals, _) = walk(&t, &monitor, "status=available,removed").await;
    assert_eq!(totals[0], 17);
    let (_, totals, _) = walk(&t, &monitor, "status=signed").await;
    assert_eq!(totals[0], 0);
}

both!(site_users_see_and_count_only_their_sites, visibility_t);
async fn visibility_t(t: TestApp) {
    let (_, b) = population(&t).await;
    let crc_b = t.key("demo_crc_b").await;
    let (labels, totals, _) = walk(&t, &crc_b, "page_size=2").await;
    assert_eq!(labels, by_key(&b));
    assert!(totals.iter().all(|n| *n == 4), "DEMO-A rows are not counted: {totals:?}");
    let (labels, totals, _) = walk(&t, &crc_b, "q=demo-a").await;
    assert_eq!((labels.len(), totals[0]), (0, 0));
    let (_, page) = t.get(&crc_b, &format!("{MATRIX}?sort=site&page_size=100")).await;
    assert!(page["rows"].as_array().unwrap().iter().all(|r| r["site_oid"] == "S_DEMOB"), "{page}");

    // Asking for DEMO-A is answered as for a site that does not exist: nothing leaks.
    let (s, hidden) = t.get(&crc_b, &format!("{MATRIX}?site=S_DEMOA")).await;
    let (s2, missing) = t.get(&crc_b, &format!("{MATRIX}?site=S_NOPE")).await;
    assert_eq!((s, s2), (StatusCode::UNPROCESSABLE_ENTITY, StatusCode::UNPROCESSABLE_ENTITY));
    assert_eq!(
        hidden["message"].as_str().unwrap().replace("S_DEMOA", "X"),
        missing["message"].as_str().unwrap().replace("S_NOPE", "X")
    );

    // Administrators see every site.
    let admin = t.key("demo_admin").await;
    let (s, page) = t.get(&admin, MATRIX).await;
    assert_eq!((s, page["total"].as_i64()), (StatusCode::OK, Some(17)), "administrators see every site");
}

both!(cells_follow_data_entry, cells_t);
async fn cells_t(t: TestApp) {
    let crc = t.key("demo_crc").await;
    let first = enrol(&t, &crc, "S_DEMOA", None, "2026-01-10").await;
    let second = enrol(&t, &crc, "S_DEMOA", None, "2026-01-11").await;
    let events = |label: &str| format!("/api/v1/studies/S_DEMO/participants/{label}/events");
    for e in ["SE_BASELINE", "SE_FOLLOWUP", "SE_FOLLOWUP"] {
        let (s, ev) = t.post(&crc, &events(&first), json!({"event": e})).await;
        assert_eq!(s, StatusCode::CREATED, "{ev}");
    }

    // The columns are the design's events in design order.
    let (s, page) = t.get(&crc, MATRIX).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let columns: Vec<(&str, bool)> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["oid"].as_str().unwrap(), e["repeating"].as_bool().unwrap()))
        .collect();
    assert_eq!(columns, [("SE_BASELINE", false), ("SE_FOLLOWUP", true), ("SE_ADVERSEEVENTS", true)]);
    assert_eq!(page["events"][0]["name"], "Baseline");
    let row = &page["rows"][0];
    assert_eq!(row["label"], first.as_str());
    assert_eq!(
        row["events"]["SE_BASELINE"],
        json!([{"repeat_key": 1, "status": "scheduled", "forms_complete": 0, "forms_started": 0}])
    );
    let keys: Vec<i64> =
        row["events"]["SE_FOLLOWUP"].as_array().unwrap().iter().map(|c| c["repeat_key"].as_i64().unwrap()).collect();
    assert_eq!(keys, [1, 2]);
    assert_eq!(page["rows"][1]["events"], json!({}), "{page}");

    // A save starts the form and the event; completing the form completes the event.
    let form = format!("/api/v1/studies/S_DEMO/participants/{first}/events/SE_BASELINE/1/forms/F_VITAL_SIGNS");
    let (s, saved) = t
        .send(
            &crc,
            Method::PUT,
            &form,
            json!({"values": [
                {"item": "vs_date", "value": "2026-01-10"}, {"item": "weight", "value": "72.5"},
                {"item": "height", "value": "180"}, {"item": "sys", "value": "120"}, {"item": "dia", "value": "80"},
                {"item": "abnormal", "value": "no"}
            ]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    let (_, page) = t.get(&crc, &format!("{MATRIX}?q={first}")).await;
    assert_eq!(
        page["rows"][0]["events"]["SE_BASELINE"],
        json!([{"repeat_key": 1, "status": "data_entry_started", "forms_complete": 0, "forms_started": 1}])
    );
    assert_eq!(page["rows"][0]["events"]["SE_FOLLOWUP"][0]["forms_started"], 0);

    // Event filters: who has Baseline started, who has not had it scheduled.
    let (labels, _, _) = walk(&t, &crc, "event=SE_BASELINE&event_status=data_entry_started").await;
    assert_eq!(labels, vec![first.clone()]);
    let (labels, _, _) = walk(&t, &crc, "event=SE_BASELINE&event_status=not_scheduled").await;
    assert_eq!(labels, vec![second.clone()]);
    let (labels, _, _) = walk(&t, &crc, "event=SE_FOLLOWUP").await;
    assert_eq!(labels, vec![first.clone()]);

    let version = saved["form"]["version"].as_i64().unwrap();
    let (s, done) = t.post(&crc, &format!("{form}/complete"), json!({"expected_version": version})).await;
    assert_eq!(s, StatusCode::OK, "{done}");
    let (_, page) = t.get(&crc, &format!("{MATRIX}?q={first}")).await;
    assert_eq!(
        page["rows"][0]["events"]["SE_BASELINE"],
        json!([{"repeat_key": 1, "status": "completed", "forms_complete": 1, "forms_started": 1}])
    );
    let (labels, _, _) = walk(&t, &crc, "event_status=completed").await;
    assert_eq!(labels, vec![first]);
}

both!(bad_parameters_are_named, bad_params_t);
async fn bad_params_t(t: TestApp) {
    let (_, _) = population(&t).await;
    let dm = t.key("demo_dm").await;
    let bad = |q: &'static str| {
        let t = &t;
        let dm = dm.clone();
        async move {
            let (s, e) = t.get(&dm, &format!("{MATRIX}?{q}")).await;
            assert_eq!(
                (s, e["code"].as_str()),
                (StatusCode::UNPROCESSABLE_ENTITY, Some("validation_failed")),
                "{q}: {e}"
            );
            e
        }
    };
    let e = bad("sort=age").await;
    assert!(e["message"].as_str().unwrap().contains("label, -label, enrolled, -enrolled, site"), "{e}");
    assert_eq!(e["details"]["fields"][0]["field"], "sort");

    // Every problem at once.
    let e = bad("status=gone&page_size=0&event_status=done").await;
    let fields: Vec<&str> =
        e["details"]["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["status", "event_status", "page_size"], "{e}");

    for q in [
        "page_size=501",
        "page_size=ten",
        "after=nonsense",
        "event=SE_NOPE",
        "event_status=not_scheduled",
        "limit=10",
        "sort=label&sort=site",
    ] {
        bad(q).await;
    }

    // A cursor continues only the sort it came from.
    let (_, page) = t.get(&dm, &format!("{MATRIX}?sort=enrolled&page_size=2")).await;
    let cursor = page["next"].as_str().unwrap().to_owned();
    let (s, e) = t.get(&dm, &format!("{MATRIX}?sort=label&after={cursor}")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e["message"].as_str().unwrap().contains("sort=enrolled"), "{e}");
    let (s, _) = t.get(&dm, &format!("{MATRIX}?sort=enrolled&after={cursor}")).await;
    assert_eq!(s, StatusCode::OK);

    // An unknown study is not found; a missing key is unauthenticated.
    let (s, _) = t.get(&dm, "/api/v1/studies/S_NOPE/matrix").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let r = crate::client().get(t.url(MATRIX)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}
