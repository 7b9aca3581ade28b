-- Background jobs (clinical data imports): their state, what they read and what they logged.
-- Bookkeeping, not clinical records: the data a job writes is audited by the job's own
-- transactions; the job row only says how it went.
CREATE TABLE jobs (
    id            TEXT PRIMARY KEY,                 -- a UUID, shown to clients
    study_id      BIGINT NOT NULL REFERENCES studies(id),
    kind          TEXT NOT NULL CHECK (kind IN ('clinical_import')),
    status        TEXT NOT NULL CHECK (status IN ('in_progress', 'completed', 'failed')),
    file_name     TEXT NOT NULL,
    summary       TEXT,                             -- JSON of the outcome
    log           TEXT,                             -- CSV log
    error         TEXT,
    created_by    BIGINT REFERENCES users(id),
    created_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ
);
CREATE INDEX jobs_study ON jobs(study_id, created_at);
