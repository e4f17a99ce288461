//! Advice: what a senior engineer would tell the image's author, with the bytes each change saves.
//!
//! Each recommendation is computed from the findings (hidden files, junk per tool and layer) and
//! tied to the layer and history line (`created_by`) it concerns. Wording that depends on the
//! tool lives in tables below, one row per tool, so it can be read and changed in one place.

use std::collections::BTreeMap;

use super::packages::{BuildStage, MAX_COUNTED, Manager};
use super::rules::{Category, Classifier, Tool};
use super::{Counted, ImageAnalysis, Recommendation};
use crate::format::{capitalise, count, history_line};

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
    /// What a build stage keeps out, per layer that ships build tools and records what it
    /// installed (`packages::build_stage`).
    pub build_stages: &'a BTreeMap<usize, BuildStage>,
    pub classifier: &'a Classifier,
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

/// Junk left in the final filesystem, by category (package caches and build tools have rules
/// of their own): the kind of advice, and what to do.
const JUNK_ADVICE: &[(Category, &str, &str)] = &[
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

/// One recommendation rule: why its advice holds, and the function that gives it.
pub struct Rule {
    pub rationale: &'static str,
    pub advise: fn(&Facts<'_>) -> Vec<Recommendation>,
}

/// The rules. Their order does not change the result: recommendations are ranked afterwards.
pub const RULES: &[Rule] = &[
    Rule {
        rationale: "a later layer's delete hides a file but cannot unship it from the layer that made it",
        advise: deleted_later,
    },
    Rule {
        rationale: "a later layer's rewrite (often only a chown or chmod) ships a second copy of each file; package-manager state and logs (rules::PACKAGE_MANAGER_STATE) are left out: every install rewrites them, and no Dockerfile change but installing less often avoids that",
        advise: rewritten_later,
    },
    Rule {
        rationale: "a package manager's cache speeds up the next install, and a running container installs nothing",
        advise: package_caches,
    },
    Rule {
        rationale: "documentation, version-control history, temp files and build logs are never read at run time",
        advise: leftover_junk,
    },
    Rule {
        rationale: "compilers and headers are needed to build, not to run; a build stage keeps out everything the tool-installing step installed that nothing else in the image depends on (from the step's own dpkg or apk records), with its package records and, when the whole step goes, the package manager's state it rewrote",
        advise: build_tools,
    },
    Rule {
        rationale: "most of a full distribution base is never used by one application",
        advise: |f| slimmer_base(f).into_iter().collect(),
    },
    Rule {
        rationale: "a broad COPY before a dependency install re-ships the dependencies on every source change",
        advise: |f| layer_order(f).into_iter().collect(),
    },
];

/// Computes the recommendations, largest saving first.
pub fn advise(f: &Facts<'_>) -> Vec<Recommendation> {
    rank(RULES.iter().flat_map(|rule| (rule.advise)(f)).collect())
}

/// Drops advice below [`MIN_SAVING`], sorts by saving (then kind and layer, so equal savings
/// come out in a stable order) and keeps the largest [`MAX_PER_KIND`] of each kind.
fn rank(mut out: Vec<Recommendation>) -> Vec<Recommendation> {
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

impl Facts<'_> {
    /// The history line of a layer.
    fn created_by(&self, layer: usize) -> Option<String> {
        self.analysis
            .layers
            .get(layer)
            .and_then(|l| l.created_by.clone())
    }

    /// A layer as advice names it: `layer 2 (`RUN make`)`.
    fn layer_name(&self, layer: usize) -> String {
        match self.created_by(layer) {
            Some(c) => format!("layer {layer} (`{}`)", history_line(&c, 60)),
            None => format!("layer {layer}"),
        }
    }

    /// A recommendation about one layer.
    fn about(&self, layer: usize, kind: &str, message: String, saved_bytes: u64) -> Recommendation {
        Recommendation {
            kind: kind.into(),
            message,
            saved_bytes,
            layer: Some(layer as u32),
            created_by: self.created_by(layer),
            counted: Vec::new(),
        }
    }

    /// One recommendation per pair of layers where a later layer `by` hid files an earlier
    /// `layer` shipped, for files hidden by being overwritten (or by any other reason): `message`
    /// gets `(layer, by, files)`.
    fn hidden_later(
        &self,
        overwritten: bool,
        kind: &str,
        message: impl Fn(usize, usize, u64) -> String,
    ) -> Vec<Recommendation> {
        let mut hidden: BTreeMap<(usize, usize), (u64, u64)> = BTreeMap::new();
        for h in &self.analysis.hidden_files {
            // Duplicate entries within one tar are not a Dockerfile matter.
            if h.hidden_by_layer == h.layer || (h.reason == "overwritten") != overwritten {
                continue;
            }
            if overwritten
                && self
                    .classifier
                    .is_package_state(h.path.trim_start_matches('/').as_bytes())
            {
                continue;
            }
            let t = hidden
                .entry((h.layer as usize, h.hidden_by_layer as usize))
                .or_default();
            t.0 += h.size_bytes;
            t.1 += 1;
        }
        hidden
            .into_iter()
            .map(|((layer, by), (bytes, files))| {
                self.about(layer, kind, message(layer, by, files), bytes)
            })
            .collect()
    }

    /// Junk of one category: its bytes in all, and the layer with the most of it.
    fn junk_of(&self, category: Category) -> Option<(u64, usize)> {
        let mut by_layer: BTreeMap<usize, u64> = BTreeMap::new();
        for (&(layer, c, _), &b) in self.junk_by_tool {
            if c == category {
                *by_layer.entry(layer).or_default() += b;
            }
        }
        let total = by_layer.values().sum();
        let top = by_layer.iter().max_by_key(|(_, b)| **b).map(|(l, _)| *l)?;
        Some((total, top))
    }
}

fn deleted_later(f: &Facts<'_>) -> Vec<Recommendation> {
    f.hidden_later(false, "cleanup-in-same-layer", |layer, by, files| {
        format!(
            "{} deletes {} that {} created, but deleting in a later layer frees nothing. Remove them in the same RUN that creates them, or create them in a build stage",
            f.layer_name(by),
            count(files, "file"),
            f.layer_name(layer)
        )
    })
}

fn rewritten_later(f: &Facts<'_>) -> Vec<Recommendation> {
    f.hidden_later(true, "avoid-rewriting-files", |layer, by, files| {
        // Only when the step is itself a chown/chmod: a longer RUN that happens to contain one
        // rewrites files for other reasons too.
        let chown = f.created_by(by).is_some_and(|c| {
            let c = history_line(&c, usize::MAX);
            c.starts_with("chown ") || c.starts_with("chmod ")
        });
        let (what, how) = if chown {
            (
                ", only to change owner or mode",
                "Use `COPY --chown`/`--chmod` (or set them where the files are made) instead of a separate RUN",
            )
        } else {
            ("", "Produce the final version once, in one step")
        };
        format!(
            "{} rewrites {} that {} shipped{what}; both copies ship. {how}",
            f.layer_name(by),
            count(files, "file"),
            f.layer_name(layer)
        )
    })
}

/// One recommendation per layer and package manager that left its cache.
fn package_caches(f: &Facts<'_>) -> Vec<Recommendation> {
    f.junk_by_tool
        .iter()
        .filter(|((_, category, _), _)| *category == Category::PackageCache)
        .filter_map(|(&(layer, _, tool), &bytes)| {
            let (_, how) = NO_CACHE_ADVICE.iter().find(|(t, _)| *t == tool)?;
            let message = format!(
                "{} leaves the {} cache in the image: {how}",
                f.layer_name(layer),
                tool_name(tool)
            );
            Some(f.about(layer, "package-manager-cache", message, bytes))
        })
        .collect()
}

/// Other junk categories: one recommendation each, at the layer with the most of it.
fn leftover_junk(f: &Facts<'_>) -> Vec<Recommendation> {
    JUNK_ADVICE
        .iter()
        .filter_map(|&(category, kind, what)| {
            let (bytes, layer) = f.junk_of(category)?;
            let message = format!("{}: {what}", capitalise(&f.layer_name(layer)));
            Some(f.about(layer, kind, message, bytes))
        })
        .collect()
}

fn build_tools(f: &Facts<'_>) -> Vec<Recommendation> {
    let Some((glob_bytes, top)) = f.junk_of(Category::BuildTools) else {
        return Vec::new();
    };
    let layer = f
        .build_stages
        .iter()
        .max_by_key(|(l, s)| (s.total(), std::cmp::Reverse(**l)))
        .map_or(top, |(l, _)| *l);
    if glob_bytes < MIN_BUILD_TOOLS {
        return Vec::new();
    }
    // Per layer with build tools: what its step installed for building, by its own package
    // records; else the files the build-tool rules match.
    let mut saved = 0;
    let mut packages: Vec<(String, u64)> = Vec::new();
    let (mut state, mut by_rules) = (0, 0);
    let mut managers = Vec::new();
    for (&(l, c, _), &bytes) in f.junk_by_tool {
        if c == Category::BuildTools && !f.build_stages.contains_key(&l) {
            by_rules += bytes;
            saved += bytes;
        }
    }
    for stage in f.build_stages.values() {
        saved += stage.total();
        state += stage.state_bytes;
        packages.extend(stage.packages.iter().cloned());
        managers.push(stage.manager);
    }
    packages.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let named = packages.len();
    let mut counted: Vec<Counted> = packages
        .iter()
        .take(MAX_COUNTED)
        .map(|(name, bytes)| Counted {
            name: name.clone(),
            bytes: *bytes,
        })
        .collect();
    if named > MAX_COUNTED {
        counted.push(Counted {
            name: format!("({} other packages)", named - MAX_COUNTED),
            bytes: packages[MAX_COUNTED..].iter().map(|(_, b)| b).sum(),
        });
    }
    if state > 0 {
        counted.push(Counted {
            name: "(package manager state, logs and caches the step wrote)".into(),
            bytes: state,
        });
    }
    if by_rules > 0 && named > 0 {
        counted.push(Counted {
            name: "(files the build-tool rules match in layers without package records)".into(),
            bytes: by_rules,
        });
    }
    let message = if named == 0 {
        format!(
            "Compilers, headers, static libraries or toolchains ship in this image (most from {}). Build in a `FROM … AS build` stage and COPY only the artifacts into a slim runtime stage",
            f.layer_name(layer)
        )
    } else {
        let records = if managers.contains(&Manager::Apk) {
            "apk"
        } else {
            "dpkg"
        };
        let names: Vec<&str> = packages.iter().take(3).map(|(n, _)| n.as_str()).collect();
        let steps = f.build_stages.len();
        format!(
            "{} {} for building that nothing in the image needs at run time ({}'s records: {}{}). Build in a `FROM … AS build` stage and COPY only the artifacts into a slim runtime stage",
            capitalise(&f.layer_name(layer)),
            if steps > 1 {
                format!(
                    "and {} more install {}",
                    count(steps as u64 - 1, "layer"),
                    count(named as u64, "package")
                )
            } else {
                format!("installs {}", count(named as u64, "package"))
            },
            records,
            names.join(", "),
            if named > 3 { ", …" } else { "" }
        )
    };
    let mut r = f.about(layer, "multi-stage-build", message, saved);
    r.counted = counted;
    vec![r]
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
    let message = format!(
        "The base ({base}) puts {} MB in the final image; {suggestion} is about {} MB. If the application does not need the rest, switch to it (or to a distroless base for a self-contained binary)",
        base_bytes / 1_000_000,
        size / 1_000_000
    );
    Some(f.about(0, "slimmer-base", message, base_bytes - size))
}

/// A broad `COPY` of the sources before a dependency install: every source change rebuilds and
/// re-ships the dependency layer.
fn layer_order(f: &Facts<'_>) -> Option<Recommendation> {
    let a = f.analysis;
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
    let message = format!(
        "Layer {} copies the whole source tree before layer {} installs dependencies, so every source change rebuilds and re-ships the dependency layer. COPY {files} first, install, then COPY the rest",
        copy, dep.index
    );
    // Rebuilds after a source change stop re-shipping the dependency layer.
    Some(f.about(dep.index as usize, "layer-order", message, dep.size_bytes))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn advice(kind: &str, saved_bytes: u64, layer: u32) -> Recommendation {
        Recommendation {
            kind: kind.into(),
            message: String::new(),
            saved_bytes,
            layer: Some(layer),
            created_by: None,
            counted: Vec::new(),
        }
    }

    fn ranked(out: &[Recommendation]) -> Vec<(&str, u64, Option<u32>)> {
        out.iter()
            .map(|r| (r.kind.as_str(), r.saved_bytes, r.layer))
            .collect()
    }

    #[test]
    fn ranking_puts_the_largest_saving_first_and_breaks_ties_by_kind_then_layer() {
        let out = rank(vec![
            advice("remove-logs", 1 << 20, 1),
            advice("remove-docs", 2 << 20, 2),
            advice("remove-docs", 2 << 20, 1),
            advice("dockerignore", 2 << 20, 3),
        ]);
        assert_eq!(
            ranked(&out),
            vec![
                ("dockerignore", 2 << 20, Some(3)),
                ("remove-docs", 2 << 20, Some(1)),
                ("remove-docs", 2 << 20, Some(2)),
                ("remove-logs", 1 << 20, Some(1)),
            ]
        );
    }

    #[test]
    fn ranking_drops_small_savings_and_keeps_five_of_a_kind() {
        let mut out: Vec<Recommendation> = (0..7)
            .map(|i| advice("package-manager-cache", MIN_SAVING + i, i as u32))
            .collect();
        out.push(advice("remove-temp-files", MIN_SAVING - 1, 0));
        let out = rank(out);
        assert_eq!(out.len(), MAX_PER_KIND);
        assert!(out.iter().all(|r| r.kind == "package-manager-cache"));
        assert_eq!(out[0].saved_bytes, MIN_SAVING + 6);
    }
}

/// Advice on whole images written by the testkit: layers as tar streams, indexed as a scan
/// indexes them (so the package records are captured the way a real layer's are).
#[cfg(test)]
mod image_tests {
    use std::collections::BTreeMap;

    use crate::analysis::{
        Compression, HistoryEntry, ImageAnalysis, ImageInput, LayerIndex, LayerInput, LayerLimits,
        analyze, index_layer,
    };
    use crate::testkit::Layer;

    fn indexed(layers: Vec<Layer>) -> Vec<(LayerIndex, String)> {
        layers
            .into_iter()
            .map(|l| {
                let (tar, created_by) = l.into_tar();
                let ix = index_layer(&tar[..], Compression::Plain, &LayerLimits::default())
                    .expect("a valid layer");
                (ix, created_by)
            })
            .collect()
    }

    fn analyzed(layers: &[(LayerIndex, String)]) -> ImageAnalysis {
        analyze(&ImageInput {
            layers: layers
                .iter()
                .enumerate()
                .map(|(i, (ix, _))| LayerInput {
                    digest: format!("sha256:{i}"),
                    media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                    pull_bytes: 1,
                    index: Some(ix),
                    skipped: None,
                })
                .collect(),
            history: layers
                .iter()
                .map(|(_, c)| HistoryEntry {
                    created_by: Some(c.clone()),
                    ..Default::default()
                })
                .collect(),
            annotations: BTreeMap::new(),
        })
    }

    /// A dpkg status paragraph.
    fn status(name: &str, depends: &str) -> String {
        let mut p = format!("Package: {name}\nStatus: install ok installed\nVersion: 1\n");
        if !depends.is_empty() {
            p.push_str(&format!("Depends: {depends}\n"));
        }
        p + "\n"
    }

    /// A package's files as dpkg records them, and the files themselves (path, size).
    struct Pkg {
        name: &'static str,
        files: &'static [(&'static str, usize)],
    }

    impl Pkg {
        fn list(&self) -> String {
            self.files.iter().map(|(p, _)| format!("/{p}\n")).collect()
        }

        fn install(&self, mut layer: Layer) -> Layer {
            for (p, size) in self.files {
                layer = layer.sized(p, *size);
            }
            layer.file(
                &format!("var/lib/dpkg/info/{}.list", self.name),
                self.list().as_bytes(),
            )
        }

        /// Bytes a build stage saves for this package: its files and its `.list`.
        fn bytes(&self) -> u64 {
            self.files.iter().map(|(_, s)| *s as u64).sum::<u64>() + self.list().len() as u64
        }
    }

    const CPP_12: Pkg = Pkg {
        name: "cpp-12",
        files: &[
            ("usr/lib/gcc/x86_64-linux-gnu/12/cc1", 2_000_000),
            ("usr/bin/x86_64-linux-gnu-cpp-12", 100_000),
            ("usr/share/locale/de/LC_MESSAGES/cpp-12.mo", 300_000),
        ],
    };
    const LIBISL: Pkg = Pkg {
        name: "libisl23",
        files: &[("usr/lib/x86_64-linux-gnu/libisl.so.23.2.0", 600_000)],
    };
    const MAKE: Pkg = Pkg {
        name: "make",
        files: &[("usr/bin/make", 250_000)],
    };
    const LIBMPC: Pkg = Pkg {
        name: "libmpc3",
        files: &[("usr/lib/x86_64-linux-gnu/libmpc.so.3.3.1", 150_000)],
    };
    const LIBSSL: Pkg = Pkg {
        name: "libssl3",
        files: &[("usr/lib/x86_64-linux-gnu/libssl.so.3", 700_000)],
    };

    fn base() -> Layer {
        Layer::new("ADD rootfs.tar /")
            .sized("usr/lib/x86_64-linux-gnu/libc.so.6", 2_000_000)
            .file("var/lib/dpkg/status", status("libc6", "").as_bytes())
            .file(
                "var/lib/dpkg/info/libc6.list",
                b"/usr/lib/x86_64-linux-gnu/libc.so.6\n",
            )
    }

    #[test]
    fn a_build_step_saves_every_package_it_installed_for_building_and_keeps_what_others_need() {
        // The step installs cpp-12 (with libisl23 and libmpc3), make, and libssl3 for the
        // program; a later step installs a tool that needs libmpc3.
        let final_status = [
            status("libc6", ""),
            status("cpp-12", "libc6 (>= 2.34), libisl23 (>= 0.15), libmpc3"),
            status("libisl23", "libc6"),
            status("libmpc3", "libc6"),
            status("make", "libc6"),
            status("libssl3", "libc6"),
            status("mpc-tool", "libmpc3 (>= 1.0)"),
        ]
        .concat();
        let mut step = Layer::new("/bin/sh -c apt-get install -y cpp make libssl3 && make app")
            .sized("app/server", 3_000_000)
            .sized("var/lib/dpkg/info/cpp-12.md5sums", 4_000)
            .file(
                "var/lib/dpkg/status",
                &final_status.as_bytes()[..final_status.find("Package: mpc-tool").unwrap()],
            )
            .sized("var/log/dpkg.log", 20_000);
        for p in [&CPP_12, &LIBISL, &MAKE, &LIBMPC, &LIBSSL] {
            step = p.install(step);
        }
        let later = Layer::new("/bin/sh -c apt-get install -y mpc-tool")
            .sized("usr/bin/mpc-tool", 10_000)
            .file("var/lib/dpkg/status", final_status.as_bytes())
            .file("var/lib/dpkg/info/mpc-tool.list", b"/usr/bin/mpc-tool\n");
        let layers = indexed(vec![base(), step, later]);
        let a = analyzed(&layers);

        let r = a
            .recommendations
            .iter()
            .find(|r| r.kind == "multi-stage-build")
            .expect("multi-stage advice");
        let counted: Vec<(&str, u64)> = r
            .counted
            .iter()
            .map(|c| (c.name.as_str(), c.bytes))
            .collect();
        // libmpc3 stays (mpc-tool needs it), libssl3 stays (no tool pulled it in), the built
        // program stays; the step's dpkg state stays because the step still installs something.
        assert_eq!(
            counted,
            vec![
                ("cpp-12", CPP_12.bytes() + 4_000),
                ("libisl23", LIBISL.bytes()),
                ("make", MAKE.bytes()),
            ]
        );
        assert_eq!(
            r.saved_bytes,
            CPP_12.bytes() + 4_000 + LIBISL.bytes() + MAKE.bytes()
        );
        assert_eq!(r.layer, Some(1));
        assert!(r.message.contains("3 packages"), "{}", r.message);
        // The rules alone see only cc1 and the cpp driver.
        assert!(r.saved_bytes > 2_100_000 + 600_000);
    }

    #[test]
    fn a_step_that_only_installs_build_tools_also_saves_the_state_it_wrote() {
        let final_status = [
            status("libc6", ""),
            status("cpp-12", "libc6, libisl23"),
            status("libisl23", "libc6"),
        ]
        .concat();
        let mut step = Layer::new("/bin/sh -c apt-get install -y cpp-12 && make")
            .sized("app/server", 50_000)
            .file("var/lib/dpkg/status", final_status.as_bytes())
            .sized("etc/ld.so.cache", 30_000)
            .sized("var/log/dpkg.log", 20_000)
            .sized("var/cache/apt/pkgcache.bin", 100_000);
        for p in [&CPP_12, &LIBISL] {
            step = p.install(step);
        }
        let layers = indexed(vec![base(), step]);
        let a = analyzed(&layers);
        let r = a
            .recommendations
            .iter()
            .find(|r| r.kind == "multi-stage-build")
            .expect("multi-stage advice");
        let state = final_status.len() as u64 + 30_000 + 20_000 + 100_000;
        assert_eq!(
            r.saved_bytes,
            CPP_12.bytes() + LIBISL.bytes() + state,
            "{:?}",
            r.counted
        );
        assert_eq!(r.counted.last().unwrap().bytes, state);
    }

    #[test]
    fn a_shared_library_a_dev_package_depends_on_stays_for_the_program_built_against_it() {
        const LIBSSL_DEV: Pkg = Pkg {
            name: "libssl-dev",
            files: &[
                ("usr/include/openssl/ssl.h", 1_500_000),
                ("usr/lib/x86_64-linux-gnu/pkgconfig/libssl.pc", 300),
            ],
        };
        let final_status = [
            status("libc6", ""),
            status("libssl-dev", "libssl3 (= 3.0.15-1~deb12u1)"),
            status("libssl3", "libc6"),
        ]
        .concat();
        let mut step = Layer::new("/bin/sh -c apt-get install -y libssl-dev && make app")
            .sized("app/server", 500_000)
            .file("var/lib/dpkg/status", final_status.as_bytes());
        for p in [&LIBSSL_DEV, &LIBSSL] {
            step = p.install(step);
        }
        let a = analyzed(&indexed(vec![base(), step]));
        let r = a
            .recommendations
            .iter()
            .find(|r| r.kind == "multi-stage-build")
            .expect("multi-stage advice");
        let counted: Vec<(&str, u64)> = r
            .counted
            .iter()
            .map(|c| (c.name.as_str(), c.bytes))
            .collect();
        assert_eq!(counted, vec![("libssl-dev", LIBSSL_DEV.bytes())]);
    }

    #[test]
    fn apk_records_tell_what_a_step_installed() {
        let musl =
            "P:musl\nV:1.2.4-r2\np:so:libc.musl-x86_64.so.1=1\nF:lib\nR:ld-musl-x86_64.so.1\n\n";
        let tools = "P:gcc\nV:13.2.1-r0\nD:binutils so:libc.musl-x86_64.so.1 so:libisl.so.23\nF:usr/libexec/gcc/x86_64-alpine-linux-musl/13.2.1\nR:cc1\n\nP:binutils\nV:2.41-r0\nD:so:libc.musl-x86_64.so.1\nF:usr/bin\nR:ld.bfd\nR:objdump\n\nP:isl26\nV:0.26-r1\np:so:libisl.so.23=23\nF:usr/lib\nR:libisl.so.23\n\nP:make\nV:4.4.1-r2\nF:usr/bin\nR:make\n\n";
        let base = Layer::new("ADD alpine-minirootfs.tar.gz /")
            .sized("lib/ld-musl-x86_64.so.1", 600_000)
            .file("lib/apk/db/installed", musl.as_bytes());
        let db = format!("{musl}{tools}");
        let step = Layer::new("/bin/sh -c apk add gcc make && make")
            .sized(
                "usr/libexec/gcc/x86_64-alpine-linux-musl/13.2.1/cc1",
                3_000_000,
            )
            .sized("usr/bin/ld.bfd", 500_000)
            .sized("usr/bin/objdump", 400_000)
            .sized("usr/lib/libisl.so.23", 900_000)
            .sized("usr/bin/make", 200_000)
            .sized("app/server", 1_000_000)
            .file("lib/apk/db/installed", db.as_bytes());
        let a = analyzed(&indexed(vec![base, step]));
        let r = a
            .recommendations
            .iter()
            .find(|r| r.kind == "multi-stage-build")
            .expect("multi-stage advice");
        let counted: Vec<(&str, u64)> = r
            .counted
            .iter()
            .map(|c| (c.name.as_str(), c.bytes))
            .collect();
        assert_eq!(
            counted,
            vec![
                ("gcc", 3_000_000),
                ("binutils", 900_000),
                ("isl26", 900_000),
                ("make", 200_000),
                (
                    "(package manager state, logs and caches the step wrote)",
                    db.len() as u64
                ),
            ]
        );
        assert!(r.message.contains("apk"), "{}", r.message);
    }

    #[test]
    fn package_state_every_install_rewrites_is_not_advised_as_rewritten_files() {
        let step = |n: usize| {
            Layer::new(&format!("/bin/sh -c apt-get install -y tool{n}"))
                .sized("var/lib/dpkg/status", 200_000 + n)
                .sized("var/lib/dpkg/status-old", 199_000 + n)
                .sized("etc/ld.so.cache", 90_000 + n)
                .sized("var/log/dpkg.log", 70_000 + n)
                .sized("var/cache/debconf/templates.dat", 300_000 + n)
                .sized(&format!("usr/bin/tool{n}"), 10_000)
                .sized("app/config.json", 100_000 + n)
        };
        let a = analyzed(&indexed(vec![base(), step(1), step(2)]));
        let rewritten: Vec<_> = a
            .recommendations
            .iter()
            .filter(|r| r.kind == "avoid-rewriting-files")
            .collect();
        // Only the application's own rewrite is advice.
        assert_eq!(rewritten.len(), 1, "{:?}", a.recommendations);
        assert_eq!(rewritten[0].saved_bytes, 100_001);
        assert!(
            rewritten[0].message.contains("1 file"),
            "{}",
            rewritten[0].message
        );
    }

    #[test]
    fn an_image_that_follows_every_rule_gets_no_advice() {
        // The base has dpkg's state and the linker cache; the install (caches cleaned in the same
        // RUN) rewrites them, as every install must; the application is copied last.
        let base = base()
            .sized("etc/ld.so.cache", 60_000)
            .sized("var/lib/dpkg/status-old", 150_000);
        let install = Layer::new(
            "/bin/sh -c apt-get update && apt-get install -y --no-install-recommends tini && rm -rf /var/lib/apt/lists/*",
        )
        .sized("var/lib/dpkg/status", 180_000)
        .sized("var/lib/dpkg/status-old", 170_000)
        .sized("etc/ld.so.cache", 61_000)
        .sized("usr/bin/tini", 800_000)
        .file("var/lib/dpkg/info/tini.list", b"/usr/bin/tini\n");
        let app = Layer::new("COPY --chown=app server /app/server").sized("app/server", 5_000_000);
        let a = analyzed(&indexed(vec![base, install, app]));
        assert!(a.totals.wasted_bytes > 200_000);
        assert_eq!(a.recommendations, vec![]);
    }

    #[test]
    fn without_package_records_the_build_tool_rules_decide() {
        let step = Layer::new("/bin/sh -c ./install-toolchain.sh")
            .sized("usr/lib/gcc/x86_64-linux-gnu/12/cc1", 2_000_000)
            .sized("usr/bin/make", 250_000);
        let a = analyzed(&indexed(vec![base(), step]));
        let r = &a.recommendations[0];
        assert_eq!(
            (r.kind.as_str(), r.saved_bytes),
            ("multi-stage-build", 2_000_000)
        );
        assert!(r.counted.is_empty());
    }
}
