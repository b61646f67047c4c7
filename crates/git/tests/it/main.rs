//! Every forge payload in the shared corpus yields the right repository, ref, commit and change
//! request; signatures are checked; a repository's facts are read right on a branch and detached.

use git::webhook::{self, Forge, Parsed};

fn corpus() -> Option<Vec<(String, Vec<u8>)>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/webhooks");
    if !dir.is_dir() {
        assert!(std::env::var_os("TANDEM_REQUIRE_CORPUS").is_none(), "the corpus is missing at {}", dir.display());
        eprintln!("note: corpus missing; skipped");
        return None;
    }
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    Some(
        files
            .into_iter()
            .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(p).unwrap()))
            .collect(),
    )
}

/// `forge__event__variant.json` → the forge and the event header it would have come with.
fn headers_for(name: &str) -> (Forge, String) {
    let mut parts = name.split("__");
    let forge = Forge::from_name(parts.next().unwrap()).unwrap();
    let event = parts.next().unwrap();
    let header = match (forge, event) {
        (Forge::GitLab, "push") => "Push Hook".to_string(),
        (Forge::GitLab, "tag_push") => "Tag Push Hook".to_string(),
        (Forge::GitLab, "merge_request") => "Merge Request Hook".to_string(),
        (_, other) => other.to_string(),
    };
    (forge, header)
}

#[test]
fn every_corpus_payload_is_understood() {
    let Some(files) = corpus() else { return };
    assert!(files.len() >= 30);
    let mut table = Vec::new();
    for (name, body) in &files {
        let (forge, event) = headers_for(name);
        let parsed = webhook::parse(forge, &event, body).unwrap_or_else(|e| panic!("{name}: {e}"));
        let row = match &parsed {
            Parsed::Change(c) => {
                assert!(!c.repository.is_empty() && c.repository.contains('/'), "{name}: {c:?}");
                assert_eq!(c.sha.len(), 40, "{name}: {c:?}");
                assert!(c.git_ref.starts_with("refs/"), "{name}: {c:?}");
                assert!(!c.clone_urls.is_empty(), "{name}");
                let cr = c
                    .change_request
                    .as_ref()
                    .map(|r| format!(" #{} {} {}→{}", r.number, r.action, r.head_ref, r.base_ref))
                    .unwrap_or_default();
                format!("{name}: {} {} {} {}{cr}", c.event, c.repository, c.git_ref, &c.sha[..8])
            }
            Parsed::Review(r) => {
                format!("{name}: review {} #{} by {} approved={}", r.repository, r.number, r.reviewer, r.approved)
            }
            Parsed::Ignored { reason, .. } => format!("{name}: ignored ({reason})"),
        };
        table.push(row);
    }
    let table = table.join("\n");
    // Spot checks against the payloads' own fields.
    for expected in [
        "gitea__push__default.json: push gordon/hello-world refs/heads/main ef98532a",
        "gitlab__push__default.json: push test/woodpecker refs/heads/main 16862e36",
        "gitlab__tag_push__default.json: push test/woodpecker refs/tags/v22 fabed3d9",
        "github__pull_request__opened.json: pull_request Codertocat/Hello-World refs/heads/changes ec26c3e5 #2 opened changes→master",
        "gitea__pull_request__opened.json: pull_request gordon/hello-world refs/heads/feature/changes 0d1a26e6 #1 opened feature/changes→main",
        "gitlab__merge_request__opened.json: pull_request demoaccount2-commits-group/test_ci_tmp refs/heads/real6543-main-patch-42541 2f767050 #3 opened real6543-main-patch-42541→main",
        "github__push__default.json: ignored (refs/tags/simple-tag was deleted)",
        "github__ping__default.json: ignored",
        "gitlab__merge_request__approved.json: review anbraten/woodpecker #3 by anbraten approved=true",
        "github__pull_request__opened.json: pull_request",
    ] {
        assert!(table.contains(expected), "missing `{expected}` in\n{table}");
    }
    let n_changes = table.lines().filter(|l| !l.contains("ignored")).count();
    assert!(n_changes >= 15, "only {n_changes} changes in\n{table}");
}

