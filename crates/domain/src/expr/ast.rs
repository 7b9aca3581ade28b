//! The one syntax tree shared by the three dialects, and its printing back to source text.
//!
//! Nodes carry their byte span in the source so that every diagnostic can point at the text the
//! data manager wrote. Equality of nodes ignores spans: two expressions are equal when they mean
//! the same thing, which is what the round-trip test (`Display` then parse) relies on.

use std::fmt;

use super::diagnostic::ExprDiagnostic;

/// A byte range in the expression source (`start..end`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// The span `start..end`.
    #[must_use]
    pub fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }

    /// The smallest span covering both.
    #[must_use]
    pub fn to(self, other: Span) -> Span {
        Span { start: self.start.min(other.start), end: self.end.max(other.end) }
    }

    /// As a standard range (for diagnostics and slicing).
    #[must_use]
    pub fn range(self) -> std::ops::Range<usize> {
        self.start..self.end
    }
}

/// Which language an expression is written in; decides the parser, the printer and the
/// semantics of empty values (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// XLSForm / ODK XPath in an item's `relevant`, `constraint`, `calculation`, `required`,
    /// `default`: references are `${name}`, bare names are refused.
    XPath,
    /// XLSForm `choice_filter`: XPath evaluated once per choice, where a bare name (`filter`)
    /// is a column of the choices sheet and `../x` a relative path.
    ChoiceFilter,
    /// OpenClinica 3 rules expression (`eq`, `and`/`or` at one precedence, OID paths).
    OcRule,
    /// OpenClinica 3 CRF `func:` calculation over item names.
    OcCalculation,
}

impl Dialect {
    /// XPath and choice filters: ODK semantics (empty is `''`), two-valued logic.
    #[must_use]
    pub fn is_xpath(self) -> bool {
        matches!(self, Self::XPath | Self::ChoiceFilter)
    }

    /// The OpenClinica dialects: Kleene three-valued logic, empty propagates as unknown.
    #[must_use]
    pub fn is_openclinica(self) -> bool {
        !self.is_xpath()
    }
}

/// A parsed expression: parse once at upload, check against the form, evaluate on every save.
#[derive(Debug, Clone)]
pub struct Expr {
    pub(crate) source: String,
    pub(crate) dialect: Dialect,
    pub(crate) root: Node,
    /// Regular expressions written as literals, compiled once at parse time.
    pub(crate) regexes: Vec<(String, regex::Regex)>,
    /// Problems found while parsing that do not stop the expression from working
    /// (e.g. mixing `and` and `or` without parentheses in OpenClinica).
    pub(crate) warnings: Vec<ExprDiagnostic>,
}

impl PartialEq for Expr {
    fn eq(&self, other: &Self) -> bool {
        self.dialect == other.dialect && self.root == other.root
    }
}

impl Expr {
    /// The source text the expression was parsed from.
    #[must_use]
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The dialect it was parsed in.
    #[must_use]
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The root of the syntax tree.
    #[must_use]
    pub fn root(&self) -> &Node {
        &self.root
    }

    /// Warnings found while parsing (also included in [`Expr::check`]'s report).
    #[must_use]
    pub fn parse_warnings(&self) -> &[ExprDiagnostic] {
        &self.warnings
    }

    /// Every distinct reference the expression reads, in order of first appearance, without
    /// `.` (the current item: see [`Expr::uses_current`]). The importer uses it for dependency
    /// order and circular-calculation detection ([`super::find_cycle`]).
    #[must_use]
    pub fn references(&self) -> Vec<&Reference> {
        let mut out: Vec<&Reference> = Vec::new();
        self.root.walk(&mut |n| {
            if let NodeKind::Ref(r) = &n.kind
                && *r != Reference::Current
                && !out.contains(&r)
            {
                out.push(r);
            }
        });
        out
    }

    /// Whether the expression reads `.` (the current item's value).
    #[must_use]
    pub fn uses_current(&self) -> bool {
        let mut found = false;
        self.root.walk(&mut |n| found |= matches!(n.kind, NodeKind::Ref(Reference::Current)));
        found
    }

