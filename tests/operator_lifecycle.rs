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
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
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
