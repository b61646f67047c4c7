//! Hostile and random input never panics or hangs; limits are enforced with clear errors.

use proptest::prelude::*;
use spec::{expr, workflow};

#[test]
fn files_over_the_limit_are_refused() {
    let big = format!("on: push\njobs: {{}}\n#{}", "x".repeat(spec::yaml::MAX_FILE_BYTES));
    let (parsed, diagnostics) = workflow::parse(&big);
    assert!(parsed.is_none());
    assert_eq!(diagnostics[0].code, "file-too-large");
}

#[test]
fn deep_nesting_is_refused() {
    let deep = format!("on: push\njobs: {}1{}\n", "{a: ".repeat(200), "}".repeat(200));
    let (_, diagnostics) = workflow::parse(&deep);
    assert!(diagnostics.iter().any(|d| d.code == "yaml-too-deep" || d.code == "yaml-syntax"), "{diagnostics:?}");
}

#[test]
fn pathological_expressions_are_refused_quickly() {
    let started = std::time::Instant::now();
    for text in [
        format!("{}true{}", "(".repeat(5000), ")".repeat(5000)),
        "!".repeat(100_000),
        "a.".repeat(20_000) + "b",
        format!("format('{}')", "{0}".repeat(50_000)),
        "'".repeat(10_001),
    ] {
        assert!(expr::parse(&text).is_err(), "should refuse {}...", &text[..20]);
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn expression_parser_never_panics(text in "[ -~]{0,80}") {
        if let Ok(parsed) = expr::parse(&text) {
            let _ = expr::evaluate(&parsed, &expr::Contexts::default());
        }
    }

    #[test]
    fn expression_tokens_never_panic(parts in prop::collection::vec(prop::sample::select(vec![
        "github", ".", "*", "[", "]", "(", ")", "'a'", "1", "==", "!=", "&&", "||", "!", "<", ">=",
        "contains", "format", ",", "null", "true", "fromJSON", "'{0}'", "0x1F", "matrix", "-2.5e3",
    ]), 0..24)) {
        let text = parts.join(" ");
        if let Ok(parsed) = expr::parse(&text) {
            let _ = expr::evaluate(&parsed, &expr::Contexts::default());
        }
    }

    #[test]
    fn workflow_parser_never_panics(text in "[a-z:{}\\[\\]\\-\\n '\"$|>&*!.0-9]{0,200}") {
        let _ = ci::check::validate(&text);
    }

    #[test]
    fn templates_roundtrip_literal_text(text in "[a-zA-Z0-9 _./-]{0,40}") {
        let template = expr::Template::parse(&text).unwrap();
        prop_assert_eq!(template.render(&expr::Contexts::default()).unwrap(), text);
    }
}

proptest::proptest! {
    /// Monitors, rule and OpenSLO files: arbitrary text gives diagnostics, never a panic.
    #[test]
    fn monitoring_files_never_panic(text in "(probes|slos|groups|rules|apiVersion|kind|objective|expr|http|https://|tls|expect-json|\\$\\.|heartbeat|:|-| |\n|\\{|\\}|\\[|\\]|[a-z0-9%./]){0,300}") {
        let _ = spec::monitors::parse(&text);
        let _ = spec::rules::parse(&text);
        let _ = spec::openslo::parse(&text);
    }

    /// JSON paths of probes: any text parses or is refused, never a panic, and what parses selects
    /// without panicking either.
    #[test]
    fn json_paths_never_panic(text in "(\\$|\\.|\\[|\\]|'|\"|[a-z0-9 ]|é){0,40}") {
        if let Ok(path) = spec::monitors::JsonPath::parse(&text) {
            let document = serde_json::json!({"a": [1, {"b": "c"}], "é": null});
            let _ = path.select(&document);
        }
    }
}

proptest::proptest! {
    /// Action metadata files: arbitrary text in their vocabulary gives diagnostics, never a panic.
    #[test]
    fn action_files_never_panic(text in "(name|inputs|outputs|runs|using|node20|composite|docker|main|post|post-if|steps|run|shell|uses|image|args|value|default|required|\\$\\{\\{|\\}\\}|:|-| |\n|'|[a-z0-9./]){0,300}") {
        let _ = spec::workflow::parse_action(&text);
    }
}

/// The four real actions of the corpus read without an error.
#[test]
fn the_corpus_actions_metadata_reads_cleanly() {
    let Some(dir) = crate::corpus_dir("actions") else { return };
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bundle = entry.unwrap().path();
        if bundle.extension().is_none_or(|e| e != "bundle") {
            continue;
        }
        // Every tag and branch tip's action.yml, straight from the bundle.
        let refs = std::process::Command::new("git").args(["bundle", "list-heads"]).arg(&bundle).output().unwrap();
        let clone = std::env::temp_dir().join(format!("tandem-spec-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&clone);
        let status = std::process::Command::new("git")
            .args(["clone", "-q", "--bare"])
            .arg(&bundle)
            .arg(&clone)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        for line in String::from_utf8_lossy(&refs.stdout).lines().take(20) {
            let sha = line.split_whitespace().next().unwrap();
            let shown = std::process::Command::new("git")
                .arg("-C")
                .arg(&clone)
                .args(["show", &format!("{sha}:action.yml")])
                .output()
                .unwrap();
            if !shown.status.success() {
                continue;
            }
            let text = String::from_utf8(shown.stdout).unwrap();
            let (action, diagnostics) = spec::workflow::parse_action(&text);
            assert!(
                action.is_some() && diagnostics.iter().all(|d| !d.is_error()),
                "{}@{sha}: {diagnostics:?}",
                bundle.display()
            );
            n += 1;
        }
        let _ = std::fs::remove_dir_all(&clone);
    }
    assert!(n >= 4, "read {n} action files");
}

proptest::proptest! {
    /// gitleaks configurations: arbitrary text is an error or a config, never a panic; a config's
    /// scan of arbitrary text never panics either.
    #[test]
    fn gitleaks_configs_never_panic(text in "(\\[\\[rules\\]\\]|\\[allowlist\\]|id|regex|secretGroup|entropy|keywords|path|paths|regexes|stopwords| = |'''|'|\\[|\\]|\n|[a-z0-9.(){}|*+?\\\\]){0,200}", file in "[ -~\n]{0,200}") {
        if let Ok(config) = spec::gitleaks::parse_config(&text) {
            let _ = config.scan("f.txt", &file, &[]);
        }
    }
}
