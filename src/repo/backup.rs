//! The backup pipeline.
//!
//! ```text
//! walker thread: read -> chunk  --(bounded)-->
//! N hashers:     HMAC id (sent back to the walker) -> dedup  --(bounded)-->
//! N packers:     zstd -> seal under pack key -> pack builder  --(semaphore)-->
//! runtime tasks: upload packs (bounded concurrency)
//! then: index segment, then snapshot manifest (written last: a snapshot only ever refers
//! to packs and keys already stored).
//! ```
//! Hashers send each chunk's id back tagged with its sequence number; the walker fills file
//! contents in order when it writes the folder's tree. Hashing is a stage of its own so ids
//! come back quickly: the walker never waits behind compression. Memory is bounded by the
//! channels (2 x workers chunks each), one open pack per packer and blob type, and the packs
//! in flight, whatever the file sizes.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::Metadata;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use tokio::sync::Semaphore;

use super::parent_cache::{ParentCache, ParentRecorder};
use super::{Index, Repository, Session};
use crate::compress::{self, Compression};
use crate::error::{Error, Result};
use crate::format::index::{IndexSegment, PackEntries};
use crate::format::name::RawName;
use crate::format::snapshot::{Snapshot, Summary};
use crate::format::tree::{Node, NodeKind, Tree};
use crate::format::REPO_FORMAT;
use crate::id::Id;
use crate::pack::{BlobEntry, BlobType, FinishedPack, PackBuilder};
use crate::store::FileKind;

/// What to back up.
pub enum Source {
    Paths(Vec<PathBuf>),
    Stdin {
        name: String,
        reader: Box<dyn Read + Send>,
    },
}

pub struct BackupOptions {
    pub source: Source,
    pub host: String,
    pub tags: Vec<String>,
    /// A snapshot whose unchanged files (same size, mtime, inode) are reused without reading.
    pub parent: Option<(Id, Snapshot)>,
    /// This machine's record of its last backup of the same paths: used as the parent when
    /// there is no parent snapshot (write-only clients), and updated after this backup.
    pub parent_cache: Option<ParentCache>,
    /// Read every file: neither a parent snapshot nor the parent cache is consulted.
    pub force: bool,
    /// Recorded in the snapshot.
    pub username: String,
    pub workers: usize,
    pub uploads: usize,
}

/// Live counters for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    pub bytes_added: AtomicU64,
}

#[derive(Debug)]
pub struct BackupReport {
    pub snapshot_id: Id,
    pub snapshot: Snapshot,
    /// Source files or folders left out, with the reason.
    pub skipped: Vec<(String, String)>,
}

/// A blob to compress, seal and pack: already known to be new.
struct Job {
    t: BlobType,
    id: Id,
    data: Vec<u8>,
}

/// Shared by the workers: what this run has already claimed, and what it found new.
#[derive(Default)]
struct Dedup {
    claimed: Mutex<HashSet<Id>>,
    /// Blobs this run found already stored (and relies on): checked before committing.
    used: Mutex<HashSet<Id>>,
    chunks_new: AtomicU64,
    bytes_new: AtomicU64,
}

impl Dedup {
    /// True when the blob must be stored: neither in the index nor claimed by this run.
    fn claim(&self, index: &Index, id: &Id, len: usize) -> bool {
        if self.known(index, id) || !self.claimed.lock().expect("lock").insert(*id) {
            return false;
        }
        self.chunks_new.fetch_add(1, Ordering::Relaxed);
        self.bytes_new.fetch_add(len as u64, Ordering::Relaxed);
        true
    }

    /// True when the index has the blob; it is then recorded as one this run relies on.
    fn known(&self, index: &Index, id: &Id) -> bool {
        let found = index.contains(id);
        if found {
            self.used.lock().expect("lock").insert(*id);
        }
        found
    }
}

