//! The backup pipeline.
//!
//! ```text
//! walker thread: read -> chunk -> HMAC id -> dedup  --(bounded channel)-->
//! N workers:     zstd -> seal under pack key -> pack builder  --(semaphore)-->
//! runtime tasks: upload packs (bounded concurrency)
//! then: index segment, then snapshot manifest (written last: a snapshot only ever refers
//! to packs and keys already stored).
//! ```
//! Memory is bounded by the channel (2 x workers chunks), one open pack per worker and blob
//! type, and the packs in flight, whatever the file sizes.

use std::collections::HashSet;
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

use super::{Index, Repository, Session};
use crate::compress;
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

struct Job {
    t: BlobType,
    id: Id,
    data: Vec<u8>,
}

pub fn backup(repo: &Repository, opts: BackupOptions, progress: &Progress) -> Result<BackupReport> {
    let start = Instant::now();
    let index = repo.load_index()?;
    let parent_tree = match &opts.parent {
        Some((_, s)) => Some(repo.load_tree(&index, &s.tree)?),
        None => None,
    };
    let session = Session::start(repo)?;
    let workers = opts.workers.max(1);
    let uploader = Uploader::new(repo, opts.uploads.max(1));
    let level = repo.config().body.compression_level;
    let pack_size = repo.config().body.pack_size as usize;
    let (tx, rx) = crossbeam_channel::bounded::<Job>(2 * workers);

    let (walked, worker_results) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let rx = rx.clone();
                let (session, uploader) = (&session, &uploader);
                s.spawn(move || worker(rx, session, uploader, level, pack_size, progress))
            })
            .collect();
        drop(rx);
        let walker = Walker {
            repo,
            index: &index,
            tx,
            claimed: HashSet::new(),
            progress,
            summary: Summary::default(),
            skipped: Vec::new(),
        };
        let walked = walker.run(opts.source, parent_tree.as_ref());
        let results: Vec<Result<()>> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::invalid("backup worker panicked")))
            })
            .collect();
        (walked, results)
    });
    // A worker's error explains a walker that found the pipeline closed: report it first.
    for r in worker_results {
        r?;
    }
    let (root, paths, mut summary, skipped) = walked?;
    let packs = uploader.finish()?;

    let mut added = progress.bytes_added.load(Ordering::Relaxed);
    if !packs.is_empty() {
        let seg = IndexSegment { packs };
        let id = repo.save_index_segment(&seg)?;
        added += repo.block_on(repo.store().size(FileKind::Index, &id))?;
    }
    summary.bytes_added = added;
    summary.duration_secs = start.elapsed().as_secs_f64();
    let snapshot = Snapshot {
        format: REPO_FORMAT,
        time: chrono::Utc::now(),
        host: opts.host,
        username: std::env::var("USER").unwrap_or_default(),
        paths,
        tags: opts.tags,
        tree: root,
        session: session.id,
        parent: opts.parent.map(|(id, _)| id),
        summary,
        program: format!("custody {}", env!("CARGO_PKG_VERSION")),
    };
    let snapshot_id = repo.save_snapshot(&session, &snapshot)?;
    tracing::info!(snapshot = %snapshot_id, session = %session.id, "snapshot saved");
    Ok(BackupReport {
        snapshot_id,
        snapshot,
        skipped,
    })
}

fn worker(
    rx: Receiver<Job>,
    session: &Session,
    uploader: &Uploader,
    level: i32,
    pack_size: usize,
    progress: &Progress,
) -> Result<()> {
    let mut open: [Option<PackBuilder>; 2] = [None, None];
    for job in rx {
        let (compression, body) = compress::compress(level, &job.data);
        let slot = &mut open[job.t as usize];
        if slot.is_none() {
            *slot = Some(PackBuilder::new(session.new_pack_key()?));
        }
        let builder = slot.as_mut().expect("just set");
        let sealed = builder.key().seal_blob(job.t, &job.id, &body)?;
        builder.add(
            BlobEntry {
                id: job.id,
                blob_type: job.t,
                compression,
                offset: 0,
                length: 0,
                raw_length: job.data.len() as u32,
            },
            sealed,
        );
        if builder.size() >= pack_size {
            let full = slot.take().expect("present");
            uploader.submit(full.finish()?, progress)?;
        }
    }
    for b in open.into_iter().flatten() {
        if !b.is_empty() {
            uploader.submit(b.finish()?, progress)?;
        }
    }
    Ok(())
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
            .map_err(|_| Error::invalid("upload queue closed"))?;
        let store = self.repo.store().clone();
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

struct Walker<'a> {
    repo: &'a Repository,
    index: &'a Index,
    tx: Sender<Job>,
    claimed: HashSet<Id>,
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
        content: Vec::new(),
        subtree: None,
        target: None,
    }
}

