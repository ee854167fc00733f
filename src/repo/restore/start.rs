//! What a restore starts from: the index and the chosen snapshot, read at once, and the first
//! session keys it needs asked for while the manifest is read again.

use std::sync::mpsc;

use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::id::SnapshotId;
use crate::repo::in_flight::join;
use crate::repo::snapshots::SnapshotFilter;
use crate::repo::{Index, Repository};
use crate::store::{object_name, FileKind};

/// The index and the snapshot `spec` names (an id, a prefix or `latest`), read at once: on a
/// bucket each is several round trips. Where the history came from the local cache, the
/// manifest restored is the bucket's copy, the one the history chose; it is refused if its
/// tree differs (replaced meanwhile). The keys of the manifest's session and of its root
/// folder's pack are asked for meanwhile: each is a round trip to the bucket and one to the
/// key service that would otherwise come one after the other.
pub fn start(
    repo: &Repository,
    spec: &str,
    filter: &SnapshotFilter,
) -> Result<(Index, SnapshotId, Snapshot)> {
    let (tree, chosen) = mpsc::channel();
    let (index, resolved) = join(
        move || {
            let index = repo.load_index()?;
            if let Some(at) = chosen.recv().ok().and_then(|t| index.get(t)) {
                // Kept for the walk; a failure is reported there.
                let _ = repo.session_key(&at.session);
            }
            Ok::<_, Error>(index)
        },
        || {
            let (id, snap) = repo.resolve_snapshot(spec, filter)?;
            let _ = tree.send(snap.tree);
            drop(tree);
            if !repo.uses_history_cache() {
                return Ok::<_, Error>((id, snap));
            }
            let (_, stored) = join(
                || repo.session_key(&snap.session),
                || repo.load_snapshot_from_store(&id),
            );
            let stored = stored?;
            if stored.tree != snap.tree {
                return Err(Error::integrity(
                    object_name(FileKind::Snapshot, &id.id()),
                    "replaced in the bucket while it was read",
                ));
            }
            Ok((id, stored))
        },
    );
    let ((id, snap), index) = (resolved?, index?);
    Ok((index, id, snap))
}
