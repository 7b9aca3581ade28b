//! Rules against a study design: every target, variable and destination resolves to an event,
//! form, group and item of the design, every expression type-checks, and what an action writes
//! fits where it goes (reference §10.3).
//!
//! Paths (`I_x`, `IG_g.I_x`, `F_c.IG_g.I_x`, `SE_e.F_c.IG_g.I_x`) name an item by its shortest
//! unambiguous suffix; `F_` is a form or one of its versions. Variables and destinations are
//! read relative to the target: without an event they are in the target's event (so their form
//! must be used there), and an item of the target's own repeating group is the target's row.
//! Any other item of a repeating group needs a row (`[1]`, `[END]`); `[ALL]` is for targets
//! only. `[n]` beyond the first on an event or group that does not repeat is an error.
//!
//! Messages name the assignment (its number in the file and its target), the rule and the
//! action, since a [`RuleSet`] carries no file positions.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use casebook_domain::capture::values::canonical_value;
use casebook_domain::design::{EventDef, FormDef, FormVersion, ItemDef, ItemGroup, StudyDesign, ValueKind};
use casebook_domain::expr::{
    self, EventProperty, Expr, ExprDiagnostic, Literal, NodeKind, OcPath, OcStep, RefType, Reference, Repeat, Severity,
    TypeEnv, ValueType,
};
use casebook_domain::rules::{
    ActionKind, EVENT_STATUS_LITERALS, EventDestination, InsertDestination, InsertValue, RuleAction, RuleSet,
};

use crate::design_check::item_type;
use crate::diagnostic::{Diagnostics, Location};

/// Checks a rule set against a design; every problem, named by assignment, rule and path.
#[must_use]
pub fn validate_rules(set: &RuleSet, design: &StudyDesign) -> Diagnostics {
    let mut v = Validator { cat: Catalogue::new(design), d: Diagnostics::default() };
    for (n, assignment) in set.assignments.iter().enumerate() {
        let here = format!("RuleAssignment {} (target {})", n + 1, assignment.target);
        let Some(scope) = v.target(&here, &assignment.target) else { continue };
        for rule_ref in &assignment.rule_refs {
            let here = format!("{here}, rule {}", rule_ref.rule_oid);
            match set.rule(rule_ref.rule_oid.as_str()) {
                Some(def) => v.condition(&here, &def.expression, &scope),
                None => v.error(format!("{here}: there is no RuleDef {} in the rules.", rule_ref.rule_oid)),
            }
            for action in &rule_ref.actions {
                v.action(&format!("{here}, {}", action.action_type().element()), action, &scope);
            }
        }
    }
    // Rules no assignment uses: their items must exist, whatever the target will be.
    for def in &set.rule_defs {
        if !set.rule_refs().any(|(_, r)| r.rule_oid == def.oid) {
            v.condition(&format!("RuleDef {}", def.oid), &def.expression, &Scope::anywhere());
        }
    }
    v.d
}

// ---------------------------------------------------------------------------------------------
// The design, indexed by item.

/// An item in one version of its form.
#[derive(Debug, Clone, Copy)]
struct Site<'d> {
    form: &'d FormDef,
    version: &'d FormVersion,
    item: &'d ItemDef,
}

/// An item path resolved against the design.
#[derive(Debug)]
struct Resolved<'d> {
    /// The latest version that matches the path.
    site: Site<'d>,
    group: Option<&'d ItemGroup>,
    /// The events the item can be in: the path's, or every event using its form.
    events: Vec<&'d EventDef>,
}

struct Catalogue<'d> {
    design: &'d StudyDesign,
    /// Every version holding each item OID, in design order (older versions first).
    items: BTreeMap<&'d str, Vec<Site<'d>>>,
    groups: BTreeSet<&'d str>,
}

impl<'d> Catalogue<'d> {
    fn new(design: &'d StudyDesign) -> Self {
        let mut items: BTreeMap<&str, Vec<Site<'d>>> = BTreeMap::new();
        let mut groups = BTreeSet::new();
        for form in &design.forms {
            for version in &form.versions {
                groups.extend(version.groups.iter().map(|g| g.oid.as_str()));
                for item in &version.items {
                    items.entry(item.oid.as_str()).or_default().push(Site { form, version, item });
                }
            }
        }
        Self { design, items, groups }
    }

