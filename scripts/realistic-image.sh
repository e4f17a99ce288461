#!/usr/bin/env bash
# Builds (once) a realistic Debian image as an OCI layout, pushes it to the test registry, and writes
# the expected numbers for it. Needs `scripts/testenv.sh up` first.
#
# The image, tag bookworm-changeset, linux/amd64, built without any container engine
# (debootstrap + umoci), has three layers:
#
#   layer 0  a real Debian root: `debootstrap --variant=minbase bookworm`, inserted with
#            `umoci insert`, trimmed the way Debian's official images are: apt lists removed,
#            no /etc/resolv.conf, a neutral /etc/hostname. It keeps debootstrap's /dev nodes
#            (character devices, symlinks), and /usr/bin/perl with its hard link perl5.36.0.
#   layer 1  a change set made by `umoci unpack` + `umoci repack --refresh-bundle` around a real
#            chroot run of
#              apt-get update && apt-get install -y --no-install-recommends ca-certificates curl
#            with no clean-up (only -o Acquire::Languages=none, as Debian's images configure), so
#            var/lib/apt/lists, var/cache/apt/archives/*.deb and var/cache/apt/*.bin are filled;
#            then in the same step:
#              rm -rf /usr/share/doc/*                     per-entry whiteouts of lower-layer dirs
#              rm -rf /usr/share/locale/{de,fr,es,it,ja}   whiteouts of lower-layer directories
#              sed -i ... /etc/os-release                  a regular file replacing the symlink
#              chmod -R g=u /usr/lib/x86_64-linux-gnu/perl-base
#                                                          every file there shipped again, same bytes
#            plus what dpkg itself rewrites (var/lib/dpkg/status, ld.so.cache, logs, ...).
#            If the chroot apt run fails (no mirror), the same kind of files are put there from
#            the host's apt (lists, `apt-get download`, `dpkg-deb -x`) and the script says so.
#   layer 2  a hand-made tar added with `umoci raw add-layer`, in this tar order:
#              var/cache/apt/                      directory
#              var/cache/apt/.wh..wh..opq          opaque whiteout: hides every lower-layer child of
#                                                  var/cache/apt (the .deb files and *.bin of layer 1)
#              var/cache/apt/archives/, archives/partial/, archives/lock
#                                                  recreated by this layer: visible despite the opaque
#              usr/share/locale/                   directory
#              usr/share/locale/locale.alias       a new file written before the whiteout below in
#                                                  tar order: still visible (a layer's whiteouts act
#                                                  only on the layers below it)
#              usr/share/.wh.locale                whiteout of a directory: its whole lower subtree goes
#              usr/share/info                      a regular file replacing the lower-layer directory
#                                                  usr/share/info and its subtree
#
# Cache: ${XDG_CACHE_HOME:-$HOME/.cache}/imagebloat-testenv/realistic-v$RECIPE_VERSION (an OCI
# layout). Bump RECIPE_VERSION whenever the recipe above changes. The build runs in a temporary
# directory beside it and is renamed into place at the end, so a killed build never leaves a half
# cache.
#
# Every run (cheap): push with skopeo as OCI media types to
#   $IMAGEBLOAT_TEST_REGISTRY/realistic/debian:bookworm-changeset
# and as Docker v2 schema 2 media types to
#   $IMAGEBLOAT_TEST_REGISTRY/realistic/debian:bookworm-changeset-v2s2
# (same layer blobs, so the same numbers), write the expected numbers computed by
# scripts/independent_count.py to $IMAGEBLOAT_TESTENV_DIR/realistic-expected.json, and append to the
# env file:
#   IMAGEBLOAT_TEST_DEBIAN_IMAGE        127.0.0.1:PORT/realistic/debian:bookworm-changeset
#   IMAGEBLOAT_TEST_DEBIAN_IMAGE_V2S2   127.0.0.1:PORT/realistic/debian:bookworm-changeset-v2s2
#   IMAGEBLOAT_TEST_DEBIAN_EXPECTED     the expected-numbers JSON
#   IMAGEBLOAT_TEST_DEBIAN_LAYOUT       LAYOUT_DIR:bookworm-changeset
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RECIPE_VERSION=1
TAG=bookworm-changeset
MIRROR="${IMAGEBLOAT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/imagebloat-testenv"
LAYOUT="$CACHE_ROOT/realistic-v$RECIPE_VERSION"

LAYER0_CREATED_BY="debootstrap --variant=minbase bookworm / $MIRROR && rm -rf /var/lib/apt/lists/* /etc/resolv.conf"
LAYER1_CREATED_BY="/bin/sh -c apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /usr/share/doc/* /usr/share/locale/de /usr/share/locale/fr /usr/share/locale/es /usr/share/locale/it /usr/share/locale/ja && sed -i 's/^PRETTY_NAME=.*/PRETTY_NAME=\"Debian GNU\\/Linux 12 (bookworm, changeset)\"/' /etc/os-release && chmod -R g=u /usr/lib/x86_64-linux-gnu/perl-base"
LAYER2_CREATED_BY="/bin/sh -c rm -rf /var/cache/apt /usr/share/locale /usr/share/info && mkdir -p /var/cache/apt/archives/partial /usr/share/locale && touch /var/cache/apt/archives/lock && printf '# Locale name alias data base.\\nC.UTF-8\\t\\tC.UTF-8\\nPOSIX\\t\\tC\\n' > /usr/share/locale/locale.alias && echo 'Info pages removed; see https://www.debian.org/doc/' > /usr/share/info"

