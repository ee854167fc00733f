//! `migrate`: sign a repository made before writer provenance (docs/FORMAT.md §17.5).

use super::{Ctx, Outcome};
use custody::error::Result;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {}

pub fn run(ctx: &Ctx, _args: &Args) -> Result<Outcome> {
    let mut repo = ctx.open_repo()?;
    let report = repo.migrate()?;
    ctx.emit(&report);
    Ok(Outcome::OK)
}
