//! Fetching for restore: one ranged read per pack, each blob verified once and written into
//! every file that holds it.

use std::sync::atomic::Ordering;

use crate::error::Error;
use crate::id::PackId;
use crate::pack::BlobType;
use crate::repo::{Index, Repository};
use crate::store::FileKind;

use super::files::{finish_file, open_for_write, write_at_sparse};
use super::{FileState, RestoreProgress, Target};

/// Reads the span of one pack that holds the needed blobs, verifies each blob once, and
/// writes it to every place it belongs. A blob whose copy here does not verify (or a pack
/// that cannot be read) is fetched from another pack the index lists it in, if any.
pub(super) fn restore_pack(
    repo: &Repository,
    index: &Index,
    files: &[FileState],
    pack: &PackId,
    mut targets: Vec<Target>,
    progress: &RestoreProgress,
    done: &super::Done,
) {
    targets.sort_by_key(|t| (t.entry.offset, t.entry.id, t.file, t.offset));
    let start = targets.first().map_or(0, |t| t.entry.offset as u64);
    let end = targets
        .iter()
        .map(|t| t.entry.offset as u64 + t.entry.length as u64)
        .max()
        .unwrap_or(0);
    let span = if end - start > crate::repo::MAX_PACK {
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
        // Another listed copy (or this one, read on its own when the span read failed). The
        // file's offsets were planned from the first listing's lengths, so a copy of another
        // length fails the file rather than shifting its bytes.
        if plain.as_ref().is_err_and(Error::is_integrity) {
            done.damaged.lock().expect("lock").insert(*pack);
        }
        let plain = match plain {
            Err(e) if e.is_integrity() || matches!(e, Error::KeyDenied { .. }) => {
                let skip = span.is_ok().then_some((*pack, t.session));
                repo.load_blob_except(index, t.entry.id, BlobType::Data, skip)
                    .ok()
                    .filter(|d| d.len() == t.entry.raw_length as usize)
                    .ok_or(e)
            }
            other => other,
        };
        for target in &targets[i..j] {
            let f = &files[target.file];
            // A salted small file: its one chunk is the salt and then the file.
            let bytes = plain.as_ref().map_err(clone_err).and_then(|d| {
                f.node.file_bytes(target.offset == 0, d).map_err(|why| {
                    Error::integrity(format!("file {}", crate::human::escape(&f.rel)), why)
                })
            });
            let r = match bytes {
                Ok(data) => open_for_write(f)
                    .and_then(|file| write_at_sparse(&file, target.offset, data).map(|()| file))
                    .map_err(|e| Error::io(&f.dest, e))
                    .inspect(|_| {
                        progress
                            .bytes
                            .fetch_add(data.len() as u64, Ordering::Relaxed);
                    }),
                Err(e) => Err(e),
            };
            let open = match r {
                Ok(file) => Some(file),
                Err(e) => {
                    f.failed.lock().expect("lock").get_or_insert(e);
                    None
                }
            };
            if f.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                done.files
                    .lock()
                    .expect("lock")
                    .push((target.file, finish_file(f, open, progress)));
            }
        }
        i = j;
    }
}

/// The same error for every file it touches (errors hold no secrets, so copying is fine).
pub(super) fn clone_err(e: &Error) -> Error {
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
