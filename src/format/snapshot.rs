//! Snapshot manifests: JSON, sealed under the session's data key.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::{SessionId, SignerId, SnapshotId, TreeId};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Files that could not be read and were left out.
    pub files_skipped: u64,
    /// Files recognised as unchanged (parent snapshot or local parent cache) and not read.
    #[serde(default)]
    pub files_unchanged: u64,
    /// Plaintext bytes read.
    pub bytes_processed: u64,
    /// Plaintext bytes of chunks not already in the repository.
    pub bytes_new: u64,
    /// Bytes written to the store (packs, index, snapshot).
    pub bytes_added: u64,
    pub chunks_new: u64,
    pub duration_secs: f64,
    /// Sockets met and left out (they belong to running programs).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sockets_skipped: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub format: u32,
    pub time: DateTime<Utc>,
    pub host: String,
    #[serde(default)]
    pub username: String,
    pub paths: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Root tree.
    pub tree: TreeId,
    /// Session whose data key sealed this manifest.
    pub session: SessionId,
    #[serde(default)]
    pub parent: Option<SnapshotId>,
    pub summary: Summary,
    pub program: String,
    /// The writer (or owner) that made the snapshot: its signing key (docs/FORMAT.md §17).
    /// `forget` keeps its policy per writer. Absent in unsigned repositories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<SignerId>,
    /// The snapshot's place in its client's chain (docs/FORMAT.md §18). Absent in manifests
    /// written before chains, and in unsigned repositories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<super::history::Link>,
    /// Made by `repair snapshots` from a snapshot whose data was partly lost: which one, and
    /// what it no longer holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repaired: Option<Repaired>,
    /// How the root tree holds the sources (docs/FORMAT.md §8): by their full paths, or (in
    /// snapshots made before full paths) by the last part of each.
    #[serde(default, skip_serializing_if = "Layout::is_names")]
    pub layout: Layout,
    /// Made by `tag` from another manifest: the id the snapshot was first saved under
    /// (kept through later tag changes), as restic records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<SnapshotId>,
}

/// Where a source sits in a snapshot's trees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Each source at the root under the last part of its path (`/srv/data` as `data`): the
    /// layout of snapshots made before full paths, read as before.
    #[default]
    Names,
    /// Each source at its full path (`/srv/data` as `srv` -> `data`), as restic does, so that
    /// same-named sources coexist and a path is the one the file had on its machine.
    Paths,
}

impl Layout {
    pub fn is_names(&self) -> bool {
        *self == Layout::Names
    }
}

/// What `repair snapshots` left out of a snapshot (docs/FORMAT.md §14e).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Repaired {
    pub from: SnapshotId,
    /// Paths left out (files with a chunk missing or damaged, folders whose listing is lost),
    /// at most [`Repaired::MAX_LISTED`] of them.
    pub missing: Vec<String>,
    /// How many paths were left out in all.
    pub missing_count: u64,
}

impl Repaired {
    pub const MAX_LISTED: usize = 1000;
}

impl Eq for Snapshot {}

/// Snapshot ids bound to their manifest (docs/FORMAT.md §2, §8). A new snapshot's id is
/// `H || T`, where `H` is the first 16 bytes of `HMAC(K_snap, canonical manifest)` and `T` the
/// first 16 bytes of `HMAC(K_snap, H)`. `T` marks the id as bound: a reader that finds it
/// requires the manifest stored under the id to hash to `H`, so a manifest written over
/// another one under the same name (a writer can seal manifests of its own) is refused. Ids
/// made before this rule are random; their `T` does not match (but with probability 2^-128)
/// and they are read as before.
///
/// The canonical manifest is the stored JSON itself, trailing padding removed, with the 64
/// hex digits of `"session":"..."` replaced by zeros: the bytes, not a re-serialisation, so
/// that no change of field set, float or time formatting in a later version changes an id;
/// and without the session, so that `rotate reencrypt` can seal a manifest again under a new
/// session and keep its id.
pub mod bound_id {
    use crate::crypto::kdf::HmacKey;
    use crate::id::{Id, SnapshotId};

