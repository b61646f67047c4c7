//! PromQL's functions: rates with Prometheus's extrapolation, `*_over_time`, regression
//! (`deriv`, `predict_linear`), `histogram_quantile` over classic buckets, label rewriting, math,
//! time and date functions.

use promql_parser::parser::{Call, Expr};

use super::{
    Engine, QueryError, Sample, Series, Value, fail, fold_ignoring_nan, kahan_sum, mean, quantile, unique, variance,
};
use crate::labels::{Labels, NAME};

/// A function of one series' points in a window, with the window's length and end (ms).
type Window<'f> = &'f dyn Fn(&[(i64, f64)], i64, i64) -> Option<f64>;

pub(super) fn call(engine: &Engine<'_>, call: &Call, t: i64) -> Result<Value, QueryError> {
    let name = call.func.name;
    let args = &call.args.args;
    let arg = |i: usize| -> Result<&Expr, QueryError> {
        args.get(i).map(|b| b.as_ref()).ok_or_else(|| QueryError::Eval(format!("{name} needs argument {}", i + 1)))
    };
    // A range argument: its series, its window's length, and when its window ends.
    let matrix = |i: usize| -> Result<(Vec<Series>, i64, i64), QueryError> {
        let expr = arg(i)?;
        let range = range_of(expr);
        match engine.eval(expr, t)? {
            Value::Matrix(m) => Ok((m, range, engine.range_end(expr, t))),
            other => fail(format!("{name} needs a range vector, got a {}", other.kind())),
        }
    };
    let scalar_arg = |i: usize| engine.scalar(arg(i)?, t);
    let string_arg = |i: usize| match engine.eval(arg(i)?, t)? {
        Value::String(s) => Ok(s),
        other => fail(format!("{name} needs a string for argument {}, got a {}", i + 1, other.kind())),
    };
    let per_series = |f: Window<'_>, keep_name: bool| -> Result<Value, QueryError> {
        let (series, range, end) = matrix(0)?;
        let samples = series
            .into_iter()
            .filter_map(|s| {
                let v = f(&s.points, range, end)?;
                let labels = if keep_name { s.labels } else { s.labels.without_name() };
                Some(Sample { labels, v, ts: t })
            })
            .collect();
        unique(samples)
    };
    let math = |f: &dyn Fn(f64) -> f64| -> Result<Value, QueryError> {
        let input = engine.vector(arg(0)?, t)?;
        unique(input.into_iter().map(|s| Sample { labels: s.labels.without_name(), v: f(s.v), ts: t }).collect())
    };
    let values = |points: &[(i64, f64)]| points.iter().map(|p| p.1).collect::<Vec<f64>>();
    match name {
        "rate" => per_series(&|p, r, end| extrapolated(p, end, r, true, true), false),
        "increase" => per_series(&|p, r, end| extrapolated(p, end, r, true, false), false),
        "delta" => per_series(&|p, r, end| extrapolated(p, end, r, false, false), false),
        "irate" => per_series(&|p, _, _| instant_delta(p, true), false),
        "idelta" => per_series(&|p, _, _| instant_delta(p, false), false),
        "avg_over_time" => per_series(&|p, _, _| Some(mean(&values(p))), false),
        "sum_over_time" => per_series(&|p, _, _| Some(kahan_sum(&values(p))), false),
        "count_over_time" => per_series(&|p, _, _| Some(p.len() as f64), false),
        "min_over_time" => per_series(&|p, _, _| Some(fold_ignoring_nan(&values(p), f64::min)), false),
        "max_over_time" => per_series(&|p, _, _| Some(fold_ignoring_nan(&values(p), f64::max)), false),
        "last_over_time" => per_series(&|p, _, _| p.last().map(|x| x.1), true),
        "first_over_time" => per_series(&|p, _, _| p.first().map(|x| x.1), true),
        "present_over_time" => per_series(&|_, _, _| Some(1.0), false),
        "stddev_over_time" => per_series(&|p, _, _| Some(variance(&values(p)).sqrt()), false),
        "stdvar_over_time" => per_series(&|p, _, _| Some(variance(&values(p))), false),
        "quantile_over_time" => {
            let phi = scalar_arg(0)?;
            let expr = arg(1)?;
            let range = range_of(expr);
            let _ = range;
            match engine.eval(expr, t)? {
                Value::Matrix(m) => Ok(Value::Vector(
                    m.into_iter()
                        .map(|s| Sample { labels: s.labels.without_name(), v: quantile(phi, values(&s.points)), ts: t })
                        .collect(),
                )),
                other => fail(format!("quantile_over_time needs a range vector, got a {}", other.kind())),
            }
        }
        "changes" => per_series(
            &|p, _, _| {
                Some(p.windows(2).filter(|w| w[0].1 != w[1].1 && !(w[0].1.is_nan() && w[1].1.is_nan())).count() as f64)
            },
            false,
        ),
        "resets" => per_series(&|p, _, _| Some(p.windows(2).filter(|w| w[1].1 < w[0].1).count() as f64), false),
        "deriv" => per_series(&|p, _, _| regression(p, p.first()?.0).map(|(slope, _)| slope), false),
        "predict_linear" => {
            let ahead = scalar_arg(1)?;
            per_series(&|p, _, _| regression(p, t).map(|(slope, intercept)| intercept + slope * ahead), false)
        }
        "absent_over_time" => {
            let (series, _, _) = matrix(0)?;
            Ok(Value::Vector(if series.is_empty() { vec![absent_sample(arg(0)?, t)] } else { Vec::new() }))
        }
        "absent" => {
            let input = engine.vector(arg(0)?, t)?;
            Ok(Value::Vector(if input.is_empty() { vec![absent_sample(arg(0)?, t)] } else { Vec::new() }))
        }
        "time" => Ok(Value::Scalar(t as f64 / 1000.0)),
        "step" => Ok(Value::Scalar(engine.step as f64 / 1000.0)),
        "min_of" | "max_of" => {
            let (a, b) = (scalar_arg(0)?, scalar_arg(1)?);
            // Go's math.Min and math.Max: NaN wins.
            Ok(Value::Scalar(if a.is_nan() || b.is_nan() {
                f64::NAN
            } else if name == "min_of" {
                a.min(b)
            } else {
                a.max(b)
            }))
        }
        "double_exponential_smoothing" | "holt_winters" => {
            let (sf, tf) = (scalar_arg(1)?, scalar_arg(2)?);
            if !(sf > 0.0 && sf < 1.0) {
                return fail(format!("invalid smoothing factor. Expected: 0 < sf < 1, got: {sf}"));
            }
            if !(tf > 0.0 && tf < 1.0) {
                return fail(format!("invalid trend factor. Expected: 0 < tf < 1, got: {tf}"));
            }
            per_series(&|p, _, _| smooth(p, sf, tf), false)
        }
        "start" => Ok(Value::Scalar(engine.start as f64 / 1000.0)),
        "end" => Ok(Value::Scalar(engine.end as f64 / 1000.0)),
        "range" => Ok(Value::Scalar((engine.end - engine.start) as f64 / 1000.0)),
        "mad_over_time" => per_series(
            &|p, _, _| {
                let values = values(p);
                // A NaN sample makes the deviation NaN rather than being dropped.
                if values.iter().any(|v| v.is_nan()) {
                    return Some(f64::NAN);
                }
                let median = quantile(0.5, values.clone());
                Some(quantile(0.5, values.iter().map(|v| (v - median).abs()).collect()))
            },
            false,
        ),
        "ts_of_first_over_time" => per_series(&|p, _, _| p.first().map(|x| x.0 as f64 / 1000.0), false),
        "ts_of_last_over_time" => per_series(&|p, _, _| p.last().map(|x| x.0 as f64 / 1000.0), false),
        "ts_of_min_over_time" | "ts_of_max_over_time" => {
            let max = name == "ts_of_max_over_time";
            per_series(
                &|p, _, _| {
                    let mut best: Option<(i64, f64)> = None;
                    for &(ts, v) in p.iter().filter(|x| !x.1.is_nan()) {
                        // The latest of equal extremes, as Prometheus reports it.
                        if best.is_none_or(|(_, b)| if max { v >= b } else { v <= b }) {
                            best = Some((ts, v));
                        }
                    }
                    best.map(|(ts, _)| ts as f64 / 1000.0)
                },
                false,
            )
        }
        "sort_by_label" | "sort_by_label_desc" => {
            let mut input = engine.vector(arg(0)?, t)?;
            let names: Vec<String> = (1..args.len()).map(string_arg).collect::<Result<_, _>>()?;
            let descending = name == "sort_by_label_desc";
            input.sort_by(|a, b| {
                let mut order = std::cmp::Ordering::Equal;
                for n in &names {
                    order = order.then_with(|| natural(a.labels.get(n), b.labels.get(n)));
                }
                let order = order.then_with(|| a.labels.cmp(&b.labels));
                if descending { order.reverse() } else { order }
            });
            Ok(Value::Vector(input))
        }
        "pi" => Ok(Value::Scalar(std::f64::consts::PI)),
        "vector" => Ok(Value::Vector(vec![Sample { labels: Labels::default(), v: scalar_arg(0)?, ts: t }])),
        "scalar" => {
            let input = engine.vector(arg(0)?, t)?;
            Ok(Value::Scalar(if input.len() == 1 { input[0].v } else { f64::NAN }))
        }
        "timestamp" => {
            let input = engine.vector(arg(0)?, t)?;
            Ok(Value::Vector(
                input
                    .into_iter()
                    .map(|s| Sample { labels: s.labels.without_name(), v: s.ts as f64 / 1000.0, ts: t })
                    .collect(),
            ))
        }
        "abs" => math(&f64::abs),
        "ceil" => math(&f64::ceil),
        "floor" => math(&f64::floor),
        "exp" => math(&f64::exp),
        "ln" => math(&f64::ln),
        "log2" => math(&f64::log2),
        "log10" => math(&f64::log10),
        "sqrt" => math(&f64::sqrt),
        "sgn" => math(&|v: f64| {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                v
            }
        }),
        "deg" => math(&f64::to_degrees),
        "rad" => math(&f64::to_radians),
        "sin" => math(&f64::sin),
        "cos" => math(&f64::cos),
        "tan" => math(&f64::tan),
        "asin" => math(&f64::asin),
        "acos" => math(&f64::acos),
        "atan" => math(&f64::atan),
        "sinh" => math(&f64::sinh),
        "cosh" => math(&f64::cosh),
        "tanh" => math(&f64::tanh),
        "asinh" => math(&f64::asinh),
        "acosh" => math(&f64::acosh),
        "atanh" => math(&f64::atanh),
        "round" => {
            let to = if args.len() > 1 { scalar_arg(1)? } else { 1.0 };
            let inverse = 1.0 / to;
            math(&|v: f64| (v * inverse + 0.5).floor() / inverse)
        }
        "clamp" => {
            let (lo, hi) = (scalar_arg(1)?, scalar_arg(2)?);
            if lo > hi {
                return Ok(Value::Vector(Vec::new()));
            }
            math(&|v: f64| v.max(lo).min(hi))
        }
        "clamp_min" => {
            let lo = scalar_arg(1)?;
            math(&|v: f64| v.max(lo))
        }
        "clamp_max" => {
            let hi = scalar_arg(1)?;
            math(&|v: f64| v.min(hi))
        }
        "sort" | "sort_desc" => {
            let mut input = engine.vector(arg(0)?, t)?;
            let descending = name == "sort_desc";
            input.sort_by(|a, b| super::compare_with_nan_last(a.v, b.v, descending));
            Ok(Value::Vector(input))
        }
        "label_replace" => {
            let input = engine.vector(arg(0)?, t)?;
            let (dst, replacement, src, pattern) = (string_arg(1)?, string_arg(2)?, string_arg(3)?, string_arg(4)?);
            let valid = dst.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && dst.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return fail(format!("invalid destination label name in label_replace(): {dst}"));
            }
            let regex = regex::Regex::new(&format!("^(?s:{pattern})$"))
                .map_err(|e| QueryError::Eval(format!("invalid regular expression in label_replace(): {e}")))?;
            let mut out = Vec::with_capacity(input.len());
            for s in input {
                let labels = match regex.captures(s.labels.get(&src)) {
                    Some(captures) => {
                        let mut value = String::new();
                        captures.expand(&replacement, &mut value);
                        s.labels.with(&dst, &value)
                    }
                    None => s.labels.clone(),
                };
                out.push(Sample { labels, ..s });
            }
            unique(out)
        }
        "label_join" => {
            let input = engine.vector(arg(0)?, t)?;
            let (dst, separator) = (string_arg(1)?, string_arg(2)?);
            let sources: Vec<String> = (3..args.len()).map(string_arg).collect::<Result<_, _>>()?;
            let out = input
                .into_iter()
                .map(|s| {
                    let joined = sources.iter().map(|n| s.labels.get(n)).collect::<Vec<_>>().join(&separator);
                    Sample { labels: s.labels.with(&dst, &joined), ..s }
                })
                .collect();
            unique(out)
        }
        "histogram_quantile" => {
            let phi = scalar_arg(0)?;
            let input = engine.vector(arg(1)?, t)?;
            let mut groups: Vec<(Labels, Vec<(f64, f64)>)> = Vec::new();
            for s in input {
                let Ok(upper) = parse_le(s.labels.get("le")) else { continue };
                let key = s.labels.retain(|n| n != "le" && n != NAME);
                match groups.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, buckets)) => buckets.push((upper, s.v)),
                    None => groups.push((key, vec![(upper, s.v)])),
                }
            }
            Ok(Value::Vector(
                groups
                    .into_iter()
                    .map(|(labels, buckets)| Sample { labels, v: bucket_quantile(phi, buckets), ts: t })
                    .collect(),
            ))
        }
        "minute" | "hour" | "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "month" | "year" => {
            let input = if args.is_empty() {
                vec![Sample { labels: Labels::default(), v: t as f64 / 1000.0, ts: t }]
            } else {
                engine.vector(arg(0)?, t)?
            };
            let mut out = Vec::with_capacity(input.len());
            for s in input {
                let Ok(stamp) = jiff::Timestamp::from_second(s.v.floor() as i64) else { continue };
                let date = stamp.to_zoned(jiff::tz::TimeZone::UTC);
                let v = match name {
                    "minute" => date.minute() as f64,
                    "hour" => date.hour() as f64,
                    "day_of_month" => date.day() as f64,
                    "day_of_week" => date.weekday().to_sunday_zero_offset() as f64,
                    "day_of_year" => date.day_of_year() as f64,
                    "days_in_month" => date.days_in_month() as f64,
                    "month" => date.month() as f64,
                    _ => date.year() as f64,
                };
                out.push(Sample { labels: s.labels.without_name(), v, ts: s.ts });
            }
            Ok(Value::Vector(out))
        }
        other => fail(format!("function `{other}` is not supported yet")),
    }
}

