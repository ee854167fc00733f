//! `prune`: garbage collection that is safe while backups run (docs/FORMAT.md, "Garbage
//! collection"). Writers never delete. A prune run does two things:
//!
//! 1. **Sweep** the garbage marks older than the grace period: delete each condemned pack
//!    unless a snapshot now needs a blob that only it holds (such a pack is kept and stays
//!    indexed), then the superseded index segments, then unused session keys, then the mark.
//! 2. **Mark**: find packs no snapshot needs (wholly unused, or holding only duplicates),
//!    repack the used blobs of partly used packs until at most `max_unused` of the pack bytes
//!    is unused, write consolidated index segments, and write one new mark condemning what is
//!    to go. Nothing is deleted by the run that condemns it (unless the grace period is 0).
//!
//! Backups load the marks at their start and never deduplicate against condemned packs; before
//! committing, a backup stops if a mark it did not see condemns anything it relies on (see
//! [`Repository::check_before_commit`]).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::activity::Activity;
use super::lock::Lock;
use super::marks::Marks;
use super::repack::Repacker;
use super::{Index, Repository};
use crate::error::{Error, Result};
use crate::format::garbage::GarbageMark;
use crate::format::index::{IndexSegment, PackEntries};
use crate::format::tree::NodeKind;
use crate::id::Id;
use crate::store::{object_name, FileKind};

/// Blob entries per consolidated index segment (about 4.8 MB each).
const SEGMENT_BLOBS: usize = 100_000;

#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// How old a mark must be before what it condemns is deleted.
    pub grace: chrono::Duration,
    /// Unused bytes tolerated in partly used packs, as a fraction of all pack bytes.
    pub max_unused: f64,
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            grace: chrono::Duration::hours(24),
            max_unused: 0.05,
            dry_run: false,
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: usize,
    pub blobs_referenced: usize,
    pub sweep: SweepReport,
    pub mark: MarkReport,
}

/// What the sweep deleted (or, in a dry run, would delete).
#[derive(Debug, Default, Serialize)]
pub struct SweepReport {
    pub marks_due: usize,
    pub marks_pending: usize,
    pub packs_deleted: usize,
    pub bytes_deleted: u64,
    /// Condemned packs kept because a snapshot written since needs one of their blobs.
    pub packs_still_needed: usize,
    pub segments_deleted: usize,
    pub segments_written: usize,
    pub keys_deleted: usize,
}

/// What the mark phase condemned and rewrote.
#[derive(Debug, Default, Serialize)]
pub struct MarkReport {
    pub mark: Option<Id>,
    pub packs_total: usize,
    pub bytes_total: u64,
    pub bytes_unused_before: u64,
    pub packs_unused: usize,
    pub packs_repacked: usize,
    pub blobs_repacked: usize,
    pub bytes_written: u64,
    pub bytes_condemned: u64,
    pub unindexed_seen: usize,
    pub unindexed_condemned: usize,
    pub keys_condemned: usize,
    pub segments_superseded: usize,
    pub segments_written: usize,
}

/// Everything prune needs to know, listed in this order: marks, packs, keys, snapshots,
/// index segments. Snapshots come after the marks, so every snapshot committed before a mark
/// was read is seen; segments come after the snapshots, so each snapshot's blobs are indexed.
struct Survey {
    /// Taken before anything is listed: every age (of marks, of keys) is measured from here,
    /// so time spent surveying never makes a mark look older than the listing it was
    /// checked against.
    start: DateTime<Utc>,
    marks: Vec<(Id, GarbageMark)>,
    segments: Vec<(Id, IndexSegment)>,
    stored: HashMap<Id, u64>,
    keys: Vec<(Id, Option<DateTime<Utc>>)>,
    referenced: HashSet<Id>,
    snapshot_sessions: HashSet<Id>,
    snapshots: usize,
}

