//! Probes, SLOs and alerts as the monitor sees them now: `/api/v1/probes`, `/api/v1/slos`, and
//! `/api/v1/alerts` in Prometheus's shape (SLO burn-rate and data-absent alerts, firing).

#[allow(unused_imports)]
use super::*;
use crate::monitor::slos::human;
use spec::monitors::{Check, Sli};

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_default()
}

#[utoipa::path(get, path = "/api/v1/probes", tag = "monitoring", summary = "Every probe with its state and last result",
    security(("token" = [])), responses((status = 200, body = Vec<api::Probe>), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn probes(State(app): State<Arc<App>>, _caller: Caller) -> Json<Vec<api::Probe>> {
    Json(probe_views(&app))
}

pub(crate) fn probe_views(app: &App) -> Vec<api::Probe> {
    let probes = app.monitor.probes.lock().unwrap_or_else(|e| e.into_inner());
    let mut list: Vec<api::Probe> = probes
        .iter()
        .map(|(key, p)| {
            let (kind, target) = match &p.spec.check {
                Check::Http { target, .. } => match (&p.base, target.starts_with('/')) {
                    (Some(base), true) => ("http", format!("http://{base}{target}")),
                    _ => ("http", target.clone()),
                },
                Check::Tcp { address } => ("tcp", address.clone()),
                Check::Tls { address, .. } => ("tls", address.clone()),
                Check::Command { command } => ("command", command.clone()),
                Check::Heartbeat { period_ms } => ("heartbeat", format!("a ping every {}", human(*period_ms))),
            };
            let state = match (&p.last, p.failing) {
                (None, _) => "unknown",
                (_, true) => "failing",
                _ => "up",
            };
            api::Probe {
                key: key.clone(),
                name: p.spec.name.clone(),
                service: p.scope.service.clone(),
                environment: p.scope.environment.clone(),
                kind: kind.into(),
                target,
                interval_seconds: p.spec.interval_ms as f64 / 1000.0,
                state: state.into(),
                checks: p.checks,
                failures: p.failures,
                last: p.last.as_ref().map(|o| api::ProbeResult {
                    ok: o.ok,
                    seconds: o.seconds,
                    status: o.status,
                    error: o.error.clone(),
                    at: rfc3339(o.at),
                    certificate_expires: o.cert_expiry.map(|s| rfc3339(s * 1000)),
                }),
            }
        })
        .collect();
    list.sort_by(|a, b| a.key.cmp(&b.key));
    list
}

pub(crate) fn slo_views(app: &App) -> Vec<api::Slo> {
    let slos = app.monitor.slos.lock().unwrap_or_else(|e| e.into_inner());
    slos.iter()
        .map(|s| api::Slo {
            key: s.key(),
            name: s.spec.name.clone(),
            service: s.scope.service.clone(),
            environment: s.scope.environment.clone(),
            objective: s.spec.objective,
            window: human(s.spec.window_ms),
            sli: match &s.spec.sli {
                Sli::Requests => "requests through the proxy (errors: 5xx and no answer)".into(),
                Sli::Probe(name) => format!("checks of probe `{name}`"),
                Sli::Ratio { good, total } => format!("good: {good}; total: {total}"),
            },
            figures: s.status.as_ref().map(|f| api::SloFigures {
                at: rfc3339(f.at),
                sli: f.sli,
                events: f.events,
                budget_remaining: f.budget_remaining,
                burn: f.burn.iter().map(|(w, rate)| api::Burn { window: human(*w), rate: *rate }).collect(),
                exhaustion_seconds: f.exhaustion_seconds,
            }),
            alerts: s
                .alerts
                .iter()
                .map(|a| api::SloAlert {
                    name: a.name.clone(),
                    severity: a.severity.into(),
                    // The live page has no windows: it judges each second as it ends.
                    long_window: if a.name == crate::monitor::slos::LIVE_ALERT {
                        "live".into()
                    } else {
                        human(a.long_ms)
                    },
                    short_window: if a.name == crate::monitor::slos::LIVE_ALERT {
                        "live".into()
                    } else {
                        human(a.short_ms)
                    },
                    factor: a.factor,
                    firing_since: a.firing_since.map(rfc3339),
                    value: a.value,
                    summary: a.summary.clone(),
                })
                .collect(),
        })
        .collect()
}

#[utoipa::path(get, path = "/api/v1/slos", tag = "monitoring",
    summary = "Every SLO: SLI, error budget left, burn rates, time to exhaustion, alerts",
    security(("token" = [])), responses((status = 200, body = Vec<api::Slo>), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn slos(State(app): State<Arc<App>>, _caller: Caller) -> Json<Vec<api::Slo>> {
    let mut list = slo_views(&app);
    list.sort_by(|a, b| a.key.cmp(&b.key));
    Json(list)
}

#[utoipa::path(get, path = "/api/v1/alerts", tag = "monitoring",
    summary = "Alerts pending and firing (SLO burn rates, absent SLIs, alerting rules), in Prometheus's shape (`data.alerts`)",
    security(("token" = [])), responses((status = 200, body = api::Answer<api::AlertList>)))]
