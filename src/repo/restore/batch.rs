//! Batches: the walk plans files until a batch is full, and each batch is restored on its own
//! thread (the last on the walk's) while the walk plans the next, two at once
//! ([`RUNNING_BATCHES`]), so that reading trees and creating folders overlap the pack reads,
//! and memory follows three batches, not the snapshot's file count.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::format::tree::Node;
use crate::id::PackId;
use crate::repo::{Index, Repository};

use super::beneath::Beneath;
use super::fetch::{restore_pack, span_bytes, span_for, split_pack, Worker};
use super::files::{finish_file, restore_sequentially};
use super::{verify, FileState, RestoreOptions, RestoreProgress, RestoreReport, Target};

/// The files of the batch being planned and the chunks they need, by pack.
#[derive(Default)]
pub(super) struct Plan {
    /// Files planned in earlier batches (numbers temporary names across the run).
    numbered: usize,
    files: Vec<FileState>,
    packs: HashMap<PackId, Vec<Target>>,
    /// Chunks planned in this batch.
    targets: usize,
}

/// A batch to restore, taken from the plan.
pub(super) struct Batch {
    files: Vec<FileState>,
    packs: HashMap<PackId, Vec<Target>>,
}

/// What a batch restored: its share of the report, and the packs whose blobs failed.
pub(super) type Outcome = (RestoreReport, HashSet<PackId>);

/// What a pack worker found: each file's outcome, and the packs whose blobs failed. Each
/// worker keeps its own (no lock shared per file), merged when the batch is done.
#[derive(Default)]
pub(super) struct Done {
    pub(super) files: Vec<(usize, Result<u64>)>,
    pub(super) damaged: HashSet<PackId>,
}

/// A batch is restored once it holds this many files or chunks: about half a KiB each while
/// planned, so a restore of a million small files holds three batches' worth (about 50 MiB),
/// and a batch of small files still spans enough pack reads to keep every thread busy. Each
/// batch reads the packs it needs on its own: a batch is not cut inside the packs the walk is
/// still in ([`OPEN_TAIL`]), but one holding chunks that files everywhere share is read by
/// every batch. (At 16,384 files and cut anywhere, a restore of a million small files read
/// 2.5 times the repository.)
const BATCH_FILES: usize = 32_768;
const BATCH_TARGETS: usize = 524_288;

/// Batches restored at once while the walk plans the next: with two, the last pack reads of
/// one overlap the first of the next instead of leaving threads idle between them.
pub(super) const RUNNING_BATCHES: usize = 2;

/// A batch is cut after its files but those needing a pack that its last this many files
/// need: the walk is most often still inside those packs (a backup packs files in the order
/// it walks them), so their files go to the next batch, which then reads each such pack once
/// instead of both batches reading it whole (blob order in a pack is shuffled). A backup's
/// packers (one per core) each fill a pack from every packer-th run of 256 chunks, so the
/// tail covers the runs of 16 packers.
const OPEN_TAIL: usize = 16 * 256;

impl Plan {
    pub(super) fn full(&self) -> bool {
        self.files.len() >= BATCH_FILES || self.targets >= BATCH_TARGETS
    }

    /// Takes what is planned so far as a batch and starts the next: all of it when `last`,
    /// else all but the files that need a pack the walk is still in (see [`OPEN_TAIL`]),
    /// which start the next batch. Those are at most half the batch's files and chunks, or
    /// none are kept back.
    pub(super) fn take(&mut self, last: bool) -> Batch {
        let held = match last {
            true => None,
            false => self.in_open_packs(),
        };
        let Some(held) = held.filter(|h| !h.is_empty()) else {
            self.numbered += self.files.len();
            self.targets = 0;
            return Batch {
                files: std::mem::take(&mut self.files),
                packs: std::mem::take(&mut self.packs),
            };
        };
        // Each file's new place: in the batch or kept, in the order planned. The kept ones
        // (at most half) are moved out and the batch's stay where they are: the plan is
        // never copied whole.
        let mut counts = [0, 0]; // kept, in the batch
        let place: Vec<(bool, usize)> = (0..self.files.len())
            .map(|i| {
                let in_batch = !held.contains(&i);
                let at = &mut counts[in_batch as usize];
                *at += 1;
                (in_batch, *at - 1)
            })
            .collect();
        let mut in_batch = place.iter().map(|&(b, _)| b);
        let kept: Vec<FileState> = self
            .files
            .extract_if(.., |_| in_batch.next() == Some(false))
            .collect();
        let files = std::mem::replace(&mut self.files, kept);
        let mut next: HashMap<PackId, Vec<Target>> = HashMap::new();
        for (pack, targets) in &mut self.packs {
            let moved: Vec<Target> = targets
                .extract_if(.., |t| {
                    let (in_batch, at) = place[t.file];
                    t.file = at;
                    !in_batch
                })
                .collect();
            if !moved.is_empty() {
                next.insert(*pack, moved);
            }
        }
        self.packs.retain(|_, targets| !targets.is_empty());
        let packs = std::mem::replace(&mut self.packs, next);
        self.targets = self.packs.values().map(Vec::len).sum();
        // Temporary names stay unique: the kept files keep theirs, and files planned from now
        // on are numbered after every file planned so far.
        self.numbered += files.len();
        Batch { files, packs }
    }

