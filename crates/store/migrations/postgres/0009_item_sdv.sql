-- Item-level source data verification (OpenClinica 4 item SDV): a monitor verifies one value of a
-- form, and the row keeps the value as verified. A save that leaves the value different (changed,
-- cleared, or its repeating row removed) makes it changed_since_verified, audited in the save's
-- transaction. No row means the value was never verified.
CREATE TABLE item_sdv (
    form_data_id   BIGINT NOT NULL REFERENCES form_data(id),
    group_oid      TEXT NOT NULL,
    row_number     INTEGER NOT NULL,
    item_oid       TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('not_verified', 'verified', 'changed_since_verified')),
    value          TEXT,                                     -- the value as verified
    null_flavour   TEXT,
    verified_at    TIMESTAMPTZ,
    verified_by    BIGINT REFERENCES users(id),
    changed_at     TIMESTAMPTZ,
    updated_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (form_data_id, group_oid, row_number, item_oid)
);
