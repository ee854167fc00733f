//! `tag`: add, remove or replace snapshot tags (the owner).

use super::{Ctx, FilterArgs, Outcome};
use custody::error::{Error, Result};
use custody::repo::tag::TagChange;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Snapshots (ids, prefixes or `latest`). Default, as in restic: every snapshot that
    /// --host/--tag/--path select.
    pub snapshots: Vec<String>,
    /// Add these tags (repeatable or comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "TAG")]
    pub add: Vec<String>,
    /// Remove these tags (repeatable or comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "TAG")]
    pub remove: Vec<String>,
    /// Replace all tags with these (`--set ''` removes every tag).
    #[arg(long, value_delimiter = ',', value_name = "TAG", conflicts_with_all = ["add", "remove"])]
    pub set: Option<Vec<String>>,
    /// Say what would change, and change nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
}

pub fn run(ctx: &Ctx, args: &Args) -> Result<Outcome> {
    let change = TagChange {
        set: args.set.clone(),
        add: args.add.clone(),
        remove: args.remove.clone(),
    };
    if change.is_empty() {
        return Err(Error::invalid(
            "say what to change: --add, --remove or --set",
        ));
    }
    let repo = ctx.open_repo()?;
    // Before reading manifests, which a writer cannot open anyway: say why.
    repo.require_owner("tag")?;
    let filter = args.filter.filter();
    let ids: Vec<_> = if args.snapshots.is_empty() {
        let (all, problems) = repo.list_readable_snapshots()?;
        for p in &problems {
            super::err_line(format_args!("warning: {p}"));
        }
        all.into_iter()
            .filter(|(_, s)| filter.matches(s))
            .map(|(id, _)| id)
            .collect()
    } else {
        args.snapshots
            .iter()
            .map(|s| repo.resolve_snapshot(s, &filter).map(|(id, _)| id))
            .collect::<Result<_>>()?
    };
    if ids.is_empty() {
        return Err(Error::invalid("no snapshot matches"));
    }
    let report = repo.retag(&ids, &change, args.dry_run)?;
    ctx.emit(&report);
    Ok(Outcome::OK)
}
