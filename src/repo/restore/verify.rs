//! `restore --verify`: every restored file is read back and each stretch of it hashed to the
//! chunk id the snapshot names (no repository reads: the lengths come from the index).

use std::io::Read;

use crate::error::{Error, Result};
use crate::id::ChunkId;
use crate::repo::{Index, Repository};

use super::FileState;

/// Reads the restored file back; an error if it is not, byte for byte, the snapshot's.
pub(super) fn verify_file(repo: &Repository, index: &Index, f: &FileState) -> Result<()> {
    let differs = |why: &str| {
        Error::io(
            f.dest(),
            std::io::Error::other(format!("reads back different from the snapshot ({why})")),
        )
    };
    let mut file = f
        .target
        .open_read(&f.parent, f.name())
        .map_err(|e| Error::io(f.dest(), e))?;
    let mut buf = Vec::new();
    for (i, id) in f.node.content.iter().enumerate() {
        let Some(loc) = index.get(id) else {
            return Err(differs("a chunk is in no index"));
        };
        let len = loc.entry.raw_length as usize;
        buf.clear();
        // A salted small file's chunk is its salt and then the file (docs/FORMAT.md §7).
        if let (0, Some(salt)) = (i, f.node.salt) {
            buf.extend_from_slice(&salt.0);
        }
        let want = len.saturating_sub(buf.len()) as u64;
        (&mut file)
            .take(want)
            .read_to_end(&mut buf)
            .map_err(|e| Error::io(f.dest(), e))?;
        if buf.len() != len {
            return Err(differs("shorter"));
        }
        if ChunkId(repo.chunk_id(&buf)) != *id {
            return Err(differs("other bytes"));
        }
    }
    let mut more = [0u8; 1];
    match file.read(&mut more) {
        Ok(0) => Ok(()),
        Ok(_) => Err(differs("longer")),
        Err(e) => Err(Error::io(f.dest(), e)),
    }
}

/// Verifies the files `which` (indices into `files`) on `threads` threads.
pub(super) fn verify_all(
    repo: &Repository,
    index: &Index,
    files: &[FileState],
    which: &[usize],
    threads: usize,
) -> Vec<(usize, Result<()>)> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let out = std::sync::Mutex::new(Vec::with_capacity(which.len()));
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&i) = which.get(k) else { return };
                let r = verify_file(repo, index, &files[i]);
                out.lock().expect("lock").push((i, r));
            });
        }
    });
    out.into_inner().expect("lock")
}
