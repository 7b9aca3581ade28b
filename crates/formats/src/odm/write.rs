//! CDISC ODM metadata out: a [`StudyDesign`] as ODM 1.3.2 (plain, or with OpenClinica 3's
//! extensions) or as ODM 2.0, for other EDCs, metadata repositories and define tools.
//!
//! The mapping follows OpenClinica 3 (reference `openclinica-data-model.md` §11.2) so that files
//! round-trip with OpenClinica and LibreClinica:
//! - one `FormDef` per form **version** (OID = version OID, Name = "form - version"); an event
//!   refers to every version of each of its forms (or the allowed ones);
//! - one `ItemGroupDef` per item group and one `ItemDef` per item, shared by the versions of
//!   their form: the group lists the items of every version (first appearance order), and an
//!   item's texts and logic come from the latest version that has it;
//! - skip logic becomes a `ConditionDef` referenced by `CollectionExceptionConditionOID`. ODM's
//!   condition says when the item is *not* collected, so it is the negation of `relevant`;
//! - a calculation becomes a `MethodDef` (`Type="Computation"`) referenced by `MethodOID`;
//! - `func:` range checks become `RangeCheck`/`CheckValue`; constraints and patterns become a
//!   `RangeCheck` with a `FormalExpression` (true = valid), in their own dialect (`Context`);
//! - checkbox and multi-select items are `text` (comma-joined codes) without a `CodeListRef`:
//!   their codes are not single values. The OpenClinica flavour refers them to an
//!   `OpenClinica:MultiSelectList` instead, as OpenClinica does.
//!
//! In ODM 2.0 a form is an `ItemGroupDef Type="Form"` that refers to the item groups
//! (`Type="Section"`); events are reached through one `StudyEventGroupDef` from the `Protocol`.
//!
//! Architecture invariant: markup is written only through quick-xml events, which escape
//! attribute values and text; nothing here formats XML by hand. The plain 1.3.2 and the 2.0
//! flavours never declare or use the OpenClinica namespace.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::io::{self, Write};

use casebook_domain::design::{
    CheckRule, CodeList, DataType, Dialect, EventType, Expression, FormDef, FormVersion, ItemDef, ItemGroup, Required,
    StudyDesign, Text, Widget,
};
use casebook_domain::oid;
use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use time::OffsetDateTime;
use time::macros::format_description;

/// The ODM 1.3.x namespace (ODM 1.3.2 keeps 1.3's namespace).
pub const ODM_1_3_NAMESPACE: &str = "http://www.cdisc.org/ns/odm/v1.3";
/// The ODM 2.0 namespace.
pub const ODM_2_0_NAMESPACE: &str = "http://www.cdisc.org/ns/odm/v2.0";
/// OpenClinica's ODM extension namespace, bound to the prefix `OpenClinica`.
pub const OPENCLINICA_NAMESPACE: &str = "http://www.openclinica.org/ns/odm_ext_v130/v3.1";

/// Which ODM a file is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OdmFlavour {
    /// Plain ODM 1.3.2, valid against the CDISC schema.
    Odm132,
    /// ODM 1.3.2 with OpenClinica 3's metadata extensions (item details per form version,
    /// group repeat settings, event settings, multi-select lists).
    Odm132OpenClinica,
    /// ODM 2.0.
    Odm20,
}

/// The study-level facts the design does not hold.
#[derive(Debug, Clone, Copy)]
pub struct StudyInfo<'a> {
    pub oid: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    pub protocol_name: &'a str,
    /// `MetaDataVersion/@OID`, e.g. `v1`.
    pub metadata_version_oid: &'a str,
    pub metadata_version_name: &'a str,
    /// The study's OpenClinica rules, written in `MetaDataVersion` by the OpenClinica flavour
    /// (`OpenClinicaRules:Rules`, as OpenClinica 3 exports them).
    pub rules: Option<&'a casebook_domain::rules::RuleSet>,
}

/// Writes the study design as ODM metadata (`FileType="Snapshot"`, `Granularity="Metadata"`).
///
/// `created` is the file's `CreationDateTime` (written in UTC); `file_oid` its `FileOID`.
///
/// # Errors
/// When writing to `out` fails.
pub fn write_metadata<W: Write>(
    out: W,
    study: &StudyInfo<'_>,
    design: &StudyDesign,
    flavour: OdmFlavour,
    created: OffsetDateTime,
    file_oid: &str,
) -> io::Result<()> {
    let created = created
        .to_offset(time::UtcOffset::UTC)
        .format(format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z"))
        .map_err(io::Error::other)?;
    write(out, study, design, flavour, Some((&created, file_oid)))
}

/// Writes only the `Study` element of [`write_metadata`]'s document (no declaration, no root),
/// for a document that also holds `AdminData` or `ClinicalData`. The caller's `ODM` root
/// declares the namespaces: ODM's, and for the OpenClinica flavour `xmlns:OpenClinica`
/// ([`OPENCLINICA_NAMESPACE`]) and, when the study has rules, `xmlns:OpenClinicaRules`
/// ([`crate::rules::RULES_NAMESPACE`]).
///
/// # Errors
/// When writing to `out` fails.
pub fn write_metadata_study<W: Write>(
    out: W,
    study: &StudyInfo<'_>,
    design: &StudyDesign,
    flavour: OdmFlavour,
) -> io::Result<()> {
    write(out, study, design, flavour, None)
}

/// The whole document when `root` (creation time, file OID) is given, else only `Study`.
fn write<W: Write>(
    out: W,
    study: &StudyInfo<'_>,
    design: &StudyDesign,
    flavour: OdmFlavour,
    root: Option<(&str, &str)>,
) -> io::Result<()> {
    let mut w = MetadataWriter {
        x: Xml { w: Writer::new_with_indent(out, b' ', 2), odm20: flavour == OdmFlavour::Odm20 },
        study,
        design,
        cat: Catalogue::new(design),
        flavour,
        whole: root.is_some(),
    };
    if let Some((created, file_oid)) = root {
        w.x.w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
        let (namespace, version) = match flavour {
            OdmFlavour::Odm132 | OdmFlavour::Odm132OpenClinica => (ODM_1_3_NAMESPACE, "1.3.2"),
            OdmFlavour::Odm20 => (ODM_2_0_NAMESPACE, "2.0"),
        };
        let attrs = w.root_attrs(namespace, version, created, file_oid);
        w.x.open("ODM", attrs)?;
    }
    match flavour {
        OdmFlavour::Odm132 | OdmFlavour::Odm132OpenClinica => w.odm13()?,
        OdmFlavour::Odm20 => w.odm20()?,
    }
    if w.whole {
        w.x.close("ODM")?;
    }
    w.x.w.get_mut().flush()
}

// ---------------------------------------------------------------------------------------------
// What the design holds, indexed once: groups and items across versions, code lists, units,
// conditions and methods.

/// An item group across the versions of its form.
struct GroupEntry<'d> {
    oid: &'d str,
    /// The group's definition in the latest version that has items in it.
    def: Option<&'d ItemGroup>,
    /// Item OIDs in order of first appearance.
    items: Vec<&'d str>,
    /// The versions with items in the group, with the group's definition there.
    versions: Vec<(&'d FormVersion, Option<&'d ItemGroup>)>,
}