pub fn backup(repo: &Repository, opts: BackupOptions, progress: &Progress) -> Result<BackupReport> {
    let start = Instant::now();
    let (index, marks) = repo.load_index_for_backup()?;
    // Without a parent snapshot, this machine's own record of its last backup will do.
    let local_parent = opts.parent.is_none() && !opts.force;
    let cache = opts.parent_cache.as_ref();
    let parent_tree = match &opts.parent {
        // The parent's root tree may sit only in a pack a garbage mark condemned (left out of
        // this index): then every file is read, nothing else changes.
        Some((_, s)) if !opts.force => match repo.load_tree(&index, &s.tree) {
            Ok(t) => Some(t),
            Err(e) if e.is_key_service() => return Err(e),
            Err(e) => {
                tracing::warn!("parent snapshot not usable ({e}): reading every file");
                None
            }
        },
        _ if local_parent => cache.and_then(|c| c.load_tree(repo, &c.root()?)),
        _ => None,
    };
    let recorder = cache.and_then(ParentCache::recorder);
    let session = Session::start(repo)?;
    let workers = opts.workers.max(1);
    let uploader = Uploader::new(repo, opts.uploads.max(1));
    let level = repo.config().body.compression_level;
    let pack_size = repo.config().body.pack_size as usize;
    let (tx, rx) = crossbeam_channel::bounded::<(u64, Vec<u8>)>(2 * workers);
    let (pack_tx, pack_rx) = crossbeam_channel::bounded::<Job>(2 * workers);
    let (ids_tx, ids_rx) = crossbeam_channel::unbounded::<(u64, Id)>();
    let dedup = Dedup::default();

    let (walked, worker_results) = std::thread::scope(|s| {
        let mut handles: Vec<_> = (0..workers)
            .map(|_| {
                let (rx, ids_tx, pack_tx) = (rx.clone(), ids_tx.clone(), pack_tx.clone());
                let (index, dedup) = (&index, &dedup);
                s.spawn(move || hasher(repo, index, dedup, rx, ids_tx, pack_tx))
            })
            .collect();
        handles.extend((0..workers).map(|_| {
            let w = Packer {
                session: &session,
                trees: repo.tree_cache(),
                uploader: &uploader,
                pack_size,
                progress,
            };
            let rx = pack_rx.clone();
            s.spawn(move || w.run(rx, level))
        }));
        drop((rx, ids_tx, pack_rx));
        let walker = Walker {
            repo,
            index: &index,
            local_parent: if local_parent { cache } else { None },
            recorder: recorder.as_ref(),
            dedup: &dedup,
            tx,
            pack_tx,
            ids: ids_rx,
            seq: 0,
            done: HashMap::new(),
            deferred: 0,
            buf: Vec::new(),
            progress,
            summary: Summary::default(),
            skipped: Vec::new(),
        };
        let walked = walker.run(opts.source, parent_tree.as_ref());
        let results: Vec<Result<()>> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Internal("backup worker panicked".into())))
            })
            .collect();
        (walked, results)
    });
    // Whichever side failed first explains the other's "pipeline stopped": report that one.
    let walked = match walked {
        Err(e) if !is_stopped(&e) => return Err(e),
        w => w,
    };
    for r in worker_results {
        r?;
    }
    let (root, paths, mut summary, skipped) = walked?;
    summary.chunks_new = dedup.chunks_new.load(Ordering::Relaxed);
    summary.bytes_new = dedup.bytes_new.load(Ordering::Relaxed);
    let packs = uploader.finish()?;
    crate::failpoint::hit("backup-before-commit");
    let own: Vec<Id> = packs.iter().map(|p| p.pack).collect();
    let used = std::mem::take(&mut *dedup.used.lock().expect("lock"));
    repo.check_before_commit(&marks, &index, &session.id, &own, &used)?;

    let mut added = progress.bytes_added.load(Ordering::Relaxed);
    if !packs.is_empty() {
        let seg = IndexSegment { packs };
        let id = repo.save_index_segment(&seg)?;
        added += repo.store().size(FileKind::Index, &id)?;
    }
    crate::failpoint::hit("backup-before-snapshot");
    summary.bytes_added = added;
    summary.duration_secs = start.elapsed().as_secs_f64();
    let snapshot = Snapshot {
        format: REPO_FORMAT,
        time: chrono::Utc::now(),
        host: opts.host,
        username: opts.username,
        paths,
        tags: opts.tags,
        tree: root,
        session: session.id,
        parent: opts.parent.map(|(id, _)| id),
        summary,
        program: format!("custody {}", env!("CARGO_PKG_VERSION")),
    };
    let snapshot_id = repo.save_snapshot(&session, &snapshot)?;
    if let Some(r) = recorder {
        r.commit(&root);
    }
    tracing::info!(snapshot = %snapshot_id, session = %session.id, "snapshot saved");
    Ok(BackupReport {
        snapshot_id,
        snapshot,
        skipped,
    })
}