fn survey(repo: &Repository, lock: &mut Option<Lock<'_>>, act: &Activity) -> Result<Survey> {
    act.set("listing the repository");
    let start = Utc::now();
    let marks = repo.load_marks()?;
    let stored: HashMap<Id, u64> = repo
        .block_on(repo.store().list(FileKind::Pack))?
        .into_iter()
        .collect();
    let keys = super::check::wrapped_keys(repo)?
        .into_iter()
        .map(|(id, r)| (id, r.map(|r| r.created)))
        .collect();
    // Snapshots are listed before the index: a snapshot is written after its index segment,
    // so every snapshot listed here finds its blobs in the segments listed next.
    let snapshot_ids = repo.snapshot_ids()?;
    let segments = repo.load_segments()?;
    let condemned = Marks::of(&marks);
    let index = Index::live_first(segments.iter().map(|(_, seg)| seg), &condemned.packs);
    let mut referenced = HashSet::new();
    let mut snapshot_sessions = HashSet::new();
    let mut snapshots = 0;
    let unreadable = |what: String, e: Error| {
        Error::integrity(
            what,
            format!("{e}; prune needs every snapshot readable to know what is in use: nothing was changed"),
        )
    };
    let total = snapshot_ids.len();
    for (n, id) in snapshot_ids.into_iter().enumerate() {
        act.set(format!(
            "reading snapshot {}/{total} and its folders",
            n + 1
        ));
        let snap = match repo.load_snapshot(&id) {
            Ok(s) => s,
            // Forgotten between our listing and our read.
            Err(Error::NotFound(_)) => continue,
            Err(e) if e.is_key_service() => return Err(e),
            Err(e) => return Err(unreadable(object_name(FileKind::Snapshot, &id), e)),
        };
        snapshots += 1;
        snapshot_sessions.insert(snap.session);
        // Folder level by folder level, each level's trees read at once.
        let mut level = vec![snap.tree];
        while !level.is_empty() {
            level.retain(|t| referenced.insert(*t));
            if let Some(l) = lock.as_mut() {
                l.refresh()?;
            }
            let mut next = Vec::new();
            // Read in batches: a level's trees are held in memory together.
            for batch in level.chunks(super::TREE_BATCH) {
                for (t, tree) in batch.iter().zip(repo.load_trees(&index, batch)) {
                    let tree = tree.map_err(|e| {
                        if e.is_key_service() {
                            e
                        } else {
                            unreadable(format!("tree {t}"), e)
                        }
                    })?;
                    for n in tree.nodes {
                        match n.kind {
                            NodeKind::Dir => next.extend(n.subtree),
                            NodeKind::File => referenced.extend(n.content),
                            NodeKind::Symlink => {}
                        }
                    }
                }
            }
            level = next;
        }
        if let Some(l) = lock.as_mut() {
            l.refresh()?;
        }
    }
    Ok(Survey {
        start,
        marks,
        segments,
        stored,
        keys,
        referenced,
        snapshot_sessions,
        snapshots,
    })
}

/// Each pack's entries, from the first segment that lists it.
fn pack_table(segments: &[(Id, IndexSegment)]) -> HashMap<Id, &PackEntries> {
    let mut out = HashMap::new();
    for (_, seg) in segments {
        for p in &seg.packs {
            out.entry(p.pack).or_insert(p);
        }
    }
    out
}

fn write_segments(repo: &Repository, packs: Vec<PackEntries>) -> Result<usize> {
    let mut written = 0;
    let mut seg = IndexSegment::default();
    let mut blobs = 0;
    for p in packs {
        blobs += p.blobs.len();
        seg.packs.push(p);
        if blobs >= SEGMENT_BLOBS {
            repo.save_index_segment(&std::mem::take(&mut seg))?;
            written += 1;
            blobs = 0;
        }
    }
    if !seg.packs.is_empty() {
        repo.save_index_segment(&seg)?;
        written += 1;
    }
    Ok(written)
}

