-- Import jobs can be cancelled, can be dry runs, and say which mode they ran in. SQLite cannot
-- change a CHECK constraint in place, so the table is rebuilt (nothing references it).
CREATE TABLE jobs_new (
    id            TEXT PRIMARY KEY,
    study_id      INTEGER NOT NULL REFERENCES studies(id),
    kind          TEXT NOT NULL CHECK (kind IN ('clinical_import')),
    status        TEXT NOT NULL CHECK (status IN ('in_progress', 'completed', 'failed', 'cancelled')),
    mode          TEXT CHECK (mode IN ('all-or-nothing', 'per-record', 'dry-run')),
    file_name     TEXT NOT NULL,
    summary       TEXT,
    log           TEXT,
    error         TEXT,
    created_by    INTEGER REFERENCES users(id),
    created_at    TEXT NOT NULL,
    finished_at   TEXT
);
INSERT INTO jobs_new (id, study_id, kind, status, file_name, summary, log, error, created_by, created_at, finished_at)
    SELECT id, study_id, kind, status, file_name, summary, log, error, created_by, created_at, finished_at FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
CREATE INDEX jobs_study ON jobs(study_id, created_at);
