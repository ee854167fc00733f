//! Tamper-evident history (docs/FORMAT.md §18). Every snapshot carries its place in its
//! client's chain; `forget` leaves an owner-signed checkpoint of what it kept; every client
//! remembers the newest history it verified (and may leave it with a witness). A reader then
//! notices a snapshot deleted from the middle of a chain, one a checkpoint kept, and a store
//! put back to an earlier state than one seen before; prune and forget refuse to act on such
//! a store, so hiding snapshots cannot get their data deleted.

mod state;
mod verify;
mod witness;

use std::collections::HashSet;
use std::sync::Arc;

pub use state::StateFile;
pub use verify::{Cause, Entry, Problem, Verdict};
pub use witness::Witness;

use super::objects::SealedObject;
use super::provenance::Provenance;
use super::Repository;
use crate::crypto::envelope::ObjectKind;
use crate::error::{Error, Result};
use crate::format::history::{Checkpoint, Link, Observation, OwnChain, Tip};
use crate::format::snapshot::Snapshot;
use crate::format::{check_format, from_json, padded_json, DecodeError};
use crate::id::{ChainId, CheckpointId, SnapshotId};
use crate::store::{object_name, FileKind};

impl SealedObject for Checkpoint {
    type Id = CheckpointId;
    const FILE: FileKind = FileKind::History;
    const KIND: ObjectKind = ObjectKind::Checkpoint;
    fn encode(&self) -> Vec<u8> {
        padded_json(self, 4096)
    }
    fn decode(plain: &[u8]) -> Result<Self, DecodeError> {
        let c: Checkpoint = from_json("history checkpoint", plain)?;
        check_format("history checkpoint", c.format)?;
        Ok(c)
    }
}

/// What a client brings to the history check besides the store.
#[derive(Debug, Clone, Default)]
pub struct HistoryOptions {
    /// This client's own state; `None` keeps none (a library user, a read-only machine).
    pub state: Option<StateFile>,
    pub witness: Option<Arc<Witness>>,
    /// `--accept-rollback`: take the store as it is, and record (as the owner) that every
    /// snapshot it lacks (rolled back or deleted) is gone.
    pub accept_rollback: bool,
    /// A `--dry-run` command: an accepted rollback holds for this run only, and nothing is
    /// recorded (a preview must not change what later runs accept).
    pub dry_run: bool,
}

/// The snapshots that open, checked against the history.
#[derive(Debug, Default)]
pub struct History {
    /// Every manifest listed, whatever became of it.
    pub stored: Vec<SnapshotId>,
    /// Live snapshots, oldest first.
    pub snapshots: Vec<(SnapshotId, Snapshot)>,
    /// Manifests that do not open or whose signer is not accepted.
    pub unreadable: Vec<Error>,
    /// The ids of the stored manifests that do not open (not those merely refused): kept in
    /// every checkpoint, since they may be genuine snapshots damaged or replaced for now.
    pub unreadable_ids: HashSet<SnapshotId>,
    /// The snapshot each entry of `unreadable` is about, in the same order.
    pub unreadable_of: Vec<SnapshotId>,
    pub verdict: Verdict,
    /// The newest checkpoint, and every stored one.
    pub checkpoint: Option<(CheckpointId, Checkpoint)>,
    pub checkpoints: Vec<CheckpointId>,
    /// Checkpoints that do not open or are not the owner's (passed over; a new checkpoint
    /// replaces them with the others).
    pub bad_checkpoints: Vec<Error>,
    /// What `--accept-rollback` accepted (empty unless it did).
    pub accepted: Vec<Problem>,
}

impl History {
    /// Snapshots deleted or withheld (a fork hides nothing: both snapshots are kept).
    pub fn losses(&self) -> impl Iterator<Item = &Problem> {
        self.verdict.problems.iter().filter(|p| p.is_loss())
    }

    /// Everything missing: the losses, and those not shown because unreadable manifests might
    /// be them. What prune and forget refuse on, and what `--accept-rollback` records as gone.
    pub fn missing(&self) -> impl Iterator<Item = &Problem> {
        self.losses().chain(&self.verdict.suppressed)
    }

