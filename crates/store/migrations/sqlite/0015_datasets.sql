-- Dataset definitions: what an extract holds (events, items, form status filter, PHI), saved by
-- name per study; saving again makes a new version, older versions stay (runs name theirs).
CREATE TABLE datasets (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    study_id      INTEGER NOT NULL REFERENCES studies(id),
    name          TEXT NOT NULL,
    version       INTEGER NOT NULL,
    definition    TEXT NOT NULL,                    -- JSON
    created_by    INTEGER REFERENCES users(id),
    created_at    TEXT NOT NULL,
    UNIQUE (study_id, name, version)
);
CREATE TRIGGER datasets_immutable BEFORE UPDATE ON datasets
BEGIN SELECT RAISE(ABORT, 'datasets are versioned: UPDATE refused'); END;
ALTER TABLE extract_runs ADD COLUMN dataset_name TEXT;
ALTER TABLE extract_runs ADD COLUMN dataset_version INTEGER;
