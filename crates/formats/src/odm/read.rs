//! CDISC ODM 1.3.x metadata in: a study design (events, forms, item groups, items, code lists)
//! from `Study/MetaDataVersion`, plain or with OpenClinica 3's extensions
//! (reference `openclinica-data-model.md` §11).
//!
//! Mapping decisions:
//! - the first `Study` is read, and in it the first `MetaDataVersion` that no other one
//!   `Include`s (a later version builds on an earlier one, so the one nobody includes is the
//!   newest); definitions of the versions it `Include`s fill in OIDs it does not define. Other
//!   studies and versions are reported as warnings;
//! - **OpenClinica-flavoured** ODM (`OpenClinica:FormDetails/@ParentFormOID` in a `FormDef`):
//!   a `FormDef` is a form *version* (OID kept as the version OID; `Name` "Form - v1" gives the
//!   form name and the version label); versions with the same parent are one form;
//! - **plain** ODM: a `FormDef` is a form with one version; the form keeps the `FormDef` OID,
//!   the version is labelled with the `MetaDataVersion` OID and its OID is the form OID plus
//!   `_` and the first 10 characters of the normalised label, as OpenClinica names versions;
//! - a `FormRef` becomes an [`EventForm`]: references to several versions of one form are one
//!   event form offering those versions (all of them = no restriction);
//! - `ItemRef/@Mandatory` is [`Required::Yes`]; `MethodOID` a calculation and
//!   `CollectionExceptionConditionOID` (on an `ItemRef` or an `ItemGroupRef`) skip logic: ODM's
//!   condition says when *not* to collect, so `relevant` is its negation (`not(…)`, or the
//!   inside of a condition that is already `not(…)`). `FormalExpression/@Context` `XPath` is the
//!   XPath dialect, `OpenClinicaRules` rules, anything else OpenClinica functions;
//! - OpenClinica's per-version details (`ItemPresentInForm`, `ItemGroupDetails/PresentInForm`,
//!   `SectionDetails`, `PresentInEventDefinition`) give sections, texts, PHI, visibility, layout,
//!   repeat settings and event settings; without them each version has one section, `main`;
//! - texts: the `TranslatedText` without `xml:lang` (or in the file's first language) is the
//!   default, the others are translations keyed by their `xml:lang`;
//! - OIDs are kept when they are Casebook OIDs (`A-Z`, `0-9`, `_`, at most 40); others
//!   (`IT.AGE`, `SE.VISIT 1`) are converted (`IT_AGE`) with one summary warning.
//!
//! Problems are collected, never stopping at the first, except for XML that is not well formed
//! (one error with line and column). Every reference must resolve; `ClinicalData` is not
//! metadata and is streamed past, but the OIDs it uses are checked against the metadata.
//!
//! Architecture invariant (security): no DTD is processed. A `<!DOCTYPE` (which is where entity
//! declarations live) refuses the file, so there is no external entity and no entity expansion;
//! only XML's five predefined entities and character references are resolved. Files over
//! [`MAX_BYTES`] are refused before parsing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use casebook_domain::design::{
    Check, CheckRule, CodeList, CodeListItem, Comparator, ConditionalDisplay, DataType, Dialect, EventDef, EventForm,
    EventType, Expression, FormDef, FormSource, FormVersion, ItemDef, ItemGroup, NULL_FLAVOURS, Repeat, Required,
    SdvRequirement, Section, StudyDesign, Text, Widget,
};
use casebook_domain::oid::{self, Oid};
use quick_xml::NsReader;
use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;

use crate::diagnostic::{Diagnostics, Location};

/// The largest file [`read_metadata`] accepts.
pub const MAX_BYTES: usize = 64 * 1024 * 1024;

const ODM_13_NAMESPACE: &str = "http://www.cdisc.org/ns/odm/v1.3";
const ODM_12_NAMESPACE: &str = "http://www.cdisc.org/ns/odm/v1.2";
const ODM_20_NAMESPACE: &str = "http://www.cdisc.org/ns/odm/v2.0";
/// OpenClinica's extension namespaces: 1.3 (current), 1.2, and the legacy one.
const OPENCLINICA_NAMESPACES: [&str; 3] = [
    "http://www.openclinica.org/ns/odm_ext_v130/v3.1",
    "http://www.openclinica.org/ns/odm_ext_v121/v3.1",
    "http://www.openclinica.org/ns/openclinica_odm/v1.3",
];
const XML_NAMESPACE: &str = "http://www.w3.org/XML/1998/namespace";

/// The section of a form version that has no OpenClinica section details.
const DEFAULT_SECTION: &str = "main";

/// A study design read from ODM metadata, with the study it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct OdmDesign {
    /// `Study/@OID` as written in the file.
    pub study_oid: String,
    /// `GlobalVariables/StudyName`.
    pub study_name: String,
    /// The `MetaDataVersion/@OID` read, as written in the file.
    pub metadata_version_oid: String,
    pub design: StudyDesign,
}

/// Reads the study design from ODM 1.3.x metadata.
///
/// Returns the design only when there is no error; the diagnostics hold every problem found
/// (errors and warnings), each with its line and column.
#[must_use]
pub fn read_metadata(xml: &[u8]) -> (Option<OdmDesign>, Diagnostics) {
    let mut d = Diagnostics::default();
    if xml.len() > MAX_BYTES {
        d.error(
            Location::File,
            format!(
                "The file is {} MiB; ODM files of at most {} MiB are read.",
                xml.len().div_ceil(1024 * 1024),
                MAX_BYTES / (1024 * 1024)
            ),
        );
        return (None, d);
    }
    let lines = Lines::new(xml);
    let parsed = match parse(xml) {
        Ok(parsed) => parsed,
        Err((offset, message)) => {
            d.error(lines.at(offset), message);
            return (None, d);
        }
    };
    let design = Importer { lines: &lines, d: &mut d }.read(&parsed);
    d.0.sort_by_key(|diagnostic| match diagnostic.location {
        Location::Xml { line, column } => (line, column),
        _ => (0, 0),
    });
    if d.has_errors() { (None, d) } else { (design, d) }
}

// ---------------------------------------------------------------------------------------------
// Positions.

/// Byte offsets → 1-based line and column (in characters). Also used by the rules reader.
pub(crate) struct Lines<'a> {
    xml: &'a [u8],
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    pub(crate) fn new(xml: &'a [u8]) -> Self {
        let mut starts = vec![0];
        starts.extend(xml.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i + 1));
        Self { xml, starts }
    }

    pub(crate) fn at(&self, offset: usize) -> Location {
        let offset = offset.min(self.xml.len());
        let line = self.starts.partition_point(|s| *s <= offset);
        let start = self.starts.get(line.saturating_sub(1)).copied().unwrap_or(0);
        let column = String::from_utf8_lossy(&self.xml[start..offset]).chars().count() + 1;
        Location::Xml { line, column }
    }
}

// ---------------------------------------------------------------------------------------------
// XML → a small tree of the metadata; clinical data is streamed.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ns {
    /// ODM 1.3 or 1.2, or no namespace (leniently read as ODM).
    Odm,
    OpenClinica,
    Xml,
    Odm20,
    Other,
}

fn namespace(result: &ResolveResult<'_>, element: bool) -> Ns {
    match result {
        ResolveResult::Bound(ns) => match ns.as_ref() {
            ODM_13_NAMESPACE | ODM_12_NAMESPACE => Ns::Odm,
            ODM_20_NAMESPACE => Ns::Odm20,
            XML_NAMESPACE => Ns::Xml,
            n if OPENCLINICA_NAMESPACES.contains(&n) => Ns::OpenClinica,
            _ => Ns::Other,
        },
        // Unprefixed attributes belong to their element.
        ResolveResult::Unbound => Ns::Odm,
        ResolveResult::Unknown(prefix) if !element && prefix == "xml" => Ns::Xml,
        ResolveResult::Unknown(_) => Ns::Other,
    }
}

#[derive(Debug)]
struct Attr {
    ns: Ns,
    name: String,
    value: String,
}

/// An element of the metadata.
#[derive(Debug)]
struct El {
    ns: Ns,
    name: String,
    attrs: Vec<Attr>,
    children: Vec<El>,
    text: String,
    /// Byte offset of the `<`.
    pos: usize,
}

impl El {
    fn is(&self, name: &str) -> bool {
        self.ns == Ns::Odm && self.name == name
    }

    fn is_oc(&self, name: &str) -> bool {
        self.ns == Ns::OpenClinica && self.name == name
    }

    /// An unprefixed attribute, trimmed.
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|a| a.ns == Ns::Odm && a.name == name).map(|a| a.value.trim())
    }

    /// A non-empty unprefixed attribute.
    fn value(&self, name: &str) -> Option<&str> {
        self.attr(name).filter(|v| !v.is_empty())
    }

    fn oc_attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|a| a.ns == Ns::OpenClinica && a.name == name).map(|a| a.value.trim())
    }

    fn lang(&self) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns == Ns::Xml && a.name == "lang")
            .map(|a| a.value.trim())
            .filter(|l| !l.is_empty())
    }

    fn children<'s, 'n>(&'s self, name: &'n str) -> impl Iterator<Item = &'s El> + use<'s, 'n> {
        self.children.iter().filter(move |c| c.is(name))
    }

    fn child(&self, name: &str) -> Option<&El> {
        self.children(name).next()
    }

    fn oc_children<'s, 'n>(&'s self, name: &'n str) -> impl Iterator<Item = &'s El> + use<'s, 'n> {
        self.children.iter().filter(move |c| c.is_oc(name))
    }

    fn oc_child(&self, name: &str) -> Option<&El> {
        self.oc_children(name).next()
    }

    fn text(&self) -> &str {
        self.text.trim()
    }

    /// The trimmed text of an OpenClinica child element, when not empty.
    fn oc_text(&self, name: &str) -> Option<&str> {
        self.oc_child(name).map(El::text).filter(|t| !t.is_empty())
    }

    /// Every descendant, depth first, self included.
    fn walk<'s>(&'s self, out: &mut Vec<&'s El>) {
        out.push(self);
        for c in &self.children {
            c.walk(out);
        }
    }
}

