#!/usr/bin/env bash
# Builds (once) lazy-pull images written by the real tools, as one OCI layout, for the tests that
# prove the table-of-contents path reads the same index as a full read of the same layer.
#
# Sources (both plain tar+gzip images):
#   edge     two hand-made layers (umoci raw add-layer) with every entry kind the waste math sees:
#            files (etc/os-release, usr/lib/os-release, an empty file, a 5 MiB file that spans
#            several eStargz chunks), directories, symlinks, hard links (one with a long target),
#            a character device, a FIFO, a long (PAX) name; then per-file and per-directory
#            whiteouts, an opaque directory with a new child, and a rewritten os-release.
#   debian   the realistic image of scripts/realistic-image.sh (built first when absent).
#   names    one layer with a file name that is not UTF-8 (`caf\xe9.txt`): the JSON tables of
#            contents cannot carry it (the tools write U+FFFD instead), so the TOC path must refuse it.
#
# Each source is converted by:
#   zstd-chunked      skopeo copy --dest-compress-format zstd:chunked (containers/storage's writer)
#   estargz           ctr-remote image convert --estargz --oci (stargz-snapshotter's writer), against
#                     a root-run containerd with its own root, state and socket under a temp dir,
#                     pulling from and pushing to the test registry over plain HTTP
#   zstd-chunked-ctr  ctr-remote image convert --zstdchunked --oci (stargz-snapshotter's writer)
#
# Cache: ${XDG_CACHE_HOME:-$HOME/.cache}/imagebloat-testenv/lazy-v$RECIPE_VERSION, one OCI layout with
# the tags SOURCE-FORMAT (edge-estargz, debian-zstd-chunked, ...). A warm run only prints. The build
# runs in a temporary directory beside it and is renamed into place at the end. Bump RECIPE_VERSION
# whenever the recipe changes.
#
# A cold run needs the test registry: it uses the running test env (IMAGEBLOAT_TESTENV_DIR) or starts
# a private one under a temp dir and stops it again. When a test env is up, the script appends to its env file:
#   IMAGEBLOAT_TEST_LAZY_LAYOUT   the layout directory
#   IMAGEBLOAT_TEST_LAZY_TAGS     the tags, space-separated
# and always prints the two lines as `export` statements on stdout.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RECIPE_VERSION=2
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/imagebloat-testenv"
LAYOUT="$CACHE_ROOT/lazy-v$RECIPE_VERSION"
REALISTIC_LAYOUT="$CACHE_ROOT/realistic-v1"
REALISTIC_TAG=bookworm-changeset
SOURCES=(edge debian names)
FORMATS=(zstd-chunked estargz zstd-chunked-ctr)

# Debian packages beyond the test environment's (scripts/testenv.sh packages installs those).
PACKAGES=(
  containerd:containerd
  stargz-snapshotter:ctr-remote
)

# shellcheck source=scripts/lib/common.sh
source "$SCRIPT_DIR/lib/common.sh"

tags() {
  local s f list=()
  for s in "${SOURCES[@]}"; do
    for f in "${FORMATS[@]}"; do list+=("$s-$f"); done
  done
  echo "${list[*]}"
}

install_all_packages() {
  "$SCRIPT_DIR/testenv.sh" packages
  install_packages
}

WORK=""
CTRD_DIR=""
CTRD_PID=""
STARTED_TESTENV=""
cleanup() {
  if [ -n "$CTRD_PID" ]; then
    kill "$CTRD_PID" 2>/dev/null || true
    wait "$CTRD_PID" 2>/dev/null || true
  fi
  [ -n "$CTRD_DIR" ] && rm -rf "$CTRD_DIR"
  [ -n "$WORK" ] && rm -rf "$WORK"
  if [ -n "$STARTED_TESTENV" ]; then
    "$SCRIPT_DIR/testenv.sh" down >/dev/null 2>&1
    rm -rf "$IMAGEBLOAT_TESTENV_DIR"
  fi
  return 0
}

