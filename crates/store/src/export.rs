//! Reading a study's clinical data for export, a page of participants at a time, so an export of
//! any size holds one page in memory: the participants, then their events, forms and current
//! values, each in one query ordered for writing.

use time::OffsetDateTime;

use crate::Store;
use crate::capture::{FormDataRow, ItemDataRow, ParticipantRow, StudyEventRow};
use crate::db::{Db, StoreError};
use crate::matrix::json_ids;

/// Which participants an export reads.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    pub study_id: i64,
    /// Only participants of these sites (site-level users, or a site's export).
    pub site_ids: Option<Vec<i64>>,
    pub participant_id: Option<i64>,
    /// Only participants with something changed after this time (a participant field, an event,
    /// a form or a value).
    pub changed_since: Option<OffsetDateTime>,
    /// Removed participants too.
    pub include_removed: bool,
}

macro_rules! export_participants_sql {
    () => {
        "SELECT id, study_id, site_id, label, oid, secondary_label, person_id, sex, date_of_birth, enrolled_on, \
         group_name, status, version, created_at, updated_at FROM participants p \
         WHERE study_id = $1 AND ($2 IS NULL OR id = $2) AND id > $3 \
         AND ($4 = TRUE OR status NOT IN ('removed', 'auto_removed')) \
         AND ($5 IS NULL OR p.updated_at > $5 OR EXISTS (SELECT 1 FROM study_events e WHERE e.participant_id = p.id \
           AND (e.updated_at > $5 OR EXISTS (SELECT 1 FROM form_data f WHERE f.study_event_id = e.id \
           AND (f.updated_at > $5 OR EXISTS (SELECT 1 FROM item_data d WHERE d.form_data_id = f.id AND d.updated_at > $5)))))) \
         AND ($6 IS NULL OR site_id = $6) ORDER BY id LIMIT $7"
    };
}

