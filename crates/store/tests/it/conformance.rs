//! Behaviour every `Store` adapter must have.

use std::sync::Arc;

use store::{
    Delivery, DeploymentFilter, DeploymentStatus, LogLine, NewDeployment, NewRun, RunFilter, RunStatus, Store,
    StoreError, Transition,
};

fn new_run(repo_id: i64, sha: &str) -> NewRun {
    NewRun {
        repo_id,
        workflow: ".tandem/workflows/ci.yml".into(),
        event: "push".into(),
        git_ref: "refs/heads/main".into(),
        sha: sha.into(),
        before_sha: "0".repeat(40),
        change_request: None,
        jobs: None,
        payload: serde_json::json!({"ref": "refs/heads/main"}),
        rerun_of: None,
    }
}

pub async fn repos(store: &(impl Store + ?Sized)) {
    let repo = store.add_repo("app", "/src/app", "s3cret", Some(30), "admin").await.unwrap();
    assert_eq!(repo.name, "app");
    assert!(matches!(store.add_repo("app", "/elsewhere", "x", None, "admin").await, Err(StoreError::Conflict(_))));
    store.add_repo("lib", "https://example.com/lib.git", "x", None, "admin").await.unwrap();
    let names: Vec<String> = store.repos().await.unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["app", "lib"]);
    assert_eq!(store.repo_by_id(repo.id).await.unwrap().webhook_secret, "s3cret");
    assert!(matches!(store.repo("nope").await, Err(StoreError::NotFound(_))));
    let with_forge = store.set_forge(repo.id, "github", "https://api.example", "ghp_secret", "admin").await.unwrap();
    assert_eq!((with_forge.forge.as_deref(), with_forge.status_token.as_deref()), (Some("github"), Some("ghp_secret")));
    store.record_event("status.posted", "run/1", "tandem", serde_json::json!({"state": "success"})).await.unwrap();
    let events = store.events(0, 100).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["repo.added", "repo.added", "repo.forge_set", "status.posted"]
    );
    assert!(!events[2].payload.to_string().contains("ghp_secret"), "tokens never enter the event log");
    assert_eq!(events[1].prev_hash, events[0].hash);
    // A batch is appended in order, chained like the rest.
    let batch = (0..3)
        .map(|i| store::NewEvent {
            kind: "alert.firing".into(),
            subject: format!("alert/{i}"),
            actor: "prometheus".into(),
            payload: serde_json::json!({"i": i}),
        })
        .collect();
    store.record_events(batch).await.unwrap();
    let events = store.events(0, 100).await.unwrap();
    let subjects: Vec<&str> = events[4..].iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(subjects, ["alert/0", "alert/1", "alert/2"]);
    assert_eq!(events[4].prev_hash, events[3].hash);
    assert!(store.verify_chain().await.unwrap().first_broken.is_none());
    // Users: the hash is kept, never logged; a second user of the same name is a conflict.
    store.add_user("ana", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA", "admin").await.unwrap();
    assert_eq!(
        store.user_password("ana").await.unwrap().as_deref(),
        Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA")
    );
    assert_eq!(store.user_password("bo").await.unwrap(), None);
    assert!(matches!(store.add_user("ana", "x", "admin").await, Err(StoreError::Conflict(_))));
    assert_eq!(store.n_users().await.unwrap(), 1);
    store.set_user_password("ana", "$argon2id$new", "ana").await.unwrap();
    assert_eq!(store.user_password("ana").await.unwrap().as_deref(), Some("$argon2id$new"));
    assert!(matches!(store.set_user_password("bo", "x", "bo").await, Err(StoreError::NotFound(_))));
    let last = store.events(0, 1000).await.unwrap().pop().unwrap();
    assert_eq!((last.kind.as_str(), last.payload.to_string().contains("argon2")), ("user.password_changed", false));
}

pub async fn deliveries_are_idempotent(store: &(impl Store + ?Sized)) {
    let repo = store.add_repo("app", "/src/app", "s", None, "admin").await.unwrap();
    let runs = vec![new_run(repo.id, "a1"), new_run(repo.id, "a1")];
    let Delivery::Stored(ids) =
        store.record_delivery("github", "delivery-1", repo.id, "push", runs.clone(), "github").await.unwrap()
    else {
        panic!("first delivery must be stored")
    };
    assert_eq!(ids.len(), 2);
    assert_eq!(
        store.record_delivery("github", "delivery-1", repo.id, "push", runs.clone(), "github").await.unwrap(),
        Delivery::Duplicate
    );
    // The same id from another forge is another delivery.
    assert!(
        matches!(store.record_delivery("gitea", "delivery-1", repo.id, "push", vec![], "gitea").await.unwrap(), Delivery::Stored(v) if v.is_empty())
    );
    assert_eq!(store.queue_depth().await.unwrap(), 2);
    let numbers: Vec<i64> = store.runs(RunFilter::default()).await.unwrap().iter().map(|r| r.number).collect();
    assert_eq!(numbers, [2, 1]);
}

