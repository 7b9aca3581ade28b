//! Clinical data out as CDISC ODM 1.3.2, streamed: a study, one site, one participant, one event
//! or one form version, optionally only what changed since a time (nightly ETL). The data are
//! read a page of participants at a time and written as they are read, handing each page's XML
//! to the caller (an HTTP body, standard output), so memory stays flat whatever the study's size.
//!
//! Removed participants, events and forms are not exported. Site-level users get their sites'
//! participants only, without the forms hidden from their site.

use std::future::Future;

use casebook_domain::audit::AuditRecord;
use casebook_domain::design::StudyDesign;
use casebook_formats::odm::clinical_write::{
    At, AuditLogOut, AuditOut, ChildNoteOut, ClinicalFile, ClinicalWriter, EventOut, FormOut, ItemOut, NoteOut,
    SignatureOut, SubjectOut,
};
use casebook_store::capture::{FormDataRow, ItemDataRow};
use casebook_store::export::ExportFilter;
use casebook_store::notes::{MessageRow, ThreadFilter, ThreadRow};
use serde::Serialize;
use time::OffsetDateTime;

use crate::auth::Principal;
use crate::error::anyhow_like::internal;
use crate::{App, AppError};

/// Participants read per page: a page's rows and XML are what the export holds in memory (at
/// 1,000 values a participant, 25 participants are ~25 K value rows and ~2 MB of XML).
const PAGE: i64 = 25;

/// What to export.
#[derive(Debug, Clone, Default)]
pub struct ClinicalExport {
    /// A participant (OID or label); `None` or `*`: every participant.
    pub participant: Option<String>,
    /// An event OID; `None` or `*`: every event.
    pub event: Option<String>,
    /// A form version OID or form OID; `None` or `*`: every form.
    pub form: Option<String>,
    /// With OpenClinica 3's extension attributes.
    pub openclinica: bool,
    /// Only what changed after this time.
    pub changed_since: Option<OffsetDateTime>,
    /// Write only `ClinicalData`, for a document whose `ODM` root is written around it.
    pub embedded: bool,
    /// ODM 2.0 instead of 1.3.2 (without OpenClinica's extensions, which 2.0 does not have).
    pub odm20: bool,
    /// OpenClinica's `OpenClinica:DiscrepancyNotes` (the notes threads) on participants,
    /// events, forms and values (with `openclinica`; OpenClinica's `includeDNs`).
    pub notes: bool,
    /// OpenClinica's `OpenClinica:AuditLogs` (the audit trail) on participants, events, forms
    /// and values (with `openclinica`; OpenClinica's `includeAudits`).
    pub audit_logs: bool,
    /// Standard ODM `AuditRecord`s: who last changed each participant, event, form and value,
    /// when, where and why.
    pub audit_records: bool,
    /// Standard ODM `Signature`s on signed casebooks and events.
    pub signatures: bool,
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct ExportCount {
    pub participants: usize,
    pub events: usize,
    pub forms: usize,
    pub values: usize,
}

fn wildcard(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty() && *s != "*")
}

