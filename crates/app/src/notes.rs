//! Discrepancy notes (queries): threads on an item value, or on a field of a form, an event or a
//! participant; replies that move a thread through its workflow by the rules of each role
//! (`casebook_domain::notes`); lists with filters and a CSV export; a notification e-mail to the
//! assignee queued in the outbox. Every thread and reply is audited in its transaction.

use casebook_domain::audit::AuditEntry;
use casebook_domain::notes::{
    EVENT_COLUMNS, FORM_COLUMNS, NoteStatus, NoteType, PARTICIPANT_COLUMNS, default_reply_status, may_open, may_set,
    transition_problem,
};
use casebook_domain::role::{Permission, Role};
use casebook_store::WriteTx;
use casebook_store::notes::{MessageRow, NewThread, ThreadFilter, ThreadRow};
use casebook_store::studies::StudyRow;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::access::Access;
use crate::auth::Principal;
use crate::{App, AppError};

/// Longest description (the list shows it; OpenClinica 4 allows 2040 characters).
pub const MAX_DESCRIPTION: usize = 2000;
/// Longest detailed note.
pub const MAX_DETAILED: usize = 4000;

fn one() -> i32 {
    1
}

fn one_u32() -> u32 {
    1
}

/// A new thread.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenNoteInput {
    /// The participant's label or OID.
    pub participant: String,
    /// The event OID (for notes on an event field, a form field or an item value).
    #[serde(default)]
    pub event: Option<String>,
    #[serde(default = "one")]
    pub repeat: i32,
    /// The form OID (for notes on a form field or an item value).
    #[serde(default)]
    pub form: Option<String>,
    /// The item OID or name (for notes on a value).
    #[serde(default)]
    pub item: Option<String>,
    /// The row of a repeating group.
    #[serde(default = "one_u32")]
    pub row: u32,
    /// The field, for notes not on an item value: `interview_date`, `interviewer` (form);
    /// `start_date`, `end_date`, `location` (event); `enrolment_date`, `date_of_birth`, `sex`,
    /// `person_id`, `secondary_id` (participant).
    #[serde(default)]
    pub column: Option<String>,
    /// `query`, `failed_validation_check`, `annotation` or `reason_for_change`.
    #[serde(rename = "type")]
    pub note_type: String,
    pub description: String,
    #[serde(default)]
    pub detailed_note: Option<String>,
    /// The username to assign; by default the owner of the annotated form (item and form notes
    /// of the query workflow), else nobody.
    #[serde(default)]
    pub assigned_to: Option<String>,
}

/// A reply to a thread.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyInput {
    pub description: String,
    #[serde(default)]
    pub detailed_note: Option<String>,
    /// The status the thread moves to; by default OpenClinica's pre-selection for the role.
    #[serde(default)]
    pub status: Option<String>,
    /// The username to assign; by default the thread's opener when someone else replies, else
    /// the current assignee.
    #[serde(default)]
    pub assigned_to: Option<String>,
}

/// What a thread list asks for (query parameters).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoteListParams {
    pub site: Option<String>,
    pub participant: Option<String>,
    /// A status, or `open` (new, updated or resolution proposed).
    pub status: Option<String>,
    #[serde(rename = "type")]
    pub note_type: Option<String>,
    /// A username, or `me`.
    pub assignee: Option<String>,
    pub event: Option<String>,
    pub form: Option<String>,
    pub item: Option<String>,
    /// Threads open at least this many days.
    pub min_age_days: Option<i64>,
    /// Threads open at most this many days.
    pub max_age_days: Option<i64>,
    pub offset: Option<i64>,
    pub limit: Option<i64>,
}

/// A thread as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadView {
    pub id: i64,
    /// OpenClinica-style display id (`DN_12`).
    pub display_id: String,
    pub participant: String,
    pub participant_oid: String,
    pub site_oid: String,
    /// `item_data`, `form`, `event` or `participant`.
    pub entity_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_oid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat_key: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub form_oid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_oid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item_oid: Option<String>,
    pub column: String,
    pub entity_key: String,
    #[serde(rename = "type")]
    pub note_type: String,
    pub status: String,
    pub description: String,
    pub owner: Option<String>,
    pub assigned_to: Option<String>,
    pub messages: i32,
    /// Whole days since the thread was opened (to its closing, for closed threads).
    pub days_open: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub closed_at: Option<OffsetDateTime>,
    /// The notes of the thread, oldest first (in single-thread views).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<Vec<MessageView>>,
}

