-- An archived repository: read-only (no pushes, no new runs, no polling), kept with its history.
-- NULL while it is active; the time it was archived otherwise.
ALTER TABLE repos ADD COLUMN archived TEXT;