#[test]
fn signatures_are_checked() {
    let body = br#"{"ref":"refs/heads/main"}"#;
    let good = webhook::sign("s3cret", body);
    let header = |value: String| move |name: &str| (name == "x-hub-signature-256").then(|| value.clone());
    assert!(webhook::verify(Forge::GitHub, "s3cret", &header(format!("sha256={good}")), body).is_ok());
    assert!(webhook::verify(Forge::GitHub, "other", &header(format!("sha256={good}")), body).is_err());
    assert!(webhook::verify(Forge::GitHub, "s3cret", &header(good.clone()), body).is_err());
    assert!(webhook::verify(Forge::GitHub, "s3cret", &|_: &str| None, body).is_err());
    let gitea = |name: &str| (name == "x-gitea-signature").then(|| webhook::sign("s3cret", body));
    assert!(webhook::verify(Forge::Gitea, "s3cret", &gitea, body).is_ok());
    assert!(webhook::verify(Forge::Gitea, "s3cret", &gitea, b"tampered").is_err());
    let gitlab = |name: &str| (name == "x-gitlab-token").then(|| "s3cret".to_string());
    assert!(webhook::verify(Forge::GitLab, "s3cret", &gitlab, body).is_ok());
    assert!(webhook::verify(Forge::GitLab, "s3cret!", &gitlab, body).is_err());
}

