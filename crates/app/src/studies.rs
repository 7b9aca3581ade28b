//! Studies, sites and role assignments.

use crate::access::Access;
use crate::{App, AppError, Principal};
use casebook_domain::audit::AuditEntry;
use casebook_domain::oid::{self, OidKind};
use casebook_domain::role::{Permission, Role, RoleLevel};
use casebook_domain::study::{SiteParameters, StudyDetails, StudyParameters, StudyStatus};
use casebook_store::studies::{NewStudy, StudyRow};
use rand::Rng;
use time::OffsetDateTime;

/// A study or site as shown through the API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StudyView {
    pub id: i64,
    pub oid: String,
    /// For a site: the OID of its study.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub study_oid: Option<String>,
    pub status: StudyStatus,
    pub details: StudyDetails,
    /// Study parameters (studies) or overrides (sites).
    pub parameters: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

fn view(row: StudyRow, study_oid: Option<String>) -> Result<StudyView, AppError> {
    let bad = |what: &str| crate::error::anyhow_like::msg(format!("stored study {} has invalid {what}", row.id));
    Ok(StudyView {
        id: row.id,
        oid: row.oid.clone(),
        study_oid,
        status: row.status.parse().map_err(|_| bad("status"))?,
        details: serde_json::from_str(&row.details).map_err(|_| bad("details"))?,
        parameters: serde_json::from_str(&row.parameters).map_err(|_| bad("parameters"))?,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// Input for a new study: its details and (optionally) parameters.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewStudyInput {
    #[serde(flatten)]
    pub details: StudyDetails,
    #[serde(default)]
    pub parameters: Option<StudyParameters>,
}

/// Input for a new site.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSiteInput {
    #[serde(flatten)]
    pub details: StudyDetails,
    #[serde(default)]
    pub parameters: Option<SiteParameters>,
}

/// A change of study details and/or parameters (whole documents; omitted parts unchanged).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyUpdate {
    pub details: Option<StudyDetails>,
    pub parameters: Option<serde_json::Value>,
    /// Why, recorded in the audit trail.
    pub reason: Option<String>,
}

/// A role assignment request.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleInput {
    pub username: String,
    /// Internal name, label or key (`coordinator`, `Data Manager`, `data_manager`).
    pub role: String,
    /// Assign at this site instead of the study.
    #[serde(default)]
    pub site_oid: Option<String>,
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, AppError> {
    serde_json::to_string(v).map_err(crate::error::anyhow_like::internal)
}

impl App {
    async fn fresh_oid(&self, tx: &mut casebook_store::WriteTx, protocol_id: &str) -> Result<String, AppError> {
        // Probe candidates inside the transaction so two creations cannot pick the same OID.
        let mut candidate =
            oid::generate(OidKind::Study, protocol_id, |_| false, || rand::rng().random_range(0..10_000)).to_string();
        let base = candidate.clone();
        while tx.oid_taken(&candidate).await? {
            let n: u16 = rand::rng().random_range(0..10_000);
            candidate = format!("{base}_{n}");
        }
        Ok(candidate)
    }

    /// Creates a study in status design (administrators only, as in OpenClinica).
    ///
    /// # Errors
    /// Validation errors listing every problem; conflict on a taken protocol ID.
    pub async fn create_study(&self, who: &Principal, input: NewStudyInput) -> Result<StudyView, AppError> {
        if !who.user_type.is_admin() {
            return Err(AppError::Forbidden("create studies (administrators only)"));
        }
        let mut errors = Vec::new();
        let details = input.details.check().map_err(|e| errors.extend(e)).ok();
        let params = input.parameters.unwrap_or_default();
        errors.extend(params.check());
        let Some(details) = details.filter(|_| errors.is_empty()) else { return Err(AppError::Validation(errors)) };
        self.ensure_protocol_free(&details.protocol_id, None).await?;
        let mut tx = self.store().write(who.actor()).await?;
        let oid = self.fresh_oid(&mut tx, &details.protocol_id).await?;
        let id = tx
            .insert_study(&NewStudy {
                parent_id: None,
                oid: &oid,
                protocol_id: &details.protocol_id,
                name: &details.name,
                status: StudyStatus::Design.as_str(),
                details: &to_json(&details)?,
                parameters: &to_json(&params)?,
            })
            .await
            .map_err(|e| conflict_protocol(e, &details.protocol_id))?;
        tx.audit(
            AuditEntry::new("study.created", "study", &oid).study(Some(id), None).new_value(
                serde_json::json!({"oid": oid, "status": "design", "details": details, "parameters": params}),
            ),
        )
        .await?;
        tx.commit().await?;
        view(self.store().study_by_id(id).await?.ok_or(AppError::NotFound("study"))?, None)
    }

