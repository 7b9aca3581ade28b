//! What changes between two designs, and which changes may not be published.
//!
//! A data manager sees this before publishing: events, forms, versions, groups, items and code
//! lists added, removed or changed. Some changes would orphan or reinterpret data already
//! collected under the earlier design, and are refused as OpenClinica refuses them:
//! - removing a published event, form or form version (its data would lose its definition);
//! - changing a published form version in place (published versions are immutable: upload a
//!   new version instead);
//! - changing an item's data type (except DATE → PDATE, which only widens what is allowed);
//! - moving an item to another group, or into or out of a repeating group;
//! - making a repeating event non-repeating.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{DataType, FormDef, StudyDesign};

/// Added, removed or changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Added,
    Removed,
    Changed,
}

/// The kind of object a change is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    Event,
    Form,
    FormVersion,
    ItemGroup,
    Item,
}

/// One difference between two designs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub kind: ChangeKind,
    pub object: ObjectKind,
    pub oid: String,
    /// Where the object lives (`F_VITALS`, `F_VITALS_V2`), empty for top-level objects.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub within: String,
    /// What changed, in words.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// Why this change may not be published, when it may not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// The differences from one design to another.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DesignDiff {
    pub changes: Vec<Change>,
}

impl DesignDiff {
    /// The changes that may not be published.
    pub fn refused(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.refused.is_some())
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

fn change(kind: ChangeKind, object: ObjectKind, oid: &str, within: &str) -> Change {
    Change { kind, object, oid: oid.to_owned(), within: within.to_owned(), details: Vec::new(), refused: None }
}

/// The item facts that must not change once data exists: type, group, repeating.
struct ItemShape {
    name: String,
    data_type: DataType,
    group: String,
    repeating: bool,
}

/// The latest shape of every item of a form, across its versions.
fn item_shapes(form: &FormDef) -> BTreeMap<String, ItemShape> {
    let mut shapes = BTreeMap::new();
    for v in &form.versions {
        for i in &v.items {
            let repeating = v.group(i.group_oid.as_str()).is_some_and(super::ItemGroup::is_repeating);
            shapes.insert(
                i.oid.to_string(),
                ItemShape { name: i.name.clone(), data_type: i.data_type, group: i.group_oid.to_string(), repeating },
            );
        }
    }
    shapes
}

/// Compares a published design (`old`) with a candidate (`new`).
#[must_use]
pub fn diff(old: &StudyDesign, new: &StudyDesign) -> DesignDiff {
    let mut out = Vec::new();
    for e in &old.events {
        match new.event(e.oid.as_str()) {
            None => {
                let mut c = change(ChangeKind::Removed, ObjectKind::Event, e.oid.as_str(), "");
                c.refused =
                    Some(format!("event {} ({}) is published; removing it would orphan its data", e.oid, e.name));
                out.push(c);
            }
            Some(n) if n != e => {
                let mut c = change(ChangeKind::Changed, ObjectKind::Event, e.oid.as_str(), "");
                if n.name != e.name {
                    c.details.push(format!("name '{}' → '{}'", e.name, n.name));
                }
                if n.event_type != e.event_type {
                    c.details.push(format!("type {} → {}", e.event_type.odm(), n.event_type.odm()));
                }
                if n.repeating != e.repeating {
                    c.details.push(format!("repeating {} → {}", e.repeating, n.repeating));
                    if e.repeating {
                        c.refused = Some(format!(
                            "event {} is repeating; making it non-repeating would reinterpret repeated occurrences",
                            e.oid
                        ));
                    }
                }
                for f in &e.forms {
                    match n.forms.iter().find(|x| x.form_oid == f.form_oid) {
                        None => c.details.push(format!("form {} removed from the event", f.form_oid)),
                        Some(x) if x != f => c.details.push(format!("settings of form {} changed", f.form_oid)),
                        Some(_) => {}
                    }
                }
                for f in &n.forms {
                    if !e.forms.iter().any(|x| x.form_oid == f.form_oid) {
                        c.details.push(format!("form {} added to the event", f.form_oid));
                    }
                }
                if n.description != e.description || n.category != e.category {
                    c.details.push("description or category changed".into());
                }
                out.push(c);
            }
            Some(_) => {}
        }
    }
    for e in &new.events {
        if old.event(e.oid.as_str()).is_none() {
            out.push(change(ChangeKind::Added, ObjectKind::Event, e.oid.as_str(), ""));
        }
    }

    for f in &old.forms {
        let Some(nf) = new.form(f.oid.as_str()) else {
            let mut c = change(ChangeKind::Removed, ObjectKind::Form, f.oid.as_str(), "");
            c.refused = Some(format!("form {} ({}) is published; removing it would orphan its data", f.oid, f.name));
            out.push(c);
            continue;
        };
        for v in &f.versions {
            match nf.versions.iter().find(|x| x.oid == v.oid) {
                None => {
                    let mut c = change(ChangeKind::Removed, ObjectKind::FormVersion, v.oid.as_str(), f.oid.as_str());
                    c.refused = Some(format!("form version {} is published; it cannot be removed", v.oid));
                    out.push(c);
                }
                Some(nv) if nv != v => {
                    let mut c = change(ChangeKind::Changed, ObjectKind::FormVersion, v.oid.as_str(), f.oid.as_str());
                    c.refused = Some(format!(
                        "form version {} ({}) is published and cannot change; upload it as a new version",
                        v.oid, v.label
                    ));
                    out.push(c);
                }
                Some(_) => {}
            }
        }
        for v in &nf.versions {
            if !f.versions.iter().any(|x| x.oid == v.oid) {
                out.push(change(ChangeKind::Added, ObjectKind::FormVersion, v.oid.as_str(), f.oid.as_str()));
            }
        }
        let before = item_shapes(f);
        let after = item_shapes(nf);
        for (oid, a) in &after {
            match before.get(oid) {
                None => out.push(change(ChangeKind::Added, ObjectKind::Item, oid, f.oid.as_str())),
                Some(b) => {
                    let mut c = change(ChangeKind::Changed, ObjectKind::Item, oid, f.oid.as_str());
                    let mut refused = Vec::new();
                    if a.data_type != b.data_type {
                        c.details.push(format!("data type {} → {}", b.data_type.code(), a.data_type.code()));
                        if !(b.data_type == DataType::Date && a.data_type == DataType::PartialDate) {
                            refused.push(format!(
                                "item {} ({}) changes data type from {} to {}",
                                oid,
                                a.name,
                                b.data_type.code(),
                                a.data_type.code()
                            ));
                        }
                    }
                    if a.group != b.group {
                        c.details.push(format!("group {} → {}", b.group, a.group));
                        refused.push(format!("item {} ({}) moves from group {} to {}", oid, a.name, b.group, a.group));
                    } else if a.repeating != b.repeating {
                        c.details.push(format!("repeating {} → {}", b.repeating, a.repeating));
                        refused.push(format!(
                            "item {} ({}) moves {} a repeating group",
                            oid,
                            a.name,
                            if a.repeating { "into" } else { "out of" }
                        ));
                    }
                    if !refused.is_empty() {
                        c.refused = Some(refused.join("; "));
                    }
                    if !c.details.is_empty() {
                        out.push(c);
                    }
                }
            }
        }
    }
    for f in &new.forms {
        if old.form(f.oid.as_str()).is_none() {
            out.push(change(ChangeKind::Added, ObjectKind::Form, f.oid.as_str(), ""));
            for v in &f.versions {
                out.push(change(ChangeKind::Added, ObjectKind::FormVersion, v.oid.as_str(), f.oid.as_str()));
            }
        }
    }
    DesignDiff { changes: out }
}
