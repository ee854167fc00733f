//! Writer provenance (docs/FORMAT.md §17): whom this client signs as, and whose signatures it
//! accepts. The owner (a key holder whose key service makes the owner anchor) signs with the
//! owner key sealed in `owner`, and accepts the owner and the writers it enrolled; a writer
//! signs with its identity and accepts only itself and the owner, so that another writer's
//! claims never decide what it stores or skips.

use bytes::Bytes;
use chrono::Utc;

use super::objects::SealedObject;
use super::Repository;
use crate::crypto::envelope::ObjectKind;
use crate::crypto::signing::SigningKey;
use crate::error::{Error, Result};
use crate::format::provenance::{Enrollment, OwnerRecord, Revocation, PROVENANCE_FORMAT};
use crate::format::signature;
use crate::format::{check_format, from_json, padded_json, DecodeError};
use crate::id::{Id, SignerId};
use crate::identity::WriterIdentity;
use crate::store::FileKind;

mod roster;

pub use roster::Roster;

/// Writes a small file only its owner may read (the client's copy of the owner record).
pub(crate) fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Who this client is.
#[derive(Debug)]
pub enum Provenance {
    /// A repository made before signed objects (config format 1 and no `owner`): nothing is
    /// signed or verified. `custody migrate` upgrades it.
    Legacy,
    /// A key holder: signs as the owner; accepts the owner and enrolled writers.
    Owner { key: SigningKey, roster: Roster },
    /// A writer: signs as itself; accepts only itself and the owner.
    Writer { key: SigningKey, owner: SignerId },
    /// One key holder of a quorum, below its threshold (docs/FORMAT.md §19): it unwraps the
    /// repository secret but cannot make the owner anchor. It accepts what the owner accepts
    /// (the owner id from the `owner` record, or this client's copy of it), signs nothing,
    /// and only reads, requests and answers restore requests.
    Reader { roster: Roster },
}

/// Who signed an accepted object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    Owner(SignerId),
    Writer(SignerId),
}

impl Signer {
    pub fn id(&self) -> SignerId {
        match self {
            Signer::Owner(s) | Signer::Writer(s) => *s,
        }
    }
}

impl SealedObject for Enrollment {
    type Id = SignerId;
    const FILE: FileKind = FileKind::Writer;
    const KIND: ObjectKind = ObjectKind::Writer;
    fn encode(&self) -> Vec<u8> {
        padded_json(self, 1024)
    }
    fn decode(plain: &[u8]) -> Result<Self, DecodeError> {
        let e: Enrollment = from_json("writer enrollment", plain)?;
        check_format("writer enrollment", e.format)?;
        Ok(e)
    }
}

impl SealedObject for Revocation {
    type Id = SignerId;
    const FILE: FileKind = FileKind::Revocation;
    const KIND: ObjectKind = ObjectKind::Revocation;
    fn encode(&self) -> Vec<u8> {
        padded_json(self, 4096)
    }
    fn decode(plain: &[u8]) -> Result<Self, DecodeError> {
        let r: Revocation = from_json("revocation", plain)?;
        check_format("revocation", r.format)?;
        Ok(r)
    }
}

impl Repository {
    /// Who this client is (see [`Provenance`]).
    pub fn provenance(&self) -> &Provenance {
        &self.provenance
    }

    /// Whether objects are signed here (a repository of format 2).
    pub fn is_signed(&self) -> bool {
        !matches!(self.provenance, Provenance::Legacy)
    }

    /// The owner's roster; `None` for writers and legacy repositories.
    pub fn roster(&self) -> Option<&Roster> {
        match &self.provenance {
            Provenance::Owner { roster, .. } | Provenance::Reader { roster } => Some(roster),
            _ => None,
        }
    }

    /// The key this client signs with, if any.
    pub fn signer(&self) -> Option<SignerId> {
        match &self.provenance {
            Provenance::Owner { key, .. } | Provenance::Writer { key, .. } => Some(key.id()),
            Provenance::Legacy | Provenance::Reader { .. } => None,
        }
    }

