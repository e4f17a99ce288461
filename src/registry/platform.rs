//! Platforms (`os/architecture/variant`) and the choice of one manifest from an index.
//!
//! Names are normalised as containerd does, so `linux/aarch64`, `linux/arm64` and
//! `linux/arm64/v8` are one platform, and a 32-bit `arm` without a variant is `v7`.

use std::fmt;
use std::str::FromStr;

use oci_client::manifest::ImageIndexEntry;

/// A target platform.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Default for Platform {
    fn default() -> Self {
        Platform::new("linux", "amd64", None)
    }
}

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        let (architecture, variant) = normalize(architecture, variant);
        Platform {
            os: os.to_ascii_lowercase(),
            architecture,
            variant,
        }
    }

    /// Whether an index entry's platform is this one. A platform without a variant accepts any
    /// variant of its architecture.
    pub fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        let other = Platform::new(os, architecture, variant);
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_none() || self.variant == other.variant)
    }

    /// Picks the entry for this platform from an index: the first exact match, else the first
    /// entry of the architecture when no variant was asked for. Attestation manifests
    /// (`unknown/unknown`) never match.
    pub fn choose<'a>(&self, entries: &'a [ImageIndexEntry]) -> Option<&'a ImageIndexEntry> {
        let candidates = entries.iter().filter(|e| {
            e.platform.as_ref().is_some_and(|p| {
                self.matches(
                    &p.os.to_string(),
                    &p.architecture.to_string(),
                    p.variant.as_deref(),
                )
            })
        });
        let mut first = None;
        for e in candidates {
            let p = e.platform.as_ref().expect("filtered");
            let exact = Platform::new(
                &p.os.to_string(),
                &p.architecture.to_string(),
                p.variant.as_deref(),
            );
            if exact == *self {
                return Some(e);
            }
            first.get_or_insert(e);
        }
        first
    }

    /// The platforms an index offers, for error messages.
    pub fn list(entries: &[ImageIndexEntry]) -> Vec<String> {
        entries
            .iter()
            .filter_map(|e| e.platform.as_ref())
            .map(|p| {
                Platform::new(
                    &p.os.to_string(),
                    &p.architecture.to_string(),
                    p.variant.as_deref(),
                )
                .to_string()
            })
            .collect()
    }
}

fn normalize(architecture: &str, variant: Option<&str>) -> (String, Option<String>) {
    let arch = architecture.to_ascii_lowercase();
    let variant = variant
        .filter(|v| !v.is_empty())
        .map(|v| v.to_ascii_lowercase());
    match arch.as_str() {
        "x86_64" | "x86-64" | "amd64" => ("amd64".into(), variant.filter(|v| v != "v1")),
        "aarch64" | "arm64" => (
            "arm64".into(),
            Some(match variant.as_deref() {
                None | Some("8") | Some("v8") => "v8".into(),
                Some(v) => v.to_string(),
            }),
        ),
        "armhf" => ("arm".into(), Some("v7".into())),
        "armel" => ("arm".into(), Some("v6".into())),
        "arm" => (
            "arm".into(),
            Some(match variant.as_deref() {
                None | Some("7") | Some("v7") => "v7".into(),
                Some("5") => "v5".into(),
                Some("6") => "v6".into(),
                Some(v) => v.to_string(),
            }),
        ),
        "i386" | "i686" | "386" => ("386".into(), variant),
        _ => (arch, variant),
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A platform that is not `OS/ARCH[/VARIANT]`.
#[derive(Debug, thiserror::Error)]
#[error("invalid platform {0:?}: expected OS/ARCH[/VARIANT], for example linux/arm64/v8")]
pub struct PlatformParseError(String);

impl FromStr for Platform {
    type Err = PlatformParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform::new(os, arch, None)),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
                Ok(Platform::new(os, arch, Some(variant)))
            }
            _ => Err(PlatformParseError(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(digest: &str, platform: &str) -> ImageIndexEntry {
        let parts: Vec<&str> = platform.split('/').collect();
        serde_json::from_value(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": 1,
            "platform": {
                "os": parts[0],
                "architecture": parts[1],
                "variant": parts.get(2),
            }
        }))
        .unwrap()
    }

    #[test]
    fn parses_and_normalises_platforms() {
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(p, "linux/aarch64".parse().unwrap());
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert_eq!(
            "linux/x86_64".parse::<Platform>().unwrap().to_string(),
            "linux/amd64"
        );
        assert_eq!(
            "linux/arm".parse::<Platform>().unwrap().to_string(),
            "linux/arm/v7"
        );
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux/amd64/v2/x".parse::<Platform>().is_err());
    }

    #[test]
    fn chooses_the_variant_asked_for() {
        let index = vec![
            entry("sha256:a", "linux/amd64"),
            entry("sha256:b", "linux/arm/v7"),
            entry("sha256:c", "linux/arm64/v8"),
            entry("sha256:d", "unknown/unknown"),
        ];
        let pick = |p: &str| {
            p.parse::<Platform>()
                .unwrap()
                .choose(&index)
                .map(|e| e.digest.clone())
        };
        assert_eq!(pick("linux/amd64").as_deref(), Some("sha256:a"));
        assert_eq!(pick("linux/arm64/v8").as_deref(), Some("sha256:c"));
        assert_eq!(pick("linux/arm64").as_deref(), Some("sha256:c"));
        assert_eq!(pick("linux/arm/v7").as_deref(), Some("sha256:b"));
        assert_eq!(pick("linux/arm/v6"), None);
        assert_eq!(pick("windows/amd64"), None);
    }

    #[test]
    fn an_arm64_entry_without_variant_is_v8() {
        let index = vec![entry("sha256:x", "linux/arm64")];
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(p.choose(&index).unwrap().digest, "sha256:x");
    }
}
