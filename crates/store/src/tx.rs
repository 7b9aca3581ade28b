//! The audited write transaction.

use crate::db::{Db, StoreError};
use casebook_domain::audit::{AuditEntry, Channel};
use time::OffsetDateTime;

/// Who is writing, and how. Recorded on every audit row of the transaction.
#[derive(Debug, Clone)]
pub struct Actor {
    pub user_id: Option<i64>,
    pub username: String,
    pub channel: Channel,
    pub request_id: Option<String>,
}

impl Actor {
    /// The system itself (demo set-up, sealing): no user.
    #[must_use]
    pub fn system(channel: Channel) -> Self {
        Self { user_id: None, username: "system".to_owned(), channel, request_id: None }
    }
}

pub(crate) enum Tx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

/// A write transaction. Every repository write takes one; [`WriteTx::audit`] records what
/// changed in the same transaction, and [`WriteTx::commit`] refuses to commit a transaction
/// that recorded nothing. Dropping it without committing rolls everything back.
pub struct WriteTx {
    pub(crate) tx: Tx,
    actor: Actor,
    now: OffsetDateTime,
    audited: usize,
}

impl std::fmt::Debug for WriteTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTx").field("actor", &self.actor).field("now", &self.now).finish_non_exhaustive()
    }
}

impl WriteTx {
    pub(crate) async fn begin(db: &Db, actor: Actor, now: OffsetDateTime) -> Result<Self, StoreError> {
        let tx = match db {
            Db::Sqlite(p) => Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
            Db::Postgres(p) => Tx::Postgres(p.begin().await?),
        };
        Ok(Self { tx, actor, now, audited: 0 })
    }

    /// The time of this transaction: every row it writes carries the same instant.
    #[must_use]
    pub fn now(&self) -> OffsetDateTime {
        self.now
    }

    #[must_use]
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// How many audit rows this transaction has written (a transaction without any may not
    /// commit).
    #[must_use]
    pub fn audited(&self) -> usize {
        self.audited
    }

    /// Records one audited change in this transaction; returns its sequence number.
    ///
    /// # Errors
    /// When the row cannot be written.
    pub async fn audit(&mut self, e: AuditEntry) -> Result<i64, StoreError> {
        let old = e.old_value.map(|v| v.to_string());
        let new = e.new_value.map(|v| v.to_string());
        let now = self.now;
        let actor = self.actor.clone();
        let seq: i64 = on_tx!(self, c => sqlx::query_scalar(
            "INSERT INTO audit_events (at, actor_user_id, actor_username, channel, action, entity_type, entity_id, \
             study_id, site_id, old_value, new_value, reason, request_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING seq")
            .bind(now)
            .bind(actor.user_id)
            .bind(&actor.username)
            .bind(actor.channel.as_str())
            .bind(&e.action)
            .bind(&e.entity_type)
            .bind(&e.entity_id)
            .bind(e.study_id)
            .bind(e.site_id)
            .bind(&old)
            .bind(&new)
            .bind(&e.reason)
            .bind(&actor.request_id)
            .fetch_one(c).await?);
        self.audited += 1;
        Ok(seq)
    }

    /// Appends many audit rows in one statement, in order (a form's values): what [`Self::audit`]
    /// does row by row, without the round trips.
    ///
    /// # Errors
    /// On database failure.
    pub async fn audit_many(&mut self, entries: &[AuditEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let now = self.now;
        let actor = self.actor.clone();
        let text = |v: &Option<serde_json::Value>| v.as_ref().map(serde_json::Value::to_string);
        match &mut self.tx {
            Tx::Sqlite(t) => {
                let rows: Vec<serde_json::Value> = entries
                    .iter()
                    .map(|e| {
                        serde_json::json!([
                            e.action,
                            e.entity_type,
                            e.entity_id,
                            e.study_id,
                            e.site_id,
                            text(&e.old_value),
                            text(&e.new_value),
                            e.reason
                        ])
                    })
                    .collect();
                sqlx::query(
                    "INSERT INTO audit_events (at, actor_user_id, actor_username, channel, action, entity_type, \
                     entity_id, study_id, site_id, old_value, new_value, reason, request_id) \
                     SELECT $1, $2, $3, $4, json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]'), \
                     json_extract(j.value, '$[2]'), json_extract(j.value, '$[3]'), json_extract(j.value, '$[4]'), \
                     json_extract(j.value, '$[5]'), json_extract(j.value, '$[6]'), json_extract(j.value, '$[7]'), $5 \
                     FROM json_each($6) AS j ORDER BY j.key",
                )
                .bind(now)
                .bind(actor.user_id)
                .bind(&actor.username)
                .bind(actor.channel.as_str())
                .bind(&actor.request_id)
                .bind(serde_json::Value::Array(rows).to_string())
                .execute(&mut **t)
                .await?;
            }
            Tx::Postgres(t) => {
                let col = |f: &dyn Fn(&AuditEntry) -> Option<String>| entries.iter().map(f).collect::<Vec<_>>();
                let ids = |f: &dyn Fn(&AuditEntry) -> Option<i64>| entries.iter().map(f).collect::<Vec<_>>();
                sqlx::query(
                    "INSERT INTO audit_events (at, actor_user_id, actor_username, channel, action, entity_type, \
                     entity_id, study_id, site_id, old_value, new_value, reason, request_id) \
                     SELECT $1, $2, $3, $4, u.action, u.entity_type, u.entity_id, u.study_id, u.site_id, \
                     u.old_value, u.new_value, u.reason, $5 \
                     FROM UNNEST($6::text[], $7::text[], $8::text[], $9::bigint[], $10::bigint[], $11::text[], \
                     $12::text[], $13::text[]) WITH ORDINALITY \
                     AS u(action, entity_type, entity_id, study_id, site_id, old_value, new_value, reason, n) \
                     ORDER BY u.n",
                )
                .bind(now)
                .bind(actor.user_id)
                .bind(&actor.username)
                .bind(actor.channel.as_str())
                .bind(&actor.request_id)
                .bind(col(&|e| Some(e.action.clone())))
                .bind(col(&|e| Some(e.entity_type.clone())))
                .bind(col(&|e| Some(e.entity_id.clone())))
                .bind(ids(&|e| e.study_id))
                .bind(ids(&|e| e.site_id))
                .bind(col(&|e| text(&e.old_value)))
                .bind(col(&|e| text(&e.new_value)))
                .bind(col(&|e| e.reason.clone()))
                .execute(&mut **t)
                .await?;
            }
        }
        self.audited += entries.len();
        Ok(())
    }

    /// Commits. A transaction that wrote no audit row is rolled back and refused: every write
    /// must say what it changed.
    ///
    /// # Errors
    /// [`StoreError::Unaudited`], or a database failure.
    pub async fn commit(self) -> Result<(), StoreError> {
        if self.audited == 0 {
            return Err(StoreError::Unaudited);
        }
        match self.tx {
            Tx::Sqlite(t) => t.commit().await?,
            Tx::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }
}
