//! What a step installed, read from the package manager's own records in its layer, and what a
//! build stage would keep out of the runtime image.
//!
//! dpkg writes `var/lib/dpkg/info/NAME.list` (the package's paths) for every package it unpacks
//! and rewrites `var/lib/dpkg/status` (every installed package with its dependencies); apk
//! rewrites `lib/apk/db/installed` (`P:` name, `V:` version, `D:` dependencies, `p:` what it
//! provides, `F:` directories and `R:` files). A layer's index captures those files
//! ([`super::layer::CapturePolicy`]), so a step's installs are the packages whose record that
//! layer wrote and the final filesystem still has.
//!
//! For a step that installed build tools, what a build stage saves is exact and explainable:
//!
//! 1. the tools: packages the step installed that own a compiler, header, static library or
//!    toolchain file (the junk rules) or are build tools by name
//!    ([`super::rules::BUILD_TOOL_PACKAGES`]);
//! 2. the candidates: the tools and what they pulled in (Depends, Pre-Depends, Recommends)
//!    among the packages the same step installed;
//! 3. what stays: every other installed package and everything it depends on (Depends,
//!    Pre-Depends), whatever layer installed it, and the shared libraries a `-dev` package
//!    depends on (what a program built against its headers loads); a candidate that stays is
//!    not counted;
//! 4. the bytes: the files of the counted packages that the step's layer ships and the final
//!    filesystem shows, their dpkg records, and, when the step installed nothing else, the
//!    package manager's state and caches that the step rewrote (the runtime stage would not
//!    have run the install at all).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::LayerIndex;
use super::layer::dpkg_list_package;
use super::overlay::Overlay;
use super::rules::{Category, Classifier};

const DPKG_STATUS: &[u8] = b"var/lib/dpkg/status";
const DPKG_INFO: &[u8] = b"var/lib/dpkg/info/";
const APK_INSTALLED: &[u8] = b"lib/apk/db/installed";

/// Packages listed by name in a recommendation; the rest are folded into one entry.
pub const MAX_COUNTED: usize = 12;

/// One installed package as its database records it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbPackage {
    pub name: String,
    /// Hard dependencies (Depends, Pre-Depends): each a list of alternatives.
    pub depends: Vec<Vec<String>>,
    /// Soft ones (Recommends), which an install pulls in unless told not to.
    pub recommends: Vec<Vec<String>>,
    /// Names it provides (virtual packages, apk's `so:` and `cmd:` names).
    pub provides: Vec<String>,
    /// apk only: its version and files (dpkg keeps files in `.list` files).
    pub version: String,
    pub files: Vec<Vec<u8>>,
}

/// Which package manager's records a step's installs were read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    Dpkg,
    Apk,
}

/// The bytes a build stage would keep out of the image, for one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildStage {
    pub manager: Manager,
    /// Counted packages and the bytes of each, largest first.
    pub packages: Vec<(String, u64)>,
    /// The package manager's state and caches the step wrote (0 unless every package the step
    /// installed is counted).
    pub state_bytes: u64,
    /// Packages the step installed that stay (a package outside the step needs them).
    pub kept: Vec<String>,
}

impl BuildStage {
    pub fn total(&self) -> u64 {
        self.packages.iter().map(|(_, b)| b).sum::<u64>() + self.state_bytes
    }
}

