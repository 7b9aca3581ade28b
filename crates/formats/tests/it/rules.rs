//! OpenClinica 3 rules files: the demo rules (`demo/rules/demo_rules.xml`) load and check
//! against the demo design built from the demo forms; files round-trip through the writer; and
//! every kind of mistake gives one precise diagnostic (line and column for the file's structure;
//! assignment, rule and path for the design).

use std::path::PathBuf;

use casebook_domain::design::{EventDef, EventForm, EventType, FormDef, StudyDesign};
use casebook_domain::expr::EventProperty;
use casebook_domain::oid::Oid;
use casebook_domain::rules::{
    ActionKind, EventDestination, InsertDestination, InsertValue, RuleAction, RuleAssignment, RuleDef, RuleRef,
    RuleSet, RunFlags, RunOnStatus, RunPhase, TimeOfDay,
};
use casebook_formats::diagnostic::{Diagnostics, Location, Severity};
use casebook_formats::rules::{read_rules, summary, validate_rules, write_rules};
use casebook_formats::workbook::Workbook;
use casebook_formats::xlsform::{Context, ImportedForm};
use casebook_formats::{occrf, xlsform};

fn oid(s: &str) -> Oid {
    Oid::parse(s).unwrap()
}

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

fn form(imported: ImportedForm) -> FormDef {
    FormDef { oid: imported.form_oid, name: imported.form_name, description: None, versions: vec![imported.version] }
}

fn event(oid_text: &str, name: &str, event_type: EventType, repeating: bool, form: &str) -> EventDef {
    EventDef {
        oid: oid(oid_text),
        name: name.into(),
        description: None,
        category: None,
        event_type,
        repeating,
        forms: vec![EventForm::new(oid(form))],
    }
}

/// The demo study's design, from the demo forms as the demo seeds it: Baseline and Follow-up
/// (repeating) with the vital signs, Adverse events (common, repeating) with the AE CRF.
fn demo_design() -> StudyDesign {
    let workbook =
        |f: &str| Workbook::from_bytes(&std::fs::read(repo_file(&format!("demo/forms/{f}"))).unwrap()).unwrap();
    let (vitals, d) = xlsform::import(&workbook("vital_signs.xlsx"), Context::default());
    assert!(!d.has_errors(), "{:?}", d.0);
    let (ae, d) = occrf::import(&workbook("adverse_events_crf.xlsx"), Context::default());
    assert!(!d.has_errors(), "{:?}", d.0);
    let design = StudyDesign {
        events: vec![
            event("SE_BASELINE", "Baseline", EventType::Scheduled, false, "F_VITAL_SIGNS"),
            event("SE_FOLLOWUP", "Follow-up", EventType::Scheduled, true, "F_VITAL_SIGNS"),
            event("SE_ADVERSEEVENTS", "Adverse events", EventType::Common, true, "F_ADVERSEEVENT"),
        ],
        forms: vec![form(vitals.unwrap()), form(ae.unwrap())],
    };
    // The OIDs the demo rules rely on.
    let oids = design.oids();
    for expected in [
        "F_VITAL_SIGNS",
        "F_VITAL_SIGNS_V10",
        "IG_VITAL_VS",
        "IG_VITAL_ECG",
        "I_VITAL_VS_DATE",
        "I_VITAL_WEIGHT",
        "I_VITAL_HEIGHT",
        "I_VITAL_SYS",
        "I_VITAL_DIA",
        "I_VITAL_ABNORMAL",
        "I_VITAL_HR",
        "F_ADVERSEEVENT",
        "IG_ADVER_ASSESS",
        "IG_ADVER_AE",
        "I_ADVER_WEIGHT",
        "I_ADVER_HOSP",
        "I_ADVER_HOSP_DAYS",
        "I_ADVER_AE_SER",
    ] {
        assert!(oids.contains(expected), "the demo design has no {expected}");
    }
    design
}

fn demo_rules_xml() -> Vec<u8> {
    std::fs::read(repo_file("demo/rules/demo_rules.xml")).unwrap()
}

/// Each diagnostic as `line:column severity: message` (or `severity: message` without a place).
fn render(d: &Diagnostics) -> Vec<String> {
    d.0.iter()
        .map(|x| {
            let severity = if x.severity == Severity::Error { "error" } else { "warning" };
            match x.location {
                Location::Xml { line, column } => format!("{line}:{column} {severity}: {}", x.message),
                _ => format!("{severity}: {}", x.message),
            }
        })
        .collect()
}

fn read_clean(xml: &[u8]) -> RuleSet {
    let (set, d) = read_rules(xml);
    assert!(d.0.is_empty(), "unexpected diagnostics: {:#?}", render(&d));
    set.unwrap()
}

// ---------------------------------------------------------------------------------------------
// The demo rules.

