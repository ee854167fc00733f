//! Damage records (`damaged/<id>`, docs/FORMAT.md §14d): packs that `check` or a restore
//! found missing or damaged. Backups leave them out of deduplication, so the chunks they held
//! are stored again and new snapshots restore; restores already fall back to other copies.

use std::collections::{HashMap, HashSet};

use super::index::VouchedSegments;
use super::objects::SealedObject;
use super::provenance::Signer;
use super::Repository;
use crate::crypto::envelope::ObjectKind;
use crate::error::Result;
use crate::format::garbage::DamageRecord;
use crate::format::{check_format, from_json, padded_json, DecodeError};
use crate::id::{BlobId, Id, PackId};
use crate::pack::BlobEntry;
use crate::store::FileKind;

/// Damage records are named by a random id.
pub type DamageId = crate::id::MarkId;

impl SealedObject for DamageRecord {
    type Id = DamageId;
    const FILE: FileKind = FileKind::Damage;
    const KIND: ObjectKind = ObjectKind::Damage;
    fn encode(&self) -> Vec<u8> {
        padded_json(self, 1024)
    }
    fn decode(plain: &[u8]) -> Result<Self, DecodeError> {
        let d: DamageRecord = from_json("damage record", plain)?;
        check_format("damage record", d.format)?;
        Ok(d)
    }
}

impl Repository {
    /// Packs recorded as missing or damaged by the owner (or anyone, in a legacy repository).
    /// A record that does not open, or that someone else signed, is passed over with a
    /// warning: it could only make backups store more.
    pub fn damaged_packs(&self) -> Result<HashSet<PackId>> {
        let mut out = HashSet::new();
        for (id, _) in self.store().list(FileKind::Damage)? {
            match self.load_object_signed::<DamageRecord>(&DamageId::from(id)) {
                Ok((d, None | Some(Signer::Owner(_)))) => out.extend(d.packs),
                Ok(_) => tracing::warn!("damage record {id} not signed by the owner: ignored"),
                Err(crate::error::Error::NotFound(_)) => {}
                Err(e) if e.is_integrity() => tracing::warn!("damage record ignored: {e}"),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Records those of `packs` that are missing or damaged (and not recorded yet), as the
    /// owner; a writer records nothing (its records would be ignored). Each is first read whole
    /// and checked on its own and against its listings (`sound_despite_listings`): a pack
    /// whose failure was only a writer's forged listing is not recorded. Returns how many were
    /// recorded.
    pub fn record_damage(&self, packs: &HashSet<PackId>) -> Result<usize> {
        let owner = matches!(
            self.provenance(),
            super::provenance::Provenance::Owner { .. }
        );
        if packs.is_empty() || (self.is_signed() && !owner) {
            return Ok(0);
        }
        let known = self.damaged_packs()?;
        let candidates: Vec<PackId> = packs.difference(&known).copied().collect();
        let listings = if candidates.is_empty() {
            None
        } else {
            // Without the listings nothing can be told apart: every candidate is recorded.
            self.load_segments_vouched()
                .inspect_err(|e| tracing::warn!("index not read to check damage: {e}"))
                .ok()
        };
        let mut new = Vec::new();
        for pack in candidates {
            let sound = match &listings {
                Some(listings) => self.sound_despite_listings(&pack, listings)?,
                None => false,
            };
            if !sound {
                new.push(pack);
            }
        }
        if new.is_empty() {
            return Ok(0);
        }
        new.sort();
        let rec = DamageRecord {
            format: crate::format::REPO_FORMAT,
            time: chrono::Utc::now(),
            packs: new,
        };
        self.save_object(&DamageId::from(Id::random()?), &rec)?;
        tracing::warn!(
            packs = rec.packs.len(),
            "recorded as damaged: backups store their chunks again"
        );
        Ok(rec.packs.len())
    }

    /// Whether `pack` is sound although a listing of it failed: read whole (at most
    /// [`MAX_PACK`](super::MAX_PACK) bytes), its header verifies under the session that sealed
    /// it and so does every blob the header lists, every listing names that session, and every
    /// listing the owner vouched for (all, in a legacy repository) matches the header. Then what
    /// failed was a listing a writer forged (a genuine blob's place stretched, a blob the pack
    /// never held), and recording the pack would make every later backup store its chunks
    /// again. Anything short of that counts as damage, because recording a sound pack costs
    /// space and trusting a damaged one costs data: a pack a writer replaced with one sealed
    /// under its own session names another session than its listings, and one rewritten under
    /// the same session by its own writer no longer matches the listings the owner vouched for
    /// (the writer's own, unvouched listings are trusted only by that writer's backups).
    fn sound_despite_listings(&self, pack: &PackId, listings: &VouchedSegments) -> Result<bool> {
        let read = self
            .store()
            .size(FileKind::Pack, pack)
            .and_then(|size| {
                if size > super::MAX_PACK {
                    return Err(crate::error::Error::integrity(
                        crate::store::object_name(FileKind::Pack, pack),
                        "larger than any pack",
                    ));
                }
                self.store().get(FileKind::Pack, pack)
            })
            .and_then(|bytes| super::check::verify_pack(self, pack, None, &[], &bytes));
        let (sealed_by, entries) = match read {
            Ok(v) => v,
            Err(e) if e.is_key_service() => return Err(e),
            Err(_) => return Ok(false),
        };
        let in_header: HashMap<BlobId, BlobEntry> = entries.iter().map(|e| (e.id, *e)).collect();
        let (segments, vouched) = listings;
        for (id, seg) in segments {
            for p in seg.packs.iter().filter(|p| p.pack == *pack) {
                let matches = || p.blobs.iter().all(|b| in_header.get(&b.id) == Some(b));
                if p.session != sealed_by || (vouched.contains(id) && !matches()) {
                    return Ok(false);
                }
            }
        }
        tracing::warn!(
            %pack,
            "pack verifies and matches every listing the owner vouched for: the listings that \
             failed in it are forged or corrupt (check names them); not recorded as damaged"
        );
        Ok(true)
    }
}
