//! ODM metadata writer (in progress).
