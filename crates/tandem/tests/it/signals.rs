//! Ctrl-C cancels cleanly: running steps die with their process groups, `always()` steps run,
//! and nothing is left behind.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{Repo, Run, pid_alive};

#[test]
fn interrupt_cancels_the_run_and_leaves_nothing_running() {
    let wf = r#"
on: push
jobs:
  long:
    runs-on: ubuntu-latest
    steps:
      - run: |
          sleep 300 &
          echo $! > "$RUNNER_TOOL_CACHE/../child.pid"
          echo $$ > "$RUNNER_TOOL_CACHE/../step.pid"
          wait
      - if: always()
        run: echo "cleanup after ${{ job.status }}"
      - run: echo "must not run"
"#;
    let repo = Repo::new(&[("ci.yml", wf)]);
    let child = repo
        .command(&["run"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid_file = repo.data.path().join("child.pid");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pid_file.exists() || std::fs::read_to_string(&pid_file).unwrap().trim().is_empty() {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let background: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    let step: i32 = std::fs::read_to_string(repo.data.path().join("step.pid")).unwrap().trim().parse().unwrap();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let started = Instant::now();
    let output = child.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?} to stop", started.elapsed());
    let run = Run::from(output);
    assert_eq!(run.code, 130, "{}", run.all());
    assert!(run.stdout.contains("cleanup after cancelled"), "{}", run.all());
    assert!(!run.stdout.contains("| must not run"), "{}", run.all());
    assert!(run.stdout.contains("was cancelled"), "{}", run.all());
    std::thread::sleep(Duration::from_millis(200));
    assert!(!pid_alive(step), "the step's shell {step} survived");
    assert!(!pid_alive(background), "the step's background child {background} survived");
}