#[test]
fn demo_rules_load_and_validate_against_the_demo_design() {
    let set = read_clean(&demo_rules_xml());
    assert_eq!(set.assignments.len(), 7);
    assert_eq!(set.rule_defs.len(), 7);
    let report = validate_rules(&set, &demo_design());
    assert!(report.0.is_empty(), "the demo rules should check cleanly: {:#?}", render(&report));

    // The follow-up is scheduled 28 days after the baseline visit date, while not scheduled.
    let schedule = &set.assignments[3];
    assert_eq!(schedule.target, "SE_BASELINE.F_VITAL_SIGNS.IG_VITAL_VS.I_VITAL_VS_DATE");
    let action = &schedule.rule_refs[0].actions[0];
    assert_eq!(
        action.kind,
        ActionKind::Event {
            event_oid: oid("SE_FOLLOWUP"),
            run_on_status: RunOnStatus { scheduled: false, ..RunOnStatus::default() },
            destinations: vec![EventDestination {
                property: EventProperty::StartDate,
                value_expression: "I_VITAL_VS_DATE + 28".into(),
            }],
        }
    );
    assert_eq!(action.run, RunFlags::ALL);
    // A missing <Run> means every phase; a written one is read as written.
    let tachycardia = &set.assignments[2].rule_refs[0].actions[0];
    assert_eq!(tachycardia.run, RunFlags::ALL);
    let weight = &set.assignments[1].rule_refs[0].actions[0];
    assert_eq!(weight.run, RunFlags::ALL.with(RunPhase::DoubleDataEntry, false));
    assert_eq!(set.rule("R_VS_DIA_GE_SYS").unwrap().expression, "I_VITAL_DIA gte I_VITAL_SYS");
}

#[test]
fn demo_rules_preview_lists_what_each_rule_does_in_execution_order() {
    let previews = summary(&read_clean(&demo_rules_xml()));
    assert_eq!(previews.len(), 7);
    let serious = previews.iter().find(|p| p.rule_oid == "R_AE_SERIOUS").unwrap();
    assert_eq!(serious.name, "Serious adverse event");
    assert_eq!(serious.target, "SE_ADVERSEEVENTS.F_ADVERSEEVENT.IG_ADVER_AE[ALL].I_ADVER_AE_SER");
    assert_eq!(
        serious.actions,
        [
            "Email when true: to safety@demo.casebook.invalid: \"A serious adverse event was entered in the Casebook demo study.\"",
            "DiscrepancyNote when true: \"Serious adverse event: complete the SAE report within 24 hours.\"",
        ]
    );
    assert_eq!(
        serious.runs_on,
        ["administrative editing", "initial data entry", "double data entry", "data import", "batch run"]
    );
    let hospital = previews.iter().find(|p| p.rule_oid == "R_AE_HOSPITALISED").unwrap();
    assert_eq!(
        hospital.actions,
        [
            "Show when true: I_ADVER_HOSP_DAYS (\"How many days was the participant in hospital?\")",
            "Hide when false: I_ADVER_HOSP_DAYS",
        ]
    );
    assert_eq!(hospital.runs_on, ["administrative editing", "initial data entry", "double data entry"]);
    let follow_up = previews.iter().find(|p| p.rule_oid == "R_VS_SCHEDULE_FOLLOWUP").unwrap();
    assert_eq!(
        follow_up.actions,
        ["Event when true: SE_FOLLOWUP STARTDATE = I_VITAL_VS_DATE + 28 (while the event is not_scheduled)"]
    );
    let insert = previews.iter().find(|p| p.rule_oid == "R_AE_WEIGHT_EMPTY").unwrap();
    assert_eq!(
        insert.actions,
        ["Insert when true: I_ADVER_WEIGHT = SE_BASELINE.F_VITAL_SIGNS.IG_VITAL_VS.I_VITAL_WEIGHT; \
             IG_ADVER_ASSESS.I_ADVER_HEIGHT = SE_BASELINE.F_VITAL_SIGNS.IG_VITAL_VS.I_VITAL_HEIGHT"]
    );
    assert_eq!(insert.runs_on, ["initial data entry"]);
}

#[test]
fn demo_rules_write_and_read_back_unchanged() {
    let demo = read_clean(&demo_rules_xml());
    let written = write_rules(&demo);
    assert_eq!(read_clean(written.as_bytes()), demo);
}

// ---------------------------------------------------------------------------------------------
// Writing.