/// Parses dpkg's status file: the packages whose status says `installed`.
pub fn parse_dpkg_status(text: &[u8]) -> Vec<DbPackage> {
    let text = String::from_utf8_lossy(text);
    let mut out = Vec::new();
    for paragraph in text.split("\n\n") {
        let mut fields: BTreeMap<&str, String> = BTreeMap::new();
        let mut last: Option<&str> = None;
        for line in paragraph.lines() {
            if line.starts_with([' ', '\t']) {
                if let Some(k) = last
                    && let Some(v) = fields.get_mut(k)
                {
                    v.push(' ');
                    v.push_str(line.trim());
                }
                continue;
            }
            if let Some((k, v)) = line.split_once(':') {
                fields.insert(k.trim(), v.trim().to_string());
                last = Some(k.trim());
            }
        }
        let installed = fields
            .get("Status")
            .is_some_and(|s| s.split_whitespace().nth(2) == Some("installed"));
        let Some(name) = fields.get("Package").filter(|_| installed) else {
            continue;
        };
        let deps = |key: &str| {
            fields
                .get(key)
                .map(|v| dpkg_relations(v))
                .unwrap_or_default()
        };
        let mut depends = deps("Depends");
        depends.extend(deps("Pre-Depends"));
        out.push(DbPackage {
            name: name.clone(),
            depends,
            recommends: deps("Recommends"),
            provides: deps("Provides").into_iter().flatten().collect(),
            version: fields.get("Version").cloned().unwrap_or_default(),
            files: Vec::new(),
        });
    }
    out
}

/// `a (>= 1), b | c:any` -> `[[a], [b, c]]`.
fn dpkg_relations(v: &str) -> Vec<Vec<String>> {
    v.split(',')
        .map(|group| {
            group
                .split('|')
                .filter_map(|alt| {
                    let name = alt.split(['(', ' ']).find(|s| !s.is_empty())?;
                    let name = name.split(':').next().unwrap_or(name);
                    Some(name.to_string())
                })
                .collect::<Vec<_>>()
        })
        .filter(|g| !g.is_empty())
        .collect()
}

/// Parses apk's installed database.
pub fn parse_apk_installed(text: &[u8]) -> Vec<DbPackage> {
    let mut out = Vec::new();
    let mut current: Option<DbPackage> = None;
    let mut dir: Vec<u8> = Vec::new();
    // apk's tokens: `name`, `name>=1.2`, `so:libc.musl-x86_64.so.1`, `!conflict`.
    let token = |t: &[u8]| -> Option<String> {
        if t.starts_with(b"!") || t.is_empty() {
            return None;
        }
        let end = t
            .iter()
            .position(|b| matches!(b, b'<' | b'>' | b'=' | b'~'))
            .unwrap_or(t.len());
        (end > 0).then(|| String::from_utf8_lossy(&t[..end]).into_owned())
    };
    for line in text.split(|&b| b == b'\n') {
        if line.is_empty() {
            out.extend(current.take());
            continue;
        }
        let (Some(&key), Some(b':')) = (line.first(), line.get(1)) else {
            continue;
        };
        let value = &line[2..];
        if key == b'P' {
            out.extend(current.take());
            current = Some(DbPackage {
                name: String::from_utf8_lossy(value).into_owned(),
                ..Default::default()
            });
            dir.clear();
            continue;
        }
        let Some(p) = current.as_mut() else { continue };
        match key {
            b'V' => p.version = String::from_utf8_lossy(value).into_owned(),
            b'D' => p.depends.extend(
                value
                    .split(|&b| b == b' ')
                    .filter_map(token)
                    .map(|t| vec![t]),
            ),
            b'p' => p
                .provides
                .extend(value.split(|&b| b == b' ').filter_map(token)),
            b'F' => dir = value.to_vec(),
            b'R' => {
                let mut path = dir.clone();
                if !path.is_empty() {
                    path.push(b'/');
                }
                path.extend_from_slice(value);
                p.files.push(path);
            }
            _ => {}
        }
    }
    out.extend(current);
    out
}

/// What one layer installed: each package with its paths (canonical), and the database that
/// holds their dependencies.
#[derive(Debug, Clone)]
pub struct StepInstalls {
    pub manager: Manager,
    pub packages: BTreeMap<String, Vec<Vec<u8>>>,
    /// The final package database (dependencies of everything installed).
    pub db: Vec<DbPackage>,
}

/// The captured content of the entry at `entry` of a layer, if captured.
fn captured(index: &LayerIndex, entry: u32) -> Option<&[u8]> {
    index
        .captured
        .iter()
        .find(|c| c.entry == entry)
        .map(|c| c.content.as_slice())
}

