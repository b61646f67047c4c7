//! `tandem incident …` and `tandem dora`: incidents from opening to postmortem, and the team's
//! delivery figures, read from a running server.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::Format;
use crate::client::{self, Client, Connection};

#[derive(clap::Subcommand, Debug)]
pub enum IncidentCommand {
    /// Incidents, newest first.
    #[command(after_help = "Examples:\n  tandem incident list --state open\n  tandem incident list --format json")]
    List {
        /// `open`, `triggered`, `acknowledged`, `resolved` or `postmortem_done`.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        service: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        connection: Connection,
    },
    /// An incident: state, suspects, the commits they shipped, and its timeline.
    Show {
        id: i64,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        connection: Connection,
    },
    /// Open an incident by hand; the recent deployments of its service become its suspects.
    #[command(
        after_help = "Examples:\n  tandem incident open \"Checkout is slow\" --service shop --environment production --severity page"
    )]
    Open {
        title: String,
        #[arg(long, default_value = "page")]
        severity: String,
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        environment: Option<String>,
        /// Who leads the response.
        #[arg(long)]
        commander: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Acknowledge: you are on it (stops the clock of time to acknowledge).
    #[command(alias = "acknowledge")]
    Ack {
        id: i64,
        #[command(flatten)]
        connection: Connection,
    },
    /// Resolve: service is restored.
    #[command(after_help = "Examples:\n  tandem incident resolve 3 --how \"cache flushed\"")]
    Resolve {
        id: i64,
        /// How it ended, for the timeline and the postmortem.
        #[arg(long)]
        how: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Add a note to the timeline.
    Note {
        id: i64,
        text: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Name the incident commander (yourself when no name is given).
    Commander {
        id: i64,
        name: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Roll back the incident's suspect deployment.
    Rollback {
        id: i64,
        #[command(flatten)]
        connection: Connection,
    },
    /// The postmortem draft in Markdown; `--write FILE` saves it, `--done` closes it.
    #[command(
        after_help = "Examples:\n  tandem incident postmortem 3 --write postmortems/3.md\n  tandem incident postmortem 3 --done"
    )]
    Postmortem {
        id: i64,
        #[arg(long, value_name = "FILE")]
        write: Option<PathBuf>,
        /// Mark the postmortem done (every action item must be done).
        #[arg(long)]
        done: bool,
        #[command(flatten)]
        connection: Connection,
    },
    /// A postmortem's action items: add one, or mark one done.
    #[command(
        after_help = "Examples:\n  tandem incident action 3 add \"Alert on the checkout error rate\" --owner ana --due 2026-12-15\n  tandem incident action 3 done 1"
    )]
    Action {
        id: i64,
        #[command(subcommand)]
        what: ActionCommand,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum ActionCommand {
    Add {
        title: String,
        #[arg(long)]
        owner: String,
        /// YYYY-MM-DD.
        #[arg(long)]
        due: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
    Done {
        number: i64,
        #[command(flatten)]
        connection: Connection,
    },
}

fn duration(seconds: Option<f64>) -> String {
    match seconds {
        None => "—".into(),
        Some(s) if s < 120.0 => format!("{s:.0}s"),
        Some(s) if s < 7200.0 => format!("{:.1}m", s / 60.0),
        Some(s) => format!("{:.1}h", s / 3600.0),
    }
}

fn say(incident: &api::Incident) {
    println!("incident {} is {}: {}", incident.id, incident.state.as_str().replace('_', " "), incident.title);
}

pub async fn incident(command: IncidentCommand) -> Result<i32> {
    match command {
        IncidentCommand::List { state, service, format, connection } => {
            let mut query = Vec::new();
            if let Some(state) = state {
                query.push(format!("state={}", client::path_segment(&state)));
            }
            if let Some(service) = service {
                query.push(format!("service={}", client::path_segment(&service)));
            }
            let path = format!("/api/v1/incidents?{}", query.join("&"));
            let list: Vec<api::Incident> = Client::new(&connection)?.get(&path).await?;
            if format == Format::Json {
                return client::print_json(&list).map(|()| 0);
            }
            if list.is_empty() {
                println!("no incidents");
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|i| {
                    vec![
                        i.id.to_string(),
                        i.state.as_str().replace('_', " "),
                        i.severity.clone(),
                        client::or_empty(&i.service),
                        i.opened_at.get(..19).unwrap_or(&i.opened_at).replace('T', " "),
                        duration(i.mtta_seconds),
                        duration(i.mttr_seconds),
                        i.suspects.first().map(|s| format!("deployment {}", s.deployment)).unwrap_or_default(),
                        i.title.clone(),
                    ]
                })
                .collect();
            client::table(&["ID", "STATE", "SEVERITY", "SERVICE", "OPENED", "MTTA", "MTTR", "SUSPECT", "TITLE"], &rows);
            Ok(0)
        }
        IncidentCommand::Show { id, format, connection } => {
            let detail: api::IncidentDetail = Client::new(&connection)?.get(&format!("/api/v1/incidents/{id}")).await?;
            if format == Format::Json {
                return client::print_json(&detail).map(|()| 0);
            }
            let i = &detail.incident;
            println!("incident {} — {}", i.id, i.title);
            println!("  state:      {}", i.state.as_str().replace('_', " "));
            println!("  severity:   {} (opened by {}, {})", i.severity, i.opened_by, i.source);
            if let Some(service) = &i.service {
                println!(
                    "  service:    {service}{}",
                    i.environment.as_ref().map(|e| format!(" in {e}")).unwrap_or_default()
                );
            }
            println!("  commander:  {}", i.commander.as_deref().unwrap_or("—"));
            println!("  opened:     {}", i.opened_at);
            println!(
                "  acknowledged: {} (MTTA {})",
                i.acknowledged_by.as_deref().unwrap_or("—"),
                duration(i.mtta_seconds)
            );
            println!("  resolved:   {} (MTTR {})", i.resolution.as_deref().unwrap_or("—"), duration(i.mttr_seconds));
            for s in &i.suspects {
                println!(
                    "  suspect:    deployment {} of {} ({}) to {}, {}",
                    s.deployment,
                    s.service,
                    s.release,
                    s.environment,
                    s.status.replace('_', " ")
                );
            }
            if let Some(s) = i.suspects.first().filter(|_| i.state.is_open()) {
                println!("              roll it back: tandem incident rollback {} (deployment {})", i.id, s.deployment);
            }
            for commit in &detail.commits {
                println!("  commit:     {commit}");
            }
            for item in &i.action_items {
                let state = if item.done { "done" } else { "open" };
                println!(
                    "  action {}:   {} ({}, due {}) {state}",
                    item.number,
                    item.title,
                    item.owner,
                    item.due.as_deref().unwrap_or("—")
                );
            }
            println!("\ntimeline:");
            for entry in &detail.timeline {
                println!("  {}  {}", entry.time.get(11..19).unwrap_or(&entry.time), entry.text);
            }
            Ok(0)
        }
        IncidentCommand::Open { title, severity, service, environment, commander, connection } => {
            let body = api::OpenIncident { title, severity, service, environment, commander };
            let incident: api::Incident = Client::new(&connection)?.post("/api/v1/incidents", Some(&body)).await?;
            say(&incident);
            match incident.suspects.first() {
                Some(s) => println!(
                    "suspect: deployment {} ({}) — `tandem incident rollback {}`",
                    s.deployment, s.release, incident.id
                ),
                None => println!("no deployment of its service started within the look-back window"),
            }
            Ok(0)
        }
        IncidentCommand::Ack { id, connection } => send(&connection, id, "acknowledge", None).await,
        IncidentCommand::Resolve { id, how, connection } => send(&connection, id, "resolve", how).await,
        IncidentCommand::Note { id, text, connection } => send(&connection, id, "notes", Some(text)).await,
        IncidentCommand::Commander { id, name, connection } => send(&connection, id, "commander", name).await,
        IncidentCommand::Rollback { id, connection } => {
            let path = format!("/api/v1/incidents/{id}/rollback");
            let deployment: api::Deployment = Client::new(&connection)?.post(&path, None::<&()>).await?;
            println!(
                "deployment {} of {} ({}) to {}: {}",
                deployment.id,
                deployment.service,
                deployment.release,
                deployment.environment,
                deployment.status.as_str().replace('_', " ")
            );
            Ok(0)
        }
        IncidentCommand::Postmortem { id, write, done, connection } => {
            if done {
                return send(&connection, id, "postmortem-done", None).await;
            }
            let postmortem: api::Postmortem =
                Client::new(&connection)?.get(&format!("/api/v1/incidents/{id}/postmortem")).await?;
            match write {
                Some(path) => {
                    std::fs::write(&path, &postmortem.markdown)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    println!("postmortem draft of incident {id} written to {}", path.display());
                }
                None => print!("{}", postmortem.markdown),
            }
            Ok(0)
        }
        IncidentCommand::Action { id, what } => {
            let (path, body, connection) = match what {
                ActionCommand::Add { title, owner, due, connection } => (
                    format!("/api/v1/incidents/{id}/action-items"),
                    Some(api::NewActionItem { title, owner, due }),
                    connection,
                ),
                ActionCommand::Done { number, connection } => {
                    (format!("/api/v1/incidents/{id}/action-items/{number}/done"), None, connection)
                }
            };
            let incident: api::Incident = Client::new(&connection)?.post(&path, body.as_ref()).await?;
            for item in &incident.action_items {
                let state = if item.done { "done" } else { "open" };
                println!(
                    "{}. {} — {} (due {}) {state}",
                    item.number,
                    item.title,
                    item.owner,
                    item.due.as_deref().unwrap_or("—")
                );
            }
            Ok(0)
        }
    }
}

async fn send(connection: &Connection, id: i64, action: &str, text: Option<String>) -> Result<i32> {
    let body = api::IncidentUpdate { text };
    let path = format!("/api/v1/incidents/{id}/{action}");
    let incident: api::Incident = Client::new(connection)?.post(&path, Some(&body)).await?;
    say(&incident);
    Ok(0)
}

#[derive(clap::Args, Debug)]
pub struct DoraArgs {
    /// The period, in days back from now.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    #[arg(long)]
    pub service: Option<String>,
    /// A team of the on-call file (`teams:`): its services together.
    #[arg(long, conflicts_with = "service")]
    pub team: Option<String>,
    /// The production environment (default: those named production or prod, else all).
    #[arg(long)]
    pub environment: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    #[command(flatten)]
    pub connection: Connection,
}

pub async fn dora(args: DoraArgs) -> Result<i32> {
    let mut path = format!("/api/v1/dora?days={}", args.days);
    if let Some(service) = &args.service {
        path.push_str(&format!("&service={}", client::path_segment(service)));
    }
    if let Some(environment) = &args.environment {
        path.push_str(&format!("&environment={}", client::path_segment(environment)));
    }
    if let Some(team) = &args.team {
        path.push_str(&format!("&team={}", client::path_segment(team)));
    }
    let dora: api::Dora = Client::new(&args.connection)?.get(&path).await?;
    if args.format == Format::Json {
        return client::print_json(&dora).map(|()| 0);
    }
    println!(
        "DORA for {} in {} over {} → {} ({} deployments)",
        match (&dora.service, &dora.team) {
            (Some(service), _) => service.clone(),
            (None, Some(team)) => format!("team {team} ({})", dora.services.join(", ")),
            (None, None) => "every service".to_string(),
        },
        dora.environments.join(", "),
        dora.from.get(..10).unwrap_or(&dora.from),
        dora.to.get(..10).unwrap_or(&dora.to),
        dora.deployments
    );
    let rows: Vec<Vec<String>> = [
        ("deployment frequency", &dora.deployment_frequency),
        ("lead time for changes", &dora.lead_time_for_changes),
        ("change failure rate", &dora.change_failure_rate),
        ("time to restore", &dora.time_to_restore),
        ("rework rate", &dora.rework_rate),
    ]
    .into_iter()
    .map(|(name, m)| {
        let value = match (m.value, m.unit.as_str()) {
            (None, _) => "—".to_string(),
            (Some(v), "ratio") => format!("{:.1}%", v * 100.0),
            (Some(v), "hours") if v < 1.0 => format!("{:.0} min", v * 60.0),
            (Some(v), "hours") => format!("{v:.1} h"),
            (Some(v), unit) => format!("{v:.2} {unit}"),
        };
        vec![name.to_string(), value, m.band.clone().unwrap_or_else(|| "—".into()), m.basis.clone()]
    })
    .collect();
    client::table(&["MEASURE", "VALUE", "BAND", "BASIS"], &rows);
    Ok(0)
}

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct OncallArgs {
    #[command(subcommand)]
    pub command: Option<OncallCommand>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(clap::Subcommand, Debug)]
pub enum OncallCommand {
    /// Put someone on call in a schedule's place for a while.
    #[command(
        after_help = "Examples:\n  tandem oncall override primary ana --for 4h\n  tandem oncall override primary bo --from 2026-12-24T18:00:00Z --for 1d"
    )]
    Override {
        schedule: String,
        user: String,
        /// How long: 30m, 4h, 1d.
        #[arg(long = "for", default_value = "1h")]
        duration: String,
        /// When it starts (RFC 3339); now by default.
        #[arg(long)]
        from: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
}

fn print_oncall(list: &[api::OnCallNow]) {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                s.schedule.clone(),
                s.user.clone().unwrap_or_else(|| "nobody".into()),
                s.until.clone().unwrap_or_else(|| "—".into()),
                s.next.clone().unwrap_or_else(|| "—".into()),
                s.overrides.iter().map(|o| format!("{} {}→{}", o.user, o.from, o.until)).collect::<Vec<_>>().join("; "),
            ]
        })
        .collect();
    client::table(&["SCHEDULE", "ON CALL", "UNTIL", "NEXT", "OVERRIDES"], &rows);
}

