//! OpenClinica 3 CRF `VALIDATION` (`func: range(1, 10)`, `regexp: /[A-Z]{3}/`), `func:`
//! calculations and rule targets, and the Java-to-Rust regular expression translation.

use std::fmt;

use super::ast::{Dialect, Expr, Reference, Span};
use super::diagnostic::{ExprDiagnostic, column};
use super::lexer::{Tok, lex};
use super::parser::{is_oid_shaped, parse_from, parse_oc_path};
use super::value::{Value, parse_number};

/// An OpenClinica 3 item validation (`VALIDATION` column), checked on the item's own value.
#[derive(Debug, Clone, PartialEq)]
pub enum OcValidation {
    /// `func: range(low, high)`: `low <= value <= high`.
    Range {
        /// Lower bound, inclusive.
        low: f64,
        /// Upper bound, inclusive.
        high: f64,
    },
    /// `func: gt(x)`, `gte`, `lt`, `lte`, `eq`, `ne`: `value op x`.
    Compare {
        /// The comparison.
        op: CompareOp,
        /// The right-hand side.
        value: f64,
    },
    /// `regexp: /pattern/`: the whole value matches the pattern.
    Regexp(OcRegex),
}

/// The comparison of a `func:` check, named as in ODM `RangeCheck/@Comparator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    /// `gt`
    Gt,
    /// `gte`
    Ge,
    /// `lt`
    Lt,
    /// `lte`
    Le,
    /// `eq`
    Eq,
    /// `ne`
    Ne,
}

impl CompareOp {
    /// The ODM `RangeCheck` comparator: `GT`, `GE`, `LT`, `LE`, `EQ`, `NE`.
    #[must_use]
    pub fn odm_comparator(self) -> &'static str {
        match self {
            Self::Gt => "GT",
            Self::Ge => "GE",
            Self::Lt => "LT",
            Self::Le => "LE",
            Self::Eq => "EQ",
            Self::Ne => "NE",
        }
    }

    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Self::Gt => a > b,
            Self::Ge => a >= b,
            Self::Lt => a < b,
            Self::Le => a <= b,
            #[allow(clippy::float_cmp)] // the value and the bound are both read from decimal text
            Self::Eq => a == b,
            #[allow(clippy::float_cmp)]
            Self::Ne => a != b,
        }
    }
}

/// A compiled whole-value regular expression with the pattern as the data manager wrote it.
#[derive(Debug, Clone)]
pub struct OcRegex {
    pattern: String,
    regex: regex::Regex,
}

impl OcRegex {
    /// The pattern as written (between the slashes).
    #[must_use]
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Whether the whole text matches.
    #[must_use]
    pub fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
}

impl PartialEq for OcRegex {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

impl fmt::Display for OcValidation {
    /// The validation as written in a CRF spreadsheet.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = super::value::format_number;
        match self {
            Self::Range { low, high } => write!(f, "func: range({}, {})", n(*low), n(*high)),
            Self::Compare { op, value } => {
                let name = match op {
                    CompareOp::Gt => "gt",
                    CompareOp::Ge => "gte",
                    CompareOp::Lt => "lt",
                    CompareOp::Le => "lte",
                    CompareOp::Eq => "eq",
                    CompareOp::Ne => "ne",
                };
                write!(f, "func: {name}({})", n(*value))
            }
            Self::Regexp(r) => write!(f, "regexp: /{}/", r.pattern),
        }
    }
}

impl OcValidation {
    /// Whether a value passes. An empty value always passes (requiredness is a separate
    /// check); a value that is not a number fails a numeric check.
    #[must_use]
    pub fn check(&self, value: &Value) -> bool {
        if value.is_empty() {
            return true;
        }
        let number = || match value {
            Value::Integer(i) => Some(super::value::to_f64(*i)),
            Value::Decimal(d) => Some(*d),
            Value::Text(t) => parse_number(t).map(|(n, _)| n),
            _ => None,
        };
        match self {
            Self::Range { low, high } => number().is_some_and(|v| *low <= v && v <= *high),
            Self::Compare { op, value } => number().is_some_and(|v| op.holds(v, *value)),
            Self::Regexp(r) => {
                let text = match value {
                    Value::MultiSelect(v) => v.join(","),
                    other => other.to_text(),
                };
                r.is_match(&text)
            }
        }
    }

    /// The checks as ODM `RangeCheck`s: `range(a, b)` is `GE a` and `LE b`; a regular
    /// expression has none.
    #[must_use]
    pub fn range_checks(&self) -> Vec<(CompareOp, f64)> {
        match self {
            Self::Range { low, high } => vec![(CompareOp::Ge, *low), (CompareOp::Le, *high)],
            Self::Compare { op, value } => vec![(*op, *value)],
            Self::Regexp(_) => Vec::new(),
        }
    }
}