impl GroupEntry<'_> {
    fn name(&self) -> &str {
        self.def.map_or(self.oid, |g| non_empty(&g.name, self.oid))
    }

    fn repeating(&self) -> bool {
        self.def.is_some_and(ItemGroup::is_repeating)
    }
}

/// An item across the versions of its form.
struct ItemEntry<'d> {
    /// The latest version with the item, and the item there.
    version: &'d FormVersion,
    item: &'d ItemDef,
    versions: Vec<(&'d FormVersion, &'d ItemDef)>,
}

/// A `ConditionDef` (from skip logic) or a `MethodDef` (from a calculation).
struct Logic<'d> {
    oid: String,
    name: String,
    description: String,
    expression: &'d Expression,
    /// Conditions are the negation of the skip logic.
    negate: bool,
    /// The data type of a method's result.
    data_type: Option<DataType>,
}

struct Catalogue<'d> {
    /// Every form version, forms in design order.
    versions: Vec<(&'d FormDef, &'d FormVersion)>,
    groups: Vec<GroupEntry<'d>>,
    items: Vec<ItemEntry<'d>>,
    item_index: HashMap<&'d str, usize>,
    /// Code lists with at least one choice, the latest definition of each OID.
    code_lists: Vec<(&'d FormVersion, &'d CodeList)>,
    /// Code lists that single-choice items use, and those multiple-choice items use.
    single_lists: HashSet<&'d str>,
    multi_lists: HashSet<&'d str>,
    /// Measurement units: OID and name.
    units: Vec<(String, &'d str)>,
    conditions: Vec<Logic<'d>>,
    methods: Vec<Logic<'d>>,
    /// `ConditionDef` OIDs by (version OID, group OID) for skip logic on whole groups.
    group_conditions: HashMap<(&'d str, &'d str), String>,
}

impl<'d> Catalogue<'d> {
    fn new(design: &'d StudyDesign) -> Self {
        let mut versions = Vec::new();
        let mut groups: Vec<GroupEntry<'d>> = Vec::new();
        let mut group_index: HashMap<&'d str, usize> = HashMap::new();
        let mut items: Vec<ItemEntry<'d>> = Vec::new();
        let mut item_index: HashMap<&'d str, usize> = HashMap::new();
        let mut code_lists: Vec<(&'d FormVersion, &'d CodeList)> = Vec::new();
        let mut list_index: HashMap<&'d str, usize> = HashMap::new();
        let mut group_conditions = HashMap::new();
        let mut conditions = Vec::new();

        for form in &design.forms {
            for version in &form.versions {
                versions.push((form, version));
                for list in version.code_lists.iter().filter(|c| !c.items.is_empty()) {
                    match list_index.get(list.oid.as_str()) {
                        Some(&i) => code_lists[i] = (version, list),
                        None => {
                            list_index.insert(list.oid.as_str(), code_lists.len());
                            code_lists.push((version, list));
                        }
                    }
                }
                for item in &version.items {
                    let def = version.group(item.group_oid.as_str());
                    let g = *group_index.entry(item.group_oid.as_str()).or_insert_with(|| {
                        groups.push(GroupEntry {
                            oid: item.group_oid.as_str(),
                            def: None,
                            items: Vec::new(),
                            versions: Vec::new(),
                        });
                        groups.len() - 1
                    });
                    let group = &mut groups[g];
                    if def.is_some() {
                        group.def = def;
                    }
                    if group.versions.last().is_none_or(|(v, _)| v.oid != version.oid) {
                        group.versions.push((version, def));
                    }
                    if !group.items.contains(&item.oid.as_str()) {
                        group.items.push(item.oid.as_str());
                    }
                    match item_index.get(item.oid.as_str()) {
                        Some(&i) => {
                            let entry = &mut items[i];
                            entry.version = version;
                            entry.item = item;
                            entry.versions.push((version, item));
                        }
                        None => {
                            item_index.insert(item.oid.as_str(), items.len());
                            items.push(ItemEntry { version, item, versions: vec![(version, item)] });
                        }
                    }
                }
                for group in &version.groups {
                    if let Some(relevant) = &group.relevant {
                        let oid = format!("CD.{}.{}", version.oid, group.oid);
                        group_conditions.insert((version.oid.as_str(), group.oid.as_str()), oid.clone());
                        conditions.push(Logic {
                            oid,
                            name: format!(
                                "Skip logic of group {} in {}",
                                non_empty(&group.name, group.oid.as_str()),
                                version.oid
                            ),
                            description: format!(
                                "The group is not collected when its relevance condition is false: {}",
                                relevant.source
                            ),
                            expression: relevant,
                            negate: true,
                            data_type: None,
                        });
                    }
                }
            }
        }

        let mut single_lists = HashSet::new();
        let mut multi_lists = HashSet::new();
        let mut units: Vec<(String, &'d str)> = Vec::new();
        let mut methods = Vec::new();
        for entry in &items {
            let item = entry.item;
            if let Some(list) = &item.code_list {
                if item.widget.is_multi() {
                    multi_lists.insert(list.as_str());
                } else {
                    single_lists.insert(list.as_str());
                }
            }
            if let Some(unit) = item.units.as_deref().filter(|u| !u.trim().is_empty()) {
                let unit_oid = oid::measurement_unit(unit).to_string();
                if !units.iter().any(|(o, _)| *o == unit_oid) {
                    units.push((unit_oid, unit.trim()));
                }
            }
            if let Some(relevant) = &item.relevant {
                conditions.push(Logic {
                    oid: condition_oid(item),
                    name: format!("Skip logic of {}", item.name),
                    description: format!(
                        "{} is not collected when its relevance condition is false: {}",
                        item.name, relevant.source
                    ),
                    expression: relevant,
                    negate: true,
                    data_type: None,
                });
            }
            if let Some(calculation) = &item.calculation {
                methods.push(Logic {
                    oid: method_oid(item),
                    name: format!("Calculation of {}", item.name),
                    description: format!("Computes {}: {}", item.name, calculation.source),
                    expression: calculation,
                    negate: false,
                    data_type: Some(item.data_type),
                });
            }
        }

        Self {
            versions,
            groups,
            items,
            item_index,
            code_lists,
            single_lists,
            multi_lists,
            units,
            conditions,
            methods,
            group_conditions,
        }
    }

    fn item(&self, oid: &str) -> Option<&ItemEntry<'d>> {
        self.item_index.get(oid).map(|&i| &self.items[i])
    }

    fn code_list(&self, oid: &str) -> Option<&'d CodeList> {
        self.code_lists.iter().find(|(_, c)| c.oid.as_str() == oid).map(|(_, c)| *c)
    }

    /// The versions of `form` an event offers: the allowed ones, or all.
    fn event_versions(form: &'d FormDef, allowed: &[casebook_domain::oid::Oid]) -> Vec<&'d FormVersion> {
        form.versions.iter().filter(|v| allowed.is_empty() || allowed.contains(&v.oid)).collect()
    }
}

