//! Wrapped-key records: self-describing JSON for a key wrapped by a KEK (`keys/<session>` and
//! the repository secret inside `config`). Any key-service backend fits without format change.

use std::collections::BTreeMap;

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::Id;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Purpose {
    /// The repository secret M, under the meta KEK.
    RepositorySecret,
    /// A session data key, under the data KEK.
    SessionKey,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::RepositorySecret => "repository-secret",
            Purpose::SessionKey => "session-key",
        }
    }
}

/// What a key service returns: the KEK that wrapped it, the scheme, and the opaque bytes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    /// The KEK reference, e.g. `local:<kek-id>`, a KMS key ARN, a PKCS#11 object URI.
    pub kek: String,
    pub algorithm: String,
    #[serde(with = "b64")]
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrappedKey")
            .field("kek", &self.kek)
            .field("algorithm", &self.algorithm)
            .field("len", &self.ciphertext.len())
            .finish()
    }
}

/// Encryption context: bound into every wrap (AAD locally, EncryptionContext in KMS).
pub type Context = BTreeMap<String, String>;

pub fn context(purpose: Purpose, repository: &Id, key_id: &Id) -> Context {
    let mut c = Context::new();
    c.insert("custody:purpose".into(), purpose.as_str().into());
    c.insert("custody:repository".into(), repository.to_hex());
    c.insert("custody:key-id".into(), key_id.to_hex());
    c
}

/// Canonical bytes of a context (sorted keys, compact JSON), for AAD.
pub fn context_bytes(c: &Context) -> Vec<u8> {
    serde_json::to_vec(c).expect("map of strings serializes")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKeyRecord {
    pub format: u32,
    pub purpose: Purpose,
    pub repository: Id,
    /// Session id or repository-secret id.
    pub key_id: Id,
    pub created: DateTime<Utc>,
    #[serde(flatten)]
    pub wrapped: WrappedKey,
}

impl WrappedKeyRecord {
    pub fn context(&self) -> Context {
        context(self.purpose, &self.repository, &self.key_id)
    }
}

pub(crate) mod b64 {
    use base64::engine::general_purpose::STANDARD;

    use super::*;

    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}
