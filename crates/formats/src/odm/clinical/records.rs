//! The records [`super::ClinicalReader`] yields: one per `ClinicalData`, `SubjectData` and
//! `StudyEventData` start, one per whole `FormData`, and one per block of OpenClinica
//! discrepancy notes on a participant or an event.
//!
//! Values are strings as written (attribute values normalised as XML says, then trimmed);
//! whether they fit the study design is the caller's check. Every record names its parents, so
//! it can be handled on its own, and carries the 1-based line and column of its start tag.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::diagnostic::Location;

/// One record of clinical data, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Record {
    /// A `ClinicalData` element starts.
    Study(StudyRecord),
    /// A `SubjectData` starts: its attributes, before its events.
    Subject(SubjectRecord),
    /// A `StudyEventData` starts: its attributes, before its forms.
    Event(EventRecord),
    /// One whole `FormData` with its item groups and items.
    Form(FormRecord),
    /// `OpenClinica:DiscrepancyNotes` on a participant or an event (they come after its events
    /// or forms, so they cannot travel with the [`Record::Subject`] or [`Record::Event`]).
    Notes(NotesRecord),
}

impl Record {
    /// Where the record's element starts.
    #[must_use]
    pub fn location(&self) -> Location {
        let (line, column) = match self {
            Self::Study(r) => (r.line, r.column),
            Self::Subject(r) => (r.line, r.column),
            Self::Event(r) => (r.line, r.column),
            Self::Form(r) => (r.line, r.column),
            Self::Notes(r) => (r.line, r.column),
        };
        Location::Xml { line, column }
    }
}

/// `TransactionType`: what the sender means the data to do to the receiver's copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum TransactionType {
    Insert,
    Update,
    Remove,
    Upsert,
    Context,
}

impl TransactionType {
    /// The value as ODM spells it (case matters), or `None`.
    #[must_use]
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "Insert" => Some(Self::Insert),
            "Update" => Some(Self::Update),
            "Remove" => Some(Self::Remove),
            "Upsert" => Some(Self::Upsert),
            "Context" => Some(Self::Context),
            _ => None,
        }
    }

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Insert => "Insert",
            Self::Update => "Update",
            Self::Remove => "Remove",
            Self::Upsert => "Upsert",
            Self::Context => "Context",
        }
    }
}

/// OpenClinica's `UpsertOn` (a child of `ClinicalData`): which states of existing forms an
/// import may overwrite. Every flag defaults to `true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UpsertOn {
    /// `NotStarted`: forms with no data yet may be created.
    pub not_started: bool,
    /// `DataEntryStarted`: forms in data entry may be overwritten.
    pub data_entry_started: bool,
    /// `DataEntryComplete`: completed forms may be overwritten.
    pub data_entry_complete: bool,
}

impl Default for UpsertOn {
    fn default() -> Self {
        Self { not_started: true, data_entry_started: true, data_entry_complete: true }
    }
}

/// A `ClinicalData` element.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StudyRecord {
    /// `StudyOID` (OpenClinica: the study's or a site's OID).
    pub study_oid: String,
    /// `MetaDataVersionOID`.
    pub metadata_version_oid: String,
    /// `UpsertOn`, when it comes before the first `SubjectData`.
    pub upsert_on: Option<UpsertOn>,
    /// `OpenClinica:*` attributes (`StudyName`, OC4's `UserName`, `UserRole` …) by local name.
    pub other_openclinica: BTreeMap<String, String>,
    pub line: usize,
    pub column: usize,
}

/// The participant a record belongs to, as the file names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct SubjectRef {
    /// `SubjectKey` (OpenClinica 3: the study subject OID `SS_…`). OpenClinica 4 files may leave
    /// it out and name the participant by label only.
    pub key: Option<String>,
    /// `OpenClinica:StudySubjectID`: the participant's label.
    pub label: Option<String>,
}

/// The event occurrence a record belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct EventRef {
    /// `StudyEventOID`.
    pub oid: String,
    /// `StudyEventRepeatKey`, when written.
    pub repeat_key: Option<String>,
}

