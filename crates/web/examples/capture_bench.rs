//! Data capture benchmark: a study of N participants (default 10,000) × 10 events × 5 forms ×
//! 20 items, on SQLite and on PostgreSQL, measuring what users wait for — a form save, a page of
//! the participant matrix (alone and with 50 clients at once, over real HTTP), a casebook read,
//! a batch run of 20 rules over every participant — each next to a raw baseline measured in the
//! same run on the same database.
//!
//! ```sh
//! cargo run --release -p casebook-web --example capture_bench -- --participants 10000
//! cargo run --release -p casebook-web --example capture_bench -- --participants 500 --backend sqlite
//! ```
//!
//! The design goes through the real use cases (XLSForm uploads, events, publish, promote).
//! Participants, events, forms and values are bulk-inserted with set-based SQL for set-up speed
//! (every participant has all 10 events scheduled; participant *i* has `i mod 11` of them
//! completed with every form, the next one started with two forms: about half the values of a
//! full casebook, 5 M values at 10,000 participants, the size of a Phase III trial). Everything
//! measured goes through the app's use cases or HTTP.
//!
//! Like the integration tests' set-up, this program talks SQL itself: to create and drop its
//! PostgreSQL database, to bulk-load, and for the raw baselines, which by definition bypass
//! Casebook. Casebook's own code keeps all SQL in `store`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)] // a measuring program: set-up failures abort it

use std::sync::Arc;
use std::time::{Duration, Instant};

use casebook_app::auth::Principal;
use casebook_app::design::{EventFormInput, EventInput, Which};
use casebook_app::entry::{SaveFormInput, ValueInput};
use casebook_app::studies::{NewSiteInput, NewStudyInput, RoleInput};
use casebook_app::{App, SecuritySettings};
use casebook_domain::clock::{Clock, SystemClock};
use casebook_domain::study::{StudyDetails, StudyStatus};
use casebook_store::{Db, Store};

const EVENTS: usize = 10;
const FORMS: usize = 5;
const ITEMS: usize = 20;
const PAGE: usize = 50;
const CLIENTS: usize = 50;

struct Args {
    participants: i64,
    backends: Vec<&'static str>,
    postgres: String,
    /// Keep the databases for inspection instead of dropping them.
    keep: bool,
}

fn args() -> Args {
    let mut a = Args {
        participants: 10_000,
        backends: vec!["sqlite", "postgres"],
        postgres: std::env::var("CASEBOOK_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--participants" => a.participants = it.next().and_then(|n| n.parse().ok()).expect("--participants N"),
            "--backend" => {
                a.backends = match it.next().as_deref() {
                    Some("sqlite") => vec!["sqlite"],
                    Some("postgres") => vec!["postgres"],
                    Some("both") => vec!["sqlite", "postgres"],
                    _ => panic!("--backend sqlite|postgres|both"),
                }
            }
            "--postgres" => a.postgres = it.next().expect("--postgres URL"),
            "--keep" => a.keep = true,
            other => {
                panic!("unknown argument {other}; use --participants N [--backend sqlite|postgres|both] [--keep]")
            }
        }
    }
    assert!(a.participants >= 110, "use at least 110 participants");
    a
}

/// Latencies of one measurement.
struct Sample(Vec<Duration>);

impl Sample {
    fn new() -> Self {
        Self(Vec::new())
    }
    fn sorted(&self) -> Vec<Duration> {
        let mut v = self.0.clone();
        v.sort();
        v
    }
    fn median(&self) -> Duration {
        let v = self.sorted();
        v[v.len() / 2]
    }
    fn p99(&self) -> Duration {
        let v = self.sorted();
        let i = (v.len() * 99).div_ceil(100).saturating_sub(1);
        v[i]
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn line(what: &str, s: &Sample, base: Option<&Sample>) {
    let ratio = base.map(|b| format!("  ({:.1}× raw median)", s.median().as_secs_f64() / b.median().as_secs_f64()));
    println!(
        "  {what:<52} n={:<5} median {:>11}  p99 {:>11}{}",
        s.0.len(),
        ms(s.median()),
        ms(s.p99()),
        ratio.unwrap_or_default()
    );
}

/// A PostgreSQL database made for this run, dropped at the end.
struct PgDb {
    admin: String,
    name: String,
}

impl PgDb {
    async fn create(admin: &str) -> (Self, String) {
        let name = format!("cb_bench_{}", std::process::id());
        let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(admin).await.expect("PostgreSQL reachable");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut c).await.unwrap();
        let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap();
        (Self { admin: admin.to_owned(), name: name.clone() }, format!("{base}/{name}"))
    }

    async fn drop_now(self) {
        let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&self.admin).await.unwrap();
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut c).await.unwrap();
    }
}

