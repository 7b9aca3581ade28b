//! SAS XPORT, SPSS and Stata files out, read back by an independent reader: pyreadstat (PyPI,
//! on ReadStat). pyreadstat is required: the tests fail, not skip, without it
//! (`pip install pyreadstat`; `scripts/test.sh` installs it).

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::process::Command;

use casebook_formats::table::sas_xpt::{XptWriter, sas_formats_program};
use casebook_formats::table::spss_sav::SavWriter;
use casebook_formats::table::stata_dta::DtaWriter;
use casebook_formats::table::{ColumnKind, ColumnSpec, TableSpec, short_names};
use serde_json::{Value, json};
use time::macros::datetime;

const LONG_1: &str = "WEIGHT_KILOGRAMS_AT_THE_BASELINE_VISIT_OF_THE_SCREENING_EVENT_E1_C1_REPEAT";
const LONG_2: &str = "WEIGHT_KILOGRAMS_AT_THE_BASELINE_VISIT_OF_THE_SCREENING_EVENT_E1_C2_REPEAT";

fn spec() -> TableSpec {
    let mut subject = ColumnSpec::new("SUBJECT", "Sujet « identifiant »", ColumnKind::Text);
    subject.width = Some(37);
    let mut sex = ColumnSpec::new("SEX", "Sex", ColumnKind::Integer);
    sex.value_labels = vec![("1".into(), "Male".into()), ("2".into(), "Female — née".into())];
    TableSpec {
        name: "demog_form".into(),
        label: "Demographics".into(),
        created: datetime!(2026-01-02 03:04:05 UTC),
        columns: vec![
            subject,
            ColumnSpec::new("AGE", "Age (years)", ColumnKind::Integer),
            ColumnSpec::new(LONG_1, "Poids (kg) à l'inclusion", ColumnKind::Decimal),
            ColumnSpec::new(LONG_2, "Second weight", ColumnKind::Decimal),
            ColumnSpec::new("VISIT_DATE", "Visit date", ColumnKind::Date),
            ColumnSpec::new("VISIT_AT", "Visit date and time", ColumnKind::DateTime),
            ColumnSpec::new("DOSE_TIME", "Time of dose", ColumnKind::Time),
            sex,
        ],
    }
}

const ROWS: [[Option<&str>; 8]; 3] = [
    [
        Some("Zoë \"Q\" 'x' 日本"),
        Some("64"),
        Some("64.5"),
        Some("1e3"),
        Some("2024-03-05"),
        Some("2024-03-05T14:30:15Z"),
        Some("08:30"),
        Some("1"),
    ],
    [
        Some("B-002"),
        Some("-3"),
        Some("-0.125"),
        Some("-1234567.875"),
        Some("1959-12-31"),
        Some("2024-03-05T14:30:00+02:00"),
        Some("23:59:59"),
        Some("2"),
    ],
    [None, None, None, None, None, None, None, None],
];

