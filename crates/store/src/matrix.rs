//! The participant matrix: one page of a study's participants (filtered, sorted, keyset-paged)
//! and the event occurrences of that page with their form counts.
//!
//! Two queries per page whatever its size: the participants, then all their events at once (no
//! query per participant). Paging is by keyset — "the rows after this sort key" — never by
//! OFFSET, so the 200th page costs what the first does. Every sort has an index behind it
//! (migration `0008_matrix`); on PostgreSQL labels are compared with the `C` collation so the
//! order is the same bytewise order as on SQLite, whatever the database's locale.
//!
//! The SQL differs between the backends only in how a list of ids is bound (a JSON array
//! read by `json_each` on SQLite, an array on PostgreSQL) and in that collation, so each query
//! is written once as a macro and instantiated for both.

use crate::Store;
use crate::db::{Db, StoreError};

/// The orders the matrix can be read in. Each has its own static query and index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatrixSort {
    /// By participant ID (case-insensitive), ascending.
    Label,
    /// By participant ID, descending.
    LabelDesc,
    /// By enrolment date, then participant ID.
    Enrolled,
    /// By enrolment date descending, then participant ID descending.
    EnrolledDesc,
    /// By site (in the order the sites were created), then participant ID.
    Site,
}

/// Which participants a matrix shows. Every field narrows the set.
#[derive(Debug, Clone)]
pub struct MatrixFilter<'a> {
    pub study_id: i64,
    /// The sites whose participants may be shown; `None`: every site of the study.
    pub sites: Option<&'a [i64]>,
    /// Participant statuses to show (1 to 4 of `available`, `signed`, `removed`,
    /// `auto_removed`).
    pub statuses: &'a [&'a str],
    /// A lower-cased prefix of the participant ID.
    pub label_prefix: Option<&'a str>,
    /// Only participants with an occurrence of this event…
    pub event_oid: Option<&'a str>,
    /// …in this status; `not_scheduled` (with an event): participants without it.
    pub event_status: Option<&'a str>,
}

/// Where the previous page ended: the sort key of its last row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatrixAfter {
    Label(String),
    Enrolled { enrolled_on: String, label_key: String },
    Site { site_id: i64, label_key: String },
}

/// One participant of a matrix page.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MatrixRow {
    pub id: i64,
    pub label: String,
    pub label_key: String,
    pub oid: String,
    pub site_id: i64,
    pub site_oid: String,
    pub status: String,
    pub enrolled_on: String,
}

impl MatrixRow {
    /// The key to continue after this row in `sort`.
    #[must_use]
    pub fn after(&self, sort: MatrixSort) -> MatrixAfter {
        match sort {
            MatrixSort::Label | MatrixSort::LabelDesc => MatrixAfter::Label(self.label_key.clone()),
            MatrixSort::Enrolled | MatrixSort::EnrolledDesc => {
                MatrixAfter::Enrolled { enrolled_on: self.enrolled_on.clone(), label_key: self.label_key.clone() }
            }
            MatrixSort::Site => MatrixAfter::Site { site_id: self.site_id, label_key: self.label_key.clone() },
        }
    }
}

/// One event occurrence of a participant on the page, with how many of its forms hold data
/// and how many of those are complete (removed forms and occurrences are not counted).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MatrixCell {
    pub participant_id: i64,
    pub event_oid: String,
    pub repeat_key: i32,
    pub status: String,
    pub forms_started: i64,
    pub forms_complete: i64,
}

/// Greater than any label or date (text that never starts with U+10FFFF): where a descending
/// first page starts.
const TOP: &str = "\u{10FFFF}";

/// The filter shared by a page and its count (parameters $1–$9): $1 study, $2 sites, $3–$6
/// statuses, $7 ID prefix, $8 event, $9 event status.
macro_rules! filter_sql {
    (sqlite) => {
        filter_sql!(@ "($2 IS NULL OR p.site_id IN (SELECT value FROM json_each($2)))")
    };
    (postgres) => {
        filter_sql!(@ "($2::BIGINT[] IS NULL OR p.site_id = ANY($2))")
    };
    (@ $sites:literal) => {
        concat!(
            "p.study_id = $1 AND ",
            $sites,
            " AND p.status IN ($3, $4, $5, $6) \
             AND ($7 IS NULL OR substr(p.label_key, 1, length($7)) = $7) \
             AND ($9 IS NULL OR $9 <> 'not_scheduled' OR NOT EXISTS (SELECT 1 FROM study_events e \
               WHERE e.participant_id = p.id AND e.event_oid = $8 AND e.removal = 'available')) \
             AND (($8 IS NULL AND $9 IS NULL) OR $9 = 'not_scheduled' OR EXISTS (SELECT 1 FROM study_events e \
               WHERE e.participant_id = p.id AND ($8 IS NULL OR e.event_oid = $8) AND ($9 IS NULL OR e.status = $9) \
               AND e.removal = 'available'))"
        )
    };
}