impl App {
    /// Writes the clinical data of a study (or of one of its sites, by the site's OID) as ODM,
    /// handing the XML to `sink` a page at a time; `sink` returns `false` to stop (the reader
    /// went away). Every role may export the data it may see, as OpenClinica 3's REST API.
    ///
    /// # Errors
    /// [`AppError::NotFound`] for an unknown or invisible study, site, participant;
    /// [`AppError::Validation`] for an event or form the design does not have.
    #[allow(clippy::too_many_lines)]
    pub async fn export_clinical<F, Fut>(
        &self,
        who: &Principal,
        study_or_site_oid: &str,
        req: &ClinicalExport,
        mut sink: F,
    ) -> Result<ExportCount, AppError>
    where
        F: FnMut(Vec<u8>) -> Fut,
        Fut: Future<Output = bool>,
    {
        let (target, study) = self.study_or_site(study_or_site_oid).await?;
        let (study, access) = self.study_with_access(who, &study.oid).await?;
        let site_ids = scope_sites(&target, &access)?;
        let (number, design) = match self.production_design_opt(study.id).await? {
            Some((n, d)) => (n, d),
            None => (0, std::sync::Arc::new(StudyDesign::default())),
        };
        let event_filter = wildcard(&req.event);
        let form_filter = wildcard(&req.form);
        if let Some(e) = event_filter
            && design.event(e).is_none()
        {
            return Err(AppError::invalid("event", format!("the design in Production has no event {e}")));
        }
        if let Some(f) = form_filter
            && design.form(f).is_none()
            && design.form_version(f).is_none()
        {
            return Err(AppError::invalid("form", format!("the design in Production has no form or form version {f}")));
        }
        let participant_id = match wildcard(&req.participant) {
            Some(key) => {
                let p = self.store().participant(study.id, key).await?.ok_or(AppError::NotFound("participant"))?;
                if !access.sees_site(p.site_id) || site_ids.as_ref().is_some_and(|s| !s.contains(&p.site_id)) {
                    return Err(AppError::NotFound("participant"));
                }
                Some(p.id)
            }
            None => None,
        };
        let filter = ExportFilter {
            study_id: study.id,
            site_ids,
            participant_id,
            changed_since: req.changed_since,
            include_removed: false,
        };
        let sites = self.store().sites_of(study.id).await?;
        let site_user = !access.study_wide();
        let now = self.store().clock().now();
        let file_oid = format!("{}-clinical-{}", study.oid, now.unix_timestamp());
        let mdv = format!("v{number}");
        let file = ClinicalFile {
            study_oid: &study.oid,
            metadata_version_oid: &mdv,
            file_oid: &file_oid,
            created: now,
            openclinica: req.openclinica && !req.odm20,
            odm20: req.odm20,
        };
        let locations: std::collections::HashMap<i64, String> =
            sites.iter().map(|s| (s.id, location_oid(&s.oid))).collect();
        let study_location = location_oid(&study.oid);
        let location_of = |site_id: i64| locations.get(&site_id).map_or(study_location.as_str(), String::as_str);
        let meanings = if req.signatures { self.store().signature_meanings(study.id).await? } else { Vec::new() };
        let oc_extras = file.openclinica && (req.notes || req.audit_logs);
        let mut w = if req.embedded {
            ClinicalWriter::embedded(Vec::new(), &file)
        } else {
            ClinicalWriter::new(Vec::new(), &file)
        }
        .map_err(internal)?;
        let mut count = ExportCount::default();
        let mut after = 0;
        let event_order = |oid: &str| design.events.iter().position(|e| e.oid.as_str() == oid).unwrap_or(usize::MAX);
        let changed = |t: OffsetDateTime| req.changed_since.is_none_or(|s| t > s);
        loop {
            let page = self.store().export_participants(&filter, after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            let ids: Vec<i64> = page.iter().map(|p| p.id).collect();
            let mut events = self.store().export_events(&ids).await?;
            events.retain(|e| e.removal == "available" && event_filter.is_none_or(|f| e.event_oid == f));
            events.sort_by_key(|e| (e.participant_id, event_order(&e.event_oid), e.repeat_key));
            let event_ids: Vec<i64> = events.iter().map(|e| e.id).collect();
            let mut forms = self.store().export_forms(&event_ids).await?;
            forms.retain(|f| {
                f.removal == "available" && form_filter.is_none_or(|x| f.form_oid == x || f.form_version_oid == x)
            });
            let form_ids: Vec<i64> = forms.iter().map(|f| f.id).collect();
            let values = self.store().export_values(&form_ids).await?;
            let extras = self.page_extras(&page, req, &meanings).await?;
            for p in &page {
                let location = location_of(p.site_id);
                let p_extras = extras.iter().find(|x| x.participant_id == p.id);
                let subject_key = p.oid.clone();
                let last = |key: &str| p_extras.and_then(|x| x.last_audit(key));
                let signature = |event_id: Option<i64>| {
                    p_extras.and_then(|x| x.signatures.iter().rev().find(|s| s.study_event_id == event_id))
                };
                let site_oid = sites.iter().find(|s| s.id == p.site_id).map(|s| s.oid.as_str());
                w.subject(&SubjectOut {
                    key: &p.oid,
                    label: &p.label,
                    person_id: p.person_id.as_deref(),
                    secondary_id: p.secondary_label.as_deref(),
                    date_of_birth: p.date_of_birth.as_deref(),
                    sex: p.sex.as_deref(),
                    enrolled_on: Some(&p.enrolled_on),
                    status: &p.status,
                    audit: last(&subject_key).map(|a| a.out(location)),
                    signature: signature(None).map(|s| s.out(location)),
                })
                .map_err(internal)?;
                count.participants += 1;
                for e in events.iter().filter(|e| e.participant_id == p.id) {
                    let def = design.event(&e.event_oid);
                    let mut its_forms: Vec<&FormDataRow> = forms
                        .iter()
                        .filter(|f| f.study_event_id == e.id)
                        .filter(|f| {
                            let ef = def.and_then(|d| d.forms.iter().find(|x| x.form_oid.as_str() == f.form_oid));
                            !(site_user && ef.is_some_and(|x| x.hidden_at(site_oid)))
                        })
                        .filter(|f| {
                            changed(f.updated_at) || values_of(&values, f.id).iter().any(|v| changed(v.updated_at))
                        })
                        .collect();
                    its_forms.sort_by_key(|f| {
                        def.and_then(|d| d.forms.iter().position(|x| x.form_oid.as_str() == f.form_oid))
                            .unwrap_or(usize::MAX)
                    });
                    if its_forms.is_empty() && (form_filter.is_some() || !changed(e.updated_at)) {
                        continue;
                    }
                    w.event(&EventOut {
                        event_oid: &e.event_oid,
                        repeat_key: def.is_some_and(|d| d.repeating).then_some(e.repeat_key),
                        status: &e.status,
                        start: e.start_at,
                        end: e.end_at,
                        location: e.location.as_deref(),
                        audit: last(&event_key(&p.oid, &e.event_oid, e.repeat_key)).map(|a| a.out(location)),
                        signature: signature(Some(e.id)).map(|s| s.out(location)),
                    })
                    .map_err(internal)?;
                    count.events += 1;
                    for f in its_forms {
                        let version = design.form_version(&f.form_version_oid).map(|(_, v)| v);
                        w.form(&FormOut {
                            version_oid: &f.form_version_oid,
                            version_label: version.map_or("", |v| v.label.as_str()),
                            status: &f.status,
                            awaiting_dde: f.dde_stage.as_deref() == Some("awaiting_dde"),
                            audit: last(&form_key(&p.oid, &e.event_oid, e.repeat_key, &f.form_oid))
                                .map(|a| a.out(location)),
                            signature: None,
                        })
                        .map_err(internal)?;
                        let f_key = form_key(&p.oid, &e.event_oid, e.repeat_key, &f.form_oid);
                        count.forms += 1;
                        let rows = values_of(&values, f.id);
                        let mut start = 0;
                        while start < rows.len() {
                            let (g, r) = (&rows[start].group_oid, rows[start].row_number);
                            let end = rows[start..]
                                .iter()
                                .position(|v| &v.group_oid != g || v.row_number != r)
                                .map_or(rows.len(), |n| start + n);
                            let repeating = version
                                .and_then(|v| v.groups.iter().find(|x| x.oid.as_str() == g))
                                .is_some_and(casebook_domain::design::ItemGroup::is_repeating);
                            let slice = &rows[start..end];
                            let keys: Vec<String> = slice
                                .iter()
                                .map(|v| format!("{f_key}/{}[{}]/{}", v.group_oid, v.row_number, v.item_oid))
                                .collect();
                            let logs: Vec<Vec<AuditLogOut<'_>>> = keys
                                .iter()
                                .map(|k| {
                                    if oc_extras {
                                        p_extras.map(|x| x.audit_logs(k)).unwrap_or_default()
                                    } else {
                                        Vec::new()
                                    }
                                })
                                .collect();
                            let item_notes: Vec<Vec<&NoteText>> = slice
                                .iter()
                                .map(|v| {
                                    p_extras
                                        .map(|x| x.item_notes(f.id, &v.group_oid, v.row_number, &v.item_oid))
                                        .unwrap_or_default()
                                })
                                .collect();
                            let children: Vec<Vec<Vec<ChildNoteOut<'_>>>> =
                                item_notes.iter().map(|ns| ns.iter().map(|n| n.children()).collect()).collect();
                            let note_outs: Vec<Vec<NoteOut<'_>>> = item_notes
                                .iter()
                                .zip(&children)
                                .map(|(ns, cs)| ns.iter().zip(cs).map(|(n, c)| n.out(c)).collect())
                                .collect();
                            let items: Vec<ItemOut<'_>> = slice
                                .iter()
                                .enumerate()
                                .map(|(i, v)| ItemOut {
                                    item_oid: &v.item_oid,
                                    value: v.value.as_deref(),
                                    null_flavour: v.null_flavour.as_deref(),
                                    audit: last(&keys[i]).map(|a| a.out(location)),
                                    signature: None,
                                    audit_logs: &logs[i],
                                    notes: if oc_extras { &note_outs[i] } else { &[] },
                                })
                                .collect();
                            w.group(g, repeating.then_some(r), &items).map_err(internal)?;
                            count.values += items.len();
                            start = end;
                        }
                        if oc_extras && let Some(x) = p_extras {
                            x.write_extensions(&mut w, At::Form, &f_key, |t| {
                                t.form_data_id == Some(f.id) && t.entity_type == "form"
                            })?;
                        }
                    }
                    if oc_extras && let Some(x) = p_extras {
                        let key = event_key(&p.oid, &e.event_oid, e.repeat_key);
                        x.write_extensions(&mut w, At::Event, &key, |t| {
                            t.study_event_id == Some(e.id) && t.entity_type == "event"
                        })?;
                    }
                }
                if oc_extras && let Some(x) = p_extras {
                    x.write_extensions(&mut w, At::Subject, &subject_key, |t| t.entity_type == "participant")?;
                }
            }
            // The next page's buffer starts at this one's size (no growth by doubling each time).
            let capacity = w.get_mut().len();
            if !sink(std::mem::replace(w.get_mut(), Vec::with_capacity(capacity))).await {
                return Ok(count);
            }
        }
        let rest = w.finish().map_err(internal)?;
        sink(rest).await;
        Ok(count)
    }
}

/// The sites an export or extract of `target` (a study, or one of its sites) reads: `None` for
/// every site (study-level users on the study), the site asked for, or a site user's sites.
///
/// # Errors
/// [`AppError::NotFound`] for a site the user does not see.
pub(crate) fn scope_sites(
    target: &casebook_store::studies::StudyRow,
    access: &crate::access::Access,
) -> Result<Option<Vec<i64>>, AppError> {
    match (target.parent_id.is_some(), access.study_wide()) {
        (true, _) if access.sees_site(target.id) => Ok(Some(vec![target.id])),
        (true, _) => Err(AppError::NotFound("study")),
        (false, true) => Ok(None),
        (false, false) => Ok(Some(access.site_roles.iter().map(|(s, _)| *s).collect())),
    }
}

/// The audit key of an event occurrence (as saves write it).
fn event_key(participant_oid: &str, event_oid: &str, repeat: i32) -> String {
    format!("{participant_oid}/{event_oid}[{repeat}]")
}

/// The audit key of a form.
fn form_key(participant_oid: &str, event_oid: &str, repeat: i32, form_oid: &str) -> String {
    format!("{}/{form_oid}", event_key(participant_oid, event_oid, repeat))
}

/// A user's OID in exports (`AdminData/User`, `UserRef`): `USR_` and the user's id, as
/// OpenClinica names them; `USR_SYSTEM` for what Casebook itself did.
fn user_oid(id: Option<i64>) -> String {
    id.map_or_else(|| "USR_SYSTEM".to_owned(), |id| format!("USR_{id}"))
}

/// A study's or site's OID as an `AdminData/Location` (prefixed: OIDs are unique in a
/// document, and the study's is its `Study`'s).
fn location_oid(study_or_site_oid: &str) -> String {
    format!("LOC_{study_or_site_oid}")
}

/// The `SignatureDef` OID of a signature's meaning (`SD_1` … in the order of the study's
/// distinct meanings).
fn signature_def_oid(meanings: &[String], meaning: &str) -> String {
    format!("SD_{}", meanings.iter().position(|m| m == meaning).map_or(0, |i| i + 1))
}

/// The values of one form (the slice of the page's values, which are ordered by form).
fn values_of(values: &[ItemDataRow], form_id: i64) -> &[ItemDataRow] {
    let start = values.partition_point(|v| v.form_data_id < form_id);
    let end = values.partition_point(|v| v.form_data_id <= form_id);
    &values[start..end]
}

impl App {
    /// The export as OpenClinica's REST APIs render it in JSON (attributes as `@`-keys, a single
    /// element as an object), built from the whole document, with the metadata when asked;
    /// `None` when no participant matched (OpenClinica answers 204 then).
    ///
    /// # Errors
    /// As [`App::export_clinical`].
    pub async fn export_clinical_json(
        &self,
        who: &Principal,
        study_or_site_oid: &str,
        req: &ClinicalExport,
        with_metadata: bool,
    ) -> Result<Option<serde_json::Value>, AppError> {
        let mut xml = Vec::new();
        let sink = |chunk: Vec<u8>| {
            xml.extend_from_slice(&chunk);
            std::future::ready(true)
        };
        let count = if with_metadata {
            self.export_clinical_with_metadata(who, study_or_site_oid, req, sink).await?
        } else {
            self.export_clinical(who, study_or_site_oid, req, sink).await?
        };
        if count.participants == 0 && !with_metadata {
            return Ok(None);
        }
        casebook_formats::odm::json::xml_to_json(&xml)
            .map(Some)
            .map_err(|e| crate::error::anyhow_like::msg(format!("rendering the export as JSON: {e}")))
    }
}

impl App {
    /// The design in Production and the clinical data in one ODM 1.3.2 document with
    /// OpenClinica's extensions (OpenClinica 4's `includeMetadata=y`): the metadata export with
    /// the `ClinicalData` streamed into it.
    ///
    /// # Errors
    /// As [`App::export_clinical`] and the metadata export.
    pub async fn export_clinical_with_metadata<F, Fut>(
        &self,
        who: &Principal,
        study_or_site_oid: &str,
        req: &ClinicalExport,
        mut sink: F,
    ) -> Result<ExportCount, AppError>
    where
        F: FnMut(Vec<u8>) -> Fut,
        Fut: Future<Output = bool>,
    {
        let metadata = self.openclinica_metadata(who, study_or_site_oid, None).await?;
        let text = String::from_utf8(metadata).map_err(internal)?;
        let open = text
            .trim_end()
            .strip_suffix("</ODM>")
            .ok_or_else(|| crate::error::anyhow_like::msg("the metadata export does not end with </ODM>"))?
            .to_owned();
        if !sink(format!("{open}\n").into_bytes()).await {
            return Ok(ExportCount::default());
        }
        let req = ClinicalExport { embedded: true, openclinica: true, ..req.clone() };
        let count = self.export_clinical(who, study_or_site_oid, &req, &mut sink).await?;
        sink(b"\n</ODM>\n".to_vec()).await;
        Ok(count)
    }
}

/// What a page's participants carry besides their data when an export asks for it: their audit
/// trail, notes threads and signatures, read a participant at a time.
struct PageExtras {
    participant_id: i64,
    /// Audit rows by entity key, oldest first.
    audit: std::collections::HashMap<String, Vec<AuditText>>,
    notes: Vec<(ThreadRow, NoteText)>,
    /// Signatures in force (not broken), oldest first.
    signatures: Vec<SignatureText>,
}

/// An audit row as exports write it.
struct AuditText {
    id: String,
    user_oid: String,
    user_name: String,
    name: String,
    at: OffsetDateTime,
    action: String,
    reason: Option<String>,
    old_value: Option<String>,
    new_value: Option<String>,
}

impl AuditText {
    fn from(r: &AuditRecord) -> Self {
        // Values are stored as JSON objects; a value change shows its value (or null flavour).
        let shown = |json: &Option<String>| -> Option<String> {
            let v: serde_json::Value = serde_json::from_str(json.as_deref()?).ok()?;
            match v.get("value").or_else(|| v.get("status")) {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Null) => v.get("null_flavour").and_then(|n| n.as_str()).map(str::to_owned),
                _ => Some(v.to_string()),
            }
        };
        Self {
            id: format!("AL_{}", r.seq),
            user_oid: user_oid(r.actor_user_id),
            user_name: r.actor_username.clone(),
            name: r.entity_id.rsplit('/').next().unwrap_or(&r.entity_id).to_owned(),
            at: r.at,
            action: r.action.clone(),
            reason: r.reason.clone(),
            old_value: shown(&r.old_value),
            new_value: shown(&r.new_value),
        }
    }

