//! `tag` (docs/FORMAT.md §8.1): change a snapshot's tags. A manifest's id is bound to its
//! bytes and the history lists ids, so a manifest is never edited in place: the owner writes
//! a new manifest (same tree, time, host, paths, session and writer; new tags; its own place
//! in the owner's chain; `original` naming the first id), records its reach, then writes a
//! checkpoint that forgets the old id, then deletes the old manifest. A run stopped between
//! the steps leaves both manifests (`forget` removes the extra one); none is ever lost.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::lock::release_after;
use super::{Repository, Session};
use crate::error::Result;
use crate::id::SnapshotId;
use crate::store::FileKind;

/// What to do to each snapshot's tags: replace them all (`set`), or add and remove some.
#[derive(Debug, Clone, Default)]
pub struct TagChange {
    pub set: Option<Vec<String>>,
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

impl TagChange {
    /// The tags after the change: order kept, new ones appended, no duplicates.
    pub fn apply(&self, tags: &[String]) -> Vec<String> {
        let mut out: Vec<String> = match &self.set {
            Some(s) => s.clone(),
            None => tags.to_vec(),
        };
        out.retain(|t| !self.remove.contains(t));
        out.extend(self.add.iter().cloned());
        let mut seen = HashSet::new();
        out.retain(|t| !t.is_empty() && seen.insert(t.clone()));
        out
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_none() && self.add.is_empty() && self.remove.is_empty()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TagReport {
    pub dry_run: bool,
    pub changed: Vec<Retagged>,
    /// Snapshots whose tags were already as asked.
    pub unchanged: Vec<SnapshotId>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Retagged {
    pub from: SnapshotId,
    /// The new snapshot's id (`None` with `--dry-run`).
    pub snapshot: Option<SnapshotId>,
    pub old_tags: Vec<String>,
    pub tags: Vec<String>,
}

impl fmt::Display for TagReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.changed {
            let to = match &r.snapshot {
                Some(id) => format!("now {}", id.short()),
                None => "would be saved anew".into(),
            };
            writeln!(
                f,
                "snapshot {} [{}] -> [{}], {to}",
                r.from.short(),
                r.old_tags.join(","),
                r.tags.join(",")
            )?;
        }
        write!(
            f,
            "{} snapshot(s) {}, {} unchanged",
            self.changed.len(),
            if self.dry_run {
                "would change"
            } else {
                "changed"
            },
            self.unchanged.len()
        )
    }
}

impl Repository {
    /// Applies `change` to each of `ids` (the owner, under the repository lock).
    pub fn retag(
        &self,
        ids: &[SnapshotId],
        change: &TagChange,
        dry_run: bool,
    ) -> Result<TagReport> {
        self.require_owner("tag")?;
        let lock = if dry_run {
            None
        } else {
            Some(self.lock("tag")?)
        };
        let out = self.retag_locked(ids, change, dry_run);
        release_after(lock, out)
    }

    fn retag_locked(
        &self,
        ids: &[SnapshotId],
        change: &TagChange,
        dry_run: bool,
    ) -> Result<TagReport> {
        // The checkpoint below keeps every live snapshot: one withheld now would be lost.
        self.history()?.require_intact("tag")?;
        let mut report = TagReport {
            dry_run,
            ..TagReport::default()
        };
        let mut gone = HashSet::new();
        for id in ids {
            if gone.contains(id) || report.unchanged.contains(id) {
                continue;
            }
            let snap = self.load_snapshot(id)?;
            let tags = change.apply(&snap.tags);
            if tags == snap.tags {
                report.unchanged.push(*id);
                continue;
            }
            let mut saved = None;
            if !dry_run {
                saved = Some(self.save_retagged(id, snap.clone(), tags.clone())?);
                gone.insert(*id);
            }
            report.changed.push(Retagged {
                from: *id,
                snapshot: saved,
                old_tags: snap.tags,
                tags,
            });
        }
        if gone.is_empty() {
            return Ok(report);
        }
        // The new manifests' reach, worked out from their trees and signed by the owner (a
        // copy would have the owner vouch for whatever a writer had claimed).
        let new_ids: Vec<SnapshotId> = report.changed.iter().filter_map(|r| r.snapshot).collect();
        if let Err(e) = self.rebuild_reach(&new_ids) {
            tracing::warn!("reach not recorded ({e}): `custody repair reach` records it");
        }
        if self.is_signed() {
            // Read again, so that the new manifests count as live in the checkpoint.
            let history = self.history()?;
            history.require_intact("tag")?;
            self.write_checkpoint(&history, &gone)?;
        }
        for id in &gone {
            self.store().delete(FileKind::Snapshot, id)?;
            self.store().delete(FileKind::Reach, id)?;
        }
        Ok(report)
    }

    /// Stores `snap` with `tags` as a new manifest sealed under its own session, and a copy
    /// of its reach. Returns the new id.
    fn save_retagged(
        &self,
        id: &SnapshotId,
        mut snap: crate::format::snapshot::Snapshot,
        tags: Vec<String>,
    ) -> Result<SnapshotId> {
        let session = Session::resume(self, snap.session)?;
        let slot = self.next_link()?;
        snap.tags = tags;
        snap.original = Some(snap.original.unwrap_or(*id));
        snap.chain = slot.as_ref().map(|s| s.link);
        let new_id = self.save_snapshot(&session, &snap)?;
        if let Some(slot) = slot {
            slot.commit(self, new_id);
        }
        tracing::info!(from = %id, snapshot = %new_id, "snapshot tagged");
        Ok(new_id)
    }
}
