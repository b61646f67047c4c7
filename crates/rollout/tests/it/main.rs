//! The canary analysis under simulated traffic: false rollbacks stay under α, bad releases are
//! caught in seconds, and the statistic moves the right way for every event.

use proptest::prelude::*;
use rollout::analysis::{Arm, Config, EventTest};
use rollout::simulate::{Scenario, run};

mod reconcile;

fn scenario(stable: f64, canary: f64, duration: f64) -> Scenario {
    Scenario {
        requests_per_second: 50.0,
        canary_weight: 0.1,
        stable_error_rate: stable,
        canary_error_rate: canary,
        stable_latency_ms: 20.0,
        canary_latency_ms: 20.0,
        duration,
    }
}

#[test]
fn healthy_canaries_are_rarely_rolled_back() {
    let config = Config::default();
    let n = 1000;
    let mut rolled_back = 0;
    for seed in 0..n {
        // 1% errors on both sides, 10 minutes each at 50 requests/s.
        if run(&scenario(0.01, 0.01, 600.0), &config, seed).rolled_back_after.is_some() {
            rolled_back += 1;
        }
    }
    let rate = rolled_back as f64 / n as f64;
    assert!(rate <= config.alpha, "{rolled_back} false rollbacks in {n} healthy canaries (α = {})", config.alpha);
}

#[test]
fn a_bad_release_is_rolled_back_within_seconds() {
    let config = Config::default();
    let mut seconds: Vec<f64> = (0..300)
        .map(|seed| {
            run(&scenario(0.001, 0.10, 600.0), &config, 10_000 + seed)
                .rolled_back_after
                .expect("every bad canary is caught")
                .0
        })
        .collect();
    seconds.sort_by(f64::total_cmp);
    let median = seconds[seconds.len() / 2];
    let p90 = seconds[seconds.len() * 9 / 10];
    assert!(median < 15.0, "median {median:.1} s to rollback");
    assert!(p90 < 30.0, "p90 {p90:.1} s to rollback");
}

#[test]
fn a_slower_release_is_caught_by_the_latency_test() {
    let config = Config::default();
    let mut slow = scenario(0.001, 0.001, 600.0);
    slow.canary_latency_ms = 80.0;
    let outcome = run(&slow, &config, 7);
    assert_eq!(outcome.metric, Some("latency-p99"), "{outcome:?}");
}

proptest! {
    #[test]
    fn evidence_moves_the_right_way(share in 0.01f64..0.99, events in prop::collection::vec(any::<bool>(), 0..50)) {
        let mut test = EventTest::new(&[1.5, 2.0, 5.0, 20.0]);
        for canary in events {
            let before = test.evidence();
            test.observe(if canary { Arm::Canary } else { Arm::Stable }, share);
            if canary {
                prop_assert!(test.evidence() >= before);
            } else {
                prop_assert!(test.evidence() <= before);
            }
        }
    }

    #[test]
    fn stable_only_events_commute(share in 0.01f64..0.99, n_stable in 0usize..30, n_canary in 0usize..30) {
        let mut a = EventTest::new(&[2.0, 10.0]);
        let mut b = EventTest::new(&[2.0, 10.0]);
        for _ in 0..n_stable { a.observe(Arm::Stable, share); }
        for _ in 0..n_canary { a.observe(Arm::Canary, share); b.observe(Arm::Canary, share); }
        for _ in 0..n_stable { b.observe(Arm::Stable, share); }
        prop_assert!((a.evidence().ln() - b.evidence().ln()).abs() < 1e-9);
    }
}

#[test]
fn a_stepped_rollout_promotes_healthy_releases_once_every_step_has_its_traffic() {
    use rollout::reconcile::{Kind, Plan, Strategy};
    use rollout::simulate::{RolloutEnd, rollout};
    // The reconciler shares α between the two judged steps, as in the server.
    let plan = Plan {
        kind: Kind::Deploy,
        strategy: Strategy::Canary { weights: vec![0.1, 0.5, 1.0] },
        instances: 2,
        alpha: 0.01,
    };
    let config = Config { min_canary_requests: 200, min_seconds: 30.0, ..Config::default() };
    let healthy = scenario(0.001, 0.001, 3600.0);
    let mut promoted = Vec::new();
    for seed in 0..200 {
        match rollout(&healthy, &plan, &config, seed) {
            RolloutEnd::Promoted(seconds) => promoted.push(seconds),
            RolloutEnd::RolledBack(_) => {}
            RolloutEnd::Undecided => panic!("seed {seed}: a healthy rollout never ended"),
        }
    }
    // 200 canary requests at 5 per second take about 40 s; the 50% step then waits its 30 s.
    promoted.sort_by(f64::total_cmp);
    let median = promoted[promoted.len() / 2];
    assert!((60.0..85.0).contains(&median), "median {median:.1} s");
    assert!(promoted.len() >= 198, "{} of 200 promoted: more false rollbacks than α = 1% allows", promoted.len());
    // A bad release never gets through the steps.
    let bad = scenario(0.001, 0.10, 3600.0);
    for seed in 0..100 {
        assert!(matches!(rollout(&bad, &plan, &config, seed), RolloutEnd::RolledBack(s) if s < 60.0));
    }
}
