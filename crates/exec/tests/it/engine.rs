//! The scheduler, driven through a fake executor: no processes, no sockets, no sleeps. The fake
//! reads each step's script and acts it out: `exit N`, `echo TEXT`, `output K=V`, `block NAME`
//! (until the test releases NAME or the step is cancelled), `yield` (a step that takes a few turns
//! of the runtime), `sleep SECONDS` (on tokio's clock, which a test may pause), `lines N` and
//! `panic`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use exec::engine::{self, EngineConfig, RunEvent, RunReport, RunRequest, Status};
use exec::process::{Exit, ProcessGroups, ProcessSpec, Stream};
use exec::{Cancel, CancelSource, Executor};
use git::repo::RepoFacts;
use tokio::sync::{Notify, mpsc};

#[derive(Default)]
struct Fake {
    /// Steps in the order they started: `job: first line of the script`.
    started: Mutex<Vec<String>>,
    released: Mutex<HashSet<String>>,
    release: Notify,
    running: AtomicUsize,
    most_running: AtomicUsize,
}

impl Fake {
    fn release(&self, name: &str) {
        self.released.lock().unwrap().insert(name.to_string());
        self.release.notify_waiters();
    }

    fn started(&self) -> Vec<String> {
        self.started.lock().unwrap().clone()
    }

    async fn act(&self, spec: &ProcessSpec, lines: &mpsc::Sender<(Stream, String)>, cancel: &Cancel) -> Exit {
        let script = std::fs::read_to_string(spec.argv.last().unwrap()).unwrap();
        let job = spec.env.get("GITHUB_JOB").cloned().unwrap_or_default();
        self.started.lock().unwrap().push(format!("{job}: {}", script.lines().next().unwrap_or("")));
        for line in script.lines().map(str::trim) {
            let (op, arg) = line.split_once(' ').unwrap_or((line, ""));
            match op {
                "exit" => return Exit::Code(arg.parse().unwrap()),
                "echo" => lines.send((Stream::Stdout, arg.to_string())).await.unwrap(),
                "lines" => {
                    for n in 0..arg.parse::<usize>().unwrap() {
                        lines.send((Stream::Stdout, n.to_string())).await.unwrap();
                    }
                }
                "output" => {
                    use std::io::Write;
                    let path = &spec.env["GITHUB_OUTPUT"];
                    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
                    writeln!(file, "{arg}").unwrap();
                }
                "block" => loop {
                    let notified = self.release.notified();
                    if self.released.lock().unwrap().contains(arg) {
                        break;
                    }
                    let mut cancel = cancel.clone();
                    tokio::select! {
                        () = notified => {}
                        () = cancel.cancelled() => return Exit::Cancelled,
                    }
                },
                "sleep" => {
                    let mut cancel = cancel.clone();
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(arg.parse().unwrap())) => {}
                        () = cancel.cancelled() => return Exit::Cancelled,
                    }
                }
                "yield" => {
                    for _ in 0..50 {
                        tokio::task::yield_now().await;
                    }
                }
                "panic" => panic!("the fake executor was told to panic"),
                _ => {}
            }
        }
        Exit::Code(0)
    }
}

struct FakeExecutor(Arc<Fake>);

impl Executor for FakeExecutor {
    fn run<'a>(
        &'a self,
        spec: &'a ProcessSpec,
        lines: &'a mpsc::Sender<(Stream, String)>,
        cancel: &'a Cancel,
        _groups: &'a ProcessGroups,
    ) -> Pin<Box<dyn Future<Output = (Exit, Option<i32>)> + Send + 'a>> {
        Box::pin(async move {
            let now = self.0.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.0.most_running.fetch_max(now, Ordering::SeqCst);
            let exit = self.0.act(spec, lines, cancel).await;
            self.0.running.fetch_sub(1, Ordering::SeqCst);
            (exit, None)
        })
    }
}

/// A run of `workflow` on the fake, its events as they come, and the cancel handle.
struct Run {
    fake: Arc<Fake>,
    events: mpsc::Receiver<RunEvent>,
    report: tokio::task::JoinHandle<RunReport>,
    cancel: CancelSource,
    _dir: tempfile::TempDir,
}

