//! A sequential test that pages within seconds when live traffic burns an SLO's error budget at
//! the page rate, without waiting for windows of scraped samples to fill.
//!
//! Model: requests fail independently with an unknown probability p. With b = 1 − objective (the
//! error ratio that spends the budget exactly over its window), the test weighs
//! H₀: p = p₀ = 6 b (the SRE Workbook's slow page rate: a burn the windowed alerts handle) against
//! H₁: p = p₁ = 14.4 b (its fast page rate), one second of counts at a time, with Page's CUSUM on
//! the log-likelihood ratio:
//!
//! S ← max(0, S + e·ln(p₁/p₀) + (n − e)·ln((1 − p₁)/(1 − p₀)))
//!
//! for a second with n requests of which e failed. The alert fires when S reaches
//! h = ln(1/α). Wald's bound makes the average run between false alarms at p₀ at least 1/α
//! requests; α = 10⁻¹⁰ by default (over three years at 100 requests a second).
//!
//! Once firing, a second CUSUM asks whether the failure has stopped: H₀': p = p₁ (still at the
//! page rate) against H₁': p = p̂, the error ratio of the seconds that made it fire (at least
//! 2 p₁). It resolves at h' = ln(1000): a false "resolved" costs less than a false page, and a
//! rollback should show as resolved within seconds, not after the thousands of requests a strict
//! objective would need to tell 1× from 14.4×.
//!
//! Two guards keep it from paging on what is not an outage:
//! - one second adds at most h ÷ 3, so at least three seconds of failing traffic are needed: a
//!   burst of errors within one second never pages;
//! - one failed request adds ln(p₁/p₀) = 0.88, so a quiet service needs dozens of failures close
//!   together — one failed request of three never pages.
//!
//! Burn rates between the two hypotheses drift the statistic neither way; above about 9.5× it
//! drifts towards the page, slowly. The windowed burn-rate alerts still judge sustained burns;
//! this test only makes the fast page fast. What it costs (simulated, 99.9% objective, 100
//! requests a second): 10% errors page in 3–4 s, 3% in about 12 s, exactly 14.4× in about a
//! minute; 8× and less did not page in a day. At 2 requests a second, 10% errors take about
//! two and a half minutes: few requests are little evidence.

/// The evidence needed, as a likelihood ratio (10¹⁰ : 1).
pub const DEFAULT_FALSE_ALARM: f64 = 1e-10;

/// The burn rate of H₀: the SRE Workbook's slow page, which the windowed alerts judge.
pub const QUIET_FACTOR: f64 = 6.0;

/// The evidence a firing alert needs to resolve (10³ : 1).
const RESOLVE_EVIDENCE: f64 = 1e3;

/// A change of state of the test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Fired,
    Resolved,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BurnTest {
    /// ln(p₁/p₀): what one failed request adds.
    per_error: f64,
    /// ln((1 − p₁)/(1 − p₀)) (negative): what one answered request adds.
    per_success: f64,
    threshold: f64,
    /// Evidence for H₁ (burning at the page rate).
    burning: f64,
    /// Requests and errors since `burning` last stood at zero: the change's own error ratio.
    since_change: (u64, u64),
    /// While firing: what one failed and one answered request add to `recovered`.
    resolve_steps: (f64, f64),
    /// While firing: evidence that the failure has stopped.
    recovered: f64,
    firing: bool,
    /// The error ratio the test pages at (p₁).
    page_ratio: f64,
}

