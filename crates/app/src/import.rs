//! Checking an ODM 1.3.2 ClinicalData file against a study before importing it (a dry run):
//! the file is streamed once, record by record, and every problem is reported with its line and
//! column, participant, event, form, item and value — not only the first. Nothing is written.
//!
//! What is checked: the file's study is this study (or one of its sites); each participant exists
//! (found by OID or label), is not removed, and is at a site where the user may import; each
//! event occurrence is scheduled and still takes data; each form is in its event's definition, in
//! a version that exists (OpenClinica 3 names the version in `FormOID`; OpenClinica 4 names the
//! form and its `FormLayoutOID`) and matches a started form's version; each value belongs to the
//! form version and its item group, has a valid repeat key, and fits its item (type, length,
//! code list, null flavours allowed in the event); then the form as it would be after the
//! import — stored values plus imported ones — is evaluated: failed hard checks are errors,
//! soft checks warnings (an import opens a Failed Validation Check note for them), and required
//! items still empty warnings (the form would stay in data entry).

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use casebook_domain::capture::evaluate::{EvalContext, Slot, evaluate};
use casebook_domain::capture::status::EventStatus;
use casebook_domain::design::{FormVersion, StudyDesign};
use casebook_domain::notes::{NoteStatus, NoteType};
use casebook_domain::role::Permission;
use casebook_formats::odm::clinical::{
    ClinicalReader, FormRecord, NoteRecord, Record, SubjectRecord, TransactionType, UpsertOn,
};
use casebook_store::capture::{ParticipantRow, StudyEventRow};
use casebook_store::studies::StudyRow;
use serde::Serialize;

use crate::auth::Principal;
use crate::capture::{EnrolInput, Enrolment, check_enrolment};
use crate::entry::{Held, SaveFormInput, ValueInput, completion_problems, parse_input, slot, values_of};
use crate::{App, AppError};

/// Problems reported at most (the report says when more were found).
const MAX_PROBLEMS: usize = 10_000;

/// One problem of an import file, with where it is.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ImportProblem {
    pub line: usize,
    pub column: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub form: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub code: String,
    pub message: String,
}

/// What the check found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    pub file_name: String,
    /// `plain`, `openclinica3` or `openclinica4`.
    pub flavour: String,
    /// Nothing was written.
    pub dry_run: bool,
    /// The file would be accepted as a whole (no errors).
    pub accepted: bool,
    pub participants: usize,
    pub events: usize,
    pub forms: usize,
    pub values: usize,
    pub errors: Vec<ImportProblem>,
    pub warnings: Vec<ImportProblem>,
    /// More problems were found than reported.
    pub truncated: bool,
    /// Participants the import enrols (or would, in a dry run).
    pub enrolled: usize,
    /// Event occurrences the import schedules (or would, in a dry run).
    pub scheduled: usize,
    /// Forms whose data the import changed (0 in a dry run or when refused).
    pub written_forms: usize,
    /// Forms the import marked complete.
    pub completed_forms: usize,
    /// Notes threads the import opened (`OpenClinica:DiscrepancyNotes`).
    pub notes_opened: usize,
    /// Per-record mode: the import was cancelled; the forms logged before it were written.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
    /// Per-record mode: one row per form with what happened to it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<ImportLogRow>,
}

/// What a per-record import did with one form (OpenClinica 4's import log).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ImportLogRow {
    pub line: usize,
    /// The participant as the file names it (OID, else label).
    pub participant: String,
    pub event_oid: String,
    pub event_repeat_key: i32,
    pub form: String,
    /// `Inserted`, `Updated`, `No Change` or `Failed`.
    pub status: &'static str,
    pub message: String,
}

impl ImportReport {
    /// The per-record log as CSV (RFC 4180) in OpenClinica 4's XML import log columns, one row
    /// per form (`Type` = form), stamped with `at`.
    #[must_use]
    pub fn log_csv(&self, at: time::OffsetDateTime) -> String {
        let field = |s: &str| {
            if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() }
        };
        let stamp = at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        let mut out = String::from(
            "SubjectKey,ParticipantID,StudyEventOID,StudyEventRepeatKey,FormOID,ItemGroupOID,ItemGroupRepeatKey,ItemOID,Type,Status,Timestamp,Message\r\n",
        );
        for r in &self.log {
            let row = [
                r.participant.clone(),
                r.participant.clone(),
                r.event_oid.clone(),
                r.event_repeat_key.to_string(),
                r.form.clone(),
                String::new(),
                String::new(),
                String::new(),
                "form".to_owned(),
                r.status.to_owned(),
                stamp.clone(),
                format!("line {}: {}", r.line, r.message),
            ];
            out.push_str(&row.iter().map(|f| field(f)).collect::<Vec<_>>().join(","));
            out.push_str("\r\n");
        }
        out
    }
}

/// Where a running import stands, shared with whoever watches it (a job's progress) and the
/// way to stop it: the import looks at [`ImportProgress::cancel`] between records.
#[derive(Debug, Default)]
pub struct ImportProgress {
    bytes_read: AtomicU64,
    total_bytes: AtomicU64,
    /// 0 waiting, 1 checking the file, 2 writing, 3 finished.
    phase: AtomicU8,
    forms_written: AtomicU64,
    cancelled: AtomicBool,
}

/// A snapshot of an [`ImportProgress`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProgressView {
    /// `waiting`, `checking` (the first pass: every record validated), `writing` (the second
    /// pass) or `finished`.
    pub phase: &'static str,
    /// Bytes of the file read by the current pass.
    pub bytes_read: u64,
    pub total_bytes: u64,
    /// The whole import's progress: the check is the first half, the writing the second.
    pub percent: u8,
    pub forms_written: u64,
    pub cancel_requested: bool,
}

impl ImportProgress {
    /// Asks the import to stop: all or nothing, nothing is written; per record, the forms
    /// written before the request stay.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    /// Whether [`Self::cancel`] was called.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    fn start_pass(&self, phase: u8) {
        self.bytes_read.store(0, Ordering::Relaxed);
        self.phase.store(phase, Ordering::Relaxed);
    }

    fn wrote_form(&self) {
        self.forms_written.fetch_add(1, Ordering::Relaxed);
    }

    /// Where the import stands now.
    #[must_use]
    pub fn view(&self) -> ProgressView {
        let (read, total) = (self.bytes_read.load(Ordering::Relaxed), self.total_bytes.load(Ordering::Relaxed));
        let phase = self.phase.load(Ordering::Relaxed);
        let pass = u8::try_from((read.min(total) * 50).checked_div(total).unwrap_or(0)).unwrap_or(50);
        ProgressView {
            phase: ["waiting", "checking", "writing", "finished"][usize::from(phase.min(3))],
            bytes_read: read,
            total_bytes: total,
            percent: match phase {
                0 => 0,
                1 => pass,
                2 => 50 + pass,
                _ => 100,
            },
            forms_written: self.forms_written.load(Ordering::Relaxed),
            cancel_requested: self.is_cancelled(),
        }
    }
}

/// A file on disk an import reads (twice: the check, then the writing), deleted with the last
/// handle when it was spooled from an upload.
#[derive(Debug)]
pub struct ImportFile {
    path: PathBuf,
    delete: bool,
}

impl Drop for ImportFile {
    fn drop(&mut self) {
        if self.delete
            && let Err(e) = std::fs::remove_file(&self.path)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "an uploaded import file could not be deleted");
        }
    }
}

/// What an import reads: bytes in memory (small files, tests) or a file on disk (uploads are
/// spooled to disk, so a file of any size is read with constant memory), with the progress it
/// reports to.
#[derive(Debug, Clone)]
pub struct ImportSource {
    data: SourceData,
    progress: Arc<ImportProgress>,
    /// The job importing it, named in the audit rows of what it writes.
    job: Option<String>,
}

#[derive(Debug, Clone)]
enum SourceData {
    Bytes(Arc<[u8]>),
    File(Arc<ImportFile>),
}

impl ImportSource {
    /// A file on disk; `delete_when_done`: removed once the last clone of the source is gone
    /// (an upload spooled to a temporary file).
    #[must_use]
    pub fn file(path: PathBuf, delete_when_done: bool) -> Self {
        Self::from_data(SourceData::File(Arc::new(ImportFile { path, delete: delete_when_done })))
    }

    fn from_data(data: SourceData) -> Self {
        Self { data, progress: Arc::new(ImportProgress::default()), job: None }
    }

    /// Reports to `progress` (and obeys its cancellation).
    #[must_use]
    pub fn with_progress(mut self, progress: Arc<ImportProgress>) -> Self {
        self.progress = progress;
        self
    }

