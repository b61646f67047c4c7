//! The `tandem` command line: run and validate workflows locally, serve them to a team, and talk
//! to a running server.

mod access;
mod actions;
mod alerting;
mod changes;
mod client;
mod demo;
mod deployments;
mod deps;
mod incidents;
mod monitoring;
mod proxy;
mod render;
mod run;
mod scan;
mod secrets;
mod serve;
mod validate;
mod workflows;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use client::{Client, Connection};

#[derive(Parser)]
#[command(name = "tandem", version, about = "Ship often and stay up: CI/CD, deployments and reliability in one binary")]
struct Cli {
    /// Repository to work in (default: the git repository around the current directory).
    #[arg(short = 'C', long, global = true, value_name = "DIR")]
    repo: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Start a server with a demo repository and its first run; print the URL and the admin token.
    Up(serve::ServerArgs),
    /// Run the repository's workflows on this machine, as the server will.
    Run(run::RunArgs),
    /// Scan the repository: `secrets` checks its tracked files against gitleaks-format rules.
    #[command(subcommand)]
    Scan(ScanCommand),
    /// Actions used by `uses:`: fetch them ahead of time, list what is cached.
    #[command(subcommand)]
    Actions(actions::ActionsCommand),
    /// Check every workflow file and print all diagnostics.
    #[command(
        after_help = "Examples:\n  tandem validate\n  tandem validate --format json\n  tandem validate path/to/workflow.yml other/dir/"
    )]
    Validate {
        /// Files or directories to check instead of the repository's workflows.
        paths: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Serve the API, take webhooks, queue and execute runs. Ctrl-C or SIGTERM stops it with every
    /// instance it runs.
    Server(serve::ServerArgs),
    /// End what a stopped or crashed server left running: steps, instances, containers, services.
    #[command(
        after_help = "A server does this itself when it starts; use it after a crash when the server is not started again\n(e.g. systemd's ExecStopPost). It refuses while a server runs on the data directory.\n\nExamples:\n  tandem reap --data ./data"
    )]
    Reap(serve::DataArgs),
    /// Split traffic between stable and canary upstreams; with --steps, run a canary judged live.
    Proxy(proxy::ProxyArgs),
    /// Deploy a commit to an environment of its service file, by the environment's strategy.
    Deploy(deployments::DeployArgs),
    /// Deployments on the server and what each one did.
    #[command(subcommand)]
    Deployments(deployments::DeploymentsCommand),
    /// Approve a deployment held for approval.
    #[command(after_help = "Examples:\n  tandem approve 12")]
    Approve {
        id: i64,
        /// Why it may go although its commit has security findings (overrides a `security: block`
        /// gate; kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Promote a running deployment now: its remaining steps are skipped.
    #[command(after_help = "Examples:\n  tandem promote 12")]
    Promote {
        id: i64,
        #[command(flatten)]
        connection: Connection,
    },
    /// Roll back: the rollout in progress, else to the previous release.
    Rollback(deployments::RollbackArgs),
    /// Environments with their stable release and proxy address.
    Environments {
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        connection: Connection,
    },
    /// Repositories the server follows.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Runs on the server.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// The tamper-evident event log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// API tokens: their owner, scopes and expiry.
    #[command(subcommand)]
    Token(access::TokenCommand),
    /// People who sign in to the web pages with a password.
    #[command(subcommand)]
    User(access::UserCommand),
    /// Change requests of hosted repositories: list, show, diff, comment, approve, merge.
    #[command(subcommand)]
    Change(changes::ChangeCommand),
    /// A hosted repository's merge queue.
    Queue {
        #[arg(value_name = "REPO")]
        repository: String,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        connection: Connection,
    },
    /// Roles of users and teams on the server, a repository, a service or an environment.
    #[command(subcommand)]
    Access(access::AccessCommand),
    /// Teams: roles granted to a team apply to its members.
    #[command(subcommand)]
    Team(access::TeamCommand),
    /// Evaluate PromQL on the server, at one instant or over a range.
    Query(monitoring::QueryArgs),
    /// The time-series store: import past samples.
    #[command(subcommand)]
    Metrics(monitoring::MetricsCommand),
    /// Prometheus rule files.
    #[command(subcommand)]
    Rules(monitoring::RulesCommand),
    /// Alert routing: check an Alertmanager configuration file.
    #[command(subcommand)]
    Routes(alerting::RoutesCommand),
    /// A service at a glance: SLOs, probes, key series and deployments on one time axis.
    #[command(subcommand)]
    Service(monitoring::ServiceCommand),
    /// SLOs: error budget, burn rates, time to exhaustion, alerts.
    #[command(subcommand)]
    Slo(monitoring::SloCommand),
    /// Probes and how they stand; exits 1 when one is failing.
    #[command(after_help = "Examples:\n  tandem probes\n  tandem probes --format json")]
    Probes {
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        connection: Connection,
    },
    /// Forecasts and anomalies that hold now: warnings with their evidence.
    #[command(after_help = "Examples:\n  tandem insights\n  tandem insights --format json")]
    Insights {
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        connection: Connection,
    },
    /// Ping a heartbeat probe: run it at the end of a job or cron task.
    #[command(
        after_help = "Examples:\n  tandem heartbeat nightly-backup\n  backup.sh && tandem heartbeat nightly-backup --service shop --environment production\n  curl -X POST -H \"Authorization: Bearer $TANDEM_TOKEN\" $TANDEM_URL/api/v1/heartbeats/nightly-backup"
    )]
    Heartbeat {
        name: String,
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        environment: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Secrets for runs on the server: sealed at rest, masked in logs, never shown again.
    #[command(subcommand)]
    Secret(secrets::SecretCommand),
    /// Variables for runs on the server (`vars.NAME`).
    #[command(subcommand)]
    Var(secrets::VarCommand),
    /// Silences: mute matching alerts for a while.
    #[command(subcommand)]
    Silence(alerting::SilenceCommand),
    /// Incidents: open, acknowledge, resolve, roll back the suspect, write the postmortem.
    #[command(subcommand)]
    Incident(incidents::IncidentCommand),
    /// DORA's delivery figures from Tandem's own records, with their performance bands.
    #[command(after_help = "Examples:\n  tandem dora\n  tandem dora --service shop --days 90 --format json")]
    Dora(incidents::DoraArgs),
    /// Who is on call now and next in each schedule; `override` puts someone in for a while.
    #[command(after_help = "Examples:\n  tandem oncall\n  tandem oncall override primary ana --for 4h")]
    Oncall(incidents::OncallArgs),
    /// The notification log: every attempt to tell a receiver, newest first.
    Notifications {
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        connection: Connection,
    },
    /// Alerts firing now (SLO burn rates, SLIs without data).
    Alerts {
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Subcommand)]
enum ScanCommand {
    /// Secrets in the tracked files, by gitleaks-format rules; exits 1 when one is found.
    #[command(
        after_help = "Examples:\n  tandem scan secrets --config gitleaks.toml\n  tandem scan secrets --format json > findings.json"
    )]
    Secrets(scan::ScanArgs),
    /// Vulnerable dependencies: the lock files (Cargo.lock, package-lock.json, requirements.txt,
    /// go.sum) against an offline OSV export; exits 1 when one is found.
    #[command(
        after_help = "Examples:\n  tandem scan deps --osv ./osv-export\n  TANDEM_OSV=/var/lib/osv tandem scan deps --format json"
    )]
    Deps(deps::DepsArgs),
}

