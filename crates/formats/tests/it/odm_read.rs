//! ODM metadata in: every sample of `fixtures/odm/samples` loads or fails with the precise
//! problems it has; OpenClinica's extensions map to the design; unsafe XML is refused; and a
//! design written by `odm::write` reads back equal.

use std::collections::BTreeMap;
use std::path::PathBuf;

use casebook_domain::design::{
    CheckRule, Comparator, DataType, Dialect, EventForm, EventType, Expression, FormDef, Repeat, Required,
    SdvRequirement, StudyDesign, Text, Widget,
};
use casebook_domain::oid::Oid;
use casebook_formats::diagnostic::{Diagnostics, Location, Severity};
use casebook_formats::odm::read::{MAX_BYTES, OdmDesign, read_metadata};
use casebook_formats::odm::write::{OdmFlavour, StudyInfo, write_metadata};
use casebook_formats::workbook::Workbook;
use casebook_formats::xlsform::{self, Context};

use crate::fixtures;

fn sample(path: &str) -> (Option<OdmDesign>, Diagnostics) {
    read_metadata(&std::fs::read(fixtures().join("odm/samples").join(path)).unwrap())
}

/// Errors as `line:column message`.
fn errors(d: &Diagnostics) -> Vec<String> {
    d.errors()
        .map(|e| match e.location {
            Location::Xml { line, column } => format!("{line}:{column} {}", e.message),
            ref other => format!("{other} {}", e.message),
        })
        .collect()
}

fn loads(path: &str) -> (OdmDesign, Diagnostics) {
    let (design, d) = sample(path);
    assert!(!d.has_errors(), "{path}: {:#?}", errors(&d));
    (design.unwrap(), d)
}

fn fails(path: &str) -> Vec<String> {
    let (design, d) = sample(path);
    assert!(design.is_none(), "{path} should not load");
    assert!(d.has_errors());
    errors(&d)
}

fn item_count(design: &StudyDesign) -> usize {
    design.forms.iter().flat_map(|f| &f.versions).map(|v| v.items.len()).sum()
}

fn oid(s: &str) -> Oid {
    Oid::parse(s).unwrap()
}

// ----- the samples ------------------------------------------------------------------------------

/// Counts read from the files with grep: `grep -c '<StudyEventDef'`, `'<FormDef'`, `'<ItemRef'`.
#[test]
fn samples_that_are_complete_load_with_every_event_form_and_item() {
    // (file, events, forms, item placements in form versions)
    let cases = [
        // 2 StudyEventDef, 2 FormDef; IG.DM has 4 ItemRefs, IG.VS 5 (IT.SUBJID is in both forms).
        ("odmlib-examples/odm132_complete.xml", 2, 2, 9),
        // 4 StudyEventDef, 7 FormDef, 52 ItemRef.
        ("odmlib-tests/odm-data-snapshot.xml", 4, 7, 52),
        // 2 StudyEventDef, 2 FormDef, 3 ItemRef.
        ("own/demo_valid.xml", 2, 2, 3),
        // Define-XML: ODM-based, 179 ItemDefs but no StudyEventDef or FormDef.
        ("odmlib-tests/defineV21-SDTM.xml", 0, 0, 0),
    ];
    for (path, events, forms, items) in cases {
        let (odm, _) = loads(path);
        assert_eq!(odm.design.events.len(), events, "{path}");
        assert_eq!(odm.design.forms.len(), forms, "{path}");
        assert_eq!(item_count(&odm.design), items, "{path}");
        // Plain ODM: one version per FormDef.
        assert!(odm.design.forms.iter().all(|f| f.versions.len() == 1), "{path}");
    }
}

#[test]
fn define_xml_loads_empty_with_a_warning_that_it_has_no_forms() {
    let (odm, d) = loads("odmlib-tests/defineV21-SDTM.xml");
    assert!(odm.design.forms.is_empty());
    assert!(d.0.iter().any(|w| w.severity == Severity::Warning && w.message.contains("defines no forms")));
}

#[test]
fn demo_sample_reads_study_identity_and_design() {
    let (odm, d) = loads("own/demo_valid.xml");
    assert_eq!(odm.study_oid, "S.DEMO");
    assert_eq!(odm.study_name, "DEMO");
    assert_eq!(odm.metadata_version_oid, "MDV.1");
    let design = &odm.design;
    let visit = design.event("SE_VISIT").unwrap();
    assert!(visit.repeating);
    assert_eq!(visit.forms, vec![EventForm { required: true, ..EventForm::new(oid("F_VS")) }]);
    // Plain ODM: the form keeps the FormDef OID, its one version is labelled with the metadata
    // version and named as OpenClinica names versions.
    let vs = design.form("F_VS").unwrap();
    assert_eq!(vs.name, "Vital signs");
    assert_eq!(vs.versions[0].label, "MDV.1");
    assert_eq!(vs.versions[0].oid.as_str(), "F_VS_MDV1");
    let weight = &vs.versions[0].items[0];
    assert_eq!((weight.name.as_str(), weight.units.as_deref()), ("WEIGHT", Some("kg")));
    // MT.NONE has no FormalExpression: no calculation, a warning.
    assert_eq!(weight.calculation, None);
    assert_eq!(weight.widget, Widget::Number);
    assert!(d.0.iter().any(|w| w.message.contains("MethodDef 'MT.NONE' has no FormalExpression")));
    // OIDs with dots are converted, once, in one warning.
    assert_eq!(d.0.iter().filter(|w| w.message.contains("OIDs are not Casebook OIDs")).count(), 1);
}

