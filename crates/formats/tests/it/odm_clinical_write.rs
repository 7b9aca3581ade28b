//! ODM clinical data out beyond plain 1.3.2 (which `odm_write` covers): ODM 2.0, ODM audit
//! records and signatures with the `AdminData` they refer to, and OpenClinica's audit logs and
//! discrepancy notes. Every document is checked by `xmllint` against the official schemas, for
//! the values users rely on, and (OpenClinica notes) read back by Casebook's own reader.

use std::collections::BTreeSet;

use casebook_formats::odm::admin_write::{
    AdminDataOut, LocationOut, LocationType, MetaDataVersionRefOut, SignatureDefOut, UserOut, UserType,
    write_admin_data,
};
use casebook_formats::odm::clinical::{ClinicalReader, NoteRecord, Record};
use casebook_formats::odm::clinical_write::{
    At, AuditLogOut, AuditOut, ChildNoteOut, ClinicalFile, ClinicalWriter, EventOut, FormOut, GroupOut, ItemOut,
    NoteOut, SignatureOut, SubjectOut,
};
use casebook_formats::odm::write::{
    ODM_1_3_NAMESPACE, ODM_2_0_NAMESPACE, OdmFlavour, write_metadata, write_metadata_study,
};
use quick_xml::Reader;
use quick_xml::events::Event;
use time::macros::{date, datetime};

use crate::odm_write::{STUDY, assert_schema_valid, design, odm20_schema, odm132_openclinica_schema, odm132_schema};

fn file(openclinica: bool, odm20: bool) -> ClinicalFile<'static> {
    ClinicalFile {
        study_oid: "S_DEMO",
        metadata_version_oid: "v1",
        file_oid: "CLINICAL_1",
        created: datetime!(2026-11-22 09:00 UTC),
        openclinica,
        odm20,
    }
}

/// Every element of the document as its path from the root (`ODM/ClinicalData/…`), in order.
fn paths(xml: &str) -> Vec<String> {
    let mut reader = Reader::from_str(xml);
    let mut stack: Vec<String> = Vec::new();
    let mut out = Vec::new();
    loop {
        match reader.read_event().unwrap() {
            Event::Start(e) => {
                stack.push(e.name().into_inner().to_owned());
                out.push(stack.join("/"));
            }
            Event::Empty(e) => {
                stack.push(e.name().into_inner().to_owned());
                out.push(stack.join("/"));
                stack.pop();
            }
            Event::End(_) => {
                stack.pop();
            }
            Event::Eof => return out,
            _ => {}
        }
    }
}

/// The names of the children of the first element at `path`, in order.
fn children(xml: &str, path: &str) -> Vec<String> {
    let all = paths(xml);
    let start = all.iter().position(|p| p == path).unwrap_or_else(|| panic!("no {path} in {xml}"));
    let prefix = format!("{path}/");
    all[start + 1..]
        .iter()
        .take_while(|p| p.starts_with(&prefix))
        .filter_map(|p| p.strip_prefix(&prefix))
        .filter(|rest| !rest.contains('/'))
        .map(str::to_owned)
        .collect()
}

/// The values of every `attr="…"` in the text.
fn attribute_values(xml: &str, attr: &str) -> BTreeSet<String> {
    let needle = format!(" {attr}=\"");
    xml.split(needle.as_str()).skip(1).filter_map(|rest| rest.split('"').next()).map(str::to_owned).collect()
}

/// The OIDs `<element OID="…"` defines.
fn defined(xml: &str, element: &str) -> BTreeSet<String> {
    let needle = format!("<{element} OID=\"");
    xml.split(needle.as_str()).skip(1).filter_map(|rest| rest.split('"').next()).map(str::to_owned).collect()
}

