//! Prometheus rule files: the corpus loads (the invalid fixture is refused at its place), and the
//! parts of a rule are read as Prometheus reads them.

use spec::rules::{self, RuleKind};

#[test]
fn every_rule_file_of_the_corpus_loads_and_the_invalid_one_is_refused_at_its_place() {
    let Some(dir) = crate::corpus_dir("prometheus") else { return };
    let mut loaded = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("rules__") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let (file, diagnostics) = rules::parse(&text);
        if name.contains("invalid_rules") {
            assert!(file.is_none(), "{name}");
            assert_eq!((diagnostics[0].code, diagnostics[0].span.line), ("unknown-key", 6), "{diagnostics:#?}");
            continue;
        }
        if text.contains("rule_files:") {
            assert_eq!(diagnostics[0].code, "not-rules", "{name}");
            continue;
        }
        let errors: Vec<_> = diagnostics.iter().filter(|d| d.is_error()).collect();
        assert!(errors.is_empty(), "{name}: {errors:#?}");
        assert!(!file.unwrap().groups.is_empty(), "{name}");
        loaded += 1;
    }
    assert!(loaded >= 10, "{loaded} rule files loaded");
}

#[test]
fn alerting_and_recording_rules_are_read_with_their_durations() {
    let source = "groups:\n  - name: api\n    interval: 30s\n    rules:\n      - record: job:errors:rate5m\n        expr: sum by (job) (rate(errors_total[5m]))\n      - alert: HighErrors\n        expr: job:errors:rate5m > 1\n        for: 1h30m\n        keep_firing_for: 5m\n        labels: { severity: page }\n        annotations:\n          summary: '{{ $labels.job }} fails {{ $value }} times a second'\n";
    let (file, diagnostics) = rules::parse(source);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let group = &file.unwrap().groups[0];
    assert_eq!(group.interval_ms, Some(30_000));
    assert_eq!(group.rules[0].kind, RuleKind::Record("job:errors:rate5m".into()));
    let RuleKind::Alert { name, for_ms, keep_firing_for_ms, annotations } = &group.rules[1].kind else { panic!() };
    assert_eq!((name.as_str(), *for_ms, *keep_firing_for_ms), ("HighErrors", 5_400_000, 300_000));
    assert!(annotations["summary"].contains("$labels.job"));
    assert_eq!(group.rules[1].labels["severity"], "page");
    assert_eq!(group.rules[1].expr_span.line, 8);
}
