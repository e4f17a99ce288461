//! The election's state machine against a fake Lease store, on tokio's paused clock.

use std::sync::Mutex;

use super::*;

/// A Lease store that behaves like the API server (resourceVersions, 409 on a stale replace),
/// and can be told to fail or to never answer.
#[derive(Default)]
struct FakeLeases {
    state: Mutex<FakeState>,
}

#[derive(Default)]
struct FakeState {
    lease: Option<Lease>,
    version: u64,
    failing: bool,
    hanging: bool,
}

fn conflict() -> kube::Error {
    kube::Error::Api(
        kube::core::Status::failure("conflict", "Conflict")
            .with_code(409)
            .boxed(),
    )
}

impl FakeLeases {
    /// Writes `lease` as another client would (a new resourceVersion).
    fn put(&self, mut lease: Lease) {
        let mut s = self.state.lock().unwrap();
        s.version += 1;
        lease.metadata.resource_version = Some(s.version.to_string());
        s.lease = Some(lease);
    }

    fn holder(&self) -> Option<String> {
        let s = self.state.lock().unwrap();
        s.lease.as_ref()?.spec.as_ref()?.holder_identity.clone()
    }

    fn set(&self, failing: bool, hanging: bool) {
        let mut s = self.state.lock().unwrap();
        (s.failing, s.hanging) = (failing, hanging);
    }

    /// Fails or hangs as told; else runs `f` on the state.
    async fn answer<T>(
        &self,
        f: impl FnOnce(&mut FakeState) -> Result<T, kube::Error>,
    ) -> Result<T, kube::Error> {
        let (failing, hanging) = {
            let s = self.state.lock().unwrap();
            (s.failing, s.hanging)
        };
        if hanging {
            std::future::pending::<()>().await;
        }
        if failing {
            return Err(lost("connection refused"));
        }
        f(&mut self.state.lock().unwrap())
    }
}

impl LeaseStore for Arc<FakeLeases> {
    async fn get(&self) -> Result<Option<Lease>, kube::Error> {
        self.answer(|s| Ok(s.lease.clone())).await
    }

    async fn create(&self, lease: &Lease) -> Result<Lease, kube::Error> {
        self.answer(|s| {
            if s.lease.is_some() {
                return Err(conflict());
            }
            s.version += 1;
            let mut lease = lease.clone();
            lease.metadata.resource_version = Some(s.version.to_string());
            s.lease = Some(lease.clone());
            Ok(lease)
        })
        .await
    }

    async fn replace(&self, lease: &Lease) -> Result<Lease, kube::Error> {
        self.answer(|s| {
            let current = s
                .lease
                .as_ref()
                .and_then(|l| l.metadata.resource_version.clone());
            if current != lease.metadata.resource_version {
                return Err(conflict());
            }
            s.version += 1;
            let mut lease = lease.clone();
            lease.metadata.resource_version = Some(s.version.to_string());
            s.lease = Some(lease.clone());
            Ok(lease)
        })
        .await
    }
}

fn config(identity: &str) -> LeaseConfig {
    LeaseConfig {
        namespace: "ops".into(),
        name: "imagebloat-leader".into(),
        identity: identity.into(),
        timing: LeaseTiming::default(),
    }
}

/// A Lease held by `holder`, renewed at `renewed` by the holder's clock.
fn held_by(holder: &str, renewed: Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some("imagebloat-leader".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(renewed)),
            ..Default::default()
        }),
    }
}

fn elector(store: &Arc<FakeLeases>, identity: &str) -> Arc<Elector<Arc<FakeLeases>>> {
    Arc::new(Elector::with_store(store.clone(), config(identity)))
}

async fn advance(by: Duration) {
    tokio::time::sleep(by).await;
}

#[test]
fn client_gos_timings_let_the_leader_stop_before_its_lease_can_expire() {
    let t = LeaseTiming::default();
    assert_eq!(
        (t.duration, t.renew_deadline, t.retry_period),
        (
            Duration::from_secs(15),
            Duration::from_secs(10),
            Duration::from_secs(2)
        )
    );
    assert!(t.retry_period < t.renew_deadline && t.renew_deadline < t.duration);
}

#[tokio::test(start_paused = true)]
async fn a_standby_waits_the_lease_duration_from_when_it_saw_the_lease_change_whatever_the_holders_clock_says()
 {
    let store = Arc::new(FakeLeases::default());
    // The holder's clock is an hour behind: by renewTime, its Lease expired long ago.
    let skewed = Timestamp::now() - Duration::from_secs(3600);
    store.put(held_by("a", skewed));
    let b = elector(&store, "b");
    let acquiring = tokio::spawn({
        let b = b.clone();
        async move { b.acquire().await }
    });
    advance(Duration::from_secs(14)).await;
    assert!(
        !acquiring.is_finished(),
        "taken over before the lease duration"
    );
    assert!(!b.leadership().holds());
    advance(Duration::from_secs(4)).await;
    assert!(
        acquiring.is_finished(),
        "not taken over after the lease duration"
    );
    assert!(b.leadership().holds());
    assert_eq!(store.holder().as_deref(), Some("b"));
}

