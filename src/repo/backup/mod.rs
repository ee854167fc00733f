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
//! channels (2 x workers chunks each), one open pack per packer and blob type (and one spare
//! pack buffer per packer), and the packs in flight, whatever the file sizes.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::format::index::IndexSegment;
use crate::format::snapshot::{Layout, Snapshot, Summary};
use crate::format::tree::Tree;
use crate::format::REPO_FORMAT;
use crate::id::{ChunkId, PackId, SegmentId, SnapshotId, TreeId};
use crate::repo::parent_cache::ParentCache;
use crate::repo::{Repository, Session};
use crate::store::FileKind;

mod pending;
mod report;
pub mod select;
mod sources;
mod stages;
#[cfg(test)]
mod tests;
mod upload;
mod walker;

pub use report::{BackupOutput, Skipped};
use stages::{hasher, is_stopped, Dedup, Job, Packer};
pub use upload::Checkpoints;
use upload::Uploader;
use walker::Walker;

/// What to back up.
pub enum Source {
    Paths(Vec<PathBuf>),
    Stdin {
        name: String,
        reader: Box<dyn std::io::Read + Send>,
    },
}

pub struct BackupOptions {
    pub source: Source,
    pub host: String,
    pub tags: Vec<String>,
    /// A snapshot whose unchanged files (same size, mtime, inode) are reused without reading.
    pub parent: Option<(SnapshotId, Snapshot)>,
    /// This machine's record of its last backup of the same paths: used as the parent when
    /// there is no parent snapshot (write-only clients), and updated after this backup.
    pub parent_cache: Option<ParentCache>,
    /// Read every file: neither a parent snapshot nor the parent cache is consulted.
    pub force: bool,
    /// Recorded in the snapshot.
    pub username: String,
    pub workers: usize,
    pub uploads: usize,
    /// Files of at most this many bytes (but not empty) are stored with a random salt before
    /// their one chunk, so that nobody holding the repository secret can confirm a guess of
    /// their content from the index (`--no-dedup-below`; 0: off). At most the chunker's
    /// minimum chunk size.
    pub no_dedup_below: u64,
    /// What to leave out (`--exclude` and friends).
    pub select: select::SelectOptions,
    /// Read, chunk, compress and seal everything, but store nothing (no key record, pack,
    /// index segment or snapshot): says what a backup would store.
    pub dry_run: bool,
    /// How often the uploaded packs are listed while the backup runs.
    pub checkpoints: Checkpoints,
    /// How hard new data is compressed.
    pub compression: crate::compress::CompressionMode,
    /// What to deduplicate against, when the caller read it already (`None`: read at the
    /// start).
    pub base: Option<DedupBase>,
}

/// What a backup deduplicates against, and when it was read. A caller reads it while it
/// looks for the parent snapshot, so the two cost one wait on a remote bucket, not two.
pub struct DedupBase {
    index: crate::repo::Index,
    marks: super::marks::Marks,
    segments: HashSet<SegmentId>,
    at: Instant,
}

impl DedupBase {
    pub fn load(repo: &Repository) -> Result<DedupBase> {
        let at = Instant::now();
        let (index, marks, segments) = repo.load_index_for_backup()?;
        Ok(DedupBase {
            index,
            marks,
            segments,
            at,
        })
    }
}

/// Live counters for a progress display.
#[derive(Default)]
pub struct Progress {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    pub bytes_added: AtomicU64,
    /// Told about every file that is read because it is new or changed since the parent
    /// (`backup -v` lists them); unchanged files are not reported.
    pub on_change: Option<ChangeListener>,
}

/// What `backup -v` hands the walker: called from the walking thread for each file read.
pub type ChangeListener = Box<dyn Fn(FileChange, &std::path::Path) + Send + Sync>;

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("files", &self.files)
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Progress {
    /// A file is read: `changed` when the parent had it, new otherwise (`backup -v`).
    pub(super) fn read_because(&self, changed: bool, path: &std::path::Path) {
        if let Some(tell) = &self.on_change {
            let change = if changed {
                FileChange::Modified
            } else {
                FileChange::New
            };
            tell(change, path);
        }
    }
}

/// Why a file was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileChange {
    /// Not in the parent snapshot.
    New,
    /// In the parent, with another size, time or inode.
    Modified,
}

#[derive(Debug)]
pub struct BackupReport {
    pub snapshot_id: SnapshotId,
    pub snapshot: Snapshot,
    /// Source files or folders left out, with the reason.
    pub skipped: Vec<(String, String)>,
    /// `--dry-run`: nothing was stored, and `snapshot_id` is all zeros.
    pub dry_run: bool,
}

/// A source path as snapshots record it: absolute, without `.` or `..` parts or a trailing
/// slash (cleaned by its text, as restic does), so that `/srv/data/`, `/srv/./data` and
/// `/srv/data` are one source (and one `forget` group).
pub fn source_path(p: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in std::path::absolute(p)?.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    Ok(out)
}

/// The parent snapshot's root tree from the repository. It may sit only in a pack a garbage
/// mark condemned (left out of this index): then every file is read, nothing else changes.
fn load_parent_tree(
    repo: &Repository,
    index: &crate::repo::Index,
    root: &TreeId,
) -> Result<Option<Tree>> {
    match repo.load_tree(index, root) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.is_key_service() => Err(e),
        Err(e) => {
            tracing::warn!("parent snapshot not usable ({e}): reading every file");
            Ok(None)
        }
    }
}

