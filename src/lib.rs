//! imagebloat: how much of every container image is dead weight, and how to cut it.
//!
//! `analysis` is pure (layer bytes in, findings out); `registry` fetches manifests and streams
//! blobs; `scan` joins the two for one image; `report` turns findings into the object users read,
//! `table` into the text `scan` prints; `format` says sizes, counts and percentages one way for
//! all of them. docs/architecture.md draws the modules and the arrows between them.
//! `testkit` writes test images for the tests, the benchmark and the demo; the binary does not use it.

pub mod analysis;
pub mod crd_schema;
pub mod digest;
pub mod fleet;
pub mod format;
pub mod metrics;
pub mod operator;
pub mod registry;
pub mod report;
pub mod scan;
pub mod table;
pub mod testkit;
pub mod top;
