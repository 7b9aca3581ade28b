//! Reading the audit trail, sealing it into a hash chain, and verifying the chain.
//!
//! Writers never wait for the chain: they only insert `audit_events` rows. The sealer (run
//! in the background by the server, and before every verification) appends committed events
//! to `audit_seals` in sequence order, one position at a time. On PostgreSQL a transaction
//! can commit after a later sequence number was sealed; the sealer picks such late rows up
//! on its next pass (it looks back [`LATE_WINDOW`] sequence numbers), so nothing is skipped.

use crate::Store;
use crate::db::{Db, StoreError};
use casebook_domain::audit::{AuditRecord, GENESIS, chain_hash};
use time::OffsetDateTime;

/// How far behind the newest sealed sequence number the sealer looks for late commits.
pub const LATE_WINDOW: i64 = 100_000;
const BATCH: i64 = 2_000;

#[derive(sqlx::FromRow)]
struct EventRow {
    seq: i64,
    at: OffsetDateTime,
    actor_user_id: Option<i64>,
    actor_username: String,
    channel: String,
    action: String,
    entity_type: String,
    entity_id: String,
    study_id: Option<i64>,
    site_id: Option<i64>,
    old_value: Option<String>,
    new_value: Option<String>,
    reason: Option<String>,
    request_id: Option<String>,
}

impl From<EventRow> for AuditRecord {
    fn from(r: EventRow) -> Self {
        AuditRecord {
            seq: r.seq,
            at: r.at,
            actor_user_id: r.actor_user_id,
            actor_username: r.actor_username,
            channel: r.channel,
            action: r.action,
            entity_type: r.entity_type,
            entity_id: r.entity_id,
            study_id: r.study_id,
            site_id: r.site_id,
            old_value: r.old_value,
            new_value: r.new_value,
            reason: r.reason,
            request_id: r.request_id,
        }
    }
}

macro_rules! event_select {
    ($tail:literal) => {
        concat!(
            "SELECT e.seq, e.at, e.actor_user_id, e.actor_username, e.channel, e.action, e.entity_type, e.entity_id, \
             e.study_id, e.site_id, e.old_value, e.new_value, e.reason, e.request_id FROM audit_events e ",
            $tail
        )
    };
}

/// Which audit rows to read. Unset fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub study_id: Option<i64>,
    pub site_id: Option<i64>,
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    pub actor_user_id: Option<i64>,
    /// Rows about this entity or anything under it (entity ids `X` and `X/…`): a participant's
    /// whole casebook, an event with its forms and values.
    pub entity_tree: Option<String>,
    /// Rows with a sequence number greater than this (for paging).
    pub after_seq: i64,
    pub limit: i64,
}

/// Where the chain broke, as found by [`Store::verify_audit_chain`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChainBreak {
    /// The chain position whose hash no longer matches.
    pub position: i64,
    /// The audit event sealed at that position.
    pub seq: i64,
    pub problem: String,
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChainReport {
    /// Events checked along the chain.
    pub sealed: i64,
    /// The first broken link, if any.
    pub first_break: Option<ChainBreak>,
    /// Events that are not part of the chain although older than its head.
    pub unsealed_seqs: Vec<i64>,
}

impl ChainReport {
    #[must_use]
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none() && self.unsealed_seqs.is_empty()
    }
}

impl Store {
    /// Audit rows matching `f`, oldest first.
    ///
    /// # Errors
    /// On database failure.
    pub async fn audit_events(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let rows: Vec<EventRow> = on_db!(self.db(), p => sqlx::query_as(event_select!(
            "WHERE e.seq > $1 \
               AND (CAST($2 AS BIGINT) IS NULL OR e.study_id = $2) \
               AND (CAST($3 AS BIGINT) IS NULL OR e.site_id = $3) \
               AND (CAST($4 AS TEXT) IS NULL OR e.entity_type = $4) \
               AND (CAST($5 AS TEXT) IS NULL OR e.entity_id = $5) \
               AND (CAST($6 AS BIGINT) IS NULL OR e.actor_user_id = $6) \
               AND (CAST($8 AS TEXT) IS NULL OR e.entity_id = $8 OR e.entity_id LIKE $9 ESCAPE '\\') \
             ORDER BY e.seq LIMIT $7"))
            .bind(f.after_seq).bind(f.study_id).bind(f.site_id).bind(&f.entity_type).bind(&f.entity_id)
            .bind(f.actor_user_id).bind(f.limit).bind(&f.entity_tree)
            .bind(f.entity_tree.as_ref().map(|t| format!("{}/%", t.replace('%', "\\%").replace('_', "\\_"))))
            .fetch_all(p).await?);
        Ok(rows.into_iter().map(AuditRecord::from).collect())
    }

