//! `unlock`: remove stale prune/re-encryption locks (or all of them).

use serde_json::json;

use super::{Ctx, Outcome};
use custody::error::Result;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Remove every lock, also fresh ones: only when you know the runs holding them are dead.
    #[arg(long)]
    pub remove_all: bool,
}

pub fn run(ctx: &Ctx, args: &Args) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let n = repo.unlock(args.remove_all)?;
    if ctx.json {
        ctx.print_json(&json!({ "removed": n }));
    } else {
        ctx.say(format!("removed {n} lock(s)"));
    }
    Ok(Outcome::OK)
}
