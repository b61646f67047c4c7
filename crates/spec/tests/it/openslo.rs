//! OpenSLO: every corpus file loads; SLOs with Prometheus sources become evaluable SLOs, the
//! rest load with a warning that names why, at its place.

use spec::monitors::Sli;

#[test]
fn the_openslo_corpus_loads_and_names_what_is_not_evaluated() {
    let Some(dir) = crate::corpus_dir("openslo") else { return };
    let (mut slos, mut evaluable, mut files) = (0, 0, 0);
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let (found, diagnostics) = spec::openslo::parse(&text);
        let errors: Vec<_> = diagnostics.iter().filter(|d| d.is_error()).collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        for slo in &found {
            slos += 1;
            match &slo.slo {
                Some(spec) => {
                    evaluable += 1;
                    assert!(spec.objective > 0.0 && spec.objective < 1.0);
                    let Sli::Ratio { good, total } = &spec.sli else { panic!("{spec:?}") };
                    assert!(good.contains("$window") && total.contains("$window"), "{good} / {total}");
                }
                None => assert!(
                    diagnostics.iter().any(|d| d.code == "openslo-unsupported" && d.message.contains(&slo.name)),
                    "{}: {} is not evaluated and no warning says why: {diagnostics:#?}",
                    path.display(),
                    slo.name
                ),
            }
        }
        files += 1;
    }
    assert_eq!(files, 15);
    assert!(slos >= 7 && evaluable >= 3, "{slos} SLOs, {evaluable} evaluable");
}

#[test]
fn a_prometheus_ratio_slo_becomes_counts_over_the_window() {
    let source = "apiVersion: openslo/v1\nkind: SLO\nmetadata: { name: checkout }\nspec:\n  service: shop\n  indicator:\n    metadata: { name: ok }\n    spec:\n      ratioMetric:\n        counter: true\n        bad: { metricSource: { type: Prometheus, spec: { query: 'sum(errors_total)' } } }\n        total: { metricSource: { type: Prometheus, spec: { query: 'sum(requests_total)' } } }\n  timeWindow: [{ duration: 28d, isRolling: true }]\n  budgetingMethod: Occurrences\n  objectives: [{ target: 0.995 }]\n";
    let (found, diagnostics) = spec::openslo::parse(source);
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    let slo = found[0].slo.clone().unwrap();
    assert_eq!((slo.objective, slo.window_ms, found[0].service.as_deref()), (0.995, 28 * 86_400_000, Some("shop")));
    assert_eq!(
        slo.sli,
        Sli::Ratio {
            good:
                "(sum(increase((sum(requests_total))[$window:1m]))) - (sum(increase((sum(errors_total))[$window:1m])))"
                    .into(),
            total: "sum(increase((sum(requests_total))[$window:1m]))".into(),
        }
    );
}
