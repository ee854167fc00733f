//! What a snapshot's data needs, in session keys (`reach/<snapshot>`, docs/FORMAT.md §19.1):
//! a restore request releases parts of exactly these keys, so an approval for one snapshot
//! opens no other snapshot's data (unless the two share sessions through deduplication).
//!
//! A key holder below quorum cannot read trees, so it cannot work this set out itself: the
//! backup that made the snapshot records it (it looked every reused blob up in the index),
//! signed; prune and re-encryption, which move blobs into packs of new sessions, add those
//! sessions; `repair reach` (the owner) works it out again by walking the trees.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::objects::SealedObject;
use super::provenance::Signer;
use super::walk::{TreeWalker, Visits};
use super::{Index, Repository};
use crate::crypto::envelope::ObjectKind;
use crate::error::{Error, Result};
use crate::format::request::Reach;
use crate::format::snapshot::Snapshot;
use crate::format::tree::NodeKind;
use crate::format::{check_format, from_json, padded_json, DecodeError, REPO_FORMAT};
use crate::id::{BlobId, SessionId, SnapshotId};
use crate::store::{object_name, FileKind};

impl SealedObject for Reach {
    type Id = SnapshotId;
    const FILE: FileKind = FileKind::Reach;
    const KIND: ObjectKind = ObjectKind::Reach;
    fn encode(&self) -> Vec<u8> {
        padded_json(self, 1024)
    }
    fn decode(plain: &[u8]) -> Result<Self, DecodeError> {
        let r: Reach = from_json("reach record", plain)?;
        check_format("reach record", r.format)?;
        Ok(r)
    }
}

/// A snapshot's reach as a key holder may rely on it.
#[derive(Debug, Clone)]
pub struct VerifiedReach {
    pub reach: Reach,
    /// The reach's sessions and the manifest's own, sorted.
    pub sessions: Vec<SessionId>,
    /// Who vouches for it: `owner`, or the writer's name.
    pub vouched_by: String,
}

/// The sessions of every stored copy of `blobs`.
pub(crate) fn sessions_of<'a>(
    index: &Index,
    blobs: impl IntoIterator<Item = &'a BlobId>,
) -> BTreeSet<SessionId> {
    blobs
        .into_iter()
        .flat_map(|b| index.locations(*b))
        .map(|l| l.session)
        .collect()
}

impl Repository {
    /// Stores the reach of a snapshot just saved. A failure is only warned about: the
    /// snapshot is complete, and `repair reach` can record its reach later.
    pub(crate) fn save_reach(
        &self,
        id: &SnapshotId,
        snap: &Snapshot,
        sessions: BTreeSet<SessionId>,
    ) {
        let reach = Reach {
            format: REPO_FORMAT,
            snapshot: *id,
            host: snap.host.clone(),
            time: snap.time,
            sessions: sessions.into_iter().collect(),
        };
        if let Err(e) = self.save_object(id, &reach) {
            tracing::warn!(
                "could not record which sessions snapshot {} needs ({e}): restore requests \
                 for it need `custody repair reach` first",
                id.short()
            );
        }
    }

