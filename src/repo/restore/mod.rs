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
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::id::{PackId, SessionId, TreeId};
use crate::pack::BlobEntry;
use crate::repo::walk::{Budget, TreeWalker, Visits};
use crate::repo::{Index, Repository};

mod beneath;
mod fetch;
mod files;
mod output;

pub use output::{FailedPath, RestoreOutput};

use beneath::Beneath;
use fetch::restore_pack;
pub use files::write_file;
use files::{finish_file, restore_sequentially, restore_symlink, temp_name};

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Snapshot-relative paths (`dir/file`); empty restores everything.
    pub includes: Vec<String>,
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
}

fn included(rel: &[u8], includes: &[Vec<u8>]) -> (bool, bool) {
    // (restore this node, descend into it)
    if includes.is_empty() {
        return (true, true);
    }
    let mut restore = false;
    let mut descend = false;
    for inc in includes {
        let under =
            rel == inc.as_slice() || (rel.starts_with(inc) && rel.get(inc.len()) == Some(&b'/'));
        let above = inc.starts_with(rel) && inc.get(rel.len()) == Some(&b'/');
        restore |= under;
        descend |= under || above;
    }
    (restore, descend)
}

/// A file being restored: its chunks arrive pack by pack, in any order.
struct FileState {
    rel: String,
    /// Where it goes and its temporary name, as full paths for messages (escaped).
    dest: String,
    tmp: String,
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

/// What the pack workers found: each file's outcome, and the packs whose blobs failed.
#[derive(Default)]
struct Done {
    files: Mutex<Vec<(usize, Result<u64>)>>,
    damaged: Mutex<std::collections::HashSet<PackId>>,
}

/// One chunk of one file: where it sits in its pack, and where it goes in the file.
#[derive(Clone, Copy)]
struct Target {
    entry: BlobEntry,
    session: SessionId,
    file: usize,
    offset: u64,
}

struct Plan {
    /// Random per restore run: part of every temporary name.
    run: String,
    files: Vec<FileState>,
    packs: HashMap<PackId, Vec<Target>>,
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
    std::fs::create_dir_all(&opts.target).map_err(|e| Error::io(opts.target.display(), e))?;
    // Everything below happens through descriptors of folders inside the target.
    let target =
        Arc::new(Beneath::open(&opts.target).map_err(|e| Error::io(opts.target.display(), e))?);
    // A rerun cleans what an interrupted restore left (each existing folder as it is met).
    target.sweep(Path::new(""));
    let includes: Vec<Vec<u8>> = opts
        .includes
        .iter()
        .map(|s| s.trim_matches('/').as_bytes().to_vec())
        .filter(|s| !s.is_empty())
        .collect();
    let mut report = RestoreReport::default();
    let mut dirs: Vec<(PathBuf, Node)> = Vec::new();
    // Hard links: the first name of each (device, inode) is restored, the others linked to it
    // once every file is in place.
    let mut first_names: HashMap<(u64, u64), (PathBuf, std::ffi::OsString)> = HashMap::new();
    let mut links: Vec<(String, PathBuf, Node, (PathBuf, std::ffi::OsString))> = Vec::new();
    let mut run = [0u8; 6];
    crate::crypto::random::fill(&mut run)?;
    let mut plan = Plan {
        run: hex::encode(run),
        files: Vec::new(),
        packs: HashMap::new(),
    };

