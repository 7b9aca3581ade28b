//! Tokens to syntax tree: one precedence-climbing parser with a dialect switch.
//!
//! Syntax errors stop the parse (the rest of the text cannot be trusted); problems that leave
//! the structure intact — an unknown or refused function, a wrong number of arguments, an
//! invalid date or regular expression literal, a bare name outside a choice filter — are
//! collected and the parse goes on, so the data manager sees them all at once.

use super::ast::{
    BinaryOp, Dialect, EventProperty, Expr, Function, Literal, Node, NodeKind, OcPath, OcStep, Reference, Repeat, Span,
};
use super::diagnostic::{ExprDiagnostic, column};
use super::functions;
use super::lexer::{Tok, Token, lex};
use super::types::did_you_mean;
use super::value::{parse_date, parse_date_time};

type PResult<T> = Result<T, ExprDiagnostic>;

/// At most this many tokens: the tree (and so the recursion of checking, evaluating and
/// printing it) stays shallow enough for a 2 MiB thread stack. Real expressions are far
/// shorter (OpenClinica stores at most 1025 characters).
const MAX_TOKENS: usize = 4000;

/// At most this many nested parentheses, function calls and unary minuses.
const MAX_NESTING: usize = 64;

/// Parses `src[start..]` (spans stay offsets in `src`, so a `func:` prefix keeps its place).
pub(crate) fn parse_from(src: &str, start: usize, dialect: Dialect) -> Result<Expr, Vec<ExprDiagnostic>> {
    let toks = lex(src, start, dialect)?;
    if toks.len() > MAX_TOKENS {
        let message = format!("the expression is too long (more than {MAX_TOKENS} parts): split it into calculations");
        return Err(vec![ExprDiagnostic::error(start..src.len(), message)]);
    }
    let mut p =
        Parser { src, toks, pos: 0, dialect, depth: 0, errors: Vec::new(), warnings: Vec::new(), regexes: Vec::new() };
    if p.peek() == &Tok::Eof {
        return Err(vec![ExprDiagnostic::error(start..src.len(), "the expression is empty")]);
    }
    let root = match p.expr(0).and_then(|root| p.expect_end().map(|()| root)) {
        Ok(root) => root,
        Err(fatal) => {
            p.errors.push(fatal);
            p.errors.sort_by_key(|d| d.span.start);
            return Err(p.errors);
        }
    };
    if !p.errors.is_empty() {
        let mut all = p.errors;
        all.extend(p.warnings);
        all.sort_by_key(|d| d.span.start);
        return Err(all);
    }
    Ok(Expr { source: src.to_owned(), dialect, root, regexes: p.regexes, warnings: p.warnings })
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<Token>,
    pos: usize,
    dialect: Dialect,
    /// Current nesting of parentheses, calls and unary minus.
    depth: usize,
    errors: Vec<ExprDiagnostic>,
    warnings: Vec<ExprDiagnostic>,
    regexes: Vec<(String, regex::Regex)>,
}

const OC_KEYWORDS: &[(&str, BinaryOp)] = &[
    ("and", BinaryOp::And),
    ("or", BinaryOp::Or),
    ("eq", BinaryOp::Eq),
    ("ne", BinaryOp::Ne),
    ("gt", BinaryOp::Gt),
    ("gte", BinaryOp::Ge),
    ("lt", BinaryOp::Lt),
    ("lte", BinaryOp::Le),
    ("ct", BinaryOp::Contains),
];

