//! `repair index` (docs/FORMAT.md §14e): every stored pack that no readable index segment
//! lists is read whole, its header opened under its session's key and every blob verified
//! against its id, and listed in new segments the owner signs. Segments that do not open are
//! removed once every pack is listed again. New segments are written before anything is
//! removed, so a run killed at any point is finished by the next.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::index::{IndexSegment, PackEntries};
use crate::id::{PackId, SegmentId};
use crate::repo::activity::Activity;
use crate::repo::lock::release_after;
use crate::repo::Repository;
use crate::store::{object_name, FileKind};

/// At most this many blobs per new segment (a few MiB).
const BLOBS_PER_SEGMENT: usize = 50_000;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RepairIndexReport {
    pub dry_run: bool,
    /// Packs in the store.
    pub packs: usize,
    /// Packs a readable segment already listed.
    pub packs_indexed: usize,
    /// Packs listed again from their headers (or that would be, with `--dry-run`).
    pub packs_added: usize,
    pub blobs_added: usize,
    pub segments_written: usize,
    /// Segments that do not open, removed (or to be) once every pack is listed again.
    pub segments_removed: Vec<String>,
    /// Packs left unlisted, and why (a damaged header or blob, a missing session key).
    pub packs_refused: Vec<(String, String)>,
}

impl fmt::Display for RepairIndexReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let would = if self.dry_run { "would list" } else { "listed" };
        write!(
            f,
            "{} pack(s) stored, {} already indexed; {would} {} pack(s) ({} blobs) again from their headers in {} new segment(s)",
            self.packs, self.packs_indexed, self.packs_added, self.blobs_added, self.segments_written
        )?;
        if !self.segments_removed.is_empty() {
            let what = if self.dry_run {
                "would remove"
            } else {
                "removed"
            };
            write!(
                f,
                "\n{what} {} index segment(s) that do not open",
                self.segments_removed.len()
            )?;
        }
        for (p, why) in &self.packs_refused {
            write!(f, "\nnot listed: {p}: {why}")?;
        }
        Ok(())
    }
}

/// Lists every stored pack that no readable segment lists, from its own header.
pub fn repair_index(repo: &Repository, dry_run: bool, act: &Activity) -> Result<RepairIndexReport> {
    repo.require_owner("repair index")?;
    // The lock keeps prune from deleting an unlisted pack while it is being listed again.
    let mut lock = if dry_run {
        None
    } else {
        Some(repo.lock("repair index")?)
    };
    let out = run(repo, dry_run, &mut lock, act);
    release_after(lock, out)
}

fn run(
    repo: &Repository,
    dry_run: bool,
    lock: &mut Option<crate::repo::lock::Lock<'_>>,
    act: &Activity,
) -> Result<RepairIndexReport> {
    let mut report = RepairIndexReport {
        dry_run,
        ..Default::default()
    };
    act.set("listing the repository");
    let stored = repo.stored_packs()?;
    report.packs = stored.len();
    let mut listed: HashSet<PackId> = HashSet::new();
    let mut bad: Vec<SegmentId> = Vec::new();
    for (id, _) in repo.store().list(FileKind::Index)? {
        let id = SegmentId(id);
        match repo.load_object::<IndexSegment>(&id) {
            Ok(seg) => listed.extend(seg.packs.iter().map(|p| p.pack)),
            Err(Error::NotFound(_)) => {}
            // A writer's listing the owner does not accept is left alone (`check` names it);
            // the packs it claims are listed again below if nobody else lists them.
            Err(e) if e.is_untrusted() => tracing::warn!("index segment passed over: {e}"),
            // A segment of a newer format is not damaged: never removed.
            Err(Error::Integrity { reason, .. })
                if reason.contains("refused (this build reads") =>
            {
                tracing::warn!("index segment {id} passed over: {reason}");
            }
            Err(e) if e.is_integrity() => bad.push(id),
            Err(e) => return Err(e),
        }
    }
    let mut todo: Vec<PackId> = stored
        .keys()
        .filter(|p| !listed.contains(*p))
        .copied()
        .collect();
    todo.sort();
    report.packs_indexed = stored.len() - todo.len();

    let mut batch: Vec<PackEntries> = Vec::new();
    let mut in_batch = 0;
    let total = todo.len();
    for (n, pack) in todo.into_iter().enumerate() {
        act.set(format!("reading pack {}/{total}", n + 1));
        if let Some(l) = lock.as_mut() {
            l.refresh()?;
        }
        let bytes = match repo.store().get(FileKind::Pack, &pack) {
            Ok(b) => b,
            Err(Error::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        match crate::repo::check::verify_pack(repo, &pack, None, &[], &bytes) {
            Ok((session, blobs)) => {
                report.packs_added += 1;
                report.blobs_added += blobs.len();
                in_batch += blobs.len();
                batch.push(PackEntries {
                    pack,
                    session,
                    blobs,
                });
            }
            Err(e) if e.is_key_service() => return Err(e),
            Err(e) => {
                let why = match e {
                    Error::Integrity { reason, .. } => reason,
                    e => e.to_string(),
                };
                report
                    .packs_refused
                    .push((object_name(FileKind::Pack, &pack), why));
            }
        }
        if in_batch >= BLOBS_PER_SEGMENT {
            flush(repo, dry_run, &mut batch, &mut report)?;
            in_batch = 0;
        }
    }
    flush(repo, dry_run, &mut batch, &mut report)?;

    // Every pack that opens is listed by a readable segment now: the unreadable ones add
    // nothing, and while they exist prune refuses to run. Unless a pack was refused: an
    // unreadable segment may be all that lists its intact blobs, so nothing is removed.
    if !report.packs_refused.is_empty() {
        return Ok(report);
    }
    report.segments_removed = bad
        .iter()
        .map(|id| object_name(FileKind::Index, id))
        .collect();
    if !dry_run {
        for id in &bad {
            repo.store().delete(FileKind::Index, id)?;
        }
    }
    Ok(report)
}

fn flush(
    repo: &Repository,
    dry_run: bool,
    batch: &mut Vec<PackEntries>,
    report: &mut RepairIndexReport,
) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    report.segments_written += 1;
    let seg = IndexSegment {
        packs: std::mem::take(batch),
        provisional: false,
    };
    if !dry_run {
        let id = repo.save_index_segment(&seg)?;
        tracing::info!(segment = %id, packs = seg.packs.len(), "index segment written from pack headers");
        crate::failpoint::hit("repair-index-after-segment");
    }
    Ok(())
}
