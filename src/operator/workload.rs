//! From a Pod to the workload that owns it, and from a container to the exact image it runs.
//!
//! Owner references are followed one step past the Pod's controller where Kubernetes adds an
//! intermediate object: ReplicaSet → Deployment, Job → CronJob. Everything else (StatefulSet,
//! DaemonSet, a custom controller) is the workload itself; a Pod without a controller is its own
//! workload.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use sha2::{Digest as _, Sha256};

use crate::report::crd::WorkloadRef;

/// The longest name most kinds of object may have (a DNS subdomain).
pub const MAX_OBJECT_NAME: usize = 253;

/// Whether `s` is a valid DNS subdomain (RFC 1123), as Kubernetes checks object names: at most
/// 253 characters; dot-separated parts of lower-case letters, digits and `-`, each starting and
/// ending with a letter or digit.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= MAX_OBJECT_NAME
        && s.split('.').all(|part| {
            let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
            part.starts_with(alnum)
                && part.ends_with(alnum)
                && part.chars().all(|c| alnum(c) || c == '-')
        })
}

/// A workload: where a report goes and what owns it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Workload {
    pub namespace: String,
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

impl Workload {
    /// The report's name, a pure function of the kind and name (so stable across restarts):
    /// `<kind>-<name>` in lower case (`deployment-web`) when that is a valid object name (a DNS
    /// subdomain of at most 253 characters); otherwise that name cut short, with what a DNS
    /// subdomain does not allow replaced by `-`, and `-<8 hex of sha256(kind/name)>` appended,
    /// so that two long names that share their start still get two reports.
    pub fn report_name(&self) -> String {
        let plain = format!("{}-{}", self.kind.to_ascii_lowercase(), self.name);
        if is_dns_subdomain(&plain) {
            return plain;
        }
        let hash = Sha256::digest(format!("{}/{}", self.kind, self.name));
        let suffix: String = hash[..4].iter().map(|b| format!("{b:02x}")).collect();
        let start: String = plain
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(MAX_OBJECT_NAME - suffix.len() - 1)
            .collect();
        let start = start.trim_matches('-');
        if start.is_empty() {
            format!("workload-{suffix}")
        } else {
            format!("{start}-{suffix}")
        }
    }

    pub fn reference(&self) -> WorkloadRef {
        WorkloadRef {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
        }
    }

    /// The owner reference a report carries: the workload owns it, so deleting the workload
    /// deletes the report, but the report never blocks the workload's deletion.
    pub fn owner_reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(false),
        }
    }
}

/// The controlling owner among owner references.
pub fn controller_of(owners: Option<&Vec<OwnerReference>>) -> Option<&OwnerReference> {
    owners?.iter().find(|o| o.controller == Some(true))
}

/// Why a Pod's workload cannot be named yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unresolved {
    /// The intermediate owner (a ReplicaSet or Job) is not known yet; try again shortly.
    Missing { kind: String, name: String },
    /// The Pod has no namespace, name or uid (never from a real API server).
    Incomplete,
}

/// Resolves a Pod to its workload. `owners_of(kind, namespace, name)` returns the owner
/// references of a ReplicaSet or Job, or `None` when it is not known.
pub fn resolve<F>(pod: &Pod, owners_of: F) -> Result<Workload, Unresolved>
where
    F: Fn(&str, &str, &str) -> Option<Vec<OwnerReference>>,
{
    let meta = &pod.metadata;
    let (Some(namespace), Some(pod_name), Some(pod_uid)) =
        (meta.namespace.clone(), meta.name.clone(), meta.uid.clone())
    else {
        return Err(Unresolved::Incomplete);
    };
    let from = |o: &OwnerReference| Workload {
        namespace: namespace.clone(),
        api_version: o.api_version.clone(),
        kind: o.kind.clone(),
        name: o.name.clone(),
        uid: o.uid.clone(),
    };
    let Some(owner) = controller_of(meta.owner_references.as_ref()) else {
        return Ok(Workload {
            namespace,
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: pod_name,
            uid: pod_uid,
        });
    };
    // By group and kind, whatever the version: a Job made by a `batch/v1beta1` CronJob (every
    // cluster before 1.21) belongs to its CronJob as much as one made by a `batch/v1` CronJob.
    let (group, next_kind) = match (group_of(&owner.api_version), owner.kind.as_str()) {
        ("apps", "ReplicaSet") => ("apps", "Deployment"),
        ("batch", "Job") => ("batch", "CronJob"),
        _ => return Ok(from(owner)),
    };
    let Some(owners) = owners_of(&owner.kind, &namespace, &owner.name) else {
        return Err(Unresolved::Missing {
            kind: owner.kind.clone(),
            name: owner.name.clone(),
        });
    };
    match controller_of(Some(&owners)) {
        Some(up) if up.kind == next_kind && group_of(&up.api_version) == group => Ok(from(up)),
        _ => Ok(from(owner)),
    }
}

