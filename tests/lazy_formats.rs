//! The table-of-contents path reads exactly the index a full read builds, on layers written by
//! the real lazy-pull producers (skopeo's zstd:chunked, ctr-remote's eStargz and zstd:chunked), and
//! needs only a small part of the blob for it.
//!
//! The images come from scripts/lazy-images.sh (an OCI layout in the test cache).

mod common;

use std::path::PathBuf;

use common::{lazy_layout, read_json};
use imagebloat::analysis::layer::{EntryRef, LayerIndex};
use imagebloat::analysis::toc::{BlobRange, LazyLayer, TocProblem};
use imagebloat::analysis::{LayerLimits, LayerMediaType, index_layer};

fn blob_path(layout: &std::path::Path, digest: &str) -> PathBuf {
    let (algorithm, hex) = digest.split_once(':').unwrap();
    layout.join("blobs").join(algorithm).join(hex)
}

/// What one layer cost on each path.
struct LayerCost {
    blob_bytes: u64,
    toc_path_bytes: u64,
}

/// The index of one layer read from its TOC, with the bytes that path read.
fn index_from_toc(layer: &LazyLayer, blob: &[u8], limits: &LayerLimits) -> (LayerIndex, u64) {
    let slice = |r: BlobRange| &blob[r.offset as usize..(r.offset + r.len) as usize];
    let footer = layer
        .parse_footer(slice(layer.footer_range()))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut lazy = layer
        .parse_toc(&footer, slice(footer.toc_range()), limits)
        .unwrap_or_else(|e| panic!("{e}"));
    let fetched = lazy.total_fetch_bytes();
    if let Some(frames) = &lazy.header_frames {
        let ranges: Vec<&[u8]> = frames.ranges.iter().map(|r| slice(*r)).collect();
        let size = frames
            .count(&ranges, limits.max_uncompressed_bytes)
            .unwrap_or_else(|e| panic!("{e}"));
        lazy.uncompressed_bytes = Some(size);
    }
    let captured = lazy
        .captures
        .iter()
        .map(|c| {
            let ranges: Vec<&[u8]> = c.ranges().map(slice).collect();
            c.decode(&ranges).unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    (lazy.finish(captured, blob.len() as u64), fetched)
}

fn describe(e: &EntryRef<'_>) -> String {
    format!(
        "{:?} {} -> {} ({})",
        e.kind,
        String::from_utf8_lossy(e.path),
        String::from_utf8_lossy(e.link),
        e.size
    )
}

fn assert_same_index(tag: &str, layer: usize, toc: &LayerIndex, full: &LayerIndex) {
    let toc_entries: Vec<String> = toc.entries().map(|e| describe(&e)).collect();
    let full_entries: Vec<String> = full.entries().map(|e| describe(&e)).collect();
    if let Some(i) = (0..toc_entries.len().max(full_entries.len()))
        .find(|&i| toc_entries.get(i) != full_entries.get(i))
    {
        panic!(
            "{tag} layer {layer}: entry {i} differs: TOC {:?}, full read {:?} ({} vs {} entries)",
            toc_entries.get(i),
            full_entries.get(i),
            toc_entries.len(),
            full_entries.len()
        );
    }
    assert_eq!(toc.size_bytes, full.size_bytes, "{tag} layer {layer}: size");
    assert_eq!(
        toc.file_count, full.file_count,
        "{tag} layer {layer}: files"
    );
    assert_eq!(
        toc.captured, full.captured,
        "{tag} layer {layer}: captured files"
    );
    assert_eq!(
        toc.captures_skipped, full.captures_skipped,
        "{tag} layer {layer}: package metadata over the capture budget"
    );
    assert_eq!(
        toc.compressed_bytes, full.compressed_bytes,
        "{tag} layer {layer}: compressed bytes"
    );
}

/// One layer of a layout image: its blob, compression and lazy-format descriptor.
struct Layer {
    blob: Vec<u8>,
    media_type: LayerMediaType,
    lazy: LazyLayer,
}

fn layers(tag: &str) -> Vec<Layer> {
    let layout = lazy_layout();
    let index = read_json(layout.join("index.json"));
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no image tagged {tag}: run scripts/lazy-images.sh"));
    let manifest = read_json(blob_path(&layout, desc["digest"].as_str().unwrap()));
    let mut layers = Vec::new();
    for (i, layer) in manifest["layers"].as_array().unwrap().iter().enumerate() {
        let digest = layer["digest"].as_str().unwrap();
        let media_type = LayerMediaType::parse(layer["mediaType"].as_str().unwrap()).unwrap();
        let blob = std::fs::read(blob_path(&layout, digest)).unwrap();
        let annotations: Vec<(&str, &str)> = layer["annotations"]
            .as_object()
            .map(|a| {
                a.iter()
                    .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
                    .collect()
            })
            .unwrap_or_default();
        let lazy = LazyLayer::detect(digest, blob.len() as u64, annotations.iter().copied())
            .unwrap()
            .unwrap_or_else(|| panic!("{tag} layer {i}: no lazy-format annotation"));
        layers.push(Layer {
            blob,
            media_type,
            lazy,
        });
    }
    layers
}

/// Checks every layer of the image tagged `tag` and returns what each cost.
fn check_image(tag: &str) -> Vec<LayerCost> {
    let limits = LayerLimits::default();
    let mut costs = Vec::new();
    for (i, layer) in layers(tag).iter().enumerate() {
        let blob = &layer.blob;
        let full = index_layer(blob.as_slice(), layer.media_type.compression, &limits).unwrap();
        let (toc, fetched) = index_from_toc(&layer.lazy, blob, &limits);
        // From the annotation, or (containers/storage's zstd:chunked) from the TOC's file sizes
        // and the header frames between the files' data.
        assert_eq!(
            toc.uncompressed_bytes, full.uncompressed_bytes,
            "{tag} layer {i}: uncompressed bytes"
        );
        assert_same_index(tag, i, &toc, &full);
        println!(
            "{tag} layer {i}: {} entries, TOC path reads {fetched} of {} bytes ({:.3}%){}",
            full.len(),
            blob.len(),
            100.0 * fetched as f64 / blob.len() as f64,
            if layer.lazy.uncompressed_size().is_none() {
                "; uncompressed size from the header frames"
            } else {
                ""
            }
        );
        costs.push(LayerCost {
            blob_bytes: blob.len() as u64,
            toc_path_bytes: fetched,
        });
    }
    costs
}

/// The realistic image: the TOC path reads under 2% of the image's layer bytes.
fn check_realistic(tag: &str) {
    let costs = check_image(tag);
    let blob: u64 = costs.iter().map(|c| c.blob_bytes).sum();
    let toc: u64 = costs.iter().map(|c| c.toc_path_bytes).sum();
    let share = toc as f64 / blob as f64;
    println!(
        "{tag}: TOC path reads {toc} of {blob} bytes ({:.3}%)",
        100.0 * share
    );
    assert!(
        share < 0.02,
        "{tag}: the TOC path reads {toc} of {blob} bytes"
    );
}

#[test]
fn a_name_that_is_not_utf8_sends_every_producers_layer_to_the_full_read() {
    let limits = LayerLimits::default();
    for tag in [
        "names-zstd-chunked",
        "names-estargz",
        "names-zstd-chunked-ctr",
    ] {
        for layer in layers(tag) {
            let full =
                index_layer(layer.blob.as_slice(), layer.media_type.compression, &limits).unwrap();
            assert!(
                full.entries().any(|e| e.path == b"caf\xe9.txt"),
                "{tag}: the full read keeps the name's bytes"
            );
            let lazy = &layer.lazy;
            let range = |r: BlobRange| &layer.blob[r.offset as usize..(r.offset + r.len) as usize];
            let footer = lazy.parse_footer(range(lazy.footer_range())).unwrap();
            let err = lazy
                .parse_toc(&footer, range(footer.toc_range()), &limits)
                .unwrap_err();
            assert!(
                matches!(err.problem, TocProblem::BadEntry { .. }),
                "{tag}: {err}"
            );
        }
    }
}

#[test]
fn skopeo_zstd_chunked_toc_of_every_entry_kind_indexes_like_the_full_read() {
    check_image("edge-zstd-chunked");
}

#[test]
fn ctr_remote_estargz_toc_of_every_entry_kind_indexes_like_the_full_read() {
    check_image("edge-estargz");
}

#[test]
fn ctr_remote_zstd_chunked_toc_of_every_entry_kind_indexes_like_the_full_read() {
    check_image("edge-zstd-chunked-ctr");
}

#[test]
fn skopeo_zstd_chunked_toc_of_the_debian_image_indexes_like_the_full_read_from_under_2_percent() {
    check_realistic("debian-zstd-chunked");
}

#[test]
fn ctr_remote_estargz_toc_of_the_debian_image_indexes_like_the_full_read_from_under_2_percent() {
    check_realistic("debian-estargz");
}

#[test]
fn ctr_remote_zstd_chunked_toc_of_the_debian_image_indexes_like_the_full_read_from_under_2_percent()
{
    check_realistic("debian-zstd-chunked-ctr");
}
