//! CDISC ODM `ClinicalData` out (1.3.2, or 2.0), streamed: participants, their event
//! occurrences, forms, item group rows and values are written as they come, so an export of any
//! size needs the memory of one record. The caller feeds records in order (participant, then its
//! events, then each event's forms, then each form's groups) and may drain the output between
//! records.
//!
//! Mapping (reference `openclinica-data-model.md` §11.3): `SubjectData/@SubjectKey` is the
//! participant OID; `FormData/@FormOID` is the form **version** OID (as OpenClinica 3 exports and
//! imports it, and as Casebook's metadata export defines one `FormDef` per version);
//! `ItemGroupRepeatKey` is written for repeating groups, `StudyEventRepeatKey` for repeating
//! events; a null flavour is `IsNull="Yes"`. The OpenClinica flavour adds OpenClinica 3's
//! participant, event and form attributes (label, person ID, status, dates, version) and the
//! null flavour as `OpenClinica:ReasonForNull`; the plain flavour never declares the
//! OpenClinica namespace and validates against the CDISC schema.
//!
//! What each option writes, and where:
//! - **ODM 2.0** ([`ClinicalFile::odm20`]): the same calls write ODM 2.0, which has no
//!   `FormData`: a form is an `ItemGroupData` whose `ItemGroupOID` is the form version OID (the
//!   `ItemGroupDef Type="Form"` of Casebook's 2.0 metadata export), holding one nested
//!   `ItemGroupData` per item group row; a value is `<ItemData ItemOID=…><Value>…</Value></ItemData>`
//!   and a null flavour `IsNull="Yes"` without a `Value`. OpenClinica's extensions exist only
//!   for ODM 1.3: asking for both is refused.
//! - **Audit records and signatures** ([`AuditOut`], [`SignatureOut`], the `audit` and
//!   `signature` fields of [`SubjectOut`], [`EventOut`], [`FormOut`], [`GroupOut`] and
//!   [`ItemOut`]): ODM's own `AuditRecord` (`UserRef`, `LocationRef`, `DateTimeStamp` in UTC,
//!   `ReasonForChange`, `SourceID`) and `Signature` (`UserRef`, `LocationRef`, `SignatureRef`,
//!   `DateTimeStamp`), in every flavour. ODM 1.3.2 puts them first in the element, so they are
//!   written with its start tag; ODM 2.0 puts them after the element's children, so for a
//!   participant, an event or a form the writer keeps a copy (one per open level) and writes it
//!   when the element closes. They refer to the `User`, `Location` and `SignatureDef` of an
//!   `AdminData` element (see [`super::admin_write`]).
//! - **OpenClinica audit logs and discrepancy notes** ([`AuditLogOut`], [`NoteOut`], OpenClinica
//!   flavour only; the other flavours leave them out, as they leave out OpenClinica's
//!   attributes): `OpenClinica:AuditLogs` and `OpenClinica:DiscrepancyNotes`, each with
//!   `EntityID` = the element's OID (participant OID, event OID, form version OID, item OID).
//!   ODM puts extension elements last in an element, after its children, so on a participant,
//!   an event or a form they are written by [`ClinicalWriter::extensions`] once the caller has
//!   written that element's children: it closes deeper open elements, writes the extensions and
//!   leaves the element open but finished (a further child of it is refused); on a value they
//!   are the `audit_logs` and `notes` fields of [`ItemOut`]. OpenClinica writes audit times in
//!   its server's time zone without an offset (`yyyy-MM-ddTHH:mm:ss`); Casebook writes the same
//!   shape in UTC.
//!
//! Markup is written only through quick-xml events, which escape attribute values and text.
//!
//! Architecture invariant (memory): the writer holds the output's buffer, the OIDs of the open
//! participant, event and form (for `EntityID`), and in ODM 2.0 one audit record and one
//! signature per open level; nothing grows with the number of records.

use std::io::{self, Write};

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use time::macros::format_description;
use time::{Date, OffsetDateTime};

use super::write::{ODM_1_3_NAMESPACE, ODM_2_0_NAMESPACE, OPENCLINICA_NAMESPACE};

/// The file being written.
#[derive(Debug, Clone)]
pub struct ClinicalFile<'a> {
    /// `ClinicalData/@StudyOID`.
    pub study_oid: &'a str,
    /// `ClinicalData/@MetaDataVersionOID`.
    pub metadata_version_oid: &'a str,
    /// `ODM/@FileOID`.
    pub file_oid: &'a str,
    /// `ODM/@CreationDateTime` (written in UTC).
    pub created: OffsetDateTime,
    /// With OpenClinica 3's extension attributes and elements (ODM 1.3.2 only).
    pub openclinica: bool,
    /// ODM 2.0 instead of 1.3.2 (see the module documentation for the mapping).
    pub odm20: bool,
}

