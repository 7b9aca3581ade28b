//! Users, browser sessions, API keys and role assignments.

use crate::db::StoreError;
use crate::{Store, WriteTx};
use time::OffsetDateTime;

/// A user row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub institution: Option<String>,
    pub user_type: String,
    pub status: String,
    pub password_hash: String,
    pub must_change_password: bool,
    pub failed_logins: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub password_changed_at: OffsetDateTime,
    pub last_login_at: Option<OffsetDateTime>,
}

/// What a new user needs.
#[derive(Debug, Clone)]
pub struct NewUser<'a> {
    pub username: &'a str,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub email: &'a str,
    pub institution: Option<&'a str>,
    pub user_type: &'a str,
    pub password_hash: &'a str,
    pub must_change_password: bool,
}

macro_rules! user_select {
    ($tail:literal) => {
        concat!(
            "SELECT id, username, first_name, last_name, email, institution, user_type, status, \
             password_hash, must_change_password, failed_logins, created_at, updated_at, password_changed_at, \
             last_login_at FROM users ",
            $tail
        )
    };
}

impl Store {
    /// # Errors
    /// On database failure.
    pub async fn user_by_username(&self, username: &str) -> Result<Option<UserRow>, StoreError> {
        Ok(
            on_db!(self.db(), p => sqlx::query_as(user_select!("WHERE username = $1")).bind(username).fetch_optional(p).await?),
        )
    }

    /// # Errors
    /// On database failure.
    pub async fn user_by_id(&self, id: i64) -> Result<Option<UserRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(user_select!("WHERE id = $1")).bind(id).fetch_optional(p).await?))
    }

    /// All users, by username.
    ///
    /// # Errors
    /// On database failure.
    pub async fn users(&self) -> Result<Vec<UserRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(user_select!("ORDER BY username")).fetch_all(p).await?))
    }

    /// Users who hold an active role in any of `study_ids`.
    ///
    /// # Errors
    /// On database failure.
    pub async fn users_in_studies(&self, study_ids: &[i64]) -> Result<Vec<UserRow>, StoreError> {
        let mut out: Vec<UserRow> = Vec::new();
        for id in study_ids {
            let rows: Vec<UserRow> = on_db!(self.db(), p => sqlx::query_as(user_select!(
                "WHERE id IN (SELECT user_id FROM role_assignments WHERE study_id = $1 AND status = 'active') ORDER BY username"))
                .bind(id).fetch_all(p).await?);
            for r in rows {
                if !out.iter().any(|u| u.id == r.id) {
                    out.push(r);
                }
            }
        }
        out.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(out)
    }

    /// Whether any administrator account exists (for the operator bootstrap).
    ///
    /// # Errors
    /// On database failure.
    pub async fn count_users(&self) -> Result<i64, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(p).await?))
    }

    /// The session with this token hash, with its user.
    ///
    /// # Errors
    /// On database failure.
    pub async fn session_by_token_hash(&self, token_hash: &str) -> Result<Option<SessionRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(
            "SELECT id, user_id, csrf_token, channel, created_at, last_seen_at FROM sessions WHERE token_hash = $1")
            .bind(token_hash).fetch_optional(p).await?))
    }

    /// Marks a session as used now. Not audited: it is bookkeeping, not a change of record.
    ///
    /// # Errors
    /// On database failure.
    pub async fn touch_session(&self, id: i64, now: OffsetDateTime) -> Result<(), StoreError> {
        on_db!(self.db(), p => sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id = $2").bind(now).bind(id).execute(p).await?.rows_affected());
        Ok(())
    }

    /// Deletes sessions idle since before `cutoff` (expired). Returns how many.
    ///
    /// # Errors
    /// On database failure.
    pub async fn purge_sessions(&self, cutoff: OffsetDateTime) -> Result<u64, StoreError> {
        let r = on_db!(self.db(), p => sqlx::query("DELETE FROM sessions WHERE last_seen_at < $1").bind(cutoff).execute(p).await?.rows_affected());
        Ok(r)
    }

    /// The API key with this hash and its owner.
    ///
    /// # Errors
    /// On database failure.
    pub async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(
            "SELECT id, user_id, name, prefix, created_at, last_used_at, revoked_at FROM api_keys WHERE key_hash = $1")
            .bind(key_hash).fetch_optional(p).await?))
    }

    /// A user's API keys, newest first.
    ///
    /// # Errors
    /// On database failure.
    pub async fn api_keys_of(&self, user_id: i64) -> Result<Vec<ApiKeyRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(
            "SELECT id, user_id, name, prefix, created_at, last_used_at, revoked_at FROM api_keys WHERE user_id = $1 ORDER BY id DESC")
            .bind(user_id).fetch_all(p).await?))
    }

    /// Records a use of a key, at most once a minute (bookkeeping, not audited).
    ///
    /// # Errors
    /// On database failure.
    pub async fn touch_api_key(&self, id: i64, now: OffsetDateTime) -> Result<(), StoreError> {
        let stale = now - time::Duration::minutes(1);
        on_db!(self.db(), p => sqlx::query(
            "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)")
            .bind(now).bind(id).bind(stale).execute(p).await?.rows_affected());
        Ok(())
    }

    /// Active role assignments of a user, with the study or site they are held in.
    ///
    /// # Errors
    /// On database failure.
    pub async fn roles_of_user(&self, user_id: i64) -> Result<Vec<RoleRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(
            "SELECT r.id, r.user_id, u.username, r.study_id, s.parent_id, s.oid AS study_oid, r.role, r.status, r.created_at, r.removed_at \
             FROM role_assignments r JOIN studies s ON s.id = r.study_id JOIN users u ON u.id = r.user_id \
             WHERE r.user_id = $1 AND r.status = 'active' ORDER BY r.id")
            .bind(user_id).fetch_all(p).await?))
    }

    /// Active role assignments held in a study or site.
    ///
    /// # Errors
    /// On database failure.
    pub async fn roles_in(&self, study_id: i64) -> Result<Vec<RoleRow>, StoreError> {
        Ok(on_db!(self.db(), p => sqlx::query_as(
            "SELECT r.id, r.user_id, u.username, r.study_id, s.parent_id, s.oid AS study_oid, r.role, r.status, r.created_at, r.removed_at \
             FROM role_assignments r JOIN studies s ON s.id = r.study_id JOIN users u ON u.id = r.user_id \
             WHERE r.study_id = $1 AND r.status = 'active' ORDER BY u.username")
            .bind(study_id).fetch_all(p).await?))
    }
}

