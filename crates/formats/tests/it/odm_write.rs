//! ODM metadata out: every flavour is checked by `xmllint` against the official CDISC schemas
//! (the OpenClinica flavour against ODM 1.3.2 extended, through the schema's own `xs:redefine`
//! hooks, to accept OpenClinica-namespace elements and attributes), and for what users rely on.
//!
//! `xmllint` (Debian `libxml2-utils`) is required: the tests fail, not skip, without it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use casebook_domain::design::{
    Check, CheckRule, CodeList, CodeListItem, Comparator, ConditionalDisplay, DataType, EventDef, EventForm, EventType,
    Expression, FormDef, FormSource, FormVersion, ItemDef, ItemGroup, Repeat, Required, SdvRequirement, Section,
    StudyDesign, Text, Widget,
};
use casebook_domain::oid::Oid;
use casebook_formats::odm::write::{OPENCLINICA_NAMESPACE, OdmFlavour, StudyInfo, write_metadata};
use casebook_formats::rules::{RULES_NAMESPACE, read_rules};
use casebook_formats::workbook::Workbook;
use casebook_formats::xlsform::{self, Context};

use crate::fixtures;

pub(crate) const STUDY: StudyInfo<'static> = StudyInfo {
    oid: "S_DEMO",
    name: "Demo study",
    description: "A study to test ODM export <with> \"markup\" & ampersands",
    protocol_name: "DEMO-001",
    metadata_version_oid: "v1",
    metadata_version_name: "Version 1",
    rules: None,
};

fn oid(s: &str) -> Oid {
    Oid::parse(s).unwrap()
}

fn fr(default: &str, french: &str) -> Text {
    Text { text: default.into(), translations: BTreeMap::from([("Français (fr)".to_owned(), french.to_owned())]) }
}

fn item(name: &str, group: &str, data_type: DataType, widget: Widget, label: Text) -> ItemDef {
    ItemDef {
        oid: oid(&format!("I_DEMOG_{}", name.to_uppercase())),
        name: name.into(),
        group_oid: oid(group),
        section: "main".into(),
        data_type,
        widget,
        length: None,
        decimals: None,
        units: None,
        code_list: None,
        label,
        hint: Text::default(),
        right_text: None,
        question_number: None,
        header: None,
        subheader: None,
        brief_description: None,
        description: None,
        phi: false,
        required: Required::No,
        required_message: None,
        default_value: None,
        readonly: false,
        hidden: false,
        checks: vec![],
        calculation: None,
        relevant: None,
        conditional_display: None,
        choice_filter: None,
        appearance: None,
        external: None,
        extra: BTreeMap::new(),
    }
}

fn choice(value: &str, label: Text) -> CodeListItem {
    CodeListItem { value: value.into(), label, extra: BTreeMap::new() }
}