/// An `AuditRecord`: who changed the element, where, when and why.
#[derive(Debug, Clone, Copy)]
pub struct AuditOut<'a> {
    /// `UserRef/@UserOID`: a `User` of the `AdminData`.
    pub user_oid: &'a str,
    /// `LocationRef/@LocationOID`: a `Location` of the `AdminData`.
    pub location_oid: &'a str,
    /// `DateTimeStamp`, written in UTC (`…Z`).
    pub date_time: OffsetDateTime,
    /// `ReasonForChange`.
    pub reason_for_change: Option<&'a str>,
    /// `SourceID`: where the data came from (a source document, another system's record).
    pub source_id: Option<&'a str>,
}

/// A `Signature`: who signed the element, where, when, and with which meaning.
#[derive(Debug, Clone, Copy)]
pub struct SignatureOut<'a> {
    /// `@ID`: unique in the document (an `xs:ID`; some consumers, odmlib among them, need it).
    pub id: Option<&'a str>,
    /// `UserRef/@UserOID`: a `User` of the `AdminData`.
    pub user_oid: &'a str,
    /// `LocationRef/@LocationOID`: a `Location` of the `AdminData`.
    pub location_oid: &'a str,
    /// `SignatureRef/@SignatureOID`: a `SignatureDef` of the `AdminData`.
    pub signature_oid: &'a str,
    /// `DateTimeStamp`, written in UTC (`…Z`).
    pub date_time: OffsetDateTime,
}

/// One `OpenClinica:AuditLog` (reference `openclinica-data-model.md` §9).
#[derive(Debug, Clone, Copy)]
pub struct AuditLogOut<'a> {
    /// `ID` (`AL_n`).
    pub id: &'a str,
    /// `UserID` (`USR_n`).
    pub user_id: &'a str,
    /// `UserName`: the login name.
    pub user_name: &'a str,
    /// `Name`: the audited field (item name, `Status`, `Start date` …).
    pub name: &'a str,
    /// `DateTimeStamp`, written `yyyy-MM-ddTHH:mm:ss` in UTC.
    pub date_time: OffsetDateTime,
    /// `AuditType` (`Item data value updated`, `Study subject created` …).
    pub audit_type: &'a str,
    /// `ReasonForChange`, when there is one.
    pub reason_for_change: Option<&'a str>,
    /// `OldValue`, when there is one.
    pub old_value: Option<&'a str>,
    /// `NewValue`, when there is one.
    pub new_value: Option<&'a str>,
    /// `ValueType`, when there is one.
    pub value_type: Option<&'a str>,
}

/// One `OpenClinica:DiscrepancyNote`: a thread, with its messages.
#[derive(Debug, Clone, Copy)]
pub struct NoteOut<'a> {
    /// `ID` (`DN_n`).
    pub id: &'a str,
    /// `Status` (`New`, `Updated`, `Resolution Proposed`, `Closed`, `Not Applicable`).
    pub status: &'a str,
    /// `NoteType` (`Query`, `Annotation`, `Reason for Change`, `Failed Validation Check`).
    pub note_type: &'a str,
    /// `DateUpdated`.
    pub date_updated: Date,
    /// `EntityName`: the field the note is on (`value`, `start_date`, `date_of_birth` …).
    pub entity_name: &'a str,
    /// The messages (`ChildNote`); `NumberOfChildNotes` is their count.
    pub children: &'a [ChildNoteOut<'a>],
}

/// One `OpenClinica:ChildNote`: a message in a thread.
#[derive(Debug, Clone, Copy)]
pub struct ChildNoteOut<'a> {
    /// `ID` (`CDN_n`).
    pub id: &'a str,
    /// `Status` after this message.
    pub status: &'a str,
    /// `DateCreated`.
    pub date_created: Date,
    /// `Name` (OpenClinica: the entity name again).
    pub name: &'a str,
    /// `OpenClinica:Description`: the message's summary.
    pub description: &'a str,
    /// `OpenClinica:DetailedNote`, when there is one.
    pub detailed_note: Option<&'a str>,
    /// `UserRef/@UserOID` (`USR_n`): the author.
    pub user_oid: &'a str,
    /// `UserRef/@OpenClinica:UserName`: the author's login name.
    pub user_name: &'a str,
    /// `UserRef/@OpenClinica:FullName`: the author's full name.
    pub user_full_name: &'a str,
}

