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
//! tested), [`verify`] reads the copies a sweep relies on, [`execute`] writes and deletes.

mod execute;
pub mod plan;
#[cfg(test)]
mod plan_tests;
mod survey;
mod verify;

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
    /// When space comes back: what is condemned and not yet deleted (by this run's mark and
    /// earlier ones within the grace period), and the first time a prune may delete it.
    #[serde(default)]
    pub space: SpaceReport,
}

/// What a prune run means for space, in the words its summary uses.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SpaceReport {
    /// The grace period, in seconds.
    pub grace_secs: i64,
    /// Bytes condemned and still stored (this run's mark and earlier pending marks).
    pub bytes_waiting: u64,
    /// The earliest time a prune run may delete some of it, and the time by which all of it
    /// may be (both `None` when nothing waits).
    pub first_free: Option<chrono::DateTime<chrono::Utc>>,
    pub all_free: Option<chrono::DateTime<chrono::Utc>>,
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
    /// Copies elsewhere that the deletions rely on, read and verified first.
    #[serde(default)]
    pub copies_verified: usize,
    /// Listed copies that did not verify (forged or corrupt listings, damaged packs): the
    /// packs holding the other copies were kept. `check --read-data` names them.
    #[serde(default)]
    pub copies_refused: usize,
    pub segments_deleted: usize,
    pub segments_written: usize,
    pub keys_deleted: usize,
    /// Partial files of interrupted writes (local stores) removed, and their bytes.
    #[serde(default)]
    pub temporaries_removed: usize,
    #[serde(default)]
    pub temporary_bytes_removed: u64,
    /// Condemned objects still under Object Lock retention: not deleted yet; a mark carries
    /// them to a run after their date (docs/FORMAT.md §21).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deferred: Vec<Deferred>,
}

/// A condemned object that Object Lock retains until `until`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deferred {
    pub object: String,
    pub until: chrono::DateTime<chrono::Utc>,
}

/// A partial write is removed only once it has not changed for this long (and for the grace
/// period), so that a write in progress is never touched.
pub const TEMPORARY_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(15 * 60);

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
    /// Copies outside the condemned packs that the mark relies on, read and verified first.
    #[serde(default)]
    pub copies_verified: usize,
    /// Listed copies that did not verify, so were not relied on.
    #[serde(default)]
    pub copies_refused: usize,
}

pub fn prune(repo: &Repository, opts: &PruneOptions, act: &Activity) -> Result<PruneReport> {
    repo.require_owner("prune")?;
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
    // Earlier marks that stay within the grace period: their packs wait.
    let mut waiting: Vec<(chrono::DateTime<chrono::Utc>, u64)> = s
        .marks
        .iter()
        .filter(|(id, m)| !due(id, m))
        .map(|(_, m)| {
            let bytes = m.packs.iter().filter_map(|p| s.stored.get(p)).sum();
            (m.time + opts.grace, bytes)
        })
        .collect();
    let mut s = s;
    let (sweep_report, relisted) =
        verified_sweep(repo, &mut s, &due, true, opts.dry_run, lock, act)?;
    report.sweep = sweep_report;
    let mut s = if report.sweep.marks_due > 0 && !opts.dry_run {
        let bad = std::mem::take(&mut s.bad_copies);
        let mut again = survey(repo, lock, act)?;
        again.bad_copies = bad;
        again
    } else {
        s
    };
    // A listing right after our own writes may miss them: what the sweep listed again counts
    // as indexed whatever the new listing says.
    let (plan, refused) = verified(
        repo,
        &mut s,
        |s| plan::plan_mark(s, opts, &seen_before, &relisted),
        |p| &p.verify,
        lock,
        act,
    )?;
    let verified = plan.verify.len();
    report.mark = execute::mark(repo, plan, opts.dry_run, lock, act)?;
    if report.mark.bytes_condemned > 0 && !opts.grace.is_zero() {
        waiting.push((chrono::Utc::now() + opts.grace, report.mark.bytes_condemned));
    }
    report.space = SpaceReport {
        grace_secs: opts.grace.num_seconds(),
        bytes_waiting: waiting.iter().map(|w| w.1).sum(),
        first_free: waiting.iter().map(|w| w.0).min(),
        all_free: waiting.iter().map(|w| w.0).max(),
    };
    report.mark.copies_verified = verified;
    report.mark.copies_refused = refused;
    if opts.grace.is_zero() && report.mark.mark.is_some() && !opts.dry_run {
        let s = survey(repo, lock, act)?;
        let start = s.start;
        let due = move |_: &MarkId, m: &GarbageMark| m.time <= start;
        let mut s = s;
        let (again, _) = verified_sweep(repo, &mut s, &due, true, false, lock, act)?;
        report.sweep.marks_due += again.marks_due;
        report.sweep.packs_deleted += again.packs_deleted;
        report.sweep.bytes_deleted += again.bytes_deleted;
        report.sweep.packs_still_needed += again.packs_still_needed;
        report.sweep.copies_verified += again.copies_verified;
        report.sweep.copies_refused += again.copies_refused;
        report.sweep.segments_deleted += again.segments_deleted;
        report.sweep.segments_written += again.segments_written;
        report.sweep.keys_deleted += again.keys_deleted;
        report.sweep.deferred.extend(again.deferred);
        report.sweep.marks_pending = again.marks_pending;
    }
    // Partial files that interrupted writes left (local stores): unchanged past the grace.
    let older = opts
        .grace
        .to_std()
        .unwrap_or_default()
        .max(TEMPORARY_MIN_AGE);
    for (name, size) in repo.store().temporaries(older)? {
        if !opts.dry_run {
            repo.store().remove_temporary(&name)?;
        }
        report.sweep.temporaries_removed += 1;
        report.sweep.temporary_bytes_removed += size;
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
        let mut s = survey(repo, &mut lock, act)?;
        let only = |id: &MarkId, _: &GarbageMark| id == mark;
        Ok(verified_sweep(repo, &mut s, &only, false, false, &mut lock, act)?.0)
    })();
    release_after(lock, out)
}

