//! Reading the history while others change it:
//! - `forget` replaces the checkpoint: a reader that listed the old checkpoint finds it
//!   deleted when it reads it. That is no rollback (the newer checkpoint was written first).
//! - a backup commits and a `forget` then writes a checkpoint that keeps it, between the
//!   reader's listing of `snapshots/` and its read of the checkpoint: no snapshot is lost.
//!
//! In both the reader confirms what looks lost by reading the history again, rather than
//! refuse the repository or report a snapshot missing. And `--accept-rollback` records its
//! checkpoint under the repository lock, as forget does, so that the two cannot write two
//! checkpoints of one generation.
//!
//! Played through the library on a store whose first listing of a folder is one taken
//! earlier.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use custody::error::Result;
use custody::store::{FileKind, Store};
use custody::Id;

use crate::common::backend::Repo;
use crate::common::*;

/// A store whose next listing of `kind` is `stale` (once), as if listed earlier.
#[derive(Debug)]
struct StaleListing {
    inner: Arc<dyn Store>,
    kind: FileKind,
    stale: Mutex<Option<Vec<(Id, u64)>>>,
}

#[async_trait]
impl Store for StaleListing {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn create(&self) -> Result<()> {
        self.inner.create().await
    }
    async fn put(&self, kind: FileKind, id: &Id, data: Bytes) -> Result<()> {
        self.inner.put(kind, id, data).await
    }
    async fn get(&self, kind: FileKind, id: &Id) -> Result<Bytes> {
        self.inner.get(kind, id).await
    }
    async fn get_range_into(
        &self,
        kind: FileKind,
        id: &Id,
        offset: u64,
        length: u64,
        buf: Vec<u8>,
    ) -> Result<Vec<u8>> {
        self.inner
            .get_range_into(kind, id, offset, length, buf)
            .await
    }
    async fn size(&self, kind: FileKind, id: &Id) -> Result<u64> {
        self.inner.size(kind, id).await
    }
    async fn list(&self, kind: FileKind) -> Result<Vec<(Id, u64)>> {
        let stale = match kind == self.kind {
            true => self.stale.lock().unwrap().take(),
            false => None,
        };
        match stale {
            Some(listing) => Ok(listing),
            None => self.inner.list(kind).await,
        }
    }
    async fn delete(&self, kind: FileKind, id: &Id) -> Result<()> {
        self.inner.delete(kind, id).await
    }
}

/// The repository through the library, as its owner (the CLI's keyring), with a state
/// folder of its own.
fn open_owner(
    r: &Repo,
    rt: &tokio::runtime::Runtime,
    store: Arc<dyn Store>,
) -> custody::repo::Repository {
    use custody::keyservice::{self, KeyServiceOptions};
    use custody::repo::history::{HistoryOptions, StateFile};
    use custody::repo::Repository;

    let config = Repository::read_config(rt.handle(), &store).unwrap();
    let repository = config.body.repository;
    let keyring = custody::repo::default_keyring_dir(&r.sb.path("config"), &repository);
    let keys = keyservice::open(
        &format!("local:{}", keyring.display()),
        &KeyServiceOptions::default(),
        rt.handle(),
    )
    .unwrap();
    let state = StateFile::new(&r.sb.path("library-state"), &repository);
    Repository::open(rt.handle().clone(), store, keys, config, None)
        .unwrap()
        .with_history(HistoryOptions {
            state: Some(state),
            ..Default::default()
        })
}

/// A fresh local repository, a runtime, and its store opened through the library.
fn local_repo() -> (Repo, tokio::runtime::Runtime, Arc<dyn Store>) {
    let r = Repo::local();
    r.init();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = r.sb.repo();
    let store =
        custody::store::open(dir.to_str().unwrap(), &Default::default(), rt.handle()).unwrap();
    (r, rt, store)
}

