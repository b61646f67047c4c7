//! The `${{ }}` expression language as GitHub Actions documents it: parsing, templates and
//! evaluation with GitHub's loose comparison rules.
//!
//! Pure: functions that need the outside world (`hashFiles`) and job status (`success()`...) are
//! answered by the caller through [`Host`].

use std::collections::BTreeMap;
use std::fmt;

mod eval;
mod parse;
#[allow(unused_imports)]
use eval::*;
#[allow(unused_imports)]
use parse::*;

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

pub fn evaluate(expr: &Expr, host: &dyn Host) -> Result<Value, ExprError> {
    eval(expr, host).map(|e| e.value)
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
                // Text with `${{ }}` inside is a string, as on GitHub: `success() && 'the text'`,
                // truthy unless it renders empty. The checker warns about it.
                let template = Template::parse(text)?;
                let mut pattern = String::new();
                let mut args = Vec::new();
                for segment in template.segments {
                    match segment {
                        Segment::Text(t) => pattern.push_str(&t.replace('{', "{{").replace('}', "}}")),
                        Segment::Expr(expr, _) => {
                            pattern.push_str(&format!("{{{}}}", args.len()));
                            args.push(expr);
                        }
                    }
                }
                args.insert(0, Expr::Literal(Value::String(pattern)));
                let text = Expr::Call { name: "format".to_string(), args, offset: 0 };
                let success = Expr::Call { name: "success".to_string(), args: Vec::new(), offset: 0 };
                return Ok(Expr::Binary(BinaryOp::And, Box::new(success), Box::new(text)));
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
