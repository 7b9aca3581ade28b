//! A form's values evaluated against its published version: calculations, skip logic, simple
//! conditional display, required items and edit checks, in one pure function ([`evaluate`]).
//!
//! The data-entry layer calls [`evaluate`] on every save with the values it is about to store;
//! it stores the calculated values, clears (with an audit entry) the values that skip logic has
//! hidden, and refuses or queries the value according to the issues. The server and every client
//! get the same answers because the expression engine ([`crate::expr`]) is the same.
//!
//! # Semantics
//! - **Rows.** A non-repeating group has row 1. A repeating group has the rows [`FormValues`]
//!   says exist ([`FormValues::add_row`], and every row holding a value): the data-entry layer
//!   adds the group's initial rows when the form is opened. Expressions are evaluated per row.
//! - **References** `${name}` (XPath), `name` (OpenClinica `func:`) and rule paths (by the item
//!   OID at their end) resolve by item within the form: the same row when the reference is inside
//!   the repeating group of the expression's owner, every row for aggregates (`sum(${x})`) when it
//!   reaches into a repeating group from outside (and the first row where one value is needed,
//!   as ODK does), row 1 otherwise. `.` is the owner's own value. OpenClinica rule paths with
//!   `[n]`/`[END]`/`[ALL]` on the group pick those rows.
//! - **Skip logic.** A slot is *skipped* when its item's `relevant` is false, its group's
//!   `relevant` is false for that row, or its item has a simple conditional display (SCD) whose
//!   control item's value does not contain the option value. Skipped slots read as empty in every
//!   expression (as ODK treats non-relevant questions), are neither required nor checked, and
//!   their stored values are reported in [`Evaluation::hidden_with_values`] to be cleared.
//! - **Hidden by design.** An item or group with `hidden: true` and no SCD stays hidden until a
//!   rule shows it (OpenClinica ITEM_DISPLAY_STATUS HIDE): it is not required and not checked, but
//!   its value is kept (rules and imports write such items) and expressions read it.
//! - **Calculations** run in dependency order (a calculation may use another's result); skip
//!   logic and calculations are repeated until neither changes (they depend on each other), at
//!   most a bounded number of rounds. Results are written in the item's canonical form (REAL
//!   rounded to its decimals, …) through [`canonical_value`]; a skipped calculated item is empty.
//!   A result the item cannot hold (2.5 for an INT item) leaves it empty and is reported as a soft
//!   `calculation_failed` issue: that is a design error the data manager must see.
//! - **Required** (`Yes`, or `When(expr)` per row) applies to items that are not skipped, not
//!   hidden and not calculated (a site user cannot fill those in).
//! - **Edit checks** are not evaluated on empty values. A constraint that cannot be decided
//!   (OpenClinica unknown) passes. `Range` compares numbers; dates, date-times and times compare
//!   as their canonical texts (the bound is read as a value of the item); `EQ`/`NE`/`IN`/`NOTIN`
//!   compare text when a side is not a number. A value that cannot be compared fails, as in
//!   OpenClinica. `Regexp` matches the whole canonical text (Java patterns translated by
//!   [`crate::expr::parse_oc_validation`]).
//! - **Design errors never panic.** Expressions are compiled once per call; one that does not
//!   parse (the upload refused it, so this is a bug elsewhere) counts as absent: no skip, no
//!   constraint, no calculation. A cycle of calculations (also refused at upload) is evaluated in
//!   form order.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use time::{Date, OffsetDateTime};

use super::values::{canonical_value, to_expr_value};
use crate::design::{
    Check, CheckRule, CodeList, Comparator, DataType, Dialect, Expression, FormVersion, ItemDef, Required,
};
use crate::expr::{self, Expr, OcRegex, OcValidation, Reference, Repeat, Value, ValueEnv};

/// Where a value lives in a form: the group, the row (1-based; 1 for non-repeating groups), the item.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot {
    pub group_oid: String,
    pub row: u32,
    pub item_oid: String,
}

impl Slot {
    #[must_use]
    pub fn new(group_oid: impl Into<String>, row: u32, item_oid: impl Into<String>) -> Self {
        Self { group_oid: group_oid.into(), row, item_oid: item_oid.into() }
    }
}

/// The canonical texts of one form, by slot, and the rows that exist in each repeating group
/// (a row may exist without values: the user added it and has not typed yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormValues {
    values: BTreeMap<Slot, String>,
    rows: BTreeMap<String, BTreeSet<u32>>,
}

impl FormValues {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores a canonical text (see [`canonical_value`]); its row then exists. An empty text
    /// clears the slot.
    pub fn set(&mut self, slot: Slot, canonical: String) {
        self.rows.entry(slot.group_oid.clone()).or_default().insert(slot.row);
        if canonical.is_empty() {
            self.values.remove(&slot);
        } else {
            self.values.insert(slot, canonical);
        }
    }

    /// Removes a value; the row stays.
    pub fn clear(&mut self, slot: &Slot) {
        self.values.remove(slot);
    }

    #[must_use]
    pub fn get(&self, slot: &Slot) -> Option<&str> {
        self.values.get(slot).map(String::as_str)
    }

    /// Records that a row of a repeating group exists.
    pub fn add_row(&mut self, group_oid: &str, row: u32) {
        self.rows.entry(group_oid.to_owned()).or_default().insert(row);
    }

    /// The rows of a group that exist, in order.
    #[must_use]
    pub fn rows(&self, group_oid: &str) -> Vec<u32> {
        self.rows.get(group_oid).map(|r| r.iter().copied().collect()).unwrap_or_default()
    }

    /// Every value, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (&Slot, &str)> {
        self.values.iter().map(|(s, v)| (s, v.as_str()))
    }
}

/// What expressions may know about the moment of the save.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalContext {
    /// Today in the study's time zone (`today()`, `_CURRENT_DATE`).
    pub today: Date,
    /// The time of the save (`now()`).
    pub now: OffsetDateTime,
}

