//! Change requests of repositories on a forge (GitHub, Gitea/Forgejo, GitLab): their pull and
//! merge request webhooks open, revise and close changes here (numbered as the forge numbers
//! them), and approvals given on the forge count as reviews — so the same requirements, conflict
//! warnings and merge queue serve them. A merged batch is pushed to the forge's branch with the
//! repository's credentials; the forge then sees its pull requests merged.

use git::webhook::{Change, Review};
use store::{NewRevision, Repo, ReviewRow};

use super::{changes, queue};
use crate::{App, repos};

/// Acts on a pull (merge) request delivery: a new head is a revision; closed on the forge, the
/// change is closed (or merged) here.
pub async fn pull_request(app: &App, repo: &Repo, change: &Change) -> Result<(), String> {
    let Some(request) = &change.change_request else { return Ok(()) };
    let existing = app
        .store
        .changes(repo.id, None)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|c| c.number == request.number);
    match request.action.as_str() {
        "closed" => {
            if let Some(row) = existing.filter(|c| !matches!(c.status.as_str(), "merged" | "closed")) {
                queue::remove(app, repo, &row).await;
                let status = if request.merged { "merged" } else { "closed" };
                app.store
                    .set_change_status(row.id, status, Some("on the forge"), &request.author)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        "opened" | "reopened" | "synchronize" => {
            if let Some(row) = &existing {
                // A repeated delivery of the same head adds nothing.
                if changes::latest(app, row).await.is_some_and(|r| r.sha == change.sha) && row.status != "closed" {
                    return Ok(());
                }
                if !matches!(row.status.as_str(), "open" | "queued") {
                    app.store
                        .set_change_status(row.id, "open", None, &request.author)
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            let mirror = repos::sync(app, repo, Some(&change.sha)).await?;
            let target = format!("refs/heads/{}", request.base_ref);
            let base = git::repo::resolve_ref(&mirror, &target).await.map_err(|e| e.to_string())?;
            let key = format!("pull/{}", request.number);
            let new = NewRevision {
                repo_id: repo.id,
                number: Some(request.number),
                target: &request.base_ref,
                change_key: &key,
                title: &request.title,
                sha: &change.sha,
                base: &base,
            };
            let author = if request.author.is_empty() { "forge" } else { request.author.as_str() };
            let (row, _) = app.store.push_revision(new, author).await.map_err(|e| e.to_string())?;
            // A new revision leaves the queue: it is tested anew once it qualifies again.
            queue::remove(app, repo, &row).await;
            changes::warn_conflicts(app, repo, &row, &change.sha).await;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Records an approval given (or withdrawn) on the forge, as its reviewer's forge login — the
/// names `CODEOWNERS` uses.
pub async fn review(app: &App, repo: &Repo, review: &Review) -> Result<String, String> {
    let change = app.store.change(repo.id, review.number).await.map_err(|_| {
        format!("{} has no change {} (its pull request was never delivered here)", repo.name, review.number)
    })?;
    let revision = changes::latest(app, &change).await.ok_or("the change has no revision")?;
    let kind = if review.approved { "approval" } else { "dismissal" };
    let row = ReviewRow {
        id: 0,
        change_id: change.id,
        revision: revision.number,
        kind: kind.into(),
        author: review.reviewer.clone(),
        path: None,
        line: None,
        body: "on the forge".into(),
        resolved: false,
        created: String::new(),
    };
    app.store.add_review(row, &review.reviewer).await.map_err(|e| e.to_string())?;
    Ok(format!("{} of change {} by {} recorded", kind, change.number, review.reviewer))
}

/// Moves the forge's `branch` from `old` to `commit` (only forward: a plain push), with the
/// repository's credentials; then the mirror's branch follows.
pub async fn push_branch(
    app: &App,
    repo: &Repo,
    dir: &std::path::Path,
    branch: &str,
    commit: &str,
) -> Result<(), String> {
    let (url, env) = crate::credentials::remote(app, repo).await?;
    let refspec = format!("{commit}:{branch}");
    git::repo::run_env(Some(dir), &["push", "--quiet", "--end-of-options", &url, &refspec], &env)
        .await
        .map_err(|e| format!("cannot push {branch} to {}: {e}", git::redact_credentials(&repo.source)))?;
    Ok(())
}
