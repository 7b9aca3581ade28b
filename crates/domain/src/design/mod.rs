//! The study definition: what a trial collects, when, and how it is checked.
//!
//! Aligned with CDISC ODM 1.3.2 (`StudyEventDef`, `FormDef`, `ItemGroupDef`, `ItemDef`,
//! `CodeList`) and OpenClinica's meta model (event definition CRF settings, form versions,
//! sections, response sets). A [`StudyDesign`] is one whole, serialisable document: the draft a
//! data manager edits, and — once published — an immutable, hashed version.
//!
//! Forms own their items across versions as OpenClinica does: an item's OID is fixed by its form
//! and name, so the same name in a later version of the same form is the same item (same OID).
//! Each [`FormVersion`] carries the complete per-version layout (sections, groups, items with
//! their texts, checks and logic), so rendering or validating data never needs another version.
//!
//! Expressions (skip logic, edit checks, calculations) are kept as source text with their
//! [`Dialect`]; the importers type-check them with [`crate::expr`] at upload and the data-entry
//! layer compiles them once per published version.

pub mod diff;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::oid::Oid;

/// A whole study design: event definitions and the forms they use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StudyDesign {
    /// Event definitions in display order.
    pub events: Vec<EventDef>,
    /// Forms (CRFs) with all their versions.
    pub forms: Vec<FormDef>,
}

impl StudyDesign {
    #[must_use]
    pub fn form(&self, oid: &str) -> Option<&FormDef> {
        self.forms.iter().find(|f| f.oid.as_str() == oid)
    }

    #[must_use]
    pub fn form_by_name(&self, name: &str) -> Option<&FormDef> {
        self.forms.iter().find(|f| f.name.eq_ignore_ascii_case(name))
    }

    #[must_use]
    pub fn event(&self, oid: &str) -> Option<&EventDef> {
        self.events.iter().find(|e| e.oid.as_str() == oid)
    }

    /// Finds a form version by its OID, with its form.
    #[must_use]
    pub fn form_version(&self, oid: &str) -> Option<(&FormDef, &FormVersion)> {
        self.forms.iter().find_map(|f| f.versions.iter().find(|v| v.oid.as_str() == oid).map(|v| (f, v)))
    }

    /// Every OID used in the design, for collision checks when generating new ones.
    #[must_use]
    pub fn oids(&self) -> std::collections::HashSet<String> {
        let mut all = std::collections::HashSet::new();
        for e in &self.events {
            all.insert(e.oid.to_string());
        }
        for f in &self.forms {
            all.insert(f.oid.to_string());
            for v in &f.versions {
                all.insert(v.oid.to_string());
                all.extend(v.groups.iter().map(|g| g.oid.to_string()));
                all.extend(v.items.iter().map(|i| i.oid.to_string()));
                all.extend(v.code_lists.iter().map(|c| c.oid.to_string()));
            }
        }
        all
    }

    /// The canonical JSON of the design, hashed to identify a published version.
    #[must_use]
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// SHA-256 of [`Self::canonical_json`], hex.
    #[must_use]
    pub fn hash(&self) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(self.canonical_json().as_bytes()))
    }
}

/// How an event is scheduled (OpenClinica `study_event_definition.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// A planned visit ("visit-based" in OpenClinica 4).
    Scheduled,
    /// An unplanned visit.
    Unscheduled,
    /// Forms that belong to no visit (adverse events, concomitant medication).
    Common,
}

impl EventType {
    /// The ODM `StudyEventDef/@Type` value.
    #[must_use]
    pub fn odm(self) -> &'static str {
        match self {
            Self::Scheduled => "Scheduled",
            Self::Unscheduled => "Unscheduled",
            Self::Common => "Common",
        }
    }

    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "scheduled" | "visit-based" | "visit based" | "visit" => Some(Self::Scheduled),
            "unscheduled" => Some(Self::Unscheduled),
            "common" => Some(Self::Common),
            _ => None,
        }
    }
}

/// An event definition (ODM `StudyEventDef`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventDef {
    pub oid: Oid,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub repeating: bool,
    /// Forms used in the event, in display order.
    pub forms: Vec<EventForm>,
}

