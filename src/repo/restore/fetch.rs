//! Fetching for restore: one ranged read per pack, each blob verified once and written into
//! every file that holds it.

use std::borrow::Cow;
use std::sync::atomic::Ordering;

use crate::error::Error;
use crate::id::{PackId, SessionId};
use crate::pack::{BlobType, PackKey};
use crate::repo::{BlobLocation, Index, Repository};
use crate::store::FileKind;

use super::batch::Done;
use super::files::{finish_file, open_for_write, write_at_sparse};
use super::{FileState, RestoreProgress, Target};

/// A pack worker's state: what it found, and the buffers it reuses from read to read (a
/// fresh 6 MB buffer per read cost a page fault per 4 KiB).
#[derive(Default)]
pub(super) struct Worker {
    pub(super) done: Done,
    span: Vec<u8>,
    scratch: Vec<u8>,
}

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
    worker: &mut Worker,
) {
    targets.sort_by_key(|t| (t.entry.offset, t.entry.id, t.file, t.offset));
    let (start, end) = span_of(&targets);
    let mut span = if end - start > crate::repo::MAX_PACK {
        Err(Error::integrity(
            crate::store::object_name(FileKind::Pack, pack),
            format!(
                "index places blobs across {} bytes: more than any pack",
                end - start
            ),
        ))
    } else {
        let buf = std::mem::take(&mut worker.span);
        tracing::debug!(%pack, start, length = end - start, "pack span read");
        repo.store()
            .get_range_into(FileKind::Pack, pack, start, end - start, buf)
    };
    let span_ok = span.is_ok();
    let Worker { done, scratch, .. } = worker;
    // The span's blobs share a session: its pack key is derived once.
    let mut keys: Vec<(SessionId, PackKey)> = Vec::new();
    let groups = blob_groups(&targets);
    let lone = lone_groups(&targets, &groups);
    for (g, run) in groups.iter().enumerate() {
        let (i, j) = (run.start, run.end);
        let t = targets[i];
        let plain = match &mut span {
            // Opened where it lies (no copy per blob) when no other listing in the span
            // overlaps its bytes: an open rewrites them (plaintext, or zeroes when it fails),
            // and a forged listing (a genuine blob's place, longer) must spoil no neighbour.
            Ok(bytes) if lone[g] => {
                let a = (t.entry.offset as u64 - start) as usize;
                let key = match keys.iter().position(|(s, _)| *s == t.session) {
                    Some(n) => Ok(n),
                    None => repo.pack_key(&t.session, pack).map(|k| {
                        keys.push((t.session, k));
                        keys.len() - 1
                    }),
                };
                key.and_then(|n| {
                    repo.open_blob_in_place(
                        &keys[n].1,
                        &t.entry,
                        &mut bytes[a..a + t.entry.length as usize],
                        scratch,
                    )
                })
                .map(Cow::Borrowed)
            }
            Ok(bytes) => {
                let a = (t.entry.offset as u64 - start) as usize;
                let sealed = &bytes[a..a + t.entry.length as usize];
                repo.open_blob(pack, &t.session, &t.entry, sealed)
                    .map(Cow::Owned)
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
            done.damaged.insert(*pack);
        }
        let plain = match plain {
            Err(e) if e.is_integrity() || matches!(e, Error::KeyDenied { .. }) => {
                let skip = span_ok.then_some(BlobLocation {
                    pack: *pack,
                    session: t.session,
                    entry: t.entry,
                });
                repo.load_blob_except(index, t.entry.id, BlobType::Data, skip)
                    .ok()
                    .filter(|d| d.len() == t.entry.raw_length as usize)
                    .map(Cow::Owned)
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
                    .and_then(|file| {
                        let only = f.node.content.len() == 1;
                        write_at_sparse(&file, target.offset, data, only).map(|()| file)
                    })
                    .map_err(|e| Error::io(f.dest(), e))
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
                    f.failed.lock().expect("lock").get_or_insert(Box::new(e));
                    None
                }
            };
            if f.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                done.files
                    .push((target.file, finish_file(f, open, progress)));
            }
        }
    }
    if let Ok(span) = span {
        worker.span = span;
    }
}

/// The runs of targets (sorted by offset) that need the same blob: each is opened once.
fn blob_groups(targets: &[Target]) -> Vec<std::ops::Range<usize>> {
    let mut groups = Vec::new();
    let mut i = 0;
    while i < targets.len() {
        let mut j = i + 1;
        while j < targets.len() && targets[j].entry == targets[i].entry {
            j += 1;
        }
        groups.push(i..j);
        i = j;
    }
    groups
}

/// For each group, whether its bytes overlap no other group's (groups in offset order).
/// Genuine packs never overlap; only a forged or corrupt listing does.
fn lone_groups(targets: &[Target], groups: &[std::ops::Range<usize>]) -> Vec<bool> {
    let bytes = |r: &std::ops::Range<usize>| {
        let e = &targets[r.start].entry;
        (e.offset as u64, e.offset as u64 + e.length as u64)
    };
    let mut end_before = 0;
    groups
        .iter()
        .enumerate()
        .map(|(g, r)| {
            let (start, end) = bytes(r);
            let alone = end_before <= start && groups.get(g + 1).is_none_or(|n| end <= bytes(n).0);
            end_before = end_before.max(end);
            alone
        })
        .collect()
}

