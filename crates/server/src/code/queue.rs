//! The merge queue's driver: one [`review::queue::Queue`] per repository and target branch, fed
//! with what happens (a change enters or leaves, a batch's runs finish) and acting on what it
//! decides — building a batch's commit without a work tree (`git merge-tree --write-tree`, then
//! `git commit-tree`, kept at `refs/queue/<batch>`), running CI on it (the workflows triggered by
//! `merge_group`, else by `pull_request`), fast-forwarding the branch to a tested commit, and
//! ejecting a change with its reason. Every step is an event.

use std::collections::HashMap;

use review::queue::{Action, BatchId, Event, Queue};
use store::{ChangeRow, Repo, RunStatus};

use crate::App;
use crate::repos::{self, Origin};

/// The queues of this server, by (repository, target branch).
#[derive(Default, Debug)]
pub struct Queues {
    inner: tokio::sync::Mutex<HashMap<(i64, String), Lane>>,
}

#[derive(Debug)]
struct Lane {
    queue: Queue,
    /// Each batch's commit.
    commits: HashMap<BatchId, String>,
    /// Each batch's runs.
    runs: HashMap<BatchId, Vec<i64>>,
}

/// A view of one queue: changes waiting, and batches under test with their commits.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueueView {
    pub target: String,
    pub waiting: Vec<i64>,
    pub batches: Vec<(u64, Vec<i64>, Option<String>)>,
}

impl Queues {
    pub async fn views(&self, repo_id: i64, app: &App) -> Vec<QueueView> {
        let lanes = self.inner.lock().await;
        let number = |id: u64| id as i64;
        let mut views: Vec<QueueView> = lanes
            .iter()
            .filter(|((repo, _), _)| *repo == repo_id)
            .map(|((_, target), lane)| QueueView {
                target: target.clone(),
                waiting: lane.queue.waiting().into_iter().map(number).collect(),
                batches: lane
                    .queue
                    .batches()
                    .into_iter()
                    .map(|(batch, changes)| {
                        (batch, changes.into_iter().map(number).collect(), lane.commits.get(&batch).cloned())
                    })
                    .collect(),
            })
            .collect();
        drop(lanes);
        // Change ids to change numbers, as people know them.
        if let Ok(changes) = app.store.changes(repo_id, None).await {
            let numbers: HashMap<i64, i64> = changes.iter().map(|c| (c.id, c.number)).collect();
            for view in &mut views {
                for id in view.waiting.iter_mut().chain(view.batches.iter_mut().flat_map(|b| b.1.iter_mut())) {
                    *id = numbers.get(id).copied().unwrap_or(*id);
                }
            }
        }
        views
    }
}

/// Puts `change` in its queue (its requirements were checked by the caller).
pub async fn enqueue(app: &App, repo: &Repo, change: &ChangeRow, priority: i32, actor: &str) -> Result<(), String> {
    app.store.set_change_status(change.id, "queued", None, actor).await.map_err(|e| e.to_string())?;
    let event = Event::Enqueued { change: change.id as u64, priority };
    drive(app, repo, &change.target, event).await;
    Ok(())
}

/// Takes `change` out of its queue, if it is in one.
pub async fn remove(app: &App, repo: &Repo, change: &ChangeRow) {
    drive(app, repo, &change.target, Event::Removed { change: change.id as u64 }).await;
}

/// At start: the changes that were queued enter their queues again, in order.
pub async fn restore(app: &App) {
    let Ok(repos) = app.store.repos().await else { return };
    for repo in repos {
        let Ok(mut queued) = app.store.changes(repo.id, Some("queued")).await else { continue };
        queued.sort_by_key(|c| c.updated.clone());
        for change in queued {
            drive(app, &repo, &change.target, Event::Enqueued { change: change.id as u64, priority: 0 }).await;
        }
    }
}

/// A run finished: when it was the last of its batch, the batch's result goes to its queue.
pub async fn run_finished(app: &App, run: &store::Run) {
    let found = {
        let lanes = app.queues.inner.lock().await;
        lanes.iter().find_map(|((repo, target), lane)| {
            lane.runs
                .iter()
                .find(|(_, runs)| runs.contains(&run.id))
                .map(|(batch, runs)| (*repo, target.clone(), *batch, runs.clone()))
        })
    };
    let Some((repo_id, target, batch, runs)) = found else { return };
    let mut statuses = Vec::new();
    for id in &runs {
        match app.store.run(*id).await {
            Ok(run) if run.status.is_finished() => statuses.push(run),
            _ => return,
        }
    }
    let failed: Vec<String> = statuses
        .iter()
        .filter(|r| r.status != RunStatus::Success)
        .map(|r| format!("run {} ({}) {}", r.id, r.workflow, r.status.as_str()))
        .collect();
    let Ok(repo) = app.store.repo_by_id(repo_id).await else { return };
    let flaky = !failed.is_empty() && only_flaky_jobs_failed(app, &repo, &target, &statuses).await;
    let detail =
        if flaky { format!("{} (only jobs marked flaky failed)", failed.join(", ")) } else { failed.join(", ") };
    let event = Event::Finished { batch, passed: failed.is_empty(), flaky, detail };
    drive(app, &repo, &target, event).await;
}

