//! What an incident's timeline says of each event, and the postmortem draft in the SRE
//! Workbook's structure: summary, impact (with the error budget consumed), detection, response,
//! recovery, timeline, the suspect change, contributing causes and lessons to fill in, action items.

use std::fmt::Write;

use api::{Incident, TimelineEntry};

use crate::App;

/// Whether an event of the log belongs to an incident's timeline (its own events aside).
pub fn concerns(event: &store::Event, incident: &Incident, fingerprints: &[&str]) -> bool {
    let p = &event.payload;
    let same_service = |service: Option<&str>| incident.service.is_some() && service == incident.service.as_deref();
    match event.kind.split('.').next().unwrap_or("") {
        "alert" => {
            let labels = crate::alerting::labels_of(p);
            fingerprints.contains(&crate::alerting::fingerprint(&labels).as_str())
                || same_service(labels.get("service").map(String::as_str))
        }
        "probe" | "deployment" => same_service(p["service"].as_str()),
        "notification" => p["alerts"]
            .as_array()
            .is_some_and(|alerts| alerts.iter().any(|a| a.as_str().is_some_and(|f| fingerprints.contains(&f)))),
        _ => false,
    }
}

fn deployment_of(event: &store::Event) -> String {
    let id = event.subject.strip_prefix("deployment/").unwrap_or("?");
    let p = &event.payload;
    format!("deployment {id} of {} ({}) to {}", s(&p["service"]), s(&p["release"]), s(&p["environment"]))
}

fn s(value: &serde_json::Value) -> &str {
    value.as_str().unwrap_or("?")
}

/// One sentence for a timeline entry; `None` for events not worth a line.
pub fn describe(event: &store::Event) -> Option<String> {
    let p = &event.payload;
    let reason = p["reason"].as_str().map(|r| format!(": {r}")).unwrap_or_default();
    let text = match event.kind.as_str() {
        "incident.opened" => {
            format!("incident opened ({}, {}): {}", s(&p["source"]), s(&p["severity"]), s(&p["title"]))
        }
        "incident.alert" => {
            let window = p["labels"]["long_window"].as_str().map(|w| format!(" ({w})")).unwrap_or_default();
            let name = format!("{}{window}", p["labels"]["alertname"].as_str().unwrap_or("an alert"));
            if p["firing"].as_bool().unwrap_or(true) {
                format!("{name} joined the incident")
            } else {
                format!("{name} stopped firing")
            }
        }
        "incident.acknowledged" => format!("acknowledged by {}", s(&p["by"])),
        "incident.resolved" => format!("resolved: {}", s(&p["how"])),
        "incident.note" => format!("note from {}: {}", s(&p["by"]), s(&p["text"])),
        "incident.commander" => format!("{} is the incident commander", s(&p["name"])),
        "incident.rollback_requested" => format!("{} asked to roll back deployment {}", s(&p["by"]), p["deployment"]),
        "incident.postmortem_drafted" => "postmortem draft written".into(),
        "incident.paged" => match (p["user"].as_str(), p["error"].as_str()) {
            (Some(user), None) => format!("paged {user} via {} (level {})", s(&p["to"]), p["level"]),
            (Some(user), Some(error)) => {
                format!("paging {user} via {} failed (level {}): {error}", s(&p["to"]), p["level"])
            }
            (None, error) => format!("nobody to page at level {}: {}", p["level"], error.unwrap_or("?")),
        },
        "incident.postmortem_done" => format!("postmortem done ({})", s(&p["by"])),
        "incident.action_item" => {
            let item = &p["item"];
            let state = if item["done"].as_bool().unwrap_or(false) { "done" } else { "added" };
            format!("action item {} {state}: {} ({})", item["number"], s(&item["title"]), s(&item["owner"]))
        }
        "alert.firing" | "alert.resolved" => {
            let labels = crate::alerting::labels_of(p);
            let name = labels.get("alertname").map_or("alert", String::as_str);
            let severity = labels.get("severity").map(|s| format!(" ({s})")).unwrap_or_default();
            let summary = p["summary"]
                .as_str()
                .or_else(|| p["annotations"]["summary"].as_str())
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            let verb = if event.kind == "alert.firing" { "fired" } else { "resolved" };
            format!("{name}{severity} {verb}{summary}")
        }
        "probe.failing" => format!("probe {} failing: {}", s(&p["probe"]), p["error"].as_str().unwrap_or("no answer")),
        "probe.recovered" => format!("probe {} recovered", s(&p["probe"])),
        "notification.sent" => format!(
            "{} notified ({} alerts, {})",
            s(&p["receiver"]),
            p["alerts"].as_array().map_or(0, Vec::len),
            s(&p["status"])
        ),
        "notification.failed" => {
            format!("notifying {} failed (attempt {}): {}", s(&p["receiver"]), p["attempt"], s(&p["error"]))
        }
        "deployment.requested" => format!("{} requested", deployment_of(event)),
        "deployment.started" => format!("{} started", deployment_of(event)),
        "deployment.promoted" => format!("{} promoted", deployment_of(event)),
        "deployment.rolled_back" => format!("{} rolled back{reason}", deployment_of(event)),
        "deployment.failed" => format!("{} failed{reason}", deployment_of(event)),
        "deployment.rollback_requested" => format!("{} asked to roll back {}", event.actor, deployment_of(event)),
        "deployment.step" => {
            format!("{} at {:.0}% of traffic", deployment_of(event), p["weight"].as_f64().unwrap_or(0.0) * 100.0)
        }
        kind if kind.starts_with("deployment.") => {
            format!("{} {}{reason}", deployment_of(event), kind.trim_start_matches("deployment.").replace('_', " "))
        }
        _ => return None,
    };
    Some(text)
}

