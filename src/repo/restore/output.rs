//! What `restore` reports: the JSON document of `restore --json`, and its summary line.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::RestoreReport;
use crate::human::bytes;
use crate::id::SnapshotId;

/// A path that was not restored, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedPath {
    pub path: String,
    pub error: String,
    /// The stored data failed verification (tampering or corruption), not the local disk.
    pub integrity: bool,
}

/// `restore --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreOutput {
    pub snapshot_id: SnapshotId,
    pub target: PathBuf,
    pub files_restored: u64,
    pub dirs_restored: u64,
    pub symlinks_restored: u64,
    pub bytes_restored: u64,
    pub duration_secs: f64,
    pub failed: Vec<FailedPath>,
    /// Fifos and devices restored.
    #[serde(default)]
    pub specials_restored: u64,
    /// Temporary files an interrupted restore had left, removed by this one.
    #[serde(default)]
    pub leftovers_removed: u64,
    /// What could not be reproduced (not root, or refused by the file system).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_restored: Vec<String>,
    /// Existing files kept (`--overwrite`).
    #[serde(default)]
    pub files_kept: u64,
    /// Entries removed from the target (`--delete`).
    #[serde(default)]
    pub deleted: u64,
    /// Files read back and found equal to the snapshot's (`--verify`).
    #[serde(default)]
    pub verified: u64,
    /// Nothing was changed: the counts say what a restore would do.
    #[serde(default)]
    pub dry_run: bool,
}

impl RestoreOutput {
    pub fn new(
        snapshot_id: SnapshotId,
        target: PathBuf,
        r: &RestoreReport,
        duration_secs: f64,
    ) -> Self {
        RestoreOutput {
            snapshot_id,
            target,
            files_restored: r.files,
            dirs_restored: r.dirs,
            symlinks_restored: r.symlinks,
            bytes_restored: r.bytes,
            duration_secs,
            failed: r
                .failed
                .iter()
                .map(|(p, e)| FailedPath {
                    path: p.clone(),
                    error: e.to_string(),
                    integrity: e.is_integrity(),
                })
                .collect(),
            specials_restored: r.specials,
            leftovers_removed: r.leftovers_removed,
            not_restored: r.not_restored.clone(),
            files_kept: r.kept,
            deleted: r.deleted,
            verified: r.verified,
            dry_run: false,
        }
    }
}

impl fmt::Display for RestoreOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} snapshot {} to {}: {} files, {} in {:.1}s",
            if self.dry_run {
                "dry run: would restore"
            } else if self.failed.is_empty() {
                "restored"
            } else {
                "INCOMPLETE restore of"
            },
            self.snapshot_id.short(),
            self.target.display(),
            self.files_restored,
            bytes(self.bytes_restored),
            self.duration_secs
        )?;
        if self.files_kept > 0 {
            write!(f, "; {} existing file(s) kept", self.files_kept)?;
        }
        if self.deleted > 0 {
            let verb = if self.dry_run {
                "would delete"
            } else {
                "deleted"
            };
            write!(f, "; {verb} {} entries not in the snapshot", self.deleted)?;
        }
        if self.verified > 0 {
            write!(f, "; {} file(s) read back and verified", self.verified)?;
        }
        if let Some(first) = self.failed.first() {
            write!(
                f,
                "\n{} path(s) NOT restored (listed above); the first failed with: {}",
                self.failed.len(),
                first.error
            )?;
        }
        if self.leftovers_removed > 0 {
            write!(
                f,
                "\nremoved {} temporary file(s) an interrupted restore had left",
                self.leftovers_removed
            )?;
        }
        if !self.not_restored.is_empty() {
            write!(f, "\nnot restored: {}", self.not_restored.join("; "))?;
        }
        Ok(())
    }
}
