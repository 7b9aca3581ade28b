//! OpenClinica 3 rules as data: what a rules file (`RuleImport`) says, without running it
//! (reference `openclinica-data-model.md` §10).
//!
//! A [`RuleSet`] holds rule definitions ([`RuleDef`]: an OID, a name and a boolean expression)
//! and assignments ([`RuleAssignment`]: a target — an item path or an event property — the
//! rules evaluated there, and for each rule the actions fired when its expression gives `true`
//! or `false`). Targets, expressions and destinations are kept as the source text the data
//! manager wrote; `casebook_formats::rules` reads, checks against a design and writes them, and
//! whatever runs rules parses them once with [`crate::expr`] (dialect `OcRule`).
//!
//! Decisions:
//! - **Run flags.** OpenClinica requires the five `Run` attributes when `<Run>` is written; a
//!   missing `<Run>` means every phase ([`RunFlags::ALL`]). Event and notification actions
//!   have no `<Run>` (an event action runs whenever the target event's status allows it, see
//!   [`RunOnStatus`]); their `run` is always [`RunFlags::ALL`].
//! - **Randomize** is modelled (so every action type has its OpenClinica id and place in the
//!   execution order) but Casebook has no randomisation module: the reader refuses it.
//! - Insert destinations carry either a literal value or an expression, never both
//!   ([`InsertValue`]), so an ambiguous destination cannot be represented.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::expr::EventProperty;
use crate::oid::Oid;

/// The expression context OpenClinica writes on `Target`, `Expression` and `ValueExpression`.
pub const EXPRESSION_CONTEXT: &str = "OC_RULES_V1";

/// The event statuses a rule may test or set with `SE_….STATUS` (reference §10.3).
pub const EVENT_STATUS_LITERALS: [&str; 8] =
    ["not_scheduled", "scheduled", "data_entry_started", "completed", "stopped", "skipped", "locked", "signed"];

/// Everything one rules file defines.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSet {
    /// Rule definitions in file order.
    pub rule_defs: Vec<RuleDef>,
    /// Where rules run and what they do, in file order.
    pub assignments: Vec<RuleAssignment>,
}

impl RuleSet {
    /// The rule definition with this OID.
    #[must_use]
    pub fn rule(&self, oid: &str) -> Option<&RuleDef> {
        self.rule_defs.iter().find(|r| r.oid.as_str() == oid)
    }

    /// Every rule reference with the assignment it belongs to, in file order.
    pub fn rule_refs(&self) -> impl Iterator<Item = (&RuleAssignment, &RuleRef)> {
        self.assignments.iter().flat_map(|a| a.rule_refs.iter().map(move |r| (a, r)))
    }
}

/// A rule definition (`RuleDef`): a named boolean expression, usable by several assignments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleDef {
    pub oid: Oid,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The expression as written, e.g. `I_VITAL_DIA gte I_VITAL_SYS`.
    pub expression: String,
}

/// Where rules run (`RuleAssignment`, OpenClinica's rule set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleAssignment {
    /// An item path (`SE_BASELINE.F_VITAL_SIGNS.IG_VITAL_VS.I_VITAL_DIA`, shorter suffixes and
    /// repeat selectors allowed) or an event property (`SE_BASELINE.STARTDATE`).
    pub target: String,
    /// Also run daily at this time (`RunOnSchedule/@Time`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_on_schedule: Option<TimeOfDay>,
    pub rule_refs: Vec<RuleRef>,
}

/// A time of day, `HH:MM` (00:00 to 23:59).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeOfDay {
    hour: u8,
    minute: u8,
}

impl TimeOfDay {
    /// Parses `HH:MM` (two digits each, 00:00 to 23:59).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let (h, m) = text.trim().split_once(':')?;
        let two_digits =
            |s: &str| (s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<u8>().ok());
        let (hour, minute) = (two_digits(h)??, two_digits(m)??);
        (hour < 24 && minute < 60).then_some(Self { hour, minute })
    }

    #[must_use]
    pub fn hour(self) -> u8 {
        self.hour
    }

    #[must_use]
    pub fn minute(self) -> u8 {
        self.minute
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

impl TryFrom<String> for TimeOfDay {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).ok_or_else(|| format!("'{s}' is not a time of day HH:MM"))
    }
}

