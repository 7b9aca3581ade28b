//! Data capture use cases: enrol participants, schedule events, enter form data, complete forms,
//! read a participant's casebook. Data are entered against the design in Production.

use casebook_domain::FieldError;
use casebook_domain::audit::AuditEntry;
use casebook_domain::design::StudyDesign;
use casebook_domain::oid::{self, OidKind};
use casebook_domain::role::Permission;
use casebook_domain::study::{Collect, DobCollection, IdGeneration, StudyParameters, StudyStatus};
use casebook_store::capture::{NewParticipant, ParticipantRow, StudyEventRow};
use casebook_store::studies::StudyRow;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use time::OffsetDateTime;

use crate::App;
use crate::access::Access;
use crate::auth::Principal;
use crate::error::{AppError, anyhow_like};

fn internal(e: impl std::error::Error + Send + Sync + 'static) -> AppError {
    AppError::Internal(anyhow_like::Internal(Box::new(e)))
}

/// A participant as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ParticipantView {
    pub label: String,
    pub oid: String,
    pub site_oid: String,
    pub secondary_label: Option<String>,
    pub person_id: Option<String>,
    pub sex: Option<String>,
    pub date_of_birth: Option<String>,
    pub enrolled_on: String,
    pub group: Option<String>,
    pub status: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// What enrolling a participant takes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolInput {
    /// The site's OID (the study's own OID enrols at study level).
    pub site: String,
    /// The participant ID; generated when the study numbers automatically.
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub secondary_label: Option<String>,
    #[serde(default)]
    pub person_id: Option<String>,
    /// `m` or `f`.
    #[serde(default)]
    pub sex: Option<String>,
    /// `YYYY-MM-DD`, or `YYYY` when the study collects the year only.
    #[serde(default)]
    pub date_of_birth: Option<String>,
    /// `YYYY-MM-DD`, not in the future.
    pub enrolled_on: String,
    #[serde(default)]
    pub group: Option<String>,
}

/// What scheduling an event takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleInput {
    /// The event definition's OID.
    pub event: String,
    /// RFC 3339 date-time (UTC), or a date `YYYY-MM-DD`.
    #[serde(default)]
    pub start: Option<String>,
    #[serde(default)]
    pub end: Option<String>,
    #[serde(default)]
    pub location: Option<String>,
}

/// An event occurrence as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    pub event_oid: String,
    pub name: String,
    pub repeat_key: i32,
    pub status: String,
    pub removal: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub start: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub end: Option<OffsetDateTime>,
    pub location: Option<String>,
    pub forms: Vec<FormView>,
}

/// A form in an event, with its values.
#[derive(Debug, Clone, Serialize)]
pub struct FormView {
    pub form_oid: String,
    pub form_version_oid: String,
    pub status: String,
    /// Double data entry: `awaiting_dde` once initial entry is complete, `done` after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub double_data_entry: Option<String>,
    pub version: i64,
    pub values: Vec<ValueView>,
}

/// One stored value.
#[derive(Debug, Clone, Serialize)]
pub struct ValueView {
    pub item_oid: String,
    pub group_oid: String,
    pub row: i32,
    pub value: Option<String>,
    pub null_flavour: Option<String>,
}

/// A participant's whole casebook.
#[derive(Debug, Clone, Serialize)]
pub struct CasebookView {
    pub participant: ParticipantView,
    pub events: Vec<EventView>,
}

fn parse_date(field: &str, text: &str, errors: &mut Vec<FieldError>) -> Option<time::Date> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    match time::Date::parse(text.trim(), fmt) {
        Ok(d) => Some(d),
        Err(_) => {
            errors.push(FieldError::new(field, format!("'{text}' is not a date (YYYY-MM-DD)")));
            None
        }
    }
}

