//! The participant matrix: a study's participants as rows, its events as columns, and in each
//! cell the participant's occurrences of the event with their status and form counts.
//!
//! Filtered (site, participant status, ID prefix, an event's status), sorted by a fixed set of
//! keys, and paged by an opaque cursor holding the last row's sort key (keyset paging: a late
//! page costs what the first does). Site users see only their sites' participants, and
//! `total` counts only those. Removed participants are left out unless asked for.

use std::collections::BTreeMap;

use casebook_domain::FieldError;
use casebook_store::matrix::{MatrixAfter, MatrixFilter, MatrixSort};
use serde::{Deserialize, Serialize};

use crate::App;
use crate::auth::Principal;
use crate::error::AppError;

/// The query parameters a matrix request may carry.
pub const MATRIX_PARAMS: &[&str] = &["site", "status", "q", "event", "event_status", "sort", "page_size", "after"];

/// The sorts, as the `sort` parameter names them.
pub const MATRIX_SORTS: &[(&str, MatrixSort)] = &[
    ("label", MatrixSort::Label),
    ("-label", MatrixSort::LabelDesc),
    ("enrolled", MatrixSort::Enrolled),
    ("-enrolled", MatrixSort::EnrolledDesc),
    ("site", MatrixSort::Site),
];

/// Participant statuses the `status` parameter accepts, and what each selects.
const STATUSES: &[(&str, &[&str])] = &[
    ("available", &["available"]),
    ("signed", &["signed"]),
    ("removed", &["removed", "auto_removed"]),
    ("all", &["available", "signed", "removed", "auto_removed"]),
];

/// Event statuses the `event_status` parameter accepts.
const EVENT_STATUSES: &[&str] =
    &["scheduled", "data_entry_started", "completed", "stopped", "skipped", "locked", "signed", "not_scheduled"];

pub const DEFAULT_PAGE_SIZE: i64 = 50;
pub const MAX_PAGE_SIZE: i64 = 500;

/// A matrix request as received: text, checked by [`App::matrix`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixParams {
    /// A site OID (the study's own OID: participants enrolled at study level).
    pub site: Option<String>,
    /// Comma-separated: `available`, `signed`, `removed`, `all` (default `available,signed`).
    pub status: Option<String>,
    /// A prefix of the participant ID (case-insensitive).
    pub q: Option<String>,
    /// Only participants with an occurrence of this event (OID)…
    pub event: Option<String>,
    /// …in this status (`not_scheduled`: participants without the event).
    pub event_status: Option<String>,
    /// `label` (default), `-label`, `enrolled`, `-enrolled`, `site`.
    pub sort: Option<String>,
    /// 1 to 500 (default 50).
    pub page_size: Option<String>,
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
}

/// An event definition: a column of the matrix.
#[derive(Debug, Clone, Serialize)]
pub struct MatrixEventDef {
    pub oid: String,
    pub name: String,
    pub repeating: bool,
    /// How many forms the event holds.
    pub forms: usize,
}

/// One occurrence of an event of a participant.
#[derive(Debug, Clone, Serialize)]
pub struct MatrixCellView {
    pub repeat_key: i32,
    pub status: String,
    /// Forms of the occurrence marked complete.
    pub forms_complete: i64,
    /// Forms of the occurrence holding data (complete or not).
    pub forms_started: i64,
}

/// A participant: a row of the matrix.
#[derive(Debug, Clone, Serialize)]
pub struct MatrixRowView {
    pub label: String,
    pub oid: String,
    pub site_oid: String,
    pub status: String,
    pub enrolled_on: String,
    /// Discrepancy note threads still open (new, updated, resolution proposed).
    pub open_notes: i64,
    /// Occurrences by event OID; events not scheduled for the participant are absent.
    pub events: BTreeMap<String, Vec<MatrixCellView>>,
}

