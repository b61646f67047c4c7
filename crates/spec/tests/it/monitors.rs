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
    assert!(found.contains(&(9, "unsupported")), "{diagnostics:#?}");
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
