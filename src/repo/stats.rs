//! `stats`: sizes of the repository, or of one snapshot, as typed reports (`stats --json`
//! prints them as they are; scripts read their field names).

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::walk::{Budget, TreeWalker, Visits};
use super::{Index, Repository};
use crate::error::Result;
use crate::format::snapshot::Snapshot;
use crate::format::tree::NodeKind;
use crate::human::bytes;
use crate::id::SnapshotId;
use crate::pack::BlobType;
use crate::store::FileKind;

/// The whole repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepositoryStats {
    pub snapshots: usize,
    pub packs: usize,
    pub pack_bytes: u64,
    pub data_blobs: u64,
    pub tree_blobs: u64,
    pub unique_plaintext_bytes: u64,
    pub stored_blob_bytes: u64,
}

/// One snapshot: what restoring it writes, and what its unique chunks take in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotStats {
    pub snapshot_id: SnapshotId,
    pub files: u64,
    pub restore_size: u64,
    pub unique_chunks: usize,
    pub stored_size: u64,
}

pub fn repository_stats(repo: &Repository, index: &Index) -> Result<RepositoryStats> {
    let packs = repo.store().list(FileKind::Pack)?;
    let mut s = RepositoryStats {
        snapshots: repo.snapshot_ids()?.len(),
        packs: packs.len(),
        pack_bytes: packs.iter().map(|(_, n)| n).sum(),
        data_blobs: 0,
        tree_blobs: 0,
        unique_plaintext_bytes: 0,
        stored_blob_bytes: 0,
    };
    for l in index.entries() {
        match l.entry.blob_type {
            BlobType::Data => s.data_blobs += 1,
            BlobType::Tree => s.tree_blobs += 1,
        }
        s.unique_plaintext_bytes += l.entry.raw_length as u64;
        s.stored_blob_bytes += l.entry.length as u64;
    }
    Ok(s)
}

pub fn snapshot_stats(
    repo: &Repository,
    index: &Index,
    id: SnapshotId,
    snap: &Snapshot,
) -> Result<SnapshotStats> {
    let root = &snap.tree;
    let (mut files, mut size) = (0u64, 0u64);
    let mut chunks = HashSet::new();
    // Every path counts: a folder stored once but reached twice is restored twice.
    let mut walker =
        TreeWalker::new(repo, index, Visits::PerPath).with_budget(Budget::for_snapshot(snap));
    walker.walk(vec![(*root, ())], |_, _, tree, next| {
        for n in tree?.nodes {
            match n.kind {
                NodeKind::Dir => next.extend(n.subtree.map(|s| (s, ()))),
                NodeKind::File => {
                    files += 1;
                    size += n.size;
                    chunks.extend(n.content);
                }
                _ => {}
            }
        }
        Ok(())
    })?;
    let stored_size = chunks
        .iter()
        .filter_map(|c| index.get(c))
        .map(|l| l.entry.length as u64)
        .sum();
    Ok(SnapshotStats {
        snapshot_id: id,
        files,
        restore_size: size,
        unique_chunks: chunks.len(),
        stored_size,
    })
}

impl fmt::Display for RepositoryStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "snapshots:        {}", self.snapshots)?;
        writeln!(
            f,
            "packs:            {} ({})",
            self.packs,
            bytes(self.pack_bytes)
        )?;
        writeln!(
            f,
            "blobs:            {} data, {} tree",
            self.data_blobs, self.tree_blobs
        )?;
        writeln!(
            f,
            "unique plaintext: {}",
            bytes(self.unique_plaintext_bytes)
        )?;
        let raw = self.unique_plaintext_bytes;
        write!(
            f,
            "stored:           {} ({:.1}% of plaintext)",
            bytes(self.stored_blob_bytes),
            if raw > 0 {
                100.0 * self.stored_blob_bytes as f64 / raw as f64
            } else {
                0.0
            }
        )
    }
}

impl fmt::Display for SnapshotStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "snapshot {}: {} files, {} to restore, {} chunks, {} stored",
            self.snapshot_id.short(),
            self.files,
            bytes(self.restore_size),
            self.unique_chunks,
            bytes(self.stored_size)
        )
    }
}
