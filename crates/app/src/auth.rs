//! Signing in and out, sessions, API keys, and who is asking ([`Principal`]).

use crate::secrets::{constant_time_eq, new_api_key, random_token, token_hash, verify_password};
use crate::{App, AppError};
use casebook_domain::audit::{AuditEntry, Channel};
use casebook_domain::user::{UserStatus, UserType};
use casebook_store::Actor;
use casebook_store::accounts::{ApiKeyRow, UserRow};
use time::OffsetDateTime;

/// An authenticated user, and how they authenticated.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: i64,
    pub username: String,
    pub user_type: UserType,
    pub must_change_password: bool,
    pub via: Via,
    /// Where the request came in (UI for browser sessions, API for keys).
    pub channel: Channel,
    /// The request id, recorded on audit rows.
    pub request_id: Option<String>,
}

/// How a principal authenticated.
#[derive(Debug, Clone)]
pub enum Via {
    Session {
        session_id: i64,
        csrf_token: String,
    },
    ApiKey {
        key_id: i64,
    },
    /// The server's own command line (operator on the machine).
    Cli,
}

impl Principal {
    /// The audit actor for this principal.
    #[must_use]
    pub fn actor(&self) -> Actor {
        Actor {
            user_id: Some(self.user_id),
            username: self.username.clone(),
            channel: self.channel,
            request_id: self.request_id.clone(),
        }
    }

    /// A principal for an operator at the server's command line, acting as `user`.
    #[must_use]
    pub fn cli(user: &UserRow) -> Self {
        Self {
            user_id: user.id,
            username: user.username.clone(),
            user_type: user.user_type.parse().unwrap_or(UserType::User),
            must_change_password: false,
            via: Via::Cli,
            channel: Channel::Cli,
            request_id: None,
        }
    }

    fn from_user(user: &UserRow, via: Via, channel: Channel, request_id: Option<String>) -> Self {
        Self {
            user_id: user.id,
            username: user.username.clone(),
            user_type: user.user_type.parse().unwrap_or(UserType::User),
            must_change_password: user.must_change_password,
            via,
            channel,
            request_id,
        }
    }
}

/// A successful sign-in: the new session's secret token (for the cookie) and CSRF token.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub token: String,
    pub csrf_token: String,
    pub must_change_password: bool,
}

/// A newly created API key: the secret is in `key` and is never available again.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CreatedApiKey {
    pub id: i64,
    pub name: String,
    pub prefix: String,
    pub key: String,
}

/// A stored API key as shown to its owner.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApiKeyView {
    pub id: i64,
    pub name: String,
    pub prefix: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

impl From<ApiKeyRow> for ApiKeyView {
    fn from(k: ApiKeyRow) -> Self {
        Self {
            id: k.id,
            name: k.name,
            prefix: k.prefix,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        }
    }
}

