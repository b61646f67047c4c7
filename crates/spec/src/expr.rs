//! The `${{ }}` expression language as GitHub Actions documents it: parsing, templates and
//! evaluation with GitHub's loose comparison rules.
//!
//! Pure: functions that need the outside world (`hashFiles`) and job status (`success()`...) are
//! answered by the caller through [`Host`].

use std::collections::BTreeMap;
use std::fmt;

/// Longest expression accepted, in bytes.
pub const MAX_EXPR_BYTES: usize = 16 * 1024;
/// Deepest nesting of parentheses, calls and operators accepted.
pub const MAX_EXPR_DEPTH: usize = 50;

/// A value as expressions see it: JSON's types, with numbers as doubles.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Value>),
    Object(BTreeMap<String, Value>),
}

impl Value {
    pub fn str(s: impl Into<String>) -> Value {
        Value::String(s.into())
    }

    /// GitHub's truthiness: `false`, `0`, `-0`, `""`, `null` and `NaN` are false.
    pub fn is_truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => *n != 0.0 && !n.is_nan(),
            Value::String(s) => !s.is_empty(),
            Value::Array(_) | Value::Object(_) => true,
        }
    }

    /// The value as a number, the way loose comparisons coerce it.
    pub fn to_number(&self) -> f64 {
        match self {
            Value::Null => 0.0,
            Value::Bool(b) => f64::from(u8::from(*b)),
            Value::Number(n) => *n,
            Value::String(s) => parse_number(s),
            Value::Array(_) | Value::Object(_) => f64::NAN,
        }
    }

    /// The value as text, the way `${{ }}` interpolation writes it.
    pub fn to_text(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => format_number(*n),
            Value::String(s) => s.clone(),
            Value::Array(_) => "Array".to_string(),
            Value::Object(_) => "Object".to_string(),
        }
    }

    /// Property lookup; keys match case-insensitively as on GitHub.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(map) => {
                map.get(key).or_else(|| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
            }
            _ => None,
        }
    }

    pub fn from_json(json: &serde_json::Value) -> Value {
        match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
            serde_json::Value::String(s) => Value::String(s.clone()),
            serde_json::Value::Array(items) => Value::Array(items.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(map) => {
                Value::Object(map.iter().map(|(k, v)| (k.clone(), Value::from_json(v))).collect())
            }
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => serde_json::Value::from(*n as i64),
            Value::Number(n) => {
                serde_json::Number::from_f64(*n).map_or(serde_json::Value::Null, serde_json::Value::Number)
            }
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Array(items) => serde_json::Value::Array(items.iter().map(Value::to_json).collect()),
            Value::Object(map) => {
                serde_json::Value::Object(map.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }

    /// Loose equality as GitHub defines it: differing types compare as numbers, strings
    /// case-insensitively, arrays and objects only by identity (here: structural equality of the
    /// very same value is the closest pure equivalent).
    pub fn loose_eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Number(a), Value::Number(b)) => a == b,
            (Value::String(a), Value::String(b)) => a.to_lowercase() == b.to_lowercase(),
            (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => false,
            (a, b) => a.to_number() == b.to_number(),
        }
    }

    fn loose_cmp(&self, other: &Value) -> Option<std::cmp::Ordering> {
        match (self, other) {
            (Value::String(a), Value::String(b)) => Some(a.to_lowercase().cmp(&b.to_lowercase())),
            (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => None,
            (a, b) => a.to_number().partial_cmp(&b.to_number()),
        }
    }
}

fn parse_number(s: &str) -> f64 {
    let t = s.trim();
    if t.is_empty() {
        return 0.0;
    }
    if let Some(hex) = t.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).map_or(f64::NAN, |n| n as f64);
    }
    if let Some(octal) = t.strip_prefix("0o") {
        return i64::from_str_radix(octal, 8).map_or(f64::NAN, |n| n as f64);
    }
    match t {
        "Infinity" | "+Infinity" => f64::INFINITY,
        "-Infinity" => f64::NEG_INFINITY,
        _ if t.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')) => {
            t.parse().unwrap_or(f64::NAN)
        }
        _ => f64::NAN,
    }
}