    /// Imported by the background job `id`: the audit rows of what it writes name the job.
    #[must_use]
    pub fn with_job(mut self, id: &str) -> Self {
        self.job = Some(id.to_owned());
        self
    }

    /// The audit actor of what an import of this source writes: the user, through the import
    /// channel, with the job's id (else the request's) as the request id.
    fn actor(&self, who: &Principal) -> casebook_store::Actor {
        let mut actor = who.actor();
        actor.channel = casebook_domain::audit::Channel::Import;
        if let Some(job) = &self.job {
            actor.request_id = Some(format!("job:{job}"));
        }
        actor
    }

    /// The progress this source reports to.
    #[must_use]
    pub fn progress(&self) -> &Arc<ImportProgress> {
        &self.progress
    }

    /// Opens the data for one pass, counting what is read.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(&self) -> std::io::Result<Box<dyn BufRead + Send>> {
        let (inner, len): (Box<dyn BufRead + Send>, u64) = match &self.data {
            SourceData::Bytes(b) => (Box::new(std::io::Cursor::new(Arc::clone(b))), b.len() as u64),
            SourceData::File(f) => {
                let file = std::fs::File::open(&f.path)?;
                let len = file.metadata()?.len();
                (Box::new(std::io::BufReader::with_capacity(256 * 1024, file)), len)
            }
        };
        self.progress.total_bytes.store(len, Ordering::Relaxed);
        Ok(Box::new(Counting { inner, progress: Arc::clone(&self.progress) }))
    }

    /// The first `ClinicalData/@StudyOID` of the file.
    #[must_use]
    pub fn study_oid(&self) -> Option<String> {
        let mut reader = ClinicalReader::new(self.open().ok()?);
        while let Ok(Some(r)) = reader.next_record() {
            if let Record::Study(s) = r {
                return Some(s.study_oid);
            }
        }
        None
    }
}

impl From<Vec<u8>> for ImportSource {
    fn from(b: Vec<u8>) -> Self {
        Self::from_data(SourceData::Bytes(b.into()))
    }
}

impl From<&[u8]> for ImportSource {
    fn from(b: &[u8]) -> Self {
        Self::from_data(SourceData::Bytes(b.into()))
    }
}

impl From<&ImportSource> for ImportSource {
    fn from(s: &ImportSource) -> Self {
        s.clone()
    }
}

/// A reader that adds what is consumed to the progress.
struct Counting {
    inner: Box<dyn BufRead + Send>,
    progress: Arc<ImportProgress>,
}

impl std::io::Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl BufRead for Counting {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.progress.bytes_read.fetch_add(amt as u64, Ordering::Relaxed);
        self.inner.consume(amt);
    }
}

/// The error of a cancelled import.
fn cancelled() -> AppError {
    AppError::Conflict("the import was cancelled; nothing more was written".to_owned())
}

/// Where the reader stands: the participant and event occurrence of the records that follow.
#[derive(Default)]
struct Place {
    participant: Option<(ParticipantRow, String)>,
    participant_key: Option<String>,
    event: Option<StudyEventRow>,
    event_key: Option<String>,
}

impl ImportReport {
    fn push(&mut self, error: bool, p: ImportProblem) {
        if self.errors.len() + self.warnings.len() >= MAX_PROBLEMS {
            self.truncated = true;
            return;
        }
        if error { self.errors.push(p) } else { self.warnings.push(p) }
    }
}

/// An OID of the file as the design knows it: as written, else converted the way the ODM
/// metadata import converts OIDs that are not Casebook OIDs (`IT.AGE` → `IT_AGE`), so data from
/// a system with such OIDs import into the design built from its metadata.
fn local_oid(raw: &str, exists: impl Fn(&str) -> bool) -> String {
    if exists(raw) {
        return raw.to_owned();
    }
    let converted: String =
        raw.trim().chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    if exists(&converted) { converted } else { raw.to_owned() }
}

fn problem(line: usize, column: usize, code: &str, message: String) -> ImportProblem {
    ImportProblem {
        line,
        column,
        participant: None,
        event: None,
        form: None,
        item: None,
        row: None,
        value: None,
        code: code.to_owned(),
        message,
    }
}

impl App {
    /// Checks an ODM ClinicalData file against the study without writing anything (see the
    /// module documentation for what is checked). `max_bytes` limits the file's size.
    ///
    /// # Errors
    /// [`AppError::NotFound`] for an invisible study; [`AppError::Forbidden`] without the
    /// import permission anywhere in the study. Problems of the file are in the report.
    pub async fn check_clinical_import<R: BufRead + Send>(
        &self,
        who: &Principal,
        study_oid: &str,
        file_name: &str,
        input: R,
        max_bytes: Option<u64>,
    ) -> Result<ImportReport, AppError> {
        self.check_impl(who, study_oid, file_name, input, max_bytes, None).await
    }

    /// [`Self::check_clinical_import`] of a source, reporting to its progress (a dry-run job).
    ///
    /// # Errors
    /// As [`Self::check_clinical_import`]; a conflict when cancelled.
    pub async fn check_clinical_source(
        &self,
        who: &Principal,
        study_oid: &str,
        file_name: &str,
        source: impl Into<ImportSource>,
    ) -> Result<ImportReport, AppError> {
        let source = source.into();
        let progress = Arc::clone(source.progress());
        progress.start_pass(1);
        let input = source.open().map_err(|e| AppError::invalid("file", format!("the file cannot be read: {e}")))?;
        let report = self.check_impl(who, study_oid, file_name, input, None, Some(&progress)).await?;
        progress.start_pass(3);
        Ok(report)
    }

