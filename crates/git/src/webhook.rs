//! Webhook deliveries from GitHub, Gitea/Forgejo and GitLab: signature checks (constant time) and
//! the normalized change they describe.

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    GitHub,
    Gitea,
    GitLab,
}

impl Forge {
    pub fn from_name(name: &str) -> Option<Forge> {
        match name {
            "github" => Some(Forge::GitHub),
            "gitea" | "forgejo" => Some(Forge::Gitea),
            "gitlab" => Some(Forge::GitLab),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Forge::GitHub => "github",
            Forge::Gitea => "gitea",
            Forge::GitLab => "gitlab",
        }
    }

    /// The header naming the event kind.
    pub fn event_header(self) -> &'static [&'static str] {
        match self {
            Forge::GitHub => &["x-github-event"],
            Forge::Gitea => &["x-gitea-event", "x-forgejo-event", "x-gogs-event"],
            Forge::GitLab => &["x-gitlab-event"],
        }
    }

    /// The header carrying the delivery's unique id.
    pub fn delivery_header(self) -> &'static [&'static str] {
        match self {
            Forge::GitHub => &["x-github-delivery"],
            Forge::Gitea => &["x-gitea-delivery", "x-forgejo-delivery", "x-gogs-delivery"],
            // GitLab keeps `Idempotency-Key` across the retries of one delivery.
            Forge::GitLab => &["idempotency-key", "x-gitlab-event-uuid"],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookError {
    /// The signature or token is missing or wrong.
    Unauthorized(String),
    /// The body is not JSON, or lacks a field the event must have.
    Malformed(String),
}

impl std::fmt::Display for WebhookError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WebhookError::Unauthorized(m) | WebhookError::Malformed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for WebhookError {}

/// Checks a delivery against the repository's secret. `header` looks a header up by lower-case name.
pub fn verify(
    forge: Forge,
    secret: &str,
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
) -> Result<(), WebhookError> {
    match forge {
        Forge::GitHub | Forge::Gitea => {
            let (names, prefix): (&[&str], &str) = match forge {
                Forge::GitHub => (&["x-hub-signature-256"], "sha256="),
                _ => (&["x-gitea-signature", "x-forgejo-signature", "x-gogs-signature"], ""),
            };
            let signature = names
                .iter()
                .find_map(|n| header(n))
                .ok_or_else(|| WebhookError::Unauthorized(format!("missing signature header {}", names[0])))?;
            let hex = signature
                .trim()
                .strip_prefix(prefix)
                .ok_or_else(|| WebhookError::Unauthorized(format!("signature must start with `{prefix}`")))?;
            let expected =
                decode_hex(hex).ok_or_else(|| WebhookError::Unauthorized("signature is not hexadecimal".into()))?;
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                .map_err(|_| WebhookError::Unauthorized("unusable secret".into()))?;
            mac.update(body);
            // `verify_slice` compares in constant time.
            mac.verify_slice(&expected)
                .map_err(|_| WebhookError::Unauthorized("signature does not match the payload".into()))
        }
        Forge::GitLab => {
            let token =
                header("x-gitlab-token").ok_or_else(|| WebhookError::Unauthorized("missing X-Gitlab-Token".into()))?;
            if constant_time_eq(token.as_bytes(), secret.as_bytes()) {
                Ok(())
            } else {
                Err(WebhookError::Unauthorized("X-Gitlab-Token does not match".into()))
            }
        }
    }
}

/// The `X-Hub-Signature-256` value for a body, as GitHub computes it (used by tests and tools).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable_hmac());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn unreachable_hmac() -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    Hmac::<Sha256>::new_from_slice(b"k").unwrap_or_else(|_| std::process::abort())
}

/// Compares without revealing, through timing, where two byte strings first differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    hex::decode(text).ok()
}

/// What a delivery is about.
#[derive(Debug, Clone, PartialEq, Eq)]
// One per delivery, moved once: boxing the change would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    Change(Change),
    /// An approval of a change request given (or taken back) on the forge.
    Review(Review),
    /// A valid delivery Tandem does not act on (ping, issues, a deleted branch...).
    Ignored {
        event: String,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `owner/name` as the forge calls the repository.
    pub repository: String,
    pub clone_urls: Vec<String>,
    /// `push` or `pull_request`.
    pub event: &'static str,
    /// The ref the run checks out: the pushed ref, or the change request's head branch.
    pub git_ref: String,
    pub sha: String,
    pub before: String,
    pub change_request: Option<ChangeRequest>,
    /// Files the pushed commits touched, where the payload lists them.
    pub changed_paths: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRequest {
    pub number: i64,
    /// GitHub's action names: opened, synchronize, reopened, closed.
    pub action: String,
    pub head_ref: String,
    pub base_ref: String,
    pub merged: bool,
    pub title: String,
    /// The forge login of who opened it.
    pub author: String,
}

/// A review of a change request on its forge: `approved` (or an approval withdrawn or
/// dismissed: `false`) by `reviewer`, a forge login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    pub repository: String,
    pub clone_urls: Vec<String>,
    pub number: i64,
    pub reviewer: String,
    pub approved: bool,
}

