//! A rules file's XML as a small tree of elements with their byte positions: a `RuleImport`
//! document whole, or the rules sections of an ODM file (everything else in it is streamed
//! past).
//!
//! Security policy as in [`crate::odm::read`]: a `<!DOCTYPE>` refuses the file (so there is no
//! entity declaration, no external entity and no expansion); only XML's five predefined
//! entities and character references are resolved.

use quick_xml::NsReader;
use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;

/// The namespace of OpenClinica rules embedded in ODM.
pub const RULES_NAMESPACE: &str = "http://www.openclinica.org/ns/rules/v3.1";

const ODM_NAMESPACES: [&str; 2] = ["http://www.cdisc.org/ns/odm/v1.3", "http://www.cdisc.org/ns/odm/v1.2"];
const OPENCLINICA_NAMESPACES: [&str; 3] = [
    "http://www.openclinica.org/ns/odm_ext_v130/v3.1",
    "http://www.openclinica.org/ns/odm_ext_v121/v3.1",
    "http://www.openclinica.org/ns/openclinica_odm/v1.3",
];
const XSI_NAMESPACE: &str = "http://www.w3.org/2001/XMLSchema-instance";
const XML_NAMESPACE: &str = "http://www.w3.org/XML/1998/namespace";

/// The namespace of an element or attribute, as far as rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ns {
    /// No namespace (a plain `RuleImport` file; unprefixed attributes).
    None,
    Rules,
    OpenClinica,
    Odm,
    /// `xsi:` (schema locations), ignored.
    Xsi,
    /// `xml:` (`xml:lang`, `xml:space`), ignored.
    Xml,
    Other,
}

fn namespace(result: &ResolveResult<'_>, element: bool) -> Ns {
    match result {
        ResolveResult::Bound(ns) => match ns.as_ref() {
            RULES_NAMESPACE => Ns::Rules,
            n if ODM_NAMESPACES.contains(&n) => Ns::Odm,
            n if OPENCLINICA_NAMESPACES.contains(&n) => Ns::OpenClinica,
            XSI_NAMESPACE => Ns::Xsi,
            XML_NAMESPACE => Ns::Xml,
            _ => Ns::Other,
        },
        ResolveResult::Unbound => Ns::None,
        ResolveResult::Unknown(prefix) if !element && prefix == "xml" => Ns::Xml,
        ResolveResult::Unknown(_) => Ns::Other,
    }
}

#[derive(Debug)]
pub(super) struct Attr {
    pub ns: Ns,
    /// The local name.
    pub name: String,
    /// The name as written (`xsi:schemaLocation`), for messages.
    pub qname: String,
    pub value: String,
}

/// An element with everything in it.
#[derive(Debug)]
pub(super) struct El {
    pub ns: Ns,
    /// The local name.
    pub name: String,
    pub attrs: Vec<Attr>,
    pub children: Vec<El>,
    /// Every piece of text directly in the element, untrimmed (whitespace between children
    /// included).
    pub text: String,
    /// Byte offset of the `<`.
    pub pos: usize,
    /// Byte offset of the first text in the element.
    pub text_pos: Option<usize>,
    /// Whether [`El::text`] is exactly the bytes at `text_pos` (one piece of text without
    /// references, CDATA or line ends to normalise), so offsets in it are offsets in the file.
    pub text_verbatim: bool,
}

impl El {
    /// An attribute without a prefix.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|a| a.ns == Ns::None && a.name == name).map(|a| a.value.as_str())
    }

    /// The children with a local name.
    pub fn children_named<'s, 'n>(&'s self, name: &'n str) -> impl Iterator<Item = &'s El> + use<'s, 'n> {
        self.children.iter().filter(move |c| c.name == name)
    }

    fn add_text(&mut self, pos: usize, decoded: &str, verbatim: bool) {
        if self.text_pos.is_none() {
            self.text_pos = Some(pos);
            self.text_verbatim = verbatim;
        } else {
            self.text_verbatim = false;
        }
        self.text.push_str(decoded);
    }
}

/// What a file holds for the rules reader.
#[derive(Debug)]
pub(super) struct Document {
    /// The root's local name and position.
    pub root: (String, usize),
    /// `RuleImport` roots, or the rules sections of an ODM file, whole.
    pub sections: Vec<El>,
}