/// Parses an OpenClinica 3 `VALIDATION` cell: `func: range(1, 10)`, `func: gt(0)`, …, or
/// `regexp: /pattern/` (a Java regular expression matched against the whole value).
///
/// # Errors
/// Every problem, with its byte range in `src`.
pub fn parse_oc_validation(src: &str) -> Result<OcValidation, Vec<ExprDiagnostic>> {
    let err = |range: std::ops::Range<usize>, m: String| vec![ExprDiagnostic::error(range, m)];
    let Some((kind, _)) = src.split_once(':') else {
        return Err(err(0..src.len(), "a validation starts with 'func:' or 'regexp:'".to_owned()));
    };
    let body_start = kind.len() + 1;
    let body = &src[body_start..];
    let kind_trimmed = kind.trim();
    if kind_trimmed.eq_ignore_ascii_case("regexp") {
        let lead = body.len() - body.trim_start().len();
        let trimmed = body.trim();
        let start = body_start + lead;
        let pattern = trimmed
            .strip_prefix('/')
            .and_then(|t| t.strip_suffix('/'))
            .filter(|_| trimmed.len() >= 2)
            .ok_or_else(|| {
                err(start..start + trimmed.len(), "write the pattern between slashes: regexp: /[A-Z]{3}/".to_owned())
            })?;
        let regex = compile_java_regex(pattern, true).map_err(|m| err(start + 1..start + 1 + pattern.len(), m))?;
        return Ok(OcValidation::Regexp(OcRegex { pattern: pattern.to_owned(), regex }));
    }
    if !kind_trimmed.eq_ignore_ascii_case("func") {
        let s = kind.len() - kind.trim_start().len();
        return Err(err(
            s..s + kind_trimmed.len(),
            format!("unknown validation type '{kind_trimmed}': use func: or regexp:"),
        ));
    }
    let toks = lex(src, body_start, Dialect::OcCalculation)?;
    let span_of = |i: usize| toks.get(i).map_or(Span::new(src.len(), src.len()), |(_, s)| *s);
    let (name, name_span) = match toks.first() {
        Some((Tok::Word(w), s)) => (w.clone(), *s),
        _ => {
            let s = span_of(0);
            return Err(err(
                s.range(),
                format!("expected a check like range(1, 10) at column {}", column(src, s.start)),
            ));
        }
    };
    if toks.get(1).map(|(t, _)| t) != Some(&Tok::LParen) {
        let s = span_of(1);
        return Err(err(s.range(), format!("expected '(' after {name} at column {}", column(src, s.start))));
    }
    // Arguments: signed numbers separated by commas.
    let mut args = Vec::new();
    let mut i = 2;
    loop {
        let arg_start = span_of(i);
        let negative = toks.get(i).map(|(t, _)| t) == Some(&Tok::Minus);
        if negative {
            i += 1;
        }
        match toks.get(i) {
            Some((Tok::Number(n), _)) => {
                let v: f64 = n.parse().unwrap_or(f64::NAN);
                args.push(if negative { -v } else { v });
                i += 1;
            }
            Some((Tok::RParen, _)) if args.is_empty() && !negative => {}
            Some((t, s)) => {
                return Err(err(
                    arg_start.to(*s).range(),
                    format!(
                        "unexpected {} at column {}: the arguments of {name}() are numbers",
                        t.describe(),
                        column(src, s.start)
                    ),
                ));
            }
            None => return Err(err(src.len()..src.len(), format!("missing ')' in {name}()"))),
        }
        match toks.get(i) {
            Some((Tok::Comma, _)) => i += 1,
            Some((Tok::RParen, _)) => {
                i += 1;
                break;
            }
            _ => {
                let s = span_of(i);
                return Err(err(
                    s.range(),
                    format!("expected ',' or ')' in {name}() at column {}", column(src, s.start)),
                ));
            }
        }
    }
    if let Some((t, s)) = toks.get(i).filter(|(t, _)| *t != Tok::Eof) {
        return Err(err(
            s.start..src.len(),
            format!("unexpected {} at column {} after the check", t.describe(), column(src, s.start)),
        ));
    }
    let call_span = name_span.start..span_of(i.saturating_sub(1)).end;
    let lower = name.to_ascii_lowercase();
    let arity_error =
        |n: usize| err(call_span.clone(), super::functions::arity_message(&lower, (n, Some(n)), args.len()));
    let compare = |op: CompareOp| -> Result<OcValidation, Vec<ExprDiagnostic>> {
        match args.as_slice() {
            [v] => Ok(OcValidation::Compare { op, value: *v }),
            _ => Err(arity_error(1)),
        }
    };
    match lower.as_str() {
        "range" => match args.as_slice() {
            [low, high] if low <= high => Ok(OcValidation::Range { low: *low, high: *high }),
            [_, _] => {
                Err(err(call_span, "range(low, high): the first number must not be greater than the second".to_owned()))
            }
            _ => Err(arity_error(2)),
        },
        "gt" => compare(CompareOp::Gt),
        "gte" => compare(CompareOp::Ge),
        "lt" => compare(CompareOp::Lt),
        "lte" => compare(CompareOp::Le),
        "eq" => compare(CompareOp::Eq),
        "ne" => compare(CompareOp::Ne),
        "getexternalvalue" => Err(err(name_span.range(), "getExternalValue() is not supported".to_owned())),
        _ => Err(err(
            name_span.range(),
            format!("unknown validation function {name}(): use range, gt, gte, lt, lte, eq or ne"),
        )),
    }
}

