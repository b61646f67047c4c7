//! `cargo xtask bench actions`: what running actions as themselves costs, side by side on this
//! machine:
//! (a) a job of JavaScript and composite action steps (fetched once, then read from the cache by
//!     commit) against the same job written as the equivalent `run:` steps — the machinery's cost
//!     per action step;
//! (b) a 100 MB cache hit of the real `actions/cache` through Tandem's cache service against
//!     `tar -x` of the same files.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=b", "-c", "user.email=b@b", "-c", "init.defaultBranch=main"])
        .args(args)
        .output()
        .context("git")?;
    if !output.status.success() {
        bail!("git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn repo(dir: &Path, files: &[(&str, &str)]) -> Result<String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap())?;
        std::fs::write(path, text)?;
    }
    git(dir, &["init", "-q"])?;
    git(dir, &["add", "-A"])?;
    git(dir, &["commit", "-qm", "bench"])?;
    git(dir, &["rev-parse", "HEAD"])
}

/// `tandem run --format json` in `dir`; the report.
fn tandem_run(tandem: &Path, dir: &Path, data: &Path, extra: &[&str]) -> Result<(Duration, serde_json::Value)> {
    let started = Instant::now();
    let output = Command::new(tandem)
        .args(["run", "--format", "json"])
        .args(extra)
        .current_dir(dir)
        .env("TANDEM_DATA", data)
        .stderr(Stdio::null())
        .output()?;
    let elapsed = started.elapsed();
    if !output.status.success() {
        bail!("tandem run failed in {}: {}", dir.display(), String::from_utf8_lossy(&output.stdout));
    }
    Ok((elapsed, serde_json::from_slice(&output.stdout)?))
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

pub fn run(args: &[String]) -> Result<()> {
    let repeats = if args.iter().any(|a| a == "--quick") { 3 } else { 9 };
    crate::run(Command::new("cargo").args(["build", "--release", "-p", "tandem", "--quiet"]))?;
    let tandem = Path::new("target/release/tandem").canonicalize()?;
    let scratch = std::env::temp_dir().join(format!("tandem-bench-actions-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let result = measure(&tandem, &scratch, repeats);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn measure(tandem: &Path, scratch: &Path, repeats: usize) -> Result<()> {
    // (a) An action source with a JavaScript action and a composite one, pinned by commit.
    let source = scratch.join("source");
    let hello = source.join("bench/hello");
    let commit = repo(
        &hello,
        &[
            (
                "action.yml",
                "name: hello\ninputs:\n  who:\n    default: world\noutputs:\n  said: {}\nruns:\n  using: node20\n  main: index.js\n",
            ),
            (
                "index.js",
                "const fs = require('fs');\nconsole.log(`hello ${process.env.INPUT_WHO}`);\nfs.appendFileSync(process.env.GITHUB_OUTPUT, `said=${process.env.INPUT_WHO}\\n`);\n",
            ),
            (
                "composite/action.yml",
                "name: comp\ninputs:\n  who:\n    default: world\nruns:\n  using: composite\n  steps:\n    - shell: bash\n      run: echo \"hi ${{ inputs.who }}\"\n",
            ),
        ],
    )?;
    let n = 10;
    let mut with_actions = String::from("on: push\njobs:\n  bench:\n    runs-on: ubuntu-latest\n    steps:\n");
    let mut with_runs = with_actions.clone();
    let data = scratch.join("data");
    // The equivalent of the JavaScript action: node on the same file, with the same input.
    let cached = data.join(format!("actions/trees/bench/hello/{commit}"));
    for i in 0..n {
        with_actions.push_str(&format!("      - uses: bench/hello@{commit}\n        with:\n          who: w{i}\n"));
        with_actions
            .push_str(&format!("      - uses: bench/hello/composite@{commit}\n        with:\n          who: w{i}\n"));
        with_runs.push_str(&format!(
            "      - run: node {}/index.js\n        env:\n          INPUT_WHO: w{i}\n",
            cached.display()
        ));
        with_runs.push_str(&format!("      - shell: bash\n        run: echo \"hi w{i}\"\n"));
    }
    let actions_repo = scratch.join("actions-job");
    let runs_repo = scratch.join("runs-job");
    repo(&actions_repo, &[(".github/workflows/bench.yml", &with_actions)])?;
    repo(&runs_repo, &[(".github/workflows/bench.yml", &with_runs)])?;
    let source_arg = source.to_string_lossy().into_owned();
    let data_arg = ["--action-source", source_arg.as_str()];
    // The first run fetches the actions; the timed ones read them by commit.
    tandem_run(tandem, &actions_repo, &data, &data_arg)?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..repeats {
        ours.push(tandem_run(tandem, &actions_repo, &data, &data_arg)?.0);
        theirs.push(tandem_run(tandem, &runs_repo, &data, &data_arg)?.0);
    }
    let (ours, theirs) = (median(ours), median(theirs));
    let per_step = (ours.as_secs_f64() - theirs.as_secs_f64()) / (2 * n) as f64 * 1000.0;

    // (b) 100 MB in 100 files of pseudo-random bytes (incompressible, the hard case for zstd).
    let cache_repo = scratch.join("cache-job");
    let cache_commit = {
        let bundle = PathBuf::from("../shared/corpus/actions/actions__cache.bundle");
        let target = source.join("actions/cache.git");
        crate::run(Command::new("git").arg("clone").arg("-q").arg("--bare").arg(&bundle).arg(&target))?;
        git(&target, &["rev-parse", "v4.2.3^{commit}"])?
    };
    let workflow = format!(
        "on: push\njobs:\n  bench:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/cache@{cache_commit}\n        with:\n          path: /tmp/tandem-bench-deps\n          key: deps-1\n      - run: test -f /tmp/tandem-bench-deps/f99\n"
    );
    repo(&cache_repo, &[(".github/workflows/bench.yml", &workflow)])?;
    let deps = Path::new("/tmp/tandem-bench-deps");
    let make_deps = || -> Result<()> {
        let _ = std::fs::remove_dir_all(deps);
        std::fs::create_dir_all(deps)?;
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..100 {
            let mut bytes = vec![0u8; 1 << 20];
            for chunk in bytes.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
            }
            std::fs::write(deps.join(format!("f{i}")), bytes)?;
        }
        Ok(())
    };
    make_deps()?;
    let cache_args = ["--no-builtin-actions", "--action-source", source_arg.as_str()];
    // The first run misses and saves; each timed one restores into an emptied folder.
    tandem_run(tandem, &cache_repo, &data, &cache_args)?;
    let plain = scratch.join("plain.tar");
    crate::run(Command::new("tar").arg("-cf").arg(&plain).arg("-C").arg("/tmp").arg("tandem-bench-deps"))?;
    let (mut hits, mut tars) = (Vec::new(), Vec::new());
    for _ in 0..repeats {
        std::fs::remove_dir_all(deps)?;
        let (_, report) = tandem_run(tandem, &cache_repo, &data, &cache_args)?;
        let step = &report["runs"][0]["jobs"][0]["steps"][0];
        hits.push(Duration::from_secs_f64(step["duration"].as_f64().context("the cache step's duration")?));
        std::fs::remove_dir_all(deps)?;
        let started = Instant::now();
        crate::run(Command::new("tar").arg("-xf").arg(&plain).arg("-C").arg("/tmp"))?;
        tars.push(started.elapsed());
    }
    // (c) The same hit through Tandem's built-in actions/cache (files kept by content, no archive).
    make_deps()?;
    let builtin_args = ["--action-source", source_arg.as_str()];
    tandem_run(tandem, &cache_repo, &data, &builtin_args)?;
    let mut builtins = Vec::new();
    for _ in 0..repeats {
        std::fs::remove_dir_all(deps)?;
        let (_, report) = tandem_run(tandem, &cache_repo, &data, &builtin_args)?;
        let step = &report["runs"][0]["jobs"][0]["steps"][0];
        builtins.push(Duration::from_secs_f64(step["duration"].as_f64().context("the cache step's duration")?));
    }
    let _ = std::fs::remove_dir_all(deps);
    let (hit, tar, builtin) = (median(hits), median(tars), median(builtins));
    println!("Median of {repeats} runs on this machine.\n");
    println!("| benchmark | Tandem | baseline | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| (a) a job of {n} JavaScript + {n} composite action steps (cached by commit) vs the same job as {} `run:` steps | {:.3} s | {:.3} s | {:.2}× — {per_step:.1} ms per action step (target < 50 ms) |",
        2 * n,
        ours.as_secs_f64(),
        theirs.as_secs_f64(),
        ours.as_secs_f64() / theirs.as_secs_f64()
    );
    println!(
        "| (b) a 100 MB cache hit: actions/cache v4.2.3 through the cache service (download, unzstd, untar) vs `tar -xf` of the same files | {:.3} s | {:.3} s | {:.2}× |",
        hit.as_secs_f64(),
        tar.as_secs_f64(),
        hit.as_secs_f64() / tar.as_secs_f64()
    );
    println!(
        "| (c) the same hit through Tandem's built-in actions/cache vs `tar -xf` | {:.3} s | {:.3} s | {:.2}× |",
        builtin.as_secs_f64(),
        tar.as_secs_f64(),
        builtin.as_secs_f64() / tar.as_secs_f64()
    );
    Ok(())
}