    pub(crate) fn regex(&self, pattern: &str) -> Option<&regex::Regex> {
        self.regexes.iter().find(|(p, _)| p == pattern).map(|(_, r)| r)
    }
}

/// One node of the syntax tree with its span in the source.
#[derive(Debug, Clone)]
pub struct Node {
    /// What the node is.
    pub kind: NodeKind,
    /// Where it is in the source.
    pub span: Span,
}

impl PartialEq for Node {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
    }
}

impl Node {
    pub(crate) fn new(kind: NodeKind, span: Span) -> Self {
        Self { kind, span }
    }

    /// Visits this node and its descendants, parents first, left to right.
    pub fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a Node)) {
        f(self);
        match &self.kind {
            NodeKind::Literal(_) | NodeKind::Ref(_) => {}
            NodeKind::Neg(inner) => inner.walk(f),
            NodeKind::Binary(_, l, r) => {
                l.walk(f);
                r.walk(f);
            }
            NodeKind::Call(_, args) => args.iter().for_each(|a| a.walk(f)),
        }
    }

    /// The empty text literal `''`, the ODK idiom for "is empty".
    pub(crate) fn is_empty_text_literal(&self) -> bool {
        matches!(&self.kind, NodeKind::Literal(Literal::Text(t)) if t.is_empty())
    }
}

/// The kinds of node.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A constant.
    Literal(Literal),
    /// A reference to an item, a choice column or the current value.
    Ref(Reference),
    /// Unary minus.
    Neg(Box<Node>),
    /// A binary operator.
    Binary(BinaryOp, Box<Node>, Box<Node>),
    /// A function call (also `_CURRENT_DATE`, which is `today()` in OpenClinica clothes).
    Call(Function, Vec<Node>),
}

/// A constant written in the expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A whole number, e.g. `18`.
    Integer(i64),
    /// A number with a decimal point, e.g. `365.25`.
    Decimal(f64),
    /// A quoted text, e.g. `'yes'` or `"Y"`.
    Text(String),
    /// An OpenClinica date literal `2024-01-31` (also written `2024/01/31`).
    Date(time::Date),
    /// An OpenClinica unquoted word that is not an OID path (`I_A eq Y`): read as text.
    BareWord(String),
}

/// Something whose value comes from the data, resolved by the caller's environment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    /// `.`: the value of the item the expression belongs to.
    Current,
    /// XLSForm `${name}`.
    Field(String),
    /// A bare name in a `choice_filter`: the column of that name in the choices sheet.
    ChoiceColumn(String),
    /// A relative path in a `choice_filter`, `../x` (`up` = number of `..`, here 1).
    Relative {
        /// How many `..` steps.
        up: usize,
        /// The name at the end of the path.
        name: String,
    },
    /// An OpenClinica OID path to an item.
    OcPath(OcPath),
    /// An OpenClinica event-level property: `SE_VISIT.STARTDATE`, `SE_VISIT[2].STATUS`.
    OcEvent {
        /// The event and its repeat selector.
        event: OcStep,
        /// Which property.
        property: EventProperty,
    },
    /// An item name in an OpenClinica 3 `func:` calculation.
    ItemName(String),
}

impl Reference {
    /// Whether the reference asks for every row (`[ALL]`).
    #[must_use]
    pub fn selects_all_rows(&self) -> bool {
        let all = |s: &Option<OcStep>| s.as_ref().is_some_and(|s| s.repeat == Some(Repeat::All));
        match self {
            Self::OcPath(p) => all(&p.group) || all(&p.event),
            Self::OcEvent { event, .. } => event.repeat == Some(Repeat::All),
            _ => false,
        }
    }
}

