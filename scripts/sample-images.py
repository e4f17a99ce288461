#!/usr/bin/env python3
"""Writes an OCI image layout with demo images that look like real-world bloat (stdlib only).

Usage: sample-images.py OUT_LAYOUT_DIR

Tags written (printed one per line at the end):

  webapp:bloated  a Node.js web app built the usual wrong way:
      0  ADD file:... in /                    Debian bookworm base (os-release, binaries, libraries,
                                              perl with its hard link perl5.36.0, dpkg status)
      1  RUN apt-get update && apt-get install -y curl ca-certificates git
                                              apt lists, .deb archives, pkgcache.bin, docs, man pages,
                                              apt/dpkg logs; rewrites var/lib/dpkg/status
      2  RUN apt-get install -y gcc-12 g++-12 make libc6-dev
                                              a toolchain in a runtime image: gcc-12, cc1, headers,
                                              static libraries, plus more .deb archives
      3  COPY . /app                          sources with the whole .git directory
      4  RUN npm install                      node_modules (dev dependencies too), ~/.npm/_cacache,
                                              npm's debug log and a leftover /tmp/npm-* directory
      5  COPY build.tar.gz /tmp/              a big build artefact
      6  RUN mkdir -p /app/dist && tar -xzf /tmp/build.tar.gz -C /app/dist && rm /tmp/build.tar.gz
                                              the unpacked bundle plus a whiteout of the tarball,
                                              which stays shipped in layer 5
  webapp:slim     the same app done right: a slim base, dependencies installed before the sources
                  are copied (npm ci --omit=dev, cache cleaned), the bundle from a build stage,
                  no VCS directory, no toolchain, no caches.

Everything is deterministic: fixed mtimes, owners and gzip headers, and file contents derived from
their paths, so the same run gives the same digests. File contents are pseudo-random bytes mixed with
text so that sizes and compression ratios look like the real thing while the whole layout stays
around 40 MB.
"""

import gzip
import hashlib
import io
import json
import os
import random
import sys
import tarfile

MTIME = 1717171717  # 2024-05-31, fixed so the layout is reproducible
CREATED = "2024-05-31T16:08:37Z"

OS_RELEASE = b"""PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
"""

WORDS = (
    "the package version depends description amd64 debian bookworm main section priority optional "
    "maintainer installed size filename sha256 homepage tag function return const let var export "
    "import from require module exports async await promise callback error value string number "
    "object array length index request response server client router handler middleware config "
    "options default true false null undefined this prototype class extends constructor super new "
    "if else for while switch case break continue try catch finally throw typeof instanceof"
).split()


# ---- content ------------------------------------------------------------------------------------


def seeded_bytes(seed, size):
    """Incompressible bytes derived from seed."""
    return hashlib.shake_256(seed.encode()).digest(size)


