//! Managing user accounts: create, edit, lock and unlock, reset passwords, remove and restore.

use crate::secrets::temporary_password;
use crate::{App, AppError, Principal};
use casebook_domain::FieldError;
use casebook_domain::audit::AuditEntry;
use casebook_domain::role::{Permission, RoleLevel};
use casebook_domain::user::{UserStatus, UserType, Username, parse_email};
use casebook_store::accounts::{NewUser, UserRow};
use time::OffsetDateTime;

/// A user as shown through the API (never the password hash).
#[derive(Debug, Clone, serde::Serialize)]
pub struct UserView {
    pub id: i64,
    pub username: String,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub institution: Option<String>,
    pub user_type: String,
    pub status: String,
    pub must_change_password: bool,
    pub failed_logins: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_login_at: Option<OffsetDateTime>,
}

impl From<UserRow> for UserView {
    fn from(u: UserRow) -> Self {
        Self {
            id: u.id,
            username: u.username,
            first_name: u.first_name,
            last_name: u.last_name,
            email: u.email,
            institution: u.institution,
            user_type: u.user_type,
            status: u.status,
            must_change_password: u.must_change_password,
            failed_logins: u.failed_logins,
            created_at: u.created_at,
            last_login_at: u.last_login_at,
        }
    }
}

/// Input for a new account.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUserInput {
    pub username: String,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    #[serde(default)]
    pub institution: Option<String>,
    #[serde(default)]
    pub user_type: Option<String>,
    /// An initial password; when absent a temporary one is generated and returned once.
    #[serde(default)]
    pub password: Option<String>,
}

/// Editable profile fields; absent fields stay as they are.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub institution: Option<String>,
    pub user_type: Option<String>,
}

/// A created account, with the temporary password when one was generated.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CreatedUser {
    pub user: UserView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temporary_password: Option<String>,
}

struct CheckedUser {
    username: Username,
    first_name: String,
    last_name: String,
    email: String,
    institution: Option<String>,
    user_type: UserType,
}

fn check_new_user(input: &NewUserInput) -> Result<CheckedUser, Vec<FieldError>> {
    let mut e = Vec::new();
    let username = Username::parse(&input.username).map_err(|x| e.push(x)).ok();
    let first_name = casebook_domain::text_field("first_name", Some(&input.first_name), 50, true, &mut e);
    let last_name = casebook_domain::text_field("last_name", Some(&input.last_name), 50, true, &mut e);
    let email = parse_email(&input.email).map_err(|x| e.push(x)).ok();
    let institution = casebook_domain::text_field("institution", input.institution.as_deref(), 255, false, &mut e);
    let user_type = input.user_type.as_deref().map_or(Ok(UserType::User), str::parse).map_err(|x| e.push(x)).ok();
    match (username, first_name, last_name, email, user_type) {
        (Some(username), Some(first_name), Some(last_name), Some(email), Some(user_type)) if e.is_empty() => {
            Ok(CheckedUser { username, first_name, last_name, email, institution, user_type })
        }
        _ => Err(e),
    }
}

impl App {
    fn require_user_admin(who: &Principal, target: UserType) -> Result<(), AppError> {
        if who.user_type.may_manage(target) { Ok(()) } else { Err(AppError::Forbidden("manage this user account")) }
    }

    /// Creates an account (administrators only; only technical administrators create
    /// technical administrators).
    ///
    /// # Errors
    /// Validation errors listing every problem; [`AppError::Conflict`] for a taken username.
    pub async fn create_user(&self, who: &Principal, input: NewUserInput) -> Result<CreatedUser, AppError> {
        let checked = check_new_user(&input).map_err(AppError::Validation)?;
        Self::require_user_admin(who, checked.user_type)?;
        self.insert_user(who.actor(), checked, input.password, true).await
    }

    /// The operator bootstrap: creates a technical administrator from the command line,
    /// with the password the operator chose (no forced change).
    ///
    /// # Errors
    /// Validation errors; [`AppError::Conflict`] for a taken username.
    pub async fn bootstrap_admin(&self, mut input: NewUserInput) -> Result<CreatedUser, AppError> {
        input.user_type = Some(UserType::TechnicalAdministrator.as_str().to_owned());
        self.create_user_as_system(input, casebook_domain::audit::Channel::Cli).await
    }

