//! `tandem proxy`: the traffic-splitting proxy on its own — fixed weights, or a whole canary
//! (`--steps`) judged live and rolled back automatically.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rollout::analysis::Config;
use targets::canary::{self, Plan, Record};
use targets::proxy::{self, Proxy, Routing};

use crate::Format;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  tandem proxy --stable 127.0.0.1:8001 --canary 127.0.0.1:8002 --weight 10
  tandem proxy --stable 127.0.0.1:8001 --canary 127.0.0.1:8002 --steps 10,50,100   # a canary, rolled back on its own
  tandem proxy --stable-command 'python3 app.py --port $PORT' --canary-command 'python3 new.py --port $PORT' --instances 2 --health /health --steps 10,50,100")]
pub struct ProxyArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// A stable upstream (repeatable).
    #[arg(long, value_name = "HOST:PORT", required_unless_present = "stable_command")]
    pub stable: Vec<SocketAddr>,
    /// Run the stable version: a shell command line listening on `$PORT`.
    #[arg(long, value_name = "COMMAND")]
    pub stable_command: Option<String>,
    /// Run the canary version: a shell command line listening on `$PORT`.
    #[arg(long, value_name = "COMMAND")]
    pub canary_command: Option<String>,
    /// Instances of each version Tandem runs.
    #[arg(long, default_value_t = 1)]
    pub instances: usize,
    /// HTTP path that answers 2xx when an instance Tandem runs is ready.
    #[arg(long, default_value = "/", value_name = "PATH")]
    pub health: String,
    /// Seconds the instances Tandem runs have to become ready.
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    pub ready_timeout: f64,
    /// A canary upstream (repeatable).
    #[arg(long, value_name = "HOST:PORT")]
    pub canary: Vec<SocketAddr>,
    /// Percent of requests for the canary, when no `--steps` are given.
    #[arg(long, default_value_t = 0.0, value_name = "PERCENT")]
    pub weight: f64,
    /// Run a canary through these traffic percentages, e.g. 10,50,100; exit 0 when promoted, 1 when rolled back.
    #[arg(long, value_delimiter = ',', value_name = "PERCENT,…")]
    pub steps: Vec<f64>,
    /// Requests carrying this header go to the same version every time.
    #[arg(long, value_name = "HEADER")]
    pub sticky_header: Option<String>,
    /// Requests carrying this cookie go to the same version every time.
    #[arg(long, value_name = "COOKIE")]
    pub sticky_cookie: Option<String>,
    /// Bound on the probability of rolling back a healthy canary.
    #[arg(long, default_value_t = 0.01)]
    pub alpha: f64,
    /// Canary requests each step needs before it can pass.
    #[arg(long, default_value_t = 200)]
    pub min_requests: u64,
    /// Seconds each step lasts at least.
    #[arg(long, default_value_t = 30.0)]
    pub min_seconds: f64,
    /// With --steps: the longest a step waits for enough traffic to decide (default: no limit;
    /// no traffic means waiting, never failing).
    #[arg(long, value_name = "SECONDS")]
    pub deadline: Option<f64>,
    /// What a step whose deadline passed undecided does.
    #[arg(long, value_enum, default_value = "rollback", requires = "deadline")]
    pub on_deadline: OnDeadline,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnDeadline {
    Rollback,
    Promote,
}

pub fn run(args: ProxyArgs) -> Result<i32> {
    for step in &args.steps {
        if !(0.0..=100.0).contains(step) {
            bail!("step {step} is not a percentage between 0 and 100");
        }
    }
    if !args.steps.is_empty() && args.canary.is_empty() && args.canary_command.is_none() {
        bail!("--steps runs a canary and needs --canary upstreams or a --canary-command");
    }
    if !(0.0..1.0).contains(&args.alpha) || args.alpha == 0.0 {
        bail!("--alpha must be between 0 and 1, e.g. 0.01");
    }
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Versions Tandem runs itself, supervised; ready before they get traffic.
        let start = |command: &Option<String>, version: &str| -> Result<Option<targets::process::Supervised>> {
            let Some(command) = command else { return Ok(None) };
            let target = targets::process::ProcessTarget {
                command: command.clone(),
                dir: std::env::current_dir()?,
                env: vec![("TANDEM_VERSION".into(), version.into())],
                instances: args.instances,
                health_path: args.health.clone(),
                journal: None,
            };
            targets::process::start(&target).map(Some).map_err(anyhow::Error::msg)
        };
        let stable_run = start(&args.stable_command, "stable")?;
        if let Some(stable) = &stable_run {
            stable
                .wait_ready(&args.health, Duration::from_secs_f64(args.ready_timeout))
                .await
                .map_err(|e| anyhow::anyhow!("the stable version is not ready: {e}"))?;
        }
        let canary_run = start(&args.canary_command, "canary")?;
        let mut stable_addrs = args.stable.clone();
        stable_addrs.extend(stable_run.iter().flat_map(|s| s.addrs.clone()));
        let mut canary_addrs = args.canary.clone();
        canary_addrs.extend(canary_run.iter().flat_map(|s| s.addrs.clone()));
        if let Some(canary) = &canary_run {
            // A canary that never becomes healthy is rolled back before it sees traffic.
            if let Err(error) = canary.wait_ready(&args.health, Duration::from_secs_f64(args.ready_timeout)).await {
                let reason = format!("failed health check: {error}");
                print_record(&[Record::RolledBack { weight: 0.0, seconds: 0.0, evidence: None, reason }], args.format)?;
                for version in [canary_run, stable_run].into_iter().flatten() {
                    version.stop().await;
                }
                return Ok(1);
            }
        }
        let routing = Routing {
            stable: stable_addrs,
            canary: canary_addrs,
            canary_weight: args.weight / 100.0,
            sticky_header: args.sticky_header.clone(),
            sticky_cookie: args.sticky_cookie.clone(),
        };
        let (proxy, outcomes) = Proxy::new(routing);
        // One thread per core, each with its own listener and upstream pool, as nginx's workers.
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (addr, server) = proxy::serve_on_threads(args.listen, proxy.clone(), threads)
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        eprintln!("proxy listening on {addr}");
        if args.steps.is_empty() {
            // Fixed weights: serve until interrupted; nobody judges, so outcomes are not kept.
            drop(outcomes);
            let _ = tokio::signal::ctrl_c().await;
            let _ = tokio::task::spawn_blocking(move || server.stop()).await;
            for version in [canary_run, stable_run].into_iter().flatten() {
                version.stop().await;
            }
            return Ok(0);
        }
        let plan = Plan {
            steps: args.steps.iter().map(|s| s / 100.0).collect(),
            analysis: Config {
                alpha: args.alpha,
                min_canary_requests: args.min_requests,
                min_seconds: args.min_seconds,
                ..Config::default()
            },
            deadline: args.deadline.map(|seconds| targets::canary::Deadline {
                after: Duration::from_secs_f64(seconds.max(0.0)),
                promote: args.on_deadline == OnDeadline::Promote,
            }),
        };
        let record = canary::run(proxy, outcomes, plan).await;
        let _ = tokio::task::spawn_blocking(move || server.stop()).await;
        print_record(&record, args.format)?;
        // The version that lost is stopped first; then, with the proxy gone, the winner too.
        let promoted = matches!(record.last(), Some(Record::Promoted { .. }));
        let (loser, winner) = if promoted { (stable_run, canary_run) } else { (canary_run, stable_run) };
        for version in [loser, winner].into_iter().flatten() {
            version.stop().await;
        }
        Ok(if promoted { 0 } else { 1 })
    })
}

fn print_record(record: &[Record], format: Format) -> Result<()> {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(record)?);
        return Ok(());
    }
    for entry in record {
        match entry {
            Record::StepReached { weight, seconds } => println!("{seconds:>7.1}s  canary at {:.0}%", weight * 100.0),
            Record::Promoted { seconds } => println!("{seconds:>7.1}s  promoted: the canary now takes all traffic"),
            Record::RolledBack { weight, seconds, reason, .. } => {
                println!("{seconds:>7.1}s  rolled back at {:.0}%: {reason}", weight * 100.0)
            }
        }
    }
    Ok(())
}
