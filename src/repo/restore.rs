//! Restore: walk the snapshot's trees, create folders and links, and rebuild files on a few
//! threads. Every chunk is verified (commitment, AEAD, HMAC = id) before it is written, files
//! are written under a temporary name and renamed into place only when complete, and a damaged
//! file is named and left out while the rest is restored.

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use filetime::FileTime;

use super::{Index, Repository};
use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind};
use crate::id::Id;
use crate::pack::BlobType;

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

struct FileJob {
    rel: String,
    dest: PathBuf,
    node: Node,
}

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
    let report = Mutex::new(RestoreReport::default());
    let mut dirs: Vec<(PathBuf, Node)> = Vec::new();
    let threads = opts.threads.max(1);
    let (tx, rx) = crossbeam_channel::bounded::<FileJob>(threads * 4);

    std::thread::scope(|s| -> Result<()> {
        for _ in 0..threads {
            let rx = rx.clone();
            let report = &report;
            s.spawn(move || {
                for job in rx {
                    match restore_file(repo, index, &job.dest, &job.node, progress) {
                        Ok(n) => {
                            let mut r = report.lock().expect("lock");
                            r.files += 1;
                            r.bytes += n;
                        }
                        Err(e) => {
                            tracing::error!(path = %job.rel, "not restored: {e}");
                            report.lock().expect("lock").failed.push((job.rel, e));
                        }
                    }
                }
            });
        }
        drop(rx);
        let mut stack: Vec<(Id, Vec<u8>, PathBuf)> = vec![(*root, Vec::new(), opts.target.clone())];
        while let Some((tree_id, rel, dir)) = stack.pop() {
            let tree = match repo.load_tree(index, &tree_id) {
                Ok(t) => t,
                Err(e) => {
                    let shown = if rel.is_empty() {
                        "/".to_string()
                    } else {
                        String::from_utf8_lossy(&rel).into_owned()
                    };
                    report.lock().expect("lock").failed.push((shown, e));
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
                            report
                                .lock()
                                .expect("lock")
                                .failed
                                .push((shown, Error::io(dest.display(), e)));
                            continue;
                        }
                        if let Some(sub) = node.subtree {
                            stack.push((sub, child_rel, dest.clone()));
                        }
                        if restore_it {
                            dirs.push((dest, node));
                        }
                    }
                    NodeKind::Symlink if restore_it => match restore_symlink(&dest, &node) {
                        Ok(()) => report.lock().expect("lock").symlinks += 1,
                        Err(e) => report.lock().expect("lock").failed.push((shown, e)),
                    },
                    NodeKind::File if restore_it => {
                        tx.send(FileJob {
                            rel: shown,
                            dest,
                            node,
                        })
                        .map_err(|_| Error::invalid("restore workers stopped"))?;
                    }
                    _ => {}
                }
            }
        }
        drop(tx);
        Ok(())
    })?;

    // Folder times last (writing files into a folder changes its mtime), deepest first.
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.as_os_str().as_bytes().len()));
    let mut report = report.into_inner().expect("lock");
    for (dest, node) in dirs {
        report.dirs += 1;
        let _ = std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(node.mode));
        let t = FileTime::from_unix_time(node.mtime_sec, node.mtime_nsec);
        let _ = filetime::set_file_times(&dest, t, t);
    }
    report.failed.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(report)
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

/// Writes a file's chunks to a temporary name, verifies its length, then renames it into
/// place. All-zero chunks become holes, so sparse files stay sparse.
fn restore_file(
    repo: &Repository,
    index: &Index,
    dest: &Path,
    node: &Node,
    progress: &RestoreProgress,
) -> Result<u64> {
    let tmp = temp_name(dest)?;
    let res = (|| -> Result<u64> {
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(tmp.display(), e))?;
        let mut written = 0u64;
        for id in &node.content {
            let data = repo.load_blob(index, id, BlobType::Data)?;
            write_sparse(&mut f, &data).map_err(|e| Error::io(tmp.display(), e))?;
            written += data.len() as u64;
            progress
                .bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        if written != node.size {
            return Err(Error::integrity(
                format!("file {}", node.name.lossy()),
                format!("restored {written} bytes, the tree says {}", node.size),
            ));
        }
        f.set_len(written)
            .map_err(|e| Error::io(tmp.display(), e))?;
        f.set_permissions(std::fs::Permissions::from_mode(node.mode))
            .map_err(|e| Error::io(tmp.display(), e))?;
        let t = FileTime::from_unix_time(node.mtime_sec, node.mtime_nsec);
        filetime::set_file_handle_times(&f, Some(t), Some(t))
            .map_err(|e| Error::io(tmp.display(), e))?;
        drop(f);
        std::fs::rename(&tmp, dest).map_err(|e| Error::io(dest.display(), e))?;
        Ok(written)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    } else {
        progress.files.fetch_add(1, Ordering::Relaxed);
    }
    res
}

/// Writes `data` at the current position, seeking over all-zero 4 KiB blocks so holes stay
/// holes (the caller sets the final length, which covers a trailing hole).
fn write_sparse(f: &mut std::fs::File, data: &[u8]) -> std::io::Result<()> {
    const BLOCK: usize = 4096;
    let mut pending: Option<usize> = None; // start of a run of non-zero blocks
    let mut pos = 0;
    while pos < data.len() {
        let end = (pos + BLOCK).min(data.len());
        let zero = data[pos..end].iter().all(|&b| b == 0);
        match (zero, pending) {
            (false, None) => pending = Some(pos),
            (true, Some(start)) => {
                f.write_all(&data[start..pos])?;
                pending = None;
            }
            _ => {}
        }
        if zero {
            f.seek(SeekFrom::Current((end - pos) as i64))?;
        }
        pos = end;
    }
    if let Some(start) = pending {
        f.write_all(&data[start..])?;
    }
    Ok(())
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
