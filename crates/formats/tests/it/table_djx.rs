//! Tabular exports: CDISC Dataset-JSON v1.1 checked by `check-jsonschema` against the official
//! schema in the shared fixtures and read back by Python's `json`; Excel .xlsx read back by
//! `openpyxl`. Both checkers come from PyPI (scripts/test.sh installs them); the tests fail, not
//! skip, without them, naming the pip command.

use std::path::{Path, PathBuf};
use std::process::Command;

use casebook_formats::table_json::{DatasetJsonMeta, DatasetJsonWriter};
use casebook_formats::table_model::{ColumnKind, ColumnSpec, TableError, TableSpec};
use casebook_formats::table_xlsx::{XlsxOptions, XlsxWriter, column_letters, dictionary_rows};
use casebook_formats::workbook::Workbook;
use serde_json::{Value, json};

use crate::fixtures;

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("casebook-table-djx-{}-{name}", std::process::id()))
}

fn column(name: &str, kind: ColumnKind) -> ColumnSpec {
    ColumnSpec { name: name.into(), label: format!("The {name}"), kind, value_labels: Vec::new() }
}

fn spec() -> TableSpec {
    let mut sex = column("SEX", ColumnKind::Text);
    sex.value_labels = vec![("1".into(), "Male".into()), ("2".into(), "Female".into())];
    TableSpec {
        name: "IG_DEMOG".into(),
        label: "Demographics \"DM\" & more".into(),
        columns: vec![
            column("SUBJID", ColumnKind::Text),
            column("AGE", ColumnKind::Integer),
            column("WEIGHT", ColumnKind::Decimal),
            column("BRTHDTC", ColumnKind::Date),
            column("VISITDTM", ColumnKind::DateTime),
            column("VISITTM", ColumnKind::Time),
            sex,
        ],
    }
}

