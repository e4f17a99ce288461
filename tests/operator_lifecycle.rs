//! A workload over time, against the real control plane of `scripts/kube-testenv.sh`: the Jobs a
//! CronJob's real controller makes run after run, and a Deployment rolled to another image.
//!
//! What every scenario stands on is in `operator/fixture.rs`.

mod common;
#[allow(dead_code)] // each test binary uses a part of the fixture
#[path = "operator/fixture.rs"]
mod fixture;

use std::time::Duration;

use common::*;
use fixture::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use serde_json::json;

use imagebloat::report::crd::ImageReport;

/// The CronJob API the server serves: `batch/v1beta1` where it still exists (every server before
/// 1.25, and the only one before 1.21, whose own CronJob controller writes it), else `batch/v1`.
async fn cronjob_resource(client: &kube::Client) -> ApiResource {
    let served = |version: &'static str| async move {
        client
            .list_api_group_resources(&format!("batch/{version}"))
            .await
            .is_ok_and(|list| list.resources.iter().any(|r| r.name == "cronjobs"))
    };
    let version = if served("v1beta1").await {
        "v1beta1"
    } else {
        "v1"
    };
    ApiResource::from_gvk(&GroupVersionKind::gvk("batch", version, "CronJob"))
}

/// The minute of the hour `ago` before `now`, as a cron schedule counts it (the control plane's
/// clock is UTC; a zone offset by a whole number of hours has the same minutes).
fn minute_of(now: Timestamp, ago: i64) -> i64 {
    (now - SignedDuration::from_mins(ago))
        .as_second()
        .div_euclid(60)
        % 60
}

/// The start of that minute, RFC 3339.
fn start_of_minute(now: Timestamp, ago: i64) -> String {
    let second = (now - SignedDuration::from_mins(ago)).as_second();
    Timestamp::from_second(second - second.rem_euclid(60))
        .unwrap()
        .to_string()
}

/// Jobs made by the real CronJob controller (of the served version: `batch/v1beta1` on the 1.20
/// test bed) belong to their CronJob: two runs, one `cronjob-NAME` report that follows the newest
/// run, and no `job-…` report.
///
/// The controller starts the newest schedule time it missed since `status.lastScheduleTime`, so
/// the test sets that time a few minutes back and schedules the CronJob at a minute just past: the
/// controller makes the Job within its 10-second sync instead of at the next minute.
#[tokio::test]
async fn jobs_made_by_the_real_cronjob_controller_share_one_cronjob_report() {
    let cluster = Cluster::new("e2e-cron").await;
    let first =
        ImageBuilder::new(vec![Layer::new("ADD backup").sized("bin/backup", 4_321)]).build();
    let second = ImageBuilder::new(vec![
        Layer::new("ADD backup").sized("bin/backup", 5_432),
        Layer::new("ADD docs").sized("usr/share/doc/backup/README", 1_000),
    ])
    .build();
    let first = push("e2e-cron-1", &first).await;
    let second = push("e2e-cron-2", &second).await;
    let op = cluster.start_operator(&[]);

    let resource = cronjob_resource(&cluster.client).await;
    let cronjobs: Api<DynamicObject> =
        Api::namespaced_with(cluster.client.clone(), &cluster.ns, &resource);
    let now = Timestamp::now();
    let template = |image: &str| {
        json!({"spec": {"template": {"spec": {
            "schedulerName": "imagebloat-e2e",
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": image}]
        }}}})
    };
    let cronjob: DynamicObject = serde_json::from_value(json!({
        "apiVersion": resource.api_version, "kind": "CronJob",
        "metadata": {"name": "backup"},
        "spec": {
            "schedule": format!("{} * * * *", minute_of(now, 2)),
            "jobTemplate": template(&first.reference),
        }
    }))
    .unwrap();
    cronjobs
        .create(&Default::default(), &cronjob)
        .await
        .expect("create the CronJob");
    let back_then = start_of_minute(now, 5);
    cronjobs
        .patch_status(
            "backup",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"lastScheduleTime": back_then}})),
        )
        .await
        .expect("set lastScheduleTime");

    // Run 1, by the controller: its Pod runs the first image.
    let run_1 = run_the_jobs_pod(&cluster, 1, &first).await;
    let report = cluster.report("cronjob-backup", &op).await;
    assert_eq!(report.spec.workload.kind, "CronJob");
    assert_eq!(report.spec.workload.api_version, resource.api_version);
    let owner = &report.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("CronJob", "backup")
    );
    let digest_of = |r: &ImageReport| {
        r.status.as_ref().unwrap().containers[0]
            .findings
            .as_ref()
            .map(|f| f.digest.clone())
    };
    assert_eq!(digest_of(&report), Some(first.digest.clone()));

    // Run 2: once the controller recorded run 1, the schedule moves to the minute after it.
    let recorded = start_of_minute(now, 2);
    wait_for("run 1 recorded", Duration::from_secs(30), || async {
        let c = cronjobs.get("backup").await.ok()?;
        (c.data["status"]["lastScheduleTime"] == recorded.as_str()).then_some(())
    })
    .await;
    cronjobs
        .patch(
            "backup",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
                "schedule": format!("{} * * * *", minute_of(now, 1)),
                "jobTemplate": template(&second.reference),
            }})),
        )
        .await
        .expect("move the schedule");
    let run_2 = run_the_jobs_pod(&cluster, 2, &second).await;
    assert_ne!(run_1, run_2);

    // The report follows the newest run; no Job got a report of its own.
    cluster
        .wait_for_report(
            "the report on run 2's image",
            "cronjob-backup",
            Duration::from_secs(60),
            |r| (digest_of(&r?) == Some(second.digest.clone())).then_some(()),
        )
        .await;
    let reports = cluster
        .api::<ImageReport>()
        .list(&ListParams::default())
        .await
        .unwrap();
    let names: Vec<String> = reports
        .items
        .iter()
        .filter_map(|r| r.metadata.name.clone())
        .collect();
    assert_eq!(names, ["cronjob-backup"], "{}", op.log());
}

