//! Dataset definitions, versioned: a save inserts the next version (rows are never updated).

use time::OffsetDateTime;

use crate::db::StoreError;
use crate::{Store, WriteTx};

/// A dataset version as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DatasetRow {
    pub id: i64,
    pub study_id: i64,
    pub name: String,
    pub version: i32,
    /// JSON.
    pub definition: String,
    pub created_by: Option<i64>,
    pub created_by_username: Option<String>,
    pub created_at: OffsetDateTime,
}

macro_rules! dataset_select {
    ($tail:literal) => {
        concat!(
            "SELECT d.id, d.study_id, d.name, d.version, d.definition, d.created_by, u.username AS created_by_username, \
             d.created_at FROM datasets d LEFT JOIN users u ON u.id = d.created_by ",
            $tail
        )
    };
}

impl Store {
    /// The newest version of a study's dataset by name (case-insensitive).
    ///
    /// # Errors
    /// On database failure.
    pub async fn dataset(&self, study_id: i64, name: &str) -> Result<Option<DatasetRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(dataset_select!(
            "WHERE d.study_id = $1 AND LOWER(d.name) = LOWER($2) ORDER BY d.version DESC LIMIT 1"))
            .bind(study_id).bind(name).fetch_optional(p).await?))
    }

    /// One version of a study's dataset.
    ///
    /// # Errors
    /// On database failure.
    pub async fn dataset_version(
        &self,
        study_id: i64,
        name: &str,
        version: i32,
    ) -> Result<Option<DatasetRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(dataset_select!(
            "WHERE d.study_id = $1 AND LOWER(d.name) = LOWER($2) AND d.version = $3"))
            .bind(study_id).bind(name).bind(version).fetch_optional(p).await?))
    }

    /// The newest version of each of a study's datasets, by name.
    ///
    /// # Errors
    /// On database failure.
    pub async fn datasets_of(&self, study_id: i64) -> Result<Vec<DatasetRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(dataset_select!(
            "WHERE d.study_id = $1 AND d.version = (SELECT MAX(x.version) FROM datasets x \
             WHERE x.study_id = d.study_id AND x.name = d.name) ORDER BY d.name"))
            .bind(study_id).fetch_all(p).await?))
    }
}

impl WriteTx {
    /// Saves the next version of a dataset; returns its version number.
    ///
    /// # Errors
    /// On database failure.
    pub async fn save_dataset(&mut self, study_id: i64, name: &str, definition: &str) -> Result<i32, StoreError> {
        let now = self.now();
        let by = self.actor().user_id;
        let current: Option<i32> = on_tx!(self, c => sqlx::query_scalar(
            "SELECT MAX(version) FROM datasets WHERE study_id = $1 AND LOWER(name) = LOWER($2)")
            .bind(study_id).bind(name).fetch_one(c).await?);
        let version = current.unwrap_or(0) + 1;
        on_tx!(self, c => sqlx::query(
            "INSERT INTO datasets (study_id, name, version, definition, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(study_id).bind(name).bind(version).bind(definition).bind(by).bind(now)
            .execute(c).await?.rows_affected());
        Ok(version)
    }
}
