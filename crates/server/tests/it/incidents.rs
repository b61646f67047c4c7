//! Incidents through the API: a paging alert from Prometheus's intake opens one naming the
//! deployment that preceded it; acknowledgement, notes and the rollback of the suspect are
//! timed and told in the timeline; the postmortem draft and its action items; DORA's measures;
//! bad input refused with stable codes.

use axum::http::StatusCode;

use super::Api;

fn routes() -> spec::alertmanager::Config {
    let text = "route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n";
    spec::alertmanager::parse(text).0.expect("a valid configuration")
}

async fn deployment(api: &Api, environment: &str) -> store::Deployment {
    let repo = match api.app.store.repo("shop").await {
        Ok(repo) => repo,
        Err(_) => api.app.store.add_repo("shop", "/nowhere", "s", None, "test").await.unwrap(),
    };
    let new = store::NewDeployment {
        repo_id: repo.id,
        service: "shop".into(),
        environment: environment.into(),
        sha: "0123456789abcdef0123456789abcdef01234567".into(),
        release: "r2".into(),
        run_id: None,
        kind: store::DeploymentKind::Deploy,
        spec: String::new(),
    };
    api.app.store.request_deployment(new, "ci").await.unwrap()
}

async fn roll_back(api: &Api, id: i64) {
    let transition = store::Transition {
        event: "rolled_back".into(),
        status: store::DeploymentStatus::RolledBack,
        step: 0,
        weight: 0.0,
        reason: Some("the canary's error rate is worse".into()),
        detail: serde_json::json!({}),
    };
    api.app.store.transition_deployment(id, transition, "tandem").await.unwrap();
}

impl Api {
    async fn post(&self, path: &str, body: serde_json::Value) -> (StatusCode, serde_json::Value) {
        self.call("POST", path, Some(&self.token.clone()), &body.to_string()).await
    }
}

