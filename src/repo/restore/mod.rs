//! Restore: walk the snapshot's trees, create folders and links, and plan files in batches;
//! each batch fetches its blobs pack by pack on a few threads (one or a few ranged reads per
//! pack), two batches at once while the walk plans the next, and writes each blob into every
//! file that holds it. Every chunk is verified (commitment, AEAD, HMAC = id) before it is
//! written, files are written under a temporary name and renamed into place only when
//! complete, and a damaged file is named and left out while the rest is restored.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::format::snapshot::{Layout, Snapshot};
use crate::format::tree::{Node, NodeKind};
use crate::id::{SessionId, TreeId};
use crate::pack::BlobEntry;
use crate::repo::walk::{Budget, TreeWalker, Visits};
use crate::repo::{Index, Repository};

mod batch;
mod beneath;
mod dry_run;
mod fetch;
mod files;
mod output;
mod overwrite;
pub mod select;
mod start;
mod verify;

pub use output::{FailedPath, RestoreOutput};
pub use overwrite::Overwrite;
pub use start::start;

use batch::{merge, plan_file, restore_batch, Plan, RUNNING_BATCHES};
use beneath::Beneath;
use files::restore_symlink;
pub use files::write_file;

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

/// A further name of a file with several: where it is shown, its folder, its node, and the
/// folder and name it is linked to.
type Link = (String, Arc<Path>, Node, (Arc<Path>, std::ffi::OsString));

/// A file being restored: its chunks arrive pack by pack, in any order.
struct FileState {
    rel: String,
    /// Where it goes, as every call reaches it: the folder `parent` under the target, by
    /// descriptor (see [`beneath`]); the folder's files share its path.
    target: Arc<Beneath>,
    parent: Arc<Path>,
    /// Numbers its temporary name (see [`FileState::tmp_name`]).
    number: usize,
    /// Set once the temporary file exists, to its inode: each reopen must find the same file
    /// (no swapped link).
    created: Mutex<Option<u64>>,
    node: Node,
    /// Chunk writes still to come; the thread that takes it to zero finishes the file.
    remaining: AtomicUsize,
    /// Written by [`restore_sequentially`], not pack by pack.
    sequential: bool,
    /// Boxed: failures are rare, and an error in place took 80 bytes of every file.
    failed: Mutex<Option<Box<Error>>>,
}

/// Names and messages are made when needed, not kept per file: a batch holds tens of
/// thousands of files, and each string kept cost about 100 bytes of each.
impl FileState {
    fn name(&self) -> &std::ffi::OsStr {
        self.node.name.as_os()
    }

    /// The name it is written under until complete (see [`files::temp_name`]).
    fn tmp_name(&self) -> std::ffi::OsString {
        files::temp_name(self.name(), self.target.run(), self.number)
    }

    /// Where it goes, as a full path for messages (escaped): errors name the file, not the
    /// temporary name it is written under.
    fn dest(&self) -> String {
        let at = self.target.shown(&self.parent.join(self.name()));
        crate::human::escape_bytes(at.as_os_str().as_encoded_bytes())
    }
}

/// One chunk of one file: where it sits in its pack, and where it goes in the file.
#[derive(Clone, Copy)]
struct Target {
    entry: BlobEntry,
    session: SessionId,
    file: usize,
    offset: u64,
}

/// Restores a snapshot pack by pack: each pack's needed blobs come in one ranged read (one
/// request per pack on S3, not one per chunk), are verified, and are written at their offsets
/// into every file that holds them, batch after batch (see [`batch`]). Files are written under
/// temporary names and renamed into place when their last chunk lands.
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
    // Random per run: part of every temporary name.
    let mut run = [0u8; 6];
    crate::crypto::random::fill(&mut run)?;
    let run = hex::encode(run);
    let target =
        Beneath::open(&opts.target, &run).map_err(|e| Error::io(opts.target.display(), e))?;
    let target = Arc::new(target);
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
    let mut first_names: HashMap<(u64, u64), (Arc<Path>, std::ffi::OsString)> = HashMap::new();
    let mut links: Vec<Link> = Vec::new();
    let mut plan = Plan::default();
    // Packs found damaged in any batch.
    let mut damaged = std::collections::HashSet::new();

    // Each folder where its path puts it: a tree reached by two paths is restored twice.
    let mut walker =
        TreeWalker::new(repo, index, Visits::PerPath).with_budget(Budget::for_snapshot(snap));
    // Each folder's context: its path in the snapshot, its place under the target, and
    // whether it is restored whole.
    let root = (
        *root,
        (
            Vec::new(),
            Arc::<Path>::from(Path::new("")),
            !filter.partial(),
        ),
    );
    std::thread::scope(|s| -> Result<()> {
        // The batches restored while the walk plans the next: two at once, so that one
        // batch's last pack reads overlap the next one's first.
        let mut running: std::collections::VecDeque<
            std::thread::ScopedJoinHandle<'_, batch::Outcome>,
        > = std::collections::VecDeque::new();
        let walked = walker.walk(vec![root], |_, (rel, dir, whole), loaded, next| {
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
                deletions.push((dir.to_path_buf(), names));
            }
            for node in tree.nodes {
                let child_rel = child_path(rel, &node.name.0);
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
                            next.push((sub, (child_rel, Arc::from(dest.as_path()), restore_it)));
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
                                if let Err(e) = plan_file(index, &mut plan, shown.clone(), at, node)
                                {
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
                // Checked per entry: one folder may hold a million files. The oldest batch is
                // done first: at most RUNNING_BATCHES are restored while the next is planned.
                if plan.full() {
                    let batch = plan.take(false);
                    make_room(&mut running, &mut report, &mut damaged);
                    running.push_back(
                        s.spawn(move || restore_batch(repo, index, batch, opts, progress)),
                    );
                }
            }
            Ok(())
        });
        // The last batch (unless the walk failed) while the others finish.
        make_room(&mut running, &mut report, &mut damaged);
        let last = walked
            .is_ok()
            .then(|| restore_batch(repo, index, plan.take(true), opts, progress));
        for before in running.drain(..) {
            merge(joined(before), &mut report, &mut damaged);
        }
        walked?;
        if let Some(last) = last {
            merge(last, &mut report, &mut damaged);
        }
        Ok(())
    })?;
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

/// The snapshot-relative path (`a/b`) of `name` in the folder at `rel`.
fn child_path(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut child = rel.to_vec();
    if !child.is_empty() {
        child.push(b'/');
    }
    child.extend_from_slice(name);
    child
}

/// Waits for the oldest running batch when [`RUNNING_BATCHES`] run, and adds its outcome to the
/// report: room for the next.
fn make_room(
    running: &mut std::collections::VecDeque<std::thread::ScopedJoinHandle<'_, batch::Outcome>>,
    report: &mut RestoreReport,
    damaged: &mut std::collections::HashSet<crate::id::PackId>,
) {
    if running.len() >= RUNNING_BATCHES {
        if let Some(before) = running.pop_front() {
            merge(joined(before), report, damaged);
        }
    }
}

/// A scoped thread's result; its panic goes on in the caller.
fn joined<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
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
