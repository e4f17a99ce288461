#!/usr/bin/env bash
# Starts and stops the real servers the tests talk to, all on 127.0.0.1 with ports picked here.
#
#   scripts/testenv.sh up     install what is missing, start everything, write the env file
#   scripts/testenv.sh down   stop everything that `up` started (by pid file); safe to repeat
#   scripts/testenv.sh env    print the path of the env file (a sourceable list of `export` lines)
#   scripts/testenv.sh status exit 0 when the env file exists and registry A answers (for scripts
#                             that reuse a running environment rather than restart it)
#   scripts/testenv.sh packages   only install the missing Debian packages (apt-get update first
#                                 when anything is missing); the other scripts share this list
#
# Servers:
#   A  plain-HTTP registry (Debian's docker-registry, CNCF distribution), deletes enabled
#   B  plain-HTTP registry with basic auth (htpasswd, random password)
#   C  TLS registry whose certificate is signed by a test CA made here
#   D  fault-injecting proxy (scripts/fault_proxy.py) in front of A
#
# Environment contract (written to "$STATE/env" by `up`):
#   IMAGEBLOAT_TESTENV_DIR              the state directory
#   IMAGEBLOAT_TEST_REGISTRY            127.0.0.1:PORT of A
#   IMAGEBLOAT_TEST_REGISTRY_LOG        A's log file (access log included)
#   IMAGEBLOAT_TEST_REGISTRY_AUTH       127.0.0.1:PORT of B
#   IMAGEBLOAT_TEST_REGISTRY_USER       B's user
#   IMAGEBLOAT_TEST_REGISTRY_PASSWORD   B's password
#   IMAGEBLOAT_TEST_REGISTRY_CONFIG     a docker config.json holding B's credentials
#   IMAGEBLOAT_TEST_REGISTRY_TLS        127.0.0.1:PORT of C (certificate names 127.0.0.1 and localhost)
#   IMAGEBLOAT_TEST_CA_FILE             the test CA (PEM) that signed C's certificate
#   IMAGEBLOAT_TEST_CERT_DIR            a directory holding only that CA as ca.crt (skopeo --*-cert-dir)
#   IMAGEBLOAT_TEST_FAULT_PROXY         127.0.0.1:PORT of D
# scripts/realistic-image.sh appends the IMAGEBLOAT_TEST_DEBIAN_* variables to the same file.
#
# State (configs, certificates, registry storage, logs, pid files) lives in
#   ${IMAGEBLOAT_TESTENV_DIR:-${XDG_RUNTIME_DIR:-/tmp}/imagebloat-testenv-$UID}
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="${IMAGEBLOAT_TESTENV_DIR:-${XDG_RUNTIME_DIR:-/tmp}/imagebloat-testenv-$UID}"
ENV_FILE="$STATE/env"
READY_TIMEOUT="${IMAGEBLOAT_TESTENV_TIMEOUT:-30}"
LOG_DIR="$STATE/log"
RUN_DIR="$STATE/run"
OWNER_MARK="$STATE"

# Debian packages the test environment needs, each with a command (or an absolute path) it provides.
PACKAGES=(
  debian-archive-keyring:/usr/share/keyrings/debian-archive-keyring.gpg
  docker-registry:docker-registry
  apache2-utils:htpasswd
  umoci:umoci
  skopeo:skopeo
  buildah:buildah
  podman:podman
  debootstrap:debootstrap
  openssl:openssl
  python3:python3
  curl:curl
)

# shellcheck source=scripts/lib/common.sh
source "$SCRIPT_DIR/lib/common.sh"

# registry_config NAME PORT EXTRA_HTTP_YAML EXTRA_TOP_YAML: writes $STATE/NAME/config.yml
registry_config() {
  local name="$1" port="$2" extra_http="$3" extra_top="$4"
  mkdir -p "$STATE/$name/storage"
  cat >"$STATE/$name/config.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $STATE/$name/storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: $(openssl rand -hex 16)
$extra_http
$extra_top
EOF
}

make_certs() {
  local dir="$STATE/tls"
  mkdir -p "$dir" "$dir/certs.d"
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" -subj "/CN=imagebloat test CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -sha256 \
    -keyout "$dir/server.key" -out "$dir/server.csr" -subj "/CN=127.0.0.1" 2>/dev/null
  cat >"$dir/server.ext" <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
EOF
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$dir/server.ext" -out "$dir/server.pem" 2>/dev/null
  cp "$dir/ca.pem" "$dir/certs.d/ca.crt"
}

