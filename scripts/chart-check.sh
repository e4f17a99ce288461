#!/usr/bin/env bash
# Checks the Helm chart, the alerting rules and the dashboard with the real tools.
#
#   scripts/chart-check.sh             every offline check below
#   scripts/chart-check.sh --cluster   also install the chart into the running kube test bed
#                                      (scripts/kube-testenv.sh up) and check its RBAC there
#
# Offline checks:
#   1. the chart's CRD is byte-identical to crds/ (scripts/sync-chart-crd.sh --check), and
#      deploy/prometheus/imagebloat-rules.yaml is what the chart renders (scripts/render-rules.sh --check)
#   2. helm lint --strict, for each values file in charts/imagebloat/ci/ (defaults; every optional
#      part on; no Secret access with leader election), and values the schema must refuse
#   3. helm template | kubernetes-validate --strict against Kubernetes 1.25 (the oldest schemas
#      kubernetes-validate ships; the test API server is 1.20, the chart's floor) and 1.35 (the
#      kubectl and helm in use, a current cluster). ServiceMonitor and PrometheusRule are custom
#      resources kubernetes-validate has no schema for: they are validated separately against
#      the prometheus-operator CRD schemas packaged as @kubernetes-models/prometheus-operator (npm)
#   4. scripts/chart-assertions.py on each render: restricted Pod Security, probes, flags (checked
#      against `imagebloat run --help` when a built binary is there), least-privilege RBAC, wiring
#   5. promtool check rules on the plain rules file and on the PrometheusRule's rendered groups
#      (defaults and non-default values), and promtool test rules
#   6. the dashboard: valid JSON, every panel on the ${datasource} variable, and every query
#      (scripts/dashboard-queries.py) evaluated by a real Prometheus started here on 127.0.0.1
#      (stopped by its pid at exit)
#
# Tools (installed when missing): helm from scripts/find-helm.sh (the cache of scripts/kube-build.sh,
# or $IMAGEBLOAT_TEST_HELM / the kube test bed's env file), promtool and prometheus from Debian's
# `prometheus` package, kubernetes-validate from PyPI, and @kubernetes-models/prometheus-operator
# from npm into ${XDG_CACHE_HOME:-$HOME/.cache}/imagebloat-testenv/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/imagebloat-testenv"
PO_MODELS_VERSION="${IMAGEBLOAT_PO_MODELS_VERSION:-6.0.0}"
PO_MODELS_DIR="$CACHE/npm-prometheus-operator-models-$PO_MODELS_VERSION"
K8S_VERSIONS=(1.25.0 1.35.0)
CHART=charts/imagebloat

cluster=""
case "${1:-}" in
  "") ;;
  --cluster) cluster=1 ;;
  *)
    echo "usage: $0 [--cluster]" >&2
    exit 2
    ;;
esac

phase() { printf '\n==> %s\n' "$*"; }
# shellcheck source=scripts/lib/common.sh
source scripts/lib/common.sh
failed=()
fail() {
  echo "FAIL: $*" >&2
  failed+=("$*")
}