const XPATH_KEYWORDS: &[(&str, BinaryOp)] =
    &[("and", BinaryOp::And), ("or", BinaryOp::Or), ("div", BinaryOp::Div), ("mod", BinaryOp::Mod)];

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        self.toks.get(self.pos).map_or(&Tok::Eof, |(t, _)| t)
    }

    fn peek_nth(&self, n: usize) -> &Tok {
        self.toks.get(self.pos + n).map_or(&Tok::Eof, |(t, _)| t)
    }

    fn span(&self) -> Span {
        self.toks.get(self.pos).map_or(Span::new(self.src.len(), self.src.len()), |(_, s)| *s)
    }

    fn advance(&mut self) -> (Tok, Span) {
        let tok = self.toks.get(self.pos).cloned().unwrap_or((Tok::Eof, Span::new(self.src.len(), self.src.len())));
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        tok
    }

    fn col(&self, span: Span) -> usize {
        column(self.src, span.start)
    }

    fn fatal(&self, span: Span, message: impl Into<String>) -> ExprDiagnostic {
        ExprDiagnostic::error(span.range(), message)
    }

    fn keyword(&self, word: &str) -> Option<BinaryOp> {
        match self.dialect {
            Dialect::XPath | Dialect::ChoiceFilter => {
                XPATH_KEYWORDS.iter().find(|(k, _)| *k == word).map(|(_, op)| *op)
            }
            Dialect::OcRule => OC_KEYWORDS.iter().find(|(k, _)| k.eq_ignore_ascii_case(word)).map(|(_, op)| *op),
            Dialect::OcCalculation => None,
        }
    }

    fn expect_end(&mut self) -> PResult<()> {
        let span = self.span();
        let col = self.col(span);
        match self.peek() {
            Tok::Eof => Ok(()),
            Tok::RParen => Err(self.fatal(span, format!("unexpected ')' at column {col}: there is no '(' to close"))),
            Tok::Word(w)
                if self.dialect.is_xpath() && XPATH_KEYWORDS.iter().any(|(k, _)| k.eq_ignore_ascii_case(w)) =>
            {
                let lower = w.to_lowercase();
                Err(self.fatal(
                    span,
                    format!("unexpected '{w}' at column {col}: operators are written in lower case ({lower})"),
                ))
            }
            other => {
                let what = other.describe();
                Err(self.fatal(
                    span,
                    format!("unexpected {what} at column {col}: expected an operator or the end of the expression"),
                ))
            }
        }
    }

    /// Precedence climbing: parses operators binding at least as tightly as `min_bp`.
    fn expr(&mut self, min_bp: u8) -> PResult<Node> {
        let mut lhs = self.prefix()?;
        let mut previous_logical: Option<BinaryOp> = None;
        while let Some(op) = self.infix_op()? {
            let bp = op.binding_power(self.dialect);
            if bp < min_bp {
                break;
            }
            self.advance();
            if self.dialect == Dialect::OcRule && op.is_logical() {
                if let Some(prev) = previous_logical
                    && prev != op
                {
                    let left = self.src.get(lhs.span.range()).unwrap_or_default();
                    let (p, o) = (prev.symbol(self.dialect), op.symbol(self.dialect));
                    self.warnings.push(ExprDiagnostic::warning(
                        lhs.span.range(),
                        format!(
                            "'{p}' and '{o}' have the same precedence in OpenClinica and are read left to right, \
                             so this reads as ({left}) {o} …; add parentheses to say which is meant"
                        ),
                    ));
                }
                previous_logical = Some(op);
            }
            let rhs = self.expr(bp + 1)?;
            let span = lhs.span.to(rhs.span);
            lhs = Node::new(NodeKind::Binary(op, Box::new(lhs), Box::new(rhs)), span);
        }
        Ok(lhs)
    }

    /// The binary operator at the current token, if there is one.
    fn infix_op(&self) -> PResult<Option<BinaryOp>> {
        let span = self.span();
        let col = self.col(span);
        let xpath = self.dialect.is_xpath();
        let oc_rule = self.dialect == Dialect::OcRule;
        let op = match self.peek() {
            Tok::Plus => BinaryOp::Add,
            Tok::Minus => BinaryOp::Sub,
            Tok::Star => BinaryOp::Mul,
            Tok::Slash if xpath => {
                return Err(self.fatal(span, format!("'/' at column {col}: XPath divides with div, e.g. ${{a}} div 2")));
            }
            Tok::Slash => BinaryOp::Div,
            Tok::Word(w) => match self.keyword(w) {
                Some(op) => op,
                None => return Ok(None),
            },
            Tok::Eq | Tok::Ne | Tok::Lt | Tok::Le | Tok::Gt | Tok::Ge if oc_rule => {
                let (sym, kw) = match self.peek() {
                    Tok::Eq => ("=", "eq"),
                    Tok::Ne => ("!=", "ne"),
                    Tok::Lt => ("<", "lt"),
                    Tok::Le => ("<=", "lte"),
                    Tok::Gt => (">", "gt"),
                    _ => (">=", "gte"),
                };
                return Err(self.fatal(span, format!("'{sym}' at column {col}: OpenClinica rules write {kw}")));
            }
            Tok::Eq if xpath => BinaryOp::Eq,
            Tok::Ne if xpath => BinaryOp::Ne,
            Tok::Lt if xpath => BinaryOp::Lt,
            Tok::Le if xpath => BinaryOp::Le,
            Tok::Gt if xpath => BinaryOp::Gt,
            Tok::Ge if xpath => BinaryOp::Ge,
            Tok::Pipe => {
                return Err(self.fatal(span, format!("'|' at column {col}: combining node sets is not supported")));
            }
            Tok::LBracket if xpath => {
                return Err(self.fatal(span, format!("'[' at column {col}: filters in [ ] are not supported")));
            }
            _ => return Ok(None),
        };
        Ok(Some(op))
    }

    /// Unary minus binds tighter than every binary operator: its operand is a primary.
    fn prefix(&mut self) -> PResult<Node> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            let s = self.span();
            return Err(self.fatal(s, format!("the expression is nested too deeply at column {}", self.col(s))));
        }
        let result = if self.peek() == &Tok::Minus {
            let (_, minus) = self.advance();
            self.prefix().map(|operand| {
                let span = minus.to(operand.span);
                Node::new(NodeKind::Neg(Box::new(operand)), span)
            })
        } else {
            self.primary()
        };
        self.depth -= 1;
        result
    }

    fn primary(&mut self) -> PResult<Node> {
        let span = self.span();
        let col = self.col(span);
        let tok = self.peek().clone();
        let node = match tok {
            Tok::Number(text) => {
                self.advance();
                Node::new(NodeKind::Literal(number_literal(&text)), span)
            }
            Tok::Text(t) => {
                self.advance();
                Node::new(NodeKind::Literal(Literal::Text(t)), span)
            }
            Tok::Date(text) => {
                self.advance();
                let lit = match parse_date(&text) {
                    Some(d) => Literal::Date(d),
                    None => {
                        self.errors.push(ExprDiagnostic::error(span.range(), format!("{text} is not a valid date")));
                        Literal::Text(text)
                    }
                };
                Node::new(NodeKind::Literal(lit), span)
            }
            Tok::LParen => {
                self.advance();
                let inner = self.expr(0)?;
                if self.peek() != &Tok::RParen {
                    return Err(self.missing_close(span, "("));
                }
                let (_, close) = self.advance();
                Node::new(inner.kind, span.to(close))
            }
            Tok::Field(name) => {
                self.advance();
                Node::new(NodeKind::Ref(Reference::Field(name)), span)
            }
            Tok::Dot if self.dialect.is_xpath() => {
                self.advance();
                Node::new(NodeKind::Ref(Reference::Current), span)
            }
            Tok::DotDot if self.dialect.is_xpath() => self.relative_path()?,
            Tok::Slash if self.dialect.is_xpath() => {
                return Err(self.fatal(
                    span,
                    format!("absolute paths like /data/x are not supported (column {col}): write ${{x}}"),
                ));
            }
            Tok::Word(w) => self.word(w, span)?,
            Tok::Eof => {
                return Err(
                    self.fatal(span, format!("the expression ends too early at column {col}: expected a value"))
                );
            }
            other => {
                let what = other.describe();
                return Err(self.fatal(span, format!("unexpected {what} at column {col}: expected a value")));
            }
        };
        if self.dialect.is_xpath() && self.peek() == &Tok::LBracket {
            let s = self.span();
            let c = self.col(s);
            return Err(self.fatal(s, format!("'[' at column {c}: filters in [ ] are not supported")));
        }
        Ok(node)
    }

    fn missing_close(&self, open: Span, what: &str) -> ExprDiagnostic {
        let here = self.span();
        let found = self.peek().describe();
        let message = format!(
            "missing ')' to close the '{what}' at column {}: found {found} at column {}",
            self.col(open),
            self.col(here)
        );
        ExprDiagnostic::error(open.start..here.end.max(open.end), message)
    }

    /// `../x`, `../../x` (choice filters only).
    fn relative_path(&mut self) -> PResult<Node> {
        let (_, start) = self.advance();
        let mut up = 1;
        loop {
            if self.peek() != &Tok::Slash {
                let s = self.span();
                return Err(self.fatal(s, format!("expected '/' after '..' at column {}", self.col(s))));
            }
            self.advance();
            match self.peek().clone() {
                Tok::DotDot => {
                    self.advance();
                    up += 1;
                }
                Tok::Word(name) => {
                    let (_, end) = self.advance();
                    let span = start.to(end);
                    if self.dialect != Dialect::ChoiceFilter {
                        self.errors.push(ExprDiagnostic::error(
                            span.range(),
                            format!("relative paths like ../{name} are not supported here: write ${{{name}}}"),
                        ));
                    }
                    return Ok(Node::new(NodeKind::Ref(Reference::Relative { up, name }), span));
                }
                other => {
                    let s = self.span();
                    let what = other.describe();
                    return Err(self.fatal(s, format!("unexpected {what} at column {}: expected a name", self.col(s))));
                }
            }
        }
    }

    fn word(&mut self, w: String, span: Span) -> PResult<Node> {
        let col = self.col(span);
        if self.keyword(&w).is_some() {
            return Err(self.fatal(span, format!("expected a value before '{w}' at column {col}")));
        }
        let is_call = self.peek_nth(1) == &Tok::LParen;
        match self.dialect {
            Dialect::XPath | Dialect::ChoiceFilter if is_call => self.call(w, span),
            Dialect::OcCalculation if is_call => self.call(w, span),
            Dialect::OcRule if is_call => {
                Err(self.fatal(span, format!("'{w}(' at column {col}: OpenClinica rule expressions have no functions")))
            }
            Dialect::ChoiceFilter => {
                self.advance();
                Ok(Node::new(NodeKind::Ref(Reference::ChoiceColumn(w)), span))
            }
            Dialect::XPath => {
                self.advance();
                self.errors.push(ExprDiagnostic::error(
                    span.range(),
                    format!("'{w}' at column {col} is not a reference: write ${{{w}}} to use the question {w}"),
                ));
                Ok(Node::new(NodeKind::Ref(Reference::Field(w)), span))
            }
            Dialect::OcCalculation => {
                self.advance();
                Ok(Node::new(NodeKind::Ref(Reference::ItemName(w)), span))
            }
            Dialect::OcRule => {
                self.advance();
                if w.eq_ignore_ascii_case("_CURRENT_DATE") {
                    Ok(Node::new(NodeKind::Call(Function::Today, Vec::new()), span))
                } else if w.eq_ignore_ascii_case("_CURRENT_DATE_TIME") {
                    Ok(Node::new(NodeKind::Call(Function::Now, Vec::new()), span))
                } else if is_oid_shaped(&w) {
                    let r = parse_oc_path(&w, span.start)?;
                    Ok(Node::new(NodeKind::Ref(r), span))
                } else {
                    Ok(Node::new(NodeKind::Literal(Literal::BareWord(w)), span))
                }
            }
        }
    }

    fn call(&mut self, name: String, name_span: Span) -> PResult<Node> {
        self.advance(); // name
        let (_, open) = self.advance(); // (
        let mut args = Vec::new();
        if self.peek() == &Tok::RParen {
            self.advance();
        } else {
            loop {
                args.push(self.expr(0)?);
                match self.peek() {
                    Tok::Comma => {
                        self.advance();
                    }
                    Tok::RParen => {
                        self.advance();
                        break;
                    }
                    Tok::Eof => return Err(self.missing_close(open, &format!("{name}("))),
                    other => {
                        let s = self.span();
                        let what = other.describe();
                        return Err(self.fatal(
                            s,
                            format!("unexpected {what} at column {}: expected ',' or ')' in {name}()", self.col(s)),
                        ));
                    }
                }
            }
        }
        let end = self.toks.get(self.pos.saturating_sub(1)).map_or(open, |(_, s)| *s);
        let span = name_span.to(end);
        let func = match functions::lookup(&name, self.dialect) {
            Ok(Some(f)) => f,
            Ok(None) => {
                let mut message = format!("unknown function {name}()");
                if let Some(s) = did_you_mean(&name, functions::names(self.dialect)) {
                    message.push_str(&format!("; did you mean {s}()?"));
                }
                self.errors.push(ExprDiagnostic::error(name_span.range(), message));
                return Ok(Node::new(NodeKind::Literal(Literal::Text(String::new())), span));
            }
            Err(reason) => {
                self.errors.push(ExprDiagnostic::error(name_span.range(), reason));
                return Ok(Node::new(NodeKind::Literal(Literal::Text(String::new())), span));
            }
        };
        let arity = functions::arity(func, self.dialect);
        if args.len() < arity.0 || arity.1.is_some_and(|max| args.len() > max) {
            let shown = functions::name(func, self.dialect);
            self.errors.push(ExprDiagnostic::error(span.range(), functions::arity_message(shown, arity, args.len())));
        }
        self.check_literal_args(func, &args);
        Ok(Node::new(NodeKind::Call(func, args), span))
    }

    /// Literal arguments that can be checked once, at upload: regular expressions and dates.
    fn check_literal_args(&mut self, func: Function, args: &[Node]) {
        match (func, args) {
            (Function::Regex, [_, pattern]) => {
                if let NodeKind::Literal(Literal::Text(p)) = &pattern.kind {
                    match super::oc::compile_java_regex(p, false) {
                        Ok(re) => self.regexes.push((p.clone(), re)),
                        Err(message) => self.errors.push(ExprDiagnostic::error(pattern.span.range(), message)),
                    }
                }
            }
            (Function::Date, [arg]) => {
                if let NodeKind::Literal(Literal::Text(t)) = &arg.kind
                    && parse_date(t).is_none()
                    && parse_date_time(t).is_none()
                {
                    self.errors.push(ExprDiagnostic::error(
                        arg.span.range(),
                        format!("'{t}' is not a date: write it as 'YYYY-MM-DD'"),
                    ));
                }
            }
            _ => {}
        }
    }
}