/// One page of the matrix.
#[derive(Debug, Clone, Serialize)]
pub struct MatrixView {
    /// The event definitions of the design in Production, in design order.
    pub events: Vec<MatrixEventDef>,
    pub rows: Vec<MatrixRowView>,
    /// The cursor of the next page (`after=`), `null` on the last page.
    pub next: Option<String>,
    /// How many participants the filters select, on every page together.
    pub total: i64,
}

/// A checked request.
struct Checked {
    site_oid: Option<String>,
    statuses: Vec<&'static str>,
    prefix: Option<String>,
    event: Option<String>,
    event_status: Option<&'static str>,
    sort: (&'static str, MatrixSort),
    page_size: i64,
    after: Option<MatrixAfter>,
}

fn allowed(values: &[&str]) -> String {
    values.join(", ")
}

fn check(params: &MatrixParams) -> Result<Checked, Vec<FieldError>> {
    let mut errors = Vec::new();
    let text = |v: &Option<String>| v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);

    let sort = match text(&params.sort) {
        None => Some(MATRIX_SORTS[0]),
        Some(s) => MATRIX_SORTS.iter().find(|(name, _)| *name == s).copied().or_else(|| {
            let names: Vec<&str> = MATRIX_SORTS.iter().map(|(n, _)| *n).collect();
            errors.push(FieldError::new("sort", format!("'{s}' is not a sort; use one of {}", allowed(&names))));
            None
        }),
    };

    let mut statuses: Vec<&'static str> = Vec::new();
    match text(&params.status) {
        None => statuses.extend(["available", "signed"]),
        Some(list) => {
            for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                match STATUSES.iter().find(|(name, _)| name.eq_ignore_ascii_case(part)) {
                    Some((_, db)) => {
                        for s in *db {
                            if !statuses.contains(s) {
                                statuses.push(s);
                            }
                        }
                    }
                    None => {
                        let names: Vec<&str> = STATUSES.iter().map(|(n, _)| *n).collect();
                        errors.push(FieldError::new(
                            "status",
                            format!("'{part}' is not a participant status; use one or more of {}", allowed(&names)),
                        ));
                    }
                }
            }
        }
    }

    let prefix = text(&params.q).map(|q| q.to_lowercase());
    if prefix.as_ref().is_some_and(|q| q.chars().count() > 30) {
        errors.push(FieldError::new("q", "a participant ID has at most 30 characters"));
    }

    let event = text(&params.event);
    let event_status = match text(&params.event_status) {
        None => None,
        Some(s) => EVENT_STATUSES.iter().find(|e| e.eq_ignore_ascii_case(&s)).copied().or_else(|| {
            errors.push(FieldError::new(
                "event_status",
                format!("'{s}' is not an event status; use one of {}", allowed(EVENT_STATUSES)),
            ));
            None
        }),
    };
    if event_status == Some("not_scheduled") && event.is_none() {
        errors.push(FieldError::new("event_status", "not_scheduled needs an event (event=SE_…)"));
    }

    let page_size = match text(&params.page_size) {
        None => Some(DEFAULT_PAGE_SIZE),
        Some(s) => s.parse::<i64>().ok().filter(|n| (1..=MAX_PAGE_SIZE).contains(n)).or_else(|| {
            errors.push(FieldError::new(
                "page_size",
                format!("'{s}' is not a page size; use a whole number from 1 to {MAX_PAGE_SIZE}"),
            ));
            None
        }),
    };

    let after = match (text(&params.after), sort) {
        (Some(c), Some((name, _))) => match decode_cursor(&c) {
            Some((cursor_sort, key)) if cursor_sort == name => Some(key),
            Some((cursor_sort, _)) => {
                errors.push(FieldError::new(
                    "after",
                    format!("this cursor continues sort={cursor_sort}, not sort={name}; start again without it"),
                ));
                None
            }
            None => {
                errors.push(FieldError::new("after", "not a cursor from this endpoint (use the `next` of a page)"));
                None
            }
        },
        _ => None,
    };

    match (sort, page_size) {
        (Some(sort), Some(page_size)) if errors.is_empty() => {
            Ok(Checked { site_oid: text(&params.site), statuses, prefix, event, event_status, sort, page_size, after })
        }
        _ => Err(errors),
    }
}