/// Whether an element of an ODM file holds rules: `Rules` or `RuleImport` in the rules or the
/// OpenClinica namespace.
fn is_rules_section(ns: Ns, name: &str) -> bool {
    matches!(ns, Ns::Rules | Ns::OpenClinica) && matches!(name, "Rules" | "RuleImport")
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
            qname: key.to_owned(),
            value: value.into_owned(),
        });
    }
    Ok(El {
        ns,
        name: e.local_name().as_ref().to_owned(),
        attrs,
        children: Vec::new(),
        text: String::new(),
        pos,
        text_pos: None,
        text_verbatim: false,
    })
}

/// Where the reader is in the document.
#[derive(Default)]
struct State {
    /// The open elements: name, and whether the element is being built (on `stack`).
    open: Vec<(String, bool)>,
    /// Elements being built (inside a rules section), outermost first.
    stack: Vec<El>,
    /// The root is an ODM file (rules sections are looked for in it).
    odm: bool,
    root: Option<(String, usize)>,
    sections: Vec<El>,
}

impl State {
    /// Adds a finished element to its parent, or as a section.
    fn finish(&mut self, el: El) {
        match self.stack.last_mut() {
            Some(parent) => parent.children.push(el),
            None => self.sections.push(el),
        }
    }

    /// An element starts: it is kept when it is in a rules section or starts one.
    fn start(&mut self, el: El, empty: bool) -> Result<(), ParseError> {
        let name = el.name.clone();
        let keep = if self.open.is_empty() {
            self.root(&el)?
        } else {
            !self.stack.is_empty() || (self.odm && is_rules_section(el.ns, &el.name))
        };
        match (keep, empty) {
            (true, true) => self.finish(el),
            (true, false) => self.stack.push(el),
            (false, _) => {}
        }
        if !empty {
            self.open.push((name, keep));
        }
        Ok(())
    }

    /// The root element: whether it is a rules section itself (not an ODM file).
    fn root(&mut self, el: &El) -> Result<bool, ParseError> {
        if self.root.is_some() {
            return Err((el.pos, "The XML is not well formed: there is more than one root element.".into()));
        }
        self.root = Some((el.name.clone(), el.pos));
        match el.name.as_str() {
            "RuleImport" | "Rules" if matches!(el.ns, Ns::None | Ns::Rules | Ns::OpenClinica) => Ok(true),
            "ODM" => {
                self.odm = true;
                Ok(false)
            }
            other => Err((
                el.pos,
                format!(
                    "The file is not an OpenClinica rules file: its root element is <{other}>, not <RuleImport> \
                     (or an ODM file with rules)."
                ),
            )),
        }
    }

    /// An element ends.
    fn end(&mut self) {
        if let Some((_, true)) = self.open.pop()
            && let Some(done) = self.stack.pop()
        {
            self.finish(done);
        }
    }
}

/// Reads the XML. Text is kept untrimmed; the reader trims per element.
pub(super) fn parse(xml: &[u8]) -> Result<Document, ParseError> {
    let mut reader = NsReader::from_reader(xml);
    reader.config_mut().check_end_names = true;
    let mut st = State::default();
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
                     are refused (they can read local files or expand without limit); rules files need none."
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
                st.start(element(&reader, ns, e, pos)?, empty)?;
            }
            Event::End(_) => st.end(),
            Event::Text(t) => {
                let decoded = t.xml_content(XmlVersion::Implicit1_0);
                if let Some(el) = st.stack.last_mut() {
                    el.add_text(pos, &decoded, decoded.len() == t.len());
                } else if st.open.is_empty() && !decoded.trim().is_empty() {
                    return Err((pos, "The XML is not well formed: there is text outside the root element.".into()));
                }
            }
            Event::CData(t) => {
                if let Some(el) = st.stack.last_mut() {
                    el.add_text(pos, &t.xml_content(XmlVersion::Implicit1_0), false);
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
                if let Some(el) = st.stack.last_mut() {
                    el.add_text(pos, &resolved, false);
                }
            }
            Event::Eof => break,
            Event::Comment(_) | Event::PI(_) => {}
        }
    }
    if let Some((name, _)) = st.open.last() {
        return Err((xml.len(), format!("The XML is not well formed: the file ends before <{name}> is closed.")));
    }
    let root = st.root.ok_or_else(|| (0, "The file holds no XML element.".to_owned()))?;
    Ok(Document { root, sections: st.sections })
}