/// A participant (`SubjectData`).
#[derive(Debug, Clone, Default)]
pub struct SubjectOut<'a> {
    /// The participant OID (`SS_…`).
    pub key: &'a str,
    /// The participant's label (`OpenClinica:StudySubjectID`).
    pub label: &'a str,
    /// `OpenClinica:UniqueIdentifier`.
    pub person_id: Option<&'a str>,
    /// `OpenClinica:SecondaryID`.
    pub secondary_id: Option<&'a str>,
    /// `YYYY-MM-DD`, or `YYYY` when only the year is collected.
    pub date_of_birth: Option<&'a str>,
    /// `m` or `f`.
    pub sex: Option<&'a str>,
    /// `OpenClinica:EnrollmentDate`.
    pub enrolled_on: Option<&'a str>,
    /// Casebook's status (`available`, `signed`, …).
    pub status: &'a str,
    /// `AuditRecord` of the participant.
    pub audit: Option<AuditOut<'a>>,
    /// `Signature` of the participant's casebook.
    pub signature: Option<SignatureOut<'a>>,
}

/// An event occurrence (`StudyEventData`).
#[derive(Debug, Clone, Default)]
pub struct EventOut<'a> {
    /// `StudyEventOID`.
    pub event_oid: &'a str,
    /// Written for repeating events.
    pub repeat_key: Option<i32>,
    /// Casebook's status (`scheduled`, `data_entry_started`, …).
    pub status: &'a str,
    /// `OpenClinica:StartDate`.
    pub start: Option<OffsetDateTime>,
    /// `OpenClinica:EndDate`.
    pub end: Option<OffsetDateTime>,
    /// `OpenClinica:StudyEventLocation`.
    pub location: Option<&'a str>,
    /// `AuditRecord` of the occurrence.
    pub audit: Option<AuditOut<'a>>,
    /// `Signature` of the occurrence.
    pub signature: Option<SignatureOut<'a>>,
}

/// A form (`FormData`; in ODM 2.0 an `ItemGroupData` of the form version).
#[derive(Debug, Clone, Default)]
pub struct FormOut<'a> {
    /// The form version OID.
    pub version_oid: &'a str,
    /// The version's label (`OpenClinica:Version`).
    pub version_label: &'a str,
    /// Casebook's status (`initial_data_entry`, `complete`).
    pub status: &'a str,
    /// The form waits for its second pass of double data entry.
    pub awaiting_dde: bool,
    /// `AuditRecord` of the form.
    pub audit: Option<AuditOut<'a>>,
    /// `Signature` of the form.
    pub signature: Option<SignatureOut<'a>>,
}

/// One item group row (`ItemGroupData`) with its values.
#[derive(Debug, Clone, Default)]
pub struct GroupOut<'a> {
    /// `ItemGroupOID`.
    pub group_oid: &'a str,
    /// `ItemGroupRepeatKey`, written for repeating groups.
    pub repeat_key: Option<i32>,
    /// The values, in order.
    pub items: &'a [ItemOut<'a>],
    /// `AuditRecord` of the row.
    pub audit: Option<AuditOut<'a>>,
    /// `Signature` of the row.
    pub signature: Option<SignatureOut<'a>>,
}

/// One value (`ItemData`).
#[derive(Debug, Clone, Default)]
pub struct ItemOut<'a> {
    /// `ItemOID`.
    pub item_oid: &'a str,
    /// The value (`@Value` in 1.3.2, `Value` in 2.0).
    pub value: Option<&'a str>,
    /// A null flavour code (NI, NA, UNK, …) instead of a value.
    pub null_flavour: Option<&'a str>,
    /// `AuditRecord` of the value.
    pub audit: Option<AuditOut<'a>>,
    /// `Signature` of the value.
    pub signature: Option<SignatureOut<'a>>,
    /// `OpenClinica:AuditLogs` of the value (OpenClinica flavour only).
    pub audit_logs: &'a [AuditLogOut<'a>],
    /// `OpenClinica:DiscrepancyNotes` on the value (OpenClinica flavour only).
    pub notes: &'a [NoteOut<'a>],
}

/// The open element [`ClinicalWriter::extensions`] writes at the end of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// The current participant (`SubjectData`).
    Subject,
    /// The current event occurrence (`StudyEventData`).
    Event,
    /// The current form (`FormData`).
    Form,
}

/// Where the writer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    ClinicalData,
    Subject,
    Event,
    Form,
}

impl Level {
    /// The index of an open participant, event or form in per-level state.
    fn slot(self) -> usize {
        match self {
            Self::ClinicalData | Self::Subject => 0,
            Self::Event => 1,
            Self::Form => 2,
        }
    }

    fn parent(self) -> Self {
        match self {
            Self::Form => Self::Event,
            Self::Event => Self::Subject,
            Self::Subject | Self::ClinicalData => Self::ClinicalData,
        }
    }
}

impl From<At> for Level {
    fn from(at: At) -> Self {
        match at {
            At::Subject => Self::Subject,
            At::Event => Self::Event,
            At::Form => Self::Form,
        }
    }
}

