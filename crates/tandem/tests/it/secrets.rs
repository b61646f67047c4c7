//! Secrets and variables on a real server: set from the CLI, sealed at rest, given to runs (an
//! environment's only to the jobs that deploy there), masked in logs, never shown again, and
//! still readable after the vault's key is rotated.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::Repo;
use crate::server::{Server, add_repo};

fn set_secret(server: &Server, name: &str, scope: &[&str], value: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["secret", "set", name])
        .args(scope)
        .env("TANDEM_URL", server.url())
        .env("TANDEM_TOKEN", &server.token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{value}\n").as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// The repository `shop` with a secret of its own, one of the organisation and one of production.
fn add_shop(server: &Server, repo: &Repo) {
    add_repo(server, repo, "shop");
    set_secret(server, "DEPLOY_KEY", &["--repository", "shop"], "repo-key-value-1");
    set_secret(server, "NPM_TOKEN", &["--org"], "org-npm-token-9");
    set_secret(server, "DB_PASSWORD", &["--env", "shop/production"], "prod-db-password-7");
}

// The workflow checks each value without naming it whole: it would be in the run's record.
const WORKFLOW: &str = r#"on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - run: |
          test "${KEY#repo-key-}" = "value-1" && echo "build sees the repository secret: $KEY"
          test "${NPM#org-npm-}" = "token-9" && echo "and the organisation's"
          test -z "$DB" && echo "but not production's"
          echo "region ${{ vars.REGION }}"
        env:
          KEY: ${{ secrets.DEPLOY_KEY }}
          NPM: ${{ secrets.NPM_TOKEN }}
          DB: ${{ secrets.DB_PASSWORD }}
  release:
    needs: build
    runs-on: ubuntu-latest
    environment: production
    steps:
      - run: |
          test "${DB#prod-db-}" = "password-7" && echo "release sees production's: $DB"
        env:
          DB: ${{ secrets.DB_PASSWORD }}
"#;

#[test]
fn secrets_reach_their_runs_sealed_masked_and_scoped() {
    let repo = Repo::new(&[("ci.yml", WORKFLOW)]);
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), None);
    add_shop(&server, &repo);
    let var = server.cli(&["var", "set", "REGION", "eu-west-1", "--repository", "shop"]);
    assert_eq!(var.code, 0, "{}", var.all());
    // Refused: no scope, a scope of no repository, a reserved name.
    assert!(
        server.cli(&["secret", "list"]).stderr.contains("exactly one of --repository NAME, --env REPO/ENV or --org")
    );
    assert!(server.cli(&["secret", "list", "--repository", "nope"]).stderr.contains("no repository `nope`"));
    let listed = server.cli(&["secret", "list", "--repository", "shop", "--format", "json"]);
    assert_eq!(listed.json()["secrets"][0]["name"], "DEPLOY_KEY", "{}", listed.all());
    assert!(!listed.stdout.contains("repo-key-value-1"), "a value never comes back: {}", listed.stdout);

    let run_and_log = |n: usize| {
        let queued = server.cli(&["repo", "run", "shop"]);
        assert_eq!(queued.code, 0, "{}", queued.all());
        let runs = server.wait_for("the run to end", |runs| {
            runs.len() == n && runs[0]["status"] != "queued" && runs[0]["status"] != "running"
        });
        let logs = server.cli(&["runs", "logs", &runs[0]["id"].to_string()]);
        assert_eq!(runs[0]["status"], "success", "{}", logs.all());
        logs.stdout
    };
    let logs = run_and_log(1);
    assert!(logs.contains("build sees the repository secret: ***"), "{logs}");
    assert!(logs.contains("and the organisation's") && logs.contains("but not production's"), "{logs}");
    assert!(logs.contains("release sees production's: ***"), "{logs}");
    assert!(logs.contains("region eu-west-1"), "{logs}");

    // At rest: sealed in the database, and the event log names the secret, not its value.
    let db = std::fs::read_dir(data.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("tandem.db"))
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect::<Vec<_>>();
    assert!(!db.is_empty());
    for bytes in &db {
        for value in ["repo-key-value-1", "org-npm-token-9", "prod-db-password-7"] {
            assert!(!bytes.windows(value.len()).any(|w| w == value.as_bytes()), "{value} is in the database in clear");
        }
    }
    let audit = server.cli(&["audit", "log", "--kind", "secret.", "--format", "json"]);
    assert_eq!(audit.code, 0, "{}", audit.all());
    let events: Vec<serde_json::Value> = audit.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let subjects: Vec<&str> = events.iter().map(|e| e["subject"].as_str().unwrap()).collect();
    assert_eq!(
        subjects,
        [
            // The repository's own webhook secret, sealed when it was added.
            "secret/credential/repo/shop/webhook_secret",
            "secret/repo/shop/DEPLOY_KEY",
            "secret/org/NPM_TOKEN",
            "secret/env/shop/production/DB_PASSWORD"
        ]
    );
    assert!(events.iter().all(|e| e["actor"] == "admin"), "{events:?}");
    assert!(events.iter().all(|e| e["payload"]["source"] == "127.0.0.1"), "each names where it came from: {events:?}");
    let everything = server.cli(&["audit", "log", "--format", "json"]).stdout;
    for value in ["repo-key-value-1", "org-npm-token-9", "prod-db-password-7"] {
        assert!(!everything.contains(value), "{value} is in the event log");
    }

    // A new key seals everything again; runs read the secrets as before.
    let rotated = server.cli(&["secret", "rotate-key"]);
    // Three secrets and the repository's webhook secret.
    assert!(rotated.stdout.contains("4 secret(s) sealed again"), "{}", rotated.all());
    let key_file = std::fs::read_to_string(data.path().join("secrets.key")).unwrap();
    assert_eq!(key_file.lines().count(), 1, "the old key is gone");
    let logs = run_and_log(2);
    assert!(logs.contains("build sees the repository secret: ***"), "{logs}");

    let removed = server.cli(&["secret", "rm", "DEPLOY_KEY", "--repository", "shop"]);
    assert_eq!(removed.code, 0, "{}", removed.all());
    let again = server.cli(&["secret", "rm", "DEPLOY_KEY", "--repository", "shop"]);
    assert_ne!(again.code, 0);
}