/// One note of a thread.
#[derive(Debug, Clone, Serialize)]
pub struct MessageView {
    pub id: i64,
    pub status: String,
    pub description: String,
    pub detailed_note: Option<String>,
    pub assigned_to: Option<String>,
    pub author: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A page of threads with the counts of the whole selection.
#[derive(Debug, Clone, Serialize)]
pub struct NoteList {
    pub threads: Vec<ThreadView>,
    /// Threads matching the filter, by status.
    pub counts: std::collections::BTreeMap<String, i64>,
    pub total: i64,
    /// The offset of the next page, if there is one.
    pub next_offset: Option<i64>,
}

fn thread_view(t: ThreadRow, now: OffsetDateTime, notes: Option<Vec<MessageRow>>) -> ThreadView {
    let until = t.closed_at.unwrap_or(now);
    ThreadView {
        id: t.id,
        display_id: format!("DN_{}", t.id),
        participant: t.participant_label,
        participant_oid: t.participant_oid,
        site_oid: t.site_oid,
        entity_type: t.entity_type,
        event_oid: t.event_oid,
        repeat_key: t.repeat_key,
        form_oid: t.form_oid,
        group_oid: t.group_oid,
        row: t.row_number,
        item_oid: t.item_oid,
        column: t.column_name,
        entity_key: t.entity_key,
        note_type: t.note_type,
        status: t.status,
        description: t.description,
        owner: t.owner_username,
        assigned_to: t.assignee_username,
        messages: t.messages,
        days_open: (until - t.created_at).whole_days().max(0),
        rule: t.rule_key,
        created_at: t.created_at,
        updated_at: t.updated_at,
        closed_at: t.closed_at,
        notes: notes.map(|m| {
            m.into_iter()
                .map(|m| MessageView {
                    id: m.id,
                    status: m.status,
                    description: m.description,
                    detailed_note: m.detailed_note,
                    assigned_to: m.assignee_username,
                    author: m.author_username,
                    created_at: m.created_at,
                })
                .collect()
        }),
    }
}

/// The role a principal acts in at a participant's site: the study-level role, else the role at
/// that site; administrators act as data managers.
fn role_at(access: &Access, study: &StudyRow, site: &StudyRow) -> Option<Role> {
    access
        .study_role
        .or_else(|| {
            (site.id != study.id)
                .then(|| access.site_roles.iter().find(|(s, _)| *s == site.id).map(|(_, r)| *r))
                .flatten()
        })
        .or(access.admin.then_some(Role::DataManager))
}

fn clean_text(field: &str, text: &str, max: usize, errors: &mut Vec<casebook_domain::FieldError>) -> String {
    let t = text.trim();
    if t.is_empty() {
        errors.push(casebook_domain::FieldError::new(field, "is required"));
    } else if t.chars().count() > max {
        errors.push(casebook_domain::FieldError::new(field, format!("is longer than {max} characters")));
    }
    t.to_owned()
}

fn not_openable(role: Role) -> AppError {
    AppError::Forbidden(match role {
        Role::Monitor => "open this type of note (monitors open queries)",
        _ => "open a query (data managers, study directors and monitors open queries)",
    })
}

fn not_settable(status: NoteStatus) -> AppError {
    AppError::Forbidden(match status {
        NoteStatus::Closed => "close a thread (data managers, study directors and monitors close threads)",
        NoteStatus::New => "set a thread back to new (data managers, study directors and monitors)",
        NoteStatus::ResolutionProposed => {
            "propose a resolution (site staff, data managers and study directors propose resolutions)"
        }
        _ => "set this status",
    })
}

/// Everything needed to write a thread, in one place.
pub(crate) struct ThreadPlace<'a> {
    pub study_id: i64,
    pub site_id: i64,
    pub participant_id: i64,
    pub entity_type: &'a str,
    pub study_event_id: Option<i64>,
    pub form_data_id: Option<i64>,
    pub group_oid: Option<&'a str>,
    pub row: Option<i32>,
    pub item_oid: Option<&'a str>,
    pub column: &'a str,
    pub entity_key: &'a str,
}

