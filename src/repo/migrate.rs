//! `custody migrate`: signs a repository made before writer provenance (config format 1,
//! docs/FORMAT.md §17.5). The owner vouches for what the repository holds at that moment: it
//! creates the owner key, signs every index segment, garbage mark and snapshot in place
//! (same names, snapshots under the same session), then raises the config to format 2.
//! Interrupted, it is run again: what it already signed is recognised and passed over.

use bytes::Bytes;

use super::provenance::Provenance;
use super::{Repository, SealedObject, Session};
use crate::crypto::envelope::{self, Binding, ObjectKind};
use crate::error::{Error, Result};
use crate::format::garbage::GarbageMark;
use crate::format::index::IndexSegment;
use crate::format::provenance::{OwnerRecord, PROVENANCE_FORMAT};
use crate::format::signature;
use crate::id::{Id, SessionId, SignerId, SnapshotId};
use crate::store::{object_name, FileKind};

/// What `migrate` did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MigrateReport {
    /// The repository was already signed: nothing to do.
    pub already_signed: bool,
    pub owner: Option<SignerId>,
    pub segments: usize,
    pub marks: usize,
    pub snapshots: usize,
    /// Wrapped session keys whose creation time the owner signed.
    #[serde(default)]
    pub keys: usize,
}

impl std::fmt::Display for MigrateReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.already_signed {
            return write!(
                f,
                "this repository already signs its objects; nothing to do"
            );
        }
        write!(
            f,
            "signed {} index segment(s), {} garbage mark(s), {} snapshot(s) and {} session key record(s) as the owner ({}); \
             the repository is now format {PROVENANCE_FORMAT}: writers need an identity \
             (`key export --role writer`) and a build that signs",
            self.segments,
            self.marks,
            self.snapshots,
            self.keys,
            self.owner.map(|o| o.short()).unwrap_or_default()
        )
    }
}

/// An opened body: `None` when already signed by `owner`, else the unsigned plaintext.
fn unsigned_body(
    kind: ObjectKind,
    repo: &Id,
    object: &Id,
    owner: &SignerId,
    plain: Vec<u8>,
) -> Result<Option<Vec<u8>>> {
    match signature::verify(kind as u8, repo, object, &plain) {
        Ok((_, who)) if who == *owner => Ok(None),
        Ok((_, who)) => Err(Error::untrusted(
            "object",
            format!("signed by {}, not by the owner", who.short()),
        )),
        Err(signature::SignatureError::Unsigned) => Ok(Some(plain)),
        Err(e) => Err(Error::untrusted("object", e)),
    }
}

impl Repository {
    /// Signs a format-1 repository (see the module's doc). Needs the owner's key service.
    pub fn migrate(&mut self) -> Result<MigrateReport> {
        if self.config.body.format >= PROVENANCE_FORMAT {
            return Ok(MigrateReport {
                already_signed: true,
                ..MigrateReport::default()
            });
        }
        let repo = self.id();
        // The owner key: the one a previous, interrupted run made, or a new one.
        let owner = match self.store.get(FileKind::Owner, &Id::default()) {
            Ok(b) => {
                let rec: OwnerRecord = crate::format::from_json("owner record", &b)
                    .map_err(|e| Error::integrity("owner", e))?;
                let (anchor, _) = self.keys.owner_anchor(&repo)?;
                let key = rec.open(&repo, &anchor)?;
                let id = key.id();
                self.provenance = Provenance::Owner {
                    key,
                    roster: super::provenance::Roster {
                        owner: id,
                        ..Default::default()
                    },
                };
                id
            }
            Err(Error::NotFound(_)) => {
                self.refuse_if_already_signed()?;
                self.create_owner()?
            }
            Err(e) => return Err(e),
        };
        crate::failpoint::hit("migrate-after-owner");
        // Until the config says format 2, unsigned objects stay accepted and nothing deletes.
        if let Provenance::Owner { roster, .. } = &mut self.provenance {
            roster.migrating = true;
        }
        let lock = self.lock("migrate")?;
        // A second pass signs what a backup committed during the first (stop backups while
        // migrating: one that commits after the config is raised stays unsigned, untrusted).
        let out = self.sign_everything(&owner).and_then(|mut r| {
            let again = self.sign_everything(&owner)?;
            r.segments += again.segments;
            r.marks += again.marks;
            r.snapshots += again.snapshots;
            r.keys += again.keys;
            Ok(r)
        });
        let mut report = super::lock::release_after(Some(lock), out)?;
        if let Provenance::Owner { roster, .. } = &mut self.provenance {
            roster.migrating = false;
        }
        report.owner = Some(owner);
        let mut config = self.config.clone();
        config.body.format = PROVENANCE_FORMAT;
        config.mac = super::open::mac_with(&self.secrets.config_mac_key, &config.body);
        let json =
            serde_json::to_vec_pretty(&config).map_err(|e| Error::Internal(e.to_string()))?;
        self.store
            .put(FileKind::Config, &Id::default(), Bytes::from(json))?;
        self.config = config;
        Ok(report)
    }

