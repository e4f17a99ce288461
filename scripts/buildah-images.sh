#!/usr/bin/env bash
# Builds (once) pairs of images from Dockerfiles with buildah, each classic image-size mistake next to
# its fixed twin, for the test that checks the advice saves what it says (tests/advice_rebuild.rs).
# Needs `scripts/testenv.sh up` first.
#
# Every image is built by `buildah bud --layers --isolation chroot --storage-driver vfs` (no container
# engine) FROM one local base: `debootstrap --variant=minbase bookworm`, trimmed the way Debian's slim
# images are (documentation excluded through /etc/dpkg/dpkg.cfg.d, apt lists and caches removed), added
# with `buildah from scratch` + `buildah add` + `buildah commit`. Packages install offline: the apt lists
# and the .deb files are downloaded once inside the debootstrap chroot (`apt-get update` +
# `apt-get install --download-only`, so they match) and bind-mounted into the RUN steps that install
# (`RUN --mount=type=bind`), which copy them where `apt-get update` and a download would have put them.
#
# The pairs (tag NAME-mistake and NAME-fixed in the layout):
#   deleted-later   a 12 MB download-like file made in one RUN and deleted in a later RUN
#                   / made and deleted in the same RUN
#   apt-caches      `apt-get update && apt-get install make` leaving apt's lists and archives
#                   / the same install ending with `apt-get clean && rm -rf /var/lib/apt/lists/*`
#   build-tools     `apt-get install make cpp binutils`, a small program built with them (make, cpp,
#                   as, ld) and the tools kept / the same build in a `FROM … AS build` stage, only the
#                   program copied into the runtime stage
#   rewritten       a 6 MB file written in one RUN, made private (`chmod 600`) in a later RUN
#                   / written and made private in the same RUN
#   tree-deleted    a source tree COPYed whole, its tests/ subtree (about 8 MB) deleted in a later RUN
#                   / only the part the image needs copied
#
# Cache: ${XDG_CACHE_HOME:-$HOME/.cache}/imagebloat-testenv/buildah-pairs-v$RECIPE_VERSION:
#   oci/      the OCI layout with the ten images
#   inputs/   the base root filesystem tar, the apt lists and .deb files, the build context
# Bump RECIPE_VERSION whenever the recipe changes. The build runs in a temporary directory beside it
# and is renamed into place at the end, so a killed build never leaves a half cache.
#
# Every run (cheap): push each image with skopeo to
#   $IMAGEBLOAT_TEST_REGISTRY/pairs/NAME:mistake and …/pairs/NAME:fixed
# and append to the env file:
#   IMAGEBLOAT_TEST_PAIRS         127.0.0.1:PORT/pairs (the repository prefix)
#   IMAGEBLOAT_TEST_PAIRS_NAMES   the pair names, space-separated
#   IMAGEBLOAT_TEST_PAIRS_LAYOUT  the layout directory (tags NAME-mistake, NAME-fixed)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RECIPE_VERSION=1
MIRROR="${IMAGEBLOAT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/imagebloat-testenv"
CACHE="$CACHE_ROOT/buildah-pairs-v$RECIPE_VERSION"
PAIRS=(deleted-later apt-caches build-tools rewritten tree-deleted)

# shellcheck source=scripts/lib/common.sh
source "$SCRIPT_DIR/lib/common.sh"

WORK=""
PROC_MOUNT=""
cleanup() {
  if [ -n "$PROC_MOUNT" ]; then
    umount "$PROC_MOUNT" 2>/dev/null || umount -l "$PROC_MOUNT" 2>/dev/null || true
    PROC_MOUNT=""
  fi
  [ -n "$WORK" ] && remove_build_dir "$WORK"
  return 0
}

