//! Whether a workload may see an image's findings: only if it could pull the image itself.
//!
//! Findings are cached by digest and shared across namespaces, and the digest may come from a
//! tag another workload resolved or a sibling Pod's kubelet. None of that says this workload
//! could pull the image, so before any findings are used, access is proven the way the kubelet
//! would pull: with the workload's own credentials (Pod and ServiceAccount pull secrets, then
//! the operator-wide ones), or anonymously when it has none. The proof is a manifest HEAD by
//! digest, so nothing is transferred, and it is remembered per (repository, credential set) for
//! `ACCESS_TTL`: registries grant pulls per repository, so one digest proves the repository.
//!
//! A credential set is keyed by a hash of the credentials' fingerprints (never the secrets), and
//! "anonymous" is a key of its own: proof for one set never counts for another. Anonymous access
//! proven once counts for everyone (the image is public), and spares reading any pull secret.
//! A registry that cannot answer (down, rate limited) proves nothing either way: its error is
//! transient and not remembered, so the reconcile retries as for any registry failure.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::analyze::ContainerFailure;
use crate::digest::Digest;
use crate::registry::{Credential, Reference, RegistryError};

/// How long a proven (or refused) access is trusted. A pull secret added or changed is a new
/// credential set, seen at once; a credential revoked at the registry is seen within this time.
pub const ACCESS_TTL: Duration = Duration::from_secs(300);

/// Entries kept at most; beyond, expired then oldest ones go.
const MAX_ENTRIES: usize = 4096;

/// A repository (where it is pulled from) and a credential set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccessKey(String);

impl AccessKey {
    pub fn new(source: &Reference, credentials: &[Credential]) -> Self {
        Self(format!(
            "{}/{}#{}",
            source.registry(),
            source.repository(),
            credential_set(credentials)
        ))
    }
}

/// `anonymous`, or a hash of the credentials' fingerprints, whatever their order.
fn credential_set(credentials: &[Credential]) -> String {
    if credentials.is_empty() {
        return "anonymous".into();
    }
    let mut fingerprints: Vec<String> = credentials.iter().map(Credential::fingerprint).collect();
    fingerprints.sort();
    fingerprints.dedup();
    let digest = Digest::sha256_of(fingerprints.join(",").as_bytes());
    format!("credentials:{}", &digest.hex()[..32])
}

/// What a proof of access found.
#[derive(Debug, Clone)]
pub enum Verdict {
    Granted,
    /// Not granted: the container gets this failure (and no findings).
    Refused(ContainerFailure),
}

/// What a manifest HEAD's answer means: success grants; a refusal or any other answer that will
/// not change by itself refuses (remembered); a transient error decides nothing (returned as
/// the container's failure, not remembered).
pub fn verdict(answer: Result<(), RegistryError>) -> Result<Verdict, ContainerFailure> {
    match answer {
        Ok(()) => Ok(Verdict::Granted),
        Err(e) if e.is_transient() => Err(e.into()),
        Err(e) => Ok(Verdict::Refused(e.into())),
    }
}

/// Each key's verdict (filled once) and when it was asked for.
type Proofs = HashMap<AccessKey, (Arc<OnceCell<Verdict>>, Instant)>;

/// Proofs of access by (repository, credential set), each proven once however many reconciles
/// ask at the same time.
pub struct AccessCache {
    ttl: Duration,
    max_entries: usize,
    entries: Mutex<Proofs>,
}

impl Default for AccessCache {
    fn default() -> Self {
        Self::new(ACCESS_TTL, MAX_ENTRIES)
    }
}

