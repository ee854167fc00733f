//! `snapshots`: list snapshots.

use super::{Ctx, FilterArgs, Outcome};
use custody::error::Result;
use custody::repo::snapshots::{SnapshotListing, SnapshotTable};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub filter: FilterArgs,
}

pub fn run(ctx: &Ctx, args: &Args) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let filter = args.filter.filter();
    let (snaps, bad) = repo.list_readable_snapshots()?;
    let table = SnapshotTable(
        snaps
            .into_iter()
            .filter(|(_, s)| filter.matches(s))
            .map(|(id, s)| SnapshotListing::new(id, s))
            .collect(),
    );
    if ctx.json {
        ctx.emit(&table);
    } else {
        // The table is the answer even with -q; only the count is chatter.
        super::out_line(table.to_string().trim_end_matches('\n'));
        ctx.say(format!("{} snapshot(s)", table.0.len()));
    }
    // The readable ones are listed; the others are named, and the exit code says so.
    if !bad.is_empty() {
        for e in &bad {
            super::err_line(format_args!("integrity failure: {e}"));
        }
        return Ok(Outcome(super::exit::INTEGRITY));
    }
    Ok(Outcome::OK)
}
