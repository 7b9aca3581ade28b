//! Review of collected data: manual event status actions (stop, skip, complete, reopen, lock,
//! unlock), electronic signatures of events and casebooks (21 CFR Part 11 §11.50, §11.200), and
//! source data verification (SDV) of forms — each audited in its transaction.
//!
//! Signatures and verifications are about data as they were: [`after_data_change`] runs inside
//! every save that changes a value, and in that same transaction breaks the signatures over the
//! changed data (the event goes back to completed, the participant to available) and marks a
//! verified form as changed since verification.
//!
//! Rules follow OpenClinica 3 (reference `openclinica-data-model.md` §6.3, §6.7, §6.9); where
//! Casebook differs it says so next to the rule.

use casebook_domain::audit::AuditEntry;
use casebook_domain::capture::status::{EventStatus, FormStatus};
use casebook_domain::design::{EventDef, EventForm, SdvRequirement, StudyDesign};
use casebook_domain::role::{Permission, RoleLevel};
use casebook_domain::study::StudyStatus;
use casebook_store::WriteTx;
use casebook_store::capture::{FormDataRow, ItemDataRow, ParticipantRow, StudyEventRow};
use casebook_store::review::{ItemSdvMark, ItemSdvRow, NewSignature, SdvRow, SignatureRow};
use casebook_store::studies::StudyRow;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::App;
use crate::access::Access;
use crate::auth::Principal;
use crate::error::{AppError, anyhow_like};

/// The longest reason or signature meaning accepted.
const MAX_TEXT: usize = 2000;

// ---------------------------------------------------------------------------------------------
// OpenClinica audit event types
// ---------------------------------------------------------------------------------------------

/// Audit actions and the OpenClinica `audit_log_event_type` each maps to (§9.2), for ODM
/// `AuditRecord`s: `(action, new status or None for any, type id)`. Status moves are all audited
/// as `event.status_changed`; OpenClinica types them by the status the event moves to.
pub const OC_AUDIT_TYPES: &[(&str, Option<&str>, u8)] = &[
    ("item_data.value_saved", None, 1),
    ("item_data.updated_after_complete", None, 1),
    ("item_data.calculated", None, 1),
    ("item_data.cleared_by_skip_logic", None, 1),
    ("participant.enrolled", None, 2),
    ("participant.signed", None, 3),
    ("participant.status_changed", None, 3),
    ("form.completed", None, 8),
    ("item_data.row_removed", None, 13),
    ("form.completed_signed", None, 14),
    ("event.scheduled", None, 17),
    ("event.status_changed", Some("scheduled"), 17),
    ("event.status_changed", Some("data_entry_started"), 18),
    ("event.status_changed", Some("completed"), 19),
    ("event.status_changed", Some("stopped"), 20),
    ("event.status_changed", Some("skipped"), 21),
    ("event.status_changed", Some("locked"), 22),
    ("event.status_changed", Some("signed"), 31),
    ("event.signed", None, 31),
    ("form.sdv_verified", None, 32),
    ("form.sdv_unverified", None, 32),
    ("form.sdv_reset", None, 32),
    ("item.sdv_verified", None, 32),
    ("item.sdv_unverified", None, 32),
    ("item.sdv_reset", None, 32),
    ("form.started", None, 41),
];

/// The OpenClinica audit event type of an action (given the status it moved to, for status
/// changes); `None` where OpenClinica has no such type (for example `signature.broken`, whose
/// status consequences are audited as their own rows).
#[must_use]
pub fn oc_audit_type(action: &str, new_status: Option<&str>) -> Option<u8> {
    OC_AUDIT_TYPES.iter().find(|(a, s, _)| *a == action && (s.is_none() || *s == new_status)).map(|(_, _, t)| *t)
}

// ---------------------------------------------------------------------------------------------
// Event status actions (pure rules)
// ---------------------------------------------------------------------------------------------

/// A manual move of an event's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusAction {
    Stop,
    Skip,
    /// Back to data entry from completed, stopped or skipped (never to scheduled).
    Reopen,
    Complete,
    Lock,
    Unlock,
}

impl StatusAction {
    /// Parses the `status` the API asks for.
    ///
    /// # Errors
    /// A validation error naming the statuses that can be asked for.
    pub fn parse(text: &str) -> Result<Self, AppError> {
        Ok(match text.trim() {
            "stopped" => Self::Stop,
            "skipped" => Self::Skip,
            "data_entry_started" => Self::Reopen,
            "completed" => Self::Complete,
            "locked" => Self::Lock,
            "unlocked" => Self::Unlock,
            "scheduled" => {
                return Err(AppError::invalid("status", "an event never returns to scheduled by hand"));
            }
            "signed" => return Err(AppError::invalid("status", "events are signed with POST …/sign")),
            other => {
                return Err(AppError::invalid(
                    "status",
                    format!(
                        "'{other}' is not a status action; use stopped, skipped, data_entry_started, completed, locked or unlocked"
                    ),
                ));
            }
        })
    }

    /// The permission the action needs: locking is for data managers and study directors.
    #[must_use]
    pub fn permission(self) -> Permission {
        match self {
            Self::Lock | Self::Unlock => Permission::LockData,
            _ => Permission::EnterData,
        }
    }
}

/// What the rules need to know about an event's forms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventFacts {
    /// At least one form of the event has been started (and is not removed).
    pub has_forms: bool,
    /// Every required form of the event is complete.
    pub required_complete: bool,
    /// Some required form has been started and is not complete.
    pub started_required_incomplete: bool,
}