/// The outcome of [`evaluate`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evaluation {
    /// Calculated items' new values (None = empty) — the caller stores them. Only values that
    /// differ from the ones given are listed, in form order then row order.
    pub calculated: Vec<(Slot, Option<String>)>,
    /// Slots that are hidden by skip logic (item relevant false, its group's relevant false, or
    /// an SCD that does not show the item) and hold a value: the caller clears them (audited).
    /// Calculated items are not listed here: their clearing is in `calculated`. In form order
    /// then row order.
    pub hidden_with_values: Vec<Slot>,
    /// Every problem, in form order then row order: required items without a value, failed
    /// checks (hard or soft, with the check's message), calculations the item cannot hold.
    pub issues: Vec<Issue>,
}

impl Evaluation {
    /// Whether an issue refuses the save (a hard check or a missing required value).
    #[must_use]
    pub fn has_hard_issues(&self) -> bool {
        self.issues.iter().any(|i| i.hard)
    }
}

/// One problem with a form's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub slot: Slot,
    /// `required`, `hard_check`, `soft_check` or `calculation_failed`.
    pub code: &'static str,
    /// For the site user: the check's message, or a default one.
    pub message: String,
    /// A hard issue refuses the value; a soft one lets it be saved with a query.
    pub hard: bool,
}

/// Evaluates a form's values against its version: calculations, skip logic, required items and
/// edit checks (see the module documentation for every rule). Never panics on a broken design.
#[must_use]
pub fn evaluate(version: &FormVersion, values: &FormValues, ctx: &EvalContext) -> Evaluation {
    let form = Form::compile(version, values);
    let mut working = values.values.clone();
    let mut skipped = HashSet::new();
    let mut failures = HashMap::new();
    let order = form.calculation_order();
    // Skip logic and calculations feed each other: repeat until both settle. Each round can
    // only settle one more link of a chain, so the number of items (+2) is enough for any
    // design without a cycle; the bound keeps a pathological one from looping.
    for _ in 0..form.items.len() + 2 {
        let now_skipped = form.skipped_slots(&working, &skipped, ctx);
        let (changed, now_failures) = form.run_calculations(&order, &mut working, &now_skipped, ctx);
        let settled = !changed && now_skipped == skipped;
        skipped = now_skipped;
        failures = now_failures;
        if settled {
            break;
        }
    }
    let mut out = Evaluation::default();
    for item in &form.items {
        if item.calculation.is_none() {
            continue;
        }
        for &row in form.rows_of(item) {
            let slot = item.slot(row);
            let new = working.get(&slot).cloned();
            if new.as_deref() != values.get(&slot) {
                out.calculated.push((slot, new));
            }
        }
    }
    for item in form.items.iter().filter(|i| i.calculation.is_none()) {
        for &row in form.rows_of(item) {
            let slot = item.slot(row);
            if skipped.contains(&slot) && values.get(&slot).is_some() {
                out.hidden_with_values.push(slot);
            }
        }
    }
    out.issues = form.issues(&working, &skipped, &failures, ctx);
    out
}

/// An edit check, compiled.
enum Rule {
    Constraint(Expr),
    Regexp(OcRegex),
    Range(Comparator, Vec<String>),
}

/// An item with its expressions compiled.
struct Item<'a> {
    def: &'a ItemDef,
    code_list: Option<&'a CodeList>,
    repeating: bool,
    /// The item or its group is hidden by design (until a rule shows it).
    hidden: bool,
    relevant: Option<Expr>,
    required: Option<Expr>,
    always_required: bool,
    calculation: Option<Expr>,
    /// Computed, not entered (even when its expression does not compile): never required.
    computed: bool,
    checks: Vec<(&'a Check, Rule)>,
}

impl Item<'_> {
    fn slot(&self, row: u32) -> Slot {
        Slot::new(self.def.group_oid.as_str(), row, self.def.oid.as_str())
    }
}

/// A form version compiled for one evaluation.
struct Form<'a> {
    items: Vec<Item<'a>>,
    by_name: HashMap<&'a str, usize>,
    by_oid: HashMap<&'a str, usize>,
    group_relevant: HashMap<&'a str, Expr>,
    /// Rows to evaluate per repeating group.
    rows: HashMap<&'a str, Vec<u32>>,
}

const SINGLE_ROW: &[u32] = &[1];

fn compile(expression: &Expression) -> Option<Expr> {
    match expression.dialect {
        Dialect::XPath => expr::parse_xpath(&expression.source),
        Dialect::OcFunc => expr::parse_oc_calculation(&expression.source),
        Dialect::OcRule => expr::parse_oc_rule(&expression.source),
    }
    .ok()
}

fn compile_check(check: &Check) -> Option<Rule> {
    match &check.rule {
        CheckRule::Constraint { expression } => compile(expression).map(Rule::Constraint),
        CheckRule::Regexp { pattern } => match expr::parse_oc_validation(&format!("regexp: /{pattern}/")) {
            Ok(OcValidation::Regexp(r)) => Some(Rule::Regexp(r)),
            _ => None,
        },
        CheckRule::Range { comparator, values } => Some(Rule::Range(*comparator, values.clone())),
    }
}

impl<'a> Form<'a> {
    fn compile(version: &'a FormVersion, values: &FormValues) -> Self {
        let mut rows = HashMap::new();
        let mut group_relevant = HashMap::new();
        for g in &version.groups {
            if g.is_repeating() {
                rows.insert(g.oid.as_str(), values.rows(g.oid.as_str()));
            }
            if let Some(e) = g.relevant.as_ref().and_then(compile) {
                group_relevant.insert(g.oid.as_str(), e);
            }
        }
        let items: Vec<Item<'a>> = version
            .items
            .iter()
            .filter(|def| def.widget.holds_value())
            .map(|def| {
                let group = version.group(def.group_oid.as_str());
                Item {
                    def,
                    code_list: def.code_list.as_ref().and_then(|c| version.code_list(c.as_str())),
                    repeating: group.is_some_and(|g| g.is_repeating()),
                    hidden: (def.hidden && def.conditional_display.is_none()) || group.is_some_and(|g| g.hidden),
                    relevant: def.relevant.as_ref().and_then(compile),
                    required: match &def.required {
                        Required::When(e) => compile(e),
                        _ => None,
                    },
                    always_required: def.required == Required::Yes,
                    calculation: def.calculation.as_ref().and_then(compile),
                    computed: def.calculation.is_some() || def.widget.is_calculated(),
                    checks: def.checks.iter().filter_map(|c| compile_check(c).map(|r| (c, r))).collect(),
                }
            })
            .collect();
        let by_name = items.iter().enumerate().map(|(i, it)| (it.def.name.as_str(), i)).collect();
        let by_oid = items.iter().enumerate().map(|(i, it)| (it.def.oid.as_str(), i)).collect();
        Self { items, by_name, by_oid, group_relevant, rows }
    }

