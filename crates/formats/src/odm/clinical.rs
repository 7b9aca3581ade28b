//! CDISC ODM 1.3 `ClinicalData` in, streamed: a pull reader that yields one [`Record`] at a
//! time, plain ODM or with OpenClinica 3's or 4's extensions (reference
//! `openclinica-data-model.md` §11.3–11.4, `openclinica-api.md` §6).
//!
//! The reader only parses: whether OIDs exist in the design, values fit their items or
//! participants exist is the caller's check, with the line and column every record carries.
//! Problems that leave the rest readable (an unknown attribute, a bad `TransactionType`, an ODM
//! element where ODM has none) are collected as [`Diagnostics`]; XML that is not well formed, a
//! `<!DOCTYPE`, a root that is not `ODM` or a file over the caller's size limit end the stream
//! with one error.
//!
//! Mapping decisions:
//! - a [`Record::Study`] is yielded at the first `SubjectData` of a `ClinicalData` (or its end),
//!   so that OpenClinica's `UpsertOn` before it is part of it; a [`Record::Subject`] at its first
//!   `StudyEventData` (so `SiteRef` and `InvestigatorRef` are in it), a [`Record::Event`] at its
//!   first `FormData`: each before its children, as callers create participants and schedule
//!   events before filling forms;
//! - a [`Record::Form`] is one whole `FormData`; `ItemData/@Value` and the text of typed
//!   `ItemDataString`, `ItemDataInteger` … are both values; `IsNull="Yes"` is a null;
//! - OpenClinica attributes (`OpenClinica:*`) that the records name are fields; any other one is
//!   kept by local name in `other_openclinica`. `UpsertOn` is read in the ODM or the OpenClinica
//!   namespace, and `DiscrepancyNote` attributes with or without the prefix;
//! - `Study`, `AdminData`, `ReferenceData` and `Association`, and inside clinical data
//!   `AuditRecord(s)`, `Signature(s)`, `Annotation(s)`, `ArchiveLayoutRef`,
//!   `OpenClinica:AuditLogs`, `OpenClinica:SubjectGroupData` and every element of another
//!   namespace (ODM's extension mechanism) are read past. An ODM element ODM does not allow
//!   where it is, and an unprefixed attribute ODM does not define, are errors (the XSD refuses
//!   them, and `value=` for `Value=` would lose data silently);
//! - [`ClinicalReader::flavour`] says which dialect the file speaks, from what was read so far:
//!   any OpenClinica namespace, attribute or element makes it OpenClinica 3, and what only
//!   OpenClinica 4 writes (`FormLayoutOID`, `WorkflowStatus`, `SdvStatus`, a `SubjectData`
//!   without `SubjectKey` but with `StudySubjectID` …) OpenClinica 4.
//!
//! Architecture invariant (memory): what the reader holds does not grow with the file. It keeps
//! the parser's buffer and the bytes of the event being read (one tag or text, cleared before
//! the next, at most [`MAX_EVENT_BYTES`]), the open elements (at most [`MAX_DEPTH`]), the
//! namespace bindings in scope (at most quick-xml's limit, 128), the record being built (one
//! form: at most [`MAX_FORM_ENTRIES`] items and notes, each text at most [`MAX_TEXT_BYTES`]),
//! at most two finished records waiting to be yielded, and at most [`MAX_DIAGNOSTICS`]
//! diagnostics not yet taken. Past a limit, the stream ends with an error that names it.
//!
//! Architecture invariant (security): no DTD is processed. A `<!DOCTYPE` ends the stream, so
//! there is no external entity and no entity expansion; only XML's five predefined entities and
//! character references are resolved.

mod records;
mod source;

use std::collections::VecDeque;
use std::io::BufRead;

use quick_xml::NsReader;
use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{NamespaceResolver, ResolveResult};
use serde::Serialize;

pub use self::records::{
    ChildNoteRecord, EventRecord, EventRef, FormRecord, GroupRecord, ItemRecord, NoteRecord, NotesRecord, Record,
    StudyRecord, SubjectRecord, SubjectRef, TransactionType, UpsertOn,
};
pub use self::source::MAX_EVENT_BYTES;
use self::source::{Pos, Source};
use crate::diagnostic::{Diagnostic, Diagnostics, Location, Severity};

/// The deepest nesting of elements read; deeper ends the stream (ODM needs about ten levels).
pub const MAX_DEPTH: usize = 256;
/// The most items and notes one form (or one block of notes) may hold.
pub const MAX_FORM_ENTRIES: usize = 100_000;
/// The longest value (typed item text, note text) read, in bytes.
pub const MAX_TEXT_BYTES: usize = 1024 * 1024;
/// The most diagnostics held; more are counted and summed up in one warning at the end.
pub const MAX_DIAGNOSTICS: usize = 10_000;

const ODM_13_NAMESPACE: &str = "http://www.cdisc.org/ns/odm/v1.3";
const ODM_12_NAMESPACE: &str = "http://www.cdisc.org/ns/odm/v1.2";
const ODM_20_NAMESPACE: &str = "http://www.cdisc.org/ns/odm/v2.0";
/// OpenClinica's extension namespaces: 1.3 (current), 1.2, and the legacy one.
const OPENCLINICA_NAMESPACES: [&str; 3] = [
    "http://www.openclinica.org/ns/odm_ext_v130/v3.1",
    "http://www.openclinica.org/ns/odm_ext_v121/v3.1",
    "http://www.openclinica.org/ns/openclinica_odm/v1.3",
];

/// The types of ODM 1.3.2's typed `ItemData…` elements.
const TYPED_ITEMS: [&str; 22] = [
    "URI",
    "Any",
    "Boolean",
    "String",
    "Integer",
    "Float",
    "Double",
    "Date",
    "Time",
    "Datetime",
    "HexBinary",
    "Base64Binary",
    "HexFloat",
    "Base64Float",
    "PartialDate",
    "PartialTime",
    "PartialDatetime",
    "DurationDatetime",
    "IntervalDatetime",
    "IncompleteDatetime",
    "IncompleteDate",
    "IncompleteTime",
];

