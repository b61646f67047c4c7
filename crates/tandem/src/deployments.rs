//! `tandem deploy`, `deployments`, `approve`, `rollback` and `environments`: deployments on a
//! server, as requests and as the record of what each one did.

use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;
use reqwest::Method;

use crate::Format;
use crate::client::{self, Client, Connection, text};

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  tandem deploy demo staging                 # the default branch's head, by the environment's strategy
  tandem deploy demo production --ref v1.4.0 --wait")]
pub struct DeployArgs {
    /// The service, as its `.tandem/service.yml` names it (or the repository that holds that file).
    #[arg(value_name = "SERVICE")]
    pub repository: String,
    /// An environment of its `.tandem/service.yml`.
    pub environment: String,
    /// Branch, tag or commit to deploy (default: the default branch).
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: Option<String>,
    /// Follow the deployment until it ends; exit 0 when promoted, 1 otherwise.
    #[arg(long)]
    pub wait: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Subcommand, Debug)]
pub enum DeploymentsCommand {
    /// Recent deployments, newest first.
    #[command(
        after_help = "Examples:\n  tandem deployments list\n  tandem deployments list --service demo --environment production --format json"
    )]
    List {
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        environment: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        connection: Connection,
    },
    /// One deployment and every event of it: gates, steps, the analysis' verdicts, its end.
    Show {
        id: i64,
        /// Keep printing events until the deployment ends.
        #[arg(long)]
        wait: bool,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  tandem rollback demo production               # stop the rollout in progress, else go back one release
  tandem rollback demo production --emergency   # skip gates and analysis: switch as soon as it is up")]
pub struct RollbackArgs {
    pub service: String,
    pub environment: String,
    /// Skip gates and analysis.
    #[arg(long)]
    pub emergency: bool,
    /// Follow until it ends.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub connection: Connection,
}

pub async fn deploy(args: DeployArgs) -> Result<i32> {
    let client = Client::new(&args.connection)?;
    let body = serde_json::json!({"service": args.repository, "environment": args.environment, "ref": args.git_ref});
    let deployment = client.call(Method::POST, "/api/v1/deployments", Some(body)).await?;
    if args.format == Format::Json && !args.wait {
        println!("{}", serde_json::to_string_pretty(&deployment)?);
        return Ok(0);
    }
    let id = deployment["id"].as_i64().unwrap_or_default();
    println!(
        "deployment {id}: {} {} to {} requested",
        text(&deployment, "service"),
        text(&deployment, "release"),
        text(&deployment, "environment")
    );
    if args.wait {
        return follow(&client, id, args.format).await;
    }
    println!("follow it with `tandem deployments show {id} --wait`");
    Ok(0)
}

pub async fn deployments(command: DeploymentsCommand) -> Result<i32> {
    match command {
        DeploymentsCommand::List { service, environment, limit, format, connection } => {
            let mut query = vec![format!("limit={limit}")];
            for (key, value) in [("service", service), ("environment", environment)] {
                if let Some(value) = value {
                    query.push(format!("{key}={}", client::path_segment(&value)));
                }
            }
            let json = Client::new(&connection)?
                .call(Method::GET, &format!("/api/v1/deployments?{}", query.join("&")), None)
                .await?;
            if format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&json)?);
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = json
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    vec![
                        text(d, "id"),
                        text(d, "service"),
                        text(d, "environment"),
                        text(d, "release"),
                        text(d, "kind"),
                        text(d, "status"),
                        format!("{:.0}%", d["weight"].as_f64().unwrap_or(0.0) * 100.0),
                        text(d, "created"),
                        text(d, "reason").chars().take(70).collect(),
                    ]
                })
                .collect();
            if rows.is_empty() {
                println!("no deployments yet; start one with `tandem deploy REPO ENVIRONMENT`");
            } else {
                client::table(
                    &["ID", "SERVICE", "ENVIRONMENT", "RELEASE", "KIND", "STATUS", "TRAFFIC", "REQUESTED", "REASON"],
                    &rows,
                );
            }
            Ok(0)
        }
        DeploymentsCommand::Show { id, wait, format, connection } => {
            let client = Client::new(&connection)?;
            if wait {
                return follow(&client, id, format).await;
            }
            let json = client.call(Method::GET, &format!("/api/v1/deployments/{id}"), None).await?;
            if format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&json)?);
                return Ok(0);
            }
            print_header(&json);
            for event in json["events"].as_array().into_iter().flatten() {
                print_event(event);
            }
            Ok(0)
        }
    }
}

pub async fn approve(id: i64, connection: Connection) -> Result<i32> {
    let json = Client::new(&connection)?.call(Method::POST, &format!("/api/v1/deployments/{id}/approve"), None).await?;
    println!(
        "deployment {id} approved by {}; it starts once no other gate holds it",
        json["approved_by"].as_str().unwrap_or("you")
    );
    Ok(0)
}

