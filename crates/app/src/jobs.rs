//! Imports as background jobs (OpenClinica 4's way): starting one answers at once with the job's
//! id; the import runs in its own task; its state, progress, outcome and CSV log are read by id;
//! a running job can be cancelled (all or nothing: nothing is written; per record: the forms
//! written before stay); a finished job's record may be deleted by whoever started it.
//!
//! Progress is held in memory by the server running the job (an all-or-nothing import holds the
//! database's write transaction, so it is not written there). A job still marked running when a
//! server starts was interrupted by a stop or a crash: it is marked failed, never left running
//! (see [`App::fail_interrupted_jobs`]); an all-or-nothing import interrupted so wrote nothing.

use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;

use crate::auth::Principal;
use crate::import::{ImportProgress, ImportSource, ProgressView};
use crate::{App, AppError};

/// How an import job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportMode {
    /// One transaction; any error rejects the whole file.
    AllOrNothing,
    /// Every clean form in its own transaction; a log row per form.
    PerRecord,
    /// Everything checked, nothing written.
    DryRun,
}

impl ImportMode {
    /// The mode by its API name (`all-or-nothing`, `per-record`, `dry-run`).
    ///
    /// # Errors
    /// [`AppError::Validation`] naming the accepted names.
    pub fn parse(name: &str) -> Result<Self, AppError> {
        match name.trim() {
            "all-or-nothing" => Ok(Self::AllOrNothing),
            "per-record" => Ok(Self::PerRecord),
            "dry-run" => Ok(Self::DryRun),
            other => Err(AppError::invalid("mode", format!("'{other}' is not all-or-nothing, per-record or dry-run"))),
        }
    }

    /// The API name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllOrNothing => "all-or-nothing",
            Self::PerRecord => "per-record",
            Self::DryRun => "dry-run",
        }
    }
}

/// The progress of the jobs this server runs, by job id.
pub(crate) type RunningJobs = std::collections::HashMap<String, Arc<ImportProgress>>;

/// A job as clients see it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: String,
    /// `clinical_import`.
    pub kind: String,
    /// `in_progress`, `completed`, `failed` or `cancelled`.
    pub status: String,
    /// `all-or-nothing`, `per-record` or `dry-run`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Where a running job stands (on the server running it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressView>,
    pub study_oid: String,
    pub file_name: String,
    pub created_by: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// The import's report (counts, problems), once finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A job's log, if it can be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobLog {
    InProgress,
    Missing,
    Csv { file_name: String, csv: String },
}

/// A random version-4 UUID.
pub(crate) fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

impl App {
    /// Starts an import job for a study (by study or site OID; `None`: the study the file names)
    /// and returns at once.
    ///
    /// # Errors
    /// [`AppError::NotFound`] for an unknown or invisible study; [`AppError::Forbidden`] without
    /// the import permission; [`AppError::Validation`] for a file naming no study.
    pub async fn start_import_job(
        &self,
        who: &Principal,
        study_oid: Option<&str>,
        file_name: &str,
        source: ImportSource,
        mode: ImportMode,
    ) -> Result<JobView, AppError> {
        let named = match study_oid {
            Some(s) => s.to_owned(),
            None => source
                .study_oid()
                .ok_or_else(|| AppError::invalid("file", "the file holds no ClinicalData with a StudyOID"))?,
        };
        let (_, study) = self.study_or_site(&named).await?;
        let study_oid = study.oid.clone();
        let (study, access) = self.study_with_access(who, &study_oid).await?;
        let sites = self.store().sites_of(study.id).await?;
        let may = Self::may(&access, &study, &study, casebook_domain::role::Permission::ImportData)
            || sites.iter().any(|s| Self::may(&access, &study, s, casebook_domain::role::Permission::ImportData));
        if !may {
            return Err(AppError::Forbidden("import data in this study"));
        }
        let id = uuid_v4();
        let source = source.with_job(&id);
        self.store().insert_job(&id, study.id, "clinical_import", mode.as_str(), file_name, Some(who.user_id)).await?;
        let progress = Arc::clone(source.progress());
        self.running_jobs().insert(id.clone(), Arc::clone(&progress));
        let (app, who, job, name) = (self.clone(), who.clone(), id.clone(), file_name.to_owned());
        tokio::spawn(async move {
            let outcome = match mode {
                ImportMode::PerRecord => app.import_clinical_per_record(&who, &study_oid, &name, source).await,
                ImportMode::AllOrNothing => app.import_clinical(&who, &study_oid, &name, source).await,
                ImportMode::DryRun => app.check_clinical_source(&who, &study_oid, &name, source).await,
            };
            let now = app.store().clock().now();
            let written = match outcome {
                Ok(report) => {
                    let summary = serde_json::to_string(&report).unwrap_or_default();
                    let status = if report.cancelled { "cancelled" } else { "completed" };
                    app.store().finish_job(&job, status, Some(&summary), Some(&report.log_csv(now)), None).await
                }
                Err(_) if progress.is_cancelled() => {
                    let why = "cancelled before it finished: nothing was written";
                    app.store().finish_job(&job, "cancelled", None, None, Some(why)).await
                }
                Err(e) => app.store().finish_job(&job, "failed", None, None, Some(&e.to_string())).await,
            };
            if let Err(e) = written {
                tracing::error!(job = %job, error = %e, "recording the end of an import job failed");
            }
            app.running_jobs().remove(&job);
        });
        // The caller may always read the job it started.
        self.job(None, &id).await
    }