    #[allow(clippy::too_many_lines)]
    async fn check_impl<R: BufRead + Send>(
        &self,
        who: &Principal,
        study_oid: &str,
        file_name: &str,
        input: R,
        max_bytes: Option<u64>,
        progress: Option<&ImportProgress>,
    ) -> Result<ImportReport, AppError> {
        let (study, access) = self.study_with_access(who, study_oid).await?;
        let sites = self.store().sites_of(study.id).await?;
        let may_import_somewhere = Self::may(&access, &study, &study, Permission::ImportData)
            || sites.iter().any(|s| Self::may(&access, &study, s, Permission::ImportData));
        if !may_import_somewhere {
            return Err(AppError::Forbidden("import data in this study"));
        }
        let (_, design) = self.production_design(study.id).await?;
        let now = self.store().clock().now();
        let ctx = EvalContext { today: now.date(), now };
        let mut report = ImportReport { file_name: file_name.to_owned(), dry_run: true, ..ImportReport::default() };
        let params: casebook_domain::study::StudyParameters =
            serde_json::from_str(&study.parameters).map_err(crate::error::anyhow_like::internal)?;
        let mut file_study: Option<String> = None;
        let mut upsert_on = UpsertOn::default();
        let mut reader = ClinicalReader::with_max_bytes(input, max_bytes);
        let mut place = Place::default();
        loop {
            if progress.is_some_and(ImportProgress::is_cancelled) {
                return Err(cancelled());
            }
            let record = match reader.next_record() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(d) => {
                    let (line, column) = match d.location {
                        casebook_formats::diagnostic::Location::Xml { line, column } => (line, column),
                        _ => (0, 0),
                    };
                    report.push(true, problem(line, column, "unreadable", d.message.clone()));
                    break;
                }
            };
            match record {
                Record::Study(s) => {
                    file_study = Some(s.study_oid.clone());
                    upsert_on = s.upsert_on.unwrap_or_default();
                    let ours = s.study_oid == study.oid || sites.iter().any(|x| x.oid == s.study_oid);
                    if !ours {
                        report.push(
                            true,
                            problem(
                                s.line,
                                s.column,
                                "wrong_study",
                                format!(
                                    "the data are for study {}, not {} or one of its sites",
                                    s.study_oid, study.oid
                                ),
                            ),
                        );
                    }
                }
                Record::Subject(s) => {
                    report.participants += 1;
                    place = Place::default();
                    let key = s.subject.label.clone().or_else(|| s.subject.key.clone()).unwrap_or_default();
                    place.participant_key = Some(key.clone());
                    let mut p = problem(s.line, s.column, "", String::new());
                    p.participant = Some(key.clone());
                    let found = match (&s.subject.key, &s.subject.label) {
                        (Some(k), _) if !k.is_empty() => self.store().participant(study.id, k).await?,
                        _ => None,
                    };
                    let found = match found {
                        Some(f) => Some(f),
                        None => match &s.subject.label {
                            Some(l) => self.store().participant(study.id, l).await?,
                            None => None,
                        },
                    };
                    let found = found.filter(|r| access.sees_site(r.site_id));
                    let Some(row) = found else {
                        if !params.import_enrols_participants {
                            p.code = "unknown_participant".into();
                            p.message = format!(
                                "participant {key} does not exist (this study's imports do not enrol participants: \
                                 study parameter import_enrols_participants)"
                            );
                            report.push(true, p);
                            continue;
                        }
                        // To be enrolled by the import: checked as an enrolment would be.
                        let site = import_site(&study, &sites, &s, file_study.as_deref());
                        if !Self::may(&access, &study, site, Permission::ImportData) {
                            p.code = "forbidden".into();
                            p.message = format!("you may not import data at site {}", site.oid);
                            report.push(true, p);
                            continue;
                        }
                        match check_enrolment(&params, now.date(), &enrolment_input(&s, site, now.date())) {
                            Ok(e) => {
                                let row = new_participant_row(&study, site, &s, &e, now);
                                place.participant = Some((row, site.oid.clone()));
                                report.enrolled += 1;
                            }
                            Err(errors) => {
                                for e in errors {
                                    let mut p = p.clone();
                                    p.code = "enrolment".into();
                                    p.message =
                                        format!("participant {key} cannot be enrolled: {}: {}", e.field, e.message);
                                    report.push(true, p);
                                }
                            }
                        }
                        continue;
                    };
                    let site = sites.iter().find(|x| x.id == row.site_id).unwrap_or(&study);
                    if row.status == "removed" || row.status == "auto_removed" {
                        p.code = "removed".into();
                        p.message = format!("participant {} is removed; restore it before importing", row.label);
                        report.push(true, p);
                        continue;
                    }
                    if !Self::may(&access, &study, site, Permission::ImportData) {
                        p.code = "forbidden".into();
                        p.message =
                            format!("you may not import data at site {} (or its status does not allow it)", site.oid);
                        report.push(true, p);
                        continue;
                    }
                    place.participant = Some((row, site.oid.clone()));
                }
                Record::Event(e) => {
                    report.events += 1;
                    place.event = None;
                    place.event_key = Some(format!("{}[{}]", e.event_oid, e.repeat_key.as_deref().unwrap_or("1")));
                    let Some((p, _)) = &place.participant else { continue };
                    let mut pr = problem(e.line, e.column, "", String::new());
                    pr.participant = Some(p.label.clone());
                    pr.event = Some(e.event_oid.clone());
                    let event_oid = local_oid(&e.event_oid, |o| design.event(o).is_some());
                    if design.event(&event_oid).is_none() {
                        pr.code = "unknown_event".into();
                        pr.message = format!("the design in Production has no event {}", e.event_oid);
                        report.push(true, pr);
                        continue;
                    }
                    let Some(repeat) =
                        e.repeat_key.as_deref().map_or(Some(1), |r| r.trim().parse::<i32>().ok().filter(|n| *n >= 1))
                    else {
                        pr.code = "bad_repeat_key".into();
                        pr.message = format!(
                            "StudyEventRepeatKey '{}' is not a whole number from 1",
                            e.repeat_key.unwrap_or_default()
                        );
                        report.push(true, pr);
                        continue;
                    };
                    let occurrence = self
                        .store()
                        .study_events(p.id)
                        .await?
                        .into_iter()
                        .find(|x| x.event_oid == event_oid && x.repeat_key == repeat);
                    let occurrence = if p.id < 0 { None } else { occurrence };
                    let removed = occurrence_removed(&occurrence);
                    let Some(ev) = occurrence.filter(|x| x.removal == "available") else {
                        if removed || !params.import_schedules_events {
                            pr.code = "event_not_scheduled".into();
                            pr.message = if removed {
                                format!("{}[{repeat}] of {} is removed; restore it first", e.event_oid, p.label)
                            } else {
                                format!(
                                    "{}[{repeat}] is not scheduled for {} (schedule it first, or allow imports to: \
                                     study parameter import_schedules_events)",
                                    e.event_oid, p.label
                                )
                            };
                            report.push(true, pr);
                            continue;
                        }
                        if design.event(&event_oid).is_some_and(|d| !d.repeating) && repeat != 1 {
                            pr.code = "bad_repeat_key".into();
                            pr.message =
                                format!("{} does not repeat: its only occurrence is 1, not {repeat}", e.event_oid);
                            report.push(true, pr);
                            continue;
                        }
                        let start = match e.start_date.as_deref().map(parse_start) {
                            None => None,
                            Some(Some(t)) => Some(t),
                            Some(None) => {
                                pr.code = "bad_start_date".into();
                                pr.message = format!(
                                    "OpenClinica:StartDate '{}' is not a date (YYYY-MM-DD) or a date and time",
                                    e.start_date.clone().unwrap_or_default()
                                );
                                report.push(true, pr);
                                continue;
                            }
                        };
                        report.scheduled += 1;
                        place.event = Some(new_event_row(p.id, &event_oid, repeat, start, now));
                        continue;
                    };
                    if let Some(why) = EventStatus::parse(&ev.status).and_then(EventStatus::refuses_data) {
                        pr.code = "event_closed".into();
                        pr.message = format!("{why}; its data cannot change");
                        report.push(true, pr);
                        continue;
                    }
                    place.event = Some(ev);
                }
                Record::Form(f) => {
                    report.forms += 1;
                    report.values += f.groups.iter().map(|g| g.items.len()).sum::<usize>();
                    if let (Some((p, site_oid)), Some(ev)) = (&place.participant, &place.event) {
                        self.check_form(&design, p, site_oid, ev, &f, &ctx, upsert_on, &mut report).await?;
                    }
                }
                Record::Notes(n) => {
                    let level = if n.event.is_some() { "event" } else { "participant" };
                    for note in &n.notes {
                        if let Err(m) = check_note(level, note) {
                            let mut pr = problem(note.line, note.column, "bad_note", m);
                            pr.participant.clone_from(&place.participant_key);
                            report.push(true, pr);
                        }
                    }
                }
            }
        }
        for d in reader.take_diagnostics().0 {
            let (line, column) = match d.location {
                casebook_formats::diagnostic::Location::Xml { line, column } => (line, column),
                _ => (0, 0),
            };
            let error = d.severity == casebook_formats::diagnostic::Severity::Error;
            report.push(error, problem(line, column, if error { "file" } else { "file_warning" }, d.message));
        }
        report.flavour = format!("{:?}", reader.flavour()).to_lowercase();
        report.errors.sort_by_key(|p| (p.line, p.column));
        report.warnings.sort_by_key(|p| (p.line, p.column));
        report.accepted = report.errors.is_empty();
        Ok(report)
    }

    /// Checks one form record (see the module documentation).
    #[allow(clippy::too_many_arguments, clippy::too_many_lines)]
    async fn check_form(
        &self,
        design: &StudyDesign,
        p: &ParticipantRow,
        site_oid: &str,
        ev: &StudyEventRow,
        f: &FormRecord,
        ctx: &EvalContext,
        upsert_on: UpsertOn,
        report: &mut ImportReport,
    ) -> Result<(), AppError> {
        let at = |line: usize, column: usize, code: &str, message: String| {
            let mut pr = problem(line, column, code, message);
            pr.participant = Some(p.label.clone());
            pr.event = Some(format!("{}[{}]", ev.event_oid, ev.repeat_key));
            pr.form = Some(f.form_oid.clone());
            pr
        };
        // OpenClinica 3 names the version; OpenClinica 4 the form and its layout (version).
        let resolved = resolve_form(design, f);
        let Some((form, version)) = resolved else {
            report.push(
                true,
                at(f.line, f.column, "unknown_form", format!("the design has no form or form version {}", f.form_oid)),
            );
            return Ok(());
        };
        let Some(event_form) =
            design.event(&ev.event_oid).and_then(|d| d.forms.iter().find(|x| x.form_oid == form.oid))
        else {
            report.push(
                true,
                at(
                    f.line,
                    f.column,
                    "form_not_in_event",
                    format!("event {} does not use form {}", ev.event_oid, form.oid),
                ),
            );
            return Ok(());
        };
        let allowed = event_form.allowed_versions_at(Some(site_oid));
        if !allowed.is_empty() && !allowed.iter().any(|v| v == &version.oid) {
            report.push(
                true,
                at(
                    f.line,
                    f.column,
                    "version_not_allowed",
                    format!("version {} of {} is not allowed at site {site_oid}", version.oid, form.oid),
                ),
            );
            return Ok(());
        }
        let existing =
            self.store().forms_of_event_id(ev.id).await?.into_iter().find(|x| x.form_oid == form.oid.as_str());
        if let Some(why) = upsert_refusal(upsert_on, existing.as_ref()) {
            report.push(false, at(f.line, f.column, "upsert_on", format!("form {} is {why}: left as it is", form.oid)));
            return Ok(());
        }
        if let Some(sdv) = f.sdv_status.as_deref().map(str::trim).filter(|v| {
            let v = v.to_ascii_lowercase().replace(['_', '-'], " ");
            v.contains("verified") && !v.contains("not")
        }) {
            report.push(
                false,
                at(
                    f.line,
                    f.column,
                    "sdv_not_imported",
                    format!(
                        "OpenClinica:SdvStatus '{sdv}' is not imported: source data verification is recorded by a \
                         monitor in Casebook, value by value"
                    ),
                ),
            );
        }
        let mut stored = Vec::new();
        if let Some(x) = &existing {
            if x.removal != "available" {
                report.push(
                    true,
                    at(f.line, f.column, "form_removed", format!("form {} is removed in this event", form.oid)),
                );
                return Ok(());
            }
            if x.form_version_oid != version.oid.as_str() {
                report.push(
                    true,
                    at(
                        f.line,
                        f.column,
                        "other_version",
                        format!("the form was started in version {}, the file has {}", x.form_version_oid, version.oid),
                    ),
                );
                return Ok(());
            }
            if x.dde_stage.as_deref() == Some("awaiting_dde") {
                report.push(
                    true,
                    at(f.line, f.column, "awaiting_dde", "the form awaits its second pass of double data entry".into()),
                );
                return Ok(());
            }
            stored = self.store().item_data(x.id).await?;
        }
        let mut held: BTreeMap<Slot, Held> = BTreeMap::new();
        for r in stored.iter().filter(|r| !r.deleted) {
            held.insert(
                slot(&r.group_oid, r.row_number, &r.item_oid),
                Held { value: r.value.clone(), null_flavour: r.null_flavour.clone() },
            );
        }
        let mut lines: BTreeMap<Slot, (usize, usize)> = BTreeMap::new();
        for g in &f.groups {
            let row = match g.repeat_key.as_deref() {
                None => 1,
                Some(k) => match k.trim().parse::<u32>() {
                    Ok(n) if n >= 1 => n,
                    _ => {
                        report.push(
                            true,
                            at(
                                g.line,
                                g.column,
                                "bad_repeat_key",
                                format!("ItemGroupRepeatKey '{k}' of {} is not a whole number from 1", g.oid),
                            ),
                        );
                        continue;
                    }
                },
            };
            if g.transaction_type == Some(TransactionType::Remove) {
                // The row goes (kept for the audit): only repeating groups have rows to remove.
                let group_oid = local_oid(&g.oid, |o| version.groups.iter().any(|x| x.oid.as_str() == o));
                match version.groups.iter().find(|x| x.oid.as_str() == group_oid) {
                    Some(def) if def.is_repeating() => held.retain(|s, _| !(s.group_oid == group_oid && s.row == row)),
                    Some(_) => report.push(
                        true,
                        at(
                            g.line,
                            g.column,
                            "not_repeating",
                            format!("group {} does not repeat: it has no row to remove", g.oid),
                        ),
                    ),
                    None => report.push(
                        true,
                        at(
                            g.line,
                            g.column,
                            "unknown_group",
                            format!("form version {} has no group {}", version.oid, g.oid),
                        ),
                    ),
                }
                continue;
            }
            for item in &g.items {
                let item_oid = local_oid(&item.oid, |o| version.items.iter().any(|i| i.oid.as_str() == o));
                let group_oid = local_oid(&g.oid, |o| version.groups.iter().any(|x| x.oid.as_str() == o));
                let mut pr = at(item.line, item.column, "", String::new());
                pr.item = Some(item.oid.clone());
                pr.row = Some(row);
                pr.value = item.value.clone();
                if let Some(def) = version.items.iter().find(|i| i.oid.as_str() == item_oid)
                    && def.group_oid.as_str() != group_oid
                {
                    pr.code = "wrong_group".into();
                    pr.message = format!("{} belongs to item group {}, not {}", item.oid, def.group_oid, g.oid);
                    report.push(true, pr);
                    continue;
                }
                let removed = item.transaction_type == Some(TransactionType::Remove);
                let input = ValueInput {
                    item: item_oid.clone(),
                    row,
                    value: if item.is_null || removed { None } else { item.value.clone() },
                    null_flavour: if item.is_null && !removed { item.reason_for_null.clone() } else { None },
                };
                match parse_input(version, event_form, &input) {
                    Ok((s, h)) => {
                        lines.insert(s.clone(), (item.line, item.column));
                        if h == Held::default() {
                            held.remove(&s);
                        } else {
                            held.insert(s, h);
                        }
                    }
                    Err(e) if e.code == "calculated" => {
                        pr.code = "calculated_ignored".into();
                        pr.message = format!("{} is calculated by the server; the imported value is ignored", item.oid);
                        report.push(false, pr);
                    }
                    Err(e) => {
                        pr.code = e.code;
                        pr.message = e.message;
                        report.push(true, pr);
                    }
                }
            }
        }
        // Its notes and its values' notes.
        let item_notes = f.groups.iter().flat_map(|g| g.items.iter()).flat_map(|i| i.notes.iter().map(move |n| (i, n)));
        for (level, item, n) in
            f.notes.iter().map(|n| ("form", None, n)).chain(item_notes.map(|(i, n)| ("item_data", Some(i), n)))
        {
            if let Err(m) = check_note(level, n) {
                let mut pr = at(n.line, n.column, "bad_note", m);
                pr.item = item.map(|i| i.oid.clone());
                report.push(true, pr);
            }
        }
        // The form as it would be: hard checks refuse, soft checks and empty required items warn.
        let fv = values_of(version, &held, &stored, &BTreeSet::new());
        let evaluation = evaluate(version, &fv, ctx);
        for issue in &evaluation.issues {
            let (line, column) = lines.get(&issue.slot).copied().unwrap_or((f.line, f.column));
            let mut pr = at(line, column, issue.code, issue.message.clone());
            pr.item = Some(issue.slot.item_oid.clone());
            pr.row = Some(issue.slot.row);
            pr.value = held.get(&issue.slot).and_then(|h| h.value.clone());
            if issue.code == "required" {
                pr.message = format!("{} (the form would stay in data entry)", issue.message);
                report.push(false, pr);
            } else if issue.hard {
                report.push(true, pr);
            } else {
                pr.message = format!("{} (a Failed Validation Check note would be opened)", issue.message);
                report.push(false, pr);
            }
        }
        Ok(())
    }
}

