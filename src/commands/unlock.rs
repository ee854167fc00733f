//! `unlock`: remove stale prune/re-encryption locks (or all of them).

use super::{Ctx, Outcome};
use custody::error::Result;
use custody::repo::lock::UnlockOutput;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Remove every lock, also fresh ones: only when you know the runs holding them are dead.
    #[arg(long)]
    pub remove_all: bool,
}

pub fn run(ctx: &Ctx, args: &Args) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let removed = repo.unlock(args.remove_all)?;
    ctx.emit(&UnlockOutput { removed });
    Ok(Outcome::OK)
}