/// `OpenClinica:*` attributes only OpenClinica 4 writes, by element.
const OC4_CLINICAL: &[&str] = &["UserName", "UserRole"];
const OC4_EVENT: &[&str] = &["EventName", "WorkflowStatus", "Removed", "Archived", "Locked", "Signed"];
const OC4_FORM: &[&str] = &[
    "FormLayoutOID",
    "WorkflowStatus",
    "SdvStatus",
    "ReasonForChangeForCompleteForms",
    "FormName",
    "CreatedDate",
    "CreatedBy",
    "UpdatedDate",
    "UpdatedBy",
    "Removed",
    "Archived",
];
const OC4_GROUP: &[&str] = &["ItemGroupName", "Removed"];
const OC4_ITEM: &[&str] = &["ItemName"];

/// Which dialect of ODM a file speaks, as far as it has been read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Flavour {
    /// ODM without OpenClinica's extensions (so far).
    #[default]
    Plain,
    /// OpenClinica's extensions; nothing only OpenClinica 4 writes (so far).
    OpenClinica3,
    /// Something only OpenClinica 4 writes.
    OpenClinica4,
}

/// Reads ODM clinical data from `input`, one record at a time.
///
/// ```
/// use casebook_formats::odm::clinical::{ClinicalReader, Record};
/// let xml = r#"<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3"><ClinicalData StudyOID="S" MetaDataVersionOID="v1">
///   <SubjectData SubjectKey="SS_1"><StudyEventData StudyEventOID="SE_V"><FormData FormOID="F_A">
///   <ItemGroupData ItemGroupOID="IG_A"><ItemData ItemOID="I_A" Value="42"/></ItemGroupData>
///   </FormData></StudyEventData></SubjectData></ClinicalData></ODM>"#;
/// let mut reader = ClinicalReader::new(xml.as_bytes());
/// let mut forms = 0;
/// while let Some(record) = reader.next_record().unwrap() {
///     if let Record::Form(form) = record {
///         assert_eq!(form.groups[0].items[0].value.as_deref(), Some("42"));
///         forms += 1;
///     }
/// }
/// assert_eq!(forms, 1);
/// assert!(reader.diagnostics().0.is_empty());
/// ```
pub struct ClinicalReader<R: BufRead> {
    xml: NsReader<Source<R>>,
    buf: Vec<u8>,
    state: State,
}

impl<R: BufRead> ClinicalReader<R> {
    /// A reader of a file of any size.
    pub fn new(input: R) -> Self {
        Self::with_max_bytes(input, None)
    }

    /// A reader that ends the stream with an error once more than `max_bytes` are read.
    pub fn with_max_bytes(input: R, max_bytes: Option<u64>) -> Self {
        let mut xml = NsReader::from_reader(Source::new(input, max_bytes));
        xml.config_mut().check_end_names = true;
        Self { xml, buf: Vec::new(), state: State::default() }
    }

    /// The next record, or `None` at the end.
    ///
    /// # Errors
    /// What makes the rest unreadable (XML that is not well formed, a `<!DOCTYPE`, a root that
    /// is not `ODM`, a file over the size limit) ends the stream with one error, with its line
    /// and column; after it, `None`.
    pub fn next_record(&mut self) -> Result<Option<Record>, Diagnostic> {
        loop {
            if let Some(record) = self.state.out.pop_front() {
                return Ok(Some(record));
            }
            if self.state.finished {
                return Ok(None);
            }
            if let Err(fatal) = self.step() {
                self.state.finished = true;
                self.state.out.clear();
                return Err(fatal);
            }
        }
    }

    /// Problems found so far that do not stop the reading, in file order.
    #[must_use]
    pub fn diagnostics(&self) -> &Diagnostics {
        &self.state.diagnostics
    }

    /// Takes the problems found so far (so a long import can report them as it goes).
    pub fn take_diagnostics(&mut self) -> Diagnostics {
        std::mem::take(&mut self.state.diagnostics)
    }

    /// The dialect seen so far.
    #[must_use]
    pub fn flavour(&self) -> Flavour {
        self.state.flavour
    }

    /// Reads one XML event and acts on it.
    fn step(&mut self) -> Result<(), Diagnostic> {
        let at = self.xml.get_mut().mark();
        self.buf.clear();
        let (ns, event) = match self.xml.read_resolved_event_into(&mut self.buf) {
            Ok((resolved, event)) => (namespace(&resolved), event),
            Err(err) => return Err(self.read_error(&err, at)),
        };
        let state = &mut self.state;
        match event {
            Event::Start(e) => state.start(self.xml.resolver(), ns, &e, at, false),
            Event::Empty(e) => state.start(self.xml.resolver(), ns, &e, at, true),
            Event::End(_) => {
                state.end();
                Ok(())
            }
            Event::Text(t) => state.text(&t.xml10_content(), at),
            Event::CData(t) => state.text(&t.xml10_content(), at),
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => match quick_xml::escape::resolve_predefined_entity(r.as_ref()) {
                        Some(text) => text.to_owned(),
                        None => {
                            return Err(fatal(
                                at,
                                format!(
                                    "The XML is not well formed: the entity '&{};' is not defined (only &amp; &lt; \
                                     &gt; &quot; &apos; and character references are allowed).",
                                    r.as_ref()
                                ),
                            ));
                        }
                    },
                    Err(err) => return Err(fatal(at, format!("The XML is not well formed: {err}."))),
                };
                state.text(&resolved, at)
            }
            Event::DocType(_) => Err(fatal(
                at,
                "The file has a <!DOCTYPE> declaration. Document type definitions and entity declarations are \
                 refused (they can read local files or expand without limit); ODM files need none.",
            )),
            Event::Decl(decl) => match decl.encoding() {
                Some(Ok(encoding)) if !is_utf8(&encoding) => {
                    Err(fatal(at, format!("The file is encoded as '{encoding}'; only UTF-8 is read.")))
                }
                _ => Ok(()),
            },
            Event::Eof => state.eof(),
            Event::Comment(_) | Event::PI(_) => Ok(()),
        }
    }

    /// The error that ends the stream when the parser fails.
    fn read_error(&mut self, err: &quick_xml::Error, at: Pos) -> Diagnostic {
        let error_position = self.xml.error_position();
        let source = self.xml.get_mut();
        if source.event_too_large() {
            return fatal(
                at,
                format!(
                    "The tag or text that starts here is larger than {} MiB; it is too large to read.",
                    MAX_EVENT_BYTES / (1024 * 1024)
                ),
            );
        }
        if source.over_limit() {
            let limit = source.limit().unwrap_or_default();
            return Diagnostic {
                severity: Severity::Error,
                location: Location::File,
                message: format!(
                    "The file is larger than {limit} bytes ({} MiB), the most this upload accepts.",
                    limit.div_ceil(1024 * 1024)
                ),
            };
        }
        let pos = if error_position > 0 { source.position_of(error_position) } else { at };
        fatal(pos, format!("The XML is not well formed: {err}."))
    }
}

