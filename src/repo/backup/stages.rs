//! The workers between the walker and the uploads: hashers compute chunk ids and decide
//! what is new (dedup), packers compress, seal and pack it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crossbeam_channel::{Receiver, Sender};

use crate::compress;
use crate::error::{Error, Result};
use crate::id::{BlobId, ChunkId};
use crate::pack::{BlobType, PackBuilder};
use crate::repo::index::BlobSet;
use crate::repo::{Index, Repository, Session};

use super::upload::Uploader;
use super::Progress;

/// A blob to compress, seal and pack: already known to be new.
pub(super) struct Job {
    pub(super) t: BlobType,
    pub(super) id: BlobId,
    pub(super) data: Vec<u8>,
}

/// Shared by the workers: what this run has already claimed, and what it found new.
pub(super) struct Dedup {
    pub(super) claimed: Mutex<HashSet<BlobId>>,
    /// Blobs this run found already stored (and relies on): checked before committing.
    pub(super) used: BlobSet,
    pub(super) chunks_new: AtomicU64,
    pub(super) bytes_new: AtomicU64,
}

impl Dedup {
    pub(super) fn new(index: &Index) -> Dedup {
        Dedup {
            claimed: Mutex::default(),
            used: index.blob_set(),
            chunks_new: AtomicU64::default(),
            bytes_new: AtomicU64::default(),
        }
    }

    /// True when the blob must be stored: neither in the index nor claimed by this run.
    pub(super) fn claim(&self, index: &Index, id: BlobId, len: usize) -> bool {
        if self.known(index, id) || !self.claimed.lock().expect("lock").insert(id) {
            return false;
        }
        self.chunks_new.fetch_add(1, Ordering::Relaxed);
        self.bytes_new.fetch_add(len as u64, Ordering::Relaxed);
        true
    }

    /// True when the index has the blob; it is then recorded as one this run relies on.
    pub(super) fn known(&self, index: &Index, id: BlobId) -> bool {
        let number = index.number(id);
        if let Some(n) = number {
            self.used.insert(n);
        }
        number.is_some()
    }
}

/// Work moves between the stages in batches of up to this many bytes or [`BATCH_CHUNKS`]
/// chunks, not chunk by chunk: on a busy host every handoff to a sleeping thread waits for
/// the scheduler, and a backup of many small files would otherwise pay that wait several
/// times per file.
pub(super) const BATCH_BYTES: usize = 1 << 20;
pub(super) const BATCH_CHUNKS: usize = 256;

/// Chunks with their sequence numbers, as the walker sends them to the hashers.
pub(super) type ChunkBatch = Vec<(u64, Vec<u8>)>;

/// Computes chunk ids, reports them to the walker, and passes new chunks on to the packers.
pub(super) fn hasher(
    repo: &Repository,
    index: &Index,
    dedup: &Dedup,
    rx: Receiver<ChunkBatch>,
    ids: Sender<Vec<(u64, ChunkId)>>,
    pack: Sender<Vec<Job>>,
) -> Result<()> {
    for batch in rx {
        let mut found = Vec::with_capacity(batch.len());
        let mut jobs = Vec::new();
        let mut job_bytes = 0;
        for (seq, data) in batch {
            let id = ChunkId(repo.chunk_id(&data));
            found.push((seq, id));
            if dedup.claim(index, id.into(), data.len()) {
                job_bytes += data.len();
                jobs.push(Job {
                    t: BlobType::Data,
                    id: id.into(),
                    data,
                });
                if job_bytes >= BATCH_BYTES {
                    pack.send(std::mem::take(&mut jobs))
                        .map_err(|_| stopped())?;
                    job_bytes = 0;
                }
            }
        }
        ids.send(found).map_err(|_| stopped())?;
        if !jobs.is_empty() {
            pack.send(jobs).map_err(|_| stopped())?;
        }
    }
    Ok(())
}

pub(super) struct Packer<'a> {
    pub(super) session: &'a Session,
    pub(super) trees: Option<&'a crate::repo::SealedCache>,
    pub(super) uploader: &'a Uploader<'a>,
    pub(super) pack_size: usize,
    pub(super) progress: &'a Progress,
}

impl Packer<'_> {
    pub(super) fn run(&self, rx: Receiver<Vec<Job>>, level: i32) -> Result<()> {
        // The open pack of each blob type, and the buffer of the last one finished, which the
        // next one seals into.
        let mut open: [Option<PackBuilder>; 2] = [None, None];
        let mut spare = Vec::new();
        let mut compressor = compress::Compressor::new(level);
        for Job { t, id, data } in rx.into_iter().flatten() {
            let slot = &mut open[t as usize];
            if slot.is_none() {
                let buffer = std::mem::take(&mut spare);
                *slot = Some(PackBuilder::with_buffer(
                    self.session.new_pack_key()?,
                    buffer,
                ));
            }
            let builder = slot.as_mut().expect("just set");
            let sealed = builder.add(t, id, data.len() as u32, |out| {
                compressor.compress_into(&data, out)
            })?;
            if t == BlobType::Tree {
                if let Some(c) = self.trees {
                    c.put(&id, sealed);
                }
            }
            if builder.size() >= self.pack_size {
                let full = slot.take().expect("present");
                let (pack, buffer) = full.finish_into(self.uploader.spare_buffer())?;
                spare = buffer;
                self.uploader.submit(pack, self.progress)?;
            }
        }
        for b in open.into_iter().flatten() {
            if !b.is_empty() {
                let (pack, _) = b.finish_into(self.uploader.spare_buffer())?;
                self.uploader.submit(pack, self.progress)?;
            }
        }
        Ok(())
    }
}

pub(super) const STOPPED: &str = "backup pipeline stopped";

/// The error of a stage whose neighbour went away (the neighbour's error is the real one).
pub(super) fn stopped() -> Error {
    Error::Unavailable(STOPPED.into())
}

pub(super) fn is_stopped(e: &Error) -> bool {
    matches!(e, Error::Unavailable(m) if m == STOPPED)
}
