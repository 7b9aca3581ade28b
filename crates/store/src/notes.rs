//! Discrepancy note threads and their messages, and the outbox of notifications.
//!
//! A thread row is the head the lists show (type, status, assignee, latest change); every note,
//! the first included, is an immutable message row. `lock_thread` takes a row lock on PostgreSQL
//! so that two replies to one thread serialise; SQLite's `BEGIN IMMEDIATE` already does.

use time::OffsetDateTime;

use crate::db::{Db, StoreError};
use crate::tx::Tx;
use crate::{Store, WriteTx};

/// A thread as lists and views show it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ThreadRow {
    pub id: i64,
    pub study_id: i64,
    pub site_id: i64,
    pub site_oid: String,
    pub participant_id: i64,
    pub participant_label: String,
    pub participant_oid: String,
    pub entity_type: String,
    pub study_event_id: Option<i64>,
    pub event_oid: Option<String>,
    pub repeat_key: Option<i32>,
    pub form_data_id: Option<i64>,
    pub form_oid: Option<String>,
    pub group_oid: Option<String>,
    pub row_number: Option<i32>,
    pub item_oid: Option<String>,
    pub column_name: String,
    pub entity_key: String,
    pub note_type: String,
    pub status: String,
    pub description: String,
    pub owner_id: Option<i64>,
    pub owner_username: Option<String>,
    pub assigned_to: Option<i64>,
    pub assignee_username: Option<String>,
    pub rule_key: Option<String>,
    pub messages: i32,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub closed_at: Option<OffsetDateTime>,
}

macro_rules! thread_select {
    ($($tail:tt)*) => {
        concat!(
            "SELECT t.id, t.study_id, p.site_id, s.oid AS site_oid, t.participant_id, p.label AS participant_label, \
             p.oid AS participant_oid, t.entity_type, t.study_event_id, e.event_oid, e.repeat_key, t.form_data_id, \
             f.form_oid, t.group_oid, t.row_number, t.item_oid, t.column_name, t.entity_key, t.note_type, t.status, \
             t.description, t.owner_id, ou.username AS owner_username, t.assigned_to, au.username AS assignee_username, \
             t.rule_key, t.messages, t.created_at, t.updated_at, t.closed_at \
             FROM note_threads t JOIN participants p ON p.id = t.participant_id JOIN studies s ON s.id = p.site_id \
             LEFT JOIN study_events e ON e.id = t.study_event_id LEFT JOIN form_data f ON f.id = t.form_data_id \
             LEFT JOIN users ou ON ou.id = t.owner_id LEFT JOIN users au ON au.id = t.assigned_to ",
            $($tail)*
        )
    };
}

/// One note of a thread.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MessageRow {
    pub id: i64,
    pub thread_id: i64,
    pub status: String,
    pub description: String,
    pub detailed_note: Option<String>,
    pub assigned_to: Option<i64>,
    pub assignee_username: Option<String>,
    pub created_at: OffsetDateTime,
    pub created_by: Option<i64>,
    pub author_username: Option<String>,
}

/// A thread to open.
#[derive(Debug, Clone)]
pub struct NewThread<'a> {
    pub study_id: i64,
    pub site_id: i64,
    pub participant_id: i64,
    pub entity_type: &'a str,
    pub study_event_id: Option<i64>,
    pub form_data_id: Option<i64>,
    pub group_oid: Option<&'a str>,
    pub row_number: Option<i32>,
    pub item_oid: Option<&'a str>,
    pub column_name: &'a str,
    pub entity_key: &'a str,
    pub note_type: &'a str,
    pub status: &'a str,
    pub description: &'a str,
    pub detailed_note: Option<&'a str>,
    pub assigned_to: Option<i64>,
    pub rule_key: Option<&'a str>,
}