#[tokio::test]
async fn a_page_opens_an_incident_that_names_the_suspect_and_the_rollback_resolves_it() {
    let api = Api::new().await;
    api.app.router.configure(Some(routes()));
    let bad = deployment(&api, "production").await;
    let page = serde_json::json!([{"labels": {"alertname": "HighErrorRate", "service": "shop", "severity": "page"},
        "annotations": {"summary": "5% of checkouts fail"}}]);
    let warning = serde_json::json!([{"labels": {"alertname": "SlowDisk", "service": "db", "severity": "warning"}}]);
    assert_eq!(api.post("/api/v2/alerts", warning).await.0, StatusCode::OK);
    assert_eq!(api.post("/api/v2/alerts", page.clone()).await.0, StatusCode::OK);
    // Prometheus re-sends firing alerts every evaluation: that opens nothing more.
    assert_eq!(api.post("/api/v2/alerts", page).await.0, StatusCode::OK);

    let (status, body) = api.get("/api/v1/incidents").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let list: Vec<api::Incident> = serde_json::from_value(body).unwrap();
    assert_eq!(list.len(), 1, "a warning does not page; a repeated page is one incident: {list:#?}");
    let incident = &list[0];
    assert_eq!((incident.state, incident.source.as_str()), (api::IncidentState::Triggered, "alert"));
    assert_eq!(incident.title, "HighErrorRate on shop: 5% of checkouts fail");
    assert_eq!(incident.suspects.iter().map(|s| s.deployment).collect::<Vec<_>>(), [bad.id]);
    let id = incident.id;

    let (status, body) = api.post(&format!("/api/v1/incidents/{id}/acknowledge"), serde_json::json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["mtta_seconds"].as_f64().is_some_and(|s| s >= 0.0), "{body}");
    assert_eq!(body["state"], "acknowledged");
    api.post(&format!("/api/v1/incidents/{id}/notes"), serde_json::json!({"text": "errors began with r2"})).await;
    api.post(&format!("/api/v1/incidents/{id}/commander"), serde_json::json!({"text": "ana"})).await;

    roll_back(&api, bad.id).await;
    let (_, body) = api.get(&format!("/api/v1/incidents/{id}")).await;
    let detail: api::IncidentDetail = serde_json::from_value(body).unwrap();
    let incident = &detail.incident;
    assert_eq!(incident.state, api::IncidentState::Resolved, "{incident:#?}");
    assert_eq!(
        incident.resolution.as_deref(),
        Some(format!("deployment {} (r2) rolled back: the canary's error rate is worse", bad.id).as_str())
    );
    assert!(incident.mttr_seconds.is_some());
    assert_eq!(incident.commander.as_deref(), Some("ana"));
    assert_eq!(incident.suspects[0].status, "rolled_back", "a suspect's status follows its deployment");
    let lines: Vec<&str> = detail.timeline.iter().map(|e| e.text.as_str()).collect();
    for expected in [
        "deployment 1 of shop (r2) to production requested",
        "HighErrorRate (page) fired: 5% of checkouts fail",
        "incident opened (alert, page): HighErrorRate on shop: 5% of checkouts fail",
        "acknowledged by admin",
        "note from admin: errors began with r2",
        "ana is the incident commander",
        "deployment 1 of shop (r2) to production rolled back: the canary's error rate is worse",
    ] {
        assert!(lines.contains(&expected), "`{expected}` is missing from the timeline: {lines:#?}");
    }
    assert!(!lines.iter().any(|l| l.contains("SlowDisk")), "another service's alert is not in the timeline");

    // The postmortem draft follows the SRE Workbook's structure, from the same log.
    let (status, body) = api.get(&format!("/api/v1/incidents/{id}/postmortem")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let markdown = body["markdown"].as_str().unwrap();
    for section in [
        "## Summary",
        "## Impact",
        "## Detection",
        "## Response",
        "## Timeline",
        "## Suspect change",
        "## Contributing causes",
        "## Action items",
    ] {
        assert!(markdown.contains(section), "{section} is missing:\n{markdown}");
    }
    assert!(markdown.contains(&format!("The suspect change is deployment {} (release r2", bad.id)), "{markdown}");
    assert!(markdown.contains("| note from admin: errors began with r2 | admin |"), "{markdown}");

    // Action items are tracked until done; the postmortem cannot be closed before.
    let item =
        serde_json::json!({"title": "Alert on checkout errors per release", "owner": "ana", "due": "2026-12-15"});
    let (status, body) = api.post(&format!("/api/v1/incidents/{id}/action-items"), item).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api.post(&format!("/api/v1/incidents/{id}/postmortem-done"), serde_json::json!({})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("action item 1"), "{body}");
    let (status, _) = api.post(&format!("/api/v1/incidents/{id}/action-items/1/done"), serde_json::json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = api.post(&format!("/api/v1/incidents/{id}/postmortem-done"), serde_json::json!({})).await;
    assert_eq!((status, body["state"].as_str()), (StatusCode::OK, Some("postmortem_done")), "{body}");
    let (_, body) = api.get(&format!("/api/v1/incidents/{id}/postmortem")).await;
    assert!(
        body["markdown"]
            .as_str()
            .unwrap()
            .contains("| 1 | Alert on checkout errors per release | ana | 2026-12-15 | done |")
    );

    // DORA from the same records: one production change, rolled back; one incident restored.
    let (status, body) = api.get("/api/v1/dora?days=7").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let dora: api::Dora = serde_json::from_value(body).unwrap();
    assert_eq!(dora.environments, ["production"]);
    assert_eq!(dora.deployments, 1);
    assert_eq!(dora.change_failure_rate.value, Some(1.0));
    assert_eq!(dora.change_failure_rate.band.as_deref(), Some("low"));
    assert_eq!(dora.deployment_frequency.value, Some(0.0), "nothing was promoted");
    assert!(dora.time_to_restore.value.is_some_and(|h| h < 1.0));
    assert_eq!(dora.time_to_restore.band.as_deref(), Some("elite"));
}

#[tokio::test]
async fn a_production_rollback_opens_an_incident_and_bad_commands_are_refused() {
    let api = Api::new().await;
    let staging = deployment(&api, "staging").await;
    roll_back(&api, staging.id).await;
    let production = deployment(&api, "production").await;
    roll_back(&api, production.id).await;
    let (_, body) = api.get("/api/v1/incidents?state=open").await;
    let list: Vec<api::Incident> = serde_json::from_value(body).unwrap();
    assert_eq!(list.len(), 1, "only the production rollback opens an incident: {list:#?}");
    assert_eq!((list[0].source.as_str(), list[0].suspects[0].deployment), ("rollback", production.id));

    // By hand: the recent deployments of the service are its suspects.
    let (status, body) =
        api.post("/api/v1/incidents", serde_json::json!({"title": "Checkout is slow", "service": "shop"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["id"], 2);
    assert_eq!(body["suspects"].as_array().map(Vec::len), Some(2), "{body}");
    // Its suspect is rolled back already: there is nothing to roll back.
    let (status, body) = api.post("/api/v1/incidents/2/rollback", serde_json::json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let refusals = [
        ("POST", "/api/v1/incidents", r#"{"title": " "}"#, StatusCode::BAD_REQUEST),
        ("POST", "/api/v1/incidents", r#"{"severity": "page"}"#, StatusCode::BAD_REQUEST),
        ("GET", "/api/v1/incidents?state=exploded", "", StatusCode::BAD_REQUEST),
        ("GET", "/api/v1/incidents/99", "", StatusCode::NOT_FOUND),
        ("POST", "/api/v1/incidents/2/explode", "{}", StatusCode::NOT_FOUND),
        ("POST", "/api/v1/incidents/2/notes", r#"{"text": ""}"#, StatusCode::BAD_REQUEST),
        (
            "POST",
            "/api/v1/incidents/2/action-items",
            r#"{"title": "x", "owner": "y", "due": "soon"}"#,
            StatusCode::BAD_REQUEST,
        ),
        ("POST", "/api/v1/incidents/2/action-items/7/done", "{}", StatusCode::NOT_FOUND),
        ("POST", "/api/v1/incidents/2/postmortem-done", "{}", StatusCode::CONFLICT),
        ("GET", "/api/v1/dora?days=0", "", StatusCode::BAD_REQUEST),
    ];
    for (method, path, body, expected) in refusals {
        let (status, answer) = api.call(method, path, Some("tdm_test"), body).await;
        assert_eq!(status, expected, "{method} {path} {body}: {answer}");
        assert!(answer["error"]["code"].is_string(), "{method} {path}: {answer}");
    }
    // Resolving twice is a conflict; the first resolution stands.
    let (status, _) = api.post("/api/v1/incidents/2/resolve", serde_json::json!({"text": "cache flushed"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api.post("/api/v1/incidents/2/resolve", serde_json::json!({"text": "again"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, body) = api.get("/api/v1/incidents/2").await;
    assert_eq!(body["incident"]["resolution"], "cache flushed");
}

#[tokio::test]
async fn a_page_recorded_just_before_a_crash_opens_its_incident_at_the_next_start_and_only_once() {
    let api = Api::new().await;
    let payload = serde_json::json!({"labels": {"alertname": "DiskFull", "service": "db", "severity": "page"}});
    // The server recorded the page and died before its responder saw it.
    api.app.store.record_event("alert.firing", "alert/rules/DiskFull", "tandem", payload).await.unwrap();
    server::incidents::replay(&api.app).await.unwrap();
    let first = server::incidents::list(&api.app).await.unwrap();
    assert_eq!(first.len(), 1, "{first:#?}");
    assert_eq!(first[0].title, "DiskFull on db");
    // A later start reads the decision back, with its cause, and does not decide it again.
    let restarted =
        std::sync::Arc::new(server::App::new(api.app.store.clone(), api.app.tsdb.clone(), api.app.config.clone()));
    server::incidents::replay(&restarted).await.unwrap();
    let again = server::incidents::list(&restarted).await.unwrap();
    assert_eq!(again.len(), 1, "{again:#?}");
    assert_eq!(again[0].alerts.len(), 1);
}