    /// Creates an account on the operator's or the system's behalf (command line, demo):
    /// no principal, and a chosen password is kept without a forced change.
    ///
    /// # Errors
    /// Validation errors; [`AppError::Conflict`] for a taken username.
    pub async fn create_user_as_system(
        &self,
        input: NewUserInput,
        channel: casebook_domain::audit::Channel,
    ) -> Result<CreatedUser, AppError> {
        let checked = check_new_user(&input).map_err(AppError::Validation)?;
        self.insert_user(casebook_store::Actor::system(channel), checked, input.password, false).await
    }

    async fn insert_user(
        &self,
        actor: casebook_store::Actor,
        c: CheckedUser,
        password: Option<String>,
        force_change_when_given: bool,
    ) -> Result<CreatedUser, AppError> {
        let (password, generated) = match password {
            Some(p) => {
                let errors = self.security().password.check(c.username.as_str(), &p);
                if !errors.is_empty() {
                    return Err(AppError::Validation(errors));
                }
                (p, false)
            }
            None => (temporary_password(), true),
        };
        if self.store().user_by_username(c.username.as_str()).await?.is_some() {
            return Err(AppError::Conflict(format!("the username '{}' is already taken", c.username)));
        }
        let hash = self.hash_password(&password).await?;
        let must_change = generated || force_change_when_given;
        let mut tx = self.store().write(actor).await?;
        let id = tx
            .insert_user(&NewUser {
                username: c.username.as_str(),
                first_name: &c.first_name,
                last_name: &c.last_name,
                email: &c.email,
                institution: c.institution.as_deref(),
                user_type: c.user_type.as_str(),
                password_hash: &hash,
                must_change_password: must_change,
            })
            .await
            .map_err(|e| match e {
                casebook_store::StoreError::Conflict => {
                    AppError::Conflict(format!("the username '{}' is already taken", c.username))
                }
                other => other.into(),
            })?;
        tx.audit(AuditEntry::new("user.created", "user", id).new_value(serde_json::json!({
            "username": c.username.as_str(), "first_name": c.first_name, "last_name": c.last_name,
            "email": c.email, "institution": c.institution, "user_type": c.user_type.as_str(), "status": "active",
        })))
        .await?;
        tx.commit().await?;
        let user = self.store().user_by_id(id).await?.ok_or(AppError::NotFound("user"))?;
        Ok(CreatedUser { user: user.into(), temporary_password: generated.then_some(password) })
    }

    /// Users the principal may see: administrators see all; data managers and study
    /// directors see the users of their studies and sites; others see themselves.
    ///
    /// # Errors
    /// On storage failure.
    pub async fn list_users(&self, who: &Principal) -> Result<Vec<UserView>, AppError> {
        if who.user_type.is_admin() {
            return Ok(self.store().users().await?.into_iter().map(UserView::from).collect());
        }
        let mut scope = Vec::new();
        for r in self.store().roles_of_user(who.user_id).await? {
            let Some(role) = casebook_domain::role::Role::from_internal(&r.role) else { continue };
            if !role.allows(Permission::AssignRoles) {
                continue;
            }
            if r.parent_id.is_none() {
                scope.push(r.study_id);
                scope.extend(self.store().sites_of(r.study_id).await?.into_iter().map(|s| s.id));
            } else {
                scope.push(r.study_id);
            }
        }
        let mut users = self.store().users_in_studies(&scope).await?;
        if !users.iter().any(|u| u.id == who.user_id)
            && let Some(me) = self.store().user_by_id(who.user_id).await?
        {
            users.push(me);
        }
        Ok(users.into_iter().map(UserView::from).collect())
    }

    /// One user, if the principal may see them.
    ///
    /// # Errors
    /// [`AppError::NotFound`] when missing or not visible.
    pub async fn get_user(&self, who: &Principal, username: &str) -> Result<UserView, AppError> {
        self.list_users(who).await?.into_iter().find(|u| u.username == username).ok_or(AppError::NotFound("user"))
    }