/// The site a participant the import enrols goes to: its `SiteRef` (a site OID, or the
/// `LOC_`-prefixed location Casebook's full exports name), else the site the file's
/// `ClinicalData/@StudyOID` names, else the study itself.
fn import_site<'a>(
    study: &'a StudyRow,
    sites: &'a [StudyRow],
    s: &SubjectRecord,
    file_study: Option<&str>,
) -> &'a StudyRow {
    let named = |oid: &str| {
        let oid = oid.trim();
        let oid = oid.strip_prefix("LOC_").unwrap_or(oid);
        sites.iter().find(|x| x.oid == oid)
    };
    s.site_oid.as_deref().and_then(named).or_else(|| file_study.and_then(named)).unwrap_or(study)
}

/// What a subject record says about the participant to enrol.
fn enrolment_input(s: &SubjectRecord, site: &StudyRow, today: time::Date) -> EnrolInput {
    EnrolInput {
        site: site.oid.clone(),
        label: s.subject.label.clone().or_else(|| s.subject.key.clone()),
        secondary_label: s.secondary_id.clone(),
        person_id: s.unique_identifier.clone(),
        sex: s.sex.clone(),
        date_of_birth: s.date_of_birth.clone().or_else(|| s.year_of_birth.clone()),
        enrolled_on: s.enrollment_date.clone().unwrap_or_else(|| today.to_string()),
        group: None,
    }
}

/// The participant an import will enrol, as the check of its forms sees it (id -1).
fn new_participant_row(
    study: &StudyRow,
    site: &StudyRow,
    s: &SubjectRecord,
    e: &Enrolment,
    now: time::OffsetDateTime,
) -> ParticipantRow {
    ParticipantRow {
        id: -1,
        study_id: study.id,
        site_id: site.id,
        label: e.label.clone().unwrap_or_default(),
        oid: s.subject.key.clone().unwrap_or_default(),
        secondary_label: e.secondary.clone(),
        person_id: e.person_id.clone(),
        sex: e.sex.clone(),
        date_of_birth: e.dob.clone(),
        enrolled_on: e.enrolled.clone(),
        group_name: e.group.clone(),
        status: "available".to_owned(),
        version: 0,
        created_at: now,
        updated_at: now,
    }
}

