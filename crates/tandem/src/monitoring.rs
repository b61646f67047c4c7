//! `tandem query` (PromQL against a server, at an instant or over a range) and `tandem metrics
//! import` (OpenMetrics or Prometheus text with timestamps into a data directory's store).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::Format;
use crate::client::{self, Client, Connection};

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  tandem query 'sum by (status) (tandem_runs_finished_total)'
  tandem query 'rate(tandem_proxy_requests_total[5m])' --range 1h --step 1m
  tandem query up --time 2026-11-30T12:00:00Z --format json")]
pub struct QueryArgs {
    /// A PromQL expression.
    pub query: String,
    /// Evaluate over this much time back from --time (e.g. 1h, 30m) instead of at one instant.
    #[arg(long)]
    pub range: Option<String>,
    /// Resolution of a range query (default: the range over 60 points, at least 15s).
    #[arg(long)]
    pub step: Option<String>,
    /// When to evaluate (Unix seconds or RFC 3339); now by default.
    #[arg(long)]
    pub time: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(clap::Subcommand, Debug)]
pub enum MetricsCommand {
    /// Load past samples (OpenMetrics text with timestamps, as `promtool tsdb create-blocks-from
    /// openmetrics` reads, or Prometheus text with millisecond timestamps) into a data directory.
    #[command(
        after_help = "The server must be stopped: the store has one writer.\n\nExamples:\n  tandem metrics import history.om --data ./data"
    )]
    Import {
        file: PathBuf,
        #[command(flatten)]
        data: crate::serve::DataArgs,
    },
}

pub async fn query(args: QueryArgs) -> Result<i32> {
    let client = Client::new(&args.connection)?;
    let now = jiff::Timestamp::now();
    let at = args.time.clone().unwrap_or_else(|| format!("{:.3}", now.as_millisecond() as f64 / 1000.0));
    let answer: serde_json::Value = match &args.range {
        None => {
            let path =
                format!("/api/v1/query?query={}&time={}", client::path_segment(&args.query), client::path_segment(&at));
            client.get(&path).await?
        }
        Some(range) => {
            let seconds = promql_parser::util::parse_duration(range)
                .map_err(|e| anyhow::anyhow!("--range {range}: {e}\n  hint: write a duration such as 30m, 1h or 7d"))?
                .as_secs_f64();
            let end: f64 = match at.parse::<f64>() {
                Ok(t) => t,
                Err(_) => {
                    at.parse::<jiff::Timestamp>().context("--time: not Unix seconds or RFC 3339")?.as_millisecond()
                        as f64
                        / 1000.0
                }
            };
            let step = match &args.step {
                Some(step) => step.clone(),
                None => format!("{}", (seconds / 60.0).max(15.0).round()),
            };
            let path = format!(
                "/api/v1/query_range?query={}&start={:.3}&end={end:.3}&step={}",
                client::path_segment(&args.query),
                end - seconds,
                client::path_segment(&step)
            );
            client.get(&path).await?
        }
    };
    if args.format == Format::Json {
        return client::print_json(&answer["data"]).map(|()| 0);
    }
    let data = &answer["data"];
    let labels = |metric: &serde_json::Value| {
        let object = metric.as_object().cloned().unwrap_or_default();
        let name = object.get("__name__").and_then(|v| v.as_str()).unwrap_or("").to_string();
        let rest: Vec<String> =
            object.iter().filter(|(k, _)| *k != "__name__").map(|(k, v)| format!("{k}={}", v)).collect();
        format!("{name}{{{}}}", rest.join(", "))
    };
    match data["resultType"].as_str() {
        Some("scalar") | Some("string") => println!("{}", data["result"][1].as_str().unwrap_or_default()),
        Some("vector") => {
            let result = data["result"].as_array().cloned().unwrap_or_default();
            if result.is_empty() {
                println!("no series");
            }
            let rows: Vec<Vec<String>> = result
                .iter()
                .map(|s| vec![labels(&s["metric"]), s["value"][1].as_str().unwrap_or_default().to_string()])
                .collect();
            client::table(&["SERIES", "VALUE"], &rows);
        }
        _ => {
            let result = data["result"].as_array().cloned().unwrap_or_default();
            if result.is_empty() {
                println!("no series");
            }
            let rows: Vec<Vec<String>> = result
                .iter()
                .map(|s| {
                    let values: Vec<f64> = s["values"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| p[1].as_str().and_then(|v| v.parse().ok()))
                        .collect();
                    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
                    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    vec![
                        labels(&s["metric"]),
                        values.len().to_string(),
                        format!("{min}"),
                        format!("{max}"),
                        values.last().map(|v| v.to_string()).unwrap_or_default(),
                        sparkline(&values),
                    ]
                })
                .collect();
            client::table(&["SERIES", "POINTS", "MIN", "MAX", "LAST", "TREND"], &rows);
        }
    }
    Ok(0)
}

