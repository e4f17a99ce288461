//! Advice: what a senior engineer would tell the image's author, with the bytes each change saves.
//!
//! Each recommendation is computed from the findings (hidden files, junk per tool and layer) and
//! tied to the layer and history line (`created_by`) it concerns. Wording that depends on the
//! tool lives in tables below, one row per tool, so it can be read and changed in one place.

use std::collections::BTreeMap;

use super::rules::{Category, Tool};
use super::{ImageAnalysis, Recommendation};

/// Below this, advice is noise.
const MIN_SAVING: u64 = 64 << 10;
/// Build tools smaller than this are not worth a multi-stage build on their own.
const MIN_BUILD_TOOLS: u64 = 1 << 20;
/// Recommendations of one kind beyond this many are folded away (largest kept).
const MAX_PER_KIND: usize = 5;

/// What advice is computed from.
pub struct Facts<'a> {
    pub analysis: &'a ImageAnalysis,
    /// Junk bytes by (layer, category, tool).
    pub junk_by_tool: &'a BTreeMap<(usize, Category, Tool), u64>,
    /// Bytes of the first layer still visible in the final filesystem.
    pub base_layer_final_bytes: Option<u64>,
}

/// How to stop a package manager from leaving its cache in the layer.
const NO_CACHE_ADVICE: &[(Tool, &str)] = &[
    (
        Tool::Apt,
        "end the same RUN with `rm -rf /var/lib/apt/lists/*` (and use `apt-get install --no-install-recommends`); apt's archives go with `apt-get clean` in that RUN",
    ),
    (
        Tool::Apk,
        "use `apk add --no-cache`, which keeps no index or package cache",
    ),
    (
        Tool::Dnf,
        "end the same RUN with `dnf clean all` (or install with `--setopt=keepcache=0`)",
    ),
    (Tool::Yum, "end the same RUN with `yum clean all`"),
    (Tool::Zypper, "end the same RUN with `zypper clean --all`"),
    (
        Tool::Pip,
        "use `pip install --no-cache-dir` (or set `PIP_NO_CACHE_DIR=1`)",
    ),
    (
        Tool::Npm,
        "run `npm cache clean --force` in the same RUN, or use a BuildKit cache mount for ~/.npm",
    ),
    (
        Tool::Yarn,
        "run `yarn cache clean` in the same RUN, or use a BuildKit cache mount",
    ),
    (
        Tool::Go,
        "build in a separate stage, or mount the caches (`RUN --mount=type=cache,target=/root/.cache/go-build`)",
    ),
    (
        Tool::Cargo,
        "build in a separate stage, or mount ~/.cargo/registry as a BuildKit cache",
    ),
    (
        Tool::Gradle,
        "build in a separate stage, or mount ~/.gradle as a BuildKit cache",
    ),
];

/// Dependency installs that should come before the sources are copied, and the files to copy
/// first for each.
const DEPENDENCY_INSTALLS: &[(&str, &str)] = &[
    ("npm ci", "package.json and package-lock.json"),
    ("npm install", "package.json and package-lock.json"),
    ("yarn install", "package.json and yarn.lock"),
    ("pnpm install", "package.json and pnpm-lock.yaml"),
    ("pip install -r", "requirements.txt"),
    ("pip install .", "pyproject.toml (and a lock file)"),
    ("poetry install", "pyproject.toml and poetry.lock"),
    ("go mod download", "go.mod and go.sum"),
    ("bundle install", "Gemfile and Gemfile.lock"),
    ("composer install", "composer.json and composer.lock"),
    ("mvn ", "pom.xml (run `mvn dependency:go-offline`)"),
    ("cargo fetch", "Cargo.toml and Cargo.lock"),
    (
        "cargo build",
        "Cargo.toml and Cargo.lock (build the dependencies first)",
    ),
];

/// Slimmer bases for common distributions: (os-release ID, suggestion, approximate
/// uncompressed size of the suggestion in bytes, as published for the current releases).
const SLIMMER_BASES: &[(&str, &str, u64)] = &[
    ("debian", "debian:{codename}-slim", 75_000_000),
    (
        "ubuntu",
        "a chiselled Ubuntu or debian:bookworm-slim base",
        75_000_000,
    ),
    (
        "fedora",
        "registry.fedoraproject.org/fedora-minimal",
        110_000_000,
    ),
    ("centos", "a UBI minimal or micro base", 100_000_000),
    ("rhel", "ubi-minimal or ubi-micro", 100_000_000),
    ("rocky", "rockylinux minimal", 100_000_000),
    ("almalinux", "almalinux minimal or micro", 100_000_000),
    (
        "opensuse-leap",
        "opensuse/leap with a minimal pattern, or bci-micro",
        100_000_000,
    ),
];
/// A base must exceed its suggestion by this factor before the advice is given.
const BASE_EXCESS: f64 = 1.3;

