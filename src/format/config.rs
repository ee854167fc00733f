//! The `config` object: plaintext JSON, readable before any key is unwrapped. Its body is
//! authenticated by an HMAC under a key derived from the repository secret; the wrapped secret
//! beside it has its own AEAD binding, so a rotator can rewrap it without the secret.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::wrapped::WrappedKeyRecord;
use crate::chunker::ChunkerParams;
use crate::id::Id;

pub const ENVELOPE_ALGORITHM: &str = "aes-256-gcm/hkdf-sha256/commit-v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigBody {
    pub format: u32,
    pub repository: Id,
    pub created: DateTime<Utc>,
    pub chunker: ChunkerParams,
    /// zstd level for new chunks (0: store raw).
    pub compression_level: i32,
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// Envelope format version: older versions are refused (no downgrade).
    pub envelope_version: u8,
    pub envelope_algorithm: String,
    /// Key id of the repository secret (the key id of index segments).
    pub secret_id: Id,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub body: ConfigBody,
    /// The repository secret M, wrapped under the meta KEK.
    pub secret: WrappedKeyRecord,
    /// HMAC-SHA256 over `serde_json(body)`, hex.
    pub mac: String,
}

impl ConfigBody {
    pub fn mac_input(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("config body serializes")
    }
}
