//! Checks the expressions of an uploaded form version against the form itself.
//!
//! Every skip-logic condition, edit check, calculation, required condition, choice filter and
//! repeat count is parsed once and type-checked with [`casebook_domain::expr`]: unknown items
//! ("did you mean …?"), type mismatches, syntax errors, and circular calculations are reported
//! with the cell they were written in and the character position inside it.

use std::collections::{HashMap, HashSet};

use casebook_domain::design::{Dialect, FormVersion, ItemDef, ValueKind};
use casebook_domain::expr::{self, Expr, ExprDiagnostic, RefType, Reference, TypeEnv, ValueType};

use crate::diagnostic::{Diagnostics, Location};
use crate::xlsform::ExpressionCell;

pub(crate) fn value_type(kind: ValueKind) -> ValueType {
    match kind {
        ValueKind::Text => ValueType::Text,
        ValueKind::Integer => ValueType::Integer,
        ValueKind::Decimal => ValueType::Decimal,
        ValueKind::Boolean => ValueType::Boolean,
        ValueKind::Date => ValueType::Date,
        ValueKind::DateTime => ValueType::DateTime,
        ValueKind::Time => ValueType::Time,
        ValueKind::PartialDate => ValueType::PartialDate,
        ValueKind::MultiSelect => ValueType::MultiSelect,
    }
}

/// The type of an item for expressions; a calculation's text result may be used as a number.
pub(crate) fn item_type(item: &ItemDef) -> ValueType {
    if item.widget.is_calculated() { ValueType::Any } else { value_type(item.value_kind()) }
}

/// Resolves the names an expression uses against one form version.
struct FormEnv<'a> {
    version: &'a FormVersion,
    by_name: HashMap<&'a str, &'a ItemDef>,
    /// The item or group the expression belongs to.
    owner: Option<&'a str>,
    /// The repeating group the owner is in, if any (references to items of the same row do
    /// not repeat).
    owner_group: Option<&'a str>,
    /// Names that exist but hold no data (device metadata, groups).
    known_without_value: &'a HashSet<String>,
}

impl FormEnv<'_> {
    fn repeats(&self, item: &ItemDef) -> bool {
        let repeating = self.version.group(item.group_oid.as_str()).is_some_and(|g| g.is_repeating());
        repeating && self.owner_group != Some(item.group_oid.as_str())
    }
}

impl TypeEnv for FormEnv<'_> {
    fn resolve(&self, r: &Reference) -> Result<RefType, String> {
        match r {
            Reference::Current => {
                let ty = self.owner.and_then(|o| self.by_name.get(o)).map_or(ValueType::Any, |i| item_type(i));
                Ok(RefType { ty, repeats: false })
            }
            Reference::Field(name) | Reference::ItemName(name) => match self.by_name.get(name.as_str()) {
                Some(item) => Ok(RefType { ty: item_type(item), repeats: self.repeats(item) }),
                None if self.known_without_value.contains(name) => Ok(RefType { ty: ValueType::Any, repeats: false }),
                None => Err(format!("unknown item '{name}'")),
            },
            Reference::ChoiceColumn(_) | Reference::Relative { .. } => {
                Ok(RefType { ty: ValueType::Any, repeats: false })
            }
            other => Err(format!("'{other}' cannot be used in a form expression; OID paths belong in rules")),
        }
    }

    fn known_names(&self, r: &Reference) -> Vec<String> {
        let names = self.version.items.iter().map(|i| i.name.as_str());
        match r {
            Reference::Field(_) => names.map(|n| format!("${{{n}}}")).collect(),
            _ => names.map(str::to_owned).collect(),
        }
    }
}

fn describe(cell: &ExpressionCell, e: &ExprDiagnostic) -> String {
    let column = e.span.start + 1;
    format!(
        "{} of '{}': {} (at character {column} of \"{}\")",
        cell.column, cell.owner, e.message, cell.expression.source
    )
}

fn push(d: &mut Diagnostics, location: &Location, text: String, severity: expr::Severity) {
    match severity {
        expr::Severity::Error => d.error(location.clone(), text),
        expr::Severity::Warning => d.warning(location.clone(), text),
    }
}

/// Parses and checks every expression of a form version; adds what is wrong to `d`.
///
/// `known_without_value` are names that may be referenced but carry no value (device
/// metadata, group names).
pub fn check_expressions(
    version: &FormVersion,
    cells: &[ExpressionCell],
    known_without_value: &HashSet<String>,
    d: &mut Diagnostics,
) {
    let by_name: HashMap<&str, &ItemDef> = version.items.iter().map(|i| (i.name.as_str(), i)).collect();
    let mut calc_deps: Vec<(String, Vec<String>)> = Vec::new();
    for cell in cells {
        let parsed = match (cell.expression.dialect, cell.column.as_str()) {
            (Dialect::XPath, "choice_filter") => expr::parse_choice_filter(&cell.expression.source),
            (Dialect::XPath, _) => expr::parse_xpath(&cell.expression.source),
            (Dialect::OcFunc, _) => expr::parse_oc_calculation(&cell.expression.source),
            (Dialect::OcRule, _) => expr::parse_oc_rule(&cell.expression.source),
        };
        let parsed: Expr = match parsed {
            Ok(e) => e,
            Err(errors) => {
                for e in &errors {
                    push(d, &cell.location, describe(cell, e), e.severity);
                }
                continue;
            }
        };
        for w in parsed.parse_warnings() {
            push(d, &cell.location, describe(cell, w), w.severity);
        }
        let owner_item = by_name.get(cell.owner.as_str());
        let owner_group = owner_item
            .map(|i| i.group_oid.as_str())
            .or_else(|| version.groups.iter().find(|g| g.name == cell.owner).map(|g| g.oid.as_str()));
        let env = FormEnv {
            version,
            by_name: by_name.clone(),
            owner: Some(cell.owner.as_str()),
            owner_group,
            known_without_value,
        };
        let report = match cell.column.as_str() {
            "relevant" | "constraint" | "required" | "choice_filter" => parsed.check_condition(&env),
            _ => parsed.check(&env),
        };
        for e in &report.diagnostics {
            push(d, &cell.location, describe(cell, e), e.severity);
        }
        if cell.column == "calculation" {
            let deps = parsed
                .references()
                .into_iter()
                .filter_map(|r| match r {
                    Reference::Field(n) | Reference::ItemName(n) => Some(n.clone()),
                    _ => None,
                })
                .collect();
            calc_deps.push((cell.owner.clone(), deps));
        }
    }
    if let Some(cycle) = expr::find_cycle(&calc_deps) {
        let first = cycle.first().cloned().unwrap_or_default();
        let location = cells
            .iter()
            .find(|c| c.owner == first && c.column == "calculation")
            .map_or(Location::File, |c| c.location.clone());
        d.error(location, format!("circular calculation: {}", cycle.join(" → ")));
    }
}