#[test]
fn a_bad_value_in_clinical_data_does_not_stop_a_metadata_import() {
    // ItemData IT.BRTHDAT Value="1970-13-45": schema-valid, and clinical data is not metadata,
    // so the design loads as from demo_valid.xml (clinical data is imported elsewhere, with
    // value checks).
    let (odm, d) = loads("own/demo_xsdvalid_bad_date_value.xml");
    let (valid, _) = loads("own/demo_valid.xml");
    assert_eq!(odm.design, valid.design);
    assert!(d.0.iter().any(|w| w.message.contains("does not import it")));
}

#[test]
fn a_dangling_item_oid_in_clinical_data_is_an_error_at_its_line() {
    assert_eq!(
        fails("own/demo_xsdvalid_dangling_itemoid.xml"),
        ["75:13 ClinicalData refers to ItemOID 'IT.NOPE', but no ItemDef has that OID."]
    );
}

#[test]
fn schema_invalid_samples_fail_with_the_invalid_values() {
    assert_eq!(
        fails("own/demo_bad_xsd_filetype.xml"),
        ["2:1 ODM/@FileType is 'Bogus'; ODM 1.3.2 allows only 'Snapshot' or 'Transactional'."]
    );
    assert_eq!(
        fails("own/demo_bad_xsd_ordernumber.xml"),
        [
            "18:9 StudyEventRef/@OrderNumber 'x' is not a positive whole number.",
            "22:9 FormRef/@OrderNumber 'x' is not a positive whole number.",
            "25:9 FormRef/@OrderNumber 'x' is not a positive whole number.",
        ]
    );
    // `<studyName>` instead of `<StudyName>`, and (as in the valid twin) dangling code lists.
    let invalid = fails("odmlib-tests/cdash-odm-test-invalid.xml");
    assert_eq!(
        invalid[0],
        "13:9 <GlobalVariables> has no <StudyName> (there is <studyName> at line 14, column 13: element names are \
         case-sensitive)."
    );
}

/// These odmlib samples refer to OIDs nothing defines (checked with grep: the CDASH files define
/// `ODM.CL.SEX`, not `CL.SEX`; `odm_demo.xml` defines neither `ODM.IG.Common` nor the BP items).
#[test]
fn samples_with_unresolved_oids_fail_naming_each_oid_and_line() {
    let cdash = [
        "CodeListRef refers to CodeListOID 'CL.SEX', but no CodeList has that OID.",
        "CodeListRef refers to CodeListOID 'CL.ETHNIC.SUBSET.ETHNIC', but no CodeList has that OID.",
        "CodeListRef refers to CodeListOID 'CL.RACE', but no CodeList has that OID.",
    ];
    let source = fails("odmlib-examples/cdash-odm-source.xml");
    assert_eq!(
        source,
        ["302:17", "314:17", "326:17"].iter().zip(cdash).map(|(at, m)| format!("{at} {m}")).collect::<Vec<_>>()
    );
    let test = fails("odmlib-tests/cdash-odm-test.xml");
    assert_eq!(
        test,
        ["301:17", "313:17", "325:17"].iter().zip(cdash).map(|(at, m)| format!("{at} {m}")).collect::<Vec<_>>()
    );

    let demo = fails("odmlib-examples/odm_demo.xml");
    assert_eq!(
        demo,
        [
            "2:1236 ItemGroupRef refers to ItemGroupOID 'ODM.IG.Common', but no ItemGroupDef has that OID.",
            "2:1313 ItemGroupRef refers to ItemGroupOID 'ODM.IG.VS_GENERAL', but no ItemGroupDef has that OID.",
            "2:1536 ItemGroupRef refers to ItemGroupOID 'ODM.IG.Common', but no ItemGroupDef has that OID.",
            "2:1825 ItemRef refers to ItemOID 'ODM.IT.VS.BP.DIABP.VSORRES', but no ItemDef has that OID.",
            "2:1889 ItemRef refers to ItemOID 'ODM.IT.VS.BP.SYSBP.VSORRES', but no ItemDef has that OID.",
            "2:2033 ItemRef refers to ItemOID 'ODM.IT.DM.BRTHYR', but no ItemDef has that OID.",
            "2:2087 ItemRef refers to ItemOID 'ODM.IT.DM.SEX', but no ItemDef has that OID.",
        ]
    );
}

#[test]
fn files_without_a_study_have_no_design() {
    assert_eq!(
        fails("odmlib-tests/test_clinical_data_01.xml"),
        ["2:1 The file has no <Study>, so no study design to read (it holds ClinicalData for study 'P2006-101')."]
    );
    assert_eq!(
        fails("odmlib-tests/test_referece_data_01.xml"),
        ["2:1 The file has no <Study>, so no study design to read (it holds ReferenceData)."]
    );
}

#[test]
fn every_sample_is_covered_by_a_test() {
    let covered = [
        "odmlib-examples/cdash-odm-source.xml",
        "odmlib-examples/odm132_complete.xml",
        "odmlib-examples/odm_demo.xml",
        "odmlib-tests/cdash-odm-test-invalid.xml",
        "odmlib-tests/cdash-odm-test.xml",
        "odmlib-tests/defineV21-SDTM.xml",
        "odmlib-tests/odm-data-snapshot.xml",
        "odmlib-tests/test_clinical_data_01.xml",
        "odmlib-tests/test_referece_data_01.xml",
        "own/demo_bad_xsd_filetype.xml",
        "own/demo_bad_xsd_ordernumber.xml",
        "own/demo_valid.xml",
        "own/demo_xsdvalid_bad_date_value.xml",
        "own/demo_xsdvalid_dangling_itemoid.xml",
    ];
    let mut found = Vec::new();
    for dir in ["odmlib-examples", "odmlib-tests", "own"] {
        for entry in std::fs::read_dir(fixtures().join("odm/samples").join(dir)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".xml") {
                found.push(format!("{dir}/{name}"));
            }
        }
    }
    found.sort();
    assert_eq!(found, covered);
}

