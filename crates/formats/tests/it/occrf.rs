//! OpenClinica 3 CRF design templates: the demo CRF (`demo/forms/adverse_events_crf.xls[x]`)
//! loads with the expected design, and broken templates report every problem at once with the
//! sheet, row and column a data manager can find.

use std::collections::HashSet;

use casebook_domain::design::{
    Check, CheckRule, CodeListItem, Comparator, ConditionalDisplay, DataType, Dialect, FormDef, Repeat, Required,
    Widget,
};
use casebook_formats::diagnostic::{Diagnostics, Location, Severity};
use casebook_formats::occrf;
use casebook_formats::workbook::{Sheet, Workbook};
use casebook_formats::xlsform::{Context, ImportedForm};

fn demo(ext: &str) -> Workbook {
    let path = format!("{}/../../demo/forms/adverse_events_crf.{ext}", env!("CARGO_MANIFEST_DIR"));
    Workbook::from_bytes(&std::fs::read(&path).unwrap()).unwrap()
}

fn import_clean(wb: &Workbook, ctx: Context<'_>) -> ImportedForm {
    let (form, d) = occrf::import(wb, ctx);
    assert!(d.0.is_empty(), "unexpected diagnostics: {:#?}", d.0);
    form.unwrap()
}

/// A sheet from a header and rows given as (row number, [(column, value)]).
fn sheet_by_header(name: &str, header: &[&str], rows: &[(usize, &[(&str, &str)])]) -> Sheet {
    let mut out = vec![(1, header.iter().map(|h| (*h).to_owned()).collect())];
    for (n, cells) in rows {
        let mut row = vec![String::new(); header.len()];
        for (column, value) in *cells {
            let i = header.iter().position(|h| h.trim_end_matches('*').eq_ignore_ascii_case(column)).unwrap();
            row[i] = (*value).to_owned();
        }
        out.push((*n, row));
    }
    Sheet { name: name.to_owned(), rows: out }
}

fn sheet_of_rows(name: &str, rows: &[&[&str]]) -> Sheet {
    Sheet {
        name: name.to_owned(),
        rows: rows.iter().enumerate().map(|(i, r)| (i + 1, r.iter().map(|c| (*c).to_owned()).collect())).collect(),
    }
}

fn crf_sheet(name: &str, version: &str) -> Sheet {
    sheet_of_rows(
        "CRF",
        &[&["CRF_NAME", "VERSION", "VERSION_DESCRIPTION", "REVISION_NOTES"], &[name, version, "Test", "First"]],
    )
}

/// (severity, sheet, row, column) of every diagnostic, sorted by row.
fn places(d: &Diagnostics) -> Vec<(Severity, String, Option<usize>, Option<String>)> {
    let mut out: Vec<_> =
        d.0.iter()
            .map(|x| match &x.location {
                Location::Sheet { sheet, row, column } => (x.severity, sheet.clone(), *row, column.clone()),
                other => (x.severity, other.to_string(), None, None),
            })
            .collect();
    out.sort_by_key(|p| (p.2, p.3.clone()));
    out
}