pub(super) async fn alerts(State(app): State<Arc<App>>, _caller: Caller) -> Json<api::Answer<api::AlertList>> {
    let mut alerts = Vec::new();
    for slo in slo_views(&app) {
        for alert in slo.alerts.iter().filter(|a| a.firing_since.is_some()) {
            let mut labels: std::collections::BTreeMap<String, String> = [
                ("alertname", alert.name.clone()),
                ("slo", slo.name.clone()),
                ("severity", alert.severity.clone()),
                ("long_window", alert.long_window.clone()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            if let Some(service) = &slo.service {
                labels.insert("service".into(), service.clone());
            }
            if let Some(environment) = &slo.environment {
                labels.insert("environment".into(), environment.clone());
            }
            alerts.push(api::Alert {
                labels,
                annotations: [("summary".to_string(), alert.summary.clone())].into_iter().collect(),
                state: "firing".into(),
                active_at: alert.firing_since.clone().unwrap_or_default(),
                value: metrics::promql::format_value(alert.value),
            });
        }
    }
    for group in rule_groups(&app).groups {
        for rule in group.rules {
            alerts.extend(rule.alerts);
        }
    }
    let store_failing = *app.monitor.store_failing.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(since) = store_failing {
        alerts.push(api::Alert {
            labels: [("alertname", "StoreWriteFailing"), ("severity", "page")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: [(
                "summary".to_string(),
                "the time-series store cannot write its log (is the disk full?); new samples are refused until it can"
                    .to_string(),
            )]
            .into_iter()
            .collect(),
            state: "firing".into(),
            active_at: rfc3339(since),
            value: metrics::promql::format_value(app.tsdb.failed_appends() as f64),
        });
    }
    Json(api::Answer { status: "success".into(), data: api::AlertList { alerts } })
}

fn rule_groups(app: &App) -> api::RuleGroups {
    use spec::rules::RuleKind;
    let groups = app.monitor.rules.lock().unwrap_or_else(|e| e.into_inner());
    let groups = groups
        .iter()
        .map(|g| api::RuleGroup {
            name: g.group.name.clone(),
            file: g.file.display().to_string(),
            interval: g.interval_ms() as f64 / 1000.0,
            last_evaluation: g.last_evaluation.map(rfc3339),
            rules: g
                .group
                .rules
                .iter()
                .enumerate()
                .map(|(i, rule)| {
                    let alerts: Vec<api::Alert> = g.alerts[i]
                        .values()
                        .map(|a| api::Alert {
                            labels: a.labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                            annotations: a.annotations.clone(),
                            state: if a.firing { "firing" } else { "pending" }.into(),
                            active_at: rfc3339(a.active_at),
                            value: metrics::promql::format_value(a.value),
                        })
                        .collect();
                    let (kind, name, state) = match &rule.kind {
                        RuleKind::Record(name) => ("recording", name.clone(), None),
                        RuleKind::Alert { name, .. } => {
                            let state = if alerts.iter().any(|a| a.state == "firing") {
                                "firing"
                            } else if alerts.is_empty() {
                                "inactive"
                            } else {
                                "pending"
                            };
                            ("alerting", name.clone(), Some(state.to_string()))
                        }
                    };
                    api::RuleView {
                        kind: kind.into(),
                        name,
                        query: rule.expr.clone(),
                        health: if g.errors[i].is_some() { "err" } else { "ok" }.into(),
                        last_error: g.errors[i].clone(),
                        state,
                        alerts,
                    }
                })
                .collect(),
        })
        .collect();
    api::RuleGroups { groups }
}

#[utoipa::path(get, path = "/api/v1/rules", tag = "monitoring",
    summary = "Rule groups of --rules with each rule's health and alerts, in Prometheus's shape (`data.groups`)",
    security(("token" = [])), responses((status = 200, body = api::Answer<api::RuleGroups>)))]
pub(super) async fn rules(State(app): State<Arc<App>>, _caller: Caller) -> Json<api::Answer<api::RuleGroups>> {
    Json(api::Answer { status: "success".into(), data: rule_groups(&app) })
}

#[utoipa::path(get, path = "/api/v1/insights", tag = "monitoring",
    summary = "Forecasts (a trend reaching its limit) and seasonal anomalies that hold now, with their evidence",
    security(("token" = [])), responses((status = 200, body = Vec<api::Insight>), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn insights(State(app): State<Arc<App>>, _caller: Caller) -> Json<Vec<api::Insight>> {
    let insights = app.monitor.insights.lock().unwrap_or_else(|e| e.into_inner());
    Json(
        insights
            .iter()
            .map(|i| api::Insight {
                kind: i.kind.into(),
                key: i.key(),
                name: i.name.clone(),
                service: i.scope.service.clone(),
                environment: i.scope.environment.clone(),
                summary: i.summary.clone(),
                evidence: i.evidence.clone(),
                since: rfc3339(i.since),
            })
            .collect(),
    )
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct OverviewQuery {
    /// How far back, e.g. `6h` (the default) or `7d`.
    pub(super) range: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/services/{name}/overview", tag = "monitoring",
    summary = "A service at a glance: SLOs, probes, traffic, errors, latency and its key series, with its deployments on the same time axis",
    params(("name" = String, Path), OverviewQuery), security(("token" = [])),
    responses((status = 200, body = api::ServiceOverview), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn service_overview(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Path(name): Path<String>,
    Params(query): Params<OverviewQuery>,
) -> ApiResult<Json<api::ServiceOverview>> {
    let range_text = query.range.unwrap_or_else(|| "6h".into());
    let range = spec::rules::prometheus_duration(&range_text).filter(|r| *r >= 60_000).ok_or_else(|| {
        AppError::new(StatusCode::BAD_REQUEST, "bad_request", format!("`{range_text}` is not a range such as 6h or 7d"))
    })? as i64;
    let end = jiff::Timestamp::now().as_millisecond();
    let start = end - range;
    let step = (range / 120).max(15_000);
    let environments: Vec<store::EnvironmentState> =
        app.store.environments().await?.into_iter().filter(|e| e.service == name).collect();
    let deployments = app
        .store
        .deployments(DeploymentFilter {
            service: Some(name.clone()),
            environment: None,
            active_only: false,
            limit: 500,
        })
        .await?;
    if environments.is_empty() && deployments.is_empty() {
        return Err(AppError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no service `{name}` has been deployed"),
        ));
    }
    let mut queries: Vec<(String, String)> = Vec::new();
    let mut views = Vec::new();
    for env in &environments {
        let selector = format!("service={:?},environment={:?}", env.service, env.environment);
        queries.push((
            format!("{}: requests/s", env.environment),
            format!("sum(rate(tandem_proxy_requests_total{{{selector}}}[5m]))"),
        ));
        queries.push((
            format!("{}: error ratio", env.environment),
            format!("sum(rate(tandem_proxy_requests_total{{{selector},class=~\"5xx|none\"}}[5m])) / sum(rate(tandem_proxy_requests_total{{{selector}}}[5m]))"),
        ));
        queries.push((
            format!("{}: p99 latency (s)", env.environment),
            format!("histogram_quantile(0.99, sum by (le) (rate(tandem_proxy_request_duration_seconds_bucket{{{selector}}}[5m])))"),
        ));
        let release = |id: Option<i64>| {
            deployments.iter().find(|d| Some(d.id) == id).map(|d| api::ReleaseRef {
                deployment: d.id,
                release: d.release.clone(),
                sha: d.sha.clone(),
            })
        };
        if let Some(stable) = env.stable.and_then(|id| deployments.iter().find(|d| d.id == id))
            && let Ok(spec) = crate::deploy::environment_spec(stable)
        {
            queries.extend(spec.key_series.into_iter().map(|(n, q)| (format!("{}: {n}", env.environment), q)));
        }
        views.push(api::Environment {
            service: env.service.clone(),
            environment: env.environment.clone(),
            listen: env.listen.clone(),
            stable: release(env.stable),
            previous: release(env.previous),
        });
    }
    let tsdb = app.tsdb.clone();
    let series = tokio::task::spawn_blocking(move || {
        queries
            .into_iter()
            .map(|(name, query)| {
                let points = match metrics::promql::Engine::range(&tsdb, &query, start, end, step) {
                    Ok(found) => found.into_iter().next().map(|s| s.points).unwrap_or_default(),
                    Err(_) => Vec::new(),
                };
                api::KeySeries {
                    name,
                    query,
                    points: points.into_iter().map(|(t, v)| (t as f64 / 1000.0, v)).collect(),
                }
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let mut marks = Vec::new();
    for d in &deployments {
        let at = d.finished.as_deref().or(d.started.as_deref()).unwrap_or(&d.created);
        let Ok(at) = at.parse::<jiff::Timestamp>() else { continue };
        let at = at.as_millisecond();
        if at >= start && at <= end {
            marks.push(api::DeploymentMark {
                deployment: d.id,
                environment: d.environment.clone(),
                release: d.release.clone(),
                kind: d.kind,
                status: d.status,
                at: at as f64 / 1000.0,
            });
        }
    }
    marks.sort_by(|a, b| a.at.total_cmp(&b.at));
    Ok(Json(api::ServiceOverview {
        service: name.clone(),
        start: start as f64 / 1000.0,
        end: end as f64 / 1000.0,
        step: step as f64 / 1000.0,
        environments: views,
        slos: slo_views(&app).into_iter().filter(|s| s.service.as_deref() == Some(name.as_str())).collect(),
        probes: probe_views(&app).into_iter().filter(|p| p.service.as_deref() == Some(name.as_str())).collect(),
        series,
        marks,
    }))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct HeartbeatQuery {
    /// Only the heartbeat of this service's environment (when names repeat).
    service: Option<String>,
    environment: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/heartbeats/{name}", tag = "monitoring",
    summary = "A ping for heartbeat probes: a job or cron task calls it when it ran; silence past the period fails the probe",
    params(("name" = String, Path), HeartbeatQuery), security(("token" = [])),
    responses((status = 202, description = "`{\"pinged\": [probe keys]}`"), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn heartbeat(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Path(name): Path<String>,
    Params(query): Params<HeartbeatQuery>,
) -> ApiResult<Response> {
    let pinged = crate::monitor::probes::ping(&app, &name, query.service.as_deref(), query.environment.as_deref());
    if pinged.is_empty() {
        return Err(AppError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no heartbeat probe is named `{name}`; declare one with `heartbeat: PERIOD` under `probes:`"),
        ));
    }
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({"pinged": pinged}))).into_response())
}

#[utoipa::path(post, path = "/api/v2/alerts", tag = "alerting",
    summary = "Alertmanager's intake: a list of alerts (labels, annotations, startsAt, endsAt, generatorURL), as Prometheus's `alerting:` block sends them",
    request_body(content = serde_json::Value, description = "A JSON list of alerts"), security(("token" = [])),
    responses((status = 200, description = "Taken"), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn receive_alerts(
    State(app): State<Arc<App>>,
    caller: Caller,
    request: Result<Json<Vec<crate::alerting::Alert>>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let alerts = body(request)?;
    if let Some(bad) = alerts.iter().find(|a| a.labels.is_empty()) {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "bad_alert",
            format!("an alert has no labels: {}", serde_json::to_string(bad).unwrap_or_default()),
        ));
    }
    if !app.router.configured() {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "no_routes",
            "no Alertmanager configuration is loaded; start the server with --alertmanager-config FILE",
        ));
    }
    let n = alerts.len();
    let moved = app.router.receive(alerts, jiff::Timestamp::now().as_millisecond(), false);
    // Alerts that started or ended are events (one transaction per request): incidents open from
    // them, timelines show them.
    let events: Vec<store::NewEvent> = moved
        .into_iter()
        .map(|(kind, alert)| store::NewEvent {
            kind: kind.to_string(),
            subject: format!("alert/api/{}", crate::alerting::fingerprint(&alert.labels)),
            actor: caller.0.clone(),
            payload: serde_json::json!({
                "labels": alert.labels, "annotations": alert.annotations, "startsAt": alert.starts_at,
                "endsAt": alert.ends_at, "generatorURL": alert.generator_url, "source": "api",
            }),
        })
        .collect();
    if !events.is_empty() {
        app.store.record_events(events).await?;
    }
    Ok(Json(serde_json::json!({"received": n})))
}

#[utoipa::path(get, path = "/api/v2/alerts", tag = "alerting",
    summary = "Alerts the router holds, in Alertmanager's shape", security(("token" = [])),
    responses((status = 200, description = "A JSON list of alerts with fingerprint and status")))]
pub(super) async fn held_alerts(State(app): State<Arc<App>>, _caller: Caller) -> Json<Vec<serde_json::Value>> {
    Json(app.router.alerts(jiff::Timestamp::now().as_millisecond()))
}

#[utoipa::path(get, path = "/api/v1/notifications", tag = "alerting",
    summary = "The notification log: every attempt to tell a receiver, newest first", security(("token" = [])),
    responses((status = 200, body = api::EventList), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn notifications(State(app): State<Arc<App>>, _caller: Caller) -> ApiResult<Json<api::EventList>> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = app.store.events(after, 1000).await?;
        let Some(last) = page.last().map(|e| e.seq) else { break };
        events.extend(page.into_iter().filter(|e| e.kind.starts_with("notification.")));
        after = last;
    }
    events.reverse();
    events.truncate(500);
    Ok(Json(api::EventList { events }))
}

#[utoipa::path(post, path = "/api/v2/silences", tag = "alerting",
    summary = "Create a silence (matchers, startsAt, endsAt, createdBy, comment), as Alertmanager's API takes it",
    request_body(content = serde_json::Value), security(("token" = [])),
    responses((status = 200, description = "`{\"silenceID\": ID}`"), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn add_silence(
    State(app): State<Arc<App>>,
    caller: Caller,
    request: Result<Json<crate::alerting::Silence>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let mut silence = body(request)?;
    if silence.matchers.is_empty() {
        return Err(AppError::new(StatusCode::BAD_REQUEST, "bad_silence", "a silence needs at least one matcher"));
    }
    for (what, text) in [("startsAt", &silence.starts_at), ("endsAt", &silence.ends_at)] {
        if text.parse::<jiff::Timestamp>().is_err() {
            return Err(AppError::new(
                StatusCode::BAD_REQUEST,
                "bad_silence",
                format!("`{what}` is not an RFC 3339 time: `{text}`"),
            ));
        }
    }
    if silence.created_by.is_empty() {
        silence.created_by = caller.0.clone();
    }
    let id = app.router.silence(silence.clone());
    silence.id = id.clone();
    app.store
        .record_event(
            "silence.created",
            &format!("silence/{id}"),
            &caller.0,
            serde_json::to_value(&silence).unwrap_or_default(),
        )
        .await?;
    Ok(Json(serde_json::json!({"silenceID": id})))
}

#[utoipa::path(get, path = "/api/v2/silences", tag = "alerting", summary = "Every silence with its state (active, pending, expired)",
    security(("token" = [])), responses((status = 200, description = "A JSON list of silences")))]