impl BurnTest {
    /// A test for an SLO with `objective` (e.g. 0.999) that pages at `factor` times the budget's
    /// burn rate (above [`QUIET_FACTOR`]). `None` when the objective leaves no budget (1.0), is
    /// not a share, or is so loose that the page rate would be every request failing (below
    /// 93% at 14.4×): the windowed alerts are all such an SLO gets.
    pub fn new(objective: f64, factor: f64, false_alarm: f64) -> Option<BurnTest> {
        let allowed = 1.0 - objective;
        let (quiet, page_ratio) = (QUIET_FACTOR * allowed, factor * allowed);
        if !(allowed > 0.0 && page_ratio < 1.0 && factor > QUIET_FACTOR && false_alarm > 0.0 && false_alarm < 1.0) {
            return None;
        }
        Some(BurnTest {
            per_error: (page_ratio / quiet).ln(),
            per_success: ((1.0 - page_ratio) / (1.0 - quiet)).ln(),
            threshold: (1.0 / false_alarm).ln(),
            burning: 0.0,
            since_change: (0, 0),
            resolve_steps: (0.0, 0.0),
            recovered: 0.0,
            firing: false,
            page_ratio,
        })
    }

    /// Takes one second's counts; says when the alert fires or resolves.
    pub fn observe(&mut self, requests: u64, errors: u64) -> Option<Transition> {
        let errors = errors.min(requests);
        let successes = (requests - errors) as f64;
        if self.firing {
            let resolve_at = RESOLVE_EVIDENCE.ln();
            let (per_error, per_success) = self.resolve_steps;
            let cap = resolve_at / 3.0;
            let step = (errors as f64 * per_error + successes * per_success).clamp(-cap, cap);
            self.recovered = (self.recovered + step).max(0.0);
            if self.recovered >= resolve_at * (1.0 - 1e-12) {
                self.firing = false;
                self.recovered = 0.0;
                self.burning = 0.0;
                self.since_change = (0, 0);
                return Some(Transition::Resolved);
            }
            return None;
        }
        let cap = self.threshold / 3.0;
        let step = (errors as f64 * self.per_error + successes * self.per_success).clamp(-cap, cap);
        self.burning = (self.burning + step).max(0.0);
        if self.burning == 0.0 {
            self.since_change = (0, 0);
            return None;
        }
        self.since_change.0 += requests;
        self.since_change.1 += errors;
        if self.burning >= self.threshold * (1.0 - 1e-12) {
            // The failure's own ratio, at least twice the page rate so the two stay apart.
            let (n, e) = self.since_change;
            let observed = (e as f64 / n.max(1) as f64).clamp(2.0 * self.page_ratio, 0.99);
            let observed = observed.max(self.page_ratio * 1.01).min(0.999);
            self.resolve_steps = ((self.page_ratio / observed).ln(), ((1.0 - self.page_ratio) / (1.0 - observed)).ln());
            self.firing = true;
            self.recovered = 0.0;
            return Some(Transition::Fired);
        }
        None
    }

    pub fn is_firing(&self) -> bool {
        self.firing
    }

    /// The error ratio it pages at.
    pub fn page_ratio(&self) -> f64 {
        self.page_ratio
    }

