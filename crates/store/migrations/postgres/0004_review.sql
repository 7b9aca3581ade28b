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
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope             TEXT NOT NULL CHECK (scope IN ('event', 'casebook')),
    participant_id    BIGINT NOT NULL REFERENCES participants(id),
    study_event_id    BIGINT REFERENCES study_events(id),     -- NULL for a casebook signature
    signer_id         BIGINT NOT NULL REFERENCES users(id),
    signer_username   TEXT NOT NULL,
    signer_name       TEXT NOT NULL,
    meaning           TEXT NOT NULL,
    signed_at         TIMESTAMPTZ NOT NULL,
    data_hash         TEXT NOT NULL,                          -- SHA-256 (hex) of the canonical signed data
    audit_seq         BIGINT NOT NULL,                        -- the audit row recording the signing
    broken_at         TIMESTAMPTZ,
    broken_reason     TEXT,
    broken_audit_seq  BIGINT,
    CHECK ((scope = 'event') = (study_event_id IS NOT NULL))
);
CREATE INDEX signatures_participant ON signatures(participant_id);
CREATE INDEX signatures_event ON signatures(study_event_id);

CREATE FUNCTION casebook_signature_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'signatures are never deleted';
    END IF;
    IF OLD.broken_at IS NOT NULL
       OR NEW.scope IS DISTINCT FROM OLD.scope OR NEW.participant_id IS DISTINCT FROM OLD.participant_id
       OR NEW.study_event_id IS DISTINCT FROM OLD.study_event_id OR NEW.signer_id IS DISTINCT FROM OLD.signer_id
       OR NEW.signer_username IS DISTINCT FROM OLD.signer_username OR NEW.signer_name IS DISTINCT FROM OLD.signer_name
       OR NEW.meaning IS DISTINCT FROM OLD.meaning OR NEW.signed_at IS DISTINCT FROM OLD.signed_at
       OR NEW.data_hash IS DISTINCT FROM OLD.data_hash OR NEW.audit_seq IS DISTINCT FROM OLD.audit_seq THEN
        RAISE EXCEPTION 'signatures are immutable; only breaking one (once) is recorded';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER signatures_immutable BEFORE UPDATE OR DELETE ON signatures
FOR EACH ROW EXECUTE FUNCTION casebook_signature_guard();

-- Source data verification of a form (OpenClinica event_crf.sdv_status; OC4 SdvStatus). No row
-- means not verified. A change to a verified form's data makes it changed_since_verified.
CREATE TABLE form_sdv (
    form_data_id   BIGINT PRIMARY KEY REFERENCES form_data(id),
    status         TEXT NOT NULL CHECK (status IN ('not_verified', 'verified', 'changed_since_verified')),
    verified_at    TIMESTAMPTZ,                              -- the last verification
    verified_by    BIGINT REFERENCES users(id),
    changed_at     TIMESTAMPTZ,                              -- data changed after that verification
    updated_at     TIMESTAMPTZ NOT NULL
);