/// One page of participants: the filter, then the sort's keyset condition ($11, $12) and order;
/// $10 is the limit.
macro_rules! page_sql {
    ($dialect:ident, $keyset:literal, $order:literal) => {
        concat!(
            "SELECT p.id, p.label, p.label_key, p.oid, p.site_id, s.oid AS site_oid, p.status, p.enrolled_on \
             FROM participants p JOIN studies s ON s.id = p.site_id WHERE ",
            filter_sql!($dialect),
            " AND ",
            $keyset,
            " ORDER BY ",
            $order,
            " LIMIT $10"
        )
    };
}

/// The events of the participants on a page ($1), with their form counts: one row per
/// participant, its occurrences packed as `event US repeat US status US started US complete`
/// joined by RS (ASCII unit and record separators). A page has some 500 occurrences; the driver
/// costs a few microseconds a row, so 50 packed rows answer in a third of the time of 500.
macro_rules! events_sql {
    ($pack:literal, $ids:literal) => {
        concat!(
            "SELECT c.participant_id, ",
            $pack,
            " AS cells FROM (SELECT e.participant_id, e.event_oid, e.repeat_key, e.status, \
             (SELECT COUNT(*) FROM form_data f WHERE f.study_event_id = e.id AND f.removal = 'available') AS started, \
             (SELECT COUNT(*) FROM form_data f WHERE f.study_event_id = e.id AND f.removal = 'available' \
               AND f.status = 'complete') AS complete \
             FROM study_events e WHERE e.participant_id ",
            $ids,
            " AND e.removal = 'available') c GROUP BY c.participant_id"
        )
    };
}

/// Binds the filter parameters $1–$9.
macro_rules! bind_filter {
    ($q:expr, $f:expr, $sites:expr, $st:expr) => {
        $q.bind($f.study_id)
            .bind($sites)
            .bind($st[0])
            .bind($st[1])
            .bind($st[2])
            .bind($st[3])
            .bind($f.label_prefix)
            .bind($f.event_oid)
            .bind($f.event_status)
    };
}

/// Runs one page query: filter binds, limit, then the keyset binds.
macro_rules! fetch_page {
    ($pool:expr, $sql:expr, $f:expr, $sites:expr, $st:expr, $limit:expr, $($k:expr),+) => {
        bind_filter!(sqlx::query_as::<_, MatrixRow>($sql), $f, $sites, $st)
            .bind($limit)
            $(.bind($k))+
            .fetch_all($pool)
            .await?
    };
}

/// The keyset of the first page of a sort, or of the page after `after`.
struct Keys {
    text1: String,
    text2: String,
    site_id: i64,
}

impl Keys {
    fn new(sort: MatrixSort, after: Option<&MatrixAfter>) -> Self {
        let descending = matches!(sort, MatrixSort::LabelDesc | MatrixSort::EnrolledDesc);
        let start = if descending { TOP } else { "" };
        match after {
            Some(MatrixAfter::Label(k)) => Self { text1: k.clone(), text2: String::new(), site_id: 0 },
            Some(MatrixAfter::Enrolled { enrolled_on, label_key }) => {
                Self { text1: enrolled_on.clone(), text2: label_key.clone(), site_id: 0 }
            }
            Some(MatrixAfter::Site { site_id, label_key }) => {
                Self { text1: label_key.clone(), text2: String::new(), site_id: *site_id }
            }
            None => Self { text1: start.to_owned(), text2: start.to_owned(), site_id: i64::MIN },
        }
    }
}

/// The statuses as the four slots of `IN ($3, $4, $5, $6)` (repeating the last).
fn status_slots<'a>(statuses: &[&'a str]) -> [&'a str; 4] {
    let last = statuses.last().copied().unwrap_or("available");
    let at = |i: usize| statuses.get(i).copied().unwrap_or(last);
    [at(0), at(1), at(2), at(3)]
}