/// Holt's double exponential smoothing (Prometheus's `double_exponential_smoothing`): the
/// smoothed level at the window's last sample.
fn smooth(points: &[(i64, f64)], sf: f64, tf: f64) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (mut s0, mut s1) = (0.0, points[0].1);
    let mut b = points[1].1 - points[0].1;
    for (i, &(_, v)) in points.iter().enumerate().skip(1) {
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let x = sf * v;
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Some(s1)
}

/// Natural order: runs of digits compare as numbers ("a2" before "a10").
fn natural(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        match (a.chars().next(), b.chars().next()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, _) => return std::cmp::Ordering::Less,
            (_, None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.len() - a.trim_start_matches(|c: char| c.is_ascii_digit()).len();
                let db = b.len() - b.trim_start_matches(|c: char| c.is_ascii_digit()).len();
                let (na, nb) = (a[..da].trim_start_matches('0'), b[..db].trim_start_matches('0'));
                let order = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if order != std::cmp::Ordering::Equal {
                    return order;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) if x != y => return x.cmp(&y),
            (Some(x), _) => {
                a = &a[x.len_utf8()..];
                b = &b[x.len_utf8()..];
            }
        }
    }
}

fn parse_le(text: &str) -> Result<f64, ()> {
    match text {
        "+Inf" | "Inf" | "inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        other => other.parse().map_err(|_| ()),
    }
}

