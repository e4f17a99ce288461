//! The human-readable rendering of one image's findings (`scan`'s default output).
//!
//! Sections in the order a reader asks: what the image is, what it weighs, which layer made
//! the weight, which files are hidden, which junk is left, and what to change. Each section is
//! one function that appends lines; empty sections are left out.

use std::fmt::Write as _;

use crate::analysis::ImageAnalysis;
use crate::format::{count, fit, history_line, percent, size, wrap};
use crate::report::ImageFindings;

/// Hidden files listed (the heading gives the count of all of them).
const HIDDEN_FILES_SHOWN: usize = 10;

/// Renders findings as text. `width` bounds the history and path columns (clamped to
/// 60..=200 characters).
pub fn render(f: &ImageFindings, width: usize) -> String {
    let a = &f.analysis;
    let width = width.clamp(60, 200);
    let mut out = String::new();
    identity(&mut out, f);
    totals(&mut out, a);
    layers(&mut out, a, width);
    hidden_files(&mut out, a, width);
    junk(&mut out, a, width);
    recommendations(&mut out, a, width);
    for note in &a.notes {
        let _ = writeln!(out, "\nNote: {note}");
    }
    out
}

fn identity(out: &mut String, f: &ImageFindings) {
    let a = &f.analysis;
    let _ = writeln!(out, "Image       {}", f.image);
    let _ = writeln!(out, "Digest      {}", f.digest);
    let mut platform = f.platform.clone();
    if let Some(os) = &a.os {
        let name = os.pretty_name.clone().unwrap_or_else(|| os.id.clone());
        let _ = write!(platform, "  ({name})");
    }
    let _ = writeln!(out, "Platform    {platform}");
    if let Some(base) = &a.base_image
        && let Some(name) = &base.name
    {
        let _ = writeln!(out, "Base        {name}");
    }
    let _ = writeln!(out);
}

fn totals(out: &mut String, a: &ImageAnalysis) {
    let t = &a.totals;
    let layers = count(a.layers.len() as u64, "layer");
    let hidden = count(a.hidden_file_count, "file");
    let rows = [
        (
            "Pull size",
            size(t.pull_bytes),
            format!("{layers}, compressed"),
        ),
        (
            "Image size",
            size(t.size_bytes),
            "files shipped in all layers".into(),
        ),
        (
            "Final size",
            size(t.final_bytes),
            "files in the final filesystem".into(),
        ),
        (
            "Wasted",
            size(t.wasted_bytes),
            format!("{hidden} hidden by later layers"),
        ),
        (
            "Reclaimable",
            size(t.reclaimable_bytes),
            format!(
                "wasted + junk; about {} less to pull",
                size(t.reclaimable_pull_bytes)
            ),
        ),
        (
            "Efficiency",
            percent(t.efficiency),
            "final / shipped".into(),
        ),
    ];
    for (label, value, note) in rows {
        let _ = writeln!(out, "{label:<12}{value:>10}   {note}");
    }
}

fn layers(out: &mut String, a: &ImageAnalysis, width: usize) {
    let _ = writeln!(out, "\nLayers");
    let _ = writeln!(
        out,
        "  {:>3}  {:>9}  {:>9}  {:>9}  {:>9}  CREATED BY",
        "#", "PULL", "SIZE", "WASTED", "JUNK"
    );
    for l in &a.layers {
        let created = match (&l.skipped, &l.created_by) {
            (Some(why), _) => format!("(not analyzed: {why})"),
            (None, Some(c)) => history_line(c, width.saturating_sub(52)),
            (None, None) => String::new(),
        };
        let _ = writeln!(
            out,
            "  {:>3}  {:>9}  {:>9}  {:>9}  {:>9}  {created}",
            l.index,
            size(l.pull_bytes),
            size(l.size_bytes),
            size(l.wasted_bytes),
            size(l.junk_bytes),
        );
    }
}

