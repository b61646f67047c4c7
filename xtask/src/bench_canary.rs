//! Canary analysis benchmark: seconds from a bad release starting to its rollback, and false
//! rollbacks over healthy canaries, by deterministic simulation at 50 requests/s with 10% on the
//! canary — against the arithmetic of Flagger's defaults.

use std::fmt::Write as _;

use anyhow::Result;
use rollout::analysis::Config;
use rollout::reconcile::{Kind, Plan, Strategy};
use rollout::simulate::{RolloutEnd, Scenario, rollout, run as simulate};

fn scenario(stable: f64, canary: f64) -> Scenario {
    Scenario {
        requests_per_second: 50.0,
        canary_weight: 0.1,
        stable_error_rate: stable,
        canary_error_rate: canary,
        stable_latency_ms: 20.0,
        canary_latency_ms: 20.0,
        duration: 600.0,
    }
}

pub fn run(_args: &[String]) -> Result<()> {
    let config = Config::default();
    let mut report = String::new();
    writeln!(
        report,
        "| scenario (50 req/s, 10% canary, α = {}) | canaries | rolled back | seconds to rollback: median / p90 / max |",
        config.alpha
    )?;
    writeln!(report, "|---|---|---|---|")?;
    for (label, stable, canary, n) in [
        ("bad: 10% vs 0.1% errors", 0.001, 0.10, 1000u64),
        ("bad: 2% vs 0.1% errors", 0.001, 0.02, 300),
        ("healthy: 1% vs 1% errors, 10 min each", 0.01, 0.01, 10_000),
        ("healthy: 0.1% vs 0.1% errors, 10 min each", 0.001, 0.001, 2000),
    ] {
        let mut seconds: Vec<f64> = Vec::new();
        for seed in 0..n {
            if let Some((s, _)) = simulate(&scenario(stable, canary), &config, seed).rolled_back_after {
                seconds.push(s);
            }
        }
        writeln!(report, "| {label} | {n} | {} |", summary(&mut seconds, n, 2))?;
    }
    writeln!(
        report,
        "\nFlagger's defaults (interval 60 s, threshold 1, checks every interval) need one to two full intervals plus the rollback: 3–4 minutes for the first scenario."
    )?;
    // Whole rollouts, step by step, as the controller runs them: α shared by the judged steps.
    writeln!(
        report,
        "\n| rollout (50 req/s, 0.1% errors on both) | rollouts | promoted | seconds to promote: median / p90 / max |"
    )?;
    writeln!(report, "|---|---|---|---|")?;
    for (label, steps, pause, min_requests) in [
        ("default: steps 10, 50, 100; pause 30 s; 200 requests a step", vec![0.1, 0.5], 30.0, 200u64),
        ("quick: steps 10, 50, 100; pause 5 s; 50 requests a step", vec![0.1, 0.5], 5.0, 50),
        ("one step: 50, 100; pause 10 s; 200 requests", vec![0.5], 10.0, 200),
    ] {
        // The reconciler shares α between the judged steps, as in the server.
        let mut weights = steps.clone();
        weights.push(1.0);
        let plan =
            Plan { kind: Kind::Deploy, strategy: Strategy::Canary { weights }, instances: 2, alpha: config.alpha };
        let config = Config { min_canary_requests: min_requests, min_seconds: pause, ..Config::default() };
        let n = 500u64;
        let mut seconds = Vec::new();
        for seed in 0..n {
            if let RolloutEnd::Promoted(s) = rollout(&scenario(0.001, 0.001), &plan, &config, seed) {
                seconds.push(s);
            }
        }
        writeln!(report, "| {label} | {n} | {} |", summary(&mut seconds, n, 1))?;
    }
    writeln!(
        report,
        "\nFlagger promotes after maxWeight/stepWeight intervals: with its documented example (interval 1 m, stepWeight 10, maxWeight 50) at least 5 minutes, whatever the traffic says."
    )?;
    println!("{report}");
    Ok(())
}

/// "count (share%) | median / p90 / max" of the outcomes that happened among `n` tries.
fn summary(seconds: &mut [f64], n: u64, share_digits: usize) -> String {
    seconds.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        seconds.get(((seconds.len() as f64 - 1.0) * q) as usize).map_or("—".to_string(), |s| format!("{s:.1}"))
    };
    format!(
        "{} ({:.share_digits$}%) | {} / {} / {}",
        seconds.len(),
        100.0 * seconds.len() as f64 / n as f64,
        pick(0.5),
        pick(0.9),
        pick(1.0)
    )
}
