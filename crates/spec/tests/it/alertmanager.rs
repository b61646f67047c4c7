//! Alertmanager configuration: the route tree with inherited timers, matchers in all their
//! spellings, receivers, and what is not supported named at its place.

use spec::alertmanager::{self, MatchOp, parse_matcher};

#[test]
fn routes_inherit_their_parents_settings_and_matchers_read_every_spelling() {
    let source = "global: { resolve_timeout: 5m }\nroute:\n  receiver: default\n  group_by: [alertname, cluster]\n  group_wait: 10s\n  repeat_interval: 1h\n  routes:\n    - match: { team: db }\n      receiver: db\n      group_interval: 2m\n      continue: true\n    - matchers: ['severity=~\"page|critical\"', 'env!=\"staging\"']\n      receiver: pager\nreceivers:\n  - name: default\n    webhook_configs: [{ url: 'http://127.0.0.1:1/a' }]\n  - name: db\n    email_configs: [{ to: db@example.com, from: am@example.com, smarthost: 'mail:25' }]\n    pagerduty_configs: [{ routing_key: x }]\n  - name: pager\n    webhook_configs: [{ url: 'http://127.0.0.1:1/p', send_resolved: false, max_alerts: 10 }]\n";
    let (config, diagnostics) = alertmanager::parse(source);
    let config = config.unwrap_or_else(|| panic!("{diagnostics:#?}"));
    let codes: Vec<(u32, &str)> = diagnostics.iter().map(|d| (d.span.line, d.code)).collect();
    assert_eq!(codes, [(19, "unsupported")], "{diagnostics:#?}");
    assert_eq!(config.global.resolve_timeout_ms, 300_000);
    assert_eq!(config.receivers[1].emails[0].smarthost, "mail:25");
    assert!(config.receivers[1].emails[0].require_tls, "Alertmanager's default");
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

#[test]
fn receivers_take_globals_time_intervals_are_checked_and_templates_are_named() {
    let source = "global:\n  smtp_from: am@example.org\n  smtp_smarthost: mail.example.org:587\n  slack_api_url: https://hooks.example.org/x\n  http_config: {}\nroute:\n  receiver: ops\n  routes:\n    - receiver: ops\n      mute_time_intervals: [weekends]\n      active_time_intervals: [office]\ntime_intervals:\n  - name: weekends\n    time_intervals: [{ weekdays: [saturday, sunday] }]\n  - name: office\n    time_intervals: [{ times: [{start_time: '09:00', end_time: '17:30'}], location: Europe/Paris }]\nreceivers:\n  - name: ops\n    email_configs: [{ to: ops@example.org }]\n    slack_configs: [{ channel: '#ops', text: '{{ .CommonAnnotations.summary }}' }]\n";
    let (config, diagnostics) = alertmanager::parse(source);
    let config = config.unwrap_or_else(|| panic!("{diagnostics:#?}"));
    let codes: Vec<(u32, &str)> = diagnostics.iter().map(|d| (d.span.line, d.code)).collect();
    assert_eq!(
        codes,
        [(5, "unsupported"), (20, "unsupported")],
        "global.http_config and the Slack template: {diagnostics:#?}"
    );
    let ops = &config.receivers[0];
    assert_eq!(
        (ops.emails[0].from.as_str(), ops.emails[0].smarthost.as_str()),
        ("am@example.org", "mail.example.org:587")
    );
    assert_eq!(ops.slacks[0].api_url, "https://hooks.example.org/x");
    assert_eq!(ops.slacks[0].text, None, "a template is not sent as it is");
    let child = &config.route.routes[0];
    assert_eq!((child.mute_time_intervals.len(), child.active_time_intervals.len()), (1, 1));
    // Tuesday 2026-12-01 10:00 in Paris is 09:00 UTC: inside office hours, not a weekend.
    let tuesday = "2026-12-01T09:00:00Z".parse::<jiff::Timestamp>().unwrap().as_millisecond();
    let saturday = "2026-12-05T09:00:00Z".parse::<jiff::Timestamp>().unwrap().as_millisecond();
    let night = "2026-12-01T20:00:00Z".parse::<jiff::Timestamp>().unwrap().as_millisecond();
    assert!(config.may_notify(child, tuesday));
    assert!(!config.may_notify(child, saturday), "muted at weekends");
    assert!(!config.may_notify(child, night), "outside its active interval");
    assert!(config.may_notify(&config.route, saturday), "mute intervals are not inherited");
}

#[test]
fn bad_receivers_and_intervals_are_refused_at_their_lines() {
    let source = "route:\n  receiver: ops\n  mute_time_intervals: [x]\n  routes:\n    - receiver: ops\n      mute_time_intervals: [nowhere]\ntime_intervals:\n  - name: x\n    time_intervals: [{ weekdays: [funday], times: [{start_time: '18:00', end_time: '09:00'}], location: Mars/Olympus }]\nreceivers:\n  - name: ops\n    email_configs: [{ to: a@b.c }]\n    slack_configs: [{ channel: '#x' }]\n  - name: ops\n";
    let (config, diagnostics) = alertmanager::parse(source);
    assert!(config.is_none());
    let mut codes: Vec<(u32, &str)> = diagnostics.iter().map(|d| (d.span.line, d.code)).collect();
    codes.sort();
    assert_eq!(
        codes,
        [
            (3, "bad-value"),
            (6, "unknown-interval"),
            (9, "bad-value"),
            (9, "bad-value"),
            (9, "bad-value"),
            (12, "missing-key"),
            (13, "missing-key"),
            (14, "duplicate-receiver"),
        ],
        "{diagnostics:#?}"
    );
}