fn format_number(n: f64) -> String {
    if n.is_nan() {
        "NaN".to_string()
    } else if n.is_infinite() {
        if n > 0.0 { "Infinity".to_string() } else { "-Infinity".to_string() }
    } else if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// A parse or evaluation error, with a byte offset into the expression text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    pub offset: usize,
    pub len: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl ExprError {
    fn new(offset: usize, len: usize, message: impl Into<String>) -> ExprError {
        ExprError { offset, len, message: message.into(), hint: None }
    }

    fn hint(mut self, hint: impl Into<String>) -> ExprError {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ExprError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

/// A parsed expression. `offset`s are byte positions in the expression text, for diagnostics.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Literal(Value),
    Context {
        name: String,
        offset: usize,
    },
    Property(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
    /// `.*` or `[*]`: an object filter.
    Star(Box<Expr>),
    Call {
        name: String,
        args: Vec<Expr>,
        offset: usize,
    },
    Not(Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
}

/// The functions expressions may call, with their arity ranges.
pub const FUNCTIONS: &[(&str, usize, usize)] = &[
    ("contains", 2, 2),
    ("startsWith", 2, 2),
    ("endsWith", 2, 2),
    ("format", 1, usize::MAX),
    ("join", 1, 2),
    ("toJSON", 1, 1),
    ("fromJSON", 1, 1),
    ("hashFiles", 1, usize::MAX),
    ("success", 0, 0),
    ("failure", 0, 0),
    ("always", 0, 0),
    ("cancelled", 0, 0),
];

/// The named contexts expressions may read.
pub const CONTEXTS: &[&str] =
    &["github", "env", "vars", "matrix", "needs", "steps", "job", "jobs", "runner", "inputs", "secrets", "strategy"];

impl Expr {
    /// Every context name the expression reads, for availability checks.
    pub fn contexts(&self, out: &mut Vec<(String, usize)>) {
        match self {
            Expr::Literal(_) => {}
            Expr::Context { name, offset } => out.push((name.clone(), *offset)),
            Expr::Property(e, _) | Expr::Star(e) | Expr::Not(e) => e.contexts(out),
            Expr::Index(a, b) | Expr::Binary(_, a, b) => {
                a.contexts(out);
                b.contexts(out);
            }
            Expr::Call { args, .. } => args.iter().for_each(|a| a.contexts(out)),
        }
    }

    /// True when the expression calls a status function, which turns off the implicit
    /// `success() &&` that GitHub puts in front of every `if:`.
    pub fn has_status_function(&self) -> bool {
        match self {
            Expr::Call { name, args, .. } => {
                matches!(name.to_ascii_lowercase().as_str(), "success" | "failure" | "always" | "cancelled")
                    || args.iter().any(Expr::has_status_function)
            }
            Expr::Property(e, _) | Expr::Star(e) | Expr::Not(e) => e.has_status_function(),
            Expr::Index(a, b) | Expr::Binary(_, a, b) => a.has_status_function() || b.has_status_function(),
            Expr::Literal(_) | Expr::Context { .. } => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(f64),
    String(String),
    Ident(String),
    Punct(&'static str),
    End,
}

fn lex(text: &str) -> Result<Vec<(Token, usize, usize)>, ExprError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c == b'\'' {
            let mut value = String::new();
            i += 1;
            loop {
                match text[i..].find('\'') {
                    None => {
                        return Err(ExprError::new(start, text.len() - start, "unterminated string literal")
                            .hint("string literals use single quotes; write '' for a quote inside"));
                    }
                    Some(rel) => {
                        value.push_str(&text[i..i + rel]);
                        i += rel + 1;
                        if bytes.get(i) == Some(&b'\'') {
                            value.push('\'');
                            i += 1;
                        } else {
                            break;
                        }
                    }
                }
            }
            tokens.push((Token::String(value), start, i - start));
            continue;
        }
        if c == b'"' {
            return Err(ExprError::new(i, 1, "double quotes are not string delimiters in expressions")
                .hint("use single quotes: 'text'"));
        }
        if c.is_ascii_digit()
            || (c == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit))
            || c == b'-' && bytes.get(i + 1).is_some_and(|d| d.is_ascii_digit() || *d == b'.')
        {
            i += 1;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric()
                    || bytes[i] == b'.'
                    || ((bytes[i] == b'-' || bytes[i] == b'+') && matches!(bytes[i - 1], b'e' | b'E')))
            {
                i += 1;
            }
            let literal = &text[start..i];
            let n = parse_number(literal);
            if n.is_nan() {
                return Err(ExprError::new(start, i - start, format!("`{literal}` is not a number")));
            }
            tokens.push((Token::Number(n), start, i - start));
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            i += 1;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'-') {
                i += 1;
            }
            tokens.push((Token::Ident(text[start..i].to_string()), start, i - start));
            continue;
        }
        let two = text.get(i..i + 2).unwrap_or("");
        let punct: &'static str = match two {
            "==" => "==",
            "!=" => "!=",
            "<=" => "<=",
            ">=" => ">=",
            "&&" => "&&",
            "||" => "||",
            _ => match c {
                b'(' => "(",
                b')' => ")",
                b'[' => "[",
                b']' => "]",
                b'.' => ".",
                b',' => ",",
                b'!' => "!",
                b'<' => "<",
                b'>' => ">",
                b'*' => "*",
                _ => {
                    let ch = text[i..].chars().next().unwrap_or('?');
                    let hint = match ch {
                        '=' => "comparison is written `==`",
                        '&' => "logical and is written `&&`",
                        '|' => "logical or is written `||`",
                        _ => "expressions use literals, context names, operators and function calls",
                    };
                    return Err(ExprError::new(i, ch.len_utf8(), format!("unexpected character `{ch}`")).hint(hint));
                }
            },
        };
        i += punct.len();
        tokens.push((Token::Punct(punct), start, punct.len()));
    }
    tokens.push((Token::End, text.len(), 0));
    Ok(tokens)
}

/// Parses one expression (the text between `${{` and `}}`).
pub fn parse(text: &str) -> Result<Expr, ExprError> {
    if text.len() > MAX_EXPR_BYTES {
        return Err(ExprError::new(0, 1, format!("expression is longer than {MAX_EXPR_BYTES} bytes")));
    }
    if text.trim().is_empty() {
        return Err(ExprError::new(0, text.len(), "empty expression").hint("write something between `${{` and `}}`"));
    }
    let tokens = lex(text)?;
    let mut parser = ExprParser { tokens, pos: 0, depth: 0 };
    let expr = parser.expression(0)?;
    let (token, offset, len) = parser.peek_full();
    if *token != Token::End {
        return Err(ExprError::new(
            offset,
            len.max(1),
            format!("unexpected {} after the end of the expression", describe(token)),
        )
        .hint("join conditions with `&&` or `||`"));
    }
    Ok(expr)
}

fn describe(token: &Token) -> String {
    match token {
        Token::Number(n) => format!("number `{}`", format_number(*n)),
        Token::String(s) => format!("string '{s}'"),
        Token::Ident(s) => format!("`{s}`"),
        Token::Punct(p) => format!("`{p}`"),
        Token::End => "end of expression".to_string(),
    }
}

struct ExprParser {
    tokens: Vec<(Token, usize, usize)>,
    pos: usize,
    depth: usize,
}

impl ExprParser {
    fn peek(&self) -> &Token {
        &self.tokens[self.pos].0
    }

    fn peek_full(&self) -> (&Token, usize, usize) {
        let (t, o, l) = &self.tokens[self.pos];
        (t, *o, *l)
    }

    fn bump(&mut self) -> (Token, usize, usize) {
        let token = self.tokens[self.pos].clone();
        if self.pos + 1 < self.tokens.len() {
            self.pos += 1;
        }
        token
    }

    fn expect(&mut self, punct: &'static str, context: &str) -> Result<(), ExprError> {
        let (token, offset, len) = self.peek_full();
        if *token == Token::Punct(punct) {
            self.bump();
            Ok(())
        } else {
            Err(ExprError::new(offset, len.max(1), format!("expected `{punct}` {context}, found {}", describe(token))))
        }
    }

    fn enter(&mut self, offset: usize) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_EXPR_DEPTH {
            return Err(ExprError::new(offset, 1, format!("expression nests deeper than {MAX_EXPR_DEPTH} levels"))
                .hint("split it into steps or environment variables"));
        }
        Ok(())
    }

    fn expression(&mut self, min_precedence: u8) -> Result<Expr, ExprError> {
        let offset = self.peek_full().1;
        self.enter(offset)?;
        let mut left = self.unary()?;
        loop {
            let op = match self.peek() {
                Token::Punct("||") => (BinaryOp::Or, 1),
                Token::Punct("&&") => (BinaryOp::And, 2),
                Token::Punct("==") => (BinaryOp::Eq, 3),
                Token::Punct("!=") => (BinaryOp::Ne, 3),
                Token::Punct("<") => (BinaryOp::Lt, 4),
                Token::Punct("<=") => (BinaryOp::Le, 4),
                Token::Punct(">") => (BinaryOp::Gt, 4),
                Token::Punct(">=") => (BinaryOp::Ge, 4),
                _ => break,
            };
            if op.1 < min_precedence {
                break;
            }
            self.bump();
            let right = self.expression(op.1 + 1)?;
            left = Expr::Binary(op.0, Box::new(left), Box::new(right));
        }
        self.depth -= 1;
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        if *self.peek() == Token::Punct("!") {
            let (_, offset, _) = self.bump();
            self.enter(offset)?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        let primary = self.primary()?;
        self.postfix(primary)
    }

    fn primary(&mut self) -> Result<Expr, ExprError> {
        let (token, offset, len) = self.bump();
        match token {
            Token::Number(n) => Ok(Expr::Literal(Value::Number(n))),
            Token::String(s) => Ok(Expr::Literal(Value::String(s))),
            Token::Punct("(") => {
                let inner = self.expression(0)?;
                self.expect(")", "to close `(`")?;
                Ok(inner)
            }
            Token::Ident(name) => {
                if *self.peek() == Token::Punct("(") {
                    self.bump();
                    let mut args = Vec::new();
                    if *self.peek() != Token::Punct(")") {
                        loop {
                            args.push(self.expression(0)?);
                            if *self.peek() == Token::Punct(",") {
                                self.bump();
                                continue;
                            }
                            break;
                        }
                    }
                    self.expect(")", "to close the argument list")?;
                    return check_call(name, args, offset, len);
                }
                match name.as_str() {
                    "true" => Ok(Expr::Literal(Value::Bool(true))),
                    "false" => Ok(Expr::Literal(Value::Bool(false))),
                    "null" => Ok(Expr::Literal(Value::Null)),
                    "NaN" => Ok(Expr::Literal(Value::Number(f64::NAN))),
                    "Infinity" => Ok(Expr::Literal(Value::Number(f64::INFINITY))),
                    _ => {
                        if !CONTEXTS.iter().any(|c| c.eq_ignore_ascii_case(&name)) {
                            let hint = crate::diag::did_you_mean(&name, CONTEXTS.iter().copied())
                                .map(|s| format!("did you mean `{s}`?"))
                                .unwrap_or_else(|| format!("known contexts: {}", CONTEXTS.join(", ")));
                            return Err(ExprError::new(offset, len, format!("unknown context `{name}`")).hint(hint));
                        }
                        Ok(Expr::Context { name: name.to_ascii_lowercase(), offset })
                    }
                }
            }
            Token::End => Err(ExprError::new(offset, 1, "expression ends too early").hint("an operand is missing")),
            other => Err(ExprError::new(offset, len.max(1), format!("unexpected {}", describe(&other)))),
        }
    }

    fn postfix(&mut self, mut expr: Expr) -> Result<Expr, ExprError> {
        loop {
            match self.peek() {
                Token::Punct(".") => {
                    self.bump();
                    let (token, offset, len) = self.bump();
                    expr = match token {
                        Token::Ident(name) => Expr::Property(Box::new(expr), name),
                        Token::Punct("*") => Expr::Star(Box::new(expr)),
                        Token::Number(n) if n.fract() == 0.0 => Expr::Property(Box::new(expr), format_number(n)),
                        other => {
                            return Err(ExprError::new(
                                offset,
                                len.max(1),
                                format!("expected a property name after `.`, found {}", describe(&other)),
                            ));
                        }
                    };
                }
                Token::Punct("[") => {
                    self.bump();
                    if *self.peek() == Token::Punct("*") {
                        self.bump();
                        self.expect("]", "after `[*`")?;
                        expr = Expr::Star(Box::new(expr));
                    } else {
                        let index = self.expression(0)?;
                        self.expect("]", "to close `[`")?;
                        expr = Expr::Index(Box::new(expr), Box::new(index));
                    }
                }
                _ => return Ok(expr),
            }
        }
    }
}

fn check_call(name: String, args: Vec<Expr>, offset: usize, len: usize) -> Result<Expr, ExprError> {
    let Some(&(canonical, min, max)) = FUNCTIONS.iter().find(|(f, ..)| f.eq_ignore_ascii_case(&name)) else {
        let hint = crate::diag::did_you_mean(&name, FUNCTIONS.iter().map(|f| f.0))
            .map(|s| format!("did you mean `{s}`?"))
            .unwrap_or_else(|| "see the list of functions in the documentation".to_string());
        return Err(ExprError::new(offset, len, format!("unknown function `{name}`")).hint(hint));
    };
    if args.len() < min || args.len() > max {
        let expected = if min == max {
            format!("{min}")
        } else if max == usize::MAX {
            format!("at least {min}")
        } else {
            format!("{min} to {max}")
        };
        return Err(ExprError::new(
            offset,
            len,
            format!("`{canonical}` takes {expected} argument(s), found {}", args.len()),
        ));
    }
    Ok(Expr::Call { name: canonical.to_string(), args, offset })
}

/// What evaluation needs from the outside world.
pub trait Host {
    /// A context by its (lower-case) name, e.g. `github` or `matrix`.
    fn context(&self, name: &str) -> Option<&Value>;
    /// The status the status functions report.
    fn status(&self) -> Status {
        Status::default()
    }
    /// SHA-256 over the files matching the patterns, as `hashFiles` documents; empty when none.
    fn hash_files(&self, patterns: &[String]) -> Result<String, String> {
        let _ = patterns;
        Err("hashFiles is not available here".to_string())
    }
}

/// What `success()`, `failure()` and `cancelled()` see.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    /// A previous step (or a needed job) failed.
    pub failed: bool,
    /// The run was cancelled.
    pub cancelled: bool,
    /// A needed job ended without failing but without succeeding (skipped or cancelled), so
    /// `success()` is false while `failure()` is false too.
    pub blocked: bool,
}

