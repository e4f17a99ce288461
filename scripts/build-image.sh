#!/usr/bin/env bash
# Builds the imagebloat image without a container engine and pushes it to a registry.
#
#   scripts/build-image.sh [options] DEST
#
#   DEST                 REGISTRY[/REPOSITORY][:TAG]; repository defaults to imagebloat/imagebloat,
#                        tag to the crate version (Cargo.toml), e.g. 127.0.0.1:5000 ->
#                        127.0.0.1:5000/imagebloat/imagebloat:0.1.0
#   --insecure           push over plain HTTP / without TLS verification (a test registry)
#   --cert-dir DIR       CA certificates for the registry (skopeo --dest-cert-dir)
#   --creds USER:PASS    registry credentials (skopeo --dest-creds)
#   --binary FILE        the binary to package (default target/release/imagebloat, built with
#                        `cargo build --release` when missing)
#   --layout DIR         keep the OCI image layout there (default: a temporary directory)
#
# The release path is the Dockerfile: a static musl binary `FROM scratch`. This script is its
# engine-free equivalent for machines with neither Docker nor a musl toolchain (the test machines,
# which cannot download one): it packages the normal glibc release binary, so the layer also holds
# the shared libraries it links (resolved with ldd, the exact files copied to the paths the dynamic
# loader looks in) and the loader itself (the binary's PT_INTERP). Otherwise the image is the
# Dockerfile's: one layer with /imagebloat, /etc/ssl/certs/ca-certificates.crt, /etc/passwd and
# /etc/group (root and nonroot 65532) and nothing else; user 65532:65532, entrypoint
# ["/imagebloat"], cmd ["run"], SSL_CERT_FILE, and the org.opencontainers.image.* labels (also as
# manifest annotations). Like the Dockerfile, the binary ships without debug info (symbols kept).
#
# Steps: stage the root filesystem (file modes set, owner root, every mtime at the commit time, so
# the same commit and binary give the same layer), check that the binary runs in it as 65532
# (chroot), tar it (one layer), `umoci init` / `umoci new` / `umoci raw add-layer` / `umoci config`
# (why not `umoci insert`: see the layer step below), then `skopeo copy oci:... docker://DEST`.
# Prints the pushed reference and digest.
# Needs root (chroot, root-owned files): Debian's umoci, skopeo and binutils are installed if missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/lib/common.sh
source scripts/lib/common.sh

dest="" insecure="" cert_dir="" creds="" binary="" layout=""
while [ $# -gt 0 ]; do
  case "$1" in
    --insecure) insecure=1 ;;
    --cert-dir) cert_dir="${2:?--cert-dir DIR}"; shift ;;
    --creds) creds="${2:?--creds USER:PASS}"; shift ;;
    --binary) binary="${2:?--binary FILE}"; shift ;;
    --layout) layout="${2:?--layout DIR}"; shift ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    -*) die "unknown option $1" ;;
    *)
      [ -z "$dest" ] || die "one DEST only"
      dest="$1"
      ;;
  esac
  shift
done
[ -n "$dest" ] || die "usage: $0 [--insecure] [--cert-dir DIR] [--creds USER:PASS] [--binary FILE] [--layout DIR] REGISTRY[/REPO][:TAG]"
[ "$(id -u)" -eq 0 ] || die "needs root (chroot check, root-owned files in the layer)"

PACKAGES=(umoci:umoci skopeo:skopeo binutils:readelf binutils:strip)
install_packages

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
[ -n "$version" ] || die "no version in Cargo.toml"
# DEST: REGISTRY[/REPO][:TAG]; the registry is the part before the first slash.
case "$dest" in
  */*) registry="${dest%%/*}" rest="${dest#*/}" ;;
  *) registry="$dest" rest="" ;;
esac
repo="${rest%%:*}"
tag=""
[ "$repo" != "$rest" ] && tag="${rest#*:}"
# A bare registry may carry a port: 127.0.0.1:5000 is a registry, not registry:tag.
[ -n "$repo" ] || repo=imagebloat/imagebloat
tag="${tag:-$version}"
ref="$registry/$repo:$tag"

if [ -z "$binary" ]; then
  binary=target/release/imagebloat
  if [ ! -x "$binary" ]; then
    log "no $binary: cargo build --release"
    cargo build --release --locked --bin imagebloat
  fi
fi
[ -x "$binary" ] || die "$binary is not an executable"

revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
created="$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)"
case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) arch="$(uname -m)" ;;
esac

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root/etc/ssl/certs"

# The binary, without debug info (as CARGO_PROFILE_RELEASE_STRIP=debuginfo in the Dockerfile).
strip --strip-debug -o "$root/imagebloat" "$binary"
chmod 0755 "$root/imagebloat"

