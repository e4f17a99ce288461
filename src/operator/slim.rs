//! What the watch caches keep of each object: only the fields the controller reads.
//!
//! A Pod as the API server sends it is mostly what the operator never looks at — managed fields,
//! volumes, probes, environment, conditions — and the cache holds one per Pod in the cluster.
//! Keeping only the fields below cuts the cache to a fraction of its size (see
//! `scripts/scale-bench.sh`), and a test pins the list so a new read of a dropped field cannot go
//! unnoticed.

use k8s_openapi::api::core::v1::{
    Container, ContainerStatus, Node, NodeStatus, Pod, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The identity and ownership of an object: what a cache key and owner resolution need.
pub fn meta(m: &mut ObjectMeta) {
    let kept = ObjectMeta {
        name: m.name.take(),
        namespace: m.namespace.take(),
        uid: m.uid.take(),
        resource_version: m.resource_version.take(),
        creation_timestamp: m.creation_timestamp.take(),
        deletion_timestamp: m.deletion_timestamp.take(),
        owner_references: m.owner_references.take(),
        ..ObjectMeta::default()
    };
    *m = kept;
}

fn slim_container(c: &mut Container) {
    *c = Container {
        name: std::mem::take(&mut c.name),
        image: c.image.take(),
        ..Container::default()
    };
}

fn slim_container_status(s: &mut ContainerStatus) {
    *s = ContainerStatus {
        name: std::mem::take(&mut s.name),
        image: std::mem::take(&mut s.image),
        image_id: std::mem::take(&mut s.image_id),
        ..ContainerStatus::default()
    };
}

/// Keeps of a Pod: identity and owners; each container's name and image (init containers too);
/// the pull secrets, ServiceAccount and Node; and each container status's name, image and imageID.
pub fn pod(pod: &mut Pod) {
    meta(&mut pod.metadata);
    if let Some(spec) = pod.spec.as_mut() {
        let mut kept = PodSpec {
            containers: std::mem::take(&mut spec.containers),
            init_containers: spec.init_containers.take(),
            image_pull_secrets: spec.image_pull_secrets.take(),
            service_account_name: spec.service_account_name.take(),
            node_name: spec.node_name.take(),
            ..PodSpec::default()
        };
        kept.containers.iter_mut().for_each(slim_container);
        kept.init_containers
            .iter_mut()
            .flatten()
            .for_each(slim_container);
        *spec = kept;
    }
    if let Some(status) = pod.status.as_mut() {
        let mut kept = PodStatus {
            container_statuses: status.container_statuses.take(),
            init_container_statuses: status.init_container_statuses.take(),
            ..PodStatus::default()
        };
        for statuses in [
            &mut kept.container_statuses,
            &mut kept.init_container_statuses,
        ] {
            statuses
                .iter_mut()
                .flatten()
                .for_each(slim_container_status);
        }
        *status = kept;
    }
}

/// Keeps of a Node: its name, labels (os, arch and the arch-variant label) and system info. The
/// list of images a Node holds, often the largest part of it, goes.
pub fn node(node: &mut Node) {
    let labels = node.metadata.labels.take();
    meta(&mut node.metadata);
    node.metadata.labels = labels;
    node.spec = None;
    node.status = node.status.take().map(|s| NodeStatus {
        node_info: s.node_info,
        ..NodeStatus::default()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web-7d9f-abcde", "namespace": "shop", "uid": "u1",
                "resourceVersion": "42", "creationTimestamp": "2026-11-28T10:00:00Z",
                "generateName": "web-7d9f-",
                "labels": {"app": "web", "pod-template-hash": "7d9f"},
                "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-28T09:00:00Z"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web-7d9f", "uid": "rs1", "controller": true}],
                "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
                    "apiVersion": "v1", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:labels": {}}}}]
            },
            "spec": {
                "serviceAccountName": "web", "nodeName": "node-a",
                "imagePullSecrets": [{"name": "regcred"}],
                "initContainers": [{"name": "migrate", "image": "shop/migrate:1",
                    "command": ["/migrate"], "env": [{"name": "DB", "value": "x"}]}],
                "containers": [{"name": "app", "image": "shop/web:2",
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
                    "resources": {"limits": {"memory": "1Gi"}},
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                "volumes": [{"name": "data", "emptyDir": {}}],
                "tolerations": [{"key": "k", "operator": "Exists"}]
            },
            "status": {
                "phase": "Running", "podIP": "10.0.0.7",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "app", "image": "shop/web:2",
                    "imageID": "shop/web@sha256:aa", "ready": true, "restartCount": 3,
                    "containerID": "containerd://c1",
                    "state": {"running": {"startedAt": "2026-11-28T10:00:05Z"}}}],
                "initContainerStatuses": [{"name": "migrate", "image": "shop/migrate:1",
                    "imageID": "shop/migrate@sha256:bb", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 0}}}]
            }
        }))
        .expect("a valid Pod")
    }

    #[test]
    fn a_slim_pod_keeps_exactly_what_the_controller_reads() {
        let mut p = full_pod();
        pod(&mut p);
        let expected = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "web-7d9f-abcde", "namespace": "shop", "uid": "u1",
                "resourceVersion": "42", "creationTimestamp": "2026-11-28T10:00:00Z",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web-7d9f", "uid": "rs1", "controller": true}]
            },
            "spec": {
                "serviceAccountName": "web", "nodeName": "node-a",
                "imagePullSecrets": [{"name": "regcred"}],
                "initContainers": [{"name": "migrate", "image": "shop/migrate:1"}],
                "containers": [{"name": "app", "image": "shop/web:2"}]
            },
            "status": {
                "containerStatuses": [{"name": "app", "image": "shop/web:2",
                    "imageID": "shop/web@sha256:aa", "ready": false, "restartCount": 0}],
                "initContainerStatuses": [{"name": "migrate", "image": "shop/migrate:1",
                    "imageID": "shop/migrate@sha256:bb", "ready": false, "restartCount": 0}]
            }
        });
        assert_eq!(serde_json::to_value(&p).expect("serializes"), expected);
    }

    #[test]
    fn a_slim_pod_resolves_to_the_same_workload() {
        let full = full_pod();
        let mut slim = full.clone();
        pod(&mut slim);
        let owners = |_: &str, _: &str, _: &str| {
            Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    name: "web".into(),
                    uid: "d1".into(),
                    controller: Some(true),
                    block_owner_deletion: None,
                },
            ])
        };
        let a = super::super::workload::resolve(&full, owners).expect("resolves");
        let b = super::super::workload::resolve(&slim, owners).expect("resolves");
        assert_eq!(a, b);
        assert_eq!(b.kind, "Deployment");
    }

    #[test]
    fn a_slim_node_keeps_labels_and_system_info_only() {
        let mut n: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "node-a", "uid": "n1",
                "labels": {"kubernetes.io/arch": "arm64", "imagebloat.dev/arch-variant": "v8"},
                "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
            "spec": {"podCIDR": "10.0.0.0/24"},
            "status": {
                "nodeInfo": {"architecture": "arm64", "operatingSystem": "linux",
                    "bootID": "", "containerRuntimeVersion": "", "kernelVersion": "",
                    "kubeProxyVersion": "", "kubeletVersion": "", "machineID": "",
                    "osImage": "", "systemUUID": ""},
                "images": [{"names": ["shop/web@sha256:aa", "shop/web:2"], "sizeBytes": 1}],
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        }))
        .expect("a valid Node");
        node(&mut n);
        let v = serde_json::to_value(&n).expect("serializes");
        assert_eq!(v["metadata"]["labels"]["imagebloat.dev/arch-variant"], "v8");
        assert_eq!(v["metadata"].get("annotations"), None);
        assert_eq!(v.get("spec"), None);
        assert_eq!(v["status"]["nodeInfo"]["architecture"], "arm64");
        assert_eq!(v["status"].get("images"), None);
        assert_eq!(v["status"].get("conditions"), None);
    }
}