    fn rows_of(&self, item: &Item<'_>) -> &[u32] {
        if item.repeating { self.rows.get(item.def.group_oid.as_str()).map_or(&[], Vec::as_slice) } else { SINGLE_ROW }
    }

    /// Calculated items, each after the calculations it reads (form order otherwise).
    fn calculation_order(&self) -> Vec<usize> {
        fn visit(form: &Form<'_>, i: usize, state: &mut [u8], out: &mut Vec<usize>) {
            // 0 = not seen, 1 = in progress (a cycle: ignore the edge), 2 = done.
            if state.get(i).copied() != Some(0) {
                return;
            }
            state[i] = 1;
            if let Some(calc) = &form.items[i].calculation {
                for r in calc.references() {
                    if let Some(dep) = form.resolve(r)
                        && form.items[dep].calculation.is_some()
                    {
                        visit(form, dep, state, out);
                    }
                }
            }
            state[i] = 2;
            out.push(i);
        }
        let mut state = vec![0u8; self.items.len()];
        let mut out = Vec::new();
        for (i, item) in self.items.iter().enumerate() {
            if item.calculation.is_some() {
                visit(self, i, &mut state, &mut out);
            }
        }
        out
    }

    fn resolve(&self, r: &Reference) -> Option<usize> {
        match r {
            Reference::Field(name) | Reference::ItemName(name) => self.by_name.get(name.as_str()).copied(),
            Reference::OcPath(p) => self.by_oid.get(p.item.as_str()).copied(),
            _ => None,
        }
    }

    fn env<'e>(
        &'e self,
        working: &'e BTreeMap<Slot, String>,
        skipped: &'e HashSet<Slot>,
        owner_group: &'e str,
        row: u32,
        current: Value,
        ctx: &'e EvalContext,
    ) -> Env<'e> {
        Env { form: self, working, skipped, owner_group, row, current, ctx }
    }

    /// The slots skip logic hides, reading values through the previous round's skipped set.
    fn skipped_slots(
        &self,
        working: &BTreeMap<Slot, String>,
        previous: &HashSet<Slot>,
        ctx: &EvalContext,
    ) -> HashSet<Slot> {
        let mut out = HashSet::new();
        let mut group_shown: HashMap<(&str, u32), bool> = HashMap::new();
        for item in &self.items {
            let group = item.def.group_oid.as_str();
            for &row in self.rows_of(item) {
                let slot = item.slot(row);
                let current = read(item, &slot, working, previous);
                let env = self.env(working, previous, group, row, current, ctx);
                let group_ok = *group_shown
                    .entry((group, row))
                    .or_insert_with(|| self.group_relevant.get(group).is_none_or(|e| e.is_relevant(&env)));
                let item_ok = item.relevant.as_ref().is_none_or(|e| e.is_relevant(&env));
                // An SCD whose control item does not exist (a design error) shows the item.
                let scd_ok = item.def.conditional_display.as_ref().is_none_or(|scd| {
                    let control = Reference::Field(scd.control_item.clone());
                    self.resolve(&control).is_none() || contains_option(&env.value(&control), &scd.option_value)
                });
                if !(group_ok && item_ok && scd_ok) {
                    out.insert(slot);
                }
            }
        }
        out
    }

    /// Evaluates every calculation in order, writing results into `working` at once so that the
    /// next calculation sees them. Returns whether anything changed, and the results the items
    /// could not hold.
    fn run_calculations(
        &self,
        order: &[usize],
        working: &mut BTreeMap<Slot, String>,
        skipped: &HashSet<Slot>,
        ctx: &EvalContext,
    ) -> (bool, HashMap<Slot, String>) {
        let mut changed = false;
        let mut failures = HashMap::new();
        for &i in order {
            let item = &self.items[i];
            let Some(calc) = &item.calculation else { continue };
            for &row in self.rows_of(item) {
                let slot = item.slot(row);
                let new = if skipped.contains(&slot) {
                    None
                } else {
                    let current = read(item, &slot, working, skipped);
                    let env = self.env(working, skipped, item.def.group_oid.as_str(), row, current, ctx);
                    match calc.calculate(&env) {
                        Value::Missing => None,
                        v => {
                            let text = v.to_text();
                            match canonical_value(item.def, item.code_list, &text) {
                                Ok(c) => Some(c),
                                Err(e) if e.code == "empty" => None,
                                Err(e) => {
                                    failures.insert(
                                        slot.clone(),
                                        format!("the calculated value '{text}' cannot be stored: {}", e.message),
                                    );
                                    None
                                }
                            }
                        }
                    }
                };
                if working.get(&slot) != new.as_ref() {
                    changed = true;
                    match new {
                        Some(v) => working.insert(slot, v),
                        None => working.remove(&slot),
                    };
                }
            }
        }
        (changed, failures)
    }

    fn issues(
        &self,
        working: &BTreeMap<Slot, String>,
        skipped: &HashSet<Slot>,
        failures: &HashMap<Slot, String>,
        ctx: &EvalContext,
    ) -> Vec<Issue> {
        let mut issues = Vec::new();
        for item in &self.items {
            for &row in self.rows_of(item) {
                let slot = item.slot(row);
                if let Some(message) = failures.get(&slot) {
                    issues.push(Issue {
                        slot: slot.clone(),
                        code: "calculation_failed",
                        message: message.clone(),
                        hard: false,
                    });
                }
                if item.hidden || skipped.contains(&slot) {
                    continue;
                }
                let text = working.get(&slot).map(String::as_str);
                let current = read(item, &slot, working, skipped);
                let env = self.env(working, skipped, item.def.group_oid.as_str(), row, current, ctx);
                let Some(text) = text else {
                    let required = item.always_required || item.required.as_ref().is_some_and(|e| e.is_required(&env));
                    if required && !item.computed {
                        let message = item
                            .def
                            .required_message
                            .as_ref()
                            .map(|m| m.text.clone())
                            .filter(|m| !m.is_empty())
                            .unwrap_or_else(|| "A value is required.".to_owned());
                        issues.push(Issue { slot, code: "required", message, hard: true });
                    }
                    continue;
                };
                for (check, rule) in &item.checks {
                    let ok = match rule {
                        Rule::Constraint(e) => e.constraint_ok(&env),
                        Rule::Regexp(r) => r.is_match(text),
                        Rule::Range(comparator, bounds) => range_ok(item, *comparator, bounds, text),
                    };
                    if !ok {
                        let message = if check.message.text.is_empty() {
                            default_message(rule, text)
                        } else {
                            check.message.text.clone()
                        };
                        let code = if check.hard { "hard_check" } else { "soft_check" };
                        issues.push(Issue { slot: slot.clone(), code, message, hard: check.hard });
                    }
                }
            }
        }
        issues
    }
}

