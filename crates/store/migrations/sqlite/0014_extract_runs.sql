-- Extract runs: each run of an extract (a format over a study or site), queued and run in the
-- background, with its progress and the files it wrote (name, size, SHA-256) — the archive.
-- Bookkeeping: the data an extract reads are not changed by it.
CREATE TABLE extract_runs (
    id            TEXT PRIMARY KEY,                 -- a UUID
    study_id      INTEGER NOT NULL REFERENCES studies(id),
    scope_oid     TEXT NOT NULL,                    -- the study's or a site's OID
    format        TEXT NOT NULL,
    include_phi   BOOLEAN NOT NULL DEFAULT FALSE,
    status        TEXT NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    participants  INTEGER NOT NULL DEFAULT 0,
    total         INTEGER,
    files         TEXT,                             -- JSON [{name, bytes, sha256}]
    design_version INTEGER,
    cutoff_at     TEXT,                             -- the data as of this time
    error         TEXT,
    created_by    INTEGER REFERENCES users(id),
    created_at    TEXT NOT NULL,
    finished_at   TEXT
);
CREATE INDEX extract_runs_study ON extract_runs(study_id, created_at);
