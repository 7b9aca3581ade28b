//! ODM metadata reader (in progress).
