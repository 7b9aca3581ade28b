//! ODM clinical data in, streamed: OpenClinica 3- and 4-flavoured documents read into the
//! records a caller imports; every sample with clinical data reads whole, with the counts a
//! plain text scan finds; positions are the file's; broken and unsafe files end the stream with
//! one located error; a large generated file streams through without being held.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use casebook_formats::diagnostic::{Diagnostic, Diagnostics, Location, Severity};
use casebook_formats::odm::clinical::{
    ChildNoteRecord, ClinicalReader, EventRecord, EventRef, Flavour, FormRecord, GroupRecord, ItemRecord, MAX_DEPTH,
    MAX_DIAGNOSTICS, MAX_EVENT_BYTES, MAX_FORM_ENTRIES, NoteRecord, NotesRecord, Record, StudyRecord, SubjectRecord,
    SubjectRef, TransactionType, UpsertOn,
};

use crate::fixtures;

/// Every record of `xml`, its diagnostics and flavour; panics on an error that ends the stream.
fn read_all(xml: &[u8]) -> (Vec<Record>, Diagnostics, Flavour) {
    let mut reader = ClinicalReader::new(xml);
    let mut records = Vec::new();
    loop {
        match reader.next_record() {
            Ok(Some(record)) => records.push(record),
            Ok(None) => break,
            Err(fatal) => panic!("{fatal}"),
        }
    }
    (records, reader.take_diagnostics(), reader.flavour())
}

/// The records before the error that ends the stream, and that error.
fn read_to_error(xml: &[u8], max_bytes: Option<u64>) -> (Vec<Record>, Diagnostic) {
    let mut reader = ClinicalReader::with_max_bytes(xml, max_bytes);
    let mut records = Vec::new();
    loop {
        match reader.next_record() {
            Ok(Some(record)) => records.push(record),
            Ok(None) => panic!("the stream ended without an error"),
            Err(fatal) => {
                // The stream is over.
                assert_eq!(reader.next_record(), Ok(None));
                return (records, fatal);
            }
        }
    }
}

