//! `stats`: sizes of the repository, or of one snapshot.

use super::{Ctx, FilterArgs, Outcome};
use custody::error::Result;
use custody::repo::stats;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Only this snapshot (id, prefix or `latest`): its restore size and unique data.
    pub snapshot: Option<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

pub fn run(ctx: &Ctx, args: &Args) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let index = repo.load_index()?;
    match &args.snapshot {
        Some(spec) => {
            let (id, snap) = repo.resolve_snapshot(spec, &args.filter.filter())?;
            ctx.answer(&stats::snapshot_stats(&repo, &index, id, &snap)?);
        }
        None => ctx.answer(&stats::repository_stats(&repo, &index)?),
    }
    Ok(Outcome::OK)
}
