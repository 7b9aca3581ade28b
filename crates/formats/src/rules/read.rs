//! A rules file (OpenClinica `RuleImport`, reference §10.2) in: the [`RuleSet`] it defines and
//! every problem of its structure, each at its line and column.
//!
//! What is checked here needs only the file: elements and attributes (unknown ones, missing
//! required ones, one where one is allowed), booleans, times, OIDs, the syntax of targets,
//! expressions and destinations (`[ALL]` only in targets), `RuleRef`s to `RuleDef`s of the
//! file and duplicate `RuleDef` OIDs. Whether paths exist and expressions type-check needs the
//! study design: [`super::validate_rules`].
//!
//! Leniencies: elements may come in any order; attributes in `xsi:` and `xml:` are ignored,
//! other prefixed attributes are ignored with a warning; `InsertAction/@OID` (which says
//! nothing about the insert) is ignored with a warning. `RandomizeAction` is refused: Casebook
//! has no randomisation module, and a rule that silently does not randomise is worse than an
//! upload that says so.

use std::collections::HashMap;

use casebook_domain::expr::{self, EventProperty, ExprDiagnostic, NodeKind, Reference};
use casebook_domain::oid::Oid;
use casebook_domain::rules::{
    ActionKind, ActionType, EXPRESSION_CONTEXT, EventDestination, InsertDestination, InsertValue, RuleAction,
    RuleAssignment, RuleDef, RuleRef, RuleSet, RunFlags, RunOnStatus, RunPhase, TimeOfDay,
};

use super::tree::{self, El, Ns};
use crate::diagnostic::{Diagnostics, Location};
use crate::odm::read::{Lines, MAX_BYTES};

/// Reads a rules file: a `RuleImport` document, or an ODM file with OpenClinica rules sections
/// (`Rules`/`RuleImport` in the namespace [`super::RULES_NAMESPACE`]).
///
/// Returns the rules only when there is no error; the diagnostics hold every problem found
/// (errors and warnings), each with its line and column, in file order.
#[must_use]
pub fn read_rules(xml: &[u8]) -> (Option<RuleSet>, Diagnostics) {
    let mut d = Diagnostics::default();
    if xml.len() > MAX_BYTES {
        let mib = |n: usize| n.div_ceil(1024 * 1024);
        d.error(
            Location::File,
            format!("The file is {} MiB; rules files of at most {} MiB are read.", mib(xml.len()), mib(MAX_BYTES)),
        );
        return (None, d);
    }
    let lines = Lines::new(xml);
    let doc = match tree::parse(xml) {
        Ok(doc) => doc,
        Err((offset, message)) => {
            d.error(lines.at(offset), message);
            return (None, d);
        }
    };
    let mut reader = Reader { lines: &lines, d, refs: Vec::new(), defs: Vec::new() };
    if doc.sections.is_empty() {
        reader.error(
            doc.root.1,
            "This ODM file holds no OpenClinica rules: no <Rules> or <RuleImport> element in the rules namespace \
             (http://www.openclinica.org/ns/rules/v3.1).",
        );
    }
    let mut set = RuleSet::default();
    for section in &doc.sections {
        reader.section(section, &mut set);
    }
    reader.cross_check();
    let mut d = reader.d;
    d.0.sort_by_key(|diagnostic| match diagnostic.location {
        Location::Xml { line, column } => (line, column),
        _ => (0, 0),
    });
    if d.has_errors() { (None, d) } else { (Some(set), d) }
}

/// The action elements a `RuleRef` may hold.
const ACTION_ELEMENTS: [&str; 8] = [
    "DiscrepancyNoteAction",
    "EmailAction",
    "NotificationAction",
    "ShowAction",
    "HideAction",
    "InsertAction",
    "EventAction",
    "RandomizeAction",
];

/// `xs:boolean`: `true`, `false`, `1`, `0`.
fn boolean(text: &str) -> Option<bool> {
    match text.trim() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

struct Reader<'a> {
    lines: &'a Lines<'a>,
    d: Diagnostics,
    /// Every `RuleRef` OID with its position.
    refs: Vec<(Oid, usize)>,
    /// Every `RuleDef` OID with its position.
    defs: Vec<(Oid, usize)>,
}

