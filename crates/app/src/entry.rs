//! Form data entry: save values (item by item or in a batch), remove repeating rows, complete a
//! form — with types, edit checks, skip logic and calculations from the design evaluated on the
//! server, and every change audited in the same transaction.
//!
//! No lost update: a form carries a version number; a save or completion based on an older
//! number is refused with 409 and the form as it is now, so the user can compare.

use std::collections::{BTreeMap, BTreeSet};

use casebook_domain::audit::AuditEntry;
use casebook_domain::capture::evaluate::{EvalContext, FormValues, Slot, evaluate};
use casebook_domain::capture::status::{EventStatus, FormStatus};
use casebook_domain::capture::values;
use casebook_domain::design::{EventForm, FormVersion, HiddenValues, StudyDesign};
use casebook_domain::notes::NoteType;
use casebook_domain::rules::RunPhase;
use casebook_domain::study::StudyParameters;
use casebook_store::WriteTx;
use casebook_store::capture::{FormDataRow, ItemDataRow, ParticipantRow, StudyEventRow};
use serde::{Deserialize, Serialize};

use crate::App;
use crate::auth::Principal;
use crate::capture::{FormView, ValueView};
use crate::error::{AppError, anyhow_like};

fn internal(e: impl std::error::Error + Send + Sync + 'static) -> AppError {
    AppError::Internal(anyhow_like::Internal(Box::new(e)))
}

fn one() -> u32 {
    1
}

/// One value to save.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueInput {
    /// The item's OID or name.
    pub item: String,
    /// The row of a repeating group (1 for other items).
    #[serde(default = "one")]
    pub row: u32,
    /// The value as typed; `null` or `""` clears it.
    #[serde(default)]
    pub value: Option<String>,
    /// A null flavour code allowed for the form in this event (instead of a value).
    #[serde(default)]
    pub null_flavour: Option<String>,
}

/// A repeating-group row to remove (its values are kept, marked deleted, for the audit).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowInput {
    /// The group's OID or name.
    pub group: String,
    pub row: u32,
}

/// A discrepancy note on a value: needed to save a value that fails a soft check, and (as a
/// reason for change) for every change to a completed form when the study asks for it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoteInput {
    pub item: String,
    #[serde(default = "one")]
    pub row: u32,
    pub text: String,
}

/// A save of a form.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaveFormInput {
    /// The form's version as last read; required once the form has been started.
    #[serde(default)]
    pub expected_version: Option<i64>,
    /// The form version to start in (default: the event's default version, else the newest allowed).
    #[serde(default)]
    pub form_version: Option<String>,
    #[serde(default)]
    pub values: Vec<ValueInput>,
    #[serde(default)]
    pub remove_rows: Vec<RowInput>,
    #[serde(default)]
    pub notes: Vec<NoteInput>,
}

/// Marking a form complete.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteFormInput {
    pub expected_version: i64,
    /// The user's password, when the event asks for an electronic signature on completion.
    #[serde(default)]
    pub password: Option<String>,
}

/// Something about one value, as the API reports it.
#[derive(Debug, Clone, Serialize)]
pub struct ValueProblem {
    pub item_oid: String,
    pub group_oid: String,
    pub row: u32,
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// The form after a save, with what is still missing or questionable.
#[derive(Debug, Clone, Serialize)]
pub struct SavedForm {
    pub form: FormView,
    pub event_status: String,
    /// Required items still empty, soft-check failures kept with a note (not errors).
    pub open_issues: Vec<ValueProblem>,
    /// What the study's rules did on this save (notes opened, values inserted, items to show or
    /// hide, events scheduled).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<crate::rules_engine::FiredAction>,
}

/// What the body of a save did (see `App::save_in`).
pub(crate) struct SaveOutcome {
    /// Something was written (else the caller has nothing to commit).
    pub(crate) changed: bool,
    pub(crate) event_status: String,
    pub(crate) open: Vec<ValueProblem>,
    pub(crate) fired: Vec<crate::rules_engine::FiredAction>,
}

/// A value held in the form: canonical text or a null flavour.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Held {
    pub(crate) value: Option<String>,
    pub(crate) null_flavour: Option<String>,
}

pub(crate) struct Located {
    pub(crate) access: crate::access::Access,
    /// Whether the principal may enter data (not only edit completed forms).
    pub(crate) may_enter: bool,
    /// The participant's site OID (`None` at study level).
    pub(crate) site_oid: Option<String>,
    pub(crate) participant: ParticipantRow,
    pub(crate) study: casebook_store::studies::StudyRow,
    pub(crate) site_id: Option<i64>,
    pub(crate) params: StudyParameters,
    pub(crate) design_number: i32,
    pub(crate) design: std::sync::Arc<StudyDesign>,
    pub(crate) event: StudyEventRow,
    pub(crate) event_form: EventForm,
}