/// Computes chunk ids, reports them to the walker, and passes new chunks on to the packers.
fn hasher(
    repo: &Repository,
    index: &Index,
    dedup: &Dedup,
    rx: Receiver<(u64, Vec<u8>)>,
    ids: Sender<(u64, Id)>,
    pack: Sender<Job>,
) -> Result<()> {
    for (seq, data) in rx {
        let id = repo.chunk_id(&data);
        ids.send((seq, id)).map_err(|_| stopped())?;
        if dedup.claim(index, &id, data.len()) {
            pack.send(Job {
                t: BlobType::Data,
                id,
                data,
            })
            .map_err(|_| stopped())?;
        }
    }
    Ok(())
}

struct Packer<'a> {
    session: &'a Session,
    trees: Option<&'a super::TreeCache>,
    uploader: &'a Uploader<'a>,
    pack_size: usize,
    progress: &'a Progress,
}

impl Packer<'_> {
    fn run(&self, rx: Receiver<Job>, level: i32) -> Result<()> {
        let mut open: [Option<PackBuilder>; 2] = [None, None];
        let mut compressor = compress::Compressor::new(level);
        for Job { t, id, data } in rx {
            let compressed = compressor.compress(&data);
            let (compression, body) = match &compressed {
                Some(c) => (Compression::Zstd, c.as_slice()),
                None => (Compression::None, data.as_slice()),
            };
            let slot = &mut open[t as usize];
            if slot.is_none() {
                *slot = Some(PackBuilder::new(self.session.new_pack_key()?));
            }
            let builder = slot.as_mut().expect("just set");
            let sealed = builder.key().seal_blob(t, &id, body)?;
            if t == BlobType::Tree {
                if let Some(c) = self.trees {
                    c.put(&id, &sealed);
                }
            }
            builder.add(
                BlobEntry {
                    id,
                    blob_type: t,
                    compression,
                    offset: 0,
                    length: 0,
                    raw_length: data.len() as u32,
                },
                sealed,
            );
            if builder.size() >= self.pack_size {
                let full = slot.take().expect("present");
                self.uploader.submit(full.finish()?, self.progress)?;
            }
        }
        for b in open.into_iter().flatten() {
            if !b.is_empty() {
                self.uploader.submit(b.finish()?, self.progress)?;
            }
        }
        Ok(())
    }
}

/// Uploads finished packs on the runtime with bounded concurrency.
struct Uploader<'a> {
    repo: &'a Repository,
    slots: Arc<Semaphore>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<Result<PackEntries>>>>,
    done: Mutex<Vec<PackEntries>>,
}

impl<'a> Uploader<'a> {
    fn new(repo: &'a Repository, concurrency: usize) -> Self {
        Uploader {
            repo,
            slots: Arc::new(Semaphore::new(concurrency)),
            tasks: Mutex::new(Vec::new()),
            done: Mutex::new(Vec::new()),
        }
    }