impl fmt::Display for Reference {
    /// The reference as written in its dialect (`${weight}`, `IG_VS[END].I_SYS`, `filter`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Current => f.write_str("."),
            Self::Field(n) => write!(f, "${{{n}}}"),
            Self::ChoiceColumn(n) | Self::ItemName(n) => f.write_str(n),
            Self::Relative { up, name } => {
                for _ in 0..*up {
                    f.write_str("../")?;
                }
                f.write_str(name)
            }
            Self::OcPath(p) => fmt::Display::fmt(p, f),
            Self::OcEvent { event, property } => write!(f, "{event}.{}", property.keyword()),
        }
    }
}

/// An OpenClinica OID path: `I_X`, `IG_G.I_X`, `F_F.IG_G.I_X` or `SE_E.F_F.IG_G.I_X`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OcPath {
    /// `SE_…` with its repeat selector, when given.
    pub event: Option<OcStep>,
    /// `F_…` (a CRF or CRF-version OID), when given.
    pub form: Option<String>,
    /// `IG_…` with its repeat selector, when given.
    pub group: Option<OcStep>,
    /// `I_…`.
    pub item: String,
}

impl fmt::Display for OcPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(e) = &self.event {
            write!(f, "{e}.")?;
        }
        if let Some(c) = &self.form {
            write!(f, "{c}.")?;
        }
        if let Some(g) = &self.group {
            write!(f, "{g}.")?;
        }
        f.write_str(&self.item)
    }
}

/// An event or group OID with an optional repeat selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OcStep {
    /// The OID.
    pub oid: String,
    /// `[n]`, `[END]` or `[ALL]`.
    pub repeat: Option<Repeat>,
}

impl fmt::Display for OcStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.oid)?;
        match self.repeat {
            None => Ok(()),
            Some(Repeat::Index(n)) => write!(f, "[{n}]"),
            Some(Repeat::End) => f.write_str("[END]"),
            Some(Repeat::All) => f.write_str("[ALL]"),
        }
    }
}

/// A repeat selector on an event or group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Repeat {
    /// `[n]`: the n-th occurrence, 1-based.
    Index(u32),
    /// `[END]`: the last occurrence.
    End,
    /// `[ALL]`: every occurrence (rule targets).
    All,
}

/// Event-level properties usable in OpenClinica rules (serialised as written: `STARTDATE`,
/// `STATUS`, as in a rules file's `EventDestination/@Property`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventProperty {
    /// `STARTDATE`: the event's start date.
    StartDate,
    /// `STATUS`: the event's status (`scheduled`, `completed`, …).
    Status,
}

impl EventProperty {
    /// The keyword as written.
    #[must_use]
    pub fn keyword(self) -> &'static str {
        match self {
            Self::StartDate => "STARTDATE",
            Self::Status => "STATUS",
        }
    }

    /// Parses the keyword, in any case (`STARTDATE`, `startDate`).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_uppercase().as_str() {
            "STARTDATE" => Some(Self::StartDate),
            "STATUS" => Some(Self::Status),
            _ => None,
        }
    }
}

/// Binary operators of all dialects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `or`
    Or,
    /// `and`
    And,
    /// `=` / `eq`
    Eq,
    /// `!=` / `ne`
    Ne,
    /// `<` / `lt`
    Lt,
    /// `<=` / `lte`
    Le,
    /// `>` / `gt`
    Gt,
    /// `>=` / `gte`
    Ge,
    /// OpenClinica `ct` (text contains; choice membership for multi-selects)
    Contains,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `div` / `/`
    Div,
    /// `mod`
    Mod,
}