impl AccessCache {
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        Self {
            ttl,
            max_entries: max_entries.max(1),
            entries: Mutex::default(),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, Proofs> {
        self.entries.lock().expect("access cache lock")
    }

    /// Proves that `credentials` (resolved only if needed) may pull from `source`: granted if
    /// anonymous access is proven already, else by the remembered verdict for the credentials
    /// that apply to `source`, else by `probe` with them (anonymous when none apply).
    pub async fn ensure<C, P, F>(
        &self,
        source: &Reference,
        credentials: C,
        probe: P,
    ) -> Result<(), ContainerFailure>
    where
        C: Future<Output = Vec<Credential>>,
        P: FnOnce(Vec<Credential>) -> F,
        F: Future<Output = Result<(), RegistryError>>,
    {
        if self.granted(&AccessKey::new(source, &[])) {
            return Ok(());
        }
        let credentials: Vec<Credential> = credentials
            .await
            .into_iter()
            .filter(|c| c.applies_to(source.registry(), source.repository()))
            .collect();
        let key = AccessKey::new(source, &credentials);
        let cell = self.cell(&key);
        let verdict = cell
            .get_or_try_init(|| async move { verdict(probe(credentials).await) })
            .await?;
        match verdict {
            Verdict::Granted => Ok(()),
            Verdict::Refused(failure) => Err(failure.clone()),
        }
    }

    /// Records access proven another way (a tag resolved with these credentials).
    pub fn grant(&self, source: &Reference, credentials: &[Credential]) {
        let credentials: Vec<Credential> = credentials
            .iter()
            .filter(|c| c.applies_to(source.registry(), source.repository()))
            .cloned()
            .collect();
        let _ = self
            .cell(&AccessKey::new(source, &credentials))
            .set(Verdict::Granted);
    }

    /// Whether access is proven for `key` and not expired.
    fn granted(&self, key: &AccessKey) -> bool {
        self.map().get(key).is_some_and(|(cell, at)| {
            at.elapsed() < self.ttl && matches!(cell.get(), Some(Verdict::Granted))
        })
    }

    /// The live cell for `key`: the remembered one, or a new one when none is or it expired.
    fn cell(&self, key: &AccessKey) -> Arc<OnceCell<Verdict>> {
        let mut entries = self.map();
        if let Some((cell, at)) = entries.get(key)
            && at.elapsed() < self.ttl
        {
            return cell.clone();
        }
        if !entries.contains_key(key) && entries.len() >= self.max_entries {
            self.make_room(&mut entries);
        }
        let cell = Arc::new(OnceCell::new());
        entries.insert(key.clone(), (cell.clone(), Instant::now()));
        cell
    }

    /// Drops expired entries, then, if still full, the oldest.
    fn make_room(&self, entries: &mut Proofs) {
        entries.retain(|_, (_, at)| at.elapsed() < self.ttl);
        while entries.len() >= self.max_entries {
            let oldest = entries
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => entries.remove(&k),
                None => break,
            };
        }
    }