/// A slot's value for expressions: empty when skipped.
fn read(item: &Item<'_>, slot: &Slot, working: &BTreeMap<Slot, String>, skipped: &HashSet<Slot>) -> Value {
    if skipped.contains(slot) {
        return Value::Missing;
    }
    working.get(slot).map_or(Value::Missing, |t| to_expr_value(item.def, t))
}

/// SCD: whether the control item's value is, or (multiple choice) contains, the option.
fn contains_option(value: &Value, option: &str) -> bool {
    let option = option.trim();
    match value {
        Value::Missing => false,
        Value::MultiSelect(codes) => codes.iter().any(|c| c.trim() == option),
        other => {
            let text = other.to_text();
            text.trim() == option || text.split(',').any(|c| c.trim() == option)
        }
    }
}

fn number(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|f| f.is_finite())
}

/// How a value compares with a bound of a range check: numbers as numbers, temporal values as
/// their canonical texts, anything else only for (in)equality.
fn compare(item: &Item<'_>, value: &str, bound: &str) -> Option<std::cmp::Ordering> {
    if let (Some(a), Some(b)) = (number(value), number(bound)) {
        return a.partial_cmp(&b);
    }
    let temporal =
        matches!(item.def.data_type, DataType::Date | DataType::PartialDate | DataType::DateTime | DataType::Time);
    if temporal && !item.def.widget.is_multi() {
        let bound = canonical_value(item.def, None, bound).ok()?;
        return Some(value.cmp(bound.as_str()));
    }
    None
}

fn range_ok(item: &Item<'_>, comparator: Comparator, bounds: &[String], value: &str) -> bool {
    use std::cmp::Ordering::{Equal, Greater, Less};
    let equal = |bound: &String| match compare(item, value, bound) {
        Some(o) => o == Equal,
        None => value.trim() == bound.trim(),
    };
    match comparator {
        Comparator::IN => bounds.iter().any(equal),
        Comparator::NOTIN => !bounds.iter().any(equal),
        Comparator::EQ | Comparator::NE => {
            let Some(bound) = bounds.first() else { return true };
            equal(bound) == (comparator == Comparator::EQ)
        }
        _ => {
            let Some(bound) = bounds.first() else { return true };
            match compare(item, value, bound) {
                Some(o) => match comparator {
                    Comparator::LT => o == Less,
                    Comparator::LE => o != Greater,
                    Comparator::GT => o == Greater,
                    _ => o != Less,
                },
                None => false,
            }
        }
    }
}

fn default_message(rule: &Rule, value: &str) -> String {
    match rule {
        Rule::Constraint(e) => format!("'{value}' does not satisfy {}", e.source()),
        Rule::Regexp(r) => format!("'{value}' does not have the expected form ({})", r.pattern()),
        Rule::Range(comparator, bounds) => {
            let what = match comparator {
                Comparator::LT => "less than",
                Comparator::LE => "at most",
                Comparator::GT => "greater than",
                Comparator::GE => "at least",
                Comparator::EQ => "equal to",
                Comparator::NE => "different from",
                Comparator::IN => "one of",
                Comparator::NOTIN => "none of",
            };
            format!("'{value}' must be {what} {}", bounds.join(", "))
        }
    }
}

/// The values an expression of one slot sees.
struct Env<'e> {
    form: &'e Form<'e>,
    working: &'e BTreeMap<Slot, String>,
    skipped: &'e HashSet<Slot>,
    /// The group of the item (or the group) the expression belongs to.
    owner_group: &'e str,
    row: u32,
    current: Value,
    ctx: &'e EvalContext,
}

impl Env<'_> {
    /// The rows a reference reads: the owner's row inside its own repeating group, the rows a
    /// rule path selects, every row of another repeating group, row 1 otherwise.
    fn rows(&self, r: &Reference, item: &Item<'_>) -> Vec<u32> {
        if !item.repeating {
            return vec![1];
        }
        let all = self.form.rows_of(item);
        if let Reference::OcPath(p) = r
            && let Some(repeat) = p.group.as_ref().and_then(|g| g.repeat.as_ref())
        {
            return match repeat {
                Repeat::Index(n) => all.iter().copied().filter(|row| row == n).collect(),
                Repeat::End => all.last().copied().into_iter().collect(),
                Repeat::All => all.to_vec(),
            };
        }
        if item.def.group_oid.as_str() == self.owner_group { vec![self.row] } else { all.to_vec() }
    }

    fn read_rows(&self, r: &Reference) -> Option<Vec<Value>> {
        let item = &self.form.items[self.form.resolve(r)?];
        Some(
            self.rows(r, item).into_iter().map(|row| read(item, &item.slot(row), self.working, self.skipped)).collect(),
        )
    }
}