/// Source data verification requirement of a form in an event (OpenClinica SDV codes 1–4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SdvRequirement {
    /// 100% verification required (code 1).
    Full,
    /// Partial verification required (code 2).
    Partial,
    /// Not required (code 3).
    #[default]
    NotRequired,
    /// Not applicable (code 4).
    NotApplicable,
}

impl SdvRequirement {
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            Self::Full => 1,
            Self::Partial => 2,
            Self::NotRequired => 3,
            Self::NotApplicable => 4,
        }
    }

    /// The OpenClinica ODM extension text (`OpenClinica:SourceDataVerification`).
    #[must_use]
    pub fn odm(self) -> &'static str {
        match self {
            Self::Full => "AllREQUIRED",
            Self::Partial => "PARTIALREQUIRED",
            Self::NotRequired => "NOTREQUIRED",
            Self::NotApplicable => "NOTAPPLICABLE",
        }
    }

    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_uppercase().replace([' ', '_', '%'], "").as_str() {
            "1" | "FULL" | "ALLREQUIRED" | "100REQUIRED" => Some(Self::Full),
            "2" | "PARTIAL" | "PARTIALREQUIRED" => Some(Self::Partial),
            "3" | "NOTREQUIRED" | "" => Some(Self::NotRequired),
            "4" | "NOTAPPLICABLE" => Some(Self::NotApplicable),
            _ => None,
        }
    }
}

/// The null flavours a site may enter instead of a value (OpenClinica `null_value_type`).
pub const NULL_FLAVOURS: [(&str, &str); 12] = [
    ("NI", "no information"),
    ("NA", "not applicable"),
    ("UNK", "unknown"),
    ("NASK", "not asked"),
    ("ASKU", "asked but unknown"),
    ("NAV", "not available"),
    ("OTH", "other"),
    ("PINF", "positive infinity"),
    ("NINF", "negative infinity"),
    ("MSK", "masked"),
    ("NP", "not present"),
    ("NPE", "not performed"),
];

/// A form's settings within one event (OpenClinica `event_definition_crf`, ODM `FormRef`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventForm {
    pub form_oid: Oid,
    /// The form must be complete before the event can be (ODM `Mandatory`).
    pub required: bool,
    pub double_data_entry: bool,
    pub sdv: SdvRequirement,
    /// Item-level SDV: with a `partial` requirement, the items (OIDs) a monitor must verify one by
    /// one; the form counts as verified once each of their values is. Empty: the whole form.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sdv_items: Vec<Oid>,
    /// What a save does with the value of an item that skip logic hides.
    #[serde(default, skip_serializing_if = "HiddenValues::is_default")]
    pub hidden_values: HiddenValues,
    /// Marking the form complete asks for the user's password.
    pub electronic_signature: bool,
    /// Site-level users do not see the form.
    pub hidden_from_sites: bool,
    /// The version pre-selected when data entry starts (form version OID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_version: Option<Oid>,
    /// Versions sites may choose; empty means every version of the form.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_versions: Vec<Oid>,
    /// Null flavour codes allowed instead of a value (from [`NULL_FLAVOURS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub null_flavours: Vec<String>,
    /// Site-level settings (OpenClinica's site rows of the event definition CRF), by site OID.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub site_settings: BTreeMap<String, SiteFormSettings>,
}

/// What happens to the value of an item that skip logic hides (its `relevant` is false, or its
/// SCD does not show it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HiddenValues {
    /// The save clears the value and audits the clearing (ODK and OpenClinica 4 behaviour).
    #[default]
    Clear,
    /// The save is refused until the value is cleared in it: nothing disappears silently
    /// (REDCap asks before erasing a value its branching logic hides).
    Refuse,
}

impl HiddenValues {
    #[must_use]
    pub fn is_default(&self) -> bool {
        *self == Self::Clear
    }

    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "clear" => Some(Self::Clear),
            "refuse" => Some(Self::Refuse),
            _ => None,
        }
    }
}

/// What a site changes about a form in an event: which versions its staff may use, the default
/// one, and whether its staff see the form at all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteFormSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_version: Option<Oid>,
    /// Versions the site may use; empty means the event's own choice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_versions: Vec<Oid>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
}

