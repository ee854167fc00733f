//! `repair index` and `repair snapshots`: after objects were lost or damaged (key holders).

use super::progress::with_progress;
use super::{Ctx, Outcome};
use custody::error::Result;
use custody::repo::activity::Activity;
use custody::repo::repair;

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// List every pack no readable index segment lists again, from the pack's own
    /// authenticated header (after index objects were lost or damaged); then remove the
    /// segments that do not open. Safe to stop and run again.
    Index(IndexArgs),
    /// Save a new snapshot of what is intact of each snapshot whose data is partly lost,
    /// naming what it left out (tag `repaired`); the originals are kept.
    Snapshots(SnapshotsArgs),
    /// Record which session keys each snapshot's data needs, by walking its trees (owner):
    /// what restore requests release. Backups record it themselves; this covers snapshots
    /// made before restore requests, by `repair snapshots`, or whose record was lost.
    Reach(ReachArgs),
    /// Make every object current again as it was before TIME, from the bucket's versions,
    /// after objects were deleted or overwritten (a versioned S3 bucket; needs
    /// s3:ListBucketVersions and s3:GetObjectVersion). Deletes nothing.
    Undelete(UndeleteArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct UndeleteArgs {
    /// RFC 3339 time, e.g. 2026-11-30T10:00:00Z: the state to return to.
    #[arg(long, value_name = "TIME")]
    pub before: String,
    /// Only say what would be restored.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Put back deleted objects only, leaving overwritten ones as they are (keeps key
    /// rotation or policy changes made after TIME).
    #[arg(long)]
    pub deleted_only: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ReachArgs {
    /// Snapshots (ids or prefixes; default: every snapshot).
    pub snapshots: Vec<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct IndexArgs {
    /// Only report what would be listed and removed.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct SnapshotsArgs {
    /// Snapshots to repair (ids or prefixes; default: every snapshot).
    pub snapshots: Vec<String>,
    /// Only report what is lost.
    #[arg(long)]
    pub dry_run: bool,
}

impl Cmd {
    pub fn dry_run(&self) -> bool {
        match self {
            Cmd::Index(a) => a.dry_run,
            Cmd::Snapshots(a) => a.dry_run,
            Cmd::Undelete(a) => a.dry_run,
            Cmd::Reach(_) => false,
        }
    }
}

pub fn run(ctx: &Ctx, cmd: &Cmd) -> Result<Outcome> {
    if let Cmd::Undelete(a) = cmd {
        // On the store alone: the config may be among what was deleted.
        let before = chrono::DateTime::parse_from_rfc3339(&a.before)
            .map_err(|e| {
                custody::Error::invalid(format!(
                    "--before {:?}: {e} (RFC 3339, e.g. 2026-11-30T10:00:00Z)",
                    a.before
                ))
            })?
            .with_timezone(&chrono::Utc);
        let store = ctx.store()?;
        let report = repair::undelete(
            ctx.rt.handle(),
            store.as_ref(),
            before,
            a.deleted_only,
            a.dry_run,
        )?;
        ctx.emit(&report);
        return Ok(Outcome::OK);
    }
    // What the bucket holds, not the local tree cache.
    let repo = ctx
        .open_repo()?
        .with_tree_cache(None)
        .with_segment_cache(None);
    let act = Activity::default();
    match cmd {
        Cmd::Index(a) => {
            let report = with_progress(
                ctx.show_progress(),
                || act.get(),
                || repair::repair_index(&repo, a.dry_run, &act),
            )?;
            ctx.emit(&report);
            // Packs that could not be listed are damage: named, and the exit code says so.
            if !report.packs_refused.is_empty() {
                return Ok(Outcome(super::exit::INTEGRITY));
            }
        }
        Cmd::Snapshots(a) => {
            let ids = a
                .snapshots
                .iter()
                .map(|s| repo.resolve_snapshot_id(s))
                .collect::<Result<Vec<_>>>()?;
            let report = with_progress(
                ctx.show_progress(),
                || act.get(),
                || repair::repair_snapshots(&repo, &ids, a.dry_run, &act),
            )?;
            ctx.emit(&report);
        }
        Cmd::Reach(a) => {
            let ids = a
                .snapshots
                .iter()
                .map(|s| repo.resolve_snapshot_id(s))
                .collect::<Result<Vec<_>>>()?;
            let done = repo.rebuild_reach(&ids)?;
            if ctx.json {
                ctx.print_report(&serde_json::json!({ "snapshots": done }));
            } else {
                ctx.say(format_args!(
                    "recorded the reach of {} snapshot(s)",
                    done.len()
                ));
            }
        }
        Cmd::Undelete(_) => unreachable!("handled before the repository is opened"),
    }
    Ok(Outcome::OK)
}