/// The captured content of the final filesystem's file at `path`.
fn final_content<'a>(
    overlay: &Overlay<'_>,
    layers: &[&'a LayerIndex],
    path: &[u8],
) -> Option<&'a [u8]> {
    let c = &overlay.contents()[overlay.content_at(path)? as usize];
    captured(layers[c.layer], c.entry)
}

/// A `.list` line as a canonical path (`/usr/bin/make` -> `usr/bin/make`); `None` for the root.
fn list_path(line: &[u8]) -> Option<Vec<u8>> {
    let mut p = line;
    while let Some(rest) = p.strip_prefix(b"/") {
        p = rest;
    }
    while let Some(rest) = p.strip_suffix(b"/") {
        p = rest;
    }
    (!p.is_empty() && p != b".").then(|| p.to_vec())
}

/// What layer `j` (overlay position) installed, from dpkg's or apk's records; `None` when the
/// layer holds no package records the final filesystem still shows.
pub fn step_installs(
    overlay: &Overlay<'_>,
    layers: &[&LayerIndex],
    j: usize,
) -> Option<StepInstalls> {
    let index = layers[j];
    let contents: HashMap<u32, &[u8]> = index
        .captured
        .iter()
        .map(|c| (c.entry, c.content.as_slice()))
        .collect();
    // dpkg: the file lists this layer wrote that are still the final ones.
    let mut packages = BTreeMap::new();
    for (i, e) in index.entries().enumerate() {
        let Some(name) = dpkg_list_package(e.path) else {
            continue;
        };
        let Some(c) = overlay.content_at(e.path) else {
            continue;
        };
        let c = &overlay.contents()[c as usize];
        if c.layer != j || c.entry != i as u32 {
            continue;
        }
        let Some(text) = contents.get(&(i as u32)) else {
            continue;
        };
        let name = String::from_utf8_lossy(name);
        let name = name.split(':').next().unwrap_or(&name).to_string();
        let paths = text.split(|&b| b == b'\n').filter_map(list_path).collect();
        packages.insert(name, paths);
    }
    if !packages.is_empty() {
        let db = final_content(overlay, layers, DPKG_STATUS)
            .map(parse_dpkg_status)
            .unwrap_or_default();
        return Some(StepInstalls {
            manager: Manager::Dpkg,
            packages,
            db,
        });
    }
    // apk: the database this layer wrote, against the one below it.
    let (i, _) = index
        .entries()
        .enumerate()
        .filter(|(_, e)| e.path == APK_INSTALLED)
        .last()?;
    let mine = parse_apk_installed(captured(index, i as u32)?);
    let below: BTreeSet<(String, String)> = layers[..j]
        .iter()
        .rev()
        .find_map(|l| {
            let (i, _) = l
                .entries()
                .enumerate()
                .filter(|(_, e)| e.path == APK_INSTALLED)
                .last()?;
            Some(parse_apk_installed(captured(l, i as u32)?))
        })
        .unwrap_or_default()
        .into_iter()
        .map(|p| (p.name, p.version))
        .collect();
    let packages: BTreeMap<String, Vec<Vec<u8>>> = mine
        .iter()
        .filter(|p| !below.contains(&(p.name.clone(), p.version.clone())))
        .map(|p| (p.name.clone(), p.files.clone()))
        .collect();
    if packages.is_empty() {
        return None;
    }
    let db = final_content(overlay, layers, APK_INSTALLED)
        .map(parse_apk_installed)
        .unwrap_or(mine);
    Some(StepInstalls {
        manager: Manager::Apk,
        packages,
        db,
    })
}

