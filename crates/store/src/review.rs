//! Review of collected data: event status actions and the status an event had before locking,
//! electronic signatures (never deleted; broken once when signed data change), and source data
//! verification of forms.
//!
//! The `lock_*` reads take row locks on PostgreSQL (`FOR UPDATE`) so that signing, verifying and
//! saving data serialise on the rows they share; SQLite's `BEGIN IMMEDIATE` already serialises
//! writers, so its arm is a plain read.

use time::OffsetDateTime;

use crate::db::StoreError;
use crate::tx::Tx;
use crate::{Store, WriteTx};

/// An event occurrence as review needs it (read under a row lock).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventState {
    pub id: i64,
    pub participant_id: i64,
    pub event_oid: String,
    pub repeat_key: i32,
    pub status: String,
    pub removal: String,
    pub status_before_lock: Option<String>,
}

/// Which form, event and participant a form row belongs to (for audit keys).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FormPlace {
    pub participant_oid: String,
    pub event_oid: String,
    pub repeat_key: i32,
    pub form_oid: String,
}

/// A stored electronic signature.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SignatureRow {
    pub id: i64,
    pub scope: String,
    pub participant_id: i64,
    pub study_event_id: Option<i64>,
    pub signer_id: i64,
    pub signer_username: String,
    pub signer_name: String,
    pub meaning: String,
    pub signed_at: OffsetDateTime,
    pub data_hash: String,
    pub audit_seq: i64,
    pub broken_at: Option<OffsetDateTime>,
    pub broken_reason: Option<String>,
    pub broken_audit_seq: Option<i64>,
}

/// A signature to store.
#[derive(Debug, Clone)]
pub struct NewSignature<'a> {
    /// `event` or `casebook`.
    pub scope: &'a str,
    pub participant_id: i64,
    pub study_event_id: Option<i64>,
    pub signer_id: i64,
    pub signer_username: &'a str,
    pub signer_name: &'a str,
    pub meaning: &'a str,
    pub data_hash: &'a str,
    pub audit_seq: i64,
}

/// The verification state of a form (no row: not verified).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SdvRow {
    pub form_data_id: i64,
    pub status: String,
    pub verified_at: Option<OffsetDateTime>,
    pub verified_by: Option<i64>,
    pub verified_by_username: Option<String>,
    pub changed_at: Option<OffsetDateTime>,
}

/// The verification state of one value of a form (no row: never verified).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ItemSdvRow {
    pub form_data_id: i64,
    pub group_oid: String,
    pub row_number: i32,
    pub item_oid: String,
    pub status: String,
    pub verified_at: Option<OffsetDateTime>,
    pub verified_by_username: Option<String>,
    pub changed_at: Option<OffsetDateTime>,
}

/// One value to record a verification of, with the value as the monitor saw it.
#[derive(Debug, Clone)]
pub struct ItemSdvMark<'a> {
    pub group_oid: &'a str,
    pub row_number: i32,
    pub item_oid: &'a str,
    pub value: Option<&'a str>,
    pub null_flavour: Option<&'a str>,
}

macro_rules! item_sdv_select {
    ($tail:literal) => {
        concat!(
            "SELECT s.form_data_id, s.group_oid, s.row_number, s.item_oid, s.status, s.verified_at, \
             u.username AS verified_by_username, s.changed_at FROM item_sdv s LEFT JOIN users u ON u.id = s.verified_by ",
            $tail
        )
    };
}

macro_rules! signature_select {
    ($tail:literal) => {
        concat!(
            "SELECT id, scope, participant_id, study_event_id, signer_id, signer_username, signer_name, meaning, \
             signed_at, data_hash, audit_seq, broken_at, broken_reason, broken_audit_seq FROM signatures ",
            $tail
        )
    };
}