pub fn prune(repo: &Repository, opts: &PruneOptions, act: &Activity) -> Result<PruneReport> {
    let mut lock = if opts.dry_run {
        None
    } else {
        Some(repo.lock("prune")?)
    };
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let s = survey(repo, &mut lock, act)?;
    report.snapshots = s.snapshots;
    report.blobs_referenced = s.referenced.len();
    // Unindexed packs noted by marks past the grace period; read before the sweep deletes them.
    let seen_before: HashSet<Id> = s
        .marks
        .iter()
        .filter(|(_, m)| m.time <= s.start - opts.grace)
        .flat_map(|(_, m)| m.unindexed.iter().copied())
        .collect();
    let start = s.start;
    let due = move |_: &Id, m: &GarbageMark| m.time <= start - opts.grace;
    let scope = Scope {
        due: &due,
        delete_keys: true,
        dry_run: opts.dry_run,
    };
    let (sweep_report, relisted) = sweep(repo, &s, &scope, &mut lock, act)?;
    report.sweep = sweep_report;
    let s = if report.sweep.marks_due > 0 && !opts.dry_run {
        survey(repo, &mut lock, act)?
    } else {
        s
    };
    // A listing right after our own writes may miss them: what the sweep listed again counts
    // as indexed whatever the new listing says.
    report.mark = mark(repo, &s, opts, &seen_before, &relisted, &mut lock, act)?;
    if opts.grace.is_zero() && report.mark.mark.is_some() && !opts.dry_run {
        let s = survey(repo, &mut lock, act)?;
        let start = s.start;
        let due = move |_: &Id, m: &GarbageMark| m.time <= start;
        let scope = Scope {
            due: &due,
            delete_keys: true,
            dry_run: false,
        };
        let (again, _) = sweep(repo, &s, &scope, &mut lock, act)?;
        report.sweep.marks_due += again.marks_due;
        report.sweep.packs_deleted += again.packs_deleted;
        report.sweep.bytes_deleted += again.bytes_deleted;
        report.sweep.packs_still_needed += again.packs_still_needed;
        report.sweep.segments_deleted += again.segments_deleted;
        report.sweep.segments_written += again.segments_written;
        report.sweep.keys_deleted += again.keys_deleted;
        report.sweep.marks_pending = again.marks_pending;
    }
    if let Some(l) = lock {
        l.release()?;
    }
    Ok(report)
}

/// Which marks a sweep carries out, and whether it deletes the session keys they condemn.
struct Scope<'a> {
    due: &'a dyn Fn(&Id, &GarbageMark) -> bool,
    delete_keys: bool,
    dry_run: bool,
}

/// Carries out one mark at once, whatever its age, without deleting the session keys it
/// condemns (a later prune does, after the grace period). For `rotate reencrypt
/// --delete-now`: every blob of the packs its mark condemns was copied and indexed first, so
/// deleting them cannot take anything a snapshot needs.
pub fn sweep_now(repo: &Repository, mark: &Id, act: &Activity) -> Result<SweepReport> {
    let mut lock = Some(repo.lock("prune")?);
    let s = survey(repo, &mut lock, act)?;
    let only = |id: &Id, _: &GarbageMark| id == mark;
    let scope = Scope {
        due: &only,
        delete_keys: false,
        dry_run: false,
    };
    let (r, _) = sweep(repo, &s, &scope, &mut lock, act)?;
    if let Some(l) = lock {
        l.release()?;
    }
    Ok(r)
}

