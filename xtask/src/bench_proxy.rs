//! Proxy overhead: `wrk` against an upstream directly, through nginx, and through `tandem proxy`
//! with the same 90/10 weights, all on loopback on this machine (nginx from
//! `../shared/peers/nginx`).

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

const WRK_ARGS: [&str; 5] = ["-t2", "-c32", "-d8s", "--latency", "--timeout=5s"];

/// Requests per second, p50 and p99 latency in milliseconds, from wrk's report.
fn wrk(url: &str) -> Result<(f64, f64, f64)> {
    let output = Command::new("wrk").args(WRK_ARGS).arg(url).output().context("cannot run wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let number = |prefix: &str| text.lines().find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()));
    let ms = |value: String| -> f64 {
        let (n, unit) = value.split_at(value.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(value.len()));
        let n: f64 = n.parse().unwrap_or(f64::NAN);
        match unit {
            "us" => n / 1000.0,
            "s" => n * 1000.0,
            _ => n,
        }
    };
    let rps: f64 = number("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .context(format!("no Requests/sec in wrk's output:\n{text}"))?;
    let p50 = number("50%").map(ms).unwrap_or(f64::NAN);
    let p99 = number("99%").map(ms).unwrap_or(f64::NAN);
    if text.contains("Non-2xx") {
        bail!("wrk saw errors against {url}:\n{text}");
    }
    Ok((rps, p50, p99))
}

pub fn run(_args: &[String]) -> Result<()> {
    crate::run(Command::new("cargo").args(["build", "--release", "-p", "tandem", "--quiet"]))?;
    let tandem = Path::new("target/release/tandem").canonicalize()?;
    let peer = Path::new("../shared/peers/nginx");
    if !peer.is_dir() {
        bail!("the nginx peer scripts are missing at {}", peer.display());
    }
    let scratch = std::env::temp_dir().join(format!("tandem-bench-proxy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    crate::run(Command::new("cp").arg("-r").arg(peer).arg(&scratch))?;
    crate::run(Command::new("chmod").arg("-R").arg("u+w").arg(&scratch))?;
    let nginx_dir = scratch.join("state");
    crate::run(Command::new("bash").arg("setup.sh").current_dir(&scratch).env("NG", &nginx_dir))?;
    let mut proxy = Command::new(&tandem)
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:18095",
            "--stable",
            "127.0.0.1:18081",
            "--canary",
            "127.0.0.1:18082",
            "--weight",
            "10",
        ])
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(500));
    let result = (|| -> Result<String> {
        let direct = wrk("http://127.0.0.1:18081/hello.txt")?;
        let nginx = wrk("http://127.0.0.1:18080/hello.txt")?;
        let ours = wrk("http://127.0.0.1:18095/hello.txt")?;
        let mut report = String::new();
        writeln!(report, "| target (wrk {}) | requests/s | p50 | p99 | added p50 over direct |", WRK_ARGS.join(" "))?;
        writeln!(report, "|---|---|---|---|---|")?;
        for (name, (rps, p50, p99)) in [
            ("direct to one upstream", direct),
            ("nginx 1.22, 90/10 weights, upstream keepalive", nginx),
            ("tandem proxy, 90/10 weights", ours),
        ] {
            writeln!(report, "| {name} | {rps:.0} | {p50:.2} ms | {p99:.2} ms | {:.2} ms |", p50 - direct.1)?;
        }
        writeln!(report, "\ntandem proxy / nginx: {:.2}× the throughput", ours.0 / nginx.0)?;
        Ok(report)
    })();
    let _ = proxy.kill();
    let _ = proxy.wait();
    let _ = Command::new("bash").arg("stop.sh").current_dir(&scratch).env("NG", &nginx_dir).status();
    let report = result?;
    let _ = std::fs::remove_dir_all(&scratch);
    println!("{report}");
    Ok(())
}
