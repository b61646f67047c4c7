//! `tandem deploy`, `deployments`, `approve`, `rollback` and `environments`: deployments on a
//! server, as requests and as the record of what each one did.

use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;

use crate::Format;
use crate::client::{self, Client, Connection};

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
    /// The release's CycloneDX SBOM (JSON).
    Sbom {
        id: i64,
        #[command(flatten)]
        connection: Connection,
    },
    /// The release's signed provenance: a DSSE envelope of an in-toto statement (SLSA v1).
    Provenance {
        id: i64,
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
    let request = api::DeployRequest { service: args.repository, environment: args.environment, git_ref: args.git_ref };
    let deployment: api::Deployment = client.post("/api/v1/deployments", Some(&request)).await?;
    if args.format == Format::Json && !args.wait {
        return client::print_json(&deployment).map(|()| 0);
    }
    let id = deployment.id;
    println!("deployment {id}: {} {} to {} requested", deployment.service, deployment.release, deployment.environment);
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
            let list: Vec<api::Deployment> =
                Client::new(&connection)?.get(&format!("/api/v1/deployments?{}", query.join("&"))).await?;
            if format == Format::Json {
                return client::print_json(&list).map(|()| 0);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|d| {
                    vec![
                        d.id.to_string(),
                        d.service.clone(),
                        d.environment.clone(),
                        d.release.clone(),
                        d.kind.as_str().to_string(),
                        d.status.as_str().to_string(),
                        format!("{:.0}%", d.weight * 100.0),
                        d.created.clone(),
                        client::or_empty(&d.reason).chars().take(70).collect(),
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
        DeploymentsCommand::Sbom { id, connection } => {
            let sbom: serde_json::Value =
                Client::new(&connection)?.get(&format!("/api/v1/deployments/{id}/sbom")).await?;
            client::print_json(&sbom).map(|()| 0)
        }
        DeploymentsCommand::Provenance { id, connection } => {
            let envelope: serde_json::Value =
                Client::new(&connection)?.get(&format!("/api/v1/deployments/{id}/provenance")).await?;
            client::print_json(&envelope).map(|()| 0)
        }
        DeploymentsCommand::Show { id, wait, format, connection } => {
            let client = Client::new(&connection)?;
            if wait {
                return follow(&client, id, format).await;
            }
            let detail: api::DeploymentDetail = client.get(&format!("/api/v1/deployments/{id}")).await?;
            if format == Format::Json {
                return client::print_json(&detail).map(|()| 0);
            }
            print_header(&detail.deployment);
            for event in &detail.events {
                print_event(event);
            }
            Ok(0)
        }
    }
}

pub async fn approve(id: i64, reason: Option<String>, connection: Connection) -> Result<i32> {
    let request = api::ApproveRequest { reason };
    let deployment: api::Deployment =
        Client::new(&connection)?.post(&format!("/api/v1/deployments/{id}/approve"), Some(&request)).await?;
    println!(
        "deployment {id} approved by {}; it starts once no other gate holds it",
        deployment.approved_by.as_deref().unwrap_or("you")
    );
    Ok(0)
}

pub async fn promote(id: i64, connection: Connection) -> Result<i32> {
    let deployment: api::Deployment =
        Client::new(&connection)?.post(&format!("/api/v1/deployments/{id}/promote"), None::<&()>).await?;
    println!("deployment {id} ({}) is being promoted: its remaining steps are skipped", deployment.release);
    Ok(0)
}

pub async fn rollback(args: RollbackArgs) -> Result<i32> {
    let client = Client::new(&args.connection)?;
    let path = format!(
        "/api/v1/environments/{}/{}/rollback",
        client::path_segment(&args.service),
        client::path_segment(&args.environment)
    );
    let deployment: api::Deployment =
        client.post(&path, Some(&api::RollbackRequest { emergency: args.emergency })).await?;
    let id = deployment.id;
    if deployment.abort_requested {
        println!(
            "deployment {id} ({}) is being rolled back: traffic returns to the stable release",
            deployment.release
        );
    } else {
        println!("deployment {id}: back to release {} ({})", deployment.release, deployment.kind.as_str());
    }
    if args.wait {
        let code = follow(&client, id, Format::Text).await?;
        // For an aborted rollout, rolled back is the wanted end.
        return Ok(if deployment.abort_requested { 1 - code } else { code });
    }
    Ok(0)
}

pub async fn environments(format: Format, connection: Connection) -> Result<i32> {
    let list: Vec<api::Environment> = Client::new(&connection)?.get("/api/v1/environments").await?;
    if format == Format::Json {
        return client::print_json(&list).map(|()| 0);
    }
    let release = |r: &Option<api::ReleaseRef>| r.as_ref().map_or_else(|| "-".to_string(), |r| r.release.clone());
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|e| {
            vec![
                e.service.clone(),
                e.environment.clone(),
                release(&e.stable),
                release(&e.previous),
                client::or_empty(&e.listen),
            ]
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
        let detail: api::DeploymentDetail = client.get(&format!("/api/v1/deployments/{id}")).await?;
        if !header && format == Format::Text {
            print_header(&detail.deployment);
            header = true;
        }
        for event in detail.events.iter().skip(printed) {
            if format == Format::Json {
                println!("{}", serde_json::to_string(event)?);
            } else {
                print_event(event);
            }
        }
        printed = detail.events.len();
        let status = detail.deployment.status;
        if status.is_finished() {
            return Ok(if status == api::DeploymentStatus::Promoted { 0 } else { 1 });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn print_header(d: &api::Deployment) {
    println!(
        "deployment {}  {} {} → {}  {} ({})",
        d.id,
        d.service,
        d.release,
        d.environment,
        d.status.as_str(),
        d.kind.as_str()
    );
}

fn print_event(event: &api::DeploymentEvent) {
    let kind = event.kind.strip_prefix("deployment.").unwrap_or(&event.kind);
    let payload = &event.payload;
    let time: String = event.time.chars().skip(11).take(12).collect();
    let weight = payload.weight.unwrap_or(0.0) * 100.0;
    let detail = match kind {
        "step" => match &payload.reason {
            Some(reason) => reason.clone(),
            None => format!("{weight:.0}% of traffic on the new release"),
        },
        "requested" => {
            format!("{} {} by {}", client::or_empty(&payload.kind), client::or_empty(&payload.release), event.actor)
        }
        "approved" | "rollback_requested" | "promote_requested" => format!("by {}", event.actor),
        "started" => format!("strategy {}", client::or_empty(&payload.strategy)),
        _ => client::or_empty(&payload.reason),
    };
    println!("  {time}  {kind:<18} {detail}");
    if let Some(e) = &payload.evidence {
        println!(
            "                     {}: canary {:.2}% vs stable {:.2}% over {} vs {} requests; evidence {:.1} ≥ {:.1}",
            e.metric,
            e.canary_rate * 100.0,
            e.stable_rate * 100.0,
            e.canary_requests,
            e.stable_requests,
            e.evidence,
            e.threshold
        );
    }
}