impl Walker<'_> {
    fn run(mut self, source: Source, parent: Option<&Tree>) -> Result<Walked> {
        let mut root = Tree::default();
        let mut paths = Vec::new();
        match source {
            Source::Paths(list) => {
                if list.is_empty() {
                    return Err(Error::invalid("no paths to back up"));
                }
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
                        let tree = self.dir_tree(&abs, parent.cloned())?;
                        root = tree;
                        continue;
                    };
                    if root.find(name.as_encoded_bytes()).is_some() {
                        return Err(Error::invalid(format!(
                            "two source paths end in the same name {:?}",
                            name
                        )));
                    }
                    let prev = parent
                        .and_then(|t| t.find(name.as_encoded_bytes()))
                        .cloned();
                    if let Some(n) = self.node(&abs, &name, &meta, prev.as_ref())? {
                        root.nodes.push(n);
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
                let mut node = Node {
                    name: RawName(name.clone().into_bytes()),
                    kind: NodeKind::File,
                    mode: 0o644,
                    mtime_sec: now.timestamp(),
                    mtime_nsec: now.timestamp_subsec_nanos(),
                    uid: 0,
                    gid: 0,
                    size: 0,
                    inode: 0,
                    content: Vec::new(),
                    subtree: None,
                    target: None,
                };
                let (content, size) = self
                    .chunks(reader)
                    .map_err(|e| Error::io("standard input", e))??;
                node.content = content;
                node.size = size;
                self.summary.files += 1;
                root.nodes.push(node);
            }
        }
        let root_id = self.store_tree(root)?;
        Ok((root_id, paths, self.summary, self.skipped))
    }

    fn submit(&mut self, t: BlobType, id: Id, data: Vec<u8>) -> Result<()> {
        if self.index.contains(&id) || !self.claimed.insert(id) {
            return Ok(());
        }
        self.summary.chunks_new += 1;
        self.summary.bytes_new += data.len() as u64;
        self.tx
            .send(Job { t, id, data })
            .map_err(|_| Error::Unavailable("backup pipeline stopped".into()))
    }

    fn store_tree(&mut self, mut tree: Tree) -> Result<Id> {
        let bytes = tree.encode();
        let id = self.repo.chunk_id(&bytes);
        self.submit(BlobType::Tree, id, bytes)?;
        Ok(id)
    }

    /// Chunks a reader. Outer error: reading failed (skip the file); inner: pipeline failure.
    fn chunks(&mut self, reader: impl Read) -> std::io::Result<Result<(Vec<Id>, u64)>> {
        let chunker = self.repo.chunker().clone();
        let mut ids = Vec::new();
        let mut size = 0u64;
        for chunk in chunker.stream(reader) {
            let chunk = chunk?;
            let id = self.repo.chunk_id(&chunk);
            size += chunk.len() as u64;
            self.summary.bytes_processed += chunk.len() as u64;
            self.progress
                .bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            ids.push(id);
            if let Err(e) = self.submit(BlobType::Data, id, chunk) {
                return Ok(Err(e));
            }
        }
        Ok(Ok((ids, size)))
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
    ) -> Result<Option<Node>> {
        let ft = meta.file_type();
        if ft.is_file() {
            let mut node = node_base(name, NodeKind::File, meta);
            node.size = meta.len();
            node.inode = meta.ino();
            if let Some(p) = prev.filter(|p| {
                p.kind == NodeKind::File
                    && p.size == node.size
                    && p.inode == node.inode
                    && p.mtime_sec == node.mtime_sec
                    && p.mtime_nsec == node.mtime_nsec
                    && p.content.iter().all(|c| self.index.contains(c))
            }) {
                node.content = p.content.clone();
                self.summary.files += 1;
                self.summary.bytes_processed += node.size;
                self.progress.files.fetch_add(1, Ordering::Relaxed);
                self.progress.bytes.fetch_add(node.size, Ordering::Relaxed);
                return Ok(Some(node));
            }
            let file = match std::fs::File::open(path) {
                Ok(f) => f,
                Err(e) => {
                    self.skip(path, e);
                    return Ok(None);
                }
            };
            match self.chunks(file) {
                Ok(r) => {
                    let (content, size) = r?;
                    node.content = content;
                    node.size = size;
                }
                Err(e) => {
                    self.skip(path, e);
                    return Ok(None);
                }
            }
            self.summary.files += 1;
            self.progress.files.fetch_add(1, Ordering::Relaxed);
            Ok(Some(node))
        } else if ft.is_dir() {
            let mut node = node_base(name, NodeKind::Dir, meta);
            let prev_tree = match prev.and_then(|p| p.subtree) {
                Some(id) if self.index.contains(&id) => self.repo.load_tree(self.index, &id).ok(),
                _ => None,
            };
            node.subtree = Some(self.store_dir(path, prev_tree)?);
            Ok(Some(node))
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
            Ok(Some(node))
        } else {
            tracing::info!(path = %path.display(), "not a file, folder or symlink: left out");
            Ok(None)
        }
    }

    fn store_dir(&mut self, path: &Path, prev: Option<Tree>) -> Result<Id> {
        let tree = self.dir_tree(path, prev)?;
        self.store_tree(tree)
    }

    fn dir_tree(&mut self, path: &Path, prev: Option<Tree>) -> Result<Tree> {
        self.summary.dirs += 1;
        let mut tree = Tree::default();
        let rd = match std::fs::read_dir(path) {
            Ok(rd) => rd,
            Err(e) => {
                self.skip(path, e);
                return Ok(tree);
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
                tree.nodes.push(n);
            }
        }
        Ok(tree)
    }
}
