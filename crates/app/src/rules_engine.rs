//! Running OpenClinica rules over a participant's data.
//!
//! A rule runs at each place its target selects in the form being saved (or, in a batch, in
//! every form of the participant): its expression is evaluated over the participant's data
//! relative to that place (`casebook_domain::capture::rule_data`), and when the result equals an
//! action's `IfExpressionEvaluates` and the action runs in the current phase, the action runs
//! inside the caller's transaction — so a note opened, a value inserted or an event scheduled by
//! a rule commits or rolls back with the data that fired it.
//!
//! Actions: a discrepancy note opens a Failed Validation Check thread on the target; an e-mail
//! is queued in the outbox; an insert writes a value into the same form (checked like typed
//! input, audited as `item_data.inserted_by_rule`); show and hide are reported to the client; an
//! event action schedules the event (or moves its start) when its status allows. Notes and
//! e-mails are not repeated when the rule fires again on unchanged data (a run log keyed by rule
//! version, place, action and a hash of the target's value). Inserted values do not re-run rules.

use std::collections::BTreeMap;

use casebook_domain::audit::AuditEntry;
use casebook_domain::capture::rule_data::{ParticipantData, RuleContext, RuleEnv, RuleEvent, RuleForm};
use casebook_domain::capture::values::{canonical_value, to_expr_value};
use casebook_domain::design::{FormVersion, StudyDesign};
use casebook_domain::expr::{EventProperty, Expr, OcPath, Reference, Repeat, Value, parse_oc_rule, parse_oc_target};
use casebook_domain::notes::NoteType;
use casebook_domain::rules::{ActionKind, InsertValue, RuleAction, RuleDef, RuleRef, RunPhase, TimeOfDay};
use casebook_store::WriteTx;
use casebook_store::capture::{FormDataRow, StudyEventRow};
use casebook_store::rules::RuleRow;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::{Date, OffsetDateTime};

use crate::AppError;

/// What a stored rule version holds: its definition, its actions on one target, its schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleDocument {
    pub rule_def: RuleDef,
    pub rule_ref: RuleRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_on_schedule: Option<TimeOfDay>,
}

/// A current, enabled rule version ready to run.
#[derive(Debug, Clone)]
pub struct ActiveRule {
    pub id: i64,
    pub rule_oid: String,
    pub target_text: String,
    pub version: i32,
    pub doc: RuleDocument,
    pub expression: Expr,
    pub target: Reference,
}

impl ActiveRule {
    /// Parses a stored rule; `None` (logged) when its expression or target no longer parses.
    #[must_use]
    pub fn from_row(row: &RuleRow) -> Option<Self> {
        let doc: RuleDocument = serde_json::from_str(&row.document)
            .inspect_err(|e| tracing::warn!(rule = %row.rule_oid, error = %e, "unreadable rule document"))
            .ok()?;
        let expression = parse_oc_rule(&doc.rule_def.expression).ok()?;
        let target = parse_oc_target(&row.target).ok()?;
        Some(Self {
            id: row.id,
            rule_oid: row.rule_oid.clone(),
            target_text: row.target.clone(),
            version: row.version,
            doc,
            expression,
            target,
        })
    }
}

/// One action a rule ran (or would run, in a dry run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FiredAction {
    pub rule_oid: String,
    /// Where the rule fired (audit-style key).
    pub at: String,
    /// `discrepancy_note`, `email`, `insert`, `show`, `hide`, `event`, `notification`.
    pub action: &'static str,
    pub detail: String,
    /// `applied`, `would_apply` (dry run), `already_done` (not repeated on unchanged data) or
    /// `skipped` (with the reason in `detail`).
    pub outcome: &'static str,
}

/// How one run went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RulesRun {
    /// Rule evaluations (one per rule and place).
    pub evaluated: usize,
    pub fired: Vec<FiredAction>,
}

/// The form a run is about (a save), or every form (a batch).
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    /// The form just saved.
    Form { form_data_id: i64 },
    /// Every form of the participant.
    Participant,
}

