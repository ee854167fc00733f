//! Garbage marks and locks: JSON, sealed under the index key (writers can read them, so a
//! backup can see what a prune condemned while it ran). See docs/FORMAT.md, "Garbage
//! collection".

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::{PackId, SegmentId, SessionId};

/// What one prune (or re-encryption) run condemned. Nothing listed here is deleted before the
/// mark is older than the grace period, and then only if it is still unneeded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GarbageMark {
    pub format: u32,
    /// When the mark was made (the pruner's clock).
    pub time: DateTime<Utc>,
    /// Packs to delete: every blob they hold is unreferenced, or also stored in a pack that
    /// is not condemned.
    #[serde(default)]
    pub packs: Vec<PackId>,
    /// Index segments whose live packs are all listed again in newer segments.
    #[serde(default)]
    pub segments: Vec<SegmentId>,
    /// Session keys (`keys/<s>`) that no pack and no snapshot uses.
    #[serde(default)]
    pub sessions: Vec<SessionId>,
    /// Packs that no index segment listed when the mark was made. Not condemned: a later run
    /// condemns those still unindexed once this mark is older than the grace period.
    #[serde(default)]
    pub unindexed: Vec<PackId>,
}

/// Packs a key holder found missing from the store or damaged (`check`, a restore): backups
/// no longer deduplicate against them, so the next backup stores their chunks again and the
/// damage heals instead of spreading into new snapshots (docs/FORMAT.md §14d). Nothing is
/// deleted because of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DamageRecord {
    pub format: u32,
    pub time: DateTime<Utc>,
    pub packs: Vec<PackId>,
}

/// A lock held by a prune or re-encryption run (writers never take one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockRecord {
    pub format: u32,
    pub operation: String,
    pub host: String,
    pub pid: u32,
    pub started: DateTime<Utc>,
    /// Renewed while the run goes on; a lock not renewed for [`LOCK_STALE_SECS`] is stale.
    pub refreshed: DateTime<Utc>,
}

/// A lock older than this (since its last refresh) is ignored.
pub const LOCK_STALE_SECS: i64 = 30 * 60;
/// How often a running prune renews its lock.
pub const LOCK_REFRESH_SECS: u64 = 5 * 60;

/// Re-exported: the one padding of JSON objects lives in [`crate::format`].
pub use super::padded_json;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_round_trips_padded() {
        let m = GarbageMark {
            format: 1,
            time: Utc::now(),
            packs: vec![PackId(crate::Id([7; 32]))],
            segments: vec![SegmentId(crate::Id([8; 32]))],
            sessions: vec![],
            unindexed: vec![PackId(crate::Id([9; 32]))],
        };
        let b = padded_json(&m, 4096);
        assert_eq!(b.len(), 4096);
        let back: GarbageMark = serde_json::from_slice(&b).unwrap();
        assert_eq!(back, m);
    }
}
