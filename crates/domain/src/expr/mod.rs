//! The expression language of study designs: skip logic, edit checks, calculations and rules.
//!
//! Expressions come from three places in an uploaded design, each with its own syntax, and
//! share one syntax tree ([`Expr`]), one type checker and one evaluator, so the server and the
//! web UI agree on every answer:
//!
//! | Dialect | Where | Parser |
//! |---|---|---|
//! | [`Dialect::XPath`] | XLSForm `relevant`, `constraint`, `calculation`, `required`, `default` | [`parse_xpath`] |
//! | [`Dialect::ChoiceFilter`] | XLSForm `choice_filter` (bare names are choice columns) | [`parse_choice_filter`] |
//! | [`Dialect::OcRule`] | OpenClinica 3 rule expressions over OID paths | [`parse_oc_rule`] |
//! | [`Dialect::OcCalculation`] | OpenClinica 3 CRF `func:` calculations over item names | [`parse_oc_calculation`] |
//!
//! OpenClinica 3 `VALIDATION` cells (`func: range(1, 10)`, `regexp: /[A-Z]{3}/`) are checks on
//! the item's own value rather than expressions: [`parse_oc_validation`] gives an
//! [`OcValidation`]. Rule targets (where `[ALL]` belongs) are parsed by [`parse_oc_target`].
//!
//! # Life cycle
//! Parse once at upload (syntax errors, unknown functions, wrong argument counts, invalid
//! regular expressions and date literals, all at once, with byte spans and columns in the
//! messages); type check against the form with [`Expr::check`] / [`Expr::check_condition`]
//! through the caller's [`TypeEnv`]; list dependencies with [`Expr::references`] and
//! [`find_cycle`]; evaluate on every save through the caller's [`ValueEnv`], which also
//! supplies today's date and the time (no clock is read here).
//!
//! # Semantics decisions
//! - **XPath follows ODK.** An empty value is the empty string `''` (and NaN as a number):
//!   `${x} = ''` is true when x is empty, `${x} = 'yes'` and `${x} > 3` are false, `${x} != 3`
//!   is true (NaN differs from everything), `${x} + 1` is empty. Conditions convert with
//!   `boolean()` (empty, zero and NaN are false), so XPath logic is two-valued and never unknown.
//!   Numbers compare with numeric text (`${age} > '18'`); a date compares with date text and
//!   with numbers as days since 1970-01-01. `sum()`/`max()`/`min()` over rows with an empty
//!   value are empty, as in ODK (use `coalesce`). `regex()` matches anywhere (write `^…$`).
//! - **OpenClinica rules use Kleene three-valued logic.** A comparison with an empty operand is
//!   unknown (except `eq ""`, the emptiness test); `false and unknown` is false, `true or
//!   unknown` is true; a rule whose expression is unknown does not fire ([`Expr::rule_fires`]).
//!   `and` and `or` have ONE precedence and are read left to right, as OpenClinica documents:
//!   `A or B and C` is `(A or B) and C` (the parser warns when they are mixed without
//!   parentheses). `eq`/`ne` compare numbers when both sides are numbers, dates when both are
//!   dates, else text; `gt`/`lt`/… compare numbers or dates only (dates typed into text items
//!   included), anything else is unknown. Unquoted words that are not
//!   OID-shaped (`I_A eq Y`) are text, with a warning. `ct` on a multiple choice tests one code.
//! - **Dates in arithmetic are days.** date − date = days (OpenClinica: the absolute
//!   difference, as documented), date ± number = date, so `(today() - ${dob}) div 365.25` is
//!   years and `I_VISIT gt _CURRENT_DATE - 7` works. Partial dates compare as the interval of
//!   days they may be (`2020` is before `2021-03-05`; `2021` against it is unknown).
//! - **Data-entry helpers decide unknowns deliberately:** [`Expr::is_relevant`] shows a question
//!   when unknown; [`Expr::constraint_ok`] accepts an empty value without evaluating (required
//!   is a separate check) and accepts unknown; [`Expr::is_required`] is false when unknown;
//!   [`Expr::calculate`] gives [`Value::Missing`] for empty or impossible results, and
//!   [`Value::to_text`] writes numbers without `.0` and without exponents.
//! - **Refused, with a reason:** `uuid()`, `random()` (non-deterministic), `jr:choice-name()`,
//!   `position()`, `indexed-repeat()`, `pulldata()`, `instance()`, paths and filters.

mod ast;
mod cycle;
mod diagnostic;
mod eval;
mod functions;
mod lexer;
mod oc;
mod parser;
mod types;
mod value;

#[cfg(test)]
mod rule_semantics_tests;
#[cfg(test)]
mod tests;

pub use ast::{
    BinaryOp, Dialect, EventProperty, Expr, Function, Literal, Node, NodeKind, OcPath, OcStep, Reference, Repeat, Span,
};
pub use cycle::find_cycle;
pub use diagnostic::{ExprDiagnostic, Severity};
pub use eval::{ValueEnv, kleene_and, kleene_not, kleene_or};
pub use oc::{CompareOp, OcRegex, OcValidation, parse_oc_calculation, parse_oc_target, parse_oc_validation};
pub use types::{RefType, TypeEnv, TypeReport, ValueType, did_you_mean};
pub use value::{PartialDate, Value, format_number};

impl Expr {
    /// Parses an expression in a dialect.
    ///
    /// # Errors
    /// Every problem found (syntax errors stop at the first), with byte spans.
    pub fn parse(src: &str, dialect: Dialect) -> Result<Expr, Vec<ExprDiagnostic>> {
        match dialect {
            Dialect::OcCalculation => parse_oc_calculation(src),
            _ => parser::parse_from(src, 0, dialect),
        }
    }
}

/// Parses an XLSForm expression (`relevant`, `constraint`, `calculation`, `required`,
/// `default`): `${age} >= 18 and selected(${symptoms}, 'fever')`.
///
/// # Errors
/// Every problem found, with byte spans.
pub fn parse_xpath(src: &str) -> Result<Expr, Vec<ExprDiagnostic>> {
    Expr::parse(src, Dialect::XPath)
}

/// Parses an XLSForm `choice_filter`: `country = ${country}`, where `country` is a column of
/// the choices sheet.
///
/// # Errors
/// Every problem found, with byte spans.
pub fn parse_choice_filter(src: &str) -> Result<Expr, Vec<ExprDiagnostic>> {
    Expr::parse(src, Dialect::ChoiceFilter)
}

/// Parses an OpenClinica 3 rule expression: `SE_VISIT[2].F_VITALS.IG_VITALS_BP[END].I_SYS gt 140`.
///
/// # Errors
/// Every problem found, with byte spans.
pub fn parse_oc_rule(src: &str) -> Result<Expr, Vec<ExprDiagnostic>> {
    Expr::parse(src, Dialect::OcRule)
}

/// The XLSForm `required` column: `yes`/`true`/`true()`, `no`/`false`/`false()`/blank, or an
/// expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Required {
    /// Always required.
    Always,
    /// Never required.
    Never,
    /// Required when the expression is true.
    When(Box<Expr>),
}

impl Required {
    /// Parses the `required` column.
    ///
    /// # Errors
    /// Every problem of an expression, with byte spans.
    pub fn parse(src: &str) -> Result<Self, Vec<ExprDiagnostic>> {
        match src.trim().to_ascii_lowercase().as_str() {
            "yes" | "true" | "true()" => Ok(Self::Always),
            "" | "no" | "false" | "false()" => Ok(Self::Never),
            _ => parse_xpath(src).map(|e| Self::When(Box::new(e))),
        }
    }
}
