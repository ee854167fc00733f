//! A client's own history state (`<config>/history/<repository>.json`, docs/FORMAT.md §18.3):
//! read and written under an exclusive lock on a file beside it, so that two backups on one
//! machine never take the same place in a chain.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::history::ClientState;
use crate::id::Id;

/// Where one repository's state lives.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

/// The state, read under the lock; the lock is released on drop.
#[derive(Debug)]
pub struct LockedState {
    _lock: File,
    path: PathBuf,
    pub state: ClientState,
}

impl StateFile {
    /// The state of repository `repo` in the folder `dir` (`<config>/history`).
    pub fn new(dir: &Path, repo: &Id) -> StateFile {
        StateFile {
            path: dir.join(format!("{}.json", repo.to_hex())),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the lock and reads the state (empty when there is none yet). A state file that
    /// does not decode is an error: starting afresh would forget what was seen.
    pub fn lock(&self) -> Result<LockedState> {
        let lock_path = self.path.with_extension("lock");
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), e))?;
        }
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(lock_path.display(), e))?;
        flock(&lock).map_err(|e| Error::io(lock_path.display(), e))?;
        let state = match std::fs::read(&self.path) {
            Ok(b) => crate::format::from_json::<ClientState>("history state", &b)
                .map_err(|e| Error::invalid(format!("{}: {e}", self.path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ClientState {
                format: 1,
                ..ClientState::default()
            },
            Err(e) => return Err(Error::io(self.path.display(), e)),
        };
        Ok(LockedState {
            _lock: lock,
            path: self.path.clone(),
            state,
        })
    }
}

/// Waits for an exclusive lock on `f` (released when it is closed). `File::lock` would do,
/// but is newer than this crate's minimum Rust version.
fn flock(f: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock on a file descriptor this `File` owns and keeps open.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

impl LockedState {
    /// Writes the state (atomically, readable by its owner only).
    pub fn save(&self) -> Result<()> {
        let json = serde_json::to_vec_pretty(&self.state).expect("plain data serializes");
        crate::repo::provenance::write_private(&self.path, &json)
            .map_err(|e| Error::io(self.path.display(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::history::OwnChain;
    use crate::id::{ChainId, SignerId};

    #[test]
    fn state_round_trips_and_a_second_lock_waits() {
        let dir = std::env::temp_dir().join(format!("custody-state-{}", Id::random().unwrap()));
        let f = StateFile::new(&dir, &Id([1; 32]));
        let mut s = f.lock().unwrap();
        assert_eq!(s.state.format, 1);
        s.state.own.push(OwnChain {
            signer: SignerId(Id([2; 32])),
            chain: ChainId(Id([3; 32])),
        });
        s.save().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let f2 = f.clone();
        let t = std::thread::spawn(move || {
            let s = f2.lock().unwrap();
            tx.send(s.state.own.len()).unwrap();
        });
        // The other thread cannot read while the lock is held.
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        drop(s);
        assert_eq!(rx.recv().unwrap(), 1);
        t.join().unwrap();
        // A state that does not decode is refused, not replaced.
        std::fs::write(f.path(), b"{").unwrap();
        assert!(f.lock().is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
