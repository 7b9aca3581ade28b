//! Conformance with pyxform on its own test corpus (1,347 small XLSForms as markdown).
//!
//! For every form that uses only features Casebook supports, Casebook must accept what pyxform
//! accepted and reject what it rejected. Deliberate differences are listed, each with a reason,
//! in `tests/xlsform_divergences.txt`; the test fails on any other disagreement and on a listed
//! case that no longer disagrees (so the list stays true). The agreement figure is printed.

use std::collections::BTreeMap;
use std::io::BufRead;

use casebook_formats::workbook::Workbook;
use casebook_formats::xlsform::{self, Context};

#[derive(serde::Deserialize)]
struct Case {
    test: String,
    md: String,
    result: CaseResult,
}

#[derive(serde::Deserialize)]
struct CaseResult {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
}

fn divergences() -> BTreeMap<String, String> {
    let text = include_str!("../xlsform_divergences.txt");
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (test, reason) = l.split_once(" | ").unwrap_or((l, ""));
            (test.trim().to_owned(), reason.trim().to_owned())
        })
        .collect()
}

#[test]
fn pyxform_corpus_agreement() {
    let path = crate::fixtures().join("xlsform/pyxform_md_corpus.jsonl.gz");
    let file = std::fs::File::open(&path).unwrap();
    let reader = std::io::BufReader::new(flate2::read::GzDecoder::new(file));
    let listed = divergences();
    let (mut total, mut unsupported, mut agree) = (0, 0, 0);
    let mut unexpected = Vec::new();
    let mut seen_listed = Vec::new();
    for line in reader.lines() {
        let case: Case = serde_json::from_str(&line.unwrap()).unwrap();
        total += 1;
        let wb = Workbook::from_markdown(&case.md);
        if !xlsform::unsupported_features(&wb).is_empty() {
            unsupported += 1;
            continue;
        }
        let (_, diags) = xlsform::import(&wb, Context { file_stem: Some("data"), ..Context::default() });
        let ours = !diags.has_errors();
        if ours == case.result.ok {
            agree += 1;
            if listed.contains_key(&case.test) {
                unexpected.push(format!("{}: listed as a divergence but now agrees", case.test));
            }
            continue;
        }
        if listed.contains_key(&case.test) {
            seen_listed.push(case.test.clone());
            continue;
        }
        let ours_text = diags.0.iter().map(ToString::to_string).collect::<Vec<_>>().join(" / ");
        unexpected.push(format!(
            "{}: pyxform {} ({}), Casebook {} ({})",
            case.test,
            if case.result.ok { "accepts" } else { "rejects" },
            case.result.error.as_deref().unwrap_or(""),
            if ours { "accepts" } else { "rejects" },
            ours_text
        ));
    }
    let supported = total - unsupported;
    let diverging = seen_listed.len();
    #[allow(clippy::cast_precision_loss)]
    let pct = 100.0 * f64::from(agree) / f64::from(supported.max(1));
    println!(
        "pyxform corpus: {total} cases, {unsupported} use features Casebook does not support (external files, entities, ranges …), \
         {supported} checked: {agree} agree ({pct:.1}%), {diverging} listed divergences"
    );
    assert!(unexpected.is_empty(), "{} unexpected results:\n{}", unexpected.len(), unexpected.join("\n"));
}