fn range_of(expr: &Expr) -> i64 {
    match expr {
        Expr::MatrixSelector(ms) => ms.range.as_millis() as i64,
        Expr::Subquery(sq) => sq.range.as_millis() as i64,
        Expr::Paren(p) => range_of(&p.expr),
        _ => 0,
    }
}

/// What `absent` returns: the equality matchers of the selector as labels.
fn absent_sample(expr: &Expr, t: i64) -> Sample {
    let selector = match expr {
        Expr::VectorSelector(vs) => Some(vs),
        Expr::MatrixSelector(ms) => Some(&ms.vs),
        _ => None,
    };
    let mut pairs = Vec::new();
    if let Some(vs) = selector {
        let mut counts = std::collections::HashMap::new();
        for m in &vs.matchers.matchers {
            *counts.entry(m.name.clone()).or_insert(0) += 1;
        }
        for m in &vs.matchers.matchers {
            if matches!(m.op, promql_parser::label::MatchOp::Equal) && m.name != NAME && counts[&m.name] == 1 {
                pairs.push((m.name.clone(), m.value.clone()));
            }
        }
    }
    Sample { labels: Labels::new(pairs), v: 1.0, ts: t }
}

/// `rate`, `increase` and `delta`: the change over the window, extrapolated to its edges unless
/// the series starts or ends well inside it (Prometheus's `extrapolatedRate`).
fn extrapolated(points: &[(i64, f64)], t: i64, range: i64, counter: bool, per_second: bool) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (first_t, first_v) = points[0];
    let (last_t, last_v) = points[points.len() - 1];
    let mut result = last_v - first_v;
    if counter {
        let mut previous = first_v;
        for &(_, v) in &points[1..] {
            if v < previous {
                result += previous;
            }
            previous = v;
        }
    }
    let range_start = t - range;
    let mut to_start = (first_t - range_start) as f64 / 1000.0;
    let mut to_end = (t - last_t) as f64 / 1000.0;
    let sampled = (last_t - first_t) as f64 / 1000.0;
    let average = sampled / (points.len() - 1) as f64;
    let threshold = average * 1.1;
    if to_start >= threshold {
        to_start = average / 2.0;
    }
    if counter {
        let mut to_zero = to_start;
        if result > 0.0 && first_v >= 0.0 {
            to_zero = sampled * (first_v / result);
        }
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = average / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if per_second {
        factor /= range as f64 / 1000.0;
    }
    Some(result * factor)
}

