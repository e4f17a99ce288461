#!/usr/bin/env bash
# The demo: imagebloat on real images in a real registry, with no cluster and no internet (once
# the Debian packages and crates are installed).
#
#   scripts/demo.sh
#
# Builds the release binary, starts a local registry (scripts/testenv.sh up), pushes the demo images
# (examples/samples.rs) and the realistic Debian image (scripts/realistic-image.sh), and runs
# `imagebloat scan` on each so you see its report. The registry keeps running afterwards so
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
cargo build --release --bins --example samples
BIN=target/release/imagebloat

phase "local registry: scripts/testenv.sh up"
scripts/testenv.sh up
# shellcheck disable=SC1090
source "$(scripts/testenv.sh env)"
REGISTRY="$IMAGEBLOAT_TEST_REGISTRY"

phase "demo images: examples/samples.rs"
pushed="$(target/release/examples/samples --push "$REGISTRY/sample")"
mapfile -t REFS <<<"$pushed"
printf 'pushed %s\n' "${REFS[@]}"

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

# ---- Kubernetes ----------------------------------------------------------------------------------
# A local API server (etcd + kube-apiserver + kube-controller-manager, built once from Debian's
# source package and cached), the operator watching a demo namespace, and one Deployment per
# image. There is no scheduler and no kubelet here, so the demo plays both: it binds each Pod to
# a Node and reports the image digest the Pod "runs", exactly what a kubelet would report.
phase "Kubernetes API server: scripts/kube-testenv.sh up"
scripts/kube-testenv.sh up
# shellcheck disable=SC1090
source "$(scripts/kube-testenv.sh env)"
K="$IMAGEBLOAT_TEST_KUBECTL"
NS=imagebloat-demo

phase "operator: imagebloat run"
"$BIN" crd | "$K" apply -f - >/dev/null
"$K" wait --for=condition=Established crd/imagereports.imagebloat.dev \
  crd/clusterimagereports.imagebloat.dev --timeout=60s >/dev/null
"$K" delete namespace "$NS" --wait=true --ignore-not-found >/dev/null 2>&1 || true
"$K" create namespace "$NS" >/dev/null
"$K" apply -f - >/dev/null <<NODE
apiVersion: v1
kind: Node
metadata: {name: demo-node, labels: {kubernetes.io/os: linux, kubernetes.io/arch: amd64}}
status: {nodeInfo: {architecture: amd64, operatingSystem: linux, bootID: "", containerRuntimeVersion: "", kernelVersion: "", kubeProxyVersion: "", kubeletVersion: "", machineID: "", osImage: "", systemUUID: ""}}
NODE
METRICS_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
OPERATOR_LOG="$IMAGEBLOAT_TESTENV_DIR/operator-demo.log"
IMAGEBLOAT_LOG=info "$BIN" run --namespaces "$NS" --insecure-registry "$REGISTRY" \
  --metrics-addr "127.0.0.1:$METRICS_PORT" --fleet-interval-seconds 1 >"$OPERATOR_LOG" 2>&1 &
OPERATOR_PID=$!
trap 'kill "$OPERATOR_PID" 2>/dev/null || true' EXIT

for ref in "${REFS[@]}"; do
  repo_name="$(basename "${ref%:*}")"
  tag="${ref##*:}"
  name="$(printf '%s-%s' "$repo_name" "$tag" | tr -c 'a-z0-9\n' '-' | cut -c1-50 | sed 's/-*$//')"
  digest="$(skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$ref")"
  "$K" create deployment "$name" -n "$NS" --image="$ref" >/dev/null
  pod=""
  for _ in $(seq 1 120); do
    pod="$("$K" get pods -n "$NS" -l "app=$name" -o jsonpath='{.items[0].metadata.name}' 2>/dev/null || true)"
    [ -n "$pod" ] && break
    sleep 0.5
  done
  [ -n "$pod" ] || { echo "no Pod appeared for deployment $name" >&2; exit 1; }
  printf '{"apiVersion":"v1","kind":"Binding","metadata":{"name":"%s"},"target":{"apiVersion":"v1","kind":"Node","name":"demo-node"}}' "$pod" |
    "$K" create --raw "/api/v1/namespaces/$NS/pods/$pod/binding" -f - >/dev/null
  container="$("$K" get pod "$pod" -n "$NS" -o jsonpath='{.spec.containers[0].name}')"
  status="$(printf '{"status":{"phase":"Running","containerStatuses":[{"name":"%s","image":"%s","imageID":"%s@%s","ready":true,"restartCount":0,"state":{"running":{}}}]}}' \
    "$container" "$ref" "${ref%:*}" "$digest")"
  "$K" patch pod "$pod" -n "$NS" --subresource=status --type=merge -p "$status" >/dev/null
  echo "deployment $name runs $ref"
done

echo "waiting for the reports ..."
for _ in $(seq 1 240); do
  ready="$("$K" get imagereports -n "$NS" -o jsonpath='{range .items[*]}{.status.conditions[0].status}{"\n"}{end}' 2>/dev/null | grep -c True || true)"
  [ "$ready" -ge "${#REFS[@]}" ] && break
  sleep 0.5
done
show "$K" get imagereports -n "$NS"
show "$K" get imagereports -n "$NS" -o wide
# The fleet view: one cluster report per distinct image, computed once the workloads are quiet.
for _ in $(seq 1 60); do
  cirs="$("$K" get clusterimagereports -o name 2>/dev/null | wc -l)"
  [ "$cirs" -ge "${#REFS[@]}" ] && break
  sleep 0.5
done
show "$K" get clusterimagereports --sort-by=.status.fleet.reclaimablePullBytes
show "$BIN" top
printf '\n$ curl -s http://127.0.0.1:%s/metrics | grep ^imagebloat_image_reclaimable_bytes\n' "$METRICS_PORT"
curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | grep '^imagebloat_image_reclaimable_bytes' || true

phase "done"
cat <<EOF
The registry ($REGISTRY) and the API server (KUBECONFIG=$KUBECONFIG) are still running;
the operator stopped with this script (its log: $OPERATOR_LOG). Try:
  $BIN scan --insecure-registry $REGISTRY --output json $REGISTRY/sample/webapp:bloated
  KUBECONFIG=$KUBECONFIG $K get imagereports -n $NS -o yaml
Stop everything with:
  scripts/kube-testenv.sh down; scripts/testenv.sh down
EOF
exit "$scan_failed"
