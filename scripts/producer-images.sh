#!/usr/bin/env bash
# Builds (once) a small multi-layer image with buildah from a Dockerfile, then writes (every run,
# cheap) what every real image producer makes of it, for the tests that prove `scan --archive` and
# `scan --oci-layout` read each of them to the same figures as an independent count.
#
# The image (built once, no container engine, no network):
#   base     one layer: a slim root taken from layer 0 of scripts/realistic-image.sh's debootstrap
#            Debian (dash, a few coreutils, the libraries they load, os-release, passwd, group and
#            two doc directories), made an image with umoci
#   layers   `buildah bud --layers --isolation chroot --storage-driver vfs` of the Dockerfile below:
#              COPY app/ /opt/app/          incompressible data.bin, settings.conf, README.md
#              RUN  mkdir, cp, echo         a cache directory and a scratch copy of data.bin
#              RUN  rm, rm -rf, echo >      the scratch copy deleted (deleted later), the cache
#                                           directory and a base doc directory removed (whiteouts of
#                                           directories), settings.conf overwritten
#            Cached as an OCI layout written by `buildah push oci:` (tag `producers`).
#
# Every run, into $IMAGEBLOAT_TESTENV_DIR/producers (the image imported into a fresh vfs
# containers-storage there first):
#   skopeo-docker.tar       skopeo copy  -> docker-archive:FILE:localhost/producers:1
#   skopeo-oci.tar          skopeo copy  -> oci-archive:FILE:producers
#   skopeo-oci/             skopeo copy  -> oci:DIR:producers
#   podman-docker.tar       podman save --format docker-archive
#   podman-oci.tar          podman save --format oci-archive
#   podman-oci/             podman save --format oci-dir
#   buildah-oci.tar         buildah push -> oci-archive:FILE:producers
#   registry                buildah push -> docker://$IMAGEBLOAT_TEST_REGISTRY/producers/image:1
#   docker-gzip.tar         skopeo-docker.tar with every layer file gzip-compressed in place (same
#                           member names, manifest.json and config unchanged): what kaniko's
#                           --tarPath writes and `docker load` accepts
#   docker-zstd.tar         the same with zstd-compressed layer files (`docker load` accepts them)
#   docker25.tar            what Docker 25+ `docker save` writes: an OCI layout (uncompressed layer
#                           blobs, index.json, oci-layout) and a manifest.json whose Config and
#                           Layers point at blobs/sha256/...
#   expected.json           scripts/independent_count.py on the cached layout
# and appends to the env file (and prints as `export` lines):
#   IMAGEBLOAT_TEST_PRODUCERS_DIR       that directory
#   IMAGEBLOAT_TEST_PRODUCERS_IMAGE     the registry reference buildah pushed
#
# Cache: ${XDG_CACHE_HOME:-$HOME/.cache}/imagebloat-testenv/producers-v$RECIPE_VERSION, built in a
# temporary directory beside it and renamed into place. Bump RECIPE_VERSION when the recipe changes.
# Needs root (buildah's chroot isolation, vfs storage) and `scripts/testenv.sh up` first.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RECIPE_VERSION=1
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/imagebloat-testenv"
CACHED="$CACHE_ROOT/producers-v$RECIPE_VERSION"
REALISTIC_LAYOUT="$CACHE_ROOT/realistic-v1"
REALISTIC_TAG=bookworm-changeset
NAME=localhost/producers:1

PACKAGES=(
  buildah:buildah
  podman:podman
  skopeo:skopeo
  umoci:umoci
  zstd:zstd
)

# shellcheck source=scripts/lib/common.sh
source "$SCRIPT_DIR/lib/common.sh"

WORK=""
STORE=""
cleanup() {
  [ -n "$WORK" ] && rm -rf "$WORK"
  [ -n "$STORE" ] && rm -rf "$STORE"
  return 0
}

# A containers-storage under DIR (vfs): its buildah/podman flags (into the array STORAGE_FLAGS) and
# its skopeo transport prefix.
STORAGE_FLAGS=()
storage_flags() { STORAGE_FLAGS=(--storage-driver vfs --root "$1/root" --runroot "$1/runroot"); }
storage_ref() { echo "containers-storage:[vfs@$1/root+$1/runroot]"; }

