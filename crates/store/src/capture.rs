//! Participants, their events, forms and item values.

use time::OffsetDateTime;

use crate::db::StoreError;
use crate::{Store, WriteTx};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ParticipantRow {
    pub id: i64,
    pub study_id: i64,
    pub site_id: i64,
    pub label: String,
    pub oid: String,
    pub secondary_label: Option<String>,
    pub person_id: Option<String>,
    pub sex: Option<String>,
    pub date_of_birth: Option<String>,
    pub enrolled_on: String,
    pub group_name: Option<String>,
    pub status: String,
    pub version: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// A value to write: `(group, row, item, value, null flavour)`.
pub type ValueWrite<'a> = (&'a str, i32, &'a str, Option<&'a str>, Option<&'a str>);

/// A participant to insert.
#[derive(Debug, Clone)]
pub struct NewParticipant<'a> {
    pub study_id: i64,
    pub site_id: i64,
    pub label: &'a str,
    pub oid: &'a str,
    pub secondary_label: Option<&'a str>,
    pub person_id: Option<&'a str>,
    pub sex: Option<&'a str>,
    pub date_of_birth: Option<&'a str>,
    pub enrolled_on: &'a str,
    pub group_name: Option<&'a str>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StudyEventRow {
    pub id: i64,
    pub participant_id: i64,
    pub event_oid: String,
    pub repeat_key: i32,
    pub status: String,
    pub removal: String,
    pub start_at: Option<OffsetDateTime>,
    pub end_at: Option<OffsetDateTime>,
    pub location: Option<String>,
    pub version: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FormDataRow {
    pub id: i64,
    pub study_event_id: i64,
    pub form_oid: String,
    pub form_version_oid: String,
    pub design_version: i32,
    pub status: String,
    pub removal: String,
    pub owner_id: Option<i64>,
    pub completed_at: Option<OffsetDateTime>,
    pub completed_by: Option<i64>,
    pub version: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// Double data entry: `awaiting_dde` after initial entry is complete, `done` after.
    pub dde_stage: Option<String>,
    pub ide_completed_at: Option<OffsetDateTime>,
    pub ide_completed_by: Option<i64>,
}

/// A value of the second (double data entry) pass.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DdeValueRow {
    pub group_oid: String,
    pub row_number: i32,
    pub item_oid: String,
    pub value: Option<String>,
    pub null_flavour: Option<String>,
    pub keyed_by: Option<i64>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ItemDataRow {
    pub id: i64,
    pub form_data_id: i64,
    pub group_oid: String,
    pub row_number: i32,
    pub item_oid: String,
    pub value: Option<String>,
    pub null_flavour: Option<String>,
    pub deleted: bool,
    pub updated_at: OffsetDateTime,
    pub updated_by: Option<i64>,
}

/// How many forms and values a form version holds (for the design impact report).
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct VersionUsage {
    pub form_version_oid: String,
    pub forms: i64,
}

macro_rules! participant_select {
    ($tail:literal) => {
        concat!(
            "SELECT id, study_id, site_id, label, oid, secondary_label, person_id, sex, date_of_birth, enrolled_on, \
             group_name, status, version, created_at, updated_at FROM participants ",
            $tail
        )
    };
}

macro_rules! event_select {
    ($tail:literal) => {
        concat!(
            "SELECT id, participant_id, event_oid, repeat_key, status, removal, start_at, end_at, location, version, \
             created_at, updated_at FROM study_events ",
            $tail
        )
    };
}

macro_rules! form_select {
    ($tail:literal) => {
        concat!(
            "SELECT id, study_event_id, form_oid, form_version_oid, design_version, status, removal, owner_id, \
             completed_at, completed_by, version, created_at, updated_at, dde_stage, ide_completed_at, \
             ide_completed_by FROM form_data ",
            $tail
        )
    };
}

macro_rules! item_select {
    ($tail:literal) => {
        concat!(
            "SELECT id, form_data_id, group_oid, row_number, item_oid, value, null_flavour, deleted, updated_at, \
             updated_by FROM item_data ",
            $tail
        )
    };
}

impl Store {
    /// A participant by label (case-insensitive) or OID within a study.
    ///
    /// # Errors
    /// On database failure.
    pub async fn participant(&self, study_id: i64, key: &str) -> Result<Option<ParticipantRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(participant_select!(
            "WHERE study_id = $1 AND (label_key = $2 OR oid = $3)"))
            .bind(study_id).bind(key.to_lowercase()).bind(key).fetch_optional(p).await?))
    }

    /// A participant by id.
    ///
    /// # Errors
    /// On database failure.
    pub async fn participant_by_id(&self, id: i64) -> Result<Option<ParticipantRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(participant_select!("WHERE id = $1"))
            .bind(id).fetch_optional(p).await?))
    }

    /// A page of participants of a study (optionally of some sites), by label.
    ///
    /// # Errors
    /// On database failure.
    pub async fn participants(
        &self,
        study_id: i64,
        site_id: Option<i64>,
        after_label: &str,
        limit: i64,
    ) -> Result<Vec<ParticipantRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(participant_select!(
            "WHERE study_id = $1 AND ($2 IS NULL OR site_id = $2) AND label_key > $3 ORDER BY label_key LIMIT $4"))
            .bind(study_id).bind(site_id).bind(after_label.to_lowercase()).bind(limit).fetch_all(p).await?))
    }

    /// The events of a participant, by event and repeat.
    ///
    /// # Errors
    /// On database failure.
    pub async fn study_events(&self, participant_id: i64) -> Result<Vec<StudyEventRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(event_select!("WHERE participant_id = $1 ORDER BY id"))
            .bind(participant_id).fetch_all(p).await?))
    }

    /// The forms of a participant's events.
    ///
    /// # Errors
    /// On database failure.
    pub async fn forms_of_participant(&self, participant_id: i64) -> Result<Vec<FormDataRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(form_select!(
            "WHERE study_event_id IN (SELECT id FROM study_events WHERE participant_id = $1) ORDER BY id"))
            .bind(participant_id).fetch_all(p).await?))
    }

    /// The forms of one event occurrence.
    ///
    /// # Errors
    /// On database failure.
    pub async fn forms_of_event_id(&self, study_event_id: i64) -> Result<Vec<FormDataRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(form_select!("WHERE study_event_id = $1 ORDER BY id"))
            .bind(study_event_id).fetch_all(p).await?))
    }

    /// The values of a form.
    ///
    /// # Errors
    /// On database failure.
    pub async fn item_data(&self, form_data_id: i64) -> Result<Vec<ItemDataRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(item_select!(
            "WHERE form_data_id = $1 ORDER BY group_oid, row_number, id"))
            .bind(form_data_id).fetch_all(p).await?))
    }

    /// Every current value of a participant, in one query (for the casebook).
    ///
    /// # Errors
    /// On database failure.
    pub async fn item_data_of_participant(&self, participant_id: i64) -> Result<Vec<ItemDataRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(item_select!(
            "WHERE deleted = FALSE AND form_data_id IN (SELECT f.id FROM form_data f JOIN study_events e \
             ON e.id = f.study_event_id WHERE e.participant_id = $1) ORDER BY form_data_id, group_oid, row_number, id"))
            .bind(participant_id).fetch_all(p).await?))
    }

    /// How many forms hold data, per form version, in a study.
    ///
    /// # Errors
    /// On database failure.
    pub async fn form_version_usage(&self, study_id: i64) -> Result<Vec<VersionUsage>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(
            "SELECT f.form_version_oid, COUNT(*) AS forms FROM form_data f \
             JOIN study_events e ON e.id = f.study_event_id JOIN participants p ON p.id = e.participant_id \
             WHERE p.study_id = $1 GROUP BY f.form_version_oid ORDER BY f.form_version_oid")
            .bind(study_id).fetch_all(p).await?))
    }
}

