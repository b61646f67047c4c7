//! The Prometheus text exposition format (0.0.4) and OpenMetrics text: what scrape targets serve
//! and what `tandem metrics import` reads. Errors carry line and column, what was expected, and
//! what was found.
//!
//! Timestamps are milliseconds in the Prometheus format and seconds (with a fraction) in
//! OpenMetrics; a document ending in `# EOF` is read as OpenMetrics.

use crate::labels::{Labels, NAME};

/// One sample as exposed; `t` in milliseconds when the exposition gave one.
#[derive(Debug, Clone, PartialEq)]
pub struct Exposed {
    pub labels: Labels,
    pub value: f64,
    pub t: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: expected {expected}, found {found}")]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub expected: &'static str,
    pub found: String,
}

/// Reads a whole exposition; the first malformed line is the error (nothing is half-read).
pub fn parse(text: &str) -> Result<Vec<Exposed>, ParseError> {
    let scanned = parse_cached(text, |_| None::<()>)?;
    Ok(scanned
        .into_iter()
        .filter_map(|line| match line {
            Scanned::New { sample, .. } => Some(sample),
            Scanned::Known { .. } => None,
        })
        .collect())
}

/// A sample line read for a scrape cache: a series seen before is named by the text the target
/// wrote for it (`name{labels}`) and only its value and timestamp are read; a new one is read whole.
#[derive(Debug, Clone, PartialEq)]
pub enum Scanned<'a, K> {
    Known { series: K, value: f64, t: Option<i64> },
    New { key: &'a str, sample: Exposed },
}

/// Reads a whole exposition as [`parse`] does (the same errors), but asks `known` for each line's
/// series text first: labels are built only for series it does not know. Prometheus's scrape
/// cache works the same way; building and hashing every sample's labels was most of a scrape's
/// cost.
pub fn parse_cached<'a, K>(
    text: &'a str,
    known: impl Fn(&str) -> Option<K>,
) -> Result<Vec<Scanned<'a, K>>, ParseError> {
    let openmetrics = text.lines().any(|l| l.trim_end() == "# EOF");
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let start = line.len() - trimmed.len();
        let mut cursor = Cursor { text: line, pos: start, line: index + 1 };
        let cached = series_end(trimmed).and_then(|end| Some((end, known(&trimmed[..end])?)));
        match cached {
            Some((end, series)) => {
                cursor.pos = start + end;
                let (value, t) = cursor.value_and_time(openmetrics)?;
                out.push(Scanned::Known { series, value, t });
            }
            None => {
                let sample = cursor.sample(openmetrics)?;
                let key = series_end(trimmed).map_or(trimmed, |end| &trimmed[..end]);
                out.push(Scanned::New { key, sample });
            }
        }
    }
    Ok(out)
}

/// Where the series part of a sample line ends: after the name, or after the `}` closing its
/// labels (quotes and escapes honoured). `None` when the line is malformed there.
fn series_end(line: &str) -> Option<usize> {
    let bytes = line.as_bytes();
    let mut i = bytes.iter().position(|b| matches!(b, b'{' | b' ' | b'\t'))?;
    if bytes[i] != b'{' {
        return Some(i);
    }
    let mut quoted = false;
    while i < bytes.len() {
        match (bytes[i], quoted) {
            (b'\\', true) => i += 1,
            (b'"', _) => quoted = !quoted,
            (b'}', false) => return Some(i + 1),
            _ => {}
        }
        i += 1;
    }
    None
}

struct Cursor<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
}

