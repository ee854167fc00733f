//! `repair snapshots` (docs/FORMAT.md §14e): for each snapshot whose data is partly lost (a
//! chunk not in the index, in a pack missing from the store or recorded as damaged, or a
//! folder listing that does not load), a new snapshot of what is intact: files with a lost
//! chunk and folders whose listing is lost are left out and named in its manifest
//! (`repaired`). The original is kept; `forget` removes it once the repair is checked.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::compress;
use crate::error::Result;
use crate::format::index::{IndexSegment, PackEntries};
use crate::format::snapshot::{Repaired, Snapshot};
use crate::format::tree::{NodeKind, Tree};
use crate::id::{BlobId, PackId, SnapshotId, TreeId};
use crate::pack::{BlobType, PackBuilder};
use crate::repo::activity::Activity;
use crate::repo::lock::release_after;
use crate::repo::walk::Budget;
use crate::repo::{Index, Repository, Session};
use crate::store::FileKind;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RepairSnapshotsReport {
    pub dry_run: bool,
    /// Snapshots looked at, and those found intact.
    pub checked: usize,
    pub intact: usize,
    pub repaired: Vec<RepairedSnapshot>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepairedSnapshot {
    pub from: SnapshotId,
    /// The new snapshot (`None` with `--dry-run`).
    pub snapshot: Option<SnapshotId>,
    pub missing: Vec<String>,
    pub missing_count: u64,
}

impl fmt::Display for RepairSnapshotsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} snapshot(s) checked, {} intact",
            self.checked, self.intact
        )?;
        for r in &self.repaired {
            let new = r
                .snapshot
                .map(|s| format!("saved as {}", s.short()))
                .unwrap_or_else(|| "would be saved anew".into());
            write!(
                f,
                "\nsnapshot {}: {} path(s) lost, {new}; the original is kept (`custody forget {}` once the new one is checked)",
                r.from.short(),
                r.missing_count,
                r.from.short()
            )?;
            for m in r.missing.iter().take(20) {
                write!(f, "\n  lost: {}", crate::human::escape(m))?;
            }
            if r.missing.len() > 20 {
                write!(f, "\n  ... ({} more in --json)", r.missing.len() - 20)?;
            }
        }
        Ok(())
    }
}

/// Repairs `ids` (every live snapshot when empty).
pub fn repair_snapshots(
    repo: &Repository,
    ids: &[SnapshotId],
    dry_run: bool,
    act: &Activity,
) -> Result<RepairSnapshotsReport> {
    repo.require_owner("repair snapshots")?;
    // Exclusive with prune: the new trees depend on chunks no new segment lists yet.
    let lock = if dry_run {
        None
    } else {
        Some(repo.lock("repair snapshots")?)
    };
    let out = run(repo, ids, dry_run, act);
    release_after(lock, out)
}