/// Everything a run needs about its participant and study.
pub struct RunContext<'a> {
    pub study_id: i64,
    pub site_id: i64,
    /// The site for audit rows (`None` at study level).
    pub audit_site: Option<i64>,
    pub participant_id: i64,
    pub participant_oid: &'a str,
    pub participant_label: &'a str,
    pub design: &'a StudyDesign,
    pub phase: RunPhase,
    pub dry_run: bool,
    pub now: OffsetDateTime,
}

/// A participant's data loaded for rules, with the rows it came from.
struct Loaded {
    data: ParticipantData,
    events: Vec<StudyEventRow>,
    forms: Vec<FormDataRow>,
}

async fn load(tx: &mut WriteTx, design: &StudyDesign, participant_id: i64) -> Result<Loaded, AppError> {
    let events = tx.study_events_of(participant_id).await?;
    let forms = tx.participant_forms(participant_id).await?;
    let values = tx.participant_values(participant_id).await?;
    let mut by_form: BTreeMap<i64, BTreeMap<(String, u32, String), Value>> = BTreeMap::new();
    for v in values {
        let Some(f) = forms.iter().find(|f| f.id == v.form_data_id) else { continue };
        let Some((_, version)) = design.form_version(&f.form_version_oid) else { continue };
        let Some(item) = version.items.iter().find(|i| i.oid.as_str() == v.item_oid) else { continue };
        let value = v.value.as_deref().map_or(Value::Missing, |t| to_expr_value(item, t));
        let row = u32::try_from(v.row_number).unwrap_or(0);
        by_form.entry(v.form_data_id).or_default().insert((v.group_oid, row, v.item_oid), value);
    }
    let data = ParticipantData {
        events: events
            .iter()
            .filter(|e| e.removal == "available")
            .map(|e| RuleEvent {
                event_oid: e.event_oid.clone(),
                repeat: u32::try_from(e.repeat_key).unwrap_or(0),
                status: e.status.clone(),
                start: e.start_at.map(OffsetDateTime::date),
                forms: forms
                    .iter()
                    .filter(|f| f.study_event_id == e.id && f.removal == "available")
                    .map(|f| RuleForm {
                        form_oid: f.form_oid.clone(),
                        version_oid: f.form_version_oid.clone(),
                        values: by_form.remove(&f.id).unwrap_or_default(),
                    })
                    .collect(),
            })
            .collect(),
    };
    Ok(Loaded { data, events, forms })
}

/// Whether a target path points into a form (by event, form or version OID and item).
fn target_in_form(path: &OcPath, event_oid: &str, form: &FormDataRow, version: &FormVersion) -> bool {
    path.event.as_ref().is_none_or(|e| e.oid == event_oid)
        && path.form.as_ref().is_none_or(|f| *f == form.form_oid || *f == form.form_version_oid)
        && version
            .items
            .iter()
            .any(|i| i.oid.as_str() == path.item && path.group.as_ref().is_none_or(|g| g.oid == i.group_oid.as_str()))
}

/// The rows of the target's group a rule runs on: `[n]` and `[END]` one row; `[ALL]` (and no
/// selector on a repeating group) every row holding data; row 1 otherwise.
fn target_rows(path: &OcPath, group_oid: &str, repeating: bool, form: &RuleForm) -> Vec<u32> {
    let mut present: Vec<u32> = form.values.keys().filter(|(g, _, _)| g == group_oid).map(|(_, r, _)| *r).collect();
    present.sort_unstable();
    present.dedup();
    match path.group.as_ref().and_then(|g| g.repeat) {
        Some(Repeat::Index(n)) => vec![n],
        Some(Repeat::End) => present.last().copied().into_iter().collect(),
        Some(Repeat::All) => present,
        None if repeating => present,
        None => vec![1],
    }
}

fn short_hash(v: &Value) -> String {
    hex::encode(&Sha256::digest(v.to_text().as_bytes())[..6])
}