impl Cursor<'_> {
    fn error(&self, expected: &'static str) -> ParseError {
        let found = match self.rest().chars().take(12).collect::<String>() {
            rest if rest.is_empty() => "the end of the line".to_string(),
            rest => format!("`{rest}`"),
        };
        ParseError { line: self.line, column: self.text[..self.pos].chars().count() + 1, expected, found }
    }

    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
    }

    fn name(&mut self, first: fn(char) -> bool, expected: &'static str) -> Result<String, ParseError> {
        let start = self.pos;
        let mut end = start;
        for (i, c) in self.rest().char_indices() {
            let ok = if i == 0 { first(c) } else { c.is_ascii_alphanumeric() || c == '_' || (c == ':' && first(':')) };
            if !ok {
                break;
            }
            end = start + i + c.len_utf8();
        }
        self.pos = end;
        if self.pos == start {
            return Err(self.error(expected));
        }
        Ok(self.text[start..self.pos].to_string())
    }

    fn sample(&mut self, openmetrics: bool) -> Result<Exposed, ParseError> {
        let metric = self.name(|c| c.is_ascii_alphabetic() || c == '_' || c == ':', "a metric name")?;
        let mut pairs = vec![(NAME.to_string(), metric)];
        if self.peek() == Some('{') {
            self.pos += 1;
            loop {
                self.skip_spaces();
                if self.peek() == Some('}') {
                    self.pos += 1;
                    break;
                }
                let name = self.name(|c| c.is_ascii_alphabetic() || c == '_', "a label name or `}`")?;
                self.skip_spaces();
                if self.peek() != Some('=') {
                    return Err(self.error("`=` after the label name"));
                }
                self.pos += 1;
                self.skip_spaces();
                let value = self.quoted()?;
                if pairs.iter().any(|(n, _)| *n == name) {
                    return Err(ParseError {
                        line: self.line,
                        column: self.pos,
                        expected: "each label once",
                        found: format!("`{name}` twice"),
                    });
                }
                pairs.push((name, value));
                self.skip_spaces();
                match self.peek() {
                    Some(',') => self.pos += 1,
                    Some('}') => {}
                    _ => return Err(self.error("`,` or `}` after a label value")),
                }
            }
        }
        let (value, t) = self.value_and_time(openmetrics)?;
        Ok(Exposed { labels: Labels::new(pairs), value, t })
    }

    /// The value and optional timestamp after a series.
    fn value_and_time(&mut self, openmetrics: bool) -> Result<(f64, Option<i64>), ParseError> {
        if !matches!(self.peek(), Some(' ' | '\t')) {
            return Err(self.error("a space, then the value"));
        }
        self.skip_spaces();
        let value = self.number("a value (a number, NaN, +Inf or -Inf)")?;
        self.skip_spaces();
        let t = if self.rest().is_empty() || self.rest().starts_with('#') {
            None
        } else {
            let raw = self.number("a timestamp or the end of the line")?;
            Some(if openmetrics { (raw * 1000.0).round() as i64 } else { raw as i64 })
        };
        self.skip_spaces();
        if !self.rest().is_empty() && !self.rest().starts_with('#') {
            return Err(self.error("the end of the line"));
        }
        Ok((value, t))
    }

    fn quoted(&mut self) -> Result<String, ParseError> {
        if self.peek() != Some('"') {
            return Err(self.error("a quoted label value"));
        }
        self.pos += 1;
        let mut value = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(value);
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, other)) => {
                        value.push('\\');
                        value.push(other);
                    }
                    None => break,
                },
                c => value.push(c),
            }
        }
        self.pos = self.text.len();
        Err(self.error("the closing `\"` of the label value"))
    }

    fn number(&mut self, expected: &'static str) -> Result<f64, ParseError> {
        let word: String = self.rest().chars().take_while(|c| !c.is_whitespace()).collect();
        let value = match word.as_str() {
            "NaN" => Some(f64::NAN),
            "+Inf" | "Inf" => Some(f64::INFINITY),
            "-Inf" => Some(f64::NEG_INFINITY),
            w if w.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) => w.parse().ok(),
            _ => None,
        };
        match value {
            Some(value) if !word.is_empty() => {
                self.pos += word.len();
                Ok(value)
            }
            _ => Err(self.error(expected)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_formats_with_escapes_and_timestamps() {
        let text = "# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\nhttp_requests_total{code=\"200\",path=\"/a \\\"b\\\"\"} 1027 1395066363000\nup 1\n";
        let samples = parse(text).unwrap();
        assert_eq!(samples[0].labels.get("path"), "/a \"b\"");
        assert_eq!((samples[0].value, samples[0].t), (1027.0, Some(1_395_066_363_000)));
        assert_eq!((samples[1].labels.name(), samples[1].t), ("up", None));
        let om = parse("# TYPE a gauge\na 2.5 1.5\n# EOF\n").unwrap();
        assert_eq!(om[0].t, Some(1500), "OpenMetrics timestamps are seconds");
    }

    #[test]
    fn a_malformed_line_is_named_with_its_place() {
        let error = parse("ok 1\nbad{code=\"200\" 1\n").unwrap_err();
        assert_eq!((error.line, error.column, error.expected), (2, 16, "`,` or `}` after a label value"));
        let error = parse("x{a=\"1\"} one\n").unwrap_err();
        assert_eq!((error.line, error.column), (1, 10));
        assert!(error.to_string().contains("expected a value"), "{error}");
    }
}
