//! Prometheus's own PromQL test files (`../shared/corpus/promql`), read and run against Tandem's
//! store and engine: `load`, `clear`, `eval instant`, `eval range`, with the `expect` lines
//! (`fail`, `ordered`, `string`, `range vector`; warnings and infos are annotations Tandem does
//! not produce, so only the values are compared). Cases on native histograms are skipped and
//! counted, as the corpus README allows.

use std::collections::HashSet;
use std::path::Path;

use metrics::promql::{Engine, Value};
use metrics::{Db, Labels, Options};

#[derive(Debug, Default)]
pub struct Outcome {
    pub passed: usize,
    pub failed: Vec<String>,
    pub skipped: usize,
}

struct Case {
    line: usize,
    instant: bool,
    at: i64,
    range: (i64, i64, i64),
    query: String,
    expect_fail: bool,
    ordered: bool,
    expect_string: Option<String>,
    expected: Vec<(Labels, Vec<Option<f64>>)>,
    matrix_grid: Option<(i64, i64, i64)>,
    scalar: Option<f64>,
}

pub fn run_file(path: &Path) -> Outcome {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut outcome = Outcome::default();
    let mut dir = tempfile::tempdir().unwrap();
    let mut db = Db::open(dir.path(), Options::default()).unwrap();
    let mut histogram_metrics: HashSet<String> = HashSet::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        if line.is_empty() || line.starts_with('#') {
            i += 1;
            continue;
        }
        if line == "clear" {
            dir = tempfile::tempdir().unwrap();
            db = Db::open(dir.path(), Options::default()).unwrap();
            histogram_metrics.clear();
            i += 1;
            continue;
        }
        if let Some(rest) = line.strip_prefix("load") {
            let interval = duration(rest.split_whitespace().last().unwrap_or("1m")).unwrap();
            i += 1;
            // A series defined twice in one block keeps its last definition, as Prometheus's
            // test harness keeps its definitions by label set.
            let mut definitions: Vec<(Labels, Vec<Option<f64>>)> = Vec::new();
            while i < lines.len() && !lines[i].trim().is_empty() && lines[i].starts_with([' ', '\t']) {
                let series = lines[i].trim();
                i += 1;
                if series.starts_with('#') {
                    continue;
                }
                if series.contains("{{") {
                    let name = series.split(['{', ' ', '\t']).next().unwrap_or_default();
                    histogram_metrics.insert(name.to_string());
                    continue;
                }
                let (labels, values) = split_series(series);
                definitions.retain(|(defined, _)| *defined != labels);
                definitions.push((labels, expand(values)));
            }
            let mut batch = Vec::new();
            for (labels, values) in definitions {
                for (step, value) in values.into_iter().enumerate() {
                    if let Some(v) = value {
                        batch.push((labels.clone(), step as i64 * interval, v));
                    }
                }
            }
            batch.sort_by_key(|(_, t, _)| *t);
            db.append(&batch).unwrap();
            continue;
        }
        if line.starts_with("eval") {
            let start = i + 1;
            let (case, next) = read_case(&lines, i);
            i = next;
            let mentions_histogram = histogram_metrics.iter().any(|m| case.query.contains(m.as_str()))
                || lines[start..next].iter().any(|l| l.contains("{{"));
            if mentions_histogram {
                outcome.skipped += 1;
                continue;
            }
            match check(&db, &case) {
                Ok(()) => outcome.passed += 1,
                Err(why) => outcome.failed.push(format!("{}:{}: {}\n    {why}", path.display(), case.line, case.query)),
            }
            continue;
        }
        i += 1;
    }
    outcome
}

