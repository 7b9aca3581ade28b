//! The audit trail's vocabulary and its tamper-evident hash chain.
//!
//! Every write records an [`AuditEntry`] in the same transaction. A sealer later appends each
//! committed entry to a hash chain: `seal_hash = SHA-256(previous seal_hash ‖ canonical entry)`.
//! Recomputing the chain from the stored entries finds any entry that was altered, removed or
//! slipped in after sealing. The hashing is here (pure); reading and writing rows is in `store`.

use sha2::{Digest, Sha256};
use std::str::FromStr;
use time::OffsetDateTime;

/// Through which door a change came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// The web interface (browser session).
    Ui,
    /// The native REST API or a compatibility API.
    Api,
    /// The command line on the server.
    Cli,
    /// A background import job.
    Import,
    /// The system itself (demo set-up, scheduled work).
    System,
}

impl Channel {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ui => "ui",
            Self::Api => "api",
            Self::Cli => "cli",
            Self::Import => "import",
            Self::System => "system",
        }
    }
}

impl FromStr for Channel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ui" => Ok(Self::Ui),
            "api" => Ok(Self::Api),
            "cli" => Ok(Self::Cli),
            "import" => Ok(Self::Import),
            "system" => Ok(Self::System),
            other => Err(format!("unknown channel '{other}'")),
        }
    }
}

/// One audited change, before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// What happened, as `entity.verb` (for example `user.created`, `login.failed`).
    pub action: String,
    /// The kind of record changed (`user`, `study`, `site`, `role`, `api_key`, `session`).
    pub entity_type: String,
    /// The record's identifier (numeric id or OID as text).
    pub entity_id: String,
    /// The study the record belongs to, if any (for study-wide audit views).
    pub study_id: Option<i64>,
    /// The site the record belongs to, if any (site users see only their site's entries).
    pub site_id: Option<i64>,
    /// The value before (JSON), if there was one.
    pub old_value: Option<serde_json::Value>,
    /// The value after (JSON), if there is one.
    pub new_value: Option<serde_json::Value>,
    /// The reason given for the change, if any.
    pub reason: Option<String>,
}

impl AuditEntry {
    #[must_use]
    pub fn new(action: &str, entity_type: &str, entity_id: impl ToString) -> Self {
        Self {
            action: action.to_owned(),
            entity_type: entity_type.to_owned(),
            entity_id: entity_id.to_string(),
            study_id: None,
            site_id: None,
            old_value: None,
            new_value: None,
            reason: None,
        }
    }

    #[must_use]
    pub fn study(mut self, study_id: Option<i64>, site_id: Option<i64>) -> Self {
        self.study_id = study_id;
        self.site_id = site_id;
        self
    }

    #[must_use]
    pub fn old(mut self, v: impl serde::Serialize) -> Self {
        self.old_value = serde_json::to_value(v).ok();
        self
    }

    #[must_use]
    pub fn new_value(mut self, v: impl serde::Serialize) -> Self {
        self.new_value = serde_json::to_value(v).ok();
        self
    }

    #[must_use]
    pub fn reason(mut self, r: Option<String>) -> Self {
        self.reason = r;
        self
    }
}

/// An audit row as stored: the entry plus who, when, how, and its sequence number.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditRecord {
    pub seq: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub actor_user_id: Option<i64>,
    pub actor_username: String,
    pub channel: String,
    pub action: String,
    pub entity_type: String,
    pub entity_id: String,
    pub study_id: Option<i64>,
    pub site_id: Option<i64>,
    /// JSON text exactly as stored.
    pub old_value: Option<String>,
    /// JSON text exactly as stored.
    pub new_value: Option<String>,
    pub reason: Option<String>,
    pub request_id: Option<String>,
}

/// The hash that starts the chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of `record` chained after `previous` (both lowercase hex).
#[must_use]
pub fn chain_hash(previous: &str, record: &AuditRecord) -> String {
    let at_micros = record.at.unix_timestamp_nanos() / 1000;
    // A JSON array is an unambiguous, length-delimited encoding of the fields in a fixed order.
    let canonical = serde_json::json!([
        record.seq,
        at_micros.to_string(),
        record.actor_user_id,
        record.actor_username,
        record.channel,
        record.action,
        record.entity_type,
        record.entity_id,
        record.study_id,
        record.site_id,
        record.old_value,
        record.new_value,
        record.reason,
        record.request_id,
    ]);
    let mut h = Sha256::new();
    h.update(previous.as_bytes());
    h.update(b"\n");
    h.update(canonical.to_string().as_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AuditRecord {
        AuditRecord {
            seq: 1,
            at: time::macros::datetime!(2026-11-22 10:00:00.123456 UTC),
            actor_user_id: Some(1),
            actor_username: "root".into(),
            channel: "cli".into(),
            action: "user.created".into(),
            entity_type: "user".into(),
            entity_id: "1".into(),
            study_id: None,
            site_id: None,
            old_value: None,
            new_value: Some("{\"username\":\"root\"}".into()),
            reason: None,
            request_id: None,
        }
    }

    #[test]
    fn any_field_change_changes_the_hash() {
        let base = chain_hash(GENESIS, &record());
        assert_eq!(base.len(), 64);
        assert_eq!(base, chain_hash(GENESIS, &record()), "deterministic");
        let mut r = record();
        r.new_value = Some("{\"username\":\"r00t\"}".into());
        assert_ne!(base, chain_hash(GENESIS, &r));
        let mut r = record();
        r.at += time::Duration::microseconds(1);
        assert_ne!(base, chain_hash(GENESIS, &r));
        assert_ne!(base, chain_hash(&base, &record()), "previous hash is chained");
    }

    #[test]
    fn fields_cannot_be_shifted_between_columns() {
        let mut a = record();
        a.reason = Some("x".into());
        a.request_id = None;
        let mut b = record();
        b.reason = None;
        b.request_id = Some("x".into());
        assert_ne!(chain_hash(GENESIS, &a), chain_hash(GENESIS, &b));
    }
}