def binary(seed, size, random_fraction=0.6):
    """Bytes that compress like an executable: a mix of random runs and repeated patterns."""
    rand = seeded_bytes(seed, size)
    filler = (b"\x00" * 24 + b"\x48\x89\xe5\x41\x57\x41\x56\x53\x48\x83\xec\x18") * 2
    out = bytearray()
    block = 4096
    keep = int(block * random_fraction)
    for start in range(0, size, block):
        chunk = rand[start : start + keep]
        out += chunk
        out += (filler * (block // len(filler) + 1))[: block - len(chunk)]
    return bytes(out[:size])


def text(seed, size, width=72):
    """Text that compresses like source code or package lists (about 4:1)."""
    rng = random.Random(seed)
    lines = []
    total = 0
    while total < size:
        words = []
        length = 0
        limit = rng.randint(20, width)
        while length < limit:
            word = rng.choice(WORDS)
            if rng.random() < 0.15:
                word = "%s%d" % (word, rng.randint(0, 9999))
            words.append(word)
            length += len(word) + 1
        line = " ".join(words) + "\n"
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()[:size]


def gz_blob(seed, size):
    """Stands in for an already-compressed file (.deb, .gz, .pack, .tgz): incompressible."""
    return seeded_bytes(seed, size)


# ---- layers -------------------------------------------------------------------------------------


class Layer:
    """A layer under construction: entries in the order they will be written."""

    def __init__(self, created_by):
        self.created_by = created_by
        self.entries = []  # (kind, path, payload, mode)
        self.dirs = set()

    def _parents(self, path):
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            self.dir("/".join(parts[:i]))

    def dir(self, path, mode=0o755):
        if path not in self.dirs:
            self.dirs.add(path)
            self._parents(path)
            self.entries.append(("dir", path, None, mode))

    def file(self, path, data, mode=0o644):
        self._parents(path)
        self.entries.append(("file", path, data, mode))

    def exe(self, path, data):
        self.file(path, data, 0o755)

    def symlink(self, path, target):
        self._parents(path)
        self.entries.append(("symlink", path, target, 0o777))

    def hardlink(self, path, target):
        self._parents(path)
        self.entries.append(("hardlink", path, target, 0o755))

    def whiteout(self, path):
        directory, name = path.rsplit("/", 1) if "/" in path else ("", path)
        whiteout_path = (directory + "/" if directory else "") + ".wh." + name
        self.file(whiteout_path, b"", 0o644)

    def tar_bytes(self):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for kind, path, payload, mode in self.entries:
                info = tarfile.TarInfo(path)
                info.mtime = MTIME
                info.mode = mode
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                if kind == "dir":
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                elif kind == "file":
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
                elif kind == "symlink":
                    info.type = tarfile.SYMTYPE
                    info.linkname = payload
                    tar.addfile(info)
                elif kind == "hardlink":
                    info.type = tarfile.LNKTYPE
                    info.linkname = payload
                    tar.addfile(info)
        return buf.getvalue()


class Layout:
    def __init__(self, root):
        self.root = root
        self.index = []
        os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(root, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)

    def put(self, data):
        digest = hashlib.sha256(data).hexdigest()
        path = os.path.join(self.root, "blobs", "sha256", digest)
        if not os.path.exists(path):
            with open(path + ".tmp", "wb") as f:
                f.write(data)
            os.replace(path + ".tmp", path)
        return "sha256:" + digest

    def image(self, tag, steps, config, annotations):
        """steps: Layer objects and ("empty", created_by) history-only steps, in build order."""
        layers = []
        diff_ids = []
        history = []
        for step in steps:
            if isinstance(step, tuple):
                history.append({"created": CREATED, "created_by": step[1], "empty_layer": True})
                continue
            tar = step.tar_bytes()
            gz = io.BytesIO()
            with gzip.GzipFile(filename="", mode="wb", fileobj=gz, mtime=0, compresslevel=6) as z:
                z.write(tar)
            blob = gz.getvalue()
            layers.append(
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": self.put(blob),
                    "size": len(blob),
                }
            )
            diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
            history.append({"created": CREATED, "created_by": step.created_by})
        image_config = {
            "created": CREATED,
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        }
        config_bytes = json.dumps(image_config, indent=2, sort_keys=True).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": self.put(config_bytes),
                "size": len(config_bytes),
            },
            "layers": layers,
            "annotations": annotations,
        }
        manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode()
        self.index.append(
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": self.put(manifest_bytes),
                "size": len(manifest_bytes),
                "annotations": {"org.opencontainers.image.ref.name": tag},
                "platform": {"architecture": "amd64", "os": "linux"},
            }
        )

    def finish(self):
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": self.index,
        }
        with open(os.path.join(self.root, "index.json"), "w") as f:
            json.dump(index, f, indent=2, sort_keys=True)


# ---- the images ---------------------------------------------------------------------------------

KB = 1024
MB = 1024 * 1024

NPM_RUNTIME_DEPS = ["express", "body-parser", "cookie", "debug", "mime-types", "qs", "send", "pg", "ws"]
NPM_DEV_DEPS = ["typescript", "eslint", "jest", "webpack", "@babel/core", "prettier"]


