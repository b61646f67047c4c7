//! The merge queue, driven directly: table tests of its decisions, properties over random event
//! sequences, and the simulation's guarantees.

use review::queue::{Action, Config, Event, Queue};
use review::simulate::{self, Scenario};

fn tests(actions: &[Action]) -> Vec<(u64, Option<u64>, Vec<u64>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Test { batch, after, changes } => Some((*batch, *after, changes.clone())),
            _ => None,
        })
        .collect()
}

fn finished(batch: u64, passed: bool) -> Event {
    Event::Finished { batch, passed, flaky: false, detail: format!("run of batch {batch}") }
}

#[test]
fn batches_are_tested_on_top_of_each_other_and_merged_in_order() {
    let mut queue = Queue::new(Config { max_batch: 2, max_parallel: 2, flaky_retries: 1, min_speculative: 1 });
    let mut started = Vec::new();
    for change in 1..=5 {
        started.extend(tests(&queue.handle(Event::Enqueued { change, priority: 0 })));
    }
    // A change that arrives to a free slot is tested at once; the others wait.
    assert_eq!(started, [(1, None, vec![1]), (2, Some(1), vec![2])]);
    assert_eq!(queue.waiting(), [3, 4, 5]);
    // The second batch passes first: nothing merges until the first does.
    assert!(queue.handle(finished(2, true)).is_empty());
    let actions = queue.handle(finished(1, true));
    assert_eq!(actions[0], Action::Merge { batch: 1, changes: vec![1] });
    assert_eq!(actions[1], Action::Merge { batch: 2, changes: vec![2] });
    assert_eq!(tests(&actions), [(3, None, vec![3, 4]), (4, Some(3), vec![5])]);
}

#[test]
fn a_failed_batch_is_bisected_until_the_culprit_is_ejected_and_the_others_merge() {
    let mut queue = Queue::new(Config { max_batch: 4, max_parallel: 1, flaky_retries: 1, min_speculative: 1 });
    for change in 1..=5 {
        queue.handle(Event::Enqueued { change, priority: 0 });
    }
    let actions = queue.handle(finished(1, true));
    assert_eq!(tests(&actions), [(2, None, vec![2, 3, 4, 5])]);
    // 2..5 fail together; 4 is the culprit.
    let actions = queue.handle(finished(2, false));
    assert_eq!(tests(&actions), [(3, None, vec![2, 3])], "the first half on main; the second waits");
    let actions = queue.handle(finished(3, true));
    assert_eq!(actions[0], Action::Merge { batch: 3, changes: vec![2, 3] });
    // 4 and 5 are known to fail together on the new main: split without a run.
    assert_eq!(tests(&actions), [(5, None, vec![4])]);
    let actions = queue.handle(finished(5, false));
    assert!(
        matches!(&actions[0], Action::Eject { change: 4, reason } if reason.contains("run of batch 5")),
        "{actions:?}"
    );
    assert_eq!(tests(&actions), [(7, None, vec![5])]);
    assert_eq!(queue.handle(finished(7, true)), [Action::Merge { batch: 7, changes: vec![5] }]);
}

#[test]
fn a_failure_cancels_what_was_built_on_it_and_tests_it_again() {
    let mut queue = Queue::new(Config { max_batch: 1, max_parallel: 3, flaky_retries: 1, min_speculative: 1 });
    for change in 1..=3 {
        queue.handle(Event::Enqueued { change, priority: 0 });
    }
    let actions = queue.handle(finished(1, false));
    assert!(actions.contains(&Action::Cancel { batch: 2 }) && actions.contains(&Action::Cancel { batch: 3 }));
    assert!(matches!(
        actions.iter().find(|a| matches!(a, Action::Eject { .. })),
        Some(Action::Eject { change: 1, .. })
    ));
    assert_eq!(tests(&actions), [(4, None, vec![2]), (5, Some(4), vec![3])]);
    // A result of a cancelled batch is stale.
    assert!(queue.handle(finished(2, true)).is_empty());
}