/// Demographics v1 and v2: every data type, a repeating group, a translated code list, a
/// multi-select, range checks, a calculation, skip logic, units and hints.
fn demographics() -> FormDef {
    let sections = vec![Section {
        label: "main".into(),
        title: fr("Demographics", "Démographie"),
        subtitle: None,
        instructions: Some("Ask the participant".into()),
    }];
    let groups = vec![
        ItemGroup {
            oid: oid("IG_DEMOG_UNGROUPED"),
            name: "ungrouped".into(),
            header: Text::default(),
            repeat: None,
            hidden: false,
            relevant: None,
        },
        ItemGroup {
            oid: oid("IG_DEMOG_MEDS"),
            name: "meds".into(),
            header: fr("Medications", "Médicaments"),
            repeat: Some(Repeat { initial_rows: 1, max_rows: Some(10), count: None }),
            hidden: false,
            relevant: Some(Expression::xpath("${on_meds} = 'Y'")),
        },
    ];
    let yes_no = CodeList {
        oid: oid("CL_DEMOG_YN"),
        name: "yn".into(),
        data_type: DataType::Text,
        items: vec![choice("Y", fr("Yes", "Oui")), choice("N", fr("No", "Non"))],
    };
    let sex = CodeList {
        oid: oid("CL_DEMOG_SEX"),
        name: "sex".into(),
        data_type: DataType::Integer,
        items: vec![choice("1", fr("Male", "Homme")), choice("2", fr("Female", "Femme"))],
    };
    let symptoms = CodeList {
        oid: oid("CL_DEMOG_SYMPTOMS"),
        name: "symptoms".into(),
        data_type: DataType::Text,
        items: vec![
            choice("fever", fr("Fever", "Fièvre")),
            choice("cough", fr("Cough", "Toux")),
            choice("none", fr("None", "Aucun")),
        ],
    };
    let ug = "IG_DEMOG_UNGROUPED";

    let mut dob = item("dob", ug, DataType::Date, Widget::Date, fr("Date of birth", "Date de naissance"));
    dob.required = Required::Yes;
    dob.phi = true;
    dob.question_number = Some("1".into());
    let mut sex_item = item("sex", ug, DataType::Integer, Widget::Radio, fr("Sex", "Sexe"));
    sex_item.code_list = Some(sex.oid.clone());
    sex_item.appearance = Some("horizontal".into());
    let mut weight = item("weight", ug, DataType::Real, Widget::Number, fr("Weight", "Poids"));
    weight.units = Some("kg".into());
    weight.decimals = Some(1);
    weight.hint = fr("Without shoes", "Sans chaussures");
    weight.description = Some("Body weight".into());
    weight.checks = vec![
        Check {
            rule: CheckRule::Range { comparator: Comparator::GE, values: vec!["20".into()] },
            message: fr("At least 20 kg", "Au moins 20 kg"),
            hard: true,
        },
        Check {
            rule: CheckRule::Range { comparator: Comparator::LE, values: vec!["300".into()] },
            message: Text::plain("At most 300 kg"),
            hard: false,
        },
    ];
    let mut height = item("height", ug, DataType::Integer, Widget::Number, Text::plain("Height"));
    height.units = Some("cm".into());
    height.checks = vec![Check {
        rule: CheckRule::Constraint { expression: Expression::xpath(". >= 100 and . <= 250") },
        message: Text::plain("Between 100 and 250 cm"),
        hard: true,
    }];
    let mut bmi = item("bmi", ug, DataType::Real, Widget::Calculation, Text::plain("BMI"));
    bmi.calculation = Some(Expression::xpath("${weight} div ((${height} div 100) * (${height} div 100))"));
    bmi.readonly = true;
    let mut pregnant = item("pregnant", ug, DataType::Text, Widget::Radio, fr("Pregnant?", "Enceinte ?"));
    pregnant.code_list = Some(yes_no.oid.clone());
    pregnant.relevant = Some(Expression::xpath("${sex} = 2"));
    pregnant.hidden = true;
    pregnant.conditional_display =
        Some(ConditionalDisplay { control_item: "sex".into(), option_value: "2".into(), message: String::new() });
    let mut symptoms_item = item("symptoms", ug, DataType::Text, Widget::Checkbox, fr("Symptoms", "Symptômes"));
    symptoms_item.code_list = Some(symptoms.oid.clone());
    let diagnosis = item("diag_date", ug, DataType::PartialDate, Widget::Text, Text::plain("Diagnosis date"));
    let visit_at = item("visit_at", ug, DataType::DateTime, Widget::DateTime, Text::plain("Visit date and time"));
    let wake = item("wake", ug, DataType::Time, Widget::Time, Text::plain("Wake-up time"));
    let mut consent = item("consent", ug, DataType::Boolean, Widget::Acknowledge, Text::plain("Consent given"));
    consent.required = Required::Yes;
    let scan = item("scan", ug, DataType::File, Widget::File, Text::plain("Scan"));
    let mut code = item("code", ug, DataType::Text, Widget::Text, Text::plain("Initials"));
    code.length = Some(3);
    code.checks = vec![Check {
        rule: CheckRule::Regexp { pattern: "[A-Z]{3}".into() },
        message: Text::plain("Three capitals"),
        hard: true,
    }];
    let mut on_meds = item("on_meds", ug, DataType::Text, Widget::Radio, fr("On medication?", "Sous traitement ?"));
    on_meds.code_list = Some(yes_no.oid.clone());
    let mut med_name = item("med_name", "IG_DEMOG_MEDS", DataType::Text, Widget::Text, fr("Medication", "Médicament"));
    med_name.required = Required::Yes;
    let mut med_dose = item("med_dose", "IG_DEMOG_MEDS", DataType::Real, Widget::Number, Text::plain("Dose"));
    med_dose.units = Some("mg".into());

    let version = |oid_: &str, label: &str, items: Vec<ItemDef>, code_lists: Vec<CodeList>| FormVersion {
        oid: oid(oid_),
        label: label.into(),
        description: Some(format!("Demographics {label}")),
        revision_notes: (label == "v2").then(|| "Adds vital data".to_owned()),
        source: FormSource::XlsForm,
        default_language: Some("English (en)".into()),
        languages: vec!["Français (fr)".into()],
        sections: sections.clone(),
        groups: groups.clone(),
        items,
        code_lists,
    };
    let v1 = version(
        "F_DEMOG_V1",
        "v1",
        vec![dob.clone(), sex_item.clone(), on_meds.clone(), med_name.clone()],
        vec![sex.clone(), yes_no.clone()],
    );
    let v2 = version(
        "F_DEMOG_V2",
        "v2",
        vec![
            dob,
            sex_item,
            weight,
            height,
            bmi,
            pregnant,
            symptoms_item,
            diagnosis,
            visit_at,
            wake,
            consent,
            scan,
            code,
            on_meds,
            med_name,
            med_dose,
        ],
        vec![sex, yes_no, symptoms],
    );
    FormDef { oid: oid("F_DEMOG"), name: "Demographics".into(), description: None, versions: vec![v1, v2] }
}

