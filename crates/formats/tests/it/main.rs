//! Integration tests of the format readers against third-party fixtures in `../shared/fixtures`
//! (override with `CASEBOOK_FIXTURES`). A missing fixture directory fails the tests loudly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod occrf;
mod odm_clinical;
mod odm_clinical_write;
mod odm_read;
mod odm_write;
mod rules;
mod table_djx;
mod table_stat;
mod xlsform_checks;
mod xlsform_corpus;
mod xlsform_examples;

use std::path::PathBuf;

pub fn fixtures() -> PathBuf {
    let dir = std::env::var_os("CASEBOOK_FIXTURES")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"), PathBuf::from);
    assert!(
        dir.is_dir(),
        "the shared fixtures are missing at {} (set CASEBOOK_FIXTURES to their directory)",
        dir.display()
    );
    dir
}
