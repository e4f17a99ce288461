#!/usr/bin/env bash
# Scale benchmark of the operator (issue #3 item 5), one command:
#   5,000 Pods in 500 Deployments over 50 images, on the real kube-apiserver and controller-manager
#   of scripts/kube-testenv.sh and the real registry of scripts/testenv.sh.
#
#   scripts/scale-bench.sh                       the full benchmark
#   scripts/scale-bench.sh --workloads 50        a smaller one (any flag of scripts/scale_bench.py)
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

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '%s scale-bench: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

started_registry=0
started_kube=0
private_dir=""
bench_pid=""
WORKDIR="$(mktemp -d "${TMPDIR:-/tmp}/imagebloat-scale-bench.XXXXXX")"
args=()
for a in "$@"; do
  if [ "$a" = --private-env ]; then
    private_dir="$WORKDIR/env"
    mkdir -p "$private_dir"
    export IMAGEBLOAT_TESTENV_DIR="$private_dir"
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
  if [ "$started_kube" = 1 ]; then
    log "stopping the control plane this script started"
    scripts/kube-testenv.sh down || true
  fi
  if [ "$started_registry" = 1 ]; then
    log "stopping the registries this script started"
    scripts/testenv.sh down || true
  fi
  rm -f "$WORKDIR/imagebloat"
  # The private registries' storage is large and of no use afterwards.
  [ -z "$private_dir" ] || rm -rf "${private_dir:?}"/{a,b,c} "${private_dir:?}/kube/etcd"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "$private_dir" ] && scripts/testenv.sh status; then
  log "reusing the running registries"
else
  log "starting the registries (scripts/testenv.sh up)"
  started_registry=1
  scripts/testenv.sh up
fi
if [ -z "$private_dir" ] && scripts/kube-testenv.sh status; then
  log "reusing the running control plane"
else
  log "starting the control plane (scripts/kube-testenv.sh up)"
  started_kube=1
  scripts/kube-testenv.sh up
fi
# shellcheck disable=SC1090
source "$(scripts/testenv.sh env)"
# shellcheck disable=SC1090
source "$(scripts/kube-testenv.sh env)"

BIN="${IMAGEBLOAT_SCALE_BENCH_BIN:-$ROOT/target/release/imagebloat}"
if [ ! -x "$BIN" ]; then
  log "building the release binary (cargo build --release)"
  cargo build --release
fi
cp "$BIN" "$WORKDIR/imagebloat"
log "operator binary: $BIN (built $(date -u -r "$BIN" '+%Y-%m-%d %H:%M:%S UTC'), sha256 $(sha256sum "$BIN" | cut -c1-12)), copied to $WORKDIR"

# In the background and waited for, so that a signal reaches the benchmark (which then stops the
# operator and deletes what it made) instead of waiting for it to finish.
status=0
SCALE_BENCH_WORKDIR="$WORKDIR" python3 "$ROOT/scripts/scale_bench.py" --operator "$WORKDIR/imagebloat" \
  ${args[@]+"${args[@]}"} &
bench_pid=$!
wait "$bench_pid" || status=$?
bench_pid=""
log "operator log and results kept in $WORKDIR"
exit "$status"
