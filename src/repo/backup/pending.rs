//! Nodes the walker holds before they are final, and how they are finished: a file's chunk
//! ids come back from the hashers, a folder's listing is encoded once its nodes are final.

use crate::error::Result;
use crate::format::tree::{Node, Tree};
use crate::id::{ChunkId, TreeId};
use crate::pack::BlobType;

use super::stages::{stopped, Job};
use super::walker::Walker;

/// A node not yet final: a file whose chunk ids are still with the hashers, or a folder whose
/// tree is not yet encoded. Deferring both keeps the walker from waiting on the workers;
/// [`DEFER_LIMIT`] bounds the memory this takes.
pub(super) struct Pending {
    pub(super) node: Node,
    pub(super) seqs: Vec<u64>,
    pub(super) children: Option<Vec<Pending>>,
}

impl Pending {
    pub(super) fn done(node: Node) -> Pending {
        Pending {
            node,
            seqs: Vec::new(),
            children: None,
        }
    }
}

/// Pending nodes (or nodes held in folder listings not yet encoded) allowed before finished
/// folders are encoded eagerly (small in unit tests, so that path runs).
pub(super) const DEFER_LIMIT: usize = if cfg!(test) { 8 } else { 50_000 };

impl Walker<'_> {
    /// Makes a pending node final: waits for its chunk ids, encodes its folder's tree.
    pub(super) fn finish(&mut self, p: &mut Pending) -> Result<()> {
        if !p.seqs.is_empty() {
            let seqs = std::mem::take(&mut p.seqs);
            p.node.content = self.resolve(&seqs)?;
            self.deferred -= 1;
        }
        if let Some(children) = p.children.take() {
            p.node.subtree = Some(self.store_tree(children)?);
            self.deferred -= 1;
        }
        Ok(())
    }

    /// While more than [`DEFER_LIMIT`] nodes are held, encodes the folders of `out` oldest
    /// first (their files were handed to the hashers longest ago, so their ids are the least
    /// likely to be waited for), from `oldest` on. Files are left to the `deferred` limit.
    pub(super) fn ease(&mut self, out: &mut [Pending], oldest: &mut usize) -> Result<()> {
        while self.held > DEFER_LIMIT && *oldest < out.len() {
            let p = &mut out[*oldest];
            *oldest += 1;
            if p.children.is_some() {
                self.finish(p)?;
            }
        }
        Ok(())
    }

    /// Finishes every node, then encodes and submits the tree.
    pub(super) fn store_tree(&mut self, pending: Vec<Pending>) -> Result<TreeId> {
        self.held = self.held.saturating_sub(pending.len());
        let mut tree = Tree::default();
        for mut p in pending {
            self.finish(&mut p)?;
            tree.nodes.push(p.node);
        }
        let bytes = tree.encode();
        let id = TreeId(self.repo.chunk_id(&bytes));
        if let Some(r) = self.recorder {
            r.put(&id, &bytes);
        }
        if self.dedup.claim(self.index, id.into(), bytes.len()) {
            self.pack_tx
                .send(vec![Job {
                    t: BlobType::Tree,
                    id: id.into(),
                    data: bytes,
                }])
                .map_err(|_| stopped())?;
        }
        Ok(id)
    }

    pub(super) fn resolve(&mut self, seqs: &[u64]) -> Result<Vec<ChunkId>> {
        let mut out = Vec::with_capacity(seqs.len());
        for s in seqs {
            loop {
                if let Some(id) = self.done.remove(s) {
                    out.push(id);
                    break;
                }
                // Nothing may wait in our own batch while we wait for its ids.
                self.flush()?;
                let found = self.ids.recv().map_err(|_| stopped())?;
                self.done.extend(found);
            }
        }
        Ok(out)
    }
}