/// A list of ids as a JSON array, for SQLite's `json_each`.
pub(crate) fn json_ids(ids: &[i64]) -> String {
    let mut out = String::with_capacity(ids.len() * 8 + 2);
    out.push('[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&id.to_string());
    }
    out.push(']');
    out
}

impl Store {
    /// One page of the matrix: at most `limit` participants after `after` in `sort` order.
    ///
    /// # Errors
    /// On database failure.
    pub async fn matrix_page(
        &self,
        f: &MatrixFilter<'_>,
        sort: MatrixSort,
        after: Option<&MatrixAfter>,
        limit: i64,
    ) -> Result<Vec<MatrixRow>, StoreError> {
        let st = status_slots(f.statuses);
        let k = Keys::new(sort, after);
        let rows = match self.db() {
            Db::Sqlite(p) => {
                let sites = f.sites.map(json_ids);
                match sort {
                    MatrixSort::Label => fetch_page!(
                        p,
                        page_sql!(sqlite, "p.label_key > $11", "p.label_key"),
                        f,
                        sites,
                        st,
                        limit,
                        k.text1
                    ),
                    MatrixSort::LabelDesc => fetch_page!(
                        p,
                        page_sql!(sqlite, "p.label_key < $11", "p.label_key DESC"),
                        f,
                        sites,
                        st,
                        limit,
                        k.text1
                    ),
                    MatrixSort::Enrolled => fetch_page!(
                        p,
                        page_sql!(sqlite, "(p.enrolled_on, p.label_key) > ($11, $12)", "p.enrolled_on, p.label_key"),
                        f,
                        sites,
                        st,
                        limit,
                        k.text1,
                        k.text2
                    ),
                    MatrixSort::EnrolledDesc => fetch_page!(
                        p,
                        page_sql!(
                            sqlite,
                            "(p.enrolled_on, p.label_key) < ($11, $12)",
                            "p.enrolled_on DESC, p.label_key DESC"
                        ),
                        f,
                        sites,
                        st,
                        limit,
                        k.text1,
                        k.text2
                    ),
                    MatrixSort::Site => fetch_page!(
                        p,
                        page_sql!(sqlite, "(p.site_id, p.label_key) > ($11, $12)", "p.site_id, p.label_key"),
                        f,
                        sites,
                        st,
                        limit,
                        k.site_id,
                        k.text1
                    ),
                }
            }
            Db::Postgres(p) => {
                let sites = f.sites.map(<[i64]>::to_vec);
                match sort {
                    MatrixSort::Label => fetch_page!(
                        p,
                        page_sql!(postgres, "p.label_key COLLATE \"C\" > $11", "p.label_key COLLATE \"C\""),
                        f,
                        sites,
                        st,
                        limit,
                        k.text1
                    ),
                    MatrixSort::LabelDesc => fetch_page!(
                        p,
                        page_sql!(postgres, "p.label_key COLLATE \"C\" < $11", "p.label_key COLLATE \"C\" DESC"),
                        f,
                        sites,
                        st,
                        limit,
                        k.text1
                    ),
                    MatrixSort::Enrolled => fetch_page!(
                        p,
                        page_sql!(
                            postgres,
                            "(p.enrolled_on COLLATE \"C\", p.label_key COLLATE \"C\") > ($11, $12)",
                            "p.enrolled_on COLLATE \"C\", p.label_key COLLATE \"C\""
                        ),
                        f,
                        sites,
                        st,
                        limit,
                        k.text1,
                        k.text2
                    ),
                    MatrixSort::EnrolledDesc => fetch_page!(
                        p,
                        page_sql!(
                            postgres,
                            "(p.enrolled_on COLLATE \"C\", p.label_key COLLATE \"C\") < ($11, $12)",
                            "p.enrolled_on COLLATE \"C\" DESC, p.label_key COLLATE \"C\" DESC"
                        ),
                        f,
                        sites,
                        st,
                        limit,
                        k.text1,
                        k.text2
                    ),
                    MatrixSort::Site => fetch_page!(
                        p,
                        page_sql!(
                            postgres,
                            "(p.site_id, p.label_key COLLATE \"C\") > ($11, $12)",
                            "p.site_id, p.label_key COLLATE \"C\""
                        ),
                        f,
                        sites,
                        st,
                        limit,
                        k.site_id,
                        k.text1
                    ),
                }
            }
        };
        Ok(rows)
    }

