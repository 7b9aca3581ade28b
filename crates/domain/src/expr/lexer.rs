//! Source text to tokens, one lexer for every dialect (the differences are small: what a word
//! may contain, `${…}` references, OpenClinica date literals).
//!
//! Keywords (`and`, `div`, `eq`, …) are not tokens of their own: they are words that the parser
//! reads as operators where an operator may stand, as XPath itself specifies.

use super::ast::{Dialect, Span};
use super::diagnostic::{ExprDiagnostic, column};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Number(String),
    Text(String),
    /// `${name}`
    Field(String),
    /// A name, keyword or (OpenClinica) OID path such as `SE_V[2].F_A.IG_B[END].I_C`.
    Word(String),
    /// OpenClinica `2024-01-31` or `2024/01/31`.
    Date(String),
    Dot,
    DotDot,
    Slash,
    Plus,
    Minus,
    Star,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    LParen,
    RParen,
    Comma,
    LBracket,
    RBracket,
    Pipe,
    Eof,
}

impl Tok {
    /// How the token is named in messages: `')'`, `'and'`, `the number 3`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Number(n) => format!("the number {n}"),
            Self::Text(t) => format!("the text '{t}'"),
            Self::Field(n) => format!("${{{n}}}"),
            Self::Word(w) | Self::Date(w) => format!("'{w}'"),
            Self::Eof => "the end of the expression".to_owned(),
            other => format!("'{}'", other.punctuation()),
        }
    }

    fn punctuation(&self) -> &'static str {
        match self {
            Self::Dot => ".",
            Self::DotDot => "..",
            Self::Slash => "/",
            Self::Plus => "+",
            Self::Minus => "-",
            Self::Star => "*",
            Self::Eq => "=",
            Self::Ne => "!=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::LParen => "(",
            Self::RParen => ")",
            Self::Comma => ",",
            Self::LBracket => "[",
            Self::RBracket => "]",
            Self::Pipe => "|",
            _ => "",
        }
    }
}

pub(crate) type Token = (Tok, Span);

