//! PromQL over the store, with Prometheus 3's semantics: instant vectors look back 5 minutes and
//! skip stale series, range selectors are left-open `(t − range, t]`, `offset` and `@` move the
//! evaluation time, subqueries step on absolute multiples of their step. Range queries evaluate
//! the expression at each step.
//!
//! Parsing is `promql-parser`'s; evaluation (selectors, operators with vector matching,
//! aggregations, functions) is here, and is held to Prometheus's own PromQL test files.

mod functions;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use promql_parser::label::{MatchOp, Matchers};
use promql_parser::parser::{
    self, AggregateExpr, AtModifier, BinaryExpr, Expr, LabelModifier, Offset, VectorMatchCardinality, VectorSelector,
};

use crate::db::{Db, Match, is_stale};
use crate::labels::{Labels, NAME};

/// How far back an instant selector looks for a series' latest sample.
pub const LOOKBACK_MS: i64 = 5 * 60 * 1000;

/// The most series one query may touch; more is refused, so one query cannot stall the server.
pub const MAX_SERIES: usize = 500_000;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Parse(String),
    #[error("{0}")]
    Eval(String),
    #[error("the query touches more than {MAX_SERIES} series\n  hint: add label matchers to narrow it")]
    TooManySeries,
}

fn fail<T>(message: impl Into<String>) -> Result<T, QueryError> {
    Err(QueryError::Eval(message.into()))
}

/// One sample of an instant vector: `ts` is when it was recorded (for `timestamp()`).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub v: f64,
    pub ts: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub points: Vec<(i64, f64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(f64),
    String(String),
    Vector(Vec<Sample>),
    Matrix(Vec<Series>),
}

impl Value {
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Scalar(_) => "scalar",
            Value::String(_) => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}

/// Parses a query, with the parser's message on failure.
pub fn parse(query: &str) -> Result<Expr, QueryError> {
    parser::parse(query).map_err(QueryError::Parse)
}

pub struct Engine<'a> {
    db: &'a Db,
    /// The query's start and end (for `@ start()` and `@ end()`), ms.
    start: i64,
    /// A range query's step (0 for an instant query), ms.
    step: i64,
    end: i64,
}

impl<'a> Engine<'a> {
    /// The value of `query` at `t` (ms).
    pub fn instant(db: &'a Db, query: &str, t: i64) -> Result<Value, QueryError> {
        let expr = parse(query)?;
        Engine { db, start: t, end: t, step: 0 }.eval(&expr, t)
    }

    /// `query` at every step from `start` to `end` (ms), as one series per label set.
    pub fn range(db: &'a Db, query: &str, start: i64, end: i64, step: i64) -> Result<Vec<Series>, QueryError> {
        if step <= 0 {
            return fail("the step must be positive");
        }
        if (end - start) / step > 11_000 {
            return fail("more than 11,000 points per series; raise the step");
        }
        let expr = parse(query)?;
        let engine = Engine { db, start, end, step };
        let mut by_labels: HashMap<Labels, Vec<(i64, f64)>> = HashMap::new();
        let mut t = start;
        while t <= end {
            match engine.eval(&expr, t)? {
                Value::Scalar(v) => by_labels.entry(Labels::default()).or_default().push((t, v)),
                Value::Vector(samples) => {
                    for s in samples {
                        by_labels.entry(s.labels).or_default().push((t, s.v));
                    }
                }
                other => {
                    return fail(format!("a range query needs a scalar or an instant vector, not a {}", other.kind()));
                }
            }
            t += step;
        }
        let mut out: Vec<Series> = by_labels.into_iter().map(|(labels, points)| Series { labels, points }).collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }

    fn eval(&self, expr: &Expr, t: i64) -> Result<Value, QueryError> {
        match expr {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::Unary(u) => match self.eval(&u.expr, t)? {
                Value::Scalar(v) => Ok(Value::Scalar(-v)),
                Value::Vector(samples) => unique(
                    samples.into_iter().map(|s| Sample { labels: s.labels.without_name(), v: -s.v, ts: t }).collect(),
                ),
                other => fail(format!("unary minus needs a scalar or a vector, not a {}", other.kind())),
            },
            Expr::VectorSelector(vs) => self.instant_selector(vs, t).map(Value::Vector),
            Expr::MatrixSelector(ms) => {
                let at = self.selector_time(&ms.vs, t);
                self.range_selector(&ms.vs, at, ms.range.as_millis() as i64).map(Value::Matrix)
            }
            Expr::Subquery(sq) => {
                let base = match &sq.at {
                    Some(at) => self.at_time(at),
                    None => t,
                } - offset_ms(&sq.offset);
                let step = sq.step.map_or(60_000, |s| s.as_millis() as i64).max(1);
                let range = sq.range.as_millis() as i64;
                let mut from = (base - range).div_euclid(step) * step;
                if from <= base - range {
                    from += step;
                }
                let mut by_labels: HashMap<Labels, Vec<(i64, f64)>> = HashMap::new();
                let mut at = from;
                while at <= base {
                    match self.eval(&sq.expr, at)? {
                        Value::Vector(samples) => {
                            for s in samples {
                                by_labels.entry(s.labels).or_default().push((at, s.v));
                            }
                        }
                        Value::Scalar(v) => by_labels.entry(Labels::default()).or_default().push((at, v)),
                        other => return fail(format!("a subquery needs an instant vector, not a {}", other.kind())),
                    }
                    at += step;
                }
                let mut series: Vec<Series> =
                    by_labels.into_iter().map(|(labels, points)| Series { labels, points }).collect();
                series.sort_by(|a, b| a.labels.cmp(&b.labels));
                Ok(Value::Matrix(series))
            }
            Expr::Aggregate(agg) => self.aggregate(agg, t),
            Expr::Binary(bin) => self.binary(bin, t),
            Expr::Call(call) => functions::call(self, call, t),
            Expr::Extension(_) => fail("extension expressions are not PromQL"),
        }
    }

    /// When a range argument's window ends (its `@` and `offset` applied), ms.
    fn range_end(&self, expr: &Expr, t: i64) -> i64 {
        match expr {
            Expr::MatrixSelector(ms) => self.selector_time(&ms.vs, t),
            Expr::Subquery(sq) => {
                (match &sq.at {
                    Some(at) => self.at_time(at),
                    None => t,
                }) - offset_ms(&sq.offset)
            }
            Expr::Paren(p) => self.range_end(&p.expr, t),
            _ => t,
        }
    }

    fn at_time(&self, at: &AtModifier) -> i64 {
        match at {
            AtModifier::Start => self.start,
            AtModifier::End => self.end,
            AtModifier::At(time) => system_ms(*time),
        }
    }

    fn selector_time(&self, vs: &VectorSelector, t: i64) -> i64 {
        let base = match &vs.at {
            Some(at) => self.at_time(at),
            None => t,
        };
        base - offset_ms(&vs.offset)
    }

