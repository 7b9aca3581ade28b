-- Study designs: one editable draft per study, and published versions that never change.

-- The draft a data manager edits: the whole design as one canonical JSON document.
CREATE TABLE design_drafts (
    study_id    INTEGER PRIMARY KEY REFERENCES studies(id),
    document    TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    updated_by  INTEGER REFERENCES users(id)
);

-- Published versions, numbered 1.. per study. Publishing puts a version in Test; promoting it
-- sets production_at. Nothing else may change: the document and its hash are immutable.
CREATE TABLE design_versions (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    study_id       INTEGER NOT NULL REFERENCES studies(id),
    number         INTEGER NOT NULL,
    hash           TEXT NOT NULL,
    document       TEXT NOT NULL,
    notes          TEXT,
    published_at   TEXT NOT NULL,
    published_by   INTEGER REFERENCES users(id),
    production_at  TEXT,
    production_by  INTEGER REFERENCES users(id),
    UNIQUE (study_id, number)
);

CREATE TRIGGER design_versions_immutable BEFORE UPDATE ON design_versions
WHEN NEW.document IS NOT OLD.document OR NEW.hash IS NOT OLD.hash OR NEW.number IS NOT OLD.number
  OR NEW.study_id IS NOT OLD.study_id OR NEW.published_at IS NOT OLD.published_at
  OR (OLD.production_at IS NOT NULL AND NEW.production_at IS NOT OLD.production_at)
BEGIN SELECT RAISE(ABORT, 'design_versions are immutable once published'); END;
CREATE TRIGGER design_versions_no_delete BEFORE DELETE ON design_versions
BEGIN SELECT RAISE(ABORT, 'design_versions are immutable once published: DELETE refused'); END;
