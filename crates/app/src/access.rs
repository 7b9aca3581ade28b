//! What a principal may do in one study: the permission matrix applied to the roles the user
//! holds there, and to the study's and site's status.

use crate::{App, AppError, Principal};
use casebook_domain::role::{Permission, Role, RoleLevel};
use casebook_domain::study::StudyStatus;
use casebook_store::studies::StudyRow;

/// A principal's standing in one study.
#[derive(Debug, Clone)]
pub struct Access {
    /// Administrators act everywhere, as OpenClinica's System Administrator.
    pub admin: bool,
    /// The role held at the study itself (acts on every site).
    pub study_role: Option<Role>,
    /// Roles held at individual sites of the study.
    pub site_roles: Vec<(i64, Role)>,
    /// The study's status.
    pub status: StudyStatus,
}

impl Access {
    /// Whether the principal has any standing in the study at all.
    #[must_use]
    pub fn any(&self) -> bool {
        self.admin || self.study_role.is_some() || !self.site_roles.is_empty()
    }

    /// Whether the principal sees every site (admin or study-level role).
    #[must_use]
    pub fn study_wide(&self) -> bool {
        self.admin || self.study_role.is_some()
    }

    /// Whether `p` is allowed at study level (every site), given the study status.
    #[must_use]
    pub fn can_study(&self, p: Permission) -> bool {
        let status_ok = p.allowed_in(self.status, RoleLevel::Study);
        if self.admin {
            return status_ok;
        }
        status_ok && self.study_role.is_some_and(|r| r.allows(p))
    }

    /// Whether `p` is allowed at site `site_id` whose own status is `site_status`.
    #[must_use]
    pub fn can_site(&self, site_id: i64, site_status: StudyStatus, p: Permission) -> bool {
        let effective = StudyStatus::effective(self.status, site_status);
        if self.admin || self.study_role.is_some_and(|r| r.allows(p)) {
            return p.allowed_in(effective, RoleLevel::Study);
        }
        self.site_roles.iter().any(|(s, r)| *s == site_id && r.allows(p) && p.allowed_in(effective, RoleLevel::Site))
    }

    /// Whether the principal may see records of site `site_id`.
    #[must_use]
    pub fn sees_site(&self, site_id: i64) -> bool {
        self.study_wide() || self.site_roles.iter().any(|(s, _)| *s == site_id)
    }
}

impl App {
    /// The principal's access to a study (by the study's row). Removed studies are visible
    /// to administrators only.
    ///
    /// # Errors
    /// On storage failure.
    pub async fn access(&self, who: &Principal, study: &StudyRow) -> Result<Access, AppError> {
        let status: StudyStatus =
            study.status.parse().map_err(|_| crate::error::anyhow_like::msg("bad study status"))?;
        let admin = who.user_type.is_admin();
        let mut study_role = None;
        let mut site_roles = Vec::new();
        for r in self.store().roles_of_user(who.user_id).await? {
            let Some(role) = Role::from_internal(&r.role) else { continue };
            if r.study_id == study.id {
                study_role = Some(role);
            } else if r.parent_id == Some(study.id) {
                site_roles.push((r.study_id, role));
            }
        }
        Ok(Access { admin, study_role, site_roles, status })
    }

    /// Finds a top-level study by OID and the principal's access to it. A study the principal
    /// has no standing in is "not found", so its existence does not leak.
    ///
    /// # Errors
    /// [`AppError::NotFound`] when missing, not a study, or invisible to the principal.
    pub async fn study_with_access(&self, who: &Principal, oid: &str) -> Result<(StudyRow, Access), AppError> {
        let study = self
            .store()
            .study_by_oid(oid)
            .await?
            .filter(|s| s.parent_id.is_none())
            .ok_or(AppError::NotFound("study"))?;
        let access = self.access(who, &study).await?;
        if !access.any() || (study.status == "removed" && !access.admin) {
            return Err(AppError::NotFound("study"));
        }
        Ok((study, access))
    }
}
