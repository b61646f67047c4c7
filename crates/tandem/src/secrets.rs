//! `tandem secret`, `tandem var` and `tandem audit log`: secrets (sealed by the server; set from standard input so
//! that no value lands in a shell's history) and variables, per organisation, repository or
//! environment.

use std::io::Read;

use anyhow::{Result, bail};

use crate::Format;
use crate::client::{Client, Connection, path_segment, table};

/// Which secrets: exactly one of these.
#[derive(clap::Args, Debug, Clone)]
pub struct Scope {
    /// The repository's (runs of it get them).
    #[arg(long, value_name = "NAME")]
    repository: Option<String>,
    /// An environment's: only jobs with `environment: ENV` in runs of REPO get them.
    #[arg(long, value_name = "REPO/ENV")]
    env: Option<String>,
    /// The organisation's: every repository's runs get them.
    #[arg(long)]
    org: bool,
}

impl Scope {
    fn value(&self) -> Result<String> {
        Ok(match (&self.repository, &self.env, self.org) {
            (Some(repo), None, false) => format!("repo/{repo}"),
            (None, Some(env), false) => format!("env/{env}"),
            (None, None, true) => "org".to_string(),
            _ => bail!("say whose: exactly one of --repository NAME, --env REPO/ENV or --org"),
        })
    }
}

/// `list`: the scope and the output format.
#[derive(clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    scope: Scope,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    #[command(flatten)]
    connection: Connection,
}

/// `rm`: the name and its scope.
#[derive(clap::Args)]
pub struct RmArgs {
    name: String,
    #[command(flatten)]
    scope: Scope,
    #[command(flatten)]
    connection: Connection,
}

#[derive(clap::Subcommand)]
pub enum SecretCommand {
    /// Set a secret; its value is read from standard input (a trailing newline is dropped).
    #[command(
        after_help = "Examples:\n  printf %s \"$DEPLOY_KEY\" | tandem secret set DEPLOY_KEY --repository shop\n  tandem secret set DB_PASSWORD --env shop/production < password.txt\n  echo s3cret | tandem secret set NPM_TOKEN --org"
    )]
    Set {
        name: String,
        #[command(flatten)]
        scope: Scope,
        #[command(flatten)]
        connection: Connection,
    },
    /// The secrets of a scope, by name (values never leave the server).
    List(ListArgs),
    /// Remove a secret.
    Rm(RmArgs),
    /// Seal every secret again with a new key (the key file's; one transaction).
    RotateKey {
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(clap::Subcommand)]
pub enum VarCommand {
    /// Set a variable (`vars.NAME` in workflows).
    #[command(
        after_help = "Examples:\n  tandem var set REGION eu-west-1 --repository shop\n  tandem var set LOG_LEVEL debug --env shop/staging"
    )]
    Set {
        name: String,
        value: String,
        #[command(flatten)]
        scope: Scope,
        #[command(flatten)]
        connection: Connection,
    },
    /// The variables of a scope, with their values.
    List(ListArgs),
    /// Remove a variable.
    Rm(RmArgs),
}

pub async fn secret(command: SecretCommand) -> Result<i32> {
    match command {
        SecretCommand::Set { name, scope, connection } => {
            let mut value = String::new();
            std::io::stdin().read_to_string(&mut value)?;
            let value = value.strip_suffix('\n').unwrap_or(&value).to_string();
            if value.is_empty() {
                bail!("no value on standard input\n  hint: printf %s \"$VALUE\" | tandem secret set {name} …");
            }
            put("secrets", "secret", &name, &scope, value, &connection).await?;
        }
        SecretCommand::List(args) => {
            list("secrets", args, &["NAME", "UPDATED"], |list: &api::SecretList| {
                list.secrets.iter().map(|s| vec![s.name.clone(), s.updated.clone()]).collect()
            })
            .await?
        }
        SecretCommand::Rm(args) => remove("secrets", "secret", args).await?,
        SecretCommand::RotateKey { connection } => {
            let rotated: api::Rotated = Client::new(&connection)?.post("/api/v1/secrets/rotate", None::<&()>).await?;
            println!("{} secret(s) sealed again with a new key; the old key is gone", rotated.resealed);
        }
    }
    Ok(0)
}

