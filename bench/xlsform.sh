#!/usr/bin/env bash
# Benchmark: Casebook reading and checking a QUESTIONS-question XLSForm (default 2000) against
# pyxform converting the same file in-process. Needs the shared fixtures (generator script).
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-2000}"
fixtures="${CASEBOOK_FIXTURES:-../shared/fixtures}"
python3 -c "import openpyxl, pyxform" 2>/dev/null || pip install -q openpyxl "pyxform==4.5.0"
out="$(mktemp -d)/synth_${n}.xlsx"
python3 "$fixtures/xlsform/synthetic/gen_form.py" "$n" "$out"
cargo run -q --release -p casebook-formats --example xlsform_bench -- "$out" 15
