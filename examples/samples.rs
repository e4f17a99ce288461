//! The demo's sample images (scripts/demo.sh): a Node.js web app built the usual wrong way, and
//! the same app done right. Written with `imagebloat::testkit`, pushed to a registry (plain
//! HTTP) and/or written into an OCI layout.
//!
//!     cargo run --release --example samples -- --push 127.0.0.1:5000/sample
//!     cargo run --release --example samples -- --layout /tmp/samples
//!
//! Prints one line per image: the pushed reference, or the layout's `DIR:TAG`.
//!
//! `webapp:bloated`:
//!   0  ADD file:... in /             Debian bookworm base (os-release, binaries, libraries, perl
//!                                    with its hard link perl5.36.0, dpkg status)
//!   1  RUN apt-get update && apt-get install -y curl ca-certificates git
//!                                    apt lists, .deb archives, pkgcache.bin, docs, man pages,
//!                                    apt/dpkg logs; rewrites var/lib/dpkg/status
//!   2  RUN apt-get install -y gcc-12 g++-12 make libc6-dev
//!                                    a toolchain in a runtime image: gcc-12, cc1, headers, static
//!                                    libraries, plus more .deb archives
//!   3  COPY . /app                   sources with the whole .git directory
//!   4  RUN npm install               node_modules (dev dependencies too), ~/.npm/_cacache, npm's
//!                                    debug log and a leftover /tmp/npm-* directory
//!   5  COPY build.tar.gz /tmp/       a big build artefact
//!   6  RUN mkdir -p /app/dist && tar -xzf /tmp/build.tar.gz -C /app/dist && rm /tmp/build.tar.gz
//!                                    the unpacked bundle plus a whiteout of the tarball, which
//!                                    stays shipped in layer 5
//!
//! `webapp:slim`: the same app done right: a slim base, dependencies installed before the
//! sources are copied (npm ci --omit=dev, cache cleaned), the bundle from a build stage, no VCS
//! directory, no toolchain, no caches.
//!
//! Everything is deterministic: file contents are derived from their paths, mixing random bytes
//! with text and machine-code-like patterns so that sizes and compression ratios look like the
//! real thing while both images together stay around 40 MB.

use imagebloat::testkit::{Image, ImageBuilder, Layer, OciLayout, Pusher, Rng, sha256};
use serde_json::{Value, json};

const KB: usize = 1024;
const MB: usize = 1024 * 1024;
const MTIME: u64 = 1_717_171_717;
const CREATED: &str = "2024-05-31T16:08:37Z";

const USAGE: &str = "usage: samples [--push REGISTRY/PREFIX] [--layout DIR]";

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut push, mut layout) = (None, None);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match (arg.as_str(), it.next()) {
            ("--push", Some(prefix)) => push = Some(prefix.clone()),
            ("--layout", Some(dir)) => layout = Some(dir.clone()),
            _ => {
                eprintln!("{USAGE}");
                std::process::exit(2);
            }
        }
    }
    if push.is_none() && layout.is_none() {
        eprintln!("{USAGE}");
        std::process::exit(2);
    }
    let images = [("webapp:bloated", bloated()), ("webapp:slim", slim())];
    if let Some(dir) = layout {
        let mut out = OciLayout::create(&dir).unwrap_or_else(|e| panic!("{dir}: {e}"));
        for (tag, image) in &images {
            out.add_image(image, tag)
                .unwrap_or_else(|e| panic!("{dir}: {e}"));
            println!("{}", out.spec(tag));
        }
    }
    if let Some(prefix) = push {
        let pusher = Pusher::plain();
        for (tag, image) in &images {
            let reference = format!("{prefix}/{tag}");
            pusher.push(image, &reference).await;
            println!("{reference}");
        }
    }
}

// ---- content ------------------------------------------------------------------------------------

/// Incompressible bytes derived from `seed` (stands in for .deb, .gz, .pack, .tgz files too).
fn random(seed: &str, size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size);
    Rng::from_name(seed).fill(&mut v, size);
    v
}

