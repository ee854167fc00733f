//! The one tree walker behind check, prune, restore and stats: folder level by folder level,
//! each level's trees read at once ([`Repository::load_trees`], several reads in flight) in
//! batches of [`TREE_BATCH`], so that a walk over a remote bucket costs one round trip per
//! level rather than one per folder, and a wide level holds at most a batch in memory.

use std::collections::HashSet;

use super::{Index, Repository, TREE_BATCH};
use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::Tree;
use crate::id::TreeId;

/// How often a tree reachable more than once is visited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visits {
    /// Once per walker, across every walk it makes: what check and prune need (a tree shared
    /// by many snapshots is read once).
    Once,
    /// Once per path it is reached by: what restore and snapshot sizes need.
    PerPath,
}

/// Deeper folder nesting than any file system path allows in practice (`PATH_MAX` is 4096
/// bytes, two per level at the least).
pub const MAX_TREE_DEPTH: usize = 2048;

/// Bounds on a walk that visits a tree once per path (restore, `ls`, snapshot sizes): trees
/// are named by their content, so a forged snapshot can list one subtree many times per
/// level and make a few hundred bytes expand exponentially. A genuine snapshot expands to
/// the folders its backup walked, which its manifest records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub max_depth: usize,
    pub max_trees: u64,
}

impl Budget {
    /// What a snapshot may expand to: twice the folders its manifest records, and a margin.
    pub fn for_snapshot(s: &Snapshot) -> Budget {
        Budget {
            max_depth: MAX_TREE_DEPTH,
            max_trees: s.summary.dirs.saturating_mul(2).saturating_add(1024),
        }
    }

    /// The error for a walk that went past this budget.
    pub fn exceeded(&self, what: &str) -> Error {
        Error::integrity(
            "snapshot tree",
            format!(
                "{what} (at most {} folders and {} levels for this snapshot): a forged graph of \
                 shared subtrees, refused before it is expanded",
                self.max_trees, self.max_depth
            ),
        )
    }
}

pub struct TreeWalker<'a> {
    repo: &'a Repository,
    index: &'a Index,
    visits: Visits,
    seen: HashSet<TreeId>,
    budget: Option<Budget>,
    expanded: u64,
}

impl<'a> TreeWalker<'a> {
    pub fn new(repo: &'a Repository, index: &'a Index, visits: Visits) -> TreeWalker<'a> {
        TreeWalker {
            repo,
            index,
            visits,
            seen: HashSet::new(),
            budget: None,
            expanded: 0,
        }
    }

    /// Refuses to expand past `budget` (a walk per path over one snapshot).
    pub fn with_budget(mut self, budget: Budget) -> TreeWalker<'a> {
        self.budget = Some(budget);
        self
    }

    /// Every tree visited so far (with [`Visits::Once`]).
    pub fn seen(&self) -> &HashSet<TreeId> {
        &self.seen
    }

    /// Walks from `roots`, each with a context `C` (a path, a destination folder, ...).
    /// `visit(id, context, loaded, next)` gets every tree as loaded (or the error that
    /// loading it gave) and pushes the subtrees to descend into, with their contexts, onto
    /// `next`. An error from `visit` stops the walk.
    pub fn walk<C>(
        &mut self,
        roots: Vec<(TreeId, C)>,
        mut visit: impl FnMut(&TreeId, &C, Result<Tree>, &mut Vec<(TreeId, C)>) -> Result<()>,
    ) -> Result<()> {
        let mut level = roots;
        let mut depth = 0;
        while !level.is_empty() {
            if self.visits == Visits::Once {
                level.retain(|(t, _)| self.seen.insert(*t));
            }
            depth += 1;
            self.expanded += level.len() as u64;
            if let Some(b) = &self.budget {
                if depth > b.max_depth {
                    return Err(b.exceeded(&format!("folders nest deeper than {depth} levels")));
                }
                if self.expanded > b.max_trees {
                    return Err(b.exceeded(&format!(
                        "folders expand to more than {} trees",
                        self.expanded
                    )));
                }
            }
            let mut next = Vec::new();
            for batch in level.chunks(TREE_BATCH) {
                let ids: Vec<TreeId> = batch.iter().map(|(id, _)| *id).collect();
                for ((id, ctx), tree) in batch.iter().zip(self.repo.load_trees(self.index, &ids)) {
                    visit(id, ctx, tree, &mut next)?;
                }
            }
            level = next;
        }
        Ok(())
    }
}
