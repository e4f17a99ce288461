//! Whatever an image or a registry says, and however many containers a Pod has, its report fits
//! well under the API server's limits and reads back as a valid `ImageReport`.

use imagebloat::operator::analyze::ContainerFailure;
use imagebloat::operator::status::{FailedContainer, REPORT_BUDGET, new_status};
use imagebloat::operator::workload::{Workload, is_dns_subdomain};
use imagebloat::report::crd::{ContainerReport, ImageReport, ImageReportSpec, PreviousImage};
use imagebloat::report::{ImageFindings, TRUNCATED_CONDITION};
use k8s_openapi::jiff::Timestamp;
use proptest::prelude::*;
use serde_json::json;

/// Reports must stay below this (etcd takes 1.5 MB; a report is meant to be read).
const REPORT_LIMIT: usize = 64 << 10;

/// A long string of one character: multi-byte and control characters grow when serialized.
fn huge() -> impl Strategy<Value = String> {
    (
        0usize..200_000,
        prop_oneof![Just('a'), Just('é'), Just('\u{1}'), Just('"'), Just('🦀')],
    )
        .prop_map(|(n, c)| c.to_string().repeat(n))
}

/// Findings whose single free-text fields are `text` and whose every list has `lists` entries
/// of `entry`.
fn findings(i: usize, text: &str, entry: &str, lists: usize) -> ImageFindings {
    let layer = json!({
        "index": 0, "digest": entry, "mediaType": entry, "pullBytes": 1, "uncompressedBytes": 1,
        "sizeBytes": 1, "fileCount": 1, "wastedBytes": 0, "junkBytes": 0,
        "createdBy": entry, "skipped": entry
    });
    let hidden = json!({
        "path": entry, "sizeBytes": 1, "layer": 0, "hiddenByLayer": 1, "reason": entry
    });
    let advice = json!({
        "kind": entry, "message": entry, "savedBytes": 1, "layer": 0, "createdBy": entry,
        "counted": vec![json!({"name": entry, "bytes": 1}); lists]
    });
    serde_json::from_value(json!({
        "image": format!("r/app{i}:{text}"), "digest": format!("sha256:{i:064}"),
        "indexDigest": text, "platform": text, "mediaType": text, "analyzerVersion": text,
        "pullBytes": 10, "sizeBytes": 20, "finalBytes": 10, "wastedBytes": 10,
        "reclaimableBytes": 10, "reclaimablePullBytes": 5, "efficiency": 0.5, "junkBytes": 0,
        "layers": vec![layer; lists],
        "hiddenFileCount": lists, "hiddenFiles": vec![hidden; lists],
        "categories": [{"category": "docs", "bytes": 1, "files": 1, "examples": vec![entry; lists]}],
        "recommendations": vec![advice; lists],
        "os": {"id": text, "versionId": text, "versionCodename": text, "prettyName": text},
        "baseImage": {"name": text, "digest": text},
        "notes": vec![entry; lists],
    }))
    .expect("valid findings")
}

fn workload(name: &str) -> Workload {
    Workload {
        namespace: "shop".into(),
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: name.into(),
        uid: "0d7c7c1e-8d3c-4c55-9a8e-3f5d2b0e6a11".into(),
    }
}