/// Tokenises `src[start..]`; spans are offsets in `src`. Every lexical error is reported.
pub(crate) fn lex(src: &str, start: usize, dialect: Dialect) -> Result<Vec<Token>, Vec<ExprDiagnostic>> {
    let mut lexer = Lexer { src, pos: start, dialect, tokens: Vec::new(), errors: Vec::new() };
    lexer.run();
    if lexer.errors.is_empty() { Ok(lexer.tokens) } else { Err(lexer.errors) }
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    dialect: Dialect,
    tokens: Vec<Token>,
    errors: Vec<ExprDiagnostic>,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.src[self.pos..].chars().nth(n)
    }

    fn rest(&self) -> &str {
        &self.src[self.pos..]
    }

    fn col(&self, byte: usize) -> usize {
        column(self.src, byte)
    }

    fn push(&mut self, tok: Tok, start: usize) {
        self.tokens.push((tok, Span::new(start, self.pos)));
    }

    fn error(&mut self, start: usize, end: usize, message: String) {
        self.errors.push(ExprDiagnostic::error(start..end, message));
    }

    fn run(&mut self) {
        while let Some(c) = self.peek() {
            let start = self.pos;
            if c.is_whitespace() {
                self.pos += c.len_utf8();
                continue;
            }
            if c.is_ascii_digit() || (c == '.' && self.peek_at(1).is_some_and(|d| d.is_ascii_digit())) {
                self.number();
                continue;
            }
            if c == '\'' || c == '"' {
                self.string(c);
                continue;
            }
            if c == '$' && self.peek_at(1) == Some('{') && self.dialect.is_xpath() {
                self.field();
                continue;
            }
            if c.is_alphabetic() || c == '_' {
                self.word();
                continue;
            }
            let two: String = self.rest().chars().take(2).collect();
            let (tok, len) = match two.as_str() {
                "!=" => (Tok::Ne, 2),
                "<=" => (Tok::Le, 2),
                ">=" => (Tok::Ge, 2),
                ".." => (Tok::DotDot, 2),
                "==" | "&&" | "||" | "<>" => {
                    let hint = match two.as_str() {
                        "==" if self.dialect.is_xpath() => "write = to compare",
                        "==" => "write eq to compare",
                        "&&" => "write and",
                        "||" => "write or",
                        _ if self.dialect.is_xpath() => "write != for 'not equal'",
                        _ => "write ne for 'not equal'",
                    };
                    self.pos += 2;
                    self.error(
                        start,
                        self.pos,
                        format!("'{two}' at column {} is not an operator: {hint}", self.col(start)),
                    );
                    continue;
                }
                _ => match c {
                    '.' => (Tok::Dot, 1),
                    '/' => (Tok::Slash, 1),
                    '+' => (Tok::Plus, 1),
                    '-' => (Tok::Minus, 1),
                    '*' => (Tok::Star, 1),
                    '=' => (Tok::Eq, 1),
                    '<' => (Tok::Lt, 1),
                    '>' => (Tok::Gt, 1),
                    '(' => (Tok::LParen, 1),
                    ')' => (Tok::RParen, 1),
                    ',' => (Tok::Comma, 1),
                    '[' => (Tok::LBracket, 1),
                    ']' => (Tok::RBracket, 1),
                    '|' => (Tok::Pipe, 1),
                    _ => {
                        self.pos += c.len_utf8();
                        let hint = if c == '$' { ": write a reference as ${name}" } else { "" };
                        self.error(
                            start,
                            self.pos,
                            format!("unexpected character '{c}' at column {}{hint}", self.col(start)),
                        );
                        continue;
                    }
                },
            };
            self.pos += len;
            self.push(tok, start);
        }
        let end = self.src.len();
        self.tokens.push((Tok::Eof, Span::new(end, end)));
    }

    fn eat_digits(&mut self) -> usize {
        let n = self.rest().chars().take_while(char::is_ascii_digit).count();
        self.pos += n;
        n
    }

    fn number(&mut self) {
        let start = self.pos;
        if self.dialect == Dialect::OcRule
            && let Some(len) = oc_date_literal_len(self.rest())
        {
            self.pos += len;
            let text = self.src[start..self.pos].to_owned();
            self.push(Tok::Date(text), start);
            return;
        }
        self.eat_digits();
        if self.peek() == Some('.') && self.peek_at(1) != Some('.') {
            self.pos += 1;
            self.eat_digits();
        }
        let text = self.src[start..self.pos].to_owned();
        self.push(Tok::Number(text), start);
    }

    fn string(&mut self, quote: char) {
        let start = self.pos;
        self.pos += 1;
        match self.rest().find(quote) {
            Some(len) => {
                let text = self.rest()[..len].to_owned();
                self.pos += len + 1;
                self.push(Tok::Text(text), start);
            }
            None => {
                self.pos = self.src.len();
                let message =
                    format!("unterminated text starting at column {}: add the closing {quote}", self.col(start));
                self.error(start, self.pos, message);
            }
        }
    }

    fn field(&mut self) {
        let start = self.pos;
        self.pos += 2;
        let Some(len) = self.rest().find('}') else {
            self.pos = self.src.len();
            let message = format!("unterminated reference ${{ at column {}: add the closing }}", self.col(start));
            self.error(start, self.pos, message);
            return;
        };
        let name = self.rest()[..len].to_owned();
        self.pos += len + 1;
        if is_xlsform_name(&name) {
            self.push(Tok::Field(name), start);
        } else {
            let message = format!(
                "'${{{name}}}' at column {} is not a valid reference: a name starts with a letter or _ and \
                 has only letters, digits, _, - and .",
                self.col(start)
            );
            self.error(start, self.pos, message);
        }
    }

    fn word(&mut self) {
        let start = self.pos;
        match self.dialect {
            Dialect::XPath | Dialect::ChoiceFilter => {
                self.eat_while(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
                // A namespace prefix: `jr:choice-name`.
                if self.peek() == Some(':') && self.peek_at(1).is_some_and(|c| c.is_alphabetic() || c == '_') {
                    self.pos += 1;
                    self.eat_while(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
                }
            }
            Dialect::OcCalculation => self.eat_while(|c| c.is_alphanumeric() || c == '_'),
            Dialect::OcRule => loop {
                self.eat_while(|c| c.is_alphanumeric() || c == '_');
                if self.peek() == Some('[') {
                    match self.rest().find(']') {
                        Some(len) => self.pos += len + 1,
                        None => {
                            let open = self.pos;
                            self.pos = self.src.len();
                            let message = format!("missing ']' for the '[' at column {}", self.col(open));
                            self.error(open, self.pos, message);
                            return;
                        }
                    }
                }
                if self.peek() == Some('.') && self.peek_at(1).is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    self.pos += 1;
                } else {
                    break;
                }
            },
        }
        let text = self.src[start..self.pos].to_owned();
        self.push(Tok::Word(text), start);
    }

    fn eat_while(&mut self, f: impl Fn(char) -> bool) {
        let n: usize = self.rest().chars().take_while(|c| f(*c)).map(char::len_utf8).sum();
        self.pos += n;
    }
}

/// XLSForm names: a letter or `_`, then letters, digits, `_`, `-`, `.`.
pub(crate) fn is_xlsform_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The length of an OpenClinica date literal (`2024-01-31`, `2024/01/31`) at the start of `s`.
fn oc_date_literal_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let sep = b.get(4).copied().filter(|c| *c == b'-' || *c == b'/')?;
    let ok = digits(0..4) && digits(5..7) && b.get(7) == Some(&sep) && digits(8..10);
    let followed_by_digit = b.get(10).is_some_and(u8::is_ascii_digit);
    (ok && !followed_by_digit).then_some(10)
}
