//! Damage records (`damaged/<id>`, docs/FORMAT.md §14d): packs that `check` or a restore
//! found missing or damaged. Backups leave them out of deduplication, so the chunks they held
//! are stored again and new snapshots restore; restores already fall back to other copies.

use std::collections::HashSet;

use super::objects::SealedObject;
use super::provenance::Signer;
use super::Repository;
use crate::crypto::envelope::ObjectKind;
use crate::error::Result;
use crate::format::garbage::DamageRecord;
use crate::format::{check_format, from_json, padded_json, DecodeError};
use crate::id::{Id, PackId};
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

    /// Records `packs` as missing or damaged (those not recorded yet), as the owner; a writer
    /// records nothing (its records would be ignored). Returns how many were new.
    pub fn record_damage(&self, packs: &HashSet<PackId>) -> Result<usize> {
        let owner = matches!(
            self.provenance(),
            super::provenance::Provenance::Owner { .. }
        );
        if packs.is_empty() || (self.is_signed() && !owner) {
            return Ok(0);
        }
        let known = self.damaged_packs()?;
        let mut new: Vec<PackId> = packs.difference(&known).copied().collect();
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
}