work="$(mktemp -d)"
prom_pid=""
cleanup() {
  if [ -n "$prom_pid" ] && kill -0 "$prom_pid" 2>/dev/null; then
    kill "$prom_pid" 2>/dev/null || true
    wait "$prom_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
export HELM_CACHE_HOME="$work/helm/cache" HELM_CONFIG_HOME="$work/helm/config" HELM_DATA_HOME="$work/helm/data"

# --- tools --------------------------------------------------------------------------------------
phase "tools"
HELM="$(scripts/find-helm.sh)"
# Debian's prometheus: promtool, and the server the dashboard queries are evaluated by.
PACKAGES=(prometheus:promtool prometheus:prometheus)
install_packages
if ! command -v kubernetes-validate >/dev/null; then
  echo "installing kubernetes-validate (pip)"
  python3 -m pip install --quiet kubernetes-validate || die "pip install kubernetes-validate failed"
fi
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet pyyaml
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  die "node and npm are needed (Debian's npm; scripts/kube-build.sh installs it)"
fi
if [ ! -d "$PO_MODELS_DIR/node_modules/@kubernetes-models/prometheus-operator" ]; then
  echo "installing @kubernetes-models/prometheus-operator@$PO_MODELS_VERSION (npm) into $PO_MODELS_DIR"
  mkdir -p "$PO_MODELS_DIR"
  (cd "$PO_MODELS_DIR" && { [ -f package.json ] || echo '{"private": true}' >package.json; } &&
    npm install --silent --no-audit --no-fund "@kubernetes-models/prometheus-operator@$PO_MODELS_VERSION" >/dev/null) ||
    die "npm install @kubernetes-models/prometheus-operator failed"
fi
# The chart's flags are checked against `imagebloat run --help` of the code being checked: the
# binary IMAGEBLOAT_BIN names, else a debug build of this tree (never a leftover release build,
# which may be older than the code).
BINARY="${IMAGEBLOAT_BIN:-}"
if [ -z "$BINARY" ]; then
  cargo build --quiet --bin imagebloat || die "cargo build --bin imagebloat failed"
  BINARY=target/debug/imagebloat
fi
[ -x "$BINARY" ] || die "no imagebloat binary at $BINARY"
echo "helm:       $HELM ($("$HELM" version --short))"
echo "promtool:   $(promtool --version 2>&1 | head -n 1)"
echo "kubernetes-validate: $(kubernetes-validate --version) (schemas for ${K8S_VERSIONS[*]})"
echo "node:       $(node --version), @kubernetes-models/prometheus-operator $PO_MODELS_VERSION"
echo "imagebloat: $BINARY"

# --- 1. generated files -------------------------------------------------------------------------
phase "1. generated files are current"
scripts/sync-chart-crd.sh --check || fail "chart CRD differs from crds/"
scripts/render-rules.sh --check || fail "deploy/prometheus/imagebloat-rules.yaml is stale"

# --- 2. lint ------------------------------------------------------------------------------------
phase "2. helm lint --strict"
values_files=("$CHART"/ci/*-values.yaml)
for v in "${values_files[@]}"; do
  if "$HELM" lint --strict "$CHART" -f "$v" >"$work/lint.log" 2>&1; then
    echo "ok   lint $v"
  else
    cat "$work/lint.log"
    fail "helm lint $v"
  fi
done
# Values the schema (or the templates) must refuse.
refused=(
  "--set operator.bogus=1"
  "--set rbac.secrets=some"
  "--set rbac.secrets=namespaces"
  "--set operator.mirrors={docker.io}"
  "--set operator.platform=amd64"
  "--set operator.maxLayerBytes=lots"
  "--set image.digest=latest"
  "--set serviceMonitor.interval=1minute"
  "--set prometheusRule.alerts.oversizedImage.severity=page"
  "--set-json caCertificates=[{\"name\":\"x\",\"configMap\":\"a\",\"secret\":\"b\",\"key\":\"ca.crt\"}]"
  "--set-json caCertificates=[{\"name\":\"x\",\"key\":\"ca.crt\"}]"
  "--set replicaCount=-1"
)
for args in "${refused[@]}"; do
  # shellcheck disable=SC2086 # the entries are argument lists
  if "$HELM" template imagebloat "$CHART" $args >/dev/null 2>"$work/refused.log"; then
    fail "helm template $args was accepted"
  else
    echo "ok   refused: $args ($(grep -m1 -oE "(at '[^']*'[^\"]*|needs [a-zA-Z.]+)" "$work/refused.log" || head -c 80 "$work/refused.log"))"
  fi
done

# --- 3 + 4. render, validate, assert ------------------------------------------------------------
phase "3. kubernetes-validate --strict (${K8S_VERSIONS[*]}) and prometheus-operator schemas; 4. chart assertions"
for v in "${values_files[@]}"; do
  name="$(basename "$v" -values.yaml)"
  render="$work/render-$name.yaml"
  "$HELM" template imagebloat "$CHART" --namespace imagebloat -f "$v" --include-crds >"$render" || {
    fail "helm template $v"
    continue
  }
  for k in "${K8S_VERSIONS[@]}"; do
    out="$(kubernetes-validate --strict -k "$k" - <"$render" 2>&1)" || {
      echo "$out" | grep -v '^INFO'
      fail "kubernetes-validate $k $v"
      continue
    }
    # Only the prometheus-operator kinds may lack a schema.
    unexpected="$(echo "$out" | grep '^WARN' | grep -vE 'kind (ServiceMonitor|PrometheusRule) with api version monitoring.coreos.com/v1' || true)"
    [ -z "$unexpected" ] || {
      echo "$unexpected"
      fail "kubernetes-validate $k $v: objects without a schema"
    }
    echo "ok   kubernetes-validate --strict -k $k $v: $(echo "$out" | grep -c '^INFO') objects valid$(echo "$out" | grep -q '^WARN' && echo ' (ServiceMonitor, PrometheusRule: no schema there, validated below)')"
  done
  python3 - "$render" >"$work/monitoring-$name.jsonl" <<'PY'
import json, sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d.get("apiVersion", "").startswith("monitoring.coreos.com/"):
        print(json.dumps(d))
PY
  if [ -s "$work/monitoring-$name.jsonl" ]; then
    node scripts/validate-monitoring.mjs "$PO_MODELS_DIR" <"$work/monitoring-$name.jsonl" | sed 's/^/     /' ||
      fail "prometheus-operator schema $v"
  fi
  scripts/chart-assertions.py "$render" "$v" --namespace imagebloat ${BINARY:+--binary "$BINARY"} ||
    fail "chart assertions $v"
done

# --- 5. rules -----------------------------------------------------------------------------------
phase "5. promtool"
promtool check rules deploy/prometheus/imagebloat-rules.yaml || fail "promtool check rules (plain file)"
for v in "${values_files[@]}"; do
  name="$(basename "$v" -values.yaml)"
  "$HELM" template imagebloat "$CHART" -f "$v" --set prometheusRule.enabled=true \
    --show-only templates/prometheusrule.yaml >"$work/pr-$name.yaml" 2>/dev/null || {
    echo "     ($v disables every alert: skipped)"
    continue
  }
  python3 -c 'import sys, yaml; yaml.safe_dump(yaml.safe_load(open(sys.argv[1]))["spec"], open(sys.argv[2], "w"))' \
    "$work/pr-$name.yaml" "$work/pr-$name-groups.yaml"
  echo "PrometheusRule groups rendered with $v:"
  promtool check rules "$work/pr-$name-groups.yaml" || fail "promtool check rules (PrometheusRule, $v)"
done
promtool test rules deploy/prometheus/tests/imagebloat-rules-test.yaml || fail "promtool test rules"

# --- 6. dashboard -------------------------------------------------------------------------------
phase "6. dashboard"
python3 - "$CHART/dashboards/imagebloat.json" <<'PY' || fail "dashboard structure"
import json, sys
d = json.load(open(sys.argv[1]))
names = [v["name"] for v in d["templating"]["list"]]
problems = []
if "datasource" not in names or "namespace" not in names:
    problems.append(f"variables {names}: datasource and namespace are required")
def panels(ps):
    for p in ps:
        yield p
        yield from panels(p.get("panels", []))
ids = [p["id"] for p in panels(d["panels"])]
if len(ids) != len(set(ids)):
    problems.append("duplicate panel ids")
count = 0
for p in panels(d["panels"]):
    if p["type"] == "row":
        continue
    count += 1
    for obj in [p] + p.get("targets", []):
        if obj.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"panel {p['title']!r}: datasource is not ${{datasource}}")
    if not p.get("targets"):
        problems.append(f"panel {p['title']!r}: no query")
for m in problems:
    print("FAIL dashboard:", m)
print(f"ok   dashboard: {count} panels, variables {names}" if not problems else "", end="\n" if not problems else "")
sys.exit(1 if problems else 0)
PY
scripts/dashboard-queries.py >"$work/queries.txt" || fail "dashboard-queries.py"
echo "$(wc -l <"$work/queries.txt") queries; evaluating each with a real Prometheus"
port="$(free_ports 1)"
printf 'global:\n  scrape_interval: 1m\nscrape_configs: []\n' >"$work/prometheus.yml"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$port" --log.level=warn >"$work/prometheus.log" 2>&1 &
prom_pid=$!
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1 && break
  kill -0 "$prom_pid" 2>/dev/null || {
    cat "$work/prometheus.log"
    die "prometheus exited"
  }
  sleep 0.2
done
n=0
while IFS= read -r q; do
  n=$((n + 1))
  answer="$(curl -s "http://127.0.0.1:$port/api/v1/query" --data-urlencode "query=$q")"
  if [ "$(echo "$answer" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("status"))')" != success ]; then
    echo "FAIL query $n: $q"
    echo "     $answer"
    fail "dashboard query $n does not evaluate"
  fi
done <"$work/queries.txt"
echo "ok   $n dashboard queries evaluate (Prometheus $(prometheus --version 2>&1 | head -n 1 | awk '{print $3}'))"
kill "$prom_pid" 2>/dev/null || true
wait "$prom_pid" 2>/dev/null || true
prom_pid=""

# --- cluster ------------------------------------------------------------------------------------
if [ -n "$cluster" ]; then
  phase "cluster: helm install into the kube test bed, RBAC as the operator's ServiceAccount"
  env_file="$(scripts/kube-testenv.sh env)" || die "the kube test bed is not up: scripts/kube-testenv.sh up"
  # shellcheck disable=SC1090
  source "$env_file"
  export HELM_CACHE_HOME="$work/helm/cache" HELM_CONFIG_HOME="$work/helm/config" HELM_DATA_HOME="$work/helm/data"
  K="$IMAGEBLOAT_TEST_KUBECTL"
  ns="imagebloat-chart-check-$$"
  release="chart-check-$$"
  fullname="$release-imagebloat" # cluster-scoped names (ClusterRole) never clash with another release
  sa="system:serviceaccount:$ns:$fullname"
  "$K" create namespace "$ns" >/dev/null
  "$K" create namespace "$ns-team" >/dev/null
  cleanup_cluster() {
    "$HELM" uninstall "$release" --namespace "$ns" >/dev/null 2>&1 || true
    "$K" delete namespace "$ns" "$ns-team" --wait=false >/dev/null 2>&1 || true
  }
  trap 'cleanup_cluster; cleanup' EXIT
  "$HELM" install "$release" "$CHART" --namespace "$ns" --set replicaCount=2 \
    --set networkPolicy.enabled=true >/dev/null || fail "helm install"
  echo "ok   helm install (API server $IMAGEBLOAT_TEST_KUBE_VERSION): $("$K" get -n "$ns" deploy,pdb,svc,sa,cm,netpol,role,rolebinding -o name | tr '\n' ' ')"
  can() { "$K" auth can-i --as="$sa" "$@" 2>/dev/null; }
  allowed=(
    "list pods -A" "watch pods -A" "get pods -n $ns-team"
    "list nodes" "watch nodes"
    "get serviceaccounts -n $ns-team" "get secrets -n $ns-team"
    "list replicasets.apps -A" "watch replicasets.apps -A" "get replicasets.apps -n $ns-team"
    "list jobs.batch -A" "watch jobs.batch -A" "get jobs.batch -n $ns-team"
    "get deployments.apps -n $ns-team" "get statefulsets.apps -n $ns-team"
    "get daemonsets.apps -n $ns-team" "get cronjobs.batch -n $ns-team"
    "list imagereports.imagebloat.dev -A" "create imagereports.imagebloat.dev -n $ns-team"
    "patch imagereports.imagebloat.dev -n $ns-team" "patch imagereports.imagebloat.dev -n $ns-team --subresource=status"
    "create leases.coordination.k8s.io -n $ns" "get leases.coordination.k8s.io/$fullname-leader -n $ns"
    "update leases.coordination.k8s.io/$fullname-leader -n $ns"
    "create events.events.k8s.io -n $ns-team" "patch events.events.k8s.io -n $ns-team"
  )
  denied=(
    "delete pods -n $ns-team" "create pods -n $ns-team" "list secrets -n $ns-team" "watch secrets -A"
    "get configmaps -n $ns-team" "patch deployments.apps -n $ns-team" "delete imagereports.imagebloat.dev -n $ns-team"
    "update leases.coordination.k8s.io/other -n $ns" "create leases.coordination.k8s.io -n $ns-team"
    "create events -n $ns-team" "get nodes" "escalate clusterroles.rbac.authorization.k8s.io"
  )
  for a in "${allowed[@]}"; do
    # shellcheck disable=SC2086
    [ "$(can $a)" = yes ] || fail "the operator's ServiceAccount cannot: $a"
  done
  for a in "${denied[@]}"; do
    # shellcheck disable=SC2086
    [ "$(can $a)" = no ] || fail "the operator's ServiceAccount can, but must not: $a"
  done
  echo "ok   kubectl auth can-i: ${#allowed[@]} allowed, ${#denied[@]} denied as expected"
  # What the operator does, done as its ServiceAccount: server-side apply of a new report (patch,
  # which creates it), then of its status, then a Lease created and updated.
  cat >"$work/report.yaml" <<EOF
apiVersion: imagebloat.dev/v1alpha1
kind: ImageReport
metadata:
  name: deployment-chart-check
  namespace: $ns-team
spec:
  workload: {apiVersion: apps/v1, kind: Deployment, name: chart-check, uid: 00000000-0000-0000-0000-000000000000}
EOF
  if "$K" apply --as="$sa" --server-side --field-manager=imagebloat --force-conflicts -f "$work/report.yaml" >/dev/null; then
    echo "ok   server-side apply of a new ImageReport as $sa"
  else
    fail "server-side apply of an ImageReport as the ServiceAccount"
  fi
  printf 'apiVersion: imagebloat.dev/v1alpha1\nkind: ImageReport\nmetadata:\n  name: deployment-chart-check\n  namespace: %s\nstatus:\n  conditions: []\n' "$ns-team" >"$work/status.yaml"
  # (--validate=false: a status-only body has no spec, as the operator's has none either)
  if "$K" apply --as="$sa" --server-side --field-manager=imagebloat --force-conflicts --subresource=status \
    --validate=false -f "$work/status.yaml" >/dev/null; then
    echo "ok   server-side apply of its status"
  else
    fail "server-side apply of an ImageReport status as the ServiceAccount"
  fi
  # Why the ClusterRole has `create` on imagereports although the operator only patches: a
  # server-side apply that creates the object is authorized as create too. Shown with a
  # ServiceAccount that has patch only.
  "$K" create serviceaccount patch-only -n "$ns-team" >/dev/null
  "$K" create role patch-only -n "$ns-team" --verb=patch --resource=imagereports.imagebloat.dev >/dev/null
  "$K" create rolebinding patch-only -n "$ns-team" --role=patch-only --serviceaccount="$ns-team:patch-only" >/dev/null
  sed 's/deployment-chart-check/deployment-patch-only/' "$work/report.yaml" >"$work/report2.yaml"
  if "$K" apply --as="system:serviceaccount:$ns-team:patch-only" --server-side --field-manager=imagebloat \
    --force-conflicts -f "$work/report2.yaml" >/dev/null 2>"$work/patch-only.log"; then
    fail "server-side apply created a report without the create verb: drop create from the ClusterRole"
  elif grep -q Forbidden "$work/patch-only.log"; then
    echo "ok   with patch but without create, the same apply is refused (403 Forbidden)"
  else
    cat "$work/patch-only.log"
    fail "the patch-only apply failed, but not with Forbidden"
  fi
  # Namespace users read their own namespace's reports through the built-in roles (the chart's
  # ClusterRole is aggregated into view, edit and admin), and nothing elsewhere.
  "$K" create rolebinding team-view -n "$ns-team" --clusterrole=view --user=team-member >/dev/null
  user_can() { "$K" auth can-i --as=team-member "$@" 2>/dev/null; }
  for _ in $(seq 60); do
    [ "$(user_can list imagereports.imagebloat.dev -n "$ns-team")" = yes ] && break
    sleep 1 # the controller-manager aggregates ClusterRoles asynchronously
  done
  if [ "$(user_can list imagereports.imagebloat.dev -n "$ns-team")" = yes ] &&
    [ "$(user_can get imagereports.imagebloat.dev -n "$ns-team")" = yes ] &&
    [ "$(user_can watch imagereports.imagebloat.dev -n "$ns-team")" = yes ] &&
    [ "$(user_can patch imagereports.imagebloat.dev -n "$ns-team")" = no ] &&
    [ "$(user_can list imagereports.imagebloat.dev -n "$ns")" = no ] &&
    "$K" get --as=team-member -n "$ns-team" imagereports.imagebloat.dev deployment-chart-check >/dev/null; then
    echo "ok   a user with the built-in view role reads its namespace's ImageReports (and only there, read-only)"
  else
    fail "the built-in view role does not grant exactly read access to ImageReports in its namespace"
  fi
  printf 'apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: %s-leader\n  namespace: %s\nspec:\n  holderIdentity: a\n' "$fullname" "$ns" >"$work/lease.yaml"
  if "$K" create --as="$sa" -f "$work/lease.yaml" >/dev/null &&
    "$K" get --as="$sa" -n "$ns" lease "$fullname-leader" -o yaml | sed 's/holderIdentity: a/holderIdentity: b/' |
    "$K" replace --as="$sa" -f - >/dev/null; then
    echo "ok   Lease create, get and update (resourceVersion-checked replace)"
  else
    fail "Lease create/get/update as the ServiceAccount"
  fi
fi

phase "done"
if [ ${#failed[@]} -gt 0 ]; then
  printf 'chart-check: %d check(s) failed:\n' "${#failed[@]}"
  printf '  - %s\n' "${failed[@]}"
  exit 1
fi
echo "chart-check: all checks passed"
