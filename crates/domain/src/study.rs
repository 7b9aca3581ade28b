//! Studies and sites: statuses, parameters and the validated shape of their details.

use crate::{FieldError, text_field};
use std::str::FromStr;
use time::Date;

/// Study or site status (OpenClinica §6.6). `Design` is OpenClinica's "pending".
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StudyStatus {
    /// Being built: no enrolment, no data.
    Design,
    /// Open for data.
    Available,
    /// Site users read-only; study-level users may still clean data.
    Frozen,
    /// Nobody changes data; view, print and extract only.
    Locked,
    /// Hidden until an administrator restores it.
    Removed,
}

impl StudyStatus {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Design => "design",
            Self::Available => "available",
            Self::Frozen => "frozen",
            Self::Locked => "locked",
            Self::Removed => "removed",
        }
    }

    /// Whether a data manager may move a study from `self` to `to`. Removal and restoration
    /// are administrator actions with their own use cases, not transitions here.
    #[must_use]
    pub fn can_transition_to(self, to: StudyStatus) -> bool {
        use StudyStatus as S;
        matches!(
            (self, to),
            (S::Design, S::Available)
                | (S::Available, S::Frozen | S::Locked)
                | (S::Frozen, S::Available | S::Locked)
                | (S::Locked, S::Frozen | S::Available)
        )
    }

    /// The status that governs a site: the stricter of the site's own and its study's.
    #[must_use]
    pub fn effective(study: StudyStatus, site: StudyStatus) -> StudyStatus {
        fn rank(s: StudyStatus) -> u8 {
            match s {
                StudyStatus::Available => 0,
                StudyStatus::Design => 1,
                StudyStatus::Frozen => 2,
                StudyStatus::Locked => 3,
                StudyStatus::Removed => 4,
            }
        }
        if rank(site) > rank(study) { site } else { study }
    }
}

impl FromStr for StudyStatus {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "design" | "pending" => Ok(Self::Design),
            "available" => Ok(Self::Available),
            "frozen" => Ok(Self::Frozen),
            "locked" => Ok(Self::Locked),
            "removed" => Ok(Self::Removed),
            _ => Err(FieldError::new(
                "status",
                format!("'{s}' is not a study status: use design, available, frozen or locked"),
            )),
        }
    }
}

/// Whether a field is collected: `required`, `optional` or `not_used`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Collect {
    Required,
    Optional,
    NotUsed,
}

/// How much of the date of birth is collected (`collectDob`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DobCollection {
    Full,
    YearOnly,
    NotUsed,
}

/// How participant IDs (study subject labels) are made (`subjectIdGeneration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdGeneration {
    Manual,
    AutoEditable,
    AutoNonEditable,
}

/// What a header field of a form is pre-filled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldDefault {
    Blank,
    PrePopulated,
}

/// Study parameters (OpenClinica §1.2), with OpenClinica's defaults.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StudyParameters {
    pub collect_dob: DobCollection,
    pub sex_required: bool,
    pub person_id: Collect,
    pub participant_id_generation: IdGeneration,
    /// Template for automatic IDs, such as `{site}-{n:04}`; `None` numbers plainly.
    pub participant_id_template: Option<String>,
    pub secondary_id_viewable: bool,
    pub event_location: Collect,
    pub discrepancy_management: bool,
    pub admin_forced_reason_for_change: bool,
    pub person_id_shown_on_form: bool,
    pub interviewer_name: Collect,
    pub interviewer_name_default: FieldDefault,
    pub interviewer_name_editable: bool,
    pub interview_date: Collect,
    pub interview_date_default: FieldDefault,
    pub interview_date_editable: bool,
    /// A clinical data import may enrol the participants its file names that do not exist yet
    /// (off by default, as in OpenClinica 3: an import then only fills existing participants).
    pub import_enrols_participants: bool,
    /// A clinical data import may schedule the event occurrences its file names that are not
    /// scheduled yet, at `OpenClinica:StartDate` when given (off by default).
    pub import_schedules_events: bool,
}