    async fn ensure_protocol_free(&self, protocol_id: &str, except: Option<i64>) -> Result<(), AppError> {
        if let Some(existing) = self.store().study_by_protocol_id(protocol_id).await?
            && Some(existing.id) != except
        {
            return Err(AppError::Conflict(format!(
                "the protocol ID '{protocol_id}' is already used by a study or site"
            )));
        }
        Ok(())
    }

    /// Studies the principal has standing in (administrators: all).
    ///
    /// # Errors
    /// On storage failure.
    pub async fn list_studies(&self, who: &Principal) -> Result<Vec<StudyView>, AppError> {
        let mut out = Vec::new();
        for s in self.store().studies().await? {
            let access = self.access(who, &s).await?;
            if access.any() && (s.status != "removed" || access.admin) {
                out.push(view(s, None)?);
            }
        }
        Ok(out)
    }

    /// One study.
    ///
    /// # Errors
    /// Not found when missing or invisible.
    pub async fn get_study(&self, who: &Principal, oid: &str) -> Result<StudyView, AppError> {
        let (s, _) = self.study_with_access(who, oid).await?;
        view(s, None)
    }

    /// Edits a study's details and parameters (data managers, study directors, admins).
    ///
    /// # Errors
    /// Validation errors; forbidden; conflict on a taken protocol ID.
    pub async fn update_study(&self, who: &Principal, oid: &str, upd: StudyUpdate) -> Result<StudyView, AppError> {
        let (study, access) = self.study_with_access(who, oid).await?;
        if !access.can_study(Permission::ManageStudy) {
            return Err(AppError::Forbidden("edit this study"));
        }
        self.update_study_row(who, study, None, upd).await
    }

    async fn update_study_row(
        &self,
        who: &Principal,
        row: StudyRow,
        parent: Option<&StudyRow>,
        upd: StudyUpdate,
    ) -> Result<StudyView, AppError> {
        let old_details: StudyDetails =
            serde_json::from_str(&row.details).map_err(crate::error::anyhow_like::internal)?;
        let old_params: serde_json::Value =
            serde_json::from_str(&row.parameters).map_err(crate::error::anyhow_like::internal)?;
        let mut errors = Vec::new();
        let details = upd.details.unwrap_or_else(|| old_details.clone()).check().map_err(|e| errors.extend(e)).ok();
        let params_json = match upd.parameters {
            None => Some(row.parameters.clone()),
            Some(p) if parent.is_none() => match serde_json::from_value::<StudyParameters>(p) {
                Ok(p) => {
                    errors.extend(p.check());
                    Some(to_json(&p)?)
                }
                Err(e) => {
                    errors.push(casebook_domain::FieldError::new("parameters", e.to_string()));
                    None
                }
            },
            Some(p) => match serde_json::from_value::<SiteParameters>(p) {
                Ok(p) => Some(to_json(&p)?),
                Err(e) => {
                    errors.push(casebook_domain::FieldError::new("parameters", e.to_string()));
                    None
                }
            },
        };
        let reason = casebook_domain::text_field("reason", upd.reason.as_deref(), 1000, false, &mut errors);
        let (Some(details), Some(params_json)) = (details, params_json) else {
            return Err(AppError::Validation(errors));
        };
        if !errors.is_empty() {
            return Err(AppError::Validation(errors));
        }
        self.ensure_protocol_free(&details.protocol_id, Some(row.id)).await?;
        let (study_id, site_id) = match parent {
            Some(p) => (p.id, Some(row.id)),
            None => (row.id, None),
        };
        let kind = if parent.is_some() { "site" } else { "study" };
        let mut tx = self.store().write(who.actor()).await?;
        tx.update_study(row.id, &details.protocol_id, &details.name, &to_json(&details)?, &params_json)
            .await
            .map_err(|e| conflict_protocol(e, &details.protocol_id))?;
        let new_params: serde_json::Value =
            serde_json::from_str(&params_json).map_err(crate::error::anyhow_like::internal)?;
        tx.audit(
            AuditEntry::new(&format!("{kind}.updated"), kind, &row.oid)
                .study(Some(study_id), site_id)
                .old(serde_json::json!({"details": old_details, "parameters": old_params}))
                .new_value(serde_json::json!({"details": details, "parameters": new_params}))
                .reason(reason),
        )
        .await?;
        tx.commit().await?;
        view(self.store().study_by_id(row.id).await?.ok_or(AppError::NotFound(kind))?, parent.map(|p| p.oid.clone()))
    }