fn start(workflow: &str, max_parallel: usize, attempt: u64) -> Run {
    start_with(workflow, max_parallel, attempt, engine::EVENT_BUFFER)
}

fn start_with(workflow: &str, max_parallel: usize, attempt: u64, buffer: usize) -> Run {
    start_request(workflow, max_parallel, attempt, buffer, |_| {})
}

fn start_request(
    workflow: &str,
    max_parallel: usize,
    attempt: u64,
    buffer: usize,
    adjust: impl FnOnce(&mut RunRequest),
) -> Run {
    let (parsed, diagnostics) = ci::check::validate(workflow);
    assert!(diagnostics.iter().all(|d| !d.is_error()), "{diagnostics:?}");
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake::default());
    let request = RunRequest {
        workflow: Arc::new(parsed.unwrap()),
        workflow_path: ".github/workflows/ci.yml".into(),
        jobs: None,
        repo: RepoFacts { root: dir.path().to_path_buf(), repository: "team/app".into(), ..RepoFacts::default() },
        worktree: false,
        event_name: "push".into(),
        event: spec::expr::Value::Object(BTreeMap::new()),
        inputs: BTreeMap::new(),
        secrets: BTreeMap::new(),
        vars: BTreeMap::new(),
        run_id: 7,
        run_number: 3,
        run_attempt: attempt,
        run_dir: dir.path().join("run"),
        platforms: BTreeMap::new(),
        token: exec::engine::run_token(),
        call_depth: 0,
        environment_secrets: BTreeMap::new(),
        environment_gate: None,
    };
    let mut request = request;
    adjust(&mut request);
    let config = EngineConfig {
        data_dir: dir.path().join("data"),
        max_parallel,
        cache_limit: 1 << 20,
        keep_workspaces: false,
        actions: Default::default(),
        executor: Arc::new(FakeExecutor(fake.clone())),
    };
    let (tx, events) = mpsc::channel(buffer);
    let (cancel, token) = CancelSource::new();
    let report = tokio::spawn(engine::run(request, config, tx, token, ProcessGroups::default()));
    Run { fake, events, report, cancel, _dir: dir }
}

impl Run {
    /// Waits for the event `matches` accepts; panics after 30 s (a hang is a failure, not a wait).
    async fn until(&mut self, what: &str, matches: impl Fn(&RunEvent) -> bool) -> RunEvent {
        let wait = async {
            while let Some(event) = self.events.recv().await {
                if matches(&event) {
                    return event;
                }
            }
            panic!("the run ended before {what}");
        };
        tokio::time::timeout(Duration::from_secs(30), wait).await.unwrap_or_else(|_| panic!("no {what} in 30 s"))
    }

    async fn finish(self) -> (RunReport, Vec<String>, Vec<String>) {
        let report = tokio::time::timeout(Duration::from_secs(30), self.report).await.expect("the run hangs").unwrap();
        let mut events = self.events;
        let mut lines = Vec::new();
        while let Ok(event) = events.try_recv() {
            if let RunEvent::Line { job, text, .. } = event {
                lines.push(format!("{job}: {text}"));
            }
        }
        (report, self.fake.started(), lines)
    }
}

fn statuses(report: &RunReport) -> HashMap<String, Status> {
    report.jobs.iter().map(|j| (j.name.clone(), j.status)).collect()
}

fn finished(job: &str) -> impl Fn(&RunEvent) -> bool + '_ {
    move |event| matches!(event, RunEvent::JobFinished { job: name, .. } if name == job)
}

#[tokio::test]
async fn jobs_start_when_their_needs_are_done_and_see_their_outputs() {
    let wf = "on: push
jobs:
  build:
    runs-on: ubuntu-latest
    outputs: { version: '${{ steps.v.outputs.version }}' }
    steps:
      - id: v
        run: output version=1.2.3
  test:
    needs: build
    runs-on: ubuntu-latest
    steps:
      - run: echo testing ${{ needs.build.outputs.version }} attempt ${{ github.run_attempt }}
  skipped:
    needs: test
    if: github.event_name == 'schedule'
    runs-on: ubuntu-latest
    steps:
      - run: echo never
";
    let (report, started, lines) = start(wf, 4, 2).finish().await;
    assert_eq!(report.status, Status::Success);
    assert_eq!(started, ["build: output version=1.2.3", "test: echo testing 1.2.3 attempt 2"]);
    assert!(lines.contains(&"test: testing 1.2.3 attempt 2".to_string()), "{lines:?}");
    assert_eq!(statuses(&report)["skipped"], Status::Skipped);
}

