//! A YAML document as a tree of nodes that remember where they came from.
//!
//! Built from saphyr-parser's event stream, with hard limits on input size, nesting depth and
//! alias expansion so that hostile input is refused instead of exhausting memory or stack.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle};

use crate::diag::{Diagnostic, Span};
use crate::expr::Value;

/// Largest file accepted, in bytes.
pub const MAX_FILE_BYTES: usize = 10 * 1024 * 1024;
/// Deepest nesting of sequences and mappings accepted.
pub const MAX_DEPTH: usize = 64;
/// Most nodes a document may expand to, aliases included (guards against "billion laughs").
pub const MAX_NODES: usize = 1_000_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A scalar; `quoted` is true for every style but plain, so `'true'` stays a string.
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The text of a scalar, whatever its type.
    pub fn as_scalar(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            NodeKind::Map(entries) => Some(entries),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.kind {
            NodeKind::Seq(items) => Some(items),
            _ => None,
        }
    }

    /// True for `~`, `null`, an empty plain scalar.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { text, quoted: false } if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?.iter().find(|(k, _)| k.as_scalar() == Some(key)).map(|(_, v)| v)
    }

    /// A short description of the node's type, for "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar { .. } if self.is_null() => "null",
            NodeKind::Scalar { .. } => match self.to_value() {
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                _ => "a string",
            },
            NodeKind::Seq(_) => "a sequence",
            NodeKind::Map(_) => "a mapping",
        }
    }

    /// The node as an expression value, resolving plain scalars by YAML 1.2's core schema.
    pub fn to_value(&self) -> Value {
        match &self.kind {
            NodeKind::Scalar { text, quoted: true } => Value::String(text.clone()),
            NodeKind::Scalar { text, quoted: false } => resolve_plain(text),
            NodeKind::Seq(items) => Value::Array(items.iter().map(Node::to_value).collect()),
            NodeKind::Map(entries) => Value::Object(
                entries.iter().map(|(k, v)| (k.as_scalar().unwrap_or_default().to_string(), v.to_value())).collect(),
            ),
        }
    }
}

/// The entries of a mapping node as `(key, value, key span)`, reporting a node that is not a
/// mapping (null counts as empty when `null_is_empty`), keys that are not strings, duplicate keys,
/// and — when `known` is not empty — unknown keys with the closest known one as a hint.
pub fn entries<'n>(
    node: &'n Node,
    what: &str,
    known: &[&str],
    null_is_empty: bool,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<(&'n str, &'n Node, Span)> {
    let Some(map) = node.as_map() else {
        if !(null_is_empty && node.is_null()) {
            let message = format!("{what} must be a mapping, found {}", node.type_name());
            diagnostics.push(Diagnostic::error("wrong-type", node.span, message).expected("a mapping"));
        }
        return Vec::new();
    };
    let mut out: Vec<(&str, &Node, Span)> = Vec::new();
    for (key, value) in map {
        let Some(name) = key.as_scalar() else {
            diagnostics.push(Diagnostic::error("wrong-type", key.span, format!("keys of {what} must be strings")));
            continue;
        };
        if out.iter().any(|(seen, ..)| *seen == name) {
            diagnostics.push(
                Diagnostic::error("duplicate-key", key.span, format!("`{name}` appears twice in {what}"))
                    .hint("remove one of them; YAML keeps only the last"),
            );
            continue;
        }
        if !known.is_empty() && !known.contains(&name) {
            let hint = crate::diag::did_you_mean(name, known.iter().copied()).map(|s| format!("did you mean `{s}`?"));
            let expected = format!("one of {}", known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "));
            diagnostics.push(
                Diagnostic::error("unknown-key", key.span, format!("unknown key `{name}` in {what}"))
                    .expected(expected)
                    .maybe_hint(hint),
            );
            continue;
        }
        out.push((name, value, key.span));
    }
    out
}

fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" => Value::Number(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => Value::Number(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => Value::Number(f64::NAN),
        _ => {
            let looks_numeric =
                text.trim_start_matches(['-', '+']).chars().next().is_some_and(|c| c.is_ascii_digit() || c == '.');
            if looks_numeric {
                if let Some(hex) = text.strip_prefix("0x")
                    && let Ok(n) = i64::from_str_radix(hex, 16)
                {
                    return Value::Number(n as f64);
                }
                if let Some(octal) = text.strip_prefix("0o")
                    && let Ok(n) = i64::from_str_radix(octal, 8)
                {
                    return Value::Number(n as f64);
                }
                if let Ok(n) = text.parse::<f64>()
                    && !text.contains(['_', ' '])
                {
                    return Value::Number(n);
                }
            }
            Value::String(text.to_string())
        }
    }
}

