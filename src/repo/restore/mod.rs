//! Restore: walk the snapshot's trees, create folders and links, then fetch the needed blobs
//! pack by pack on a few threads (one ranged read per pack) and write each into every file that
//! holds it. Every chunk is verified (commitment, AEAD, HMAC = id) before it is written, files
//! are written under a temporary name and renamed into place only when complete, and a damaged
//! file is named and left out while the rest is restored.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::format::snapshot::{Layout, Snapshot};
use crate::format::tree::{Node, NodeKind};
use crate::id::{PackId, SessionId, TreeId};
use crate::pack::BlobEntry;
use crate::repo::walk::{Budget, TreeWalker, Visits};
use crate::repo::{Index, Repository};

mod beneath;
mod dry_run;
mod fetch;
mod files;
mod output;
mod overwrite;
pub mod select;
mod verify;

pub use output::{FailedPath, RestoreOutput};
pub use overwrite::Overwrite;

use beneath::Beneath;
use fetch::{restore_pack, span_for, split_pack};
pub use files::write_file;
use files::{finish_file, restore_sequentially, restore_symlink, temp_name};

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Paths from the root tree (`dir/file`, see `crate::repo::locate`); none (and no
    /// include pattern) restores everything.
    pub includes: Vec<String>,
    /// Include patterns (case-sensitive, case-insensitive): see [`select`].
    pub include_patterns: (Vec<String>, Vec<String>),
    /// Exclude patterns (case-sensitive, case-insensitive).
    pub exclude_patterns: (Vec<String>, Vec<String>),
    pub overwrite: Overwrite,
    /// Remove what the target's folders hold that the snapshot's do not (only at or below a
    /// source, and only in folders restored whole).
    pub delete: bool,
    /// Read every restored file back and compare it with the snapshot.
    pub verify: bool,
    /// Say what would be restored (and deleted), change nothing.
    pub dry_run: bool,
    pub threads: usize,
}

#[derive(Debug, Default)]
pub struct RestoreProgress {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
}

#[derive(Debug, Default)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    /// Paths not restored, with the error; integrity errors set the exit code.
    pub failed: Vec<(String, Error)>,
    /// Fifos and devices restored.
    pub specials: u64,
    /// Temporary files of an interrupted restore found in the target and removed.
    pub leftovers_removed: u64,
    /// What could not be reproduced (as another user than root, or where the file system
    /// refuses an attribute): one line each, for the summary.
    pub not_restored: Vec<String>,
    /// Existing files kept by `--overwrite`.
    pub kept: u64,
    /// Entries removed by `--delete` (a folder and what it held count one each).
    pub deleted: u64,
    /// Files read back and found equal to the snapshot's (`--verify`).
    pub verified: u64,
}

/// Whether folder `rel` is a source or inside one: `--delete` works only there, since a
/// folder above a source holds more than was backed up.
fn within_source(snap: &Snapshot, rel: &[u8]) -> bool {
    let sources = snap.paths.iter().filter(|p| p.starts_with('/'));
    match snap.layout {
        Layout::Names => !rel.is_empty() || snap.paths.iter().any(|p| p == "/"),
        Layout::Paths => sources.map(|p| p.trim_matches('/').as_bytes()).any(|p| {
            p.is_empty() || rel == p || (rel.starts_with(p) && rel.get(p.len()) == Some(&b'/'))
        }),
    }
}

/// A file being restored: its chunks arrive pack by pack, in any order.
struct FileState {
    rel: String,
    /// Where it goes, as a full path for messages (escaped): errors name the file, not the
    /// temporary name it is written under.
    dest: String,
    /// The same, as every call reaches them: the folder `parent` under the target, by
    /// descriptor (see [`beneath`]).
    target: Arc<Beneath>,
    parent: PathBuf,
    name: std::ffi::OsString,
    tmp_name: std::ffi::OsString,
    /// Set once the temporary file exists, to its inode: each reopen must find the same file
    /// (no swapped link).
    created: Mutex<Option<u64>>,
    node: Node,
    /// Chunk writes still to come; the thread that takes it to zero finishes the file.
    remaining: AtomicUsize,
    /// Written by [`restore_sequentially`], not pack by pack.
    sequential: bool,
    failed: Mutex<Option<Error>>,
}