    const SESSION_KEY: &[u8] = b"\"session\":\"";

    /// Where the 64 hex digits of the manifest's session start (JSON strings cannot hold an
    /// unescaped quote, so the pattern only matches the key itself).
    pub fn session_digits(json: &[u8]) -> Option<usize> {
        let at = json
            .windows(SESSION_KEY.len())
            .position(|w| w == SESSION_KEY)?
            + SESSION_KEY.len();
        (json.get(at + 64) == Some(&b'"')).then_some(at)
    }

    /// The stored manifest as the id hashes it; `None` when it has no session field.
    pub fn canonical(json: &[u8]) -> Option<Vec<u8>> {
        let end = json.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
        let mut v = json[..end].to_vec();
        let at = session_digits(&v)?;
        v[at..at + 64].fill(b'0');
        Some(v)
    }

    fn tag(key: &HmacKey, head: &[u8]) -> [u8; 16] {
        let mut t = [0u8; 16];
        t.copy_from_slice(&key.sign(head)[..16]);
        t
    }

    /// The id a new snapshot gets, from the manifest JSON about to be sealed.
    pub fn of(key: &HmacKey, json: &[u8]) -> Option<SnapshotId> {
        let mut id = [0u8; 32];
        id[..16].copy_from_slice(&key.sign(&canonical(json)?)[..16]);
        let t = tag(key, &id[..16]);
        id[16..].copy_from_slice(&t);
        Some(SnapshotId(Id(id)))
    }

    /// True for an id made by [`of`] (false for the random ids of earlier snapshots).
    pub fn is_bound(key: &HmacKey, id: &SnapshotId) -> bool {
        let b = id.as_bytes();
        bool::from(subtle::ConstantTimeEq::ct_eq(
            &tag(key, &b[..16])[..],
            &b[16..],
        ))
    }

    /// True when the stored manifest `json` is the one the bound id `id` was made from.
    pub fn matches(key: &HmacKey, id: &SnapshotId, json: &[u8]) -> bool {
        of(key, json).is_some_and(|made| {
            bool::from(subtle::ConstantTimeEq::ct_eq(
                &made.as_bytes()[..],
                &id.as_bytes()[..],
            ))
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::crypto::Key32;
        use crate::format::snapshot::Snapshot;
        use crate::id::SessionId;

        fn json(session: u8, host: &str) -> Vec<u8> {
            let s = Snapshot {
                format: 1,
                time: "2026-01-02T03:04:05Z".parse().unwrap(),
                host: host.into(),
                username: String::new(),
                paths: vec!["/p \"session\":\"x".into()],
                tags: vec![],
                tree: crate::id::TreeId(Id([1; 32])),
                session: SessionId(Id([session; 32])),
                parent: None,
                summary: Default::default(),
                program: "custody test".into(),
                writer: None,
                chain: None,
                repaired: None,
                layout: Default::default(),
                original: None,
            };
            crate::format::padded_json(&s, 1024)
        }

        #[test]
        fn bound_ids_verify_and_random_ones_are_not_bound() {
            let key = HmacKey::new(&Key32::generate().unwrap());
            let stored = json(2, "h");
            let id = of(&key, &stored).unwrap();
            assert!(is_bound(&key, &id) && matches(&key, &id, &stored));
            // The quote in the path is escaped: the session found is the manifest's own.
            let at = session_digits(&stored).unwrap();
            assert_eq!(&stored[at..at + 64], hex::encode([2u8; 32]).as_bytes());
            // Sealed again under another session (re-encryption): same id.
            assert!(matches(&key, &id, &json(9, "h")));
            // Any other change: refused.
            assert!(!matches(&key, &id, &json(2, "other")));
            assert!(!matches(&key, &id, b"{}"));
            assert!(!is_bound(&key, &SnapshotId::random().unwrap()));
            // Another repository's key binds nothing here.
            let other = HmacKey::new(&Key32::generate().unwrap());
            assert!(!is_bound(&other, &id));
        }
    }
}