/// The 1-based line and column (in characters) where `needle` first occurs in `text`.
fn position(text: &str, needle: &str) -> (usize, usize) {
    let offset = text.find(needle).unwrap_or_else(|| panic!("'{needle}' is not in the text"));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn xml_at(line: usize, column: usize) -> Location {
    Location::Xml { line, column }
}

/// Diagnostics as `line:column message`.
fn listed(d: &Diagnostics) -> Vec<String> {
    d.0.iter()
        .map(|d| match d.location {
            Location::Xml { line, column } => format!("{line}:{column} {}", d.message),
            ref other => format!("{other} {}", d.message),
        })
        .collect()
}

fn s(value: &str) -> Option<String> {
    Some(value.to_owned())
}

fn oc(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

// ----- OpenClinica 3 ----------------------------------------------------------------------------

const OC3: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3" xmlns:OpenClinica="http://www.openclinica.org/ns/odm_ext_v130/v3.1"
     ODMVersion="1.3" FileType="Snapshot" FileOID="HEART-EXPORT-1" CreationDateTime="2026-02-01T10:00:00">
  <ClinicalData StudyOID="S_HEART" MetaDataVersionOID="v1.0.0">
    <UpsertOn NotStarted="true" DataEntryStarted="false" DataEntryComplete="false"/>
    <SubjectData SubjectKey="SS_H001" OpenClinica:StudySubjectID="H-001" OpenClinica:UniqueIdentifier="P-77"
        OpenClinica:Status="available" OpenClinica:DateOfBirth="1961-04-09" OpenClinica:Sex="f"
        OpenClinica:EnrollmentDate="2026-01-20" OpenClinica:SecondaryID="ext 9" OpenClinica:Mood="calm">
      <SiteRef LocationOID="S_HEART_01"/>
      <StudyEventData StudyEventOID="SE_BASELINE" StudyEventRepeatKey="1" OpenClinica:StartDate="2026-01-21"
          OpenClinica:Status="data entry started" OpenClinica:StudyEventLocation="Ward 3">
        <FormData FormOID="F_VITALS_V2" OpenClinica:Version="v2" OpenClinica:InterviewerName="dr who"
            OpenClinica:InterviewDate="2026-01-21" OpenClinica:Status="initial data entry">
          <ItemGroupData ItemGroupOID="IG_VITALS_BP" ItemGroupRepeatKey="1" TransactionType="Insert">
            <ItemData ItemOID="I_VITAL_SYS" Value="120">
              <MeasurementUnitRef MeasurementUnitOID="MU_MMHG"/>
              <OpenClinica:AuditLogs EntityID="I_VITAL_SYS">
                <OpenClinica:AuditLog ID="AL_1" UserID="USR_1" AuditType="Item data value updated" NewValue="120"/>
              </OpenClinica:AuditLogs>
              <OpenClinica:DiscrepancyNotes EntityID="I_VITAL_SYS">
                <OpenClinica:DiscrepancyNote ID="DN_5" Status="New" NoteType="Query" DateUpdated="2026-01-22"
                    EntityName="value" NumberOfChildNotes="1">
                  <OpenClinica:ChildNote ID="CDN_5" Status="New" DateCreated="2026-01-22" Name="value">
                    <OpenClinica:Description>Too high?</OpenClinica:Description>
                    <OpenClinica:DetailedNote>
                      Please check &amp; confirm.
                    </OpenClinica:DetailedNote>
                    <UserRef OpenClinica:UserName="mon1" OpenClinica:FullName="Mona Itor"/>
                  </OpenClinica:ChildNote>
                </OpenClinica:DiscrepancyNote>
              </OpenClinica:DiscrepancyNotes>
            </ItemData>
            <ItemData ItemOID="I_VITAL_DIA" IsNull="Yes" OpenClinica:ReasonForNull="NASK"/>
          </ItemGroupData>
          <ItemGroupData ItemGroupOID="IG_VITALS_BP" ItemGroupRepeatKey="2" TransactionType="Insert">
            <ItemData ItemOID="I_VITAL_SYS" Value=" 118 "/>
            <ItemData ItemOID="I_VITAL_DIA" Value=""/>
          </ItemGroupData>
        </FormData>
      </StudyEventData>
      <OpenClinica:DiscrepancyNotes EntityID="SS_H001">
        <OpenClinica:DiscrepancyNote ID="DN_9" Status="Closed" NoteType="Annotation" EntityName="enrollment_date">
          <OpenClinica:ChildNote ID="CDN_9" Status="Closed">
            <OpenClinica:Description>Enrolled late</OpenClinica:Description>
          </OpenClinica:ChildNote>
        </OpenClinica:DiscrepancyNote>
      </OpenClinica:DiscrepancyNotes>
    </SubjectData>
  </ClinicalData>
</ODM>
"#;

#[test]
fn an_openclinica_3_export_reads_into_study_subject_event_form_and_notes_records() {
    let at = |needle: &str| position(OC3, needle);
    let (records, d, flavour) = read_all(OC3.as_bytes());
    assert_eq!(listed(&d), Vec::<String>::new());
    assert_eq!(flavour, Flavour::OpenClinica3);

    let subject = SubjectRef { key: s("SS_H001"), label: s("H-001") };
    let event = EventRef { oid: "SE_BASELINE".into(), repeat_key: s("1") };
    let (study_line, study_column) = at("<ClinicalData");
    let (subject_line, subject_column) = at("<SubjectData");
    let (event_line, event_column) = at("<StudyEventData");
    let (form_line, form_column) = at("<FormData");
    let (sys_line, sys_column) = at(r#"<ItemData ItemOID="I_VITAL_SYS" Value="120""#);
    let (dia_line, dia_column) = at(r#"<ItemData ItemOID="I_VITAL_DIA" IsNull"#);
    let (group2_line, group2_column) = at(r#"<ItemGroupData ItemGroupOID="IG_VITALS_BP" ItemGroupRepeatKey="2""#);
    let (note_line, note_column) = at(r#"<OpenClinica:DiscrepancyNote ID="DN_5""#);
    let (child_line, child_column) = at(r#"<OpenClinica:ChildNote ID="CDN_5""#);
    let (notes9_line, notes9_column) = at(r#"<OpenClinica:DiscrepancyNotes EntityID="SS_H001""#);
    let (note9_line, note9_column) = at(r#"<OpenClinica:DiscrepancyNote ID="DN_9""#);
    let (child9_line, child9_column) = at(r#"<OpenClinica:ChildNote ID="CDN_9""#);
    let expected = vec![
        Record::Study(StudyRecord {
            study_oid: "S_HEART".into(),
            metadata_version_oid: "v1.0.0".into(),
            upsert_on: Some(UpsertOn { not_started: true, data_entry_started: false, data_entry_complete: false }),
            other_openclinica: BTreeMap::new(),
            line: study_line,
            column: study_column,
        }),
        Record::Subject(SubjectRecord {
            study_oid: "S_HEART".into(),
            subject: subject.clone(),
            transaction_type: None,
            unique_identifier: s("P-77"),
            status: s("available"),
            date_of_birth: s("1961-04-09"),
            year_of_birth: None,
            sex: s("f"),
            enrollment_date: s("2026-01-20"),
            secondary_id: s("ext 9"),
            site_oid: s("S_HEART_01"),
            investigator_oid: None,
            other_openclinica: oc(&[("Mood", "calm")]),
            line: subject_line,
            column: subject_column,
        }),
        Record::Event(EventRecord {
            study_oid: "S_HEART".into(),
            subject: subject.clone(),
            event_oid: "SE_BASELINE".into(),
            repeat_key: s("1"),
            transaction_type: None,
            start_date: s("2026-01-21"),
            end_date: None,
            status: s("data entry started"),
            workflow_status: None,
            location: s("Ward 3"),
            other_openclinica: BTreeMap::new(),
            line: event_line,
            column: event_column,
        }),
        Record::Form(FormRecord {
            study_oid: "S_HEART".into(),
            subject: subject.clone(),
            event,
            form_oid: "F_VITALS_V2".into(),
            repeat_key: None,
            transaction_type: None,
            version: s("v2"),
            form_layout_oid: None,
            status: s("initial data entry"),
            workflow_status: None,
            interviewer_name: s("dr who"),
            interview_date: s("2026-01-21"),
            sdv_status: None,
            reason_for_change: None,
            other_openclinica: BTreeMap::new(),
            groups: vec![
                GroupRecord {
                    oid: "IG_VITALS_BP".into(),
                    repeat_key: s("1"),
                    transaction_type: Some(TransactionType::Insert),
                    other_openclinica: BTreeMap::new(),
                    items: vec![
                        ItemRecord {
                            oid: "I_VITAL_SYS".into(),
                            value: s("120"),
                            measurement_unit_oid: s("MU_MMHG"),
                            notes: vec![NoteRecord {
                                entity_id: s("I_VITAL_SYS"),
                                entity_name: s("value"),
                                id: s("DN_5"),
                                note_type: s("Query"),
                                status: s("New"),
                                date_updated: s("2026-01-22"),
                                children: vec![ChildNoteRecord {
                                    id: s("CDN_5"),
                                    status: s("New"),
                                    date_created: s("2026-01-22"),
                                    name: s("value"),
                                    description: s("Too high?"),
                                    detailed_note: s("Please check & confirm."),
                                    user_name: s("mon1"),
                                    user_full_name: s("Mona Itor"),
                                    line: child_line,
                                    column: child_column,
                                }],
                                line: note_line,
                                column: note_column,
                            }],
                            line: sys_line,
                            column: sys_column,
                            ..ItemRecord::default()
                        },
                        ItemRecord {
                            oid: "I_VITAL_DIA".into(),
                            is_null: true,
                            reason_for_null: s("NASK"),
                            line: dia_line,
                            column: dia_column,
                            ..ItemRecord::default()
                        },
                    ],
                    line: at("<ItemGroupData").0,
                    column: at("<ItemGroupData").1,
                },
                GroupRecord {
                    oid: "IG_VITALS_BP".into(),
                    repeat_key: s("2"),
                    transaction_type: Some(TransactionType::Insert),
                    other_openclinica: BTreeMap::new(),
                    items: vec![
                        // Values are trimmed; an empty Value is an empty value, not a null.
                        ItemRecord {
                            oid: "I_VITAL_SYS".into(),
                            value: s("118"),
                            line: group2_line + 1,
                            column: 13,
                            ..ItemRecord::default()
                        },
                        ItemRecord {
                            oid: "I_VITAL_DIA".into(),
                            value: s(""),
                            line: group2_line + 2,
                            column: 13,
                            ..ItemRecord::default()
                        },
                    ],
                    line: group2_line,
                    column: group2_column,
                },
            ],
            notes: vec![],
            line: form_line,
            column: form_column,
        }),
        // Notes on the participant come after its events: a record of their own.
        Record::Notes(NotesRecord {
            study_oid: "S_HEART".into(),
            subject,
            event: None,
            notes: vec![NoteRecord {
                entity_id: s("SS_H001"),
                entity_name: s("enrollment_date"),
                id: s("DN_9"),
                note_type: s("Annotation"),
                status: s("Closed"),
                date_updated: None,
                children: vec![ChildNoteRecord {
                    id: s("CDN_9"),
                    status: s("Closed"),
                    description: s("Enrolled late"),
                    line: child9_line,
                    column: child9_column,
                    ..ChildNoteRecord::default()
                }],
                line: note9_line,
                column: note9_column,
            }],
            line: notes9_line,
            column: notes9_column,
        }),
    ];
    assert_eq!(records, expected);
}

// ----- OpenClinica 4 ----------------------------------------------------------------------------

const OC4: &str = r#"<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3" xmlns:OpenClinica="http://www.openclinica.org/ns/odm_ext_v130/v3.1">
  <ClinicalData StudyOID="S_LUNG" MetaDataVersionOID="v1.0.0">
    <SubjectData OpenClinica:StudySubjectID="L-042">
      <StudyEventData StudyEventOID="SE_FOLLOWUP" OpenClinica:StartDate="2026-03-01 10:30"
          OpenClinica:WorkflowStatus="scheduled" OpenClinica:Signed="false">
        <FormData FormOID="F_SYMPTOMS" TransactionType="Upsert" OpenClinica:FormLayoutOID="SYMPTOMS_V3"
            OpenClinica:WorkflowStatus="completed" OpenClinica:SdvStatus="not done"
            OpenClinica:ReasonForChangeForCompleteForms="Corrected after a call">
          <ItemGroupData ItemGroupOID="IG_SYMPTOMS" OpenClinica:ItemGroupName="symptoms">
            <ItemData ItemOID="I_COUGH" Value="1" OpenClinica:ItemName="cough"/>
            <ItemData ItemOID="I_NOTE" Value="dry,&#10;at night &#233;"/>
          </ItemGroupData>
        </FormData>
      </StudyEventData>
      <StudyEventData StudyEventOID="SE_PHONE" StudyEventRepeatKey="3"/>
    </SubjectData>
  </ClinicalData>
</ODM>"#;

#[test]
fn an_openclinica_4_import_reads_with_participant_labels_layouts_and_workflow_statuses() {
    let mut reader = ClinicalReader::new(OC4.as_bytes());
    // A participant named by label only says OpenClinica 4 (the study is yielded at its first
    // participant, so that participant has been read).
    let Some(Record::Study(study)) = reader.next_record().unwrap() else { panic!("no study") };
    assert_eq!((study.study_oid.as_str(), study.upsert_on), ("S_LUNG", None));
    assert_eq!(reader.flavour(), Flavour::OpenClinica4);
    let Some(Record::Subject(subject)) = reader.next_record().unwrap() else { panic!("no subject") };
    let label_only = SubjectRef { key: None, label: s("L-042") };
    assert_eq!(
        subject,
        SubjectRecord {
            study_oid: "S_LUNG".into(),
            subject: label_only.clone(),
            line: 3,
            column: 5,
            ..SubjectRecord::default()
        }
    );

    let Some(Record::Event(event)) = reader.next_record().unwrap() else { panic!("no event") };
    assert_eq!(
        event,
        EventRecord {
            study_oid: "S_LUNG".into(),
            subject: label_only.clone(),
            event_oid: "SE_FOLLOWUP".into(),
            start_date: s("2026-03-01 10:30"),
            workflow_status: s("scheduled"),
            other_openclinica: oc(&[("Signed", "false")]),
            line: 4,
            column: 7,
            ..EventRecord::default()
        }
    );
    let Some(Record::Form(form)) = reader.next_record().unwrap() else { panic!("no form") };
    assert_eq!(
        form,
        FormRecord {
            study_oid: "S_LUNG".into(),
            subject: label_only.clone(),
            event: EventRef { oid: "SE_FOLLOWUP".into(), repeat_key: None },
            form_oid: "F_SYMPTOMS".into(),
            transaction_type: Some(TransactionType::Upsert),
            form_layout_oid: s("SYMPTOMS_V3"),
            workflow_status: s("completed"),
            sdv_status: s("not done"),
            reason_for_change: s("Corrected after a call"),
            groups: vec![GroupRecord {
                oid: "IG_SYMPTOMS".into(),
                other_openclinica: oc(&[("ItemGroupName", "symptoms")]),
                items: vec![
                    ItemRecord {
                        oid: "I_COUGH".into(),
                        value: s("1"),
                        other_openclinica: oc(&[("ItemName", "cough")]),
                        line: 10,
                        column: 13,
                        ..ItemRecord::default()
                    },
                    // A character reference keeps its line feed (a literal one would be a space).
                    ItemRecord {
                        oid: "I_NOTE".into(),
                        value: s("dry,\nat night é"),
                        line: 11,
                        column: 13,
                        ..ItemRecord::default()
                    },
                ],
                line: 9,
                column: 11,
                ..GroupRecord::default()
            }],
            line: 6,
            column: 9,
            ..FormRecord::default()
        }
    );
    // An event without forms is yielded at its end.
    let Some(Record::Event(phone)) = reader.next_record().unwrap() else { panic!("no second event") };
    assert_eq!(phone.event_ref(), EventRef { oid: "SE_PHONE".into(), repeat_key: s("3") });
    assert_eq!((phone.line, phone.column), position(OC4, r#"<StudyEventData StudyEventOID="SE_PHONE""#));
    assert_eq!(reader.next_record(), Ok(None));
    assert_eq!(listed(reader.diagnostics()), Vec::<String>::new());
}

#[test]
fn typed_item_data_reads_its_text_as_the_value() {
    let xml = r#"<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3">
<ClinicalData StudyOID="S" MetaDataVersionOID="1">
<SubjectData SubjectKey="7" TransactionType="Update">
<StudyEventData StudyEventOID="SE" TransactionType="Context">
<FormData FormOID="F" FormRepeatKey="2">
<ItemGroupData ItemGroupOID="IG">
<ItemDataInteger ItemOID="I_N" MeasurementUnitOID="MU_KG" TransactionType="Remove"> 72 </ItemDataInteger>
<ItemDataString ItemOID="I_S">a &lt;b&gt; <![CDATA[c & d]]></ItemDataString>
<ItemDataDate ItemOID="I_D"/>
</ItemGroupData></FormData></StudyEventData></SubjectData></ClinicalData></ODM>"#;
    let (records, d, flavour) = read_all(xml.as_bytes());
    assert_eq!((listed(&d), flavour), (Vec::<String>::new(), Flavour::Plain));
    let Record::Subject(subject) = &records[1] else { panic!() };
    assert_eq!(subject.transaction_type, Some(TransactionType::Update));
    let Record::Event(event) = &records[2] else { panic!() };
    assert_eq!(event.transaction_type, Some(TransactionType::Context));
    let Record::Form(form) = &records[3] else { panic!() };
    assert_eq!(form.repeat_key, s("2"));
    let typed = |oid: &str, data_type: &str, value: &str, line: usize| ItemRecord {
        oid: oid.into(),
        value: s(value),
        data_type: s(data_type),
        line,
        column: 1,
        ..ItemRecord::default()
    };
    assert_eq!(
        form.groups[0].items,
        [
            ItemRecord {
                measurement_unit_oid: s("MU_KG"),
                transaction_type: Some(TransactionType::Remove),
                ..typed("I_N", "Integer", "72", 7)
            },
            typed("I_S", "String", "a <b> c & d", 8),
            typed("I_D", "Date", "", 9),
        ]
    );
}

// ----- problems that do not stop the reading ----------------------------------------------------

#[test]
fn problems_in_the_data_are_diagnostics_at_their_line_and_the_reading_goes_on() {
    let xml = r#"<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3" xmlns:vendor="urn:vendor">
  <ClinicalData StudyOID="S" MetaDataVersionOID="1">
    <SubjectData SubjectKey="1" TransactionType="insert" vendor:Flag="x">
      <StudyEventData StudyEventOID="SE" Repeat="1" StudyEventRepeatKey="">
        <vendor:Extra><Anything/></vendor:Extra>
        <FormData FormOID="F">
          <ItemGroupData ItemGroupOID="IG">
            <ItemData ItemOID="I_A" value="5"/>
            <ItemData ItemOID="I_B">5</ItemData>
            <ItemData ItemOID="I_C" IsNull="No"/>
            <ItemData Value="x"/>
            <Comment>hello</Comment>
            <AuditRecord><UserRef UserOID="U"/><LocationRef LocationOID="L"/><DateTimeStamp>2026-01-01T00:00:00</DateTimeStamp></AuditRecord>
          </ItemGroupData>
          <SubjectData SubjectKey="2"/>
        </FormData>
      </StudyEventData>
    </SubjectData>
    <UpsertOn NotStarted="maybe"/>
    <SubjectData/>
  </ClinicalData>
</ODM>"#;
    let (records, d, _) = read_all(xml.as_bytes());
    assert_eq!(
        listed(&d),
        [
            "3:5 <SubjectData> has TransactionType 'insert'; ODM allows Insert, Update, Remove, Upsert or Context.",
            "4:7 <StudyEventData> has an attribute 'Repeat' that ODM does not define; it is ignored.",
            "4:7 <StudyEventData> has an empty StudyEventRepeatKey.",
            "8:13 <ItemData> has an attribute 'value' that ODM does not define; it is ignored.",
            "9:13 <ItemData> holds text, which ODM does not allow there; it is ignored. ODM 1.3 puts the value in \
             the Value attribute (or in a typed element such as <ItemDataString>).",
            "10:13 <ItemData> has IsNull=\"No\"; ODM allows only \"Yes\".",
            "11:13 <ItemData> has no ItemOID.",
            "12:13 <Comment> is not an element ODM allows in <ItemGroupData>; it is skipped.",
            "15:11 <SubjectData> is not an element ODM allows in <FormData>; it is skipped.",
            "19:5 <UpsertOn> has NotStarted=\"maybe\"; it must be true or false.",
            "19:5 <UpsertOn> comes after a <SubjectData>; it must come first and is ignored.",
            "20:5 <SubjectData> has no SubjectKey.",
        ]
    );
    assert!(d.0.iter().all(|d| d.severity == Severity::Error || d.message.contains("must come first")));
    // Everything readable was read: the item without a value, the one with a text.
    let forms: Vec<&FormRecord> = records
        .iter()
        .filter_map(|r| match r {
            Record::Form(f) => Some(f),
            _ => None,
        })
        .collect();
    let items: Vec<(&str, Option<&str>, bool)> =
        forms[0].groups[0].items.iter().map(|i| (i.oid.as_str(), i.value.as_deref(), i.is_null)).collect();
    assert_eq!(items, [("I_A", None, false), ("I_B", None, false), ("I_C", None, false), ("", Some("x"), false)]);
    assert_eq!(records.iter().filter(|r| matches!(r, Record::Subject(_))).count(), 2);
}

// ----- the samples ------------------------------------------------------------------------------

/// Every file under `dir` whose name ends in `.xml`, sorted.
fn xml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(xml_files(&path));
        } else if path.extension().is_some_and(|e| e == "xml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Subjects, events, forms and items counted with a plain text scan of the `ClinicalData`
/// sections (the samples use no prefix for ODM elements).
fn scan_counts(text: &str) -> [usize; 4] {
    let mut counts = [0; 4];
    for section in text.split("<ClinicalData").skip(1) {
        let section = section.split("</ClinicalData>").next().unwrap();
        for (i, tag) in ["<SubjectData", "<StudyEventData", "<FormData", "<ItemData"].iter().enumerate() {
            counts[i] += section.matches(tag).count();
        }
    }
    counts
}

fn record_counts(records: &[Record]) -> [usize; 4] {
    let mut counts = [0; 4];
    for record in records {
        match record {
            Record::Subject(_) => counts[0] += 1,
            Record::Event(_) => counts[1] += 1,
            Record::Form(f) => {
                counts[2] += 1;
                counts[3] += f.groups.iter().map(|g| g.items.len()).sum::<usize>();
            }
            Record::Study(_) | Record::Notes(_) => {}
        }
    }
    counts
}

#[test]
fn every_sample_with_clinical_data_reads_whole_with_the_counts_a_text_scan_finds() {
    let files: Vec<(PathBuf, String)> = xml_files(&fixtures().join("odm/samples"))
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            (path, text)
        })
        .filter(|(_, text)| text.contains("<ClinicalData"))
        .collect();
    assert!(files.len() >= 8, "only {} samples with clinical data", files.len());
    for (path, text) in &files {
        let name = path.display();
        let mut reader = ClinicalReader::new(BufReader::with_capacity(64, text.as_bytes()));
        let mut records = Vec::new();
        while let Some(record) = reader.next_record().unwrap_or_else(|e| panic!("{name}: {e}")) {
            records.push(record);
        }
        assert_eq!(record_counts(&records), scan_counts(text), "{name}");
        assert_eq!(
            records.iter().filter(|r| matches!(r, Record::Study(_))).count(),
            text.matches("<ClinicalData").count(),
            "{name}"
        );
        assert_eq!(listed(reader.diagnostics()), Vec::<String>::new(), "{name}");
        assert_eq!(reader.flavour(), Flavour::Plain, "{name}");
    }
}

#[test]
fn a_bad_date_and_a_dangling_item_oid_read_fine_at_their_lines() {
    let cases = [
        ("own/demo_xsdvalid_bad_date_value.xml", r#"<ItemData ItemOID="IT.BRTHDAT" Value="1970-13-45""#, "IT.BRTHDAT"),
        ("own/demo_xsdvalid_dangling_itemoid.xml", r#"<ItemData ItemOID="IT.NOPE""#, "IT.NOPE"),
    ];
    for (path, needle, oid) in cases {
        let text = std::fs::read_to_string(fixtures().join("odm/samples").join(path)).unwrap();
        let (line, column) = position(&text, needle);
        let (records, d, _) = read_all(text.as_bytes());
        assert!(d.0.is_empty(), "{path}: {:?}", listed(&d));
        let item = records
            .iter()
            .filter_map(|r| match r {
                Record::Form(f) => Some(f),
                _ => None,
            })
            .flat_map(|f| &f.groups)
            .flat_map(|g| &g.items)
            .find(|i| i.oid == oid)
            .unwrap();
        assert_eq!((item.line, item.column), (line, column), "{path}");
    }
    // The lines, as an editor shows them.
    let text = std::fs::read_to_string(fixtures().join("odm/samples/own/demo_xsdvalid_bad_date_value.xml")).unwrap();
    assert_eq!(position(&text, "1970-13-45").0, 72);
}

#[test]
fn positions_count_characters_and_ignore_a_byte_order_mark_and_carriage_returns() {
    let xml = "\u{FEFF}<ODM xmlns=\"http://www.cdisc.org/ns/odm/v1.3\">\r\n<ClinicalData StudyOID=\"Ü\" \
               MetaDataVersionOID=\"1\">\r\n<SubjectData SubjectKey=\"é\"><StudyEventData StudyEventOID=\"SE\">\r\n\
               <FormData FormOID=\"F\"><ItemGroupData ItemGroupOID=\"ÄÖ\">\r\n  <ItemData ItemOID=\"I\" Value=\"ß\"/>\r\n\
               </ItemGroupData></FormData></StudyEventData></SubjectData></ClinicalData></ODM>";
    let (records, _, _) = read_all(xml.as_bytes());
    let locations: Vec<Location> = records.iter().map(Record::location).collect();
    assert_eq!(locations, [xml_at(2, 1), xml_at(3, 1), xml_at(3, 29), xml_at(4, 1)]);
    let Record::Form(form) = &records[3] else { panic!() };
    assert_eq!((form.groups[0].line, form.groups[0].column), (4, 23));
    assert_eq!((form.groups[0].items[0].line, form.groups[0].items[0].column), (5, 3));
}

// ----- errors that end the stream ---------------------------------------------------------------

const DEMO_HEAD: &str = r#"<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3">
  <ClinicalData StudyOID="S" MetaDataVersionOID="1">
    <SubjectData SubjectKey="1">
"#;

#[test]
fn malformed_xml_ends_the_stream_at_its_line_and_column_after_the_records_before_it() {
    let xml = format!("{DEMO_HEAD}      <StudyEventData StudyEventOID=\"SE\">\n    </SubjectData>\n</ODM>");
    let (records, fatal) = read_to_error(xml.as_bytes(), None);
    assert_eq!(records.len(), 2);
    assert_eq!(fatal.severity, Severity::Error);
    assert_eq!(fatal.location, xml_at(5, 5));
    assert!(fatal.message.starts_with("The XML is not well formed:"), "{}", fatal.message);
    assert!(fatal.message.contains("StudyEventData"), "{}", fatal.message);

    // A file that stops before its end.
    let (_, fatal) = read_to_error(format!("{DEMO_HEAD}      <StudyEventData StudyEventOID=\"SE\">").as_bytes(), None);
    assert_eq!(
        (fatal.location, fatal.message),
        (xml_at(4, 7), "The XML is not well formed: the file ends before <StudyEventData> is closed.".to_owned())
    );
    // A broken attribute.
    let (_, fatal) = read_to_error(format!("{DEMO_HEAD}      <StudyEventData StudyEventOID=SE/>").as_bytes(), None);
    assert_eq!(fatal.location, xml_at(4, 7));
    // An entity that is not defined, and text after the root.
    let (_, fatal) = read_to_error(format!("{DEMO_HEAD}&nbsp;").as_bytes(), None);
    assert_eq!(fatal.location, xml_at(4, 1));
    assert!(fatal.message.contains("'&nbsp;' is not defined"), "{}", fatal.message);
    let (_, fatal) = read_to_error(b"<ODM/>\n oops", None);
    assert_eq!(
        (fatal.location, fatal.message),
        (xml_at(1, 7), "The XML is not well formed: there is text after the root element.".to_owned())
    );
}

#[test]
fn a_dtd_is_refused_before_any_entity_is_expanded() {
    let bomb = r#"<?xml version="1.0"?>
<!DOCTYPE ODM [
  <!ENTITY lol "lol">
  <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3"><ClinicalData StudyOID="&lol3;" MetaDataVersionOID="1"/></ODM>"#;
    let (records, fatal) = read_to_error(bomb.as_bytes(), None);
    assert!(records.is_empty());
    assert_eq!(fatal.location, xml_at(2, 1));
    assert!(fatal.message.contains("<!DOCTYPE>"), "{}", fatal.message);
    // Without a DTD, the entity is undefined.
    let (_, fatal) = read_to_error(&bomb.as_bytes()[bomb.find("<ODM").unwrap()..], None);
    assert!(fatal.message.contains("The XML is not well formed"), "{}", fatal.message);
}

#[test]
fn a_file_over_the_size_limit_is_refused_naming_the_limit() {
    let demo = std::fs::read(fixtures().join("odm/samples/own/demo_valid.xml")).unwrap();
    let (_, fatal) = read_to_error(&demo, Some(1000));
    assert_eq!(fatal.location, Location::File);
    assert_eq!(fatal.message, "The file is larger than 1000 bytes (1 MiB), the most this upload accepts.");
    // Exactly at the limit is fine.
    let mut reader = ClinicalReader::with_max_bytes(demo.as_slice(), Some(demo.len() as u64));
    let mut n = 0;
    while reader.next_record().unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 6);
}

#[test]
fn a_root_that_is_not_odm_1_3_is_refused() {
    let (_, fatal) = read_to_error(b"<?xml version=\"1.0\"?>\n<html><ClinicalData/></html>", None);
    assert_eq!(
        (fatal.location, fatal.message),
        (xml_at(2, 1), "The root element is <html>, not <ODM>: this is not a CDISC ODM file.".to_owned())
    );
    let (_, fatal) = read_to_error(b"<ODM xmlns=\"http://www.cdisc.org/ns/odm/v2.0\"/>", None);
    assert!(fatal.message.contains("ODM 2.0"), "{}", fatal.message);
    let (_, fatal) = read_to_error(b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><ODM/>", None);
    assert!(fatal.message.contains("only UTF-8"), "{}", fatal.message);
    let (_, fatal) = read_to_error(b"  ", None);
    assert_eq!(fatal.message, "The file holds no XML element.");
}

/// A form of `DEMO_HEAD`'s participant holding `items`.
fn one_form(items: &str) -> String {
    format!(
        "{DEMO_HEAD}<StudyEventData StudyEventOID=\"SE\"><FormData FormOID=\"F\"><ItemGroupData ItemGroupOID=\"IG\">\
         {items}</ItemGroupData></FormData></StudyEventData></SubjectData></ClinicalData></ODM>"
    )
}

#[test]
fn the_limits_that_bound_memory_end_the_stream_naming_them() {
    let deep = format!("<ODM>{}{}</ODM>", "<a>".repeat(MAX_DEPTH + 1), "</a>".repeat(MAX_DEPTH + 1));
    let (_, fatal) = read_to_error(deep.as_bytes(), None);
    assert_eq!(fatal.message, "<a> is nested more than 256 elements deep.");

    let xml = one_form(&r#"<ItemData ItemOID="I" Value="1"/>"#.repeat(MAX_FORM_ENTRIES + 1));
    let (records, fatal) = read_to_error(xml.as_bytes(), None);
    assert_eq!(records.len(), 3);
    assert!(fatal.message.contains("more than 100000 items and notes"), "{}", fatal.message);

    // One text larger than the largest event, made as it is read.
    let huge = b"<ODM>".chain(std::io::repeat(b'a').take(MAX_EVENT_BYTES as u64 + 10)).chain(&b"</ODM>"[..]);
    let mut reader = ClinicalReader::new(BufReader::new(huge));
    let fatal = reader.next_record().unwrap_err();
    assert_eq!(
        (fatal.location, fatal.message),
        (xml_at(1, 6), "The tag or text that starts here is larger than 16 MiB; it is too large to read.".to_owned())
    );
}

#[test]
fn diagnostics_past_the_most_held_are_counted_in_one_warning() {
    let xml = one_form(&r#"<ItemData ItemOID="I" Colour="red"/>"#.repeat(MAX_DIAGNOSTICS + 5));
    let (_, d, _) = read_all(xml.as_bytes());
    assert_eq!(d.0.len(), MAX_DIAGNOSTICS + 1);
    assert_eq!(listed(&d).last().unwrap(), "file 5 further problems were found but not listed.");
}

// ----- streaming --------------------------------------------------------------------------------

/// A large ODM file written as it is read: a subject per 200 forms, an event per 20, each form
/// two items. Counts the forms written so far.
struct Generated {
    forms: usize,
    next: usize,
    written: Rc<Cell<usize>>,
    chunk: Vec<u8>,
    at: usize,
    ended: bool,
}

impl Generated {
    const FORMS_PER_EVENT: usize = 20;
    const FORMS_PER_SUBJECT: usize = 200;

    fn new(forms: usize, written: Rc<Cell<usize>>) -> Self {
        let head = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ODM xmlns=\"http://www.cdisc.org/ns/odm/v1.3\" \
                    xmlns:OpenClinica=\"http://www.openclinica.org/ns/odm_ext_v130/v3.1\" FileOID=\"BIG\">\n\
                    <ClinicalData StudyOID=\"S_BIG\" MetaDataVersionOID=\"v1\">\n";
        Self { forms, next: 0, written, chunk: head.as_bytes().to_vec(), at: 0, ended: false }
    }

    /// The text of the next form, with the subject and event tags around it.
    fn refill(&mut self) {
        self.chunk.clear();
        self.at = 0;
        if self.next == self.forms {
            if !self.ended {
                self.chunk.extend_from_slice(b"</ClinicalData>\n</ODM>\n");
                self.ended = true;
            }
            return;
        }
        let i = self.next;
        let mut text = String::new();
        if i.is_multiple_of(Self::FORMS_PER_SUBJECT) {
            text += &format!("<SubjectData SubjectKey=\"SS_{}\">\n", i / Self::FORMS_PER_SUBJECT);
        }
        if i.is_multiple_of(Self::FORMS_PER_EVENT) {
            let repeat = (i % Self::FORMS_PER_SUBJECT) / Self::FORMS_PER_EVENT + 1;
            text += &format!("<StudyEventData StudyEventOID=\"SE_VISIT\" StudyEventRepeatKey=\"{repeat}\">\n");
        }
        text += &format!(
            "<FormData FormOID=\"F_VITALS\" OpenClinica:Version=\"v1\"><ItemGroupData ItemGroupOID=\"IG_VITALS\">\
             <ItemData ItemOID=\"I_WEIGHT\" Value=\"{i}\"/><ItemData ItemOID=\"I_HEIGHT\" Value=\"170\"/>\
             </ItemGroupData></FormData>\n"
        );
        if (i + 1).is_multiple_of(Self::FORMS_PER_EVENT) || i + 1 == self.forms {
            text += "</StudyEventData>\n";
        }
        if (i + 1).is_multiple_of(Self::FORMS_PER_SUBJECT) || i + 1 == self.forms {
            text += "</SubjectData>\n";
        }
        self.chunk = text.into_bytes();
        self.next += 1;
        self.written.set(self.next);
    }
}

impl Read for Generated {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.chunk.len() {
            self.refill();
        }
        let n = out.len().min(self.chunk.len() - self.at);
        out[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The reader holds nothing that grows with the file (see the module's memory invariant): this
/// checks it pulls the input as it yields records, never far ahead, and yields every record.
#[test]
fn a_large_file_streams_through_one_form_at_a_time() {
    const FORMS: usize = 200_000;
    let written = Rc::new(Cell::new(0));
    let input = BufReader::with_capacity(8 * 1024, Generated::new(FORMS, Rc::clone(&written)));
    let mut reader = ClinicalReader::new(input);
    let (mut subjects, mut events, mut forms, mut items) = (0, 0, 0, 0);
    // 8 KiB of input holds fewer than 50 forms.
    let mut most_ahead = 0;
    while let Some(record) = reader.next_record().unwrap() {
        match record {
            Record::Study(_) | Record::Notes(_) => {}
            Record::Subject(_) => subjects += 1,
            Record::Event(_) => events += 1,
            Record::Form(form) => {
                assert_eq!(form.groups[0].items[0].value, Some(forms.to_string()));
                forms += 1;
                items += form.groups[0].items.len();
                most_ahead = most_ahead.max(written.get() - forms);
            }
        }
    }
    assert_eq!((subjects, events, forms, items), (FORMS / 200, FORMS / 20, FORMS, 2 * FORMS));
    assert!(most_ahead < 50, "the reader read {most_ahead} forms ahead of the records it yielded");
    assert!(reader.diagnostics().0.is_empty());
    assert_eq!(reader.flavour(), Flavour::OpenClinica3);
}