/// The event occurrence an import will schedule, as the check of its forms sees it (id -1).
fn new_event_row(
    participant_id: i64,
    event_oid: &str,
    repeat: i32,
    start: Option<time::OffsetDateTime>,
    now: time::OffsetDateTime,
) -> StudyEventRow {
    StudyEventRow {
        id: -1,
        participant_id,
        event_oid: event_oid.to_owned(),
        repeat_key: repeat,
        status: "scheduled".to_owned(),
        removal: "available".to_owned(),
        start_at: start,
        end_at: None,
        location: None,
        version: 0,
        created_at: now,
        updated_at: now,
    }
}

fn occurrence_removed(occurrence: &Option<StudyEventRow>) -> bool {
    occurrence.as_ref().is_some_and(|x| x.removal != "available")
}

/// `OpenClinica:StartDate`: a date (midnight UTC) or an RFC 3339 date and time.
fn parse_start(text: &str) -> Option<time::OffsetDateTime> {
    let t = text.trim();
    if let Ok(d) = time::Date::parse(t, time::macros::format_description!("[year]-[month]-[day]")) {
        return Some(d.midnight().assume_utc());
    }
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
}

/// Resolves a `FormOID` (a version OID, OpenClinica 3) or a form OID with its layout or version
/// (OpenClinica 4) to the form and version.
fn resolve_form<'d>(
    design: &'d StudyDesign,
    f: &FormRecord,
) -> Option<(&'d casebook_domain::design::FormDef, &'d FormVersion)> {
    let oid = local_oid(&f.form_oid, |o| design.form_version(o).is_some() || design.form(o).is_some());
    design.form_version(&oid).or_else(|| {
        let form = design.form(&oid)?;
        match f.form_layout_oid.as_deref().or(f.version.as_deref()) {
            Some(w) => form.versions.iter().find(|v| v.oid.as_str() == w || v.label == w).map(|v| (form, v)),
            None => form.versions.last().map(|v| (form, v)),
        }
    })
}

/// The values of an imported form as a save takes them: OIDs as the design knows them, repeat
/// keys as rows, null flavours; calculated items left out (the server computes them). An item
/// with `TransactionType="Remove"` is cleared; an item group row with it is removed (kept for
/// the audit).
fn value_inputs(version: &FormVersion, f: &FormRecord) -> (Vec<ValueInput>, Vec<crate::entry::RowInput>) {
    let mut out = Vec::new();
    let mut rows = Vec::new();
    for g in &f.groups {
        let row = g.repeat_key.as_deref().and_then(|k| k.trim().parse::<u32>().ok()).unwrap_or(1);
        if g.transaction_type == Some(TransactionType::Remove) {
            let group = local_oid(&g.oid, |o| version.groups.iter().any(|x| x.oid.as_str() == o));
            rows.push(crate::entry::RowInput { group, row });
            continue;
        }
        for item in &g.items {
            let oid = local_oid(&item.oid, |o| version.items.iter().any(|i| i.oid.as_str() == o));
            if version.items.iter().find(|i| i.oid.as_str() == oid).is_some_and(|i| i.widget.is_calculated()) {
                continue;
            }
            let removed = item.transaction_type == Some(TransactionType::Remove);
            out.push(ValueInput {
                item: oid,
                row,
                value: if item.is_null || removed { None } else { item.value.clone() },
                null_flavour: if item.is_null && !removed { item.reason_for_null.clone() } else { None },
            });
        }
    }
    (out, rows)
}

/// Why OpenClinica's `UpsertOn` keeps the file from writing a form in the state it is in (a
/// form not started counts as `NotStarted`), or `None` when it may.
fn upsert_refusal(
    upsert_on: UpsertOn,
    existing: Option<&casebook_store::capture::FormDataRow>,
) -> Option<&'static str> {
    match existing.map(|f| f.status.as_str()) {
        None if !upsert_on.not_started => Some("not started and the file's UpsertOn NotStarted is false"),
        Some("complete") if !upsert_on.data_entry_complete => {
            Some("complete and the file's UpsertOn DataEntryComplete is false")
        }
        Some(s) if s != "complete" && !upsert_on.data_entry_started => {
            Some("in data entry and the file's UpsertOn DataEntryStarted is false")
        }
        _ => None,
    }
}

/// Whether an imported form is to be marked complete: OpenClinica 3 completes every imported
/// form unless its `OpenClinica:Status` is "initial data entry"; OpenClinica 4 says so in
/// `WorkflowStatus`.
fn completes(f: &FormRecord) -> bool {
    let open = |s: &Option<String>| {
        s.as_deref()
            .is_some_and(|x| x.trim().eq_ignore_ascii_case("initial data entry") || x.trim() == "initial_data_entry")
    };
    !(open(&f.status) || open(&f.workflow_status))
}

impl App {
    /// Imports an ODM ClinicalData file into a study, all or nothing: the file is first checked
    /// as a whole ([`Self::check_clinical_import`]); with any error nothing is written and the
    /// report lists every problem. Otherwise every form is written in **one** transaction —
    /// each value checked and audited as a save, calculations recomputed, rules with the import
    /// flag run, soft-check failures noted — and marked complete unless the file says it stays
    /// in initial data entry (and it can be: required items present, no double data entry).
    /// A crash before the commit leaves the database as it was.
    ///
    /// # Errors
    /// As [`Self::check_clinical_import`]; a refusal found only while writing (the data changed
    /// meanwhile) rolls everything back and is returned.
    #[allow(clippy::too_many_lines)]
    pub async fn import_clinical(
        &self,
        who: &Principal,
        study_oid: &str,
        file_name: &str,
        source: impl Into<ImportSource>,
    ) -> Result<ImportReport, AppError> {
        let source = source.into();
        let progress = Arc::clone(source.progress());
        let mut report = self.check_clinical_source(who, study_oid, file_name, &source).await?;
        report.dry_run = false;
        if !report.accepted {
            return Ok(report);
        }
        progress.start_pass(2);
        let w = self.writing(who, study_oid).await?;
        let (study, design) = (w.study.clone(), Arc::clone(&w.design));
        let rules = self.active_rules(study.id).await?;
        let mut tx = self.store().write(source.actor(who)).await?;
        let input = source.open().map_err(|e| AppError::invalid("file", format!("the file cannot be read: {e}")))?;
        let mut reader = ClinicalReader::new(input);
        let mut file_study: Option<String> = None;
        let mut upsert_on = UpsertOn::default();
        let mut subject: Option<ParticipantRow> = None;
        let mut event: Option<(String, i32)> = None;
        while let Some(record) = reader.next_record().map_err(|d| AppError::invalid("file", d.message))? {
            // Dropping the transaction rolls everything back.
            if progress.is_cancelled() {
                return Err(cancelled());
            }
            match record {
                Record::Study(s) => {
                    upsert_on = s.upsert_on.unwrap_or_default();
                    file_study = Some(s.study_oid);
                }
                Record::Subject(s) => {
                    subject = self.import_participant(&mut tx, &w, &s, file_study.as_deref()).await?;
                    event = None;
                }
                Record::Event(e) => {
                    event = match &subject {
                        Some(p) => self.import_event(&mut tx, &w, p, &e).await?,
                        None => None,
                    };
                }
                Record::Form(f) => {
                    let (Some(p), Some((event_oid, repeat))) = (&subject, &event) else { continue };
                    let Some((form, version)) = resolve_form(&design, &f) else { continue };
                    let loc = self.located_in(&mut tx, &w, p, event_oid, *repeat, form.oid.as_str()).await?;
                    let upsert_all = upsert_on == UpsertOn::default();
                    if !upsert_all {
                        let existing = tx
                            .forms_of_event(loc.event.id)
                            .await?
                            .into_iter()
                            .find(|x| x.form_oid == form.oid.as_str());
                        if upsert_refusal(upsert_on, existing.as_ref()).is_some() {
                            continue;
                        }
                    }
                    let (values, remove_rows) = value_inputs(version, &f);
                    let input = SaveFormInput {
                        expected_version: None,
                        form_version: Some(version.oid.to_string()),
                        values,
                        remove_rows,
                        notes: Vec::new(),
                    };
                    let out = self.save_in(&mut tx, &loc, form.oid.as_str(), input, &rules, true).await?;
                    progress.wrote_form();
                    if out.changed {
                        report.written_forms += 1;
                    }
                    report.notes_opened +=
                        self.import_form_notes(&mut tx, &loc, form.oid.as_str(), version, &f).await?;
                    if completes(&f) && self.complete_imported(&mut tx, &loc, form.oid.as_str()).await? {
                        report.completed_forms += 1;
                    }
                }
                Record::Notes(n) => {
                    if let Some(p) = &subject {
                        report.notes_opened += self.import_record_notes(&mut tx, &w, p, &n).await?;
                    }
                }
            }
        }
        tx.audit(
            casebook_domain::audit::AuditEntry::new("clinical_data.imported", "study", &study.oid)
                .study(Some(study.id), None)
                .new_value(serde_json::json!({
                    "file": file_name, "forms": report.forms, "values": report.values,
                    "written_forms": report.written_forms, "completed_forms": report.completed_forms,
                })),
        )
        .await?;
        if progress.is_cancelled() {
            return Err(cancelled());
        }
        tx.commit().await?;
        progress.start_pass(3);
        Ok(report)
    }