def dpkg_status(packages):
    lines = []
    for name in packages:
        lines.append(
            "Package: %s\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\n"
            "Version: 1.0-1\nDescription: %s\n\n" % (name, name)
        )
    return "".join(lines).encode() + text("status/" + ",".join(packages), 40 * KB)


BASE_PACKAGES = ["base-files", "bash", "coreutils", "dpkg", "apt", "libc6", "perl-base", "libssl3"]
APT_PACKAGES = ["curl", "libcurl4", "ca-certificates", "git", "git-man", "liberror-perl", "openssl"]


def base_layer(slim):
    layer = Layer("/bin/sh -c #(nop) ADD file:%s in / " % hashlib.sha256(b"base%d" % slim).hexdigest())
    for link, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"), ("sbin", "usr/sbin")):
        layer.symlink(link, target)
    layer.file("etc/os-release", OS_RELEASE)
    layer.file("etc/debian_version", b"12.5\n")
    layer.file("etc/hostname", b"")
    layer.file("etc/passwd", b"root:x:0:0:root:/root:/bin/bash\nnode:x:1000:1000::/home/node:/bin/sh\n")
    layer.file("etc/group", b"root:x:0:\nnode:x:1000:\n")
    layer.dir("root", 0o700)
    layer.dir("tmp", 0o1777)
    layer.dir("var/tmp", 0o1777)
    layer.dir("var/log")
    layer.exe("usr/bin/bash", binary("usr/bin/bash", 1_265 * KB))
    layer.exe("usr/bin/ls", binary("usr/bin/ls", 151 * KB))
    layer.exe("usr/bin/cat", binary("usr/bin/cat", 43 * KB))
    layer.exe("usr/bin/cp", binary("usr/bin/cp", 151 * KB))
    layer.file("usr/lib/x86_64-linux-gnu/libc.so.6", binary("libc.so.6", 1_922 * KB), 0o755)
    layer.symlink("usr/lib64/ld-linux-x86-64.so.2", "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    layer.file("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", binary("ld.so", 210 * KB), 0o755)
    layer.file("usr/lib/x86_64-linux-gnu/libssl.so.3", binary("libssl.so.3", 690 * KB))
    layer.file("usr/lib/x86_64-linux-gnu/libcrypto.so.3", binary("libcrypto.so.3", 1_400 * KB))
    layer.file("usr/bin/node", binary("usr/bin/node", 2_600 * KB), 0o755)
    if not slim:
        layer.exe("usr/bin/perl", binary("usr/bin/perl", 1_900 * KB))
        layer.hardlink("usr/bin/perl5.36.0", "usr/bin/perl")
        layer.exe("usr/bin/dpkg", binary("usr/bin/dpkg", 310 * KB))
        layer.exe("usr/bin/apt-get", binary("usr/bin/apt-get", 51 * KB))
        layer.file("usr/lib/x86_64-linux-gnu/libapt-pkg.so.6.0.0", binary("libapt-pkg", 1_600 * KB))
        layer.file("var/lib/dpkg/status", dpkg_status(BASE_PACKAGES))
    return layer


def apt_layer():
    layer = Layer(
        "RUN /bin/sh -c apt-get update && apt-get install -y curl ca-certificates git # buildkit"
    )
    lists = "var/lib/apt/lists/"
    layer.file(lists + "deb.debian.org_debian_dists_bookworm_InRelease", text("InRelease", 151 * KB))
    layer.file(
        lists + "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages",
        text("Packages-main", 3 * MB),
    )
    layer.file(
        lists + "deb.debian.org_debian_dists_bookworm-updates_main_binary-amd64_Packages",
        text("Packages-updates", 180 * KB),
    )
    layer.file(
        lists + "deb.debian.org_debian-security_dists_bookworm-security_main_binary-amd64_Packages",
        text("Packages-security", 520 * KB),
    )
    layer.file(lists + "lock", b"", 0o640)
    archives = "var/cache/apt/archives/"
    layer.file(archives + "lock", b"", 0o640)
    layer.dir(archives + "partial", 0o700)
    for name, size in (
        ("curl_7.88.1-10+deb12u5_amd64.deb", 315 * KB),
        ("libcurl4_7.88.1-10+deb12u5_amd64.deb", 390 * KB),
        ("ca-certificates_20230311_all.deb", 153 * KB),
        ("git_1%3a2.39.2-1.1_amd64.deb", 1_600 * KB),
        ("git-man_1%3a2.39.2-1.1_all.deb", 900 * KB),
    ):
        layer.file(archives + name, gz_blob(archives + name, size))
    layer.file("var/cache/apt/pkgcache.bin", binary("pkgcache.bin", 1_300 * KB, 0.25))
    layer.file("var/cache/apt/srcpkgcache.bin", binary("srcpkgcache.bin", 1_200 * KB, 0.25))
    layer.exe("usr/bin/curl", binary("usr/bin/curl", 276 * KB))
    layer.file("usr/lib/x86_64-linux-gnu/libcurl.so.4.8.0", binary("libcurl", 700 * KB))
    layer.exe("usr/bin/git", binary("usr/bin/git", 2_000 * KB))
    layer.file("etc/ssl/certs/ca-certificates.crt", text("ca-certificates.crt", 210 * KB))
    for package in APT_PACKAGES:
        layer.file("usr/share/doc/%s/copyright" % package, text("copyright/" + package, 9 * KB))
        layer.file(
            "usr/share/doc/%s/changelog.Debian.gz" % package, gz_blob("changelog/" + package, 14 * KB)
        )
    for page in range(120):
        name = "usr/share/man/man1/git-command-%03d.1.gz" % page
        layer.file(name, gz_blob(name, 6 * KB))
    layer.file("usr/share/man/man1/curl.1.gz", gz_blob("curl.1.gz", 38 * KB))
    layer.file("var/lib/dpkg/status", dpkg_status(BASE_PACKAGES + APT_PACKAGES))
    layer.file("var/log/apt/history.log", text("history.log", 3 * KB))
    layer.file("var/log/apt/term.log", text("term.log", 24 * KB))
    layer.file("var/log/dpkg.log", text("dpkg.log", 61 * KB))
    return layer


def toolchain_layer():
    layer = Layer("RUN /bin/sh -c apt-get install -y gcc-12 g++-12 make libc6-dev # buildkit")
    layer.exe("usr/bin/gcc-12", binary("gcc-12", 800 * KB))
    layer.hardlink("usr/bin/x86_64-linux-gnu-gcc-12", "usr/bin/gcc-12")
    layer.symlink("usr/bin/gcc", "gcc-12")
    layer.exe("usr/bin/g++-12", binary("g++-12", 800 * KB))
    layer.exe("usr/bin/make", binary("make", 249 * KB))
    layer.exe("usr/bin/x86_64-linux-gnu-as", binary("as", 820 * KB))
    layer.exe("usr/bin/x86_64-linux-gnu-ld.bfd", binary("ld.bfd", 1_700 * KB))
    gcc_dir = "usr/lib/gcc/x86_64-linux-gnu/12/"
    layer.exe(gcc_dir + "cc1", binary("cc1", 3_200 * KB, 0.5))
    layer.exe(gcc_dir + "cc1plus", binary("cc1plus", 3_400 * KB, 0.5))
    layer.file(gcc_dir + "libstdc++.a", binary("libstdc++.a", 1_500 * KB, 0.4))
    layer.file(gcc_dir + "libgcc.a", binary("libgcc.a", 190 * KB, 0.4))
    layer.file("usr/lib/x86_64-linux-gnu/libc.a", binary("libc.a", 1_400 * KB, 0.4))
    for i in range(150):
        name = "usr/include/header_%03d.h" % i
        layer.file(name, text(name, 9 * KB))
    layer.file("usr/include/stdio.h", text("stdio.h", 30 * KB))
    layer.file("usr/include/stdlib.h", text("stdlib.h", 36 * KB))
    archives = "var/cache/apt/archives/"
    for name, size in (("cpp-12_12.2.0-14_amd64.deb", 1_500 * KB), ("make_4.3-4.1_amd64.deb", 400 * KB)):
        layer.file(archives + name, gz_blob(archives + name, size))
    layer.file("var/log/apt/term.log", text("term.log-2", 41 * KB))
    layer.file("var/log/dpkg.log", text("dpkg.log-2", 98 * KB))
    return layer


def app_sources(layer, prefix, with_git):
    layer.file(prefix + "package.json", text("package.json", 2 * KB))
    layer.file(prefix + "package-lock.json", text("package-lock.json", 310 * KB))
    layer.file(prefix + "README.md", text("README.md", 6 * KB))
    layer.file(prefix + "Dockerfile", text("Dockerfile", 1 * KB))
    for i in range(80):
        name = prefix + "src/module_%02d.js" % i
        layer.file(name, text(name.replace(prefix, ""), 7 * KB))
    for i in range(40):
        name = prefix + "test/module_%02d.test.js" % i
        layer.file(name, text(name.replace(prefix, ""), 4 * KB))
    if with_git:
        git = prefix + ".git/"
        layer.file(git + "HEAD", b"ref: refs/heads/main\n")
        layer.file(git + "config", text("git-config", 300))
        layer.file(git + "index", binary("git-index", 42 * KB, 0.7))
        layer.file(git + "refs/heads/main", b"3f1c0de2a4b5c6d7e8f90123456789abcdef0123\n")
        layer.file(git + "objects/pack/pack-5b1e6f0d2c.pack", gz_blob("pack", 2_200 * KB))
        layer.file(git + "objects/pack/pack-5b1e6f0d2c.idx", binary("pack-idx", 96 * KB, 0.9))
        layer.file(git + "logs/HEAD", text("git-logs", 3 * KB))


def node_modules(layer, prefix, dev):
    deps = NPM_RUNTIME_DEPS + (NPM_DEV_DEPS if dev else [])
    layer.file(prefix + "node_modules/.package-lock.json", text("nm-lock" + str(dev), 120 * KB))
    for dep in deps:
        base = prefix + "node_modules/%s/" % dep
        layer.file(base + "package.json", text(dep + "/package.json", 2 * KB))
        layer.file(base + "README.md", text(dep + "/README.md", 9 * KB))
        layer.file(base + "LICENSE", text("LICENSE", 1 * KB))
        for i in range(12):
            name = base + "lib/file_%02d.js" % i
            layer.file(name, text(dep + name, 6 * KB))
    if dev:
        layer.file(
            prefix + "node_modules/typescript/lib/typescript.js", text("typescript.js", 2_800 * KB)
        )
        layer.file(
            prefix + "node_modules/typescript/lib/tsserver.js", text("tsserver.js", 1_200 * KB)
        )


def bloated(layout):
    base = base_layer(slim=False)
    apt = apt_layer()
    toolchain = toolchain_layer()

    copy_all = Layer("COPY . /app # buildkit")
    app_sources(copy_all, "app/", with_git=True)

    npm = Layer("RUN /bin/sh -c npm install # buildkit")
    node_modules(npm, "app/", dev=True)
    cache = "root/.npm/_cacache/"
    for i, dep in enumerate(NPM_RUNTIME_DEPS + NPM_DEV_DEPS):
        digest = hashlib.sha256(dep.encode()).hexdigest()
        name = cache + "content-v2/sha512/%s/%s/%s" % (digest[:2], digest[2:4], digest[4:])
        npm.file(name, gz_blob(name, (60 + 30 * i) * KB))
        npm.file(cache + "index-v5/%s/%s" % (digest[4:6], digest[6:]), text("index" + dep, 1 * KB))
    npm.file("root/.npm/_logs/2024-05-31T16_08_37_123Z-debug-0.log", text("npm-debug", 18 * KB))
    npm.file("tmp/npm-1-0f9c2a/package.tgz", gz_blob("npm-tmp", 240 * KB))

    add = Layer("COPY build.tar.gz /tmp/ # buildkit")
    add.file("tmp/build.tar.gz", gz_blob("build.tar.gz", 3_000 * KB))

    unpack = Layer(
        "RUN /bin/sh -c mkdir -p /app/dist && tar -xzf /tmp/build.tar.gz -C /app/dist "
        "&& rm /tmp/build.tar.gz # buildkit"
    )
    unpack.file("app/dist/main.js", text("dist/main.js", 1_400 * KB))
    unpack.file("app/dist/main.js.map", text("dist/main.js.map", 2_600 * KB))
    unpack.file("app/dist/vendor.js", text("dist/vendor.js", 900 * KB))
    unpack.whiteout("tmp/build.tar.gz")

    steps = [
        base,
        ("empty", '/bin/sh -c #(nop)  CMD ["bash"]'),
        apt,
        toolchain,
        ("empty", "WORKDIR /app"),
        copy_all,
        npm,
        add,
        unpack,
        ("empty", "ENV NODE_ENV=production"),
        ("empty", "EXPOSE map[3000/tcp:{}]"),
        ("empty", 'CMD ["node" "dist/main.js"]'),
    ]
    config = {
        "Env": [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "NODE_ENV=production",
        ],
        "Cmd": ["node", "dist/main.js"],
        "WorkingDir": "/app",
        "ExposedPorts": {"3000/tcp": {}},
    }
    annotations = {
        "org.opencontainers.image.base.name": "docker.io/library/debian:bookworm",
        "org.opencontainers.image.created": CREATED,
        "org.opencontainers.image.title": "webapp",
        "org.opencontainers.image.version": "bloated",
    }
    layout.image("webapp:bloated", steps, config, annotations)


def slim(layout):
    base = base_layer(slim=True)
    base.created_by = "/bin/sh -c #(nop) ADD file:%s in / " % hashlib.sha256(b"slim").hexdigest()

    manifests = Layer("COPY package.json package-lock.json /app/ # buildkit")
    manifests.file("app/package.json", text("package.json", 2 * KB))
    manifests.file("app/package-lock.json", text("package-lock.json", 310 * KB))

    deps = Layer("RUN /bin/sh -c npm ci --omit=dev && npm cache clean --force # buildkit")
    node_modules(deps, "app/", dev=False)

    dist = Layer("COPY /src/dist /app/dist # buildkit")
    dist.file("app/dist/main.js", text("dist/main.js", 1_400 * KB))
    dist.file("app/dist/vendor.js", text("dist/vendor.js", 900 * KB))

    sources = Layer("COPY . /app # buildkit")
    app_sources(sources, "app/", with_git=False)

    steps = [
        base,
        ("empty", '/bin/sh -c #(nop)  CMD ["bash"]'),
        ("empty", "WORKDIR /app"),
        manifests,
        deps,
        dist,
        sources,
        ("empty", "ENV NODE_ENV=production"),
        ("empty", "USER node"),
        ("empty", "EXPOSE map[3000/tcp:{}]"),
        ("empty", 'CMD ["node" "dist/main.js"]'),
    ]
    config = {
        "Env": [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "NODE_ENV=production",
        ],
        "Cmd": ["node", "dist/main.js"],
        "WorkingDir": "/app",
        "User": "node",
        "ExposedPorts": {"3000/tcp": {}},
    }
    annotations = {
        "org.opencontainers.image.base.name": "docker.io/library/debian:bookworm-slim",
        "org.opencontainers.image.created": CREATED,
        "org.opencontainers.image.title": "webapp",
        "org.opencontainers.image.version": "slim",
    }
    layout.image("webapp:slim", steps, config, annotations)


def main():
    if len(sys.argv) != 2:
        print("usage: sample-images.py OUT_LAYOUT_DIR", file=sys.stderr)
        sys.exit(2)
    layout = Layout(sys.argv[1])
    bloated(layout)
    slim(layout)
    layout.finish()
    for entry in layout.index:
        print(entry["annotations"]["org.opencontainers.image.ref.name"])


if __name__ == "__main__":
    main()