/// A cursor: the sort's name and the last row's key, as hex-encoded JSON (opaque to clients).
fn encode_cursor(sort_name: &str, key: &MatrixAfter) -> String {
    let v = match key {
        MatrixAfter::Label(k) => serde_json::json!([sort_name, k]),
        MatrixAfter::Enrolled { enrolled_on, label_key } => serde_json::json!([sort_name, enrolled_on, label_key]),
        MatrixAfter::Site { site_id, label_key } => serde_json::json!([sort_name, site_id, label_key]),
    };
    hex::encode(v.to_string())
}

fn decode_cursor(text: &str) -> Option<(String, MatrixAfter)> {
    let bytes = hex::decode(text).ok()?;
    let parts: Vec<serde_json::Value> = serde_json::from_slice(&bytes).ok()?;
    let sort = parts.first()?.as_str()?.to_owned();
    let (_, kind) = MATRIX_SORTS.iter().find(|(n, _)| *n == sort)?;
    let s = |i: usize| parts.get(i).and_then(serde_json::Value::as_str).map(str::to_owned);
    let key = match (kind, parts.len()) {
        (MatrixSort::Label | MatrixSort::LabelDesc, 2) => MatrixAfter::Label(s(1)?),
        (MatrixSort::Enrolled | MatrixSort::EnrolledDesc, 3) => {
            MatrixAfter::Enrolled { enrolled_on: s(1)?, label_key: s(2)? }
        }
        (MatrixSort::Site, 3) => MatrixAfter::Site { site_id: parts.get(1)?.as_i64()?, label_key: s(2)? },
        _ => return None,
    };
    Some((sort, key))
}