/// What `ClinicalData` refers to, by kind of reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum DataRef {
    StudyEvent,
    Form,
    ItemGroup,
    Item,
}

impl DataRef {
    fn attribute(self) -> &'static str {
        match self {
            Self::StudyEvent => "StudyEventOID",
            Self::Form => "FormOID",
            Self::ItemGroup => "ItemGroupOID",
            Self::Item => "ItemOID",
        }
    }

    fn definition(self) -> &'static str {
        match self {
            Self::StudyEvent => "StudyEventDef",
            Self::Form => "FormDef",
            Self::ItemGroup => "ItemGroupDef",
            Self::Item => "ItemDef",
        }
    }
}

/// One `ClinicalData` element: its study and metadata version, and the OIDs it uses (first
/// position and count), without its data.
#[derive(Debug, Default)]
struct ClinicalBlock {
    study_oid: String,
    metadata_version_oid: String,
    pos: usize,
    refs: HashMap<(DataRef, String), (usize, usize)>,
}

#[derive(Debug, Default)]
struct Parsed {
    /// The root element, attributes only.
    root: Option<El>,
    /// The first `Study`, whole.
    study: Option<El>,
    /// Other `Study` elements: OID and position.
    other_studies: Vec<(String, usize)>,
    clinical: Vec<ClinicalBlock>,
    /// Other top-level elements (`AdminData`, `ReferenceData` …): name and position.
    skipped: Vec<(String, usize)>,
}

enum Mode {
    /// Outside the first study and clinical data.
    Skip,
    Study,
    Clinical,
}

type ParseError = (usize, String);

fn element(reader: &NsReader<&[u8]>, ns: Ns, e: &BytesStart<'_>, pos: usize) -> Result<El, ParseError> {
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|err| (pos, format!("The XML is not well formed: {err}.")))?;
        let key = a.key.as_ref();
        if key == "xmlns" || key.starts_with("xmlns:") {
            continue;
        }
        let (resolved, local) = reader.resolver().resolve_attribute(a.key);
        let value = a.normalized_value(XmlVersion::Implicit1_0).map_err(|err| {
            (pos, format!("The XML is not well formed: attribute '{key}' has an invalid value ({err})."))
        })?;
        attrs.push(Attr {
            ns: namespace(&resolved, false),
            name: local.as_ref().to_owned(),
            value: value.into_owned(),
        });
    }
    Ok(El { ns, name: e.local_name().as_ref().to_owned(), attrs, children: Vec::new(), text: String::new(), pos })
}

fn data_ref(name: &str) -> Option<DataRef> {
    match name {
        "StudyEventData" => Some(DataRef::StudyEvent),
        "FormData" => Some(DataRef::Form),
        "ItemGroupData" => Some(DataRef::ItemGroup),
        // `ItemData` and the typed `ItemDataString`, `ItemDataInteger` …
        n if n.starts_with("ItemData") => Some(DataRef::Item),
        _ => None,
    }
}

/// Reads the XML: the root's attributes, the first study's tree, and the references of clinical
/// data. Text is kept untrimmed and trimmed per element (quick-xml's `trim_text` would also trim
/// the spaces around `&amp;` in `A &amp; B`, which arrives as three events).
fn parse(xml: &[u8]) -> Result<Parsed, ParseError> {
    let mut reader = NsReader::from_reader(xml);
    reader.config_mut().check_end_names = true;
    let mut out = Parsed::default();
    let mut mode = Mode::Skip;
    // Elements open in the study being built; the names of every open element.
    let mut stack: Vec<El> = Vec::new();
    let mut open: Vec<(String, usize)> = Vec::new();
    let pos_of = |reader: &NsReader<&[u8]>| usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
    loop {
        let pos = pos_of(&reader);
        let (resolved, event) = match reader.read_resolved_event() {
            Ok(read) => read,
            Err(err) => {
                let at = usize::try_from(reader.error_position()).unwrap_or(pos);
                return Err((at, format!("The XML is not well formed: {err}.")));
            }
        };
        let ns = namespace(&resolved, true);
        match event {
            Event::DocType(_) => {
                return Err((
                    pos,
                    "The file has a <!DOCTYPE> declaration. Document type definitions and entity declarations \
                     are refused (they can read local files or expand without limit); ODM files need none."
                        .to_owned(),
                ));
            }
            Event::Decl(decl) => {
                if let Some(Ok(encoding)) = decl.encoding() {
                    let e = encoding.to_ascii_lowercase();
                    if !matches!(e.as_str(), "utf-8" | "utf8" | "us-ascii" | "ascii") {
                        return Err((pos, format!("The file is encoded as '{encoding}'; only UTF-8 is read.")));
                    }
                }
            }
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                let name = e.local_name().as_ref().to_owned();
                let depth = open.len();
                if depth == 0 {
                    if out.root.is_some() {
                        return Err((pos, "The XML is not well formed: there is more than one root element.".into()));
                    }
                    out.root = Some(element(&reader, ns, e, pos)?);
                } else if depth == 1 {
                    let el = element(&reader, ns, e, pos)?;
                    match name.as_str() {
                        "Study" if ns == Ns::Odm && out.study.is_none() => {
                            mode = Mode::Study;
                            if empty {
                                out.study = Some(el);
                            } else {
                                stack.push(el);
                            }
                        }
                        "Study" if ns == Ns::Odm => {
                            out.other_studies.push((el.attr("OID").unwrap_or_default().to_owned(), pos));
                            mode = Mode::Skip;
                        }
                        "ClinicalData" if ns == Ns::Odm => {
                            mode = Mode::Clinical;
                            out.clinical.push(ClinicalBlock {
                                study_oid: el.attr("StudyOID").unwrap_or_default().to_owned(),
                                metadata_version_oid: el.attr("MetaDataVersionOID").unwrap_or_default().to_owned(),
                                pos,
                                refs: HashMap::new(),
                            });
                        }
                        _ => {
                            out.skipped.push((name.clone(), pos));
                            mode = Mode::Skip;
                        }
                    }
                } else {
                    match mode {
                        Mode::Study => {
                            let el = element(&reader, ns, e, pos)?;
                            if empty {
                                if let Some(parent) = stack.last_mut() {
                                    parent.children.push(el);
                                }
                            } else {
                                stack.push(el);
                            }
                        }
                        Mode::Clinical => {
                            if ns == Ns::Odm
                                && let Some(kind) = data_ref(&name)
                                && let Ok(Some(attr)) = e.try_get_attribute(kind.attribute())
                                && let Ok(oid) = attr.normalized_value(XmlVersion::Implicit1_0)
                                && let Some(block) = out.clinical.last_mut()
                            {
                                let entry = block.refs.entry((kind, oid.trim().to_owned())).or_insert((pos, 0));
                                entry.1 += 1;
                            }
                        }
                        Mode::Skip => {}
                    }
                }
                if !empty {
                    open.push((name, pos));
                }
            }
            Event::End(_) => {
                open.pop();
                if matches!(mode, Mode::Study)
                    && let Some(done) = stack.pop()
                {
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(done),
                        None => out.study = Some(done),
                    }
                }
                if open.len() <= 1 {
                    mode = Mode::Skip;
                }
            }
            Event::Text(t) => {
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&t.xml_content(XmlVersion::Implicit1_0));
                } else if open.is_empty() && !t.xml_content(XmlVersion::Implicit1_0).trim().is_empty() {
                    return Err((pos, "The XML is not well formed: there is text outside the root element.".into()));
                }
            }
            Event::CData(t) => {
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&t.xml_content(XmlVersion::Implicit1_0));
                }
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => match quick_xml::escape::resolve_predefined_entity(r.as_ref()) {
                        Some(text) => text.to_owned(),
                        None => {
                            return Err((
                                pos,
                                format!(
                                    "The XML is not well formed: the entity '&{};' is not defined (only &amp; &lt; \
                                     &gt; &quot; &apos; and character references are allowed).",
                                    r.as_ref()
                                ),
                            ));
                        }
                    },
                    Err(err) => return Err((pos, format!("The XML is not well formed: {err}."))),
                };
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&resolved);
                }
            }
            Event::Eof => break,
            Event::Comment(_) | Event::PI(_) => {}
        }
    }
    if let Some((name, pos)) = open.last() {
        return Err((*pos, format!("The XML is not well formed: the file ends before <{name}> is closed.")));
    }
    if out.root.is_none() {
        return Err((0, "The file holds no XML element.".into()));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Values.

fn yes_no(value: &str) -> Option<bool> {
    match value {
        "Yes" => Some(true),
        "No" => Some(false),
        _ => None,
    }
}

/// Yes/No attributes of OpenClinica's extension, which also appear as true/false.
fn oc_flag(value: Option<&str>) -> bool {
    value.is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "yes" | "true" | "1" | "y"))
}