/// An audit record or signature kept until its element closes (ODM 2.0 writes them last).
#[derive(Debug, Default)]
struct Trailer {
    audit: Option<OwnedAudit>,
    signature: Option<OwnedSignature>,
}

#[derive(Debug)]
struct OwnedAudit {
    user_oid: String,
    location_oid: String,
    date_time: OffsetDateTime,
    reason_for_change: Option<String>,
    source_id: Option<String>,
}

impl OwnedAudit {
    fn new(a: &AuditOut<'_>) -> Self {
        Self {
            user_oid: a.user_oid.to_owned(),
            location_oid: a.location_oid.to_owned(),
            date_time: a.date_time,
            reason_for_change: a.reason_for_change.map(str::to_owned),
            source_id: a.source_id.map(str::to_owned),
        }
    }

    fn borrow(&self) -> AuditOut<'_> {
        AuditOut {
            user_oid: &self.user_oid,
            location_oid: &self.location_oid,
            date_time: self.date_time,
            reason_for_change: self.reason_for_change.as_deref(),
            source_id: self.source_id.as_deref(),
        }
    }
}

#[derive(Debug)]
struct OwnedSignature {
    id: Option<String>,
    user_oid: String,
    location_oid: String,
    signature_oid: String,
    date_time: OffsetDateTime,
}

impl OwnedSignature {
    fn new(s: &SignatureOut<'_>) -> Self {
        Self {
            user_oid: s.user_oid.to_owned(),
            id: s.id.map(str::to_owned),
            location_oid: s.location_oid.to_owned(),
            signature_oid: s.signature_oid.to_owned(),
            date_time: s.date_time,
        }
    }

    fn borrow(&self) -> SignatureOut<'_> {
        SignatureOut {
            id: self.id.as_deref(),
            user_oid: &self.user_oid,
            location_oid: &self.location_oid,
            signature_oid: &self.signature_oid,
            date_time: self.date_time,
        }
    }
}

/// Writes `ClinicalData` record by record.
pub struct ClinicalWriter<W: Write> {
    w: Writer<W>,
    openclinica: bool,
    odm20: bool,
    level: Level,
    /// The innermost open element has had its extensions written: it takes no more children.
    finished_level: bool,
    /// The OIDs of the open participant, event and form (`EntityID` of their extensions).
    entity: [String; 3],
    /// ODM 2.0: the audit record and signature of the open participant, event and form.
    trailers: [Trailer; 3],
    /// Inside another document's `ODM` element: no declaration, no root.
    embedded: bool,
}

fn utc(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z"))
        .unwrap_or_default()
}

/// OpenClinica's audit time shape (`yyyy-MM-ddTHH:mm:ss`, no offset), in UTC.
fn oc_timestamp(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"))
        .unwrap_or_default()
}

fn date(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC).date().to_string()
}

/// OpenClinica 3's lower-case status names.
fn oc_subject_status(s: &str) -> &str {
    match s {
        "auto_removed" => "auto-removed",
        other => other,
    }
}

fn oc_event_status(s: &str) -> String {
    s.replace('_', " ")
}

