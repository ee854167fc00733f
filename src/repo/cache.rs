//! Local caches of sealed objects as stored: tree blobs, so a re-backup against a remote
//! bucket does not fetch every parent folder listing again; index segments, so a command does
//! not download the whole index every time; and, for backup and restore only, snapshot
//! manifests (rules in `history_cache`), so they do not fetch every manifest of the history
//! to find `latest` and check for rollback. They hold ciphertext exactly as stored (nothing a
//! reader of the cache folder could not read from the bucket), and every hit is verified like
//! a fetch: a damaged entry is dropped and the object fetched again. `check`, `repair`,
//! `forget` and `prune` read manifests from the store only.
//!
//! Location: `$CUSTODY_CACHE_DIR` (or `$XDG_CACHE_HOME/custody`, or `~/.cache/custody`)
//! `/<repository-id>/trees/<blob-id>`, `.../index/<segment-id>` and
//! `.../snapshots/<snapshot-id>`; `CUSTODY_CACHE_DIR=off` disables them. Deleting the folder
//! is always safe.

use std::path::{Path, PathBuf};

use crate::id::Id;

/// `<base>/<repository id>`; `None` when caches are off (no base).
pub fn repository_cache_dir(base: Option<&Path>, repo: &Id) -> Option<PathBuf> {
    Some(base?.join(repo.to_hex()))
}

/// The cache folder of tree blobs.
pub const TREES: &str = "trees";
/// The cache folder of index segments.
pub const SEGMENTS: &str = "index";
/// The cache folder of snapshot manifests (backup and restore: see
/// `Repository::with_history_cache`).
pub const MANIFESTS: &str = "snapshots";

/// One folder of cached sealed objects, named by their ids.
#[derive(Debug, Clone)]
pub struct SealedCache {
    dir: PathBuf,
}

impl SealedCache {
    /// The cache `folder` ([`TREES`], [`SEGMENTS`]) of a repository, or `None` when caches
    /// are disabled or no home folder is known.
    pub fn for_repository(base: Option<&Path>, repo: &Id, folder: &str) -> Option<SealedCache> {
        Some(SealedCache {
            dir: repository_cache_dir(base, repo)?.join(folder),
        })
    }

    fn path(&self, id: &Id) -> PathBuf {
        self.dir.join(id.to_hex())
    }

    pub fn get(&self, id: &Id) -> Option<Vec<u8>> {
        std::fs::read(self.path(id)).ok()
    }

    /// Best effort: a cache that cannot be written only costs a fetch next time.
    pub fn put(&self, id: &Id, sealed: &[u8]) {
        let path = self.path(id);
        if path.exists() {
            return;
        }
        let mut r = [0u8; 8];
        if crate::crypto::random::fill(&mut r).is_err() {
            return;
        }
        let tmp = self
            .dir
            .join(format!(".{}.tmp-{}", id.to_hex(), hex::encode(r)));
        // Private to this user, as the keyring is: nothing here is secret, but other local
        // users need not learn what this user backs up, or when.
        let ok = private_dir(&self.dir).is_ok()
            && write_private(&tmp, sealed).is_ok()
            && std::fs::rename(&tmp, &path).is_ok();
        if !ok {
            let _ = std::fs::remove_file(&tmp);
        }
    }

    /// Removes one entry (best effort).
    pub fn remove(&self, id: &Id) {
        let _ = std::fs::remove_file(self.path(id));
    }

    /// Removes every entry but `ids` (best effort).
    pub fn keep_only(&self, ids: &std::collections::HashSet<Id>) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let stale = name
                .to_str()
                .and_then(|n| n.parse::<Id>().ok())
                .is_some_and(|id| !ids.contains(&id));
            if stale {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Creates `dir` and its missing parents, mode 0700.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Writes a new file, mode 0600.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}