    /// The files to keep back: those that need a pack one of the last [`OPEN_TAIL`] files
    /// planned needs, and (so that no pack is split between the batches) those that need any
    /// other pack the kept files need, found by one walk from pack to file to pack (each
    /// chunk visited once, whatever an index claims). `None` when they would be more than
    /// half the batch's files or chunks: a batch of hardly anything is not worth a pack read
    /// saved.
    fn in_open_packs(&self) -> Option<HashSet<usize>> {
        let tail = self.files.len().saturating_sub(OPEN_TAIL);
        let mut packs_of: Vec<Vec<PackId>> = vec![Vec::new(); self.files.len()];
        let mut open: HashSet<PackId> = HashSet::new();
        for (pack, targets) in &self.packs {
            for t in targets {
                // A file's chunks in one pack lie together in its list: one entry each.
                if packs_of[t.file].last() != Some(pack) {
                    packs_of[t.file].push(*pack);
                }
                if t.file >= tail {
                    open.insert(*pack);
                }
            }
        }
        let mut queue: Vec<PackId> = open.iter().copied().collect();
        let (mut held, mut chunks) = (HashSet::new(), 0usize);
        while let Some(pack) = queue.pop() {
            let targets = self.packs.get(&pack).map_or(&[][..], Vec::as_slice);
            chunks += targets.len();
            for t in targets {
                if held.insert(t.file) {
                    for p in &packs_of[t.file] {
                        if open.insert(*p) {
                            queue.push(*p);
                        }
                    }
                }
            }
            if 2 * held.len() > self.files.len() || 2 * chunks > self.targets {
                return None;
            }
        }
        Some(held)
    }
}

/// Adds what a batch restored to the report.
pub(super) fn merge(
    (batch, damaged): Outcome,
    report: &mut RestoreReport,
    all_damaged: &mut HashSet<PackId>,
) {
    // Named in full: a field a batch comes to fill cannot be dropped here unnoticed.
    let RestoreReport {
        files,
        dirs: _,
        symlinks: _,
        bytes,
        failed,
        specials: _,
        leftovers_removed: _,
        not_restored: _,
        kept: _,
        deleted: _,
        verified,
    } = batch;
    report.files += files;
    report.bytes += bytes;
    report.verified += verified;
    report.failed.extend(failed);
    all_damaged.extend(damaged);
}

/// Restores one batch: files without chunks are complete already, files whose listings
/// disagree on their chunks' lengths are written one verified chunk after another, and the
/// rest pack span by pack span on `opts.threads` threads.
pub(super) fn restore_batch(
    repo: &Repository,
    index: &Index,
    batch: Batch,
    opts: &RestoreOptions,
    progress: &RestoreProgress,
) -> Outcome {
    let Batch { files, packs } = batch;
    let mut report = RestoreReport::default();
    let mut done = Done::default();
    for (i, f) in files.iter().enumerate() {
        if f.sequential {
            let r = restore_sequentially(repo, index, f, progress);
            done.files.push((i, r));
        } else if f.node.content.is_empty() {
            done.files.push((i, finish_file(f, None, progress)));
        }
    }
    let bytes = packs
        .values()
        .flatten()
        .map(|t| t.entry.length as u64)
        .sum();
    let span = span_for(bytes, opts.threads, repo.store().inner().remote());
    let mut jobs = packs
        .into_iter()
        .flat_map(|(pack, targets)| {
            split_pack(targets, span)
                .into_iter()
                .map(move |t| (pack, t))
        })
        .collect::<Vec<_>>();
    // Largest first (taken from the end): the last reads to start are the short ones, so the
    // threads finish close together.
    jobs.sort_by_cached_key(|(_, run)| span_bytes(run));
    let queue = Mutex::new(jobs);
    let files = &files;
    let workers: Vec<Done> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..opts.threads.max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Worker::default();
                    loop {
                        let job = queue.lock().expect("lock").pop();
                        let Some((pack, targets)) = job else {
                            return mine.done;
                        };
                        restore_pack(repo, index, files, &pack, targets, progress, &mut mine);
                    }
                })
            })
            .collect();
        handles.into_iter().map(super::joined).collect()
    });
    for w in workers {
        done.files.extend(w.files);
        done.damaged.extend(w.damaged);
    }
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
    (report, done.damaged)
}

