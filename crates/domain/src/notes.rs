//! Discrepancy notes (queries): their types, statuses, and who may open which type and move a
//! thread to which status (OpenClinica 3, reference `openclinica-data-model.md` §7.2 and §8).
//!
//! A thread is opened with a type; Annotation and Reason for Change threads carry no workflow
//! (status Not Applicable throughout). Query and Failed Validation Check threads start New and
//! move through Updated and Resolution Proposed to Closed; a closed thread is reopened by a reply
//! that sets it Updated, which only roles that may close threads can do.

use serde::{Deserialize, Serialize};

use crate::role::Role;

/// The type of a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoteType {
    /// Raised by an edit check or a rule (OpenClinica type 1).
    FailedValidationCheck,
    /// A remark, no workflow (type 2).
    Annotation,
    /// A question to the site (type 3).
    Query,
    /// Why a completed form's value changed (type 4).
    ReasonForChange,
}

/// The status of a thread or of one note in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoteStatus {
    New,
    Updated,
    ResolutionProposed,
    Closed,
    NotApplicable,
}

impl NoteType {
    pub const ALL: [NoteType; 4] = [Self::FailedValidationCheck, Self::Annotation, Self::Query, Self::ReasonForChange];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FailedValidationCheck => "failed_validation_check",
            Self::Annotation => "annotation",
            Self::Query => "query",
            Self::ReasonForChange => "reason_for_change",
        }
    }

    /// Parses the API name, OpenClinica's label or its numeric id.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim().to_ascii_lowercase().replace([' ', '-'], "_");
        match t.as_str() {
            "failed_validation_check" | "fvc" | "1" => Some(Self::FailedValidationCheck),
            "annotation" | "2" => Some(Self::Annotation),
            "query" | "3" => Some(Self::Query),
            "reason_for_change" | "rfc" | "4" => Some(Self::ReasonForChange),
            _ => None,
        }
    }

    /// OpenClinica's label (ODM `NoteType`).
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::FailedValidationCheck => "Failed Validation Check",
            Self::Annotation => "Annotation",
            Self::Query => "Query",
            Self::ReasonForChange => "Reason for Change",
        }
    }

    /// Whether threads of this type follow the query workflow (else: Not Applicable throughout).
    #[must_use]
    pub fn has_workflow(self) -> bool {
        matches!(self, Self::FailedValidationCheck | Self::Query)
    }

    /// The status a new thread of this type starts in.
    #[must_use]
    pub fn initial_status(self) -> NoteStatus {
        if self.has_workflow() { NoteStatus::New } else { NoteStatus::NotApplicable }
    }
}

impl NoteStatus {
    pub const ALL: [NoteStatus; 5] =
        [Self::New, Self::Updated, Self::ResolutionProposed, Self::Closed, Self::NotApplicable];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Updated => "updated",
            Self::ResolutionProposed => "resolution_proposed",
            Self::Closed => "closed",
            Self::NotApplicable => "not_applicable",
        }
    }

    /// Parses the API name, OpenClinica's label (New is "Open" internally) or its numeric id.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim().to_ascii_lowercase().replace([' ', '-'], "_");
        match t.as_str() {
            "new" | "open" | "1" => Some(Self::New),
            "updated" | "2" => Some(Self::Updated),
            "resolution_proposed" | "3" => Some(Self::ResolutionProposed),
            "closed" | "4" => Some(Self::Closed),
            "not_applicable" | "5" => Some(Self::NotApplicable),
            _ => None,
        }
    }

    /// OpenClinica's label (ODM `Status` of a note).
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::New => "New",
            Self::Updated => "Updated",
            Self::ResolutionProposed => "Resolution Proposed",
            Self::Closed => "Closed",
            Self::NotApplicable => "Not Applicable",
        }
    }

    /// Whether the thread still waits for someone (New, Updated, Resolution Proposed).
    #[must_use]
    pub fn is_open(self) -> bool {
        matches!(self, Self::New | Self::Updated | Self::ResolutionProposed)
    }
}