    /// Drops expired entries; returns how many.
    pub fn prune(&self) -> usize {
        let mut entries = self.map();
        let before = entries.len();
        entries.retain(|_, (_, at)| at.elapsed() < self.ttl);
        before - entries.len()
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn private() -> Reference {
        "registry.example/private/app@sha256:0000000000000000000000000000000000000000000000000000000000000000"
            .parse()
            .unwrap()
    }

    fn denied() -> RegistryError {
        RegistryError::Denied {
            what: "manifest private/app".into(),
            status: 401,
            registry: "registry.example".into(),
            detail: String::new(),
        }
    }

    fn unavailable() -> RegistryError {
        RegistryError::Status {
            what: "manifest private/app".into(),
            status: 503,
            detail: String::new(),
        }
    }

    /// A probe that counts its calls and answers `answer()`, recording the credentials it got.
    struct Probe {
        calls: AtomicUsize,
        with: Mutex<Vec<Vec<String>>>,
    }

    impl Probe {
        fn new() -> Self {
            Self {
                calls: AtomicUsize::new(0),
                with: Mutex::default(),
            }
        }

        async fn answer(
            &self,
            credentials: Vec<Credential>,
            answer: Result<(), RegistryError>,
        ) -> Result<(), RegistryError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.with
                .lock()
                .unwrap()
                .push(credentials.iter().map(|c| c.username.clone()).collect());
            answer
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    async fn none() -> Vec<Credential> {
        vec![]
    }

    #[test]
    fn a_credential_set_key_holds_no_secret_and_tells_anonymous_and_each_set_apart() {
        let r = private();
        let alice = Credential::basic("alice", "s3cret-password");
        let bob = Credential::basic("bob", "other-password");
        let anonymous = AccessKey::new(&r, &[]);
        let a = AccessKey::new(&r, std::slice::from_ref(&alice));
        let b = AccessKey::new(&r, std::slice::from_ref(&bob));
        let both = AccessKey::new(&r, &[alice.clone(), bob.clone()]);
        assert!(anonymous.0.ends_with("#anonymous"));
        for key in [&a, &b, &both] {
            assert_ne!(key, &anonymous);
            assert!(!key.0.contains("s3cret") && !key.0.contains("password"));
            assert!(!key.0.contains("alice"), "not even the user name: {key:?}");
        }
        assert_ne!(a, b);
        assert_ne!(a, both);
        assert_eq!(
            both,
            AccessKey::new(&r, &[bob, alice.clone()]),
            "order-free"
        );
        let same_user_new_password = Credential::basic("alice", "rotated");
        assert_ne!(a, AccessKey::new(&r, &[same_user_new_password]));
        let other_repository: Reference = "registry.example/private/other:1".parse().unwrap();
        assert_ne!(a, AccessKey::new(&other_repository, &[alice]));
    }

    #[test]
    fn a_refusal_is_remembered_a_transient_error_decides_nothing() {
        assert!(matches!(verdict(Ok(())), Ok(Verdict::Granted)));
        match verdict(Err(denied())) {
            Ok(Verdict::Refused(f)) => {
                assert_eq!(f.reason, "Unauthorized");
                assert!(!f.transient);
            }
            other => panic!("a refusal: {other:?}"),
        }
        match verdict(Err(unavailable())) {
            Err(f) => assert!(
                f.transient,
                "the registry is down: retried, not Unauthorized"
            ),
            other => panic!("undecided: {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn access_is_proven_once_per_credential_set_and_again_after_its_ttl() {
        let cache = AccessCache::default();
        let probe = Probe::new();
        let alice = || async { vec![Credential::basic("alice", "pw")] };
        for _ in 0..3 {
            cache
                .ensure(&private(), alice(), |c| probe.answer(c, Ok(())))
                .await
                .expect("granted");
        }
        assert_eq!(probe.calls(), 1);
        // Another workload without credentials: its own proof, refused.
        let refused = cache
            .ensure(&private(), none(), |c| probe.answer(c, Err(denied())))
            .await
            .expect_err("refused");
        assert_eq!(refused.reason, "Unauthorized");
        assert_eq!(
            probe.with.lock().unwrap()[1],
            Vec::<String>::new(),
            "anonymous"
        );
        // The refusal is remembered too.
        cache
            .ensure(&private(), none(), |c| probe.answer(c, Ok(())))
            .await
            .expect_err("still refused");
        assert_eq!(probe.calls(), 2);
        tokio::time::advance(ACCESS_TTL).await;
        cache
            .ensure(&private(), alice(), |c| probe.answer(c, Ok(())))
            .await
            .unwrap();
        assert_eq!(probe.calls(), 3, "proven again after the TTL");
    }

    #[tokio::test(start_paused = true)]
    async fn proven_anonymous_access_grants_everyone_without_reading_their_credentials() {
        let cache = AccessCache::default();
        let probe = Probe::new();
        cache
            .ensure(&private(), none(), |c| probe.answer(c, Ok(())))
            .await
            .unwrap();
        let read = AtomicUsize::new(0);
        let credentials = async {
            read.fetch_add(1, Ordering::SeqCst);
            vec![Credential::basic("bob", "pw")]
        };
        cache
            .ensure(&private(), credentials, |c| probe.answer(c, Err(denied())))
            .await
            .expect("public image");
        assert_eq!((probe.calls(), read.load(Ordering::SeqCst)), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_registry_that_is_down_is_asked_again_and_never_refuses() {
        let cache = AccessCache::default();
        let probe = Probe::new();
        let failure = cache
            .ensure(&private(), none(), |c| probe.answer(c, Err(unavailable())))
            .await
            .expect_err("undecided");
        assert!(failure.transient);
        assert_ne!(failure.reason, "Unauthorized");
        cache
            .ensure(&private(), none(), |c| probe.answer(c, Ok(())))
            .await
            .expect("asked again, granted");
        assert_eq!(probe.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn credentials_configured_for_another_registry_are_neither_sent_nor_keyed() {
        let cache = AccessCache::default();
        let probe = Probe::new();
        let mut ring = crate::registry::Keyring::default();
        ring.insert("elsewhere.example", Credential::basic("carol", "pw"));
        let carol: Vec<Credential> = ring
            .lookup("elsewhere.example", "x")
            .into_iter()
            .cloned()
            .collect();
        assert_eq!(carol.len(), 1);
        cache
            .ensure(&private(), async { carol }, |c| {
                probe.answer(c, Err(denied()))
            })
            .await
            .expect_err("refused");
        assert_eq!(probe.with.lock().unwrap()[0], Vec::<String>::new());
        // The same (anonymous) verdict for a workload without any credentials.
        cache
            .ensure(&private(), none(), |c| probe.answer(c, Ok(())))
            .await
            .expect_err("remembered");
        assert_eq!(probe.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_cache_never_holds_more_than_its_bound() {
        let cache = AccessCache::new(ACCESS_TTL, 3);
        let probe = Probe::new();
        for i in 0..10 {
            let r: Reference = format!("registry.example/repo{i}:1").parse().unwrap();
            cache
                .ensure(&r, none(), |c| probe.answer(c, Ok(())))
                .await
                .unwrap();
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(cache.len(), 3);
        tokio::time::advance(ACCESS_TTL).await;
        assert_eq!(cache.prune(), 3);
        assert!(cache.is_empty());
    }
}