    /// Changes a study's status along the state machine (data managers, directors, admins).
    /// Removing and restoring are for administrators.
    ///
    /// # Errors
    /// [`AppError::InvalidTransition`] for a move the state machine does not allow.
    pub async fn set_study_status(
        &self,
        who: &Principal,
        oid: &str,
        to: StudyStatus,
        reason: Option<String>,
    ) -> Result<StudyView, AppError> {
        let (study, access) = self.study_with_access(who, oid).await?;
        self.change_status(who, &access, study, None, to, reason).await
    }

    async fn change_status(
        &self,
        who: &Principal,
        access: &Access,
        row: StudyRow,
        parent: Option<&StudyRow>,
        to: StudyStatus,
        reason: Option<String>,
    ) -> Result<StudyView, AppError> {
        let kind = if parent.is_some() { "site" } else { "study" };
        let from: StudyStatus = row.status.parse().map_err(|_| crate::error::anyhow_like::msg("bad status"))?;
        let before_removal = row.status_before_removal.as_deref().and_then(|s| s.parse::<StudyStatus>().ok());
        let allowed = match (from, to) {
            (_, StudyStatus::Removed) | (StudyStatus::Removed, _) => {
                if !access.admin {
                    return Err(AppError::Forbidden("remove or restore studies and sites (administrators only)"));
                }
                (from != StudyStatus::Removed && to == StudyStatus::Removed)
                    || (from == StudyStatus::Removed && Some(to) == before_removal)
            }
            _ => {
                let perm = if parent.is_some() { Permission::ManageSites } else { Permission::ManageStudy };
                // Status changes are allowed whatever the status (that is how a study is unlocked).
                if !(access.admin || access.study_role.is_some_and(|r| r.allows(perm))) {
                    return Err(AppError::Forbidden("change the status"));
                }
                from.can_transition_to(to)
            }
        };
        if !allowed {
            let hint = if from == StudyStatus::Removed {
                format!(
                    "; a removed {kind} can only be restored to {}",
                    before_removal.map_or("its earlier status", StudyStatus::as_str)
                )
            } else {
                String::new()
            };
            return Err(AppError::InvalidTransition(format!(
                "a {kind} cannot go from {} to {}{hint}",
                from.as_str(),
                to.as_str()
            )));
        }
        let mut e = Vec::new();
        let reason = casebook_domain::text_field("reason", reason.as_deref(), 1000, false, &mut e);
        if !e.is_empty() {
            return Err(AppError::Validation(e));
        }
        let keep = (to == StudyStatus::Removed).then(|| from.as_str());
        let (study_id, site_id) = match parent {
            Some(p) => (p.id, Some(row.id)),
            None => (row.id, None),
        };
        let mut tx = self.store().write(who.actor()).await?;
        tx.set_study_status(row.id, to.as_str(), keep).await?;
        tx.audit(
            AuditEntry::new(&format!("{kind}.status_changed"), kind, &row.oid)
                .study(Some(study_id), site_id)
                .old(serde_json::json!({"status": from.as_str()}))
                .new_value(serde_json::json!({"status": to.as_str()}))
                .reason(reason),
        )
        .await?;
        tx.commit().await?;
        view(self.store().study_by_id(row.id).await?.ok_or(AppError::NotFound(kind))?, parent.map(|p| p.oid.clone()))
    }

    /// Creates a site under a study (data managers, directors, admins).
    ///
    /// # Errors
    /// Validation errors; forbidden; conflict on a taken protocol ID.
    pub async fn create_site(
        &self,
        who: &Principal,
        study_oid: &str,
        input: NewSiteInput,
    ) -> Result<StudyView, AppError> {
        let (study, access) = self.study_with_access(who, study_oid).await?;
        if !(access.admin || access.study_role.is_some_and(|r| r.allows(Permission::ManageSites))) {
            return Err(AppError::Forbidden("create sites in this study"));
        }
        let details = input.details.check().map_err(AppError::Validation)?;
        let params = input.parameters.unwrap_or_default();
        self.ensure_protocol_free(&details.protocol_id, None).await?;
        let status = if study.status == "available" { StudyStatus::Available } else { StudyStatus::Design };
        let mut tx = self.store().write(who.actor()).await?;
        let oid = self.fresh_oid(&mut tx, &details.protocol_id).await?;
        let id = tx
            .insert_study(&NewStudy {
                parent_id: Some(study.id),
                oid: &oid,
                protocol_id: &details.protocol_id,
                name: &details.name,
                status: status.as_str(),
                details: &to_json(&details)?,
                parameters: &to_json(&params)?,
            })
            .await
            .map_err(|e| conflict_protocol(e, &details.protocol_id))?;
        tx.audit(
            AuditEntry::new("site.created", "site", &oid)
                .study(Some(study.id), Some(id))
                .new_value(serde_json::json!({"oid": oid, "study_oid": study.oid, "status": status.as_str(), "details": details, "parameters": params})),
        )
        .await?;
        tx.commit().await?;
        view(self.store().study_by_id(id).await?.ok_or(AppError::NotFound("site"))?, Some(study.oid))
    }

