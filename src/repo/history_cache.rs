//! The local caches of snapshot manifests and session key records that `backup` and
//! `restore` read the history through (see [`super::cache`], docs/FORMAT.md §14a): both read
//! every manifest the bucket lists, and each needs its session's key record, two GETs per
//! snapshot otherwise.
//!
//! What keeps the caches from hiding anything the bucket says:
//! - a cached manifest is used only for an id the bucket lists, bound to that manifest
//!   (docs/FORMAT.md §2), and only once it passes every check a fetched one passes;
//! - a cached key record is used only when the bucket lists that session's record at the same
//!   size, so a record deleted there (lost, or removed by `rotate reencrypt` and prune) is
//!   missed as it would be without the cache;
//! - a record fetched from the bucket is cached only once its key has opened a manifest of its
//!   session, so a forged record that unwraps to a wrong key is never kept.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;

use super::provenance::Signer;
use super::{Repository, SealedCache};
use crate::error::Result;
use crate::format::snapshot::{bound_id, Snapshot};
use crate::id::{Id, SessionId, SnapshotId};
use crate::store::FileKind;

/// The two cache folders, and what this run learnt about the bucket's key records.
#[derive(Debug)]
pub(super) struct HistoryCache {
    manifests: SealedCache,
    keys: SealedCache,
    /// The bucket's key records and their sizes, listed once per run.
    listed_keys: OnceLock<HashMap<Id, u64>>,
    /// Records read from the bucket this run, cached once their key opens a manifest.
    unconfirmed: Mutex<HashMap<SessionId, Bytes>>,
}

impl Repository {
    /// Uses local caches of manifests and session key records for reading the history
    /// (`None` for either disables both). Backup and restore use them; restore then reads the
    /// manifest it restores from the bucket ([`Repository::load_snapshot_from_store`]).
    /// Commands that delete or judge (`forget`, `prune`, `check`, `repair`) and the other
    /// readers see the bucket's copies, and so any manifest replaced there.
    pub fn with_history_cache(
        mut self,
        manifests: Option<SealedCache>,
        keys: Option<SealedCache>,
    ) -> Repository {
        self.history_cache = manifests.zip(keys).map(|(manifests, keys)| HistoryCache {
            manifests,
            keys,
            listed_keys: OnceLock::new(),
            unconfirmed: Mutex::new(HashMap::new()),
        });
        self
    }

    /// Whether manifests may come from the local cache.
    pub fn uses_history_cache(&self) -> bool {
        self.history_cache.is_some()
    }

    /// A manifest from the cache when its copy there passes every check, else from the
    /// bucket (then cached).
    pub(super) fn load_snapshot_cached(
        &self,
        id: &SnapshotId,
        c: &HistoryCache,
    ) -> Result<(Snapshot, Option<Signer>)> {
        let bound = bound_id::is_bound(&self.secrets.snapshot_id_key, id);
        if let Some(bytes) = c.manifests.get(&id.id()) {
            match self.snapshot_from_sealed(id, &bytes) {
                Ok(s) if bound => {
                    self.confirm_key_record(&s.0.session);
                    return Ok(s);
                }
                // Damaged, stale, sealed under a key since retired, or no longer accepted:
                // the bucket's copy decides.
                _ => c.manifests.remove(&id.id()),
            }
        }
        let bytes = self.store().get(FileKind::Snapshot, id)?;
        let s = self.snapshot_from_sealed(id, &bytes)?;
        if bound {
            c.manifests.put(&id.id(), &bytes);
        }
        self.confirm_key_record(&s.0.session);
        Ok(s)
    }

    /// Drops cached manifests the bucket no longer lists (`forget` removed them), and lists
    /// the bucket's key records for [`Repository::cached_key_record`] meanwhile.
    pub(super) fn list_history(&self) -> Result<Vec<SnapshotId>> {
        let Some(c) = &self.history_cache else {
            return self.snapshot_ids();
        };
        let (listed, ()) = super::in_flight::join(
            || self.snapshot_ids(),
            || {
                self.listed_keys(c);
            },
        );
        let listed = listed?;
        c.manifests
            .keep_only(&listed.iter().map(|s| s.id()).collect());
        Ok(listed)
    }

    /// The bucket's key records (ids and sizes), listed once; the key cache is trimmed to
    /// them. A listing that fails lists nothing: every record is then read from the bucket.
    fn listed_keys<'a>(&self, c: &'a HistoryCache) -> &'a HashMap<Id, u64> {
        c.listed_keys.get_or_init(|| {
            let listed: HashMap<Id, u64> = self
                .store()
                .list(FileKind::Key)
                .map(|l| l.into_iter().collect())
                .unwrap_or_default();
            c.keys
                .keep_only(&listed.keys().copied().collect::<HashSet<Id>>());
            listed
        })
    }

    /// A session's cached key record, if the bucket lists that record at the same size.
    pub(super) fn cached_key_record(&self, session: &SessionId) -> Option<Vec<u8>> {
        let c = self.history_cache.as_ref()?;
        let bytes = c.keys.get(&session.id())?;
        let size = self.listed_keys(c).get(&session.id()).copied();
        (size == Some(bytes.len() as u64)).then_some(bytes)
    }

    /// Keeps a record just read from the bucket until its key opens a manifest.
    pub(super) fn remember_key_record(&self, session: &SessionId, record: Bytes) {
        if let Some(c) = &self.history_cache {
            c.unconfirmed.lock().expect("lock").insert(*session, record);
        }
    }

    /// Caches the record of `session` read this run: its key just opened a manifest.
    fn confirm_key_record(&self, session: &SessionId) {
        let Some(c) = &self.history_cache else {
            return;
        };
        if let Some(record) = c.unconfirmed.lock().expect("lock").remove(session) {
            c.keys.remove(&session.id());
            c.keys.put(&session.id(), &record);
        }
    }

    /// Caches a manifest this client just stored (the next backup's parent, most likely).
    pub(super) fn cache_new_manifest(&self, id: &SnapshotId, sealed: &[u8]) {
        if let Some(c) = &self.history_cache {
            c.manifests.put(&id.id(), sealed);
        }
    }

    /// Caches a new session's record (genuine: this client just made it); the next backup
    /// reads this session's manifest.
    pub(crate) fn cache_key_record(&self, session: &SessionId, record: &[u8]) {
        if let Some(c) = &self.history_cache {
            c.keys.put(&session.id(), record);
        }
    }
}