fn condition_oid(item: &ItemDef) -> String {
    format!("CD.{}", item.oid)
}

fn method_oid(item: &ItemDef) -> String {
    format!("MT.{}", item.oid)
}

/// The OID of OpenClinica's multi-select list for a code list (`CL_x` → `MSL_x`).
fn multi_select_list_id(code_list: &str) -> String {
    code_list.strip_prefix("CL_").map_or_else(|| format!("MSL_{code_list}"), |rest| format!("MSL_{rest}"))
}

/// The item groups of one version, in the order of their first item.
fn version_groups(version: &FormVersion) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for item in &version.items {
        if !out.contains(&item.group_oid.as_str()) {
            out.push(item.group_oid.as_str());
        }
    }
    out
}

fn non_empty<'a>(text: &'a str, fallback: &'a str) -> &'a str {
    if text.trim().is_empty() { fallback } else { text }
}

fn yes_no(b: bool) -> &'static str {
    if b { "Yes" } else { "No" }
}

/// Whether a value answers with several codes (stored comma-joined as text).
fn is_multi(item: &ItemDef) -> bool {
    item.widget.is_multi()
}

/// The ODM 1.3.2 `DataType` of an item.
fn data_type_13(item: &ItemDef) -> &'static str {
    if is_multi(item) { "text" } else { item.data_type.odm() }
}

/// The ODM 2.0 `DataType` of an item (2.0 code lists know `decimal`, not `float`).
fn data_type_20(item: &ItemDef) -> &'static str {
    match data_type_13(item) {
        "float" => "decimal",
        other => other,
    }
}

/// `Length` (reference §2.1): the item's own, else INT 10, REAL 25, text the longest code (or
/// all codes joined for multiple choice), else 200. Only for text and numbers.
fn item_length(item: &ItemDef, list: Option<&CodeList>) -> Option<u32> {
    let computed = match data_type_13(item) {
        "integer" => 10,
        "float" => 25,
        "text" => {
            let codes = list.map(|l| l.items.iter().map(|c| c.value.chars().count()));
            match codes {
                Some(lengths) if is_multi(item) => {
                    let lengths: Vec<usize> = lengths.collect();
                    u32::try_from(lengths.iter().sum::<usize>() + lengths.len().saturating_sub(1)).unwrap_or(4000)
                }
                Some(lengths) => u32::try_from(lengths.max().unwrap_or(0)).unwrap_or(4000),
                None => 200,
            }
        }
        _ => return None,
    };
    Some(item.length.unwrap_or(computed).max(1))
}

/// `SignificantDigits` of a REAL item: its decimals (default 6, reference §2.1).
fn significant_digits(item: &ItemDef) -> Option<u32> {
    (!is_multi(item) && item.data_type == DataType::Real).then(|| item.decimals.unwrap_or(6))
}

/// The `CLDataType` of a code list: its data type when every code is of that type, else text.
fn code_list_type(list: &CodeList, odm20: bool) -> &'static str {
    let all = |ok: fn(&str) -> bool| list.items.iter().all(|c| ok(c.value.trim()));
    match list.data_type {
        DataType::Integer if all(|v| v.parse::<i64>().is_ok()) => "integer",
        DataType::Real if all(|v| v.parse::<f64>().is_ok()) => {
            if odm20 {
                "decimal"
            } else {
                "float"
            }
        }
        _ => "text",
    }
}

/// `FormalExpression/@Context` of a dialect.
fn expression_context(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::XPath => "XPath",
        Dialect::OcFunc => "OpenClinica",
        Dialect::OcRule => "OpenClinicaRules",
    }
}

fn expression_code(logic: &Logic<'_>) -> String {
    if logic.negate { format!("not({})", logic.expression.source) } else { logic.expression.source.clone() }
}

/// An `xml:lang` tag for a language as forms name it: `Français (fr)` → `fr`, `en-GB` → `en-GB`,
/// `English` → `en`; other names get a private-use tag (`x-klingon`) so translations stay apart.
fn language_tag(language: &str) -> String {
    let language = language.trim();
    let valid = |tag: &str| {
        let mut parts = tag.split('-');
        parts.next().is_some_and(|p| (2..=3).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphabetic()))
            && parts.all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
    };
    if let Some(inner) =
        language.strip_suffix(')').and_then(|l| l.rsplit_once('(')).map(|(_, code)| code.trim()).filter(|c| valid(c))
    {
        return inner.to_owned();
    }
    if valid(language) {
        return language.to_owned();
    }
    const KNOWN: [(&str, &str); 16] = [
        ("english", "en"),
        ("french", "fr"),
        ("français", "fr"),
        ("spanish", "es"),
        ("español", "es"),
        ("german", "de"),
        ("deutsch", "de"),
        ("italian", "it"),
        ("italiano", "it"),
        ("portuguese", "pt"),
        ("português", "pt"),
        ("dutch", "nl"),
        ("nederlands", "nl"),
        ("chinese", "zh"),
        ("japanese", "ja"),
        ("arabic", "ar"),
    ];
    let lower = language.to_lowercase();
    let name = lower.split('(').next().unwrap_or_default().trim();
    if let Some((_, tag)) = KNOWN.iter().find(|(n, _)| *n == name) {
        return (*tag).to_owned();
    }
    let private: String = lower.chars().filter(char::is_ascii_alphanumeric).take(8).collect();
    if private.is_empty() { "und".to_owned() } else { format!("x-{private}") }
}

/// The non-empty texts of a [`Text`]: the default (tagged with the default language if known),
/// then each translation, one per language tag.
fn texts<'t>(text: &'t Text, default_language: Option<&str>) -> Vec<(Option<String>, &'t str)> {
    let mut out: Vec<(Option<String>, &'t str)> = Vec::new();
    if !text.text.trim().is_empty() {
        out.push((default_language.map(language_tag), text.text.as_str()));
    }
    for (language, translated) in &text.translations {
        let tag = language_tag(language);
        if !translated.trim().is_empty() && !out.iter().any(|(t, _)| t.as_deref() == Some(tag.as_str())) {
            out.push((Some(tag), translated.as_str()));
        }
    }
    out
}

fn plain<'t>(text: &'t str, default_language: Option<&str>) -> Vec<(Option<String>, &'t str)> {
    if text.trim().is_empty() { Vec::new() } else { vec![(default_language.map(language_tag), text)] }
}

// ---------------------------------------------------------------------------------------------
// Events out.

/// Attributes of one element, in order.
struct Attrs<'a>(Vec<(&'static str, Cow<'a, str>)>);

impl<'a> Attrs<'a> {
    fn new() -> Self {
        Self(Vec::new())
    }

    fn set(mut self, name: &'static str, value: impl Into<Cow<'a, str>>) -> Self {
        self.0.push((name, value.into()));
        self
    }

    fn maybe<V: Into<Cow<'a, str>>>(mut self, name: &'static str, value: Option<V>) -> Self {
        if let Some(v) = value {
            self.0.push((name, v.into()));
        }
        self
    }
}

