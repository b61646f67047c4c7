//! Container benchmarks, side by side with the Docker CLI on the same engine and image:
//! (a) a containerized job's steps against `docker run --rm` of the same commands;
//! (b) a job with two service containers (health-checked): job start → first step.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const REPEATS: usize = 5;

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn timed(command: &mut Command) -> Result<f64> {
    let started = Instant::now();
    let output = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .with_context(|| format!("cannot start {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stdout).lines().rev().take(5).collect::<Vec<_>>().join("\n")
        );
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

/// Imports `tandem-bench/busybox:1` and `tandem-bench/web:1` from the machine's busybox-static.
fn images(scratch: &Path) -> Result<()> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("install busybox-static")?;
    let root = scratch.join("rootfs");
    for dir in ["bin", "tmp", "www"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    std::fs::write(root.join("www/index.html"), "ok\n")?;
    std::fs::copy(busybox, root.join("bin/busybox"))?;
    let applets = Command::new(busybox).arg("--list").output()?;
    for applet in String::from_utf8_lossy(&applets.stdout).lines().filter(|a| *a != "busybox") {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
    }
    for (tag, changes) in [
        ("tandem-bench/busybox:1", " -c 'ENV PATH=/bin'"),
        ("tandem-bench/web:1", r#" -c 'ENV PATH=/bin' -c 'CMD ["httpd","-f","-p","80","-h","/www"]'"#),
    ] {
        crate::run(
            Command::new("sh")
                .arg("-c")
                .arg(format!("tar -C {} -c . | docker import{changes} - {tag} >/dev/null", root.display())),
        )?;
    }
    Ok(())
}

fn repo(dir: &Path, workflow: &str) -> Result<()> {
    std::fs::create_dir_all(dir.join(".tandem/workflows"))?;
    std::fs::write(dir.join(".tandem/workflows/bench.yml"), workflow)?;
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "-A"],
        &["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "bench"],
    ] {
        crate::run(Command::new("git").arg("-C").arg(dir).args(args))?;
    }
    Ok(())
}

fn tandem(tandem: &Path, dir: &Path, data: &Path) -> Command {
    let mut command = Command::new(tandem);
    command
        .args(["run", "bench", "--format", "json"])
        .current_dir(dir)
        .env("TANDEM_DATA", data)
        .env("TANDEM_NO_LIVE", "1");
    command
}

pub fn run(_args: &[String]) -> Result<()> {
    crate::run(Command::new("cargo").args(["build", "--release", "-p", "tandem", "--quiet"]))?;
    let bin: PathBuf = Path::new("target/release/tandem").canonicalize()?;
    let scratch = std::env::temp_dir().join(format!("tandem-bench-containers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    // Like the tests, the benchmark starts the engine when none answers.
    crate::ensure_docker_engine()?;
    images(&scratch)?;
    let data = scratch.join("data");
    let mut report = String::new();
    writeln!(report, "| container benchmark (median of {REPEATS}) | Tandem | baseline | ratio |")?;
    writeln!(report, "|---|---|---|---|")?;

    for n_steps in [1usize, 10] {
        let mut workflow = String::from(
            "on: push\njobs:\n  steps:\n    runs-on: ubuntu-latest\n    container: tandem-bench/busybox:1\n    steps:\n",
        );
        for i in 0..n_steps {
            writeln!(workflow, "      - run: echo step {i}")?;
        }
        let dir = scratch.join(format!("steps-{n_steps}"));
        repo(&dir, &workflow)?;
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..REPEATS {
            ours.push(timed(&mut tandem(&bin, &dir, &data))?);
            let script = (0..n_steps)
                .map(|i| format!("docker run --rm tandem-bench/busybox:1 sh -e -c 'echo step {i}'"))
                .collect::<Vec<_>>()
                .join(" && ");
            theirs.push(timed(Command::new("sh").arg("-c").arg(script))?);
        }
        let (ours, theirs) = (median(ours), median(theirs));
        writeln!(
            report,
            "| (a) container job with {n_steps} step(s), whole `tandem run` | {ours:.0} ms | {n_steps} × `docker run --rm` of the same command: {theirs:.0} ms | **{:.2}×** |",
            ours / theirs
        )?;
    }

    let services = "on: push\njobs:\n  services:\n    runs-on: ubuntu-latest\n    container: tandem-bench/busybox:1\n    services:\n      web:\n        image: tandem-bench/web:1\n        options: --health-cmd \"wget -q -O- http://127.0.0.1/index.html\" --health-interval 100ms --health-retries 100\n      cache:\n        image: tandem-bench/web:1\n        options: --health-cmd \"wget -q -O- http://127.0.0.1/index.html\" --health-interval 100ms --health-retries 100\n    steps:\n      - run: wget -q -O- http://web/index.html && wget -q -O- http://cache/index.html\n";
    let plain = "on: push\njobs:\n  services:\n    runs-on: ubuntu-latest\n    container: tandem-bench/busybox:1\n    steps:\n      - run: echo first\n";
    let mut gaps = Vec::new();
    for (name, workflow) in [("with", services), ("without", plain)] {
        let dir = scratch.join(format!("services-{name}"));
        repo(&dir, workflow)?;
        let mut samples = Vec::new();
        for _ in 0..REPEATS {
            let output = tandem(&bin, &dir, &data).stdout(Stdio::piped()).stderr(Stdio::null()).output()?;
            let json: serde_json::Value = serde_json::from_slice(&output.stdout).context("no JSON report")?;
            let job = &json["runs"][0]["jobs"][0];
            if job["status"] != "success" {
                bail!("the services job failed: {job}");
            }
            let start = job["started_at_ms"].as_f64().unwrap_or(0.0);
            let first = job["steps"][0]["started_at_ms"].as_f64().unwrap_or(0.0);
            samples.push(first - start);
        }
        gaps.push(median(samples));
    }
    writeln!(
        report,
        "| (b) job start → first step, two health-checked services + job container | {:.0} ms | the same job without services: {:.0} ms | — |",
        gaps[0], gaps[1]
    )?;
    let _ = std::fs::remove_dir_all(&scratch);
    std::thread::sleep(Duration::from_millis(10));
    println!("{report}");
    Ok(())
}