#[tokio::test]
async fn no_more_legs_run_at_once_than_the_slots_allow() {
    let wf = "on: push
jobs:
  many:
    strategy: { matrix: { n: [1, 2, 3, 4, 5, 6] } }
    runs-on: ubuntu-latest
    steps:
      - run: yield
";
    let run = start(wf, 2, 1);
    let fake = run.fake.clone();
    let (report, started, _) = run.finish().await;
    assert_eq!(report.status, Status::Success);
    assert_eq!(started.len(), 6);
    assert_eq!(fake.most_running.load(Ordering::SeqCst), 2, "two slots: two legs at once, never more");
}

/// `timeout-minutes` counts from the job's start, when it gets a slot, as on GitHub (from when a
/// runner picks the job up), not from when its needs were met: a job that waited longer than its
/// timeout for a slot still runs. The clock is tokio's, paused: no real time passes.
#[tokio::test(start_paused = true)]
async fn a_job_timeout_counts_from_its_start_not_from_its_wait_for_a_slot() {
    let wf = "on: push
jobs:
  first:
    runs-on: ubuntu-latest
    steps:
      - run: sleep 20
  second:
    runs-on: ubuntu-latest
    timeout-minutes: 0.1
    steps:
      - run: sleep 1
  third:
    runs-on: ubuntu-latest
    timeout-minutes: 0.1
    steps:
      - run: sleep 10
";
    let (report, started, lines) = start(wf, 1, 1).finish().await;
    assert_eq!(started, ["first: sleep 20", "second: sleep 1", "third: sleep 10"], "one slot: each job waits for it");
    let jobs = statuses(&report);
    assert_eq!(jobs["second"], Status::Success, "a 6 s timeout, and 20 s spent waiting: {lines:?}");
    let second = report.jobs.iter().find(|j| j.name == "second").unwrap();
    assert!(second.duration < Duration::from_secs(6), "its duration is its run, not its wait: {:?}", second.duration);
    // A job that runs longer than its timeout still ends there.
    let third = report.jobs.iter().find(|j| j.name == "third").unwrap();
    assert_eq!(third.status, Status::Failure, "{lines:?}");
    assert!(third.error.as_deref().is_some_and(|e| e.contains("exceeded its timeout")), "{:?}", third.error);
}

#[tokio::test]
async fn fail_fast_cancels_the_siblings_of_a_failed_leg() {
    let wf = "on: push
jobs:
  test:
    strategy: { matrix: { os: [a, b] } }
    runs-on: ubuntu-latest
    steps:
      - run: |
          ${{ matrix.os == 'a' && 'exit 1' || 'block never' }}
";
    let (report, _, _) = start(wf, 4, 1).finish().await;
    let jobs = statuses(&report);
    assert_eq!(jobs["test (a)"], Status::Failure);
    assert_eq!(jobs["test (b)"], Status::Cancelled, "fail-fast is on by default");
    assert_eq!(report.status, Status::Failure);
}

#[tokio::test]
async fn fail_fast_false_lets_the_other_legs_finish() {
    let wf = "on: push
jobs:
  test:
    strategy:
      fail-fast: false
      matrix: { os: [a, b] }
    runs-on: ubuntu-latest
    steps:
      - run: |
          ${{ matrix.os == 'a' && 'exit 1' || 'block b' }}
";
    let mut run = start(wf, 4, 1);
    run.until("leg a to fail", finished("test (a)")).await;
    run.fake.release("b");
    let (report, _, _) = run.finish().await;
    let jobs = statuses(&report);
    assert_eq!(jobs["test (a)"], Status::Failure);
    assert_eq!(jobs["test (b)"], Status::Success, "fail-fast: false must not cancel leg b");
    assert_eq!(report.status, Status::Failure);
}

