//! The walker: reads the sources depth first, chunks files, decides from the parent (a
//! parent snapshot or the local parent cache) which files are unchanged, and writes each
//! folder's tree once its files' chunk ids are back from the hashers.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::Ordering;

use crossbeam_channel::{Receiver, Sender};

use crate::error::{Error, Result};
use crate::format::name::RawName;
use crate::format::snapshot::Summary;
use crate::format::tree::{Node, NodeKind, Salt, Tree, Xattr};
use crate::fs_at::{self, Stat};
use crate::id::{ChunkId, TreeId};
use crate::repo::parent_cache::{ParentCache, ParentRecorder};
use crate::repo::{Index, Repository};

use super::pending::{Pending, DEFER_LIMIT};
use super::select::{FolderRule, Selection};
use super::stages::{stopped, ChunkBatch, Dedup, Job, BATCH_BYTES, BATCH_CHUNKS};
use super::{Progress, Source};

/// What the walker hands back: the root tree, the absolute source paths, the summary and the
/// skipped sources.
pub(super) type Walked = (TreeId, Vec<String>, Summary, Vec<(String, String)>);

pub(super) struct Walker<'a> {
    pub(super) repo: &'a Repository,
    pub(super) index: &'a Index,
    /// Where earlier folder listings come from when there is no parent snapshot.
    pub(super) local_parent: Option<&'a ParentCache>,
    /// Where this backup's folder listings go for the next one.
    pub(super) recorder: Option<&'a ParentRecorder<'a>>,
    pub(super) dedup: &'a Dedup,
    /// Chunks to the hashers, in batches.
    pub(super) tx: Sender<ChunkBatch>,
    /// Trees straight to the packers (the walker hashes them itself).
    pub(super) pack_tx: Sender<Vec<Job>>,
    /// Chunk ids coming back from the workers, by sequence number.
    pub(super) ids: Receiver<Vec<(u64, ChunkId)>>,
    pub(super) seq: u64,
    /// Chunks not yet sent, and their bytes: sent when full, and before the walker waits.
    pub(super) batch: ChunkBatch,
    pub(super) batch_bytes: usize,
    pub(super) done: HashMap<u64, ChunkId>,
    /// Nodes held as [`Pending`] whose chunk ids or folder listing are still to come.
    pub(super) deferred: usize,
    /// Nodes held in folder listings not yet encoded, finished or not: an unchanged file is
    /// finished at once, yet a million of them held until the end were most of an unchanged
    /// backup's memory.
    pub(super) held: usize,
    /// The chunk stream's buffer, reused from file to file.
    pub(super) buf: Vec<u8>,
    pub(super) progress: &'a Progress,
    pub(super) summary: Summary,
    pub(super) skipped: Vec<(String, String)>,
    /// Files up to this size get a salted chunk ([`BackupOptions::no_dedup_below`]).
    pub(super) salt_below: u64,
    /// What to leave out.
    pub(super) select: &'a Selection,
    /// The device of the source being walked (`--one-file-system`).
    pub(super) root_dev: u64,
}

/// The extended attributes of `name` in folder `dir` (at `path`) as a node stores them.
pub(super) fn xattrs_of(dir: &OwnedFd, name: &OsStr, path: &Path) -> Vec<Xattr> {
    crate::xattr::read(&fs_at::proc_path(dir, name, path))
        .into_iter()
        .map(|(name, value)| Xattr {
            name: RawName(name),
            value,
        })
        .collect()
}

/// A folder named by the user (a source's, or one above it), opened by its path: symlinks on
/// the way are the user's to choose.
pub(super) fn open_path(path: &Path) -> Result<OwnedFd> {
    std::fs::File::open(path)
        .map(OwnedFd::from)
        .map_err(|e| Error::io(path.display(), e))
}

pub(super) fn node_base(name: &OsStr, kind: NodeKind, meta: &Stat) -> Node {
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
        salt: None,
        xattrs: Vec::new(),
        rdev: 0,
        links: 0,
        device: 0,
    }
}