/// Computes the recommendations, largest saving first.
pub fn advise(f: &Facts<'_>) -> Vec<Recommendation> {
    let a = f.analysis;
    let created = |layer: usize| a.layers.get(layer).and_then(|l| l.created_by.clone());
    let short = |layer: usize| match created(layer) {
        Some(c) => format!("layer {layer} (`{}`)", shorten(&c, 60)),
        None => format!("layer {layer}"),
    };
    let mut out: Vec<Recommendation> = Vec::new();

    // Files deleted or rewritten by a later layer still ship in the layer that made them.
    let mut removed: BTreeMap<(u32, u32, bool), (u64, u64)> = BTreeMap::new();
    for h in &a.hidden_files {
        if h.hidden_by_layer == h.layer {
            continue; // duplicate entries within one tar: not a Dockerfile matter
        }
        let rewrite = h.reason == "overwritten";
        let t = removed
            .entry((h.layer, h.hidden_by_layer, rewrite))
            .or_default();
        t.0 += h.size_bytes;
        t.1 += 1;
    }
    for (&(layer, by, rewrite), &(bytes, files)) in &removed {
        let (layer, by) = (layer as usize, by as usize);
        let message = if rewrite {
            // Only when the step is itself a chown/chmod: a longer RUN that happens to
            // contain one rewrites files for other reasons too.
            let chown = created(by).is_some_and(|c| {
                let c = shorten(&c, usize::MAX);
                c.starts_with("chown ") || c.starts_with("chmod ")
            });
            if chown {
                format!(
                    "{} rewrites {} that {} shipped, only to change owner or mode; both copies ship. Use `COPY --chown`/`--chmod` (or set them where the files are made) instead of a separate RUN",
                    short(by),
                    count(files, "file"),
                    short(layer)
                )
            } else {
                format!(
                    "{} rewrites {} that {} shipped; both copies ship. Produce the final version once, in one step",
                    short(by),
                    count(files, "file"),
                    short(layer)
                )
            }
        } else {
            format!(
                "{} deletes {} that {} created, but deleting in a later layer frees nothing. Remove them in the same RUN that creates them, or create them in a build stage",
                short(by),
                count(files, "file"),
                short(layer)
            )
        };
        out.push(Recommendation {
            kind: if rewrite {
                "avoid-rewriting-files"
            } else {
                "cleanup-in-same-layer"
            }
            .into(),
            message,
            saved_bytes: bytes,
            layer: Some(layer as u32),
            created_by: created(layer),
        });
    }

    // Caches left by package managers, per layer and tool.
    for (&(layer, category, tool), &bytes) in f.junk_by_tool {
        if category != Category::PackageCache {
            continue;
        }
        let Some((_, how)) = NO_CACHE_ADVICE.iter().find(|(t, _)| *t == tool) else {
            continue;
        };
        out.push(Recommendation {
            kind: "package-manager-cache".into(),
            message: format!(
                "{} leaves the {} cache in the image: {how}",
                short(layer),
                tool_name(tool)
            ),
            saved_bytes: bytes,
            layer: Some(layer as u32),
            created_by: created(layer),
        });
    }

    // Other junk categories: one piece of advice each, at the layer with the most of it.
    let per_category = |category: Category| -> Option<(u64, usize)> {
        let mut by_layer: BTreeMap<usize, u64> = BTreeMap::new();
        for (&(layer, c, _), &b) in f.junk_by_tool {
            if c == category {
                *by_layer.entry(layer).or_default() += b;
            }
        }
        let total = by_layer.values().sum();
        let top = by_layer.iter().max_by_key(|(_, b)| **b).map(|(l, _)| *l)?;
        Some((total, top))
    };
    let category_advice: &[(Category, &str, &str)] = &[
        (
            Category::Docs,
            "remove-docs",
            "documentation and manual pages ship in the image. Exclude them when installing (for dpkg, `path-exclude` rules for /usr/share/doc, /usr/share/man and /usr/share/info in /etc/dpkg/dpkg.cfg.d/, keeping copyright files) or delete them in the same RUN",
        ),
        (
            Category::Vcs,
            "dockerignore",
            "version-control history (.git and the like) was copied into the image. Add it to .dockerignore",
        ),
        (
            Category::Temp,
            "remove-temp-files",
            "files are left in /tmp or /var/tmp. Delete them in the RUN that creates them",
        ),
        (
            Category::Logs,
            "remove-logs",
            "build-time logs under /var/log ship in the image. Delete them in the RUN that writes them",
        ),
    ];
    for &(category, kind, what) in category_advice {
        if let Some((bytes, layer)) = per_category(category) {
            out.push(Recommendation {
                kind: kind.into(),
                message: format!("{}: {what}", capitalise(&short(layer))),
                saved_bytes: bytes,
                layer: Some(layer as u32),
                created_by: created(layer),
            });
        }
    }

    if let Some((bytes, layer)) = per_category(Category::BuildTools)
        && bytes >= MIN_BUILD_TOOLS
    {
        out.push(Recommendation {
            kind: "multi-stage-build".into(),
            message: format!(
                "Compilers, headers, static libraries or toolchains ship in this image (most from {}). Build in a `FROM … AS build` stage and COPY only the artifacts into a slim runtime stage",
                short(layer)
            ),
            saved_bytes: bytes,
            layer: Some(layer as u32),
            created_by: created(layer),
        });
    }

    if let Some(r) = slimmer_base(f) {
        out.push(r);
    }
    out.extend(layer_order(a));

    out.retain(|r| r.saved_bytes >= MIN_SAVING);
    out.sort_by(|x, y| {
        y.saved_bytes
            .cmp(&x.saved_bytes)
            .then_with(|| x.kind.cmp(&y.kind))
            .then_with(|| x.layer.cmp(&y.layer))
    });
    let mut per_kind: BTreeMap<String, usize> = BTreeMap::new();
    out.retain(|r| {
        let n = per_kind.entry(r.kind.clone()).or_default();
        *n += 1;
        *n <= MAX_PER_KIND
    });
    out
}

