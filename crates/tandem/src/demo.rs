//! The response half of `tandem up`'s demo: a local on-call webhook that prints each page it
//! receives, the alert routes that reach it, and the incident story told as it happens — opened
//! by the bad release's burn, naming the deployment, resolved, and its postmortem draft written.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// Routes every alert to the demo's on-call webhook, with short timers so pages arrive at demo speed.
fn routes(url: &str) -> String {
    format!(
        "route:\n  receiver: on-call\n  group_by: [alertname, service]\n  group_wait: 1s\n  group_interval: 10s\n  repeat_interval: 4h\nreceivers:\n  - name: on-call\n    webhook_configs:\n      - url: {url}\n"
    )
}

/// Starts the on-call webhook on loopback and routes alerts to it (unless the server was given
/// its own Alertmanager configuration).
pub async fn start_pager(app: &server::App) -> anyhow::Result<()> {
    if app.router.configured() {
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/page", listener.local_addr()?);
    let (config, diagnostics) = spec::alertmanager::parse(&routes(&url));
    let Some(config) = config else { anyhow::bail!("the demo's routes are invalid: {diagnostics:?}") };
    app.router.configure(Some(config));
    let receiver = axum::Router::new().route("/page", axum::routing::post(page));
    tokio::spawn(async move { axum::serve(listener, receiver).await });
    Ok(())
}

async fn page(axum::Json(body): axum::Json<serde_json::Value>) -> &'static str {
    let alerts: Vec<String> = body["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let labels = &a["labels"];
            format!(
                "{} {} ({}, {})",
                labels["alertname"].as_str().unwrap_or("alert"),
                labels["service"].as_str().unwrap_or(""),
                labels["severity"].as_str().unwrap_or(""),
                a["status"].as_str().unwrap_or("")
            )
        })
        .collect();
    println!(
        "demo: ✉ the on-call webhook received a {} notification: {}",
        body["status"].as_str().unwrap_or("?"),
        alerts.join("; ")
    );
    "ok"
}

/// Waits for the incident the bad release opens, then for its resolution; writes its postmortem.
pub async fn incident_story(app: &Arc<server::App>, bad_deployment: i64) {
    let deadline = Instant::now() + Duration::from_secs(150);
    let opened = loop {
        let list = server::incidents::list(app).await.unwrap_or_default();
        if let Some(incident) = list.into_iter().find(|i| i.suspects.iter().any(|s| s.deployment == bad_deployment)) {
            break incident;
        }
        if Instant::now() > deadline {
            println!(
                "demo: no incident opened for deployment {bad_deployment}; see `tandem alerts` and `tandem incident list`"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let suspect = &opened.suspects[0];
    println!(
        "demo: 🚨 incident {} opened by the page: {} — suspect: deployment {} (release {}, {})",
        opened.id,
        opened.title,
        suspect.deployment,
        suspect.release,
        suspect.status.replace('_', " ")
    );
    let deadline = Instant::now() + Duration::from_secs(180);
    let resolved = loop {
        match server::incidents::get(app, opened.id).await {
            Ok(incident) if !incident.state.is_open() => break incident,
            _ if Instant::now() > deadline => {
                println!("demo: incident {} is still open; see `tandem incident show {}`", opened.id, opened.id);
                return;
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    println!(
        "demo: ✓ incident {} resolved after {:.0} s: {}",
        resolved.id,
        resolved.mttr_seconds.unwrap_or(0.0),
        resolved.resolution.as_deref().unwrap_or("")
    );
    let Ok(postmortem) = server::incidents::postmortem(app, resolved.id).await else { return };
    let dir = app.config.data_dir.join("postmortems");
    let path = dir.join(format!("incident-{}.md", resolved.id));
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, &postmortem.markdown)) {
        Ok(()) => {
            println!("demo: postmortem draft written to {}", path.display());
            for line in postmortem.markdown.lines().skip_while(|l| !l.starts_with("## Summary")).skip(2).take(1) {
                println!("demo:   {line}");
            }
        }
        Err(error) => println!("demo: cannot write the postmortem draft to {}: {error}", path.display()),
    }
}

/// The demo's code review: a hosted repository, `sample-site`, whose `main` is protected, and a
/// change pushed for review with git over HTTP — what it lacks is what `tandem change show` says.
pub async fn code_story(url: &str, token: &str, work: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let connection = crate::client::Connection { url: url.to_string(), token: Some(token.to_string()) };
    let request = api::CreateHosted { name: "sample-site".into(), protected: None };
    let hosted: api::HostedRepository =
        crate::client::Client::new(&connection)?.post("/api/v1/hosted", Some(&request)).await?;
    let remote = hosted.clone_url.replace("http://", &format!("http://tandem:{token}@"));
    std::fs::create_dir_all(work.join(".github/workflows"))?;
    std::fs::write(work.join("index.html"), "<h1>Sample site</h1>\n")?;
    std::fs::write(
        work.join(".github/workflows/ci.yml"),
        "on: [push, pull_request, merge_group]\njobs:\n  check:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n      - run: grep -q '<h1>' index.html\n",
    )?;
    let git = |args: &[&str]| -> anyhow::Result<()> {
        let output = std::process::Command::new("git")
            .arg("-C")
            .arg(work)
            .args(["-c", "user.name=Demo", "-c", "user.email=demo@localhost"])
            .args(args)
            .output()
            .context("cannot run git")?;
        anyhow::ensure!(
            output.status.success(),
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(())
    };
    git(&["init", "-q", "-b", "main"])?;
    git(&["add", "-A"])?;
    git(&["commit", "-q", "-m", "The sample site"])?;
    git(&["push", "-q", &remote, "HEAD:main"])?;
    std::fs::write(work.join("index.html"), "<h1>Sample site</h1>\n<p>Now with a greeting.</p>\n")?;
    git(&["commit", "-q", "-am", "Greet visitors\n\nChange-Id: I0000000000000000000000000000000000000001"])?;
    git(&["push", "-q", &remote, "HEAD:refs/for/main"])?;
    println!("demo: code review — change 1 of the hosted repository sample-site is open (main is protected):");
    println!(
        "demo:   tandem change show sample-site 1     # its runs, and what it lacks: an approval from someone else"
    );
    println!("demo:   tandem user add ana --role developer && tandem token create ana --user ana   # a reviewer");
    println!("demo:   TANDEM_TOKEN=<ana's> tandem change approve sample-site 1 && tandem change merge sample-site 1");
    println!("demo:   tandem queue sample-site                # the merge queue tests it on main, then main moves");
    Ok(())
}