# Its shared libraries, at the paths ldd resolves them to, and the loader at the binary's PT_INTERP.
interp="$(readelf -l "$binary" | sed -n 's/.*\[Requesting program interpreter: \(.*\)\]/\1/p')"
libs=()
while read -r line; do
  case "$line" in
    *"=> not found"*) die "ldd: $line" ;;
    *"=> /"*) libs+=("$(echo "$line" | sed 's/.*=> \(\/[^ ]*\).*/\1/')") ;;
    /*) libs+=("${line%% *}") ;; # the loader, as ldd prints it
  esac
done < <(ldd "$binary" 2>/dev/null || true)
[ -n "$interp" ] && libs+=("$interp")
mapfile -t libs < <(printf '%s\n' ${libs[@]+"${libs[@]}"} | sed '/^$/d' | sort -u)
for lib in ${libs[@]+"${libs[@]}"}; do
  mkdir -p "$root$(dirname "$lib")"
  cp --dereference "$lib" "$root$lib" # the file itself, not a symlink into the host
  chmod 0755 "$root$lib"
done
if [ -n "$interp" ]; then
  log "dynamic binary: loader $interp; copied $(printf '%s ' ${libs[@]+"${libs[@]}"})"
else
  log "static binary: no shared libraries"
fi

install -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
chmod 0644 "$root/etc/passwd" "$root/etc/group"
find "$root" -type d -exec chmod 0755 {} +
chown -R 0:0 "$root"
find "$root" -exec touch -h -d "@$epoch" {} +

# The root filesystem must be complete: the binary runs in it, as the image's user.
chroot --userspec=65532:65532 "$root" /imagebloat --version >/dev/null ||
  die "/imagebloat does not run in the staged root filesystem (missing library?)"
log "root filesystem: $(find "$root" -type f | wc -l) files, $(du -sh --apparent-size "$root" | cut -f1): $(cd "$root" && find . -type f | sed 's/^\.//' | sort | tr '\n' ' ')"

# The layer: a plain tar made here, added verbatim (umoci compresses it). Not `umoci insert
# ROOTFS /`: Debian's umoci 0.4.7 drops the end of the tar stream it writes (the last file's
# padding and the end-of-archive blocks), so a layer whose last file is not a multiple of 512 bytes
# comes out truncated, and strict readers, imagebloat among them, refuse it ("unexpected EOF").
# Entries: sorted, root-owned with numeric ids, one mtime, ustar headers (no pax records), no "./"
# prefix, blocking factor 1 (the end-of-archive blocks and no record padding).
(cd "$root" && find . -mindepth 1 -maxdepth 1 -printf '%P\n' | LC_ALL=C sort) >"$work/top-level"
tar --create --file "$work/layer.tar" --directory "$root" --format=ustar --blocking-factor=1 \
  --sort=name --numeric-owner --owner=0 --group=0 --mtime="@$epoch" --files-from "$work/top-level"
python3 - "$work/layer.tar" <<'PY' || die "the layer tar is not complete"
import sys, tarfile
with tarfile.open(sys.argv[1]) as t:  # reads every header and every block of file content
    for m in t:
        if m.isfile():
            t.extractfile(m).read()
PY

layout="${layout:-$work/oci}"
rm -rf "$layout"
umoci init --layout "$layout"
umoci new --image "$layout:$tag"
umoci raw add-layer --image "$layout:$tag" --history.created "$created" \
  --history.created_by "scripts/build-image.sh: /imagebloat, its shared libraries and loader, CA certificates, passwd/group (65532)" \
  "$work/layer.tar"
labels=(
  "org.opencontainers.image.title=imagebloat"
  "org.opencontainers.image.description=How much of every container image is dead weight: Kubernetes operator and CLI"
  "org.opencontainers.image.url=https://github.com/imagebloat/imagebloat"
  "org.opencontainers.image.source=https://github.com/imagebloat/imagebloat"
  "org.opencontainers.image.licenses=Apache-2.0"
  "org.opencontainers.image.version=$version"
  "org.opencontainers.image.revision=$revision"
  "org.opencontainers.image.created=$created"
)
config_args=(
  --config.user 65532:65532
  --config.entrypoint /imagebloat
  --config.cmd run
  --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
  --os linux --architecture "$arch" --created "$created" --author "imagebloat"
  --history.created "$created" --history.created_by "scripts/build-image.sh: user, entrypoint, cmd, labels"
)
for l in "${labels[@]}"; do
  config_args+=(--config.label "$l" --manifest.annotation "$l")
done
umoci config --image "$layout:$tag" "${config_args[@]}"
umoci gc --layout "$layout"
# The image as a runtime would see it: unpacked from the layout, run as its user.
umoci unpack --image "$layout:$tag" "$work/bundle" >/dev/null
chroot --userspec=65532:65532 "$work/bundle/rootfs" /imagebloat --version >/dev/null ||
  die "the unpacked image does not run /imagebloat"

copy_args=()
if [ -n "$insecure" ]; then copy_args+=(--dest-tls-verify=false); fi
if [ -n "$cert_dir" ]; then copy_args+=(--dest-cert-dir "$cert_dir"); fi
if [ -n "$creds" ]; then copy_args+=(--dest-creds "$creds"); fi
skopeo copy --quiet ${copy_args[@]+"${copy_args[@]}"} --digestfile "$work/digest" "oci:$layout:$tag" "docker://$ref"
log "pushed $ref@$(cat "$work/digest")"
echo "$ref@$(cat "$work/digest")"