pub async fn run_lifecycle(store: &(impl Store + ?Sized)) {
    let repo = store.add_repo("app", "/src/app", "s", None, "admin").await.unwrap();
    let first = store.enqueue(new_run(repo.id, "a1"), "alice").await.unwrap();
    let second = store.enqueue(new_run(repo.id, "b2"), "alice").await.unwrap();
    assert_eq!((first.status, first.number, second.number), (RunStatus::Queued, 1, 2));
    let claimed = store.claim_next().await.unwrap().unwrap();
    assert_eq!((claimed.id, claimed.status), (first.id, RunStatus::Running));
    assert!(claimed.started.is_some());
    // Cancelling a queued run finishes it at once; a running one is only asked to stop.
    let cancelled = store.request_cancel(second.id, "bob").await.unwrap();
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    assert!(store.claim_next().await.unwrap().is_none());
    let asked = store.request_cancel(first.id, "bob").await.unwrap();
    assert_eq!((asked.status, asked.cancel_requested), (RunStatus::Running, true));
    let done = store.finish(first.id, RunStatus::Success, None, Some(serde_json::json!({"jobs": []}))).await.unwrap();
    assert_eq!(done.status, RunStatus::Success);
    assert_eq!(done.report, Some(serde_json::json!({"jobs": []})));
    assert!(matches!(store.request_cancel(first.id, "bob").await, Err(StoreError::Conflict(_))));
    let kinds: Vec<String> = store.events(0, 100).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            "repo.added",
            "run.queued",
            "run.queued",
            "run.started",
            "run.cancelled",
            "run.cancel_requested",
            "run.success"
        ]
    );
    let by_status = store.runs(RunFilter { status: Some(RunStatus::Cancelled), ..RunFilter::default() }).await.unwrap();
    assert_eq!(by_status.len(), 1);
    // A re-run counts its attempt from the run it repeats, through a chain of re-runs.
    assert_eq!((first.run_attempt, first.rerun_of), (1, None));
    let again = store.enqueue(NewRun { rerun_of: Some(first.id), ..new_run(repo.id, "a1") }, "alice").await.unwrap();
    let third = store.enqueue(NewRun { rerun_of: Some(again.id), ..new_run(repo.id, "a1") }, "alice").await.unwrap();
    assert_eq!((again.run_attempt, third.run_attempt, third.rerun_of), (2, 3, Some(again.id)));
    let missing = store.enqueue(NewRun { rerun_of: Some(9_999), ..new_run(repo.id, "a1") }, "alice").await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))), "{missing:?}");
    assert!(store.verify_chain().await.unwrap().first_broken.is_none());
}

pub async fn interrupted_runs_are_recovered(store: &(impl Store + ?Sized)) {
    let repo = store.add_repo("app", "/src/app", "s", None, "admin").await.unwrap();
    let run = store.enqueue(new_run(repo.id, "a1"), "alice").await.unwrap();
    store.claim_next().await.unwrap();
    let recovered = store.recover_interrupted(2).await.unwrap();
    assert_eq!((recovered[0].status, recovered[0].attempt), (RunStatus::Queued, 2));
    store.claim_next().await.unwrap();
    let recovered = store.recover_interrupted(2).await.unwrap();
    assert_eq!(recovered[0].status, RunStatus::Failure);
    assert!(recovered[0].reason.as_deref().unwrap().contains("server stopped"), "{:?}", recovered[0].reason);
    assert_eq!(store.run(run.id).await.unwrap().status, RunStatus::Failure);
}

pub async fn logs_round_trip(store: &(impl Store + ?Sized)) {
    let repo = store.add_repo("app", "/src/app", "s", None, "admin").await.unwrap();
    let run = store.enqueue(new_run(repo.id, "a1"), "alice").await.unwrap();
    let chunk: Vec<LogLine> = (0..500)
        .map(|i| LogLine { job: "build".into(), step: Some(i % 3), text: format!("line {i} ünïcode \t tab") })
        .collect();
    assert_eq!(store.append_log(run.id, &chunk).await.unwrap(), 1);
    assert_eq!(store.append_log(run.id, &chunk[..2]).await.unwrap(), 2);
    let all = store.log(run.id, 0, 100).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].1, chunk);
    let after = store.log(run.id, 1, 100).await.unwrap();
    assert_eq!(store.log(run.id, 0, 1).await.unwrap().len(), 1, "a page holds at most what was asked");
    assert_eq!((after.len(), after[0].0), (1, 2));
}

