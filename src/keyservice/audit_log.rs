//! The local audit log (`--audit-log FILE`, docs/FORMAT.md §11.5): every key operation this
//! process makes, one JSON line each, naming operation, KEK, purpose, repository and key id
//! (never key bytes). Each line commits to the one before (`prev` = SHA-256 of its bytes) and
//! counts (`seq`), so `custody audit verify` finds a line edited, removed, inserted or moved.
//! Lines cut from the end leave a valid chain: keep the last hash `verify` prints elsewhere.
//!
//! The log is a process-wide sink, installed once by the CLI: it must see every key operation
//! of every backend, wherever in the repository code it is made.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::wrapped::Context;

static LOG: OnceLock<AuditLog> = OnceLock::new();

/// The first line's `prev`.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

/// One line of the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub seq: u64,
    pub time: DateTime<Utc>,
    pub operation: String,
    pub kek: String,
    pub purpose: String,
    pub repository: String,
    pub key_id: String,
    /// The restore request the operation serves, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request: String,
    /// Hex SHA-256 of the previous line's bytes (without its newline); zeros for the first.
    pub prev: String,
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, b))
}

/// Starts appending this process's key operations to `path` (created, mode 0600).
pub fn install(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(path.display(), e))?;
    LOG.set(AuditLog {
        path: path.to_path_buf(),
        file: Mutex::new(file),
    })
    .map_err(|_| Error::Internal("the audit log is installed once".into()))
}

/// The last line of `file` (bytes without the newline), read from its end.
fn last_line(file: &mut File) -> std::io::Result<Option<Vec<u8>>> {
    let len = file.seek(SeekFrom::End(0))?;
    let mut back = 4096u64;
    loop {
        let start = len.saturating_sub(back);
        file.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::new();
        file.read_to_end(&mut tail)?;
        let body = tail.strip_suffix(b"\n").unwrap_or(&tail);
        if body.is_empty() {
            return Ok(None);
        }
        match body.iter().rposition(|&b| b == b'\n') {
            Some(i) => return Ok(Some(body[i + 1..].to_vec())),
            None if start == 0 => return Ok(Some(body.to_vec())),
            None => back *= 4,
        }
    }
}

/// Appends one operation (called by every backend's audit line). Another process may append
/// to the same file: the file is locked while the previous line is read and this one written.
pub(crate) fn record(operation: &str, kek: &str, ctx: &Context) {
    let Some(log) = LOG.get() else { return };
    if let Err(e) = append(log, operation, kek, ctx) {
        tracing::error!(path = %log.path.display(), "could not append to the audit log: {e}");
    }
}

fn append(log: &AuditLog, operation: &str, kek: &str, ctx: &Context) -> std::io::Result<()> {
    let mut file = log.file.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: a valid descriptor; the lock is released below (or when the file closes).
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let result = (|| {
        let (seq, prev) = match last_line(&mut file)? {
            None => (0, GENESIS.to_string()),
            Some(line) => {
                let seq = serde_json::from_slice::<Entry>(&line)
                    .map(|e| e.seq + 1)
                    .map_err(|e| std::io::Error::other(format!("its last line: {e}")))?;
                (seq, sha256_hex(&line))
            }
        };
        let get = |k: &str| ctx.get(k).cloned().unwrap_or_default();
        let entry = Entry {
            seq,
            time: Utc::now(),
            operation: operation.into(),
            kek: kek.into(),
            purpose: get("custody:purpose"),
            repository: get("custody:repository"),
            key_id: get("custody:key-id"),
            request: get("custody:request"),
            prev,
        };
        let mut line = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        file.write_all(&line)?;
        file.sync_data()
    })();
    // SAFETY: as above.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
    result
}

/// What `audit verify` found in an intact log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verified {
    pub entries: u64,
    /// SHA-256 of the last line: record it elsewhere to detect lines cut from the end.
    pub last_hash: String,
}

impl std::fmt::Display for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} entries, chain intact; last line's hash {} (keep it elsewhere: lines cut from \
             the end are found only against it)",
            self.entries, self.last_hash
        )
    }
}

/// Checks every line's `seq` and `prev`; the first break is an integrity error naming the line.
pub fn verify(path: &Path) -> Result<Verified> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path.display(), e))?;
    let mut prev = GENESIS.to_string();
    let mut entries = 0u64;
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        if body.is_empty() {
            break;
        }
        let at = || format!("{} line {}", path.display(), i + 1);
        let e: Entry = serde_json::from_slice(line)
            .map_err(|e| Error::integrity(at(), format!("not an audit entry: {e}")))?;
        if e.seq != entries {
            return Err(Error::integrity(
                at(),
                format!(
                    "entry {} where {entries} belongs: a line was removed, inserted or moved",
                    e.seq
                ),
            ));
        }
        if e.prev != prev {
            return Err(Error::integrity(
                at(),
                "does not commit to the line before it: that line was edited, or lines were removed",
            ));
        }
        prev = sha256_hex(line);
        entries += 1;
    }
    Ok(Verified {
        entries,
        last_hash: prev,
    })
}
