//! The blocking face of the async store and key service (model: mini-redis's
//! `BlockingClient`). The repository layer and the backup and restore pipelines run on plain
//! threads, so that CPU work (chunking, hashing, compression, AEAD) never stalls the runtime's
//! I/O; they reach the store and the key service only through these wrappers, which run each
//! future on the runtime they were given.
//!
//! **Rule: never call them from a runtime worker thread.** Blocking a worker starves the very
//! I/O being waited for (and tokio panics on a nested `block_on`). Every call asserts the rule,
//! so a violation fails at once with a message that says which rule was broken.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::runtime::Handle;

use crate::crypto::Key32;
use crate::error::{Error, Result};
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

/// The result of a store call run as a task of its own (a task that panicked or was
/// cancelled is an internal error).
fn joined<T>(r: std::result::Result<Result<T>, tokio::task::JoinError>) -> Result<T> {
    r.unwrap_or_else(|e| Err(Error::Internal(e.to_string())))
}

/// A read started before anyone asks for it (see [`BlockingStore::read_ahead`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ahead {
    List(FileKind),
    /// A listing, and the first few objects it names, read as soon as it arrives (objects
    /// that are read once listed, such as the writers' enrollments).
    ListAndGet(FileKind),
    Get(FileKind, Id),
}

/// How many listed objects [`Ahead::ListAndGet`] reads ahead.
const LISTED_AHEAD: usize = 8;

/// What a read started ahead brought.
enum Early {
    Listed(Vec<(Id, u64)>),
    Got(Bytes),
}

/// The reads started ahead, and how many times they were ended or made stale: a listing's
/// reads are started only if nothing ended since the listing itself was.
#[derive(Default)]
struct Started {
    reads: HashMap<Ahead, tokio::task::JoinHandle<Result<Early>>>,
    epoch: u64,
}

/// A [`Store`] whose methods block the calling (plain) thread.
#[derive(Clone)]
pub struct BlockingStore {
    rt: Handle,
    inner: Arc<dyn Store>,
    /// Reads in flight that the next call for the same object or listing takes over.
    ahead: Arc<Mutex<Started>>,
}