# The edge-case source image, as an OCI layout tagged `edge`.
build_edge_source() {
  local oci="$1"
  python3 - "$WORK/edge0.tar" "$WORK/edge1.tar" <<'EOF'
import io, random, sys, tarfile
MTIME = 1717171717
def add(tar, name, kind="file", data=b"", mode=0o644, link=""):
    info = tarfile.TarInfo(name)
    info.mtime = MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode = mode
    info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                 "hardlink": tarfile.LNKTYPE, "char": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}[kind]
    info.linkname = link
    if kind == "char":
        info.devmajor, info.devminor = 1, 3
    if kind == "file":
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        tar.addfile(info)
rng = random.Random(11)
big = bytes(rng.getrandbits(8) for _ in range(1 << 20)) * 5
long_dir = "usr/share/" + "/".join(["a-rather-long-directory-name-%02d" % i for i in range(5)])
with tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT) as tar:
    for d in ["etc", "usr", "usr/lib", "usr/bin", "usr/share", "dev", "var", "var/cache",
              "var/cache/app", "var/cache/app/sub", "opt", "opt/gone"]:
        add(tar, d + "/", "dir", mode=0o755)
    add(tar, "etc/os-release", data=b'PRETTY_NAME="Edge Linux 1"\nID=edge\nVERSION_ID="1"\n')
    add(tar, "usr/lib/os-release", data=b'PRETTY_NAME="Edge Linux 1 (lib)"\nID=edge\n')
    add(tar, "etc/empty")
    add(tar, "usr/bin/tool", data=b"#!/bin/sh\necho tool\n" * 40, mode=0o755)
    add(tar, "usr/bin/tool-again", "hardlink", link="usr/bin/tool")
    add(tar, "usr/bin/sh", "symlink", link="tool")
    add(tar, "usr/lib/big.bin", data=big)
    add(tar, "dev/null", "char", mode=0o666)
    add(tar, "dev/initctl", "fifo", mode=0o600)
    for d in range(5):
        add(tar, "/".join(long_dir.split("/")[: 3 + d]) + "/", "dir", mode=0o755)
    add(tar, long_dir + "/deep-file-with-a-long-name.txt", data=b"deep\n" * 100)
    add(tar, long_dir + "/deep-link", "hardlink", link=long_dir + "/deep-file-with-a-long-name.txt")
    add(tar, "var/cache/app/one.cache", data=b"1" * 3000)
    add(tar, "var/cache/app/sub/two.cache", data=b"2" * 7000)
    add(tar, "opt/gone/file", data=b"gone\n")
    add(tar, "opt/stale.txt", data=b"stale\n" * 10)
    add(tar, "./etc/dotted", data=b"leading ./ in the tar name\n")
with tarfile.open(sys.argv[2], "w", format=tarfile.PAX_FORMAT) as tar:
    add(tar, "etc/", "dir", mode=0o755)
    add(tar, "etc/os-release", data=b'PRETTY_NAME="Edge Linux 2"\nID=edge\nVERSION_ID="2"\n')
    add(tar, "opt/", "dir", mode=0o755)
    add(tar, "opt/.wh.stale.txt")
    add(tar, "opt/.wh.gone")
    add(tar, "var/cache/app/", "dir", mode=0o755)
    add(tar, "var/cache/app/.wh..wh..opq")
    add(tar, "var/cache/app/fresh.cache", data=b"3" * 500)
    add(tar, "usr/lib/", "dir", mode=0o755)
    add(tar, "usr/lib/.wh.big.bin")
EOF
  umoci init --layout "$oci"
  umoci new --image "$oci:edge"
  umoci config --image "$oci:edge" --no-history --os linux --architecture amd64 --config.cmd sh
  umoci raw add-layer --image "$oci:edge" --history.created_by "edge: every entry kind" "$WORK/edge0.tar"
  umoci raw add-layer --image "$oci:edge" --history.created_by "edge: whiteouts and an opaque directory" \
    "$WORK/edge1.tar"
}