/// Adds a file and its chunks to the plan (its temporary copy is created when its first
/// chunk arrives, see [`super::files::open_for_write`]).
pub(super) fn plan_file(
    index: &Index,
    plan: &mut Plan,
    rel: String,
    (target, parent): (Arc<Beneath>, Arc<Path>),
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
        target,
        parent,
        number: plan.numbered + plan.files.len(),
        created: Mutex::new(None),
        remaining: AtomicUsize::new(targets_len),
        sequential,
        node,
        failed: Mutex::new(None),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::Compression;
    use crate::format::name::RawName;
    use crate::format::tree::NodeKind;
    use crate::id::{BlobId, Id, SessionId, TreeId};
    use crate::pack::{BlobEntry, BlobType};

    fn pack(n: u8) -> PackId {
        PackId(Id([n; 32]))
    }

    /// A plan of `n` files, file `i` named `f<i>`, needing one chunk of each pack in
    /// `packs(i)`; each target's `offset` holds its file's number, to follow it through a cut.
    fn plan(target: &Arc<Beneath>, n: usize, packs: impl Fn(usize) -> Vec<u8>) -> Plan {
        let mut plan = Plan::default();
        for i in 0..n {
            let mut node = Node::folder(TreeId(Id([0; 32])));
            node.kind = NodeKind::File;
            node.subtree = None;
            node.name = RawName(format!("f{i}").into_bytes());
            let needs = packs(i);
            for (c, p) in needs.iter().enumerate() {
                let entry = BlobEntry {
                    id: BlobId(Id([c as u8; 32])),
                    blob_type: BlobType::Data,
                    compression: Compression::None,
                    offset: i as u32,
                    length: 1,
                    raw_length: 1,
                };
                plan.packs.entry(pack(*p)).or_default().push(Target {
                    entry,
                    session: SessionId(Id([0; 32])),
                    file: i,
                    offset: i as u64,
                });
            }
            plan.targets += needs.len();
            plan.files.push(FileState {
                rel: format!("f{i}"),
                target: target.clone(),
                parent: Arc::from(Path::new("")),
                number: plan.numbered + plan.files.len(),
                created: Mutex::new(None),
                remaining: AtomicUsize::new(needs.len()),
                sequential: false,
                node,
                failed: Mutex::new(None),
            });
        }
        plan
    }

    /// Every target points at the file it was planned for, by name and number.
    fn consistent(files: &[FileState], packs: &HashMap<PackId, Vec<Target>>) {
        for targets in packs.values() {
            for t in targets {
                let f = &files[t.file];
                assert_eq!(f.rel, format!("f{}", t.offset));
                assert_eq!(f.number, t.offset as usize);
            }
        }
    }

    #[test]
    fn a_cut_keeps_back_the_files_of_packs_the_walk_is_still_in() {
        let dir = tempfile::tempdir().unwrap();
        let target = Arc::new(Beneath::open(dir.path(), "0123456789ab").unwrap());
        // Pack 1 holds the early files, pack 2 the last OPEN_TAIL; file 7 needs pack 2 and
        // pack 3, which file 8 needs too: both, and pack 2's files, wait for the next batch,
        // which then reads packs 2 and 3 whole.
        let n = 10_000;
        let tail = n - OPEN_TAIL;
        let mut plan = plan(&target, n, |i| match i {
            7 => vec![2, 3],
            8 => vec![3],
            i if i < tail => vec![1],
            _ => vec![2],
        });
        let batch = plan.take(false);
        let names = |fs: &[FileState]| fs.iter().map(|f| f.number).collect::<Vec<_>>();
        let expect_batch: Vec<usize> = (0..tail).filter(|i| *i != 7 && *i != 8).collect();
        assert!(
            names(&batch.files) == expect_batch,
            "the batch holds other files"
        );
        assert_eq!(batch.packs.keys().collect::<Vec<_>>(), vec![&pack(1)]);
        assert_eq!(batch.packs[&pack(1)].len(), tail - 2);
        consistent(&batch.files, &batch.packs);
        let kept: Vec<usize> = [7, 8].into_iter().chain(tail..n).collect();
        assert!(names(&plan.files) == kept, "other files are kept back");
        assert_eq!(plan.targets, 2 + 1 + OPEN_TAIL);
        assert!(!plan.packs.contains_key(&pack(1)));
        assert_eq!(plan.packs[&pack(2)].len(), 1 + OPEN_TAIL);
        assert_eq!(plan.packs[&pack(3)].len(), 2);
        consistent(&plan.files, &plan.packs);
        // Files planned from now on are numbered after every file planned so far.
        assert_eq!(plan.numbered + plan.files.len(), n);
        // The last batch takes everything.
        let last = plan.take(true);
        assert!(
            names(&last.files) == kept,
            "the last batch holds other files"
        );
        consistent(&last.files, &last.packs);
        assert!(plan.files.is_empty() && plan.packs.is_empty() && plan.targets == 0);
    }

    #[test]
    fn a_cut_holding_back_more_than_half_takes_everything() {
        let dir = tempfile::tempdir().unwrap();
        let target = Arc::new(Beneath::open(dir.path(), "0123456789ab").unwrap());
        // One pack for every file: keeping back the tail's pack would keep back all of them.
        let mut plan = plan(&target, 5_000, |_| vec![1]);
        let batch = plan.take(false);
        assert_eq!(batch.files.len(), 5_000);
        consistent(&batch.files, &batch.packs);
        assert!(plan.files.is_empty() && plan.packs.is_empty() && plan.targets == 0);
        assert_eq!(plan.numbered, 5_000);
    }
}