/// Waits for the `run`th Job of the namespace (made by the CronJob controller), plays the kubelet
/// for its Pod running `image`, and returns the Job's name.
async fn run_the_jobs_pod(cluster: &Cluster, run: usize, image: &Pushed) -> String {
    let jobs = cluster.api::<Job>();
    let job = wait_for(
        &format!("the CronJob controller's Job for run {run}"),
        Duration::from_secs(60),
        || async {
            let mut list = jobs.list(&ListParams::default()).await.ok()?.items;
            list.sort_by_key(|j| j.metadata.creation_timestamp.clone().map(|t| t.0));
            (list.len() >= run).then(|| list.swap_remove(run - 1))
        },
    )
    .await;
    let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("CronJob", "backup")
    );
    let name = job.metadata.name.clone().unwrap();
    let pods = cluster.api::<Pod>();
    let selector = format!("job-name={name}");
    let pod = wait_for("the Job's Pod", Duration::from_secs(60), || async {
        pods.list(&ListParams::default().labels(&selector))
            .await
            .ok()?
            .items
            .into_iter()
            .next()
    })
    .await;
    cluster.run_pod(&pod, &[("main", &image.image_id())]).await;
    name
}

/// The `imagebloat` Events about `workload` with `reason`, oldest first.
async fn events_about(cluster: &Cluster, workload: &str, reason: &str) -> Vec<Event> {
    let mut events: Vec<Event> = cluster
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.reporting_controller.as_deref() == Some("imagebloat")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(workload)
        })
        .collect();
    events.sort_by_key(|e| e.event_time.clone().map(|t| t.0));
    events
}