fn slimmer_base(f: &Facts<'_>) -> Option<Recommendation> {
    let a = f.analysis;
    let os = a.os.as_ref()?;
    let base_bytes = f.base_layer_final_bytes?;
    let &(_, suggestion, size) = SLIMMER_BASES.iter().find(|(id, _, _)| *id == os.id)?;
    if (base_bytes as f64) < size as f64 * BASE_EXCESS {
        return None;
    }
    let suggestion = suggestion.replace(
        "{codename}",
        os.version_codename.as_deref().unwrap_or("stable"),
    );
    let base = a
        .base_image
        .as_ref()
        .and_then(|b| b.name.clone())
        .unwrap_or_else(|| os.pretty_name.clone().unwrap_or_else(|| os.id.clone()));
    Some(Recommendation {
        kind: "slimmer-base".into(),
        message: format!(
            "The base ({base}) puts {} MB in the final image; {suggestion} is about {} MB. If the application does not need the rest, switch to it (or to a distroless base for a self-contained binary)",
            base_bytes / 1_000_000,
            size / 1_000_000
        ),
        saved_bytes: base_bytes - size,
        layer: Some(0),
        created_by: a.layers.first().and_then(|l| l.created_by.clone()),
    })
}

/// A broad `COPY` of the sources before a dependency install: every source change rebuilds and
/// re-ships the dependency layer.
fn layer_order(a: &ImageAnalysis) -> Option<Recommendation> {
    let copy = a.layers.iter().position(|l| {
        l.created_by.as_deref().is_some_and(|c| {
            let c = c.trim();
            let copy_at = c.find("COPY ").or_else(|| c.find("ADD "));
            copy_at.is_some_and(|i| {
                let args = &c[i..];
                args.contains(" . ") || args.ends_with(" .") || args.contains(" dir:")
            })
        })
    })?;
    let (dep, files) = a.layers.iter().skip(copy + 1).find_map(|l| {
        let c = l.created_by.as_deref()?;
        DEPENDENCY_INSTALLS
            .iter()
            .find(|(cmd, _)| c.contains(cmd))
            .map(|(_, files)| (l, *files))
    })?;
    Some(Recommendation {
        kind: "layer-order".into(),
        message: format!(
            "Layer {} copies the whole source tree before layer {} installs dependencies, so every source change rebuilds and re-ships the dependency layer. COPY {files} first, install, then COPY the rest",
            copy, dep.index
        ),
        // Rebuilds after a source change stop re-shipping the dependency layer.
        saved_bytes: dep.size_bytes,
        layer: Some(dep.index),
        created_by: dep.created_by.clone(),
    })
}

fn tool_name(t: Tool) -> &'static str {
    match t {
        Tool::Apt => "apt",
        Tool::Apk => "apk",
        Tool::Dnf => "dnf",
        Tool::Yum => "yum",
        Tool::Zypper => "zypper",
        Tool::Pip => "pip",
        Tool::Npm => "npm",
        Tool::Yarn => "yarn",
        Tool::Go => "Go",
        Tool::Cargo => "cargo",
        Tool::Gradle => "Gradle",
        Tool::Any => "build",
    }
}

/// `1 file`, `2 files`.
fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// A history line cut to `max` characters, with the shell prefix Docker adds removed.
pub fn shorten(created_by: &str, max: usize) -> String {
    let s = created_by
        .trim()
        .trim_start_matches("/bin/sh -c ")
        .trim_start_matches("#(nop) ")
        .trim();
    let s = s.strip_suffix("# buildkit").unwrap_or(s).trim_end();
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let cut: String = s.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}