/// The shipped demo XLSForm, imported as users upload it.
fn vital_signs() -> FormDef {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../demo/forms/vital_signs.xlsx");
    let wb = Workbook::from_bytes(&std::fs::read(&path).unwrap()).unwrap();
    let (form, diagnostics) = xlsform::import(&wb, Context::default());
    let form = form.unwrap_or_else(|| panic!("the demo form does not import: {diagnostics:?}"));
    FormDef { oid: form.form_oid, name: form.form_name, description: None, versions: vec![form.version] }
}

pub(crate) fn design() -> StudyDesign {
    let demographics = demographics();
    let vitals = vital_signs();
    let mut screening_demog = EventForm::new(demographics.oid.clone());
    screening_demog.required = true;
    screening_demog.default_version = Some(oid("F_DEMOG_V2"));
    screening_demog.null_flavours = vec!["NA".into(), "UNK".into()];
    screening_demog.sdv = SdvRequirement::Full;
    let mut screening_vitals = EventForm::new(vitals.oid.clone());
    screening_vitals.required = true;
    let mut ae_vitals = EventForm::new(vitals.oid.clone());
    ae_vitals.hidden_from_sites = true;
    let mut ae_demog = EventForm::new(demographics.oid.clone());
    ae_demog.allowed_versions = vec![oid("F_DEMOG_V2")];
    StudyDesign {
        events: vec![
            EventDef {
                oid: oid("SE_SCREENING"),
                name: "Screening".into(),
                description: Some("Before randomisation".into()),
                category: Some("Visit".into()),
                event_type: EventType::Scheduled,
                repeating: false,
                forms: vec![screening_demog, screening_vitals],
            },
            EventDef {
                oid: oid("SE_ADVERSE"),
                name: "Adverse events".into(),
                description: None,
                category: None,
                event_type: EventType::Common,
                repeating: true,
                forms: vec![ae_vitals, ae_demog],
            },
        ],
        forms: vec![demographics, vitals],
    }
}

fn export(flavour: OdmFlavour) -> String {
    let mut out = Vec::new();
    let created = time::macros::datetime!(2025-03-04 05:06:07 +1);
    write_metadata(&mut out, &STUDY, &design(), flavour, created, "ODM_METADATA_1").unwrap();
    String::from_utf8(out).unwrap()
}

/// A file in the temporary directory, unique to this test run.
pub(crate) fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("casebook-odm-write-{}-{name}", std::process::id()))
}

/// Runs `xmllint --noout --nonet --schema` and fails with its messages unless the file is valid.
pub(crate) fn assert_schema_valid(xml: &str, schema: &Path, name: &str) {
    let file = scratch(name);
    std::fs::write(&file, xml).unwrap();
    let output = Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema"])
        .arg(schema)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "xmllint is required to check ODM output against the CDISC schemas and could not be run ({e}); \
                 install it with `apt-get install -y libxml2-utils` (.ci/run does)"
            )
        });
    assert!(
        output.status.success(),
        "{name} is not valid against {} (kept at {}):\n{}",
        schema.display(),
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::remove_file(&file).unwrap();
}

pub(crate) fn odm132_schema() -> PathBuf {
    fixtures().join("odm/xsd-1.3.2/ODM1-3-2.xsd")
}