// ----- mapping of plain ODM (odm132_complete.xml: nearly every 1.3.2 metadata element) -----------

#[test]
fn plain_odm_maps_events_forms_groups_items_checks_and_logic() {
    let (odm, d) = loads("odmlib-examples/odm132_complete.xml");
    // Two metadata versions: MDV.ODM.001 includes MDV.ODM.PRIOR, so it is the one read.
    assert_eq!(odm.metadata_version_oid, "MDV.ODM.001");
    assert_eq!(odm.study_name, "Vital Signs Study");
    let design = &odm.design;
    let events: Vec<(&str, bool, EventType)> =
        design.events.iter().map(|e| (e.oid.as_str(), e.repeating, e.event_type)).collect();
    assert_eq!(events, [("SE_SCREEN", false, EventType::Scheduled), ("SE_VISIT", true, EventType::Scheduled)]);
    assert_eq!(design.events[0].description.as_deref(), Some("Screening visit"));
    let screening_forms: Vec<&str> = design.events[0].forms.iter().map(|f| f.form_oid.as_str()).collect();
    assert_eq!(screening_forms, ["F_DM", "F_VS"]);
    assert!(design.events[0].forms.iter().all(|f| f.required));

    let dm = design.form("F_DM").unwrap();
    assert_eq!(dm.description.as_deref(), Some("Demographics CRF"));
    let v = &dm.versions[0];
    assert_eq!((v.label.as_str(), v.oid.as_str()), ("MDV.ODM.001", "F_DM_MDVODM001"));
    assert_eq!(v.default_language.as_deref(), Some("en"));
    assert_eq!(v.sections.len(), 1);
    assert_eq!((v.sections[0].label.as_str(), v.sections[0].title.text.as_str()), ("main", "Demographics"));
    assert_eq!(v.groups[0].header, Text::plain("One record per subject"));
    let names: Vec<&str> = v.items.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["SUBJID", "AGE", "SEX", "RACE"]);

    let subjid = v.item("SUBJID").unwrap();
    assert_eq!(
        (subjid.required.clone(), subjid.length, subjid.label.text.as_str()),
        (Required::Yes, Some(10), "Subject ID")
    );
    assert_eq!(subjid.description.as_deref(), Some("Unique subject identifier"));

    let age = v.item("AGE").unwrap();
    assert_eq!((age.data_type, age.widget, age.units.as_deref()), (DataType::Integer, Widget::Number, Some("years")));
    assert_eq!(age.decimals, None, "SignificantDigits only means decimals for float");
    assert_eq!(age.checks.len(), 1);
    assert_eq!(age.checks[0].rule, CheckRule::Range { comparator: Comparator::GE, values: vec!["18".into()] });
    assert_eq!((age.checks[0].message.text.as_str(), age.checks[0].hard), ("Subject is under 18", false));

    let sex = v.item("SEX").unwrap();
    assert_eq!((sex.widget, sex.code_list.as_ref().map(Oid::as_str)), (Widget::Radio, Some("CL_SEX")));
    let sex_list = v.code_list("CL_SEX").unwrap();
    let choices: Vec<(&str, &str)> = sex_list.items.iter().map(|c| (c.value.as_str(), c.label.text.as_str())).collect();
    assert_eq!(choices, [("M", "Male"), ("F", "Female")]);
    // CL.RACE only names an external dictionary: free text, with a warning.
    let race = v.item("RACE").unwrap();
    assert_eq!((race.widget, race.code_list.as_ref()), (Widget::Text, None));
    assert!(d.0.iter().any(|w| w.message.contains("CodeList 'CL.RACE' has no choices")));

    let vs = &design.form("F_VS").unwrap().versions[0];
    let group = &vs.groups[0];
    assert_eq!(group.repeat, Some(Repeat { initial_rows: 1, max_rows: None, count: None }));
    // The ConditionDef says when NOT to collect: skip logic is its negation.
    assert_eq!(group.relevant, Some(Expression::oc("not(SCREENFAIL == True)")));
    let weight = vs.item("WEIGHT").unwrap();
    assert_eq!(weight.calculation, Some(Expression::oc("WEIGHT_KG = WEIGHT_LB * 0.453592")));
    assert_eq!((weight.widget, weight.decimals, weight.length), (Widget::Calculation, Some(2), Some(6)));
    assert_eq!(weight.checks[0].rule, CheckRule::Range { comparator: Comparator::GT, values: vec!["0".into()] });
    assert!(weight.checks[0].hard);
    let testcd = vs.code_list("CL_VSTESTCD").unwrap();
    assert_eq!(testcd.items.len(), 5, "EnumeratedItems are choices labelled with their code");
    assert_eq!(testcd.items[0].label, Text::plain("SYSBP"));
    // Python expressions are kept, with a warning that they must be rewritten.
    assert!(d.0.iter().any(|w| w.message.contains("'C.VSSKIP' is written in 'Python'")));
    // MDV.ODM.PRIOR is included by the version read, so it is read too (it is empty).
    assert!(!d.0.iter().any(|w| w.message.contains("is not read")));
}

