//! Property tests: the layer parser never panics on any bytes, and the overlay math agrees with
//! a deliberately naive model on random layer stacks written as real tar streams.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Compression, Layer, compress};
use imagebloat::analysis::{self, Compression as C, LayerIndex, LayerLimits, Overlay};
use proptest::prelude::*;

fn limits() -> LayerLimits {
    LayerLimits {
        max_uncompressed_bytes: 16 << 20,
        max_entries: 10_000,
        ..Default::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_give_an_index_or_an_error_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        for c in [C::Plain, C::Gzip, C::Zstd] {
            let _ = analysis::index_layer(&bytes[..], c, &limits());
        }
    }

    #[test]
    fn corrupted_real_layers_never_panic(flips in proptest::collection::vec((0usize..4096, any::<u8>()), 1..8)) {
        let (tar, _) = Layer::new("x").sized("a/b", 1500).dir("c").file("c/d", b"hi").into_tar();
        for (compression, c) in [(Compression::Plain, C::Plain), (Compression::Gzip, C::Gzip), (Compression::Zstd, C::Zstd)] {
            let mut blob = compress(&tar, compression);
            for &(at, byte) in &flips {
                let n = blob.len();
                blob[at % n] ^= byte;
            }
            let _ = analysis::index_layer(&blob[..], c, &limits());
        }
    }

    #[test]
    fn overlay_agrees_with_a_naive_model(stack in proptest::collection::vec(layer_spec(), 1..5)) {
        let indexes: Vec<LayerIndex> = stack
            .iter()
            .map(|spec| {
                let (tar, _) = write_layer(spec).into_tar();
                analysis::index_layer(&tar[..], C::Plain, &limits()).expect("valid tar")
            })
            .collect();
        let overlay = Overlay::apply(&indexes);
        let (s, f) = naive(&stack);
        prop_assert_eq!(overlay.size_bytes(), s);
        prop_assert_eq!(overlay.final_bytes(), f);
        let hidden: u64 = overlay.contents().iter().filter(|c| !c.is_visible()).map(|c| c.size).sum();
        prop_assert_eq!(hidden, s - f);
        prop_assert!(overlay.contents().iter().all(|c| c.is_visible() == c.hidden.is_none()));
    }
}

#[derive(Debug, Clone)]
enum Op {
    File(String, u64),
    Dir(String),
    Symlink(String),
    HardLink(String, String),
    Whiteout(String),
    Opaque(String),
}

fn path() -> impl Strategy<Value = String> {
    proptest::collection::vec(prop_oneof!["a", "b", "c"], 1..4).prop_map(|v| v.join("/"))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (path(), 0u64..50).prop_map(|(p, n)| Op::File(p, n)),
        2 => path().prop_map(Op::Dir),
        1 => path().prop_map(Op::Symlink),
        1 => (path(), path()).prop_map(|(p, t)| Op::HardLink(p, t)),
        2 => path().prop_map(Op::Whiteout),
        1 => path().prop_map(Op::Opaque),
    ]
}

fn layer_spec() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 0..12)
}

fn write_layer(spec: &[Op]) -> Layer {
    let mut l = Layer::new("p");
    for op in spec {
        l = match op {
            Op::File(p, n) => l.sized(p, *n as usize),
            Op::Dir(p) => l.dir(p),
            Op::Symlink(p) => l.symlink(p, "target"),
            Op::HardLink(p, t) => l.hardlink(p, t),
            Op::Whiteout(p) => l.whiteout(p),
            Op::Opaque(d) => l.opaque(d),
        };
    }
    l
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Dir,
    File(usize),
    Other,
}

/// The waste math the slow, obvious way: a map of every path, scanned in full for subtrees.
fn naive(stack: &[Vec<Op>]) -> (u64, u64) {
    let mut fs: BTreeMap<String, Node> = BTreeMap::new();
    let mut sizes: Vec<u64> = Vec::new();
    let under = |dir: &str, p: &str| p.starts_with(&format!("{dir}/"));
    for layer in stack {
        for op in layer {
            match op {
                Op::Whiteout(p) => fs.retain(|k, _| k != p && !under(p, k)),
                Op::Opaque(d) => fs.retain(|k, _| !under(d, k)),
                _ => {}
            }
        }
        for op in layer {
            let p = match op {
                Op::File(p, _) | Op::Dir(p) | Op::Symlink(p) | Op::HardLink(p, _) => p.clone(),
                _ => continue,
            };
            let parts: Vec<&str> = p.split('/').collect();
            for i in 1..parts.len() {
                let a = parts[..i].join("/");
                if matches!(fs.get(&a), Some(Node::File(_) | Node::Other)) {
                    fs.remove(&a);
                }
            }
            if let Op::Dir(_) = op {
                if fs.get(&p) != Some(&Node::Dir) {
                    fs.insert(p, Node::Dir);
                }
                continue;
            }
            let node = match op {
                Op::File(_, n) => {
                    sizes.push(*n);
                    Node::File(sizes.len() - 1)
                }
                Op::HardLink(_, t) => match fs.get(t) {
                    Some(Node::File(c)) => Node::File(*c),
                    _ => Node::Other,
                },
                _ => Node::Other,
            };
            fs.retain(|k, _| !under(&p, k));
            fs.insert(p, node);
        }
    }
    let visible: BTreeSet<usize> = fs
        .values()
        .filter_map(|n| match n {
            Node::File(c) => Some(*c),
            _ => None,
        })
        .collect();
    (sizes.iter().sum(), visible.iter().map(|c| sizes[*c]).sum())
}