# Copies an OCI image into a new layout, appending the tar end-of-archive blocks to layers that lack
# them (`umoci insert` writes none, and skopeo 1.9 hangs forever converting such a layer). The
# entries are unchanged, so the converted images have the same index as the original.
with_end_of_archive() {
  local src_layout="$1" src_tag="$2" dest="$3" dest_tag="$4"
  python3 - "$src_layout" "$src_tag" "$dest" "$dest_tag" <<'EOF'
import gzip, hashlib, json, os, shutil, sys, zlib
src, tag, dest, dest_tag = sys.argv[1:]
def blob(layout, digest):
    return os.path.join(layout, "blobs", *digest.split(":"))
def put(data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    os.makedirs(os.path.join(dest, "blobs", "sha256"), exist_ok=True)
    with open(blob(dest, digest), "wb") as f:
        f.write(data)
    return digest
index = json.load(open(os.path.join(src, "index.json")))
desc = next(m for m in index["manifests"]
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
manifest = json.load(open(blob(src, desc["digest"])))
config = json.load(open(blob(src, manifest["config"]["digest"])))
for i, layer in enumerate(manifest["layers"]):
    raw = open(blob(src, layer["digest"]), "rb").read()
    tar = zlib.decompress(raw, 31) if layer["mediaType"].endswith("gzip") else raw
    if tar[-1024:] == bytes(1024):
        put(raw)
        continue
    tar += bytes(1024)
    data = gzip.compress(tar, mtime=0) if layer["mediaType"].endswith("gzip") else tar
    layer["digest"], layer["size"] = put(data), len(data)
    config["rootfs"]["diff_ids"][i] = "sha256:" + hashlib.sha256(tar).hexdigest()
config_bytes = json.dumps(config).encode()
manifest["config"]["digest"], manifest["config"]["size"] = put(config_bytes), len(config_bytes)
manifest_bytes = json.dumps(manifest).encode()
out_desc = {"mediaType": desc["mediaType"], "digest": put(manifest_bytes), "size": len(manifest_bytes),
            "annotations": {"org.opencontainers.image.ref.name": dest_tag}}
json.dump({"schemaVersion": 2, "manifests": [out_desc]}, open(os.path.join(dest, "index.json"), "w"))
json.dump({"imageLayoutVersion": "1.0.0"}, open(os.path.join(dest, "oci-layout"), "w"))
EOF
}

# Its content store holds every image uncompressed during conversion: root and state go beside the
# build, only the sockets (path length limit) into a short temp dir.
# A source image whose one layer has a file name that is not UTF-8, tagged `names`.
build_names_source() {
  local oci="$1"
  python3 - "$WORK/names.tar" <<'EOF'
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tar:
    for name, data in [(b"etc/os-release", b"ID=names\n"), (b"caf\xe9.txt", b"latin-1 name\n")]:
        info = tarfile.TarInfo(name.decode("latin-1"))
        info.size, info.mtime, info.mode = len(data), 1717171717, 0o644
        tar.addfile(info, io.BytesIO(data))
EOF
  umoci init --layout "$oci"
  umoci new --image "$oci:names"
  umoci config --image "$oci:names" --no-history --os linux --architecture amd64
  umoci raw add-layer --image "$oci:names" --history.created_by "a name that is not UTF-8" "$WORK/names.tar"
}

start_containerd() {
  CTRD_DIR="$(mktemp -d /tmp/ib-ctrd.XXXXXX)"
  cat >"$CTRD_DIR/config.toml" <<EOF
version = 2
root = "$WORK/containerd/root"
state = "$WORK/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$CTRD_DIR/containerd.sock"
[ttrpc]
  address = "$CTRD_DIR/containerd-ttrpc.sock"
[debug]
  address = ""
[metrics]
  address = ""
EOF
  containerd --config "$CTRD_DIR/config.toml" >"$CTRD_DIR/containerd.log" 2>&1 &
  CTRD_PID=$!
  for _ in $(seq 1 100); do
    ctr -a "$CTRD_DIR/containerd.sock" version >/dev/null 2>&1 && return 0
    kill -0 "$CTRD_PID" 2>/dev/null || break
    sleep 0.2
  done
  tail -n 20 "$CTRD_DIR/containerd.log" >&2
  die "containerd did not start"
}

ctr_() { ctr -a "$CTRD_DIR/containerd.sock" -n imagebloat "$@"; }

# convert SOURCE_NAME SOURCE_REF_IN_OCI
convert() {
  local name="$1" src="$2" out="$WORK/out" reg="$IMAGEBLOAT_TEST_REGISTRY"
  local skopeo=(skopeo copy --quiet --insecure-policy --src-tls-verify=false --dest-tls-verify=false)

  log "$name: zstd:chunked with skopeo"
  "${skopeo[@]}" --dest-compress-format zstd:chunked "oci:$src" "oci:$out:$name-zstd-chunked"

  log "$name: eStargz and zstd:chunked with ctr-remote"
  local plain="$reg/lazy-source/$name:plain"
  "${skopeo[@]}" "oci:$src" "docker://$plain"
  # `content fetch` records the image without unpacking it: the realistic image has a layer no
  # snapshotter unpacks (a file written before a whiteout of its own directory).
  ctr_ content fetch --plain-http --platform linux/amd64 "$plain" >/dev/null
  local format flag converted
  for format in estargz zstd-chunked-ctr; do
    case "$format" in
      estargz) flag=--estargz ;;
      zstd-chunked-ctr) flag=--zstdchunked ;;
    esac
    converted="$reg/lazy/$name:$format"
    ctr-remote -a "$CTRD_DIR/containerd.sock" -n imagebloat image convert "$flag" --oci \
      --platform linux/amd64 "$plain" "$converted" >/dev/null
    ctr_ images push --plain-http --platform linux/amd64 "$converted" >/dev/null
    "${skopeo[@]}" "docker://$converted" "oci:$out:$name-$format"
  done
}

