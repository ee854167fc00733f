//! `local:<dir>`: a keyring folder on disk, the embedded default key service.
//!
//! `keyring.json` ([`keyring_file`], mode 0600, refused when group- or world-readable) holds
//! two KEKs:
//! - the meta KEK, a 256-bit AES key that wraps the repository secret ([`symmetric_wrap`]);
//! - the data KEK, an X25519 key pair that wraps session data keys ([`x25519_wrap`]). A writer
//!   keyring (`key export --role writer`) holds only its public half, so it can wrap fresh
//!   session keys but never unwrap one: write-only is cryptographic.
//!
//! With a passphrase, each secret is sealed under an argon2id-derived key ([`passphrase`]).
//! This file is the service itself: which KEK a purpose uses, and what is denied to whom.

pub(crate) mod keyring_file;
pub(crate) mod passphrase;
mod symmetric_wrap;
mod x25519_wrap;

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::SecretString;

use super::{audit, audit_decrypt, KekInfo, KekPurpose, KeyService};
use crate::crypto::{random, Key32};
use crate::error::{Error, Result};
use crate::format::wrapped::{context_bytes, Context, Purpose, WrappedKey};
use crate::id::Id;
pub use keyring_file::{is_sealed, KeyringRole};
pub use passphrase::read_passphrase_file;

/// A KEK as held in memory; its secret is zeroized on drop.
struct Kek {
    id: String,
    created: DateTime<Utc>,
    secret: Option<Key32>,
}

/// An opened keyring with its secrets in memory (zeroized on drop).
pub struct LocalKeyring {
    dir: PathBuf,
    role: KeyringRole,
    meta: Kek,
    data: Kek,
    /// The data KEK's public half: every keyring holds it, and it is all wrapping needs.
    data_public: [u8; 32],
    sealed: bool,
}

impl std::fmt::Debug for LocalKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKeyring")
            .field("dir", &self.dir)
            .field("role", &self.role)
            .field("meta_kek", &self.meta.id)
            .field("data_kek", &self.data.id)
            .finish()
    }
}

fn denied(key: &str, op: &str, reason: impl std::fmt::Display) -> Error {
    Error::KeyDenied {
        key: key.to_string(),
        operation: op.to_string(),
        reason: reason.to_string(),
    }
}

impl LocalKeyring {
    /// Creates a new owner keyring in `dir` (created 0700 if missing). Refuses to overwrite.
    pub fn create(dir: &Path, passphrase: Option<&SecretString>) -> Result<LocalKeyring> {
        let now = Utc::now();
        let meta = Kek {
            id: new_kek_id()?,
            created: now,
            secret: Some(Key32::generate()?),
        };
        let data_secret = Key32::generate()?;
        let data_public = x25519_wrap::public_key(&data_secret);
        let data = Kek {
            id: new_kek_id()?,
            created: now,
            secret: Some(data_secret),
        };
        let k = LocalKeyring {
            dir: dir.to_path_buf(),
            role: KeyringRole::Owner,
            meta,
            data,
            data_public,
            sealed: passphrase.is_some(),
        };
        k.write_to(dir, KeyringRole::Owner, passphrase)?;
        Ok(k)
    }

    pub fn role(&self) -> KeyringRole {
        self.role
    }

    pub fn is_sealed(&self) -> bool {
        self.sealed
    }

    fn meta_ref(&self) -> String {
        format!("local:{}", self.meta.id)
    }

    fn data_ref(&self) -> String {
        format!("local:{}", self.data.id)
    }

    fn wrap(&self, purpose: Purpose, key: &Key32, ctx: &Context) -> Result<WrappedKey> {
        match purpose {
            Purpose::RepositorySecret => {
                let kek = self.meta.secret.as_ref().ok_or_else(|| {
                    denied(
                        &self.meta_ref(),
                        "wrap",
                        "this keyring holds no meta KEK secret",
                    )
                })?;
                Ok(WrappedKey {
                    kek: self.meta_ref(),
                    algorithm: symmetric_wrap::ALGORITHM.into(),
                    ciphertext: symmetric_wrap::wrap(kek, &self.meta.id, key, ctx)?,
                })
            }
            Purpose::SessionKey => Ok(WrappedKey {
                kek: self.data_ref(),
                algorithm: x25519_wrap::ALGORITHM.into(),
                ciphertext: x25519_wrap::wrap(&self.data_public, &self.data.id, key, ctx)?,
            }),
        }
    }