/// ODM `DataType` → Casebook data type, with a note when the mapping is approximate.
fn data_type(odm: &str) -> Option<(DataType, Option<&'static str>)> {
    Some(match odm {
        "text" => (DataType::Text, None),
        "integer" => (DataType::Integer, None),
        "float" => (DataType::Real, None),
        "date" => (DataType::Date, None),
        "partialDate" => (DataType::PartialDate, None),
        "datetime" => (DataType::DateTime, None),
        "time" => (DataType::Time, None),
        "boolean" => (DataType::Boolean, None),
        "string" => (DataType::Text, Some("text")),
        "double" | "hexFloat" | "base64Float" => (DataType::Real, Some("a decimal number (REAL)")),
        "partialDatetime" | "incompleteDatetime" => {
            (DataType::PartialDate, Some("a partial date (PDATE): the time part is not collected"))
        }
        "incompleteDate" => (DataType::PartialDate, Some("a partial date (PDATE)")),
        "partialTime" | "incompleteTime" => (DataType::Time, Some("a time; partial times are not accepted")),
        "hexBinary" | "base64Binary" => (DataType::File, Some("a file")),
        "URI" | "durationDatetime" | "intervalDatetime" => (DataType::Text, Some("text")),
        _ => return None,
    })
}

fn code_list_type(odm: &str) -> DataType {
    match odm {
        "integer" => DataType::Integer,
        "float" | "double" => DataType::Real,
        _ => DataType::Text,
    }
}

/// The dialect of a `FormalExpression/@Context`.
fn dialect(context: &str) -> (Dialect, bool) {
    match context.trim().to_ascii_lowercase().as_str() {
        "xpath" => (Dialect::XPath, true),
        "openclinica" | "oc" | "openclinica-func" => (Dialect::OcFunc, true),
        "openclinicarules" => (Dialect::OcRule, true),
        _ => (Dialect::OcFunc, false),
    }
}

/// The negation of an expression: the inside of `not(…)`, or `not(…)` around it.
fn negate(source: &str) -> String {
    let s = source.trim();
    if let Some(inner) = s.strip_prefix("not(").and_then(|r| r.strip_suffix(')')) {
        // Only when the first parenthesis closes at the end: `not(a) and not(b)` is not one call.
        let mut depth = 1usize;
        let balanced = inner.chars().all(|c| {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            depth > 0
        });
        if balanced {
            return inner.trim().to_owned();
        }
    }
    format!("not({s})")
}

fn positive(value: &str) -> Option<u32> {
    value.parse::<u32>().ok().filter(|n| *n > 0)
}

// ---------------------------------------------------------------------------------------------
// OIDs.

/// What an OID names; forms and versions share one space, since both are `FormDef` OIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Space {
    Event,
    Form,
    Group,
    Item,
    CodeList,
}

/// ODM OIDs → Casebook OIDs: valid ones are kept, others converted and made unique.
#[derive(Default)]
struct Oids {
    map: HashMap<(Space, String), Oid>,
    used: HashSet<(Space, String)>,
    /// Valid OIDs defined in the file, which conversions must not take.
    reserved: HashSet<(Space, String)>,
    converted: Vec<(String, String)>,
}

impl Oids {
    fn reserve(&mut self, space: Space, source: &str) {
        if Oid::parse(source).is_ok() {
            self.reserved.insert((space, source.to_owned()));
        }
    }

    /// The OID for a source OID.
    fn get(&mut self, space: Space, source: &str) -> Oid {
        if let Some(oid) = self.map.get(&(space, source.to_owned())) {
            return oid.clone();
        }
        let oid = match Oid::parse(source) {
            Ok(valid) if !self.used.contains(&(space, source.to_owned())) => valid,
            _ => {
                let converted: String = source
                    .trim()
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' })
                    .collect();
                let oid = self.unique(space, &converted);
                self.converted.push((source.to_owned(), oid.to_string()));
                oid
            }
        };
        self.used.insert((space, oid.to_string()));
        self.map.insert((space, source.to_owned()), oid.clone());
        oid
    }

    /// A new OID for `key` (not an OID of the file), based on `candidate`.
    fn derive(&mut self, space: Space, key: &str, candidate: &str) -> Oid {
        let key = format!("\u{0}{key}");
        if let Some(oid) = self.map.get(&(space, key.clone())) {
            return oid.clone();
        }
        let oid = self.unique(space, candidate);
        self.used.insert((space, oid.to_string()));
        self.map.insert((space, key), oid.clone());
        oid
    }

    fn unique(&self, space: Space, candidate: &str) -> Oid {
        let base: String =
            candidate.chars().filter(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_').collect();
        let base = if base.is_empty() { "X".to_owned() } else { base };
        let free =
            |s: &str| !self.used.contains(&(space, s.to_owned())) && !self.reserved.contains(&(space, s.to_owned()));
        let first: String = base.chars().take(40).collect();
        let mut n = 1u32;
        let mut text = first;
        while !free(&text) {
            n += 1;
            let suffix = format!("_{n}");
            text = format!("{}{suffix}", base.chars().take(40 - suffix.len()).collect::<String>());
        }
        // `text` is 1 to 40 characters of A-Z, 0-9 and _, so it parses; the fallback is never used.
        Oid::parse(&text).unwrap_or_else(|_| oid::measurement_unit(&text))
    }
}

// ---------------------------------------------------------------------------------------------
// The metadata version's definitions.

#[derive(Default)]
struct Defs<'e> {
    events: Vec<&'e El>,
    forms: Vec<&'e El>,
    groups: HashMap<&'e str, &'e El>,
    items: HashMap<&'e str, &'e El>,
    code_lists: HashMap<&'e str, &'e El>,
    conditions: HashMap<&'e str, &'e El>,
    methods: HashMap<&'e str, &'e El>,
    multi_select_lists: HashMap<&'e str, &'e El>,
    units: HashMap<&'e str, &'e El>,
    /// The `Protocol` of the version read (or of one it includes).
    protocol: Option<&'e El>,
    /// The metadata versions read: the chosen one first, then those it includes.
    versions: Vec<&'e El>,
}

impl<'e> Defs<'e> {
    fn event(&self, oid: &str) -> Option<&'e El> {
        self.events.iter().copied().find(|e| e.attr("OID") == Some(oid))
    }

    fn form(&self, oid: &str) -> Option<&'e El> {
        self.forms.iter().copied().find(|e| e.attr("OID") == Some(oid))
    }
}

struct Importer<'a> {
    lines: &'a Lines<'a>,
    d: &'a mut Diagnostics,
}

/// Per form version state while building it.
#[derive(Default)]
struct VersionState {
    names: HashSet<String>,
    item_oids: HashSet<String>,
    default_language: Option<String>,
    languages: BTreeSet<String>,
}

