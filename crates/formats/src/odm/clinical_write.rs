//! CDISC ODM 1.3.2 `ClinicalData` out, streamed: participants, their event occurrences, forms,
//! item group rows and values are written as they come, so an export of any size needs the
//! memory of one record. The caller feeds records in order (participant, then its events, then
//! each event's forms, then each form's groups) and may drain the output between records.
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
//! Markup is written only through quick-xml events, which escape attribute values and text.

use std::io::{self, Write};

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, Event};
use time::OffsetDateTime;
use time::macros::format_description;

use super::write::{ODM_1_3_NAMESPACE, OPENCLINICA_NAMESPACE};

/// The file being written.
#[derive(Debug, Clone)]
pub struct ClinicalFile<'a> {
    pub study_oid: &'a str,
    pub metadata_version_oid: &'a str,
    pub file_oid: &'a str,
    pub created: OffsetDateTime,
    /// With OpenClinica 3's extension attributes.
    pub openclinica: bool,
}

/// A participant (`SubjectData`).
#[derive(Debug, Clone, Default)]
pub struct SubjectOut<'a> {
    /// The participant OID (`SS_…`).
    pub key: &'a str,
    /// The participant's label (`OpenClinica:StudySubjectID`).
    pub label: &'a str,
    pub person_id: Option<&'a str>,
    pub secondary_id: Option<&'a str>,
    /// `YYYY-MM-DD`, or `YYYY` when only the year is collected.
    pub date_of_birth: Option<&'a str>,
    /// `m` or `f`.
    pub sex: Option<&'a str>,
    pub enrolled_on: Option<&'a str>,
    /// Casebook's status (`available`, `signed`, …).
    pub status: &'a str,
}

/// An event occurrence (`StudyEventData`).
#[derive(Debug, Clone, Default)]
pub struct EventOut<'a> {
    pub event_oid: &'a str,
    /// Written for repeating events.
    pub repeat_key: Option<i32>,
    /// Casebook's status (`scheduled`, `data_entry_started`, …).
    pub status: &'a str,
    pub start: Option<OffsetDateTime>,
    pub end: Option<OffsetDateTime>,
    pub location: Option<&'a str>,
}

/// A form (`FormData`).
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
}

/// One value (`ItemData`).
#[derive(Debug, Clone, Default)]
pub struct ItemOut<'a> {
    pub item_oid: &'a str,
    pub value: Option<&'a str>,
    /// A null flavour code (NI, NA, UNK, …) instead of a value.
    pub null_flavour: Option<&'a str>,
}

/// Where the writer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    ClinicalData,
    Subject,
    Event,
    Form,
}

/// Writes `ClinicalData` record by record.
pub struct ClinicalWriter<W: Write> {
    w: Writer<W>,
    openclinica: bool,
    level: Level,
    /// Inside another document's `ODM` element: no declaration, no root.
    embedded: bool,
}