/// Opens a thread inside a transaction (the save of a value with a note, a rule, the API), audits
/// it, and queues the assignee's notification. Returns the thread id.
///
/// # Errors
/// Storage failures.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn open_in_tx(
    tx: &mut WriteTx,
    at: &ThreadPlace<'_>,
    note_type: NoteType,
    description: &str,
    detailed_note: Option<&str>,
    assigned_to: Option<(i64, String, String)>,
    rule_key: Option<&str>,
    site_for_audit: Option<i64>,
) -> Result<i64, AppError> {
    let status = note_type.initial_status();
    let id = tx
        .insert_thread(&NewThread {
            study_id: at.study_id,
            site_id: at.site_id,
            participant_id: at.participant_id,
            entity_type: at.entity_type,
            study_event_id: at.study_event_id,
            form_data_id: at.form_data_id,
            group_oid: at.group_oid,
            row_number: at.row,
            item_oid: at.item_oid,
            column_name: at.column,
            entity_key: at.entity_key,
            note_type: note_type.as_str(),
            status: status.as_str(),
            description,
            detailed_note,
            assigned_to: assigned_to.as_ref().map(|a| a.0),
            rule_key,
        })
        .await?;
    tx.audit(
        AuditEntry::new("note.created", "note", format!("{}/DN_{id}", at.entity_key))
            .study(Some(at.study_id), site_for_audit)
            .new_value(serde_json::json!({
                "type": note_type.as_str(), "status": status.as_str(), "column": at.column,
                "description": description, "detailed_note": detailed_note,
                "assigned_to": assigned_to.as_ref().map(|a| a.1.clone()), "rule": rule_key,
            })),
    )
    .await?;
    if let Some((user_id, username, email)) = &assigned_to {
        notify(tx, *user_id, username, email, id, at.entity_key, note_type, status, description).await?;
    }
    Ok(id)
}

#[allow(clippy::too_many_arguments)]
async fn notify(
    tx: &mut WriteTx,
    user_id: i64,
    username: &str,
    email: &str,
    thread_id: i64,
    entity_key: &str,
    note_type: NoteType,
    status: NoteStatus,
    description: &str,
) -> Result<(), AppError> {
    if email.trim().is_empty() || tx.actor().user_id == Some(user_id) {
        return Ok(());
    }
    let subject = format!("[Casebook] {} DN_{thread_id} assigned to you ({})", note_type.label(), status.label());
    let body = format!(
        "Hello {username},\n\n{} DN_{thread_id} on {entity_key} is assigned to you; its status is {}.\n\n{description}\n",
        note_type.label(),
        status.label(),
    );
    tx.enqueue_email(Some(user_id), email, &subject, &body).await?;
    Ok(())
}

impl App {
    /// A user who may be assigned a thread at a site: someone holding a role in the study, or at
    /// that site. Returns (id, username, e-mail).
    async fn assignee(
        &self,
        study: &StudyRow,
        site: &StudyRow,
        username: &str,
    ) -> Result<(i64, String, String), AppError> {
        let user = self
            .store()
            .user_by_username(username.trim())
            .await?
            .filter(|u| u.status == "active")
            .ok_or_else(|| AppError::invalid("assigned_to", format!("there is no active user {username}")))?;
        let holds_role = self
            .store()
            .roles_of_user(user.id)
            .await?
            .iter()
            .any(|r| r.study_id == study.id || (site.id != study.id && r.study_id == site.id));
        if !holds_role {
            return Err(AppError::invalid(
                "assigned_to",
                format!("{} has no role in this study at the participant's site", user.username),
            ));
        }
        Ok((user.id, user.username, user.email))
    }

