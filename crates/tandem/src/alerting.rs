//! Alert routing from the command line: check an Alertmanager configuration, read the
//! notification log, and manage silences.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::Format;
use crate::client::{self, Client, Connection};

#[derive(clap::Subcommand, Debug)]
pub enum RoutesCommand {
    /// Check an Alertmanager configuration (routes, receivers, inhibition, time intervals), as
    /// `amtool check-config` does; what Tandem does not support is named at its line.
    #[command(after_help = "Examples:\n  tandem routes check alertmanager.yml")]
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

pub fn routes(command: RoutesCommand) -> Result<i32> {
    let RoutesCommand::Check { files } = command;
    let mut failed = 0;
    for file in &files {
        let source = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        let (config, diagnostics) = spec::alertmanager::parse(&source);
        for diagnostic in &diagnostics {
            eprintln!("{}", diagnostic.render(&file.display().to_string(), &source));
        }
        match config {
            Some(config) => {
                fn count(route: &spec::alertmanager::Route) -> usize {
                    1 + route.routes.iter().map(count).sum::<usize>()
                }
                println!(
                    "✓ {}: {} routes, {} receivers, {} inhibit rules, {} time intervals",
                    file.display(),
                    count(&config.route),
                    config.receivers.len(),
                    config.inhibit_rules.len(),
                    config.time_intervals.len()
                );
            }
            None => {
                failed += 1;
                eprintln!("✗ {} is not valid", file.display());
            }
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

/// `tandem notifications`: who was told what, and when.
pub async fn notifications(format: Format, connection: Connection) -> Result<i32> {
    let list: api::EventList = Client::new(&connection)?.get("/api/v1/notifications").await?;
    if format == Format::Json {
        return client::print_json(&list).map(|()| 0);
    }
    if list.events.is_empty() {
        println!("no notifications yet; route alerts to receivers with `tandem server --alertmanager-config FILE`");
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = list
        .events
        .iter()
        .map(|e| {
            let p = &e.payload;
            vec![
                e.time.clone(),
                e.kind.trim_start_matches("notification.").to_string(),
                p["receiver"].as_str().unwrap_or_default().to_string(),
                p["to"].as_str().or(p["url"].as_str()).unwrap_or_default().to_string(),
                p["status"].as_str().unwrap_or_default().to_string(),
                p["alerts"].as_array().map_or(0, Vec::len).to_string(),
                p["attempt"].to_string(),
                p["error"].as_str().unwrap_or_default().to_string(),
            ]
        })
        .collect();
    client::table(&["TIME", "OUTCOME", "RECEIVER", "TO", "STATUS", "ALERTS", "ATTEMPT", "ERROR"], &rows);
    Ok(0)
}

#[derive(clap::Subcommand, Debug)]
pub enum SilenceCommand {
    /// Mute alerts whose labels match every matcher, for a while.
    #[command(
        after_help = "Examples:\n  tandem silence add alertname=DiskFilling instance=~'db-.*' --duration 2h --comment 'resizing the volume'"
    )]
    Add {
        /// `name=value`, `name!=value`, `name=~regex` or `name!~regex`.
        #[arg(required = true)]
        matchers: Vec<String>,
        #[arg(long, default_value = "1h")]
        duration: String,
        #[arg(long)]
        comment: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Every silence with its state.
    List {
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        connection: Connection,
    },
    /// End a silence now.
    Expire {
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
}

pub async fn silence(command: SilenceCommand) -> Result<i32> {
    match command {
        SilenceCommand::Add { matchers, duration, comment, connection } => {
            let mut parsed = Vec::new();
            for text in &matchers {
                let Some(m) = spec::alertmanager::parse_matcher(text) else {
                    bail!(
                        "`{text}` is not a matcher\n  hint: write name=value, name!=value, name=~regex or name!~regex"
                    );
                };
                let (is_regex, is_equal) = match m.op {
                    spec::alertmanager::MatchOp::Equal => (false, true),
                    spec::alertmanager::MatchOp::NotEqual => (false, false),
                    spec::alertmanager::MatchOp::Regex => (true, true),
                    spec::alertmanager::MatchOp::NotRegex => (true, false),
                };
                parsed.push(
                    serde_json::json!({"name": m.name, "value": m.value, "isRegex": is_regex, "isEqual": is_equal}),
                );
            }
            let ms = spec::rules::prometheus_duration(&duration)
                .ok_or_else(|| anyhow::anyhow!("--duration {duration}: not a duration\n  hint: e.g. 30m, 2h, 1d"))?;
            let now = jiff::Timestamp::now();
            let ends = now.checked_add(jiff::SignedDuration::from_millis(ms as i64))?;
            let body = serde_json::json!({"matchers": parsed, "startsAt": now.to_string(), "endsAt": ends.to_string(), "createdBy": "", "comment": comment});
            let answer: serde_json::Value = Client::new(&connection)?.post("/api/v2/silences", Some(&body)).await?;
            println!("silence {} until {ends}", answer["silenceID"].as_str().unwrap_or_default());
            Ok(0)
        }
        SilenceCommand::List { format, connection } => {
            let list: Vec<serde_json::Value> = Client::new(&connection)?.get("/api/v2/silences").await?;
            if format == Format::Json {
                return client::print_json(&list).map(|()| 0);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|s| {
                    let matchers: Vec<String> = s["matchers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|m| {
                            let op = match (m["isEqual"].as_bool() != Some(false), m["isRegex"].as_bool() == Some(true))
                            {
                                (true, false) => "=",
                                (false, false) => "!=",
                                (true, true) => "=~",
                                (false, true) => "!~",
                            };
                            format!(
                                "{}{op}{}",
                                m["name"].as_str().unwrap_or_default(),
                                m["value"].as_str().unwrap_or_default()
                            )
                        })
                        .collect();
                    vec![
                        s["id"].as_str().unwrap_or_default().to_string(),
                        s["status"]["state"].as_str().unwrap_or_default().to_string(),
                        matchers.join(" "),
                        s["endsAt"].as_str().unwrap_or_default().to_string(),
                        s["createdBy"].as_str().unwrap_or_default().to_string(),
                        s["comment"].as_str().unwrap_or_default().to_string(),
                    ]
                })
                .collect();
            client::table(&["ID", "STATE", "MATCHERS", "ENDS", "BY", "COMMENT"], &rows);
            Ok(0)
        }
        SilenceCommand::Expire { id, connection } => {
            let client = Client::new(&connection)?;
            let answer: serde_json::Value =
                client.delete(&format!("/api/v2/silence/{}", client::path_segment(&id))).await?;
            println!("silence {} expired", answer["silenceID"].as_str().unwrap_or(&id));
            Ok(0)
        }
    }
}