fn number_literal(text: &str) -> Literal {
    if !text.contains('.')
        && let Ok(i) = text.parse::<i64>()
    {
        return Literal::Integer(i);
    }
    // The lexer only produces digits with at most one '.', which always parse.
    Literal::Decimal(text.parse().unwrap_or(f64::NAN))
}

/// Whether an OpenClinica word is an OID path rather than an unquoted text: it has a path or
/// selector, or an OID prefix.
pub(crate) fn is_oid_shaped(word: &str) -> bool {
    let upper = word.to_ascii_uppercase();
    word.contains(['.', '[']) || ["I_", "IG_", "F_", "SE_"].iter().any(|p| upper.starts_with(p))
}

/// Parses an OID path whose text starts at byte `base` of the source.
pub(crate) fn parse_oc_path(word: &str, base: usize) -> PResult<Reference> {
    let whole = base..base + word.len();
    let mut steps: Vec<(OcStep, std::ops::Range<usize>)> = Vec::new();
    let mut offset = base;
    for segment in word.split('.') {
        let range = offset..offset + segment.len();
        offset += segment.len() + 1;
        let (oid, repeat) = match segment.split_once('[') {
            None => (segment, None),
            Some((oid, sel)) => {
                let sel = sel.strip_suffix(']').unwrap_or(sel);
                let repeat = parse_selector(sel).ok_or_else(|| {
                    ExprDiagnostic::error(
                        range.clone(),
                        format!("'[{sel}]' is not a repeat selector: use [1], [2], …, [END] or [ALL]"),
                    )
                })?;
                (oid, Some(repeat))
            }
        };
        if oid.is_empty() || !oid.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ExprDiagnostic::error(range, format!("'{segment}' is not an OID in the path {word}")));
        }
        steps.push((OcStep { oid: oid.to_owned(), repeat }, range));
    }
    let no_selector = |step: (OcStep, std::ops::Range<usize>), what: &str| -> PResult<String> {
        if step.0.repeat.is_some() {
            return Err(ExprDiagnostic::error(
                step.1,
                format!(
                    "a repeat selector is only allowed on an event (SE_) or a group (IG_), not on the {what} {}",
                    step.0.oid
                ),
            ));
        }
        Ok(step.0.oid)
    };
    let mut it = steps.into_iter();
    let reference = match (it.next(), it.next(), it.next(), it.next(), it.next()) {
        (Some(item), None, None, None, None) => {
            Reference::OcPath(OcPath { event: None, form: None, group: None, item: no_selector(item, "item")? })
        }
        (Some(first), Some(second), None, None, None) => {
            let property = match second.0.oid.to_ascii_uppercase().as_str() {
                "STARTDATE" => Some(EventProperty::StartDate),
                "STATUS" => Some(EventProperty::Status),
                _ => None,
            };
            match property {
                Some(property) if first.0.oid.to_ascii_uppercase().starts_with("SE_") => {
                    no_selector(second, "property")?;
                    Reference::OcEvent { event: first.0, property }
                }
                _ => Reference::OcPath(OcPath {
                    event: None,
                    form: None,
                    group: Some(first.0),
                    item: no_selector(second, "item")?,
                }),
            }
        }
        (Some(form), Some(group), Some(item), None, None) => Reference::OcPath(OcPath {
            event: None,
            form: Some(no_selector(form, "form")?),
            group: Some(group.0),
            item: no_selector(item, "item")?,
        }),
        (Some(event), Some(form), Some(group), Some(item), None) => Reference::OcPath(OcPath {
            event: Some(event.0),
            form: Some(no_selector(form, "form")?),
            group: Some(group.0),
            item: no_selector(item, "item")?,
        }),
        _ => {
            return Err(ExprDiagnostic::error(
                whole,
                format!("{word} has too many parts: an OID path is at most SE_EVENT.F_FORM.IG_GROUP.I_ITEM"),
            ));
        }
    };
    Ok(reference)
}

fn parse_selector(sel: &str) -> Option<Repeat> {
    let sel = sel.trim();
    if sel.eq_ignore_ascii_case("END") {
        Some(Repeat::End)
    } else if sel.eq_ignore_ascii_case("ALL") {
        Some(Repeat::All)
    } else {
        sel.parse::<u32>().ok().filter(|n| *n >= 1).map(Repeat::Index)
    }
}