/// Bytes that compress like an executable: in every 4 KiB block, `random_fraction` random
/// bytes, then a repeated instruction-like pattern.
fn binary_with(seed: &str, size: usize, random_fraction: f64) -> Vec<u8> {
    let rand = random(seed, size);
    let mut filler = [0u8; 36];
    filler[24..].copy_from_slice(b"\x48\x89\xe5\x41\x57\x41\x56\x53\x48\x83\xec\x18");
    const BLOCK: usize = 4096;
    let keep = (BLOCK as f64 * random_fraction) as usize;
    let mut out = Vec::with_capacity(size + BLOCK);
    for start in (0..size).step_by(BLOCK) {
        let chunk = &rand[start..(start + keep).min(size)];
        out.extend_from_slice(chunk);
        out.extend(filler.iter().cycle().take(BLOCK - chunk.len()));
    }
    out.truncate(size);
    out
}

fn binary(seed: &str, size: usize) -> Vec<u8> {
    binary_with(seed, size, 0.6)
}

const WORDS: &str = "the package version depends description amd64 debian bookworm main section \
    priority optional maintainer installed size filename sha256 homepage tag function return \
    const let var export import from require module exports async await promise callback error \
    value string number object array length index request response server client router handler \
    middleware config options default true false null undefined this prototype class extends \
    constructor super new if else for while switch case break continue try catch finally throw \
    typeof instanceof";

/// Text that compresses like source code or package lists (about 4:1): lines of 20 to 72
/// characters of words, some with a number.
fn text(seed: &str, size: usize) -> Vec<u8> {
    let words: Vec<&str> = WORDS.split_whitespace().collect();
    let mut rng = Rng::from_name(seed);
    let mut out = Vec::with_capacity(size + 80);
    while out.len() < size {
        let limit = 20 + rng.below(72 - 20 + 1) as usize;
        let mut length = 0;
        let mut first = true;
        while length < limit {
            let word = words[rng.below(words.len() as u64) as usize];
            let word = if rng.unit() < 0.15 {
                format!("{word}{}", rng.below(10_000))
            } else {
                word.to_string()
            };
            if !first {
                out.push(b' ');
            }
            first = false;
            out.extend_from_slice(word.as_bytes());
            length += word.len() + 1;
        }
        out.push(b'\n');
    }
    out.truncate(size);
    out
}

// ---- layers -------------------------------------------------------------------------------------

fn layer(created_by: &str) -> Layer {
    Layer::new(created_by).mtime(MTIME).with_parents()
}

/// A build from `steps`: layers and history-only steps (`Err(created_by)`), in build order.
fn image(steps: Vec<Result<Layer, &str>>, config: Value, annotations: Value) -> Image {
    steps
        .into_iter()
        .fold(ImageBuilder::new(vec![]), |image, step| match step {
            Ok(layer) => image.layer(layer),
            Err(created_by) => image.empty_step(created_by),
        })
        .created(CREATED)
        .config(config)
        .annotations(annotations)
        .build()
}

const OS_RELEASE: &[u8] = br#"PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
"#;

const NPM_RUNTIME_DEPS: &[&str] = &[
    "express",
    "body-parser",
    "cookie",
    "debug",
    "mime-types",
    "qs",
    "send",
    "pg",
    "ws",
];
const NPM_DEV_DEPS: &[&str] = &[
    "typescript",
    "eslint",
    "jest",
    "webpack",
    "@babel/core",
    "prettier",
];
const BASE_PACKAGES: &[&str] = &[
    "base-files",
    "bash",
    "coreutils",
    "dpkg",
    "apt",
    "libc6",
    "perl-base",
    "libssl3",
];
const APT_PACKAGES: &[&str] = &[
    "curl",
    "libcurl4",
    "ca-certificates",
    "git",
    "git-man",
    "liberror-perl",
    "openssl",
];

fn dpkg_status(packages: &[&str]) -> Vec<u8> {
    let mut out = String::new();
    for name in packages {
        out += &format!(
            "Package: {name}\nStatus: install ok installed\nPriority: optional\n\
             Architecture: amd64\nVersion: 1.0-1\nDescription: {name}\n\n"
        );
    }
    let mut out = out.into_bytes();
    out.extend(text(&format!("status/{}", packages.join(",")), 40 * KB));
    out
}