pub fn backup(
    repo: &Repository,
    mut opts: BackupOptions,
    progress: &Progress,
) -> Result<BackupReport> {
    let start = Instant::now();
    let min_chunk = repo.config().body.chunker.min_size as u64;
    if opts.no_dedup_below > min_chunk {
        return Err(Error::invalid(format!(
            "--no-dedup-below is at most the smallest chunk, {min_chunk} bytes (such a file is one chunk)"
        )));
    }
    let selection = select::Selection::new(&opts.select)?;
    let base = match opts.base.take() {
        Some(base) => base,
        None => DedupBase::load(repo)?,
    };
    let DedupBase {
        index,
        marks,
        segments,
        at: started,
    } = base;
    let cache = opts.parent_cache.as_ref();
    let cached_root = cache.and_then(ParentCache::root);
    let cached = |root: TreeId| cache.and_then(|c| c.load_tree(repo, &root));
    // The folder listings of the parent, and whether they come from this machine's own
    // record of its last backup (the local parent cache) instead of the repository.
    let (parent_tree, local_parent) = match &opts.parent {
        _ if opts.force => (None, false),
        // With a parent snapshot this machine made, its record: its trees are checked against
        // their ids as the repository's are, and reading them costs no session key (on a
        // remote bucket a key record's round trip, with KMS a decryption).
        Some((_, s)) => match cached_root.filter(|r| *r == s.tree).and_then(cached) {
            Some(t) => (Some(t), true),
            None => (load_parent_tree(repo, &index, &s.tree)?, false),
        },
        // Without one (a write-only client), the record will do.
        None => (cached_root.and_then(cached), true),
    };
    let recorder = cache.and_then(ParentCache::recorder);
    let session = if opts.dry_run {
        Session::ephemeral(repo)?
    } else {
        Session::start(repo)?
    };
    let workers = opts.workers.max(1);
    let mut uploader = Uploader::new(repo, opts.uploads.max(1));
    uploader.dry_run = opts.dry_run;
    uploader.checkpoints = opts.checkpoints;
    let recorder = recorder.filter(|_| !opts.dry_run);
    let level = opts.compression.level(repo.config().body.compression_level);
    let pack_size = repo.config().body.pack_size as usize;
    let (tx, rx) = crossbeam_channel::bounded::<stages::ChunkBatch>(2 * workers);
    let (pack_tx, pack_rx) = crossbeam_channel::bounded::<Vec<Job>>(2 * workers);
    let (ids_tx, ids_rx) = crossbeam_channel::unbounded::<Vec<(u64, ChunkId)>>();
    let dedup = Dedup::new(&index);

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
            batch: Vec::new(),
            batch_bytes: 0,
            done: HashMap::new(),
            deferred: 0,
            held: 0,
            buf: Vec::new(),
            progress,
            summary: Summary::default(),
            skipped: Vec::new(),
            salt_below: opts.no_dedup_below,
            select: &selection,
            root_dev: 0,
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
    let uploaded = uploader.finish()?;
    crate::failpoint::hit("backup-before-commit");
    let own: Vec<PackId> = uploaded.all.iter().map(|p| p.pack).collect();
    let used = dedup.used;
    if !opts.dry_run {
        let start = super::marks::BackupStart {
            marks: &marks,
            segments: &segments,
            index: &index,
            at: started,
        };
        repo.check_before_commit(&start, &session.id, &own, &used)?;
    }

    let mut added = progress.bytes_added.load(Ordering::Relaxed) + uploaded.checkpoint_bytes;
    if !opts.dry_run {
        if !uploaded.unlisted.is_empty() {
            let seg = IndexSegment {
                packs: uploaded.unlisted,
                provisional: false,
            };
            let id = repo.save_index_segment(&seg)?;
            added += repo.store().size(FileKind::Index, &id)?;
        }
        crate::failpoint::hit("backup-before-snapshot");
    }
    summary.bytes_added = added;
    summary.duration_secs = start.elapsed().as_secs_f64();
    // Held until the manifest is stored: two backups on one machine never share a place.
    let slot = if opts.dry_run {
        None
    } else {
        repo.next_link()?
    };
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
        writer: repo.signer(),
        chain: slot.as_ref().map(|s| s.link),
        repaired: None,
        layout: Layout::Paths,
        original: None,
    };
    if opts.dry_run {
        return Ok(BackupReport {
            snapshot_id: SnapshotId::default(),
            snapshot,
            skipped,
            dry_run: true,
        });
    }
    let mut reach = super::reach::sessions_of(&index, index.members(&used));
    reach.insert(session.id);
    // The reach names the snapshot by id only, so both are stored at once (one round trip);
    // a manifest that could not be stored takes its reach back (where deletes are allowed).
    let (snapshot_id, json) = repo.manifest_of(&snapshot)?;
    let ((), stored) = super::in_flight::join(
        || repo.save_reach(&snapshot_id, &snapshot, reach),
        || repo.put_manifest(&session, &snapshot_id, &json, true),
    );
    if let Err(e) = stored {
        if let Err(d) = repo.store().delete(FileKind::Reach, &snapshot_id) {
            tracing::warn!(
                "the reach of the snapshot that was not stored stays behind ({d}): it is never read"
            );
        }
        return Err(e);
    }
    if let Some(slot) = slot {
        slot.commit(repo, snapshot_id);
    }
    if let Some(r) = recorder {
        r.commit(&root);
    }
    tracing::info!(snapshot = %snapshot_id, session = %session.id, "snapshot saved");
    Ok(BackupReport {
        snapshot_id,
        snapshot,
        skipped,
        dry_run: false,
    })
}
