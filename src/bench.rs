//! `casebook bench odm`: how fast Casebook imports and exports CDISC ODM clinical data, each
//! figure next to a raw baseline measured in the same run on the same machine (see
//! `docs/performance.md`).
//!
//! For each backend (SQLite in a temporary directory; PostgreSQL in a scratch database created on
//! the server named by `--database-url` and dropped at the end) it builds a study through the
//! real use cases (5 XLSForms of 20 items, 10 events, published to Production), enrols the
//! participants and schedules their events through the app, writes an ODM 1.3.2 file of
//! N participants × 10 events × 5 forms × 20 items, then measures:
//!
//! - import through [`App::import_clinical`] (all or nothing: checked against the design, every
//!   value audited) against plain multi-row `INSERT`s of the same rows into a plain table of the
//!   same database ([`casebook_store::baseline`]);
//! - export through [`App::export_clinical`] into a file against writing the same values with
//!   quick-xml directly (no database);
//! - the peak resident memory (`VmHWM`, reset before each) of import and of export.
//!
//! The values come from small pools picked by a hash of their place, so the file, the raw
//! insert and the raw writer see the same values without holding them all in memory.

mod sdtm;

use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use casebook_app::accounts::NewUserInput;
use casebook_app::auth::Principal;
use casebook_app::capture::{EnrolInput, ScheduleInput};
use casebook_app::design::{EventFormInput, EventInput, Which};
use casebook_app::export::ClinicalExport;
use casebook_app::studies::NewStudyInput;
use casebook_app::{App, SecuritySettings};
use casebook_domain::clock::{Clock, SystemClock};
use casebook_domain::study::{StudyDetails, StudyStatus};
use casebook_store::Store;
use casebook_store::baseline::{RAW_BATCH, RawValue};

pub const EVENTS: usize = 10;
pub const FORMS: usize = 5;
pub const ITEMS: usize = 20;
/// Values a participant gets.
pub const PER_PARTICIPANT: usize = EVENTS * FORMS * ITEMS;

/// Goals (fractions of the raw baseline's rate).
const IMPORT_GOAL: f64 = 0.5;
const EXPORT_GOAL: f64 = 0.3;

/// What `casebook bench odm` was asked to do.
pub struct OdmBench {
    pub participants: usize,
    /// A PostgreSQL server URL (a database its user may create databases from).
    pub database_url: Option<String>,
    pub sdtm_file: Option<PathBuf>,
}