/// Where an action takes an event: the new status and the status to remember for unlocking.
///
/// # Errors
/// The reason the action is refused from `current`.
pub fn plan(
    action: StatusAction,
    current: EventStatus,
    before_lock: Option<EventStatus>,
    facts: EventFacts,
) -> Result<(EventStatus, Option<EventStatus>), String> {
    use EventStatus as S;
    if current == S::Locked && action != StatusAction::Unlock {
        return Err("the event is locked; a data manager must unlock it first".into());
    }
    let to = match action {
        StatusAction::Unlock => {
            if current != S::Locked {
                return Err(format!("the event is not locked (it is {})", current.as_str()));
            }
            // Events locked before the lock was remembered return to what their forms say.
            let fallback = if facts.required_complete { S::Completed } else { S::DataEntryStarted };
            return Ok((before_lock.unwrap_or(fallback), None));
        }
        StatusAction::Lock => {
            if !facts.has_forms {
                return Err("an event can be locked only once it holds at least one form".into());
            }
            if facts.started_required_incomplete {
                return Err("a required form of the event is started but not complete; complete it first".into());
            }
            return Ok((S::Locked, Some(current)));
        }
        _ if current == S::Signed => {
            return Err("the event is signed; change its data (which breaks the signature) or lock it".into());
        }
        StatusAction::Stop => match current {
            S::Scheduled | S::DataEntryStarted | S::Completed => S::Stopped,
            _ => return Err(format!("a {} event cannot be stopped", current.as_str())),
        },
        StatusAction::Skip => match current {
            S::Scheduled if !facts.has_forms => S::Skipped,
            S::Scheduled | S::DataEntryStarted => {
                return Err("data entry has started in this event; stop it instead of skipping it".into());
            }
            _ => return Err(format!("a {} event cannot be skipped", current.as_str())),
        },
        StatusAction::Reopen => match current {
            S::Completed | S::Stopped | S::Skipped => S::DataEntryStarted,
            _ => return Err(format!("a {} event cannot be reopened for data entry", current.as_str())),
        },
        StatusAction::Complete => {
            if !facts.required_complete {
                return Err("every required form must be complete before the event can be".into());
            }
            match current {
                S::Scheduled | S::DataEntryStarted | S::Stopped | S::Skipped => S::Completed,
                _ => return Err(format!("a {} event cannot be completed", current.as_str())),
            }
        }
    };
    Ok((to, None))
}

fn facts_of(def: &EventDef, forms: &[FormDataRow]) -> EventFacts {
    let live: Vec<&FormDataRow> = forms.iter().filter(|f| f.removal == "available").collect();
    let complete = |oid: &str| live.iter().any(|f| f.form_oid == oid && f.status == FormStatus::Complete.as_str());
    let started = |oid: &str| live.iter().any(|f| f.form_oid == oid);
    let required: Vec<&str> = def.forms.iter().filter(|f| f.required).map(|f| f.form_oid.as_str()).collect();
    EventFacts {
        has_forms: !live.is_empty(),
        required_complete: required.iter().all(|f| complete(f)),
        started_required_incomplete: required.iter().any(|f| started(f) && !complete(f)),
    }
}

// ---------------------------------------------------------------------------------------------
// Inputs and views
// ---------------------------------------------------------------------------------------------

/// A manual status move.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventStatusInput {
    /// `stopped`, `skipped`, `data_entry_started`, `completed`, `locked` or `unlocked`.
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// An electronic signature: the signer re-authenticates and states what the signature means.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignInput {
    pub username: String,
    pub password: String,
    /// The attestation, for example "I attest that I have reviewed these data and they are accurate".
    pub meaning: String,
}

impl std::fmt::Debug for SignInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInput")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("meaning", &self.meaning)
            .finish()
    }
}

/// Verifying a form (or some of its values) against source documents, or withdrawing the
/// verification.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SdvInput {
    pub verified: bool,
    /// Item-level SDV: the values to verify; empty verifies the whole form.
    #[serde(default)]
    pub items: Vec<SdvItemInput>,
}

/// One value of a form: the item (OID or name) and its row (1 outside repeating groups).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SdvItemInput {
    pub item: String,
    #[serde(default = "first_row")]
    pub row: u32,
}

fn first_row() -> u32 {
    1
}

/// A participant's review state: statuses, verification, signatures.
#[derive(Debug, Clone, Serialize)]
pub struct ReviewView {
    pub participant_oid: String,
    pub label: String,
    pub status: String,
    pub events: Vec<EventReview>,
    pub signatures: Vec<SignatureView>,
}

/// An event occurrence's status and its forms' verification.
#[derive(Debug, Clone, Serialize)]
pub struct EventReview {
    pub event_oid: String,
    pub repeat_key: i32,
    pub status: String,
    pub removal: String,
    /// For a locked event: the status it returns to when unlocked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locked_from: Option<String>,
    pub forms: Vec<FormReview>,
}

/// A form's data-entry status and its source data verification.
#[derive(Debug, Clone, Serialize)]
pub struct FormReview {
    pub form_oid: String,
    pub status: String,
    pub required: bool,
    pub sdv: SdvView,
}

/// Source data verification of a form.
#[derive(Debug, Clone, Serialize)]
pub struct SdvView {
    /// The design's requirement: `full`, `partial`, `not_required` or `not_applicable`.
    pub requirement: SdvRequirement,
    /// `not_verified`, `verified` or `changed_since_verified`.
    pub status: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub verified_at: Option<OffsetDateTime>,
    pub verified_by: Option<String>,
    /// When data changed after the last verification.
    #[serde(with = "time::serde::rfc3339::option")]
    pub changed_at: Option<OffsetDateTime>,
    /// Item-level SDV: the items the design asks to verify one by one (empty: the whole form).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sdv_items: Vec<String>,
    /// Values verified one by one (or changed since), in form order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<ItemSdvView>,
}

/// The verification of one value of a form.
#[derive(Debug, Clone, Serialize)]
pub struct ItemSdvView {
    pub item_oid: String,
    pub group_oid: String,
    pub row: i32,
    /// `not_verified`, `verified` or `changed_since_verified`.
    pub status: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub verified_at: Option<OffsetDateTime>,
    pub verified_by: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub changed_at: Option<OffsetDateTime>,
}

fn item_sdv_view(r: &ItemSdvRow) -> ItemSdvView {
    ItemSdvView {
        item_oid: r.item_oid.clone(),
        group_oid: r.group_oid.clone(),
        row: r.row_number,
        status: r.status.clone(),
        verified_at: r.verified_at,
        verified_by: r.verified_by_username.clone(),
        changed_at: r.changed_at,
    }
}

/// A stored electronic signature.
#[derive(Debug, Clone, Serialize)]
pub struct SignatureView {
    pub id: i64,
    /// `event` or `casebook`.
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_oid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat_key: Option<i32>,
    pub signer_username: String,
    pub signer_name: String,
    pub meaning: String,
    #[serde(with = "time::serde::rfc3339")]
    pub signed_at: OffsetDateTime,
    /// SHA-256 (hex) of the canonical JSON of the signed data.
    pub data_hash: String,
    /// `in_force` or `broken`.
    pub status: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub broken_at: Option<OffsetDateTime>,
    pub broken_reason: Option<String>,
    /// The audit record of the signing, and of the change that broke it.
    pub audit_seq: i64,
    pub broken_audit_seq: Option<i64>,
}

fn signature_view(s: SignatureRow, events: &[StudyEventRow]) -> SignatureView {
    let event = s.study_event_id.and_then(|id| events.iter().find(|e| e.id == id));
    SignatureView {
        id: s.id,
        scope: s.scope,
        event_oid: event.map(|e| e.event_oid.clone()),
        repeat_key: event.map(|e| e.repeat_key),
        signer_username: s.signer_username,
        signer_name: s.signer_name,
        meaning: s.meaning,
        signed_at: s.signed_at,
        data_hash: s.data_hash,
        status: if s.broken_at.is_some() { "broken" } else { "in_force" }.to_owned(),
        broken_at: s.broken_at,
        broken_reason: s.broken_reason,
        audit_seq: s.audit_seq,
        broken_audit_seq: s.broken_audit_seq,
    }
}