/// The chart's alerting rules with the default thresholds, every alert firing as soon as its
/// condition holds (`for: 0s`), rendered by `scripts/render-rules.sh` as the chart renders them.
fn rules_firing_at_once() -> String {
    let out = std::process::Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/render-rules.sh"
    ))
    .args([
        "--stdout",
        "--set",
        "prometheusRule.alerts.imageGrew.for=0s",
    ])
    .output()
    .expect("scripts/render-rules.sh");
    assert!(
        out.status.success(),
        "render-rules.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A Deployment rolled from a lean image to a bloated one: its report keeps the lean image's
/// digest and figures with the deltas, the Deployment gets one `ImageGrew` Warning, the growth
/// gauge is on `/metrics` and `ImageBloatImageGrew` fires in a real Prometheus running the chart's
/// rules. A restarted operator keeps all of it and announces nothing again.
#[tokio::test]
async fn a_deployment_rolled_to_a_bloated_image_keeps_the_lean_figures_and_warns_once() {
    let cluster = Cluster::new("e2e-grew").await;
    let lean = ImageBuilder::new(vec![Layer::new("ADD app").sized("bin/app", 200_000)]).build();
    let bloated = ImageBuilder::new(vec![
        Layer::new("ADD app").sized("bin/app", 200_000),
        Layer::new("RUN apt-get update && apt-get install -y curl")
            .sized("usr/bin/curl", 150_000)
            .sized("var/lib/apt/lists/deb.debian.org_dists_main", 900_000),
    ])
    .build();
    let lean_ref = push("e2e-grew", &lean).await;
    let bloated_ref = push_to(&format!("{}:2", repo("e2e-grew")), &bloated).await;
    // Expected from the pushed layers alone: what a node downloads, and the junk added.
    let (lean_pull, bloated_pull) = (lean.pull_bytes(), bloated.pull_bytes());
    let pull_delta = bloated_pull as i64 - lean_pull as i64;
    assert!(
        pull_delta as f64 / lean_pull as f64 > 0.1,
        "the fixture grows past the threshold"
    );

    let op = cluster.start_operator(&["--growth-threshold", "0.1"]);
    let prometheus = Prometheus::scraping_with_rules(&op.metrics, &rules_firing_at_once());
    cluster.deploy_running("web", &lean_ref).await;
    let before = cluster.report("deployment-web", &op).await;
    let lean_entry = before.status.unwrap().containers[0].clone();
    assert_eq!(lean_entry.findings.unwrap().digest, lean_ref.digest);
    assert!(lean_entry.previous.is_none(), "no earlier image");

    roll(&cluster, "web", &bloated_ref).await;

    let entry = cluster
        .wait_for_report(
            "the report on the bloated image",
            "deployment-web",
            Duration::from_secs(60),
            |r| {
                let c = r?.status?.containers.into_iter().next()?;
                (c.findings.as_ref()?.digest == bloated_ref.digest).then_some(c)
            },
        )
        .await;
    let now = entry.findings.as_ref().unwrap().analysis.totals;
    assert_eq!(now.pull_bytes, bloated_pull);
    assert_eq!(now.reclaimable_bytes, 900_000);
    let previous = entry
        .previous
        .clone()
        .expect("the previous image in the report");
    assert_eq!(previous.digest, lean_ref.digest);
    assert!(previous.image.contains("e2e-grew"), "{}", previous.image);
    assert_eq!(
        (
            previous.pull_bytes,
            previous.size_bytes,
            previous.reclaimable_bytes
        ),
        (lean_pull, 200_000, 0)
    );
    assert_eq!(previous.pull_bytes_delta, pull_delta);
    assert_eq!(previous.reclaimable_bytes_delta, 900_000);
    assert_eq!(
        previous.reclaimable_pull_bytes_delta,
        now.reclaimable_pull_bytes as i64
    );

    // One Warning on the Deployment, with both sizes.
    let grew = wait_for("an ImageGrew Event", Duration::from_secs(30), || async {
        let events = events_about(&cluster, "web", "ImageGrew").await;
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(grew.len(), 1, "{grew:?}");
    let event = &grew[0];
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(
        event.regarding.as_ref().unwrap().kind.as_deref(),
        Some("Deployment")
    );
    let note = event.note.clone().unwrap();
    let size = imagebloat::format::size;
    assert!(
        note.starts_with(&format!(
            "container main: pull {} -> {} (+{}, +{})",
            size(lean_pull),
            size(bloated_pull),
            size(pull_delta as u64),
            imagebloat::format::percent(pull_delta as f64 / lean_pull as f64)
        )),
        "{note}"
    );
    assert!(note.ends_with("(imagereport/deployment-web)"), "{note}");
    assert!(
        events_about(&cluster, "web", "ImageShrank")
            .await
            .is_empty()
    );

    // The gauge, and the alert firing on it.
    let labels = [("workload", "web"), ("container", "main")];
    let scrape = op
        .scrape_until("the growth gauge", Duration::from_secs(10), |s| {
            series(s, "imagebloat_image_pull_growth_bytes", &labels) == Some(pull_delta as f64)
        })
        .await;
    assert!(
        scrape.contains(&format!(
            "imagebloat_image_pull_growth_bytes{{container=\"main\",image=\"{}\"",
            bloated_ref.reference
        )),
        "labelled as the other image series"
    );
    let alert = wait_for(
        "ImageBloatImageGrew firing",
        Duration::from_secs(60),
        || async {
            let a = prometheus
                .query(r#"ALERTS{alertname="ImageBloatImageGrew", alertstate="firing"}"#)
                .await;
            a["data"]["result"]
                .as_array()
                .and_then(|r| r.first().cloned())
        },
    )
    .await;
    let metric = &alert["metric"];
    assert_eq!(
        (
            metric["namespace"].as_str(),
            metric["workload"].as_str(),
            metric["container"].as_str()
        ),
        (Some(cluster.ns.as_str()), Some("web"), Some("main")),
        "{alert}"
    );

    // A restart: the history comes back from the report, and nothing is announced again.
    drop(op);
    let second = cluster.start_operator(&["--growth-threshold", "0.1"]);
    second
        .scrape_until(
            "the growth gauge after the restart",
            Duration::from_secs(30),
            |s| series(s, "imagebloat_image_pull_growth_bytes", &labels) == Some(pull_delta as f64),
        )
        .await;
    // The reconcile that set the gauge would publish right after it: give it time.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(events_about(&cluster, "web", "ImageGrew").await.len(), 1);
    let after = cluster.report("deployment-web", &second).await;
    let kept = after.status.unwrap().containers[0].previous.clone();
    assert_eq!(kept, Some(previous), "the history is kept as it was");
    assert_eq!(
        second
            .gauge("imagebloat_reports_written_total", &[("result", "success")])
            .await,
        Some(0.0),
        "the restarted operator had nothing to write"
    );
}

/// Rolls the one-container Deployment `name` to `image`: the Deployment controller makes a new
/// ReplicaSet, whose Pod the test runs (as the kubelet) on the pushed digest.
async fn roll(cluster: &Cluster, name: &str, image: &Pushed) {
    // Creation times have a resolution of one second, and the newest Pod stands for the workload:
    // the new Pod must not share its second with the old one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    cluster
        .api::<Deployment>()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "main", "image": image.reference}
            ]}}}})),
        )
        .await
        .unwrap();
    let pods = cluster.api::<Pod>();
    let selector = format!("app={name}");
    let new_pod = wait_for("the rolled Pod", Duration::from_secs(60), || async {
        pods.list(&ListParams::default().labels(&selector))
            .await
            .ok()?
            .items
            .into_iter()
            .find(|p| {
                p.spec.as_ref().unwrap().containers[0].image.as_deref()
                    == Some(image.reference.as_str())
            })
    })
    .await;
    cluster
        .run_pod(&new_pod, &[("main", &image.image_id())])
        .await;
}