impl std::fmt::Debug for BlockingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingStore")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl BlockingStore {
    /// `rt` must be a multi-thread runtime: reads run there as tasks of their own (read ahead,
    /// ranged reads) while the calling thread waits, and only a worker thread runs them.
    pub fn new(rt: Handle, inner: Arc<dyn Store>) -> BlockingStore {
        assert_eq!(
            rt.runtime_flavor(),
            tokio::runtime::RuntimeFlavor::MultiThread,
            "custody: the store needs a multi-thread tokio runtime"
        );
        BlockingStore {
            rt,
            inner,
            ahead: Arc::default(),
        }
    }

    /// Starts `reads` now, all at once: a step that reads several small independent objects
    /// one after another (opening a repository) then waits one round trip for them, not one
    /// each. A read started ahead answers only the first call for it, and only until
    /// [`BlockingStore::end_read_ahead`] or a write of its kind; every other call reads the
    /// store. So nothing is older than the start of the step that asked for it.
    pub fn read_ahead(&self, reads: &[Ahead]) {
        let epoch = self.ahead.lock().expect("lock").epoch;
        self.read_ahead_in(epoch, reads);
    }

    /// [`BlockingStore::read_ahead`], unless the reads started ahead were ended or made
    /// stale since `epoch`.
    fn read_ahead_in(&self, epoch: u64, reads: &[Ahead]) {
        let mut started = self.ahead.lock().expect("lock");
        if started.epoch != epoch {
            return;
        }
        for &a in reads {
            // Taken by the call that asks for the listing.
            let key = match a {
                Ahead::ListAndGet(kind) => Ahead::List(kind),
                a => a,
            };
            if let std::collections::hash_map::Entry::Vacant(e) = started.reads.entry(key) {
                e.insert(self.spawn_ahead(epoch, a));
            }
        }
    }

    fn spawn_ahead(&self, epoch: u64, a: Ahead) -> tokio::task::JoinHandle<Result<Early>> {
        let this = self.clone();
        self.rt.spawn(async move {
            let started = std::time::Instant::now();
            let (op, kind, r) = match a {
                Ahead::List(k) => ("list ahead", k, this.inner.list(k).await.map(Early::Listed)),
                Ahead::ListAndGet(k) => {
                    let r = this.inner.list(k).await;
                    if let Ok(listed) = &r {
                        let gets = listed.iter().take(LISTED_AHEAD);
                        let gets: Vec<_> = gets.map(|(id, _)| Ahead::Get(k, *id)).collect();
                        this.read_ahead_in(epoch, &gets);
                    }
                    ("list ahead", k, r.map(Early::Listed))
                }
                Ahead::Get(k, id) => ("get ahead", k, this.inner.get(k, &id).await.map(Early::Got)),
            };
            tracing::trace!(target: "custody::store", op, ?kind, ok = r.is_ok(), ms = started.elapsed().as_millis() as u64, "store call");
            r
        })
    }

    /// Drops the reads started ahead that nobody took.
    pub fn end_read_ahead(&self) {
        let mut started = self.ahead.lock().expect("lock");
        started.epoch += 1;
        for (_, h) in started.reads.drain() {
            h.abort();
        }
    }

    /// The read started ahead for `a`, if any, awaited.
    fn early(&self, a: Ahead) -> Option<Result<Early>> {
        let h = self.ahead.lock().expect("lock").reads.remove(&a)?;
        Some(joined(block_on(&self.rt, h)))
    }

    /// A write makes what was read ahead of its kind stale.
    fn forget_ahead(&self, kind: FileKind) {
        let mut started = self.ahead.lock().expect("lock");
        if !started.reads.is_empty() {
            started.epoch += 1;
            started.reads.retain(|a, h| {
                let stale = matches!(a, Ahead::List(k) | Ahead::Get(k, _) if *k == kind);
                if stale {
                    h.abort();
                }
                !stale
            });
        }
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
        self.forget_ahead(kind);
        timed(&self.rt, "put", kind, self.inner.put(kind, id, data))
    }

    /// [`Store::put_new`]: an object that must never change.
    pub fn put_new(&self, kind: FileKind, id: &Id, data: Bytes) -> Result<()> {
        self.forget_ahead(kind);
        timed(
            &self.rt,
            "put_new",
            kind,
            self.inner.put_new(kind, id, data),
        )
    }

    pub fn get(&self, kind: FileKind, id: &Id) -> Result<Bytes> {
        match self.early(Ahead::Get(kind, *id)) {
            // A key's read is always of its own kind: `Get` keys hold gets, `List` keys lists.
            Some(r) => r.and_then(|e| match e {
                Early::Got(b) => Ok(b),
                Early::Listed(_) => Err(Error::Internal("a listing read ahead as a get".into())),
            }),
            None => timed(&self.rt, "get", kind, self.inner.get(kind, id)),
        }
    }

    pub fn get_range(&self, kind: FileKind, id: &Id, offset: u64, length: u64) -> Result<Bytes> {
        self.get_range_into(kind, id, offset, length, Vec::new())
            .map(Bytes::from)
    }

    /// See [`Store::get_range_into`].
    pub fn get_range_into(
        &self,
        kind: FileKind,
        id: &Id,
        offset: u64,
        length: u64,
        buf: Vec<u8>,
    ) -> Result<Vec<u8>> {
        let (inner, id) = (self.inner.clone(), *id);
        let read = self
            .rt
            .spawn(async move { inner.get_range_into(kind, &id, offset, length, buf).await });
        timed(
            &self.rt,
            "get_range",
            kind,
            async move { joined(read.await) },
        )
    }

    pub fn size(&self, kind: FileKind, id: &Id) -> Result<u64> {
        timed(&self.rt, "size", kind, self.inner.size(kind, id))
    }

    pub fn list(&self, kind: FileKind) -> Result<Vec<(Id, u64)>> {
        match self.early(Ahead::List(kind)) {
            Some(r) => r.and_then(|e| match e {
                Early::Listed(l) => Ok(l),
                Early::Got(_) => Err(Error::Internal("a get read ahead as a listing".into())),
            }),
            None => timed(&self.rt, "list", kind, self.inner.list(kind)),
        }
    }

    pub fn temporaries(&self, older: std::time::Duration) -> Result<Vec<(String, u64)>> {
        block_on(&self.rt, self.inner.temporaries(older))
    }

    pub fn remove_temporary(&self, name: &str) -> Result<()> {
        block_on(&self.rt, self.inner.remove_temporary(name))
    }

    pub fn delete(&self, kind: FileKind, id: &Id) -> Result<()> {
        self.forget_ahead(kind);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalStore;

    fn store(dir: &std::path::Path) -> (tokio::runtime::Runtime, BlockingStore) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let inner: Arc<dyn Store> = Arc::new(LocalStore::new(dir));
        let s = BlockingStore::new(rt.handle().clone(), inner);
        s.create().unwrap();
        (rt, s)
    }

    fn id(n: u8) -> Id {
        Id([n; 32])
    }

    /// Waits until every read started ahead has its answer.
    fn settle(s: &BlockingStore) {
        while !s
            .ahead
            .lock()
            .unwrap()
            .reads
            .values()
            .all(|h| h.is_finished())
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Sets an object's bytes behind the store's back (another client).
    fn replace(dir: &std::path::Path, kind: FileKind, id: &Id, bytes: &[u8]) {
        std::fs::write(dir.join(kind.path(id)), bytes).unwrap();
    }

    #[test]
    fn a_read_ahead_answers_the_first_call_only() {
        let dir = tempfile::tempdir().unwrap();
        let (_rt, s) = store(dir.path());
        s.put(FileKind::Snapshot, &id(1), Bytes::from_static(b"one"))
            .unwrap();
        s.read_ahead(&[Ahead::Get(FileKind::Snapshot, id(1))]);
        settle(&s);
        replace(dir.path(), FileKind::Snapshot, &id(1), b"two");
        // Started before the change: the first call takes it; the next reads the store.
        assert_eq!(&s.get(FileKind::Snapshot, &id(1)).unwrap()[..], b"one");
        assert_eq!(&s.get(FileKind::Snapshot, &id(1)).unwrap()[..], b"two");
    }

    #[test]
    fn ended_or_overwritten_reads_ahead_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (_rt, s) = store(dir.path());
        s.put(FileKind::Snapshot, &id(1), Bytes::from_static(b"one"))
            .unwrap();
        s.read_ahead(&[
            Ahead::Get(FileKind::Snapshot, id(1)),
            Ahead::List(FileKind::Snapshot),
        ]);
        settle(&s);
        // A write of the kind makes both stale.
        s.put(FileKind::Snapshot, &id(2), Bytes::from_static(b"new"))
            .unwrap();
        replace(dir.path(), FileKind::Snapshot, &id(1), b"two");
        assert_eq!(&s.get(FileKind::Snapshot, &id(1)).unwrap()[..], b"two");
        assert_eq!(s.list(FileKind::Snapshot).unwrap().len(), 2);
        s.read_ahead(&[Ahead::Get(FileKind::Snapshot, id(1))]);
        settle(&s);
        s.end_read_ahead();
        replace(dir.path(), FileKind::Snapshot, &id(1), b"three");
        assert_eq!(&s.get(FileKind::Snapshot, &id(1)).unwrap()[..], b"three");
    }

    #[test]
    fn a_listing_ended_before_it_arrives_reads_nothing_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let (_rt, s) = store(dir.path());
        s.put(FileKind::Writer, &id(1), Bytes::from_static(b"old"))
            .unwrap();
        // A listing started before the end arrives after it, and would read what it names.
        let epoch = s.ahead.lock().unwrap().epoch;
        s.end_read_ahead();
        s.read_ahead_in(epoch, &[Ahead::Get(FileKind::Writer, id(1))]);
        assert!(s.ahead.lock().unwrap().reads.is_empty());
        replace(dir.path(), FileKind::Writer, &id(1), b"new");
        assert_eq!(&s.get(FileKind::Writer, &id(1)).unwrap()[..], b"new");
    }

    #[test]
    fn a_listing_read_ahead_reads_what_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let (_rt, s) = store(dir.path());
        for n in 1..=3 {
            s.put(FileKind::Writer, &id(n), Bytes::from_static(b"old"))
                .unwrap();
        }
        s.read_ahead(&[Ahead::ListAndGet(FileKind::Writer)]);
        assert_eq!(s.list(FileKind::Writer).unwrap().len(), 3);
        settle(&s);
        // Read when the listing arrived, before this change.
        replace(dir.path(), FileKind::Writer, &id(2), b"new");
        assert_eq!(&s.get(FileKind::Writer, &id(2)).unwrap()[..], b"old");
        assert_eq!(&s.get(FileKind::Writer, &id(2)).unwrap()[..], b"new");
        // Missing objects read ahead are missing, as read directly.
        s.read_ahead(&[Ahead::Get(FileKind::Writer, id(9))]);
        assert!(matches!(
            s.get(FileKind::Writer, &id(9)),
            Err(Error::NotFound(_))
        ));
    }
}