#[derive(Subcommand)]
enum RepoCommand {
    /// Add a repository: a local path or a git URL. Prints its webhook secret once.
    #[command(
        after_help = "Examples:\n  tandem repo add ./my-service --poll 30\n  tandem repo add https://git.example.com/team/app.git --name team/app"
    )]
    Add {
        source: String,
        /// Name (for forges: `owner/name` as the webhook payload calls it). Default: the last path segment.
        #[arg(long)]
        name: Option<String>,
        /// Poll the repository's refs every this many seconds (for repositories without webhooks).
        #[arg(long, value_name = "SECONDS")]
        poll: Option<i64>,
        /// Post commit statuses to this forge: github, gitea, forgejo or gitlab.
        #[arg(long, requires_all = ["api_url", "status_token"])]
        forge: Option<String>,
        /// The forge's API base, e.g. https://api.github.com, https://gitea.example/api/v1, https://gitlab.example/api/v4.
        #[arg(long, value_name = "URL")]
        api_url: Option<String>,
        /// A token allowed to post commit statuses.
        #[arg(long, env = "TANDEM_STATUS_TOKEN", hide_env_values = true, value_name = "TOKEN")]
        status_token: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Host a new repository on the server (clone it with a token as the password).
    #[command(
        after_help = "Examples:\n  tandem repo create shop\n  git clone http://tandem:$TANDEM_TOKEN@127.0.0.1:8080/git/shop.git"
    )]
    Create {
        name: String,
        /// A branch that moves only through the merge queue (repeatable; default: main).
        #[arg(long = "protect")]
        protect: Vec<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// List repositories.
    List {
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        connection: Connection,
    },
    /// Queue the runs a push of a ref would start (default: the default branch).
    Run {
        name: String,
        #[arg(long = "ref")]
        git_ref: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Archive a repository: read-only (pushes refused), no new runs, no polling; its history
    /// (runs, changes, deployments) stays.
    #[command(after_help = "Examples:\n  tandem repo archive old-site\n  tandem repo unarchive old-site")]
    Archive {
        name: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Make an archived repository active again.
    Unarchive {
        name: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Scan a repository's whole history for secrets on the server (the rules of `.gitleaks.toml`
    /// at its head; `.gitleaksignore` honoured). Exit code 1 when something is found.
    #[command(after_help = "Examples:\n  tandem repo scan shop\n  tandem repo scan shop --format json")]
    Scan {
        name: String,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        #[command(flatten)]
        connection: Connection,
    },
    /// One commit: its runs, the security findings of their scans, and its deployments.
    #[command(
        after_help = "Examples:\n  tandem repo commit shop 3f2c1e9\n  tandem repo commit shop main --format json"
    )]
    Commit {
        name: String,
        /// A commit (full or short), branch or tag.
        rev: String,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Subcommand)]
enum RunsCommand {
    /// Recent runs, newest first.
    List {
        #[arg(long)]
        repo: Option<String>,
        #[arg(long)]
        branch: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        connection: Connection,
    },
    /// One run: status, jobs, steps, durations.
    Show {
        id: i64,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        connection: Connection,
    },
    /// A run's log; `--follow` streams it live until the run ends.
    Logs {
        id: i64,
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        connection: Connection,
    },
    /// Cancel a queued or running run.
    Cancel {
        id: i64,
        #[command(flatten)]
        connection: Connection,
    },
    /// Queue a finished run again; `--failed` re-runs only its failed jobs (with what they need).
    Rerun {
        id: i64,
        #[arg(long)]
        failed: bool,
        #[command(flatten)]
        connection: Connection,
    },
    /// Let a job held at its environment's gates start (and get the environment's secrets); the
    /// deployment it then requests is approved by you too. Needs a maintainer other than whoever
    /// started the run.
    #[command(
        after_help = "Examples:\n  tandem runs approve 42 deploy\n  tandem runs approve 42 deploy --reason \"the finding is a test fixture\""
    )]
    Approve {
        id: i64,
        /// The job's id in the workflow (its log says it is waiting, and for what).
        job: String,
        /// Why it may go although the commit has security findings (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check every link of the hash-chained event log; reports the first broken one. With
    /// `--checkpoint`, also that the log still holds the event a signed checkpoint names.
    #[command(
        after_help = "Examples:\n  tandem audit verify --data ./data\n  tandem audit verify --data ./data --checkpoint kept/checkpoint-1200.json --public-key 3b6a…"
    )]
    Verify(serve::VerifyArgs),
    /// Sign the log's newest event now (Ed25519) and print the checkpoint: keep it elsewhere.
    #[command(after_help = "Examples:\n  tandem audit checkpoint > /mnt/offsite/checkpoint-$(date +%F).json")]
    Checkpoint {
        #[command(flatten)]
        connection: Connection,
    },
    /// The event log from the server, oldest first, filtered; `--format json` writes JSON lines.
    #[command(after_help = "Examples:
  tandem audit log --kind secret.
  tandem audit log --actor admin --after 1200
  tandem audit log --format json > audit.jsonl")]
    Log(secrets::AuditLogArgs),
}

