//! Object stores: a small async trait over "a bucket", addressed by a closed set of file kinds
//! plus an id. Each backend passes the same conformance suite (`tests/it/store_conformance.rs`).
//!
//! Semantics every backend provides:
//! - `put` is atomic: a reader sees the whole object or none of it, never a prefix.
//! - Packs, index segments, snapshots and keys are written once under fresh random or
//!   content-bound ids and never overwritten by custody; `put` of an existing name replaces it
//!   (custody does not rely on conditional writes).
//! - `list` may miss objects written moments ago (S3 listings lag on some servers) and may
//!   still show objects just deleted; correctness never depends on a listing being complete.
//! - `get` of a missing object is [`Error::NotFound`]; a wrong or truncated range is an error.

mod local;
pub mod object_lock;
pub mod s3;

pub use local::LocalStore;
pub use s3::S3Store;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{Error, Result};
use crate::id::Id;

/// The kinds of object in a repository, each with its folder (see docs/FORMAT.md, "Layout").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// `config` (the id is ignored).
    Config,
    /// `keys/<id>`: wrapped session data keys.
    Key,
    /// `data/<xx>/<id>`: packs.
    Pack,
    /// `index/<id>`
    Index,
    /// `snapshots/<id>`
    Snapshot,
    /// `garbage/<id>`: what a prune run condemned (deleted a grace period later).
    Garbage,
    /// `locks/<id>`: held by prune and re-encryption so that two of them do not overlap.
    Lock,
    /// `owner` (the id is ignored): the owner's sealed signing key.
    Owner,
    /// `writers/<id>`: a writer's enrollment, signed by the owner.
    Writer,
    /// `revoked/<id>`: a writer's revocation, signed by the owner.
    Revocation,
    /// `history/<id>`: the owner's history checkpoints (docs/FORMAT.md §18).
    History,
    /// `damaged/<id>`: packs a key holder found missing or damaged (docs/FORMAT.md §14d).
    Damage,
    /// `witness/<id>`: records kept in a witness store, outside the repository (§18.4).
    Witness,
    /// `reach/<snapshot id>`: the sessions a snapshot's data lies in (docs/FORMAT.md §19.1).
    Reach,
    /// `requests/<id>`: restore requests (§19.2).
    Request,
    /// `approvals/<id>`: key holders' approvals and denials of restore requests (§19.3).
    Approval,
    /// `policy` (the id is ignored): the key policy, signed by the owner (§20).
    Policy,
    /// `retention` (the id is ignored): Object Lock settings, signed by the owner (§21).
    Retention,
}

impl FileKind {
    pub const ALL: [FileKind; 18] = [
        FileKind::Config,
        FileKind::Key,
        FileKind::Pack,
        FileKind::Index,
        FileKind::Snapshot,
        FileKind::Garbage,
        FileKind::Lock,
        FileKind::Owner,
        FileKind::Writer,
        FileKind::Revocation,
        FileKind::History,
        FileKind::Damage,
        FileKind::Witness,
        FileKind::Reach,
        FileKind::Request,
        FileKind::Approval,
        FileKind::Policy,
        FileKind::Retention,
    ];

    pub fn dir(self) -> &'static str {
        match self {
            FileKind::Config => "",
            FileKind::Key => "keys",
            FileKind::Pack => "data",
            FileKind::Index => "index",
            FileKind::Snapshot => "snapshots",
            FileKind::Garbage => "garbage",
            FileKind::Lock => "locks",
            FileKind::Owner => "",
            FileKind::Writer => "writers",
            FileKind::Revocation => "revoked",
            FileKind::History => "history",
            FileKind::Damage => "damaged",
            FileKind::Witness => "witness",
            FileKind::Reach => "reach",
            FileKind::Request => "requests",
            FileKind::Approval => "approvals",
            FileKind::Policy => "",
            FileKind::Retention => "",
        }
    }

    /// The object's path relative to the repository root.
    pub fn path(self, id: &Id) -> String {
        match self {
            FileKind::Config => "config".into(),
            FileKind::Owner => "owner".into(),
            FileKind::Policy => "policy".into(),
            FileKind::Retention => "retention".into(),
            FileKind::Pack => {
                let h = id.to_hex();
                format!("data/{}/{}", &h[..2], h)
            }
            _ => format!("{}/{}", self.dir(), id.to_hex()),
        }
    }
}

/// Human-readable object name for messages: `data/ab/ab12...`.
pub fn object_name(kind: FileKind, id: &Id) -> String {
    kind.path(id)
}

