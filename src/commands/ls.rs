//! `ls`: list the files of a snapshot, optionally below a path.

use super::{Ctx, FilterArgs, Outcome};
use custody::error::Result;
use custody::format::name::RawName;
use custody::format::tree::{Node, NodeKind};
use custody::id::TreeId;
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

/// What a listing shows of a node (the node itself, with its chunk list, extended attributes
/// and ids, is several times larger).
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

/// What is left to list, in path order: a row, or a folder whose rows come where its path
/// and a slash sort among its siblings.
enum Item {
    Row(Row),
    Folder(TreeId, String),
}

/// A folder's entries as [`Item`]s in the order their paths sort: each node's row under its
/// name, its folder's rows under the name and a slash. Every path below `base/x` starts with
/// `base/x/`, so that is where they all sort among the siblings and their subtrees. (Two
/// sibling folders whose names differ only in bytes that are not UTF-8, and so print alike,
/// are listed one after the other, not interleaved.)
fn items(base: &str, nodes: Vec<Node>) -> Vec<Item> {
    let mut keyed: Vec<(String, Item)> = Vec::with_capacity(nodes.len() * 2);
    for n in nodes {
        let name = n.name.lossy();
        let path = format!("{base}/{name}");
        if let Some(sub) = n.subtree {
            keyed.push((format!("{name}/"), Item::Folder(sub, path.clone())));
        }
        keyed.push((name, Item::Row(Row::new(path, n))));
    }
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    keyed.into_iter().map(|(_, item)| item).collect()
}

/// Prints rows as they come: text lines, or the elements of one JSON array (as
/// [`Ctx::print_report`] would print the whole array). Buffered: standard output flushes
/// every line, and a write per row was a quarter of a listing's time.
struct Printer {
    json: bool,
    long: bool,
    rows: u64,
    out: std::io::BufWriter<std::io::StdoutLock<'static>>,
}

impl Printer {
    fn print(&mut self, text: std::fmt::Arguments) {
        use std::io::Write;
        if let Err(e) = self.out.write_fmt(text) {
            super::stdout_failed(&e);
        }
    }

    fn row(&mut self, n: Row) {
        self.rows += 1;
        if self.json {
            let v = serde_json::to_value(n.entry()).expect("rows serialize");
            let text = serde_json::to_string_pretty(&v).expect("JSON values serialize");
            let opening = if self.rows == 1 { "[\n" } else { ",\n" };
            let indented = text.replace('\n', "\n  ");
            self.print(format_args!("{opening}  {indented}"));
            return;
        }
        // Names are escaped for the terminal (JSON keeps them as they are).
        let p = custody::human::escape(&n.path);
        if self.long {
            let t = chrono::DateTime::from_timestamp(n.mtime.0, n.mtime.1)
                .map(custody::human::local_time)
                .unwrap_or_default();
            let link = n
                .target
                .as_ref()
                .map(|t| format!(" -> {}", custody::human::escape_bytes(&t.0)))
                .unwrap_or_default();
            self.print(format_args!(
                "{:<7} {:04o} {:>12} {t} {p}{link}\n",
                kind(n.kind),
                n.mode,
                n.size
            ));
        } else {
            self.print(format_args!("{p}\n"));
        }
    }

    fn end(mut self) {
        use std::io::Write;
        if self.json {
            let end = if self.rows == 0 { "[]" } else { "\n]" };
            self.print(format_args!("{end}\n"));
        }
        if let Err(e) = self.out.flush() {
            super::stdout_failed(&e);
        }
    }
}

/// Lists as it walks, in path order, holding only the entries of the folders on the way down
/// (holding every row to sort them took 770 MiB for a million files).
pub fn run(ctx: &Ctx, args: &Args) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let (_, snap) = repo.resolve_snapshot(&args.snapshot, &args.filter.filter())?;
    let index = repo.load_index()?;
    let start = args.path.clone().unwrap_or_default();
    // The original path (`/srv/data`) or one from a source's name (`data`).
    let found = locate(&repo, &index, &snap, &start)?;
    let prefix = format!("/{}", found.rel);
    let prefix = prefix.trim_end_matches('/').to_string();
    // Left to list, the next item last.
    let mut stack = Vec::new();
    match found.node {
        None => stack.push(Item::Folder(snap.tree, prefix.clone())),
        Some(n) => {
            if let (NodeKind::Dir, Some(sub)) = (n.kind, n.subtree) {
                stack.push(Item::Folder(sub, prefix.clone()));
            }
            stack.push(Item::Row(Row::new(prefix.clone(), n)));
        }
    }
    let mut out = Printer {
        json: ctx.json,
        long: args.long,
        rows: 0,
        out: std::io::BufWriter::with_capacity(64 << 10, std::io::stdout().lock()),
    };
    // Bounded like every walk per path (a forged graph of shared subtrees expands
    // exponentially): by the folders the manifest records, and by depth.
    let budget = custody::repo::walk::Budget::for_snapshot(&snap);
    let mut expanded = 0u64;
    while let Some(item) = stack.pop() {
        let (tree_id, base) = match item {
            Item::Row(row) => {
                out.row(row);
                continue;
            }
            Item::Folder(tree_id, base) => (tree_id, base),
        };
        expanded += 1;
        if expanded > budget.max_trees {
            return Err(budget.exceeded(&format!("folders expand to more than {expanded} trees")));
        }
        if base.matches('/').count() > budget.max_depth {
            return Err(budget.exceeded("folders nest too deep"));
        }
        let tree = repo.load_tree(&index, &tree_id)?;
        stack.extend(items(&base, tree.nodes).into_iter().rev());
    }
    out.end();
    Ok(Outcome::OK)
}