fn main() -> ExitCode {
    let cli = parse_run(&std::env::args_os().collect::<Vec<_>>()).unwrap_or_else(Cli::parse);
    // What the server and the libraries report for operators (`TANDEM_LOG=debug` for more).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TANDEM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .init();
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// `tandem run …` parsed against the `run` subcommand alone. Building every subcommand's
/// arguments, as [`Cli::parse`] does, costs a local run more than a millisecond before its first
/// job. Anything else — another subcommand, `--help`, a mistake — returns `None`, and the full
/// parser answers with its usual help and errors.
fn parse_run(args: &[std::ffi::OsString]) -> Option<Cli> {
    use clap::{Args, FromArgMatches};
    if args.get(1).is_none_or(|word| word != "run") {
        return None;
    }
    let repo = clap::Arg::new("repo").short('C').long("repo").value_parser(clap::value_parser!(PathBuf));
    let command = run::RunArgs::augment_args(clap::Command::new("run").arg(repo).disable_help_flag(true));
    let mut matches = command.try_get_matches_from(&args[1..]).ok()?;
    let repo = matches.remove_one::<PathBuf>("repo");
    let args = run::RunArgs::from_arg_matches_mut(&mut matches).ok()?;
    Some(Cli { repo, command: Command::Run(args) })
}

fn dispatch(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Validate { paths, format } => validate::run(&repo_root(cli.repo)?, &paths, format),
        Command::Run(args) => run::run(&repo_root(cli.repo)?, args),
        Command::Scan(ScanCommand::Secrets(args)) => scan::secrets(&repo_root(cli.repo)?, args),
        Command::Scan(ScanCommand::Deps(args)) => deps::scan(&repo_root(cli.repo)?, args),
        Command::Actions(command @ actions::ActionsCommand::List { .. }) => {
            actions::run(Path::new("."), command).map(|()| 0)
        }
        Command::Actions(command) => actions::run(&repo_root(cli.repo)?, command).map(|()| 0),
        Command::Server(args) => serve::server(args),
        Command::Proxy(args) => proxy::run(args),
        Command::Up(args) => serve::up(args),
        Command::Reap(args) => serve::reap(args),
        Command::Audit(AuditCommand::Verify(args)) => serve::audit_verify(args),
        Command::Audit(AuditCommand::Log(args)) => block_on(secrets::audit_log(args)),
        Command::Audit(AuditCommand::Checkpoint { connection }) => block_on(async move {
            let checkpoint: api::Checkpoint =
                Client::new(&connection)?.post("/api/v1/audit/checkpoint", None::<&()>).await?;
            println!("{}", serde_json::to_string_pretty(&checkpoint)?);
            Ok(0)
        }),
        Command::Token(command) => access::token(command),
        Command::User(command) => access::user(command),
        Command::Access(command) => access::access(command),
        Command::Change(command) => block_on(changes::change(command)),
        Command::Queue { repository, format, connection } => block_on(changes::queue(&repository, format, connection)),
        Command::Team(command) => access::team(command),
        Command::Repo(command) => block_on(repo_command(command)),
        Command::Query(args) => block_on(monitoring::query(args)),
        Command::Metrics(command) => monitoring::metrics(command),
        Command::Slo(command) => block_on(monitoring::slo(command)),
        Command::Rules(command) => monitoring::rules(command),
        Command::Routes(command) => alerting::routes(command),
        Command::Service(command) => block_on(monitoring::service(command)),
        Command::Probes { format, connection } => block_on(monitoring::probes(format, connection)),
        Command::Alerts { format, connection } => block_on(monitoring::alerts(format, connection)),
        Command::Insights { format, connection } => block_on(monitoring::insights(format, connection)),
        Command::Notifications { format, connection } => block_on(alerting::notifications(format, connection)),
        Command::Silence(command) => block_on(alerting::silence(command)),
        Command::Secret(command) => block_on(secrets::secret(command)),
        Command::Var(command) => block_on(secrets::var(command)),
        Command::Incident(command) => block_on(incidents::incident(command)),
        Command::Dora(args) => block_on(incidents::dora(args)),
        Command::Oncall(args) => block_on(incidents::oncall(args)),
        Command::Heartbeat { name, service, environment, connection } => {
            block_on(monitoring::heartbeat(name, service, environment, connection))
        }
        Command::Runs(command) => block_on(runs_command(command)),
        Command::Deploy(args) => block_on(deployments::deploy(args)),
        Command::Deployments(command) => block_on(deployments::deployments(command)),
        Command::Approve { id, reason, connection } => block_on(deployments::approve(id, reason, connection)),
        Command::Rollback(args) => block_on(deployments::rollback(args)),
        Command::Promote { id, connection } => block_on(deployments::promote(id, connection)),
        Command::Environments { format, connection } => block_on(deployments::environments(format, connection)),
    }
}

