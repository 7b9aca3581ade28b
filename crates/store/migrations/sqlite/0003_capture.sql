-- Data capture: participants, their events, forms and item values. Every change is audited in
-- the same transaction (audit_events); nothing is deleted: removal is a status.

-- The running number behind automatic participant IDs, per study: incremented inside the
-- enrolling transaction, so two enrolments never get the same number.
CREATE TABLE participant_counters (
    study_id  INTEGER PRIMARY KEY REFERENCES studies(id),
    last      INTEGER NOT NULL
);

CREATE TABLE participants (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    study_id         INTEGER NOT NULL REFERENCES studies(id),
    site_id          INTEGER NOT NULL REFERENCES studies(id),
    label            TEXT NOT NULL,
    label_key        TEXT NOT NULL,             -- lower-cased label: unique per study
    oid              TEXT NOT NULL UNIQUE,
    secondary_label  TEXT,
    person_id        TEXT,
    sex              TEXT CHECK (sex IN ('m', 'f')),
    date_of_birth    TEXT,                      -- YYYY-MM-DD, or YYYY when only the year is collected
    enrolled_on      TEXT NOT NULL,             -- YYYY-MM-DD
    group_name       TEXT,
    status           TEXT NOT NULL CHECK (status IN ('available', 'signed', 'removed', 'auto_removed')),
    version          INTEGER NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    UNIQUE (study_id, label_key)
);
CREATE INDEX participants_site ON participants(site_id, label_key);

CREATE TABLE study_events (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    participant_id   INTEGER NOT NULL REFERENCES participants(id),
    event_oid        TEXT NOT NULL,
    repeat_key       INTEGER NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('scheduled', 'data_entry_started', 'completed', 'stopped', 'skipped', 'locked', 'signed')),
    removal          TEXT NOT NULL CHECK (removal IN ('available', 'removed', 'auto_removed')),
    start_at         TEXT,
    end_at           TEXT,
    location         TEXT,
    version          INTEGER NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    UNIQUE (participant_id, event_oid, repeat_key)
);

-- A form in an event (OpenClinica event CRF), with the form version it was started in and a
-- version number that every save increments (a save based on an older number is refused).
CREATE TABLE form_data (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    study_event_id     INTEGER NOT NULL REFERENCES study_events(id),
    form_oid           TEXT NOT NULL,
    form_version_oid   TEXT NOT NULL,
    design_version     INTEGER NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('initial_data_entry', 'complete')),
    removal            TEXT NOT NULL CHECK (removal IN ('available', 'removed', 'auto_removed')),
    owner_id           INTEGER REFERENCES users(id),
    completed_at       TEXT,
    completed_by       INTEGER REFERENCES users(id),
    version            INTEGER NOT NULL,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    UNIQUE (study_event_id, form_oid)
);
CREATE INDEX form_data_version ON form_data(form_version_oid);

-- Item values as canonical text with the item's declared type in the design (as ODM does).
-- A removed repeating row keeps its values with deleted = 1, for the audit.
CREATE TABLE item_data (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    form_data_id   INTEGER NOT NULL REFERENCES form_data(id),
    group_oid      TEXT NOT NULL,
    row_number     INTEGER NOT NULL,
    item_oid       TEXT NOT NULL,
    value          TEXT,
    null_flavour   TEXT,
    deleted        INTEGER NOT NULL DEFAULT 0,
    updated_at     TEXT NOT NULL,
    updated_by     INTEGER REFERENCES users(id),
    UNIQUE (form_data_id, group_oid, row_number, item_oid)
);
CREATE INDEX item_data_item ON item_data(item_oid);

-- Discrepancy notes attached to item values (the query workflow builds on these).
CREATE TABLE notes (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    form_data_id   INTEGER NOT NULL REFERENCES form_data(id),
    group_oid      TEXT NOT NULL,
    row_number     INTEGER NOT NULL,
    item_oid       TEXT NOT NULL,
    note_type      TEXT NOT NULL CHECK (note_type IN ('failed_validation_check', 'annotation', 'query', 'reason_for_change')),
    status         TEXT NOT NULL CHECK (status IN ('new', 'updated', 'resolution_proposed', 'closed', 'not_applicable')),
    text           TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    created_by     INTEGER REFERENCES users(id)
);
CREATE INDEX notes_form ON notes(form_data_id);