    fn out<'a>(&'a self, location: &'a str) -> AuditOut<'a> {
        AuditOut {
            user_oid: &self.user_oid,
            location_oid: location,
            date_time: self.at,
            reason_for_change: self.reason.as_deref(),
            source_id: Some(&self.id),
        }
    }

    fn log(&self) -> AuditLogOut<'_> {
        AuditLogOut {
            id: &self.id,
            user_id: &self.user_oid,
            user_name: &self.user_name,
            name: &self.name,
            date_time: self.at,
            audit_type: &self.action,
            reason_for_change: self.reason.as_deref(),
            old_value: self.old_value.as_deref(),
            new_value: self.new_value.as_deref(),
            value_type: None,
        }
    }
}

/// A notes thread as OpenClinica exports it.
struct NoteText {
    id: String,
    status: String,
    note_type: String,
    updated: time::Date,
    entity_name: String,
    children: Vec<ChildText>,
}

struct ChildText {
    id: String,
    status: String,
    created: time::Date,
    description: String,
    detailed: Option<String>,
    user_oid: String,
    user_name: String,
}

/// OpenClinica's name of the field a note is on (`EntityName`; the import reads both).
fn oc_entity_name(column: &str) -> &str {
    match column {
        "interview_date" => "date_interviewed",
        "interviewer" => "interviewer_name",
        "enrolment_date" => "enrollment_date",
        "sex" => "gender",
        "person_id" => "unique_identifier",
        other => other,
    }
}