    fn submit(&self, pack: FinishedPack, progress: &Progress) -> Result<()> {
        self.reap()?;
        let permit = self
            .repo
            .block_on(self.slots.clone().acquire_owned())
            .map_err(|_| Error::Internal("upload queue closed".into()))?;
        let store = self.repo.store().inner().clone();
        progress
            .bytes_added
            .fetch_add(pack.bytes.len() as u64, Ordering::Relaxed);
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
    fn reap(&self) -> Result<()> {
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

    fn finish(self) -> Result<Vec<PackEntries>> {
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

type Walked = (Id, Vec<String>, Summary, Vec<(String, String)>);

/// A node not yet final: a file whose chunk ids are still with the hashers, or a folder whose
/// tree is not yet encoded. Deferring both keeps the walker from waiting on the workers;
/// [`DEFER_LIMIT`] bounds the memory this takes.
struct Pending {
    node: Node,
    seqs: Vec<u64>,
    children: Option<Vec<Pending>>,
}

impl Pending {
    fn done(node: Node) -> Pending {
        Pending {
            node,
            seqs: Vec::new(),
            children: None,
        }
    }
}

/// Pending nodes allowed before finished folders are encoded eagerly (small in unit tests,
/// so that path runs).
const DEFER_LIMIT: usize = if cfg!(test) { 8 } else { 50_000 };

struct Walker<'a> {
    repo: &'a Repository,
    index: &'a Index,
    /// Where earlier folder listings come from when there is no parent snapshot.
    local_parent: Option<&'a ParentCache>,
    /// Where this backup's folder listings go for the next one.
    recorder: Option<&'a ParentRecorder<'a>>,
    dedup: &'a Dedup,
    /// Chunks to the hashers.
    tx: Sender<(u64, Vec<u8>)>,
    /// Trees straight to the packers (the walker hashes them itself).
    pack_tx: Sender<Job>,
    /// Chunk ids coming back from the workers, by sequence number.
    ids: Receiver<(u64, Id)>,
    seq: u64,
    done: HashMap<u64, Id>,
    /// Nodes held as [`Pending`].
    deferred: usize,
    /// The chunk stream's buffer, reused from file to file.
    buf: Vec<u8>,
    progress: &'a Progress,
    summary: Summary,
    skipped: Vec<(String, String)>,
}

fn node_base(name: &OsStr, kind: NodeKind, meta: &Metadata) -> Node {
    Node {
        name: RawName::from_os(name),
        kind,
        mode: meta.mode() & 0o7777,
        mtime_sec: meta.mtime(),
        mtime_nsec: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        size: 0,
        inode: 0,
        ctime_sec: 0,
        ctime_nsec: 0,
        content: Vec::new(),
        subtree: None,
        target: None,
    }
}

const STOPPED: &str = "backup pipeline stopped";

/// The error of a stage whose neighbour went away (the neighbour's error is the real one).
fn stopped() -> Error {
    Error::Unavailable(STOPPED.into())
}

fn is_stopped(e: &Error) -> bool {
    matches!(e, Error::Unavailable(m) if m == STOPPED)
}

impl Walker<'_> {
    fn run(mut self, source: Source, parent: Option<&Tree>) -> Result<Walked> {
        let mut root = Vec::new();
        let mut paths = Vec::new();
        match source {
            Source::Paths(list) => {
                if list.is_empty() {
                    return Err(Error::invalid("no paths to back up"));
                }
                let mut names = HashSet::new();
                for p in list {
                    let abs = std::path::absolute(&p).map_err(|e| Error::io(p.display(), e))?;
                    let meta = std::fs::symlink_metadata(&abs).map_err(|e| {
                        if e.kind() == std::io::ErrorKind::NotFound {
                            Error::NotFound(format!("source path {}", p.display()))
                        } else {
                            Error::io(p.display(), e)
                        }
                    })?;
                    paths.push(abs.display().to_string());
                    let Some(name) = abs.file_name().map(|n| n.to_os_string()) else {
                        // The file-system root: its entries become the snapshot's root.
                        if !meta.is_dir() || paths.len() > 1 {
                            return Err(Error::invalid("`/` can only be backed up on its own"));
                        }
                        self.summary.dirs += 1;
                        root = self.dir_entries(&abs, parent.cloned())?;
                        continue;
                    };
                    if !names.insert(name.clone()) {
                        return Err(Error::invalid(format!(
                            "two source paths end in the same name {name:?}"
                        )));
                    }
                    let prev = parent
                        .and_then(|t| t.find(name.as_encoded_bytes()))
                        .cloned();
                    if let Some(n) = self.node(&abs, &name, &meta, prev.as_ref())? {
                        root.push(n);
                    }
                }
            }
            Source::Stdin { name, reader } => {
                if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                    return Err(Error::invalid(format!(
                        "--stdin-name {name:?} must be a plain file name"
                    )));
                }
                paths.push(format!("stdin:{name}"));
                let now = chrono::Utc::now();
                let (seqs, size) = self
                    .chunks(reader)
                    .map_err(|e| Error::io("standard input", e))??;
                let node = Node {
                    name: RawName(name.into_bytes()),
                    kind: NodeKind::File,
                    mode: 0o644,
                    mtime_sec: now.timestamp(),
                    mtime_nsec: now.timestamp_subsec_nanos(),
                    uid: 0,
                    gid: 0,
                    size,
                    inode: 0,
                    ctime_sec: 0,
                    ctime_nsec: 0,
                    content: Vec::new(),
                    subtree: None,
                    target: None,
                };
                self.summary.files += 1;
                self.deferred += 1;
                root.push(Pending {
                    node,
                    seqs,
                    children: None,
                });
            }
        }
        let root_id = self.store_tree(root)?;
        Ok((root_id, paths, self.summary, self.skipped))
    }

    /// Makes a pending node final: waits for its chunk ids, encodes its folder's tree.
    fn finish(&mut self, p: &mut Pending) -> Result<()> {
        if !p.seqs.is_empty() {
            let seqs = std::mem::take(&mut p.seqs);
            p.node.content = self.resolve(&seqs)?;
            self.deferred -= 1;
        }
        if let Some(children) = p.children.take() {
            p.node.subtree = Some(self.store_tree(children)?);
            self.deferred -= 1;
        }
        Ok(())
    }

    /// Finishes every node, then encodes and submits the tree.
    fn store_tree(&mut self, pending: Vec<Pending>) -> Result<Id> {
        let mut tree = Tree::default();
        for mut p in pending {
            self.finish(&mut p)?;
            tree.nodes.push(p.node);
        }
        let bytes = tree.encode();
        let id = self.repo.chunk_id(&bytes);
        if let Some(r) = self.recorder {
            r.put(&id, &bytes);
        }
        if self.dedup.claim(self.index, &id, bytes.len()) {
            self.pack_tx
                .send(Job {
                    t: BlobType::Tree,
                    id,
                    data: bytes,
                })
                .map_err(|_| stopped())?;
        }
        Ok(id)
    }

    fn resolve(&mut self, seqs: &[u64]) -> Result<Vec<Id>> {
        let mut out = Vec::with_capacity(seqs.len());
        for s in seqs {
            loop {
                if let Some(id) = self.done.remove(s) {
                    out.push(id);
                    break;
                }
                let (seq, id) = self.ids.recv().map_err(|_| stopped())?;
                self.done.insert(seq, id);
            }
        }
        Ok(out)
    }

    /// Chunks a reader. Outer error: reading failed (skip the file); inner: pipeline failure.
    fn chunks(&mut self, reader: impl Read) -> std::io::Result<Result<(Vec<u64>, u64)>> {
        let chunker = self.repo.chunker();
        let mut stream = chunker.stream_with_buffer(reader, std::mem::take(&mut self.buf));
        let mut seqs = Vec::new();
        let mut size = 0u64;
        let mut result = Ok(Ok(()));
        for chunk in stream.by_ref() {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let len = chunk.len() as u64;
            size += len;
            self.summary.bytes_processed += len;
            self.progress.bytes.fetch_add(len, Ordering::Relaxed);
            self.seq += 1;
            seqs.push(self.seq);
            if self.tx.send((self.seq, chunk)).is_err() {
                result = Ok(Err(stopped()));
                break;
            }
        }
        self.buf = stream.into_buffer();
        match result {
            Err(e) => Err(e),
            Ok(Err(e)) => Ok(Err(e)),
            Ok(Ok(())) => Ok(Ok((seqs, size))),
        }
    }

    fn skip(&mut self, path: &Path, why: impl std::fmt::Display) {
        tracing::warn!(path = %path.display(), "skipped: {why}");
        self.skipped
            .push((path.display().to_string(), why.to_string()));
        self.summary.files_skipped += 1;
    }

    fn node(
        &mut self,
        path: &Path,
        name: &OsStr,
        meta: &Metadata,
        prev: Option<&Node>,
    ) -> Result<Option<Pending>> {
        let ft = meta.file_type();
        if ft.is_file() {
            let mut node = node_base(name, NodeKind::File, meta);
            node.size = meta.len();
            node.inode = meta.ino();
            node.ctime_sec = meta.ctime();
            node.ctime_nsec = meta.ctime_nsec().clamp(0, 999_999_999) as u32;
            if let Some(p) = prev.filter(|p| {
                p.kind == NodeKind::File
                    && p.size == node.size
                    && p.inode == node.inode
                    && p.mtime_sec == node.mtime_sec
                    && p.mtime_nsec == node.mtime_nsec
                    && p.ctime_sec == node.ctime_sec
                    && p.ctime_nsec == node.ctime_nsec
                    && p.content.iter().all(|c| self.dedup.known(self.index, c))
            }) {
                node.content = p.content.clone();
                self.summary.files += 1;
                self.summary.files_unchanged += 1;
                self.summary.bytes_processed += node.size;
                self.progress.files.fetch_add(1, Ordering::Relaxed);
                self.progress.bytes.fetch_add(node.size, Ordering::Relaxed);
                return Ok(Some(Pending::done(node)));
            }
            let opened = {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                    .open(path)
                    .and_then(|f| {
                        // Still the regular file we stat'ed (not a FIFO or device swapped in).
                        match f.metadata() {
                            Ok(m) if m.is_file() && m.ino() == meta.ino() => Ok(f),
                            Ok(_) => Err(std::io::Error::other("changed while being backed up")),
                            Err(e) => Err(e),
                        }
                    })
            };
            let file = match opened {
                Ok(f) => f,
                Err(e) => {
                    self.skip(path, e);
                    return Ok(None);
                }
            };
            let seqs = match self.chunks(file) {
                Ok(r) => {
                    let (seqs, size) = r?;
                    node.size = size;
                    seqs
                }
                Err(e) => {
                    self.skip(path, e);
                    return Ok(None);
                }
            };
            self.summary.files += 1;
            self.progress.files.fetch_add(1, Ordering::Relaxed);
            if !seqs.is_empty() {
                self.deferred += 1;
            }
            Ok(Some(Pending {
                node,
                seqs,
                children: None,
            }))
        } else if ft.is_dir() {
            let node = node_base(name, NodeKind::Dir, meta);
            let prev_tree = match (prev.and_then(|p| p.subtree), self.local_parent) {
                (Some(id), Some(cache)) => cache.load_tree(self.repo, &id),
                (Some(id), None) if self.index.contains(&id) => {
                    self.repo.load_tree(self.index, &id).ok()
                }
                _ => None,
            };
            self.summary.dirs += 1;
            let entries = self.dir_entries(path, prev_tree)?;
            self.deferred += 1;
            Ok(Some(Pending {
                node,
                seqs: Vec::new(),
                children: Some(entries),
            }))
        } else if ft.is_symlink() {
            let mut node = node_base(name, NodeKind::Symlink, meta);
            match std::fs::read_link(path) {
                Ok(t) => node.target = Some(RawName::from_os(t.as_os_str())),
                Err(e) => {
                    self.skip(path, e);
                    return Ok(None);
                }
            }
            self.summary.symlinks += 1;
            Ok(Some(Pending::done(node)))
        } else {
            tracing::info!(path = %path.display(), "not a file, folder or symlink: left out");
            Ok(None)
        }
    }

    fn dir_entries(&mut self, path: &Path, prev: Option<Tree>) -> Result<Vec<Pending>> {
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(path) {
            Ok(rd) => rd,
            Err(e) => {
                self.skip(path, e);
                return Ok(out);
            }
        };
        let mut entries = Vec::new();
        for e in rd {
            match e {
                Ok(e) => entries.push(e),
                Err(e) => self.skip(path, e),
            }
        }
        entries.sort_by_key(|e| e.file_name());
        let mut finished = 0;
        for e in entries {
            let child = e.path();
            let name = e.file_name();
            let meta = match std::fs::symlink_metadata(&child) {
                Ok(m) => m,
                Err(err) => {
                    self.skip(&child, err);
                    continue;
                }
            };
            let p = prev.as_ref().and_then(|t| t.find(name.as_encoded_bytes()));
            if let Some(n) = self.node(&child, &name, &meta, p)? {
                out.push(n);
            }
            if self.deferred > DEFER_LIMIT {
                for p in &mut out[finished..] {
                    self.finish(p)?;
                }
                finished = out.len();
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyservice::LocalKeyring;
    use crate::repo::restore::{restore, RestoreOptions, RestoreProgress};
    use crate::repo::InitOptions;
    use crate::store::LocalStore;

    /// A full backup and restore through the pipeline with a tiny defer limit, so eager
    /// encoding of finished folders runs alongside deferred ones.
    #[test]
    fn pipeline_round_trip_with_eager_folder_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        for d in 0..6 {
            for f in 0..12 {
                let p = src.join(format!("d{d}/sub{}/f{f}", f % 3));
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, format!("{d}/{f}").repeat(f * 1000 + 1)).unwrap();
            }
        }
        let rt = tokio::runtime::Runtime::new().unwrap();
        let keys = Arc::new(LocalKeyring::create(&dir.path().join("ring"), None).unwrap());
        let store = Arc::new(LocalStore::new(dir.path().join("repo")));
        let opts = InitOptions {
            pack_size: 1 << 20,
            ..InitOptions::default()
        };
        let repo = Repository::init(
            rt.handle().clone(),
            store,
            keys,
            Id::random().unwrap(),
            &opts,
        )
        .unwrap();
        let report = backup(
            &repo,
            BackupOptions {
                source: Source::Paths(vec![src.clone()]),
                host: "h".into(),
                tags: vec![],
                parent: None,
                parent_cache: None,
                force: false,
                username: "u".into(),
                workers: 2,
                uploads: 2,
            },
            &Progress::default(),
        )
        .unwrap();
        assert_eq!(report.snapshot.summary.files, 72);
        let index = repo.load_index().unwrap();
        let out = dir.path().join("out");
        let r = restore(
            &repo,
            &index,
            &report.snapshot.tree,
            &RestoreOptions {
                target: out.clone(),
                includes: vec![],
                threads: 2,
            },
            &RestoreProgress::default(),
        )
        .unwrap();
        assert!(r.failed.is_empty());
        for d in 0..6 {
            for f in 0..12 {
                let rel = format!("src/d{d}/sub{}/f{f}", f % 3);
                assert_eq!(
                    std::fs::read(out.join(&rel)).unwrap(),
                    format!("{d}/{f}").repeat(f * 1000 + 1).into_bytes(),
                    "{rel}"
                );
            }
        }
    }
}