/// A plain map of contexts, for tests and simple callers.
#[derive(Debug, Default, Clone)]
pub struct Contexts {
    pub values: BTreeMap<String, Value>,
    pub status: Status,
}

impl Host for Contexts {
    fn context(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    fn status(&self) -> Status {
        self.status
    }
}

/// An evaluation result, remembering whether it came out of an object filter (`.*`).
struct Eval {
    value: Value,
    filtered: bool,
}

impl Eval {
    fn plain(value: Value) -> Eval {
        Eval { value, filtered: false }
    }
}

pub fn evaluate(expr: &Expr, host: &dyn Host) -> Result<Value, ExprError> {
    eval(expr, host).map(|e| e.value)
}

fn eval(expr: &Expr, host: &dyn Host) -> Result<Eval, ExprError> {
    Ok(match expr {
        Expr::Literal(v) => Eval::plain(v.clone()),
        Expr::Context { name, .. } => Eval::plain(host.context(name).cloned().unwrap_or(Value::Null)),
        Expr::Property(base, key) => {
            let base = eval(base, host)?;
            access(base, |v| v.get(key).cloned())
        }
        Expr::Index(base, index) => {
            let base = eval(base, host)?;
            let index = eval(index, host)?.value;
            access(base, |v| match (v, &index) {
                (Value::Array(items), i) => {
                    let n = i.to_number();
                    if n >= 0.0 && n.fract() == 0.0 { items.get(n as usize).cloned() } else { None }
                }
                (Value::Object(_), Value::String(key)) => v.get(key).cloned(),
                (Value::Object(_), other) => v.get(&other.to_text()).cloned(),
                _ => None,
            })
        }
        Expr::Star(base) => {
            let base = eval(base, host)?;
            let items: Vec<Value> = if base.filtered {
                match base.value {
                    Value::Array(items) => items
                        .into_iter()
                        .flat_map(|item| match item {
                            Value::Array(inner) => inner,
                            Value::Object(map) => map.into_values().collect(),
                            _ => Vec::new(),
                        })
                        .collect(),
                    _ => Vec::new(),
                }
            } else {
                match base.value {
                    Value::Array(items) => items,
                    Value::Object(map) => map.into_values().collect(),
                    _ => Vec::new(),
                }
            };
            Eval { value: Value::Array(items), filtered: true }
        }
        Expr::Not(inner) => Eval::plain(Value::Bool(!eval(inner, host)?.value.is_truthy())),
        Expr::Binary(op, left, right) => {
            let l = eval(left, host)?.value;
            match op {
                BinaryOp::And => {
                    if !l.is_truthy() {
                        Eval::plain(l)
                    } else {
                        Eval::plain(eval(right, host)?.value)
                    }
                }
                BinaryOp::Or => {
                    if l.is_truthy() {
                        Eval::plain(l)
                    } else {
                        Eval::plain(eval(right, host)?.value)
                    }
                }
                _ => {
                    let r = eval(right, host)?.value;
                    let ordering = l.loose_cmp(&r);
                    Eval::plain(Value::Bool(match op {
                        BinaryOp::Eq => l.loose_eq(&r),
                        BinaryOp::Ne => !l.loose_eq(&r),
                        BinaryOp::Lt => ordering == Some(std::cmp::Ordering::Less),
                        BinaryOp::Le => matches!(ordering, Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)),
                        BinaryOp::Gt => ordering == Some(std::cmp::Ordering::Greater),
                        BinaryOp::Ge => {
                            matches!(ordering, Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal))
                        }
                        BinaryOp::And | BinaryOp::Or => unreachable_op(),
                    }))
                }
            }
        }
        Expr::Call { name, args, offset } => Eval::plain(call(name, args, *offset, host)?),
    })
}