    async fn target_for_admin(&self, who: &Principal, username: &str) -> Result<UserRow, AppError> {
        let user = self.store().user_by_username(username).await?.ok_or(AppError::NotFound("user"))?;
        let ty: UserType = user.user_type.parse().map_err(|_| crate::error::anyhow_like::msg("bad user type"))?;
        Self::require_user_admin(who, ty)?;
        Ok(user)
    }

    /// Edits a user's profile and type.
    ///
    /// # Errors
    /// Validation errors; forbidden for non-administrators.
    pub async fn update_user(&self, who: &Principal, username: &str, patch: UserPatch) -> Result<UserView, AppError> {
        let user = self.target_for_admin(who, username).await?;
        let mut e = Vec::new();
        let first = casebook_domain::text_field(
            "first_name",
            Some(patch.first_name.as_deref().unwrap_or(&user.first_name)),
            50,
            true,
            &mut e,
        );
        let last = casebook_domain::text_field(
            "last_name",
            Some(patch.last_name.as_deref().unwrap_or(&user.last_name)),
            50,
            true,
            &mut e,
        );
        let email = parse_email(patch.email.as_deref().unwrap_or(&user.email)).map_err(|x| e.push(x)).ok();
        let institution = casebook_domain::text_field(
            "institution",
            patch.institution.as_deref().or(user.institution.as_deref()),
            255,
            false,
            &mut e,
        );
        let ty = patch.user_type.as_deref().unwrap_or(&user.user_type).parse::<UserType>().map_err(|x| e.push(x)).ok();
        let (Some(first), Some(last), Some(email), Some(ty)) = (first, last, email, ty) else {
            return Err(AppError::Validation(e));
        };
        if !e.is_empty() {
            return Err(AppError::Validation(e));
        }
        Self::require_user_admin(who, ty)?;
        if user.id == who.user_id && ty != who.user_type {
            return Err(AppError::invalid("user_type", "you cannot change your own user type"));
        }
        let old = serde_json::json!({"first_name": user.first_name, "last_name": user.last_name, "email": user.email,
            "institution": user.institution, "user_type": user.user_type});
        let new = serde_json::json!({"first_name": first, "last_name": last, "email": email,
            "institution": institution, "user_type": ty.as_str()});
        let mut tx = self.store().write(who.actor()).await?;
        tx.update_user_profile(user.id, &first, &last, &email, institution.as_deref(), ty.as_str()).await?;
        tx.audit(AuditEntry::new("user.updated", "user", user.id).old(old).new_value(new)).await?;
        tx.commit().await?;
        Ok(self.store().user_by_id(user.id).await?.ok_or(AppError::NotFound("user"))?.into())
    }

    /// Sets an account's status (lock, unlock, remove, restore). Locking and removing end
    /// the user's sessions; removing also revokes their API keys.
    ///
    /// # Errors
    /// [`AppError::InvalidTransition`] when the account is not in a status the action applies to.
    pub async fn set_user_status(
        &self,
        who: &Principal,
        username: &str,
        action: UserAction,
    ) -> Result<UserView, AppError> {
        let user = self.target_for_admin(who, username).await?;
        if user.id == who.user_id {
            return Err(AppError::InvalidTransition("you cannot lock or remove your own account".to_owned()));
        }
        let from: UserStatus = user.status.parse().map_err(crate::error::anyhow_like::msg)?;
        let (allowed, to, verb) = match action {
            UserAction::Lock => (from == UserStatus::Active, UserStatus::Locked, "user.locked"),
            UserAction::Unlock => (from == UserStatus::Locked, UserStatus::Active, "user.unlocked"),
            UserAction::Remove => (from != UserStatus::Removed, UserStatus::Removed, "user.removed"),
            UserAction::Restore => (from == UserStatus::Removed, UserStatus::Active, "user.restored"),
        };
        if !allowed {
            return Err(AppError::InvalidTransition(format!(
                "cannot {} an account that is {}",
                action.as_str(),
                from.as_str()
            )));
        }
        let mut tx = self.store().write(who.actor()).await?;
        tx.set_user_status(user.id, to.as_str(), 0).await?;
        if matches!(to, UserStatus::Locked | UserStatus::Removed) {
            tx.delete_sessions_of(user.id).await?;
        }
        if to == UserStatus::Removed {
            tx.revoke_api_keys_of(user.id).await?;
        }
        tx.audit(
            AuditEntry::new(verb, "user", user.id)
                .old(serde_json::json!({"status": from.as_str(), "failed_logins": user.failed_logins}))
                .new_value(serde_json::json!({"status": to.as_str(), "failed_logins": 0})),
        )
        .await?;
        tx.commit().await?;
        Ok(self.store().user_by_id(user.id).await?.ok_or(AppError::NotFound("user"))?.into())
    }

