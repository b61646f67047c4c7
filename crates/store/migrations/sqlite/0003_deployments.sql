-- Deployments of a service's release to an environment, and each environment's stable release.
CREATE TABLE deployments (
    id INTEGER PRIMARY KEY,
    repo_id INTEGER NOT NULL REFERENCES repos(id),
    service TEXT NOT NULL,
    environment TEXT NOT NULL,
    sha TEXT NOT NULL,
    release TEXT NOT NULL,
    run_id INTEGER,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    step INTEGER NOT NULL,
    weight REAL NOT NULL,
    reason TEXT,
    approved_by TEXT,
    abort_requested INTEGER NOT NULL,
    spec TEXT NOT NULL,
    created TEXT NOT NULL,
    started TEXT,
    finished TEXT
);
CREATE INDEX deployments_env ON deployments (service, environment, id);
CREATE INDEX deployments_status ON deployments (status, id);

CREATE TABLE environments (
    service TEXT NOT NULL,
    environment TEXT NOT NULL,
    repo_id INTEGER NOT NULL REFERENCES repos(id),
    stable_deployment INTEGER REFERENCES deployments(id),
    previous_deployment INTEGER REFERENCES deployments(id),
    listen TEXT,
    PRIMARY KEY (service, environment)
);
