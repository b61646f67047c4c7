//! The merge queue under a model of a team and its CI, driven through the real [`Queue`]:
//! changes arrive at random (a Poisson process), some are broken (every CI run that includes one
//! fails), every run may fail spuriously (marked flaky), and CI takes a fixed time. It measures
//! CI runs per merged change and the time from entering the queue to being merged.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use crate::queue::{Action, BatchId, ChangeId, Config, Event, Queue};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scenario {
    pub changes: usize,
    /// Changes entering the queue per hour, on average.
    pub arrivals_per_hour: f64,
    pub ci_minutes: f64,
    /// The share of changes that are broken.
    pub failure_rate: f64,
    /// The chance that a run fails for no fault of its changes (the failure is marked flaky).
    pub flaky_rate: f64,
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub merged: usize,
    pub ejected: usize,
    pub ci_runs: usize,
    pub runs_per_merged: f64,
    pub median_minutes_to_merge: f64,
    /// Broken changes that reached main (must be 0: main only moves to passing commits).
    pub broken_merged: usize,
    /// Good changes ejected (a flaky failure twice in a row).
    pub good_ejected: usize,
    /// When the last change was merged or ejected, in minutes.
    pub makespan_minutes: f64,
}

/// splitmix64: small, fast, and the same numbers for the same seed everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

enum Happening {
    Arrive(ChangeId),
    CiDone { batch: BatchId, generation: u64 },
}

pub fn run(config: Config, scenario: &Scenario) -> Report {
    let mut rng = Rng(scenario.seed);
    let mut queue = Queue::new(config);
    // (time in seconds, sequence) → what happens.
    let mut agenda: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
    let mut happenings: HashMap<u64, Happening> = HashMap::new();
    let mut sequence = 0u64;
    let mut schedule = |agenda: &mut BinaryHeap<Reverse<(u64, u64)>>,
                        happenings: &mut HashMap<u64, Happening>,
                        at: u64,
                        what: Happening| {
        sequence += 1;
        happenings.insert(sequence, what);
        agenda.push(Reverse((at, sequence)));
    };
    let broken: Vec<bool> = (0..scenario.changes).map(|_| rng.next() < scenario.failure_rate).collect();
    let mut t = 0.0f64;
    let rate_per_second = scenario.arrivals_per_hour / 3600.0;
    let mut arrived_at: HashMap<ChangeId, u64> = HashMap::new();
    for change in 0..scenario.changes as u64 {
        t += -(1.0 - rng.next()).ln() / rate_per_second;
        schedule(&mut agenda, &mut happenings, t as u64, Happening::Arrive(change));
    }
    let ci_seconds = (scenario.ci_minutes * 60.0) as u64;
    // What each batch's commit holds (its changes and those it was built on), and which run of
    // it counts (a cancelled or repeated run's result is stale).
    let mut contents: HashMap<BatchId, Vec<ChangeId>> = HashMap::new();
    let mut live: HashMap<BatchId, u64> = HashMap::new();
    let mut generation = 0u64;
    let (mut ci_runs, mut merged_times, mut ejected, mut broken_merged, mut good_ejected) = (0, Vec::new(), 0, 0, 0);
    let mut done: HashSet<ChangeId> = HashSet::new();
    let mut now = 0u64;
    while let Some(Reverse((at, seq))) = agenda.pop() {
        now = at;
        let event = match happenings.remove(&seq) {
            Some(Happening::Arrive(change)) => {
                arrived_at.insert(change, at);
                Event::Enqueued { change, priority: 0 }
            }
            Some(Happening::CiDone { batch, generation }) => {
                if live.get(&batch) != Some(&generation) {
                    continue;
                }
                live.remove(&batch);
                let holds = &contents[&batch];
                let has_broken = holds.iter().any(|c| broken[*c as usize]);
                let flaky = !has_broken && rng.next() < scenario.flaky_rate;
                Event::Finished { batch, passed: !has_broken && !flaky, flaky, detail: String::new() }
            }
            None => continue,
        };
        let mut pending = vec![event];
        while let Some(event) = pending.pop() {
            for action in queue.handle(event) {
                match action {
                    Action::Test { batch, after, changes } => {
                        let mut holds = after.and_then(|a| contents.get(&a).cloned()).unwrap_or_default();
                        holds.extend(changes);
                        contents.insert(batch, holds);
                        generation += 1;
                        live.insert(batch, generation);
                        ci_runs += 1;
                        schedule(
                            &mut agenda,
                            &mut happenings,
                            now + ci_seconds,
                            Happening::CiDone { batch, generation },
                        );
                    }
                    Action::Cancel { batch } => {
                        live.remove(&batch);
                    }
                    Action::Merge { changes, .. } => {
                        for change in changes {
                            if broken[change as usize] {
                                broken_merged += 1;
                            }
                            merged_times.push((now - arrived_at[&change]) as f64 / 60.0);
                            done.insert(change);
                        }
                    }
                    Action::Eject { change, .. } => {
                        ejected += 1;
                        if !broken[change as usize] {
                            good_ejected += 1;
                        }
                        done.insert(change);
                    }
                }
            }
        }
    }
    merged_times.sort_by(f64::total_cmp);
    let median = merged_times.get(merged_times.len() / 2).copied().unwrap_or(f64::NAN);
    let merged = merged_times.len();
    Report {
        merged,
        ejected,
        ci_runs,
        runs_per_merged: ci_runs as f64 / merged.max(1) as f64,
        median_minutes_to_merge: median,
        broken_merged,
        good_ejected,
        makespan_minutes: now as f64 / 60.0,
    }
}
