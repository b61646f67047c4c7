//! `tandem validate` on good, bad and oversized files.

use std::process::Command;

use crate::Repo;

const GOOD: &str = "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ok\n";

#[test]
fn valid_files_exit_zero() {
    let repo = Repo::new(&[("ok.yml", GOOD)]);
    let run = repo.tandem(&["validate"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains("ok  .github/workflows/ok.yml"), "{}", run.stdout);
}

#[test]
fn every_problem_is_reported_at_once_with_place_and_hint() {
    let bad = "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    need: b\n    steps:\n      - run: echo ${{ matrix.x = 1 }}\n      - uses: someone@v1\n";
    let repo = Repo::new(&[("ok.yml", GOOD), ("bad.yml", bad)]);
    let run = repo.tandem(&["validate"]);
    assert_eq!(run.code, 1, "{}", run.all());
    for expected in [
        ".github/workflows/bad.yml:5:5",
        "did you mean `needs`?",
        ".github/workflows/bad.yml:7:32",
        "`someone@v1` is not an action reference",
        "2 file(s), 3 error(s)",
    ] {
        assert!(run.stdout.contains(expected), "missing {expected:?} in\n{}", run.stdout);
    }
    let json = repo.tandem(&["validate", "--format", "json"]).json();
    assert_eq!(json["errors"], 3);
    let bad_file = json["files"].as_array().unwrap().iter().find(|f| f["path"] == ".github/workflows/bad.yml").unwrap();
    assert_eq!(bad_file["valid"], false);
    assert_eq!(bad_file["diagnostics"][0]["code"], "unknown-key");
    assert_eq!(bad_file["diagnostics"][0]["span"]["line"], 5);
}

#[test]
fn huge_files_are_refused_without_reading_them_whole() {
    let repo = Repo::new(&[("ok.yml", GOOD)]);
    let big = format!("on: push\n#{}\n", "x".repeat(11 * 1024 * 1024));
    repo.write(".github/workflows/big.yml", &big);
    let run = repo.tandem(&["validate"]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("file-too-large"), "{}", run.stdout);
}

#[test]
fn a_repository_without_workflows_gets_a_hint() {
    let repo = Repo::new(&[]);
    let run = repo.tandem(&["validate"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("hint: put workflow files in .tandem/workflows/"), "{}", run.stderr);
}

#[test]
fn tandem_workflows_take_precedence_over_github_ones() {
    let repo = Repo::new(&[("gh.yml", GOOD)]);
    repo.write(".tandem/workflows/own.yaml", GOOD);
    let run = repo.tandem(&["validate"]);
    assert!(run.stdout.contains(".tandem/workflows/own.yaml") && !run.stdout.contains("gh.yml"), "{}", run.stdout);
}

#[test]
fn the_service_file_is_checked_with_the_workflows() {
    let repo = Repo::new(&[("ok.yml", GOOD)]);
    repo.write(
        ".tandem/service.yml",
        "service: app\nenvironments:\n  staging:\n    target: process\n    comand: ./run\n",
    );
    let run = repo.tandem(&["validate"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stdout.contains(".tandem/service.yml:5:5") && run.stdout.contains("did you mean `command`?"),
        "{}",
        run.stdout
    );
    repo.write(
        ".tandem/service.yml",
        "service: app\nenvironments:\n  staging:\n    target: process\n    command: ./run\n",
    );
    let run = repo.tandem(&["validate"]);
    assert_eq!(run.code, 0, "{}", run.all());
}

#[test]
fn a_service_file_without_workflows_is_checked_too() {
    let repo = Repo::new(&[]);
    repo.write(
        ".tandem/service.yml",
        "service: app\nenvironments:\n  staging:\n    target: process\n    comand: ./run\n",
    );
    let run = repo.tandem(&["validate"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stdout.contains(".tandem/service.yml:5:5"), "{}", run.all());
    assert!(!run.all().contains("no workflows found"), "{}", run.all());
}

#[test]
fn an_action_ref_that_looks_like_an_option_is_refused() {
    let wf =
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: team/act@--upload-pack=touch\n";
    let repo = Repo::new(&[("ci.yml", wf)]);
    let run = repo.tandem(&["validate"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stdout.contains("is not a tag, branch or commit"), "{}", run.stdout);
}

#[test]
fn scan_secrets_finds_a_key_redacts_it_and_honours_gitleaksignore() {
    let config = crate::project_root().join("../shared/corpus/secrets/gitleaks__gitleaks__config_gitleaks.toml");
    assert!(config.is_file(), "{} is missing; CI lays the shared corpus beside the clone", config.display());
    let repo = Repo::new(&[("ok.yml", GOOD)]);
    repo.write("src/main.go", "package main\n\nfunc main() {\n\taws_token := \"AKIALALEMEL33243OLIA\"\n}\n");
    repo.commit("a key");
    let config = config.to_str().unwrap();
    let run = repo.tandem(&["scan", "secrets", "--config", config]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stdout.contains("src/main.go:4:"), "{}", run.stdout);
    assert!(run.stdout.contains("aws-access-token  AKIA***"), "redacted: {}", run.stdout);
    assert!(!run.stdout.contains("AKIALALEMEL33243OLIA"), "{}", run.stdout);
    let json = repo.tandem(&["scan", "secrets", "--config", config, "--format", "json"]).json();
    let fingerprint = json["findings"][0]["fingerprint"].as_str().unwrap().to_string();
    assert_eq!(fingerprint, "src/main.go:aws-access-token:4");
    repo.write(".gitleaksignore", &format!("# a test key\n{fingerprint}\n"));
    repo.commit("accepted");
    let run = repo.tandem(&["scan", "secrets", "--config", config]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains("0 finding(s)"), "{}", run.stdout);
    let missing = repo.tandem(&["scan", "secrets"]);
    assert_eq!(missing.code, 2);
    assert!(missing.stderr.contains("add .gitleaks.toml"), "{}", missing.stderr);
}

#[test]
fn scan_secrets_history_finds_a_key_a_later_commit_removed() {
    let config = crate::project_root().join("../shared/corpus/secrets/gitleaks__gitleaks__config_gitleaks.toml");
    assert!(config.is_file(), "{} is missing; CI lays the shared corpus beside the clone", config.display());
    let config = config.to_str().unwrap();
    let repo = Repo::new(&[("ok.yml", GOOD)]);
    repo.write("main.go", "package main\n\nfunc main() {\n\t// fine\n}\n");
    repo.commit("clean");
    repo.write("main.go", "package main\n\nfunc main() {\n\taws_token := \"AKIALALEMEL33243OLIA\"\n}\n");
    repo.commit("a key");
    repo.write("main.go", "package main\n\nfunc main() {\n\taws_token := os.Getenv(\"AWS_TOKEN\")\n}\n");
    repo.commit("the key removed");
    // Today's files are clean; the history is not.
    assert_eq!(repo.tandem(&["scan", "secrets", "--config", config]).code, 0);
    let run = repo.tandem(&["scan", "secrets", "--config", config, "--history", "--format", "json"]);
    assert_eq!(run.code, 1, "{}", run.all());
    let json = run.json();
    let findings = json["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "found once, in the commit that added it: {json:#}");
    let added = Command::new("git").arg("-C").arg(repo.path()).args(["rev-parse", "HEAD~1"]).output().unwrap();
    let added = String::from_utf8(added.stdout).unwrap().trim().to_string();
    assert_eq!(findings[0]["fingerprint"], format!("{added}:main.go:aws-access-token:4"));
    assert_eq!(json["files"], 4, "four commits scanned (the first commit included)");
}
