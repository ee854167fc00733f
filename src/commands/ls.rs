//! `ls`: list the files of a snapshot, optionally below a path.

use super::{Ctx, FilterArgs, Outcome};
use custody::error::Result;
use custody::format::name::RawName;
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

fn kind(k: NodeKind) -> &'static str {
    match k {
        NodeKind::File => "file",
        NodeKind::Dir => "dir",
        NodeKind::Symlink => "symlink",
        NodeKind::Fifo => "fifo",
        NodeKind::CharDevice => "chardev",
        NodeKind::BlockDevice => "blockdev",
    }
}

/// What a listing shows of a node. A listing holds every row to sort them, and the node itself
/// (chunk list, extended attributes, ids) is several times larger: `ls` of a million files
/// took 770 MiB with whole nodes.
struct Row {
    path: String,
    kind: NodeKind,
    mode: u32,
    size: u64,
    mtime: (i64, u32),
    target: Option<RawName>,
}

impl Row {
    fn new(path: String, n: Node) -> Row {
        Row {
            path,
            kind: n.kind,
            mode: n.mode,
            size: n.size,
            mtime: (n.mtime_sec, n.mtime_nsec),
            target: n.target,
        }
    }

    fn entry(self) -> LsEntry {
        LsEntry {
            path: self.path,
            kind: kind(self.kind).into(),
            size: self.size,
            mode: self.mode,
            mtime: chrono::DateTime::from_timestamp(self.mtime.0, self.mtime.1),
            target: self.target.map(|t| t.lossy()),
        }
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
    let mut rows: Vec<Row> = Vec::new();
    let mut stack = Vec::new();
    match found.node {
        None => stack.push((snap.tree, prefix.clone())),
        Some(n) => {
            if let (NodeKind::Dir, Some(sub)) = (n.kind, n.subtree) {
                stack.push((sub, prefix.clone()));
            }
            rows.push(Row::new(prefix.clone(), n));
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
            rows.push(Row::new(path, n));
        }
    }
    rows.sort_by(|a, b| a.path.cmp(&b.path));
    if ctx.json {
        let v: Vec<LsEntry> = rows.into_iter().map(Row::entry).collect();
        ctx.print_report(&v);
    } else {
        for n in &rows {
            // Names are escaped for the terminal (JSON keeps them as they are).
            let p = custody::human::escape(&n.path);
            if args.long {
                let t = chrono::DateTime::from_timestamp(n.mtime.0, n.mtime.1)
                    .map(custody::human::local_time)
                    .unwrap_or_default();
                let link = n
                    .target
                    .as_ref()
                    .map(|t| format!(" -> {}", custody::human::escape_bytes(&t.0)))
                    .unwrap_or_default();
                super::out_line(format_args!(
                    "{:<7} {:04o} {:>12} {t} {p}{link}",
                    kind(n.kind),
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
