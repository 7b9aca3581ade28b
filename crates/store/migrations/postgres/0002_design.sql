-- Study designs: one editable draft per study, and published versions that never change.

-- The draft a data manager edits: the whole design as one canonical JSON document.
CREATE TABLE design_drafts (
    study_id    BIGINT PRIMARY KEY REFERENCES studies(id),
    document    TEXT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    updated_by  BIGINT REFERENCES users(id)
);

-- Published versions, numbered 1.. per study. Publishing puts a version in Test; promoting it
-- sets production_at. Nothing else may change: the document and its hash are immutable.
CREATE TABLE design_versions (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    study_id       BIGINT NOT NULL REFERENCES studies(id),
    number         INTEGER NOT NULL,
    hash           TEXT NOT NULL,
    document       TEXT NOT NULL,
    notes          TEXT,
    published_at   TIMESTAMPTZ NOT NULL,
    published_by   BIGINT REFERENCES users(id),
    production_at  TIMESTAMPTZ,
    production_by  BIGINT REFERENCES users(id),
    UNIQUE (study_id, number)
);

CREATE FUNCTION casebook_design_version_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'design_versions are immutable once published: DELETE refused';
    END IF;
    IF NEW.document IS DISTINCT FROM OLD.document OR NEW.hash IS DISTINCT FROM OLD.hash
       OR NEW.number IS DISTINCT FROM OLD.number OR NEW.study_id IS DISTINCT FROM OLD.study_id
       OR NEW.published_at IS DISTINCT FROM OLD.published_at
       OR (OLD.production_at IS NOT NULL AND NEW.production_at IS DISTINCT FROM OLD.production_at) THEN
        RAISE EXCEPTION 'design_versions are immutable once published';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER design_versions_immutable BEFORE UPDATE OR DELETE ON design_versions
FOR EACH ROW EXECUTE FUNCTION casebook_design_version_guard();
