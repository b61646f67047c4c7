//! `tandem actions pull|list`: fetch ahead of time every action a repository's workflows use
//! (for machines without internet and CI images), and show what is cached.

use std::path::Path;

use anyhow::{Result, bail};
use exec::actions::ActionSources;
use spec::workflow::{ActionRef, Runs, StepAction};

use crate::Format;
use crate::run::{ActionArgs, default_data_dir};

#[derive(clap::Subcommand)]
pub enum ActionsCommand {
    /// Fetch every action the repository's workflows use (and the actions those call), so that
    /// runs need no action source.
    #[command(
        after_help = "Examples:\n  tandem actions pull\n  tandem actions pull --action-source https://gitea.example.com --action-source /srv/mirrors\n  tandem actions pull --format json"
    )]
    Pull {
        #[command(flatten)]
        actions: ActionArgs,
        #[arg(long, env = "TANDEM_DATA", value_name = "DIR")]
        data: Option<std::path::PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// The actions in the cache: repository, commit, and the refs that resolved to it.
    #[command(after_help = "Examples:\n  tandem actions list\n  tandem actions list --format json")]
    List {
        #[arg(long, env = "TANDEM_DATA", value_name = "DIR")]
        data: Option<std::path::PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
}

pub fn run(root: &Path, command: ActionsCommand) -> Result<()> {
    match command {
        ActionsCommand::Pull { actions, data, format } => {
            pull(root, &actions, &data.unwrap_or_else(default_data_dir), format)
        }
        ActionsCommand::List { data, format } => list(&data.unwrap_or_else(default_data_dir), format),
    }
}

fn list(data: &Path, format: Format) -> Result<()> {
    let cached = ActionSources::new(data, Vec::new()).list();
    if format == Format::Json {
        let rows: Vec<_> = cached
            .iter()
            .map(|(repo, commit, refs)| serde_json::json!({ "repository": repo, "commit": commit, "refs": refs }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if cached.is_empty() {
        println!(
            "No actions are cached in {}; `tandem actions pull` fetches a repository's.",
            data.join("actions").display()
        );
        return Ok(());
    }
    let width = cached.iter().map(|c| c.0.len()).max().unwrap_or(0).max(10);
    println!("{:width$}  {:12}  REFS", "ACTION", "COMMIT");
    for (repo, commit, refs) in &cached {
        println!("{repo:width$}  {:12}  {}", &commit[..commit.len().min(12)], refs.join(", "));
    }
    Ok(())
}

fn pull(root: &Path, args: &ActionArgs, data: &Path, format: Format) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut listed = runtime.block_on(exec::actions::repository_sources(root, "", true));
    listed.extend(args.options().sources);
    let sources = ActionSources::new(data, listed);
    let mut wanted: Vec<(String, String, String, String)> = Vec::new();
    for loaded in crate::workflows::load_all(root)? {
        for job in loaded.workflow.iter().flat_map(|w| &w.jobs) {
            for step in &job.steps {
                if let StepAction::Uses { builtin, target: ActionRef::Remote { owner, repo, path, git_ref }, .. } =
                    &step.action
                    && (builtin.is_none() || args.no_builtin_actions)
                {
                    wanted.push((owner.clone(), repo.clone(), path.clone(), git_ref.clone()));
                }
            }
        }
    }
    let (mut done, mut rows, mut failed) = (std::collections::BTreeSet::new(), Vec::new(), Vec::new());
    // Composite actions call actions too: those are fetched as they are found.
    while let Some((owner, repo, path, git_ref)) = wanted.pop() {
        let key = format!("{owner}/{repo}@{git_ref}");
        if !done.insert(format!("{key}/{path}")) {
            continue;
        }
        match sources.fetch(&owner, &repo, &git_ref) {
            Ok(fetched) => {
                let dir = if path.is_empty() { fetched.root.clone() } else { fetched.root.join(&path) };
                for nested in composite_uses(&dir) {
                    wanted.push(nested);
                }
                if format == Format::Text {
                    println!("✓ {key}  {}  from {}", &fetched.commit[..12.min(fetched.commit.len())], fetched.source);
                    if let Some(warning) = &fetched.warning {
                        println!("  warning: {warning}");
                    }
                }
                rows.push(serde_json::json!({ "action": key, "commit": fetched.commit, "source": fetched.source }));
            }
            Err(error) => {
                if format == Format::Text {
                    println!("✗ {error}");
                }
                failed.push(key);
            }
        }
    }
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "fetched": rows, "failed": failed }))?);
    } else if rows.is_empty() && failed.is_empty() {
        println!("The workflows use no remote actions (Tandem's built-ins need no fetching).");
    }
    if !failed.is_empty() {
        bail!("{} action(s) could not be fetched: {}", failed.len(), failed.join(", "));
    }
    Ok(())
}

/// The remote actions a composite action's steps use.
fn composite_uses(dir: &Path) -> Vec<(String, String, String, String)> {
    let Some(source) = ["action.yml", "action.yaml"].iter().find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
    else {
        return Vec::new();
    };
    let Some(action) = spec::workflow::parse_action(&source).0 else { return Vec::new() };
    let Runs::Composite { steps } = &action.runs else { return Vec::new() };
    steps
        .iter()
        .filter_map(|s| match &s.action {
            StepAction::Uses { builtin: None, target: ActionRef::Remote { owner, repo, path, git_ref }, .. } => {
                Some((owner.clone(), repo.clone(), path.clone(), git_ref.clone()))
            }
            _ => None,
        })
        .collect()
}