/// A set using every feature the writer has to carry, with text that needs escaping.
fn every_feature() -> RuleSet {
    let action = |when: bool, kind: ActionKind| RuleAction { if_expression_evaluates: when, run: RunFlags::ALL, kind };
    RuleSet {
        rule_defs: vec![
            RuleDef {
                oid: oid("R_A"),
                name: "Weight & height <check>".into(),
                description: Some("Says \"hello\" & 'bye'\non two lines".into()),
                expression: "I_VITAL_WEIGHT gt 100 and I_VITAL_ABNORMAL ne \"yes\"".into(),
            },
            RuleDef { oid: oid("R_B"), name: "B".into(), description: None, expression: "I_VITAL_SYS gt 180".into() },
        ],
        assignments: vec![
            RuleAssignment {
                target: "SE_BASELINE.F_VITAL_SIGNS.IG_VITAL_VS.I_VITAL_WEIGHT".into(),
                run_on_schedule: TimeOfDay::parse("02:30"),
                rule_refs: vec![RuleRef {
                    rule_oid: oid("R_A"),
                    actions: vec![
                        RuleAction {
                            if_expression_evaluates: false,
                            run: RunFlags::NONE.with(RunPhase::Batch, true),
                            kind: ActionKind::DiscrepancyNote { message: "Weight > 100 & not abnormal?".into() },
                        },
                        action(true, ActionKind::Email { message: "m".into(), to: "a@b.invalid, c@d.invalid".into() }),
                        action(
                            true,
                            ActionKind::Notification {
                                to: "${participant}".into(),
                                subject: Some("Visit".into()),
                                message: "Please come".into(),
                            },
                        ),
                        action(true, ActionKind::Notification { to: "x".into(), subject: None, message: "y".into() }),
                        action(
                            true,
                            ActionKind::Show {
                                message: String::new(),
                                destinations: vec!["I_VITAL_ABNORMAL_DESC".into()],
                            },
                        ),
                        action(
                            false,
                            ActionKind::Hide {
                                message: "Hidden".into(),
                                destinations: vec!["I_VITAL_ABNORMAL_DESC".into(), "IG_VITAL_VS.I_VITAL_BMI".into()],
                            },
                        ),
                        action(
                            true,
                            ActionKind::Insert {
                                destinations: vec![
                                    InsertDestination {
                                        oid_path: "I_VITAL_ABNORMAL".into(),
                                        value: InsertValue::Value("yes".into()),
                                    },
                                    InsertDestination {
                                        oid_path: "I_VITAL_ABNORMAL_DESC".into(),
                                        value: InsertValue::Value(String::new()),
                                    },
                                    InsertDestination {
                                        oid_path: "I_VITAL_HEIGHT".into(),
                                        value: InsertValue::Expression("I_VITAL_WEIGHT * 2".into()),
                                    },
                                ],
                            },
                        ),
                        action(
                            true,
                            ActionKind::Event {
                                event_oid: oid("SE_FOLLOWUP"),
                                run_on_status: RunOnStatus {
                                    completed: true,
                                    not_scheduled: false,
                                    ..RunOnStatus::default()
                                },
                                destinations: vec![
                                    EventDestination {
                                        property: EventProperty::StartDate,
                                        value_expression: "_CURRENT_DATE + 7".into(),
                                    },
                                    EventDestination {
                                        property: EventProperty::Status,
                                        value_expression: "scheduled".into(),
                                    },
                                ],
                            },
                        ),
                    ],
                }],
            },
            RuleAssignment {
                target: "SE_BASELINE.STARTDATE".into(),
                run_on_schedule: None,
                rule_refs: vec![RuleRef {
                    rule_oid: oid("R_B"),
                    actions: vec![action(true, ActionKind::DiscrepancyNote { message: "n".into() })],
                }],
            },
        ],
    }
}

#[test]
fn written_rules_read_back_to_the_same_set() {
    let set = every_feature();
    let xml = write_rules(&set);
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<RuleImport>"), "{xml}");
    assert!(xml.contains("<Run AdministrativeDataEntry=\"false\" InitialDataEntry=\"false\" DoubleDataEntry=\"false\" ImportDataEntry=\"false\" Batch=\"true\"/>"), "{xml}");
    assert!(
        xml.contains("<Target Context=\"OC_RULES_V1\">SE_BASELINE.F_VITAL_SIGNS.IG_VITAL_VS.I_VITAL_WEIGHT</Target>"),
        "{xml}"
    );
    assert_eq!(read_clean(xml.as_bytes()), set);

    assert_eq!(write_rules(&read_clean(xml.as_bytes())), xml, "writing is deterministic");
}