/// Runs the rules over one participant in `phase`: at the places of the saved form
/// ([`Scope::Form`]) or of every form ([`Scope::Participant`]).
///
/// # Errors
/// Storage failures. A rule that cannot act (an insert the item refuses, a missing event) is
/// reported as `skipped`, not an error: a rule never blocks a save.
pub async fn run(
    tx: &mut WriteTx,
    ctx: &RunContext<'_>,
    rules: &[ActiveRule],
    scope: Scope,
) -> Result<RulesRun, AppError> {
    let mut out = RulesRun::default();
    let relevant: Vec<&ActiveRule> =
        rules.iter().filter(|r| r.doc.rule_ref.actions.iter().any(|a| a.run.runs_in(ctx.phase))).collect();
    if relevant.is_empty() {
        return Ok(out);
    }
    let loaded = load(tx, ctx.design, ctx.participant_id).await?;
    let forms: Vec<&FormDataRow> = loaded
        .forms
        .iter()
        .filter(|f| f.removal == "available")
        .filter(|f| match scope {
            Scope::Form { form_data_id } => f.id == form_data_id,
            Scope::Participant => true,
        })
        .collect();
    for f in forms {
        let Some(event) = loaded.events.iter().find(|e| e.id == f.study_event_id && e.removal == "available") else {
            continue;
        };
        let Some((_, version)) = ctx.design.form_version(&f.form_version_oid) else { continue };
        let repeat = u32::try_from(event.repeat_key).unwrap_or(0);
        let rule_form = loaded
            .data
            .events
            .iter()
            .find(|e| e.event_oid == event.event_oid && e.repeat == repeat)
            .and_then(|e| e.forms.iter().find(|x| x.form_oid == f.form_oid))
            .cloned()
            .unwrap_or_default();
        for rule in &relevant {
            let Reference::OcPath(path) = &rule.target else { continue };
            if !target_in_form(path, &event.event_oid, f, version) {
                continue;
            }
            let Some(item) = version.items.iter().find(|i| i.oid.as_str() == path.item) else { continue };
            let repeating = version.groups.iter().find(|g| g.oid == item.group_oid).is_some_and(|g| g.is_repeating());
            for row in target_rows(path, item.group_oid.as_str(), repeating, &rule_form) {
                let at = RuleContext {
                    event: Some((event.event_oid.clone(), repeat)),
                    form: Some(f.form_oid.clone()),
                    row: Some((item.group_oid.to_string(), row)),
                };
                let env = RuleEnv { data: &loaded.data, at: at.clone(), today: ctx.now.date(), now: ctx.now };
                out.evaluated += 1;
                let Some(result) = rule.expression.evaluate_condition(&env) else { continue };
                let place = Place {
                    key: format!(
                        "{}/{}[{}]/{}/{}[{row}]/{}",
                        ctx.participant_oid, event.event_oid, event.repeat_key, f.form_oid, item.group_oid, item.oid
                    ),
                    event,
                    form: f,
                    version,
                    group_oid: item.group_oid.as_str(),
                    row,
                    item_oid: item.oid.as_str(),
                    target_value: rule_form
                        .values
                        .get(&(item.group_oid.to_string(), row, item.oid.to_string()))
                        .cloned()
                        .unwrap_or(Value::Missing),
                };
                for action in rule.doc.rule_ref.actions_in_execution_order() {
                    if action.if_expression_evaluates != result || !action.run.runs_in(ctx.phase) {
                        continue;
                    }
                    let fired = act(tx, ctx, rule, action, &place, &env, &loaded).await?;
                    out.fired.push(fired);
                }
            }
        }
    }
    Ok(out)
}

/// Where a rule fired.
struct Place<'a> {
    key: String,
    event: &'a StudyEventRow,
    form: &'a FormDataRow,
    version: &'a FormVersion,
    group_oid: &'a str,
    row: u32,
    item_oid: &'a str,
    target_value: Value,
}

