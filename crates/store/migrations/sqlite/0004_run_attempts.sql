-- A re-run is a new row that names the run it repeats; `run_attempt` counts as GitHub's
-- `github.run_attempt` does (1 for the first run, +1 for each re-run of it).
ALTER TABLE runs ADD COLUMN rerun_of INTEGER REFERENCES runs(id);
ALTER TABLE runs ADD COLUMN run_attempt INTEGER NOT NULL DEFAULT 1;