/// One block character per cell (a space where there is no value), scaled to the cells' range.
fn bars(cells: &[f64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let finite = cells.iter().copied().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
    cells
        .iter()
        .map(|v| match v {
            v if !v.is_finite() => ' ',
            _ if hi == lo => BARS[3],
            v => BARS[(((v - lo) / (hi - lo)) * 7.0).round() as usize],
        })
        .collect()
}

/// The shape of a series in eight levels of block characters, at most 40 wide.
fn sparkline(values: &[f64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return String::new();
    }
    let (lo, hi) = finite.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(*v), h.max(*v)));
    let stride = values.len().div_ceil(40).max(1);
    values
        .chunks(stride)
        .map(|c| {
            let v = c.iter().copied().filter(|v| v.is_finite()).fold(f64::NAN, f64::max);
            if v.is_nan() {
                ' '
            } else if hi == lo {
                BARS[3]
            } else {
                BARS[(((v - lo) / (hi - lo)) * 7.0).round() as usize]
            }
        })
        .collect()
}

pub fn metrics(command: MetricsCommand) -> Result<i32> {
    match command {
        MetricsCommand::Import { file, data } => {
            let dir = data.data.clone().unwrap_or_else(crate::run::default_data_dir);
            if let Some(pid) = server::running_server(&dir) {
                bail!(
                    "a server (pid {pid}) is running on {}\n  hint: stop it first; the store has one writer",
                    dir.display()
                );
            }
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let db = metrics::Db::open(&server::tsdb_path(&dir), metrics::Options::default())?;
            let imported = metrics::import::import(&db, &text).map_err(|e| match e {
                metrics::import::ImportError::Store(error) => anyhow::Error::new(error),
                metrics::import::ImportError::Parse(error) => anyhow::anyhow!("{}:{error}", file.display()),
                other => anyhow::anyhow!("{}: {other}", file.display()),
            })?;
            db.checkpoint()?;
            let stats = db.stats();
            let accepted = imported.accepted;
            let refused = imported.samples - accepted;
            if data.format == Format::Json {
                println!(
                    "{}",
                    serde_json::json!({"imported": accepted, "refused": refused, "series": stats.series, "samples": stats.samples})
                );
            } else {
                println!(
                    "imported {accepted} samples from {} ({} series in the store now)",
                    file.display(),
                    stats.series
                );
                if refused > 0 {
                    println!("refused {refused} samples that were not after their series' newest sample");
                }
            }
            Ok(if refused > 0 { 1 } else { 0 })
        }
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum SloCommand {
    /// Every SLO: objective, SLI, budget left, the last hour's burn, time to exhaustion.
    #[command(after_help = "Examples:\n  tandem slo list\n  tandem slo list --format json")]
    List {
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        connection: Connection,
    },
    /// Check a monitors file or an OpenSLO file: every SLO as Tandem will evaluate it, and what it will not.
    #[command(after_help = "Examples:\n  tandem slo check monitors.yml\n  tandem slo check openslo/checkout.yaml")]
    Check { file: PathBuf },
    /// One SLO (by name or key) with its burn rate per window and its alerts.
    #[command(after_help = "Examples:\n  tandem slo show availability\n  tandem slo show shop/production/availability")]
    Show {
        name: String,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        connection: Connection,
    },
}

fn percent(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{:.digits$}%", v * 100.0))
}

fn duration_text(seconds: f64) -> String {
    if seconds <= 0.0 {
        "exhausted".into()
    } else if seconds < 3600.0 {
        format!("{:.0} min", seconds / 60.0)
    } else if seconds < 2.0 * 86_400.0 {
        format!("{:.1} h", seconds / 3600.0)
    } else {
        format!("{:.1} d", seconds / 86_400.0)
    }
}

pub async fn slo(command: SloCommand) -> Result<i32> {
    match command {
        SloCommand::Check { file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let (slos, diagnostics): (Vec<(String, Option<spec::monitors::SloSpec>)>, _) =
                if server::monitor::is_openslo(&text) {
                    let (found, diagnostics) = spec::openslo::parse(&text);
                    (found.into_iter().map(|o| (o.name, o.slo)).collect(), diagnostics)
                } else {
                    let (monitors, diagnostics) = spec::monitors::parse(&text);
                    (
                        monitors
                            .map(|m| m.slos)
                            .unwrap_or_default()
                            .into_iter()
                            .map(|s| (s.name.clone(), Some(s)))
                            .collect(),
                        diagnostics,
                    )
                };
            let name = file.display().to_string();
            for diagnostic in &diagnostics {
                eprint!("{}", diagnostic.render(&name, &text));
            }
            for (slo_name, slo) in &slos {
                match slo {
                    Some(slo) => println!(
                        "✓ {slo_name}: {} over {} — {}",
                        percent(Some(slo.objective), 3),
                        server::monitor::slos::human(slo.window_ms),
                        match &slo.sli {
                            spec::monitors::Sli::Requests => "requests through the proxy".to_string(),
                            spec::monitors::Sli::Probe(p) => format!("checks of probe `{p}`"),
                            spec::monitors::Sli::Ratio { good, total } => format!("good: {good}; total: {total}"),
                        }
                    ),
                    None => println!("✗ {slo_name}: loaded, not evaluated (see the warning above)"),
                }
            }
            Ok(if diagnostics.iter().any(|d| d.is_error()) { 1 } else { 0 })
        }
        SloCommand::List { format, connection } => {
            let slos: Vec<api::Slo> = Client::new(&connection)?.get("/api/v1/slos").await?;
            if format == Format::Json {
                return client::print_json(&slos).map(|()| 0);
            }
            if slos.is_empty() {
                println!(
                    "no SLOs yet; declare them under `slos:` in an environment of .tandem/service.yml, or in a monitors file"
                );
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = slos
                .iter()
                .map(|s| {
                    let f = s.figures.as_ref();
                    let hour = f.and_then(|f| f.burn.iter().find(|b| b.window == "1h")).and_then(|b| b.rate);
                    let firing = s
                        .alerts
                        .iter()
                        .filter(|a| a.firing_since.is_some())
                        .map(|a| a.severity.clone())
                        .collect::<Vec<_>>();
                    vec![
                        s.key.clone(),
                        percent(Some(s.objective), 2),
                        s.window.clone(),
                        percent(f.and_then(|f| f.sli), 3),
                        percent(f.and_then(|f| f.budget_remaining), 1),
                        hour.map_or_else(|| "-".into(), |b| format!("{b:.2}×")),
                        f.and_then(|f| f.exhaustion_seconds).map_or_else(|| "-".into(), duration_text),
                        if firing.is_empty() { "-".into() } else { firing.join(",") },
                    ]
                })
                .collect();
            client::table(
                &["SLO", "OBJECTIVE", "WINDOW", "SLI", "BUDGET LEFT", "BURN 1H", "EXHAUSTED IN", "ALERTS"],
                &rows,
            );
            Ok(0)
        }
        SloCommand::Show { name, format, connection } => {
            let slos: Vec<api::Slo> = Client::new(&connection)?.get("/api/v1/slos").await?;
            let matching: Vec<&api::Slo> = slos.iter().filter(|s| s.key == name || s.name == name).collect();
            let slo = match matching.as_slice() {
                [one] => *one,
                [] => bail!("no SLO is named `{name}`\n  hint: `tandem slo list` shows them"),
                _ => bail!(
                    "several SLOs are named `{name}`; give the key, one of: {}",
                    matching.iter().map(|s| s.key.as_str()).collect::<Vec<_>>().join(", ")
                ),
            };
            if format == Format::Json {
                return client::print_json(slo).map(|()| 0);
            }
            println!("SLO {}: {} over {}", slo.key, percent(Some(slo.objective), 3), slo.window);
            println!("SLI: {}", slo.sli);
            match &slo.figures {
                None => println!("not evaluated yet"),
                Some(f) => {
                    println!(
                        "now {} over {} events; error budget left {}; {}",
                        percent(f.sli, 3),
                        f.events,
                        percent(f.budget_remaining, 1),
                        f.exhaustion_seconds.map_or_else(
                            || "not burning".into(),
                            |s| format!("exhausted in {} at the last hour's burn", duration_text(s))
                        )
                    );
                    let rows: Vec<Vec<String>> = f
                        .burn
                        .iter()
                        .map(|b| {
                            vec![b.window.clone(), b.rate.map_or_else(|| "no data".into(), |r| format!("{r:.2}×"))]
                        })
                        .collect();
                    client::table(&["WINDOW", "BURN RATE"], &rows);
                }
            }
            println!();
            let rows: Vec<Vec<String>> = slo
                .alerts
                .iter()
                .map(|a| {
                    vec![
                        a.name.clone(),
                        a.severity.clone(),
                        if a.long_window == a.short_window {
                            a.long_window.clone()
                        } else {
                            format!("{}/{}", a.long_window, a.short_window)
                        },
                        if a.factor > 0.0 { format!("{}×", a.factor) } else { "-".into() },
                        a.firing_since.as_ref().map_or_else(|| "no".into(), |t| format!("since {t}")),
                    ]
                })
                .collect();
            client::table(&["ALERT", "SEVERITY", "WINDOWS", "THRESHOLD", "FIRING"], &rows);
            Ok(0)
        }
    }
}

pub async fn probes(format: Format, connection: Connection) -> Result<i32> {
    let probes: Vec<api::Probe> = Client::new(&connection)?.get("/api/v1/probes").await?;
    if format == Format::Json {
        return client::print_json(&probes).map(|()| 0);
    }
    if probes.is_empty() {
        println!(
            "no probes yet; declare them under `probes:` in an environment of .tandem/service.yml, or in a monitors file (`tandem server --monitors FILE`)"
        );
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = probes
        .iter()
        .map(|p| {
            let last = p.last.as_ref();
            vec![
                p.key.clone(),
                p.kind.clone(),
                p.target.clone(),
                p.state.clone(),
                last.map_or_else(|| "-".into(), |l| format!("{:.0} ms", l.seconds * 1000.0)),
                format!("{}/{}", p.checks - p.failures, p.checks),
                last.and_then(|l| l.certificate_expires.as_deref())
                    .map_or_else(|| "-".into(), |t| t.chars().take(10).collect()),
                last.and_then(|l| l.error.clone()).unwrap_or_default(),
            ]
        })
        .collect();
    client::table(&["PROBE", "KIND", "TARGET", "STATE", "LAST", "OK/CHECKS", "CERT EXPIRES", "ERROR"], &rows);
    Ok(if probes.iter().any(|p| p.state == "failing") { 1 } else { 0 })
}

pub async fn alerts(format: Format, connection: Connection) -> Result<i32> {
    let answer: api::Answer<api::AlertList> = Client::new(&connection)?.get("/api/v1/alerts").await?;
    if format == Format::Json {
        return client::print_json(&answer.data).map(|()| 0);
    }
    if answer.data.alerts.is_empty() {
        println!("no alerts firing");
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = answer
        .data
        .alerts
        .iter()
        .map(|a| {
            vec![
                a.labels.get("alertname").cloned().unwrap_or_default(),
                a.labels.get("severity").cloned().unwrap_or_default(),
                a.state.clone(),
                a.active_at.clone(),
                a.annotations.get("summary").cloned().unwrap_or_default(),
            ]
        })
        .collect();
    client::table(&["ALERT", "SEVERITY", "STATE", "SINCE", "SUMMARY"], &rows);
    Ok(0)
}

#[derive(clap::Subcommand, Debug)]
pub enum RulesCommand {
    /// Check Prometheus rule files (YAML shape and every PromQL expression), as `promtool check rules` does.
    #[command(after_help = "Examples:\n  tandem rules check rules/*.yml")]
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

pub fn rules(command: RulesCommand) -> Result<i32> {
    let RulesCommand::Check { files } = command;
    let mut failed = 0;
    for file in &files {
        match server::monitor::rules::check_file(file) {
            Ok(groups) => {
                let n: usize = groups.iter().map(|g| g.rules.len()).sum();
                println!("✓ {}: {} groups, {n} rules", file.display(), groups.len());
            }
            Err(error) => {
                failed += 1;
                eprintln!("✗ {error}");
            }
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

pub async fn insights(format: Format, connection: Connection) -> Result<i32> {
    let insights: Vec<api::Insight> = Client::new(&connection)?.get("/api/v1/insights").await?;
    if format == Format::Json {
        return client::print_json(&insights).map(|()| 0);
    }
    if insights.is_empty() {
        println!("nothing unusual: no forecast reaches its limit, no anomaly against earlier days");
        return Ok(0);
    }
    for insight in &insights {
        println!("{} {} (since {})", insight.kind, insight.summary, insight.since);
        if let Some(model) = insight.evidence["model"].as_str() {
            println!("    model: {model}");
        }
    }
    Ok(0)
}

#[derive(clap::Subcommand, Debug)]
pub enum ServiceCommand {
    /// A service at a glance: environments, SLOs, probes, and traffic, errors, latency and its key
    /// series over time, with its deployments (▲ promoted, ✗ rolled back or failed) on the same axis.
    #[command(
        after_help = "Examples:\n  tandem service show shop\n  tandem service show shop --range 7d --format json"
    )]
    Show {
        name: String,
        /// How far back: 6h by default.
        #[arg(long, default_value = "6h")]
        range: String,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        connection: Connection,
    },
}

/// Columns of the time axis in `tandem service show`.
const AXIS: usize = 60;

pub async fn service(command: ServiceCommand) -> Result<i32> {
    let ServiceCommand::Show { name, range, format, connection } = command;
    let path =
        format!("/api/v1/services/{}/overview?range={}", client::path_segment(&name), client::path_segment(&range));
    let overview: api::ServiceOverview = Client::new(&connection)?.get(&path).await?;
    if format == Format::Json {
        return client::print_json(&overview).map(|()| 0);
    }
    println!("service {} over the last {range}", overview.service);
    for env in &overview.environments {
        let release = |r: &Option<api::ReleaseRef>| r.as_ref().map_or("-".to_string(), |r| r.release.clone());
        println!("  {}: stable {} (previous {})", env.environment, release(&env.stable), release(&env.previous));
    }
    for slo in &overview.slos {
        let f = slo.figures.as_ref();
        let firing = slo.alerts.iter().filter(|a| a.firing_since.is_some()).count();
        println!(
            "  SLO {} {} over {}: now {}, budget left {}{}",
            slo.name,
            percent(Some(slo.objective), 2),
            slo.window,
            percent(f.and_then(|f| f.sli), 3),
            percent(f.and_then(|f| f.budget_remaining), 1),
            if firing > 0 { format!(", {firing} alert(s) firing") } else { String::new() }
        );
    }
    for probe in &overview.probes {
        println!(
            "  probe {}: {} ({}/{} checks ok)",
            probe.name,
            probe.state,
            probe.checks - probe.failures,
            probe.checks
        );
    }
    println!();
    let column = |t: f64| {
        (((t - overview.start) / (overview.end - overview.start)) * (AXIS - 1) as f64)
            .round()
            .clamp(0.0, (AXIS - 1) as f64) as usize
    };
    let width = overview.series.iter().map(|s| s.name.chars().count()).max().unwrap_or(0).max(11);
    for series in &overview.series {
        let mut cells = vec![f64::NAN; AXIS];
        for (t, v) in &series.points {
            cells[column(*t)] = *v;
        }
        let last = series.points.last().map_or("-".to_string(), |p| format!("{:.4}", p.1));
        println!("  {:<width$}  {}  {last}", series.name, bars(&cells));
    }
    let mut axis = vec![' '; AXIS];
    for mark in &overview.marks {
        // Deployments closer than a column apart take the nearest free columns: each stays visible.
        let at = column(mark.at) as i64;
        let free = (0..AXIS as i64)
            .flat_map(|d| [at + d, at - d])
            .find(|c| (0..AXIS as i64).contains(c) && axis[*c as usize] == ' ');
        if let Some(c) = free {
            axis[c as usize] = if mark.status == api::DeploymentStatus::Promoted { '▲' } else { '✗' };
        }
    }
    println!("  {:<width$}  {}", "deployments", axis.iter().collect::<String>());
    for mark in &overview.marks {
        let at =
            jiff::Timestamp::from_millisecond((mark.at * 1000.0) as i64).map(|t| t.to_string()).unwrap_or_default();
        println!(
            "    {} {at}  deployment {} {} → {} ({}, {})",
            if mark.status == api::DeploymentStatus::Promoted { '▲' } else { '✗' },
            mark.deployment,
            mark.release,
            mark.environment,
            mark.kind.as_str(),
            mark.status.as_str()
        );
    }
    Ok(0)
}

/// `tandem heartbeat NAME`: the ping a job or cron task sends when it ran.
pub async fn heartbeat(
    name: String,
    service: Option<String>,
    environment: Option<String>,
    connection: Connection,
) -> Result<i32> {
    let mut path = format!("/api/v1/heartbeats/{}", client::path_segment(&name));
    let filters: Vec<String> = [("service", service), ("environment", environment)]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", client::path_segment(&v))))
        .collect();
    if !filters.is_empty() {
        path = format!("{path}?{}", filters.join("&"));
    }
    let answer: serde_json::Value = Client::new(&connection)?.post(&path, None::<&()>).await?;
    let keys: Vec<String> =
        answer["pinged"].as_array().into_iter().flatten().filter_map(|k| k.as_str().map(str::to_string)).collect();
    println!("pinged {}", keys.join(", "));
    Ok(0)
}