impl App {
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn locate_form(
        &self,
        who: &Principal,
        study_oid: &str,
        participant: &str,
        event_oid: &str,
        repeat_key: i32,
        form_oid: &str,
    ) -> Result<Located, AppError> {
        let (study, access, p, site) = self.visible_participant(who, study_oid, participant).await?;
        // Entering data, or at least editing completed forms (study-level cleaning while frozen).
        let may_enter = Self::may_enter(&access, &study, &site);
        if !may_enter && !Self::may(&access, &study, &site, casebook_domain::role::Permission::AdministrativeEdit) {
            return Err(AppError::Forbidden("enter data at this site (or the study's status does not allow it)"));
        }
        if p.status == "removed" || p.status == "auto_removed" {
            return Err(AppError::InvalidTransition(format!("participant {} is removed; restore it first", p.label)));
        }
        let (design_number, design) = self.production_design(study.id).await?;
        let def = design.event(event_oid).ok_or(AppError::NotFound("event definition"))?;
        let event_form = def
            .forms
            .iter()
            .find(|f| f.form_oid.as_str() == form_oid)
            .cloned()
            .ok_or(AppError::NotFound("form in this event"))?;
        if site.id != study.id && !access.study_wide() && event_form.hidden_at(Some(site.oid.as_str())) {
            return Err(AppError::NotFound("form in this event"));
        }
        let event = self
            .store()
            .study_events(p.id)
            .await?
            .into_iter()
            .find(|e| e.event_oid == event_oid && e.repeat_key == repeat_key)
            .ok_or(AppError::NotFound("event occurrence (schedule it first)"))?;
        if event.removal != "available" {
            return Err(AppError::InvalidTransition("the event is removed".into()));
        }
        if let Some(why) = EventStatus::parse(&event.status).and_then(EventStatus::refuses_data) {
            return Err(AppError::InvalidTransition(format!("{why}; its data cannot change")));
        }
        let params: StudyParameters = serde_json::from_str(&study.parameters).map_err(internal)?;
        let site_id = (site.id != study.id).then_some(site.id);
        Ok(Located {
            access,
            may_enter,
            site_oid: (site.id != study.id).then(|| site.oid.clone()),
            participant: p,
            study,
            site_id,
            params,
            design_number,
            design,
            event,
            event_form,
        })
    }

    /// Saves values of a form (starting it if needed). Partial saves are allowed; every value is
    /// checked against its item's type, hard checks refuse, soft checks need a note, hidden items
    /// lose their values, calculations are recomputed; all in one audited transaction.
    ///
    /// # Errors
    /// [`AppError::Rejected`] listing every refused value (nothing is saved);
    /// [`AppError::Conflict`] for a stale `expected_version`.
    #[allow(clippy::too_many_lines, clippy::too_many_arguments)]
    pub async fn save_form(
        &self,
        who: &Principal,
        study_oid: &str,
        participant: &str,
        event_oid: &str,
        repeat_key: i32,
        form_oid: &str,
        input: SaveFormInput,
    ) -> Result<SavedForm, AppError> {
        let loc = self.locate_form(who, study_oid, participant, event_oid, repeat_key, form_oid).await?;
        let rules = self.active_rules(loc.study.id).await?;
        let mut tx = self.store().write(who.actor()).await?;
        let out = self.save_in(&mut tx, &loc, form_oid, input, &rules, false).await?;
        if out.changed {
            tx.commit().await?;
        } else {
            drop(tx);
        }
        let form = self.form_view(loc.event.id, form_oid).await?;
        Ok(SavedForm { form, event_status: out.event_status, open_issues: out.open, rules: out.fired })
    }