fn unreachable_op() -> bool {
    false
}

fn access(base: Eval, f: impl Fn(&Value) -> Option<Value>) -> Eval {
    if base.filtered {
        let items = match base.value {
            Value::Array(items) => items.iter().filter_map(&f).collect(),
            _ => Vec::new(),
        };
        Eval { value: Value::Array(items), filtered: true }
    } else {
        Eval::plain(f(&base.value).unwrap_or(Value::Null))
    }
}

fn call(name: &str, args: &[Expr], offset: usize, host: &dyn Host) -> Result<Value, ExprError> {
    let status = host.status();
    match name {
        "success" => return Ok(Value::Bool(!status.failed && !status.cancelled && !status.blocked)),
        "failure" => return Ok(Value::Bool(status.failed)),
        "always" => return Ok(Value::Bool(true)),
        "cancelled" => return Ok(Value::Bool(status.cancelled)),
        _ => {}
    }
    let values = args.iter().map(|a| evaluate(a, host)).collect::<Result<Vec<_>, _>>()?;
    let text = |i: usize| values.get(i).map(Value::to_text).unwrap_or_default();
    Ok(match name {
        "contains" => Value::Bool(match &values[0] {
            Value::Array(items) => items.iter().any(|item| item.loose_eq(&values[1])),
            other => other.to_text().to_lowercase().contains(&text(1).to_lowercase()),
        }),
        "startsWith" => Value::Bool(text(0).to_lowercase().starts_with(&text(1).to_lowercase())),
        "endsWith" => Value::Bool(text(0).to_lowercase().ends_with(&text(1).to_lowercase())),
        "format" => Value::String(format_string(&text(0), &values[1..]).map_err(|m| ExprError::new(offset, 6, m))?),
        "join" => {
            let separator = if values.len() > 1 { text(1) } else { ",".to_string() };
            match &values[0] {
                Value::Array(items) => {
                    Value::String(items.iter().map(Value::to_text).collect::<Vec<_>>().join(&separator))
                }
                other => Value::String(other.to_text()),
            }
        }
        "toJSON" => Value::String(serde_json::to_string_pretty(&values[0].to_json()).unwrap_or_default()),
        "fromJSON" => {
            let source = text(0);
            let json: serde_json::Value = serde_json::from_str(&source)
                .map_err(|e| ExprError::new(offset, 8, format!("fromJSON: the argument is not valid JSON: {e}")))?;
            Value::from_json(&json)
        }
        "hashFiles" => {
            let patterns: Vec<String> = values.iter().map(Value::to_text).collect();
            Value::String(host.hash_files(&patterns).map_err(|m| ExprError::new(offset, 9, m))?)
        }
        _ => return Err(ExprError::new(offset, name.len(), format!("unknown function `{name}`"))),
    })
}

