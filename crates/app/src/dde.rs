//! Double data entry (OpenClinica §6.4): once initial data entry of a form is complete, a second
//! person re-keys it without seeing the first pass; mismatches are listed and must be resolved
//! before the form is complete. The person who did initial entry may re-key only 12 hours after
//! completing it (data managers and study directors any time).

use std::collections::{BTreeMap, BTreeSet};

use casebook_domain::audit::AuditEntry;
use casebook_domain::capture::evaluate::Slot;
use casebook_domain::role::Role;
use serde::{Deserialize, Serialize};

use crate::App;
use crate::auth::Principal;
use crate::entry::{
    Held, SavedForm, ValueInput, ValueProblem, completion_problems, parse_input, problem_of, rejected, slot,
};
use crate::error::AppError;

/// The second pass of a form.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DdeInput {
    pub values: Vec<ValueInput>,
}

/// Finishing double data entry: the version read, and a value for every mismatch.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DdeCompleteInput {
    pub expected_version: i64,
    #[serde(default)]
    pub resolutions: Vec<ValueInput>,
}

/// Where the two passes differ.
#[derive(Debug, Clone, Serialize)]
pub struct Mismatch {
    pub item_oid: String,
    pub group_oid: String,
    pub row: u32,
    pub first: Option<String>,
    pub second: Option<String>,
}

/// The two passes compared.
#[derive(Debug, Clone, Serialize)]
pub struct DdeComparison {
    pub matched: usize,
    pub mismatches: Vec<Mismatch>,
}

/// The hours the initial-entry person waits before re-keying the same form.
pub const SAME_USER_DELAY_HOURS: i64 = 12;

fn show(h: Option<&Held>) -> Option<String> {
    h.and_then(|h| h.value.clone().or_else(|| h.null_flavour.as_ref().map(|n| format!("[{n}]"))))
}

fn compare(first: &BTreeMap<Slot, Held>, second: &BTreeMap<Slot, Held>) -> DdeComparison {
    let slots: BTreeSet<&Slot> = first.keys().chain(second.keys()).collect();
    let mut matched = 0;
    let mut mismatches = Vec::new();
    for s in slots {
        let (a, b) = (first.get(s), second.get(s));
        if a == b {
            matched += 1;
        } else {
            mismatches.push(Mismatch {
                item_oid: s.item_oid.clone(),
                group_oid: s.group_oid.clone(),
                row: s.row,
                first: show(a),
                second: show(b),
            });
        }
    }
    DdeComparison { matched, mismatches }
}

