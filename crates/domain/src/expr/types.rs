//! Type checking against the form definition: unknown references, type mismatches and misuse,
//! every problem with its span, and the type of the whole expression.
//!
//! The checker is lenient where ODK is (numbers compare with numeric text, `${x} = ''` works for
//! every type, booleans convert), strict where a mistake is certain (arithmetic on text,
//! comparing a date with text that is not a date, `selected()` on a question that is not a
//! select) and warns where the expression works but probably not as meant (`${consent} and …`
//! on a text, `${multi} = 'a'` on a multiple choice).

use super::ast::{BinaryOp, Dialect, Expr, Function, Literal, Node, NodeKind, Reference};
use super::diagnostic::ExprDiagnostic;
use super::functions;
use super::value::{PartialDate, parse_date, parse_date_time, parse_number, parse_time};

/// The type of a value, as far as it can be known before the data is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    /// Text, and single-select choice codes.
    Text,
    /// Whole numbers.
    Integer,
    /// Numbers with decimals.
    Decimal,
    /// True or false.
    Boolean,
    /// Calendar dates.
    Date,
    /// Date and time.
    DateTime,
    /// Time of day.
    Time,
    /// OpenClinica PDATE.
    PartialDate,
    /// Multiple-choice answers.
    MultiSelect,
    /// Not knowable (e.g. an XLSForm `calculate`, whose type is that of its expression).
    Any,
}

impl ValueType {
    /// The name shown in messages.
    #[must_use]
    pub fn describe(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Integer => "an integer",
            Self::Decimal => "a decimal number",
            Self::Boolean => "true/false",
            Self::Date => "a date",
            Self::DateTime => "a date and time",
            Self::Time => "a time",
            Self::PartialDate => "a partial date",
            Self::MultiSelect => "a multiple choice",
            Self::Any => "any value",
        }
    }

    /// Whether a condition (relevant, constraint, required, rule) may have this type.
    #[must_use]
    pub fn is_boolean_ish(self) -> bool {
        matches!(self, Self::Boolean | Self::Any)
    }

    fn is_numeric(self) -> bool {
        matches!(self, Self::Integer | Self::Decimal)
    }

    fn is_temporal(self) -> bool {
        matches!(self, Self::Date | Self::DateTime | Self::PartialDate | Self::Time)
    }
}

/// What the environment knows about a reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefType {
    /// Its type.
    pub ty: ValueType,
    /// Whether it has several values: an item in a repeating group (not the current row),
    /// a repeat itself, an OpenClinica path with `[ALL]`. Such a reference is only allowed
    /// inside an aggregate (`sum`, `count`, `max`, `min`, `avg`, …).
    pub repeats: bool,
}

impl RefType {
    /// A single value of a type.
    #[must_use]
    pub fn single(ty: ValueType) -> Self {
        Self { ty, repeats: false }
    }

    /// A repeating value of a type.
    #[must_use]
    pub fn repeating(ty: ValueType) -> Self {
        Self { ty, repeats: true }
    }
}

/// What the caller knows about the form: implemented by the importer over the form
/// definition, and by the web UI over the same definition.
pub trait TypeEnv {
    /// Resolves a reference (`${name}`, an OID path, an item name, a choice column, `.`) to
    /// its type and whether it repeats.
    ///
    /// # Errors
    /// A message for a reference that does not exist, e.g. `unknown item ${wieght}` (the
    /// checker appends "did you mean …" from [`TypeEnv::known_names`]).
    fn resolve(&self, r: &Reference) -> Result<RefType, String>;

    /// The names a misspelt reference could have meant, written as references of the same
    /// kind (`${weight}`, `I_WEIGHT`); used for "did you mean" suggestions.
    fn known_names(&self, _r: &Reference) -> Vec<String> {
        Vec::new()
    }
}

/// The result of type checking: the type of the whole expression and every problem.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeReport {
    /// The type the expression evaluates to.
    pub result: ValueType,
    /// Errors and warnings, in source order.
    pub diagnostics: Vec<ExprDiagnostic>,
}