fn block_on(future: impl Future<Output = Result<i32>>) -> Result<i32> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(future)
}

async fn repo_command(command: RepoCommand) -> Result<i32> {
    match command {
        RepoCommand::Add { source, name, poll, forge, api_url, status_token, connection } => {
            let is_url = source.contains("://") || source.contains('@');
            let source = if is_url {
                source
            } else {
                std::fs::canonicalize(&source)
                    .with_context(|| format!("{source} does not exist"))?
                    .to_string_lossy()
                    .into_owned()
            };
            let client = Client::new(&connection)?;
            let request = api::AddRepository {
                source: source.clone(),
                name,
                poll_seconds: poll,
                api_url: forge.as_ref().and(api_url),
                status_token: forge.as_ref().and(status_token),
                forge,
            };
            let added: api::AddedRepository = client.post("/api/v1/repos", Some(&request)).await?;
            println!("added {} ({})", added.repo.name, added.repo.source);
            println!("webhook secret (shown once): {}", added.webhook_secret);
            let base = connection.url.trim_end_matches('/');
            println!("webhook URLs: {base}/api/v1/webhooks/github | /gitea | /gitlab");
            if let Some(warning) = &added.warning {
                println!("warning: {warning}");
            }
            Ok(0)
        }
        RepoCommand::Create { name, protect, connection } => changes::create(name, protect, connection).await,
        RepoCommand::Archive { name, connection } => changes::archive(name, true, connection).await,
        RepoCommand::Unarchive { name, connection } => changes::archive(name, false, connection).await,
        RepoCommand::Scan { name, format, connection } => changes::scan(name, format, connection).await,
        RepoCommand::Commit { name, rev, format, connection } => changes::commit(name, rev, format, connection).await,
        RepoCommand::List { format, connection } => {
            let list: api::RepositoryList = Client::new(&connection)?.get("/api/v1/repos").await?;
            if format == Format::Json {
                client::print_json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .repos
                    .iter()
                    .map(|r| {
                        let triggers = r.poll_seconds.map(|s| format!("{s}s")).unwrap_or_else(|| "webhooks".into());
                        let state = if r.archived.is_some() { "archived" } else { "active" };
                        vec![r.name.clone(), r.source.clone(), triggers, state.to_string()]
                    })
                    .collect();
                client::table(&["NAME", "SOURCE", "TRIGGERS", "STATE"], &rows);
            }
            Ok(0)
        }
        RepoCommand::Run { name, git_ref, connection } => {
            let path = format!("/api/v1/repos/{}/runs", client::path_segment(&name));
            let triggered: api::Triggered =
                Client::new(&connection)?.post(&path, Some(&api::TriggerRequest { git_ref })).await?;
            println!("queued run(s) {:?} for {} at {}", triggered.runs, triggered.git_ref, triggered.sha);
            Ok(0)
        }
    }
}

