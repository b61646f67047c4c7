//! Predictive analysis, each model stated:
//!
//! - **Linear forecast** (`forecast`): a least-squares line through the window's samples; when
//!   the line moves toward the limit, the time until it reaches it ("disk full in 3 h"). The
//!   model assumes the recent trend continues; it is a warning, not a page.
//! - **Seasonal anomaly score** (`seasonal_score`): the value now against the same moment of
//!   earlier seasons (a week, or a day), each taken as the median of its neighbourhood; the
//!   robust z-score (x − median) ÷ (1.4826 · MAD) of the value against those baselines. A score
//!   beyond ±3.5 (Iglewicz and Hoaglin's cut-off) is an anomaly. Medians and MAD make one odd
//!   season unable to hide or fake an anomaly.

/// Where a trend is heading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Forecast {
    /// Change per second of the fitted line.
    pub slope: f64,
    /// The fitted value at the last sample's time.
    pub now: f64,
    /// Seconds from the last sample until the line reaches the limit; `None` when it moves away
    /// from it (or is flat).
    pub seconds_to_limit: Option<f64>,
}

/// Fits `points` (ms, value) and says when the line reaches `limit`; `None` with fewer than
/// three points or all at one time.
pub fn forecast(points: &[(i64, f64)], limit: f64) -> Option<Forecast> {
    if points.len() < 3 {
        return None;
    }
    let origin = points[points.len() - 1].0;
    let n = points.len() as f64;
    let xs: Vec<f64> = points.iter().map(|(t, _)| (t - origin) as f64 / 1000.0).collect();
    let mean_x = xs.iter().sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (x, (_, y)) in xs.iter().zip(points) {
        sxy += (x - mean_x) * (y - mean_y);
        sxx += (x - mean_x) * (x - mean_x);
    }
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let now = mean_y - slope * mean_x;
    let gap = limit - now;
    let seconds_to_limit = if gap == 0.0 {
        Some(0.0)
    } else if slope != 0.0 && gap.signum() == slope.signum() {
        Some(gap / slope)
    } else {
        None
    };
    Some(Forecast { slope, now, seconds_to_limit })
}

/// The Iglewicz–Hoaglin cut-off for a robust z-score.
pub const ANOMALY_SCORE: f64 = 3.5;

/// How unusual `value` at `t` is against the same moment of up to `seasons` earlier periods.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    pub score: f64,
    /// The seasonal baseline (median of the earlier seasons).
    pub expected: f64,
    pub seasons: usize,
}

impl Score {
    pub fn is_anomaly(&self) -> bool {
        self.score.abs() > ANOMALY_SCORE
    }
}

/// Scores `value` at `t` (ms) against `history` (ms, value; sorted by time): for each earlier
/// season k (t − k·period), the median of the samples within ± `neighbourhood` ms is one
/// baseline point. `None` with fewer than three seasons of history.
pub fn seasonal_score(
    history: &[(i64, f64)],
    t: i64,
    value: f64,
    period: i64,
    seasons: usize,
    neighbourhood: i64,
) -> Option<Score> {
    let mut baselines = Vec::new();
    for k in 1..=seasons as i64 {
        let centre = t - k * period;
        let from = history.partition_point(|(ts, _)| *ts < centre - neighbourhood);
        let to = history.partition_point(|(ts, _)| *ts <= centre + neighbourhood);
        let mut around: Vec<f64> = history[from..to].iter().map(|p| p.1).filter(|v| v.is_finite()).collect();
        if !around.is_empty() {
            baselines.push(median(&mut around));
        }
    }
    // With few seasons, also use the neighbourhood of each season (more points, same moment).
    let mut points: Vec<f64> = Vec::new();
    for k in 1..=seasons as i64 {
        let centre = t - k * period;
        let from = history.partition_point(|(ts, _)| *ts < centre - neighbourhood);
        let to = history.partition_point(|(ts, _)| *ts <= centre + neighbourhood);
        points.extend(history[from..to].iter().map(|p| p.1).filter(|v| v.is_finite()));
    }
    if baselines.len() < 3 {
        return None;
    }
    let expected = median(&mut baselines.clone());
    let mut deviations: Vec<f64> = points.iter().map(|v| (v - expected).abs()).collect();
    let mad = median(&mut deviations);
    // A flat baseline has no spread: a floor of 1% of its level keeps the score finite.
    let spread = (1.4826 * mad).max(expected.abs() * 0.01).max(f64::MIN_POSITIVE);
    Some(Score { score: (value - expected) / spread, expected, seasons: baselines.len() })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_filling_at_a_steady_rate_is_full_when_the_line_says() {
        // 100 GB free, losing 1 GB an hour, sampled every minute for 6 hours.
        let points: Vec<(i64, f64)> = (0..=360).map(|m| (m * 60_000, 100e9 - m as f64 / 60.0 * 1e9)).collect();
        let f = forecast(&points, 0.0).unwrap();
        assert!((f.seconds_to_limit.unwrap() / 3600.0 - 94.0).abs() < 0.01, "{f:?}");
        // Free space growing never reaches zero.
        let growing: Vec<(i64, f64)> = points.iter().map(|(t, v)| (*t, 200e9 - v)).collect();
        assert_eq!(forecast(&growing, 0.0).unwrap().seconds_to_limit, None);
    }
}