fn instant_delta(points: &[(i64, f64)], rate: bool) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (t0, v0) = points[points.len() - 2];
    let (t1, v1) = points[points.len() - 1];
    let mut change = v1 - v0;
    if rate && v1 < v0 {
        change = v1;
    }
    if !rate {
        return Some(change);
    }
    let seconds = (t1 - t0) as f64 / 1000.0;
    (seconds > 0.0).then_some(change / seconds)
}

/// Least squares over the points, x in seconds from `origin`: (slope, value at origin).
fn regression(points: &[(i64, f64)], origin: i64) -> Option<(f64, f64)> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let (mut sx, mut sy, mut sxy, mut sxx) = (0.0, 0.0, 0.0, 0.0);
    let constant_y = points.iter().all(|p| p.1 == points[0].1);
    for &(t, v) in points {
        let x = (t - origin) as f64 / 1000.0;
        sx += x;
        sy += v;
        sxy += x * v;
        sxx += x * x;
    }
    if constant_y && points[0].1.is_finite() {
        return Some((0.0, points[0].1));
    }
    let cov = sxy - sx * sy / n;
    let var = sxx - sx * sx / n;
    let slope = cov / var;
    Some((slope, sy / n - slope * sx / n))
}

/// The φ-quantile of classic histogram buckets (upper bound, cumulative count).
fn bucket_quantile(phi: f64, mut buckets: Vec<(f64, f64)>) -> f64 {
    if phi.is_nan() {
        return f64::NAN;
    }
    if phi < 0.0 {
        return f64::NEG_INFINITY;
    }
    if phi > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.len() < 2 || buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Counts must not fall from one bucket to the next (scrapes of a live histogram race).
    let mut max = f64::NEG_INFINITY;
    for bucket in &mut buckets {
        if bucket.1 < max {
            bucket.1 = max;
        }
        max = bucket.1;
    }
    let total = buckets[buckets.len() - 1].1;
    if total == 0.0 || total.is_nan() {
        return f64::NAN;
    }
    let mut rank = phi * total;
    let b = buckets.iter().position(|b| b.1 >= rank).unwrap_or(buckets.len() - 1);
    if b == buckets.len() - 1 {
        return buckets[buckets.len() - 2].0;
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let (mut start, end, mut count) = (0.0, buckets[b].0, buckets[b].1);
    if b > 0 {
        start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    start + (end - start) * (rank / count)
}