    /// The rollback found, as an error (exit 3) that names what is missing.
    pub fn rollback(&self) -> Option<Error> {
        let r: Vec<String> = self
            .verdict
            .problems
            .iter()
            .filter(|p| p.is_rollback())
            .map(|p| p.to_string())
            .collect();
        (!r.is_empty()).then(|| {
            Error::Rollback(format!(
                "{}; the store shows an earlier state of the repository than was seen before \
                 (snapshots hidden or the bucket put back). If an old copy of the bucket was \
                 restored on purpose, run `custody snapshots --accept-rollback` as a key holder \
                 to record that the missing snapshots are gone",
                r.join("; ")
            ))
        })
    }

    /// Refuses a history with anything missing or rolled back: what prune and forget need
    /// before they act (including losses not shown because unreadable manifests might be
    /// them).
    pub fn require_intact(&self, what: &str) -> Result<()> {
        if let Some(e) = self.rollback() {
            return Err(e);
        }
        if let Some(p) = self.missing().next() {
            return Err(Error::integrity(
                "history",
                format!(
                    "{p}; {what} refused while the store lacks snapshots the history lists \
                     (withheld or deleted: acting now could delete data they need); nothing was \
                     changed. See `custody check`"
                ),
            ));
        }
        // A checkpoint that does not open is passed over (`check` names it): the history is
        // then checked against an older one, under which what it forgot shows as missing, so
        // nothing it alone protected can be collected.
        Ok(())
    }

    /// `--accept-rollback` in a `--dry-run` command: what is missing counts as gone for this
    /// run, and nothing records it.
    fn accepted_for_this_run(mut self) -> History {
        let accepted: Vec<Problem> = self.missing().cloned().collect();
        for p in &accepted {
            tracing::warn!("rollback accepted for this run only (--dry-run records nothing): {p}");
        }
        self.verdict.problems.retain(|p| !p.is_loss());
        self.verdict.suppressed.clear();
        self.accepted = accepted;
        self
    }
}

impl Repository {
    /// Sets what this client remembers and where its witness is.
    pub fn with_history(mut self, h: HistoryOptions) -> Repository {
        self.history = h;
        self
    }

    pub fn history_options(&self) -> &HistoryOptions {
        &self.history
    }

    /// Reads every manifest and checks the history. Problems are reported in the result,
    /// not as errors: callers decide (see [`History::rollback`], [`History::require_intact`]).
    /// Remembers (and leaves with the witness) the newest history seen, never less than
    /// before. With `--accept-rollback` and snapshots missing, the owner records a checkpoint
    /// that forgets them, and the history is read again.
    pub fn history(&self) -> Result<History> {
        let h = self.read_history()?;
        if h.missing().next().is_none() {
            return Ok(h);
        }
        if self.history.accept_rollback {
            self.require_owner("--accept-rollback")?;
            if self.history.dry_run {
                // Read again, as the real acceptance does under the lock: what a race with a
                // forget made look lost is not previewed as accepted.
                return self.read_history().map(History::accepted_for_this_run);
            }
            // The checkpoint is written under the repository lock, as forget writes its own:
            // two checkpoints of one generation would fork the history. Under the lock no
            // forget runs, so one read is the whole truth (none of the races below). A caller
            // that took the lock before reading (forget, prune, repair) has read `h` under it.
            return match self.holds_lock() {
                true => self.accept_losses(h),
                false => {
                    let lock = self.lock("accept rollback")?;
                    let out = self.read_history().and_then(|h| self.accept_losses(h));
                    super::lock::release_after(Some(lock), out)
                }
            };
        }
        // A loss may be a race instead: a backup that committed after this reader listed the
        // manifests, kept by a checkpoint a forget wrote before this reader read checkpoints;
        // or a checkpoint listed, then replaced by a forget before it was read. A real loss
        // (or a custodian withholding or rolling back) shows again in a second complete read.
        tracing::debug!("the history shows losses: reading it again");
        self.read_history()
    }

