//! The local cache of snapshot manifests that `backup` and `restore` read the history through
//! (see [`super::cache`], docs/FORMAT.md §14a): both read every manifest the bucket lists.
//!
//! A cached manifest is used only for an id the bucket lists, bound to that manifest
//! (docs/FORMAT.md §2), and only once it passes every check a fetched one passes: so it is
//! the one manifest that id can name.
//!
//! The owner caches manifests *opened*: their plaintext and session, sealed under a key
//! derived from the owner key, which no writer holds. Reading the history then needs no
//! session key, so a long history costs neither a key record download nor a key service call
//! per session. Signature, format, binding and signer checks run on every read, as for a
//! download; only the envelope (which the session key opened once) is not opened again.
//! Other clients (a legacy repository, a reader) cache manifests as stored.
//!
//! Session key records are not cached: a record that unwraps proves nothing (anyone who can
//! wrap under the KEK can make one for any session), so a cached record could keep a wrong
//! key in use after the bucket's record is repaired.

use std::collections::HashSet;
use std::sync::Mutex;

use super::provenance::{Provenance, Signer};
use super::{Repository, SealedCache};
use crate::crypto::envelope::{self, Binding, ObjectKind};
use crate::crypto::kdf::{derive_key, label};
use crate::crypto::Key32;
use crate::error::Result;
use crate::format::snapshot::{bound_id, Snapshot};
use crate::id::{Id, SessionId, SnapshotId};
use crate::store::FileKind;

/// The manifests backup and restore read the history through.
pub(crate) struct HistoryCache {
    folder: SealedCache,
    /// The owner's key for opened manifests; `None`: manifests are cached as stored.
    opened: Option<(Key32, Id)>,
    /// The sessions whose key records the bucket lists, listed with the history when
    /// manifests are cached opened: an entry is used only while its session's record is
    /// there, so a lost record is noticed as it was when every manifest needed its key.
    recorded: Mutex<Option<HashSet<Id>>>,
}

impl HistoryCache {
    /// Whether entries can be judged: opened ones only once `keys/` was listed (by reading
    /// the history). Otherwise they are left alone, neither used nor removed.
    fn usable(&self) -> bool {
        self.opened.is_none() || self.recorded.lock().expect("lock").is_some()
    }

    /// Writes an entry, in place of any: an opened manifest sealed under the owner's cache
    /// key (bound to the repository, the snapshot and the owner), or the manifest as stored.
    fn entry(&self, repo: &Id, id: &SnapshotId, sealed: &[u8], opened: (&[u8], &SessionId)) {
        self.folder.remove(&id.id());
        let Some((key, owner)) = &self.opened else {
            return self.folder.put(&id.id(), sealed);
        };
        let (plain, session) = opened;
        let record = [session.as_bytes().as_slice(), plain].concat();
        let zero = Id::default();
        if let Ok(e) = envelope::seal_blob(key, &binding(repo, &zero, id, owner), &record) {
            self.folder.put(&id.id(), &e);
        }
    }
}

fn binding<'a>(repo: &'a Id, zero: &'a Id, id: &'a SnapshotId, owner: &'a Id) -> Binding<'a> {
    Binding {
        repo,
        kind: ObjectKind::Snapshot,
        container: zero,
        object: id,
        key_id: owner,
    }
}

impl Repository {
    /// Uses a local cache of manifests for reading the history (`None` disables it). Backup
    /// and restore use it; restore then reads the manifest it restores from the bucket
    /// ([`Repository::load_snapshot_from_store`]). Commands that delete or judge (`forget`,
    /// `prune`, `check`, `repair`) and the other readers see the bucket's copies, and so any
    /// manifest replaced there.
    pub fn with_history_cache(mut self, manifests: Option<SealedCache>) -> Repository {
        let opened = match &self.provenance {
            Provenance::Owner { key, .. } => Some((
                derive_key(self.id().as_bytes(), key.seed(), &[label::HISTORY_CACHE]),
                key.id().0,
            )),
            _ => None,
        };
        self.history_cache = manifests.map(|folder| HistoryCache {
            folder,
            opened,
            recorded: Mutex::new(None),
        });
        self
    }