async fn runs_command(command: RunsCommand) -> Result<i32> {
    match command {
        RunsCommand::List { repo, branch, status, limit, format, connection } => {
            let mut query = vec![format!("limit={limit}")];
            for (key, value) in [("repo", repo), ("branch", branch), ("status", status)] {
                if let Some(value) = value {
                    query.push(format!("{key}={}", client::path_segment(&value)));
                }
            }
            let list: api::RunList =
                Client::new(&connection)?.get(&format!("/api/v1/runs?{}", query.join("&"))).await?;
            client::print_runs(&list, format)?;
            Ok(0)
        }
        RunsCommand::Show { id, format, connection } => {
            let run: api::RunDetail = Client::new(&connection)?.get(&format!("/api/v1/runs/{id}")).await?;
            client::print_run(&run, format)?;
            Ok(0)
        }
        RunsCommand::Logs { id, follow, connection } => {
            let client = Client::new(&connection)?;
            if follow {
                let status = client.follow(id).await?;
                println!("run {id}: {status}");
                return Ok(if status == "success" { 0 } else { 1 });
            }
            // Page by page: a long log is never held whole, here or on the server.
            let mut after = 0;
            loop {
                let page: api::LogPage = client.get(&format!("/api/v1/runs/{id}/logs?after={after}")).await?;
                for line in &page.lines {
                    client::print_line(line);
                }
                after = page.next;
                if page.complete {
                    return Ok(0);
                }
            }
        }
        RunsCommand::Cancel { id, connection } => {
            let answer: api::CancelResponse =
                Client::new(&connection)?.post(&format!("/api/v1/runs/{id}/cancel"), None::<&()>).await?;
            println!("run {id}: cancel requested (now {})", answer.status.as_str());
            Ok(0)
        }
        RunsCommand::Approve { id, job, reason, connection } => {
            let answer: api::JobApproval = Client::new(&connection)?
                .post(&format!("/api/v1/runs/{id}/approve"), Some(&api::ApproveJob { job, reason }))
                .await?;
            println!(
                "run {id}: job {} may use environment {} (approved by {})",
                answer.job, answer.environment, answer.approved_by
            );
            Ok(0)
        }
        RunsCommand::Rerun { id, failed, connection } => {
            let answer: api::RerunResponse = Client::new(&connection)?
                .post(&format!("/api/v1/runs/{id}/rerun"), Some(&api::RerunRequest { failed }))
                .await?;
            let jobs = answer.jobs.filter(|_| failed).map(|j| format!(" for jobs {j:?}")).unwrap_or_default();
            println!("queued run {}{jobs}", answer.id);
            Ok(0)
        }
    }
}

