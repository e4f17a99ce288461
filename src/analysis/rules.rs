//! Junk in the final filesystem: files a running container does not need.
//!
//! The rules are data. Each names a category, a glob over canonical paths (no leading `/`), the
//! tool that left the files behind (for advice) and a one-line rationale. The first matching rule
//! wins, so every path lands in at most one category and nothing is counted twice. `Keep` rules
//! come first to carve out files that look like junk but are not. False positives are worse than
//! misses: a rule belongs here only if removing what it matches never breaks a runtime image.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

/// Junk categories (fixed names: dashboards and alerts use them).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// Package manager indexes, downloaded archives and language package caches.
    PackageCache,
    /// Manual pages, info pages and `/usr/share/doc`.
    Docs,
    /// Compilers, headers, static libraries and toolchains in a runtime image.
    BuildTools,
    /// Version-control metadata such as `.git`.
    Vcs,
    /// Files left in `/tmp` and `/var/tmp`.
    Temp,
    /// Log files under `/var/log`.
    Logs,
}

impl Category {
    pub const ALL: [Category; 6] = [
        Category::PackageCache,
        Category::Docs,
        Category::BuildTools,
        Category::Vcs,
        Category::Temp,
        Category::Logs,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::PackageCache => "package-cache",
            Category::Docs => "docs",
            Category::BuildTools => "build-tools",
            Category::Vcs => "vcs",
            Category::Temp => "temp",
            Category::Logs => "logs",
        }
    }
}

/// The tool whose leftovers a rule matches; advice is keyed on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tool {
    Apt,
    Apk,
    Dnf,
    Yum,
    Zypper,
    Pip,
    Npm,
    Yarn,
    Go,
    Cargo,
    Gradle,
    /// Not tied to one tool.
    Any,
}

/// What a rule does with a path it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Junk(Category, Tool),
    /// Looks like junk, but is not: stop here.
    Keep,
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub glob: &'static str,
    pub verdict: Verdict,
    pub rationale: &'static str,
}

use Category::*;
use Verdict::{Junk, Keep};

const fn junk(glob: &'static str, c: Category, t: Tool, rationale: &'static str) -> Rule {
    Rule {
        glob,
        verdict: Junk(c, t),
        rationale,
    }
}