pub async fn concurrent_writers_keep_the_chain<S: Store + 'static>(store: Arc<S>) {
    let repo = store.add_repo("app", "/src/app", "s", None, "admin").await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .record_delivery(
                    "github",
                    &format!("d{i}"),
                    repo.id,
                    "push",
                    vec![new_run(repo.id, &format!("{i}"))],
                    "github",
                )
                .await
                .unwrap();
            store
                .record_delivery(
                    "github",
                    &format!("d{i}"),
                    repo.id,
                    "push",
                    vec![new_run(repo.id, &format!("{i}"))],
                    "github",
                )
                .await
                .unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(store.queue_depth().await.unwrap(), 20);
    let mut numbers: Vec<i64> =
        store.runs(RunFilter { limit: 100, ..RunFilter::default() }).await.unwrap().iter().map(|r| r.number).collect();
    let newest_first = store.runs(RunFilter { limit: 100, ..RunFilter::default() }).await.unwrap();
    if let Some(middle) = newest_first.get(newest_first.len() / 2) {
        let page = store.runs(RunFilter { before: Some(middle.id), limit: 100, ..RunFilter::default() }).await.unwrap();
        assert!(page.iter().all(|r| r.id < middle.id), "`before` pages to older runs");
        assert_eq!(page.len(), newest_first.iter().filter(|r| r.id < middle.id).count());
    }
    numbers.sort();
    assert_eq!(numbers, (1..=20).collect::<Vec<_>>());
    let report = store.verify_chain().await.unwrap();
    assert_eq!((report.n_events, report.first_broken), (1 + 20 * 2, None));
}

fn new_deployment(repo_id: i64, sha: &str) -> NewDeployment {
    NewDeployment {
        repo_id,
        service: "web".into(),
        environment: "production".into(),
        sha: sha.into(),
        release: sha[..7].into(),
        run_id: None,
        kind: store::DeploymentKind::Deploy,
        spec: "service: web\n".into(),
    }
}

fn moved(event: &str, status: DeploymentStatus, step: i64, weight: f64) -> Transition {
    Transition { event: event.into(), status, step, weight, reason: None, detail: serde_json::json!({}) }
}

pub async fn deployments_move_and_promote(store: &(impl Store + ?Sized)) {
    let repo = store.add_repo("web", "/src/web", "s", None, "admin").await.unwrap();
    store.ensure_environment("web", "production", repo.id, "127.0.0.1:9000").await.unwrap();
    // Ensuring again keeps the first address.
    let env = store.ensure_environment("web", "production", repo.id, "127.0.0.1:9999").await.unwrap();
    assert_eq!((env.listen.as_deref(), env.stable), (Some("127.0.0.1:9000"), None));

    let first = store.request_deployment(new_deployment(repo.id, &"a".repeat(40)), "alice").await.unwrap();
    assert_eq!(first.status, DeploymentStatus::Pending);
    store.transition_deployment(first.id, moved("started", DeploymentStatus::Running, 0, 0.0), "tandem").await.unwrap();
    let promoted =
        store.transition_deployment(first.id, moved("promoted", DeploymentStatus::Promoted, 0, 1.0), "tandem").await;
    assert!(promoted.unwrap().finished.is_some());
    let second = store.request_deployment(new_deployment(repo.id, &"b".repeat(40)), "bob").await.unwrap();
    let err = store.transition_deployment(first.id, moved("step", DeploymentStatus::Running, 1, 0.5), "tandem").await;
    assert!(matches!(err, Err(StoreError::Conflict(_))), "a finished deployment cannot move: {err:?}");
    store
        .transition_deployment(second.id, moved("promoted", DeploymentStatus::Promoted, 0, 1.0), "tandem")
        .await
        .unwrap();
    let env = store.environment("web", "production").await.unwrap().unwrap();
    assert_eq!((env.stable, env.previous), (Some(second.id), Some(first.id)));

    // Approval and abort are recorded with who asked.
    let third = store.request_deployment(new_deployment(repo.id, &"c".repeat(40)), "carol").await.unwrap();
    let third = store.approve_deployment(third.id, "dave").await.unwrap();
    assert_eq!(third.approved_by.as_deref(), Some("dave"));
    assert!(store.abort_deployment(third.id, "erin").await.unwrap().abort_requested);
    let active = store
        .deployments(DeploymentFilter { service: Some("web".into()), active_only: true, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(active.iter().map(|d| d.id).collect::<Vec<_>>(), vec![third.id]);
    let counts = store.deployment_counts().await.unwrap();
    assert_eq!(counts, [(DeploymentStatus::Pending, 1), (DeploymentStatus::Promoted, 2)]);

    let kinds: Vec<(String, String)> = store
        .events_about(&format!("deployment/{}", first.id))
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.actor))
        .collect();
    assert_eq!(
        kinds,
        [("deployment.requested", "alice"), ("deployment.started", "tandem"), ("deployment.promoted", "tandem")]
            .map(|(k, a)| (k.to_string(), a.to_string()))
    );
    let events = store.events_about(&format!("deployment/{}", third.id)).await.unwrap();
    assert_eq!(events[1].kind, "deployment.approved");
    assert_eq!(events[1].payload["sha"], "c".repeat(40));
    assert!(store.verify_chain().await.unwrap().first_broken.is_none());
}
