//! The file-system side of restore: folders and links created without following links,
//! files written under temporary names (sparse where the data is zero) and renamed into place
//! with their modes and times once complete.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;

use filetime::FileTime;

use crate::error::{Error, Result};
use crate::format::tree::Node;
use crate::pack::BlobType;
use crate::repo::{Index, Repository};

use super::beneath::Beneath;
use super::{FileState, RestoreProgress};

/// Renames a complete file into place with its mode and times, or removes a failed one.
/// `open` is the file as its last write left it, if still open (saves a reopen); a file with
/// no chunks is created here.
pub(super) fn finish_file(
    f: &FileState,
    open: Option<std::fs::File>,
    progress: &RestoreProgress,
) -> Result<u64> {
    let created = f.created.lock().expect("lock").is_some();
    if let Some(e) = f.failed.lock().expect("lock").take() {
        if created {
            let _ = f.target.unlink(&f.parent, &f.tmp_name());
        }
        return Err(*e);
    }
    let res = (|| {
        let file = match open {
            Some(file) => file,
            None => open_for_write(f).map_err(|e| Error::io(f.dest(), e))?,
        };
        f.target
            .apply(&file, &f.node)
            .map_err(|e| Error::io(f.dest(), e))?;
        let t = FileTime::from_unix_time(f.node.mtime_sec, f.node.mtime_nsec);
        filetime::set_file_handle_times(&file, Some(t), Some(t))
            .map_err(|e| Error::io(f.dest(), e))?;
        drop(file);
        f.target
            .rename(&f.parent, &f.tmp_name(), f.name())
            .map_err(|e| Error::io(f.dest(), e))
    })();
    if res.is_err() {
        let _ = f.target.unlink(&f.parent, &f.tmp_name());
    }
    res?;
    progress.files.fetch_add(1, Ordering::Relaxed);
    Ok(f.node.size)
}

/// Opens the file's temporary copy for writing. The first call creates it (never following a
/// link, never reusing an existing file) at its full length, so unwritten blocks stay holes
/// (a file of one chunk gets its length from its one write, see [`write_at_sparse`]);
/// later calls reopen it and check it is still the same inode (not something swapped in).
/// Files are created as their first chunk arrives, not when the restore is planned: one
/// open per single-chunk file instead of three.
pub(super) fn open_for_write(f: &FileState) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::MetadataExt;
    let mut created = f.created.lock().expect("lock");
    match *created {
        None => {
            let file = f.target.create(&f.parent, &f.tmp_name())?;
            if f.node.content.len() > 1 {
                file.set_len(f.node.size)?;
            }
            // Only a file written in several pieces is opened again.
            let ino = if f.node.content.len() > 1 {
                file.metadata()?.ino()
            } else {
                0
            };
            *created = Some(ino);
            Ok(file)
        }
        Some(ino) => {
            drop(created);
            let file = f.target.reopen(&f.parent, &f.tmp_name())?;
            if file.metadata()?.ino() != ino {
                return Err(std::io::Error::other(
                    "temporary file was replaced during restore",
                ));
            }
            Ok(file)
        }
    }
}

/// Writes `data` at `offset`, skipping all-zero 4 KiB blocks: the file was created at full
/// length, so skipped blocks stay holes and sparse files stay sparse. `only` says this is the
/// file's one write (a file of one chunk, created empty): the file is then extended to its
/// end if that is a hole.
pub(super) fn write_at_sparse(
    f: &std::fs::File,
    offset: u64,
    data: &[u8],
    only: bool,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    const BLOCK: usize = 4096;
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
    match run {
        Some(s) => f.write_all_at(&data[s..], offset + s as u64),
        None if only && !data.is_empty() => f.set_len(offset + data.len() as u64),
        None => Ok(()),
    }
}

