//! Restore: walk the snapshot's trees, create folders and links, then fetch the needed blobs
//! pack by pack on a few threads (one ranged read per pack) and write each into every file that
//! holds it. Every chunk is verified (commitment, AEAD, HMAC = id) before it is written, files
//! are written under a temporary name and renamed into place only when complete, and a damaged
//! file is named and left out while the rest is restored.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use filetime::FileTime;

use super::{Index, Repository};
use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind};
use crate::id::Id;
use crate::pack::{BlobEntry, BlobType};
use crate::store::FileKind;

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
    dest: PathBuf,
    tmp: PathBuf,
    /// Inode of the temporary file: each reopen must find the same file (no swapped link).
    ino: u64,
    node: Node,
    /// Chunk writes still to come; the thread that takes it to zero finishes the file.
    remaining: AtomicUsize,
    failed: Mutex<Option<Error>>,
}

/// One chunk of one file: where it sits in its pack, and where it goes in the file.
#[derive(Clone, Copy)]
struct Target {
    entry: BlobEntry,
    session: Id,
    file: usize,
    offset: u64,
}

struct Plan {
    files: Vec<FileState>,
    packs: HashMap<Id, Vec<Target>>,
}

/// Restores a snapshot pack by pack: each pack's needed blobs come in one ranged read (one
/// request per pack on S3, not one per chunk), are verified, and are written at their offsets
/// into every file that holds them. Files are written under temporary names and renamed into
/// place when their last chunk lands.
pub fn restore(
    repo: &Repository,
    index: &Index,
    root: &Id,
    opts: &RestoreOptions,
    progress: &RestoreProgress,
) -> Result<RestoreReport> {
    std::fs::create_dir_all(&opts.target).map_err(|e| Error::io(opts.target.display(), e))?;
    let includes: Vec<Vec<u8>> = opts
        .includes
        .iter()
        .map(|s| s.trim_matches('/').as_bytes().to_vec())
        .filter(|s| !s.is_empty())
        .collect();
    let mut report = RestoreReport::default();
    let mut dirs: Vec<(PathBuf, Node)> = Vec::new();
    let mut plan = Plan {
        files: Vec::new(),
        packs: HashMap::new(),
    };

    // Folder by folder level, each level's trees read at once.
    let mut level: Vec<(Id, Vec<u8>, PathBuf)> = vec![(*root, Vec::new(), opts.target.clone())];
    let mut next_level = Vec::new();
    while !level.is_empty() {
        // Read in batches: a level's trees are held in memory together.
        for batch in level.chunks(super::TREE_BATCH) {
            let ids: Vec<Id> = batch.iter().map(|(id, _, _)| *id).collect();
            for ((_, rel, dir), loaded) in batch.iter().zip(repo.load_trees(index, &ids)) {
                let tree = match loaded {
                    Ok(t) => t,
                    Err(e) => {
                        let shown = if rel.is_empty() {
                            "/".to_string()
                        } else {
                            String::from_utf8_lossy(rel).into_owned()
                        };
                        report.failed.push((shown, e));
                        continue;
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
                            if let Err(e) = make_dir(&dest) {
                                report.failed.push((shown, Error::io(dest.display(), e)));
                                continue;
                            }
                            if let Some(sub) = node.subtree {
                                next_level.push((sub, child_rel, dest.clone()));
                            }
                            if restore_it {
                                dirs.push((dest, node));
                            }
                        }
                        NodeKind::Symlink if restore_it => match restore_symlink(&dest, &node) {
                            Ok(()) => report.symlinks += 1,
                            Err(e) => report.failed.push((shown, e)),
                        },
                        NodeKind::File if restore_it => {
                            if let Err(e) = plan_file(index, &mut plan, shown.clone(), dest, node) {
                                report.failed.push((shown, e));
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        level = std::mem::take(&mut next_level);
    }

    // Files without chunks are complete already.
    let files = &plan.files;
    let done = Mutex::new(Vec::<(usize, Result<u64>)>::new());
    for (i, f) in files.iter().enumerate() {
        if f.node.content.is_empty() {
            done.lock()
                .expect("lock")
                .push((i, finish_file(f, progress)));
        }
    }
    let queue = Mutex::new(plan.packs.into_iter().collect::<Vec<_>>());
    std::thread::scope(|s| {
        for _ in 0..opts.threads.max(1) {
            s.spawn(|| loop {
                let Some((pack, targets)) = queue.lock().expect("lock").pop() else {
                    return;
                };
                restore_pack(repo, files, &pack, targets, progress, &done);
            });
        }
    });
    for (i, r) in done.into_inner().expect("lock") {
        match r {
            Ok(n) => {
                report.files += 1;
                report.bytes += n;
            }
            Err(e) => {
                tracing::error!(path = %files[i].rel, "not restored: {e}");
                report.failed.push((files[i].rel.clone(), e));
            }
        }
    }

    // Folder times last (writing files into a folder changes its mtime), deepest first.
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.as_os_str().as_bytes().len()));
    for (dest, node) in dirs {
        report.dirs += 1;
        let _ =
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(safe_mode(node.mode)));
        let t = FileTime::from_unix_time(node.mtime_sec, node.mtime_nsec);
        let _ = filetime::set_file_times(&dest, t, t);
    }
    report.failed.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(report)
}

/// Creates the file's temporary (sparse, full-length) copy and adds its chunks to the plan.
fn plan_file(index: &Index, plan: &mut Plan, rel: String, dest: PathBuf, node: Node) -> Result<()> {
    let mut targets = Vec::with_capacity(node.content.len());
    let mut offset = 0u64;
    for id in &node.content {
        let loc = index.get(id).ok_or_else(|| {
            Error::integrity(
                format!("file {rel}"),
                format!("chunk {} is in no index", id.short()),
            )
        })?;
        targets.push((loc.pack, loc.session, loc.entry, offset));
        offset += loc.entry.raw_length as u64;
    }
    if offset != node.size {
        return Err(Error::integrity(
            format!("file {rel}"),
            format!(
                "its chunks hold {offset} bytes, the tree says {}",
                node.size
            ),
        ));
    }
    let tmp = temp_name(&dest)?;
    let f = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| Error::io(tmp.display(), e))?
    };
    f.set_len(node.size)
        .map_err(|e| Error::io(tmp.display(), e))?;
    let ino = {
        use std::os::unix::fs::MetadataExt;
        f.metadata().map_err(|e| Error::io(tmp.display(), e))?.ino()
    };
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
        ino,
        remaining: AtomicUsize::new(node.content.len()),
        node,
        failed: Mutex::new(None),
    });
    Ok(())
}