/// pyreadstat's view of a file: column names and labels, value labels, file label, row count,
/// and the rows with missing as null and dates, datetimes and times in ISO form.
fn read_back(kind: &str, path: &Path) -> Value {
    let check = Command::new("python3").args(["-c", "import pyreadstat"]).output();
    assert!(
        check.as_ref().is_ok_and(|o| o.status.success()),
        "pyreadstat is missing: pip install pyreadstat ({check:?})"
    );
    const SCRIPT: &str = r#"
import sys, json, math
import pyreadstat
kind, path = sys.argv[1], sys.argv[2]
if kind == "xpt":
    data, meta = pyreadstat.read_xport(path, encoding="utf-8", metadataonly=False, output_format="dict")
elif kind == "sav":
    data, meta = pyreadstat.read_sav(path, metadataonly=False, output_format="dict")
else:
    data, meta = pyreadstat.read_dta(path, metadataonly=False, output_format="dict")
def cell(v):
    if hasattr(v, "item") and not isinstance(v, str):
        v = v.item()
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return v
print(json.dumps({
    "columns": list(meta.column_names),
    "labels": list(meta.column_labels),
    "value_labels": {k: {str(c): l for c, l in v.items()} for k, v in meta.variable_value_labels.items()},
    "file_label": meta.file_label,
    "table_name": meta.table_name,
    "n": meta.number_rows,
    "created": str(meta.creation_time),
    "formats": [meta.original_variable_types[c] for c in meta.column_names],
    "rows": [[cell(data[c][i]) for c in meta.column_names] for i in range(meta.number_rows)],
}, ensure_ascii=False))
"#;
    let out = Command::new("python3").args(["-c", SCRIPT, kind]).arg(path).output().unwrap();
    assert!(out.status.success(), "pyreadstat failed on {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn temp(ext: &str) -> PathBuf {
    std::env::temp_dir().join(format!("casebook-table-{}.{ext}", std::process::id()))
}

fn all_names() -> Vec<String> {
    spec().columns.iter().map(|c| c.name.clone()).collect()
}

#[test]
fn table_short_names_are_unique_valid_and_stable() {
    let names = short_names(&all_names(), 8);
    assert_eq!(names, ["SUBJECT", "AGE", "WEIGHT_K", "WEIGHT_2", "VISIT_DA", "VISIT_AT", "DOSE_TIM", "SEX"]);
    assert_eq!(short_names(&all_names(), 8), names);
    let names = short_names(&["a-b".into(), "A_B".into(), "9x".into(), "é".into()], 32);
    assert_eq!(names, ["A_B", "A_B2", "V9X", "V_"]);
}

#[test]
fn table_sas_xpt_reads_back_in_pyreadstat() {
    let path = temp("xpt");
    let mut w = XptWriter::new(BufWriter::new(File::create(&path).unwrap()), spec()).unwrap();
    assert_eq!(w.names(), short_names(&all_names(), 8));
    for r in &ROWS {
        w.row(r).unwrap();
    }
    w.finish().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len() % 80, 0, "80-byte records");
    let got = read_back("xpt", &path);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(
        got["columns"],
        json!(["SUBJECT", "AGE", "WEIGHT_K", "WEIGHT_2", "VISIT_DA", "VISIT_AT", "DOSE_TIM", "SEX"])
    );
    assert_eq!(
        got["labels"],
        json!([
            "Sujet « identifiant »",
            "Age (years)",
            "Poids (kg) à l'inclusion",
            "Second weight",
            "Visit date",
            "Visit date and time",
            "Time of dose",
            "Sex"
        ])
    );
    assert_eq!(got["file_label"], json!("Demographics"));
    assert_eq!(got["table_name"], json!("DEMOG_FO"), "dataset name cut to 8");
    assert_eq!(got["n"], json!(3));
    assert_eq!(got["created"], json!("2026-01-02 03:04:05"));
    assert_eq!(got["formats"], json!([null, null, null, null, "E8601DA10", "E8601DT19", "TIME8", null]));
    assert_eq!(got["value_labels"], json!({}), "value labels are in the SAS program, not the file");
    assert_eq!(
        got["rows"],
        json!([
            ["Zoë \"Q\" 'x' 日本", 64.0, 64.5, 1000.0, "2024-03-05", "2024-03-05T14:30:15", "08:30:00", 1.0],
            ["B-002", -3.0, -0.125, -1234567.875, "1959-12-31", "2024-03-05T12:30:00", "23:59:59", 2.0],
            ["", null, null, null, null, null, null, null]
        ])
    );

    let program = sas_formats_program(&spec());
    assert!(
        program.contains("PROC FORMAT;\n  VALUE SEXF\n    1 = 'Male'\n    2 = 'Female — née'\n  ;\nRUN;"),
        "{program}"
    );
    assert!(program.contains("DATA DEMOG_FO;\n  SET DEMOG_FO;\n  FORMAT SEX SEXF.;\nRUN;"), "{program}");
}

#[test]
fn table_spss_sav_reads_back_in_pyreadstat() {
    let path = temp("sav");
    let mut w = SavWriter::new(BufWriter::new(File::create(&path).unwrap()), spec()).unwrap();
    assert_eq!(w.long_names(), short_names(&all_names(), 64));
    assert_eq!(w.short_names()[2..4], ["WEIGHT_K", "WEIGHT_2"]);
    for r in &ROWS {
        w.row(r).unwrap();
    }
    w.finish().unwrap();
    let got = read_back("sav", &path);
    std::fs::remove_file(&path).unwrap();
    let long_1 = &LONG_1[..64];
    let long_2 = format!("{}2", &LONG_1[..63]);
    assert_eq!(got["columns"], json!(["SUBJECT", "AGE", long_1, long_2, "VISIT_DATE", "VISIT_AT", "DOSE_TIME", "SEX"]));
    assert_eq!(got["labels"][0], json!("Sujet « identifiant »"));
    assert_eq!(got["labels"][2], json!("Poids (kg) à l'inclusion"));
    assert_eq!(got["file_label"], json!("Demographics"));
    assert_eq!(got["n"], json!(3));
    assert_eq!(got["created"], json!("2026-01-02 03:04:05"));
    assert_eq!(got["formats"], json!(["A37", "F11.0", "F16.6", "F16.6", "DATE11", "DATETIME20", "TIME8", "F11.0"]));
    assert_eq!(got["value_labels"], json!({"SEX": {"1.0": "Male", "2.0": "Female — née"}}));
    assert_eq!(
        got["rows"],
        json!([
            ["Zoë \"Q\" 'x' 日本", 64.0, 64.5, 1000.0, "2024-03-05", "2024-03-05T14:30:15", "08:30:00", 1.0],
            ["B-002", -3.0, -0.125, -1234567.875, "1959-12-31", "2024-03-05T12:30:00", "23:59:59", 2.0],
            ["", null, null, null, null, null, null, null]
        ])
    );
}

#[test]
fn table_stata_dta_reads_back_in_pyreadstat() {
    let path = temp("dta");
    let mut w = DtaWriter::new(BufWriter::new(File::create(&path).unwrap()), spec()).unwrap();
    assert_eq!(w.names(), short_names(&all_names(), 32));
    for r in &ROWS {
        w.row(r).unwrap();
    }
    w.finish().unwrap();
    let got = read_back("dta", &path);
    std::fs::remove_file(&path).unwrap();
    let long_1 = &LONG_1[..32];
    let long_2 = format!("{}2", &LONG_1[..31]);
    assert_eq!(got["columns"], json!(["SUBJECT", "AGE", long_1, long_2, "VISIT_DATE", "VISIT_AT", "DOSE_TIME", "SEX"]));
    assert_eq!(got["labels"][0], json!("Sujet « identifiant »"));
    assert_eq!(got["labels"][2], json!("Poids (kg) à l'inclusion"));
    assert_eq!(got["file_label"], json!("Demographics"));
    assert_eq!(got["n"], json!(3));
    assert_eq!(got["created"], json!("2026-01-02 03:04:00"), "Stata keeps minutes");
    assert_eq!(got["formats"], json!(["%37s", "%12.0g", "%10.0g", "%10.0g", "%td", "%tc", "%tcHH:MM:SS", "%12.0g"]));
    assert_eq!(got["value_labels"], json!({"SEX": {"1": "Male", "2": "Female — née"}}));
    assert_eq!(
        got["rows"],
        json!([
            ["Zoë \"Q\" 'x' 日本", 64.0, 64.5, 1000.0, "2024-03-05", "2024-03-05T14:30:15", "08:30:00", 1.0],
            ["B-002", -3.0, -0.125, -1234567.875, "1959-12-31", "2024-03-05T12:30:00", "23:59:59", 2.0],
            ["", null, null, null, null, null, null, null]
        ])
    );
}

#[test]
fn table_bad_cells_are_errors_naming_column_and_row() {
    let mut w = XptWriter::new(Vec::new(), spec()).unwrap();
    w.row(&ROWS[0]).unwrap();
    let mut bad = ROWS[1];
    bad[4] = Some("2024-02-30");
    let err = w.row(&bad).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(err.to_string(), "row 2, column VISIT_DATE: \"2024-02-30\" is not a date (YYYY-MM-DD)");

    let mut w = SavWriter::new(io::Cursor::new(Vec::new()), spec()).unwrap();
    let mut bad = ROWS[0];
    let long = "x".repeat(38);
    bad[0] = Some(&long);
    let err = w.row(&bad).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(err.to_string(), "row 1, column SUBJECT: text of 38 bytes is longer than the column width 37");

    let mut w = DtaWriter::new(io::Cursor::new(Vec::new()), spec()).unwrap();
    let mut bad = ROWS[0];
    bad[1] = Some("64.5");
    let err = w.row(&bad).unwrap_err();
    assert_eq!(err.to_string(), "row 1, column AGE: \"64.5\" is not an integer");
}

/// The IEEE → IBM conversion is exact: pyreadstat's IBM → IEEE conversion gives back the same
/// bits, across the IBM range; below it, values become 0.
#[test]
fn table_sas_xpt_numbers_survive_ibm_floating_point_exactly() {
    let values =
        ["0.1", "-0.1", "1", "3.141592653589793", "0.3333333333333333", "-123456789.123", "1e-70", "-7e75", "6e-79"];
    let path = temp("ibm.xpt");
    let spec = TableSpec {
        name: "NUMBERS".into(),
        label: String::new(),
        columns: vec![ColumnSpec::new("X", "", ColumnKind::Decimal)],
        created: datetime!(2026-01-02 03:04:05 UTC),
    };
    let mut w = XptWriter::new(BufWriter::new(File::create(&path).unwrap()), spec).unwrap();
    for v in values.iter().chain(&["5e-300"]) {
        w.row(&[Some(v)]).unwrap();
    }
    w.finish().unwrap();
    let script = "import sys, struct, pyreadstat\n\
                  data, meta = pyreadstat.read_xport(sys.argv[1], output_format='dict')\n\
                  print(' '.join(struct.pack('>d', float(x)).hex() for x in data['X']))";
    let check = Command::new("python3").args(["-c", "import pyreadstat"]).output();
    assert!(check.is_ok_and(|o| o.status.success()), "pyreadstat is missing: pip install pyreadstat");
    let out = Command::new("python3").args(["-c", script]).arg(&path).output().unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Vec<String> = String::from_utf8(out.stdout).unwrap().split_whitespace().map(str::to_owned).collect();
    let mut want: Vec<String> =
        values.iter().map(|v| format!("{:016x}", v.parse::<f64>().unwrap().to_bits())).collect();
    want.push(format!("{:016x}", 0.0f64.to_bits()));
    assert_eq!(got, want);
}
