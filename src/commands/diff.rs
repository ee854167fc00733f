//! `diff A B`: what changed from snapshot A to snapshot B.

use super::{Ctx, Outcome};
use custody::error::Result;
use custody::repo::diff::{diff, DiffEntry, DiffSummary};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The earlier snapshot (id, prefix or `latest`).
    pub first: String,
    /// The later snapshot.
    pub second: String,
    /// Only the summary, not every path.
    #[arg(long)]
    pub summary: bool,
}

#[derive(serde::Serialize)]
struct Report {
    first: custody::id::SnapshotId,
    second: custody::id::SnapshotId,
    changes: Vec<DiffEntry>,
    summary: DiffSummary,
}

pub fn run(ctx: &Ctx, args: &Args) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let none = Default::default();
    let (a_id, a) = repo.resolve_snapshot(&args.first, &none)?;
    let (b_id, b) = repo.resolve_snapshot(&args.second, &none)?;
    let index = repo.load_index()?;
    let (changes, summary) = diff(&repo, &index, &a, &b)?;
    if ctx.json {
        ctx.print_report(&Report {
            first: a_id,
            second: b_id,
            changes,
            summary,
        });
        return Ok(Outcome::OK);
    }
    if !args.summary {
        for c in &changes {
            super::out_line(format_args!(
                "{}    {}{}",
                c.change.symbol(),
                custody::human::escape(&c.path),
                if c.dir { "/" } else { "" }
            ));
        }
    }
    let s = &summary;
    super::out_line(format_args!(
        "{} -> {}: {} added, {} removed, {} modified, {} type changed, {} metadata only; {} added, {} removed",
        a_id.short(),
        b_id.short(),
        s.added,
        s.removed,
        s.modified,
        s.type_changed,
        s.metadata_only,
        super::human_bytes(s.bytes_added),
        super::human_bytes(s.bytes_removed)
    ));
    Ok(Outcome::OK)
}