    /// Marks an imported form complete inside the import's transaction when it can be (not
    /// already complete, required items present, no failing check, no double data entry);
    /// returns whether it did.
    async fn complete_imported(
        &self,
        tx: &mut casebook_store::WriteTx,
        loc: &crate::entry::Located,
        form_oid: &str,
    ) -> Result<bool, AppError> {
        let forms = tx.forms_of_event(loc.event.id).await?;
        let Some(f) = forms.iter().find(|x| x.form_oid == form_oid) else { return Ok(false) };
        if f.status == "complete" || loc.event_form.double_data_entry {
            return Ok(false);
        }
        let Some((_, version)) = loc.design.form_version(&f.form_version_oid) else { return Ok(false) };
        let rows = tx.item_data_of(f.id).await?;
        let mut held = BTreeMap::new();
        for r in rows.iter().filter(|r| !r.deleted) {
            held.insert(
                slot(&r.group_oid, r.row_number, &r.item_oid),
                Held { value: r.value.clone(), null_flavour: r.null_flavour.clone() },
            );
        }
        if !completion_problems(version, &held, &rows, self.store().clock().now()).is_empty() {
            return Ok(false);
        }
        tx.complete_form(f.id).await?;
        tx.audit(
            casebook_domain::audit::AuditEntry::new("form.completed", "form_data", self.form_key(loc, form_oid))
                .study(Some(loc.study.id), loc.site_id)
                .old(serde_json::json!({ "status": "initial_data_entry" }))
                .new_value(serde_json::json!({ "status": "complete" }))
                .reason(Some("imported as complete".to_owned())),
        )
        .await?;
        let event_oid = loc.event.event_oid.clone();
        self.event_after_completion(tx, loc, &forms, &event_oid, form_oid).await?;
        Ok(true)
    }
}

impl App {
    /// Imports record by record (OpenClinica 4's way): every form the check finds clean is
    /// written in its own transaction, a form with a problem (or under a participant or event
    /// with one) is skipped, and the log says for each form: Inserted, Updated, No Change or
    /// Failed with the reasons.
    ///
    /// # Errors
    /// As [`Self::check_clinical_import`].
    #[allow(clippy::too_many_lines)]
    pub async fn import_clinical_per_record(
        &self,
        who: &Principal,
        study_oid: &str,
        file_name: &str,
        source: impl Into<ImportSource>,
    ) -> Result<ImportReport, AppError> {
        let source = source.into();
        let progress = Arc::clone(source.progress());
        let mut report = self.check_clinical_source(who, study_oid, file_name, &source).await?;
        report.dry_run = false;
        progress.start_pass(2);
        let w = self.writing(who, study_oid).await?;
        let design = Arc::clone(&w.design);
        let rules = self.active_rules(w.study.id).await?;
        let actor = source.actor(who);
        // Problems of the whole file stop everything.
        let whole_file = report.errors.iter().any(|e| e.code == "wrong_study");
        let input = source.open().map_err(|e| AppError::invalid("file", format!("the file cannot be read: {e}")))?;
        let mut reader = ClinicalReader::new(input);
        let mut subject: Option<(String, usize)> = None;
        let mut event: Option<(String, i32, usize)> = None;
        let mut file_study: Option<String> = None;
        let mut upsert_on = UpsertOn::default();
        let mut subject_record: Option<SubjectRecord> = None;
        let mut event_record: Option<casebook_formats::odm::clinical::EventRecord> = None;
        // A fatal reading error ends the stream: the forms before it were written.
        while let Ok(Some(record)) = reader.next_record() {
            if progress.is_cancelled() {
                report.cancelled = true;
                break;
            }
            match record {
                Record::Subject(s) => {
                    let key = s.subject.key.clone().filter(|k| !k.is_empty()).or(s.subject.label.clone());
                    subject = key.map(|k| (k, s.line));
                    event = None;
                    subject_record = Some(s);
                }
                Record::Event(e) => {
                    let repeat = e.repeat_key.as_deref().map_or(Some(1), |r| r.trim().parse::<i32>().ok());
                    let oid = local_oid(&e.event_oid, |o| design.event(o).is_some());
                    event = repeat.map(|r| (oid, r, e.line));
                    event_record = Some(e);
                }
                Record::Form(f) => {
                    let end = f
                        .groups
                        .iter()
                        .flat_map(|g| g.items.iter().map(|i| i.line))
                        .chain([f.line])
                        .max()
                        .unwrap_or(f.line);
                    let (participant, subject_line) = subject.clone().unwrap_or_default();
                    let (event_oid, repeat, event_line) = event.clone().unwrap_or_default();
                    let mut row = ImportLogRow {
                        line: f.line,
                        participant: participant.clone(),
                        event_oid: event_oid.clone(),
                        event_repeat_key: repeat,
                        form: f.form_oid.clone(),
                        status: "Failed",
                        message: String::new(),
                    };
                    let reasons: Vec<String> = report
                        .errors
                        .iter()
                        .filter(|e| {
                            whole_file
                                || e.line == subject_line
                                || e.line == event_line
                                || (f.line..=end).contains(&e.line)
                        })
                        .map(|e| e.message.clone())
                        .collect();
                    if !reasons.is_empty() || subject.is_none() || event.is_none() {
                        row.message = if reasons.is_empty() {
                            "no participant or event for this form".into()
                        } else {
                            reasons.join("; ")
                        };
                        report.log.push(row);
                        continue;
                    }
                    let Some((form, version)) = resolve_form(&design, &f) else {
                        row.message = format!("no form or form version {}", f.form_oid);
                        report.log.push(row);
                        continue;
                    };
                    let (Some(sr), Some(er)) = (&subject_record, &event_record) else { continue };
                    let result = self
                        .import_one_form(
                            &actor,
                            &w,
                            (sr, er, file_study.as_deref()),
                            upsert_on,
                            (form, version, &f),
                            &rules,
                        )
                        .await;
                    match result {
                        Ok((status, completed, why)) => {
                            progress.wrote_form();
                            row.status = status;
                            if let Some(why) = why {
                                row.message = format!("the form is {why}: left as it is");
                            }
                            if status != "No Change" {
                                report.written_forms += 1;
                            }
                            if completed {
                                report.completed_forms += 1;
                                row.message = "marked complete".into();
                            }
                        }
                        Err(e) => row.message = e.to_string(),
                    }
                    report.log.push(row);
                }
                Record::Study(s) => {
                    upsert_on = s.upsert_on.unwrap_or_default();
                    file_study = Some(s.study_oid);
                }
                Record::Notes(n) => {
                    // The notes of a participant or event with a problem are not imported.
                    let (participant, subject_line) = subject.clone().unwrap_or_default();
                    let end = n
                        .notes
                        .iter()
                        .flat_map(|x| x.children.iter().map(|c| c.line).chain([x.line]))
                        .max()
                        .unwrap_or(n.line);
                    let bad = whole_file
                        || report.errors.iter().any(|e| e.line == subject_line || (n.line..=end).contains(&e.line));
                    let Some(sr) = subject_record.as_ref().filter(|_| !bad) else { continue };
                    match self.import_notes_record(&actor, &w, sr, file_study.as_deref(), &n).await {
                        Ok(opened) => report.notes_opened += opened,
                        Err(e) => report.log.push(ImportLogRow {
                            line: n.line,
                            participant,
                            event_oid: n.event.as_ref().map(|e| e.oid.clone()).unwrap_or_default(),
                            event_repeat_key: 1,
                            form: String::new(),
                            status: "Failed",
                            message: format!("notes: {e}"),
                        }),
                    }
                }
            }
        }
        report.accepted =
            !report.cancelled && report.log.iter().all(|r| r.status != "Failed") && report.errors.is_empty();
        progress.start_pass(3);
        Ok(report)
    }

