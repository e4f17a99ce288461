//! From a Pod to the workload that owns it, and from a container to the exact image it runs.
//!
//! Owner references are followed one step past the Pod's controller where Kubernetes adds an
//! intermediate object: ReplicaSet → Deployment, Job → CronJob. Everything else (StatefulSet,
//! DaemonSet, a custom controller) is the workload itself; a Pod without a controller is its own
//! workload.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::report::crd::WorkloadRef;

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
    /// The report's name: `<kind>-<name>` in lower case (`deployment-web`).
    pub fn report_name(&self) -> String {
        format!("{}-{}", self.kind.to_ascii_lowercase(), self.name)
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
    let (group, next_kind) = match (owner.kind.as_str(), owner.api_version.as_str()) {
        ("ReplicaSet", "apps/v1") => ("apps/v1", "Deployment"),
        ("Job", "batch/v1") => ("batch/v1", "CronJob"),
        _ => return Ok(from(owner)),
    };
    let Some(owners) = owners_of(&owner.kind, &namespace, &owner.name) else {
        return Err(Unresolved::Missing {
            kind: owner.kind.clone(),
            name: owner.name.clone(),
        });
    };
    match controller_of(Some(&owners)) {
        Some(up) if up.kind == next_kind && up.api_version == group => Ok(from(up)),
        _ => Ok(from(owner)),
    }
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
