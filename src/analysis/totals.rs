//! What an image weighs, in one type: the figures at the top of every finding.
//!
//! An image's analysis and a workload's report summary carry the same totals (the summary's are
//! sums over distinct images), so they share this type, flattened into both, and efficiency is
//! computed here and nowhere else. Sums over images recompute efficiency from the summed bytes
//! rather than averaging ratios.

use std::iter::Sum;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Totals of one image, or of several images added up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// Sum of the layer descriptors' sizes: what a node downloads.
    pub pull_bytes: u64,
    /// Bytes of every regular file in every layer: what the image ships.
    pub size_bytes: u64,
    /// Bytes of the regular files in the final filesystem.
    pub final_bytes: u64,
    /// `sizeBytes - finalBytes`: shipped in one layer, hidden by a later one.
    pub wasted_bytes: u64,
    /// `wastedBytes` plus junk left in the final filesystem.
    pub reclaimable_bytes: u64,
    /// Estimated download saving: each layer's reclaimable bytes at its compression ratio.
    pub reclaimable_pull_bytes: u64,
    /// `finalBytes / sizeBytes` (1.0 for an empty image).
    pub efficiency: f64,
}

impl Totals {
    /// The totals of one image from its byte counts: wasted bytes are those shipped but not
    /// final, reclaimable bytes the wasted ones plus `junk_bytes`.
    pub fn of_image(
        pull_bytes: u64,
        size_bytes: u64,
        final_bytes: u64,
        junk_bytes: u64,
        reclaimable_pull_bytes: u64,
    ) -> Self {
        let wasted_bytes = size_bytes - final_bytes;
        Totals {
            pull_bytes,
            size_bytes,
            final_bytes,
            wasted_bytes,
            reclaimable_bytes: wasted_bytes + junk_bytes,
            reclaimable_pull_bytes,
            efficiency: efficiency(final_bytes, size_bytes),
        }
    }
}

/// `final_bytes / size_bytes`, and 1.0 when nothing ships (nothing is wasted).
fn efficiency(final_bytes: u64, size_bytes: u64) -> f64 {
    if size_bytes == 0 {
        1.0
    } else {
        final_bytes as f64 / size_bytes as f64
    }
}

impl<'a> Sum<&'a Totals> for Totals {
    fn sum<I: Iterator<Item = &'a Totals>>(images: I) -> Totals {
        let mut sum = Totals::default();
        for t in images {
            sum.pull_bytes += t.pull_bytes;
            sum.size_bytes += t.size_bytes;
            sum.final_bytes += t.final_bytes;
            sum.wasted_bytes += t.wasted_bytes;
            sum.reclaimable_bytes += t.reclaimable_bytes;
            sum.reclaimable_pull_bytes += t.reclaimable_pull_bytes;
        }
        sum.efficiency = efficiency(sum.final_bytes, sum.size_bytes);
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_images_waste_is_what_ships_but_is_not_final_and_junk_adds_to_it() {
        let t = Totals::of_image(40, 100, 75, 5, 10);
        assert_eq!((t.wasted_bytes, t.reclaimable_bytes), (25, 30));
        assert_eq!(t.efficiency, 0.75);
    }

    #[test]
    fn an_empty_image_is_fully_efficient() {
        assert_eq!(Totals::of_image(0, 0, 0, 0, 0).efficiency, 1.0);
        assert_eq!([].iter().sum::<Totals>().efficiency, 1.0);
    }

    #[test]
    fn summed_efficiency_weighs_images_by_their_bytes() {
        let big = Totals::of_image(1, 900, 900, 0, 0);
        let small = Totals::of_image(1, 100, 0, 0, 0);
        let sum: Totals = [big, small].iter().sum();
        assert_eq!(
            (sum.size_bytes, sum.wasted_bytes, sum.pull_bytes),
            (1000, 100, 2)
        );
        assert_eq!(sum.efficiency, 0.9);
    }
}