/// A session row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub id: i64,
    pub user_id: i64,
    pub csrf_token: String,
    pub channel: String,
    pub created_at: OffsetDateTime,
    pub last_seen_at: OffsetDateTime,
}

/// An API key row (never the secret).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub prefix: String,
    pub created_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
}

/// An active role assignment.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RoleRow {
    pub id: i64,
    pub user_id: i64,
    pub username: String,
    pub study_id: i64,
    /// The parent study when the role is held at a site.
    pub parent_id: Option<i64>,
    pub study_oid: String,
    pub role: String,
    pub status: String,
    pub created_at: OffsetDateTime,
    pub removed_at: Option<OffsetDateTime>,
}

impl WriteTx {
    /// Inserts a user; returns its id.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the username is taken.
    pub async fn insert_user(&mut self, u: &NewUser<'_>) -> Result<i64, StoreError> {
        let now = self.now();
        Ok(on_tx!(self, c => sqlx::query_scalar(
            "INSERT INTO users (username, first_name, last_name, email, institution, user_type, status, password_hash, \
             must_change_password, failed_logins, created_at, updated_at, password_changed_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $8, 0, $9, $9, $9) RETURNING id")
            .bind(u.username).bind(u.first_name).bind(u.last_name).bind(u.email).bind(u.institution)
            .bind(u.user_type).bind(u.password_hash).bind(u.must_change_password).bind(now)
            .fetch_one(c).await?))
    }

    /// Re-reads a user inside the transaction (for read-modify-write).
    ///
    /// # Errors
    /// On database failure.
    pub async fn user_for_update(&mut self, username: &str) -> Result<Option<UserRow>, StoreError> {
        // SQLite's BEGIN IMMEDIATE already holds the write lock; PostgreSQL locks the row.
        Ok(match &mut self.tx {
            crate::tx::Tx::Sqlite(t) => {
                sqlx::query_as(user_select!("WHERE username = $1")).bind(username).fetch_optional(&mut **t).await?
            }
            crate::tx::Tx::Postgres(t) => {
                sqlx::query_as(user_select!("WHERE username = $1 FOR UPDATE"))
                    .bind(username)
                    .fetch_optional(&mut **t)
                    .await?
            }
        })
    }

    /// Updates a user's profile fields.
    ///
    /// # Errors
    /// On database failure.
    pub async fn update_user_profile(
        &mut self,
        id: i64,
        first: &str,
        last: &str,
        email: &str,
        institution: Option<&str>,
        user_type: &str,
    ) -> Result<(), StoreError> {
        let now = self.now();
        on_tx!(self, c => sqlx::query(
            "UPDATE users SET first_name = $1, last_name = $2, email = $3, institution = $4, user_type = $5, updated_at = $6 WHERE id = $7")
            .bind(first).bind(last).bind(email).bind(institution).bind(user_type).bind(now).bind(id).execute(c).await?.rows_affected());
        Ok(())
    }

    /// Sets status and failed-login counter.
    ///
    /// # Errors
    /// On database failure.
    pub async fn set_user_status(&mut self, id: i64, status: &str, failed_logins: i64) -> Result<(), StoreError> {
        let now = self.now();
        on_tx!(self, c => sqlx::query("UPDATE users SET status = $1, failed_logins = $2, updated_at = $3 WHERE id = $4")
            .bind(status).bind(failed_logins).bind(now).bind(id).execute(c).await?.rows_affected());
        Ok(())
    }