    /// Loads a snapshot's reach and checks who vouches for it: the owner, or the writer
    /// that started the manifest's session (its `keys/` record carries that writer's
    /// signature). Another writer's claim about someone else's snapshot is untrusted.
    pub fn verified_reach(&self, id: &SnapshotId) -> Result<VerifiedReach> {
        let name = object_name(FileKind::Reach, id);
        let (reach, signer) = self.load_object_signed::<Reach>(id).map_err(|e| match e {
            Error::NotFound(_) => Error::NotFound(format!(
                "{name}: no record of the sessions snapshot {} needs (made before restore \
                 requests, or by `repair snapshots`); the owner records it with `custody repair reach`",
                id.short()
            )),
            e => e,
        })?;
        if reach.snapshot != *id {
            return Err(Error::untrusted(&name, "names another snapshot"));
        }
        let manifest_session = self.snapshot_session(id)?;
        let vouched_by = match signer {
            // Unsigned is accepted only where nothing is signed; an interrupted (or faked:
            // a writer can rewrite the config's format) migration does not make it the owner's.
            None if self.is_signed() => {
                return Err(Error::untrusted(
                    &name,
                    "not signed, in a repository that signs its objects",
                ))
            }
            None => "nobody (an unsigned repository)".to_string(),
            Some(Signer::Owner(_)) => "owner".to_string(),
            Some(Signer::Writer(w)) => {
                let started_by = self.load_key_record(&manifest_session)?.signer();
                if started_by != Some(w) {
                    return Err(Error::untrusted(
                        &name,
                        format!(
                            "signed by writer {}, which did not make snapshot {}",
                            w.short(),
                            id.short()
                        ),
                    ));
                }
                self.roster()
                    .map(|r| r.describe(&w))
                    .unwrap_or_else(|| format!("writer {}", w.short()))
            }
        };
        let mut sessions: BTreeSet<SessionId> = reach.sessions.iter().copied().collect();
        sessions.insert(manifest_session);
        Ok(VerifiedReach {
            reach,
            sessions: sessions.into_iter().collect(),
            vouched_by,
        })
    }

    /// After blobs of each session in `moved` were copied into packs of the session it maps
    /// to (prune, re-encryption): every reach that names a source names its destination as
    /// well, so that the snapshot's data stays covered wherever its blobs now lie. One pass
    /// over the reach records; returns how many changed.
    pub(crate) fn extend_reach(&self, moved: &HashMap<SessionId, SessionId>) -> Result<usize> {
        if moved.is_empty() {
            return Ok(0);
        }
        let mut changed = Vec::new();
        self.for_each_object::<Reach>(|id, r| {
            match r {
                Ok(mut r) => {
                    let add: BTreeSet<SessionId> = r
                        .sessions
                        .iter()
                        .filter_map(|s| moved.get(s).copied())
                        .filter(|to| !r.sessions.contains(to))
                        .collect();
                    if !add.is_empty() {
                        r.sessions.extend(add);
                        r.sessions.sort();
                        changed.push((id, r));
                    }
                }
                // Left as it is: `check` reports it, `repair reach` replaces it.
                Err(e) if e.is_integrity() => tracing::warn!("{e}"),
                Err(e) => return Err(e),
            }
            Ok(())
        })?;
        for (id, r) in &changed {
            self.save_object(id, r)?;
        }
        Ok(changed.len())
    }

    /// `repair reach` (the owner): works out each snapshot's reach by walking its trees and
    /// records it, signed by the owner. `only` limits it to those snapshots. Returns the
    /// snapshots recorded.
    pub fn rebuild_reach(&self, only: &[SnapshotId]) -> Result<Vec<SnapshotId>> {
        self.require_owner("repair reach")?;
        let index = self.load_index()?;
        let ids = if only.is_empty() {
            self.snapshot_ids()?
        } else {
            only.to_vec()
        };
        let mut done = Vec::new();
        for id in ids {
            let snap = self.load_snapshot(&id)?;
            let mut blobs: HashSet<BlobId> = HashSet::new();
            let mut walker = TreeWalker::new(self, &index, Visits::Once);
            walker.walk(vec![(snap.tree, ())], |tid, _, tree, next| {
                blobs.insert((*tid).into());
                for n in tree?.nodes {
                    match n.kind {
                        NodeKind::Dir => {
                            if let Some(s) = n.subtree {
                                next.push((s, ()));
                            }
                        }
                        _ => blobs.extend(n.content.iter().map(BlobId::from)),
                    }
                }
                Ok(())
            })?;
            let sessions = sessions_of(&index, &blobs);
            let reach = Reach {
                format: REPO_FORMAT,
                snapshot: id,
                host: snap.host.clone(),
                time: snap.time,
                sessions: sessions.into_iter().collect(),
            };
            self.save_object(&id, &reach)?;
            done.push(id);
        }
        Ok(done)
    }
}
