//! The human-readable rendering of one image's findings (`scan`'s default output).

use std::fmt::Write as _;

use bytesize::ByteSize;

use crate::analysis::advice::shorten;
use crate::report::ImageFindings;

/// Bytes in SI units, as `docker images` prints them.
pub fn human(bytes: u64) -> String {
    ByteSize(bytes).display().si().to_string()
}

/// `1 layer`, `3 layers`.
fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn percent(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

/// Renders findings as text. `width` bounds the history and path columns.
pub fn render(f: &ImageFindings, width: usize) -> String {
    let a = &f.analysis;
    let mut out = String::new();
    let text = width.clamp(60, 200);
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
    let rows = [
        (
            "Pull size",
            human(a.pull_bytes),
            format!("{}, compressed", count(a.layers.len() as u64, "layer")),
        ),
        (
            "Image size",
            human(a.size_bytes),
            "files shipped in all layers".into(),
        ),
        (
            "Final size",
            human(a.final_bytes),
            "files in the final filesystem".into(),
        ),
        (
            "Wasted",
            human(a.wasted_bytes),
            format!(
                "{} hidden by later layers",
                count(a.hidden_file_count, "file")
            ),
        ),
        (
            "Reclaimable",
            human(a.reclaimable_bytes),
            format!(
                "wasted + junk; about {} less to pull",
                human(a.reclaimable_pull_bytes)
            ),
        ),
        (
            "Efficiency",
            percent(a.efficiency),
            "final / shipped".into(),
        ),
    ];
    for (label, value, note) in rows {
        let _ = writeln!(out, "{label:<12}{value:>10}   {note}");
    }

    let _ = writeln!(out, "\nLayers");
    let _ = writeln!(
        out,
        "  {:>3}  {:>9}  {:>9}  {:>9}  {:>9}  CREATED BY",
        "#", "PULL", "SIZE", "WASTED", "JUNK"
    );
    for l in &a.layers {
        let created = match (&l.skipped, &l.created_by) {
            (Some(why), _) => format!("(not analyzed: {why})"),
            (None, Some(c)) => shorten(c, text.saturating_sub(52)),
            (None, None) => String::new(),
        };
        let _ = writeln!(
            out,
            "  {:>3}  {:>9}  {:>9}  {:>9}  {:>9}  {created}",
            l.index,
            human(l.pull_bytes),
            human(l.size_bytes),
            human(l.wasted_bytes),
            human(l.junk_bytes),
        );
    }

    if !a.hidden_files.is_empty() {
        let shown = a.hidden_files.len().min(10);
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
                human(h.size_bytes),
                h.layer,
                h.hidden_by_layer,
                h.reason,
                shorten(&h.path, text.saturating_sub(44))
            );
        }
    }

    if !a.categories.is_empty() {
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
                human(c.bytes),
                c.files,
                shorten(example, text.saturating_sub(40))
            );
        }
    }

    if !a.recommendations.is_empty() {
        let _ = writeln!(out, "\nRecommendations");
        for (i, r) in a.recommendations.iter().enumerate() {
            let _ = writeln!(
                out,
                "  {:>2}. saves {:>9}  [{}]",
                i + 1,
                human(r.saved_bytes),
                r.kind
            );
            for line in wrap(&r.message, text.saturating_sub(8)) {
                let _ = writeln!(out, "      {line}");
            }
        }
    } else if a.reclaimable_bytes == 0 {
        let _ = writeln!(
            out,
            "\nNothing to reclaim: every shipped byte is in the final filesystem and none of it is junk."
        );
    }
    for note in &a.notes {
        let _ = writeln!(out, "\nNote: {note}");
    }
    out
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}