impl Walker<'_> {
    pub(super) fn run(mut self, source: Source, parent: Option<&Tree>) -> Result<Walked> {
        let mut root = Vec::new();
        let mut paths = Vec::new();
        match source {
            Source::Paths(list) => {
                if list.is_empty() {
                    return Err(Error::invalid("no paths to back up"));
                }
                let (given, mut found) = (list.len(), Vec::new());
                for p in list {
                    let abs = super::source_path(&p).map_err(|e| Error::io(p.display(), e))?;
                    match Stat::of_path(&abs) {
                        Ok(meta) => found.push((abs, meta)),
                        // One missing source of several: the others are backed up, and the
                        // missing one is reported like an unreadable file (exit 5).
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            if given == 1 {
                                return Err(Error::NotFound(format!(
                                    "source path {}",
                                    p.display()
                                )));
                            }
                            self.skip(&abs, "no such file or directory");
                            paths.push(abs.display().to_string());
                        }
                        Err(e) => return Err(Error::io(p.display(), e)),
                    }
                }
                if found.is_empty() {
                    return Err(Error::NotFound("every source path".into()));
                }
                paths.extend(found.iter().map(|(p, _)| p.display().to_string()));
                paths.sort();
                paths.dedup();
                if let [(abs, meta)] = &found[..] {
                    if abs.parent().is_none() {
                        // The file-system root: its entries are the snapshot's root.
                        if !meta.is_dir() {
                            return Err(Error::invalid("`/` is not a folder"));
                        }
                        self.root_dev = meta.dev();
                        self.summary.dirs += 1;
                        let fd = open_path(abs)?;
                        root = self.dir_entries(&fd, abs, parent.cloned(), false)?;
                        let root_id = self.store_tree(root)?;
                        return Ok((root_id, paths, self.summary, self.skipped));
                    }
                }
                let sources = super::sources::SourceTree::new(found)?;
                let top = open_path(Path::new("/"))?;
                root = self.folders(&top, Path::new("/"), sources, parent.cloned(), parent)?;
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
                    salt: None,
                    xattrs: Vec::new(),
                    rdev: 0,
                    links: 0,
                    device: 0,
                };
                self.summary.files += 1;
                self.deferred += 1;
                self.held += 1;
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

    /// Chunks a reader. Outer error: reading failed (skip the file); inner: pipeline failure.
    pub(super) fn chunks(&mut self, reader: impl Read) -> std::io::Result<Result<(Vec<u64>, u64)>> {
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
            self.batch_bytes += chunk.len();
            self.batch.push((self.seq, chunk));
            if self.batch_bytes >= BATCH_BYTES || self.batch.len() >= BATCH_CHUNKS {
                if let Err(e) = self.flush() {
                    result = Ok(Err(e));
                    break;
                }
            }
        }
        self.buf = stream.into_buffer();
        match result {
            Err(e) => Err(e),
            Ok(Err(e)) => Ok(Err(e)),
            Ok(Ok(())) => Ok(Ok((seqs, size))),
        }
    }

    /// A small file as one chunk of a random salt and its bytes (`--no-dedup-below`): the
    /// salt goes into the node, so readers strip it, and the chunk id is of nothing a guesser
    /// can compute. A file that grew past the threshold since its stat is chunked as usual.
    fn salted_chunk(
        &mut self,
        mut file: std::fs::File,
        node: &mut Node,
    ) -> std::io::Result<Result<(Vec<u64>, u64)>> {
        let mut data = Vec::with_capacity(16 + node.size as usize);
        let mut salt = [0u8; 16];
        if let Err(e) = crate::crypto::random::fill(&mut salt) {
            return Ok(Err(e));
        }
        data.extend_from_slice(&salt);
        (&mut file)
            .take(self.salt_below + 1)
            .read_to_end(&mut data)?;
        if data.len() as u64 - 16 > self.salt_below {
            let read = std::io::Cursor::new(data.split_off(16));
            return self.chunks(read.chain(file));
        }
        let size = data.len() as u64 - 16;
        if size == 0 {
            return Ok(Ok((Vec::new(), 0)));
        }
        node.salt = Some(Salt(salt));
        self.summary.bytes_processed += size;
        self.progress.bytes.fetch_add(size, Ordering::Relaxed);
        self.seq += 1;
        self.batch_bytes += data.len();
        self.batch.push((self.seq, data));
        let seq = self.seq;
        if self.batch_bytes >= BATCH_BYTES || self.batch.len() >= BATCH_CHUNKS {
            if let Err(e) = self.flush() {
                return Ok(Err(e));
            }
        }
        Ok(Ok((vec![seq], size)))
    }

    /// Sends the chunks batched so far to the hashers.
    pub(super) fn flush(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.batch_bytes = 0;
        self.tx
            .send(std::mem::take(&mut self.batch))
            .map_err(|_| stopped())
    }

    pub(super) fn skip(&mut self, path: &Path, why: impl std::fmt::Display) {
        tracing::warn!(path = %path.display(), "skipped: {why}");
        self.skipped
            .push((path.display().to_string(), why.to_string()));
        self.summary.files_skipped += 1;
    }

    /// The node of `name` in folder `dir` (at `path`), whose status is `meta`. Everything is
    /// reached through `dir`'s descriptor, never by path: a folder swapped for a symlink
    /// while the walk runs redirects nothing.
    pub(super) fn node(
        &mut self,
        dir: &OwnedFd,
        path: &Path,
        name: &OsStr,
        meta: &Stat,
        prev: Option<&Node>,
    ) -> Result<Option<Pending>> {
        if meta.is_file() {
            let mut node = node_base(name, NodeKind::File, meta);
            node.xattrs = xattrs_of(dir, name, path);
            node.size = meta.len();
            if meta.nlink() > 1 {
                node.links = meta.nlink();
                node.device = meta.dev();
            }
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
                    && p.content
                        .iter()
                        .all(|c| self.dedup.known(self.index, c.into()))
            }) {
                node.content = p.content.clone();
                node.salt = p.salt;
                self.summary.files += 1;
                self.summary.files_unchanged += 1;
                self.summary.bytes_processed += node.size;
                self.progress.files.fetch_add(1, Ordering::Relaxed);
                self.progress.bytes.fetch_add(node.size, Ordering::Relaxed);
                return Ok(Some(Pending::done(node)));
            }
            self.progress
                .read_because(prev.is_some_and(|p| p.kind == NodeKind::File), path);
            let opened =
                fs_at::openat(dir, name, libc::O_RDONLY | libc::O_NONBLOCK, 0).and_then(|fd| {
                    // Still the regular file we stat'ed (not a FIFO or device swapped in).
                    match Stat::of_fd(&fd) {
                        Ok(m) if m.is_file() && m.ino() == meta.ino() => {
                            Ok(std::fs::File::from(fd))
                        }
                        Ok(_) => Err(std::io::Error::other("changed while being backed up")),
                        Err(e) => Err(e),
                    }
                });
            let file = match opened {
                Ok(f) => f,
                Err(e) => {
                    self.skip(path, e);
                    return Ok(None);
                }
            };
            let read = if node.size > 0 && node.size <= self.salt_below {
                self.salted_chunk(file, &mut node)
            } else {
                self.chunks(file)
            };
            let seqs = match read {
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
        } else if meta.is_dir() {
            // The folder itself, and still the one we stat'ed (not a symlink swapped in).
            let opened = fs_at::open_dir(dir, name).and_then(|fd| match Stat::of_fd(&fd) {
                Ok(m) if m.dev() == meta.dev() && m.ino() == meta.ino() => Ok(fd),
                Ok(_) => Err(std::io::Error::other("changed while being backed up")),
                Err(e) => Err(e),
            });
            let here = match opened {
                Ok(fd) => fd,
                Err(e) => {
                    self.skip(path, e);
                    return Ok(None);
                }
            };
            let rule = self.select.folder_rule(&here);
            if rule == FolderRule::LeaveOut {
                tracing::debug!(path = %path.display(), "left out: holds an --exclude-if-present marker");
                return Ok(None);
            }
            let mut node = node_base(name, NodeKind::Dir, meta);
            node.xattrs = xattrs_of(dir, name, path);
            let prev_tree = prev.and_then(|p| self.prev_tree(p));
            self.summary.dirs += 1;
            // A mount point under `-x` is kept, empty.
            let entries = if self.select.stays_out(meta, self.root_dev) {
                Vec::new()
            } else {
                self.dir_entries(&here, path, prev_tree, rule == FolderRule::OnlyTag)?
            };
            self.deferred += 1;
            Ok(Some(Pending {
                node,
                seqs: Vec::new(),
                children: Some(entries),
            }))
        } else if meta.is_symlink() {
            let mut node = node_base(name, NodeKind::Symlink, meta);
            node.xattrs = xattrs_of(dir, name, path);
            match fs_at::readlink_at(dir, name) {
                Ok(t) => node.target = Some(RawName::from_os(&t)),
                Err(e) => {
                    self.skip(path, e);
                    return Ok(None);
                }
            }
            self.summary.symlinks += 1;
            Ok(Some(Pending::done(node)))
        } else if meta.is_fifo() || meta.is_char_device() || meta.is_block_device() {
            let kind = if meta.is_fifo() {
                NodeKind::Fifo
            } else if meta.is_char_device() {
                NodeKind::CharDevice
            } else {
                NodeKind::BlockDevice
            };
            let mut node = node_base(name, kind, meta);
            node.rdev = meta.rdev();
            node.xattrs = xattrs_of(dir, name, path);
            Ok(Some(Pending::done(node)))
        } else {
            // A socket belongs to a running program: it cannot be restored meaningfully.
            tracing::info!(path = %path.display(), "socket left out");
            self.summary.sockets_skipped += 1;
            Ok(None)
        }
    }

    /// The listing of a folder in the parent, from the local parent cache or the repository.
    pub(super) fn prev_tree(&self, prev: &Node) -> Option<Tree> {
        match (prev.subtree, self.local_parent) {
            (Some(id), Some(cache)) => cache.load_tree(self.repo, &id),
            (Some(id), None) if self.index.contains(id) => {
                self.repo.load_tree(self.index, &id).ok()
            }
            _ => None,
        }
    }

    /// The entries of folder `dir` (at `path`), sorted by name, less what the selection
    /// leaves out; `only_tag` keeps just a cache folder's `CACHEDIR.TAG`.
    pub(super) fn dir_entries(
        &mut self,
        dir: &OwnedFd,
        path: &Path,
        prev: Option<Tree>,
        only_tag: bool,
    ) -> Result<Vec<Pending>> {
        let mut out = Vec::new();
        let mut names = match fs_at::list(dir) {
            Ok(n) => n,
            Err(e) => {
                self.skip(path, e);
                return Ok(out);
            }
        };
        if only_tag {
            names.retain(|n| n == "CACHEDIR.TAG");
        }
        names.sort();
        let mut finished = 0;
        let mut oldest = 0;
        for name in names {
            let child = path.join(&name);
            let meta = match Stat::at(dir, &name) {
                Ok(m) => m,
                // Gone since the listing: as if it had not been there.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => {
                    self.skip(&child, err);
                    continue;
                }
            };
            if self.select.excluded(&child, &meta, self.root_dev).is_some() {
                continue;
            }
            let p = prev.as_ref().and_then(|t| t.find(name.as_encoded_bytes()));
            if let Some(n) = self.node(dir, &child, &name, &meta, p)? {
                out.push(n);
                self.held += 1;
                self.ease(&mut out, &mut oldest)?;
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
