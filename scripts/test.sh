#!/usr/bin/env bash
# The test command: installs the independent checkers the tests use when they are missing
# (xmllint from Debian's libxml2-utils; odmlib, pyreadstat, check-jsonschema, openpyxl and pyarrow from
# PyPI), finds the shared fixtures, then runs
# the whole suite on SQLite and on PostgreSQL (127.0.0.1:5432, user postgres; set
# CASEBOOK_TEST_POSTGRES to another URL, or to "off" to skip that half loudly).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v xmllint >/dev/null 2>&1; then
  echo "installing xmllint (libxml2-utils) for the ODM schema checks"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq libxml2-utils
  else sudo apt-get update -qq && sudo apt-get install -y -qq libxml2-utils; fi
fi
python3 -c "import odmlib" 2>/dev/null || pip install -q --disable-pip-version-check odmlib==0.2.1
python3 -c "import pyreadstat" 2>/dev/null || pip install -q --disable-pip-version-check pyreadstat
command -v check-jsonschema >/dev/null 2>&1 || pip install -q --disable-pip-version-check check-jsonschema
python3 -c "import openpyxl" 2>/dev/null || pip install -q --disable-pip-version-check openpyxl
python3 -c "import pyarrow" 2>/dev/null || pip install -q --disable-pip-version-check pyarrow

# Third-party fixtures (ODM schemas, XLSForm corpus) live beside the repository, in ../shared.
if [ -z "${CASEBOOK_FIXTURES:-}" ]; then
  for d in ../shared/fixtures /work/shared/fixtures; do
    if [ -d "$d" ]; then export CASEBOOK_FIXTURES="$(cd "$d" && pwd)"; break; fi
  done
fi
export CASEBOOK_TEST_POSTGRES="${CASEBOOK_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}"

cargo test --workspace "$@"
