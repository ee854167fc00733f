//! The lock that keeps the owner's runs that change what others rely on apart: prune,
//! forget, tag, repairs, re-encryption, and `--accept-rollback`'s checkpoint. Backups never
//! take it: they need no delete permission and are protected by garbage marks and the grace
//! period instead.
//!
//! A run writes `locks/<id>`, then lists the locks: if a fresh lock (renewed within
//! [`LOCK_STALE_SECS`]) that started earlier exists, it removes its own and stops with
//! [`Error::Conflict`]. Two runs that start together both see each other and the later one
//! yields. A run renews its lock every [`LOCK_REFRESH_SECS`] while it holds it; a run
//! paused or killed stops renewing, and its lock goes stale.

use std::sync::atomic::Ordering;

use chrono::Utc;

use super::Repository;
use crate::error::{Error, Result};
use crate::format::garbage::{LockRecord, LOCK_REFRESH_SECS, LOCK_STALE_SECS};
use crate::id::LockId;
use crate::store::FileKind;

/// A held lock. It is released explicitly ([`Lock::release`], or [`release_after`] whatever
/// the run's outcome), never in `Drop` (which only uncounts it): a drop cannot report a failed
/// delete, and blocking on the store there would hide I/O in every early return. A lock left
/// by a run that panicked or was killed goes stale after [`LOCK_STALE_SECS`].
#[must_use = "a lock must be released with Lock::release or release_after"]
pub struct Lock<'a> {
    repo: &'a Repository,
    id: LockId,
    rec: LockRecord,
}

/// Releases `lock` (when one is held) after a run, whether the run succeeded or not; the
/// run's own error wins over a failure to release.
pub fn release_after<T>(lock: Option<Lock<'_>>, out: Result<T>) -> Result<T> {
    let released = lock.map_or(Ok(()), Lock::release);
    let v = out?;
    released?;
    Ok(v)
}

impl Repository {
    /// Takes the exclusive lock for `operation` (prune, forget, reencrypt, ...).
    pub fn lock(&self, operation: &str) -> Result<Lock<'_>> {
        let id = LockId::random()?;
        let now = Utc::now();
        let rec = LockRecord {
            format: crate::format::REPO_FORMAT,
            operation: operation.into(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            pid: std::process::id(),
            started: now,
            refreshed: now,
        };
        self.save_object(&id, &rec)?;
        // Counted until the lock is dropped (released); our own lock object is removed again
        // whatever stops us here.
        self.locks_held.fetch_add(1, Ordering::Relaxed);
        let lock = Lock {
            repo: self,
            id,
            rec: rec.clone(),
        };
        match self.yield_to_older(&id, &rec) {
            Ok(()) => Ok(lock),
            Err(e) => release_after(Some(lock), Err(e)),
        }
    }

    /// Whether this value holds the repository lock now (a command that took it, such as
    /// forget, calling into a step that needs it).
    pub fn holds_lock(&self) -> bool {
        self.locks_held.load(Ordering::Relaxed) > 0
    }

    /// Stops with [`Error::Conflict`] when a fresh lock older than ours (`id`, `rec`) exists;
    /// removes stale ones on the way.
    fn yield_to_older(&self, id: &LockId, rec: &LockRecord) -> Result<()> {
        let now = rec.started;
        for (other, _) in self.store().list(FileKind::Lock)? {
            let other = LockId(other);
            if other == *id {
                continue;
            }
            let o = match self.load_object::<LockRecord>(&other) {
                Ok(o) => o,
                Err(Error::NotFound(_)) => continue,
                // Only the owner takes locks: one signed by anyone else blocks nothing.
                Err(e) if e.is_untrusted() => {
                    tracing::warn!("lock ignored: {e}");
                    continue;
                }
                Err(e) => return Err(e),
            };
            if !is_live(&o, now) {
                // Left by a run that died (nobody renews it), or dated in the future (no
                // run renews a lock ahead of time: a forgery meant to block us forever).
                tracing::warn!(lock = %other.short(), host = %o.host, refreshed = %o.refreshed, "removing a stale or future-dated lock");
                self.store().delete(FileKind::Lock, &other)?;
                continue;
            }
            if (o.started, other) < (rec.started, *id) {
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
        Ok(())
    }
}

/// A lock is honoured while it was renewed less than [`LOCK_STALE_SECS`] ago, and not
/// "renewed" in the future beyond the clock-skew allowance: a writer holds the key that seals
/// locks, and a lock dated a century ahead would otherwise block prune until an operator
/// removed it by hand.
fn is_live(l: &LockRecord, now: chrono::DateTime<Utc>) -> bool {
    (now - l.refreshed).num_seconds() < LOCK_STALE_SECS
        && l.refreshed <= now + crate::repo::forget::CLOCK_SKEW
}

/// `unlock --json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UnlockOutput {
    pub removed: usize,
}

impl std::fmt::Display for UnlockOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "removed {} lock(s)", self.removed)
    }
}

impl Repository {
    /// Removes stale locks, or every lock with `all` (for an operator who knows the run that
    /// holds it is dead). Returns how many were removed.
    pub fn unlock(&self, all: bool) -> Result<usize> {
        let now = Utc::now();
        let mut n = 0;
        for (id, _) in self.store().list(FileKind::Lock)? {
            let id = LockId(id);
            let stale = match self.load_object::<LockRecord>(&id) {
                Ok(l) => !is_live(&l, now),
                Err(Error::NotFound(_)) => continue,
                // Unreadable: nobody can honour it either.
                Err(_) => true,
            };
            if all || stale {
                self.store().delete(FileKind::Lock, &id)?;
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
        match self.repo.store().size(FileKind::Lock, &self.id) {
            Err(Error::NotFound(_)) => {
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
        self.repo.save_object(&self.id, &self.rec)?;
        Ok(())
    }

    /// Deletes the lock object (deleting one another run already removed is no error).
    pub fn release(self) -> Result<()> {
        self.repo.store().delete(FileKind::Lock, &self.id)
    }
}

impl Drop for Lock<'_> {
    /// Uncounts the lock (no I/O here: see [`Lock`]), also when a run drops it unreleased.
    fn drop(&mut self) {
        self.repo.locks_held.fetch_sub(1, Ordering::Relaxed);
    }
}
