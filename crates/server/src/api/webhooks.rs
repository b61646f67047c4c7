//! `POST /api/v1/webhooks/{forge}`: deliveries from GitHub, Gitea/Forgejo and GitLab, checked, stored and answered only once their runs are queued.

#[allow(unused_imports)]
use super::*;

/// Which repository a payload is about, read before the signature can be checked (the secret
/// belongs to the repository).
pub(super) fn payload_repository(forge: Forge, body: &serde_json::Value) -> (Option<String>, Vec<String>) {
    let pick = |paths: &[&str]| {
        paths.iter().filter_map(|p| body.pointer(p).and_then(|v| v.as_str()).map(str::to_string)).collect::<Vec<_>>()
    };
    match forge {
        // Older hooks (jobs, pipelines of old versions) name the project only by `project_id`
        // and the `repository` URLs.
        Forge::GitLab => (
            pick(&["/project/path_with_namespace"]).pop(),
            pick(&[
                "/project/git_http_url",
                "/project/git_ssh_url",
                "/project/http_url",
                "/project/web_url",
                "/repository/git_http_url",
                "/repository/git_ssh_url",
                "/repository/url",
                "/repository/homepage",
            ]),
        ),
        _ => (
            pick(&["/repository/full_name"]).pop(),
            pick(&["/repository/clone_url", "/repository/ssh_url", "/repository/html_url"]),
        ),
    }
}

pub(super) fn find_repo<'r>(repos: &'r [Repo], name: Option<&str>, urls: &[String]) -> Option<&'r Repo> {
    // Without `.git`, a trailing slash, or a user (`https://user:***@host/…` is `https://host/…`).
    let bare = |url: &str| {
        let url = url.trim_end_matches('/').trim_end_matches(".git");
        match url.split_once("://") {
            Some((scheme, rest)) => {
                let authority_end = rest.find('/').unwrap_or(rest.len());
                let rest = rest[..authority_end].rfind('@').map_or(rest, |at| &rest[at + 1..]);
                format!("{scheme}://{rest}")
            }
            None => url.to_string(),
        }
    };
    // `group/sub/project` of `https://host/group/sub/project.git` or `git@host:group/project.git`.
    let path_of = |url: &str| {
        let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
        let rest = rest.split_once(['/', ':']).map_or("", |(_, path)| path);
        bare(rest)
    };
    repos.iter().find(|r| Some(r.name.as_str()) == name).or_else(|| {
        repos.iter().find(|r| {
            urls.iter().any(|u| bare(u) == bare(&r.source) || (!path_of(u).is_empty() && path_of(u) == r.name))
        })
    })
}