    /// The sites of a study the principal may see (site-level users: only their own).
    ///
    /// # Errors
    /// Not found when the study is invisible.
    pub async fn list_sites(&self, who: &Principal, study_oid: &str) -> Result<Vec<StudyView>, AppError> {
        let (study, access) = self.study_with_access(who, study_oid).await?;
        let mut out = Vec::new();
        for s in self.store().sites_of(study.id).await? {
            if access.sees_site(s.id) && (s.status != "removed" || access.admin) {
                out.push(view(s, Some(study.oid.clone()))?);
            }
        }
        Ok(out)
    }

    async fn site_with_access(
        &self,
        who: &Principal,
        study_oid: &str,
        site_oid: &str,
    ) -> Result<(StudyRow, StudyRow, Access), AppError> {
        let (study, access) = self.study_with_access(who, study_oid).await?;
        let site = self
            .store()
            .study_by_oid(site_oid)
            .await?
            .filter(|s| {
                s.parent_id == Some(study.id) && access.sees_site(s.id) && (s.status != "removed" || access.admin)
            })
            .ok_or(AppError::NotFound("site"))?;
        Ok((study, site, access))
    }

    /// One site.
    ///
    /// # Errors
    /// Not found when missing or not visible to the principal.
    pub async fn get_site(&self, who: &Principal, study_oid: &str, site_oid: &str) -> Result<StudyView, AppError> {
        let (study, site, _) = self.site_with_access(who, study_oid, site_oid).await?;
        view(site, Some(study.oid))
    }

    /// Edits a site.
    ///
    /// # Errors
    /// Validation errors; forbidden; not found.
    pub async fn update_site(
        &self,
        who: &Principal,
        study_oid: &str,
        site_oid: &str,
        upd: StudyUpdate,
    ) -> Result<StudyView, AppError> {
        let (study, site, access) = self.site_with_access(who, study_oid, site_oid).await?;
        if !(access.admin || access.study_role.is_some_and(|r| r.allows(Permission::ManageSites))) {
            return Err(AppError::Forbidden("edit this site"));
        }
        self.update_study_row(who, site, Some(&study), upd).await
    }

    /// Changes a site's status.
    ///
    /// # Errors
    /// Invalid transition; forbidden; not found.
    pub async fn set_site_status(
        &self,
        who: &Principal,
        study_oid: &str,
        site_oid: &str,
        to: StudyStatus,
        reason: Option<String>,
    ) -> Result<StudyView, AppError> {
        let (study, site, access) = self.site_with_access(who, study_oid, site_oid).await?;
        self.change_status(who, &access, site, Some(&study), to, reason).await
    }

