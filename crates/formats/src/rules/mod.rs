//! OpenClinica 3 rules files: read ([`read_rules`]), check against a study design
//! ([`validate_rules`]), preview ([`summary`]) and write ([`write_rules`]) the
//! [`casebook_domain::rules::RuleSet`] they define (reference `openclinica-data-model.md` §10).
//!
//! An upload is read (structure, syntax, every problem at its line and column), then validated
//! against the design it will run on (paths, types), then previewed; `write_rules` gives the
//! same set back as a `RuleImport` file, for exports. Nothing here runs rules.
//!
//! Architecture invariant (security): as for ODM, no DTD is processed; a `<!DOCTYPE>` refuses
//! the file (see [`crate::odm::read`]).

mod preview;
mod read;
mod tree;
mod validate;
mod write;

pub use preview::{RulePreview, summary};
pub use read::read_rules;
pub use tree::RULES_NAMESPACE;
pub use validate::validate_rules;
pub use write::{EMBEDDED_PREFIX, write_rules, write_rules_embedded};