#[utoipa::path(post, path = "/api/v1/webhooks/{forge}", tag = "webhooks",
    summary = "Webhook from GitHub (X-Hub-Signature-256), Gitea/Forgejo (X-Gitea-Signature) or GitLab (X-Gitlab-Token)",
    params(("forge" = String, Path, description = "`github`, `gitea`, `forgejo` or `gitlab`")),
    request_body(content = serde_json::Value, description = "The forge's event payload, as it sends it"),
    responses((status = 202, description = "Stored; the runs it starts are queued"),
        (status = 200, description = "A delivery seen before, or an event that starts nothing"),
        (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn webhook(
    State(app): State<Arc<App>>,
    Path(forge_name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let reject = |error: AppError| {
        Metrics::add(&app.metrics.webhooks_rejected, 1);
        if error.status == StatusCode::UNAUTHORIZED {
            tracing::warn!("webhook rejected: {}", error.message);
        }
        Err(error)
    };
    let Some(forge) = Forge::from_name(&forge_name) else {
        return reject(AppError::new(
            StatusCode::NOT_FOUND,
            "unknown_forge",
            format!("unknown forge `{forge_name}`; use github, gitea, forgejo or gitlab"),
        ));
    };
    let body: Bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return reject(AppError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("webhook bodies are limited to {MAX_BODY_BYTES} bytes"),
            ));
        }
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let Some(event) = forge.event_header().iter().find_map(|h| header(h)) else {
        return reject(AppError::new(
            StatusCode::BAD_REQUEST,
            "missing_header",
            format!("the {} header is missing", forge.event_header()[0]),
        ));
    };
    let delivery =
        forge.delivery_header().iter().find_map(|h| header(h)).unwrap_or_else(|| webhook::sign("delivery", &body));
    let json: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(json) => json,
        Err(e) => {
            return reject(AppError::new(
                StatusCode::BAD_REQUEST,
                "malformed_payload",
                format!("the body is not valid JSON: {e}"),
            ));
        }
    };
    let (name, urls) = payload_repository(forge, &json);
    let repos = app.store.repos().await?;
    let Some(repo) = find_repo(&repos, name.as_deref(), &urls) else {
        return reject(AppError::new(
            StatusCode::NOT_FOUND,
            "unknown_repository",
            format!("no repository here matches `{}`; add it with `tandem repo add`", name.unwrap_or_default()),
        ));
    };
    let secret = match crate::credentials::read(&app, repo, "webhook_secret", &repo.webhook_secret).await {
        Ok(secret) => secret,
        Err(error) => {
            tracing::error!("cannot read the webhook secret of {}: {error}", repo.name);
            return reject(AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "vault", error));
        }
    };
    if let Err(error) = webhook::verify(forge, &secret, &header, &body) {
        return reject(AppError::new(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            format!("{error}; nothing was stored"),
        ));
    }
    let parsed = match webhook::parse(forge, &event, &body) {
        Ok(parsed) => parsed,
        Err(error) => return reject(AppError::new(StatusCode::BAD_REQUEST, "malformed_payload", error.to_string())),
    };
    // An archived repository takes deliveries (the forge keeps its hook) and starts nothing.
    let parsed = match (&repo.archived, parsed) {
        (Some(_), Parsed::Change(change)) => Parsed::Ignored {
            event: change.event.to_string(),
            reason: format!("{} is archived: it starts no runs", repo.name),
        },
        (_, parsed) => parsed,
    };
    let (change, outcome) = match &parsed {
        Parsed::Change(change) => (Some(change), "queued"),
        Parsed::Review(_) => (None, "reviewed"),
        Parsed::Ignored { .. } => (None, "ignored"),
    };
    let origin = repos::Origin::Delivery { forge: forge.name(), id: &delivery, event: &event };
    let stored = match repos::queue_change(&app, repo, change, &json, origin, forge.name()).await {
        Ok(stored) => stored,
        Err(repos::QueueError::Store(error)) => return Err(error.into()),
        Err(error) => {
            tracing::warn!("planning runs for {}: {error}", repo.name);
            return Err(AppError::new(
                StatusCode::BAD_GATEWAY,
                "repository_unavailable",
                format!("cannot read {}: {error}", git::redact_credentials(&repo.source)),
            ));
        }
    };
    Metrics::add(&app.metrics.webhooks_accepted, 1);
    // A pull request or a review of a repository on a forge: its change here follows.
    let mut review_note = None;
    if matches!(stored, Delivery::Stored(_))
        && repo.archived.is_none()
        && !crate::code::hosting::path(&app, &repo.name).is_dir()
    {
        let applied = match &parsed {
            Parsed::Change(change) if change.change_request.is_some() => {
                crate::code::forge::pull_request(&app, repo, change).await.map(|()| None)
            }
            Parsed::Review(review) => crate::code::forge::review(&app, repo, review).await.map(Some),
            _ => Ok(None),
        };
        match applied {
            Ok(note) => review_note = note,
            Err(error) => {
                tracing::warn!("the change request of {} does not follow: {error}", repo.name);
                review_note = Some(error);
            }
        }
    }
    let body = match stored {
        Delivery::Stored(ids) => {
            let (outcome, reason) = match &parsed {
                Parsed::Ignored { reason, .. } => (outcome, Some(reason.clone())),
                Parsed::Review(_) => (outcome, review_note.clone()),
                // A delivery that starts nothing says so, and why.
                Parsed::Change(change) if ids.is_empty() => {
                    let what = match &change.change_request {
                        Some(request) => format!("{} `{}`", change.event, request.action),
                        None => format!("{} to {}", change.event, change.git_ref),
                    };
                    ("ignored", Some(format!("no workflow of {} runs on {what}", repo.name)))
                }
                Parsed::Change(_) => (outcome, None),
            };
            serde_json::json!({"status": outcome, "delivery": delivery, "runs": ids, "reason": reason})
        }
        Delivery::Duplicate => serde_json::json!({"status": "duplicate", "delivery": delivery, "runs": []}),
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(name: &str, source: &str) -> Repo {
        Repo {
            id: 1,
            name: name.into(),
            source: source.into(),
            webhook_secret: String::new(),
            poll_seconds: None,
            created: String::new(),
            forge: None,
            api_url: None,
            status_token: None,
            archived: None,
        }
    }

    #[test]
    fn a_hook_finds_a_repository_by_its_url_whatever_user_the_source_names() {
        let repos = [repo("app", "https://ana:***@git.example/team/app.git")];
        let urls = |u: &str| vec![u.to_string()];
        assert!(find_repo(&repos, Some("other"), &urls("https://git.example/team/app")).is_some());
        assert!(find_repo(&repos, None, &urls("https://git.example/team/app.git/")).is_some());
        assert!(find_repo(&repos, None, &urls("https://git.example/team/other.git")).is_none());
        assert!(find_repo(&repos, None, &urls("https://elsewhere.example/team/app.git")).is_none());
    }
}