# The slim base layer: entries of the debootstrap layer 0 that a shell and a few coreutils need.
slim_base_layer() {
  local out="$1" layer0
  layer0="$(python3 - "$REALISTIC_LAYOUT" "$REALISTIC_TAG" <<'EOF'
import json, os, sys
layout, tag = sys.argv[1:]
index = json.load(open(os.path.join(layout, "index.json")))
desc = next(m for m in index["manifests"]
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
blob = lambda d: os.path.join(layout, "blobs", *d.split(":"))
print(blob(json.load(open(blob(desc["digest"])))["layers"][0]["digest"]))
EOF
)"
  python3 - "$layer0" "$out" <<'EOF'
import sys, tarfile
src, out = sys.argv[1:]
BIN = "sh dash cat cp dd echo ln ls mkdir mv rm touch true".split()
LIB = "usr/lib/x86_64-linux-gnu/"
keep_exact = {"bin", "lib", "lib64", "sbin", "etc/os-release", "etc/passwd", "etc/group",
              "usr/lib/os-release", "usr/lib64/ld-linux-x86-64.so.2",
              LIB + "ld-linux-x86-64.so.2", LIB + "libc.so.6", LIB + "libselinux.so.1"}
keep_exact |= {"usr/bin/" + b for b in BIN}
keep_prefix = (LIB + "libpcre2-8.so.0", LIB + "libacl.so.1", LIB + "libattr.so.1",
               "usr/share/doc/dash/", "usr/share/doc/coreutils/")
def norm(name):
    return name.lstrip("./").rstrip("/") if name not in ("/", "./") else ""
with tarfile.open(src, "r|*") as tar:
    members = []
    for m in tar:
        data = tar.extractfile(m).read() if m.isreg() else None
        members.append((m, data))
kept = set()
for m, _ in members:
    p = norm(m.name)
    if p in keep_exact or p.startswith(keep_prefix):
        kept.add(p)
dirs = set()
for p in kept:
    parts = p.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        dirs.add("/".join(parts[:i]))
import io
with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
    for m, data in members:
        p = norm(m.name)
        if (m.isdir() and p in dirs) or (not m.isdir() and p in kept):
            m.name = p + ("/" if m.isdir() else "")
            tar.addfile(m, io.BytesIO(data) if data is not None else None)
EOF
}

# The Dockerfile and its context.
write_context() {
  local ctx="$1"
  mkdir -p "$ctx/app"
  python3 - "$ctx/app" <<'EOF'
import os, random, sys
d = sys.argv[1]
rng = random.Random(12)
open(os.path.join(d, "data.bin"), "wb").write(bytes(rng.getrandbits(8) for _ in range(300_000)))
open(os.path.join(d, "settings.conf"), "w").write("setting=1\n" * 50)
open(os.path.join(d, "README.md"), "w").write("# app\n\nA small application for the producer tests.\n")
EOF
  cat >"$ctx/Dockerfile" <<'EOF'
FROM localhost/producers-base:1
COPY app/ /opt/app/
RUN mkdir -p /var/cache/app/sub && cp /opt/app/data.bin /var/cache/app/sub/data-copy.bin && echo cached > /var/cache/app/note.txt && cp /opt/app/data.bin /opt/app/scratch.bin
RUN rm /opt/app/scratch.bin && rm -rf /var/cache/app /usr/share/doc/dash && echo setting=2 > /opt/app/settings.conf
EOF
}

build() {
  WORK="$(new_build_dir "$CACHE_ROOT" producers)"
  local started=$SECONDS store="$WORK/storage"
  storage_flags "$store"

  log "slim Debian base from the debootstrap layer"
  slim_base_layer "$WORK/base.tar"
  umoci init --layout "$WORK/base"
  umoci new --image "$WORK/base:base"
  umoci config --image "$WORK/base:base" --no-history --os linux --architecture amd64 --config.cmd /bin/sh
  umoci raw add-layer --image "$WORK/base:base" --history.created_by "debootstrap --variant=minbase bookworm (slimmed)" \
    "$WORK/base.tar"
  skopeo copy --quiet --insecure-policy "oci:$WORK/base:base" "$(storage_ref "$store")localhost/producers-base:1"

  log "buildah bud --layers"
  write_context "$WORK/context"
  buildah "${STORAGE_FLAGS[@]}" bud --layers --isolation chroot --pull=never --quiet -t "$NAME" \
    -f "$WORK/context/Dockerfile" "$WORK/context" >/dev/null
  buildah "${STORAGE_FLAGS[@]}" push --quiet "$NAME" "oci:$WORK/out:producers"

  if mv -T "$WORK/out" "$CACHED" 2>/dev/null; then
    log "built $CACHED in $((SECONDS - started)) s"
  elif [ -f "$CACHED/index.json" ]; then
    log "another build finished first; using $CACHED"
  else
    die "could not move the layout into $CACHED"
  fi
}