    /// Records (as the owner, under the lock) that every snapshot `h` lacks is gone, and
    /// reads the history again.
    fn accept_losses(&self, h: History) -> Result<History> {
        let accepted: Vec<Problem> = h.missing().cloned().collect();
        if accepted.is_empty() {
            // Read again under the lock: what looked lost was a race with a forget.
            return Ok(h);
        }
        for p in &accepted {
            tracing::warn!("rollback accepted, recorded as gone: {p}");
        }
        self.write_checkpoint(&h, &HashSet::new())?;
        let mut again = self.read_history()?;
        again.accepted = accepted;
        Ok(again)
    }

    fn read_history(&self) -> Result<History> {
        let mut h = History::default();
        // What was seen before is read before the store is listed: a backup that commits
        // in between is then newer than what is known, never missing from the listing.
        let mut known = match self.is_signed() {
            true => self
                .lock_state()?
                .map(|l| l.state.seen.clone())
                .unwrap_or_default(),
            false => Observation::default(),
        };
        let witnessed = match self.is_signed() {
            true => self.read_witness()?,
            false => None,
        };
        if let Some(w) = &witnessed {
            known.merge(w);
        }
        let mut entries = Vec::new();
        // Stored manifests that do not open, or are refused: present, so not "missing".
        let mut refused = HashSet::new();
        let mut manifests = Vec::new();
        // Checkpoints are listed with the manifests, not after them: one round trip instead of
        // two. A forget in between can then make a snapshot look lost in this read (its new
        // checkpoint not listed yet, its manifests already deleted); every loss is confirmed
        // by a second read (docs/FORMAT.md §18.3).
        let (stored, checkpoints) = match self.is_signed() {
            true => super::in_flight::join(
                || self.list_history(),
                || self.object_ids::<Checkpoint>().map(Some),
            ),
            false => (self.list_history(), Ok(None)),
        };
        h.stored = stored?;
        let checkpoints = checkpoints?;
        // Manifests and key records are small and all kept: twice the usual reads at once.
        let loaded =
            super::in_flight::read_all_at(2 * super::in_flight::IN_FLIGHT, &h.stored, |id| {
                self.load_snapshot_signed(id)
            });
        for (id, manifest) in h.stored.clone().into_iter().zip(loaded) {
            match manifest {
                Ok((s, signer)) => {
                    // A chain belongs to the writer that made it, also once the owner has
                    // signed the manifest again (`rotate reencrypt`); unsigned manifests
                    // (accepted only while a migration is unfinished) are in no chain. A
                    // manifest `tag` wrote anew (`original`) is in the owner's chain.
                    let chain_signer = match signer {
                        Some(super::provenance::Signer::Owner(o)) if s.original.is_some() => o,
                        Some(super::provenance::Signer::Owner(o)) => s.writer.unwrap_or(o),
                        Some(w) => w.id(),
                        None => Default::default(),
                    };
                    entries.push(Entry {
                        id,
                        signer: chain_signer,
                        link: signer.and(s.chain),
                        time: s.time,
                    });
                    manifests.push((id, s));
                }
                Err(Error::NotFound(_)) => {}
                Err(e) if e.is_untrusted() => {
                    refused.insert(id);
                    h.unreadable.push(e);
                    h.unreadable_of.push(id);
                }
                Err(e) if e.is_integrity() => {
                    h.unreadable_ids.insert(id);
                    h.unreadable.push(e);
                    h.unreadable_of.push(id);
                }
                Err(e) => return Err(e),
            }
        }
        if !self.is_signed() {
            h.snapshots = manifests;
            h.snapshots
                .sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
            return Ok(h);
        }
        let checkpoint_forks = self.load_checkpoints(&mut h, &checkpoints.unwrap_or_default())?;
        h.verdict = verify::verify(
            h.checkpoint.as_ref().map(|(id, c)| (id, c)),
            &entries,
            &h.unreadable_ids,
            &refused,
            &known,
        );
        h.verdict.problems.extend(checkpoint_forks);
        let client = self.remember(&h.verdict.seen)?;
        if let (Some(w), Some(seen)) = (&self.history.witness, &witnessed) {
            if h.verdict.seen.exceeds(seen) {
                self.publish_observation(w, &h.verdict.seen, client.as_ref());
            }
        }
        let live = &h.verdict.live;
        h.snapshots = manifests
            .into_iter()
            .filter(|(id, _)| live.contains(id))
            .collect();
        h.snapshots
            .sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(h)
    }

