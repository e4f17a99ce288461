//! Which workload each live Pod belongs to, both ways: a reconcile reads its own Pods instead of
//! scanning every Pod in the cluster, and a deleted Pod still names the workload it belonged to
//! after its owners are gone.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::ObjectRef;

use super::workload::Workload;

#[derive(Default)]
pub struct PodIndex {
    by_uid: HashMap<String, (Workload, ObjectRef<Pod>)>,
    /// Per workload, each Pod name with the uid it has now (a name outlives a Pod: a
    /// StatefulSet's `db-0` comes back with a new uid).
    by_workload: HashMap<Workload, HashMap<ObjectRef<Pod>, String>>,
}

impl PodIndex {
    /// Records that the Pod `uid` (at `pod`) belongs to `workload`; a Pod that moved (orphaned,
    /// adopted) leaves its former workload.
    pub fn insert(&mut self, uid: String, workload: Workload, pod: ObjectRef<Pod>) {
        let entry = (workload.clone(), pod.clone());
        if let Some((old, old_ref)) = self.by_uid.insert(uid.clone(), entry)
            && (old != workload || old_ref != pod)
        {
            self.unlink(&old, &old_ref, &uid);
        }
        self.by_workload
            .entry(workload)
            .or_default()
            .insert(pod, uid);
    }

    /// Forgets the Pod `uid`; returns the workload it belonged to.
    pub fn remove(&mut self, uid: &str) -> Option<Workload> {
        let (workload, pod) = self.by_uid.remove(uid)?;
        self.unlink(&workload, &pod, uid);
        Some(workload)
    }

    /// Forgets every Pod whose uid `live` does not hold (deletions missed while a watch was
    /// down); returns their workloads, each once.
    pub fn retain_live(&mut self, live: &HashSet<String>) -> Vec<Workload> {
        let gone: Vec<String> = self
            .by_uid
            .keys()
            .filter(|uid| !live.contains(*uid))
            .cloned()
            .collect();
        let mut workloads: Vec<Workload> = gone.iter().filter_map(|uid| self.remove(uid)).collect();
        workloads.sort();
        workloads.dedup();
        workloads
    }

    /// The Pods recorded for `workload`.
    pub fn pods_of(&self, workload: &Workload) -> Vec<ObjectRef<Pod>> {
        self.by_workload
            .get(workload)
            .map(|pods| pods.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Drops `pod` from `workload` if the name still stands for `uid` (not for a newer Pod).
    fn unlink(&mut self, workload: &Workload, pod: &ObjectRef<Pod>, uid: &str) {
        if let Some(pods) = self.by_workload.get_mut(workload) {
            if pods.get(pod).is_some_and(|current| current == uid) {
                pods.remove(pod);
            }
            if pods.is_empty() {
                self.by_workload.remove(workload);
            }
        }
    }

    #[cfg(test)]
    fn workloads(&self) -> usize {
        self.by_workload.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(name: &str) -> Workload {
        Workload {
            namespace: "shop".into(),
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        }
    }

    fn pod(name: &str) -> ObjectRef<Pod> {
        ObjectRef::new(name).within("shop")
    }

    #[test]
    fn pods_are_found_by_workload_and_workloads_by_deleted_pod() {
        let mut index = PodIndex::default();
        index.insert("u1".into(), w("web"), pod("web-1"));
        index.insert("u2".into(), w("web"), pod("web-2"));
        index.insert("u3".into(), w("api"), pod("api-1"));
        let mut web = index.pods_of(&w("web"));
        web.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(web, vec![pod("web-1"), pod("web-2")]);
        assert_eq!(index.remove("u1"), Some(w("web")));
        assert_eq!(index.remove("u1"), None, "once");
        assert_eq!(index.pods_of(&w("web")), vec![pod("web-2")]);
        assert_eq!(index.remove("u2"), Some(w("web")));
        assert!(index.pods_of(&w("web")).is_empty());
        assert_eq!(index.workloads(), 1, "empty workloads are dropped");
    }

    #[test]
    fn a_pod_that_changes_owner_leaves_its_former_workload() {
        let mut index = PodIndex::default();
        index.insert("u1".into(), w("old"), pod("p"));
        index.insert("u1".into(), w("new"), pod("p"));
        assert!(index.pods_of(&w("old")).is_empty());
        assert_eq!(index.pods_of(&w("new")), vec![pod("p")]);
        // Seen again unchanged: still there.
        index.insert("u1".into(), w("new"), pod("p"));
        assert_eq!(index.pods_of(&w("new")), vec![pod("p")]);
    }

    #[test]
    fn a_recreated_pod_of_the_same_name_keeps_its_place() {
        // A StatefulSet Pod deleted and created again under the same name with a new uid, the
        // new one seen first (as after a watch gap): the old uid's removal keeps the new Pod.
        let mut index = PodIndex::default();
        index.insert("u1".into(), w("db"), pod("db-0"));
        index.insert("u2".into(), w("db"), pod("db-0"));
        assert_eq!(index.remove("u1"), Some(w("db")));
        assert_eq!(index.pods_of(&w("db")), vec![pod("db-0")]);
        assert_eq!(index.remove("u2"), Some(w("db")));
        assert!(index.pods_of(&w("db")).is_empty());
    }

    #[test]
    fn deletions_missed_during_a_watch_gap_are_pruned() {
        let mut index = PodIndex::default();
        index.insert("u1".into(), w("web"), pod("web-1"));
        index.insert("u2".into(), w("web"), pod("web-2"));
        index.insert("u3".into(), w("api"), pod("api-1"));
        let live = HashSet::from(["u2".to_string()]);
        let mut gone = index.retain_live(&live);
        gone.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(gone, vec![w("api"), w("web")]);
        assert_eq!(index.pods_of(&w("web")), vec![pod("web-2")]);
        assert!(index.pods_of(&w("api")).is_empty());
    }
}
