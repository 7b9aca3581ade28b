//! CDISC ODM: study metadata out (1.3.2 plain and with OpenClinica extensions, 2.0) and in;
//! clinical data in (streamed records) and out (streamed writer, 1.3.2 or 2.0); admin data
//! (users, locations, signature meanings) out.

pub mod admin_write;
pub mod clinical;
pub mod clinical_write;
pub mod json;
pub mod read;
pub mod write;
