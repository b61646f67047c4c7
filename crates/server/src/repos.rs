//! Repositories the server follows: mirrors in the data directory, which workflows a change
//! starts, and polling of refs for repositories without webhooks (local ones included).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ci::filter::{EventFacts, fires};
use git::webhook::Change;
use store::{NewRun, Repo};

use crate::App;

const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

pub use git::repo::git;

pub fn mirror_path(app: &App, repo: &Repo) -> PathBuf {
    app.config.data_dir.join("repos").join(format!("{}.git", repo.id))
}

/// Makes sure the mirror holds `sha` (fetching from the source when it does not) and returns it.
pub async fn sync(app: &App, repo: &Repo, sha: Option<&str>) -> Result<PathBuf, String> {
    let lock = app.fetch_locks.lock().await.entry(repo.id).or_default().clone();
    let _guard = lock.lock().await;
    let mirror = mirror_path(app, repo);
    let (url, env) = crate::credentials::remote(app, repo).await?;
    git::repo::ensure_mirror(&url, &mirror, &env).await?;
    if let Some(sha) = sha
        && git(&mirror, &["cat-file", "-e", &format!("{sha}^{{commit}}")]).await.is_ok()
    {
        return Ok(mirror);
    }
    let fetch = |args: &[&str]| {
        let mut all = vec!["fetch", "--quiet"];
        all.extend_from_slice(args);
        let all: Vec<String> = all.iter().map(|a| a.to_string()).collect();
        let (mirror, env) = (&mirror, &env);
        async move {
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            git::repo::run_env(Some(mirror), &all, env).await
        }
    };
    fetch(&["--prune", "--end-of-options", &url, "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]).await?;
    if let Some(sha) = sha
        && git(&mirror, &["cat-file", "-e", &format!("{sha}^{{commit}}")]).await.is_err()
    {
        // Change-request heads may live outside branches; ask for the commit itself.
        fetch(&["--end-of-options", &url, sha])
            .await
            .map_err(|e| format!("commit {sha} is not in {}: {e}", git::redact_credentials(&repo.source)))?;
    }
    Ok(mirror)
}

/// The workflow files at a commit: `.tandem/workflows`, else `.github/workflows`.
pub async fn workflow_files(mirror: &Path, sha: &str) -> Result<Vec<String>, String> {
    for dir in spec::workflow::WORKFLOW_DIRS {
        let listing = git(mirror, &["ls-tree", "--name-only", sha, &format!("{dir}/")]).await?;
        let files: Vec<String> =
            listing.lines().filter(|f| spec::workflow::is_workflow_file(f)).map(str::to_string).collect();
        if !files.is_empty() {
            return Ok(files);
        }
    }
    Ok(Vec::new())
}

/// The runs a change starts: one per workflow whose trigger fires for it. Workflows that fail to
/// parse still get a run, which fails with their diagnostics, so that the mistake is seen.
pub async fn plan_runs(
    app: &App,
    repo: &Repo,
    change: &Change,
    payload: &serde_json::Value,
) -> Result<Vec<NewRun>, String> {
    let workflows = workflows_at(app, repo, &change.sha).await?;
    let mut changed = change.changed_paths.clone();
    if changed.is_empty()
        && change.before != ZERO_SHA
        && let Ok(diff) = git(&mirror_path(app, repo), &["diff", "--name-only", &change.before, &change.sha]).await
    {
        changed = diff.lines().map(str::to_string).collect();
    }
    let base_ref = change.change_request.as_ref().map(|r| format!("refs/heads/{}", r.base_ref));
    let facts = EventFacts {
        event: change.event,
        git_ref: Some(base_ref.as_deref().unwrap_or(&change.git_ref)),
        changed_paths: if changed.is_empty() { None } else { Some(&changed) },
        action: change.change_request.as_ref().map(|r| r.action.as_str()),
    };
    let mut runs = Vec::new();
    for (path, source) in workflows.iter() {
        let (workflow, _) = ci::check::validate(source);
        let starts = match &workflow {
            Some(workflow) => workflow.trigger(change.event).is_some_and(|t| fires(t, &facts).is_ok()),
            None => true,
        };
        if starts {
            runs.push(NewRun {
                repo_id: repo.id,
                workflow: path.clone(),
                event: change.event.to_string(),
                git_ref: change.git_ref.clone(),
                sha: change.sha.clone(),
                before_sha: change.before.clone(),
                change_request: change.change_request.as_ref().map(|r| r.number),
                jobs: None,
                payload: payload.clone(),
                rerun_of: None,
            });
        }
    }
    Ok(runs)
}

/// The workflow files at a commit with their text, from the cache or the mirror.
pub(crate) async fn workflows_at(app: &App, repo: &Repo, sha: &str) -> Result<crate::WorkflowFiles, String> {
    let key = (repo.id, sha.to_string());
    if let Some(found) = app.workflows_at.lock().ok().and_then(|cache| cache.get(&key).cloned()) {
        return Ok(found);
    }
    let mirror = sync(app, repo, Some(sha)).await?;
    let mut files = Vec::new();
    for path in workflow_files(&mirror, sha).await? {
        let source = git(&mirror, &["show", &format!("{sha}:{path}")]).await?;
        files.push((path, source));
    }
    let files = Arc::new(files);
    if let Ok(mut cache) = app.workflows_at.lock() {
        if cache.len() >= 1024 {
            cache.clear();
        }
        cache.insert(key, files.clone());
    }
    Ok(files)
}

/// A push payload shaped like GitHub's, for runs that no forge announced (polling, manual).
/// How a change's runs reach the queue.
#[derive(Debug, Clone, Copy)]
pub enum Origin<'a> {
    /// A delivery (a forge's webhook, or the poller seeing a ref move): stored once per id, so a
    /// redelivery queues nothing.
    Delivery { forge: &'a str, id: &'a str, event: &'a str },
    /// Asked for directly (the API's trigger, `tandem up`): always queued.
    Direct,
}

/// Why runs could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("cannot read the repository: {0}")]
    Repository(String),
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// The one way runs are queued for a change: which workflows it starts (`change` is `None` for a
/// delivery that starts nothing), stored with its origin, and the worker woken.
pub async fn queue_change(
    app: &App,
    repo: &Repo,
    change: Option<&Change>,
    payload: &serde_json::Value,
    origin: Origin<'_>,
    actor: &str,
) -> Result<store::Delivery, QueueError> {
    let runs = match change {
        // An archived repository starts nothing, whatever asks.
        Some(_) if repo.archived.is_some() => Vec::new(),
        Some(change) => plan_runs(app, repo, change, payload).await.map_err(QueueError::Repository)?,
        None => Vec::new(),
    };
    let stored = match origin {
        Origin::Delivery { forge, id, event } => {
            app.store.record_delivery(forge, id, repo.id, event, runs, actor).await?
        }
        Origin::Direct => {
            let mut ids = Vec::new();
            for run in runs {
                ids.push(app.store.enqueue(run, actor).await?.id);
            }
            store::Delivery::Stored(ids)
        }
    };
    if matches!(&stored, store::Delivery::Stored(ids) if !ids.is_empty()) {
        app.wake.notify_one();
    }
    Ok(stored)
}

/// A push of `sha` to `git_ref` as a forge would describe it: the change and its payload.
pub fn push_change(repo: &Repo, git_ref: &str, before: &str, sha: &str) -> (Change, serde_json::Value) {
    let change = Change {
        repository: repo.name.clone(),
        clone_urls: vec![repo.source.clone()],
        event: "push",
        git_ref: git_ref.to_string(),
        sha: sha.to_string(),
        before: before.to_string(),
        change_request: None,
        changed_paths: Vec::new(),
    };
    (change, push_payload(repo, git_ref, before, sha))
}

pub fn push_payload(repo: &Repo, git_ref: &str, before: &str, sha: &str) -> serde_json::Value {
    serde_json::json!({
        "ref": git_ref, "before": before, "after": sha,
        "repository": {"name": repo.name.rsplit('/').next().unwrap_or(&repo.name), "full_name": repo.name, "clone_url": git::redact_credentials(&repo.source)},
        "head_commit": {"id": sha}, "pusher": {"name": "tandem"},
    })
}

/// Watches the refs of repositories that have a poll interval; a moved or new branch or tag
/// queues its push runs. The first look only records the refs.
pub async fn poll_forever(app: Arc<App>) {
    let mut last_polled: std::collections::HashMap<i64, Instant> = std::collections::HashMap::new();
    loop {
        // Poll intervals are whole seconds.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Ok(repos) = app.store.repos().await else { continue };
        for repo in repos {
            // An archived repository is not polled.
            let Some(seconds) = repo.poll_seconds.filter(|s| *s > 0 && repo.archived.is_none()) else { continue };
            if last_polled.get(&repo.id).is_some_and(|at| at.elapsed() < Duration::from_secs(seconds as u64)) {
                continue;
            }
            last_polled.insert(repo.id, Instant::now());
            if let Err(error) = poll(&app, &repo).await {
                tracing::warn!("polling {}: {error}", repo.name);
            }
        }
    }
}

async fn poll(app: &App, repo: &Repo) -> Result<(), String> {
    let (url, env) = crate::credentials::remote(app, repo).await?;
    let listing =
        git::repo::run_env(Some(Path::new(".")), &["ls-remote", "--heads", "--tags", "--end-of-options", &url], &env)
            .await?;
    let remote: Vec<(String, String)> = listing
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, name)| !name.ends_with("^{}"))
        .map(|(sha, name)| (name.to_string(), sha.to_string()))
        .collect();
    let known = app.store.refs(repo.id).await.map_err(|e| e.to_string())?;
    let first_look = known.is_empty();
    for (name, sha) in remote {
        let before = known.iter().find(|(n, _)| *n == name).map(|(_, s)| s.clone());
        if before.as_deref() == Some(sha.as_str()) {
            continue;
        }
        if !first_look {
            let before = before.unwrap_or_else(|| ZERO_SHA.to_string());
            let (change, payload) = push_change(repo, &name, &before, &sha);
            let id = format!("{name}@{sha}");
            let origin = Origin::Delivery { forge: "poll", id: &id, event: "push" };
            queue_change(app, repo, Some(&change), &payload, origin, "poller").await.map_err(|e| e.to_string())?;
        }
        app.store.set_ref(repo.id, &name, &sha).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}