/// Reads the span of one pack that holds the needed blobs, verifies each blob once, and
/// writes it to every place it belongs.
fn restore_pack(
    repo: &Repository,
    files: &[FileState],
    pack: &Id,
    mut targets: Vec<Target>,
    progress: &RestoreProgress,
    done: &Mutex<Vec<(usize, Result<u64>)>>,
) {
    targets.sort_by_key(|t| (t.entry.offset, t.entry.id, t.file, t.offset));
    let start = targets.first().map_or(0, |t| t.entry.offset as u64);
    let end = targets
        .iter()
        .map(|t| t.entry.offset as u64 + t.entry.length as u64)
        .max()
        .unwrap_or(0);
    let span = if end - start > super::MAX_PACK {
        Err(Error::integrity(
            crate::store::object_name(FileKind::Pack, pack),
            format!(
                "index places blobs across {} bytes: more than any pack",
                end - start
            ),
        ))
    } else {
        repo.store()
            .get_range(FileKind::Pack, pack, start, end - start)
    };
    let mut i = 0;
    while i < targets.len() {
        let t = targets[i];
        let mut j = i;
        while j < targets.len() && targets[j].entry == t.entry {
            j += 1;
        }
        let plain = match &span {
            Ok(bytes) => {
                let a = (t.entry.offset as u64 - start) as usize;
                repo.open_blob(
                    pack,
                    &t.session,
                    &t.entry,
                    &bytes[a..a + t.entry.length as usize],
                )
            }
            Err(Error::NotFound(_)) => Err(Error::integrity(
                crate::store::object_name(FileKind::Pack, pack),
                "indexed pack is missing from the store",
            )),
            Err(e) => Err(clone_err(e)),
        };
        for target in &targets[i..j] {
            let f = &files[target.file];
            let r = match &plain {
                Ok(data) => write_at_sparse(&f.tmp, f.ino, target.offset, data)
                    .map_err(|e| Error::io(f.tmp.display(), e))
                    .map(|()| {
                        progress
                            .bytes
                            .fetch_add(data.len() as u64, Ordering::Relaxed)
                    })
                    .map(|_| ()),
                Err(e) => Err(clone_err(e)),
            };
            if let Err(e) = r {
                f.failed.lock().expect("lock").get_or_insert(e);
            }
            if f.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                done.lock()
                    .expect("lock")
                    .push((target.file, finish_file(f, progress)));
            }
        }
        i = j;
    }
}

/// The same error for every file it touches (errors hold no secrets, so copying is fine).
fn clone_err(e: &Error) -> Error {
    match e {
        Error::Integrity { object, reason } => Error::Integrity {
            object: object.clone(),
            reason: reason.clone(),
        },
        Error::KeyDenied {
            key,
            operation,
            reason,
        } => Error::KeyDenied {
            key: key.clone(),
            operation: operation.clone(),
            reason: reason.clone(),
        },
        Error::KeyUnavailable {
            key,
            operation,
            reason,
        } => Error::KeyUnavailable {
            key: key.clone(),
            operation: operation.clone(),
            reason: reason.clone(),
        },
        Error::NotFound(m) => Error::NotFound(m.clone()),
        e => Error::Unavailable(e.to_string()),
    }
}