cmd_down() {
  local pidfile
  [ -d "$RUN_DIR" ] || return 0
  for pidfile in "$RUN_DIR"/*.pid; do
    [ -e "$pidfile" ] || continue
    stop_by_pid_file "$(basename "$pidfile" .pid)" 5
  done
  rm -f "$ENV_FILE"
}

cmd_up() {
  install_packages
  if compgen -G "$STATE/run/*.pid" >/dev/null; then
    log "already up: restarting"
    cmd_down
  fi
  # A fresh state every time: empty registries, new certificates and password.
  # Only what this script and its companions put there is removed, never the directory itself.
  rm -rf "${STATE:?}"/{a,b,c,tls,run,log,samples} "$STATE/env" "$STATE/realistic-expected.json"
  mkdir -p "$STATE/run" "$STATE/log"
  chmod 700 "$STATE"

  local pa pb pc pd user password
  read -r pa pb pc pd <<<"$(free_ports 4)"
  user="imagebloat"
  password="$(openssl rand -hex 16)"

  # A: plain HTTP.
  registry_config a "$pa" "" ""

  # B: plain HTTP with basic auth.
  mkdir -p "$STATE/b"
  htpasswd -Bbn "$user" "$password" >"$STATE/b/htpasswd" 2>/dev/null
  registry_config b "$pb" "" "auth:
  htpasswd:
    realm: basic-realm
    path: $STATE/b/htpasswd"
  python3 - "$STATE/b/config.json" "127.0.0.1:$pb" "$user" "$password" <<'EOF'
import base64, json, sys
path, host, user, password = sys.argv[1:5]
auth = base64.b64encode(f"{user}:{password}".encode()).decode()
with open(path, "w") as f:
    json.dump({"auths": {host: {"auth": auth}}}, f, indent=2)
EOF

  # C: TLS with a certificate from the test CA.
  make_certs
  registry_config c "$pc" "  tls:
    certificate: $STATE/tls/server.pem
    key: $STATE/tls/server.key" ""

  log "starting registries on 127.0.0.1:$pa (plain), :$pb (basic auth), :$pc (TLS); fault proxy on :$pd"
  start registry-a docker-registry serve "$STATE/a/config.yml"
  start registry-b docker-registry serve "$STATE/b/config.yml"
  start registry-c docker-registry serve "$STATE/c/config.yml"
  start fault-proxy python3 "$SCRIPT_DIR/fault_proxy.py" \
    --listen-port "$pd" --upstream "127.0.0.1:$pa" --log "$STATE/log/fault-proxy-access.log"

  wait_http registry-a "registry A" "http://127.0.0.1:$pa/v2/" 200
  wait_http registry-b "registry B" "http://127.0.0.1:$pb/v2/" 401
  wait_http registry-c "registry C" "https://127.0.0.1:$pc/v2/" 200 --cacert "$STATE/tls/ca.pem"
  wait_http fault-proxy "the fault proxy" "http://127.0.0.1:$pd/v2/" 200

  cat >"$ENV_FILE" <<EOF
export IMAGEBLOAT_TESTENV_DIR='$STATE'
export IMAGEBLOAT_TEST_REGISTRY='127.0.0.1:$pa'
export IMAGEBLOAT_TEST_REGISTRY_LOG='$STATE/log/registry-a.log'
export IMAGEBLOAT_TEST_REGISTRY_AUTH='127.0.0.1:$pb'
export IMAGEBLOAT_TEST_REGISTRY_USER='$user'
export IMAGEBLOAT_TEST_REGISTRY_PASSWORD='$password'
export IMAGEBLOAT_TEST_REGISTRY_CONFIG='$STATE/b/config.json'
export IMAGEBLOAT_TEST_REGISTRY_TLS='127.0.0.1:$pc'
export IMAGEBLOAT_TEST_CA_FILE='$STATE/tls/ca.pem'
export IMAGEBLOAT_TEST_CERT_DIR='$STATE/tls/certs.d'
export IMAGEBLOAT_TEST_FAULT_PROXY='127.0.0.1:$pd'
EOF
  log "up; env file: $ENV_FILE"
}

cmd_status() {
  [ -f "$ENV_FILE" ] || return 1
  (
    # shellcheck disable=SC1090
    source "$ENV_FILE"
    [ -n "${IMAGEBLOAT_TEST_REGISTRY:-}" ] &&
      [ "$(http_status "http://$IMAGEBLOAT_TEST_REGISTRY/v2/")" = 200 ]
  )
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  env) print_env_file ;;
  status) cmd_status ;;
  packages) install_packages ;;
  *)
    echo "usage: $0 up|down|env|packages" >&2
    exit 2
    ;;
esac