/// OpenClinica's names of note types and statuses.
fn oc_note_word(s: &str) -> String {
    match s {
        "failed_validation_check" => "Failed Validation Check".to_owned(),
        "reason_for_change" => "Reason for Change".to_owned(),
        "resolution_proposed" => "Resolution Proposed".to_owned(),
        "not_applicable" => "Not Applicable".to_owned(),
        other => {
            let mut c = other.chars();
            c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
        }
    }
}

impl NoteText {
    fn from(t: &ThreadRow, messages: &[MessageRow]) -> Self {
        Self {
            id: format!("DN_{}", t.id),
            status: oc_note_word(&t.status),
            note_type: oc_note_word(&t.note_type),
            updated: t.updated_at.date(),
            entity_name: oc_entity_name(&t.column_name).to_owned(),
            children: messages
                .iter()
                .map(|m| ChildText {
                    id: format!("CDN_{}", m.id),
                    status: oc_note_word(&m.status),
                    created: m.created_at.date(),
                    description: m.description.clone(),
                    detailed: m.detailed_note.clone(),
                    user_oid: user_oid(m.created_by),
                    user_name: m.author_username.clone().unwrap_or_default(),
                })
                .collect(),
        }
    }

    fn children(&self) -> Vec<ChildNoteOut<'_>> {
        self.children
            .iter()
            .map(|c| ChildNoteOut {
                id: &c.id,
                status: &c.status,
                date_created: c.created,
                name: &c.description,
                description: &c.description,
                detailed_note: c.detailed.as_deref(),
                user_oid: &c.user_oid,
                user_name: &c.user_name,
                user_full_name: &c.user_name,
            })
            .collect()
    }

    fn out<'a>(&'a self, children: &'a [ChildNoteOut<'a>]) -> NoteOut<'a> {
        NoteOut {
            id: &self.id,
            status: &self.status,
            note_type: &self.note_type,
            date_updated: self.updated,
            entity_name: &self.entity_name,
            children,
        }
    }
}

