-- Dataset definitions: what an extract holds (events, items, form status filter, PHI), saved by
-- name per study; saving again makes a new version, older versions stay (runs name theirs).
CREATE TABLE datasets (
    id            BIGSERIAL PRIMARY KEY,
    study_id      BIGINT NOT NULL REFERENCES studies(id),
    name          TEXT NOT NULL,
    version       INTEGER NOT NULL,
    definition    TEXT NOT NULL,
    created_by    BIGINT REFERENCES users(id),
    created_at    TIMESTAMPTZ NOT NULL,
    UNIQUE (study_id, name, version)
);
CREATE FUNCTION datasets_immutable() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'datasets are versioned: UPDATE refused'; END; $$ LANGUAGE plpgsql;
CREATE TRIGGER datasets_immutable BEFORE UPDATE ON datasets FOR EACH ROW EXECUTE FUNCTION datasets_immutable();
ALTER TABLE extract_runs ADD COLUMN dataset_name TEXT;
ALTER TABLE extract_runs ADD COLUMN dataset_version INTEGER;