/// The API group of an `apiVersion` (`apps/v1` → `apps`; `v1`, the core group → ``).
pub fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

/// The digest a running container's image resolved to, from `status.containerStatuses[].imageID`
/// (`docker-pullable://repo@sha256:…`, `repo@sha256:…`, or a bare `sha256:…` that names a local
/// image ID rather than a registry digest, which is ignored).
pub fn digest_from_image_id(image_id: &str) -> Option<&str> {
    let (_, digest) = image_id.rsplit_once('@')?;
    digest.starts_with("sha256:").then_some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn owner(api_version: &str, kind: &str, name: &str) -> OwnerReference {
        OwnerReference {
            api_version: api_version.into(),
            kind: kind.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn pod(owners: Vec<OwnerReference>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some("shop".into()),
                name: Some("web-7d9f-abcde".into()),
                uid: Some("uid-pod".into()),
                owner_references: Some(owners),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn replicaset_pods_belong_to_their_deployment() {
        let p = pod(vec![owner("apps/v1", "ReplicaSet", "web-7d9f")]);
        let w = resolve(&p, |kind, ns, name| {
            assert_eq!((kind, ns, name), ("ReplicaSet", "shop", "web-7d9f"));
            Some(vec![owner("apps/v1", "Deployment", "web")])
        })
        .unwrap();
        assert_eq!(
            (w.kind.as_str(), w.name.as_str(), w.uid.as_str()),
            ("Deployment", "web", "uid-web")
        );
        assert_eq!(w.report_name(), "deployment-web");
    }

    #[test]
    fn a_bare_replicaset_is_its_own_workload() {
        let p = pod(vec![owner("apps/v1", "ReplicaSet", "rs")]);
        let w = resolve(&p, |_, _, _| Some(vec![])).unwrap();
        assert_eq!(w.kind, "ReplicaSet");
    }

    #[test]
    fn job_pods_belong_to_their_cronjob() {
        let p = pod(vec![owner("batch/v1", "Job", "backup-2890")]);
        let w = resolve(&p, |_, _, _| {
            Some(vec![owner("batch/v1", "CronJob", "backup")])
        })
        .unwrap();
        assert_eq!((w.kind.as_str(), w.name.as_str()), ("CronJob", "backup"));
    }

    #[test]
    fn job_pods_belong_to_their_cronjob_at_any_version_of_the_batch_group() {
        for version in ["batch/v1beta1", "batch/v2alpha1", "batch/v1"] {
            let p = pod(vec![owner("batch/v1", "Job", "backup-2890")]);
            let w = resolve(&p, |_, _, _| {
                Some(vec![owner(version, "CronJob", "backup")])
            })
            .unwrap();
            assert_eq!(
                (w.api_version.as_str(), w.kind.as_str(), w.name.as_str()),
                (version, "CronJob", "backup")
            );
            assert_eq!(w.report_name(), "cronjob-backup");
        }
        // A CronJob of another group is another kind: the Job is the workload.
        let p = pod(vec![owner("batch/v1", "Job", "backup-2890")]);
        let w = resolve(&p, |_, _, _| {
            Some(vec![owner("example.com/v1", "CronJob", "backup")])
        })
        .unwrap();
        assert_eq!((w.kind.as_str(), w.name.as_str()), ("Job", "backup-2890"));
        // Nor is a Job of another group followed.
        let p = pod(vec![owner("example.com/v1", "Job", "j")]);
        let w = resolve(&p, |_, _, _| panic!("not looked up")).unwrap();
        assert_eq!(
            (w.kind.as_str(), w.api_version.as_str()),
            ("Job", "example.com/v1")
        );
    }

    #[test]
    fn groups_of_api_versions() {
        assert_eq!(group_of("apps/v1"), "apps");
        assert_eq!(group_of("batch/v1beta1"), "batch");
        assert_eq!(group_of("v1"), "");
        assert_eq!(group_of("example.com/v1"), "example.com");
    }

    #[test]
    fn statefulset_daemonset_and_bare_pods() {
        for kind in ["StatefulSet", "DaemonSet"] {
            let w = resolve(&pod(vec![owner("apps/v1", kind, "db")]), |_, _, _| None).unwrap();
            assert_eq!((w.kind.as_str(), w.name.as_str()), (kind, "db"));
        }
        let w = resolve(&pod(vec![]), |_, _, _| None).unwrap();
        assert_eq!(
            (w.kind.as_str(), w.name.as_str(), w.api_version.as_str()),
            ("Pod", "web-7d9f-abcde", "v1")
        );
    }

    fn named(kind: &str, name: &str) -> Workload {
        Workload {
            namespace: "shop".into(),
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: "u1".into(),
        }
    }

    #[test]
    fn short_report_names_are_the_kind_and_name() {
        assert_eq!(
            named("StatefulSet", "db.v2").report_name(),
            "statefulset-db.v2"
        );
    }

    #[test]
    fn long_report_names_are_cut_to_a_valid_name_with_a_stable_hash_suffix() {
        let long = "a".repeat(253);
        let name = named("Deployment", &long).report_name();
        assert_eq!(name.len(), 253);
        assert!(is_dns_subdomain(&name), "{name}");
        assert!(name.starts_with("deployment-aaaa"), "{name}");
        // The same workload always gets the same name (a restart finds its report again) …
        assert_eq!(name, named("Deployment", &long).report_name());
        // … and two that differ only past the cut get two.
        let other = format!("{}b", "a".repeat(252));
        assert_ne!(name, named("Deployment", &other).report_name());
        assert_ne!(name, named("StatefulSet", &long).report_name());
        // The suffix is the first 8 hex digits of sha256("<kind>/<name>").
        let hash = Sha256::digest(format!("Deployment/{long}"));
        assert!(name.ends_with(&format!(
            "-{:02x}{:02x}{:02x}{:02x}",
            hash[0], hash[1], hash[2], hash[3]
        )));
    }

    #[test]
    fn names_a_dns_subdomain_forbids_are_made_valid() {
        for (kind, name) in [
            ("Deployment", "web..x"),
            ("Deployment", "Web_1"),
            ("Widget", "a.-b"),
            ("Deployment", &format!("{}.-", "x.".repeat(200))),
            ("", "-"),
        ] {
            let report = named(kind, name).report_name();
            assert!(is_dns_subdomain(&report), "{kind}/{name}: {report}");
        }
    }

    #[test]
    fn dns_subdomains_are_checked_as_kubernetes_does() {
        for valid in ["a", "deployment-web", "a.b-c.d", &"a".repeat(253)] {
            assert!(is_dns_subdomain(valid), "{valid}");
        }
        for invalid in ["", "A", "-a", "a-", "a..b", "a.-b", "a_b", &"a".repeat(254)] {
            assert!(!is_dns_subdomain(invalid), "{invalid}");
        }
    }

    #[test]
    fn an_unknown_replicaset_is_retried_not_guessed() {
        let p = pod(vec![owner("apps/v1", "ReplicaSet", "web-7d9f")]);
        assert_eq!(
            resolve(&p, |_, _, _| None),
            Err(Unresolved::Missing {
                kind: "ReplicaSet".into(),
                name: "web-7d9f".into()
            })
        );
    }

    #[test]
    fn image_ids_give_registry_digests_only() {
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            digest_from_image_id(&format!("docker-pullable://nginx@{d}")),
            Some(d)
        );
        assert_eq!(
            digest_from_image_id(&format!("127.0.0.1:5000/app@{d}")),
            Some(d)
        );
        assert_eq!(digest_from_image_id(d), None);
        assert_eq!(digest_from_image_id(""), None);
    }
}