fn format_string(template: &str, args: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = template.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' if chars.peek().map(|p| p.1) == Some('{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek().map(|p| p.1) == Some('}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let rest = &template[i + 1..];
                let end = rest.find('}').ok_or_else(|| format!("format: unclosed `{{` at position {i}"))?;
                let index: usize = rest[..end]
                    .parse()
                    .map_err(|_| format!("format: `{{{}}}` is not an argument index", &rest[..end]))?;
                let arg = args
                    .get(index)
                    .ok_or_else(|| format!("format: no argument {index} (only {} given)", args.len()))?;
                out.push_str(&arg.to_text());
                for _ in 0..=end {
                    chars.next();
                }
            }
            '}' => return Err(format!("format: unmatched `}}` at position {i}; write `}}}}` for a literal brace")),
            _ => out.push(c),
        }
    }
    Ok(out)
}

/// A piece of a string that may hold `${{ }}` expressions.
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    Text(String),
    /// An expression, with the byte offset of its text in the template.
    Expr(Expr, usize),
}

/// A string with embedded expressions, parsed once.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Template {
    pub segments: Vec<Segment>,
}

impl Template {
    /// Parses `text`, returning every expression error with its byte offset in `text`.
    pub fn parse(text: &str) -> Result<Template, ExprError> {
        let mut segments = Vec::new();
        let mut rest = text;
        let mut base = 0;
        while let Some(start) = rest.find("${{") {
            if start > 0 {
                segments.push(Segment::Text(rest[..start].to_string()));
            }
            let inner_start = start + 3;
            let end = find_close(&rest[inner_start..]).ok_or_else(|| {
                ExprError::new(base + start, 3, "`${{` is never closed").hint("end the expression with `}}`")
            })?;
            let inner = &rest[inner_start..inner_start + end];
            let expr = parse(inner).map_err(|mut e| {
                e.offset += base + inner_start;
                e
            })?;
            segments.push(Segment::Expr(expr, base + inner_start));
            let consumed = inner_start + end + 2;
            base += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Text(rest.to_string()));
        }
        Ok(Template { segments })
    }

    pub fn is_literal(&self) -> bool {
        self.segments.iter().all(|s| matches!(s, Segment::Text(_)))
    }

    pub fn expressions(&self) -> impl Iterator<Item = (&Expr, usize)> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Expr(e, offset) => Some((e, *offset)),
            Segment::Text(_) => None,
        })
    }

    /// Evaluates to a value: a template that is a single expression keeps the expression's type;
    /// anything else becomes a string.
    pub fn evaluate(&self, host: &dyn Host) -> Result<Value, ExprError> {
        if let [Segment::Expr(expr, _)] = self.segments.as_slice() {
            return evaluate(expr, host);
        }
        Ok(Value::String(self.render(host)?))
    }

    pub fn render(&self, host: &dyn Host) -> Result<String, ExprError> {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Text(text) => out.push_str(text),
                Segment::Expr(expr, _) => out.push_str(&evaluate(expr, host)?.to_text()),
            }
        }
        Ok(out)
    }
}