fn utc(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z"))
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

impl<W: Write> ClinicalWriter<W> {
    /// Starts the file: the XML declaration, `ODM` and `ClinicalData`.
    ///
    /// # Errors
    /// When the output fails.
    pub fn new(out: W, file: &ClinicalFile<'_>) -> io::Result<Self> {
        let mut me = Self {
            w: Writer::new_with_indent(out, b' ', 2),
            openclinica: file.openclinica,
            level: Level::ClinicalData,
            embedded: false,
        };
        me.w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
        let created = utc(file.created);
        let mut root = BytesStart::new("ODM");
        root.push_attribute(("xmlns", ODM_1_3_NAMESPACE));
        if file.openclinica {
            root.push_attribute(("xmlns:OpenClinica", OPENCLINICA_NAMESPACE));
        }
        root.push_attribute(("ODMVersion", "1.3.2"));
        root.push_attribute(("FileType", "Snapshot"));
        root.push_attribute(("Granularity", "AllClinicalData"));
        root.push_attribute(("FileOID", file.file_oid));
        root.push_attribute(("CreationDateTime", created.as_str()));
        root.push_attribute(("SourceSystem", "Casebook"));
        root.push_attribute(("SourceSystemVersion", env!("CARGO_PKG_VERSION")));
        me.w.write_event(Event::Start(root))?;
        let mut cd = BytesStart::new("ClinicalData");
        cd.push_attribute(("StudyOID", file.study_oid));
        cd.push_attribute(("MetaDataVersionOID", file.metadata_version_oid));
        me.w.write_event(Event::Start(cd))?;
        Ok(me)
    }

    /// Starts only `ClinicalData`, for a document whose `ODM` root (declaring the OpenClinica
    /// namespace when `file.openclinica`) is written by someone else — an export of metadata and
    /// clinical data together. [`Self::finish`] then closes only `ClinicalData`.
    ///
    /// # Errors
    /// When the output fails.
    pub fn embedded(out: W, file: &ClinicalFile<'_>) -> io::Result<Self> {
        let mut me = Self {
            w: Writer::new_with_indent(out, b' ', 2),
            openclinica: file.openclinica,
            level: Level::ClinicalData,
            embedded: true,
        };
        let mut cd = BytesStart::new("ClinicalData");
        cd.push_attribute(("StudyOID", file.study_oid));
        cd.push_attribute(("MetaDataVersionOID", file.metadata_version_oid));
        me.w.write_event(Event::Start(cd))?;
        Ok(me)
    }

    /// The output so far (to drain a buffer between records).
    pub fn get_mut(&mut self) -> &mut W {
        self.w.get_mut()
    }

    /// Closes open elements down to (and excluding) `level`.
    fn close_to(&mut self, level: Level) -> io::Result<()> {
        while self.level > level {
            let name = match self.level {
                Level::Form => "FormData",
                Level::Event => "StudyEventData",
                Level::Subject => "SubjectData",
                Level::ClinicalData => unreachable!("ClinicalData is closed by finish"),
            };
            self.w.write_event(Event::End(BytesEnd::new(name)))?;
            self.level = match self.level {
                Level::Form => Level::Event,
                Level::Event => Level::Subject,
                _ => Level::ClinicalData,
            };
        }
        Ok(())
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
        self.level = Level::Subject;
        Ok(())
    }

    /// Starts an event occurrence of the current participant (closing the previous one).
    ///
    /// # Errors
    /// When the output fails, or [`io::ErrorKind::InvalidInput`] outside a participant.
    pub fn event(&mut self, ev: &EventOut<'_>) -> io::Result<()> {
        if self.level < Level::Subject {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "an event outside a participant"));
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
        self.level = Level::Event;
        Ok(())
    }

    /// Starts a form of the current event occurrence (closing the previous one).
    ///
    /// # Errors
    /// When the output fails, or [`io::ErrorKind::InvalidInput`] outside an event.
    pub fn form(&mut self, f: &FormOut<'_>) -> io::Result<()> {
        if self.level < Level::Event {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a form outside an event"));
        }
        self.close_to(Level::Event)?;
        let mut e = BytesStart::new("FormData");
        e.push_attribute(("FormOID", f.version_oid));
        if self.openclinica {
            e.push_attribute(("OpenClinica:Version", f.version_label));
            e.push_attribute(("OpenClinica:Status", oc_form_status(f)));
        }
        self.w.write_event(Event::Start(e))?;
        self.level = Level::Form;
        Ok(())
    }

    /// Writes one item group row of the current form with its values.
    ///
    /// # Errors
    /// When the output fails, or [`io::ErrorKind::InvalidInput`] outside a form.
    pub fn group(&mut self, group_oid: &str, repeat_key: Option<i32>, items: &[ItemOut<'_>]) -> io::Result<()> {
        if self.level != Level::Form {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "an item group outside a form"));
        }
        let mut g = BytesStart::new("ItemGroupData");
        g.push_attribute(("ItemGroupOID", group_oid));
        let repeat = repeat_key.map(|r| r.to_string());
        if let Some(r) = &repeat {
            g.push_attribute(("ItemGroupRepeatKey", r.as_str()));
        }
        g.push_attribute(("TransactionType", "Insert"));
        self.w.write_event(Event::Start(g))?;
        for item in items {
            let mut e = BytesStart::new("ItemData");
            e.push_attribute(("ItemOID", item.item_oid));
            match (item.value, item.null_flavour) {
                (Some(v), _) => e.push_attribute(("Value", v)),
                (None, Some(code)) => {
                    e.push_attribute(("IsNull", "Yes"));
                    if self.openclinica {
                        e.push_attribute(("OpenClinica:ReasonForNull", code));
                    }
                }
                (None, None) => e.push_attribute(("IsNull", "Yes")),
            }
            self.w.write_event(Event::Empty(e))?;
        }
        self.w.write_event(Event::End(BytesEnd::new("ItemGroupData")))
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