    // Each folder where its path puts it: a tree reached by two paths is restored twice.
    let mut walker =
        TreeWalker::new(repo, index, Visits::PerPath).with_budget(Budget::for_snapshot(snap));
    // Each folder's context: its path in the snapshot, and its place under the target.
    let root = (*root, (Vec::new(), PathBuf::new()));
    walker.walk(vec![root], |_, (rel, dir), loaded, next| {
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
        for node in tree.nodes {
            let mut child_rel = rel.clone();
            if !child_rel.is_empty() {
                child_rel.push(b'/');
            }
            child_rel.extend_from_slice(&node.name.0);
            let (restore_it, descend) = included(&child_rel, &includes);
            if !descend {
                continue;
            }
            let dest = dir.join(node.name.as_os());
            let shown = String::from_utf8_lossy(&child_rel).into_owned();
            match node.kind {
                NodeKind::Dir => {
                    if let Err(e) = target.mkdir(dir, node.name.as_os()) {
                        let at = target.shown(&dest);
                        let at = crate::human::escape_bytes(at.as_os_str().as_encoded_bytes());
                        report.failed.push((shown, Error::io(at, e)));
                        continue;
                    }
                    if let Some(sub) = node.subtree {
                        next.push((sub, (child_rel, dest.clone())));
                    }
                    // Made private (0700) so no other user can swap anything inside while the
                    // restore runs; every folder gets its own mode at the end, including the
                    // folders above an `--include`d path.
                    dirs.push((dest, node));
                }
                NodeKind::Symlink if restore_it => match restore_symlink(&target, dir, &node) {
                    Ok(()) => report.symlinks += 1,
                    Err(e) => report.failed.push((shown, e)),
                },
                NodeKind::Fifo | NodeKind::CharDevice | NodeKind::BlockDevice if restore_it => {
                    match target.special(dir, &node) {
                        Ok(()) => report.specials += 1,
                        Err(e) => {
                            let at = target.shown(&dest);
                            let at = crate::human::escape_bytes(at.as_os_str().as_encoded_bytes());
                            report.failed.push((shown, Error::io(at, e)));
                        }
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
        }
        Ok(())
    })?;

    // Files without chunks are complete already; files whose listings disagree on their
    // chunks' lengths are written one verified chunk after another.
    let files = &plan.files;
    let done = Done::default();
    for (i, f) in files.iter().enumerate() {
        if f.sequential {
            let r = restore_sequentially(repo, index, f, progress);
            done.files.lock().expect("lock").push((i, r));
        } else if f.node.content.is_empty() {
            done.files
                .lock()
                .expect("lock")
                .push((i, finish_file(f, None, progress)));
        }
    }
    let queue = Mutex::new(plan.packs.into_iter().collect::<Vec<_>>());
    std::thread::scope(|s| {
        for _ in 0..opts.threads.max(1) {
            s.spawn(|| loop {
                let Some((pack, targets)) = queue.lock().expect("lock").pop() else {
                    return;
                };
                restore_pack(repo, index, files, &pack, targets, progress, &done);
            });
        }
    });
    // Packs that failed here stop counting for deduplication (docs/FORMAT.md §14d).
    let damaged = done.damaged.into_inner().expect("lock");
    if let Err(e) = repo.record_damage(&damaged) {
        tracing::warn!("could not record the damaged packs: {e}");
    }
    for (i, r) in done.files.into_inner().expect("lock") {
        match r {
            Ok(n) => {
                report.files += 1;
                report.bytes += n;
            }
            // Reported once, by the caller (the command lists them and counts them).
            Err(e) => report.failed.push((files[i].rel.clone(), e)),
        }
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

    // Folder times last (writing files into a folder changes its mtime), deepest first.
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.as_os_str().as_bytes().len()));
    for (dest, node) in dirs {
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
    let tmp_name = temp_name(&name, &plan.run, plan.files.len());
    let shown = |n: &std::ffi::OsStr| {
        let p = target.shown(&parent.join(n));
        crate::human::escape_bytes(p.as_os_str().as_encoded_bytes())
    };
    let (dest, tmp) = (shown(&name), shown(&tmp_name));
    let targets_len = targets.len();
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
        tmp,
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

#[cfg(test)]
mod tests {
    use super::included;

    #[test]
    fn include_rules() {
        let inc = vec![b"a/b".to_vec()];
        assert_eq!(included(b"a", &inc), (false, true));
        assert_eq!(included(b"a/b", &inc), (true, true));
        assert_eq!(included(b"a/b/c", &inc), (true, true));
        assert_eq!(included(b"a/bc", &inc), (false, false));
        assert_eq!(included(b"x", &inc), (false, false));
        assert_eq!(included(b"x", &[]), (true, true));
    }
}
