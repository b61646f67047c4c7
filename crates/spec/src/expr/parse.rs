//! The expression lexer and Pratt parser, with byte offsets for diagnostics and limits on length and depth.

#[allow(unused_imports)]
use super::*;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Token {
    Number(f64),
    String(String),
    Ident(String),
    Punct(&'static str),
    End,
}

pub(super) fn lex(text: &str) -> Result<Vec<(Token, usize, usize)>, ExprError> {
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
pub(super) fn describe(token: &Token) -> String {
    match token {
        Token::Number(n) => format!("number `{}`", format_number(*n)),
        Token::String(s) => format!("string '{s}'"),
        Token::Ident(s) => format!("`{s}`"),
        Token::Punct(p) => format!("`{p}`"),
        Token::End => "end of expression".to_string(),
    }
}

pub(super) struct ExprParser {
    pub(super) tokens: Vec<(Token, usize, usize)>,
    pub(super) pos: usize,
    pub(super) depth: usize,
}

impl ExprParser {
    pub(super) fn peek(&self) -> &Token {
        &self.tokens[self.pos].0
    }

    pub(super) fn peek_full(&self) -> (&Token, usize, usize) {
        let (t, o, l) = &self.tokens[self.pos];
        (t, *o, *l)
    }

    pub(super) fn bump(&mut self) -> (Token, usize, usize) {
        let token = self.tokens[self.pos].clone();
        if self.pos + 1 < self.tokens.len() {
            self.pos += 1;
        }
        token
    }

    pub(super) fn expect(&mut self, punct: &'static str, context: &str) -> Result<(), ExprError> {
        let (token, offset, len) = self.peek_full();
        if *token == Token::Punct(punct) {
            self.bump();
            Ok(())
        } else {
            Err(ExprError::new(offset, len.max(1), format!("expected `{punct}` {context}, found {}", describe(token))))
        }
    }

    pub(super) fn enter(&mut self, offset: usize) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_EXPR_DEPTH {
            return Err(ExprError::new(offset, 1, format!("expression nests deeper than {MAX_EXPR_DEPTH} levels"))
                .hint("split it into steps or environment variables"));
        }
        Ok(())
    }

    pub(super) fn expression(&mut self, min_precedence: u8) -> Result<Expr, ExprError> {
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

    pub(super) fn unary(&mut self) -> Result<Expr, ExprError> {
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

    pub(super) fn primary(&mut self) -> Result<Expr, ExprError> {
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

    pub(super) fn postfix(&mut self, mut expr: Expr) -> Result<Expr, ExprError> {
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

pub(super) fn check_call(name: String, args: Vec<Expr>, offset: usize, len: usize) -> Result<Expr, ExprError> {
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