#[test]
fn rules_embedded_in_odm_read_as_a_rule_import() {
    let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3" xmlns:OpenClinica="http://www.openclinica.org/ns/odm_ext_v130/v3.1"
     xmlns:OpenClinicaRules="http://www.openclinica.org/ns/rules/v3.1" FileOID="F" FileType="Snapshot">
  <Study OID="S_DEMO">
    <MetaDataVersion OID="v1" Name="v1">
      <OpenClinicaRules:Rules>
        <OpenClinicaRules:RuleAssignment>
          <OpenClinicaRules:Target Context="OC_RULES_V1">I_VITAL_SYS</OpenClinicaRules:Target>
          <OpenClinicaRules:RuleRef OID="R_B">
            <OpenClinicaRules:DiscrepancyNoteAction IfExpressionEvaluates="true">
              <OpenClinicaRules:Message>n</OpenClinicaRules:Message>
            </OpenClinicaRules:DiscrepancyNoteAction>
          </OpenClinicaRules:RuleRef>
        </OpenClinicaRules:RuleAssignment>
        <OpenClinicaRules:RuleDef OID="R_B" Name="B">
          <OpenClinicaRules:Expression>I_VITAL_SYS gt 180</OpenClinicaRules:Expression>
        </OpenClinicaRules:RuleDef>
      </OpenClinicaRules:Rules>
    </MetaDataVersion>
  </Study>
  <ClinicalData StudyOID="S_DEMO" MetaDataVersionOID="v1"><SubjectData SubjectKey="SS_1"/></ClinicalData>
</ODM>"#;
    let plain = r#"<RuleImport xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="rules.xsd">
  <RuleAssignment><Target>I_VITAL_SYS</Target>
    <RuleRef OID="R_B"><DiscrepancyNoteAction IfExpressionEvaluates="1"><Message>n</Message></DiscrepancyNoteAction></RuleRef>
  </RuleAssignment>
  <RuleDef OID="R_B" Name="B"><Expression>I_VITAL_SYS gt 180</Expression></RuleDef>
</RuleImport>"#;
    assert_eq!(read_clean(xml.as_bytes()), read_clean(plain.as_bytes()));
    let (set, d) = read_rules(br#"<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3"><Study OID="S"/></ODM>"#);
    assert!(set.is_none());
    assert_eq!(
        render(&d),
        ["1:1 error: This ODM file holds no OpenClinica rules: no <Rules> or <RuleImport> element in the rules \
          namespace (http://www.openclinica.org/ns/rules/v3.1)."]
    );
}

// ---------------------------------------------------------------------------------------------
// Mistakes in the file.

/// A one-rule file: the assignment's inside (after the target) and the rule's expression.
fn file(target: &str, rule_ref: &str, expression: &str) -> String {
    format!(
        "<RuleImport>\n<RuleAssignment>\n<Target>{target}</Target>\n{rule_ref}\n</RuleAssignment>\n\
         <RuleDef OID=\"R_1\" Name=\"One\">\n<Expression>{expression}</Expression>\n</RuleDef>\n</RuleImport>\n"
    )
}

const NOTE: &str = r#"<RuleRef OID="R_1"><DiscrepancyNoteAction IfExpressionEvaluates="true"><Message>m</Message></DiscrepancyNoteAction></RuleRef>"#;

#[test]
fn mistakes_in_the_file_are_reported_at_their_line_and_column() {
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            "<RuleImport>\n  <RuleDef OID=\"R_1\">\n</RuleImport>".into(),
            vec!["3:1 error: The XML is not well formed: ill-formed document: expected `</RuleDef>`, but `</RuleImport>` was found."],
        ),
        (
            "<?xml version=\"1.0\"?>\n<!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>\n<RuleImport>&x;</RuleImport>".into(),
            vec!["2:1 error: The file has a <!DOCTYPE> declaration. Document type definitions and entity declarations \
                  are refused (they can read local files or expand without limit); rules files need none."],
        ),
        (
            file("I_VITAL_SYS", NOTE, "I_VITAL_SYS gt &unknown;"),
            vec!["7:28 error: The XML is not well formed: the entity '&unknown;' is not defined (only &amp; &lt; &gt; \
                  &quot; &apos; and character references are allowed)."],
        ),
        ("<Rules><RuleDef/></Rules><x/>".into(), vec!["1:26 error: The XML is not well formed: there is more than one root element."]),
        ("<RuleSet/>".into(), vec!["1:1 error: The file is not an OpenClinica rules file: its root element is <RuleSet>, not <RuleImport> (or an ODM file with rules)."]),
        (
            file("I_VITAL_SYS", &NOTE.replace("R_1", "R_2"), "I_VITAL_SYS gt 1"),
            vec!["4:1 error: RuleRef R_2 refers to no RuleDef in this file. Did you mean R_1?", "6:1 warning: RuleDef R_1 is not used by any RuleAssignment."],
        ),
        (
            file("I_VITAL_SYS", NOTE, "I_VITAL_SYS gt 1").replace("</RuleImport>", "<RuleDef OID=\"R_1\" Name=\"Again\"><Expression>I_A eq 1</Expression></RuleDef>\n</RuleImport>"),
            vec!["9:1 error: RuleDef R_1 is defined twice (first at line 6, column 1)."],
        ),
        (
            file("I_VITAL_SYS", &NOTE.replace("IfExpressionEvaluates=\"true\"", "IfExpressionEvaluates=\"yes\""), "I_VITAL_SYS gt 1"),
            vec!["4:20 error: IfExpressionEvaluates=\"yes\" in <DiscrepancyNoteAction> is not a boolean: write true or false."],
        ),
        (
            file("I_VITAL_SYS", &NOTE.replace(" IfExpressionEvaluates=\"true\"", ""), "I_VITAL_SYS gt 1"),
            vec!["4:20 error: <DiscrepancyNoteAction> has no IfExpressionEvaluates attribute; it is required (true or false)."],
        ),
        (
            file(
                "I_VITAL_SYS",
                &NOTE.replace("<Message>", "<Run AdministrativeDataEntry=\"true\" InitialDataEntry=\"true\" DoubleDataEntry=\"true\" ImportDataEntry=\"true\"/><Message>"),
                "I_VITAL_SYS gt 1",
            ),
            vec!["4:72 error: <Run> has no Batch attribute; it is required (true or false)."],
        ),
        (
            file("I_VITAL_SYS", &format!("<RunOnSchedule Time=\"25:00\"/>{NOTE}"), "I_VITAL_SYS gt 1"),
            vec!["4:1 error: Time=\"25:00\" of <RunOnSchedule> is not a time of day: write HH:MM, 00:00 to 23:59."],
        ),
        (
            file("I_VITAL_SYS", &NOTE.replace("<Message>", "<Mesage>").replace("</Message>", "</Mesage>"), "I_VITAL_SYS gt 1"),
            vec![
                "4:20 error: <DiscrepancyNoteAction> has no <Message>; it is required.",
                "4:72 error: <Mesage> is not part of <DiscrepancyNoteAction>; expected: Run, Message. Did you mean Message?",
            ],
        ),
        (
            file("I_VITAL_SYS", &NOTE.replace("RuleRef OID", "RuleRef Oid"), "I_VITAL_SYS gt 1"),
            vec!["4:1 error: <RuleRef> has an unknown attribute Oid; expected: OID. Did you mean OID?", "4:1 error: <RuleRef> has no OID attribute; it is required.", "6:1 warning: RuleDef R_1 is not used by any RuleAssignment."],
        ),
        (
            file("I_VITAL_SYS", NOTE, "I_VITAL_SYS gt"),
            vec!["7:27 error: <Expression> \"I_VITAL_SYS gt\": the expression ends too early at column 15: expected a value."],
        ),
        (
            file("I_VITAL_SYS", NOTE, "IG_VITAL_ECG[ALL].I_VITAL_HR gt 100"),
            vec!["7:13 error: <Expression> \"IG_VITAL_ECG[ALL].I_VITAL_HR gt 100\": IG_VITAL_ECG[ALL].I_VITAL_HR uses [ALL], \
                  which is only allowed in a rule target; select one row with [1], [2], … or [END]."],
        ),
        (
            file("I_VITAL_SYS gt 1", NOTE, "I_VITAL_SYS gt 1"),
            vec!["3:9 error: <Target> \"I_VITAL_SYS gt 1\": a rule target is one OID path, e.g. \
                  SE_VISIT.F_VITALS.IG_VITALS_BP[ALL].I_VITALS_SYS."],
        ),
        (
            file("I_VITAL_SYS", &NOTE.replace("DiscrepancyNoteAction", "RandomizeAction").replace("<Message>m</Message>", "<DestinationProperty OID=\"I_ARM\"/>"), "I_VITAL_SYS gt 1"),
            vec!["4:20 error: <RandomizeAction> is not supported: Casebook has no randomisation module, so the participant \
                  would not be randomised. Remove the action and randomise outside Casebook."],
        ),
        (
            file(
                "I_VITAL_SYS",
                r#"<RuleRef OID="R_1"><InsertAction IfExpressionEvaluates="true"><DestinationProperty OID="I_VITAL_DIA" Value="1"><ValueExpression>2</ValueExpression></DestinationProperty></InsertAction></RuleRef>"#,
                "I_VITAL_SYS gt 1",
            ),
            vec!["4:63 error: <DestinationProperty> has both a Value and a <ValueExpression>; give one."],
        ),
        (
            file(
                "I_VITAL_SYS",
                r#"<RuleRef OID="R_1"><ShowAction IfExpressionEvaluates="true"><DestinationProperty OID="IG_VITAL_ECG[ALL].I_VITAL_HR"/></ShowAction></RuleRef>"#,
                "I_VITAL_SYS gt 1",
            ),
            vec!["4:61 error: ShowAction destination OID=\"IG_VITAL_ECG[ALL].I_VITAL_HR\": [ALL] is only allowed in a rule \
                  target; a destination is the target's row (no selector) or one row ([1], [END])."],
        ),
        (
            file(
                "I_VITAL_SYS",
                r#"<RuleRef OID="R_1"><EventAction IfExpressionEvaluates="true" OID="SE_FOLLOWUP"><EventDestination Property="ENDDATE"><ValueExpression>_CURRENT_DATE</ValueExpression></EventDestination></EventAction></RuleRef>"#,
                "I_VITAL_SYS gt 1",
            ),
            vec!["4:80 error: Property=\"ENDDATE\" of <EventDestination> is not STARTDATE or STATUS."],
        ),
        (
            file("I_VITAL_SYS", &NOTE.replace("<Message>m</Message>", "<Message>m</Message>text"), "I_VITAL_SYS gt 1"),
            vec!["4:92 error: <DiscrepancyNoteAction> holds text where only elements belong."],
        ),
    ];
    let mut wrong = Vec::new();
    for (xml, expected) in cases {
        let (set, d) = read_rules(xml.as_bytes());
        if render(&d) != expected {
            wrong.push(format!("{xml}\n  expected {expected:#?}\n  got {:#?}", render(&d)));
        }
        assert_eq!(set.is_none(), d.has_errors());
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

#[test]
fn an_expression_written_with_references_is_located_at_its_element() {
    // `&amp;` shifts offsets in the file, so the message says where in the expression.
    let xml = file("I_VITAL_SYS", NOTE, "I_VITAL_SYS gt \"&amp;\" and");
    let (_, d) = read_rules(xml.as_bytes());
    assert_eq!(
        render(&d),
        [
            "7:1 error: <Expression> \"I_VITAL_SYS gt \"&\" and\": the expression ends too early at column 23: expected a \
          value (at character 23)."
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Mistakes against the design.

/// Validation errors and warnings of a one-rule file that reads cleanly.
fn check_against_demo(target: &str, rule_ref: &str, expression: &str) -> Vec<String> {
    let set = read_clean(file(target, rule_ref, expression).as_bytes());
    render(&validate_rules(&set, &demo_design()))
}

fn insert(destination: &str, value: &str) -> String {
    format!(
        r#"<RuleRef OID="R_1"><InsertAction IfExpressionEvaluates="true"><DestinationProperty OID="{destination}" {value}</DestinationProperty></InsertAction></RuleRef>"#
    )
}

fn event_action(event: &str, property: &str, value: &str) -> String {
    format!(
        r#"<RuleRef OID="R_1"><EventAction IfExpressionEvaluates="true" OID="{event}"><EventDestination Property="{property}"><ValueExpression>{value}</ValueExpression></EventDestination></EventAction></RuleRef>"#
    )
}

#[test]
fn mistakes_against_the_design_name_the_assignment_rule_and_path() {
    const VS: &str = "SE_BASELINE.F_VITAL_SIGNS.IG_VITAL_VS";
    let sys = format!("{VS}.I_VITAL_SYS");
    let here = format!("RuleAssignment 1 (target {sys}), rule R_1");
    let cases: Vec<(String, String, String, Vec<String>)> = vec![
        // Paths that resolve, including a form version and shortest suffixes.
        (sys.clone(), NOTE.into(), "I_VITAL_DIA gte I_VITAL_SYS".into(), vec![]),
        ("F_VITAL_SIGNS_V10.IG_VITAL_VS.I_VITAL_SYS".into(), NOTE.into(), "IG_VITAL_VS.I_VITAL_DIA gt 1".into(), vec![]),
        (sys.clone(), NOTE.into(), "IG_VITAL_ECG[END].I_VITAL_HR gt I_VITAL_SYS".into(), vec![]),
        (sys.clone(), NOTE.into(), "SE_BASELINE.STARTDATE lt _CURRENT_DATE".into(), vec![]),
        // The target's own row of a repeating group needs no selector; another event's does.
        (
            "F_VITAL_SIGNS.IG_VITAL_ECG[ALL].I_VITAL_HR".into(),
            NOTE.into(),
            "I_VITAL_HR gt 100 and I_VITAL_ECG_TIME lt \"12:00\"".into(),
            vec![],
        ),
        (
            "SE_BASELINE.F_VITAL_SIGNS.IG_VITAL_ECG[ALL].I_VITAL_HR".into(),
            NOTE.into(),
            "SE_FOLLOWUP[1].F_VITAL_SIGNS.IG_VITAL_ECG.I_VITAL_HR gt I_VITAL_HR".into(),
            vec![
                "error: RuleAssignment 1 (target SE_BASELINE.F_VITAL_SIGNS.IG_VITAL_ECG[ALL].I_VITAL_HR), rule R_1: \
                 Expression \"SE_FOLLOWUP[1].F_VITAL_SIGNS.IG_VITAL_ECG.I_VITAL_HR gt I_VITAL_HR\": \
                 SE_FOLLOWUP[1].F_VITAL_SIGNS.IG_VITAL_ECG.I_VITAL_HR has a value for every repeated row: select one \
                 row with [1], [2], … or [END] (at character 1)"
                    .into(),
            ],
        ),
        (
            "F_VITAL_SIGNS.IG_VITAL_VS.I_VITAL_WEIGTH".into(),
            NOTE.into(),
            "I_VITAL_SYS gt 1".into(),
            vec![
                "error: RuleAssignment 1 (target F_VITAL_SIGNS.IG_VITAL_VS.I_VITAL_WEIGTH): Target \
                 F_VITAL_SIGNS.IG_VITAL_VS.I_VITAL_WEIGTH: there is no item I_VITAL_WEIGTH (did you mean I_VITAL_WEIGHT?)"
                    .into(),
            ],
        ),
        (
            "SE_ADVERSEEVENTS.F_VITAL_SIGNS.IG_VITAL_VS.I_VITAL_SYS".into(),
            NOTE.into(),
            "I_VITAL_SYS gt 1".into(),
            vec![
                "error: RuleAssignment 1 (target SE_ADVERSEEVENTS.F_VITAL_SIGNS.IG_VITAL_VS.I_VITAL_SYS): Target \
                 SE_ADVERSEEVENTS.F_VITAL_SIGNS.IG_VITAL_VS.I_VITAL_SYS: the event SE_ADVERSEEVENTS does not use the \
                 form of I_VITAL_SYS"
                    .into(),
            ],
        ),
        (
            "SE_BASELINE[2].F_VITAL_SIGNS.IG_VITAL_VS.I_VITAL_SYS".into(),
            NOTE.into(),
            "I_VITAL_SYS gt 1".into(),
            vec![
                "error: RuleAssignment 1 (target SE_BASELINE[2].F_VITAL_SIGNS.IG_VITAL_VS.I_VITAL_SYS): Target \
                 SE_BASELINE[2].F_VITAL_SIGNS.IG_VITAL_VS.I_VITAL_SYS: the event SE_BASELINE does not repeat, so it has \
                 no occurrence 2"
                    .into(),
            ],
        ),
        (
            sys.clone(),
            NOTE.into(),
            "I_VITAL_VS_DATE lt \"soon\"".into(),
            vec![format!(
                "error: {here}: Expression \"I_VITAL_VS_DATE lt \"soon\"\": I_VITAL_VS_DATE is a date but 'soon' is not \
                 (write it as 'YYYY-MM-DD') (at character 20)"
            )],
        ),
        (
            sys.clone(),
            NOTE.into(),
            "I_VITAL_SYS + 1".into(),
            vec![format!(
                "error: {here}: Expression \"I_VITAL_SYS + 1\": this condition gives an integer, not true or false (at \
                 character 1)"
            )],
        ),
        (
            sys.clone(),
            NOTE.into(),
            "I_VITAL_HR gt 100".into(),
            vec![format!(
                "error: {here}: Expression \"I_VITAL_HR gt 100\": I_VITAL_HR has a value for every repeated row: select \
                 one row with [1], [2], … or [END] (at character 1)"
            )],
        ),
        (
            sys.clone(),
            NOTE.into(),
            "I_ADVER_HOSP eq 1".into(),
            vec![format!(
                "error: {here}: Expression \"I_ADVER_HOSP eq 1\": I_ADVER_HOSP is in the form F_ADVERSEEVENT, which the \
                 target's event (SE_BASELINE) does not use; name the event, e.g. \
                 SE_ADVERSEEVENTS.F_ADVERSEEVENT.IG_ADVER_ASSESS.I_ADVER_HOSP (at character 1)"
            )],
        ),
        (
            sys.clone(),
            NOTE.into(),
            "SE_FOLLOWUP.F_VITAL_SIGNS.IG_VITAL_VS.I_VITAL_SYS gt I_VITAL_SYS".into(),
            vec![format!(
                "warning: {here}: Expression \"SE_FOLLOWUP.F_VITAL_SIGNS.IG_VITAL_VS.I_VITAL_SYS gt I_VITAL_SYS\": \
                 SE_FOLLOWUP.F_VITAL_SIGNS.IG_VITAL_VS.I_VITAL_SYS: the event SE_FOLLOWUP repeats and no occurrence is \
                 selected; write SE_FOLLOWUP[1], … or SE_FOLLOWUP[END]"
            )],
        ),
        (
            sys.clone(),
            NOTE.into(),
            "SE_FOLLOWUP[END].F_VITAL_SIGNS.IG_VITAL_VS.I_VITAL_SYS gt I_VITAL_SYS or I_VITAL_DIA gt 1 and I_VITAL_SYS gt 1"
                .into(),
            vec![format!(
                "warning: {here}: Expression \"SE_FOLLOWUP[END].F_VITAL_SIGNS.IG_VITAL_VS.I_VITAL_SYS gt I_VITAL_SYS or \
                 I_VITAL_DIA gt 1 and I_VITAL_SYS gt 1\": 'or' and 'and' have the same precedence in OpenClinica and \
                 are read left to right, so this reads as (SE_FOLLOWUP[END].F_VITAL_SIGNS.IG_VITAL_VS.I_VITAL_SYS gt \
                 I_VITAL_SYS or I_VITAL_DIA gt 1) and …; add parentheses to say which is meant (at character 1)"
            )],
        ),
        (
            sys.clone(),
            insert("I_VITAL_DIA", "><ValueExpression>I_VITAL_VS_DATE</ValueExpression>"),
            "I_VITAL_SYS gt 1".into(),
            vec![format!(
                "error: {here}, InsertAction: ValueExpression \"I_VITAL_VS_DATE\" gives a date, which does not fit \
                 I_VITAL_DIA (INT)"
            )],
        ),
        (
            sys.clone(),
            insert("I_VITAL_ABNORMAL", "Value=\"maybe\">"),
            "I_VITAL_SYS gt 1".into(),
            vec![format!(
                "error: {here}, InsertAction: Value \"maybe\" does not fit I_VITAL_ABNORMAL (ST): 'maybe' is not one of \
                 the choices (yes, no)"
            )],
        ),
        (sys.clone(), insert("I_VITAL_ABNORMAL", "Value=\"yes\">"), "I_VITAL_SYS gt 1".into(), vec![]),
        (
            sys.clone(),
            insert("IG_VITAL_ECG.I_VITAL_HR", "Value=\"60\">"),
            "I_VITAL_SYS gt 1".into(),
            vec![format!(
                "error: {here}, InsertAction: destination IG_VITAL_ECG.I_VITAL_HR is in a repeating group other than the \
                 target's; select one row with [1], [2], … or [END]"
            )],
        ),
        (
            sys.clone(),
            insert("I_VITAL_BMI", "Value=\"20\">"),
            "I_VITAL_SYS gt 1".into(),
            vec![format!(
                "warning: {here}, InsertAction: I_VITAL_BMI is calculated, so the form's calculation replaces what the \
                 rule inserts"
            )],
        ),
        (
            sys.clone(),
            r#"<RuleRef OID="R_1"><ShowAction IfExpressionEvaluates="true"><DestinationProperty OID="I_VITAL_ABNORMAL_DESK"/></ShowAction></RuleRef>"#.into(),
            "I_VITAL_SYS gt 1".into(),
            vec![format!(
                "error: {here}, ShowAction: destination I_VITAL_ABNORMAL_DESK: there is no item I_VITAL_ABNORMAL_DESK \
                 (did you mean I_VITAL_ABNORMAL_DESC?)"
            )],
        ),
        (
            sys.clone(),
            event_action("SE_FOLLOWUPP", "STARTDATE", "I_VITAL_VS_DATE + 28"),
            "I_VITAL_SYS gt 1".into(),
            vec![format!("error: {here}, EventAction: there is no event SE_FOLLOWUPP (did you mean SE_FOLLOWUP?)")],
        ),
        (
            sys.clone(),
            event_action("SE_FOLLOWUP", "STARTDATE", "I_VITAL_SYS + 28"),
            "I_VITAL_SYS gt 1".into(),
            vec![format!(
                "error: {here}, EventAction: the STARTDATE expression \"I_VITAL_SYS + 28\" gives an integer, not a date"
            )],
        ),
        (sys.clone(), event_action("SE_FOLLOWUP", "STATUS", "scheduled"), "I_VITAL_SYS gt 1".into(), vec![]),
        (
            sys.clone(),
            event_action("SE_FOLLOWUP", "STATUS", "\"planned\""),
            "I_VITAL_SYS gt 1".into(),
            vec![format!(
                "error: {here}, EventAction: STATUS \"planned\" is not an event status; use one of not_scheduled, \
                 scheduled, data_entry_started, completed, stopped, skipped, locked, signed"
            )],
        ),
    ];
    for (target, rule_ref, expression, expected) in cases {
        assert_eq!(
            check_against_demo(&target, &rule_ref, &expression),
            expected,
            "{target} / {expression} / {rule_ref}"
        );
    }
}

#[test]
fn a_set_built_without_the_reader_is_checked_too() {
    // `[ALL]` in an expression and a RuleRef to no RuleDef, which the reader would refuse.
    let set = RuleSet {
        rule_defs: vec![RuleDef {
            oid: oid("R_1"),
            name: "One".into(),
            description: None,
            expression: "IG_VITAL_ECG[ALL].I_VITAL_HR gt 100".into(),
        }],
        assignments: vec![RuleAssignment {
            target: "I_VITAL_SYS".into(),
            run_on_schedule: None,
            rule_refs: vec![
                RuleRef { rule_oid: oid("R_1"), actions: vec![] },
                RuleRef {
                    rule_oid: oid("R_2"),
                    actions: vec![RuleAction {
                        if_expression_evaluates: true,
                        run: RunFlags::ALL,
                        kind: ActionKind::Randomize { destinations: vec!["I_VITAL_SYS".into()] },
                    }],
                },
            ],
        }],
    };
    assert_eq!(
        render(&validate_rules(&set, &demo_design())),
        [
            "error: RuleAssignment 1 (target I_VITAL_SYS), rule R_1: Expression \"IG_VITAL_ECG[ALL].I_VITAL_HR gt 100\": \
             IG_VITAL_ECG[ALL].I_VITAL_HR has a value for every repeated row ([ALL] is for rule targets): select one row \
             with [1], [2], … or [END] (at character 1)",
            "error: RuleAssignment 1 (target I_VITAL_SYS), rule R_2: there is no RuleDef R_2 in the rules.",
            "error: RuleAssignment 1 (target I_VITAL_SYS), rule R_2, RandomizeAction: randomisation is not supported \
             (Casebook has no randomisation module)",
        ]
    );
}
