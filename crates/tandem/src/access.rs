//! `tandem user`, `tandem token`, `tandem access` and `tandem team`: people, their tokens, and the
//! roles granted to them and their teams, written straight into a server's data directory (the
//! server need not run, and the first admin needs no token to begin with).

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use server::access::{Role, SCOPES, check_scope};
use store::{Access, NewToken, Store};

use crate::Format;
use crate::client;
use crate::serve::{DataArgs, open_store};

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user; prints a generated password once, or reads one. The user gets a role (viewer
    /// on the whole server unless told otherwise).
    #[command(
        after_help = "Examples:\n  tandem user add ana --data ./data\n  tandem user add bo --role maintainer --on service:shop --data ./data\n  printf '%s\\n' \"$PASSWORD\" | tandem user add cy --password-stdin --data ./data"
    )]
    Add {
        name: String,
        /// Read the password (12 characters or more) from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
        /// viewer, developer, maintainer or admin.
        #[arg(long, default_value = "viewer")]
        role: String,
        /// Where the role applies: `*`, `repository:NAME`, `service:NAME` or `environment:SERVICE/NAME`.
        #[arg(long, default_value = "*")]
        on: String,
        #[command(flatten)]
        data: DataArgs,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create an API token (printed once). With `--user` it acts for that person, within their
    /// roles; without, it is an administrator's token.
    #[command(
        after_help = "Examples:\n  tandem token create ci --user ana --scope run --expires 90d --data ./data\n  tandem token create deployer --user bo --scope deploy --data ./data"
    )]
    Create {
        name: String,
        /// The user the token acts for.
        #[arg(long)]
        user: Option<String>,
        /// What it may do: read, run, deploy, admin (repeatable or comma-separated; every scope reads).
        #[arg(long, value_delimiter = ',', default_values_t = ["read".to_string(), "run".to_string(), "deploy".to_string(), "admin".to_string()])]
        scope: Vec<String>,
        /// Lifetime, e.g. `30d`, `12h`; without it the token does not expire.
        #[arg(long)]
        expires: Option<String>,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Tokens: owner, scopes, expiry and last use (never their values).
    List {
        #[command(flatten)]
        data: DataArgs,
    },
    /// Revoke every token of that name.
    Revoke {
        name: String,
        #[command(flatten)]
        data: DataArgs,
    },
}

#[derive(Subcommand)]
pub enum AccessCommand {
    /// Grant a role to `user:NAME` or `team:NAME` on a scope (replacing the role it had there).
    #[command(
        after_help = "Examples:\n  tandem access grant user:ana developer --data ./data\n  tandem access grant team:payments maintainer --on service:checkout --data ./data\n  tandem access grant user:bo admin --on repository:infra --data ./data"
    )]
    Grant {
        subject: String,
        role: String,
        #[arg(long, default_value = "*")]
        on: String,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Remove a grant.
    Revoke {
        subject: String,
        #[arg(long, default_value = "*")]
        on: String,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Every grant and team.
    List {
        #[command(flatten)]
        data: DataArgs,
    },
}

#[derive(Subcommand)]
pub enum TeamCommand {
    /// Add a user to a team (a team exists once it has a member).
    Add {
        team: String,
        user: String,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Remove a user from a team.
    Remove {
        team: String,
        user: String,
        #[command(flatten)]
        data: DataArgs,
    },
}

fn role(text: &str) -> Result<Role> {
    Role::parse(text).with_context(|| format!("`{text}` is not a role\n  hint: viewer, developer, maintainer or admin"))
}

fn subject(text: &str) -> Result<()> {
    match text.split_once(':') {
        Some(("user" | "team", name)) if !name.is_empty() => Ok(()),
        _ => bail!("`{text}` is not a subject\n  hint: `user:NAME` or `team:NAME`"),
    }
}

pub fn user(command: UserCommand) -> Result<i32> {
    let UserCommand::Add { name, password_stdin, role: role_name, on, data } = command;
    role(&role_name)?;
    check_scope(&on).map_err(anyhow::Error::msg)?;
    let password = if password_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).context("cannot read the password from stdin")?;
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.chars().count() < 12 {
            bail!(
                "the password is shorter than 12 characters\n  hint: use a longer one, or leave out --password-stdin for a generated one"
            );
        }
        line
    } else {
        server::random_secret()?[..20].to_string()
    };
    let hash = server::hash_password(&password).map_err(anyhow::Error::msg)?;
    let (runtime, store) = open_store(&data.data)?;
    runtime.block_on(async {
        store.add_user(&name, &hash, "cli").await?;
        store.grant(&format!("user:{name}"), &role_name, &on, "cli").await
    })?;
    if !password_stdin {
        println!("{password}");
        eprintln!("user `{name}` created ({role_name} on {on}); the password is shown only now");
    } else {
        eprintln!("user `{name}` created ({role_name} on {on})");
    }
    Ok(0)
}

/// `30d`, `12h`, `45m` as milliseconds.
fn lifetime(text: &str) -> Result<i64> {
    spec::service::parse_duration(text)
        .filter(|ms| *ms > 0)
        .map(|ms| ms as i64)
        .with_context(|| format!("`{text}` is not a lifetime\n  hint: e.g. `30d`, `12h` or `90m`"))
}

