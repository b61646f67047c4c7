//! `cargo xtask bench security`: what masking costs. The same run — one step printing 1,000,000
//! lines — with ten secrets to mask (each in its six forms: plain, base64 three ways, URL, JSON)
//! and with none, side by side on this machine.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

pub fn run(args: &[String]) -> Result<()> {
    let repeats = if args.iter().any(|a| a == "--quick") { 3 } else { 7 };
    crate::run(Command::new("cargo").args(["build", "--release", "-p", "tandem", "--quiet"]))?;
    let tandem = Path::new("target/release/tandem").canonicalize()?;
    let scratch = std::env::temp_dir().join(format!("tandem-bench-security-{}", std::process::id()));
    let repo = scratch.join("repo");
    std::fs::create_dir_all(repo.join(".github/workflows"))?;
    // Lines that look like a build log, none of them a secret.
    let workflow = "on: push\njobs:\n  log:\n    runs-on: ubuntu-latest\n    steps:\n      - run: seq 1 1000000 | sed 's/^/compiling module number /'\n";
    std::fs::write(repo.join(".github/workflows/bench.yml"), workflow)?;
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "-A"],
        &["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "bench"],
    ] {
        crate::run(Command::new("git").arg("-C").arg(&repo).args(args))?;
    }
    let time = |secrets: usize| -> Result<Duration> {
        let mut command = Command::new(&tandem);
        command.args(["run", "--format", "json"]).current_dir(&repo).env("TANDEM_DATA", scratch.join("data"));
        for i in 0..secrets {
            command.arg("--secret").arg(format!("S{i}"));
            command.env(format!("S{i}"), format!("s3cret-value-{i}-{}", "x".repeat(20)));
        }
        let started = Instant::now();
        let status = command.stdout(Stdio::null()).stderr(Stdio::null()).status()?;
        if !status.success() {
            bail!("tandem run failed");
        }
        Ok(started.elapsed())
    };
    let (mut masked, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..repeats {
        plain.push(time(0)?);
        masked.push(time(10)?);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let (plain, masked) = (median(plain), median(masked));
    println!("Median of {repeats} runs on this machine.\n");
    println!("| benchmark | with 10 secrets | with none | cost |");
    println!("|---|---|---|---|");
    println!(
        "| a step printing 1,000,000 lines, every line checked against each secret's forms | {:.2} s | {:.2} s | {:+.1}% (target < 5%) |",
        masked.as_secs_f64(),
        plain.as_secs_f64(),
        (masked.as_secs_f64() / plain.as_secs_f64() - 1.0) * 100.0
    );
    Ok(())
}
