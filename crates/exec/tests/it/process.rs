//! Steps run in their own process group, which is killed whole on timeout and on cancel.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use exec::process::{self, Exit, ProcessGroups, ProcessSpec, Stream};
use exec::{Cancel, CancelSource};
use tokio::sync::mpsc;

fn spec(script: &str, dir: &std::path::Path, timeout: Option<Duration>) -> ProcessSpec {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    ProcessSpec {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        env,
        inherit: false,
        base: Default::default(),
        cwd: dir.to_path_buf(),
        timeout,
    }
}

fn alive(pid: i32) -> bool {
    // A zombie is dead for our purposes; /proc tells the state.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.split_whitespace().nth(2).is_none_or(|s| s != "Z"),
        Err(_) => false,
    }
}

fn background_pid(dir: &std::path::Path) -> i32 {
    std::fs::read_to_string(dir.join("pid")).unwrap().trim().parse().unwrap()
}

#[tokio::test]
async fn output_lines_arrive_in_order_with_their_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = mpsc::channel(1024);
    let (exit, _) = process::run(
        &spec("echo one; echo two >&2; printf 'three'; exit 4", dir.path(), None),
        &tx,
        &Cancel::never(),
        &ProcessGroups::default(),
    )
    .await;
    drop(tx);
    assert_eq!(exit, Exit::Code(4));
    let mut lines = Vec::new();
    while let Some(line) = rx.recv().await {
        lines.push(line);
    }
    assert!(lines.contains(&(Stream::Stdout, "one".into())));
    assert!(lines.contains(&(Stream::Stderr, "two".into())));
    assert!(lines.contains(&(Stream::Stdout, "three".into())));
}

#[tokio::test]
async fn timeout_kills_the_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, _rx) = mpsc::channel(1024);
    let started = Instant::now();
    let script = "sleep 300 & echo $! > pid; wait";
    let (exit, _) = process::run(
        &spec(script, dir.path(), Some(Duration::from_millis(500))),
        &tx,
        &Cancel::never(),
        &ProcessGroups::default(),
    )
    .await;
    assert_eq!(exit, Exit::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    let pid = background_pid(dir.path());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!alive(pid), "background child {pid} survived the timeout");
}

#[tokio::test]
async fn cancel_kills_the_whole_group_even_when_it_ignores_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, _rx) = mpsc::channel(1024);
    let (source, cancel) = CancelSource::new();
    let script = "trap '' TERM; sleep 300 & echo $! > pid; while true; do sleep 1; done";
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        source.cancel();
    });
    let started = Instant::now();
    let (exit, _) = process::run(&spec(script, dir.path(), None), &tx, &cancel, &ProcessGroups::default()).await;
    canceller.await.unwrap();
    assert_eq!(exit, Exit::Cancelled);
    assert!(started.elapsed() >= process::KILL_GRACE, "SIGKILL came before the grace period");
    assert!(started.elapsed() < process::KILL_GRACE + Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!alive(background_pid(dir.path())));
}

#[tokio::test]
async fn a_missing_program_is_reported_not_panicked() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = mpsc::channel(1024);
    let mut spec = spec("", dir.path(), None);
    spec.argv = vec!["definitely-not-a-program-xyz".into()];
    let (exit, _) = process::run(&spec, &tx, &Cancel::never(), &ProcessGroups::default()).await;
    drop(tx);
    assert_eq!(exit, Exit::NotStarted);
    let (_, line) = rx.recv().await.unwrap();
    assert!(line.contains("was not found on PATH"), "{line}");
}

#[tokio::test]
async fn long_lines_are_cut_and_a_slow_reader_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // One channel slot: the process waits on its pipe while the reader is slow.
    let (tx, mut rx) = mpsc::channel(1);
    let script = "head -c 200000 /dev/zero | tr '\\0' x; echo; echo after; seq 1 2000";
    let run = async {
        let (exit, _) =
            process::run(&spec(script, dir.path(), None), &tx, &Cancel::never(), &ProcessGroups::default()).await;
        drop(tx);
        exit
    };
    let read = async {
        let mut lines = Vec::new();
        while let Some((_, line)) = rx.recv().await {
            if lines.len() % 100 == 0 {
                tokio::task::yield_now().await;
            }
            lines.push(line);
        }
        lines
    };
    let (exit, lines) = tokio::join!(run, read);
    assert_eq!(exit, Exit::Code(0));
    assert_eq!(lines[0].len(), process::MAX_LINE_BYTES + process::CUT_NOTE.len(), "the long line is cut at its limit");
    assert!(lines[0].ends_with(process::CUT_NOTE));
    assert_eq!(lines[1], "after", "the rest of the cut line is dropped, the next line is whole");
    assert_eq!(lines.len(), 2 + 2000, "every line arrives through a one-slot channel");
    assert_eq!(lines.last().map(String::as_str), Some("2000"));
}

