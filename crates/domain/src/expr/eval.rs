//! Evaluation against the data of one form (or one choice, or one rule target), with the
//! empty-value semantics of each dialect (see the module documentation).

use std::cmp::Ordering;

use time::{Date, Duration, OffsetDateTime};

use super::ast::{BinaryOp, Dialect, Expr, Function, Literal, Node, NodeKind, Reference};
use super::value::{
    PartialDate, Value, date_from_days, days_since_epoch, format_number, fractional_days, parse_date, parse_date_time,
    parse_number, parse_time, to_f64,
};

/// The data an expression is evaluated against, implemented by the data-entry layer (server
/// and web UI alike). Today's date and the time are injected: expressions never read a clock.
pub trait ValueEnv {
    /// The value of a reference; [`Value::Missing`] when empty or unanswered.
    fn value(&self, r: &Reference) -> Value;

    /// Every value of a reference, one per row, for aggregates (`sum`, `count`, …): all rows
    /// of an item in a repeating group, one value per instance for a repeat itself. For a
    /// reference that does not repeat, its single value (the default).
    fn values(&self, r: &Reference) -> Vec<Value> {
        vec![self.value(r)]
    }

    /// `.`: the value of the item the expression belongs to.
    fn current(&self) -> Value;

    /// Today's date, in the study's time zone.
    fn today(&self) -> Date;

    /// The current date and time.
    fn now(&self) -> OffsetDateTime;
}

/// Kleene "and": false wins, then unknown.
#[must_use]
pub fn kleene_and(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

/// Kleene "or": true wins, then unknown.
#[must_use]
pub fn kleene_or(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}

/// Kleene "not": unknown stays unknown.
#[must_use]
pub fn kleene_not(a: Option<bool>) -> Option<bool> {
    a.map(|b| !b)
}

impl Expr {
    /// Evaluates the expression to a value. Unknown truth values are [`Value::Missing`].
    #[must_use]
    pub fn evaluate(&self, env: &dyn ValueEnv) -> Value {
        Eval { expr: self, env, dialect: self.dialect }.eval(&self.root)
    }

    /// Evaluates a condition: `Some(true)`, `Some(false)` or `None` for unknown. XPath
    /// converts every value to true/false as `boolean()` does (empty is false), so it is
    /// never unknown; OpenClinica rules are unknown when an operand they need is empty.
    #[must_use]
    pub fn evaluate_condition(&self, env: &dyn ValueEnv) -> Option<bool> {
        let v = self.evaluate(env);
        if self.dialect.is_xpath() { Some(xpath_boolean(&v)) } else { truth(&v) }
    }

    /// XLSForm `relevant` (or a show condition): whether the question is shown. An unknown
    /// condition shows it (never hide a question, and so its data, for want of an answer).
    #[must_use]
    pub fn is_relevant(&self, env: &dyn ValueEnv) -> bool {
        self.evaluate_condition(env).unwrap_or(true)
    }

    /// XLSForm `required` as an expression: whether an answer is required. Unknown is not
    /// required (a save is never blocked by a condition that cannot be decided).
    #[must_use]
    pub fn is_required(&self, env: &dyn ValueEnv) -> bool {
        self.evaluate_condition(env).unwrap_or(false)
    }

    /// XLSForm `constraint`: whether the current value is acceptable. An empty current value
    /// is always acceptable (the constraint is not evaluated, as in ODK; requiredness is a
    /// separate check), and so is an unknown result.
    #[must_use]
    pub fn constraint_ok(&self, env: &dyn ValueEnv) -> bool {
        env.current().is_empty() || self.evaluate_condition(env).unwrap_or(true)
    }

    /// OpenClinica rule: whether the actions attached with `IfExpressionEvaluates = when`
    /// fire. A rule whose expression is unknown does not fire.
    #[must_use]
    pub fn rule_fires(&self, env: &dyn ValueEnv, when: bool) -> bool {
        self.evaluate_condition(env) == Some(when)
    }

    /// A calculation: the value to store. Empty and impossible results (`1 div 0`) are
    /// [`Value::Missing`]; store numbers with [`Value::to_text`].
    #[must_use]
    pub fn calculate(&self, env: &dyn ValueEnv) -> Value {
        normalise(self.evaluate(env))
    }
}

/// Empty text, no choice and NaN are all "missing".
fn normalise(v: Value) -> Value {
    if v.is_empty() { Value::Missing } else { v }
}

/// XPath `boolean()`: empty text, zero and NaN are false; every date is true.
fn xpath_boolean(v: &Value) -> bool {
    match v {
        Value::Missing => false,
        Value::Boolean(b) => *b,
        Value::Integer(i) => *i != 0,
        Value::Decimal(d) => *d != 0.0 && !d.is_nan(),
        Value::Text(t) => !t.is_empty(),
        Value::MultiSelect(v) => !v.is_empty(),
        Value::Date(_) | Value::DateTime(_) | Value::Time(_) | Value::PartialDate(_) => true,
    }
}

/// OpenClinica truth: only booleans are true or false; anything else is unknown.
fn truth(v: &Value) -> Option<bool> {
    match v {
        Value::Boolean(b) => Some(*b),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i64),
    Dec(f64),
}

impl Num {
    fn f(self) -> f64 {
        match self {
            Self::Int(i) => to_f64(i),
            Self::Dec(d) => d,
        }
    }

    fn value(self) -> Value {
        match self {
            Self::Int(i) => Value::Integer(i),
            Self::Dec(d) if d.is_finite() => Value::Decimal(d),
            Self::Dec(_) => Value::Missing,
        }
    }
}

/// A whole `f64` as an integer value when it fits, else a decimal.
#[allow(clippy::cast_possible_truncation)] // guarded by the range check
fn whole(d: f64) -> Value {
    if d.is_finite() && d.abs() < 9.0e15 { Value::Integer(d as i64) } else { Num::Dec(d).value() }
}

/// How two values compare: in order, not comparable (XPath's NaN: only `!=` holds) or unknown.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Order {
    Known(Ordering),
    Unordered,
    Unknown,
}