/// A Deployment rolled to a smaller image: an `ImageShrank` Normal Event, a negative gauge, no
/// `ImageGrew`.
#[tokio::test]
async fn a_deployment_rolled_to_a_smaller_image_gets_an_image_shrank_event() {
    let cluster = Cluster::new("e2e-shrank").await;
    let big = ImageBuilder::new(vec![
        Layer::new("ADD").sized("bin/tool", 100_000),
        Layer::new("ADD docs").sized("usr/share/doc/tool/manual.pdf", 300_000),
    ])
    .build();
    let small = ImageBuilder::new(vec![Layer::new("ADD").sized("bin/tool", 100_000)]).build();
    let big_ref = push("e2e-shrank", &big).await;
    let small_ref = push_to(&format!("{}:2", repo("e2e-shrank")), &small).await;
    let op = cluster.start_operator(&[]);
    cluster.deploy_running("tool", &big_ref).await;
    cluster.report("deployment-tool", &op).await;

    roll(&cluster, "tool", &small_ref).await;
    let shrank = wait_for("an ImageShrank Event", Duration::from_secs(60), || async {
        events_about(&cluster, "tool", "ImageShrank").await.pop()
    })
    .await;
    assert_eq!(shrank.type_.as_deref(), Some("Normal"));
    let delta = small.pull_bytes() as i64 - big.pull_bytes() as i64;
    assert!(delta < 0);
    let labels = [("workload", "tool"), ("container", "main")];
    op.scrape_until("a negative growth", Duration::from_secs(10), |s| {
        series(s, "imagebloat_image_pull_growth_bytes", &labels) == Some(delta as f64)
    })
    .await;
    let report = cluster.report("deployment-tool", &op).await;
    let previous = report.status.unwrap().containers[0]
        .previous
        .clone()
        .unwrap();
    assert_eq!(
        (
            previous.digest.as_str(),
            previous.pull_bytes_delta,
            previous.reclaimable_bytes_delta
        ),
        (big_ref.digest.as_str(), delta, -300_000)
    );
    assert!(events_about(&cluster, "tool", "ImageGrew").await.is_empty());
}