#[allow(clippy::too_many_lines)]
async fn act(
    tx: &mut WriteTx,
    ctx: &RunContext<'_>,
    rule: &ActiveRule,
    action: &RuleAction,
    at: &Place<'_>,
    env: &RuleEnv<'_>,
    loaded: &Loaded,
) -> Result<FiredAction, AppError> {
    let fired = |action: &'static str, detail: String, outcome: &'static str| FiredAction {
        rule_oid: rule.rule_oid.clone(),
        at: at.key.clone(),
        action,
        detail,
        outcome,
    };
    let run_key =
        |what: &str| format!("{}@v{}|{}|{what}|{}", rule.rule_oid, rule.version, at.key, short_hash(&at.target_value));
    let reason = format!("rule {} ({})", rule.rule_oid, ctx.phase.label());
    match &action.kind {
        ActionKind::DiscrepancyNote { message } => {
            let key = run_key("note");
            if tx.rule_run_exists(&key).await? {
                return Ok(fired("discrepancy_note", message.clone(), "already_done"));
            }
            if ctx.dry_run {
                return Ok(fired("discrepancy_note", message.clone(), "would_apply"));
            }
            tx.claim_rule_run(&key, rule.id).await?;
            let assignee = match at.form.owner_id {
                Some(id) => tx.user_contact(id).await?,
                None => None,
            };
            let description: String = message.chars().take(crate::notes::MAX_DESCRIPTION).collect();
            let rule_key = format!("{}@{}", rule.rule_oid, at.key);
            crate::notes::open_in_tx(
                tx,
                &crate::notes::ThreadPlace {
                    study_id: ctx.study_id,
                    site_id: ctx.site_id,
                    participant_id: ctx.participant_id,
                    entity_type: "item_data",
                    study_event_id: Some(at.event.id),
                    form_data_id: Some(at.form.id),
                    group_oid: Some(at.group_oid),
                    row: Some(i32::try_from(at.row).unwrap_or(i32::MAX)),
                    item_oid: Some(at.item_oid),
                    column: "value",
                    entity_key: &at.key,
                },
                NoteType::FailedValidationCheck,
                if description.trim().is_empty() { "Rule failed" } else { &description },
                Some(&format!("Raised by {reason}: {}", rule.doc.rule_def.expression)),
                assignee,
                Some(&rule_key),
                ctx.audit_site,
            )
            .await?;
            Ok(fired("discrepancy_note", message.clone(), "applied"))
        }
        ActionKind::Email { message, to } => {
            let key = run_key("email");
            let detail = format!("to {to}: {message}");
            if tx.rule_run_exists(&key).await? {
                return Ok(fired("email", detail, "already_done"));
            }
            if ctx.dry_run {
                return Ok(fired("email", detail, "would_apply"));
            }
            tx.claim_rule_run(&key, rule.id).await?;
            let subject = format!("[Casebook] Rule {} on participant {}", rule.rule_oid, ctx.participant_label);
            let body = format!("{message}\n\nWhere: {}\nRule: {}\n", at.key, rule.doc.rule_def.expression);
            for address in to.split(',').map(str::trim).filter(|a| a.contains('@')) {
                tx.enqueue_email(None, address, &subject, &body).await?;
            }
            Ok(fired("email", detail, "applied"))
        }
        ActionKind::Show { destinations, .. } => Ok(fired("show", destinations.join(", "), "applied")),
        ActionKind::Hide { destinations, .. } => Ok(fired("hide", destinations.join(", "), "applied")),
        ActionKind::Notification { to, .. } => {
            Ok(fired("notification", format!("to {to}: participant notifications are not supported"), "skipped"))
        }
        ActionKind::Randomize { .. } => Ok(fired("randomize", "randomisation is not supported".into(), "skipped")),
        ActionKind::Insert { destinations } => {
            let mut details = Vec::new();
            let mut outcome = "applied";
            for d in destinations {
                match insert(tx, ctx, rule, at, env, &d.oid_path, &d.value, &reason).await? {
                    Ok(done) => details.push(done),
                    Err(why) => {
                        details.push(why);
                        outcome = "skipped";
                    }
                }
            }
            if ctx.dry_run && outcome == "applied" {
                outcome = "would_apply";
            }
            Ok(fired("insert", details.join("; "), outcome))
        }
        ActionKind::Event { event_oid, run_on_status, destinations } => {
            let start = destinations
                .iter()
                .find(|d| d.property == EventProperty::StartDate)
                .map(|d| parse_oc_rule(&d.value_expression).ok().map(|e| e.evaluate(env)).unwrap_or(Value::Missing));
            let start_date: Option<Date> = match start {
                Some(Value::Date(d)) => Some(d),
                Some(Value::DateTime(dt)) => Some(dt.date()),
                _ => None,
            };
            let existing =
                loaded.events.iter().filter(|e| e.event_oid == event_oid.as_str()).max_by_key(|e| e.repeat_key);
            let status = existing.map_or("not_scheduled", |e| e.status.as_str());
            let allowed = run_on_status.flags().iter().any(|(s, on)| *on && *s == status);
            if !allowed {
                return Ok(fired("event", format!("{event_oid} is {status}; the action does not run then"), "skipped"));
            }
            if ctx.design.event(event_oid.as_str()).is_none() {
                return Ok(fired("event", format!("the design has no event {event_oid}"), "skipped"));
            }
            let start_at = start_date.map(|d| d.midnight().assume_utc());
            match existing {
                None => {
                    let detail = format!(
                        "schedule {event_oid} starting {}",
                        start_date.map_or("(no date)".into(), |d| d.to_string())
                    );
                    if ctx.dry_run {
                        return Ok(fired("event", detail, "would_apply"));
                    }
                    tx.insert_study_event(ctx.participant_id, event_oid.as_str(), 1, start_at, None, None).await?;
                    tx.audit(
                        AuditEntry::new("event.scheduled", "study_event", format!("{}/{event_oid}[1]", ctx.participant_oid))
                            .study(Some(ctx.study_id), ctx.audit_site)
                            .new_value(serde_json::json!({ "status": "scheduled", "start": start_at.map(|s| s.to_string()), "rule": rule.rule_oid }))
                            .reason(Some(reason)),
                    )
                    .await?;
                    Ok(fired("event", detail, "applied"))
                }
                Some(e) if start_at.is_some() && e.start_at != start_at => {
                    let detail = format!(
                        "move {event_oid}[{}] to start {}",
                        e.repeat_key,
                        start_date.map(|d| d.to_string()).unwrap_or_default()
                    );
                    if ctx.dry_run {
                        return Ok(fired("event", detail, "would_apply"));
                    }
                    tx.set_event_start(e.id, start_at).await?;
                    tx.audit(
                        AuditEntry::new(
                            "event.updated",
                            "study_event",
                            format!("{}/{event_oid}[{}]", ctx.participant_oid, e.repeat_key),
                        )
                        .study(Some(ctx.study_id), ctx.audit_site)
                        .old(serde_json::json!({ "start": e.start_at.map(|s| s.to_string()) }))
                        .new_value(
                            serde_json::json!({ "start": start_at.map(|s| s.to_string()), "rule": rule.rule_oid }),
                        )
                        .reason(Some(reason)),
                    )
                    .await?;
                    Ok(fired("event", detail, "applied"))
                }
                Some(e) => {
                    Ok(fired("event", format!("{event_oid}[{}] is already as asked", e.repeat_key), "already_done"))
                }
            }
        }
    }
}

