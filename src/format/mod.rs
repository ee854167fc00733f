//! Plaintext codecs of the repository's objects (see docs/FORMAT.md). Pure: no I/O.

pub mod config;
pub mod garbage;
pub mod index;
pub mod name;
pub mod snapshot;
pub mod tree;
pub mod wrapped;

/// The repository format version written by this build.
pub const REPO_FORMAT: u32 = 1;
