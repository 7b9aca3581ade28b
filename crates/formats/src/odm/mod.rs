//! CDISC ODM: study metadata out (1.3.2 plain and with OpenClinica extensions, 2.0) and in.

pub mod clinical;
pub mod json;
pub mod read;
pub mod write;