/// ODM 1.3.2 opened for OpenClinica's namespace through the schema's own extension hooks: every
/// empty `…ElementExtension` group and `…AttributeExtension` attribute group is redefined to
/// accept OpenClinica elements and attributes (laxly: OpenClinica's own XSD is not shipped).
/// Everything in the ODM namespace is still checked strictly.
pub(crate) fn odm132_openclinica_schema() -> PathBuf {
    let dir = fixtures().join("odm/xsd-1.3.2").canonicalize().unwrap();
    let foundation = std::fs::read_to_string(dir.join("ODM1-3-2-foundation.xsd")).unwrap();
    let names = |prefix: &str, suffix: &str| -> Vec<String> {
        foundation
            .split(prefix)
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .filter(|n| n.ends_with(suffix))
            .map(str::to_owned)
            .collect()
    };
    let mut redefinitions = String::new();
    for group in names("<xs:group name=\"", "ElementExtension") {
        redefinitions.push_str(&format!(
            "<xs:group name=\"{group}\"><xs:sequence><xs:group ref=\"{group}\"/><xs:any namespace=\"{OPENCLINICA_NAMESPACE} {RULES_NAMESPACE}\" \
             processContents=\"lax\" minOccurs=\"0\" maxOccurs=\"unbounded\"/></xs:sequence></xs:group>\n"
        ));
    }
    for group in names("<xs:attributeGroup name=\"", "AttributeExtension") {
        redefinitions.push_str(&format!(
            "<xs:attributeGroup name=\"{group}\"><xs:attributeGroup ref=\"{group}\"/><xs:anyAttribute \
             namespace=\"{OPENCLINICA_NAMESPACE}\" processContents=\"lax\"/></xs:attributeGroup>\n"
        ));
    }
    assert!(redefinitions.matches("<xs:group ").count() > 50, "the extension hooks were not found in the 1.3.2 schema");
    let d = dir.display();
    let schema = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns="http://www.cdisc.org/ns/odm/v1.3" xmlns:xs="http://www.w3.org/2001/XMLSchema"
  targetNamespace="http://www.cdisc.org/ns/odm/v1.3" elementFormDefault="qualified" attributeFormDefault="unqualified">
<xs:import namespace="http://www.w3.org/XML/1998/namespace" schemaLocation="{d}/xml.xsd"/>
<xs:import namespace="http://www.w3.org/2000/09/xmldsig#" schemaLocation="{d}/xmldsig-core-schema.xsd"/>
<xs:redefine schemaLocation="{d}/ODM1-3-2-foundation.xsd">
{redefinitions}</xs:redefine>
</xs:schema>
"#
    );
    let path = scratch("ODM1-3-2-OpenClinica.xsd");
    std::fs::write(&path, schema).unwrap();
    path
}

pub(crate) fn odm20_schema() -> PathBuf {
    fixtures().join("odm/xsd-2.0/ODM.xsd")
}

