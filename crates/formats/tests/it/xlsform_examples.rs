//! Every spreadsheet in `fixtures/xlsform/example_xls/` (pyxform's examples, `.xls` and `.xlsx`)
//! loads; the few that use features Casebook refuses are refused with a message naming them.

use casebook_formats::workbook::Workbook;
use casebook_formats::xlsform::{self, Context};

#[test]
fn example_workbooks_load() {
    let dir = crate::fixtures().join("xlsform/example_xls");
    let mut loaded = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext, "xls" | "xlsx" | "md") {
            continue;
        }
        let wb = if ext == "md" {
            Workbook::from_markdown(&std::fs::read_to_string(&path).unwrap())
        } else {
            Workbook::from_bytes(&std::fs::read(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("form").to_owned();
        let unsupported = xlsform::unsupported_features(&wb);
        let (form, diags) = xlsform::import(&wb, Context { file_stem: Some(&stem), ..Context::default() });
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if unsupported.is_empty() {
            assert!(!diags.has_errors(), "{name} refused: {:#?}", diags.0);
            let form = form.unwrap();
            assert!(!form.version.items.is_empty(), "{name} has no items");
            loaded.push(format!("{name}: {} items", form.version.items.len()));
        } else {
            assert!(diags.has_errors(), "{name} uses {unsupported:?} but was accepted");
            println!("{name}: refused as expected ({})", unsupported.join(", "));
        }
    }
    println!("{}", loaded.join("\n"));
    assert!(loaded.len() >= 15, "only {} example forms loaded", loaded.len());
}