/// An XLSForm (markdown) of 20 items cycling through INT, REAL, DATE, ST and a code list.
fn form_markdown(k: usize) -> String {
    let mut md = String::from("| survey |\n| | type | name | label | bind::oc:itemgroup | constraint |\n");
    for i in 1..=ITEMS {
        let (ty, constraint) = match i % 5 {
            1 => ("integer", ". >= 0"),
            2 => ("decimal", ". > 0"),
            3 => ("date", ""),
            4 => ("text", ""),
            _ => ("select_one yn", ""),
        };
        md.push_str(&format!("| | {ty} | q{i:02} | Question {i} of form {k} | g{k} | {constraint} |\n"));
    }
    md.push_str("| choices |\n| | list_name | name | label |\n| | yn | 1 | Yes |\n| | yn | 0 | No |\n");
    md.push_str(&format!(
        "| settings |\n| | form_title | form_id | version |\n| | Bench form {k} | bench_f{k} | v1 |\n"
    ));
    md
}

/// The value item `i` gets (`alt`: a different valid value, for updates).
fn value_for(i: usize, alt: bool) -> &'static str {
    match (i % 5, alt) {
        (1, false) => "42",
        (1, true) => "43",
        (2, false) => "12.5",
        (2, true) => "13.5",
        (3, false) => "2026-01-10",
        (3, true) => "2026-01-11",
        (4, false) => "bench text",
        (4, true) => "bench text, changed",
        (_, false) => "1",
        (_, true) => "0",
    }
}

struct Bench {
    app: App,
    entry: Principal,
    study_id: i64,
    events: Vec<String>,
    /// (form OID, version OID, group OID, item OIDs).
    forms: Vec<(String, String, String, Vec<String>)>,
    design_version: i32,
}

async fn set_up_design(app: &App) -> Bench {
    assert!(app.seed_demo().await.unwrap());
    let admin = app.cli_principal(Some("demo_admin")).await.unwrap();
    let study = app
        .create_study(
            &admin,
            NewStudyInput {
                details: StudyDetails {
                    protocol_id: "BENCH".into(),
                    name: "Benchmark study".into(),
                    ..Default::default()
                },
                parameters: None,
            },
        )
        .await
        .unwrap();
    let mut sites = Vec::new();
    for p in ["BENCH-A", "BENCH-B"] {
        let site = app
            .create_site(
                &admin,
                &study.oid,
                NewSiteInput {
                    details: StudyDetails { protocol_id: p.into(), name: format!("Site {p}"), ..Default::default() },
                    parameters: None,
                },
            )
            .await
            .unwrap();
        sites.push(site.oid);
    }
    for (user, role, site) in
        [("demo_entry", "data_entry", None), ("demo_monitor", "monitor", None), ("demo_crc_b", "data_entry", Some(1))]
    {
        let site_oid = site.map(|i: usize| sites[i].clone());
        app.assign_role(&admin, &study.oid, RoleInput { username: user.into(), role: role.into(), site_oid })
            .await
            .unwrap();
    }
    let mut form_oids = Vec::new();
    for k in 1..=FORMS {
        let up =
            app.upload_form(&admin, &study.oid, &format!("bench_f{k}.md"), form_markdown(k).as_bytes(), None).await;
        let up = up.unwrap_or_else(|e| panic!("upload of form {k}: {e:?}"));
        form_oids.push(up.form_oid);
    }
    let mut events = Vec::new();
    for k in 1..=EVENTS {
        let forms = form_oids
            .iter()
            .map(|f| EventFormInput { form: f.clone(), required: true, ..EventFormInput::default() })
            .collect();
        let input = EventInput {
            name: format!("Visit {k:02}"),
            description: None,
            category: None,
            event_type: Some("scheduled".into()),
            repeating: false,
            forms,
        };
        events.push(app.save_event(&admin, &study.oid, None, input).await.unwrap().oid.to_string());
    }
    let published = app.publish_design(&admin, &study.oid, Some("benchmark".into())).await.unwrap();
    app.promote_design(&admin, &study.oid, published.version.number).await.unwrap();
    app.set_study_status(&admin, &study.oid, StudyStatus::Available, Some("benchmark".into())).await.unwrap();
    for s in &sites {
        app.set_site_status(&admin, &study.oid, s, StudyStatus::Available, None).await.unwrap();
    }
    let design = app.design(&admin, &study.oid, Which::Production).await.unwrap();
    let forms = form_oids
        .iter()
        .map(|f| {
            let def = design.form(f).unwrap();
            let v = &def.versions[0];
            let items: Vec<String> = v.items.iter().map(|i| i.oid.to_string()).collect();
            assert_eq!(items.len(), ITEMS);
            (f.clone(), v.oid.to_string(), v.items[0].group_oid.to_string(), items)
        })
        .collect();
    let study_id = app.store().study_by_oid(&study.oid).await.unwrap().unwrap().id;
    let entry = app.cli_principal(Some("demo_entry")).await.unwrap();
    Bench { app: app.clone(), entry, study_id, events, forms, design_version: published.version.number }
}

