//! The file-system side of restore: folders and links created without following links,
//! files written under temporary names (sparse where the data is zero) and renamed into place
//! with their modes and times once complete.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use filetime::FileTime;

use crate::error::{Error, Result};
use crate::format::tree::Node;
use crate::pack::BlobType;
use crate::repo::{Index, Repository};

use super::{FileState, RestoreProgress};

/// Permission bits to restore. Setuid and setgid are dropped: restore does not restore owners,
/// so a setuid file of some user restored by root would become a setuid-root program.
pub(super) fn safe_mode(mode: u32) -> u32 {
    mode & 0o1777
}

/// Renames a complete file into place with its mode and times, or removes a failed one.
pub(super) fn finish_file(f: &FileState, progress: &RestoreProgress) -> Result<u64> {
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
pub(super) fn write_at_sparse(
    path: &Path,
    ino: u64,
    offset: u64,
    data: &[u8],
) -> std::io::Result<()> {
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
pub(super) fn make_dir(dest: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => std::fs::remove_file(dest)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir(dest)
}

pub(super) fn restore_symlink(dest: &Path, node: &Node) -> Result<()> {
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

pub(super) fn temp_name(dest: &Path) -> Result<PathBuf> {
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
        let data = repo.load_blob(index, id.into(), BlobType::Data)?;
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