impl Order {
    fn apply(self, op: BinaryOp) -> Option<bool> {
        match self {
            Self::Known(o) => Some(match op {
                BinaryOp::Eq => o == Ordering::Equal,
                BinaryOp::Ne => o != Ordering::Equal,
                BinaryOp::Lt => o == Ordering::Less,
                BinaryOp::Le => o != Ordering::Greater,
                BinaryOp::Gt => o == Ordering::Greater,
                _ => o != Ordering::Less,
            }),
            Self::Unordered => Some(op == BinaryOp::Ne),
            Self::Unknown => None,
        }
    }

    fn of_f64(a: f64, b: f64) -> Self {
        a.partial_cmp(&b).map_or(Self::Unordered, Self::Known)
    }
}

/// A date-like value as the interval of fractional days since 1970-01-01 it may be.
fn interval(v: &Value) -> Option<(f64, f64)> {
    let day = |d: Date| to_f64(days_since_epoch(d));
    match v {
        Value::Date(d) => Some((day(*d), day(*d))),
        Value::DateTime(dt) => Some((fractional_days(*dt), fractional_days(*dt))),
        Value::PartialDate(p) => Some((day(p.earliest()), day(p.latest()))),
        Value::Text(t) => {
            if let Some(d) = parse_date(t) {
                Some((day(d), day(d)))
            } else if let Some(dt) = parse_date_time(t) {
                Some((fractional_days(dt), fractional_days(dt)))
            } else {
                PartialDate::parse(t).map(|p| (day(p.earliest()), day(p.latest())))
            }
        }
        _ => None,
    }
}

#[allow(clippy::float_cmp)] // day counts are exact in f64
fn compare_intervals((alo, ahi): (f64, f64), (blo, bhi): (f64, f64)) -> Order {
    if alo == blo && ahi == bhi {
        // Identical points, or identical partial dates (`2020` = `2020`).
        Order::Known(Ordering::Equal)
    } else if ahi < blo {
        Order::Known(Ordering::Less)
    } else if alo > bhi {
        Order::Known(Ordering::Greater)
    } else {
        Order::Unknown
    }
}

/// Text that reads as a full date or date and time (not a partial date: `2020` is a number),
/// as the interval [`interval`] gives.
fn text_date(v: &Value) -> Option<(f64, f64)> {
    match v {
        Value::Text(t) if parse_date(t).is_some() || parse_date_time(t).is_some() => interval(v),
        _ => None,
    }
}

fn is_temporal(v: &Value) -> bool {
    matches!(v, Value::Date(_) | Value::DateTime(_) | Value::PartialDate(_))
}

struct Eval<'a> {
    expr: &'a Expr,
    env: &'a dyn ValueEnv,
    dialect: Dialect,
}