/// A signature as exports write it.
struct SignatureText {
    id: String,
    study_event_id: Option<i64>,
    user_oid: String,
    signature_oid: String,
    at: OffsetDateTime,
}

impl SignatureText {
    fn out<'a>(&'a self, location: &'a str) -> SignatureOut<'a> {
        SignatureOut {
            id: Some(&self.id),
            user_oid: &self.user_oid,
            location_oid: location,
            signature_oid: &self.signature_oid,
            date_time: self.at,
        }
    }
}

impl PageExtras {
    fn last_audit(&self, key: &str) -> Option<&AuditText> {
        self.audit.get(key).and_then(|v| v.last())
    }

    fn audit_logs(&self, key: &str) -> Vec<AuditLogOut<'_>> {
        self.audit.get(key).map(|v| v.iter().map(AuditText::log).collect()).unwrap_or_default()
    }

    fn item_notes(&self, form_data_id: i64, group: &str, row: i32, item: &str) -> Vec<&NoteText> {
        self.notes
            .iter()
            .filter(|(t, _)| {
                t.entity_type == "item_data"
                    && t.form_data_id == Some(form_data_id)
                    && t.group_oid.as_deref() == Some(group)
                    && t.row_number == Some(row)
                    && t.item_oid.as_deref() == Some(item)
            })
            .map(|(_, n)| n)
            .collect()
    }

    /// Writes the audit logs of `key` and the notes whose thread `on` selects at the end of the
    /// open participant, event or form.
    fn write_extensions(
        &self,
        w: &mut ClinicalWriter<Vec<u8>>,
        at: At,
        key: &str,
        on: impl Fn(&ThreadRow) -> bool,
    ) -> Result<(), AppError> {
        let logs = self.audit_logs(key);
        let notes: Vec<&NoteText> = self.notes.iter().filter(|(t, _)| on(t)).map(|(_, n)| n).collect();
        if logs.is_empty() && notes.is_empty() {
            return Ok(());
        }
        let children: Vec<Vec<ChildNoteOut<'_>>> = notes.iter().map(|n| n.children()).collect();
        let outs: Vec<NoteOut<'_>> = notes.iter().zip(&children).map(|(n, c)| n.out(c)).collect();
        w.extensions(at, &logs, &outs).map_err(internal)
    }
}

