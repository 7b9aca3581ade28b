//! The demo study: `casebook serve --demo` starts with a study to click through.
//!
//! Study `DEMO` (OID `S_DEMO`) with two sites, and one user for every role. The demo grows as
//! later capabilities add forms and data. Idempotent: running it again changes nothing.

use crate::accounts::NewUserInput;
use crate::auth::{Principal, Via};
use crate::studies::{NewSiteInput, NewStudyInput, RoleInput};
use crate::{App, AppError};
use casebook_domain::audit::Channel;
use casebook_domain::study::{IdGeneration, Phase, ProtocolType, StudyDetails, StudyParameters, StudyStatus};
use casebook_domain::user::UserType;

/// The password every demo account gets (printed at start and in the README).
pub const DEMO_PASSWORD: &str = "Demo-password-1";

/// The demo accounts: username, first name, last name, user type, where, role.
/// username, first name, last name, user type, where (`study` or a site protocol ID), role.
pub type DemoUser =
    (&'static str, &'static str, &'static str, &'static str, Option<&'static str>, Option<&'static str>);

pub const DEMO_USERS: &[DemoUser] = &[
    ("demo_admin", "Ada", "Admin", "technical_administrator", None, None),
    ("demo_dm", "Dana", "Manager", "user", Some("study"), Some("data_manager")),
    ("demo_director", "Drew", "Director", "user", Some("study"), Some("study_director")),
    ("demo_specialist", "Sam", "Specialist", "user", Some("study"), Some("investigator")),
    ("demo_entry", "Eli", "Entry", "user", Some("study"), Some("data_entry")),
    ("demo_monitor", "Mona", "Monitor", "user", Some("study"), Some("monitor")),
    ("demo_investigator", "Ivan", "Investigator", "user", Some("DEMO-A"), Some("investigator")),
    ("demo_crc", "Cara", "Coordinator", "user", Some("DEMO-A"), Some("data_entry")),
    ("demo_site_monitor", "Mo", "Sitemonitor", "user", Some("DEMO-A"), Some("monitor")),
    ("demo_site_entry", "Erin", "Siteentry", "user", Some("DEMO-A"), Some("site_data_entry_2")),
    ("demo_crc_b", "Bea", "Coordinator", "user", Some("DEMO-B"), Some("data_entry")),
    ("demo_investigator_b", "Ben", "Investigator", "user", Some("DEMO-B"), Some("investigator")),
];

impl App {
    /// Creates the demo study, sites and users unless the study exists. Returns whether it
    /// created them.
    ///
    /// # Errors
    /// On storage failure.
    pub async fn seed_demo(&self) -> Result<bool, AppError> {
        if self.store().study_by_oid("S_DEMO").await?.is_some() {
            return Ok(false);
        }
        let mut admin = None;
        for (username, first, last, ty, _, _) in DEMO_USERS {
            let existing = self.store().user_by_username(username).await?;
            let row = match existing {
                Some(r) => r,
                None => {
                    let created = self
                        .create_user_as_system(
                            NewUserInput {
                                username: (*username).to_owned(),
                                first_name: (*first).to_owned(),
                                last_name: (*last).to_owned(),
                                email: format!("{username}@demo.casebook.invalid"),
                                institution: Some("Casebook Demo".to_owned()),
                                user_type: Some((*ty).to_owned()),
                                password: Some(DEMO_PASSWORD.to_owned()),
                            },
                            Channel::System,
                        )
                        .await?;
                    self.store().user_by_id(created.user.id).await?.ok_or(AppError::NotFound("user"))?
                }
            };
            if *ty == "technical_administrator" {
                admin = Some(row);
            }
        }
        let admin = admin.ok_or(AppError::NotFound("demo administrator"))?;
        let who = Principal {
            user_id: admin.id,
            username: admin.username.clone(),
            user_type: UserType::TechnicalAdministrator,
            must_change_password: false,
            via: Via::Cli,
            channel: Channel::System,
            request_id: None,
        };
        let study = self
            .create_study(
                &who,
                NewStudyInput {
                    details: StudyDetails {
                        protocol_id: "DEMO".into(),
                        name: "Casebook demo study".into(),
                        title: Some("A demonstration study to explore Casebook".into()),
                        summary: Some("Two sites, one user for every role.".into()),
                        sponsor: Some("Casebook project".into()),
                        principal_investigator: Some("Dr Ivan Investigator".into()),
                        phase: Some(Phase::Phase2),
                        protocol_type: Some(ProtocolType::Interventional),
                        expected_enrollment: Some(100),
                        ..StudyDetails::default()
                    },
                    parameters: Some(StudyParameters {
                        participant_id_generation: IdGeneration::AutoEditable,
                        participant_id_template: Some("{site}-{n:04}".into()),
                        ..StudyParameters::default()
                    }),
                },
            )
            .await?;
        for (protocol, name, city) in [("DEMO-A", "Demo site A", "Lyon"), ("DEMO-B", "Demo site B", "Leeds")] {
            self.create_site(
                &who,
                &study.oid,
                NewSiteInput {
                    details: StudyDetails {
                        protocol_id: protocol.into(),
                        name: name.into(),
                        facility_city: Some(city.into()),
                        expected_enrollment: Some(50),
                        ..StudyDetails::default()
                    },
                    parameters: None,
                },
            )
            .await?;
        }
        for (username, _, _, _, place, role) in DEMO_USERS {
            let (Some(place), Some(role)) = (place, role) else { continue };
            let site_oid = if *place == "study" {
                None
            } else {
                Some(self.store().study_by_protocol_id(place).await?.ok_or(AppError::NotFound("site"))?.oid)
            };
            self.assign_role(
                &who,
                &study.oid,
                RoleInput { username: (*username).to_owned(), role: (*role).to_owned(), site_oid },
            )
            .await?;
        }
        self.seed_demo_design(&who, &study.oid).await?;
        self.set_study_status(&who, &study.oid, StudyStatus::Available, Some("demo ready".into())).await?;
        for site in self.list_sites(&who, &study.oid).await? {
            if site.status == StudyStatus::Design {
                self.set_site_status(&who, &study.oid, &site.oid, StudyStatus::Available, None).await?;
            }
        }
        Ok(true)
    }