/// What a pack worker found: each file's outcome, and the packs whose blobs failed. Each
/// worker keeps its own (no lock shared per file), merged when the batch is done.
#[derive(Default)]
struct Done {
    files: Vec<(usize, Result<u64>)>,
    damaged: std::collections::HashSet<PackId>,
}

/// One chunk of one file: where it sits in its pack, and where it goes in the file.
#[derive(Clone, Copy)]
struct Target {
    entry: BlobEntry,
    session: SessionId,
    file: usize,
    offset: u64,
}

/// The files of one batch and the chunks they need, by pack. A batch is restored before the
/// walk plans the next, so that memory follows the batch, not the snapshot's file count.
struct Plan {
    /// Random per restore run: part of every temporary name.
    run: String,
    /// Files planned in earlier batches (numbers temporary names across the run).
    numbered: usize,
    files: Vec<FileState>,
    packs: HashMap<PackId, Vec<Target>>,
    /// Chunks planned in this batch.
    targets: usize,
}

/// A batch is restored once it holds this many files or chunks: about 1 KiB each while
/// planned, so a restore of a million small files holds a batch's worth (tens of MiB), and a
/// batch of small files still spans enough pack reads to keep every thread busy.
const BATCH_FILES: usize = 16_384;
const BATCH_TARGETS: usize = 262_144;

impl Plan {
    fn full(&self) -> bool {
        self.files.len() >= BATCH_FILES || self.targets >= BATCH_TARGETS
    }
}