impl App {
    /// Keys (part of) the second pass of a form awaiting double data entry, and compares it with
    /// the first. The response lists the mismatches so far.
    ///
    /// # Errors
    /// [`AppError::InvalidTransition`] when the form does not await double data entry;
    /// [`AppError::Forbidden`] for the initial-entry person within 12 hours.
    #[allow(clippy::too_many_arguments)]
    pub async fn key_double_entry(
        &self,
        who: &Principal,
        study_oid: &str,
        participant: &str,
        event_oid: &str,
        repeat_key: i32,
        form_oid: &str,
        input: DdeInput,
    ) -> Result<DdeComparison, AppError> {
        let loc = self.locate_for_entry(who, study_oid, participant, event_oid, repeat_key, form_oid).await?;
        let mut tx = self.store().write(who.actor()).await?;
        let f = tx
            .forms_of_event(loc.event.id)
            .await?
            .into_iter()
            .find(|f| f.form_oid == form_oid)
            .ok_or(AppError::NotFound("started form"))?;
        if f.dde_stage.as_deref() != Some("awaiting_dde") {
            return Err(AppError::InvalidTransition("the form does not await double data entry".into()));
        }
        let privileged = loc.access.admin
            || loc.access.study_role.is_some_and(|r| matches!(r, Role::DataManager | Role::StudyDirector));
        if f.ide_completed_by == Some(who.user_id) && !privileged {
            let since = f.ide_completed_at.map(|t| self.store().clock().now() - t);
            if since.is_none_or(|d| d < time::Duration::hours(SAME_USER_DELAY_HOURS)) {
                return Err(AppError::Forbidden(
                    "re-key a form you entered yourself before 12 hours have passed (ask a colleague, or a data manager)",
                ));
            }
        }
        let (_, version) = loc.design.form_version(&f.form_version_oid).ok_or(AppError::NotFound("form version"))?;
        let mut problems: Vec<ValueProblem> = Vec::new();
        let mut keyed = Vec::new();
        for v in &input.values {
            match parse_input(version, &loc.event_form, v) {
                Ok(x) => keyed.push(x),
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
        let form_key = self.form_key(&loc, form_oid);
        for (s, h) in &keyed {
            let row = i32::try_from(s.row).unwrap_or(i32::MAX);
            tx.upsert_dde_value(f.id, &s.group_oid, row, &s.item_oid, h.value.as_deref(), h.null_flavour.as_deref())
                .await?;
            tx.audit(
                AuditEntry::new(
                    "item_data.double_entry_keyed",
                    "item_data",
                    format!("{form_key}/{}[{}]/{}", s.group_oid, s.row, s.item_oid),
                )
                .study(Some(loc.study.id), loc.site_id)
                .new_value(serde_json::json!({ "value": h.value, "null_flavour": h.null_flavour, "pass": 2 })),
            )
            .await?;
        }
        if keyed.is_empty() {
            return Err(AppError::invalid("values", "key at least one value"));
        }
        let (first, second) = passes(&mut tx, f.id, version).await?;
        tx.commit().await?;
        Ok(compare(&first, &second))
    }

    /// Finishes double data entry: every mismatch needs a resolution (the value to keep), the
    /// resolved form must be complete, and then the form is complete.
    ///
    /// # Errors
    /// [`AppError::Rejected`] listing unresolved mismatches or what keeps the form from being
    /// complete; [`AppError::Conflict`] for a stale version.
    #[allow(clippy::too_many_arguments)]
    pub async fn complete_double_entry(
        &self,
        who: &Principal,
        study_oid: &str,
        participant: &str,
        event_oid: &str,
        repeat_key: i32,
        form_oid: &str,
        input: DdeCompleteInput,
    ) -> Result<SavedForm, AppError> {
        let loc = self.locate_for_entry(who, study_oid, participant, event_oid, repeat_key, form_oid).await?;
        let mut tx = self.store().write(who.actor()).await?;
        let forms = tx.forms_of_event(loc.event.id).await?;
        let f = forms.iter().find(|f| f.form_oid == form_oid).cloned().ok_or(AppError::NotFound("started form"))?;
        if f.dde_stage.as_deref() != Some("awaiting_dde") {
            return Err(AppError::InvalidTransition("the form does not await double data entry".into()));
        }
        if !tx.bump_form_version(f.id, input.expected_version).await? {
            drop(tx);
            return Err(self.stale(&f, input.expected_version).await);
        }
        let (_, version) = loc.design.form_version(&f.form_version_oid).ok_or(AppError::NotFound("form version"))?;
        let (first, second) = passes(&mut tx, f.id, version).await?;
        let comparison = compare(&first, &second);
        let mut resolutions: BTreeMap<Slot, Held> = BTreeMap::new();
        let mut problems = Vec::new();
        for v in &input.resolutions {
            match parse_input(version, &loc.event_form, v) {
                Ok((s, h)) => {
                    resolutions.insert(s, h);
                }
                Err(p) => problems.push(p),
            }
        }
        for m in &comparison.mismatches {
            let s = slot(&m.group_oid, i32::try_from(m.row).unwrap_or(i32::MAX), &m.item_oid);
            if !resolutions.contains_key(&s) {
                problems.push(problem_of(
                    &m.item_oid,
                    &m.group_oid,
                    m.row,
                    "double_entry_mismatch",
                    format!(
                        "first pass {:?}, second pass {:?}: give the value to keep",
                        m.first.as_deref().unwrap_or(""),
                        m.second.as_deref().unwrap_or("")
                    ),
                    None,
                ));
            }
        }
        if !problems.is_empty() {
            return Err(rejected(
                "double_entry_unresolved",
                format!("{} mismatch(es) or value(s) to resolve; nothing was saved", problems.len()),
                &problems,
            ));
        }
        let form_key = self.form_key(&loc, form_oid);
        let mut resolved = first.clone();
        for (s, h) in &resolutions {
            let old = first.get(s).cloned().unwrap_or_default();
            if &old == h {
                continue;
            }
            let row = i32::try_from(s.row).unwrap_or(i32::MAX);
            tx.upsert_item_data(f.id, &s.group_oid, row, &s.item_oid, h.value.as_deref(), h.null_flavour.as_deref())
                .await?;
            tx.audit(
                AuditEntry::new(
                    "item_data.double_entry_resolved",
                    "item_data",
                    format!("{form_key}/{}[{}]/{}", s.group_oid, s.row, s.item_oid),
                )
                .study(Some(loc.study.id), loc.site_id)
                .old(serde_json::json!({ "value": old.value, "null_flavour": old.null_flavour }))
                .new_value(serde_json::json!({ "value": h.value, "null_flavour": h.null_flavour })),
            )
            .await?;
            if *h == Held::default() {
                resolved.remove(s);
            } else {
                resolved.insert(s.clone(), h.clone());
            }
        }
        if resolved != first {
            // Resolved values are data changes like any other: signatures and SDV follow.
            crate::review::after_data_change(
                &mut tx,
                &crate::review::DataChange {
                    form_data_id: f.id,
                    study_event_id: loc.event.id,
                    participant_id: loc.participant.id,
                    study_id: loc.study.id,
                    site_id: loc.site_id,
                    started_now: false,
                },
            )
            .await?;
        }
        // The second pass settled the values: rules whose actions run in double data entry run
        // now, in this transaction.
        let rules = self.active_rules(loc.study.id).await?;
        let rules_run = if rules.is_empty() {
            crate::rules_engine::RulesRun::default()
        } else {
            crate::rules_engine::run(
                &mut tx,
                &crate::rules_engine::RunContext {
                    study_id: loc.study.id,
                    site_id: loc.participant.site_id,
                    audit_site: loc.site_id,
                    participant_id: loc.participant.id,
                    participant_oid: &loc.participant.oid,
                    participant_label: &loc.participant.label,
                    design: &loc.design,
                    phase: casebook_domain::rules::RunPhase::DoubleDataEntry,
                    dry_run: false,
                    now: self.store().clock().now(),
                },
                &rules,
                crate::rules_engine::Scope::Form { form_data_id: f.id },
            )
            .await?
        };
        let rows = tx.item_data_of(f.id).await?;
        let missing = completion_problems(version, &resolved, &rows, self.store().clock().now());
        if !missing.is_empty() {
            return Err(rejected(
                "form_incomplete",
                format!("the form cannot be completed: {} problem(s)", missing.len()),
                &missing,
            ));
        }
        tx.finish_dde(f.id).await?;
        tx.complete_form(f.id).await?;
        tx.audit(
            AuditEntry::new("form.double_entry_completed", "form_data", form_key)
                .study(Some(loc.study.id), loc.site_id)
                .old(serde_json::json!({ "status": "initial_data_entry", "double_data_entry": "awaiting" }))
                .new_value(serde_json::json!({ "status": "complete", "matched": comparison.matched, "resolved": comparison.mismatches.len() })),
        )
        .await?;
        let next = self.event_after_completion(&mut tx, &loc, &forms, event_oid, form_oid).await?;
        tx.commit().await?;
        let form = self.form_view(loc.event.id, form_oid).await?;
        Ok(SavedForm { form, event_status: next.as_str().to_owned(), open_issues: Vec::new(), rules: rules_run.fired })
    }
}

/// Both passes of a form, without calculated items (the server computes those).
async fn passes(
    tx: &mut casebook_store::WriteTx,
    form_id: i64,
    version: &casebook_domain::design::FormVersion,
) -> Result<(BTreeMap<Slot, Held>, BTreeMap<Slot, Held>), AppError> {
    let keyed = |item_oid: &str| {
        version.item_by_oid(item_oid).is_some_and(|i| !i.widget.is_calculated() && i.widget.holds_value())
    };
    let mut first = BTreeMap::new();
    for r in tx.item_data_of(form_id).await?.into_iter().filter(|r| !r.deleted && keyed(&r.item_oid)) {
        let h = Held { value: r.value, null_flavour: r.null_flavour };
        if h != Held::default() {
            first.insert(slot(&r.group_oid, r.row_number, &r.item_oid), h);
        }
    }
    let mut second = BTreeMap::new();
    for r in tx.dde_values_of(form_id).await?.into_iter().filter(|r| keyed(&r.item_oid)) {
        let h = Held { value: r.value, null_flavour: r.null_flavour };
        if h != Held::default() {
            second.insert(slot(&r.group_oid, r.row_number, &r.item_oid), h);
        }
    }
    Ok((first, second))
}
