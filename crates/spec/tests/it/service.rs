//! The service file: a complete one reads back as written; a broken one gets every problem at
//! once, each with its place and a hint.

use std::path::Path;

use spec::service::{self, Strategy, Target};

fn read(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/service").join(name)).unwrap()
}

#[test]
fn a_complete_service_file_reads_back() {
    let (parsed, diagnostics) = service::parse(&read("good.yml"));
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    let service = parsed.unwrap();
    assert_eq!(service.name, "sample-service");
    let staging = &service.environments[0];
    assert_eq!(staging.target, Target::Process { command: "python3 service.py --port $PORT".into() });
    assert_eq!(
        (staging.instances, staging.listen.as_deref(), staging.health.interval_ms),
        (2, Some("127.0.0.1:8090"), 500)
    );
    let live = staging.health.liveness.as_deref().expect("a liveness block");
    assert_eq!(
        (live.path.as_str(), live.threshold, live.interval_ms),
        ("/live", 5, 500),
        "liveness overrides what it names"
    );
    assert_eq!(staging.strategy, Strategy::Canary { steps: vec![10.0, 50.0, 100.0], pause_ms: 30_000 });
    let production = &service.environments[1];
    assert_eq!(production.strategy, Strategy::BlueGreen { preview_ms: 60_000, keep_old_ms: 600_000 });
    assert_eq!((production.port, production.health.probe.clone()), (8000, service::Probe::Tcp));
    assert_eq!(production.health.ready_within_ms, 90_000);
    assert_eq!(production.sticky.as_ref().and_then(|s| s.cookie.as_deref()), Some("session"));
    assert!((production.gates.objective - 0.995).abs() < 1e-9);
    assert_eq!(staging.port, 8080, "the default container port");
    assert!(production.gates.approval);
    assert_eq!(production.gates.min_error_budget, Some(0.2));
    assert_eq!(production.gates.freezes[0].duration_ms, 64 * 3_600_000);
}

#[test]
fn every_problem_is_reported_with_a_place() {
    let source = read("bad.yml");
    let (_, diagnostics) = service::parse(&source);
    let text = diagnostics.iter().map(|d| d.render("service.yml", &source)).collect::<Vec<_>>().join("\n");
    for expected in [
        "unknown target `proces`",
        "did you mean `process`?",
        "unknown key `instance` in environment `staging`",
        "did you mean `instances`?",
        "`listen` must be an address such as 127.0.0.1:8090, found `localhost`",
        "`health.path` must start with `/`",
        "`health.interval` must be a duration, found `soon`",
        "unknown key `ready-within` in `health.liveness`",
        "`health.liveness.threshold` must be a number from 1 to 100, found `0`",
        "canary steps must increase",
        "`analysis.alpha` must be a number from 0.0001 to 0.5, found `2`",
        "a `process` target needs a `command`",
        "`max-surge` and `max-unavailable` cannot both be 0",
        "cron `0 18 * *` has 4 fields",
        "cron `61 18 * * *` is not valid",
        "unknown time zone `Mars/Olympus`",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    assert!(text.contains("service.yml:4:13"), "the unknown target points at its value:\n{text}");
}

#[test]
fn durations() {
    assert_eq!(service::parse_duration("500ms"), Some(500));
    assert_eq!(service::parse_duration("1.5s"), Some(1_500));
    assert_eq!(service::parse_duration("2h"), Some(7_200_000));
    assert_eq!(service::parse_duration("soon"), None);
    assert_eq!(service::parse_duration("10"), None);
}

#[test]
fn a_freeze_window_covers_its_duration_in_its_time_zone() {
    use spec::service::Freeze;
    // Fridays from 18:00 Berlin time, for 64 hours: until Monday 10:00.
    let freeze = Freeze { cron: "0 18 * * 5".into(), duration_ms: 64 * 3_600_000, timezone: "Europe/Berlin".into() };
    let at = |text: &str| text.parse::<jiff::Timestamp>().unwrap();
    // 2026-11-27 is a Friday; Berlin is UTC+1 in November.
    assert_eq!(freeze.active_at(at("2026-11-27T16:59:00Z")).unwrap(), None);
    assert_eq!(freeze.active_at(at("2026-11-27T17:00:00Z")).unwrap(), Some(at("2026-11-30T09:00:00Z")));
    assert_eq!(freeze.active_at(at("2026-11-29T23:00:00Z")).unwrap(), Some(at("2026-11-30T09:00:00Z")));
    assert_eq!(freeze.active_at(at("2026-11-30T09:00:00Z")).unwrap(), None);
    let wrong = Freeze { timezone: "Nowhere/Else".into(), ..freeze };
    assert!(wrong.active_at(at("2026-11-27T17:00:00Z")).unwrap_err().contains("Nowhere/Else"));
}

#[test]
fn a_step_waits_for_traffic_unless_a_deadline_says_otherwise() {
    let file = |analysis: &str| {
        format!(
            "service: app\nenvironments:\n  staging:\n    target: process\n    command: ./run\n    analysis: {analysis}\n"
        )
    };
    let (parsed, diagnostics) = service::parse(&file("{ alpha: 0.01 }"));
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    let analysis = &parsed.unwrap().environments[0].analysis;
    assert_eq!((analysis.deadline_ms, analysis.on_deadline), (None, service::OnDeadline::Rollback), "no deadline");

    let (parsed, diagnostics) = service::parse(&file("{ deadline: 10m, on-deadline: promote }"));
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    let analysis = &parsed.unwrap().environments[0].analysis;
    assert_eq!((analysis.deadline_ms, analysis.on_deadline), (Some(600_000), service::OnDeadline::Promote));

    let source = file("{ deadline: later, on-deadline: maybe }");
    let (_, diagnostics) = service::parse(&source);
    let text = diagnostics.iter().map(|d| d.render("service.yml", &source)).collect::<Vec<_>>().join("\n");
    assert_eq!(diagnostics.len(), 2, "{text}");
    assert!(text.contains("`analysis.deadline` must be a duration, found `later`"), "{text}");
    assert!(text.contains("`analysis.on-deadline` must be `rollback` or `promote`, found `maybe`"), "{text}");
    assert!(text.contains("service.yml:6:"), "{text}");
}