fn run(
    repo: &Repository,
    ids: &[SnapshotId],
    dry_run: bool,
    act: &Activity,
) -> Result<RepairSnapshotsReport> {
    act.set("listing the repository");
    let snaps: Vec<(SnapshotId, Snapshot)> = if ids.is_empty() {
        let h = repo.history()?;
        for e in &h.unreadable {
            tracing::warn!("passed over: {e}");
        }
        h.snapshots
    } else {
        ids.iter()
            .map(|id| repo.load_snapshot(id).map(|s| (*id, s)))
            .collect::<Result<_>>()?
    };
    let index = repo.load_index()?;
    let stored: HashSet<PackId> = repo.stored_packs()?.into_keys().collect();
    let damaged = repo.damaged_packs()?;
    // A blob is usable in a stored pack not recorded as damaged; one whose only copies are in
    // packs recorded as damaged is read and verified (a record can be wrong: a forged listing
    // or a short read makes one), so nothing intact is left out on a record's word.
    let usable = |id: BlobId, t: BlobType| {
        let at = index.locations(id);
        at.iter()
            .any(|l| stored.contains(&l.pack) && !damaged.contains(&l.pack))
            || (at.iter().any(|l| stored.contains(&l.pack))
                && repo.load_blob(&index, id, t).is_ok())
    };
    let mut report = RepairSnapshotsReport {
        dry_run,
        ..Default::default()
    };
    let mut writer = TreeWriter::new(repo, dry_run);
    for (n, (id, snap)) in snaps.iter().enumerate() {
        act.set(format!("checking snapshot {}/{}", n + 1, snaps.len()));
        report.checked += 1;
        let mut fix = Fixer {
            repo,
            index: &index,
            usable: &usable,
            writer: &mut writer,
            lost: Vec::new(),
            lost_count: 0,
            files_lost: 0,
            budget: Budget::for_snapshot(snap),
            expanded: 0,
        };
        let root = fix.tree(&snap.tree, "", 0)?;
        let (root, changed) = match root {
            Some(r) => r,
            None => {
                fix.lose("/");
                (
                    fix.writer
                        .put(Tree { nodes: vec![] }, |b| usable(b, BlobType::Tree))?,
                    true,
                )
            }
        };
        if !changed {
            report.intact += 1;
            continue;
        }
        let (lost, lost_count, files_lost) = (fix.lost, fix.lost_count, fix.files_lost);
        let mut saved = None;
        if !dry_run {
            let session = writer.session()?.id;
            writer.finish()?;
            let session = Session::resume(repo, session)?;
            let slot = repo.next_link()?;
            let mut new = snap.clone();
            new.tree = root;
            new.session = session.id;
            new.parent = Some(*id);
            if !new.tags.iter().any(|t| t == "repaired") {
                new.tags.push("repaired".into());
            }
            new.summary.files = new.summary.files.saturating_sub(files_lost);
            new.program = format!("custody {}", env!("CARGO_PKG_VERSION"));
            new.writer = repo.signer();
            new.chain = slot.as_ref().map(|s| s.link);
            new.repaired = Some(Repaired {
                from: *id,
                missing: lost.clone(),
                missing_count: lost_count,
            });
            let new_id = repo.save_snapshot(&session, &new)?;
            if let Some(slot) = slot {
                slot.commit(repo, new_id);
            }
            tracing::info!(from = %id, snapshot = %new_id, lost = lost_count, "snapshot repaired");
            saved = Some(new_id);
        }
        report.repaired.push(RepairedSnapshot {
            from: *id,
            snapshot: saved,
            missing: lost,
            missing_count: lost_count,
        });
    }
    Ok(report)
}

/// Rebuilds one snapshot's trees without what is lost.
struct Fixer<'a, 'w, F: Fn(BlobId, BlobType) -> bool> {
    repo: &'a Repository,
    index: &'a Index,
    usable: &'a F,
    writer: &'w mut TreeWriter<'a>,
    lost: Vec<String>,
    lost_count: u64,
    files_lost: u64,
    budget: Budget,
    expanded: u64,
}

impl<F: Fn(BlobId, BlobType) -> bool> Fixer<'_, '_, F> {
    fn lose(&mut self, path: &str) {
        self.lost_count += 1;
        if self.lost.len() < Repaired::MAX_LISTED {
            self.lost.push(path.to_string());
        }
    }

