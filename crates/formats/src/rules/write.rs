//! A [`RuleSet`] out as a rules file (`RuleImport`), which [`super::read_rules`] reads back to
//! the same set.
//!
//! Every action that takes `<Run>` gets one with all five attributes (OpenClinica requires
//! them), and every event action a `<RunOnStatus>` with all six; targets and expressions carry
//! `Context="OC_RULES_V1"`. Markup is written only through quick-xml events, which escape
//! attribute values and text.

use std::io;

use casebook_domain::rules::{
    ActionKind, EXPRESSION_CONTEXT, InsertValue, RuleAction, RuleAssignment, RuleDef, RuleSet, RunPhase,
};
use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};

/// The rule set as a `RuleImport` document (UTF-8, indented by two spaces).
#[must_use]
pub fn write_rules(set: &RuleSet) -> String {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    // Writing to a Vec cannot fail, and quick-xml writes UTF-8 from &str.
    let written = w
        .write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
        .and_then(|()| RulesWriter { w: &mut w, prefix: "" }.rule_import(set, "RuleImport"));
    debug_assert!(written.is_ok());
    String::from_utf8(w.into_inner()).unwrap_or_default()
}

/// The prefix [`write_rules_embedded`] binds to [`super::RULES_NAMESPACE`]; the enclosing
/// document must declare it (`xmlns:OpenClinicaRules="…"`).
pub const EMBEDDED_PREFIX: &str = "OpenClinicaRules";

/// Writes the rule set inside another document (ODM metadata, in `MetaDataVersion`) as
/// `<OpenClinicaRules:Rules>`, which [`super::read_rules`] reads like a `RuleImport`.
///
/// # Errors
/// When the underlying writer fails.
pub fn write_rules_embedded<W: io::Write>(w: &mut Writer<W>, set: &RuleSet) -> io::Result<()> {
    RulesWriter { w, prefix: "OpenClinicaRules:" }.rule_import(set, "Rules")
}

/// Writes the elements of a rules document, their names prefixed by `prefix` (empty in a
/// `RuleImport` file, `OpenClinicaRules:` when embedded in ODM).
struct RulesWriter<'w, W: io::Write> {
    w: &'w mut Writer<W>,
    prefix: &'static str,
}

type Attrs<'a> = Vec<(&'a str, &'a str)>;

