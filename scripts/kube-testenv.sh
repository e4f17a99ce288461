#!/usr/bin/env bash
# Starts and stops a real Kubernetes control plane for the operator tests, on 127.0.0.1 with ports
# picked here: etcd, kube-apiserver 1.20.2 and kube-controller-manager 1.20.2 (Deployments ->
# ReplicaSets -> Pods, garbage collection, ServiceAccounts and their tokens). No scheduler and no
# kubelet: a test plays both (see scripts/kube-smoke.sh for how to bind a Pod and set its status).
#
#   scripts/kube-testenv.sh up     build or reuse the binaries (scripts/kube-build.sh), start
#                                  everything on a fresh, empty etcd, write the env file
#   scripts/kube-testenv.sh down   stop what `up` started (by pid file); safe to repeat
#   scripts/kube-testenv.sh env    print the path of the env file (a sourceable list of `export` lines)
#   scripts/kube-testenv.sh status exit 0 when the env file exists and the API server is ready
#   scripts/kube-testenv.sh restart-apiserver
#                                  SIGKILL kube-apiserver and start it again on the same etcd,
#                                  port and certificates (the control-plane fault tests)
#
# An existing cluster instead: with IMAGEBLOAT_TEST_KUBECONFIG=FILE, `up` starts nothing. It checks
# that the cluster FILE's current context names answers, fetches kubectl and helm (no build), and
# writes an env file pointing at FILE; the suite then runs against that cluster (its Pods name a
# scheduler that does not exist and are bound by the tests to Nodes they create, so no kubelet ever
# runs them). `down` deletes what the tests created there: namespaces and Nodes labelled
# imagebloat.dev/e2e=true. Needs cluster-admin (the tests create Nodes, CRDs and RBAC).
#
# Environment contract (written to "$KUBE/env" by `up`; $KUBE is defined below):
#   KUBECONFIG                      a kubeconfig for the admin user (context imagebloat-test,
#                                   namespace default), server https://127.0.0.1:PORT
#   IMAGEBLOAT_TEST_KUBE_SERVER     https://127.0.0.1:PORT (always 127.0.0.1: the server certificate
#                                   has no "localhost" name); not set for an existing cluster
#   IMAGEBLOAT_TEST_KUBE_TOKEN      bearer token of the admin user (group system:masters)
#   IMAGEBLOAT_TEST_KUBE_CA         the API server's certificate bundle (PEM, self-signed CA + leaf)
#   IMAGEBLOAT_TEST_KUBECTL         kubectl v1.35 (static binary)
#   IMAGEBLOAT_TEST_HELM            helm v4 (static binary)
#   IMAGEBLOAT_TEST_KUBE_LOG_DIR    etcd.log, kube-apiserver.log, kube-controller-manager.log
#   IMAGEBLOAT_TEST_KUBE_EXTERNAL   1 for an existing cluster (then only KUBECONFIG, the clients,
#                                   the version and the helm directories are set)
#   IMAGEBLOAT_TEST_KUBE_VERSION    v1.20.2
#   HELM_CACHE_HOME HELM_CONFIG_HOME HELM_DATA_HOME   private, empty helm directories under $KUBE
#
# State (certificates, keys, tokens, etcd data, logs, pid files) lives in
#   $KUBE = ${IMAGEBLOAT_TESTENV_DIR:-${XDG_RUNTIME_DIR:-/tmp}/imagebloat-testenv-$UID}/kube
# The parent directory belongs to scripts/testenv.sh (the registries); this script touches only kube/.
# Start-up waits at most IMAGEBLOAT_TESTENV_KUBE_TIMEOUT seconds (default 120) per component.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="${IMAGEBLOAT_TESTENV_DIR:-${XDG_RUNTIME_DIR:-/tmp}/imagebloat-testenv-$UID}"
KUBE="$STATE/kube"
ENV_FILE="$KUBE/env"
READY_TIMEOUT="${IMAGEBLOAT_TESTENV_KUBE_TIMEOUT:-120}"
KUBE_VERSION=v1.20.2
LOG_DIR="$KUBE/log"
RUN_DIR="$KUBE/run"
OWNER_MARK="$KUBE/"

# shellcheck source=scripts/lib/common.sh
source "$SCRIPT_DIR/lib/common.sh"

