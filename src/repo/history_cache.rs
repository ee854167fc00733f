//! The local cache of snapshot manifests that `backup` and `restore` read the history through
//! (see [`super::cache`], docs/FORMAT.md §14a): both read every manifest the bucket lists.
//!
//! A cached manifest is used only for an id the bucket lists, bound to that manifest
//! (docs/FORMAT.md §2), and only once it passes every check a fetched one passes: so it is
//! the one manifest that id can name. Session key records are not cached: a record that
//! unwraps proves nothing (anyone who can wrap under the KEK can make one for any session),
//! so a cached record could keep a wrong key in use after the bucket's record is repaired.

use super::provenance::Signer;
use super::{Repository, SealedCache};
use crate::error::Result;
use crate::format::snapshot::{bound_id, Snapshot};
use crate::id::SnapshotId;
use crate::store::FileKind;

impl Repository {
    /// Uses a local cache of manifests for reading the history (`None` disables it). Backup
    /// and restore use it; restore then reads the manifest it restores from the bucket
    /// ([`Repository::load_snapshot_from_store`]). Commands that delete or judge (`forget`,
    /// `prune`, `check`, `repair`) and the other readers see the bucket's copies, and so any
    /// manifest replaced there.
    pub fn with_history_cache(mut self, manifests: Option<SealedCache>) -> Repository {
        self.history_cache = manifests;
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
        c: &SealedCache,
    ) -> Result<(Snapshot, Option<Signer>)> {
        let bound = bound_id::is_bound(&self.secrets.snapshot_id_key, id);
        if let Some(bytes) = c.get(&id.id()) {
            match self.snapshot_from_sealed(id, &bytes) {
                Ok(s) if bound => return Ok(s),
                // Damaged, stale, sealed under a key since retired, or no longer accepted:
                // the bucket's copy decides.
                _ => c.remove(&id.id()),
            }
        }
        let bytes = self.store().get(FileKind::Snapshot, id)?;
        let s = self.snapshot_from_sealed(id, &bytes)?;
        if bound {
            c.put(&id.id(), &bytes);
        }
        Ok(s)
    }

    /// The listed snapshots; cached manifests the bucket no longer lists (`forget` removed
    /// them) are dropped.
    pub(super) fn list_history(&self) -> Result<Vec<SnapshotId>> {
        let listed = self.snapshot_ids()?;
        if let Some(c) = &self.history_cache {
            c.keep_only(&listed.iter().map(|s| s.id()).collect());
        }
        Ok(listed)
    }

    /// Caches a manifest this client just stored (the next backup's parent, most likely).
    pub(super) fn cache_new_manifest(&self, id: &SnapshotId, sealed: &[u8]) {
        if let Some(c) = &self.history_cache {
            c.put(&id.id(), sealed);
        }
    }
}