impl EventForm {
    /// The versions a site may use (the site's restriction, else the event's; empty = all).
    #[must_use]
    pub fn allowed_versions_at(&self, site_oid: Option<&str>) -> &[Oid] {
        match site_oid.and_then(|s| self.site_settings.get(s)).filter(|s| !s.allowed_versions.is_empty()) {
            Some(s) => &s.allowed_versions,
            None => &self.allowed_versions,
        }
    }

    /// The version pre-selected at a site.
    #[must_use]
    pub fn default_version_at(&self, site_oid: Option<&str>) -> Option<&Oid> {
        site_oid
            .and_then(|s| self.site_settings.get(s))
            .and_then(|s| s.default_version.as_ref())
            .or(self.default_version.as_ref())
    }

    /// Whether the form is hidden from a site's staff.
    #[must_use]
    pub fn hidden_at(&self, site_oid: Option<&str>) -> bool {
        self.hidden_from_sites || site_oid.and_then(|s| self.site_settings.get(s)).is_some_and(|s| s.hidden)
    }
}

impl EventForm {
    #[must_use]
    pub fn new(form_oid: Oid) -> Self {
        Self {
            form_oid,
            required: false,
            double_data_entry: false,
            sdv: SdvRequirement::default(),
            sdv_items: Vec::new(),
            hidden_values: HiddenValues::Clear,
            electronic_signature: false,
            hidden_from_sites: false,
            default_version: None,
            allowed_versions: Vec::new(),
            null_flavours: Vec::new(),
            site_settings: BTreeMap::new(),
        }
    }
}

/// A form (OpenClinica CRF, ODM `FormDef` across versions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FormDef {
    pub oid: Oid,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Versions in upload order.
    pub versions: Vec<FormVersion>,
}

impl FormDef {
    #[must_use]
    pub fn version(&self, label: &str) -> Option<&FormVersion> {
        self.versions.iter().find(|v| v.label == label)
    }

    /// The OID an item of this form carries, by name, from any existing version.
    #[must_use]
    pub fn item_oid(&self, name: &str) -> Option<&Oid> {
        self.versions.iter().rev().find_map(|v| v.items.iter().find(|i| i.name == name).map(|i| &i.oid))
    }

    /// The OID a group of this form carries, by name, from any existing version.
    #[must_use]
    pub fn group_oid(&self, name: &str) -> Option<&Oid> {
        self.versions.iter().rev().find_map(|v| v.groups.iter().find(|g| g.name == name).map(|g| &g.oid))
    }
}

/// Where a form version came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FormSource {
    XlsForm,
    OcCrfTemplate,
    Odm,
}

/// One version of a form: its complete layout and logic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FormVersion {
    pub oid: Oid,
    /// The version label ("v1.0").
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_notes: Option<String>,
    pub source: FormSource,
    /// The language of the default texts, and the others available ("en", "fr").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_language: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub languages: Vec<String>,
    /// Sections (pages/tabs) in order; at least one.
    pub sections: Vec<Section>,
    /// Item groups in order.
    pub groups: Vec<ItemGroup>,
    /// Items in display order.
    pub items: Vec<ItemDef>,
    pub code_lists: Vec<CodeList>,
}

impl FormVersion {
    #[must_use]
    pub fn item(&self, name: &str) -> Option<&ItemDef> {
        self.items.iter().find(|i| i.name == name)
    }

    #[must_use]
    pub fn item_by_oid(&self, oid: &str) -> Option<&ItemDef> {
        self.items.iter().find(|i| i.oid.as_str() == oid)
    }

    #[must_use]
    pub fn group(&self, oid: &str) -> Option<&ItemGroup> {
        self.groups.iter().find(|g| g.oid.as_str() == oid)
    }

    #[must_use]
    pub fn code_list(&self, oid: &str) -> Option<&CodeList> {
        self.code_lists.iter().find(|c| c.oid.as_str() == oid)
    }
}

/// A text in the default language with optional translations keyed by language.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Text {
    pub text: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub translations: BTreeMap<String, String>,
}