const GATED_SERVICE: &str = "service: shop
environments:
  production:
    target: process
    command: sleep 600
    health:
      path: /health
      ready-within: 1s
    gates:
      approval: true
";

/// A job deploying to an environment that needs approval waits before it starts, without the
/// environment's secrets; another maintainer lets it go, and its deployment carries the approval.
#[test]
fn a_job_for_a_gated_environment_waits_for_another_maintainer_before_it_gets_secrets() {
    let repo = Repo::new(&[("ci.yml", WORKFLOW)]);
    repo.write(".tandem/service.yml", GATED_SERVICE);
    repo.commit("production needs approval");
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), None);
    add_shop(&server, &repo);
    let queued = server.cli(&["repo", "run", "shop"]);
    assert_eq!(queued.code, 0, "{}", queued.all());
    let runs = server.wait_for("the run to start", |runs| runs.len() == 1);
    let id = runs[0]["id"].to_string();
    let logs = || server.cli(&["runs", "logs", &id]).stdout;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !logs().contains("waiting for environment production") {
        assert!(std::time::Instant::now() < deadline, "the release job never waited: {}", logs());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let held = logs();
    assert!(held.contains(&format!("the approval of a maintainer: `tandem runs approve {id} release`")), "{held}");
    assert!(!held.contains("release sees production's"), "{held}");
    assert_eq!(server.wait_for("the run", |_| true)[0]["status"], "running");

    // Whoever started the run may not let it in; a developer may not either; another maintainer may.
    let own = server.cli(&["runs", "approve", &id, "release"]);
    assert!(own.code != 0 && own.stderr.contains("another maintainer must approve"), "{}", own.all());
    let dev = server.user_token("dev", "developer", "*", "read,run,deploy");
    let refused = server.cli_as(&dev, &["runs", "approve", &id, "release"]);
    assert!(refused.code != 0, "{}", refused.all());
    let not_waiting = server.cli(&["runs", "approve", &id, "build"]);
    assert!(not_waiting.stderr.contains("is not waiting"), "{}", not_waiting.all());
    // A maintainer of that one environment is enough.
    let mia = server.user_token("mia", "maintainer", "environment:shop/production", "read,deploy");
    let approved = server.cli_as(&mia, &["runs", "approve", &id, "release"]);
    assert_eq!(approved.code, 0, "{}", approved.all());
    assert!(
        approved.stdout.contains("job release may use environment production (approved by mia)"),
        "{}",
        approved.all()
    );

    let runs = server.wait_for("the run to end", |runs| runs[0]["status"] != "running");
    let log = logs();
    assert_eq!(runs[0]["status"], "success", "{log}");
    assert!(
        log.contains("its gates passed; the job starts") && log.contains("release sees production's: ***"),
        "{log}"
    );
    // The deployment the job asked for is approved by the same person: nobody approves twice.
    let listed = server.cli(&["deployments", "list", "--format", "json"]);
    let deployment = listed.json().as_array().unwrap().iter().find(|d| d["run_id"] == runs[0]["id"]).cloned();
    assert_eq!(deployment.expect("requested by the run")["approved_by"], "mia", "{}", listed.stdout);
    let audit = server.cli(&["audit", "log", "--kind", "job.", "--format", "json"]).stdout;
    let kinds: Vec<String> =
        audit.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].to_string()).collect();
    assert_eq!(kinds, ["\"job.waiting\"", "\"job.approved\""], "{audit}");
}