# An existing cluster: remove what the tests made there, never anything else.
down_external() {
  # shellcheck disable=SC1090
  source "$ENV_FILE"
  log "deleting the e2e namespaces and Nodes in the cluster of ${KUBECONFIG:-?}"
  "$IMAGEBLOAT_TEST_KUBECTL" delete namespaces -l imagebloat.dev/e2e=true --wait=false >/dev/null || true
  "$IMAGEBLOAT_TEST_KUBECTL" delete nodes -l imagebloat.dev/e2e=true --wait=false >/dev/null || true
  rm -f "$ENV_FILE"
}

cmd_down() {
  local name
  if [ -f "$ENV_FILE" ] && grep -q "^export IMAGEBLOAT_TEST_KUBE_EXTERNAL=1" "$ENV_FILE"; then
    down_external
    return 0
  fi
  if [ -d "$RUN_DIR" ]; then
    for name in kube-controller-manager kube-apiserver etcd; do
      stop_by_pid_file "$name" 10
    done
  fi
  rm -f "$ENV_FILE"
}

up_external() {
  local kubeconfig="$IMAGEBLOAT_TEST_KUBECONFIG" bin version
  [ -r "$kubeconfig" ] || die "IMAGEBLOAT_TEST_KUBECONFIG=$kubeconfig: no such readable file"
  kubeconfig="$(cd "$(dirname "$kubeconfig")" && pwd)/$(basename "$kubeconfig")"
  "$SCRIPT_DIR/kube-build.sh" clients >/dev/null
  bin="$("$SCRIPT_DIR/kube-build.sh" bin-dir)"
  cmd_down
  mkdir -p "$STATE"
  chmod 700 "$STATE"
  rm -rf "${KUBE:?}"
  mkdir -p "$KUBE/helm/cache" "$KUBE/helm/config" "$KUBE/helm/data"
  "$bin/kubectl" --kubeconfig "$kubeconfig" get --raw /readyz >/dev/null ||
    die "the cluster of $kubeconfig (context $("$bin/kubectl" --kubeconfig "$kubeconfig" config current-context 2>/dev/null || echo '?')) does not answer /readyz"
  version="$("$bin/kubectl" --kubeconfig "$kubeconfig" version -o json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')"
  cat >"$ENV_FILE" <<EOF
export KUBECONFIG='$kubeconfig'
export IMAGEBLOAT_TEST_KUBE_EXTERNAL=1
export IMAGEBLOAT_TEST_KUBECTL='$bin/kubectl'
export IMAGEBLOAT_TEST_HELM='$bin/helm'
export IMAGEBLOAT_TEST_KUBE_VERSION='$version'
export HELM_CACHE_HOME='$KUBE/helm/cache'
export HELM_CONFIG_HOME='$KUBE/helm/config'
export HELM_DATA_HOME='$KUBE/helm/data'
EOF
  log "using the existing cluster of $kubeconfig ($version); env file: $ENV_FILE"
}