    /// A format-1 config with no `owner` but signed objects is a downgrade (someone deleted
    /// `owner` and rewrote the config, which a writer can): making a new owner key now would
    /// leave every genuine object signed by a key nobody accepts. Refused.
    fn refuse_if_already_signed(&self) -> Result<()> {
        let (repo, zero) = (self.id(), Id::default());
        for (id, _) in self.store.list(FileKind::Index)? {
            let b = Binding {
                repo: &repo,
                kind: ObjectKind::Index,
                container: &zero,
                object: &id,
                key_id: &self.config.body.secret_id,
            };
            let Ok(bytes) = self.store.get(FileKind::Index, &id) else {
                continue;
            };
            let Ok(plain) = envelope::open_object(&self.secrets.index_key, &b, &bytes) else {
                continue;
            };
            if signature::verify(ObjectKind::Index as u8, &repo, &id, &plain).is_ok() {
                return Err(Error::integrity(
                    "owner",
                    format!(
                        "missing, yet {} is signed: this repository was signed before and its owner \
                         record (and format) were removed; restore `owner` and the config from bucket \
                         versions instead of migrating again",
                        object_name(FileKind::Index, &id)
                    ),
                ));
            }
        }
        Ok(())
    }

    fn sign_everything(&self, owner: &SignerId) -> Result<MigrateReport> {
        let mut report = MigrateReport {
            segments: self.sign_in_place::<IndexSegment>(owner)?,
            marks: self.sign_in_place::<GarbageMark>(owner)?,
            ..MigrateReport::default()
        };
        // Session keys: the owner vouches for their creation times as they stand.
        for (id, _) in self.store.list(FileKind::Key)? {
            let session = SessionId(id);
            let mut rec = match self.load_key_record(&session) {
                Ok(r) => r,
                Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            if rec.signer() == Some(*owner) {
                continue;
            }
            self.sign_key_record(&mut rec);
            let json =
                serde_json::to_vec_pretty(&rec).map_err(|e| Error::Internal(e.to_string()))?;
            self.store.put(FileKind::Key, &session, Bytes::from(json))?;
            report.keys += 1;
        }
        let (repo, zero) = (self.id(), Id::default());
        for (id, _) in self.store.list(FileKind::Snapshot)? {
            let id = SnapshotId(id);
            let name = object_name(FileKind::Snapshot, &id);
            let bytes = match self.store.get(FileKind::Snapshot, &id) {
                Ok(b) => b,
                Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let h = envelope::parse_header(&bytes).map_err(|e| Error::integrity(&name, e))?;
            let session = SessionId(h.key_id);
            let dek = self.session_key(&session)?;
            let b = Binding {
                repo: &repo,
                kind: ObjectKind::Snapshot,
                container: &zero,
                object: &id,
                key_id: &session,
            };
            let plain =
                envelope::open_object(&dek, &b, &bytes).map_err(|e| Error::integrity(&name, e))?;
            let Some(json) = unsigned_body(ObjectKind::Snapshot, &repo, &id, owner, plain)
                .map_err(|e| rename(e, &name))?
            else {
                continue;
            };
            // Decodes and checks the id's binding before vouching for it.
            let snap: crate::format::snapshot::Snapshot =
                crate::format::from_json("manifest", &json)
                    .map_err(|e| Error::integrity(&name, e))?;
            if snap.session != session {
                return Err(Error::integrity(
                    &name,
                    "manifest names another session than its key",
                ));
            }
            let key = &self.secrets.snapshot_id_key;
            if crate::format::snapshot::bound_id::is_bound(key, &id)
                && !crate::format::snapshot::bound_id::matches(key, &id, &json)
            {
                return Err(Error::integrity(
                    &name,
                    "the manifest stored under this id is not the one the id was made from",
                ));
            }
            self.put_manifest(&Session::resume(self, session)?, &id, &json, false)?;
            report.snapshots += 1;
        }
        Ok(report)
    }

    /// Signs every unsigned object of a kind sealed under the index key, in place.
    fn sign_in_place<T: SealedObject>(&self, owner: &SignerId) -> Result<usize> {
        let (repo, zero) = (self.id(), Id::default());
        let mut n = 0;
        for (id, _) in self.store.list(T::FILE)? {
            let id = T::Id::from(id);
            let name = object_name(T::FILE, &id);
            let bytes = match self.store.get(T::FILE, &id) {
                Ok(b) => b,
                Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let b = Binding {
                repo: &repo,
                kind: T::KIND,
                container: &zero,
                object: &id,
                key_id: &self.config.body.secret_id,
            };
            let plain = envelope::open_object(&self.secrets.index_key, &b, &bytes)
                .map_err(|e| Error::integrity(&name, e))?;
            let Some(body) =
                unsigned_body(T::KIND, &repo, &id, owner, plain).map_err(|e| rename(e, &name))?
            else {
                continue;
            };
            let obj = T::decode(&body).map_err(|e| Error::integrity(&name, e))?;
            self.save_object(&id, &obj)?;
            n += 1;
        }
        Ok(n)
    }
}

/// Names the object in an error made before its name was known.
fn rename(e: Error, name: &str) -> Error {
    match e {
        Error::Untrusted { reason, .. } => Error::untrusted(name, reason),
        e => e,
    }
}
