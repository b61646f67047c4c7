//! The `tandem` command line: run and validate workflows (and, later, the server).

mod render;
mod run;
mod validate;
mod workflows;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

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
    /// Run the repository's workflows on this machine, as the server will.
    Run(run::RunArgs),
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<i32> {
    let root = repo_root(cli.repo)?;
    match cli.command {
        Command::Validate { paths, format } => validate::run(&root, &paths, format),
        Command::Run(args) => run::run(&root, args),
    }
}

/// The repository root: `--repo`, else the git top level around the current directory, else it.
fn repo_root(repo: Option<PathBuf>) -> Result<PathBuf> {
    let start = match repo {
        Some(path) => path,
        None => std::env::current_dir()?,
    };
    let output =
        std::process::Command::new("git").arg("-C").arg(&start).args(["rev-parse", "--show-toplevel"]).output();
    match output {
        Ok(output) if output.status.success() => Ok(PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())),
        _ => Ok(start),
    }
}
