//! Files uploaded as item values.

use time::OffsetDateTime;

use crate::db::StoreError;
use crate::{Store, WriteTx};

/// A stored file without its content.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredFileRow {
    pub id: i64,
    pub study_id: i64,
    pub participant_id: i64,
    pub file_name: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub sha256: String,
    pub uploaded_at: OffsetDateTime,
}

impl Store {
    /// A file's description.
    ///
    /// # Errors
    /// On database failure.
    pub async fn stored_file(&self, id: i64) -> Result<Option<StoredFileRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(
            "SELECT id, study_id, participant_id, file_name, content_type, size_bytes, sha256, uploaded_at \
             FROM stored_files WHERE id = $1")
            .bind(id).fetch_optional(p).await?))
    }

    /// A file's content.
    ///
    /// # Errors
    /// On database failure.
    pub async fn stored_file_content(&self, id: i64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_scalar("SELECT content FROM stored_files WHERE id = $1")
            .bind(id).fetch_optional(p).await?))
    }
}

impl WriteTx {
    /// Stores a file; returns its id.
    ///
    /// # Errors
    /// On database failure.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_stored_file(
        &mut self,
        study_id: i64,
        participant_id: i64,
        file_name: &str,
        content_type: &str,
        sha256: &str,
        content: &[u8],
    ) -> Result<i64, StoreError> {
        let now = self.now();
        let by = self.actor().user_id;
        let size = i64::try_from(content.len()).unwrap_or(i64::MAX);
        Ok(on_tx!(self, c => sqlx::query_scalar(
            "INSERT INTO stored_files (study_id, participant_id, file_name, content_type, size_bytes, sha256, content, \
             uploaded_by, uploaded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id")
            .bind(study_id).bind(participant_id).bind(file_name).bind(content_type).bind(size).bind(sha256)
            .bind(content).bind(by).bind(now).fetch_one(c).await?))
    }
}
