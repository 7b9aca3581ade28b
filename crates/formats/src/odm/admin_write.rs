//! CDISC ODM `AdminData` out: the users, locations and signature meanings that clinical data's
//! `AuditRecord`s and `Signature`s refer to (`UserRef`, `LocationRef`, `SignatureRef`).
//!
//! [`write_admin_data`] writes the one element, without declaration or root, into any output, so
//! that it can sit where ODM wants it in a document: after `Study` and before `ClinicalData`
//! (e.g. [`super::write::write_metadata_study`], then this, then
//! [`super::clinical_write::ClinicalWriter::embedded`]).
//!
//! ODM 1.3.2 and 2.0 differ here:
//! - a user's names are `LoginName`, `FullName`, `FirstName`, `LastName`, `Organization`, `Email`
//!   in 1.3.2, and `UserName`, `FullName`, `GivenName`, `FamilyName`,
//!   `Telecom TelecomType="Email"` in 2.0 (whose organisations are elements of their own, so a
//!   user's organisation is left out);
//! - a location's type is `LocationType` in 1.3.2 and `Role` (free text) in 2.0;
//! - both require at least one `MetaDataVersionRef` per location (refused otherwise).
//!
//! Markup is written only through quick-xml events, which escape attribute values and text.

use std::io::{self, Write};

use quick_xml::Writer;
use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use time::Date;

use super::write::OdmFlavour;

/// An `AdminData` element.
#[derive(Debug, Clone, Copy, Default)]
pub struct AdminDataOut<'a> {
    /// `StudyOID`, when the data is about one study.
    pub study_oid: Option<&'a str>,
    /// `User`s.
    pub users: &'a [UserOut<'a>],
    /// `Location`s (sites, the sponsor …).
    pub locations: &'a [LocationOut<'a>],
    /// `SignatureDef`s: what a signature means.
    pub signature_defs: &'a [SignatureDefOut<'a>],
}

/// ODM's `UserType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserType {
    Sponsor,
    Investigator,
    Lab,
    Other,
}

impl UserType {
    fn odm(self) -> &'static str {
        match self {
            Self::Sponsor => "Sponsor",
            Self::Investigator => "Investigator",
            Self::Lab => "Lab",
            Self::Other => "Other",
        }
    }
}

/// A `User`.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserOut<'a> {
    /// `OID` (what `UserRef/@UserOID` refers to).
    pub oid: &'a str,
    /// `UserType`.
    pub user_type: Option<UserType>,
    /// The login name (`LoginName` in 1.3.2, `UserName` in 2.0).
    pub login_name: Option<&'a str>,
    /// `FullName`.
    pub full_name: Option<&'a str>,
    /// `FirstName` in 1.3.2, `GivenName` in 2.0.
    pub first_name: Option<&'a str>,
    /// `LastName` in 1.3.2, `FamilyName` in 2.0.
    pub last_name: Option<&'a str>,
    /// `Organization` (1.3.2 only).
    pub organization: Option<&'a str>,
    /// `Email` in 1.3.2, `Telecom TelecomType="Email"` in 2.0.
    pub email: Option<&'a str>,
}

/// ODM's `LocationType` (written as `Role` in ODM 2.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocationType {
    Sponsor,
    Site,
    Cro,
    Lab,
    Other,
}

impl LocationType {
    fn odm(self) -> &'static str {
        match self {
            Self::Sponsor => "Sponsor",
            Self::Site => "Site",
            Self::Cro => "CRO",
            Self::Lab => "Lab",
            Self::Other => "Other",
        }
    }
}

/// A `Location`.
#[derive(Debug, Clone, Copy)]
pub struct LocationOut<'a> {
    /// `OID` (what `LocationRef/@LocationOID` refers to).
    pub oid: &'a str,
    /// `Name`.
    pub name: &'a str,
    /// `LocationType` (1.3.2) or `Role` (2.0).
    pub location_type: Option<LocationType>,
    /// `MetaDataVersionRef`s: the study versions in use at the location (at least one).
    pub metadata_versions: &'a [MetaDataVersionRefOut<'a>],
}

/// A `MetaDataVersionRef`: a study version in use at a location since a date.
#[derive(Debug, Clone, Copy)]
pub struct MetaDataVersionRefOut<'a> {
    /// `StudyOID`.
    pub study_oid: &'a str,
    /// `MetaDataVersionOID`.
    pub metadata_version_oid: &'a str,
    /// `EffectiveDate`.
    pub effective_date: Date,
}