impl WriteTx {
    /// A participant of a study by OID or label, as this transaction sees it (an import that
    /// enrolled it earlier in the same transaction finds it).
    ///
    /// # Errors
    /// On database failure.
    pub async fn participant(&mut self, study_id: i64, key: &str) -> Result<Option<ParticipantRow>, StoreError> {
        Ok(on_tx!(self, c => sqlx::query_as(participant_select!(
            "WHERE study_id = $1 AND (label_key = $2 OR oid = $3)"))
            .bind(study_id).bind(key.to_lowercase()).bind(key).fetch_optional(c).await?))
    }

    /// Removes a participant: its status becomes `removed` and every event and form not already
    /// removed becomes `auto_removed`. Returns how many events and forms were auto-removed.
    ///
    /// # Errors
    /// On database failure.
    pub async fn remove_participant(&mut self, id: i64) -> Result<(u64, u64), StoreError> {
        let now = self.now();
        on_tx!(self, c => sqlx::query(
            "UPDATE participants SET status = 'removed', version = version + 1, updated_at = $1 WHERE id = $2")
            .bind(now).bind(id).execute(c).await?.rows_affected());
        let forms = on_tx!(self, c => sqlx::query(
            "UPDATE form_data SET removal = 'auto_removed', updated_at = $1 WHERE removal = 'available' \
             AND study_event_id IN (SELECT id FROM study_events WHERE participant_id = $2)")
            .bind(now).bind(id).execute(c).await?.rows_affected());
        let events = on_tx!(self, c => sqlx::query(
            "UPDATE study_events SET removal = 'auto_removed', version = version + 1, updated_at = $1 \
             WHERE removal = 'available' AND participant_id = $2")
            .bind(now).bind(id).execute(c).await?.rows_affected());
        Ok((events, forms))
    }

