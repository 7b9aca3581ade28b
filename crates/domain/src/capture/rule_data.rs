//! A participant's data as OpenClinica rules read it: OID paths (`SE_E[n].F_F.IG_G[n].I_X`)
//! and event properties (`SE_E.STARTDATE`, `SE_E.STATUS`) resolved against every event and
//! form of one participant, relative to where the rule is evaluated (its target's event
//! occurrence, form and group row).
//!
//! Resolution (reference `openclinica-data-model.md` §10.3): a path without an event means the
//! target's event occurrence; an event without a repeat selector means the target's occurrence
//! when it is the same event, else the first; `[END]` the last. A path without a form means the
//! target's form when it holds the item, else the first form of the occurrence that does; a form
//! step may name the form or one of its versions. A group without a selector means the target's
//! row when it is the same group, else row 1. `[ALL]` selects every row (or occurrence).

use std::collections::BTreeMap;

use time::{Date, OffsetDateTime};

use crate::expr::{EventProperty, OcPath, OcStep, Reference, Repeat, Value, ValueEnv};

/// One form of an event occurrence with its values (already typed by the design).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleForm {
    pub form_oid: String,
    pub version_oid: String,
    /// Values by (group OID, row, item OID).
    pub values: BTreeMap<(String, u32, String), Value>,
}

/// One event occurrence.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleEvent {
    pub event_oid: String,
    pub repeat: u32,
    pub status: String,
    pub start: Option<Date>,
    pub forms: Vec<RuleForm>,
}

/// Every event occurrence of a participant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParticipantData {
    pub events: Vec<RuleEvent>,
}

/// Where a rule is evaluated: the target's event occurrence, form and group row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleContext {
    pub event: Option<(String, u32)>,
    pub form: Option<String>,
    pub row: Option<(String, u32)>,
}

/// A [`ValueEnv`] over a participant's data at one place.
#[derive(Debug, Clone)]
pub struct RuleEnv<'a> {
    pub data: &'a ParticipantData,
    pub at: RuleContext,
    pub today: Date,
    pub now: OffsetDateTime,
}

impl ParticipantData {
    /// The occurrences an event step selects, relative to `at`.
    fn occurrences<'d>(&'d self, step: Option<&OcStep>, at: &RuleContext) -> Vec<&'d RuleEvent> {
        let Some(step) = step else {
            return at
                .event
                .as_ref()
                .and_then(|(oid, n)| self.events.iter().find(|e| &e.event_oid == oid && e.repeat == *n))
                .into_iter()
                .collect();
        };
        let mut all: Vec<&RuleEvent> = self.events.iter().filter(|e| e.event_oid == step.oid).collect();
        all.sort_by_key(|e| e.repeat);
        match step.repeat {
            Some(Repeat::All) => all,
            Some(Repeat::End) => all.last().copied().into_iter().collect(),
            Some(Repeat::Index(n)) => all.into_iter().filter(|e| e.repeat == n).collect(),
            None => {
                let same = at.event.as_ref().filter(|(oid, _)| *oid == step.oid).map(|(_, n)| *n);
                let want = same.unwrap_or(1);
                all.into_iter().filter(|e| e.repeat == want).collect()
            }
        }
    }

    /// Every value a path selects (one per selected row), in event then row order.
    #[must_use]
    pub fn select(&self, path: &OcPath, at: &RuleContext) -> Vec<Value> {
        let mut out = Vec::new();
        for event in self.occurrences(path.event.as_ref(), at) {
            let same_event = at.event.as_ref().is_some_and(|(o, n)| *o == event.event_oid && *n == event.repeat);
            let holds = |f: &&RuleForm| f.values.keys().any(|(_, _, i)| *i == path.item);
            let form = match &path.form {
                Some(f) => event.forms.iter().find(|x| x.form_oid == *f || x.version_oid == *f),
                None => at
                    .form
                    .as_ref()
                    .filter(|_| same_event)
                    .and_then(|f| event.forms.iter().find(|x| &x.form_oid == f).filter(holds))
                    .or_else(|| event.forms.iter().find(holds)),
            };
            let Some(form) = form else {
                out.push(Value::Missing);
                continue;
            };
            let rows: Vec<(&String, u32)> = form
                .values
                .keys()
                .filter(|(g, _, i)| *i == path.item && path.group.as_ref().is_none_or(|s| s.oid == *g))
                .map(|(g, r, _)| (g, *r))
                .collect();
            let group_oid =
                path.group.as_ref().map(|g| g.oid.clone()).or_else(|| rows.first().map(|(g, _)| (*g).clone()));
            let Some(group_oid) = group_oid else {
                out.push(Value::Missing);
                continue;
            };
            let mut numbers: Vec<u32> = rows.iter().filter(|(g, _)| **g == group_oid).map(|(_, r)| *r).collect();
            numbers.sort_unstable();
            numbers.dedup();
            let chosen: Vec<u32> = match path.group.as_ref().and_then(|g| g.repeat) {
                Some(Repeat::All) => numbers,
                Some(Repeat::End) => numbers.last().copied().into_iter().collect(),
                Some(Repeat::Index(n)) => vec![n],
                None => {
                    let same_row = at.row.as_ref().filter(|(g, _)| same_event && *g == group_oid).map(|(_, r)| *r);
                    vec![same_row.unwrap_or(1)]
                }
            };
            for r in chosen {
                out.push(
                    form.values.get(&(group_oid.clone(), r, path.item.clone())).cloned().unwrap_or(Value::Missing),
                );
            }
        }
        out
    }

    /// An event property (`STARTDATE`, `STATUS`) of the occurrence a step selects.
    #[must_use]
    pub fn event_property(&self, step: &OcStep, property: EventProperty, at: &RuleContext) -> Value {
        let Some(e) = self.occurrences(Some(step), at).into_iter().next() else {
            return Value::Missing;
        };
        match property {
            EventProperty::StartDate => e.start.map_or(Value::Missing, Value::Date),
            EventProperty::Status => Value::Text(e.status.clone()),
        }
    }
}