impl Importer<'_> {
    fn error(&mut self, pos: usize, message: impl Into<String>) {
        self.d.error(self.lines.at(pos), message);
    }

    fn warning(&mut self, pos: usize, message: impl Into<String>) {
        self.d.warning(self.lines.at(pos), message);
    }

    fn read(&mut self, parsed: &Parsed) -> Option<OdmDesign> {
        let root = parsed.root.as_ref()?;
        if root.ns == Ns::Odm20 {
            self.error(root.pos, "This is an ODM 2.0 file; Casebook reads study designs from ODM 1.3.x.");
            return None;
        }
        if root.ns != Ns::Odm || root.name != "ODM" {
            self.error(
                root.pos,
                format!(
                    "The root element is <{}>, not <ODM> in the ODM 1.3 namespace ({ODM_13_NAMESPACE}).",
                    root.name
                ),
            );
            return None;
        }
        self.check_root(root);
        let Some(study) = parsed.study.as_ref() else {
            let mut what: Vec<String> = Vec::new();
            let found = parsed.clinical.iter().map(|c| format!("ClinicalData for study '{}'", c.study_oid));
            for thing in found.chain(parsed.skipped.iter().map(|(n, _)| n.clone())) {
                if !what.contains(&thing) {
                    what.push(thing);
                }
            }
            let holds = if what.is_empty() { "nothing else".to_owned() } else { what.join(", ") };
            self.error(root.pos, format!("The file has no <Study>, so no study design to read (it holds {holds})."));
            return None;
        };
        for (oid, pos) in &parsed.other_studies {
            self.warning(*pos, format!("Only the first study is read; study '{oid}' is ignored."));
        }
        let study_oid = study.attr("OID").unwrap_or_default().to_owned();
        if study_oid.is_empty() {
            self.error(study.pos, "<Study> has no OID.");
        }
        let study_name = self.global_variables(study);

        let Some((mdv, defs)) = self.definitions(study, &study_oid) else {
            self.error(study.pos, format!("Study '{study_oid}' has no <MetaDataVersion>: it defines no study design."));
            return None;
        };
        let mdv_oid = mdv.attr("OID").unwrap_or_default().to_owned();
        self.validate(&defs);
        self.check_clinical_data(parsed, &study_oid, &defs);

        let mut builder = Builder::new(self, &defs, &mdv_oid);
        let design = builder.build();
        if design.forms.is_empty() {
            self.warning(
                mdv.pos,
                format!(
                    "Metadata version '{mdv_oid}' defines no forms (FormDef), so there is nothing to collect{}.",
                    if defs.groups.is_empty() { "" } else { " (files such as Define-XML describe datasets, not CRFs)" }
                ),
            );
        }
        Some(OdmDesign { study_oid, study_name, metadata_version_oid: mdv_oid, design })
    }

    fn check_root(&mut self, root: &El) {
        match root.attr("FileType") {
            Some("Snapshot" | "Transactional") => {}
            Some(other) => self.error(
                root.pos,
                format!("ODM/@FileType is '{other}'; ODM 1.3.2 allows only 'Snapshot' or 'Transactional'."),
            ),
            None => self.error(root.pos, "ODM/@FileType is missing; ODM 1.3.2 requires 'Snapshot' or 'Transactional'."),
        }
        if let Some(g) = root.attr("Granularity")
            && !matches!(
                g,
                "All" | "Metadata" | "AdminData" | "ReferenceData" | "AllClinicalData" | "SingleSite" | "SingleSubject"
            )
        {
            self.error(root.pos, format!("ODM/@Granularity '{g}' is not an ODM 1.3.2 granularity."));
        }
        if let Some(v) = root.attr("ODMVersion")
            && !matches!(v, "1.3.2" | "1.3.1" | "1.3" | "1.2.1" | "1.2")
        {
            self.warning(root.pos, format!("ODM/@ODMVersion is '{v}'; the file is read as ODM 1.3.2."));
        }
        for required in ["FileOID", "CreationDateTime"] {
            if root.value(required).is_none() {
                self.warning(root.pos, format!("ODM/@{required} is missing (ODM 1.3.2 requires it)."));
            }
        }
    }

    /// `GlobalVariables`: the study name (required, with its siblings).
    fn global_variables(&mut self, study: &El) -> String {
        let Some(globals) = study.child("GlobalVariables") else {
            self.error(study.pos, "<Study> has no <GlobalVariables> (StudyName, StudyDescription, ProtocolName).");
            return String::new();
        };
        for required in ["StudyName", "StudyDescription", "ProtocolName"] {
            if globals.child(required).is_none() {
                let near = globals.children.iter().find(|c| c.name.eq_ignore_ascii_case(required));
                let hint = near.map_or(String::new(), |c| {
                    format!(" (there is <{}> at {}: element names are case-sensitive)", c.name, self.lines.at(c.pos))
                });
                self.error(globals.pos, format!("<GlobalVariables> has no <{required}>{hint}."));
            }
        }
        globals.child("StudyName").map(|n| n.text().to_owned()).unwrap_or_default()
    }

    /// Chooses the metadata version and indexes its definitions (and those it includes).
    fn definitions<'e>(&mut self, study: &'e El, study_oid: &str) -> Option<(&'e El, Defs<'e>)> {
        let versions: Vec<&El> = study.children("MetaDataVersion").collect();
        let included: HashSet<&str> = versions
            .iter()
            .flat_map(|v| v.children("Include"))
            .filter(|i| i.attr("StudyOID").is_none_or(|s| s == study_oid))
            .filter_map(|i| i.attr("MetaDataVersionOID"))
            .collect();
        let chosen = versions
            .iter()
            .copied()
            .find(|v| v.attr("OID").is_none_or(|o| !included.contains(o)))
            .or_else(|| versions.first().copied())?;
        let mut defs = Defs::default();
        let mut queue = vec![chosen];
        while let Some(version) = queue.pop() {
            if defs.versions.iter().any(|v| std::ptr::eq(*v, version)) {
                continue;
            }
            defs.versions.push(version);
            for include in version.children("Include") {
                let (s, m) = (include.attr("StudyOID").unwrap_or(study_oid), include.attr("MetaDataVersionOID"));
                match versions.iter().find(|v| s == study_oid && v.attr("OID") == m) {
                    Some(found) => queue.push(found),
                    None => self.warning(
                        include.pos,
                        format!(
                            "Metadata version '{}' includes version '{}' of study '{s}', which is not in this file; \
                             its definitions are missing.",
                            version.attr("OID").unwrap_or_default(),
                            m.unwrap_or_default()
                        ),
                    ),
                }
            }
        }
        let read: Vec<&str> = defs.versions.iter().filter_map(|v| v.attr("OID")).collect();
        for v in &versions {
            if !defs.versions.iter().any(|r| std::ptr::eq(*r, *v)) {
                self.warning(
                    v.pos,
                    format!(
                        "Metadata version '{}' is not read: Casebook reads '{}'{}.",
                        v.attr("OID").unwrap_or_default(),
                        chosen.attr("OID").unwrap_or_default(),
                        if read.len() > 1 { format!(" (with {})", read[1..].join(", ")) } else { String::new() }
                    ),
                );
            }
        }
        if let Some(basic) = study.child("BasicDefinitions") {
            for unit in basic.children("MeasurementUnit") {
                if let Some(oid) = unit.value("OID") {
                    defs.units.insert(oid, unit);
                }
            }
        }
        // The chosen version's definitions win over included ones.
        let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
        for (n, version) in defs.versions.clone().into_iter().enumerate() {
            if defs.protocol.is_none() {
                defs.protocol = version.child("Protocol");
            }
            for el in &version.children {
                let key = match (el.ns, el.name.as_str()) {
                    (Ns::Odm, name) => name,
                    (Ns::OpenClinica, "MultiSelectList") => "OpenClinica:MultiSelectList",
                    _ => continue,
                };
                let id = if key == "OpenClinica:MultiSelectList" { el.value("ID") } else { el.value("OID") };
                let Some(id) = id else { continue };
                if !matches!(
                    key,
                    "StudyEventDef"
                        | "FormDef"
                        | "ItemGroupDef"
                        | "ItemDef"
                        | "CodeList"
                        | "ConditionDef"
                        | "MethodDef"
                        | "OpenClinica:MultiSelectList"
                ) {
                    continue;
                }
                if let Some(first) = seen.get(&(key, id)) {
                    if n == 0 {
                        self.error(
                            el.pos,
                            format!("{key} '{id}' is defined twice (first at {}).", self.lines.at(*first)),
                        );
                    }
                    continue;
                }
                seen.insert((key, id), el.pos);
                match key {
                    "StudyEventDef" => defs.events.push(el),
                    "FormDef" => defs.forms.push(el),
                    "ItemGroupDef" => {
                        defs.groups.insert(id, el);
                    }
                    "ItemDef" => {
                        defs.items.insert(id, el);
                    }
                    "CodeList" => {
                        defs.code_lists.insert(id, el);
                    }
                    "ConditionDef" => {
                        defs.conditions.insert(id, el);
                    }
                    "MethodDef" => {
                        defs.methods.insert(id, el);
                    }
                    _ => {
                        defs.multi_select_lists.insert(id, el);
                    }
                }
            }
        }
        Some((chosen, defs))
    }

    /// Every attribute value and reference of the metadata read, each reported once.
    fn validate(&mut self, defs: &Defs<'_>) {
        let mut all = Vec::new();
        for version in &defs.versions {
            version.walk(&mut all);
        }
        let (events, forms) = (index(&defs.events), index(&defs.forms));
        let mut approximate = BTreeMap::new();
        for el in all {
            if el.ns == Ns::OpenClinica {
                if el.name == "MultiSelectListRef" {
                    self.reference(el, "MultiSelectListID", "OpenClinica:MultiSelectList", &defs.multi_select_lists);
                }
                continue;
            }
            if el.ns != Ns::Odm {
                continue;
            }
            if let Some(order) = el.attr("OrderNumber")
                && positive(order).is_none()
            {
                self.error(el.pos, format!("{}/@OrderNumber '{order}' is not a positive whole number.", el.name));
            }
            if let Some(mandatory) = el.attr("Mandatory")
                && yes_no(mandatory).is_none()
            {
                self.error(el.pos, format!("{}/@Mandatory is '{mandatory}'; it must be 'Yes' or 'No'.", el.name));
            }
            let name = el.name.as_str();
            if matches!(
                name,
                "StudyEventDef" | "FormDef" | "ItemGroupDef" | "ItemDef" | "CodeList" | "ConditionDef" | "MethodDef"
            ) {
                for required in ["OID", "Name"] {
                    if el.value(required).is_none() {
                        self.error(el.pos, format!("{name} has no {required}."));
                    }
                }
            }
            if matches!(name, "StudyEventDef" | "FormDef" | "ItemGroupDef") {
                match el.attr("Repeating") {
                    Some(r) if yes_no(r).is_none() => {
                        self.error(el.pos, format!("{name}/@Repeating is '{r}'; it must be 'Yes' or 'No'."));
                    }
                    None => {
                        self.error(el.pos, format!("{name} '{}' has no Repeating.", el.attr("OID").unwrap_or_default()))
                    }
                    _ => {}
                }
            }
            match name {
                "StudyEventDef" => match el.attr("Type") {
                    Some("Scheduled" | "Unscheduled" | "Common") => {}
                    Some(t) => self.error(
                        el.pos,
                        format!("StudyEventDef/@Type is '{t}'; it must be Scheduled, Unscheduled or Common."),
                    ),
                    None => self.error(el.pos, "StudyEventDef has no Type (Scheduled, Unscheduled or Common)."),
                },
                "ItemDef" => self.validate_item(el, &mut approximate),
                "CodeList" => {
                    match el.attr("DataType") {
                        Some("integer" | "float" | "text" | "string") => {}
                        Some(t) => self.error(
                            el.pos,
                            format!("CodeList/@DataType is '{t}'; it must be integer, float, text or string."),
                        ),
                        None => self.error(el.pos, "CodeList has no DataType."),
                    }
                    let choices = el.children("CodeListItem").count() + el.children("EnumeratedItem").count();
                    if choices == 0 {
                        let external = el.child("ExternalCodeList").map_or(String::new(), |x| {
                            format!(
                                " (it refers to the external dictionary {} {})",
                                x.attr("Dictionary").unwrap_or_default(),
                                x.attr("Version").unwrap_or_default()
                            )
                        });
                        self.warning(
                            el.pos,
                            format!(
                                "CodeList '{}' has no choices{external}; items using it are collected as free text.",
                                el.attr("OID").unwrap_or_default()
                            ),
                        );
                    }
                    for choice in el.children("CodeListItem").chain(el.children("EnumeratedItem")) {
                        if choice.attr("CodedValue").is_none() {
                            self.error(choice.pos, format!("{} has no CodedValue.", choice.name));
                        }
                    }
                }
                "RangeCheck" => self.validate_range_check(el),
                "StudyEventRef" => self.reference(el, "StudyEventOID", "StudyEventDef", &events),
                "FormRef" => self.reference(el, "FormOID", "FormDef", &forms),
                "ItemGroupRef" => {
                    self.reference(el, "ItemGroupOID", "ItemGroupDef", &defs.groups);
                    self.optional_reference(el, "CollectionExceptionConditionOID", "ConditionDef", &defs.conditions);
                }
                "ItemRef" => {
                    self.reference(el, "ItemOID", "ItemDef", &defs.items);
                    self.optional_reference(el, "MethodOID", "MethodDef", &defs.methods);
                    self.optional_reference(el, "CollectionExceptionConditionOID", "ConditionDef", &defs.conditions);
                }
                "CodeListRef" => self.reference(el, "CodeListOID", "CodeList", &defs.code_lists),
                "MeasurementUnitRef" => self.reference(el, "MeasurementUnitOID", "MeasurementUnit", &defs.units),
                "ConditionDef" | "MethodDef" => {
                    let (oid, kind) = (el.attr("OID").unwrap_or_default(), name);
                    match el.children("FormalExpression").next() {
                        None => self.warning(
                            el.pos,
                            format!(
                                "{kind} '{oid}' has no FormalExpression; {} ignored.",
                                if kind == "MethodDef" { "the calculation is" } else { "the condition is" }
                            ),
                        ),
                        Some(_)
                            if !el
                                .children("FormalExpression")
                                .any(|f| dialect(f.attr("Context").unwrap_or_default()).1) =>
                        {
                            let context =
                                el.child("FormalExpression").and_then(|f| f.attr("Context")).unwrap_or_default();
                            self.warning(
                                el.pos,
                                format!(
                                    "{kind} '{oid}' is written in '{context}', which Casebook does not evaluate; the \
                                     expression is kept as OpenClinica function text and must be rewritten."
                                ),
                            );
                        }
                        Some(_) => {}
                    }
                }
                _ => {}
            }
        }
        for (odm_type, (pos, note, oids)) in approximate {
            let examples = oids.iter().take(5).map(|o| format!("'{o}'")).collect::<Vec<_>>().join(", ");
            let more = if oids.len() > 5 { ", …" } else { "" };
            self.warning(
                pos,
                format!(
                    "{} ItemDef(s) have DataType '{odm_type}' ({examples}{more}); Casebook collects them as {note}.",
                    oids.len()
                ),
            );
        }
    }

    /// Checks an `ItemDef`; data types Casebook maps approximately are gathered in `approximate`
    /// (type → first position, what it becomes, item OIDs) for one warning per type.
    fn validate_item(&mut self, el: &El, approximate: &mut BTreeMap<String, (usize, &'static str, Vec<String>)>) {
        let oid = el.attr("OID").unwrap_or_default();
        match el.attr("DataType") {
            None => self.error(el.pos, format!("ItemDef '{oid}' has no DataType.")),
            Some(t) => match data_type(t) {
                None => self
                    .error(el.pos, format!("ItemDef '{oid}' has DataType '{t}', which is not an ODM 1.3.2 data type.")),
                Some((_, Some(note))) => {
                    let entry = approximate.entry(t.to_owned()).or_insert((el.pos, note, Vec::new()));
                    entry.2.push(oid.to_owned());
                }
                Some(_) => {}
            },
        }
        if let Some(length) = el.attr("Length")
            && positive(length).is_none()
        {
            self.error(el.pos, format!("ItemDef '{oid}' has Length '{length}', which is not a positive whole number."));
        }
        if let Some(digits) = el.attr("SignificantDigits")
            && digits.parse::<u32>().is_err()
        {
            self.error(
                el.pos,
                format!("ItemDef '{oid}' has SignificantDigits '{digits}', which is not a whole number."),
            );
        }
    }

    fn validate_range_check(&mut self, el: &El) {
        let comparator = el.attr("Comparator");
        if let Some(c) = comparator
            && Comparator::parse(c).is_none()
        {
            self.error(el.pos, format!("RangeCheck/@Comparator '{c}' is not LT, LE, GT, GE, EQ, NE, IN or NOTIN."));
        }
        match el.attr("SoftHard") {
            Some("Soft" | "Hard") => {}
            Some(s) => self.error(el.pos, format!("RangeCheck/@SoftHard is '{s}'; it must be 'Soft' or 'Hard'.")),
            None => self.error(el.pos, "RangeCheck has no SoftHard ('Soft' or 'Hard')."),
        }
        let values = el.children("CheckValue").count();
        let expression = el.child("FormalExpression").is_some();
        match comparator.and_then(Comparator::parse) {
            Some(_) if values == 0 && !expression => {
                self.warning(el.pos, "RangeCheck has a Comparator but no CheckValue; it is ignored.");
            }
            Some(Comparator::IN | Comparator::NOTIN) | None => {}
            Some(c) if values > 1 => self.warning(
                el.pos,
                format!("RangeCheck {} has {values} CheckValues; a comparison uses the first.", c.odm()),
            ),
            Some(_) => {}
        }
        if comparator.is_none() && !expression {
            self.warning(el.pos, "RangeCheck has neither a Comparator nor a FormalExpression; it is ignored.");
        }
    }

    fn reference(&mut self, el: &El, attr: &str, target: &str, defs: &HashMap<&str, &El>) {
        match el.value(attr) {
            None => self.error(el.pos, format!("{} has no {attr}.", el.name)),
            Some(oid) if !defs.contains_key(oid) => {
                self.error(el.pos, format!("{} refers to {attr} '{oid}', but no {target} has that OID.", el.name));
            }
            Some(_) => {}
        }
    }

    fn optional_reference(&mut self, el: &El, attr: &str, target: &str, defs: &HashMap<&str, &El>) {
        if let Some(oid) = el.value(attr)
            && !defs.contains_key(oid)
        {
            self.error(el.pos, format!("{} refers to {attr} '{oid}', but no {target} has that OID.", el.name));
        }
    }

    /// The OIDs clinical data uses must be defined (its values are not metadata and not read).
    fn check_clinical_data(&mut self, parsed: &Parsed, study_oid: &str, defs: &Defs<'_>) {
        let versions: HashSet<&str> = defs.versions.iter().filter_map(|v| v.attr("OID")).collect();
        let mut warned = false;
        for block in &parsed.clinical {
            if !warned {
                self.warning(
                    block.pos,
                    "The file also holds clinical data; importing the study design does not import it (only \
                     the OIDs it uses are checked against the metadata).",
                );
                warned = true;
            }
            if block.study_oid != study_oid || !versions.contains(block.metadata_version_oid.as_str()) {
                self.warning(
                    block.pos,
                    format!(
                        "ClinicalData for study '{}', metadata version '{}' is not checked: the file's metadata is \
                         study '{study_oid}', version {}.",
                        block.study_oid,
                        block.metadata_version_oid,
                        versions.iter().map(|v| format!("'{v}'")).collect::<Vec<_>>().join(", ")
                    ),
                );
                continue;
            }
            let mut refs: Vec<_> = block.refs.iter().collect();
            refs.sort_by_key(|(_, (pos, _))| *pos);
            for ((kind, oid), (pos, count)) in refs {
                let defined = match kind {
                    DataRef::StudyEvent => defs.event(oid).is_some(),
                    DataRef::Form => defs.form(oid).is_some(),
                    DataRef::ItemGroup => defs.groups.contains_key(oid.as_str()),
                    DataRef::Item => defs.items.contains_key(oid.as_str()),
                };
                if !defined {
                    let times = if *count > 1 { format!(" ({count} times; first here)") } else { String::new() };
                    self.error(
                        *pos,
                        format!(
                            "ClinicalData refers to {} '{oid}'{times}, but no {} has that OID.",
                            kind.attribute(),
                            kind.definition()
                        ),
                    );
                }
            }
        }
    }
}