    /// Whether manifests may come from the local cache.
    pub fn uses_history_cache(&self) -> bool {
        self.history_cache.is_some()
    }

    /// A manifest from the cache when its entry there passes every check, else from the
    /// bucket (then cached).
    pub(super) fn load_snapshot_cached(
        &self,
        id: &SnapshotId,
        c: &HistoryCache,
    ) -> Result<(Snapshot, Option<Signer>)> {
        let bound = bound_id::is_bound(&self.secrets.snapshot_id_key, id);
        if let Some(bytes) = c.usable().then(|| c.folder.get(&id.id())).flatten() {
            match self.cached_snapshot(id, c, &bytes) {
                Ok(s) if bound => return Ok(s),
                // Damaged, stale, sealed under a key since retired, or no longer accepted:
                // the bucket's copy decides.
                _ => c.folder.remove(&id.id()),
            }
        }
        let bytes = self.store().get(FileKind::Snapshot, id)?;
        let (plain, session) = self.unseal_manifest(id, &bytes)?;
        let s = self.snapshot_from_opened(id, &plain, &session)?;
        self.cache_manifest(id, &bytes, &plain, &session);
        Ok(s)
    }

    /// Opens and checks one cache entry as [`HistoryCache::entry`] made it.
    fn cached_snapshot(
        &self,
        id: &SnapshotId,
        c: &HistoryCache,
        bytes: &[u8],
    ) -> Result<(Snapshot, Option<Signer>)> {
        let Some((key, owner)) = &c.opened else {
            return self.snapshot_from_sealed(id, bytes);
        };
        let (repo, zero) = (self.id(), Id::default());
        let name = crate::store::object_name(FileKind::Snapshot, &id.id());
        let record = envelope::open_blob(key, &binding(&repo, &zero, id, owner), bytes)
            .map_err(|e| crate::error::Error::integrity(&name, e))?;
        let (session, plain) = record
            .split_first_chunk::<32>()
            .ok_or_else(|| crate::error::Error::integrity(&name, "short cache entry"))?;
        let recorded = c.recorded.lock().expect("lock");
        let listed = recorded.as_ref().is_some_and(|l| l.contains(&Id(*session)));
        drop(recorded);
        if !listed {
            return Err(crate::error::Error::integrity(
                &name,
                "its session's key record is not listed",
            ));
        }
        self.snapshot_from_opened(id, plain, &SessionId(Id(*session)))
    }

    /// Caches a manifest this client just stored (the next backup's parent, most likely) or
    /// just read from the bucket: `sealed` as stored, `plain` what it seals under the key of
    /// `session`. It replaces any entry: one made before `rotate reencrypt` sealed the
    /// manifest again names a session since retired.
    pub(super) fn cache_manifest(
        &self,
        id: &SnapshotId,
        sealed: &[u8],
        plain: &[u8],
        session: &SessionId,
    ) {
        if let Some(c) = &self.history_cache {
            if bound_id::is_bound(&self.secrets.snapshot_id_key, id) {
                c.entry(&self.id(), id, sealed, (plain, session));
            }
        }
    }

    /// The listed snapshots; cached manifests the bucket no longer lists (`forget` removed
    /// them) are dropped.
    pub(super) fn list_history(&self) -> Result<Vec<SnapshotId>> {
        let Some(c) = &self.history_cache else {
            return self.snapshot_ids();
        };
        let listed = match c.opened {
            None => self.snapshot_ids()?,
            Some(_) => {
                let (listed, records) = super::in_flight::join(
                    || self.snapshot_ids(),
                    || self.store().list(FileKind::Key),
                );
                // Without the listing, entries are neither used nor removed this time.
                match records {
                    Ok(r) => {
                        let r = r.into_iter().map(|(id, _)| id).collect();
                        *c.recorded.lock().expect("lock") = Some(r);
                    }
                    Err(e) => tracing::debug!(
                        "key records not listed ({e}): manifests read from the bucket"
                    ),
                }
                listed?
            }
        };
        c.folder.keep_only(&listed.iter().map(|s| s.id()).collect());
        Ok(listed)
    }
}