/// A `SubjectData` element, with what it holds before its first `StudyEventData`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SubjectRecord {
    /// `ClinicalData/@StudyOID`.
    pub study_oid: String,
    /// `SubjectKey` and `OpenClinica:StudySubjectID`.
    pub subject: SubjectRef,
    pub transaction_type: Option<TransactionType>,
    /// `OpenClinica:UniqueIdentifier`: the person ID.
    pub unique_identifier: Option<String>,
    /// `OpenClinica:Status` (`available`, `signed`, `removed` …).
    pub status: Option<String>,
    /// `OpenClinica:DateOfBirth`.
    pub date_of_birth: Option<String>,
    /// `OpenClinica:YearOfBirth` (written instead of the date when only the year is collected).
    pub year_of_birth: Option<String>,
    /// `OpenClinica:Sex`.
    pub sex: Option<String>,
    /// `OpenClinica:EnrollmentDate`.
    pub enrollment_date: Option<String>,
    /// `OpenClinica:SecondaryID`.
    pub secondary_id: Option<String>,
    /// `SiteRef/@LocationOID`.
    pub site_oid: Option<String>,
    /// `InvestigatorRef/@UserOID`.
    pub investigator_oid: Option<String>,
    /// Other `OpenClinica:*` attributes by local name.
    pub other_openclinica: BTreeMap<String, String>,
    pub line: usize,
    pub column: usize,
}

/// A `StudyEventData` element.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EventRecord {
    pub study_oid: String,
    pub subject: SubjectRef,
    /// `StudyEventOID`.
    pub event_oid: String,
    /// `StudyEventRepeatKey`, when written (OpenClinica 4: absent means a new occurrence).
    pub repeat_key: Option<String>,
    pub transaction_type: Option<TransactionType>,
    /// `OpenClinica:StartDate`.
    pub start_date: Option<String>,
    /// `OpenClinica:EndDate`.
    pub end_date: Option<String>,
    /// `OpenClinica:Status` (`scheduled`, `data entry started`, `completed` …).
    pub status: Option<String>,
    /// `OpenClinica:WorkflowStatus` (OpenClinica 4).
    pub workflow_status: Option<String>,
    /// `OpenClinica:StudyEventLocation`.
    pub location: Option<String>,
    /// Other `OpenClinica:*` attributes (`SubjectAgeAtEvent`, OC4's `Signed`, `Locked` …).
    pub other_openclinica: BTreeMap<String, String>,
    pub line: usize,
    pub column: usize,
}

impl EventRecord {
    /// The occurrence, as later records name it.
    #[must_use]
    pub fn event_ref(&self) -> EventRef {
        EventRef { oid: self.event_oid.clone(), repeat_key: self.repeat_key.clone() }
    }
}

/// A whole `FormData` element.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FormRecord {
    pub study_oid: String,
    pub subject: SubjectRef,
    pub event: EventRef,
    /// `FormOID` (OpenClinica 3: a form *version* OID; OpenClinica 4: the form OID).
    pub form_oid: String,
    /// `FormRepeatKey`, when written.
    pub repeat_key: Option<String>,
    pub transaction_type: Option<TransactionType>,
    /// `OpenClinica:Version` (OpenClinica 3: the version's name).
    pub version: Option<String>,
    /// `OpenClinica:FormLayoutOID` (OpenClinica 4: the form version).
    pub form_layout_oid: Option<String>,
    /// `OpenClinica:Status` (`initial data entry`, `data entry complete` …).
    pub status: Option<String>,
    /// `OpenClinica:WorkflowStatus` (OpenClinica 4).
    pub workflow_status: Option<String>,
    /// `OpenClinica:InterviewerName`.
    pub interviewer_name: Option<String>,
    /// `OpenClinica:InterviewDate`.
    pub interview_date: Option<String>,
    /// `OpenClinica:SdvStatus`.
    pub sdv_status: Option<String>,
    /// `OpenClinica:ReasonForChangeForCompleteForms`.
    pub reason_for_change: Option<String>,
    /// Other `OpenClinica:*` attributes (`FormName`, `CreatedBy` …).
    pub other_openclinica: BTreeMap<String, String>,
    /// `ItemGroupData`, in file order.
    pub groups: Vec<GroupRecord>,
    /// Discrepancy notes on the form or its groups (notes on an item are on the item).
    pub notes: Vec<NoteRecord>,
    pub line: usize,
    pub column: usize,
}