# The base root filesystem, and the apt lists and .deb files the pairs install, into $WORK/inputs.
make_inputs() {
  local inputs="$1" rootfs="$WORK/rootfs"
  log "debootstrap --variant=minbase bookworm (about a minute)"
  if ! debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
    tail -n 30 "$WORK/debootstrap.log" >&2
    die "debootstrap failed"
  fi
  has_mounts_below "$rootfs" && die "debootstrap left mounts below $rootfs"

  # Slim, the way Debian's slim images are: no documentation now or from later installs.
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
EOF
  find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/groff/* \
    "$rootfs"/usr/share/lintian/*
  # debootstrap's logs and caches go, as debuerreotype's fixup removes them from Debian's images.
  rm -f "$rootfs"/var/log/dpkg.log "$rootfs"/var/log/alternatives.log "$rootfs"/var/log/bootstrap.log \
    "$rootfs"/var/log/apt/*.log "$rootfs"/var/log/apt/eipp.log.xz "$rootfs"/var/cache/ldconfig/aux-cache

  # The packages, downloaded where apt keeps them, then moved out of the base.
  local apt_opts=(-o Acquire::Check-Valid-Until=false -o Acquire::Retries=3 -o Acquire::Languages=none)
  cp -L /etc/resolv.conf "$rootfs/etc/resolv.conf"
  mount -t proc proc "$rootfs/proc" && PROC_MOUNT="$rootfs/proc"
  chroot_run "$rootfs" apt-get "${apt_opts[@]}" update >"$WORK/apt.log" 2>&1 ||
    { tail -n 20 "$WORK/apt.log" >&2; die "apt-get update in the chroot failed"; }
  chroot_run "$rootfs" apt-get "${apt_opts[@]}" install -y --no-install-recommends --download-only \
    make cpp binutils >>"$WORK/apt.log" 2>&1 ||
    { tail -n 20 "$WORK/apt.log" >&2; die "apt-get install --download-only in the chroot failed"; }
  umount "$PROC_MOUNT"
  PROC_MOUNT=""
  mkdir -p "$inputs/lists" "$inputs/debs"
  find "$rootfs/var/lib/apt/lists" -maxdepth 1 -type f ! -name lock -exec mv {} "$inputs/lists/" \;
  mv "$rootfs"/var/cache/apt/archives/*.deb "$inputs/debs/"
  rm -rf "$rootfs/var/lib/apt/lists/partial"/* "$rootfs"/var/cache/apt/*.bin "$rootfs/etc/resolv.conf"
  echo localhost >"$rootfs/etc/hostname"
  tar -C "$rootfs" --numeric-owner -cf "$inputs/rootfs.tar" .
  remove_build_dir "$rootfs"
}

# The build context and the Dockerfiles, into $1.
make_context() {
  local ctx="$1" inputs="$2"
  mkdir -p "$ctx/hello" "$ctx/tree/app" "$ctx/tree/tests"
  mkdir -p "$ctx/apt/lists" "$ctx/apt/debs"
  cp "$inputs/lists"/* "$ctx/apt/lists/"
  cp "$inputs/debs"/*.deb "$ctx/apt/debs/"

  # A program built with make, cpp, as and ld only (no compiler, no C library).
  cat >"$ctx/hello/hello.S" <<'EOF'
#define SYS_write 1
#define SYS_exit 60
	.globl _start
	.text
_start:
	mov $SYS_write, %eax
	mov $1, %edi
	lea msg(%rip), %rsi
	mov $len, %edx
	syscall
	mov $SYS_exit, %eax
	xor %edi, %edi
	syscall
	.data
msg:	.ascii "hello from a build stage\n"
	len = . - msg
EOF
  printf 'hello: hello.o\n\tld -o $@ $<\nhello.o: hello.S\n\tcpp hello.S > hello.s\n\tas -o $@ hello.s\n' \
    >"$ctx/hello/Makefile"

  # A source tree: the application, and a tests/ subtree the image does not need (8 MB).
  python3 - "$ctx/tree" <<'EOF'
import os, random, sys
root = sys.argv[1]
rng = random.Random(12)
with open(os.path.join(root, "app", "main.sh"), "w") as f:
    f.write("#!/bin/sh\necho app\n")
for i in range(64):
    d = os.path.join(root, "tests", "case%02d" % (i // 8))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "fixture%02d.bin" % i), "wb") as f:
        f.write(rng.randbytes(125_000))
EOF

  local install_from_ctx='cp /ctx/apt/lists/* /var/lib/apt/lists/ && cp /ctx/apt/debs/*.deb /var/cache/apt/archives/'
  local mount='--mount=type=bind,source=.,target=/ctx'

  cat >"$ctx/deleted-later-mistake" <<'EOF'
FROM localhost/pairs-base
RUN head -c 12000000 /dev/urandom > /opt/download.tar
RUN rm /opt/download.tar
RUN echo ok > /opt/done
EOF
  cat >"$ctx/deleted-later-fixed" <<'EOF'
FROM localhost/pairs-base
RUN head -c 12000000 /dev/urandom > /opt/download.tar && rm /opt/download.tar
RUN echo ok > /opt/done
EOF
  cat >"$ctx/apt-caches-mistake" <<EOF
FROM localhost/pairs-base
RUN $mount $install_from_ctx && apt-get install -y --no-install-recommends make
EOF
  cat >"$ctx/apt-caches-fixed" <<EOF
FROM localhost/pairs-base
RUN $mount $install_from_ctx && apt-get install -y --no-install-recommends make && apt-get clean && rm -rf /var/lib/apt/lists/*
EOF
  cat >"$ctx/build-tools-mistake" <<EOF
FROM localhost/pairs-base
RUN $mount $install_from_ctx && apt-get install -y --no-install-recommends make cpp binutils && apt-get clean && rm -rf /var/lib/apt/lists/* && cp -r /ctx/hello /tmp/hello && make -C /tmp/hello && install /tmp/hello/hello /usr/local/bin/hello && rm -rf /tmp/hello
CMD ["/usr/local/bin/hello"]
EOF
  cat >"$ctx/build-tools-fixed" <<EOF
FROM localhost/pairs-base AS build
RUN $mount $install_from_ctx && apt-get install -y --no-install-recommends make cpp binutils && apt-get clean && rm -rf /var/lib/apt/lists/* && cp -r /ctx/hello /tmp/hello && make -C /tmp/hello && install /tmp/hello/hello /usr/local/bin/hello && rm -rf /tmp/hello

FROM localhost/pairs-base
COPY --from=build /usr/local/bin/hello /usr/local/bin/hello
CMD ["/usr/local/bin/hello"]
EOF
  cat >"$ctx/rewritten-mistake" <<'EOF'
FROM localhost/pairs-base
RUN head -c 6000000 /dev/urandom > /opt/model.bin
RUN chmod 600 /opt/model.bin
EOF
  cat >"$ctx/rewritten-fixed" <<'EOF'
FROM localhost/pairs-base
RUN head -c 6000000 /dev/urandom > /opt/model.bin && chmod 600 /opt/model.bin
EOF
  cat >"$ctx/tree-deleted-mistake" <<'EOF'
FROM localhost/pairs-base
COPY tree /opt/tree
RUN rm -rf /opt/tree/tests
EOF
  cat >"$ctx/tree-deleted-fixed" <<'EOF'
FROM localhost/pairs-base
COPY tree/app /opt/tree/app
EOF
}

build() {
  WORK="$(new_build_dir "$CACHE_ROOT" buildah-pairs)"
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  local started=$SECONDS
  local out="$WORK/out" inputs="$WORK/out/inputs" ctx="$WORK/out/inputs/context"
  mkdir -p "$inputs"
  make_inputs "$inputs"
  make_context "$ctx" "$inputs"

  local store=(--storage-driver vfs --root "$WORK/storage" --runroot "$WORK/runroot")
  log "the base image: buildah from scratch + add + commit"
  local ctr
  ctr="$(buildah "${store[@]}" from scratch)"
  buildah "${store[@]}" add "$ctr" "$inputs/rootfs.tar" / >/dev/null
  buildah "${store[@]}" config --os linux --arch amd64 \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd bash \
    --created-by "debootstrap --variant=minbase bookworm, documentation excluded" "$ctr"
  buildah "${store[@]}" commit --quiet "$ctr" localhost/pairs-base >/dev/null
  buildah "${store[@]}" rm "$ctr" >/dev/null

  local name side
  for name in "${PAIRS[@]}"; do
    for side in mistake fixed; do
      log "buildah bud $name-$side"
      if ! buildah "${store[@]}" bud --layers --isolation chroot --pull=never \
        -t "localhost/pairs-$name:$side" -f "$ctx/$name-$side" "$ctx" >"$WORK/bud-$name-$side.log" 2>&1; then
        tail -n 30 "$WORK/bud-$name-$side.log" >&2
        die "buildah bud $name-$side failed"
      fi
      buildah "${store[@]}" push --quiet "localhost/pairs-$name:$side" "oci:$out/oci:$name-$side" >/dev/null
    done
  done

  if mv -T "$out" "$CACHE" 2>/dev/null; then
    log "built $CACHE in $((SECONDS - started)) s"
  elif [ -f "$CACHE/oci/index.json" ]; then
    log "another build finished first; using $CACHE"
  else
    die "could not move the build into $CACHE"
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
  if [ -f "$CACHE/oci/index.json" ]; then
    log "using the cached pairs $CACHE"
  else
    [ "$(id -u)" -eq 0 ] || die "building the pairs needs root (debootstrap, chroot, buildah)"
    build
  fi

  local prefix="$IMAGEBLOAT_TEST_REGISTRY/pairs" name side
  for name in "${PAIRS[@]}"; do
    for side in mistake fixed; do
      skopeo copy --quiet --insecure-policy --dest-tls-verify=false \
        "oci:$CACHE/oci:$name-$side" "docker://$prefix/$name:$side"
    done
  done
  log "pushed ${#PAIRS[@]} pairs to $prefix"

  set_env_lines "$env_file" IMAGEBLOAT_TEST_PAIRS "export IMAGEBLOAT_TEST_PAIRS='$prefix'
export IMAGEBLOAT_TEST_PAIRS_NAMES='${PAIRS[*]}'
export IMAGEBLOAT_TEST_PAIRS_LAYOUT='$CACHE/oci'"
}

main "$@"
