-- Foundation schema (SQLite). Kept in lockstep with ../postgres/0001_foundation.sql:
-- same tables, columns and meaning; only the dialect differs. Append-only: never edit a
-- migration that has shipped, add a new one.

-- Accounts. Never deleted: `status` is active, locked or removed.
CREATE TABLE users (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    username              TEXT NOT NULL UNIQUE,
    first_name            TEXT NOT NULL,
    last_name             TEXT NOT NULL,
    email                 TEXT NOT NULL,
    institution           TEXT,
    user_type             TEXT NOT NULL CHECK (user_type IN ('technical_administrator', 'business_administrator', 'user')),
    status                TEXT NOT NULL CHECK (status IN ('active', 'locked', 'removed')),
    password_hash         TEXT NOT NULL,
    must_change_password  INTEGER NOT NULL DEFAULT 1,
    failed_logins         INTEGER NOT NULL DEFAULT 0,
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL,
    password_changed_at   TEXT NOT NULL,
    last_login_at         TEXT
);

-- Browser sessions, shared by every instance. The cookie holds a random token; only its
-- SHA-256 is stored.
CREATE TABLE sessions (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash    TEXT NOT NULL UNIQUE,
    user_id       INTEGER NOT NULL REFERENCES users(id),
    csrf_token    TEXT NOT NULL,
    channel       TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    last_seen_at  TEXT NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);

-- API keys: the secret is shown once; only its SHA-256 and a visible prefix are kept.
CREATE TABLE api_keys (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id       INTEGER NOT NULL REFERENCES users(id),
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    key_hash      TEXT NOT NULL UNIQUE,
    created_at    TEXT NOT NULL,
    last_used_at  TEXT,
    revoked_at    TEXT
);
CREATE INDEX api_keys_user ON api_keys(user_id);

-- Studies and sites (a site is a study row with a parent). `details` and `parameters` are
-- JSON documents validated by the domain types StudyDetails / StudyParameters.
CREATE TABLE studies (
    id                     INTEGER PRIMARY KEY AUTOINCREMENT,
    parent_id              INTEGER REFERENCES studies(id),
    oid                    TEXT NOT NULL UNIQUE,
    protocol_id            TEXT NOT NULL,
    protocol_id_key        TEXT NOT NULL UNIQUE, -- lower-cased protocol_id: unique across studies and sites
    name                   TEXT NOT NULL,
    status                 TEXT NOT NULL CHECK (status IN ('design', 'available', 'frozen', 'locked', 'removed')),
    status_before_removal  TEXT,
    details                TEXT NOT NULL,
    parameters             TEXT NOT NULL,
    created_at             TEXT NOT NULL,
    updated_at             TEXT NOT NULL
);
CREATE INDEX studies_parent ON studies(parent_id);

-- Who holds which role where. One active role per user and study/site; removed
-- assignments stay for the record.
CREATE TABLE role_assignments (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     INTEGER NOT NULL REFERENCES users(id),
    study_id    INTEGER NOT NULL REFERENCES studies(id),
    role        TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('active', 'removed')),
    created_at  TEXT NOT NULL,
    removed_at  TEXT
);
CREATE UNIQUE INDEX role_assignments_one_active ON role_assignments(user_id, study_id) WHERE status = 'active';
CREATE INDEX role_assignments_study ON role_assignments(study_id);

-- The audit trail. Append-only: triggers refuse UPDATE and DELETE.
CREATE TABLE audit_events (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    at              TEXT NOT NULL,
    actor_user_id   INTEGER,
    actor_username  TEXT NOT NULL,
    channel         TEXT NOT NULL,
    action          TEXT NOT NULL,
    entity_type     TEXT NOT NULL,
    entity_id       TEXT NOT NULL,
    study_id        INTEGER,
    site_id         INTEGER,
    old_value       TEXT,
    new_value       TEXT,
    reason          TEXT,
    request_id      TEXT
);
CREATE INDEX audit_events_study ON audit_events(study_id, seq);
CREATE INDEX audit_events_entity ON audit_events(entity_type, entity_id, seq);
CREATE INDEX audit_events_actor ON audit_events(actor_user_id, seq);

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: UPDATE refused'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: DELETE refused'); END;

-- The hash chain over audit events, in the order the sealer appended them.
CREATE TABLE audit_seals (
    position   INTEGER PRIMARY KEY,
    seq        INTEGER NOT NULL UNIQUE,
    hash       TEXT NOT NULL,
    sealed_at  TEXT NOT NULL
);

CREATE TRIGGER audit_seals_no_update BEFORE UPDATE ON audit_seals
BEGIN SELECT RAISE(ABORT, 'audit_seals is append-only: UPDATE refused'); END;
CREATE TRIGGER audit_seals_no_delete BEFORE DELETE ON audit_seals
BEGIN SELECT RAISE(ABORT, 'audit_seals is append-only: DELETE refused'); END;