fn parse_instant(field: &str, text: &str, errors: &mut Vec<FieldError>) -> Option<OffsetDateTime> {
    let t = text.trim();
    if let Ok(dt) = OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339) {
        return Some(dt.to_offset(time::UtcOffset::UTC));
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    match time::Date::parse(t, fmt) {
        Ok(d) => Some(d.midnight().assume_utc()),
        Err(_) => {
            errors.push(FieldError::new(field, format!("'{text}' is not a date (YYYY-MM-DD) or date-time (RFC 3339)")));
            None
        }
    }
}

/// A reason given with an action: trimmed, and none when blank.
fn clean_reason(reason: Option<String>) -> Option<String> {
    reason.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty())
}

/// Fills an automatic ID template: `{site}`, `{study}`, `{n}`, `{n:04}`.
fn fill_template(template: &str, site: &str, study: &str, n: i64) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else { break };
        let name = &rest[open + 1..open + close];
        match name {
            "site" => out.push_str(site),
            "study" => out.push_str(study),
            "n" => out.push_str(&n.to_string()),
            w => {
                let width: usize = w.strip_prefix("n:0").and_then(|x| x.parse().ok()).unwrap_or(1);
                out.push_str(&format!("{n:0width$}"));
            }
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

impl App {
    /// A study or site by OID, with the study it belongs to (itself for a study): the OpenClinica
    /// paths and imports name either.
    ///
    /// # Errors
    /// [`AppError::NotFound`] for an unknown OID.
    pub(crate) async fn study_or_site(&self, oid: &str) -> Result<(StudyRow, StudyRow), AppError> {
        let target = self.store().study_by_oid(oid).await?.ok_or(AppError::NotFound("study"))?;
        let study = match target.parent_id {
            Some(parent) => self.store().study_by_id(parent).await?.ok_or(AppError::NotFound("study"))?,
            None => target.clone(),
        };
        Ok((target, study))
    }

    pub(crate) async fn site_of(&self, study: &StudyRow, site_oid: &str) -> Result<StudyRow, AppError> {
        if site_oid == study.oid {
            return Ok(study.clone());
        }
        self.store()
            .study_by_oid(site_oid)
            .await?
            .filter(|s| s.parent_id == Some(study.id))
            .ok_or(AppError::NotFound("site"))
    }

    /// The design data are entered against: the version in Production.
    pub(crate) async fn production_design(&self, study_id: i64) -> Result<(i32, Arc<StudyDesign>), AppError> {
        self.production_design_opt(study_id).await?.ok_or_else(|| {
            AppError::InvalidTransition(
                "the study has no design in Production yet; publish and promote one first".into(),
            )
        })
    }

    /// A participant the principal may see, with the study, access and site.
    pub(crate) async fn visible_participant(
        &self,
        who: &Principal,
        study_oid: &str,
        key: &str,
    ) -> Result<(StudyRow, Access, ParticipantRow, StudyRow), AppError> {
        let (study, access) = self.study_with_access(who, study_oid).await?;
        let p = self.store().participant(study.id, key).await?.ok_or(AppError::NotFound("participant"))?;
        if !access.sees_site(p.site_id) {
            return Err(AppError::NotFound("participant"));
        }
        let site = if p.site_id == study.id {
            study.clone()
        } else {
            self.store().study_by_id(p.site_id).await?.ok_or(AppError::NotFound("site"))?
        };
        Ok((study, access, p, site))
    }

    pub(crate) fn may_enter(access: &Access, study: &StudyRow, site: &StudyRow) -> bool {
        Self::may(access, study, site, Permission::EnterData)
    }

    /// Whether the principal may do `p` at a participant's site (the study's own row for
    /// study-level participants), the study's and site's status included.
    pub(crate) fn may(access: &Access, study: &StudyRow, site: &StudyRow, p: Permission) -> bool {
        let status = site.status.parse().unwrap_or(StudyStatus::Design);
        if site.id == study.id { access.can_study(p) } else { access.can_site(site.id, status, p) }
    }

    /// The participant as it is now (after a change).
    async fn participant_view_of(&self, study_id: i64, oid: &str) -> Result<ParticipantView, AppError> {
        let row = self.store().participant(study_id, oid).await?.ok_or(AppError::NotFound("participant"))?;
        self.participant_view(&row).await
    }

    async fn participant_view(&self, p: &ParticipantRow) -> Result<ParticipantView, AppError> {
        let site = self.store().study_by_id(p.site_id).await?.ok_or(AppError::NotFound("site"))?;
        Ok(ParticipantView {
            label: p.label.clone(),
            oid: p.oid.clone(),
            site_oid: site.oid,
            secondary_label: p.secondary_label.clone(),
            person_id: p.person_id.clone(),
            sex: p.sex.clone(),
            date_of_birth: p.date_of_birth.clone(),
            enrolled_on: p.enrolled_on.clone(),
            group: p.group_name.clone(),
            status: p.status.clone(),
            created_at: p.created_at,
        })
    }

    /// Enrols a participant at a site, following the study's parameters.
    ///
    /// # Errors
    /// [`AppError::Validation`] naming every wrong field; [`AppError::Conflict`] for a taken ID;
    /// [`AppError::Forbidden`] for users who may not enter data at the site (or when the study's
    /// status does not allow it).
    pub async fn enrol(
        &self,
        who: &Principal,
        study_oid: &str,
        input: EnrolInput,
    ) -> Result<ParticipantView, AppError> {
        let (study, access) = self.study_with_access(who, study_oid).await?;
        let site = self.site_of(&study, &input.site).await?;
        if !access.sees_site(site.id) && site.id != study.id {
            return Err(AppError::NotFound("site"));
        }
        if !Self::may_enter(&access, &study, &site) {
            return Err(AppError::Forbidden(
                "enrol participants at this site (or the study's status does not allow it)",
            ));
        }
        let params: StudyParameters = serde_json::from_str(&study.parameters).map_err(internal)?;
        let today = self.store().clock().now().date();
        let e = check_enrolment(&params, today, &input).map_err(AppError::Validation)?;
        let mut tx = self.store().write(who.actor()).await?;
        let (_, oid_text) = self.enrol_in(&mut tx, &study, &site, &params, &e, None).await?;
        tx.commit().await?;
        self.participant_view_of(study.id, &oid_text).await
    }

    /// Enrols a checked participant inside a transaction (an enrolment, an import): numbers it
    /// when the study does, gives it `oid` when that OID is free (an import keeps the file's),
    /// audits it. Returns its id and OID.
    ///
    /// # Errors
    /// [`AppError::Conflict`] when the participant ID is taken.
    pub(crate) async fn enrol_in(
        &self,
        tx: &mut casebook_store::WriteTx,
        study: &StudyRow,
        site: &StudyRow,
        params: &StudyParameters,
        e: &Enrolment,
        oid: Option<&str>,
    ) -> Result<(i64, String), AppError> {
        let Enrolment { label: label_in, secondary, person_id, sex, dob, enrolled, group } = e.clone();
        let site_protocol = serde_json::from_str::<casebook_domain::study::StudyDetails>(&site.details)
            .map(|d| d.protocol_id)
            .unwrap_or_else(|_| site.oid.clone());
        let study_protocol = serde_json::from_str::<casebook_domain::study::StudyDetails>(&study.details)
            .map(|d| d.protocol_id)
            .unwrap_or_else(|_| study.oid.clone());

        let label = match label_in {
            Some(l) => l,
            None => {
                let n = tx.next_participant_number(study.id).await?;
                match params.participant_id_template.as_deref() {
                    Some(t) => fill_template(t, &site_protocol, &study_protocol, n),
                    None => n.to_string(),
                }
            }
        };
        let base = oid::generate(
            OidKind::StudySubject,
            &label,
            |_| false,
            || {
                use rand::Rng;
                rand::rng().random_range(0..10_000)
            },
        )
        .to_string();
        // OpenClinica's OID keeps 8 characters of the label, so labels sharing a prefix
        // (DEMO-A-0001, DEMO-A-0002 …) meet: the whole label comes next (labels are unique in
        // a study), then a random suffix from a range no study exhausts.
        let whole = format!("SS_{}", oid::normalise_key(&label, 40));
        let mut candidates = Vec::new();
        if let Some(o) = oid.map(str::trim).filter(|o| !o.is_empty()) {
            candidates.push(o.to_owned());
        }
        candidates.push(base.clone());
        if whole.len() > 3 {
            candidates.push(whole);
        }
        let mut oid_text = String::new();
        for c in candidates {
            if !tx.participant_oid_taken(&c).await? {
                oid_text = c;
                break;
            }
        }
        while oid_text.is_empty() || tx.participant_oid_taken(&oid_text).await? {
            use rand::Rng;
            oid_text = format!("{base}_{}", rand::rng().random_range(10_000..1_000_000_000_u32));
        }
        let id = tx
            .insert_participant(&NewParticipant {
                study_id: study.id,
                site_id: site.id,
                label: &label,
                oid: &oid_text,
                secondary_label: secondary.as_deref(),
                person_id: person_id.as_deref(),
                sex: sex.as_deref(),
                date_of_birth: dob.as_deref(),
                enrolled_on: &enrolled,
                group_name: group.as_deref(),
            })
            .await
            .map_err(|e| match e {
                casebook_store::StoreError::Conflict => {
                    AppError::Conflict(format!("participant ID '{label}' is already used in this study"))
                }
                other => other.into(),
            })?;
        tx.audit(
            AuditEntry::new("participant.enrolled", "participant", &oid_text)
                .study(Some(study.id), (site.id != study.id).then_some(site.id))
                .new_value(serde_json::json!({
                    "label": label, "site": site.oid, "secondary_label": secondary, "sex": sex,
                    "date_of_birth": dob, "enrolled_on": enrolled, "group": group, "participant_id": id,
                })),
        )
        .await?;
        Ok((id, oid_text))
    }

    /// Participants of a study the principal may see (site users: their sites), by ID.
    ///
    /// # Errors
    /// [`AppError::NotFound`] for an unknown study.
    pub async fn list_participants(
        &self,
        who: &Principal,
        study_oid: &str,
        site_oid: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ParticipantView>, AppError> {
        let (study, access) = self.study_with_access(who, study_oid).await?;
        let site_id = match site_oid {
            Some(s) => {
                let site = self.site_of(&study, s).await?;
                if !access.sees_site(site.id) && site.id != study.id {
                    return Err(AppError::NotFound("site"));
                }
                Some(site.id)
            }
            None => None,
        };
        let rows = self.store().participants(study.id, site_id, after.unwrap_or(""), limit.clamp(1, 1000)).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows.iter().filter(|r| access.sees_site(r.site_id)) {
            out.push(self.participant_view(r).await?);
        }
        Ok(out)
    }

    /// Schedules an event for a participant: the next occurrence of a repeating event, or the one
    /// occurrence of a non-repeating one.
    ///
    /// # Errors
    /// [`AppError::Conflict`] when a non-repeating event is already scheduled;
    /// [`AppError::Validation`] for unknown events and bad dates.
    pub async fn schedule_event(
        &self,
        who: &Principal,
        study_oid: &str,
        participant: &str,
        input: ScheduleInput,
    ) -> Result<EventView, AppError> {
        let (study, access, p, site) = self.visible_participant(who, study_oid, participant).await?;
        if !Self::may_enter(&access, &study, &site) {
            return Err(AppError::Forbidden("schedule events at this site (or the study's status does not allow it)"));
        }
        if p.status != "available" {
            return Err(AppError::InvalidTransition(format!(
                "participant {} is {}; nothing can be scheduled",
                p.label, p.status
            )));
        }
        let (_, design) = self.production_design(study.id).await?;
        let params: StudyParameters = serde_json::from_str(&study.parameters).map_err(internal)?;
        let mut errors = Vec::new();
        let def = design.event(&input.event).cloned();
        if def.is_none() {
            errors.push(FieldError::new("event", format!("the design in Production has no event {}", input.event)));
        }
        let start = input.start.as_deref().and_then(|s| parse_instant("start", s, &mut errors));
        let end = input.end.as_deref().and_then(|s| parse_instant("end", s, &mut errors));
        if let (Some(s), Some(e)) = (start, end)
            && e < s
        {
            errors.push(FieldError::new("end", "the end is before the start"));
        }
        let location = input.location.as_deref().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned);
        match (params.event_location, &location) {
            (Collect::Required, None) => {
                errors.push(FieldError::new("location", "the location is required in this study"))
            }
            (Collect::NotUsed, Some(_)) => {
                errors.push(FieldError::new("location", "this study does not record event locations"))
            }
            _ => {}
        }
        let Some(def) = def.filter(|_| errors.is_empty()) else {
            return Err(AppError::Validation(errors));
        };
        let mut tx = self.store().write(who.actor()).await?;
        let repeat_key =
            self.schedule_in(&mut tx, &study, &site, &p, &def, None, start, end, location.as_deref()).await?;
        tx.commit().await?;
        Ok(EventView {
            event_oid: def.oid.to_string(),
            name: def.name.clone(),
            repeat_key,
            status: "scheduled".into(),
            removal: "available".into(),
            start,
            end,
            location,
            forms: Vec::new(),
        })
    }

    /// Schedules an occurrence of `def` inside a transaction (a scheduling, an import): the
    /// occurrence `repeat_key` when given (an import keeps the file's), else the next one;
    /// audited. Returns its repeat key.
    ///
    /// # Errors
    /// [`AppError::Conflict`] when a non-repeating event is already scheduled, or the
    /// occurrence exists.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn schedule_in(
        &self,
        tx: &mut casebook_store::WriteTx,
        study: &StudyRow,
        site: &StudyRow,
        p: &ParticipantRow,
        def: &casebook_domain::design::EventDef,
        repeat_key: Option<i32>,
        start: Option<time::OffsetDateTime>,
        end: Option<time::OffsetDateTime>,
        location: Option<&str>,
    ) -> Result<i32, AppError> {
        let existing: Vec<StudyEventRow> =
            tx.study_events_of(p.id).await?.into_iter().filter(|e| e.event_oid == def.oid.as_str()).collect();
        if !def.repeating && (!existing.is_empty() || repeat_key.is_some_and(|r| r != 1)) {
            return Err(AppError::Conflict(format!("event {} is not repeating and is already scheduled", def.oid)));
        }
        if let Some(r) = repeat_key
            && existing.iter().any(|e| e.repeat_key == r)
        {
            return Err(AppError::Conflict(format!("occurrence {r} of event {} is already scheduled", def.oid)));
        }
        let repeat_key = repeat_key.unwrap_or_else(|| existing.iter().map(|e| e.repeat_key).max().unwrap_or(0) + 1);
        tx.insert_study_event(p.id, def.oid.as_str(), repeat_key, start, end, location).await?;
        tx.audit(
            AuditEntry::new("event.scheduled", "study_event", format!("{}/{}[{repeat_key}]", p.oid, def.oid))
                .study(Some(study.id), (site.id != study.id).then_some(site.id))
                .new_value(serde_json::json!({
                    "participant": p.oid, "event": def.oid.as_str(), "repeat_key": repeat_key,
                    "start": start.map(|s| s.to_string()), "end": end.map(|s| s.to_string()), "location": location,
                    "status": "scheduled",
                })),
        )
        .await?;
        Ok(repeat_key)
    }

    /// Removes a participant: it and everything under it leave the active data (nothing is
    /// deleted); its events and forms become auto-removed.
    ///
    /// # Errors
    /// [`AppError::InvalidTransition`] when already removed; [`AppError::Forbidden`] for roles that
    /// may not remove.
    pub async fn remove_participant(
        &self,
        who: &Principal,
        study_oid: &str,
        participant: &str,
        reason: Option<String>,
    ) -> Result<ParticipantView, AppError> {
        let (study, access, p, site) = self.visible_participant(who, study_oid, participant).await?;
        if !Self::may(&access, &study, &site, Permission::RemoveParticipant) {
            return Err(AppError::Forbidden("remove participants"));
        }
        if p.status == "removed" || p.status == "auto_removed" {
            return Err(AppError::InvalidTransition(format!("participant {} is already removed", p.label)));
        }
        let reason = clean_reason(reason);
        let mut tx = self.store().write(who.actor()).await?;
        let (events, forms) = tx.remove_participant(p.id).await?;
        tx.audit(
            AuditEntry::new("participant.removed", "participant", &p.oid)
                .study(Some(study.id), (site.id != study.id).then_some(site.id))
                .old(serde_json::json!({ "status": p.status }))
                .new_value(serde_json::json!({ "status": "removed", "auto_removed_events": events, "auto_removed_forms": forms }))
                .reason(reason),
        )
        .await?;
        tx.commit().await?;
        self.participant_view_of(study.id, &p.oid).await
    }

    /// Restores a removed participant, and only what its removal auto-removed.
    ///
    /// # Errors
    /// [`AppError::InvalidTransition`] when not removed.
    pub async fn restore_participant(
        &self,
        who: &Principal,
        study_oid: &str,
        participant: &str,
        reason: Option<String>,
    ) -> Result<ParticipantView, AppError> {
        let (study, access, p, site) = self.visible_participant(who, study_oid, participant).await?;
        if !Self::may(&access, &study, &site, Permission::RemoveParticipant) {
            return Err(AppError::Forbidden("restore participants"));
        }
        if p.status != "removed" {
            return Err(AppError::InvalidTransition(format!("participant {} is not removed", p.label)));
        }
        let reason = clean_reason(reason);
        let mut tx = self.store().write(who.actor()).await?;
        let (events, forms) = tx.restore_participant(p.id).await?;
        tx.audit(
            AuditEntry::new("participant.restored", "participant", &p.oid)
                .study(Some(study.id), (site.id != study.id).then_some(site.id))
                .old(serde_json::json!({ "status": "removed" }))
                .new_value(
                    serde_json::json!({ "status": "available", "restored_events": events, "restored_forms": forms }),
                )
                .reason(reason),
        )
        .await?;
        tx.commit().await?;
        self.participant_view_of(study.id, &p.oid).await
    }

    /// Moves a participant to another site of the study (OpenClinica "reassign").
    ///
    /// # Errors
    /// [`AppError::Forbidden`] unless the principal may reassign at both sites.
    pub async fn reassign_participant(
        &self,
        who: &Principal,
        study_oid: &str,
        participant: &str,
        to_site: &str,
        reason: Option<String>,
    ) -> Result<ParticipantView, AppError> {
        let (study, access, p, site) = self.visible_participant(who, study_oid, participant).await?;
        let target = self.site_of(&study, to_site).await?;
        if !Self::may(&access, &study, &site, Permission::ReassignParticipant)
            || !Self::may(&access, &study, &target, Permission::ReassignParticipant)
        {
            return Err(AppError::Forbidden("move participants between these sites"));
        }
        if target.id == site.id {
            return Err(AppError::invalid("site", format!("participant {} is already at {}", p.label, target.oid)));
        }
        if p.status == "removed" {
            return Err(AppError::InvalidTransition(format!("participant {} is removed; restore it first", p.label)));
        }
        let reason = clean_reason(reason);
        let mut tx = self.store().write(who.actor()).await?;
        tx.set_participant_site(p.id, target.id).await?;
        tx.audit(
            AuditEntry::new("participant.reassigned", "participant", &p.oid)
                .study(Some(study.id), (target.id != study.id).then_some(target.id))
                .old(serde_json::json!({ "site": site.oid }))
                .new_value(serde_json::json!({ "site": target.oid }))
                .reason(reason),
        )
        .await?;
        tx.commit().await?;
        self.participant_view_of(study.id, &p.oid).await
    }

    /// The audit trail of a participant and everything under it (events, forms, values).
    ///
    /// # Errors
    /// [`AppError::Forbidden`] for roles that may not read the audit trail.
    pub async fn participant_audit(
        &self,
        who: &Principal,
        study_oid: &str,
        participant: &str,
        within: Option<&str>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<casebook_domain::audit::AuditRecord>, AppError> {
        let (study, access, p, site) = self.visible_participant(who, study_oid, participant).await?;
        if !Self::may(&access, &study, &site, Permission::ViewAudit) && !access.can_study(Permission::ViewAudit) {
            return Err(AppError::Forbidden("read the audit trail"));
        }
        Ok(self
            .store()
            .audit_events(&casebook_store::audit::AuditFilter {
                study_id: Some(study.id),
                // `within` narrows to one event, form or value: `SE_X[1]`, `SE_X[1]/F_Y`,
                // `SE_X[1]/F_Y/IG_G[1]/I_A`.
                entity_tree: Some(match within.map(str::trim).filter(|w| !w.is_empty()) {
                    Some(w) => format!("{}/{}", p.oid, w.trim_matches('/')),
                    None => p.oid.clone(),
                }),
                after_seq: after,
                limit: limit.clamp(1, 10_000),
                ..casebook_store::audit::AuditFilter::default()
            })
            .await?)
    }

    /// A participant's casebook: details, events, forms and values.
    ///
    /// # Errors
    /// [`AppError::NotFound`] when the participant does not exist or is at a site the user does
    /// not see.
    pub async fn casebook(
        &self,
        who: &Principal,
        study_oid: &str,
        participant: &str,
    ) -> Result<CasebookView, AppError> {
        let (study, _, p, _) = self.visible_participant(who, study_oid, participant).await?;
        let design = self.production_design_opt(study.id).await?.map(|(_, d)| d).unwrap_or_default();
        let events = self.store().study_events(p.id).await?;
        let forms = self.store().forms_of_participant(p.id).await?;
        let mut values_by_form: std::collections::HashMap<i64, Vec<ValueView>> = std::collections::HashMap::new();
        for v in self.store().item_data_of_participant(p.id).await? {
            values_by_form.entry(v.form_data_id).or_default().push(ValueView {
                item_oid: v.item_oid,
                group_oid: v.group_oid,
                row: v.row_number,
                value: v.value,
                null_flavour: v.null_flavour,
            });
        }
        let mut out = Vec::new();
        for e in events {
            let mut fviews = Vec::new();
            for f in forms.iter().filter(|f| f.study_event_id == e.id) {
                let values = values_by_form.remove(&f.id).unwrap_or_default();
                fviews.push(FormView {
                    form_oid: f.form_oid.clone(),
                    form_version_oid: f.form_version_oid.clone(),
                    status: f.status.clone(),
                    double_data_entry: f.dde_stage.clone(),
                    version: f.version,
                    values,
                });
            }
            out.push(EventView {
                name: design.event(&e.event_oid).map_or_else(|| e.event_oid.clone(), |d| d.name.clone()),
                event_oid: e.event_oid,
                repeat_key: e.repeat_key,
                status: e.status,
                removal: e.removal,
                start: e.start_at,
                end: e.end_at,
                location: e.location,
                forms: fviews,
            });
        }
        Ok(CasebookView { participant: self.participant_view(&p).await?, events: out })
    }
}

#[cfg(test)]
mod tests {
    use super::fill_template;

    #[test]
    fn templates_fill() {
        assert_eq!(fill_template("{site}-{n:04}", "DEMO-A", "DEMO", 7), "DEMO-A-0007");
        assert_eq!(fill_template("{study}{n}", "A", "TRIAL", 12), "TRIAL12");
        assert_eq!(fill_template("P-{n:03}", "A", "T", 1234), "P-1234");
    }
}

/// Enrolment fields checked against the study's parameters.
#[derive(Debug, Clone)]
pub(crate) struct Enrolment {
    pub(crate) label: Option<String>,
    pub(crate) secondary: Option<String>,
    pub(crate) person_id: Option<String>,
    pub(crate) sex: Option<String>,
    pub(crate) dob: Option<String>,
    pub(crate) enrolled: String,
    pub(crate) group: Option<String>,
}

/// Checks an enrolment against the study's parameters (IDs, person ID, sex, date or year of
/// birth, enrolment date); every problem at once.
pub(crate) fn check_enrolment(
    params: &StudyParameters,
    today: time::Date,
    input: &EnrolInput,
) -> Result<Enrolment, Vec<FieldError>> {
    let mut errors = Vec::new();
    let trim = |s: &Option<String>| s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
    let label_in = trim(&input.label);
    match (params.participant_id_generation, &label_in) {
        (IdGeneration::Manual, None) => errors.push(FieldError::new("label", "the participant ID is required")),
        (IdGeneration::AutoNonEditable, Some(_)) => {
            errors.push(FieldError::new("label", "this study numbers participants automatically; leave the ID out"));
        }
        (_, Some(l)) if l.chars().count() > 30 => errors.push(FieldError::new("label", "at most 30 characters")),
        _ => {}
    }
    let secondary = trim(&input.secondary_label);
    if secondary.as_ref().is_some_and(|s| s.chars().count() > 30) {
        errors.push(FieldError::new("secondary_label", "at most 30 characters"));
    }
    let person_id = trim(&input.person_id);
    match (params.person_id, &person_id) {
        (Collect::Required, None) => {
            errors.push(FieldError::new("person_id", "the person ID is required in this study"))
        }
        (Collect::NotUsed, Some(_)) => {
            errors.push(FieldError::new("person_id", "this study does not collect a person ID"))
        }
        _ => {}
    }
    let sex = match trim(&input.sex).map(|s| s.to_ascii_lowercase()) {
        None if params.sex_required => {
            errors.push(FieldError::new("sex", "sex is required in this study (m or f)"));
            None
        }
        None => None,
        Some(s) => match s.as_str() {
            "m" | "male" => Some("m".to_owned()),
            "f" | "female" => Some("f".to_owned()),
            other => {
                errors.push(FieldError::new("sex", format!("'{other}' is not m or f")));
                None
            }
        },
    };
    let dob = trim(&input.date_of_birth);
    let dob = match (params.collect_dob, dob) {
        (DobCollection::NotUsed, Some(_)) => {
            errors.push(FieldError::new("date_of_birth", "this study does not collect the date of birth"));
            None
        }
        (DobCollection::NotUsed, None) => None,
        (_, None) => {
            errors.push(FieldError::new("date_of_birth", "the date of birth is required in this study"));
            None
        }
        (DobCollection::YearOnly, Some(y)) => match y.parse::<i32>() {
            Ok(n) if (1880..=today.year()).contains(&n) => Some(y),
            _ => {
                errors.push(FieldError::new(
                    "date_of_birth",
                    format!("'{y}' is not a year of birth (YYYY, not in the future)"),
                ));
                None
            }
        },
        (DobCollection::Full, Some(d)) => match parse_date("date_of_birth", &d, &mut errors) {
            Some(date) if date > today => {
                errors.push(FieldError::new("date_of_birth", "the date of birth cannot be in the future"));
                None
            }
            Some(date) => Some(date.to_string()),
            None => None,
        },
    };
    let enrolled = parse_date("enrolled_on", &input.enrolled_on, &mut errors);
    if enrolled.is_some_and(|d| d > today) {
        errors.push(FieldError::new("enrolled_on", "the enrolment date cannot be in the future"));
    }
    let group = trim(&input.group);
    let Some(enrolled) = enrolled.filter(|_| errors.is_empty()) else {
        return Err(errors);
    };
    Ok(Enrolment { label: label_in, secondary, person_id, sex, dob, enrolled: enrolled.to_string(), group })
}
