#!/usr/bin/env python3
"""Rewrites a `docker save` archive (as skopeo/podman write it: uncompressed layer tars, manifest.json)
into the two docker-save shapes no Debian package writes, for scripts/producer-images.sh:

  docker-archives.py SOURCE.tar GZIP_OUT.tar DOCKER25_OUT.tar ZSTD_OUT.tar

GZIP_OUT    what go-containerregistry's tarball writer (kaniko --tarPath, crane export) writes: the
            config as member `sha256:HEX`, each layer gzip-compressed as `HEX.tar.gz` (HEX of the
            compressed bytes), manifest.json naming them; the config (its diff_ids: digests of the
            uncompressed tars) unchanged. `docker load` accepts it.
ZSTD_OUT    the same as GZIP_OUT with zstd-compressed layer files (`HEX.tar.zst`, by the `zstd`
            command): no packaged tool writes it, but `docker load` accepts it (it detects the
            compression from the bytes), so a scanner must too.
DOCKER25    what `docker save` writes since Docker 25: an OCI image layout (oci-layout, index.json,
            the manifest, config and uncompressed layers under blobs/sha256/) plus manifest.json and
            repositories whose Config and Layers point at the same blobs.
"""

import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def read_source(path):
    with tarfile.open(path, "r:") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isreg()}
    entries = json.loads(files["manifest.json"])
    if len(entries) != 1:
        raise SystemExit("%s: expected one image in manifest.json, found %d" % (path, len(entries)))
    entry = entries[0]
    config = files[entry["Config"]]
    layers = [files[name] for name in entry["Layers"]]
    return entry.get("RepoTags") or [], config, layers


def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def add_dir(tar, name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = 0
    tar.addfile(info)


def gzip_compress(layer):
    return gzip.compress(layer, compresslevel=6, mtime=0)


def zstd_compress(layer):
    return subprocess.run(["zstd", "-q", "-c", "-3"], input=layer, stdout=subprocess.PIPE, check=True).stdout


def write_compressed(path, tags, config, layers, compress, suffix):
    config_name = "sha256:" + sha256(config)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        add(tar, config_name, config)
        names = []
        for layer in layers:
            compressed = compress(layer)
            name = sha256(compressed) + suffix
            add(tar, name, compressed)
            names.append(name)
        manifest = [{"Config": config_name, "RepoTags": tags, "Layers": names}]
        add(tar, "manifest.json", json.dumps(manifest).encode())


def write_docker25(path, tags, config, layers):
    blobs = {}

    def blob(data):
        digest = sha256(data)
        blobs[digest] = data
        return digest

    config_hex = blob(config)
    layer_hex = [blob(layer) for layer in layers]
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": "sha256:" + config_hex,
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": "sha256:" + h,
                "size": len(layer),
            }
            for h, layer in zip(layer_hex, layers)
        ],
    }
    manifest_bytes = json.dumps(manifest).encode()
    manifest_hex = blob(manifest_bytes)
    annotations = {}
    if tags:
        annotations = {
            "io.containerd.image.name": tags[0],
            "org.opencontainers.image.ref.name": tags[0].rsplit(":", 1)[-1],
        }
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": "sha256:" + manifest_hex,
                "size": len(manifest_bytes),
                "annotations": annotations,
            }
        ],
    }
    saved = [
        {
            "Config": "blobs/sha256/" + config_hex,
            "RepoTags": tags,
            "Layers": ["blobs/sha256/" + h for h in layer_hex],
        }
    ]
    repositories = {}
    for tag in tags:
        repo, name = tag.rsplit(":", 1)
        repositories.setdefault(repo, {})[name] = layer_hex[-1]
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        add_dir(tar, "blobs/")
        add_dir(tar, "blobs/sha256/")
        for digest, data in sorted(blobs.items()):
            add(tar, "blobs/sha256/" + digest, data)
        add(tar, "index.json", json.dumps(index).encode())
        add(tar, "manifest.json", json.dumps(saved).encode())
        add(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        add(tar, "repositories", json.dumps(repositories).encode())


def main():
    if len(sys.argv) != 5:
        raise SystemExit(__doc__.strip().splitlines()[3])
    tags, config, layers = read_source(sys.argv[1])
    write_compressed(sys.argv[2], tags, config, layers, gzip_compress, ".tar.gz")
    write_docker25(sys.argv[3], tags, config, layers)
    write_compressed(sys.argv[4], tags, config, layers, zstd_compress, ".tar.zst")


if __name__ == "__main__":
    main()