impl Default for StudyParameters {
    fn default() -> Self {
        Self {
            collect_dob: DobCollection::Full,
            sex_required: true,
            person_id: Collect::Optional,
            participant_id_generation: IdGeneration::Manual,
            participant_id_template: None,
            secondary_id_viewable: true,
            event_location: Collect::Optional,
            discrepancy_management: true,
            admin_forced_reason_for_change: false,
            person_id_shown_on_form: false,
            interviewer_name: Collect::Optional,
            interviewer_name_default: FieldDefault::Blank,
            interviewer_name_editable: true,
            interview_date: Collect::Optional,
            interview_date_default: FieldDefault::Blank,
            interview_date_editable: true,
            import_enrols_participants: false,
            import_schedules_events: false,
        }
    }
}

impl StudyParameters {
    /// Checks combinations the types cannot express.
    #[must_use]
    pub fn check(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Some(t) = &self.participant_id_template {
            if let Err(e) = parse_id_template(t) {
                errors.push(FieldError::new("parameters.participant_id_template", e));
            }
            if self.participant_id_generation == IdGeneration::Manual {
                errors.push(FieldError::new(
                    "parameters.participant_id_template",
                    "a template needs participant_id_generation auto_editable or auto_non_editable",
                ));
            }
        }
        errors
    }
}

/// Site-level overrides: only the interviewer and interview-date parameters may differ at a site.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SiteParameters {
    pub interviewer_name: Option<Collect>,
    pub interviewer_name_default: Option<FieldDefault>,
    pub interviewer_name_editable: Option<bool>,
    pub interview_date: Option<Collect>,
    pub interview_date_default: Option<FieldDefault>,
    pub interview_date_editable: Option<bool>,
}

/// Checks a participant ID template: literal text with `{site}`, `{study}` and exactly one
/// `{n}` or `{n:0W}` (zero-padded to W digits).
///
/// # Errors
/// A message saying which placeholder is wrong.
pub fn parse_id_template(t: &str) -> Result<(), String> {
    let mut numbers = 0;
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            return Err(format!("'{{' at position {} is never closed", t.len() - rest.len() + open + 1));
        };
        let name = &rest[open + 1..open + close];
        match name {
            "site" | "study" => {}
            "n" => numbers += 1,
            n if n.starts_with("n:0") && n[3..].parse::<u8>().is_ok_and(|w| (1..=12).contains(&w)) => numbers += 1,
            other => {
                return Err(format!("unknown placeholder '{{{other}}}': use {{site}}, {{study}}, {{n}} or {{n:04}}"));
            }
        }
        rest = &rest[open + close + 1..];
    }
    match numbers {
        1 => Ok(()),
        0 => Err("the template needs one {n} (the running number)".to_owned()),
        _ => Err("the template may contain only one {n}".to_owned()),
    }
}

/// Phase of a clinical trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    NotApplicable,
    Phase0,
    Phase1,
    Phase1_2,
    Phase2,
    Phase2_3,
    Phase3,
    Phase4,
}

/// Interventional or observational.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProtocolType {
    Interventional,
    Observational,
}

/// The descriptive details of a study or site, as entered; validated by [`StudyDetails::check`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StudyDetails {
    /// Unique protocol ID (≤ 30). For a site, its unique site protocol ID.
    pub protocol_id: String,
    pub secondary_id: Option<String>,
    /// Short name (≤ 255).
    pub name: String,
    /// Official title (≤ 255).
    pub title: Option<String>,
    pub summary: Option<String>,
    pub sponsor: Option<String>,
    pub collaborators: Option<String>,
    pub principal_investigator: Option<String>,
    pub phase: Option<Phase>,
    pub protocol_type: Option<ProtocolType>,
    pub expected_enrollment: Option<u32>,
    pub start_date: Option<Date>,
    pub end_date: Option<Date>,
    pub facility_name: Option<String>,
    pub facility_city: Option<String>,
    pub facility_country: Option<String>,
    pub contact_email: Option<String>,
}