#[test]
fn demo_adverse_events_crf_loads_with_its_design() {
    let wb = demo("xlsx");
    assert!(occrf::is_crf_template(&wb));
    assert_eq!(occrf::crf_name(&wb).as_deref(), Some("Adverse Events"));
    let form = import_clean(&wb, Context::default());
    assert_eq!(form.form_name, "Adverse Events");
    assert_eq!(form.form_oid.as_str(), "F_ADVERSEEVENT");
    let v = &form.version;
    assert_eq!(v.oid.as_str(), "F_ADVERSEEVENT_V10");
    assert_eq!(v.label, "v1.0");
    assert_eq!(v.description.as_deref(), Some("Adverse event log with seriousness, action taken and outcome"));
    assert_eq!(v.revision_notes.as_deref(), Some("First version for the Casebook demo study"));

    let sections: Vec<(&str, &str)> = v.sections.iter().map(|s| (s.label.as_str(), s.title.text.as_str())).collect();
    assert_eq!(
        sections,
        [
            ("AE_SCREEN", "Adverse event screening"),
            ("AE_LOG", "Adverse event log"),
            ("AE_ASSESS", "Participant assessment")
        ]
    );
    assert_eq!(v.sections[1].subtitle.as_deref(), Some("One row per event"));
    assert_eq!(
        v.sections[1].instructions.as_deref(),
        Some("Record each event once, with the <b>worst</b> severity reached.")
    );

    // Groups in order of first use; AE_ANY has no GROUP_LABEL, so it is Ungrouped.
    let groups: Vec<(&str, &str)> = v.groups.iter().map(|g| (g.name.as_str(), g.oid.as_str())).collect();
    assert_eq!(groups, [("Ungrouped", "IG_ADVER_UNGROUPED"), ("AE", "IG_ADVER_AE"), ("ASSESS", "IG_ADVER_ASSESS")]);
    assert_eq!(v.groups[1].repeat, Some(Repeat { initial_rows: 3, max_rows: Some(25), count: None }));
    assert_eq!(v.groups[1].header.text, "Adverse events");
    assert!(v.groups[0].repeat.is_none() && v.groups[2].repeat.is_none());

    let items: Vec<(&str, &str, &str, Widget, DataType)> = v
        .items
        .iter()
        .map(|i| {
            let group = v.group(i.group_oid.as_str()).unwrap().name.as_str();
            (i.name.as_str(), i.oid.as_str(), group, i.widget, i.data_type)
        })
        .collect();
    assert_eq!(
        items,
        [
            ("AE_ANY", "I_ADVER_AE_ANY", "Ungrouped", Widget::Radio, DataType::Integer),
            ("AE_TERM", "I_ADVER_AE_TERM", "AE", Widget::Text, DataType::Text),
            ("AE_START", "I_ADVER_AE_START", "AE", Widget::Text, DataType::Date),
            ("AE_END", "I_ADVER_AE_END", "AE", Widget::Text, DataType::PartialDate),
            ("AE_SEV", "I_ADVER_AE_SEV", "AE", Widget::Radio, DataType::Integer),
            ("AE_SER", "I_ADVER_AE_SER", "AE", Widget::Radio, DataType::Integer),
            ("AE_ACTION", "I_ADVER_AE_ACTION", "AE", Widget::Checkbox, DataType::Text),
            ("AE_OUTCOME", "I_ADVER_AE_OUTCOME", "AE", Widget::SingleSelect, DataType::Integer),
            ("WEIGHT", "I_ADVER_WEIGHT", "ASSESS", Widget::Text, DataType::Real),
            ("HEIGHT", "I_ADVER_HEIGHT", "ASSESS", Widget::Text, DataType::Real),
            ("BMI", "I_ADVER_BMI", "ASSESS", Widget::Calculation, DataType::Real),
            ("INITIALS", "I_ADVER_INITIALS", "ASSESS", Widget::Text, DataType::Text),
            ("HOSP", "I_ADVER_HOSP", "ASSESS", Widget::Radio, DataType::Integer),
            ("HOSP_DAYS", "I_ADVER_HOSP_DAYS", "ASSESS", Widget::Text, DataType::Integer),
            ("COMMENTS", "I_ADVER_COMMENTS", "ASSESS", Widget::Textarea, DataType::Text),
        ]
    );
    let item = |name: &str| v.item(name).unwrap();

    // Texts and display.
    let any = item("AE_ANY");
    assert_eq!(any.section, "AE_SCREEN");
    assert_eq!(any.label.text, "Did the participant have any adverse event since the last visit?");
    assert_eq!(any.description.as_deref(), Some("Any adverse event since the last visit"));
    assert_eq!(any.question_number.as_deref(), Some("1"));
    assert_eq!(any.appearance.as_deref(), Some("horizontal"));
    assert_eq!(any.required, Required::Yes);
    assert_eq!(item("AE_END").required, Required::No);
    assert_eq!(item("AE_TERM").length, Some(200));
    assert_eq!(item("AE_OUTCOME").default_value.as_deref(), Some("--select--"));
    assert_eq!(item("INITIALS").subheader.as_deref(), Some("Two or three capital letters"));
    assert!(item("INITIALS").phi);
    assert!(!item("WEIGHT").phi);
    assert_eq!(item("WEIGHT").header.as_deref(), Some("Body measurements"));

    // Code lists: one per response label; AE_SER and HOSP reuse yes_no with blank options.
    let lists: Vec<(&str, &str, DataType)> =
        v.code_lists.iter().map(|c| (c.name.as_str(), c.oid.as_str(), c.data_type)).collect();
    assert_eq!(
        lists,
        [
            ("yes_no", "CL_ADVERSEEVENTS_YES_NO", DataType::Integer),
            ("severity", "CL_ADVERSEEVENTS_SEVERITY", DataType::Integer),
            ("ae_action", "CL_ADVERSEEVENTS_AE_ACTION", DataType::Text),
            ("ae_outcome", "CL_ADVERSEEVENTS_AE_OUTCOME", DataType::Integer),
        ]
    );
    for name in ["AE_ANY", "AE_SER", "HOSP"] {
        assert_eq!(item(name).code_list.as_ref().map(|o| o.as_str()), Some("CL_ADVERSEEVENTS_YES_NO"), "{name}");
    }
    let codes = |oid: &str| -> Vec<(String, String)> {
        v.code_list(oid)
            .unwrap()
            .items
            .iter()
            .map(|CodeListItem { value, label, .. }| (value.clone(), label.text.clone()))
            .collect()
    };
    let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
        p.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
    };
    assert_eq!(codes("CL_ADVERSEEVENTS_YES_NO"), pairs(&[("1", "Yes"), ("0", "No")]));
    assert_eq!(codes("CL_ADVERSEEVENTS_SEVERITY"), pairs(&[("1", "Mild"), ("2", "Moderate"), ("3", "Severe")]));
    // `\,` is a comma inside an option text.
    assert_eq!(codes("CL_ADVERSEEVENTS_AE_OUTCOME")[3], ("4".to_owned(), "Recovered, with sequelae".to_owned()));
    assert_eq!(codes("CL_ADVERSEEVENTS_AE_OUTCOME").len(), 6);
    assert_eq!(
        codes("CL_ADVERSEEVENTS_AE_ACTION")[4],
        ("CONMED".to_owned(), "Concomitant medication given".to_owned())
    );

    // WIDTH_DECIMAL, units and a func: range validation (GE + LE, soft as in OpenClinica).
    let weight = item("WEIGHT");
    assert_eq!((weight.length, weight.decimals), (Some(5), Some(1)));
    assert_eq!(weight.units.as_deref(), Some("kg"));
    let message = |m: &str| casebook_domain::design::Text::plain(m);
    assert_eq!(
        weight.checks,
        [
            Check {
                rule: CheckRule::Range { comparator: Comparator::GE, values: vec!["20".into()] },
                message: message("Weight must be between 20 and 300 kg"),
                hard: false,
            },
            Check {
                rule: CheckRule::Range { comparator: Comparator::LE, values: vec!["300".into()] },
                message: message("Weight must be between 20 and 300 kg"),
                hard: false,
            },
        ]
    );
    assert_eq!(
        item("HOSP_DAYS").checks,
        [Check {
            rule: CheckRule::Range { comparator: Comparator::GE, values: vec!["1".into()] },
            message: message("At least one day"),
            hard: false,
        }]
    );
    // regexp: validation.
    assert_eq!(
        item("INITIALS").checks,
        [Check {
            rule: CheckRule::Regexp { pattern: "[A-Z]{2,3}".into() },
            message: message("Write two or three capital letters"),
            hard: false,
        }]
    );
    assert_eq!(item("INITIALS").length, Some(3));

    // The calculation, read-only, and recorded with its cell.
    let bmi = item("BMI");
    assert!(bmi.readonly);
    assert_eq!(bmi.units.as_deref(), Some("kg/m2"));
    assert_eq!(bmi.right_text.as_deref(), Some("calculated on save"));
    let calc = bmi.calculation.as_ref().unwrap();
    assert_eq!(calc.dialect, Dialect::OcFunc);
    assert_eq!(calc.source, "func: WEIGHT / ((HEIGHT / 100) * (HEIGHT / 100))");
    assert_eq!(form.expression_cells.len(), 1);
    let cell = &form.expression_cells[0];
    assert_eq!((cell.owner.as_str(), cell.column.as_str()), ("BMI", "calculation"));
    assert_eq!(
        cell.location,
        Location::Sheet {
            sheet: "Items".into(),
            row: Some(12),
            column: Some("RESPONSE_VALUES_OR_CALCULATIONS".into())
        }
    );

    // The hidden item shown by a simple conditional display.
    let days = item("HOSP_DAYS");
    assert!(days.hidden);
    assert_eq!(
        days.conditional_display,
        Some(ConditionalDisplay {
            control_item: "HOSP".into(),
            option_value: "1".into(),
            message: "Days in hospital apply only when the participant was hospitalised".into(),
        })
    );
    assert!(!item("HOSP").hidden);
}

