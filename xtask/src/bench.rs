//! Benchmarks, each run side by side with its baseline on this machine:
//! (a) engine overhead against a shell script running the same processes with the same parallelism;
//! (b) `tandem validate` throughput over the real-world corpus;
//! (c) a wide DAG against `make -j` with the same graph.

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
    let (ours, theirs) = wide_dag(&tandem, &scratch, &settings)?;
    writeln!(
        report,
        "| (c) wide DAG: 1 → {} → 1 jobs, {} at a time ({} runs each) | {} | `make -j{}`, same graph and recipes: {} | **{:.2}×** |",
        settings.dag_width,
        settings.parallel,
        settings.repeats * 3,
        secs(ours),
        settings.parallel,
        secs(theirs),
        ratio(ours, theirs)
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

/// (c) A fan-out / fan-in graph through Tandem and through make with the same recipes.
fn wide_dag(tandem: &Path, scratch: &Path, s: &Settings) -> Result<(Duration, Duration)> {
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
    std::fs::write(scratch.join("Makefile"), makefile)?;
    let data = scratch.join("dag-data");
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    // A run of this graph takes a tenth of a second, so it is timed three times as often as the
    // others; and who goes first alternates, as the first of a pair measured faster here.
    for repeat in 0..s.repeats * 3 {
        let mut make = Command::new("make");
        make.arg("-s").arg(format!("-j{}", s.parallel)).arg("-C").arg(scratch);
        if repeat % 2 == 0 {
            ours.push(time(&mut tandem_run(tandem, &repo, &data, s.parallel))?);
            theirs.push(time(&mut make)?);
        } else {
            theirs.push(time(&mut make)?);
            ours.push(time(&mut tandem_run(tandem, &repo, &data, s.parallel))?);
        }
    }
    Ok((median(ours), median(theirs)))
}