    /// How far towards its next transition the test is, from 0 to 1.
    pub fn progress(&self) -> f64 {
        if self.firing {
            (self.recovered / RESOLVE_EVIDENCE.ln()).min(1.0)
        } else {
            (self.burning / self.threshold).min(1.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test() -> BurnTest {
        BurnTest::new(0.999, 14.4, DEFAULT_FALSE_ALARM).expect("a valid objective")
    }

    /// Seconds of `per_second` requests with errors spread exactly, until a transition.
    fn seconds_until(t: &mut BurnTest, per_second: u64, ratio: f64, limit: u64) -> Option<(u64, Transition)> {
        let mut owed = 0.0;
        for second in 1..=limit {
            owed += per_second as f64 * ratio;
            let errors = owed.floor() as u64;
            owed -= errors as f64;
            if let Some(transition) = t.observe(per_second, errors) {
                return Some((second, transition));
            }
        }
        None
    }

    #[test]
    fn ten_percent_errors_at_a_hundred_requests_a_second_pages_in_three_seconds() {
        let mut t = test();
        assert_eq!(seconds_until(&mut t, 100, 0.0, 600), None, "healthy traffic never pages");
        assert_eq!(seconds_until(&mut t, 100, 0.10, 60), Some((3, Transition::Fired)));
        assert!(t.is_firing());
    }

    #[test]
    fn low_traffic_needs_more_seconds_and_still_pages() {
        let mut t = test();
        // Two requests a second, 10% failing: one failure every five seconds.
        let (seconds, transition) = seconds_until(&mut t, 2, 0.10, 600).expect("it pages");
        assert_eq!(transition, Transition::Fired);
        assert!((60..=200).contains(&seconds), "{seconds} s");
    }

    #[test]
    fn one_burst_within_a_second_does_not_page() {
        let mut t = test();
        assert_eq!(t.observe(100, 100), None);
        assert_eq!(seconds_until(&mut t, 100, 0.0, 600), None);
        assert_eq!(t.progress(), 0.0, "healthy seconds wash the burst out");
    }

    #[test]
    fn one_failed_request_of_three_does_not_page() {
        let mut t = test();
        assert_eq!(t.observe(1, 1), None);
        assert_eq!(t.observe(1, 0), None);
        assert_eq!(t.observe(1, 0), None);
        assert!(!t.is_firing());
    }

    #[test]
    fn burning_the_budget_at_five_times_its_rate_does_not_page_in_a_day_of_traffic() {
        let mut t = test();
        // 0.5% errors at 100 requests a second for a day, errors placed at random.
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..86_400 {
            let mut errors = 0;
            for _ in 0..100 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                if rng % 1000 < 5 {
                    errors += 1;
                }
            }
            assert_eq!(t.observe(100, errors), None);
        }
    }

    #[test]
    fn it_resolves_once_traffic_is_healthy_again_and_can_fire_again() {
        let mut t = test();
        assert_eq!(seconds_until(&mut t, 100, 0.10, 60).map(|s| s.1), Some(Transition::Fired));
        assert_eq!(seconds_until(&mut t, 100, 0.10, 60), None, "it stays firing while failing");
        let (seconds, transition) = seconds_until(&mut t, 100, 0.0, 600).expect("it resolves");
        assert_eq!(transition, Transition::Resolved);
        // The failure's ratio (10%) against the page rate: three healthy seconds settle it.
        assert_eq!(seconds, 3);
        assert_eq!(seconds_until(&mut t, 100, 0.10, 60).map(|s| s.1), Some(Transition::Fired));
    }

    #[test]
    fn a_strict_objective_at_low_traffic_resolves_within_a_minute_of_the_fix() {
        // 99.99% pages above 0.144%; the failure was 5% of 5 requests a second.
        let mut t = BurnTest::new(0.9999, 14.4, DEFAULT_FALSE_ALARM).expect("valid");
        assert_eq!(seconds_until(&mut t, 5, 0.05, 120).map(|s| s.1), Some(Transition::Fired));
        let (seconds, transition) = seconds_until(&mut t, 5, 0.0, 600).expect("it resolves");
        assert_eq!(transition, Transition::Resolved);
        assert!(seconds <= 60, "{seconds} s");
    }

    #[test]
    fn a_failure_that_goes_on_does_not_resolve() {
        let mut t = test();
        assert_eq!(seconds_until(&mut t, 20, 0.10, 60).map(|s| s.1), Some(Transition::Fired));
        assert_eq!(seconds_until(&mut t, 20, 0.10, 3600), None);
    }

    #[test]
    fn objectives_without_a_budget_or_out_of_range_are_refused() {
        assert!(BurnTest::new(1.0, 14.4, DEFAULT_FALSE_ALARM).is_none());
        assert!(BurnTest::new(99.9, 14.4, DEFAULT_FALSE_ALARM).is_none());
        assert!(BurnTest::new(0.999, QUIET_FACTOR, DEFAULT_FALSE_ALARM).is_none());
        // 90%: 14.4× is beyond every request failing.
        assert!(BurnTest::new(0.9, 14.4, DEFAULT_FALSE_ALARM).is_none());
        assert!((test().page_ratio() - 0.0144).abs() < 1e-12);
    }
}
