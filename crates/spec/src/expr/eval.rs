//! Evaluation of a parsed expression against a `Host`: GitHub's loose comparison, object filters and the functions.

#[allow(unused_imports)]
use super::*;

/// An evaluation result, remembering whether it came out of an object filter (`.*`).
pub(super) struct Eval {
    pub(super) value: Value,
    pub(super) filtered: bool,
}

impl Eval {
    pub(super) fn plain(value: Value) -> Eval {
        Eval { value, filtered: false }
    }
}

pub(super) fn eval(expr: &Expr, host: &dyn Host) -> Result<Eval, ExprError> {
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

pub(super) fn unreachable_op() -> bool {
    false
}

pub(super) fn access(base: Eval, f: impl Fn(&Value) -> Option<Value>) -> Eval {
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

pub(super) fn call(name: &str, args: &[Expr], offset: usize, host: &dyn Host) -> Result<Value, ExprError> {
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

pub(super) fn format_string(template: &str, args: &[Value]) -> Result<String, String> {
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
