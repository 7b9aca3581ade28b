//! Clinical data out as CDISC ODM 1.3.2, streamed: a study, one site, one participant, one event
//! or one form version, optionally only what changed since a time (nightly ETL). The data are
//! read a page of participants at a time and written as they are read, handing each page's XML
//! to the caller (an HTTP body, standard output), so memory stays flat whatever the study's size.
//!
//! Removed participants, events and forms are not exported. Site-level users get their sites'
//! participants only, without the forms hidden from their site.

use std::future::Future;

use casebook_domain::design::StudyDesign;
use casebook_formats::odm::clinical_write::{ClinicalFile, ClinicalWriter, EventOut, FormOut, ItemOut, SubjectOut};
use casebook_store::capture::{FormDataRow, ItemDataRow};
use casebook_store::export::ExportFilter;
use serde::Serialize;
use time::OffsetDateTime;

use crate::auth::Principal;
use crate::error::anyhow_like::internal;
use crate::{App, AppError};

/// Participants read per page.
const PAGE: i64 = 100;

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
        let target = self.store().study_by_oid(study_or_site_oid).await?.ok_or(AppError::NotFound("study"))?;
        let study_oid = match target.parent_id {
            Some(parent) => self.store().study_by_id(parent).await?.ok_or(AppError::NotFound("study"))?.oid,
            None => target.oid.clone(),
        };
        let (study, access) = self.study_with_access(who, &study_oid).await?;
        let site_ids: Option<Vec<i64>> = match (target.parent_id.is_some(), access.study_wide()) {
            (true, _) if access.sees_site(target.id) => Some(vec![target.id]),
            (true, _) => return Err(AppError::NotFound("study")),
            (false, true) => None,
            (false, false) => Some(access.site_roles.iter().map(|(s, _)| *s).collect()),
        };
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
            openclinica: req.openclinica,
            odm20: false,
        };
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
            for p in &page {
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
                    ..SubjectOut::default()
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
                        ..EventOut::default()
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
                            ..FormOut::default()
                        })
                        .map_err(internal)?;
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
                            let items: Vec<ItemOut<'_>> = rows[start..end]
                                .iter()
                                .map(|v| ItemOut {
                                    item_oid: &v.item_oid,
                                    value: v.value.as_deref(),
                                    null_flavour: v.null_flavour.as_deref(),
                                    ..ItemOut::default()
                                })
                                .collect();
                            w.group(g, repeating.then_some(r), &items).map_err(internal)?;
                            count.values += items.len();
                            start = end;
                        }
                    }
                }
            }
            if !sink(std::mem::take(w.get_mut())).await {
                return Ok(count);
            }
        }
        let rest = w.finish().map_err(internal)?;
        sink(rest).await;
        Ok(count)
    }
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
