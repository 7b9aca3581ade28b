-- Rules (OpenClinica rule sets): each imported file is kept as uploaded; each (rule, target)
-- pair it assigns is a versioned row whose document never changes. A later import of the same
-- rule on the same target adds version n+1 and marks the old row replaced; rules are enabled
-- or disabled without changing their document. Every change is audited.
CREATE TABLE rule_imports (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    study_id      INTEGER NOT NULL REFERENCES studies(id),
    file_name     TEXT NOT NULL,
    xml           TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    rules         INTEGER NOT NULL,
    imported_at   TEXT NOT NULL,
    imported_by   INTEGER REFERENCES users(id)
);

CREATE TABLE rules (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    study_id      INTEGER NOT NULL REFERENCES studies(id),
    import_id     INTEGER NOT NULL REFERENCES rule_imports(id),
    rule_oid      TEXT NOT NULL,
    target        TEXT NOT NULL,
    version       INTEGER NOT NULL,
    document      TEXT NOT NULL,          -- JSON: the rule definition, its actions, the schedule
    enabled       INTEGER NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('current', 'replaced')),
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    UNIQUE (study_id, rule_oid, target, version)
);
CREATE UNIQUE INDEX rules_current ON rules(study_id, rule_oid, target) WHERE status = 'current';

CREATE TRIGGER rules_document_immutable BEFORE UPDATE ON rules
WHEN NEW.document IS NOT OLD.document OR NEW.rule_oid IS NOT OLD.rule_oid OR NEW.target IS NOT OLD.target
  OR NEW.version IS NOT OLD.version OR NEW.study_id IS NOT OLD.study_id OR NEW.import_id IS NOT OLD.import_id
  OR (OLD.status = 'replaced' AND NEW.status IS NOT OLD.status)
BEGIN SELECT RAISE(ABORT, 'a rule version never changes; import a new version'); END;
CREATE TRIGGER rules_no_delete BEFORE DELETE ON rules
BEGIN SELECT RAISE(ABORT, 'rules are never deleted; disable them'); END;
CREATE TRIGGER rule_imports_immutable BEFORE UPDATE ON rule_imports
BEGIN SELECT RAISE(ABORT, 'an imported rules file is kept as uploaded'); END;

-- What rules have done, so that a rule firing again on unchanged data does not repeat itself
-- (OpenClinica's rule_action_run_log): the key names the rule version, the place, the action and
-- a hash of the data it fired on.
CREATE TABLE rule_action_runs (
    run_key       TEXT PRIMARY KEY,
    rule_id       INTEGER NOT NULL REFERENCES rules(id),
    created_at    TEXT NOT NULL
);