    /// The tree at `path` without what is lost: its id and whether it changed, or `None`
    /// when its listing itself is lost.
    fn tree(&mut self, id: &TreeId, path: &str, depth: usize) -> Result<Option<(TreeId, bool)>> {
        self.expanded += 1;
        if depth > self.budget.max_depth || self.expanded > self.budget.max_trees {
            return Err(self
                .budget
                .exceeded("folders expand beyond the snapshot's own count"));
        }
        let tree = match self.repo.load_tree(self.index, id) {
            Ok(t) => t,
            Err(e) if e.is_integrity() || matches!(e, crate::error::Error::NotFound(_)) => {
                tracing::warn!("{path}/: {e}");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let mut nodes = Vec::with_capacity(tree.nodes.len());
        let mut changed = false;
        for mut node in tree.nodes {
            let here = format!("{path}/{}", node.name.lossy());
            match node.kind {
                NodeKind::File => {
                    if node
                        .content
                        .iter()
                        .all(|c| (self.usable)(BlobId::from(c), BlobType::Data))
                    {
                        nodes.push(node);
                    } else {
                        self.lose(&here);
                        self.files_lost += 1;
                        changed = true;
                    }
                }
                NodeKind::Dir => match node.subtree {
                    Some(sub) => match self.tree(&sub, &here, depth + 1)? {
                        Some((new, ch)) => {
                            changed |= ch;
                            node.subtree = Some(new);
                            nodes.push(node);
                        }
                        None => {
                            self.lose(&format!("{here}/"));
                            changed = true;
                        }
                    },
                    None => nodes.push(node),
                },
                _ => nodes.push(node),
            }
        }
        if !changed {
            return Ok(Some((*id, false)));
        }
        let usable = |b| (self.usable)(b, BlobType::Tree);
        Ok(Some((self.writer.put(Tree { nodes }, usable)?, true)))
    }
}

/// Stores new trees in packs of one session, and lists them in one index segment.
struct TreeWriter<'a> {
    repo: &'a Repository,
    dry_run: bool,
    session: Option<Session>,
    pack: Option<PackBuilder>,
    done: Vec<PackEntries>,
    added: HashSet<BlobId>,
    ids: HashMap<Vec<u8>, TreeId>,
    /// One zstd context for every tree written, not one per tree.
    compressor: compress::Compressor,
}

impl<'a> TreeWriter<'a> {
    fn new(repo: &'a Repository, dry_run: bool) -> TreeWriter<'a> {
        TreeWriter {
            repo,
            dry_run,
            session: None,
            pack: None,
            done: Vec::new(),
            added: HashSet::new(),
            ids: HashMap::new(),
            compressor: compress::Compressor::new(crate::repo::DEFAULT_COMPRESSION),
        }
    }

    fn session(&mut self) -> Result<&Session> {
        if self.session.is_none() {
            self.session = Some(Session::start(self.repo)?);
        }
        Ok(self.session.as_ref().expect("just started"))
    }

    /// Stores a tree (unless a usable copy is stored already) and returns its id.
    fn put(&mut self, mut tree: Tree, usable: impl Fn(BlobId) -> bool) -> Result<TreeId> {
        let bytes = tree.encode();
        if let Some(id) = self.ids.get(&bytes) {
            return Ok(*id);
        }
        let id = TreeId(self.repo.chunk_id(&bytes));
        self.ids.insert(bytes.clone(), id);
        let blob = BlobId::from(id);
        if self.dry_run || usable(blob) || !self.added.insert(blob) {
            return Ok(id);
        }
        if self.pack.is_none() {
            let key = self.session()?.new_pack_key()?;
            self.pack = Some(PackBuilder::new(key));
        }
        let pack = self.pack.as_mut().expect("just made");
        let compressor = &mut self.compressor;
        pack.add(BlobType::Tree, blob, bytes.len() as u32, |out| {
            compressor.compress_into(&bytes, out)
        })?;
        if pack.size() > 8 << 20 {
            self.upload()?;
        }
        Ok(id)
    }

    fn upload(&mut self) -> Result<()> {
        if let Some(p) = self.pack.take().filter(|p| !p.is_empty()) {
            let p = p.finish()?;
            self.repo
                .store()
                .put(FileKind::Pack, &p.id, p.bytes.into())?;
            self.done.push(PackEntries {
                pack: p.id,
                session: p.session,
                blobs: p.entries,
            });
        }
        Ok(())
    }

    /// Uploads what is pending and lists every pack so far in a new segment (before the
    /// manifest that needs them is written).
    fn finish(&mut self) -> Result<()> {
        self.upload()?;
        if !self.done.is_empty() {
            let seg = IndexSegment {
                packs: std::mem::take(&mut self.done),
                provisional: false,
            };
            self.repo.save_index_segment(&seg)?;
        }
        Ok(())
    }
}
