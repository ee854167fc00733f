//! Prune's decisions, as pure functions from a [`Survey`] to a plan: what a sweep deletes and
//! what a mark condemns. No I/O happens here, so the safety property (no blob that a listed
//! snapshot needs loses its last live, indexed copy) is checked by property tests over
//! synthetic surveys (`plan_tests.rs`), and the executor only carries plans out.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::survey::Survey;
use super::{MarkReport, PruneOptions, SEGMENT_BLOBS};
use crate::error::{Error, Result};
use crate::format::garbage::GarbageMark;
use crate::format::index::{IndexSegment, PackEntries};
use crate::id::{BlobId, MarkId, PackId, SegmentId, SessionId};
use crate::pack::BlobEntry;
use crate::repo::marks::Marks;
use crate::store::{object_name, FileKind};

/// Each listed pack's entries. Every listing of a pack must agree (copies of one listing are
/// normal: consolidation and the sweep list packs again): two that disagree mean a forged or
/// corrupt segment, and choosing either by name order could delete the only copy of a blob.
pub fn pack_table(segments: &[(SegmentId, IndexSegment)]) -> Result<HashMap<PackId, &PackEntries>> {
    let mut out: HashMap<PackId, (&SegmentId, &PackEntries)> = HashMap::new();
    for (seg_id, seg) in segments {
        for p in &seg.packs {
            match out.get(&p.pack) {
                None => {
                    out.insert(p.pack, (seg_id, p));
                }
                Some((first, q)) if !same_listing(p, q) => {
                    return Err(Error::integrity(
                        format!(
                            "{} and {}",
                            object_name(FileKind::Index, first),
                            object_name(FileKind::Index, seg_id)
                        ),
                        format!(
                            "they list {} differently (forged or corrupt index): nothing is \
                             deleted while they disagree",
                            object_name(FileKind::Pack, &p.pack)
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
    }
    Ok(out.into_iter().map(|(k, (_, p))| (k, p)).collect())
}

/// Two listings of one pack say the same: same session, same blob entries in any order.
fn same_listing(a: &PackEntries, b: &PackEntries) -> bool {
    let key = |e: &BlobEntry| (e.offset, e.length, e.id);
    let sorted = |p: &PackEntries| {
        let mut v: Vec<BlobEntry> = p.blobs.clone();
        v.sort_by_key(key);
        v
    };
    a.session == b.session && a.blobs.len() == b.blobs.len() && sorted(a) == sorted(b)
}

/// What a sweep deletes, and what it lists again first.
#[derive(Debug, Default)]
pub struct SweepPlan {
    /// Marks carried out (deleted last).
    pub marks_due: Vec<MarkId>,
    /// The time of the oldest of them: a mark that carries over what Object Lock keeps for
    /// now takes it, so it is due again at the next run.
    pub oldest_due: Option<DateTime<Utc>>,
    pub marks_pending: usize,
    pub delete_packs: Vec<PackId>,
    pub bytes_deleted: u64,
    /// The stored size of each pack to delete.
    pub pack_sizes: HashMap<PackId, u64>,
    /// Condemned packs kept because a snapshot written since needs one of their blobs.
    pub packs_still_needed: usize,
    /// Segments removed: the superseded ones and every one that lists a deleted pack.
    pub delete_segments: Vec<SegmentId>,
    /// The packs each of them lists (a segment that Object Lock keeps for now keeps them
    /// too: no segment may list a deleted pack).
    pub segment_packs: HashMap<SegmentId, Vec<PackId>>,
    /// Packs listed only by removed segments that stay: written to new segments first.
    pub relist: Vec<PackEntries>,
    pub delete_keys: Vec<SessionId>,
    /// The copies this plan relies on: for each needed blob of a pack it deletes, the copy
    /// elsewhere that stays. A listing is only a claim (a writer can forge a segment), so the
    /// executor reads and verifies each of these before it deletes anything.
    pub verify: Vec<(PackId, SessionId, BlobEntry)>,
}

/// Plans a sweep of the marks for which `due` holds. `delete_keys` is false when only the
/// packs of a mark may go now (`rotate reencrypt --delete-now`).
pub fn plan_sweep(
    s: &Survey,
    due: &dyn Fn(&MarkId, &GarbageMark) -> bool,
    delete_keys: bool,
) -> Result<SweepPlan> {
    let table = pack_table(&s.segments)?;
    let (due, pending): (Vec<_>, Vec<_>) = s.marks.iter().partition(|(id, m)| due(id, m));
    let mut plan = SweepPlan {
        marks_due: due.iter().map(|(id, _)| *id).collect(),
        oldest_due: due.iter().map(|(_, m)| m.time).min(),
        marks_pending: pending.len(),
        ..Default::default()
    };
    if due.is_empty() {
        return Ok(plan);
    }
    let union = |ms: &[&(MarkId, GarbageMark)]| {
        Marks::of(&ms.iter().map(|m| (*m).clone()).collect::<Vec<_>>())
    };
    let due_set = union(&due);
    let pending_set = union(&pending);
    let live = |p: &PackId| {
        !due_set.packs.contains(p) && !pending_set.packs.contains(p) && s.stored.contains_key(p)
    };
    // Blobs that stay available without any condemned pack, each with the first such copy
    // (copies already found bad do not count).
    let mut available: HashMap<BlobId, (PackId, SessionId, BlobEntry)> = HashMap::new();
    for (id, seg) in &s.segments {
        if due_set.segments.contains(id) {
            continue;
        }
        for p in seg.packs.iter().filter(|p| live(&p.pack)) {
            for b in &p.blobs {
                if !s.bad_copies.contains(&(p.pack, b.id)) {
                    available.entry(b.id).or_insert((p.pack, p.session, *b));
                }
            }
        }
    }
    let mut delete: HashSet<PackId> = HashSet::new();
    let mut relied: HashMap<(PackId, BlobId), (PackId, SessionId, BlobEntry)> = HashMap::new();
    for p in &due_set.packs {
        let needed: Vec<BlobId> = table
            .get(p)
            .map(|pe| {
                pe.blobs
                    .iter()
                    .filter(|b| s.referenced.contains(&b.id))
                    .map(|b| b.id)
                    .collect()
            })
            .unwrap_or_default();
        if needed.iter().any(|b| !available.contains_key(b)) {
            plan.packs_still_needed += 1;
        } else {
            delete.insert(*p);
            for (b, copy) in needed.iter().filter_map(|b| Some((*b, *available.get(b)?))) {
                relied.insert((copy.0, b), copy);
            }
        }
    }
    plan.verify = relied.into_values().collect();
    plan.verify.sort_by_key(|(p, _, e)| (*p, e.offset, e.id));
    // Segments to remove: the superseded ones, and any other that lists a pack about to go
    // (a reader must never find a deleted pack in a segment once the mark is gone).
    let doomed: HashSet<SegmentId> = s
        .segments
        .iter()
        .filter(|(id, seg)| {
            due_set.segments.contains(id) || seg.packs.iter().any(|p| delete.contains(&p.pack))
        })
        .map(|(id, _)| *id)
        .collect();
    plan.segment_packs = s
        .segments
        .iter()
        .filter(|(id, _)| doomed.contains(id))
        .map(|(id, seg)| (*id, seg.packs.iter().map(|p| p.pack).collect()))
        .collect();
    let staying = || s.segments.iter().filter(|(id, _)| !doomed.contains(id));
    let still_listed: HashSet<PackId> = staying()
        .flat_map(|(_, seg)| seg.packs.iter().map(|p| p.pack))
        .collect();
    let mut relisted = HashSet::new();
    for (_, seg) in s.segments.iter().filter(|(id, _)| doomed.contains(id)) {
        for p in &seg.packs {
            if !delete.contains(&p.pack)
                && !still_listed.contains(&p.pack)
                && relisted.insert(p.pack)
            {
                let mut p = p.clone();
                // A writer's claim is listed again under the owner's signature only as far as
                // it verifies.
                if !s.vouched.contains(&p.pack) {
                    p.blobs.retain(|b| !s.bad_copies.contains(&(p.pack, b.id)));
                    plan.verify
                        .extend(p.blobs.iter().map(|b| (p.pack, p.session, *b)));
                }
                if !p.blobs.is_empty() {
                    plan.relist.push(p);
                }
            }
        }
    }
    plan.verify.sort_by_key(|(p, _, e)| (*p, e.offset, e.id));
    plan.verify.dedup_by_key(|(p, _, e)| (*p, e.id));
    // Keys: unused by any snapshot and by any pack that stays listed.
    let remaining_sessions: HashSet<SessionId> = staying()
        .flat_map(|(_, seg)| seg.packs.iter())
        .chain(plan.relist.iter())
        .filter(|p| !delete.contains(&p.pack))
        .map(|p| p.session)
        .collect();
    if delete_keys {
        plan.delete_keys = due_set
            .sessions
            .iter()
            .filter(|k| !s.snapshot_sessions.contains(k) && !remaining_sessions.contains(k))
            .copied()
            .collect();
        plan.delete_keys.sort();
    }
    plan.bytes_deleted = delete.iter().filter_map(|p| s.stored.get(p)).sum();
    plan.pack_sizes = delete
        .iter()
        .filter_map(|p| s.stored.get(p).map(|n| (*p, *n)))
        .collect();
    plan.delete_packs = delete.into_iter().collect();
    plan.delete_packs.sort();
    // In listing order, so a segment's removal order is stable.
    plan.delete_segments = s
        .segments
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| doomed.contains(id))
        .collect();
    Ok(plan)
}

/// What a mark run writes: repacked copies, consolidated segments, and the mark itself.
#[derive(Debug, Default)]
pub struct MarkPlan {
    /// The counts of this plan; the executor adds what it wrote.
    pub report: MarkReport,
    /// Packs the new mark condemns: unused, repacked, and unindexed past the grace period.
    pub condemned: Vec<PackId>,
    /// Partly used packs to copy: (pack, session, the used blobs to copy).
    pub repack: Vec<(PackId, SessionId, Vec<BlobEntry>)>,
    /// Unindexed packs noted (not condemned) for a run after the grace period.
    pub unindexed: Vec<PackId>,
    /// Session keys the mark condemns.
    pub sessions: Vec<SessionId>,
    /// Segments superseded by consolidation, and the entries to list again in their place
    /// (the repacked copies are added by the executor).
    pub consolidate: Option<(Vec<SegmentId>, Vec<PackEntries>)>,
    /// The copies this plan relies on (see [`SweepPlan::verify`]): those outside the packs it
    /// condemns, and those a repack copies.
    pub verify: Vec<(PackId, SessionId, BlobEntry)>,
}

impl MarkPlan {
    /// Nothing to write: no mark is needed.
    pub fn is_empty(&self) -> bool {
        self.condemned.is_empty()
            && self.unindexed.is_empty()
            && self.sessions.is_empty()
            && self.consolidate.is_none()
    }
}

/// Plans the mark phase. `seen_before`: unindexed packs that a mark past the grace period had
/// already noted; `relisted`: packs the sweep just listed again (a lagging listing may not
/// show their new segment yet).
pub fn plan_mark(
    s: &Survey,
    opts: &PruneOptions,
    seen_before: &HashSet<PackId>,
    relisted: &HashSet<PackId>,
) -> Result<MarkPlan> {
    let now: DateTime<Utc> = s.start;
    pack_table(&s.segments)?;
    let pending = Marks::of(&s.marks);
    // Segments that no pending mark supersedes, and the live packs they list, in order.
    let current: Vec<&(SegmentId, IndexSegment)> = s
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
    let all_listed: HashSet<PackId> = s
        .segments
        .iter()
        .flat_map(|(_, seg)| seg.packs.iter().map(|p| p.pack))
        .chain(relisted.iter().copied())
        .collect();
    // Each referenced blob is used from the first stored live pack that holds it (copies
    // already found bad do not count).
    let mut chosen: HashMap<BlobId, (PackId, SessionId, BlobEntry)> = HashMap::new();
    let mut used: HashMap<PackId, Vec<BlobEntry>> = HashMap::new();
    for p in packs.iter().filter(|p| s.stored.contains_key(&p.pack)) {
        for b in &p.blobs {
            if s.referenced.contains(&b.id)
                && !s.bad_copies.contains(&(p.pack, b.id))
                && !chosen.contains_key(&b.id)
            {
                chosen.insert(b.id, (p.pack, p.session, *b));
                used.entry(p.pack).or_default().push(*b);
            }
        }
    }
    // Packs that only a backup's checkpoint lists (a provisional segment, docs/FORMAT.md §6):
    // while no snapshot uses them they may belong to a backup still running, or be what an
    // interrupted one left for its rerun, so they are treated as unindexed.
    let firm: HashSet<PackId> = s
        .segments
        .iter()
        .filter(|(_, seg)| !seg.provisional)
        .flat_map(|(_, seg)| seg.packs.iter().map(|p| p.pack))
        .chain(relisted.iter().copied())
        .collect();
    let mut plan = MarkPlan::default();
    let r = &mut plan.report;
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
        if used_bytes == 0 && !firm.contains(&p.pack) {
            if seen_before.contains(&p.pack) || opts.grace.is_zero() {
                plan.condemned.push(p.pack);
                r.unindexed_condemned += 1;
                r.bytes_condemned += size;
            } else {
                plan.unindexed.push(p.pack);
            }
        } else if used_bytes == 0 {
            plan.condemned.push(p.pack);
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
    for (p, size, unused) in &candidates {
        if unused_left <= limit {
            break;
        }
        let blobs = used.get(&p.pack).cloned().unwrap_or_default();
        r.blobs_repacked += blobs.len();
        plan.repack.push((p.pack, p.session, blobs));
        unused_left -= unused;
        plan.condemned.push(p.pack);
        r.bytes_condemned += size;
    }
    r.packs_repacked = plan.repack.len();
    // Unindexed packs: noted now, condemned by a run after the grace period.
    let mut stored: Vec<(&PackId, &u64)> = s.stored.iter().collect();
    stored.sort();
    for (p, size) in stored {
        if all_listed.contains(p) || pending.packs.contains(p) {
            continue;
        }
        // With no grace period the caller vouches that no backup is running.
        if seen_before.contains(p) || opts.grace.is_zero() {
            plan.condemned.push(*p);
            r.unindexed_condemned += 1;
            r.bytes_condemned += size;
        } else {
            plan.unindexed.push(*p);
        }
    }
    r.unindexed_seen = plan.unindexed.len();
    let condemned: HashSet<PackId> = plan.condemned.iter().copied().collect();
    // Keys of sessions that nothing uses any more and that are older than the grace period
    // (a younger one may belong to a backup still running).
    let live_sessions: HashSet<SessionId> = packs
        .iter()
        .filter(|p| !condemned.contains(&p.pack))
        .map(|p| p.session)
        .collect();
    plan.sessions = s
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
    r.keys_condemned = plan.sessions.len();
    // What the condemned packs' needed blobs rely on: the chosen copy, when it lies outside
    // every condemned pack, and every copy a repack takes (verified first, so that a junk
    // copy is struck and the plan made again instead of the repack failing on every run).
    let mut relied: HashMap<(PackId, BlobId), (PackId, SessionId, BlobEntry)> = HashMap::new();
    for (pack, session, blobs) in &plan.repack {
        for b in blobs {
            relied.insert((*pack, b.id), (*pack, *session, *b));
        }
    }
    for p in packs.iter().filter(|p| condemned.contains(&p.pack)) {
        for b in p.blobs.iter().filter(|b| s.referenced.contains(&b.id)) {
            if let Some(c) = chosen.get(&b.id).filter(|c| !condemned.contains(&c.0)) {
                relied.insert((c.0, b.id), *c);
            }
        }
    }
    plan.verify = relied.into_values().collect();
    plan.verify.sort_by_key(|(p, _, e)| (*p, e.offset, e.id));
    // Consolidation rewrites the small segments (one per backup run) and any that lists a
    // condemned pack; full ones stay as they are, so a large index is not rewritten each run.
    let lists_condemned =
        |seg: &IndexSegment| seg.packs.iter().any(|p| condemned.contains(&p.pack));
    // A writer's listing is a claim: listed again under the owner's signature only once every
    // entry of it verifies (`plan.verify` below). A segment with a claim that did not is left
    // as it is, signed by its writer, whom no other backup trusts.
    let refuted = |seg: &IndexSegment| {
        seg.packs.iter().any(|p| {
            !s.vouched.contains(&p.pack)
                && p.blobs
                    .iter()
                    .any(|b| s.bad_copies.contains(&(p.pack, b.id)))
        })
    };
    // A checkpoint's segment keeps its flag until a snapshot uses, or a mark condemns, every
    // pack it lists: listed again in an ordinary segment, an unused pack of a backup still
    // running would be condemned at once.
    let settled = |seg: &IndexSegment| {
        !seg.provisional
            || seg
                .packs
                .iter()
                .all(|p| used.contains_key(&p.pack) || condemned.contains(&p.pack))
    };
    let rewrite: Vec<&(SegmentId, IndexSegment)> = current
        .iter()
        .filter(|(_, seg)| {
            (seg.packs.iter().map(|p| p.blobs.len()).sum::<usize>() < SEGMENT_BLOBS
                || lists_condemned(seg))
                && !refuted(seg)
                && settled(seg)
        })
        .copied()
        .collect();
    let consolidate = rewrite.len() > 1
        || !plan.repack.is_empty()
        || rewrite.iter().any(|(_, seg)| lists_condemned(seg));
    if consolidate {
        r.segments_superseded = rewrite.len();
        let rewritten: HashSet<SegmentId> = rewrite.iter().map(|(id, _)| *id).collect();
        let stays_listed: HashSet<PackId> = current
            .iter()
            .filter(|(id, _)| !rewritten.contains(id))
            .flat_map(|(_, seg)| seg.packs.iter().map(|p| p.pack))
            .collect();
        let mut seen = HashSet::new();
        let keep: Vec<PackEntries> = rewrite
            .iter()
            .flat_map(|(_, seg)| seg.packs.iter())
            .filter(|p| {
                !condemned.contains(&p.pack)
                    && !pending.packs.contains(&p.pack)
                    && !stays_listed.contains(&p.pack)
                    && seen.insert(p.pack)
            })
            .cloned()
            .collect();
        for p in keep.iter().filter(|p| !s.vouched.contains(&p.pack)) {
            plan.verify
                .extend(p.blobs.iter().map(|b| (p.pack, p.session, *b)));
        }
        plan.verify.sort_by_key(|(p, _, e)| (*p, e.offset, e.id));
        plan.verify.dedup_by_key(|(p, _, e)| (*p, e.id));
        plan.consolidate = Some((rewrite.iter().map(|(id, _)| *id).collect(), keep));
    }
    Ok(plan)
}