#[test]
fn demo_xls_reads_like_the_xlsx() {
    let xls = import_clean(&demo("xls"), Context::default());
    let xlsx = import_clean(&demo("xlsx"), Context::default());
    assert_eq!(xls, xlsx);
}

#[test]
fn broken_template_reports_every_problem_at_once() {
    let header = [
        "ITEM_NAME",
        "DESCRIPTION_LABEL",
        "LEFT_ITEM_TEXT",
        "UNITS",
        "SECTION_LABEL",
        "GROUP_LABEL",
        "RESPONSE_TYPE",
        "RESPONSE_LABEL",
        "RESPONSE_OPTIONS_TEXT",
        "RESPONSE_VALUES_OR_CALCULATIONS",
        "DATA_TYPE",
        "WIDTH_DECIMAL",
        "VALIDATION",
        "VALIDATION_ERROR_MESSAGE",
        "ITEM_DISPLAY_STATUS",
        "SIMPLE_CONDITIONAL_DISPLAY",
    ];
    let base = |name: &'static str, data_type: &'static str| -> Vec<(&'static str, &'static str)> {
        vec![
            ("ITEM_NAME", name),
            ("DESCRIPTION_LABEL", name),
            ("SECTION_LABEL", "S1"),
            ("RESPONSE_TYPE", "text"),
            ("DATA_TYPE", data_type),
        ]
    };
    let with = |mut cells: Vec<(&'static str, &'static str)>, more: &[(&'static str, &'static str)]| {
        for (c, v) in more {
            if let Some(existing) = cells.iter_mut().find(|(k, _)| k == c) {
                existing.1 = v;
            } else {
                cells.push((c, v));
            }
        }
        cells
    };
    let radio = [("RESPONSE_TYPE", "radio")];
    let rows: Vec<(usize, Vec<(&str, &str)>)> = vec![
        (2, base("AGE", "INT")),
        // Duplicate name.
        (3, base("AGE", "INT")),
        // Unknown section.
        (4, with(base("WT", "REAL"), &[("SECTION_LABEL", "S9")])),
        // Unknown group.
        (5, with(base("HT", "REAL"), &[("GROUP_LABEL", "G9")])),
        // Two option texts, three values.
        (
            6,
            with(
                base("SEX", "INT"),
                &[
                    radio[0],
                    ("RESPONSE_LABEL", "sex"),
                    ("RESPONSE_OPTIONS_TEXT", "Male,Female"),
                    ("RESPONSE_VALUES_OR_CALCULATIONS", "1,2,3"),
                ],
            ),
        ),
        // Decimals on an INT.
        (7, with(base("SCORE", "INT"), &[("WIDTH_DECIMAL", "5(2)")])),
        // A validation without its message.
        (8, with(base("TEMP", "REAL"), &[("VALIDATION", "func: range(35, 42)")])),
        // Not a template data type.
        (9, base("COLOUR", "TXT")),
        // A calculation using an item defined later.
        (
            10,
            with(
                base("BMI", "REAL"),
                &[
                    ("RESPONSE_TYPE", "calculation"),
                    ("RESPONSE_VALUES_OR_CALCULATIONS", "func: WEIGHT_KG / (AGE * AGE)"),
                ],
            ),
        ),
        // Shown by an item without options.
        (
            11,
            with(
                base("NOTE", "ST"),
                &[("ITEM_DISPLAY_STATUS", "HIDE"), ("SIMPLE_CONDITIONAL_DISPLAY", "AGE, 30, Only for people aged 30")],
            ),
        ),
        (
            12,
            with(
                base("SMOKER", "INT"),
                &[
                    radio[0],
                    ("RESPONSE_LABEL", "yes_no"),
                    ("RESPONSE_OPTIONS_TEXT", "Yes,No"),
                    ("RESPONSE_VALUES_OR_CALCULATIONS", "1,0"),
                ],
            ),
        ),
        // A unit whose measurement unit OID would be longer than 35 characters.
        (13, with(base("WEIGHT_KG", "REAL"), &[("UNITS", "milligrams per decilitre of whole blood")])),
        // The response label again, with other options.
        (
            14,
            with(
                base("DRINKER", "INT"),
                &[
                    radio[0],
                    ("RESPONSE_LABEL", "yes_no"),
                    ("RESPONSE_OPTIONS_TEXT", "Yes,No,Unknown"),
                    ("RESPONSE_VALUES_OR_CALCULATIONS", "1,0,9"),
                ],
            ),
        ),
    ];
    let rows: Vec<(usize, &[(&str, &str)])> = rows.iter().map(|(n, c)| (*n, c.as_slice())).collect();
    let wb = Workbook {
        sheets: vec![
            crf_sheet("Lifestyle", "1"),
            sheet_of_rows("Sections", &[&["SECTION_LABEL", "SECTION_TITLE"], &["S1", "Lifestyle"]]),
            sheet_of_rows("Groups", &[&["GROUP_LABEL", "GROUP_LAYOUT"]]),
            sheet_by_header("Items", &header, &rows),
        ],
    };
    let (form, d) = occrf::import(&wb, Context::default());
    let expected: &[(usize, &str, &str)] = &[
        (3, "ITEM_NAME", "ITEM_NAME 'AGE' is already used on row 2"),
        (4, "SECTION_LABEL", "SECTION_LABEL 'S9' is not defined on the Sections sheet"),
        (5, "GROUP_LABEL", "GROUP_LABEL 'G9' is not defined on the Groups sheet"),
        (6, "RESPONSE_VALUES_OR_CALCULATIONS", "There are 2 option texts but 3 option values"),
        (7, "WIDTH_DECIMAL", "decimals are only allowed for DATA_TYPE REAL"),
        (8, "VALIDATION_ERROR_MESSAGE", "VALIDATION_ERROR_MESSAGE is required when VALIDATION is set"),
        (9, "DATA_TYPE", "DATA_TYPE 'TXT' is not one of ST, INT, REAL, DATE, PDATE, FILE"),
        (10, "RESPONSE_VALUES_OR_CALCULATIONS", "uses 'WEIGHT_KG', which is defined later (row 13)"),
        (11, "SIMPLE_CONDITIONAL_DISPLAY", "is controlled by 'AGE', which has no options"),
        (13, "UNITS", "measurement unit OID MU_MILLIGRAMSPERDECILITREOFWHOLEBLOOD (37 characters)"),
        (14, "RESPONSE_LABEL", "RESPONSE_LABEL 'yes_no' was defined on row 12 with other options"),
    ];
    let found = places(&d);
    let wanted: Vec<_> = expected
        .iter()
        .map(|(r, c, _)| (Severity::Error, "Items".to_owned(), Some(*r), Some((*c).to_owned())))
        .collect();
    assert_eq!(found, wanted, "{:#?}", d.0);
    for (row, column, fragment) in expected {
        let diag = d
            .0
            .iter()
            .find(|x| matches!(&x.location, Location::Sheet { row: Some(r), column: Some(c), .. } if r == row && c == column))
            .unwrap();
        assert!(diag.message.contains(fragment), "row {row} {column}: {}", diag.message);
    }
    // The form is still built, so callers can show it, but the errors refuse the upload.
    assert!(d.has_errors());
    let form = form.unwrap();
    assert!(form.version.item("AGE").is_some() && form.version.item("COLOUR").is_none());
}

