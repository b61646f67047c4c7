//! A repository's own credentials — its webhook secret and its forge status token — sealed in the
//! vault like any secret (scope `credential/repo/<name>`, never given to runs nor listed by the
//! secrets API; resealed by a key rotation). The repository's row keeps only [`IN_VAULT`].

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