fn index<'e>(list: &[&'e El]) -> HashMap<&'e str, &'e El> {
    list.iter().filter_map(|e| e.value("OID").map(|o| (o, *e))).collect()
}

/// References in the order of their `OrderNumber`s when every one has a valid one, else in
/// document order.
fn ordered<'e>(refs: impl Iterator<Item = &'e El>) -> Vec<&'e El> {
    let mut refs: Vec<&El> = refs.collect();
    if refs.iter().all(|r| r.attr("OrderNumber").and_then(positive).is_some()) {
        refs.sort_by_key(|r| r.attr("OrderNumber").and_then(positive));
    }
    refs
}

// ---------------------------------------------------------------------------------------------
// Definitions → design.

/// Where a `FormDef` went: form index, version index.
type Placement = (usize, usize);

struct Builder<'r, 'a, 'e> {
    r: &'r mut Importer<'a>,
    defs: &'r Defs<'e>,
    mdv_oid: &'r str,
    oids: Oids,
    /// The language of the first `TranslatedText` with one: the default when a text has no
    /// untagged variant.
    preferred_language: Option<String>,
    placements: HashMap<&'e str, Placement>,
}

impl<'r, 'a, 'e> Builder<'r, 'a, 'e> {
    fn new(r: &'r mut Importer<'a>, defs: &'r Defs<'e>, mdv_oid: &'r str) -> Self {
        let mut oids = Oids::default();
        for e in &defs.events {
            oids.reserve(Space::Event, e.attr("OID").unwrap_or_default());
        }
        for f in &defs.forms {
            oids.reserve(Space::Form, f.attr("OID").unwrap_or_default());
            if let Some(parent) = f.oc_child("FormDetails").and_then(|x| x.value("ParentFormOID")) {
                oids.reserve(Space::Form, parent);
            }
        }
        for g in defs.groups.keys() {
            oids.reserve(Space::Group, g);
        }
        for i in defs.items.keys() {
            oids.reserve(Space::Item, i);
        }
        for c in defs.code_lists.keys() {
            oids.reserve(Space::CodeList, c);
        }
        let mut all = Vec::new();
        for v in &defs.versions {
            v.walk(&mut all);
        }
        let preferred_language =
            all.iter().find(|e| e.is("TranslatedText") && e.lang().is_some()).and_then(|e| e.lang()).map(str::to_owned);
        Self { r, defs, mdv_oid, oids, preferred_language, placements: HashMap::new() }
    }

