-- Double data entry: after initial data entry is complete, a second person re-keys the form;
-- the second pass is kept apart until every mismatch is resolved.
ALTER TABLE form_data ADD COLUMN dde_stage TEXT CHECK (dde_stage IN ('awaiting_dde', 'done'));
ALTER TABLE form_data ADD COLUMN ide_completed_at TIMESTAMPTZ;
ALTER TABLE form_data ADD COLUMN ide_completed_by BIGINT REFERENCES users(id);

CREATE TABLE dde_values (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    form_data_id   BIGINT NOT NULL REFERENCES form_data(id),
    group_oid      TEXT NOT NULL,
    row_number     INTEGER NOT NULL,
    item_oid       TEXT NOT NULL,
    value          TEXT,
    null_flavour   TEXT,
    keyed_by       BIGINT REFERENCES users(id),
    keyed_at       TIMESTAMPTZ NOT NULL,
    UNIQUE (form_data_id, group_oid, row_number, item_oid)
);