/// The rules, in priority order.
pub const RULES: &[Rule] = &[
    Rule {
        glob: "usr/share/doc/*/copyright",
        verdict: Keep,
        rationale: "Debian licence files: distribution terms often require shipping them",
    },
    Rule {
        glob: "usr/share/doc/*/{LICENSE,LICENCE,COPYING,NOTICE}*",
        verdict: Keep,
        rationale: "licence texts may have to ship with the software",
    },
    // package-cache
    junk(
        "var/lib/apt/lists/**",
        PackageCache,
        Tool::Apt,
        "apt package indexes: `apt-get update` rebuilds them; nothing reads them at run time",
    ),
    junk(
        "var/cache/apt/**",
        PackageCache,
        Tool::Apt,
        "downloaded .deb archives and apt's binary caches",
    ),
    junk(
        "var/cache/apk/**",
        PackageCache,
        Tool::Apk,
        "apk index and package cache",
    ),
    junk(
        "var/cache/dnf/**",
        PackageCache,
        Tool::Dnf,
        "dnf metadata and package cache",
    ),
    junk(
        "var/cache/yum/**",
        PackageCache,
        Tool::Yum,
        "yum metadata and package cache",
    ),
    junk(
        "var/cache/zypp/**",
        PackageCache,
        Tool::Zypper,
        "zypper metadata and package cache",
    ),
    junk(
        "**/.cache/pip/**",
        PackageCache,
        Tool::Pip,
        "pip's HTTP and wheel cache",
    ),
    junk(
        "**/.npm/_cacache/**",
        PackageCache,
        Tool::Npm,
        "npm's content-addressed download cache",
    ),
    junk(
        "**/.cache/yarn/**",
        PackageCache,
        Tool::Yarn,
        "yarn's package cache",
    ),
    junk(
        "**/.yarn/cache/**",
        PackageCache,
        Tool::Yarn,
        "yarn's package cache",
    ),
    junk(
        "**/.cache/go-build/**",
        PackageCache,
        Tool::Go,
        "Go's build cache",
    ),
    junk(
        "**/pkg/mod/cache/**",
        PackageCache,
        Tool::Go,
        "Go's module download cache",
    ),
    junk(
        "**/.cargo/registry/cache/**",
        PackageCache,
        Tool::Cargo,
        "downloaded crate archives",
    ),
    junk(
        "**/.cargo/git/db/**",
        PackageCache,
        Tool::Cargo,
        "cargo's git dependency clones",
    ),
    junk(
        "**/.gradle/caches/**",
        PackageCache,
        Tool::Gradle,
        "Gradle's dependency and build caches",
    ),
    // docs
    junk(
        "usr/share/doc/**",
        Docs,
        Tool::Any,
        "package documentation: never read by a running service",
    ),
    junk("usr/share/man/**", Docs, Tool::Any, "manual pages"),
    junk("usr/local/share/man/**", Docs, Tool::Any, "manual pages"),
    junk("usr/share/info/**", Docs, Tool::Any, "GNU info pages"),
    junk("usr/share/gtk-doc/**", Docs, Tool::Any, "API documentation"),
    // build-tools
    junk(
        "usr/lib/gcc/**",
        BuildTools,
        Tool::Any,
        "GCC's compiler internals (cc1, collect2, crt files)",
    ),
    junk(
        "usr/libexec/gcc/**",
        BuildTools,
        Tool::Any,
        "GCC's compiler internals",
    ),
    junk(
        "usr/lib/llvm-*/**",
        BuildTools,
        Tool::Any,
        "an LLVM/Clang toolchain",
    ),
    junk(
        "usr/bin/{gcc,g++,c++,cpp,gfortran,clang,clang++,ld,ld.bfd,ld.gold,as}",
        BuildTools,
        Tool::Any,
        "compilers, assemblers and linkers",
    ),
    junk(
        "usr/bin/{gcc,g++,cpp,gfortran,clang,clang++}-[0-9]*",
        BuildTools,
        Tool::Any,
        "versioned compiler drivers",
    ),
    junk(
        "usr/bin/*-linux-gnu*-{gcc,g++,cpp,gfortran,ld,ld.bfd,ld.gold,as,lto-dump}*",
        BuildTools,
        Tool::Any,
        "target-prefixed compilers, assemblers and linkers",
    ),
    junk(
        "usr/include/**",
        BuildTools,
        Tool::Any,
        "C and C++ headers: needed to compile, not to run",
    ),
    junk(
        "usr/local/include/**",
        BuildTools,
        Tool::Any,
        "C and C++ headers: needed to compile, not to run",
    ),
    junk(
        "{usr/lib,usr/local/lib,lib}/**/*.a",
        BuildTools,
        Tool::Any,
        "static libraries: linked at build time, never loaded at run time",
    ),
    junk(
        "usr/local/go/**",
        BuildTools,
        Tool::Go,
        "a Go toolchain: Go programs are self-contained binaries",
    ),
    junk("usr/lib/go-*/**", BuildTools, Tool::Go, "a Go toolchain"),
    junk(
        "**/.rustup/toolchains/**",
        BuildTools,
        Tool::Cargo,
        "a Rust toolchain",
    ),
    junk(
        "usr/local/rustup/toolchains/**",
        BuildTools,
        Tool::Cargo,
        "a Rust toolchain",
    ),
    // vcs
    junk(
        "**/.git/**",
        Vcs,
        Tool::Any,
        "git history: keep it out of the build context with .dockerignore",
    ),
    junk("**/.svn/**", Vcs, Tool::Any, "Subversion metadata"),
    junk("**/.hg/**", Vcs, Tool::Any, "Mercurial history"),
    junk("**/.bzr/**", Vcs, Tool::Any, "Bazaar history"),
    // temp
    junk(
        "tmp/**",
        Temp,
        Tool::Any,
        "temporary files left by the build",
    ),
    junk(
        "var/tmp/**",
        Temp,
        Tool::Any,
        "temporary files left by the build",
    ),
    // logs
    junk(
        "var/log/**",
        Logs,
        Tool::Any,
        "build-time logs (dpkg, apt, installers)",
    ),
];

