//! Restore requests under dual control (docs/FORMAT.md §19): what a snapshot's data needs
//! (`reach/`), what a requester asks for (`requests/`), and what each key holder answered
//! (`approvals/`). All three are padded JSON sealed under the index key like garbage marks;
//! the key material an approval releases is sealed again, to the request's own public key.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::{Id, RequestId, SessionId, SnapshotId};

/// The sessions whose keys open a snapshot's data: every session of a pack holding a blob
/// its trees reach (the manifest's own session is read from the manifest's header). Written
/// by the backup that made the snapshot, kept current by prune and re-encryption.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reach {
    pub format: u32,
    pub snapshot: SnapshotId,
    /// The manifest's host and time, as its writer stated them: what a key holder is shown.
    pub host: String,
    pub time: DateTime<Utc>,
    pub sessions: Vec<SessionId>,
}

/// A restore request: which snapshot, which paths, by whom, why, until when, and the public
/// half of an X25519 key made for this request alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreRequest {
    pub format: u32,
    pub snapshot: SnapshotId,
    /// Paths to restore (empty: the whole snapshot).
    #[serde(default)]
    pub include: Vec<String>,
    pub reason: String,
    /// `user@host` of the requester, as it stated it.
    pub requester: String,
    pub created: DateTime<Utc>,
    pub expires: DateTime<Utc>,
    /// The request's X25519 public key (hex).
    pub public: String,
}

impl RestoreRequest {
    pub fn public_key(&self) -> Option<[u8; 32]> {
        let b = hex::decode(&self.public).ok()?;
        b.try_into().ok()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approve,
    Deny,
}

/// One key holder's answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub format: u32,
    pub request: RequestId,
    /// The holder's name in the quorum file.
    pub holder: String,
    pub decision: Decision,
    #[serde(default)]
    pub reason: String,
    pub time: DateTime<Utc>,
    /// The holder's parts of each session key the request needs, sealed to the request.
    #[serde(default)]
    pub parts: Vec<ReleasedPart>,
}

/// One quorum part `(x, y)` of one session key, `y` sealed to the request's public key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleasedPart {
    pub session: SessionId,
    pub x: u8,
    #[serde(with = "super::wrapped::b64")]
    pub sealed: Vec<u8>,
}

/// What a released part is bound to (the sealed box's `info`): repository, request, holder,
/// session and part number, so that a part copied into another approval does not open.
pub fn part_binding(
    repo: &Id,
    request: &RequestId,
    holder: &str,
    session: &SessionId,
    x: u8,
) -> Vec<u8> {
    let mut b = b"custody/v2/request-part".to_vec();
    b.extend_from_slice(repo.as_bytes());
    b.extend_from_slice(request.as_bytes());
    b.extend_from_slice(session.as_bytes());
    b.push(x);
    b.extend_from_slice(holder.as_bytes());
    b
}