#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Where this store points (no credentials), for messages.
    fn location(&self) -> String;

    /// Prepares an empty repository location (folders, bucket). Fails with
    /// [`Error::AlreadyExists`] when a repository config is already there.
    async fn create(&self) -> Result<()>;

    /// Stores `data` atomically under (kind, id).
    async fn put(&self, kind: FileKind, id: &Id, data: Bytes) -> Result<()>;

    /// Stores a new object that must never change (a manifest, a session's key record, a
    /// pack): where the server honours `If-None-Match: *` and the repository asks for it, an
    /// existing object of that name is not replaced, and a different one there is an
    /// integrity error (the same bytes: a repeated write whose answer was lost). Otherwise
    /// the same as `put`.
    async fn put_new(&self, kind: FileKind, id: &Id, data: Bytes) -> Result<()> {
        self.put(kind, id, data).await
    }

    /// S3 Object Lock and versions, where the store has them.
    fn object_lock(&self) -> Option<&dyn object_lock::ObjectLock> {
        None
    }

    /// Whether every call is a network round trip (S3), so that readers keep more calls in
    /// flight than they have cores.
    fn remote(&self) -> bool {
        false
    }

    /// The whole object.
    async fn get(&self, kind: FileKind, id: &Id) -> Result<Bytes>;

    /// `length` bytes from `offset`; an error if the object is shorter.
    async fn get_range(&self, kind: FileKind, id: &Id, offset: u64, length: u64) -> Result<Bytes> {
        self.get_range_into(kind, id, offset, length, Vec::new())
            .await
            .map(Bytes::from)
    }

    /// [`Store::get_range`] into `buf`, which is emptied first and returned holding the bytes:
    /// a reader that reads span after span (restore) reuses one buffer instead of paying a
    /// page fault per 4 KiB of a fresh one. On an error the buffer is dropped.
    async fn get_range_into(
        &self,
        kind: FileKind,
        id: &Id,
        offset: u64,
        length: u64,
        buf: Vec<u8>,
    ) -> Result<Vec<u8>>;

    /// Size of the object in bytes.
    async fn size(&self, kind: FileKind, id: &Id) -> Result<u64>;

    /// All objects of a kind with their sizes (may lag behind recent writes).
    async fn list(&self, kind: FileKind) -> Result<Vec<(Id, u64)>>;

    /// Removes an object; removing a missing object is not an error.
    async fn delete(&self, kind: FileKind, id: &Id) -> Result<()>;

    /// Partial writes that an interrupted `put` left behind, last changed more than `older`
    /// ago: their names (relative to the repository) and sizes. A store whose writes are
    /// atomic leaves none (S3: an object appears whole or not at all).
    async fn temporaries(&self, _older: std::time::Duration) -> Result<Vec<(String, u64)>> {
        Ok(Vec::new())
    }

    /// Removes one of [`Store::temporaries`]; a missing one is not an error.
    async fn remove_temporary(&self, _name: &str) -> Result<()> {
        Ok(())
    }
}

/// Opens a store from a repository URL: `s3://bucket[/prefix]`, `file:/path`,
/// `file:///path` or a plain path.
/// A repository string in another tool's spelling (`sftp:host:/p`, `b2:bucket:p`,
/// `rest:http://...`, restic's `s3:http://host/bucket`) would otherwise become a local folder
/// of that name: refused with a hint. A local path with a colon in it can still be given as
/// `./name:x` or `file:name:x`.
fn foreign_repository_hint(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once(':')?;
    let scheme_like = !scheme.is_empty()
        && scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_like {
        return None;
    }
    if scheme == "s3" {
        let (host, path) = rest
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split_once('/')
            .unwrap_or((rest, ""));
        return Some(format!(
            "{url:?} is restic's spelling: custody names the bucket as s3://{path} and takes \
             the server from AWS_ENDPOINT_URL (e.g. AWS_ENDPOINT_URL=http://{host})",
            path = if path.is_empty() {
                "BUCKET/PREFIX"
            } else {
                path
            },
            host = if host.is_empty() { "HOST" } else { host }
        ));
    }
    Some(format!(
        "unsupported repository {url:?}: custody stores in a local folder (a path, or \
         file:PATH) or an S3 bucket (s3://BUCKET/PREFIX); for a local folder whose name \
         contains a colon, write ./{url}"
    ))
}

pub fn open(
    url: &str,
    settings: &crate::settings::S3Settings,
    rt: &tokio::runtime::Handle,
) -> Result<std::sync::Arc<dyn Store>> {
    if let Some(rest) = url.strip_prefix("file://") {
        return Ok(std::sync::Arc::new(LocalStore::new(rest)));
    }
    if let Some(rest) = url.strip_prefix("file:") {
        return Ok(std::sync::Arc::new(LocalStore::new(rest)));
    }
    if url.starts_with("s3://") {
        return Ok(std::sync::Arc::new(
            rt.block_on(S3Store::open(url, settings))?,
        ));
    }
    if let Some(hint) = foreign_repository_hint(url) {
        return Err(Error::invalid(hint));
    }
    if url.is_empty() {
        return Err(Error::invalid(
            "no repository given: use --repo or CUSTODY_REPOSITORY",
        ));
    }
    Ok(std::sync::Arc::new(LocalStore::new(url)))
}