    /// Writes one imported form in its own transaction; returns its log status and whether it
    /// was marked complete.
    #[allow(clippy::too_many_arguments)]
    async fn import_one_form(
        &self,
        actor: &casebook_store::Actor,
        w: &Writing,
        (s, e, file_study): (&SubjectRecord, &casebook_formats::odm::clinical::EventRecord, Option<&str>),
        upsert_on: UpsertOn,
        (form, version, f): (&casebook_domain::design::FormDef, &FormVersion, &FormRecord),
        rules: &[crate::rules_engine::ActiveRule],
    ) -> Result<(&'static str, bool, Option<&'static str>), AppError> {
        let mut tx = self.store().write(actor.clone()).await?;
        let p = self.import_participant(&mut tx, w, s, file_study).await?.ok_or(AppError::NotFound("participant"))?;
        let (event_oid, repeat) =
            self.import_event(&mut tx, w, &p, e).await?.ok_or(AppError::NotFound("event occurrence"))?;
        let loc = self.located_in(&mut tx, w, &p, &event_oid, repeat, form.oid.as_str()).await?;
        let existing = tx.forms_of_event(loc.event.id).await?.into_iter().find(|x| x.form_oid == form.oid.as_str());
        if let Some(why) = upsert_refusal(upsert_on, existing.as_ref()) {
            return Ok(("No Change", false, Some(why)));
        }
        let (values, remove_rows) = value_inputs(version, f);
        let input = SaveFormInput {
            expected_version: existing.as_ref().map(|x| x.version),
            form_version: Some(version.oid.to_string()),
            values,
            remove_rows,
            notes: Vec::new(),
        };
        let out = self.save_in(&mut tx, &loc, form.oid.as_str(), input, rules, true).await?;
        let notes = self.import_form_notes(&mut tx, &loc, form.oid.as_str(), version, f).await?;
        let completed = completes(f) && self.complete_imported(&mut tx, &loc, form.oid.as_str()).await?;
        let status = match (existing.is_some(), out.changed || completed || notes > 0) {
            (_, false) => "No Change",
            (false, true) => "Inserted",
            (true, true) => "Updated",
        };
        if tx.audited() > 0 {
            tx.commit().await?;
        }
        Ok((status, completed, None))
    }
}

/// What an import's writing needs once: the study, the importer's access, its sites, the design
/// in Production and the study's parameters.
struct Writing {
    study: StudyRow,
    access: crate::access::Access,
    sites: Vec<StudyRow>,
    design_number: i32,
    design: Arc<StudyDesign>,
    params: casebook_domain::study::StudyParameters,
}

impl App {
    async fn writing(&self, who: &Principal, study_oid: &str) -> Result<Writing, AppError> {
        let (study, access) = self.study_with_access(who, study_oid).await?;
        let sites = self.store().sites_of(study.id).await?;
        let (design_number, design) = self.production_design(study.id).await?;
        let params = serde_json::from_str(&study.parameters).map_err(crate::error::anyhow_like::internal)?;
        Ok(Writing { study, access, sites, design_number, design, params })
    }

    /// The participant a subject record names, as `tx` sees it: found by OID or label, else
    /// enrolled when the study lets imports enrol (the check passed it); `None` otherwise.
    async fn import_participant(
        &self,
        tx: &mut casebook_store::WriteTx,
        w: &Writing,
        s: &SubjectRecord,
        file_study: Option<&str>,
    ) -> Result<Option<ParticipantRow>, AppError> {
        for key in [s.subject.key.as_deref(), s.subject.label.as_deref()].into_iter().flatten() {
            if !key.trim().is_empty()
                && let Some(p) = tx.participant(w.study.id, key.trim()).await?
            {
                return Ok(w.access.sees_site(p.site_id).then_some(p));
            }
        }
        if !w.params.import_enrols_participants {
            return Ok(None);
        }
        let site = import_site(&w.study, &w.sites, s, file_study);
        let today = self.store().clock().now().date();
        let e = check_enrolment(&w.params, today, &enrolment_input(s, site, today)).map_err(AppError::Validation)?;
        let (_, oid) = self.enrol_in(tx, &w.study, site, &w.params, &e, s.subject.key.as_deref()).await?;
        Ok(tx.participant(w.study.id, &oid).await?)
    }

    /// The event occurrence an event record names (its OID as the design knows it and its
    /// repeat key), scheduling it when it is not and the study lets imports schedule.
    async fn import_event(
        &self,
        tx: &mut casebook_store::WriteTx,
        w: &Writing,
        p: &ParticipantRow,
        e: &casebook_formats::odm::clinical::EventRecord,
    ) -> Result<Option<(String, i32)>, AppError> {
        let oid = local_oid(&e.event_oid, |o| w.design.event(o).is_some());
        let Some(def) = w.design.event(&oid) else { return Ok(None) };
        let Some(repeat) = e.repeat_key.as_deref().map_or(Some(1), |r| r.trim().parse::<i32>().ok()) else {
            return Ok(None);
        };
        let scheduled =
            tx.study_events_of(p.id).await?.into_iter().any(|x| x.event_oid == oid && x.repeat_key == repeat);
        if !scheduled && w.params.import_schedules_events {
            let site = self.site_row(w, p.site_id);
            let start = e.start_date.as_deref().and_then(parse_start);
            self.schedule_in(tx, &w.study, site, p, def, Some(repeat), start, None, None).await?;
        }
        Ok(Some((oid, repeat)))
    }

    fn site_row<'a>(&self, w: &'a Writing, site_id: i64) -> &'a StudyRow {
        w.sites.iter().find(|s| s.id == site_id).unwrap_or(&w.study)
    }

    /// Where an imported form goes, read in `tx` (so what the import wrote before counts).
    async fn located_in(
        &self,
        tx: &mut casebook_store::WriteTx,
        w: &Writing,
        p: &ParticipantRow,
        event_oid: &str,
        repeat: i32,
        form_oid: &str,
    ) -> Result<crate::entry::Located, AppError> {
        let site = self.site_row(w, p.site_id).clone();
        let event = tx
            .study_events_of(p.id)
            .await?
            .into_iter()
            .find(|e| e.event_oid == event_oid && e.repeat_key == repeat)
            .ok_or(AppError::NotFound("event occurrence (schedule it first)"))?;
        if event.removal != "available" {
            return Err(AppError::InvalidTransition("the event is removed".into()));
        }
        if let Some(why) = EventStatus::parse(&event.status).and_then(EventStatus::refuses_data) {
            return Err(AppError::InvalidTransition(format!("{why}; its data cannot change")));
        }
        let event_form = w
            .design
            .event(event_oid)
            .and_then(|d| d.forms.iter().find(|f| f.form_oid.as_str() == form_oid))
            .cloned()
            .ok_or(AppError::NotFound("form in this event"))?;
        Ok(crate::entry::Located {
            access: w.access.clone(),
            may_enter: Self::may_enter(&w.access, &w.study, &site),
            site_oid: (site.id != w.study.id).then(|| site.oid.clone()),
            participant: p.clone(),
            study: w.study.clone(),
            site_id: (site.id != w.study.id).then_some(site.id),
            params: w.params.clone(),
            design_number: w.design_number,
            design: Arc::clone(&w.design),
            event,
            event_form,
        })
    }
}

/// Where imported notes go: the level (`participant`, `event`, `form`, `item_data`) and the
/// record under the participant.
struct NotePlace<'a> {
    level: &'a str,
    study_event_id: Option<i64>,
    form_data_id: Option<i64>,
    item: Option<(&'a str, i32, &'a str)>,
    /// The entity key of the record (`SS_X`, `SS_X/SE_Y[1]`, `SS_X/SE_Y[1]/F_Z`, or the item's).
    key: String,
}

/// An `OpenClinica:DiscrepancyNote` of a file, checked: what the thread is and its messages.
struct CheckedNote<'a> {
    note_type: NoteType,
    column: &'static str,
    /// Each message's status, description and detailed note, in order.
    messages: Vec<(NoteStatus, &'a str, Option<&'a str>)>,
}

/// The field a note of `level` is on, by Casebook's or OpenClinica's name (`EntityName`).
fn note_column(level: &str, name: Option<&str>) -> Option<&'static str> {
    let name = name.map(|n| n.trim().to_ascii_lowercase()).unwrap_or_default();
    match (level, name.as_str()) {
        ("item_data", _) => Some("value"),
        ("form", "interview_date" | "date_interviewed") => Some("interview_date"),
        ("form", "interviewer" | "interviewer_name") => Some("interviewer"),
        ("event", "start_date" | "date_start") => Some("start_date"),
        ("event", "end_date" | "date_end") => Some("end_date"),
        ("event", "location") => Some("location"),
        ("participant", "enrolment_date" | "enrollment_date") => Some("enrolment_date"),
        ("participant", "date_of_birth") => Some("date_of_birth"),
        ("participant", "sex" | "gender") => Some("sex"),
        ("participant", "person_id" | "unique_identifier") => Some("person_id"),
        ("participant", "secondary_id" | "secondary_label") => Some("secondary_id"),
        _ => None,
    }
}

