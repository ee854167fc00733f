//! `snapshots`: list snapshots.

use serde_json::json;

use super::{human_bytes, Ctx, FilterArgs, Outcome};
use custody::error::Result;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub filter: FilterArgs,
}

pub fn run(ctx: &Ctx, args: &Args) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let filter = args.filter.filter();
    let list: Vec<_> = repo
        .list_snapshots()?
        .into_iter()
        .filter(|(_, s)| filter.matches(s))
        .collect();
    if ctx.json {
        let v: Vec<_> = list
            .iter()
            .map(|(id, s)| {
                json!({
                    "id": id, "short_id": id.short(), "time": s.time, "host": s.host,
                    "username": s.username, "paths": s.paths, "tags": s.tags, "tree": s.tree,
                    "session": s.session, "parent": s.parent, "summary": s.summary,
                })
            })
            .collect();
        ctx.print_json(&serde_json::Value::Array(v));
        return Ok(Outcome::OK);
    }
    println!(
        "{:<10} {:<20} {:<16} {:>11}  {:<12} paths",
        "id", "time", "host", "size", "tags"
    );
    for (id, s) in &list {
        println!(
            "{:<10} {:<20} {:<16} {:>11}  {:<12} {}",
            id.short(),
            s.time.format("%Y-%m-%d %H:%M:%S"),
            s.host,
            human_bytes(s.summary.bytes_processed),
            s.tags.join(","),
            s.paths.join(" ")
        );
    }
    ctx.say(format!("{} snapshot(s)", list.len()));
    Ok(Outcome::OK)
}