impl From<TimeOfDay> for String {
    fn from(t: TimeOfDay) -> String {
        t.to_string()
    }
}

/// One rule evaluated at an assignment's target, with its actions (`RuleRef`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRef {
    pub rule_oid: Oid,
    /// Actions in file order; see [`RuleRef::actions_in_execution_order`].
    pub actions: Vec<RuleAction>,
}

impl RuleRef {
    /// The actions in the order OpenClinica runs them: by type ([`ActionType::EXECUTION_ORDER`]),
    /// file order within a type.
    #[must_use]
    pub fn actions_in_execution_order(&self) -> Vec<&RuleAction> {
        let mut actions: Vec<&RuleAction> = self.actions.iter().collect();
        actions.sort_by_key(|a| a.action_type().execution_rank());
        actions
    }
}

/// What a rule does when its expression gives [`RuleAction::if_expression_evaluates`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleAction {
    /// Fire when the expression is true (`true`) or false (`false`); never when it is unknown
    /// (an operand it needs is empty).
    pub if_expression_evaluates: bool,
    /// The phases it runs in (always [`RunFlags::ALL`] for event and notification actions).
    pub run: RunFlags,
    pub kind: ActionKind,
}

impl RuleAction {
    #[must_use]
    pub fn action_type(&self) -> ActionType {
        self.kind.action_type()
    }
}

/// The phases in which an action runs (`Run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RunFlags {
    pub administrative_data_entry: bool,
    pub initial_data_entry: bool,
    pub double_data_entry: bool,
    pub import_data_entry: bool,
    pub batch: bool,
}

impl RunFlags {
    /// Every phase: what a missing `<Run>` means.
    pub const ALL: Self = Self {
        administrative_data_entry: true,
        initial_data_entry: true,
        double_data_entry: true,
        import_data_entry: true,
        batch: true,
    };

    /// Every phase off.
    pub const NONE: Self = Self {
        administrative_data_entry: false,
        initial_data_entry: false,
        double_data_entry: false,
        import_data_entry: false,
        batch: false,
    };

    /// Whether the action runs in a phase.
    #[must_use]
    pub fn runs_in(&self, phase: RunPhase) -> bool {
        match phase {
            RunPhase::AdministrativeDataEntry => self.administrative_data_entry,
            RunPhase::InitialDataEntry => self.initial_data_entry,
            RunPhase::DoubleDataEntry => self.double_data_entry,
            RunPhase::ImportDataEntry => self.import_data_entry,
            RunPhase::Batch => self.batch,
        }
    }

    /// The same flags with one phase switched on or off.
    #[must_use]
    pub fn with(mut self, phase: RunPhase, on: bool) -> Self {
        let flag = match phase {
            RunPhase::AdministrativeDataEntry => &mut self.administrative_data_entry,
            RunPhase::InitialDataEntry => &mut self.initial_data_entry,
            RunPhase::DoubleDataEntry => &mut self.double_data_entry,
            RunPhase::ImportDataEntry => &mut self.import_data_entry,
            RunPhase::Batch => &mut self.batch,
        };
        *flag = on;
        self
    }

    /// The phases switched on, in [`RunPhase::ALL`] order.
    pub fn phases(self) -> impl Iterator<Item = RunPhase> {
        RunPhase::ALL.into_iter().filter(move |p| self.runs_in(*p))
    }
}

/// A phase in which rules run (reference §10.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunPhase {
    /// Editing a completed form.
    AdministrativeDataEntry,
    /// First data entry.
    InitialDataEntry,
    /// The second pass of double data entry.
    DoubleDataEntry,
    /// ODM data import.
    ImportDataEntry,
    /// A manual "run rules" over existing data.
    Batch,
}

impl RunPhase {
    pub const ALL: [Self; 5] = [
        Self::AdministrativeDataEntry,
        Self::InitialDataEntry,
        Self::DoubleDataEntry,
        Self::ImportDataEntry,
        Self::Batch,
    ];