impl ValueEnv for Env<'_> {
    fn value(&self, r: &Reference) -> Value {
        if *r == Reference::Current {
            return self.current.clone();
        }
        self.read_rows(r).and_then(|v| v.into_iter().next()).unwrap_or(Value::Missing)
    }

    fn values(&self, r: &Reference) -> Vec<Value> {
        if *r == Reference::Current {
            return vec![self.current.clone()];
        }
        self.read_rows(r).unwrap_or_else(|| vec![Value::Missing])
    }

    fn current(&self) -> Value {
        self.current.clone()
    }

    fn today(&self) -> Date {
        self.ctx.today
    }

    fn now(&self) -> OffsetDateTime {
        self.ctx.now
    }
}

#[cfg(test)]
mod tests {
    use time::macros::{date, datetime};

    use super::*;
    use crate::capture::values::tests::{code_list, item};
    use crate::design::{ConditionalDisplay, FormSource, ItemGroup, Section, Text, Widget};
    use crate::oid::Oid;

    fn group(oid: &str, repeating: bool) -> ItemGroup {
        ItemGroup {
            oid: Oid::parse(oid).unwrap(),
            name: oid.to_ascii_lowercase(),
            header: Text::default(),
            repeat: repeating.then_some(crate::design::Repeat { initial_rows: 1, max_rows: None, count: None }),
            hidden: false,
            relevant: None,
        }
    }

    fn form(groups: Vec<ItemGroup>, items: Vec<ItemDef>, code_lists: Vec<CodeList>) -> FormVersion {
        FormVersion {
            oid: Oid::parse("F_TEST_V1").unwrap(),
            label: "v1".into(),
            description: None,
            revision_notes: None,
            source: FormSource::XlsForm,
            default_language: None,
            languages: vec![],
            sections: vec![Section {
                label: "main".into(),
                title: Text::plain("Main"),
                subtitle: None,
                instructions: None,
            }],
            groups: std::iter::once(group("IG_MAIN", false)).chain(groups).collect(),
            items,
            code_lists,
        }
    }

    /// An item in a group.
    fn in_group(mut i: ItemDef, group_oid: &str) -> ItemDef {
        i.group_oid = Oid::parse(group_oid).unwrap();
        i
    }

    fn calculated(mut i: ItemDef, source: &str) -> ItemDef {
        i.widget = Widget::Calculation;
        i.calculation = Some(Expression::xpath(source));
        i
    }

    fn required(mut i: ItemDef) -> ItemDef {
        i.required = Required::Yes;
        i
    }

    fn with_check(mut i: ItemDef, rule: CheckRule, message: &str, hard: bool) -> ItemDef {
        i.checks.push(Check { rule, message: Text::plain(message), hard });
        i
    }

    fn radio(name: &str, list: &str) -> ItemDef {
        let mut i = item(name, DataType::Text);
        i.widget = Widget::Radio;
        i.code_list = Some(Oid::parse(list).unwrap());
        i
    }

    fn slot(v: &FormVersion, name: &str, row: u32) -> Slot {
        let i = v.item(name).unwrap();
        Slot::new(i.group_oid.as_str(), row, i.oid.as_str())
    }

    /// Values by item name and row, each parsed as a site user would type it.
    fn values(v: &FormVersion, entries: &[(&str, u32, &str)]) -> FormValues {
        let mut out = FormValues::new();
        for (name, row, raw) in entries {
            let i = v.item(name).unwrap();
            let list = i.code_list.as_ref().and_then(|c| v.code_list(c.as_str()));
            out.set(slot(v, name, *row), canonical_value(i, list, raw).unwrap());
        }
        out
    }