/// Participant 1 of the demo design: screening with demographics v2 (a value, a null flavour,
/// text needing escapes, two rows of the repeating group), and a repeating adverse event.
fn demo_casebook(w: &mut ClinicalWriter<impl std::io::Write>) {
    w.subject(&SubjectOut { key: "SS_DEMOA0001", label: "DEMO-A-0001", status: "available", ..SubjectOut::default() })
        .unwrap();
    w.event(&EventOut { event_oid: "SE_SCREENING", status: "data_entry_started", ..EventOut::default() }).unwrap();
    w.form(&FormOut { version_oid: "F_DEMOG_V2", version_label: "v2", status: "complete", ..FormOut::default() })
        .unwrap();
    w.group(
        "IG_DEMOG_UNGROUPED",
        None,
        &[
            ItemOut { item_oid: "I_DEMOG_SEX", value: Some("2"), ..ItemOut::default() },
            ItemOut { item_oid: "I_DEMOG_WEIGHT", null_flavour: Some("UNK"), ..ItemOut::default() },
            ItemOut { item_oid: "I_DEMOG_CODE", value: Some("<A&B>"), ..ItemOut::default() },
        ],
    )
    .unwrap();
    for (row, name) in [(1, "aspirin"), (2, "ibuprofen")] {
        w.group(
            "IG_DEMOG_MEDS",
            Some(row),
            &[ItemOut { item_oid: "I_DEMOG_MED_NAME", value: Some(name), ..ItemOut::default() }],
        )
        .unwrap();
    }
    w.event(&EventOut { event_oid: "SE_ADVERSE", repeat_key: Some(1), status: "scheduled", ..EventOut::default() })
        .unwrap();
    w.form(&FormOut {
        version_oid: "F_DEMOG_V2",
        version_label: "v2",
        status: "initial_data_entry",
        ..FormOut::default()
    })
    .unwrap();
    w.group("IG_DEMOG_UNGROUPED", None, &[ItemOut { item_oid: "I_DEMOG_SEX", value: Some("1"), ..ItemOut::default() }])
        .unwrap();
}

