//! Benchmark: reading and checking a large XLSForm, against pyxform converting the same file
//! in-process, measured in the same run on the same machine.
//!
//! `bash bench/xlsform.sh [QUESTIONS]` installs what it needs and runs this in release mode.
//! Usage: `xlsform_bench FILE.xlsx [ROUNDS]`. Prints the median time per conversion for
//! Casebook (read workbook + import + type-check every expression) and for pyxform
//! (`pyxform.xls2xform.convert`, which reads the workbook and writes the XForm, without ODK
//! Validate), and the ratio.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::process::Command;
use std::time::Instant;

use casebook_formats::workbook::Workbook;
use casebook_formats::xlsform::{self, Context};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: xlsform_bench FILE.xlsx [ROUNDS]");
    let rounds: usize = args.next().map_or(15, |r| r.parse().expect("ROUNDS is a number"));
    let bytes = std::fs::read(&path).expect("reading the workbook");

    // Casebook: the whole upload path minus the database.
    let mut times = Vec::new();
    let mut items = 0;
    let mut read_only = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let wb = Workbook::from_bytes(&bytes).expect("a workbook");
        read_only.push(t.elapsed().as_secs_f64());
        let (form, d) = xlsform::import(&wb, Context::default());
        times.push(t.elapsed().as_secs_f64());
        assert!(!d.has_errors(), "{:?}", d.errors().take(5).collect::<Vec<_>>());
        items = form.expect("a form").version.items.len();
    }
    let ours = median(times);
    let ours_read = median(read_only);

    // pyxform, timed inside Python so interpreter start-up is not counted.
    let script = format!(
        "import time, statistics\n\
         from pyxform.xls2xform import convert\n\
         convert(xlsform={path:?})\n\
         ts = []\n\
         for _ in range({rounds}):\n\
         \x20   t = time.perf_counter(); convert(xlsform={path:?}); ts.append(time.perf_counter() - t)\n\
         print(statistics.median(ts))\n"
    );
    let out = Command::new("python3").arg("-c").arg(script).output().expect("running python3");
    assert!(out.status.success(), "pyxform failed: {}", String::from_utf8_lossy(&out.stderr));
    let theirs: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("pyxform timing");

    println!("XLSForm {path}: {items} items, median of {rounds} rounds");
    println!(
        "  Casebook read + import + type-check: {:8.1} ms  (reading the workbook alone: {:.1} ms)",
        ours * 1e3,
        ours_read * 1e3
    );
    println!("  pyxform 4.5 convert (no ODK Validate): {:8.1} ms", theirs * 1e3);
    println!("  ratio: Casebook is {:.1}x pyxform's speed", theirs / ours);
}