/// Every package reachable from `roots` through `edges`, resolving names through `provides`.
fn closure<'a>(
    roots: impl IntoIterator<Item = &'a str>,
    db: &'a BTreeMap<&'a str, &'a DbPackage>,
    providers: &'a BTreeMap<&'a str, Vec<&'a str>>,
    soft: bool,
    within: Option<&BTreeSet<&'a str>>,
) -> BTreeSet<&'a str> {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut todo: Vec<&str> = roots.into_iter().collect();
    while let Some(name) = todo.pop() {
        if within.is_some_and(|w| !w.contains(name)) || !seen.insert(name) {
            continue;
        }
        let Some(p) = db.get(name) else { continue };
        let groups = p
            .depends
            .iter()
            .chain(soft.then_some(&p.recommends).into_iter().flatten());
        for alt in groups.flatten() {
            if db.contains_key(alt.as_str()) {
                todo.push(alt);
            }
            if let Some(ps) = providers.get(alt.as_str()) {
                todo.extend(ps.iter().copied());
            }
        }
    }
    seen
}

/// What a build stage keeps out of the image for layer `j`'s step (see the module docs); `None`
/// when the step installed no build tool by its records.
pub fn build_stage(
    overlay: &Overlay<'_>,
    layers: &[&LayerIndex],
    j: usize,
    classifier: &Classifier,
) -> Option<BuildStage> {
    let step = step_installs(overlay, layers, j)?;
    let mut scratch = Vec::new();
    let tools: Vec<&str> = step
        .packages
        .iter()
        .filter(|(name, paths)| {
            Classifier::is_build_tool_package(name)
                || paths.iter().any(|p| {
                    matches!(
                        classifier.classify(p, &mut scratch),
                        Some((Category::BuildTools, _))
                    )
                })
        })
        .map(|(name, _)| name.as_str())
        .collect();
    if tools.is_empty() {
        return None;
    }
    let db: BTreeMap<&str, &DbPackage> = step.db.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut providers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for p in &step.db {
        for v in &p.provides {
            providers
                .entry(v.as_str())
                .or_default()
                .push(p.name.as_str());
        }
    }
    let installed: BTreeSet<&str> = step.packages.keys().map(String::as_str).collect();
    let mut candidates = closure(
        tools.iter().copied(),
        &db,
        &providers,
        true,
        Some(&installed),
    );
    // A tool missing from the database (no status captured) still counts itself.
    candidates.extend(tools.iter().copied());
    // A shared library that a `-dev` package depends on is what programs built against its
    // headers load at run time: it stays.
    let ships_library = |name: &str| {
        step.packages.get(name).is_some_and(|paths| {
            paths.iter().any(|p| {
                let file = p.rsplit(|&b| b == b'/').next().unwrap_or(p);
                file.windows(4).any(|w| w == b".so.") || file.ends_with(b".so")
            })
        })
    };
    let linked: Vec<&str> = tools
        .iter()
        .filter(|t| t.ends_with("-dev"))
        .filter_map(|t| db.get(t))
        .flat_map(|p| p.depends.iter().flatten())
        .flat_map(|alt| {
            let own = db.get_key_value(alt.as_str()).map(|(k, _)| *k);
            own.into_iter()
                .chain(providers.get(alt.as_str()).into_iter().flatten().copied())
        })
        .filter(|n| !tools.contains(n) && ships_library(n))
        .collect();
    let others = db
        .keys()
        .copied()
        .filter(|n| !candidates.contains(n))
        .chain(
            installed
                .iter()
                .copied()
                .filter(|n| !candidates.contains(n)),
        )
        .chain(linked);
    let needed = closure(others, &db, &providers, false, None);
    let counted: BTreeSet<&str> = candidates
        .iter()
        .copied()
        .filter(|n| !needed.contains(n))
        .collect();

    // The step's files the final filesystem shows, each content once.
    let mut files: BTreeMap<&[u8], (u32, u64)> = BTreeMap::new();
    for (p, c) in overlay.visible_files() {
        let content = &overlay.contents()[c as usize];
        if content.layer == j {
            files.insert(p, (c, content.size));
        }
    }
    let mut taken: BTreeSet<u32> = BTreeSet::new();
    let mut take = |p: &[u8], files: &BTreeMap<&[u8], (u32, u64)>| -> u64 {
        match files.get(p) {
            Some(&(c, size)) if taken.insert(c) => size,
            _ => 0,
        }
    };
    let mut packages: Vec<(String, u64)> = Vec::new();
    for name in &counted {
        let mut bytes = 0;
        for p in &step.packages[*name] {
            bytes += take(p, &files);
            // Merged /usr: dpkg lists /bin/x, the layer ships usr/bin/x.
            if !p.starts_with(b"usr/") {
                bytes += take(&[&b"usr/"[..], p].concat(), &files);
            }
        }
        if step.manager == Manager::Dpkg {
            let records: Vec<&[u8]> = files
                .range(DPKG_INFO..)
                .take_while(|(p, _)| p.starts_with(DPKG_INFO))
                .map(|(p, _)| *p)
                .filter(|p| {
                    let rest = &p[DPKG_INFO.len()..];
                    rest.strip_prefix(name.as_bytes())
                        .is_some_and(|r| r.starts_with(b".") || r.starts_with(b":"))
                })
                .collect();
            for p in records {
                bytes += take(p, &files);
            }
        }
        packages.push((name.to_string(), bytes));
    }
    packages.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut state_bytes = 0;
    if counted.len() == installed.len() {
        for (p, _) in files.clone() {
            let state = classifier.is_package_state(p)
                || matches!(
                    classifier.classify(p, &mut scratch),
                    Some((Category::PackageCache, _))
                );
            if state {
                state_bytes += take(p, &files);
            }
        }
    }
    let kept = installed
        .iter()
        .filter(|n| !counted.contains(*n))
        .map(|n| n.to_string())
        .collect();
    Some(BuildStage {
        manager: step.manager,
        packages,
        state_bytes,
        kept,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_status_gives_installed_packages_and_their_relations() {
        let status = b"Package: cpp-12\nStatus: install ok installed\nDepends: gcc-12-base (= 12.2.0-14), libc6 (>= 2.34), libisl23 (>= 0.15)\nRecommends: foo | bar:any\n\nPackage: gone\nStatus: deinstall ok config-files\n\nPackage: mawk\nStatus: install ok installed\nPre-Depends: libc6 (>= 2.34)\nProvides: awk\nDescription: a\n pattern scanner\n";
        let db = parse_dpkg_status(status);
        assert_eq!(db.len(), 2);
        assert_eq!(db[0].name, "cpp-12");
        assert_eq!(
            db[0].depends,
            vec![vec!["gcc-12-base"], vec!["libc6"], vec!["libisl23"]]
        );
        assert_eq!(db[0].recommends, vec![vec!["foo", "bar"]]);
        assert_eq!(db[1].depends, vec![vec!["libc6"]]);
        assert_eq!(db[1].provides, vec!["awk"]);
    }

    #[test]
    fn apk_installed_gives_files_dependencies_and_provides() {
        let db = b"C:Q1x\nP:make\nV:4.4.1-r2\nD:so:libc.musl-x86_64.so.1\nF:usr/bin\nR:make\nF:usr/share/doc/make\nR:README\n\nP:musl\nV:1.2.4-r2\np:so:libc.musl-x86_64.so.1=1\nF:lib\nR:ld-musl-x86_64.so.1\n";
        let db = parse_apk_installed(db);
        assert_eq!(db.len(), 2);
        assert_eq!(db[0].name, "make");
        assert_eq!(db[0].version, "4.4.1-r2");
        assert_eq!(db[0].depends, vec![vec!["so:libc.musl-x86_64.so.1"]]);
        assert_eq!(
            db[0].files,
            vec![
                b"usr/bin/make".to_vec(),
                b"usr/share/doc/make/README".to_vec()
            ]
        );
        assert_eq!(db[1].provides, vec!["so:libc.musl-x86_64.so.1"]);
    }

    #[test]
    fn list_lines_become_canonical_paths() {
        assert_eq!(list_path(b"/."), None);
        assert_eq!(list_path(b"/usr/bin/make"), Some(b"usr/bin/make".to_vec()));
        assert_eq!(list_path(b"/usr/share/"), Some(b"usr/share".to_vec()));
    }
}
