//! Project tasks: `cargo xtask test` (everything CI runs) and `cargo xtask bench` (benchmarks
//! against baselines run side by side on this machine).

mod bench;
mod bench_actions;
mod bench_alerting;
mod bench_canary;
mod bench_containers;
mod bench_deploy;
mod bench_history;
mod bench_monitoring;
mod bench_proxy;
mod bench_queue;
mod bench_security;
mod bench_server;
mod tidy;

use std::process::Command;

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize()?;
    std::env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("bench") if args.get(1).map(String::as_str) == Some("server") => bench_server::run(&args[2..]),
        Some("bench") if args.get(1).map(String::as_str) == Some("containers") => bench_containers::run(&args[2..]),
        Some("bench") if args.get(1).map(String::as_str) == Some("canary") => bench_canary::run(&args[2..]),
        Some("bench") if args.get(1).map(String::as_str) == Some("proxy") => bench_proxy::run(&args[2..]),
        Some("bench") if args.get(1).map(String::as_str) == Some("monitoring") => bench_monitoring::run(&args[2..]),
        Some("bench") if args.get(1).map(String::as_str) == Some("deploy") => bench_deploy::run(&args[2..]),
        Some("bench") if args.get(1).map(String::as_str) == Some("alerting") => bench_alerting::run(&args[2..]),
        Some("bench") if args.get(1).map(String::as_str) == Some("actions") => bench_actions::run(&args[2..]),
        Some("bench") if args.get(1).map(String::as_str) == Some("security") => bench_security::run(&args[2..]),
        Some("bench") if args.get(1).map(String::as_str) == Some("queue") => bench_queue::run(&args[2..]),
        Some("bench") => bench::run(&args[1..]),
        Some("self-check") => self_check(),
        Some("tidy") => {
            let problems = tidy::check(std::path::Path::new("."))?;
            for problem in &problems {
                println!("{problem}");
            }
            if problems.is_empty() { Ok(()) } else { bail!("tidy found {} problem(s)", problems.len()) }
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n  test        install what the tests need, then run every test (what CI runs)\n  bench       run the engine benchmarks and print a Markdown table (add --quick for a short run)\n  bench server [--peer]  server latency and webhook load; --peer also runs Buildbot side by side\n  bench containers  container steps against `docker run`, services to first step\n  bench canary      canary analysis: time to rollback, false rollbacks (simulation)\n  bench proxy       proxy overhead: direct, nginx and tandem proxy under wrk\n  bench deploy [--rounds=N]  real deployments through the server: time to roll back a bad release, to promote a good one\n  bench alerting    alert routing beside Alertmanager: page latency, a storm of 10,000 alerts\n  bench monitoring [ingestion|detection|history] [--targets=N]  beside Prometheus, Alertmanager and blackbox_exporter\n  tidy        the house rules: no todo, dbg or ignore markers, a header line in every file, source files under 800 lines\n  self-check  run Tandem's own workflow (.tandem/workflows/ci.yml) with `tandem run`"
            );
            bail!("no task given")
        }
    }
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Runs a command, failing with its name when it fails.
pub fn run(command: &mut Command) -> Result<()> {
    let status = command.status().with_context(|| format!("cannot start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program} >/dev/null 2>&1"))
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes sure the programs the tests use are installed: installs missing ones with apt-get where
/// possible (idempotent), and fails under CI when something cannot be had.
fn ensure_prerequisites() -> Result<()> {
    let needed = [
        ("git", "git"),
        ("bash", "bash"),
        ("python3", "python3"),
        ("make", "make"),
        ("dockerd", "docker.io"),
        ("busybox", "busybox-static"),
        ("docker-registry", "docker-registry"),
        ("prometheus", "prometheus"),
        ("promtool", "prometheus"),
        ("aiosmtpd", "python3-aiosmtpd"),
        ("chromium", "chromium"),
        ("chromedriver", "chromium-driver"),
        ("node", "nodejs"),
        ("npm", "npm"),
        ("zstd", "zstd"),
        ("openssl", "openssl"),
    ];
    let missing: Vec<(&str, &str)> = needed.iter().copied().filter(|(program, _)| !have(program)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages: Vec<&str> = missing.iter().map(|(_, package)| *package).collect();
    if have("apt-get") {
        eprintln!("installing {}", packages.join(" "));
        run(Command::new("apt-get").args(["-o", "DPkg::Lock::Timeout=600", "update", "-q"]))?;
        // Waits for another apt or dpkg to finish instead of failing at once.
        run(Command::new("apt-get").args(["-o", "DPkg::Lock::Timeout=600", "install", "-y", "-q"]).args(&packages))?;
    }
    let still: Vec<&str> = missing.iter().map(|(program, _)| *program).filter(|program| !have(program)).collect();
    if !still.is_empty() {
        bail!(
            "the tests need {} and they could not be installed; install the Debian packages {} (as root: apt-get install -y …) and run `cargo xtask test` again",
            still.join(", "),
            packages.join(" ")
        );
    }
    Ok(())
}

/// Starts `dockerd` when no engine answers, and waits (bounded) until it does.
pub(crate) fn ensure_docker_engine() -> Result<()> {
    let answers = || {
        Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if answers() {
        return Ok(());
    }
    if have("dockerd") {
        eprintln!("starting dockerd (log: /tmp/tandem-dockerd.log)");
        let log = std::fs::File::create("/tmp/tandem-dockerd.log")?;
        Command::new("dockerd")
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(std::process::Stdio::null())
            .spawn()
            .context("cannot start dockerd")?;
        for _ in 0..60 {
            if answers() {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
    bail!(
        "no Docker engine answers and dockerd could not be started (see /tmp/tandem-dockerd.log); the container tests need one: start dockerd as root, or point DOCKER_HOST at an engine"
    )
}

/// Makes the engine a single-node swarm (the swarm deploy target's tests need one).
fn ensure_swarm() -> Result<()> {
    let state = Command::new("docker").args(["info", "--format", "{{.Swarm.LocalNodeState}}"]).output();
    let Ok(state) = state else { return Ok(()) };
    if String::from_utf8_lossy(&state.stdout).trim() == "active" {
        return Ok(());
    }
    let init = Command::new("docker").args(["swarm", "init", "--advertise-addr", "127.0.0.1"]).output()?;
    if !init.status.success() {
        bail!("cannot make the Docker engine a swarm: {}", String::from_utf8_lossy(&init.stderr).trim());
    }
    Ok(())
}

/// axe-core, the accessibility checker the browser tests inject into every page: fetched once
/// from the npm registry (no npm needed) into `target/axe-core/`, checked against its integrity.
const AXE_VERSION: &str = "4.14.1";
const AXE_SHA512: &str = "FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ==";

fn ensure_axe() -> Result<()> {
    let dir = std::path::Path::new("target/axe-core");
    if dir.join("axe.min.js").is_file() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let tarball = dir.join("axe-core.tgz");
    let url = format!("https://registry.npmjs.org/axe-core/-/axe-core-{AXE_VERSION}.tgz");
    eprintln!("fetching {url}");
    run(Command::new("curl").args(["-sfL", "--retry", "3", "-o"]).arg(&tarball).arg(&url))
        .context("cannot fetch axe-core from the npm registry")?;
    let digest = Command::new("sh")
        .arg("-c")
        .arg(format!("openssl dgst -sha512 -binary {} | base64 -w0", tarball.display()))
        .output()?;
    if String::from_utf8_lossy(&digest.stdout).trim() != AXE_SHA512 {
        let _ = std::fs::remove_file(&tarball);
        bail!("axe-core {AXE_VERSION} from the npm registry does not match its published integrity");
    }
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(dir)
        .args(["--strip-components=1", "package/axe.min.js"]))?;
    Ok(())
}

/// The client library `actions/upload-artifact@v4` and `download-artifact@v4` are built on, from
/// npm into `target/npm/`: the artifact service's test runs it for real.
const ARTIFACT_CLIENT: &str = "@actions/artifact@2.3.2";
/// A real OpenID Connect provider for the sign-in test.
const OIDC_PROVIDER: &str = "oidc-provider@9.13.3";

fn ensure_artifact_client() -> Result<()> {
    let dir = std::path::Path::new("target/npm");
    for (package, marker) in [
        (ARTIFACT_CLIENT, "node_modules/@actions/artifact/package.json"),
        (OIDC_PROVIDER, "node_modules/oidc-provider/package.json"),
    ] {
        if dir.join(marker).is_file() {
            continue;
        }
        std::fs::create_dir_all(dir)?;
        eprintln!("fetching {package} from the npm registry");
        run(Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(dir)
            .arg(package))
        .with_context(|| format!("cannot install {package} from the npm registry"))?;
    }
    Ok(())
}

fn test() -> Result<()> {
    ensure_prerequisites()?;
    ensure_axe()?;
    ensure_artifact_client()?;
    ensure_docker_engine()?;
    ensure_swarm()?;
    let corpus = std::path::Path::new("../shared/corpus/workflows").is_dir();
    if ci() && !corpus {
        bail!("the shared corpus is missing at ../shared/corpus; CI lays it beside the clone");
    }
    eprintln!("== cargo fmt --check");
    run(Command::new("cargo").args(["fmt", "--all", "--check"]))
        .context("the code is not formatted: run `cargo fmt --all`")?;
    eprintln!("== tidy");
    let problems = tidy::check(std::path::Path::new("."))?;
    if !problems.is_empty() {
        bail!("tidy found {} problem(s):\n  {}", problems.len(), problems.join("\n  "));
    }
    report_free_space();
    eprintln!("== cargo clippy -D warnings");
    run(Command::new("cargo")
        .args(["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"])
        .env("CARGO_INCREMENTAL", "0"))?;
    eprintln!("== cargo test");
    let mut command = Command::new("cargo");
    // A whole-workspace test build gains nothing from incremental caches, which would
    // double the space `target/` takes (about 1.6 GiB of 3.5 GiB).
    command.args(["test", "--workspace", "--all-targets", "--locked"]).env("CARGO_INCREMENTAL", "0");
    if ci() {
        // Under CI the shared corpus is part of the test input: its absence is a failure.
        command.env("TANDEM_REQUIRE_CORPUS", "1");
    }
    run(&mut command)?;
    if !corpus {
        eprintln!(
            "note: {} corpus test(s) skipped their real-world cases: ../shared/corpus is not beside this clone (under CI=true that fails the run)",
            tidy::corpus_tests(std::path::Path::new("."))?
        );
    }
    Ok(())
}

fn self_check() -> Result<()> {
    run(Command::new("cargo").args(["build", "--release", "-p", "tandem"]))?;
    run(Command::new("target/release/tandem").args(["run", "ci", "--worktree"]))
}

/// Says how much space the file system holding `target/` has left, and warns when a clean
/// build and test run (about 2.5 GiB of artifacts, plus the tests' temporary files and images)
/// may not fit: running out mid-link shows up as a linker crash, not as "disk full".
fn report_free_space() {
    let Ok(output) = Command::new("df").args(["-Pk", "."]).output() else { return };
    let text = String::from_utf8_lossy(&output.stdout);
    let Some(free_kib) = text.lines().nth(1).and_then(|line| line.split_whitespace().nth(3)?.parse::<u64>().ok())
    else {
        return;
    };
    let free_gib = free_kib as f64 / (1024.0 * 1024.0);
    eprintln!("== {free_gib:.1} GiB free for target/ and the tests");
    if free_gib < 4.0 {
        eprintln!(
            "warning: a clean build and test run needs about 4 GiB; free some space (`cargo clean` in other checkouts, `docker system prune`) if the build fails with \"No space left on device\" or a linker bus error"
        );
    }
}