/// 20 rules: per form, a range check on the integer item, a positive check on the decimal item,
/// a date not in the future, and a rule across two items — each opening a note when broken.
/// The generated data break none of them, so the run measures evaluation, not note writing.
fn rules_xml(b: &Bench) -> String {
    let mut assignments = String::new();
    let mut defs = String::new();
    for (k, (form, _, group, items)) in b.forms.iter().enumerate() {
        let checks = [
            (&items[0], format!("{} gte 0", items[0])),
            (&items[1], format!("{} gt 0", items[1])),
            (&items[2], format!("{} lte _CURRENT_DATE", items[2])),
            (&items[5], format!("{} lt 1000 and {} lt 1000", items[5], items[0])),
        ];
        for (n, (item, expr)) in checks.iter().enumerate() {
            let oid = format!("R_BENCH_{k}_{n}");
            assignments.push_str(&format!(
                "<RuleAssignment><Target Context=\"OC_RULES_V1\">{form}.{group}.{item}</Target>\
                 <RuleRef OID=\"{oid}\"><DiscrepancyNoteAction IfExpressionEvaluates=\"false\">\
                 <Message>Check {oid} failed</Message></DiscrepancyNoteAction></RuleRef></RuleAssignment>\n"
            ));
            defs.push_str(&format!(
                "<RuleDef OID=\"{oid}\" Name=\"Bench rule {oid}\"><Expression Context=\"OC_RULES_V1\">{expr}</Expression></RuleDef>\n"
            ));
        }
    }
    format!("<RuleImport>\n{assignments}{defs}</RuleImport>\n")
}

/// Reads what the rules engine reads for one participant (events, forms, values), without
/// evaluating anything; returns the number of values.
async fn raw_participant_data(db: &Db, id: i64) -> usize {
    let events = "SELECT id, event_oid, repeat_key, status FROM study_events WHERE participant_id = $1";
    let forms = "SELECT f.id, f.form_oid, f.form_version_oid FROM form_data f JOIN study_events e \
                 ON e.id = f.study_event_id WHERE e.participant_id = $1";
    let values = "SELECT d.form_data_id, d.group_oid, d.row_number, d.item_oid, d.value FROM item_data d \
                  WHERE d.deleted = FALSE AND d.form_data_id IN (SELECT f.id FROM form_data f JOIN study_events e \
                  ON e.id = f.study_event_id WHERE e.participant_id = $1)";
    match db {
        Db::Sqlite(p) => {
            let _: Vec<(i64, String, i32, String)> = sqlx::query_as(events).bind(id).fetch_all(p).await.unwrap();
            let _: Vec<(i64, String, String)> = sqlx::query_as(forms).bind(id).fetch_all(p).await.unwrap();
            let v: Vec<(i64, String, i32, String, Option<String>)> =
                sqlx::query_as(values).bind(id).fetch_all(p).await.unwrap();
            v.len()
        }
        Db::Postgres(p) => {
            let _: Vec<(i64, String, i32, String)> = sqlx::query_as(events).bind(id).fetch_all(p).await.unwrap();
            let _: Vec<(i64, String, String)> = sqlx::query_as(forms).bind(id).fetch_all(p).await.unwrap();
            let v: Vec<(i64, String, i32, String, Option<String>)> =
                sqlx::query_as(values).bind(id).fetch_all(p).await.unwrap();
            v.len()
        }
    }
}

