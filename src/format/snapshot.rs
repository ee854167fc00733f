//! Snapshot manifests: JSON, sealed under the session's data key.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::{SessionId, SnapshotId, TreeId};

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
}

impl Eq for Snapshot {}

/// Snapshot ids bound to their manifest (docs/FORMAT.md §2, §8). A new snapshot's id is
/// `H || T`, where `H` is the first 16 bytes of `HMAC(K_snap, canonical manifest)` and `T` the
/// first 16 bytes of `HMAC(K_snap, H)`. `T` marks the id as bound: a reader that finds it
/// requires the manifest stored under the id to hash to `H`, so a manifest written over
/// another one under the same name (a writer can seal manifests of its own) is refused. Ids
/// made before this rule are random; their `T` does not match (but with probability 2^-128)
/// and they are read as before. The canonical manifest is its compact JSON with `session` set
/// to zeros, so `rotate reencrypt` can seal a manifest again under a new session and keep its
/// id.
pub mod bound_id {
    use super::Snapshot;
    use crate::crypto::kdf::HmacKey;
    use crate::id::{Id, SessionId, SnapshotId};

    /// Stable across a write and a read: serde_json prints floats (`duration_secs`) in their
    /// shortest form and, with its `float_roundtrip` feature, parses them back exactly.
    fn canonical(snap: &Snapshot) -> Vec<u8> {
        let zeroed = Snapshot {
            session: SessionId::default(),
            ..snap.clone()
        };
        serde_json::to_vec(&zeroed).expect("manifests serialize")
    }

    fn tag(key: &HmacKey, head: &[u8]) -> [u8; 16] {
        let mut t = [0u8; 16];
        t.copy_from_slice(&key.sign(head)[..16]);
        t
    }

    /// The id a new snapshot with this manifest gets.
    pub fn of(key: &HmacKey, snap: &Snapshot) -> SnapshotId {
        let mut id = [0u8; 32];
        id[..16].copy_from_slice(&key.sign(&canonical(snap))[..16]);
        let t = tag(key, &id[..16]);
        id[16..].copy_from_slice(&t);
        SnapshotId(Id(id))
    }

    /// True for an id made by [`of`] (false for the random ids of earlier snapshots).
    pub fn is_bound(key: &HmacKey, id: &SnapshotId) -> bool {
        let b = id.as_bytes();
        bool::from(subtle::ConstantTimeEq::ct_eq(
            &tag(key, &b[..16])[..],
            &b[16..],
        ))
    }

    /// True when `snap` is the manifest the bound id `id` was made from.
    pub fn matches(key: &HmacKey, id: &SnapshotId, snap: &Snapshot) -> bool {
        bool::from(subtle::ConstantTimeEq::ct_eq(
            &of(key, snap).as_bytes()[..],
            &id.as_bytes()[..],
        ))
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::crypto::Key32;

        fn snap() -> Snapshot {
            Snapshot {
                format: 1,
                time: "2026-01-02T03:04:05Z".parse().unwrap(),
                host: "h".into(),
                username: String::new(),
                paths: vec!["/p".into()],
                tags: vec![],
                tree: crate::id::TreeId(Id([1; 32])),
                session: SessionId(Id([2; 32])),
                parent: None,
                summary: Default::default(),
                program: "custody test".into(),
            }
        }

        /// A manifest read back from its JSON has the id it was saved under, whatever its
        /// floats (serde_json's default parser may be off by one unit in the last place).
        #[test]
        fn ids_survive_a_json_round_trip() {
            let key = HmacKey::new(&Key32::generate().unwrap());
            for i in 0..2000u64 {
                let mut s = snap();
                s.summary.duration_secs = (i as f64).sqrt() * 1.000_000_123 + 1e-7 * i as f64;
                let id = of(&key, &s);
                let back: Snapshot =
                    serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
                assert!(matches(&key, &id, &back), "{}", s.summary.duration_secs);
            }
        }

        #[test]
        fn bound_ids_verify_and_random_ones_are_not_bound() {
            let key = HmacKey::new(&Key32::generate().unwrap());
            let s = snap();
            let id = of(&key, &s);
            assert!(is_bound(&key, &id) && matches(&key, &id, &s));
            // Another session (re-encryption) keeps the id.
            let resealed = Snapshot {
                session: SessionId(Id([9; 32])),
                ..s.clone()
            };
            assert!(matches(&key, &id, &resealed));
            // Any other change does not.
            let forged = Snapshot {
                host: "other".into(),
                ..s.clone()
            };
            assert!(!matches(&key, &id, &forged));
            assert!(!is_bound(&key, &SnapshotId::random().unwrap()));
            // Another repository's key binds nothing here.
            let other = HmacKey::new(&Key32::generate().unwrap());
            assert!(!is_bound(&other, &id));
        }
    }
}