impl Text {
    #[must_use]
    pub fn plain(text: impl Into<String>) -> Self {
        Self { text: text.into(), translations: BTreeMap::new() }
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.text.is_empty() && self.translations.is_empty()
    }

    /// The text in `language`, falling back to the default.
    #[must_use]
    pub fn in_language(&self, language: Option<&str>) -> &str {
        language.and_then(|l| self.translations.get(l)).map_or(self.text.as_str(), String::as_str)
    }
}

/// A section: one page or tab of data entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Section {
    /// Unique within the version, no spaces.
    pub label: String,
    pub title: Text,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtitle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
}

/// How a group repeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repeat {
    /// Rows shown when the form opens.
    pub initial_rows: u32,
    /// Most rows allowed in the user interface (`None` = unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<u32>,
    /// An XLSForm `repeat_count` expression fixing the number of rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<Expression>,
}

/// An item group (ODM `ItemGroupDef`): a logical grouping or a repeating table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemGroup {
    pub oid: Oid,
    pub name: String,
    #[serde(default, skip_serializing_if = "Text::is_empty")]
    pub header: Text,
    /// `Some` for a repeating group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<Repeat>,
    /// Hidden until shown by a rule.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
    /// Skip logic for the whole group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relevant: Option<Expression>,
}

impl ItemGroup {
    #[must_use]
    pub fn is_repeating(&self) -> bool {
        self.repeat.is_some()
    }
}

/// An item's data type (OpenClinica `item_data_type`, plus the XLSForm types OpenClinica 4 maps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DataType {
    /// Text (`ST`).
    #[serde(rename = "ST")]
    Text,
    #[serde(rename = "INT")]
    Integer,
    #[serde(rename = "REAL")]
    Real,
    /// A full date, `YYYY-MM-DD`.
    #[serde(rename = "DATE")]
    Date,
    /// `YYYY`, `YYYY-MM` or `YYYY-MM-DD`.
    #[serde(rename = "PDATE")]
    PartialDate,
    #[serde(rename = "DATETIME")]
    DateTime,
    #[serde(rename = "TIME")]
    Time,
    #[serde(rename = "FILE")]
    File,
    #[serde(rename = "BL")]
    Boolean,
}

impl DataType {
    /// The OpenClinica code (`ST`, `INT`, …).
    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            Self::Text => "ST",
            Self::Integer => "INT",
            Self::Real => "REAL",
            Self::Date => "DATE",
            Self::PartialDate => "PDATE",
            Self::DateTime => "DATETIME",
            Self::Time => "TIME",
            Self::File => "FILE",
            Self::Boolean => "BL",
        }
    }

    /// Parses an OpenClinica code.
    #[must_use]
    pub fn parse_code(code: &str) -> Option<Self> {
        Some(match code.trim().to_ascii_uppercase().as_str() {
            "ST" => Self::Text,
            "INT" => Self::Integer,
            "REAL" => Self::Real,
            "DATE" => Self::Date,
            "PDATE" => Self::PartialDate,
            "DATETIME" => Self::DateTime,
            "TIME" => Self::Time,
            "FILE" => Self::File,
            "BL" => Self::Boolean,
            _ => return None,
        })
    }

    /// The ODM 1.3.2 `DataType`.
    #[must_use]
    pub fn odm(self) -> &'static str {
        match self {
            Self::Text | Self::File => "text",
            Self::Integer => "integer",
            Self::Real => "float",
            Self::Date => "date",
            Self::PartialDate => "partialDate",
            Self::DateTime => "datetime",
            Self::Time => "time",
            Self::Boolean => "boolean",
        }
    }

    /// The expression type a value of this data type has.
    #[must_use]
    pub fn value_kind(self) -> ValueKind {
        match self {
            Self::Text | Self::File => ValueKind::Text,
            Self::Integer => ValueKind::Integer,
            Self::Real => ValueKind::Decimal,
            Self::Date => ValueKind::Date,
            Self::PartialDate => ValueKind::PartialDate,
            Self::DateTime => ValueKind::DateTime,
            Self::Time => ValueKind::Time,
            Self::Boolean => ValueKind::Boolean,
        }
    }
}