# Every producer's output of the cached image, into OUT.
produce() {
  local out="$1" reg="$2" store
  rm -rf "$out"
  mkdir -p "$out"
  # podman refuses a run root path over 50 characters: the storage goes under a short temp dir.
  STORE="$(mktemp -d /tmp/ib-producers.XXXXXX)"
  store="$STORE"
  local skopeo=(skopeo copy --quiet --insecure-policy)
  storage_flags "$store"
  local flags=("${STORAGE_FLAGS[@]}")

  log "skopeo: docker-archive, oci-archive, oci"
  "${skopeo[@]}" "oci:$CACHED:producers" "$(storage_ref "$store")$NAME"
  "${skopeo[@]}" "oci:$CACHED:producers" "docker-archive:$out/skopeo-docker.tar:$NAME"
  "${skopeo[@]}" "oci:$CACHED:producers" "oci-archive:$out/skopeo-oci.tar:producers"
  "${skopeo[@]}" "oci:$CACHED:producers" "oci:$out/skopeo-oci:producers"

  log "podman save: docker-archive, oci-archive, oci-dir"
  # Its own state dir too (the default is /run/libpod).
  local podman=(podman "${flags[@]}" --tmpdir "$store/tmp" --events-backend none --cgroup-manager cgroupfs)
  "${podman[@]}" save --quiet --format docker-archive -o "$out/podman-docker.tar" "$NAME"
  "${podman[@]}" save --quiet --format oci-archive -o "$out/podman-oci.tar" "$NAME"
  "${podman[@]}" save --quiet --format oci-dir -o "$out/podman-oci" "$NAME"

  log "buildah push: registry, oci-archive"
  buildah "${flags[@]}" push --quiet --tls-verify=false "$NAME" "docker://$reg/producers/image:1"
  buildah "${flags[@]}" push --quiet "$NAME" "oci-archive:$out/buildah-oci.tar:producers"

  log "docker-save archives with gzip and zstd layers; Docker 25 archive"
  python3 "$SCRIPT_DIR/lib/docker-archives.py" "$out/skopeo-docker.tar" "$out/docker-gzip.tar" \
    "$out/docker25.tar" "$out/docker-zstd.tar"

  rm -rf "$store"
  STORE=""
  python3 "$SCRIPT_DIR/independent_count.py" "$CACHED:producers" >"$out/expected.json.tmp"
  mv "$out/expected.json.tmp" "$out/expected.json"
}

main() {
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  local env_file
  env_file="$("$SCRIPT_DIR/testenv.sh" env)" || die "the test environment is not up: run scripts/testenv.sh up"
  # shellcheck disable=SC1090
  source "$env_file"
  [ -n "${IMAGEBLOAT_TESTENV_DIR:-}" ] || die "IMAGEBLOAT_TESTENV_DIR is not set in $env_file"
  [ -n "${IMAGEBLOAT_TEST_REGISTRY:-}" ] || die "IMAGEBLOAT_TEST_REGISTRY is not set in $env_file"
  [ "$(id -u)" -eq 0 ] || die "buildah's chroot isolation and vfs storage need root"
  install_packages
  if [ -f "$CACHED/index.json" ]; then
    log "using the cached image $CACHED"
  else
    if [ ! -f "$REALISTIC_LAYOUT/index.json" ]; then
      log "building the realistic image first"
      "$SCRIPT_DIR/realistic-image.sh" >/dev/null
    fi
    build
  fi
  local out="$IMAGEBLOAT_TESTENV_DIR/producers"
  produce "$out" "$IMAGEBLOAT_TEST_REGISTRY"

  local lines
  lines="export IMAGEBLOAT_TEST_PRODUCERS_DIR='$out'
export IMAGEBLOAT_TEST_PRODUCERS_IMAGE='$IMAGEBLOAT_TEST_REGISTRY/producers/image:1'"
  set_env_lines "$env_file" IMAGEBLOAT_TEST_PRODUCERS_ "$lines"
  echo "$lines"
}

main "$@"