/// Whether a role may open a thread of this type (OpenClinica §7.2): data managers and study
/// directors any type; investigators and data entry staff anything but a Query; monitors only
/// Queries.
#[must_use]
pub fn may_open(role: Role, note_type: NoteType) -> bool {
    match role {
        Role::DataManager | Role::StudyDirector => true,
        Role::Investigator | Role::DataEntry | Role::SiteDataEntry2 => note_type != NoteType::Query,
        Role::Monitor => note_type == NoteType::Query,
    }
}

/// Whether a role may set this status in a reply (OpenClinica §7.2): data managers and study
/// directors New, Updated, Resolution Proposed, Closed; site staff Updated and Resolution
/// Proposed; monitors New, Updated and Closed. Not Applicable is only for threads without
/// workflow, where every role that may write a note keeps it.
#[must_use]
pub fn may_set(role: Role, status: NoteStatus) -> bool {
    use NoteStatus as S;
    match role {
        Role::DataManager | Role::StudyDirector => {
            matches!(status, S::New | S::Updated | S::ResolutionProposed | S::Closed | S::NotApplicable)
        }
        Role::Investigator | Role::DataEntry | Role::SiteDataEntry2 => {
            matches!(status, S::Updated | S::ResolutionProposed | S::NotApplicable)
        }
        Role::Monitor => matches!(status, S::New | S::Updated | S::Closed | S::NotApplicable),
    }
}

/// Why a reply may not move a thread from `from` to `to`, or `None` when the move is allowed by
/// the workflow (role limits are [`may_set`]). Reopening a closed thread (to Updated) is for
/// roles that may close threads.
#[must_use]
pub fn transition_problem(role: Role, note_type: NoteType, from: NoteStatus, to: NoteStatus) -> Option<String> {
    use NoteStatus as S;
    if !note_type.has_workflow() {
        return (to != S::NotApplicable)
            .then(|| format!("{} threads have no workflow: their status stays not_applicable", note_type.label()));
    }
    let allowed = match from {
        S::New => matches!(to, S::New | S::Updated | S::ResolutionProposed | S::Closed),
        S::Updated => matches!(to, S::Updated | S::ResolutionProposed | S::Closed),
        S::ResolutionProposed => matches!(to, S::Updated | S::ResolutionProposed | S::Closed),
        S::Closed => to == S::Updated && may_set(role, S::Closed),
        S::NotApplicable => false,
    };
    if allowed {
        return None;
    }
    Some(match from {
        S::Closed if to == S::Updated => {
            "the thread is closed; only data managers, study directors and monitors may reopen it".to_owned()
        }
        S::Closed => "the thread is closed; a reply may only reopen it (status updated)".to_owned(),
        _ => format!("a {} thread cannot move from {} to {}", note_type.label(), from.as_str(), to.as_str()),
    })
}

/// The status a reply gets when the user does not choose one (OpenClinica's pre-selection):
/// data managers, study directors and monitors close a proposed resolution and reopen a closed
/// thread, otherwise update; site staff propose a resolution, or update an updated thread.
#[must_use]
pub fn default_reply_status(role: Role, note_type: NoteType, current: NoteStatus) -> NoteStatus {
    use NoteStatus as S;
    if !note_type.has_workflow() {
        return S::NotApplicable;
    }
    match role {
        Role::DataManager | Role::StudyDirector | Role::Monitor => match current {
            S::ResolutionProposed => S::Closed,
            _ => S::Updated,
        },
        Role::Investigator | Role::DataEntry | Role::SiteDataEntry2 => match current {
            S::Updated => S::Updated,
            _ => S::ResolutionProposed,
        },
    }
}

/// The fields of a form, an event and a participant that carry threads besides item values
/// (OpenClinica `column_name`).
pub const FORM_COLUMNS: [&str; 2] = ["interview_date", "interviewer"];
pub const EVENT_COLUMNS: [&str; 3] = ["start_date", "end_date", "location"];
pub const PARTICIPANT_COLUMNS: [&str; 5] = ["enrolment_date", "date_of_birth", "sex", "person_id", "secondary_id"];

#[cfg(test)]
mod tests {
    use super::*;
    use NoteStatus as S;
    use NoteType as T;