impl App {
    /// Reads what `req` asks for besides the data, for each participant of a page (nothing when
    /// it asks for nothing).
    async fn page_extras(
        &self,
        page: &[casebook_store::capture::ParticipantRow],
        req: &ClinicalExport,
        meanings: &[String],
    ) -> Result<Vec<PageExtras>, AppError> {
        let audit = req.audit_records || (req.openclinica && req.audit_logs);
        let notes = req.openclinica && req.notes && !req.odm20;
        if !(audit || notes || req.signatures) {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(page.len());
        for p in page {
            let mut x = PageExtras {
                participant_id: p.id,
                audit: std::collections::HashMap::new(),
                notes: Vec::new(),
                signatures: Vec::new(),
            };
            if audit {
                let rows = self
                    .store()
                    .audit_events(&casebook_store::audit::AuditFilter {
                        study_id: Some(p.study_id),
                        entity_tree: Some(p.oid.clone()),
                        limit: i64::MAX / 4,
                        ..Default::default()
                    })
                    .await?;
                for r in &rows {
                    x.audit.entry(r.entity_id.clone()).or_default().push(AuditText::from(r));
                }
            }
            if notes {
                let filter = ThreadFilter {
                    study_id: p.study_id,
                    participant_id: Some(p.id),
                    limit: i64::MAX / 4,
                    ..ThreadFilter::default()
                };
                for t in self.store().threads(&filter).await? {
                    let messages = self.store().thread_messages(t.id).await?;
                    let text = NoteText::from(&t, &messages);
                    x.notes.push((t, text));
                }
            }
            if req.signatures {
                for s in self.store().signatures_of_participant(p.id).await? {
                    if s.broken_at.is_none() {
                        x.signatures.push(SignatureText {
                            id: format!("SIG_{}", s.id),
                            study_event_id: s.study_event_id,
                            user_oid: user_oid(Some(s.signer_id)),
                            signature_oid: signature_def_oid(meanings, &s.meaning),
                            at: s.signed_at,
                        });
                    }
                }
            }
            out.push(x);
        }
        Ok(out)
    }
}

impl App {
    /// A whole study as one ODM document (`Granularity="All"`): the design in Production
    /// (`Study`), `AdminData` (every user who appears in the audit trail, the study and its
    /// sites as locations, a `SignatureDef` per signature meaning), then the clinical data as
    /// `req` asks — with audit records and signatures their user, location and signature
    /// OIDs resolve in it. ODM 1.3.2 (with or without OpenClinica's extensions) or 2.0.
    ///
    /// # Errors
    /// As [`App::export_clinical`] and the design export.
    pub async fn export_full<F, Fut>(
        &self,
        who: &Principal,
        study_or_site_oid: &str,
        req: &ClinicalExport,
        mut sink: F,
    ) -> Result<ExportCount, AppError>
    where
        F: FnMut(Vec<u8>) -> Fut,
        Fut: Future<Output = bool>,
    {
        use casebook_formats::odm::admin_write::{
            AdminDataOut, LocationOut, LocationType, MetaDataVersionRefOut, SignatureDefOut, UserOut, write_admin_data,
        };
        use casebook_formats::odm::write::OdmFlavour;
        let (_, study) = self.study_or_site(study_or_site_oid).await?;
        let (_, access) = self.study_with_access(who, &study.oid).await?;
        let format = match (req.odm20, req.openclinica) {
            (true, _) => "odm2",
            (false, true) => "odm13-oc",
            (false, false) => "odm13",
        };
        let flavour = match format {
            "odm2" => OdmFlavour::Odm20,
            "odm13-oc" => OdmFlavour::Odm132OpenClinica,
            _ => OdmFlavour::Odm132,
        };
        let metadata = self.export_design(who, &study.oid, crate::design::Which::Production, format).await?;
        let text = String::from_utf8(metadata).map_err(internal)?;
        let open = text
            .trim_end()
            .strip_suffix("</ODM>")
            .ok_or_else(|| crate::error::anyhow_like::msg("the metadata export does not end with </ODM>"))?
            .replacen("Granularity=\"Metadata\"", "Granularity=\"All\"", 1);
        let mdv = self
            .store()
            .design_production_version(study.id)
            .await?
            .map(|v| format!("v{}", v.number))
            .unwrap_or_else(|| "v0".to_owned());

        // AdminData.
        let mut users = Vec::new();
        for id in self.store().audit_actors(study.id).await? {
            if let Some(u) = self.store().user_by_id(id).await? {
                users.push(u);
            }
        }
        let user_oids: Vec<String> = users.iter().map(|u| user_oid(Some(u.id))).collect();
        let full_names: Vec<String> = users.iter().map(|u| format!("{} {}", u.first_name, u.last_name)).collect();
        let mut user_outs = vec![UserOut {
            oid: "USR_SYSTEM",
            login_name: Some("casebook"),
            full_name: Some("Casebook (automatic actions)"),
            ..UserOut::default()
        }];
        for (i, u) in users.iter().enumerate() {
            user_outs.push(UserOut {
                oid: &user_oids[i],
                login_name: Some(&u.username),
                full_name: Some(&full_names[i]),
                first_name: Some(&u.first_name),
                last_name: Some(&u.last_name),
                organization: u.institution.as_deref(),
                email: access.study_wide().then_some(u.email.as_str()),
                ..UserOut::default()
            });
        }
        let today = self.store().clock().now().date();
        let mdv_ref =
            [MetaDataVersionRefOut { study_oid: &study.oid, metadata_version_oid: &mdv, effective_date: today }];
        let sites: Vec<_> =
            self.store().sites_of(study.id).await?.into_iter().filter(|s| access.sees_site(s.id)).collect();
        let location_oids: Vec<String> =
            std::iter::once(&study.oid).chain(sites.iter().map(|s| &s.oid)).map(|o| location_oid(o)).collect();
        let mut locations = vec![LocationOut {
            oid: &location_oids[0],
            name: &study.name,
            location_type: Some(LocationType::Sponsor),
            metadata_versions: &mdv_ref,
        }];
        for (i, s) in sites.iter().enumerate() {
            locations.push(LocationOut {
                oid: &location_oids[i + 1],
                name: &s.name,
                location_type: Some(LocationType::Site),
                metadata_versions: &mdv_ref,
            });
        }
        let meanings = self.store().signature_meanings(study.id).await?;
        let sd_oids: Vec<String> = meanings.iter().map(|m| signature_def_oid(&meanings, m)).collect();
        let defs: Vec<SignatureDefOut<'_>> = meanings
            .iter()
            .zip(&sd_oids)
            .map(|(m, oid)| SignatureDefOut {
                oid,
                meaning: m,
                legal_reason: "Electronic signature under 21 CFR Part 11: the signer re-entered their password",
            })
            .collect();
        let mut admin = Vec::new();
        write_admin_data(
            &mut admin,
            &AdminDataOut {
                study_oid: Some(&study.oid),
                users: &user_outs,
                locations: &locations,
                signature_defs: &defs,
            },
            flavour,
        )
        .map_err(internal)?;
        let mut head = open.into_bytes();
        head.push(b'\n');
        head.extend_from_slice(&admin);
        head.push(b'\n');
        if !sink(head).await {
            return Ok(ExportCount::default());
        }
        let req = ClinicalExport { embedded: true, ..req.clone() };
        let count = self.export_clinical(who, study_or_site_oid, &req, &mut sink).await?;
        sink(b"\n</ODM>\n".to_vec()).await;
        Ok(count)
    }
}

/// Escapes text for HTML.
fn html_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl App {
    /// OpenClinica 3's `…/clinicaldata/html/{view|print}/…`: the export as a printable HTML
    /// page — each participant with its events, forms and values under their questions (the
    /// design in Production gives the texts), code list values with their labels. `None` when
    /// no participant matched.
    ///
    /// # Errors
    /// As [`App::export_clinical`].
    pub async fn export_clinical_html(
        &self,
        who: &Principal,
        study_or_site_oid: &str,
        req: &ClinicalExport,
    ) -> Result<Option<String>, AppError> {
        use casebook_formats::odm::clinical::{ClinicalReader, Record};
        let mut xml = Vec::new();
        let req = ClinicalExport { openclinica: true, odm20: false, ..req.clone() };
        let count = self
            .export_clinical(who, study_or_site_oid, &req, |chunk| {
                xml.extend_from_slice(&chunk);
                std::future::ready(true)
            })
            .await?;
        if count.participants == 0 {
            return Ok(None);
        }
        let (_, study) = self.study_or_site(study_or_site_oid).await?;
        let design = match self.production_design_opt(study.id).await? {
            Some((_, d)) => d,
            None => std::sync::Arc::new(StudyDesign::default()),
        };
        let mut html = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} clinical data</title>\
             <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:.5em 0 1.5em}}\
             td,th{{border:1px solid #999;padding:.2em .5em;text-align:left}}h2{{page-break-before:always}}\
             h2:first-of-type{{page-break-before:auto}}</style></head><body>\n<h1>{} — clinical data</h1>\n",
            html_text(&study.name),
            html_text(&study.name)
        );
        let mut reader = ClinicalReader::new(xml.as_slice());
        while let Some(record) = reader
            .next_record()
            .map_err(|d| crate::error::anyhow_like::msg(format!("reading the export: {}", d.message)))?
        {
            match record {
                Record::Subject(s) => {
                    let label = s.subject.label.clone().or(s.subject.key.clone()).unwrap_or_default();
                    html.push_str(&format!(
                        "<h2>Participant {}</h2>\n<p>Status: {}{}{}</p>\n",
                        html_text(&label),
                        html_text(s.status.as_deref().unwrap_or("")),
                        s.enrollment_date
                            .as_deref()
                            .map(|d| format!("; enrolled {}", html_text(d)))
                            .unwrap_or_default(),
                        s.sex.as_deref().map(|x| format!("; sex {}", html_text(x))).unwrap_or_default(),
                    ));
                }
                Record::Event(e) => {
                    let name = design.event(&e.event_oid).map_or(e.event_oid.as_str(), |d| d.name.as_str());
                    html.push_str(&format!(
                        "<h3>{} [{}]</h3>\n<p>Status: {}{}</p>\n",
                        html_text(name),
                        html_text(e.repeat_key.as_deref().unwrap_or("1")),
                        html_text(e.status.as_deref().unwrap_or("")),
                        e.start_date.as_deref().map(|d| format!("; start {}", html_text(d))).unwrap_or_default(),
                    ));
                }
                Record::Form(f) => {
                    let found = design.form_version(&f.form_oid);
                    let form_name = found.map_or(f.form_oid.as_str(), |(form, _)| form.name.as_str());
                    html.push_str(&format!(
                        "<h4>{} ({}) — {}</h4>\n<table><thead><tr><th>Question</th><th>Row</th><th>Value</th></tr></thead><tbody>\n",
                        html_text(form_name),
                        html_text(f.version.as_deref().unwrap_or(&f.form_oid)),
                        html_text(f.status.as_deref().unwrap_or("")),
                    ));
                    for g in &f.groups {
                        for item in &g.items {
                            let def = found.and_then(|(_, v)| v.item_by_oid(&item.oid));
                            let question = def.map_or(item.oid.clone(), |d| {
                                let text = if d.label.text.is_empty() { d.name.clone() } else { d.label.text.clone() };
                                match &d.question_number {
                                    Some(n) => format!("{n} {text}"),
                                    None => text,
                                }
                            });
                            let value = match (&item.value, &item.reason_for_null) {
                                (Some(v), _) => {
                                    let decode = def.zip(found).and_then(|(d, (_, version))| {
                                        let list =
                                            version.code_lists.iter().find(|c| Some(&c.oid) == d.code_list.as_ref())?;
                                        let labels: Vec<String> = v
                                            .split(',')
                                            .map(|code| {
                                                list.items.iter().find(|i| i.value == code.trim()).map_or_else(
                                                    || code.trim().to_owned(),
                                                    |i| format!("{} ({})", i.label.text, code.trim()),
                                                )
                                            })
                                            .collect();
                                        Some(labels.join(", "))
                                    });
                                    decode.unwrap_or_else(|| v.clone())
                                }
                                (None, Some(n)) => format!("[{n}]"),
                                (None, None) => String::new(),
                            };
                            html.push_str(&format!(
                                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                                html_text(&question),
                                html_text(g.repeat_key.as_deref().unwrap_or("")),
                                html_text(&value),
                            ));
                        }
                    }
                    html.push_str("</tbody></table>\n");
                }
                Record::Study(_) | Record::Notes(_) => {}
            }
        }
        html.push_str("</body></html>\n");
        Ok(Some(html))
    }
}
