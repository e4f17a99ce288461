//! How figures and text read: sizes, counts, percentages, and strings cut to a width.
//!
//! One module so that the table, the report, the advice and the operator's Events say "12.0 MB",
//! "1 file" and "91.5%" the same way. It is a leaf: it imports nothing from the crate, so the
//! pure analysis may use it without an arrow pointing back out of the core.

use bytesize::ByteSize;

/// What a cut string ends with, so a reader sees that something is missing.
const ELLIPSIS: char = '…';

/// Bytes in SI units, as `docker images` prints them: `12.0 MB`.
pub fn size(bytes: u64) -> String {
    ByteSize(bytes).display().si().to_string()
}

/// `1 layer`, `3 layers`: a count with its noun, plural unless the count is one.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A ratio as a percentage with one decimal: `0.915` is `91.5%`.
pub fn percent(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

/// Keeps the first `keep` characters of `s` and marks the cut with `…` (so a cut string has
/// `keep + 1` characters); a string that fits is left alone. Never splits a character.
pub fn truncate(s: &mut String, keep: usize) {
    if let Some((i, _)) = s.char_indices().nth(keep) {
        s.truncate(i);
        s.push(ELLIPSIS);
    }
}

/// `s` in at most `width` characters, the last of them `…` when it had to be cut.
pub fn fit(s: &str, width: usize) -> String {
    let mut out = s.to_string();
    if out.chars().count() > width {
        truncate(&mut out, width.saturating_sub(1));
    }
    out
}

/// Cuts `s` to at most `max` bytes (Kubernetes limits some fields in bytes), at a character
/// boundary, ending in `...` when it was cut.
pub fn truncate_bytes(s: &mut String, max: usize) {
    const MARK: &str = "...";
    if s.len() <= max {
        return;
    }
    let mut end = max.saturating_sub(MARK.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(MARK);
}

/// A history line as a reader wants it: the Dockerfile step, without the `/bin/sh -c ` and
/// `#(nop) ` prefixes Docker adds or BuildKit's `# buildkit` suffix, in at most `width`
/// characters.
pub fn history_line(created_by: &str, width: usize) -> String {
    let s = created_by
        .trim()
        .trim_start_matches("/bin/sh -c ")
        .trim_start_matches("#(nop) ")
        .trim();
    let s = s.strip_suffix("# buildkit").unwrap_or(s).trim_end();
    fit(s, width)
}

/// `s` with its first character upper-cased, to start a sentence.
pub fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// `text` broken between words into lines of at most `width` characters; a word longer than
/// `width` gets a line of its own, uncut.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_si_units_as_docker_prints_them() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(999), "999 B");
        assert_eq!(size(12_000_000), "12.0 MB");
        assert_eq!(size(38_700_000), "38.7 MB");
    }

    #[test]
    fn a_count_of_one_is_singular_and_every_other_count_plural() {
        assert_eq!(count(0, "file"), "0 files");
        assert_eq!(count(1, "file"), "1 file");
        assert_eq!(count(2, "layer"), "2 layers");
    }

    #[test]
    fn percentages_have_one_decimal() {
        assert_eq!(percent(0.915), "91.5%");
        assert_eq!(percent(1.0), "100.0%");
        assert_eq!(percent(0.0), "0.0%");
    }

    #[test]
    fn truncate_keeps_whole_characters_and_marks_the_cut() {
        let mut s = "héllo wörld".to_string();
        truncate(&mut s, 7);
        assert_eq!(s, "héllo w…");
        let mut short = "hé".to_string();
        truncate(&mut short, 2);
        assert_eq!(short, "hé");
    }

    #[test]
    fn fit_never_exceeds_the_width() {
        assert_eq!(fit("abcdef", 6), "abcdef");
        assert_eq!(fit("abcdefg", 6), "abcde…");
        assert_eq!(fit("äöüäöüä", 3), "äö…");
        assert_eq!(fit("abc", 0), "…");
        assert_eq!(fit("", 0), "");
    }

    #[test]
    fn truncate_bytes_cuts_at_a_character_boundary_within_the_budget() {
        let mut s = "é".repeat(10);
        truncate_bytes(&mut s, 10);
        assert_eq!(s, "ééé...");
        let mut fits = "abc".to_string();
        truncate_bytes(&mut fits, 3);
        assert_eq!(fits, "abc");
    }

    #[test]
    fn history_lines_lose_the_shell_prefix_and_the_buildkit_suffix() {
        assert_eq!(
            history_line("/bin/sh -c #(nop)  CMD [\"nginx\"]", 80),
            "CMD [\"nginx\"]"
        );
        assert_eq!(
            history_line("RUN /bin/sh -c npm ci # buildkit", 80),
            "RUN /bin/sh -c npm ci"
        );
        assert_eq!(history_line("/bin/sh -c apt-get update", 10), "apt-get u…");
    }

    #[test]
    fn capitalise_upper_cases_only_the_first_character() {
        assert_eq!(capitalise("layer 2 (`RUN x`)"), "Layer 2 (`RUN x`)");
        assert_eq!(capitalise("élan"), "Élan");
        assert_eq!(capitalise(""), "");
    }

    #[test]
    fn wrap_breaks_between_words_within_the_width() {
        assert_eq!(
            wrap("one two three four", 9),
            vec!["one two", "three", "four"]
        );
        assert_eq!(wrap("a  b\nc", 80), vec!["a b c"]);
        assert_eq!(
            wrap("short averyveryverylongword end", 8),
            vec!["short", "averyveryverylongword", "end"]
        );
        assert!(wrap("", 10).is_empty());
    }
}