// ----- OpenClinica-flavoured ODM ------------------------------------------------------------------

const OC_STUDY: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3" xmlns:OpenClinica="http://www.openclinica.org/ns/odm_ext_v130/v3.1"
     FileType="Snapshot" FileOID="F1" CreationDateTime="2026-01-01T00:00:00Z" ODMVersion="1.3">
  <Study OID="S_OC">
    <GlobalVariables><StudyName>OC study</StudyName><StudyDescription>d</StudyDescription><ProtocolName>OC</ProtocolName></GlobalVariables>
    <BasicDefinitions>
      <MeasurementUnit OID="MU_KG" Name="kg"><Symbol><TranslatedText>kg</TranslatedText></Symbol></MeasurementUnit>
    </BasicDefinitions>
    <MetaDataVersion OID="v1.0.0" Name="MetaDataVersion_v1.0.0">
      <Protocol>
        <StudyEventRef StudyEventOID="SE_FOLLOWUP" OrderNumber="2" Mandatory="No"/>
        <StudyEventRef StudyEventOID="SE_BASELINE" OrderNumber="1" Mandatory="Yes"/>
      </Protocol>
      <StudyEventDef OID="SE_BASELINE" Name="Baseline" Repeating="No" Type="Scheduled">
        <FormRef FormOID="F_VITALS_V1" OrderNumber="1" Mandatory="Yes"/>
        <FormRef FormOID="F_VITALS_V2" OrderNumber="2" Mandatory="Yes"/>
        <OpenClinica:EventDefinitionDetails StudyEventOID="SE_BASELINE">
          <OpenClinica:Description>First visit</OpenClinica:Description>
          <OpenClinica:Category>Visits</OpenClinica:Category>
        </OpenClinica:EventDefinitionDetails>
      </StudyEventDef>
      <StudyEventDef OID="SE_FOLLOWUP" Name="Follow-up" Repeating="Yes" Type="Unscheduled">
        <FormRef FormOID="F_VITALS_V2" OrderNumber="1" Mandatory="No"/>
      </StudyEventDef>
      <FormDef OID="F_VITALS_V1" Name="Vitals - v1" Repeating="No">
        <ItemGroupRef ItemGroupOID="IG_VITAL_MAIN" OrderNumber="1" Mandatory="No"/>
        <OpenClinica:FormDetails FormOID="F_VITALS_V1" ParentFormOID="F_VITALS">
          <OpenClinica:SectionDetails>
            <OpenClinica:Section SectionLabel="S1" SectionTitle="Measures" SectionInstructions="Seated" SectionPageNumber="1"/>
          </OpenClinica:SectionDetails>
          <OpenClinica:PresentInEventDefinition StudyEventOID="SE_BASELINE" IsDefaultVersion="No" NullValues="NI,UNK"
            PasswordRequired="Yes" DoubleDataEntry="Yes" HideCRF="No" SourceDataVerification="AllREQUIRED"/>
        </OpenClinica:FormDetails>
      </FormDef>
      <FormDef OID="F_VITALS_V2" Name="Vitals - v2" Repeating="No">
        <ItemGroupRef ItemGroupOID="IG_VITAL_MAIN" OrderNumber="1" Mandatory="No"/>
        <ItemGroupRef ItemGroupOID="IG_VITAL_BP" OrderNumber="2" Mandatory="No"/>
        <OpenClinica:FormDetails FormOID="F_VITALS_V2" ParentFormOID="F_VITALS">
          <OpenClinica:VersionDescription>Adds blood pressure</OpenClinica:VersionDescription>
          <OpenClinica:RevisionNotes>BP rows</OpenClinica:RevisionNotes>
          <OpenClinica:PresentInEventDefinition StudyEventOID="SE_BASELINE" IsDefaultVersion="Yes" NullValues="NI,UNK"
            PasswordRequired="Yes" DoubleDataEntry="Yes" HideCRF="No" SourceDataVerification="AllREQUIRED"/>
          <OpenClinica:PresentInEventDefinition StudyEventOID="SE_FOLLOWUP" IsDefaultVersion="Yes" NullValues=""
            PasswordRequired="No" DoubleDataEntry="No" HideCRF="Yes" SourceDataVerification="NOTREQUIRED"/>
        </OpenClinica:FormDetails>
      </FormDef>
      <ItemGroupDef OID="IG_VITAL_MAIN" Name="main" Repeating="No">
        <ItemRef ItemOID="I_VITAL_WEIGHT" OrderNumber="1" Mandatory="Yes"/>
        <ItemRef ItemOID="I_VITAL_POS" OrderNumber="2" Mandatory="No"/>
        <ItemRef ItemOID="I_VITAL_SYMPT" OrderNumber="3" Mandatory="No"/>
      </ItemGroupDef>
      <ItemGroupDef OID="IG_VITAL_BP" Name="bp" Repeating="Yes">
        <ItemRef ItemOID="I_VITAL_SYS" OrderNumber="1" Mandatory="Yes" CollectionExceptionConditionOID="CD_SYS"/>
        <ItemRef ItemOID="I_VITAL_POS2" OrderNumber="2" Mandatory="No"/>
        <OpenClinica:ItemGroupDetails ItemGroupOID="IG_VITAL_BP">
          <OpenClinica:PresentInForm FormOID="F_VITALS_V2" ShowGroup="Yes">
            <OpenClinica:ItemGroupHeader>Blood pressure</OpenClinica:ItemGroupHeader>
            <OpenClinica:ItemGroupRepeat RepeatNumber="3" RepeatMax="10"/>
          </OpenClinica:PresentInForm>
        </OpenClinica:ItemGroupDetails>
      </ItemGroupDef>
      <ItemDef OID="I_VITAL_WEIGHT" Name="weight" DataType="float" Length="5" SignificantDigits="1" OpenClinica:FormOIDs="F_VITALS_V1,F_VITALS_V2">
        <Question OpenClinica:QuestionNumber="1."><TranslatedText xml:lang="en">Weight</TranslatedText><TranslatedText xml:lang="fr">Poids</TranslatedText></Question>
        <MeasurementUnitRef MeasurementUnitOID="MU_KG"/>
        <RangeCheck Comparator="GE" SoftHard="Hard"><CheckValue>20</CheckValue><ErrorMessage><TranslatedText xml:lang="en">Too light</TranslatedText></ErrorMessage></RangeCheck>
        <OpenClinica:ItemDetails ItemOID="I_VITAL_WEIGHT">
          <OpenClinica:ItemPresentInForm FormOID="F_VITALS_V1" PHI="No" ShowItem="Yes">
            <OpenClinica:LeftItemText>Weight</OpenClinica:LeftItemText>
            <OpenClinica:RightItemText>kg</OpenClinica:RightItemText>
            <OpenClinica:SectionLabel>S1</OpenClinica:SectionLabel>
            <OpenClinica:ItemResponse ResponseType="text"/>
          </OpenClinica:ItemPresentInForm>
          <OpenClinica:ItemPresentInForm FormOID="F_VITALS_V2" PHI="Yes" ShowItem="No" DefaultValue="70">
            <OpenClinica:LeftItemText>Body weight</OpenClinica:LeftItemText>
            <OpenClinica:ItemHeader>Measures</OpenClinica:ItemHeader>
            <OpenClinica:ItemResponse ResponseType="text"/>
          </OpenClinica:ItemPresentInForm>
        </OpenClinica:ItemDetails>
      </ItemDef>
      <ItemDef OID="I_VITAL_POS" Name="position" DataType="text" Length="1">
        <Question><TranslatedText xml:lang="en">Position</TranslatedText></Question>
        <CodeListRef CodeListOID="CL_1"/>
        <OpenClinica:ItemDetails ItemOID="I_VITAL_POS">
          <OpenClinica:ItemPresentInForm FormOID="F_VITALS_V1" PHI="No" ShowItem="Yes">
            <OpenClinica:SectionLabel>S1</OpenClinica:SectionLabel>
            <OpenClinica:ItemResponse ResponseType="single-select" ResponseLayout="Horizontal"/>
          </OpenClinica:ItemPresentInForm>
          <OpenClinica:ItemPresentInForm FormOID="F_VITALS_V2" PHI="No" ShowItem="Yes">
            <OpenClinica:ItemResponse ResponseType="radio"/>
            <OpenClinica:SimpleConditionalDisplay>
              <OpenClinica:ControlItemName>weight</OpenClinica:ControlItemName>
              <OpenClinica:OptionValue>70</OpenClinica:OptionValue>
              <OpenClinica:Message>Shown for 70</OpenClinica:Message>
            </OpenClinica:SimpleConditionalDisplay>
          </OpenClinica:ItemPresentInForm>
        </OpenClinica:ItemDetails>
      </ItemDef>
      <ItemDef OID="I_VITAL_SYMPT" Name="symptoms" DataType="text" Length="20">
        <Question><TranslatedText xml:lang="en">Symptoms</TranslatedText></Question>
        <OpenClinica:MultiSelectListRef MultiSelectListID="MSL_2"/>
        <OpenClinica:ItemDetails ItemOID="I_VITAL_SYMPT">
          <OpenClinica:ItemPresentInForm FormOID="F_VITALS_V2" PHI="No" ShowItem="Yes">
            <OpenClinica:ItemResponse ResponseType="checkbox"/>
          </OpenClinica:ItemPresentInForm>
        </OpenClinica:ItemDetails>
      </ItemDef>
      <ItemDef OID="I_VITAL_SYS" Name="sys" DataType="integer" Length="3">
        <Question><TranslatedText xml:lang="en">Systolic</TranslatedText></Question>
      </ItemDef>
      <ItemDef OID="I_VITAL_POS2" Name="position" DataType="text">
        <Question><TranslatedText xml:lang="en">Position (BP)</TranslatedText></Question>
      </ItemDef>
      <CodeList OID="CL_1" Name="positions" DataType="text">
        <CodeListItem CodedValue="1"><Decode><TranslatedText xml:lang="en">Sitting</TranslatedText><TranslatedText xml:lang="fr">Assis</TranslatedText></Decode></CodeListItem>
        <CodeListItem CodedValue="2"><Decode><TranslatedText xml:lang="en">Standing</TranslatedText></Decode></CodeListItem>
      </CodeList>
      <ConditionDef OID="CD_SYS" Name="skip sys">
        <FormalExpression Context="XPath">not(${weight} &gt; 0)</FormalExpression>
      </ConditionDef>
      <OpenClinica:MultiSelectList ID="MSL_2" Name="symptoms" DataType="string" ActualDataType="string">
        <OpenClinica:MultiSelectListItem CodedOptionValue="a"><Decode><TranslatedText>Headache &amp; dizziness</TranslatedText></Decode></OpenClinica:MultiSelectListItem>
        <OpenClinica:MultiSelectListItem CodedOptionValue="b"><Decode><TranslatedText>Nausea</TranslatedText></Decode></OpenClinica:MultiSelectListItem>
      </OpenClinica:MultiSelectList>
    </MetaDataVersion>
  </Study>
