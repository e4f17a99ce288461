//! Applies layer indexes in order with OCI whiteout semantics and finds the final filesystem.
//!
//! Every regular-file entry of every layer becomes one [`Content`]. A path in the final tree
//! points at a content; hard links make several paths point at one. A content whose last name
//! disappears is hidden, and remembers the layer that hid it and why. That is the whole waste
//! math: `S` is the sum over all contents, `F` the sum over contents still named at the end, and
//! `W = S - F` the sum over hidden ones, each attributed exactly once.
//!
//! The tree is a byte-ordered map from canonical path to node. In byte order all paths under
//! `D/` are contiguous, so removing a subtree is one range scan.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::layer::{EntryKind, LayerIndex};
use super::path;

/// Why a file shipped in one layer is not in the final filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HideReason {
    /// A later entry wrote the same path, or replaced a directory above it with a non-directory.
    Overwritten,
    /// A later layer's `.wh.NAME` removed it or a directory above it.
    Deleted,
    /// A later layer's `.wh..wh..opq` made a directory above it opaque.
    Opaque,
}

impl HideReason {
    pub fn as_str(self) -> &'static str {
        match self {
            HideReason::Overwritten => "overwritten",
            HideReason::Deleted => "deleted",
            HideReason::Opaque => "opaque",
        }
    }
}

/// When and why a content was hidden.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hidden {
    pub by_layer: usize,
    pub reason: HideReason,
}

/// The bytes of one regular-file entry.
#[derive(Debug, Clone)]
pub struct Content {
    /// The layer that shipped it.
    pub layer: usize,
    /// Its entry in that layer's index (for the path).
    pub entry: u32,
    pub size: u64,
    names: u32,
    pub hidden: Option<Hidden>,
}

impl Content {
    pub fn is_visible(&self) -> bool {
        self.names > 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Dir,
    File(u32),
    Other,
}

/// The final filesystem of an image and the fate of every file ever shipped.
#[derive(Debug)]
pub struct Overlay<'a> {
    contents: Vec<Content>,
    tree: BTreeMap<&'a [u8], Node>,
    scratch: Vec<&'a [u8]>,
    bound: Vec<u8>,
}

impl<'a> Overlay<'a> {
    /// Applies `layers` (bottom first).
    pub fn apply<I>(layers: I) -> Self
    where
        I: IntoIterator<Item = &'a LayerIndex>,
    {
        let mut overlay = Overlay {
            contents: Vec::new(),
            tree: BTreeMap::new(),
            scratch: Vec::new(),
            bound: Vec::new(),
        };
        for (j, layer) in layers.into_iter().enumerate() {
            overlay.apply_layer(j, layer);
        }
        overlay
    }

    /// Every regular-file entry ever shipped, in layer and tar order.
    pub fn contents(&self) -> &[Content] {
        &self.contents
    }

