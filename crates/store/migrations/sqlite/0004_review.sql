-- Review of collected data: event status actions (lock remembers the status it came from),
-- electronic signatures of events and casebooks, and source data verification of forms.
-- Every change is audited in the same transaction (audit_events).

-- The status an event had when it was locked; unlocking returns to it (OpenClinica old_status_id).
ALTER TABLE study_events ADD COLUMN status_before_lock TEXT
    CHECK (status_before_lock IN ('scheduled', 'data_entry_started', 'completed', 'stopped', 'skipped', 'signed'));

-- Electronic signatures (21 CFR Part 11 §11.50, §11.70, §11.200): who signed (user id and printed
-- name at the time), when (UTC), what it means, and a SHA-256 of the signed data, so the record
-- can show what was attested. A signature is never deleted or rewritten; a later change to the
-- signed data marks it broken, once, with the time, the reason and the audit row that records it.
CREATE TABLE signatures (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    scope             TEXT NOT NULL CHECK (scope IN ('event', 'casebook')),
    participant_id    INTEGER NOT NULL REFERENCES participants(id),
    study_event_id    INTEGER REFERENCES study_events(id),   -- NULL for a casebook signature
    signer_id         INTEGER NOT NULL REFERENCES users(id),
    signer_username   TEXT NOT NULL,
    signer_name       TEXT NOT NULL,
    meaning           TEXT NOT NULL,
    signed_at         TEXT NOT NULL,
    data_hash         TEXT NOT NULL,                          -- SHA-256 (hex) of the canonical signed data
    audit_seq         INTEGER NOT NULL,                       -- the audit row recording the signing
    broken_at         TEXT,
    broken_reason     TEXT,
    broken_audit_seq  INTEGER,
    CHECK ((scope = 'event') = (study_event_id IS NOT NULL))
);
CREATE INDEX signatures_participant ON signatures(participant_id);
CREATE INDEX signatures_event ON signatures(study_event_id);

CREATE TRIGGER signatures_immutable BEFORE UPDATE ON signatures
WHEN OLD.broken_at IS NOT NULL
  OR NEW.scope IS NOT OLD.scope OR NEW.participant_id IS NOT OLD.participant_id
  OR NEW.study_event_id IS NOT OLD.study_event_id OR NEW.signer_id IS NOT OLD.signer_id
  OR NEW.signer_username IS NOT OLD.signer_username OR NEW.signer_name IS NOT OLD.signer_name
  OR NEW.meaning IS NOT OLD.meaning OR NEW.signed_at IS NOT OLD.signed_at
  OR NEW.data_hash IS NOT OLD.data_hash OR NEW.audit_seq IS NOT OLD.audit_seq
BEGIN SELECT RAISE(ABORT, 'signatures are immutable; only breaking one (once) is recorded'); END;
CREATE TRIGGER signatures_no_delete BEFORE DELETE ON signatures
BEGIN SELECT RAISE(ABORT, 'signatures are never deleted'); END;

-- Source data verification of a form (OpenClinica event_crf.sdv_status; OC4 SdvStatus). No row
-- means not verified. A change to a verified form's data makes it changed_since_verified.
CREATE TABLE form_sdv (
    form_data_id   INTEGER PRIMARY KEY REFERENCES form_data(id),
    status         TEXT NOT NULL CHECK (status IN ('not_verified', 'verified', 'changed_since_verified')),
    verified_at    TEXT,                                     -- the last verification
    verified_by    INTEGER REFERENCES users(id),
    changed_at     TEXT,                                     -- data changed after that verification
    updated_at     TEXT NOT NULL
);