/// The shortest span a pack's share of a batch is cut into on a remote store (see
/// [`span_for`]; local folders use [`LOCAL_SPAN`]). It sets a many-files restore's memory:
/// two batches of eight threads each hold one read's buffer (4 MiB made 100,000 files on
/// s3s-fs peak at 184-189 MiB, 2 MiB at 150-154, in the same time, on moto too).
pub(super) const MIN_SPAN: u64 = 2 << 20;

/// How many stored bytes one read covers in a batch of `bytes` on `threads` threads. From a
/// `remote` store, about half a thread's share, so that each thread gets about two reads,
/// started largest first: fewer, longer reads cost fewer requests (some servers read the
/// whole object for each range) but hold a longer buffer per thread; no read is shorter than
/// [`MIN_SPAN`]. From a local folder, [`LOCAL_SPAN`].
pub(super) fn span_for(bytes: u64, threads: usize, remote: bool) -> u64 {
    match remote {
        true => (bytes / (2 * threads.max(1) as u64)).max(MIN_SPAN),
        false => LOCAL_SPAN,
    }
}

/// The span of a read from a local folder: a read costs only a system call there, while
/// every thread of every running batch holds a buffer as long as its longest read (with 4 MiB
/// reads, those buffers were a third of a many-files restore's memory). A longer blob is read
/// on its own (chunks are at most 1 MiB unless the repository was made otherwise).
const LOCAL_SPAN: u64 = 1 << 20;

/// Where in its pack a run of targets lies: from its first blob's start to its last blob's
/// end (the bytes it is read as).
fn span_of(run: &[Target]) -> (u64, u64) {
    let start = run.iter().map(|t| t.entry.offset as u64).min().unwrap_or(0);
    let end = run
        .iter()
        .map(|t| t.entry.offset as u64 + t.entry.length as u64)
        .max()
        .unwrap_or(0);
    (start, end)
}

/// The stored bytes a run of targets (from [`split_pack`]) is read as.
pub(super) fn span_bytes(run: &[Target]) -> u64 {
    let (start, end) = span_of(run);
    end - start
}

/// Cuts one pack's targets (any order) into runs whose blobs span at most `span` bytes, in
/// pack order; the targets of one blob stay together (it is verified once), and a blob longer
/// than the span is a run of its own.
pub(super) fn split_pack(mut targets: Vec<Target>, span: u64) -> Vec<Vec<Target>> {
    targets.sort_by_key(|t| (t.entry.offset, t.entry.id, t.file, t.offset));
    let mut runs: Vec<Vec<Target>> = Vec::new();
    let mut start = 0u64;
    for t in targets {
        let end = t.entry.offset as u64 + t.entry.length as u64;
        match runs.last_mut() {
            Some(run)
                if run.last().is_some_and(|l| l.entry == t.entry)
                    || end.saturating_sub(start) <= span =>
            {
                run.push(t)
            }
            _ => {
                start = t.entry.offset as u64;
                runs.push(vec![t]);
            }
        }
    }
    runs
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::Compression;
    use crate::id::{BlobId, Id, SessionId};
    use crate::pack::{BlobEntry, BlobType};

    fn target(n: u8, offset: u32, length: u32, file: usize) -> Target {
        Target {
            entry: BlobEntry {
                id: BlobId(Id([n; 32])),
                blob_type: BlobType::Data,
                compression: Compression::None,
                offset,
                length,
                raw_length: length,
            },
            session: SessionId(Id([0; 32])),
            file,
            offset: 0,
        }
    }

    #[test]
    fn packs_split_into_bounded_spans_keeping_each_blob_whole() {
        let mib = 1 << 20;
        let span = 4 * mib as u64;
        // Out of order; blob 2 is needed by two files; blob 4 alone is longer than a span.
        let runs = split_pack(
            vec![
                target(3, 3 * mib, 2 * mib, 3),
                target(1, 0, mib, 1),
                target(2, mib, 2 * mib, 2),
                target(2, mib, 2 * mib, 0),
                target(4, 6 * mib, 5 * mib, 4),
                target(5, 11 * mib, 10, 5),
            ],
            span,
        );
        let shape: Vec<Vec<(u8, usize)>> = runs
            .iter()
            .map(|r| r.iter().map(|t| (t.entry.id.0 .0[0], t.file)).collect())
            .collect();
        assert_eq!(
            shape,
            vec![
                vec![(1, 1), (2, 0), (2, 2)],
                vec![(3, 3)],
                vec![(4, 4)],
                vec![(5, 5)]
            ]
        );
        for r in &runs {
            let start = r[0].entry.offset as u64;
            let end = r
                .iter()
                .map(|t| (t.entry.offset + t.entry.length) as u64)
                .max();
            assert!(r.len() == 1 || end.unwrap() - start <= span);
        }
        assert!(split_pack(Vec::new(), span).is_empty());
        // A batch large enough for every thread is read pack by pack.
        assert_eq!(span_for(16 * mib as u64, 4, true), MIN_SPAN);
        assert_eq!(span_for(512 * mib as u64, 4, true), 64 * mib as u64);
        // Local reads are short whatever the batch: each thread's buffer stays small.
        assert_eq!(span_for(512 * mib as u64, 4, false), LOCAL_SPAN);
        assert_eq!(span_bytes(&runs[0]), 3 * mib as u64);
        assert_eq!(span_bytes(&[]), 0);
    }
}
