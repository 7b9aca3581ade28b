-- Rules (OpenClinica rule sets): each imported file is kept as uploaded; each (rule, target)
-- pair it assigns is a versioned row whose document never changes. A later import of the same
-- rule on the same target adds version n+1 and marks the old row replaced; rules are enabled
-- or disabled without changing their document. Every change is audited.
CREATE TABLE rule_imports (
    id            BIGSERIAL PRIMARY KEY,
    study_id      BIGINT NOT NULL REFERENCES studies(id),
    file_name     TEXT NOT NULL,
    xml           TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    rules         INTEGER NOT NULL,
    imported_at   TIMESTAMPTZ NOT NULL,
    imported_by   BIGINT REFERENCES users(id)
);

CREATE TABLE rules (
    id            BIGSERIAL PRIMARY KEY,
    study_id      BIGINT NOT NULL REFERENCES studies(id),
    import_id     BIGINT NOT NULL REFERENCES rule_imports(id),
    rule_oid      TEXT NOT NULL,
    target        TEXT NOT NULL,
    version       INTEGER NOT NULL,
    document      TEXT NOT NULL,          -- JSON: the rule definition, its actions, the schedule
    enabled       BOOLEAN NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('current', 'replaced')),
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    UNIQUE (study_id, rule_oid, target, version)
);
CREATE UNIQUE INDEX rules_current ON rules(study_id, rule_oid, target) WHERE status = 'current';

CREATE FUNCTION casebook_rules_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'rules are never deleted; disable them';
    END IF;
    IF NEW.document IS DISTINCT FROM OLD.document OR NEW.rule_oid IS DISTINCT FROM OLD.rule_oid
       OR NEW.target IS DISTINCT FROM OLD.target OR NEW.version IS DISTINCT FROM OLD.version
       OR NEW.study_id IS DISTINCT FROM OLD.study_id OR NEW.import_id IS DISTINCT FROM OLD.import_id
       OR (OLD.status = 'replaced' AND NEW.status IS DISTINCT FROM OLD.status) THEN
        RAISE EXCEPTION 'a rule version never changes; import a new version';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER rules_guard BEFORE UPDATE OR DELETE ON rules FOR EACH ROW EXECUTE FUNCTION casebook_rules_guard();
CREATE FUNCTION casebook_rule_imports_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'an imported rules file is kept as uploaded';
END $$;
CREATE TRIGGER rule_imports_guard BEFORE UPDATE OR DELETE ON rule_imports
FOR EACH ROW EXECUTE FUNCTION casebook_rule_imports_guard();

-- What rules have done, so that a rule firing again on unchanged data does not repeat itself
-- (OpenClinica's rule_action_run_log): the key names the rule version, the place, the action and
-- a hash of the data it fired on.
CREATE TABLE rule_action_runs (
    run_key       TEXT PRIMARY KEY,
    rule_id       BIGINT NOT NULL REFERENCES rules(id),
    created_at    TIMESTAMPTZ NOT NULL
);
