# syntax=docker/dockerfile:1
#
# The imagebloat image, release path: a static musl binary on an empty base.
#
#   docker build -t ghcr.io/imagebloat/imagebloat:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t ghcr.io/imagebloat/imagebloat:0.1.0 --push .
#
# The runtime image is one layer, `FROM scratch`: /imagebloat (static, musl), the CA bundle
# (/etc/ssl/certs/ca-certificates.crt) and /etc/passwd + /etc/group naming the non-root user
# 65532 (nonroot) it runs as. No shell, no package manager, no libc: nothing else to patch or to
# scan. The Helm chart runs it with restricted Pod Security (runAsUser 65532, read-only root).
#
# scripts/build-image.sh builds the same image without a container engine (umoci + skopeo), which
# is what the test machines (no Docker, no musl toolchain download) use: there the binary is the
# glibc release build, so the layer also carries the exact shared libraries `ldd` names and the
# dynamic loader. Everything else (one layer, paths, user, entrypoint, cmd, labels) is the same.
# Keep the two in step.

ARG RUST_VERSION=1.95
ARG ALPINE_VERSION=3.22

# --- build: Alpine's Rust targets musl natively, and links statically (crt-static) by default ----
FROM docker.io/library/rust:${RUST_VERSION}-alpine${ALPINE_VERSION} AS build
# C toolchain for the crates with C parts (aws-lc-sys for TLS, zstd-sys), CA certificates to ship.
RUN apk add --no-cache build-base cmake perl ca-certificates
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# The release profile keeps line tables for local profiling; the image ships the binary without
# debug info (its symbols stay, so a panic's backtrace still names functions).
ENV CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_STRIP=debuginfo
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin imagebloat \
 && mkdir -p /rootfs/etc/ssl/certs \
 && install -m 0755 target/release/imagebloat /rootfs/imagebloat \
 # A static binary: no program interpreter, no shared library.
 && ! readelf -l /rootfs/imagebloat | grep -q 'program interpreter' \
 && /rootfs/imagebloat --version
RUN install -m 0644 /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ca-certificates.crt \
 && printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' >/rootfs/etc/passwd \
 && printf 'root:x:0:\nnonroot:x:65532:\n' >/rootfs/etc/group \
 && chmod 0644 /rootfs/etc/passwd /rootfs/etc/group

# --- runtime: one layer ----------------------------------------------------------------------------
FROM scratch
COPY --from=build /rootfs/ /
USER 65532:65532
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
ENTRYPOINT ["/imagebloat"]
CMD ["run"]
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="imagebloat" \
      org.opencontainers.image.description="How much of every container image is dead weight: Kubernetes operator and CLI" \
      org.opencontainers.image.url="https://github.com/imagebloat/imagebloat" \
      org.opencontainers.image.source="https://github.com/imagebloat/imagebloat" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
