-- Secrets (sealed by the server with XChaCha20-Poly1305: the store never holds a value in clear)
-- and configuration variables (in clear), per scope: `org`, `repo/<name>`, `env/<repo>/<environment>`.
CREATE TABLE secrets (
    kind TEXT NOT NULL,
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    value BLOB NOT NULL,
    updated TEXT NOT NULL,
    PRIMARY KEY (kind, scope, name)
);