/// Plans with `plan_of`, reads and verifies every copy the plan relies on, and plans again
/// without the copies that did not verify (so the packs holding other copies are kept) until
/// every relied-on copy verifies: no deletion or condemnation rests on a listing a writer
/// could forge. Ends, because each round strikes at least one of finitely many listed
/// copies. Returns the plan and how many copies were struck.
fn verified<P>(
    repo: &Repository,
    s: &mut Survey,
    plan_of: impl Fn(&Survey) -> Result<P>,
    relied: impl Fn(&P) -> &[(PackId, crate::id::SessionId, crate::pack::BlobEntry)],
    lock: &mut Option<Lock<'_>>,
    act: &Activity,
) -> Result<(P, usize)> {
    let mut refused = 0;
    // Copies already read and found good are not read again in a later round.
    let mut good: HashSet<(PackId, crate::id::BlobId)> = HashSet::new();
    loop {
        let plan = plan_of(s)?;
        let todo: Vec<_> = relied(&plan)
            .iter()
            .filter(|(p, _, e)| !good.contains(&(*p, e.id)))
            .copied()
            .collect();
        let bad = verify::verify_copies(repo, &todo, lock, act)?;
        good.extend(
            todo.iter()
                .map(|(p, _, e)| (*p, e.id))
                .filter(|c| !bad.contains(c)),
        );
        if bad.is_empty() {
            return Ok((plan, refused));
        }
        for (pack, blob) in &bad {
            let listed_by: Vec<String> = s
                .segments
                .iter()
                .filter(|(_, seg)| seg.packs.iter().any(|p| p.pack == *pack))
                .map(|(id, _)| crate::store::object_name(crate::store::FileKind::Index, id))
                .collect();
            tracing::warn!(
                "{} lists blob {} in {}, but that copy does not verify (forged or corrupt \
                 listing, or a damaged pack): the packs holding other copies are kept",
                listed_by.join(", "),
                blob.short(),
                crate::store::object_name(crate::store::FileKind::Pack, pack)
            );
        }
        refused += bad.len();
        s.bad_copies.extend(bad);
    }
}

/// Plans a sweep whose relied-on copies all verify, and carries it out.
fn verified_sweep(
    repo: &Repository,
    s: &mut Survey,
    due: &dyn Fn(&MarkId, &GarbageMark) -> bool,
    delete_keys: bool,
    dry_run: bool,
    lock: &mut Option<Lock<'_>>,
    act: &Activity,
) -> Result<(SweepReport, HashSet<PackId>)> {
    let (plan, refused) = verified(
        repo,
        s,
        |s| plan::plan_sweep(s, due, delete_keys),
        |p| &p.verify,
        lock,
        act,
    )?;
    let verified = plan.verify.len();
    let (mut report, relisted) = execute::sweep(repo, plan, dry_run, lock, act)?;
    report.copies_verified = verified;
    report.copies_refused = refused;
    Ok((report, relisted))
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
        if let Some(last) = s.deferred.iter().map(|d| d.until).max() {
            writeln!(
                f,
                "{} condemned object(s) are under Object Lock retention until {} at the latest: \
                 kept, and deleted by the first prune after that date",
                s.deferred.len(),
                crate::human::local_time(last)
            )?;
        }
        if s.temporaries_removed > 0 {
            writeln!(
                f,
                "{}remove {} partial file(s) of interrupted writes ({})",
                would,
                s.temporaries_removed,
                bytes(s.temporary_bytes_removed)
            )?;
        }
        let refused = s.copies_refused + m.copies_refused;
        if refused > 0 {
            writeln!(
                f,
                "{refused} listed cop(ies) of needed blobs did not verify and were not relied on (forged or corrupt index, or a damaged pack): run check --read-data",
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
        // The summary in plain words: what came back now, what waits, until when, and why.
        let sp = &r.space;
        write!(
            f,
            "space: {} {}",
            bytes(s.bytes_deleted + s.temporary_bytes_removed),
            if r.dry_run {
                "would be freed now"
            } else {
                "freed now"
            }
        )?;
        match (sp.first_free, sp.all_free) {
            (Some(first), Some(all)) if sp.bytes_waiting > 0 => write!(
                f,
                "; {} condemned, freed by the first prune run after {}{} (the grace period of {} \
                 lets backups running now finish with what they found)",
                bytes(sp.bytes_waiting),
                crate::human::local_time(first),
                if all > first {
                    format!(" (all of it after {})", crate::human::local_time(all))
                } else {
                    String::new()
                },
                crate::human::duration(sp.grace_secs),
            ),
            _ => write!(f, "; nothing else waits"),
        }
    }
}