    /// Opens a thread. Who may open which type follows OpenClinica (monitors open queries; site
    /// staff anything but queries; data managers and study directors anything).
    ///
    /// # Errors
    /// [`AppError::Validation`] naming each wrong field; [`AppError::NotFound`] for an unknown or
    /// invisible participant, event occurrence, form or item; [`AppError::Forbidden`].
    #[allow(clippy::too_many_lines)]
    pub async fn open_note(
        &self,
        who: &Principal,
        study_oid: &str,
        input: OpenNoteInput,
    ) -> Result<ThreadView, AppError> {
        let (study, access, p, site) = self.visible_participant(who, study_oid, &input.participant).await?;
        let role = role_at(&access, &study, &site).ok_or(AppError::Forbidden("write notes here"))?;
        if !Self::may(&access, &study, &site, Permission::WriteNotes) {
            return Err(AppError::Forbidden("write notes here (the study's status does not allow it)"));
        }
        let mut errors = Vec::new();
        let note_type = NoteType::parse(&input.note_type);
        if note_type.is_none() {
            errors.push(casebook_domain::FieldError::new(
                "type",
                format!("'{}' is not query, failed_validation_check, annotation or reason_for_change", input.note_type),
            ));
        }
        let description = clean_text("description", &input.description, MAX_DESCRIPTION, &mut errors);
        let detailed = input.detailed_note.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
        if detailed.as_ref().is_some_and(|d| d.chars().count() > MAX_DETAILED) {
            errors.push(casebook_domain::FieldError::new(
                "detailed_note",
                format!("is longer than {MAX_DETAILED} characters"),
            ));
        }
        let column = input.column.as_deref().map(str::trim).filter(|c| !c.is_empty());
        let level = match (&input.event, &input.form, &input.item) {
            (_, _, Some(_)) => "item_data",
            (_, Some(_), None) => "form",
            (Some(_), None, None) => "event",
            (None, None, None) => "participant",
        };
        let allowed_columns: &[&str] = match level {
            "item_data" => &["value"],
            "form" => &FORM_COLUMNS,
            "event" => &EVENT_COLUMNS,
            _ => &PARTICIPANT_COLUMNS,
        };
        let column = match column {
            None if level == "item_data" => "value",
            Some(c) if allowed_columns.contains(&c) => c,
            other => {
                errors.push(casebook_domain::FieldError::new(
                    "column",
                    format!(
                        "{} a note on {} needs one of: {}",
                        other.map_or_else(String::new, |c| format!("'{c}' is not a field here;")),
                        level.replace('_', " "),
                        allowed_columns.join(", ")
                    ),
                ));
                "value"
            }
        };
        if (input.item.is_some() || input.form.is_some()) && input.event.is_none() {
            errors.push(casebook_domain::FieldError::new("event", "a note on a form or a value names its event"));
        }
        if input.item.is_some() && input.form.is_none() {
            errors.push(casebook_domain::FieldError::new("form", "a note on a value names its form"));
        }
        let Some(note_type) = note_type else { return Err(AppError::Validation(errors)) };
        if !errors.is_empty() {
            return Err(AppError::Validation(errors));
        }
        if !may_open(role, note_type) {
            return Err(not_openable(role));
        }

        // The annotated record.
        let mut event = None;
        let mut form = None;
        let mut item_slot: Option<(String, i32, String)> = None;
        if let Some(event_oid) = &input.event {
            let e = self
                .store()
                .study_events(p.id)
                .await?
                .into_iter()
                .find(|e| &e.event_oid == event_oid && e.repeat_key == input.repeat)
                .ok_or(AppError::NotFound("event occurrence"))?;
            event = Some(e);
        }
        if let (Some(e), Some(form_oid)) = (&event, &input.form) {
            let (_, design) = self.production_design(study.id).await?;
            let hidden = design
                .event(&e.event_oid)
                .and_then(|d| d.forms.iter().find(|f| f.form_oid.as_str() == form_oid))
                .is_some_and(|f| site.id != study.id && !access.study_wide() && f.hidden_at(Some(site.oid.as_str())));
            let f = self
                .store()
                .forms_of_event_id(e.id)
                .await?
                .into_iter()
                .find(|f| &f.form_oid == form_oid)
                .filter(|_| !hidden)
                .ok_or(AppError::NotFound("started form"))?;
            if let Some(item) = &input.item {
                let (_, version) =
                    design.form_version(&f.form_version_oid).ok_or(AppError::NotFound("form version"))?;
                let def = version
                    .items
                    .iter()
                    .find(|i| i.oid.as_str() == item || i.name == *item)
                    .ok_or(AppError::NotFound("item in this form version"))?;
                let group = version.groups.iter().find(|g| g.oid == def.group_oid);
                let row = i32::try_from(input.row).unwrap_or(i32::MAX);
                if input.row == 0
                    || (input.row > 1 && !group.is_some_and(casebook_domain::design::ItemGroup::is_repeating))
                {
                    return Err(AppError::invalid("row", format!("{} has no row {}", def.oid, input.row)));
                }
                item_slot = Some((def.group_oid.to_string(), row, def.oid.to_string()));
            }
            form = Some(f);
        }
        let assigned = match input.assigned_to.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            Some(u) => Some(self.assignee(&study, &site, u).await?),
            None if note_type.has_workflow() => match form.as_ref().and_then(|f| f.owner_id) {
                Some(owner) => self
                    .store()
                    .user_by_id(owner)
                    .await?
                    .filter(|u| u.status == "active")
                    .map(|u| (u.id, u.username, u.email)),
                None => None,
            },
            None => None,
        };

