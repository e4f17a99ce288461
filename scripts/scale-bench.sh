#!/usr/bin/env bash
# Scale benchmark of the operator (issue #3 item 5, benches/scale.rs), one command:
#   5,000 Pods in 500 Deployments over 50 images, on the real kube-apiserver and controller-manager
#   of scripts/kube-testenv.sh and the real registry of scripts/testenv.sh.
#
#   scripts/scale-bench.sh                       the full benchmark
#   scripts/scale-bench.sh --workloads 50        a smaller one (any flag of the bench: --help)
#   scripts/scale-bench.sh --private-env         registries and control plane of its own (a state
#                                                directory under /tmp), started and stopped here: the
#                                                shared ones are neither loaded nor can they be
#                                                restarted under the run by someone else's `up`
#
# It prints the time until every ImageReport exists and is Ready, API writes per workload, the
# operator's peak memory (target <= 200 MiB) and registry bytes served vs unique blob bytes (target
# <= 1.05x), with PASS/MISS per target. Exit status 0 when every target is met.
#
# Without --private-env, servers already up (env file present and answering) are reused as they are,
# never restarted; otherwise this starts them and stops them again at the end. The operator binary is
# target/release/imagebloat (built when missing), copied aside first so that a rebuild during the
# run does not change it. IMAGEBLOAT_SCALE_BENCH_BIN overrides the binary.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib/common.sh
source "$SCRIPT_DIR/lib/common.sh"

private_dir=""
bench_pid=""
WORKDIR="$(mktemp -d "${TMPDIR:-/tmp}/imagebloat-scale-bench.XXXXXX")"
args=()
for a in "$@"; do
  if [ "$a" = --private-env ]; then
    private_dir="$WORKDIR/env"
    mkdir -p "$private_dir"
    export IMAGEBLOAT_TESTENV_DIR="$private_dir"
    FRESH_ENV=1
  else
    args+=("$a")
  fi
done
# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
  if [ -n "$bench_pid" ] && kill -0 "$bench_pid" 2>/dev/null; then
    kill -TERM "$bench_pid" 2>/dev/null || true
    wait "$bench_pid" 2>/dev/null || true
  fi
  down_started
  rm -f "$WORKDIR/imagebloat"
  # The private registries' storage is large and of no use afterwards.
  [ -z "$private_dir" ] || rm -rf "${private_dir:?}"/{a,b,c} "${private_dir:?}/kube/etcd"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

reuse_or_up testenv.sh registries
reuse_or_up kube-testenv.sh "control plane"
# shellcheck disable=SC1090
source "$(scripts/testenv.sh env)"
# shellcheck disable=SC1090
source "$(scripts/kube-testenv.sh env)"

BIN="${IMAGEBLOAT_SCALE_BENCH_BIN:-$ROOT/target/release/imagebloat}"
if [ ! -x "$BIN" ]; then
  log "building the release binary (cargo build --release)"
  cargo build --release --bin imagebloat
fi
cp "$BIN" "$WORKDIR/imagebloat"
log "operator binary: $BIN (built $(date -u -r "$BIN" '+%Y-%m-%d %H:%M:%S UTC'), sha256 $(sha256sum "$BIN" | cut -c1-12)), copied to $WORKDIR"

log "building the benchmark (cargo bench --bench scale --no-run)"
bench="$(cargo bench --bench scale --no-run --message-format=json |
  sed -n '/"kind":\["bench"\]/s/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)"
[ -x "$bench" ] || die "cargo bench --no-run named no executable for benches/scale.rs"

# Run directly (not under cargo) in the background and waited for, so that a signal reaches the
# benchmark (which then stops the operator and deletes what it made) instead of waiting for it.
status=0
SCALE_BENCH_WORKDIR="$WORKDIR" "$bench" --operator "$WORKDIR/imagebloat" ${args[@]+"${args[@]}"} &
bench_pid=$!
wait "$bench_pid" || status=$?
bench_pid=""
log "operator log and results kept in $WORKDIR"
exit "$status"