/// `tandem oncall`: who is on call now and next; `tandem oncall override`.
pub async fn oncall(args: OncallArgs) -> Result<i32> {
    match args.command {
        None => {
            let list: Vec<api::OnCallNow> = Client::new(&args.connection)?.get("/api/v1/oncall").await?;
            if args.format == Format::Json {
                return client::print_json(&list).map(|()| 0);
            }
            print_oncall(&list);
            Ok(0)
        }
        Some(OncallCommand::Override { schedule, user, duration, from, connection }) => {
            let ms = spec::rules::prometheus_duration(&duration)
                .ok_or_else(|| anyhow::anyhow!("--for {duration}: not a duration\n  hint: e.g. 30m, 4h, 1d"))?;
            let start = match &from {
                Some(text) => text.parse::<jiff::Timestamp>().map_err(|_| {
                    anyhow::anyhow!("--from {text}: not an RFC 3339 time\n  hint: e.g. 2026-12-24T18:00:00Z")
                })?,
                None => jiff::Timestamp::now(),
            };
            let until = start.checked_add(jiff::SignedDuration::from_millis(ms as i64))?;
            let body = api::NewOverride { user, from: from.map(|_| start.to_string()), until: until.to_string() };
            let path = format!("/api/v1/oncall/{}/overrides", client::path_segment(&schedule));
            let list: Vec<api::OnCallNow> = Client::new(&connection)?.post(&path, Some(&body)).await?;
            print_oncall(&list);
            Ok(0)
        }
    }
}
