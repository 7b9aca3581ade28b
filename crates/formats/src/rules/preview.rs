//! What a user sees before saving a rules upload: one line per rule at each target, with what
//! its actions do, in the order they run, and when it runs.

use casebook_domain::rules::{ActionKind, InsertValue, RuleAction, RuleSet, RunPhase};
use serde::Serialize;

/// One rule at one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RulePreview {
    pub rule_oid: String,
    /// The rule's name (empty when the rule is not defined in the set).
    pub name: String,
    pub expression: String,
    pub target: String,
    /// What each action does, in execution order: `DiscrepancyNote when true: "…"`.
    pub actions: Vec<String>,
    /// The phases in which at least one action runs ([`RunPhase::label`]).
    pub runs_on: Vec<&'static str>,
    /// `HH:MM` when the assignment also runs daily.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
}

/// The previews of every rule reference, in file order.
#[must_use]
pub fn summary(set: &RuleSet) -> Vec<RulePreview> {
    set.rule_refs()
        .map(|(assignment, rule_ref)| {
            let def = set.rule(rule_ref.rule_oid.as_str());
            RulePreview {
                rule_oid: rule_ref.rule_oid.to_string(),
                name: def.map(|d| d.name.clone()).unwrap_or_default(),
                expression: def.map(|d| d.expression.clone()).unwrap_or_default(),
                target: assignment.target.clone(),
                actions: rule_ref.actions_in_execution_order().into_iter().map(describe).collect(),
                runs_on: RunPhase::ALL
                    .into_iter()
                    .filter(|p| rule_ref.actions.iter().any(|a| a.run.runs_in(*p)))
                    .map(RunPhase::label)
                    .collect(),
                schedule: assignment.run_on_schedule.map(|t| t.to_string()),
            }
        })
        .collect()
}

/// One action in words.
fn describe(action: &RuleAction) -> String {
    let head = format!("{} when {}", action.action_type().label(), action.if_expression_evaluates);
    let with_message = |paths: &[String], message: &str| {
        let paths = paths.join(", ");
        if message.is_empty() { paths } else { format!("{paths} (\"{message}\")") }
    };
    let body = match &action.kind {
        ActionKind::DiscrepancyNote { message } => format!("\"{message}\""),
        ActionKind::Email { message, to } => format!("to {to}: \"{message}\""),
        ActionKind::Notification { to, subject: Some(subject), message } => {
            format!("to {to}: \"{subject}\" — \"{message}\"")
        }
        ActionKind::Notification { to, subject: None, message } => format!("to {to}: \"{message}\""),
        ActionKind::Show { message, destinations } | ActionKind::Hide { message, destinations } => {
            with_message(destinations, message)
        }
        ActionKind::Insert { destinations } => destinations
            .iter()
            .map(|d| match &d.value {
                InsertValue::Value(v) => format!("{} = \"{v}\"", d.oid_path),
                InsertValue::Expression(e) => format!("{} = {e}", d.oid_path),
            })
            .collect::<Vec<_>>()
            .join("; "),
        ActionKind::Event { event_oid, run_on_status, destinations } => {
            let sets: Vec<String> =
                destinations.iter().map(|d| format!("{} = {}", d.property.keyword(), d.value_expression)).collect();
            format!("{event_oid} {} (while the event is {})", sets.join(", "), run_on_status.statuses().join(" or "))
        }
        ActionKind::Randomize { destinations } => format!("{} (not supported)", destinations.join(", ")),
    };
    format!("{head}: {body}")
}