fn sdv_view(ef: Option<&EventForm>, row: Option<&SdvRow>, items: &[ItemSdvRow]) -> SdvView {
    SdvView {
        requirement: ef.map(|x| x.sdv).unwrap_or_default(),
        sdv_items: ef.map(|x| x.sdv_items.iter().map(ToString::to_string).collect()).unwrap_or_default(),
        items: items.iter().map(item_sdv_view).collect(),
        status: row.map_or_else(|| "not_verified".to_owned(), |r| r.status.clone()),
        verified_at: row.and_then(|r| r.verified_at),
        verified_by: row.and_then(|r| r.verified_by_username.clone()),
        changed_at: row.and_then(|r| r.changed_at),
    }
}

// ---------------------------------------------------------------------------------------------
// The signed data and its hash
// ---------------------------------------------------------------------------------------------

/// The canonical form of signed data: structs (fixed field order), events, forms and values
/// sorted, removed rows left out. Its SHA-256 is stored with the signature.
#[derive(Serialize)]
struct SignedData<'a> {
    format: &'static str,
    scope: &'a str,
    study: &'a str,
    participant: &'a str,
    events: Vec<SignedEvent>,
}

#[derive(Serialize)]
struct SignedEvent {
    event: String,
    repeat: i32,
    forms: Vec<SignedForm>,
}

#[derive(Serialize)]
struct SignedForm {
    form: String,
    form_version: String,
    values: Vec<SignedValue>,
}

#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
struct SignedValue {
    group: String,
    row: i32,
    item: String,
    value: Option<String>,
    null_flavour: Option<String>,
}

/// The canonical form of one event's data: forms not removed, values not deleted (and not
/// empty), each sorted.
fn signed_event(event: &StudyEventRow, forms: Vec<(FormDataRow, Vec<ItemDataRow>)>) -> SignedEvent {
    let forms = forms
        .into_iter()
        .filter(|(f, _)| f.removal == "available")
        .map(|(f, items)| SignedForm {
            form: f.form_oid,
            form_version: f.form_version_oid,
            values: items
                .into_iter()
                .filter(|i| !i.deleted && (i.value.is_some() || i.null_flavour.is_some()))
                .map(|i| SignedValue {
                    group: i.group_oid,
                    row: i.row_number,
                    item: i.item_oid,
                    value: i.value,
                    null_flavour: i.null_flavour,
                })
                .collect(),
        })
        .collect();
    SignedEvent { event: event.event_oid.clone(), repeat: event.repeat_key, forms }
}

