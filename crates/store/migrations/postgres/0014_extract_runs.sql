-- Extract runs: each run of an extract (a format over a study or site), queued and run in the
-- background, with its progress and the files it wrote (name, size, SHA-256) — the archive.
-- Bookkeeping: the data an extract reads are not changed by it.
CREATE TABLE extract_runs (
    id            TEXT PRIMARY KEY,
    study_id      BIGINT NOT NULL REFERENCES studies(id),
    scope_oid     TEXT NOT NULL,
    format        TEXT NOT NULL,
    include_phi   BOOLEAN NOT NULL DEFAULT FALSE,
    status        TEXT NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    participants  INTEGER NOT NULL DEFAULT 0,
    total         INTEGER,
    files         TEXT,
    design_version INTEGER,
    cutoff_at     TIMESTAMPTZ,
    error         TEXT,
    created_by    BIGINT REFERENCES users(id),
    created_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ
);
CREATE INDEX extract_runs_study ON extract_runs(study_id, created_at);
