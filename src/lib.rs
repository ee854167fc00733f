//! custody: an encrypted, deduplicating object-store vault.
//!
//! Layers, each depending only on those above it in this list:
//! - [`crypto`], [`format`], [`id`], [`compress`]: pure codecs and cryptography, no I/O;
//! - [`chunker`], [`pack`]: keyed content-defined chunking and the pack codec;
//! - [`store`], [`keyservice`]: async object stores and key services;
//! - [`repo`]: sessions, index, blobs, snapshots, and the backup/restore/check pipelines.
//!
//! The library stops there: the command line (`cli`) and one module per command
//! (`commands`) belong to the `custody` binary, which reads the environment once and passes
//! typed settings down.

pub(crate) mod aws;
pub mod blocking;
pub mod chunker;
pub mod compress;
pub mod crypto;
pub mod error;
pub mod failpoint;
pub mod format;
pub mod fs_at;
pub mod human;
pub mod id;
pub mod identity;
pub mod keyservice;
pub mod pack;
pub mod repo;
pub mod settings;
pub mod store;
pub mod xattr;

// The surface most callers need, in one place. The modules stay public because the format
// codecs (for golden vectors and for tools that verify a repository independently) and the
// per-command report types are part of what the library offers.
pub use error::{Error, Result};
pub use id::{
    BlobId, ChunkId, Id, KindId, LockId, MarkId, PackId, SegmentId, SessionId, SignerId,
    SnapshotId, TreeId,
};
pub use keyservice::KeyService;
pub use repo::{Repository, SealedObject};
pub use store::{FileKind, Store};