impl BinaryOp {
    /// The operator as written in a dialect.
    #[must_use]
    pub fn symbol(self, dialect: Dialect) -> &'static str {
        let xpath = dialect.is_xpath();
        match self {
            Self::Or => "or",
            Self::And => "and",
            Self::Eq if xpath => "=",
            Self::Eq => "eq",
            Self::Ne if xpath => "!=",
            Self::Ne => "ne",
            Self::Lt if xpath => "<",
            Self::Lt => "lt",
            Self::Le if xpath => "<=",
            Self::Le => "lte",
            Self::Gt if xpath => ">",
            Self::Gt => "gt",
            Self::Ge if xpath => ">=",
            Self::Ge => "gte",
            Self::Contains => "ct",
            Self::Add => "+",
            Self::Sub => "-",
            Self::Mul => "*",
            Self::Div if xpath => "div",
            Self::Div => "/",
            Self::Mod => "mod",
        }
    }

    /// Binding power (higher binds tighter). XPath: `or` < `and` < `= !=` < `< <= > >=` <
    /// `+ -` < `* div mod`. OpenClinica: `and`/`or` (one level, left to right) < comparisons
    /// < `+ -` < `* /`.
    #[must_use]
    pub fn binding_power(self, dialect: Dialect) -> u8 {
        if dialect.is_xpath() {
            match self {
                Self::Or => 1,
                Self::And => 2,
                Self::Eq | Self::Ne => 3,
                Self::Lt | Self::Le | Self::Gt | Self::Ge | Self::Contains => 4,
                Self::Add | Self::Sub => 5,
                Self::Mul | Self::Div | Self::Mod => 6,
            }
        } else {
            match self {
                Self::Or | Self::And => 1,
                Self::Eq | Self::Ne | Self::Lt | Self::Le | Self::Gt | Self::Ge | Self::Contains => 2,
                Self::Add | Self::Sub => 3,
                Self::Mul | Self::Div | Self::Mod => 4,
            }
        }
    }

    /// `and` / `or`.
    #[must_use]
    pub fn is_logical(self) -> bool {
        matches!(self, Self::And | Self::Or)
    }

    /// `= != < <= > >= ct`.
    #[must_use]
    pub fn is_comparison(self) -> bool {
        matches!(self, Self::Eq | Self::Ne | Self::Lt | Self::Le | Self::Gt | Self::Ge | Self::Contains)
    }

    /// `+ - * div mod`.
    #[must_use]
    pub fn is_arithmetic(self) -> bool {
        matches!(self, Self::Add | Self::Sub | Self::Mul | Self::Div | Self::Mod)
    }
}

/// The functions of all dialects (which names exist in which dialect, and their argument
/// counts, are in the private `functions` table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    /// `not(x)`.
    Not,
    /// `true()`.
    True,
    /// `false()`.
    False,
    /// `selected(select, 'code')`: whether a choice is selected.
    Selected,
    /// `count-selected(select)`.
    CountSelected,
    /// `selected-at(select, n)`: the n-th chosen code, 0-based.
    SelectedAt,
    /// `string-length(s)` in characters.
    StringLength,
    /// `string([x])`.
    String,
    /// `number([x])`.
    Number,
    /// `int(x)`: truncates towards zero.
    Int,
    /// `round(x[, digits])`.
    Round,
    /// `floor(x)`.
    Floor,
    /// `ceiling(x)`.
    Ceiling,
    /// `abs(x)`.
    Abs,
    /// `pow(x, y)`.
    Pow,
    /// `sqrt(x)`.
    Sqrt,
    /// `exp(x)`.
    Exp,
    /// `log(x)`, natural logarithm.
    Log,
    /// `log10(x)`.
    Log10,
    /// `if(condition, then, else)`.
    If,
    /// `coalesce(a, b)`: a unless empty, else b.
    Coalesce,
    /// `concat(a, …)`.
    Concat,
    /// `contains(s, part)`.
    Contains,
    /// `starts-with(s, prefix)`.
    StartsWith,
    /// `ends-with(s, suffix)`.
    EndsWith,
    /// ODK `substr(s, start[, end])`: 0-based start, end exclusive.
    Substr,
    /// XPath 1.0 `substring(s, start[, length])`: 1-based start, a length.
    Substring,
    /// `regex(s, 'pattern')`: the pattern matches somewhere in s.
    Regex,
    /// `today()`, OpenClinica `_CURRENT_DATE`.
    Today,
    /// `now()`, OpenClinica `_CURRENT_DATE_TIME`.
    Now,
    /// `date(x)`: a date from text or days since 1970-01-01.
    Date,
    /// `decimal-date-time(x)`: days since 1970-01-01 with the time as a fraction.
    DecimalDateTime,
    /// `format-date(d, '%Y-%m-%d')`.
    FormatDate,
    /// `format-date-time(dt, '%H:%M')`.
    FormatDateTime,
    /// `count(repeat or item)`: rows.
    Count,
    /// `sum(…)`.
    Sum,
    /// `max(…)`.
    Max,
    /// `min(…)`.
    Min,
    /// OpenClinica `avg(…)`.
    Avg,
    /// OpenClinica `median(…)`.
    Median,
    /// OpenClinica `stdev(…)`, sample standard deviation.
    Stdev,
    /// OpenClinica `decode(x, match, result, …, default)`.
    Decode,
    /// `once(x)`: keeps the current value once there is one.
    Once,
    /// `boolean(x)`.
    Boolean,
    /// `boolean-from-string(s)`: true for 'true' and '1'.
    BooleanFromString,
}