impl StudyDetails {
    /// Trims texts and returns every problem at once.
    ///
    /// # Errors
    /// Every field that is wrong.
    pub fn check(mut self) -> Result<Self, Vec<FieldError>> {
        let mut e = Vec::new();
        self.protocol_id = text_field("protocol_id", Some(&self.protocol_id), 30, true, &mut e).unwrap_or_default();
        self.name = text_field("name", Some(&self.name), 255, true, &mut e).unwrap_or_default();
        let opt = |f: &str, v: Option<String>, max: usize, e: &mut Vec<FieldError>| {
            text_field(f, v.as_deref(), max, false, e)
        };
        self.secondary_id = opt("secondary_id", self.secondary_id, 30, &mut e);
        self.title = opt("title", self.title, 255, &mut e);
        self.summary = opt("summary", self.summary, 4000, &mut e);
        self.sponsor = opt("sponsor", self.sponsor, 255, &mut e);
        self.collaborators = opt("collaborators", self.collaborators, 1000, &mut e);
        self.principal_investigator = opt("principal_investigator", self.principal_investigator, 255, &mut e);
        self.facility_name = opt("facility_name", self.facility_name, 255, &mut e);
        self.facility_city = opt("facility_city", self.facility_city, 255, &mut e);
        self.facility_country = opt("facility_country", self.facility_country, 64, &mut e);
        self.contact_email = opt("contact_email", self.contact_email, 254, &mut e);
        if let Some(mail) = &self.contact_email
            && let Err(mut err) = crate::user::parse_email(mail)
        {
            err.field = "contact_email".to_owned();
            e.push(err);
        }
        if self.protocol_id.contains(['<', '>']) {
            e.push(FieldError::new("protocol_id", "must not contain '<' or '>'"));
        }
        if let (Some(s), Some(end)) = (self.start_date, self.end_date)
            && end < s
        {
            e.push(FieldError::new("end_date", "must not be before start_date"));
        }
        if self.expected_enrollment.is_some_and(|n| n > 10_000_000) {
            e.push(FieldError::new("expected_enrollment", "must be at most 10000000"));
        }
        if e.is_empty() { Ok(self) } else { Err(e) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_machine() {
        use StudyStatus as S;
        assert!(S::Design.can_transition_to(S::Available));
        assert!(S::Available.can_transition_to(S::Frozen));
        assert!(S::Frozen.can_transition_to(S::Available));
        assert!(S::Locked.can_transition_to(S::Frozen));
        assert!(!S::Available.can_transition_to(S::Design));
        assert!(!S::Locked.can_transition_to(S::Design));
        assert!(!S::Design.can_transition_to(S::Locked));
        assert_eq!(StudyStatus::effective(S::Available, S::Frozen), S::Frozen);
        assert_eq!(StudyStatus::effective(S::Locked, S::Available), S::Locked);
    }

    #[test]
    fn id_templates() {
        assert!(parse_id_template("{site}-{n:04}").is_ok());
        assert!(parse_id_template("P{n}").is_ok());
        assert!(parse_id_template("{site}").is_err());
        assert!(parse_id_template("{n}{n}").is_err());
        assert!(parse_id_template("{x}-{n}").is_err());
        assert!(parse_id_template("{n").is_err());
    }

    #[test]
    fn details_report_every_problem() {
        let d = StudyDetails {
            protocol_id: "  ".into(),
            name: "x".repeat(300),
            contact_email: Some("nope".into()),
            start_date: Some(time::macros::date!(2026 - 02 - 01)),
            end_date: Some(time::macros::date!(2026 - 01 - 01)),
            ..StudyDetails::default()
        };
        let errs = d.check().unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["protocol_id", "name", "contact_email", "end_date"]);
    }
}