impl App {
    /// One page of a study's participant matrix.
    ///
    /// # Errors
    /// [`AppError::Validation`] naming every bad parameter (an unknown sort lists the allowed
    /// ones; a site the user does not see is reported like one that does not exist);
    /// [`AppError::NotFound`] for a study the principal has no standing in.
    pub async fn matrix(
        &self,
        who: &Principal,
        study_oid: &str,
        params: &MatrixParams,
    ) -> Result<MatrixView, AppError> {
        let (study, access) = self.study_with_access(who, study_oid).await?;
        let mut checked = check(params).map_err(AppError::Validation)?;

        let design = self.production_design_opt(study.id).await?.map(|(_, d)| d).unwrap_or_default();
        let events = &design.events;
        if let Some(e) = &checked.event
            && !events.iter().any(|d| d.oid.as_str() == e)
        {
            return Err(AppError::invalid("event", format!("the design in Production has no event {e}")));
        }

        // The sites whose participants this principal may see, narrowed by `site`.
        let mut sites: Option<Vec<i64>> = if access.study_wide() {
            None
        } else {
            let mut ids: Vec<i64> = access.site_roles.iter().map(|(s, _)| *s).collect();
            ids.sort_unstable();
            ids.dedup();
            Some(ids)
        };
        if let Some(site_oid) = checked.site_oid.take() {
            let site = self.site_of(&study, &site_oid).await.ok().filter(|s| access.sees_site(s.id));
            let Some(site) = site else {
                return Err(AppError::invalid("site", format!("the study has no site {site_oid}")));
            };
            sites = Some(vec![site.id]);
        }

        let filter = MatrixFilter {
            study_id: study.id,
            sites: sites.as_deref(),
            statuses: &checked.statuses,
            label_prefix: checked.prefix.as_deref(),
            event_oid: checked.event.as_deref(),
            event_status: checked.event_status,
        };
        let (sort_name, sort) = checked.sort;
        let store = self.store();
        let (mut page, total) = tokio::try_join!(
            store.matrix_page(&filter, sort, checked.after.as_ref(), checked.page_size + 1),
            store.matrix_total(&filter),
        )?;
        let more = page.len() > usize::try_from(checked.page_size).unwrap_or(usize::MAX);
        page.truncate(usize::try_from(checked.page_size).unwrap_or(usize::MAX));
        let next = page.last().filter(|_| more).map(|r| encode_cursor(sort_name, &r.after(sort)));

        let ids: Vec<i64> = page.iter().map(|r| r.id).collect();
        // Cells come ordered by participant id, rows by the sort: index the cells first.
        let mut by_participant: BTreeMap<i64, BTreeMap<String, Vec<MatrixCellView>>> = BTreeMap::new();
        for c in store.matrix_events(&ids).await? {
            by_participant.entry(c.participant_id).or_default().entry(c.event_oid).or_default().push(MatrixCellView {
                repeat_key: c.repeat_key,
                status: c.status,
                forms_complete: c.forms_complete,
                forms_started: c.forms_started,
            });
        }
        let open_notes: BTreeMap<i64, i64> = store.open_threads_of(&ids).await?.into_iter().collect();
        let mut rows = Vec::with_capacity(page.len());
        for r in page {
            rows.push(MatrixRowView {
                open_notes: open_notes.get(&r.id).copied().unwrap_or(0),
                events: by_participant.remove(&r.id).unwrap_or_default(),
                label: r.label,
                oid: r.oid,
                site_oid: r.site_oid,
                status: r.status,
                enrolled_on: r.enrolled_on,
            });
        }
        let events = events
            .iter()
            .map(|e| MatrixEventDef {
                oid: e.oid.to_string(),
                name: e.name.clone(),
                repeating: e.repeating,
                forms: e.forms.len(),
            })
            .collect();
        Ok(MatrixView { events, rows, next, total })
    }
}

#[cfg(test)]
mod tests {
    use super::{MatrixParams, check, decode_cursor, encode_cursor};
    use casebook_store::matrix::MatrixAfter;

    fn params(pairs: &[(&str, &str)]) -> MatrixParams {
        let v: serde_json::Map<String, serde_json::Value> =
            pairs.iter().map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v))).collect();
        serde_json::from_value(serde_json::Value::Object(v)).unwrap()
    }

    #[test]
    fn cursors_round_trip_and_remember_their_sort() {
        let key = MatrixAfter::Enrolled { enrolled_on: "2026-01-10".into(), label_key: "a|b\"c".into() };
        let c = encode_cursor("-enrolled", &key);
        assert_eq!(decode_cursor(&c), Some(("-enrolled".to_owned(), key)));
        assert_eq!(decode_cursor("zz"), None);
        assert_eq!(decode_cursor(&hex::encode("[\"site\", \"x\", \"y\"]")), None);
        let e = check(&params(&[("sort", "label"), ("after", &c)])).err().unwrap();
        assert!(e[0].message.contains("sort=-enrolled"), "{e:?}");
    }

    #[test]
    fn every_bad_parameter_is_named() {
        let e = check(&params(&[("sort", "age"), ("status", "gone"), ("page_size", "0"), ("event_status", "done")]))
            .err()
            .unwrap();
        let fields: Vec<&str> = e.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["sort", "status", "event_status", "page_size"]);
        assert!(e[0].message.contains("label, -label, enrolled, -enrolled, site"), "{}", e[0].message);
    }

    #[test]
    fn removed_participants_only_when_asked() {
        let c = check(&MatrixParams::default()).ok().unwrap();
        assert_eq!(c.statuses, ["available", "signed"]);
        let c = check(&params(&[("status", "removed,available")])).ok().unwrap();
        assert_eq!(c.statuses, ["removed", "auto_removed", "available"]);
    }
}