impl ValueEnv for RuleEnv<'_> {
    fn value(&self, r: &Reference) -> Value {
        self.values(r).into_iter().next().unwrap_or(Value::Missing)
    }

    fn values(&self, r: &Reference) -> Vec<Value> {
        match r {
            Reference::OcPath(p) => self.data.select(p, &self.at),
            Reference::OcEvent { event, property } => vec![self.data.event_property(event, *property, &self.at)],
            _ => vec![Value::Missing],
        }
    }

    fn current(&self) -> Value {
        Value::Missing
    }

    fn today(&self) -> Date {
        self.today
    }

    fn now(&self) -> OffsetDateTime {
        self.now
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::parse_oc_rule;
    use time::macros::{date, datetime};

    fn form(oid: &str, values: &[(&str, u32, &str, Value)]) -> RuleForm {
        RuleForm {
            form_oid: oid.into(),
            version_oid: format!("{oid}_V1"),
            values: values.iter().map(|(g, r, i, v)| (((*g).into(), *r, (*i).into()), v.clone())).collect(),
        }
    }

    fn data() -> ParticipantData {
        ParticipantData {
            events: vec![
                RuleEvent {
                    event_oid: "SE_BASE".into(),
                    repeat: 1,
                    status: "completed".into(),
                    start: Some(date!(2026 - 01 - 10)),
                    forms: vec![form(
                        "F_VS",
                        &[
                            ("IG_VS", 1, "I_SYS", Value::Integer(120)),
                            ("IG_VS", 1, "I_DIA", Value::Integer(80)),
                            ("IG_VS", 1, "I_DATE", Value::Date(date!(2026 - 01 - 10))),
                            ("IG_ECG", 1, "I_HR", Value::Integer(60)),
                            ("IG_ECG", 2, "I_HR", Value::Integer(72)),
                        ],
                    )],
                },
                RuleEvent {
                    event_oid: "SE_FU".into(),
                    repeat: 1,
                    status: "data_entry_started".into(),
                    start: None,
                    forms: vec![form("F_VS", &[("IG_VS", 1, "I_SYS", Value::Integer(130))])],
                },
                RuleEvent {
                    event_oid: "SE_FU".into(),
                    repeat: 2,
                    status: "scheduled".into(),
                    start: None,
                    forms: vec![form("F_VS", &[("IG_VS", 1, "I_SYS", Value::Integer(140))])],
                },
            ],
        }
    }

    fn eval(src: &str, at: RuleContext) -> Option<bool> {
        let d = data();
        let env = RuleEnv { data: &d, at, today: date!(2026 - 11 - 22), now: datetime!(2026-11-22 09:00 UTC) };
        let e = parse_oc_rule(src).unwrap_or_else(|e| panic!("{src}: {e:?}"));
        e.evaluate_condition(&env)
    }

    fn at(event: &str, n: u32, row: u32) -> RuleContext {
        RuleContext { event: Some((event.into(), n)), form: Some("F_VS".into()), row: Some(("IG_ECG".into(), row)) }
    }

    #[test]
    fn paths_resolve_relative_to_the_target() {
        let base = || at("SE_BASE", 1, 2);
        // (expression, where, expected)
        let table: &[(&str, RuleContext, Option<bool>)] = &[
            ("I_SYS gt I_DIA", base(), Some(true)),
            ("IG_VS.I_SYS eq 120", base(), Some(true)),
            ("F_VS.IG_VS.I_SYS eq 120", base(), Some(true)),
            ("F_VS_V1.IG_VS.I_SYS eq 120", base(), Some(true)),
            ("I_HR eq 72", base(), Some(true)), // the target's row
            ("IG_ECG[1].I_HR eq 60", base(), Some(true)),
            ("IG_ECG[END].I_HR eq 72", base(), Some(true)),
            ("SE_FU.F_VS.IG_VS.I_SYS eq 130", base(), Some(true)), // first occurrence
            ("SE_FU[2].F_VS.IG_VS.I_SYS eq 140", base(), Some(true)),
            ("SE_FU[END].F_VS.IG_VS.I_SYS eq 140", base(), Some(true)),
            ("I_SYS eq 140", at("SE_FU", 2, 1), Some(true)), // the target's occurrence
            ("SE_FU.F_VS.IG_VS.I_SYS eq 140", at("SE_FU", 2, 1), Some(true)),
            ("SE_BASE.STARTDATE eq 2026-01-10", base(), Some(true)),
            ("SE_FU[2].STATUS eq scheduled", base(), Some(true)),
            ("I_DATE + 28 eq 2026-02-07", base(), Some(true)),
        ];
        for (src, where_, expected) in table {
            assert_eq!(eval(src, where_.clone()), *expected, "{src}");
        }
    }

    #[test]
    fn missing_data_is_unknown() {
        let base = at("SE_BASE", 1, 1);
        assert_eq!(eval("I_NOPE eq 1", base.clone()), None);
        assert_eq!(eval("SE_FU[3].F_VS.IG_VS.I_SYS eq 1", base.clone()), None);
        assert_eq!(eval("SE_FU.STARTDATE eq 2026-01-10", base), None);
    }
}
