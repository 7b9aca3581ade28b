-- Foundation schema (PostgreSQL). Kept in lockstep with ../sqlite/0001_foundation.sql:
-- same tables, columns and meaning; only the dialect differs. Append-only: never edit a
-- migration that has shipped, add a new one.

-- Accounts. Never deleted: `status` is active, locked or removed.
CREATE TABLE users (
    id                    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username              TEXT NOT NULL UNIQUE,
    first_name            TEXT NOT NULL,
    last_name             TEXT NOT NULL,
    email                 TEXT NOT NULL,
    institution           TEXT,
    user_type             TEXT NOT NULL CHECK (user_type IN ('technical_administrator', 'business_administrator', 'user')),
    status                TEXT NOT NULL CHECK (status IN ('active', 'locked', 'removed')),
    password_hash         TEXT NOT NULL,
    must_change_password  BOOLEAN NOT NULL DEFAULT TRUE,
    failed_logins         BIGINT NOT NULL DEFAULT 0,
    created_at            TIMESTAMPTZ NOT NULL,
    updated_at            TIMESTAMPTZ NOT NULL,
    password_changed_at   TIMESTAMPTZ NOT NULL,
    last_login_at         TIMESTAMPTZ
);

-- Browser sessions, shared by every instance. The cookie holds a random token; only its
-- SHA-256 is stored.
CREATE TABLE sessions (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash    TEXT NOT NULL UNIQUE,
    user_id       BIGINT NOT NULL REFERENCES users(id),
    csrf_token    TEXT NOT NULL,
    channel       TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    last_seen_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);

-- API keys: the secret is shown once; only its SHA-256 and a visible prefix are kept.
CREATE TABLE api_keys (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       BIGINT NOT NULL REFERENCES users(id),
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    key_hash      TEXT NOT NULL UNIQUE,
    created_at    TIMESTAMPTZ NOT NULL,
    last_used_at  TIMESTAMPTZ,
    revoked_at    TIMESTAMPTZ
);
CREATE INDEX api_keys_user ON api_keys(user_id);

-- Studies and sites (a site is a study row with a parent). `details` and `parameters` are
-- JSON documents validated by the domain types StudyDetails / StudyParameters.
CREATE TABLE studies (
    id                     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    parent_id              BIGINT REFERENCES studies(id),
    oid                    TEXT NOT NULL UNIQUE,
    protocol_id            TEXT NOT NULL,
    protocol_id_key        TEXT NOT NULL UNIQUE, -- lower-cased protocol_id: unique across studies and sites
    name                   TEXT NOT NULL,
    status                 TEXT NOT NULL CHECK (status IN ('design', 'available', 'frozen', 'locked', 'removed')),
    status_before_removal  TEXT,
    details                TEXT NOT NULL,
    parameters             TEXT NOT NULL,
    created_at             TIMESTAMPTZ NOT NULL,
    updated_at             TIMESTAMPTZ NOT NULL
);
CREATE INDEX studies_parent ON studies(parent_id);

-- Who holds which role where. One active role per user and study/site; removed
-- assignments stay for the record.
CREATE TABLE role_assignments (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users(id),
    study_id    BIGINT NOT NULL REFERENCES studies(id),
    role        TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('active', 'removed')),
    created_at  TIMESTAMPTZ NOT NULL,
    removed_at  TIMESTAMPTZ
);
CREATE UNIQUE INDEX role_assignments_one_active ON role_assignments(user_id, study_id) WHERE status = 'active';
CREATE INDEX role_assignments_study ON role_assignments(study_id);

-- The audit trail. Append-only: triggers refuse UPDATE and DELETE.
CREATE TABLE audit_events (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at              TIMESTAMPTZ NOT NULL,
    actor_user_id   BIGINT,
    actor_username  TEXT NOT NULL,
    channel         TEXT NOT NULL,
    action          TEXT NOT NULL,
    entity_type     TEXT NOT NULL,
    entity_id       TEXT NOT NULL,
    study_id        BIGINT,
    site_id         BIGINT,
    old_value       TEXT,
    new_value       TEXT,
    reason          TEXT,
    request_id      TEXT
);
CREATE INDEX audit_events_study ON audit_events(study_id, seq);
CREATE INDEX audit_events_entity ON audit_events(entity_type, entity_id, seq);
CREATE INDEX audit_events_actor ON audit_events(actor_user_id, seq);

CREATE FUNCTION casebook_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP;
END
$$;
CREATE TRIGGER audit_events_no_update_delete BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION casebook_refuse_change();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION casebook_refuse_change();

-- The hash chain over audit events, in the order the sealer appended them.
CREATE TABLE audit_seals (
    position   BIGINT PRIMARY KEY,
    seq        BIGINT NOT NULL UNIQUE,
    hash       TEXT NOT NULL,
    sealed_at  TIMESTAMPTZ NOT NULL
);

CREATE TRIGGER audit_seals_no_update_delete BEFORE UPDATE OR DELETE ON audit_seals
    FOR EACH ROW EXECUTE FUNCTION casebook_refuse_change();
CREATE TRIGGER audit_seals_no_truncate BEFORE TRUNCATE ON audit_seals
    FOR EACH STATEMENT EXECUTE FUNCTION casebook_refuse_change();