fn read_case(lines: &[&str], i: usize) -> (Case, usize) {
    let header = lines[i].trim();
    let (head, rest) = header.split_once(' ').unwrap();
    let mut case = Case {
        line: i + 1,
        instant: true,
        at: 0,
        range: (0, 0, 1),
        query: String::new(),
        expect_fail: head == "eval_fail",
        ordered: head == "eval_ordered",
        expect_string: None,
        expected: Vec::new(),
        matrix_grid: None,
        scalar: None,
    };
    if let Some(rest) = rest.strip_prefix("instant at ") {
        let (at, query) = rest.split_once(' ').unwrap();
        case.at = duration(at).unwrap_or_else(|| panic!("cannot read the time `{at}`"));
        case.query = query.trim().to_string();
    } else if let Some(rest) = rest.strip_prefix("range from ") {
        // from <t0> to <t1> step <s> <expr>
        let parts: Vec<&str> = rest.splitn(6, ' ').collect();
        case.instant = false;
        case.range = (duration(parts[0]).unwrap(), duration(parts[2]).unwrap(), duration(parts[4]).unwrap());
        case.query = parts[5].trim().to_string();
    }
    let mut j = i + 1;
    while j < lines.len() && !lines[j].trim().is_empty() && lines[j].starts_with([' ', '\t']) {
        let line = lines[j].trim();
        j += 1;
        if let Some(expect) = line.strip_prefix("expect ") {
            if expect.starts_with("fail") {
                case.expect_fail = true;
            } else if expect.starts_with("ordered") {
                case.ordered = true;
            } else if let Some(s) = expect.strip_prefix("string ") {
                let s = s.trim();
                case.expect_string = Some(s[1..s.len() - 1].to_string());
            } else if let Some(grid) = expect.strip_prefix("range vector from ") {
                let parts: Vec<&str> = grid.split_whitespace().collect();
                case.matrix_grid =
                    Some((duration(parts[0]).unwrap(), duration(parts[2]).unwrap(), duration(parts[4]).unwrap()));
            }
            continue;
        }
        if line.starts_with('#') || line.contains("{{") {
            continue;
        }
        if !line.starts_with('{') && !line.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            || ["NaN", "Inf", "+Inf", "-Inf"].contains(&line)
        {
            case.scalar = value(line);
            continue;
        }
        let (labels, values) = split_series(line);
        case.expected.push((labels, expand(values)));
    }
    (case, j)
}

fn check(db: &Db, case: &Case) -> Result<(), String> {
    let result = if case.instant {
        Engine::instant(db, &case.query, case.at).map(Some)
    } else {
        let (start, end, step) = case.range;
        Engine::range(db, &case.query, start, end, step).map(|m| Some(Value::Matrix(m)))
    };
    let value = match (result, case.expect_fail) {
        (Err(_), true) => return Ok(()),
        (Ok(_), true) => return Err("expected an error, got a result".into()),
        (Err(e), false) => return Err(format!("error: {e}")),
        (Ok(v), false) => v.unwrap(),
    };
    if let Some(expected) = &case.expect_string {
        return match value {
            Value::String(s) if &s == expected => Ok(()),
            other => Err(format!("expected string {expected:?}, got {other:?}")),
        };
    }
    if let Some(expected) = case.scalar {
        return match value {
            Value::Scalar(v) if same(v, expected) => Ok(()),
            other => Err(format!("expected scalar {expected}, got {other:?}")),
        };
    }
    match value {
        Value::Vector(samples) => {
            let got: Vec<(Labels, Vec<Option<f64>>)> =
                samples.into_iter().map(|s| (s.labels, vec![Some(s.v)])).collect();
            compare(&got, &case.expected, case.ordered)
        }
        Value::Matrix(series) => {
            let (start, end, step) = case.matrix_grid.unwrap_or(case.range);
            let got: Vec<(Labels, Vec<Option<f64>>)> = series
                .into_iter()
                .map(|s| {
                    let mut grid = Vec::new();
                    let mut t = start;
                    while t <= end {
                        grid.push(s.points.iter().find(|p| p.0 == t).map(|p| p.1));
                        t += step;
                    }
                    (s.labels, grid)
                })
                .collect();
            compare(&got, &case.expected, false)
        }
        Value::Scalar(v) => Err(format!("got scalar {v}, expected a vector")),
        Value::String(s) => Err(format!("got string {s:?}")),
    }
}

fn compare(
    got: &[(Labels, Vec<Option<f64>>)],
    want: &[(Labels, Vec<Option<f64>>)],
    ordered: bool,
) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("expected {} series, got {}: {:?}", want.len(), got.len(), shown(got)));
    }
    for (index, (labels, values)) in want.iter().enumerate() {
        let Some(position) = got.iter().position(|(l, _)| l == labels) else {
            return Err(format!("no series {labels} in {:?}", shown(got)));
        };
        if ordered && position != index {
            return Err(format!("{labels} at position {position}, expected {index}"));
        }
        // A grid's missing points at the end are not written in the files' expectations.
        let mut trimmed: Vec<Option<f64>> = got[position].1.clone();
        while trimmed.len() > values.len() && trimmed.last() == Some(&None) {
            trimmed.pop();
        }
        let matches = values.len() == trimmed.len()
            && values.iter().zip(&trimmed).all(|(a, b)| match (a, b) {
                (None, None) => true,
                (Some(a), Some(b)) => same(*a, *b),
                _ => false,
            });
        if !matches {
            return Err(format!("{labels}: expected {values:?}, got {trimmed:?}"));
        }
    }
    Ok(())
}