/// Writes one insert destination into the form the rule fired in; `Ok(Err(why))` when it
/// cannot (outside the form, a value the item refuses).
#[allow(clippy::too_many_arguments)]
async fn insert(
    tx: &mut WriteTx,
    ctx: &RunContext<'_>,
    rule: &ActiveRule,
    at: &Place<'_>,
    env: &RuleEnv<'_>,
    oid_path: &str,
    value: &InsertValue,
    reason: &str,
) -> Result<Result<String, String>, AppError> {
    let Ok(Reference::OcPath(path)) = parse_oc_target(oid_path) else {
        return Ok(Err(format!("{oid_path} is not an item path")));
    };
    if !target_in_form(&path, &at.event.event_oid, at.form, at.version) {
        return Ok(Err(format!("{oid_path} is not in the form the rule fired in; only that form is written")));
    }
    let Some(item) = at.version.items.iter().find(|i| i.oid.as_str() == path.item) else {
        return Ok(Err(format!("{oid_path}: no such item")));
    };
    let row = match path.group.as_ref().and_then(|g| g.repeat) {
        Some(Repeat::Index(n)) => n,
        _ if item.group_oid.as_str() == at.group_oid => at.row,
        _ => 1,
    };
    let text = match value {
        InsertValue::Value(v) => v.clone(),
        InsertValue::Expression(src) => match parse_oc_rule(src) {
            Ok(e) => e.evaluate(env).to_text(),
            Err(_) => return Ok(Err(format!("{oid_path}: the value expression does not parse"))),
        },
    };
    let canonical = if text.trim().is_empty() {
        None
    } else {
        let list = item.code_list.as_ref().and_then(|c| at.version.code_list(c.as_str()));
        match canonical_value(item, list, &text) {
            Ok(c) => Some(c),
            Err(e) => return Ok(Err(format!("{}: '{text}' refused ({})", item.oid, e.message))),
        }
    };
    let key = format!(
        "{}/{}[{}]/{}/{}[{row}]/{}",
        ctx.participant_oid, at.event.event_oid, at.event.repeat_key, at.form.form_oid, item.group_oid, item.oid
    );
    let old = tx
        .item_data_of(at.form.id)
        .await?
        .into_iter()
        .find(|r| {
            !r.deleted
                && r.group_oid == item.group_oid.as_str()
                && r.item_oid == item.oid.as_str()
                && r.row_number == i32::try_from(row).unwrap_or(0)
        })
        .and_then(|r| r.value);
    if old == canonical {
        return Ok(Ok(format!("{} already holds {}", item.oid, canonical.unwrap_or_default())));
    }
    let detail = format!("{} = {}", item.oid, canonical.clone().unwrap_or_default());
    if ctx.dry_run {
        return Ok(Ok(detail));
    }
    tx.upsert_item_data(
        at.form.id,
        item.group_oid.as_str(),
        i32::try_from(row).unwrap_or(1),
        item.oid.as_str(),
        canonical.as_deref(),
        None,
    )
    .await?;
    tx.audit(
        AuditEntry::new("item_data.inserted_by_rule", "item_data", key)
            .study(Some(ctx.study_id), ctx.audit_site)
            .old(serde_json::json!({ "value": old }))
            .new_value(serde_json::json!({ "value": canonical, "rule": rule.rule_oid }))
            .reason(Some(reason.to_owned())),
    )
    .await?;
    Ok(Ok(detail))
}

