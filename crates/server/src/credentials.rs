//! A repository's own credentials — its webhook secret, its forge status token and the user and
//! password of its source URL — sealed in the vault like any secret (scope
//! `credential/repo/<name>`, never given to runs nor listed by the secrets API; resealed by a key
//! rotation). The repository's row keeps only [`IN_VAULT`], or its URL with `***` for the
//! password; git gets them through its environment ([`remote`]), never as an argument.

use store::Repo;

use crate::App;

/// What a repository's row holds in place of a credential kept in the vault.
pub const IN_VAULT: &str = "(in the vault)";

fn scope(repo: &str) -> String {
    format!("credential/repo/{repo}")
}

/// Seals `value` as the credential `name` of repository `repo`.
pub async fn keep(app: &App, repo: &str, name: &str, value: &str, actor: &str) -> Result<(), String> {
    let vault = app.vault()?;
    let sealed = vault.seal(&scope(repo), name, value.as_bytes())?;
    app.store.set_secret("secret", &scope(repo), name, &sealed, actor).await.map_err(|e| e.to_string())
}

/// The credential `name` of `repo`, whose row holds `column`: from the vault, or the row's own
/// value for a row from before the vault (until [`seal_clear`] moves it).
pub async fn read(app: &App, repo: &Repo, name: &str, column: &str) -> Result<String, String> {
    if column != IN_VAULT {
        return Ok(column.to_string());
    }
    let scope = scope(&repo.name);
    let rows = app.store.secrets("secret", std::slice::from_ref(&scope)).await.map_err(|e| e.to_string())?;
    let row = rows
        .iter()
        .find(|r| r.name == name)
        .ok_or_else(|| format!("the {name} of {} is not in the vault", repo.name))?;
    let value = app.vault()?.open_value(&row.scope, &row.name, &row.value)?;
    String::from_utf8(value).map_err(|_| format!("the {name} of {} is not text", repo.name))
}

/// The vault name of a source URL's `user:password`.
const URL_CREDENTIALS: &str = "url_credentials";

/// The parts of `scheme://userinfo@rest`: (scheme, userinfo, rest), when the URL has userinfo.
fn url_parts(source: &str) -> Option<(&str, &str, &str)> {
    let (scheme, after) = source.split_once("://")?;
    let authority_end = after.find('/').unwrap_or(after.len());
    let sign = after[..authority_end].rfind('@')?;
    Some((scheme, &after[..sign], &after[sign + 1..]))
}

/// Whether the userinfo is what [`git::redact_credentials`] leaves: `***` or `user:***`.
fn is_redacted(userinfo: &str) -> bool {
    userinfo == "***" || userinfo.ends_with(":***")
}

/// Splits the credentials off a source URL: `Ok(Some((kept, credentials)))` for
/// `https://user:password@host/…` — the URL as the repository keeps it (`https://user:***@host/…`)
/// and `user:password`; `Ok(None)` when it has none to keep (no userinfo, an SSH user name, or
/// already `***`). A password in a URL git cannot be given a header for is refused.
pub fn split_url(source: &str) -> Result<Option<(String, String)>, String> {
    let Some((scheme, userinfo, _)) = url_parts(source) else { return Ok(None) };
    if is_redacted(userinfo) {
        return Ok(None);
    }
    match scheme {
        "http" | "https" => Ok(Some((git::redact_credentials(source), userinfo.to_string()))),
        _ if userinfo.contains(':') => Err(format!(
            "a password in a {scheme}:// URL cannot be kept safely; use an SSH key (ssh://user@host/…) or an https URL"
        )),
        _ => Ok(None),
    }
}

/// Where git fetches `repo` from: the URL without credentials, and the environment that hands
/// git the credentials as an `Authorization` header for that URL only (`GIT_CONFIG_COUNT`), so
/// that they are in no argument, no file and no message.
pub async fn remote(app: &App, repo: &Repo) -> Result<(String, Vec<(String, String)>), String> {
    let Some((scheme, userinfo, rest)) = url_parts(&repo.source) else { return Ok((repo.source.clone(), Vec::new())) };
    if !matches!(scheme, "http" | "https") {
        return Ok((repo.source.clone(), Vec::new()));
    }
    let credentials =
        if is_redacted(userinfo) { read(app, repo, URL_CREDENTIALS, IN_VAULT).await? } else { userinfo.to_string() };
    let (user, password) = credentials.split_once(':').unwrap_or((&credentials, ""));
    let decode = |text| crate::encoding::percent_decode(text, false);
    let pair = format!("{}:{}", decode(user), decode(password));
    let url = format!("{scheme}://{rest}");
    let env = vec![
        ("GIT_CONFIG_COUNT".to_string(), "1".to_string()),
        ("GIT_CONFIG_KEY_0".to_string(), format!("http.{url}.extraHeader")),
        (
            "GIT_CONFIG_VALUE_0".to_string(),
            format!("Authorization: Basic {}", crate::encoding::base64(pair.as_bytes())),
        ),
    ];
    Ok((url, env))
}

/// Keeps a source URL's credentials in the vault and returns the source the row keeps.
pub async fn keep_url(app: &App, repo: &str, source: &str, actor: &str) -> Result<String, String> {
    match split_url(source)? {
        Some((kept, credentials)) => {
            keep(app, repo, URL_CREDENTIALS, &credentials, actor).await?;
            Ok(kept)
        }
        None => Ok(source.to_string()),
    }
}

/// Moves every credential still kept in clear in a repository's row into the vault (at start:
/// rows written before the vault, or by `tandem up`).
pub async fn seal_clear(app: &App) -> Result<usize, String> {
    let mut moved = 0;
    for repo in app.store.repos().await.map_err(|e| e.to_string())? {
        if repo.webhook_secret != IN_VAULT {
            keep(app, &repo.name, "webhook_secret", &repo.webhook_secret, "tandem").await?;
            app.store.set_webhook_secret(repo.id, IN_VAULT).await.map_err(|e| e.to_string())?;
            moved += 1;
        }
        if let Ok(Some(_)) = split_url(&repo.source) {
            let kept = keep_url(app, &repo.name, &repo.source, "tandem").await?;
            app.store.set_repo_source(repo.id, &kept).await.map_err(|e| e.to_string())?;
            // The mirror was cloned from the URL with its credentials: git wrote it in its config.
            let mirror = crate::repos::mirror_path(app, &repo);
            if mirror.join("HEAD").exists() {
                let (url, _) = remote(app, &Repo { source: kept, ..repo.clone() }).await?;
                crate::repos::git(&mirror, &["config", "remote.origin.url", &url]).await?;
            }
            moved += 1;
        }
        if let (Some(forge), Some(api_url), Some(token)) = (&repo.forge, &repo.api_url, &repo.status_token)
            && token != IN_VAULT
        {
            keep(app, &repo.name, "status_token", token, "tandem").await?;
            app.store.set_forge(repo.id, forge, api_url, IN_VAULT, "tandem").await.map_err(|e| e.to_string())?;
            moved += 1;
        }
    }
    Ok(moved)
}