    fn event(&self, step: &OcStep) -> Result<&'d EventDef, String> {
        let event = self.design.event(&step.oid).ok_or_else(|| {
            let known: Vec<&str> = self.design.events.iter().map(|e| e.oid.as_str()).collect();
            format!("there is no event {}{}", step.oid, suggestion(&step.oid, &known))
        })?;
        selector_fits(step, event.repeating, "event")?;
        Ok(event)
    }

    /// Resolves an item path: the item exists, and in the form, group and event named.
    fn resolve(&self, path: &OcPath) -> Result<Resolved<'d>, String> {
        let mut sites: Vec<Site<'d>> = self.items.get(path.item.as_str()).cloned().unwrap_or_default();
        if sites.is_empty() {
            let known: Vec<&str> = self.items.keys().copied().collect();
            return Err(format!("there is no item {}{}", path.item, suggestion(&path.item, &known)));
        }
        if let Some(form) = &path.form {
            if self.design.form(form).is_none() && self.design.form_version(form).is_none() {
                let known: Vec<&str> = self.design.forms.iter().map(|f| f.oid.as_str()).collect();
                return Err(format!("there is no form or form version {form}{}", suggestion(form, &known)));
            }
            sites.retain(|s| s.form.oid.as_str() == form || s.version.oid.as_str() == form);
            if sites.is_empty() {
                return Err(format!("{} is not in {form}", path.item));
            }
        }
        if let Some(group) = &path.group {
            if !self.groups.contains(group.oid.as_str()) {
                let known: Vec<&str> = self.groups.iter().copied().collect();
                return Err(format!("there is no item group {}{}", group.oid, suggestion(&group.oid, &known)));
            }
            sites.retain(|s| s.item.group_oid.as_str() == group.oid);
            if sites.is_empty() {
                return Err(format!("{} is not in the item group {}", path.item, group.oid));
            }
        }
        let uses = |e: &EventDef, s: &Site<'_>| e.forms.iter().any(|f| f.form_oid == s.form.oid);
        let events: Vec<&'d EventDef> = match &path.event {
            Some(step) => {
                let event = self.event(step)?;
                sites.retain(|s| uses(event, s));
                if sites.is_empty() {
                    return Err(format!("the event {} does not use the form of {}", step.oid, path.item));
                }
                vec![event]
            }
            None => self.design.events.iter().filter(|e| sites.iter().any(|s| uses(e, s))).collect(),
        };
        let site = *sites.last().ok_or_else(|| format!("there is no item {}", path.item))?;
        let group = site.version.group(site.item.group_oid.as_str());
        if let Some(step) = &path.group {
            selector_fits(step, group.is_some_and(ItemGroup::is_repeating), "item group")?;
        }
        Ok(Resolved { site, group, events })
    }
}

/// `[2]` and beyond need something that repeats.
fn selector_fits(step: &OcStep, repeating: bool, what: &str) -> Result<(), String> {
    match step.repeat {
        Some(Repeat::Index(n)) if n > 1 && !repeating => {
            Err(format!("the {what} {} does not repeat, so it has no occurrence {n}", step.oid))
        }
        _ => Ok(()),
    }
}

fn suggestion(name: &str, known: &[&str]) -> String {
    expr::did_you_mean(name, known).map(|s| format!(" (did you mean {s}?)")).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// What paths are relative to.

/// Where an assignment's target is: variables and destinations without an event are read in
/// its events, and items of its repeating group in its row.
#[derive(Debug, Default)]
struct Scope<'d> {
    /// The target's events (empty when its form is used by no event).
    events: Vec<&'d str>,
    /// The target's repeating group, if it is in one.
    row_group: Option<&'d str>,
    /// A rule checked without a target: any item anywhere, rows not decided.
    anywhere: bool,
}

impl Scope<'_> {
    fn anywhere() -> Self {
        Self { anywhere: true, ..Self::default() }
    }
}