#[test]
fn template_without_items_sheet_is_refused() {
    let wb = Workbook {
        sheets: vec![
            crf_sheet("Vitals", "1"),
            sheet_of_rows("Sections", &[&["SECTION_LABEL", "SECTION_TITLE"], &["S1", "Vitals"]]),
        ],
    };
    assert!(!occrf::is_crf_template(&wb));
    let (form, d) = occrf::import(&wb, Context::default());
    assert!(form.is_none());
    assert_eq!(d.0.len(), 1, "{:#?}", d.0);
    assert_eq!(d.0[0].severity, Severity::Error);
    assert_eq!(d.0[0].location, Location::File);
    assert!(d.0[0].message.contains("no 'Items' sheet"), "{}", d.0[0].message);
    assert!(d.0[0].message.contains("it has: CRF, Sections"), "{}", d.0[0].message);
}

#[test]
fn sheet_ends_after_five_empty_rows() {
    // An old-style template: lower-case headers with `*`, no Groups sheet, no WIDTH_DECIMAL.
    let header: &[&str] = &["item_name*", "description_label*", "section_label*", "response_type*", "data_type*"];
    let row = |name: &str| -> Vec<String> {
        [name, name, "S1", "text", "ST"].iter().map(|c| (*c).to_owned()).collect::<Vec<_>>()
    };
    let items = Sheet {
        name: "Items".into(),
        rows: vec![
            (1, header.iter().map(|h| (*h).to_owned()).collect()),
            (2, row("x")),
            (3, row("X")),
            // Four empty rows (4–7), as a spreadsheet reader gives them: the sheet goes on.
            (4, vec![]),
            (5, vec![String::new(); 5]),
            (8, row("after_four_empty_rows")),
            // Five empty rows (9–13): the sheet ends; row 14 (even a duplicate) is not read.
            (14, row("x")),
            (15, row("never_read")),
        ],
    };
    let wb = Workbook {
        sheets: vec![
            crf_sheet("Gap test", "v1"),
            sheet_of_rows("Sections", &[&["SECTION_LABEL", "SECTION_TITLE"], &["S1", "Only section"]]),
            items,
        ],
    };
    let (form, d) = occrf::import(&wb, Context::default());
    assert_eq!(
        places(&d),
        [(Severity::Warning, "Items".to_owned(), Some(14), None)],
        "only the warning about the ignored rows: {:#?}",
        d.0
    );
    assert!(d.0[0].message.contains("rows 9–13 are empty"), "{}", d.0[0].message);
    let form = form.unwrap();
    let names: Vec<(&str, &str)> = form.version.items.iter().map(|i| (i.name.as_str(), i.oid.as_str())).collect();
    // Names are case-sensitive; their OIDs collide and get a deterministic suffix.
    assert_eq!(
        names,
        [("x", "I_GAPTE_X"), ("X", "I_GAPTE_X_1"), ("after_four_empty_rows", "I_GAPTE_AFTER_FOUR_EMPTY_ROWS")]
    );
    assert_eq!(form.version.groups.len(), 1);
    assert_eq!(form.version.groups[0].oid.as_str(), "IG_GAPTE_UNGROUPED");
}

