//! Study designs: the draft document and the published, immutable versions.

use time::OffsetDateTime;

use crate::db::StoreError;
use crate::{Store, WriteTx};

/// A published design version.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DesignVersionRow {
    pub id: i64,
    pub study_id: i64,
    pub number: i32,
    pub hash: String,
    pub document: String,
    pub notes: Option<String>,
    pub published_at: OffsetDateTime,
    pub published_by: Option<i64>,
    pub production_at: Option<OffsetDateTime>,
    pub production_by: Option<i64>,
}

/// The editable draft of a study's design.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DesignDraftRow {
    pub study_id: i64,
    pub document: String,
    pub updated_at: OffsetDateTime,
    pub updated_by: Option<i64>,
}

macro_rules! version_select {
    ($tail:literal) => {
        concat!(
            "SELECT id, study_id, number, hash, document, notes, published_at, published_by, production_at, \
             production_by FROM design_versions ",
            $tail
        )
    };
}

impl Store {
    /// # Errors
    /// On database failure.
    pub async fn design_draft(&self, study_id: i64) -> Result<Option<DesignDraftRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(
            "SELECT study_id, document, updated_at, updated_by FROM design_drafts WHERE study_id = $1")
            .bind(study_id).fetch_optional(p).await?))
    }

    /// Every published version of a study, oldest first.
    ///
    /// # Errors
    /// On database failure.
    pub async fn design_versions(&self, study_id: i64) -> Result<Vec<DesignVersionRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(version_select!("WHERE study_id = $1 ORDER BY number"))
            .bind(study_id).fetch_all(p).await?))
    }

    /// One published version by number.
    ///
    /// # Errors
    /// On database failure.
    pub async fn design_version(&self, study_id: i64, number: i32) -> Result<Option<DesignVersionRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(version_select!("WHERE study_id = $1 AND number = $2"))
            .bind(study_id).bind(number).fetch_optional(p).await?))
    }

    /// The newest version in Test (every published version is in Test).
    ///
    /// # Errors
    /// On database failure.
    pub async fn design_test_version(&self, study_id: i64) -> Result<Option<DesignVersionRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(version_select!("WHERE study_id = $1 ORDER BY number DESC LIMIT 1"))
            .bind(study_id).fetch_optional(p).await?))
    }

    /// The number of the version in Production, if any (without reading the document).
    ///
    /// # Errors
    /// On database failure.
    pub async fn design_production_number(&self, study_id: i64) -> Result<Option<i32>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_scalar(
            "SELECT number FROM design_versions WHERE study_id = $1 AND production_at IS NOT NULL \
             ORDER BY number DESC LIMIT 1")
            .bind(study_id).fetch_optional(p).await?))
    }

    /// The newest version promoted to Production.
    ///
    /// # Errors
    /// On database failure.
    pub async fn design_production_version(&self, study_id: i64) -> Result<Option<DesignVersionRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(version_select!(
            "WHERE study_id = $1 AND production_at IS NOT NULL ORDER BY number DESC LIMIT 1"))
            .bind(study_id).fetch_optional(p).await?))
    }
}

impl WriteTx {
    /// Replaces (or creates) the draft of a study.
    ///
    /// # Errors
    /// On database failure.
    pub async fn save_design_draft(&mut self, study_id: i64, document: &str) -> Result<(), StoreError> {
        let now = self.now();
        let by = self.actor().user_id;
        on_tx!(self, c => sqlx::query(
            "INSERT INTO design_drafts (study_id, document, updated_at, updated_by) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (study_id) DO UPDATE SET document = excluded.document, updated_at = excluded.updated_at, \
             updated_by = excluded.updated_by")
            .bind(study_id).bind(document).bind(now).bind(by).execute(c).await?.rows_affected());
        Ok(())
    }

    /// The draft, read inside the transaction (so a publish sees what it commits).
    ///
    /// # Errors
    /// On database failure.
    pub async fn design_draft(&mut self, study_id: i64) -> Result<Option<String>, StoreError> {
        Ok(on_tx!(self, c => sqlx::query_scalar("SELECT document FROM design_drafts WHERE study_id = $1")
            .bind(study_id).fetch_optional(c).await?))
    }

    /// The newest published version, read inside the transaction.
    ///
    /// # Errors
    /// On database failure.
    pub async fn latest_design_version(&mut self, study_id: i64) -> Result<Option<DesignVersionRow>, StoreError> {
        Ok(on_tx!(self, c => sqlx::query_as(version_select!("WHERE study_id = $1 ORDER BY number DESC LIMIT 1"))
            .bind(study_id).fetch_optional(c).await?))
    }

    /// Appends a published version (in Test). Its number is the next one for the study; the
    /// unique key refuses a concurrent publish of the same number.
    ///
    /// # Errors
    /// On database failure, or [`StoreError::Conflict`] when another publish took the number.
    pub async fn insert_design_version(
        &mut self,
        study_id: i64,
        number: i32,
        hash: &str,
        document: &str,
        notes: Option<&str>,
    ) -> Result<i64, StoreError> {
        let now = self.now();
        let by = self.actor().user_id;
        Ok(on_tx!(self, c => sqlx::query_scalar(
            "INSERT INTO design_versions (study_id, number, hash, document, notes, published_at, published_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id")
            .bind(study_id).bind(number).bind(hash).bind(document).bind(notes).bind(now).bind(by)
            .fetch_one(c).await?))
    }

    /// Promotes a version to Production (once; the trigger refuses changing it afterwards).
    ///
    /// # Errors
    /// On database failure.
    pub async fn promote_design_version(&mut self, id: i64) -> Result<u64, StoreError> {
        let now = self.now();
        let by = self.actor().user_id;
        Ok(on_tx!(self, c => sqlx::query(
            "UPDATE design_versions SET production_at = $1, production_by = $2 WHERE id = $3 AND production_at IS NULL")
            .bind(now).bind(by).bind(id).execute(c).await?.rows_affected()))
    }
}