    fn build(&mut self) -> StudyDesign {
        let forms = self.forms();
        let events = self.events(&forms);
        if !self.oids.converted.is_empty() {
            let examples: Vec<String> =
                self.oids.converted.iter().take(5).map(|(from, to)| format!("'{from}' → {to}")).collect();
            let pos = self.defs.versions.first().map_or(0, |v| v.pos);
            self.r.warning(
                pos,
                format!(
                    "{} OIDs are not Casebook OIDs (A-Z, 0-9 and _, at most 40 characters) and were converted: {}{}.",
                    self.oids.converted.len(),
                    examples.join(", "),
                    if self.oids.converted.len() > 5 { ", …" } else { "" }
                ),
            );
        }
        StudyDesign { events, forms }
    }

    // ----- texts --------------------------------------------------------------------------------

    /// The `TranslatedText`s of an element as a [`Text`].
    fn text(&self, el: Option<&El>, state: &mut VersionState) -> Text {
        let Some(el) = el else { return Text::default() };
        let texts: Vec<(Option<&str>, &str)> = el.children("TranslatedText").map(|t| (t.lang(), t.text())).collect();
        if texts.is_empty() {
            return Text::default();
        }
        let default = texts
            .iter()
            .position(|(l, _)| l.is_none())
            .or_else(|| {
                let preferred = state.default_language.as_deref().or(self.preferred_language.as_deref());
                texts.iter().position(|(l, _)| l.is_some() && *l == preferred)
            })
            .unwrap_or(0);
        let (default_lang, text) = texts[default];
        if let Some(l) = default_lang
            && state.default_language.is_none()
        {
            state.default_language = Some(l.to_owned());
        }
        let mut out = Text::plain(text);
        for (n, (lang, t)) in texts.iter().enumerate() {
            if n == default {
                continue;
            }
            if let Some(l) = lang
                && Some(*l) != default_lang
                && !out.translations.contains_key(*l)
            {
                out.translations.insert((*l).to_owned(), (*t).to_owned());
                state.languages.insert((*l).to_owned());
            }
        }
        out
    }

    /// A text OpenClinica gives per version (`oc`), with the translations of the ODM text when
    /// its default is the same.
    fn per_version_text(&self, oc: Option<&str>, odm: Option<&El>, state: &mut VersionState) -> Text {
        let odm = self.text(odm, state);
        match oc {
            Some(oc) if oc != odm.text => Text::plain(oc),
            _ => odm,
        }
    }

    fn first_text(el: Option<&El>) -> Option<String> {
        el.and_then(|e| e.children("TranslatedText").next()).map(|t| t.text().to_owned()).filter(|t| !t.is_empty())
    }

    // ----- forms --------------------------------------------------------------------------------

    fn forms(&mut self) -> Vec<FormDef> {
        let mut forms: Vec<FormDef> = Vec::new();
        let defs = self.defs;
        for form_el in defs.forms.iter().copied() {
            let Some(source_oid) = form_el.value("OID") else { continue };
            let full_name = form_el.attr("Name").unwrap_or(source_oid);
            let details = form_el.oc_child("FormDetails");
            let parent = details.and_then(|d| d.value("ParentFormOID")).filter(|p| *p != source_oid);
            let (form_oid, form_name, label, version_oid) = match parent {
                Some(parent) => {
                    let (name, label) = split_version_name(full_name, source_oid, parent);
                    (self.oids.get(Space::Form, parent), name, label, self.oids.get(Space::Form, source_oid))
                }
                None => {
                    let form_oid = self.oids.get(Space::Form, source_oid);
                    let label = self.mdv_oid.to_owned();
                    let key = oid::normalise_key(&label, 10);
                    let candidate = if key.is_empty() { format!("{form_oid}_V1") } else { format!("{form_oid}_{key}") };
                    let version_oid = self.oids.derive(Space::Form, source_oid, &candidate);
                    (form_oid, full_name.to_owned(), label, version_oid)
                }
            };
            let index = match forms.iter().position(|f| f.oid == form_oid) {
                Some(i) => i,
                None => {
                    forms.push(FormDef {
                        oid: form_oid,
                        name: form_name.clone(),
                        description: None,
                        versions: Vec::new(),
                    });
                    forms.len() - 1
                }
            };
            let mut version = self.version(form_el, &form_name, version_oid, label);
            let description = Self::first_text(form_el.child("Description"));
            if parent.is_some() {
                version.description = details.and_then(|d| d.oc_text("VersionDescription")).map(str::to_owned);
                version.revision_notes = details.and_then(|d| d.oc_text("RevisionNotes")).map(str::to_owned);
                if version.description.is_none() && forms[index].description.is_none() {
                    forms[index].description = description;
                }
            } else {
                forms[index].description = description;
            }
            if forms[index].versions.iter().any(|v| v.label == version.label) {
                self.r.warning(
                    form_el.pos,
                    format!(
                        "FormDef '{source_oid}' repeats version label '{}' of form '{}'.",
                        version.label, forms[index].name
                    ),
                );
            }
            self.placements.insert(source_oid, (index, forms[index].versions.len()));
            forms[index].versions.push(version);
        }
        forms
    }

