//! Extract runs: their state, progress and the files they wrote. Bookkeeping outside audited
//! transactions (an extract changes no clinical record); who ran what is in the run row.

use time::OffsetDateTime;

use crate::Store;
use crate::db::StoreError;

/// An extract run as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExtractRunRow {
    pub id: String,
    pub study_id: i64,
    pub scope_oid: String,
    pub format: String,
    pub include_phi: bool,
    pub status: String,
    pub participants: i32,
    pub total: Option<i32>,
    /// JSON `[{name, bytes, sha256}]`.
    pub files: Option<String>,
    pub design_version: Option<i32>,
    pub cutoff_at: Option<OffsetDateTime>,
    pub error: Option<String>,
    pub created_by: Option<i64>,
    pub created_by_username: Option<String>,
    pub created_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
    pub dataset_name: Option<String>,
    pub dataset_version: Option<i32>,
}

/// A run to queue.
#[derive(Debug, Clone)]
pub struct NewExtractRun<'a> {
    pub id: &'a str,
    pub study_id: i64,
    pub scope_oid: &'a str,
    pub format: &'a str,
    pub include_phi: bool,
    pub created_by: Option<i64>,
    /// The dataset (name, version) the run extracts; `None`: every item.
    pub dataset: Option<(&'a str, i32)>,
}

macro_rules! run_select {
    ($tail:literal) => {
        concat!(
            "SELECT r.id, r.study_id, r.scope_oid, r.format, r.include_phi, r.status, r.participants, r.total, \
             r.files, r.design_version, r.cutoff_at, r.error, r.created_by, u.username AS created_by_username, \
             r.created_at, r.finished_at, r.dataset_name, r.dataset_version \
             FROM extract_runs r LEFT JOIN users u ON u.id = r.created_by ",
            $tail
        )
    };
}

impl Store {
    /// Queues a run.
    ///
    /// # Errors
    /// On database failure.
    pub async fn insert_extract_run(&self, r: &NewExtractRun<'_>) -> Result<(), StoreError> {
        let now = self.clock().now();
        on_db!(self.db(), p => sqlx::query(
            "INSERT INTO extract_runs (id, study_id, scope_oid, format, include_phi, status, created_by, created_at, \
             dataset_name, dataset_version) VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $8, $9)")
            .bind(r.id).bind(r.study_id).bind(r.scope_oid).bind(r.format).bind(r.include_phi).bind(r.created_by).bind(now)
            .bind(r.dataset.map(|d| d.0)).bind(r.dataset.map(|d| d.1))
            .execute(p).await?.rows_affected());
        Ok(())
    }

    /// Marks a queued run running, with the data cut-off time, the design version and the number
    /// of participants it will read; `false` when it was not queued (cancelled meanwhile).
    ///
    /// # Errors
    /// On database failure.
    pub async fn start_extract_run(
        &self,
        id: &str,
        cutoff: OffsetDateTime,
        design_version: Option<i32>,
        total: i32,
    ) -> Result<bool, StoreError> {
        let n = on_db!(self.db(), p => sqlx::query(
            "UPDATE extract_runs SET status = 'running', cutoff_at = $1, design_version = $2, total = $3 \
             WHERE id = $4 AND status = 'queued'")
            .bind(cutoff).bind(design_version).bind(total).bind(id).execute(p).await?.rows_affected());
        Ok(n == 1)
    }

    /// Records how many participants a running run has written.
    ///
    /// # Errors
    /// On database failure.
    pub async fn extract_progress(&self, id: &str, participants: i32) -> Result<(), StoreError> {
        on_db!(self.db(), p => sqlx::query("UPDATE extract_runs SET participants = $1 WHERE id = $2")
            .bind(participants).bind(id).execute(p).await?.rows_affected());
        Ok(())
    }

    /// Records how a run ended.
    ///
    /// # Errors
    /// On database failure.
    pub async fn finish_extract_run(
        &self,
        id: &str,
        status: &str,
        files: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = self.clock().now();
        on_db!(self.db(), p => sqlx::query(
            "UPDATE extract_runs SET status = $1, files = $2, error = $3, finished_at = $4 WHERE id = $5")
            .bind(status).bind(files).bind(error).bind(now).bind(id).execute(p).await?.rows_affected());
        Ok(())
    }

    /// A run by id.
    ///
    /// # Errors
    /// On database failure.
    pub async fn extract_run(&self, id: &str) -> Result<Option<ExtractRunRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(run_select!("WHERE r.id = $1")).bind(id).fetch_optional(p).await?))
    }

    /// A study's runs, newest first.
    ///
    /// # Errors
    /// On database failure.
    pub async fn extract_runs_of(&self, study_id: i64) -> Result<Vec<ExtractRunRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(run_select!("WHERE r.study_id = $1 ORDER BY r.created_at DESC, r.id"))
            .bind(study_id).fetch_all(p).await?))
    }

    /// The runs still queued (oldest first): a starting server runs them.
    ///
    /// # Errors
    /// On database failure.
    pub async fn queued_extract_runs(&self) -> Result<Vec<ExtractRunRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(run_select!("WHERE r.status = 'queued' ORDER BY r.created_at, r.id"))
            .fetch_all(p).await?))
    }

    /// Marks the runs a stopped server left running as failed, with `reason`; returns how many.
    ///
    /// # Errors
    /// On database failure.
    pub async fn fail_interrupted_extracts(&self, reason: &str) -> Result<u64, StoreError> {
        let now = self.clock().now();
        Ok(on_db!(self.db(), p => sqlx::query(
            "UPDATE extract_runs SET status = 'failed', error = $1, finished_at = $2 WHERE status = 'running'")
            .bind(reason).bind(now).execute(p).await?.rows_affected()))
    }

    /// Cancels a queued run; `false` when it was not queued.
    ///
    /// # Errors
    /// On database failure.
    pub async fn cancel_queued_extract(&self, id: &str) -> Result<bool, StoreError> {
        let now = self.clock().now();
        let n = on_db!(self.db(), p => sqlx::query(
            "UPDATE extract_runs SET status = 'cancelled', finished_at = $1 WHERE id = $2 AND status = 'queued'")
            .bind(now).bind(id).execute(p).await?.rows_affected());
        Ok(n == 1)
    }

    /// How many participants an extract of a study (or of these sites) reads.
    ///
    /// # Errors
    /// On database failure.
    pub async fn count_extract_participants(&self, study_id: i64, site_ids: Option<&[i64]>) -> Result<i64, StoreError> {
        let sites: Vec<Option<i64>> = match site_ids {
            None => vec![None],
            Some(ids) => ids.iter().copied().map(Some).collect(),
        };
        let mut total = 0;
        for site in sites {
            let n: i64 = on_db!(self.db(), p => sqlx::query_scalar(
                "SELECT COUNT(*) FROM participants WHERE study_id = $1 AND ($2 IS NULL OR site_id = $2) \
                 AND status NOT IN ('removed', 'auto_removed')")
                .bind(study_id).bind(site).fetch_one(p).await?);
            total += n;
        }
        Ok(total)
    }
}
