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
            sdv: Some("full".to_owned()),
            null_flavours: vec!["NA".to_owned(), "UNK".to_owned()],
            ..EventFormInput::default()
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
            // Follow-up visits verify only the weight and blood pressure (item-level SDV).
            event(
                "Follow-up",
                "scheduled",
                true,
                vec![EventFormInput {
                    sdv: Some("partial".to_owned()),
                    sdv_items: vec!["I_VITAL_WEIGHT".to_owned(), "I_VITAL_SYS".to_owned(), "I_VITAL_DIA".to_owned()],
                    ..form(DEMO_FORM_OIDS[0], true)
                }],
            ),
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

impl App {
    /// Participants with data in various statuses at both demo sites, entered through the same
    /// use cases as the API (so every value is checked and audited). Run once, right after the
    /// demo study is created (`casebook serve --demo`).
    ///
    /// # Errors
    /// When a use case refuses (a bug in the demo data).
    pub async fn seed_demo_data(&self) -> Result<usize, AppError> {
        use crate::capture::{EnrolInput, ScheduleInput};
        use crate::entry::{CompleteFormInput, SaveFormInput, ValueInput};
        let v = |item: &str, row: u32, value: &str| ValueInput {
            item: item.to_owned(),
            row,
            value: Some(value.to_owned()),
            null_flavour: None,
        };
        let vitals = |date: &str, weight: &str, sys: &str, dia: &str| {
            vec![
                v("vs_date", 1, date),
                v("weight", 1, weight),
                v("height", 1, "172"),
                v("sys", 1, sys),
                v("dia", 1, dia),
                v("abnormal", 1, "no"),
                v("ecg_time", 1, "09:15"),
                v("hr", 1, "68"),
            ]
        };
        // (site user, site, sex, birth date, enrolled, what to enter)
        let plan: [(&str, &str, &str, &str, &str, u8); 8] = [
            ("demo_crc", "S_DEMOA", "f", "1961-03-14", "2026-02-02", 3),
            ("demo_crc", "S_DEMOA", "m", "1958-11-30", "2026-02-09", 2),
            ("demo_crc", "S_DEMOA", "f", "1970-07-21", "2026-03-01", 1),
            ("demo_crc", "S_DEMOA", "m", "1949-01-05", "2026-03-15", 4),
            ("demo_crc", "S_DEMOA", "f", "1982-05-19", "2026-04-02", 5),
            ("demo_crc_b", "S_DEMOB", "m", "1966-09-09", "2026-02-20", 3),
            ("demo_crc_b", "S_DEMOB", "f", "1975-12-12", "2026-03-03", 2),
            ("demo_crc_b", "S_DEMOB", "m", "1990-06-30", "2026-04-10", 0),
        ];
        // The demo rules run on every save below: they schedule follow-ups, copy baseline
        // measurements into adverse event assessments, and raise notes.
        let dm = self.cli_principal(Some("demo_dm")).await?;
        self.import_rules(&dm, "S_DEMO", "demo_rules.xml", DEMO_RULES, false).await?;
        let mut n = 0;
        for (user, site, sex, dob, enrolled, stage) in plan {
            let who = self.cli_principal(Some(user)).await?;
            let p = self
                .enrol(
                    &who,
                    "S_DEMO",
                    EnrolInput {
                        site: site.to_owned(),
                        sex: Some(sex.to_owned()),
                        date_of_birth: Some(dob.to_owned()),
                        enrolled_on: enrolled.to_owned(),
                        ..EnrolInput::default()
                    },
                )
                .await?;
            n += 1;
            if stage == 0 {
                continue;
            }
            let schedule = |event: &str, start: &str| ScheduleInput {
                event: event.to_owned(),
                start: Some(start.to_owned()),
                end: None,
                location: None,
            };
            self.schedule_event(&who, "S_DEMO", &p.label, schedule("SE_BASELINE", enrolled)).await?;
            if stage == 1 {
                continue;
            }
            let all = vitals(enrolled, "71.5", "128", "82");
            let values = if stage == 2 { all[..3].to_vec() } else { all };
            let saved = self
                .save_form(
                    &who,
                    "S_DEMO",
                    &p.label,
                    "SE_BASELINE",
                    1,
                    "F_VITAL_SIGNS",
                    SaveFormInput {
                        expected_version: None,
                        form_version: None,
                        values,
                        remove_rows: vec![],
                        notes: vec![],
                    },
                )
                .await?;
            if stage >= 3 {
                let input = CompleteFormInput { expected_version: saved.form.version, password: None };
                self.complete_form(&who, "S_DEMO", &p.label, "SE_BASELINE", 1, "F_VITAL_SIGNS", input).await?;
                // The follow-up was scheduled by rule R_VS_SCHEDULE_FOLLOWUP (visit date + 28 days).
            }
            if stage == 4 {
                self.schedule_event(&who, "S_DEMO", &p.label, schedule("SE_ADVERSEEVENTS", "2026-05-04")).await?;
                // Weight and height are left empty: rule R_AE_WEIGHT_EMPTY copies them from
                // baseline. The second event is serious: R_AE_SERIOUS opens a note and e-mails.
                let values = vec![
                    v("AE_ANY", 1, "1"),
                    v("AE_TERM", 1, "Headache"),
                    v("AE_START", 1, "2026-05-02"),
                    v("AE_SEV", 1, "1"),
                    v("AE_SER", 1, "0"),
                    v("AE_TERM", 2, "Syncope"),
                    v("AE_START", 2, "2026-05-03"),
                    v("AE_SEV", 2, "3"),
                    v("AE_SER", 2, "1"),
                ];
                let notes = vec![];
                self.save_form(
                    &who,
                    "S_DEMO",
                    &p.label,
                    "SE_ADVERSEEVENTS",
                    1,
                    "F_ADVERSEEVENT",
                    SaveFormInput { expected_version: None, form_version: None, values, remove_rows: vec![], notes },
                )
                .await?;
            }
            if stage == 5 {
                let dm = self.cli_principal(Some("demo_dm")).await?;
                self.remove_participant(&dm, "S_DEMO", &p.label, Some("Withdrew consent before any visit".into()))
                    .await?;
            }
        }
        Ok(n)
    }
}

/// The demo study's rules, shipped in the repository (`demo/rules/`).
pub const DEMO_RULES: &[u8] = include_bytes!("../../../demo/rules/demo_rules.xml");

/// The demo study's forms, shipped in the repository (`demo/forms/`).
pub const DEMO_FORMS: &[(&str, &[u8])] = &[
    ("vital_signs.xlsx", include_bytes!("../../../demo/forms/vital_signs.xlsx")),
    ("adverse_events_crf.xls", include_bytes!("../../../demo/forms/adverse_events_crf.xls")),
];

/// The OIDs of [`DEMO_FORMS`], in the same order.
pub const DEMO_FORM_OIDS: &[&str] = &["F_VITAL_SIGNS", "F_ADVERSEEVENT"];