/// Checks one note of the file; the error says what is wrong with it.
fn check_note<'a>(level: &str, n: &'a NoteRecord) -> Result<CheckedNote<'a>, String> {
    let id = n.id.as_deref().unwrap_or("(no ID)");
    let note_type = n.note_type.as_deref().and_then(NoteType::parse).ok_or_else(|| {
        format!(
            "note {id}: NoteType '{}' is not Query, Annotation, Reason for Change or Failed Validation Check",
            n.note_type.clone().unwrap_or_default()
        )
    })?;
    let column = note_column(level, n.entity_name.as_deref()).ok_or_else(|| {
        format!(
            "note {id}: EntityName '{}' is not a field a note on a {} can be on",
            n.entity_name.clone().unwrap_or_default(),
            level.replace('_', " ")
        )
    })?;
    let thread_status = match n.status.as_deref() {
        None => None,
        Some(s) => Some(NoteStatus::parse(s).ok_or_else(|| format!("note {id}: Status '{s}' is not a note status"))?),
    };
    let mut messages = Vec::new();
    for c in &n.children {
        let status = match c.status.as_deref() {
            None => thread_status.unwrap_or_else(|| note_type.initial_status()),
            Some(s) => NoteStatus::parse(s)
                .ok_or_else(|| format!("note {id}: a message's Status '{s}' is not a note status"))?,
        };
        let text = c.description.as_deref().or(c.name.as_deref()).map(str::trim).filter(|d| !d.is_empty());
        let text = text.ok_or_else(|| format!("note {id}: a message has no Description"))?;
        messages.push((status, text, c.detailed_note.as_deref().map(str::trim).filter(|d| !d.is_empty())));
    }
    if messages.is_empty() {
        return Err(format!("note {id} has no ChildNote (no message)"));
    }
    Ok(CheckedNote { note_type, column, messages })
}

impl App {
    /// Opens the threads of a record's imported notes inside the import's transaction, each with
    /// its messages and final status, audited; a thread already there (same field, type and
    /// first message) is not opened again, so importing a file twice adds nothing. Returns how
    /// many it opened.
    async fn import_notes(
        &self,
        tx: &mut casebook_store::WriteTx,
        p: &ParticipantRow,
        site_id: Option<i64>,
        at: &NotePlace<'_>,
        notes: &[NoteRecord],
    ) -> Result<usize, AppError> {
        let mut opened = 0;
        for n in notes {
            let c = check_note(at.level, n).map_err(|m| AppError::invalid("notes", m))?;
            let key = match at.item {
                Some(_) => at.key.clone(),
                None => format!("{}/{}", at.key, c.column),
            };
            let (first_status, first_text, first_detail) = c.messages[0];
            if tx.thread_exists(p.id, &key, c.note_type.as_str(), first_text).await? {
                continue;
            }
            let id = tx
                .insert_thread(&casebook_store::notes::NewThread {
                    study_id: p.study_id,
                    site_id: p.site_id,
                    participant_id: p.id,
                    entity_type: at.level,
                    study_event_id: at.study_event_id,
                    form_data_id: at.form_data_id,
                    group_oid: at.item.map(|i| i.0),
                    row_number: at.item.map(|i| i.1),
                    item_oid: at.item.map(|i| i.2),
                    column_name: c.column,
                    entity_key: &key,
                    note_type: c.note_type.as_str(),
                    status: first_status.as_str(),
                    description: first_text,
                    detailed_note: first_detail,
                    assigned_to: None,
                    rule_key: None,
                })
                .await?;
            tx.audit(
                casebook_domain::audit::AuditEntry::new("note.created", "note", format!("{key}/DN_{id}"))
                    .study(Some(p.study_id), site_id)
                    .new_value(serde_json::json!({
                        "type": c.note_type.as_str(), "status": first_status.as_str(), "column": c.column,
                        "description": first_text, "detailed_note": first_detail, "imported": true,
                        "file_id": n.id,
                    })),
            )
            .await?;
            for (status, text, detail) in c.messages.iter().skip(1) {
                tx.reply_to_thread(id, status.as_str(), text, *detail, None).await?;
                tx.audit(
                    casebook_domain::audit::AuditEntry::new("note.replied", "note", format!("{key}/DN_{id}"))
                        .study(Some(p.study_id), site_id)
                        .new_value(serde_json::json!({
                            "status": status.as_str(), "description": text, "detailed_note": detail, "imported": true,
                        })),
                )
                .await?;
            }
            opened += 1;
        }
        Ok(opened)
    }

    /// Imports the notes of an imported form (on the form's fields and on its values).
    async fn import_form_notes(
        &self,
        tx: &mut casebook_store::WriteTx,
        loc: &crate::entry::Located,
        form_oid: &str,
        version: &FormVersion,
        f: &FormRecord,
    ) -> Result<usize, AppError> {
        let has_notes = !f.notes.is_empty() || f.groups.iter().any(|g| g.items.iter().any(|i| !i.notes.is_empty()));
        if !has_notes {
            return Ok(0);
        }
        let Some(row) = tx.forms_of_event(loc.event.id).await?.into_iter().find(|x| x.form_oid == form_oid) else {
            return Ok(0);
        };
        let form_key = self.form_key(loc, form_oid);
        let p = &loc.participant;
        let mut n = self
            .import_notes(
                tx,
                p,
                loc.site_id,
                &NotePlace {
                    level: "form",
                    study_event_id: Some(loc.event.id),
                    form_data_id: Some(row.id),
                    item: None,
                    key: form_key.clone(),
                },
                &f.notes,
            )
            .await?;
        for g in &f.groups {
            let r = g.repeat_key.as_deref().and_then(|k| k.trim().parse::<i32>().ok()).unwrap_or(1);
            let group = local_oid(&g.oid, |o| version.groups.iter().any(|x| x.oid.as_str() == o));
            for item in g.items.iter().filter(|i| !i.notes.is_empty()) {
                let oid = local_oid(&item.oid, |o| version.items.iter().any(|i| i.oid.as_str() == o));
                n += self
                    .import_notes(
                        tx,
                        p,
                        loc.site_id,
                        &NotePlace {
                            level: "item_data",
                            study_event_id: Some(loc.event.id),
                            form_data_id: Some(row.id),
                            item: Some((&group, r, &oid)),
                            key: format!("{form_key}/{group}[{r}]/{oid}"),
                        },
                        &item.notes,
                    )
                    .await?;
            }
        }
        Ok(n)
    }

    /// Imports notes on a participant or one of its events (`OpenClinica:DiscrepancyNotes` of
    /// `SubjectData` or `StudyEventData`).
    async fn import_record_notes(
        &self,
        tx: &mut casebook_store::WriteTx,
        w: &Writing,
        p: &ParticipantRow,
        n: &casebook_formats::odm::clinical::NotesRecord,
    ) -> Result<usize, AppError> {
        let site_id = (p.site_id != w.study.id).then_some(p.site_id);
        match &n.event {
            None => {
                let at = NotePlace {
                    level: "participant",
                    study_event_id: None,
                    form_data_id: None,
                    item: None,
                    key: p.oid.clone(),
                };
                self.import_notes(tx, p, site_id, &at, &n.notes).await
            }
            Some(e) => {
                let oid = local_oid(&e.oid, |o| w.design.event(o).is_some());
                let repeat = e.repeat_key.as_deref().and_then(|r| r.trim().parse::<i32>().ok()).unwrap_or(1);
                let Some(ev) =
                    tx.study_events_of(p.id).await?.into_iter().find(|x| x.event_oid == oid && x.repeat_key == repeat)
                else {
                    return Ok(0);
                };
                let at = NotePlace {
                    level: "event",
                    study_event_id: Some(ev.id),
                    form_data_id: None,
                    item: None,
                    key: format!("{}/{oid}[{repeat}]", p.oid),
                };
                self.import_notes(tx, p, site_id, &at, &n.notes).await
            }
        }
    }
}

impl App {
    /// Per record: a participant's or event's notes in their own transaction.
    async fn import_notes_record(
        &self,
        actor: &casebook_store::Actor,
        w: &Writing,
        s: &SubjectRecord,
        file_study: Option<&str>,
        n: &casebook_formats::odm::clinical::NotesRecord,
    ) -> Result<usize, AppError> {
        let mut tx = self.store().write(actor.clone()).await?;
        let Some(p) = self.import_participant(&mut tx, w, s, file_study).await? else { return Ok(0) };
        let opened = self.import_record_notes(&mut tx, w, &p, n).await?;
        if tx.audited() > 0 {
            tx.commit().await?;
        }
        Ok(opened)
    }
}