    /// The body of a save, inside the caller's transaction (a form save, or one form of an
    /// import). With `import`, rules run in the import phase and values failing a soft check get
    /// a Failed Validation Check note instead of being refused. Nothing is committed here; an
    /// unchanged form changes nothing (`changed: false`).
    ///
    /// # Errors
    /// As [`Self::save_form`].
    #[allow(clippy::too_many_lines)]
    pub(crate) async fn save_in(
        &self,
        tx: &mut WriteTx,
        loc: &Located,
        form_oid: &str,
        input: SaveFormInput,
        rules: &[crate::rules_engine::ActiveRule],
        import: bool,
    ) -> Result<SaveOutcome, AppError> {
        let form_def = loc.design.form(form_oid).ok_or(AppError::NotFound("form"))?;
        let existing = tx.forms_of_event(loc.event.id).await?.into_iter().find(|f| f.form_oid == form_oid);
        let (form_row_id, version_oid, was_complete, old_rows): (i64, String, bool, Vec<ItemDataRow>) = match &existing
        {
            Some(f) => {
                // An import writes inside its own transaction: the form is as it reads it.
                let expected = match (input.expected_version, import) {
                    (Some(v), _) => v,
                    (None, true) => f.version,
                    (None, false) => {
                        return Err(AppError::invalid(
                            "expected_version",
                            "the form exists: send the version you read",
                        ));
                    }
                };
                if f.version != expected {
                    return Err(self.stale(f, expected).await);
                }
                if f.removal != "available" {
                    return Err(AppError::InvalidTransition("the form is removed".into()));
                }
                if f.dde_stage.as_deref() == Some("awaiting_dde") {
                    return Err(AppError::InvalidTransition(
                        "the form awaits double data entry; values are keyed in the second pass now".into(),
                    ));
                }
                let rows = tx.item_data_of(f.id).await?;
                (f.id, f.form_version_oid.clone(), f.status == FormStatus::Complete.as_str(), rows)
            }
            None => {
                let site_oid = loc.site_oid.as_deref();
                let restricted = loc.event_form.allowed_versions_at(site_oid);
                let allowed: Vec<&str> = if restricted.is_empty() {
                    form_def.versions.iter().map(|v| v.oid.as_str()).collect()
                } else {
                    restricted.iter().map(|v| v.as_str()).collect()
                };
                let chosen = match input.form_version.as_deref() {
                    Some(v) if allowed.contains(&v) => v.to_owned(),
                    Some(v) => {
                        return Err(AppError::invalid(
                            "form_version",
                            format!("{v} is not a version allowed here (allowed: {})", allowed.join(", ")),
                        ));
                    }
                    None => loc
                        .event_form
                        .default_version_at(site_oid)
                        .filter(|d| allowed.contains(&d.as_str()))
                        .map(ToString::to_string)
                        .or_else(|| allowed.last().map(|s| (*s).to_owned()))
                        .ok_or(AppError::NotFound("form version"))?,
                };
                let id = tx.insert_form_data(loc.event.id, form_oid, &chosen, loc.design_number).await?;
                tx.audit(
                    AuditEntry::new("form.started", "form_data", self.form_key(loc, form_oid))
                        .study(Some(loc.study.id), loc.site_id)
                        .new_value(serde_json::json!({ "form_version": chosen, "status": "initial_data_entry" })),
                )
                .await?;
                (id, chosen, false, Vec::new())
            }
        };
        if !loc.may_enter && !was_complete {
            return Err(AppError::Forbidden(
                "enter data here now (while the study is frozen only completed forms may be edited, by study-level staff)",
            ));
        }
        let (_, version) = loc.design.form_version(&version_oid).ok_or(AppError::NotFound("form version"))?;

        // The form as stored, then as this save wants it.
        let mut held: BTreeMap<Slot, Held> = BTreeMap::new();
        let mut deleted_rows: BTreeSet<(String, u32)> = BTreeSet::new();
        for r in old_rows.iter().filter(|r| !r.deleted) {
            held.insert(
                slot(&r.group_oid, r.row_number, &r.item_oid),
                Held { value: r.value.clone(), null_flavour: r.null_flavour.clone() },
            );
        }
        let before = held.clone();
        let mut problems = Vec::new();
        for r in &input.remove_rows {
            let Some(g) = version.groups.iter().find(|g| g.oid.as_str() == r.group || g.name == r.group) else {
                problems.push(problem_of(
                    &r.group,
                    "",
                    r.row,
                    "unknown_group",
                    format!("the form has no group {}", r.group),
                    None,
                ));
                continue;
            };
            if !g.is_repeating() {
                problems.push(problem_of(
                    "",
                    g.oid.as_str(),
                    r.row,
                    "not_repeating",
                    format!("group {} does not repeat", g.oid),
                    None,
                ));
                continue;
            }
            deleted_rows.insert((g.oid.to_string(), r.row));
            held.retain(|s, _| !(s.group_oid == g.oid.as_str() && s.row == r.row));
        }
        let mut touched: BTreeSet<Slot> = BTreeSet::new();
        for v in &input.values {
            match parse_input(version, &loc.event_form, v) {
                Ok((s, new)) => {
                    touched.insert(s.clone());
                    if new == Held::default() {
                        held.remove(&s);
                    } else {
                        held.insert(s, new);
                    }
                }
                Err(p) => problems.push(p),
            }
        }
        if !problems.is_empty() {
            return Err(rejected(
                "invalid_values",
                format!("{} value(s) refused; nothing was saved", problems.len()),
                &problems,
            ));
        }

        // Evaluate: calculations, skip logic, checks.
        let now = self.store().clock().now();
        let ctx = EvalContext { today: now.date(), now };
        let mut fv = values_of(version, &held, &old_rows, &deleted_rows);
        let mut evaluation = evaluate(version, &fv, &ctx);
        if loc.event_form.hidden_values == HiddenValues::Refuse && !evaluation.hidden_with_values.is_empty() {
            let refused: Vec<ValueProblem> = evaluation
                .hidden_with_values
                .iter()
                .map(|s| {
                    problem_of(
                        &s.item_oid,
                        &s.group_oid,
                        s.row,
                        "hidden_item_value",
                        format!(
                            "{} is hidden by the form's skip logic, so it may not hold a value; clear it in the same save",
                            s.item_oid
                        ),
                        held.get(s).and_then(|h| h.value.clone()),
                    )
                })
                .collect();
            return Err(rejected(
                "hidden_item_value",
                format!("{} value(s) of hidden items; nothing was saved", refused.len()),
                &refused,
            ));
        }
        let mut cleared_by_logic = Vec::new();
        for s in &evaluation.hidden_with_values {
            if held.remove(s).is_some() {
                cleared_by_logic.push(s.clone());
            }
        }
        let mut calculated = Vec::new();
        for (s, v) in &evaluation.calculated {
            let new = Held { value: v.clone(), null_flavour: None };
            if held.get(s).cloned().unwrap_or_default() != new {
                calculated.push(s.clone());
                if new == Held::default() {
                    held.remove(s);
                } else {
                    held.insert(s.clone(), new);
                }
            }
        }
        if !cleared_by_logic.is_empty() || !calculated.is_empty() {
            fv = values_of(version, &held, &old_rows, &deleted_rows);
            evaluation = evaluate(version, &fv, &ctx);
        }
        let noted: BTreeSet<Slot> = input
            .notes
            .iter()
            .filter_map(|n| {
                version
                    .items
                    .iter()
                    .find(|i| i.oid.as_str() == n.item || i.name == n.item)
                    .map(|i| slot(i.group_oid.as_str(), i32::try_from(n.row).unwrap_or(i32::MAX), i.oid.as_str()))
            })
            .collect();
        let mut refused = Vec::new();
        let mut open = Vec::new();
        let mut auto_noted: Vec<(Slot, String)> = Vec::new();
        for issue in &evaluation.issues {
            let p = problem_of(
                &issue.slot.item_oid,
                &issue.slot.group_oid,
                issue.slot.row,
                issue.code,
                issue.message.clone(),
                held.get(&issue.slot).and_then(|h| h.value.clone()),
            );
            if issue.hard && issue.code != "required" {
                refused.push(p);
            } else if import
                && issue.code != "required"
                && touched.contains(&issue.slot)
                && !noted.contains(&issue.slot)
            {
                // An import keeps the value and notes why it is questionable.
                auto_noted.push((issue.slot.clone(), issue.message.clone()));
                open.push(p);
            } else if issue.code != "required" && touched.contains(&issue.slot) && !noted.contains(&issue.slot) {
                let mut p = p;
                p.code = "soft_check_needs_note".into();
                p.message = format!("{} — to keep this value, add a note explaining it", issue.message);
                refused.push(p);
            } else {
                open.push(p);
            }
        }
        if !refused.is_empty() {
            return Err(rejected(
                "check_failed",
                format!("{} value(s) fail the form's checks; nothing was saved", refused.len()),
                &refused,
            ));
        }
        let changed: Vec<Slot> = before
            .keys()
            .chain(held.keys())
            .filter(|s| before.get(*s) != held.get(*s))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if was_complete && loc.params.admin_forced_reason_for_change {
            let missing: Vec<ValueProblem> = changed
                .iter()
                .filter(|s| touched.contains(*s) && !noted.contains(*s))
                .map(|s| {
                    problem_of(
                        &s.item_oid,
                        &s.group_oid,
                        s.row,
                        "reason_for_change_required",
                        "the form is complete: give a reason for this change (a note)".into(),
                        held.get(s).and_then(|h| h.value.clone()),
                    )
                })
                .collect();
            if !missing.is_empty() {
                return Err(rejected(
                    "reason_for_change_required",
                    format!("{} change(s) to a completed form need a reason", missing.len()),
                    &missing,
                ));
            }
        }

        // A save that changes nothing (an unchanged form re-sent) records nothing and leaves
        // the form's version as it was.
        let auto_noted: Vec<(Slot, String)> = auto_noted.into_iter().filter(|(s, _)| changed.contains(s)).collect();
        if existing.is_some()
            && changed.is_empty()
            && deleted_rows.is_empty()
            && input.notes.is_empty()
            && auto_noted.is_empty()
        {
            return Ok(SaveOutcome { changed: false, event_status: loc.event.status.clone(), open, fired: Vec::new() });
        }
        // The optimistic lock: the form is still in the version the save was based on.
        if let Some(f) = &existing
            && !tx.bump_form_version(f.id, f.version).await?
        {
            return Err(self.stale(f, f.version).await);
        }

        // Write every change with its audit row.
        let form_key = self.form_key(loc, form_oid);
        for (group, row) in &deleted_rows {
            let n = tx.delete_row(form_row_id, group, i32::try_from(*row).unwrap_or(i32::MAX)).await?;
            if n > 0 {
                tx.audit(
                    AuditEntry::new("item_data.row_removed", "item_group_row", format!("{form_key}/{group}[{row}]"))
                        .study(Some(loc.study.id), loc.site_id)
                        .old(serde_json::json!({ "values": n })),
                )
                .await?;
            }
        }
        // The values in one statement, their audit rows in another.
        let mut writes: Vec<(&Slot, Held)> = Vec::with_capacity(changed.len());
        let mut audits = Vec::with_capacity(changed.len());
        for s in &changed {
            if deleted_rows.contains(&(s.group_oid.clone(), s.row)) && !held.contains_key(s) {
                continue;
            }
            let old = before.get(s).cloned().unwrap_or_default();
            let new = held.get(s).cloned().unwrap_or_default();
            let action = if cleared_by_logic.contains(s) {
                "item_data.cleared_by_skip_logic"
            } else if calculated.contains(s) {
                "item_data.calculated"
            } else if was_complete {
                "item_data.updated_after_complete"
            } else {
                "item_data.value_saved"
            };
            audits.push(
                AuditEntry::new(action, "item_data", format!("{form_key}/{}[{}]/{}", s.group_oid, s.row, s.item_oid))
                    .study(Some(loc.study.id), loc.site_id)
                    .old(serde_json::json!({ "value": old.value, "null_flavour": old.null_flavour }))
                    .new_value(serde_json::json!({ "value": new.value, "null_flavour": new.null_flavour })),
            );
            writes.push((s, new));
        }
        let rows: Vec<casebook_store::capture::ValueWrite<'_>> = writes
            .iter()
            .map(|(s, h)| {
                (
                    s.group_oid.as_str(),
                    i32::try_from(s.row).unwrap_or(i32::MAX),
                    s.item_oid.as_str(),
                    h.value.as_deref(),
                    h.null_flavour.as_deref(),
                )
            })
            .collect();
        tx.upsert_item_data_many(form_row_id, &rows).await?;
        tx.audit_many(&audits).await?;
        // Notes kept with values: a Failed Validation Check thread during entry (for a soft check),
        // a Reason for Change thread once the form is complete.
        let owner_id = existing.as_ref().and_then(|f| f.owner_id).or(tx.actor().user_id);
        let owner = match owner_id {
            Some(id) if !(input.notes.is_empty() && auto_noted.is_empty()) => {
                self.store().user_by_id(id).await?.filter(|u| u.status == "active")
            }
            _ => None,
        };
        // The notes to open: typed ones (a Failed Validation Check during entry, a Reason for
        // Change once complete) and, on import, one for each value failing a soft check.
        let mut to_open: Vec<(Slot, NoteType, String)> = Vec::new();
        for n in &input.notes {
            let Some(item) = version.items.iter().find(|i| i.oid.as_str() == n.item || i.name == n.item) else {
                return Err(AppError::invalid("notes", format!("the form has no item {}", n.item)));
            };
            let kind = if was_complete { NoteType::ReasonForChange } else { NoteType::FailedValidationCheck };
            let text = n.text.trim();
            if text.is_empty() {
                return Err(AppError::invalid("notes", "a note needs text"));
            }
            if text.chars().count() > crate::notes::MAX_DESCRIPTION {
                return Err(AppError::invalid(
                    "notes",
                    format!("a note is at most {} characters", crate::notes::MAX_DESCRIPTION),
                ));
            }
            to_open.push((
                slot(item.group_oid.as_str(), i32::try_from(n.row).unwrap_or(i32::MAX), item.oid.as_str()),
                kind,
                text.to_owned(),
            ));
        }
        for (s, message) in &auto_noted {
            to_open.push((
                s.clone(),
                NoteType::FailedValidationCheck,
                format!("Imported value fails a check: {message}"),
            ));
        }
        for (s, kind, text) in &to_open {
            let key = format!("{form_key}/{}[{}]/{}", s.group_oid, s.row, s.item_oid);
            let assignee = if kind.has_workflow() {
                owner.as_ref().map(|u| (u.id, u.username.clone(), u.email.clone()))
            } else {
                None
            };
            crate::notes::open_in_tx(
                tx,
                &crate::notes::ThreadPlace {
                    study_id: loc.study.id,
                    site_id: loc.participant.site_id,
                    participant_id: loc.participant.id,
                    entity_type: "item_data",
                    study_event_id: Some(loc.event.id),
                    form_data_id: Some(form_row_id),
                    group_oid: Some(&s.group_oid),
                    row: Some(i32::try_from(s.row).unwrap_or(i32::MAX)),
                    item_oid: Some(&s.item_oid),
                    column: "value",
                    entity_key: &key,
                },
                *kind,
                text,
                None,
                assignee,
                None,
                loc.site_id,
            )
            .await?;
        }
        let status = EventStatus::parse(&loc.event.status).unwrap_or(EventStatus::Scheduled);
        let next = status.after_save();
        if next != status {
            tx.set_event_status(loc.event.id, next.as_str()).await?;
            tx.audit(
                AuditEntry::new("event.status_changed", "study_event", self.event_key(loc))
                    .study(Some(loc.study.id), loc.site_id)
                    .old(serde_json::json!({ "status": status.as_str() }))
                    .new_value(serde_json::json!({ "status": next.as_str() })),
            )
            .await?;
        }
        // The study's rules, in the same transaction as the data that fire them.
        let rules_run = if rules.is_empty() {
            crate::rules_engine::RulesRun::default()
        } else {
            crate::rules_engine::run(
                tx,
                &crate::rules_engine::RunContext {
                    study_id: loc.study.id,
                    site_id: loc.participant.site_id,
                    audit_site: loc.site_id,
                    participant_id: loc.participant.id,
                    participant_oid: &loc.participant.oid,
                    participant_label: &loc.participant.label,
                    design: &loc.design,
                    phase: if import {
                        RunPhase::ImportDataEntry
                    } else if was_complete {
                        RunPhase::AdministrativeDataEntry
                    } else {
                        RunPhase::InitialDataEntry
                    },
                    dry_run: false,
                    now,
                },
                rules,
                crate::rules_engine::Scope::Form { form_data_id: form_row_id },
            )
            .await?
        };
        // Changed data break signatures over them and reset source data verification.
        let next = if !changed.is_empty() || !deleted_rows.is_empty() {
            crate::review::after_data_change(
                tx,
                &crate::review::DataChange {
                    form_data_id: form_row_id,
                    study_event_id: loc.event.id,
                    participant_id: loc.participant.id,
                    study_id: loc.study.id,
                    site_id: loc.site_id,
                    started_now: existing.is_none(),
                },
            )
            .await?
        } else {
            next
        };
        Ok(SaveOutcome { changed: true, event_status: next.as_str().to_owned(), open, fired: rules_run.fired })
    }

