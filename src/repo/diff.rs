//! `diff A B`: what changed between two snapshots, by comparing their trees. Folders whose
//! tree ids are equal are the same down to the last byte (ids are content hashes), so only
//! the folders that changed are read.

use serde::Serialize;

use super::walk::Budget;
use super::{Index, Repository};
use crate::error::Result;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind, Tree};
use crate::id::TreeId;

/// How one path differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    /// Only in the second snapshot (`+`).
    Added,
    /// Only in the first (`-`).
    Removed,
    /// A file whose content changed (`M`).
    Modified,
    /// Another kind of node under the same name (`T`).
    TypeChanged,
    /// Same content, other metadata: mode, owner, time, extended attributes, link target (`U`).
    MetadataOnly,
}

impl Change {
    pub fn symbol(self) -> char {
        match self {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Modified => 'M',
            Change::TypeChanged => 'T',
            Change::MetadataOnly => 'U',
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffEntry {
    pub change: Change,
    pub path: String,
    /// Whether the path is a folder (in the snapshot that has it).
    pub dir: bool,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct DiffSummary {
    pub added: u64,
    pub removed: u64,
    pub modified: u64,
    pub type_changed: u64,
    pub metadata_only: u64,
    /// Bytes of files only in the second snapshot or modified there, and of files only in
    /// the first or modified there.
    pub bytes_added: u64,
    pub bytes_removed: u64,
}

/// What a node holds apart from its name and content: equal means "metadata unchanged".
fn metadata(n: &Node) -> impl PartialEq + '_ {
    (
        n.mode,
        n.mtime_sec,
        n.mtime_nsec,
        n.uid,
        n.gid,
        &n.xattrs,
        &n.target,
        n.rdev,
    )
}

struct Walk<'a> {
    repo: &'a Repository,
    index: &'a Index,
    budget: Budget,
    expanded: u64,
    out: Vec<DiffEntry>,
    summary: DiffSummary,
}

impl Walk<'_> {
    fn tree(&mut self, id: Option<TreeId>) -> Result<Tree> {
        let Some(id) = id else {
            return Ok(Tree::default());
        };
        self.expanded += 1;
        if self.expanded > self.budget.max_trees {
            return Err(self.budget.exceeded(&format!(
                "folders expand to more than {} trees",
                self.expanded
            )));
        }
        self.repo.load_tree(self.index, &id)
    }

    fn note(&mut self, change: Change, path: &str, n: &Node) {
        let s = &mut self.summary;
        match change {
            Change::Added => {
                s.added += 1;
                s.bytes_added += n.size;
            }
            Change::Removed => {
                s.removed += 1;
                s.bytes_removed += n.size;
            }
            Change::Modified => s.modified += 1,
            Change::TypeChanged => s.type_changed += 1,
            Change::MetadataOnly => s.metadata_only += 1,
        }
        self.out.push(DiffEntry {
            change,
            path: path.to_string(),
            dir: n.kind == NodeKind::Dir,
        });
    }

    /// Everything below a folder only one side has, reported as `change`.
    fn whole(&mut self, change: Change, base: &str, subtree: Option<TreeId>) -> Result<()> {
        let mut stack = vec![(subtree, base.to_string())];
        while let Some((id, base)) = stack.pop() {
            for n in self.tree(id)?.nodes {
                let path = format!("{base}/{}", n.name.lossy());
                self.note(change, &path, &n);
                if n.kind == NodeKind::Dir {
                    stack.push((n.subtree, path));
                }
            }
        }
        Ok(())
    }

    fn compare(&mut self, a: Option<TreeId>, b: Option<TreeId>, base: &str) -> Result<()> {
        if a == b {
            return Ok(());
        }
        if base.matches('/').count() > self.budget.max_depth {
            return Err(self.budget.exceeded("folders nest too deep"));
        }
        let (ta, tb) = (self.tree(a)?, self.tree(b)?);
        let mut old = ta.nodes.into_iter().peekable();
        let mut new = tb.nodes.into_iter().peekable();
        loop {
            // Both lists are sorted by name bytes.
            let order = match (old.peek(), new.peek()) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(x), Some(y)) => x.name.0.cmp(&y.name.0),
            };
            match order {
                std::cmp::Ordering::Less => {
                    let n = old.next().expect("peeked");
                    let path = format!("{base}/{}", n.name.lossy());
                    self.note(Change::Removed, &path, &n);
                    if n.kind == NodeKind::Dir {
                        self.whole(Change::Removed, &path, n.subtree)?;
                    }
                }
                std::cmp::Ordering::Greater => {
                    let n = new.next().expect("peeked");
                    let path = format!("{base}/{}", n.name.lossy());
                    self.note(Change::Added, &path, &n);
                    if n.kind == NodeKind::Dir {
                        self.whole(Change::Added, &path, n.subtree)?;
                    }
                }
                std::cmp::Ordering::Equal => {
                    let (x, y) = (old.next().expect("peeked"), new.next().expect("peeked"));
                    let path = format!("{base}/{}", y.name.lossy());
                    if x.kind != y.kind {
                        self.note(Change::TypeChanged, &path, &y);
                    } else if x.kind == NodeKind::File && x.content != y.content {
                        self.summary.bytes_removed += x.size;
                        self.summary.bytes_added += y.size;
                        self.note(Change::Modified, &path, &y);
                    } else if metadata(&x) != metadata(&y) {
                        self.note(Change::MetadataOnly, &path, &y);
                    }
                    if x.kind == NodeKind::Dir && y.kind == NodeKind::Dir {
                        self.compare(x.subtree, y.subtree, &path)?;
                    } else if x.kind == NodeKind::Dir {
                        self.whole(Change::Removed, &path, x.subtree)?;
                    } else if y.kind == NodeKind::Dir {
                        self.whole(Change::Added, &path, y.subtree)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The differences from `a` to `b`, in path order, and their counts.
pub fn diff(
    repo: &Repository,
    index: &Index,
    a: &Snapshot,
    b: &Snapshot,
) -> Result<(Vec<DiffEntry>, DiffSummary)> {
    let (ba, bb) = (Budget::for_snapshot(a), Budget::for_snapshot(b));
    let mut w = Walk {
        repo,
        index,
        budget: Budget {
            max_depth: ba.max_depth.max(bb.max_depth),
            max_trees: ba.max_trees.saturating_add(bb.max_trees),
        },
        expanded: 0,
        out: Vec::new(),
        summary: DiffSummary::default(),
    };
    w.compare(Some(a.tree), Some(b.tree), "")?;
    w.out.sort_by(|x, y| x.path.cmp(&y.path));
    Ok((w.out, w.summary))
}