pub(super) async fn list_silences(State(app): State<Arc<App>>, _caller: Caller) -> Json<Vec<serde_json::Value>> {
    let now = jiff::Timestamp::now().as_millisecond();
    Json(
        app.router
            .silences()
            .into_iter()
            .map(|s| {
                let state = s.state(now);
                let mut value = serde_json::to_value(&s).unwrap_or_default();
                value["status"] = serde_json::json!({"state": state});
                value
            })
            .collect(),
    )
}

#[utoipa::path(delete, path = "/api/v2/silence/{id}", tag = "alerting", summary = "Expire a silence now",
    params(("id" = String, Path)), security(("token" = [])),
    responses((status = 200, description = "Expired"), (status = "4XX", body = api::ErrorBody)))]
pub(super) async fn expire_silence(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let Some(silence) = app.router.expire(&id, jiff::Timestamp::now().as_millisecond()) else {
        return Err(AppError::new(StatusCode::NOT_FOUND, "not_found", format!("no silence has the id `{id}`")));
    };
    app.store
        .record_event(
            "silence.expired",
            &format!("silence/{id}"),
            &caller.0,
            serde_json::to_value(&silence).unwrap_or_default(),
        )
        .await?;
    Ok(Json(serde_json::json!({"silenceID": id, "status": "expired"})))
}