    fn version(&mut self, form_el: &'e El, form_name: &str, oid: Oid, label: String) -> FormVersion {
        let source_oid = form_el.attr("OID").unwrap_or_default();
        let mut state = VersionState::default();
        let mut sections: Vec<Section> = form_el
            .oc_child("FormDetails")
            .and_then(|d| d.oc_child("SectionDetails"))
            .map(|s| {
                s.oc_children("Section")
                    .filter_map(|sec| {
                        let label = sec.value("SectionLabel")?.to_owned();
                        Some(Section {
                            title: Text::plain(sec.value("SectionTitle").unwrap_or(&label)),
                            subtitle: sec.value("SectionSubtitle").map(str::to_owned),
                            instructions: sec.value("SectionInstructions").map(str::to_owned),
                            label,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let default_section = sections.first().map_or_else(|| DEFAULT_SECTION.to_owned(), |s| s.label.clone());
        let mut groups = Vec::new();
        let mut items: Vec<ItemDef> = Vec::new();
        let mut code_lists: Vec<CodeList> = Vec::new();
        let defs = self.defs;
        for group_ref in ordered(form_el.children("ItemGroupRef")) {
            let Some(group_el) = group_ref.value("ItemGroupOID").and_then(|g| defs.groups.get(g).copied()) else {
                continue;
            };
            let group_source = group_el.attr("OID").unwrap_or_default();
            let group_oid = self.oids.get(Space::Group, group_source);
            if groups.iter().any(|g: &ItemGroup| g.oid == group_oid) {
                self.r.warning(
                    group_ref.pos,
                    format!(
                        "FormDef '{source_oid}' refers to ItemGroupDef '{group_source}' twice; the second is ignored."
                    ),
                );
                continue;
            }
            let present = group_el
                .oc_child("ItemGroupDetails")
                .and_then(|d| d.oc_children("PresentInForm").find(|p| p.attr("FormOID") == Some(source_oid)));
            let repeating = group_el.attr("Repeating") == Some("Yes");
            let repeat = repeating.then(|| {
                let oc = present.and_then(|p| p.oc_child("ItemGroupRepeat"));
                Repeat {
                    initial_rows: oc.and_then(|r| r.attr("RepeatNumber")).and_then(positive).unwrap_or(1),
                    max_rows: oc.and_then(|r| r.attr("RepeatMax")).and_then(positive),
                    count: None,
                }
            });
            let header = self.per_version_text(
                present.and_then(|p| p.oc_text("ItemGroupHeader")),
                group_el.child("Description"),
                &mut state,
            );
            let relevant = self.condition(group_ref);
            let group = ItemGroup {
                oid: group_oid.clone(),
                name: group_el.attr("Name").filter(|n| !n.is_empty()).unwrap_or(group_source).to_owned(),
                header,
                repeat,
                hidden: present.is_some_and(|p| p.attr("ShowGroup") == Some("No")),
                relevant,
            };
            let before = items.len();
            for item_ref in ordered(group_el.children("ItemRef")) {
                let Some(item_el) = item_ref.value("ItemOID").and_then(|i| defs.items.get(i).copied()) else {
                    continue;
                };
                if !in_form(item_el, source_oid) {
                    continue;
                }
                let item =
                    self.item(item_el, item_ref, &group_oid, source_oid, &default_section, &mut state, &mut code_lists);
                items.push(item);
            }
            if items.len() > before {
                groups.push(group);
            }
        }
        for item in &items {
            if !sections.iter().any(|s| s.label == item.section) {
                let title = if item.section == DEFAULT_SECTION { form_name } else { item.section.as_str() };
                sections.push(Section {
                    label: item.section.clone(),
                    title: Text::plain(title),
                    subtitle: None,
                    instructions: None,
                });
            }
        }
        if sections.is_empty() {
            sections.push(Section {
                label: DEFAULT_SECTION.to_owned(),
                title: Text::plain(form_name),
                subtitle: None,
                instructions: None,
            });
        }
        if items.is_empty() {
            self.r.warning(form_el.pos, format!("FormDef '{source_oid}' has no items."));
        }
        FormVersion {
            oid,
            label,
            description: None,
            revision_notes: None,
            source: FormSource::Odm,
            default_language: state.default_language,
            languages: state.languages.into_iter().collect(),
            sections,
            groups,
            items,
            code_lists,
        }
    }

    /// Skip logic from a reference's `CollectionExceptionConditionOID`: the negated condition.
    fn condition(&self, reference: &El) -> Option<Expression> {
        let condition = self.defs.conditions.get(reference.value("CollectionExceptionConditionOID")?)?;
        let (dialect, source) = expression(condition)?;
        Some(Expression { dialect, source: negate(&source) })
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the per-version state is passed explicitly rather than kept in the builder"
    )]
    fn item(
        &mut self,
        el: &'e El,
        item_ref: &El,
        group_oid: &Oid,
        form_oid: &str,
        default_section: &str,
        state: &mut VersionState,
        code_lists: &mut Vec<CodeList>,
    ) -> ItemDef {
        let source_oid = el.attr("OID").unwrap_or_default();
        let mut oid = self.oids.get(Space::Item, source_oid);
        if state.item_oids.contains(oid.as_str()) {
            let candidate = format!("{oid}_{}", group_oid);
            let derived = self.oids.derive(Space::Item, &format!("{source_oid}\u{0}{group_oid}"), &candidate);
            self.r.warning(
                item_ref.pos,
                format!(
                    "ItemDef '{source_oid}' is used twice in FormDef '{form_oid}'; in group '{group_oid}' it is \
                     item {derived}."
                ),
            );
            oid = derived;
        }
        state.item_oids.insert(oid.to_string());
        let mut name = el.attr("Name").filter(|n| !n.is_empty()).unwrap_or(source_oid).to_owned();
        if state.names.contains(&name) {
            let base = name.clone();
            let mut n = 2;
            while state.names.contains(&format!("{base}_{n}")) {
                n += 1;
            }
            name = format!("{base}_{n}");
            self.r.warning(
                item_ref.pos,
                format!(
                    "Two items of FormDef '{form_oid}' are named '{base}'; ItemDef '{source_oid}' is named '{name}' \
                     (names are unique in a form)."
                ),
            );
        }
        state.names.insert(name.clone());

        let present = el
            .oc_child("ItemDetails")
            .and_then(|d| d.oc_children("ItemPresentInForm").find(|p| p.attr("FormOID") == Some(form_oid)));
        let response = present.and_then(|p| p.oc_child("ItemResponse"));
        let (mut data_type, _) = el.attr("DataType").and_then(data_type).unwrap_or((DataType::Text, None));

        // Choices: a single-choice code list, or OpenClinica's multiple-choice list.
        let defs = self.defs;
        let single = el
            .child("CodeListRef")
            .and_then(|r| r.value("CodeListOID"))
            .and_then(|c| defs.code_lists.get(c).copied())
            .filter(|c| has_choices(c));
        let multi = el
            .oc_child("MultiSelectListRef")
            .and_then(|r| r.value("MultiSelectListID"))
            .and_then(|id| defs.multi_select_lists.get(id).copied());
        let code_list = match (multi, single) {
            (Some(msl), _) => Some(self.multi_select_list(msl, state, code_lists)),
            (None, Some(list)) => Some(self.code_list(list, state, code_lists)),
            (None, None) => None,
        };

        let calculation = item_ref
            .value("MethodOID")
            .and_then(|m| defs.methods.get(m))
            .and_then(|m| expression(m))
            .map(|(dialect, source)| Expression { dialect, source });

        let widget = match response.and_then(|r| r.attr("ResponseType")) {
            Some(t) => match t.to_ascii_lowercase().as_str() {
                "textarea" => Widget::Textarea,
                "radio" => Widget::Radio,
                "single-select" => Widget::SingleSelect,
                "checkbox" => Widget::Checkbox,
                "multi-select" => Widget::MultiSelect,
                "file" => {
                    data_type = DataType::File;
                    Widget::File
                }
                "calculation" | "instant-calculation" => Widget::Calculation,
                "group-calculation" => Widget::GroupCalculation,
                "text" => input_widget(data_type),
                other => {
                    self.r.warning(
                        response.map_or(el.pos, |r| r.pos),
                        format!("ItemDef '{source_oid}' has response type '{other}', which Casebook does not know; it is a text field."),
                    );
                    input_widget(data_type)
                }
            },
            None if multi.is_some() => Widget::Checkbox,
            None if single.is_some() => Widget::Radio,
            None if calculation.is_some() => Widget::Calculation,
            None => input_widget(data_type),
        };

        let unit = el
            .child("MeasurementUnitRef")
            .and_then(|u| u.value("MeasurementUnitOID"))
            .and_then(|u| defs.units.get(u))
            .and_then(|u| Self::first_text(u.child("Symbol")).or_else(|| u.value("Name").map(str::to_owned)));

        let question = el.child("Question");
        let label = self.per_version_text(present.and_then(|p| p.oc_text("LeftItemText")), question, state);
        let description = Self::first_text(el.child("Description")).or_else(|| el.value("Comment").map(str::to_owned));
        let checks = el.children("RangeCheck").filter_map(|c| self.check(c, state)).collect();
        let scd = present.and_then(|p| p.oc_child("SimpleConditionalDisplay")).and_then(|s| {
            Some(ConditionalDisplay {
                control_item: s.oc_text("ControlItemName")?.to_owned(),
                option_value: s.oc_text("OptionValue").unwrap_or_default().to_owned(),
                message: s.oc_text("Message").unwrap_or_default().to_owned(),
            })
        });
        let oc_text = |name: &str| present.and_then(|p| p.oc_text(name)).map(str::to_owned);
        ItemDef {
            oid,
            name,
            group_oid: group_oid.clone(),
            section: oc_text("SectionLabel").unwrap_or_else(|| default_section.to_owned()),
            data_type,
            widget,
            length: el.attr("Length").and_then(positive),
            decimals: el.attr("SignificantDigits").and_then(|s| s.parse().ok()).filter(|_| data_type == DataType::Real),
            units: unit,
            code_list,
            label,
            hint: Text::default(),
            right_text: oc_text("RightItemText"),
            question_number: question
                .and_then(|q| q.oc_attr("QuestionNumber"))
                .filter(|q| !q.is_empty())
                .map(str::to_owned),
            header: oc_text("ItemHeader"),
            subheader: oc_text("ItemSubHeader"),
            brief_description: None,
            description,
            phi: present.is_some_and(|p| oc_flag(p.attr("PHI"))),
            required: if item_ref.attr("Mandatory") == Some("Yes") { Required::Yes } else { Required::No },
            required_message: None,
            default_value: present.and_then(|p| p.value("DefaultValue")).map(str::to_owned),
            readonly: false,
            hidden: present.is_some_and(|p| p.attr("ShowItem") == Some("No")),
            checks,
            calculation,
            relevant: self.condition(item_ref),
            conditional_display: scd,
            choice_filter: None,
            appearance: response.and_then(|r| r.value("ResponseLayout")).map(str::to_ascii_lowercase),
            external: None,
            extra: BTreeMap::new(),
        }
    }

    fn check(&self, el: &El, state: &mut VersionState) -> Option<Check> {
        let rule = match (el.attr("Comparator").and_then(Comparator::parse), el.child("FormalExpression")) {
            (_, Some(f)) if f.attr("Context").is_some_and(|c| c.eq_ignore_ascii_case("regexp")) => {
                CheckRule::Regexp { pattern: f.text().to_owned() }
            }
            (Some(comparator), _) if el.child("CheckValue").is_some() => CheckRule::Range {
                comparator,
                values: el.children("CheckValue").map(|v| v.text().to_owned()).collect(),
            },
            (_, Some(f)) => CheckRule::Constraint {
                expression: Expression {
                    dialect: dialect(f.attr("Context").unwrap_or_default()).0,
                    source: f.text().to_owned(),
                },
            },
            _ => return None,
        };
        Some(Check {
            rule,
            message: self.text(el.child("ErrorMessage"), state),
            hard: el.attr("SoftHard") == Some("Hard"),
        })
    }

    fn code_list(&mut self, el: &El, state: &mut VersionState, lists: &mut Vec<CodeList>) -> Oid {
        let source = el.attr("OID").unwrap_or_default();
        let oid = self.oids.get(Space::CodeList, source);
        if lists.iter().any(|l| l.oid == oid) {
            return oid;
        }
        let mut choices: Vec<&El> = el.children("CodeListItem").chain(el.children("EnumeratedItem")).collect();
        if choices.iter().all(|c| c.attr("OrderNumber").and_then(positive).is_some()) {
            choices.sort_by_key(|c| c.attr("OrderNumber").and_then(positive));
        }
        let items = choices
            .into_iter()
            .filter_map(|c| {
                let value = c.attr("CodedValue")?.to_owned();
                let mut label = self.text(c.child("Decode"), state);
                if label.is_empty() {
                    label = Text::plain(value.clone());
                }
                Some(CodeListItem { value, label, extra: BTreeMap::new() })
            })
            .collect();
        lists.push(CodeList {
            oid: oid.clone(),
            name: el.attr("Name").unwrap_or(source).to_owned(),
            data_type: code_list_type(el.attr("DataType").unwrap_or_default()),
            items,
        });
        oid
    }

    /// An OpenClinica `MultiSelectList` (`MSL_n`) as the code list `CL_n`: the `CodeList` of
    /// that OID when the file has it, else one built from the list's own choices.
    fn multi_select_list(&mut self, el: &El, state: &mut VersionState, lists: &mut Vec<CodeList>) -> Oid {
        let id = el.attr("ID").unwrap_or_default();
        let candidate = id.strip_prefix("MSL_").map_or_else(|| id.to_owned(), |rest| format!("CL_{rest}"));
        if let Some(list) = self.defs.code_lists.get(candidate.as_str()).copied().filter(|c| has_choices(c)) {
            return self.code_list(list, state, lists);
        }
        let oid = self.oids.derive(Space::CodeList, &format!("MSL\u{0}{id}"), &candidate);
        if lists.iter().any(|l| l.oid == oid) {
            return oid;
        }
        let items = el
            .oc_children("MultiSelectListItem")
            .filter_map(|c| {
                let value = c.attr("CodedOptionValue")?.to_owned();
                let mut label = self.text(c.child("Decode"), state);
                if label.is_empty() {
                    label = Text::plain(value.clone());
                }
                Some(CodeListItem { value, label, extra: BTreeMap::new() })
            })
            .collect();
        let actual = el.attr("ActualDataType").unwrap_or_default();
        lists.push(CodeList {
            oid: oid.clone(),
            name: el.attr("Name").unwrap_or(id).to_owned(),
            data_type: code_list_type(actual),
            items,
        });
        oid
    }

    // ----- events -------------------------------------------------------------------------------

    fn events(&mut self, forms: &[FormDef]) -> Vec<EventDef> {
        let defs = self.defs;
        let mut order: Vec<&El> = Vec::new();
        if let Some(protocol) = defs.protocol {
            for r in ordered(protocol.children("StudyEventRef")) {
                if let Some(e) = r.value("StudyEventOID").and_then(|o| defs.event(o))
                    && !order.iter().any(|x| std::ptr::eq(*x, e))
                {
                    order.push(e);
                }
            }
        }
        for e in &defs.events {
            if !order.iter().any(|x| std::ptr::eq(*x, *e)) {
                order.push(e);
            }
        }
        order.into_iter().filter_map(|e| self.event(e, forms)).collect()
    }

    fn event(&mut self, el: &'e El, forms: &[FormDef]) -> Option<EventDef> {
        let source_oid = el.value("OID")?;
        let details = el.oc_child("EventDefinitionDetails");
        let mut event_forms: Vec<(EventForm, Vec<Oid>)> = Vec::new();
        for form_ref in ordered(el.children("FormRef")) {
            let Some(form_source) = form_ref.value("FormOID") else { continue };
            let Some(&(f, v)) = self.placements.get(form_source) else { continue };
            let (form, version) = (&forms[f], &forms[f].versions[v]);
            let i = match event_forms.iter().position(|(ef, _)| ef.form_oid == form.oid) {
                Some(i) => i,
                None => {
                    let mut event_form = EventForm::new(form.oid.clone());
                    event_form.required = form_ref.attr("Mandatory") == Some("Yes");
                    event_forms.push((event_form, Vec::new()));
                    event_forms.len() - 1
                }
            };
            let (event_form, offered) = &mut event_forms[i];
            offered.push(version.oid.clone());
            let Some(settings) = self.defs.form(form_source).and_then(|f| f.oc_child("FormDetails")).and_then(|d| {
                d.oc_children("PresentInEventDefinition").find(|p| p.attr("StudyEventOID") == Some(source_oid))
            }) else {
                continue;
            };
            if oc_flag(settings.attr("IsDefaultVersion")) {
                event_form.default_version = Some(version.oid.clone());
            }
            if offered.len() > 1 {
                continue;
            }
            event_form.double_data_entry = oc_flag(settings.attr("DoubleDataEntry"));
            event_form.electronic_signature = oc_flag(settings.attr("PasswordRequired"));
            event_form.hidden_from_sites = oc_flag(settings.attr("HideCRF"));
            if let Some(sdv) = settings.value("SourceDataVerification") {
                match SdvRequirement::parse(sdv) {
                    Some(s) => event_form.sdv = s,
                    None => self.r.warning(
                        settings.pos,
                        format!(
                            "SourceDataVerification '{sdv}' is not an OpenClinica SDV code; 'not required' is used."
                        ),
                    ),
                }
            }
            for code in
                settings.attr("NullValues").unwrap_or_default().split(',').map(str::trim).filter(|c| !c.is_empty())
            {
                let code = code.to_ascii_uppercase();
                if NULL_FLAVOURS.iter().any(|(c, _)| *c == code) {
                    if !event_form.null_flavours.contains(&code) {
                        event_form.null_flavours.push(code);
                    }
                } else {
                    self.r.warning(
                        settings.pos,
                        format!("Null value '{code}' is not an OpenClinica null flavour; it is ignored."),
                    );
                }
            }
        }
        let forms_out = event_forms
            .into_iter()
            .map(|(mut event_form, offered)| {
                let all = forms.iter().find(|f| f.oid == event_form.form_oid).map_or(0, |f| f.versions.len());
                if offered.len() < all {
                    event_form.allowed_versions = offered.clone();
                }
                // One version offered: it is the default without saying so.
                if offered.len() == 1 {
                    event_form.default_version = None;
                }
                event_form
            })
            .collect();
        let description = details
            .and_then(|d| d.oc_text("Description"))
            .map(str::to_owned)
            .or_else(|| Self::first_text(el.child("Description")));
        let category = el.value("Category").or_else(|| details.and_then(|d| d.oc_text("Category"))).map(str::to_owned);
        Some(EventDef {
            oid: self.oids.get(Space::Event, source_oid),
            name: el.attr("Name").filter(|n| !n.is_empty()).unwrap_or(source_oid).to_owned(),
            description,
            category,
            event_type: el.attr("Type").and_then(EventType::parse).unwrap_or(EventType::Scheduled),
            repeating: el.attr("Repeating") == Some("Yes"),
            forms: forms_out,
        })
    }
}

/// Whether an item is in a form version: OpenClinica lists the versions that have it.
fn in_form(item: &El, form_oid: &str) -> bool {
    let present: Vec<&str> = item
        .oc_children("ItemDetails")
        .flat_map(|d| d.oc_children("ItemPresentInForm"))
        .filter_map(|p| p.attr("FormOID"))
        .collect();
    if !present.is_empty() {
        return present.contains(&form_oid);
    }
    match item.oc_attr("FormOIDs") {
        Some(list) if !list.is_empty() => list.split(',').any(|f| f.trim() == form_oid),
        _ => true,
    }
}

fn has_choices(list: &El) -> bool {
    list.child("CodeListItem").is_some() || list.child("EnumeratedItem").is_some()
}

/// The expression of a `ConditionDef`/`MethodDef`: the first one in a dialect Casebook
/// evaluates, else the first.
fn expression(def: &El) -> Option<(Dialect, String)> {
    let all: Vec<&El> = def.children("FormalExpression").filter(|f| !f.text().is_empty()).collect();
    let chosen = all
        .iter()
        .find(|f| dialect(f.attr("Context").unwrap_or_default()).0 == Dialect::XPath)
        .or_else(|| all.iter().find(|f| dialect(f.attr("Context").unwrap_or_default()).1))
        .or_else(|| all.first())?;
    Some((dialect(chosen.attr("Context").unwrap_or_default()).0, chosen.text().to_owned()))
}

/// The widget of a free-entry item.
fn input_widget(data_type: DataType) -> Widget {
    match data_type {
        DataType::Integer | DataType::Real => Widget::Number,
        DataType::Date | DataType::PartialDate => Widget::Date,
        DataType::DateTime => Widget::DateTime,
        DataType::Time => Widget::Time,
        DataType::File => Widget::File,
        DataType::Text | DataType::Boolean => Widget::Text,
    }
}

/// OpenClinica's `FormDef/@Name` "Form name - version": the form name and the version label.
/// Without the separator, the label is what the version OID adds to the form OID.
fn split_version_name(name: &str, version_oid: &str, form_oid: &str) -> (String, String) {
    for separator in [" - ", " – "] {
        if let Some((form, label)) = name.rsplit_once(separator)
            && !form.trim().is_empty()
            && !label.trim().is_empty()
        {
            return (form.trim().to_owned(), label.trim().to_owned());
        }
    }
    let label = version_oid.strip_prefix(form_oid).map(|l| l.trim_start_matches('_')).filter(|l| !l.is_empty());
    (name.trim().to_owned(), label.unwrap_or(version_oid).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negation_unwraps_one_not_call() {
        assert_eq!(negate("not(${a} = 1)"), "${a} = 1");
        assert_eq!(negate("not(a) and not(b)"), "not(not(a) and not(b))");
        assert_eq!(negate("SCREENFAIL == True"), "not(SCREENFAIL == True)");
    }

    #[test]
    fn positions_are_lines_and_character_columns() {
        let lines = Lines::new("ab\nçd<x".as_bytes());
        assert_eq!(lines.at(0), Location::Xml { line: 1, column: 1 });
        assert_eq!(lines.at(3), Location::Xml { line: 2, column: 1 });
        assert_eq!(lines.at(6), Location::Xml { line: 2, column: 3 });
    }

    #[test]
    fn version_names_split_into_form_and_label() {
        assert_eq!(split_version_name("Vitals - v1.0", "F_VITALS_V10", "F_VITALS"), ("Vitals".into(), "v1.0".into()));
        assert_eq!(split_version_name("Vitals", "F_VITALS_V2", "F_VITALS"), ("Vitals".into(), "V2".into()));
    }
}
