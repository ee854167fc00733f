//! `ls`: list the files of a snapshot, optionally below a path.

use super::{Ctx, FilterArgs, Outcome};
use custody::error::Result;
use custody::format::tree::{Node, NodeKind};
use custody::repo::locate::locate;
use custody::repo::snapshots::LsEntry;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Snapshot id, unique id prefix, or `latest`.
    pub snapshot: String,
    /// Folder or file inside the snapshot (default: everything).
    pub path: Option<String>,
    /// Long listing: type, mode, size, time.
    #[arg(short, long)]
    pub long: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
}

fn kind(n: &Node) -> &'static str {
    match n.kind {
        NodeKind::File => "file",
        NodeKind::Dir => "dir",
        NodeKind::Symlink => "symlink",
        NodeKind::Fifo => "fifo",
        NodeKind::CharDevice => "chardev",
        NodeKind::BlockDevice => "blockdev",
    }
}

pub fn run(ctx: &Ctx, args: &Args) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let (_, snap) = repo.resolve_snapshot(&args.snapshot, &args.filter.filter())?;
    let index = repo.load_index()?;
    let start = args.path.clone().unwrap_or_default();
    // The original path (`/srv/data`) or one from a source's name (`data`).
    let found = locate(&repo, &index, &snap, &start)?;
    let prefix = format!("/{}", found.rel);
    let prefix = prefix.trim_end_matches('/').to_string();
    let mut rows: Vec<(String, Node)> = Vec::new();
    let mut stack = Vec::new();
    match found.node {
        None => stack.push((snap.tree, prefix.clone())),
        Some(n) => {
            if let (NodeKind::Dir, Some(sub)) = (n.kind, n.subtree) {
                stack.push((sub, prefix.clone()));
            }
            rows.push((prefix.clone(), n));
        }
    }
    // Bounded like every walk per path (a forged graph of shared subtrees expands
    // exponentially): by the folders the manifest records, and by depth.
    let budget = custody::repo::walk::Budget::for_snapshot(&snap);
    let mut expanded = 0u64;
    while let Some((tree_id, base)) = stack.pop() {
        expanded += 1;
        if expanded > budget.max_trees {
            return Err(budget.exceeded(&format!("folders expand to more than {expanded} trees")));
        }
        if base.matches('/').count() > budget.max_depth {
            return Err(budget.exceeded("folders nest too deep"));
        }
        let tree = repo.load_tree(&index, &tree_id)?;
        for n in tree.nodes.into_iter().rev() {
            let path = format!("{base}/{}", n.name.lossy());
            if let Some(sub) = n.subtree {
                stack.push((sub, path.clone()));
            }
            rows.push((path, n));
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    if ctx.json {
        let v: Vec<LsEntry> = rows
            .iter()
            .map(|(p, n)| LsEntry::new(p.clone(), n))
            .collect();
        ctx.print_report(&v);
    } else {
        for (p, n) in &rows {
            // Names are escaped for the terminal (JSON keeps them as they are).
            let p = custody::human::escape(p);
            if args.long {
                let t = chrono::DateTime::from_timestamp(n.mtime_sec, n.mtime_nsec)
                    .map(custody::human::local_time)
                    .unwrap_or_default();
                let link = n
                    .target
                    .as_ref()
                    .map(|t| format!(" -> {}", custody::human::escape_bytes(&t.0)))
                    .unwrap_or_default();
                super::out_line(format_args!(
                    "{:<7} {:04o} {:>12} {t} {p}{link}",
                    kind(n),
                    n.mode,
                    n.size
                ));
            } else {
                super::out_line(p);
            }
        }
    }
    Ok(Outcome::OK)
}