/// Runs the benchmark on SQLite, then on PostgreSQL when a URL is given.
///
/// # Errors
/// Any set-up or measured step failing (the scratch databases are still removed).
pub async fn run(args: OdmBench) -> Result<()> {
    if args.participants == 0 {
        bail!("--participants must be at least 1");
    }
    let dir = std::env::temp_dir().join(format!("casebook_bench_{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    println!(
        "casebook bench odm: {} participants × {EVENTS} events × {FORMS} forms × {ITEMS} items = {} values; {}",
        args.participants,
        args.participants * PER_PARTICIPANT,
        machine()
    );
    let result = run_backends(&args, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_backends(args: &OdmBench, dir: &Path) -> Result<()> {
    let url = format!("sqlite://{}", dir.join("bench.db").display());
    println!("\n== sqlite (temporary file, WAL, synchronous=NORMAL) ==");
    run_on(&url, args, dir).await?;
    if let Some(admin) = &args.database_url {
        if !admin.starts_with("postgres:") && !admin.starts_with("postgresql:") {
            bail!("--database-url must be a postgres:// URL (SQLite is always measured in a temporary directory)");
        }
        let name = format!("casebook_bench_{}", std::process::id());
        let url = casebook_store::baseline::create_scratch_postgres(admin, &name)
            .await
            .context("creating the scratch PostgreSQL database")?;
        println!("\n== postgres (scratch database {name}, dropped at the end) ==");
        let result = run_on(&url, args, dir).await;
        casebook_store::baseline::drop_scratch_postgres(admin, &name)
            .await
            .context("dropping the scratch PostgreSQL database")?;
        result?;
    }
    Ok(())
}

/// One backend: set up, the synthetic study, then the SDTM file when given.
async fn run_on(url: &str, args: &OdmBench, dir: &Path) -> Result<()> {
    let db = casebook_store::connect(url, 10).await.context("connecting")?;
    db.migrate().await.context("migrating")?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // Sign-in is not measured: the cheapest password hashing keeps set-up short.
    let security = SecuritySettings { argon2_memory_kib: 1024, argon2_iterations: 1, ..SecuritySettings::default() };
    let app = App::new(Store::new(db.clone(), clock), security);
    let admin = bench_admin(&app).await?;
    let result = async {
        synthetic(&app, &admin, args.participants, dir).await?;
        if let Some(path) = &args.sdtm_file {
            sdtm::run(&app, &admin, path, dir).await?;
        }
        Ok(())
    }
    .await;
    db.close().await;
    result
}

async fn bench_admin(app: &App) -> Result<Principal> {
    let input = NewUserInput {
        username: "bench_admin".into(),
        first_name: "Bench".into(),
        last_name: "Admin".into(),
        email: "bench_admin@localhost.localdomain".into(),
        institution: None,
        user_type: None,
        password: None,
    };
    app.bootstrap_admin(input).await.map_err(crate::app_error)?;
    app.cli_principal(Some("bench_admin")).await.map_err(crate::app_error)
}

/// The synthetic study's shape as the design in Production names it.
pub struct Shape {
    pub study_oid: String,
    pub metadata_version: String,
    pub events: Vec<String>,
    /// (form version OID, item group OID, item OIDs) of each form.
    pub forms: Vec<(String, String, Vec<String>)>,
    /// Participant OIDs (the file's `SubjectKey`s).
    pub participants: Vec<String>,
    pools: Pools,
}

/// The values items draw from, by type (item `i` of a form: 1 integer, 2 decimal, 3 date,
/// 4 text, 0 code list, as `form_markdown` declares them).
struct Pools {
    ints: Vec<String>,
    decimals: Vec<String>,
    dates: Vec<String>,
    texts: Vec<String>,
}

impl Pools {
    fn new() -> Self {
        let start = time::Date::from_calendar_date(2025, time::Month::January, 1).unwrap_or(time::Date::MIN);
        Self {
            ints: (0..120).map(|n| n.to_string()).collect(),
            decimals: (0..400).map(|n| format!("{}.{}", 40 + n / 10, n % 10)).collect(),
            dates: (0..365).map(|d| (start + time::Duration::days(d)).to_string()).collect(),
            texts: (0..64)
                .map(|n| match n % 4 {
                    0 => format!("note {n}: stable"),
                    1 => format!("BP < 140 & HR > 60 (visit {n})"),
                    2 => format!("\"reported\" by site nurse {n}"),
                    _ => format!("no change since visit {n}"),
                })
                .collect(),
        }
    }
}

impl Shape {
    /// Participant `p`'s value of item `i` of form `f` in event `e`.
    pub fn value(&self, p: usize, e: usize, f: usize, i: usize) -> &str {
        let place = (((p * EVENTS + e) * FORMS + f) * ITEMS + i) as u64;
        let h = usize::try_from(place.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40).unwrap_or(0);
        let pick = |v: &'static [&'static str]| v[h % v.len()];
        match (i + 1) % 5 {
            1 => &self.pools.ints[h % self.pools.ints.len()],
            2 => &self.pools.decimals[h % self.pools.decimals.len()],
            3 => &self.pools.dates[h % self.pools.dates.len()],
            4 => &self.pools.texts[h % self.pools.texts.len()],
            _ => pick(&["0", "1"]),
        }
    }

    pub fn values(&self) -> usize {
        self.participants.len() * PER_PARTICIPANT
    }
}

/// An XLSForm (markdown) of 20 items cycling through integer (≥ 0), decimal (> 0), date, text and
/// a yes/no code list.
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
        let _ = writeln!(md, "| | {ty} | q{i:02} | Question {i} of form {k} | g{k} | {constraint} |");
    }
    md.push_str("| choices |\n| | list_name | name | label |\n| | yn | 1 | Yes |\n| | yn | 0 | No |\n");
    let _ = write!(md, "| settings |\n| | form_title | form_id | version |\n| | Bench form {k} | bench_f{k} | v1 |\n");
    md
}