    /// Visible paths of regular files and their content, in byte order of path. A content with
    /// several hard-linked names appears once per name.
    pub fn visible_files(&self) -> impl Iterator<Item = (&'a [u8], u32)> + '_ {
        self.tree.iter().filter_map(|(&p, n)| match n {
            Node::File(c) => Some((p, *c)),
            _ => None,
        })
    }

    /// Whether a path exists in the final filesystem, and as what.
    pub fn kind_of(&self, path: &[u8]) -> Option<EntryKind> {
        self.tree.get(path).map(|n| match n {
            Node::Dir => EntryKind::Dir,
            Node::File(_) => EntryKind::File,
            Node::Other => EntryKind::Other,
        })
    }

    /// The content a visible regular-file path names.
    pub fn content_at(&self, path: &[u8]) -> Option<u32> {
        match self.tree.get(path) {
            Some(Node::File(c)) => Some(*c),
            _ => None,
        }
    }

    /// `S`: bytes of every regular file in every layer.
    pub fn size_bytes(&self) -> u64 {
        self.contents.iter().map(|c| c.size).sum()
    }

    /// `F`: bytes of the regular files in the final filesystem, each content once.
    pub fn final_bytes(&self) -> u64 {
        self.contents
            .iter()
            .filter(|c| c.is_visible())
            .map(|c| c.size)
            .sum()
    }

    fn apply_layer(&mut self, j: usize, layer: &'a LayerIndex) {
        // A layer's whiteouts act on the layers below it only: apply them all before any of the
        // layer's own entries, whatever their order in the tar.
        for e in layer.entries() {
            match e.kind {
                EntryKind::Whiteout => {
                    self.remove(e.path, j, HideReason::Deleted);
                    self.remove_subtree(e.path, j, HideReason::Deleted);
                }
                EntryKind::Opaque => self.remove_subtree(e.path, j, HideReason::Opaque),
                _ => {}
            }
        }

        // Ancestors already known to be directories (or absent): consecutive entries of one
        // directory skip the walk up.
        let mut checked_parent: Option<&'a [u8]> = None;
        for (i, e) in layer.entries().enumerate() {
            let p = e.path;
            if matches!(e.kind, EntryKind::Whiteout | EntryKind::Opaque) {
                continue;
            }
            let (parent, _) = path::split_parent(p);
            if checked_parent != Some(parent) {
                // Extracting `a/b` turns a non-directory `a` into a directory.
                for a in path::ancestors(p) {
                    if matches!(self.tree.get(a), Some(Node::File(_) | Node::Other)) {
                        self.remove(a, j, HideReason::Overwritten);
                    }
                }
                checked_parent = Some(parent);
            }
            let node = match e.kind {
                EntryKind::Dir => {
                    match self.tree.get(p) {
                        Some(Node::Dir) => {}
                        Some(_) => {
                            self.remove(p, j, HideReason::Overwritten);
                            self.tree.insert(p, Node::Dir);
                        }
                        None => {
                            self.tree.insert(p, Node::Dir);
                        }
                    }
                    continue;
                }
                EntryKind::File => {
                    let id = self.contents.len() as u32;
                    self.contents.push(Content {
                        layer: j,
                        entry: i as u32,
                        size: e.size,
                        names: 0,
                        hidden: None,
                    });
                    Node::File(id)
                }
                EntryKind::HardLink => match self.tree.get(e.link) {
                    Some(&Node::File(c)) => Node::File(c),
                    // A link to nothing (or to a non-file) carries no bytes.
                    _ => Node::Other,
                },
                _ => Node::Other,
            };
            if let Node::File(c) = node {
                // Count the new name before the old one at `p` goes, so a link to itself
                // never hides its own content.
                self.contents[c as usize].names += 1;
            }
            self.remove(p, j, HideReason::Overwritten);
            self.remove_subtree(p, j, HideReason::Overwritten);
            self.tree.insert(p, node);
            if let Some(cp) = checked_parent {
                // A non-directory at or above the checked parent invalidates it.
                if cp == p || (cp.starts_with(p) && cp.get(p.len()) == Some(&b'/')) {
                    checked_parent = None;
                }
            }
        }
    }

    fn remove(&mut self, p: &[u8], by_layer: usize, reason: HideReason) {
        if let Some(node) = self.tree.remove(p) {
            self.release(node, by_layer, reason);
        }
    }

    fn release(&mut self, node: Node, by_layer: usize, reason: HideReason) {
        if let Node::File(c) = node {
            let content = &mut self.contents[c as usize];
            content.names -= 1;
            if content.names == 0 {
                content.hidden = Some(Hidden { by_layer, reason });
            }
        }
    }

    /// Removes everything strictly below directory `dir` (everything, for the root).
    fn remove_subtree(&mut self, dir: &[u8], by_layer: usize, reason: HideReason) {
        let mut keys = std::mem::take(&mut self.scratch);
        keys.clear();
        if dir.is_empty() {
            keys.extend(self.tree.keys().copied());
        } else {
            // Keys with prefix `dir/` lie in [`dir/`, `dir0`): '0' is the byte after '/'.
            let bound = &mut self.bound;
            bound.clear();
            bound.extend_from_slice(dir);
            bound.push(b'/');
            let split = bound.len();
            bound.extend_from_slice(dir);
            bound.push(b'0');
            let (lo, hi) = bound.split_at(split);
            keys.extend(
                self.tree
                    .range::<[u8], _>((Bound::Included(lo), Bound::Excluded(hi)))
                    .map(|(k, _)| *k),
            );
        }
        for k in keys.drain(..) {
            if let Some(node) = self.tree.remove(k) {
                self.release(node, by_layer, reason);
            }
        }
        self.scratch = keys;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EntryKind::*;

    type Spec<'s> = &'s [(&'s str, EntryKind, u64)];

    fn layer(spec: Spec<'_>) -> LayerIndex {
        LayerIndex::from_entries(spec.iter().map(|(p, k, s)| {
            let (path, link) = p.split_once(" -> ").unwrap_or((p, ""));
            (path.as_bytes(), link.as_bytes(), *k, *s)
        }))
    }

    struct Outcome {
        s: u64,
        f: u64,
        hidden: Vec<(String, usize, usize, HideReason)>,
        visible: Vec<String>,
    }

    fn run(layers: &[Spec<'_>]) -> Outcome {
        let indexes: Vec<LayerIndex> = layers.iter().map(|l| layer(l)).collect();
        let o = Overlay::apply(&indexes);
        let hidden = o
            .contents()
            .iter()
            .filter_map(|c| {
                let h = c.hidden?;
                let path = indexes[c.layer].entry(c.entry).path;
                Some((
                    String::from_utf8(path.to_vec()).unwrap(),
                    c.layer,
                    h.by_layer,
                    h.reason,
                ))
            })
            .collect();
        let visible = o
            .visible_files()
            .map(|(p, _)| String::from_utf8(p.to_vec()).unwrap())
            .collect();
        let (s, f) = (o.size_bytes(), o.final_bytes());
        assert_eq!(
            s - f,
            o.contents()
                .iter()
                .filter(|c| c.hidden.is_some() && !c.is_visible())
                .map(|c| c.size)
                .sum::<u64>(),
            "every wasted byte is attributed exactly once"
        );
        Outcome {
            s,
            f,
            hidden,
            visible,
        }
    }

    fn h(p: &str, from: usize, by: usize, r: HideReason) -> (String, usize, usize, HideReason) {
        (p.to_string(), from, by, r)
    }

    #[test]
    fn an_untouched_image_wastes_nothing() {
        let o = run(&[
            &[("etc", Dir, 0), ("etc/a", File, 10)],
            &[("etc/b", File, 5)],
        ]);
        assert_eq!((o.s, o.f), (15, 15));
        assert!(o.hidden.is_empty());
    }

    #[test]
    fn overwritten_file_wastes_only_the_lower_copy() {
        let o = run(&[&[("app/bin", File, 100)], &[("app/bin", File, 120)]]);
        assert_eq!((o.s, o.f), (220, 120));
        assert_eq!(o.hidden, vec![h("app/bin", 0, 1, HideReason::Overwritten)]);
    }

    #[test]
    fn a_file_rewritten_three_times_wastes_the_two_lower_copies() {
        let o = run(&[&[("f", File, 7)], &[("f", File, 8)], &[("f", File, 9)]]);
        assert_eq!((o.s, o.f), (24, 9));
        assert_eq!(
            o.hidden,
            vec![
                h("f", 0, 1, HideReason::Overwritten),
                h("f", 1, 2, HideReason::Overwritten)
            ]
        );
    }

    #[test]
    fn whiteout_deletes_a_file_from_a_lower_layer() {
        let o = run(&[
            &[("tmp/big.tar", File, 1000)],
            &[("tmp/big.tar", Whiteout, 0)],
        ]);
        assert_eq!((o.s, o.f), (1000, 0));
        assert_eq!(o.hidden, vec![h("tmp/big.tar", 0, 1, HideReason::Deleted)]);
    }

    #[test]
    fn deleted_directory_counts_its_whole_subtree_as_waste() {
        let o = run(&[
            &[
                ("src", Dir, 0),
                ("src/a.c", File, 10),
                ("src/lib", Dir, 0),
                ("src/lib/b.c", File, 20),
                ("srcs", File, 4), // a sibling sharing the prefix survives
                ("src-old", File, 3),
            ],
            &[("src", Whiteout, 0)],
        ]);
        assert_eq!((o.s, o.f), (37, 7));
        assert_eq!(
            o.hidden,
            vec![
                h("src/a.c", 0, 1, HideReason::Deleted),
                h("src/lib/b.c", 0, 1, HideReason::Deleted)
            ]
        );
        assert_eq!(o.visible, vec!["src-old", "srcs"]);
    }

    #[test]
    fn opaque_directory_hides_lower_children_but_keeps_its_own_layer() {
        let o = run(&[
            &[
                ("var/cache/apt/pkg.bin", File, 50),
                ("var/cache/x", File, 5),
            ],
            &[
                // The marker comes after a sibling entry of the same layer in the tar.
                ("var/cache/apt/new", File, 2),
                ("var/cache/apt", Opaque, 0),
            ],
        ]);
        assert_eq!((o.s, o.f), (57, 7));
        assert_eq!(
            o.hidden,
            vec![h("var/cache/apt/pkg.bin", 0, 1, HideReason::Opaque)]
        );
        assert_eq!(o.visible, vec!["var/cache/apt/new", "var/cache/x"]);
    }

    #[test]
    fn a_layers_whiteout_never_removes_its_own_entries_in_any_order() {
        for spec in [
            &[("a", File, 3), ("a", Whiteout, 0)][..],
            &[("a", Whiteout, 0), ("a", File, 3)][..],
        ] {
            let o = run(&[&[("a", File, 9)], spec]);
            assert_eq!((o.s, o.f), (12, 3));
            assert_eq!(o.hidden, vec![h("a", 0, 1, HideReason::Deleted)]);
        }
    }

    #[test]
    fn opaque_marker_at_the_root_hides_every_lower_file() {
        let o = run(&[
            &[("a", File, 3), ("b/c", File, 4)],
            &[("", Opaque, 0), ("d", File, 1)],
        ]);
        assert_eq!((o.s, o.f), (8, 1));
        assert_eq!(o.visible, vec!["d"]);
    }

    #[test]
    fn file_replacing_a_directory_removes_the_subtree() {
        let o = run(&[
            &[
                ("opt/app", Dir, 0),
                ("opt/app/x", File, 10),
                ("opt/app/y/z", File, 20),
            ],
            &[("opt/app", File, 1)],
        ]);
        assert_eq!((o.s, o.f), (31, 1));
        assert_eq!(
            o.hidden,
            vec![
                h("opt/app/x", 0, 1, HideReason::Overwritten),
                h("opt/app/y/z", 0, 1, HideReason::Overwritten)
            ]
        );
    }

    #[test]
    fn symlink_replacing_a_directory_removes_the_subtree() {
        let o = run(&[&[("lib/x", File, 10)], &[("lib", Symlink, 0)]]);
        assert_eq!((o.s, o.f), (10, 0));
        assert_eq!(o.hidden, vec![h("lib/x", 0, 1, HideReason::Overwritten)]);
    }

    #[test]
    fn directory_replacing_a_file_removes_the_file() {
        let o = run(&[
            &[("etc/conf", File, 10)],
            &[("etc/conf", Dir, 0), ("etc/conf/a", File, 1)],
        ]);
        assert_eq!((o.s, o.f), (11, 1));
        assert_eq!(o.hidden, vec![h("etc/conf", 0, 1, HideReason::Overwritten)]);
    }

    #[test]
    fn a_child_entry_implicitly_replaces_a_lower_file_with_a_directory() {
        let o = run(&[&[("data", File, 10)], &[("data/x", File, 1)]]);
        assert_eq!((o.s, o.f), (11, 1));
        assert_eq!(o.hidden, vec![h("data", 0, 1, HideReason::Overwritten)]);
    }

    #[test]
    fn a_file_then_its_children_in_one_layer_ends_as_a_directory() {
        // Within one tar, the file `a` is replaced when `a/y` is extracted beneath it.
        let o = run(&[&[("a/x", File, 1), ("a", File, 2), ("a/y", File, 4)]]);
        assert_eq!((o.s, o.f), (7, 4));
        assert_eq!(
            o.hidden,
            vec![
                h("a/x", 0, 0, HideReason::Overwritten),
                h("a", 0, 0, HideReason::Overwritten)
            ]
        );
    }

    #[test]
    fn directory_over_directory_keeps_lower_children() {
        let o = run(&[
            &[("usr", Dir, 0), ("usr/bin/sh", File, 5)],
            &[("usr", Dir, 0)],
        ]);
        assert_eq!((o.s, o.f), (5, 5));
    }

    #[test]
    fn same_path_twice_in_one_layer_keeps_the_last() {
        let o = run(&[&[("f", File, 5), ("f", File, 6)]]);
        assert_eq!((o.s, o.f), (11, 6));
        assert_eq!(o.hidden, vec![h("f", 0, 0, HideReason::Overwritten)]);
    }

    #[test]
    fn hard_link_adds_nothing_and_keeps_content_while_any_name_is_visible() {
        let o = run(&[
            &[("bin/a", File, 100), ("bin/b -> bin/a", HardLink, 0)],
            &[("bin/a", Whiteout, 0)],
        ]);
        assert_eq!((o.s, o.f), (100, 100));
        assert!(o.hidden.is_empty());
        assert_eq!(o.visible, vec!["bin/b"]);
    }

    #[test]
    fn hard_linked_content_is_wasted_once_all_names_are_gone() {
        let o = run(&[
            &[("bin/a", File, 100), ("bin/b -> bin/a", HardLink, 0)],
            &[("bin/a", Whiteout, 0)],
            &[("bin", Whiteout, 0)],
        ]);
        assert_eq!((o.s, o.f), (100, 0));
        assert_eq!(o.hidden, vec![h("bin/a", 0, 2, HideReason::Deleted)]);
    }

    #[test]
    fn hard_link_to_a_lower_layer_file_shares_its_content() {
        let o = run(&[
            &[("lib/x.so", File, 64)],
            &[("lib/y.so -> lib/x.so", HardLink, 0)],
            &[("lib/x.so", File, 8)],
        ]);
        assert_eq!((o.s, o.f), (72, 72));
    }

    #[test]
    fn content_visible_under_two_names_counts_once() {
        let o = run(&[&[
            ("a", File, 10),
            ("b -> a", HardLink, 0),
            ("c -> b", HardLink, 0),
        ]]);
        assert_eq!((o.s, o.f), (10, 10));
        assert_eq!(o.visible.len(), 3);
    }

    #[test]
    fn dangling_hard_link_carries_no_bytes() {
        let o = run(&[&[("b -> missing", HardLink, 0), ("c", File, 1)]]);
        assert_eq!((o.s, o.f), (1, 1));
    }

    #[test]
    fn hard_link_to_itself_keeps_its_content() {
        let o = run(&[&[("a", File, 10), ("a -> a", HardLink, 0)]]);
        assert_eq!((o.s, o.f), (10, 10));
        assert!(o.hidden.is_empty());
    }

    #[test]
    fn whiteout_of_a_missing_path_changes_nothing() {
        let o = run(&[&[("a", File, 1)], &[("nothing/here", Whiteout, 0)]]);
        assert_eq!((o.s, o.f), (1, 1));
    }

    #[test]
    fn whiteout_then_readd_in_the_next_layer_counts_both_copies() {
        let o = run(&[
            &[("opt/x", File, 10)],
            &[("opt", Whiteout, 0)],
            &[("opt/x", File, 10)],
        ]);
        assert_eq!((o.s, o.f), (20, 10));
        assert_eq!(o.hidden, vec![h("opt/x", 0, 1, HideReason::Deleted)]);
    }

    #[test]
    fn deleting_a_directory_hides_files_of_several_lower_layers() {
        let o = run(&[
            &[("cache/a", File, 1)],
            &[("cache/b", File, 2)],
            &[("cache", Whiteout, 0)],
        ]);
        assert_eq!((o.s, o.f), (3, 0));
        assert_eq!(
            o.hidden,
            vec![
                h("cache/a", 0, 2, HideReason::Deleted),
                h("cache/b", 1, 2, HideReason::Deleted)
            ]
        );
    }
}