/// The variables a process running `spec` (which prints them with `env`) sees.
async fn environment_seen(spec: &ProcessSpec) -> BTreeMap<String, String> {
    let (tx, mut rx) = mpsc::channel(1024);
    let (exit, _) = process::run(spec, &tx, &Cancel::never(), &ProcessGroups::default()).await;
    drop(tx);
    assert_eq!(exit, Exit::Code(0));
    let mut seen = BTreeMap::new();
    while let Some((_, line)) = rx.recv().await {
        if let Some((key, value)) = line.split_once('=') {
            seen.insert(key.to_string(), value.to_string());
        }
    }
    seen
}

/// The process sees exactly the environment it is given: changed and added variables, and none
/// of Tandem's own that the spec leaves out.
#[tokio::test]
async fn the_environment_is_exactly_the_specs() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec("env", dir.path(), None);
    let own: BTreeMap<String, String> = std::env::vars().collect();
    // Not one the shell sets for itself.
    let shells_own = ["PATH", "PWD", "OLDPWD", "SHLVL", "_", "IFS", "PS1", "PS2", "PS4", "OPTIND"];
    let (dropped, _) =
        own.iter().find(|(key, _)| !shells_own.contains(&key.as_str())).expect("the test runs with some variables");
    let dropped = dropped.clone();
    spec.env.remove(&dropped);
    spec.env.insert("PATH".into(), format!("/tandem-test-bin:{}", own.get("PATH").cloned().unwrap_or_default()));
    spec.env.insert("TANDEM_TEST_ADDED".into(), "a value with spaces".into());
    let seen = environment_seen(&spec).await;
    assert_eq!(seen.get("TANDEM_TEST_ADDED").map(String::as_str), Some("a value with spaces"));
    assert!(seen.get("PATH").is_some_and(|p| p.starts_with("/tandem-test-bin:")), "{:?}", seen.get("PATH"));
    assert!(!seen.contains_key(&dropped), "`{dropped}` was left out of the spec but reached the process");
}

/// Inheriting, a process gets Tandem's own environment with the spec's variables added or
/// changed, and nothing else.
#[tokio::test]
async fn an_inheriting_process_gets_our_environment_and_the_specs() {
    let dir = tempfile::tempdir().unwrap();
    let own: BTreeMap<String, String> = std::env::vars().collect();
    let mut spec = spec("env", dir.path(), None);
    spec.inherit = true;
    spec.env = BTreeMap::from([
        ("TANDEM_TEST_ADDED".to_string(), "added".to_string()),
        ("PATH".to_string(), format!("/tandem-test-bin:{}", own.get("PATH").cloned().unwrap_or_default())),
    ]);
    let seen = environment_seen(&spec).await;
    assert_eq!(seen.get("TANDEM_TEST_ADDED").map(String::as_str), Some("added"));
    assert!(seen.get("PATH").is_some_and(|p| p.starts_with("/tandem-test-bin:")), "{:?}", seen.get("PATH"));
    let shells_own = ["PATH", "PWD", "OLDPWD", "SHLVL", "_"];
    // `env` prints a value over several lines when it holds newlines: those are not compared.
    for (key, value) in own.iter().filter(|(key, value)| !shells_own.contains(&key.as_str()) && !value.contains('\n')) {
        assert_eq!(seen.get(key), Some(value), "`{key}` of our environment did not reach the process");
    }
}

#[tokio::test]
async fn a_running_step_shows_its_output_before_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    // The step prints, then waits for the test to let it go: its line must arrive while it runs.
    let script = "echo started; i=0; while [ ! -e go ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; echo done";
    let step = spec(script, dir.path(), Some(Duration::from_secs(60)));
    let run = tokio::spawn(async move {
        let (exit, _) = process::run(&step, &tx, &Cancel::never(), &ProcessGroups::default()).await;
        exit
    });
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
    assert_eq!(
        first.ok().flatten(),
        Some((Stream::Stdout, "started".to_string())),
        "the first line arrives while the step runs"
    );
    assert!(!run.is_finished(), "the step is still waiting for the test");
    std::fs::write(dir.path().join("go"), "").unwrap();
    assert_eq!(run.await.unwrap(), Exit::Code(0));
    assert_eq!(rx.recv().await, Some((Stream::Stdout, "done".to_string())));
    assert_eq!(rx.recv().await, None, "nothing after the last line");
}

#[tokio::test]
async fn a_quick_step_has_all_its_output_read() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = mpsc::channel(4096);
    // Ends within moments, on both streams, the last line without a newline.
    let script = "seq 1 500; seq 1 300 >&2; printf tail";
    let (exit, _) =
        process::run(&spec(script, dir.path(), None), &tx, &Cancel::never(), &ProcessGroups::default()).await;
    drop(tx);
    assert_eq!(exit, Exit::Code(0));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    while let Some((stream, line)) = rx.recv().await {
        match stream {
            Stream::Stdout => out.push(line),
            Stream::Stderr => err.push(line),
        }
    }
    let expected: Vec<String> = (1..=500).map(|n| n.to_string()).chain(["tail".to_string()]).collect();
    assert_eq!(out, expected);
    assert_eq!(err, (1..=300).map(|n| n.to_string()).collect::<Vec<_>>());
}