#[test]
fn new_version_keeps_oids_and_items_may_not_change_group() {
    let v1 = import_clean(&demo("xlsx"), Context::default());
    let existing = FormDef {
        oid: v1.form_oid.clone(),
        name: v1.form_name.clone(),
        description: None,
        versions: vec![v1.version.clone()],
    };
    let mut taken: HashSet<String> = HashSet::new();
    taken.insert(existing.oid.to_string());
    taken.insert(v1.version.oid.to_string());
    taken.extend(v1.version.groups.iter().map(|g| g.oid.to_string()));
    taken.extend(v1.version.items.iter().map(|i| i.oid.to_string()));
    taken.extend(v1.version.code_lists.iter().map(|c| c.oid.to_string()));

    let mut wb = demo("xlsx");
    let crf = wb.sheets.iter_mut().find(|s| s.name == "CRF").unwrap();
    crf.rows[1].1[1] = "v2.0".into();
    let ctx = Context { existing: Some(&existing), taken: Some(&taken), file_stem: None };
    let v2 = import_clean(&wb, ctx);
    assert_eq!(v2.form_oid, v1.form_oid);
    assert_eq!(v2.version.oid.as_str(), "F_ADVERSEEVENT_V20");
    let oids = |f: &ImportedForm| -> Vec<String> {
        let v = &f.version;
        v.groups
            .iter()
            .map(|g| g.oid.to_string())
            .chain(v.items.iter().map(|i| i.oid.to_string()))
            .chain(v.code_lists.iter().map(|c| c.oid.to_string()))
            .collect()
    };
    assert_eq!(oids(&v2), oids(&v1));

    // COMMENTS moves from ASSESS to Ungrouped: refused.
    let items = wb.sheets.iter_mut().find(|s| s.name == "Items").unwrap();
    let group_column = items.rows[0].1.iter().position(|h| h == "GROUP_LABEL").unwrap();
    let comments = items.rows.iter_mut().find(|(_, r)| r.first().map(String::as_str) == Some("COMMENTS")).unwrap();
    let comments_row = comments.0;
    comments.1[group_column] = String::new();
    let (_, d) = occrf::import(&wb, ctx);
    assert_eq!(places(&d), [(Severity::Error, "Items".to_owned(), Some(comments_row), Some("GROUP_LABEL".to_owned()))]);
    assert!(d.0[0].message.contains("is in group 'ASSESS' in earlier versions"), "{}", d.0[0].message);
}

