//! Plaintext codecs of the repository's objects (see docs/FORMAT.md). Pure: no I/O.

pub mod config;
pub mod garbage;
pub mod history;
pub mod index;
pub mod name;
pub mod provenance;
pub mod request;
pub mod retention;
pub mod signature;
pub mod snapshot;
pub mod tree;
pub mod wrapped;

/// The repository format version written by this build.
pub const REPO_FORMAT: u32 = 1;

/// Why bytes are not a valid object of their kind. The caller names the object, so these
/// say only what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A format version this build does not read (never downgraded to, never guessed at).
    #[error("{what} version {found} refused (this build reads {expected})")]
    Version {
        what: &'static str,
        found: u32,
        expected: u32,
    },
    /// Too short, a wrong magic, lengths that do not add up, invalid JSON, ...
    #[error("{0}")]
    Malformed(String),
}

impl From<String> for DecodeError {
    fn from(s: String) -> Self {
        DecodeError::Malformed(s)
    }
}

impl From<&str> for DecodeError {
    fn from(s: &str) -> Self {
        DecodeError::Malformed(s.into())
    }
}

/// The one version check of every object that carries a `format` field.
pub fn check_format(what: &'static str, found: u32) -> Result<(), DecodeError> {
    if found == REPO_FORMAT {
        Ok(())
    } else {
        Err(DecodeError::Version {
            what,
            found,
            expected: REPO_FORMAT,
        })
    }
}

/// Compact JSON padded with spaces to a multiple of `unit` bytes, so an object's size tells
/// little about its content (garbage marks, locks, snapshot manifests).
pub fn padded_json<T: serde::Serialize>(v: &T, unit: usize) -> Vec<u8> {
    let mut json = serde_json::to_vec(v).expect("plain data serializes");
    json.resize(json.len().div_ceil(unit).max(1) * unit, b' ');
    json
}

/// Decodes (padded) JSON, naming what it expected.
pub fn from_json<T: serde::de::DeserializeOwned>(what: &str, b: &[u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(b).map_err(|e| DecodeError::Malformed(format!("{what}: {e}")))
}
