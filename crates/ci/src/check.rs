//! Checks that need the whole workflow: the `needs` graph and static matrix sizes.

use spec::diag::{Diagnostic, did_you_mean};
use spec::workflow::{self, Workflow};

use crate::matrix;
use crate::plan::{Graph, GraphError};

/// The job graph of a workflow, with diagnostics for unknown needs and cycles.
pub fn graph(workflow: &Workflow) -> (Graph, Vec<Diagnostic>) {
    let (graph, errors) =
        Graph::build(workflow.jobs.iter().map(|j| (j.id.as_str(), j.needs.iter().map(|(n, _)| n.as_str()).collect())));
    let mut diagnostics = Vec::new();
    for error in errors {
        if let GraphError::UnknownNeed { job, missing } = error {
            let job = &workflow.jobs[job];
            let span = job.needs.iter().find(|(n, _)| *n == missing).map_or(job.span, |(_, s)| *s);
            let hint = did_you_mean(&missing, workflow.jobs.iter().map(|j| j.id.as_str()))
                .map(|s| format!("did you mean `{s}`?"))
                .unwrap_or_else(|| format!("jobs in this file: {}", graph.ids.join(", ")));
            diagnostics.push(
                Diagnostic::error(
                    "unknown-need",
                    span,
                    format!("job `{}` needs `{missing}`, which is not a job in this workflow", job.id),
                )
                .hint(hint),
            );
        }
    }
    if let Err(GraphError::Cycle(cycle)) = graph.topological_order() {
        let first = &workflow.jobs[cycle[0]];
        let span = first.needs.first().map_or(first.span, |(_, s)| *s);
        diagnostics.push(
            Diagnostic::error(
                "needs-cycle",
                span,
                format!("jobs need each other in a cycle: {}", graph.describe_cycle(&cycle)),
            )
            .hint("remove one of these `needs` so the jobs can start"),
        );
    }
    (graph, diagnostics)
}

/// All whole-workflow checks.
pub fn check(workflow: &Workflow) -> Vec<Diagnostic> {
    let (_, mut diagnostics) = graph(workflow);
    for job in &workflow.jobs {
        let Some(node) = job.strategy.as_ref().and_then(|s| s.matrix.as_ref()) else { continue };
        if contains_expression(node) {
            continue;
        }
        let value = node.to_value();
        if let Err(error) = matrix::expand(&value, &workflow::matrix_key_order(node)) {
            let hint = match error {
                matrix::MatrixError::TooLarge(_) => "split the job, or use `exclude` to drop combinations",
                _ => "see the `strategy.matrix` syntax in the documentation",
            };
            diagnostics
                .push(Diagnostic::error("invalid-matrix", node.span, format!("job `{}`: {error}", job.id)).hint(hint));
        }
    }
    diagnostics
}

fn contains_expression(node: &spec::yaml::Node) -> bool {
    use spec::yaml::NodeKind;
    match &node.kind {
        NodeKind::Scalar { text, .. } => text.contains("${{"),
        NodeKind::Seq(items) => items.iter().any(contains_expression),
        NodeKind::Map(entries) => entries.iter().any(|(_, v)| contains_expression(v)),
    }
}

/// Parses and fully checks a workflow file: syntax, types, expressions, graph and matrices.
pub fn validate(source: &str) -> (Option<Workflow>, Vec<Diagnostic>) {
    let (workflow, mut diagnostics) = workflow::parse(source);
    if let Some(workflow) = &workflow {
        diagnostics.extend(check(workflow));
        diagnostics.sort_by_key(|d| (d.span.line, d.span.col));
    }
    (workflow, diagnostics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(source: &str) -> Vec<(&'static str, u32, String)> {
        validate(source).1.into_iter().map(|d| (d.code, d.span.line, d.message)).collect()
    }

    #[test]
    fn reports_cycles_and_unknown_needs_together() {
        let source = "on: push\njobs:\n  a:\n    needs: b\n    runs-on: x\n    steps: [{run: 'true'}]\n  b:\n    needs: [a, c]\n    runs-on: x\n    steps: [{run: 'true'}]\n";
        let got = codes(source);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!((got[0].0, got[0].1), ("needs-cycle", 4));
        assert!(got[0].2.contains("a -> b -> a"), "{}", got[0].2);
        assert_eq!((got[1].0, got[1].1), ("unknown-need", 8));
    }

    #[test]
    fn refuses_huge_matrices() {
        let source = "on: push\njobs:\n  a:\n    runs-on: x\n    strategy:\n      matrix:\n        a: [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]\n        b: [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]\n    steps: [{run: 'true'}]\n";
        let got = codes(source);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, "invalid-matrix");
        assert!(got[0].2.contains("272 jobs"), "{}", got[0].2);
    }
}