</ODM>
"#;

#[test]
fn openclinica_form_versions_are_one_form_with_per_version_details() {
    let (odm, d) = read_metadata(OC_STUDY.as_bytes());
    assert!(!d.has_errors(), "{:#?}", errors(&d));
    let design = odm.unwrap().design;
    // Protocol order, not document order.
    let events: Vec<&str> = design.events.iter().map(|e| e.oid.as_str()).collect();
    assert_eq!(events, ["SE_BASELINE", "SE_FOLLOWUP"]);
    let baseline = &design.events[0];
    assert_eq!((baseline.description.as_deref(), baseline.category.as_deref()), (Some("First visit"), Some("Visits")));
    assert_eq!(
        baseline.forms,
        [EventForm {
            form_oid: oid("F_VITALS"),
            required: true,
            double_data_entry: true,
            sdv: SdvRequirement::Full,
            electronic_signature: true,
            hidden_from_sites: false,
            default_version: Some(oid("F_VITALS_V2")),
            allowed_versions: vec![],
            null_flavours: vec!["NI".into(), "UNK".into()],
            site_settings: std::collections::BTreeMap::new(),
            ..EventForm::new(oid("F_VITALS"))
        }]
    );
    let follow_up = &design.events[1];
    assert_eq!((follow_up.event_type, follow_up.repeating), (EventType::Unscheduled, true));
    assert_eq!(
        follow_up.forms,
        [EventForm {
            hidden_from_sites: true,
            allowed_versions: vec![oid("F_VITALS_V2")],
            ..EventForm::new(oid("F_VITALS"))
        }]
    );

    assert_eq!(design.forms.len(), 1);
    let form: &FormDef = &design.forms[0];
    assert_eq!((form.oid.as_str(), form.name.as_str()), ("F_VITALS", "Vitals"));
    let labels: Vec<(&str, &str)> = form.versions.iter().map(|v| (v.oid.as_str(), v.label.as_str())).collect();
    assert_eq!(labels, [("F_VITALS_V1", "v1"), ("F_VITALS_V2", "v2")]);

    let v1 = &form.versions[0];
    assert_eq!(v1.sections.len(), 1);
    assert_eq!((v1.sections[0].label.as_str(), v1.sections[0].instructions.as_deref()), ("S1", Some("Seated")));
    // The multiple-choice item is only in v2 (ItemPresentInForm lists the versions).
    let v1_items: Vec<&str> = v1.items.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(v1_items, ["weight", "position"]);
    let weight = v1.item("weight").unwrap();
    assert_eq!(weight.label.text, "Weight");
    assert_eq!(weight.label.translations, BTreeMap::from([("fr".to_owned(), "Poids".to_owned())]));
    assert_eq!((weight.right_text.as_deref(), weight.section.as_str()), (Some("kg"), "S1"));
    assert_eq!((weight.question_number.as_deref(), weight.units.as_deref()), (Some("1."), Some("kg")));
    assert_eq!(
        (weight.decimals, weight.required.clone(), weight.phi, weight.hidden),
        (Some(1), Required::Yes, false, false)
    );
    assert_eq!(v1.default_language.as_deref(), Some("en"));
    assert_eq!(v1.languages, ["fr"]);
    let position = v1.item("position").unwrap();
    assert_eq!((position.widget, position.appearance.as_deref()), (Widget::SingleSelect, Some("horizontal")));
    let positions = v1.code_list("CL_1").unwrap();
    assert_eq!(positions.items[0].label.translations.get("fr").map(String::as_str), Some("Assis"));

    let v2 = &form.versions[1];
    assert_eq!(
        (v2.description.as_deref(), v2.revision_notes.as_deref()),
        (Some("Adds blood pressure"), Some("BP rows"))
    );
    // No section details: one default section.
    assert_eq!(v2.sections.iter().map(|s| s.label.as_str()).collect::<Vec<_>>(), ["main"]);
    let weight = v2.item("weight").unwrap();
    // The per-version left item text wins; the ODM translations belong to another text.
    assert_eq!(weight.label, Text::plain("Body weight"));
    assert_eq!((weight.phi, weight.hidden, weight.default_value.as_deref()), (true, true, Some("70")));
    assert_eq!(weight.header.as_deref(), Some("Measures"));
    let position = v2.item("position").unwrap();
    assert_eq!(position.widget, Widget::Radio);
    assert_eq!(position.conditional_display.as_ref().map(|c| c.message.as_str()), Some("Shown for 70"));
    let symptoms = v2.item("symptoms").unwrap();
    assert_eq!((symptoms.widget, symptoms.code_list.as_ref().map(Oid::as_str)), (Widget::Checkbox, Some("CL_2")));
    let list = v2.code_list("CL_2").unwrap();
    assert_eq!(list.items[0].label, Text::plain("Headache & dizziness"));

    let bp = v2.group("IG_VITAL_BP").unwrap();
    assert_eq!(bp.repeat, Some(Repeat { initial_rows: 3, max_rows: Some(10), count: None }));
    assert_eq!(bp.header, Text::plain("Blood pressure"));
    let sys = v2.item("sys").unwrap();
    // `not(…)` negated is its inside.
    assert_eq!(sys.relevant, Some(Expression { dialect: Dialect::XPath, source: "${weight} > 0".into() }));
    // Two items named `position` in v2: the second is renamed, with a warning.
    let renamed = v2.items.iter().find(|i| i.oid.as_str() == "I_VITAL_POS2").unwrap();
    assert_eq!(renamed.name, "position_2");
    assert!(d.0.iter().any(|w| w.message.contains("named 'position_2'")));
}

