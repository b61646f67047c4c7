//! Benchmarks, each run side by side with its baseline on this machine:
//! (a) engine overhead against a shell script running the same processes with the same parallelism;
//! (b) `tandem validate` throughput over the real-world corpus;
//! (c) a wide DAG against `make -j` with the same graph, and against `make -j` whose recipes
//! follow a step's contract (a script file, GitHub's variables) as a diagnostic.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

struct Settings {
    repeats: usize,
    n_jobs: usize,
    n_steps: usize,
    dag_width: usize,
    parallel: usize,
}

pub fn run(args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
    let settings = if quick {
        Settings { repeats: 1, n_jobs: 40, n_steps: 5, dag_width: 20, parallel }
    } else {
        Settings { repeats: 5, n_jobs: 200, n_steps: 5, dag_width: 100, parallel }
    };
    run_cmd(Command::new("cargo").args(["build", "--release", "-p", "tandem", "--quiet"]))?;
    let tandem = Path::new("target/release/tandem").canonicalize()?;
    let scratch = std::env::temp_dir().join(format!("tandem-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let mut report = String::new();
    writeln!(
        report,
        "Machine: {} cores, {}; {} repeats, median wall time.\n",
        parallel,
        cpu_model(),
        settings.repeats
    )?;
    writeln!(report, "| benchmark | Tandem | baseline | ratio (Tandem / baseline) |")?;
    writeln!(report, "|---|---|---|---|")?;

    let (ours, theirs) = engine_overhead(&tandem, &scratch, &settings)?;
    writeln!(
        report,
        "| (a) {} jobs × {} trivial steps, {} at a time | {} | shell script, same processes and parallelism: {} | **{:.2}×** (target ≤ 1.3×) |",
        settings.n_jobs,
        settings.n_steps,
        settings.parallel,
        secs(ours),
        secs(theirs),
        ratio(ours, theirs)
    )?;
    let (n_files, elapsed) = validate_throughput(&tandem, &scratch, &settings)?;
    writeln!(
        report,
        "| (b) `tandem validate` over the corpus ({n_files} files per pass) | {:.0} files/s | — | — |",
        n_files as f64 / elapsed.as_secs_f64()
    )?;
    let dag = wide_dag(&tandem, &scratch, &settings)?;
    writeln!(
        report,
        "| (c) wide DAG: 1 → {} → 1 jobs, {} at a time ({} runs each) | {} | `make -j{}`, same graph and recipes: {} | **{:.2}×** |",
        settings.dag_width,
        settings.parallel,
        settings.repeats * 3,
        secs(dag.tandem),
        settings.parallel,
        secs(dag.make),
        ratio(dag.tandem, dag.make)
    )?;
    writeln!(
        report,
        "| (c′) the same, against make whose recipes run as steps do (`bash -e FILE`, {} exported variables) | {} | {} | {:.2}× (that make: {:.2}× plain make) |",
        STEP_VARIABLES.len(),
        secs(dag.tandem),
        secs(dag.make_as_steps),
        ratio(dag.tandem, dag.make_as_steps),
        ratio(dag.make_as_steps, dag.make)
    )?;
    let _ = std::fs::remove_dir_all(&scratch);
    println!("{report}");
    Ok(())
}

fn run_cmd(command: &mut Command) -> Result<()> {
    crate::run(command)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string())
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Times `command` `repeats` times (alternating with the baseline is done by the caller).
fn time(command: &mut Command) -> Result<Duration> {
    let started = Instant::now();
    let status = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("cannot start {command:?}"))?;
    let elapsed = started.elapsed();
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(elapsed)
}

fn git_repo(dir: &Path, workflow: &str) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join(".tandem/workflows"))?;
    std::fs::write(dir.join(".tandem/workflows/bench.yml"), workflow)?;
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "-A"],
        &["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "bench"],
    ] {
        run_cmd(Command::new("git").arg("-C").arg(dir).args(args))?;
    }
    Ok(())
}

fn tandem_run(tandem: &Path, repo: &Path, data: &Path, parallel: usize) -> Command {
    let mut command = Command::new(tandem);
    command
        .args(["run", "bench", "-j", &parallel.to_string()])
        .current_dir(repo)
        .env("TANDEM_DATA", data)
        .env("TANDEM_NO_LIVE", "1");
    command
}

