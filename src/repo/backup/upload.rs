//! Uploads finished packs on the runtime with bounded concurrency.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::format::index::PackEntries;
use crate::pack::FinishedPack;
use crate::repo::Repository;
use crate::store::FileKind;

use super::Progress;

/// Uploads finished packs on the runtime with bounded concurrency.
pub(super) struct Uploader<'a> {
    pub(super) repo: &'a Repository,
    pub(super) slots: Arc<Semaphore>,
    pub(super) tasks: Mutex<Vec<tokio::task::JoinHandle<Result<PackEntries>>>>,
    pub(super) done: Mutex<Vec<PackEntries>>,
    /// `--dry-run`: packs are counted, not stored.
    pub(super) dry_run: bool,
}

impl<'a> Uploader<'a> {
    pub(super) fn new(repo: &'a Repository, concurrency: usize) -> Self {
        Uploader {
            repo,
            slots: Arc::new(Semaphore::new(concurrency)),
            tasks: Mutex::new(Vec::new()),
            done: Mutex::new(Vec::new()),
            dry_run: false,
        }
    }

    pub(super) fn submit(&self, pack: FinishedPack, progress: &Progress) -> Result<()> {
        self.reap()?;
        let permit = self
            .repo
            .block_on(self.slots.clone().acquire_owned())
            .map_err(|_| Error::Internal("upload queue closed".into()))?;
        let store = self.repo.store().inner().clone();
        progress
            .bytes_added
            .fetch_add(pack.bytes.len() as u64, Ordering::Relaxed);
        if self.dry_run {
            self.done.lock().expect("lock").push(PackEntries {
                pack: pack.id,
                session: pack.session,
                blobs: pack.entries,
            });
            return Ok(());
        }
        let task = self.repo.runtime().spawn(async move {
            let r = store
                .put(FileKind::Pack, &pack.id, Bytes::from(pack.bytes))
                .await;
            drop(permit);
            r.map(|()| PackEntries {
                pack: pack.id,
                session: pack.session,
                blobs: pack.entries,
            })
        });
        self.tasks.lock().expect("lock").push(task);
        Ok(())
    }

    /// Collects finished uploads so a failure stops the backup early.
    pub(super) fn reap(&self) -> Result<()> {
        let finished: Vec<_> = {
            let mut tasks = self.tasks.lock().expect("lock");
            let (done, pending): (Vec<_>, Vec<_>) = tasks.drain(..).partition(|t| t.is_finished());
            *tasks = pending;
            done
        };
        for t in finished {
            let entries = self
                .repo
                .block_on(t)
                .map_err(|e| Error::Unavailable(format!("upload task failed: {e}")))??;
            self.done.lock().expect("lock").push(entries);
        }
        Ok(())
    }

    pub(super) fn finish(self) -> Result<Vec<PackEntries>> {
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("lock"));
        let mut done = std::mem::take(&mut *self.done.lock().expect("lock"));
        let mut first_err = None;
        for t in tasks {
            match self.repo.block_on(t) {
                Ok(Ok(e)) => done.push(e),
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(e) => {
                    first_err.get_or_insert(Error::Unavailable(format!("upload task failed: {e}")));
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }
}