type Row = [Option<&'static str>; 7];

const ROWS: [Row; 4] = [
    [
        Some("S-001"),
        Some("42"),
        Some("71.50"),
        Some("1983-02-01"),
        Some("2026-01-02T10:11:12+01:00"),
        Some("10:11"),
        Some("1"),
    ],
    [Some("S-002 «ü» \"q\" \\ </x>"), Some("+007"), Some("-.5"), None, None, Some("23:59:59"), Some("2")],
    [Some("  spaced  "), Some("-0"), Some("12345678901234567890.123456789"), Some("2020-03"), None, None, None],
    [None, None, None, None, None, None, None],
];

fn meta() -> DatasetJsonMeta {
    DatasetJsonMeta {
        creation_date_time: "2026-11-22T12:00:00Z".into(),
        file_oid: Some("F.DEMO.IG_DEMOG".into()),
        db_last_modified_date_time: Some("2026-11-21T08:00:00".into()),
        originator: Some("Casebook test".into()),
        source_system: Some(("Casebook".into(), "0.1".into())),
        study_oid: Some("S_DEMO".into()),
        metadata_version_oid: Some("v1".into()),
        metadata_ref: None,
        item_oids: Vec::new(),
        keys: vec!["SUBJID".into()],
    }
}

fn write_json(records: Option<u64>) -> Vec<u8> {
    let mut w = DatasetJsonWriter::new(Vec::new(), spec(), &meta(), records).unwrap();
    for row in &ROWS {
        w.row(row).unwrap();
    }
    w.finish().unwrap()
}

fn check_jsonschema(file: &Path) -> std::process::Output {
    let schema = fixtures().join("dataset-json/dataset.schema.json");
    assert!(schema.is_file(), "the Dataset-JSON schema is missing at {}", schema.display());
    Command::new("check-jsonschema").arg("--schemafile").arg(&schema).arg(file).output().unwrap_or_else(|e| {
        panic!(
            "check-jsonschema is required to check Dataset-JSON output and could not be run ({e}); \
             install it with `pip install check-jsonschema` (scripts/test.sh does)"
        )
    })
}

fn assert_schema_valid(name: &str, bytes: &[u8]) {
    let file = scratch(name);
    std::fs::write(&file, bytes).unwrap();
    let out = check_jsonschema(&file);
    assert!(
        out.status.success(),
        "check-jsonschema rejects {name}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&file).unwrap();
}

/// Runs a Python script with the file as argv[1] and parses its stdout as JSON; `module` must be
/// importable or the test fails with the pip command.
fn python(module: &str, script: &str, file: &Path) -> Value {
    let probe = Command::new("python3").args(["-c", &format!("import {module}")]).output().unwrap_or_else(|e| {
        panic!("python3 is required to read the output back ({e}); install python3 and `pip install {module}`")
    });
    assert!(
        probe.status.success(),
        "the independent checker {module} is missing: run `pip install {module}` (scripts/test.sh does)"
    );
    let out = Command::new("python3").arg("-c").arg(script).arg(file).output().unwrap();
    assert!(out.status.success(), "python failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Python's own view of a Dataset-JSON file: the document, plus each cell's Python type name.
const READ_JSON: &str = r#"
import json, sys
with open(sys.argv[1], encoding="utf-8") as f:
    doc = json.load(f)
keys = list(doc.keys())
doc["_types"] = [[type(v).__name__ for v in row] for row in doc["rows"]]
doc["_keys"] = keys
print(json.dumps(doc))
"#;

fn expected_rows() -> Value {
    json!([
        ["S-001", 42, "71.50", "1983-02-01", "2026-01-02T10:11:12+01:00", "10:11", "1"],
        ["S-002 «ü» \"q\" \\ </x>", 7, "-0.5", null, null, "23:59:59", "2"],
        ["  spaced  ", 0, "12345678901234567890.123456789", "2020-03", null, null, null],
        [null, null, null, null, null, null, null],
    ])
}

#[test]
fn table_dataset_json_with_records_first_is_schema_valid_and_reads_back() {
    let bytes = write_json(Some(4));
    assert_schema_valid("records-first.json", &bytes);
    let file = scratch("records-first-read.json");
    std::fs::write(&file, &bytes).unwrap();
    let doc = python("json", READ_JSON, &file);
    std::fs::remove_file(&file).unwrap();

    assert_eq!(doc["datasetJSONVersion"], "1.1");
    assert_eq!(doc["datasetJSONCreationDateTime"], "2026-11-22T12:00:00Z");
    assert_eq!(doc["itemGroupOID"], "IG_DEMOG");
    assert_eq!(doc["name"], "IG_DEMOG");
    assert_eq!(doc["label"], "Demographics \"DM\" & more");
    assert_eq!(doc["records"], 4);
    assert_eq!(doc["sourceSystem"], json!({"name": "Casebook", "version": "0.1"}));
    assert_eq!(doc["studyOID"], "S_DEMO");
    assert_eq!(doc["metaDataVersionOID"], "v1");
    assert_eq!(doc["fileOID"], "F.DEMO.IG_DEMOG");
    let keys: Vec<&str> = doc["_keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    let pos = |k| keys.iter().position(|x| *x == k).unwrap();
    assert!(pos("records") < pos("rows"), "records must precede rows when announced: {keys:?}");
    assert_eq!(keys.last(), Some(&"rows"));

    let columns = doc["columns"].as_array().unwrap();
    let types: Vec<&str> = columns.iter().map(|c| c["dataType"].as_str().unwrap()).collect();
    assert_eq!(types, ["string", "integer", "decimal", "date", "datetime", "time", "string"]);
    assert_eq!(
        columns[0],
        json!({"itemOID": "IT.IG_DEMOG.SUBJID", "name": "SUBJID", "label": "The SUBJID", "dataType": "string", "keySequence": 1})
    );
    assert!(columns[1].get("keySequence").is_none());

    assert_eq!(doc["rows"], expected_rows());
    // Integers are JSON numbers, decimals strings (no precision lost), missing values null.
    assert_eq!(doc["_types"][0], json!(["str", "int", "str", "str", "str", "str", "str"]));
    assert_eq!(doc["_types"][3], json!(vec!["NoneType"; 7]));
}

#[test]
fn table_dataset_json_with_records_counted_after_rows() {
    let bytes = write_json(None);
    assert_schema_valid("records-last.json", &bytes);
    let file = scratch("records-last-read.json");
    std::fs::write(&file, &bytes).unwrap();
    let doc = python("json", READ_JSON, &file);
    std::fs::remove_file(&file).unwrap();
    assert_eq!(doc["records"], 4);
    assert_eq!(doc["_keys"].as_array().unwrap().last().unwrap(), "records");
    assert_eq!(doc["rows"], expected_rows());
}

#[test]
fn table_dataset_json_empty_dataset_and_explicit_item_oids() {
    let meta = DatasetJsonMeta {
        creation_date_time: "2026-11-22T12:00:00".into(),
        item_oids: (1..=7).map(|i| format!("IT.{i}")).collect(),
        ..DatasetJsonMeta::default()
    };
    let bytes = DatasetJsonWriter::new(Vec::new(), spec(), &meta, Some(0)).unwrap().finish().unwrap();
    assert_schema_valid("empty.json", &bytes);
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(doc["rows"], json!([]));
    assert_eq!(doc["records"], 0);
    assert_eq!(doc["columns"][6]["itemOID"], "IT.7");
    assert!(doc.get("sourceSystem").is_none() && doc.get("studyOID").is_none());
}

#[test]
fn table_checker_rejects_a_broken_dataset_json() {
    // The checker itself must be able to fail: a document without `records` is invalid.
    let mut doc: Value = serde_json::from_slice(&write_json(Some(4))).unwrap();
    doc.as_object_mut().unwrap().remove("records");
    let file = scratch("broken.json");
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    let out = check_jsonschema(&file);
    std::fs::remove_file(&file).unwrap();
    assert!(!out.status.success(), "check-jsonschema accepted a document without records");
}

#[test]
fn table_dataset_json_errors_name_the_column_and_row() {
    let mut w = DatasetJsonWriter::new(Vec::new(), spec(), &meta(), None).unwrap();
    w.row(&ROWS[0]).unwrap();
    let mut bad = ROWS[0];
    bad[1] = Some("4.5");
    let err = w.row(&bad).unwrap_err();
    assert!(matches!(&err, TableError::Cell { row: 2, column, .. } if column == "AGE"), "{err:?}");
    assert!(err.to_string().contains("row 2, column AGE"), "{err}");
    bad[1] = Some("4");
    bad[2] = Some("1e5");
    let err = w.row(&bad).unwrap_err();
    assert!(matches!(&err, TableError::Cell { row: 2, column, .. } if column == "WEIGHT"), "{err:?}");
    let err = w.row(&[None]).unwrap_err();
    assert!(matches!(err, TableError::Width { row: 2, expected: 7, got: 1 }), "{err:?}");
    // The failed rows left nothing behind: the document is still valid.
    let bytes = w.finish().unwrap();
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(doc["records"], 1);

    let mut w = DatasetJsonWriter::new(Vec::new(), spec(), &meta(), Some(2)).unwrap();
    w.row(&ROWS[0]).unwrap();
    assert!(w.finish().is_err(), "fewer rows than announced must fail");
    let mut w = DatasetJsonWriter::new(Vec::new(), spec(), &meta(), Some(0)).unwrap();
    assert!(w.row(&ROWS[0]).is_err(), "more rows than announced must fail");
}

/// openpyxl's view of a workbook: sheet names in order and every sheet's cell values, with the
/// header cells' boldness and the Python type of each data cell; also checks the zip's CRCs.
const READ_XLSX: &str = r#"
import json, sys, zipfile, openpyxl
assert zipfile.ZipFile(sys.argv[1]).testzip() is None
wb = openpyxl.load_workbook(sys.argv[1])
out = {"sheetnames": wb.sheetnames, "sheets": {}, "types": {}, "bold": {}, "freeze": {}}
for ws in wb.worksheets:
    rows = [list(r) for r in ws.iter_rows(values_only=True)]
    out["sheets"][ws.title] = rows
    out["types"][ws.title] = [[type(v).__name__ for v in r] for r in rows]
    out["bold"][ws.title] = [bool(c.font and c.font.b) for c in ws[1]] if ws.max_row else []
    out["freeze"][ws.title] = ws.freeze_panes
print(json.dumps(out))
"#;

fn write_xlsx(rows: &[Row], max_rows_per_sheet: u64) -> Vec<u8> {
    let options = XlsxOptions { max_rows_per_sheet, ..XlsxOptions::default() };
    let mut w = XlsxWriter::new(std::io::Cursor::new(Vec::new()), spec(), options).unwrap();
    for row in rows {
        w.row(row).unwrap();
    }
    w.add_sheet("dictionary", &dictionary_rows(&spec())).unwrap();
    w.finish().unwrap().into_inner()
}

fn read_xlsx(name: &str, bytes: &[u8]) -> Value {
    let file = scratch(name);
    std::fs::write(&file, bytes).unwrap();
    let book = python("openpyxl", READ_XLSX, &file);
    std::fs::remove_file(&file).unwrap();
    book
}

fn header() -> Value {
    json!(["SUBJID", "AGE", "WEIGHT", "BRTHDTC", "VISITDTM", "VISITTM", "SEX"])
}

#[test]
fn table_xlsx_reads_back_in_openpyxl_with_split_sheets_and_dictionary() {
    let rows: Vec<Row> = ROWS.iter().chain(ROWS.iter()).copied().collect(); // 8 rows
    let book = read_xlsx("split.xlsx", &write_xlsx(&rows, 3));
    assert_eq!(book["sheetnames"], json!(["data", "data_2", "data_3", "dictionary"]));
    let data = |s: &str| book["sheets"][s].as_array().unwrap().clone();
    for s in ["data", "data_2", "data_3"] {
        assert_eq!(data(s)[0], header(), "header of {s}");
        assert_eq!(book["bold"][s], json!(vec![true; 7]), "bold header of {s}");
        assert_eq!(book["freeze"][s], "A2");
    }
    // 8 rows at 3 a sheet: 3 + 3 + 2, under a header each; openpyxl does not count the trailing
    // all-missing row of data_3 (a <row> with no cells) in its dimensions, so it reads 1 of 2.
    assert_eq!((data("data").len(), data("data_2").len(), data("data_3").len()), (4, 4, 2));
    let values: Vec<Value> = ["data", "data_2", "data_3"].iter().flat_map(|s| data(s)[1..].to_vec()).collect();
    let first = json!(["S-001", 42, 71.5, "1983-02-01", "2026-01-02T10:11:12+01:00", "10:11", "1"]);
    assert_eq!(values[0], first);
    assert_eq!(values[1], json!(["S-002 «ü» \"q\" \\ </x>", 7, -0.5, null, null, "23:59:59", "2"]));
    assert_eq!(values[2][0], "  spaced  ");
    assert_eq!(values[2][1], 0);
    assert_eq!(values[2][2].as_f64().unwrap(), 12_345_678_901_234_567_890.123_456_789);
    assert_eq!(values[2][3], "2020-03");
    // An all-missing row in the middle of a sheet keeps its place.
    assert_eq!(values[3], json!(vec![Value::Null; 7]));
    assert_eq!(values[4], first);
    assert_eq!(book["types"]["data"][1], json!(["str", "int", "float", "str", "str", "str", "str"]));

    let dict = data("dictionary");
    assert_eq!(dict[0], json!(["column", "label", "type", "code", "value label"]));
    assert_eq!(dict[1], json!(["SUBJID", "The SUBJID", "text", null, null]));
    assert!(dict.contains(&json!(["SEX", null, null, "2", "Female"])), "{dict:?}");
    assert_eq!(book["bold"]["dictionary"], json!(vec![true; 5]));
}

#[test]
fn table_xlsx_exactly_full_sheet_makes_no_empty_sheet_and_empty_table_keeps_header() {
    let book = read_xlsx("full.xlsx", &write_xlsx(&ROWS[..3], 3));
    assert_eq!(book["sheetnames"], json!(["data", "dictionary"]));
    assert_eq!(book["sheets"]["data"].as_array().unwrap().len(), 4);

    let book = read_xlsx("empty.xlsx", &write_xlsx(&[], 3));
    assert_eq!(book["sheetnames"], json!(["data", "dictionary"]));
    assert_eq!(book["sheets"]["data"], json!([header()]));
}

#[test]
fn table_xlsx_text_survives_xml_and_excel_escapes() {
    let spec = TableSpec { name: "T".into(), label: "T".into(), columns: vec![column("TXT", ColumnKind::Text)] };
    let texts = ["a & b < c > d \"e\" 'f'", "tab\there", "line\nbreak", "_x0041_ literal", "bell\u{7}", "😀 emoji"];
    let mut w = XlsxWriter::new(std::io::Cursor::new(Vec::new()), spec, XlsxOptions::default()).unwrap();
    for t in texts {
        w.row(&[Some(t)]).unwrap();
    }
    let book = read_xlsx("escapes.xlsx", &w.finish().unwrap().into_inner());
    let got: Vec<Value> = book["sheets"]["data"].as_array().unwrap()[1..].iter().map(|r| r[0].clone()).collect();
    // ECMA-376 (ST_Xstring) writes characters XML cannot carry as `_xHHHH_`, and the underscore
    // of a literal `_xHHHH_` as `_x005F_`; Excel decodes both, openpyxl shows them as stored.
    let want =
        ["a & b < c > d \"e\" 'f'", "tab\there", "line\nbreak", "_x005F_x0041_ literal", "bell_x0007_", "😀 emoji"];
    assert_eq!(got, want.map(|t| json!(t)));
}

#[test]
fn table_xlsx_errors_name_the_column_and_row_and_sheet_names_are_checked() {
    let mut w = XlsxWriter::new(std::io::Cursor::new(Vec::new()), spec(), XlsxOptions::default()).unwrap();
    w.row(&ROWS[0]).unwrap();
    let mut bad = ROWS[0];
    bad[2] = Some("seventy");
    let err = w.row(&bad).unwrap_err();
    assert!(matches!(&err, TableError::Cell { row: 2, column, .. } if column == "WEIGHT"), "{err:?}");
    assert!(w.add_sheet("bad/name", &[]).is_err());
    assert!(w.add_sheet("DATA", &[]).is_err(), "sheet names are unique regardless of case");
    assert!(w.add_sheet("data_9", &[]).is_err(), "data_N names are kept for data sheets");
    assert!(w.add_sheet(&"x".repeat(32), &[]).is_err());
    w.add_sheet("notes", &[vec!["only".into()]]).unwrap();
    assert!(w.add_sheet("Notes", &[]).is_err());
    let book = read_xlsx("errors.xlsx", &w.finish().unwrap().into_inner());
    assert_eq!(book["sheetnames"], json!(["data", "notes"]));
    assert_eq!(book["sheets"]["data"].as_array().unwrap().len(), 2, "the failed row left nothing behind");

    let options = XlsxOptions { max_rows_per_sheet: 0, ..XlsxOptions::default() };
    assert!(XlsxWriter::new(std::io::Cursor::new(Vec::new()), spec(), options).is_err());
    assert_eq!(
        [column_letters(0), column_letters(25), column_letters(26), column_letters(16_383)],
        ["A", "Z", "AA", "XFD"]
    );
}

#[test]
fn table_xlsx_reads_back_through_casebooks_own_workbook_reader() {
    // A second, independent reader (calamine, behind Workbook): a round trip of our own export.
    let rows: Vec<Row> = ROWS.iter().chain(ROWS.iter()).copied().collect();
    let book = Workbook::from_bytes(&write_xlsx(&rows, 3)).unwrap();
    let names: Vec<&str> = book.sheets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["data", "data_2", "data_3", "dictionary"]);
    let data = book.sheet("data").unwrap();
    let (row, header) = data.header().unwrap();
    assert_eq!((row, header.len()), (1, 7));
    assert_eq!(header[0], "SUBJID");
    let first = &data.rows[1].1;
    assert_eq!(first[..4], ["S-001", "42", "71.5", "1983-02-01"]);
    assert_eq!(book.sheet("data_2").unwrap().rows[2].1[0], "S-001");
}