/// Permission bits to restore. Setuid and setgid are dropped: restore does not restore owners,
/// so a setuid file of some user restored by root would become a setuid-root program.
fn safe_mode(mode: u32) -> u32 {
    mode & 0o1777
}

/// Renames a complete file into place with its mode and times, or removes a failed one.
fn finish_file(f: &FileState, progress: &RestoreProgress) -> Result<u64> {
    if let Some(e) = f.failed.lock().expect("lock").take() {
        let _ = std::fs::remove_file(&f.tmp);
        return Err(e);
    }
    let res = (|| {
        std::fs::set_permissions(
            &f.tmp,
            std::fs::Permissions::from_mode(safe_mode(f.node.mode)),
        )
        .map_err(|e| Error::io(f.tmp.display(), e))?;
        let t = FileTime::from_unix_time(f.node.mtime_sec, f.node.mtime_nsec);
        filetime::set_file_times(&f.tmp, t, t).map_err(|e| Error::io(f.tmp.display(), e))?;
        std::fs::rename(&f.tmp, &f.dest).map_err(|e| Error::io(f.dest.display(), e))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&f.tmp);
    }
    res?;
    progress.files.fetch_add(1, Ordering::Relaxed);
    Ok(f.node.size)
}

/// Writes `data` at `offset`, skipping all-zero 4 KiB blocks: the file was created at full
/// length, so skipped blocks stay holes and sparse files stay sparse.
fn write_at_sparse(path: &Path, ino: u64, offset: u64, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
    const BLOCK: usize = 4096;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    if f.metadata()?.ino() != ino {
        return Err(std::io::Error::other(
            "temporary file was replaced during restore",
        ));
    }
    let mut run: Option<usize> = None;
    let mut pos = 0;
    while pos < data.len() {
        let end = (pos + BLOCK).min(data.len());
        let zero = data[pos..end].iter().all(|&b| b == 0);
        match (zero, run) {
            (false, None) => run = Some(pos),
            (true, Some(s)) => {
                f.write_all_at(&data[s..pos], offset + s as u64)?;
                run = None;
            }
            _ => {}
        }
        pos = end;
    }
    if let Some(s) = run {
        f.write_all_at(&data[s..], offset + s as u64)?;
    }
    Ok(())
}

/// Creates a folder without following a symlink or keeping a file found in its place, so
/// nothing is ever written outside the target through a link.
fn make_dir(dest: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => std::fs::remove_file(dest)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir(dest)
}

fn restore_symlink(dest: &Path, node: &Node) -> Result<()> {
    let target = node
        .target
        .as_ref()
        .ok_or_else(|| Error::integrity("tree", "symlink without target"))?;
    if std::fs::symlink_metadata(dest).is_ok() {
        std::fs::remove_file(dest).map_err(|e| Error::io(dest.display(), e))?;
    }
    std::os::unix::fs::symlink(target.as_os(), dest).map_err(|e| Error::io(dest.display(), e))?;
    let t = FileTime::from_unix_time(node.mtime_sec, node.mtime_nsec);
    let _ = filetime::set_symlink_file_times(dest, t, t);
    Ok(())
}

fn temp_name(dest: &Path) -> Result<PathBuf> {
    let mut r = [0u8; 6];
    crate::crypto::random::fill(&mut r)?;
    let mut name = std::ffi::OsString::from(".");
    name.push(dest.file_name().unwrap_or_default());
    name.push(format!(".custody-{}", hex::encode(r)));
    Ok(dest.with_file_name(name))
}

/// Streams one file's verified plaintext to `out` (used by `dump`).
pub fn write_file(
    repo: &Repository,
    index: &Index,
    node: &Node,
    out: &mut dyn Write,
) -> Result<u64> {
    let mut n = 0u64;
    for id in &node.content {
        let data = repo.load_blob(index, id, BlobType::Data)?;
        out.write_all(&data).map_err(|e| Error::io("output", e))?;
        n += data.len() as u64;
    }
    if n != node.size {
        return Err(Error::integrity(
            format!("file {}", node.name.lossy()),
            format!("read {n} bytes, the tree says {}", node.size),
        ));
    }
    Ok(n)
}

/// Finds the node at a snapshot-relative path (`a/b/c`); the empty path is the root folder.
pub fn find_node(repo: &Repository, index: &Index, root: &Id, path: &str) -> Result<Option<Node>> {
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