/// SHA-256 (hex) of the canonical JSON of signed data; order of events, forms and values does
/// not matter.
fn data_hash(
    scope: &str,
    study_oid: &str,
    participant_oid: &str,
    mut events: Vec<SignedEvent>,
) -> Result<String, AppError> {
    for e in &mut events {
        for f in &mut e.forms {
            f.values.sort();
        }
        e.forms.sort_by(|a, b| a.form.cmp(&b.form));
    }
    events.sort_by(|a, b| (&a.event, a.repeat).cmp(&(&b.event, b.repeat)));
    let doc =
        SignedData { format: "casebook.signed-data.v1", scope, study: study_oid, participant: participant_oid, events };
    let bytes = serde_json::to_vec(&doc).map_err(internal)?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// An event's data as signed, read inside the signing transaction.
async fn event_data(tx: &mut WriteTx, event: &StudyEventRow) -> Result<SignedEvent, AppError> {
    let mut forms = Vec::new();
    for f in tx.forms_of_event(event.id).await? {
        let items = tx.item_data_of(f.id).await?;
        forms.push((f, items));
    }
    Ok(signed_event(event, forms))
}

// ---------------------------------------------------------------------------------------------
// The hook run by every save that changes data
// ---------------------------------------------------------------------------------------------

/// Where data changed: the form, its event occurrence, participant, study and site.
#[derive(Debug, Clone, Copy)]
pub struct DataChange {
    pub form_data_id: i64,
    pub study_event_id: i64,
    pub participant_id: i64,
    pub study_id: i64,
    pub site_id: Option<i64>,
    /// The form was started by this very save: nothing of it can have been verified.
    pub started_now: bool,
}

/// Runs inside a save that changed values, before it commits: breaks the signatures over the
/// changed data (the event returns to completed, the participant to available), marks a verified
/// form as changed since verification, and audits each. Returns the event's status afterwards.
///
/// It locks the event and participant rows first, so a signature or lock committed while the
/// save was running is seen here: a save into an event locked meanwhile is refused.
///
/// # Errors
/// [`AppError::InvalidTransition`] when the event stopped accepting data during the save; storage
/// failures.
pub async fn after_data_change(tx: &mut WriteTx, at: &DataChange) -> Result<EventStatus, AppError> {
    let event = tx.lock_event(at.study_event_id).await?.ok_or(AppError::NotFound("event occurrence"))?;
    let mut status = EventStatus::parse(&event.status).unwrap_or(EventStatus::DataEntryStarted);
    if let Some(why) = status.refuses_data() {
        return Err(AppError::InvalidTransition(format!("{why} (meanwhile); nothing was saved")));
    }
    let participant_status = tx.lock_participant(at.participant_id).await?.unwrap_or_default();
    let place = tx.form_place(at.form_data_id).await?.ok_or(AppError::NotFound("form"))?;
    let event_key = format!("{}/{}[{}]", place.participant_oid, place.event_oid, place.repeat_key);
    let form_key = format!("{event_key}/{}", place.form_oid);
    let scope = |e: AuditEntry| e.study(Some(at.study_id), at.site_id);

    if !at.started_now && tx.sdv_mark_changed(at.form_data_id).await? {
        tx.audit(scope(
            AuditEntry::new("form.sdv_reset", "form_data", &form_key)
                .old(serde_json::json!({ "sdv": "verified" }))
                .new_value(serde_json::json!({ "sdv": "changed_since_verified" }))
                .reason(Some("the form's data changed after verification".to_owned())),
        ))
        .await?;
    }

    let reset = if at.started_now { Vec::new() } else { tx.item_sdv_reset_changed(at.form_data_id).await? };
    for (group_oid, row, item_oid) in reset {
        tx.audit(scope(
            AuditEntry::new("item.sdv_reset", "item_data", format!("{form_key}/{group_oid}[{row}]/{item_oid}"))
                .old(serde_json::json!({ "sdv": "verified" }))
                .new_value(serde_json::json!({ "sdv": "changed_since_verified" }))
                .reason(Some("the value changed after verification".to_owned())),
        ))
        .await?;
    }

    let reason = format!("data of {form_key} changed after signing");
    for s in tx.signatures_in_force(at.participant_id, at.study_event_id).await? {
        let seq = tx
            .audit(scope(
                AuditEntry::new("signature.broken", "signature", format!("SIG_{}", s.id))
                    .old(serde_json::json!({
                        "status": "in_force", "scope": s.scope, "signer": s.signer_username,
                        "signed_at": s.signed_at.unix_timestamp(), "data_hash": s.data_hash,
                    }))
                    .new_value(serde_json::json!({ "status": "broken", "form": form_key }))
                    .reason(Some(reason.clone())),
            ))
            .await?;
        tx.break_signature(s.id, &reason, seq).await?;
    }
    if status == EventStatus::Signed
        && tx
            .move_event_status(at.study_event_id, EventStatus::Signed.as_str(), EventStatus::Completed.as_str(), None)
            .await?
    {
        tx.audit(scope(
            AuditEntry::new("event.status_changed", "study_event", &event_key)
                .old(serde_json::json!({ "status": "signed" }))
                .new_value(serde_json::json!({ "status": "completed" }))
                .reason(Some("the signed data changed; the signature no longer applies".to_owned())),
        ))
        .await?;
        status = EventStatus::Completed;
    }
    if participant_status == "signed" && tx.move_participant_status(at.participant_id, "signed", "available").await? {
        tx.audit(scope(
            AuditEntry::new("participant.status_changed", "participant", &place.participant_oid)
                .old(serde_json::json!({ "status": "signed" }))
                .new_value(serde_json::json!({ "status": "available" }))
                .reason(Some("the signed casebook's data changed; the signature no longer applies".to_owned())),
        ))
        .await?;
    }
    Ok(status)
}

// ---------------------------------------------------------------------------------------------
// Use cases
// ---------------------------------------------------------------------------------------------

fn internal(e: impl std::error::Error + Send + Sync + 'static) -> AppError {
    AppError::Internal(anyhow_like::Internal(Box::new(e)))
}

fn text(field: &str, t: Option<&str>, required: bool) -> Result<Option<String>, AppError> {
    let t = t.map(str::trim).filter(|t| !t.is_empty());
    match t {
        None if required => Err(AppError::invalid(field, "is required")),
        Some(t) if t.chars().count() > MAX_TEXT => {
            Err(AppError::invalid(field, format!("at most {MAX_TEXT} characters")))
        }
        other => Ok(other.map(str::to_owned)),
    }
}

/// Whether `p` is allowed at the participant's site (or the study, for participants enrolled
/// at study level), with the study's and site's status applied.
fn allowed(access: &Access, study: &StudyRow, site: &StudyRow, p: Permission) -> bool {
    if site.id == study.id {
        access.can_study(p)
    } else {
        access.can_site(site.id, site.status.parse().unwrap_or(StudyStatus::Design), p)
    }
}

/// Whether the principal may sign here. Unlike other permissions, administrators get no
/// bypass: a signature is an investigator's attestation, so it needs a role that signs.
fn may_sign(access: &Access, study: &StudyRow, site: &StudyRow) -> bool {
    let site_status = site.status.parse().unwrap_or(StudyStatus::Design);
    let effective =
        if site.id == study.id { access.status } else { StudyStatus::effective(access.status, site_status) };
    let p = Permission::Sign;
    if access.study_role.is_some_and(|r| r.allows(p)) {
        return p.allowed_in(effective, RoleLevel::Study);
    }
    site.id != study.id
        && access
            .site_roles
            .iter()
            .any(|(s, r)| *s == site.id && r.allows(p) && p.allowed_in(effective, RoleLevel::Site))
}

struct Occurrence {
    study: StudyRow,
    access: Access,
    participant: ParticipantRow,
    site: StudyRow,
    design: std::sync::Arc<StudyDesign>,
    event: StudyEventRow,
}

impl Occurrence {
    fn site_id(&self) -> Option<i64> {
        (self.site.id != self.study.id).then_some(self.site.id)
    }

    fn event_key(&self) -> String {
        format!("{}/{}[{}]", self.participant.oid, self.event.event_oid, self.event.repeat_key)
    }

    fn def(&self) -> Result<&EventDef, AppError> {
        self.design.event(&self.event.event_oid).ok_or(AppError::NotFound("event definition"))
    }
}

impl App {
    async fn occurrence(
        &self,
        who: &Principal,
        study_oid: &str,
        participant: &str,
        event_oid: &str,
        repeat_key: i32,
    ) -> Result<Occurrence, AppError> {
        let (study, access, participant, site) = self.visible_participant(who, study_oid, participant).await?;
        let (_, design) = self.production_design(study.id).await?;
        let event = self
            .store()
            .study_events(participant.id)
            .await?
            .into_iter()
            .find(|e| e.event_oid == event_oid && e.repeat_key == repeat_key)
            .ok_or(AppError::NotFound("event occurrence"))?;
        Ok(Occurrence { study, access, participant, site, design, event })
    }

    /// Moves an event's status by hand (OpenClinica §6.3): data-entry roles stop, skip (before
    /// data entry starts), complete (every required form complete) and reopen; data managers
    /// and study directors lock (the event holds a form and no started required form is
    /// incomplete) and unlock (back to the status before locking). Never back to scheduled.
    ///
    /// # Errors
    /// [`AppError::Forbidden`] without the permission; [`AppError::InvalidTransition`] when the
    /// move is not allowed from the current status.
    #[allow(clippy::too_many_arguments)]
    pub async fn set_event_status(
        &self,
        who: &Principal,
        study_oid: &str,
        participant: &str,
        event_oid: &str,
        repeat_key: i32,
        input: EventStatusInput,
    ) -> Result<EventReview, AppError> {
        let action = StatusAction::parse(&input.status)?;
        let reason = text("reason", input.reason.as_deref(), false)?;
        let occ = self.occurrence(who, study_oid, participant, event_oid, repeat_key).await?;
        if !allowed(&occ.access, &occ.study, &occ.site, action.permission()) {
            return Err(AppError::Forbidden(match action {
                StatusAction::Lock | StatusAction::Unlock => {
                    "lock or unlock events (data managers and study directors)"
                }
                _ => "change event statuses at this site (or the study's status does not allow it)",
            }));
        }
        if occ.participant.status == "removed" || occ.participant.status == "auto_removed" {
            return Err(AppError::InvalidTransition("the participant is removed".into()));
        }
        let def = occ.def()?;
        let mut tx = self.store().write(who.actor()).await?;
        let state = tx.lock_event(occ.event.id).await?.ok_or(AppError::NotFound("event occurrence"))?;
        if state.removal != "available" {
            return Err(AppError::InvalidTransition("the event is removed".into()));
        }
        let current = EventStatus::parse(&state.status).ok_or_else(|| anyhow_like::msg("bad event status"))?;
        let before = state.status_before_lock.as_deref().and_then(EventStatus::parse);
        let forms = tx.forms_of_event(occ.event.id).await?;
        let (to, remember) =
            plan(action, current, before, facts_of(def, &forms)).map_err(AppError::InvalidTransition)?;
        if !tx.move_event_status(occ.event.id, current.as_str(), to.as_str(), remember.map(EventStatus::as_str)).await?
        {
            return Err(AppError::Conflict("the event changed meanwhile; reload and try again".into()));
        }
        tx.audit(
            AuditEntry::new("event.status_changed", "study_event", occ.event_key())
                .study(Some(occ.study.id), occ.site_id())
                .old(serde_json::json!({ "status": current.as_str() }))
                .new_value(serde_json::json!({ "status": to.as_str(), "manual": true }))
                .reason(reason),
        )
        .await?;
        tx.commit().await?;
        let view = self.review(who, study_oid, participant).await?;
        view.events
            .into_iter()
            .find(|e| e.event_oid == event_oid && e.repeat_key == repeat_key)
            .ok_or(AppError::NotFound("event occurrence"))
    }

    /// Checks a signer: the right role here, their own username, their password (a refused
    /// attempt is audited, 21 CFR Part 11 §11.300(d)), and a stated meaning. Returns the
    /// printed name and the meaning.
    async fn signer(
        &self,
        who: &Principal,
        occ_study: &StudyRow,
        access: &Access,
        site: &StudyRow,
        input: &SignInput,
        what: &str,
    ) -> Result<(String, String), AppError> {
        if !may_sign(access, occ_study, site) {
            return Err(AppError::Forbidden("sign (investigators only, while the study allows it)"));
        }
        let refuse = |why: &'static str| {
            AuditEntry::new("signature.refused", "user", who.user_id)
                .study(Some(occ_study.id), (site.id != occ_study.id).then_some(site.id))
                .new_value(serde_json::json!({ "what": what, "reason": why }))
        };
        if input.username.trim() != who.username {
            let mut tx = self.store().write(who.actor()).await?;
            tx.audit(refuse("another user's username")).await?;
            tx.commit().await?;
            return Err(AppError::Forbidden("sign with another user's username; sign with your own"));
        }
        if !self.password_matches(who, &input.password).await? {
            let mut tx = self.store().write(who.actor()).await?;
            tx.audit(refuse("wrong password")).await?;
            tx.commit().await?;
            return Err(AppError::invalid("password", "the password does not match your account; nothing was signed"));
        }
        let meaning = text("meaning", Some(&input.meaning), true)?.unwrap_or_default();
        let user = self.store().user_by_id(who.user_id).await?.ok_or(AppError::NotFound("user"))?;
        Ok((format!("{} {}", user.first_name, user.last_name).trim().to_owned(), meaning))
    }

    /// Signs a completed event (21 CFR Part 11): the investigator re-enters username and password
    /// and states the meaning; the signature records who, when (UTC), the meaning and a SHA-256
    /// of the event's data. The event becomes signed; any later change to its data breaks the
    /// signature.
    ///
    /// # Errors
    /// [`AppError::Forbidden`] for non-investigators or another user's username;
    /// [`AppError::Validation`] for a wrong password or no meaning; [`AppError::InvalidTransition`]
    /// unless the event is completed.
    pub async fn sign_event(
        &self,
        who: &Principal,
        study_oid: &str,
        participant: &str,
        event_oid: &str,
        repeat_key: i32,
        input: SignInput,
    ) -> Result<SignatureView, AppError> {
        let occ = self.occurrence(who, study_oid, participant, event_oid, repeat_key).await?;
        let key = occ.event_key();
        let (name, meaning) = self.signer(who, &occ.study, &occ.access, &occ.site, &input, &key).await?;
        if occ.participant.status == "removed" || occ.participant.status == "auto_removed" {
            return Err(AppError::InvalidTransition("the participant is removed".into()));
        }
        let mut tx = self.store().write(who.actor()).await?;
        let state = tx.lock_event(occ.event.id).await?.ok_or(AppError::NotFound("event occurrence"))?;
        if state.removal != "available" {
            return Err(AppError::InvalidTransition("the event is removed".into()));
        }
        match EventStatus::parse(&state.status) {
            Some(EventStatus::Completed) => {}
            Some(EventStatus::Signed) => return Err(AppError::InvalidTransition("the event is already signed".into())),
            _ => {
                return Err(AppError::InvalidTransition(format!(
                    "only a completed event can be signed (this one is {})",
                    state.status
                )));
            }
        }
        let data = vec![event_data(&mut tx, &occ.event).await?];
        let hash = data_hash("event", &occ.study.oid, &occ.participant.oid, data)?;
        let seq = tx
            .audit(
                AuditEntry::new("event.signed", "study_event", &key)
                    .study(Some(occ.study.id), occ.site_id())
                    .old(serde_json::json!({ "status": "completed" }))
                    .new_value(serde_json::json!({
                        "status": "signed", "signer": who.username, "signer_name": name,
                        "meaning": meaning, "data_hash": hash,
                    })),
            )
            .await?;
        let id = tx
            .insert_signature(&NewSignature {
                scope: "event",
                participant_id: occ.participant.id,
                study_event_id: Some(occ.event.id),
                signer_id: who.user_id,
                signer_username: &who.username,
                signer_name: &name,
                meaning: &meaning,
                data_hash: &hash,
                audit_seq: seq,
            })
            .await?;
        if !tx.move_event_status(occ.event.id, "completed", "signed", None).await? {
            return Err(AppError::Conflict("the event changed meanwhile; reload and try again".into()));
        }
        tx.commit().await?;
        self.signature(occ.participant.id, id).await
    }

    /// Signs a participant's casebook: every event (not removed) must be completed, stopped,
    /// skipped or signed (a locked event counts by the status it was locked in). The signature
    /// covers all the casebook's data; the participant becomes signed.
    ///
    /// # Errors
    /// As [`App::sign_event`]; [`AppError::Rejected`] (`casebook_not_ready`) listing the events
    /// that are not done.
    pub async fn sign_casebook(
        &self,
        who: &Principal,
        study_oid: &str,
        participant: &str,
        input: SignInput,
    ) -> Result<SignatureView, AppError> {
        let (study, access, p, site) = self.visible_participant(who, study_oid, participant).await?;
        let (name, meaning) = self.signer(who, &study, &access, &site, &input, &p.oid).await?;
        let site_id = (site.id != study.id).then_some(site.id);
        let mut tx = self.store().write(who.actor()).await?;
        let status = tx.lock_participant(p.id).await?.ok_or(AppError::NotFound("participant"))?;
        match status.as_str() {
            "available" => {}
            "signed" => return Err(AppError::InvalidTransition("the casebook is already signed".into())),
            other => return Err(AppError::InvalidTransition(format!("a {other} participant cannot be signed"))),
        }
        let events: Vec<StudyEventRow> =
            tx.study_events_of(p.id).await?.into_iter().filter(|e| e.removal == "available").collect();
        if events.is_empty() {
            return Err(AppError::InvalidTransition("the casebook has no events to sign".into()));
        }
        let mut not_done = Vec::new();
        for e in &events {
            // A locked event counts by the status it was locked in.
            let effective = if e.status == "locked" {
                tx.lock_event(e.id).await?.and_then(|s| s.status_before_lock).unwrap_or_else(|| e.status.clone())
            } else {
                e.status.clone()
            };
            if !matches!(effective.as_str(), "completed" | "stopped" | "skipped" | "signed") {
                not_done.push(
                    serde_json::json!({ "event_oid": e.event_oid, "repeat_key": e.repeat_key, "status": e.status }),
                );
            }
        }
        if !not_done.is_empty() {
            return Err(AppError::Rejected {
                code: "casebook_not_ready",
                message: format!(
                    "{} event(s) are not completed, stopped or skipped; the casebook cannot be signed",
                    not_done.len()
                ),
                details: serde_json::json!({ "events": not_done }),
            });
        }
        let mut data = Vec::new();
        for e in events {
            data.push(event_data(&mut tx, &e).await?);
        }
        let hash = data_hash("casebook", &study.oid, &p.oid, data)?;
        let seq = tx
            .audit(
                AuditEntry::new("participant.signed", "participant", &p.oid)
                    .study(Some(study.id), site_id)
                    .old(serde_json::json!({ "status": "available" }))
                    .new_value(serde_json::json!({
                        "status": "signed", "signer": who.username, "signer_name": name,
                        "meaning": meaning, "data_hash": hash,
                    })),
            )
            .await?;
        let id = tx
            .insert_signature(&NewSignature {
                scope: "casebook",
                participant_id: p.id,
                study_event_id: None,
                signer_id: who.user_id,
                signer_username: &who.username,
                signer_name: &name,
                meaning: &meaning,
                data_hash: &hash,
                audit_seq: seq,
            })
            .await?;
        if !tx.move_participant_status(p.id, "available", "signed").await? {
            return Err(AppError::Conflict("the participant changed meanwhile; reload and try again".into()));
        }
        tx.commit().await?;
        self.signature(p.id, id).await
    }

    async fn signature(&self, participant_id: i64, id: i64) -> Result<SignatureView, AppError> {
        let events = self.store().study_events(participant_id).await?;
        self.store()
            .signatures_of_participant(participant_id)
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .map(|s| signature_view(s, &events))
            .ok_or(AppError::NotFound("signature"))
    }

    /// Every signature of a participant, in force and broken.
    ///
    /// # Errors
    /// [`AppError::NotFound`] when the participant is not visible.
    pub async fn signatures(
        &self,
        who: &Principal,
        study_oid: &str,
        participant: &str,
    ) -> Result<Vec<SignatureView>, AppError> {
        let (_, _, p, _) = self.visible_participant(who, study_oid, participant).await?;
        let events = self.store().study_events(p.id).await?;
        Ok(self
            .store()
            .signatures_of_participant(p.id)
            .await?
            .into_iter()
            .map(|s| signature_view(s, &events))
            .collect())
    }

    /// Records (or withdraws) source data verification of a complete form, by monitors, data
    /// managers and study directors. Forms whose SDV requirement is `not_applicable` cannot be
    /// verified.
    ///
    /// # Errors
    /// [`AppError::Forbidden`] without the SDV permission; [`AppError::Rejected`]
    /// (`sdv_not_applicable`); [`AppError::InvalidTransition`] for a form that is not complete,
    /// or already in the asked state.
    #[allow(clippy::too_many_arguments)]
    pub async fn set_sdv(
        &self,
        who: &Principal,
        study_oid: &str,
        participant: &str,
        event_oid: &str,
        repeat_key: i32,
        form_oid: &str,
        input: SdvInput,
    ) -> Result<FormReview, AppError> {
        let occ = self.occurrence(who, study_oid, participant, event_oid, repeat_key).await?;
        let ef = occ
            .def()?
            .forms
            .iter()
            .find(|f| f.form_oid.as_str() == form_oid)
            .ok_or(AppError::NotFound("form in this event"))?;
        if ef.hidden_from_sites && occ.site.id != occ.study.id && !occ.access.study_wide() {
            return Err(AppError::NotFound("form in this event"));
        }
        if !allowed(&occ.access, &occ.study, &occ.site, Permission::Sdv) {
            return Err(AppError::Forbidden("verify source data (monitors, data managers and study directors)"));
        }
        if ef.sdv == SdvRequirement::NotApplicable {
            return Err(AppError::Rejected {
                code: "sdv_not_applicable",
                message: format!("source data verification does not apply to {form_oid} in this event"),
                details: serde_json::Value::Null,
            });
        }
        let form = self
            .store()
            .forms_of_event_id(occ.event.id)
            .await?
            .into_iter()
            .find(|f| f.form_oid == form_oid)
            .ok_or(AppError::NotFound("started form"))?;
        let mut tx = self.store().write(who.actor()).await?;
        let (status, removal) = tx.lock_form(form.id).await?.ok_or(AppError::NotFound("started form"))?;
        if removal != "available" {
            return Err(AppError::InvalidTransition("the form is removed".into()));
        }
        if status != FormStatus::Complete.as_str() {
            return Err(AppError::InvalidTransition(format!(
                "only a complete form can be verified (this one is {status})"
            )));
        }
        let current = tx.sdv_of(form.id).await?.map_or_else(|| "not_verified".to_owned(), |r| r.status);
        let (_, version) = occ.design.form_version(&form.form_version_oid).ok_or(AppError::NotFound("form version"))?;
        let values: Vec<ItemDataRow> = tx
            .item_data_of(form.id)
            .await?
            .into_iter()
            .filter(|r| !r.deleted && (r.value.is_some() || r.null_flavour.is_some()))
            .collect();
        let item_states = tx.item_sdv_of(form.id).await?;
        let state_of = |r: &ItemDataRow| {
            item_states
                .iter()
                .find(|s| s.group_oid == r.group_oid && s.row_number == r.row_number && s.item_oid == r.item_oid)
                .map_or("not_verified", |s| s.status.as_str())
        };
        // The values whose verification makes the form verified: the design's items, else all.
        let required: Vec<&ItemDataRow> = values
            .iter()
            .filter(|r| ef.sdv_items.is_empty() || ef.sdv_items.iter().any(|i| i.as_str() == r.item_oid))
            .collect();
        let form_key = format!("{}/{form_oid}", occ.event_key());
        let scope = |e: AuditEntry| e.study(Some(occ.study.id), occ.site_id());

        // The values this request verifies (or withdraws), checked before anything changes.
        let mut targets: Vec<&ItemDataRow> = Vec::new();
        let mut problems = Vec::new();
        for it in &input.items {
            let Some(def) = version.items.iter().find(|i| i.oid.as_str() == it.item || i.name == it.item) else {
                problems.push(serde_json::json!({
                    "item": it.item, "row": it.row, "code": "unknown_item",
                    "message": format!("form version {} has no item {}", form.form_version_oid, it.item),
                }));
                continue;
            };
            let row = i32::try_from(it.row).unwrap_or(i32::MAX);
            let Some(value) = values.iter().find(|r| r.item_oid == def.oid.as_str() && r.row_number == row) else {
                problems.push(serde_json::json!({
                    "item_oid": def.oid.as_str(), "row": it.row, "code": "no_value",
                    "message": format!("{} row {} holds no value to verify", def.oid, it.row),
                }));
                continue;
            };
            let state = state_of(value);
            let wrong = match (input.verified, state) {
                (true, "verified") => Some("is already verified"),
                (false, s) if s != "verified" => Some("is not verified"),
                _ => None,
            };
            if let Some(why) = wrong {
                problems.push(serde_json::json!({
                    "item_oid": def.oid.as_str(), "row": it.row, "code": "sdv_state",
                    "message": format!("{} row {} {why}", def.oid, it.row),
                }));
            } else if targets.iter().any(|t| std::ptr::eq(*t, value)) {
                problems.push(serde_json::json!({
                    "item_oid": def.oid.as_str(), "row": it.row, "code": "duplicate",
                    "message": format!("{} row {} is listed twice", def.oid, it.row),
                }));
            } else {
                targets.push(value);
            }
        }
        if !problems.is_empty() {
            return Err(AppError::Rejected {
                code: "sdv_refused",
                message: format!("{} value(s) cannot be verified as asked; nothing changed", problems.len()),
                details: serde_json::json!({ "problems": problems }),
            });
        }

        let (item_to, item_action) =
            if input.verified { ("verified", "item.sdv_verified") } else { ("not_verified", "item.sdv_unverified") };
        fn mark(r: &ItemDataRow) -> ItemSdvMark<'_> {
            ItemSdvMark {
                group_oid: &r.group_oid,
                row_number: r.row_number,
                item_oid: &r.item_oid,
                value: r.value.as_deref(),
                null_flavour: r.null_flavour.as_deref(),
            }
        }
        // The form-level change, if any, and why.
        let form_change: Option<(&str, &str, Option<String>)> = if input.items.is_empty() {
            let change = match (input.verified, current.as_str()) {
                (true, "verified") => {
                    return Err(AppError::InvalidTransition("the form is already verified".into()));
                }
                (true, _) => ("verified", "form.sdv_verified"),
                (false, "verified") => ("not_verified", "form.sdv_unverified"),
                (false, _) => return Err(AppError::InvalidTransition("the form is not verified".into())),
            };
            // Verifying the form verifies each value it requires (so a later change names the
            // value); withdrawing it withdraws every value's verification.
            let affected: Vec<&ItemDataRow> = if input.verified {
                required.iter().copied().filter(|r| state_of(r) != "verified").collect()
            } else {
                values.iter().filter(|r| state_of(r) == "verified").collect()
            };
            for r in affected {
                tx.set_item_sdv(form.id, &mark(r), item_to).await?;
            }
            Some((change.0, change.1, None))
        } else {
            for r in &targets {
                tx.set_item_sdv(form.id, &mark(r), item_to).await?;
                tx.audit(scope(
                    AuditEntry::new(
                        item_action,
                        "item_data",
                        format!("{form_key}/{}[{}]/{}", r.group_oid, r.row_number, r.item_oid),
                    )
                    .old(serde_json::json!({ "sdv": state_of(r) }))
                    .new_value(serde_json::json!({ "sdv": item_to, "value": r.value, "null_flavour": r.null_flavour })),
                ))
                .await?;
            }
            // The form follows its values: verified once every required value is.
            let verified_now = |r: &ItemDataRow| {
                if targets.iter().any(|t| std::ptr::eq(*t, r)) { input.verified } else { state_of(r) == "verified" }
            };
            if input.verified
                && current != "verified"
                && !required.is_empty()
                && required.iter().all(|r| verified_now(r))
            {
                Some((
                    "verified",
                    "form.sdv_verified",
                    Some("every value that requires verification is verified".into()),
                ))
            } else if !input.verified && current == "verified" {
                Some((
                    "not_verified",
                    "form.sdv_unverified",
                    Some("a verified value's verification was withdrawn".into()),
                ))
            } else {
                None
            }
        };
        if let Some((to, action, reason)) = form_change {
            tx.set_sdv(form.id, to).await?;
            tx.audit(scope(
                AuditEntry::new(action, "form_data", &form_key)
                    .old(serde_json::json!({ "sdv": current }))
                    .new_value(serde_json::json!({ "sdv": to, "requirement": ef.sdv }))
                    .reason(reason),
            ))
            .await?;
        }
        tx.commit().await?;
        let view = self.review(who, study_oid, participant).await?;
        view.events
            .into_iter()
            .find(|e| e.event_oid == event_oid && e.repeat_key == repeat_key)
            .and_then(|e| e.forms.into_iter().find(|f| f.form_oid == form_oid))
            .ok_or(AppError::NotFound("form"))
    }

    /// A participant's review state: each event's status (and what a locked event returns to),
    /// each form's status with its SDV requirement and state, and every signature.
    ///
    /// # Errors
    /// [`AppError::NotFound`] when the participant is not visible.
    pub async fn review(&self, who: &Principal, study_oid: &str, participant: &str) -> Result<ReviewView, AppError> {
        let (study, access, p, site) = self.visible_participant(who, study_oid, participant).await?;
        let design = self.production_design_opt(study.id).await?.map(|(_, d)| d).unwrap_or_default();
        let site_user = site.id != study.id && !access.study_wide();
        let events = self.store().study_events(p.id).await?;
        let forms = self.store().forms_of_participant(p.id).await?;
        let sdv = self.store().sdv_of_participant(p.id).await?;
        let mut item_sdv: std::collections::HashMap<i64, Vec<ItemSdvRow>> = std::collections::HashMap::new();
        for r in self.store().item_sdv_of_participant(p.id).await? {
            item_sdv.entry(r.form_data_id).or_default().push(r);
        }
        let memory = self.store().lock_memory_of_participant(p.id).await?;
        let mut out = Vec::new();
        for e in &events {
            let def = design.event(&e.event_oid);
            let forms = forms
                .iter()
                .filter(|f| f.study_event_id == e.id)
                .filter_map(|f| {
                    let ef = def.and_then(|d| d.forms.iter().find(|x| x.form_oid.as_str() == f.form_oid));
                    if site_user && ef.is_some_and(|x| x.hidden_from_sites) {
                        return None;
                    }
                    Some(FormReview {
                        form_oid: f.form_oid.clone(),
                        status: f.status.clone(),
                        required: ef.is_some_and(|x| x.required),
                        sdv: sdv_view(
                            ef,
                            sdv.iter().find(|s| s.form_data_id == f.id),
                            item_sdv.get(&f.id).map_or(&[][..], Vec::as_slice),
                        ),
                    })
                })
                .collect();
            out.push(EventReview {
                event_oid: e.event_oid.clone(),
                repeat_key: e.repeat_key,
                status: e.status.clone(),
                removal: e.removal.clone(),
                locked_from: memory.iter().find(|(id, _)| *id == e.id).map(|(_, s)| s.clone()),
                forms,
            });
        }
        let signatures = self
            .store()
            .signatures_of_participant(p.id)
            .await?
            .into_iter()
            .map(|s| signature_view(s, &events))
            .collect();
        Ok(ReviewView {
            participant_oid: p.oid.clone(),
            label: p.label.clone(),
            status: p.status.clone(),
            events: out,
            signatures,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EventStatus as S;
    use StatusAction as A;

    const NONE: EventFacts =
        EventFacts { has_forms: false, required_complete: false, started_required_incomplete: false };
    const STARTED: EventFacts =
        EventFacts { has_forms: true, required_complete: false, started_required_incomplete: true };
    const DONE: EventFacts =
        EventFacts { has_forms: true, required_complete: true, started_required_incomplete: false };

    fn to(action: A, from: S, facts: EventFacts) -> Result<S, String> {
        plan(action, from, None, facts).map(|(s, _)| s)
    }

    #[test]
    fn manual_moves_follow_openclinica() {
        // (action, from, facts, expected status or None for refused)
        let table: &[(A, S, EventFacts, Option<S>)] = &[
            (A::Stop, S::Scheduled, NONE, Some(S::Stopped)),
            (A::Stop, S::DataEntryStarted, STARTED, Some(S::Stopped)),
            (A::Stop, S::Skipped, NONE, None),
            (A::Stop, S::Signed, DONE, None),
            (A::Skip, S::Scheduled, NONE, Some(S::Skipped)),
            (A::Skip, S::DataEntryStarted, STARTED, None),
            (A::Skip, S::Completed, DONE, None),
            (A::Complete, S::DataEntryStarted, STARTED, None),
            (A::Complete, S::DataEntryStarted, DONE, Some(S::Completed)),
            (A::Complete, S::Stopped, DONE, Some(S::Completed)),
            (A::Complete, S::Completed, DONE, None),
            (A::Reopen, S::Stopped, STARTED, Some(S::DataEntryStarted)),
            (A::Reopen, S::Skipped, NONE, Some(S::DataEntryStarted)),
            (A::Reopen, S::Scheduled, NONE, None),
            (A::Lock, S::Scheduled, NONE, None),
            (A::Lock, S::DataEntryStarted, STARTED, None),
            (A::Lock, S::Completed, DONE, Some(S::Locked)),
            (A::Lock, S::Signed, DONE, Some(S::Locked)),
            (A::Lock, S::Locked, DONE, None),
            (A::Stop, S::Locked, DONE, None),
            (A::Unlock, S::Completed, DONE, None),
        ];
        for (action, from, facts, expected) in table {
            let got = to(*action, *from, *facts).ok();
            assert_eq!(got, *expected, "{action:?} from {from:?} with {facts:?}");
            assert_ne!(got, Some(S::Scheduled), "manual moves never return to scheduled");
        }
    }

    #[test]
    fn unlock_returns_to_the_status_before_locking() {
        let (locked, remember) = plan(A::Lock, S::Signed, None, DONE).unwrap();
        assert_eq!((locked, remember), (S::Locked, Some(S::Signed)));
        assert_eq!(plan(A::Unlock, S::Locked, remember, DONE).unwrap(), (S::Signed, None));
        assert_eq!(plan(A::Unlock, S::Locked, None, DONE).unwrap().0, S::Completed);
    }

    #[test]
    fn audit_actions_map_to_openclinica_types() {
        assert_eq!(oc_audit_type("event.status_changed", Some("stopped")), Some(20));
        assert_eq!(oc_audit_type("event.status_changed", Some("skipped")), Some(21));
        assert_eq!(oc_audit_type("event.status_changed", Some("locked")), Some(22));
        assert_eq!(oc_audit_type("event.signed", None), Some(31));
        assert_eq!(oc_audit_type("form.sdv_verified", None), Some(32));
        assert_eq!(oc_audit_type("form.sdv_reset", None), Some(32));
        assert_eq!(oc_audit_type("signature.broken", None), None);
    }

    #[test]
    fn the_hash_covers_values_not_their_order() {
        let v = |item: &str, value: &str| SignedValue {
            group: "G".into(),
            row: 1,
            item: item.into(),
            value: Some(value.into()),
            null_flavour: None,
        };
        let event = |values: Vec<SignedValue>| {
            vec![SignedEvent {
                event: "SE_A".into(),
                repeat: 1,
                forms: vec![SignedForm { form: "F_A".into(), form_version: "F_A_V1".into(), values }],
            }]
        };
        let h = |e: Vec<SignedEvent>| data_hash("event", "S", "SS_1", e).unwrap();
        let a = h(event(vec![v("I_X", "1"), v("I_Y", "2")]));
        assert_eq!(a, h(event(vec![v("I_Y", "2"), v("I_X", "1")])));
        assert_ne!(a, h(event(vec![v("I_X", "1"), v("I_Y", "3")])));
        assert_ne!(a, data_hash("casebook", "S", "SS_1", event(vec![v("I_X", "1"), v("I_Y", "2")])).unwrap());
        assert_eq!(a.len(), 64);
    }
}
