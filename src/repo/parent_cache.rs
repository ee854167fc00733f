//! The local parent cache: the folder listings (trees) of the last backup of each group of
//! paths on this machine, so that the next backup recognises unchanged files (same size,
//! mtime, ctime, inode, and every chunk still indexed) without reading them, also for
//! write-only clients, which cannot read snapshots from the repository.
//!
//! Trees are sealed under a key derived from the repository secret `M` (which writers hold)
//! and checked against their id when read, so a cache altered by someone without the keyring
//! is ignored, never trusted. Layout: `<cache>/<repository id>/parents/<group>/current/root`
//! (the root tree id) and `.../current/trees/<tree id>`, where `<group>` is a hash of the host
//! and the sorted paths. Only the last backup of a group is kept; the cache is best effort
//! and deleting it is always safe (the next backup reads every file).

use std::path::{Path, PathBuf};

use super::Repository;
use crate::crypto::envelope::{self, Binding, ObjectKind};
use crate::crypto::Key32;
use crate::format::tree::Tree;
use crate::id::{Id, TreeId};

pub struct ParentCache {
    group: PathBuf,
    key: Key32,
    repo: Id,
    secret_id: Id,
}

impl std::fmt::Debug for ParentCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParentCache")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl ParentCache {
    /// The cache of one (host, paths) group, or `None` when caching is off.
    pub fn for_group(
        repo: &Repository,
        cache_dir: Option<&std::path::Path>,
        host: &str,
        paths: &[String],
    ) -> Option<ParentCache> {
        let mut sorted = paths.to_vec();
        sorted.sort();
        let mut name = host.as_bytes().to_vec();
        for p in &sorted {
            name.push(0);
            name.extend_from_slice(p.as_bytes());
        }
        let group = hex::encode(&ring::digest::digest(&ring::digest::SHA256, &name).as_ref()[..16]);
        let id = repo.id();
        Some(ParentCache {
            group: super::cache::repository_cache_dir(cache_dir, &id)?
                .join("parents")
                .join(group),
            key: repo.parent_cache_key().clone(),
            repo: id,
            secret_id: repo.config().body.secret_id,
        })
    }

    fn binding<'a>(&'a self, tree: &'a Id, zero: &'a Id) -> Binding<'a> {
        Binding {
            repo: &self.repo,
            kind: ObjectKind::TreeBlob,
            container: zero,
            object: tree,
            key_id: &self.secret_id,
        }
    }

    /// The root tree of the last backup of this group.
    pub fn root(&self) -> Option<TreeId> {
        std::fs::read_to_string(self.group.join("current/root"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// A tree of the last backup, opened and checked against its id; `None` if missing or
    /// not valid.
    pub fn load_tree(&self, repo: &Repository, id: &TreeId) -> Option<Tree> {
        let sealed = std::fs::read(self.group.join("current/trees").join(id.to_hex())).ok()?;
        let zero = Id::default();
        let plain = envelope::open_object(&self.key, &self.binding(id, &zero), &sealed).ok()?;
        if repo.chunk_id(&plain) != **id {
            return None;
        }
        Tree::decode(&plain).ok()
    }

    /// Starts recording the trees of a new backup beside the current ones.
    pub fn recorder(&self) -> Option<ParentRecorder<'_>> {
        let mut r = [0u8; 8];
        crate::crypto::random::fill(&mut r).ok()?;
        let dir = self.group.join(format!("new-{}", hex::encode(r)));
        if let Err(e) = std::fs::create_dir_all(dir.join("trees")) {
            // Said once per run: without it the next backup reads every file again.
            tracing::warn!(
                "the local parent cache {} cannot be written ({e}): the next backup will read \
                 every file again (set CUSTODY_CACHE_DIR to a writable folder)",
                self.group.display()
            );
            return None;
        }
        Some(ParentRecorder { cache: self, dir })
    }
}

/// The trees of a backup in progress; they replace the current ones on [`ParentRecorder::commit`].
pub struct ParentRecorder<'a> {
    cache: &'a ParentCache,
    dir: PathBuf,
}

impl ParentRecorder<'_> {
    /// Best effort: a tree that cannot be written only means its files are read next time.
    pub fn put(&self, id: &TreeId, plain: &[u8]) {
        let zero = Id::default();
        if let Ok(sealed) =
            envelope::seal_object(&self.cache.key, &self.cache.binding(id, &zero), plain)
        {
            let _ = std::fs::write(self.dir.join("trees").join(id.to_hex()), sealed);
        }
    }

    /// Makes these trees the group's current ones (after the snapshot is committed).
    pub fn commit(self, root: &TreeId) {
        let group = &self.cache.group;
        if std::fs::write(self.dir.join("root"), root.to_hex()).is_err() {
            return;
        }
        let current = group.join("current");
        let mut r = [0u8; 8];
        if crate::crypto::random::fill(&mut r).is_err() {
            return;
        }
        let old = group.join(format!("old-{}", hex::encode(r)));
        let _ = std::fs::rename(&current, &old);
        if std::fs::rename(&self.dir, &current).is_ok() {
            let _ = std::fs::remove_dir_all(&old);
            remove_stale(group);
        }
    }
}

/// Leftovers of runs that died: replaced recordings (`old-*`) and recordings older than a
/// day (`new-*`; younger ones may belong to a backup still running).
fn remove_stale(group: &Path) {
    let Ok(rd) = std::fs::read_dir(group) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let stale_new = name.starts_with("new-")
            && e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 86_400);
        if name.starts_with("old-") || stale_new {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
