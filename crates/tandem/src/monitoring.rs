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
            let samples = metrics::exposition::parse(&text).map_err(|e| anyhow::anyhow!("{}:{e}", file.display()))?;
            let mut batch = Vec::with_capacity(samples.len());
            for (n, sample) in samples.into_iter().enumerate() {
                let Some(t) = sample.t else {
                    bail!(
                        "{}: sample {} ({}) has no timestamp\n  hint: imported history needs a timestamp on every sample",
                        file.display(),
                        n + 1,
                        sample.labels
                    );
                };
                batch.push((sample.labels, t, sample.value));
            }
            batch.sort_by_key(|(_, t, _)| *t);
            let db = metrics::Db::open(&server::tsdb_path(&dir), metrics::Options::default())?;
            let accepted = db.append(&batch)?;
            db.checkpoint()?;
            let stats = db.stats();
            let refused = batch.len() - accepted;
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
