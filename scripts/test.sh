#!/usr/bin/env bash
# The project's test command (CI runs it through .ci/run):
#
#   scripts/test.sh [ARGS...]     ARGS go to the test runner (cargo nextest run, else cargo test)
#   IMAGEBLOAT_TEST_KUBECONFIG=FILE scripts/test.sh
#                                 the same, against an existing cluster instead of a local control
#                                 plane (see scripts/kube-testenv.sh)
#
# Phases: install missing Debian packages; start the test servers (scripts/testenv.sh up: the
# registries; scripts/kube-testenv.sh up: etcd, kube-apiserver, kube-controller-manager, built once
# from Debian's source package and cached; all stopped again on exit whatever happens); build or
# reuse the realistic Debian image and push it
# (scripts/realistic-image.sh), and the same images converted to eStargz and zstd:chunked by the
# real tools (scripts/lazy-images.sh), and the mistake/fix pairs built with buildah
# (scripts/buildah-images.sh); then cargo fmt --check, cargo clippy -D warnings, the chart checks
# (scripts/chart-check.sh --cluster), the tests, and imagebloat's own image through its own CI gate,
# with the test environment's variables exported. Every step runs even when an earlier check
# fails, so one run shows everything; the exit status is the tests' status, or 1 when only a check
# failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

phase() { printf '\n==> %s  %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }

phase "packages"
scripts/testenv.sh packages

phase "test environment: scripts/testenv.sh up"
trap 'phase "test environment: down"; scripts/kube-testenv.sh down || true; scripts/testenv.sh down || true' EXIT
scripts/testenv.sh up

phase "Kubernetes API server: scripts/kube-testenv.sh up (builds it once, then cached)"
scripts/kube-testenv.sh up

phase "realistic Debian image: scripts/realistic-image.sh"
scripts/realistic-image.sh

phase "lazy-pull images written by skopeo and ctr-remote: scripts/lazy-images.sh (built once, then cached)"
scripts/lazy-images.sh >/dev/null

phase "one image as every real producer writes it (buildah, podman, skopeo): scripts/producer-images.sh (built once, then cached)"
scripts/producer-images.sh >/dev/null

phase "mistake/fix image pairs built with buildah: scripts/buildah-images.sh (built once, then cached)"
scripts/buildah-images.sh

# shellcheck disable=SC1090
source "$(scripts/testenv.sh env)"
# shellcheck disable=SC1090
source "$(scripts/kube-testenv.sh env)"
env | grep '^IMAGEBLOAT_' | grep -v -e PASSWORD -e TOKEN | sort

failed_checks=()

phase "cargo fmt --all -- --check"
cargo fmt --all -- --check || failed_checks+=("cargo fmt")

phase "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings || failed_checks+=("cargo clippy")

phase "chart, rules and dashboard: scripts/chart-check.sh --cluster"
scripts/chart-check.sh --cluster || failed_checks+=("scripts/chart-check.sh")

test_status=0
if cargo nextest --version >/dev/null 2>&1; then
  phase "cargo nextest run --no-fail-fast $*"
  cargo nextest run --no-fail-fast "$@" || test_status=$?
else
  phase "cargo test --no-fail-fast $* (cargo-nextest is not installed)"
  cargo test --no-fail-fast "$@" || test_status=$?
fi

# The operator practises what it preaches: its own image (built as scripts/build-image.sh builds
# it, here around the test build of the binary) passes its own CI gate.
phase "own image: scripts/build-image.sh, then imagebloat scan --min-efficiency 99% --max-reclaimable-bytes 0"
bin="${CARGO_TARGET_DIR:-target}/debug/imagebloat"
self_ref="$IMAGEBLOAT_TEST_REGISTRY/imagebloat/self:test"
if scripts/build-image.sh --insecure --binary "$bin" "$self_ref" >/dev/null; then
  "$bin" scan --insecure-registry "$IMAGEBLOAT_TEST_REGISTRY" --min-efficiency 99% \
    --max-reclaimable-bytes 0 "$self_ref" || failed_checks+=("own image: imagebloat scan gate")
else
  failed_checks+=("own image: scripts/build-image.sh")
fi

phase "done"
if [ ${#failed_checks[@]} -gt 0 ]; then
  echo "failed checks: ${failed_checks[*]}"
fi
echo "test runner exit status: $test_status"
if [ "$test_status" -ne 0 ]; then
  exit "$test_status"
fi
if [ ${#failed_checks[@]} -gt 0 ]; then
  exit 1
fi
