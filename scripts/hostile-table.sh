#!/usr/bin/env bash
# Prints the README's "Hostile input and faults" table (markdown) from the results the hostile
# matrix writes (tests/hostile_operator.rs: one JSON line per case run):
#
#   cargo nextest run --test hostile_operator && scripts/hostile-table.sh [RESULTS_FILE]
#
# RESULTS_FILE defaults to $IMAGEBLOAT_TESTENV_DIR/hostile-results.jsonl (the test env's state
# directory, see scripts/testenv.sh). The newest run of each case wins; a case whose last run
# failed is marked so, never shown as passing.
set -euo pipefail

STATE="${IMAGEBLOAT_TESTENV_DIR:-${XDG_RUNTIME_DIR:-/tmp}/imagebloat-testenv-$UID}"
RESULTS="${1:-$STATE/hostile-results.jsonl}"
[ -s "$RESULTS" ] || { echo "no results in $RESULTS: run the hostile matrix first" >&2; exit 1; }

python3 - "$RESULTS" "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" <<'PY'
import json, sys

rows = {}
with open(sys.argv[1], encoding="utf-8") as f:
    for line in f:
        line = line.strip()
        if line:
            row = json.loads(line)
            rows.pop(row["case"], None)  # the newest run, in the order cases last ran
            rows[row["case"]] = row

def cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")

def seconds(v):
    return "–" if v is None else "%.1f s" % v

def mib(kib):
    return "–" if kib is None else "%d MiB" % round(kib / 1024)

import pathlib, yaml
values = pathlib.Path(sys.argv[2]) / "charts" / "imagebloat" / "values.yaml"
limit = yaml.safe_load(values.read_text())["resources"]["limits"]["memory"]
print("| Input | What the user sees | Operator peak RSS (chart limit %s) | Its report after | Another workload's report after | |" % limit)
print("|---|---|---|---|---|---|")
for row in rows.values():
    print("| %s | %s | %s | %s | %s | %s |" % (
        cell("**%s**: %s" % (row["case"], row["input"])),
        cell(row["sees"] or "–"),
        mib(row["peakRssKiB"]),
        seconds(row["reportSeconds"]),
        seconds(row["othersSeconds"]),
        "✓" if row["passed"] else "✗ fails",
    ))
PY
