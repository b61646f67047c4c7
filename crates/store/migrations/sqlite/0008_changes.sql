-- Change requests of hosted repositories: a change (per repository, numbered from 1, tied
-- together by its Change-Id), its revisions (each a pushed commit on its base), and its reviews
-- (approvals and comments, general or on a line).
CREATE TABLE changes (
    id INTEGER PRIMARY KEY,
    repo_id INTEGER NOT NULL REFERENCES repos(id),
    number INTEGER NOT NULL,
    target TEXT NOT NULL,
    change_key TEXT NOT NULL,
    title TEXT NOT NULL,
    author TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    UNIQUE (repo_id, number)
);
CREATE INDEX changes_by_key ON changes (repo_id, change_key);

CREATE TABLE revisions (
    change_id INTEGER NOT NULL REFERENCES changes(id),
    number INTEGER NOT NULL,
    sha TEXT NOT NULL,
    base TEXT NOT NULL,
    pushed_by TEXT NOT NULL,
    created TEXT NOT NULL,
    PRIMARY KEY (change_id, number)
);

CREATE TABLE reviews (
    id INTEGER PRIMARY KEY,
    change_id INTEGER NOT NULL REFERENCES changes(id),
    revision INTEGER NOT NULL,
    kind TEXT NOT NULL,
    author TEXT NOT NULL,
    path TEXT,
    line INTEGER,
    body TEXT NOT NULL,
    resolved INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL
);
