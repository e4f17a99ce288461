#!/usr/bin/env bash
# Proves that the control plane of scripts/kube-testenv.sh does what the operator tests rely on, with
# the kubectl v1.35 from the cache against the 1.20.2 API server. Rerun it after changing either script:
#
#   scripts/kube-testenv.sh up && scripts/kube-smoke.sh
#
# Every step is also a recipe for the tests (there is no scheduler and no kubelet: the test plays both):
#   1. kubectl talks to the server                     kubectl version / get ns; helm list
#   2. a namespace gets its `default` ServiceAccount   (Pods are refused until it exists)
#   3. a Node object                                   created with status.nodeInfo (kept on create)
#   4. Deployment -> ReplicaSet -> Pods                 the controller-manager does it
#   5. play the scheduler: bind a Pod                   POST pods/NAME/binding (`kubectl create --raw`)
#   6. play the kubelet: set the Pod's status          PATCH pods/NAME/status (kubectl --subresource=status,
#                                                      and the same with curl and the token)
#   7. a CRD and a custom resource                     Established; create; server-side apply; status
#   8. garbage collection                              delete the Deployment: ReplicaSet, Pods and a custom
#                                                      resource owned by the Deployment go; a bound Pod
#                                                      needs --grace-period=0 --force
#   9. helm v4 installs and uninstalls a chart         (`helm create`'s sample; helm 4 uses server-side apply)
# Everything it makes lives in a namespace of its own (and one Node and one CRD), removed at the end.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ENV_FILE="$("$SCRIPT_DIR/kube-testenv.sh" env)" || {
  echo "kube-smoke: no control plane: run scripts/kube-testenv.sh up first" >&2
  exit 1
}
# shellcheck disable=SC1090
. "$ENV_FILE"

K="$IMAGEBLOAT_TEST_KUBECTL"
NS="imagebloat-smoke-$$"
NODE="imagebloat-smoke-node-$$"
CRD_GROUP=smoke.imagebloat.dev
CRD="widgets.$CRD_GROUP"
STEP_START=$SECONDS
ALL_START=$SECONDS
STEPS=0

# shellcheck source=scripts/lib/common.sh
source "$SCRIPT_DIR/lib/common.sh"
fail() {
  log "FAILED: $*"
  log "controller-manager log tail:"
  tail -n 15 "$IMAGEBLOAT_TEST_KUBE_LOG_DIR/kube-controller-manager.log" >&2 || true
  exit 1
}
step() {
  STEPS=$((STEPS + 1))
  STEP_START=$SECONDS
  log "step $STEPS: $*"
}
ok() { log "  ok (${1:-}$((SECONDS - STEP_START)) s)"; }
k() { "$K" "$@"; }
# curl against the API server as the admin user.
api() { curl -sS --fail-with-body --cacert "$IMAGEBLOAT_TEST_KUBE_CA" -H "Authorization: Bearer $IMAGEBLOAT_TEST_KUBE_TOKEN" "$@"; }

# wait_until TIMEOUT DESCRIPTION COMMAND...: polls COMMAND (every 0.5 s) until it succeeds.
wait_until() {
  local timeout="$1" what="$2" deadline
  shift 2
  deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || fail "$what: not within ${timeout}s"
    sleep 0.5
  done
}
count_is() { # count_is N COMMAND...: COMMAND prints N non-empty lines
  local want="$1"
  shift
  [ "$("$@" 2>/dev/null | grep -c .)" -eq "$want" ]
}