/// The repository root: `--repo`, else the git top level around the current directory, else it.
fn repo_root(repo: Option<PathBuf>) -> Result<PathBuf> {
    let start = match repo {
        Some(path) => path,
        None => std::env::current_dir()?,
    };
    // The nearest folder with a `.git` (a directory, or a file in a worktree), as git finds it.
    let start = std::path::absolute(&start).unwrap_or(start);
    Ok(start.ancestors().find(|dir| dir.join(".git").exists()).map_or_else(|| start.clone(), Path::to_path_buf))
}

#[cfg(test)]
mod parse_run_tests {
    use clap::Parser;

    fn words(line: &str) -> Vec<std::ffi::OsString> {
        line.split_whitespace().map(Into::into).collect()
    }

    /// The `run` fast path reads a command line exactly as the full parser does, and leaves to it
    /// what it does not handle itself.
    #[test]
    fn the_run_fast_path_agrees_with_the_full_parser() {
        for line in [
            "tandem run",
            "tandem run ci --job test -j 3",
            "tandem run -C /tmp/repo --event pull_request --worktree",
            "tandem run deploy --input env=prod --var a=b --secret X=y --keep",
            "tandem run -P ubuntu-latest=debian:12 --format json",
        ] {
            let fast = super::parse_run(&words(line)).unwrap_or_else(|| panic!("`{line}` took the slow path"));
            let full = super::Cli::try_parse_from(words(line)).unwrap();
            let (super::Command::Run(fast_args), super::Command::Run(full_args)) = (fast.command, full.command) else {
                panic!("`{line}` is not a run")
            };
            assert_eq!(format!("{fast_args:?}"), format!("{full_args:?}"), "{line}");
            assert_eq!(fast.repo, full.repo, "{line}");
        }
        for line in
            ["tandem run --help", "tandem run -h", "tandem run --no-such-flag", "tandem -C /tmp run", "tandem validate"]
        {
            assert!(super::parse_run(&words(line)).is_none(), "`{line}` is for the full parser");
        }
    }
}
