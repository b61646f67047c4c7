//! Code management end to end, with real git over HTTP against a real server: a hosted repository
//! whose main is protected, twenty changes pushed for review (two that break the build only in
//! combination with others, one that conflicts with another), review requirements (approvals,
//! code owners, checks, line comments, approvals dismissed by new code), early conflict warnings,
//! and the merge queue — after which main is green at every commit.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::Repo;
use crate::server::Server;

fn git(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("git").arg("-C").arg(dir).args(args).output().unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let output = git(dir, args);
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn changes(server: &Server) -> Vec<serde_json::Value> {
    let listed = server.cli(&["change", "list", "shop", "--format", "json"]);
    assert_eq!(listed.code, 0, "{}", listed.all());
    serde_json::from_str(&listed.stdout).unwrap()
}

fn show(server: &Server, number: i64) -> serde_json::Value {
    let shown = server.cli(&["change", "show", "shop", &number.to_string(), "--format", "json"]);
    assert_eq!(shown.code, 0, "{}", shown.all());
    serde_json::from_str(&shown.stdout).unwrap()
}

/// Waits until `change`'s latest revision has finished runs.
fn checked(server: &Server, number: i64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let detail = show(server, number);
        let sha = detail["change"]["sha"].as_str().unwrap().to_string();
        let runs: Vec<&serde_json::Value> =
            detail["runs"].as_array().unwrap().iter().filter(|r| r["sha"] == sha).collect();
        if !runs.is_empty()
            && runs.iter().all(|r| matches!(r["status"].as_str(), Some("success" | "failure" | "cancelled")))
        {
            return detail;
        }
        assert!(Instant::now() < deadline, "change {number} was never checked: {detail:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A server hosting a new repository `name`: its data directory, the server, and the clone URL
/// with the server's token as the password.
fn host(name: &str) -> (tempfile::TempDir, Server, String) {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), None);
    let created = server.cli(&["repo", "create", name]);
    assert_eq!(created.code, 0, "{}", created.all());
    let url = created.stdout.trim().replace("http://", &format!("http://tandem:{}@", server.token));
    (data, server, url)
}

const CHECK: &str =
    "set -e\n. ./lib.sh\nfor f in use_*.sh; do [ -e \"$f\" ] || continue; . \"./$f\"; done\necho all good\n";

#[test]
fn changes_reach_main_only_through_the_queue_and_main_stays_green() {
    let workflow = "on: [push, pull_request, merge_group]\njobs:\n  check:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n      - run: sh check.sh\n";
    let repo = Repo::new(&[("ci.yml", workflow)]);
    repo.write("check.sh", CHECK);
    repo.write("lib.sh", "helper_a() { :; }\nhelper_b() { :; }\n");
    repo.write("shared.txt", "one\ntwo\nthree\n");
    repo.write(".github/CODEOWNERS", "lib.sh @rita\n");
    repo.write(".tandem/review.yml", "approvals: 2 # two people other than the author\n");
    repo.commit("the check, its library, and code owners");
    let (_data, server, url) = host("shop");

    // The first push creates main; after that, main is protected.
    ok(repo.path(), &["push", "-q", &url, "HEAD:main"]);
    repo.write("README.md", "straight to main\n");
    repo.commit("a direct push");
    let refused = git(repo.path(), &["push", &url, "HEAD:main"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("main is protected"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    ok(repo.path(), &["reset", "-q", "--hard", "HEAD~1"]);
    let base = ok(repo.path(), &["rev-parse", "HEAD"]);
    // Without a token, git is asked for one.
    let anonymous = git(
        repo.path(),
        &["-c", "credential.helper=", "ls-remote", &url.replace(&format!("tandem:{}@", server.token), "")],
    );
    assert!(!anonymous.status.success());

    // Twenty changes, each on main as it was: odd ones use helper_a, even ones helper_b; 7 and 13
    // remove a helper (each passes alone, and breaks the others once merged with them); 17 edits
    // the same line as 3.
    for i in 1..=20 {
        ok(repo.path(), &["checkout", "-q", "--detach", &base]);
        match i {
            7 => repo.write("lib.sh", "helper_b() { :; }\n"),
            13 => repo.write("lib.sh", "helper_a() { :; }\n"),
            3 => repo.write("shared.txt", "one\nTWO (change 3)\nthree\n"),
            17 => repo.write("shared.txt", "one\ntwo, as change 17 has it\nthree\n"),
            _ => {}
        }
        let helper = if i % 2 == 1 { "helper_a" } else { "helper_b" };
        if ![7, 13].contains(&i) {
            repo.write(&format!("use_{i:02}.sh"), &format!("{helper}\n"));
        }
        repo.git(&["add", "-A"]);
        let message = format!("Change number {i}\n\nChange-Id: I{i:040}");
        repo.git(&["commit", "-q", "-m", &message]);
        ok(repo.path(), &["push", "-q", &url, "HEAD:refs/for/main"]);
    }
    let listed = changes(&server);
    assert_eq!(listed.len(), 20, "{listed:#?}");

    // A second push with the same Change-Id is a new revision of change 1.
    ok(repo.path(), &["checkout", "-q", "--detach", &base]);
    repo.write("use_01.sh", "helper_a\nhelper_a\n");
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-q", "-m", &format!("Change number 1, again\n\nChange-Id: I{:040}", 1)]);
    let rita = server.user_token("rita", "developer", "*", "read,run");
    let sam = server.user_token("sam", "developer", "*", "read,run");
    let approve_as = |token: &str, number: i64| {
        let approved = server.cli_as(token, &["change", "approve", "shop", &number.to_string()]);
        assert_eq!(approved.code, 0, "{}", approved.all());
    };
    let approve = |number: i64| approve_as(&rita, number);
    approve(1);
    ok(repo.path(), &["push", "-q", &url, "HEAD:refs/for/main"]);
    let first = checked(&server, 1);
    assert_eq!(first["revisions"].as_array().unwrap().len(), 2);
    assert_eq!(first["approvers"], serde_json::json!([]), "new code dismisses the approval: {first:#}");

    // Early warning: 3 and 17 collide, and each is told.
    for (number, other) in [(3, 17), (17, 3)] {
        let detail = show(&server, number);
        assert_eq!(detail["conflicts"], serde_json::json!([{"with": other, "files": ["shared.txt"]}]), "{detail:#}");
    }

    // Requirements: an approval from someone else, the code owner for lib.sh, passing checks,
    // resolved line comments.
    let merge = |number: i64| server.cli(&["change", "merge", "shop", &number.to_string()]);
    let early = merge(7);
    assert_ne!(early.code, 0);
    assert!(early.all().contains("2 approval(s) from someone other than its author, 0 so far"), "{}", early.all());
    assert!(early.all().contains("an approval from @rita (code owners of lib.sh)"), "{}", early.all());
    let own = server.cli(&["change", "approve", "shop", "2"]);
    assert!(own.all().contains("someone else approves it"), "{}", own.all());
    let comment = server
        .cli_as(&rita, &["change", "comment", "shop", "2", "--path", "use_02.sh", "--line", "1", "--body", "why b?"]);
    assert_eq!(comment.code, 0, "{}", comment.all());
    let comment_id = comment.stdout.split_whitespace().nth(1).unwrap().to_string();
    for number in 1..=20 {
        let detail = checked(&server, number);
        let passed = detail["runs"].as_array().unwrap().iter().any(|r| r["status"] == "success");
        let first_run = detail["runs"][0]["id"].as_i64().unwrap().to_string();
        assert!(passed, "each passes alone: {detail:#}\n{}", server.cli(&["runs", "logs", &first_run]).all());
        approve(number);
    }
    let one = merge(4);
    assert!(one.all().contains("2 approval(s) from someone other than its author, 1 so far"), "{}", one.all());
    for number in 1..=20 {
        approve_as(&sam, number);
    }
    let blocked = merge(2);
    assert!(blocked.all().contains("1 unresolved comment(s)"), "{}", blocked.all());
    let resolved = server.cli_as(&rita, &["change", "resolve", "shop", "2", &comment_id]);
    assert_eq!(resolved.code, 0, "{}", resolved.all());

    // Into the queue, all twenty.
    for number in 1..=20 {
        let queued = merge(number);
        assert_eq!(queued.code, 0, "{}", queued.all());
    }
    let deadline = Instant::now() + Duration::from_secs(240);
    let settled = loop {
        let list = changes(&server);
        if list.iter().all(|c| matches!(c["status"].as_str(), Some("merged" | "ejected"))) {
            break list;
        }
        assert!(
            Instant::now() < deadline,
            "the queue never settled: {list:#?}\n{}",
            server.cli(&["queue", "shop"]).all()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let status = |number: i64| settled.iter().find(|c| c["number"] == number).unwrap().clone();
    let ejected: Vec<i64> =
        settled.iter().filter(|c| c["status"] == "ejected").map(|c| c["number"].as_i64().unwrap()).collect();
    assert_eq!(ejected.len(), 3, "two broken and one conflicting leave: {settled:#?}");
    assert!(ejected.contains(&17) || ejected.contains(&3), "{settled:#?}");
    let conflicting = if ejected.contains(&17) { 17 } else { 3 };
    assert!(
        status(conflicting)["reason"].as_str().unwrap().contains("does not merge cleanly: shared.txt"),
        "{settled:#?}"
    );
    for number in ejected.iter().filter(|n| **n != conflicting) {
        assert!(status(*number)["reason"].as_str().unwrap().contains("fails CI on top of main"), "{settled:#?}");
    }

    // main moved only to tested commits: every commit on it passes the check.
    let clone = tempfile::tempdir().unwrap();
    ok(clone.path(), &["clone", "-q", &url, "."]);
    // From the first commit with the check on.
    let history = ok(clone.path(), &["rev-list", "--first-parent", &format!("{base}..main")]);
    let commits: Vec<&str> = history.lines().chain([base.as_str()]).collect();
    assert!(commits.len() >= 2, "{history}");
    for commit in &commits {
        ok(clone.path(), &["checkout", "-q", "--detach", commit]);
        let check = Command::new("sh").arg("check.sh").current_dir(clone.path()).output().unwrap();
        assert!(check.status.success(), "main is red at {commit}: {}", String::from_utf8_lossy(&check.stderr));
    }
    let merged = settled.iter().filter(|c| c["status"] == "merged").count();
    assert_eq!(merged, 17);
    let used = ok(clone.path(), &["ls-tree", "--name-only", "main"]).lines().filter(|f| f.starts_with("use_")).count();
    assert!(used >= 15, "the merged changes' files are on main: {used}");
    // How many CI runs the queue needed, for the record.
    let listed = server.cli(&["runs", "list", "--limit", "1000", "--format", "json"]).stdout;
    let runs: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let n_queue = runs["runs"].as_array().unwrap().iter().filter(|r| r["event"] == "merge_group").count();
    let events: Vec<String> =
        runs["runs"].as_array().unwrap().iter().map(|r| format!("{}:{}", r["event"], r["git_ref"])).collect();
    assert!((3..20).contains(&n_queue), "batches and bisection: fewer runs than changes ({n_queue}): {events:?}");
    eprintln!(
        "merge queue: {merged} merged, {} ejected, {n_queue} queue runs, {} commits on main",
        ejected.len(),
        commits.len()
    );
}

/// A repository added by a URL with a user and password (here: another of the server's own hosted
/// repositories, which needs a token): the password goes to the vault, the row, the answers, the
/// events and the mirror's configuration keep `***`, and fetching still works — git gets the
/// password as a header through its environment, not as an argument.
#[test]
fn the_password_in_a_source_url_is_sealed_and_still_fetches() {
    let workflow = "on: push\njobs:\n  hello:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n      - run: echo \"fetched $(cat name.txt)\"\n";
    let repo = Repo::new(&[("ci.yml", workflow)]);
    repo.write("name.txt", "through the vault\n");
    repo.commit("name");
    let (data, server, url) = host("upstream");
    ok(repo.path(), &["push", "-q", &url, "HEAD:main"]);

    let added = server.cli(&["repo", "add", &url, "--name", "downstream"]);
    assert_eq!(added.code, 0, "{}", added.all());
    assert!(!added.all().contains("warning"), "{}", added.all());
    assert!(!added.all().contains(&server.token), "{}", added.all());
    let listed = server.cli(&["repo", "list", "--format", "json"]);
    let downstream = listed.json()["repos"].as_array().unwrap().iter().find(|r| r["name"] == "downstream").cloned();
    let downstream = downstream.expect("listed");
    let (id, source) = (downstream["id"].clone(), downstream["source"].as_str().unwrap().to_string());
    assert!(source.starts_with("http://tandem:***@127.0.0.1:"), "{source}");

    let queued = server.cli(&["repo", "run", "downstream"]);
    assert_eq!(queued.code, 0, "{}", queued.all());
    let runs = server.wait_for("the run of downstream", |runs| {
        runs.iter().any(|r| r["repo_id"] == id && matches!(r["status"].as_str(), Some("success" | "failure")))
    });
    let run = runs.iter().find(|r| r["repo_id"] == id).unwrap();
    let logs = server.cli(&["runs", "logs", &run["id"].to_string()]);
    assert_eq!(run["status"], "success", "{run:#}\n{}", logs.all());
    assert!(logs.stdout.contains("fetched through the vault"), "{}", logs.all());

    // Nothing on disk holds the password in clear: not the database (its rows, events and
    // journal), not the mirror's git configuration.
    let mut leaks = Vec::new();
    for entry in walk(data.path()) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        if bytes.windows(server.token.len()).any(|w| w == server.token.as_bytes()) {
            leaks.push(entry);
        }
    }
    assert!(leaks.is_empty(), "the password is in clear in {leaks:?}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files
}

/// An archived repository is read-only: pushes are refused with git's own remote error, nothing
/// runs, and it says so where it is listed; unarchived, it takes pushes again.
#[test]
fn an_archived_repository_refuses_pushes_and_starts_nothing_until_unarchived() {
    let workflow = "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo hi\n";
    let repo = Repo::new(&[("ci.yml", workflow)]);
    let (_data, server, url) = host("old-site");
    ok(repo.path(), &["push", "-q", &url, "HEAD:main"]);
    server.wait_for("the first push's run", |runs| runs.len() == 1);

    let archived = server.cli(&["repo", "archive", "old-site"]);
    assert_eq!(archived.code, 0, "{}", archived.all());
    assert!(archived.stdout.contains("old-site archived"), "{}", archived.all());
    let again = server.cli(&["repo", "archive", "old-site"]);
    assert!(again.code != 0 && again.stderr.contains("archived already"), "{}", again.all());
    let listed = server.cli(&["repo", "list"]);
    assert!(listed.stdout.lines().any(|l| l.starts_with("old-site") && l.ends_with("archived")), "{}", listed.all());

    repo.write("more.txt", "more\n");
    repo.commit("more");
    let refused = git(repo.path(), &["push", &url, "HEAD:refs/heads/topic"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("remote error: old-site is archived"), "{stderr}");
    let run = server.cli(&["repo", "run", "old-site"]);
    assert!(run.code != 0 && run.stderr.contains("is archived"), "{}", run.all());
    // Reading goes on: it can still be cloned.
    let clone = tempfile::tempdir().unwrap();
    ok(clone.path(), &["clone", "-q", &url, "copy"]);

    let active = server.cli(&["repo", "unarchive", "old-site"]);
    assert_eq!(active.code, 0, "{}", active.all());
    ok(repo.path(), &["push", "-q", &url, "HEAD:refs/heads/topic"]);
    let runs = server.wait_for("the run of the push after unarchiving", |runs| runs.len() == 2);
    assert_eq!(runs.len(), 2);
    let audit = server.cli(&["audit", "log", "--kind", "repo.", "--format", "json"]).stdout;
    assert!(audit.contains("repo.archived") && audit.contains("repo.unarchived"), "{audit}");
}

/// A batch failing only in a job `.tandem/review.yml` marks flaky is tested once more before it
/// counts: the change merges instead of being ejected.
#[test]
fn a_failure_in_a_job_marked_flaky_is_tested_again_before_it_ejects() {
    let marks = tempfile::tempdir().unwrap();
    let mark = marks.path().join("flaked");
    let workflow = format!(
        "on: [push, pull_request, merge_group]\njobs:\n  e2e:\n    runs-on: ubuntu-latest\n    steps:\n      - run: |\n          if [ \"$GITHUB_EVENT_NAME\" = merge_group ] && [ ! -e '{mark}' ]; then touch '{mark}'; echo flaked; exit 1; fi\n          echo passed\n",
        mark = mark.display()
    );
    let repo = Repo::new(&[("ci.yml", &workflow)]);
    repo.write(".tandem/review.yml", "approvals: 1\nflaky-jobs: [e2e]\n");
    repo.commit("e2e is flaky");
    let (_data, server, url) = host("shop");
    ok(repo.path(), &["push", "-q", &url, "HEAD:main"]);
    repo.write("feature.txt", "a feature\n");
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-q", "-m", "A feature\n\nChange-Id: I0000000000000000000000000000000000000001"]);
    ok(repo.path(), &["push", "-q", &url, "HEAD:refs/for/main"]);
    checked(&server, 1);
    let rita = server.user_token("rita", "developer", "*", "read,run");
    let approved = server.cli_as(&rita, &["change", "approve", "shop", "1"]);
    assert_eq!(approved.code, 0, "{}", approved.all());
    let merged = server.cli(&["change", "merge", "shop", "1"]);
    assert_eq!(merged.code, 0, "{}", merged.all());

    let deadline = Instant::now() + Duration::from_secs(60);
    while show(&server, 1)["change"]["status"] != "merged" {
        assert!(Instant::now() < deadline, "never merged: {:#}", show(&server, 1));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(mark.exists(), "the first test of the batch did fail");
    let audit = server.cli(&["audit", "log", "--kind", "queue.", "--format", "json"]).stdout;
    let testing = audit.lines().filter(|l| l.contains("\"queue.testing\"")).count();
    assert_eq!(testing, 2, "tested twice: {audit}");
    assert!(!audit.contains("queue.ejected"), "{audit}");
}

/// A repository on a forge (here a bare repository standing for GitHub, whose API cannot run
/// here; its deliveries are GitHub's own shapes, signed): its pull request becomes a change
/// numbered as on the forge, approvals given there count (code owners by forge login), and the
/// merge queue tests the batch and pushes the forge's main forward to it.
#[test]
fn a_pull_request_on_a_forge_goes_through_the_same_review_and_queue() {
    let work = Repo::new(&[(
        "ci.yml",
        "on: [push, pull_request, merge_group]\njobs:\n  check:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n      - run: sh check.sh\n",
    )]);
    work.write("check.sh", CHECK);
    work.write("lib.sh", "helper_a() { :; }\n");
    work.write(".github/CODEOWNERS", "lib.sh @rita\n");
    work.commit("the check and its owners");
    let forge = tempfile::tempdir().unwrap();
    let upstream = forge.path().join("app.git");
    ok(forge.path(), &["init", "-q", "--bare", "-b", "main", upstream.to_str().unwrap()]);
    let upstream_url = upstream.to_str().unwrap();
    ok(work.path(), &["push", "-q", upstream_url, "HEAD:main"]);
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), None);
    let added = server.cli(&[
        "repo",
        "add",
        upstream_url,
        "--name",
        "team/app",
        "--forge",
        "github",
        "--api-url",
        "http://127.0.0.1:9",
        "--status-token",
        "unused-here",
    ]);
    assert_eq!(added.code, 0, "{}", added.all());
    let secret =
        added.stdout.lines().find_map(|l| l.strip_prefix("webhook secret (shown once): ")).unwrap().trim().to_string();
    let deliver = |event: &str, id: &str, body: String| {
        let signature = format!("sha256={}", git::webhook::sign(&secret, body.as_bytes()));
        let headers =
            [("x-github-event", event), ("x-github-delivery", id), ("x-hub-signature-256", signature.as_str())];
        let (status, answer) =
            crate::server::http(&server.addr, "POST", "/api/v1/webhooks/github", &headers, body.as_bytes());
        assert_eq!(status, 202, "{answer}");
        answer
    };

    // Sam's pull request #7 changes lib.sh, which Rita owns.
    let base = ok(work.path(), &["rev-parse", "HEAD"]);
    work.write("lib.sh", "helper_a() { :; }\nhelper_b() { :; }\n");
    work.write("use_b.sh", "helper_b\n");
    work.commit("Add helper_b");
    let head = ok(work.path(), &["rev-parse", "HEAD"]);
    ok(work.path(), &["push", "-q", upstream_url, "HEAD:refs/heads/feature"]);
    let pull = |action: &str| {
        format!(
            r#"{{"action":"{action}","number":7,"pull_request":{{"number":7,"title":"Add helper_b","user":{{"login":"sam"}},"merged":false,"head":{{"ref":"feature","sha":"{head}"}},"base":{{"ref":"main","sha":"{base}"}}}},"repository":{{"full_name":"team/app","clone_url":"https://github.example/team/app.git"}}}}"#
        )
    };
    deliver("pull_request", "pr-7-opened", pull("opened"));
    let detail = checked_in(&server, "team/app", 7);
    assert_eq!(detail["change"]["author"], "sam", "{detail:#}");
    let missing = detail["missing"].to_string();
    assert!(missing.contains("approval") && missing.contains("@rita"), "{detail:#}");

    let review = |who: &str, state: &str| {
        format!(
            r#"{{"action":"submitted","review":{{"state":"{state}","user":{{"login":"{who}"}}}},"pull_request":{{"number":7}},"repository":{{"full_name":"team/app"}}}}"#
        )
    };
    let answer = deliver("pull_request_review", "review-1", review("octo", "approved"));
    assert!(answer.contains("approval of change 7 by octo recorded"), "{answer}");
    let detail = show_in(&server, "team/app", 7);
    assert!(detail["missing"].to_string().contains("@rita"), "an approval, but not the owner's: {detail:#}");
    deliver("pull_request_review", "review-2", review("rita", "approved"));
    assert_eq!(show_in(&server, "team/app", 7)["missing"], serde_json::json!([]));

    let merged = server.cli(&["change", "merge", "team/app", "7"]);
    assert_eq!(merged.code, 0, "{}", merged.all());
    let deadline = Instant::now() + Duration::from_secs(60);
    while show_in(&server, "team/app", 7)["change"]["status"] != "merged" {
        assert!(Instant::now() < deadline, "never merged: {:#}", show_in(&server, "team/app", 7));
        std::thread::sleep(Duration::from_millis(200));
    }
    // The forge's main moved forward to the tested batch, which holds the pull request's head.
    let main = ok(Path::new(upstream_url), &["rev-parse", "refs/heads/main"]);
    assert_ne!(main, base);
    ok(Path::new(upstream_url), &["merge-base", "--is-ancestor", &head, &main]);
    ok(Path::new(upstream_url), &["merge-base", "--is-ancestor", &base, &main]);
    // The forge then says it is merged: nothing changes here.
    deliver("pull_request", "pr-7-closed", pull("closed").replace(r#""merged":false"#, r#""merged":true"#));
    assert_eq!(show_in(&server, "team/app", 7)["change"]["status"], "merged");
}

fn show_in(server: &Server, repo: &str, number: i64) -> serde_json::Value {
    let shown = server.cli(&["change", "show", repo, &number.to_string(), "--format", "json"]);
    assert_eq!(shown.code, 0, "{}", shown.all());
    serde_json::from_str(&shown.stdout).unwrap()
}

/// Waits until change `number` of `repo` has finished runs on its latest revision.
fn checked_in(server: &Server, repo: &str, number: i64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let detail = show_in(server, repo, number);
        let sha = detail["change"]["sha"].as_str().unwrap_or_default().to_string();
        let runs: Vec<&serde_json::Value> =
            detail["runs"].as_array().unwrap().iter().filter(|r| r["sha"] == sha).collect();
        if !runs.is_empty() && runs.iter().all(|r| matches!(r["status"].as_str(), Some("success" | "failure"))) {
            return detail;
        }
        assert!(Instant::now() < deadline, "change {number} was never checked: {detail:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `queue:` of `.tandem/review.yml` sets how many changes a batch takes and how many batches are
/// tested at once: one and one tests changes one at a time, in order.
#[test]
fn the_queue_takes_its_batch_size_and_parallelism_from_the_review_settings() {
    // A check slow enough that the later changes queue up while the first is tested.
    let workflow = "on: [push, pull_request, merge_group]\njobs:\n  check:\n    runs-on: ubuntu-latest\n    steps:\n      - run: sleep 2\n";
    let repo = Repo::new(&[("ci.yml", workflow)]);
    repo.write(".tandem/review.yml", "approvals: 1\nqueue:\n  parallel: 1\n  batch: 1\n");
    repo.commit("one at a time");
    let (_data, server, url) = host("shop");
    ok(repo.path(), &["push", "-q", &url, "HEAD:main"]);
    let base = ok(repo.path(), &["rev-parse", "HEAD"]);
    for i in 1..=3 {
        ok(repo.path(), &["checkout", "-q", "--detach", &base]);
        repo.write(&format!("file_{i}.txt"), "content\n");
        repo.git(&["add", "-A"]);
        repo.git(&["commit", "-q", "-m", &format!("Change {i}\n\nChange-Id: I{i:040}")]);
        ok(repo.path(), &["push", "-q", &url, "HEAD:refs/for/main"]);
    }
    let rita = server.user_token("rita", "developer", "*", "read,run");
    for number in [1, 2, 3] {
        checked(&server, number);
        let approved = server.cli_as(&rita, &["change", "approve", "shop", &number.to_string()]);
        assert_eq!(approved.code, 0, "{}", approved.all());
    }
    for number in ["1", "2", "3"] {
        let merged = server.cli(&["change", "merge", "shop", number]);
        assert_eq!(merged.code, 0, "{}", merged.all());
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    while [1, 2, 3].iter().any(|n| show(&server, *n)["change"]["status"] != "merged") {
        assert!(Instant::now() < deadline, "never merged: {:#}", show(&server, 3));
        std::thread::sleep(Duration::from_millis(200));
    }
    let audit = server.cli(&["audit", "log", "--kind", "queue.", "--format", "json"]).stdout;
    let events: Vec<serde_json::Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    // Tandem's defaults would test the two waiting behind the first as one batch.
    assert_eq!(kinds, ["queue.testing", "queue.merged"].repeat(3), "{audit}");
    assert!(events.iter().all(|e| e["payload"]["changes"].as_array().is_some_and(|c| c.len() == 1)), "{audit}");
}
