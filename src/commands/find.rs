//! `find PATTERN...`: where a file is, across snapshots.

use super::{Ctx, FilterArgs, Outcome};
use custody::error::Result;
use custody::repo::find::{find, Matcher};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Patterns (`*`, `?`, `[...]`, `**`): without a `/` they match a name, with one a path
    /// (`/etc/ssh/*` from the root, `log/*.gz` at any depth).
    #[arg(required = true)]
    pub patterns: Vec<String>,
    /// Only these snapshots (ids, prefixes or `latest`; repeatable). Default: every snapshot
    /// that --host/--tag/--path select.
    #[arg(long = "snapshot", short = 's')]
    pub snapshots: Vec<String>,
    /// Match ignoring case.
    #[arg(long, short = 'i')]
    pub ignore_case: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
}

pub fn run(ctx: &Ctx, args: &Args) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let matcher = Matcher::new(&args.patterns, args.ignore_case)?;
    let filter = args.filter.filter();
    let mut snapshots = Vec::new();
    if args.snapshots.is_empty() {
        let (all, problems) = repo.list_readable_snapshots()?;
        for p in &problems {
            super::err_line(format_args!("warning: {p}"));
        }
        snapshots.extend(all.into_iter().filter(|(_, s)| filter.matches(s)));
        snapshots.sort_by_key(|(_, s)| s.time);
    } else {
        for s in &args.snapshots {
            snapshots.push(repo.resolve_snapshot(s, &filter)?);
        }
    }
    let index = repo.load_index()?;
    let hits = find(&repo, &index, &snapshots, &matcher)?;
    if ctx.json {
        ctx.print_report(&hits);
    } else {
        let mut current = None;
        for h in &hits {
            if current != Some(h.snapshot) {
                current = Some(h.snapshot);
                let time = snapshots
                    .iter()
                    .find(|(id, _)| *id == h.snapshot)
                    .map(|(_, s)| custody::human::local_time(s.time))
                    .unwrap_or_default();
                super::out_line(format_args!("snapshot {} of {time}:", h.snapshot.short()));
            }
            let t = h.mtime.map(custody::human::local_time).unwrap_or_default();
            super::out_line(format_args!(
                "  {:>12} {t} {}",
                h.size,
                custody::human::escape(&h.path)
            ));
        }
        if hits.is_empty() {
            ctx.say(format_args!(
                "no matches in {} snapshot(s)",
                snapshots.len()
            ));
        }
    }
    Ok(Outcome::OK)
}
