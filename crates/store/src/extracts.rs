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
    /// Only participants with changes after this time.
    pub changed_since: Option<OffsetDateTime>,
    /// When the retention setting removed its files.
    pub pruned_at: Option<OffsetDateTime>,
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
    pub changed_since: Option<OffsetDateTime>,
}

macro_rules! run_select {
    ($tail:literal) => {
        concat!(
            "SELECT r.id, r.study_id, r.scope_oid, r.format, r.include_phi, r.status, r.participants, r.total, \
             r.files, r.design_version, r.cutoff_at, r.error, r.created_by, u.username AS created_by_username, \
             r.created_at, r.finished_at, r.dataset_name, r.dataset_version, r.changed_since, r.pruned_at \
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
             dataset_name, dataset_version, changed_since) VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $8, $9, $10)")
            .bind(r.id).bind(r.study_id).bind(r.scope_oid).bind(r.format).bind(r.include_phi).bind(r.created_by).bind(now)
            .bind(r.dataset.map(|d| d.0)).bind(r.dataset.map(|d| d.1)).bind(r.changed_since)
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

/// A scheduled extract as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScheduleRow {
    pub id: i64,
    pub study_id: i64,
    pub scope_oid: String,
    pub format: String,
    pub dataset_name: Option<String>,
    pub include_phi: bool,
    pub every: String,
    pub at_minute: i32,
    pub weekday: Option<i32>,
    pub changed_only: bool,
    pub active: bool,
    pub last_run_at: Option<OffsetDateTime>,
    pub last_run_id: Option<String>,
    pub created_by: Option<i64>,
    pub created_by_username: Option<String>,
    pub created_at: OffsetDateTime,
}

/// A schedule to add.
#[derive(Debug, Clone)]
pub struct NewSchedule<'a> {
    pub study_id: i64,
    pub scope_oid: &'a str,
    pub format: &'a str,
    pub dataset_name: Option<&'a str>,
    pub include_phi: bool,
    pub every: &'a str,
    pub at_minute: i32,
    pub weekday: Option<i32>,
    pub changed_only: bool,
    pub created_by: Option<i64>,
}

macro_rules! schedule_select {
    ($tail:literal) => {
        concat!(
            "SELECT s.id, s.study_id, s.scope_oid, s.format, s.dataset_name, s.include_phi, s.every, s.at_minute, \
             s.weekday, s.changed_only, s.active, s.last_run_at, s.last_run_id, s.created_by, \
             u.username AS created_by_username, s.created_at FROM extract_schedules s \
             LEFT JOIN users u ON u.id = s.created_by ",
            $tail
        )
    };
}

impl Store {
    /// Adds a schedule; returns its id.
    ///
    /// # Errors
    /// On database failure.
    pub async fn insert_schedule(&self, s: &NewSchedule<'_>) -> Result<i64, StoreError> {
        let now = self.clock().now();
        Ok(on_db!(self.db(), p => sqlx::query_scalar(
            "INSERT INTO extract_schedules (study_id, scope_oid, format, dataset_name, include_phi, every, at_minute, \
             weekday, changed_only, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             RETURNING id")
            .bind(s.study_id).bind(s.scope_oid).bind(s.format).bind(s.dataset_name).bind(s.include_phi).bind(s.every)
            .bind(s.at_minute).bind(s.weekday).bind(s.changed_only).bind(s.created_by).bind(now)
            .fetch_one(p).await?))
    }

    /// A schedule by id.
    ///
    /// # Errors
    /// On database failure.
    pub async fn schedule(&self, id: i64) -> Result<Option<ScheduleRow>, StoreError> {
        Ok(
            on_db!(self.db(), p => sqlx::query_as(schedule_select!("WHERE s.id = $1")).bind(id).fetch_optional(p).await?),
        )
    }

    /// A study's schedules.
    ///
    /// # Errors
    /// On database failure.
    pub async fn schedules_of(&self, study_id: i64) -> Result<Vec<ScheduleRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(schedule_select!("WHERE s.study_id = $1 ORDER BY s.id"))
            .bind(study_id).fetch_all(p).await?))
    }

    /// Every active schedule.
    ///
    /// # Errors
    /// On database failure.
    pub async fn active_schedules(&self) -> Result<Vec<ScheduleRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(schedule_select!("WHERE s.active = TRUE ORDER BY s.id"))
            .fetch_all(p).await?))
    }

    /// Claims a schedule's run due at `due` (once, whichever server asks first): `true` when
    /// this caller claimed it.
    ///
    /// # Errors
    /// On database failure.
    pub async fn claim_schedule(&self, id: i64, due: OffsetDateTime, now: OffsetDateTime) -> Result<bool, StoreError> {
        let n = on_db!(self.db(), p => sqlx::query(
            "UPDATE extract_schedules SET last_run_at = $1 WHERE id = $2 AND active = TRUE \
             AND (last_run_at IS NULL OR last_run_at < $3)")
            .bind(now).bind(id).bind(due).execute(p).await?.rows_affected());
        Ok(n == 1)
    }

    /// Records the run a schedule started.
    ///
    /// # Errors
    /// On database failure.
    pub async fn schedule_ran(&self, id: i64, run_id: &str) -> Result<(), StoreError> {
        on_db!(self.db(), p => sqlx::query("UPDATE extract_schedules SET last_run_id = $1 WHERE id = $2")
            .bind(run_id).bind(id).execute(p).await?.rows_affected());
        Ok(())
    }

    /// Stops a schedule (kept for the record).
    ///
    /// # Errors
    /// On database failure.
    pub async fn deactivate_schedule(&self, id: i64) -> Result<bool, StoreError> {
        Ok(
            on_db!(self.db(), p => sqlx::query("UPDATE extract_schedules SET active = FALSE WHERE id = $1 AND active = TRUE")
            .bind(id).execute(p).await?.rows_affected())
                == 1,
        )
    }

    /// Finished runs older than `before` whose files are still there.
    ///
    /// # Errors
    /// On database failure.
    pub async fn runs_to_prune(&self, before: OffsetDateTime) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = on_db!(self.db(), p => sqlx::query_as(
            "SELECT id FROM extract_runs WHERE finished_at IS NOT NULL AND finished_at < $1 AND pruned_at IS NULL \
             AND status IN ('completed', 'failed', 'cancelled') ORDER BY finished_at")
            .bind(before).fetch_all(p).await?);
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Records that a run's files were removed.
    ///
    /// # Errors
    /// On database failure.
    pub async fn mark_pruned(&self, id: &str) -> Result<(), StoreError> {
        let now = self.clock().now();
        on_db!(self.db(), p => sqlx::query("UPDATE extract_runs SET pruned_at = $1 WHERE id = $2")
            .bind(now).bind(id).execute(p).await?.rows_affected());
        Ok(())
    }
}