fn sweep(
    repo: &Repository,
    s: &Survey,
    scope: &Scope<'_>,
    lock: &mut Option<Lock<'_>>,
    act: &Activity,
) -> Result<(SweepReport, HashSet<Id>)> {
    let (due, pending): (Vec<_>, Vec<_>) = s.marks.iter().partition(|(id, m)| (scope.due)(id, m));
    let mut r = SweepReport {
        marks_due: due.len(),
        marks_pending: pending.len(),
        ..Default::default()
    };
    if due.is_empty() {
        return Ok((r, HashSet::new()));
    }
    let due_marks: Vec<(Id, GarbageMark)> = due.iter().map(|(i, m)| (*i, m.clone())).collect();
    let due_set = Marks::of(&due_marks);
    let pending_set = Marks::of(
        &pending
            .iter()
            .map(|(i, m)| (*i, m.clone()))
            .collect::<Vec<_>>(),
    );
    let table = pack_table(&s.segments);
    let live = |p: &Id| {
        !due_set.packs.contains(p) && !pending_set.packs.contains(p) && s.stored.contains_key(p)
    };
    // Blobs that stay available without any condemned pack.
    let mut available: HashSet<Id> = HashSet::new();
    for (id, seg) in &s.segments {
        if due_set.segments.contains(id) {
            continue;
        }
        for p in seg.packs.iter().filter(|p| live(&p.pack)) {
            available.extend(p.blobs.iter().map(|b| b.id));
        }
    }
    let mut delete: HashSet<Id> = HashSet::new();
    for p in &due_set.packs {
        let needed = table.get(p).is_some_and(|pe| {
            pe.blobs
                .iter()
                .any(|b| s.referenced.contains(&b.id) && !available.contains(&b.id))
        });
        if needed {
            r.packs_still_needed += 1;
        } else {
            delete.insert(*p);
        }
    }
    // Segments to remove: the superseded ones, and any other that lists a pack about to go
    // (a reader must never find a deleted pack in a segment once the mark is gone).
    let doomed: Vec<&(Id, IndexSegment)> = s
        .segments
        .iter()
        .filter(|(id, seg)| {
            due_set.segments.contains(id) || seg.packs.iter().any(|p| delete.contains(&p.pack))
        })
        .collect();
    let doomed_ids: HashSet<Id> = doomed.iter().map(|(id, _)| *id).collect();
    let still_listed: HashSet<Id> = s
        .segments
        .iter()
        .filter(|(id, _)| !doomed_ids.contains(id))
        .flat_map(|(_, seg)| seg.packs.iter().map(|p| p.pack))
        .collect();
    // Packs in removed segments that stay: list them again first.
    let mut relist: Vec<PackEntries> = Vec::new();
    let mut relisted = HashSet::new();
    for (_, seg) in &doomed {
        for p in &seg.packs {
            if !delete.contains(&p.pack)
                && !still_listed.contains(&p.pack)
                && relisted.insert(p.pack)
            {
                relist.push(p.clone());
            }
        }
    }
    // Keys: unused by any snapshot and by any pack that stays listed.
    let remaining_sessions: HashSet<Id> = s
        .segments
        .iter()
        .filter(|(id, _)| !doomed_ids.contains(id))
        .flat_map(|(_, seg)| seg.packs.iter())
        .chain(relist.iter())
        .filter(|p| !delete.contains(&p.pack))
        .map(|p| p.session)
        .collect();
    let keys: Vec<Id> = due_set
        .sessions
        .iter()
        .filter(|_| scope.delete_keys)
        .filter(|k| !s.snapshot_sessions.contains(k) && !remaining_sessions.contains(k))
        .copied()
        .collect();
    r.packs_deleted = delete.len();
    r.bytes_deleted = delete.iter().filter_map(|p| s.stored.get(p)).sum();
    r.segments_deleted = doomed.len();
    r.keys_deleted = keys.len();
    if scope.dry_run {
        r.segments_written = usize::from(!relist.is_empty());
        return Ok((r, HashSet::new()));
    }
    let relisted: HashSet<Id> = relist.iter().map(|p| p.pack).collect();
    r.segments_written = write_segments(repo, relist)?;
    crate::failpoint::hit("prune-sweep-before-delete");
    // The lock is checked before every delete: a run that lost it (paused past the stale
    // time) stops before removing anything more.
    let renew = |lock: &mut Option<Lock<'_>>| match lock.as_mut() {
        Some(l) => l.refresh(),
        None => Ok(()),
    };
    for (n, p) in delete.iter().enumerate() {
        act.set(format!(
            "deleting condemned pack {}/{}",
            n + 1,
            delete.len()
        ));
        renew(lock)?;
        repo.block_on(repo.store().delete(FileKind::Pack, p))?;
    }
    crate::failpoint::hit("prune-sweep-after-packs");
    for (id, _) in &doomed {
        renew(lock)?;
        repo.block_on(repo.store().delete(FileKind::Index, id))?;
    }
    for k in &keys {
        renew(lock)?;
        repo.block_on(repo.store().delete(FileKind::Key, k))?;
    }
    for (id, _) in &due_marks {
        renew(lock)?;
        repo.block_on(repo.store().delete(FileKind::Garbage, id))?;
    }
    tracing::info!(
        packs = r.packs_deleted,
        segments = r.segments_deleted,
        keys = r.keys_deleted,
        "swept"
    );
    Ok((r, relisted))
}

