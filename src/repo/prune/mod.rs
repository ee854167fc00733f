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
//!
//! The work is split by what it touches: [`survey`] reads, [`plan`] decides (pure, property
//! tested), [`execute`] writes and deletes.

mod execute;
pub mod plan;
#[cfg(test)]
mod plan_tests;
mod survey;

use std::collections::HashSet;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::human::bytes;

use super::activity::Activity;
use super::lock::{release_after, Lock};
use super::Repository;
use crate::error::Result;
use crate::format::garbage::GarbageMark;
use crate::id::{MarkId, PackId};

pub use survey::{survey, Survey};

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

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: usize,
    pub blobs_referenced: usize,
    pub sweep: SweepReport,
    pub mark: MarkReport,
}

/// What the sweep deleted (or, in a dry run, would delete).
#[derive(Debug, Default, Serialize, Deserialize)]
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
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct MarkReport {
    pub mark: Option<MarkId>,
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

pub fn prune(repo: &Repository, opts: &PruneOptions, act: &Activity) -> Result<PruneReport> {
    let mut lock = if opts.dry_run {
        None
    } else {
        Some(repo.lock("prune")?)
    };
    let out = run(repo, opts, &mut lock, act);
    release_after(lock, out)
}

fn run(
    repo: &Repository,
    opts: &PruneOptions,
    lock: &mut Option<Lock<'_>>,
    act: &Activity,
) -> Result<PruneReport> {
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let s = survey(repo, lock, act)?;
    report.snapshots = s.snapshots;
    report.blobs_referenced = s.referenced.len();
    // Unindexed packs noted by marks past the grace period; read before the sweep deletes them.
    let seen_before: HashSet<PackId> = s
        .marks
        .iter()
        .filter(|(_, m)| m.time <= s.start - opts.grace)
        .flat_map(|(_, m)| m.unindexed.iter().copied())
        .collect();
    let start = s.start;
    let due = move |_: &MarkId, m: &GarbageMark| m.time <= start - opts.grace;
    let plan = plan::plan_sweep(&s, &due, true)?;
    let (sweep_report, relisted) = execute::sweep(repo, plan, opts.dry_run, lock, act)?;
    report.sweep = sweep_report;
    let s = if report.sweep.marks_due > 0 && !opts.dry_run {
        survey(repo, lock, act)?
    } else {
        s
    };
    // A listing right after our own writes may miss them: what the sweep listed again counts
    // as indexed whatever the new listing says.
    let plan = plan::plan_mark(&s, opts, &seen_before, &relisted)?;
    report.mark = execute::mark(repo, plan, opts.dry_run, lock, act)?;
    if opts.grace.is_zero() && report.mark.mark.is_some() && !opts.dry_run {
        let s = survey(repo, lock, act)?;
        let start = s.start;
        let due = move |_: &MarkId, m: &GarbageMark| m.time <= start;
        let plan = plan::plan_sweep(&s, &due, true)?;
        let (again, _) = execute::sweep(repo, plan, false, lock, act)?;
        report.sweep.marks_due += again.marks_due;
        report.sweep.packs_deleted += again.packs_deleted;
        report.sweep.bytes_deleted += again.bytes_deleted;
        report.sweep.packs_still_needed += again.packs_still_needed;
        report.sweep.segments_deleted += again.segments_deleted;
        report.sweep.segments_written += again.segments_written;
        report.sweep.keys_deleted += again.keys_deleted;
        report.sweep.marks_pending = again.marks_pending;
    }
    Ok(report)
}

/// Carries out one mark at once, whatever its age, without deleting the session keys it
/// condemns (a later prune does, after the grace period). For `rotate reencrypt
/// --delete-now`: every blob of the packs its mark condemns was copied and indexed first, so
/// deleting them cannot take anything a snapshot needs.
pub fn sweep_now(repo: &Repository, mark: &MarkId, act: &Activity) -> Result<SweepReport> {
    let mut lock = Some(repo.lock("prune")?);
    let out = (|| {
        let s = survey(repo, &mut lock, act)?;
        let only = |id: &MarkId, _: &GarbageMark| id == mark;
        let plan = plan::plan_sweep(&s, &only, false)?;
        Ok(execute::sweep(repo, plan, false, &mut lock, act)?.0)
    })();
    release_after(lock, out)
}

impl fmt::Display for PruneReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self;
        let would = if r.dry_run { "would " } else { "" };
        let (s, m) = (&r.sweep, &r.mark);
        writeln!(
            f,
            "{} snapshot(s) use {} blob(s); {} pack(s), {} of which {} unused",
            r.snapshots,
            r.blobs_referenced,
            m.packs_total,
            bytes(m.bytes_total),
            bytes(m.bytes_unused_before)
        )?;
        if s.marks_due > 0 {
            writeln!(
            f,
            "sweep: {}delete {} pack(s) ({}), {} index segment(s), {} session key(s) from {} mark(s) past the grace period{}",
            would,
            s.packs_deleted,
            bytes(s.bytes_deleted),
            s.segments_deleted,
            s.keys_deleted,
            s.marks_due,
            if s.packs_still_needed > 0 {
                format!("; {} condemned pack(s) kept: a newer snapshot needs them", s.packs_still_needed)
            } else {
                String::new()
            }
            )?;
        }
        if s.marks_pending > 0 {
            writeln!(
                f,
                "{} earlier mark(s) still within the grace period",
                s.marks_pending
            )?;
        }
        writeln!(
            f,
        "mark: {}condemn {} unused pack(s), repack {} pack(s) ({} blob(s), {} written), condemn {} unindexed pack(s) seen a grace period ago, note {} unindexed pack(s), condemn {} unused session key(s); {} in all",
        would,
        m.packs_unused,
        m.packs_repacked,
        m.blobs_repacked,
        bytes(m.bytes_written),
        m.unindexed_condemned,
        m.unindexed_seen,
        m.keys_condemned,
        bytes(m.bytes_condemned),
        )?;
        if m.segments_superseded > 0 {
            writeln!(
                f,
                "index: {}consolidate {} segment(s) into {}",
                would, m.segments_superseded, m.segments_written
            )?;
        }
        if let Some(id) = &m.mark {
            writeln!(
            f,
            "wrote garbage/{}: what it condemns is deleted by a prune run after the grace period",
            id.short()
            )?;
        }
        Ok(())
    }
}