pub fn token(command: TokenCommand) -> Result<i32> {
    match command {
        TokenCommand::Create { name, user, scope, expires, data } => {
            for s in &scope {
                if !SCOPES.contains(&s.as_str()) {
                    bail!("`{s}` is not a scope\n  hint: read, run, deploy or admin");
                }
            }
            let expires = match expires {
                Some(text) => Some(store::rfc3339(jiff::Timestamp::now().as_millisecond() + lifetime(&text)?)),
                None => None,
            };
            let (runtime, store) = open_store(&data.data)?;
            if let Some(user) = &user
                && runtime.block_on(store.user_password(user))?.is_none()
            {
                bail!("there is no user `{user}`\n  hint: add them first: `tandem user add {user}`");
            }
            let value = format!("tdm_{}", server::random_secret()?);
            let hash = server::token_hash(&value);
            let new = NewToken {
                name: &name,
                hash: &hash,
                owner: user.as_deref(),
                scopes: &scope,
                expires: expires.as_deref(),
            };
            runtime.block_on(store.create_token(new, "cli"))?;
            println!("{value}");
            let owner = user.map_or("an administrator's token".to_string(), |u| format!("acts for `{u}`"));
            let until = expires.map_or(String::new(), |e| format!(", until {e}"));
            eprintln!("token `{name}` created ({owner}; scopes {}{until}); it is shown only now", scope.join(","));
            Ok(0)
        }
        TokenCommand::List { data } => {
            let (runtime, store) = open_store(&data.data)?;
            let tokens = runtime.block_on(store.tokens())?;
            if data.format == Format::Json {
                return client::print_json(&tokens).map(|()| 0);
            }
            let rows: Vec<Vec<String>> = tokens
                .into_iter()
                .map(|t| {
                    vec![
                        t.name,
                        t.owner.unwrap_or_else(|| "(administrator)".into()),
                        t.scopes,
                        t.expires.unwrap_or_else(|| "never".into()),
                        t.last_used.unwrap_or_else(|| "never".into()),
                    ]
                })
                .collect();
            client::table(&["TOKEN", "ACTS FOR", "SCOPES", "EXPIRES", "LAST USED"], &rows);
            Ok(0)
        }
        TokenCommand::Revoke { name, data } => {
            let (runtime, store) = open_store(&data.data)?;
            runtime.block_on(store.revoke_token(&name, "cli"))?;
            eprintln!("token `{name}` revoked");
            Ok(0)
        }
    }
}

pub fn access(command: AccessCommand) -> Result<i32> {
    match command {
        AccessCommand::Grant { subject: who, role: role_name, on, data } => {
            subject(&who)?;
            role(&role_name)?;
            check_scope(&on).map_err(anyhow::Error::msg)?;
            let (runtime, store) = open_store(&data.data)?;
            runtime.block_on(store.grant(&who, &role_name, &on, "cli"))?;
            eprintln!("{who} is {role_name} on {on}");
            Ok(0)
        }
        AccessCommand::Revoke { subject: who, on, data } => {
            subject(&who)?;
            let (runtime, store) = open_store(&data.data)?;
            runtime.block_on(store.revoke(&who, &on, "cli"))?;
            eprintln!("{who} has no role on {on} any more");
            Ok(0)
        }
        AccessCommand::List { data } => {
            let (runtime, store) = open_store(&data.data)?;
            let (grants, members) = runtime
                .block_on(async { Ok::<_, store::StoreError>((store.grants().await?, store.members().await?)) })?;
            if data.format == Format::Json {
                let teams: Vec<serde_json::Value> =
                    members.iter().map(|(team, member)| serde_json::json!({"team": team, "member": member})).collect();
                return client::print_json(&serde_json::json!({"grants": grants, "teams": teams})).map(|()| 0);
            }
            let rows: Vec<Vec<String>> = grants.into_iter().map(|g| vec![g.subject, g.role, g.scope]).collect();
            client::table(&["SUBJECT", "ROLE", "ON"], &rows);
            if !members.is_empty() {
                println!();
                let rows: Vec<Vec<String>> = members.into_iter().map(|(t, m)| vec![t, m]).collect();
                client::table(&["TEAM", "MEMBER"], &rows);
            }
            Ok(0)
        }
    }
}

pub fn team(command: TeamCommand) -> Result<i32> {
    let (runtime, store, team, user, add) = match command {
        TeamCommand::Add { team, user, data } => {
            let (runtime, store) = open_store(&data.data)?;
            (runtime, store, team, user, true)
        }
        TeamCommand::Remove { team, user, data } => {
            let (runtime, store) = open_store(&data.data)?;
            (runtime, store, team, user, false)
        }
    };
    if add {
        if runtime.block_on(store.user_password(&user))?.is_none() {
            bail!("there is no user `{user}`\n  hint: add them first: `tandem user add {user}`");
        }
        runtime.block_on(store.add_member(&team, &user, "cli"))?;
        eprintln!("`{user}` is in team `{team}`");
    } else {
        runtime.block_on(store.remove_member(&team, &user, "cli"))?;
        eprintln!("`{user}` is no longer in team `{team}`");
    }
    Ok(0)
}