    /// Assigns a role at the study or at one of its sites.
    ///
    /// # Errors
    /// Validation errors (unknown user or role, role not offered at that level); conflict
    /// when the user already holds a role there.
    pub async fn assign_role(
        &self,
        who: &Principal,
        study_oid: &str,
        input: RoleInput,
    ) -> Result<crate::accounts::RoleView, AppError> {
        let (study, access) = self.study_with_access(who, study_oid).await?;
        if !access.can_study(Permission::AssignRoles) {
            return Err(AppError::Forbidden("assign roles in this study"));
        }
        let (target, level) = match &input.site_oid {
            Some(site_oid) => {
                let site =
                    self.store().study_by_oid(site_oid).await?.filter(|s| s.parent_id == Some(study.id)).ok_or_else(
                        || AppError::invalid("site_oid", format!("'{site_oid}' is not a site of {}", study.oid)),
                    )?;
                (site, RoleLevel::Site)
            }
            None => (study.clone(), RoleLevel::Study),
        };
        let role = Role::parse(&input.role, level)?;
        let user =
            self.store().user_by_username(input.username.trim()).await?.ok_or_else(|| {
                AppError::invalid("username", format!("there is no user '{}'", input.username.trim()))
            })?;
        if user.status == "removed" {
            return Err(AppError::invalid("username", "the account is removed"));
        }
        let held = self.store().roles_of_user(user.id).await?;
        if held.iter().any(|r| r.study_id == study.id || r.parent_id == Some(study.id)) {
            return Err(AppError::Conflict(format!(
                "{} already has a role in {} or one of its sites; remove it first",
                user.username, study.oid
            )));
        }
        let site_id = (level == RoleLevel::Site).then_some(target.id);
        let mut tx = self.store().write(who.actor()).await?;
        let id = tx
            .insert_role(user.id, target.id, role.internal_name())
            .await
            .map_err(|_| AppError::Conflict(format!("{} already has a role in {}", user.username, target.oid)))?;
        tx.audit(
            AuditEntry::new("role.assigned", "role", id)
                .study(Some(study.id), site_id)
                .new_value(serde_json::json!({"username": user.username, "user_id": user.id, "study_oid": target.oid,
                    "role": role.internal_name(), "label": role.label(level)})),
        )
        .await?;
        tx.commit().await?;
        Ok(crate::accounts::RoleView {
            username: user.username,
            study_oid: study.oid.clone(),
            site_oid: input.site_oid.clone().map(|_| target.oid.clone()),
            role: role.key().to_owned(),
            role_name: role.internal_name().to_owned(),
            label: role.label(level).to_owned(),
            level,
        })
    }

    /// Removes a user's role in the study or in one of its sites.
    ///
    /// # Errors
    /// Not found when the user holds no role there; forbidden.
    pub async fn remove_role(
        &self,
        who: &Principal,
        study_oid: &str,
        username: &str,
        site_oid: Option<&str>,
    ) -> Result<(), AppError> {
        let (study, access) = self.study_with_access(who, study_oid).await?;
        if !access.can_study(Permission::AssignRoles) {
            return Err(AppError::Forbidden("remove roles in this study"));
        }
        let target = match site_oid {
            Some(s) => self
                .store()
                .study_by_oid(s)
                .await?
                .filter(|x| x.parent_id == Some(study.id))
                .ok_or(AppError::NotFound("site"))?,
            None => study.clone(),
        };
        let user = self.store().user_by_username(username).await?.ok_or(AppError::NotFound("user"))?;
        let mut tx = self.store().write(who.actor()).await?;
        let Some(role) = tx.remove_role(user.id, target.id).await? else {
            return Err(AppError::NotFound("role assignment"));
        };
        let site_id = site_oid.map(|_| target.id);
        tx.audit(
            AuditEntry::new("role.removed", "role", format!("{}@{}", user.username, target.oid))
                .study(Some(study.id), site_id)
                .old(serde_json::json!({"username": user.username, "study_oid": target.oid, "role": role}))
                .new_value(serde_json::json!({"status": "removed"})),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Role assignments in a study and its sites that the principal may see.
    ///
    /// # Errors
    /// Not found when the study is invisible.
    pub async fn list_roles(
        &self,
        who: &Principal,
        study_oid: &str,
    ) -> Result<Vec<crate::accounts::RoleView>, AppError> {
        let (study, access) = self.study_with_access(who, study_oid).await?;
        let mut out = Vec::new();
        let mut places = vec![(study.clone(), RoleLevel::Study)];
        for s in self.store().sites_of(study.id).await? {
            if access.sees_site(s.id) {
                places.push((s, RoleLevel::Site));
            }
        }
        for (place, level) in places {
            for r in self.store().roles_in(place.id).await? {
                let Some(role) = Role::from_internal(&r.role) else { continue };
                out.push(crate::accounts::RoleView {
                    username: r.username,
                    study_oid: study.oid.clone(),
                    site_oid: (level == RoleLevel::Site).then(|| place.oid.clone()),
                    role: role.key().to_owned(),
                    role_name: role.internal_name().to_owned(),
                    label: role.label(level).to_owned(),
                    level,
                });
            }
        }
        Ok(out)
    }
}

fn conflict_protocol(e: casebook_store::StoreError, protocol_id: &str) -> AppError {
    match e {
        casebook_store::StoreError::Conflict => {
            AppError::Conflict(format!("the protocol ID '{protocol_id}' is already used by a study or site"))
        }
        other => other.into(),
    }
}