impl Store {
    /// The next page of participants to export (by id, after `after_id`).
    ///
    /// # Errors
    /// On database failure.
    pub async fn export_participants(
        &self,
        f: &ExportFilter,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<ParticipantRow>, StoreError> {
        let sites: Vec<Option<i64>> = match &f.site_ids {
            None => vec![None],
            Some(ids) => ids.iter().copied().map(Some).collect(),
        };
        let mut out: Vec<ParticipantRow> = Vec::new();
        for site in sites {
            let rows: Vec<ParticipantRow> = on_db!(self.db(), p => sqlx::query_as(export_participants_sql!())
                .bind(f.study_id).bind(f.participant_id).bind(after_id).bind(f.include_removed).bind(f.changed_since)
                .bind(site).bind(limit).fetch_all(p).await?);
            out.extend(rows);
        }
        out.sort_by_key(|p| p.id);
        out.truncate(usize::try_from(limit).unwrap_or(0));
        Ok(out)
    }

    /// The event occurrences of these participants, by participant.
    ///
    /// # Errors
    /// On database failure.
    pub async fn export_events(&self, participant_ids: &[i64]) -> Result<Vec<StudyEventRow>, StoreError> {
        if participant_ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(match self.db() {
            Db::Sqlite(p) => {
                sqlx::query_as(
                    "SELECT id, participant_id, event_oid, repeat_key, status, removal, start_at, end_at, location, \
                     version, created_at, updated_at FROM study_events \
                     WHERE participant_id IN (SELECT value FROM json_each($1)) ORDER BY participant_id, id",
                )
                .bind(json_ids(participant_ids))
                .fetch_all(p)
                .await?
            }
            Db::Postgres(p) => {
                sqlx::query_as(
                    "SELECT id, participant_id, event_oid, repeat_key, status, removal, start_at, end_at, location, \
                     version, created_at, updated_at FROM study_events WHERE participant_id = ANY($1) \
                     ORDER BY participant_id, id",
                )
                .bind(participant_ids.to_vec())
                .fetch_all(p)
                .await?
            }
        })
    }

    /// The forms of these event occurrences.
    ///
    /// # Errors
    /// On database failure.
    pub async fn export_forms(&self, event_ids: &[i64]) -> Result<Vec<FormDataRow>, StoreError> {
        if event_ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(match self.db() {
            Db::Sqlite(p) => {
                sqlx::query_as(
                    "SELECT id, study_event_id, form_oid, form_version_oid, design_version, status, removal, owner_id, \
                     completed_at, completed_by, version, created_at, updated_at, dde_stage, ide_completed_at, \
                     ide_completed_by FROM form_data WHERE study_event_id IN (SELECT value FROM json_each($1)) \
                     ORDER BY study_event_id, id",
                )
                .bind(json_ids(event_ids))
                .fetch_all(p)
                .await?
            }
            Db::Postgres(p) => {
                sqlx::query_as(
                    "SELECT id, study_event_id, form_oid, form_version_oid, design_version, status, removal, owner_id, \
                     completed_at, completed_by, version, created_at, updated_at, dde_stage, ide_completed_at, \
                     ide_completed_by FROM form_data WHERE study_event_id = ANY($1) ORDER BY study_event_id, id",
                )
                .bind(event_ids.to_vec())
                .fetch_all(p)
                .await?
            }
        })
    }

    /// The current values of these forms, by form, group, row and item.
    ///
    /// # Errors
    /// On database failure.
    pub async fn export_values(&self, form_ids: &[i64]) -> Result<Vec<ItemDataRow>, StoreError> {
        if form_ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(match self.db() {
            Db::Sqlite(p) => {
                sqlx::query_as(
                    "SELECT id, form_data_id, group_oid, row_number, item_oid, value, null_flavour, deleted, updated_at, \
                     updated_by FROM item_data WHERE deleted = FALSE AND form_data_id IN (SELECT value FROM json_each($1)) \
                     ORDER BY form_data_id, group_oid, row_number, id",
                )
                .bind(json_ids(form_ids))
                .fetch_all(p)
                .await?
            }
            Db::Postgres(p) => {
                sqlx::query_as(
                    "SELECT id, form_data_id, group_oid, row_number, item_oid, value, null_flavour, deleted, updated_at, \
                     updated_by FROM item_data WHERE deleted = FALSE AND form_data_id = ANY($1) \
                     ORDER BY form_data_id, group_oid, row_number, id",
                )
                .bind(form_ids.to_vec())
                .fetch_all(p)
                .await?
            }
        })
    }
}

impl Store {
    /// The users who wrote audit rows of a study (its full export's `AdminData` names each).
    ///
    /// # Errors
    /// On database failure.
    pub async fn audit_actors(&self, study_id: i64) -> Result<Vec<i64>, StoreError> {
        let rows: Vec<(i64,)> = on_db!(self.db(), p => sqlx::query_as(
            "SELECT DISTINCT actor_user_id FROM audit_events WHERE study_id = $1 AND actor_user_id IS NOT NULL \
             ORDER BY actor_user_id")
            .bind(study_id).fetch_all(p).await?);
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// The distinct meanings of the signatures given in a study, in order.
    ///
    /// # Errors
    /// On database failure.
    pub async fn signature_meanings(&self, study_id: i64) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = on_db!(self.db(), p => sqlx::query_as(
            "SELECT DISTINCT s.meaning FROM signatures s JOIN participants p ON p.id = s.participant_id \
             WHERE p.study_id = $1 ORDER BY s.meaning")
            .bind(study_id).fetch_all(p).await?);
        Ok(rows.into_iter().map(|(m,)| m).collect())
    }
}

/// The highest occurrence of each event (`event OID`, repeat), and the highest row of each item
/// group of each form of each event (`event OID`, `form OID`, `group OID`, row).
pub type DataShape = (Vec<(String, i32)>, Vec<(String, String, String, i32)>);

impl Store {
    /// The shape of a study's data for a wide table: the highest occurrence of each event, and
    /// the highest row of each item group of each form of each event, over the participants a
    /// filter selects (removed records left out).
    ///
    /// # Errors
    /// On database failure.
    pub async fn extract_shape(&self, f: &ExportFilter) -> Result<DataShape, StoreError> {
        let sites: Vec<Option<i64>> = match &f.site_ids {
            None => vec![None],
            Some(ids) => ids.iter().copied().map(Some).collect(),
        };
        let mut events: std::collections::BTreeMap<String, i32> = std::collections::BTreeMap::new();
        let mut groups: std::collections::BTreeMap<(String, String, String), i32> = std::collections::BTreeMap::new();
        for site in sites {
            let rows: Vec<(String, i32)> = on_db!(self.db(), p => sqlx::query_as(
                "SELECT e.event_oid, MAX(e.repeat_key) FROM study_events e JOIN participants p ON p.id = e.participant_id \
                 WHERE p.study_id = $1 AND ($2 IS NULL OR p.site_id = $2) AND e.removal = 'available' \
                 AND p.status NOT IN ('removed', 'auto_removed') GROUP BY e.event_oid")
                .bind(f.study_id).bind(site).fetch_all(p).await?);
            for (e, n) in rows {
                let m = events.entry(e).or_insert(0);
                *m = (*m).max(n);
            }
            let rows: Vec<(String, String, String, i32)> = on_db!(self.db(), p => sqlx::query_as(
                "SELECT e.event_oid, f.form_oid, d.group_oid, MAX(d.row_number) FROM item_data d \
                 JOIN form_data f ON f.id = d.form_data_id JOIN study_events e ON e.id = f.study_event_id \
                 JOIN participants p ON p.id = e.participant_id \
                 WHERE p.study_id = $1 AND ($2 IS NULL OR p.site_id = $2) AND d.deleted = FALSE \
                 AND f.removal = 'available' AND e.removal = 'available' \
                 AND p.status NOT IN ('removed', 'auto_removed') GROUP BY e.event_oid, f.form_oid, d.group_oid")
                .bind(f.study_id).bind(site).fetch_all(p).await?);
            for (e, fo, g, n) in rows {
                let m = groups.entry((e, fo, g)).or_insert(0);
                *m = (*m).max(n);
            }
        }
        Ok((events.into_iter().collect(), groups.into_iter().map(|((e, f, g), n)| (e, f, g, n)).collect()))
    }
}
