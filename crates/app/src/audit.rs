//! Reading and verifying the audit trail.

use crate::{App, AppError, Principal};
use casebook_domain::audit::AuditRecord;
use casebook_domain::role::Permission;
use casebook_store::audit::{AuditFilter, ChainReport};

/// A page of audit rows; `next_after` continues after the last row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditPage {
    pub records: Vec<AuditRecord>,
    pub next_after: Option<i64>,
}

/// Paging of an audit read.
#[derive(Debug, Clone, Copy)]
pub struct Paging {
    pub after: i64,
    pub limit: i64,
}

impl Paging {
    fn clamp(self) -> Self {
        Self { after: self.after.max(0), limit: self.limit.clamp(1, 1000) }
    }
}

fn page(records: Vec<AuditRecord>, limit: i64) -> AuditPage {
    let next_after = (records.len() as i64 == limit).then(|| records.last().map(|r| r.seq)).flatten();
    AuditPage { records, next_after }
}

impl App {
    /// The audit trail of a study. Site-level users see only their sites' rows.
    ///
    /// # Errors
    /// Not found when the study is invisible.
    pub async fn study_audit(
        &self,
        who: &Principal,
        study_oid: &str,
        site_oid: Option<&str>,
        paging: Paging,
    ) -> Result<AuditPage, AppError> {
        let p = paging.clamp();
        let (study, access) = self.study_with_access(who, study_oid).await?;
        let site_id = match site_oid {
            Some(oid) => Some(
                self.store()
                    .study_by_oid(oid)
                    .await?
                    .filter(|s| s.parent_id == Some(study.id) && access.sees_site(s.id))
                    .ok_or(AppError::NotFound("site"))?
                    .id,
            ),
            None => None,
        };
        let base =
            AuditFilter { study_id: Some(study.id), after_seq: p.after, limit: p.limit, ..AuditFilter::default() };
        if access.study_wide() {
            if !access.can_study(Permission::ViewAudit) {
                return Err(AppError::Forbidden("read this study's audit trail"));
            }
            let records = self.store().audit_events(&AuditFilter { site_id, ..base }).await?;
            return Ok(page(records, p.limit));
        }
        // Site-level: only the rows of the sites they hold a role at.
        let sites: Vec<i64> =
            access.site_roles.iter().map(|(s, _)| *s).filter(|s| site_id.is_none_or(|x| x == *s)).collect();
        let mut records = Vec::new();
        for s in sites {
            records.extend(self.store().audit_events(&AuditFilter { site_id: Some(s), ..base.clone() }).await?);
        }
        records.sort_by_key(|r| r.seq);
        records.truncate(usize::try_from(p.limit).unwrap_or(1000));
        Ok(page(records, p.limit))
    }

    /// Everything a user did and everything done to their account. Administrators, or the
    /// user themself.
    ///
    /// # Errors
    /// Forbidden for anyone else.
    pub async fn user_audit(&self, who: &Principal, username: &str, paging: Paging) -> Result<AuditPage, AppError> {
        let p = paging.clamp();
        let user = self.store().user_by_username(username).await?.ok_or(AppError::NotFound("user"))?;
        if !(who.user_type.is_admin() || who.user_id == user.id) {
            return Err(AppError::Forbidden("read another user's audit trail"));
        }
        // Rows about the account, and rows by the account, merged in sequence order.
        let about = self
            .store()
            .audit_events(&AuditFilter {
                entity_type: Some("user".into()),
                entity_id: Some(user.id.to_string()),
                after_seq: p.after,
                limit: p.limit,
                ..AuditFilter::default()
            })
            .await?;
        let by = self
            .store()
            .audit_events(&AuditFilter {
                actor_user_id: Some(user.id),
                after_seq: p.after,
                limit: p.limit,
                ..AuditFilter::default()
            })
            .await?;
        let mut records: Vec<AuditRecord> = about;
        for r in by {
            if !records.iter().any(|x| x.seq == r.seq) {
                records.push(r);
            }
        }
        records.sort_by_key(|r| r.seq);
        records.truncate(usize::try_from(p.limit).unwrap_or(1000));
        Ok(page(records, p.limit))
    }

    /// The audit trail of any one record (administrators).
    ///
    /// # Errors
    /// Forbidden for non-administrators.
    pub async fn entity_audit(
        &self,
        who: &Principal,
        entity_type: &str,
        entity_id: &str,
        paging: Paging,
    ) -> Result<AuditPage, AppError> {
        if !who.user_type.is_admin() {
            return Err(AppError::Forbidden("read the audit trail of arbitrary records (administrators only)"));
        }
        let p = paging.clamp();
        let records = self
            .store()
            .audit_events(&AuditFilter {
                entity_type: Some(entity_type.to_owned()),
                entity_id: Some(entity_id.to_owned()),
                after_seq: p.after,
                limit: p.limit,
                ..AuditFilter::default()
            })
            .await?;
        Ok(page(records, p.limit))
    }

    /// Seals pending audit rows and verifies the whole chain.
    ///
    /// # Errors
    /// On storage failure.
    pub async fn verify_audit(&self) -> Result<ChainReport, AppError> {
        self.store().seal_audit().await?;
        Ok(self.store().verify_audit_chain().await?)
    }
}
