//! `tandem repo create`, `tandem change …` and `tandem queue`: hosted repositories, their change
//! requests and the merge queue, through the server's API.

use anyhow::Result;
use clap::Subcommand;

use crate::Format;
use crate::client::{self, Client, Connection};

#[derive(Subcommand)]
pub enum ChangeCommand {
    /// A hosted repository's change requests, newest first.
    #[command(after_help = "Examples:\n  tandem change list shop\n  tandem change list shop --format json")]
    List {
        #[arg(value_name = "REPO")]
        repository: String,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        connection: Connection,
    },
    /// A change: its revisions, reviews, runs, what it lacks and the changes it collides with.
    Show {
        #[arg(value_name = "REPO")]
        repository: String,
        number: i64,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        connection: Connection,
    },
    /// The latest revision's diff against its base.
    Diff {
        #[arg(value_name = "REPO")]
        repository: String,
        number: i64,
        #[command(flatten)]
        connection: Connection,
    },
    /// Comment on a change, or on a line of a file of it (a line comment must be resolved before it merges).
    #[command(
        after_help = "Examples:\n  tandem change comment shop 4 --body 'Looks good'\n  tandem change comment shop 4 --path src/lib.rs --line 12 --body 'This can panic'"
    )]
    Comment {
        #[arg(value_name = "REPO")]
        repository: String,
        number: i64,
        #[arg(long)]
        body: String,
        #[arg(long, requires = "line")]
        path: Option<String>,
        #[arg(long, requires = "path")]
        line: Option<i64>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Mark a comment resolved.
    Resolve {
        #[arg(value_name = "REPO")]
        repository: String,
        number: i64,
        comment: i64,
        #[command(flatten)]
        connection: Connection,
    },
    /// Approve the change's current code.
    Approve {
        #[arg(value_name = "REPO")]
        repository: String,
        number: i64,
        #[command(flatten)]
        connection: Connection,
    },
    /// Put the change in the merge queue (refused with what it lacks until it qualifies).
    Merge {
        #[arg(value_name = "REPO")]
        repository: String,
        number: i64,
        /// Higher goes first among the changes waiting.
        #[arg(long, default_value_t = 0)]
        priority: i32,
        #[command(flatten)]
        connection: Connection,
    },
    /// Take the change out of the merge queue.
    Dequeue {
        #[arg(value_name = "REPO")]
        repository: String,
        number: i64,
        #[command(flatten)]
        connection: Connection,
    },
}

fn base(repo: &str, number: i64) -> String {
    format!("/api/v1/repos/{}/changes/{number}", client::path_segment(repo))
}

