//! imagebloat: how much of every container image is dead weight, and how to cut it.
//!
//! `analysis` is pure (layer bytes in, findings out); `registry` fetches manifests and streams
//! blobs; `scan` joins the two for one image; `report` turns findings into the object users read.
//! `testkit` writes test images for the tests, the benchmark and the demo; the binary does not use it.

pub mod analysis;
pub mod digest;
pub mod metrics;
pub mod operator;
pub mod registry;
pub mod report;
pub mod scan;
pub mod table;
pub mod testkit;
