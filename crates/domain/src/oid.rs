//! Object identifiers (OIDs) generated the way OpenClinica clients expect them.
//!
//! Rules (reference `openclinica-data-model.md` §1.11): trim the key, drop whitespace and every
//! character that is not an ASCII letter, digit or underscore, uppercase, truncate to the
//! object's length, put the prefix in front. An empty key becomes the prefix plus a random
//! number. When the OID is taken, `_` plus a random number 0..=9999 is appended until it is free.
//! An OID is at most 40 characters of `A-Z`, `0-9` and `_`.

use std::fmt;

/// The kinds of object that carry OIDs, with their prefix and key truncation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OidKind {
    /// Study or site: `S_` + protocol ID (8).
    Study,
    /// Study subject (participant): `SS_` + label (8).
    StudySubject,
    /// Event definition: `SE_` + name (28).
    EventDefinition,
    /// Form (CRF): `F_` + name (12).
    Form,
}

impl OidKind {
    fn prefix(self) -> &'static str {
        match self {
            Self::Study => "S_",
            Self::StudySubject => "SS_",
            Self::EventDefinition => "SE_",
            Self::Form => "F_",
        }
    }

    fn truncation(self) -> usize {
        match self {
            Self::Study | Self::StudySubject => 8,
            Self::EventDefinition => 28,
            Self::Form => 12,
        }
    }
}

/// A valid OID: 1..=40 characters of `A-Z`, `0-9`, `_`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Oid(String);

impl TryFrom<String> for Oid {
    type Error = InvalidOid;
    fn try_from(s: String) -> Result<Self, InvalidOid> {
        Self::parse(&s)
    }
}

impl From<Oid> for String {
    fn from(o: Oid) -> String {
        o.0
    }
}

/// Why a text is not an OID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a valid OID: use 1 to 40 characters A-Z, 0-9 and _")]
pub struct InvalidOid(pub String);