/// The kind of value an item holds, as the expression checker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueKind {
    Text,
    Integer,
    Decimal,
    Boolean,
    Date,
    DateTime,
    Time,
    PartialDate,
    /// Several codes of a code list.
    MultiSelect,
}

/// How an item is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Widget {
    Text,
    Textarea,
    Radio,
    SingleSelect,
    Checkbox,
    MultiSelect,
    File,
    /// Computed on the server, read-only.
    Calculation,
    /// An aggregate over a repeating group column, computed on the server.
    GroupCalculation,
    /// Text shown to the user, no value.
    Note,
    /// A single "OK" acknowledgement.
    Acknowledge,
    Date,
    DateTime,
    Time,
    Number,
}

impl Widget {
    /// Whether the item collects a value (a note does not).
    #[must_use]
    pub fn holds_value(self) -> bool {
        !matches!(self, Self::Note)
    }

    /// Whether several codes may be chosen.
    #[must_use]
    pub fn is_multi(self) -> bool {
        matches!(self, Self::Checkbox | Self::MultiSelect)
    }

    #[must_use]
    pub fn is_calculated(self) -> bool {
        matches!(self, Self::Calculation | Self::GroupCalculation)
    }
}

/// An expression with the dialect it is written in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expression {
    pub dialect: Dialect,
    pub source: String,
}

impl Expression {
    #[must_use]
    pub fn xpath(source: impl Into<String>) -> Self {
        Self { dialect: Dialect::XPath, source: source.into() }
    }

    #[must_use]
    pub fn oc(source: impl Into<String>) -> Self {
        Self { dialect: Dialect::OcFunc, source: source.into() }
    }
}

/// The expression dialects Casebook understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// The XLSForm / ODK XPath subset (`${name}`, `.`, `selected()` …).
    XPath,
    /// OpenClinica 3 `func:`/`regexp:` validations and calculations over item names.
    OcFunc,
    /// OpenClinica rules expressions over OID paths.
    OcRule,
}

/// Whether an item must be answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "when", content = "expression")]
pub enum Required {
    #[default]
    No,
    Yes,
    /// Required when the expression is true.
    When(Expression),
}

/// An edit check on an item's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub rule: CheckRule,
    /// Shown when the check fails.
    pub message: Text,
    /// A hard check refuses the value; a soft one lets it be saved with a query.
    pub hard: bool,
}

/// What an edit check tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum CheckRule {
    /// A boolean expression over the value (`.`) and other items.
    Constraint { expression: Expression },
    /// The whole value matches a regular expression.
    Regexp { pattern: String },
    /// A numeric range or comparison (`func: range(1, 10)`, `gt(0)` …), ODM `RangeCheck`.
    Range { comparator: Comparator, values: Vec<String> },
}

/// ODM `RangeCheck/@Comparator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Comparator {
    LT,
    LE,
    GT,
    GE,
    EQ,
    NE,
    IN,
    NOTIN,
}

impl Comparator {
    #[must_use]
    pub fn odm(self) -> &'static str {
        match self {
            Self::LT => "LT",
            Self::LE => "LE",
            Self::GT => "GT",
            Self::GE => "GE",
            Self::EQ => "EQ",
            Self::NE => "NE",
            Self::IN => "IN",
            Self::NOTIN => "NOTIN",
        }
    }

    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "LT" => Self::LT,
            "LE" => Self::LE,
            "GT" => Self::GT,
            "GE" => Self::GE,
            "EQ" => Self::EQ,
            "NE" => Self::NE,
            "IN" => Self::IN,
            "NOTIN" => Self::NOTIN,
            _ => return None,
        })
    }
}