    /// Refuses what deletes or rewrites on the owner's authority (prune, forget's prune,
    /// reencrypt, migrate, revocation) unless this client may: the owner of a signed
    /// repository whose roster verifies and whose migration is finished, or anyone in a
    /// legacy one. A writer (an identity set by `--identity`/`CUSTODY_IDENTITY`) trusts only
    /// itself and the owner, so its prune would take every other writer's data for unused;
    /// and an enrollment or revocation that does not verify leaves a writer's objects
    /// untrusted, which must not turn into their deletion.
    pub fn require_owner(&self, what: &str) -> Result<()> {
        match &self.provenance {
            Provenance::Legacy => Ok(()),
            Provenance::Writer { key, .. } => Err(Error::invalid(format!(
                "{what} needs the owner's key service, but this client signs as writer {} (unset --identity / CUSTODY_IDENTITY, or use the owner's keyring)",
                key.id().short()
            ))),
            Provenance::Reader { .. } => Err(Error::KeyDenied {
                key: self.keys.url(),
                operation: what.into(),
                reason: "this needs the repository's owner (a quorum of key holders together); \
                         this client is one key holder"
                    .into(),
            }),
            Provenance::Owner { roster, .. } => {
                if roster.migrating {
                    return Err(Error::Conflict(format!(
                        "{what} waits for an unfinished `custody migrate`: run it again first"
                    )));
                }
                if let Some(e) = roster.problems.first() {
                    return Err(Error::integrity(
                        "writers/ and revoked/",
                        format!(
                            "{what} refused while an enrollment or revocation does not verify ({e}): \
                             its writer's objects count as untrusted, and collecting them could delete \
                             genuine data; restore the object (bucket versions) or see `custody check`"
                        ),
                    ));
                }
                Ok(())
            }
        }
    }

    /// `body` with this client's signature appended (unchanged in a legacy repository).
    pub(crate) fn sign_body(&self, kind: ObjectKind, object: &Id, body: Vec<u8>) -> Vec<u8> {
        match &self.provenance {
            Provenance::Owner { key, .. } | Provenance::Writer { key, .. } => {
                signature::sign(key, kind as u8, &self.id(), object, body)
            }
            Provenance::Legacy | Provenance::Reader { .. } => body,
        }
    }

    /// Signs a new wrapped-key record's creation time (a legacy repository signs nothing).
    pub(crate) fn sign_key_record(&self, rec: &mut crate::format::wrapped::WrappedKeyRecord) {
        if let Provenance::Owner { key, .. } | Provenance::Writer { key, .. } = &self.provenance {
            rec.sign(key);
        }
    }

    /// A session's creation time as far as it is authenticated (docs/FORMAT.md §17.4): the
    /// record's own `created` when the owner or an enrolled writer signed it (or in a legacy
    /// repository, where nothing is signed); otherwise the Unix epoch, so that an unsigned or
    /// forged record counts as old for `rotate reencrypt --before` and key ageing, and can
    /// never exempt a session by claiming to be young.
    pub fn authenticated_created(
        &self,
        rec: &crate::format::wrapped::WrappedKeyRecord,
    ) -> chrono::DateTime<Utc> {
        let trusted = match &self.provenance {
            Provenance::Legacy => true,
            Provenance::Owner { roster, .. } | Provenance::Reader { roster } => {
                rec.signer().is_some_and(|s| {
                    s == roster.owner
                        || (roster.enrolled.contains_key(&s) && !roster.revoked.contains_key(&s))
                })
            }
            Provenance::Writer { key, owner } => {
                rec.signer().is_some_and(|s| s == *owner || s == key.id())
            }
        };
        if trusted {
            rec.created
        } else {
            chrono::DateTime::UNIX_EPOCH
        }
    }

    /// Checks an opened object's signature and signer; returns its body and who signed it
    /// (`None` in a legacy repository, where nothing is signed).
    pub(crate) fn verify_body(
        &self,
        kind: ObjectKind,
        name: &str,
        object: &Id,
        plain: &[u8],
    ) -> Result<(Vec<u8>, Option<Signer>)> {
        let verify = || signature::verify(kind as u8, &self.id(), object, plain);
        let untrusted = |e: signature::SignatureError| Error::untrusted(name, e);
        match &self.provenance {
            Provenance::Legacy => Ok((plain.to_vec(), None)),
            Provenance::Owner { roster, .. } | Provenance::Reader { roster } => {
                let (body, who) = match verify() {
                    // An interrupted migration: unsigned objects are still accepted.
                    Err(signature::SignatureError::Unsigned) if roster.migrating => {
                        return Ok((plain.to_vec(), None))
                    }
                    v => v.map_err(untrusted)?,
                };
                let signer = roster
                    .accept(kind, object, who)
                    .map_err(|why| Error::untrusted(name, why))?;
                Ok((body, Some(signer)))
            }
            Provenance::Writer { key, owner } => {
                let (body, who) = verify().map_err(untrusted)?;
                if who == *owner {
                    Ok((body, Some(Signer::Owner(who))))
                } else if who == key.id() {
                    Ok((body, Some(Signer::Writer(who))))
                } else {
                    Err(Error::untrusted(
                        name,
                        format!(
                            "signed by {} (a writer trusts only itself and the owner)",
                            who.short()
                        ),
                    ))
                }
            }
        }
    }