impl Oid {
    /// Parses an OID given by a user or a file.
    ///
    /// # Errors
    /// When the text is empty, longer than 40 characters or has other characters than
    /// `A-Z`, `0-9` and `_`.
    pub fn parse(text: &str) -> Result<Self, InvalidOid> {
        let ok = !text.is_empty()
            && text.len() <= 40
            && text.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if ok { Ok(Self(text.to_owned())) } else { Err(InvalidOid(text.to_owned())) }
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Normalises a key as OpenClinica does: keep ASCII letters, digits and `_`, uppercase,
/// truncate to `max` characters.
#[must_use]
pub fn normalise_key(key: &str, max: usize) -> String {
    key.trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .map(|c| c.to_ascii_uppercase())
        .take(max)
        .collect()
}

/// Generates the OID of a new object.
///
/// `taken` says whether an OID is already in use; `random` yields numbers in 0..=9999 (injected
/// so tests are deterministic).
pub fn generate(kind: OidKind, key: &str, mut taken: impl FnMut(&str) -> bool, mut random: impl FnMut() -> u16) -> Oid {
    let normalised = normalise_key(key, kind.truncation());
    let base = if normalised.is_empty() {
        format!("{}{}", kind.prefix(), random() % 10_000)
    } else {
        format!("{}{}", kind.prefix(), normalised)
    };
    let mut candidate = base.clone();
    while taken(&candidate) {
        candidate = format!("{base}_{}", random() % 10_000);
    }
    Oid(candidate)
}

/// The OID key of an object inside a form: form versions, item groups and items, whose OIDs
/// combine the form's name with their own (§1.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormPartKind {
    /// `<form OID>_` + version name (10).
    Version,
    /// `IG_` + form name (5) + `_` + group label (26).
    ItemGroup,
    /// `I_` + form name (5) + `_` + item name (27).
    Item,
}

/// Generates the OID of a form version, item group or item, with the same collision rule as
/// [`generate`]. `form_oid` is used for versions, `form_name` for groups and items.
pub fn generate_form_part(
    kind: FormPartKind,
    form_oid: &str,
    form_name: &str,
    key: &str,
    mut taken: impl FnMut(&str) -> bool,
    mut random: impl FnMut() -> u16,
) -> Oid {
    let (prefix, max) = match kind {
        FormPartKind::Version => (format!("{form_oid}_"), 10),
        FormPartKind::ItemGroup => (format!("IG_{}_", normalise_key(form_name, 5)), 26),
        FormPartKind::Item => (format!("I_{}_", normalise_key(form_name, 5)), 27),
    };
    let normalised = normalise_key(key, max);
    let base =
        if normalised.is_empty() { format!("{prefix}{}", random() % 10_000) } else { format!("{prefix}{normalised}") };
    let base: String = base.chars().take(40).collect();
    let mut candidate = base.clone();
    while taken(&candidate) {
        candidate = format!("{base}_{}", random() % 10_000).chars().take(40).collect();
    }
    Oid(candidate)
}

/// The OID of a measurement unit: `MU_` + the unit's letters, digits and underscores, at most
/// 35 characters in all.
#[must_use]
pub fn measurement_unit(unit: &str) -> Oid {
    let key = normalise_key(unit, 32);
    if key.is_empty() { Oid("MU_UNIT".to_owned()) } else { Oid(format!("MU_{key}")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(kind: OidKind, key: &str) -> String {
        generate(kind, key, |_| false, || 42).0
    }

    #[test]
    fn study_oids_follow_openclinica() {
        assert_eq!(fresh(OidKind::Study, "DEMO"), "S_DEMO");
        assert_eq!(fresh(OidKind::Study, "  abc-123 trial "), "S_ABC123TR");
        assert_eq!(fresh(OidKind::Study, "Site_01"), "S_SITE_01");
        assert_eq!(fresh(OidKind::Study, "Étude ß"), "S_TUDE");
        assert_eq!(fresh(OidKind::Study, "---"), "S_42");
        assert_eq!(fresh(OidKind::EventDefinition, "Baseline visit (week 0)"), "SE_BASELINEVISITWEEK0");
        assert_eq!(fresh(OidKind::Form, "Adverse events log form"), "F_ADVERSEEVENT");
        assert_eq!(fresh(OidKind::StudySubject, "SITE-A-0001"), "SS_SITEA000");
    }

    #[test]
    fn collisions_get_a_random_suffix_until_free() {
        let existing = ["S_DEMO", "S_DEMO_7"];
        let mut numbers = [7u16, 8].into_iter();
        let oid = generate(OidKind::Study, "demo", |c| existing.contains(&c), || numbers.next().unwrap_or(0));
        assert_eq!(oid.as_str(), "S_DEMO_8");
    }

    #[test]
    fn form_part_oids_follow_openclinica() {
        let f = |k, key| generate_form_part(k, "F_ADVERSEEVENT", "Adverse events", key, |_| false, || 3).0;
        assert_eq!(f(FormPartKind::Version, "v1.0 final draft"), "F_ADVERSEEVENT_V10FINALDR");
        assert_eq!(f(FormPartKind::ItemGroup, "ae_log"), "IG_ADVER_AE_LOG");
        assert_eq!(f(FormPartKind::Item, "ae_term"), "I_ADVER_AE_TERM");
        assert_eq!(
            f(FormPartKind::Item, "a_very_long_item_name_that_goes_on_and_on"),
            "I_ADVER_A_VERY_LONG_ITEM_NAME_THAT_"
        );
        assert_eq!(f(FormPartKind::Item, "??"), "I_ADVER_3");
        let taken = ["I_ADVER_AE_TERM"];
        let oid =
            generate_form_part(FormPartKind::Item, "F_AE", "Adverse events", "ae_term", |c| taken.contains(&c), || 12);
        assert_eq!(oid.as_str(), "I_ADVER_AE_TERM_12");
        assert_eq!(measurement_unit("kg/m2").as_str(), "MU_KGM2");
    }

    #[test]
    fn oids_round_trip_through_serde() {
        let o: Oid = serde_json::from_str("\"I_X\"").unwrap();
        assert_eq!(serde_json::to_string(&o).unwrap(), "\"I_X\"");
        assert!(serde_json::from_str::<Oid>("\"i x\"").is_err());
    }

    #[test]
    fn parse_accepts_only_valid_oids() {
        assert!(Oid::parse("S_DEMO").is_ok());
        assert!(Oid::parse("s_demo").is_err());
        assert!(Oid::parse("").is_err());
        assert!(Oid::parse(&"A".repeat(41)).is_err());
        assert!(Oid::parse("S-DEMO").is_err());
    }
}
