-- The participant matrix pages through a study's participants by keyset: each sort it offers
-- has an index that yields rows in that order from any starting key, so a late page costs what
-- the first does. By participant ID: the UNIQUE (study_id, label_key) index of 0003.

-- By enrolment date, then ID (sort=enrolled / -enrolled).
CREATE INDEX participants_matrix_enrolled ON participants(study_id, enrolled_on, label_key);

-- By site, then ID (sort=site).
CREATE INDEX participants_matrix_site ON participants(study_id, site_id, label_key);

-- The count of the selected participants (`total`), read from the index alone.
CREATE INDEX participants_matrix_count ON participants(study_id, status, site_id, label_key);

-- The form counts of a page's event occurrences, read from the index alone.
CREATE INDEX form_data_matrix ON form_data(study_event_id, removal, status);
