//! S3 Object Lock and object versions, for stores that have them (docs/FORMAT.md §21): what
//! a bucket offers, the retention custody asks for on every write, extending it, and the
//! versions a recovery reads. A folder store has none of this ([`super::Store::object_lock`]
//! is `None`).

use super::FileKind;
use crate::error::Result;
use crate::id::Id;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use crate::format::retention::{LockMode, LockSettings};

/// What a bucket offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketLock {
    pub exists: bool,
    pub versioning: bool,
    pub lock_enabled: bool,
    /// The bucket's default retention, applied by the server to every new version.
    pub default: Option<(LockMode, u32)>,
}

/// One stored version of an object (or a delete marker) under the repository's prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    /// The object's path relative to the repository (`snapshots/ab12...`).
    pub path: String,
    pub version: String,
    pub modified: DateTime<Utc>,
    pub delete_marker: bool,
    pub latest: bool,
    /// The server's tag of the content (none for a delete marker): two versions with one
    /// tag hold the same bytes.
    pub etag: Option<String>,
}

#[async_trait]
pub trait ObjectLock: Send + Sync {
    /// Sets what every later `put` asks for (`None`: nothing).
    fn configure(&self, settings: Option<LockSettings>);
    fn settings(&self) -> Option<LockSettings>;
    async fn bucket_lock(&self) -> Result<BucketLock>;
    /// Creates the bucket with Object Lock (and so versioning) enabled.
    async fn create_locked_bucket(&self) -> Result<()>;
    /// Sets the bucket's default retention.
    async fn set_default_retention(&self, mode: LockMode, days: u32) -> Result<()>;
    /// The current version's retain-until date (`None`: not locked). A missing object is
    /// [`crate::Error::NotFound`].
    async fn retain_until(&self, kind: FileKind, id: &Id) -> Result<Option<DateTime<Utc>>>;
    /// Raises the current version's retain-until date to `until` in the configured mode
    /// (retention can always be extended, never shortened without a bypass).
    async fn extend_retention(&self, kind: FileKind, id: &Id, until: DateTime<Utc>) -> Result<()>;
    /// Every version and delete marker under the repository's prefix.
    async fn versions(&self) -> Result<Vec<ObjectVersion>>;
    /// Makes an earlier version current again, by copying it over the object (a new
    /// version; nothing is deleted).
    async fn restore_version(&self, path: &str, version: &str) -> Result<()>;
    /// Whether the server refuses a second write of one name under `If-None-Match: *`.
    async fn probe_conditional_writes(&self) -> Result<bool>;
}