fn is_utf8(encoding: &str) -> bool {
    matches!(encoding.to_ascii_lowercase().as_str(), "utf-8" | "utf8" | "us-ascii" | "ascii")
}

fn fatal(at: Pos, message: impl Into<String>) -> Diagnostic {
    Diagnostic { severity: Severity::Error, location: location(at), message: message.into() }
}

fn location(at: Pos) -> Location {
    Location::Xml { line: at.line, column: at.column }
}

// ---------------------------------------------------------------------------------------------
// Names and attributes.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ns {
    /// ODM 1.3 or 1.2, or no namespace (leniently read as ODM).
    Odm,
    Odm20,
    OpenClinica,
    Other,
}

fn namespace(result: &ResolveResult<'_>) -> Ns {
    match result {
        ResolveResult::Bound(ns) => match ns.as_ref() {
            ODM_13_NAMESPACE | ODM_12_NAMESPACE => Ns::Odm,
            ODM_20_NAMESPACE => Ns::Odm20,
            n if OPENCLINICA_NAMESPACES.contains(&n) => Ns::OpenClinica,
            _ => Ns::Other,
        },
        // Unprefixed attributes belong to their element; unprefixed elements with no default
        // namespace are read as ODM.
        ResolveResult::Unbound => Ns::Odm,
        ResolveResult::Unknown(_) => Ns::Other,
    }
}

/// An attribute of the element being read: unprefixed ones are [`Ns::Odm`].
struct Attr<'a> {
    ns: Ns,
    name: &'a str,
    value: std::borrow::Cow<'a, str>,
}

impl Attr<'_> {
    /// The value, trimmed.
    fn text(&self) -> &str {
        self.value.trim()
    }

    fn owned(&self) -> Option<String> {
        Some(self.text().to_owned())
    }

    /// An unprefixed or `OpenClinica:` attribute called `name`.
    fn is_any(&self, name: &str) -> bool {
        matches!(self.ns, Ns::Odm | Ns::OpenClinica) && self.name == name
    }
}

/// The attributes of `e`, well formed and normalised (namespace declarations left out); also
/// whether one of them declares an OpenClinica namespace.
fn attributes<'e>(
    resolver: &NamespaceResolver,
    e: &'e BytesStart<'_>,
    at: Pos,
) -> Result<(Vec<Attr<'e>>, bool), Diagnostic> {
    let mut out = Vec::new();
    let mut declares_openclinica = false;
    for a in e.attributes() {
        let a = a.map_err(|err| fatal(at, format!("The XML is not well formed: {err}.")))?;
        let key = a.key.as_ref();
        let value = a.normalized_value(XmlVersion::Implicit1_0).map_err(|err| {
            fatal(at, format!("The XML is not well formed: attribute '{key}' has an invalid value ({err})."))
        })?;
        if key == "xmlns" || key.starts_with("xmlns:") {
            declares_openclinica |= OPENCLINICA_NAMESPACES.contains(&value.as_ref());
            continue;
        }
        let (resolved, local) = resolver.resolve_attribute(a.key);
        let ns = namespace(&resolved);
        out.push(Attr { ns, name: local.into_inner(), value });
    }
    Ok((out, declares_openclinica))
}

// ---------------------------------------------------------------------------------------------
// The state of the reading.

/// What an open element is to the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Root,
    Clinical,
    Subject,
    Event,
    Form,
    Group,
    Item,
    /// `ItemDataString` …: the text is the value.
    TypedItem,
    /// An ODM element read for its attributes only (`SiteRef`, `MeasurementUnitRef` …).
    OdmLeaf,
    /// An OpenClinica element read for its attributes only (`UpsertOn`, `UserRef` …).
    OcLeaf,
    /// `OpenClinica:DiscrepancyNotes`.
    Notes,
    Note,
    ChildNote,
    /// `Description` or `DetailedNote` in a `ChildNote`.
    NoteText(NoteField),
    /// Read past, with everything inside.
    Skipped,
}