impl TypeReport {
    /// Whether any diagnostic is an error (the expression must be refused).
    #[must_use]
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(ExprDiagnostic::is_error)
    }
}

impl Expr {
    /// Type checks the expression against the form. Includes the parse warnings.
    #[must_use]
    pub fn check(&self, env: &dyn TypeEnv) -> TypeReport {
        let mut checker = Checker { env, dialect: self.dialect, src: &self.source, diags: self.warnings.clone() };
        let result = checker.node(&self.root, false);
        checker.diags.sort_by_key(|d| (d.span.start, d.span.end));
        TypeReport { result, diagnostics: checker.diags }
    }

    /// Type checks a condition (relevant, constraint, required, rule): as [`Expr::check`],
    /// and the result must be true/false. XPath converts any value to true/false, so there
    /// it is a warning; in OpenClinica rules it is an error.
    #[must_use]
    pub fn check_condition(&self, env: &dyn TypeEnv) -> TypeReport {
        let mut report = self.check(env);
        if !report.result.is_boolean_ish() {
            let span = self.root.span.range();
            let message = format!(
                "this condition gives {}, not true or false{}",
                report.result.describe(),
                if self.dialect.is_xpath() { "; it counts as true when it is not empty or zero" } else { "" }
            );
            report.diagnostics.push(if self.dialect.is_xpath() {
                ExprDiagnostic::warning(span, message)
            } else {
                ExprDiagnostic::error(span, message)
            });
        }
        report
    }
}