/// (a) The same processes through Tandem and through a shell script: every step is `bash -e FILE`.
fn engine_overhead(tandem: &Path, scratch: &Path, s: &Settings) -> Result<(Duration, Duration)> {
    let mut workflow = String::from("on: push\njobs:\n");
    for job in 0..s.n_jobs {
        writeln!(workflow, "  job{job}:\n    runs-on: ubuntu-latest\n    steps:")?;
        for step in 0..s.n_steps {
            writeln!(workflow, "      - run: echo job {job} step {step}")?;
        }
    }
    let repo = scratch.join("overhead");
    git_repo(&repo, &workflow)?;
    // Baseline: each job a shell loop over its steps, each step a script file run by `bash -e`,
    // the jobs spread over the same number of workers.
    let steps_dir = scratch.join("overhead-steps");
    std::fs::create_dir_all(&steps_dir)?;
    let mut jobs_list = String::new();
    for job in 0..s.n_jobs {
        for step in 0..s.n_steps {
            std::fs::write(steps_dir.join(format!("{job}-{step}.sh")), format!("echo job {job} step {step}\n"))?;
        }
        writeln!(jobs_list, "{job}")?;
    }
    std::fs::write(steps_dir.join("jobs"), jobs_list)?;
    let script = format!(
        "cd {dir} && xargs -P {p} -I{{}} sh -c 'for s in $(seq 0 {last}); do bash -e {{}}-$s.sh || exit 1; done' < jobs",
        dir = steps_dir.display(),
        p = s.parallel,
        last = s.n_steps - 1
    );
    let data = scratch.join("overhead-data");
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..s.repeats {
        ours.push(time(&mut tandem_run(tandem, &repo, &data, s.parallel))?);
        theirs.push(time(Command::new("sh").arg("-c").arg(&script))?);
    }
    Ok((median(ours), median(theirs)))
}

/// (b) Files per second for `tandem validate` over many copies of the corpus.
fn validate_throughput(tandem: &Path, scratch: &Path, s: &Settings) -> Result<(usize, Duration)> {
    let corpus = PathBuf::from("../shared/corpus/workflows");
    if !corpus.is_dir() {
        bail!("the corpus is missing at {}", corpus.display());
    }
    let dir = scratch.join("validate");
    std::fs::create_dir_all(&dir)?;
    let copies = if s.repeats == 1 { 5 } else { 40 };
    let mut n_files = 0;
    for copy in 0..copies {
        for entry in std::fs::read_dir(&corpus)? {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            std::fs::copy(&path, dir.join(format!("{copy}-{name}")))?;
            n_files += 1;
        }
    }
    let mut samples = Vec::new();
    for _ in 0..s.repeats {
        let started = Instant::now();
        // Exit code 1 is expected: corpus files use actions Tandem does not provide.
        let status = Command::new(tandem).arg("validate").arg(&dir).stdout(Stdio::null()).status()?;
        if status.code() != Some(1) && status.code() != Some(0) {
            bail!("validate failed with {status}");
        }
        samples.push(started.elapsed());
    }
    Ok((n_files, median(samples)))
}

/// The variables a step of a local run gets besides its environment (`engine::step` sets them).
const STEP_VARIABLES: [&str; 34] = [
    "CI",
    "TANDEM",
    "GITHUB_ACTIONS",
    "GITHUB_WORKSPACE",
    "GITHUB_SHA",
    "GITHUB_REF",
    "GITHUB_REF_NAME",
    "GITHUB_REF_TYPE",
    "GITHUB_HEAD_REF",
    "GITHUB_BASE_REF",
    "GITHUB_REPOSITORY",
    "GITHUB_REPOSITORY_OWNER",
    "GITHUB_RUN_ID",
    "GITHUB_RUN_NUMBER",
    "GITHUB_RUN_ATTEMPT",
    "GITHUB_JOB",
    "GITHUB_WORKFLOW",
    "GITHUB_WORKFLOW_REF",
    "GITHUB_EVENT_NAME",
    "GITHUB_EVENT_PATH",
    "GITHUB_ACTOR",
    "GITHUB_ACTION",
    "GITHUB_OUTPUT",
    "GITHUB_ENV",
    "GITHUB_PATH",
    "GITHUB_STEP_SUMMARY",
    "GITHUB_STATE",
    "RUNNER_OS",
    "RUNNER_ARCH",
    "RUNNER_NAME",
    "RUNNER_ENVIRONMENT",
    "RUNNER_TEMP",
    "RUNNER_TOOL_CACHE",
    "RUNNER_WORKSPACE",
];