pub async fn promote(id: i64, connection: Connection) -> Result<i32> {
    let json = Client::new(&connection)?.call(Method::POST, &format!("/api/v1/deployments/{id}/promote"), None).await?;
    println!(
        "deployment {id} ({}) is being promoted: its remaining steps are skipped",
        json["release"].as_str().unwrap_or_default()
    );
    Ok(0)
}

pub async fn rollback(args: RollbackArgs) -> Result<i32> {
    let client = Client::new(&args.connection)?;
    let path = format!(
        "/api/v1/environments/{}/{}/rollback",
        client::path_segment(&args.service),
        client::path_segment(&args.environment)
    );
    let json = client.call(Method::POST, &path, Some(serde_json::json!({"emergency": args.emergency}))).await?;
    let id = json["id"].as_i64().unwrap_or_default();
    if json["abort_requested"].as_bool() == Some(true) {
        println!(
            "deployment {id} ({}) is being rolled back: traffic returns to the stable release",
            text(&json, "release")
        );
    } else {
        println!("deployment {id}: back to release {} ({})", text(&json, "release"), text(&json, "kind"));
    }
    if args.wait {
        let code = follow(&client, id, Format::Text).await?;
        // For an aborted rollout, rolled back is the wanted end.
        return Ok(if json["abort_requested"].as_bool() == Some(true) { 1 - code } else { code });
    }
    Ok(0)
}

pub async fn environments(format: Format, connection: Connection) -> Result<i32> {
    let json = Client::new(&connection)?.call(Method::GET, "/api/v1/environments", None).await?;
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = json
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let release = |key: &str| e[key]["release"].as_str().unwrap_or("-").to_string();
            vec![text(e, "service"), text(e, "environment"), release("stable"), release("previous"), text(e, "listen")]
        })
        .collect();
    if rows.is_empty() {
        println!("no environments yet; they appear with their first deployment");
    } else {
        client::table(&["SERVICE", "ENVIRONMENT", "STABLE", "PREVIOUS", "PROXY"], &rows);
    }
    Ok(0)
}

/// Prints a deployment's events as they come until it ends; 0 when promoted.
async fn follow(client: &Client, id: i64, format: Format) -> Result<i32> {
    let mut printed = 0;
    let mut header = false;
    loop {
        let json = client.call(Method::GET, &format!("/api/v1/deployments/{id}"), None).await?;
        if !header && format == Format::Text {
            print_header(&json);
            header = true;
        }
        let events = json["events"].as_array().cloned().unwrap_or_default();
        for event in events.iter().skip(printed) {
            if format == Format::Json {
                println!("{}", serde_json::to_string(event)?);
            } else {
                print_event(event);
            }
        }
        printed = events.len();
        let status = text(&json, "status");
        if ["promoted", "rolled_back", "failed", "skipped"].contains(&status.as_str()) {
            return Ok(if status == "promoted" { 0 } else { 1 });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn print_header(json: &serde_json::Value) {
    println!(
        "deployment {}  {} {} → {}  {} ({})",
        text(json, "id"),
        text(json, "service"),
        text(json, "release"),
        text(json, "environment"),
        text(json, "status"),
        text(json, "kind")
    );
}

fn print_event(event: &serde_json::Value) {
    let kind = text(event, "kind");
    let kind = kind.strip_prefix("deployment.").unwrap_or(&kind);
    let payload = &event["payload"];
    let time: String = text(event, "time").chars().skip(11).take(12).collect();
    let weight = payload["weight"].as_f64().unwrap_or(0.0) * 100.0;
    let detail = match kind {
        "step" => match payload["reason"].as_str() {
            Some(reason) => reason.to_string(),
            None => format!("{weight:.0}% of traffic on the new release"),
        },
        "requested" => format!("{} {} by {}", text(payload, "kind"), text(payload, "release"), text(event, "actor")),
        "approved" | "rollback_requested" | "promote_requested" => format!("by {}", text(event, "actor")),
        "started" => format!("strategy {}", text(payload, "strategy")),
        _ => text(payload, "reason"),
    };
    println!("  {time}  {kind:<18} {detail}");
    if let Some(evidence) = payload.get("evidence").filter(|e| !e.is_null()) {
        println!(
            "                     {}: canary {:.2}% vs stable {:.2}% over {} vs {} requests; evidence {:.1} ≥ {:.1}",
            text(evidence, "metric"),
            evidence["canary_rate"].as_f64().unwrap_or(0.0) * 100.0,
            evidence["stable_rate"].as_f64().unwrap_or(0.0) * 100.0,
            text(evidence, "canary_requests"),
            text(evidence, "stable_requests"),
            evidence["evidence"].as_f64().unwrap_or(0.0),
            evidence["threshold"].as_f64().unwrap_or(0.0)
        );
    }
}