# shellcheck source=scripts/lib/common.sh
source "$SCRIPT_DIR/lib/common.sh"

ROOTFS_MOUNTS=()
unmount_all() {
  local i
  for ((i = ${#ROOTFS_MOUNTS[@]} - 1; i >= 0; i--)); do
    umount "${ROOTFS_MOUNTS[$i]}" 2>/dev/null || umount -l "${ROOTFS_MOUNTS[$i]}" 2>/dev/null || true
  done
  ROOTFS_MOUNTS=()
}

WORK=""
cleanup() {
  unmount_all
  [ -n "$WORK" ] && remove_build_dir "$WORK"
  return 0
}

# The apt part of layer 1, the real way: apt inside the chroot.
apt_in_chroot() {
  local rootfs="$1"
  # Set only to exercise the fallback below.
  [ -z "${IMAGEBLOAT_REALISTIC_SKIP_CHROOT_APT:-}" ] || return 1
  local apt_opts=(-o Acquire::Check-Valid-Until=false -o Acquire::Check-Date=false -o Acquire::Retries=3
    -o Acquire::Languages=none)
  cp -L /etc/resolv.conf "$rootfs/etc/resolv.conf"
  if mount -t proc proc "$rootfs/proc" 2>/dev/null; then
    ROOTFS_MOUNTS+=("$rootfs/proc")
  else
    log "could not mount /proc in the chroot; going on without it"
  fi
  local status=0
  chroot_run "$rootfs" apt-get "${apt_opts[@]}" update >>"$WORK/apt.log" 2>&1 &&
    chroot_run "$rootfs" apt-get "${apt_opts[@]}" install -y --no-install-recommends \
      ca-certificates curl >>"$WORK/apt.log" 2>&1 || status=$?
  unmount_all
  rm -f "$rootfs/etc/resolv.conf"
  return "$status"
}

# The apt part of layer 1 without a chroot: the same kind of files, from the host's apt.
apt_fallback() {
  local rootfs="$1" deb
  log "chroot apt failed (last lines of its log below); copying apt lists and .deb files from the host instead"
  tail -n 15 "$WORK/apt.log" >&2 2>/dev/null || true
  mkdir -p "$rootfs/var/lib/apt/lists/partial" "$rootfs/var/cache/apt/archives/partial"
  find /var/lib/apt/lists -maxdepth 1 -type f ! -name lock -exec cp -p {} "$rootfs/var/lib/apt/lists/" \;
  (cd "$rootfs/var/cache/apt/archives" && apt-get download ca-certificates curl libcurl4 openssl) \
    >>"$WORK/apt.log" 2>&1 || die "the fallback could not download packages either"
  for deb in "$rootfs"/var/cache/apt/archives/*.deb; do
    dpkg-deb -x "$deb" "$rootfs"
  done
}

build() {
  WORK="$(new_build_dir "$CACHE_ROOT" realistic)"
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  local started=$SECONDS
  local oci="$WORK/oci" rootfs="$WORK/rootfs" bundle="$WORK/bundle"

  # ---- layer 0: debootstrap --------------------------------------------------------------------
  log "debootstrap --variant=minbase bookworm (about 30 s)"
  if ! debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
    tail -n 30 "$WORK/debootstrap.log" >&2
    die "debootstrap failed"
  fi
  has_mounts_below "$rootfs" && die "debootstrap left mounts below $rootfs"
  # Trim it the way Debian's official images are.
  find "$rootfs/var/lib/apt/lists" -mindepth 1 -maxdepth 1 ! -name partial -exec rm -rf {} +
  rm -f "$rootfs/var/cache/apt/"*.bin "$rootfs/etc/resolv.conf"
  echo localhost >"$rootfs/etc/hostname"

  umoci init --layout "$oci"
  umoci new --image "$oci:$TAG"
  umoci config --image "$oci:$TAG" --no-history --os linux --architecture amd64 \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.cmd bash
  log "layer 0: umoci insert of the root filesystem"
  umoci insert --image "$oci:$TAG" --history.created_by "$LAYER0_CREATED_BY" "$rootfs" /
  rm -rf "$rootfs"

  # ---- layer 1: a change set -------------------------------------------------------------------
  log "layer 1: umoci unpack, apt in a chroot, deletions, rewrites"
  umoci unpack --image "$oci:$TAG" "$bundle" >/dev/null
  local r="$bundle/rootfs"
  if ! apt_in_chroot "$r"; then
    apt_fallback "$r"
  fi
  has_mounts_below "$r" && die "mounts remain below $r"
  ls "$r"/var/cache/apt/archives/*.deb >/dev/null 2>&1 || die "no .deb files in var/cache/apt/archives"
  rm -rf "$r"/usr/share/doc/*
  rm -rf "$r"/usr/share/locale/{de,fr,es,it,ja}
  sed -i 's/^PRETTY_NAME=.*/PRETTY_NAME="Debian GNU\/Linux 12 (bookworm, changeset)"/' "$r/etc/os-release"
  chmod -R g=u "$r/usr/lib/x86_64-linux-gnu/perl-base"
  umoci repack --image "$oci:$TAG" --refresh-bundle --history.created_by "$LAYER1_CREATED_BY" "$bundle"
  rm -rf "$bundle"

  # ---- layer 2: hand-made tar ------------------------------------------------------------------
  log "layer 2: opaque whiteout, directory whiteout, file replacing a directory"
  python3 - "$WORK/layer2.tar" <<'EOF'
import io, sys, tarfile
out = sys.argv[1]
alias = b"# Locale name alias data base.\nC.UTF-8\t\tC.UTF-8\nPOSIX\t\tC\n"
MTIME = 1717171717
def entry(tar, name, kind, data=b"", mode=0o644):
    info = tarfile.TarInfo(name)
    info.mtime = MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode = mode
    if kind == "dir":
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
    entry(tar, "var/cache/apt/", "dir", mode=0o755)
    entry(tar, "var/cache/apt/.wh..wh..opq", "file")
    entry(tar, "var/cache/apt/archives/", "dir", mode=0o755)
    entry(tar, "var/cache/apt/archives/partial/", "dir", mode=0o700)
    entry(tar, "var/cache/apt/archives/lock", "file", mode=0o640)
    entry(tar, "usr/share/locale/", "dir", mode=0o755)
    entry(tar, "usr/share/locale/locale.alias", "file", alias)
    entry(tar, "usr/share/.wh.locale", "file")
    entry(tar, "usr/share/info", "file", b"Info pages removed; see https://www.debian.org/doc/\n")
EOF
  umoci raw add-layer --image "$oci:$TAG" --history.created_by "$LAYER2_CREATED_BY" "$WORK/layer2.tar"
  umoci gc --layout "$oci"

  # ---- into place ------------------------------------------------------------------------------
  if mv -T "$oci" "$LAYOUT" 2>/dev/null; then
    log "built $LAYOUT in $((SECONDS - started)) s"
  elif [ -f "$LAYOUT/index.json" ]; then
    log "another build finished first; using $LAYOUT"
  else
    die "could not move the layout into $LAYOUT"
  fi
  cleanup
  trap - EXIT INT TERM
}

main() {
  local env_file
  env_file="$("$SCRIPT_DIR/testenv.sh" env)" || die "the test environment is not up: run scripts/testenv.sh up"
  # shellcheck disable=SC1090
  source "$env_file"
  [ -n "${IMAGEBLOAT_TEST_REGISTRY:-}" ] || die "IMAGEBLOAT_TEST_REGISTRY is not set in $env_file"

  "$SCRIPT_DIR/testenv.sh" packages
  if [ -f "$LAYOUT/index.json" ]; then
    log "using the cached layout $LAYOUT"
  else
    [ "$(id -u)" -eq 0 ] || die "building the realistic image needs root (debootstrap, chroot)"
    build
  fi

  local ref="$IMAGEBLOAT_TEST_REGISTRY/realistic/debian:$TAG"
  local ref_v2s2="$IMAGEBLOAT_TEST_REGISTRY/realistic/debian:$TAG-v2s2"
  log "pushing $ref and $ref_v2s2"
  skopeo copy --quiet --insecure-policy --dest-tls-verify=false \
    "oci:$LAYOUT:$TAG" "docker://$ref"
  skopeo copy --quiet --insecure-policy --dest-tls-verify=false --format v2s2 \
    "oci:$LAYOUT:$TAG" "docker://$ref_v2s2"

  local expected="$IMAGEBLOAT_TESTENV_DIR/realistic-expected.json"
  python3 "$SCRIPT_DIR/independent_count.py" "$LAYOUT:$TAG" >"$expected.tmp"
  mv "$expected.tmp" "$expected"

  # Replace earlier IMAGEBLOAT_TEST_DEBIAN_* lines, keep the rest of the env file.
  set_env_lines "$env_file" IMAGEBLOAT_TEST_DEBIAN_ "export IMAGEBLOAT_TEST_DEBIAN_IMAGE='$ref'
export IMAGEBLOAT_TEST_DEBIAN_IMAGE_V2S2='$ref_v2s2'
export IMAGEBLOAT_TEST_DEBIAN_EXPECTED='$expected'
export IMAGEBLOAT_TEST_DEBIAN_LAYOUT='$LAYOUT:$TAG'"
  log "expected numbers: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(" ".join("%s=%s" % (k, d[k]) for k in ("pullBytes", "sizeBytes", "finalBytes", "wastedBytes", "efficiency")))' "$expected")"
}

main "$@"