/// What a thread list selects. `None` selects everything on that axis.
#[derive(Debug, Clone, Default)]
pub struct ThreadFilter {
    pub study_id: i64,
    /// Only threads of participants at these sites (site-level users); `None`: every site.
    pub site_ids: Option<Vec<i64>>,
    /// One site (a filter the user asked for).
    pub site_id: Option<i64>,
    pub participant_id: Option<i64>,
    pub status: Option<String>,
    /// New, Updated or Resolution Proposed.
    pub open_only: bool,
    pub note_type: Option<String>,
    pub assigned_to: Option<i64>,
    pub event_oid: Option<String>,
    pub form_oid: Option<String>,
    pub item_oid: Option<String>,
    /// Threads created at or before this time (age filter).
    pub created_before: Option<OffsetDateTime>,
    /// Threads created at or after this time.
    pub created_after: Option<OffsetDateTime>,
    /// Per site (site-level users), the forms hidden from that site's staff, as
    /// `|EVENT_OID/FORM_OID|…|`: their threads are not listed.
    pub hidden_forms: std::collections::HashMap<i64, String>,
    pub offset: i64,
    pub limit: i64,
}

/// A queued (or sent) notification.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub kind: String,
    pub to_user_id: Option<i64>,
    pub to_address: String,
    pub subject: String,
    pub body: String,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: OffsetDateTime,
    pub sent_at: Option<OffsetDateTime>,
}

/// The shared WHERE clause of lists and counts ($1 study … $12 created_after, $13 the forms
/// hidden from the site as `|EVENT/FORM|…|`: `replace` and `length` mean the same in both
/// dialects, where a list parameter would not).
macro_rules! thread_where {
    ($tail:literal) => {
        concat!(
            "WHERE t.study_id = $1 AND ($2 IS NULL OR p.site_id = $2) AND ($3 IS NULL OR t.participant_id = $3) \
             AND ($4 IS NULL OR t.status = $4) AND ($5 = FALSE OR t.status IN ('new', 'updated', 'resolution_proposed')) \
             AND ($6 IS NULL OR t.note_type = $6) AND ($7 IS NULL OR t.assigned_to = $7) \
             AND ($8 IS NULL OR e.event_oid = $8) AND ($9 IS NULL OR f.form_oid = $9) AND ($10 IS NULL OR t.item_oid = $10) \
             AND ($11 IS NULL OR t.created_at <= $11) AND ($12 IS NULL OR t.created_at >= $12) \
             AND ($13 IS NULL OR t.form_data_id IS NULL \
                  OR replace($13, '|' || e.event_oid || '/' || f.form_oid || '|', '') = $13) ",
            $tail
        )
    };
}

macro_rules! bind_filter {
    ($q:expr, $f:expr, $site:expr) => {
        $q.bind($f.study_id)
            .bind($site)
            .bind($f.participant_id)
            .bind($f.status.as_deref())
            .bind($f.open_only)
            .bind($f.note_type.as_deref())
            .bind($f.assigned_to)
            .bind($f.event_oid.as_deref())
            .bind($f.form_oid.as_deref())
            .bind($f.item_oid.as_deref())
            .bind($f.created_before)
            .bind($f.created_after)
            .bind($site.and_then(|s: i64| $f.hidden_forms.get(&s)).map(String::as_str))
    };
}