#[test]
fn malformed_payloads_are_errors_not_panics() {
    for body in [
        &b"not json"[..],
        b"[]",
        b"{}",
        br#"{"ref": 1}"#,
        br#"{"repository": {"full_name": "a/b"}, "ref": "refs/heads/x"}"#,
    ] {
        assert!(webhook::parse(Forge::GitHub, "push", body).is_err(), "{}", String::from_utf8_lossy(body));
    }
    assert!(
        webhook::parse(Forge::GitLab, "Merge Request Hook", br#"{"project": {"path_with_namespace": "a/b"}}"#).is_err()
    );
}

fn sh(dir: &std::path::Path, script: &str) {
    let status = std::process::Command::new("sh").arg("-ec").arg(script).current_dir(dir).status().unwrap();
    assert!(status.success(), "{script}");
}

#[test]
fn repository_facts_name_the_branch_or_the_detached_commit() {
    let dir = tempfile::tempdir().unwrap();
    sh(
        dir.path(),
        "git init -q -b feature/x . && git config user.email a@b && git config user.name A \
         && echo 1 > a && git add a && git commit -qm one && git tag v1 \
         && git remote add origin https://example.com/acme/widgets.git",
    );
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let facts = runtime.block_on(git::repo::repo_facts(dir.path(), false)).unwrap();
    assert_eq!(facts.branch.as_deref(), Some("feature/x"));
    assert_eq!(facts.git_ref, "refs/heads/feature/x");
    assert_eq!(facts.repository, "acme/widgets");
    assert_eq!(facts.changed_paths, vec!["a".to_string()]);
    assert_eq!(facts.commit_message, "one");

    sh(dir.path(), "git checkout -q --detach HEAD");
    let facts = runtime.block_on(git::repo::repo_facts(dir.path(), false)).unwrap();
    assert_eq!(facts.branch, None, "a detached HEAD (even one a tag and a branch point at) has no branch");
    assert_eq!(facts.git_ref, facts.sha);
}

#[test]
fn the_remote_is_named_from_the_config_file_or_by_git_in_a_worktree() {
    let dir = tempfile::tempdir().unwrap();
    sh(
        dir.path(),
        "git init -q -b main repo && cd repo && git config user.email a@b && git config user.name A \
         && echo 1 > a && git add a && git commit -qm one \
         && git remote add origin git@forge.example:team/app.git && git worktree add -q ../tree",
    );
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // What git wrote, read without git.
    assert_eq!(
        git::config::remote_url(&dir.path().join("repo"), "origin"),
        Some(Some("git@forge.example:team/app.git".into()))
    );
    // A worktree's `.git` is a file: git answers.
    assert_eq!(git::config::remote_url(&dir.path().join("tree"), "origin"), None);
    for checkout in ["repo", "tree"] {
        let facts = runtime.block_on(git::repo::repo_facts(dir.path().join(checkout), false)).unwrap();
        assert_eq!(facts.repository, "team/app", "{checkout}");
    }
}

#[test]
fn approvals_given_on_each_forge_are_reviews_and_other_reviews_are_ignored() {
    let github = |action: &str, state: &str| {
        format!(
            r#"{{"action":"{action}","review":{{"state":"{state}","user":{{"login":"rita"}}}},"pull_request":{{"number":7}},"repository":{{"full_name":"team/app"}}}}"#
        )
    };
    let review = |forge, event: &str, body: String| match webhook::parse(forge, event, body.as_bytes()).unwrap() {
        Parsed::Review(r) => Some((r.number, r.reviewer, r.approved)),
        _ => None,
    };
    assert_eq!(
        review(Forge::GitHub, "pull_request_review", github("submitted", "approved")),
        Some((7, "rita".into(), true))
    );
    assert_eq!(
        review(Forge::GitHub, "pull_request_review", github("dismissed", "dismissed")),
        Some((7, "rita".into(), false))
    );
    assert_eq!(review(Forge::GitHub, "pull_request_review", github("submitted", "commented")), None);
    assert_eq!(review(Forge::GitHub, "pull_request_review", github("submitted", "changes_requested")), None);
    let gitea = r#"{"action":"reviewed","number":4,"pull_request":{"number":4},"review":{"type":"pull_request_review_approved","content":""},"sender":{"login":"gordon"},"repository":{"full_name":"gordon/hello-world"}}"#;
    assert_eq!(review(Forge::Gitea, "pull_request_review_approved", gitea.into()), Some((4, "gordon".into(), true)));
    // A review without its reviewer is malformed, not an anonymous approval.
    let anonymous = r#"{"action":"submitted","review":{"state":"approved"},"pull_request":{"number":7},"repository":{"full_name":"team/app"}}"#;
    assert!(webhook::parse(Forge::GitHub, "pull_request_review", anonymous.as_bytes()).is_err());
}

/// HEAD's commit read from the repository's files is what `git log` says, in every case the
/// reader takes; in the cases it leaves to git (packed objects, a setting about first commits,
/// a merge, a possible rename), it says so rather than guess.
#[test]
fn heads_commit_read_from_files_is_what_git_says_or_left_to_git() {
    use git::objects::head_commit;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let from_git = || {
        let mut commit = runtime.block_on(git::repo::head_commit(root)).unwrap();
        commit.changed.sort();
        commit
    };
    let from_files = || {
        head_commit(root).map(|mut commit| {
            commit.changed.sort();
            commit
        })
    };
    sh(
        root,
        "git init -q -b main . && git config user.email ann@example.com && git config user.name 'Ann Lee' \
         && mkdir -p src/deep docs && echo 1 > a && echo 2 > src/deep/b && echo 3 > docs/c && echo 4 > gone \
         && git add -A && git commit -qm first",
    );
    assert_eq!(from_files(), Some(from_git()), "a first commit shows its files");
    sh(root, "git config log.showRoot false");
    assert_eq!(from_files(), None, "a setting about first commits is left to git");
    assert_eq!(from_git().changed, Vec::<String>::new());
    sh(root, "git config --unset log.showRoot");
    let steps: [(&str, bool); 8] = [
        // Modified, added in a new folder, mode changed: read.
        (
            "echo 5 >> src/deep/b && mkdir -p new/inner && echo 6 > new/inner/d && chmod +x a \
          && git add -A && git commit -qm 'Change things' -m 'With a body.'",
            true,
        ),
        // Removed files and folders only: read.
        ("git rm -rq docs gone && git commit -qm 'Remove docs'", true),
        // An empty commit: no files.
        ("git commit -q --allow-empty -m 'Nothing'", true),
        // Added and removed at once may be a rename: git answers.
        ("git mv a renamed && git commit -qm 'Rename'", false),
        // A file that becomes a folder: git answers.
        ("git rm -q renamed && mkdir renamed && echo 7 > renamed/x && git add -A && git commit -qm 'Folder'", false),
        // Refs packed, HEAD detached: read.
        (
            "echo 8 >> src/deep/b && git commit -qam 'Packed refs' && git pack-refs --all && git checkout -q --detach",
            true,
        ),
        // A path git would quote: git answers.
        ("printf x > 'sp\"ace' && git add -A && git commit -qm 'Quote'", false),
        // Objects in a pack: git answers.
        ("git checkout -q main && echo 9 >> src/deep/b && git commit -qam 'Packed' && git gc -q", false),
    ];
    for (script, read) in steps {
        sh(root, script);
        let git = from_git();
        match from_files() {
            Some(files) => {
                assert!(read, "{script}: read, though git should answer");
                assert_eq!(files, git, "{script}");
            }
            None => assert!(!read, "{script}: left to git"),
        }
    }
    // A merge shows no files by default; git says so.
    sh(
        root,
        "git checkout -q -b side && echo 10 > side && git add side && git commit -qm side && git checkout -q main \
         && echo 11 > other && git add other && git commit -qm other && git merge -q --no-edit side",
    );
    assert_eq!(from_files(), None, "a merge is left to git");
    let facts = runtime.block_on(git::repo::repo_facts(root, false)).unwrap();
    assert_eq!((facts.branch.as_deref(), facts.changed_paths.len()), (Some("main"), 0));
}
