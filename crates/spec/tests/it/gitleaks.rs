//! Secret scanning with gitleaks-format rules: gitleaks' own default configuration (the corpus
//! copy of `config/gitleaks.toml`, 222 rules, read unchanged) and its test configuration, against
//! gitleaks' own test files and `.gitleaksignore` files.

use spec::gitleaks;

fn read(name: &str) -> Option<String> {
    let dir = crate::corpus_dir("secrets")?;
    Some(std::fs::read_to_string(dir.join(format!("gitleaks__gitleaks__{name}"))).unwrap())
}

fn found(config: &gitleaks::Config, file: &str, text: &str, ignored: &[String]) -> Vec<String> {
    config.scan(file, text, ignored).iter().map(|f| format!("{}:{}:{}", f.rule, f.line, f.secret)).collect()
}

#[test]
fn the_default_rules_load_unchanged_and_find_gitleaks_test_secrets() {
    let Some(text) = read("config_gitleaks.toml") else { return };
    let config = gitleaks::parse_config(&text).unwrap();
    assert_eq!(config.rules.len(), 222, "every rule loads");
    let main = read("testdata_repos_nogit_main.go").unwrap();
    assert_eq!(found(&config, "main.go", &main, &[]), ["aws-access-token:20:AKIALALEMEL33243OLIA"]);
    let env = read("testdata_repos_nogit_.env.prod").unwrap();
    assert_eq!(found(&config, ".env.prod", &env, &[]), ["generic-api-key:4:8ae31cacf141669ddfb5da"]);
    let key = read("testdata_repos_symlinks_source_file_id_ed25519").unwrap();
    assert!(
        found(&config, "id_ed25519", &key, &[])[0].starts_with("private-key:1:-----BEGIN OPENSSH PRIVATE KEY-----")
    );
    // The global allowlist: gitleaks' own configuration file is not scanned.
    assert!(config.scan("config/gitleaks.toml", &main, &[]).is_empty());
    // A file without secrets.
    assert!(config.scan("README.md", "nothing to see here\\nversion = 1.2.3\\n", &[]).is_empty());
}

#[test]
fn gitleaksignore_fingerprints_are_honoured() {
    let Some(simple) = read("testdata_config_simple.toml") else { return };
    let config = gitleaks::parse_config(&simple).unwrap();
    let ignore = read("testdata_repos_small_.gitleaksignore").unwrap();
    let ignored: Vec<String> =
        ignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect();
    let global = read("testdata_repos_small_api_ignoreGlobal.go").unwrap();
    assert_eq!(found(&config, "api/ignoreGlobal.go", &global, &[]), ["aws-access-key:20:AKIALALEMEL33243OLIA"]);
    assert!(
        found(&config, "api/ignoreGlobal.go", &global, &ignored).is_empty(),
        "its fingerprint is in .gitleaksignore"
    );
    // A commit-scoped fingerprint (`commit:file:rule:line`) ignores only in that commit.
    let commit = read("testdata_repos_small_api_ignoreCommit.go").unwrap();
    assert_eq!(found(&config, "api/ignoreCommit.go", &commit, &ignored).len(), 1);
    let in_commit =
        config.scan_commit("53cd7a3c6eb4937f413e3c25e4a9f39289afa69e", "api/ignoreCommit.go", &commit, &ignored);
    assert!(in_commit.is_empty(), "{in_commit:?}");
}

#[test]
fn a_broken_rule_is_named() {
    let error = gitleaks::parse_config("[[rules]]\nid = 'x'\nregex = '''(unclosed'''\n").unwrap_err();
    assert!(error.starts_with("rule `x`:"), "{error}");
    let error = gitleaks::parse_config("[[rules]]\nid = 'y'\n").unwrap_err();
    assert!(error.contains("neither `regex` nor `path`"), "{error}");
}