    /// Values as (item name, row, typed input).
    type Entries<'a> = &'a [(&'a str, u32, &'a str)];
    /// An issue's code and hardness.
    type Outcome<'a> = (&'a str, bool);

    fn ctx() -> EvalContext {
        EvalContext { today: date!(2024 - 06 - 15), now: datetime!(2024-06-15 10:00 UTC) }
    }

    /// The issues as (item name, row, code, message).
    fn issues(v: &FormVersion, e: &Evaluation) -> Vec<(String, u32, &'static str, String)> {
        e.issues
            .iter()
            .map(|i| (v.item_by_oid(&i.slot.item_oid).unwrap().name.clone(), i.slot.row, i.code, i.message.clone()))
            .collect()
    }

    fn vitals() -> FormVersion {
        let mut bmi =
            calculated(item("bmi", DataType::Real), "${weight} div ((${height} div 100) * (${height} div 100))");
        bmi.decimals = Some(1);
        let dia = with_check(
            item("diastolic", DataType::Integer),
            CheckRule::Constraint { expression: Expression::xpath(". < ${systolic}") },
            "Diastolic must be lower than systolic",
            true,
        );
        form(
            vec![],
            vec![
                item("weight", DataType::Real),
                item("height", DataType::Real),
                bmi,
                required(item("systolic", DataType::Integer)),
                dia,
            ],
            vec![],
        )
    }

    #[test]
    fn bmi_is_calculated_from_weight_and_height() {
        let v = vitals();
        let e = evaluate(&v, &values(&v, &[("weight", 1, "70"), ("height", 1, "175"), ("systolic", 1, "120")]), &ctx());
        assert_eq!(e.calculated, vec![(slot(&v, "bmi", 1), Some("22.9".to_owned()))]);
        assert!(e.issues.is_empty(), "{:?}", e.issues);
        // Already stored: nothing to change.
        let stored =
            values(&v, &[("weight", 1, "70"), ("height", 1, "175"), ("bmi", 1, "22.9"), ("systolic", 1, "120")]);
        assert!(evaluate(&v, &stored, &ctx()).calculated.is_empty());
        // Height cleared: the BMI becomes empty.
        let cleared = values(&v, &[("weight", 1, "70"), ("bmi", 1, "22.9"), ("systolic", 1, "120")]);
        assert_eq!(evaluate(&v, &cleared, &ctx()).calculated, vec![(slot(&v, "bmi", 1), None)]);
        // Height 0: an impossible division stores nothing.
        let zero = values(&v, &[("weight", 1, "70"), ("height", 1, "0"), ("systolic", 1, "120")]);
        assert!(evaluate(&v, &zero, &ctx()).calculated.is_empty());
    }

    #[test]
    fn diastolic_must_be_below_systolic() {
        let v = vitals();
        let cases: &[(Entries<'_>, Vec<(&str, &str)>)] = &[
            (&[("systolic", 1, "120"), ("diastolic", 1, "130")], vec![("diastolic", "hard_check")]),
            (&[("systolic", 1, "120"), ("diastolic", 1, "80")], vec![]),
            // Constraints are not evaluated on empty values; required is its own issue.
            (&[], vec![("systolic", "required")]),
            // An empty systolic: `. < ''` is false in XPath, so the check fails.
            (&[("diastolic", 1, "80")], vec![("systolic", "required"), ("diastolic", "hard_check")]),
        ];
        for (entries, expected) in cases {
            let e = evaluate(&v, &values(&v, entries), &ctx());
            let got: Vec<(String, &str)> = issues(&v, &e).into_iter().map(|(n, _, c, _)| (n, c)).collect();
            let expected: Vec<(String, &str)> = expected.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect();
            assert_eq!(got, expected, "{entries:?}");
        }
        let e = evaluate(&v, &values(&v, &[("systolic", 1, "120"), ("diastolic", 1, "130")]), &ctx());
        assert_eq!(e.issues[0].message, "Diastolic must be lower than systolic");
        assert!(e.issues[0].hard && e.has_hard_issues());
        assert_eq!(e.issues[0].slot, slot(&v, "diastolic", 1));
        assert_eq!(issues(&v, &evaluate(&v, &FormValues::new(), &ctx()))[0].3, "A value is required.");
    }

    fn abnormal_form() -> FormVersion {
        let mut details = required(item("details", DataType::Text));
        details.relevant = Some(Expression::xpath("${abnormal} = 'yes'"));
        let mut more = item("more", DataType::Text);
        more.relevant = Some(Expression::xpath("${details} = 'stale'"));
        form(vec![], vec![radio("abnormal", "CL_YN"), details, more], vec![code_list("CL_YN", &["yes", "no"])])
    }

    #[test]
    fn skip_logic_hides_and_reports_stale_values() {
        let v = abnormal_form();
        // "no": details and what depends on it are hidden; their values are stale.
        let e = evaluate(&v, &values(&v, &[("abnormal", 1, "no"), ("details", 1, "stale"), ("more", 1, "x")]), &ctx());
        assert_eq!(e.hidden_with_values, vec![slot(&v, "details", 1), slot(&v, "more", 1)]);
        assert!(e.issues.is_empty(), "required is ignored when hidden: {:?}", e.issues);
        // Nothing answered yet: `'' = 'yes'` is false, details is hidden, so not required.
        assert!(evaluate(&v, &FormValues::new(), &ctx()).issues.is_empty());
        // "yes": details is asked and required.
        let e = evaluate(&v, &values(&v, &[("abnormal", 1, "yes")]), &ctx());
        assert_eq!(
            issues(&v, &e).iter().map(|i| (i.0.as_str(), i.2)).collect::<Vec<_>>(),
            vec![("details", "required")]
        );
        assert!(e.hidden_with_values.is_empty());
        let e = evaluate(&v, &values(&v, &[("abnormal", 1, "yes"), ("details", 1, "stale"), ("more", 1, "x")]), &ctx());
        assert!(e.issues.is_empty() && e.hidden_with_values.is_empty());
    }

    #[test]
    fn items_hidden_by_design_are_kept_but_neither_required_nor_checked() {
        let mut secret = required(with_check(
            item("secret", DataType::Integer),
            CheckRule::Range { comparator: Comparator::LT, values: vec!["10".into()] },
            "too big",
            true,
        ));
        secret.hidden = true;
        let v = form(vec![], vec![secret, calculated(item("twice", DataType::Integer), "${secret} * 2")], vec![]);
        assert!(evaluate(&v, &FormValues::new(), &ctx()).issues.is_empty());
        let e = evaluate(&v, &values(&v, &[("secret", 1, "50")]), &ctx());
        assert!(e.issues.is_empty());
        assert!(e.hidden_with_values.is_empty());
        // Expressions still read it.
        assert_eq!(e.calculated, vec![(slot(&v, "twice", 1), Some("100".to_owned()))]);
    }

    fn medications(total: &str, dialect: Dialect) -> FormVersion {
        let mut dose = in_group(item("dose", DataType::Integer), "IG_MEDS");
        dose.required = Required::When(Expression::xpath("${med} != ''"));
        let mut total_item = item("total", DataType::Integer);
        total_item.widget = Widget::GroupCalculation;
        total_item.calculation = Some(Expression { dialect, source: total.to_owned() });
        let daily = calculated(in_group(item("daily", DataType::Integer), "IG_MEDS"), "${dose} * ${times}");
        form(
            vec![group("IG_MEDS", true)],
            vec![
                in_group(item("med", DataType::Text), "IG_MEDS"),
                dose,
                in_group(item("times", DataType::Integer), "IG_MEDS"),
                daily,
                total_item,
            ],
            vec![],
        )
    }

    #[test]
    fn sums_over_a_repeating_group_and_calculates_per_row() {
        let v = medications("sum(${daily})", Dialect::XPath);
        let entries = [
            ("med", 1, "a"),
            ("dose", 1, "10"),
            ("times", 1, "2"),
            ("med", 2, "b"),
            ("dose", 2, "5"),
            ("times", 2, "3"),
        ];
        let e = evaluate(&v, &values(&v, &entries), &ctx());
        assert_eq!(
            e.calculated,
            vec![
                (slot(&v, "daily", 1), Some("20".to_owned())),
                (slot(&v, "daily", 2), Some("15".to_owned())),
                (slot(&v, "total", 1), Some("35".to_owned())),
            ]
        );
        assert!(e.issues.is_empty());
        // No rows: the sum of nothing is 0 in XPath.
        let e = evaluate(&v, &FormValues::new(), &ctx());
        assert_eq!(e.calculated, vec![(slot(&v, "total", 1), Some("0".to_owned()))]);
    }

    #[test]
    fn oc_func_calculations_read_item_names() {
        let v = medications("func: sum(dose)", Dialect::OcFunc);
        let e =
            evaluate(&v, &values(&v, &[("med", 1, "a"), ("dose", 1, "10"), ("med", 3, "b"), ("dose", 3, "7")]), &ctx());
        assert!(e.calculated.contains(&(slot(&v, "total", 1), Some("17".to_owned()))), "{:?}", e.calculated);

        let mut bmi = item("bmi", DataType::Real);
        bmi.widget = Widget::Calculation;
        bmi.decimals = Some(2);
        bmi.calculation = Some(Expression::oc("func: weight / (height * height) * 10000"));
        let v = form(vec![], vec![item("weight", DataType::Real), item("height", DataType::Real), bmi], vec![]);
        let e = evaluate(&v, &values(&v, &[("weight", 1, "80"), ("height", 1, "180")]), &ctx());
        assert_eq!(e.calculated, vec![(slot(&v, "bmi", 1), Some("24.69".to_owned()))]);
    }

    #[test]
    fn required_is_decided_per_row() {
        let v = medications("sum(${daily})", Dialect::XPath);
        let mut vals = values(&v, &[("med", 1, "a"), ("dose", 1, "10"), ("med", 2, "b")]);
        vals.add_row("IG_MEDS", 3);
        assert_eq!(vals.rows("IG_MEDS"), vec![1, 2, 3]);
        let e = evaluate(&v, &vals, &ctx());
        let got: Vec<(String, u32, &str)> = issues(&v, &e).into_iter().map(|(n, r, c, _)| (n, r, c)).collect();
        assert_eq!(got, vec![("dose".to_owned(), 2, "required")]);
    }

    #[test]
    fn a_repeating_group_can_be_skipped_as_a_whole() {
        let mut v = medications("sum(${daily})", Dialect::XPath);
        v.items.insert(0, radio("any_meds", "CL_YN"));
        v.code_lists.push(code_list("CL_YN", &["yes", "no"]));
        v.groups[1].relevant = Some(Expression::xpath("${any_meds} = 'yes'"));
        let entries = [("any_meds", 1, "no"), ("med", 1, "a"), ("med", 2, "b"), ("dose", 2, "4"), ("times", 2, "1")];
        let e = evaluate(&v, &values(&v, &entries), &ctx());
        assert_eq!(
            e.hidden_with_values,
            vec![slot(&v, "med", 1), slot(&v, "med", 2), slot(&v, "dose", 2), slot(&v, "times", 2)]
        );
        assert!(e.issues.is_empty(), "{:?}", e.issues);
        // The skipped rows read as empty: daily stays empty; XPath sum over empty rows is empty.
        assert_eq!(e.calculated, vec![]);
    }

    #[test]
    fn range_checks_hard_and_soft() {
        let temp = with_check(
            with_check(
                item("temp", DataType::Real),
                CheckRule::Range { comparator: Comparator::GE, values: vec!["35".into()] },
                "Temperature below 35 °C is not possible",
                true,
            ),
            CheckRule::Range { comparator: Comparator::LE, values: vec!["40.5".into()] },
            "Please confirm a temperature above 40.5 °C",
            false,
        );
        let grade = with_check(
            item("grade", DataType::Integer),
            CheckRule::Range { comparator: Comparator::IN, values: vec!["1".into(), "2".into(), "3".into()] },
            "",
            true,
        );
        let visit = with_check(
            item("visit", DataType::Date),
            CheckRule::Range { comparator: Comparator::LT, values: vec!["2030-01-01".into()] },
            "",
            false,
        );
        let code =
            with_check(item("code", DataType::Text), CheckRule::Regexp { pattern: "[A-Z]{3}".into() }, "", false);
        let v = form(vec![], vec![temp, grade, visit, code], vec![]);
        let cases: &[(&str, &str, Option<Outcome<'_>>)] = &[
            ("temp", "37", None),
            ("temp", "35", None),
            ("temp", "34.9", Some(("hard_check", true))),
            ("temp", "40.5", None),
            ("temp", "41", Some(("soft_check", false))),
            ("grade", "2", None),
            ("grade", "4", Some(("hard_check", true))),
            ("visit", "2024-01-01", None),
            ("visit", "2031-01-01", Some(("soft_check", false))),
            ("code", "ABC", None),
            ("code", "ABCD", Some(("soft_check", false))),
            ("code", "xABC", Some(("soft_check", false))),
        ];
        for (name, raw, expected) in cases {
            let e = evaluate(&v, &values(&v, &[(name, 1, raw)]), &ctx());
            let got = e.issues.first().map(|i| (i.code, i.hard));
            assert_eq!(got, *expected, "{name} = {raw}");
            assert!(e.issues.len() <= 1);
        }
        let e = evaluate(&v, &values(&v, &[("temp", 1, "34")]), &ctx());
        assert_eq!(e.issues[0].message, "Temperature below 35 °C is not possible");
        let e = evaluate(&v, &values(&v, &[("grade", 1, "4")]), &ctx());
        assert_eq!(e.issues[0].message, "'4' must be one of 1, 2, 3");
    }

    #[test]
    fn simple_conditional_display() {
        let mut weeks = required(item("weeks", DataType::Integer));
        weeks.hidden = true;
        weeks.conditional_display = Some(ConditionalDisplay {
            control_item: "pregnant".into(),
            option_value: "yes".into(),
            message: String::new(),
        });
        let mut symptoms = item("symptoms", DataType::Text);
        symptoms.widget = Widget::Checkbox;
        symptoms.code_list = Some(Oid::parse("CL_SYM").unwrap());
        let mut other = required(item("other", DataType::Text));
        other.hidden = true;
        other.conditional_display = Some(ConditionalDisplay {
            control_item: "symptoms".into(),
            option_value: "other".into(),
            message: String::new(),
        });
        let v = form(
            vec![],
            vec![radio("pregnant", "CL_YN"), weeks, symptoms, other],
            vec![code_list("CL_YN", &["yes", "no"]), code_list("CL_SYM", &["fever", "other"])],
        );
        let e =
            evaluate(&v, &values(&v, &[("pregnant", 1, "no"), ("weeks", 1, "12"), ("symptoms", 1, "fever")]), &ctx());
        assert_eq!(e.hidden_with_values, vec![slot(&v, "weeks", 1)]);
        assert!(e.issues.is_empty());
        let e = evaluate(&v, &values(&v, &[("pregnant", 1, "yes"), ("symptoms", 1, "other fever")]), &ctx());
        let got: Vec<(String, &str)> = issues(&v, &e).into_iter().map(|(n, _, c, _)| (n, c)).collect();
        assert_eq!(got, vec![("weeks".to_owned(), "required"), ("other".to_owned(), "required")]);
    }

    #[test]
    fn calculations_chain_in_dependency_order() {
        // Declared before what they read: c2 reads c1, which reads a.
        let v = form(
            vec![],
            vec![
                calculated(item("c2", DataType::Integer), "${c1} * 2"),
                calculated(item("c1", DataType::Integer), "${a} + 1"),
                item("a", DataType::Integer),
                calculated(item("half", DataType::Integer), "${a} div 2"),
            ],
            vec![],
        );
        let e = evaluate(&v, &values(&v, &[("a", 1, "3")]), &ctx());
        assert_eq!(
            e.calculated,
            vec![(slot(&v, "c2", 1), Some("8".to_owned())), (slot(&v, "c1", 1), Some("4".to_owned()))]
        );
        // 1.5 does not fit an INT item: left empty and reported to the data manager.
        let got: Vec<(String, &str, bool)> =
            e.issues.iter().map(|i| (v.item_by_oid(&i.slot.item_oid).unwrap().name.clone(), i.code, i.hard)).collect();
        assert_eq!(got, vec![("half".to_owned(), "calculation_failed", false)]);
        assert!(e.issues[0].message.contains("'1.5'"), "{}", e.issues[0].message);
    }

    #[test]
    fn skip_logic_on_calculations_and_calculations_in_skip_logic() {
        // A calculation decides skip logic; a skipped calculation is emptied.
        let mut note = item("fever_note", DataType::Text);
        note.relevant = Some(Expression::xpath("${fever} = 'true'"));
        let mut fever = calculated(item("fever", DataType::Boolean), "${temp} >= 38");
        fever.relevant = Some(Expression::xpath("${temp} != ''"));
        let v = form(vec![], vec![item("temp", DataType::Real), fever, note], vec![]);
        let e = evaluate(&v, &values(&v, &[("temp", 1, "39")]), &ctx());
        assert_eq!(e.calculated, vec![(slot(&v, "fever", 1), Some("true".to_owned()))]);
        let stale = values(&v, &[("temp", 1, "37"), ("fever", 1, "true"), ("fever_note", 1, "hot")]);
        let e = evaluate(&v, &stale, &ctx());
        assert_eq!(e.calculated, vec![(slot(&v, "fever", 1), Some("false".to_owned()))]);
        assert_eq!(e.hidden_with_values, vec![slot(&v, "fever_note", 1)]);
        // Temperature cleared: fever is skipped, emptied through `calculated`, not listed as hidden.
        let e = evaluate(&v, &values(&v, &[("fever", 1, "true")]), &ctx());
        assert_eq!(e.calculated, vec![(slot(&v, "fever", 1), None)]);
        assert!(e.hidden_with_values.is_empty());
    }

    #[test]
    fn today_comes_from_the_context() {
        let visit = with_check(
            item("visit", DataType::Date),
            CheckRule::Constraint { expression: Expression::xpath(". <= today()") },
            "The visit date cannot be in the future",
            true,
        );
        let v = form(vec![], vec![visit], vec![]);
        assert!(evaluate(&v, &values(&v, &[("visit", 1, "2024-06-15")]), &ctx()).issues.is_empty());
        let e = evaluate(&v, &values(&v, &[("visit", 1, "16-Jun-2024")]), &ctx());
        assert_eq!(e.issues[0].message, "The visit date cannot be in the future");
    }

    #[test]
    fn broken_expressions_count_as_absent() {
        let mut a = required(item("a", DataType::Integer));
        a.relevant = Some(Expression::xpath("${"));
        a.calculation = None;
        let b = with_check(
            calculated(item("b", DataType::Integer), "1 +"),
            CheckRule::Regexp { pattern: "(".into() },
            "",
            true,
        );
        let c = with_check(
            item("c", DataType::Integer),
            CheckRule::Constraint { expression: Expression::xpath(". >") },
            "",
            true,
        );
        let v = form(vec![], vec![a, b, c], vec![]);
        let e = evaluate(&v, &values(&v, &[("b", 1, "1"), ("c", 1, "5")]), &ctx());
        // `a` is not skipped (so required), b's calculation and both checks are ignored.
        let got: Vec<(String, &str)> = issues(&v, &e).into_iter().map(|(n, _, c, _)| (n, c)).collect();
        assert_eq!(got, vec![("a".to_owned(), "required")]);
        assert!(e.calculated.is_empty());
    }

    #[test]
    fn form_values_track_rows() {
        let mut vals = FormValues::new();
        let s = Slot::new("IG_MEDS", 2, "I_DOSE");
        vals.set(s.clone(), "5".into());
        vals.add_row("IG_MEDS", 4);
        assert_eq!(vals.rows("IG_MEDS"), vec![2, 4]);
        assert_eq!(vals.get(&s), Some("5"));
        vals.clear(&s);
        assert_eq!(vals.get(&s), None);
        assert_eq!(vals.rows("IG_MEDS"), vec![2, 4], "clearing a value keeps its row");
        vals.set(s.clone(), String::new());
        assert_eq!(vals.iter().count(), 0);
        assert!(vals.rows("IG_OTHER").is_empty());
    }
}