impl<W: io::Write> RulesWriter<'_, W> {
    fn tag(&self, name: &str, attrs: &Attrs<'_>) -> BytesStart<'static> {
        let mut tag = BytesStart::new(format!("{}{name}", self.prefix));
        for (key, value) in attrs {
            tag.push_attribute((*key, *value));
        }
        tag
    }

    fn open(&mut self, name: &str, attrs: &Attrs<'_>) -> io::Result<()> {
        let tag = self.tag(name, attrs);
        self.w.write_event(Event::Start(tag))
    }

    fn close(&mut self, name: &str) -> io::Result<()> {
        self.w.write_event(Event::End(BytesEnd::new(format!("{}{name}", self.prefix))))
    }

    fn empty(&mut self, name: &str, attrs: &Attrs<'_>) -> io::Result<()> {
        let tag = self.tag(name, attrs);
        self.w.write_event(Event::Empty(tag))
    }

    /// An element holding only text.
    fn leaf(&mut self, name: &str, attrs: &Attrs<'_>, text: &str) -> io::Result<()> {
        self.open(name, attrs)?;
        self.w.write_event(Event::Text(BytesText::new(text)))?;
        self.close(name)
    }

    fn expression(&mut self, name: &str, source: &str) -> io::Result<()> {
        self.leaf(name, &vec![("Context", EXPRESSION_CONTEXT)], source)
    }

    fn rule_import(&mut self, set: &RuleSet, root: &str) -> io::Result<()> {
        self.open(root, &Vec::new())?;
        for a in &set.assignments {
            self.assignment(a)?;
        }
        for r in &set.rule_defs {
            self.rule_def(r)?;
        }
        self.close(root)
    }

    fn assignment(&mut self, a: &RuleAssignment) -> io::Result<()> {
        self.open("RuleAssignment", &Vec::new())?;
        self.expression("Target", &a.target)?;
        if let Some(t) = a.run_on_schedule {
            self.empty("RunOnSchedule", &vec![("Time", &t.to_string())])?;
        }
        for r in &a.rule_refs {
            self.open("RuleRef", &vec![("OID", r.rule_oid.as_str())])?;
            for action in &r.actions {
                self.action(action)?;
            }
            self.close("RuleRef")?;
        }
        self.close("RuleAssignment")
    }

    fn action(&mut self, action: &RuleAction) -> io::Result<()> {
        let ty = action.action_type();
        let element = ty.element();
        let when = if action.if_expression_evaluates { "true" } else { "false" };
        let mut attrs = vec![("IfExpressionEvaluates", when)];
        if let ActionKind::Event { event_oid, .. } = &action.kind {
            attrs.push(("OID", event_oid.as_str()));
        }
        self.open(element, &attrs)?;
        if ty.has_run_flags() {
            let flags: Vec<(&str, &str)> = RunPhase::ALL
                .iter()
                .map(|p| (p.attribute(), if action.run.runs_in(*p) { "true" } else { "false" }))
                .collect();
            self.empty("Run", &flags)?;
        }
        self.action_body(&action.kind)?;
        self.close(element)
    }

    fn action_body(&mut self, kind: &ActionKind) -> io::Result<()> {
        let none = Vec::new();
        match kind {
            ActionKind::DiscrepancyNote { message } => self.leaf("Message", &none, message),
            ActionKind::Email { message, to } => {
                self.leaf("Message", &none, message)?;
                self.leaf("To", &none, to)
            }
            ActionKind::Notification { to, subject, message } => {
                self.leaf("To", &none, to)?;
                if let Some(s) = subject {
                    self.leaf("Subject", &none, s)?;
                }
                self.leaf("Message", &none, message)
            }
            ActionKind::Show { message, destinations } | ActionKind::Hide { message, destinations } => {
                if !message.is_empty() {
                    self.leaf("Message", &none, message)?;
                }
                self.destinations(destinations)
            }
            ActionKind::Randomize { destinations } => self.destinations(destinations),
            ActionKind::Insert { destinations } => {
                for d in destinations {
                    match &d.value {
                        InsertValue::Value(v) => {
                            self.empty("DestinationProperty", &vec![("OID", d.oid_path.as_str()), ("Value", v)])?;
                        }
                        InsertValue::Expression(e) => {
                            self.open("DestinationProperty", &vec![("OID", d.oid_path.as_str())])?;
                            self.expression("ValueExpression", e)?;
                            self.close("DestinationProperty")?;
                        }
                    }
                }
                Ok(())
            }
            ActionKind::Event { run_on_status, destinations, .. } => {
                let flags: Vec<(&str, &str)> = run_on_status
                    .flags()
                    .iter()
                    .map(|(name, on)| (*name, if *on { "true" } else { "false" }))
                    .collect();
                self.empty("RunOnStatus", &flags)?;
                for d in destinations {
                    self.open("EventDestination", &vec![("Property", d.property.keyword())])?;
                    self.expression("ValueExpression", &d.value_expression)?;
                    self.close("EventDestination")?;
                }
                Ok(())
            }
        }
    }

    fn destinations(&mut self, paths: &[String]) -> io::Result<()> {
        for p in paths {
            self.empty("DestinationProperty", &vec![("OID", p.as_str())])?;
        }
        Ok(())
    }

    fn rule_def(&mut self, r: &RuleDef) -> io::Result<()> {
        self.open("RuleDef", &vec![("OID", r.oid.as_str()), ("Name", r.name.as_str())])?;
        if let Some(d) = &r.description {
            self.leaf("Description", &Vec::new(), d)?;
        }
        self.expression("Expression", &r.expression)?;
        self.close("RuleDef")
    }
}
