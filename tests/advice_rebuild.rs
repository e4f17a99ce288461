//! The advice saves what it says: each classic image-size mistake, built with buildah from a
//! Dockerfile, next to its fixed twin built the way the advice says (scripts/buildah-images.sh).
//! For each pair, the mistake's recommendation claims a saving (`savedBytes`) within 10% of what
//! the fix really saved (the mistake's `sizeBytes` minus the twin's), and the twin, which follows
//! every rule, gets no recommendation but the note about its base image.

mod common;

use common::*;
use serde_json::Value;

/// The pairs the script builds, the advice each mistake must get, and what the mistake is.
const PAIRS: &[(&str, &str, &str)] = &[
    (
        "deleted-later",
        "cleanup-in-same-layer",
        "a 12 MB file deleted in a later RUN",
    ),
    (
        "apt-caches",
        "package-manager-cache",
        "apt lists and archives left after `apt-get install make`",
    ),
    (
        "build-tools",
        "multi-stage-build",
        "`apt-get install make cpp binutils`, a program built, the tools kept",
    ),
    (
        "rewritten",
        "avoid-rewriting-files",
        "a 6 MB file made private by `chmod` in a later RUN",
    ),
    (
        "tree-deleted",
        "cleanup-in-same-layer",
        "a COPYed tree's tests/ deleted in a later RUN",
    ),
];

/// About the base image, which the pairs share: not a mistake of the Dockerfile.
const BASE_NOTE: &str = "slimmer-base";

fn scan(pair: &str, side: &str) -> Value {
    let reference = format!("{}/{pair}:{side}", env("IMAGEBLOAT_TEST_PAIRS"));
    scan_ok(&reference, &[])
}

fn kinds(json: &Value) -> Vec<String> {
    json["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap().to_string())
        .collect()
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[test]
fn each_mistakes_advice_saves_what_the_fixed_twin_saves() {
    let names = env("IMAGEBLOAT_TEST_PAIRS_NAMES");
    let built: Vec<&str> = names.split_whitespace().collect();
    let ours: Vec<&str> = PAIRS.iter().map(|(n, _, _)| *n).collect();
    assert_eq!(built, ours, "scripts/buildah-images.sh builds other pairs");

    let mut table = vec![
        "| Mistake | Advice | Claimed saving | Actual saving | Error |".to_string(),
        "|---|---|---:|---:|---:|".to_string(),
    ];
    let mut failures = Vec::new();
    for &(pair, kind, what) in PAIRS {
        let mistake = scan(pair, "mistake");
        let fixed = scan(pair, "fixed");
        let actual = u(&mistake, "sizeBytes") - u(&fixed, "sizeBytes");
        let advice: Vec<&Value> = mistake["recommendations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["kind"] == kind)
            .collect();
        let claimed: u64 = advice.iter().map(|r| u(r, "savedBytes")).sum();
        let error = (claimed as f64 - actual as f64) / actual as f64;
        table.push(format!(
            "| {what} | `{kind}` | {} | {} | {:+.1}% |",
            mb(claimed),
            mb(actual),
            error * 100.0
        ));
        if advice.len() != 1 {
            failures.push(format!(
                "{pair}:mistake should get one {kind} recommendation, got {:?}",
                kinds(&mistake)
            ));
        }
        if error.abs() > 0.10 {
            failures.push(format!(
                "{pair}: {kind} claims {claimed} bytes, the fix saved {actual} (more than 10% apart)"
            ));
        }
        let extra: Vec<String> = kinds(&fixed)
            .into_iter()
            .filter(|k| k != BASE_NOTE)
            .collect();
        if !extra.is_empty() {
            failures.push(format!(
                "{pair}:fixed follows every rule but gets {extra:?}: {}",
                fixed["recommendations"]
            ));
        }
    }
    println!("{}", table.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_multi_stage_advice_lists_the_packages_the_build_step_installed() {
    let mistake = scan("build-tools", "mistake");
    let advice = mistake["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "multi-stage-build")
        .expect("a multi-stage-build recommendation");
    let counted = advice["counted"].as_array().expect("what was counted");
    let names: Vec<&str> = counted
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for package in ["cpp-12", "binutils-x86-64-linux-gnu", "make", "libisl23"] {
        assert!(names.contains(&package), "{package} not in {names:?}");
    }
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("(package manager state")),
        "the step's dpkg state is counted: {names:?}"
    );
    // Largest first, and the parts add up to the claim.
    let bytes: Vec<u64> = counted.iter().map(|c| u(c, "bytes")).collect();
    let packages = &bytes[..names.iter().take_while(|n| !n.starts_with('(')).count()];
    assert!(packages.windows(2).all(|w| w[0] >= w[1]), "{bytes:?}");
    assert_eq!(bytes.iter().sum::<u64>(), u(advice, "savedBytes"));
    // The same step's junk by the build-tool rules alone is far less than the claim.
    let rules_only = mistake["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["category"] == "build-tools")
        .map(|c| u(c, "bytes"))
        .expect("build-tools junk");
    println!(
        "multi-stage-build: {} by the packages the step installed, {} by the build-tool rules alone",
        mb(u(advice, "savedBytes")),
        mb(rules_only)
    );
    assert!(rules_only < u(advice, "savedBytes"));
}
