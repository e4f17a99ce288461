//! Tar entry names to the canonical form the waste math compares.
//!
//! Paths are compared as bytes: no Unicode normalisation, no case folding, symlinks never
//! followed. A name is canonical when it is relative, has no empty or `.` components and no
//! trailing slash, so `./usr/bin/`, `/usr/bin` and `usr//bin` are one path. A `..` component is
//! refused rather than clamped: a layer that tries to climb out of the root is hostile input, and
//! guessing what a runtime would have made of it could only produce a wrong report.

use std::fmt;

/// The longest path accepted, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;

/// Why a tar entry name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// A `..` component.
    ParentComponent,
    /// Longer than [`MAX_PATH_BYTES`].
    TooLong(usize),
    /// A NUL byte inside the name.
    Nul,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::ParentComponent => f.write_str("path climbs out of the root with '..'"),
            PathError::TooLong(n) => write!(f, "path is {n} bytes long (limit {MAX_PATH_BYTES})"),
            PathError::Nul => f.write_str("path contains a NUL byte"),
        }
    }
}

/// Appends the canonical form of `raw` to `out` and returns whether anything was appended
/// (`false` for the root itself: `.`, `./`, `/`).
pub fn push_canonical(raw: &[u8], out: &mut Vec<u8>) -> Result<bool, PathError> {
    if raw.contains(&0) {
        return Err(PathError::Nul);
    }
    let start = out.len();
    for component in raw.split(|&b| b == b'/') {
        match component {
            b"" | b"." => continue,
            b".." => {
                out.truncate(start);
                return Err(PathError::ParentComponent);
            }
            c => {
                if out.len() > start {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    let len = out.len() - start;
    if len > MAX_PATH_BYTES {
        out.truncate(start);
        return Err(PathError::TooLong(len));
    }
    Ok(len > 0)
}

/// The canonical form of `raw` as a new vector (`None` for the root).
pub fn canonical(raw: &[u8]) -> Result<Option<Vec<u8>>, PathError> {
    let mut out = Vec::with_capacity(raw.len());
    Ok(push_canonical(raw, &mut out)?.then_some(out))
}

/// Splits a canonical path into its parent directory (empty for the root) and its last component.
pub fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// The proper ancestors of a canonical path, nearest to the root first (`a`, `a/b` for `a/b/c`).
pub fn ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'/')
        .map(move |(i, _)| &path[..i])
}

/// Lossy text of a path for people (reports, logs); bytes that are not UTF-8 become U+FFFD.
pub fn display(path: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(raw: &str) -> Option<String> {
        canonical(raw.as_bytes())
            .unwrap()
            .map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn leading_dot_slash_and_trailing_slash_are_stripped() {
        assert_eq!(c("./usr/bin/"), Some("usr/bin".into()));
        assert_eq!(c("/usr/bin"), Some("usr/bin".into()));
        assert_eq!(c("usr//./bin"), Some("usr/bin".into()));
        assert_eq!(c("././etc"), Some("etc".into()));
    }

    #[test]
    fn the_root_has_no_canonical_path() {
        assert_eq!(c("."), None);
        assert_eq!(c("./"), None);
        assert_eq!(c("/"), None);
        assert_eq!(c(""), None);
    }

    #[test]
    fn parent_components_are_refused() {
        assert_eq!(canonical(b"../etc/passwd"), Err(PathError::ParentComponent));
        assert_eq!(canonical(b"a/../../b"), Err(PathError::ParentComponent));
        // A name that merely starts with dots is an ordinary name.
        assert_eq!(c("a/..b/...").unwrap(), "a/..b/...");
    }

    #[test]
    fn overlong_paths_are_refused() {
        let long = "a/".repeat(3000);
        assert_eq!(canonical(long.as_bytes()), Err(PathError::TooLong(5999)));
    }

    #[test]
    fn bytes_are_compared_without_normalisation() {
        let composed = canonical("caf\u{e9}".as_bytes()).unwrap();
        let decomposed = canonical("cafe\u{301}".as_bytes()).unwrap();
        assert_ne!(composed, decomposed);
        let latin1 = canonical(b"caf\xe9").unwrap().unwrap();
        assert_eq!(latin1, b"caf\xe9");
    }

    #[test]
    fn parents_and_ancestors() {
        assert_eq!(split_parent(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split_parent(b"c"), (&b""[..], &b"c"[..]));
        let a: Vec<&[u8]> = ancestors(b"a/b/c").collect();
        assert_eq!(a, vec![&b"a"[..], &b"a/b"[..]]);
    }
}