impl fmt::Display for Expr {
    /// Prints the expression in its dialect with the parentheses it needs; the text parses
    /// back to an equal expression.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_node(&self.root, self.dialect, f)
    }
}

fn write_node(node: &Node, dialect: Dialect, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match &node.kind {
        NodeKind::Literal(l) => write_literal(l, dialect, f),
        NodeKind::Ref(r) => fmt::Display::fmt(r, f),
        NodeKind::Neg(inner) => {
            f.write_str("-")?;
            let paren = matches!(inner.kind, NodeKind::Binary(..) | NodeKind::Neg(_));
            write_maybe_parenthesised(inner, dialect, paren, f)
        }
        NodeKind::Binary(op, l, r) => {
            let bp = op.binding_power(dialect);
            let needs = |child: &Node, right: bool| match &child.kind {
                NodeKind::Binary(cop, ..) => {
                    let cbp = cop.binding_power(dialect);
                    // Mixed and/or is always parenthesised (in OpenClinica they have one
                    // precedence), so the printed text reads the same to a person as to the parser.
                    cbp < bp || (right && cbp == bp) || (op.is_logical() && cop.is_logical() && cop != op)
                }
                _ => false,
            };
            write_maybe_parenthesised(l, dialect, needs(l, false), f)?;
            write!(f, " {} ", op.symbol(dialect))?;
            write_maybe_parenthesised(r, dialect, needs(r, true), f)
        }
        NodeKind::Call(func, args) => {
            if dialect == Dialect::OcRule {
                match func {
                    Function::Today => return f.write_str("_CURRENT_DATE"),
                    Function::Now => return f.write_str("_CURRENT_DATE_TIME"),
                    _ => {}
                }
            }
            f.write_str(super::functions::name(*func, dialect))?;
            f.write_str("(")?;
            for (i, a) in args.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write_node(a, dialect, f)?;
            }
            f.write_str(")")
        }
    }
}

fn write_maybe_parenthesised(node: &Node, dialect: Dialect, paren: bool, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    if paren {
        f.write_str("(")?;
        write_node(node, dialect, f)?;
        f.write_str(")")
    } else {
        write_node(node, dialect, f)
    }
}

fn write_literal(l: &Literal, dialect: Dialect, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match l {
        Literal::Integer(i) => write!(f, "{i}"),
        Literal::Decimal(d) => {
            let s = d.to_string();
            if s.contains('.') { f.write_str(&s) } else { write!(f, "{s}.0") }
        }
        Literal::Text(t) => {
            // XPath prefers single quotes, OpenClinica double; both accept the other when the
            // text contains the preferred quote. (A text with both quotes cannot be written.)
            let (first, second) = if dialect.is_xpath() { ('\'', '"') } else { ('"', '\'') };
            let q = if t.contains(first) { second } else { first };
            write!(f, "{q}{t}{q}")
        }
        Literal::Date(d) => write!(f, "{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()),
        Literal::BareWord(w) => f.write_str(w),
    }
}
