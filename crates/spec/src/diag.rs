//! Diagnostics: a problem in a user's file, with its place, what was expected and a hint.

use serde::Serialize;

/// A place in a source file. Lines and columns are 1-based and count characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Span {
    pub line: u32,
    pub col: u32,
    pub end_line: u32,
    pub end_col: u32,
}

impl Span {
    pub fn new(line: u32, col: u32, end_line: u32, end_col: u32) -> Span {
        Span { line, col, end_line, end_col }
    }

    /// A span covering `len` characters from a starting point on one line.
    pub fn at(line: u32, col: u32, len: u32) -> Span {
        Span { line, col, end_line: line, end_col: col + len.max(1) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

/// One problem found in a file. Parsers collect these instead of stopping at the first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// A stable, kebab-case identifier such as `unknown-key` or `needs-cycle`.
    pub code: &'static str,
    pub message: String,
    pub span: Span,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic { severity: Severity::Error, code, message: message.into(), span, expected: None, hint: None }
    }

    pub fn warning(code: &'static str, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic { severity: Severity::Warning, ..Diagnostic::error(code, span, message) }
    }

    pub fn expected(mut self, expected: impl Into<String>) -> Diagnostic {
        self.expected = Some(expected.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    pub fn maybe_hint(self, hint: Option<String>) -> Diagnostic {
        match hint {
            Some(hint) => self.hint(hint),
            None => self,
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Renders the diagnostic the way compilers do: header, location, the offending line with a
    /// caret underline, then what was expected and the hint.
    pub fn render(&self, file: &str, source: &str) -> String {
        use std::fmt::Write;
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut out = String::new();
        let _ = writeln!(out, "{severity}[{}]: {}", self.code, self.message);
        let _ = writeln!(out, "  --> {file}:{}:{}", self.span.line, self.span.col);
        if let Some(text) = source.lines().nth(self.span.line.saturating_sub(1) as usize) {
            let number = self.span.line.to_string();
            let pad = " ".repeat(number.len());
            let shown: String = text.chars().take(200).collect();
            let start = self.span.col.saturating_sub(1) as usize;
            let line_len = shown.chars().count();
            let end = if self.span.end_line == self.span.line {
                (self.span.end_col.saturating_sub(1) as usize).max(start + 1)
            } else {
                line_len.max(start + 1)
            };
            let width = end.saturating_sub(start).clamp(1, 200);
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{number} | {shown}");
            let _ = writeln!(out, "{pad} | {}{}", " ".repeat(start.min(200)), "^".repeat(width));
        }
        if let Some(expected) = &self.expected {
            let _ = writeln!(out, "  = expected: {expected}");
        }
        if let Some(hint) = &self.hint {
            let _ = writeln!(out, "  = hint: {hint}");
        }
        out
    }
}

/// The closest candidate to `word` by edit distance, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word_lower = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|candidate| (edit_distance(&word_lower, &candidate.to_ascii_lowercase()), candidate))
        .filter(|&(distance, candidate)| distance <= (candidate.len().max(word.len()) / 3).max(1))
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

/// The candidate at most two edits away from `word`, for names where longer distances are
/// usually other names altogether (`actions/upload-pages-artifact` is no typo of
/// `actions/upload-artifact`).
pub fn near_miss<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|candidate| (edit_distance(&word, &candidate.to_ascii_lowercase()), candidate))
        .filter(|&(distance, _)| (1..=2).contains(&distance))
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            current.push((previous[j] + cost).min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(did_you_mean("need", ["needs", "name", "if"]), Some("needs"));
        assert_eq!(did_you_mean("runs_on", ["runs-on", "steps"]), Some("runs-on"));
        assert_eq!(did_you_mean("zzzzzz", ["needs", "name"]), None);
    }

    #[test]
    fn renders_caret_under_the_span() {
        let diagnostic =
            Diagnostic::error("unknown-key", Span::at(2, 5, 4), "unknown key `need`").hint("did you mean `needs`?");
        let text = diagnostic.render("ci.yml", "jobs:\n    need: a\n");
        assert!(text.contains("--> ci.yml:2:5"), "{text}");
        assert!(text.contains("2 |     need: a\n  |     ^^^^\n"), "{text}");
        assert!(text.contains("= hint: did you mean `needs`?"), "{text}");
    }
}
