//! Diagnostics for broken files, rendered as a user sees them.

use std::path::Path;

fn render(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/invalid").join(name);
    let source = std::fs::read_to_string(&path).unwrap();
    let (_, diagnostics) = ci::check::validate(&source);
    assert!(!diagnostics.is_empty(), "{name} should have diagnostics");
    diagnostics.iter().map(|d| d.render(name, &source)).collect::<Vec<_>>().join("\n")
}

#[test]
fn typos_get_suggestions() {
    let text = render("typos.yml");
    for expected in [
        "did you mean `branches`?",
        "did you mean `runs-on`?",
        "did you mean `shell`?",
        "did you mean `needs`?",
        "did you mean `path`?",
        "`actions/chekout` is not a built-in action",
        "did you mean `actions/checkout`?",
        "found `soon`",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    insta::assert_snapshot!("typos", text);
}

#[test]
fn graph_problems_name_the_cycle_and_the_missing_job() {
    let text = render("graph.yml");
    assert!(text.contains("a -> c -> b -> a"), "{text}");
    assert!(text.contains("needs `deploy`, which is not a job"), "{text}");
    assert!(text.contains("unknown event `pull_requests`") && text.contains("did you mean `pull_request`?"), "{text}");
    insta::assert_snapshot!("graph", text);
}

#[test]
fn expression_errors_point_into_the_expression() {
    let text = render("expressions.yml");
    assert!(text.contains("comparison is written `==`"), "{text}");
    assert!(text.contains("`contains` takes 2 argument(s), found 1"), "{text}");
    assert!(text.contains("unknown function `frobnicate`"), "{text}");
    assert!(text.contains("`${{` is never closed"), "{text}");
    // The typo on the second line of a block scalar is reported on that line.
    assert!(text.contains("expressions.yml:12:21"), "{text}");
    insta::assert_snapshot!("expressions", text);
}

#[test]
fn yaml_syntax_errors_have_a_place() {
    let text = render("syntax.yml");
    assert!(text.starts_with("error[yaml-syntax]"), "{text}");
    assert!(text.contains("syntax.yml:"), "{text}");
}

#[test]
fn an_action_without_a_version_is_refused_as_github_refuses_it() {
    let source = "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout\n      - uses: actions/cache@\n      - uses: actions/checkout@v4\n";
    let (_, diagnostics) = ci::check::validate(source);
    let text: Vec<String> = diagnostics.iter().map(|d| d.render("ci.yml", source)).collect();
    assert_eq!(diagnostics.len(), 2, "{text:#?}");
    assert!(diagnostics.iter().all(|d| d.code == "missing-ref" && d.is_error()), "{text:#?}");
    assert!(text[0].contains("ci.yml:6:15") && text[0].contains("`actions/checkout@v4`"), "{}", text[0]);
    assert!(text[1].contains("ci.yml:7:15"), "{}", text[1]);
}