/// Package-manager state and logs: files every package install or removal rewrites (dpkg's
/// status and per-package records, the dynamic linker's cache, debconf's cache, install logs).
/// A later layer that installs anything ships them again, and no Dockerfile can avoid that except
/// by installing less often, so they are never advised as "rewritten files" to avoid; the
/// multi-stage advice counts a step's copies when the whole step would move to a build stage.
/// (Logs among them are still `logs` junk when they are large enough to matter.)
pub const PACKAGE_MANAGER_STATE: &[(&str, &str)] = &[
    (
        "var/lib/dpkg/**",
        "dpkg's database: status, status-old, available, per-package lists and scripts, triggers",
    ),
    (
        "var/log/{dpkg.log,alternatives.log,apt/**}",
        "dpkg and apt logs, appended to by every install",
    ),
    (
        "var/lib/apt/extended_states",
        "apt's record of automatically installed packages",
    ),
    (
        "var/cache/debconf/**",
        "debconf's answers and templates, rewritten by every package configuration",
    ),
    (
        "{etc/ld.so.cache,var/cache/ldconfig/**}",
        "the dynamic linker's cache, rebuilt by ldconfig after every library install",
    ),
    (
        "{lib/apk/db/**,etc/apk/world}",
        "apk's installed database and world file",
    ),
    (
        "{var/lib/rpm/**,usr/lib/sysimage/rpm/**,var/lib/dnf/**,var/lib/yum/**,var/log/{dnf,yum}*}",
        "the rpm database and dnf/yum history and logs",
    ),
];

/// Packages that are build tools by name although none of their files is a compiler, header or
/// static library (the junk rules find those): with them, the packages a step installed tell
/// which of its files a build stage would keep out of the runtime image.
pub const BUILD_TOOL_PACKAGES: &[(&str, &str)] = &[
    (
        "make",
        "runs the build; a program never calls make at run time",
    ),
    ("cmake", "generates the build"),
    ("ninja-build", "runs the build"),
    ("ninja", "runs the build (apk)"),
    ("meson", "generates the build"),
    ("autoconf", "generates configure scripts"),
    ("automake", "generates Makefiles"),
    ("libtool", "builds libraries"),
    ("libtool-bin", "builds libraries"),
    ("m4", "macro processor used by autotools"),
    ("bison", "parser generator"),
    ("flex", "scanner generator"),
    ("pkg-config", "finds libraries' build flags"),
    ("pkgconf", "finds libraries' build flags"),
    ("build-essential", "the Debian build toolchain meta-package"),
    ("build-base", "the Alpine build toolchain meta-package"),
    ("dpkg-dev", "Debian package build tools"),
    ("binutils", "assembler, linker and object tools"),
];

/// The compiled table.
#[derive(Debug, Clone)]
pub struct Classifier {
    set: GlobSet,
    state: GlobSet,
}

impl Default for Classifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Classifier {
    pub fn new() -> Self {
        let mut builder = GlobSetBuilder::new();
        for rule in RULES {
            let glob = GlobBuilder::new(rule.glob)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .unwrap_or_else(|e| panic!("junk rule {:?} is not a valid glob: {e}", rule.glob));
            builder.add(glob);
        }
        let mut state = GlobSetBuilder::new();
        for (glob, _) in PACKAGE_MANAGER_STATE {
            let glob = GlobBuilder::new(glob)
                .literal_separator(true)
                .build()
                .unwrap_or_else(|e| panic!("state rule {glob:?} is not a valid glob: {e}"));
            state.add(glob);
        }
        Classifier {
            set: builder.build().expect("the junk rule table compiles"),
            state: state.build().expect("the state rule table compiles"),
        }
    }

    /// Whether a canonical path is package-manager state ([`PACKAGE_MANAGER_STATE`]).
    pub fn is_package_state(&self, path: &[u8]) -> bool {
        self.state.is_match(bytes_to_path(path).as_ref())
    }

    /// Whether a package of this name is a build tool ([`BUILD_TOOL_PACKAGES`]).
    pub fn is_build_tool_package(name: &str) -> bool {
        BUILD_TOOL_PACKAGES.iter().any(|(n, _)| *n == name)
    }

    /// The first rule that matches a canonical path, if any.
    pub fn rule_for(&self, path: &[u8], scratch: &mut Vec<usize>) -> Option<&'static Rule> {
        let path = bytes_to_path(path);
        let candidate = globset::Candidate::new(path.as_ref());
        self.set.matches_candidate_into(&candidate, scratch);
        scratch.iter().min().map(|&i| &RULES[i])
    }

    /// The junk category and tool of a canonical path, if it is junk.
    pub fn classify(&self, path: &[u8], scratch: &mut Vec<usize>) -> Option<(Category, Tool)> {
        match self.rule_for(path, scratch)?.verdict {
            Junk(c, t) => Some((c, t)),
            Keep => None,
        }
    }
}

#[cfg(unix)]
fn bytes_to_path(path: &[u8]) -> std::borrow::Cow<'_, std::path::Path> {
    use std::os::unix::ffi::OsStrExt;
    std::borrow::Cow::Borrowed(std::path::Path::new(std::ffi::OsStr::from_bytes(path)))
}

