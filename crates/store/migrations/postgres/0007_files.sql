-- Files uploaded as item values (FILE items). Stored in the database so every instance sees
-- them and a backup holds everything; never changed or deleted (a new upload is a new row).
CREATE TABLE stored_files (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    study_id         BIGINT NOT NULL REFERENCES studies(id),
    participant_id   BIGINT NOT NULL REFERENCES participants(id),
    file_name        TEXT NOT NULL,
    content_type     TEXT NOT NULL,
    size_bytes       BIGINT NOT NULL,
    sha256           TEXT NOT NULL,
    content          BYTEA NOT NULL,
    uploaded_by      BIGINT REFERENCES users(id),
    uploaded_at      TIMESTAMPTZ NOT NULL
);
CREATE TRIGGER stored_files_immutable BEFORE UPDATE OR DELETE ON stored_files
FOR EACH ROW EXECUTE FUNCTION casebook_refuse_change();