    /// Marks a form complete: no required item may be empty and no check may fail; with an
    /// electronic signature the user's password is checked. The event completes by itself when
    /// all its required forms are complete.
    ///
    /// # Errors
    /// [`AppError::Rejected`] listing what is missing; [`AppError::Conflict`] for a stale version.
    #[allow(clippy::too_many_arguments)]
    pub async fn complete_form(
        &self,
        who: &Principal,
        study_oid: &str,
        participant: &str,
        event_oid: &str,
        repeat_key: i32,
        form_oid: &str,
        input: CompleteFormInput,
    ) -> Result<SavedForm, AppError> {
        let loc = self.locate_for_entry(who, study_oid, participant, event_oid, repeat_key, form_oid).await?;
        if loc.event_form.electronic_signature {
            let password = input.password.as_deref().unwrap_or("");
            if !self.password_matches(who, password).await? {
                return Err(AppError::invalid("password", "this form is signed on completion: enter your password"));
            }
        }
        let mut tx = self.store().write(who.actor()).await?;
        let forms = tx.forms_of_event(loc.event.id).await?;
        let f =
            forms.iter().find(|f| f.form_oid == form_oid).ok_or(AppError::NotFound("started form (save it first)"))?;
        if f.status == FormStatus::Complete.as_str() {
            return Err(AppError::InvalidTransition("the form is already complete".into()));
        }
        if !tx.bump_form_version(f.id, input.expected_version).await? {
            drop(tx);
            return Err(self.stale(f, input.expected_version).await);
        }
        if f.dde_stage.as_deref() == Some("awaiting_dde") {
            return Err(AppError::InvalidTransition(
                "the form awaits double data entry: key the second pass and resolve it instead".into(),
            ));
        }
        let (_, version) = loc.design.form_version(&f.form_version_oid).ok_or(AppError::NotFound("form version"))?;
        let rows = tx.item_data_of(f.id).await?;
        let mut held = BTreeMap::new();
        for r in rows.iter().filter(|r| !r.deleted) {
            held.insert(
                slot(&r.group_oid, r.row_number, &r.item_oid),
                Held { value: r.value.clone(), null_flavour: r.null_flavour.clone() },
            );
        }
        let missing = completion_problems(version, &held, &rows, self.store().clock().now());
        if !missing.is_empty() {
            return Err(rejected(
                "form_incomplete",
                format!("the form cannot be completed: {} problem(s)", missing.len()),
                &missing,
            ));
        }
        let form_key = self.form_key(&loc, form_oid);
        if loc.event_form.double_data_entry && f.dde_stage.is_none() {
            // Initial data entry is complete; a second pass must re-key the form.
            tx.complete_initial_entry(f.id).await?;
            tx.audit(
                AuditEntry::new("form.initial_entry_completed", "form_data", form_key)
                    .study(Some(loc.study.id), loc.site_id)
                    .old(serde_json::json!({ "status": "initial_data_entry" }))
                    .new_value(serde_json::json!({ "status": "initial_data_entry", "double_data_entry": "awaiting" })),
            )
            .await?;
            tx.commit().await?;
            let form = self.form_view(loc.event.id, form_oid).await?;
            return Ok(SavedForm {
                form,
                event_status: loc.event.status.clone(),
                open_issues: Vec::new(),
                rules: Vec::new(),
            });
        }
        tx.complete_form(f.id).await?;
        let action = if loc.event_form.electronic_signature { "form.completed_signed" } else { "form.completed" };
        tx.audit(
            AuditEntry::new(action, "form_data", form_key)
                .study(Some(loc.study.id), loc.site_id)
                .old(serde_json::json!({ "status": "initial_data_entry" }))
                .new_value(serde_json::json!({ "status": "complete", "electronic_signature": loc.event_form.electronic_signature })),
        )
        .await?;
        let next = self.event_after_completion(&mut tx, &loc, &forms, event_oid, form_oid).await?;
        tx.commit().await?;
        let form = self.form_view(loc.event.id, form_oid).await?;
        Ok(SavedForm { form, event_status: next.as_str().to_owned(), open_issues: Vec::new(), rules: Vec::new() })
    }