/// Per SLO of the incident's service: (name, share of the error budget the incident consumed),
/// counted from the first suspect's deployment (or the opening) to the resolution (or now).
pub fn budget_consumed(app: &App, incident: &Incident) -> Vec<(String, f64)> {
    let ms = |t: &str| t.parse::<jiff::Timestamp>().map(|t| t.as_millisecond()).ok();
    let Some(opened) = ms(&incident.opened_at) else { return Vec::new() };
    let start = incident.suspects.iter().filter_map(|s| ms(&s.created)).min().unwrap_or(opened).min(opened);
    let end = incident.resolved_at.as_deref().and_then(ms).unwrap_or_else(|| jiff::Timestamp::now().as_millisecond());
    let span = ((end - start).max(1000) as u64).div_ceil(1000) * 1000;
    let slos = app.monitor.slos.lock().unwrap_or_else(|e| e.into_inner()).clone();
    slos.iter()
        .filter(|slo| incident.service.is_some() && slo.scope.service == incident.service)
        .filter(|slo| incident.environment.is_none() || slo.scope.environment == incident.environment)
        .filter_map(|slo| {
            let sli = &slo.spec.sli;
            let (bad, _) = crate::monitor::slos::counts(&app.tsdb, &slo.scope, sli, span, end)?;
            let (_, total) = crate::monitor::slos::counts(&app.tsdb, &slo.scope, sli, slo.spec.window_ms, end)?;
            let allowed = (1.0 - slo.spec.objective) * total;
            (allowed > 0.0).then(|| (slo.key(), bad / allowed))
        })
        .collect()
}

fn duration(seconds: Option<f64>) -> String {
    match seconds {
        None => "—".into(),
        Some(s) if s < 120.0 => format!("{s:.0} s"),
        Some(s) if s < 7200.0 => format!("{:.1} min", s / 60.0),
        Some(s) => format!("{:.1} h", s / 3600.0),
    }
}