impl Store {
    /// Every signature of a participant (events and casebook, broken ones too), oldest first.
    ///
    /// # Errors
    /// On database failure.
    pub async fn signatures_of_participant(&self, participant_id: i64) -> Result<Vec<SignatureRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(signature_select!("WHERE participant_id = $1 ORDER BY id"))
            .bind(participant_id).fetch_all(p).await?))
    }

    /// The verification state of every form of a participant that has one.
    ///
    /// # Errors
    /// On database failure.
    pub async fn sdv_of_participant(&self, participant_id: i64) -> Result<Vec<SdvRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(
            "SELECT s.form_data_id, s.status, s.verified_at, s.verified_by, u.username AS verified_by_username, \
             s.changed_at FROM form_sdv s JOIN form_data f ON f.id = s.form_data_id \
             JOIN study_events e ON e.id = f.study_event_id LEFT JOIN users u ON u.id = s.verified_by \
             WHERE e.participant_id = $1 ORDER BY s.form_data_id")
            .bind(participant_id).fetch_all(p).await?))
    }

    /// The verification state of every verified (or once verified) value of a participant.
    ///
    /// # Errors
    /// On database failure.
    pub async fn item_sdv_of_participant(&self, participant_id: i64) -> Result<Vec<ItemSdvRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(item_sdv_select!(
            "JOIN form_data f ON f.id = s.form_data_id JOIN study_events e ON e.id = f.study_event_id \
             WHERE e.participant_id = $1 ORDER BY s.form_data_id, s.group_oid, s.row_number, s.item_oid"))
            .bind(participant_id).fetch_all(p).await?))
    }

    /// The status each event of a participant had before it was locked (locked events only).
    ///
    /// # Errors
    /// On database failure.
    pub async fn lock_memory_of_participant(&self, participant_id: i64) -> Result<Vec<(i64, String)>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(
            "SELECT id, status_before_lock FROM study_events WHERE participant_id = $1 AND status_before_lock IS NOT NULL")
            .bind(participant_id).fetch_all(p).await?))
    }
}

