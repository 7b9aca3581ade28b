//! The `casebook` binary as an operator uses it: `serve --demo`, `user create-admin
//! --password-stdin`, `migrate` and `audit verify`, on SQLite (a data directory) and on
//! PostgreSQL (`--database-url`, a fresh database per test; `CASEBOOK_TEST_POSTGRES=off`
//! skips those halves loudly).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_casebook");

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("casebook-cli-{tag}-{}", uuid_like()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::UNIX_EPOCH.elapsed().map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}_{}_{}", std::process::id(), nanos, N.fetch_add(1, Ordering::Relaxed))
}

/// Where a test's database lives: `--data-dir DIR` or `--database-url URL`.
enum Target {
    Sqlite(std::path::PathBuf),
    Postgres { url: String, admin_url: String, name: String },
}

impl Target {
    fn sqlite() -> Self {
        Target::Sqlite(temp_dir("data"))
    }

    async fn postgres() -> Option<Self> {
        let admin_url = std::env::var("CASEBOOK_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        if admin_url == "off" {
            eprintln!("SKIPPED: PostgreSQL half of this CLI test (CASEBOOK_TEST_POSTGRES=off)");
            return None;
        }
        let name = format!("casebook_cli_{}", uuid_like());
        let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut c).await.unwrap();
        let base = admin_url.rsplit_once('/').map_or(admin_url.as_str(), |(b, _)| b).to_owned();
        Some(Target::Postgres { url: format!("{base}/{name}"), admin_url, name })
    }

    fn args(&self) -> Vec<String> {
        match self {
            Target::Sqlite(dir) => vec!["--data-dir".into(), dir.display().to_string()],
            Target::Postgres { url, .. } => vec!["--database-url".into(), url.clone()],
        }
    }

    /// Changes one sealed audit row behind Casebook's back, the way an attacker with database
    /// access would: first removing the trigger that refuses it.
    async fn tamper(&self) {
        match self {
            Target::Sqlite(dir) => {
                let url = format!("sqlite://{}", dir.join("casebook.db").display());
                let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url).await.unwrap();
                let refused = sqlx::raw_sql("UPDATE audit_events SET new_value = '{}' WHERE seq = 1")
                    .execute(&mut c)
                    .await
                    .unwrap_err();
                assert!(refused.to_string().contains("append-only"), "{refused}");
                sqlx::raw_sql(
                    "DROP TRIGGER audit_events_no_update; \
                     UPDATE audit_events SET actor_username = 'mallory' WHERE seq = 1",
                )
                .execute(&mut c)
                .await
                .unwrap();
            }
            Target::Postgres { url, .. } => {
                let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(url).await.unwrap();
                let refused = sqlx::raw_sql("UPDATE audit_events SET new_value = '{}' WHERE seq = 1")
                    .execute(&mut c)
                    .await
                    .unwrap_err();
                assert!(refused.to_string().contains("append-only"), "{refused}");
                sqlx::raw_sql(
                    "DROP TRIGGER audit_events_no_update_delete ON audit_events; \
                     UPDATE audit_events SET actor_username = 'mallory' WHERE seq = 1",
                )
                .execute(&mut c)
                .await
                .unwrap();
            }
        }
    }

    async fn drop_db(self) {
        match self {
            Target::Sqlite(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Target::Postgres { admin_url, name, .. } => {
                let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url).await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
        }
    }
}

fn run(args: &[&str], target: &Target, stdin: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).args(target.args()).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running `casebook serve --demo --bind 127.0.0.1:0`, killed when dropped.
struct Server {
    child: Child,
    base: String,
    banner: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_demo(target: &Target) -> Server {
    let mut child = Command::new(BIN)
        .args(["serve", "--demo", "--bind", "127.0.0.1:0"])
        .args(target.args())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut banner = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            banner.push_str(&line);
            banner.push('\n');
            if let Some(rest) = line.strip_prefix("Casebook listening on ") {
                let base = rest.split_whitespace().next().unwrap_or_default().to_owned();
                let _ = tx.send((base, banner.clone()));
            }
        }
    });
    let (base, banner) = rx.recv_timeout(Duration::from_secs(60)).expect("the server never said where it listens");
    Server { child, base, banner }
}