struct Xml<W: Write> {
    w: Writer<W>,
    /// ODM 2.0 spells some elements differently (`TranslatedText/@Type`, `FormalExpression/Code`).
    odm20: bool,
}

impl<W: Write> Xml<W> {
    fn tag<'b>(name: &'b str, attrs: &'b Attrs<'_>) -> BytesStart<'b> {
        let mut tag = BytesStart::new(name);
        for (key, value) in &attrs.0 {
            tag.push_attribute((*key, value.as_ref()));
        }
        tag
    }

    fn open(&mut self, name: &str, attrs: Attrs<'_>) -> io::Result<()> {
        self.w.write_event(Event::Start(Self::tag(name, &attrs)))
    }

    fn close(&mut self, name: &str) -> io::Result<()> {
        self.w.write_event(Event::End(BytesEnd::new(name)))
    }

    fn empty(&mut self, name: &str, attrs: Attrs<'_>) -> io::Result<()> {
        self.w.write_event(Event::Empty(Self::tag(name, &attrs)))
    }

    /// An element holding only text.
    fn leaf(&mut self, name: &str, attrs: Attrs<'_>, text: &str) -> io::Result<()> {
        self.open(name, attrs)?;
        self.w.write_event(Event::Text(BytesText::new(text)))?;
        self.close(name)
    }

    /// `<name><TranslatedText xml:lang=…>…</TranslatedText>…</name>`; nothing when `texts` is empty.
    fn translated(&mut self, name: &str, attrs: Attrs<'_>, texts: &[(Option<String>, &str)]) -> io::Result<()> {
        if texts.is_empty() {
            return Ok(());
        }
        self.open(name, attrs)?;
        for (lang, text) in texts {
            let a = Attrs::new().maybe("xml:lang", lang.as_deref());
            let a = if self.odm20 { a.set("Type", "text/plain") } else { a };
            self.leaf("TranslatedText", a, text)?;
        }
        self.close(name)
    }

    /// `RangeCheck`s of an item: comparisons with values, and expressions that must hold.
    fn range_checks(&mut self, item: &ItemDef, language: Option<&str>) -> io::Result<()> {
        for check in &item.checks {
            let soft_hard = if check.hard { "Hard" } else { "Soft" };
            match &check.rule {
                CheckRule::Range { comparator, values } => {
                    if values.is_empty() {
                        continue;
                    }
                    let attrs = Attrs::new().set("Comparator", comparator.odm()).set("SoftHard", soft_hard);
                    self.open("RangeCheck", attrs)?;
                    for value in values {
                        self.leaf("CheckValue", Attrs::new(), value)?;
                    }
                }
                CheckRule::Constraint { expression } => {
                    self.open("RangeCheck", Attrs::new().set("SoftHard", soft_hard))?;
                    self.formal_expression(expression_context(expression.dialect), &expression.source)?;
                }
                CheckRule::Regexp { pattern } => {
                    self.open("RangeCheck", Attrs::new().set("SoftHard", soft_hard))?;
                    self.formal_expression("regexp", pattern)?;
                }
            }
            self.translated("ErrorMessage", Attrs::new(), &texts(&check.message, language))?;
            self.close("RangeCheck")?;
        }
        Ok(())
    }

    fn formal_expression(&mut self, context: &str, code: &str) -> io::Result<()> {
        let attrs = Attrs::new().set("Context", context);
        if self.odm20 {
            self.open("FormalExpression", attrs)?;
            self.leaf("Code", Attrs::new(), code)?;
            self.close("FormalExpression")
        } else {
            self.leaf("FormalExpression", attrs, code)
        }
    }

    /// `Decode` with every translation; the code itself when the choice has no label.
    fn decode(&mut self, label: &Text, code: &str, language: Option<&str>) -> io::Result<()> {
        let mut decoded = texts(label, language);
        if decoded.is_empty() {
            decoded.push((None, code));
        }
        self.translated("Decode", Attrs::new(), &decoded)
    }
}

struct MetadataWriter<'a, W: Write> {
    x: Xml<W>,
    study: &'a StudyInfo<'a>,
    design: &'a StudyDesign,
    cat: Catalogue<'a>,
    flavour: OdmFlavour,
    /// The whole document (declaration and `ODM` root), not only `Study`.
    whole: bool,
}