fn add_rootfs(name: &str) -> String {
    let hex = sha256(name.as_bytes());
    format!(
        "/bin/sh -c #(nop) ADD file:{} in / ",
        &hex["sha256:".len()..]
    )
}

fn base_layer(slim: bool) -> Layer {
    let created_by = add_rootfs(if slim { "slim" } else { "base0" });
    let mut l = layer(&created_by);
    for (link, target) in [
        ("bin", "usr/bin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("sbin", "usr/sbin"),
    ] {
        l = l.symlink(link, target);
    }
    let lib = "usr/lib/x86_64-linux-gnu/";
    l = l
        .file("etc/os-release", OS_RELEASE)
        .file("etc/debian_version", b"12.5\n")
        .file("etc/hostname", b"")
        .file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/bash\nnode:x:1000:1000::/home/node:/bin/sh\n",
        )
        .file("etc/group", b"root:x:0:\nnode:x:1000:\n")
        .dir_mode("root", 0o700)
        .dir_mode("tmp", 0o1777)
        .dir_mode("var/tmp", 0o1777)
        .dir("var/log")
        .exe("usr/bin/bash", &binary("usr/bin/bash", 1_265 * KB))
        .exe("usr/bin/ls", &binary("usr/bin/ls", 151 * KB))
        .exe("usr/bin/cat", &binary("usr/bin/cat", 43 * KB))
        .exe("usr/bin/cp", &binary("usr/bin/cp", 151 * KB))
        .exe(&format!("{lib}libc.so.6"), &binary("libc.so.6", 1_922 * KB))
        .symlink(
            "usr/lib64/ld-linux-x86-64.so.2",
            "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        )
        .exe(
            &format!("{lib}ld-linux-x86-64.so.2"),
            &binary("ld.so", 210 * KB),
        )
        .file(
            &format!("{lib}libssl.so.3"),
            &binary("libssl.so.3", 690 * KB),
        )
        .file(
            &format!("{lib}libcrypto.so.3"),
            &binary("libcrypto.so.3", 1_400 * KB),
        )
        .exe("usr/bin/node", &binary("usr/bin/node", 2_600 * KB));
    if !slim {
        l = l
            .exe("usr/bin/perl", &binary("usr/bin/perl", 1_900 * KB))
            .hardlink("usr/bin/perl5.36.0", "usr/bin/perl")
            .exe("usr/bin/dpkg", &binary("usr/bin/dpkg", 310 * KB))
            .exe("usr/bin/apt-get", &binary("usr/bin/apt-get", 51 * KB))
            .file(
                &format!("{lib}libapt-pkg.so.6.0.0"),
                &binary("libapt-pkg", 1_600 * KB),
            )
            .file("var/lib/dpkg/status", &dpkg_status(BASE_PACKAGES));
    }
    l
}

fn apt_layer() -> Layer {
    let lists = "var/lib/apt/lists/deb.debian.org_debian";
    let archives = "var/cache/apt/archives/";
    let mut l = layer(
        "RUN /bin/sh -c apt-get update && apt-get install -y curl ca-certificates git # buildkit",
    )
    .file(
        &format!("{lists}_dists_bookworm_InRelease"),
        &text("InRelease", 151 * KB),
    )
    .file(
        &format!("{lists}_dists_bookworm_main_binary-amd64_Packages"),
        &text("Packages-main", 3 * MB),
    )
    .file(
        &format!("{lists}_dists_bookworm-updates_main_binary-amd64_Packages"),
        &text("Packages-updates", 180 * KB),
    )
    .file(
        &format!("{lists}-security_dists_bookworm-security_main_binary-amd64_Packages"),
        &text("Packages-security", 520 * KB),
    )
    .file_mode("var/lib/apt/lists/lock", 0o640, b"")
    .file_mode(&format!("{archives}lock"), 0o640, b"")
    .dir_mode(&format!("{archives}partial"), 0o700);
    for (name, size) in [
        ("curl_7.88.1-10+deb12u5_amd64.deb", 315 * KB),
        ("libcurl4_7.88.1-10+deb12u5_amd64.deb", 390 * KB),
        ("ca-certificates_20230311_all.deb", 153 * KB),
        ("git_1%3a2.39.2-1.1_amd64.deb", 1_600 * KB),
        ("git-man_1%3a2.39.2-1.1_all.deb", 900 * KB),
    ] {
        let path = format!("{archives}{name}");
        l = l.file(&path, &random(&path, size));
    }
    l = l
        .file(
            "var/cache/apt/pkgcache.bin",
            &binary_with("pkgcache.bin", 1_300 * KB, 0.25),
        )
        .file(
            "var/cache/apt/srcpkgcache.bin",
            &binary_with("srcpkgcache.bin", 1_200 * KB, 0.25),
        )
        .exe("usr/bin/curl", &binary("usr/bin/curl", 276 * KB))
        .file(
            "usr/lib/x86_64-linux-gnu/libcurl.so.4.8.0",
            &binary("libcurl", 700 * KB),
        )
        .exe("usr/bin/git", &binary("usr/bin/git", 2_000 * KB))
        .file(
            "etc/ssl/certs/ca-certificates.crt",
            &text("ca-certificates.crt", 210 * KB),
        );
    for package in APT_PACKAGES {
        l = l
            .file(
                &format!("usr/share/doc/{package}/copyright"),
                &text(&format!("copyright/{package}"), 9 * KB),
            )
            .file(
                &format!("usr/share/doc/{package}/changelog.Debian.gz"),
                &random(&format!("changelog/{package}"), 14 * KB),
            );
    }
    for page in 0..120 {
        let name = format!("usr/share/man/man1/git-command-{page:03}.1.gz");
        l = l.file(&name, &random(&name, 6 * KB));
    }
    let packages = [BASE_PACKAGES, APT_PACKAGES].concat();
    l.file(
        "usr/share/man/man1/curl.1.gz",
        &random("curl.1.gz", 38 * KB),
    )
    .file("var/lib/dpkg/status", &dpkg_status(&packages))
    .file("var/log/apt/history.log", &text("history.log", 3 * KB))
    .file("var/log/apt/term.log", &text("term.log", 24 * KB))
    .file("var/log/dpkg.log", &text("dpkg.log", 61 * KB))
}

fn toolchain_layer() -> Layer {
    let gcc = "usr/lib/gcc/x86_64-linux-gnu/12/";
    let archives = "var/cache/apt/archives/";
    let mut l = layer("RUN /bin/sh -c apt-get install -y gcc-12 g++-12 make libc6-dev # buildkit")
        .exe("usr/bin/gcc-12", &binary("gcc-12", 800 * KB))
        .hardlink("usr/bin/x86_64-linux-gnu-gcc-12", "usr/bin/gcc-12")
        .symlink("usr/bin/gcc", "gcc-12")
        .exe("usr/bin/g++-12", &binary("g++-12", 800 * KB))
        .exe("usr/bin/make", &binary("make", 249 * KB))
        .exe("usr/bin/x86_64-linux-gnu-as", &binary("as", 820 * KB))
        .exe(
            "usr/bin/x86_64-linux-gnu-ld.bfd",
            &binary("ld.bfd", 1_700 * KB),
        )
        .exe(&format!("{gcc}cc1"), &binary_with("cc1", 3_200 * KB, 0.5))
        .exe(
            &format!("{gcc}cc1plus"),
            &binary_with("cc1plus", 3_400 * KB, 0.5),
        )
        .file(
            &format!("{gcc}libstdc++.a"),
            &binary_with("libstdc++.a", 1_500 * KB, 0.4),
        )
        .file(
            &format!("{gcc}libgcc.a"),
            &binary_with("libgcc.a", 190 * KB, 0.4),
        )
        .file(
            "usr/lib/x86_64-linux-gnu/libc.a",
            &binary_with("libc.a", 1_400 * KB, 0.4),
        );
    for i in 0..150 {
        let name = format!("usr/include/header_{i:03}.h");
        l = l.file(&name, &text(&name, 9 * KB));
    }
    l = l
        .file("usr/include/stdio.h", &text("stdio.h", 30 * KB))
        .file("usr/include/stdlib.h", &text("stdlib.h", 36 * KB));
    for (name, size) in [
        ("cpp-12_12.2.0-14_amd64.deb", 1_500 * KB),
        ("make_4.3-4.1_amd64.deb", 400 * KB),
    ] {
        let path = format!("{archives}{name}");
        l = l.file(&path, &random(&path, size));
    }
    l.file("var/log/apt/term.log", &text("term.log-2", 41 * KB))
        .file("var/log/dpkg.log", &text("dpkg.log-2", 98 * KB))
}

fn app_sources(mut l: Layer, prefix: &str, with_git: bool) -> Layer {
    l = l
        .file(
            &format!("{prefix}package.json"),
            &text("package.json", 2 * KB),
        )
        .file(
            &format!("{prefix}package-lock.json"),
            &text("package-lock.json", 310 * KB),
        )
        .file(&format!("{prefix}README.md"), &text("README.md", 6 * KB))
        .file(&format!("{prefix}Dockerfile"), &text("Dockerfile", KB));
    for i in 0..80 {
        let name = format!("src/module_{i:02}.js");
        l = l.file(&format!("{prefix}{name}"), &text(&name, 7 * KB));
    }
    for i in 0..40 {
        let name = format!("test/module_{i:02}.test.js");
        l = l.file(&format!("{prefix}{name}"), &text(&name, 4 * KB));
    }
    if with_git {
        let git = format!("{prefix}.git/");
        l = l
            .file(&format!("{git}HEAD"), b"ref: refs/heads/main\n")
            .file(&format!("{git}config"), &text("git-config", 300))
            .file(
                &format!("{git}index"),
                &binary_with("git-index", 42 * KB, 0.7),
            )
            .file(
                &format!("{git}refs/heads/main"),
                b"3f1c0de2a4b5c6d7e8f90123456789abcdef0123\n",
            )
            .file(
                &format!("{git}objects/pack/pack-5b1e6f0d2c.pack"),
                &random("pack", 2_200 * KB),
            )
            .file(
                &format!("{git}objects/pack/pack-5b1e6f0d2c.idx"),
                &binary_with("pack-idx", 96 * KB, 0.9),
            )
            .file(&format!("{git}logs/HEAD"), &text("git-logs", 3 * KB));
    }
    l
}

fn node_modules(mut l: Layer, prefix: &str, dev: bool) -> Layer {
    let modules = format!("{prefix}node_modules/");
    l = l.file(
        &format!("{modules}.package-lock.json"),
        &text(&format!("nm-lock{dev}"), 120 * KB),
    );
    let deps = if dev {
        [NPM_RUNTIME_DEPS, NPM_DEV_DEPS].concat()
    } else {
        NPM_RUNTIME_DEPS.to_vec()
    };
    for dep in deps {
        let base = format!("{modules}{dep}/");
        l = l
            .file(
                &format!("{base}package.json"),
                &text(&format!("{dep}/package.json"), 2 * KB),
            )
            .file(
                &format!("{base}README.md"),
                &text(&format!("{dep}/README.md"), 9 * KB),
            )
            .file(&format!("{base}LICENSE"), &text("LICENSE", KB));
        for i in 0..12 {
            let name = format!("{base}lib/file_{i:02}.js");
            l = l.file(&name, &text(&format!("{dep}{name}"), 6 * KB));
        }
    }
    if dev {
        l = l
            .file(
                &format!("{modules}typescript/lib/typescript.js"),
                &text("typescript.js", 2_800 * KB),
            )
            .file(
                &format!("{modules}typescript/lib/tsserver.js"),
                &text("tsserver.js", 1_200 * KB),
            );
    }
    l
}

// ---- the images ---------------------------------------------------------------------------------

fn runtime_config(user: Option<&str>) -> Value {
    let mut config = json!({
        "Env": [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "NODE_ENV=production",
        ],
        "Cmd": ["node", "dist/main.js"],
        "WorkingDir": "/app",
        "ExposedPorts": {"3000/tcp": {}},
    });
    if let Some(user) = user {
        config["User"] = json!(user);
    }
    config
}

fn annotations(base: &str, version: &str) -> Value {
    json!({
        "org.opencontainers.image.base.name": base,
        "org.opencontainers.image.created": CREATED,
        "org.opencontainers.image.title": "webapp",
        "org.opencontainers.image.version": version,
    })
}

fn bloated() -> Image {
    let copy_all = app_sources(layer("COPY . /app # buildkit"), "app/", true);

    let mut npm = node_modules(layer("RUN /bin/sh -c npm install # buildkit"), "app/", true);
    let cache = "root/.npm/_cacache/";
    for (i, dep) in [NPM_RUNTIME_DEPS, NPM_DEV_DEPS].concat().iter().enumerate() {
        let hex = sha256(dep.as_bytes());
        let d = &hex["sha256:".len()..];
        let name = format!(
            "{cache}content-v2/sha512/{}/{}/{}",
            &d[..2],
            &d[2..4],
            &d[4..]
        );
        npm = npm.file(&name, &random(&name, (60 + 30 * i) * KB)).file(
            &format!("{cache}index-v5/{}/{}", &d[4..6], &d[6..]),
            &text(&format!("index{dep}"), KB),
        );
    }
    npm = npm
        .file(
            "root/.npm/_logs/2024-05-31T16_08_37_123Z-debug-0.log",
            &text("npm-debug", 18 * KB),
        )
        .file("tmp/npm-1-0f9c2a/package.tgz", &random("npm-tmp", 240 * KB));

    let add = layer("COPY build.tar.gz /tmp/ # buildkit")
        .file("tmp/build.tar.gz", &random("build.tar.gz", 3_000 * KB));

    let unpack = layer(
        "RUN /bin/sh -c mkdir -p /app/dist && tar -xzf /tmp/build.tar.gz -C /app/dist \
         && rm /tmp/build.tar.gz # buildkit",
    )
    .file("app/dist/main.js", &text("dist/main.js", 1_400 * KB))
    .file(
        "app/dist/main.js.map",
        &text("dist/main.js.map", 2_600 * KB),
    )
    .file("app/dist/vendor.js", &text("dist/vendor.js", 900 * KB))
    .whiteout("tmp/build.tar.gz");

    image(
        vec![
            Ok(base_layer(false)),
            Err(r#"/bin/sh -c #(nop)  CMD ["bash"]"#),
            Ok(apt_layer()),
            Ok(toolchain_layer()),
            Err("WORKDIR /app"),
            Ok(copy_all),
            Ok(npm),
            Ok(add),
            Ok(unpack),
            Err("ENV NODE_ENV=production"),
            Err("EXPOSE map[3000/tcp:{}]"),
            Err(r#"CMD ["node" "dist/main.js"]"#),
        ],
        runtime_config(None),
        annotations("docker.io/library/debian:bookworm", "bloated"),
    )
}

fn slim() -> Image {
    let manifests = layer("COPY package.json package-lock.json /app/ # buildkit")
        .file("app/package.json", &text("package.json", 2 * KB))
        .file(
            "app/package-lock.json",
            &text("package-lock.json", 310 * KB),
        );
    let deps = node_modules(
        layer("RUN /bin/sh -c npm ci --omit=dev && npm cache clean --force # buildkit"),
        "app/",
        false,
    );
    let dist = layer("COPY /src/dist /app/dist # buildkit")
        .file("app/dist/main.js", &text("dist/main.js", 1_400 * KB))
        .file("app/dist/vendor.js", &text("dist/vendor.js", 900 * KB));
    let sources = app_sources(layer("COPY . /app # buildkit"), "app/", false);

    image(
        vec![
            Ok(base_layer(true)),
            Err(r#"/bin/sh -c #(nop)  CMD ["bash"]"#),
            Err("WORKDIR /app"),
            Ok(manifests),
            Ok(deps),
            Ok(dist),
            Ok(sources),
            Err("ENV NODE_ENV=production"),
            Err("USER node"),
            Err("EXPOSE map[3000/tcp:{}]"),
            Err(r#"CMD ["node" "dist/main.js"]"#),
        ],
        runtime_config(Some("node")),
        annotations("docker.io/library/debian:bookworm-slim", "slim"),
    )
}