async fn put(
    collection: &str,
    what: &str,
    name: &str,
    scope: &Scope,
    value: String,
    connection: &Connection,
) -> Result<()> {
    let body = api::SetSecret { scope: scope.value()?, value };
    let path = format!("/api/v1/{collection}/{}", path_segment(name));
    Client::new(connection)?.call_empty(reqwest::Method::PUT, &path, Some(&body)).await?;
    println!("{what} {name} set in {}", body.scope);
    Ok(())
}

async fn list<T: serde::de::DeserializeOwned + serde::Serialize>(
    collection: &str,
    ListArgs { scope, format, connection }: ListArgs,
    headers: &[&str],
    rows: impl Fn(&T) -> Vec<Vec<String>>,
) -> Result<()> {
    let path = format!("/api/v1/{collection}?scope={}", path_segment(&scope.value()?));
    let list: T = Client::new(&connection)?.get(&path).await?;
    if format == Format::Json {
        crate::client::print_json(&list)?;
    } else {
        table(headers, &rows(&list));
    }
    Ok(())
}

async fn remove(collection: &str, what: &str, RmArgs { name, scope, connection }: RmArgs) -> Result<()> {
    let path = format!("/api/v1/{collection}/{}?scope={}", path_segment(&name), path_segment(&scope.value()?));
    Client::new(&connection)?.call_empty(reqwest::Method::DELETE, &path, None::<&()>).await?;
    println!("{what} {name} removed");
    Ok(())
}

pub async fn var(command: VarCommand) -> Result<i32> {
    match command {
        VarCommand::Set { name, value, scope, connection } => {
            put("variables", "variable", &name, &scope, value, &connection).await?
        }
        VarCommand::List(args) => {
            list("variables", args, &["NAME", "VALUE", "UPDATED"], |list: &api::VariableList| {
                list.variables.iter().map(|v| vec![v.name.clone(), v.value.clone(), v.updated.clone()]).collect()
            })
            .await?
        }
        VarCommand::Rm(args) => remove("variables", "variable", args).await?,
    }
    Ok(0)
}

#[derive(clap::Args)]
pub struct AuditLogArgs {
    /// Only events whose kind starts with this (`secret.`, `deployment.rolled_back`).
    #[arg(long)]
    kind: Option<String>,
    /// Only events whose subject contains this (`repo/shop`, `deployment/12`).
    #[arg(long)]
    subject: Option<String>,
    /// Only events of this actor (a user, a token's name, `run:<id>`).
    #[arg(long)]
    actor: Option<String>,
    /// Only events after this sequence number.
    #[arg(long, default_value_t = 0)]
    after: i64,
    /// At most this many events (after filtering).
    #[arg(long)]
    limit: Option<usize>,
    /// `text` for people; `json` for one JSON object per line (JSON Lines), to keep or feed a SIEM.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    #[command(flatten)]
    connection: Connection,
}

pub async fn audit_log(args: AuditLogArgs) -> Result<i32> {
    let client = Client::new(&args.connection)?;
    let (mut after, mut shown) = (args.after, 0usize);
    let mut rows = Vec::new();
    'pages: loop {
        let page: api::EventList = client.get(&format!("/api/v1/events?after={after}&limit=1000")).await?;
        let Some(last) = page.events.last() else { break };
        after = last.seq;
        for event in page.events {
            let keep = args.kind.as_ref().is_none_or(|k| event.kind.starts_with(k.as_str()))
                && args.subject.as_ref().is_none_or(|s| event.subject.contains(s.as_str()))
                && args.actor.as_ref().is_none_or(|a| event.actor == *a);
            if !keep {
                continue;
            }
            if args.format == Format::Json {
                println!("{}", serde_json::to_string(&event)?);
            } else {
                rows.push(vec![
                    event.seq.to_string(),
                    event.time.clone(),
                    event.kind.clone(),
                    event.subject.clone(),
                    event.actor.clone(),
                ]);
            }
            shown += 1;
            if args.limit.is_some_and(|l| shown >= l) {
                break 'pages;
            }
        }
    }
    if args.format == Format::Text {
        table(&["SEQ", "TIME", "KIND", "SUBJECT", "ACTOR"], &rows);
    }
    Ok(0)
}