    /// Asks a running job to stop (see the module documentation); answers the job as it now
    /// is. Whoever may read the job and may import in its study may cancel it.
    ///
    /// # Errors
    /// [`AppError::NotFound`] for an unknown or invisible job; [`AppError::InvalidTransition`]
    /// for a finished one, or one another server runs.
    pub async fn cancel_job(&self, who: &Principal, id: &str) -> Result<JobView, AppError> {
        let (row, _) = self.job_row(Some(who), id).await?;
        if row.status != "in_progress" {
            return Err(AppError::InvalidTransition(format!("the job is {}, not running", row.status)));
        }
        let progress = self.running_jobs().get(id).cloned();
        let Some(progress) = progress else {
            return Err(AppError::InvalidTransition("the job runs on another server; cancel it there".into()));
        };
        progress.cancel();
        // The job may end between the request and this answer: its progress is the one held.
        let mut view = self.job(Some(who), id).await?;
        view.progress = Some(progress.view());
        Ok(view)
    }

    /// Marks jobs left running by a stopped or crashed server as failed (a server calls this as
    /// it starts); returns how many.
    ///
    /// # Errors
    /// On database failure.
    pub async fn fail_interrupted_jobs(&self) -> Result<u64, AppError> {
        Ok(self
            .store()
            .fail_interrupted_jobs(
                "interrupted: the server stopped while the job ran (an all-or-nothing import wrote nothing; \
                 a per-record import kept the forms it had written, see the audit trail)",
            )
            .await?)
    }

    fn running_jobs(&self) -> std::sync::MutexGuard<'_, RunningJobs> {
        self.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl App {
    async fn job_row(
        &self,
        who: Option<&Principal>,
        id: &str,
    ) -> Result<(casebook_store::jobs::JobRow, String), AppError> {
        let row = self.store().job(id).await?.ok_or(AppError::NotFound("job"))?;
        let study = self.store().study_by_id(row.study_id).await?.ok_or(AppError::NotFound("job"))?;
        if let Some(who) = who {
            let (_, access) = self.study_with_access(who, &study.oid).await.map_err(|_| AppError::NotFound("job"))?;
            if !access.study_wide() && row.created_by != Some(who.user_id) {
                return Err(AppError::NotFound("job"));
            }
        }
        Ok((row, study.oid))
    }

    /// A job by id: its state and, once finished, its report. Site-level users see the jobs
    /// they started.
    ///
    /// # Errors
    /// [`AppError::NotFound`] for an unknown or invisible job.
    pub async fn job(&self, who: Option<&Principal>, id: &str) -> Result<JobView, AppError> {
        let (row, study_oid) = self.job_row(who, id).await?;
        Ok(JobView {
            progress: (row.status == "in_progress")
                .then(|| self.running_jobs().get(&row.id).map(|p| p.view()))
                .flatten(),
            id: row.id,
            kind: row.kind,
            status: row.status,
            mode: row.mode,
            study_oid,
            file_name: row.file_name,
            created_by: row.created_by_username,
            created_at: row.created_at,
            finished_at: row.finished_at,
            summary: row.summary.and_then(|s| serde_json::from_str(&s).ok()),
            error: row.error,
        })
    }

    /// A job's CSV log.
    ///
    /// # Errors
    /// [`AppError::NotFound`] for an unknown or invisible job.
    pub async fn job_log(&self, who: &Principal, id: &str) -> Result<JobLog, AppError> {
        let (row, _) = self.job_row(Some(who), id).await?;
        Ok(match (row.status.as_str(), row.log) {
            ("in_progress", _) => JobLog::InProgress,
            (_, Some(csv)) if !csv.is_empty() => {
                JobLog::Csv { file_name: format!("{}_import_log.csv", row.file_name.trim_end_matches(".xml")), csv }
            }
            _ => JobLog::Missing,
        })
    }

    /// Deletes a finished job's record (the data it imported stay), by whoever started it.
    ///
    /// # Errors
    /// [`AppError::Forbidden`] for someone else's job; [`AppError::InvalidTransition`] while it
    /// runs.
    pub async fn delete_job(&self, who: &Principal, id: &str) -> Result<(), AppError> {
        let (row, _) = self.job_row(Some(who), id).await?;
        if row.created_by != Some(who.user_id) {
            return Err(AppError::Forbidden("delete a job someone else started"));
        }
        if !self.store().delete_job(id).await? {
            return Err(AppError::InvalidTransition("the job is still running".into()));
        }
        Ok(())
    }

    /// The jobs of a study, newest first (site-level users: theirs).
    ///
    /// # Errors
    /// [`AppError::NotFound`] for an invisible study.
    pub async fn jobs(&self, who: &Principal, study_oid: &str) -> Result<Vec<JobView>, AppError> {
        let (study, access) = self.study_with_access(who, study_oid).await?;
        let mut out = Vec::new();
        for row in self.store().jobs_of(study.id).await? {
            if !access.study_wide() && row.created_by != Some(who.user_id) {
                continue;
            }
            out.push(self.job(None, &row.id).await?);
        }
        Ok(out)
    }
}