/// An `ItemGroupData` element.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GroupRecord {
    /// `ItemGroupOID`.
    pub oid: String,
    /// `ItemGroupRepeatKey`, when written.
    pub repeat_key: Option<String>,
    pub transaction_type: Option<TransactionType>,
    /// `OpenClinica:*` attributes (OC4's `ItemGroupName`, `Removed`).
    pub other_openclinica: BTreeMap<String, String>,
    /// `ItemData` or typed `ItemData…` elements, in file order.
    pub items: Vec<ItemRecord>,
    pub line: usize,
    pub column: usize,
}

/// An `ItemData` (or typed `ItemDataString`, `ItemDataInteger` …) element.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ItemRecord {
    /// `ItemOID`.
    pub oid: String,
    /// `ItemData/@Value`, or a typed element's text; `None` when there is no `Value`.
    pub value: Option<String>,
    /// `IsNull="Yes"`.
    pub is_null: bool,
    pub transaction_type: Option<TransactionType>,
    /// The type of a typed element (`String` for `ItemDataString` …); `None` for `ItemData`.
    pub data_type: Option<String>,
    /// `MeasurementUnitRef/@MeasurementUnitOID`, or a typed element's `MeasurementUnitOID`.
    pub measurement_unit_oid: Option<String>,
    /// `OpenClinica:ReasonForNull`.
    pub reason_for_null: Option<String>,
    /// Other `OpenClinica:*` attributes (OC4's `ItemName` …).
    pub other_openclinica: BTreeMap<String, String>,
    /// Discrepancy notes on this item.
    pub notes: Vec<NoteRecord>,
    pub line: usize,
    pub column: usize,
}

/// `OpenClinica:DiscrepancyNotes` on a participant or an event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NotesRecord {
    pub study_oid: String,
    pub subject: SubjectRef,
    /// The event, for notes on an event; `None` for notes on the participant.
    pub event: Option<EventRef>,
    pub notes: Vec<NoteRecord>,
    pub line: usize,
    pub column: usize,
}

/// One `OpenClinica:DiscrepancyNote`: a thread (query, annotation, reason for change …).
/// Attributes are read with or without the `OpenClinica:` prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NoteRecord {
    /// The enclosing `DiscrepancyNotes/@EntityID`: what the notes are on (an item OID, a
    /// study subject OID …).
    pub entity_id: Option<String>,
    /// `EntityName`: the field of the entity (`value`, `start_date`, `date_of_birth` …).
    pub entity_name: Option<String>,
    /// `ID`.
    pub id: Option<String>,
    /// `NoteType` (`Query`, `Annotation`, `Reason for Change`, `Failed Validation Check`).
    pub note_type: Option<String>,
    /// `Status` (`New`, `Updated`, `Closed`, `Not Applicable` …).
    pub status: Option<String>,
    /// `DateUpdated`.
    pub date_updated: Option<String>,
    /// `ChildNote`s: the messages of the thread, in file order.
    pub children: Vec<ChildNoteRecord>,
    pub line: usize,
    pub column: usize,
}

/// One `OpenClinica:ChildNote`: a message in a thread.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChildNoteRecord {
    /// `ID`.
    pub id: Option<String>,
    /// `Status`.
    pub status: Option<String>,
    /// `DateCreated`.
    pub date_created: Option<String>,
    /// `Name`.
    pub name: Option<String>,
    /// The `Description` child's text.
    pub description: Option<String>,
    /// The `DetailedNote` child's text.
    pub detailed_note: Option<String>,
    /// `UserRef/@UserName` (or the `ChildNote`'s own `UserName`).
    pub user_name: Option<String>,
    /// `UserRef/@FullName`.
    pub user_full_name: Option<String>,
    pub line: usize,
    pub column: usize,
}