fn mark(
    repo: &Repository,
    s: &Survey,
    opts: &PruneOptions,
    seen_before: &HashSet<Id>,
    relisted: &HashSet<Id>,
    lock: &mut Option<Lock<'_>>,
    act: &Activity,
) -> Result<MarkReport> {
    let now = s.start;
    let pending = Marks::of(&s.marks);
    // Segments that no pending mark supersedes, and the live packs they list, in order.
    let current: Vec<&(Id, IndexSegment)> = s
        .segments
        .iter()
        .filter(|(id, _)| !pending.segments.contains(id))
        .collect();
    let mut packs: Vec<&PackEntries> = Vec::new();
    let mut listed = HashSet::new();
    for (_, seg) in &current {
        for p in &seg.packs {
            if !pending.packs.contains(&p.pack) && listed.insert(p.pack) {
                packs.push(p);
            }
        }
    }
    let all_listed: HashSet<Id> = s
        .segments
        .iter()
        .flat_map(|(_, seg)| seg.packs.iter().map(|p| p.pack))
        .chain(relisted.iter().copied())
        .collect();
    // Each referenced blob is used from the first stored live pack that holds it.
    let mut chosen: HashMap<Id, Id> = HashMap::new();
    let mut used: HashMap<Id, Vec<crate::pack::BlobEntry>> = HashMap::new();
    for p in packs.iter().filter(|p| s.stored.contains_key(&p.pack)) {
        for b in &p.blobs {
            if s.referenced.contains(&b.id) && !chosen.contains_key(&b.id) {
                chosen.insert(b.id, p.pack);
                used.entry(p.pack).or_default().push(*b);
            }
        }
    }
    let mut r = MarkReport::default();
    let mut condemned: Vec<Id> = Vec::new();
    let mut candidates: Vec<(&PackEntries, u64, u64)> = Vec::new();
    for p in &packs {
        let Some(&size) = s.stored.get(&p.pack) else {
            // Indexed but missing: damage for `check` to report; left as it is.
            continue;
        };
        r.packs_total += 1;
        r.bytes_total += size;
        let used_bytes: u64 = used
            .get(&p.pack)
            .map(|v| v.iter().map(|b| b.length as u64).sum())
            .unwrap_or(0);
        // The header and trailer are overhead of every pack, not unused space.
        let blob_bytes: u64 = p.blobs.iter().map(|b| b.length as u64).sum();
        if used_bytes == 0 {
            condemned.push(p.pack);
            r.packs_unused += 1;
            r.bytes_condemned += size;
            r.bytes_unused_before += size;
        } else {
            let unused = blob_bytes.saturating_sub(used_bytes);
            r.bytes_unused_before += unused;
            if unused > 0 {
                candidates.push((p, size, unused));
            }
        }
    }
    // Repack the emptiest packs first until the unused bytes left are within the limit.
    candidates.sort_by(|a, b| (b.2 as f64 / b.1 as f64).total_cmp(&(a.2 as f64 / a.1 as f64)));
    let limit = (opts.max_unused * r.bytes_total as f64) as u64;
    let mut unused_left: u64 = candidates.iter().map(|c| c.2).sum();
    let mut repack: Vec<&PackEntries> = Vec::new();
    for (p, size, unused) in &candidates {
        if unused_left <= limit {
            break;
        }
        repack.push(p);
        unused_left -= unused;
        condemned.push(p.pack);
        r.bytes_condemned += size;
    }
    r.packs_repacked = repack.len();
    r.blobs_repacked = repack
        .iter()
        .map(|p| used.get(&p.pack).map_or(0, Vec::len))
        .sum();
    // Unindexed packs: noted now, condemned by a run after the grace period.
    let mut unindexed = Vec::new();
    for (p, size) in &s.stored {
        if all_listed.contains(p) || pending.packs.contains(p) {
            continue;
        }
        // With no grace period the caller vouches that no backup is running.
        if seen_before.contains(p) || opts.grace.is_zero() {
            condemned.push(*p);
            r.unindexed_condemned += 1;
            r.bytes_condemned += size;
        } else {
            unindexed.push(*p);
        }
    }
    r.unindexed_seen = unindexed.len();
    let condemned_set: HashSet<Id> = condemned.iter().copied().collect();
    // Keys of sessions that nothing uses any more and that are older than the grace period
    // (a younger one may belong to a backup still running).
    let live_sessions: HashSet<Id> = packs
        .iter()
        .filter(|p| !condemned_set.contains(&p.pack))
        .map(|p| p.session)
        .collect();
    let sessions: Vec<Id> = s
        .keys
        .iter()
        .filter(|(k, created)| {
            !s.snapshot_sessions.contains(k)
                && !live_sessions.contains(k)
                && !pending.sessions.contains(k)
                && created.is_some_and(|c| c <= now - opts.grace)
        })
        .map(|(k, _)| *k)
        .collect();
    r.keys_condemned = sessions.len();
    // Consolidation rewrites the small segments (one per backup run) and any that lists a
    // condemned pack; full ones stay as they are, so a large index is not rewritten each run.
    let lists_condemned =
        |seg: &IndexSegment| seg.packs.iter().any(|p| condemned_set.contains(&p.pack));
    let rewrite: Vec<&(Id, IndexSegment)> = current
        .iter()
        .filter(|(_, seg)| {
            seg.packs.iter().map(|p| p.blobs.len()).sum::<usize>() < SEGMENT_BLOBS
                || lists_condemned(seg)
        })
        .copied()
        .collect();
    let consolidate = rewrite.len() > 1
        || !repack.is_empty()
        || rewrite.iter().any(|(_, seg)| lists_condemned(seg));
    if condemned.is_empty() && unindexed.is_empty() && sessions.is_empty() && !consolidate {
        return Ok(r);
    }
    if consolidate {
        r.segments_superseded = rewrite.len();
    }
    if opts.dry_run {
        return Ok(r);
    }
    // New packs first, then the index that lists them, then the mark: a crash at any point
    // leaves duplicates at worst, which the next run cleans up.
    let mut new_packs = Vec::new();
    if !repack.is_empty() {
        let mut rp = Repacker::new(repo)?;
        for (n, p) in repack.iter().enumerate() {
            act.set(format!("repacking pack {}/{}", n + 1, repack.len()));
            rp.copy(
                &p.pack,
                &p.session,
                used.get(&p.pack).map_or(&[][..], Vec::as_slice),
            )?;
            if let Some(l) = lock.as_mut() {
                l.refresh()?;
            }
        }
        let (_, written, bytes) = rp.finish()?;
        r.bytes_written = bytes;
        new_packs = written;
    }
    crate::failpoint::hit("prune-after-repack");
    let mut superseded = Vec::new();
    if consolidate {
        let rewritten: HashSet<Id> = rewrite.iter().map(|(id, _)| *id).collect();
        let stays_listed: HashSet<Id> = current
            .iter()
            .filter(|(id, _)| !rewritten.contains(id))
            .flat_map(|(_, seg)| seg.packs.iter().map(|p| p.pack))
            .collect();
        let mut seen = HashSet::new();
        let mut all: Vec<PackEntries> = rewrite
            .iter()
            .flat_map(|(_, seg)| seg.packs.iter())
            .filter(|p| {
                !condemned_set.contains(&p.pack)
                    && !pending.packs.contains(&p.pack)
                    && !stays_listed.contains(&p.pack)
                    && seen.insert(p.pack)
            })
            .cloned()
            .collect();
        all.extend(new_packs);
        r.segments_written = write_segments(repo, all)?;
        superseded = rewrite.iter().map(|(id, _)| *id).collect();
    }
    crate::failpoint::hit("prune-before-mark");
    let m = GarbageMark {
        format: crate::format::REPO_FORMAT,
        time: Utc::now(),
        packs: condemned,
        segments: superseded,
        sessions,
        unindexed,
    };
    r.mark = Some(repo.save_mark(&m)?);
    tracing::info!(mark = ?r.mark, packs = m.packs.len(), "marked");
    Ok(r)
}
