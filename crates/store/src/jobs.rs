//! Background jobs: a row per job with its state, outcome and log. Job rows are bookkeeping
//! (the data a job changes is audited in the job's own transactions), so they are written
//! outside audited transactions.

use time::OffsetDateTime;

use crate::Store;
use crate::db::StoreError;

/// A job as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: String,
    pub study_id: i64,
    pub kind: String,
    pub status: String,
    /// `all-or-nothing`, `per-record` or `dry-run` (unknown for jobs from before modes).
    pub mode: Option<String>,
    pub file_name: String,
    pub summary: Option<String>,
    pub log: Option<String>,
    pub error: Option<String>,
    pub created_by: Option<i64>,
    pub created_by_username: Option<String>,
    pub created_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
}

macro_rules! job_select {
    ($tail:literal) => {
        concat!(
            "SELECT j.id, j.study_id, j.kind, j.status, j.mode, j.file_name, j.summary, j.log, j.error, j.created_by, \
             u.username AS created_by_username, j.created_at, j.finished_at FROM jobs j \
             LEFT JOIN users u ON u.id = j.created_by ",
            $tail
        )
    };
}

impl Store {
    /// Records a job that starts now.
    ///
    /// # Errors
    /// On database failure.
    pub async fn insert_job(
        &self,
        id: &str,
        study_id: i64,
        kind: &str,
        mode: &str,
        file_name: &str,
        created_by: Option<i64>,
    ) -> Result<(), StoreError> {
        let now = self.clock().now();
        on_db!(self.db(), p => sqlx::query(
            "INSERT INTO jobs (id, study_id, kind, status, mode, file_name, created_by, created_at) \
             VALUES ($1, $2, $3, 'in_progress', $4, $5, $6, $7)")
            .bind(id).bind(study_id).bind(kind).bind(mode).bind(file_name).bind(created_by).bind(now)
            .execute(p).await?.rows_affected());
        Ok(())
    }

    /// Records how a job ended.
    ///
    /// # Errors
    /// On database failure.
    pub async fn finish_job(
        &self,
        id: &str,
        status: &str,
        summary: Option<&str>,
        log: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = self.clock().now();
        on_db!(self.db(), p => sqlx::query(
            "UPDATE jobs SET status = $1, summary = $2, log = $3, error = $4, finished_at = $5 WHERE id = $6")
            .bind(status).bind(summary).bind(log).bind(error).bind(now).bind(id)
            .execute(p).await?.rows_affected());
        Ok(())
    }

    /// Marks the jobs still running as failed, with `reason`: called when a server starts, as
    /// a job that was running when its server stopped did not finish (an all-or-nothing import
    /// rolled back). Returns how many there were.
    ///
    /// # Errors
    /// On database failure.
    pub async fn fail_interrupted_jobs(&self, reason: &str) -> Result<u64, StoreError> {
        let now = self.clock().now();
        Ok(on_db!(self.db(), p => sqlx::query(
            "UPDATE jobs SET status = 'failed', error = $1, finished_at = $2 WHERE status = 'in_progress'")
            .bind(reason).bind(now).execute(p).await?.rows_affected()))
    }

    /// A job by id.
    ///
    /// # Errors
    /// On database failure.
    pub async fn job(&self, id: &str) -> Result<Option<JobRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(job_select!("WHERE j.id = $1")).bind(id).fetch_optional(p).await?))
    }

    /// The jobs of a study, newest first.
    ///
    /// # Errors
    /// On database failure.
    pub async fn jobs_of(&self, study_id: i64) -> Result<Vec<JobRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(job_select!("WHERE j.study_id = $1 ORDER BY j.created_at DESC, j.id"))
            .bind(study_id).fetch_all(p).await?))
    }

    /// Deletes a finished job's record (its log and outcome; the data it imported stay).
    ///
    /// # Errors
    /// On database failure.
    pub async fn delete_job(&self, id: &str) -> Result<bool, StoreError> {
        let n = on_db!(self.db(), p => sqlx::query("DELETE FROM jobs WHERE id = $1 AND status <> 'in_progress'")
            .bind(id).execute(p).await?.rows_affected());
        Ok(n == 1)
    }
}