/// Resolves the references of expressions for the type checker.
struct RulesEnv<'a, 'd> {
    cat: &'a Catalogue<'d>,
    scope: &'a Scope<'d>,
    /// Warnings found while resolving (the checker only takes errors from [`TypeEnv`]).
    notes: RefCell<Vec<String>>,
}

impl<'d> RulesEnv<'_, 'd> {
    /// Resolves an item path relative to the target; also whether it stands for several rows.
    fn item(&self, path: &OcPath) -> Result<(Resolved<'d>, bool), String> {
        let found = self.cat.resolve(path)?;
        if self.scope.anywhere {
            return Ok((found, false));
        }
        if path.event.is_none()
            && !self.scope.events.is_empty()
            && !found.events.iter().any(|e| self.scope.events.contains(&e.oid.as_str()))
        {
            let example = found.events.first().map_or(String::new(), |e| {
                format!(
                    "; name the event, e.g. {}.{}.{}.{}",
                    e.oid, found.site.form.oid, found.site.item.group_oid, path.item
                )
            });
            return Err(format!(
                "{path} is in the form {}, which the target's event ({}) does not use{example}",
                found.site.form.oid,
                self.scope.events.join(", "),
            ));
        }
        if let Some(step) = &path.event
            && step.repeat.is_none()
            && found.events.iter().any(|e| e.repeating)
            && !self.scope.events.contains(&step.oid.as_str())
        {
            self.notes.borrow_mut().push(format!(
                "{path}: the event {} repeats and no occurrence is selected; write {}[1], … or {}[END]",
                step.oid, step.oid, step.oid
            ));
        }
        let one_row = path.group.as_ref().is_some_and(|g| matches!(g.repeat, Some(Repeat::Index(_) | Repeat::End)));
        // The target's own row: same group, same event occurrence.
        let same_event = path.event.as_ref().is_none_or(|e| self.scope.events.contains(&e.oid.as_str()));
        let target_row = same_event && self.scope.row_group == Some(found.site.item.group_oid.as_str());
        let rows = found.group.is_some_and(ItemGroup::is_repeating) && !one_row && !target_row;
        let all = Reference::OcPath(path.clone()).selects_all_rows();
        Ok((found, rows || all))
    }
}