    #[test]
    fn who_opens_which_type() {
        // (role, FVC, Annotation, Query, RFC)
        let table = [
            (Role::DataManager, [true, true, true, true]),
            (Role::StudyDirector, [true, true, true, true]),
            (Role::Investigator, [true, true, false, true]),
            (Role::DataEntry, [true, true, false, true]),
            (Role::SiteDataEntry2, [true, true, false, true]),
            (Role::Monitor, [false, false, true, false]),
        ];
        for (role, expected) in table {
            for (t, e) in NoteType::ALL.into_iter().zip(expected) {
                assert_eq!(may_open(role, t), e, "{role:?} opening {t:?}");
            }
        }
    }

    #[test]
    fn who_sets_which_status() {
        // (role, New, Updated, Resolution Proposed, Closed)
        let table = [
            (Role::DataManager, [true, true, true, true]),
            (Role::StudyDirector, [true, true, true, true]),
            (Role::Investigator, [false, true, true, false]),
            (Role::DataEntry, [false, true, true, false]),
            (Role::SiteDataEntry2, [false, true, true, false]),
            (Role::Monitor, [true, true, false, true]),
        ];
        for (role, expected) in table {
            for (s, e) in [S::New, S::Updated, S::ResolutionProposed, S::Closed].into_iter().zip(expected) {
                assert_eq!(may_set(role, s), e, "{role:?} setting {s:?}");
            }
        }
    }

    #[test]
    fn workflow_transitions() {
        let dm = Role::DataManager;
        assert_eq!(transition_problem(dm, T::Query, S::New, S::ResolutionProposed), None);
        assert_eq!(transition_problem(dm, T::Query, S::ResolutionProposed, S::Updated), None);
        assert_eq!(transition_problem(dm, T::Query, S::ResolutionProposed, S::Closed), None);
        assert_eq!(transition_problem(dm, T::Query, S::Closed, S::Updated), None);
        assert!(transition_problem(dm, T::Query, S::Updated, S::New).is_some());
        assert!(transition_problem(dm, T::Query, S::Closed, S::Closed).is_some());
        assert!(transition_problem(dm, T::Query, S::New, S::NotApplicable).is_some());
        let reopen = transition_problem(Role::Investigator, T::Query, S::Closed, S::Updated).unwrap();
        assert!(reopen.contains("reopen"), "{reopen}");
        assert_eq!(transition_problem(Role::Monitor, T::FailedValidationCheck, S::Closed, S::Updated), None);
        assert_eq!(transition_problem(Role::DataEntry, T::Annotation, S::NotApplicable, S::NotApplicable), None);
        assert!(transition_problem(dm, T::ReasonForChange, S::NotApplicable, S::Closed).is_some());
    }

    #[test]
    fn default_reply_statuses() {
        assert_eq!(default_reply_status(Role::Monitor, T::Query, S::ResolutionProposed), S::Closed);
        assert_eq!(default_reply_status(Role::DataManager, T::Query, S::Closed), S::Updated);
        assert_eq!(default_reply_status(Role::DataManager, T::Query, S::New), S::Updated);
        assert_eq!(default_reply_status(Role::DataEntry, T::Query, S::New), S::ResolutionProposed);
        assert_eq!(default_reply_status(Role::Investigator, T::Query, S::Updated), S::Updated);
        assert_eq!(default_reply_status(Role::Investigator, T::Annotation, S::NotApplicable), S::NotApplicable);
    }

    #[test]
    fn parse_names_labels_and_ids() {
        assert_eq!(NoteType::parse("Failed Validation Check"), Some(T::FailedValidationCheck));
        assert_eq!(NoteType::parse("3"), Some(T::Query));
        assert_eq!(NoteStatus::parse("Resolution Proposed"), Some(S::ResolutionProposed));
        assert_eq!(NoteStatus::parse("open"), Some(S::New));
        assert_eq!(NoteStatus::parse("done"), None);
        for s in NoteStatus::ALL {
            assert_eq!(NoteStatus::parse(s.as_str()), Some(s));
        }
    }
}