/// The whole object as the operator writes it: name, spec, owner, labels and status.
fn report(w: &Workload, status: imagebloat::report::crd::ImageReportStatus) -> ImageReport {
    let mut report = ImageReport::new(
        &w.report_name(),
        ImageReportSpec {
            workload: w.reference(),
        },
    );
    report.metadata.namespace = Some(w.namespace.clone());
    report.metadata.owner_references = Some(vec![w.owner_reference()]);
    report.status = Some(status);
    report
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 8,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_report_stays_under_64_kib_and_reads_back_as_an_image_report(
        text in huge(),
        lists in 0usize..300,
        analyzed in 0usize..1000,
        failing in 0usize..1000,
        message in huge(),
        name_length in 1usize..253,
    ) {
        // Three images: entries of lists are long too, but not 200 KB each (300 of them would
        // make a 60 MB fixture per container).
        let entry: String = text.chars().take(2000).collect();
        let raw: Vec<ImageFindings> = (0..3).map(|i| findings(i, &text, &entry, lists)).collect();
        let capped: Vec<ImageFindings> = raw.iter().cloned().map(ImageFindings::capped).collect();
        let mut containers: Vec<ContainerReport> = (0..analyzed)
            .map(|i| ContainerReport {
                name: format!("c{i}-{}", "n".repeat(50)),
                init: i % 7 == 0,
                // The first come as found (a cache, a report read back), the rest as the
                // analysis makes them.
                findings: Some(if i < 3 { raw[i].clone() } else { capped[i % 3].clone() }),
                error: None,
                reason: None,
                // What the container ran before, named as long as the image.
                previous: Some(PreviousImage {
                    image: text.clone(),
                    digest: text.clone(),
                    pull_bytes: 1,
                    size_bytes: 2,
                    reclaimable_bytes: 1,
                    reclaimable_pull_bytes: 1,
                    pull_bytes_delta: 9,
                    reclaimable_bytes_delta: 9,
                    reclaimable_pull_bytes_delta: 4,
                    changed_at: text.clone(),
                }),
            })
            .collect();
        // Long messages, 200 KB in all (a registry's error text is capped before it gets here).
        let message: String = message.chars().take(200_000 / (failing + 1)).collect();
        let failed: Vec<FailedContainer> = (0..failing)
            .map(|i| FailedContainer {
                name: format!("f{i}"),
                failure: ContainerFailure {
                    reason: message.chars().take(300).collect(),
                    message: message.clone(),
                    transient: false,
                },
            })
            .collect();
        containers.extend(failed.iter().map(|f| ContainerReport {
            name: f.name.clone(),
            init: false,
            findings: None,
            error: Some(f.failure.message.clone()),
            reason: Some(f.failure.reason.clone()),
            previous: None,
        }));
        let total = containers.len();
        let status = new_status(containers, &failed, None, Timestamp::UNIX_EPOCH);

        let w = workload(&"w".repeat(name_length));
        let object = serde_json::to_vec(&report(&w, status.clone())).unwrap();
        prop_assert!(object.len() < REPORT_LIMIT, "{} bytes", object.len());
        prop_assert!(serde_json::to_vec(&status).unwrap().len() <= REPORT_BUDGET);
        let back: ImageReport = serde_json::from_slice(&object).expect("a valid ImageReport");
        prop_assert_eq!(back.status.as_ref(), Some(&status));
        prop_assert!(is_dns_subdomain(back.metadata.name.as_deref().unwrap()));

        // The summary covers every container; the report says how many it leaves out.
        let summary = status.summary.as_ref().unwrap();
        prop_assert_eq!(summary.images, analyzed.min(3) as u32);
        let left_out = total - status.containers.len();
        let truncated = status.conditions.iter().find(|c| c.type_ == TRUNCATED_CONDITION);
        match truncated {
            Some(c) => {
                let said = format!("{left_out} of {total} containers");
                prop_assert!(c.message.starts_with(&said), "{}", c.message);
            }
            None => prop_assert_eq!(left_out, 0),
        }
        prop_assert_eq!(
            status.containers.first().map(|c| c.name.clone()),
            (total > 0).then(|| if analyzed > 0 { format!("c0-{}", "n".repeat(50)) } else { "f0".into() })
        );
    }
}

#[test]
fn a_pod_with_1000_containers_keeps_the_first_with_full_findings_and_counts_the_rest() {
    let containers: Vec<ContainerReport> = (0..1000)
        .map(|i| ContainerReport {
            name: format!("c{i}"),
            init: false,
            findings: Some(findings(i, "x", "x", 3)),
            error: None,
            reason: None,
            previous: None,
        })
        .collect();
    let status = new_status(containers, &[], None, Timestamp::UNIX_EPOCH);
    let summary = status.summary.as_ref().unwrap();
    assert_eq!((summary.images, summary.totals.size_bytes), (1000, 20_000));
    let kept = status.containers.len();
    assert!((10..1000).contains(&kept), "{kept} containers kept");
    let last = status.containers.last().unwrap().findings.as_ref().unwrap();
    assert_eq!(
        last.analysis.layers.len(),
        3,
        "kept containers keep their findings"
    );
    let truncated = status
        .conditions
        .iter()
        .find(|c| c.type_ == TRUNCATED_CONDITION)
        .expect("a Truncated condition");
    assert_eq!(
        truncated.message,
        format!(
            "{} of 1000 containers left out to keep the report small; the summary covers all",
            1000 - kept
        )
    );
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    assert_eq!(ready.map(|c| c.status.as_str()), Some("True"));
}

#[test]
fn a_report_with_a_huge_base_image_annotation_is_capped_not_dropped() {
    let f = findings(0, &"b".repeat(200_000), "b", 1);
    let containers = vec![ContainerReport {
        name: "app".into(),
        init: false,
        findings: Some(f),
        error: None,
        reason: None,
        previous: None,
    }];
    let status = new_status(containers, &[], None, Timestamp::UNIX_EPOCH);
    let size = serde_json::to_vec(&status).unwrap().len();
    assert!(size < 16 << 10, "{size} bytes");
    let f = status.containers[0].findings.as_ref().unwrap();
    let base = f
        .analysis
        .base_image
        .as_ref()
        .unwrap()
        .name
        .as_ref()
        .unwrap();
    assert!(base.starts_with("bbbb") && base.ends_with('…'));
    assert!(
        !status
            .conditions
            .iter()
            .any(|c| c.type_ == TRUNCATED_CONDITION)
    );
}