fn hidden_files(out: &mut String, a: &ImageAnalysis, width: usize) {
    if a.hidden_files.is_empty() {
        return;
    }
    let shown = a.hidden_files.len().min(HIDDEN_FILES_SHOWN);
    let _ = writeln!(
        out,
        "\nLargest hidden files ({shown} of {})",
        a.hidden_file_count
    );
    let _ = writeln!(
        out,
        "  {:>9}  {:>5}  {:>6}  {:<11}  PATH",
        "SIZE", "LAYER", "BY", "REASON"
    );
    for h in a.hidden_files.iter().take(shown) {
        let _ = writeln!(
            out,
            "  {:>9}  {:>5}  {:>6}  {:<11}  {}",
            size(h.size_bytes),
            h.layer,
            h.hidden_by_layer,
            h.reason,
            fit(&h.path, width.saturating_sub(44))
        );
    }
}

fn junk(out: &mut String, a: &ImageAnalysis, width: usize) {
    if a.categories.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nJunk in the final filesystem");
    let _ = writeln!(
        out,
        "  {:<14}  {:>9}  {:>6}  LARGEST",
        "CATEGORY", "SIZE", "FILES"
    );
    for c in &a.categories {
        let example = c.examples.first().map(String::as_str).unwrap_or("");
        let _ = writeln!(
            out,
            "  {:<14}  {:>9}  {:>6}  {}",
            c.category.as_str(),
            size(c.bytes),
            c.files,
            fit(example, width.saturating_sub(40))
        );
    }
}