#[test]
fn calculations_grids_and_conditional_displays_follow_the_template_rules() {
    let header = [
        "ITEM_NAME",
        "DESCRIPTION_LABEL",
        "SECTION_LABEL",
        "GROUP_LABEL",
        "RESPONSE_TYPE",
        "RESPONSE_LABEL",
        "RESPONSE_OPTIONS_TEXT",
        "RESPONSE_VALUES_OR_CALCULATIONS",
        "DATA_TYPE",
        "VALIDATION",
        "VALIDATION_ERROR_MESSAGE",
        "ITEM_DISPLAY_STATUS",
        "SIMPLE_CONDITIONAL_DISPLAY",
    ];
    let item = |name: &'static str,
                section: &'static str,
                group: &'static str,
                response: &'static str,
                data_type: &'static str| {
        vec![
            ("ITEM_NAME", name),
            ("DESCRIPTION_LABEL", name),
            ("SECTION_LABEL", section),
            ("GROUP_LABEL", group),
            ("RESPONSE_TYPE", response),
            ("DATA_TYPE", data_type),
        ]
    };
    let with = |mut cells: Vec<(&'static str, &'static str)>, more: &[(&'static str, &'static str)]| {
        cells.extend_from_slice(more);
        cells
    };
    let calc = "RESPONSE_VALUES_OR_CALCULATIONS";
    let rows: Vec<(usize, Vec<(&str, &str)>)> = vec![
        (2, item("VISIT_DATE", "S1", "", "text", "DATE")),
        (3, item("VISIT_NO", "S1", "", "text", "INT")),
        (4, item("DOSE", "S1", "MEDS", "text", "REAL")),
        (5, item("FREQ", "S1", "MEDS", "text", "INT")),
        (6, with(item("TOTAL", "S1", "SUM", "group-calculation", "REAL"), &[(calc, "func: sum(DOSE)")])),
        // Back in the GRID after another group: not contiguous.
        (7, item("DOSE2", "S1", "MEDS", "text", "REAL")),
        // A GRID spans one section.
        (8, item("MEDS_S2", "S2", "MEDS", "text", "ST")),
        (
            9,
            with(
                item("STAMP", "S1", "", "instant-calculation", "ST"),
                &[(calc, "func: onchange(VISIT_DATE, _CURRENT_DATE)")],
            ),
        ),
        // A calculation uses items of its own group.
        (10, with(item("AVG", "S1", "SUM", "calculation", "REAL"), &[(calc, "func: VISIT_NO * 2")])),
        (
            11,
            with(
                item("GENDER", "S1", "", "radio", "ST"),
                &[("RESPONSE_LABEL", "sex"), ("RESPONSE_OPTIONS_TEXT", "Male,Female"), (calc, "m,f")],
            ),
        ),
        // The SCD value is not an option of GENDER.
        (
            12,
            with(
                item("PREG", "S1", "", "text", "ST"),
                &[("ITEM_DISPLAY_STATUS", "HIDE"), ("SIMPLE_CONDITIONAL_DISPLAY", "GENDER, x, Only for women")],
            ),
        ),
        (
            13,
            with(
                item("WT", "S1", "", "text", "INT"),
                &[("VALIDATION", "func: between(1, 2)"), ("VALIDATION_ERROR_MESSAGE", "Out of range")],
            ),
        ),
        // INT options must be whole numbers.
        (
            14,
            with(
                item("NUM", "S1", "", "radio", "INT"),
                &[("RESPONSE_LABEL", "n"), ("RESPONSE_OPTIONS_TEXT", "One,Two"), (calc, "1,two")],
            ),
        ),
    ];
    let rows: Vec<(usize, &[(&str, &str)])> = rows.iter().map(|(n, c)| (*n, c.as_slice())).collect();
    let wb = Workbook {
        sheets: vec![
            crf_sheet("Medication", "1"),
            sheet_of_rows("Sections", &[&["SECTION_LABEL", "SECTION_TITLE"], &["S1", "Medication"], &["S2", "More"]]),
            sheet_of_rows("Groups", &[&["GROUP_LABEL", "GROUP_LAYOUT"], &["MEDS", "GRID"], &["SUM", "NON-REPEATING"]]),
            sheet_by_header("Items", &header, &rows),
        ],
    };
    let (form, d) = occrf::import(&wb, Context::default());
    let expected: &[(usize, &str, &str)] = &[
        (7, "GROUP_LABEL", "items of GRID group 'MEDS' must be next to each other"),
        (8, "SECTION_LABEL", "items of GRID group 'MEDS' must be in one section"),
        (10, calc, "uses 'VISIT_NO' of group 'Ungrouped'; a calculation uses items of its own group ('SUM')"),
        (12, "SIMPLE_CONDITIONAL_DISPLAY", "'GENDER' = 'x', which is not one of its option values (m, f)"),
        (13, "VALIDATION", "unknown validation function between()"),
        (14, calc, "The option values 'two' are not whole-number values (DATA_TYPE INT)"),
    ];
    let wanted: Vec<_> = expected
        .iter()
        .map(|(r, c, _)| (Severity::Error, "Items".to_owned(), Some(*r), Some((*c).to_owned())))
        .collect();
    assert_eq!(places(&d), wanted, "{:#?}", d.0);
    for ((_, _, fragment), diag) in expected.iter().zip({
        let mut sorted = d.0.clone();
        sorted.sort_by_key(|x| match &x.location {
            Location::Sheet { row, .. } => *row,
            _ => None,
        });
        sorted
    }) {
        assert!(diag.message.contains(fragment), "{} does not say {fragment}", diag.message);
    }

    let form = form.unwrap();
    let v = &form.version;
    let total = v.item("TOTAL").unwrap();
    assert_eq!((total.widget, total.readonly), (Widget::GroupCalculation, true));
    assert_eq!(total.calculation.as_ref().unwrap().source, "func: sum(DOSE)");
    let stamp = v.item("STAMP").unwrap();
    assert_eq!((stamp.widget, stamp.readonly, stamp.calculation.is_none()), (Widget::Calculation, true, true));
    assert_eq!(stamp.extra.get("instant_calculation_trigger").map(String::as_str), Some("VISIT_DATE"));
    let owners: Vec<&str> = form.expression_cells.iter().map(|c| c.owner.as_str()).collect();
    assert_eq!(owners, ["TOTAL", "AVG"]);
    assert_eq!(v.group(v.item("DOSE").unwrap().group_oid.as_str()).unwrap().repeat.as_ref().unwrap().initial_rows, 1);
    assert_eq!(
        v.group(v.item("DOSE").unwrap().group_oid.as_str()).unwrap().repeat.as_ref().unwrap().max_rows,
        Some(40)
    );
}
