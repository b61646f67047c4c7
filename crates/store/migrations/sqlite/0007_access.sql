-- Access: tokens act for a user (NULL: an administrator's token, as the first one is) within
-- their scopes until they expire; roles are granted to users and teams on a scope (`*`,
-- `repository:<name>`, `service:<name>`, `environment:<service>/<name>`).
ALTER TABLE tokens ADD COLUMN owner TEXT;
ALTER TABLE tokens ADD COLUMN scopes TEXT NOT NULL DEFAULT 'read,run,deploy,admin';
ALTER TABLE tokens ADD COLUMN expires TEXT;
ALTER TABLE tokens ADD COLUMN last_used TEXT;

CREATE TABLE grants (
    subject TEXT NOT NULL,
    role TEXT NOT NULL,
    scope TEXT NOT NULL,
    created TEXT NOT NULL,
    PRIMARY KEY (subject, scope)
);

CREATE TABLE team_members (
    team TEXT NOT NULL,
    member TEXT NOT NULL,
    created TEXT NOT NULL,
    PRIMARY KEY (team, member)
);

-- Whoever could sign in before could do everything, and keeps that.
INSERT INTO grants (subject, role, scope, created) SELECT 'user:' || name, 'admin', '*', created FROM users;