fn recommendations(out: &mut String, a: &ImageAnalysis, width: usize) {
    if a.recommendations.is_empty() {
        if a.totals.reclaimable_bytes == 0 {
            let _ = writeln!(
                out,
                "\nNothing to reclaim: every shipped byte is in the final filesystem and none of it is junk."
            );
        }
        return;
    }
    let _ = writeln!(out, "\nRecommendations");
    for (i, r) in a.recommendations.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {:>2}. saves {:>9}  [{}]",
            i + 1,
            size(r.saved_bytes),
            r.kind
        );
        for line in wrap(&r.message, width.saturating_sub(8)) {
            let _ = writeln!(out, "      {line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{
        Category, CategorySummary, HiddenFile, LayerSummary, OsInfo, Recommendation, Totals,
    };

    fn layer(index: u32, pull: u64, size: u64, created_by: &str) -> LayerSummary {
        LayerSummary {
            index,
            digest: format!("sha256:{index:064}"),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            pull_bytes: pull,
            uncompressed_bytes: size,
            size_bytes: size,
            file_count: 1,
            wasted_bytes: 0,
            junk_bytes: 0,
            created_by: Some(created_by.into()),
            skipped: None,
        }
    }

    /// A Debian image whose second layer deletes a tarball the first shipped and leaves apt's
    /// lists behind.
    fn findings() -> ImageFindings {
        let mut base = layer(
            0,
            28_000_000,
            75_000_000,
            "/bin/sh -c #(nop) ADD file:4b03 in / ",
        );
        base.wasted_bytes = 20_000_000;
        let mut run = layer(
            1,
            2_000_000,
            25_000_000,
            "RUN /bin/sh -c apt-get update && apt-get install -y curl # buildkit",
        );
        run.junk_bytes = 5_000_000;
        ImageFindings {
            image: "registry.example/app:1".into(),
            digest: "sha256:abc".into(),
            index_digest: None,
            platform: "linux/amd64".into(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            analyzer_version: "test".into(),
            downloaded_bytes: 0,
            analysis: ImageAnalysis {
                totals: Totals::of_image(30_000_000, 100_000_000, 80_000_000, 5_000_000, 6_000_000),
                junk_bytes: 5_000_000,
                layers: vec![base, run],
                hidden_file_count: 1,
                hidden_files: vec![HiddenFile {
                    path: "/tmp/big.tar".into(),
                    size_bytes: 20_000_000,
                    layer: 0,
                    hidden_by_layer: 1,
                    reason: "deleted".into(),
                }],
                categories: vec![CategorySummary {
                    category: Category::PackageCache,
                    bytes: 5_000_000,
                    files: 3,
                    examples: vec!["/var/lib/apt/lists/deb.debian.org_Packages".into()],
                }],
                recommendations: vec![Recommendation {
                    kind: "cleanup-in-same-layer".into(),
                    message: "Layer 1 deletes 1 file that layer 0 created, but deleting in a later layer \
                        frees nothing"
                        .into(),
                    saved_bytes: 20_000_000,
                    layer: Some(0),
                    created_by: None,
                    counted: Vec::new(),
                }],
                os: Some(OsInfo {
                    id: "debian".into(),
                    version_id: Some("12".into()),
                    version_codename: Some("bookworm".into()),
                    pretty_name: Some("Debian GNU/Linux 12 (bookworm)".into()),
                }),
                base_image: None,
                notes: vec![],
            },
        }
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn the_header_names_the_image_and_its_figures() {
        let text = render(&findings(), 120);
        assert_eq!(
            lines(&text)[..10],
            [
                "Image       registry.example/app:1",
                "Digest      sha256:abc",
                "Platform    linux/amd64  (Debian GNU/Linux 12 (bookworm))",
                "",
                "Pull size      30.0 MB   2 layers, compressed",
                "Image size    100.0 MB   files shipped in all layers",
                "Final size     80.0 MB   files in the final filesystem",
                "Wasted         20.0 MB   1 file hidden by later layers",
                "Reclaimable    25.0 MB   wasted + junk; about 6.0 MB less to pull",
                "Efficiency       80.0%   final / shipped",
            ]
        );
    }

    #[test]
    fn layers_show_their_figures_and_the_step_that_made_them() {
        let text = render(&findings(), 120);
        assert!(text.contains(
            "\nLayers\n    #       PULL       SIZE     WASTED       JUNK  CREATED BY\n    0    28.0 MB    75.0 MB    20.0 MB        0 B  ADD file:4b03 in /\n"
        ), "{text}");
        assert!(
            text.contains("    1     2.0 MB    25.0 MB        0 B     5.0 MB  RUN /bin/sh -c apt-get update && apt-get install -y curl\n"),
            "{text}"
        );
    }

    #[test]
    fn hidden_files_and_junk_are_listed_with_their_sizes() {
        let text = render(&findings(), 120);
        assert!(text.contains(
            "\nLargest hidden files (1 of 1)\n       SIZE  LAYER      BY  REASON       PATH\n    20.0 MB      0       1  deleted      /tmp/big.tar\n"
        ), "{text}");
        assert!(text.contains(
            "\nJunk in the final filesystem\n  CATEGORY             SIZE   FILES  LARGEST\n  package-cache      5.0 MB       3  /var/lib/apt/lists/deb.debian.org_Packages\n"
        ), "{text}");
    }

    #[test]
    fn a_narrow_terminal_cuts_history_and_paths_and_wraps_advice() {
        let text = render(&findings(), 20);
        // Narrower than 60 columns renders as 60.
        assert!(text.contains("     5.0 MB  RUN /bi…\n"), "{text}");
        assert!(
            text.contains("  package-cache      5.0 MB       3  /var/lib/apt/lists/…\n"),
            "{text}"
        );
        assert!(text.ends_with(
            "\nRecommendations\n   1. saves   20.0 MB  [cleanup-in-same-layer]\n      Layer 1 deletes 1 file that layer 0 created, but\n      deleting in a later layer frees nothing\n"
        ), "{text}");
    }

    #[test]
    fn an_image_with_nothing_to_reclaim_says_so() {
        let mut f = findings();
        f.analysis.totals = Totals::of_image(1, 10, 10, 0, 0);
        f.analysis.recommendations.clear();
        assert!(render(&f, 120).contains("\nNothing to reclaim: every shipped byte is in the final filesystem and none of it is junk.\n"));
    }
}
