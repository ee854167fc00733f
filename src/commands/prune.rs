//! `prune`: delete what no snapshot needs, safely while backups run (two phases, grace period).

use serde_json::json;

use super::progress::with_progress;
use super::{human_bytes, Ctx, Outcome};
use custody::error::{Error, Result};
use custody::repo::activity::Activity;
use custody::repo::prune::{self, PruneOptions, PruneReport};
use custody::repo::rewrap::parse_duration;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub opts: PruneArgs,
}

/// Options shared by `prune` and `forget --prune`.
#[derive(Debug, Clone, clap::Args)]
pub struct PruneArgs {
    /// Delete condemned data only once its garbage mark is this old. Backups running longer
    /// than this across two prunes stop before committing (exit 6) rather than lose data.
    /// `0s` deletes at once: only when no backup can be running.
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub grace: String,
    /// Unused space tolerated in partly used packs before they are repacked: a percentage
    /// of all pack bytes (`5%`), or `unlimited` (never repack).
    #[arg(long, value_name = "PERCENT", default_value = "5%")]
    pub max_unused: String,
    /// Only report what would be condemned, repacked and deleted.
    #[arg(long)]
    pub dry_run: bool,
}

impl PruneArgs {
    pub fn options(&self) -> Result<PruneOptions> {
        Ok(PruneOptions {
            grace: parse_duration(&self.grace)?,
            max_unused: parse_max_unused(&self.max_unused)?,
            dry_run: self.dry_run,
        })
    }
}

fn parse_max_unused(s: &str) -> Result<f64> {
    if s == "unlimited" {
        return Ok(f64::INFINITY);
    }
    let bad = || {
        Error::invalid(format!(
            "--max-unused {s:?}: expected a percentage like 5% or `unlimited`"
        ))
    };
    let n: f64 = s
        .strip_suffix('%')
        .ok_or_else(bad)?
        .trim()
        .parse()
        .map_err(|_| bad())?;
    if !(0.0..=100.0).contains(&n) {
        return Err(bad());
    }
    Ok(n / 100.0)
}

pub fn run(ctx: &Ctx, args: &Args) -> Result<Outcome> {
    let opts = args.opts.options()?;
    let repo = ctx.open_repo()?;
    let act = Activity::default();
    let report = with_progress(
        ctx.show_progress(),
        || act.get(),
        || prune::prune(&repo, &opts, &act),
    )?;
    print(ctx, &report);
    Ok(Outcome::OK)
}

pub(crate) fn print(ctx: &Ctx, r: &PruneReport) {
    if ctx.json {
        ctx.print_json(&json!(r));
        return;
    }
    let would = if r.dry_run { "would " } else { "" };
    let (s, m) = (&r.sweep, &r.mark);
    ctx.say(format!(
        "{} snapshot(s) use {} blob(s); {} pack(s), {} of which {} unused",
        r.snapshots,
        r.blobs_referenced,
        m.packs_total,
        human_bytes(m.bytes_total),
        human_bytes(m.bytes_unused_before)
    ));
    if s.marks_due > 0 {
        ctx.say(format!(
            "sweep: {}delete {} pack(s) ({}), {} index segment(s), {} session key(s) from {} mark(s) past the grace period{}",
            would,
            s.packs_deleted,
            human_bytes(s.bytes_deleted),
            s.segments_deleted,
            s.keys_deleted,
            s.marks_due,
            if s.packs_still_needed > 0 {
                format!("; {} condemned pack(s) kept: a newer snapshot needs them", s.packs_still_needed)
            } else {
                String::new()
            }
        ));
    }
    if s.marks_pending > 0 {
        ctx.say(format!(
            "{} earlier mark(s) still within the grace period",
            s.marks_pending
        ));
    }
    ctx.say(format!(
        "mark: {}condemn {} unused pack(s), repack {} pack(s) ({} blob(s), {} written), condemn {} unindexed pack(s) seen a grace period ago, note {} unindexed pack(s), condemn {} unused session key(s); {} in all",
        would,
        m.packs_unused,
        m.packs_repacked,
        m.blobs_repacked,
        human_bytes(m.bytes_written),
        m.unindexed_condemned,
        m.unindexed_seen,
        m.keys_condemned,
        human_bytes(m.bytes_condemned),
    ));
    if m.segments_superseded > 0 {
        ctx.say(format!(
            "index: {}consolidate {} segment(s) into {}",
            would, m.segments_superseded, m.segments_written
        ));
    }
    if let Some(id) = &m.mark {
        ctx.say(format!(
            "wrote garbage/{}: what it condemns is deleted by a prune run after the grace period",
            id.short()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::parse_max_unused;

    #[test]
    fn max_unused() {
        assert_eq!(parse_max_unused("5%").unwrap(), 0.05);
        assert_eq!(parse_max_unused("0%").unwrap(), 0.0);
        assert!(parse_max_unused("unlimited").unwrap().is_infinite());
        for bad in ["5", "-1%", "101%", "x%"] {
            assert!(parse_max_unused(bad).is_err(), "{bad}");
        }
    }
}
