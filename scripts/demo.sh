#!/usr/bin/env bash
# The demo: imagebloat on real images in a real registry, with no cluster and no internet (once
# the Debian packages and crates are installed).
#
#   scripts/demo.sh
#
# Builds the release binary, starts a local registry (scripts/testenv.sh up), writes the demo images
# (scripts/sample-images.py) and the realistic Debian image (scripts/realistic-image.sh), pushes them,
# and runs `imagebloat scan` on each so you see its report. The registry keeps running afterwards so
# you can try more commands; scripts/testenv.sh down stops it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

phase() { printf '\n==> %s  %s\n' "$(date -u +%H:%M:%S)" "$*"; }
show() {
  printf '\n$ %s\n' "$*"
  "$@"
}

phase "packages"
scripts/testenv.sh packages

phase "cargo build --release"
cargo build --release
BIN=target/release/imagebloat

phase "local registry: scripts/testenv.sh up"
scripts/testenv.sh up
# shellcheck disable=SC1090
source "$(scripts/testenv.sh env)"
REGISTRY="$IMAGEBLOAT_TEST_REGISTRY"

phase "demo images: scripts/sample-images.py"
SAMPLES="$IMAGEBLOAT_TESTENV_DIR/samples"
tags_written="$(python3 scripts/sample-images.py "$SAMPLES")"
mapfile -t TAGS <<<"$tags_written"
REFS=()
for tag in "${TAGS[@]}"; do
  ref="$REGISTRY/sample/$tag"
  skopeo copy --quiet --insecure-policy --dest-tls-verify=false "oci:$SAMPLES:$tag" "docker://$ref"
  echo "pushed $ref"
  REFS+=("$ref")
done

phase "realistic Debian image: scripts/realistic-image.sh"
# Built once with debootstrap (needs a Debian mirror the first time), then cached.
if scripts/realistic-image.sh; then
  # shellcheck disable=SC1090
  source "$(scripts/testenv.sh env)"
  REFS+=("$IMAGEBLOAT_TEST_DEBIAN_IMAGE")
else
  echo "the realistic Debian image could not be built here (no Debian mirror?); scanning the samples only"
fi

phase "imagebloat scan"
scan_failed=0
for ref in "${REFS[@]}"; do
  show "$BIN" scan --insecure-registry "$REGISTRY" "$ref" || scan_failed=1
done

# ---- Kubernetes --------------------------------------------------------------------------------
# The operator part of the demo goes here: start a local API server, run `imagebloat run` against
# it with Pods that use the images pushed above, then show `kubectl get imagereports`.

phase "done"
cat <<EOF
The registry is still running at $REGISTRY (images under sample/ and realistic/). Try:
  $BIN scan --insecure-registry $REGISTRY --output json $REGISTRY/sample/webapp:bloated
Stop it with:
  scripts/testenv.sh down
EOF
exit "$scan_failed"
