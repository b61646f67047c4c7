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
  tandem proxy --stable 127.0.0.1:8001 --canary 127.0.0.1:8002 --steps 10,50,100   # a canary, rolled back on its own")]
pub struct ProxyArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// A stable upstream (repeatable).
    #[arg(long, required = true, value_name = "HOST:PORT")]
    pub stable: Vec<SocketAddr>,
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
    /// Bound on the probability of rolling back a healthy canary.
    #[arg(long, default_value_t = 0.01)]
    pub alpha: f64,
    /// Canary requests each step needs before it can pass.
    #[arg(long, default_value_t = 200)]
    pub min_requests: u64,
    /// Seconds each step lasts at least.
    #[arg(long, default_value_t = 30.0)]
    pub min_seconds: f64,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub fn run(args: ProxyArgs) -> Result<i32> {
    for step in &args.steps {
        if !(0.0..=100.0).contains(step) {
            bail!("step {step} is not a percentage between 0 and 100");
        }
    }
    if !args.steps.is_empty() && args.canary.is_empty() {
        bail!("--steps runs a canary and needs at least one --canary upstream");
    }
    if !(0.0..1.0).contains(&args.alpha) || args.alpha == 0.0 {
        bail!("--alpha must be between 0 and 1, e.g. 0.01");
    }
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let routing = Routing {
            stable: args.stable.clone(),
            canary: args.canary.clone(),
            canary_weight: args.weight / 100.0,
            sticky_header: args.sticky_header.clone(),
        };
        let (proxy, outcomes) = Proxy::new(routing);
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        let router = proxy::router(proxy.clone());
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        eprintln!("proxy listening on {addr}");
        if args.steps.is_empty() {
            // Fixed weights: serve until interrupted; outcomes are only counted.
            let mut outcomes = outcomes;
            let counter = tokio::spawn(async move { while outcomes.recv().await.is_some() {} });
            let _ = tokio::signal::ctrl_c().await;
            counter.abort();
            server.abort();
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
            step_timeout: Duration::from_secs_f64((args.min_seconds * 20.0).max(300.0)),
        };
        let record = canary::run(proxy, outcomes, plan).await;
        server.abort();
        if args.format == Format::Json {
            println!("{}", serde_json::to_string_pretty(&record)?);
        } else {
            for entry in &record {
                match entry {
                    Record::StepReached { weight, seconds } => {
                        println!("{seconds:>7.1}s  canary at {:.0}%", weight * 100.0)
                    }
                    Record::Promoted { seconds } => {
                        println!("{seconds:>7.1}s  promoted: the canary now takes all traffic")
                    }
                    Record::RolledBack { weight, seconds, reason, .. } => {
                        println!("{seconds:>7.1}s  rolled back at {:.0}%: {reason}", weight * 100.0)
                    }
                }
            }
        }
        Ok(if matches!(record.last(), Some(Record::Promoted { .. })) { 0 } else { 1 })
    })
}