    /// Restores a participant and only what its removal auto-removed.
    ///
    /// # Errors
    /// On database failure.
    pub async fn restore_participant(&mut self, id: i64) -> Result<(u64, u64), StoreError> {
        let now = self.now();
        on_tx!(self, c => sqlx::query(
            "UPDATE participants SET status = 'available', version = version + 1, updated_at = $1 WHERE id = $2")
            .bind(now).bind(id).execute(c).await?.rows_affected());
        let forms = on_tx!(self, c => sqlx::query(
            "UPDATE form_data SET removal = 'available', updated_at = $1 WHERE removal = 'auto_removed' \
             AND study_event_id IN (SELECT id FROM study_events WHERE participant_id = $2)")
            .bind(now).bind(id).execute(c).await?.rows_affected());
        let events = on_tx!(self, c => sqlx::query(
            "UPDATE study_events SET removal = 'available', version = version + 1, updated_at = $1 \
             WHERE removal = 'auto_removed' AND participant_id = $2")
            .bind(now).bind(id).execute(c).await?.rows_affected());
        Ok((events, forms))
    }

    /// Moves a participant to another site of its study.
    ///
    /// # Errors
    /// On database failure.
    pub async fn set_participant_site(&mut self, id: i64, site_id: i64) -> Result<(), StoreError> {
        let now = self.now();
        on_tx!(self, c => sqlx::query(
            "UPDATE participants SET site_id = $1, version = version + 1, updated_at = $2 WHERE id = $3")
            .bind(site_id).bind(now).bind(id).execute(c).await?.rows_affected());
        Ok(())
    }

    /// The next automatic participant number of a study: the counter row is locked for the rest of
    /// the transaction, so concurrent enrolments are numbered one after the other.
    ///
    /// # Errors
    /// On database failure.
    pub async fn next_participant_number(&mut self, study_id: i64) -> Result<i64, StoreError> {
        on_tx!(self, c => sqlx::query(
            "INSERT INTO participant_counters (study_id, last) VALUES ($1, 0) ON CONFLICT (study_id) DO NOTHING")
            .bind(study_id).execute(c).await?.rows_affected());
        Ok(on_tx!(self, c => sqlx::query_scalar(
            "UPDATE participant_counters SET last = last + 1 WHERE study_id = $1 RETURNING last")
            .bind(study_id).fetch_one(c).await?))
    }