    fn unwrap(&self, w: &WrappedKey, ctx: &Context) -> Result<Key32> {
        let integrity = || {
            Error::integrity(
                format!("wrapped key under {}", w.kek),
                "does not open: altered, or bound to another repository, purpose or session",
            )
        };
        // Algorithm and length are checked before the secret: a malformed record is an
        // integrity error even for a keyring that could not open a good one.
        if w.kek == self.meta_ref() {
            if w.algorithm != symmetric_wrap::ALGORITHM
                || w.ciphertext.len() != symmetric_wrap::WRAPPED_LEN
            {
                return Err(integrity());
            }
            let kek = self.meta.secret.as_ref().ok_or_else(|| {
                denied(&w.kek, "decrypt", "this keyring holds no meta KEK secret")
            })?;
            symmetric_wrap::unwrap(kek, &self.meta.id, &w.ciphertext, ctx).ok_or_else(integrity)
        } else if w.kek == self.data_ref() {
            if w.algorithm != x25519_wrap::ALGORITHM
                || w.ciphertext.len() != x25519_wrap::WRAPPED_LEN
            {
                return Err(integrity());
            }
            let secret = self.data.secret.as_ref().ok_or_else(|| {
                denied(
                    &w.kek,
                    "decrypt",
                    "this is a writer keyring: it holds only the public half of the data KEK and cannot unwrap session keys",
                )
            })?;
            x25519_wrap::unwrap(secret, &self.data_public, &self.data.id, &w.ciphertext, ctx)
                .ok_or_else(integrity)
        } else {
            Err(denied(
                &w.kek,
                "decrypt",
                format!(
                    "KEK {} is not in the keyring at {}",
                    w.kek,
                    self.dir.display()
                ),
            ))
        }
    }
}

fn new_kek_id() -> Result<String> {
    let mut b = [0u8; 16];
    random::fill(&mut b)?;
    Ok(hex::encode(b))
}

/// Labels the owner anchor of a local keyring (docs/FORMAT.md §17.1).
const OWNER_ANCHOR_LABEL: &[u8] = b"custody/v2/owner-anchor";

/// Starts the AAD of both wrapping schemes. Changing it is a format change.
const WRAP_AAD_PREFIX: &[u8] = b"custody-local-wrap-v1";

/// The AAD of both wrapping schemes: the prefix, the KEK id, the canonical context bytes.
fn wrap_aad(kek_id: &str, ctx: &Context) -> Vec<u8> {
    let mut a = WRAP_AAD_PREFIX.to_vec();
    a.extend_from_slice(kek_id.as_bytes());
    a.extend_from_slice(&context_bytes(ctx));
    a
}

#[async_trait]
impl KeyService for LocalKeyring {
    fn url(&self) -> String {
        format!("local:{}", self.dir.display())
    }

    async fn generate_data_key(
        &self,
        purpose: Purpose,
        ctx: &Context,
    ) -> Result<(Key32, WrappedKey)> {
        let key = Key32::generate()?;
        let w = self.wrap(purpose, &key, ctx)?;
        audit("generate-data-key", &w.kek, ctx);
        Ok((key, w))
    }

    async fn decrypt(&self, wrapped: &WrappedKey, ctx: &Context) -> Result<Key32> {
        let r = self.unwrap(wrapped, ctx);
        audit_decrypt(r, &wrapped.kek, ctx)
    }

    async fn encrypt(&self, purpose: Purpose, key: &Key32, ctx: &Context) -> Result<WrappedKey> {
        let w = self.wrap(purpose, key, ctx)?;
        audit("encrypt", &w.kek, ctx);
        Ok(w)
    }