    /// Every checkpoint the owner signed; the newest is the one that counts. One listed but
    /// gone when read (replaced by a forget in between) is passed over here; [`Self::history`]
    /// reads everything again before it reports what that looks like.
    fn load_checkpoints(&self, h: &mut History, listed: &[CheckpointId]) -> Result<Vec<Problem>> {
        let mut newest: Option<(CheckpointId, Checkpoint)> = None;
        let mut forks = Vec::new();
        self.for_each_listed_object::<Checkpoint>(listed, |id, c| {
            h.checkpoints.push(id);
            match c {
                Ok(c) => match &newest {
                    Some((nid, n)) if n.generation == c.generation => {
                        forks.push(Problem::Fork(format!(
                            "checkpoints {nid} and {id} both claim number {}",
                            c.generation
                        )));
                    }
                    Some((_, n)) if n.generation > c.generation => {}
                    _ => newest = Some((id, c)),
                },
                Err(e) if e.is_integrity() => h.bad_checkpoints.push(e),
                Err(e) => return Err(e),
            }
            Ok(())
        })?;
        h.checkpoint = newest;
        Ok(forks)
    }

    /// This client's state, locked. A folder that cannot be written (a read-only machine)
    /// only warns; a state file that does not decode stops the command: going on without it
    /// would forget what was seen.
    fn lock_state(&self) -> Result<Option<state::LockedState>> {
        let Some(f) = self.history.state.as_ref() else {
            return Ok(None);
        };
        match f.lock() {
            Ok(l) => Ok(Some(l)),
            Err(e @ Error::Invalid(_)) => Err(Error::invalid(format!(
                "{e}: this client's history state is damaged; move it aside to start afresh \
                 (rollback detection then starts from what the store shows now)"
            ))),
            Err(e) => {
                tracing::warn!(
                    "history state unavailable ({e}): this run cannot compare the repository with what this client saw before"
                );
                Ok(None)
            }
        }
    }

    fn read_witness(&self) -> Result<Option<Observation>> {
        let Some(w) = &self.history.witness else {
            return Ok(None);
        };
        let Some(roster) = self.roster() else {
            return Ok(Some(Observation::default()));
        };
        let obs = w
            .read(
                &self.id(),
                |s| *s == roster.owner,
                // A revoked writer's records are not believed: it could keep claiming.
                |s| *s == roster.owner || roster.enrolled.contains_key(s),
            )
            .map_err(|e| Error::Unavailable(format!("witness {}: {e}", w.location())))?;
        Ok(Some(obs))
    }

    /// Raises this client's state to include `seen`; returns the client's own record name.
    fn remember(&self, seen: &Observation) -> Result<Option<ChainId>> {
        let Some(mut l) = self.lock_state()? else {
            return Ok(None);
        };
        let before = l.state.clone();
        l.state.seen.merge(seen);
        if l.state.client.is_none() {
            l.state.client = Some(ChainId::random()?);
        }
        if l.state != before {
            if let Err(e) = l.save() {
                tracing::warn!("could not remember the history seen: {e}");
            }
        }
        Ok(l.state.client)
    }

    fn publish_observation(&self, w: &Witness, obs: &Observation, client: Option<&ChainId>) {
        if let Provenance::Owner { key, .. } = self.provenance() {
            if let Err(e) = w.publish(key, &self.id(), client, obs) {
                tracing::warn!("could not update the witness {}: {e}", w.location());
            }
        }
    }