/// Feeds one event to a queue and carries out what it decides (which may feed it more).
pub async fn drive(app: &App, repo: &Repo, target: &str, event: Event) {
    let mut lanes = app.queues.inner.lock().await;
    let key = (repo.id, target.to_string());
    // A queue takes its settings (`queue:` of `.tandem/review.yml`) when it starts.
    let config = if lanes.contains_key(&key) { None } else { Some(config(app, repo, target).await) };
    let lane = lanes.entry(key).or_insert_with(|| Lane {
        queue: Queue::new(config.unwrap_or_default()),
        commits: HashMap::new(),
        runs: HashMap::new(),
    });
    let mut pending = vec![event];
    while let Some(event) = pending.pop() {
        for action in lane.queue.handle(event) {
            if let Err(error) = act(app, repo, target, lane, action, &mut pending).await {
                tracing::error!("merge queue of {} ({target}): {error}", repo.name);
            }
        }
    }
}

async fn act(
    app: &App,
    repo: &Repo,
    target: &str,
    lane: &mut Lane,
    action: Action,
    pending: &mut Vec<Event>,
) -> Result<(), String> {
    let dir = super::git_dir(app, repo);
    let record = |kind: &'static str, payload: serde_json::Value| async move {
        if let Err(error) =
            app.store.record_event(kind, &format!("queue/{}/{target}", repo.name), "tandem", payload).await
        {
            tracing::error!("cannot record {kind}: {error}");
        }
    };
    match action {
        Action::Test { batch, after, changes } => {
            if after.is_none() && !super::hosting::path(app, &repo.name).is_dir() {
                // On a forge, the branch may have moved there: build on what it is now.
                repos::sync(app, repo, None).await?;
            }
            let mut base = match after.and_then(|a| lane.commits.get(&a).cloned()) {
                Some(commit) => commit,
                None => {
                    git::repo::resolve_ref(&dir, &format!("refs/heads/{target}")).await.map_err(|e| e.to_string())?
                }
            };
            let mut numbers = Vec::new();
            for id in &changes {
                let change = change_by_id(app, repo, *id as i64).await?;
                numbers.push(change.number);
                let revision = super::changes::latest(app, &change).await.ok_or("a queued change has no revision")?;
                match git::repo::merge_tree(&dir, &base, &revision.sha).await.map_err(|e| e.to_string())? {
                    Ok(tree) => {
                        let message = format!("Merge change {}: {}", change.number, change.title);
                        base = git::repo::git(
                            &dir,
                            &["commit-tree", &tree, "-p", &base, "-p", &revision.sha, "-m", &message],
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                    }
                    Err(files) => {
                        pending.push(Event::Conflict { batch, change: *id, detail: files.join(", ") });
                        return Ok(());
                    }
                }
            }
            let queue_ref = format!("refs/queue/{batch}");
            git::repo::git(&dir, &["update-ref", &queue_ref, &base]).await.map_err(|e| e.to_string())?;
            lane.commits.insert(batch, base.clone());
            record("queue.testing", serde_json::json!({"batch": batch, "changes": numbers, "commit": base})).await;
            let ids = queue_runs(app, repo, &queue_ref, &base, target).await?;
            if ids.is_empty() {
                // Nothing to run: nothing can fail.
                pending.push(Event::Finished { batch, passed: true, flaky: false, detail: "no workflow runs".into() });
            }
            lane.runs.insert(batch, ids);
        }
        Action::Cancel { batch } => {
            for id in lane.runs.remove(&batch).unwrap_or_default() {
                if let Ok(run) = app.store.request_cancel(id, "merge queue").await
                    && !run.status.is_finished()
                    && let Some(source) = app.running.lock().ok().and_then(|r| r.get(&id).cloned())
                {
                    source.cancel();
                }
            }
            lane.commits.remove(&batch);
        }
        Action::Merge { batch, changes } => {
            let commit = lane.commits.remove(&batch).ok_or("a merged batch has no commit")?;
            lane.runs.remove(&batch);
            let branch = format!("refs/heads/{target}");
            let old = git::repo::resolve_ref(&dir, &branch).await.map_err(|e| e.to_string())?;
            // Only forward, and only from the commit it was tested on top of.
            git::repo::git(&dir, &["merge-base", "--is-ancestor", &old, &commit])
                .await
                .map_err(|_| format!("{target} moved outside the queue; batch {batch} is not merged"))?;
            if !super::hosting::path(app, &repo.name).is_dir() {
                // On a forge: its branch moves first (a plain push, refused if it moved there).
                super::forge::push_branch(app, repo, &dir, &branch, &commit).await?;
            }
            git::repo::git(&dir, &["update-ref", &branch, &commit, &old]).await.map_err(|e| e.to_string())?;
            let _ = git::repo::git(&dir, &["update-ref", "-d", &format!("refs/queue/{batch}")]).await;
            let mut numbers = Vec::new();
            for id in changes {
                let change = app
                    .store
                    .set_change_status(id as i64, "merged", None, "merge queue")
                    .await
                    .map_err(|e| e.to_string())?;
                numbers.push(change.number);
            }
            record("queue.merged", serde_json::json!({"batch": batch, "changes": numbers, "commit": commit})).await;
            // The branch's own runs, as for any push.
            let (change, payload) = repos::push_change(repo, &branch, &old, &commit);
            repos::queue_change(app, repo, Some(&change), &payload, Origin::Direct, "merge queue")
                .await
                .map_err(|e| e.to_string())?;
        }
        Action::Eject { change, reason } => {
            let row = app
                .store
                .set_change_status(
                    change as i64,
                    "ejected",
                    Some(&format!("left the merge queue: {reason}")),
                    "merge queue",
                )
                .await
                .map_err(|e| e.to_string())?;
            record("queue.ejected", serde_json::json!({"change": row.number, "reason": reason})).await;
        }
    }
    Ok(())
}