/// Runs one statement on either backend (bulk set-up only).
macro_rules! on {
    ($db:expr, $sqlite:expr, $pg:expr, |$q:ident| $binds:expr) => {
        match $db {
            Db::Sqlite(p) => {
                let $q = sqlx::query($sqlite);
                $binds.execute(p).await.unwrap().rows_affected()
            }
            Db::Postgres(p) => {
                let $q = sqlx::query($pg);
                $binds.execute(p).await.unwrap().rows_affected()
            }
        }
    };
}

async fn bulk_load(b: &Bench, n: i64) {
    let db = b.app.store().db();
    let now = b.app.store().clock().now();
    let user = b.entry.user_id;
    let site_ids: Vec<i64> = {
        let mut v = Vec::new();
        for p in ["BENCH-A", "BENCH-B"] {
            v.push(b.app.store().study_by_protocol_id(p).await.unwrap().unwrap().id);
        }
        v
    };
    let t = Instant::now();
    let participants = on!(
        db,
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
         INSERT INTO participants (study_id, site_id, label, label_key, oid, sex, enrolled_on, status, version, \
         created_at, updated_at) \
         SELECT $2, CASE WHEN i % 2 = 1 THEN $3 ELSE $4 END, 'BENCH-' || printf('%06d', i), \
         'bench-' || printf('%06d', i), 'SS_BENCH' || printf('%06d', i), CASE WHEN i % 3 = 0 THEN 'm' ELSE 'f' END, \
         date('2025-01-01', '+' || (i % 365) || ' days'), CASE WHEN i % 50 = 0 THEN 'removed' ELSE 'available' END, \
         1, $5, $5 FROM n",
        "INSERT INTO participants (study_id, site_id, label, label_key, oid, sex, enrolled_on, status, version, \
         created_at, updated_at) \
         SELECT $2, CASE WHEN i % 2 = 1 THEN $3 ELSE $4 END, 'BENCH-' || lpad(i::text, 6, '0'), \
         'bench-' || lpad(i::text, 6, '0'), 'SS_BENCH' || lpad(i::text, 6, '0'), \
         CASE WHEN i % 3 = 0 THEN 'm' ELSE 'f' END, to_char(DATE '2025-01-01' + (i % 365)::int, 'YYYY-MM-DD'), \
         CASE WHEN i % 50 = 0 THEN 'removed' ELSE 'available' END, 1, $5, $5 FROM generate_series(1, $1::bigint) AS g(i)",
        |q| q.bind(n).bind(b.study_id).bind(site_ids[0]).bind(site_ids[1]).bind(now)
    );
    let events_json = serde_json::to_string(
        &b.events.iter().enumerate().map(|(k, e)| serde_json::json!([e, k + 1])).collect::<Vec<_>>(),
    )
    .unwrap();
    // Participant i (by id) has its first `id mod 11` visits completed and the next one started.
    let events = on!(
        db,
        "INSERT INTO study_events (participant_id, event_oid, repeat_key, status, removal, version, created_at, updated_at) \
         SELECT p.id, json_extract(j.value, '$[0]'), 1, \
         CASE WHEN json_extract(j.value, '$[1]') <= p.id % 11 THEN 'completed' \
              WHEN json_extract(j.value, '$[1]') = p.id % 11 + 1 THEN 'data_entry_started' ELSE 'scheduled' END, \
         'available', 1, $2, $2 FROM participants p, json_each($1) j WHERE p.study_id = $3",
        "INSERT INTO study_events (participant_id, event_oid, repeat_key, status, removal, version, created_at, updated_at) \
         SELECT p.id, j->>0, 1, \
         CASE WHEN (j->>1)::int <= p.id % 11 THEN 'completed' \
              WHEN (j->>1)::int = p.id % 11 + 1 THEN 'data_entry_started' ELSE 'scheduled' END, \
         'available', 1, $2, $2 FROM participants p, jsonb_array_elements($1::jsonb) j WHERE p.study_id = $3",
        |q| q.bind(&events_json).bind(now).bind(b.study_id)
    );
    let forms_json = serde_json::to_string(
        &b.forms.iter().enumerate().map(|(k, (f, v, _, _))| serde_json::json!([f, v, k + 1])).collect::<Vec<_>>(),
    )
    .unwrap();
    let forms = on!(
        db,
        "INSERT INTO form_data (study_event_id, form_oid, form_version_oid, design_version, status, removal, owner_id, \
         version, created_at, updated_at) \
         SELECT e.id, json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]'), $2, \
         CASE WHEN e.status = 'completed' THEN 'complete' ELSE 'initial_data_entry' END, 'available', $3, 1, $4, $4 \
         FROM participants p JOIN study_events e ON e.participant_id = p.id, json_each($1) j \
         WHERE p.study_id = $5 AND (e.status = 'completed' OR (e.status = 'data_entry_started' AND json_extract(j.value, '$[2]') <= 2))",
        "INSERT INTO form_data (study_event_id, form_oid, form_version_oid, design_version, status, removal, owner_id, \
         version, created_at, updated_at) \
         SELECT e.id, j->>0, j->>1, $2, \
         CASE WHEN e.status = 'completed' THEN 'complete' ELSE 'initial_data_entry' END, 'available', $3, 1, $4, $4 \
         FROM participants p JOIN study_events e ON e.participant_id = p.id, jsonb_array_elements($1::jsonb) j \
         WHERE p.study_id = $5 AND (e.status = 'completed' OR (e.status = 'data_entry_started' AND (j->>2)::int <= 2))",
        |q| q.bind(&forms_json).bind(b.design_version).bind(user).bind(now).bind(b.study_id)
    );
    let mut items = Vec::new();
    for (f, _, g, oids) in &b.forms {
        for (i, oid) in oids.iter().enumerate() {
            items.push(serde_json::json!([f, g, oid, value_for(i + 1, false)]));
        }
    }
    let items_json = serde_json::to_string(&items).unwrap();
    let values = on!(
        db,
        "INSERT INTO item_data (form_data_id, group_oid, row_number, item_oid, value, deleted, updated_at, updated_by) \
         SELECT f.id, json_extract(j.value, '$[1]'), 1, json_extract(j.value, '$[2]'), json_extract(j.value, '$[3]'), \
         0, $2, $3 FROM participants p JOIN study_events e ON e.participant_id = p.id \
         JOIN form_data f ON f.study_event_id = e.id JOIN json_each($1) j ON json_extract(j.value, '$[0]') = f.form_oid \
         WHERE p.study_id = $4",
        "INSERT INTO item_data (form_data_id, group_oid, row_number, item_oid, value, deleted, updated_at, updated_by) \
         SELECT f.id, j->>1, 1, j->>2, j->>3, FALSE, $2, $3 FROM participants p \
         JOIN study_events e ON e.participant_id = p.id JOIN form_data f ON f.study_event_id = e.id \
         JOIN jsonb_array_elements($1::jsonb) j ON j->>0 = f.form_oid WHERE p.study_id = $4",
        |q| q.bind(&items_json).bind(now).bind(user).bind(b.study_id)
    );
    // PostgreSQL's autovacuum would vacuum and analyse tables this size after a bulk load by
    // itself; do it now rather than measure whenever it happens to run. SQLite is left as
    // Casebook leaves it (no ANALYZE).
    if let Db::Postgres(p) = db {
        sqlx::raw_sql("VACUUM ANALYZE").execute(p).await.unwrap();
    }
    println!(
        "  set-up: {participants} participants, {events} events, {forms} forms, {values} values bulk-loaded in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

/// Participant `i`'s label.
fn label(i: i64) -> String {
    format!("BENCH-{i:06}")
}

async fn participant_id(b: &Bench, i: i64) -> i64 {
    b.app.store().participant(b.study_id, &label(i)).await.unwrap().unwrap().id
}

fn save_input(b: &Bench, form: usize, alt: bool, expected_version: Option<i64>) -> SaveFormInput {
    let (_, _, _, items) = &b.forms[form];
    SaveFormInput {
        expected_version,
        form_version: None,
        values: items
            .iter()
            .enumerate()
            .map(|(i, oid)| ValueInput {
                item: oid.clone(),
                row: 1,
                value: Some(value_for(i + 1, alt).to_owned()),
                null_flavour: None,
            })
            .collect(),
        remove_rows: Vec::new(),
        notes: Vec::new(),
    }
}

/// Form saves through the use case: the first save of a form (20 values inserted, the form
/// started, the event moved to data entry started) and a second save changing all 20.
async fn measure_saves(b: &Bench, n: i64, count: usize) -> (Sample, Sample) {
    let mut first = Sample::new();
    let mut update = Sample::new();
    let mut done = 0;
    for i in 1..=n {
        if done == count + 10 {
            break;
        }
        if i % 50 == 0 {
            continue; // removed
        }
        // Visit `visits + 1` is started; the one after it is scheduled with no form yet.
        let visits = usize::try_from(participant_id(b, i).await % 11).unwrap();
        if visits + 2 > EVENTS {
            continue;
        }
        let event = &b.events[visits + 1];
        let form = done % FORMS;
        let lbl = label(i);
        let t = Instant::now();
        let saved = b
            .app
            .save_form(&b.entry, "S_BENCH", &lbl, event, 1, &b.forms[form].0, save_input(b, form, false, None))
            .await
            .unwrap_or_else(|e| panic!("save of {lbl}: {e:?}"));
        let d1 = t.elapsed();
        let t = Instant::now();
        let input = save_input(b, form, true, Some(saved.form.version));
        b.app.save_form(&b.entry, "S_BENCH", &lbl, event, 1, &b.forms[form].0, input).await.unwrap();
        let d2 = t.elapsed();
        if done >= 10 {
            first.0.push(d1);
            update.0.push(d2);
        }
        done += 1;
    }
    (first, update)
}

/// The raw baseline of a save: one transaction inserting 20 rows into `item_data`.
async fn raw_inserts(b: &Bench, count: usize) -> Sample {
    let db = b.app.store().db();
    let form_id: i64 = match db {
        Db::Sqlite(p) => sqlx::query_scalar("SELECT MIN(id) FROM form_data").fetch_one(p).await.unwrap(),
        Db::Postgres(p) => sqlx::query_scalar("SELECT MIN(id) FROM form_data").fetch_one(p).await.unwrap(),
    };
    let now = b.app.store().clock().now();
    let sql = "INSERT INTO item_data (form_data_id, group_oid, row_number, item_oid, value, deleted, updated_at, \
               updated_by) VALUES ($1, 'RAW', $2, $3, $4, FALSE, $5, $6)";
    let mut s = Sample::new();
    for n in 0..count + 10 {
        let row = i32::try_from(n).unwrap() + 1;
        let t = Instant::now();
        macro_rules! insert20 {
            ($pool:expr) => {{
                let mut tx = $pool.begin().await.unwrap();
                for (i, oid) in b.forms[0].3.iter().enumerate() {
                    sqlx::query(sql)
                        .bind(form_id)
                        .bind(row)
                        .bind(oid)
                        .bind(value_for(i + 1, false))
                        .bind(now)
                        .bind(b.entry.user_id)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                }
                tx.commit().await.unwrap();
            }};
        }
        match db {
            Db::Sqlite(p) => insert20!(p),
            Db::Postgres(p) => insert20!(p),
        }
        if n >= 10 {
            s.0.push(t.elapsed());
        }
    }
    s
}

/// The raw baseline of a matrix page: a bare SELECT of 50 participants by key.
async fn raw_page(db: &Db, study_id: i64, after: &str) -> Vec<String> {
    let sql = "SELECT id, label, oid, site_id, status, enrolled_on FROM participants \
               WHERE study_id = $1 AND label_key > $2 ORDER BY label_key LIMIT 50";
    type Row = (i64, String, String, i64, String, String);
    let rows: Vec<Row> = match db {
        Db::Sqlite(p) => sqlx::query_as(sql).bind(study_id).bind(after).fetch_all(p).await.unwrap(),
        Db::Postgres(p) => sqlx::query_as(sql).bind(study_id).bind(after).fetch_all(p).await.unwrap(),
    };
    rows.into_iter().map(|r| r.1.to_lowercase()).collect()
}

async fn raw_pages(db: &Db, study_id: i64, pages: usize) -> Sample {
    let mut s = Sample::new();
    let mut after = String::new();
    for _ in 0..pages {
        let t = Instant::now();
        let rows = raw_page(db, study_id, &after).await;
        s.0.push(t.elapsed());
        after = rows.last().cloned().unwrap_or_default();
    }
    s
}

/// Walks the matrix page by page over HTTP, `pages` pages from the first; latency of each.
async fn walk(client: &reqwest::Client, base: &str, key: &str, pages: usize) -> Vec<Duration> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..pages {
        let url = match &after {
            Some(c) => format!("{base}/api/v1/studies/S_BENCH/matrix?page_size={PAGE}&after={c}"),
            None => format!("{base}/api/v1/studies/S_BENCH/matrix?page_size={PAGE}"),
        };
        let t = Instant::now();
        let r = client.get(url).bearer_auth(key).send().await.unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::OK);
        let body: serde_json::Value = r.json().await.unwrap();
        out.push(t.elapsed());
        assert!(body["rows"].as_array().is_some_and(|r| !r.is_empty()), "{body}");
        match body["next"].as_str() {
            Some(c) => after = Some(c.to_owned()),
            None => after = None,
        }
    }
    out
}

