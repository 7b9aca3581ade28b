//! Imported rules files and the versioned (rule, target) rows they assign. A row's document
//! never changes (the database refuses it); only `enabled` and the move from current to
//! replaced are recorded.

use time::OffsetDateTime;

use crate::db::StoreError;
use crate::{Store, WriteTx};

/// One version of a rule on a target.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RuleRow {
    pub id: i64,
    pub study_id: i64,
    pub import_id: i64,
    pub rule_oid: String,
    pub target: String,
    pub version: i32,
    pub document: String,
    pub enabled: bool,
    pub status: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

macro_rules! rule_select {
    ($tail:literal) => {
        concat!(
            "SELECT id, study_id, import_id, rule_oid, target, version, document, enabled, status, created_at, \
             updated_at FROM rules ",
            $tail
        )
    };
}

/// An imported rules file.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RuleImportRow {
    pub id: i64,
    pub file_name: String,
    pub sha256: String,
    pub rules: i32,
    pub imported_at: OffsetDateTime,
    pub imported_by: Option<i64>,
}

impl Store {
    /// The current version of every rule of a study (enabled or not), by rule OID then target.
    ///
    /// # Errors
    /// On database failure.
    pub async fn current_rules(&self, study_id: i64) -> Result<Vec<RuleRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(rule_select!(
            "WHERE study_id = $1 AND status = 'current' ORDER BY rule_oid, target"))
            .bind(study_id).fetch_all(p).await?))
    }

    /// The current version of every rule of every study (for scheduled runs).
    ///
    /// # Errors
    /// On database failure.
    pub async fn all_current_rules(&self) -> Result<Vec<RuleRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(rule_select!(
            "WHERE status = 'current' ORDER BY study_id, rule_oid, target"))
            .fetch_all(p).await?))
    }

    /// Every version of a rule on its targets, oldest first.
    ///
    /// # Errors
    /// On database failure.
    pub async fn rule_versions(&self, study_id: i64, rule_oid: &str) -> Result<Vec<RuleRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(rule_select!(
            "WHERE study_id = $1 AND rule_oid = $2 ORDER BY target, version"))
            .bind(study_id).bind(rule_oid).fetch_all(p).await?))
    }

    /// The imported files of a study, newest first.
    ///
    /// # Errors
    /// On database failure.
    pub async fn rule_imports(&self, study_id: i64) -> Result<Vec<RuleImportRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(
            "SELECT id, file_name, sha256, rules, imported_at, imported_by FROM rule_imports WHERE study_id = $1 \
             ORDER BY id DESC")
            .bind(study_id).fetch_all(p).await?))
    }
}

impl WriteTx {
    /// Keeps an uploaded rules file; returns its id.
    ///
    /// # Errors
    /// On database failure.
    pub async fn insert_rule_import(
        &mut self,
        study_id: i64,
        file_name: &str,
        xml: &str,
        sha256: &str,
        rules: i32,
    ) -> Result<i64, StoreError> {
        let now = self.now();
        let by = self.actor().user_id;
        Ok(on_tx!(self, c => sqlx::query_scalar(
            "INSERT INTO rule_imports (study_id, file_name, xml, sha256, rules, imported_at, imported_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id")
            .bind(study_id).bind(file_name).bind(xml).bind(sha256).bind(rules).bind(now).bind(by)
            .fetch_one(c).await?))
    }

    /// The current version of a rule on a target, read inside the transaction.
    ///
    /// # Errors
    /// On database failure.
    pub async fn current_rule(
        &mut self,
        study_id: i64,
        rule_oid: &str,
        target: &str,
    ) -> Result<Option<RuleRow>, StoreError> {
        Ok(on_tx!(self, c => sqlx::query_as(rule_select!(
            "WHERE study_id = $1 AND rule_oid = $2 AND target = $3 AND status = 'current'"))
            .bind(study_id).bind(rule_oid).bind(target).fetch_optional(c).await?))
    }

    /// Adds a version of a rule on a target (replacing the current one, if any); returns the new
    /// row's id and version.
    ///
    /// # Errors
    /// On database failure.
    pub async fn insert_rule_version(
        &mut self,
        study_id: i64,
        import_id: i64,
        rule_oid: &str,
        target: &str,
        document: &str,
        enabled: bool,
    ) -> Result<(i64, i32), StoreError> {
        let now = self.now();
        let previous: Option<i32> = on_tx!(self, c => sqlx::query_scalar(
            "SELECT MAX(version) FROM rules WHERE study_id = $1 AND rule_oid = $2 AND target = $3")
            .bind(study_id).bind(rule_oid).bind(target).fetch_one(c).await?);
        on_tx!(self, c => sqlx::query(
            "UPDATE rules SET status = 'replaced', updated_at = $1 \
             WHERE study_id = $2 AND rule_oid = $3 AND target = $4 AND status = 'current'")
            .bind(now).bind(study_id).bind(rule_oid).bind(target).execute(c).await?.rows_affected());
        let version = previous.unwrap_or(0) + 1;
        let id: i64 = on_tx!(self, c => sqlx::query_scalar(
            "INSERT INTO rules (study_id, import_id, rule_oid, target, version, document, enabled, status, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'current', $8, $8) RETURNING id")
            .bind(study_id).bind(import_id).bind(rule_oid).bind(target).bind(version).bind(document).bind(enabled)
            .bind(now).fetch_one(c).await?);
        Ok((id, version))
    }

    /// Enables or disables the current version of a rule on every target, or on one; returns how
    /// many rows changed.
    ///
    /// # Errors
    /// On database failure.
    pub async fn set_rule_enabled(
        &mut self,
        study_id: i64,
        rule_oid: &str,
        target: Option<&str>,
        enabled: bool,
    ) -> Result<u64, StoreError> {
        let now = self.now();
        Ok(on_tx!(self, c => sqlx::query(
            "UPDATE rules SET enabled = $1, updated_at = $2 WHERE study_id = $3 AND rule_oid = $4 \
             AND status = 'current' AND enabled <> $1 AND ($5 IS NULL OR target = $5)")
            .bind(enabled).bind(now).bind(study_id).bind(rule_oid).bind(target).execute(c).await?.rows_affected()))
    }

    /// Records that a rule's action ran for a key; returns false when it already had (so the
    /// action is not repeated).
    ///
    /// # Errors
    /// On database failure.
    pub async fn claim_rule_run(&mut self, run_key: &str, rule_id: i64) -> Result<bool, StoreError> {
        let now = self.now();
        let n = on_tx!(self, c => sqlx::query(
            "INSERT INTO rule_action_runs (run_key, rule_id, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (run_key) DO NOTHING")
            .bind(run_key).bind(rule_id).bind(now).execute(c).await?.rows_affected());
        Ok(n == 1)
    }

    /// Whether a rule's action already ran for a key (dry runs).
    ///
    /// # Errors
    /// On database failure.
    pub async fn rule_run_exists(&mut self, run_key: &str) -> Result<bool, StoreError> {
        let n: i64 = on_tx!(self, c => sqlx::query_scalar("SELECT COUNT(*) FROM rule_action_runs WHERE run_key = $1")
            .bind(run_key).fetch_one(c).await?);
        Ok(n > 0)
    }
}