/// Parses one YAML document. Returns `None` with diagnostics when the text is not valid YAML or
/// breaks a limit; the diagnostics then say where.
pub fn parse(source: &str) -> Result<Option<Node>, Diagnostic> {
    if source.len() > MAX_FILE_BYTES {
        return Err(Diagnostic::error(
            "file-too-large",
            Span::at(1, 1, 1),
            format!("file is {} bytes, more than the limit of {MAX_FILE_BYTES} bytes", source.len()),
        )
        .hint("split the workflow into smaller files"));
    }
    let mut builder = Builder { stack: Vec::new(), anchors: HashMap::new(), n_nodes: 0, root: None, n_documents: 0 };
    for event in Parser::new_from_str(source) {
        let (event, span) = event.map_err(|error| {
            let marker = error.marker();
            Diagnostic::error(
                "yaml-syntax",
                Span::at(marker.line() as u32, marker.col() as u32 + 1, 1),
                format!("invalid YAML: {}", error.info()),
            )
            .hint("check the indentation and quoting around this place")
        })?;
        let start = Span::at(span.start.line() as u32, span.start.col() as u32 + 1, 1);
        let span = Span::new(start.line, start.col, span.end.line() as u32, span.end.col() as u32 + 1);
        builder.event(event, span)?;
    }
    Ok(builder.root)
}

enum Frame {
    Seq { items: Vec<Node>, span: Span, anchor: usize },
    Map { entries: Vec<(Node, Node)>, key: Option<Node>, span: Span, anchor: usize },
}

struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    n_nodes: usize,
    root: Option<Node>,
    n_documents: usize,
}

impl Builder {
    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), Diagnostic> {
        match event {
            Event::DocumentStart(_) => {
                self.n_documents += 1;
                if self.n_documents > 1 {
                    return Err(Diagnostic::error(
                        "yaml-multiple-documents",
                        span,
                        "more than one YAML document in the file",
                    )
                    .hint("a workflow file holds exactly one document; remove the `---` separator"));
                }
            }
            Event::Scalar(text, style, anchor, _) => {
                let quoted = !matches!(style, ScalarStyle::Plain);
                self.push(Node { kind: NodeKind::Scalar { text: text.into_owned(), quoted }, span }, anchor, 1)?;
            }
            Event::SequenceStart(anchor, _) => self.open(Frame::Seq { items: Vec::new(), span, anchor }, span)?,
            Event::MappingStart(anchor, _) => {
                self.open(Frame::Map { entries: Vec::new(), key: None, span, anchor }, span)?
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let frame = self.stack.pop();
                let (node, anchor) = match frame {
                    Some(Frame::Seq { items, span: start, anchor }) => {
                        (Node { kind: NodeKind::Seq(items), span: close(start, span) }, anchor)
                    }
                    Some(Frame::Map { entries, span: start, anchor, .. }) => {
                        (Node { kind: NodeKind::Map(entries), span: close(start, span) }, anchor)
                    }
                    None => return Ok(()),
                };
                self.push(node, anchor, 0)?;
            }
            Event::Alias(id) => {
                let Some(node) = self.anchors.get(&id).cloned() else {
                    return Err(Diagnostic::error("yaml-alias", span, "alias refers to an unknown anchor"));
                };
                let n_nodes = count_nodes(&node);
                let node = Node { span, ..node };
                self.push(node, 0, n_nodes)?;
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
        Ok(())
    }

    fn open(&mut self, frame: Frame, span: Span) -> Result<(), Diagnostic> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(Diagnostic::error("yaml-too-deep", span, format!("nesting deeper than {MAX_DEPTH} levels"))
                .hint("workflow files never need this much nesting; is the file generated by mistake?"));
        }
        self.stack.push(frame);
        Ok(())
    }

    fn push(&mut self, node: Node, anchor: usize, n_new_nodes: usize) -> Result<(), Diagnostic> {
        self.n_nodes += n_new_nodes.max(1);
        if self.n_nodes > MAX_NODES {
            return Err(Diagnostic::error(
                "yaml-too-large",
                node.span,
                format!("document expands to more than {MAX_NODES} nodes"),
            )
            .hint("aliases that refer to aliases multiply the size of a document; expand fewer of them"));
        }
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
        Ok(())
    }
}

fn close(start: Span, end: Span) -> Span {
    Span::new(start.line, start.col, end.end_line, end.end_col)
}

fn count_nodes(node: &Node) -> usize {
    match &node.kind {
        NodeKind::Scalar { .. } => 1,
        NodeKind::Seq(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        NodeKind::Map(entries) => 1 + entries.iter().map(|(k, v)| count_nodes(k) + count_nodes(v)).sum::<usize>(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_one_based() {
        let root = parse("a: 1\nb:\n  c: 'x'\n").unwrap().unwrap();
        let c = root.get("b").unwrap().get("c").unwrap();
        assert_eq!((c.span.line, c.span.col), (3, 6));
        assert_eq!(c.to_value(), Value::String("x".into()));
        assert_eq!(root.get("a").unwrap().to_value(), Value::Number(1.0));
    }

    #[test]
    fn plain_scalars_resolve_by_core_schema() {
        assert_eq!(resolve_plain("on"), Value::String("on".into()));
        assert_eq!(resolve_plain("true"), Value::Bool(true));
        assert_eq!(resolve_plain("1.70"), Value::Number(1.7));
        assert_eq!(resolve_plain("1_000"), Value::String("1_000".into()));
        assert_eq!(resolve_plain("0x1F"), Value::Number(31.0));
        assert_eq!(resolve_plain("3.10.x"), Value::String("3.10.x".into()));
    }

    #[test]
    fn refuses_deep_nesting_and_alias_bombs() {
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(parse(&deep).unwrap_err().code, "yaml-too-deep");
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let p = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert_eq!(parse(&bomb).unwrap_err().code, "yaml-too-large");
    }
}
