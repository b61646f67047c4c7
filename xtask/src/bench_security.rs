//! `cargo xtask bench security`, side by side on this machine: (a) what masking costs — the
//! same run, one step printing 1,000,000 lines, with ten secrets to mask (each in its six forms)
//! and with none; (b) secret scanning — `tandem scan secrets` with gitleaks' default rules against
//! `detect-secrets scan` (PyPI) over the same repository: the sources of the first 400 crates in
//! the local cargo registry, about 200 MB.

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
    let (plain, masked) = (median(plain), median(masked));
    let scanning = scan_speeds(&tandem, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    println!("Median of {repeats} runs on this machine.\n");
    println!("| benchmark | with 10 secrets | with none | cost |");
    println!("|---|---|---|---|");
    println!(
        "| a step printing 1,000,000 lines, every line checked against each secret's forms | {:.2} s | {:.2} s | {:+.1}% (target < 5%) |",
        masked.as_secs_f64(),
        plain.as_secs_f64(),
        (masked.as_secs_f64() / plain.as_secs_f64() - 1.0) * 100.0
    );
    match scanning {
        Ok((mb, ours, theirs)) => println!(
            "| (b) secret scanning of {mb:.0} MB of tracked files | {:.1} MB/s (`tandem scan secrets`, 222 gitleaks rules) | {:.1} MB/s (`detect-secrets scan`) | {:.1}× faster (target ≥ 2×) |",
            mb / ours.as_secs_f64(),
            mb / theirs.as_secs_f64(),
            theirs.as_secs_f64() / ours.as_secs_f64()
        ),
        Err(error) => println!("| (b) secret scanning | not measured: {error} | | |"),
    }
    Ok(())
}

/// (MB scanned, Tandem's time, detect-secrets' time) over the same git repository.
fn scan_speeds(tandem: &Path, scratch: &Path) -> Result<(f64, Duration, Duration)> {
    let rules = Path::new("../shared/corpus/secrets/gitleaks__gitleaks__config_gitleaks.toml").canonicalize()?;
    let home = std::env::var("HOME").unwrap_or_default();
    let registry = std::fs::read_dir(Path::new(&home).join(".cargo/registry/src"))?.flatten().next().map(|e| e.path());
    let Some(registry) = registry else { bail!("no cargo registry sources to scan") };
    let repo = scratch.join("scanned");
    std::fs::create_dir_all(&repo)?;
    let mut crates: Vec<_> = std::fs::read_dir(&registry)?.flatten().map(|e| e.path()).collect();
    crates.sort();
    for krate in crates.iter().take(400) {
        crate::run(Command::new("cp").arg("-r").arg(krate).arg(&repo))?;
    }
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "-A"],
        &["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "scan"],
    ] {
        crate::run(Command::new("git").arg("-C").arg(&repo).args(args).stdout(Stdio::null()))?;
    }
    let listed = Command::new("git").arg("-C").arg(&repo).args(["ls-files", "-z"]).output()?;
    let mut bytes = 0u64;
    for name in listed.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        bytes += std::fs::metadata(repo.join(String::from_utf8_lossy(name).as_ref())).map(|m| m.len()).unwrap_or(0);
    }
    let timed = |command: &mut Command| -> Result<(Duration, std::process::ExitStatus)> {
        let started = Instant::now();
        let status = command.current_dir(&repo).stdout(Stdio::null()).stderr(Stdio::null()).status()?;
        Ok((started.elapsed(), status))
    };
    let (ours, status) = timed(Command::new(tandem).args(["scan", "secrets", "--config"]).arg(&rules))?;
    // Exit 1 says secrets were found (the crates' test keys); anything else is a failure.
    if !matches!(status.code(), Some(0 | 1)) {
        bail!("`tandem scan secrets` failed ({status})");
    }
    let installed =
        Command::new("detect-secrets").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if !installed.is_ok_and(|s| s.success()) {
        bail!("detect-secrets is not installed (pip install detect-secrets)");
    }
    // detect-secrets may take very long: it gets ten minutes, and a time-out is reported as such.
    let (theirs, status) =
        timed(Command::new("timeout").args([&DETECT_SECRETS_LIMIT.as_secs().to_string(), "detect-secrets", "scan"]))?;
    match status.code() {
        Some(0) => {}
        Some(124) => bail!(
            "detect-secrets had not finished after {} s; `tandem scan secrets` took {:.1} s ({:.1} MB/s)",
            DETECT_SECRETS_LIMIT.as_secs(),
            ours.as_secs_f64(),
            bytes as f64 / 1e6 / ours.as_secs_f64()
        ),
        _ => bail!("`detect-secrets scan` failed ({status})"),
    }
    Ok((bytes as f64 / 1e6, ours, theirs))
}

/// How long detect-secrets gets: it has taken longer than seven minutes over this repository.
const DETECT_SECRETS_LIMIT: Duration = Duration::from_secs(600);