    /// Moves the event on after one of its forms was completed (it completes when every
    /// required form is complete), with its audit row; returns the event's status.
    pub(crate) async fn event_after_completion(
        &self,
        tx: &mut casebook_store::WriteTx,
        loc: &Located,
        forms: &[FormDataRow],
        event_oid: &str,
        form_oid: &str,
    ) -> Result<EventStatus, AppError> {
        let def = loc.design.event(event_oid).ok_or(AppError::NotFound("event definition"))?;
        let all_required = def.forms.iter().filter(|x| x.required).all(|x| {
            x.form_oid.as_str() == form_oid
                || forms.iter().any(|g| g.form_oid == x.form_oid.as_str() && g.status == FormStatus::Complete.as_str())
        });
        let status = EventStatus::parse(&loc.event.status).unwrap_or(EventStatus::Scheduled);
        let next = status.after_form_completed(all_required);
        if next != status {
            tx.set_event_status(loc.event.id, next.as_str()).await?;
            tx.audit(
                AuditEntry::new("event.status_changed", "study_event", self.event_key(loc))
                    .study(Some(loc.study.id), loc.site_id)
                    .old(serde_json::json!({ "status": status.as_str() }))
                    .new_value(serde_json::json!({ "status": next.as_str() })),
            )
            .await?;
        }
        Ok(next)
    }

