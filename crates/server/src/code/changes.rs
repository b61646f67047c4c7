//! What a push to a hosted repository does: a branch that moved starts its runs; a push to
//! `refs/for/<branch>` becomes a revision of a change (tied to the earlier ones by its
//! `Change-Id` trailer, or by a topic, `refs/for/<branch>/<topic>`), runs CI as a `pull_request`,
//! and is checked against every other open change for files that collide. And what a change still
//! lacks before it may enter the merge queue.

use std::collections::BTreeMap;

use store::{ChangeRow, NewRevision, Repo};

use crate::App;
use crate::repos::{self, Origin};

const ZERO: &str = "0000000000000000000000000000000000000000";

/// Acts on the refs a push moved (`before` → `after`).
pub async fn pushed(
    app: &App,
    repo: &Repo,
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
    actor: &str,
) {
    for (name, sha) in after {
        let old = before.get(name).map_or(ZERO, String::as_str);
        if old == sha {
            continue;
        }
        let result = if let Some(branch) = name.strip_prefix("refs/heads/") {
            let _ = branch;
            let (change, payload) = repos::push_change(repo, name, old, sha);
            repos::queue_change(app, repo, Some(&change), &payload, Origin::Direct, actor)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        } else if let Some(target) = name.strip_prefix("refs/for/") {
            revision(app, repo, name, target, sha, actor).await
        } else {
            Ok(())
        };
        if let Err(error) = result {
            tracing::error!("after a push to {} ({name}): {error}", repo.name);
        }
    }
}

/// A push to `refs/for/<target>[/<topic>]`: a new change or a new revision of one.
async fn revision(
    app: &App,
    repo: &Repo,
    pushed_ref: &str,
    target: &str,
    sha: &str,
    actor: &str,
) -> Result<(), String> {
    let dir = super::hosting::path(app, &repo.name);
    let (target, topic) = match target.split_once('/') {
        Some((target, topic)) => (target, Some(topic)),
        None => (target, None),
    };
    let git = |args: Vec<String>| {
        let dir = dir.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            git::repo::git(&dir, &args).await.map_err(|e| e.to_string())
        }
    };
    // The ref was only the way in.
    git(vec!["update-ref".into(), "-d".into(), pushed_ref.into()]).await?;
    let base =
        git(vec!["rev-parse".into(), "--verify".into(), "--quiet".into(), format!("refs/heads/{target}^{{commit}}")])
            .await
            .map_err(|_| format!("there is no branch `{target}` to review against"))?;
    let message = git(vec![
        "log".into(),
        "-1".into(),
        "--format=%s%x00%(trailers:key=Change-Id,valueonly,separator=%x2C)".into(),
        sha.into(),
    ])
    .await?;
    let (title, change_id) = message.split_once('\0').unwrap_or((message.as_str(), ""));
    let key = match (change_id.split(',').next().map(str::trim).filter(|k| !k.is_empty()), topic) {
        (Some(id), _) => format!("Change-Id:{id}"),
        (None, Some(topic)) => format!("topic:{topic}"),
        // Without either, each push is its own change.
        (None, None) => format!("commit:{sha}"),
    };
    let new = NewRevision { repo_id: repo.id, number: None, target, change_key: &key, title, sha, base: &base };
    let (change, number) = app.store.push_revision(new, actor).await.map_err(|e| e.to_string())?;
    git(vec!["update-ref".into(), format!("refs/changes/{}/{number}", change.number), sha.into()]).await?;
    // A new revision leaves the queue: it is tested anew once it qualifies again.
    super::queue::remove(app, repo, &change).await;
    // Its runs, as a pull request.
    let head_ref = format!("refs/changes/{}/{number}", change.number);
    let action = if number == 1 { "opened" } else { "synchronize" };
    let request = git::webhook::ChangeRequest {
        number: change.number,
        action: action.to_string(),
        head_ref: head_ref.clone(),
        base_ref: target.to_string(),
        merged: false,
        title: change.title.clone(),
        author: change.author.clone(),
    };
    let pr = git::webhook::Change {
        repository: repo.name.clone(),
        clone_urls: vec![repo.source.clone()],
        event: "pull_request",
        git_ref: head_ref.clone(),
        sha: sha.to_string(),
        before: base.clone(),
        change_request: Some(request),
        changed_paths: Vec::new(),
    };
    let payload = serde_json::json!({
        "action": action,
        "number": change.number,
        "pull_request": {
            "number": change.number, "title": change.title, "user": {"login": change.author},
            "head": {"ref": head_ref, "sha": sha}, "base": {"ref": target, "sha": base},
        },
        "repository": {"name": repo.name, "full_name": repo.name},
        "sender": {"login": actor},
    });
    repos::queue_change(app, repo, Some(&pr), &payload, Origin::Direct, actor).await.map_err(|e| e.to_string())?;
    warn_conflicts(app, repo, &change, sha).await;
    Ok(())
}