impl Ctx {
    /// An ODM element whose children ODM defines, so that unknown ODM children are reported.
    fn is_odm(self) -> bool {
        matches!(
            self,
            Self::Root
                | Self::Clinical
                | Self::Subject
                | Self::Event
                | Self::Form
                | Self::Group
                | Self::Item
                | Self::TypedItem
                | Self::OdmLeaf
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoteField {
    Description,
    DetailedNote,
}

/// An open element.
struct Open {
    ctx: Ctx,
    /// Where its qualified name ends in [`State::names`].
    name_end: usize,
    at: Pos,
    /// Whether stray text in it has been reported.
    text_reported: bool,
}

/// `OpenClinica:DiscrepancyNotes` being read.
struct NotesBuilder {
    entity_id: Option<String>,
    notes: Vec<NoteRecord>,
    note: Option<NoteRecord>,
    child: Option<ChildNoteRecord>,
    at: Pos,
}

#[derive(Default)]
struct State {
    flavour: Flavour,
    diagnostics: Diagnostics,
    /// Diagnostics not kept because [`MAX_DIAGNOSTICS`] were held.
    dropped: usize,
    open: Vec<Open>,
    /// The qualified names of the open elements, one after the other.
    names: String,
    root_seen: bool,
    finished: bool,
    /// Finished records, waiting to be yielded.
    out: VecDeque<Record>,
    /// The `ClinicalData`, `SubjectData` and `StudyEventData` being read.
    study_oid: String,
    subject: SubjectRef,
    event: Option<EventRef>,
    /// Records not yielded yet: each waits for its first child (or its end).
    study: Option<StudyRecord>,
    subject_record: Option<SubjectRecord>,
    event_record: Option<EventRecord>,
    /// The form, group, item and notes being read.
    form: Option<FormRecord>,
    group: Option<GroupRecord>,
    item: Option<ItemRecord>,
    notes: Option<NotesBuilder>,
    /// Text of the typed item or note field being read.
    text: String,
    /// Items and notes in the record being built.
    entries: usize,
}

impl State {
    // ----- diagnostics --------------------------------------------------------------------------

    fn push(&mut self, severity: Severity, at: Pos, message: String) {
        if self.diagnostics.0.len() >= MAX_DIAGNOSTICS {
            self.dropped += 1;
        } else {
            self.diagnostics.0.push(Diagnostic { severity, location: location(at), message });
        }
    }

    fn error(&mut self, at: Pos, message: String) {
        self.push(Severity::Error, at, message);
    }

    fn warning(&mut self, at: Pos, message: String) {
        self.push(Severity::Warning, at, message);
    }

    fn unknown_attribute(&mut self, element: &str, a: &Attr<'_>, at: Pos) {
        self.error(at, format!("<{element}> has an attribute '{}' that ODM does not define; it is ignored.", a.name));
    }

    fn missing(&mut self, element: &str, attribute: &str, at: Pos) {
        self.error(at, format!("<{element}> has no {attribute}."));
    }

    fn transaction_type(&mut self, element: &str, a: &Attr<'_>, at: Pos) -> Option<TransactionType> {
        let parsed = TransactionType::parse(a.text());
        if parsed.is_none() {
            self.error(
                at,
                format!(
                    "<{element}> has TransactionType '{}'; ODM allows Insert, Update, Remove, Upsert or Context.",
                    a.text()
                ),
            );
        }
        parsed
    }

    fn repeat_key(&mut self, element: &str, a: &Attr<'_>, at: Pos) -> Option<String> {
        if a.text().is_empty() {
            self.error(at, format!("<{element}> has an empty {}.", a.name));
            return None;
        }
        a.owned()
    }

    /// Counts an item or a note in the record being built.
    fn entry(&mut self, at: Pos) -> Result<(), Diagnostic> {
        self.entries += 1;
        if self.entries > MAX_FORM_ENTRIES {
            return Err(fatal(
                at,
                format!(
                    "This form (or block of notes) holds more than {MAX_FORM_ENTRIES} items and notes; it is too large to read."
                ),
            ));
        }
        Ok(())
    }

    // ----- flavour ------------------------------------------------------------------------------

    fn saw_openclinica(&mut self) {
        self.flavour = self.flavour.max(Flavour::OpenClinica3);
    }

    fn saw_openclinica4(&mut self) {
        self.flavour = Flavour::OpenClinica4;
    }

    /// Raises the flavour for the `OpenClinica:` attributes of an element.
    fn detect(&mut self, attrs: &[Attr<'_>], oc4: &[&str]) {
        for a in attrs.iter().filter(|a| a.ns == Ns::OpenClinica) {
            self.saw_openclinica();
            if oc4.contains(&a.name) {
                self.saw_openclinica4();
            }
        }
    }

    // ----- records ------------------------------------------------------------------------------

    fn emit(&mut self, record: Record) {
        self.entries = 0;
        self.out.push_back(record);
    }

    fn flush_study(&mut self) {
        if let Some(study) = self.study.take() {
            self.emit(Record::Study(study));
        }
    }

    fn flush_subject(&mut self) {
        if let Some(subject) = self.subject_record.take() {
            self.emit(Record::Subject(subject));
        }
    }

    fn flush_event(&mut self) {
        if let Some(event) = self.event_record.take() {
            self.emit(Record::Event(event));
        }
    }

    // ----- events -------------------------------------------------------------------------------

    /// The qualified name of the innermost open element.
    fn innermost_name(&self) -> &str {
        let len = self.open.len();
        let start = if len >= 2 { self.open[len - 2].name_end } else { 0 };
        let end = self.open.last().map_or(0, |o| o.name_end);
        &self.names[start..end]
    }

    fn start(
        &mut self,
        resolver: &NamespaceResolver,
        ns: Ns,
        e: &BytesStart<'_>,
        at: Pos,
        empty: bool,
    ) -> Result<(), Diagnostic> {
        let qname = e.name().into_inner();
        if self.open.len() >= MAX_DEPTH {
            return Err(fatal(at, format!("<{qname}> is nested more than {MAX_DEPTH} elements deep.")));
        }
        let (attrs, declares_openclinica) = attributes(resolver, e, at)?;
        if declares_openclinica {
            self.saw_openclinica();
        }
        let local = e.local_name().into_inner();
        let ctx = match self.open.last().map(|o| o.ctx) {
            Some(Ctx::Skipped) => Ctx::Skipped,
            None => self.root(ns, qname, local, at)?,
            Some(parent) => {
                if ns == Ns::OpenClinica {
                    self.saw_openclinica();
                }
                let ctx = self.child(parent, ns, local, &attrs, at)?;
                if ctx == Ctx::Skipped && ns == Ns::Odm && parent.is_odm() && !is_skipped_odm(parent, local) {
                    let parent = self.innermost_name().to_owned();
                    self.error(at, format!("<{qname}> is not an element ODM allows in <{parent}>; it is skipped."));
                }
                ctx
            }
        };
        self.names.push_str(qname);
        self.open.push(Open { ctx, name_end: self.names.len(), at, text_reported: false });
        if empty {
            self.end();
        }
        Ok(())
    }

    fn root(&mut self, ns: Ns, qname: &str, local: &str, at: Pos) -> Result<Ctx, Diagnostic> {
        if self.root_seen {
            return Err(fatal(at, "The XML is not well formed: there is more than one root element."));
        }
        self.root_seen = true;
        match (ns, local) {
            (Ns::Odm, "ODM") => Ok(Ctx::Root),
            (Ns::Odm20, "ODM") => {
                Err(fatal(at, "This is an ODM 2.0 file; clinical data is read from ODM 1.3 (or 1.2) files."))
            }
            _ => Err(fatal(at, format!("The root element is <{qname}>, not <ODM>: this is not a CDISC ODM file."))),
        }
    }

    /// Opens a child of an element the reader looks into; returns what it is.
    fn child(&mut self, parent: Ctx, ns: Ns, local: &str, attrs: &[Attr<'_>], at: Pos) -> Result<Ctx, Diagnostic> {
        let odm = ns == Ns::Odm;
        let oc = ns == Ns::OpenClinica;
        Ok(match (parent, local) {
            (Ctx::Root, "ClinicalData") if odm => self.open_clinical(attrs, at),
            (Ctx::Clinical, "SubjectData") if odm => self.open_subject(attrs, at),
            (Ctx::Clinical, "UpsertOn") if odm || oc => self.upsert_on(attrs, at),
            (Ctx::Subject, "StudyEventData") if odm => self.open_event(attrs, at),
            (Ctx::Subject, "SiteRef" | "InvestigatorRef") if odm => self.subject_ref(local, attrs, at),
            (Ctx::Event, "FormData") if odm => self.open_form(attrs, at),
            (Ctx::Form, "ItemGroupData") if odm => self.open_group(attrs, at),
            (Ctx::Group, "ItemData") if odm => self.open_item(local, None, attrs, at)?,
            (Ctx::Group, typed) if odm && typed_item(typed).is_some() => {
                self.open_item(local, typed_item(typed), attrs, at)?
            }
            (Ctx::Item, "MeasurementUnitRef") if odm => self.measurement_unit(attrs, at),
            (Ctx::Subject | Ctx::Event | Ctx::Form | Ctx::Group | Ctx::Item, "DiscrepancyNotes") if oc => {
                self.open_notes(attrs, at)
            }
            (Ctx::Notes, "DiscrepancyNote") if oc => self.open_note(attrs, at)?,
            (Ctx::Note, "ChildNote") if oc => self.open_child_note(attrs, at)?,
            (Ctx::ChildNote, "Description") if odm || oc => Ctx::NoteText(NoteField::Description),
            (Ctx::ChildNote, "DetailedNote") if odm || oc => Ctx::NoteText(NoteField::DetailedNote),
            (Ctx::ChildNote, "UserRef") if odm || oc => self.note_user(attrs),
            (_, "Links") if oc => {
                self.saw_openclinica4();
                Ctx::Skipped
            }
            _ => Ctx::Skipped,
        })
    }

    fn end(&mut self) {
        let Some(open) = self.open.pop() else {
            return;
        };
        let start = self.open.last().map_or(0, |o| o.name_end);
        self.names.truncate(start);
        match open.ctx {
            Ctx::Clinical => {
                self.flush_study();
                self.study_oid.clear();
            }
            Ctx::Subject => {
                self.flush_subject();
                self.subject = SubjectRef::default();
            }
            Ctx::Event => {
                self.flush_event();
                self.event = None;
            }
            Ctx::Form => {
                if let Some(form) = self.form.take() {
                    self.emit(Record::Form(form));
                }
            }
            Ctx::Group => {
                if let (Some(group), Some(form)) = (self.group.take(), self.form.as_mut()) {
                    form.groups.push(group);
                }
            }
            Ctx::Item | Ctx::TypedItem => self.close_item(open.ctx == Ctx::TypedItem),
            Ctx::Notes => self.close_notes(),
            Ctx::Note => {
                if let Some(b) = self.notes.as_mut()
                    && let Some(note) = b.note.take()
                {
                    b.notes.push(note);
                }
            }
            Ctx::ChildNote => {
                if let Some(b) = self.notes.as_mut()
                    && let (Some(child), Some(note)) = (b.child.take(), b.note.as_mut())
                {
                    note.children.push(child);
                }
            }
            Ctx::NoteText(field) => self.close_note_text(field),
            Ctx::Root | Ctx::OdmLeaf | Ctx::OcLeaf | Ctx::Skipped => {}
        }
    }

    fn text(&mut self, text: &str, at: Pos) -> Result<(), Diagnostic> {
        let Some(open) = self.open.last_mut() else {
            if is_blank(text) {
                return Ok(());
            }
            let place = if self.root_seen { "after" } else { "before" };
            return Err(fatal(at, format!("The XML is not well formed: there is text {place} the root element.")));
        };
        match open.ctx {
            Ctx::TypedItem | Ctx::NoteText(_) => {
                if self.text.len() + text.len() > MAX_TEXT_BYTES {
                    return Err(fatal(
                        at,
                        format!("A value is longer than {MAX_TEXT_BYTES} bytes; it is too long to read."),
                    ));
                }
                self.text.push_str(text);
            }
            ctx if ctx.is_odm() && ctx != Ctx::Root && !open.text_reported && !is_blank(text) => {
                open.text_reported = true;
                let (ctx, at) = (open.ctx, open.at);
                let name = self.innermost_name().to_owned();
                let hint = if ctx == Ctx::Item {
                    " ODM 1.3 puts the value in the Value attribute (or in a typed element such as <ItemDataString>)."
                } else {
                    ""
                };
                self.error(at, format!("<{name}> holds text, which ODM does not allow there; it is ignored.{hint}"));
            }
            _ => {}
        }
        Ok(())
    }

    fn eof(&mut self) -> Result<(), Diagnostic> {
        if let Some(open) = self.open.last() {
            let name = self.innermost_name().to_owned();
            return Err(fatal(
                open.at,
                format!("The XML is not well formed: the file ends before <{name}> is closed."),
            ));
        }
        if !self.root_seen {
            return Err(fatal(Pos { line: 1, column: 1 }, "The file holds no XML element."));
        }
        if self.dropped > 0 {
            let dropped = std::mem::take(&mut self.dropped);
            self.diagnostics.warning(Location::File, format!("{dropped} further problems were found but not listed."));
        }
        self.finished = true;
        Ok(())
    }

    // ----- openers ------------------------------------------------------------------------------

    fn open_clinical(&mut self, attrs: &[Attr<'_>], at: Pos) -> Ctx {
        self.detect(attrs, OC4_CLINICAL);
        let mut study = StudyRecord { line: at.line, column: at.column, ..StudyRecord::default() };
        for a in attrs {
            match (a.ns, a.name) {
                (Ns::Odm, "StudyOID") => study.study_oid = a.text().to_owned(),
                (Ns::Odm, "MetaDataVersionOID") => study.metadata_version_oid = a.text().to_owned(),
                (Ns::Odm, _) => self.unknown_attribute("ClinicalData", a, at),
                (Ns::OpenClinica, name) => _ = study.other_openclinica.insert(name.to_owned(), a.text().to_owned()),
                _ => {}
            }
        }
        if study.study_oid.is_empty() {
            self.missing("ClinicalData", "StudyOID", at);
        }
        if study.metadata_version_oid.is_empty() {
            self.missing("ClinicalData", "MetaDataVersionOID", at);
        }
        self.study_oid.clone_from(&study.study_oid);
        self.study = Some(study);
        Ctx::Clinical
    }

    fn upsert_on(&mut self, attrs: &[Attr<'_>], at: Pos) -> Ctx {
        self.saw_openclinica();
        let mut upsert = UpsertOn::default();
        for a in attrs.iter().filter(|a| matches!(a.ns, Ns::Odm | Ns::OpenClinica)) {
            let flag = match a.name {
                "NotStarted" => &mut upsert.not_started,
                "DataEntryStarted" => &mut upsert.data_entry_started,
                "DataEntryComplete" => &mut upsert.data_entry_complete,
                _ => {
                    self.error(
                        at,
                        format!(
                            "<UpsertOn> has an attribute '{}' that OpenClinica does not define; it is ignored.",
                            a.name
                        ),
                    );
                    continue;
                }
            };
            match a.text() {
                "true" => *flag = true,
                "false" => *flag = false,
                other => self.error(at, format!("<UpsertOn> has {}=\"{other}\"; it must be true or false.", a.name)),
            }
        }
        match self.study.as_mut() {
            Some(study) => study.upsert_on = Some(upsert),
            None => {
                self.warning(at, "<UpsertOn> comes after a <SubjectData>; it must come first and is ignored.".into())
            }
        }
        Ctx::OcLeaf
    }

    fn open_subject(&mut self, attrs: &[Attr<'_>], at: Pos) -> Ctx {
        self.flush_study();
        self.detect(attrs, &[]);
        let mut s = SubjectRecord {
            study_oid: self.study_oid.clone(),
            line: at.line,
            column: at.column,
            ..SubjectRecord::default()
        };
        for a in attrs {
            match (a.ns, a.name) {
                (Ns::Odm, "SubjectKey") => s.subject.key = a.owned(),
                (Ns::Odm, "TransactionType") => s.transaction_type = self.transaction_type("SubjectData", a, at),
                (Ns::Odm, _) => self.unknown_attribute("SubjectData", a, at),
                (Ns::OpenClinica, name) => {
                    let field = match name {
                        "StudySubjectID" => &mut s.subject.label,
                        "UniqueIdentifier" => &mut s.unique_identifier,
                        "Status" => &mut s.status,
                        "DateOfBirth" => &mut s.date_of_birth,
                        "YearOfBirth" => &mut s.year_of_birth,
                        "Sex" => &mut s.sex,
                        "EnrollmentDate" => &mut s.enrollment_date,
                        "SecondaryID" => &mut s.secondary_id,
                        _ => {
                            s.other_openclinica.insert(name.to_owned(), a.text().to_owned());
                            continue;
                        }
                    };
                    *field = a.owned();
                }
                _ => {}
            }
        }
        match (&s.subject.key, &s.subject.label) {
            (Some(key), _) if key.is_empty() => self.error(at, "<SubjectData> has an empty SubjectKey.".into()),
            (Some(_), _) => {}
            // OpenClinica 4 names participants by label alone.
            (None, Some(_)) => self.saw_openclinica4(),
            (None, None) => self.missing("SubjectData", "SubjectKey", at),
        }
        self.subject = s.subject.clone();
        self.subject_record = Some(s);
        Ctx::Subject
    }

    fn subject_ref(&mut self, local: &str, attrs: &[Attr<'_>], at: Pos) -> Ctx {
        let attribute = if local == "SiteRef" { "LocationOID" } else { "UserOID" };
        let mut oid = None;
        for a in attrs.iter().filter(|a| a.ns == Ns::Odm) {
            if a.name == attribute {
                oid = a.owned();
            } else {
                self.unknown_attribute(local, a, at);
            }
        }
        if oid.is_none() {
            self.missing(local, attribute, at);
        }
        match self.subject_record.as_mut() {
            Some(s) if local == "SiteRef" => s.site_oid = oid,
            Some(s) => s.investigator_oid = oid,
            None => self
                .warning(at, format!("<{local}> comes after a <StudyEventData>; it must come first and is ignored.")),
        }
        Ctx::OdmLeaf
    }

    fn open_event(&mut self, attrs: &[Attr<'_>], at: Pos) -> Ctx {
        self.flush_subject();
        self.detect(attrs, OC4_EVENT);
        let mut ev = EventRecord {
            study_oid: self.study_oid.clone(),
            subject: self.subject.clone(),
            line: at.line,
            column: at.column,
            ..EventRecord::default()
        };
        for a in attrs {
            match (a.ns, a.name) {
                (Ns::Odm, "StudyEventOID") => ev.event_oid = a.text().to_owned(),
                (Ns::Odm, "StudyEventRepeatKey") => ev.repeat_key = self.repeat_key("StudyEventData", a, at),
                (Ns::Odm, "TransactionType") => ev.transaction_type = self.transaction_type("StudyEventData", a, at),
                (Ns::Odm, _) => self.unknown_attribute("StudyEventData", a, at),
                (Ns::OpenClinica, name) => {
                    let field = match name {
                        "StartDate" => &mut ev.start_date,
                        "EndDate" => &mut ev.end_date,
                        "Status" => &mut ev.status,
                        "WorkflowStatus" => &mut ev.workflow_status,
                        "StudyEventLocation" => &mut ev.location,
                        _ => {
                            ev.other_openclinica.insert(name.to_owned(), a.text().to_owned());
                            continue;
                        }
                    };
                    *field = a.owned();
                }
                _ => {}
            }
        }
        if ev.event_oid.is_empty() {
            self.missing("StudyEventData", "StudyEventOID", at);
        }
        self.event = Some(ev.event_ref());
        self.event_record = Some(ev);
        Ctx::Event
    }

    fn open_form(&mut self, attrs: &[Attr<'_>], at: Pos) -> Ctx {
        self.flush_event();
        self.detect(attrs, OC4_FORM);
        let mut f = FormRecord {
            study_oid: self.study_oid.clone(),
            subject: self.subject.clone(),
            event: self.event.clone().unwrap_or_default(),
            line: at.line,
            column: at.column,
            ..FormRecord::default()
        };
        for a in attrs {
            match (a.ns, a.name) {
                (Ns::Odm, "FormOID") => f.form_oid = a.text().to_owned(),
                (Ns::Odm, "FormRepeatKey") => f.repeat_key = self.repeat_key("FormData", a, at),
                (Ns::Odm, "TransactionType") => f.transaction_type = self.transaction_type("FormData", a, at),
                (Ns::Odm, _) => self.unknown_attribute("FormData", a, at),
                (Ns::OpenClinica, name) => {
                    let field = match name {
                        "Version" => &mut f.version,
                        "FormLayoutOID" => &mut f.form_layout_oid,
                        "Status" => &mut f.status,
                        "WorkflowStatus" => &mut f.workflow_status,
                        "InterviewerName" => &mut f.interviewer_name,
                        "InterviewDate" => &mut f.interview_date,
                        "SdvStatus" => &mut f.sdv_status,
                        "ReasonForChangeForCompleteForms" => &mut f.reason_for_change,
                        _ => {
                            f.other_openclinica.insert(name.to_owned(), a.text().to_owned());
                            continue;
                        }
                    };
                    *field = a.owned();
                }
                _ => {}
            }
        }
        if f.form_oid.is_empty() {
            self.missing("FormData", "FormOID", at);
        }
        self.entries = 0;
        self.form = Some(f);
        Ctx::Form
    }

    fn open_group(&mut self, attrs: &[Attr<'_>], at: Pos) -> Ctx {
        self.detect(attrs, OC4_GROUP);
        let mut g = GroupRecord { line: at.line, column: at.column, ..GroupRecord::default() };
        for a in attrs {
            match (a.ns, a.name) {
                (Ns::Odm, "ItemGroupOID") => g.oid = a.text().to_owned(),
                (Ns::Odm, "ItemGroupRepeatKey") => g.repeat_key = self.repeat_key("ItemGroupData", a, at),
                (Ns::Odm, "TransactionType") => g.transaction_type = self.transaction_type("ItemGroupData", a, at),
                (Ns::Odm, _) => self.unknown_attribute("ItemGroupData", a, at),
                (Ns::OpenClinica, name) => _ = g.other_openclinica.insert(name.to_owned(), a.text().to_owned()),
                _ => {}
            }
        }
        if g.oid.is_empty() {
            self.missing("ItemGroupData", "ItemGroupOID", at);
        }
        self.group = Some(g);
        Ctx::Group
    }

    /// `ItemData` (`typed` is `None`) or `ItemData{typed}` (the `element`).
    fn open_item(
        &mut self,
        element: &str,
        typed: Option<&str>,
        attrs: &[Attr<'_>],
        at: Pos,
    ) -> Result<Ctx, Diagnostic> {
        self.entry(at)?;
        self.detect(attrs, OC4_ITEM);
        let mut item = ItemRecord {
            data_type: typed.map(str::to_owned),
            line: at.line,
            column: at.column,
            ..ItemRecord::default()
        };
        for a in attrs {
            match (a.ns, a.name, typed) {
                (Ns::Odm, "ItemOID", _) => item.oid = a.text().to_owned(),
                (Ns::Odm, "TransactionType", _) => item.transaction_type = self.transaction_type(element, a, at),
                (Ns::Odm, "Value", None) => item.value = a.owned(),
                (Ns::Odm, "IsNull", None) => {
                    item.is_null = a.text() == "Yes";
                    if !item.is_null {
                        self.error(at, format!("<ItemData> has IsNull=\"{}\"; ODM allows only \"Yes\".", a.text()));
                    }
                }
                (Ns::Odm, "MeasurementUnitOID", Some(_)) => item.measurement_unit_oid = a.owned(),
                (Ns::Odm, "AuditRecordID" | "SignatureID" | "AnnotationID", Some(_)) => {}
                (Ns::Odm, _, _) => self.unknown_attribute(element, a, at),
                (Ns::OpenClinica, "ReasonForNull", _) => item.reason_for_null = a.owned(),
                (Ns::OpenClinica, name, _) => _ = item.other_openclinica.insert(name.to_owned(), a.text().to_owned()),
                _ => {}
            }
        }
        if item.oid.is_empty() {
            self.missing(element, "ItemOID", at);
        }
        if item.is_null && item.value.is_some() {
            self.error(at, format!("<ItemData> for '{}' has both IsNull=\"Yes\" and a Value.", item.oid));
        }
        self.text.clear();
        self.item = Some(item);
        Ok(if typed.is_some() { Ctx::TypedItem } else { Ctx::Item })
    }

    fn close_item(&mut self, typed: bool) {
        let Some(mut item) = self.item.take() else {
            return;
        };
        if typed {
            item.value = Some(self.text.trim().to_owned());
            self.text.clear();
        }
        if let Some(group) = self.group.as_mut() {
            group.items.push(item);
        }
    }

    fn measurement_unit(&mut self, attrs: &[Attr<'_>], at: Pos) -> Ctx {
        for a in attrs.iter().filter(|a| a.ns == Ns::Odm) {
            if a.name == "MeasurementUnitOID" {
                if let Some(item) = self.item.as_mut() {
                    item.measurement_unit_oid = a.owned();
                }
            } else {
                self.unknown_attribute("MeasurementUnitRef", a, at);
            }
        }
        Ctx::OdmLeaf
    }

    // ----- discrepancy notes --------------------------------------------------------------------

    fn open_notes(&mut self, attrs: &[Attr<'_>], at: Pos) -> Ctx {
        let entity_id = attrs.iter().find(|a| a.is_any("EntityID")).and_then(Attr::owned);
        self.notes = Some(NotesBuilder { entity_id, notes: Vec::new(), note: None, child: None, at });
        Ctx::Notes
    }

    fn open_note(&mut self, attrs: &[Attr<'_>], at: Pos) -> Result<Ctx, Diagnostic> {
        self.entry(at)?;
        let Some(b) = self.notes.as_mut() else {
            return Ok(Ctx::Skipped);
        };
        let mut note =
            NoteRecord { entity_id: b.entity_id.clone(), line: at.line, column: at.column, ..NoteRecord::default() };
        for a in attrs.iter().filter(|a| matches!(a.ns, Ns::Odm | Ns::OpenClinica)) {
            let field = match a.name {
                "EntityName" => &mut note.entity_name,
                "ID" => &mut note.id,
                "NoteType" => &mut note.note_type,
                "Status" => &mut note.status,
                "DateUpdated" => &mut note.date_updated,
                _ => continue,
            };
            *field = a.owned();
        }
        b.note = Some(note);
        Ok(Ctx::Note)
    }

    fn open_child_note(&mut self, attrs: &[Attr<'_>], at: Pos) -> Result<Ctx, Diagnostic> {
        self.entry(at)?;
        let Some(b) = self.notes.as_mut() else {
            return Ok(Ctx::Skipped);
        };
        let mut child = ChildNoteRecord { line: at.line, column: at.column, ..ChildNoteRecord::default() };
        for a in attrs.iter().filter(|a| matches!(a.ns, Ns::Odm | Ns::OpenClinica)) {
            let field = match a.name {
                "ID" => &mut child.id,
                "Status" => &mut child.status,
                "DateCreated" => &mut child.date_created,
                "Name" => &mut child.name,
                "UserName" => &mut child.user_name,
                _ => continue,
            };
            *field = a.owned();
        }
        b.child = Some(child);
        self.text.clear();
        Ok(Ctx::ChildNote)
    }

    fn note_user(&mut self, attrs: &[Attr<'_>]) -> Ctx {
        if let Some(child) = self.notes.as_mut().and_then(|b| b.child.as_mut()) {
            for a in attrs.iter().filter(|a| matches!(a.ns, Ns::Odm | Ns::OpenClinica)) {
                match a.name {
                    "UserName" => child.user_name = a.owned(),
                    "FullName" => child.user_full_name = a.owned(),
                    _ => {}
                }
            }
        }
        Ctx::OcLeaf
    }

    fn close_note_text(&mut self, field: NoteField) {
        let text = self.text.trim();
        let value = (!text.is_empty()).then(|| text.to_owned());
        self.text.clear();
        if let Some(child) = self.notes.as_mut().and_then(|b| b.child.as_mut()) {
            match field {
                NoteField::Description => child.description = value,
                NoteField::DetailedNote => child.detailed_note = value,
            }
        }
    }

    /// Gives the notes just read to what they are on.
    fn close_notes(&mut self) {
        let Some(b) = self.notes.take() else {
            return;
        };
        match self.open.last().map(|o| o.ctx) {
            Some(Ctx::Item) => {
                if let Some(item) = self.item.as_mut() {
                    item.notes.extend(b.notes);
                }
            }
            Some(Ctx::Form | Ctx::Group) => {
                if let Some(form) = self.form.as_mut() {
                    form.notes.extend(b.notes);
                }
            }
            Some(parent @ (Ctx::Subject | Ctx::Event)) => {
                self.flush_subject();
                self.flush_event();
                let event = if parent == Ctx::Event { self.event.clone() } else { None };
                self.emit(Record::Notes(NotesRecord {
                    study_oid: self.study_oid.clone(),
                    subject: self.subject.clone(),
                    event,
                    notes: b.notes,
                    line: b.at.line,
                    column: b.at.column,
                }));
            }
            _ => {}
        }
    }
}

/// The type of a typed item element (`ItemDataString` → `String`).
fn typed_item(local: &str) -> Option<&'static str> {
    let suffix = local.strip_prefix("ItemData")?;
    TYPED_ITEMS.iter().copied().find(|t| *t == suffix)
}

/// ODM elements allowed in `parent` that the reader reads past.
fn is_skipped_odm(parent: Ctx, local: &str) -> bool {
    match parent {
        Ctx::Root => matches!(local, "Study" | "AdminData" | "ReferenceData" | "Association"),
        Ctx::Clinical => matches!(local, "AuditRecords" | "Signatures" | "Annotations"),
        Ctx::Subject | Ctx::Event | Ctx::Group | Ctx::Item => {
            matches!(local, "AuditRecord" | "Signature" | "Annotation")
        }
        Ctx::Form => matches!(local, "AuditRecord" | "Signature" | "ArchiveLayoutRef" | "Annotation"),
        _ => false,
    }
}

/// Whitespace as XML counts it.
fn is_blank(text: &str) -> bool {
    text.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}
