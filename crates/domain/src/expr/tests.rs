//! Data-driven tests of the expression language: each table row is an input and the expected
//! tree, diagnostics or value, in the style of rust-analyzer's `check(input, expect)`.

use std::collections::HashMap;

use time::macros::{date, datetime, time};

use super::*;

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A form: types of references, their values, repeated rows, the current value.
struct Form {
    types: HashMap<String, RefType>,
    values: HashMap<String, Value>,
    rows: HashMap<String, Vec<Value>>,
    current: Value,
}

/// How the fixture names a reference: `${age}` → `age`, `IG_G[END].I_A` → `I_A`.
fn key(r: &Reference) -> String {
    match r {
        Reference::Current => ".".to_owned(),
        Reference::Field(n) | Reference::ItemName(n) | Reference::Relative { name: n, .. } => n.clone(),
        Reference::ChoiceColumn(n) => format!("choice:{n}"),
        Reference::OcPath(p) => p.item.clone(),
        Reference::OcEvent { event, property } => format!("{}.{}", event.oid, property.keyword()),
    }
}

impl TypeEnv for Form {
    fn resolve(&self, r: &Reference) -> Result<RefType, String> {
        let kind = if matches!(r, Reference::ChoiceColumn(_)) { "choice column" } else { "item" };
        let mut t = *self.types.get(&key(r)).ok_or_else(|| format!("unknown {kind} {r}"))?;
        // An explicit row selector picks one row of a repeating group.
        if let Reference::OcPath(OcPath {
            group: Some(OcStep { repeat: Some(Repeat::End | Repeat::Index(_)), .. }),
            ..
        }) = r
        {
            t.repeats = false;
        }
        Ok(t)
    }

    fn known_names(&self, r: &Reference) -> Vec<String> {
        self.types
            .keys()
            .map(|k| match r {
                Reference::Field(_) => format!("${{{k}}}"),
                _ => k.clone(),
            })
            .collect()
    }
}

impl ValueEnv for Form {
    fn value(&self, r: &Reference) -> Value {
        self.values.get(&key(r)).cloned().unwrap_or(Value::Missing)
    }

    fn values(&self, r: &Reference) -> Vec<Value> {
        self.rows.get(&key(r)).cloned().unwrap_or_else(|| vec![self.value(r)])
    }

    fn current(&self) -> Value {
        self.current.clone()
    }

    fn today(&self) -> time::Date {
        date!(2024 - 06 - 15)
    }

    fn now(&self) -> time::OffsetDateTime {
        datetime!(2024-06-15 10:30:00 UTC)
    }
}

impl Form {
    fn with(mut self, name: &str, value: Value) -> Self {
        self.values.insert(name.to_owned(), value);
        self
    }