cmd_up() {
  if [ -n "${IMAGEBLOAT_TEST_KUBECONFIG:-}" ]; then
    up_external
    return 0
  fi
  "$SCRIPT_DIR/kube-build.sh" >/dev/null
  local bin
  bin="$("$SCRIPT_DIR/kube-build.sh" bin-dir)"
  command -v etcd >/dev/null || die "etcd missing (Debian's etcd-server; scripts/kube-build.sh installs it)"
  command -v openssl >/dev/null || die "openssl missing"

  if compgen -G "$KUBE/run/*.pid" >/dev/null; then
    log "already up: restarting"
    cmd_down
  fi
  # A fresh cluster every time: new etcd, certificates, keys and token. Only kube/ is touched.
  mkdir -p "$STATE"
  chmod 700 "$STATE"
  rm -rf "${KUBE:?}"
  mkdir -p "$KUBE/run" "$KUBE/log" "$KUBE/certs" "$KUBE/pki" "$KUBE/etcd" "$KUBE/kcm-certs" \
    "$KUBE/helm/cache" "$KUBE/helm/config" "$KUBE/helm/data"
  chmod 700 "$KUBE" "$KUBE/etcd"

  local p_etcd p_peer p_api p_kcm token started=$SECONDS
  read -r p_etcd p_peer p_api p_kcm <<<"$(free_ports 4)"
  token="$(openssl rand -hex 32)"
  printf '%s,admin,admin-uid,"system:masters"\n' "$token" >"$KUBE/pki/tokens.csv"
  openssl genrsa -out "$KUBE/pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$KUBE/pki/sa.key" -pubout -out "$KUBE/pki/sa.pub" 2>/dev/null
  chmod 600 "$KUBE/pki/sa.key" "$KUBE/pki/tokens.csv"

  log "starting etcd on 127.0.0.1:$p_etcd"
  # ETCD_UNSUPPORTED_ARCH: etcd 3.4 refuses to start on arm64 and others without it.
  ETCD_UNSUPPORTED_ARCH="$(dpkg --print-architecture 2>/dev/null || echo amd64)" \
    start etcd etcd --name imagebloat-test --data-dir "$KUBE/etcd" \
    --listen-client-urls "http://127.0.0.1:$p_etcd" --advertise-client-urls "http://127.0.0.1:$p_etcd" \
    --listen-peer-urls "http://127.0.0.1:$p_peer" --initial-advertise-peer-urls "http://127.0.0.1:$p_peer" \
    --initial-cluster "imagebloat-test=http://127.0.0.1:$p_peer" \
    --snapshot-count 10000 --quota-backend-bytes 2147483648
  wait_http etcd etcd "http://127.0.0.1:$p_etcd/health" 200

  log "starting kube-apiserver $KUBE_VERSION on https://127.0.0.1:$p_api"
  local apiserver=("$bin/kube-apiserver"
    --etcd-servers="http://127.0.0.1:$p_etcd"
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$p_api" --insecure-port=0
    --cert-dir="$KUBE/certs"
    --service-account-issuer=https://kubernetes.default.svc
    --service-account-key-file="$KUBE/pki/sa.pub"
    --service-account-signing-key-file="$KUBE/pki/sa.key"
    --token-auth-file="$KUBE/pki/tokens.csv"
    --authorization-mode=RBAC
    --service-cluster-ip-range=10.0.0.0/24
    --endpoint-reconciler-type=none
    --allow-privileged=true
    --profiling=false)
  # `restart-apiserver` starts the same command again.
  printf '%s\0' "${apiserver[@]}" >"$KUBE/run/kube-apiserver.cmd"
  start kube-apiserver "${apiserver[@]}"
  # The certificate appears in cert-dir only once the server has generated it.
  local deadline=$((SECONDS + READY_TIMEOUT))
  while [ ! -s "$KUBE/certs/apiserver.crt" ]; do
    kill -0 "$(cat "$RUN_DIR/kube-apiserver.pid")" 2>/dev/null || die_up kube-apiserver "kube-apiserver exited during start-up"
    [ "$SECONDS" -lt "$deadline" ] || die_up kube-apiserver "kube-apiserver wrote no $KUBE/certs/apiserver.crt within ${READY_TIMEOUT}s"
    sleep 0.2
  done
  wait_http kube-apiserver "kube-apiserver /readyz" "https://127.0.0.1:$p_api/readyz" 200 \
    --cacert "$KUBE/certs/apiserver.crt" -H "Authorization: Bearer $token"
  local t_ready=$((SECONDS - started))

  cat >"$KUBE/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: imagebloat-test
  cluster:
    server: https://127.0.0.1:$p_api
    certificate-authority: $KUBE/certs/apiserver.crt
users:
- name: admin
  user:
    token: $token
contexts:
- name: imagebloat-test
  context:
    cluster: imagebloat-test
    user: admin
    namespace: default
current-context: imagebloat-test
EOF
  chmod 600 "$KUBE/kubeconfig"

  # --authentication-skip-lookup: the API server has no client CA, so the configmap
  # kube-system/extension-apiserver-authentication never exists and the lookup only logs errors.
  log "starting kube-controller-manager $KUBE_VERSION (health on https://127.0.0.1:$p_kcm)"
  start kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig="$KUBE/kubeconfig" \
    --authentication-kubeconfig="$KUBE/kubeconfig" --authorization-kubeconfig="$KUBE/kubeconfig" \
    --authentication-skip-lookup \
    --bind-address=127.0.0.1 --secure-port="$p_kcm" --port=0 --cert-dir="$KUBE/kcm-certs" \
    --use-service-account-credentials=false --leader-elect=false \
    --controllers='*,-nodelifecycle' \
    --service-account-private-key-file="$KUBE/pki/sa.key" \
    --root-ca-file="$KUBE/certs/apiserver.crt" \
    --profiling=false
  wait_http kube-controller-manager "kube-controller-manager /healthz" "https://127.0.0.1:$p_kcm/healthz" 200 -k
  # The controllers really work once the default namespace has its ServiceAccount (and token).
  wait_http kube-controller-manager "the default ServiceAccount" \
    "https://127.0.0.1:$p_api/api/v1/namespaces/default/serviceaccounts/default" 200 \
    --cacert "$KUBE/certs/apiserver.crt" -H "Authorization: Bearer $token"

  cat >"$ENV_FILE" <<EOF
export KUBECONFIG='$KUBE/kubeconfig'
export IMAGEBLOAT_TEST_KUBE_SERVER='https://127.0.0.1:$p_api'
export IMAGEBLOAT_TEST_KUBE_TOKEN='$token'
export IMAGEBLOAT_TEST_KUBE_CA='$KUBE/certs/apiserver.crt'
export IMAGEBLOAT_TEST_KUBECTL='$bin/kubectl'
export IMAGEBLOAT_TEST_HELM='$bin/helm'
export IMAGEBLOAT_TEST_KUBE_LOG_DIR='$KUBE/log'
export IMAGEBLOAT_TEST_KUBE_VERSION='$KUBE_VERSION'
export HELM_CACHE_HOME='$KUBE/helm/cache'
export HELM_CONFIG_HOME='$KUBE/helm/config'
export HELM_DATA_HOME='$KUBE/helm/data'
EOF
  log "up in $((SECONDS - started)) s (/readyz after ${t_ready} s); env file: $ENV_FILE"
}