impl TypeEnv for RulesEnv<'_, '_> {
    fn resolve(&self, r: &Reference) -> Result<RefType, String> {
        match r {
            Reference::OcPath(path) => {
                let (found, repeats) = self.item(path)?;
                Ok(RefType { ty: item_type(found.site.item), repeats })
            }
            Reference::OcEvent { event, property } => {
                self.cat.event(event)?;
                let ty = match property {
                    EventProperty::StartDate => ValueType::Date,
                    EventProperty::Status => ValueType::Text,
                };
                Ok(RefType { ty, repeats: event.repeat == Some(Repeat::All) })
            }
            other => Err(format!("{other} is not an item path or an event property")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checking.

struct Validator<'d> {
    cat: Catalogue<'d>,
    d: Diagnostics,
}

impl<'d> Validator<'d> {
    fn error(&mut self, message: String) {
        self.d.error(Location::File, message);
    }

    fn warning(&mut self, message: String) {
        self.d.warning(Location::File, message);
    }

    fn report(&mut self, here: &str, what: &str, src: &str, e: &ExprDiagnostic) {
        let message = format!("{here}: {what} \"{src}\": {} (at character {})", e.message, e.span.start + 1);
        match e.severity {
            Severity::Error => self.error(message),
            Severity::Warning => self.warning(message),
        }
    }

    fn env<'a>(&'a self, scope: &'a Scope<'d>) -> RulesEnv<'a, 'd> {
        RulesEnv { cat: &self.cat, scope, notes: RefCell::new(Vec::new()) }
    }

    /// The target: where the rule runs, and so what its paths are relative to.
    fn target(&mut self, here: &str, src: &str) -> Option<Scope<'d>> {
        let parsed = match expr::parse_oc_target(src) {
            Ok(parsed) => parsed,
            Err(errors) => {
                for e in &errors {
                    self.report(here, "Target", src, e);
                }
                return None;
            }
        };
        let scope = match &parsed {
            Reference::OcEvent { event, .. } => {
                self.cat.event(event).map(|e| Scope { events: vec![e.oid.as_str()], ..Scope::default() })
            }
            Reference::OcPath(path) => self.cat.resolve(path).map(|found| Scope {
                events: found.events.iter().map(|e| e.oid.as_str()).collect(),
                row_group: found.group.filter(|g| g.is_repeating()).map(|g| g.oid.as_str()),
                anywhere: false,
            }),
            other => Err(format!("{other} is not an item path or an event property")),
        };
        match scope {
            Ok(scope) => {
                if scope.events.is_empty() {
                    self.warning(format!("{here}: no event uses the target's form, so the rules never run"));
                }
                Some(scope)
            }
            Err(message) => {
                self.error(format!("{here}: Target {src}: {message}"));
                None
            }
        }
    }

    /// Parses an expression, reporting syntax errors.
    fn parse(&mut self, here: &str, what: &str, src: &str) -> Option<Expr> {
        match expr::parse_oc_rule(src) {
            Ok(parsed) => Some(parsed),
            Err(errors) => {
                for e in &errors {
                    self.report(here, what, src, e);
                }
                None
            }
        }
    }

    /// A rule's expression: a condition over the target's data.
    fn condition(&mut self, here: &str, src: &str, scope: &Scope<'d>) {
        let Some(parsed) = self.parse(here, "Expression", src) else { return };
        let env = self.env(scope);
        let report = parsed.check_condition(&env);
        let notes = env.notes.into_inner();
        for e in &report.diagnostics {
            self.report(here, "Expression", src, e);
        }
        for note in notes {
            self.warning(format!("{here}: Expression \"{src}\": {note}"));
        }
    }

    /// A value expression: its type when it checks without errors.
    fn value_expression(&mut self, here: &str, src: &str, scope: &Scope<'d>) -> Option<ValueType> {
        let parsed = self.parse(here, "ValueExpression", src)?;
        let env = self.env(scope);
        let report = parsed.check(&env);
        let notes = env.notes.into_inner();
        for e in &report.diagnostics {
            self.report(here, "ValueExpression", src, e);
        }
        for note in notes {
            self.warning(format!("{here}: ValueExpression \"{src}\": {note}"));
        }
        (!report.has_errors()).then_some(report.result)
    }

    /// A destination of a show, hide or insert: one item, one row.
    fn destination(&mut self, here: &str, src: &str, scope: &Scope<'d>) -> Option<Resolved<'d>> {
        let path = match expr::parse_oc_target(src) {
            Ok(Reference::OcPath(path)) if !Reference::OcPath(path.clone()).selects_all_rows() => path,
            Ok(Reference::OcPath(_)) => {
                self.error(format!("{here}: destination {src}: [ALL] is only allowed in a rule target"));
                return None;
            }
            Ok(_) => {
                self.error(format!("{here}: destination {src} is not an item path"));
                return None;
            }
            Err(errors) => {
                for e in &errors {
                    self.report(here, "destination", src, e);
                }
                return None;
            }
        };
        let env = self.env(scope);
        let resolved = env.item(&path);
        let notes = env.notes.into_inner();
        for note in notes {
            self.warning(format!("{here}: destination {note}"));
        }
        match resolved {
            Ok((found, false)) => Some(found),
            Ok((_, true)) => {
                self.error(format!(
                    "{here}: destination {src} is in a repeating group other than the target's; select one row \
                     with [1], [2], … or [END]"
                ));
                None
            }
            Err(message) => {
                self.error(format!("{here}: destination {src}: {message}"));
                None
            }
        }
    }

    fn action(&mut self, here: &str, action: &RuleAction, scope: &Scope<'d>) {
        match &action.kind {
            ActionKind::DiscrepancyNote { message } if message.trim().is_empty() => {
                self.error(format!("{here}: the note has no message"));
            }
            ActionKind::DiscrepancyNote { .. } | ActionKind::Notification { .. } => {}
            ActionKind::Email { to, .. } => {
                for address in to.split(',').map(str::trim).filter(|a| !a.contains('@')) {
                    self.warning(format!("{here}: '{address}' in To does not look like an e-mail address"));
                }
            }
            ActionKind::Show { destinations, .. } | ActionKind::Hide { destinations, .. } => {
                for d in destinations {
                    self.destination(here, d, scope);
                }
            }
            ActionKind::Insert { destinations } => {
                for d in destinations {
                    self.insert(here, d, scope);
                }
            }
            ActionKind::Event { event_oid, destinations, .. } => {
                if let Err(message) = self.cat.event(&OcStep { oid: event_oid.to_string(), repeat: None }) {
                    self.error(format!("{here}: {message}"));
                }
                for d in destinations {
                    self.event_destination(here, d, scope);
                }
            }
            ActionKind::Randomize { .. } => {
                self.error(format!("{here}: randomisation is not supported (Casebook has no randomisation module)"));
            }
        }
    }

    /// An insert: the destination exists and what is inserted fits its data type.
    fn insert(&mut self, here: &str, d: &InsertDestination, scope: &Scope<'d>) {
        let Some(found) = self.destination(here, &d.oid_path, scope) else { return };
        let item = found.site.item;
        if item.widget.is_calculated() {
            self.warning(format!(
                "{here}: {} is calculated, so the form's calculation replaces what the rule inserts",
                d.oid_path
            ));
        }
        match &d.value {
            InsertValue::Value(v) if v.is_empty() => {}
            InsertValue::Value(v) => {
                let list = item.code_list.as_ref().and_then(|c| found.site.version.code_list(c.as_str()));
                if let Err(e) = canonical_value(item, list, v) {
                    self.error(format!(
                        "{here}: Value \"{v}\" does not fit {} ({}): {e}",
                        d.oid_path,
                        item.data_type.code()
                    ));
                }
            }
            InsertValue::Expression(src) => {
                if let Some(got) = self.value_expression(here, src, scope)
                    && !fits(item, got)
                {
                    self.error(format!(
                        "{here}: ValueExpression \"{src}\" gives {}, which does not fit {} ({})",
                        got.describe(),
                        d.oid_path,
                        item.data_type.code()
                    ));
                }
            }
        }
    }

    /// An event action's destination: a start date, or a status.
    fn event_destination(&mut self, here: &str, d: &EventDestination, scope: &Scope<'d>) {
        let src = d.value_expression.as_str();
        match d.property {
            EventProperty::StartDate => {
                if let Some(got) = self.value_expression(here, src, scope)
                    && !matches!(got, ValueType::Date | ValueType::DateTime | ValueType::Any)
                {
                    self.error(format!(
                        "{here}: the STARTDATE expression \"{src}\" gives {}, not a date",
                        got.describe()
                    ));
                }
            }
            EventProperty::Status => {
                let Some(parsed) = self.parse(here, "ValueExpression", src) else { return };
                match &parsed.root().kind {
                    NodeKind::Literal(Literal::Text(t) | Literal::BareWord(t)) => {
                        if !EVENT_STATUS_LITERALS.contains(&t.as_str()) {
                            self.error(format!(
                                "{here}: STATUS \"{t}\" is not an event status; use one of {}",
                                EVENT_STATUS_LITERALS.join(", ")
                            ));
                        }
                    }
                    _ => {
                        self.value_expression(here, src, scope);
                    }
                }
            }
        }
    }
}

/// Whether a value of type `got` can be stored in an item.
fn fits(item: &ItemDef, got: ValueType) -> bool {
    use ValueType as T;
    if got == T::Any {
        return true;
    }
    match item.value_kind() {
        ValueKind::Text => true,
        ValueKind::MultiSelect => matches!(got, T::Text | T::MultiSelect),
        ValueKind::Integer => got == T::Integer,
        ValueKind::Decimal => matches!(got, T::Integer | T::Decimal),
        ValueKind::Date => got == T::Date,
        ValueKind::PartialDate => matches!(got, T::Date | T::PartialDate),
        ValueKind::DateTime => matches!(got, T::Date | T::DateTime),
        ValueKind::Time => got == T::Time,
        ValueKind::Boolean => got == T::Boolean,
    }
}