/// Tells both changes which files collide when `sha` is merged with each other open change of
/// the same target (an event on each: `change.conflict_warning`).
pub(super) async fn warn_conflicts(app: &App, repo: &Repo, change: &ChangeRow, sha: &str) {
    let dir = super::git_dir(app, repo);
    let Ok(others) = app.store.changes(repo.id, None).await else { return };
    for other in others.iter().filter(|o| o.id != change.id && o.target == change.target) {
        if !matches!(other.status.as_str(), "open" | "queued" | "ejected") {
            continue;
        }
        let Some(theirs) = latest(app, other).await else { continue };
        match git::repo::merge_tree(&dir, sha, &theirs.sha).await {
            Ok(Err(files)) => {
                for (about, with) in [(change, other), (other, change)] {
                    let payload = serde_json::json!({"number": about.number, "with": with.number, "files": files});
                    if let Err(error) = app
                        .store
                        .record_event("change.conflict_warning", &format!("change/{}", about.id), "tandem", payload)
                        .await
                    {
                        tracing::error!("cannot record a conflict warning: {error}");
                    }
                }
                tracing::info!(
                    "changes {} and {} of {} collide in {}",
                    change.number,
                    other.number,
                    repo.name,
                    files.join(", ")
                );
            }
            Ok(Ok(_)) => {}
            Err(error) => {
                tracing::warn!("cannot check changes {} and {} for conflicts: {error}", change.number, other.number)
            }
        }
    }
}

/// A change's latest revision.
pub async fn latest(app: &App, change: &ChangeRow) -> Option<store::RevisionRow> {
    app.store.revisions(change.id).await.ok()?.pop()
}

/// The diff of a revision against its base, without what changes with a rebase (index lines
/// and hunk positions): two revisions with the same such diff carry the same code.
async fn code_of(dir: &std::path::Path, revision: &store::RevisionRow) -> String {
    let range = format!("{}...{}", revision.base, revision.sha);
    let diff = git::repo::git(dir, &["diff", "--no-color", &range]).await.unwrap_or_default();
    diff.lines().filter(|l| !l.starts_with("index ") && !l.starts_with("@@")).collect::<Vec<_>>().join("\n")
}

/// What `change` has against what its repository requires, and what it lacks.
pub async fn standing(
    app: &App,
    repo: &Repo,
    change: &ChangeRow,
) -> Result<(review::owners::Standing, Vec<String>), String> {
    let dir = super::git_dir(app, repo);
    let revisions = app.store.revisions(change.id).await.map_err(|e| e.to_string())?;
    let current = revisions.last().ok_or("the change has no revision")?;
    let current_code = code_of(&dir, current).await;
    let reviews = app.store.reviews(change.id).await.map_err(|e| e.to_string())?;
    // Approvals of revisions whose code is the current one's count; others were dismissed.
    // A dismissal (an approval withdrawn on the forge) takes its author's approvals away.
    let mut approvers: Vec<String> = Vec::new();
    for review in &reviews {
        if review.kind == "dismissal" {
            approvers.retain(|a| *a != review.author);
            continue;
        }
        if review.kind != "approval" {
            continue;
        }
        let same = review.revision == current.number
            || match revisions.iter().find(|r| r.number == review.revision) {
                Some(revision) => code_of(&dir, revision).await == current_code,
                None => false,
            };
        if same && !approvers.contains(&review.author) {
            approvers.push(review.author.clone());
        }
    }
    let range = format!("{}...{}", current.base, current.sha);
    let touched: Vec<String> = git::repo::git(&dir, &["diff", "--name-only", &range])
        .await
        .map_err(|e| e.to_string())?
        .lines()
        .map(str::to_string)
        .collect();
    let mut owners = None;
    for location in review::owners::LOCATIONS {
        if let Ok(text) = git::repo::git(&dir, &["show", &format!("{}:{location}", change.target)]).await {
            owners = Some(review::owners::CodeOwners::parse(&text).map_err(|e| format!("{location}: {e}"))?);
            break;
        }
    }
    let required_approvals = review_settings(&dir, &change.target).await?.approvals;
    let mut teams: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (team, member) in app.store.members().await.map_err(|e| e.to_string())? {
        teams.entry(team).or_default().push(member);
    }
    let runs = app
        .store
        .runs(store::RunFilter { repo_id: Some(repo.id), limit: 200, ..Default::default() })
        .await
        .map_err(|e| e.to_string())?;
    let checks: Vec<(String, String)> = runs
        .iter()
        .filter(|r| r.sha == current.sha && r.event == "pull_request")
        .map(|r| (r.workflow.clone(), r.status.as_str().to_string()))
        .collect();
    let standing = review::owners::Standing {
        author: change.author.clone(),
        approvers,
        teams,
        touched,
        owners,
        required_approvals,
        checks,
        unresolved_comments: reviews.iter().filter(|r| r.kind == "comment" && r.path.is_some() && !r.resolved).count(),
    };
    let missing = review::owners::missing(&standing);
    Ok((standing, missing))
}

/// `.tandem/review.yml` of branch `target` of the repository at `dir` (defaults without one).
pub async fn review_settings(dir: &std::path::Path, target: &str) -> Result<spec::review::ReviewSettings, String> {
    const FILE: &str = ".tandem/review.yml";
    let Ok(text) = git::repo::git(dir, &["show", "--end-of-options", &format!("{target}:{FILE}")]).await else {
        return Ok(spec::review::ReviewSettings::default());
    };
    let (parsed, diagnostics) = spec::review::parse(&text);
    parsed.ok_or_else(|| {
        diagnostics.iter().filter(|d| d.is_error()).map(|d| d.render(FILE, &text)).collect::<Vec<_>>().join("\n")
    })
}
