//! `cargo xtask bench queue`: the merge queue's own code under a model of a team and its CI
//! (`review::simulate`): CI runs per merged change and the median time to merge, for one change
//! at a time, bors-style batching without speculation, and Tandem's queue, at failure rates of
//! 1%, 5%, 10% and 20%. Each figure is the median over seeds.

use anyhow::Result;
use review::queue::Config;
use review::simulate::{self, Report, Scenario};

pub fn run(args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let seeds: Vec<u64> = if quick { vec![1, 2, 3] } else { (1..=15).collect() };
    let (changes, per_hour, ci_minutes, flaky) = (400, 12.0, 10.0, 0.02);
    println!(
        "{changes} changes arriving {per_hour}/h on average, CI {ci_minutes} min, {:.0}% of runs fail spuriously (marked flaky); median over {} seeds\n",
        flaky * 100.0,
        seeds.len()
    );
    println!("| failure rate | strategy | CI runs per merged change | median minutes to merge | broken on main |");
    println!("|---|---|---|---|---|");
    let strategies = [
        ("one at a time", Config::ONE_AT_A_TIME),
        ("bors (batch ≤ 16, no speculation)", Config::BORS),
        ("Tandem (batch ≤ 8, 4 at once)", tandem(args)?),
    ];
    for failure_rate in [0.01, 0.05, 0.10, 0.20] {
        let mut results = Vec::new();
        for (name, config) in strategies {
            let reports: Vec<Report> = seeds
                .iter()
                .map(|&seed| {
                    let scenario = Scenario {
                        changes,
                        arrivals_per_hour: per_hour,
                        ci_minutes,
                        failure_rate,
                        flaky_rate: flaky,
                        seed,
                    };
                    simulate::run(config, &scenario)
                })
                .collect();
            let runs = median(reports.iter().map(|r| r.runs_per_merged).collect());
            let minutes = median(reports.iter().map(|r| r.median_minutes_to_merge).collect());
            let broken: usize = reports.iter().map(|r| r.broken_merged).sum();
            println!("| {:.0}% | {name} | {runs:.2} | {minutes:.0} | {broken} |", failure_rate * 100.0);
            results.push((runs, minutes));
        }
        let (one, bors, ours) = (results[0], results[1], results[2]);
        println!(
            "| | Tandem against them | **{:.2}×** one at a time's runs | **{:.2}×** bors's time | |",
            ours.0 / one.0,
            ours.1 / bors.1
        );
    }
    Ok(())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Tandem's configuration, or `--config MAX_BATCH,MAX_PARALLEL,MIN_SPECULATIVE` to try another.
fn tandem(args: &[String]) -> Result<Config> {
    let Some(at) = args.iter().position(|a| a == "--config") else { return Ok(Config::default()) };
    let text = args.get(at + 1).map(String::as_str).unwrap_or("");
    let parts: Vec<usize> = text.split(',').map(str::parse).collect::<Result<_, _>>()?;
    match parts.as_slice() {
        [max_batch, max_parallel, min_speculative] => Ok(Config {
            max_batch: *max_batch,
            max_parallel: *max_parallel,
            flaky_retries: 1,
            min_speculative: *min_speculative,
        }),
        _ => anyhow::bail!("--config takes MAX_BATCH,MAX_PARALLEL,MIN_SPECULATIVE, e.g. 8,4,5"),
    }
}
