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
    let total = plan.delete_packs.len();
    for (n, p) in plan.delete_packs.iter().enumerate() {
        act.set(format!("deleting condemned pack {}/{total}", n + 1));
        renew(lock)?;
        repo.store().delete(FileKind::Pack, p)?;
    }
    crate::failpoint::hit("prune-sweep-after-packs");
    let deletes = plan
        .delete_segments
        .iter()
        .map(|id| (FileKind::Index, id.id()))
        .chain(plan.delete_keys.iter().map(|k| (FileKind::Key, k.id())))
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