#[tokio::test]
async fn an_experimental_leg_that_fails_neither_cancels_the_others_nor_fails_the_run() {
    let wf = "on: push
jobs:
  test:
    continue-on-error: ${{ matrix.experimental }}
    strategy:
      matrix:
        version: [stable]
        experimental: [false]
        include:
          - version: nightly
            experimental: true
    runs-on: ubuntu-latest
    steps:
      - run: |
          ${{ matrix.experimental && 'exit 1' || 'block stable' }}
  after:
    needs: test
    runs-on: ubuntu-latest
    steps:
      - run: echo ${{ needs.test.result }}
";
    let mut run = start(wf, 4, 1);
    run.until(
        "the nightly leg to fail",
        |e| matches!(e, RunEvent::JobFinished { job, status: Status::Failure, .. } if job.contains("nightly")),
    )
    .await;
    run.fake.release("stable");
    let (report, started, lines) = run.finish().await;
    let jobs = statuses(&report);
    assert_eq!(jobs["test (stable, false)"], Status::Success);
    assert_eq!(report.status, Status::Success, "{jobs:?}");
    assert!(started.iter().any(|s| s.starts_with("after:")), "{started:?}");
    assert!(lines.contains(&"after: success".to_string()), "{lines:?}");
}

#[tokio::test]
async fn a_cancel_stops_the_running_step_and_always_steps_still_run() {
    let wf = "on: push
jobs:
  work:
    runs-on: ubuntu-latest
    steps:
      - run: block never
      - run: echo not reached
      - if: always()
        run: echo cleaning up
  later:
    needs: work
    runs-on: ubuntu-latest
    steps:
      - run: echo not reached either
";
    let mut run = start(wf, 4, 1);
    run.until("the blocking step", |e| matches!(e, RunEvent::StepStarted { step: 0, .. })).await;
    run.cancel.cancel();
    let (report, started, _) = run.finish().await;
    assert_eq!(report.status, Status::Cancelled);
    assert_eq!(started, ["work: block never", "work: echo cleaning up"]);
    let work = &report.jobs[0];
    let steps: Vec<Status> = work.steps.iter().map(|s| s.status).collect();
    assert_eq!(steps, [Status::Cancelled, Status::Skipped, Status::Success]);
}

#[tokio::test]
async fn a_newer_job_of_a_group_with_cancel_in_progress_cancels_the_running_one() {
    let wf = "on: push
jobs:
  first:
    runs-on: ubuntu-latest
    concurrency: deploy
    steps:
      - run: block never
  gate:
    runs-on: ubuntu-latest
    steps:
      - run: block first-started
  second:
    needs: gate
    runs-on: ubuntu-latest
    concurrency: { group: deploy, cancel-in-progress: true }
    steps:
      - run: echo second ran
";
    let mut run = start(wf, 4, 1);
    // `second` comes only once `first` holds the group: after `gate`, which the test releases.
    run.until("first's step", |e| matches!(e, RunEvent::StepStarted { job, .. } if job == "first")).await;
    run.fake.release("first-started");
    let (report, _, lines) = run.finish().await;
    let jobs = statuses(&report);
    assert_eq!(jobs["first"], Status::Cancelled, "{jobs:?}");
    assert_eq!(jobs["second"], Status::Success, "{jobs:?}");
    assert!(lines.contains(&"second: second ran".to_string()), "{lines:?}");
}

#[tokio::test]
async fn a_panic_in_a_leg_fails_its_job_with_the_reason_and_the_run_ends() {
    let wf = "on: push
jobs:
  broken:
    runs-on: ubuntu-latest
    steps:
      - run: panic
  fine:
    runs-on: ubuntu-latest
    steps:
      - run: echo fine
";
    let (report, _, _) = start(wf, 4, 1).finish().await;
    let broken = report.jobs.iter().find(|j| j.id == "broken").unwrap();
    assert_eq!(broken.status, Status::Failure);
    assert!(broken.error.as_deref().unwrap_or("").contains("internal error"), "{:?}", broken.error);
    assert_eq!(statuses(&report)["fine"], Status::Success);
    assert_eq!(report.status, Status::Failure);
}