    /// [`Self::locate_form`] for actions that enter data (start, complete, re-key), which the
    /// right to edit completed forms alone does not allow.
    pub(crate) async fn locate_for_entry(
        &self,
        who: &Principal,
        study_oid: &str,
        participant: &str,
        event_oid: &str,
        repeat_key: i32,
        form_oid: &str,
    ) -> Result<Located, AppError> {
        let loc = self.locate_form(who, study_oid, participant, event_oid, repeat_key, form_oid).await?;
        if !loc.may_enter {
            return Err(AppError::Forbidden("enter data here now (the study's status does not allow it)"));
        }
        Ok(loc)
    }

    pub(crate) async fn stale(&self, f: &FormDataRow, expected: i64) -> AppError {
        let current = self.form_view(f.study_event_id, &f.form_oid).await.ok();
        AppError::Rejected {
            code: "stale_version",
            message: format!(
                "the form changed since you read it (you have version {expected}, it is now at version {}); reload and compare before saving",
                current.as_ref().map_or(f.version + 1, |c| c.version)
            ),
            details: serde_json::json!({ "current": current }),
        }
    }

    pub(crate) async fn form_view(&self, study_event_id: i64, form_oid: &str) -> Result<FormView, AppError> {
        let forms = self.store().forms_of_event_id(study_event_id).await?;
        let f = forms.into_iter().find(|f| f.form_oid == form_oid).ok_or(AppError::NotFound("form"))?;
        let values = self
            .store()
            .item_data(f.id)
            .await?
            .into_iter()
            .filter(|v| !v.deleted)
            .map(|v| ValueView {
                item_oid: v.item_oid,
                group_oid: v.group_oid,
                row: v.row_number,
                value: v.value,
                null_flavour: v.null_flavour,
            })
            .collect();
        Ok(FormView {
            double_data_entry: f.dde_stage.clone(),
            form_oid: f.form_oid,
            form_version_oid: f.form_version_oid,
            status: f.status,
            version: f.version,
            values,
        })
    }