    fn select(&self, vs: &VectorSelector, mint: i64, maxt: i64) -> Result<Vec<crate::db::SeriesData>, QueryError> {
        let matchers = to_matches(vs.name.as_deref(), &vs.matchers);
        let mut out = Vec::new();
        // `{a="b" or c="d"}`: the union of each alternative's series.
        let alternatives: Vec<Vec<Match>> = if vs.matchers.or_matchers.is_empty() {
            vec![matchers]
        } else {
            vs.matchers
                .or_matchers
                .iter()
                .map(|group| to_matches(vs.name.as_deref(), &Matchers::new(group.clone())))
                .collect()
        };
        for matchers in alternatives {
            out.extend(self.db.select(&matchers, mint, maxt));
        }
        if out.len() > MAX_SERIES {
            return Err(QueryError::TooManySeries);
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out.dedup_by(|a, b| a.labels == b.labels);
        Ok(out)
    }

    fn instant_selector(&self, vs: &VectorSelector, t: i64) -> Result<Vec<Sample>, QueryError> {
        let at = self.selector_time(vs, t);
        let series = self.select(vs, at - LOOKBACK_MS + 1, at)?;
        Ok(series
            .into_iter()
            .filter_map(|s| {
                let (ts, v) = *s.samples.last()?;
                (!is_stale(v)).then_some(Sample { labels: s.labels, v, ts })
            })
            .collect())
    }

    fn range_selector(&self, vs: &VectorSelector, at: i64, range: i64) -> Result<Vec<Series>, QueryError> {
        let series = self.select(vs, at - range + 1, at)?;
        Ok(series
            .into_iter()
            .map(|s| Series {
                labels: s.labels,
                points: s.samples.into_iter().filter(|(_, v)| !is_stale(*v)).collect(),
            })
            .filter(|s| !s.points.is_empty())
            .collect())
    }

    fn vector(&self, expr: &Expr, t: i64) -> Result<Vec<Sample>, QueryError> {
        match self.eval(expr, t)? {
            Value::Vector(v) => Ok(v),
            other => fail(format!("expected an instant vector, got a {}", other.kind())),
        }
    }

    fn scalar(&self, expr: &Expr, t: i64) -> Result<f64, QueryError> {
        match self.eval(expr, t)? {
            Value::Scalar(v) => Ok(v),
            other => fail(format!("expected a scalar, got a {}", other.kind())),
        }
    }

    fn aggregate(&self, agg: &AggregateExpr, t: i64) -> Result<Value, QueryError> {
        let op = agg.op.to_string();
        let input = self.vector(&agg.expr, t)?;
        let key = |labels: &Labels| match &agg.modifier {
            Some(LabelModifier::Include(by)) => labels.retain(|n| by.labels.iter().any(|l| l == n)),
            Some(LabelModifier::Exclude(without)) => {
                labels.retain(|n| n != NAME && !without.labels.iter().any(|l| l == n))
            }
            None => Labels::default(),
        };
        let mut groups: Vec<(Labels, Vec<Sample>)> = Vec::new();
        let mut index: HashMap<Labels, usize> = HashMap::new();
        for sample in input {
            let k = key(&sample.labels);
            let i = *index.entry(k.clone()).or_insert_with(|| {
                groups.push((k, Vec::new()));
                groups.len() - 1
            });
            groups[i].1.push(sample);
        }
        let param = match &agg.param {
            Some(p) => Some(self.eval(p, t)?),
            None => None,
        };
        if matches!(op.as_str(), "topk" | "bottomk" | "limitk" | "limit_ratio")
            && matches!(param, Some(Value::Scalar(k)) if k.is_nan())
        {
            return fail(format!("parameter value is NaN for {op}"));
        }
        let number = || match &param {
            Some(Value::Scalar(v)) => Ok(*v),
            _ => fail(format!("{op} needs a number parameter")),
        };
        let mut out = Vec::new();
        for (labels, samples) in groups {
            let values: Vec<f64> = samples.iter().map(|s| s.v).collect();
            let one = |v: f64| Sample { labels: labels.clone(), v, ts: t };
            match op.as_str() {
                "sum" => out.push(one(kahan_sum(&values))),
                "avg" => out.push(one(mean(&values))),
                "count" => out.push(one(values.len() as f64)),
                "group" => out.push(one(1.0)),
                "min" => out.push(one(fold_ignoring_nan(&values, f64::min))),
                "max" => out.push(one(fold_ignoring_nan(&values, f64::max))),
                "stddev" => out.push(one(variance(&values).sqrt())),
                "stdvar" => out.push(one(variance(&values))),
                "quantile" => out.push(one(quantile(number()?, values))),
                "topk" | "bottomk" => {
                    let k = number()?;
                    if k.is_nan() {
                        return fail(format!("parameter value is NaN for {op}"));
                    }
                    if k < 1.0 {
                        continue;
                    }
                    let mut sorted = samples.clone();
                    let top = op == "topk";
                    sorted.sort_by(|a, b| {
                        let order = compare_with_nan_last(a.v, b.v, top);
                        order.then_with(|| a.labels.cmp(&b.labels))
                    });
                    out.extend(sorted.into_iter().take(k.min(1e9) as usize).map(|s| Sample { ts: t, ..s }));
                }
                "count_values" => {
                    let Some(Value::String(name)) = &param else {
                        return fail("count_values needs a label name");
                    };
                    let mut counts: Vec<(String, f64)> = Vec::new();
                    for v in &values {
                        let text = format_value(*v);
                        match counts.iter_mut().find(|(k, _)| *k == text) {
                            Some((_, n)) => *n += 1.0,
                            None => counts.push((text, 1.0)),
                        }
                    }
                    for (text, n) in counts {
                        out.push(Sample { labels: labels.with(name, &text), v: n, ts: t });
                    }
                }
                "limitk" => {
                    let k = number()?;
                    if k.is_nan() {
                        return fail("parameter value is NaN for limitk");
                    }
                    out.extend(samples.into_iter().take(k.max(0.0) as usize));
                }
                other => return fail(format!("aggregation `{other}` is not supported")),
            }
        }
        Ok(Value::Vector(out))
    }

    fn binary(&self, bin: &BinaryExpr, t: i64) -> Result<Value, QueryError> {
        let op = bin.op.to_string();
        let return_bool = bin.return_bool();
        let lhs = self.eval(&bin.lhs, t)?;
        let rhs = self.eval(&bin.rhs, t)?;
        let comparison = bin.op.is_comparison_operator();
        match (lhs, rhs) {
            (Value::Scalar(a), Value::Scalar(b)) => {
                let v = apply(&op, a, b)?;
                Ok(Value::Scalar(if comparison { v.map_or(0.0, |_| 1.0) } else { v.unwrap_or(f64::NAN) }))
            }
            (Value::Vector(samples), Value::Scalar(b)) => {
                Ok(Value::Vector(scalar_side(samples, &op, b, false, comparison, return_bool)?))
            }
            (Value::Scalar(a), Value::Vector(samples)) => {
                Ok(Value::Vector(scalar_side(samples, &op, a, true, comparison, return_bool)?))
            }
            (Value::Vector(l), Value::Vector(r)) => {
                self.vector_vector(bin, &op, l, r, comparison, return_bool).map(Value::Vector)
            }
            (a, b) => fail(format!("`{op}` is not defined between a {} and a {}", a.kind(), b.kind())),
        }
    }

    fn vector_vector(
        &self,
        bin: &BinaryExpr,
        op: &str,
        lhs: Vec<Sample>,
        rhs: Vec<Sample>,
        comparison: bool,
        return_bool: bool,
    ) -> Result<Vec<Sample>, QueryError> {
        let modifier = bin.modifier.as_ref();
        let matching = modifier.and_then(|m| m.matching.as_ref());
        let signature = |labels: &Labels| match matching {
            Some(LabelModifier::Include(on)) => labels.retain(|n| on.labels.iter().any(|l| l == n)),
            Some(LabelModifier::Exclude(ignoring)) => {
                labels.retain(|n| n != NAME && !ignoring.labels.iter().any(|l| l == n))
            }
            None => labels.without_name(),
        };
        match op {
            "and" | "unless" => {
                let keys: std::collections::HashSet<Labels> = rhs.iter().map(|s| signature(&s.labels)).collect();
                let keep = op == "and";
                return Ok(lhs.into_iter().filter(|s| keys.contains(&signature(&s.labels)) == keep).collect());
            }
            "or" => {
                let keys: std::collections::HashSet<Labels> = lhs.iter().map(|s| signature(&s.labels)).collect();
                let mut out = lhs;
                out.extend(rhs.into_iter().filter(|s| !keys.contains(&signature(&s.labels))));
                return Ok(out);
            }
            _ => {}
        }
        let card = modifier.map_or(&VectorMatchCardinality::OneToOne, |m| &m.card);
        // The "one" side is indexed by signature; the other side ("many", or either for one-to-one) is walked.
        let (many, one, swapped, include) = match card {
            VectorMatchCardinality::OneToMany(include) => (rhs, lhs, true, Some(include)),
            VectorMatchCardinality::ManyToOne(include) => (lhs, rhs, false, Some(include)),
            _ => (lhs, rhs, false, None),
        };
        let mut index: HashMap<Labels, Sample> = HashMap::new();
        for s in one {
            let key = signature(&s.labels);
            if index.insert(key.clone(), s).is_some() {
                let side = if swapped { "left" } else { "right" };
                return fail(format!(
                    "found duplicate series for the match group {key} on the {side} hand-side of the operation: many-to-many matching not allowed: matching labels must be unique on one side"
                ));
            }
        }
        let mut out = Vec::new();
        let mut seen: HashMap<Labels, ()> = HashMap::new();
        let mut matched: std::collections::HashSet<Labels> = std::collections::HashSet::new();
        for s in many {
            let key = signature(&s.labels);
            let Some(other) = index.get(&key) else { continue };
            // One-to-one: a second series of this side with the same signature is an error,
            // whatever the operation then gives.
            if include.is_none() && !matched.insert(key.clone()) {
                return fail(
                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                );
            }
            let (a, b) = if swapped { (other.v, s.v) } else { (s.v, other.v) };
            let result = apply(op, a, b)?;
            let value = match (comparison, return_bool, result) {
                (true, true, r) => r.map_or(0.0, |_| 1.0),
                (true, false, None) => continue,
                (true, false, Some(_)) => {
                    if swapped {
                        other.v
                    } else {
                        s.v
                    }
                }
                (false, _, r) => r.unwrap_or(f64::NAN),
            };
            let mut labels = s.labels.clone();
            if include.is_none() {
                // One-to-one: `on(...)` keeps only those labels, `ignoring(...)` drops them.
                labels = match matching {
                    Some(LabelModifier::Include(on)) => labels.retain(|n| on.labels.iter().any(|l| l == n)),
                    Some(LabelModifier::Exclude(ignoring)) => {
                        labels.retain(|n| !ignoring.labels.iter().any(|l| l == n))
                    }
                    None => labels,
                };
            }
            if !comparison || return_bool {
                labels = labels.without_name();
            }
            if let Some(include) = include {
                for name in &include.labels {
                    labels = labels.with(name, other.labels.get(name));
                }
            }
            if include.is_none() && seen.insert(labels.clone(), ()).is_some() {
                return fail(
                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                );
            }
            if include.is_some() && seen.insert(labels.clone(), ()).is_some() {
                return fail("multiple matches for labels: grouping labels must ensure unique matches");
            }
            out.push(Sample { labels, v: value, ts: t_of(&s) });
        }
        Ok(out)
    }
}

/// After names are dropped, two samples with one label set are an error, as in Prometheus.
pub(crate) fn unique(samples: Vec<Sample>) -> Result<Value, QueryError> {
    let mut seen = std::collections::HashSet::new();
    for s in &samples {
        if !seen.insert(&s.labels) {
            return fail("vector cannot contain metrics with the same labelset");
        }
    }
    Ok(Value::Vector(samples))
}

fn t_of(s: &Sample) -> i64 {
    s.ts
}

fn scalar_side(
    samples: Vec<Sample>,
    op: &str,
    scalar: f64,
    scalar_left: bool,
    comparison: bool,
    return_bool: bool,
) -> Result<Vec<Sample>, QueryError> {
    let mut out = Vec::with_capacity(samples.len());
    for s in samples {
        let (a, b) = if scalar_left { (scalar, s.v) } else { (s.v, scalar) };
        let result = apply(op, a, b)?;
        match (comparison, return_bool, result) {
            (true, true, r) => {
                out.push(Sample { labels: s.labels.without_name(), v: r.map_or(0.0, |_| 1.0), ts: s.ts })
            }
            (true, false, Some(_)) => out.push(s),
            (true, false, None) => {}
            (false, _, r) => out.push(Sample { labels: s.labels.without_name(), v: r.unwrap_or(f64::NAN), ts: s.ts }),
        }
    }
    Ok(out)
}

/// `a op b`: arithmetic gives `Some(value)`; a comparison gives `Some(a)` when it holds.
fn apply(op: &str, a: f64, b: f64) -> Result<Option<f64>, QueryError> {
    let holds = |c: bool| if c { Some(a) } else { None };
    Ok(match op {
        "+" => Some(a + b),
        "-" => Some(a - b),
        "*" => Some(a * b),
        "/" => Some(a / b),
        "%" => Some(a % b),
        "^" => Some(a.powf(b)),
        "atan2" => Some(a.atan2(b)),
        "==" => holds(a == b),
        "!=" => holds(a != b),
        ">" => holds(a > b),
        "<" => holds(a < b),
        ">=" => holds(a >= b),
        "<=" => holds(a <= b),
        other => return fail(format!("operator `{other}` is not supported here")),
    })
}

/// The store's matchers for a parsed selector (its name included).
pub fn matchers_of(vs: &VectorSelector) -> Vec<Match> {
    to_matches(vs.name.as_deref(), &vs.matchers)
}

fn to_matches(name: Option<&str>, matchers: &Matchers) -> Vec<Match> {
    let mut out: Vec<Match> = name.map(|n| Match::Equal(NAME.to_string(), n.to_string())).into_iter().collect();
    for m in &matchers.matchers {
        out.push(match &m.op {
            MatchOp::Equal => Match::Equal(m.name.clone(), m.value.clone()),
            MatchOp::NotEqual => Match::NotEqual(m.name.clone(), m.value.clone()),
            MatchOp::Re(r) => Match::Regex(m.name.clone(), r.clone()),
            MatchOp::NotRe(r) => Match::NotRegex(m.name.clone(), r.clone()),
        });
    }
    out
}

fn offset_ms(offset: &Option<Offset>) -> i64 {
    match offset {
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
        None => 0,
    }
}

fn system_ms(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// A duration in ms (for callers building times).
pub fn millis(d: Duration) -> i64 {
    d.as_millis() as i64
}

/// One step of Kahan–Neumaier summation: `sum + inc` and the new compensation.
fn kahan_step(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        // Past overflow (or an infinite value) there is nothing left to compensate.
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

pub(crate) fn kahan_sum(values: &[f64]) -> f64 {
    let (sum, c) = values.iter().fold((0.0f64, 0.0f64), |(sum, c), &v| kahan_step(v, sum, c));
    if c.is_finite() { sum + c } else { sum }
}

/// The mean as Prometheus computes it: a compensated sum while it stays finite; from the value
/// that would overflow it, an incremental mean (each side divided by the count, so that
/// `-big, -big, big, big` averages to 0, not NaN), where infinities of one sign stay and of both
/// signs give NaN.
pub(crate) fn mean(values: &[f64]) -> f64 {
    let Some((&first, rest)) = values.split_first() else { return f64::NAN };
    let (mut sum, mut c) = (first, 0.0);
    let mut incremental: Option<(f64, f64)> = None;
    for (i, &v) in rest.iter().enumerate() {
        let n = (i + 2) as f64;
        let (mean, compensation) = match &mut incremental {
            Some(state) => state,
            None => {
                let (next, next_c) = kahan_step(v, sum, c);
                if !next.is_infinite() {
                    (sum, c) = (next, next_c);
                    continue;
                }
                incremental.insert((sum / (n - 1.0), c / (n - 1.0)))
            }
        };
        if mean.is_infinite() && (v.is_finite() || (v.is_infinite() && (*mean > 0.0) == (v > 0.0))) {
            // An infinite mean stays what it is, unless the other infinity comes (or a NaN).
            continue;
        }
        let current = *mean + *compensation;
        (*mean, *compensation) = kahan_step(v / n - current / n, *mean, *compensation);
    }
    let n = values.len() as f64;
    match incremental {
        Some((mean, compensation)) => mean + compensation,
        None => sum / n + c / n,
    }
}

pub(crate) fn variance(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    let (mut mean, mut m2) = (0.0, 0.0);
    for (i, v) in values.iter().enumerate() {
        let delta = v - mean;
        mean += delta / (i + 1) as f64;
        m2 += delta * (v - mean);
    }
    m2 / n
}

pub(crate) fn fold_ignoring_nan(values: &[f64], pick: fn(f64, f64) -> f64) -> f64 {
    values.iter().copied().filter(|v| !v.is_nan()).reduce(pick).unwrap_or(f64::NAN)
}

/// The φ-quantile by linear interpolation between the closest ranks, as Prometheus computes it.
pub(crate) fn quantile(phi: f64, mut values: Vec<f64>) -> f64 {
    if values.is_empty() || phi.is_nan() {
        return f64::NAN;
    }
    if phi < 0.0 {
        return f64::NEG_INFINITY;
    }
    if phi > 1.0 {
        return f64::INFINITY;
    }
    // NaN sorts first, as Go's sort.Float64s puts it (Prometheus's quantiles depend on it).
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.total_cmp(b),
    });
    let n = values.len() as f64;
    let rank = phi * (n - 1.0);
    let lower = rank.floor().max(0.0) as usize;
    let upper = (lower + 1).min(values.len() - 1);
    let weight = rank - rank.floor();
    values[lower] * (1.0 - weight) + values[upper] * weight
}

fn compare_with_nan_last(a: f64, b: f64, descending: bool) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ if descending => b.total_cmp(&a),
        _ => a.total_cmp(&b),
    }
}

/// A value as Prometheus writes it in label values and JSON: shortest form, `+Inf`, `NaN`.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}