# Kills kube-apiserver (SIGKILL: no graceful shutdown) and starts it again with the same command,
# certificates and etcd; returns once it answers /readyz. Clients see the connection drop.
cmd_restart_apiserver() {
  { [ -f "$ENV_FILE" ] && [ -f "$KUBE/run/kube-apiserver.cmd" ]; } || die "no local cluster is up"
  # shellcheck disable=SC1090
  source "$ENV_FILE"
  local pidfile="$KUBE/run/kube-apiserver.pid" apiserver=()
  if pid_is_ours "$pidfile"; then
    kill -KILL "$(cat "$pidfile")" 2>/dev/null || true
    while pid_is_ours "$pidfile"; do sleep 0.05; done
  fi
  mapfile -d '' apiserver <"$KUBE/run/kube-apiserver.cmd"
  log "kube-apiserver killed; starting it again"
  local deadline=$((SECONDS + READY_TIMEOUT)) got=""
  while [ "$SECONDS" -lt "$deadline" ]; do
    if ! kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null; then
      # Not started yet, or exited (the killed one's port can stay busy for a moment): start.
      # Appends to the log: the life before the kill stays readable.
      setsid "${apiserver[@]}" >>"$KUBE/log/kube-apiserver.log" 2>&1 </dev/null &
      echo "$!" >"$pidfile"
    fi
    got="$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 --cacert "$IMAGEBLOAT_TEST_KUBE_CA" \
      -H "Authorization: Bearer $IMAGEBLOAT_TEST_KUBE_TOKEN" "$IMAGEBLOAT_TEST_KUBE_SERVER/readyz" || true)"
    [ "$got" = 200 ] && return 0
    sleep 0.5
  done
  log "last lines of $KUBE/log/kube-apiserver.log:"
  tail -n 30 "$KUBE/log/kube-apiserver.log" >&2 || true
  die "kube-apiserver did not answer /readyz within ${READY_TIMEOUT}s after the restart (last status: ${got:-none})"
}

cmd_env() {
  [ -f "$ENV_FILE" ] || die "no env file at $ENV_FILE: run scripts/kube-testenv.sh up first"
  echo "$ENV_FILE"
}

cmd_status() {
  [ -f "$ENV_FILE" ] || return 1
  (
    # shellcheck disable=SC1090
    source "$ENV_FILE"
    if [ "${IMAGEBLOAT_TEST_KUBE_EXTERNAL:-}" = 1 ]; then
      exec "$IMAGEBLOAT_TEST_KUBECTL" get --raw /readyz >/dev/null 2>&1
    fi
    [ -n "${IMAGEBLOAT_TEST_KUBE_SERVER:-}" ] &&
      [ "$(http_status "$IMAGEBLOAT_TEST_KUBE_SERVER/readyz" --cacert "$IMAGEBLOAT_TEST_KUBE_CA" \
        -H "Authorization: Bearer $IMAGEBLOAT_TEST_KUBE_TOKEN")" = 200 ]
  )
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  env) print_env_file ;;
  status) cmd_status ;;
  restart-apiserver) cmd_restart_apiserver ;;
  *)
    echo "usage: $0 up|down|env|status|restart-apiserver" >&2
    exit 2
    ;;
esac
