-- Import jobs can be cancelled, can be dry runs, and say which mode they ran in.
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
    CHECK (status IN ('in_progress', 'completed', 'failed', 'cancelled'));
ALTER TABLE jobs ADD COLUMN mode TEXT CHECK (mode IN ('all-or-nothing', 'per-record', 'dry-run'));