/// Parses an OpenClinica 3 calculation (`RESPONSE_VALUES_OR_CALCULATIONS` of a
/// `calculation`/`group-calculation` item): `func: (weight / (height * height)) * 10000`.
/// The `func:` prefix is optional; spans stay offsets in `src`.
///
/// # Errors
/// Every problem, with its byte range in `src`.
pub fn parse_oc_calculation(src: &str) -> Result<Expr, Vec<ExprDiagnostic>> {
    let lead = src.len() - src.trim_start().len();
    let start = match src[lead..].split_once(':') {
        Some((kind, _)) if kind.trim().eq_ignore_ascii_case("func") => lead + kind.len() + 1,
        _ => 0,
    };
    parse_from(src, start, Dialect::OcCalculation)
}

/// Parses an OpenClinica rule target: one OID path, where `[ALL]` is meaningful
/// (`SE_VISIT.F_VITALS.IG_VITALS_BP[ALL].I_VITALS_SYS`).
///
/// # Errors
/// When the text is not exactly one OID path.
pub fn parse_oc_target(src: &str) -> Result<Reference, Vec<ExprDiagnostic>> {
    let toks = lex(src, 0, Dialect::OcRule)?;
    match toks.as_slice() {
        [(Tok::Word(w), span), (Tok::Eof, _)] if is_oid_shaped(w) => parse_oc_path(w, span.start).map_err(|d| vec![d]),
        _ => Err(vec![ExprDiagnostic::error(
            0..src.len(),
            "a rule target is one OID path, e.g. SE_VISIT.F_VITALS.IG_VITALS_BP[ALL].I_VITALS_SYS",
        )]),
    }
}

/// Compiles a Java regular expression with the `regex` crate: `anchored` for Java's
/// `matches()` (the whole value), unanchored for ODK's `regex()` (a match anywhere, so
/// patterns are written with `^…$`). Java's POSIX classes (`\p{Alpha}`, …) are translated;
/// look-around, back-references and possessive quantifiers are refused with the reason.
///
/// # Errors
/// A message saying what is wrong with the pattern.
pub(crate) fn compile_java_regex(pattern: &str, anchored: bool) -> Result<regex::Regex, String> {
    const POSIX: &[(&str, &str)] = &[
        ("\\p{Lower}", "[[:lower:]]"),
        ("\\p{Upper}", "[[:upper:]]"),
        ("\\p{ASCII}", "[[:ascii:]]"),
        ("\\p{Alpha}", "[[:alpha:]]"),
        ("\\p{Digit}", "[[:digit:]]"),
        ("\\p{Alnum}", "[[:alnum:]]"),
        ("\\p{Punct}", "[[:punct:]]"),
        ("\\p{Graph}", "[[:graph:]]"),
        ("\\p{Print}", "[[:print:]]"),
        ("\\p{Blank}", "[[:blank:]]"),
        ("\\p{Cntrl}", "[[:cntrl:]]"),
        ("\\p{XDigit}", "[[:xdigit:]]"),
        ("\\p{Space}", "[[:space:]]"),
    ];
    let mut translated = pattern.to_owned();
    for (java, posix) in POSIX {
        translated = translated.replace(java, posix);
    }
    if ["*+", "++", "?+", "}+"].iter().any(|q| translated.contains(q)) {
        return Err("invalid regular expression: possessive quantifiers (*+, ++, ?+) are not supported".to_owned());
    }
    let full = if anchored { format!("^(?:{translated})$") } else { translated };
    regex::RegexBuilder::new(&full).size_limit(1 << 20).build().map_err(|e| {
        let detail = match &e {
            regex::Error::Syntax(s) => {
                s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(s).trim_start_matches("error: ").to_owned()
            }
            regex::Error::CompiledTooBig(_) => "the pattern is too large".to_owned(),
            other => other.to_string(),
        };
        format!("invalid regular expression: {detail}")
    })
}