#[test]
fn a_signed_checkpoint_detects_a_rewritten_log() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), None);
    let repo = Repo::new(&[("ci.yml", WORKFLOW)]);
    add_repo(&server, &repo, "shop");
    let signed = server.cli(&["audit", "checkpoint"]);
    assert_eq!(signed.code, 0, "{}", signed.all());
    let checkpoint: serde_json::Value = serde_json::from_str(&signed.stdout).unwrap();
    let kept = tempfile::tempdir().unwrap();
    let file = kept.path().join("checkpoint.json");
    std::fs::write(&file, &signed.stdout).unwrap();
    // Another server's log: a whole database, every link of its chain valid.
    let other = tempfile::tempdir().unwrap();
    let forger = Server::start(other.path(), None);
    let other_repo = Repo::new(&[("ci.yml", WORKFLOW)]);
    add_repo(&forger, &other_repo, "shop");
    forger.interrupt();
    server.interrupt();
    let data_arg = data.path().to_str().unwrap();
    let verify = |extra: &[&str]| {
        let mut args = vec!["audit", "verify", "--data", data_arg];
        args.extend_from_slice(extra);
        let output = Command::new(env!("CARGO_BIN_EXE_tandem")).args(&args).output().unwrap();
        crate::Run::from(output)
    };
    let file_arg = file.to_str().unwrap();
    let key = checkpoint["public_key"].as_str().unwrap();
    let ok = verify(&["--checkpoint", file_arg, "--public-key", key]);
    assert_eq!(ok.code, 0, "{}", ok.all());
    assert!(ok.stdout.contains("holds: signed by"), "{}", ok.stdout);
    // A checkpoint edited after signing, or signed by another key, is refused.
    let mut edited = checkpoint.clone();
    edited["seq"] = serde_json::json!(checkpoint["seq"].as_i64().unwrap() - 1);
    let edited_file = kept.path().join("edited.json");
    std::fs::write(&edited_file, edited.to_string()).unwrap();
    let refused = verify(&["--checkpoint", edited_file.to_str().unwrap()]);
    assert_eq!(refused.code, 1, "{}", refused.all());
    assert!(refused.stdout.contains("signature does not match"), "{}", refused.stdout);
    let wrong_key = verify(&["--checkpoint", file_arg, "--public-key", &"ab".repeat(32)]);
    assert_eq!(wrong_key.code, 1, "{}", wrong_key.all());
    // The whole database replaced by the other one: its chain is valid, the checkpoint says no.
    for entry in std::fs::read_dir(data.path()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().starts_with("tandem.db") {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
    for entry in std::fs::read_dir(other.path()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().starts_with("tandem.db") {
            std::fs::copy(entry.path(), data.path().join(entry.file_name())).unwrap();
        }
    }
    let chain_only = verify(&[]);
    assert_eq!(chain_only.code, 0, "the chain alone looks fine: {}", chain_only.all());
    let caught = verify(&["--checkpoint", file_arg]);
    assert_eq!(caught.code, 1, "{}", caught.all());
    assert!(caught.stdout.contains("the log was rewritten"), "{}", caught.stdout);
}

#[test]
fn a_push_with_a_secret_is_flagged_in_its_run_and_the_event_log() {
    let rules = crate::project_root().join("../shared/corpus/secrets/gitleaks__gitleaks__config_gitleaks.toml");
    assert!(rules.is_file(), "{} is missing; CI lays the shared corpus beside the clone", rules.display());
    let workflow = "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo built\n";
    let repo = Repo::new(&[("ci.yml", workflow)]);
    repo.write(".gitleaks.toml", &std::fs::read_to_string(&rules).unwrap());
    repo.write("src/main.go", "package main\n\nfunc main() {\n\taws_token := \"AKIALALEMEL33243OLIA\"\n}\n");
    repo.commit("a key slipped in");
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), None);
    add_repo(&server, &repo, "shop");
    // Added with rules at its head, its history is scanned once, in the background.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let audit = server.cli(&["audit", "log", "--kind", "scan.history", "--format", "json"]).stdout;
        if audit.contains(":src/main.go:aws-access-token:4") {
            assert!(!audit.contains("AKIALALEMEL33243OLIA"), "{audit}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the history was never scanned: {audit}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(server.cli(&["repo", "run", "shop"]).code, 0);
    let runs = server.wait_for("the run to end", |runs| runs.first().is_some_and(|r| r["status"] == "success"));
    let logs = server.cli(&["runs", "logs", &runs[0]["id"].to_string()]).stdout;
    assert!(logs.contains("error: src/main.go:4:") && logs.contains("aws-access-token (AKIA***)"), "{logs}");
    assert!(!logs.contains("AKIALALEMEL33243OLIA"), "the secret is not in the log: {logs}");
    let events = server.cli(&["audit", "log", "--kind", "scan.", "--format", "json"]).stdout;
    assert!(events.contains("src/main.go:aws-access-token:4") && !events.contains("AKIALALEMEL33243OLIA"), "{events}");
    // The commit shows it too (CLI and API), with the run that found it.
    let sha = runs[0]["sha"].as_str().unwrap();
    let shown = server.cli(&["repo", "commit", "shop", &sha[..10], "--format", "json"]);
    assert_eq!(shown.code, 0, "{}", shown.all());
    let detail = shown.json();
    assert_eq!(detail["sha"], sha);
    assert_eq!(detail["findings"][0]["kind"], "secret", "{detail:#}");
    assert_eq!(detail["findings"][0]["summary"], "aws-access-token in src/main.go:4", "{detail:#}");
    assert_eq!(detail["findings"][0]["run"], runs[0]["id"], "{detail:#}");
    assert!(!shown.stdout.contains("AKIALALEMEL33243OLIA"), "{}", shown.stdout);
    let text = server.cli(&["repo", "commit", "shop", sha]);
    let line = text.stdout.lines().find(|l| l.contains("aws-access-token in src/main.go:4")).unwrap_or_default();
    assert!(line.contains("critical") && line.contains("secret") && line.contains("(run 1)"), "{}", text.all());
    assert!(text.stdout.contains("a key slipped in"), "{}", text.all());
    let missing = server.cli(&["repo", "commit", "shop", "no-such-ref"]);
    assert!(missing.code != 0 && missing.stderr.contains("is not a commit of shop"), "{}", missing.all());

    // Removed since, the key is still in the history: the server's scan of the whole history
    // finds it in the commit that added it; accepted in .gitleaksignore, it is found no more.
    repo.write("src/main.go", "package main\n\nfunc main() {}\n");
    repo.commit("the key is gone (but not from the history)");
    let scanned = server.cli(&["repo", "scan", "shop", "--format", "json"]);
    assert_eq!(scanned.code, 1, "{}", scanned.all());
    let scan = scanned.json();
    assert_eq!(scan["commits"], 3, "{scan:#}");
    let fingerprint = format!("{sha}:src/main.go:aws-access-token:4");
    assert_eq!(scan["findings"][0]["fingerprint"], fingerprint.as_str(), "{scan:#}");
    assert_eq!(scan["findings"][0]["commit"], sha, "{scan:#}");
    assert!(!scanned.stdout.contains("AKIALALEMEL33243OLIA"), "{}", scanned.stdout);
    let audit = server.cli(&["audit", "log", "--kind", "scan.history", "--format", "json"]).stdout;
    assert!(audit.contains(&fingerprint) && !audit.contains("AKIALALEMEL33243OLIA"), "{audit}");
    repo.write(".gitleaksignore", &format!("{fingerprint}\n"));
    repo.commit("a test key, accepted");
    let again = server.cli(&["repo", "scan", "shop"]);
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(again.stdout.contains("0 finding(s) in 4 commit(s) of shop"), "{}", again.all());
}