impl Reader<'_> {
    fn error(&mut self, pos: usize, message: impl Into<String>) {
        self.d.error(self.lines.at(pos), message);
    }

    fn warning(&mut self, pos: usize, message: impl Into<String>) {
        self.d.warning(self.lines.at(pos), message);
    }

    // -----------------------------------------------------------------------------------------
    // Shape of elements.

    /// Reports unknown attributes and child elements, and text where only elements belong.
    fn check(&mut self, el: &El, attrs: &[&str], children: &[&str], text: bool) {
        for a in &el.attrs {
            match a.ns {
                Ns::None if attrs.contains(&a.name.as_str()) => {}
                Ns::None => {
                    let expected = if attrs.is_empty() { "it has none".to_owned() } else { attrs.join(", ") };
                    let hint =
                        expr::did_you_mean(&a.name, attrs).map(|s| format!(" Did you mean {s}?")).unwrap_or_default();
                    self.error(
                        el.pos,
                        format!("<{}> has an unknown attribute {}; expected: {expected}.{hint}", el.name, a.name),
                    );
                }
                Ns::Xsi | Ns::Xml => {}
                _ => self.warning(
                    el.pos,
                    format!(
                        "The attribute {} of <{}> is not part of OpenClinica rules; it is ignored.",
                        a.qname, el.name
                    ),
                ),
            }
        }
        for c in &el.children {
            let known = children.contains(&c.name.as_str());
            let namespaced_ok = matches!(c.ns, Ns::None | Ns::Rules | Ns::OpenClinica | Ns::Odm);
            if !(known && namespaced_ok) {
                let expected =
                    if children.is_empty() { "it holds no elements".to_owned() } else { children.join(", ") };
                let hint =
                    expr::did_you_mean(&c.name, children).map(|s| format!(" Did you mean {s}?")).unwrap_or_default();
                let what = if known { format!("<{}> in a foreign namespace", c.name) } else { format!("<{}>", c.name) };
                self.error(c.pos, format!("{what} is not part of <{}>; expected: {expected}.{hint}", el.name));
            }
        }
        if !text && !el.text.trim().is_empty() {
            self.error(el.text_pos.unwrap_or(el.pos), format!("<{}> holds text where only elements belong.", el.name));
        }
    }

    /// The child with this name when there is exactly one; reports repeats, and absence when
    /// required.
    fn one<'e>(&mut self, el: &'e El, name: &str, required: bool) -> Option<&'e El> {
        let mut found = el.children_named(name);
        let first = found.next();
        for extra in found {
            self.error(extra.pos, format!("<{name}> may appear only once in <{}>.", el.name));
        }
        if first.is_none() && required {
            self.error(el.pos, format!("<{}> has no <{name}>; it is required.", el.name));
        }
        first
    }

    /// A required attribute, trimmed and not empty.
    fn required_attr(&mut self, el: &El, name: &str) -> Option<String> {
        match el.attr(name).map(str::trim) {
            Some(v) if !v.is_empty() => Some(v.to_owned()),
            Some(_) => {
                self.error(el.pos, format!("The attribute {name} of <{}> is empty.", el.name));
                None
            }
            None => {
                self.error(el.pos, format!("<{}> has no {name} attribute; it is required.", el.name));
                None
            }
        }
    }

    /// A required boolean attribute (`xs:boolean`).
    fn flag(&mut self, el: &El, name: &str) -> Option<bool> {
        let Some(value) = el.attr(name) else {
            self.error(el.pos, format!("<{}> has no {name} attribute; it is required (true or false).", el.name));
            return None;
        };
        let parsed = boolean(value);
        if parsed.is_none() {
            self.error(el.pos, format!("{name}=\"{value}\" in <{}> is not a boolean: write true or false.", el.name));
        }
        parsed
    }

    /// An OID attribute.
    fn oid_attr(&mut self, el: &El, name: &str) -> Option<Oid> {
        let text = self.required_attr(el, name)?;
        match Oid::parse(&text) {
            Ok(oid) => Some(oid),
            Err(e) => {
                self.error(el.pos, format!("{name} of <{}>: {e}.", el.name));
                None
            }
        }
    }

    /// The trimmed text of a child holding only text; `None` when absent. A required child
    /// must be present and not empty.
    fn leaf_text(&mut self, el: &El, name: &str, required: bool) -> Option<String> {
        let child = self.one(el, name, required)?;
        self.check(child, &[], &[], true);
        let text = child.text.trim();
        if required && text.is_empty() {
            self.error(child.pos, format!("<{name}> in <{}> is empty.", el.name));
            return None;
        }
        Some(text.to_owned())
    }

    // -----------------------------------------------------------------------------------------
    // Expressions and paths.

    /// Where byte `offset` of an element's trimmed text is: exact when the text is verbatim in
    /// the file, else the element.
    fn text_location(&self, el: &El, offset: usize) -> (usize, bool) {
        match el.text_pos {
            Some(start) if el.text_verbatim => {
                let lead = el.text.len() - el.text.trim_start().len();
                (start + lead + offset, true)
            }
            _ => (el.pos, false),
        }
    }

    /// Reports expression diagnostics of an element's text.
    fn expr_errors(&mut self, el: &El, src: &str, diagnostics: &[ExprDiagnostic]) {
        for e in diagnostics.iter().filter(|e| e.is_error()) {
            let (pos, exact) = self.text_location(el, e.span.start);
            let at = if exact { String::new() } else { format!(" (at character {})", e.span.start + 1) };
            self.error(pos, format!("<{}> \"{src}\": {}{at}.", el.name, e.message.trim_end_matches('.')));
        }
    }

    /// The optional `Context` of a target or expression: OpenClinica's only one.
    fn context(&mut self, el: &El) {
        if let Some(c) = el.attr("Context")
            && c.trim() != EXPRESSION_CONTEXT
        {
            self.error(
                el.pos,
                format!("Context=\"{c}\" of <{}> is not a rule expression context; write {EXPRESSION_CONTEXT} or leave it out.", el.name),
            );
        }
    }

    /// The text of an element, not empty.
    fn required_text(&mut self, el: &El) -> Option<String> {
        let src = el.text.trim();
        if src.is_empty() {
            self.error(el.pos, format!("<{}> is empty.", el.name));
            return None;
        }
        Some(src.to_owned())
    }

    /// An expression (`Expression`, `ValueExpression`): its source, syntax checked; `[ALL]` is
    /// refused (it selects every row, which only a target may).
    fn expression(&mut self, el: &El) -> Option<String> {
        self.check(el, &["Context"], &[], true);
        self.context(el);
        let src = self.required_text(el)?;
        match expr::parse_oc_rule(&src) {
            Ok(parsed) => {
                let mut all_rows = Vec::new();
                parsed.root().walk(&mut |n| {
                    if let NodeKind::Ref(r) = &n.kind
                        && r.selects_all_rows()
                    {
                        all_rows.push((n.span.start, r.to_string()));
                    }
                });
                for (start, r) in all_rows {
                    let (pos, _) = self.text_location(el, start);
                    self.error(
                        pos,
                        format!(
                            "<{}> \"{src}\": {r} uses [ALL], which is only allowed in a rule target; select one row \
                             with [1], [2], … or [END].",
                            el.name
                        ),
                    );
                }
            }
            Err(errors) => self.expr_errors(el, &src, &errors),
        }
        Some(src)
    }

    /// `Target`: one OID path (`[ALL]` allowed) or an event property.
    fn target(&mut self, el: &El) -> Option<String> {
        self.check(el, &["Context"], &[], true);
        self.context(el);
        let src = self.required_text(el)?;
        if let Err(errors) = expr::parse_oc_target(&src) {
            self.expr_errors(el, &src, &errors);
        }
        Some(src)
    }

    /// `DestinationProperty/@OID` of a show, hide, insert or randomise action: an item path
    /// selecting at most one row.
    fn destination_path(&mut self, dp: &El, action: ActionType) -> Option<String> {
        let path = self.required_attr(dp, "OID")?;
        let problem = match expr::parse_oc_target(&path) {
            Err(errors) => errors.first().map(|e| e.message.clone()),
            Ok(Reference::OcEvent { .. }) => Some("this is an event property, not an item path".to_owned()),
            Ok(r) if r.selects_all_rows() => Some(
                "[ALL] is only allowed in a rule target; a destination is the target's row (no selector) or one row \
                 ([1], [END])"
                    .to_owned(),
            ),
            Ok(_) => None,
        };
        if let Some(problem) = problem {
            self.error(dp.pos, format!("{} destination OID=\"{path}\": {problem}.", action.element()));
        }
        Some(path)
    }

    // -----------------------------------------------------------------------------------------
    // The file's structure.

    fn section(&mut self, el: &El, set: &mut RuleSet) {
        self.check(el, &[], &["RuleAssignment", "RuleDef"], false);
        for child in &el.children {
            match child.name.as_str() {
                "RuleAssignment" => set.assignments.extend(self.assignment(child)),
                "RuleDef" => set.rule_defs.extend(self.rule_def(child)),
                _ => {}
            }
        }
    }

    fn assignment(&mut self, el: &El) -> Option<RuleAssignment> {
        self.check(el, &[], &["Target", "RunOnSchedule", "RuleRef"], false);
        let target = self.one(el, "Target", true).and_then(|t| self.target(t));
        let run_on_schedule = self.one(el, "RunOnSchedule", false).and_then(|s| self.schedule(s));
        let rule_refs: Vec<RuleRef> = el.children_named("RuleRef").filter_map(|r| self.rule_ref(r)).collect();
        if el.children_named("RuleRef").next().is_none() {
            self.error(el.pos, "<RuleAssignment> has no <RuleRef>: name at least one rule to run on the target.");
        }
        Some(RuleAssignment { target: target?, run_on_schedule, rule_refs })
    }

    fn schedule(&mut self, el: &El) -> Option<TimeOfDay> {
        self.check(el, &["Time"], &[], false);
        let time = self.required_attr(el, "Time")?;
        let parsed = TimeOfDay::parse(&time);
        if parsed.is_none() {
            self.error(
                el.pos,
                format!("Time=\"{time}\" of <RunOnSchedule> is not a time of day: write HH:MM, 00:00 to 23:59."),
            );
        }
        parsed
    }

    fn rule_ref(&mut self, el: &El) -> Option<RuleRef> {
        self.check(el, &["OID"], &ACTION_ELEMENTS, false);
        let oid = self.oid_attr(el, "OID");
        let actions: Vec<RuleAction> = el
            .children
            .iter()
            .filter_map(|c| ActionType::from_element(&c.name).map(|t| (c, t)))
            .filter_map(|(c, t)| self.action(c, t))
            .collect();
        let oid = oid?;
        if el.children.iter().all(|c| ActionType::from_element(&c.name).is_none()) {
            self.warning(el.pos, format!("RuleRef {oid} has no action, so the rule does nothing."));
        }
        self.refs.push((oid.clone(), el.pos));
        Some(RuleRef { rule_oid: oid, actions })
    }

    fn action(&mut self, el: &El, ty: ActionType) -> Option<RuleAction> {
        let attrs: &[&str] = match ty {
            ActionType::Event | ActionType::Insert | ActionType::Randomize => &["IfExpressionEvaluates", "OID"],
            _ => &["IfExpressionEvaluates"],
        };
        let children: &[&str] = match ty {
            ActionType::DiscrepancyNote => &["Run", "Message"],
            ActionType::Email => &["Run", "Message", "To"],
            ActionType::Notification => &["To", "Subject", "Message"],
            ActionType::Show | ActionType::Hide => &["Run", "Message", "DestinationProperty"],
            ActionType::Insert => &["Run", "DestinationProperty"],
            ActionType::Event => &["RunOnStatus", "EventDestination"],
            ActionType::Randomize => &["Run", "DestinationProperty", "StratificationFactors"],
        };
        self.check(el, attrs, children, false);
        let when = self.flag(el, "IfExpressionEvaluates");
        let run = match self.one(el, "Run", false).filter(|_| ty.has_run_flags()) {
            Some(r) => self.run(r),
            None => Some(RunFlags::ALL),
        };
        let kind = self.action_kind(el, ty);
        Some(RuleAction { if_expression_evaluates: when?, run: run?, kind: kind? })
    }

    fn action_kind(&mut self, el: &El, ty: ActionType) -> Option<ActionKind> {
        match ty {
            ActionType::DiscrepancyNote => {
                Some(ActionKind::DiscrepancyNote { message: self.leaf_text(el, "Message", true)? })
            }
            ActionType::Email => {
                let message = self.leaf_text(el, "Message", true);
                let to = self.leaf_text(el, "To", true);
                Some(ActionKind::Email { message: message?, to: to? })
            }
            ActionType::Notification => {
                let to = self.leaf_text(el, "To", true);
                let subject = self.leaf_text(el, "Subject", false).filter(|s| !s.is_empty());
                let message = self.leaf_text(el, "Message", true);
                Some(ActionKind::Notification { to: to?, subject, message: message? })
            }
            ActionType::Show | ActionType::Hide => {
                let message = self.leaf_text(el, "Message", false).unwrap_or_default();
                let destinations = self.destination_paths(el, ty, &["OID"])?;
                Some(if ty == ActionType::Show {
                    ActionKind::Show { message, destinations }
                } else {
                    ActionKind::Hide { message, destinations }
                })
            }
            ActionType::Insert => {
                if el.attr("OID").is_some() {
                    self.warning(el.pos, "The OID attribute of <InsertAction> is not used; it is ignored.");
                }
                Some(ActionKind::Insert { destinations: self.insert_destinations(el)? })
            }
            ActionType::Event => self.event_action(el),
            ActionType::Randomize => {
                self.error(
                    el.pos,
                    "<RandomizeAction> is not supported: Casebook has no randomisation module, so the participant \
                     would not be randomised. Remove the action and randomise outside Casebook.",
                );
                Some(ActionKind::Randomize { destinations: self.destination_paths(el, ty, &["OID"])? })
            }
        }
    }

    fn destination_paths(&mut self, el: &El, ty: ActionType, attrs: &[&str]) -> Option<Vec<String>> {
        let mut paths = Vec::new();
        for dp in el.children_named("DestinationProperty") {
            self.check(dp, attrs, &[], false);
            paths.extend(self.destination_path(dp, ty));
        }
        if el.children_named("DestinationProperty").next().is_none() {
            self.error(el.pos, format!("<{}> has no <DestinationProperty>: name the items it acts on.", el.name));
            return None;
        }
        Some(paths)
    }

    fn insert_destinations(&mut self, el: &El) -> Option<Vec<InsertDestination>> {
        let mut out = Vec::new();
        for dp in el.children_named("DestinationProperty") {
            self.check(dp, &["OID", "Value"], &["ValueExpression"], false);
            let path = self.destination_path(dp, ActionType::Insert);
            let expression = self.one(dp, "ValueExpression", false);
            let value = match (dp.attr("Value"), expression) {
                (Some(v), None) => Some(InsertValue::Value(v.trim().to_owned())),
                (None, Some(e)) => self.expression(e).map(InsertValue::Expression),
                (Some(_), Some(_)) => {
                    self.error(dp.pos, "<DestinationProperty> has both a Value and a <ValueExpression>; give one.");
                    None
                }
                (None, None) => {
                    self.error(
                        dp.pos,
                        "<DestinationProperty> has neither a Value nor a <ValueExpression>: say what to insert.",
                    );
                    None
                }
            };
            if let (Some(oid_path), Some(value)) = (path, value) {
                out.push(InsertDestination { oid_path, value });
            }
        }
        if el.children_named("DestinationProperty").next().is_none() {
            self.error(el.pos, "<InsertAction> has no <DestinationProperty>: name the items it writes.");
            return None;
        }
        Some(out)
    }

    fn event_action(&mut self, el: &El) -> Option<ActionKind> {
        let event_oid = self.oid_attr(el, "OID");
        let run_on_status = match self.one(el, "RunOnStatus", false) {
            Some(r) => self.run_on_status(r),
            None => Some(RunOnStatus::default()),
        };
        let mut destinations: Vec<EventDestination> = Vec::new();
        for ed in el.children_named("EventDestination") {
            if let Some(dest) = self.event_destination(ed) {
                if destinations.iter().any(|d| d.property == dest.property) {
                    self.error(ed.pos, format!("<EventAction> sets {} twice.", dest.property.keyword()));
                }
                destinations.push(dest);
            }
        }
        if el.children_named("EventDestination").next().is_none() {
            self.error(el.pos, "<EventAction> has no <EventDestination>: say what to set (STARTDATE or STATUS).");
        }
        Some(ActionKind::Event { event_oid: event_oid?, run_on_status: run_on_status?, destinations })
    }

    fn event_destination(&mut self, el: &El) -> Option<EventDestination> {
        self.check(el, &["Property"], &["ValueExpression"], false);
        let property = self.required_attr(el, "Property").and_then(|p| {
            let parsed = EventProperty::parse(&p);
            if parsed.is_none() {
                self.error(el.pos, format!("Property=\"{p}\" of <EventDestination> is not STARTDATE or STATUS."));
            }
            parsed
        });
        let value = self.one(el, "ValueExpression", true).and_then(|v| self.expression(v));
        Some(EventDestination { property: property?, value_expression: value? })
    }

    fn run(&mut self, el: &El) -> Option<RunFlags> {
        let names = RunPhase::ALL.map(RunPhase::attribute);
        self.check(el, &names, &[], false);
        let mut flags = Some(RunFlags::NONE);
        for phase in RunPhase::ALL {
            let on = self.flag(el, phase.attribute());
            flags = flags.zip(on).map(|(f, on)| f.with(phase, on));
        }
        flags
    }

    fn run_on_status(&mut self, el: &El) -> Option<RunOnStatus> {
        self.check(el, &RunOnStatus::ATTRIBUTES, &[], false);
        let mut status = Some(RunOnStatus::default());
        for name in RunOnStatus::ATTRIBUTES {
            if el.attr(name).is_some() {
                let on = self.flag(el, name);
                status = status.zip(on).and_then(|(s, on)| s.with(name, on));
            }
        }
        status
    }

    fn rule_def(&mut self, el: &El) -> Option<RuleDef> {
        self.check(el, &["OID", "Name"], &["Description", "Expression"], false);
        let oid = self.oid_attr(el, "OID");
        let name = self.required_attr(el, "Name");
        let description = self.leaf_text(el, "Description", false).filter(|d| !d.is_empty());
        let expression = self.one(el, "Expression", true).and_then(|e| self.expression(e));
        let oid = oid?;
        self.defs.push((oid.clone(), el.pos));
        Some(RuleDef { oid, name: name?, description, expression: expression? })
    }

    /// Duplicate `RuleDef` OIDs, `RuleRef`s to no `RuleDef`, `RuleDef`s nothing uses.
    fn cross_check(&mut self) {
        let mut first: HashMap<Oid, usize> = HashMap::new();
        for (oid, pos) in std::mem::take(&mut self.defs) {
            if let Some(earlier) = first.get(&oid) {
                let at = self.lines.at(*earlier);
                self.error(pos, format!("RuleDef {oid} is defined twice (first at {at})."));
            } else {
                first.insert(oid, pos);
            }
        }
        let mut known: Vec<&str> = first.keys().map(Oid::as_str).collect();
        known.sort_unstable();
        let mut problems = Vec::new();
        for (oid, pos) in &self.refs {
            if !first.contains_key(oid) {
                let hint =
                    expr::did_you_mean(oid.as_str(), &known).map(|s| format!(" Did you mean {s}?")).unwrap_or_default();
                problems.push((*pos, format!("RuleRef {oid} refers to no RuleDef in this file.{hint}")));
            }
        }
        for (pos, message) in problems {
            self.error(pos, message);
        }
        let mut unused: Vec<(usize, String)> = first
            .iter()
            .filter(|(oid, _)| !self.refs.iter().any(|(r, _)| r == *oid))
            .map(|(oid, pos)| (*pos, format!("RuleDef {oid} is not used by any RuleAssignment.")))
            .collect();
        unused.sort();
        for (pos, message) in unused {
            self.warning(pos, message);
        }
    }
}