impl Store {
    /// A thread of a study.
    ///
    /// # Errors
    /// On database failure.
    pub async fn thread(&self, study_id: i64, id: i64) -> Result<Option<ThreadRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(thread_select!("WHERE t.study_id = $1 AND t.id = $2"))
            .bind(study_id).bind(id).fetch_optional(p).await?))
    }

    /// The notes of a thread, oldest first.
    ///
    /// # Errors
    /// On database failure.
    pub async fn thread_messages(&self, thread_id: i64) -> Result<Vec<MessageRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(
            "SELECT m.id, m.thread_id, m.status, m.description, m.detailed_note, m.assigned_to, \
             au.username AS assignee_username, m.created_at, m.created_by, cu.username AS author_username \
             FROM note_messages m LEFT JOIN users au ON au.id = m.assigned_to LEFT JOIN users cu ON cu.id = m.created_by \
             WHERE m.thread_id = $1 ORDER BY m.id")
            .bind(thread_id).fetch_all(p).await?))
    }

    /// Threads matching a filter, oldest first, one page; with site-limited users the query runs
    /// once per visible site (a site user holds roles at few sites).
    ///
    /// # Errors
    /// On database failure.
    pub async fn threads(&self, f: &ThreadFilter) -> Result<Vec<ThreadRow>, StoreError> {
        let sites = visible_sites(f);
        let mut out = Vec::new();
        for site in sites {
            let rows: Vec<ThreadRow> = on_db!(self.db(), p => bind_filter!(
                sqlx::query_as(thread_select!(thread_where!("ORDER BY t.id LIMIT $14 OFFSET $15"))), f, site)
                .bind(f.limit + f.offset).bind(0_i64).fetch_all(p).await?);
            out.extend(rows);
        }
        out.sort_by_key(|t| t.id);
        Ok(out
            .into_iter()
            .skip(usize::try_from(f.offset).unwrap_or(0))
            .take(usize::try_from(f.limit).unwrap_or(0))
            .collect())
    }

    /// How many threads match a filter, by status (offset and limit ignored).
    ///
    /// # Errors
    /// On database failure.
    pub async fn thread_counts(&self, f: &ThreadFilter) -> Result<Vec<(String, i64)>, StoreError> {
        let mut counts: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
        for site in visible_sites(f) {
            let rows: Vec<(String, i64)> = on_db!(self.db(), p => bind_filter!(
                sqlx::query_as(concat!(
                    "SELECT t.status, COUNT(*) FROM note_threads t JOIN participants p ON p.id = t.participant_id \
                     LEFT JOIN study_events e ON e.id = t.study_event_id LEFT JOIN form_data f ON f.id = t.form_data_id ",
                    thread_where!("GROUP BY t.status"))), f, site)
                .fetch_all(p).await?);
            for (s, n) in rows {
                *counts.entry(s).or_default() += n;
            }
        }
        Ok(counts.into_iter().collect())
    }

    /// Open threads (new, updated, resolution proposed) of each of these participants that has
    /// any (the matrix's flags).
    ///
    /// # Errors
    /// On database failure.
    pub async fn open_threads_of(&self, participant_ids: &[i64]) -> Result<Vec<(i64, i64)>, StoreError> {
        if participant_ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(match self.db() {
            Db::Sqlite(p) => {
                sqlx::query_as(
                    "SELECT participant_id, COUNT(*) FROM note_threads \
                     WHERE status IN ('new', 'updated', 'resolution_proposed') \
                     AND participant_id IN (SELECT value FROM json_each($1)) GROUP BY participant_id",
                )
                .bind(crate::matrix::json_ids(participant_ids))
                .fetch_all(p)
                .await?
            }
            Db::Postgres(p) => {
                sqlx::query_as(
                    "SELECT participant_id, COUNT(*) FROM note_threads \
                     WHERE status IN ('new', 'updated', 'resolution_proposed') \
                     AND participant_id = ANY($1) GROUP BY participant_id",
                )
                .bind(participant_ids.to_vec())
                .fetch_all(p)
                .await?
            }
        })
    }

    /// Queued notifications, oldest first.
    ///
    /// # Errors
    /// On database failure.
    pub async fn queued_outbox(&self, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(
            "SELECT id, kind, to_user_id, to_address, subject, body, status, attempts, last_error, created_at, sent_at \
             FROM outbox WHERE status = 'queued' ORDER BY id LIMIT $1")
            .bind(limit).fetch_all(p).await?))
    }

    /// Records that a notification was handed to the mail relay (delivery bookkeeping, not a
    /// change of record: not audited).
    ///
    /// # Errors
    /// On database failure.
    pub async fn outbox_sent(&self, id: i64, at: OffsetDateTime) -> Result<(), StoreError> {
        on_db!(self.db(), p => sqlx::query(
            "UPDATE outbox SET status = 'sent', attempts = attempts + 1, sent_at = $1, last_error = NULL WHERE id = $2")
            .bind(at).bind(id).execute(p).await?.rows_affected());
        Ok(())
    }

    /// Records a failed attempt; `last` marks the message failed for good.
    ///
    /// # Errors
    /// On database failure.
    pub async fn outbox_failed(&self, id: i64, error: &str, last: bool) -> Result<(), StoreError> {
        let status = if last { "failed" } else { "queued" };
        on_db!(self.db(), p => sqlx::query(
            "UPDATE outbox SET status = $1, attempts = attempts + 1, last_error = $2 WHERE id = $3")
            .bind(status).bind(error).bind(id).execute(p).await?.rows_affected());
        Ok(())
    }

    /// Notifications, newest first.
    ///
    /// # Errors
    /// On database failure.
    pub async fn outbox(&self, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(
            "SELECT id, kind, to_user_id, to_address, subject, body, status, attempts, last_error, created_at, sent_at \
             FROM outbox ORDER BY id DESC LIMIT $1")
            .bind(limit).fetch_all(p).await?))
    }
}