fn shown(got: &[(Labels, Vec<Option<f64>>)]) -> Vec<String> {
    got.iter().map(|(l, v)| format!("{l} {v:?}")).collect()
}

/// Equal as Prometheus's tests compare: both NaN, or within a relative 1e-6.
fn same(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a == b {
        return true;
    }
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || diff < f64::MIN_POSITIVE {
        return diff < 1e-6 * f64::MIN_POSITIVE;
    }
    diff / (a.abs() + b.abs()).min(f64::MAX) < 1e-6
}

/// `name{a="b", c="d"} values…` or `{a="b"} values…`.
fn split_series(line: &str) -> (Labels, &str) {
    let mut pairs = Vec::new();
    let (name, rest) = match line.find(['{', ' ', '\t']) {
        Some(i) => (&line[..i], &line[i..]),
        None => (line, ""),
    };
    if !name.is_empty() {
        pairs.push(("__name__".to_string(), name.to_string()));
    }
    let mut rest = rest.trim_start();
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let mut end = body.len();
        let mut key = String::new();
        let mut in_value = false;
        let mut value = String::new();
        while let Some((i, c)) = chars.next() {
            if in_value {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(match n {
                                'n' => '\n',
                                other => other,
                            });
                        }
                    }
                    '"' => {
                        in_value = false;
                        pairs.push((key.trim().trim_start_matches(',').trim().to_string(), std::mem::take(&mut value)));
                        key.clear();
                    }
                    c => value.push(c),
                }
                continue;
            }
            match c {
                '}' => {
                    end = i + 1;
                    break;
                }
                '"' => in_value = true,
                '=' => {}
                ',' | ' ' => {}
                c => key.push(c),
            }
        }
        rest = body[end..].trim_start();
    }
    (Labels::new(pairs), rest)
}

/// The expanding notation: `1+2x3` is 1 3 5 7, `_` a gap, `stale` a staleness marker.
fn expand(values: &str) -> Vec<Option<f64>> {
    let mut out = Vec::new();
    for token in values.split_whitespace() {
        if token == "_" {
            out.push(None);
        } else if let Some(n) = token.strip_prefix("_x") {
            out.extend(std::iter::repeat_n(None, n.parse().unwrap()));
        } else if token == "stale" {
            out.push(Some(f64::from_bits(metrics::db::STALE_NAN)));
        } else if let Some((start, times)) = token.rsplit_once('x') {
            let bad = || -> f64 { panic!("cannot read `{token}` in `{values}`") };
            let times: usize = times.parse().unwrap_or_else(|_| bad() as usize);
            let (base, delta) = match start.get(1..).and_then(|s| s.find(['+', '-'])) {
                Some(i) => (value(&start[..i + 1]).unwrap_or_else(bad), value(&start[i + 1..]).unwrap_or_else(bad)),
                None => (value(start).unwrap_or_else(bad), 0.0),
            };
            for k in 0..=times {
                out.push(Some(base + delta * k as f64));
            }
        } else {
            out.push(value(token));
        }
    }
    out
}

fn value(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "Inf" | "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        t => t.parse().ok(),
    }
}

/// `5m`, `1h30m`, `10s`, `0`, `-50s`, `1d`: milliseconds.
fn duration(text: &str) -> Option<i64> {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let ms = match text.parse::<f64>() {
        Ok(seconds) => (seconds * 1000.0).round() as i64,
        // PromQL's parser refuses a zero duration (`0m`), which the test files use as a time.
        Err(_) if text.trim_end_matches(|c: char| c.is_ascii_alphabetic()).chars().all(|c| c == '0') => 0,
        Err(_) => promql_parser::util::parse_duration(text).ok()?.as_millis() as i64,
    };
    Some(if negative { -ms } else { ms })
}