/// Median wall times of the wide DAG through Tandem, plain make, and make running its recipes
/// as a step runs (a script file, the step's variables).
struct WideDag {
    tandem: Duration,
    make: Duration,
    make_as_steps: Duration,
}

/// (c) A fan-out / fan-in graph through Tandem and through make with the same recipes.
fn wide_dag(tandem: &Path, scratch: &Path, s: &Settings) -> Result<WideDag> {
    let mut workflow =
        String::from("on: push\njobs:\n  root:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo root\n");
    let mut makefile = String::from(".PHONY: all root sink");
    for i in 0..s.dag_width {
        write!(makefile, " m{i}")?;
    }
    makefile.push_str("\nall: sink\nroot:\n\t@bash -e -c 'echo root'\n");
    let mut middles = Vec::new();
    for i in 0..s.dag_width {
        writeln!(
            workflow,
            "  m{i}:\n    needs: root\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo middle {i}"
        )?;
        writeln!(makefile, "m{i}: root\n\t@bash -e -c 'echo middle {i}'")?;
        middles.push(format!("m{i}"));
    }
    writeln!(
        workflow,
        "  sink:\n    needs: [{}]\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo sink",
        middles.join(", ")
    )?;
    writeln!(makefile, "sink: {}\n\t@bash -e -c 'echo sink'", middles.join(" "))?;
    let repo = scratch.join("dag");
    git_repo(&repo, &workflow)?;
    std::fs::write(scratch.join("Makefile"), &makefile)?;
    // The diagnostic: the same graph, each recipe a script file run with `bash -e FILE` and the
    // step's variables exported (values as long as a local run's), as a step of a run is.
    let as_steps = scratch.join("as-steps");
    std::fs::create_dir_all(as_steps.join("scripts"))?;
    let mut steps_makefile = String::new();
    for name in STEP_VARIABLES {
        writeln!(steps_makefile, "export {name}={}", scratch.join("dag-data/runs/1/slots/1").join(name).display())?;
    }
    for (n, line) in makefile.lines().enumerate() {
        match line.strip_prefix("\t@bash -e -c '").and_then(|l| l.strip_suffix('\'')) {
            Some(command) => {
                std::fs::write(as_steps.join(format!("scripts/{n}.sh")), format!("{command}\n"))?;
                writeln!(steps_makefile, "\t@bash -e scripts/{n}.sh")?;
            }
            None => writeln!(steps_makefile, "{line}")?,
        }
    }
    std::fs::write(as_steps.join("Makefile"), steps_makefile)?;
    let data = scratch.join("dag-data");
    let mut samples: [Vec<Duration>; 3] = Default::default();
    // A run of this graph takes a tenth of a second, so it is timed three times as often as the
    // others; and who goes first rotates, as the first of a round measured faster here.
    for repeat in 0..s.repeats * 3 {
        for turn in 0..3 {
            let contender = (repeat + turn) % 3;
            let mut command = match contender {
                0 => tandem_run(tandem, &repo, &data, s.parallel),
                1 => make_in(scratch, s.parallel),
                _ => make_in(&as_steps, s.parallel),
            };
            samples[contender].push(time(&mut command)?);
        }
    }
    let [tandem, make, make_as_steps] = samples.map(median);
    Ok(WideDag { tandem, make, make_as_steps })
}

fn make_in(dir: &Path, parallel: usize) -> Command {
    let mut make = Command::new("make");
    make.arg("-s").arg(format!("-j{parallel}")).arg("-C").arg(dir);
    make
}