impl crate::App {
    /// The current, enabled rules of a study, parsed.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn active_rules(&self, study_id: i64) -> Result<Vec<ActiveRule>, AppError> {
        Ok(self
            .store()
            .current_rules(study_id)
            .await?
            .iter()
            .filter(|r| r.enabled)
            .filter_map(ActiveRule::from_row)
            .collect())
    }
}

/// A batch run over a study's data.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchInput {
    /// Report what would happen without changing anything.
    #[serde(default)]
    pub dry_run: bool,
    /// Only this rule (OID).
    #[serde(default)]
    pub rule: Option<String>,
    /// Only this participant (label or OID).
    #[serde(default)]
    pub participant: Option<String>,
}

/// What a batch run did (or would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct BatchOutcome {
    pub dry_run: bool,
    pub rules: usize,
    pub participants: usize,
    pub evaluated: usize,
    /// Counts by action and outcome, e.g. `discrepancy_note/applied`.
    pub counts: BTreeMap<String, usize>,
    /// The first 500 actions in detail.
    pub actions: Vec<FiredAction>,
    pub seconds: f64,
}

const BATCH_DETAILS: usize = 500;

impl crate::App {
    /// Runs the study's rules (those whose actions run in batch) over every participant (or one),
    /// one transaction per participant; with `dry_run` nothing is written and the outcome says
    /// what would have been. Data managers and study directors.
    ///
    /// # Errors
    /// [`AppError::Forbidden`]; [`AppError::NotFound`] for an unknown rule or participant.
    pub async fn run_rules_batch(
        &self,
        who: &crate::Principal,
        study_oid: &str,
        input: BatchInput,
    ) -> Result<BatchOutcome, AppError> {
        let (study, access) = self.study_with_access(who, study_oid).await?;
        if !access.can_study(casebook_domain::role::Permission::BuildStudy) {
            return Err(AppError::Forbidden("run rules (data managers and study directors)"));
        }
        if !input.dry_run && !access.can_study(casebook_domain::role::Permission::AdministrativeEdit) {
            return Err(AppError::Forbidden("change data now (the study's status does not allow it); use a dry run"));
        }
        let mut rules = self.active_rules(study.id).await?;
        if let Some(oid) = &input.rule {
            rules.retain(|r| &r.rule_oid == oid);
            if rules.is_empty() {
                return Err(AppError::NotFound("enabled rule"));
            }
        }
        let only = match &input.participant {
            Some(p) => Some(self.store().participant(study.id, p).await?.ok_or(AppError::NotFound("participant"))?),
            None => None,
        };
        self.batch(&study, &rules, only, input.dry_run, &who.actor()).await
    }

