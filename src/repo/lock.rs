//! The lock that keeps two prune or re-encryption runs apart. Backups never take it: they
//! need no delete permission and are protected by garbage marks and the grace period instead.
//!
//! A run writes `locks/<id>`, then lists the locks: if a fresh lock (renewed within
//! [`LOCK_STALE_SECS`]) that started earlier exists, it removes its own and stops with
//! [`Error::Conflict`]. Two runs that start together both see each other and the later one
//! yields. A run renews its lock every [`LOCK_REFRESH_SECS`] while it holds it; a run
//! paused or killed stops renewing, and its lock goes stale.

use chrono::Utc;

use super::Repository;
use crate::error::{Error, Result};
use crate::format::garbage::{padded_json, LockRecord, LOCK_REFRESH_SECS, LOCK_STALE_SECS};
use crate::id::Id;
use crate::store::FileKind;

/// A held lock; released (deleted) on [`Lock::release`] or, best effort, on drop.
pub struct Lock<'a> {
    repo: &'a Repository,
    id: Id,
    rec: LockRecord,
    held: bool,
}

impl Repository {
    fn load_lock(&self, id: &Id) -> Result<LockRecord> {
        let plain = self.get_meta(FileKind::Lock, id)?;
        serde_json::from_slice(&plain)
            .map_err(|e| Error::integrity(crate::store::object_name(FileKind::Lock, id), e))
    }

    /// Takes the exclusive lock for `operation` (prune, reencrypt).
    pub fn lock(&self, operation: &str) -> Result<Lock<'_>> {
        let id = Id::random()?;
        let now = Utc::now();
        let rec = LockRecord {
            format: crate::format::REPO_FORMAT,
            operation: operation.into(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            pid: std::process::id(),
            started: now,
            refreshed: now,
        };
        self.put_meta(FileKind::Lock, &id, &padded_json(&rec, 1024))?;
        let lock = Lock {
            repo: self,
            id,
            rec: rec.clone(),
            held: true,
        };
        for (other, _) in self.block_on(self.store().list(FileKind::Lock))? {
            if other == id {
                continue;
            }
            let o = match self.load_lock(&other) {
                Ok(o) => o,
                Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let fresh = (now - o.refreshed).num_seconds() < LOCK_STALE_SECS;
            if !fresh {
                // Left by a run that died; nobody renews it any more.
                self.block_on(self.store().delete(FileKind::Lock, &other))?;
                continue;
            }
            if (o.started, other) < (rec.started, id) {
                drop(lock);
                return Err(Error::Conflict(format!(
                    "{} holds the repository lock (started {} on {}, pid {}); try again when it \
                     has finished, or after {} minutes if it died",
                    o.operation,
                    o.started.format("%Y-%m-%d %H:%M:%S UTC"),
                    o.host,
                    o.pid,
                    LOCK_STALE_SECS / 60
                )));
            }
        }
        Ok(lock)
    }
}

impl Repository {
    /// Removes stale locks, or every lock with `all` (for an operator who knows the run that
    /// holds it is dead). Returns how many were removed.
    pub fn unlock(&self, all: bool) -> Result<usize> {
        let now = Utc::now();
        let mut n = 0;
        for (id, _) in self.block_on(self.store().list(FileKind::Lock))? {
            let stale = match self.load_lock(&id) {
                Ok(l) => (now - l.refreshed).num_seconds() >= LOCK_STALE_SECS,
                Err(Error::NotFound(_)) => continue,
                // Unreadable: nobody can honour it either.
                Err(_) => true,
            };
            if all || stale {
                self.block_on(self.store().delete(FileKind::Lock, &id))?;
                n += 1;
            }
        }
        Ok(n)
    }
}

impl Lock<'_> {
    /// Renews the lock when the last renewal is [`LOCK_REFRESH_SECS`] old. Long loops call
    /// this between steps (no background thread: a paused run must not look alive).
    pub fn refresh(&mut self) -> Result<()> {
        // Wall-clock time: a machine that slept counts as time passed (others saw it too).
        let since = (Utc::now() - self.rec.refreshed).num_seconds();
        if since >= 0 && (since as u64) < LOCK_REFRESH_SECS {
            return Ok(());
        }
        // Still ours? A run paused past the stale time may have lost it to another run.
        match self
            .repo
            .block_on(self.repo.store().size(FileKind::Lock, &self.id))
        {
            Err(Error::NotFound(_)) => {
                self.held = false;
                return Err(Error::Conflict(format!(
                    "this {} run lost its lock (it was paused or stalled for more than {} \
                     minutes and another run removed it); stopped: run it again",
                    self.rec.operation,
                    LOCK_STALE_SECS / 60
                )));
            }
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        self.rec.refreshed = Utc::now();
        self.repo
            .put_meta(FileKind::Lock, &self.id, &padded_json(&self.rec, 1024))?;
        Ok(())
    }

    pub fn release(mut self) -> Result<()> {
        self.held = false;
        self.repo
            .block_on(self.repo.store().delete(FileKind::Lock, &self.id))
    }
}

impl Drop for Lock<'_> {
    fn drop(&mut self) {
        if self.held {
            let _ = self
                .repo
                .block_on(self.repo.store().delete(FileKind::Lock, &self.id));
        }
    }
}