fn text(value: &Value, path: &str) -> Option<String> {
    let mut current = value;
    for part in path.split('.') {
        current = current.get(part)?;
    }
    match current {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn required(value: &Value, path: &str, event: &str) -> Result<String, WebhookError> {
    text(value, path).ok_or_else(|| WebhookError::Malformed(format!("{event} payload has no `{path}`")))
}

const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

/// Reads a delivery's payload. `event` is the value of the forge's event header.
pub fn parse(forge: Forge, event: &str, body: &[u8]) -> Result<Parsed, WebhookError> {
    let json: Value =
        serde_json::from_slice(body).map_err(|e| WebhookError::Malformed(format!("payload is not valid JSON: {e}")))?;
    if !json.is_object() {
        return Err(WebhookError::Malformed("payload is not a JSON object".into()));
    }
    let kind = match (forge, event) {
        (Forge::GitLab, "Push Hook" | "Tag Push Hook") | (Forge::GitHub | Forge::Gitea, "push") => "push",
        (Forge::GitLab, "Merge Request Hook") | (Forge::GitHub | Forge::Gitea, "pull_request") => "pull_request",
        (Forge::GitHub, "pull_request_review") | (Forge::Gitea, "pull_request_review_approved") => "review",
        _ => {
            return Ok(Parsed::Ignored {
                event: event.to_string(),
                reason: "Tandem acts on pushes and change requests".into(),
            });
        }
    };
    let (repository, clone_urls) = match forge {
        Forge::GitLab => (
            required(&json, "project.path_with_namespace", kind)?,
            ["project.git_http_url", "project.git_ssh_url", "project.http_url"]
                .iter()
                .filter_map(|p| text(&json, p))
                .collect(),
        ),
        _ => (
            required(&json, "repository.full_name", kind)?,
            ["repository.clone_url", "repository.ssh_url", "repository.html_url"]
                .iter()
                .filter_map(|p| text(&json, p))
                .collect(),
        ),
    };
    let attributes_action = json.pointer("/object_attributes/action").and_then(Value::as_str);
    if kind == "review" || (forge == Forge::GitLab && matches!(attributes_action, Some("approved" | "unapproved"))) {
        return review(forge, event, &json, repository, clone_urls);
    }
    if kind == "push" {
        let mut git_ref = required(&json, "ref", kind)?;
        // Older Gitea versions describe a pushed tag as `{sha, ref: "v1.0.0", ref_type: "tag"}`.
        let sha = match (text(&json, "after"), text(&json, "sha"), text(&json, "ref_type")) {
            (Some(after), ..) => after,
            (None, Some(sha), Some(ref_type)) => {
                if !git_ref.starts_with("refs/") {
                    git_ref = format!("refs/{}/{git_ref}", if ref_type == "tag" { "tags" } else { "heads" });
                }
                sha
            }
            _ => return Err(WebhookError::Malformed("push payload has no `after`".into())),
        };
        let before = text(&json, "before").unwrap_or_else(|| ZERO_SHA.to_string());
        if sha == ZERO_SHA {
            return Ok(Parsed::Ignored { event: event.to_string(), reason: format!("{git_ref} was deleted") });
        }
        let mut changed_paths: Vec<String> = json
            .get("commits")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|c| {
                ["added", "modified", "removed"]
                    .into_iter()
                    .filter_map(move |k| c.get(k).and_then(Value::as_array))
                    .flatten()
            })
            .filter_map(|p| p.as_str().map(str::to_string))
            .collect();
        changed_paths.sort();
        changed_paths.dedup();
        return Ok(Parsed::Change(Change {
            repository,
            clone_urls,
            event: "push",
            git_ref,
            sha,
            before,
            change_request: None,
            changed_paths,
        }));
    }
    let request = match forge {
        Forge::GitLab => {
            let attributes = json
                .get("object_attributes")
                .ok_or_else(|| WebhookError::Malformed("merge request payload has no `object_attributes`".into()))?;
            let action = match text(attributes, "action").as_deref() {
                Some("open") => "opened",
                Some("reopen") => "reopened",
                Some("update") if attributes.get("oldrev").is_some() => "synchronize",
                Some("close") => "closed",
                Some("merge") => "closed",
                Some(other) => {
                    return Ok(Parsed::Ignored {
                        event: event.to_string(),
                        reason: format!("merge request action `{other}` changes no code"),
                    });
                }
                None => {
                    return Err(WebhookError::Malformed(
                        "merge request payload has no `object_attributes.action`".into(),
                    ));
                }
            };
            ChangeRequest {
                number: required(attributes, "iid", kind)?
                    .parse()
                    .map_err(|_| WebhookError::Malformed("`iid` is not a number".into()))?,
                action: action.to_string(),
                head_ref: required(attributes, "source_branch", kind)?,
                base_ref: required(attributes, "target_branch", kind)?,
                merged: text(attributes, "action").as_deref() == Some("merge"),
                title: text(attributes, "title").unwrap_or_default(),
                author: text(&json, "user.username").unwrap_or_default(),
            }
        }
        _ => {
            let action = required(&json, "action", kind)?;
            let action = if action == "synchronized" { "synchronize".to_string() } else { action };
            ChangeRequest {
                number: required(&json, "number", kind)?
                    .parse()
                    .map_err(|_| WebhookError::Malformed("`number` is not a number".into()))?,
                action,
                head_ref: required(&json, "pull_request.head.ref", kind)?,
                base_ref: required(&json, "pull_request.base.ref", kind)?,
                merged: json.pointer("/pull_request/merged").and_then(Value::as_bool).unwrap_or(false),
                title: text(&json, "pull_request.title").unwrap_or_default(),
                author: text(&json, "pull_request.user.login").unwrap_or_default(),
            }
        }
    };
    let sha = match forge {
        Forge::GitLab => required(&json, "object_attributes.last_commit.id", kind)?,
        _ => required(&json, "pull_request.head.sha", kind)?,
    };
    let before = match forge {
        Forge::GitLab => text(&json, "object_attributes.oldrev"),
        _ => text(&json, "before").or_else(|| text(&json, "pull_request.base.sha")),
    }
    .unwrap_or_else(|| ZERO_SHA.to_string());
    Ok(Parsed::Change(Change {
        repository,
        clone_urls,
        event: "pull_request",
        git_ref: format!("refs/heads/{}", request.head_ref),
        sha,
        before,
        change_request: Some(request),
        changed_paths: Vec::new(),
    }))
}

/// A review delivery: GitHub's `pull_request_review` (`submitted` with state `approved`, or
/// `dismissed`), Gitea's `pull_request_review_approved`, GitLab's merge request `approved` /
/// `unapproved`. Other reviews (comments, changes requested) are ignored: only approvals count.
fn review(
    forge: Forge,
    event: &str,
    json: &Value,
    repository: String,
    clone_urls: Vec<String>,
) -> Result<Parsed, WebhookError> {
    let ignored = |reason: &str| Ok(Parsed::Ignored { event: event.to_string(), reason: reason.to_string() });
    let number = |path: &str| -> Result<i64, WebhookError> {
        required(json, path, "review")?
            .parse()
            .map_err(|_| WebhookError::Malformed(format!("`{path}` is not a number")))
    };
    let (number, reviewer, approved) = match forge {
        Forge::GitHub => {
            let state = text(json, "review.state").unwrap_or_default().to_ascii_lowercase();
            let approved = match (text(json, "action").as_deref(), state.as_str()) {
                (Some("submitted"), "approved") => true,
                (Some("dismissed"), _) => false,
                _ => return ignored("only approvals (and their dismissal) count as reviews"),
            };
            (number("pull_request.number")?, required(json, "review.user.login", "review")?, approved)
        }
        Forge::Gitea => {
            let number = number("number").or_else(|_| number("pull_request.number"))?;
            (number, required(json, "sender.login", "review")?, true)
        }
        Forge::GitLab => {
            let approved = text(json, "object_attributes.action").as_deref() == Some("approved");
            (number("object_attributes.iid")?, required(json, "user.username", "review")?, approved)
        }
    };
    Ok(Parsed::Review(Review { repository, clone_urls, number, reviewer, approved }))
}