/// The study through the real use cases: forms uploaded, events, published, promoted, opened.
async fn design_study(app: &App, admin: &Principal) -> Result<Shape> {
    let e = crate::app_error;
    let details = StudyDetails { protocol_id: "BENCH".into(), name: "ODM benchmark".into(), ..Default::default() };
    let study = app.create_study(admin, NewStudyInput { details, parameters: None }).await.map_err(e)?;
    let mut form_oids = Vec::new();
    for k in 1..=FORMS {
        let md = form_markdown(k);
        let up = app.upload_form(admin, &study.oid, &format!("bench_f{k}.md"), md.as_bytes(), None).await;
        form_oids.push(up.map_err(e).with_context(|| format!("uploading form {k}"))?.form_oid);
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
        events.push(app.save_event(admin, &study.oid, None, input).await.map_err(e)?.oid.to_string());
    }
    let published = app.publish_design(admin, &study.oid, Some("benchmark".into())).await.map_err(e)?;
    app.promote_design(admin, &study.oid, published.version.number).await.map_err(e)?;
    app.set_study_status(admin, &study.oid, StudyStatus::Available, Some("benchmark".into())).await.map_err(e)?;
    let design = app.design(admin, &study.oid, Which::Production).await.map_err(e)?;
    let mut forms = Vec::new();
    for f in &form_oids {
        let v = design.form(f).and_then(|d| d.versions.first()).context("a published form without a version")?;
        let items: Vec<String> = v.items.iter().map(|i| i.oid.to_string()).collect();
        let group = v.items.first().map(|i| i.group_oid.to_string()).unwrap_or_default();
        forms.push((v.oid.to_string(), group, items));
    }
    Ok(Shape {
        study_oid: study.oid,
        metadata_version: format!("v{}", published.version.number),
        events,
        forms,
        participants: Vec::new(),
        pools: Pools::new(),
    })
}

/// Enrols `n` participants and schedules every event for each, through the app (a few tasks at
/// once); returns their OIDs in order.
pub async fn enrol_and_schedule(
    app: &App,
    admin: &Principal,
    study_oid: &str,
    labels: Vec<String>,
    events: &[Vec<String>],
) -> Result<Vec<String>> {
    const WORKERS: usize = 4;
    let labels = Arc::new(labels);
    let events = Arc::new(events.to_vec());
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        let (app, admin, study, labels, events) =
            (app.clone(), admin.clone(), study_oid.to_owned(), labels.clone(), events.clone());
        tasks.spawn(async move {
            let mut out = Vec::new();
            for i in (w..labels.len()).step_by(WORKERS) {
                let input = EnrolInput {
                    site: study.clone(),
                    label: Some(labels[i].clone()),
                    secondary_label: None,
                    person_id: None,
                    sex: Some(if i % 2 == 0 { "f" } else { "m" }.into()),
                    date_of_birth: Some("1970-01-01".into()),
                    enrolled_on: "2025-01-01".into(),
                    group: None,
                };
                let p = app.enrol(&admin, &study, input).await?;
                let wanted = events.get(i).or(events.first()).cloned().unwrap_or_default();
                for event in wanted {
                    let input = ScheduleInput { event, start: None, end: None, location: None };
                    app.schedule_event(&admin, &study, &p.oid, input).await?;
                }
                out.push((i, p.oid));
            }
            Ok::<_, casebook_app::AppError>(out)
        });
    }
    let mut oids = vec![String::new(); labels.len()];
    while let Some(done) = tasks.join_next().await {
        for (i, oid) in done.context("an enrolment task panicked")?.map_err(crate::app_error)? {
            oids[i] = oid;
        }
    }
    Ok(oids)
}