/// Finds the `}}` that closes an expression, skipping string literals.
fn find_close(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' => in_string = !in_string,
            b'}' if !in_string && bytes.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Parses an `if:` condition, which may omit `${{ }}`, and adds GitHub's implicit `success() &&`
/// when the condition calls no status function.
pub fn parse_condition(text: &str) -> Result<Expr, ExprError> {
    let trimmed = text.trim();
    let (inner, offset) = match trimmed.strip_prefix("${{").and_then(|s| s.strip_suffix("}}")) {
        Some(inner) if find_close(inner).is_none() => (inner, text.find("${{").unwrap_or(0) + 3),
        _ => {
            if trimmed.contains("${{") {
                // A condition mixing text and expressions is a string, and so always truthy.
                Template::parse(text)?;
                return Err(ExprError::new(0, text.len(), "condition mixes text and `${{ }}`, so it is always true")
                    .hint("write the whole condition as one expression, without `${{ }}`"));
            }
            (text, 0)
        }
    };
    let expr = parse(inner).map_err(|mut e| {
        e.offset += offset;
        e
    })?;
    if expr.has_status_function() {
        Ok(expr)
    } else {
        let success = Expr::Call { name: "success".to_string(), args: Vec::new(), offset: 0 };
        Ok(Expr::Binary(BinaryOp::And, Box::new(success), Box::new(expr)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contexts() -> Contexts {
        let json = serde_json::json!({
            "github": {"ref": "refs/heads/main", "event_name": "push", "event": {"commits": [{"message": "one"}, {"message": "two"}]}},
            "matrix": {"os": "Ubuntu", "version": 3},
            "env": {"EMPTY": ""},
        });
        Contexts {
            values: match Value::from_json(&json) {
                Value::Object(m) => m,
                _ => BTreeMap::new(),
            },
            status: Status::default(),
        }
    }

    fn check(text: &str, expected: serde_json::Value) {
        let expr = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let value = evaluate(&expr, &contexts()).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(value.to_json(), expected, "{text}");
    }

    #[test]
    fn literals_and_operators() {
        check("1 == 1.0", serde_json::json!(true));
        check("'abc' == 'ABC'", serde_json::json!(true));
        check("'' == 0", serde_json::json!(true));
        check("null == 0", serde_json::json!(true));
        check("true == 1", serde_json::json!(true));
        check("'a' == 0", serde_json::json!(false));
        check("0x10 > 15 && 2 < 3", serde_json::json!(true));
        check("'It''s' == 'it''s'", serde_json::json!(true));
        check("null || 'fallback'", serde_json::json!("fallback"));
        check("'' && 'x'", serde_json::json!(""));
        check("!matrix.missing", serde_json::json!(true));
        check("'b' > 'A'", serde_json::json!(true));
        check("1 < 'x'", serde_json::json!(false));
        check("-1.5e1 < 0", serde_json::json!(true));
    }

    #[test]
    fn contexts_and_filters() {
        check("github.ref", serde_json::json!("refs/heads/main"));
        check("GitHub.Event_Name", serde_json::json!("push"));
        check("github['ref']", serde_json::json!("refs/heads/main"));
        check("github.event.commits.*.message", serde_json::json!(["one", "two"]));
        check("github.event.commits[1].message", serde_json::json!("two"));
        check("contains(github.event.commits.*.message, 'TWO')", serde_json::json!(true));
        check("matrix.version", serde_json::json!(3));
    }

    #[test]
    fn functions() {
        check("contains('Hello world', 'WORLD')", serde_json::json!(true));
        check("contains(fromJSON('[\"a\",\"b\"]'), 'b')", serde_json::json!(true));
        check("startsWith(github.ref, 'refs/heads/')", serde_json::json!(true));
        check("endsWith('file.yml', '.YML')", serde_json::json!(true));
        check("format('{0} on {1}: {{x}}', 'test', matrix.os)", serde_json::json!("test on Ubuntu: {x}"));
        check("join(fromJSON('[1,2,3]'), '-')", serde_json::json!("1-2-3"));
        check("join('abc')", serde_json::json!("abc"));
        check("toJSON(matrix)", serde_json::json!("{\n  \"os\": \"Ubuntu\",\n  \"version\": 3\n}"));
        check("fromJSON('{\"a\": [1]}').a[0]", serde_json::json!(1));
        check("fromJSON('3') == 3", serde_json::json!(true));
    }

    #[test]
    fn errors_carry_offsets_and_hints() {
        let error = parse("github.ref = 'x'").unwrap_err();
        assert_eq!(error.offset, 11);
        assert!(error.hint.as_deref().unwrap().contains("=="));
        let error = parse("contains(a)").unwrap_err();
        assert!(error.message.contains("unknown context `a`"), "{}", error.message);
        let error = parse("contains('a')").unwrap_err();
        assert!(error.message.contains("takes 2 argument"), "{}", error.message);
        let error = parse("startswith('a', 'b') && frobnicate()").unwrap_err();
        assert!(error.message.contains("unknown function `frobnicate`"));
        assert_eq!(error.offset, 24);
        let error = parse("gihub.ref").unwrap_err();
        assert_eq!(error.hint.as_deref(), Some("did you mean `github`?"));
        assert!(parse("\"x\"").unwrap_err().hint.unwrap().contains("single quotes"));
    }

    #[test]
    fn refuses_pathological_expressions() {
        let deep = format!("{}1{}", "(".repeat(1_000), ")".repeat(1_000));
        assert!(parse(&deep).unwrap_err().message.contains("deeper"));
        let nots = format!("{}true", "!".repeat(10_000));
        assert!(parse(&nots).unwrap_err().message.contains("deeper"));
        let long = "1 == 1 && ".repeat(5_000) + "true";
        assert!(parse(&long).unwrap_err().message.contains("longer"));
    }

    #[test]
    fn templates() {
        let template = Template::parse("run ${{ matrix.os }} v${{ matrix.version }} '}}'").unwrap();
        assert_eq!(template.render(&contexts()).unwrap(), "run Ubuntu v3 '}}'");
        let single = Template::parse("${{ matrix.version }}").unwrap();
        assert_eq!(single.evaluate(&contexts()).unwrap(), Value::Number(3.0));
        let error = Template::parse("a ${{ matrix.os").unwrap_err();
        assert_eq!(error.offset, 2);
        let error = Template::parse("ab ${{ matrix.os == }}").unwrap_err();
        assert!(error.offset > 6, "{error:?}");
    }

    #[test]
    fn conditions_get_implicit_success() {
        let mut host = contexts();
        let condition = parse_condition("github.event_name == 'push'").unwrap();
        assert_eq!(evaluate(&condition, &host).unwrap(), Value::Bool(true));
        host.status.failed = true;
        assert!(!evaluate(&condition, &host).unwrap().is_truthy());
        let condition = parse_condition("${{ failure() && github.event_name == 'push' }}").unwrap();
        assert!(evaluate(&condition, &host).unwrap().is_truthy());
        let condition = parse_condition("always()").unwrap();
        assert!(evaluate(&condition, &host).unwrap().is_truthy());
        assert!(parse_condition("${{ a }} == b").is_err());
    }
}
