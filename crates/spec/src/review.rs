//! `.tandem/review.yml`: what a change of a hosted repository needs before it merges, and which
//! CI jobs are known to be unreliable.
//!
//! ```yaml
//! approvals: 2                   # people other than the author (default 1)
//! flaky-jobs: [e2e, browser]     # a queue batch failing only in these is tested once more
//! queue:
//!   parallel: 4                  # batches under test at once (1: no speculation)
//!   batch: 8                     # changes tested together at most
//! ```

use crate::diag::Diagnostic;
use crate::yaml::{self, Node};

/// The settings; [`Default`] when the file is absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewSettings {
    pub approvals: usize,
    /// Job ids whose failures are marked flaky: the merge queue tests a batch again once when
    /// they are its only failures.
    pub flaky_jobs: Vec<String>,
    /// Batches under test at once; `None`: the queue's default.
    pub parallel: Option<usize>,
    /// Changes tested together at most; `None`: the queue's default.
    pub batch: Option<usize>,
}

impl Default for ReviewSettings {
    fn default() -> ReviewSettings {
        ReviewSettings { approvals: 1, flaky_jobs: Vec::new(), parallel: None, batch: None }
    }
}

const KEYS: &[&str] = &["approvals", "flaky-jobs", "queue"];

/// Reads the file; errors come with their place, what was expected and a hint.
pub fn parse(text: &str) -> (Option<ReviewSettings>, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let root = match yaml::parse(text) {
        Ok(Some(root)) => root,
        Ok(None) => return (Some(ReviewSettings::default()), diagnostics),
        Err(diagnostic) => return (None, vec![diagnostic]),
    };
    let mut settings = ReviewSettings::default();
    for (key, value, _) in yaml::entries(&root, "the review settings", KEYS, true, &mut diagnostics) {
        match key {
            "approvals" => match value.as_scalar().and_then(|t| t.trim().parse::<usize>().ok()) {
                Some(n) => settings.approvals = n,
                None => diagnostics.push(
                    Diagnostic::error("wrong-type", value.span, "`approvals` must be a whole number")
                        .expected("a number of people, like 2"),
                ),
            },
            "flaky-jobs" => settings.flaky_jobs = job_names(value, &mut diagnostics),
            "queue" => {
                for (key, value, _) in yaml::entries(value, "`queue`", &["parallel", "batch"], true, &mut diagnostics) {
                    let n =
                        value.as_scalar().and_then(|t| t.trim().parse::<usize>().ok()).filter(|n| (1..=64).contains(n));
                    if n.is_none() {
                        diagnostics.push(
                            Diagnostic::error(
                                "wrong-type",
                                value.span,
                                format!("`queue.{key}` must be a number from 1 to 64"),
                            )
                            .expected("a whole number, like 4"),
                        );
                    }
                    match key {
                        "parallel" => settings.parallel = n,
                        _ => settings.batch = n,
                    }
                }
            }
            _ => {}
        }
    }
    let failed = diagnostics.iter().any(Diagnostic::is_error);
    (if failed { None } else { Some(settings) }, diagnostics)
}

fn job_names(node: &Node, diagnostics: &mut Vec<Diagnostic>) -> Vec<String> {
    let items: Vec<&Node> = match (node.as_seq(), node.as_scalar()) {
        (Some(items), _) => items.iter().collect(),
        (None, Some(_)) => vec![node],
        _ => {
            let message = format!("`flaky-jobs` must be a list of job ids, found {}", node.type_name());
            diagnostics
                .push(Diagnostic::error("wrong-type", node.span, message).expected("a list like [e2e, browser]"));
            return Vec::new();
        }
    };
    items
        .into_iter()
        .filter_map(|item| match item.as_scalar() {
            Some(name) if !name.trim().is_empty() => Some(name.trim().to_string()),
            _ => {
                diagnostics
                    .push(Diagnostic::error("wrong-type", item.span, "a job id must be text").expected("a job id"));
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_settings_and_defaults_the_rest() {
        let (parsed, diagnostics) = parse("approvals: 2 # two\nflaky-jobs: [e2e, browser]\n");
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        assert_eq!(
            parsed,
            Some(ReviewSettings {
                approvals: 2,
                flaky_jobs: vec!["e2e".into(), "browser".into()],
                ..ReviewSettings::default()
            })
        );
        let queue = parse("queue:\n  parallel: 1\n  batch: 3\n").0.unwrap();
        assert_eq!((queue.parallel, queue.batch), (Some(1), Some(3)));
        let (parsed, diagnostics) = parse("queue:\n  parallel: 0\n");
        assert!(parsed.is_none() && diagnostics[0].message.contains("from 1 to 64"), "{diagnostics:?}");
        assert_eq!(parse("").0, Some(ReviewSettings::default()));
        assert_eq!(parse("flaky-jobs: e2e\n").0.unwrap().flaky_jobs, ["e2e"]);
    }

    #[test]
    fn bad_values_are_errors_at_their_place() {
        let (parsed, diagnostics) = parse("approvals: two\n");
        assert!(parsed.is_none());
        assert_eq!((diagnostics[0].span.line, diagnostics[0].span.col), (1, 12), "{diagnostics:?}");
        let (parsed, diagnostics) = parse("aprovals: 2\n");
        assert!(parsed.is_none());
        assert!(diagnostics[0].hint.as_deref().is_some_and(|h| h.contains("approvals")), "{diagnostics:?}");
        assert!(parse("flaky-jobs: {a: 1}\n").0.is_none());
    }
}