/// Restores a snapshot pack by pack: each pack's needed blobs come in one ranged read (one
/// request per pack on S3, not one per chunk), are verified, and are written at their offsets
/// into every file that holds them. Files are written under temporary names and renamed into
/// place when their last chunk lands.
pub fn restore(
    repo: &Repository,
    index: &Index,
    snap: &Snapshot,
    opts: &RestoreOptions,
    progress: &RestoreProgress,
) -> Result<RestoreReport> {
    let root = &snap.tree;
    let filter = select::Filter::new(
        &opts.includes,
        (&opts.include_patterns.0, &opts.include_patterns.1),
        (&opts.exclude_patterns.0, &opts.exclude_patterns.1),
    )?;
    if opts.dry_run {
        return dry_run::dry_run(repo, index, snap, opts, &filter);
    }
    std::fs::create_dir_all(&opts.target).map_err(|e| Error::io(opts.target.display(), e))?;
    // Everything below happens through descriptors of folders inside the target.
    let target =
        Arc::new(Beneath::open(&opts.target).map_err(|e| Error::io(opts.target.display(), e))?);
    // A rerun cleans what an interrupted restore left (each existing folder as it is met).
    target.sweep(Path::new(""));
    let mut report = RestoreReport::default();
    // Each folder, and whether to remove it again if it stays empty (made only on the way
    // to included paths that matched nothing in it).
    let mut dirs: Vec<(PathBuf, Node, bool)> = Vec::new();
    // `--delete`: folders restored whole, with the names their listing holds.
    let mut deletions: Vec<(PathBuf, std::collections::HashSet<std::ffi::OsString>)> = Vec::new();
    // Hard links: the first name of each (device, inode) is restored, the others linked to it
    // once every file is in place.
    let mut first_names: HashMap<(u64, u64), (PathBuf, std::ffi::OsString)> = HashMap::new();
    let mut links: Vec<(String, PathBuf, Node, (PathBuf, std::ffi::OsString))> = Vec::new();
    let mut run = [0u8; 6];
    crate::crypto::random::fill(&mut run)?;
    let mut plan = Plan {
        run: hex::encode(run),
        numbered: 0,
        files: Vec::new(),
        packs: HashMap::new(),
        targets: 0,
    };
    // Packs found damaged in any batch.
    let mut damaged = std::collections::HashSet::new();

    // Each folder where its path puts it: a tree reached by two paths is restored twice.
    let mut walker =
        TreeWalker::new(repo, index, Visits::PerPath).with_budget(Budget::for_snapshot(snap));
    // Each folder's context: its path in the snapshot, its place under the target, and
    // whether it is restored whole.
    let root = (*root, (Vec::new(), PathBuf::new(), !filter.partial()));
    walker.walk(vec![root], |_, (rel, dir, whole), loaded, next| {
        let tree = match loaded {
            Ok(t) => t,
            Err(e) => {
                let shown = if rel.is_empty() {
                    "/".to_string()
                } else {
                    String::from_utf8_lossy(rel).into_owned()
                };
                report.failed.push((shown, e));
                return Ok(());
            }
        };
        if opts.delete && *whole && within_source(snap, rel) {
            let names = tree.nodes.iter().map(|n| n.name.to_os()).collect();
            deletions.push((dir.clone(), names));
        }
        for node in tree.nodes {
            let mut child_rel = rel.clone();
            if !child_rel.is_empty() {
                child_rel.push(b'/');
            }
            child_rel.extend_from_slice(&node.name.0);
            let (restore_it, descend) = filter.decide(&child_rel, node.kind == NodeKind::Dir);
            if !descend {
                continue;
            }
            let dest = dir.join(node.name.as_os());
            let shown = String::from_utf8_lossy(&child_rel).into_owned();
            let fail = |e| {
                let at = target.shown(&dest);
                Error::io(
                    crate::human::escape_bytes(at.as_os_str().as_encoded_bytes()),
                    e,
                )
            };
            // `--overwrite`: what is there already may stay.
            if restore_it && node.kind != NodeKind::Dir && opts.overwrite != Overwrite::Always {
                match target.existing(dir, node.name.as_os()) {
                    Ok(Some(st)) if !opts.overwrite.replaces(&st, &node) => {
                        report.kept += 1;
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        report.failed.push((shown, fail(e)));
                        continue;
                    }
                }
            }
            match node.kind {
                NodeKind::Dir => {
                    let created = match target.mkdir(dir, node.name.as_os()) {
                        Ok(c) => c,
                        Err(e) => {
                            report.failed.push((shown, fail(e)));
                            continue;
                        }
                    };
                    if let Some(sub) = node.subtree {
                        next.push((sub, (child_rel, dest.clone(), restore_it)));
                    }
                    // Made private (0700) so no other user can swap anything inside while the
                    // restore runs; every folder gets its own mode at the end, including the
                    // folders above an `--include`d path.
                    dirs.push((dest, node, created && !restore_it));
                }
                NodeKind::Symlink if restore_it => match restore_symlink(&target, dir, &node) {
                    Ok(()) => report.symlinks += 1,
                    Err(e) => report.failed.push((shown, e)),
                },
                NodeKind::Fifo | NodeKind::CharDevice | NodeKind::BlockDevice if restore_it => {
                    match target.special(dir, &node) {
                        Ok(()) => report.specials += 1,
                        Err(e) => report.failed.push((shown, fail(e))),
                    }
                }
                NodeKind::File if restore_it && node.links > 1 => {
                    let key = (node.device, node.inode);
                    match first_names.get(&key) {
                        Some(first) => links.push((shown, dir.clone(), node, first.clone())),
                        None => {
                            first_names.insert(key, (dir.clone(), node.name.to_os()));
                            let at = (target.clone(), dir.clone());
                            if let Err(e) = plan_file(index, &mut plan, shown.clone(), at, node) {
                                report.failed.push((shown, e));
                            }
                        }
                    }
                }
                NodeKind::File if restore_it => {
                    let at = (target.clone(), dir.clone());
                    if let Err(e) = plan_file(index, &mut plan, shown.clone(), at, node) {
                        report.failed.push((shown, e));
                    }
                }
                _ => {}
            }
            // Checked per entry: one folder may hold a million files.
            if plan.full() {
                restore_batch(
                    repo,
                    index,
                    &mut plan,
                    opts,
                    progress,
                    &mut report,
                    &mut damaged,
                );
            }
        }
        Ok(())
    })?;
    restore_batch(
        repo,
        index,
        &mut plan,
        opts,
        progress,
        &mut report,
        &mut damaged,
    );
    // Packs that failed here stop counting for deduplication (docs/FORMAT.md §14d).
    if let Err(e) = repo.record_damage(&damaged) {
        tracing::warn!("could not record the damaged packs: {e}");
    }

    for (shown, parent, node, (first_parent, first)) in links {
        let name = node.name.to_os();
        match target.hard_link(&first_parent, &first, &parent, &name) {
            Ok(()) => report.files += 1,
            Err(e) => {
                let at = target.shown(&parent.join(&name));
                let at = crate::human::escape_bytes(at.as_os_str().as_encoded_bytes());
                report.failed.push((shown, Error::io(at, e)));
            }
        }
    }

    for (dir, names) in deletions {
        let shown = |name: &std::ffi::OsStr| {
            let at = target.shown(&dir.join(name));
            crate::human::escape_bytes(at.as_os_str().as_encoded_bytes())
        };
        let entries = match target.list(&dir) {
            Ok(e) => e,
            Err(e) => {
                report
                    .failed
                    .push((shown("".as_ref()), Error::io(shown("".as_ref()), e)));
                continue;
            }
        };
        for name in entries.into_iter().filter(|n| !names.contains(n)) {
            match target.remove_all(&dir, &name) {
                Ok(n) => report.deleted += n,
                Err(e) => report
                    .failed
                    .push((shown(&name), Error::io(shown(&name), e))),
            }
        }
    }

    // Folder times last (writing files into a folder changes its mtime), deepest first.
    dirs.sort_by_key(|(p, _, _)| std::cmp::Reverse(p.as_os_str().as_bytes().len()));
    for (dest, node, if_empty) in dirs {
        if if_empty && target.remove_if_empty(&dest) {
            continue;
        }
        report.dirs += 1;
        let _ = target.finish_dir(&dest, &node);
    }
    report.not_restored = target.lost.summary();
    report.leftovers_removed = target
        .lost
        .leftovers
        .load(std::sync::atomic::Ordering::Relaxed);
    report.failed.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(report)
}