/// A `SignatureDef` (`Methodology="Electronic"`: Casebook's signatures are a password
/// re-entered, not a cryptographic signature).
#[derive(Debug, Clone, Copy)]
pub struct SignatureDefOut<'a> {
    /// `OID` (what `SignatureRef/@SignatureOID` refers to).
    pub oid: &'a str,
    /// `Meaning`: what the signer attests.
    pub meaning: &'a str,
    /// `LegalReason`: the regulation the signature answers to.
    pub legal_reason: &'a str,
}

fn leaf<W: Write>(w: &mut Writer<W>, name: &str, text: &str) -> io::Result<()> {
    w.write_event(Event::Start(BytesStart::new(name)))?;
    w.write_event(Event::Text(BytesText::new(text)))?;
    w.write_event(Event::End(BytesEnd::new(name)))
}

/// Writes one `AdminData` element (no XML declaration, no root) to `out`, as ODM 1.3.2 (either
/// 1.3.2 flavour) or 2.0.
///
/// # Errors
/// When writing fails, or [`io::ErrorKind::InvalidInput`] for a location without a
/// `MetaDataVersionRef` (both ODM versions require one); nothing is written then.
pub fn write_admin_data<W: Write>(out: W, admin: &AdminDataOut<'_>, flavour: OdmFlavour) -> io::Result<()> {
    if let Some(l) = admin.locations.iter().find(|l| l.metadata_versions.is_empty()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("location {} has no metadata version: ODM requires at least one MetaDataVersionRef", l.oid),
        ));
    }
    let odm20 = flavour == OdmFlavour::Odm20;
    let mut w = Writer::new_with_indent(out, b' ', 2);
    let mut e = BytesStart::new("AdminData");
    if let Some(s) = admin.study_oid {
        e.push_attribute(("StudyOID", s));
    }
    w.write_event(Event::Start(e))?;
    for user in admin.users {
        write_user(&mut w, user, odm20)?;
    }
    for location in admin.locations {
        let mut e = BytesStart::new("Location");
        e.push_attribute(("OID", location.oid));
        e.push_attribute(("Name", location.name));
        if let Some(t) = location.location_type {
            e.push_attribute((if odm20 { "Role" } else { "LocationType" }, t.odm()));
        }
        w.write_event(Event::Start(e))?;
        for m in location.metadata_versions {
            let effective = m.effective_date.to_string();
            let mut e = BytesStart::new("MetaDataVersionRef");
            e.push_attribute(("StudyOID", m.study_oid));
            e.push_attribute(("MetaDataVersionOID", m.metadata_version_oid));
            e.push_attribute(("EffectiveDate", effective.as_str()));
            w.write_event(Event::Empty(e))?;
        }
        w.write_event(Event::End(BytesEnd::new("Location")))?;
    }
    for def in admin.signature_defs {
        let mut e = BytesStart::new("SignatureDef");
        e.push_attribute(("OID", def.oid));
        e.push_attribute(("Methodology", "Electronic"));
        w.write_event(Event::Start(e))?;
        leaf(&mut w, "Meaning", def.meaning)?;
        leaf(&mut w, "LegalReason", def.legal_reason)?;
        w.write_event(Event::End(BytesEnd::new("SignatureDef")))?;
    }
    w.write_event(Event::End(BytesEnd::new("AdminData")))?;
    w.into_inner().flush()
}

fn write_user<W: Write>(w: &mut Writer<W>, user: &UserOut<'_>, odm20: bool) -> io::Result<()> {
    let mut e = BytesStart::new("User");
    e.push_attribute(("OID", user.oid));
    if let Some(t) = user.user_type {
        e.push_attribute(("UserType", t.odm()));
    }
    w.write_event(Event::Start(e))?;
    let names = if odm20 {
        [
            ("UserName", user.login_name),
            ("FullName", user.full_name),
            ("GivenName", user.first_name),
            ("FamilyName", user.last_name),
            ("", None),
        ]
    } else {
        [
            ("LoginName", user.login_name),
            ("FullName", user.full_name),
            ("FirstName", user.first_name),
            ("LastName", user.last_name),
            ("Organization", user.organization),
        ]
    };
    for (name, value) in names {
        if let Some(v) = value {
            leaf(w, name, v)?;
        }
    }
    if let Some(email) = user.email {
        if odm20 {
            let mut e = BytesStart::new("Telecom");
            e.push_attribute(("TelecomType", "Email"));
            e.push_attribute(("Value", email));
            w.write_event(Event::Empty(e))?;
        } else {
            leaf(w, "Email", email)?;
        }
    }
    w.write_event(Event::End(BytesEnd::new("User")))
}