    /// Writes a checkpoint (as the owner) that keeps every live snapshot but `remove`, with
    /// every chain's newest tip as seen (so what a rollback lost counts as forgotten), and
    /// deletes older checkpoints.
    pub fn write_checkpoint(
        &self,
        h: &History,
        remove: &HashSet<SnapshotId>,
    ) -> Result<CheckpointId> {
        self.require_owner("writing a history checkpoint")?;
        let found = h.checkpoint.as_ref().map_or(0, |(_, c)| c.generation);
        let cp = Checkpoint {
            format: crate::format::REPO_FORMAT,
            generation: found.max(h.verdict.seen.generation) + 1,
            previous: h.checkpoint.as_ref().map(|(id, _)| *id),
            time: chrono::Utc::now(),
            chains: h.verdict.seen.tips.clone(),
            // Manifests that do not open are kept: they may be genuine snapshots, damaged or
            // replaced for now, and restored from bucket versions later.
            live: {
                let mut l: Vec<SnapshotId> = h
                    .verdict
                    .live
                    .iter()
                    .chain(&h.unreadable_ids)
                    .filter(|id| !remove.contains(id))
                    .copied()
                    .collect();
                l.sort();
                l.dedup();
                l
            },
        };
        let id = CheckpointId::random()?;
        self.save_object(&id, &cp)?;
        let mut seen = h.verdict.seen.clone();
        seen.merge(&Observation {
            generation: cp.generation,
            checkpoint: Some(id),
            tips: vec![],
        });
        let client = self.remember(&seen)?;
        if let Some(w) = &self.history.witness {
            self.publish_observation(w, &seen, client.as_ref());
        }
        for old in h.checkpoints.iter().filter(|c| **c != id) {
            if let Err(e) = self.store().delete(FileKind::History, old) {
                tracing::warn!("{} not deleted: {e}", object_name(FileKind::History, old));
            }
        }
        tracing::info!(checkpoint = %id, generation = cp.generation, "history checkpoint written");
        Ok(id)
    }

    /// The place the next snapshot of this client takes in its chain. The state stays locked
    /// until [`ChainSlot::commit`], so two backups on one machine never take the same place.
    /// Without usable state (a read-only machine), the snapshot starts a chain of its own.
    pub fn next_link(&self) -> Result<Option<ChainSlot>> {
        let Some(signer) = self.signer() else {
            return Ok(None);
        };
        let mut locked = self.lock_state()?;
        let link = match locked.as_mut() {
            Some(l) => {
                let chain = match l.state.own.iter().find(|o| o.signer == signer) {
                    Some(o) => o.chain,
                    None => {
                        let chain = ChainId::random()?;
                        l.state.own.push(OwnChain { signer, chain });
                        chain
                    }
                };
                let tip = l.state.seen.tip(&signer, &chain);
                Link {
                    chain,
                    seq: tip.map_or(1, |t| t.seq + 1),
                    prev: tip.map(|t| t.snapshot),
                }
            }
            None => Link {
                chain: ChainId::random()?,
                seq: 1,
                prev: None,
            },
        };
        Ok(Some(ChainSlot {
            locked,
            signer,
            link,
        }))
    }
}

/// A place in this client's chain, held until the snapshot is stored.
#[derive(Debug)]
pub struct ChainSlot {
    locked: Option<state::LockedState>,
    signer: crate::id::SignerId,
    pub link: Link,
}

impl ChainSlot {
    /// Records that snapshot `id` took this place, and leaves the new tip with the witness.
    /// The snapshot is stored already: failures here only warn.
    pub fn commit(mut self, repo: &Repository, id: SnapshotId) {
        let tip = Tip {
            signer: self.signer,
            chain: self.link.chain,
            seq: self.link.seq,
            snapshot: id,
        };
        if let Some(l) = self.locked.as_mut() {
            l.state.seen.raise(tip);
            if let Err(e) = l.save() {
                tracing::warn!("could not record this snapshot's place in its chain: {e}");
            }
        }
        drop(self.locked.take());
        let key = match repo.provenance() {
            Provenance::Owner { key, .. } | Provenance::Writer { key, .. } => key,
            Provenance::Legacy | Provenance::Reader { .. } => return,
        };
        if let Some(w) = &repo.history_options().witness {
            let obs = Observation {
                tips: vec![tip],
                ..Observation::default()
            };
            if let Err(e) = w.publish(key, &repo.id(), Some(&tip.chain), &obs) {
                tracing::warn!(
                    "could not leave this snapshot's tip with the witness {}: {e}",
                    w.location()
                );
            }
        }
    }
}
