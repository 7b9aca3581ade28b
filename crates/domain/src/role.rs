//! Study and site roles, and the permission matrix every use case consults.
//!
//! Roles and labels follow OpenClinica 3 (reference `openclinica-data-model.md` §7): a role is
//! stored by its internal name and shown with a label that depends on whether it is held at the
//! study or at a site. Study-level roles act on every site; site-level roles only on their site.

use crate::FieldError;
use crate::study::StudyStatus;

/// A role held by a user in a study or a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Role {
    /// `coordinator`: Data Manager.
    DataManager,
    /// `director`: Study Director.
    StudyDirector,
    /// `Investigator`: Data Specialist at the study, Investigator at a site.
    Investigator,
    /// `ra`: Data Entry Person at the study, Clinical Research Coordinator at a site.
    DataEntry,
    /// `monitor`: Monitor.
    Monitor,
    /// `ra2`: Data Entry Person at a site (site only).
    SiteDataEntry2,
}

/// Where a role is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleLevel {
    Study,
    Site,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::DataManager,
        Role::StudyDirector,
        Role::Investigator,
        Role::DataEntry,
        Role::Monitor,
        Role::SiteDataEntry2,
    ];

    /// The internal name stored in the database and used by OpenClinica clients.
    #[must_use]
    pub fn internal_name(self) -> &'static str {
        match self {
            Self::DataManager => "coordinator",
            Self::StudyDirector => "director",
            Self::Investigator => "Investigator",
            Self::DataEntry => "ra",
            Self::Monitor => "monitor",
            Self::SiteDataEntry2 => "ra2",
        }
    }

    /// The label shown to users, which depends on the level the role is held at.
    #[must_use]
    pub fn label(self, level: RoleLevel) -> &'static str {
        match (self, level) {
            (Self::DataManager, _) => "Data Manager",
            (Self::StudyDirector, _) => "Study Director",
            (Self::Investigator, RoleLevel::Study) => "Data Specialist",
            (Self::Investigator, RoleLevel::Site) => "Investigator",
            (Self::DataEntry, RoleLevel::Study) => "Data Entry Person",
            (Self::DataEntry, RoleLevel::Site) => "Clinical Research Coordinator",
            (Self::Monitor, _) => "Monitor",
            (Self::SiteDataEntry2, _) => "Data Entry Person",
        }
    }

    /// Whether the role may be assigned at this level (OpenClinica offers data manager and
    /// study director only at the study, `ra2` only at a site).
    #[must_use]
    pub fn offered_at(self, level: RoleLevel) -> bool {
        match self {
            Self::DataManager | Self::StudyDirector => level == RoleLevel::Study,
            Self::SiteDataEntry2 => level == RoleLevel::Site,
            Self::Investigator | Self::DataEntry | Self::Monitor => true,
        }
    }

    /// Parses a role from its internal name, or its label at `level`, case-insensitively.
    ///
    /// # Errors
    /// A [`FieldError`] on field `role` listing the roles offered at that level.
    pub fn parse(text: &str, level: RoleLevel) -> Result<Self, FieldError> {
        let wanted = text.trim().to_lowercase().replace(['_', '-'], " ");
        let found = Self::ALL.into_iter().filter(|r| r.offered_at(level)).find(|r| {
            r.internal_name().to_lowercase() == wanted
                || r.label(level).to_lowercase() == wanted
                || r.key() == wanted.replace(' ', "_")
        });
        found.ok_or_else(|| {
            let offered: Vec<String> = Self::ALL
                .into_iter()
                .filter(|r| r.offered_at(level))
                .map(|r| format!("{} ({})", r.internal_name(), r.label(level)))
                .collect();
            let level_name = match level {
                RoleLevel::Study => "a study",
                RoleLevel::Site => "a site",
            };
            FieldError::new(
                "role",
                format!("'{text}' is not a role at {level_name}; use one of: {}", offered.join(", ")),
            )
        })
    }

    /// Parses the internal name stored in the database.
    #[must_use]
    pub fn from_internal(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.internal_name() == name)
    }

    /// A stable snake_case key for APIs.
    #[must_use]
    pub fn key(self) -> &'static str {
        match self {
            Self::DataManager => "data_manager",
            Self::StudyDirector => "study_director",
            Self::Investigator => "investigator",
            Self::DataEntry => "data_entry",
            Self::Monitor => "monitor",
            Self::SiteDataEntry2 => "site_data_entry_2",
        }
    }
}

/// Something a user may be allowed to do in a study. Later capabilities add their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// See the study, its sites and its design.
    ViewStudy,
    /// Edit study details and parameters; change the study status.
    ManageStudy,
    /// Create and edit sites; change their status.
    ManageSites,
    /// Assign and remove roles of users in the study and its sites.
    AssignRoles,
    /// Read the audit trail (limited to the user's sites for site-level roles).
    ViewAudit,
    /// Build the design: events, forms, versions, rules.
    BuildStudy,
    /// See participants and their data.
    ViewData,
    /// Enrol participants, schedule events, enter data.
    EnterData,
    /// Edit completed forms.
    AdministrativeEdit,
    /// Import clinical data.
    ImportData,
    /// Remove and restore participants.
    RemoveParticipant,
    /// Move a participant to another site.
    ReassignParticipant,
    /// Remove and restore forms; lock and unlock events.
    LockData,
    /// Sign events and casebooks.
    Sign,
    /// Source data verification.
    Sdv,
    /// Define datasets and run extracts.
    Extract,
    /// Open and answer discrepancy notes (which types and statuses: `notes::may_open`, `may_set`).
    WriteNotes,
}

