//! Studies and sites.

use crate::db::StoreError;
use crate::{Store, WriteTx};
use time::OffsetDateTime;

/// A study or site row; `details` and `parameters` are JSON text.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StudyRow {
    pub id: i64,
    pub parent_id: Option<i64>,
    pub oid: String,
    pub protocol_id: String,
    pub name: String,
    pub status: String,
    pub status_before_removal: Option<String>,
    pub details: String,
    pub parameters: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

macro_rules! study_select {
    ($tail:literal) => {
        concat!(
            "SELECT id, parent_id, oid, protocol_id, name, status, status_before_removal, details, parameters, \
             created_at, updated_at FROM studies ",
            $tail
        )
    };
}

impl Store {
    /// # Errors
    /// On database failure.
    pub async fn study_by_id(&self, id: i64) -> Result<Option<StudyRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(study_select!("WHERE id = $1")).bind(id).fetch_optional(p).await?))
    }

    /// A study or site by OID.
    ///
    /// # Errors
    /// On database failure.
    pub async fn study_by_oid(&self, oid: &str) -> Result<Option<StudyRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(study_select!("WHERE oid = $1")).bind(oid).fetch_optional(p).await?))
    }

    /// A study or site by protocol ID (case-insensitive).
    ///
    /// # Errors
    /// On database failure.
    pub async fn study_by_protocol_id(&self, protocol_id: &str) -> Result<Option<StudyRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(study_select!("WHERE protocol_id_key = $1"))
            .bind(protocol_id.to_lowercase()).fetch_optional(p).await?))
    }

    /// Every top-level study, by protocol ID.
    ///
    /// # Errors
    /// On database failure.
    pub async fn studies(&self) -> Result<Vec<StudyRow>, StoreError> {
        Ok(
            on_db!(self.db(), p => sqlx::query_as(study_select!("WHERE parent_id IS NULL ORDER BY protocol_id_key")).fetch_all(p).await?),
        )
    }

    /// The sites of a study, by protocol ID.
    ///
    /// # Errors
    /// On database failure.
    pub async fn sites_of(&self, study_id: i64) -> Result<Vec<StudyRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(study_select!("WHERE parent_id = $1 ORDER BY protocol_id_key"))
            .bind(study_id).fetch_all(p).await?))
    }

    /// Whether an OID is taken by any study or site.
    ///
    /// # Errors
    /// On database failure.
    pub async fn oid_taken(&self, oid: &str) -> Result<bool, StoreError> {
        let n: i64 = on_db!(self.db(), p => sqlx::query_scalar("SELECT COUNT(*) FROM studies WHERE oid = $1").bind(oid).fetch_one(p).await?);
        Ok(n > 0)
    }
}

/// A new study or site.
#[derive(Debug, Clone)]
pub struct NewStudy<'a> {
    pub parent_id: Option<i64>,
    pub oid: &'a str,
    pub protocol_id: &'a str,
    pub name: &'a str,
    pub status: &'a str,
    pub details: &'a str,
    pub parameters: &'a str,
}

impl WriteTx {
    /// Inserts a study or site; returns its id.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the protocol ID or OID is taken.
    pub async fn insert_study(&mut self, s: &NewStudy<'_>) -> Result<i64, StoreError> {
        let now = self.now();
        Ok(on_tx!(self, c => sqlx::query_scalar(
            "INSERT INTO studies (parent_id, oid, protocol_id, protocol_id_key, name, status, details, parameters, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING id")
            .bind(s.parent_id).bind(s.oid).bind(s.protocol_id).bind(s.protocol_id.to_lowercase()).bind(s.name)
            .bind(s.status).bind(s.details).bind(s.parameters).bind(now).fetch_one(c).await?))
    }

    /// Whether an OID is taken, seen from inside the transaction.
    ///
    /// # Errors
    /// On database failure.
    pub async fn oid_taken(&mut self, oid: &str) -> Result<bool, StoreError> {
        let n: i64 = on_tx!(self, c => sqlx::query_scalar("SELECT COUNT(*) FROM studies WHERE oid = $1").bind(oid).fetch_one(c).await?);
        Ok(n > 0)
    }

    /// Re-reads a study or site inside the transaction, locking it on PostgreSQL.
    ///
    /// # Errors
    /// On database failure.
    pub async fn study_for_update(&mut self, id: i64) -> Result<Option<StudyRow>, StoreError> {
        Ok(match &mut self.tx {
            crate::tx::Tx::Sqlite(t) => {
                sqlx::query_as(study_select!("WHERE id = $1")).bind(id).fetch_optional(&mut **t).await?
            }
            crate::tx::Tx::Postgres(t) => {
                sqlx::query_as(study_select!("WHERE id = $1 FOR UPDATE")).bind(id).fetch_optional(&mut **t).await?
            }
        })
    }

    /// Replaces the details (and the protocol ID and name they carry) and parameters.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the new protocol ID is taken.
    pub async fn update_study(
        &mut self,
        id: i64,
        protocol_id: &str,
        name: &str,
        details: &str,
        parameters: &str,
    ) -> Result<(), StoreError> {
        let now = self.now();
        on_tx!(self, c => sqlx::query(
            "UPDATE studies SET protocol_id = $1, protocol_id_key = $2, name = $3, details = $4, parameters = $5, updated_at = $6 WHERE id = $7")
            .bind(protocol_id).bind(protocol_id.to_lowercase()).bind(name).bind(details).bind(parameters).bind(now).bind(id)
            .execute(c).await?.rows_affected());
        Ok(())
    }

    /// Sets the status (and the status to return to on restore).
    ///
    /// # Errors
    /// On database failure.
    pub async fn set_study_status(
        &mut self,
        id: i64,
        status: &str,
        before_removal: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = self.now();
        on_tx!(self, c => sqlx::query("UPDATE studies SET status = $1, status_before_removal = $2, updated_at = $3 WHERE id = $4")
            .bind(status).bind(before_removal).bind(now).bind(id).execute(c).await?.rows_affected());
        Ok(())
    }
}