        let mut key = p.oid.clone();
        if let Some(e) = &event {
            key = format!("{key}/{}[{}]", e.event_oid, e.repeat_key);
        }
        if let Some(f) = &form {
            key = format!("{key}/{}", f.form_oid);
        }
        if let Some((g, r, i)) = &item_slot {
            key = format!("{key}/{g}[{r}]/{i}");
        } else {
            key = format!("{key}/{column}");
        }
        let site_id = (site.id != study.id).then_some(site.id);
        let mut tx = self.store().write(who.actor()).await?;
        let id = open_in_tx(
            &mut tx,
            &ThreadPlace {
                study_id: study.id,
                site_id: site.id,
                participant_id: p.id,
                entity_type: level,
                study_event_id: event.as_ref().map(|e| e.id),
                form_data_id: form.as_ref().map(|f| f.id),
                group_oid: item_slot.as_ref().map(|s| s.0.as_str()),
                row: item_slot.as_ref().map(|s| s.1),
                item_oid: item_slot.as_ref().map(|s| s.2.as_str()),
                column,
                entity_key: &key,
            },
            note_type,
            &description,
            detailed.as_deref(),
            assigned,
            None,
            site_id,
        )
        .await?;
        tx.commit().await?;
        self.note(who, study_oid, id).await
    }

    /// Replies to a thread, moving it to a status (by default the role's usual next step) and an
    /// assignee.
    ///
    /// # Errors
    /// [`AppError::NotFound`] for a thread the principal cannot see; [`AppError::Forbidden`] for
    /// a status the role may not set; [`AppError::InvalidTransition`] for a move the workflow
    /// does not allow (such as a site user replying to a closed thread); validation errors.
    pub async fn reply_to_note(
        &self,
        who: &Principal,
        study_oid: &str,
        id: i64,
        input: ReplyInput,
    ) -> Result<ThreadView, AppError> {
        let (study, access) = self.study_with_access(who, study_oid).await?;
        let head = self.store().thread(study.id, id).await?.ok_or(AppError::NotFound("note"))?;
        if !access.sees_site(head.site_id) {
            return Err(AppError::NotFound("note"));
        }
        let site = self.store().study_by_id(head.site_id).await?.ok_or(AppError::NotFound("site"))?;
        let role = role_at(&access, &study, &site).ok_or(AppError::Forbidden("write notes here"))?;
        if !Self::may(&access, &study, &site, Permission::WriteNotes) {
            return Err(AppError::Forbidden("write notes here (the study's status does not allow it)"));
        }
        let mut errors = Vec::new();
        let description = clean_text("description", &input.description, MAX_DESCRIPTION, &mut errors);
        let detailed = input.detailed_note.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
        if detailed.as_ref().is_some_and(|d| d.chars().count() > MAX_DETAILED) {
            errors.push(casebook_domain::FieldError::new(
                "detailed_note",
                format!("is longer than {MAX_DETAILED} characters"),
            ));
        }
        let asked = match input.status.as_deref() {
            None => None,
            Some(s) => match NoteStatus::parse(s) {
                Some(st) => Some(st),
                None => {
                    errors.push(casebook_domain::FieldError::new(
                        "status",
                        format!("'{s}' is not new, updated, resolution_proposed, closed or not_applicable"),
                    ));
                    None
                }
            },
        };
        if !errors.is_empty() {
            return Err(AppError::Validation(errors));
        }
        let assigned = match input.assigned_to.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            Some(u) => Some(Some(self.assignee(&study, &site, u).await?)),
            None => None,
        };

        let mut tx = self.store().write(who.actor()).await?;
        let head = tx.lock_thread(study.id, id).await?.ok_or(AppError::NotFound("note"))?;
        let note_type = NoteType::parse(&head.note_type).unwrap_or(NoteType::Annotation);
        let current = NoteStatus::parse(&head.status).unwrap_or(NoteStatus::NotApplicable);
        let to = asked.unwrap_or_else(|| default_reply_status(role, note_type, current));
        if let Some(why) = transition_problem(role, note_type, current, to) {
            return Err(AppError::InvalidTransition(why));
        }
        if !may_set(role, to) {
            return Err(not_settable(to));
        }
        // By default a reply goes back to the opener, unless the opener is the one replying.
        let assignee: Option<(i64, String, String)> = match assigned {
            Some(a) => a,
            None if !note_type.has_workflow() => None,
            None if head.owner_id.is_some() && head.owner_id != Some(who.user_id) => {
                match self.store().user_by_id(head.owner_id.unwrap_or_default()).await? {
                    Some(u) if u.status == "active" => Some((u.id, u.username, u.email)),
                    _ => None,
                }
            }
            None => match head.assigned_to {
                Some(a) => self.store().user_by_id(a).await?.map(|u| (u.id, u.username, u.email)),
                None => None,
            },
        };
        tx.reply_to_thread(id, to.as_str(), &description, detailed.as_deref(), assignee.as_ref().map(|a| a.0)).await?;
        let site_id = (site.id != study.id).then_some(site.id);
        tx.audit(
            AuditEntry::new("note.replied", "note", format!("{}/DN_{id}", head.entity_key))
                .study(Some(study.id), site_id)
                .old(serde_json::json!({ "status": head.status, "assigned_to": head.assignee_username }))
                .new_value(serde_json::json!({
                    "status": to.as_str(), "assigned_to": assignee.as_ref().map(|a| a.1.clone()),
                    "description": description, "detailed_note": detailed,
                })),
        )
        .await?;
        if let Some((uid, uname, email)) = &assignee {
            notify(&mut tx, *uid, uname, email, id, &head.entity_key, note_type, to, &description).await?;
        }
        tx.commit().await?;
        self.note(who, study_oid, id).await
    }

    /// One thread with its notes.
    ///
    /// # Errors
    /// [`AppError::NotFound`] when missing or at a site the principal cannot see.
    pub async fn note(&self, who: &Principal, study_oid: &str, id: i64) -> Result<ThreadView, AppError> {
        let (study, access) = self.study_with_access(who, study_oid).await?;
        let head = self.store().thread(study.id, id).await?.ok_or(AppError::NotFound("note"))?;
        if !access.sees_site(head.site_id) {
            return Err(AppError::NotFound("note"));
        }
        if !access.study_wide()
            && let (Some(event), Some(form)) = (&head.event_oid, &head.form_oid)
            && self
                .hidden_forms_by_site(study.id, &[head.site_id])
                .await?
                .get(&head.site_id)
                .is_some_and(|h| h.contains(&format!("|{event}/{form}|")))
        {
            return Err(AppError::NotFound("note"));
        }
        let messages = self.store().thread_messages(id).await?;
        Ok(thread_view(head, self.store().clock().now(), Some(messages)))
    }

    /// Threads of a study, filtered; site-level users see their sites' threads only.
    ///
    /// # Errors
    /// [`AppError::Validation`] naming each wrong parameter.
    pub async fn notes(&self, who: &Principal, study_oid: &str, params: &NoteListParams) -> Result<NoteList, AppError> {
        let (study, access) = self.study_with_access(who, study_oid).await?;
        let filter = self.note_filter(who, &study, &access, params).await?;
        let now = self.store().clock().now();
        let rows = self.store().threads(&filter).await?;
        let counts: std::collections::BTreeMap<String, i64> =
            self.store().thread_counts(&filter).await?.into_iter().collect();
        let total: i64 = counts.values().sum();
        let next = filter.offset + filter.limit;
        Ok(NoteList {
            threads: rows.into_iter().map(|t| thread_view(t, now, None)).collect(),
            counts,
            total,
            next_offset: (next < total).then_some(next),
        })
    }

    /// The filtered threads as CSV (every page), for a spreadsheet.
    ///
    /// # Errors
    /// As [`App::notes`].
    pub async fn notes_csv(
        &self,
        who: &Principal,
        study_oid: &str,
        params: &NoteListParams,
    ) -> Result<String, AppError> {
        let (study, access) = self.study_with_access(who, study_oid).await?;
        let mut filter = self.note_filter(who, &study, &access, params).await?;
        filter.offset = 0;
        filter.limit = i64::MAX / 4;
        let now = self.store().clock().now();
        let mut out = String::from(
            "id,participant,site,entity_type,event,repeat,form,group,row,item,column,type,status,description,owner,assigned_to,days_open,notes,created_at,updated_at,closed_at\r\n",
        );
        for t in self.store().threads(&filter).await? {
            let v = thread_view(t, now, None);
            let fields = [
                v.display_id,
                v.participant,
                v.site_oid,
                v.entity_type,
                v.event_oid.unwrap_or_default(),
                v.repeat_key.map(|r| r.to_string()).unwrap_or_default(),
                v.form_oid.unwrap_or_default(),
                v.group_oid.unwrap_or_default(),
                v.row.map(|r| r.to_string()).unwrap_or_default(),
                v.item_oid.unwrap_or_default(),
                v.column,
                v.note_type,
                v.status,
                v.description,
                v.owner.unwrap_or_default(),
                v.assigned_to.unwrap_or_default(),
                v.days_open.to_string(),
                v.messages.to_string(),
                rfc3339(v.created_at),
                rfc3339(v.updated_at),
                v.closed_at.map(rfc3339).unwrap_or_default(),
            ];
            out.push_str(&fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
            out.push_str("\r\n");
        }
        Ok(out)
    }

    /// For each of these sites, the forms of the design in Production hidden from the site's
    /// staff, as `|EVENT_OID/FORM_OID|…|` (sites hiding nothing are left out): site staff do not
    /// see threads on them.
    async fn hidden_forms_by_site(
        &self,
        study_id: i64,
        site_ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, String>, AppError> {
        let mut out = std::collections::HashMap::new();
        let Some((_, design)) = self.production_design_opt(study_id).await? else {
            return Ok(out);
        };
        for site in self.store().sites_of(study_id).await?.into_iter().filter(|s| site_ids.contains(&s.id)) {
            let mut hidden = String::new();
            for event in &design.events {
                for ef in event.forms.iter().filter(|ef| ef.hidden_at(Some(&site.oid))) {
                    hidden.push_str(&format!("|{}/{}", event.oid.as_str(), ef.form_oid.as_str()));
                }
            }
            if !hidden.is_empty() {
                hidden.push('|');
                out.insert(site.id, hidden);
            }
        }
        Ok(out)
    }

    async fn note_filter(
        &self,
        who: &Principal,
        study: &StudyRow,
        access: &Access,
        params: &NoteListParams,
    ) -> Result<ThreadFilter, AppError> {
        let mut errors = Vec::new();
        let text = |v: &Option<String>| v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
        let now = self.store().clock().now();
        let mut filter = ThreadFilter {
            study_id: study.id,
            site_ids: (!access.study_wide()).then(|| access.site_roles.iter().map(|(s, _)| *s).collect()),
            offset: params.offset.unwrap_or(0).max(0),
            limit: params.limit.unwrap_or(50),
            event_oid: text(&params.event),
            form_oid: text(&params.form),
            item_oid: text(&params.item),
            ..ThreadFilter::default()
        };
        if let Some(sites) = &filter.site_ids {
            filter.hidden_forms = self.hidden_forms_by_site(study.id, sites).await?;
        }
        if !(1..=500).contains(&filter.limit) {
            errors.push(casebook_domain::FieldError::new("limit", "must be between 1 and 500"));
        }
        if let Some(site) = text(&params.site) {
            match self.store().study_by_oid(&site).await?.filter(|s| s.parent_id == Some(study.id)) {
                Some(s) => filter.site_id = Some(s.id),
                None => {
                    errors.push(casebook_domain::FieldError::new("site", format!("{site} is not a site of this study")))
                }
            }
        }
        if let Some(label) = text(&params.participant) {
            match self.store().participant(study.id, &label).await? {
                Some(p) if access.sees_site(p.site_id) => filter.participant_id = Some(p.id),
                _ => errors.push(casebook_domain::FieldError::new("participant", format!("no participant {label}"))),
            }
        }
        match text(&params.status).as_deref() {
            None => {}
            Some("open") => filter.open_only = true,
            Some(s) => match NoteStatus::parse(s) {
                Some(st) => filter.status = Some(st.as_str().to_owned()),
                None => errors.push(casebook_domain::FieldError::new(
                    "status",
                    format!("'{s}' is not open, new, updated, resolution_proposed, closed or not_applicable"),
                )),
            },
        }
        if let Some(t) = text(&params.note_type) {
            match NoteType::parse(&t) {
                Some(nt) => filter.note_type = Some(nt.as_str().to_owned()),
                None => errors.push(casebook_domain::FieldError::new(
                    "type",
                    format!("'{t}' is not query, failed_validation_check, annotation or reason_for_change"),
                )),
            }
        }
        if let Some(a) = text(&params.assignee) {
            if a == "me" {
                filter.assigned_to = Some(who.user_id);
            } else {
                match self.store().user_by_username(&a).await? {
                    Some(u) => filter.assigned_to = Some(u.id),
                    None => errors.push(casebook_domain::FieldError::new("assignee", format!("there is no user {a}"))),
                }
            }
        }
        for (field, days) in [("min_age_days", params.min_age_days), ("max_age_days", params.max_age_days)] {
            if let Some(d) = days {
                if !(0..=36_500).contains(&d) {
                    errors.push(casebook_domain::FieldError::new(field, "must be between 0 and 36500"));
                    continue;
                }
                let at = now - time::Duration::days(d);
                if field == "min_age_days" {
                    filter.created_before = Some(at);
                } else {
                    filter.created_after = Some(at);
                }
            }
        }
        if !errors.is_empty() {
            return Err(AppError::Validation(errors));
        }
        Ok(filter)
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// One CSV field (RFC 4180), with formula-looking text defused for spreadsheets.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) { format!("'{s}") } else { s.to_owned() };
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s }
}

/// A notification as administrators see it.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxView {
    pub id: i64,
    pub kind: String,
    pub to: String,
    pub subject: String,
    pub body: String,
    /// `queued` (kept until a mail server is configured), `sent` or `failed`.
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub sent_at: Option<OffsetDateTime>,
}

impl App {
    /// The newest 500 notifications (administrators only): nothing is lost while no mail server
    /// is configured, and what was sent stays visible.
    ///
    /// # Errors
    /// [`AppError::Forbidden`] for anyone but administrators.
    pub async fn outbox(&self, who: &Principal) -> Result<Vec<OutboxView>, AppError> {
        if !who.user_type.is_admin() {
            return Err(AppError::Forbidden("read the notification outbox (administrators)"));
        }
        Ok(self
            .store()
            .outbox(500)
            .await?
            .into_iter()
            .map(|o| OutboxView {
                id: o.id,
                kind: o.kind,
                to: o.to_address,
                subject: o.subject,
                body: o.body,
                status: o.status,
                attempts: o.attempts,
                last_error: o.last_error,
                created_at: o.created_at,
                sent_at: o.sent_at,
            })
            .collect())
    }
}