#[test]
fn a_checkpoint_replaced_while_read_is_no_rollback() {
    let (r, rt, inner) = local_repo();
    // The checkpoints listed after each forget.
    let mut listings = Vec::new();
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        let src = r.source(name, 4, 60 + i as u64, Some(5));
        r.backup(&src);
        r.run(&["forget", "--keep-last", "1", "--group-by", ""])
            .ok();
        listings.push(rt.block_on(inner.list(FileKind::History)).unwrap());
    }
    let now = listings.pop().unwrap();
    let before = listings.pop().unwrap();
    assert_eq!((now.len(), before.len()), (1, 1), "{now:?} {before:?}");
    // The checkpoint the last forget replaced is gone: a listing taken just before that
    // forget, read after it, names a checkpoint that is not there.
    assert_ne!(now, before);
    assert!(rt
        .block_on(inner.get(FileKind::History, &before[0].0))
        .is_err_and(|e| matches!(e, custody::error::Error::NotFound(_))));
    let store = Arc::new(StaleListing {
        inner,
        kind: FileKind::History,
        stale: Mutex::new(None),
    });
    let repo = open_owner(&r, &rt, store.clone());
    // This client sees the newest checkpoint once, then lists the replaced one.
    let first = repo.history().unwrap();
    assert_eq!(first.snapshots.len(), 1);
    *store.stale.lock().unwrap() = Some(before);
    let again = repo.history();
    assert!(
        store.stale.lock().unwrap().is_none(),
        "stale listing not used"
    );
    let again = again.unwrap();
    assert!(again.rollback().is_none(), "{:?}", again.rollback());
    assert!(
        again.verdict.problems.is_empty(),
        "{:?}",
        again.verdict.problems
    );
    assert_eq!(again.snapshots.len(), 1);
    assert_eq!(again.checkpoints, first.checkpoints);
    let newest = |h: &custody::repo::history::History| h.checkpoint.as_ref().map(|(id, _)| *id);
    assert_eq!(newest(&again), newest(&first));
}

#[test]
fn a_snapshot_committed_while_read_is_not_missing() {
    let (r, rt, inner) = local_repo();
    for (i, name) in ["x", "a"].into_iter().enumerate() {
        r.backup(&r.source(name, 4, 70 + i as u64, Some(5)));
    }
    // Listed before b commits; then a forget keeps a and b in its checkpoint (and removes x).
    let before = rt.block_on(inner.list(FileKind::Snapshot)).unwrap();
    r.backup(&r.source("b", 4, 72, Some(5)));
    r.run(&["forget", "--keep-last", "2", "--group-by", ""])
        .ok();
    assert_eq!(rt.block_on(inner.list(FileKind::History)).unwrap().len(), 1);
    let store = Arc::new(StaleListing {
        inner,
        kind: FileKind::Snapshot,
        stale: Mutex::new(Some(before)),
    });
    let repo = open_owner(&r, &rt, store.clone());
    let h = repo.history().unwrap();
    assert!(
        store.stale.lock().unwrap().is_none(),
        "stale listing not used"
    );
    assert!(h.verdict.problems.is_empty(), "{:?}", h.verdict.problems);
    assert_eq!(h.snapshots.len(), 2);
}

#[test]
fn accepting_a_rollback_takes_the_lock() {
    let (r, rt, inner) = local_repo();
    let ids: Vec<String> = (0..3)
        .map(|i| r.backup(&r.source(&format!("s{i}"), 3, 80 + i, Some(5))))
        .collect();
    // A checkpoint that keeps all three; then the custodian deletes the newest.
    r.run(&["forget", "--keep-last", "5", "--group-by", ""])
        .ok();
    let delete = |id: &str| std::fs::remove_file(r.store_dir().join("snapshots").join(id)).unwrap();
    delete(&ids[2]);
    let checkpoints = || rt.block_on(inner.list(FileKind::History)).unwrap();
    let before = checkpoints();

    // While another run holds the lock, the rollback is not recorded.
    let repo = open_owner(&r, &rt, inner.clone());
    let lock = repo.lock("test").unwrap();
    assert!(repo.holds_lock());
    let busy = r
        .run(&["--accept-rollback", "snapshots"])
        .code(EXIT_CONFLICT);
    assert!(
        busy.stderr.contains("holds the repository lock"),
        "{}",
        busy.stderr
    );
    assert_eq!(
        checkpoints(),
        before,
        "a checkpoint was written past the lock"
    );
    r.run(&["snapshots"]).code(EXIT_INTEGRITY);
    lock.release().unwrap();
    assert!(!repo.holds_lock());

    let out = r.run(&["--accept-rollback", "snapshots"]).ok();
    assert!(
        out.stderr.contains("rollback accepted") && out.stderr.contains(&ids[2]),
        "{}",
        out.stderr
    );
    assert_ne!(checkpoints(), before);
    let locks = || list_ids(&r.store_dir().join("locks"));
    assert!(locks().is_empty(), "lock left behind: {:?}", locks());

    // forget holds the lock already when it accepts one: it records it under its own.
    delete(&ids[1]);
    let out = r
        .run(&[
            "--accept-rollback",
            "forget",
            "--keep-last",
            "5",
            "--group-by",
            "",
        ])
        .ok();
    assert!(
        out.stderr.contains("rollback accepted") && out.stderr.contains(&ids[1]),
        "{}",
        out.stderr
    );
    assert!(locks().is_empty(), "lock left behind: {:?}", locks());
    let listed: custody::repo::snapshots::SnapshotTable =
        r.run(&["--json", "snapshots"]).ok().report();
    let listed: Vec<String> = listed.0.iter().map(|s| s.id.to_hex()).collect();
    assert_eq!(listed, vec![ids[0].clone()]);
    assert!(r.check().problems.is_empty());
}