    /// Runs rules over every participant of a study (or one), one transaction each, as `actor`.
    async fn batch(
        &self,
        study: &casebook_store::studies::StudyRow,
        rules: &[ActiveRule],
        only: Option<casebook_store::capture::ParticipantRow>,
        dry_run: bool,
        actor: &casebook_store::Actor,
    ) -> Result<BatchOutcome, AppError> {
        let started = std::time::Instant::now();
        let (_, design) = self.production_design(study.id).await?;
        let participants = match only {
            Some(p) => vec![p],
            None => {
                let mut all = Vec::new();
                let mut after = String::new();
                loop {
                    let page = self.store().participants(study.id, None, &after, 1000).await?;
                    let Some(last) = page.last() else { break };
                    after = last.label.clone();
                    all.extend(page);
                }
                all
            }
        };
        let mut out = BatchOutcome { dry_run, rules: rules.len(), ..BatchOutcome::default() };
        for p in participants.iter().filter(|p| p.status != "removed" && p.status != "auto_removed") {
            let mut tx = self.store().write(actor.clone()).await?;
            let run = run(
                &mut tx,
                &RunContext {
                    study_id: study.id,
                    site_id: p.site_id,
                    audit_site: (p.site_id != study.id).then_some(p.site_id),
                    participant_id: p.id,
                    participant_oid: &p.oid,
                    participant_label: &p.label,
                    design: &design,
                    phase: RunPhase::Batch,
                    dry_run,
                    now: self.store().clock().now(),
                },
                rules,
                Scope::Participant,
            )
            .await?;
            // A dry run writes nothing; a run that changed nothing has nothing to commit.
            if dry_run || tx.audited() == 0 {
                drop(tx);
            } else {
                tx.commit().await?;
            }
            out.participants += 1;
            out.evaluated += run.evaluated;
            for f in run.fired {
                *out.counts.entry(format!("{}/{}", f.action, f.outcome)).or_default() += 1;
                if out.actions.len() < BATCH_DETAILS {
                    out.actions.push(f);
                }
            }
        }
        out.seconds = started.elapsed().as_secs_f64();
        Ok(out)
    }

    /// Runs the rules whose assignment has `RunOnSchedule` once a day, at or after their time
    /// (UTC), over their study's data (their batch actions), as the system. Each rule version
    /// runs at most once per day: the day's run is claimed in the audited transaction that
    /// records it. Returns how many rules ran.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn run_scheduled_rules(&self) -> Result<usize, AppError> {
        let now = self.store().clock().now();
        let actor = casebook_store::Actor::system(casebook_domain::audit::Channel::System);
        let mut ran = 0;
        for row in self.store().all_current_rules().await?.into_iter().filter(|r| r.enabled) {
            let Some(rule) = ActiveRule::from_row(&row) else { continue };
            let Some(at) = rule.doc.run_on_schedule else { continue };
            if (now.hour(), now.minute()) < (at.hour(), at.minute()) {
                continue;
            }
            let Some(study) = self.store().study_by_id(row.study_id).await? else { continue };
            if study.status != "available" {
                continue;
            }
            let key = format!("schedule|{}|{}", rule.id, now.date());
            let mut tx = self.store().write(actor.clone()).await?;
            if !tx.claim_rule_run(&key, rule.id).await? {
                continue;
            }
            tx.audit(
                AuditEntry::new("rules.scheduled_run", "rule", format!("{}/{}@{}", study.oid, rule.rule_oid, rule.target_text))
                    .study(Some(study.id), None)
                    .new_value(serde_json::json!({ "day": now.date().to_string(), "time": at.to_string(), "version": rule.version })),
            )
            .await?;
            tx.commit().await?;
            let out = self.batch(&study, std::slice::from_ref(&rule), None, false, &actor).await?;
            tracing::info!(rule = %rule.rule_oid, study = %study.oid, participants = out.participants, fired = out.counts.values().sum::<usize>(), "scheduled rule run");
            ran += 1;
        }
        Ok(ran)
    }
}