    /// Records a successful sign-in.
    ///
    /// # Errors
    /// On database failure.
    pub async fn record_login(&mut self, id: i64) -> Result<(), StoreError> {
        let now = self.now();
        on_tx!(self, c => sqlx::query("UPDATE users SET failed_logins = 0, last_login_at = $1 WHERE id = $2")
            .bind(now).bind(id).execute(c).await?.rows_affected());
        Ok(())
    }

    /// Replaces the password hash.
    ///
    /// # Errors
    /// On database failure.
    pub async fn set_password(&mut self, id: i64, hash: &str, must_change: bool) -> Result<(), StoreError> {
        let now = self.now();
        on_tx!(self, c => sqlx::query(
            "UPDATE users SET password_hash = $1, must_change_password = $2, password_changed_at = $3, updated_at = $3 WHERE id = $4")
            .bind(hash).bind(must_change).bind(now).bind(id).execute(c).await?.rows_affected());
        Ok(())
    }

    /// Creates a session.
    ///
    /// # Errors
    /// On database failure.
    pub async fn insert_session(
        &mut self,
        user_id: i64,
        token_hash: &str,
        csrf: &str,
        channel: &str,
    ) -> Result<i64, StoreError> {
        let now = self.now();
        Ok(on_tx!(self, c => sqlx::query_scalar(
            "INSERT INTO sessions (token_hash, user_id, csrf_token, channel, created_at, last_seen_at) VALUES ($1, $2, $3, $4, $5, $5) RETURNING id")
            .bind(token_hash).bind(user_id).bind(csrf).bind(channel).bind(now).fetch_one(c).await?))
    }

    /// Ends one session.
    ///
    /// # Errors
    /// On database failure.
    pub async fn delete_session(&mut self, id: i64) -> Result<(), StoreError> {
        on_tx!(self, c => sqlx::query("DELETE FROM sessions WHERE id = $1").bind(id).execute(c).await?.rows_affected());
        Ok(())
    }

    /// Ends every session of a user (password reset, removal, lock).
    ///
    /// # Errors
    /// On database failure.
    pub async fn delete_sessions_of(&mut self, user_id: i64) -> Result<u64, StoreError> {
        Ok(
            on_tx!(self, c => sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(user_id).execute(c).await?.rows_affected()),
        )
    }

    /// Stores a new API key.
    ///
    /// # Errors
    /// On database failure.
    pub async fn insert_api_key(
        &mut self,
        user_id: i64,
        name: &str,
        prefix: &str,
        key_hash: &str,
    ) -> Result<i64, StoreError> {
        let now = self.now();
        Ok(on_tx!(self, c => sqlx::query_scalar(
            "INSERT INTO api_keys (user_id, name, prefix, key_hash, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id")
            .bind(user_id).bind(name).bind(prefix).bind(key_hash).bind(now).fetch_one(c).await?))
    }

    /// Revokes a key of a user; returns whether one was revoked.
    ///
    /// # Errors
    /// On database failure.
    pub async fn revoke_api_key(&mut self, user_id: i64, key_id: i64) -> Result<bool, StoreError> {
        let now = self.now();
        Ok(
            on_tx!(self, c => sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL")
            .bind(now).bind(key_id).bind(user_id).execute(c).await?.rows_affected())
                == 1,
        )
    }

    /// Revokes every key of a user (removal).
    ///
    /// # Errors
    /// On database failure.
    pub async fn revoke_api_keys_of(&mut self, user_id: i64) -> Result<u64, StoreError> {
        let now = self.now();
        Ok(
            on_tx!(self, c => sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
            .bind(now).bind(user_id).execute(c).await?.rows_affected()),
        )
    }

    /// Assigns a role.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the user already holds a role there.
    pub async fn insert_role(&mut self, user_id: i64, study_id: i64, role: &str) -> Result<i64, StoreError> {
        let now = self.now();
        Ok(on_tx!(self, c => sqlx::query_scalar(
            "INSERT INTO role_assignments (user_id, study_id, role, status, created_at) VALUES ($1, $2, $3, 'active', $4) RETURNING id")
            .bind(user_id).bind(study_id).bind(role).bind(now).fetch_one(c).await?))
    }

    /// Removes the active role of a user in a study or site; returns the role it had.
    ///
    /// # Errors
    /// On database failure.
    pub async fn remove_role(&mut self, user_id: i64, study_id: i64) -> Result<Option<String>, StoreError> {
        let now = self.now();
        Ok(on_tx!(self, c => sqlx::query_scalar(
            "UPDATE role_assignments SET status = 'removed', removed_at = $1 WHERE user_id = $2 AND study_id = $3 AND status = 'active' RETURNING role")
            .bind(now).bind(user_id).bind(study_id).fetch_optional(c).await?))
    }
}
