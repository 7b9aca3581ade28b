//! Managing a study's rules: import an OpenClinica rules file (checked against the design in
//! Production and previewed before anything is saved), list the current rules with their
//! versions, enable and disable them. Running them is `rules_engine`.

use casebook_domain::audit::AuditEntry;
use casebook_domain::role::Permission;
use casebook_formats::diagnostic::Diagnostic;
use casebook_formats::rules::{RulePreview, read_rules, summary, validate_rules};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::auth::Principal;
use crate::rules_engine::RuleDocument;
use crate::{App, AppError};

/// What an import did, or (with `preview`) would do.
#[derive(Debug, Clone, Serialize)]
pub struct RulesImport {
    /// Whether the rules were saved (false for a preview).
    pub saved: bool,
    pub file_name: String,
    /// One line per rule at each target: what it checks and what its actions do.
    pub rules: Vec<RulePreview>,
    /// For each rule at a target: `new`, `new_version` (replacing version n) or `unchanged`.
    pub changes: Vec<RuleChange>,
    /// Warnings (errors refuse the import).
    pub diagnostics: Vec<Diagnostic>,
}

/// How an import changes one rule on one target.
#[derive(Debug, Clone, Serialize)]
pub struct RuleChange {
    pub rule_oid: String,
    pub target: String,
    /// `new`, `new_version` or `unchanged`.
    pub change: &'static str,
    /// The version after the import.
    pub version: i32,
}

/// A current rule on a target.
#[derive(Debug, Clone, Serialize)]
pub struct RuleView {
    pub rule_oid: String,
    pub name: String,
    pub expression: String,
    pub target: String,
    pub version: i32,
    pub enabled: bool,
    /// What each action does, in execution order.
    pub actions: Vec<String>,
    pub runs_on: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// Enabling or disabling a rule (on every target, or one).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleEnableInput {
    pub enabled: bool,
    #[serde(default)]
    pub target: Option<String>,
}

fn rejected(message: String, diagnostics: &[Diagnostic]) -> AppError {
    AppError::Rejected { code: "rules_rejected", message, details: serde_json::json!({ "diagnostics": diagnostics }) }
}

impl App {
    async fn rules_study(
        &self,
        who: &Principal,
        study_oid: &str,
    ) -> Result<casebook_store::studies::StudyRow, AppError> {
        let (study, access) = self.study_with_access(who, study_oid).await?;
        if !access.can_study(Permission::BuildStudy) {
            return Err(AppError::Forbidden("manage rules (data managers and study directors)"));
        }
        Ok(study)
    }

    /// Imports an OpenClinica rules file: reads it, checks every target, path and expression
    /// against the design in Production, and (unless `preview`) saves each rule on each target
    /// as a new version, audited. Any error refuses the whole file, naming each problem with its
    /// line and column.
    ///
    /// # Errors
    /// [`AppError::Rejected`] (`rules_rejected`) with every diagnostic; [`AppError::Forbidden`].
    pub async fn import_rules(
        &self,
        who: &Principal,
        study_oid: &str,
        file_name: &str,
        bytes: &[u8],
        preview: bool,
    ) -> Result<RulesImport, AppError> {
        let study = self.rules_study(who, study_oid).await?;
        let (_, design) = self.production_design(study.id).await?;
        let (set, mut diagnostics) = read_rules(bytes);
        let Some(set) = set.filter(|_| !diagnostics.has_errors()) else {
            let n = diagnostics.errors().count();
            return Err(rejected(format!("{file_name}: {n} problem(s); nothing was imported"), &diagnostics.0));
        };
        diagnostics.0.extend(validate_rules(&set, &design).0);
        if diagnostics.has_errors() {
            let n = diagnostics.errors().count();
            return Err(rejected(
                format!("{file_name}: {n} problem(s) against the design in Production; nothing was imported"),
                &diagnostics.0,
            ));
        }
        let xml = String::from_utf8_lossy(bytes).into_owned();
        let sha = hex::encode(Sha256::digest(bytes));
        let mut tx = self.store().write(who.actor()).await?;
        let mut changes = Vec::new();
        let mut documents = Vec::new();
        for (assignment, rule_ref) in set.rule_refs() {
            let Some(def) = set.rule(rule_ref.rule_oid.as_str()) else { continue };
            let doc = RuleDocument {
                rule_def: def.clone(),
                rule_ref: rule_ref.clone(),
                run_on_schedule: assignment.run_on_schedule,
            };
            let text = serde_json::to_string(&doc).map_err(crate::error::anyhow_like::internal)?;
            let current = tx.current_rule(study.id, rule_ref.rule_oid.as_str(), &assignment.target).await?;
            let (change, version) = match &current {
                Some(c) if c.document == text => ("unchanged", c.version),
                Some(c) => ("new_version", c.version + 1),
                None => ("new", 1),
            };
            changes.push(RuleChange {
                rule_oid: rule_ref.rule_oid.to_string(),
                target: assignment.target.clone(),
                change,
                version,
            });
            documents.push((rule_ref.rule_oid.to_string(), assignment.target.clone(), text, current));
        }
        if !preview {
            let stored = i32::try_from(documents.len()).unwrap_or(i32::MAX);
            let import_id = tx.insert_rule_import(study.id, file_name, &xml, &sha, stored).await?;
            tx.audit(
                AuditEntry::new("rules.imported", "rule_import", format!("{}/RULES_{import_id}", study.oid))
                    .study(Some(study.id), None)
                    .new_value(serde_json::json!({ "file": file_name, "sha256": sha, "rules": stored })),
            )
            .await?;
            for (oid, target, text, current) in &documents {
                if current.as_ref().is_some_and(|c| &c.document == text) {
                    continue;
                }
                let enabled = current.as_ref().is_none_or(|c| c.enabled);
                let (_, version) = tx.insert_rule_version(study.id, import_id, oid, target, text, enabled).await?;
                tx.audit(
                    AuditEntry::new(
                        if current.is_some() { "rule.new_version" } else { "rule.created" },
                        "rule",
                        format!("{}/{oid}@{target}", study.oid),
                    )
                    .study(Some(study.id), None)
                    .old(
                        current
                            .as_ref()
                            .map_or(serde_json::Value::Null, |c| serde_json::json!({ "version": c.version })),
                    )
                    .new_value(serde_json::json!({ "version": version, "enabled": enabled, "import": import_id })),
                )
                .await?;
            }
            tx.commit().await?;
        }
        Ok(RulesImport {
            saved: !preview,
            file_name: file_name.to_owned(),
            rules: summary(&set),
            changes,
            diagnostics: diagnostics.0,
        })
    }