fn oc_form_status(form: &FormOut<'_>) -> &'static str {
    match (form.status, form.awaiting_dde) {
        ("complete", _) => "data entry complete",
        (_, true) => "initial data entry completed",
        _ => "initial data entry",
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message.to_owned())
}

/// `<name>text</name>`.
fn leaf<W: Write>(w: &mut Writer<W>, name: &str, text: &str) -> io::Result<()> {
    w.write_event(Event::Start(BytesStart::new(name)))?;
    w.write_event(Event::Text(BytesText::new(text)))?;
    w.write_event(Event::End(BytesEnd::new(name)))
}

/// `<name attr="value"/>`.
fn empty_with<W: Write>(w: &mut Writer<W>, name: &str, attr: &str, value: &str) -> io::Result<()> {
    let mut e = BytesStart::new(name);
    e.push_attribute((attr, value));
    w.write_event(Event::Empty(e))
}

/// An ODM `AuditRecord` (the same shape in 1.3.2 and 2.0).
fn write_audit<W: Write>(w: &mut Writer<W>, a: &AuditOut<'_>) -> io::Result<()> {
    w.write_event(Event::Start(BytesStart::new("AuditRecord")))?;
    empty_with(w, "UserRef", "UserOID", a.user_oid)?;
    empty_with(w, "LocationRef", "LocationOID", a.location_oid)?;
    leaf(w, "DateTimeStamp", &utc(a.date_time))?;
    if let Some(r) = a.reason_for_change {
        leaf(w, "ReasonForChange", r)?;
    }
    if let Some(s) = a.source_id {
        leaf(w, "SourceID", s)?;
    }
    w.write_event(Event::End(BytesEnd::new("AuditRecord")))
}

/// An ODM `Signature` (the same shape in 1.3.2 and 2.0).
fn write_signature<W: Write>(w: &mut Writer<W>, s: &SignatureOut<'_>) -> io::Result<()> {
    let mut start = BytesStart::new("Signature");
    if let Some(id) = s.id {
        start.push_attribute(("ID", id));
    }
    w.write_event(Event::Start(start))?;
    empty_with(w, "UserRef", "UserOID", s.user_oid)?;
    empty_with(w, "LocationRef", "LocationOID", s.location_oid)?;
    empty_with(w, "SignatureRef", "SignatureOID", s.signature_oid)?;
    leaf(w, "DateTimeStamp", &utc(s.date_time))?;
    w.write_event(Event::End(BytesEnd::new("Signature")))
}

fn write_audit_and_signature<W: Write>(
    w: &mut Writer<W>,
    audit: Option<&AuditOut<'_>>,
    signature: Option<&SignatureOut<'_>>,
) -> io::Result<()> {
    if let Some(a) = audit {
        write_audit(w, a)?;
    }
    if let Some(s) = signature {
        write_signature(w, s)?;
    }
    Ok(())
}

/// `OpenClinica:AuditLogs`; nothing when there are none.
fn write_audit_logs<W: Write>(w: &mut Writer<W>, entity_id: &str, logs: &[AuditLogOut<'_>]) -> io::Result<()> {
    if logs.is_empty() {
        return Ok(());
    }
    let mut e = BytesStart::new("OpenClinica:AuditLogs");
    e.push_attribute(("EntityID", entity_id));
    w.write_event(Event::Start(e))?;
    for log in logs {
        let stamp = oc_timestamp(log.date_time);
        let mut e = BytesStart::new("OpenClinica:AuditLog");
        e.push_attribute(("ID", log.id));
        e.push_attribute(("UserID", log.user_id));
        e.push_attribute(("UserName", log.user_name));
        e.push_attribute(("Name", log.name));
        e.push_attribute(("DateTimeStamp", stamp.as_str()));
        e.push_attribute(("AuditType", log.audit_type));
        for (name, value) in [
            ("ReasonForChange", log.reason_for_change),
            ("OldValue", log.old_value),
            ("NewValue", log.new_value),
            ("ValueType", log.value_type),
        ] {
            if let Some(v) = value {
                e.push_attribute((name, v));
            }
        }
        w.write_event(Event::Empty(e))?;
    }
    w.write_event(Event::End(BytesEnd::new("OpenClinica:AuditLogs")))
}

/// `OpenClinica:DiscrepancyNotes`; nothing when there are none.
fn write_notes<W: Write>(w: &mut Writer<W>, entity_id: &str, notes: &[NoteOut<'_>]) -> io::Result<()> {
    if notes.is_empty() {
        return Ok(());
    }
    let mut e = BytesStart::new("OpenClinica:DiscrepancyNotes");
    e.push_attribute(("EntityID", entity_id));
    w.write_event(Event::Start(e))?;
    for note in notes {
        let updated = note.date_updated.to_string();
        let count = note.children.len().to_string();
        let mut e = BytesStart::new("OpenClinica:DiscrepancyNote");
        e.push_attribute(("ID", note.id));
        e.push_attribute(("Status", note.status));
        e.push_attribute(("NoteType", note.note_type));
        e.push_attribute(("DateUpdated", updated.as_str()));
        e.push_attribute(("EntityName", note.entity_name));
        e.push_attribute(("NumberOfChildNotes", count.as_str()));
        w.write_event(Event::Start(e))?;
        for child in note.children {
            let created = child.date_created.to_string();
            let mut e = BytesStart::new("OpenClinica:ChildNote");
            e.push_attribute(("ID", child.id));
            e.push_attribute(("Status", child.status));
            e.push_attribute(("DateCreated", created.as_str()));
            e.push_attribute(("Name", child.name));
            w.write_event(Event::Start(e))?;
            leaf(w, "OpenClinica:Description", child.description)?;
            if let Some(d) = child.detailed_note {
                leaf(w, "OpenClinica:DetailedNote", d)?;
            }
            // ODM's UserRef (UserOID required), with OpenClinica's name attributes.
            let mut e = BytesStart::new("UserRef");
            e.push_attribute(("OpenClinica:UserName", child.user_name));
            e.push_attribute(("OpenClinica:FullName", child.user_full_name));
            e.push_attribute(("UserOID", child.user_oid));
            w.write_event(Event::Empty(e))?;
            w.write_event(Event::End(BytesEnd::new("OpenClinica:ChildNote")))?;
        }
        w.write_event(Event::End(BytesEnd::new("OpenClinica:DiscrepancyNote")))?;
    }
    w.write_event(Event::End(BytesEnd::new("OpenClinica:DiscrepancyNotes")))
}

impl<W: Write> ClinicalWriter<W> {
    fn start(out: W, file: &ClinicalFile<'_>, embedded: bool) -> io::Result<Self> {
        if file.odm20 && file.openclinica {
            return Err(invalid(
                "OpenClinica's extensions exist only for ODM 1.3: ask for ODM 2.0 or for the OpenClinica flavour, not both",
            ));
        }
        Ok(Self {
            w: Writer::new_with_indent(out, b' ', 2),
            openclinica: file.openclinica,
            odm20: file.odm20,
            level: Level::ClinicalData,
            finished_level: false,
            entity: Default::default(),
            trailers: Default::default(),
            embedded,
        })
    }

    /// Starts the file: the XML declaration, `ODM` and `ClinicalData`.
    ///
    /// # Errors
    /// When the output fails, or [`io::ErrorKind::InvalidInput`] for ODM 2.0 with OpenClinica's
    /// extensions.
    pub fn new(out: W, file: &ClinicalFile<'_>) -> io::Result<Self> {
        let mut me = Self::start(out, file, false)?;
        me.w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
        let created = utc(file.created);
        let mut root = BytesStart::new("ODM");
        root.push_attribute(("xmlns", if file.odm20 { ODM_2_0_NAMESPACE } else { ODM_1_3_NAMESPACE }));
        if file.openclinica {
            root.push_attribute(("xmlns:OpenClinica", OPENCLINICA_NAMESPACE));
        }
        root.push_attribute(("ODMVersion", if file.odm20 { "2.0" } else { "1.3.2" }));
        root.push_attribute(("FileType", "Snapshot"));
        root.push_attribute(("Granularity", "AllClinicalData"));
        root.push_attribute(("FileOID", file.file_oid));
        root.push_attribute(("CreationDateTime", created.as_str()));
        root.push_attribute(("SourceSystem", "Casebook"));
        root.push_attribute(("SourceSystemVersion", env!("CARGO_PKG_VERSION")));
        me.w.write_event(Event::Start(root))?;
        me.clinical_data(file)?;
        Ok(me)
    }

    /// Starts only `ClinicalData`, for a document whose `ODM` root (declaring the OpenClinica
    /// namespace when `file.openclinica`, and the 2.0 namespace when `file.odm20`) is written by
    /// someone else — an export of metadata and clinical data together. [`Self::finish`] then
    /// closes only `ClinicalData`.
    ///
    /// # Errors
    /// When the output fails, or [`io::ErrorKind::InvalidInput`] for ODM 2.0 with OpenClinica's
    /// extensions.
    pub fn embedded(out: W, file: &ClinicalFile<'_>) -> io::Result<Self> {
        let mut me = Self::start(out, file, true)?;
        me.clinical_data(file)?;
        Ok(me)
    }

    fn clinical_data(&mut self, file: &ClinicalFile<'_>) -> io::Result<()> {
        let mut cd = BytesStart::new("ClinicalData");
        cd.push_attribute(("StudyOID", file.study_oid));
        cd.push_attribute(("MetaDataVersionOID", file.metadata_version_oid));
        self.w.write_event(Event::Start(cd))
    }

    /// The output so far (to drain a buffer between records).
    pub fn get_mut(&mut self) -> &mut W {
        self.w.get_mut()
    }

    fn element_name(&self, level: Level) -> &'static str {
        match level {
            Level::Form if self.odm20 => "ItemGroupData",
            Level::Form => "FormData",
            Level::Event => "StudyEventData",
            Level::Subject | Level::ClinicalData => "SubjectData",
        }
    }

    /// Closes open elements down to (and excluding) `level`; in ODM 2.0 each gets its audit
    /// record and signature first.
    fn close_to(&mut self, level: Level) -> io::Result<()> {
        while self.level > level {
            let trailer = std::mem::take(&mut self.trailers[self.level.slot()]);
            write_audit_and_signature(
                &mut self.w,
                trailer.audit.as_ref().map(OwnedAudit::borrow).as_ref(),
                trailer.signature.as_ref().map(OwnedSignature::borrow).as_ref(),
            )?;
            let name = self.element_name(self.level);
            self.w.write_event(Event::End(BytesEnd::new(name)))?;
            self.level = self.level.parent();
            self.finished_level = false;
        }
        Ok(())
    }

    /// After an element's start tag: its audit record and signature (1.3.2), or a copy of them
    /// for its end (2.0); and its OID for its extensions.
    fn opened(
        &mut self,
        level: Level,
        oid: &str,
        audit: Option<&AuditOut<'_>>,
        signature: Option<&SignatureOut<'_>>,
    ) -> io::Result<()> {
        self.level = level;
        self.finished_level = false;
        let slot = level.slot();
        self.entity[slot].clear();
        self.entity[slot].push_str(oid);
        if self.odm20 {
            self.trailers[slot] =
                Trailer { audit: audit.map(OwnedAudit::new), signature: signature.map(OwnedSignature::new) };
            Ok(())
        } else {
            write_audit_and_signature(&mut self.w, audit, signature)
        }
    }

    /// Starts a participant (closing the previous one).
    ///
    /// # Errors
    /// When the output fails.
    pub fn subject(&mut self, s: &SubjectOut<'_>) -> io::Result<()> {
        self.close_to(Level::ClinicalData)?;
        let mut e = BytesStart::new("SubjectData");
        e.push_attribute(("SubjectKey", s.key));
        if self.openclinica {
            e.push_attribute(("OpenClinica:StudySubjectID", s.label));
            if let Some(p) = s.person_id {
                e.push_attribute(("OpenClinica:UniqueIdentifier", p));
            }
            e.push_attribute(("OpenClinica:Status", oc_subject_status(s.status)));
            if let Some(x) = s.secondary_id {
                e.push_attribute(("OpenClinica:SecondaryID", x));
            }
            match s.date_of_birth {
                Some(d) if d.len() == 4 => e.push_attribute(("OpenClinica:YearOfBirth", d)),
                Some(d) => e.push_attribute(("OpenClinica:DateOfBirth", d)),
                None => {}
            }
            if let Some(x) = s.sex {
                e.push_attribute(("OpenClinica:Sex", x));
            }
            if let Some(x) = s.enrolled_on {
                e.push_attribute(("OpenClinica:EnrollmentDate", x));
            }
        }
        self.w.write_event(Event::Start(e))?;
        self.opened(Level::Subject, s.key, s.audit.as_ref(), s.signature.as_ref())
    }

    /// Starts an event occurrence of the current participant (closing the previous one).
    ///
    /// # Errors
    /// When the output fails, or [`io::ErrorKind::InvalidInput`] outside a participant or
    /// after the participant's [extensions](Self::extensions).
    pub fn event(&mut self, ev: &EventOut<'_>) -> io::Result<()> {
        if self.level < Level::Subject {
            return Err(invalid("an event outside a participant"));
        }
        if self.level == Level::Subject && self.finished_level {
            return Err(invalid("an event after the participant's audit logs and discrepancy notes"));
        }
        self.close_to(Level::Subject)?;
        let mut e = BytesStart::new("StudyEventData");
        e.push_attribute(("StudyEventOID", ev.event_oid));
        let repeat = ev.repeat_key.map(|r| r.to_string());
        if let Some(r) = &repeat {
            e.push_attribute(("StudyEventRepeatKey", r.as_str()));
        }
        if self.openclinica {
            if let Some(l) = ev.location {
                e.push_attribute(("OpenClinica:StudyEventLocation", l));
            }
            if let Some(s) = ev.start {
                e.push_attribute(("OpenClinica:StartDate", date(s).as_str()));
            }
            if let Some(s) = ev.end {
                e.push_attribute(("OpenClinica:EndDate", date(s).as_str()));
            }
            e.push_attribute(("OpenClinica:Status", oc_event_status(ev.status).as_str()));
        }
        self.w.write_event(Event::Start(e))?;
        self.opened(Level::Event, ev.event_oid, ev.audit.as_ref(), ev.signature.as_ref())
    }

    /// Starts a form of the current event occurrence (closing the previous one).
    ///
    /// # Errors
    /// When the output fails, or [`io::ErrorKind::InvalidInput`] outside an event or after the
    /// event's [extensions](Self::extensions).
    pub fn form(&mut self, f: &FormOut<'_>) -> io::Result<()> {
        if self.level < Level::Event {
            return Err(invalid("a form outside an event"));
        }
        if self.level == Level::Event && self.finished_level {
            return Err(invalid("a form after the event's audit logs and discrepancy notes"));
        }
        self.close_to(Level::Event)?;
        let mut e = if self.odm20 {
            let mut e = BytesStart::new("ItemGroupData");
            e.push_attribute(("ItemGroupOID", f.version_oid));
            e
        } else {
            let mut e = BytesStart::new("FormData");
            e.push_attribute(("FormOID", f.version_oid));
            e
        };
        if self.openclinica {
            e.push_attribute(("OpenClinica:Version", f.version_label));
            e.push_attribute(("OpenClinica:Status", oc_form_status(f)));
        }
        self.w.write_event(Event::Start(e))?;
        self.opened(Level::Form, f.version_oid, f.audit.as_ref(), f.signature.as_ref())
    }

    /// Writes one item group row of the current form with its values.
    ///
    /// # Errors
    /// When the output fails, or [`io::ErrorKind::InvalidInput`] outside a form or after the
    /// form's [extensions](Self::extensions).
    pub fn group(&mut self, group_oid: &str, repeat_key: Option<i32>, items: &[ItemOut<'_>]) -> io::Result<()> {
        self.item_group(&GroupOut { group_oid, repeat_key, items, audit: None, signature: None })
    }

    /// Writes one item group row of the current form, with its audit record and signature.
    ///
    /// # Errors
    /// When the output fails, or [`io::ErrorKind::InvalidInput`] outside a form or after the
    /// form's [extensions](Self::extensions).
    pub fn item_group(&mut self, g: &GroupOut<'_>) -> io::Result<()> {
        if self.level != Level::Form {
            return Err(invalid("an item group outside a form"));
        }
        if self.finished_level {
            return Err(invalid("an item group after the form's audit logs and discrepancy notes"));
        }
        let mut e = BytesStart::new("ItemGroupData");
        e.push_attribute(("ItemGroupOID", g.group_oid));
        let repeat = g.repeat_key.map(|r| r.to_string());
        if let Some(r) = &repeat {
            e.push_attribute(("ItemGroupRepeatKey", r.as_str()));
        }
        e.push_attribute(("TransactionType", "Insert"));
        self.w.write_event(Event::Start(e))?;
        if !self.odm20 {
            write_audit_and_signature(&mut self.w, g.audit.as_ref(), g.signature.as_ref())?;
        }
        for item in g.items {
            self.item(item)?;
        }
        if self.odm20 {
            write_audit_and_signature(&mut self.w, g.audit.as_ref(), g.signature.as_ref())?;
        }
        self.w.write_event(Event::End(BytesEnd::new("ItemGroupData")))
    }

    fn item(&mut self, item: &ItemOut<'_>) -> io::Result<()> {
        let mut e = BytesStart::new("ItemData");
        e.push_attribute(("ItemOID", item.item_oid));
        match (item.value, item.null_flavour) {
            (Some(v), _) => {
                if !self.odm20 {
                    e.push_attribute(("Value", v));
                }
            }
            (None, Some(code)) => {
                e.push_attribute(("IsNull", "Yes"));
                if self.openclinica {
                    e.push_attribute(("OpenClinica:ReasonForNull", code));
                }
            }
            (None, None) => e.push_attribute(("IsNull", "Yes")),
        }
        let extensions = self.openclinica && !(item.audit_logs.is_empty() && item.notes.is_empty());
        let value = if self.odm20 { item.value } else { None };
        if value.is_none() && item.audit.is_none() && item.signature.is_none() && !extensions {
            return self.w.write_event(Event::Empty(e));
        }
        self.w.write_event(Event::Start(e))?;
        if let Some(v) = value {
            leaf(&mut self.w, "Value", v)?;
        }
        write_audit_and_signature(&mut self.w, item.audit.as_ref(), item.signature.as_ref())?;
        if extensions {
            write_audit_logs(&mut self.w, item.item_oid, item.audit_logs)?;
            write_notes(&mut self.w, item.item_oid, item.notes)?;
        }
        self.w.write_event(Event::End(BytesEnd::new("ItemData")))
    }

    /// Writes OpenClinica's audit logs and discrepancy notes at the end of the open participant,
    /// event or form (`at`), after its children: deeper open elements are closed first, and the
    /// element stays open but takes no further children (a next participant, event or form of
    /// its parent is fine). Nothing is written in the plain and ODM 2.0 flavours, which have no
    /// place for them, but the element is finished all the same, so every flavour takes the
    /// same calls.
    ///
    /// # Errors
    /// When the output fails, or [`io::ErrorKind::InvalidInput`] when no such element is open.
    pub fn extensions(&mut self, at: At, audit_logs: &[AuditLogOut<'_>], notes: &[NoteOut<'_>]) -> io::Result<()> {
        let level = Level::from(at);
        if self.level < level {
            return Err(invalid(match at {
                At::Subject => "audit logs or discrepancy notes on a participant outside a participant",
                At::Event => "audit logs or discrepancy notes on an event outside an event",
                At::Form => "audit logs or discrepancy notes on a form outside a form",
            }));
        }
        self.close_to(level)?;
        if self.openclinica {
            let entity = &self.entity[level.slot()];
            write_audit_logs(&mut self.w, entity, audit_logs)?;
            write_notes(&mut self.w, entity, notes)?;
        }
        self.finished_level = true;
        Ok(())
    }

    /// Closes every open element and the file; returns the output.
    ///
    /// # Errors
    /// When the output fails.
    pub fn finish(mut self) -> io::Result<W> {
        self.close_to(Level::ClinicalData)?;
        self.w.write_event(Event::End(BytesEnd::new("ClinicalData")))?;
        if !self.embedded {
            self.w.write_event(Event::End(BytesEnd::new("ODM")))?;
        }
        let mut out = self.w.into_inner();
        out.flush()?;
        Ok(out)
    }
}