impl Eval<'_> {
    fn xpath(&self) -> bool {
        self.dialect.is_xpath()
    }

    fn eval(&self, node: &Node) -> Value {
        match &node.kind {
            NodeKind::Literal(l) => match l {
                Literal::Integer(i) => Value::Integer(*i),
                Literal::Decimal(d) => Value::Decimal(*d),
                Literal::Text(t) | Literal::BareWord(t) => Value::Text(t.clone()),
                Literal::Date(d) => Value::Date(*d),
            },
            NodeKind::Ref(Reference::Current) => normalise(self.env.current()),
            NodeKind::Ref(r) => normalise(self.env.value(r)),
            NodeKind::Neg(inner) => match self.num(&self.eval(inner)) {
                Some(Num::Int(i)) => i.checked_neg().map_or_else(|| Num::Dec(-to_f64(i)).value(), Value::Integer),
                Some(Num::Dec(d)) => Num::Dec(-d).value(),
                None => Value::Missing,
            },
            NodeKind::Binary(op, l, r) if op.is_logical() => self.logical(*op, l, r),
            NodeKind::Binary(op, l, r) if op.is_comparison() => {
                let (a, b) = (self.eval(l), self.eval(r));
                self.compare(*op, a, b).map_or(Value::Missing, Value::Boolean)
            }
            NodeKind::Binary(op, l, r) => {
                let (a, b) = (self.eval(l), self.eval(r));
                self.arithmetic(*op, a, b)
            }
            NodeKind::Call(f, args) => self.call(*f, args),
        }
    }

    fn condition(&self, node: &Node) -> Option<bool> {
        let v = self.eval(node);
        if self.xpath() { Some(xpath_boolean(&v)) } else { truth(&v) }
    }

    fn logical(&self, op: BinaryOp, l: &Node, r: &Node) -> Value {
        let a = self.condition(l);
        // Short-circuit: the right side cannot change a decided result.
        let decided = match op {
            BinaryOp::And => a == Some(false),
            _ => a == Some(true),
        };
        if decided {
            return Value::Boolean(op == BinaryOp::Or);
        }
        let b = self.condition(r);
        let result = if op == BinaryOp::And { kleene_and(a, b) } else { kleene_or(a, b) };
        result.map_or(Value::Missing, Value::Boolean)
    }

    /// A value as a number: XPath `number()` in XPath (booleans are 1/0, dates are days
    /// since 1970-01-01), only numbers and numeric text in OpenClinica.
    fn num(&self, v: &Value) -> Option<Num> {
        match v {
            Value::Integer(i) => Some(Num::Int(*i)),
            Value::Decimal(d) if d.is_finite() => Some(Num::Dec(*d)),
            Value::Text(t) => {
                let (n, integral) = parse_number(t)?;
                match (integral, t.trim().parse::<i64>()) {
                    (true, Ok(i)) => Some(Num::Int(i)),
                    _ => Some(Num::Dec(n)),
                }
            }
            Value::Boolean(b) if self.xpath() => Some(Num::Int(i64::from(*b))),
            Value::Date(d) if self.xpath() => Some(Num::Int(days_since_epoch(*d))),
            Value::DateTime(dt) if self.xpath() => Some(Num::Dec(fractional_days(*dt))),
            _ => None,
        }
    }

    /// A value as text: XPath `string()`.
    fn text(&self, v: &Value) -> String {
        match v {
            Value::MultiSelect(items) if self.dialect.is_openclinica() => items.join(","),
            other => other.to_text(),
        }
    }

    fn arithmetic(&self, op: BinaryOp, a: Value, b: Value) -> Value {
        // Text that reads as a date next to a date is that date (`today() - '2024-01-01'`).
        let as_temporal = |v: Value, other: &Value| match v {
            Value::Text(t) if matches!(other, Value::Date(_) | Value::DateTime(_)) => parse_date(&t)
                .map(Value::Date)
                .or_else(|| parse_date_time(&t).map(Value::DateTime))
                .unwrap_or(Value::Text(t)),
            v => v,
        };
        let a = as_temporal(a, &b);
        let b = as_temporal(b, &a);
        let oc_abs = |d: f64| if self.dialect.is_openclinica() { d.abs() } else { d };
        match (op, &a, &b) {
            (BinaryOp::Sub, Value::Date(x), Value::Date(y)) => {
                let days = days_since_epoch(*x) - days_since_epoch(*y);
                return Value::Integer(if self.dialect.is_openclinica() { days.abs() } else { days });
            }
            (BinaryOp::Sub, Value::Date(_) | Value::DateTime(_), Value::Date(_) | Value::DateTime(_)) => {
                let (x, y) = (interval(&a).map(|i| i.0), interval(&b).map(|i| i.0));
                return x.zip(y).map_or(Value::Missing, |(x, y)| Value::Decimal(oc_abs(x - y)));
            }
            (BinaryOp::Add | BinaryOp::Sub, Value::Date(d), n) | (BinaryOp::Add, n, Value::Date(d))
                if !is_temporal(n) =>
            {
                let Some(days) = self.num(n).map(Num::f).filter(|f| f.is_finite() && f.abs() < 1e7) else {
                    return Value::Missing;
                };
                #[allow(clippy::cast_possible_truncation)] // bounded above
                let days = days.floor() as i64;
                let days = if op == BinaryOp::Sub { -days } else { days };
                return date_from_days(days_since_epoch(*d) + days).map_or(Value::Missing, Value::Date);
            }
            (BinaryOp::Add | BinaryOp::Sub, Value::DateTime(dt), n) | (BinaryOp::Add, n, Value::DateTime(dt))
                if !is_temporal(n) =>
            {
                let Some(days) = self.num(n).map(Num::f).filter(|f| f.is_finite() && f.abs() < 1e7) else {
                    return Value::Missing;
                };
                #[allow(clippy::cast_possible_truncation)] // bounded above
                let ms = (days * 86_400_000.0).round() as i64;
                let ms = if op == BinaryOp::Sub { -ms } else { ms };
                return dt.checked_add(Duration::milliseconds(ms)).map_or(Value::Missing, Value::DateTime);
            }
            _ if is_temporal(&a) || is_temporal(&b) => return Value::Missing,
            _ => {}
        }
        let (Some(x), Some(y)) = (self.num(&a), self.num(&b)) else {
            return Value::Missing;
        };
        let float = |f: fn(f64, f64) -> f64| Num::Dec(f(x.f(), y.f())).value();
        match (op, x, y) {
            (BinaryOp::Add, Num::Int(i), Num::Int(j)) => {
                i.checked_add(j).map_or_else(|| float(|p, q| p + q), Value::Integer)
            }
            (BinaryOp::Sub, Num::Int(i), Num::Int(j)) => {
                i.checked_sub(j).map_or_else(|| float(|p, q| p - q), Value::Integer)
            }
            (BinaryOp::Mul, Num::Int(i), Num::Int(j)) => {
                i.checked_mul(j).map_or_else(|| float(|p, q| p * q), Value::Integer)
            }
            (BinaryOp::Mod, Num::Int(i), Num::Int(j)) => i.checked_rem(j).map_or(Value::Missing, Value::Integer),
            (BinaryOp::Add, ..) => float(|p, q| p + q),
            (BinaryOp::Sub, ..) => float(|p, q| p - q),
            (BinaryOp::Mul, ..) => float(|p, q| p * q),
            (BinaryOp::Mod, ..) => float(|p, q| p % q),
            _ => float(|p, q| p / q),
        }
    }

    fn compare(&self, op: BinaryOp, a: Value, b: Value) -> Option<bool> {
        if op == BinaryOp::Contains {
            return self.contains(&a, &b);
        }
        let order = if self.xpath() { self.xpath_order(op, a, b) } else { self.oc_order(op, &a, &b) };
        order.apply(op)
    }

    /// ODK: empty is `''`; numbers compare with numeric text; what does not convert compares
    /// like NaN (only `!=` holds).
    fn xpath_order(&self, op: BinaryOp, a: Value, b: Value) -> Order {
        let plain = |v: Value| match v {
            Value::Missing => Value::Text(String::new()),
            Value::MultiSelect(items) => Value::Text(items.join(" ")),
            v => v,
        };
        let (a, b) = (plain(a), plain(b));
        let equality = matches!(op, BinaryOp::Eq | BinaryOp::Ne);
        if matches!(a, Value::Boolean(_)) || matches!(b, Value::Boolean(_)) {
            if equality {
                return Order::Known(xpath_boolean(&a).cmp(&xpath_boolean(&b)));
            }
            return match (self.num(&a), self.num(&b)) {
                (Some(x), Some(y)) => Order::of_f64(x.f(), y.f()),
                _ => Order::Unordered,
            };
        }
        if is_temporal(&a) || is_temporal(&b) {
            let side = |v: &Value| interval(v).or_else(|| self.num(v).map(|n| (n.f(), n.f())));
            return match (side(&a), side(&b)) {
                (Some(x), Some(y)) => compare_intervals(x, y),
                _ => Order::Unordered,
            };
        }
        if let Some(order) = time_order(&a, &b) {
            return order;
        }
        if matches!(a, Value::Integer(_) | Value::Decimal(_)) || matches!(b, Value::Integer(_) | Value::Decimal(_)) {
            return match (self.num(&a), self.num(&b)) {
                (Some(x), Some(y)) => Order::of_f64(x.f(), y.f()),
                _ => Order::Unordered,
            };
        }
        let (x, y) = (self.text(&a), self.text(&b));
        if equality {
            return Order::Known(x.cmp(&y));
        }
        match (self.num(&a), self.num(&b), interval(&a), interval(&b)) {
            (Some(x), Some(y), ..) => Order::of_f64(x.f(), y.f()),
            (_, _, Some(x), Some(y)) => compare_intervals(x, y),
            _ => Order::Unordered,
        }
    }

    /// OpenClinica: an empty operand makes the comparison unknown (except `eq ""`); `eq`/`ne`
    /// compare numbers when both are numbers, dates when both are dates, else text;
    /// `gt`/`lt`/… compare dates (also text that reads as a date) or numbers only.
    fn oc_order(&self, op: BinaryOp, a: &Value, b: &Value) -> Order {
        let equality = matches!(op, BinaryOp::Eq | BinaryOp::Ne);
        match (a, b) {
            (Value::Missing, Value::Missing) => return Order::Unknown,
            (Value::Missing, Value::Text(t)) | (Value::Text(t), Value::Missing) if equality && t.is_empty() => {
                return Order::Known(Ordering::Equal);
            }
            (Value::Missing, _) | (_, Value::Missing) => return Order::Unknown,
            _ => {}
        }
        if is_temporal(a) || is_temporal(b) {
            if let (Some(x), Some(y)) = (interval(a), interval(b)) {
                return compare_intervals(x, y);
            }
        } else if let Some(order) = time_order(a, b) {
            return order;
        } else if let (Some(x), Some(y)) = (self.num(a), self.num(b)) {
            return Order::of_f64(x.f(), y.f());
        } else if !equality && let (Some(x), Some(y)) = (text_date(a), text_date(b)) {
            // OpenClinica compares dates "if both are dates", whatever item holds them: two
            // dates typed into text items compare as dates, not unknown.
            return compare_intervals(x, y);
        }
        if equality { Order::Known(self.text(a).cmp(&self.text(b))) } else { Order::Unknown }
    }

    /// OpenClinica `ct`: text contains; for a multiple choice, whether the code was chosen.
    fn contains(&self, a: &Value, b: &Value) -> Option<bool> {
        if a.is_empty() || b.is_empty() {
            return None;
        }
        let needle = self.text(b);
        Some(match a {
            Value::MultiSelect(items) => items.iter().any(|i| i.trim() == needle.trim()),
            other => self.text(other).contains(&needle),
        })
    }

    fn arg(&self, args: &[Node], i: usize) -> Value {
        args.get(i).map_or(Value::Missing, |a| self.eval(a))
    }

    fn arg_num(&self, args: &[Node], i: usize) -> Option<Num> {
        self.num(&self.arg(args, i))
    }

    fn arg_text(&self, args: &[Node], i: usize) -> String {
        self.text(&self.arg(args, i))
    }

    /// The chosen codes of a select: a multiple choice's list, or text split at spaces
    /// (XPath) or commas (OpenClinica).
    fn choices(&self, v: &Value) -> Vec<String> {
        match v {
            Value::MultiSelect(items) => items.clone(),
            Value::Missing => Vec::new(),
            other => {
                let t = self.text(other);
                if self.xpath() {
                    t.split_whitespace().map(str::to_owned).collect()
                } else {
                    t.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()
                }
            }
        }
    }

    fn call(&self, f: Function, args: &[Node]) -> Value {
        use Function as F;
        let float =
            |i: usize, g: fn(f64) -> f64| self.arg_num(args, i).map_or(Value::Missing, |n| Num::Dec(g(n.f())).value());
        match f {
            F::True => Value::Boolean(true),
            F::False => Value::Boolean(false),
            F::Not => {
                let c = args.first().and_then(|a| self.condition(a));
                kleene_not(c).map_or(Value::Missing, Value::Boolean)
            }
            F::Boolean => Value::Boolean(xpath_boolean(&self.arg(args, 0))),
            F::BooleanFromString => {
                let t = self.arg_text(args, 0);
                Value::Boolean(t.trim().eq_ignore_ascii_case("true") || t.trim() == "1")
            }
            F::Selected => {
                let wanted = self.arg_text(args, 1);
                Value::Boolean(self.choices(&self.arg(args, 0)).iter().any(|c| *c == wanted.trim()))
            }
            F::CountSelected => {
                Value::Integer(i64::try_from(self.choices(&self.arg(args, 0)).len()).unwrap_or(i64::MAX))
            }
            F::SelectedAt => {
                let choices = self.choices(&self.arg(args, 0));
                let index = self.arg_num(args, 1).map(Num::f).filter(|n| *n >= 0.0);
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // non-negative, floor
                let picked = index.and_then(|n| choices.get(n.floor() as usize));
                picked.map_or(Value::Missing, |c| Value::Text(c.clone()))
            }
            F::StringLength => {
                Value::Integer(i64::try_from(self.arg_text(args, 0).chars().count()).unwrap_or(i64::MAX))
            }
            F::String => {
                let v = if args.is_empty() { normalise(self.env.current()) } else { self.arg(args, 0) };
                Value::Text(self.text(&v))
            }
            F::Number => {
                let v = if args.is_empty() { normalise(self.env.current()) } else { self.arg(args, 0) };
                self.num(&v).map_or(Value::Missing, Num::value)
            }
            F::Int => self.arg_num(args, 0).map_or(Value::Missing, |n| match n {
                Num::Int(i) => Value::Integer(i),
                Num::Dec(d) => whole(d.trunc()),
            }),
            F::Floor => self.arg_num(args, 0).map_or(Value::Missing, |n| whole(n.f().floor())),
            F::Ceiling => self.arg_num(args, 0).map_or(Value::Missing, |n| whole(n.f().ceil())),
            F::Round => {
                let Some(x) = self.arg_num(args, 0) else { return Value::Missing };
                if args.len() < 2 {
                    // XPath round(): halves go up (round(-2.5) = -2).
                    return whole((x.f() + 0.5).floor());
                }
                match self.arg_num(args, 1) {
                    #[allow(clippy::cast_possible_truncation)] // clamped
                    Some(d) => Num::Dec(round_decimal(x.f(), d.f().clamp(-300.0, 300.0) as i32)).value(),
                    None => Value::Missing,
                }
            }
            F::Abs => match self.arg_num(args, 0) {
                Some(Num::Int(i)) => i.checked_abs().map_or(Value::Missing, Value::Integer),
                Some(Num::Dec(d)) => Value::Decimal(d.abs()),
                None => Value::Missing,
            },
            F::Pow => match (self.arg_num(args, 0), self.arg_num(args, 1)) {
                (Some(x), Some(y)) => Num::Dec(x.f().powf(y.f())).value(),
                _ => Value::Missing,
            },
            F::Sqrt => float(0, f64::sqrt),
            F::Exp => float(0, f64::exp),
            F::Log => float(0, f64::ln),
            F::Log10 => float(0, f64::log10),
            F::If => match args.first().and_then(|c| self.condition(c)) {
                Some(true) => self.arg(args, 1),
                Some(false) => self.arg(args, 2),
                None => Value::Missing,
            },
            F::Coalesce => {
                let a = self.arg(args, 0);
                if a.is_empty() { self.arg(args, 1) } else { a }
            }
            F::Once => {
                let current = normalise(self.env.current());
                if current.is_empty() { self.arg(args, 0) } else { current }
            }
            F::Concat => Value::Text((0..args.len()).map(|i| self.arg_text(args, i)).collect()),
            F::Contains => Value::Boolean(self.arg_text(args, 0).contains(&self.arg_text(args, 1))),
            F::StartsWith => Value::Boolean(self.arg_text(args, 0).starts_with(&self.arg_text(args, 1))),
            F::EndsWith => Value::Boolean(self.arg_text(args, 0).ends_with(&self.arg_text(args, 1))),
            F::Substr => self.substr(args),
            F::Substring => self.substring(args),
            F::Regex => {
                let text = self.arg_text(args, 0);
                let pattern = self.arg_text(args, 1);
                let matched = match self.expr.regex(&pattern) {
                    Some(re) => re.is_match(&text),
                    None => super::oc::compile_java_regex(&pattern, false).is_ok_and(|re| re.is_match(&text)),
                };
                Value::Boolean(matched)
            }
            F::Today => Value::Date(self.env.today()),
            F::Now => Value::DateTime(self.env.now()),
            F::Date => match self.arg(args, 0) {
                Value::Date(d) => Value::Date(d),
                Value::DateTime(dt) => Value::Date(dt.date()),
                Value::PartialDate(p) => p.as_date().map_or(Value::Missing, Value::Date),
                v @ Value::Text(_) => match interval(&v) {
                    Some(_) => parse_date(&self.text(&v))
                        .or_else(|| parse_date_time(&self.text(&v)).map(OffsetDateTime::date))
                        .map_or(Value::Missing, Value::Date),
                    None => self.num(&v).map_or(Value::Missing, |n| days_to_date(n.f())),
                },
                v => self.num(&v).map_or(Value::Missing, |n| days_to_date(n.f())),
            },
            F::DecimalDateTime => {
                let v = self.arg(args, 0);
                match interval(&v) {
                    Some((lo, hi)) if !matches!(v, Value::PartialDate(_)) || lo == hi => Num::Dec(lo).value(),
                    _ => self.num(&v).map_or(Value::Missing, |n| Num::Dec(n.f()).value()),
                }
            }
            F::FormatDate | F::FormatDateTime => {
                let v = self.arg(args, 0);
                let pattern = self.arg_text(args, 1);
                let moment = match v {
                    Value::Date(d) => Some((d, time::Time::MIDNIGHT)),
                    Value::DateTime(dt) => Some((dt.date(), dt.time())),
                    Value::Text(t) => parse_date(&t)
                        .map(|d| (d, time::Time::MIDNIGHT))
                        .or_else(|| parse_date_time(&t).map(|dt| (dt.date(), dt.time()))),
                    Value::Integer(_) | Value::Decimal(_) => match self.num(&v).map(|n| days_to_date(n.f())) {
                        Some(Value::Date(d)) => Some((d, time::Time::MIDNIGHT)),
                        _ => None,
                    },
                    _ => None,
                };
                moment.map_or(Value::Missing, |(d, t)| Value::Text(format_date_pattern(d, t, &pattern)))
            }
            F::Count => {
                let n: usize = args.iter().map(|a| self.gather(a).len()).sum();
                Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
            }
            F::Sum | F::Max | F::Min | F::Avg | F::Median | F::Stdev => self.aggregate(f, args),
            F::Decode => self.decode(args),
        }
    }

    /// The values of an aggregate argument: every row of a reference, or one value.
    fn gather(&self, arg: &Node) -> Vec<Value> {
        match &arg.kind {
            NodeKind::Ref(r) if *r != Reference::Current => self.env.values(r).into_iter().map(normalise).collect(),
            _ => vec![self.eval(arg)],
        }
    }

    /// XPath (ODK): any empty value makes the result empty (NaN), as ODK's `sum()` does.
    /// OpenClinica: empty values are skipped; all empty gives empty.
    fn aggregate(&self, f: Function, args: &[Node]) -> Value {
        let mut nums = Vec::new();
        for v in args.iter().flat_map(|a| self.gather(a)) {
            match self.num(&v) {
                Some(n) => nums.push(n),
                None if v.is_empty() && self.dialect.is_openclinica() => {}
                None => return Value::Missing,
            }
        }
        if nums.is_empty() {
            return if f == Function::Sum && self.xpath() { Value::Integer(0) } else { Value::Missing };
        }
        let all_int = nums.iter().all(|n| matches!(n, Num::Int(_)));
        let floats: Vec<f64> = nums.iter().map(|n| n.f()).collect();
        let count = to_f64(i64::try_from(floats.len()).unwrap_or(i64::MAX));
        let total: f64 = floats.iter().sum();
        match f {
            Function::Sum if all_int => nums
                .iter()
                .try_fold(0i64, |acc, n| match n {
                    Num::Int(i) => acc.checked_add(*i),
                    Num::Dec(_) => None,
                })
                .map_or(Num::Dec(total).value(), Value::Integer),
            Function::Sum => Num::Dec(total).value(),
            Function::Max | Function::Min => {
                let pick = |a: &&Num, b: &&Num| a.f().total_cmp(&b.f());
                let chosen = if f == Function::Max { nums.iter().max_by(pick) } else { nums.iter().min_by(pick) };
                chosen.map_or(Value::Missing, |n| n.value())
            }
            Function::Avg => Num::Dec(total / count).value(),
            Function::Median => {
                let mut sorted = floats;
                sorted.sort_by(f64::total_cmp);
                let mid = sorted.len() / 2;
                let m = if sorted.len().is_multiple_of(2) {
                    f64::midpoint(sorted[mid - 1], sorted[mid])
                } else {
                    sorted[mid]
                };
                Num::Dec(m).value()
            }
            _ => {
                // Sample standard deviation (n - 1), 0 for a single value.
                if floats.len() < 2 {
                    return Value::Integer(0);
                }
                let mean = total / count;
                let var = floats.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (count - 1.0);
                Num::Dec(var.sqrt()).value()
            }
        }
    }

    /// `decode(x, a, r, b, s, default)`: `r` when `x eq a`, `s` when `x eq b`, else `default`
    /// (empty without one).
    fn decode(&self, args: &[Node]) -> Value {
        let x = self.arg(args, 0);
        let mut i = 1;
        while i + 1 < args.len() {
            let candidate = self.arg(args, i);
            if self.oc_order(BinaryOp::Eq, &x, &candidate).apply(BinaryOp::Eq) == Some(true) {
                return self.arg(args, i + 1);
            }
            i += 2;
        }
        if args.len().is_multiple_of(2) { self.arg(args, args.len() - 1) } else { Value::Missing }
    }

    /// ODK `substr(s, start[, end])`: 0-based, end exclusive, clamped to the text.
    fn substr(&self, args: &[Node]) -> Value {
        let chars: Vec<char> = self.arg_text(args, 0).chars().collect();
        let len = to_f64(i64::try_from(chars.len()).unwrap_or(i64::MAX));
        let Some(start) = self.arg_num(args, 1).map(|n| n.f().floor().clamp(0.0, len)) else {
            return Value::Text(String::new());
        };
        let end =
            if args.len() > 2 { self.arg_num(args, 2).map_or(start, |n| n.f().floor().clamp(start, len)) } else { len };
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // clamped to 0..=len
        let (start, end) = (start as usize, end as usize);
        Value::Text(chars[start..end].iter().collect())
    }

    /// XPath 1.0 `substring(s, start[, length])`: 1-based, rounded, as the standard says.
    fn substring(&self, args: &[Node]) -> Value {
        let text = self.arg_text(args, 0);
        let round = |n: f64| (n + 0.5).floor();
        let Some(start) = self.arg_num(args, 1).map(|n| round(n.f())) else {
            return Value::Text(String::new());
        };
        let end = if args.len() > 2 {
            match self.arg_num(args, 2) {
                Some(l) => start + round(l.f()),
                None => return Value::Text(String::new()),
            }
        } else {
            f64::INFINITY
        };
        let picked = text
            .chars()
            .enumerate()
            .filter(|(i, _)| {
                let p = to_f64(i64::try_from(*i).unwrap_or(i64::MAX)) + 1.0;
                p >= start && p < end
            })
            .map(|(_, c)| c)
            .collect();
        Value::Text(picked)
    }
}