async fn run(backend: &'static str, a: &Args) {
    let mut pg = None;
    let mut dir = None;
    let url = if backend == "sqlite" {
        let d = std::env::temp_dir().join(format!("casebook_bench_{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let u = format!("sqlite://{}", d.join("bench.db").display());
        dir = Some(d);
        u
    } else {
        let (g, u) = PgDb::create(&a.postgres).await;
        pg = Some(g);
        u
    };
    println!("\n== {backend} ==");
    let db = casebook_store::connect(&url, 10).await.unwrap();
    db.migrate().await.unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let security = SecuritySettings { argon2_memory_kib: 1024, argon2_iterations: 1, ..SecuritySettings::default() };
    let app = App::new(Store::new(db.clone(), clock), security);
    let t = Instant::now();
    let b = set_up_design(&app).await;
    println!(
        "  design: {EVENTS} events × {FORMS} forms × {ITEMS} items uploaded, published, promoted in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    bulk_load(&b, a.participants).await;

    // Form save.
    let (first, update) = measure_saves(&b, a.participants, 200).await;
    let raw = raw_inserts(&b, 500).await;
    println!("  form save (20 items), App::save_form:");
    line("first save (form started, 20 values inserted)", &first, Some(&raw));
    line("second save (20 values changed)", &update, Some(&raw));
    line("raw: one transaction of 20 single-row INSERTs", &raw, None);

    // Casebook read: participants with every visit completed (1,000 values).
    let mut book = Sample::new();
    let mut raw_book = Sample::new();
    let mut i = 1;
    let mut full = Vec::new();
    while full.len() < 110 && i <= a.participants {
        if i % 50 != 0 && participant_id(&b, i).await % 11 == 10 {
            full.push(i);
        }
        i += 1;
    }
    let values_sql = "SELECT d.item_oid, d.value FROM participants p JOIN study_events e ON e.participant_id = p.id \
                      JOIN form_data f ON f.study_event_id = e.id JOIN item_data d ON d.form_data_id = f.id \
                      WHERE p.study_id = $1 AND p.label_key = $2";
    let mut values_seen = 0;
    for (n, i) in full.iter().enumerate() {
        let t = Instant::now();
        let cb = b.app.casebook(&b.entry, "S_BENCH", &label(*i)).await.unwrap();
        let d = t.elapsed();
        values_seen = cb.events.iter().flat_map(|e| &e.forms).map(|f| f.values.len()).sum::<usize>();
        let t = Instant::now();
        let rows: Vec<(String, Option<String>)> = match &db {
            Db::Sqlite(p) => {
                sqlx::query_as(values_sql).bind(b.study_id).bind(label(*i).to_lowercase()).fetch_all(p).await.unwrap()
            }
            Db::Postgres(p) => {
                sqlx::query_as(values_sql).bind(b.study_id).bind(label(*i).to_lowercase()).fetch_all(p).await.unwrap()
            }
        };
        let r = t.elapsed();
        assert_eq!(rows.len(), values_seen);
        if n >= 10 {
            book.0.push(d);
            raw_book.0.push(r);
        }
    }
    println!("  casebook read, App::casebook ({values_seen} values: 10 events × 5 forms × 20 items):");
    line("casebook", &book, Some(&raw_book));
    line("raw: one SELECT of the participant's values", &raw_book, None);

    // The matrix over HTTP.
    let state = casebook_web::AppState {
        app: b.app.clone(),
        web: Arc::new(casebook_web::WebSettings::default()),
        metrics: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(casebook_web::serve(listener, state, std::future::pending()));
    let monitor = b.app.cli_principal(Some("demo_monitor")).await.unwrap();
    let key = b.app.create_api_key(&monitor, "bench").await.unwrap().key;
    let client = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build().unwrap();
    let visible = a.participants - a.participants / 50;
    let pages = usize::try_from((visible + 49) / 50).unwrap();
    let _ = walk(&client, &base, &key, 5).await; // warm up
    let one = walk(&client, &base, &key, pages).await;
    let health = {
        let mut s = Sample::new();
        for _ in 0..200 {
            let t = Instant::now();
            let r = client.get(format!("{base}/health")).send().await.unwrap();
            let _ = r.bytes().await.unwrap();
            s.0.push(t.elapsed());
        }
        s
    };
    let raw1 = raw_pages(&db, b.study_id, pages).await;
    println!("  participant matrix over HTTP, 50 a page, 1 client walking all {pages} pages ({visible} participants):");
    let all = Sample(one.clone());
    line("matrix page (every page)", &all, Some(&raw1));
    line("  first 20 pages", &Sample(one[..20.min(one.len())].to_vec()), Some(&raw1));
    line("  last 20 pages", &Sample(one[one.len().saturating_sub(20)..].to_vec()), Some(&raw1));
    line("raw: SELECT 50 participants by key (no HTTP)", &raw1, None);
    line("HTTP floor: GET /health (one SELECT 1)", &health, None);

    // 50 clients at once, each walking 20 pages from the first.
    let per = 20.min(pages);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (c, base, key) = (client.clone(), base.clone(), key.clone());
        tasks.push(tokio::spawn(async move { walk(&c, &base, &key, per).await }));
    }
    let mut many = Sample::new();
    for task in tasks {
        many.0.extend(task.await.unwrap());
    }
    let wall = t.elapsed();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (db, id) = (db.clone(), b.study_id);
        tasks.push(tokio::spawn(async move { raw_pages(&db, id, per).await }));
    }
    let mut raw50 = Sample::new();
    for task in tasks {
        raw50.0.extend(task.await.unwrap().0);
    }
    let raw_wall = t.elapsed();
    println!("  participant matrix over HTTP, {CLIENTS} concurrent clients × {per} pages:");
    line("matrix page", &many, Some(&raw50));
    println!(
        "  {:<52} {:.0} pages/s",
        "  throughput",
        f64::from(u32::try_from(many.0.len()).unwrap()) / wall.as_secs_f64()
    );
    line("raw: SELECT 50 by key, 50 concurrent tasks", &raw50, None);
    println!(
        "  {:<52} {:.0} queries/s",
        "  raw throughput",
        f64::from(u32::try_from(raw50.0.len()).unwrap()) / raw_wall.as_secs_f64()
    );

    server.abort();

    // A batch run of 20 rules (4 per form, on every event using the form) over every participant.
    let xml = rules_xml(&b);
    let dm = b.app.cli_principal(Some("demo_admin")).await.unwrap();
    let imported = b.app.import_rules(&dm, "S_BENCH", "bench_rules.xml", xml.as_bytes(), false).await.unwrap();
    assert_eq!(imported.rules.len(), 20);
    let input = |dry_run| casebook_app::rules_engine::BatchInput { dry_run, rule: None, participant: None };
    let dry = b.app.run_rules_batch(&dm, "S_BENCH", input(true)).await.unwrap();
    let real = b.app.run_rules_batch(&dm, "S_BENCH", input(false)).await.unwrap();
    let mut ids = Vec::new();
    for i in 1..=a.participants {
        let p = b.app.store().participant(b.study_id, &label(i)).await.unwrap().unwrap();
        if p.status != "removed" && p.status != "auto_removed" {
            ids.push(p.id);
        }
    }
    let t = Instant::now();
    let mut loaded = 0usize;
    for id in &ids {
        loaded += raw_participant_data(&db, *id).await;
    }
    let raw_s = t.elapsed().as_secs_f64();
    println!(
        "  rules: 20 rules × {} participants (batch; {} evaluations, {} actions fired):",
        real.participants,
        real.evaluated,
        real.counts.values().sum::<usize>()
    );
    for (what, r) in [("dry run", &dry), ("run", &real)] {
        println!(
            "  {:<52} {:>9.2} s  {:>9.0} evaluations/s  {:>6.0} participants/s  ({:.1}× raw time)",
            what,
            r.seconds,
            r.evaluated as f64 / r.seconds,
            r.participants as f64 / r.seconds,
            r.seconds / raw_s
        );
    }
    println!(
        "  {:<52} {:>9.2} s  ({loaded} values read, {:.0} participants/s)",
        "raw: read each participant's events, forms, values",
        raw_s,
        a.participants as f64 / raw_s
    );
    db.close().await;
    if a.keep {
        println!("  kept: {url}");
        return;
    }
    if let Some(g) = pg {
        g.drop_now().await;
    }
    if let Some(d) = dir {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[tokio::main]
async fn main() {
    let a = args();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map(std::num::NonZero::get).unwrap_or(0);
    println!(
        "capture_bench: {} participants × {EVENTS} events × {FORMS} forms × {ITEMS} items; {cores} cores ({cpu}); \
         client and server in one process",
        a.participants
    );
    for backend in a.backends.clone() {
        run(backend, &a).await;
    }
}