    /// The current rules of a study on their targets.
    ///
    /// # Errors
    /// [`AppError::NotFound`] for an invisible study.
    pub async fn rules(&self, who: &Principal, study_oid: &str) -> Result<Vec<RuleView>, AppError> {
        let (study, _) = self.study_with_access(who, study_oid).await?;
        let mut out = Vec::new();
        for row in self.store().current_rules(study.id).await? {
            let Ok(doc) = serde_json::from_str::<RuleDocument>(&row.document) else { continue };
            let set = casebook_domain::rules::RuleSet {
                rule_defs: vec![doc.rule_def.clone()],
                assignments: vec![casebook_domain::rules::RuleAssignment {
                    target: row.target.clone(),
                    run_on_schedule: doc.run_on_schedule,
                    rule_refs: vec![doc.rule_ref.clone()],
                }],
            };
            let Some(p) = summary(&set).into_iter().next() else { continue };
            out.push(RuleView {
                rule_oid: row.rule_oid,
                name: p.name,
                expression: p.expression,
                target: row.target,
                version: row.version,
                enabled: row.enabled,
                actions: p.actions,
                runs_on: p.runs_on,
                schedule: p.schedule,
                updated_at: row.updated_at,
            });
        }
        Ok(out)
    }

    /// The study's current, enabled rules as one rule set (for the metadata export): one
    /// assignment per target, each rule defined once.
    ///
    /// # Errors
    /// Storage failures.
    pub(crate) async fn rule_set(&self, study_id: i64) -> Result<casebook_domain::rules::RuleSet, AppError> {
        let mut set = casebook_domain::rules::RuleSet::default();
        for row in self.store().current_rules(study_id).await?.into_iter().filter(|r| r.enabled) {
            let Ok(doc) = serde_json::from_str::<RuleDocument>(&row.document) else { continue };
            if set.rule(doc.rule_def.oid.as_str()).is_none() {
                set.rule_defs.push(doc.rule_def.clone());
            }
            match set
                .assignments
                .iter_mut()
                .find(|a| a.target == row.target && a.run_on_schedule == doc.run_on_schedule)
            {
                Some(a) => a.rule_refs.push(doc.rule_ref),
                None => set.assignments.push(casebook_domain::rules::RuleAssignment {
                    target: row.target,
                    run_on_schedule: doc.run_on_schedule,
                    rule_refs: vec![doc.rule_ref],
                }),
            }
        }
        Ok(set)
    }

    /// Enables or disables a rule on every target (or one), audited.
    ///
    /// # Errors
    /// [`AppError::NotFound`] for an unknown rule; [`AppError::InvalidTransition`] when it is
    /// already in the asked state.
    pub async fn set_rule_enabled(
        &self,
        who: &Principal,
        study_oid: &str,
        rule_oid: &str,
        input: RuleEnableInput,
    ) -> Result<Vec<RuleView>, AppError> {
        let study = self.rules_study(who, study_oid).await?;
        let current = self.store().current_rules(study.id).await?;
        let mine: Vec<_> = current
            .iter()
            .filter(|r| r.rule_oid == rule_oid && input.target.as_ref().is_none_or(|t| &r.target == t))
            .collect();
        if mine.is_empty() {
            return Err(AppError::NotFound("rule (on that target)"));
        }
        let mut tx = self.store().write(who.actor()).await?;
        let n = tx.set_rule_enabled(study.id, rule_oid, input.target.as_deref(), input.enabled).await?;
        if n == 0 {
            return Err(AppError::InvalidTransition(format!(
                "{rule_oid} is already {}",
                if input.enabled { "enabled" } else { "disabled" }
            )));
        }
        tx.audit(
            AuditEntry::new(
                if input.enabled { "rule.enabled" } else { "rule.disabled" },
                "rule",
                format!("{}/{rule_oid}", study.oid),
            )
            .study(Some(study.id), None)
            .old(serde_json::json!({ "enabled": !input.enabled }))
            .new_value(serde_json::json!({ "enabled": input.enabled, "target": input.target, "rows": n })),
        )
        .await?;
        tx.commit().await?;
        Ok(self.rules(who, study_oid).await?.into_iter().filter(|r| r.rule_oid == rule_oid).collect())
    }
}
