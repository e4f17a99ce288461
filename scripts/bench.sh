#!/usr/bin/env bash
# Runs the scan benchmark (benches/scan.rs) end to end:
#   1. uses the test environment when it is already up, else starts it (scripts/testenv.sh up)
#      and stops it again at the end;
#   2. makes sure the realistic Debian image exists and is pushed (scripts/realistic-image.sh), and
#      its eStargz / zstd:chunked conversions exist (scripts/lazy-images.sh, cached);
#   3. builds the release binary (cargo build --release);
#   4. runs `cargo bench --bench scan` with the environment sourced, so registry scans are included.
#
#   scripts/bench.sh              every image
#   scripts/bench.sh big          only the generated image (arguments go to the bench as filters)
#   scripts/bench.sh lazy         only the table-of-contents path against the full read
#
# Every layout scan is also run pinned to one core (taskset -c 0, from util-linux) for the
# one-core ratio next to the two-core one.
#
# Knobs (see benches/scan.rs): IMAGEBLOAT_BENCH_REPEATS (3), IMAGEBLOAT_BENCH_BIG_MIB (1024).
# IMAGEBLOAT_BENCH_NO_ENV=1 skips the test environment (layout scans only).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$SCRIPT_DIR/.."
# shellcheck source=scripts/lib/common.sh
source "$SCRIPT_DIR/lib/common.sh"

trap down_started EXIT
trap 'exit 130' INT TERM

if [ "${IMAGEBLOAT_BENCH_NO_ENV:-}" != 1 ]; then
  reuse_or_up testenv.sh "test environment"
  env_file="$(scripts/testenv.sh env)"
  # shellcheck disable=SC1090
  source "$env_file"
  if [ -z "${IMAGEBLOAT_TEST_DEBIAN_LAYOUT:-}" ]; then
    log "building/pushing the realistic image"
    scripts/realistic-image.sh
    # shellcheck disable=SC1090
    source "$env_file"
  fi
  if [ -z "${IMAGEBLOAT_TEST_LAZY_LAYOUT:-}" ]; then
    log "building the lazy-format images (cached)"
    scripts/lazy-images.sh >/dev/null
    # shellcheck disable=SC1090
    source "$env_file"
  fi
fi

log "cargo build --release"
cargo build --release --bin imagebloat

log "cargo bench --bench scan $*"
cargo bench --bench scan -- "$@"