    pub(crate) fn event_key(&self, loc: &Located) -> String {
        format!("{}/{}[{}]", loc.participant.oid, loc.event.event_oid, loc.event.repeat_key)
    }

    pub(crate) fn form_key(&self, loc: &Located, form_oid: &str) -> String {
        format!("{}/{form_oid}", self.event_key(loc))
    }
}

pub(crate) fn slot(group: &str, row: i32, item: &str) -> Slot {
    Slot { group_oid: group.to_owned(), row: u32::try_from(row).unwrap_or(1), item_oid: item.to_owned() }
}

pub(crate) fn problem_of(
    item: &str,
    group: &str,
    row: u32,
    code: &str,
    message: String,
    value: Option<String>,
) -> ValueProblem {
    ValueProblem { item_oid: item.to_owned(), group_oid: group.to_owned(), row, code: code.to_owned(), message, value }
}

pub(crate) fn rejected(code: &'static str, message: String, problems: &[ValueProblem]) -> AppError {
    AppError::Rejected { code, message, details: serde_json::json!({ "problems": problems }) }
}

/// The values the evaluator sees: canonical values (null flavours are not values), and the rows
/// of every repeating group that exist (stored or being saved), without removed rows.
pub(crate) fn values_of(
    version: &FormVersion,
    held: &BTreeMap<Slot, Held>,
    stored: &[ItemDataRow],
    deleted: &BTreeSet<(String, u32)>,
) -> FormValues {
    let mut fv = FormValues::new();
    for g in version.groups.iter().filter(|g| g.is_repeating()) {
        let mut rows: BTreeSet<u32> = held.keys().filter(|s| s.group_oid == g.oid.as_str()).map(|s| s.row).collect();
        rows.extend(
            stored
                .iter()
                .filter(|r| r.group_oid == g.oid.as_str() && !r.deleted)
                .filter_map(|r| u32::try_from(r.row_number).ok()),
        );
        for r in rows {
            if !deleted.contains(&(g.oid.to_string(), r)) {
                fv.add_row(g.oid.as_str(), r);
            }
        }
    }
    for (s, h) in held {
        if let Some(v) = &h.value {
            fv.set(s.clone(), v.clone());
        }
    }
    fv
}

/// Parses one value of a save: the item (by OID or name), its row, and the value or null flavour
/// in canonical form. (The problem is returned by value: it is built once per refused value and
/// goes straight into the response.)
#[allow(clippy::result_large_err)]
pub(crate) fn parse_input(
    version: &FormVersion,
    event_form: &EventForm,
    v: &ValueInput,
) -> Result<(Slot, Held), ValueProblem> {
    let Some(item) = version.items.iter().find(|i| i.oid.as_str() == v.item || i.name == v.item) else {
        return Err(problem_of(
            &v.item,
            "",
            v.row,
            "unknown_item",
            format!("form version {} has no item {}", version.oid, v.item),
            v.value.clone(),
        ));
    };
    let (io, go) = (item.oid.as_str(), item.group_oid.as_str());
    let repeating = version.group(go).is_some_and(casebook_domain::design::ItemGroup::is_repeating);
    if v.row == 0 || (!repeating && v.row != 1) {
        let hint = if repeating { " or more" } else { "" };
        return Err(problem_of(
            io,
            go,
            v.row,
            "bad_row",
            format!("row {} does not exist for {io} (use 1{hint})", v.row),
            v.value.clone(),
        ));
    }
    if item.widget.is_calculated() {
        return Err(problem_of(
            io,
            go,
            v.row,
            "calculated",
            format!("{io} is calculated by the server"),
            v.value.clone(),
        ));
    }
    if !item.widget.holds_value() {
        return Err(problem_of(
            io,
            go,
            v.row,
            "no_value",
            format!("{io} is a note and holds no value"),
            v.value.clone(),
        ));
    }
    let s = slot(go, i32::try_from(v.row).unwrap_or(i32::MAX), io);
    let raw = v.value.as_deref().map(str::trim).unwrap_or("");
    let held = match (&v.null_flavour, raw.is_empty()) {
        (Some(code), true) => match values::null_flavour(code, &event_form.null_flavours) {
            Ok(c) => Held { value: None, null_flavour: Some(c) },
            Err(e) => return Err(problem_of(io, go, v.row, e.code, e.message, None)),
        },
        (Some(_), false) => {
            return Err(problem_of(
                io,
                go,
                v.row,
                "value_and_null_flavour",
                "give a value or a null flavour, not both".into(),
                v.value.clone(),
            ));
        }
        (None, true) => Held::default(),
        (None, false) => {
            let cl = item.code_list.as_ref().and_then(|c| version.code_list(c.as_str()));
            match values::canonical_value(item, cl, raw) {
                Ok(c) => Held { value: Some(c), null_flavour: None },
                Err(e) => return Err(problem_of(io, go, v.row, e.code, e.message, v.value.clone())),
            }
        }
    };
    Ok((s, held))
}

/// What keeps a form from being complete: required items empty (an allowed null flavour counts
/// as an answer) and failing hard checks.
pub(crate) fn completion_problems(
    version: &FormVersion,
    held: &BTreeMap<Slot, Held>,
    rows: &[ItemDataRow],
    now: time::OffsetDateTime,
) -> Vec<ValueProblem> {
    let fv = values_of(version, held, rows, &BTreeSet::new());
    let evaluation = evaluate(version, &fv, &EvalContext { today: now.date(), now });
    evaluation
        .issues
        .iter()
        .filter(|i| {
            (i.code == "required" && held.get(&i.slot).is_none_or(|h| h.null_flavour.is_none()))
                || (i.hard && i.code != "required")
        })
        .map(|i| problem_of(&i.slot.item_oid, &i.slot.group_oid, i.slot.row, i.code, i.message.clone(), None))
        .collect()
}