async fn change_by_id(app: &App, repo: &Repo, id: i64) -> Result<ChangeRow, String> {
    let changes = app.store.changes(repo.id, None).await.map_err(|e| e.to_string())?;
    changes.into_iter().find(|c| c.id == id).ok_or_else(|| format!("change id {id} is not in {}", repo.name))
}

/// Queues the runs of a batch's commit: workflows triggered by `merge_group`, else by `pull_request`.
async fn queue_runs(app: &App, repo: &Repo, queue_ref: &str, commit: &str, target: &str) -> Result<Vec<i64>, String> {
    let base = git::repo::resolve_ref(&super::git_dir(app, repo), &format!("refs/heads/{target}"))
        .await
        .map_err(|e| e.to_string())?;
    for event in ["merge_group", "pull_request"] {
        let change = git::webhook::Change {
            repository: repo.name.clone(),
            clone_urls: vec![repo.source.clone()],
            event,
            git_ref: queue_ref.to_string(),
            sha: commit.to_string(),
            before: base.clone(),
            change_request: None,
            changed_paths: Vec::new(),
        };
        let payload = serde_json::json!({
            "action": "checks_requested",
            "merge_group": {"head_sha": commit, "head_ref": queue_ref, "base_sha": base, "base_ref": format!("refs/heads/{target}")},
            "pull_request": {"head": {"ref": queue_ref, "sha": commit}, "base": {"ref": target, "sha": base}},
            "repository": {"name": repo.name, "full_name": repo.name},
        });
        let runs = repos::plan_runs(app, repo, &change, &payload).await?;
        if runs.is_empty() {
            continue;
        }
        let mut ids = Vec::new();
        for run in runs {
            ids.push(app.store.enqueue(run, "merge queue").await.map_err(|e| e.to_string())?.id);
        }
        app.wake.notify_one();
        return Ok(ids);
    }
    Ok(Vec::new())
}

/// Whether every failed job of `runs` is one `.tandem/review.yml` of the target marks flaky
/// (`flaky-jobs`): such a batch is tested once more before it counts as failed.
async fn only_flaky_jobs_failed(app: &App, repo: &Repo, target: &str, runs: &[store::Run]) -> bool {
    let dir = super::git_dir(app, repo);
    let settings = match crate::code::changes::review_settings(&dir, target).await {
        Ok(settings) => settings,
        Err(error) => {
            tracing::warn!("{}: {error}", repo.name);
            return false;
        }
    };
    if settings.flaky_jobs.is_empty() {
        return false;
    }
    let mut failed_jobs = Vec::new();
    for run in runs.iter().filter(|r| r.status != RunStatus::Success) {
        let Some(report) = run.report.clone().and_then(|r| serde_json::from_value::<api::RunReport>(r).ok()) else {
            // A run that failed without a report (it could not start) is no flaky job.
            return false;
        };
        failed_jobs.extend(
            report.jobs.into_iter().filter(|j| matches!(j.status.as_str(), "failure" | "cancelled")).map(|j| j.id),
        );
    }
    !failed_jobs.is_empty() && failed_jobs.iter().all(|job| settings.flaky_jobs.contains(job))
}

/// The queue's settings for `target`: Tandem's defaults, with `queue.parallel` and `queue.batch`
/// of `.tandem/review.yml` on that branch.
async fn config(app: &App, repo: &Repo, target: &str) -> review::queue::Config {
    let mut config = review::queue::Config::default();
    match crate::code::changes::review_settings(&super::git_dir(app, repo), target).await {
        Ok(settings) => {
            config.max_parallel = settings.parallel.unwrap_or(config.max_parallel);
            config.max_batch = settings.batch.unwrap_or(config.max_batch);
            // Without speculation, nothing waits for company.
            if config.max_parallel == 1 {
                config.min_speculative = 1;
            }
        }
        Err(error) => tracing::warn!("{}: {error}; the merge queue keeps its defaults", repo.name),
    }
    config
}
