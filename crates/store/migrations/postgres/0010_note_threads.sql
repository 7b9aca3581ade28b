-- Discrepancy notes as threads (OpenClinica discrepancy_note with parent_dn_id): the thread row
-- carries what the list shows (the head: type, status, assignee, latest change) and every note
-- of the thread, the first included, is a message. Threads attach to one value of an item, or a
-- field of a form, an event or a participant. Nothing is deleted; every change is audited.
CREATE TABLE note_threads (
    id               BIGSERIAL PRIMARY KEY,
    study_id         BIGINT NOT NULL REFERENCES studies(id),
    site_id          BIGINT NOT NULL REFERENCES studies(id),     -- the participant's site at creation
    participant_id   BIGINT NOT NULL REFERENCES participants(id),
    entity_type      TEXT NOT NULL CHECK (entity_type IN ('item_data', 'form', 'event', 'participant')),
    study_event_id   BIGINT REFERENCES study_events(id),
    form_data_id     BIGINT REFERENCES form_data(id),
    group_oid        TEXT,
    row_number       INTEGER,
    item_oid         TEXT,
    column_name      TEXT NOT NULL,
    entity_key       TEXT NOT NULL,                              -- as in the audit trail: SS_X/SE_Y[1]/F_Z/IG_G[1]/I_A
    note_type        TEXT NOT NULL CHECK (note_type IN ('failed_validation_check', 'annotation', 'query', 'reason_for_change')),
    status           TEXT NOT NULL CHECK (status IN ('new', 'updated', 'resolution_proposed', 'closed', 'not_applicable')),
    description      TEXT NOT NULL,                              -- the first note's description
    owner_id         BIGINT REFERENCES users(id),                -- who opened the thread (NULL: the system)
    assigned_to      BIGINT REFERENCES users(id),
    rule_key         TEXT,                                       -- rule and target that fired it (one open thread each)
    messages         INTEGER NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    closed_at        TIMESTAMPTZ,
    CHECK ((entity_type = 'item_data') = (item_oid IS NOT NULL)),
    CHECK (entity_type = 'participant' OR study_event_id IS NOT NULL),
    CHECK (entity_type NOT IN ('item_data', 'form') OR form_data_id IS NOT NULL)
);
CREATE INDEX note_threads_study ON note_threads(study_id, status);
CREATE INDEX note_threads_participant ON note_threads(participant_id);
CREATE INDEX note_threads_form ON note_threads(form_data_id);
CREATE INDEX note_threads_assignee ON note_threads(assigned_to, status);
CREATE UNIQUE INDEX note_threads_rule ON note_threads(rule_key) WHERE rule_key IS NOT NULL AND status <> 'closed';

CREATE TABLE note_messages (
    id               BIGSERIAL PRIMARY KEY,
    thread_id        BIGINT NOT NULL REFERENCES note_threads(id),
    status           TEXT NOT NULL CHECK (status IN ('new', 'updated', 'resolution_proposed', 'closed', 'not_applicable')),
    description      TEXT NOT NULL,
    detailed_note    TEXT,
    assigned_to      BIGINT REFERENCES users(id),
    created_at       TIMESTAMPTZ NOT NULL,
    created_by       BIGINT REFERENCES users(id)
);
CREATE INDEX note_messages_thread ON note_messages(thread_id);

CREATE FUNCTION casebook_note_message_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'notes are immutable and never deleted; reply instead';
END $$;
CREATE TRIGGER note_messages_immutable BEFORE UPDATE OR DELETE ON note_messages
FOR EACH ROW EXECUTE FUNCTION casebook_note_message_guard();
CREATE FUNCTION casebook_note_thread_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'note threads are never deleted';
END $$;
CREATE TRIGGER note_threads_no_delete BEFORE DELETE ON note_threads
FOR EACH ROW EXECUTE FUNCTION casebook_note_thread_guard();

-- Notes saved with values before threads existed become one-message threads.
INSERT INTO note_threads (id, study_id, site_id, participant_id, entity_type, study_event_id, form_data_id,
    group_oid, row_number, item_oid, column_name, entity_key, note_type, status, description, owner_id,
    assigned_to, rule_key, messages, created_at, updated_at, closed_at)
SELECT n.id, p.study_id, p.site_id, p.id, 'item_data', e.id, f.id, n.group_oid, n.row_number, n.item_oid, 'value',
    p.oid || '/' || e.event_oid || '[' || e.repeat_key || ']/' || f.form_oid || '/' || n.group_oid || '[' || n.row_number || ']/' || n.item_oid,
    n.note_type, CASE WHEN n.note_type IN ('annotation', 'reason_for_change') THEN 'not_applicable' ELSE n.status END,
    substr(n.text, 1, 255), n.created_by, f.owner_id, NULL, 1, n.created_at, n.created_at, NULL
FROM notes n JOIN form_data f ON f.id = n.form_data_id JOIN study_events e ON e.id = f.study_event_id
JOIN participants p ON p.id = e.participant_id;
SELECT setval(pg_get_serial_sequence('note_threads', 'id'), COALESCE((SELECT MAX(id) FROM note_threads), 0) + 1, false);
INSERT INTO note_messages (thread_id, status, description, detailed_note, assigned_to, created_at, created_by)
SELECT t.id, t.status, t.description, CASE WHEN length(n.text) > 255 THEN n.text END, t.assigned_to, n.created_at, n.created_by
FROM notes n JOIN note_threads t ON t.id = n.id;
DROP TABLE notes;

-- Messages waiting to be sent (notifications). Without a configured mail server they stay queued
-- and readable by administrators; they are never dropped.
CREATE TABLE outbox (
    id               BIGSERIAL PRIMARY KEY,
    kind             TEXT NOT NULL CHECK (kind IN ('email')),
    to_user_id       BIGINT REFERENCES users(id),
    to_address       TEXT NOT NULL,
    subject          TEXT NOT NULL,
    body             TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('queued', 'sent', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    sent_at          TIMESTAMPTZ
);
CREATE INDEX outbox_status ON outbox(status, id);