/// The candidate closest to `name` by edit distance (ignoring case), if it is close enough
/// to be a plausible typo: at most a third of the name's length, at least one edit.
#[must_use]
pub fn did_you_mean<'c, S>(name: &str, candidates: impl IntoIterator<Item = &'c S>) -> Option<&'c str>
where
    S: AsRef<str> + 'c + ?Sized,
{
    let name = name.to_lowercase();
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(AsRef::as_ref)
        .map(|c| (levenshtein(&name, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

struct Checker<'a> {
    env: &'a dyn TypeEnv,
    dialect: Dialect,
    src: &'a str,
    diags: Vec<ExprDiagnostic>,
}

impl Checker<'_> {
    fn error(&mut self, node: &Node, message: String) {
        self.diags.push(ExprDiagnostic::error(node.span.range(), message));
    }

    fn warning(&mut self, node: &Node, message: String) {
        self.diags.push(ExprDiagnostic::warning(node.span.range(), message));
    }

    /// The text of a node as written, for messages.
    fn text(&self, node: &Node) -> String {
        self.src.get(node.span.range()).unwrap_or_default().to_owned()
    }

    /// Infers the type of a node, reporting problems. `aggregate`: the node is an argument of
    /// an aggregate function, where repeating references are lists.
    fn node(&mut self, node: &Node, aggregate: bool) -> ValueType {
        match &node.kind {
            NodeKind::Literal(l) => self.literal(node, l),
            NodeKind::Ref(r) => self.reference(node, r, aggregate),
            NodeKind::Neg(inner) => {
                let ty = self.node(inner, false);
                self.numeric_operand(inner, ty, "-");
                if ty == ValueType::Integer {
                    ValueType::Integer
                } else if ty == ValueType::Any {
                    ValueType::Any
                } else {
                    ValueType::Decimal
                }
            }
            NodeKind::Binary(op, l, r) => {
                let lt = self.node(l, false);
                let rt = self.node(r, false);
                if op.is_logical() {
                    self.condition_operand(l, lt, *op);
                    self.condition_operand(r, rt, *op);
                    ValueType::Boolean
                } else if op.is_comparison() {
                    self.comparison(*op, (l, lt), (r, rt));
                    ValueType::Boolean
                } else {
                    self.arithmetic(*op, (l, lt), (r, rt))
                }
            }
            NodeKind::Call(func, args) => self.call(*func, args),
        }
    }

    fn literal(&mut self, node: &Node, l: &Literal) -> ValueType {
        match l {
            Literal::Integer(_) => ValueType::Integer,
            Literal::Decimal(_) => ValueType::Decimal,
            Literal::Text(_) => ValueType::Text,
            Literal::Date(_) => ValueType::Date,
            Literal::BareWord(w) => {
                self.warning(
                    node,
                    format!("{w} is not an OID, so it is read as the text \"{w}\"; write \"{w}\" if that is meant"),
                );
                ValueType::Text
            }
        }
    }

    fn reference(&mut self, node: &Node, r: &Reference, aggregate: bool) -> ValueType {
        match self.env.resolve(r) {
            Ok(rt) => {
                if rt.repeats && !aggregate {
                    let fix = if self.dialect.is_xpath() {
                        "use it inside sum(), count(), max() or min()"
                    } else if self.dialect == Dialect::OcRule {
                        "select one row with [1], [2], … or [END]"
                    } else {
                        "use it inside sum(), avg(), min(), max(), median() or stdev()"
                    };
                    let all = if r.selects_all_rows() { " ([ALL] is for rule targets)" } else { "" };
                    self.error(node, format!("{r} has a value for every repeated row{all}: {fix}"));
                }
                rt.ty
            }
            Err(mut message) => {
                let known = self.env.known_names(r);
                if let Some(s) = did_you_mean(&r.to_string(), &known) {
                    message.push_str(&format!("; did you mean {s}?"));
                }
                self.error(node, message);
                ValueType::Any
            }
        }
    }

    fn condition_operand(&mut self, node: &Node, ty: ValueType, op: BinaryOp) {
        if ty.is_boolean_ish() {
            return;
        }
        let what = self.text(node);
        let sym = op.symbol(self.dialect);
        if self.dialect.is_xpath() {
            let hint = match ty {
                ValueType::Text => format!("; did you mean {what} = 'yes'?"),
                ValueType::MultiSelect => format!("; did you mean selected({what}, 'code')?"),
                _ => String::new(),
            };
            self.warning(
                node,
                format!(
                    "{what} is {} used as a condition: it counts as true whenever it is not empty or zero{hint}",
                    ty.describe()
                ),
            );
        } else {
            self.error(node, format!("'{sym}' needs a comparison on each side; {what} is {}", ty.describe()));
        }
    }

    /// Reports a non-numeric operand of arithmetic; `Ok` types pass silently.
    fn numeric_operand(&mut self, node: &Node, ty: ValueType, op: &str) {
        match ty {
            ValueType::Integer | ValueType::Decimal | ValueType::Any => {}
            ValueType::Boolean if self.dialect.is_xpath() => {}
            ValueType::Text => {
                if let NodeKind::Literal(Literal::Text(t) | Literal::BareWord(t)) = &node.kind {
                    if parse_number(t).is_none() {
                        self.error(node, format!("'{t}' is text, not a number, so it cannot be used with {op}"));
                    }
                } else {
                    let what = self.text(node);
                    let fix = if self.dialect.is_xpath() {
                        format!("; use number({what}) if it holds a number")
                    } else {
                        String::new()
                    };
                    self.error(node, format!("arithmetic on text: {what} is text{fix}"));
                }
            }
            other => {
                let what = self.text(node);
                self.error(node, format!("{what} is {}, which cannot be used with {op}", other.describe()));
            }
        }
    }

    fn arithmetic(&mut self, op: BinaryOp, (l, lt): (&Node, ValueType), (r, rt): (&Node, ValueType)) -> ValueType {
        use ValueType as T;
        let sym = op.symbol(self.dialect);
        let date_like = |t: T| matches!(t, T::Date | T::DateTime);
        match (op, lt, rt) {
            (BinaryOp::Add | BinaryOp::Sub, T::Date | T::DateTime, _) if !date_like(rt) => {
                self.numeric_operand(r, rt, sym);
                lt
            }
            (BinaryOp::Add, _, T::Date | T::DateTime) if !date_like(lt) => {
                self.numeric_operand(l, lt, sym);
                rt
            }
            (BinaryOp::Sub, T::Date, T::Date) => T::Integer,
            (BinaryOp::Sub, T::Date | T::DateTime, T::Date | T::DateTime) => T::Decimal,
            (BinaryOp::Add, T::Date | T::DateTime, T::Date | T::DateTime) => {
                self.error(r, "two dates cannot be added; subtract them to get the days between".to_owned());
                T::Any
            }
            (BinaryOp::Sub, _, T::Date | T::DateTime) => {
                self.error(r, format!("a date cannot be subtracted from {}", lt.describe()));
                T::Any
            }
            _ => {
                for (node, ty) in [(l, lt), (r, rt)] {
                    match ty {
                        T::Date | T::DateTime => {
                            self.error(
                                node,
                                format!("{} is a date: dates can only be added to or subtracted from", self.text(node)),
                            );
                        }
                        T::PartialDate => {
                            self.error(
                                node,
                                format!("{} is a partial date, which cannot be used in arithmetic", self.text(node)),
                            );
                        }
                        _ => self.numeric_operand(node, ty, sym),
                    }
                }
                if lt == T::Any || rt == T::Any {
                    if matches!(op, BinaryOp::Div) { T::Decimal } else { T::Any }
                } else if matches!(op, BinaryOp::Div) {
                    T::Decimal
                } else if lt == T::Integer && rt == T::Integer {
                    T::Integer
                } else {
                    T::Decimal
                }
            }
        }
    }

    fn comparison(&mut self, op: BinaryOp, (l, lt): (&Node, ValueType), (r, rt): (&Node, ValueType)) {
        use ValueType as T;
        let equality = matches!(op, BinaryOp::Eq | BinaryOp::Ne);
        // `${x} = ''`: the "is empty" idiom works for every type.
        if equality && (l.is_empty_text_literal() || r.is_empty_text_literal()) {
            return;
        }
        if op == BinaryOp::Contains {
            for (node, ty) in [(l, lt), (r, rt)] {
                if ty.is_temporal() || ty == T::Boolean {
                    self.error(node, format!("ct compares text; {} is {}", self.text(node), ty.describe()));
                }
            }
            return;
        }
        if lt == T::Any || rt == T::Any {
            return;
        }
        let sym = op.symbol(self.dialect);
        for ((a, at), (b, bt)) in [((l, lt), (r, rt)), ((r, rt), (l, lt))] {
            if at.is_temporal() {
                self.temporal_comparison((a, at), (b, bt), sym);
                return;
            }
            if at == T::MultiSelect {
                let what = self.text(a);
                if equality {
                    let fix = if self.dialect.is_xpath() {
                        format!("selected({what}, 'code')")
                    } else {
                        format!("{what} ct \"code\"")
                    };
                    self.warning(a, format!("{what} is a multiple choice: '{sym}' compares all the chosen codes at once; use {fix} to test one choice"));
                } else {
                    self.error(a, format!("{what} is a multiple choice, which cannot be compared with '{sym}'"));
                }
                return;
            }
            if at.is_numeric() {
                if bt == T::Text
                    && let NodeKind::Literal(Literal::Text(t) | Literal::BareWord(t)) = &b.kind
                    && parse_number(t).is_none()
                {
                    self.error(b, format!("{} is a number but '{t}' is not a number", self.text(a)));
                }
                return;
            }
        }
        if !equality && self.dialect.is_openclinica() && (lt == T::Text || rt == T::Text) && lt != rt {
            // OC relational operators compare numbers or dates only.
            let (node, _) = if lt == T::Text { (l, lt) } else { (r, rt) };
            if let NodeKind::Literal(Literal::Text(t) | Literal::BareWord(t)) = &node.kind
                && parse_number(t).is_none()
            {
                self.error(node, format!("'{sym}' compares numbers or dates, and '{t}' is neither"));
            }
        }
    }

    fn temporal_comparison(&mut self, (a, at): (&Node, ValueType), (b, bt): (&Node, ValueType), sym: &str) {
        use ValueType as T;
        let what = self.text(a);
        match bt {
            T::Date | T::DateTime | T::PartialDate if at != T::Time => {}
            T::Time if at == T::Time => {}
            T::Text => {
                if let NodeKind::Literal(Literal::Text(t) | Literal::BareWord(t)) = &b.kind {
                    let ok = match at {
                        T::Time => parse_time(t).is_some(),
                        T::PartialDate => PartialDate::parse(t).is_some(),
                        _ => parse_date(t).is_some() || parse_date_time(t).is_some(),
                    };
                    if !ok {
                        let form = if at == T::Time { "'HH:MM'" } else { "'YYYY-MM-DD'" };
                        self.error(b, format!("{what} is {} but '{t}' is not (write it as {form})", at.describe()));
                    }
                } else {
                    self.warning(
                        b,
                        format!("comparing {what}, {}, with {}, which is text", at.describe(), self.text(b)),
                    );
                }
            }
            T::Integer | T::Decimal if self.dialect.is_xpath() && at != T::Time => {
                self.warning(
                    b,
                    format!("comparing the date {what} with a number counts days since 1970-01-01; is that meant?"),
                );
            }
            _ => {
                self.error(
                    b,
                    format!("{what} is {} and cannot be compared with '{sym}' to {}", at.describe(), bt.describe()),
                );
            }
        }
    }

    fn call(&mut self, func: Function, args: &[Node]) -> ValueType {
        use Function as F;
        use ValueType as T;
        let aggregate = functions::is_aggregate(func);
        let tys: Vec<T> = args.iter().map(|a| self.node(a, aggregate)).collect();
        let name = functions::name(func, self.dialect);
        let arg = |i: usize| args.get(i).zip(tys.get(i).copied());
        match func {
            F::Not | F::Boolean => {
                if func == F::Not
                    && let Some((a, t)) = arg(0)
                {
                    self.condition_operand(a, t, BinaryOp::And);
                }
                T::Boolean
            }
            F::True | F::False | F::BooleanFromString | F::Contains | F::StartsWith | F::EndsWith => T::Boolean,
            F::Selected | F::CountSelected | F::SelectedAt => {
                if let Some((a, t)) = arg(0)
                    && !matches!(t, T::MultiSelect | T::Text | T::Any)
                {
                    self.error(
                        a,
                        format!(
                            "{name}() needs a select_multiple or select_one question; {} is {}",
                            self.text(a),
                            t.describe()
                        ),
                    );
                }
                if let Some((a, t)) = arg(1).filter(|_| func == F::SelectedAt) {
                    self.numeric_operand(a, t, "selected-at()");
                }
                match func {
                    F::Selected => T::Boolean,
                    F::CountSelected => T::Integer,
                    _ => T::Text,
                }
            }
            F::StringLength | F::Count => T::Integer,
            F::String | F::Concat | F::FormatDate | F::FormatDateTime => {
                if matches!(func, F::FormatDate | F::FormatDateTime)
                    && let Some((a, t)) = arg(0)
                    && !matches!(t, T::Date | T::DateTime | T::Text | T::Any | T::Integer | T::Decimal)
                {
                    self.error(a, format!("{name}() needs a date; {} is {}", self.text(a), t.describe()));
                }
                T::Text
            }
            F::Substr | F::Substring => {
                for i in 1..args.len() {
                    if let Some((a, t)) = arg(i) {
                        self.numeric_operand(a, t, &format!("{name}()"));
                    }
                }
                T::Text
            }
            F::Regex => {
                if let Some((p, _)) = arg(1)
                    && !matches!(p.kind, NodeKind::Literal(Literal::Text(_)))
                {
                    self.warning(p, "the pattern of regex() should be a quoted text".to_owned());
                }
                T::Boolean
            }
            F::Number => T::Decimal,
            F::Int | F::Floor | F::Ceiling | F::Round | F::Abs | F::Pow | F::Sqrt | F::Exp | F::Log | F::Log10 => {
                for (a, t) in args.iter().zip(tys.iter().copied()) {
                    self.numeric_argument(a, t, name);
                }
                match func {
                    F::Int | F::Floor | F::Ceiling => T::Integer,
                    F::Round if args.len() == 1 => T::Integer,
                    F::Abs => tys.first().copied().filter(|t| t.is_numeric()).unwrap_or(T::Decimal),
                    _ => T::Decimal,
                }
            }
            F::If => {
                if let Some((c, t)) = arg(0) {
                    self.condition_operand(c, t, BinaryOp::And);
                }
                unify(args.get(1).zip(tys.get(1).copied()), args.get(2).zip(tys.get(2).copied()))
            }
            F::Coalesce => unify(arg(0), arg(1)),
            F::Once => tys.first().copied().unwrap_or(T::Any),
            F::Today => T::Date,
            F::Now => T::DateTime,
            F::Date => {
                if let Some((a, t)) = arg(0)
                    && matches!(t, T::Boolean | T::MultiSelect | T::Time | T::PartialDate)
                {
                    self.error(
                        a,
                        format!(
                            "date() needs a date, a 'YYYY-MM-DD' text or a number of days; {} is {}",
                            self.text(a),
                            t.describe()
                        ),
                    );
                }
                T::Date
            }
            F::DecimalDateTime => T::Decimal,
            F::Sum | F::Max | F::Min | F::Avg | F::Median | F::Stdev => {
                for (a, t) in args.iter().zip(tys.iter().copied()) {
                    self.numeric_argument(a, t, name);
                }
                match func {
                    F::Sum | F::Max | F::Min if tys.iter().all(|t| *t == T::Integer) => T::Integer,
                    _ => T::Decimal,
                }
            }
            F::Decode => {
                // decode(x, match1, result1, match2, result2, …, [default])
                let results: Vec<(&Node, T)> = args
                    .iter()
                    .zip(tys.iter().copied())
                    .enumerate()
                    .skip(1)
                    .filter(|(i, _)| i % 2 == 0 || *i == args.len() - 1)
                    .map(|(_, x)| x)
                    .collect();
                results.into_iter().map(Some).reduce(unify_opt).flatten().map_or(T::Any, |(_, t)| t)
            }
        }
    }

    /// Numeric function arguments: like arithmetic, except that a text question is accepted
    /// (the functions convert, as `number()` does).
    fn numeric_argument(&mut self, node: &Node, ty: ValueType, name: &str) {
        let text_question = ty == ValueType::Text && !matches!(node.kind, NodeKind::Literal(_));
        if !text_question {
            self.numeric_operand(node, ty, &format!("{name}()"));
        }
    }
}

/// The common type of two branches (`if`, `coalesce`, `decode`). An empty text literal
/// (`if(c, ${x}, '')`) takes the type of the other branch.
fn unify(a: Option<(&Node, ValueType)>, b: Option<(&Node, ValueType)>) -> ValueType {
    unify_opt(a, b).map_or(ValueType::Any, |(_, t)| t)
}

fn unify_opt<'n>(a: Option<(&'n Node, ValueType)>, b: Option<(&'n Node, ValueType)>) -> Option<(&'n Node, ValueType)> {
    use ValueType as T;
    match (a, b) {
        (Some((an, at)), Some((bn, bt))) => {
            let t = if an.is_empty_text_literal() {
                bt
            } else if bn.is_empty_text_literal() || at == bt {
                at
            } else if at.is_numeric() && bt.is_numeric() {
                T::Decimal
            } else {
                T::Any
            };
            Some((an, t))
        }
        (x, None) | (None, x) => x,
    }
}