    /// Resets a password to a temporary one (returned once); the user must change it at the
    /// next sign-in. Ends the user's sessions and clears a lockout.
    ///
    /// # Errors
    /// Forbidden for non-administrators.
    pub async fn reset_password(&self, who: &Principal, username: &str) -> Result<String, AppError> {
        let user = self.target_for_admin(who, username).await?;
        if user.status == UserStatus::Removed.as_str() {
            return Err(AppError::InvalidTransition("restore the account before resetting its password".to_owned()));
        }
        let password = temporary_password();
        let hash = self.hash_password(&password).await?;
        let mut tx = self.store().write(who.actor()).await?;
        tx.set_password(user.id, &hash, true).await?;
        tx.set_user_status(user.id, UserStatus::Active.as_str(), 0).await?;
        tx.delete_sessions_of(user.id).await?;
        tx.audit(
            AuditEntry::new("user.password_reset", "user", user.id)
                .old(serde_json::json!({"status": user.status}))
                .new_value(serde_json::json!({"status": "active", "must_change_password": true})),
        )
        .await?;
        tx.commit().await?;
        Ok(password)
    }

    /// Sets a password from the command line (operator), without forcing a change.
    ///
    /// # Errors
    /// Validation errors; not found.
    pub async fn set_password_cli(&self, username: &str, password: &str) -> Result<(), AppError> {
        let user = self.store().user_by_username(username).await?.ok_or(AppError::NotFound("user"))?;
        let errors = self.security().password.check(&user.username, password);
        if !errors.is_empty() {
            return Err(AppError::Validation(errors));
        }
        let hash = self.hash_password(password).await?;
        let mut tx = self.store().write(casebook_store::Actor::system(casebook_domain::audit::Channel::Cli)).await?;
        tx.set_password(user.id, &hash, false).await?;
        tx.set_user_status(user.id, UserStatus::Active.as_str(), 0).await?;
        tx.delete_sessions_of(user.id).await?;
        tx.audit(
            AuditEntry::new("user.password_reset", "user", user.id).new_value(serde_json::json!({"by": "operator"})),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Roles a user holds, for the landing page and `/me`.
    ///
    /// # Errors
    /// On storage failure.
    pub async fn my_roles(&self, who: &Principal) -> Result<Vec<RoleView>, AppError> {
        let mut out = Vec::new();
        for r in self.store().roles_of_user(who.user_id).await? {
            let Some(role) = casebook_domain::role::Role::from_internal(&r.role) else { continue };
            let level = if r.parent_id.is_some() { RoleLevel::Site } else { RoleLevel::Study };
            let study = self.store().study_by_id(r.parent_id.unwrap_or(r.study_id)).await?;
            out.push(RoleView {
                username: r.username,
                study_oid: study.map(|s| s.oid).unwrap_or_default(),
                site_oid: r.parent_id.map(|_| r.study_oid.clone()),
                role: role.key().to_owned(),
                role_name: role.internal_name().to_owned(),
                label: role.label(level).to_owned(),
                level,
            });
        }
        Ok(out)
    }
}

/// A role assignment as shown through the API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RoleView {
    pub username: String,
    pub study_oid: String,
    /// Set when the role is held at a site.
    pub site_oid: Option<String>,
    /// Stable key (`data_manager`, `investigator`, …).
    pub role: String,
    /// OpenClinica internal role name (`coordinator`, `Investigator`, `ra`, …).
    pub role_name: String,
    /// The label for the level it is held at.
    pub label: String,
    pub level: RoleLevel,
}

/// Status changes an administrator makes to an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserAction {
    Lock,
    Unlock,
    Remove,
    Restore,
}

impl UserAction {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lock => "lock",
            Self::Unlock => "unlock",
            Self::Remove => "remove",
            Self::Restore => "restore",
        }
    }
}