    /// How many participants the filter selects (every page, not only this one).
    ///
    /// # Errors
    /// On database failure.
    pub async fn matrix_total(&self, f: &MatrixFilter<'_>) -> Result<i64, StoreError> {
        let st = status_slots(f.statuses);
        Ok(match self.db() {
            Db::Sqlite(p) => {
                bind_filter!(
                    sqlx::query_scalar(concat!("SELECT COUNT(*) FROM participants p WHERE ", filter_sql!(sqlite))),
                    f,
                    f.sites.map(json_ids),
                    st
                )
                .fetch_one(p)
                .await?
            }
            Db::Postgres(p) => {
                bind_filter!(
                    sqlx::query_scalar(concat!("SELECT COUNT(*) FROM participants p WHERE ", filter_sql!(postgres))),
                    f,
                    f.sites.map(<[i64]>::to_vec),
                    st
                )
                .fetch_one(p)
                .await?
            }
        })
    }

    /// The event occurrences (not removed) of the given participants, by participant, event and
    /// repeat, with their form counts.
    ///
    /// # Errors
    /// On database failure.
    pub async fn matrix_events(&self, participant_ids: &[i64]) -> Result<Vec<MatrixCell>, StoreError> {
        if participant_ids.is_empty() {
            return Ok(Vec::new());
        }
        let packed: Vec<(i64, String)> = match self.db() {
            Db::Sqlite(p) => {
                sqlx::query_as(events_sql!(
                    "group_concat(c.event_oid || char(31) || c.repeat_key || char(31) || c.status || char(31) || \
                     c.started || char(31) || c.complete, char(30))",
                    "IN (SELECT value FROM json_each($1))"
                ))
                .bind(json_ids(participant_ids))
                .fetch_all(p)
                .await?
            }
            Db::Postgres(p) => {
                sqlx::query_as(events_sql!(
                    "string_agg(c.event_oid || chr(31) || c.repeat_key::text || chr(31) || c.status || chr(31) || \
                     c.started::text || chr(31) || c.complete::text, chr(30))",
                    "= ANY($1)"
                ))
                .bind(participant_ids.to_vec())
                .fetch_all(p)
                .await?
            }
        };
        let mut cells = Vec::new();
        for (participant_id, text) in packed {
            for cell in text.split('\u{1e}') {
                cells.push(unpack(participant_id, cell).ok_or_else(|| {
                    StoreError::Corrupt(format!("matrix cell of participant {participant_id}: {cell:?}"))
                })?);
            }
        }
        cells.sort_by(|a, b| {
            (a.participant_id, &a.event_oid, a.repeat_key).cmp(&(b.participant_id, &b.event_oid, b.repeat_key))
        });
        Ok(cells)
    }
}

/// One packed occurrence: `event US repeat US status US started US complete`.
fn unpack(participant_id: i64, cell: &str) -> Option<MatrixCell> {
    let mut f = cell.split('\u{1f}');
    let cell = MatrixCell {
        participant_id,
        event_oid: f.next()?.to_owned(),
        repeat_key: f.next()?.parse().ok()?,
        status: f.next()?.to_owned(),
        forms_started: f.next()?.parse().ok()?,
        forms_complete: f.next()?.parse().ok()?,
    };
    f.next().is_none().then_some(cell)
}

#[cfg(test)]
mod tests {
    use super::{json_ids, status_slots, unpack};

    #[test]
    fn statuses_fill_four_slots() {
        assert_eq!(status_slots(&["available"]), ["available"; 4]);
        assert_eq!(
            status_slots(&["removed", "auto_removed"]),
            ["removed", "auto_removed", "auto_removed", "auto_removed"]
        );
    }

    #[test]
    fn packed_cells_unpack() {
        let c = unpack(7, "SE_V1\u{1f}2\u{1f}completed\u{1f}5\u{1f}4").unwrap();
        assert_eq!(
            (
                c.participant_id,
                c.event_oid.as_str(),
                c.repeat_key,
                c.status.as_str(),
                c.forms_started,
                c.forms_complete
            ),
            (7, "SE_V1", 2, "completed", 5, 4)
        );
        assert!(unpack(7, "SE_V1\u{1f}x\u{1f}completed\u{1f}5\u{1f}4").is_none());
        assert!(unpack(7, "SE_V1\u{1f}1\u{1f}completed\u{1f}5").is_none());
    }

    #[test]
    fn ids_become_a_json_array() {
        assert_eq!(json_ids(&[3, 14, 15]), "[3,14,15]");
        assert_eq!(json_ids(&[]), "[]");
    }
}