/// Creates symlink `node` in the folder `parent` under the target (whatever file or link was
/// in its place is replaced; nothing is followed).
pub(super) fn restore_symlink(target: &Beneath, parent: &Path, node: &Node) -> Result<()> {
    let to = node
        .target
        .as_ref()
        .ok_or_else(|| Error::integrity("tree", "symlink without target"))?;
    let t = super::beneath::timespec(node.mtime_sec, node.mtime_nsec);
    target
        .symlink(
            parent,
            node.name.as_os(),
            to.as_os(),
            t,
            Some((node.uid, node.gid)),
        )
        .map_err(|e| {
            let at = target.shown(&parent.join(node.name.as_os()));
            Error::io(
                crate::human::escape_bytes(at.as_os_str().as_encoded_bytes()),
                e,
            )
        })
}

/// Writes a file one verified chunk after another, from whichever listed copy verifies (as
/// `dump` reads), and finishes it; for files whose listings disagree on chunk lengths, so
/// that no offset rests on a length a forged listing declared.
pub(super) fn restore_sequentially(
    repo: &Repository,
    index: &Index,
    f: &FileState,
    progress: &RestoreProgress,
) -> Result<u64> {
    let written = (|| -> Result<std::fs::File> {
        let file = open_for_write(f).map_err(|e| Error::io(f.dest(), e))?;
        let mut offset = 0u64;
        for (i, id) in f.node.content.iter().enumerate() {
            let chunk = repo.load_blob(index, id.into(), BlobType::Data)?;
            let data = f.node.file_bytes(i == 0, &chunk).map_err(|why| {
                Error::integrity(format!("file {}", crate::human::escape(&f.rel)), why)
            })?;
            let only = f.node.content.len() == 1;
            write_at_sparse(&file, offset, data, only).map_err(|e| Error::io(f.dest(), e))?;
            offset += data.len() as u64;
            progress
                .bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        if offset != f.node.size {
            return Err(Error::integrity(
                format!("file {}", crate::human::escape(&f.rel)),
                format!(
                    "its chunks hold {offset} bytes, the tree says {}",
                    f.node.size
                ),
            ));
        }
        Ok(file)
    })();
    match written {
        Ok(file) => finish_file(f, Some(file), progress),
        Err(e) => {
            f.failed.lock().expect("lock").get_or_insert(Box::new(e));
            finish_file(f, None, progress)
        }
    }
}

/// The temporary name of a file being restored: `.NAME.custody-<run tag>-<n>`, where the tag
/// is random per restore run and `n` numbers the files (unique without a random draw each).
/// NAME is cut to its first 160 bytes, so the whole stays within the 255 bytes a file name
/// may have, however long the file's own name is.
pub(super) fn temp_name(own: &std::ffi::OsStr, run: &str, n: usize) -> std::ffi::OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let own = own.as_bytes();
    let mut name = b".".to_vec();
    name.extend_from_slice(&own[..own.len().min(160)]);
    name.extend_from_slice(format!(".custody-{run}-{n}").as_bytes());
    std::ffi::OsString::from_vec(name)
}

/// Streams one file's verified plaintext to `out` (used by `dump`).
pub fn write_file(
    repo: &Repository,
    index: &Index,
    node: &Node,
    out: &mut dyn Write,
) -> Result<u64> {
    let mut n = 0u64;
    for (i, id) in node.content.iter().enumerate() {
        let chunk = repo.load_blob(index, id.into(), BlobType::Data)?;
        let data = node.file_bytes(i == 0, &chunk).map_err(|why| {
            Error::integrity(
                format!("file {}", crate::human::escape_bytes(&node.name.0)),
                why,
            )
        })?;
        out.write_all(data).map_err(|e| Error::io("output", e))?;
        n += data.len() as u64;
    }
    if n != node.size {
        return Err(Error::integrity(
            format!("file {}", crate::human::escape_bytes(&node.name.0)),
            format!("read {n} bytes, the tree says {}", node.size),
        ));
    }
    Ok(n)
}
