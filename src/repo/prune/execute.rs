//! Carries out prune's plans: writes first (repacked packs, index segments, the mark), then
//! deletes, checking the lock before every delete. Decides nothing: every choice was made by
//! [`super::plan`].

use std::collections::HashSet;

use super::plan::{MarkPlan, SweepPlan};
use super::{MarkReport, SweepReport, SEGMENT_BLOBS};
use crate::error::Result;
use crate::format::garbage::GarbageMark;
use crate::format::index::{IndexSegment, PackEntries};
use crate::id::PackId;
use crate::repo::activity::Activity;
use crate::repo::lock::Lock;
use crate::repo::repack::Repacker;
use crate::repo::Repository;
use crate::store::FileKind;

/// Writes `packs` into index segments of at most about [`SEGMENT_BLOBS`] entries each.
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

/// When the store retains `id` under Object Lock past now: what to report.
fn retained(
    repo: &Repository,
    kind: FileKind,
    id: &crate::id::Id,
) -> Result<Option<super::Deferred>> {
    let Some(lock) = repo.store().inner().object_lock() else {
        return Ok(None);
    };
    if lock.settings().is_none_or(|s| s.days == 0) {
        return Ok(None);
    }
    match repo.block_on(lock.retain_until(kind, id)) {
        Ok(Some(until)) if until > chrono::Utc::now() => Ok(Some(super::Deferred {
            object: crate::store::object_name(kind, id),
            until,
        })),
        Ok(_) | Err(crate::error::Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Renews the lock (when held): a run that lost it (paused past the stale time) stops before
/// it removes or writes anything more.
fn renew(lock: &mut Option<Lock<'_>>) -> Result<()> {
    match lock.as_mut() {
        Some(l) => l.refresh(),
        None => Ok(()),
    }
}

/// Carries out a sweep plan; returns what it did and the packs it listed again.
pub fn sweep(
    repo: &Repository,
    plan: SweepPlan,
    dry_run: bool,
    lock: &mut Option<Lock<'_>>,
    act: &Activity,
) -> Result<(SweepReport, HashSet<PackId>)> {
    let mut r = SweepReport {
        marks_due: plan.marks_due.len(),
        marks_pending: plan.marks_pending,
        packs_deleted: plan.delete_packs.len(),
        bytes_deleted: plan.bytes_deleted,
        packs_still_needed: plan.packs_still_needed,
        segments_deleted: plan.delete_segments.len(),
        segments_written: 0,
        keys_deleted: plan.delete_keys.len(),
        ..Default::default()
    };
    if plan.marks_due.is_empty() {
        return Ok((r, HashSet::new()));
    }
    if dry_run {
        r.segments_written = usize::from(!plan.relist.is_empty());
        return Ok((r, HashSet::new()));
    }
    let relisted: HashSet<PackId> = plan.relist.iter().map(|p| p.pack).collect();
    r.segments_written = write_segments(repo, plan.relist)?;
    crate::failpoint::hit("prune-sweep-before-delete");
    // Under Object Lock, what is still retained is kept and carried to a later run by a mark
    // of its own (written before the due marks go), rather than hidden behind a delete marker.
    let mut carry = GarbageMark {
        format: crate::format::REPO_FORMAT,
        time: plan.oldest_due.unwrap_or_else(chrono::Utc::now),
        packs: vec![],
        segments: vec![],
        sessions: vec![],
        unindexed: vec![],
    };
    let mut keep = Vec::new();
    // Segments first: a pack that a kept segment lists stays too, so that no index ever
    // lists a deleted pack (a later backup would rely on it).
    let mut listed_by_kept: HashSet<PackId> = HashSet::new();
    for s in &plan.delete_segments {
        if let Some(d) = retained(repo, FileKind::Index, s)? {
            carry.segments.push(*s);
            keep.push(d);
            listed_by_kept.extend(plan.segment_packs.get(s).into_iter().flatten());
        }
    }
    for p in &plan.delete_packs {
        if let Some(d) = retained(repo, FileKind::Pack, p)? {
            carry.packs.push(*p);
            keep.push(d);
        } else if listed_by_kept.contains(p) {
            carry.packs.push(*p);
        }
    }
    for k in &plan.delete_keys {
        if let Some(d) = retained(repo, FileKind::Key, k)? {
            carry.sessions.push(*k);
            keep.push(d);
        }
    }
    if !carry.packs.is_empty() || !carry.segments.is_empty() || !carry.sessions.is_empty() {
        repo.save_object(&crate::id::MarkId::random()?, &carry)?;
        r.packs_deleted -= carry.packs.len();
        r.bytes_deleted -= carry
            .packs
            .iter()
            .filter_map(|p| plan.pack_sizes.get(p))
            .sum::<u64>();
        r.segments_deleted -= carry.segments.len();
        r.keys_deleted -= carry.sessions.len();
        r.deferred = keep;
    }
    let carried: HashSet<crate::id::Id> = carry
        .packs
        .iter()
        .map(|p| p.id())
        .chain(carry.segments.iter().map(|s| s.id()))
        .chain(carry.sessions.iter().map(|s| s.id()))
        .collect();
    let total = plan.delete_packs.len();
    for (n, p) in plan.delete_packs.iter().enumerate() {
        act.set(format!("deleting condemned pack {}/{total}", n + 1));
        if carried.contains(&p.id()) {
            continue;
        }
        renew(lock)?;
        repo.store().delete(FileKind::Pack, p)?;
    }
    crate::failpoint::hit("prune-sweep-after-packs");
    let deletes = plan
        .delete_segments
        .iter()
        .map(|id| (FileKind::Index, id.id()))
        .chain(plan.delete_keys.iter().map(|k| (FileKind::Key, k.id())))
        .filter(|(_, id)| !carried.contains(id))
        .chain(plan.marks_due.iter().map(|m| (FileKind::Garbage, m.id())));
    for (kind, id) in deletes {
        renew(lock)?;
        repo.store().delete(kind, &id)?;
    }
    tracing::info!(
        packs = r.packs_deleted,
        segments = r.segments_deleted,
        keys = r.keys_deleted,
        "swept"
    );
    Ok((r, relisted))
}

/// Carries out a mark plan: new packs first, then the index that lists them, then the mark,
/// so a crash at any point leaves duplicates at worst, which the next run cleans up.
pub fn mark(
    repo: &Repository,
    plan: MarkPlan,
    dry_run: bool,
    lock: &mut Option<Lock<'_>>,
    act: &Activity,
) -> Result<MarkReport> {
    let mut r = plan.report;
    if plan.condemned.is_empty()
        && plan.unindexed.is_empty()
        && plan.sessions.is_empty()
        && plan.consolidate.is_none()
    {
        return Ok(r);
    }
    if dry_run {
        return Ok(r);
    }
    let mut new_packs = Vec::new();
    if !plan.repack.is_empty() {
        // One new session per source session: a restore request for one host's snapshot
        // then never releases a session that holds other hosts' repacked blobs.
        let mut rp = Repacker::per_source(repo);
        let total = plan.repack.len();
        for (n, (pack, session, blobs)) in plan.repack.iter().enumerate() {
            act.set(format!("repacking pack {}/{total}", n + 1));
            rp.copy(pack, session, blobs)?;
            renew(lock)?;
        }
        let (_, written, bytes) = rp.finish()?;
        r.bytes_written = bytes;
        new_packs = written;
    }
    crate::failpoint::hit("prune-after-repack");
    let mut superseded = Vec::new();
    if let Some((rewrite, mut keep)) = plan.consolidate {
        keep.extend(new_packs);
        r.segments_written = write_segments(repo, keep)?;
        superseded = rewrite;
    }
    crate::failpoint::hit("prune-before-mark");
    let m = GarbageMark {
        format: crate::format::REPO_FORMAT,
        time: chrono::Utc::now(),
        packs: plan.condemned,
        segments: superseded,
        sessions: plan.sessions,
        unindexed: plan.unindexed,
    };
    r.mark = Some(repo.save_mark(&m)?);
    tracing::info!(mark = ?r.mark, packs = m.packs.len(), "marked");
    Ok(r)
}