cleanup() {
  log "cleaning up"
  k delete pods --all -n "$NS" --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
  k delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  k delete node "$NODE" --wait=false >/dev/null 2>&1 || true
  k delete crd "$CRD" --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

# 1 ---------------------------------------------------------------------------------------------------
step "kubectl $($K version --client -o json | sed -n 's/.*"gitVersion": "\([^"]*\)".*/\1/p' | head -n1) against $IMAGEBLOAT_TEST_KUBE_SERVER"
server_version="$(api "$IMAGEBLOAT_TEST_KUBE_SERVER/version" | sed -n 's/.*"gitVersion": "\([^"]*\)".*/\1/p')"
[ "$server_version" = "$IMAGEBLOAT_TEST_KUBE_VERSION" ] || fail "server says $server_version, expected $IMAGEBLOAT_TEST_KUBE_VERSION"
k get ns >&2
k get ns default -o name >/dev/null || fail "no default namespace"
"$IMAGEBLOAT_TEST_HELM" list -A >/dev/null || fail "helm cannot list releases"
ok

# 2 ---------------------------------------------------------------------------------------------------
step "namespace $NS and its default ServiceAccount"
k create namespace "$NS" >/dev/null
wait_until 60 "ServiceAccount $NS/default" k get serviceaccount default -n "$NS"
# Its token Secret comes from the token controller (1.20: Pods mount it, admission wants it).
wait_until 60 "token of $NS/default" sh -c "'$K' get serviceaccount default -n '$NS' -o jsonpath='{.secrets[0].name}' | grep -q ."
ok

# 3 ---------------------------------------------------------------------------------------------------
step "Node $NODE"
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $NODE
  labels:
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: $NODE
status:
  nodeInfo:
    operatingSystem: linux
    architecture: amd64
    osImage: "Debian GNU/Linux 12 (bookworm)"
    kernelVersion: "6.1.0"
    containerRuntimeVersion: "containerd://1.7.0"
    kubeletVersion: "v1.20.2"
    kubeProxyVersion: "v1.20.2"
    machineID: ""
    systemUUID: ""
    bootID: ""
EOF
arch="$(k get node "$NODE" -o jsonpath='{.status.nodeInfo.architecture}')"
[ "$arch" = amd64 ] || fail "Node status.nodeInfo.architecture is '$arch' after create"
ok

# 4 ---------------------------------------------------------------------------------------------------
step "Deployment -> ReplicaSet -> Pods"
k create deployment smoke -n "$NS" --image=127.0.0.1:5000/x:1 --replicas=2 >/dev/null
wait_until 60 "a ReplicaSet of Deployment smoke" count_is 1 k get replicasets -n "$NS" -l app=smoke -o name
wait_until 60 "2 Pods of Deployment smoke" count_is 2 k get pods -n "$NS" -l app=smoke -o name
rs="$(k get replicasets -n "$NS" -l app=smoke -o jsonpath='{.items[0].metadata.name}')"
pod="$(k get pods -n "$NS" -l app=smoke -o jsonpath='{.items[0].metadata.name}')"
owner="$(k get pod "$pod" -n "$NS" -o jsonpath='{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}')"
[ "$owner" = "ReplicaSet/$rs" ] || fail "Pod $pod is owned by '$owner', expected ReplicaSet/$rs"
ok "rs $rs, pod $pod; "

# 5 ---------------------------------------------------------------------------------------------------
step "bind Pod $pod to Node $NODE (POST pods/$pod/binding)"
k create --raw "/api/v1/namespaces/$NS/pods/$pod/binding" -f - >/dev/null <<EOF
{"apiVersion":"v1","kind":"Binding","metadata":{"name":"$pod"},"target":{"apiVersion":"v1","kind":"Node","name":"$NODE"}}
EOF
node_name="$(k get pod "$pod" -n "$NS" -o jsonpath='{.spec.nodeName}')"
[ "$node_name" = "$NODE" ] || fail "spec.nodeName is '$node_name' after the binding"
ok

# 6 ---------------------------------------------------------------------------------------------------
step "Pod status with kubectl patch --subresource=status"
digest="sha256:$(printf 'imagebloat smoke' | sha256sum | cut -d' ' -f1)"
now="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
status_patch="$(
  cat <<EOF
{"status":{"phase":"Running","hostIP":"127.0.0.1","podIP":"10.244.0.10","startTime":"$now",
 "conditions":[{"type":"Ready","status":"True","lastTransitionTime":"$now"},
               {"type":"PodScheduled","status":"True","lastTransitionTime":"$now"}],
 "containerStatuses":[{"name":"x","image":"127.0.0.1:5000/x:1","imageID":"127.0.0.1:5000/x@$digest",
   "containerID":"containerd://0123","ready":true,"restartCount":0,"started":true,
   "state":{"running":{"startedAt":"$now"}}}]}}
EOF
)"
k patch pod "$pod" -n "$NS" --subresource=status --type=merge -p "$status_patch" >/dev/null
got="$(k get pod "$pod" -n "$NS" -o jsonpath='{.status.containerStatuses[0].imageID} {.status.phase}')"
[ "$got" = "127.0.0.1:5000/x@$digest Running" ] || fail "status after kubectl patch: '$got'"
# The same through the REST API, as a Rust test would do it (merge patch on pods/NAME/status).
api -X PATCH -H 'Content-Type: application/merge-patch+json' \
  --data '{"status":{"containerStatuses":[{"name":"x","image":"127.0.0.1:5000/x:1","imageID":"127.0.0.1:5000/x@'"$digest"'","ready":true,"restartCount":1,"state":{"running":{"startedAt":"'"$now"'"}}}]}}' \
  "$IMAGEBLOAT_TEST_KUBE_SERVER/api/v1/namespaces/$NS/pods/$pod/status" >/dev/null
got="$(k get pod "$pod" -n "$NS" -o jsonpath='{.status.containerStatuses[0].restartCount}')"
[ "$got" = 1 ] || fail "restartCount after the curl patch: '$got'"
ok

# 7 ---------------------------------------------------------------------------------------------------
step "CRD $CRD and custom resources (create, server-side apply, status, ownerReference)"
k apply -f - >/dev/null <<EOF
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: $CRD
spec:
  group: $CRD_GROUP
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wg]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 0}
          status:
            type: object
            properties:
              observed: {type: integer}
EOF
k wait --for=condition=Established "crd/$CRD" --timeout=60s >/dev/null
wait_until 30 "widgets served" k get widgets -n "$NS"
deploy_uid="$(k get deployment smoke -n "$NS" -o jsonpath='{.metadata.uid}')"
k create -n "$NS" -f - >/dev/null <<EOF
apiVersion: $CRD_GROUP/v1
kind: Widget
metadata:
  name: w1
  ownerReferences:
  - {apiVersion: apps/v1, kind: Deployment, name: smoke, uid: $deploy_uid, blockOwnerDeletion: false}
spec: {size: 1}
EOF
# Server-side validation: a negative size must be refused.
if k create -n "$NS" -f - >/dev/null 2>&1 <<EOF; then
apiVersion: $CRD_GROUP/v1
kind: Widget
metadata: {name: bad}
spec: {size: -1}
EOF
  fail "the server accepted a Widget that violates the schema"
fi
k apply --server-side --field-manager=imagebloat-smoke -n "$NS" -f - >/dev/null <<EOF
apiVersion: $CRD_GROUP/v1
kind: Widget
metadata: {name: w2}
spec: {size: 2}
EOF
k patch widget w1 -n "$NS" --subresource=status --type=merge -p '{"status":{"observed":1}}' >/dev/null
got="$(k get widget w1 -n "$NS" -o jsonpath='{.spec.size}/{.status.observed}')"
[ "$got" = 1/1 ] || fail "Widget w1 reads '$got'"
count_is 2 k get widgets -n "$NS" -o name || fail "expected 2 Widgets"
ok

# 8 ---------------------------------------------------------------------------------------------------
step "garbage collection: delete Deployment smoke"
k delete deployment smoke -n "$NS" --wait=false >/dev/null
wait_until 60 "ReplicaSet $rs collected" sh -c "! '$K' get replicaset '$rs' -n '$NS' -o name"
# The unbound Pod goes at once; the bound one only gets a deletionTimestamp (no kubelet to confirm).
wait_until 60 "Pod $pod marked for deletion" sh -c \
  "'$K' get pod '$pod' -n '$NS' -o jsonpath='{.metadata.deletionTimestamp}' | grep -q ."
wait_until 60 "the unbound Pod collected" count_is 1 k get pods -n "$NS" -o name
k delete pod "$pod" -n "$NS" --grace-period=0 --force >/dev/null 2>&1
wait_until 30 "all Pods gone" count_is 0 k get pods -n "$NS" -o name
t_pods=$((SECONDS - STEP_START))
# A custom resource owned by the Deployment: up to ~30 s late when its CRD is newer than the
# controller-manager's last discovery.
wait_until 90 "Widget w1 (owned by the Deployment) collected" sh -c "! '$K' get widget w1 -n '$NS' -o name"
k get widget w2 -n "$NS" -o name >/dev/null || fail "Widget w2 (no owner) was deleted"
ok "ReplicaSet and Pods after ${t_pods} s, owned Widget after "

# 9 ---------------------------------------------------------------------------------------------------
step "helm install / uninstall (helm create's sample chart)"
chart_dir="$(mktemp -d)"
(cd "$chart_dir" && "$IMAGEBLOAT_TEST_HELM" create smokechart >/dev/null)
"$IMAGEBLOAT_TEST_HELM" install smokechart "$chart_dir/smokechart" -n "$NS" \
  --set image.repository=127.0.0.1:5000/x --set image.tag=1 >/dev/null || fail "helm install"
k get deployment smokechart -n "$NS" -o name >/dev/null || fail "helm installed no Deployment"
wait_until 60 "a ReplicaSet of the chart's Deployment" count_is 1 \
  k get replicasets -n "$NS" -l app.kubernetes.io/instance=smokechart -o name
"$IMAGEBLOAT_TEST_HELM" uninstall smokechart -n "$NS" >/dev/null || fail "helm uninstall"
rm -rf "$chart_dir"
ok

trap - EXIT
cleanup
wait_until 90 "namespace $NS deleted" sh -c "! '$K' get namespace '$NS' -o name"
log "all $STEPS steps passed in $((SECONDS - ALL_START)) s"
