//! The one tree walker behind check, prune, restore and stats: folder level by folder level,
//! each level's trees read at once ([`Repository::load_trees`], several reads in flight) in
//! batches of [`TREE_BATCH`], so that a walk over a remote bucket costs one round trip per
//! level rather than one per folder, and a wide level holds at most a batch in memory.

use std::collections::HashSet;

use super::{Index, Repository, TREE_BATCH};
use crate::error::Result;
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

pub struct TreeWalker<'a> {
    repo: &'a Repository,
    index: &'a Index,
    visits: Visits,
    seen: HashSet<TreeId>,
}

impl<'a> TreeWalker<'a> {
    pub fn new(repo: &'a Repository, index: &'a Index, visits: Visits) -> TreeWalker<'a> {
        TreeWalker {
            repo,
            index,
            visits,
            seen: HashSet::new(),
        }
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
        while !level.is_empty() {
            if self.visits == Visits::Once {
                level.retain(|(t, _)| self.seen.insert(*t));
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