    /// Decides who this client is, once the config is verified (docs/FORMAT.md §17.2).
    pub(super) fn load_provenance(
        &mut self,
        identity: Option<WriterIdentity>,
        owner_copy: Option<&std::path::Path>,
        reader_ok: bool,
    ) -> Result<()> {
        let repo = self.id();
        if let Some(id) = identity {
            if id.repository != repo {
                return Err(Error::invalid(format!(
                    "the writer identity is for repository {}, not {}",
                    id.repository.short(),
                    repo.short()
                )));
            }
            let (name, me) = (id.name.clone(), id.key.id());
            self.provenance = Provenance::Writer {
                key: id.key,
                owner: id.owner,
            };
            // A revoked writer is told so, rather than storing what nobody will accept. Only
            // a revocation the owner signed counts: junk at that name is reported, not obeyed.
            match self.load_object::<Revocation>(&me) {
                Ok(r) if r.writer == me => {
                    return Err(Error::KeyDenied {
                        key: format!("writer identity {name} ({})", me.short()),
                        operation: "backup".into(),
                        reason: "the owner revoked this writer: what it stores is refused; ask a key holder for a new identity (`key export --role writer`)".into(),
                    })
                }
                Ok(_) | Err(Error::NotFound(_)) => {}
                Err(e) if e.is_integrity() => {
                    tracing::warn!("ignoring a revocation of this writer that the owner did not sign: {e}")
                }
                Err(e) => return Err(e),
            }
            return Ok(());
        }
        let stored = match self.store.get(FileKind::Owner, &Id::default()) {
            Ok(b) => Some(b.to_vec()),
            Err(Error::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        // This client's copy of the record (kept beside its configuration): it survives the
        // store's copy being deleted or replaced, and proves the repository was signed.
        let copy = owner_copy.and_then(|p| std::fs::read(p).ok());
        if stored.is_none() && copy.is_none() {
            if self.config.body.format < PROVENANCE_FORMAT {
                return Ok(());
            }
            return Err(Error::integrity(
                "owner",
                "missing: this repository signs its objects, and the record of its owner key is gone (deleted from the store)",
            ));
        }
        let anchor = match self.keys.owner_anchor(&repo) {
            Err(Error::KeyDenied { .. }) if reader_ok => {
                return self.load_reader(stored.as_deref(), copy.as_deref(), owner_copy);
            }
            a => a,
        };
        let (anchor, described) = anchor.map_err(|e| match e {
            Error::KeyDenied {
                key,
                operation,
                reason,
            } => Error::KeyDenied {
                key,
                operation,
                reason: format!(
                    "{reason}. This repository signs its objects: open it with the owner's key \
                     service, or as a writer with the identity file `key export --role writer` \
                     wrote (identity.json beside a local writer keyring, or --identity FILE)"
                ),
            },
            e => e,
        })?;
        let open = |bytes: &[u8]| -> Result<SigningKey> {
            let record: OwnerRecord =
                from_json("owner record", bytes).map_err(|e| Error::integrity("owner", e))?;
            record.open(&repo, &anchor).map_err(|e| {
                // Sealed under another key service's anchor (say, after `rotate rewrap` to a
                // new quorum): a key problem of this client, not damage. A custodian who
                // edits the field changes only which refusal is shown.
                if record.anchor != described {
                    Error::KeyDenied {
                        key: described.clone(),
                        operation: "owner-anchor".into(),
                        reason: format!(
                            "the repository's owner key is sealed for {}, not for this key service (rotated to another one?)",
                            record.anchor
                        ),
                    }
                } else {
                    e
                }
            })
        };
        let key = match stored.as_deref().map(open) {
            Some(Ok(key)) => {
                if let (Some(path), Some(b)) = (owner_copy, &stored) {
                    if copy.as_deref() != Some(b.as_slice()) {
                        if let Err(e) = write_private(path, b) {
                            tracing::warn!(
                                "could not keep a copy of the owner record at {}: {e}",
                                path.display()
                            );
                        }
                    }
                }
                key
            }
            failed => {
                let why = match failed {
                    Some(Err(e)) => e,
                    _ => Error::integrity("owner", "missing from the store"),
                };
                let Some(Ok(key)) = copy.as_deref().map(open) else {
                    return Err(why);
                };
                // Heal: the genuine record, which only a key holder can make, goes back.
                tracing::warn!("the repository's owner record does not open ({why}): restoring it from this client's copy");
                let b = copy.clone().unwrap_or_default();
                self.store
                    .put(FileKind::Owner, &Id::default(), Bytes::from(b))?;
                key
            }
        };
        let roster = Roster {
            owner: key.id(),
            migrating: self.config.body.format < PROVENANCE_FORMAT,
            ..Roster::default()
        };
        self.provenance = Provenance::Owner { key, roster };
        let roster = self.load_roster()?;
        if let Provenance::Owner { roster: r, .. } = &mut self.provenance {
            *r = roster;
        }
        Ok(())
    }

    /// A key holder below quorum (see [`Provenance::Reader`]): the owner id comes from this
    /// client's copy of the `owner` record when it has one (a reader cannot open the record
    /// to tell a replaced one), else from the store's, which is then kept as the copy (trust
    /// on first use). The owner key never changes (`rotate rewrap` seals the same one), so a
    /// store record naming another is a replacement: refused.
    fn load_reader(
        &mut self,
        stored: Option<&[u8]>,
        copy: Option<&[u8]>,
        copy_path: Option<&std::path::Path>,
    ) -> Result<()> {
        let public = |bytes: &[u8]| -> Result<SignerId> {
            let record: OwnerRecord =
                from_json("owner record", bytes).map_err(|e| Error::integrity("owner", e))?;
            if record.repository != self.id() {
                return Err(Error::integrity("owner", "record of another repository"));
            }
            Ok(record.public)
        };
        let owner = match (copy, stored) {
            (Some(c), s) => {
                let owner = public(c)?;
                if s.is_some_and(|s| public(s).ok() != Some(owner)) {
                    return Err(Error::integrity(
                        "owner",
                        "names another owner key than this client's copy of it: replaced",
                    ));
                }
                owner
            }
            (None, Some(s)) => {
                let owner = public(s)?;
                if let Some(p) = copy_path {
                    if let Err(e) = write_private(p, s) {
                        tracing::warn!(
                            "could not keep a copy of the owner record at {}: {e}",
                            p.display()
                        );
                    }
                }
                owner
            }
            (None, None) => return Err(Error::integrity("owner", "missing from the store")),
        };
        // A reader accepts no unsigned object, even mid-migration: a writer can rewrite the
        // config's format, and a reader cannot tell that from a real migration.
        self.provenance = Provenance::Reader {
            roster: Roster {
                owner,
                ..Roster::default()
            },
        };
        let roster = self.load_roster()?;
        if let Provenance::Reader { roster: r } = &mut self.provenance {
            *r = roster;
        }
        Ok(())
    }

    /// Reads `writers/` and `revoked/`, accepting only what the owner signed.
    fn load_roster(&self) -> Result<Roster> {
        let mut roster = Roster {
            owner: self.roster().map(|r| r.owner).unwrap_or_default(),
            migrating: self.roster().is_some_and(|r| r.migrating),
            ..Roster::default()
        };
        self.for_each_object::<Enrollment>(|id, e| {
            match e {
                Ok(e) if e.writer == id => {
                    roster.enrolled.insert(id, e);
                }
                Ok(_) => roster.problems.push(Error::untrusted(
                    crate::store::object_name(FileKind::Writer, &id),
                    "enrollment names another writer than its file name",
                )),
                Err(e) if e.is_integrity() => roster.problems.push(e),
                Err(e) => return Err(e),
            }
            Ok(())
        })?;
        for (id, _) in self.store.list(FileKind::Revocation)? {
            let id = SignerId(id);
            match self.load_object::<Revocation>(&id) {
                Ok(r) if r.writer == id => {
                    roster.revoked.insert(id, Some(r));
                }
                Ok(_) => {
                    roster.revoked.insert(id, None);
                }
                Err(Error::NotFound(_)) => {}
                Err(e) if e.is_integrity() => {
                    // Fail closed: a revocation that does not verify still revokes.
                    roster.problems.push(e);
                    roster.revoked.insert(id, None);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(roster)
    }

    /// Creates the owner key and its record (a new repository, or `migrate`).
    pub(crate) fn create_owner(&mut self) -> Result<SignerId> {
        let repo = self.id();
        let (anchor, described) = self.keys.owner_anchor(&repo)?;
        let key = SigningKey::generate()?;
        let record = OwnerRecord::seal(&repo, &key, &anchor, &described)?;
        let json =
            serde_json::to_vec_pretty(&record).map_err(|e| Error::Internal(e.to_string()))?;
        self.store
            .put(FileKind::Owner, &Id::default(), Bytes::from(json))?;
        let id = key.id();
        self.provenance = Provenance::Owner {
            key,
            roster: Roster {
                owner: id,
                ..Roster::default()
            },
        };
        Ok(id)
    }
}