    /// Whether a participant OID is taken.
    ///
    /// # Errors
    /// On database failure.
    pub async fn participant_oid_taken(&mut self, oid: &str) -> Result<bool, StoreError> {
        // Concurrent enrolments may reach for the same OID: on PostgreSQL the candidate is
        // locked until this transaction ends, so the second one waits and then sees the first's
        // (SQLite has one writer at a time already).
        if let crate::tx::Tx::Postgres(t) = &mut self.tx {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('participant_oid:' || $1))")
                .bind(oid)
                .execute(&mut **t)
                .await?;
        }
        let n: i64 = on_tx!(self, c => sqlx::query_scalar("SELECT COUNT(*) FROM participants WHERE oid = $1")
            .bind(oid).fetch_one(c).await?);
        Ok(n > 0)
    }

    /// Inserts a participant.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the label is taken in the study.
    pub async fn insert_participant(&mut self, p: &NewParticipant<'_>) -> Result<i64, StoreError> {
        let now = self.now();
        Ok(on_tx!(self, c => sqlx::query_scalar(
            "INSERT INTO participants (study_id, site_id, label, label_key, oid, secondary_label, person_id, sex, \
             date_of_birth, enrolled_on, group_name, status, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'available', 1, $12, $12) RETURNING id")
            .bind(p.study_id).bind(p.site_id).bind(p.label).bind(p.label.to_lowercase()).bind(p.oid)
            .bind(p.secondary_label).bind(p.person_id).bind(p.sex).bind(p.date_of_birth).bind(p.enrolled_on)
            .bind(p.group_name).bind(now).fetch_one(c).await?))
    }

    /// The events of a participant, read inside the transaction.
    ///
    /// # Errors
    /// On database failure.
    pub async fn study_events_of(&mut self, participant_id: i64) -> Result<Vec<StudyEventRow>, StoreError> {
        Ok(on_tx!(self, c => sqlx::query_as(event_select!("WHERE participant_id = $1 ORDER BY id"))
            .bind(participant_id).fetch_all(c).await?))
    }

    /// Inserts a scheduled event.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the occurrence exists.
    pub async fn insert_study_event(
        &mut self,
        participant_id: i64,
        event_oid: &str,
        repeat_key: i32,
        start_at: Option<OffsetDateTime>,
        end_at: Option<OffsetDateTime>,
        location: Option<&str>,
    ) -> Result<i64, StoreError> {
        let now = self.now();
        Ok(on_tx!(self, c => sqlx::query_scalar(
            "INSERT INTO study_events (participant_id, event_oid, repeat_key, status, removal, start_at, end_at, \
             location, version, created_at, updated_at) \
             VALUES ($1, $2, $3, 'scheduled', 'available', $4, $5, $6, 1, $7, $7) RETURNING id")
            .bind(participant_id).bind(event_oid).bind(repeat_key).bind(start_at).bind(end_at).bind(location)
            .bind(now).fetch_one(c).await?))
    }

    /// Sets an event's status.
    ///
    /// # Errors
    /// On database failure.
    pub async fn set_event_status(&mut self, id: i64, status: &str) -> Result<(), StoreError> {
        let now = self.now();
        on_tx!(self, c => sqlx::query(
            "UPDATE study_events SET status = $1, version = version + 1, updated_at = $2 WHERE id = $3")
            .bind(status).bind(now).bind(id).execute(c).await?.rows_affected());
        Ok(())
    }

    /// The forms of an event, read inside the transaction.
    ///
    /// # Errors
    /// On database failure.
    pub async fn forms_of_event(&mut self, study_event_id: i64) -> Result<Vec<FormDataRow>, StoreError> {
        Ok(on_tx!(self, c => sqlx::query_as(form_select!("WHERE study_event_id = $1 ORDER BY id"))
            .bind(study_event_id).fetch_all(c).await?))
    }

    /// Starts a form in an event.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the form was started meanwhile.
    pub async fn insert_form_data(
        &mut self,
        study_event_id: i64,
        form_oid: &str,
        form_version_oid: &str,
        design_version: i32,
    ) -> Result<i64, StoreError> {
        let now = self.now();
        let owner = self.actor().user_id;
        Ok(on_tx!(self, c => sqlx::query_scalar(
            "INSERT INTO form_data (study_event_id, form_oid, form_version_oid, design_version, status, removal, \
             owner_id, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 'initial_data_entry', 'available', $5, 1, $6, $6) RETURNING id")
            .bind(study_event_id).bind(form_oid).bind(form_version_oid).bind(design_version).bind(owner).bind(now)
            .fetch_one(c).await?))
    }

    /// Bumps a form's version if it is still `expected`; returns whether it was.
    ///
    /// # Errors
    /// On database failure.
    pub async fn bump_form_version(&mut self, id: i64, expected: i64) -> Result<bool, StoreError> {
        let now = self.now();
        let n = on_tx!(self, c => sqlx::query(
            "UPDATE form_data SET version = version + 1, updated_at = $1 WHERE id = $2 AND version = $3")
            .bind(now).bind(id).bind(expected).execute(c).await?.rows_affected());
        Ok(n == 1)
    }

    /// Marks a form complete.
    ///
    /// # Errors
    /// On database failure.
    pub async fn complete_form(&mut self, id: i64) -> Result<(), StoreError> {
        let now = self.now();
        let by = self.actor().user_id;
        on_tx!(self, c => sqlx::query(
            "UPDATE form_data SET status = 'complete', completed_at = $1, completed_by = $2, version = version + 1, \
             updated_at = $1 WHERE id = $3")
            .bind(now).bind(by).bind(id).execute(c).await?.rows_affected());
        Ok(())
    }

    /// The values of a form, read inside the transaction.
    ///
    /// # Errors
    /// On database failure.
    pub async fn item_data_of(&mut self, form_data_id: i64) -> Result<Vec<ItemDataRow>, StoreError> {
        Ok(on_tx!(self, c => sqlx::query_as(item_select!(
            "WHERE form_data_id = $1 ORDER BY group_oid, row_number, id"))
            .bind(form_data_id).fetch_all(c).await?))
    }

    /// Every current value of a participant, read inside the transaction (rules read across
    /// forms and events).
    ///
    /// # Errors
    /// On database failure.
    pub async fn participant_values(&mut self, participant_id: i64) -> Result<Vec<ItemDataRow>, StoreError> {
        Ok(on_tx!(self, c => sqlx::query_as(item_select!(
            "WHERE deleted = FALSE AND form_data_id IN (SELECT f.id FROM form_data f JOIN study_events e \
             ON e.id = f.study_event_id WHERE e.participant_id = $1) ORDER BY form_data_id, group_oid, row_number, id"))
            .bind(participant_id).fetch_all(c).await?))
    }

    /// Every form of a participant, read inside the transaction.
    ///
    /// # Errors
    /// On database failure.
    pub async fn participant_forms(&mut self, participant_id: i64) -> Result<Vec<FormDataRow>, StoreError> {
        Ok(on_tx!(self, c => sqlx::query_as(form_select!(
            "WHERE study_event_id IN (SELECT id FROM study_events WHERE participant_id = $1) ORDER BY id"))
            .bind(participant_id).fetch_all(c).await?))
    }

    /// Sets an event occurrence's start.
    ///
    /// # Errors
    /// On database failure.
    pub async fn set_event_start(&mut self, id: i64, start: Option<OffsetDateTime>) -> Result<(), StoreError> {
        let now = self.now();
        on_tx!(self, c => sqlx::query(
            "UPDATE study_events SET start_at = $1, version = version + 1, updated_at = $2 WHERE id = $3")
            .bind(start).bind(now).bind(id).execute(c).await?.rows_affected());
        Ok(())
    }

    /// Writes one value (insert or update; `None` clears it).
    ///
    /// # Errors
    /// On database failure.
    pub async fn upsert_item_data(
        &mut self,
        form_data_id: i64,
        group_oid: &str,
        row_number: i32,
        item_oid: &str,
        value: Option<&str>,
        null_flavour: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let by = self.actor().user_id;
        on_tx!(self, c => sqlx::query(
            "INSERT INTO item_data (form_data_id, group_oid, row_number, item_oid, value, null_flavour, deleted, \
             updated_at, updated_by) VALUES ($1, $2, $3, $4, $5, $6, FALSE, $7, $8) \
             ON CONFLICT (form_data_id, group_oid, row_number, item_oid) DO UPDATE SET value = excluded.value, \
             null_flavour = excluded.null_flavour, deleted = FALSE, updated_at = excluded.updated_at, \
             updated_by = excluded.updated_by")
            .bind(form_data_id).bind(group_oid).bind(row_number).bind(item_oid).bind(value).bind(null_flavour)
            .bind(now).bind(by).execute(c).await?.rows_affected());
        Ok(())
    }

    /// Writes many values of a form in one statement (each inserted or replaced, as
    /// [`Self::upsert_item_data`]): `(group, row, item, value, null flavour)`.
    ///
    /// # Errors
    /// On database failure.
    pub async fn upsert_item_data_many(
        &mut self,
        form_data_id: i64,
        rows: &[ValueWrite<'_>],
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let now = self.now();
        let by = self.actor().user_id;
        match &mut self.tx {
            crate::tx::Tx::Sqlite(t) => {
                let json: Vec<serde_json::Value> =
                    rows.iter().map(|(g, r, i, v, n)| serde_json::json!([g, r, i, v, n])).collect();
                sqlx::query(
                    "INSERT INTO item_data (form_data_id, group_oid, row_number, item_oid, value, null_flavour, \
                     deleted, updated_at, updated_by) \
                     SELECT $1, json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]'), \
                     json_extract(j.value, '$[2]'), json_extract(j.value, '$[3]'), json_extract(j.value, '$[4]'), \
                     FALSE, $2, $3 FROM json_each($4) AS j WHERE TRUE \
                     ON CONFLICT (form_data_id, group_oid, row_number, item_oid) DO UPDATE SET value = excluded.value, \
                     null_flavour = excluded.null_flavour, deleted = FALSE, updated_at = excluded.updated_at, \
                     updated_by = excluded.updated_by",
                )
                .bind(form_data_id)
                .bind(now)
                .bind(by)
                .bind(serde_json::Value::Array(json).to_string())
                .execute(&mut **t)
                .await?;
            }
            crate::tx::Tx::Postgres(t) => {
                sqlx::query(
                    "INSERT INTO item_data (form_data_id, group_oid, row_number, item_oid, value, null_flavour, \
                     deleted, updated_at, updated_by) \
                     SELECT $1, u.g, u.r, u.i, u.v, u.n, FALSE, $2, $3 \
                     FROM UNNEST($4::text[], $5::int4[], $6::text[], $7::text[], $8::text[]) AS u(g, r, i, v, n) \
                     ON CONFLICT (form_data_id, group_oid, row_number, item_oid) DO UPDATE SET value = excluded.value, \
                     null_flavour = excluded.null_flavour, deleted = FALSE, updated_at = excluded.updated_at, \
                     updated_by = excluded.updated_by",
                )
                .bind(form_data_id)
                .bind(now)
                .bind(by)
                .bind(rows.iter().map(|r| r.0).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.1).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.2).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.3).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.4).collect::<Vec<_>>())
                .execute(&mut **t)
                .await?;
            }
        }
        Ok(())
    }

    /// Marks every value of a repeating row deleted (kept for the audit).
    ///
    /// # Errors
    /// On database failure.
    pub async fn delete_row(&mut self, form_data_id: i64, group_oid: &str, row_number: i32) -> Result<u64, StoreError> {
        let now = self.now();
        let by = self.actor().user_id;
        Ok(on_tx!(self, c => sqlx::query(
            "UPDATE item_data SET deleted = TRUE, updated_at = $1, updated_by = $2 \
             WHERE form_data_id = $3 AND group_oid = $4 AND row_number = $5 AND deleted = FALSE")
            .bind(now).bind(by).bind(form_data_id).bind(group_oid).bind(row_number).execute(c).await?.rows_affected()))
    }

    /// Marks initial data entry complete on a form that needs double data entry.
    ///
    /// # Errors
    /// On database failure.
    pub async fn complete_initial_entry(&mut self, id: i64) -> Result<(), StoreError> {
        let now = self.now();
        let by = self.actor().user_id;
        on_tx!(self, c => sqlx::query(
            "UPDATE form_data SET dde_stage = 'awaiting_dde', ide_completed_at = $1, ide_completed_by = $2, \
             version = version + 1, updated_at = $1 WHERE id = $3")
            .bind(now).bind(by).bind(id).execute(c).await?.rows_affected());
        Ok(())
    }

    /// Marks double data entry done (the caller completes the form).
    ///
    /// # Errors
    /// On database failure.
    pub async fn finish_dde(&mut self, id: i64) -> Result<(), StoreError> {
        let now = self.now();
        on_tx!(self, c => sqlx::query("UPDATE form_data SET dde_stage = 'done', updated_at = $1 WHERE id = $2")
            .bind(now).bind(id).execute(c).await?.rows_affected());
        Ok(())
    }

    /// The second-pass values of a form.
    ///
    /// # Errors
    /// On database failure.
    pub async fn dde_values_of(&mut self, form_data_id: i64) -> Result<Vec<DdeValueRow>, StoreError> {
        Ok(on_tx!(self, c => sqlx::query_as(
            "SELECT group_oid, row_number, item_oid, value, null_flavour, keyed_by FROM dde_values \
             WHERE form_data_id = $1 ORDER BY group_oid, row_number, item_oid")
            .bind(form_data_id).fetch_all(c).await?))
    }

    /// Writes one second-pass value.
    ///
    /// # Errors
    /// On database failure.
    pub async fn upsert_dde_value(
        &mut self,
        form_data_id: i64,
        group_oid: &str,
        row_number: i32,
        item_oid: &str,
        value: Option<&str>,
        null_flavour: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let by = self.actor().user_id;
        on_tx!(self, c => sqlx::query(
            "INSERT INTO dde_values (form_data_id, group_oid, row_number, item_oid, value, null_flavour, keyed_by, keyed_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (form_data_id, group_oid, row_number, item_oid) \
             DO UPDATE SET value = excluded.value, null_flavour = excluded.null_flavour, keyed_by = excluded.keyed_by, \
             keyed_at = excluded.keyed_at")
            .bind(form_data_id).bind(group_oid).bind(row_number).bind(item_oid).bind(value).bind(null_flavour)
            .bind(by).bind(now).execute(c).await?.rows_affected());
        Ok(())
    }
}
