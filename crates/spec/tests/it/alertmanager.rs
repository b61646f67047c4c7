//! Alertmanager configuration: the route tree with inherited timers, matchers in all their
//! spellings, receivers, and what is not supported named at its place.

use spec::alertmanager::{self, MatchOp, parse_matcher};

#[test]
fn routes_inherit_their_parents_settings_and_matchers_read_every_spelling() {
    let source = "global: { resolve_timeout: 5m }\nroute:\n  receiver: default\n  group_by: [alertname, cluster]\n  group_wait: 10s\n  repeat_interval: 1h\n  routes:\n    - match: { team: db }\n      receiver: db\n      group_interval: 2m\n      continue: true\n    - matchers: ['severity=~\"page|critical\"', 'env!=\"staging\"']\n      receiver: pager\nreceivers:\n  - name: default\n    webhook_configs: [{ url: 'http://127.0.0.1:1/a' }]\n  - name: db\n    email_configs: [{ to: db@example.com }]\n  - name: pager\n    webhook_configs: [{ url: 'http://127.0.0.1:1/p', send_resolved: false, max_alerts: 10 }]\n";
    let (config, diagnostics) = alertmanager::parse(source);
    let config = config.unwrap_or_else(|| panic!("{diagnostics:#?}"));
    let codes: Vec<(u32, &str)> = diagnostics.iter().map(|d| (d.span.line, d.code)).collect();
    assert_eq!(codes, [(1, "unsupported"), (18, "unsupported")], "{diagnostics:#?}");
    let db = &config.route.routes[0];
    assert_eq!((db.group_wait_ms, db.group_interval_ms, db.repeat_interval_ms), (10_000, 120_000, 3_600_000));
    assert_eq!(db.group_by, ["alertname", "cluster"]);
    assert!(db.continue_matching);
    let pager = &config.route.routes[1];
    assert_eq!(pager.matchers.iter().map(|m| m.op).collect::<Vec<_>>(), [MatchOp::Regex, MatchOp::NotEqual]);
    assert!(pager.matchers[0].matches("critical") && !pager.matchers[0].matches("critical-ish"));
    assert_eq!(config.receivers[2].webhooks[0].max_alerts, 10);
    assert!(!config.receivers[2].webhooks[0].send_resolved);
    assert_eq!(parse_matcher("a!~\"x.*\"").map(|m| (m.op, m.value)), Some((MatchOp::NotRegex, "x.*".into())));
    assert!(parse_matcher("=nothing").is_none());
}

#[test]
fn a_route_to_an_unknown_receiver_is_refused_at_its_line() {
    let (config, diagnostics) = alertmanager::parse("route:\n  receiver: nobody\nreceivers:\n  - name: somebody\n");
    assert!(config.is_none());
    assert_eq!((diagnostics[0].code, diagnostics[0].span.line), ("unknown-receiver", 2), "{diagnostics:#?}");
}