#[test]
fn a_flaky_failure_is_tested_once_more_then_counts() {
    let mut queue = Queue::new(Config { max_batch: 1, max_parallel: 1, flaky_retries: 1, min_speculative: 1 });
    queue.handle(Event::Enqueued { change: 7, priority: 0 });
    let flaky = |batch| Event::Finished { batch, passed: false, flaky: true, detail: "flaky test".into() };
    assert_eq!(tests(&queue.handle(flaky(1))), [(1, None, vec![7])], "tested again");
    let actions = queue.handle(flaky(1));
    assert!(matches!(&actions[0], Action::Eject { change: 7, .. }), "{actions:?}");
}

#[test]
fn priority_removal_and_conflicts() {
    let mut queue = Queue::new(Config { max_batch: 1, max_parallel: 1, flaky_retries: 1, min_speculative: 1 });
    queue.handle(Event::Enqueued { change: 1, priority: 0 });
    queue.handle(Event::Enqueued { change: 2, priority: 0 });
    queue.handle(Event::Enqueued { change: 3, priority: 5 });
    assert_eq!(queue.waiting(), [3, 2], "a higher priority goes first among those waiting");
    // Removing the change under test cancels its batch; the next starts.
    let actions = queue.handle(Event::Removed { change: 1 });
    assert_eq!(actions[0], Action::Cancel { batch: 1 });
    assert_eq!(tests(&actions), [(2, None, vec![3])]);
    let actions = queue.handle(Event::Conflict { batch: 2, change: 3, detail: "src/a.rs".into() });
    assert_eq!(actions[0], Action::Cancel { batch: 2 });
    assert!(matches!(&actions[1], Action::Eject { change: 3, reason } if reason.contains("src/a.rs")), "{actions:?}");
    assert_eq!(tests(&actions), [(3, None, vec![2])]);
    assert!(!queue.holds(3) && !queue.holds(1));
}

proptest::proptest! {
    /// Whatever happens, main moves only to batches that passed, each change leaves the queue at
    /// most once, and a queue left alone with all runs passing empties.
    #[test]
    fn every_change_is_merged_or_ejected_once(events in proptest::collection::vec((0u8..4, 0u64..12, proptest::bool::ANY), 1..80)) {
        let mut queue = Queue::new(Config { max_batch: 3, max_parallel: 2, flaky_retries: 1, min_speculative: 1 });
        let mut outcomes: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
        let mut running: Vec<u64> = Vec::new();
        let apply = |queue: &mut Queue, event: Event, running: &mut Vec<u64>, outcomes: &mut std::collections::HashMap<u64, usize>| {
            for action in queue.handle(event) {
                match action {
                    Action::Test { batch, .. } => running.push(batch),
                    Action::Cancel { batch } => running.retain(|b| *b != batch),
                    Action::Merge { changes, batch } => {
                        running.retain(|b| *b != batch);
                        for c in changes { *outcomes.entry(c).or_default() += 1; }
                    }
                    Action::Eject { change, .. } => { *outcomes.entry(change).or_default() += 1; }
                }
            }
        };
        for (kind, n, passed) in events {
            let event = match kind {
                // A change that left the queue does not come back under the same id.
                0 | 1 if outcomes.contains_key(&n) => continue,
                0 | 1 => Event::Enqueued { change: n, priority: (n % 3) as i32 },
                2 => Event::Removed { change: n },
                _ => match running.get(n as usize % running.len().max(1)) {
                    Some(&batch) => { running.retain(|b| *b != batch); finished(batch, passed) }
                    None => continue,
                },
            };
            apply(&mut queue, event, &mut running, &mut outcomes);
        }
        let mut rounds = 0;
        while let Some(&batch) = running.first() {
            running.remove(0);
            apply(&mut queue, finished(batch, true), &mut running, &mut outcomes);
            rounds += 1;
            proptest::prop_assert!(rounds < 1000, "the queue never drains");
        }
        proptest::prop_assert!(queue.waiting().is_empty() && queue.batches().is_empty(), "{:?} {:?}", queue.waiting(), queue.batches());
        proptest::prop_assert!(outcomes.values().all(|n| *n == 1), "{outcomes:?}");
    }
}

#[test]
fn in_the_simulation_main_stays_green_and_batching_saves_runs() {
    for failure_rate in [0.01, 0.05, 0.1, 0.2] {
        let scenario = Scenario {
            changes: 300,
            arrivals_per_hour: 12.0,
            ci_minutes: 10.0,
            failure_rate,
            flaky_rate: 0.02,
            seed: 7,
        };
        for config in [Config::ONE_AT_A_TIME, Config::BORS, Config::default()] {
            let report = simulate::run(config, &scenario);
            assert_eq!(report.broken_merged, 0, "{config:?} at {failure_rate}: {report:?}");
            assert_eq!(report.merged + report.ejected, 300, "{config:?} at {failure_rate}: {report:?}");
        }
    }
}