/// Times of day compare by time; text that reads as a time is one.
fn time_order(a: &Value, b: &Value) -> Option<Order> {
    let t = |v: &Value| match v {
        Value::Time(t) => Some(*t),
        Value::Text(s) => parse_time(s),
        _ => None,
    };
    if !matches!(a, Value::Time(_)) && !matches!(b, Value::Time(_)) {
        return None;
    }
    Some(match (t(a), t(b)) {
        (Some(x), Some(y)) => Order::Known(x.cmp(&y)),
        _ => Order::Unordered,
    })
}

fn days_to_date(days: f64) -> Value {
    if !days.is_finite() || days.abs() > 1e7 {
        return Value::Missing;
    }
    #[allow(clippy::cast_possible_truncation)] // bounded above
    let days = days.floor() as i64;
    date_from_days(days).map_or(Value::Missing, Value::Date)
}

/// Rounds half away from zero on the decimal digits as written (`round(2.675, 2)` is 2.68,
/// as a person expects, although 2.675 is stored in binary as 2.67499…).
pub(crate) fn round_decimal(x: f64, digits: i32) -> f64 {
    if !x.is_finite() {
        return x;
    }
    if digits < 0 {
        let f = 10f64.powi(-digits);
        return (x / f).round() * f;
    }
    let digits = usize::try_from(digits).unwrap_or(0);
    let text = format_number(x.abs());
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    if frac.len() <= digits || int.len() + digits > 30 {
        return x;
    }
    let kept: String = int.chars().chain(frac.chars().take(digits)).collect();
    let round_up = frac.as_bytes().get(digits).is_some_and(|d| *d >= b'5');
    let Ok(n) = kept.parse::<u128>() else { return x };
    let n = (n + u128::from(round_up)).to_string();
    let n = format!("{n:0>width$}", width = digits + 1);
    let (i, f) = n.split_at(n.len() - digits);
    let magnitude: f64 = format!("{i}.{f}0").parse().unwrap_or(x.abs());
    if x < 0.0 { -magnitude } else { magnitude }
}

/// ODK `format-date` codes: `%Y %y %m %n %b %d %e %H %h %M %S %3 %a` and `%%`; anything else
/// is copied.
fn format_date_pattern(d: Date, t: time::Time, pattern: &str) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let month = u8::from(d.month());
        match chars.next() {
            Some('Y') => out.push_str(&format!("{:04}", d.year())),
            Some('y') => out.push_str(&format!("{:02}", d.year().rem_euclid(100))),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('n') => out.push_str(&month.to_string()),
            Some('b') => out.push_str(MONTHS[usize::from(month - 1) % 12]),
            Some('d') => out.push_str(&format!("{:02}", d.day())),
            Some('e') => out.push_str(&d.day().to_string()),
            Some('H') => out.push_str(&format!("{:02}", t.hour())),
            Some('h') => out.push_str(&t.hour().to_string()),
            Some('M') => out.push_str(&format!("{:02}", t.minute())),
            Some('S') => out.push_str(&format!("{:02}", t.second())),
            Some('3') => out.push_str(&format!("{:03}", t.millisecond())),
            Some('a') => out.push_str(DAYS[usize::from(d.weekday().number_days_from_monday())]),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}