/// What every flavour must keep: OIDs of the events, forms, groups, items and code lists, the
/// translations with their language, the checks.
fn assert_common(xml: &str) {
    for oid in [
        "SE_SCREENING",
        "SE_ADVERSE",
        "F_DEMOG_V1",
        "F_DEMOG_V2",
        "IG_DEMOG_MEDS",
        "I_DEMOG_WEIGHT",
        "I_DEMOG_MED_DOSE",
        "CL_DEMOG_SEX",
        "I_VITAL_WEIGHT",
    ] {
        assert!(xml.contains(&format!("\"{oid}\"")), "{oid} is missing");
    }
    assert!(xml.contains(r#"xml:lang="fr""#) && xml.contains("Date de naissance"), "French question missing");
    assert!(xml.contains("Poids (kg)"), "French label of the demo form missing");
    assert!(xml.contains(r#"xml:lang="en""#), "the default language is not tagged");
    assert!(xml.contains(">Femme<"), "French decode missing");
    assert!(!xml.contains("<TranslatedText xml:lang=\"fr\"></TranslatedText>"), "empty translations written");
    assert!(xml.contains(r#"Comparator="GE" SoftHard="Hard""#), "range check missing");
    assert!(xml.contains(r#"Comparator="LE" SoftHard="Soft""#), "soft range check missing");
    assert!(xml.contains("not(${sex} = 2)"), "skip logic is not negated into a collection exception condition");
    assert!(xml.contains(r#"CollectionExceptionConditionOID="CD.I_DEMOG_PREGNANT""#));
    assert!(xml.contains(r#"MethodOID="MT.I_DEMOG_BMI""#));
    assert!(
        xml.contains("&lt;with&gt; &quot;markup&quot; &amp; ampersands")
            || xml.contains("&lt;with&gt; \"markup\" &amp; ampersands")
    );
    assert!(xml.contains(r#"CreationDateTime="2025-03-04T04:06:07Z""#), "creation time not in UTC");
}

fn assert_odm13_mapping(xml: &str) {
    assert!(xml.contains(r#"ODMVersion="1.3.2""#));
    assert!(xml.contains(r#"<FormDef OID="F_DEMOG_V2" Name="Demographics - v2" Repeating="No">"#));
    assert!(xml.contains(r#"<FormRef FormOID="F_DEMOG_V1" OrderNumber="1" Mandatory="Yes"/>"#));
    // The adverse event offers only version 2 of demographics.
    let ae = &xml[xml.find(r#"<StudyEventDef OID="SE_ADVERSE""#).unwrap()..];
    let ae = &ae[..ae.find("</StudyEventDef>").unwrap()];
    assert!(ae.contains(r#"Repeating="Yes" Type="Common""#));
    assert!(ae.contains("F_DEMOG_V2") && !ae.contains("F_DEMOG_V1"));
    assert!(xml.contains(r#"<ItemGroupDef OID="IG_DEMOG_MEDS" Name="meds" Repeating="Yes">"#));
    assert!(
        xml.contains(
            r#"<ItemDef OID="I_DEMOG_WEIGHT" Name="weight" DataType="float" Length="25" SignificantDigits="1""#
        )
    );
    assert!(xml.contains(r#"<ItemDef OID="I_DEMOG_SYMPTOMS" Name="symptoms" DataType="text" Length="16""#));
    assert!(xml.contains(r#"<ItemDef OID="I_DEMOG_DIAG_DATE" Name="diag_date" DataType="partialDate""#));
    assert!(xml.contains(r#"<MeasurementUnit OID="MU_KG" Name="kg">"#));
    assert!(xml.contains(r#"<MeasurementUnitRef MeasurementUnitOID="MU_KG"/>"#));
    assert!(xml.contains(r#"<CodeList OID="CL_DEMOG_SEX" Name="sex" DataType="integer">"#));
    assert!(xml.contains(r#"<CheckValue>20</CheckValue>"#));
    assert!(xml.contains(r#"<FormalExpression Context="XPath">not(${sex} = 2)</FormalExpression>"#));
    assert!(xml.contains(r#"<MethodDef OID="MT.I_DEMOG_BMI" Name="Calculation of bmi" Type="Computation">"#));
    // A multi-select's value is several codes: no CodeListRef.
    let symptoms = &xml[xml.find(r#"<ItemDef OID="I_DEMOG_SYMPTOMS""#).unwrap()..];
    let symptoms = &symptoms[..symptoms.find("</ItemDef>").unwrap()];
    assert!(!symptoms.contains("CodeListRef"));
}

#[test]
fn odm132_metadata_is_valid_and_free_of_openclinica_extensions() {
    let xml = export(OdmFlavour::Odm132);
    assert_schema_valid(&xml, &odm132_schema(), "metadata-1.3.2.xml");
    assert_common(&xml);
    assert_odm13_mapping(&xml);
    assert!(
        !xml.contains(OPENCLINICA_NAMESPACE) && !xml.contains("OpenClinica:"),
        "plain 1.3.2 uses OpenClinica's namespace"
    );
    assert!(xml.contains(r#"<CodeList OID="CL_DEMOG_SYMPTOMS""#), "multi-select choices are lost");
}

#[test]
fn odm132_openclinica_metadata_is_valid_with_openclinica_extensions() {
    let xml = export(OdmFlavour::Odm132OpenClinica);
    // The extensions are outside the CDISC schema: the plain one must refuse them, the extended one accept them.
    let schema = odm132_openclinica_schema();
    assert_schema_valid(&xml, &schema, "metadata-1.3.2-openclinica.xml");
    std::fs::remove_file(&schema).unwrap();
    assert_common(&xml);
    assert_odm13_mapping(&xml);
    assert!(xml.contains(&format!(r#"xmlns:OpenClinica="{OPENCLINICA_NAMESPACE}""#)));
    assert!(xml.contains(r#"<OpenClinica:MultiSelectListRef MultiSelectListID="MSL_DEMOG_SYMPTOMS"/>"#));
    assert!(xml.contains(r#"<OpenClinica:MultiSelectList ID="MSL_DEMOG_SYMPTOMS" Name="symptoms" DataType="string" ActualDataType="string">"#));
    assert!(xml.contains(r#"<OpenClinica:ItemGroupRepeat RepeatNumber="1" RepeatMax="10"/>"#));
    assert!(
        xml.contains(r#"<OpenClinica:ItemPresentInForm FormOID="F_DEMOG_V2" PHI="No" ShowItem="No">"#),
        "hidden item not marked"
    );
    assert!(xml.contains(r#"<OpenClinica:ItemPresentInForm FormOID="F_DEMOG_V1" PHI="Yes" ShowItem="Yes">"#));
    assert!(xml.contains(r#"OpenClinica:FormOIDs="F_DEMOG_V1,F_DEMOG_V2""#));
    assert!(xml.contains(
        r#"<OpenClinica:PresentInEventDefinition StudyEventOID="SE_SCREENING" IsDefaultVersion="Yes" NullValues="NA,UNK" PasswordRequired="No" DoubleDataEntry="No" HideCRF="No" SourceDataVerification="AllREQUIRED"/>"#
    ));
    assert!(xml.contains(r#"<OpenClinica:ItemResponse ResponseType="radio" ResponseLayout="Horizontal"/>"#));
    assert!(xml.contains("<OpenClinica:ControlItemName>sex</OpenClinica:ControlItemName>"));
    assert!(xml.contains(r#"<Question OpenClinica:QuestionNumber="1">"#));
    assert!(
        !xml.contains(r#"<CodeList OID="CL_DEMOG_SYMPTOMS""#),
        "OpenClinica writes multi-select choices as a MultiSelectList"
    );

    let plain = scratch("metadata-1.3.2-openclinica-plain-check.xml");
    std::fs::write(&plain, &xml).unwrap();
    let refused =
        Command::new("xmllint").args(["--noout", "--nonet", "--schema"]).arg(odm132_schema()).arg(&plain).output();
    assert!(!refused.unwrap().status.success(), "the plain CDISC schema should refuse OpenClinica extensions");
    std::fs::remove_file(&plain).unwrap();
}

#[test]
fn odm20_metadata_is_valid() {
    let xml = export(OdmFlavour::Odm20);
    assert_schema_valid(&xml, &odm20_schema(), "metadata-2.0.xml");
    assert_common(&xml);
    assert!(xml.contains(r#"<ODM xmlns="http://www.cdisc.org/ns/odm/v2.0" ODMVersion="2.0""#));
    assert!(!xml.contains(OPENCLINICA_NAMESPACE) && !xml.contains("OpenClinica:"));
    assert!(xml.contains(r#"<TranslatedText xml:lang="fr" Type="text/plain">Date de naissance</TranslatedText>"#));
    assert!(xml.contains(r#"<ItemGroupDef OID="F_DEMOG_V2" Name="Demographics - v2" Repeating="No" Type="Form">"#));
    assert!(xml.contains(
        r#"<ItemGroupDef OID="IG_DEMOG_MEDS" Name="meds" Repeating="Simple" RepeatingLimit="10" Type="Section">"#
    ));
    assert!(xml.contains(r#"<ItemGroupRef ItemGroupOID="IG_DEMOG_MEDS" OrderNumber="2" Mandatory="No" CollectionExceptionConditionOID="CD.F_DEMOG_V2.IG_DEMOG_MEDS"/>"#));
    assert!(xml.contains(r#"<StudyEventRef StudyEventOID="SE_ADVERSE" OrderNumber="2" Mandatory="No"/>"#));
    assert!(xml.contains("<CRFCompletionInstructions>"), "hints are lost");
    assert!(xml.contains(r#"<FormalExpression Context="XPath">"#) && xml.contains("<Code>not(${sex} = 2)</Code>"));
}

#[test]
fn independent_checker_accepts_plain_odm132() {
    // odmlib (PyPI, MIT) loads the file and resolves every OID reference. `.ci/run` installs it;
    // a machine without it fails here with the command that fixes it.
    let probe = Command::new("python3").args(["-c", "import odmlib"]).output().unwrap();
    assert!(
        probe.status.success(),
        "the independent ODM checker is missing: run `pip install odmlib==0.2.1` (as .ci/run does)"
    );
    let script = fixtures().join("../tools/odmlib_check.py");
    assert!(script.is_file(), "{} is missing", script.display());
    let file = scratch("metadata-1.3.2-odmlib.xml");
    std::fs::write(&file, export(OdmFlavour::Odm132)).unwrap();
    let script = fixtures().join("../tools/odmlib_check.py");
    let output = Command::new("python3").arg(&script).arg(&file).output().unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(report.contains("XSD: ok"), "odmlib:\n{report}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(report.contains("validate(): 0 errors"), "odmlib finds unresolved references:\n{report}");
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn openclinica_metadata_carries_the_studys_rules() {
    let file = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../demo/rules/demo_rules.xml")).unwrap();
    let (set, d) = read_rules(&file);
    let set = set.unwrap_or_else(|| panic!("{d:?}"));
    let study = StudyInfo { rules: Some(&set), ..STUDY };
    let created = time::macros::datetime!(2025-03-04 05:06:07 UTC);
    let write = |flavour| {
        let mut out = Vec::new();
        write_metadata(&mut out, &study, &design(), flavour, created, "ODM_RULES").unwrap();
        String::from_utf8(out).unwrap()
    };
    let xml = write(OdmFlavour::Odm132OpenClinica);
    assert!(xml.contains(&format!(r#"xmlns:OpenClinicaRules="{RULES_NAMESPACE}""#)), "{xml}");
    assert!(
        xml.contains("<OpenClinicaRules:Rules>") && xml.contains(r#"<OpenClinicaRules:RuleDef OID="R_AE_SERIOUS""#)
    );
    // Valid with the OpenClinica extensions, and read back as the same rules.
    let schema = odm132_openclinica_schema();
    assert_schema_valid(&xml, &schema, "metadata-1.3.2-openclinica-rules.xml");
    std::fs::remove_file(&schema).unwrap();
    let (back, d) = read_rules(xml.as_bytes());
    assert_eq!(back.as_ref(), Some(&set), "{d:?}");
    // Plain ODM has no place for them.
    for flavour in [OdmFlavour::Odm132, OdmFlavour::Odm20] {
        let plain = write(flavour);
        assert!(!plain.contains("Rules") && !plain.contains("RuleDef"), "{flavour:?}");
    }
}

/// A small casebook written as ClinicalData: two participants, a repeating event, a repeating
/// group, a null flavour and text needing escapes.
fn clinical(openclinica: bool) -> String {
    use casebook_formats::odm::clinical_write::{ClinicalFile, ClinicalWriter, EventOut, FormOut, ItemOut, SubjectOut};
    let file = ClinicalFile {
        study_oid: "S_DEMO",
        metadata_version_oid: "v1",
        file_oid: "CLINICAL_1",
        created: time::macros::datetime!(2026-11-22 09:00 UTC),
        openclinica,
        odm20: false,
    };
    let mut w = ClinicalWriter::new(Vec::new(), &file).unwrap();
    w.subject(&SubjectOut {
        key: "SS_DEMOA0001",
        label: "DEMO-A-0001",
        person_id: Some("P-17"),
        date_of_birth: Some("1980-05-05"),
        sex: Some("f"),
        enrolled_on: Some("2026-01-10"),
        status: "available",
        ..SubjectOut::default()
    })
    .unwrap();
    w.event(&EventOut {
        event_oid: "SE_BASELINE",
        status: "data_entry_started",
        start: Some(time::macros::datetime!(2026-01-10 08:00 UTC)),
        ..EventOut::default()
    })
    .unwrap();
    w.form(&FormOut {
        version_oid: "F_DEMOG_V1",
        version_label: "v1",
        status: "complete",
        awaiting_dde: false,
        ..FormOut::default()
    })
    .unwrap();
    let items = [
        ItemOut { item_oid: "I_DEMOG_SEX", value: Some("f"), null_flavour: None, ..ItemOut::default() },
        ItemOut {
            item_oid: "I_DEMOG_NOTE",
            value: Some("<b>\"quoted\" & more</b>"),
            null_flavour: None,
            ..ItemOut::default()
        },
        ItemOut { item_oid: "I_DEMOG_AGE", value: None, null_flavour: Some("UNK"), ..ItemOut::default() },
    ];
    w.group("IG_DEMOG_MAIN", None, &items).unwrap();
    w.group(
        "IG_DEMOG_MEDS",
        Some(1),
        &[ItemOut { item_oid: "I_DEMOG_MED", value: Some("aspirin"), null_flavour: None, ..ItemOut::default() }],
    )
    .unwrap();
    w.group(
        "IG_DEMOG_MEDS",
        Some(2),
        &[ItemOut { item_oid: "I_DEMOG_MED", value: Some("ibuprofen"), null_flavour: None, ..ItemOut::default() }],
    )
    .unwrap();
    w.event(&EventOut { event_oid: "SE_FOLLOWUP", repeat_key: Some(2), status: "scheduled", ..EventOut::default() })
        .unwrap();
    w.subject(&SubjectOut { key: "SS_DEMOA0002", label: "DEMO-A-0002", status: "removed", ..SubjectOut::default() })
        .unwrap();
    String::from_utf8(w.finish().unwrap()).unwrap()
}

#[test]
fn clinical_data_is_valid_odm_with_and_without_openclinica_extensions() {
    let plain = clinical(false);
    assert_schema_valid(&plain, &odm132_schema(), "clinical-1.3.2.xml");
    assert!(!plain.contains("OpenClinica"), "{plain}");
    assert!(plain.contains(r#"<ItemData ItemOID="I_DEMOG_AGE" IsNull="Yes"/>"#), "{plain}");
    assert!(plain.contains(r#"Value="&lt;b&gt;&quot;quoted&quot; &amp; more&lt;/b&gt;""#), "{plain}");
    assert!(
        plain.contains(
            r#"<ItemGroupData ItemGroupOID="IG_DEMOG_MEDS" ItemGroupRepeatKey="2" TransactionType="Insert">"#
        )
    );
    assert!(
        plain.contains(r#"<StudyEventData StudyEventOID="SE_FOLLOWUP" StudyEventRepeatKey="2"/>"#)
            || plain.contains(r#"<StudyEventData StudyEventOID="SE_FOLLOWUP" StudyEventRepeatKey="2">"#),
        "{plain}"
    );

    let oc = clinical(true);
    let schema = odm132_openclinica_schema();
    assert_schema_valid(&oc, &schema, "clinical-1.3.2-openclinica.xml");
    std::fs::remove_file(&schema).unwrap();
    for expected in [
        r#"<SubjectData SubjectKey="SS_DEMOA0001" OpenClinica:StudySubjectID="DEMO-A-0001" OpenClinica:UniqueIdentifier="P-17" OpenClinica:Status="available" OpenClinica:DateOfBirth="1980-05-05" OpenClinica:Sex="f" OpenClinica:EnrollmentDate="2026-01-10">"#,
        r#"<StudyEventData StudyEventOID="SE_BASELINE" OpenClinica:StartDate="2026-01-10" OpenClinica:Status="data entry started">"#,
        r#"<FormData FormOID="F_DEMOG_V1" OpenClinica:Version="v1" OpenClinica:Status="data entry complete">"#,
        r#"<ItemData ItemOID="I_DEMOG_AGE" IsNull="Yes" OpenClinica:ReasonForNull="UNK"/>"#,
        r#"OpenClinica:Status="removed""#,
    ] {
        assert!(oc.contains(expected), "{expected} not in {oc}");
    }
}

#[test]
fn clinical_data_is_written_as_it_comes() {
    use casebook_formats::odm::clinical_write::{ClinicalFile, ClinicalWriter, EventOut, FormOut, ItemOut, SubjectOut};
    let file = ClinicalFile {
        study_oid: "S",
        metadata_version_oid: "v1",
        file_oid: "F",
        created: time::macros::datetime!(2026-11-22 09:00 UTC),
        openclinica: false,
        odm20: false,
    };
    // Drained after every participant, the buffer never holds more than one participant.
    let mut w = ClinicalWriter::new(Vec::new(), &file).unwrap();
    let mut total = 0usize;
    let mut largest = 0usize;
    for n in 0..2_000 {
        let key = format!("SS_{n}");
        w.subject(&SubjectOut { key: &key, label: &key, status: "available", ..SubjectOut::default() }).unwrap();
        w.event(&EventOut { event_oid: "SE_V", status: "completed", ..EventOut::default() }).unwrap();
        w.form(&FormOut {
            version_oid: "F_V1",
            version_label: "v1",
            status: "complete",
            awaiting_dde: false,
            ..FormOut::default()
        })
        .unwrap();
        w.group("IG", None, &[ItemOut { item_oid: "I", value: Some("1"), null_flavour: None, ..ItemOut::default() }])
            .unwrap();
        let chunk = std::mem::take(w.get_mut());
        largest = largest.max(chunk.len());
        total += chunk.len();
    }
    let rest = w.finish().unwrap();
    total += rest.len();
    assert!(largest < 1_000, "{largest}");
    assert!(total > 2_000 * 150, "{total}");
    // Structure errors are refused rather than written.
    let mut w = ClinicalWriter::new(Vec::new(), &file).unwrap();
    assert!(w.form(&FormOut::default()).is_err());
    assert!(w.group("IG", None, &[]).is_err());
}

#[test]
fn metadata_and_clinical_data_in_one_document_are_valid() {
    use casebook_formats::odm::clinical_write::{ClinicalFile, ClinicalWriter, EventOut, FormOut, ItemOut, SubjectOut};
    let meta = export(OdmFlavour::Odm132OpenClinica);
    let open = meta.trim_end().strip_suffix("</ODM>").unwrap();
    let file = ClinicalFile {
        study_oid: "S_DEMO",
        metadata_version_oid: "v1",
        file_oid: "BOTH",
        created: time::macros::datetime!(2026-11-22 09:00 UTC),
        openclinica: true,
        odm20: false,
    };
    let mut w = ClinicalWriter::embedded(Vec::new(), &file).unwrap();
    w.subject(&SubjectOut { key: "SS_1", label: "S-1", status: "available", ..SubjectOut::default() }).unwrap();
    w.event(&EventOut { event_oid: "SE_SCREENING", status: "data_entry_started", ..EventOut::default() }).unwrap();
    w.form(&FormOut {
        version_oid: "F_DEMOG_V1",
        version_label: "v1",
        status: "initial_data_entry",
        awaiting_dde: false,
        ..FormOut::default()
    })
    .unwrap();
    w.group(
        "IG_DEMOG_MAIN",
        None,
        &[ItemOut { item_oid: "I_DEMOG_SEX", value: Some("f"), null_flavour: None, ..ItemOut::default() }],
    )
    .unwrap();
    let clinical = String::from_utf8(w.finish().unwrap()).unwrap();
    assert!(!clinical.contains("<ODM") && !clinical.contains("<?xml"), "{clinical}");
    let doc = format!("{open}\n{clinical}\n</ODM>\n");
    let schema = odm132_openclinica_schema();
    assert_schema_valid(&doc, &schema, "metadata-and-clinical.xml");
    std::fs::remove_file(&schema).unwrap();
}