/// The site filters to run: the one asked for (if visible), else each visible site, else all.
fn visible_sites(f: &ThreadFilter) -> Vec<Option<i64>> {
    match (&f.site_ids, f.site_id) {
        (None, s) => vec![s],
        (Some(ids), Some(s)) => {
            if ids.contains(&s) {
                vec![Some(s)]
            } else {
                Vec::new()
            }
        }
        (Some(ids), None) => ids.iter().copied().map(Some).collect(),
    }
}

impl WriteTx {
    /// Opens a thread with its first note (status and assignee as given); returns its id.
    ///
    /// # Errors
    /// On database failure (including a second open thread for the same `rule_key`).
    pub async fn insert_thread(&mut self, t: &NewThread<'_>) -> Result<i64, StoreError> {
        let now = self.now();
        let by = self.actor().user_id;
        let id: i64 = on_tx!(self, c => sqlx::query_scalar(
            "INSERT INTO note_threads (study_id, site_id, participant_id, entity_type, study_event_id, form_data_id, \
             group_oid, row_number, item_oid, column_name, entity_key, note_type, status, description, owner_id, \
             assigned_to, rule_key, messages, created_at, updated_at, closed_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, 1, $18, $18, NULL) \
             RETURNING id")
            .bind(t.study_id).bind(t.site_id).bind(t.participant_id).bind(t.entity_type).bind(t.study_event_id)
            .bind(t.form_data_id).bind(t.group_oid).bind(t.row_number).bind(t.item_oid).bind(t.column_name)
            .bind(t.entity_key).bind(t.note_type).bind(t.status).bind(t.description).bind(by).bind(t.assigned_to)
            .bind(t.rule_key).bind(now).fetch_one(c).await?);
        self.insert_message(id, t.status, t.description, t.detailed_note, t.assigned_to).await?;
        Ok(id)
    }

    async fn insert_message(
        &mut self,
        thread_id: i64,
        status: &str,
        description: &str,
        detailed_note: Option<&str>,
        assigned_to: Option<i64>,
    ) -> Result<i64, StoreError> {
        let now = self.now();
        let by = self.actor().user_id;
        Ok(on_tx!(self, c => sqlx::query_scalar(
            "INSERT INTO note_messages (thread_id, status, description, detailed_note, assigned_to, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id")
            .bind(thread_id).bind(status).bind(description).bind(detailed_note).bind(assigned_to).bind(now).bind(by)
            .fetch_one(c).await?))
    }