#[cfg(not(unix))]
fn bytes_to_path(path: &[u8]) -> std::borrow::Cow<'_, std::path::Path> {
    std::borrow::Cow::Owned(std::path::PathBuf::from(
        String::from_utf8_lossy(path).into_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cat(path: &str) -> Option<Category> {
        let mut s = Vec::new();
        Classifier::new()
            .classify(path.as_bytes(), &mut s)
            .map(|(c, _)| c)
    }

    #[test]
    fn apt_leftovers_are_package_cache() {
        assert_eq!(
            cat(
                "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4"
            ),
            Some(PackageCache)
        );
        assert_eq!(
            cat("var/cache/apt/archives/curl_7.88.1-10_amd64.deb"),
            Some(PackageCache)
        );
        assert_eq!(cat("var/cache/apt/pkgcache.bin"), Some(PackageCache));
        // apt's own state is not a cache.
        assert_eq!(cat("var/lib/apt/extended_states"), None);
        assert_eq!(cat("var/lib/dpkg/status"), None);
    }

    #[test]
    fn language_caches_are_package_cache_anywhere() {
        assert_eq!(cat("root/.cache/pip/http/a/b/c"), Some(PackageCache));
        assert_eq!(
            cat("home/app/.npm/_cacache/index-v5/00/aa"),
            Some(PackageCache)
        );
        assert_eq!(
            cat("root/go/pkg/mod/cache/download/x.zip"),
            Some(PackageCache)
        );
        // Installed dependencies are what the application runs on.
        assert_eq!(cat("app/node_modules/express/index.js"), None);
        assert_eq!(cat("usr/lib/python3/dist-packages/six.py"), None);
    }

    #[test]
    fn licence_files_are_not_docs() {
        assert_eq!(cat("usr/share/doc/libc6/copyright"), None);
        assert_eq!(cat("usr/share/doc/libc6/changelog.Debian.gz"), Some(Docs));
        assert_eq!(cat("usr/share/man/man1/ls.1.gz"), Some(Docs));
    }

    #[test]
    fn compilers_headers_and_static_libraries_are_build_tools() {
        assert_eq!(cat("usr/bin/gcc-12"), Some(BuildTools));
        assert_eq!(cat("usr/bin/x86_64-linux-gnu-gcc-12"), Some(BuildTools));
        assert_eq!(cat("usr/lib/gcc/x86_64-linux-gnu/12/cc1"), Some(BuildTools));
        assert_eq!(cat("usr/include/stdio.h"), Some(BuildTools));
        assert_eq!(cat("usr/lib/x86_64-linux-gnu/libssl.a"), Some(BuildTools));
        // Shared libraries and ordinary tools are what programs run on.
        assert_eq!(cat("usr/lib/x86_64-linux-gnu/libssl.so.3"), None);
        assert_eq!(cat("usr/bin/gcov-dump-ish"), None);
        assert_eq!(cat("usr/bin/ls"), None);
        assert_eq!(cat("usr/bin/gcc-ar-wrapper-notes"), None);
    }

    #[test]
    fn vcs_temp_and_logs() {
        assert_eq!(cat("app/.git/objects/pack/pack-1.pack"), Some(Vcs));
        assert_eq!(cat("app/.gitignore"), None);
        assert_eq!(cat("tmp/build.tar.gz"), Some(Temp));
        assert_eq!(cat("var/log/dpkg.log"), Some(Logs));
        assert_eq!(cat("app/tmp/x"), None);
    }

    #[test]
    fn package_manager_state_is_what_every_install_rewrites() {
        let c = Classifier::new();
        for p in [
            "var/lib/dpkg/status",
            "var/lib/dpkg/status-old",
            "var/lib/dpkg/info/make.list",
            "var/log/dpkg.log",
            "var/log/apt/history.log",
            "etc/ld.so.cache",
            "var/cache/ldconfig/aux-cache",
            "var/cache/debconf/templates.dat",
            "lib/apk/db/installed",
            "var/lib/rpm/rpmdb.sqlite",
        ] {
            assert!(c.is_package_state(p.as_bytes()), "{p}");
        }
        for p in [
            "etc/ld.so.conf",
            "var/log/nginx/access.log",
            "var/lib/apt/lists/x_Packages",
            "usr/lib/dpkg/methods/apt/setup",
            "app/var/lib/dpkg/status",
        ] {
            assert!(!c.is_package_state(p.as_bytes()), "{p}");
        }
    }

    #[test]
    fn every_path_has_at_most_one_category() {
        // `.git` under /tmp is both; the first rule (temp comes after vcs) decides.
        assert_eq!(cat("tmp/repo/.git/HEAD"), Some(Vcs));
    }
}