build() {
  WORK="$(new_build_dir "$CACHE_ROOT" lazy)"
  local started=$SECONDS

  build_edge_source "$WORK/edge"
  build_names_source "$WORK/names"
  start_containerd
  convert edge "$WORK/edge:edge"
  with_end_of_archive "$REALISTIC_LAYOUT" "$REALISTIC_TAG" "$WORK/debian" debian
  convert debian "$WORK/debian:debian"
  convert names "$WORK/names:names"

  if mv -T "$WORK/out" "$LAYOUT" 2>/dev/null; then
    log "built $LAYOUT in $((SECONDS - started)) s"
  elif [ -f "$LAYOUT/index.json" ]; then
    log "another build finished first; using $LAYOUT"
  else
    die "could not move the layout into $LAYOUT"
  fi
}

main() {
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  local env_file=""
  if [ -f "$LAYOUT/index.json" ]; then
    log "using the cached layout $LAYOUT"
    if "$SCRIPT_DIR/testenv.sh" status >/dev/null 2>&1; then
      env_file="$("$SCRIPT_DIR/testenv.sh" env)"
    fi
  else
    install_all_packages
    if ! "$SCRIPT_DIR/testenv.sh" status >/dev/null 2>&1; then
      # A private one, stopped and removed at exit: never the caller's (or the default) state dir.
      IMAGEBLOAT_TESTENV_DIR="$(mktemp -d /tmp/ib-lazy-env.XXXXXX)"
      export IMAGEBLOAT_TESTENV_DIR
      STARTED_TESTENV=1
      log "starting a test env for the build in $IMAGEBLOAT_TESTENV_DIR"
      "$SCRIPT_DIR/testenv.sh" up >/dev/null
    fi
    env_file="$("$SCRIPT_DIR/testenv.sh" env)"
    # shellcheck disable=SC1090
    source "$env_file"
    [ -n "${IMAGEBLOAT_TEST_REGISTRY:-}" ] || die "IMAGEBLOAT_TEST_REGISTRY is not set in $env_file"
    if [ ! -f "$REALISTIC_LAYOUT/index.json" ]; then
      log "building the realistic image first"
      "$SCRIPT_DIR/realistic-image.sh"
    fi
    [ "$(id -u)" -eq 0 ] || die "running containerd needs root"
    build
  fi

  local lines
  lines="export IMAGEBLOAT_TEST_LAZY_LAYOUT='$LAYOUT'
export IMAGEBLOAT_TEST_LAZY_TAGS='$(tags)'"
  if [ -n "$env_file" ] && [ -z "$STARTED_TESTENV" ]; then
    set_env_lines "$env_file" IMAGEBLOAT_TEST_LAZY_ "$lines"
  fi
  echo "$lines"
}

main "$@"