#[test]
fn code_owners_follow_githubs_patterns_and_the_last_match_wins() {
    use review::owners::{CodeOwners, matches};
    // GitHub's documented examples.
    let cases = [
        ("*", "any/file.rs", true),
        ("*.js", "src/app/index.js", true),
        ("*.js", "src/app/index.ts", false),
        ("/build/logs/", "build/logs/today.log", true),
        ("/build/logs/", "src/build/logs/today.log", false),
        ("docs/*", "docs/getting-started.md", true),
        ("docs/*", "docs/build-app/troubleshooting.md", false),
        ("apps/", "src/apps/web/main.rs", true),
        ("apps/", "apps", false),
        ("/docs/", "docs/a/b.md", true),
        ("/docs/", "src/docs/a.md", false),
        ("**/logs", "deep/down/logs/x.log", true),
        ("/scripts/", "scripts/deploy.sh", true),
        ("src/**/test", "src/a/b/test/x.rs", true),
        ("src/**/test", "src/test/x.rs", true),
        ("Cargo.toml", "crates/a/Cargo.toml", true),
    ];
    for (pattern, path, expected) in cases {
        assert_eq!(matches(pattern, path), expected, "{pattern} on {path}");
    }
    let owners = CodeOwners::parse(
        "# comment\n*       @global\n*.js    @js-owner # trailing\n/docs/  @org/writers\n/docs/generated/\n",
    )
    .unwrap();
    assert_eq!(owners.owners_of("src/main.rs").unwrap().owners, ["@global"]);
    assert_eq!(owners.owners_of("web/app.js").unwrap().owners, ["@js-owner"]);
    assert_eq!(owners.owners_of("docs/app.js").unwrap().owners, ["@org/writers"], "the last match wins");
    assert!(owners.owners_of("docs/generated/x.md").unwrap().owners.is_empty(), "no owner: anyone");
    assert!(CodeOwners::parse("!secret.txt @a\n").unwrap_err().starts_with("line 1:"));
    assert!(CodeOwners::parse("* ana\n").unwrap_err().contains("`ana` is not an owner"));
}

#[test]
fn a_change_lacks_what_its_repository_requires_and_says_so() {
    use review::owners::{CodeOwners, Standing, missing};
    let mut standing = Standing {
        author: "ana".into(),
        approvers: vec!["ana".into()],
        teams: [("writers".to_string(), vec!["cy".to_string()])].into_iter().collect(),
        touched: vec!["src/lib.rs".into(), "docs/guide.md".into()],
        owners: Some(CodeOwners::parse("* @bo\n/docs/ @org/writers\n").unwrap()),
        required_approvals: 1,
        checks: vec![("ci".into(), "failure".into())],
        unresolved_comments: 2,
    };
    let lacking = missing(&standing);
    assert_eq!(lacking.len(), 5, "{lacking:#?}");
    assert!(lacking[0].contains("1 approval(s) from someone other than its author, 0 so far"));
    assert!(lacking.iter().any(|m| m == "an approval from @bo (code owners of src/lib.rs)"), "{lacking:#?}");
    assert!(
        lacking.iter().any(|m| m == "an approval from @org/writers (code owners of docs/guide.md)"),
        "{lacking:#?}"
    );
    standing.approvers = vec!["bo".into(), "cy".into()];
    standing.checks = vec![("ci".into(), "success".into())];
    standing.unresolved_comments = 0;
    assert!(missing(&standing).is_empty(), "{:#?}", missing(&standing));
}

proptest::proptest! {
    /// CODEOWNERS files and patterns: any text parses or is refused, and matching never panics.
    #[test]
    fn code_owners_never_panic(text in "([*/?a-z.#@!\\[\\] \n]|\\*\\*){0,80}", path in "[a-z./]{0,30}") {
        if let Ok(owners) = review::owners::CodeOwners::parse(&text) {
            let _ = owners.owners_of(&path);
        }
        let _ = review::owners::matches(&text, &path);
    }
}
