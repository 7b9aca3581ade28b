//! OpenClinica 3 CRF design template importer (in progress).
