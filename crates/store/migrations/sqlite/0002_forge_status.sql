-- Where to post commit statuses for a repository (all optional).
ALTER TABLE repos ADD COLUMN forge TEXT;
ALTER TABLE repos ADD COLUMN api_url TEXT;
ALTER TABLE repos ADD COLUMN status_token TEXT;