    /// The `Run` attribute of the phase.
    #[must_use]
    pub fn attribute(self) -> &'static str {
        match self {
            Self::AdministrativeDataEntry => "AdministrativeDataEntry",
            Self::InitialDataEntry => "InitialDataEntry",
            Self::DoubleDataEntry => "DoubleDataEntry",
            Self::ImportDataEntry => "ImportDataEntry",
            Self::Batch => "Batch",
        }
    }

    /// What a user reads.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::AdministrativeDataEntry => "administrative editing",
            Self::InitialDataEntry => "initial data entry",
            Self::DoubleDataEntry => "double data entry",
            Self::ImportDataEntry => "data import",
            Self::Batch => "batch run",
        }
    }
}

/// What an action does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ActionKind {
    /// Opens a failed-validation-check note on the target item.
    DiscrepancyNote { message: String },
    /// Sends an e-mail to a comma-separated list of addresses.
    Email { message: String, to: String },
    /// Notifies participants or users (OpenClinica Participate).
    Notification {
        to: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subject: Option<String>,
        message: String,
    },
    /// Shows items (OID paths) on the form; `message` may be empty.
    Show { message: String, destinations: Vec<String> },
    /// Hides items (OID paths) on the form; `message` may be empty.
    Hide { message: String, destinations: Vec<String> },
    /// Writes values into items.
    Insert { destinations: Vec<InsertDestination> },
    /// Schedules an event or sets its status (`EventAction`).
    Event {
        event_oid: Oid,
        #[serde(default)]
        run_on_status: RunOnStatus,
        destinations: Vec<EventDestination>,
    },
    /// Randomises the participant into the item paths given (refused by the reader: Casebook
    /// has no randomisation module).
    Randomize { destinations: Vec<String> },
}

impl ActionKind {
    #[must_use]
    pub fn action_type(&self) -> ActionType {
        match self {
            Self::DiscrepancyNote { .. } => ActionType::DiscrepancyNote,
            Self::Email { .. } => ActionType::Email,
            Self::Notification { .. } => ActionType::Notification,
            Self::Show { .. } => ActionType::Show,
            Self::Hide { .. } => ActionType::Hide,
            Self::Insert { .. } => ActionType::Insert,
            Self::Event { .. } => ActionType::Event,
            Self::Randomize { .. } => ActionType::Randomize,
        }
    }
}

/// An item an [`ActionKind::Insert`] writes, and what it writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InsertDestination {
    /// The item's OID path.
    pub oid_path: String,
    pub value: InsertValue,
}

/// What an insert writes: a literal (`DestinationProperty/@Value`) or the result of an
/// expression (`ValueExpression`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InsertValue {
    /// The text to store (empty: clear the item).
    Value(String),
    /// An expression over the target's data, e.g. `SE_BASELINE.F_VITAL_SIGNS.IG_VITAL_VS.I_VITAL_WEIGHT`.
    Expression(String),
}

/// An event property an [`ActionKind::Event`] sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventDestination {
    /// `STARTDATE` or `STATUS`.
    pub property: EventProperty,
    /// The new value: a date expression (`I_VITAL_VS_DATE + 28`) or a status literal.
    pub value_expression: String,
}

/// The statuses of the action's event in which an [`ActionKind::Event`] runs (`RunOnStatus`).
/// By default it runs while the event is not scheduled or scheduled, not once data entry has
/// started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RunOnStatus {
    pub not_scheduled: bool,
    pub scheduled: bool,
    pub data_entry_started: bool,
    pub completed: bool,
    pub skipped: bool,
    pub stopped: bool,
}

impl Default for RunOnStatus {
    fn default() -> Self {
        Self {
            not_scheduled: true,
            scheduled: true,
            data_entry_started: false,
            completed: false,
            skipped: false,
            stopped: false,
        }
    }
}