async fn demo_server_signs_in(target: Target) {
    let server = serve_demo(&target);
    assert!(server.banner.contains("Demo study DEMO (OID S_DEMO)"), "{}", server.banner);
    assert!(server.banner.contains("Demo-password-1"), "demo password printed: {}", server.banner);
    assert!(server.banner.contains("demo_crc"), "{}", server.banner);

    let http =
        reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let health = http.get(format!("{}/health", server.base)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let login = http.get(format!("{}/login", server.base)).send().await.unwrap();
    assert_eq!(login.status(), 200);
    assert!(login.text().await.unwrap().contains("type=password name='password'"));

    // An existing OpenClinica script signs in the way it always did.
    let r = http
        .post(format!("{}/OpenClinica/j_spring_security_check", server.base))
        .form(&[("j_username", "demo_dm"), ("j_password", "Demo-password-1")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert!(r.headers()["location"].to_str().unwrap().ends_with("/OpenClinica/MainMenu"));

    // The demo holds participants with data in various statuses, entered through the use cases.
    assert!(server.banner.contains("Demo participants enrolled with data in various statuses: 8"), "{}", server.banner);
    let monitor = reqwest::Client::builder().cookie_store(true).build().unwrap();
    let r = monitor
        .post(format!("{}/api/v1/auth/login", server.base))
        .json(&serde_json::json!({"username": "demo_monitor", "password": "Demo-password-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let list: serde_json::Value = monitor
        .get(format!("{}/api/v1/studies/S_DEMO/participants", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let statuses: Vec<&str> = list.as_array().unwrap().iter().map(|p| p["status"].as_str().unwrap()).collect();
    assert_eq!(statuses.len(), 8, "{list}");
    assert!(statuses.contains(&"removed") && statuses.contains(&"available"), "{list}");
    let book: serde_json::Value = monitor
        .get(format!("{}/api/v1/studies/S_DEMO/participants/DEMO-A-0001", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(book["events"][0]["status"], "completed", "{book}");
    assert_eq!(book["events"][0]["forms"][0]["status"], "complete", "{book}");
    drop(server);

    // A second start over the same database keeps the demo instead of failing.
    let again = serve_demo(&target);
    assert!(again.banner.contains("already present"), "{}", again.banner);
    drop(again);

    // The demo's clinical data, streamed to standard output as ODM (the removed participant left out).
    let (code, out, err) = run(&["export", "--study", "S_DEMO", "--format", "odm13-oc"], &target, None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("<SubjectData ").count(), 7, "{out}");
    assert!(out.contains("OpenClinica:StudySubjectID=\"DEMO-A-0001\""), "{out}");
    assert!(err.contains("exported 7 participants"), "{err}");
    let (code, _, err) = run(&["export", "--study", "S_NOPE"], &target, None);
    assert_ne!(code, 0);
    assert!(err.contains("not found"), "{err}");

    // The exported file checks clean as an import (dry run); the demo's rules file previews.
    let file = temp_dir("export").join("demo.xml");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, &out).unwrap();
    let (code, report, err) = run(&["import", file.to_str().unwrap(), "--study", "S_DEMO", "--dry-run"], &target, None);
    assert_eq!(code, 0, "{report}{err}");
    assert!(report.contains("accepted (dry run: nothing written)"), "{report}");
    let broken = out.replacen("Value=\"", "Value=\"x", 1);
    std::fs::write(&file, broken).unwrap();
    let (code, report, _) = run(&["import", file.to_str().unwrap(), "--study", "S_DEMO", "--dry-run"], &target, None);
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("error: line "), "{report}");
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/demo/rules/demo_rules.xml");
    let (code, preview, err) = run(&["rules", "import", rules, "--study", "S_DEMO", "--preview"], &target, None);
    assert_eq!(code, 0, "{preview}{err}");
    assert!(
        preview.contains("R_VS_TACHYCARDIA") && preview.contains("preview (nothing saved): 7 rule(s)"),
        "{preview}"
    );
    target.drop_db().await;
}

#[tokio::test]
async fn serve_demo_sqlite() {
    demo_server_signs_in(Target::sqlite()).await;
}

#[tokio::test]
async fn serve_demo_postgres() {
    if let Some(t) = Target::postgres().await {
        demo_server_signs_in(t).await;
    }
}

async fn bootstrap_and_verify(target: Target) {
    let (code, out, err) = run(&["migrate"], &target, None);
    assert_eq!(code, 0, "migrate: {out}{err}");

    // A weak password is refused, naming the rule, and creates nobody.
    let (code, _, err) =
        run(&["user", "create-admin", "--username", "root_admin", "--password-stdin"], &target, Some("short\n"));
    assert_ne!(code, 0);
    assert!(err.to_lowercase().contains("password"), "{err}");

    let (code, out, err) = run(
        &["user", "create-admin", "--username", "root_admin", "--password-stdin"],
        &target,
        Some("A-long-enough-secret-9\n"),
    );
    assert_eq!(code, 0, "create-admin: {out}{err}");
    assert!(out.contains("created technical administrator root_admin"), "{out}");
    assert!(!out.contains("A-long-enough-secret-9") && !err.contains("A-long-enough-secret-9"), "secret echoed");

    // The same name twice is a clear error.
    let (code, _, err) = run(
        &["user", "create-admin", "--username", "root_admin", "--password-stdin"],
        &target,
        Some("A-long-enough-secret-9\n"),
    );
    assert_ne!(code, 0);
    assert!(err.contains("root_admin"), "{err}");

    let (code, out, err) = run(&["audit", "verify"], &target, None);
    assert_eq!(code, 0, "verify: {out}{err}");
    assert!(out.contains("audit trail intact"), "{out}");

    target.tamper().await;
    let (code, out, _) = run(&["audit", "verify"], &target, None);
    assert_eq!(code, 1, "tampering must be reported: {out}");
    assert!(out.contains("BROKEN at chain position 1 (audit event 1)"), "{out}");
    target.drop_db().await;
}

#[tokio::test]
async fn bootstrap_and_verify_sqlite() {
    bootstrap_and_verify(Target::sqlite()).await;
}

#[tokio::test]
async fn bootstrap_and_verify_postgres() {
    if let Some(t) = Target::postgres().await {
        bootstrap_and_verify(t).await;
    }
}

async fn design_import_from_the_command_line(target: Target) {
    // Start once with --demo so the demo study and its published design exist.
    drop(serve_demo(&target));
    let dir = temp_dir("design");
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/demo/forms/vital_signs.xlsx");

    // The shipped version is already published: refused, exit 1, nothing changes.
    let (code, out, err) = run(&["design", "import", shipped, "--study", "S_DEMO"], &target, None);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("is published and cannot be replaced"), "{out}");

    // A file with problems: every problem printed with its place, exit 1.
    let bad = dir.join("bad.md");
    std::fs::write(
        &bad,
        "| survey |\n| | type | name | label |\n| | integer | a | A |\n| | integer | a | A |\n| | select_one nope | b | B |\n",
    )
    .unwrap();
    let (code, out, _) = run(&["design", "import", bad.to_str().unwrap(), "--study", "S_DEMO"], &target, None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("error: sheet 'survey', row 3, column 'name'"), "{out}");
    assert!(out.contains("nope"), "{out}");

    // A new version is accepted, published to Test and promoted to Production.
    let v2 = dir.join("vital_signs_v2.md");
    std::fs::write(
        &v2,
        "| survey |\n| | type | name | label | bind::oc:itemgroup |\n| | decimal | weight | Weight | vs |\n| | integer | pulse | Pulse | vs |\n\
         | settings |\n| | form_title | form_id | version |\n| | Vital signs | vital_signs | v2.0 |\n",
    )
    .unwrap();
    let (code, out, err) = run(
        &["design", "import", v2.to_str().unwrap(), "--study", "S_DEMO", "--publish", "production", "--as", "demo_dm"],
        &target,
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("accepted: form F_VITAL_SIGNS (Vital signs) version v2.0 (F_VITAL_SIGNS_V20)"), "{out}");
    assert!(out.contains("published version 2") && out.contains("promoted version 2 to Production"), "{out}");

    // The design as ODM on standard output.
    let (code, out, err) = run(&["design", "export", "--study", "S_DEMO", "--format", "odm13"], &target, None);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("<?xml") && out.contains("ODMVersion=\"1.3.2\""), "{out}");
    assert!(out.contains("F_VITAL_SIGNS_V20") && out.contains("F_ADVERSEEVENT"), "{out}");
    let (code, _, err) = run(&["design", "export", "--study", "S_NOPE"], &target, None);
    assert_ne!(code, 0);
    assert!(err.contains("not found"), "{err}");

    // A user without the right to build designs is refused.
    let (code, _, err) =
        run(&["design", "import", v2.to_str().unwrap(), "--study", "S_DEMO", "--as", "demo_crc"], &target, None);
    assert_ne!(code, 0);
    assert!(err.contains("permission"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
    target.drop_db().await;
}

#[tokio::test]
async fn design_import_sqlite() {
    design_import_from_the_command_line(Target::sqlite()).await;
}

#[tokio::test]
async fn design_import_postgres() {
    if let Some(t) = Target::postgres().await {
        design_import_from_the_command_line(t).await;
    }
}

impl Target {
    /// How many audit rows and item values the database holds (read behind Casebook's back).
    async fn counts(&self) -> (i64, i64) {
        let sql = "SELECT (SELECT COUNT(*) FROM audit_events), (SELECT COUNT(*) FROM item_data)";
        match self {
            Target::Sqlite(dir) => {
                let url = format!("sqlite://{}", dir.join("casebook.db").display());
                let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url).await.unwrap();
                let (ok,): (String,) = sqlx::query_as("PRAGMA integrity_check").fetch_one(&mut c).await.unwrap();
                assert_eq!(ok, "ok", "SQLite's integrity check after the kill");
                sqlx::query_as(sql).fetch_one(&mut c).await.unwrap()
            }
            Target::Postgres { url, .. } => {
                let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(url).await.unwrap();
                sqlx::query_as(sql).fetch_one(&mut c).await.unwrap()
            }
        }
    }
}

/// Kills `casebook import` (SIGKILL) while it writes an all-or-nothing import: the database is
/// as before (nothing committed, the audit chain intact); the same import then runs whole.
async fn killed_import(target: Target) {
    drop(serve_demo(&target));
    let (code, out, err) = run(&["export", "--study", "S_DEMO", "--participant", "DEMO-A-0002"], &target, None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(r#"Value="71.5""#), "the demo's second participant has a weight of 71.5: {out}");
    let (start, end) =
        (out.find("<SubjectData").unwrap(), out.rfind("</SubjectData>").unwrap() + "</SubjectData>".len());
    let subject = &out[start..end];
    // The participant's open vital signs 3,000 times (long enough to be caught writing on a fast machine), the weight changing each time.
    let twice = format!(
        "{}{}",
        subject.replacen(r#"Value="71.5""#, r#"Value="72""#, 1),
        subject.replacen(r#"Value="71.5""#, r#"Value="73""#, 1)
    );
    let file = temp_dir("kill").join("long.xml");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, format!("{}{}{}", &out[..start], twice.repeat(1500), &out[end..])).unwrap();
    let before = target.counts().await;

    let mut child = Command::new(BIN)
        .args(["import", file.to_str().unwrap(), "--study", "S_DEMO"])
        .args(target.args())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it writes (its progress on standard error), let it write a while, kill it.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = String::new();
    loop {
        let line = rx.recv_timeout(Duration::from_secs(120)).unwrap_or_else(|_| panic!("no progress: {seen}"));
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("writing:") && !line.contains(" 0 forms written") {
            break;
        }
    }
    assert!(child.try_wait().unwrap().is_none(), "the import ended before it could be killed:\n{seen}");
    child.kill().unwrap();
    child.wait().unwrap();
    eprintln!("killed the import while it wrote:\n{seen}");

    // As before: nothing of the import committed, the audit trail intact.
    assert_eq!(target.counts().await, before, "a killed all-or-nothing import left data behind");
    let (code, out, err) = run(&["audit", "verify"], &target, None);
    assert_eq!(code, 0, "verify after the kill: {out}{err}");
    let (_, now, _) = run(&["export", "--study", "S_DEMO", "--participant", "DEMO-A-0002"], &target, None);
    assert!(now.contains(r#"Value="71.5""#), "{now}");

    // The same import, left to finish, writes it all.
    let (code, report, err) = run(&["import", file.to_str().unwrap(), "--study", "S_DEMO"], &target, None);
    assert_eq!(code, 0, "{report}{err}");
    assert!(report.contains("imported: 3000 form(s) changed"), "{report}");
    let (_, now, _) = run(&["export", "--study", "S_DEMO", "--participant", "DEMO-A-0002"], &target, None);
    assert!(now.contains(r#"Value="73""#), "{now}");
    let after = target.counts().await;
    assert!(after.0 >= before.0 + 3000, "{before:?} {after:?}");
    target.drop_db().await;
}

#[tokio::test]
async fn killed_import_sqlite() {
    killed_import(Target::sqlite()).await;
}

#[tokio::test]
async fn killed_import_postgres() {
    if let Some(t) = Target::postgres().await {
        killed_import(t).await;
    }
}

/// `casebook bench odm` at a tiny size on SQLite: the import and export lines carry their
/// ratios to the raw baselines of the same run, and the peak memory.
#[test]
fn bench_odm_prints_ratios_to_raw_baselines() {
    let out = Command::new(BIN).args(["bench", "odm", "--participants", "3"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for (line_start, ratio) in [
        ("import: App::import_clinical", true),
        ("raw insert:", false),
        ("export: App::export_clinical", true),
        ("raw writer:", false),
    ] {
        let line =
            stdout.lines().find(|l| l.trim_start().starts_with(line_start)).unwrap_or_else(|| panic!("{stdout}"));
        assert!(line.contains("3000 values") && line.contains("items/s"), "{line}");
        if ratio {
            assert!(line.contains("% of raw") && line.contains("goal ≥") && line.contains("peak RSS"), "{line}");
        }
    }
}

/// RFC 4180 rows of a CSV or TSV text.
fn parse_table(text: &str, delimiter: char) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let (mut row, mut cell, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                cell.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') => quoted = true,
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) if c == delimiter => row.push(std::mem::take(&mut cell)),
            (false, c) => cell.push(c),
        }
    }
    rows
}

/// `casebook extract`: the wide and long tables and their dictionaries hold the demo's values
/// exactly as the ODM export does, the printed SHA-256 is the file's, and a site user's extract
/// holds only that site.
async fn extract_tables(target: Target) {
    drop(serve_demo(&target));
    let (code, odm, err) = run(&["export", "--study", "S_DEMO"], &target, None);
    assert_eq!(code, 0, "{err}");
    let odm_values = odm.matches("<ItemData ").count();
    let dir = temp_dir("extract");

    // Long: one row per value.
    let (code, out, err) =
        run(&["extract", "--study", "S_DEMO", "--format", "csv-long", "--out", dir.to_str().unwrap()], &target, None);
    assert_eq!(code, 0, "{out}{err}");
    let long = std::fs::read_to_string(dir.join("S_DEMO_csv-long.csv")).unwrap();
    let rows = parse_table(&long, ',');
    assert_eq!(rows[0][0], "SubjectID");
    assert_eq!(rows.len() - 1, odm_values, "a row per value of the ODM export");
    let value_at = rows[0].iter().position(|h| h == "Value").unwrap();
    assert!(rows.iter().any(|r| r[0] == "DEMO-A-0002" && r[10] == "I_VITAL_WEIGHT" && r[value_at] == "71.5"), "{long}");
    // The printed hash is the file's.
    let line = out.lines().find(|l| l.contains("S_DEMO_csv-long.csv")).unwrap();
    let printed = line.rsplit("sha256 ").next().unwrap().trim();
    let sum = Command::new("sha256sum").arg(dir.join("S_DEMO_csv-long.csv")).output().unwrap();
    assert!(String::from_utf8_lossy(&sum.stdout).starts_with(printed), "{line}");
    let dictionary = std::fs::read_to_string(dir.join("S_DEMO_csv-long_dictionary.csv")).unwrap();
    assert!(dictionary.lines().any(|l| l.starts_with("I_VITAL_WEIGHT,")), "{dictionary}");

    // Wide: one row per participant; the same values under OpenClinica's column names.
    let (code, out, err) =
        run(&["extract", "--study", "S_DEMO", "--format", "csv-wide", "--out", dir.to_str().unwrap()], &target, None);
    assert_eq!(code, 0, "{out}{err}");
    let wide = parse_table(&std::fs::read_to_string(dir.join("S_DEMO_csv-wide.csv")).unwrap(), ',');
    assert_eq!(wide.len() - 1, odm.matches("<SubjectData ").count(), "a row per participant");
    let weight = wide[0]
        .iter()
        .position(|h| h.starts_with("WEIGHT_E") && h.ends_with("_C1"))
        .unwrap_or_else(|| panic!("{:?}", wide[0]));
    let second = wide.iter().find(|r| r[0] == "DEMO-A-0002").unwrap();
    assert_eq!(second[weight], "71.5");
    let filled = wide.iter().skip(1).flat_map(|r| r.iter().skip(8)).filter(|c| !c.is_empty()).count();
    assert!(filled >= odm_values, "every value has its cell ({filled} cells for {odm_values} values)");
    let dictionary = std::fs::read_to_string(dir.join("S_DEMO_csv-wide_dictionary.csv")).unwrap();
    assert!(dictionary.contains(&format!("{},I_VITAL_WEIGHT,", wide[0][weight])), "{dictionary}");

    // A site user's extract (the investigator at DEMO-A): their site only; a CRC may not extract.
    let (code, _, err) = run(
        &[
            "extract",
            "--study",
            "S_DEMO",
            "--format",
            "tsv",
            "--out",
            dir.to_str().unwrap(),
            "--as",
            "demo_investigator",
        ],
        &target,
        None,
    );
    assert_eq!(code, 0, "{err}");
    let tsv = parse_table(&std::fs::read_to_string(dir.join("S_DEMO_tsv.tsv")).unwrap(), '\t');
    assert!(tsv.len() > 1 && tsv.iter().skip(1).all(|r| r[2] == "S_DEMOA"), "{tsv:?}");
    assert!(tsv.len() - 1 < wide.len() - 1, "the other site's participants are left out");
    let (code, _, err) =
        run(&["extract", "--study", "S_DEMO", "--out", dir.to_str().unwrap(), "--as", "demo_crc"], &target, None);
    assert_eq!(code, 1);
    assert!(err.contains("permission to extract"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
    target.drop_db().await;
}

#[tokio::test]
async fn extract_tables_sqlite() {
    extract_tables(Target::sqlite()).await;
}

#[tokio::test]
async fn extract_tables_postgres() {
    if let Some(t) = Target::postgres().await {
        extract_tables(t).await;
    }
}

/// `casebook extract` to Excel, SPSS, SAS and Stata, each read back by an independent reader
/// (openpyxl, pyreadstat): a row per participant, the demo's values in their columns.
async fn extract_typed(target: Target) {
    drop(serve_demo(&target));
    let dir = temp_dir("typed");
    let (code, odm, _) = run(&["export", "--study", "S_DEMO"], &target, None);
    assert_eq!(code, 0);
    let participants = odm.matches("<SubjectData ").count();
    for (format, file) in [
        ("spss", "S_DEMO_spss.sav"),
        ("sas", "S_DEMO_sas.xpt"),
        ("stata", "S_DEMO_stata.dta"),
        ("xlsx", "S_DEMO_xlsx.xlsx"),
    ] {
        let (code, out, err) =
            run(&["extract", "--study", "S_DEMO", "--format", format, "--out", dir.to_str().unwrap()], &target, None);
        assert_eq!(code, 0, "{format}: {out}{err}");
        let path = dir.join(file);
        let dictionary = std::fs::read_to_string(dir.join(format!("S_DEMO_{format}_dictionary.csv"))).unwrap();
        let weight = dictionary
            .lines()
            .find(|l| l.contains(",I_VITAL_WEIGHT,") && l.starts_with("WEIGHT_E1_C1,"))
            .unwrap_or_else(|| panic!("{dictionary}"));
        let short = weight.split(',').nth(1).unwrap().to_owned();
        let script = if format == "xlsx" {
            format!(
                "import openpyxl, json\nwb = openpyxl.load_workbook({path:?})\nrows = list(wb['data'].iter_rows(values_only=True))\n\
                 h = list(rows[0])\nprint(json.dumps({{'sheets': wb.sheetnames, 'n': len(rows) - 1, \
                 'weights': [[r[0], r[h.index('WEIGHT_E1_C1')] if h.index('WEIGHT_E1_C1') < len(r) else None] for r in rows[1:]]}}, default=str))"
            )
        } else {
            let reader = match format {
                "spss" => "read_sav",
                "sas" => "read_xport",
                _ => "read_dta",
            };
            format!(
                "import pyreadstat, json\ndata, meta = pyreadstat.{reader}({path:?}, output_format='dict')\n\
                 ids = data[meta.column_names[0]]\nprint(json.dumps({{'n': len(ids), 'weights': [[a, b] for a, b in zip(ids, data[{short:?}])]}}, default=str))"
            )
        };
        let out = Command::new("python3").args(["-c", &script]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{format}: {text}{}", String::from_utf8_lossy(&out.stderr));
        let read: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(read["n"].as_u64().unwrap() as usize, participants, "{format}: {read}");
        let second = read["weights"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r[0] == "DEMO-A-0002")
            .unwrap_or_else(|| panic!("{format}: {read}"));
        assert_eq!(second[1].as_f64(), Some(71.5), "{format}: {read}");
        if format == "xlsx" {
            assert_eq!(read["sheets"], serde_json::json!(["data", "dictionary"]), "{read}");
        }
    }
    assert!(dir.join("S_DEMO_sas_formats.sas").is_file());
    let _ = std::fs::remove_dir_all(&dir);
    target.drop_db().await;
}

#[tokio::test]
async fn extract_typed_sqlite() {
    extract_typed(Target::sqlite()).await;
}

#[tokio::test]
async fn extract_typed_postgres() {
    if let Some(t) = Target::postgres().await {
        extract_typed(t).await;
    }
}

/// `casebook extract` to Dataset-JSON (one file per item group, valid against the CDISC schema
/// by check-jsonschema, the values exact), R (the CSV and a script with factors and labels) and
/// ODM.
async fn extract_exchange(target: Target) {
    drop(serve_demo(&target));
    let dir = temp_dir("exchange");
    let out_dir = dir.to_str().unwrap();
    let (code, out, err) =
        run(&["extract", "--study", "S_DEMO", "--format", "dataset-json", "--out", out_dir], &target, None);
    assert_eq!(code, 0, "{out}{err}");
    let schema = std::env::var("CASEBOOK_FIXTURES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures")))
        .join("dataset-json/dataset.schema.json");
    assert!(schema.is_file(), "the Dataset-JSON schema is missing at {}", schema.display());
    let vitals = dir.join("S_DEMO_dataset-json_IG_VITAL_VS.json");
    assert!(vitals.is_file(), "{out}");
    let check = Command::new("check-jsonschema")
        .arg("--schemafile")
        .arg(&schema)
        .arg(&vitals)
        .output()
        .expect("check-jsonschema is required (pip install check-jsonschema; scripts/test.sh installs it)");
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&vitals).unwrap()).unwrap();
    let columns: Vec<&str> = doc["columns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    let weight = columns.iter().position(|c| *c == "WEIGHT").unwrap_or_else(|| panic!("{columns:?}"));
    let row = doc["rows"].as_array().unwrap().iter().find(|r| r[0] == "DEMO-A-0002").unwrap_or_else(|| panic!("{doc}"));
    assert!(row[weight] == "71.5" || row[weight] == 71.5, "{row}");
    assert_eq!(doc["records"].as_u64().unwrap() as usize, doc["rows"].as_array().unwrap().len());

    // Parquet: the same records, typed columns, read by pyarrow.
    let (code, out, err) =
        run(&["extract", "--study", "S_DEMO", "--format", "parquet", "--out", out_dir], &target, None);
    assert_eq!(code, 0, "{out}{err}");
    let parquet = dir.join("S_DEMO_parquet_IG_VITAL_VS.parquet");
    let script = format!(
        "import pyarrow.parquet as pq, json\nt = pq.read_table({parquet:?})\nd = t.to_pydict()\n\
         print(json.dumps({{'n': t.num_rows, 'types': {{f.name: str(f.type) for f in t.schema}}, \
         'weights': [[a, b] for a, b in zip(d['SUBJID'], d['WEIGHT'])]}}, default=str))"
    );
    let read =
        Command::new("python3").args(["-c", &script]).output().expect("python3 with pyarrow (pip install pyarrow)");
    let text = String::from_utf8_lossy(&read.stdout).into_owned();
    assert!(read.status.success(), "pyarrow: {text}{}", String::from_utf8_lossy(&read.stderr));
    let read: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(read["n"].as_u64().unwrap() as usize, doc["rows"].as_array().unwrap().len(), "{read}");
    assert_eq!(
        (read["types"]["WEIGHT"].as_str(), read["types"]["SUBJID"].as_str()),
        (Some("double"), Some("string")),
        "{read}"
    );
    assert_eq!(read["types"]["VISITNUM"], "int64", "{read}");
    let second = read["weights"].as_array().unwrap().iter().find(|r| r[0] == "DEMO-A-0002").unwrap();
    assert_eq!(second[1].as_f64(), Some(71.5), "{read}");

    let (code, out, err) = run(&["extract", "--study", "S_DEMO", "--format", "r", "--out", out_dir], &target, None);
    assert_eq!(code, 0, "{out}{err}");
    let script = std::fs::read_to_string(dir.join("S_DEMO_r.R")).unwrap();
    assert!(script.contains("read.csv(\"S_DEMO_r.csv\""), "{script}");
    assert!(
        script.contains("<- factor(data[[") && script.contains("attr(data[[\"WEIGHT_E1_C1\"]], \"label\")"),
        "{script}"
    );
    assert!(dir.join("S_DEMO_r.csv").is_file());

    let (code, out, err) = run(&["extract", "--study", "S_DEMO", "--format", "odm13", "--out", out_dir], &target, None);
    assert_eq!(code, 0, "{out}{err}");
    let odm = std::fs::read_to_string(dir.join("S_DEMO_odm13.xml")).unwrap();
    let (_, exported, _) = run(&["export", "--study", "S_DEMO"], &target, None);
    assert_eq!(odm.matches("<ItemData ").count(), exported.matches("<ItemData ").count());
    // Full ODM: the design, AdminData and the data with audit records, in one document.
    let (code, out, err) =
        run(&["extract", "--study", "S_DEMO", "--format", "odm13-full", "--out", out_dir], &target, None);
    assert_eq!(code, 0, "{out}{err}");
    let full = std::fs::read_to_string(dir.join("S_DEMO_odm13-full.xml")).unwrap();
    assert!(
        full.contains("<Study OID=\"S_DEMO\"") && full.contains("<AdminData") && full.contains("<AuditRecord"),
        "{full}"
    );
    // Long, tab-delimited: a row per value.
    let (code, out, err) =
        run(&["extract", "--study", "S_DEMO", "--format", "tsv-long", "--out", out_dir], &target, None);
    assert_eq!(code, 0, "{out}{err}");
    let tsv = parse_table(&std::fs::read_to_string(dir.join("S_DEMO_tsv-long.tsv")).unwrap(), '\t');
    assert_eq!(tsv.len() - 1, exported.matches("<ItemData ").count());
    let _ = std::fs::remove_dir_all(&dir);
    target.drop_db().await;
}

#[tokio::test]
async fn extract_exchange_sqlite() {
    extract_exchange(Target::sqlite()).await;
}

#[tokio::test]
async fn extract_exchange_postgres() {
    if let Some(t) = Target::postgres().await {
        extract_exchange(t).await;
    }
}

/// Format modules: the two built-in examples work (a REDCap-style CSV and an HTML listing); a
/// module an administrator adds under DATA_DIR/modules is used by name; a broken one is refused
/// with its template and line; a template cannot read files.
#[tokio::test]
async fn extract_format_modules() {
    let target = Target::sqlite();
    drop(serve_demo(&target));
    let dir = temp_dir("modules");
    let out_dir = dir.to_str().unwrap();
    let (code, out, err) =
        run(&["extract", "--study", "S_DEMO", "--format", "redcap-csv", "--out", out_dir], &target, None);
    assert_eq!(code, 0, "{out}{err}");
    let csv = std::fs::read_to_string(dir.join("S_DEMO_redcap-csv.csv")).unwrap();
    let rows = parse_table(&csv, ',');
    assert_eq!(&rows[0][..2], ["record_id", "redcap_data_access_group"]);
    let weight = rows[0].iter().position(|c| c == "weight_e1_c1").unwrap_or_else(|| panic!("{:?}", rows[0]));
    let second = rows.iter().find(|r| r[0] == "DEMO-A-0002").unwrap_or_else(|| panic!("{csv}"));
    assert_eq!((second[1].as_str(), second[weight].as_str()), ("s_demoa", "71.5"));

    let (code, out, err) =
        run(&["extract", "--study", "S_DEMO", "--format", "html-listing", "--out", out_dir], &target, None);
    assert_eq!(code, 0, "{out}{err}");
    let html = std::fs::read_to_string(dir.join("S_DEMO_html-listing.html")).unwrap();
    assert!(
        html.starts_with("<!doctype html>") && html.contains("<td>71.5</td>") && html.contains("participants."),
        "{html}"
    );

    // An administrator's module, a broken one, one that tries to read a file.
    let Target::Sqlite(data) = &target else { unreachable!() };
    let add = |name: &str, row: &str| {
        let m = data.join("modules").join(name);
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(
            m.join("module.json"),
            format!(r#"{{"name": "{name}", "description": "test", "extension": "txt"}}"#),
        )
        .unwrap();
        std::fs::write(m.join("header.jinja"), "IDS\n").unwrap();
        std::fs::write(m.join("row.jinja"), row).unwrap();
    };
    add("ids", "{{ participant.label }} at {{ participant.site }}");
    add("broken", "{{ participant.label ");
    add("snoop", "{% include '/etc/passwd' %}");
    let (code, out, err) = run(&["extract", "--study", "S_DEMO", "--format", "ids", "--out", out_dir], &target, None);
    assert_eq!(code, 0, "{out}{err}");
    let ids = std::fs::read_to_string(dir.join("S_DEMO_ids.txt")).unwrap();
    assert!(ids.starts_with("IDS\n") && ids.contains("DEMO-A-0002 at S_DEMOA\n"), "{ids}");
    let (code, _, err) = run(&["extract", "--study", "S_DEMO", "--format", "broken", "--out", out_dir], &target, None);
    assert_eq!(code, 1);
    assert!(err.contains("row.jinja line 1"), "{err}");
    let (code, _, err) = run(&["extract", "--study", "S_DEMO", "--format", "snoop", "--out", out_dir], &target, None);
    assert_eq!(code, 1);
    assert!(err.contains("row.jinja") && !err.contains("root:"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
    target.drop_db().await;
}

/// PHI items (the demo's participant initials) are left out of extracts unless a study-level
/// data manager asks for them; a site user's request is not enough.
async fn extract_phi(target: Target) {
    drop(serve_demo(&target));
    let dir = temp_dir("phi");
    let out_dir = dir.to_str().unwrap();
    let dictionary = || std::fs::read_to_string(dir.join("S_DEMO_csv-wide_dictionary.csv")).unwrap();
    let (code, out, err) = run(&["extract", "--study", "S_DEMO", "--out", out_dir, "--as", "demo_dm"], &target, None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("PHI items left out:") && out.contains("INITIALS"), "{out}");
    assert!(!dictionary().contains("INITIALS"), "PHI in the dictionary without asking");
    let (code, out, err) =
        run(&["extract", "--study", "S_DEMO", "--out", out_dir, "--include-phi", "--as", "demo_dm"], &target, None);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("PHI items left out"), "{out}");
    assert!(dictionary().lines().any(|l| l.contains("INITIALS") && l.ends_with(",Yes")), "{}", dictionary());
    let (code, out, err) = run(
        &["extract", "--study", "S_DEMO", "--out", out_dir, "--include-phi", "--as", "demo_investigator"],
        &target,
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("PHI items left out:"), "a site investigator got PHI: {out}");
    assert!(!dictionary().contains("INITIALS"));
    let _ = std::fs::remove_dir_all(&dir);
    target.drop_db().await;
}

#[tokio::test]
async fn extract_phi_sqlite() {
    extract_phi(Target::sqlite()).await;
}

#[tokio::test]
async fn extract_phi_postgres() {
    if let Some(t) = Target::postgres().await {
        extract_phi(t).await;
    }
}