    fn current(mut self, value: Value) -> Self {
        self.current = value;
        self
    }
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

/// The standard test form, "today" being 2024-06-15.
fn form() -> Form {
    use ValueType as T;
    let single = [
        ("age", T::Integer),
        ("weight", T::Decimal),
        ("height", T::Decimal),
        ("name", T::Text),
        ("consent", T::Text),
        ("x", T::Text),
        ("n", T::Integer),
        ("d", T::Date),
        ("dob", T::Date),
        ("visit", T::DateTime),
        ("tm", T::Time),
        ("symptoms", T::MultiSelect),
        ("flag", T::Boolean),
        ("calc", T::Any),
        ("pd", T::PartialDate),
        ("choice:country", T::Text),
        ("choice:filter", T::Text),
        ("country", T::Text),
        // OpenClinica
        ("I_A", T::Integer),
        ("I_B", T::Integer),
        ("I_C", T::Integer),
        ("I_TXT", T::Text),
        ("I_DATE", T::Date),
        ("I_VISIT", T::Date),
        ("I_PD", T::PartialDate),
        ("I_MS", T::MultiSelect),
        ("SE_SCREEN.STARTDATE", T::Date),
        ("SE_SCREEN.STATUS", T::Text),
        // OpenClinica 3 calculations (item names)
        ("wt", T::Decimal),
        ("ht", T::Decimal),
        ("code", T::Integer),
    ];
    let repeating = [("rep_w", T::Decimal), ("rep_n", T::Integer), ("I_SYS", T::Integer)];
    let mut types: HashMap<String, RefType> =
        single.iter().map(|(k, t)| ((*k).to_owned(), RefType::single(*t))).collect();
    types.extend(repeating.iter().map(|(k, t)| ((*k).to_owned(), RefType::repeating(*t))));
    let values = [
        ("age", Value::Integer(30)),
        ("weight", Value::Decimal(70.5)),
        ("height", Value::Decimal(1.75)),
        ("name", text("Ada Lovelace")),
        ("consent", text("yes")),
        ("dob", Value::Date(date!(1990 - 06 - 15))),
        ("visit", Value::DateTime(datetime!(2024-06-10 09:00:00 UTC))),
        ("tm", Value::Time(time!(10:30))),
        ("symptoms", Value::MultiSelect(vec!["fever".into(), "cough".into()])),
        ("flag", Value::Boolean(true)),
        ("calc", text("12")),
        ("pd", Value::PartialDate(PartialDate::parse("2020").unwrap())),
        ("country", text("ke")),
        ("I_A", Value::Integer(1)),
        ("I_B", Value::Integer(5)),
        ("I_C", Value::Integer(3)),
        ("I_TXT", text("Y")),
        ("I_DATE", Value::Date(date!(2024 - 06 - 10))),
        ("I_VISIT", Value::Date(date!(2024 - 06 - 01))),
        ("I_MS", Value::MultiSelect(vec!["1".into(), "12".into()])),
        ("SE_SCREEN.STARTDATE", Value::Date(date!(2024 - 01 - 01))),
        ("SE_SCREEN.STATUS", text("completed")),
        ("wt", Value::Decimal(80.0)),
        ("ht", Value::Integer(200)),
        ("code", Value::Integer(2)),
    ];
    let rows = [
        ("rep_w", vec![Value::Integer(1), Value::Decimal(2.5), Value::Integer(3)]),
        ("rep_n", vec![Value::Integer(1), Value::Missing, Value::Integer(3)]),
        ("I_SYS", vec![Value::Integer(120), Value::Missing, Value::Integer(150)]),
    ];
    Form {
        types,
        values: values.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        rows: rows.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        current: Value::Missing,
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn parse_ok(dialect: Dialect, src: &str) -> Expr {
    Expr::parse(src, dialect).unwrap_or_else(|e| panic!("{src:?} should parse: {e:#?}"))
}

/// The tree as an s-expression: `(+ 1 (* 2 3))`.
fn sexp(node: &Node, dialect: Dialect) -> String {
    match &node.kind {
        NodeKind::Literal(Literal::Integer(i)) => i.to_string(),
        NodeKind::Literal(Literal::Decimal(d)) => format!("{d:?}"),
        NodeKind::Literal(Literal::Text(t)) => format!("'{t}'"),
        NodeKind::Literal(Literal::Date(d)) => format!("#{d}"),
        NodeKind::Literal(Literal::BareWord(w)) => format!("word:{w}"),
        NodeKind::Ref(r) => r.to_string(),
        NodeKind::Neg(inner) => format!("(neg {})", sexp(inner, dialect)),
        NodeKind::Binary(op, l, r) => format!("({} {} {})", op.symbol(dialect), sexp(l, dialect), sexp(r, dialect)),
        NodeKind::Call(f, args) => {
            let mut s = format!("({}", super::functions::name(*f, dialect));
            for a in args {
                s.push(' ');
                s.push_str(&sexp(a, dialect));
            }
            s.push(')');
            s
        }
    }
}

fn check_trees(dialect: Dialect, cases: &[(&str, &str)]) {
    for (src, expect) in cases {
        let expr = parse_ok(dialect, src);
        assert_eq!(sexp(expr.root(), dialect), *expect, "tree of {src:?}");
    }
}

fn render(diags: &[ExprDiagnostic]) -> Vec<String> {
    diags
        .iter()
        .map(|d| {
            let sev = if d.is_error() { "error" } else { "warning" };
            format!("{}..{} {sev}: {}", d.span.start, d.span.end, d.message)
        })
        .collect()
}

/// Parsing fails with exactly these diagnostics.
fn check_parse_errors(dialect: Dialect, cases: &[(&str, &[&str])]) {
    for (src, expect) in cases {
        match Expr::parse(src, dialect) {
            Ok(e) => panic!("{src:?} should not parse, got {}", sexp(e.root(), dialect)),
            Err(diags) => assert_eq!(render(&diags), *expect, "errors of {src:?}"),
        }
    }
}

/// Type checking gives exactly these diagnostics.
fn check_types(dialect: Dialect, cases: &[(&str, &[&str])]) {
    let f = form();
    for (src, expect) in cases {
        let report = parse_ok(dialect, src).check(&f);
        assert_eq!(render(&report.diagnostics), *expect, "type check of {src:?}");
    }
}

fn check_result_types(dialect: Dialect, cases: &[(&str, ValueType)]) {
    let f = form();
    for (src, expect) in cases {
        let report = parse_ok(dialect, src).check(&f);
        assert_eq!(report.result, *expect, "result type of {src:?}: {:?}", report.diagnostics);
    }
}

/// Evaluates against a form; values are shown with `Debug` (`Integer(3)`, `Missing`).
fn check_values_in(dialect: Dialect, f: &Form, cases: &[(&str, &str)]) {
    for (src, expect) in cases {
        let v = parse_ok(dialect, src).evaluate(f);
        assert_eq!(format!("{v:?}"), *expect, "value of {src:?}");
    }
}

fn check_values(dialect: Dialect, cases: &[(&str, &str)]) {
    check_values_in(dialect, &form(), cases);
}

use Dialect::{ChoiceFilter, OcCalculation, OcRule, XPath};

// ---------------------------------------------------------------------------------------------
// Parsing

#[test]
fn xpath_precedence() {
    check_trees(
        XPath,
        &[
            ("1 + 2 * 3", "(+ 1 (* 2 3))"),
            ("(1 + 2) * 3", "(* (+ 1 2) 3)"),
            ("10 - 4 - 3", "(- (- 10 4) 3)"),
            ("8 div 4 div 2", "(div (div 8 4) 2)"),
            ("7 mod 4 * 2", "(* (mod 7 4) 2)"),
            ("-2 * 3", "(* (neg 2) 3)"),
            ("- -1", "(neg (neg 1))"),
            ("-${a} + 1", "(+ (neg ${a}) 1)"),
            ("${a} = 1 or ${b} = 2 and ${c} = 3", "(or (= ${a} 1) (and (= ${b} 2) (= ${c} 3)))"),
            ("${a} or ${b} or ${c}", "(or (or ${a} ${b}) ${c})"),
            ("${a} < 1 = ${b} > 2", "(= (< ${a} 1) (> ${b} 2))"),
            ("${a} + 1 > 2 * ${b}", "(> (+ ${a} 1) (* 2 ${b}))"),
            ("1 != 2 = true()", "(= (!= 1 2) (true))"),
            (". >= 0 and . <= 120", "(and (>= . 0) (<= . 120))"),
            ("(today() - ${dob}) div 365.25", "(div (- (today) ${dob}) 365.25)"),
        ],
    );
    check_trees(
        XPath,
        &[
            ("\"it's\"", "'it's'"),
            ("'say \"hi\"'", "'say \"hi\"'"),
            ("3.", "3.0"),
            (".5", "0.5"),
            ("99999999999999999999", "1e20"),
            ("selected(${s}, 'a b')", "(selected ${s} 'a b')"),
            ("count-selected(${s}) >= 2", "(>= (count-selected ${s}) 2)"),
        ],
    );
}

#[test]
fn oc_rule_and_or_have_one_precedence() {
    check_trees(
        OcRule,
        &[
            ("I_A eq 1 or I_B eq 2 and I_C eq 3", "(and (or (eq I_A 1) (eq I_B 2)) (eq I_C 3))"),
            ("I_A eq 1 and I_B eq 2 or I_C eq 3", "(or (and (eq I_A 1) (eq I_B 2)) (eq I_C 3))"),
            ("I_A eq 1 or (I_B eq 2 and I_C eq 3)", "(or (eq I_A 1) (and (eq I_B 2) (eq I_C 3)))"),
            ("I_A EQ 1 And I_B Gt 2 AND I_C lte 3", "(and (and (eq I_A 1) (gt I_B 2)) (lte I_C 3))"),
            ("I_A + 2 * 3 gte 7", "(gte (+ I_A (* 2 3)) 7)"),
            ("I_A / 2 - 1 lt -3", "(lt (- (/ I_A 2) 1) (neg 3))"),
            ("I_TXT ct \"abc\" and I_TXT ne 'x'", "(and (ct I_TXT 'abc') (ne I_TXT 'x'))"),
            ("I_TXT eq Y", "(eq I_TXT word:Y)"),
            ("I_VISIT gt _CURRENT_DATE - 7", "(gt I_VISIT (- (today) 7))"),
            ("I_DATE lt 2024-01-31 or I_DATE gt 2024/12/31", "(or (lt I_DATE #2024-01-31) (gt I_DATE #2024-12-31))"),
            ("SE_SCREEN.STATUS eq completed", "(eq SE_SCREEN.STATUS word:completed)"),
        ],
    );
    // Mixing without parentheses works as documented, and says so.
    let e = parse_ok(OcRule, "I_A eq 1 or I_B eq 2 and I_C eq 3");
    assert_eq!(
        render(e.parse_warnings()),
        ["0..20 warning: 'or' and 'and' have the same precedence in OpenClinica and are read left to right, so this \
          reads as (I_A eq 1 or I_B eq 2) and …; add parentheses to say which is meant"]
    );
    assert!(parse_ok(OcRule, "I_A eq 1 or (I_B eq 2 and I_C eq 3)").parse_warnings().is_empty());
    assert!(parse_ok(OcRule, "I_A eq 1 and I_B eq 2 and I_C eq 3").parse_warnings().is_empty());
}

#[test]
fn oc_paths_and_repeat_selectors() {
    let path = |src: &str| match &parse_ok(OcRule, src).root().kind {
        NodeKind::Ref(r) => r.clone(),
        other => panic!("{src}: not a reference: {other:?}"),
    };
    let step = |oid: &str, repeat: Option<Repeat>| OcStep { oid: oid.to_owned(), repeat };
    assert_eq!(
        path("SE_VISIT[2].F_VITALS.IG_VITALS_BP[END].I_VITALS_SYS"),
        Reference::OcPath(OcPath {
            event: Some(step("SE_VISIT", Some(Repeat::Index(2)))),
            form: Some("F_VITALS".into()),
            group: Some(step("IG_VITALS_BP", Some(Repeat::End))),
            item: "I_VITALS_SYS".into(),
        })
    );
    assert_eq!(
        path("F_VITALS.IG_BP[ALL].I_SYS"),
        Reference::OcPath(OcPath {
            event: None,
            form: Some("F_VITALS".into()),
            group: Some(step("IG_BP", Some(Repeat::All))),
            item: "I_SYS".into(),
        })
    );
    assert_eq!(
        path("IG_BP[end].I_SYS"),
        Reference::OcPath(OcPath {
            event: None,
            form: None,
            group: Some(step("IG_BP", Some(Repeat::End))),
            item: "I_SYS".into()
        })
    );
    assert_eq!(path("I_SYS"), Reference::OcPath(OcPath { event: None, form: None, group: None, item: "I_SYS".into() }));
    assert_eq!(
        path("SE_SCREEN[1].STARTDATE"),
        Reference::OcEvent { event: step("SE_SCREEN", Some(Repeat::Index(1))), property: EventProperty::StartDate }
    );
    assert!(path("IG_BP[ALL].I_SYS").selects_all_rows());
    assert_eq!(parse_oc_target("SE_V.F_A.IG_B[ALL].I_C").unwrap().to_string(), "SE_V.F_A.IG_B[ALL].I_C");
    assert_eq!(
        render(&parse_oc_target("I_A eq 1").unwrap_err()),
        ["0..8 error: a rule target is one OID path, e.g. SE_VISIT.F_VITALS.IG_VITALS_BP[ALL].I_VITALS_SYS"]
    );
    check_parse_errors(
        OcRule,
        &[
            ("IG_A[0].I_B eq 1", &["0..7 error: '[0]' is not a repeat selector: use [1], [2], …, [END] or [ALL]"]),
            (
                "IG_A[LAST].I_B eq 1",
                &["0..10 error: '[LAST]' is not a repeat selector: use [1], [2], …, [END] or [ALL]"],
            ),
            (
                "1 eq F_A[2].IG_B.I_C",
                &[
                    "5..11 error: a repeat selector is only allowed on an event (SE_) or a group (IG_), not on the form F_A",
                ],
            ),
            (
                "SE_A.F_B.IG_C.I_D.I_E",
                &[
                    "0..21 error: SE_A.F_B.IG_C.I_D.I_E has too many parts: an OID path is at most SE_EVENT.F_FORM.IG_GROUP.I_ITEM",
                ],
            ),
            ("IG_A[2.I_B", &["4..10 error: missing ']' for the '[' at column 5"]),
        ],
    );
}

#[test]
fn syntax_errors_point_at_the_problem() {
    check_parse_errors(
        XPath,
        &[
            ("unknown(1)", &["0..7 error: unknown function unknown()"]),
            ("roud(${w}, 1)", &["0..4 error: unknown function roud(); did you mean round()?"]),
            ("'abc", &["0..4 error: unterminated text starting at column 1: add the closing '"]),
            ("${a} = \"yes", &["7..11 error: unterminated text starting at column 8: add the closing \""]),
            ("${age", &["0..5 error: unterminated reference ${ at column 1: add the closing }"]),
            (
                "${my age} > 1",
                &[
                    "0..9 error: '${my age}' at column 1 is not a valid reference: a name starts with a letter or _ and has only letters, digits, _, - and .",
                ],
            ),
            (
                "(1 + 2",
                &["0..6 error: missing ')' to close the '(' at column 1: found the end of the expression at column 7"],
            ),
            (
                "round(1.5, 2",
                &[
                    "5..12 error: missing ')' to close the 'round(' at column 6: found the end of the expression at column 13",
                ],
            ),
            ("(${a} + 1))", &["10..11 error: unexpected ')' at column 11: there is no '(' to close"]),
            ("${a} + 2) * 3", &["8..9 error: unexpected ')' at column 9: there is no '(' to close"]),
            (
                "1 2",
                &["2..3 error: unexpected the number 2 at column 3: expected an operator or the end of the expression"],
            ),
            (
                "${a} = 1 AND ${b} = 2",
                &["9..12 error: unexpected 'AND' at column 10: operators are written in lower case (and)"],
            ),
            ("${a} +", &["6..6 error: the expression ends too early at column 7: expected a value"]),
            ("* 2", &["0..1 error: unexpected '*' at column 1: expected a value"]),
            ("and ${b}", &["0..3 error: expected a value before 'and' at column 1"]),
            ("", &["0..0 error: the expression is empty"]),
            ("   ", &["0..3 error: the expression is empty"]),
            ("${a} == 1", &["5..7 error: '==' at column 6 is not an operator: write = to compare"]),
            (
                "${a} = 1 && ${b} <> 2",
                &[
                    "9..11 error: '&&' at column 10 is not an operator: write and",
                    "17..19 error: '<>' at column 18 is not an operator: write != for 'not equal'",
                ],
            ),
            ("${a} / 2", &["5..6 error: '/' at column 6: XPath divides with div, e.g. ${a} div 2"]),
            ("/data/age > 1", &["0..1 error: absolute paths like /data/x are not supported (column 1): write ${x}"]),
            ("${a}[1]", &["4..5 error: '[' at column 5: filters in [ ] are not supported"]),
            ("${a} # 1", &["5..6 error: unexpected character '#' at column 6"]),
            ("age > 18", &["0..3 error: 'age' at column 1 is not a reference: write ${age} to use the question age"]),
            ("../age > 18", &["0..6 error: relative paths like ../age are not supported here: write ${age}"]),
            ("round(1, 2, 3)", &["0..14 error: round() takes 1 or 2 arguments, got 3"]),
            ("not()", &["0..5 error: not() takes 1 argument, got 0"]),
            ("today(1)", &["0..8 error: today() takes no arguments, got 1"]),
            ("if(${a}, 1)", &["0..11 error: if() takes 3 arguments, got 2"]),
            ("concat()", &["0..8 error: concat() takes at least 1 argument, got 0"]),
            ("uuid()", &["0..4 error: uuid() is not supported: it gives a different value on every evaluation"]),
            (
                "jr:choice-name(${a}, '${a}')",
                &["0..14 error: jr:choice-name() is not supported: compare the choice name instead, e.g. ${q} = 'yes'"],
            ),
            ("regex(., '[a-')", &["9..14 error: invalid regular expression: unclosed character class"]),
            (
                "regex(., '(?=a)b')",
                &[
                    "9..17 error: invalid regular expression: look-around, including look-ahead and look-behind, is not supported",
                ],
            ),
            ("date('2024-13-01') < today()", &["5..17 error: '2024-13-01' is not a date: write it as 'YYYY-MM-DD'"]),
            // Several problems at once.
            (
                "foo(1) + round(1, 2, 3) + bar",
                &[
                    "0..3 error: unknown function foo()",
                    "9..23 error: round() takes 1 or 2 arguments, got 3",
                    "26..29 error: 'bar' at column 27 is not a reference: write ${bar} to use the question bar",
                ],
            ),
        ],
    );
    check_parse_errors(
        OcRule,
        &[
            ("I_A = 1", &["4..5 error: '=' at column 5: OpenClinica rules write eq"]),
            ("I_A >= 1", &["4..6 error: '>=' at column 5: OpenClinica rules write gte"]),
            ("sum(I_A) gt 1", &["0..3 error: 'sum(' at column 1: OpenClinica rule expressions have no functions"]),
            ("I_A eq 2024-02-30", &["7..17 error: 2024-02-30 is not a valid date"]),
            ("I_A eq 1 and", &["12..12 error: the expression ends too early at column 13: expected a value"]),
            ("I_A eq eq 1", &["7..9 error: expected a value before 'eq' at column 8"]),
        ],
    );
    // Columns count characters, not bytes.
    check_parse_errors(XPath, &[("'é' = )", &["7..8 error: unexpected ')' at column 7: expected a value"])]);
}

#[test]
fn choice_filters_read_bare_names_as_choice_columns() {
    check_trees(
        ChoiceFilter,
        &[
            ("country = ${country}", "(= country ${country})"),
            ("filter = ../x", "(= filter ../x)"),
            ("starts-with(name, ${prefix}) or true()", "(or (starts-with name ${prefix}) (true))"),
        ],
    );
    let e = parse_ok(ChoiceFilter, "country = ${country}");
    let f = form().with("choice:country", text("ke"));
    assert!(e.evaluate_condition(&f).unwrap());
    let f = form().with("choice:country", text("ug"));
    assert!(!e.evaluate_condition(&f).unwrap());
    assert!(e.check(&form()).diagnostics.is_empty());
    assert_eq!(
        render(&parse_ok(ChoiceFilter, "contry = ${country}").check(&form()).diagnostics),
        ["0..6 error: unknown choice column contry; did you mean country?"]
    );
}

#[test]
fn display_reparses_to_the_same_expression() {
    let cases: &[(Dialect, &str, &str)] = &[
        (XPath, "1+2*3", "1 + 2 * 3"),
        (XPath, "(1+2)*3", "(1 + 2) * 3"),
        (XPath, "10-(4-3)", "10 - (4 - 3)"),
        (XPath, "-(1+2)", "-(1 + 2)"),
        (XPath, "${a}=1 or (${b}=2 and ${c}=3)", "${a} = 1 or (${b} = 2 and ${c} = 3)"),
        (XPath, "${a}=1 or ${b}=2 or ${c}=3", "${a} = 1 or ${b} = 2 or ${c} = 3"),
        (XPath, "(${a}=1 or ${b}=2) and ${c}=3", "(${a} = 1 or ${b} = 2) and ${c} = 3"),
        (XPath, "selected(${s},'a') and not(${x}='')", "selected(${s}, 'a') and not(${x} = '')"),
        (XPath, "\"it's\"", "\"it's\""),
        (XPath, "365.0 div 4", "365.0 div 4"),
        (XPath, ". >= 0", ". >= 0"),
        (ChoiceFilter, "country=${country} and ../x != ''", "country = ${country} and ../x != ''"),
        (OcRule, "I_A eq 1 or I_B eq 2 and I_C eq 3", "(I_A eq 1 or I_B eq 2) and I_C eq 3"),
        (OcRule, "I_A EQ 1 AND (I_B eq 2 OR I_C eq 3)", "I_A eq 1 and (I_B eq 2 or I_C eq 3)"),
        (OcRule, "SE_V[2].F_A.IG_B[END].I_C gt _CURRENT_DATE - 7", "SE_V[2].F_A.IG_B[END].I_C gt _CURRENT_DATE - 7"),
        (OcRule, "I_T eq 'a' or I_T eq Y or I_D lt 2024/01/02", "I_T eq \"a\" or I_T eq Y or I_D lt 2024-01-02"),
        (OcCalculation, "func: (wt/(ht*ht))*10000", "wt / (ht * ht) * 10000"),
        (OcCalculation, "func: decode(code, 1, 'one', 'other')", "decode(code, 1, \"one\", \"other\")"),
    ];
    for (dialect, src, printed) in cases {
        let e = parse_ok(*dialect, src);
        assert_eq!(e.to_string(), *printed, "printing {src:?}");
        assert_eq!(parse_ok(*dialect, &e.to_string()), e, "re-parsing {printed:?}");
    }
}

/// Property-style round trip over generated trees (a small deterministic generator).
#[test]
fn display_round_trips_generated_trees() {
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }
    fn gen_node(rng: &mut Rng, dialect: Dialect, depth: u32) -> Node {
        let span = Span::default();
        let leaf = depth == 0 || rng.below(3) == 0;
        let kind = if leaf {
            match rng.below(5) {
                0 => NodeKind::Literal(Literal::Integer(i64::try_from(rng.below(1000)).unwrap())),
                1 => NodeKind::Literal(Literal::Decimal(f64::from(u32::try_from(rng.below(1000)).unwrap()) / 8.0)),
                2 => NodeKind::Literal(Literal::Text(
                    ["", "yes", "it's", "a b"][usize::try_from(rng.below(4)).unwrap()].to_owned(),
                )),
                _ if dialect == OcRule => NodeKind::Ref(Reference::OcPath(OcPath {
                    event: None,
                    form: None,
                    group: (rng.below(2) == 0).then(|| OcStep { oid: "IG_G".into(), repeat: Some(Repeat::End) }),
                    item: format!("I_{}", rng.below(5)),
                })),
                _ => NodeKind::Ref(Reference::Field(format!("q{}", rng.below(5)))),
            }
        } else {
            match rng.below(8) {
                0 => NodeKind::Neg(Box::new(gen_node(rng, dialect, depth - 1))),
                1 if dialect.is_xpath() => {
                    let f =
                        [Function::Round, Function::Concat, Function::Coalesce][usize::try_from(rng.below(3)).unwrap()];
                    let args = (0..2).map(|_| gen_node(rng, dialect, depth - 1)).collect();
                    NodeKind::Call(f, args)
                }
                _ => {
                    let ops: &[BinaryOp] = if dialect.is_xpath() {
                        &[
                            BinaryOp::Or,
                            BinaryOp::And,
                            BinaryOp::Eq,
                            BinaryOp::Ne,
                            BinaryOp::Lt,
                            BinaryOp::Ge,
                            BinaryOp::Add,
                            BinaryOp::Sub,
                            BinaryOp::Mul,
                            BinaryOp::Div,
                            BinaryOp::Mod,
                        ]
                    } else {
                        &[
                            BinaryOp::Or,
                            BinaryOp::And,
                            BinaryOp::Eq,
                            BinaryOp::Ne,
                            BinaryOp::Gt,
                            BinaryOp::Le,
                            BinaryOp::Contains,
                            BinaryOp::Add,
                            BinaryOp::Sub,
                            BinaryOp::Mul,
                            BinaryOp::Div,
                        ]
                    };
                    let op = ops[usize::try_from(rng.below(ops.len() as u64)).unwrap()];
                    let l = gen_node(rng, dialect, depth - 1);
                    let r = gen_node(rng, dialect, depth - 1);
                    NodeKind::Binary(op, Box::new(l), Box::new(r))
                }
            }
        };
        Node { kind, span }
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for dialect in [XPath, OcRule] {
        for _ in 0..500 {
            let root = gen_node(&mut rng, dialect, 4);
            let expr = Expr { source: String::new(), dialect, root, regexes: Vec::new(), warnings: Vec::new() };
            let printed = expr.to_string();
            let reparsed = Expr::parse(&printed, dialect).unwrap_or_else(|e| panic!("{printed:?}: {e:?}"));
            assert_eq!(reparsed, expr, "{printed}");
        }
    }
}

#[test]
fn references_in_order_without_duplicates() {
    let e = parse_ok(XPath, "${b} + ${a} * ${b} + . + sum(${rep_w})");
    let refs: Vec<String> = e.references().iter().map(ToString::to_string).collect();
    assert_eq!(refs, ["${b}", "${a}", "${rep_w}"]);
    assert!(e.uses_current());
    assert!(!parse_ok(XPath, "${a}").uses_current());
    let e = parse_ok(OcRule, "IG_G[END].I_A eq I_B or I_A gt SE_S.STARTDATE");
    let refs: Vec<String> = e.references().iter().map(ToString::to_string).collect();
    assert_eq!(refs, ["IG_G[END].I_A", "I_B", "I_A", "SE_S.STARTDATE"]);
    let e = parse_oc_calculation("func: sum(a, b, a) / c").unwrap();
    let refs: Vec<String> = e.references().iter().map(ToString::to_string).collect();
    assert_eq!(refs, ["a", "b", "c"]);
}

#[test]
fn circular_calculation_from_references() {
    // The importer's use: each calculation's references, then find_cycle.
    let calcs = [("bmi", "${weight} div (${height_m} * ${height_m})"), ("height_m", "${bmi} * 0 + ${height} div 100")];
    let graph: Vec<(String, Vec<String>)> = calcs
        .iter()
        .map(|(name, src)| {
            let deps = parse_ok(XPath, src)
                .references()
                .iter()
                .filter_map(|r| match r {
                    Reference::Field(n) => Some(n.clone()),
                    _ => None,
                })
                .collect();
            ((*name).to_owned(), deps)
        })
        .collect();
    assert_eq!(find_cycle(&graph).unwrap().join(" → "), "bmi → height_m → bmi");
}

// ---------------------------------------------------------------------------------------------
// Type checking

#[test]
fn unknown_references_with_suggestions() {
    check_types(
        XPath,
        &[
            ("${wieght} > 0", &["0..9 error: unknown item ${wieght}; did you mean ${weight}?"]),
            (
                "${zzz} > 0 and ${ag} > 1",
                &["0..6 error: unknown item ${zzz}", "15..20 error: unknown item ${ag}; did you mean ${age}?"],
            ),
        ],
    );
    check_types(OcRule, &[("I_AA eq 1", &["0..4 error: unknown item I_AA; did you mean I_A?"])]);
}

#[test]
fn type_errors_and_warnings() {
    check_types(
        XPath,
        &[
            // Lenient where ODK is.
            ("${age} > '18'", &[]),
            ("${age} = ''", &[]),
            ("${dob} = '' or ${symptoms} = '' or ${flag} = '' or ${visit} != ''", &[]),
            ("${dob} < '2020-01-01' and ${dob} < today()", &[]),
            ("${calc} + 1 > 2", &[]),
            ("${flag} and ${age} > 1", &[]),
            ("int(${name})", &[]),
            ("(today() - ${dob}) div 365.25 >= 18", &[]),
            ("${visit} > ${dob}", &[]),
            ("${tm} > '08:00'", &[]),
            ("sum(${rep_w}) > 10 and count(${rep_n}) < 5", &[]),
            // Strict where a mistake is certain.
            (
                "${dob} > 'yesterday'",
                &["9..20 error: ${dob} is a date but 'yesterday' is not (write it as 'YYYY-MM-DD')"],
            ),
            (
                "${name} + 1",
                &["0..7 error: arithmetic on text: ${name} is text; use number(${name}) if it holds a number"],
            ),
            ("'abc' * 2", &["0..5 error: 'abc' is text, not a number, so it cannot be used with *"]),
            ("'3' * 2", &[]),
            ("${age} = 'abc'", &["9..14 error: ${age} is a number but 'abc' is not a number"]),
            (
                "selected(${age}, '1')",
                &["9..15 error: selected() needs a select_multiple or select_one question; ${age} is an integer"],
            ),
            (
                "count-selected(${dob})",
                &["15..21 error: count-selected() needs a select_multiple or select_one question; ${dob} is a date"],
            ),
            ("${dob} + ${dob}", &["9..15 error: two dates cannot be added; subtract them to get the days between"]),
            ("${dob} * 2", &["0..6 error: ${dob} is a date: dates can only be added to or subtracted from"]),
            ("${symptoms} > 1", &["0..11 error: ${symptoms} is a multiple choice, which cannot be compared with '>'"]),
            ("${tm} > ${dob}", &["8..14 error: ${tm} is a time and cannot be compared with '>' to a date"]),
            (
                "${rep_w} > 1",
                &[
                    "0..8 error: ${rep_w} has a value for every repeated row: use it inside sum(), count(), max() or min()",
                ],
            ),
            ("round(${dob})", &["6..12 error: ${dob} is a date, which cannot be used with round()"]),
            // Works, but probably not as meant.
            (
                "${symptoms} = 'fever'",
                &[
                    "0..11 warning: ${symptoms} is a multiple choice: '=' compares all the chosen codes at once; use selected(${symptoms}, 'code') to test one choice",
                ],
            ),
            (
                "${consent} and ${age} > 1",
                &[
                    "0..10 warning: ${consent} is text used as a condition: it counts as true whenever it is not empty or zero; did you mean ${consent} = 'yes'?",
                ],
            ),
            (
                "${dob} > 0",
                &[
                    "9..10 warning: comparing the date ${dob} with a number counts days since 1970-01-01; is that meant?",
                ],
            ),
            ("${dob} > ${name}", &["9..16 warning: comparing ${dob}, a date, with ${name}, which is text"]),
        ],
    );
    check_types(
        OcRule,
        &[
            ("I_A eq 1 and I_DATE lt _CURRENT_DATE", &[]),
            ("I_TXT eq \"Y\" and I_MS ct \"12\"", &[]),
            ("I_DATE gt \"soon\"", &["10..16 error: I_DATE is a date but 'soon' is not (write it as 'YYYY-MM-DD')"]),
            (
                "I_TXT eq Y",
                &["9..10 warning: Y is not an OID, so it is read as the text \"Y\"; write \"Y\" if that is meant"],
            ),
            ("I_A and I_B eq 1", &["0..3 error: 'and' needs a comparison on each side; I_A is an integer"]),
            ("I_A gt \"abc\"", &["7..12 error: I_A is a number but 'abc' is not a number"]),
            (
                "I_SYS gt 140",
                &["0..5 error: I_SYS has a value for every repeated row: select one row with [1], [2], … or [END]"],
            ),
            ("IG_BP[END].I_SYS gt 140", &[]),
            (
                "IG_BP[ALL].I_SYS gt 140",
                &[
                    "0..16 error: IG_BP[ALL].I_SYS has a value for every repeated row ([ALL] is for rule targets): select one row with [1], [2], … or [END]",
                ],
            ),
            ("SE_SCREEN.STARTDATE lt I_DATE", &[]),
            ("I_DATE ct \"2024\"", &["0..6 error: ct compares text; I_DATE is a date"]),
        ],
    );
}

#[test]
fn result_types() {
    use ValueType as T;
    check_result_types(
        XPath,
        &[
            ("today() - ${dob}", T::Integer),
            ("(today() - ${dob}) div 365.25", T::Decimal),
            ("today() + 7", T::Date),
            ("7 + today()", T::Date),
            ("${visit} - ${dob}", T::Decimal),
            ("${age} + 1", T::Integer),
            ("${age} * ${weight}", T::Decimal),
            ("${age} div 2", T::Decimal),
            ("${age} > 1", T::Boolean),
            ("if(${age} > 1, ${weight}, '')", T::Decimal),
            ("if(${age} > 1, 1, 2.5)", T::Decimal),
            ("if(${age} > 1, 'a', 2)", T::Any),
            ("coalesce(${dob}, today())", T::Date),
            ("concat(${name}, ' ', ${age})", T::Text),
            ("round(${weight})", T::Integer),
            ("round(${weight}, 1)", T::Decimal),
            ("int(${weight})", T::Integer),
            ("count(${rep_w})", T::Integer),
            ("sum(${rep_n})", T::Integer),
            ("sum(${rep_w})", T::Decimal),
            ("date('2024-01-01')", T::Date),
            ("now()", T::DateTime),
            ("${calc}", T::Any),
            ("format-date(${dob}, '%Y')", T::Text),
        ],
    );
    check_result_types(
        OcCalculation,
        &[("wt / (ht * ht)", T::Decimal), ("decode(code, 1, 10, 2, 20)", T::Integer), ("avg(wt, ht)", T::Decimal)],
    );
    check_result_types(OcRule, &[("I_VISIT - I_DATE", T::Integer), ("_CURRENT_DATE - 7", T::Date)]);
}

#[test]
fn conditions_must_be_boolean() {
    let f = form();
    let r = parse_ok(XPath, "${age} + 1").check_condition(&f);
    assert_eq!(
        render(&r.diagnostics),
        [
            "0..10 warning: this condition gives an integer, not true or false; it counts as true when it is not empty or zero"
        ]
    );
    assert!(!r.has_errors());
    let r = parse_ok(OcRule, "I_A + 1").check_condition(&f);
    assert_eq!(render(&r.diagnostics), ["0..7 error: this condition gives an integer, not true or false"]);
    assert!(r.has_errors());
    assert!(parse_ok(XPath, "${calc}").check_condition(&f).diagnostics.is_empty());
    assert!(
        parse_ok(XPath, ". > 0")
            .check_condition(&{
                let mut f = form();
                f.types.insert(".".into(), RefType::single(ValueType::Integer));
                f
            })
            .diagnostics
            .is_empty()
    );
}

// ---------------------------------------------------------------------------------------------
// Evaluation

#[test]
fn odk_empty_semantics() {
    // x (text), n (integer) and d (date) are unanswered.
    check_values(
        XPath,
        &[
            ("${x} = ''", "Boolean(true)"),
            ("${n} = ''", "Boolean(true)"),
            ("${d} = ''", "Boolean(true)"),
            ("${x} != ''", "Boolean(false)"),
            ("${age} = ''", "Boolean(false)"),
            ("${age} != ''", "Boolean(true)"),
            ("${x} = 'yes'", "Boolean(false)"),
            ("${x} != 'yes'", "Boolean(true)"),
            ("${n} > 3", "Boolean(false)"),
            ("${n} <= 3", "Boolean(false)"),
            ("${n} = 3", "Boolean(false)"),
            ("${n} != 3", "Boolean(true)"),
            ("not(${x} = 'yes')", "Boolean(true)"),
            ("${d} < today()", "Boolean(false)"),
            ("${n} + 1", "Missing"),
            ("string-length(${x})", "Integer(0)"),
            ("concat('a', ${x}, 'b')", "Text(\"ab\")"),
            ("${x} or true()", "Boolean(true)"),
            ("${x} and true()", "Boolean(false)"),
            ("coalesce(${n}, 7)", "Integer(7)"),
            ("if(${x} = '', 'empty', 'filled')", "Text(\"empty\")"),
            ("selected(${x}, 'a')", "Boolean(false)"),
            ("count-selected(${x})", "Integer(0)"),
        ],
    );
    let relevant = parse_ok(XPath, "${consent} = 'yes'");
    assert!(relevant.is_relevant(&form()));
    assert!(!relevant.is_relevant(&form().with("consent", Value::Missing)));
    assert_eq!(relevant.evaluate_condition(&form().with("consent", Value::Missing)), Some(false));
}

#[test]
fn xpath_comparisons_and_arithmetic() {
    check_values(
        XPath,
        &[
            ("1 + 2 * 3", "Integer(7)"),
            ("10 - 4 - 3", "Integer(3)"),
            ("7 div 2", "Decimal(3.5)"),
            ("8 div 2", "Decimal(4.0)"),
            ("1 div 0", "Missing"),
            ("7 mod 3", "Integer(1)"),
            ("-7 mod 3", "Integer(-1)"),
            ("7.5 mod 2", "Decimal(1.5)"),
            ("5 mod 0", "Missing"),
            ("-${age}", "Integer(-30)"),
            ("9223372036854775807 + 1", "Decimal(9.223372036854776e18)"),
            ("${age} > '18'", "Boolean(true)"),
            ("${age} = '30'", "Boolean(true)"),
            ("${age} = 30.0", "Boolean(true)"),
            ("'10' > '9'", "Boolean(true)"),
            ("'b' > 'a'", "Boolean(false)"),
            ("'abc' = 'abc'", "Boolean(true)"),
            ("'abc' = 'ABC'", "Boolean(false)"),
            ("${calc} + 1", "Integer(13)"),
            ("${flag} = true()", "Boolean(true)"),
            ("${flag} + 1", "Integer(2)"),
            ("${symptoms} = 'fever cough'", "Boolean(true)"),
            ("${tm} > '08:00'", "Boolean(true)"),
            ("${tm} < '08:00:00'", "Boolean(false)"),
            ("3 > 2 > 0", "Boolean(true)"),
        ],
    );
}

#[test]
fn date_arithmetic_xpath() {
    check_values(
        XPath,
        &[
            ("today()", "Date(2024-06-15)"),
            ("today() - ${dob}", "Integer(12419)"),
            ("(today() - ${dob}) div 365.25", "Decimal(34.001368925393564)"),
            ("int((today() - ${dob}) div 365.25)", "Integer(34)"),
            ("today() + 1", "Date(2024-06-16)"),
            ("today() - 15", "Date(2024-05-31)"),
            ("30 + date('2024-01-31')", "Date(2024-03-01)"),
            ("today() + 1.9", "Date(2024-06-16)"),
            ("today() - '2024-06-01'", "Integer(14)"),
            ("${dob} - today()", "Integer(-12419)"),
            ("${d} - today()", "Missing"),
            ("${visit} - ${dob}", "Decimal(12414.375)"),
            ("now() - ${visit}", "Decimal(5.0625)"),
            ("${visit} + 0.5", "DateTime(2024-06-10 21:00:00.0 +00:00:00)"),
            ("${dob} < today()", "Boolean(true)"),
            ("${dob} < '1990-06-16'", "Boolean(true)"),
            ("${dob} = '1990-06-15'", "Boolean(true)"),
            ("${dob} = 'garbage'", "Boolean(false)"),
            ("${dob} != 'garbage'", "Boolean(true)"),
            ("${visit} > today()", "Boolean(false)"),
            ("${visit} > date('2024-06-10')", "Boolean(true)"),
            ("today() > 19000", "Boolean(true)"),
            ("today() = 19889", "Boolean(true)"),
            ("${dob} + ${dob}", "Missing"),
        ],
    );
}

#[test]
fn xpath_functions() {
    let f = form().current(Value::Integer(42));
    check_values_in(
        XPath,
        &f,
        &[
            ("not(1 = 1)", "Boolean(false)"),
            ("true() and not(false())", "Boolean(true)"),
            ("selected(${symptoms}, 'cough')", "Boolean(true)"),
            ("selected(${symptoms}, ' fever ')", "Boolean(true)"),
            ("selected(${symptoms}, 'rash')", "Boolean(false)"),
            ("selected('a b c', 'b')", "Boolean(true)"),
            ("count-selected(${symptoms})", "Integer(2)"),
            ("selected-at(${symptoms}, 1)", "Text(\"cough\")"),
            ("selected-at(${symptoms}, 5)", "Missing"),
            ("string-length('héllo')", "Integer(5)"),
            ("string(${age})", "Text(\"30\")"),
            ("string(7 div 2)", "Text(\"3.5\")"),
            ("string(${dob})", "Text(\"1990-06-15\")"),
            ("string()", "Text(\"42\")"),
            ("number('12.5')", "Decimal(12.5)"),
            ("number(' 12 ')", "Integer(12)"),
            ("number('12abc')", "Missing"),
            ("number(true())", "Integer(1)"),
            ("int(3.9)", "Integer(3)"),
            ("int(-3.9)", "Integer(-3)"),
            ("int('7.2')", "Integer(7)"),
            ("round(2.5)", "Integer(3)"),
            ("round(-2.5)", "Integer(-2)"),
            ("round(2.675, 2)", "Decimal(2.68)"),
            ("round(-2.675, 2)", "Decimal(-2.68)"),
            ("round(1234.5, -2)", "Decimal(1200.0)"),
            ("round(1.2, 3)", "Decimal(1.2)"),
            ("round(0.995, 2)", "Decimal(1.0)"),
            ("floor(-1.5)", "Integer(-2)"),
            ("ceiling(1.2)", "Integer(2)"),
            ("abs(-3)", "Integer(3)"),
            ("abs(-3.5)", "Decimal(3.5)"),
            ("pow(2, 10)", "Decimal(1024.0)"),
            ("pow(${weight} div 10, 0)", "Decimal(1.0)"),
            ("sqrt(16)", "Decimal(4.0)"),
            ("sqrt(-1)", "Missing"),
            ("log10(1000)", "Decimal(3.0)"),
            ("if(${age} >= 18, 'adult', 'minor')", "Text(\"adult\")"),
            ("if(${age} < 18, 'adult', 'minor')", "Text(\"minor\")"),
            ("coalesce(${x}, 'fallback')", "Text(\"fallback\")"),
            ("coalesce(${name}, 'fallback')", "Text(\"Ada Lovelace\")"),
            ("concat(${name}, ' (', ${age}, ')')", "Text(\"Ada Lovelace (30)\")"),
            ("concat(${symptoms})", "Text(\"fever cough\")"),
            ("contains(${name}, 'Love')", "Boolean(true)"),
            ("starts-with(${name}, 'Ada')", "Boolean(true)"),
            ("ends-with(${name}, 'Ada')", "Boolean(false)"),
            ("substr('abcdef', 2)", "Text(\"cdef\")"),
            ("substr('abcdef', 2, 4)", "Text(\"cd\")"),
            ("substr('abcdef', 4, 100)", "Text(\"ef\")"),
            ("substring('12345', 2, 3)", "Text(\"234\")"),
            ("substring('12345', 1.5, 2.6)", "Text(\"234\")"),
            ("substring('12345', 2)", "Text(\"2345\")"),
            ("regex('ABC123', '^[A-Z]{3}[0-9]+$')", "Boolean(true)"),
            ("regex('xABC', '[A-Z]{3}')", "Boolean(true)"),
            ("regex('abc', '^\\p{Upper}+$')", "Boolean(false)"),
            ("regex(${name}, concat('^', 'Ada'))", "Boolean(true)"),
            ("date('2024-02-29')", "Date(2024-02-29)"),
            ("date(0)", "Date(1970-01-01)"),
            ("date(19889)", "Date(2024-06-15)"),
            ("date('2024-06-15T10:00:00+02:00')", "Date(2024-06-15)"),
            ("date(${x})", "Missing"),
            ("decimal-date-time('1970-01-02T12:00:00Z')", "Decimal(1.5)"),
            ("decimal-date-time(today())", "Decimal(19889.0)"),
            ("format-date(date('2024-03-05'), '%d/%m/%Y')", "Text(\"05/03/2024\")"),
            ("format-date(date('2024-03-05'), '%e %b %y (%n) %a')", "Text(\"5 Mar 24 (3) Tue\")"),
            ("format-date-time(${visit}, '%Y-%m-%d %H:%M:%S.%3 %h')", "Text(\"2024-06-10 09:00:00.000 9\")"),
            ("format-date(${d}, '%Y')", "Missing"),
            ("format-date(19889, '%Y-%m-%d')", "Text(\"2024-06-15\")"),
            ("count(${rep_w})", "Integer(3)"),
            ("count(${rep_n})", "Integer(3)"),
            ("sum(${rep_w})", "Decimal(6.5)"),
            ("sum(${rep_n})", "Missing"),
            ("max(${rep_w})", "Integer(3)"),
            ("min(${rep_w})", "Integer(1)"),
            ("max(${age}, 45, ${weight})", "Decimal(70.5)"),
            ("min(${rep_n})", "Missing"),
            ("once(7)", "Integer(42)"),
            ("boolean('')", "Boolean(false)"),
            ("boolean('false')", "Boolean(true)"),
            ("boolean(0)", "Boolean(false)"),
            ("boolean-from-string('true')", "Boolean(true)"),
            ("boolean-from-string('1')", "Boolean(true)"),
            ("boolean-from-string('yes')", "Boolean(false)"),
            ("now()", "DateTime(2024-06-15 10:30:00.0 +00:00:00)"),
        ],
    );
    check_values(XPath, &[("once(7)", "Integer(7)"), ("string()", "Text(\"\")")]);
}

#[test]
fn kleene_truth_tables() {
    let (t, f, u) = (Some(true), Some(false), None);
    let and = [(t, t, t), (t, f, f), (t, u, u), (f, t, f), (f, f, f), (f, u, f), (u, t, u), (u, f, f), (u, u, u)];
    for (a, b, r) in and {
        assert_eq!(kleene_and(a, b), r, "{a:?} and {b:?}");
    }
    let or = [(t, t, t), (t, f, t), (t, u, t), (f, t, t), (f, f, f), (f, u, u), (u, t, t), (u, f, u), (u, u, u)];
    for (a, b, r) in or {
        assert_eq!(kleene_or(a, b), r, "{a:?} or {b:?}");
    }
    assert_eq!([kleene_not(t), kleene_not(f), kleene_not(u)], [f, t, u]);

    // The same tables through OpenClinica rules: I_A = 1, I_B = 5, I_N is empty.
    let f = form();
    for (src, expect) in [
        ("I_A eq 1 and I_N eq 1", None),
        ("I_A eq 2 and I_N eq 1", Some(false)),
        ("I_N eq 1 and I_A eq 2", Some(false)),
        ("I_A eq 1 or I_N eq 1", Some(true)),
        ("I_N eq 1 or I_A eq 1", Some(true)),
        ("I_A eq 2 or I_N eq 1", None),
        ("I_N eq 1", None),
        ("I_N ne 1", None),
        ("I_N gt 1", None),
        ("I_N eq \"\"", Some(true)),
        ("I_A eq \"\"", Some(false)),
        ("I_N ne \"\"", Some(false)),
        ("I_N eq I_M", None),
        ("I_N + 1 eq 1", None),
        ("(I_A eq 1 or I_N eq 1) and I_B eq 5", Some(true)),
    ] {
        assert_eq!(parse_ok(OcRule, src).evaluate_condition(&f), expect, "{src}");
    }
    let unknown = parse_ok(OcRule, "I_N gt 1");
    assert!(!unknown.rule_fires(&f, true));
    assert!(!unknown.rule_fires(&f, false));
    let known = parse_ok(OcRule, "I_A eq 1");
    assert!(known.rule_fires(&f, true));
    assert!(!known.rule_fires(&f, false));
}

#[test]
fn oc_rule_evaluation() {
    check_values(
        OcRule,
        &[
            ("I_A eq 1", "Boolean(true)"),
            ("I_A eq \"1\"", "Boolean(true)"),
            ("I_A eq 1.0", "Boolean(true)"),
            ("I_TXT eq \"Y\"", "Boolean(true)"),
            ("I_TXT eq Y", "Boolean(true)"),
            ("I_TXT eq \"y\"", "Boolean(false)"),
            ("I_TXT gt \"A\"", "Missing"),
            ("I_MS ct \"12\"", "Boolean(true)"),
            ("I_MS ct \"2\"", "Boolean(false)"),
            ("I_MS eq \"1,12\"", "Boolean(true)"),
            ("I_TXT ct \"Y\"", "Boolean(true)"),
            ("I_A + I_B * 2 eq 11", "Boolean(true)"),
            ("I_B / 2 eq 2.5", "Boolean(true)"),
            ("SE_SCREEN.STATUS eq completed", "Boolean(true)"),
            ("SE_SCREEN.STARTDATE lt I_DATE", "Boolean(true)"),
            ("IG_BP[END].I_A gte 1", "Boolean(true)"),
            ("I_TXT + 1", "Missing"),
        ],
    );
}

#[test]
fn date_arithmetic_openclinica() {
    // Today is 2024-06-15; I_DATE is 2024-06-10, I_VISIT 2024-06-01.
    check_values(
        OcRule,
        &[
            ("_CURRENT_DATE", "Date(2024-06-15)"),
            ("_CURRENT_DATE - 7", "Date(2024-06-08)"),
            ("I_DATE gt _CURRENT_DATE - 7", "Boolean(true)"),
            ("I_VISIT gt _CURRENT_DATE - 7", "Boolean(false)"),
            ("I_DATE - I_VISIT", "Integer(9)"),
            // OpenClinica's documented absolute difference.
            ("I_VISIT - I_DATE", "Integer(9)"),
            ("I_DATE + 30 eq 2024-07-10", "Boolean(true)"),
            ("I_DATE lt 2024/06/11", "Boolean(true)"),
            ("I_DATE eq \"2024-06-10\"", "Boolean(true)"),
            ("I_DATE gt \"soon\"", "Missing"),
            ("I_NODATE lt _CURRENT_DATE", "Missing"),
            ("I_DATE gt 5", "Missing"),
        ],
    );
}

#[test]
fn partial_dates_compare_as_intervals() {
    let f = |pd: &str| form().with("I_PD", Value::PartialDate(PartialDate::parse(pd).unwrap()));
    let lt = parse_ok(OcRule, "I_PD lt 2021-03-05");
    assert_eq!(lt.evaluate_condition(&f("2020")), Some(true));
    assert_eq!(lt.evaluate_condition(&f("2021")), None);
    assert_eq!(lt.evaluate_condition(&f("2021-02")), Some(true));
    assert_eq!(lt.evaluate_condition(&f("2021-03")), None);
    assert_eq!(lt.evaluate_condition(&f("2021-03-04")), Some(true));
    assert_eq!(lt.evaluate_condition(&f("2022")), Some(false));
    assert_eq!(parse_ok(OcRule, "I_PD eq \"2021-03\"").evaluate_condition(&f("2021-03")), Some(true));
    assert_eq!(parse_ok(OcRule, "I_PD eq \"2021\"").evaluate_condition(&f("2021-03")), None);
    assert_eq!(PartialDate::parse("2021-02").unwrap().latest(), date!(2021 - 02 - 28));
    assert_eq!(PartialDate::parse("2024-02").unwrap().latest(), date!(2024 - 02 - 29));
    assert_eq!(PartialDate::parse("2024-13"), None);
    assert_eq!(PartialDate::parse("2024-02-30"), None);
    assert_eq!(PartialDate::parse("24"), None);
    assert_eq!(PartialDate::parse("2024-06").unwrap().to_string(), "2024-06");
}

#[test]
fn aggregates_over_repeats() {
    // XPath follows ODK: a blank row makes sum() blank.
    check_values(XPath, &[("sum(${rep_w}) div count(${rep_w})", "Decimal(2.1666666666666665)")]);
    let f = form();
    assert_eq!(parse_ok(XPath, "sum(${rep_w})").calculate(&f).to_text(), "6.5");
    assert_eq!(parse_ok(XPath, "sum(${rep_n})").calculate(&f), Value::Missing);
    let mut none = form();
    none.rows.insert("rep_w".into(), Vec::new());
    check_values_in(
        XPath,
        &none,
        &[("sum(${rep_w})", "Integer(0)"), ("count(${rep_w})", "Integer(0)"), ("max(${rep_w})", "Missing")],
    );
    // OpenClinica group calculations skip blank rows.
    let mut f = form();
    f.types.insert("sys".into(), RefType::repeating(ValueType::Integer));
    f.rows.insert("sys".into(), vec![Value::Integer(120), Value::Missing, Value::Integer(150), text("130")]);
    check_values_in(
        OcCalculation,
        &f,
        &[
            ("sum(sys)", "Integer(400)"),
            ("avg(sys)", "Decimal(133.33333333333334)"),
            ("min(sys)", "Integer(120)"),
            ("max(sys)", "Integer(150)"),
            ("median(sys)", "Decimal(130.0)"),
            ("stdev(sys)", "Decimal(15.275252316519468)"),
            ("median(1, 4, 2, 3)", "Decimal(2.5)"),
            ("stdev(5)", "Integer(0)"),
            ("avg(missing_item)", "Missing"),
        ],
    );
    assert!(parse_oc_calculation("func: sum(sys)").unwrap().check(&f).diagnostics.is_empty());
    assert_eq!(
        render(&parse_oc_calculation("func: sys + 1").unwrap().check(&f).diagnostics),
        [
            "6..9 error: sys has a value for every repeated row: use it inside sum(), avg(), min(), max(), median() or stdev()"
        ]
    );
}

#[test]
fn oc_calculations() {
    check_values(
        OcCalculation,
        &[
            ("func: (wt / (ht * ht)) * 10000", "Decimal(20.0)"),
            ("func: wt / (ht / 100) / (ht / 100)", "Decimal(20.0)"),
            ("func: pow(ht, 2)", "Decimal(40000.0)"),
            ("func: decode(code, 1, 'one', 2, 'two', 'other')", "Text(\"two\")"),
            ("func: decode(code, 1, 'one', 3, 'three', 'other')", "Text(\"other\")"),
            ("func: decode(code, 1, 'one', 3, 'three')", "Missing"),
            ("FUNC: SUM(wt, ht, 1)", "Decimal(281.0)"),
            ("wt - missing", "Missing"),
        ],
    );
    assert_eq!(
        render(&parse_oc_calculation("func: sun(wt) + foo(1)").unwrap_err()),
        ["6..9 error: unknown function sun(); did you mean sum()?", "16..19 error: unknown function foo()"]
    );
    assert_eq!(
        render(&parse_oc_calculation("func: onchange(I_A, _CURRENT_DATE)").unwrap_err()),
        ["6..14 error: onchange() is an instant calculation, not a calculation expression"]
    );
    assert_eq!(
        render(&parse_oc_calculation("func: wt eq 1").unwrap_err()),
        ["9..11 error: unexpected 'eq' at column 10: expected an operator or the end of the expression"]
    );
    check_types(OcCalculation, &[("wt + unknownitem", &["5..16 error: unknown item unknownitem"])]);
}

#[test]
fn oc_validations() {
    let v = parse_oc_validation("func: range(1, 10)").unwrap();
    assert_eq!(v, OcValidation::Range { low: 1.0, high: 10.0 });
    assert_eq!(v.to_string(), "func: range(1, 10)");
    assert_eq!(v.range_checks(), [(CompareOp::Ge, 1.0), (CompareOp::Le, 10.0)]);
    for (value, ok) in [
        (Value::Integer(1), true),
        (Value::Integer(10), true),
        (Value::Decimal(10.5), false),
        (text("5"), true),
        (text("0"), false),
        (text("abc"), false),
        (Value::Missing, true),
        (text(""), true),
    ] {
        assert_eq!(v.check(&value), ok, "range(1, 10) on {value:?}");
    }
    let cases: &[(&str, OcValidation)] = &[
        ("func: gt(0)", OcValidation::Compare { op: CompareOp::Gt, value: 0.0 }),
        ("FUNC:GTE(-1.5)", OcValidation::Compare { op: CompareOp::Ge, value: -1.5 }),
        ("func: lt(100)", OcValidation::Compare { op: CompareOp::Lt, value: 100.0 }),
        ("func: lte(3)", OcValidation::Compare { op: CompareOp::Le, value: 3.0 }),
        ("func: eq(7)", OcValidation::Compare { op: CompareOp::Eq, value: 7.0 }),
        ("func: ne(7)", OcValidation::Compare { op: CompareOp::Ne, value: 7.0 }),
        ("func: range(-5, 5.5)", OcValidation::Range { low: -5.0, high: 5.5 }),
    ];
    for (src, expect) in cases {
        assert_eq!(parse_oc_validation(src).unwrap(), *expect, "{src}");
    }
    let gt = parse_oc_validation("func: gt(0)").unwrap();
    assert!(gt.check(&Value::Decimal(0.1)) && !gt.check(&Value::Integer(0)));
    assert_eq!(gt.range_checks()[0].0.odm_comparator(), "GT");

    let re = parse_oc_validation("regexp: /[A-Z]{3}/").unwrap();
    assert_eq!(re.to_string(), "regexp: /[A-Z]{3}/");
    for (value, ok) in [("ABC", true), ("ABCD", false), ("xABC", false), ("abc", false), ("", true)] {
        assert_eq!(re.check(&text(value)), ok, "regexp /[A-Z]{{3}}/ on {value:?}");
    }
    let re = parse_oc_validation("regexp: /\\p{Alpha}+|\\d{2}/").unwrap();
    assert!(re.check(&text("abc")) && re.check(&text("12")) && !re.check(&text("abc12")));
    let re = parse_oc_validation("regexp: /a/b/").unwrap();
    assert!(re.check(&text("a/b")));

    let errors: &[(&str, &[&str])] = &[
        (
            "func: range(10, 1)",
            &["6..18 error: range(low, high): the first number must not be greater than the second"],
        ),
        ("func: range(1)", &["6..14 error: range() takes 2 arguments, got 1"]),
        ("func: gt(1, 2)", &["6..14 error: gt() takes 1 argument, got 2"]),
        ("func: foo(1)", &["6..9 error: unknown validation function foo(): use range, gt, gte, lt, lte, eq or ne"]),
        ("func: range(a, 2)", &["12..13 error: unexpected 'a' at column 13: the arguments of range() are numbers"]),
        ("func: range(1, 2", &["16..16 error: expected ',' or ')' in range() at column 17"]),
        ("func: range(1, 2) x", &["18..19 error: unexpected 'x' at column 19 after the check"]),
        ("func: getExternalValue(1, 2, 3)", &["6..22 error: getExternalValue() is not supported"]),
        ("regexp: [A-Z]", &["8..13 error: write the pattern between slashes: regexp: /[A-Z]{3}/"]),
        ("regexp: /[A-Z/", &["9..13 error: invalid regular expression: unclosed character class"]),
        (
            "regexp: /a++/",
            &["9..12 error: invalid regular expression: possessive quantifiers (*+, ++, ?+) are not supported"],
        ),
        ("range(1, 2)", &["0..11 error: a validation starts with 'func:' or 'regexp:'"]),
        ("fun: range(1, 2)", &["0..3 error: unknown validation type 'fun': use func: or regexp:"]),
    ];
    for (src, expect) in errors {
        assert_eq!(render(&parse_oc_validation(src).unwrap_err()), *expect, "{src}");
    }
}

#[test]
fn data_entry_helpers() {
    let constraint = parse_ok(XPath, ". >= 18 and . <= 120");
    assert!(constraint.constraint_ok(&form().current(Value::Integer(30))));
    assert!(!constraint.constraint_ok(&form().current(Value::Integer(12))));
    assert!(constraint.constraint_ok(&form().current(Value::Missing)), "empty is not checked");
    assert!(constraint.constraint_ok(&form().current(text(""))), "empty text is not checked");
    let regex = parse_ok(XPath, "regex(., '^[0-9]{3}$')");
    assert!(regex.constraint_ok(&form().current(text("123"))));
    assert!(!regex.constraint_ok(&form().current(text("1234"))));

    // Unknown (OpenClinica) conditions: shown, not required, constraint accepted.
    let unknown = parse_ok(OcRule, "I_N eq 1");
    let f = form().current(Value::Integer(1));
    assert!(unknown.is_relevant(&f));
    assert!(!unknown.is_required(&f));
    assert!(unknown.constraint_ok(&f));

    assert!(parse_ok(XPath, "${age} > 18").is_required(&form()));
    assert_eq!(Required::parse("yes").unwrap(), Required::Always);
    assert_eq!(Required::parse(" TRUE() ").unwrap(), Required::Always);
    assert_eq!(Required::parse("").unwrap(), Required::Never);
    assert_eq!(Required::parse("no").unwrap(), Required::Never);
    assert!(matches!(Required::parse("${age} > 18").unwrap(), Required::When(_)));
    assert!(Required::parse("${age} >").is_err());
}

#[test]
fn calculations_store_numbers_as_people_write_them() {
    let f = form();
    for (src, stored) in [
        ("10 div 4", "2.5"),
        ("8 div 4", "2"),
        ("0.1 + 0.2", "0.3"),
        ("1 div 3", "0.333333333333333"),
        ("2 div 3", "0.666666666666667"),
        ("1 div 0", ""),
        ("0.0000001 * 1", "0.0000001"),
        ("1000000 * 1000000 * 1000000.0", "1000000000000000000"),
        ("-0.0 * 1", "0"),
        ("${age} > 1", "true"),
        ("today() + 1", "2024-06-16"),
        ("concat('a', 1.50)", "a1.5"),
        ("${x}", ""),
        ("round(${weight} div ${height} div ${height}, 1)", "23"),
        ("round(${weight} div (${height} * ${height}), 2)", "23.02"),
    ] {
        assert_eq!(parse_ok(XPath, src).calculate(&f).to_text(), stored, "{src}");
    }
    assert_eq!(parse_ok(XPath, "${x}").calculate(&f), Value::Missing);
    assert_eq!(format_number(123_456.789), "123456.789");
    assert_eq!(format_number(1e21), "1000000000000000000000");
    assert_eq!(format_number(f64::NAN), "");
    assert_eq!(Value::DateTime(datetime!(2024-06-15 10:30:00 +02:00)).to_text(), "2024-06-15T10:30:00+02:00");
    assert_eq!(Value::Time(time!(08:05:09)).to_text(), "08:05:09");
    assert_eq!(Value::MultiSelect(vec!["a".into(), "b".into()]).to_text(), "a b");
}

#[test]
fn did_you_mean_suggests_close_names_only() {
    let names = ["weight", "height", "age"];
    assert_eq!(did_you_mean("wieght", &names), Some("weight"));
    assert_eq!(did_you_mean("HEIGTH", &names), Some("height"));
    assert_eq!(did_you_mean("ag", &names), Some("age"));
    assert_eq!(did_you_mean("zzz", &names), None);
    assert_eq!(did_you_mean("bmi", &names), None);
}

#[test]
fn huge_or_deep_expressions_are_refused_not_crashing() {
    let deep = format!("{}1{}", "(".repeat(100), ")".repeat(100));
    assert_eq!(
        render(&parse_xpath(&deep).unwrap_err()),
        ["64..65 error: the expression is nested too deeply at column 65"]
    );
    let long = vec!["1"; 2100].join(" + ");
    assert_eq!(
        render(&parse_xpath(&long).unwrap_err()),
        [format!(
            "0..{} error: the expression is too long (more than 4000 parts): split it into calculations",
            long.len()
        )]
    );
    // The longest accepted chain is checked, evaluated and printed on a 2 MiB stack (tokio's
    // worker default) without overflowing.
    let longest = vec!["${age}"; 2000].join(" + ");
    let nested = format!("{}${{age}}{}", "-(".repeat(31), ")".repeat(31));
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            for src in [longest, nested] {
                let e = parse_xpath(&src).unwrap();
                let f = form();
                assert!(e.check(&f).diagnostics.is_empty());
                assert!(!e.evaluate(&f).is_empty());
                assert_eq!(parse_xpath(&e.to_string()).unwrap(), e);
            }
        })
        .unwrap()
        .join()
        .unwrap();
}