pub async fn change(command: ChangeCommand) -> Result<i32> {
    match command {
        ChangeCommand::List { repository: repo, format, connection } => {
            let list: Vec<api::ChangeSummary> = Client::new(&connection)?
                .get(&format!("/api/v1/repos/{}/changes", client::path_segment(&repo)))
                .await?;
            if format == Format::Json {
                return client::print_json(&list).map(|()| 0);
            }
            if list.is_empty() {
                println!("no change yet; push one for review: git push origin HEAD:refs/for/main");
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = list
                .into_iter()
                .map(|c| {
                    vec![
                        c.number.to_string(),
                        c.status,
                        c.target,
                        c.author,
                        format!("{} ({})", c.revision, c.sha.chars().take(12).collect::<String>()),
                        c.title,
                    ]
                })
                .collect();
            client::table(&["CHANGE", "STATUS", "TARGET", "AUTHOR", "REVISION", "TITLE"], &rows);
            Ok(0)
        }
        ChangeCommand::Show { repository: repo, number, format, connection } => {
            let detail: api::ChangeDetail = Client::new(&connection)?.get(&base(&repo, number)).await?;
            if format == Format::Json {
                return client::print_json(&detail).map(|()| 0);
            }
            let c = &detail.change;
            println!(
                "change {} — {}\n  {} → {}, by {}, {}",
                c.number,
                c.title,
                c.sha.chars().take(12).collect::<String>(),
                c.target,
                c.author,
                c.status
            );
            if let Some(reason) = &c.reason {
                println!("  {reason}");
            }
            println!("revisions:");
            for r in &detail.revisions {
                println!(
                    "  {} {} on {} by {}",
                    r.number,
                    &r.sha[..r.sha.len().min(12)],
                    &r.base[..r.base.len().min(12)],
                    r.pushed_by
                );
            }
            println!("runs:");
            for run in &detail.runs {
                println!("  run {} {} {}", run.id, run.workflow, run.status);
            }
            println!(
                "approved by: {}",
                if detail.approvers.is_empty() { "nobody yet".into() } else { detail.approvers.join(", ") }
            );
            for review in detail.reviews.iter().filter(|r| r.kind == "comment") {
                let place = match (&review.path, review.line) {
                    (Some(path), Some(line)) => format!(" on {path}:{line}"),
                    _ => String::new(),
                };
                let state = if review.resolved { " (resolved)" } else { "" };
                println!("comment {} by {}{place}{state}: {}", review.id, review.author, review.body);
            }
            for conflict in &detail.conflicts {
                println!("collides with change {} in {}", conflict.with, conflict.files.join(", "));
            }
            if detail.missing.is_empty() {
                println!("ready to merge: tandem change merge {repo} {number}");
            } else {
                println!("before it can merge, it needs:");
                for missing in &detail.missing {
                    println!("  - {missing}");
                }
            }
            Ok(0)
        }
        ChangeCommand::Diff { repository: repo, number, connection } => {
            print!("{}", Client::new(&connection)?.text(&format!("{}/diff", base(&repo, number))).await?);
            Ok(0)
        }
        ChangeCommand::Comment { repository: repo, number, body, path, line, connection } => {
            let request = api::CommentRequest { body, path, line };
            let review: api::ReviewInfo =
                Client::new(&connection)?.post(&format!("{}/comments", base(&repo, number)), Some(&request)).await?;
            println!("comment {} on change {number}", review.id);
            Ok(0)
        }
        ChangeCommand::Resolve { repository: repo, number, comment, connection } => {
            let path = format!("{}/comments/{comment}/resolve", base(&repo, number));
            Client::new(&connection)?.call_empty(reqwest::Method::POST, &path, None::<&()>).await?;
            println!("comment {comment} resolved");
            Ok(0)
        }
        ChangeCommand::Approve { repository: repo, number, connection } => {
            let _: api::ReviewInfo =
                Client::new(&connection)?.post(&format!("{}/approve", base(&repo, number)), None::<&()>).await?;
            println!("change {number} approved");
            Ok(0)
        }
        ChangeCommand::Merge { repository: repo, number, priority, connection } => {
            let request = api::MergeRequest { priority: Some(priority) };
            let change: api::ChangeSummary =
                Client::new(&connection)?.post(&format!("{}/merge", base(&repo, number)), Some(&request)).await?;
            println!("change {} is {}: `tandem queue {repo}` shows where", change.number, change.status);
            Ok(0)
        }
        ChangeCommand::Dequeue { repository: repo, number, connection } => {
            let change: api::ChangeSummary =
                Client::new(&connection)?.delete(&format!("{}/merge", base(&repo, number))).await?;
            println!("change {} is {}", change.number, change.status);
            Ok(0)
        }
    }
}

/// `tandem queue REPO`.
pub async fn queue(repo: &str, format: Format, connection: Connection) -> Result<i32> {
    let queues: Vec<api::QueueInfo> =
        Client::new(&connection)?.get(&format!("/api/v1/repos/{}/queue", client::path_segment(repo))).await?;
    if format == Format::Json {
        return client::print_json(&queues).map(|()| 0);
    }
    if queues.iter().all(|q| q.waiting.is_empty() && q.batches.is_empty()) {
        println!("the merge queue of {repo} is empty");
        return Ok(0);
    }
    for queue in queues {
        println!("into {}:", queue.target);
        for batch in queue.batches {
            let commit =
                batch.commit.map(|c| c.chars().take(12).collect::<String>()).unwrap_or_else(|| "not built".into());
            let changes: Vec<String> = batch.changes.iter().map(i64::to_string).collect();
            println!("  testing batch {} ({commit}): changes {}", batch.id, changes.join(", "));
        }
        if !queue.waiting.is_empty() {
            let waiting: Vec<String> = queue.waiting.iter().map(i64::to_string).collect();
            println!("  waiting: {}", waiting.join(", "));
        }
    }
    Ok(0)
}

/// `tandem repo create NAME`.
pub async fn create(name: String, protected: Vec<String>, connection: Connection) -> Result<i32> {
    let request = api::CreateHosted { name, protected: (!protected.is_empty()).then_some(protected) };
    let hosted: api::HostedRepository = Client::new(&connection)?.post("/api/v1/hosted", Some(&request)).await?;
    println!("{}", hosted.clone_url);
    eprintln!(
        "hosted repository `{}` created; protected: {} (changes reach them through `git push origin HEAD:refs/for/BRANCH` and the merge queue); use a token as the password",
        hosted.name,
        if hosted.protected.is_empty() { "none".to_string() } else { hosted.protected.join(", ") }
    );
    Ok(0)
}

/// `tandem repo commit NAME REV`.
pub async fn commit(name: String, rev: String, format: Format, connection: Connection) -> Result<i32> {
    let path = format!("/api/v1/repos/{}/commits/{}", client::path_segment(&name), client::path_segment(&rev));
    let detail: api::CommitDetail = Client::new(&connection)?.get(&path).await?;
    if format == Format::Json {
        client::print_json(&detail)?;
        return Ok(0);
    }
    println!("commit {} of {}", detail.sha, detail.repo);
    println!("author: {}  ({})", detail.author, detail.date);
    println!();
    for line in detail.message.lines() {
        println!("    {line}");
    }
    println!();
    if detail.findings.is_empty() {
        println!("security findings: none recorded");
    } else {
        println!("security findings: {}", detail.findings.len());
        for f in &detail.findings {
            println!("  {:<8} {:<13} {}  (run {})", f.severity, f.kind, f.summary, f.run);
        }
    }
    let runs: Vec<Vec<String>> = detail
        .runs
        .iter()
        .map(|r| vec![r.id.to_string(), r.workflow.clone(), r.event.clone(), r.status.as_str().to_string()])
        .collect();
    println!();
    if runs.is_empty() {
        println!("runs: none")
    } else {
        client::table(&["RUN", "WORKFLOW", "EVENT", "STATUS"], &runs)
    }
    let deployments: Vec<Vec<String>> = detail
        .deployments
        .iter()
        .map(|d| vec![d.id.to_string(), d.service.clone(), d.environment.clone(), d.status.as_str().to_string()])
        .collect();
    println!();
    if deployments.is_empty() {
        println!("deployments: none");
    } else {
        client::table(&["DEPLOYMENT", "SERVICE", "ENVIRONMENT", "STATUS"], &deployments);
    }
    Ok(0)
}

/// `tandem repo archive NAME` (`archive`), `tandem repo unarchive NAME`.
pub async fn archive(name: String, archive: bool, connection: Connection) -> Result<i32> {
    let action = if archive { "archive" } else { "unarchive" };
    let path = format!("/api/v1/repos/{}/{action}", client::path_segment(&name));
    let repo: api::Repository = Client::new(&connection)?.post(&path, None::<&()>).await?;
    match repo.archived {
        Some(when) => println!("{} archived ({when}): read-only, no new runs", repo.name),
        None => println!("{} is active again", repo.name),
    }
    Ok(0)
}

/// `tandem repo scan NAME`: exit code 1 when a secret is found.
pub async fn scan(name: String, format: Format, connection: Connection) -> Result<i32> {
    let path = format!("/api/v1/repos/{}/scan", client::path_segment(&name));
    let scan: api::HistoryScan = Client::new(&connection)?.post(&path, None::<&()>).await?;
    if format == Format::Json {
        client::print_json(&scan)?;
    } else {
        for f in &scan.findings {
            println!("{}:{}  {}  {}  (fingerprint {})", f.file, f.line, f.rule, f.secret, f.fingerprint);
        }
        println!(
            "\n{} finding(s) in {} commit(s) of {} ({} bytes, {} rule(s)){}",
            scan.findings.len(),
            scan.commits,
            scan.repo,
            scan.bytes,
            scan.rules,
            if scan.findings.is_empty() { "" } else { "; add a fingerprint to .gitleaksignore to accept one" }
        );
    }
    Ok(i32::from(!scan.findings.is_empty()))
}
