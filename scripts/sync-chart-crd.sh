#!/usr/bin/env bash
# Copies the ImageReport CRD into the Helm chart: crds/imagereports.imagebloat.dev.yaml (generated
# by `imagebloat crd`, checked against the Rust types by tests/crd.rs) ->
# charts/imagebloat/crds/imagereports.imagebloat.dev.yaml. The two files must stay byte-identical:
# scripts/chart-check.sh (and a test) fail when they differ.
#
#   scripts/sync-chart-crd.sh           copy
#   scripts/sync-chart-crd.sh --check   exit 1 when the copies differ; copies nothing
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SRC=crds/imagereports.imagebloat.dev.yaml
DST=charts/imagebloat/crds/imagereports.imagebloat.dev.yaml
case "${1:-}" in
  "")
    mkdir -p "$(dirname "$DST")"
    if cmp -s "$SRC" "$DST"; then
      echo "sync-chart-crd: $DST is up to date"
    else
      cp "$SRC" "$DST"
      echo "sync-chart-crd: copied $SRC to $DST"
    fi
    ;;
  --check)
    if ! cmp -s "$SRC" "$DST"; then
      diff -u "$DST" "$SRC" || true
      echo "sync-chart-crd: $DST differs from $SRC: run scripts/sync-chart-crd.sh" >&2
      exit 1
    fi
    echo "sync-chart-crd: $DST is identical to $SRC"
    ;;
  *)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac
