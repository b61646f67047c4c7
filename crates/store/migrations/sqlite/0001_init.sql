-- The event log: append-only, hash-chained. Every state change of the tables below is recorded
-- here in the same transaction.
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    actor TEXT NOT NULL,
    payload TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);

CREATE TABLE repos (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    webhook_secret TEXT NOT NULL,
    poll_seconds INTEGER,
    created TEXT NOT NULL
);

CREATE TABLE deliveries (
    forge TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    repo_id INTEGER NOT NULL REFERENCES repos(id),
    event TEXT NOT NULL,
    received TEXT NOT NULL,
    n_runs INTEGER NOT NULL,
    PRIMARY KEY (forge, delivery_id)
);

CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    repo_id INTEGER NOT NULL REFERENCES repos(id),
    number INTEGER NOT NULL,
    workflow TEXT NOT NULL,
    event TEXT NOT NULL,
    git_ref TEXT NOT NULL,
    sha TEXT NOT NULL,
    before_sha TEXT NOT NULL,
    change_request INTEGER,
    status TEXT NOT NULL,
    reason TEXT,
    jobs TEXT,
    payload TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    cancel_requested INTEGER NOT NULL,
    report TEXT,
    created TEXT NOT NULL,
    started TEXT,
    finished TEXT,
    UNIQUE (repo_id, number)
);
CREATE INDEX runs_status ON runs (status, id);

CREATE TABLE log_chunks (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    seq INTEGER NOT NULL,
    n_lines INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE tokens (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL
);

CREATE TABLE refs (
    repo_id INTEGER NOT NULL REFERENCES repos(id),
    name TEXT NOT NULL,
    sha TEXT NOT NULL,
    PRIMARY KEY (repo_id, name)
);