impl App {
    /// Signs a user in with username and password. Failures are recorded (and committed)
    /// even though the sign-in fails; the N-th consecutive failure locks the account.
    ///
    /// # Errors
    /// [`AppError::InvalidCredentials`], [`AppError::AccountLocked`].
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        channel: Channel,
        request_id: Option<String>,
    ) -> Result<NewSession, AppError> {
        let actor = |user_id| Actor {
            user_id,
            username: username.chars().take(64).collect(),
            channel,
            request_id: request_id.clone(),
        };
        let Some(user) = self.store().user_by_username(username).await? else {
            // Spend the same time as for a known user, so usernames cannot be probed by timing.
            let dummy = self.dummy_hash().await?;
            let _ = verify_password(password.to_owned(), dummy).await;
            let mut tx = self.store().write(actor(None)).await?;
            tx.audit(
                AuditEntry::new("login.failed", "user", username.chars().take(64).collect::<String>())
                    .new_value(serde_json::json!({"reason": "unknown username"})),
            )
            .await?;
            tx.commit().await?;
            return Err(AppError::InvalidCredentials);
        };
        let password_ok = verify_password(password.to_owned(), user.password_hash.clone()).await;
        let mut tx = self.store().write(actor(Some(user.id))).await?;
        // Re-read under the write lock so concurrent failures count correctly.
        let user = tx.user_for_update(&user.username).await?.ok_or(AppError::InvalidCredentials)?;
        let status: UserStatus = user.status.parse().map_err(crate::error::anyhow_like::msg)?;
        if status == UserStatus::Removed {
            tx.audit(
                AuditEntry::new("login.failed", "user", user.id)
                    .new_value(serde_json::json!({"reason": "account removed"})),
            )
            .await?;
            tx.commit().await?;
            return Err(AppError::InvalidCredentials);
        }
        if status == UserStatus::Locked {
            tx.audit(AuditEntry::new("login.refused_locked", "user", user.id)).await?;
            tx.commit().await?;
            return Err(AppError::AccountLocked);
        }
        if !password_ok {
            let failures = user.failed_logins + 1;
            let sec = self.security();
            let lock = sec.lockout_enabled && failures >= sec.lockout_after;
            let new_status = if lock { UserStatus::Locked } else { UserStatus::Active };
            tx.set_user_status(user.id, new_status.as_str(), failures).await?;
            tx.audit(
                AuditEntry::new("login.failed", "user", user.id)
                    .new_value(serde_json::json!({"reason": "wrong password", "consecutive_failures": failures})),
            )
            .await?;
            if lock {
                tx.delete_sessions_of(user.id).await?;
                tx.audit(
                    AuditEntry::new("user.locked", "user", user.id)
                        .old(serde_json::json!({"status": "active"}))
                        .new_value(serde_json::json!({"status": "locked", "reason": "too many failed sign-ins"})),
                )
                .await?;
            }
            tx.commit().await?;
            return Err(if lock { AppError::AccountLocked } else { AppError::InvalidCredentials });
        }
        let token = random_token(32);
        let csrf_token = random_token(32);
        tx.record_login(user.id).await?;
        tx.insert_session(user.id, &token_hash(&token), &csrf_token, channel.as_str()).await?;
        tx.audit(AuditEntry::new("login.succeeded", "user", user.id)).await?;
        tx.commit().await?;
        Ok(NewSession { token, csrf_token, must_change_password: user.must_change_password })
    }

    /// Ends the principal's browser session.
    ///
    /// # Errors
    /// On storage failure.
    pub async fn logout(&self, who: &Principal) -> Result<(), AppError> {
        if let Via::Session { session_id, .. } = who.via {
            let mut tx = self.store().write(who.actor()).await?;
            tx.delete_session(session_id).await?;
            tx.audit(AuditEntry::new("logout", "user", who.user_id)).await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// Resolves a session cookie. Sessions idle longer than the timeout end here.
    ///
    /// # Errors
    /// [`AppError::Unauthenticated`] for unknown or expired sessions and inactive accounts.
    pub async fn authenticate_session(&self, token: &str, request_id: Option<String>) -> Result<Principal, AppError> {
        let store = self.store();
        let session = store
            .session_by_token_hash(&token_hash(token))
            .await?
            .ok_or(AppError::Unauthenticated("your session has ended; sign in again"))?;
        let now = store.clock().now();
        if now - session.last_seen_at > self.security().idle_timeout() {
            let mut tx = store.write(casebook_store::Actor::system(Channel::System)).await?;
            tx.delete_session(session.id).await?;
            tx.audit(AuditEntry::new("session.expired", "user", session.user_id)).await?;
            tx.commit().await?;
            return Err(AppError::Unauthenticated("your session expired after inactivity; sign in again"));
        }
        let user = store.user_by_id(session.user_id).await?.ok_or(AppError::Unauthenticated("unknown user"))?;
        if user.status != UserStatus::Active.as_str() {
            return Err(AppError::Unauthenticated("the account is not active"));
        }
        // The session's idle clock restarts now (awaited: the next request must see it). A
        // failure to record it does not fail the request.
        if now - session.last_seen_at > time::Duration::seconds(30)
            && let Err(e) = store.touch_session(session.id, now).await
        {
            tracing::warn!(error = %e, "recording the use of a session failed");
        }
        let channel: Channel = session.channel.parse().unwrap_or(Channel::Ui);
        let via = Via::Session { session_id: session.id, csrf_token: session.csrf_token };
        Ok(Principal::from_user(&user, via, channel, request_id))
    }

    /// Resolves an API key (from `Authorization: Bearer` or OpenClinica-style Basic).
    ///
    /// # Errors
    /// [`AppError::Unauthenticated`] for unknown or revoked keys and inactive accounts.
    pub async fn authenticate_api_key(&self, key: &str, request_id: Option<String>) -> Result<Principal, AppError> {
        let key = key.trim();
        if !key.starts_with("cbk_") || key.len() != 44 {
            return Err(AppError::Unauthenticated("the API key is malformed"));
        }
        let store = self.store();
        let row = store
            .api_key_by_hash(&token_hash(key))
            .await?
            .ok_or(AppError::Unauthenticated("the API key is not valid"))?;
        if !constant_time_eq(&row.prefix, &key[..12]) || row.revoked_at.is_some() {
            return Err(AppError::Unauthenticated("the API key has been revoked"));
        }
        let user = store.user_by_id(row.user_id).await?.ok_or(AppError::Unauthenticated("unknown user"))?;
        if user.status != UserStatus::Active.as_str() {
            return Err(AppError::Unauthenticated("the account is not active"));
        }
        let now = store.clock().now();
        if row.last_used_at.is_none_or(|t| now - t > time::Duration::minutes(1)) {
            touch_key_later(store, row.id, now);
        }
        Ok(Principal::from_user(&user, Via::ApiKey { key_id: row.id }, Channel::Api, request_id))
    }

    /// Changes the principal's own password (needs the current one). Ends the user's other
    /// sessions.
    ///
    /// # Errors
    /// [`AppError::InvalidCredentials`] for a wrong current password; validation errors.
    pub async fn change_password(&self, who: &Principal, current: &str, new: &str) -> Result<(), AppError> {
        let user = self.store().user_by_id(who.user_id).await?.ok_or(AppError::NotFound("user"))?;
        if !verify_password(current.to_owned(), user.password_hash.clone()).await {
            return Err(AppError::Validation(vec![casebook_domain::FieldError::new(
                "current_password",
                "is not your current password",
            )]));
        }
        let mut errors = self.security().password.check(&user.username, new);
        if current == new {
            errors.push(casebook_domain::FieldError::new("new_password", "must differ from the current password"));
        }
        if !errors.is_empty() {
            for e in &mut errors {
                e.field = "new_password".to_owned();
            }
            return Err(AppError::Validation(errors));
        }
        let hash = self.hash_password(new).await?;
        let mut tx = self.store().write(who.actor()).await?;
        tx.set_password(user.id, &hash, false).await?;
        tx.delete_sessions_of(user.id).await?;
        tx.audit(AuditEntry::new("user.password_changed", "user", user.id)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Creates a named API key for the principal. The secret is returned once.
    ///
    /// # Errors
    /// Validation errors for a bad name.
    pub async fn create_api_key(&self, who: &Principal, name: &str) -> Result<CreatedApiKey, AppError> {
        let mut errors = Vec::new();
        let name = casebook_domain::text_field("name", Some(name), 100, true, &mut errors);
        let Some(name) = name else { return Err(AppError::Validation(errors)) };
        let (key, prefix) = new_api_key();
        let mut tx = self.store().write(who.actor()).await?;
        let id = tx.insert_api_key(who.user_id, &name, &prefix, &token_hash(&key)).await?;
        tx.audit(
            AuditEntry::new("api_key.created", "api_key", id)
                .new_value(serde_json::json!({"name": name, "prefix": prefix, "user_id": who.user_id})),
        )
        .await?;
        tx.commit().await?;
        Ok(CreatedApiKey { id, name, prefix, key })
    }

    /// The principal's API keys (never the secrets).
    ///
    /// # Errors
    /// On storage failure.
    pub async fn api_keys(&self, who: &Principal) -> Result<Vec<ApiKeyView>, AppError> {
        Ok(self.store().api_keys_of(who.user_id).await?.into_iter().map(ApiKeyView::from).collect())
    }

    /// Revokes one of the principal's keys.
    ///
    /// # Errors
    /// [`AppError::NotFound`] when the key is not the principal's or already revoked.
    pub async fn revoke_api_key(&self, who: &Principal, key_id: i64) -> Result<(), AppError> {
        let mut tx = self.store().write(who.actor()).await?;
        if !tx.revoke_api_key(who.user_id, key_id).await? {
            return Err(AppError::NotFound("active API key"));
        }
        tx.audit(AuditEntry::new("api_key.revoked", "api_key", key_id)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Checks a CSRF token against the principal's session.
    #[must_use]
    pub fn csrf_ok(who: &Principal, token: Option<&str>) -> bool {
        match &who.via {
            Via::Session { csrf_token, .. } => token.is_some_and(|t| constant_time_eq(t, csrf_token)),
            Via::ApiKey { .. } | Via::Cli => true,
        }
    }
}

impl App {
    /// The principal an operator acts as on the server's command line: the named active user,
    /// or, without a name, the first active technical administrator.
    ///
    /// # Errors
    /// [`AppError::NotFound`] when there is no such (active) user.
    pub async fn cli_principal(&self, username: Option<&str>) -> Result<Principal, AppError> {
        let row = match username {
            Some(u) => self.store().user_by_username(u).await?.filter(|r| r.status == "active"),
            None => self
                .store()
                .users()
                .await?
                .into_iter()
                .find(|r| r.status == "active" && r.user_type == "technical_administrator"),
        }
        .ok_or(AppError::NotFound("active user to act as (create one with `casebook user create-admin`)"))?;
        let user_type = row.user_type.parse().unwrap_or(UserType::User);
        Ok(Principal {
            user_id: row.id,
            username: row.username,
            user_type,
            must_change_password: false,
            via: Via::Cli,
            channel: Channel::Cli,
            request_id: None,
        })
    }
}

impl App {
    /// Whether `password` is the principal's password (an e-signature re-authentication).
    ///
    /// # Errors
    /// On storage failure.
    pub async fn password_matches(&self, who: &Principal, password: &str) -> Result<bool, AppError> {
        if password.is_empty() {
            return Ok(false);
        }
        let Some(user) = self.store().user_by_id(who.user_id).await? else { return Ok(false) };
        Ok(verify_password(password.to_owned(), user.password_hash).await)
    }
}

/// Records a use of an API key in the background: bookkeeping must not hold a request up (on
/// SQLite, a long import holds the only write lock) nor fail it.
fn touch_key_later(store: &casebook_store::Store, key_id: i64, now: OffsetDateTime) {
    let store = store.clone();
    tokio::spawn(async move {
        if let Err(e) = store.touch_api_key(key_id, now).await {
            tracing::debug!(error = %e, "recording the use of an API key failed");
        }
    });
}