/// Simple conditional display (OpenClinica SCD): show this item when another has a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConditionalDisplay {
    pub control_item: String,
    pub option_value: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// An item (ODM `ItemDef` plus OpenClinica item form metadata for this version).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemDef {
    pub oid: Oid,
    /// The variable name, unique in the form, case-sensitive.
    pub name: String,
    pub group_oid: Oid,
    /// The section label the item is shown in.
    pub section: String,
    pub data_type: DataType,
    pub widget: Widget,
    /// Maximum length (text) or total width (numbers), from WIDTH_DECIMAL or the ODM `Length`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u32>,
    /// Decimal places for REAL (`SignificantDigits`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decimals: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<String>,
    /// The code list (OID) for option items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_list: Option<Oid>,
    /// The question.
    pub label: Text,
    #[serde(default, skip_serializing_if = "Text::is_empty")]
    pub hint: Text,
    /// Text to the right of the input (OpenClinica RIGHT_ITEM_TEXT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub right_text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subheader: Option<String>,
    /// Short label for reports (`bind::oc:briefdescription`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brief_description: Option<String>,
    /// The data dictionary definition (OpenClinica DESCRIPTION_LABEL, `bind::oc:description`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Protected health information: left out of datasets for users who may not see it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub phi: bool,
    #[serde(default)]
    pub required: Required,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_message: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub readonly: bool,
    /// Hidden until shown by skip logic, SCD or a rule (OpenClinica ITEM_DISPLAY_STATUS HIDE).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calculation: Option<Expression>,
    /// Skip logic: the item is asked only when this is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relevant: Option<Expression>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditional_display: Option<ConditionalDisplay>,
    /// Filters the code list per choice (XLSForm `choice_filter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choice_filter: Option<Expression>,
    /// Presentation hints (XLSForm `appearance`, OpenClinica RESPONSE_LAYOUT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appearance: Option<String>,
    /// OpenClinica 4 `bind::oc:external` (`clinicaldata`, `contactdata`, `signature`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<String>,
    /// Other columns an importer kept (media, parameters, OpenClinica instance attributes).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

impl ItemDef {
    /// The kind of value the expression language sees for this item.
    #[must_use]
    pub fn value_kind(&self) -> ValueKind {
        if self.widget.is_multi() { ValueKind::MultiSelect } else { self.data_type.value_kind() }
    }
}

/// A code list (ODM `CodeList`, OpenClinica response set, XLSForm choice list).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodeList {
    pub oid: Oid,
    pub name: String,
    pub data_type: DataType,
    pub items: Vec<CodeListItem>,
}

/// One choice of a code list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeListItem {
    /// The stored code.
    pub value: String,
    pub label: Text,
    /// Other columns of the choice (used by `choice_filter`), by column name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn design_round_trips_through_json_and_hash_is_stable() {
        let oid = |s: &str| Oid::parse(s).unwrap();
        let design = StudyDesign {
            events: vec![EventDef {
                oid: oid("SE_BASELINE"),
                name: "Baseline".into(),
                description: None,
                category: None,
                event_type: EventType::Scheduled,
                repeating: false,
                forms: vec![EventForm::new(oid("F_VITALS"))],
            }],
            forms: vec![FormDef {
                oid: oid("F_VITALS"),
                name: "Vitals".into(),
                description: None,
                versions: vec![FormVersion {
                    oid: oid("F_VITALS_V1"),
                    label: "v1".into(),
                    description: None,
                    revision_notes: None,
                    source: FormSource::XlsForm,
                    default_language: None,
                    languages: vec![],
                    sections: vec![Section {
                        label: "main".into(),
                        title: Text::plain("Vitals"),
                        subtitle: None,
                        instructions: None,
                    }],
                    groups: vec![],
                    items: vec![],
                    code_lists: vec![],
                }],
            }],
        };
        let json = design.canonical_json();
        let back: StudyDesign = serde_json::from_str(&json).unwrap();
        assert_eq!(back, design);
        assert_eq!(back.hash(), design.hash());
        assert_eq!(design.hash().len(), 64);
        assert!(design.form_version("F_VITALS_V1").is_some());
        assert!(design.oids().contains("SE_BASELINE"));
    }

    #[test]
    fn codes_parse() {
        assert_eq!(DataType::parse_code("pdate"), Some(DataType::PartialDate));
        assert_eq!(DataType::parse_code("XYZ"), None);
        assert_eq!(SdvRequirement::parse("100% required"), Some(SdvRequirement::Full));
        assert_eq!(EventType::parse("Visit-based"), Some(EventType::Scheduled));
    }
}
