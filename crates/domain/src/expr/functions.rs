//! Which function names exist in which dialect, how many arguments they take, and which
//! well-known functions are refused (with the reason a data manager is shown).

use super::ast::{Dialect, Function};

use Function as F;

/// XLSForm / ODK functions by name. `substr` and `substring` differ (see [`Function`]).
const XPATH: &[(&str, Function)] = &[
    ("not", F::Not),
    ("true", F::True),
    ("false", F::False),
    ("selected", F::Selected),
    ("count-selected", F::CountSelected),
    ("selected-at", F::SelectedAt),
    ("string-length", F::StringLength),
    ("string", F::String),
    ("number", F::Number),
    ("int", F::Int),
    ("round", F::Round),
    ("floor", F::Floor),
    ("ceiling", F::Ceiling),
    ("abs", F::Abs),
    ("pow", F::Pow),
    ("sqrt", F::Sqrt),
    ("exp", F::Exp),
    ("log", F::Log),
    ("log10", F::Log10),
    ("if", F::If),
    ("coalesce", F::Coalesce),
    ("concat", F::Concat),
    ("contains", F::Contains),
    ("starts-with", F::StartsWith),
    ("ends-with", F::EndsWith),
    ("substr", F::Substr),
    ("substring", F::Substring),
    ("regex", F::Regex),
    ("today", F::Today),
    ("now", F::Now),
    ("date", F::Date),
    ("decimal-date-time", F::DecimalDateTime),
    ("format-date", F::FormatDate),
    ("format-date-time", F::FormatDateTime),
    ("count", F::Count),
    ("sum", F::Sum),
    ("max", F::Max),
    ("min", F::Min),
    ("once", F::Once),
    ("boolean", F::Boolean),
    ("boolean-from-string", F::BooleanFromString),
];

/// OpenClinica 3 `func:` calculation functions (names are matched case-insensitively).
const OC_CALCULATION: &[(&str, Function)] = &[
    ("sum", F::Sum),
    ("avg", F::Avg),
    ("min", F::Min),
    ("max", F::Max),
    ("median", F::Median),
    ("stdev", F::Stdev),
    ("pow", F::Pow),
    ("decode", F::Decode),
];

/// Well-known ODK functions that Casebook refuses, and why.
const XPATH_REFUSED: &[(&str, &str)] = &[
    ("jr:choice-name", "jr:choice-name() is not supported: compare the choice name instead, e.g. ${q} = 'yes'"),
    ("uuid", "uuid() is not supported: it gives a different value on every evaluation"),
    ("random", "random() is not supported: it gives a different value on every evaluation"),
    ("position", "position() is not supported: repeat positions are not available to expressions"),
    ("indexed-repeat", "indexed-repeat() is not supported yet: use sum(), count(), max() or min() over the repeat"),
    ("pulldata", "pulldata() is not supported: external CSV files are not attached to forms"),
    ("instance", "instance() is not supported: use a choice_filter on the choices sheet"),
    ("current", "current() is not supported: in a choice_filter write ${name} for a question of the form"),
    ("digest", "digest() is not supported"),
    ("area", "area() is not supported: geographic questions are stored as text"),
    ("distance", "distance() is not supported: geographic questions are stored as text"),
    ("join", "join() is not supported yet"),
    ("normalize-space", "normalize-space() is not supported yet"),
    ("translate", "translate() is not supported yet"),
];

/// Looks a function name up in a dialect. `Ok(None)`: unknown; `Err(reason)`: refused.
pub(crate) fn lookup(name: &str, dialect: Dialect) -> Result<Option<Function>, &'static str> {
    match dialect {
        Dialect::XPath | Dialect::ChoiceFilter => {
            if let Some((_, reason)) = XPATH_REFUSED.iter().find(|(n, _)| *n == name) {
                return Err(reason);
            }
            Ok(XPATH.iter().find(|(n, _)| *n == name).map(|(_, f)| *f))
        }
        Dialect::OcCalculation => {
            if name.eq_ignore_ascii_case("onchange") {
                return Err("onchange() is an instant calculation, not a calculation expression");
            }
            if name.eq_ignore_ascii_case("getExternalValue") {
                return Err("getExternalValue() is not supported");
            }
            Ok(OC_CALCULATION.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, f)| *f))
        }
        Dialect::OcRule => Ok(None),
    }
}

/// Every function name of a dialect (for "did you mean" suggestions).
pub(crate) fn names(dialect: Dialect) -> Vec<&'static str> {
    let table = if dialect.is_xpath() { XPATH } else { OC_CALCULATION };
    table.iter().map(|(n, _)| *n).collect()
}

/// The name of a function as written in a dialect.
pub(crate) fn name(func: Function, dialect: Dialect) -> &'static str {
    let table = if dialect == Dialect::OcCalculation { OC_CALCULATION } else { XPATH };
    table.iter().chain(XPATH).find(|(_, f)| *f == func).map_or("?", |(n, _)| *n)
}

/// The number of arguments a function takes: at least `.0`, at most `.1` (`None`: no limit).
pub(crate) fn arity(func: Function, dialect: Dialect) -> (usize, Option<usize>) {
    match func {
        F::True | F::False | F::Today | F::Now => (0, Some(0)),
        F::Not
        | F::CountSelected
        | F::StringLength
        | F::Int
        | F::Floor
        | F::Ceiling
        | F::Abs
        | F::Sqrt
        | F::Exp
        | F::Log
        | F::Log10
        | F::Date
        | F::DecimalDateTime
        | F::Count
        | F::Once
        | F::Boolean
        | F::BooleanFromString => (1, Some(1)),
        F::String | F::Number => (0, Some(1)),
        F::Round => (1, Some(2)),
        F::Selected
        | F::SelectedAt
        | F::Pow
        | F::Coalesce
        | F::Contains
        | F::StartsWith
        | F::EndsWith
        | F::Regex
        | F::FormatDate
        | F::FormatDateTime => (2, Some(2)),
        F::Substr | F::Substring => (2, Some(3)),
        F::If => (3, Some(3)),
        F::Concat => (1, None),
        F::Sum if dialect.is_xpath() => (1, Some(1)),
        F::Sum | F::Max | F::Min | F::Avg | F::Median | F::Stdev => (1, None),
        F::Decode => (3, None),
    }
}

/// Aggregates accept a repeating reference (every row) as an argument.
pub(crate) fn is_aggregate(func: Function) -> bool {
    matches!(func, F::Count | F::Sum | F::Max | F::Min | F::Avg | F::Median | F::Stdev)
}

/// "round() takes 1 or 2 arguments, got 3".
pub(crate) fn arity_message(name: &str, (min, max): (usize, Option<usize>), got: usize) -> String {
    let plural = |n: usize| if n == 1 { "argument" } else { "arguments" };
    let takes = match max {
        Some(0) => "no arguments".to_owned(),
        Some(m) if m == min => format!("{m} {}", plural(m)),
        Some(m) if m == min + 1 => format!("{min} or {m} arguments"),
        Some(m) => format!("{min} to {m} arguments"),
        None => format!("at least {min} {}", plural(min)),
    };
    format!("{name}() takes {takes}, got {got}")
}
