-- Files uploaded as item values (FILE items). Stored in the database so every instance sees
-- them and a backup holds everything; never changed or deleted (a new upload is a new row).
CREATE TABLE stored_files (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    study_id         INTEGER NOT NULL REFERENCES studies(id),
    participant_id   INTEGER NOT NULL REFERENCES participants(id),
    file_name        TEXT NOT NULL,
    content_type     TEXT NOT NULL,
    size_bytes       INTEGER NOT NULL,
    sha256           TEXT NOT NULL,
    content          BLOB NOT NULL,
    uploaded_by      INTEGER REFERENCES users(id),
    uploaded_at      TEXT NOT NULL
);
CREATE TRIGGER stored_files_no_update BEFORE UPDATE ON stored_files
BEGIN SELECT RAISE(ABORT, 'stored_files are immutable: UPDATE refused'); END;
CREATE TRIGGER stored_files_no_delete BEFORE DELETE ON stored_files
BEGIN SELECT RAISE(ABORT, 'stored_files are immutable: DELETE refused'); END;