#[tokio::test(start_paused = true)]
async fn a_lease_its_holder_keeps_renewing_is_never_taken_even_if_its_clock_is_far_ahead_or_behind()
{
    let store = Arc::new(FakeLeases::default());
    let b = elector(&store, "b");
    let acquiring = tokio::spawn({
        let b = b.clone();
        async move { b.acquire().await }
    });
    for i in 0..30 {
        let skew = Duration::from_secs(3600);
        let renewed = if i % 2 == 0 {
            Timestamp::now() - skew
        } else {
            Timestamp::now() + skew
        };
        store.put(held_by("a", renewed));
        advance(Duration::from_secs(5)).await;
    }
    assert!(!acquiring.is_finished());
    assert_eq!(store.holder().as_deref(), Some("a"));
}

#[tokio::test(start_paused = true)]
async fn a_standby_survives_api_errors_and_takes_a_free_lease_once_the_api_answers() {
    let store = Arc::new(FakeLeases::default());
    store.set(true, false);
    let b = elector(&store, "b");
    let acquiring = tokio::spawn({
        let b = b.clone();
        async move { b.acquire().await }
    });
    advance(Duration::from_secs(60)).await;
    assert!(!acquiring.is_finished());
    store.set(false, false);
    advance(Duration::from_secs(3)).await;
    assert!(acquiring.is_finished());
    assert_eq!(store.holder().as_deref(), Some("b"));
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_renews_fail_stops_writing_at_its_renew_deadline_before_the_lease_expires() {
    let store = Arc::new(FakeLeases::default());
    let a = elector(&store, "a");
    a.acquire().await;
    let acquired = Instant::now();
    let holding = tokio::spawn({
        let a = a.clone();
        async move { a.hold().await }
    });
    // Renewing works for a while: leadership is kept past the first deadline.
    // (Renews at 2 s, 4 s … 30 s; the next at 32 s fails.)
    advance(Duration::from_secs(31)).await;
    assert!(a.leadership().holds() && !holding.is_finished());
    let last_renew = acquired + Duration::from_secs(30);

    store.set(true, false);
    advance(Duration::from_secs(8)).await;
    assert!(a.leadership().holds(), "stopped before the renew deadline");
    advance(Duration::from_secs(2)).await;
    assert!(
        !a.leadership().holds(),
        "still writing after the renew deadline"
    );
    assert!(
        holding.is_finished(),
        "still holding after the renew deadline"
    );
    assert!(Instant::now() < last_renew + Duration::from_secs(15));
}

#[tokio::test(start_paused = true)]
async fn a_renew_the_api_never_answers_times_out_at_the_renew_deadline() {
    let store = Arc::new(FakeLeases::default());
    let a = elector(&store, "a");
    a.acquire().await;
    let acquired = Instant::now();
    store.set(false, true);
    let error = a.hold().await;
    assert!(!a.leadership().holds());
    assert!(Instant::now() <= acquired + Duration::from_secs(10) + Duration::from_millis(1));
    assert!(error.to_string().contains("lease"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_lease_was_taken_stops_at_once() {
    let store = Arc::new(FakeLeases::default());
    let a = elector(&store, "a");
    a.acquire().await;
    store.put(held_by("b", Timestamp::now()));
    let error = a.hold().await;
    assert!(!a.leadership().holds());
    assert!(error.to_string().contains("taken"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_released_lease_is_taken_by_a_standby_at_its_next_attempt() {
    let store = Arc::new(FakeLeases::default());
    let a = elector(&store, "a");
    a.acquire().await;
    let b = elector(&store, "b");
    let acquiring = tokio::spawn({
        let b = b.clone();
        async move { b.acquire().await }
    });
    advance(Duration::from_secs(1)).await;
    a.release().await;
    assert!(!a.leadership().holds());
    assert_eq!(store.holder(), None);
    advance(Duration::from_secs(3)).await;
    assert!(
        acquiring.is_finished(),
        "b waited instead of taking the released lease"
    );
    assert_eq!(store.holder().as_deref(), Some("b"));
}

#[test]
fn without_election_the_only_replica_always_writes() {
    assert!(Leadership::default().holds());
    assert!(!Leadership::none().holds());
}