    /// The demo design: events, the shipped forms, published to Test and promoted to Production.
    async fn seed_demo_design(&self, who: &Principal, study_oid: &str) -> Result<(), AppError> {
        use crate::design::{EventFormInput, EventInput};
        let event = |name: &str, ty: &str, repeating: bool, forms: Vec<EventFormInput>| EventInput {
            name: name.to_owned(),
            description: None,
            category: None,
            event_type: Some(ty.to_owned()),
            repeating,
            forms,
        };
        let form = |oid: &str, required: bool| EventFormInput {
            form: oid.to_owned(),
            required,
            double_data_entry: false,
            sdv: Some("full".to_owned()),
            electronic_signature: false,
            hidden_from_sites: false,
            default_version: None,
            allowed_versions: Vec::new(),
            null_flavours: vec!["NA".to_owned(), "UNK".to_owned()],
        };
        let baseline = self.save_event(who, study_oid, None, event("Baseline", "scheduled", false, vec![])).await?;
        for (file, bytes) in DEMO_FORMS {
            self.upload_form(who, study_oid, file, bytes, None).await?;
        }
        let baseline_forms: Vec<EventFormInput> = vec![form(DEMO_FORM_OIDS[0], true)];
        self.save_event(
            who,
            study_oid,
            Some(baseline.oid.as_str()),
            event("Baseline", "scheduled", false, baseline_forms),
        )
        .await?;
        self.save_event(
            who,
            study_oid,
            None,
            event("Follow-up", "scheduled", true, vec![form(DEMO_FORM_OIDS[0], true)]),
        )
        .await?;
        self.save_event(
            who,
            study_oid,
            None,
            event("Adverse events", "common", true, vec![form(DEMO_FORM_OIDS[1], false)]),
        )
        .await?;
        let published = self.publish_design(who, study_oid, Some("Demo design".to_owned())).await?;
        self.promote_design(who, study_oid, published.version.number).await?;
        Ok(())
    }
}

/// The demo study's forms, shipped in the repository (`demo/forms/`).
pub const DEMO_FORMS: &[(&str, &[u8])] = &[
    ("vital_signs.xlsx", include_bytes!("../../../demo/forms/vital_signs.xlsx")),
    ("adverse_events_crf.xls", include_bytes!("../../../demo/forms/adverse_events_crf.xls")),
];

/// The OIDs of [`DEMO_FORMS`], in the same order.
pub const DEMO_FORM_OIDS: &[&str] = &["F_VITAL_SIGNS", "F_ADVERSEEVENT"];
