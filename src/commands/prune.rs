//! `prune`: delete what no snapshot needs, safely while backups run (two phases, grace period).

use super::progress::with_progress;
use super::{Ctx, Outcome};
use custody::error::{Error, Result};
use custody::repo::activity::Activity;
use custody::repo::prune::{self, PruneOptions};
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
    ctx.emit(&report);
    Ok(Outcome::OK)
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
