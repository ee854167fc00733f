//! Uploads finished packs on the runtime with bounded concurrency, and lists the uploaded
//! packs in a provisional index segment every so often (a checkpoint), so that a backup
//! interrupted after hours does not upload them again when it is run again.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::format::index::{IndexSegment, PackEntries};
use crate::id::PackId;
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
    pub(super) checkpoints: Checkpoints,
    checkpoint: Mutex<CheckpointState>,
    /// Buffers of uploaded packs, for the next packs (see [`Uploader::spare_buffer`]).
    spare: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// Spare pack buffers kept at most (about 17 MB each): enough for two packers and two
/// uploads in flight, the defaults on two cores.
const SPARE_BUFFERS: usize = 4;

/// How often a running backup lists what it uploaded (`backup --checkpoint-every`,
/// `--checkpoint-size`): whichever comes first.
#[derive(Debug, Clone, Copy)]
pub struct Checkpoints {
    pub interval: Duration,
    pub bytes: u64,
}

impl Default for Checkpoints {
    fn default() -> Self {
        Checkpoints {
            interval: Duration::from_secs(300),
            bytes: 1 << 30,
        }
    }
}

struct CheckpointState {
    last: Instant,
    /// Pack bytes uploaded since the last checkpoint.
    bytes: u64,
    /// Packs a checkpoint listed already.
    listed: HashSet<PackId>,
    /// Stored bytes of the checkpoint segments.
    segment_bytes: u64,
}

/// What the uploads left: every pack, and those no checkpoint listed yet (the final segment's).
pub(super) struct Uploaded {
    pub(super) all: Vec<PackEntries>,
    pub(super) unlisted: Vec<PackEntries>,
    pub(super) checkpoint_bytes: u64,
}

impl<'a> Uploader<'a> {
    pub(super) fn new(repo: &'a Repository, concurrency: usize) -> Self {
        Uploader {
            repo,
            slots: Arc::new(Semaphore::new(concurrency)),
            tasks: Mutex::new(Vec::new()),
            done: Mutex::new(Vec::new()),
            dry_run: false,
            checkpoints: Checkpoints::default(),
            checkpoint: Mutex::new(CheckpointState {
                last: Instant::now(),
                bytes: 0,
                listed: HashSet::new(),
                segment_bytes: 0,
            }),
            spare: Arc::default(),
        }
    }

    /// An uploaded pack's buffer to build the next pack in, or an empty one. Reusing them
    /// saves faulting in (and the kernel zeroing) 16 MB of new memory per pack.
    pub(super) fn spare_buffer(&self) -> Vec<u8> {
        self.spare.lock().expect("lock").pop().unwrap_or_default()
    }

    /// Keeps a pack's buffer, once its bytes are stored (or counted), for a later pack.
    fn keep_spare(spare: &Mutex<Vec<Vec<u8>>>, buffer: Vec<u8>) {
        let mut spare = spare.lock().expect("lock");
        if spare.len() < SPARE_BUFFERS {
            spare.push(buffer);
        }
    }

    pub(super) fn submit(&self, pack: FinishedPack, progress: &Progress) -> Result<()> {
        self.reap()?;
        let permit = self
            .repo
            .block_on(self.slots.clone().acquire_owned())
            .map_err(|_| Error::Internal("upload queue closed".into()))?;
        let store = self.repo.store().inner().clone();
        let spare = self.spare.clone();
        progress
            .bytes_added
            .fetch_add(pack.bytes.len() as u64, Ordering::Relaxed);
        if self.dry_run {
            self.done.lock().expect("lock").push(PackEntries {
                pack: pack.id,
                session: pack.session,
                blobs: pack.entries,
            });
            Self::keep_spare(&self.spare, pack.bytes);
            return Ok(());
        }
        let task = self.repo.runtime().spawn(async move {
            let bytes = Bytes::from(pack.bytes);
            let r = store.put_new(FileKind::Pack, &pack.id, bytes.clone()).await;
            drop(permit);
            // The store is done with the bytes: unless it kept a reference, keep the buffer.
            if let Ok(buffer) = bytes.try_into_mut() {
                Self::keep_spare(&spare, buffer.into());
            }
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
        let mut bytes = 0;
        for t in finished {
            let entries = self
                .repo
                .block_on(t)
                .map_err(|e| Error::Unavailable(format!("upload task failed: {e}")))??;
            bytes += entries.blobs.iter().map(|b| b.length as u64).sum::<u64>();
            self.done.lock().expect("lock").push(entries);
        }
        self.maybe_checkpoint(bytes)
    }

    /// Lists the packs uploaded since the last checkpoint in a provisional segment, when one
    /// is due. One packer writes it; the others go on (`try_lock`).
    fn maybe_checkpoint(&self, new_bytes: u64) -> Result<()> {
        if self.dry_run {
            return Ok(());
        }
        let Ok(mut ck) = self.checkpoint.try_lock() else {
            return Ok(());
        };
        ck.bytes += new_bytes;
        if ck.last.elapsed() < self.checkpoints.interval && ck.bytes < self.checkpoints.bytes {
            return Ok(());
        }
        let packs: Vec<PackEntries> = self
            .done
            .lock()
            .expect("lock")
            .iter()
            .filter(|p| !ck.listed.contains(&p.pack))
            .cloned()
            .collect();
        if packs.is_empty() {
            return Ok(());
        }
        let count = packs.len();
        let ids: Vec<PackId> = packs.iter().map(|p| p.pack).collect();
        let seg = IndexSegment {
            packs,
            provisional: true,
        };
        let id = self.repo.save_index_segment(&seg)?;
        ck.segment_bytes += self.repo.store().size(FileKind::Index, &id)?;
        ck.listed.extend(ids);
        ck.last = Instant::now();
        ck.bytes = 0;
        tracing::info!(segment = %id, packs = count, "checkpoint: uploaded packs listed");
        crate::failpoint::hit("backup-after-checkpoint");
        Ok(())
    }

    pub(super) fn finish(self) -> Result<Uploaded> {
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
        if let Some(e) = first_err {
            return Err(e);
        }
        let ck = self.checkpoint.into_inner().expect("lock");
        Ok(Uploaded {
            unlisted: done
                .iter()
                .filter(|p| !ck.listed.contains(&p.pack))
                .cloned()
                .collect(),
            all: done,
            checkpoint_bytes: ck.segment_bytes,
        })
    }
}