#[test]
fn dangling_references_in_metadata_are_errors_naming_oid_and_line() {
    let broken = OC_STUDY
        .replace(r#"<ItemRef ItemOID="I_VITAL_SYS""#, r#"<ItemRef ItemOID="I_MISSING""#)
        .replace(r#"<CodeListRef CodeListOID="CL_1"/>"#, r#"<CodeListRef CodeListOID="CL_NONE"/>"#)
        .replace(
            r#"<FormRef FormOID="F_VITALS_V2" OrderNumber="1" Mandatory="No"/>"#,
            r#"<FormRef FormOID="F_GONE" OrderNumber="1" Mandatory="No"/>"#,
        )
        .replace("MultiSelectListID=\"MSL_2\"", "MultiSelectListID=\"MSL_9\"");
    let line_of = |needle: &str| broken.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let (design, d) = read_metadata(broken.as_bytes());
    assert!(design.is_none());
    let errs: Vec<(usize, String)> = d
        .errors()
        .map(|e| match e.location {
            Location::Xml { line, .. } => (line, e.message.clone()),
            _ => panic!("{e}"),
        })
        .collect();
    assert_eq!(
        errs,
        [
            (line_of("F_GONE"), "FormRef refers to FormOID 'F_GONE', but no FormDef has that OID.".to_owned()),
            (line_of("I_MISSING"), "ItemRef refers to ItemOID 'I_MISSING', but no ItemDef has that OID.".to_owned()),
            (line_of("CL_NONE"), "CodeListRef refers to CodeListOID 'CL_NONE', but no CodeList has that OID.".to_owned()),
            (
                line_of("MSL_9\""),
                "MultiSelectListRef refers to MultiSelectListID 'MSL_9', but no OpenClinica:MultiSelectList has that OID."
                    .to_owned()
            ),
        ]
    );
}

// ----- XML safety and well-formedness ----------------------------------------------------------------

#[test]
fn doctype_and_entity_declarations_are_refused() {
    let xxe = r#"<?xml version="1.0"?>
<!DOCTYPE ODM [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>
<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3"><Study OID="S"><GlobalVariables><StudyName>&xxe;</StudyName></GlobalVariables></Study></ODM>"#;
    let (design, d) = read_metadata(xxe.as_bytes());
    assert!(design.is_none());
    assert_eq!(d.0.len(), 1);
    assert_eq!(d.0[0].location, Location::Xml { line: 2, column: 1 });
    assert!(d.0[0].message.contains("<!DOCTYPE>"), "{}", d.0[0].message);

    let laughs = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;\">]><lolz>&lol2;</lolz>";
    let (design, d) = read_metadata(laughs.as_bytes());
    assert!(design.is_none());
    assert!(d.0[0].message.contains("entity declarations"));

    // Without a DTD an entity reference is undefined, so not expanded.
    let undefined = "<ODM xmlns=\"http://www.cdisc.org/ns/odm/v1.3\">\n  <Study>&lol;</Study></ODM>";
    let (design, d) = read_metadata(undefined.as_bytes());
    assert!(design.is_none());
    assert_eq!(d.0.len(), 1);
    assert!(d.0[0].message.contains("'&lol;' is not defined"), "{}", d.0[0].message);
    assert!(matches!(d.0[0].location, Location::Xml { line: 2, .. }));
}

#[test]
fn malformed_xml_is_one_error_with_line_and_column() {
    let xml = OC_STUDY.replace(
        "<ItemGroupRef ItemGroupOID=\"IG_VITAL_BP\" OrderNumber=\"2\" Mandatory=\"No\"/>",
        "<ItemGroupRef ItemGroupOID=\"IG_VITAL_BP\">",
    );
    let (design, d) = read_metadata(xml.as_bytes());
    assert!(design.is_none());
    assert_eq!(d.0.len(), 1, "{:#?}", d.0);
    // The unclosed ItemGroupRef is found where its FormDef closes: the second `</FormDef>`.
    let line = xml.lines().enumerate().filter(|(_, l)| l.trim() == "</FormDef>").nth(1).unwrap().0 + 1;
    assert_eq!(d.0[0].location, Location::Xml { line, column: 7 }, "{}", d.0[0].message);
    assert!(d.0[0].message.starts_with("The XML is not well formed"), "{}", d.0[0].message);

    let truncated = &OC_STUDY[..OC_STUDY.find("<CodeList ").unwrap()];
    let (_, d) = read_metadata(truncated.as_bytes());
    assert_eq!(d.0.len(), 1);
    assert!(d.0[0].message.contains("ends before"), "{}", d.0[0].message);
}

#[test]
fn oversized_files_and_other_encodings_are_refused() {
    let big = vec![b' '; MAX_BYTES + 1];
    let (design, d) = read_metadata(&big);
    assert!(design.is_none());
    assert_eq!(d.0[0].location, Location::File);

    let latin1 = "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><ODM/>";
    let (_, d) = read_metadata(latin1.as_bytes());
    assert!(d.0[0].message.contains("only UTF-8"));

    let odm2 = "<ODM xmlns=\"http://www.cdisc.org/ns/odm/v2.0\" FileType=\"Snapshot\"/>";
    let (_, d) = read_metadata(odm2.as_bytes());
    assert!(d.0[0].message.contains("ODM 2.0"));
}

// ----- round trips through the writer ---------------------------------------------------------------

fn write_and_read(design: &StudyDesign) -> StudyDesign {
    let study = StudyInfo {
        oid: "S_RT",
        name: "Round trip",
        description: "",
        protocol_name: "RT",
        metadata_version_oid: "v1",
        metadata_version_name: "v1",
        rules: None,
    };
    let mut out = Vec::new();
    let created = time::macros::datetime!(2026-01-01 0:00 UTC);
    write_metadata(&mut out, &study, design, OdmFlavour::Odm132OpenClinica, created, "RT").unwrap();
    let (back, d) = read_metadata(&out);
    assert!(!d.has_errors(), "{:#?}\n{}", errors(&d), String::from_utf8_lossy(&out));
    back.unwrap().design
}

#[test]
fn plain_odm_read_written_with_openclinica_extensions_reads_back_equal() {
    let (odm, _) = loads("odmlib-examples/odm132_complete.xml");
    let back = write_and_read(&odm.design);
    assert_eq!(back, odm.design);
}

/// The demo XLSForm placed in an event, out as OpenClinica-flavoured ODM 1.3.2 and back.
///
/// Deliberate differences, which `as_odm_carries_it` applies to the original:
/// - ODM 1.3.2 has no hint, brief description, required message, readonly flag, `choice_filter`,
///   or XLSForm appearance other than OpenClinica's response layout;
/// - a note is written as a text item (OpenClinica has no note response type);
/// - languages travel as `xml:lang` tags (`Français (fr)` → `fr`); OpenClinica's section
///   details carry a section title without translations;
/// - the writer fills OpenClinica's default `Length` (and `SignificantDigits` 6 for REAL);
/// - items of a group are written together, so a version's items come back grouped.
#[test]
fn the_demo_form_written_with_openclinica_extensions_reads_back_equal() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../demo/forms/vital_signs.xlsx");
    let wb = Workbook::from_bytes(&std::fs::read(&path).unwrap()).unwrap();
    let (form, d) = xlsform::import(&wb, Context::default());
    assert!(!d.has_errors());
    let form = form.unwrap();
    let design = StudyDesign {
        events: vec![casebook_domain::design::EventDef {
            oid: oid("SE_VISIT"),
            name: "Visit".into(),
            description: Some("Every visit".into()),
            category: None,
            event_type: EventType::Scheduled,
            repeating: true,
            forms: vec![EventForm {
                required: true,
                sdv: SdvRequirement::Partial,
                null_flavours: vec!["NASK".into()],
                ..EventForm::new(form.form_oid.clone())
            }],
        }],
        forms: vec![FormDef {
            oid: form.form_oid.clone(),
            name: form.form_name.clone(),
            description: None,
            versions: vec![form.version.clone()],
        }],
    };
    let mut back = write_and_read(&design);
    let mut expected = as_odm_carries_it(design);
    for version in back.forms.iter_mut().flat_map(|f| f.versions.iter_mut()) {
        version.source = casebook_domain::design::FormSource::XlsForm;
        for item in &mut version.items {
            // Compared below against what the writer fills in.
            assert!(
                item.length.is_some() || !matches!(item.data_type, DataType::Text | DataType::Integer | DataType::Real)
            );
            item.length = None;
            item.decimals = None;
        }
    }
    for version in expected.forms.iter_mut().flat_map(|f| f.versions.iter_mut()) {
        for item in &mut version.items {
            item.length = None;
            item.decimals = None;
        }
    }
    assert_eq!(back, expected);
}

fn as_odm_carries_it(mut design: StudyDesign) -> StudyDesign {
    let tag = |language: &str| {
        language.rsplit_once('(').map_or(language, |(_, code)| code.trim_end_matches(')')).trim().to_owned()
    };
    let retag = |text: &mut Text| {
        text.translations = std::mem::take(&mut text.translations).into_iter().map(|(l, t)| (tag(&l), t)).collect();
    };
    for version in design.forms.iter_mut().flat_map(|f| f.versions.iter_mut()) {
        version.default_language = version.default_language.as_deref().map(tag);
        version.languages =
            version.languages.iter().map(|l| tag(l)).filter(|l| Some(l) != version.default_language.as_ref()).collect();
        version.languages.sort();
        version.languages.dedup();
        let groups: Vec<Oid> = version.groups.iter().map(|g| g.oid.clone()).collect();
        version.items.sort_by_key(|i| groups.iter().position(|g| *g == i.group_oid));
        for item in &mut version.items {
            item.hint = Text::default();
            item.brief_description = None;
            item.required_message = None;
            item.readonly = false;
            item.choice_filter = None;
            item.external = None;
            item.extra.clear();
            item.appearance = item.appearance.take().filter(|a| a == "horizontal" || a == "vertical");
            if item.widget == Widget::Note {
                item.widget = Widget::Text;
            }
            retag(&mut item.label);
            for check in &mut item.checks {
                retag(&mut check.message);
            }
        }
        for group in &mut version.groups {
            retag(&mut group.header);
        }
        for list in &mut version.code_lists {
            for choice in &mut list.items {
                retag(&mut choice.label);
            }
        }
        for section in &mut version.sections {
            section.title.translations.clear();
        }
    }
    design
}