#[tokio::test]
async fn a_slow_reader_slows_the_run_and_loses_no_line() {
    let wf = "on: push
jobs:
  chatty:
    runs-on: ubuntu-latest
    steps:
      - run: lines 5000
";
    // One event in flight at a time: the step waits for the reader, line by line.
    let mut run = start_with(wf, 1, 1, 1);
    let mut received = Vec::new();
    let read = async {
        while let Some(event) = run.events.recv().await {
            if let RunEvent::Line { text, .. } = event {
                received.push(text);
                if received.len() % 500 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read).await.expect("the run hangs");
    let report = run.report.await.unwrap();
    assert_eq!(report.status, Status::Success);
    assert_eq!(received, (0..5000).map(|n| n.to_string()).collect::<Vec<_>>(), "every line, in order");
}

/// A gate that holds every job until the test opens it (or refuses, when told to).
#[derive(Default)]
struct Door {
    open: std::sync::atomic::AtomicBool,
    refuse: bool,
    asked: Mutex<Vec<(String, String)>>,
}

impl engine::Gate for Door {
    fn holds<'a>(
        &'a self,
        job: &'a str,
        environment: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Option<String>, String>> + Send + 'a>> {
        self.asked.lock().unwrap().push((job.to_string(), environment.to_string()));
        let answer = if self.refuse {
            Err("the approval was refused".to_string())
        } else if self.open.load(Ordering::SeqCst) {
            Ok(None)
        } else {
            Ok(Some("waits for approval".to_string()))
        };
        Box::pin(async move { answer })
    }
}

const GATED: &str = "on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - run: echo key given ${{ secrets.KEY == 'sesame' }}
  deploy:
    runs-on: ubuntu-latest
    needs: build
    environment: production
    steps:
      - run: echo key given ${{ secrets.KEY == 'sesame' }}
";

fn gated(door: &Arc<Door>) -> Run {
    let door = door.clone();
    start_request(GATED, 2, 1, engine::EVENT_BUFFER, move |request| {
        request.environment_gate = Some(engine::EnvironmentGate(door));
        let key = BTreeMap::from([("KEY".to_string(), "sesame".to_string())]);
        request.environment_secrets = BTreeMap::from([("production".to_string(), key)]);
    })
}

#[tokio::test]
async fn a_job_naming_an_environment_waits_at_its_gate_and_only_then_gets_its_secrets() {
    let door = Arc::new(Door::default());
    let mut run = gated(&door);
    let waiting = |e: &RunEvent| matches!(e, RunEvent::Line { job, text, .. } if job == "deploy" && text.contains("waiting for environment production: waits for approval"));
    // The job without an environment runs, without the secret; then the deploy job is held.
    run.until("build to finish", finished("build")).await;
    run.until("the deploy job waiting at its gate", waiting).await;
    assert_eq!(run.fake.started(), vec!["build: echo key given false"]);
    door.open.store(true, Ordering::SeqCst);
    let (report, started, lines) = run.finish().await;
    assert_eq!(report.status, Status::Success);
    assert_eq!(started, vec!["build: echo key given false", "deploy: echo key given true"]);
    assert!(lines.iter().any(|l| l == "deploy: environment production: its gates passed; the job starts"), "{lines:?}");
    assert!(door.asked.lock().unwrap().iter().all(|(job, env)| job == "deploy" && env == "production"));
}

#[tokio::test]
async fn a_job_refused_at_its_gate_fails_and_one_cancelled_there_is_cancelled() {
    let door = Arc::new(Door { refuse: true, ..Door::default() });
    let (report, started, _) = gated(&door).finish().await;
    let deploy = report.jobs.iter().find(|j| j.id == "deploy").unwrap();
    assert_eq!(
        (deploy.status, deploy.error.as_deref()),
        (Status::Failure, Some("environment production: the approval was refused"))
    );
    assert_eq!(started, vec!["build: echo key given false"]);

    let door = Arc::new(Door::default());
    let mut run = gated(&door);
    let waiting = |e: &RunEvent| matches!(e, RunEvent::Line { job, text, .. } if job == "deploy" && text.contains("waiting for environment"));
    run.until("the deploy job waiting at its gate", waiting).await;
    run.cancel.cancel();
    let (report, started, _) = run.finish().await;
    assert_eq!(statuses(&report)["deploy"], Status::Cancelled);
    assert_eq!(started, vec!["build: echo key given false"]);
}
