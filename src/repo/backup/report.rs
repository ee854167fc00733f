//! What `backup` reports: the stable JSON document of `backup --json` (backup jobs parse it),
//! and the same facts for a person.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::BackupReport;
use crate::human::bytes;
use crate::id::{SessionId, SnapshotId};

/// A source left out of the snapshot, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub path: String,
    pub error: String,
}

/// `backup --json`: field names are a contract with backup jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupOutput {
    pub snapshot_id: SnapshotId,
    pub parent: Option<SnapshotId>,
    pub session: SessionId,
    pub files_processed: u64,
    pub dirs_processed: u64,
    pub files_skipped: u64,
    pub files_unchanged: u64,
    pub bytes_processed: u64,
    pub bytes_new: u64,
    pub bytes_added: u64,
    pub chunks_new: u64,
    pub duration_secs: f64,
    pub skipped: Vec<Skipped>,
    /// `backup --dry-run`: nothing was stored (the snapshot id is all zeros).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

impl From<&BackupReport> for BackupOutput {
    fn from(r: &BackupReport) -> Self {
        let s = &r.snapshot.summary;
        BackupOutput {
            snapshot_id: r.snapshot_id,
            parent: r.snapshot.parent,
            session: r.snapshot.session,
            files_processed: s.files,
            dirs_processed: s.dirs,
            files_skipped: s.files_skipped,
            files_unchanged: s.files_unchanged,
            bytes_processed: s.bytes_processed,
            bytes_new: s.bytes_new,
            bytes_added: s.bytes_added,
            chunks_new: s.chunks_new,
            duration_secs: s.duration_secs,
            skipped: r
                .skipped
                .iter()
                .map(|(path, error)| Skipped {
                    path: path.clone(),
                    error: error.clone(),
                })
                .collect(),
            dry_run: r.dry_run,
        }
    }
}

impl fmt::Display for BackupOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dry_run {
            return write!(
                f,
                "dry run, nothing stored: would save {} files, {} folders, {} processed in {:.1}s\n  {} new data, {} to add to the repository",
                self.files_processed,
                self.dirs_processed,
                bytes(self.bytes_processed),
                self.duration_secs,
                bytes(self.bytes_new),
                bytes(self.bytes_added),
            );
        }
        write!(
            f,
            "snapshot {} saved\n  {} files, {} folders, {} processed in {:.1}s\n  {} new data, {} added to the repository",
            self.snapshot_id.short(),
            self.files_processed,
            self.dirs_processed,
            bytes(self.bytes_processed),
            self.duration_secs,
            bytes(self.bytes_new),
            bytes(self.bytes_added),
        )
    }
}