#[test]
fn odm20_clinical_data_is_valid_and_its_oids_resolve_against_odm20_metadata() {
    let mut w = ClinicalWriter::new(Vec::new(), &file(false, true)).unwrap();
    demo_casebook(&mut w);
    w.subject(&SubjectOut { key: "SS_DEMOA0002", label: "DEMO-A-0002", status: "available", ..SubjectOut::default() })
        .unwrap();
    let xml = String::from_utf8(w.finish().unwrap()).unwrap();
    assert_schema_valid(&xml, &odm20_schema(), "clinical-2.0.xml");

    assert!(
        xml.contains(&format!(r#"<ODM xmlns="{ODM_2_0_NAMESPACE}" ODMVersion="2.0" FileType="Snapshot""#)),
        "{xml}"
    );
    assert!(!xml.contains("FormData") && !xml.contains("Value=") && !xml.contains("OpenClinica"), "{xml}");
    // A form is an ItemGroupData of the form version holding the rows.
    let all = paths(&xml);
    let row = "ODM/ClinicalData/SubjectData/StudyEventData/ItemGroupData/ItemGroupData";
    assert!(all.iter().any(|p| p == &format!("{row}/ItemData/Value")), "{all:?}");
    assert!(xml.contains(r#"<ItemGroupData ItemGroupOID="F_DEMOG_V2">"#), "{xml}");
    assert!(
        xml.contains(r#"<ItemGroupData ItemGroupOID="IG_DEMOG_MEDS" ItemGroupRepeatKey="2" TransactionType="Insert">"#)
    );
    assert!(xml.contains("<Value>ibuprofen</Value>") && xml.contains("<Value>&lt;A&amp;B&gt;</Value>"), "{xml}");
    assert!(xml.contains(r#"<ItemData ItemOID="I_DEMOG_WEIGHT" IsNull="Yes"/>"#), "{xml}");
    assert!(xml.contains(r#"<StudyEventData StudyEventOID="SE_ADVERSE" StudyEventRepeatKey="1">"#), "{xml}");

    // Every OID the data uses is defined, as the right kind of thing, in Casebook's own 2.0 metadata.
    let mut meta = Vec::new();
    write_metadata(&mut meta, &STUDY, &design(), OdmFlavour::Odm20, datetime!(2026-11-22 09:00 UTC), "M").unwrap();
    let meta = String::from_utf8(meta).unwrap();
    for (attr, def) in [("StudyEventOID", "StudyEventDef"), ("ItemGroupOID", "ItemGroupDef"), ("ItemOID", "ItemDef")] {
        let used = attribute_values(&xml, attr);
        assert!(!used.is_empty(), "no {attr} in the data");
        let defs = defined(&meta, def);
        let missing: Vec<_> = used.difference(&defs).collect();
        assert!(missing.is_empty(), "{attr} {missing:?} not defined as {def} in the 2.0 metadata");
    }
    assert!(meta.contains(r#"<ItemGroupDef OID="F_DEMOG_V2" Name="Demographics - v2" Repeating="No" Type="Form">"#));

    // OpenClinica's extensions are ODM 1.3's: asking for them with 2.0 is refused.
    let refused = ClinicalWriter::new(Vec::new(), &file(true, true)).err().unwrap();
    assert_eq!(refused.kind(), std::io::ErrorKind::InvalidInput);
    assert!(refused.to_string().contains("ODM 1.3"), "{refused}");
}

fn audit(reason: &str) -> AuditOut<'_> {
    AuditOut {
        user_oid: "USR_1",
        location_oid: "LOC_SITE_A",
        date_time: datetime!(2026-01-10 08:00 +1),
        reason_for_change: Some(reason),
        source_id: Some("paper CRF p.3"),
    }
}

fn signature() -> SignatureOut<'static> {
    SignatureOut {
        id: None,
        user_oid: "USR_2",
        location_oid: "LOC_SITE_A",
        signature_oid: "SD_INVESTIGATOR",
        date_time: datetime!(2026-02-01 17:30 UTC),
    }
}

/// One document: the `Study` of the demo design, `AdminData`, and clinical data with an audit
/// record and a signature on the participant, the event, the form, a row and a value.
fn audited_document(flavour: OdmFlavour) -> String {
    let odm20 = flavour == OdmFlavour::Odm20;
    let mut out = Vec::new();
    let (namespace, version) = if odm20 { (ODM_2_0_NAMESPACE, "2.0") } else { (ODM_1_3_NAMESPACE, "1.3.2") };
    out.extend_from_slice(
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ODM xmlns=\"{namespace}\" ODMVersion=\"{version}\" \
             FileType=\"Snapshot\" Granularity=\"All\" FileOID=\"ALL_1\" CreationDateTime=\"2026-11-22T09:00:00Z\">\n"
        )
        .as_bytes(),
    );
    write_metadata_study(&mut out, &STUDY, &design(), flavour).unwrap();
    out.push(b'\n');
    let users = [
        UserOut {
            oid: "USR_1",
            user_type: Some(UserType::Other),
            login_name: Some("crc_anna"),
            full_name: Some("Anna Coordinator"),
            first_name: Some("Anna"),
            last_name: Some("Coordinator"),
            organization: Some("Site A"),
            email: Some("anna@example.org"),
        },
        UserOut {
            oid: "USR_2",
            user_type: Some(UserType::Investigator),
            login_name: Some("pi_bob"),
            ..UserOut::default()
        },
    ];
    let mdv = [MetaDataVersionRefOut {
        study_oid: "S_DEMO",
        metadata_version_oid: "v1",
        effective_date: date!(2026 - 01 - 01),
    }];
    let locations = [LocationOut {
        oid: "LOC_SITE_A",
        name: "Site A",
        location_type: Some(LocationType::Site),
        metadata_versions: &mdv,
    }];
    let defs = [SignatureDefOut {
        oid: "SD_INVESTIGATOR",
        meaning: "I attest that the data are complete and correct",
        legal_reason: "21 CFR Part 11",
    }];
    let admin = AdminDataOut { study_oid: Some("S_DEMO"), users: &users, locations: &locations, signature_defs: &defs };
    write_admin_data(&mut out, &admin, flavour).unwrap();
    out.push(b'\n');

    let mut w = ClinicalWriter::embedded(&mut out, &file(false, odm20)).unwrap();
    w.subject(&SubjectOut {
        key: "SS_DEMOA0001",
        label: "DEMO-A-0001",
        status: "signed",
        audit: Some(audit("participant created")),
        signature: Some(signature()),
        ..SubjectOut::default()
    })
    .unwrap();
    w.event(&EventOut {
        event_oid: "SE_SCREENING",
        status: "signed",
        audit: Some(audit("event scheduled")),
        signature: Some(signature()),
        ..EventOut::default()
    })
    .unwrap();
    w.form(&FormOut {
        version_oid: "F_DEMOG_V2",
        version_label: "v2",
        status: "complete",
        audit: Some(audit("form marked complete")),
        signature: Some(signature()),
        ..FormOut::default()
    })
    .unwrap();
    let items = [
        ItemOut {
            item_oid: "I_DEMOG_SEX",
            value: Some("2"),
            audit: Some(audit("typo <fixed> & checked")),
            signature: Some(signature()),
            ..ItemOut::default()
        },
        ItemOut { item_oid: "I_DEMOG_WEIGHT", null_flavour: Some("NA"), ..ItemOut::default() },
    ];
    w.item_group(&GroupOut {
        group_oid: "IG_DEMOG_UNGROUPED",
        repeat_key: None,
        items: &items,
        audit: Some(audit("row inserted")),
        signature: Some(signature()),
    })
    .unwrap();
    w.finish().unwrap();
    out.extend_from_slice(b"\n</ODM>\n");
    String::from_utf8(out).unwrap()
}

fn assert_audited(xml: &str, odm20: bool) {
    assert_eq!(xml.matches("<AuditRecord>").count(), 5, "{xml}");
    assert_eq!(xml.matches("<Signature>").count(), 5, "{xml}");
    assert!(xml.contains("<DateTimeStamp>2026-01-10T07:00:00Z</DateTimeStamp>"), "audit time not in UTC: {xml}");
    assert!(xml.contains("<DateTimeStamp>2026-02-01T17:30:00Z</DateTimeStamp>"), "{xml}");
    assert!(xml.contains("<ReasonForChange>typo &lt;fixed&gt; &amp; checked</ReasonForChange>"), "{xml}");
    assert!(xml.contains("<SourceID>paper CRF p.3</SourceID>"), "{xml}");
    assert!(xml.contains(r#"<SignatureRef SignatureOID="SD_INVESTIGATOR"/>"#), "{xml}");
    assert!(xml.contains(r#"<SignatureDef OID="SD_INVESTIGATOR" Methodology="Electronic">"#), "{xml}");
    assert!(xml.contains("<LegalReason>21 CFR Part 11</LegalReason>"), "{xml}");
    assert!(
        xml.contains(r#"<MetaDataVersionRef StudyOID="S_DEMO" MetaDataVersionOID="v1" EffectiveDate="2026-01-01"/>"#)
    );
    // Every reference resolves to the AdminData of the same document.
    for (attr, def) in [("UserOID", "User"), ("LocationOID", "Location"), ("SignatureOID", "SignatureDef")] {
        let used = attribute_values(xml, attr);
        assert!(!used.is_empty(), "no {attr}");
        let defs = defined(xml, def);
        let missing: Vec<_> = used.difference(&defs).collect();
        assert!(missing.is_empty(), "{attr} {missing:?} has no {def}");
    }
    // ODM 1.3.2 puts audit record and signature first in an element, 2.0 after its children.
    let subject = "ODM/ClinicalData/SubjectData";
    let event = format!("{subject}/StudyEventData");
    let (form, row) = if odm20 {
        (format!("{event}/ItemGroupData"), format!("{event}/ItemGroupData/ItemGroupData"))
    } else {
        (format!("{event}/FormData"), format!("{event}/FormData/ItemGroupData"))
    };
    let item = format!("{row}/ItemData");
    let expect = |path: &str, child: &str| {
        let mut c = vec![child.to_owned(), "AuditRecord".to_owned(), "Signature".to_owned()];
        if !odm20 {
            c.rotate_left(1);
        }
        assert_eq!(children(xml, path), c, "{path}");
    };
    expect(subject, "StudyEventData");
    expect(&event, if odm20 { "ItemGroupData" } else { "FormData" });
    expect(&form, "ItemGroupData");
    if odm20 {
        assert_eq!(children(xml, &row), ["ItemData", "ItemData", "AuditRecord", "Signature"]);
        assert_eq!(children(xml, &item), ["Value", "AuditRecord", "Signature"]);
    } else {
        assert_eq!(children(xml, &row), ["AuditRecord", "Signature", "ItemData", "ItemData"]);
        assert_eq!(children(xml, &item), ["AuditRecord", "Signature"]);
    }
    assert_eq!(
        children(xml, &format!("{item}/AuditRecord")),
        ["UserRef", "LocationRef", "DateTimeStamp", "ReasonForChange", "SourceID"]
    );
    assert_eq!(
        children(xml, &format!("{item}/Signature")),
        ["UserRef", "LocationRef", "SignatureRef", "DateTimeStamp"]
    );
}

#[test]
fn odm132_document_with_study_admin_data_audit_records_and_signatures_is_valid() {
    let xml = audited_document(OdmFlavour::Odm132);
    assert_schema_valid(&xml, &odm132_schema(), "audited-1.3.2.xml");
    assert_audited(&xml, false);
    assert!(xml.contains(r#"<Location OID="LOC_SITE_A" Name="Site A" LocationType="Site">"#), "{xml}");
    assert!(xml.contains("<LoginName>crc_anna</LoginName>") && xml.contains("<Email>anna@example.org</Email>"));
    assert!(xml.contains("<Organization>Site A</Organization>") && xml.contains("<FirstName>Anna</FirstName>"));
    assert!(xml.contains(r#"<ItemData ItemOID="I_DEMOG_SEX" Value="2">"#), "{xml}");
    let order: Vec<String> = children(&xml, "ODM");
    assert_eq!(order, ["Study", "AdminData", "ClinicalData"]);
}

#[test]
fn odm20_document_with_study_admin_data_audit_records_and_signatures_is_valid() {
    let xml = audited_document(OdmFlavour::Odm20);
    assert_schema_valid(&xml, &odm20_schema(), "audited-2.0.xml");
    assert_audited(&xml, true);
    assert!(xml.contains(r#"<Location OID="LOC_SITE_A" Name="Site A" Role="Site">"#), "{xml}");
    assert!(xml.contains("<UserName>crc_anna</UserName>") && xml.contains("<GivenName>Anna</GivenName>"));
    assert!(xml.contains(r#"<Telecom TelecomType="Email" Value="anna@example.org"/>"#), "{xml}");
    assert!(!xml.contains("<Organization>"), "a 2.0 Organization is an element of its own: {xml}");
    assert_eq!(children(&xml, "ODM"), ["Study", "AdminData", "ClinicalData"]);
}

#[test]
fn admin_data_refuses_a_location_without_a_metadata_version() {
    let locations = [LocationOut { oid: "LOC_X", name: "X", location_type: None, metadata_versions: &[] }];
    let admin = AdminDataOut { locations: &locations, ..AdminDataOut::default() };
    let mut out = Vec::new();
    let e = write_admin_data(&mut out, &admin, OdmFlavour::Odm132).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("LOC_X") && e.to_string().contains("MetaDataVersionRef"), "{e}");
    assert!(out.is_empty());
}

fn child(
    id: &'static str,
    status: &'static str,
    description: &'static str,
    detailed: Option<&'static str>,
) -> ChildNoteOut<'static> {
    ChildNoteOut {
        id,
        status,
        date_created: date!(2026 - 03 - 04),
        name: "value",
        description,
        detailed_note: detailed,
        user_oid: "USR_3",
        user_name: "monitor_mo",
        user_full_name: "Mo Monitor",
    }
}

fn log(id: &'static str, name: &'static str) -> AuditLogOut<'static> {
    AuditLogOut {
        id,
        user_id: "USR_1",
        user_name: "crc_anna",
        name,
        date_time: datetime!(2026-03-04 10:11:12 +2),
        audit_type: "Item data value updated",
        reason_for_change: Some("typo"),
        old_value: Some("1"),
        new_value: Some("2 & <3>"),
        value_type: Some("string"),
    }
}

#[test]
fn openclinica_audit_logs_and_discrepancy_notes_are_valid_and_read_back() {
    let query_children = [
        child("CDN_1", "New", "Weight looks wrong", Some("Please check the scale <kg>")),
        child("CDN_2", "Updated", "Checked", None),
    ];
    let item_notes = [NoteOut {
        id: "DN_1",
        status: "Updated",
        note_type: "Query",
        date_updated: date!(2026 - 03 - 05),
        entity_name: "value",
        children: &query_children,
    }];
    let item_logs = [log("AL_1", "sex")];
    let annotation = [child("CDN_3", "Not Applicable", "Form signed late", None)];
    let note = |id, entity_name, children| NoteOut {
        id,
        status: "Not Applicable",
        note_type: "Annotation",
        date_updated: date!(2026 - 03 - 06),
        entity_name,
        children,
    };
    let form_notes = [note("DN_2", "date_interviewed", &annotation[..])];
    let event_notes = [note("DN_3", "start_date", &annotation[..])];
    let subject_notes = [note("DN_4", "enrollment_date", &annotation[..])];
    let subject_logs = [AuditLogOut {
        reason_for_change: None,
        old_value: None,
        value_type: None,
        audit_type: "Study subject created",
        ..log("AL_2", "Status")
    }];

    let mut w = ClinicalWriter::new(Vec::new(), &file(true, false)).unwrap();
    w.subject(&SubjectOut { key: "SS_DEMOA0001", label: "DEMO-A-0001", status: "available", ..SubjectOut::default() })
        .unwrap();
    w.event(&EventOut { event_oid: "SE_SCREENING", status: "data_entry_started", ..EventOut::default() }).unwrap();
    w.form(&FormOut { version_oid: "F_DEMOG_V2", version_label: "v2", status: "complete", ..FormOut::default() })
        .unwrap();
    let items = [
        ItemOut {
            item_oid: "I_DEMOG_SEX",
            value: Some("2"),
            audit_logs: &item_logs,
            notes: &item_notes,
            ..ItemOut::default()
        },
        ItemOut { item_oid: "I_DEMOG_WEIGHT", value: Some("70"), ..ItemOut::default() },
    ];
    w.group("IG_DEMOG_UNGROUPED", None, &items).unwrap();
    w.extensions(At::Form, &[], &form_notes).unwrap();
    w.extensions(At::Event, &[], &event_notes).unwrap();
    w.extensions(At::Subject, &subject_logs, &subject_notes).unwrap();
    w.subject(&SubjectOut { key: "SS_DEMOA0002", label: "DEMO-A-0002", status: "available", ..SubjectOut::default() })
        .unwrap();
    let xml = String::from_utf8(w.finish().unwrap()).unwrap();

    let schema = odm132_openclinica_schema();
    assert_schema_valid(&xml, &schema, "clinical-1.3.2-openclinica-notes.xml");
    std::fs::remove_file(&schema).unwrap();
    for expected in [
        r#"<OpenClinica:AuditLogs EntityID="I_DEMOG_SEX">"#,
        r#"<OpenClinica:AuditLog ID="AL_1" UserID="USR_1" UserName="crc_anna" Name="sex" DateTimeStamp="2026-03-04T08:11:12" AuditType="Item data value updated" ReasonForChange="typo" OldValue="1" NewValue="2 &amp; &lt;3&gt;" ValueType="string"/>"#,
        r#"<OpenClinica:AuditLog ID="AL_2" UserID="USR_1" UserName="crc_anna" Name="Status" DateTimeStamp="2026-03-04T08:11:12" AuditType="Study subject created" NewValue="2 &amp; &lt;3&gt;"/>"#,
        r#"<OpenClinica:DiscrepancyNotes EntityID="I_DEMOG_SEX">"#,
        r#"<OpenClinica:DiscrepancyNote ID="DN_1" Status="Updated" NoteType="Query" DateUpdated="2026-03-05" EntityName="value" NumberOfChildNotes="2">"#,
        r#"<OpenClinica:ChildNote ID="CDN_1" Status="New" DateCreated="2026-03-04" Name="value">"#,
        "<OpenClinica:Description>Weight looks wrong</OpenClinica:Description>",
        "<OpenClinica:DetailedNote>Please check the scale &lt;kg&gt;</OpenClinica:DetailedNote>",
        r#"<UserRef OpenClinica:UserName="monitor_mo" OpenClinica:FullName="Mo Monitor" UserOID="USR_3"/>"#,
        r#"<OpenClinica:DiscrepancyNotes EntityID="F_DEMOG_V2">"#,
        r#"<OpenClinica:DiscrepancyNotes EntityID="SE_SCREENING">"#,
        r#"<OpenClinica:DiscrepancyNotes EntityID="SS_DEMOA0001">"#,
        r#"<OpenClinica:AuditLogs EntityID="SS_DEMOA0001">"#,
    ] {
        assert!(xml.contains(expected), "{expected} not in {xml}");
    }
    // Extensions come last: after the children of what they are on.
    let subject = "ODM/ClinicalData/SubjectData";
    assert_eq!(children(&xml, subject), ["StudyEventData", "OpenClinica:AuditLogs", "OpenClinica:DiscrepancyNotes"]);
    assert_eq!(children(&xml, &format!("{subject}/StudyEventData")), ["FormData", "OpenClinica:DiscrepancyNotes"]);
    assert_eq!(
        children(&xml, &format!("{subject}/StudyEventData/FormData")),
        ["ItemGroupData", "OpenClinica:DiscrepancyNotes"]
    );

    // Casebook's reader gets back every note where it was written.
    let mut reader = ClinicalReader::new(xml.as_bytes());
    let (mut on_subject, mut on_event, mut on_form, mut on_item) = (vec![], vec![], vec![], vec![]);
    while let Some(record) = reader.next_record().unwrap() {
        match record {
            Record::Notes(n) if n.event.is_none() => on_subject.extend(n.notes),
            Record::Notes(n) => {
                assert_eq!(n.event.as_ref().map(|e| e.oid.as_str()), Some("SE_SCREENING"));
                on_event.extend(n.notes);
            }
            Record::Form(f) => {
                on_form.extend(f.notes);
                on_item.extend(f.groups.into_iter().flat_map(|g| g.items).flat_map(|i| i.notes));
            }
            _ => {}
        }
    }
    let errors: Vec<_> = reader.diagnostics().0.iter().map(ToString::to_string).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let summary = |n: &NoteRecord| {
        (
            n.entity_id.clone().unwrap_or_default(),
            n.id.clone().unwrap_or_default(),
            n.note_type.clone().unwrap_or_default(),
            n.status.clone().unwrap_or_default(),
            n.entity_name.clone().unwrap_or_default(),
            n.date_updated.clone().unwrap_or_default(),
        )
    };
    let s = |x: &str| x.to_owned();
    assert_eq!(
        on_item.iter().map(summary).collect::<Vec<_>>(),
        [(s("I_DEMOG_SEX"), s("DN_1"), s("Query"), s("Updated"), s("value"), s("2026-03-05"))]
    );
    let annotation_of = |entity: &str, id: &str, name: &str| {
        (s(entity), s(id), s("Annotation"), s("Not Applicable"), s(name), s("2026-03-06"))
    };
    assert_eq!(
        on_form.iter().map(summary).collect::<Vec<_>>(),
        [annotation_of("F_DEMOG_V2", "DN_2", "date_interviewed")]
    );
    assert_eq!(on_event.iter().map(summary).collect::<Vec<_>>(), [annotation_of("SE_SCREENING", "DN_3", "start_date")]);
    assert_eq!(
        on_subject.iter().map(summary).collect::<Vec<_>>(),
        [annotation_of("SS_DEMOA0001", "DN_4", "enrollment_date")]
    );
    let children_read = &on_item[0].children;
    assert_eq!(children_read.len(), 2);
    let first = &children_read[0];
    assert_eq!(first.id.as_deref(), Some("CDN_1"));
    assert_eq!(first.status.as_deref(), Some("New"));
    assert_eq!(first.date_created.as_deref(), Some("2026-03-04"));
    assert_eq!(first.name.as_deref(), Some("value"));
    assert_eq!(first.description.as_deref(), Some("Weight looks wrong"));
    assert_eq!(first.detailed_note.as_deref(), Some("Please check the scale <kg>"));
    assert_eq!(first.user_name.as_deref(), Some("monitor_mo"));
    assert_eq!(first.user_full_name.as_deref(), Some("Mo Monitor"));
    assert_eq!(children_read[1].detailed_note, None);
    assert_eq!(on_subject[0].children[0].description.as_deref(), Some("Form signed late"));
}

#[test]
fn extensions_finish_their_element_and_are_left_out_of_plain_odm() {
    let notes = [NoteOut {
        id: "DN_1",
        status: "New",
        note_type: "Query",
        date_updated: date!(2026 - 03 - 05),
        entity_name: "value",
        children: &[],
    }];
    let form = FormOut { version_oid: "F_V1", version_label: "v1", status: "complete", ..FormOut::default() };
    let mut w = ClinicalWriter::new(Vec::new(), &file(true, false)).unwrap();
    assert_eq!(w.extensions(At::Subject, &[], &notes).unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    w.subject(&SubjectOut { key: "SS_1", label: "1", status: "available", ..SubjectOut::default() }).unwrap();
    assert!(w.extensions(At::Event, &[], &notes).is_err(), "no event is open");
    w.event(&EventOut { event_oid: "SE_V", status: "scheduled", ..EventOut::default() }).unwrap();
    w.form(&form).unwrap();
    w.extensions(At::Form, &[], &notes).unwrap();
    assert!(w.group("IG", None, &[]).is_err(), "a row after the form's notes");
    w.form(&form).unwrap(); // the next form of the event is fine
    w.group("IG", None, &[]).unwrap();
    w.extensions(At::Event, &[], &notes).unwrap();
    assert!(w.form(&form).is_err(), "a form after the event's notes");
    w.event(&EventOut { event_oid: "SE_W", status: "scheduled", ..EventOut::default() }).unwrap();
    w.extensions(At::Subject, &[], &notes).unwrap();
    assert!(w.event(&EventOut { event_oid: "SE_X", ..EventOut::default() }).is_err(), "an event after the notes");
    w.subject(&SubjectOut { key: "SS_2", label: "2", status: "available", ..SubjectOut::default() }).unwrap();
    let xml = String::from_utf8(w.finish().unwrap()).unwrap();
    assert_eq!(xml.matches("<OpenClinica:DiscrepancyNotes").count(), 3, "{xml}");
    assert!(!xml.contains("SE_X"), "{xml}");

    // Plain ODM (1.3.2 and 2.0) takes the same calls and writes no extension.
    for odm20 in [false, true] {
        let mut w = ClinicalWriter::new(Vec::new(), &file(false, odm20)).unwrap();
        w.subject(&SubjectOut { key: "SS_1", label: "1", status: "available", ..SubjectOut::default() }).unwrap();
        w.event(&EventOut { event_oid: "SE_V", status: "scheduled", ..EventOut::default() }).unwrap();
        w.form(&form).unwrap();
        w.group("IG", None, &[ItemOut { item_oid: "I", value: Some("1"), notes: &notes, ..ItemOut::default() }])
            .unwrap();
        w.extensions(At::Form, &[], &notes).unwrap();
        w.extensions(At::Subject, &[], &notes).unwrap();
        let xml = String::from_utf8(w.finish().unwrap()).unwrap();
        assert!(!xml.contains("OpenClinica") && !xml.contains("DN_1"), "{xml}");
        let schema = if odm20 { odm20_schema() } else { odm132_schema() };
        assert_schema_valid(&xml, &schema, &format!("plain-extensions-{odm20}.xml"));
    }
}

#[test]
fn odm20_clinical_data_is_written_as_it_comes() {
    // Drained after every participant, the buffer never holds more than one participant, even
    // with audit records held for the end of each element.
    let mut w = ClinicalWriter::new(Vec::new(), &file(false, true)).unwrap();
    let mut largest = 0usize;
    for n in 0..500 {
        let key = format!("SS_{n}");
        w.subject(&SubjectOut { key: &key, label: &key, audit: Some(audit("created")), ..SubjectOut::default() })
            .unwrap();
        w.event(&EventOut { event_oid: "SE_V", audit: Some(audit("scheduled")), ..EventOut::default() }).unwrap();
        w.form(&FormOut { version_oid: "F_V1", signature: Some(signature()), ..FormOut::default() }).unwrap();
        w.group("IG", None, &[ItemOut { item_oid: "I", value: Some("1"), ..ItemOut::default() }]).unwrap();
        largest = largest.max(std::mem::take(w.get_mut()).len());
    }
    let rest = String::from_utf8(w.finish().unwrap()).unwrap();
    assert!(largest < 2_500, "{largest}");
    // The last participant's audit records were held for its end, and written there.
    assert!(rest.contains("<AuditRecord>") && rest.contains("</SubjectData>"), "{rest}");
}