/// The draft, in Markdown.
pub fn draft(incident: &Incident, timeline: &[TimelineEntry], commits: &[String], budget: &[(String, f64)]) -> String {
    let mut md = String::new();
    let scope = match (&incident.service, &incident.environment) {
        (Some(s), Some(e)) => format!("{s} in {e}"),
        (Some(s), None) => s.clone(),
        _ => "no single service".into(),
    };
    let _ = writeln!(md, "# Postmortem: incident {} — {}\n", incident.id, incident.title);
    let _ = writeln!(
        md,
        "Status: {} · Severity: {} · Commander: {} · Opened: {}\n",
        if incident.state == api::IncidentState::PostmortemDone { "done" } else { "draft" },
        incident.severity,
        incident.commander.as_deref().unwrap_or("(none named)"),
        incident.opened_at
    );
    let _ = writeln!(md, "## Summary\n");
    let suspect = incident.suspects.first();
    let _ = writeln!(
        md,
        "{scope} was affected for {}. {}{}\n",
        duration(incident.mttr_seconds),
        match suspect {
            Some(s) => format!(
                "The suspect change is deployment {} (release {}, commit {}). ",
                s.deployment,
                s.release,
                short(&s.sha)
            ),
            None => "No deployment started within the look-back window. ".into(),
        },
        incident
            .resolution
            .as_deref()
            .map(|r| format!("It ended when {r}."))
            .unwrap_or_else(|| "It is not resolved yet.".into())
    );
    let _ = writeln!(md, "## Impact\n");
    let _ = writeln!(
        md,
        "- Duration: {} (opened {} → resolved {})",
        duration(incident.mttr_seconds),
        incident.opened_at,
        incident.resolved_at.as_deref().unwrap_or("—")
    );
    if budget.is_empty() {
        let _ = writeln!(md, "- Error budget consumed: no SLO of {scope} has data for this period");
    }
    for (slo, share) in budget {
        let _ = writeln!(md, "- Error budget consumed: {:.1}% of SLO `{slo}`'s budget", share * 100.0);
    }
    let _ = writeln!(md, "- Users affected: _to fill in_\n");
    let _ = writeln!(md, "## Detection\n");
    match incident.alerts.first() {
        Some(alert) => {
            let name = alert.labels.get("alertname").map_or("an alert", String::as_str);
            let _ = writeln!(
                md,
                "- Detected by {name} ({}) at {}",
                alert.labels.get("severity").map_or("?", String::as_str),
                alert.since
            );
        }
        None => {
            let _ = writeln!(md, "- Opened by {} ({})", incident.opened_by, incident.source);
        }
    }
    let _ = writeln!(md, "- Time to acknowledge: {}\n", duration(incident.mtta_seconds));
    let _ = writeln!(md, "## Response\n");
    let _ = writeln!(
        md,
        "- Acknowledged by: {}",
        incident.acknowledged_by.as_deref().unwrap_or("nobody (resolved before an acknowledgement)")
    );
    let notes = timeline.iter().filter(|e| e.kind == "incident.note").count();
    let _ = writeln!(md, "- Notes from responders: {notes}");
    let _ = writeln!(
        md,
        "- Resolution: {} (by {})",
        incident.resolution.as_deref().unwrap_or("—"),
        incident.resolved_by.as_deref().unwrap_or("—")
    );
    let _ = writeln!(md, "- Time to restore: {}\n", duration(incident.mttr_seconds));
    let _ = writeln!(md, "## Timeline\n");
    let _ = writeln!(md, "| time (UTC) | what happened | who |\n|---|---|---|");
    for entry in timeline {
        let time = entry.time.get(..19).unwrap_or(&entry.time).replace('T', " ");
        let _ = writeln!(md, "| {time} | {} | {} |", entry.text.replace('|', "\\|"), entry.actor);
    }
    let _ = writeln!(md, "\n## Suspect change\n");
    if incident.suspects.is_empty() {
        let _ = writeln!(md, "None: no deployment of {scope} started within the look-back window.");
    }
    for s in &incident.suspects {
        let _ = writeln!(
            md,
            "- deployment {} — {} to {}, release {} (commit {}), {}",
            s.deployment,
            s.service,
            s.environment,
            s.release,
            short(&s.sha),
            s.status.replace('_', " ")
        );
    }
    if !commits.is_empty() {
        let _ = writeln!(md, "\nCommits in the suspect release:\n");
        for commit in commits {
            let _ = writeln!(md, "- `{}`", commit.replace('`', "'"));
        }
    }
    let _ = writeln!(md, "\n## Contributing causes\n\n- _to fill in: what made this possible, not who_\n");
    let _ = writeln!(
        md,
        "## Lessons learned\n\n- What went well: _to fill in_\n- What went wrong: _to fill in_\n- Where we got lucky: _to fill in_\n"
    );
    let _ = writeln!(md, "## Action items\n");
    if incident.action_items.is_empty() {
        let _ = writeln!(
            md,
            "None yet: `tandem incident action {} add \"TITLE\" --owner NAME --due YYYY-MM-DD`.",
            incident.id
        );
    } else {
        let _ = writeln!(md, "| # | action | owner | due | state |\n|---|---|---|---|---|");
        for item in &incident.action_items {
            let state = if item.done { "done" } else { "open" };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {state} |",
                item.number,
                item.title.replace('|', "\\|"),
                item.owner,
                item.due.as_deref().unwrap_or("—")
            );
        }
    }
    md
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}