impl RunOnStatus {
    /// The attribute names (which are also the status names), in order.
    pub const ATTRIBUTES: [&'static str; 6] =
        ["not_scheduled", "scheduled", "data_entry_started", "completed", "skipped", "stopped"];

    /// Each status with whether the action runs in it, in [`Self::ATTRIBUTES`] order.
    #[must_use]
    pub fn flags(&self) -> [(&'static str, bool); 6] {
        let [a, b, c, d, e, f] = Self::ATTRIBUTES;
        [
            (a, self.not_scheduled),
            (b, self.scheduled),
            (c, self.data_entry_started),
            (d, self.completed),
            (e, self.skipped),
            (f, self.stopped),
        ]
    }

    /// The same flags with one status set; `None` for a name not in [`Self::ATTRIBUTES`].
    #[must_use]
    pub fn with(mut self, status: &str, on: bool) -> Option<Self> {
        let flag = match status {
            "not_scheduled" => &mut self.not_scheduled,
            "scheduled" => &mut self.scheduled,
            "data_entry_started" => &mut self.data_entry_started,
            "completed" => &mut self.completed,
            "skipped" => &mut self.skipped,
            "stopped" => &mut self.stopped,
            _ => return None,
        };
        *flag = on;
        Some(self)
    }

    /// The statuses in which the action runs.
    #[must_use]
    pub fn statuses(&self) -> Vec<&'static str> {
        self.flags().into_iter().filter(|(_, on)| *on).map(|(s, _)| s).collect()
    }
}

/// The kinds of action, with OpenClinica's ids (`rule_action.action_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionType {
    DiscrepancyNote,
    Email,
    Show,
    Insert,
    Hide,
    Event,
    Notification,
    Randomize,
}

impl ActionType {
    /// The order in which a rule's actions run: e-mails first, randomisation last.
    pub const EXECUTION_ORDER: [Self; 8] = [
        Self::Email,
        Self::DiscrepancyNote,
        Self::Insert,
        Self::Show,
        Self::Hide,
        Self::Event,
        Self::Notification,
        Self::Randomize,
    ];

    /// OpenClinica's action type id (1 to 8).
    #[must_use]
    pub fn id(self) -> u8 {
        match self {
            Self::DiscrepancyNote => 1,
            Self::Email => 2,
            Self::Show => 3,
            Self::Insert => 4,
            Self::Hide => 5,
            Self::Event => 6,
            Self::Notification => 7,
            Self::Randomize => 8,
        }
    }

    /// The type with an OpenClinica id.
    #[must_use]
    pub fn from_id(id: u8) -> Option<Self> {
        Self::EXECUTION_ORDER.into_iter().find(|t| t.id() == id)
    }

    /// Its place in [`Self::EXECUTION_ORDER`] (0 runs first).
    #[must_use]
    pub fn execution_rank(self) -> usize {
        Self::EXECUTION_ORDER.iter().position(|t| *t == self).unwrap_or(usize::MAX)
    }