impl WriteTx {
    /// An event occurrence, locked for the rest of the transaction.
    ///
    /// # Errors
    /// On database failure.
    pub async fn lock_event(&mut self, id: i64) -> Result<Option<EventState>, StoreError> {
        Ok(match &mut self.tx {
            Tx::Sqlite(t) => {
                sqlx::query_as(
                    "SELECT id, participant_id, event_oid, repeat_key, status, removal, status_before_lock \
                     FROM study_events WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&mut **t)
                .await?
            }
            Tx::Postgres(t) => {
                sqlx::query_as(
                    "SELECT id, participant_id, event_oid, repeat_key, status, removal, status_before_lock \
                     FROM study_events WHERE id = $1 FOR UPDATE",
                )
                .bind(id)
                .fetch_optional(&mut **t)
                .await?
            }
        })
    }

    /// A participant's status, with the participant row locked for the rest of the transaction.
    ///
    /// # Errors
    /// On database failure.
    pub async fn lock_participant(&mut self, id: i64) -> Result<Option<String>, StoreError> {
        Ok(match &mut self.tx {
            Tx::Sqlite(t) => {
                sqlx::query_scalar("SELECT status FROM participants WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut **t)
                    .await?
            }
            Tx::Postgres(t) => {
                sqlx::query_scalar("SELECT status FROM participants WHERE id = $1 FOR UPDATE")
                    .bind(id)
                    .fetch_optional(&mut **t)
                    .await?
            }
        })
    }

    /// A form's data-entry status and removal, with the form row locked for the rest of the
    /// transaction.
    ///
    /// # Errors
    /// On database failure.
    pub async fn lock_form(&mut self, id: i64) -> Result<Option<(String, String)>, StoreError> {
        Ok(match &mut self.tx {
            Tx::Sqlite(t) => {
                sqlx::query_as("SELECT status, removal FROM form_data WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut **t)
                    .await?
            }
            Tx::Postgres(t) => {
                sqlx::query_as("SELECT status, removal FROM form_data WHERE id = $1 FOR UPDATE")
                    .bind(id)
                    .fetch_optional(&mut **t)
                    .await?
            }
        })
    }

    /// Where a form row sits: participant, event occurrence and form OIDs.
    ///
    /// # Errors
    /// On database failure.
    pub async fn form_place(&mut self, form_data_id: i64) -> Result<Option<FormPlace>, StoreError> {
        Ok(on_tx!(self, c => sqlx::query_as(
            "SELECT p.oid AS participant_oid, e.event_oid, e.repeat_key, f.form_oid FROM form_data f \
             JOIN study_events e ON e.id = f.study_event_id JOIN participants p ON p.id = e.participant_id \
             WHERE f.id = $1")
            .bind(form_data_id).fetch_optional(c).await?))
    }

    /// Moves an event from status `from` to `to`, recording `before_lock` (the status to return to
    /// on unlock, or `None`). Returns whether the event was still in `from`.
    ///
    /// # Errors
    /// On database failure.
    pub async fn move_event_status(
        &mut self,
        id: i64,
        from: &str,
        to: &str,
        before_lock: Option<&str>,
    ) -> Result<bool, StoreError> {
        let now = self.now();
        let n = on_tx!(self, c => sqlx::query(
            "UPDATE study_events SET status = $1, status_before_lock = $2, version = version + 1, updated_at = $3 \
             WHERE id = $4 AND status = $5")
            .bind(to).bind(before_lock).bind(now).bind(id).bind(from).execute(c).await?.rows_affected());
        Ok(n == 1)
    }

    /// Moves a participant from status `from` to `to`; returns whether it was still in `from`.
    ///
    /// # Errors
    /// On database failure.
    pub async fn move_participant_status(&mut self, id: i64, from: &str, to: &str) -> Result<bool, StoreError> {
        let now = self.now();
        let n = on_tx!(self, c => sqlx::query(
            "UPDATE participants SET status = $1, version = version + 1, updated_at = $2 WHERE id = $3 AND status = $4")
            .bind(to).bind(now).bind(id).bind(from).execute(c).await?.rows_affected());
        Ok(n == 1)
    }

    /// Stores a signature, stamped with the transaction's time.
    ///
    /// # Errors
    /// On database failure.
    pub async fn insert_signature(&mut self, s: &NewSignature<'_>) -> Result<i64, StoreError> {
        let now = self.now();
        Ok(on_tx!(self, c => sqlx::query_scalar(
            "INSERT INTO signatures (scope, participant_id, study_event_id, signer_id, signer_username, signer_name, \
             meaning, signed_at, data_hash, audit_seq) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id")
            .bind(s.scope).bind(s.participant_id).bind(s.study_event_id).bind(s.signer_id).bind(s.signer_username)
            .bind(s.signer_name).bind(s.meaning).bind(now).bind(s.data_hash).bind(s.audit_seq)
            .fetch_one(c).await?))
    }

    /// The signatures still in force over an event occurrence: its own, and its participant's
    /// casebook signature.
    ///
    /// # Errors
    /// On database failure.
    pub async fn signatures_in_force(
        &mut self,
        participant_id: i64,
        study_event_id: i64,
    ) -> Result<Vec<SignatureRow>, StoreError> {
        Ok(on_tx!(self, c => sqlx::query_as(signature_select!(
            "WHERE broken_at IS NULL AND ((scope = 'event' AND study_event_id = $1) \
             OR (scope = 'casebook' AND participant_id = $2)) ORDER BY id"))
            .bind(study_event_id).bind(participant_id).fetch_all(c).await?))
    }

    /// Marks a signature broken (once; the database refuses any other change to a signature).
    ///
    /// # Errors
    /// On database failure.
    pub async fn break_signature(&mut self, id: i64, reason: &str, audit_seq: i64) -> Result<(), StoreError> {
        let now = self.now();
        on_tx!(self, c => sqlx::query(
            "UPDATE signatures SET broken_at = $1, broken_reason = $2, broken_audit_seq = $3 \
             WHERE id = $4 AND broken_at IS NULL")
            .bind(now).bind(reason).bind(audit_seq).bind(id).execute(c).await?.rows_affected());
        Ok(())
    }

    /// The verification state of a form, read inside the transaction.
    ///
    /// # Errors
    /// On database failure.
    pub async fn sdv_of(&mut self, form_data_id: i64) -> Result<Option<SdvRow>, StoreError> {
        Ok(on_tx!(self, c => sqlx::query_as(
            "SELECT s.form_data_id, s.status, s.verified_at, s.verified_by, u.username AS verified_by_username, \
             s.changed_at FROM form_sdv s LEFT JOIN users u ON u.id = s.verified_by WHERE s.form_data_id = $1")
            .bind(form_data_id).fetch_optional(c).await?))
    }

    /// Records a verification (`verified`) or its withdrawal (`not_verified`) by the acting user.
    ///
    /// # Errors
    /// On database failure.
    pub async fn set_sdv(&mut self, form_data_id: i64, status: &str) -> Result<(), StoreError> {
        let now = self.now();
        let by = self.actor().user_id;
        let verified = status == "verified";
        let (at, who) = if verified { (Some(now), by) } else { (None, None) };
        // Withdrawing a verification keeps who verified last and when (the audit has the rest).
        on_tx!(self, c => sqlx::query(
            "INSERT INTO form_sdv (form_data_id, status, verified_at, verified_by, changed_at, updated_at) \
             VALUES ($1, $2, $3, $4, NULL, $5) \
             ON CONFLICT (form_data_id) DO UPDATE SET status = excluded.status, \
             verified_at = COALESCE(excluded.verified_at, form_sdv.verified_at), \
             verified_by = COALESCE(excluded.verified_by, form_sdv.verified_by), \
             changed_at = NULL, updated_at = excluded.updated_at")
            .bind(form_data_id).bind(status).bind(at).bind(who).bind(now).execute(c).await?.rows_affected());
        Ok(())
    }

    /// Marks a verified form as changed since its verification; returns whether it was verified.
    ///
    /// # Errors
    /// On database failure.
    pub async fn sdv_mark_changed(&mut self, form_data_id: i64) -> Result<bool, StoreError> {
        let now = self.now();
        let n = on_tx!(self, c => sqlx::query(
            "UPDATE form_sdv SET status = 'changed_since_verified', changed_at = $1, updated_at = $1 \
             WHERE form_data_id = $2 AND status = 'verified'")
            .bind(now).bind(form_data_id).execute(c).await?.rows_affected());
        Ok(n == 1)
    }

    /// The verification state of each value of a form that has one, read inside the transaction.
    ///
    /// # Errors
    /// On database failure.
    pub async fn item_sdv_of(&mut self, form_data_id: i64) -> Result<Vec<ItemSdvRow>, StoreError> {
        Ok(on_tx!(self, c => sqlx::query_as(item_sdv_select!(
            "WHERE s.form_data_id = $1 ORDER BY s.group_oid, s.row_number, s.item_oid"))
            .bind(form_data_id).fetch_all(c).await?))
    }

    /// Records the verification of one value (`verified`, keeping the value as seen) or its
    /// withdrawal (`not_verified`) by the acting user.
    ///
    /// # Errors
    /// On database failure.
    pub async fn set_item_sdv(
        &mut self,
        form_data_id: i64,
        mark: &ItemSdvMark<'_>,
        status: &str,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let by = self.actor().user_id;
        let verified = status == "verified";
        let (at, who) = if verified { (Some(now), by) } else { (None, None) };
        on_tx!(self, c => sqlx::query(
            "INSERT INTO item_sdv (form_data_id, group_oid, row_number, item_oid, status, value, null_flavour, \
             verified_at, verified_by, changed_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10) \
             ON CONFLICT (form_data_id, group_oid, row_number, item_oid) DO UPDATE SET status = excluded.status, \
             value = excluded.value, null_flavour = excluded.null_flavour, \
             verified_at = COALESCE(excluded.verified_at, item_sdv.verified_at), \
             verified_by = COALESCE(excluded.verified_by, item_sdv.verified_by), \
             changed_at = NULL, updated_at = excluded.updated_at")
            .bind(form_data_id).bind(mark.group_oid).bind(mark.row_number).bind(mark.item_oid).bind(status)
            .bind(mark.value).bind(mark.null_flavour).bind(at).bind(who).bind(now)
            .execute(c).await?.rows_affected());
        Ok(())
    }

    /// Marks every verified value of a form that no longer holds what was verified (changed,
    /// cleared, or its row removed) as changed since verification; returns those values
    /// (group OID, row, item OID) in form order.
    ///
    /// # Errors
    /// On database failure.
    pub async fn item_sdv_reset_changed(
        &mut self,
        form_data_id: i64,
    ) -> Result<Vec<(String, i32, String)>, StoreError> {
        let now = self.now();
        let mut out: Vec<(String, i32, String)> = on_tx!(self, c => sqlx::query_as(
            "UPDATE item_sdv SET status = 'changed_since_verified', changed_at = $1, updated_at = $1 \
             WHERE form_data_id = $2 AND status = 'verified' AND NOT EXISTS (SELECT 1 FROM item_data d \
             WHERE d.form_data_id = item_sdv.form_data_id AND d.group_oid = item_sdv.group_oid \
             AND d.row_number = item_sdv.row_number AND d.item_oid = item_sdv.item_oid AND d.deleted = $3 \
             AND (d.value = item_sdv.value OR (d.value IS NULL AND item_sdv.value IS NULL)) \
             AND (d.null_flavour = item_sdv.null_flavour OR (d.null_flavour IS NULL AND item_sdv.null_flavour IS NULL))) \
             RETURNING group_oid, row_number, item_oid")
            .bind(now).bind(form_data_id).bind(false).fetch_all(c).await?);
        out.sort();
        Ok(out)
    }
}