    /// `HKDF(R, data KEK secret, "custody/v2/owner-anchor" || data KEK id)`: only a keyring
    /// with the data KEK's secret half (an owner keyring) can compute it.
    async fn owner_anchor(&self, repo: &Id) -> Result<(Key32, String)> {
        let secret = self.data.secret.as_ref().ok_or_else(|| {
            denied(
                &self.data_ref(),
                "owner-anchor",
                "this is a writer keyring: only the owner's keyring can sign as the owner",
            )
        })?;
        let anchor = crate::crypto::kdf::derive_key(
            repo.as_bytes(),
            secret,
            &[OWNER_ANCHOR_LABEL, self.data.id.as_bytes()],
        );
        Ok((anchor, self.data_ref()))
    }

    async fn describe(&self) -> Result<Vec<KekInfo>> {
        Ok(vec![
            KekInfo {
                reference: self.meta_ref(),
                purpose: KekPurpose::Meta,
                algorithm: symmetric_wrap::ALGORITHM.into(),
                created: Some(self.meta.created),
                can_decrypt: self.meta.secret.is_some(),
                token_serial: None,
                public_key_sha256: None,
            },
            KekInfo {
                reference: self.data_ref(),
                purpose: KekPurpose::Data,
                algorithm: x25519_wrap::ALGORITHM.into(),
                created: Some(self.data.created),
                can_decrypt: self.data.secret.is_some(),
                token_serial: None,
                public_key_sha256: None,
            },
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::wrapped::context;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn wrap_unwrap_and_writer_cannot_decrypt() {
        let dir = tempfile::tempdir().unwrap();
        let owner = LocalKeyring::create(&dir.path().join("owner"), None).unwrap();
        let repo = Id::random().unwrap();
        let sid = Id::random().unwrap();
        let ctx = context(Purpose::SessionKey, &repo, &sid);
        let rt = rt();
        let (dek, w) = rt
            .block_on(owner.generate_data_key(Purpose::SessionKey, &ctx))
            .unwrap();
        assert_eq!(rt.block_on(owner.decrypt(&w, &ctx)).unwrap(), dek);

        owner
            .write_to(&dir.path().join("writer"), KeyringRole::Writer, None)
            .unwrap();
        let writer = LocalKeyring::open(&dir.path().join("writer"), None).unwrap();
        assert_eq!(writer.role(), KeyringRole::Writer);
        let err = rt.block_on(writer.decrypt(&w, &ctx)).unwrap_err();
        assert!(matches!(err, Error::KeyDenied { .. }), "{err}");
        // The writer still wraps keys that the owner can open.
        let (dek2, w2) = rt
            .block_on(writer.generate_data_key(Purpose::SessionKey, &ctx))
            .unwrap();
        assert_eq!(rt.block_on(owner.decrypt(&w2, &ctx)).unwrap(), dek2);
        // And the writer may unwrap the repository secret (chunking and dedup need it).
        let mctx = context(Purpose::RepositorySecret, &repo, &sid);
        let (m, wm) = rt
            .block_on(owner.generate_data_key(Purpose::RepositorySecret, &mctx))
            .unwrap();
        assert_eq!(rt.block_on(writer.decrypt(&wm, &mctx)).unwrap(), m);
    }

    #[test]
    fn fail_other_context_or_altered_wrap() {
        let dir = tempfile::tempdir().unwrap();
        let k = LocalKeyring::create(dir.path(), None).unwrap();
        let repo = Id::random().unwrap();
        let ctx = context(Purpose::SessionKey, &repo, &Id::random().unwrap());
        let other = context(Purpose::SessionKey, &repo, &Id::random().unwrap());
        let rt = rt();
        for purpose in [Purpose::SessionKey, Purpose::RepositorySecret] {
            let (_, w) = rt.block_on(k.generate_data_key(purpose, &ctx)).unwrap();
            assert!(rt
                .block_on(k.decrypt(&w, &other))
                .unwrap_err()
                .is_integrity());
            let mut t = w.clone();
            let n = t.ciphertext.len();
            t.ciphertext[n - 1] ^= 1;
            assert!(rt.block_on(k.decrypt(&t, &ctx)).unwrap_err().is_integrity());
        }
    }
}