    /// The element of a rules file (`DiscrepancyNoteAction`, …).
    #[must_use]
    pub fn element(self) -> &'static str {
        match self {
            Self::DiscrepancyNote => "DiscrepancyNoteAction",
            Self::Email => "EmailAction",
            Self::Show => "ShowAction",
            Self::Insert => "InsertAction",
            Self::Hide => "HideAction",
            Self::Event => "EventAction",
            Self::Notification => "NotificationAction",
            Self::Randomize => "RandomizeAction",
        }
    }

    /// The type written as an element.
    #[must_use]
    pub fn from_element(name: &str) -> Option<Self> {
        Self::EXECUTION_ORDER.into_iter().find(|t| t.element() == name)
    }

    /// The name shown to users.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::DiscrepancyNote => "DiscrepancyNote",
            Self::Email => "Email",
            Self::Show => "Show",
            Self::Insert => "Insert",
            Self::Hide => "Hide",
            Self::Event => "Event",
            Self::Notification => "Notification",
            Self::Randomize => "Randomize",
        }
    }

    /// Whether the action takes a `<Run>` element (event and notification actions do not).
    #[must_use]
    pub fn has_run_flags(self) -> bool {
        !matches!(self, Self::Event | Self::Notification)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oid(s: &str) -> Oid {
        Oid::parse(s).unwrap()
    }

    fn action(kind: ActionKind) -> RuleAction {
        RuleAction { if_expression_evaluates: true, run: RunFlags::ALL, kind }
    }

    #[test]
    fn action_type_ids_follow_openclinica() {
        let ids: Vec<(ActionType, u8)> = ActionType::EXECUTION_ORDER.iter().map(|t| (*t, t.id())).collect();
        assert_eq!(
            ids,
            [
                (ActionType::Email, 2),
                (ActionType::DiscrepancyNote, 1),
                (ActionType::Insert, 4),
                (ActionType::Show, 3),
                (ActionType::Hide, 5),
                (ActionType::Event, 6),
                (ActionType::Notification, 7),
                (ActionType::Randomize, 8),
            ]
        );
        for id in 1..=8 {
            assert_eq!(ActionType::from_id(id).map(ActionType::id), Some(id));
        }
        assert_eq!(ActionType::from_id(9), None);
        assert_eq!(ActionType::from_element("HideAction"), Some(ActionType::Hide));
    }

    #[test]
    fn actions_run_in_openclinica_order_keeping_file_order_within_a_type() {
        let rule = RuleRef {
            rule_oid: oid("R_1"),
            actions: vec![
                action(ActionKind::Hide { message: String::new(), destinations: vec!["I_B".into()] }),
                action(ActionKind::DiscrepancyNote { message: "first".into() }),
                action(ActionKind::Email { message: "m".into(), to: "a@b.c".into() }),
                action(ActionKind::DiscrepancyNote { message: "second".into() }),
                action(ActionKind::Show { message: String::new(), destinations: vec!["I_A".into()] }),
            ],
        };
        let order: Vec<String> = rule
            .actions_in_execution_order()
            .iter()
            .map(|a| match &a.kind {
                ActionKind::DiscrepancyNote { message } => format!("DN {message}"),
                other => other.action_type().label().to_owned(),
            })
            .collect();
        assert_eq!(order, ["Email", "DN first", "DN second", "Show", "Hide"]);
    }

    #[test]
    fn time_of_day_parses_hh_mm_only() {
        assert_eq!(TimeOfDay::parse("02:30").map(|t| t.to_string()).as_deref(), Some("02:30"));
        assert_eq!(TimeOfDay::parse("23:59").map(|t| (t.hour(), t.minute())), Some((23, 59)));
        for bad in ["24:00", "2:30", "02:60", "0230", "02:30:00", "", "aa:bb"] {
            assert_eq!(TimeOfDay::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn run_flags_and_statuses() {
        let flags = RunFlags::NONE.with(RunPhase::InitialDataEntry, true).with(RunPhase::Batch, true);
        assert_eq!(flags.phases().collect::<Vec<_>>(), [RunPhase::InitialDataEntry, RunPhase::Batch]);
        assert_eq!(RunFlags::ALL.phases().count(), 5);
        assert_eq!(RunOnStatus::default().statuses(), ["not_scheduled", "scheduled"]);
        let s = RunOnStatus::default().with("completed", true).unwrap();
        assert_eq!(s.statuses(), ["not_scheduled", "scheduled", "completed"]);
        assert_eq!(RunOnStatus::default().with("signed", true), None);
    }

    #[test]
    fn rule_set_round_trips_through_json() {
        let set = RuleSet {
            rule_defs: vec![RuleDef {
                oid: oid("R_1"),
                name: "Rule 1".into(),
                description: Some("d".into()),
                expression: "I_A gt 1".into(),
            }],
            assignments: vec![RuleAssignment {
                target: "SE_A.F_B.IG_C.I_A".into(),
                run_on_schedule: TimeOfDay::parse("06:00"),
                rule_refs: vec![RuleRef {
                    rule_oid: oid("R_1"),
                    actions: vec![
                        action(ActionKind::Insert {
                            destinations: vec![InsertDestination {
                                oid_path: "I_B".into(),
                                value: InsertValue::Expression("I_A + 1".into()),
                            }],
                        }),
                        action(ActionKind::Event {
                            event_oid: oid("SE_B"),
                            run_on_status: RunOnStatus::default(),
                            destinations: vec![EventDestination {
                                property: EventProperty::StartDate,
                                value_expression: "_CURRENT_DATE + 7".into(),
                            }],
                        }),
                    ],
                }],
            }],
        };
        let json = serde_json::to_string(&set).unwrap();
        assert!(json.contains(r#""run_on_schedule":"06:00""#), "{json}");
        assert!(json.contains(r#""property":"STARTDATE""#), "{json}");
        assert!(json.contains(r#""type":"insert""#), "{json}");
        let back: RuleSet = serde_json::from_str(&json).unwrap();
        assert_eq!(back, set);
        assert!(set.rule("R_1").is_some());
        assert_eq!(set.rule_refs().count(), 1);
    }
}
