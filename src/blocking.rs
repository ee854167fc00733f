//! The blocking face of the async store and key service (model: mini-redis's
//! `BlockingClient`). The repository layer and the backup and restore pipelines run on plain
//! threads, so that CPU work (chunking, hashing, compression, AEAD) never stalls the runtime's
//! I/O; they reach the store and the key service only through these wrappers, which run each
//! future on the runtime they were given.
//!
//! **Rule: never call them from a runtime worker thread.** Blocking a worker starves the very
//! I/O being waited for (and tokio panics on a nested `block_on`). Every call asserts the rule,
//! so a violation fails at once with a message that says which rule was broken.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use tokio::runtime::Handle;

use crate::crypto::Key32;
use crate::error::Result;
use crate::format::wrapped::{Context, Purpose, WrappedKey};
use crate::id::Id;
use crate::keyservice::KeyService;
use crate::store::{FileKind, Store};

/// Runs `f` on `rt` from a plain thread, asserting that this thread is not a runtime worker.
pub fn block_on<F: Future>(rt: &Handle, f: F) -> F::Output {
    assert!(
        Handle::try_current().is_err(),
        "custody: a blocking store or key-service call was made from inside the async runtime \
         (call it from a plain thread, or await the async store instead)"
    );
    rt.block_on(f)
}

/// Runs one store call and traces its round trip (`CUSTODY_LOG=custody::store=trace`): which
/// calls a command makes one after another is what bounds it on a remote bucket.
fn timed<T>(
    rt: &Handle,
    op: &'static str,
    kind: FileKind,
    f: impl Future<Output = Result<T>>,
) -> Result<T> {
    let started = std::time::Instant::now();
    let r = block_on(rt, f);
    tracing::trace!(target: "custody::store", op, ?kind, ok = r.is_ok(), ms = started.elapsed().as_millis() as u64, "store call");
    r
}

/// A [`Store`] whose methods block the calling (plain) thread.
#[derive(Clone, Debug)]
pub struct BlockingStore {
    rt: Handle,
    inner: Arc<dyn Store>,
}

impl BlockingStore {
    pub fn new(rt: Handle, inner: Arc<dyn Store>) -> BlockingStore {
        BlockingStore { rt, inner }
    }

    /// The async store, for pipelines that keep several requests in flight.
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    pub fn location(&self) -> String {
        self.inner.location()
    }

    pub fn create(&self) -> Result<()> {
        block_on(&self.rt, self.inner.create())
    }

    pub fn put(&self, kind: FileKind, id: &Id, data: Bytes) -> Result<()> {
        timed(&self.rt, "put", kind, self.inner.put(kind, id, data))
    }

    /// [`Store::put_new`]: an object that must never change.
    pub fn put_new(&self, kind: FileKind, id: &Id, data: Bytes) -> Result<()> {
        timed(
            &self.rt,
            "put_new",
            kind,
            self.inner.put_new(kind, id, data),
        )
    }

    pub fn get(&self, kind: FileKind, id: &Id) -> Result<Bytes> {
        timed(&self.rt, "get", kind, self.inner.get(kind, id))
    }

    pub fn get_range(&self, kind: FileKind, id: &Id, offset: u64, length: u64) -> Result<Bytes> {
        timed(
            &self.rt,
            "get_range",
            kind,
            self.inner.get_range(kind, id, offset, length),
        )
    }

    pub fn size(&self, kind: FileKind, id: &Id) -> Result<u64> {
        timed(&self.rt, "size", kind, self.inner.size(kind, id))
    }

    pub fn list(&self, kind: FileKind) -> Result<Vec<(Id, u64)>> {
        timed(&self.rt, "list", kind, self.inner.list(kind))
    }

    pub fn temporaries(&self, older: std::time::Duration) -> Result<Vec<(String, u64)>> {
        block_on(&self.rt, self.inner.temporaries(older))
    }

    pub fn remove_temporary(&self, name: &str) -> Result<()> {
        block_on(&self.rt, self.inner.remove_temporary(name))
    }

    pub fn delete(&self, kind: FileKind, id: &Id) -> Result<()> {
        timed(&self.rt, "delete", kind, self.inner.delete(kind, id))
    }
}

/// A [`KeyService`] whose methods block the calling (plain) thread.
#[derive(Clone)]
pub struct BlockingKeys {
    rt: Handle,
    inner: Arc<dyn KeyService>,
}

impl std::fmt::Debug for BlockingKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingKeys")
            .field("url", &self.inner.url())
            .finish()
    }
}

impl BlockingKeys {
    pub fn new(rt: Handle, inner: Arc<dyn KeyService>) -> BlockingKeys {
        BlockingKeys { rt, inner }
    }

    /// The async key service.
    pub fn inner(&self) -> &Arc<dyn KeyService> {
        &self.inner
    }

    pub fn url(&self) -> String {
        self.inner.url()
    }

    pub fn generate_data_key(
        &self,
        purpose: Purpose,
        ctx: &Context,
    ) -> Result<(Key32, WrappedKey)> {
        block_on(&self.rt, self.inner.generate_data_key(purpose, ctx))
    }

    pub fn decrypt(&self, wrapped: &WrappedKey, ctx: &Context) -> Result<Key32> {
        block_on(&self.rt, self.inner.decrypt(wrapped, ctx))
    }

    pub fn describe(&self) -> Result<Vec<crate::keyservice::KekInfo>> {
        block_on(&self.rt, self.inner.describe())
    }

    pub fn owner_anchor(&self, repo: &crate::id::Id) -> Result<(Key32, String)> {
        block_on(&self.rt, self.inner.owner_anchor(repo))
    }
}