/// Restores the files planned so far and empties the plan: files without chunks are complete
/// already, files whose listings disagree on their chunks' lengths are written one verified
/// chunk after another, and the rest pack span by pack span on `opts.threads` threads.
fn restore_batch(
    repo: &Repository,
    index: &Index,
    plan: &mut Plan,
    opts: &RestoreOptions,
    progress: &RestoreProgress,
    report: &mut RestoreReport,
    damaged: &mut std::collections::HashSet<PackId>,
) {
    let files = std::mem::take(&mut plan.files);
    plan.numbered += files.len();
    plan.targets = 0;
    let mut done = Done::default();
    for (i, f) in files.iter().enumerate() {
        if f.sequential {
            let r = restore_sequentially(repo, index, f, progress);
            done.files.push((i, r));
        } else if f.node.content.is_empty() {
            done.files.push((i, finish_file(f, None, progress)));
        }
    }
    let bytes = plan
        .packs
        .values()
        .flatten()
        .map(|t| t.entry.length as u64)
        .sum();
    let span = span_for(bytes, opts.threads);
    let jobs = std::mem::take(&mut plan.packs)
        .into_iter()
        .flat_map(|(pack, targets)| {
            split_pack(targets, span)
                .into_iter()
                .map(move |t| (pack, t))
        })
        .collect::<Vec<_>>();
    let queue = Mutex::new(jobs);
    let files = &files;
    let workers: Vec<Done> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..opts.threads.max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Done::default();
                    loop {
                        let job = queue.lock().expect("lock").pop();
                        let Some((pack, targets)) = job else {
                            return mine;
                        };
                        restore_pack(repo, index, files, &pack, targets, progress, &mut mine);
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    for w in workers {
        done.files.extend(w.files);
        done.damaged.extend(w.damaged);
    }
    damaged.extend(done.damaged);
    let mut restored = Vec::new();
    for (i, r) in done.files {
        match r {
            Ok(n) => {
                report.files += 1;
                report.bytes += n;
                restored.push(i);
            }
            // Reported once, by the caller (the command lists them and counts them).
            Err(e) => report.failed.push((files[i].rel.clone(), e)),
        }
    }
    if opts.verify {
        for (i, r) in verify::verify_all(repo, index, files, &restored, opts.threads) {
            match r {
                Ok(()) => report.verified += 1,
                Err(e) => report.failed.push((files[i].rel.clone(), e)),
            }
        }
    }
}

/// Creates the file's temporary (sparse, full-length) copy and adds its chunks to the plan.
fn plan_file(
    index: &Index,
    plan: &mut Plan,
    rel: String,
    (target, parent): (Arc<Beneath>, PathBuf),
    node: Node,
) -> Result<()> {
    let mut targets = Vec::with_capacity(node.content.len());
    let mut offset = 0u64;
    // Listings that disagree on a chunk's length (one is forged or corrupt): the offsets
    // cannot be planned from them, so the file is written chunk by chunk instead.
    let mut sequential = false;
    for id in &node.content {
        let loc = index.get(id).ok_or_else(|| {
            Error::integrity(
                format!("file {}", crate::human::escape(&rel)),
                format!("chunk {} is in no index", id.short()),
            )
        })?;
        sequential |= !index.lengths_agree(id);
        targets.push((loc.pack, loc.session, loc.entry, offset));
        offset += loc.entry.raw_length as u64;
    }
    // A salted small file's one chunk is its salt and then the file (docs/FORMAT.md §7).
    if offset != node.size + node.salt_len() && !sequential {
        return Err(Error::integrity(
            format!("file {}", crate::human::escape(&rel)),
            format!(
                "its chunks hold {offset} bytes, the tree says {}",
                node.size
            ),
        ));
    }
    if sequential {
        targets.clear();
    }
    let name = node.name.to_os();
    let tmp_name = temp_name(&name, &plan.run, plan.numbered + plan.files.len());
    let shown = |n: &std::ffi::OsStr| {
        let p = target.shown(&parent.join(n));
        crate::human::escape_bytes(p.as_os_str().as_encoded_bytes())
    };
    let dest = shown(&name);
    let targets_len = targets.len();
    plan.targets += targets_len;
    let file = plan.files.len();
    for (pack, session, entry, offset) in targets {
        plan.packs.entry(pack).or_default().push(Target {
            entry,
            session,
            file,
            offset,
        });
    }
    plan.files.push(FileState {
        rel,
        dest,
        target,
        parent,
        name,
        tmp_name,
        created: Mutex::new(None),
        remaining: AtomicUsize::new(targets_len),
        sequential,
        node,
        failed: Mutex::new(None),
    });
    Ok(())
}

/// Finds the node at a snapshot-relative path (`a/b/c`); the empty path is the root folder.
pub fn find_node(
    repo: &Repository,
    index: &Index,
    root: &TreeId,
    path: &str,
) -> Result<Option<Node>> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let mut tree_id = *root;
    for (i, part) in parts.iter().enumerate() {
        let tree = repo.load_tree(index, &tree_id)?;
        let Some(node) = tree.find(part.as_bytes()) else {
            return Err(Error::NotFound(format!("{path} in the snapshot")));
        };
        if i + 1 == parts.len() {
            return Ok(Some(node.clone()));
        }
        match node.subtree {
            Some(s) if node.kind == NodeKind::Dir => tree_id = s,
            _ => return Err(Error::NotFound(format!("{path} in the snapshot"))),
        }
    }
    Ok(None)
}