/// Writes the ODM 1.3.2 ClinicalData file of the synthetic study.
fn write_file(shape: &Shape, path: &Path) -> Result<u64> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let created = SystemClock.now().format(&time::format_description::well_known::Rfc3339)?;
    writeln!(w, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
    writeln!(
        w,
        r#"<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3" ODMVersion="1.3.2" FileType="Snapshot" FileOID="BENCH-{}" CreationDateTime="{created}">"#,
        shape.participants.len()
    )?;
    writeln!(w, r#"<ClinicalData StudyOID="{}" MetaDataVersionOID="{}">"#, shape.study_oid, shape.metadata_version)?;
    let mut escaped = String::new();
    for (p, key) in shape.participants.iter().enumerate() {
        writeln!(w, r#"<SubjectData SubjectKey="{key}">"#)?;
        for (e, event) in shape.events.iter().enumerate() {
            writeln!(w, r#"<StudyEventData StudyEventOID="{event}">"#)?;
            for (f, (version, group, items)) in shape.forms.iter().enumerate() {
                writeln!(w, r#"<FormData FormOID="{version}">"#)?;
                writeln!(w, r#"<ItemGroupData ItemGroupOID="{group}">"#)?;
                for (i, item) in items.iter().enumerate() {
                    escaped.clear();
                    escape_attr(shape.value(p, e, f, i), &mut escaped);
                    writeln!(w, r#"<ItemData ItemOID="{item}" Value="{escaped}"/>"#)?;
                }
                writeln!(w, "</ItemGroupData>\n</FormData>")?;
            }
            writeln!(w, "</StudyEventData>")?;
        }
        writeln!(w, "</SubjectData>")?;
    }
    writeln!(w, "</ClinicalData>\n</ODM>")?;
    w.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

fn escape_attr(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}

/// The raw insert baseline: the synthetic values as plain rows, 1,000 a statement, one
/// transaction.
async fn raw_insert(db: &casebook_store::Db, shape: &Shape) -> Result<f64> {
    db.create_raw_values_table().await?;
    let t = Instant::now();
    let rows = raw_batch(db);
    let mut tx = db.begin_raw_values(rows).await?;
    let mut batch: Vec<RawValue<'_>> = Vec::with_capacity(rows);
    for (p, participant) in shape.participants.iter().enumerate() {
        for (e, event) in shape.events.iter().enumerate() {
            for (f, (form, group, items)) in shape.forms.iter().enumerate() {
                for (i, item) in items.iter().enumerate() {
                    batch.push(RawValue {
                        participant,
                        event,
                        form,
                        group,
                        row: 1,
                        item,
                        value: shape.value(p, e, f, i),
                    });
                    if batch.len() == rows {
                        tx.insert(&batch).await?;
                        batch.clear();
                    }
                }
            }
        }
    }
    tx.insert(&batch).await?;
    tx.commit().await?;
    let secs = t.elapsed().as_secs_f64();
    let n = db.count_raw_values().await?;
    if usize::try_from(n).ok() != Some(shape.values()) {
        bail!("the raw insert wrote {n} rows, not {}", shape.values());
    }
    db.drop_raw_values_table().await?;
    Ok(secs)
}

/// Rows a raw `INSERT` statement carries: the fastest measured on each backend (sqlx binds a
/// SQLite statement's parameters in time growing faster than their number: 50 rows a statement
/// ran at ~250 K rows/s, 1,000 rows at ~20 K); `BENCH_RAW_BATCH` overrides.
pub fn raw_batch(db: &casebook_store::Db) -> usize {
    let default = match db.backend() {
        casebook_store::Backend::Sqlite => 50,
        casebook_store::Backend::Postgres => RAW_BATCH,
    };
    std::env::var("BENCH_RAW_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The raw writer baseline: the same values as ODM written with quick-xml into a file.
fn raw_write(shape: &Shape, path: &Path) -> Result<(f64, u64)> {
    use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, Event};
    let t = Instant::now();
    let file = std::fs::File::create(path)?;
    let mut w = quick_xml::Writer::new(BufWriter::with_capacity(1 << 20, file));
    let created = SystemClock.now().format(&time::format_description::well_known::Rfc3339)?;
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    w.write_event(Event::Start(BytesStart::new("ODM").with_attributes([
        ("xmlns", "http://www.cdisc.org/ns/odm/v1.3"),
        ("ODMVersion", "1.3.2"),
        ("FileType", "Snapshot"),
        ("FileOID", "BENCH-RAW"),
        ("CreationDateTime", created.as_str()),
    ])))?;
    w.write_event(Event::Start(BytesStart::new("ClinicalData").with_attributes([
        ("StudyOID", shape.study_oid.as_str()),
        ("MetaDataVersionOID", shape.metadata_version.as_str()),
    ])))?;
    for (p, key) in shape.participants.iter().enumerate() {
        w.write_event(Event::Start(BytesStart::new("SubjectData").with_attributes([("SubjectKey", key.as_str())])))?;
        for (e, event) in shape.events.iter().enumerate() {
            let start = BytesStart::new("StudyEventData").with_attributes([("StudyEventOID", event.as_str())]);
            w.write_event(Event::Start(start))?;
            for (f, (version, group, items)) in shape.forms.iter().enumerate() {
                w.write_event(Event::Start(
                    BytesStart::new("FormData").with_attributes([("FormOID", version.as_str())]),
                ))?;
                let g = BytesStart::new("ItemGroupData").with_attributes([("ItemGroupOID", group.as_str())]);
                w.write_event(Event::Start(g))?;
                for (i, item) in items.iter().enumerate() {
                    let d = BytesStart::new("ItemData")
                        .with_attributes([("ItemOID", item.as_str()), ("Value", shape.value(p, e, f, i))]);
                    w.write_event(Event::Empty(d))?;
                }
                w.write_event(Event::End(BytesEnd::new("ItemGroupData")))?;
                w.write_event(Event::End(BytesEnd::new("FormData")))?;
            }
            w.write_event(Event::End(BytesEnd::new("StudyEventData")))?;
        }
        w.write_event(Event::End(BytesEnd::new("SubjectData")))?;
    }
    w.write_event(Event::End(BytesEnd::new("ClinicalData")))?;
    w.write_event(Event::End(BytesEnd::new("ODM")))?;
    let mut inner = w.into_inner();
    inner.flush()?;
    drop(inner);
    Ok((t.elapsed().as_secs_f64(), std::fs::metadata(path)?.len()))
}

/// Peak memory of a phase: the high-water mark is reset before it (Linux).
pub struct Peak {
    before_kib: Option<u64>,
}

impl Peak {
    pub fn start() -> Self {
        let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        Self { before_kib: if reset { status_kib("VmRSS") } else { None } }
    }

    /// "peak RSS X MB (+Y MB)", or why it is unknown.
    pub fn report(&self) -> String {
        match (self.before_kib, status_kib("VmHWM")) {
            (Some(before), Some(hwm)) => {
                format!("{:>6.0} MB (+{:.0} MB)", kib_mb(hwm), kib_mb(hwm.saturating_sub(before)))
            }
            _ => "unknown (no /proc/self/clear_refs)".into(),
        }
    }
}

#[allow(clippy::cast_precision_loss)] // memory sizes, printed rounded
fn kib_mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))?;
    line[key.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// The machine, for the header.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(str::trim)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(std::num::NonZero::get).unwrap_or(0);
    format!("{cores} cores ({cpu})")
}

#[allow(clippy::cast_precision_loss)] // counts far below 2^52
pub fn rate(values: usize, secs: f64) -> f64 {
    values as f64 / secs.max(1e-9)
}

/// One line of the table: what, values, seconds, items/s, and against its baseline when given.
pub fn row(what: &str, values: usize, secs: f64, against: Option<(f64, f64)>, memory: &str) {
    let r = rate(values, secs);
    let vs = match against {
        Some((raw, goal)) => {
            let ratio = r / raw;
            let verdict = if ratio >= goal { "meets goal" } else { "BELOW GOAL" };
            format!("{:>6.1} % of raw  (goal ≥ {:.0} %: {verdict})", ratio * 100.0, goal * 100.0)
        }
        None => String::new(),
    };
    println!("  {what:<46} {values:>9} values {secs:>9.2} s {r:>11.0} items/s  {vs}{memory}");
}

/// The synthetic study on one backend.
async fn synthetic(app: &App, admin: &Principal, n: usize, dir: &Path) -> Result<()> {
    let e = crate::app_error;
    let t = Instant::now();
    let mut shape = design_study(app, admin).await?;
    let design_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    // Labels whose first 8 characters differ: participant OIDs keep 8 characters of the label
    // (as OpenClinica's), so `BENCH-000001`… would all start `SS_BENCH000` and take a random suffix.
    let labels = (1..=n).map(|i| format!("P{i:07}")).collect();
    let events = vec![shape.events.clone()];
    shape.participants = enrol_and_schedule(app, admin, &shape.study_oid, labels, &events).await?;
    println!(
        "  set-up: design (5 XLSForms, 10 events) published and promoted in {design_s:.2} s; {n} participants enrolled \
         and {} events scheduled through the app in {:.1} s",
        n * EVENTS,
        t.elapsed().as_secs_f64()
    );
    let path = dir.join("bench-odm.xml");
    let t = Instant::now();
    let size = write_file(&shape, &path)?;
    println!(
        "  file: {} ({:.1} MB, {} ItemData) generated in {:.2} s",
        path.display(),
        mb(size),
        shape.values(),
        t.elapsed().as_secs_f64()
    );
    let values = shape.values();

    // Raw baselines first (the raw table is dropped before Casebook's import).
    let raw_insert_s = raw_insert(app.store().db(), &shape).await.context("raw insert baseline")?;
    let raw_path = dir.join("bench-raw.xml");
    let (raw_write_s, raw_size) = raw_write(&shape, &raw_path).context("raw writer baseline")?;
    let _ = std::fs::remove_file(&raw_path);

    // The check alone (what import does first), streamed from the file.
    let t = Instant::now();
    let file = std::fs::File::open(&path)?;
    let check = app
        .check_clinical_import(admin, &shape.study_oid, "bench-odm.xml", std::io::BufReader::new(file), None)
        .await
        .map_err(e)?;
    let check_s = t.elapsed().as_secs_f64();
    refuse_unless_accepted(&check, "the dry run")?;

    // Import, all or nothing.
    let peak = Peak::start();
    let t = Instant::now();
    let source = casebook_app::import::ImportSource::file(path.clone(), false);
    let report = app.import_clinical(admin, &shape.study_oid, "bench-odm.xml", source).await.map_err(e)?;
    let import_s = t.elapsed().as_secs_f64();
    let import_mem = peak.report();
    refuse_unless_accepted(&report, "the import")?;
    if report.values != values {
        bail!("the import counted {} values, not {values}", report.values);
    }

    // Export into a file.
    let out = dir.join("bench-export.xml");
    let (export_s, exported, export_size, export_mem) = export_to_file(app, admin, &shape.study_oid, &out).await?;
    let _ = std::fs::remove_file(&out);
    if exported != values {
        bail!("the export wrote {exported} values, not {values}");
    }

    let raw_in = rate(values, raw_insert_s);
    let raw_out = rate(values, raw_write_s);
    println!(
        "  {:<46} {:>16} {:>11} {:>19}  ratio to the raw baseline of the same run, peak RSS",
        "measurement", "", "time", "rate"
    );
    row(
        "import: App::import_clinical (all or nothing)",
        values,
        import_s,
        Some((raw_in, IMPORT_GOAL)),
        &format!("  peak RSS {import_mem}"),
    );
    row("  of which the check (dry run, streamed)", values, check_s, None, "");
    row("  of which writing (import − check)", values, (import_s - check_s).max(1e-9), None, "");
    let raw_what = format!("raw insert: multi-row INSERT, {} rows/stmt", raw_batch(app.store().db()));
    row(&raw_what, values, raw_insert_s, None, "  (plain table, 1 transaction)");
    row(
        "export: App::export_clinical → file",
        values,
        export_s,
        Some((raw_out, EXPORT_GOAL)),
        &format!("  peak RSS {export_mem}"),
    );
    row("raw writer: quick-xml → file (no database)", values, raw_write_s, None, "");
    println!(
        "  import: {} forms written, {} marked complete; export {:.1} MB, raw writer {:.1} MB",
        report.written_forms,
        report.completed_forms,
        mb(export_size),
        mb(raw_size)
    );
    let _ = std::fs::remove_file(&path);
    extracts(app, admin, &shape.study_oid, dir).await
}

/// Each extract format over the whole study (values/s and peak memory), then two extracts at
/// once.
async fn extracts(app: &App, admin: &Principal, study_oid: &str, dir: &Path) -> Result<()> {
    let e = crate::app_error;
    let all = casebook_app::extract::DatasetDefinition::default();
    for format in ["csv-wide", "csv-long", "xlsx", "spss", "sas", "stata", "dataset-json", "redcap-csv"] {
        let out = dir.join(format!("extract-{format}"));
        let peak = Peak::start();
        let t = Instant::now();
        let outcome = app.extract_named(admin, study_oid, format, &all, &out).await.map_err(e)?;
        let secs = t.elapsed().as_secs_f64();
        let bytes: u64 = outcome.files.iter().map(|f| f.bytes).sum();
        row(
            &format!("extract {format}"),
            outcome.values,
            secs,
            None,
            &format!("  {:.1} MB, peak RSS {}", mb(bytes), peak.report()),
        );
        let _ = std::fs::remove_dir_all(&out);
    }
    let (a, b) = (dir.join("extract-a"), dir.join("extract-b"));
    let peak = Peak::start();
    let t = Instant::now();
    let (x, y) = tokio::join!(
        app.extract_named(admin, study_oid, "csv-long", &all, &a),
        app.extract_named(admin, study_oid, "spss", &all, &b)
    );
    let secs = t.elapsed().as_secs_f64();
    let values = x.map_err(e)?.values + y.map_err(e)?.values;
    row("two extracts at once (csv-long + spss)", values, secs, None, &format!("  peak RSS {}", peak.report()));
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
    Ok(())
}

/// Exports a study into a file; returns seconds, values, bytes and the peak memory.
pub async fn export_to_file(
    app: &App,
    admin: &Principal,
    study_oid: &str,
    out: &Path,
) -> Result<(f64, usize, u64, String)> {
    let peak = Peak::start();
    let t = Instant::now();
    let mut file = std::fs::File::create(out)?;
    let mut failed: Option<std::io::Error> = None;
    let mut bytes = 0u64;
    let count = app
        .export_clinical(admin, study_oid, &ClinicalExport::default(), |chunk| {
            bytes += chunk.len() as u64;
            if failed.is_none()
                && let Err(e) = file.write_all(&chunk)
            {
                failed = Some(e);
            }
            std::future::ready(failed.is_none())
        })
        .await
        .map_err(crate::app_error)?;
    if let Some(e) = failed {
        return Err(e).context("writing the export");
    }
    file.flush()?;
    drop(file);
    Ok((t.elapsed().as_secs_f64(), count.values, bytes, peak.report()))
}

/// Fails with the first problems when a check or import refused the file.
pub fn refuse_unless_accepted(report: &casebook_app::import::ImportReport, what: &str) -> Result<()> {
    if report.accepted {
        return Ok(());
    }
    let mut msg = format!("{what} refused the file: {} error(s)", report.errors.len());
    for p in report.errors.iter().take(5) {
        let _ = write!(msg, "\n  line {}: {} [{}]", p.line, p.message, p.code);
    }
    bail!(msg)
}

#[allow(clippy::cast_precision_loss)] // file sizes, printed rounded
pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1_000_000.0
}