impl<W: Write> MetadataWriter<'_, W> {
    fn oc(&self) -> bool {
        self.flavour == OdmFlavour::Odm132OpenClinica
    }

    /// Whether rules are written: in the OpenClinica flavour, when there are any.
    fn writes_rules(&self) -> bool {
        self.oc() && self.study.rules.is_some_and(|r| !r.assignments.is_empty())
    }

    fn root_attrs<'s>(
        &self,
        namespace: &'static str,
        version: &'static str,
        created: &'s str,
        file_oid: &'s str,
    ) -> Attrs<'s> {
        let attrs = Attrs::new().set("xmlns", namespace);
        let attrs = if self.oc() { attrs.set("xmlns:OpenClinica", OPENCLINICA_NAMESPACE) } else { attrs };
        let attrs = if self.writes_rules() {
            attrs.set("xmlns:OpenClinicaRules", crate::rules::RULES_NAMESPACE)
        } else {
            attrs
        };
        attrs
            .set("ODMVersion", version)
            .set("FileType", "Snapshot")
            .set("Granularity", "Metadata")
            .set("FileOID", non_empty(file_oid, "Casebook"))
            .set("CreationDateTime", created)
            .set("SourceSystem", "Casebook")
            .set("SourceSystemVersion", env!("CARGO_PKG_VERSION"))
    }

    // ----- ODM 1.3.2 ---------------------------------------------------------------------------

    fn odm13(&mut self) -> io::Result<()> {
        let study = self.study;
        self.x.open("Study", Attrs::new().set("OID", study.oid))?;
        self.x.open("GlobalVariables", Attrs::new())?;
        self.x.leaf("StudyName", Attrs::new(), study.name)?;
        self.x.leaf("StudyDescription", Attrs::new(), study.description)?;
        self.x.leaf("ProtocolName", Attrs::new(), study.protocol_name)?;
        self.x.close("GlobalVariables")?;
        if !self.cat.units.is_empty() {
            self.x.open("BasicDefinitions", Attrs::new())?;
            for (unit_oid, name) in &self.cat.units {
                self.x.open("MeasurementUnit", Attrs::new().set("OID", unit_oid.as_str()).set("Name", *name))?;
                self.x.translated("Symbol", Attrs::new(), &[(None, name)])?;
                self.x.close("MeasurementUnit")?;
            }
            self.x.close("BasicDefinitions")?;
        }
        self.x.open(
            "MetaDataVersion",
            Attrs::new()
                .set("OID", non_empty(study.metadata_version_oid, "v1"))
                .set("Name", non_empty(study.metadata_version_name, non_empty(study.metadata_version_oid, "v1"))),
        )?;
        self.protocol_13()?;
        self.study_event_defs_13()?;
        self.form_defs_13()?;
        self.item_group_defs_13()?;
        self.item_defs_13()?;
        self.code_lists(false)?;
        self.logic_13()?;
        if self.oc() {
            self.multi_select_lists()?;
        }
        if self.writes_rules() {
            let study = self.study;
            if let Some(rules) = study.rules {
                crate::rules::write_rules_embedded(&mut self.x.w, rules)?;
            }
        }
        self.x.close("MetaDataVersion")?;
        self.x.close("Study")
    }

    fn protocol_13(&mut self) -> io::Result<()> {
        self.x.open("Protocol", Attrs::new())?;
        for (n, event) in self.design.events.iter().enumerate() {
            self.x.empty(
                "StudyEventRef",
                Attrs::new()
                    .set("StudyEventOID", event.oid.as_str())
                    .set("OrderNumber", (n + 1).to_string())
                    .set("Mandatory", yes_no(event.event_type == EventType::Scheduled)),
            )?;
        }
        self.x.close("Protocol")
    }

    fn study_event_defs_13(&mut self) -> io::Result<()> {
        let design = self.design;
        for event in &design.events {
            self.x.open(
                "StudyEventDef",
                Attrs::new()
                    .set("OID", event.oid.as_str())
                    .set("Name", non_empty(&event.name, event.oid.as_str()))
                    .set("Repeating", yes_no(event.repeating))
                    .set("Type", event.event_type.odm())
                    .maybe("Category", event.category.as_deref().filter(|c| !c.is_empty())),
            )?;
            self.x.translated(
                "Description",
                Attrs::new(),
                &plain(event.description.as_deref().unwrap_or_default(), None),
            )?;
            let mut order = 0;
            for event_form in &event.forms {
                let Some(form) = design.form(event_form.form_oid.as_str()) else { continue };
                for version in Catalogue::event_versions(form, &event_form.allowed_versions) {
                    order += 1;
                    self.x.empty(
                        "FormRef",
                        Attrs::new()
                            .set("FormOID", version.oid.as_str())
                            .set("OrderNumber", order.to_string())
                            .set("Mandatory", yes_no(event_form.required)),
                    )?;
                }
            }
            if self.oc() {
                let details = [
                    ("OpenClinica:Description", event.description.as_deref()),
                    ("OpenClinica:Category", event.category.as_deref()),
                ];
                let details: Vec<_> =
                    details.into_iter().filter_map(|(n, t)| t.filter(|t| !t.is_empty()).map(|t| (n, t))).collect();
                let attrs = Attrs::new().set("StudyEventOID", event.oid.as_str());
                if details.is_empty() {
                    self.x.empty("OpenClinica:EventDefinitionDetails", attrs)?;
                } else {
                    self.x.open("OpenClinica:EventDefinitionDetails", attrs)?;
                    for (name, text) in details {
                        self.x.leaf(name, Attrs::new(), text)?;
                    }
                    self.x.close("OpenClinica:EventDefinitionDetails")?;
                }
            }
            self.x.close("StudyEventDef")?;
        }
        Ok(())
    }

    fn form_defs_13(&mut self) -> io::Result<()> {
        let versions = self.cat.versions.clone();
        for (form, version) in versions {
            let name = format!("{} - {}", non_empty(&form.name, form.oid.as_str()), version.label);
            self.x.open(
                "FormDef",
                Attrs::new().set("OID", version.oid.as_str()).set("Name", name).set("Repeating", "No"),
            )?;
            let description = version.description.as_deref().or(form.description.as_deref()).unwrap_or_default();
            self.x.translated("Description", Attrs::new(), &plain(description, version.default_language.as_deref()))?;
            for (n, group) in version_groups(version).into_iter().enumerate() {
                let condition = self.cat.group_conditions.get(&(version.oid.as_str(), group)).cloned();
                self.x.empty(
                    "ItemGroupRef",
                    Attrs::new()
                        .set("ItemGroupOID", group)
                        .set("OrderNumber", (n + 1).to_string())
                        .set("Mandatory", "No")
                        .maybe("CollectionExceptionConditionOID", condition),
                )?;
            }
            if self.oc() {
                self.form_details(form, version)?;
            }
            self.x.close("FormDef")?;
        }
        Ok(())
    }

    fn form_details(&mut self, form: &FormDef, version: &FormVersion) -> io::Result<()> {
        self.x.open(
            "OpenClinica:FormDetails",
            Attrs::new().set("FormOID", version.oid.as_str()).set("ParentFormOID", form.oid.as_str()),
        )?;
        if let Some(d) = version.description.as_deref().filter(|d| !d.is_empty()) {
            self.x.leaf("OpenClinica:VersionDescription", Attrs::new(), d)?;
        }
        if let Some(notes) = version.revision_notes.as_deref().filter(|d| !d.is_empty()) {
            self.x.leaf("OpenClinica:RevisionNotes", Attrs::new(), notes)?;
        }
        self.x.open("OpenClinica:SectionDetails", Attrs::new())?;
        for (n, section) in version.sections.iter().enumerate() {
            self.x.empty(
                "OpenClinica:Section",
                Attrs::new()
                    .set("SectionLabel", section.label.as_str())
                    .set("SectionTitle", section.title.text.as_str())
                    .maybe("SectionSubtitle", section.subtitle.as_deref())
                    .maybe("SectionInstructions", section.instructions.as_deref())
                    .set("SectionPageNumber", (n + 1).to_string()),
            )?;
        }
        self.x.close("OpenClinica:SectionDetails")?;
        for event in &self.design.events {
            for event_form in event.forms.iter().filter(|f| f.form_oid == form.oid) {
                let offered = Catalogue::event_versions(form, &event_form.allowed_versions);
                if !offered.iter().any(|v| v.oid == version.oid) {
                    continue;
                }
                let is_default =
                    event_form.default_version.as_ref().map_or(offered.len() == 1, |default| *default == version.oid);
                self.x.empty(
                    "OpenClinica:PresentInEventDefinition",
                    Attrs::new()
                        .set("StudyEventOID", event.oid.as_str())
                        .set("IsDefaultVersion", yes_no(is_default))
                        .set("NullValues", event_form.null_flavours.join(","))
                        .set("PasswordRequired", yes_no(event_form.electronic_signature))
                        .set("DoubleDataEntry", yes_no(event_form.double_data_entry))
                        .set("HideCRF", yes_no(event_form.hidden_from_sites))
                        .set("SourceDataVerification", event_form.sdv.odm()),
                )?;
            }
        }
        self.x.close("OpenClinica:FormDetails")
    }

    fn item_group_defs_13(&mut self) -> io::Result<()> {
        for g in 0..self.cat.groups.len() {
            let group = &self.cat.groups[g];
            let (oid, name, repeating) = (group.oid, group.name().to_owned(), group.repeating());
            let header = group.def.map(|d| &d.header);
            let language = group.versions.last().and_then(|(v, _)| v.default_language.clone());
            self.x.open(
                "ItemGroupDef",
                Attrs::new().set("OID", oid).set("Name", name).set("Repeating", yes_no(repeating)),
            )?;
            if let Some(header) = header {
                self.x.translated("Description", Attrs::new(), &texts(header, language.as_deref()))?;
            }
            self.item_refs(g)?;
            if self.oc() {
                self.item_group_details(g)?;
            }
            self.x.close("ItemGroupDef")?;
        }
        Ok(())
    }

    /// The `ItemRef`s of a group: mandatory when required, with the item's calculation
    /// (`MethodOID`) and skip logic (`CollectionExceptionConditionOID`).
    fn item_refs(&mut self, g: usize) -> io::Result<()> {
        for (n, item_oid) in self.cat.groups[g].items.iter().enumerate() {
            let Some(entry) = self.cat.item(item_oid) else { continue };
            let item = entry.item;
            self.x.empty(
                "ItemRef",
                Attrs::new()
                    .set("ItemOID", item.oid.as_str())
                    .maybe("MethodOID", item.calculation.as_ref().map(|_| method_oid(item)))
                    .set("OrderNumber", (n + 1).to_string())
                    .set("Mandatory", yes_no(matches!(item.required, Required::Yes)))
                    .maybe("CollectionExceptionConditionOID", item.relevant.as_ref().map(|_| condition_oid(item))),
            )?;
        }
        Ok(())
    }

    fn item_group_details(&mut self, g: usize) -> io::Result<()> {
        let group = &self.cat.groups[g];
        let oid = group.oid;
        let present: Vec<(&FormVersion, Option<&ItemGroup>)> = group.versions.clone();
        self.x.open("OpenClinica:ItemGroupDetails", Attrs::new().set("ItemGroupOID", oid))?;
        for (version, def) in present {
            self.x.open(
                "OpenClinica:PresentInForm",
                Attrs::new()
                    .set("FormOID", version.oid.as_str())
                    .set("ShowGroup", yes_no(!def.is_some_and(|d| d.hidden))),
            )?;
            if let Some(header) = def.map(|d| d.header.text.as_str()).filter(|h| !h.is_empty()) {
                self.x.leaf("OpenClinica:ItemGroupHeader", Attrs::new(), header)?;
            }
            if let Some(repeat) = def.and_then(|d| d.repeat.as_ref()) {
                self.x.empty(
                    "OpenClinica:ItemGroupRepeat",
                    Attrs::new()
                        .set("RepeatNumber", repeat.initial_rows.to_string())
                        .maybe("RepeatMax", repeat.max_rows.map(|m| m.to_string())),
                )?;
            }
            self.x.close("OpenClinica:PresentInForm")?;
        }
        self.x.close("OpenClinica:ItemGroupDetails")
    }

    /// The code list an item refers to with `CodeListRef`: single choice, with choices.
    fn code_list_ref<'i>(&self, item: &'i ItemDef) -> Option<&'i str> {
        let list = item.code_list.as_ref()?;
        (!is_multi(item) && self.cat.code_list(list.as_str()).is_some()).then_some(list.as_str())
    }

    fn item_defs_13(&mut self) -> io::Result<()> {
        for i in 0..self.cat.items.len() {
            let entry = &self.cat.items[i];
            let (item, version) = (entry.item, entry.version);
            let list = item.code_list.as_ref().and_then(|l| self.cat.code_list(l.as_str()));
            let form_oids =
                self.oc().then(|| entry.versions.iter().map(|(v, _)| v.oid.as_str()).collect::<Vec<_>>().join(","));
            let description = item.description.as_deref().filter(|d| !d.trim().is_empty());
            let language = version.default_language.as_deref();
            self.x.open(
                "ItemDef",
                Attrs::new()
                    .set("OID", item.oid.as_str())
                    .set("Name", item.name.as_str())
                    .set("DataType", data_type_13(item))
                    .maybe("Length", item_length(item, list).map(|l| l.to_string()))
                    .maybe("SignificantDigits", significant_digits(item).map(|d| d.to_string()))
                    .maybe("Comment", description.filter(|_| self.oc()))
                    .maybe("OpenClinica:FormOIDs", form_oids),
            )?;
            self.x.translated("Description", Attrs::new(), &plain(description.unwrap_or_default(), language))?;
            let question_number = item.question_number.as_deref().filter(|q| self.oc() && !q.is_empty());
            self.x.translated(
                "Question",
                Attrs::new().maybe("OpenClinica:QuestionNumber", question_number),
                &texts(&item.label, language),
            )?;
            if let Some(unit) = item.units.as_deref().filter(|u| !u.trim().is_empty()) {
                self.x.empty(
                    "MeasurementUnitRef",
                    Attrs::new().set("MeasurementUnitOID", oid::measurement_unit(unit).to_string()),
                )?;
            }
            self.x.range_checks(item, language)?;
            if let Some(list) = self.code_list_ref(item) {
                self.x.empty("CodeListRef", Attrs::new().set("CodeListOID", list))?;
            }
            if self.oc() {
                if let Some(list) =
                    item.code_list.as_ref().filter(|l| is_multi(item) && self.cat.code_list(l.as_str()).is_some())
                {
                    self.x.empty(
                        "OpenClinica:MultiSelectListRef",
                        Attrs::new().set("MultiSelectListID", multi_select_list_id(list.as_str())),
                    )?;
                }
                self.item_details(i)?;
            }
            self.x.close("ItemDef")?;
        }
        Ok(())
    }

    fn item_details(&mut self, i: usize) -> io::Result<()> {
        let entry = &self.cat.items[i];
        let item_oid = entry.item.oid.as_str();
        let versions = entry.versions.clone();
        self.x.open("OpenClinica:ItemDetails", Attrs::new().set("ItemOID", item_oid))?;
        for (version, item) in versions {
            self.x.open(
                "OpenClinica:ItemPresentInForm",
                Attrs::new()
                    .set("FormOID", version.oid.as_str())
                    .maybe("DefaultValue", item.default_value.as_deref())
                    .set("PHI", yes_no(item.phi))
                    .set("ShowItem", yes_no(!item.hidden)),
            )?;
            if !item.label.text.is_empty() {
                self.x.leaf("OpenClinica:LeftItemText", Attrs::new(), &item.label.text)?;
            }
            let optional = [
                ("OpenClinica:RightItemText", item.right_text.as_deref()),
                ("OpenClinica:ItemHeader", item.header.as_deref()),
                ("OpenClinica:ItemSubHeader", item.subheader.as_deref()),
                ("OpenClinica:SectionLabel", Some(item.section.as_str())),
            ];
            for (name, text) in optional {
                if let Some(text) = text.filter(|t| !t.is_empty()) {
                    self.x.leaf(name, Attrs::new(), text)?;
                }
            }
            let layout = item.appearance.as_deref().and_then(|a| match a.trim().to_ascii_lowercase().as_str() {
                "horizontal" => Some("Horizontal"),
                "vertical" => Some("Vertical"),
                _ => None,
            });
            self.x.empty(
                "OpenClinica:ItemResponse",
                Attrs::new().set("ResponseType", response_type(item.widget)).maybe("ResponseLayout", layout),
            )?;
            if let Some(scd) = &item.conditional_display {
                self.x.open("OpenClinica:SimpleConditionalDisplay", Attrs::new())?;
                self.x.leaf("OpenClinica:ControlItemName", Attrs::new(), &scd.control_item)?;
                self.x.leaf("OpenClinica:OptionValue", Attrs::new(), &scd.option_value)?;
                self.x.leaf("OpenClinica:Message", Attrs::new(), &scd.message)?;
                self.x.close("OpenClinica:SimpleConditionalDisplay")?;
            }
            self.x.close("OpenClinica:ItemPresentInForm")?;
        }
        self.x.close("OpenClinica:ItemDetails")
    }

    /// `CodeList`s. The OpenClinica flavour writes lists used only for multiple choice as
    /// `OpenClinica:MultiSelectList` instead.
    fn code_lists(&mut self, odm20: bool) -> io::Result<()> {
        let lists = self.cat.code_lists.clone();
        for (version, list) in lists {
            let oid = list.oid.as_str();
            let used_single = self.cat.single_lists.contains(oid);
            let used_multi = self.cat.multi_lists.contains(oid);
            if !(used_single || used_multi && !self.oc()) {
                continue;
            }
            self.x.open(
                "CodeList",
                Attrs::new()
                    .set("OID", oid)
                    .set("Name", non_empty(&list.name, oid))
                    .set("DataType", code_list_type(list, odm20)),
            )?;
            for (n, choice) in list.items.iter().enumerate() {
                self.x.open(
                    "CodeListItem",
                    Attrs::new().set("CodedValue", choice.value.as_str()).set("OrderNumber", (n + 1).to_string()),
                )?;
                self.x.decode(&choice.label, &choice.value, version.default_language.as_deref())?;
                self.x.close("CodeListItem")?;
            }
            self.x.close("CodeList")?;
        }
        Ok(())
    }

    fn multi_select_lists(&mut self) -> io::Result<()> {
        let lists = self.cat.code_lists.clone();
        let lists: Vec<_> = lists.into_iter().filter(|(_, l)| self.cat.multi_lists.contains(l.oid.as_str())).collect();
        for (version, list) in lists {
            let actual = match code_list_type(list, false) {
                "text" => "string",
                other => other,
            };
            self.x.open(
                "OpenClinica:MultiSelectList",
                Attrs::new()
                    .set("ID", multi_select_list_id(list.oid.as_str()))
                    .set("Name", non_empty(&list.name, list.oid.as_str()))
                    .set("DataType", "string")
                    .set("ActualDataType", actual),
            )?;
            for choice in &list.items {
                self.x.open(
                    "OpenClinica:MultiSelectListItem",
                    Attrs::new().set("CodedOptionValue", choice.value.as_str()),
                )?;
                self.x.decode(&choice.label, &choice.value, version.default_language.as_deref())?;
                self.x.close("OpenClinica:MultiSelectListItem")?;
            }
            self.x.close("OpenClinica:MultiSelectList")?;
        }
        Ok(())
    }

    /// `ConditionDef`s then `MethodDef`s (ODM 1.3.2: Description, FormalExpression).
    fn logic_13(&mut self) -> io::Result<()> {
        for (element, conditions) in [("ConditionDef", true), ("MethodDef", false)] {
            let list = if conditions { &self.cat.conditions } else { &self.cat.methods };
            let rows: Vec<(String, String, String, &str, String)> = list
                .iter()
                .map(|l| {
                    (
                        l.oid.clone(),
                        l.name.clone(),
                        l.description.clone(),
                        expression_context(l.expression.dialect),
                        expression_code(l),
                    )
                })
                .collect();
            for (oid, name, description, context, code) in rows {
                let attrs = Attrs::new().set("OID", oid).set("Name", name);
                let attrs = if conditions { attrs } else { attrs.set("Type", "Computation") };
                self.x.open(element, attrs)?;
                self.x.translated("Description", Attrs::new(), &[(None, description.as_str())])?;
                self.x.formal_expression(context, &code)?;
                self.x.close(element)?;
            }
        }
        Ok(())
    }

    // ----- ODM 2.0 -----------------------------------------------------------------------------

    fn odm20(&mut self) -> io::Result<()> {
        let study = self.study;
        let mdv_oid = non_empty(study.metadata_version_oid, "v1");
        self.x.open(
            "Study",
            Attrs::new()
                .set("OID", study.oid)
                .set("StudyName", non_empty(study.name, study.oid))
                .set("ProtocolName", non_empty(study.protocol_name, non_empty(study.name, study.oid))),
        )?;
        self.x.translated("Description", Attrs::new(), &plain(study.description, None))?;
        self.x.open(
            "MetaDataVersion",
            Attrs::new().set("OID", mdv_oid).set("Name", non_empty(study.metadata_version_name, mdv_oid)),
        )?;
        // The schedule: Protocol → one StudyEventGroupDef → the events.
        let schedule_oid = format!("SEG.{}", study.oid);
        self.x.open("Protocol", Attrs::new())?;
        self.x.empty(
            "StudyEventGroupRef",
            Attrs::new().set("StudyEventGroupOID", schedule_oid.as_str()).set("Mandatory", "Yes"),
        )?;
        self.x.close("Protocol")?;
        if !self.design.events.is_empty() {
            self.x.open(
                "StudyEventGroupDef",
                Attrs::new()
                    .set("OID", schedule_oid.as_str())
                    .set("Name", format!("{} schedule", non_empty(study.name, study.oid))),
            )?;
            for (n, event) in self.design.events.iter().enumerate() {
                self.x.empty(
                    "StudyEventRef",
                    Attrs::new()
                        .set("StudyEventOID", event.oid.as_str())
                        .set("OrderNumber", (n + 1).to_string())
                        .set("Mandatory", yes_no(event.event_type == EventType::Scheduled)),
                )?;
            }
            self.x.close("StudyEventGroupDef")?;
        }
        self.study_event_defs_20()?;
        self.form_item_groups_20()?;
        self.item_groups_20()?;
        self.item_defs_20()?;
        self.code_lists(true)?;
        self.logic_20()?;
        self.x.close("MetaDataVersion")?;
        self.x.close("Study")
    }

    fn study_event_defs_20(&mut self) -> io::Result<()> {
        let design = self.design;
        for event in &design.events {
            self.x.open(
                "StudyEventDef",
                Attrs::new()
                    .set("OID", event.oid.as_str())
                    .set("Name", non_empty(&event.name, event.oid.as_str()))
                    .set("Repeating", yes_no(event.repeating))
                    .set("Type", event.event_type.odm())
                    .maybe("Category", event.category.as_deref().filter(|c| !c.is_empty())),
            )?;
            self.x.translated(
                "Description",
                Attrs::new(),
                &plain(event.description.as_deref().unwrap_or_default(), None),
            )?;
            let mut order = 0;
            for event_form in &event.forms {
                let Some(form) = design.form(event_form.form_oid.as_str()) else { continue };
                for version in Catalogue::event_versions(form, &event_form.allowed_versions) {
                    order += 1;
                    self.x.empty(
                        "ItemGroupRef",
                        Attrs::new()
                            .set("ItemGroupOID", version.oid.as_str())
                            .set("OrderNumber", order.to_string())
                            .set("Mandatory", yes_no(event_form.required)),
                    )?;
                }
            }
            self.x.close("StudyEventDef")?;
        }
        Ok(())
    }

    /// One `ItemGroupDef Type="Form"` per form version, referring to its item groups.
    fn form_item_groups_20(&mut self) -> io::Result<()> {
        let versions = self.cat.versions.clone();
        for (form, version) in versions {
            let name = format!("{} - {}", non_empty(&form.name, form.oid.as_str()), version.label);
            self.x.open(
                "ItemGroupDef",
                Attrs::new()
                    .set("OID", version.oid.as_str())
                    .set("Name", name)
                    .set("Repeating", "No")
                    .set("Type", "Form"),
            )?;
            let description = version.description.as_deref().or(form.description.as_deref()).unwrap_or_default();
            self.x.translated("Description", Attrs::new(), &plain(description, version.default_language.as_deref()))?;
            for (n, group) in version_groups(version).into_iter().enumerate() {
                let condition = self.cat.group_conditions.get(&(version.oid.as_str(), group)).cloned();
                self.x.empty(
                    "ItemGroupRef",
                    Attrs::new()
                        .set("ItemGroupOID", group)
                        .set("OrderNumber", (n + 1).to_string())
                        .set("Mandatory", "No")
                        .maybe("CollectionExceptionConditionOID", condition),
                )?;
            }
            self.x.close("ItemGroupDef")?;
        }
        Ok(())
    }

    /// The item groups (`Type="Section"`; repeating ones `Repeating="Simple"`).
    fn item_groups_20(&mut self) -> io::Result<()> {
        for g in 0..self.cat.groups.len() {
            let group = &self.cat.groups[g];
            let (oid, name) = (group.oid, group.name().to_owned());
            let repeat = group.def.and_then(|d| d.repeat.as_ref());
            let limit = repeat.and_then(|r| r.max_rows).filter(|m| *m > 0).map(|m| m.to_string());
            let repeating = if repeat.is_some() { "Simple" } else { "No" };
            let header = group.def.map(|d| &d.header);
            let language = group.versions.last().and_then(|(v, _)| v.default_language.clone());
            self.x.open(
                "ItemGroupDef",
                Attrs::new()
                    .set("OID", oid)
                    .set("Name", name)
                    .set("Repeating", repeating)
                    .maybe("RepeatingLimit", limit)
                    .set("Type", "Section"),
            )?;
            if let Some(header) = header {
                self.x.translated("Description", Attrs::new(), &texts(header, language.as_deref()))?;
            }
            self.item_refs(g)?;
            self.x.close("ItemGroupDef")?;
        }
        Ok(())
    }

    fn item_defs_20(&mut self) -> io::Result<()> {
        for i in 0..self.cat.items.len() {
            let entry = &self.cat.items[i];
            let (item, version) = (entry.item, entry.version);
            let list = item.code_list.as_ref().and_then(|l| self.cat.code_list(l.as_str()));
            let length = item_length(item, list);
            let display_format = significant_digits(item).zip(length).map(|(d, l)| format!("{l}.{d}"));
            let language = version.default_language.as_deref();
            self.x.open(
                "ItemDef",
                Attrs::new()
                    .set("OID", item.oid.as_str())
                    .set("Name", item.name.as_str())
                    .set("DataType", data_type_20(item))
                    .maybe("Length", length.map(|l| l.to_string()))
                    .maybe("DisplayFormat", display_format),
            )?;
            self.x.translated(
                "Description",
                Attrs::new(),
                &plain(item.description.as_deref().unwrap_or_default(), language),
            )?;
            self.x.translated("Question", Attrs::new(), &texts(&item.label, language))?;
            self.x.translated(
                "Prompt",
                Attrs::new(),
                &plain(item.brief_description.as_deref().unwrap_or_default(), language),
            )?;
            self.x.translated("CRFCompletionInstructions", Attrs::new(), &texts(&item.hint, language))?;
            self.x.range_checks(item, language)?;
            if let Some(list) = self.code_list_ref(item) {
                self.x.empty("CodeListRef", Attrs::new().set("CodeListOID", list))?;
            }
            if let Some(unit) = item.units.as_deref().filter(|u| !u.trim().is_empty()) {
                // ODM 2.0 has no MeasurementUnit; the unit travels as an alias.
                self.x.empty("Alias", Attrs::new().set("Context", "MeasurementUnit").set("Name", unit.trim()))?;
            }
            self.x.close("ItemDef")?;
        }
        Ok(())
    }

    /// `ConditionDef`s then `MethodDef`s (ODM 2.0: Description, MethodSignature, FormalExpression/Code).
    fn logic_20(&mut self) -> io::Result<()> {
        for (element, conditions) in [("ConditionDef", true), ("MethodDef", false)] {
            let list = if conditions { &self.cat.conditions } else { &self.cat.methods };
            let rows: Vec<(String, String, String, &str, String, &str)> = list
                .iter()
                .map(|l| {
                    let returns = match l.data_type {
                        Some(DataType::Real) => "decimal",
                        Some(t) => t.odm(),
                        None => "boolean",
                    };
                    (
                        l.oid.clone(),
                        l.name.clone(),
                        l.description.clone(),
                        expression_context(l.expression.dialect),
                        expression_code(l),
                        returns,
                    )
                })
                .collect();
            for (oid, name, description, context, code, returns) in rows {
                let attrs = Attrs::new().set("OID", oid).set("Name", name);
                let attrs = if conditions { attrs } else { attrs.set("Type", "Computation") };
                self.x.open(element, attrs)?;
                self.x.translated("Description", Attrs::new(), &[(None, description.as_str())])?;
                self.x.open("MethodSignature", Attrs::new())?;
                self.x.empty("ReturnValue", Attrs::new().set("Name", "Result").set("DataType", returns))?;
                self.x.close("MethodSignature")?;
                self.x.formal_expression(context, &code)?;
                self.x.close(element)?;
            }
        }
        Ok(())
    }
}

/// OpenClinica's response type (`ItemResponse/@ResponseType`) of a widget.
fn response_type(widget: Widget) -> &'static str {
    match widget {
        Widget::Textarea => "textarea",
        Widget::Radio => "radio",
        Widget::SingleSelect => "single-select",
        Widget::Checkbox => "checkbox",
        Widget::MultiSelect => "multi-select",
        Widget::File => "file",
        Widget::Calculation => "calculation",
        Widget::GroupCalculation => "group-calculation",
        Widget::Text
        | Widget::Note
        | Widget::Acknowledge
        | Widget::Date
        | Widget::DateTime
        | Widget::Time
        | Widget::Number => "text",
    }
}

#[cfg(test)]
mod tests {
    use super::language_tag;

    #[test]
    fn language_tags_come_from_form_language_names() {
        assert_eq!(language_tag("Français (fr)"), "fr");
        assert_eq!(language_tag("English (en)"), "en");
        assert_eq!(language_tag("en-GB"), "en-GB");
        assert_eq!(language_tag("fr"), "fr");
        assert_eq!(language_tag("English"), "en");
        assert_eq!(language_tag("Klingon"), "x-klingon");
        assert_eq!(language_tag("日本語"), "und");
    }
}
