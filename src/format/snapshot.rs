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