    /// Appends every committed, unsealed audit event to the hash chain. Returns how many were
    /// sealed. Safe to run from several instances at once (they take turns).
    ///
    /// # Errors
    /// On database failure.
    pub async fn seal_audit(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let n = self.seal_batch().await?;
            total += n;
            if n < u64::try_from(BATCH).unwrap_or(u64::MAX) {
                return Ok(total);
            }
        }
    }

    async fn seal_batch(&self) -> Result<u64, StoreError> {
        let now = self.clock().now();
        macro_rules! seal_in {
            ($t:expr) => {{
                let head: Option<(i64, String)> =
                    sqlx::query_as("SELECT position, hash FROM audit_seals ORDER BY position DESC LIMIT 1")
                        .fetch_optional(&mut *$t)
                        .await?;
                let frontier: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM audit_seals")
                    .fetch_one(&mut *$t)
                    .await?;
                let pending: Vec<EventRow> = sqlx::query_as(event_select!(
                    "WHERE e.seq > $1 AND NOT EXISTS (SELECT 1 FROM audit_seals s WHERE s.seq = e.seq) ORDER BY e.seq LIMIT $2"
                ))
                .bind(frontier - LATE_WINDOW)
                .bind(BATCH)
                .fetch_all(&mut *$t)
                .await?;
                let (mut position, mut hash) = head.unwrap_or((0, GENESIS.to_owned()));
                let n = pending.len() as u64;
                for row in pending {
                    let record = AuditRecord::from(row);
                    hash = chain_hash(&hash, &record);
                    position += 1;
                    sqlx::query("INSERT INTO audit_seals (position, seq, hash, sealed_at) VALUES ($1, $2, $3, $4)")
                        .bind(position)
                        .bind(record.seq)
                        .bind(&hash)
                        .bind(now)
                        .execute(&mut *$t)
                        .await?;
                }
                n
            }};
        }
        match self.db() {
            Db::Sqlite(p) => {
                let mut t = p.begin_with("BEGIN IMMEDIATE").await?;
                let n = seal_in!(&mut *t);
                t.commit().await?;
                Ok(n)
            }
            Db::Postgres(p) => {
                let mut t = p.begin().await?;
                sqlx::query("LOCK TABLE audit_seals IN EXCLUSIVE MODE").execute(&mut *t).await?;
                let n = seal_in!(&mut *t);
                t.commit().await?;
                Ok(n)
            }
        }
    }

    /// Recomputes the hash chain from the stored events and reports the first broken link
    /// (an event changed, removed or re-ordered after sealing) and any event left outside
    /// the chain. Reads in batches: memory stays constant however long the trail.
    ///
    /// # Errors
    /// On database failure.
    pub async fn verify_audit_chain(&self) -> Result<ChainReport, StoreError> {
        #[derive(sqlx::FromRow)]
        struct SealRow {
            position: i64,
            seal_seq: i64,
            hash: String,
            seq: Option<i64>,
            at: Option<OffsetDateTime>,
            actor_user_id: Option<i64>,
            actor_username: Option<String>,
            channel: Option<String>,
            action: Option<String>,
            entity_type: Option<String>,
            entity_id: Option<String>,
            study_id: Option<i64>,
            site_id: Option<i64>,
            old_value: Option<String>,
            new_value: Option<String>,
            reason: Option<String>,
            request_id: Option<String>,
        }
        let mut previous = GENESIS.to_owned();
        let mut expected_position = 0;
        let mut sealed = 0;
        loop {
            let rows: Vec<SealRow> = on_db!(self.db(), p => sqlx::query_as(
                "SELECT s.position, s.seq AS seal_seq, s.hash, e.seq, e.at, e.actor_user_id, e.actor_username, e.channel, \
                 e.action, e.entity_type, e.entity_id, e.study_id, e.site_id, e.old_value, e.new_value, e.reason, e.request_id \
                 FROM audit_seals s LEFT JOIN audit_events e ON e.seq = s.seq \
                 WHERE s.position > $1 ORDER BY s.position LIMIT $2")
                .bind(expected_position).bind(BATCH).fetch_all(p).await?);
            if rows.is_empty() {
                break;
            }
            for r in rows {
                expected_position += 1;
                let broken = |problem: String| ChainBreak { position: r.position, seq: r.seal_seq, problem };
                if r.position != expected_position {
                    let b = broken(format!("chain position {expected_position} is missing"));
                    return Ok(ChainReport { sealed, first_break: Some(b), unsealed_seqs: vec![] });
                }
                let (
                    Some(seq),
                    Some(at),
                    Some(actor_username),
                    Some(channel),
                    Some(action),
                    Some(entity_type),
                    Some(entity_id),
                ) = (r.seq, r.at, r.actor_username, r.channel, r.action, r.entity_type, r.entity_id)
                else {
                    let b = broken(format!("audit event {} was deleted", r.seal_seq));
                    return Ok(ChainReport { sealed, first_break: Some(b), unsealed_seqs: vec![] });
                };
                let record = AuditRecord {
                    seq,
                    at,
                    actor_user_id: r.actor_user_id,
                    actor_username,
                    channel,
                    action,
                    entity_type,
                    entity_id,
                    study_id: r.study_id,
                    site_id: r.site_id,
                    old_value: r.old_value,
                    new_value: r.new_value,
                    reason: r.reason,
                    request_id: r.request_id,
                };
                let computed = chain_hash(&previous, &record);
                if computed != r.hash {
                    let b = ChainBreak {
                        position: r.position,
                        seq,
                        problem: format!("audit event {seq} does not match its seal: it was altered after sealing"),
                    };
                    return Ok(ChainReport { sealed, first_break: Some(b), unsealed_seqs: vec![] });
                }
                previous = r.hash;
                sealed += 1;
            }
        }
        let unsealed_seqs: Vec<i64> = on_db!(self.db(), p => sqlx::query_scalar(
            "SELECT e.seq FROM audit_events e WHERE e.seq < (SELECT COALESCE(MAX(seq), 0) FROM audit_seals) \
             AND NOT EXISTS (SELECT 1 FROM audit_seals s WHERE s.seq = e.seq) ORDER BY e.seq LIMIT 100")
            .fetch_all(p).await?);
        Ok(ChainReport { sealed, first_break: None, unsealed_seqs })
    }
}