/// `--growth-threshold` is a share of 0 or more: anything else stops `run` before it starts,
/// with exit status 2 and the flag named.
#[test]
fn a_growth_threshold_that_is_no_share_is_refused() {
    for bad in ["-0.5", "NaN", "inf", "ten"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_imagebloat"))
            .args(["run", &format!("--growth-threshold={bad}")])
            .env("KUBECONFIG", "/nonexistent")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--growth-threshold"), "{bad}: {err}");
    }
}

/// A bare Pod whose image is changed in place (`kubectl set image pod/…`): until the kubelet
/// restarts the container, its status still reports the old image's digest, which is not taken
/// for the new image's; the new tag is resolved, the change announced once, and the kubelet's word
/// changes nothing more.
#[tokio::test]
async fn a_pods_image_changed_in_place_is_the_new_image_before_the_kubelet_reports_it() {
    let cluster = Cluster::new("e2e-inplace").await;
    let big = ImageBuilder::new(vec![
        Layer::new("ADD").sized("bin/tool", 100_000),
        Layer::new("ADD docs").sized("usr/share/doc/tool/manual.pdf", 300_000),
    ])
    .build();
    let small = ImageBuilder::new(vec![Layer::new("ADD").sized("bin/tool", 100_000)]).build();
    let big_ref = push("e2e-inplace", &big).await;
    let small_ref = push_to(&format!("{}:2", repo("e2e-inplace")), &small).await;
    let op = cluster.start_operator(&[]);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "tool"},
        "spec": {"schedulerName": "imagebloat-e2e",
                 "containers": [{"name": "main", "image": big_ref.reference}]}
    }))
    .unwrap();
    let pods = cluster.api::<Pod>();
    let pod = pods.create(&Default::default(), &pod).await.unwrap();
    cluster
        .run_pod(&pod, &[("main", &big_ref.image_id())])
        .await;
    cluster.report("pod-tool", &op).await;

    let pod = pods
        .patch(
            "tool",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"containers": [
                {"name": "main", "image": small_ref.reference}
            ]}})),
        )
        .await
        .unwrap();
    let digest_of = |r: Option<ImageReport>| {
        let c = r?.status?.containers.into_iter().next()?;
        c.findings.map(|f| f.digest)
    };
    cluster
        .wait_for_report(
            "the report on the new image",
            "pod-tool",
            Duration::from_secs(30),
            |r| (digest_of(r)? == small_ref.digest).then_some(()),
        )
        .await;
    let shrank = wait_for("an ImageShrank Event", Duration::from_secs(30), || async {
        events_about(&cluster, "tool", "ImageShrank").await.pop()
    })
    .await;
    assert_eq!(shrank.type_.as_deref(), Some("Normal"));

    // The kubelet restarts the container on the new image.
    cluster
        .run_pod(&pod, &[("main", &small_ref.image_id())])
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = cluster.report("pod-tool", &op).await;
    let previous = report.status.unwrap().containers[0]
        .previous
        .clone()
        .unwrap();
    assert_eq!(
        (previous.digest.as_str(), previous.reclaimable_bytes_delta),
        (big_ref.digest.as_str(), -300_000)
    );
    assert_eq!(events_about(&cluster, "tool", "ImageShrank").await.len(), 1);
}
