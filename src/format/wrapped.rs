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
    /// Format 2: base64 of `signer id (32) || Ed25519 signature (64)` over
    /// [`WrappedKeyRecord::signed_message`], so that a key holder knows when, and by whom, a
    /// session was started (docs/FORMAT.md §17.4). Not part of the wrapped key: a rewrap keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

impl WrappedKeyRecord {
    pub fn context(&self) -> Context {
        context(self.purpose, &self.repository, &self.key_id)
    }

    /// What a record's signature covers: label, repository, key id, purpose and creation time
    /// (seconds and nanoseconds, little endian). Not the wrapped key, which rotation replaces.
    pub fn signed_message(&self) -> Vec<u8> {
        let mut m = b"custody/v2/key-record".to_vec();
        m.extend_from_slice(self.repository.as_bytes());
        m.extend_from_slice(self.key_id.as_bytes());
        m.extend_from_slice(self.purpose.as_str().as_bytes());
        m.extend_from_slice(&self.created.timestamp().to_le_bytes());
        m.extend_from_slice(&self.created.timestamp_subsec_nanos().to_le_bytes());
        m
    }

    /// Signs the record (its creation time) with `key`.
    pub fn sign(&mut self, key: &crate::crypto::signing::SigningKey) {
        use base64::Engine;
        let sig = key.sign(&self.signed_message());
        let bytes = [key.id().as_bytes().as_slice(), &sig].concat();
        self.signature = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
    }

    /// The signer whose valid signature the record carries, if any.
    pub fn signer(&self) -> Option<crate::id::SignerId> {
        use base64::Engine;
        let b = base64::engine::general_purpose::STANDARD
            .decode(self.signature.as_ref()?)
            .ok()?;
        if b.len() != 96 {
            return None;
        }
        let signer = crate::id::SignerId(Id::from_slice(&b[..32])?);
        crate::crypto::signing::verify(&signer, &self.signed_message(), &b[32..]).then_some(signer)
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
