//! OpenClinica rule expression semantics (reference `openclinica-data-model.md` §10.4), one
//! table row per documented behaviour, evaluated through the real parser and evaluator with
//! values as the data-entry layer gives them (typed by the item's data type; text items hold
//! whatever was typed, so numbers and dates can also arrive as text).

use std::collections::HashMap;

use time::macros::{date, datetime};

use super::*;

/// Item values by OID; "today" is 2024-06-15.
struct Values(HashMap<&'static str, Value>);

impl ValueEnv for Values {
    fn value(&self, r: &Reference) -> Value {
        let key = match r {
            Reference::OcPath(p) => p.item.as_str(),
            _ => "",
        };
        self.0.get(key).cloned().unwrap_or(Value::Missing)
    }

    fn current(&self) -> Value {
        Value::Missing
    }

    fn today(&self) -> time::Date {
        date!(2024 - 06 - 15)
    }

    fn now(&self) -> time::OffsetDateTime {
        datetime!(2024-06-15 10:30:00 UTC)
    }
}

fn values() -> Values {
    let text = |s: &str| Value::Text(s.to_owned());
    Values(HashMap::from([
        ("I_INT", Value::Integer(5)),
        ("I_INT10", Value::Integer(10)),
        ("I_REAL", Value::Decimal(5.0)),
        ("I_TXT_NUM", text("5.0")),
        ("I_TXT_09", text("09")),
        ("I_TXT", text("Yes")),
        ("I_DATE", Value::Date(date!(2024 - 06 - 10))),
        ("I_DATE2", Value::Date(date!(2024 - 05 - 01))),
        ("I_TXT_DATE", text("2024-06-10")),
        ("I_TXT_DATE2", text("2024-05-01")),
        ("I_MS", Value::MultiSelect(vec!["1".into(), "12".into()])),
        ("I_EMPTY", Value::Missing),
    ]))
}

const T: Option<bool> = Some(true);
const F: Option<bool> = Some(false);
/// Unknown: the rule fires neither when true nor when false.
const U: Option<bool> = None;

/// (expression, result) for every row; on failure every wrong row is listed.
fn check(cases: &[(&str, Option<bool>)]) {
    let env = values();
    let wrong: Vec<String> = cases
        .iter()
        .filter_map(|(src, expect)| {
            let expr = parse_oc_rule(src).unwrap_or_else(|e| panic!("{src:?} should parse: {e:?}"));
            let got = expr.evaluate_condition(&env);
            (got != *expect).then(|| format!("{src}: expected {expect:?}, got {got:?}"))
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn eq_and_ne_compare_numbers_when_both_sides_are_numbers_else_text() {
    check(&[
        ("I_INT eq 5", T),
        ("I_INT eq 5.0", T),
        ("I_INT eq \"5.0\"", T),
        ("I_REAL eq I_INT", T),
        ("I_TXT_NUM eq I_INT", T),
        ("I_TXT_09 eq 9", T),
        ("I_TXT_09 eq \"9\"", T),
        ("I_INT ne 6", T),
        ("I_INT eq \"5a\"", F),
        ("I_INT ne \"five\"", T),
        ("I_TXT eq \"Yes\"", T),
        ("I_TXT eq \"yes\"", F),
        ("I_TXT ne \"No\"", T),
        ("I_TXT_DATE eq \"2024-06-10\"", T),
        ("I_DATE eq \"2024-06-10\"", T),
        ("I_DATE eq I_TXT_DATE", T),
    ]);
}

#[test]
fn relational_operators_compare_dates_when_both_are_dates_else_numbers() {
    check(&[
        ("I_INT10 gt 9", T),
        ("I_INT10 gte 10", T),
        ("I_INT lt I_INT10", T),
        ("I_INT lte 4", F),
        // Numbers, not text: "10" is after "9".
        ("\"10\" gt \"9\"", T),
        ("I_TXT_NUM lt 10", T),
        ("I_DATE gt I_DATE2", T),
        ("I_DATE gt 2024-06-09", T),
        ("I_DATE lte 2024/06/10", T),
        ("I_DATE lt \"2024-06-11\"", T),
        // Dates typed into text items are dates too.
        ("I_TXT_DATE gt I_TXT_DATE2", T),
        ("I_TXT_DATE2 gte I_DATE", F),
        // Neither both dates nor both numbers: no answer.
        ("I_DATE gt 5", U),
        ("I_TXT gt \"A\"", U),
    ]);
}

#[test]
fn ct_tests_whether_text_contains_text_or_a_choice_was_made() {
    check(&[
        ("I_TXT ct \"es\"", T),
        ("I_TXT ct \"no\"", F),
        ("I_MS ct \"12\"", T),
        ("I_MS ct \"2\"", F),
        ("I_INT10 ct 1", T),
    ]);
}

#[test]
fn and_or_have_one_precedence_and_read_left_to_right() {
    check(&[
        // (true or false) and false; XPath precedence would give true.
        ("I_INT eq 5 or I_INT eq 6 and I_INT eq 7", F),
        // (false and false) or true.
        ("I_INT eq 7 and I_INT eq 6 or I_INT eq 5", T),
        ("I_INT eq 5 or (I_INT eq 6 and I_INT eq 7)", T),
        // Comparisons bind tighter than and/or, arithmetic tighter than comparisons.
        ("I_INT + I_INT10 * 2 eq 25", T),
        ("(I_INT + I_INT10) * 2 eq 30", T),
        ("I_INT10 / 4 eq 2.5", T),
        ("-I_INT + 10 eq 5", T),
        ("I_INT10 - I_INT - 1 eq 4", T),
    ]);
}

#[test]
fn date_arithmetic_counts_days() {
    check(&[
        ("I_DATE + 28 eq 2024-07-08", T),
        ("I_DATE - 10 eq 2024-05-31", T),
        ("28 + I_DATE eq 2024-07-08", T),
        ("I_DATE - I_DATE2 eq 40", T),
        // The difference of two dates is absolute, as OpenClinica documents.
        ("I_DATE2 - I_DATE eq 40", T),
        ("I_TXT_DATE - I_DATE2 eq 40", T),
        ("_CURRENT_DATE - I_DATE eq 5", T),
    ]);
}

#[test]
fn current_date_is_today_from_the_environment() {
    check(&[
        ("_CURRENT_DATE eq 2024-06-15", T),
        ("I_DATE lt _CURRENT_DATE", T),
        ("I_DATE gt _CURRENT_DATE - 7", T),
        ("I_DATE2 gt _CURRENT_DATE - 7", F),
        ("_current_date eq 2024-06-15", T),
    ]);
}

#[test]
fn empty_values_leave_the_rule_unknown_so_it_does_not_fire() {
    check(&[
        ("I_EMPTY eq 5", U),
        ("I_EMPTY ne 5", U),
        ("I_EMPTY gt 5", U),
        ("I_EMPTY lt _CURRENT_DATE", U),
        ("I_EMPTY gt I_DATE", U),
        ("I_DATE gt I_EMPTY", U),
        ("I_EMPTY + 28 eq I_DATE", U),
        ("I_EMPTY ct \"a\"", U),
        // Testing for emptiness is the one comparison that answers.
        ("I_EMPTY eq \"\"", T),
        ("I_EMPTY ne \"\"", F),
        ("I_INT eq \"\"", F),
        // Kleene logic: a decided side decides.
        ("I_EMPTY eq 5 and I_INT eq 6", F),
        ("I_EMPTY eq 5 or I_INT eq 5", T),
        ("I_EMPTY eq 5 and I_INT eq 5", U),
    ]);
    let env = values();
    for src in ["I_EMPTY gt 5", "I_EMPTY lt _CURRENT_DATE"] {
        let rule = parse_oc_rule(src).unwrap();
        assert!(!rule.rule_fires(&env, true) && !rule.rule_fires(&env, false), "{src} fired");
    }
    let rule = parse_oc_rule("I_INT gt 1").unwrap();
    assert!(rule.rule_fires(&env, true) && !rule.rule_fires(&env, false));
}