impl Permission {
    /// Whether the study status still allows this. Design allows no data; frozen allows
    /// study-level cleaning but no site entry; locked allows only reading and extracting.
    #[must_use]
    pub fn allowed_in(self, status: StudyStatus, level: RoleLevel) -> bool {
        match status {
            StudyStatus::Removed => false,
            StudyStatus::Available => true,
            StudyStatus::Design => !matches!(
                self,
                Self::EnterData
                    | Self::AdministrativeEdit
                    | Self::ImportData
                    | Self::Sign
                    | Self::Sdv
                    | Self::WriteNotes
                    | Self::RemoveParticipant
                    | Self::ReassignParticipant
            ),
            StudyStatus::Frozen => match self {
                Self::EnterData | Self::ImportData | Self::Sign => false,
                Self::AdministrativeEdit | Self::RemoveParticipant | Self::ReassignParticipant => {
                    level == RoleLevel::Study
                }
                _ => true,
            },
            StudyStatus::Locked => matches!(
                self,
                Self::ViewStudy
                    | Self::ViewData
                    | Self::ViewAudit
                    | Self::Extract
                    | Self::ManageStudy
                    | Self::AssignRoles
            ),
        }
    }
}

impl Role {
    /// The permission matrix (OpenClinica 3 §7.2, with the audit trail readable by every role).
    #[must_use]
    pub fn allows(self, p: Permission) -> bool {
        use Permission as P;
        use Role as R;
        match p {
            P::ViewStudy | P::ViewData | P::ViewAudit | P::WriteNotes => true,
            P::ManageStudy | P::ManageSites | P::AssignRoles | P::BuildStudy => {
                matches!(self, R::DataManager | R::StudyDirector)
            }
            P::EnterData | P::AdministrativeEdit | P::ImportData => !matches!(self, R::Monitor),
            P::RemoveParticipant => matches!(self, R::DataManager | R::StudyDirector | R::Investigator),
            P::ReassignParticipant | P::LockData => matches!(self, R::DataManager | R::StudyDirector),
            P::Sign => matches!(self, R::Investigator),
            P::Sdv => matches!(self, R::DataManager | R::StudyDirector | R::Monitor),
            P::Extract => matches!(self, R::DataManager | R::StudyDirector | R::Investigator | R::Monitor),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_depend_on_level() {
        assert_eq!(Role::Investigator.label(RoleLevel::Study), "Data Specialist");
        assert_eq!(Role::Investigator.label(RoleLevel::Site), "Investigator");
        assert_eq!(Role::DataEntry.label(RoleLevel::Site), "Clinical Research Coordinator");
    }

    #[test]
    fn parse_by_internal_name_label_or_key() {
        assert_eq!(Role::parse("coordinator", RoleLevel::Study), Ok(Role::DataManager));
        assert_eq!(Role::parse("data manager", RoleLevel::Study), Ok(Role::DataManager));
        assert_eq!(Role::parse("Clinical Research Coordinator", RoleLevel::Site), Ok(Role::DataEntry));
        assert_eq!(Role::parse("site_data_entry_2", RoleLevel::Site), Ok(Role::SiteDataEntry2));
        assert_eq!(Role::parse("Data Entry Person", RoleLevel::Site), Ok(Role::SiteDataEntry2));
        assert_eq!(Role::parse("Data Entry Person", RoleLevel::Study), Ok(Role::DataEntry));
        let err = Role::parse("coordinator", RoleLevel::Site).unwrap_err();
        assert!(err.message.contains("not a role at a site"), "{err}");
        assert!(Role::parse("ra2", RoleLevel::Study).is_err());
    }

    #[test]
    fn matrix_matches_openclinica() {
        assert!(Role::Monitor.allows(Permission::Sdv));
        assert!(!Role::Monitor.allows(Permission::EnterData));
        assert!(Role::Investigator.allows(Permission::Sign));
        assert!(!Role::DataManager.allows(Permission::Sign));
        assert!(!Role::DataEntry.allows(Permission::RemoveParticipant));
        assert!(Role::DataManager.allows(Permission::AssignRoles));
        assert!(!Role::Investigator.allows(Permission::AssignRoles));
    }

    #[test]
    fn status_limits_permissions() {
        assert!(!Permission::EnterData.allowed_in(StudyStatus::Frozen, RoleLevel::Study));
        assert!(Permission::AdministrativeEdit.allowed_in(StudyStatus::Frozen, RoleLevel::Study));
        assert!(!Permission::AdministrativeEdit.allowed_in(StudyStatus::Frozen, RoleLevel::Site));
        assert!(!Permission::AdministrativeEdit.allowed_in(StudyStatus::Locked, RoleLevel::Study));
        assert!(Permission::Extract.allowed_in(StudyStatus::Locked, RoleLevel::Site));
    }
}