    /// Adds a reply and moves the thread's head to its status and assignee; returns the note id.
    ///
    /// # Errors
    /// On database failure.
    pub async fn reply_to_thread(
        &mut self,
        thread_id: i64,
        status: &str,
        description: &str,
        detailed_note: Option<&str>,
        assigned_to: Option<i64>,
    ) -> Result<i64, StoreError> {
        let id = self.insert_message(thread_id, status, description, detailed_note, assigned_to).await?;
        let now = self.now();
        let closed = (status == "closed").then_some(now);
        on_tx!(self, c => sqlx::query(
            "UPDATE note_threads SET status = $1, assigned_to = $2, messages = messages + 1, updated_at = $3, \
             closed_at = $4 WHERE id = $5")
            .bind(status).bind(assigned_to).bind(now).bind(closed).bind(thread_id).execute(c).await?.rows_affected());
        Ok(id)
    }

    /// A thread, locked for the rest of the transaction.
    ///
    /// # Errors
    /// On database failure.
    pub async fn lock_thread(&mut self, study_id: i64, id: i64) -> Result<Option<ThreadRow>, StoreError> {
        Ok(match &mut self.tx {
            Tx::Sqlite(t) => {
                sqlx::query_as(thread_select!("WHERE t.study_id = $1 AND t.id = $2"))
                    .bind(study_id)
                    .bind(id)
                    .fetch_optional(&mut **t)
                    .await?
            }
            Tx::Postgres(t) => {
                sqlx::query_as(thread_select!("WHERE t.study_id = $1 AND t.id = $2 FOR UPDATE OF t"))
                    .bind(study_id)
                    .bind(id)
                    .fetch_optional(&mut **t)
                    .await?
            }
        })
    }

    /// The open thread a rule fired for a target, if any (so a rule firing again on the same data
    /// does not open a second one).
    ///
    /// # Errors
    /// On database failure.
    pub async fn open_rule_thread(&mut self, rule_key: &str) -> Result<Option<i64>, StoreError> {
        Ok(on_tx!(self, c => sqlx::query_scalar(
            "SELECT id FROM note_threads WHERE rule_key = $1 AND status <> 'closed'")
            .bind(rule_key).fetch_optional(c).await?))
    }

    /// Queues a notification e-mail.
    ///
    /// # Errors
    /// On database failure.
    pub async fn enqueue_email(
        &mut self,
        to_user_id: Option<i64>,
        to_address: &str,
        subject: &str,
        body: &str,
    ) -> Result<i64, StoreError> {
        let now = self.now();
        Ok(on_tx!(self, c => sqlx::query_scalar(
            "INSERT INTO outbox (kind, to_user_id, to_address, subject, body, status, attempts, created_at) \
             VALUES ('email', $1, $2, $3, $4, 'queued', 0, $5) RETURNING id")
            .bind(to_user_id).bind(to_address).bind(subject).bind(body).bind(now).fetch_one(c).await?))
    }

    /// An active user's id, username and e-mail (to assign a note and notify them).
    ///
    /// # Errors
    /// On database failure.
    pub async fn user_contact(&mut self, id: i64) -> Result<Option<(i64, String, String)>, StoreError> {
        Ok(on_tx!(self, c => sqlx::query_as(
            "SELECT id, username, email FROM users WHERE id = $1 AND status = 'active'")
            .bind(id).fetch_optional(c).await?))
    }
}

impl WriteTx {
    /// Whether a participant already has a thread on this record and field of this type whose
    /// first message says this (an import does not open it twice).
    ///
    /// # Errors
    /// On database failure.
    pub async fn thread_exists(
        &mut self,
        participant_id: i64,
        entity_key: &str,
        note_type: &str,
        description: &str,
    ) -> Result<bool, StoreError> {
        let found: Option<(i64,)> = on_tx!(self, c => sqlx::query_as(
            "SELECT id FROM note_threads WHERE participant_id = $1 AND entity_key = $2 AND note_type = $3 \
             AND description = $4 LIMIT 1")
            .bind(participant_id).bind(entity_key).bind(note_type).bind(description).fetch_optional(c).await?);
        Ok(found.is_some())
    }
}
