-- Scheduled extracts (daily or weekly at a UTC time, optionally only what changed since the
-- schedule's previous run) and the data cut-off a run took changes since; runs whose files were
-- pruned by the retention setting keep their row (the archive) with the pruning time.
CREATE TABLE extract_schedules (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    study_id      INTEGER NOT NULL REFERENCES studies(id),
    scope_oid     TEXT NOT NULL,
    format        TEXT NOT NULL,
    dataset_name  TEXT,
    include_phi   BOOLEAN NOT NULL DEFAULT FALSE,
    every         TEXT NOT NULL CHECK (every IN ('daily', 'weekly')),
    at_minute     INTEGER NOT NULL CHECK (at_minute BETWEEN 0 AND 1439),   -- minutes after 00:00 UTC
    weekday       INTEGER CHECK (weekday BETWEEN 1 AND 7),                 -- weekly: 1 Monday … 7 Sunday
    changed_only  BOOLEAN NOT NULL DEFAULT FALSE,
    active        BOOLEAN NOT NULL DEFAULT TRUE,
    last_run_at   TEXT,
    last_run_id   TEXT,
    created_by    INTEGER REFERENCES users(id),
    created_at    TEXT NOT NULL
);
ALTER TABLE extract_runs ADD COLUMN changed_since TEXT;
ALTER TABLE extract_runs ADD COLUMN pruned_at TEXT;
