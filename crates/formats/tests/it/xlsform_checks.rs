//! What the XLSForm importer reports about expressions: every problem, with its cell.

use casebook_formats::workbook::Workbook;
use casebook_formats::xlsform::{self, Context};

fn errors(md: &str) -> Vec<String> {
    let (_, d) = xlsform::import(&Workbook::from_markdown(md), Context { file_stem: Some("f"), ..Context::default() });
    d.errors().map(ToString::to_string).collect()
}

#[test]
fn expression_problems_are_reported_with_cell_and_position() {
    let e = errors(
        "
        | survey |
        | | type | name | label | relevant | constraint | calculation |
        | | decimal | weight | Weight | | . > 0 | |
        | | date | dob | Birth | ${weigt} > 3 | | |
        | | text | name | Name | | . > today() | |
        | | calculate | a | | | | ${b} + 1 |
        | | calculate | b | | | | ${a} * 2 |
        | | integer | n | N | round(${weight}, 1, 2) = 3 | | |
        | | text | t | T | ${weight} > (3 | | |
        ",
    );
    let all = e.join("\n");
    assert!(all.contains("row 3, column 'relevant'") && all.contains("did you mean ${weight}"), "{all}");
    assert!(all.contains("row 5, column 'calculation': circular calculation: a → b → a"), "{all}");
    assert!(all.contains("row 7, column 'relevant'") && all.contains("round() takes 1 or 2 arguments, got 3"), "{all}");
    assert!(all.contains("row 8, column 'relevant'") && all.contains("missing ')'"), "{all}");
    assert_eq!(e.len(), 4, "{all}");
}

#[test]
fn repeating_items_are_aggregated_not_compared() {
    let e = errors(
        "
        | survey |
        | | type | name | label | calculation | relevant |
        | | begin repeat | meds | Medications | | |
        | | decimal | dose | Dose | | |
        | | end repeat | | | | |
        | | calculate | total | | sum(${dose}) | |
        | | text | why | Why | | ${dose} > 100 |
        ",
    );
    let all = e.join("\n");
    assert_eq!(e.len(), 1, "{all}");
    assert!(all.contains("row 6, column 'relevant'") && all.contains("sum(), count()"), "{all}");
}

#[test]
fn the_demo_form_is_clean() {
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../demo/forms/vital_signs.xlsx")).unwrap();
    let (form, d) = xlsform::import(&Workbook::from_bytes(&bytes).unwrap(), Context::default());
    assert!(!d.has_errors() && d.0.is_empty(), "{:#?}", d.0);
    assert_eq!(form.unwrap().version.items.len(), 12);
}

#[test]
fn password_protected_workbooks_are_named_as_such() {
    // The demo vital signs form encrypted with the password "secret" (msoffcrypto-tool).
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/password_protected.xlsx")).unwrap();
    let err = Workbook::from_bytes(&bytes).unwrap_err().to_string();
    assert!(err.starts_with("the workbook is password-protected"), "{err}");
}
