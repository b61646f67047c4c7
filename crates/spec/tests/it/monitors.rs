//! Probes and SLOs: in a service file and in a standalone monitors file, with every mistake
//! named at its place.

use spec::monitors::{self, BodyMatch, Check, Sli};

#[test]
fn a_monitors_file_reads_every_kind_of_probe_and_slo() {
    let source = r#"
probes:
  home:
    http: http://127.0.0.1:8080/health
    interval: 5s
    expect-status: [200, 204]
    expect-body: '/"status": *"ok"/'
    max-latency: 300ms
    failing-after: 3
  db: { tcp: 127.0.0.1:5432 }
  disk: { command: test -w /tmp }
slos:
  home-up:
    objective: 99.5%
    window: 7d
    probe: home
  checkout:
    objective: 0.99
    good: sum(rate(checkout_ok_total[$window]))
    total: sum(rate(checkout_total[$window]))
"#;
    let (monitors, diagnostics) = monitors::parse(source);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let monitors = monitors.unwrap();
    let home = &monitors.probes[0];
    assert_eq!((home.interval_ms, home.failing_after, home.recovered_after), (5_000, 3, 1));
    let Check::Http { expect_status, expect_body, max_latency_ms, .. } = &home.check else { panic!() };
    assert_eq!((expect_status.as_slice(), *max_latency_ms), ([200, 204].as_slice(), Some(300)));
    assert_eq!(expect_body, &Some(BodyMatch::Regex(r#""status": *"ok""#.into())));
    assert!(matches!(monitors.probes[1].check, Check::Tcp { .. }));
    assert_eq!(monitors.slos[0].objective, 0.995);
    assert_eq!(monitors.slos[0].window_ms, 7 * 86_400_000);
    assert_eq!(monitors.slos[0].sli, Sli::Probe("home".into()));
    assert!(matches!(monitors.slos[1].sli, Sli::Ratio { .. }));
}

#[test]
fn mistakes_are_named_with_their_place() {
    let source = "probes:\n  a:\n    http: /x\n    tcp: 1.2.3.4:5\n  b:\n    tcp: nowhere\n    expect-status: 200\n  c:\n    http: https://example.com\nslos:\n  s:\n    objective: 120%\n    probe: homme\n  t:\n    objective: 99%\n";
    let (monitors, diagnostics) = monitors::parse(source);
    assert!(monitors.is_none());
    let found: Vec<(u32, &str)> = diagnostics.iter().map(|d| (d.span.line, d.code)).collect();
    assert!(found.contains(&(2, "probe-kind")), "{diagnostics:#?}");
    assert!(found.contains(&(6, "wrong-type")), "{diagnostics:#?}");
    assert!(found.contains(&(7, "probe-kind")), "{diagnostics:#?}");
    assert!(!found.iter().any(|(line, _)| *line == 9), "https probes are accepted: {diagnostics:#?}");
    assert!(found.contains(&(12, "out-of-range")), "{diagnostics:#?}");
    assert!(found.contains(&(14, "unknown-sli")), "{diagnostics:#?}");
}

#[test]
fn a_service_environment_may_count_its_proxys_requests() {
    let source = "service: shop\nenvironments:\n  production:\n    target: process\n    command: python3 app.py\n    probes:\n      home: { http: /health }\n    slos:\n      availability: { objective: 99.9% }\n      home: { objective: 99%, probe: home }\n";
    let (service, diagnostics) = spec::service::parse(source);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let environment = &service.unwrap().environments[0];
    assert_eq!(environment.probes.len(), 1);
    assert_eq!(environment.slos[0].sli, Sli::Requests);
    assert_eq!(environment.slos[0].window_ms, 30 * 86_400_000);
    assert_eq!(environment.slos[1].sli, Sli::Probe("home".into()));
}

#[test]
fn tls_probes_https_targets_and_json_paths() {
    let source = r#"
probes:
  api:
    http: https://127.0.0.1:8443/status
    tls-verify: false
    min-validity: 7d
    expect-json:
      $.status: ok
      $.checks[1].up: true
      "$['build id']": 42
  certificate:
    tls: example.com:443
    ca: /etc/tandem/ca.pem
  internal:
    tls: 10.0.0.5:8443
    server-name: internal.example
    min-validity: 30d
"#;
    let (monitors, diagnostics) = monitors::parse(source);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let monitors = monitors.unwrap();
    let Check::Http { target, expect_json, tls, .. } = &monitors.probes[0].check else { panic!() };
    assert_eq!(target, "https://127.0.0.1:8443/status");
    assert!(!tls.verify);
    assert_eq!(tls.min_validity_ms, Some(7 * 86_400_000));
    let paths: Vec<(&str, &str)> = expect_json.iter().map(|(p, v)| (p.text.as_str(), v.as_str())).collect();
    assert_eq!(paths, [("$.status", "ok"), ("$.checks[1].up", "true"), ("$['build id']", "42")]);
    let document = serde_json::json!({"status": "ok", "checks": [{"up": false}, {"up": true}], "build id": 42});
    for (path, wanted) in expect_json {
        assert_eq!(monitors::json_text(path.select(&document).unwrap()), *wanted, "{}", path.text);
    }
    let Check::Tls { address, server_name, min_validity_ms, tls } = &monitors.probes[1].check else { panic!() };
    assert_eq!(
        (address.as_str(), server_name, *min_validity_ms),
        ("example.com:443", &None, monitors::DEFAULT_MIN_VALIDITY_MS)
    );
    assert!(tls.verify);
    assert_eq!(tls.ca_file.as_deref(), Some("/etc/tandem/ca.pem"));
    let Check::Tls { server_name, min_validity_ms, .. } = &monitors.probes[2].check else { panic!() };
    assert_eq!((server_name.as_deref(), *min_validity_ms), (Some("internal.example"), 30 * 86_400_000));
}

#[test]
fn tls_and_json_mistakes_are_named_with_their_place() {
    let source = "probes:\n  a:\n    http: http://x/\n    tls-verify: false\n  b:\n    tls: https://example.com\n  c:\n    tls: example.com:443\n    expect-json: { $.a: 1 }\n  d:\n    http: https://x/\n    expect-json:\n      status: ok\n      $.a[: 1\n  e:\n    tcp: db:5432\n    server-name: db\n  f:\n    http: https://x/\n    tls-verify: maybe\n";
    let (monitors, diagnostics) = monitors::parse(source);
    assert!(monitors.is_none());
    let found: Vec<(u32, &str)> = diagnostics.iter().map(|d| (d.span.line, d.code)).collect();
    assert!(found.contains(&(4, "probe-kind")), "tls-verify on an http:// target: {diagnostics:#?}");
    assert!(found.contains(&(6, "wrong-type")), "a URL where HOST:PORT is wanted: {diagnostics:#?}");
    assert!(found.contains(&(9, "probe-kind")), "expect-json on a tls probe: {diagnostics:#?}");
    assert!(found.contains(&(13, "bad-json-path")), "no `$`: {diagnostics:#?}");
    assert!(found.contains(&(14, "bad-json-path")), "an unclosed bracket: {diagnostics:#?}");
    assert!(found.contains(&(17, "probe-kind")), "server-name on a tcp probe: {diagnostics:#?}");
    assert!(found.contains(&(20, "wrong-type")), "{diagnostics:#?}");
}

#[test]
fn json_paths_read_what_they_say() {
    use monitors::{JsonPath, PathStep};
    let path = JsonPath::parse("$.a['b.c'][2].d").unwrap();
    assert_eq!(
        path.steps,
        [PathStep::Key("a".into()), PathStep::Key("b.c".into()), PathStep::Index(2), PathStep::Key("d".into())]
    );
    assert!(JsonPath::parse("$").unwrap().steps.is_empty());
    for bad in ["a.b", "$.", "$..a", "$[x]", "$.a[1", "$ .a"] {
        assert!(JsonPath::parse(bad).is_err(), "{bad}");
    }
    let document = serde_json::json!({"a": [1, 2]});
    assert_eq!(JsonPath::parse("$.a[5]").unwrap().select(&document), None);
    assert_eq!(JsonPath::parse("$.a.b").unwrap().select(&document), None);
}

#[test]
fn json_path_keys_may_hold_any_character() {
    let path = monitors::JsonPath::parse("$['état'].b").unwrap();
    assert_eq!(path.steps, [monitors::PathStep::Key("état".into()), monitors::PathStep::Key("b".into())]);
}
