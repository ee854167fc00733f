//! How often the key service is asked for a session's key when it fails: threads that wait on
//! one attempt share its answer; a refusal stands for the run, an unavailable service is asked
//! again by later callers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use super::*;
use crate::format::wrapped::{Context, Purpose, WrappedKey};
use crate::keyservice::{KekInfo, KeyService, LocalKeyring};
use crate::store::LocalStore;

/// A local keyring whose `decrypt` can be made to fail slowly, as a KMS past its retries.
#[derive(Debug)]
struct Failing {
    inner: LocalKeyring,
    /// `None`: works; `Some(true)`: refuses; `Some(false)`: unavailable.
    refuse: std::sync::Mutex<Option<bool>>,
    asked: AtomicUsize,
}

#[async_trait]
impl KeyService for Failing {
    fn url(&self) -> String {
        self.inner.url()
    }
    async fn generate_data_key(&self, p: Purpose, ctx: &Context) -> Result<(Key32, WrappedKey)> {
        self.inner.generate_data_key(p, ctx).await
    }
    async fn decrypt(&self, wrapped: &WrappedKey, ctx: &Context) -> Result<Key32> {
        let refuse = *self.refuse.lock().unwrap();
        let Some(refused) = refuse else {
            return self.inner.decrypt(wrapped, ctx).await;
        };
        self.asked.fetch_add(1, Ordering::SeqCst);
        // Long enough for the other threads, released together, to start waiting.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let failure = Failure {
            refused,
            at: std::time::Instant::now(),
            key: "test".into(),
            operation: "decrypt".into(),
            reason: "x".into(),
        };
        Err(failure.error())
    }
    async fn encrypt(&self, p: Purpose, key: &Key32, ctx: &Context) -> Result<WrappedKey> {
        self.inner.encrypt(p, key, ctx).await
    }
    async fn describe(&self) -> Result<Vec<KekInfo>> {
        self.inner.describe().await
    }
    async fn owner_anchor(&self, repo: &Id) -> Result<(Key32, String)> {
        self.inner.owner_anchor(repo).await
    }
}

/// Asks for `session`'s key from four threads at once; the errors they got.
fn ask_at_once(repo: &Repository, session: &SessionId) -> Vec<Error> {
    let start = std::sync::Barrier::new(4);
    std::thread::scope(|s| {
        let asks: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    repo.session_key(session)
                })
            })
            .collect();
        asks.into_iter()
            .map(|a| a.join().unwrap().expect_err("the key service failed"))
            .collect()
    })
}

#[test]
fn waiting_threads_share_a_failed_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let keys = Arc::new(Failing {
        inner: LocalKeyring::create(&dir.path().join("ring"), None).unwrap(),
        refuse: Default::default(),
        asked: AtomicUsize::new(0),
    });
    let store: Arc<dyn crate::store::Store> = Arc::new(LocalStore::new(dir.path().join("repo")));
    let repo = Repository::init(
        rt.handle().clone(),
        store.clone(),
        keys.clone(),
        Id::random().unwrap(),
        &InitOptions::default(),
    )
    .unwrap();
    let session = Session::start(&repo).unwrap().id;
    // Opening unwraps the repository secret: with a working service.
    let reopen = || {
        *keys.refuse.lock().unwrap() = None;
        let config = Repository::read_config(rt.handle(), &store).unwrap();
        Repository::open(
            rt.handle().clone(),
            store.clone(),
            keys.clone(),
            config,
            None,
        )
        .unwrap()
    };

    for refused in [false, true] {
        let repo = reopen();
        *keys.refuse.lock().unwrap() = Some(refused);
        keys.asked.store(0, Ordering::SeqCst);
        let errors = ask_at_once(&repo, &session);
        assert!(errors.iter().all(|e| match refused {
            true => matches!(e, Error::KeyDenied { .. }),
            false => matches!(e, Error::KeyUnavailable { .. }),
        }));
        assert_eq!(keys.asked.load(Ordering::SeqCst), 1, "refused: {refused}");
        // A later ask: a refusal is the answer for the run; an unavailable service may be
        // back, and is asked again.
        assert!(repo.session_key(&session).is_err());
        let again = if refused { 1 } else { 2 };
        assert_eq!(
            keys.asked.load(Ordering::SeqCst),
            again,
            "refused: {refused}"
        );
    }
    // Back: a fresh ask gets the key.
    let repo = reopen();
    *keys.refuse.lock().unwrap() = Some(false);
    assert!(repo.session_key(&session).is_err());
    *keys.refuse.lock().unwrap() = None;
    repo.session_key(&session).unwrap();
}
