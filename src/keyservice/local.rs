//! `local:<dir>`: a keyring folder on disk, the embedded default key service.
//!
//! `keyring.json` (mode 0600, refused when group- or world-readable) holds two KEKs:
//! - the meta KEK, a 256-bit AES key that wraps the repository secret;
//! - the data KEK, an X25519 key pair that wraps session data keys (ECIES-style). A writer
//!   keyring (`key export --role writer`) holds only its public half, so it can wrap fresh
//!   session keys but never unwrap one: write-only is cryptographic.
//!
//! With a passphrase, each secret is sealed under an argon2id-derived key.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::{audit, KekInfo, KeyService};
use crate::crypto::aead::{self, NONCE_LEN, TAG_LEN};
use crate::crypto::{kdf, random, Key32};
use crate::error::{Error, Result};
use crate::format::wrapped::{context_bytes, Context, Purpose, WrappedKey};

const FILE: &str = "keyring.json";
const FORMAT: u32 = 1;
const ALG_META: &str = "local-aes256gcm-v1";
const ALG_DATA: &str = "local-x25519-hkdf-aes256gcm-v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyringRole {
    /// Holds every secret: backs up, restores, rotates.
    Owner,
    /// Holds the meta KEK and only the public half of the data KEK: backs up, cannot read.
    Writer,
}

#[derive(Clone, Serialize, Deserialize)]
struct Argon2Params {
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    #[serde(with = "b64")]
    salt: Vec<u8>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SecretField {
    /// Base64 of the raw 32 bytes.
    Plain(#[serde(with = "b64")] Vec<u8>),
    /// nonce || AES-256-GCM(ciphertext || tag) under the passphrase key, AAD = KEK id.
    Sealed(#[serde(with = "b64")] Vec<u8>),
}

#[derive(Clone, Serialize, Deserialize)]
struct KekEntry {
    id: String,
    purpose: String,
    algorithm: String,
    created: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_b64")]
    public: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<SecretField>,
}

#[derive(Clone, Serialize, Deserialize)]
struct KeyringFile {
    format: u32,
    role: KeyringRole,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    passphrase: Option<Argon2Params>,
    keks: Vec<KekEntry>,
}

struct Kek {
    id: String,
    created: DateTime<Utc>,
    secret: Option<Key32>,
    public: Option<[u8; 32]>,
}

/// An opened keyring with its secrets in memory (zeroized on drop).
pub struct LocalKeyring {
    dir: PathBuf,
    role: KeyringRole,
    meta: Kek,
    data: Kek,
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

fn passphrase_key(p: &Argon2Params, pass: &SecretString) -> Result<Key32> {
    let params = argon2::Params::new(p.m_cost_kib, p.t_cost, p.p_cost, Some(32))
        .map_err(|e| Error::invalid(format!("keyring argon2 parameters: {e}")))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    a.hash_password_into(pass.expose_secret().as_bytes(), &p.salt, &mut out[..])
        .map_err(|e| Error::invalid(format!("argon2id: {e}")))?;
    Ok(Key32::from_bytes(&mut out))
}

fn seal_secret(key: &Key32, kek_id: &str, secret: &Key32) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    random::fill(&mut nonce)?;
    let mut buf = secret.expose().to_vec();
    let tag = aead::seal(key, &nonce, kek_id.as_bytes(), &mut buf);
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    out.extend_from_slice(&tag);
    buf.iter_mut().for_each(|b| *b = 0);
    Ok(out)
}

impl LocalKeyring {
    pub fn file_path(dir: &Path) -> PathBuf {
        dir.join(FILE)
    }

    /// Creates a new owner keyring in `dir` (created 0700 if missing). Refuses to overwrite.
    pub fn create(dir: &Path, passphrase: Option<&SecretString>) -> Result<LocalKeyring> {
        let now = Utc::now();
        let meta = Kek {
            id: new_kek_id()?,
            created: now,
            secret: Some(Key32::generate()?),
            public: None,
        };
        let data_secret = Key32::generate()?;
        let public = PublicKey::from(&StaticSecret::from(*data_secret.expose())).to_bytes();
        let data = Kek {
            id: new_kek_id()?,
            created: now,
            secret: Some(data_secret),
            public: Some(public),
        };
        let k = LocalKeyring {
            dir: dir.to_path_buf(),
            role: KeyringRole::Owner,
            meta,
            data,
            sealed: passphrase.is_some(),
        };
        k.write_to(dir, KeyringRole::Owner, passphrase)?;
        Ok(k)
    }

    /// Writes this keyring (or its writer subset) to `dir`; fails if a keyring is there.
    pub fn write_to(
        &self,
        dir: &Path,
        role: KeyringRole,
        passphrase: Option<&SecretString>,
    ) -> Result<()> {
        let path = Self::file_path(dir);
        if path.exists() {
            return Err(Error::AlreadyExists(format!("keyring {}", path.display())));
        }
        let data_secret = match role {
            KeyringRole::Owner => Some(self.data.secret.as_ref().ok_or_else(|| {
                denied(
                    &self.data_ref(),
                    "export",
                    "this keyring holds no data KEK secret to export",
                )
            })?),
            KeyringRole::Writer => None,
        };
        let meta_secret = self.meta.secret.as_ref().ok_or_else(|| {
            denied(
                &self.meta_ref(),
                "export",
                "this keyring holds no meta KEK secret",
            )
        })?;
        let (params, pkey) = match passphrase {
            Some(p) => {
                let mut salt = vec![0u8; 16];
                random::fill(&mut salt)?;
                let params = Argon2Params {
                    m_cost_kib: 65536,
                    t_cost: 3,
                    p_cost: 1,
                    salt,
                };
                let k = passphrase_key(&params, p)?;
                (Some(params), Some(k))
            }
            None => (None, None),
        };
        let field = |id: &str, s: &Key32| -> Result<SecretField> {
            Ok(match &pkey {
                Some(k) => SecretField::Sealed(seal_secret(k, id, s)?),
                None => SecretField::Plain(s.expose().to_vec()),
            })
        };
        let file = KeyringFile {
            format: FORMAT,
            role,
            passphrase: params,
            keks: vec![
                KekEntry {
                    id: self.meta.id.clone(),
                    purpose: "meta".into(),
                    algorithm: ALG_META.into(),
                    created: self.meta.created,
                    public: None,
                    secret: Some(field(&self.meta.id, meta_secret)?),
                },
                KekEntry {
                    id: self.data.id.clone(),
                    purpose: "data".into(),
                    algorithm: ALG_DATA.into(),
                    created: self.data.created,
                    public: self.data.public.map(|p| p.to_vec()),
                    secret: data_secret.map(|s| field(&self.data.id, s)).transpose()?,
                },
            ],
        };
        let json = Zeroizing::new(serde_json::to_vec_pretty(&file).expect("keyring serializes"));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(dir.display(), e))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(path.display(), e))?;
        f.write_all(&json)
            .map_err(|e| Error::io(path.display(), e))?;
        f.sync_all().map_err(|e| Error::io(path.display(), e))?;
        Ok(())
    }

    /// Opens the keyring in `dir`, refusing files others can read.
    pub fn open(dir: &Path, passphrase: Option<&SecretString>) -> Result<LocalKeyring> {
        let path = Self::file_path(dir);
        let url = format!("local:{}", dir.display());
        let meta = std::fs::metadata(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::KeyUnavailable {
                    key: url.clone(),
                    operation: "open keyring".into(),
                    reason: format!("no keyring at {}", path.display()),
                }
            } else {
                Error::io(path.display(), e)
            }
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(denied(
                &url,
                "open keyring",
                format!(
                    "{} is readable by group or others (mode {mode:o}); run chmod 600 on it",
                    path.display()
                ),
            ));
        }
        let bytes = Zeroizing::new(std::fs::read(&path).map_err(|e| Error::io(path.display(), e))?);
        let file: KeyringFile = serde_json::from_slice(&bytes).map_err(|e| {
            Error::invalid(format!("{}: not a custody keyring: {e}", path.display()))
        })?;
        if file.format != FORMAT {
            return Err(Error::Unsupported(format!(
                "keyring format {} (this build reads {FORMAT})",
                file.format
            )));
        }
        let pkey = match (&file.passphrase, passphrase) {
            (Some(p), Some(pass)) => Some(passphrase_key(p, pass)?),
            (Some(_), None) => {
                return Err(denied(
                    &url,
                    "open keyring",
                    "the keyring is sealed with a passphrase: set CUSTODY_KEYRING_PASSPHRASE or use --passphrase-file",
                ))
            }
            (None, _) => None,
        };
        let load = |purpose: &str| -> Result<Kek> {
            let e = file
                .keks
                .iter()
                .find(|k| k.purpose == purpose)
                .ok_or_else(|| Error::invalid(format!("keyring has no {purpose} KEK")))?;
            let secret = match &e.secret {
                None => None,
                Some(SecretField::Plain(b)) => Some(
                    Key32::from_slice(b)
                        .ok_or_else(|| Error::invalid("keyring secret is not 32 bytes"))?,
                ),
                Some(SecretField::Sealed(b)) => {
                    let k = pkey.as_ref().ok_or_else(|| {
                        denied(&url, "open keyring", "sealed secret in an unsealed keyring")
                    })?;
                    if b.len() != NONCE_LEN + 32 + TAG_LEN {
                        return Err(Error::invalid("sealed keyring secret has the wrong length"));
                    }
                    let nonce: [u8; NONCE_LEN] = b[..NONCE_LEN].try_into().expect("length checked");
                    let mut buf = Zeroizing::new(b[NONCE_LEN..].to_vec());
                    aead::open(k, &nonce, e.id.as_bytes(), &mut buf[..])
                        .map_err(|_| denied(&url, "open keyring", "wrong passphrase"))?;
                    Key32::from_slice(&buf[..32])
                }
            };
            let public = match &e.public {
                Some(p) => Some(
                    <[u8; 32]>::try_from(p.as_slice())
                        .map_err(|_| Error::invalid("keyring public key is not 32 bytes"))?,
                ),
                None => None,
            };
            Ok(Kek {
                id: e.id.clone(),
                created: e.created,
                secret,
                public,
            })
        };
        let meta = load("meta")?;
        let data = load("data")?;
        if data.public.is_none() {
            return Err(Error::invalid("keyring data KEK has no public key"));
        }
        Ok(LocalKeyring {
            dir: dir.to_path_buf(),
            role: file.role,
            meta,
            data,
            sealed: file.passphrase.is_some(),
        })
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
                let wk = kdf::derive_key(
                    b"",
                    kek,
                    &[b"custody/v1/local-wrap", self.meta.id.as_bytes()],
                );
                let mut nonce = [0u8; NONCE_LEN];
                random::fill(&mut nonce)?;
                let mut buf = key.expose().to_vec();
                let tag = aead::seal(&wk, &nonce, &aad(&self.meta.id, ctx), &mut buf);
                let mut ct = nonce.to_vec();
                ct.extend_from_slice(&buf);
                ct.extend_from_slice(&tag);
                Ok(WrappedKey {
                    kek: self.meta_ref(),
                    algorithm: ALG_META.into(),
                    ciphertext: ct,
                })
            }
            Purpose::SessionKey => {
                let public = PublicKey::from(self.data.public.expect("checked at open"));
                let mut eph_bytes = Zeroizing::new([0u8; 32]);
                random::fill(&mut eph_bytes[..])?;
                let eph = StaticSecret::from(*eph_bytes);
                let eph_pub = PublicKey::from(&eph);
                let shared = eph.diffie_hellman(&public);
                if !shared.was_contributory() {
                    return Err(Error::invalid("data KEK public key is degenerate"));
                }
                let wk = x25519_wrap_key(shared.as_bytes(), &eph_pub, &public, &self.data.id);
                let mut nonce = [0u8; NONCE_LEN];
                random::fill(&mut nonce)?;
                let mut buf = key.expose().to_vec();
                let tag = aead::seal(&wk, &nonce, &aad(&self.data.id, ctx), &mut buf);
                let mut ct = eph_pub.to_bytes().to_vec();
                ct.extend_from_slice(&nonce);
                ct.extend_from_slice(&buf);
                ct.extend_from_slice(&tag);
                Ok(WrappedKey {
                    kek: self.data_ref(),
                    algorithm: ALG_DATA.into(),
                    ciphertext: ct,
                })
            }
        }
    }

    fn unwrap(&self, w: &WrappedKey, ctx: &Context) -> Result<Key32> {
        let integrity = || {
            Error::integrity(
                format!("wrapped key under {}", w.kek),
                "does not open: altered, or bound to another repository, purpose or session",
            )
        };
        if w.kek == self.meta_ref() {
            if w.algorithm != ALG_META || w.ciphertext.len() != NONCE_LEN + 32 + TAG_LEN {
                return Err(integrity());
            }
            let kek = self.meta.secret.as_ref().ok_or_else(|| {
                denied(&w.kek, "decrypt", "this keyring holds no meta KEK secret")
            })?;
            let wk = kdf::derive_key(
                b"",
                kek,
                &[b"custody/v1/local-wrap", self.meta.id.as_bytes()],
            );
            let nonce: [u8; NONCE_LEN] = w.ciphertext[..NONCE_LEN]
                .try_into()
                .expect("length checked");
            let mut buf = Zeroizing::new(w.ciphertext[NONCE_LEN..].to_vec());
            aead::open(&wk, &nonce, &aad(&self.meta.id, ctx), &mut buf[..])
                .map_err(|_| integrity())?;
            Key32::from_slice(&buf[..32]).ok_or_else(integrity)
        } else if w.kek == self.data_ref() {
            if w.algorithm != ALG_DATA || w.ciphertext.len() != 32 + NONCE_LEN + 32 + TAG_LEN {
                return Err(integrity());
            }
            let secret = self.data.secret.as_ref().ok_or_else(|| {
                denied(
                    &w.kek,
                    "decrypt",
                    "this is a writer keyring: it holds only the public half of the data KEK and cannot unwrap session keys",
                )
            })?;
            let sk = StaticSecret::from(*secret.expose());
            let eph_pub =
                PublicKey::from(<[u8; 32]>::try_from(&w.ciphertext[..32]).expect("length checked"));
            let shared = sk.diffie_hellman(&eph_pub);
            if !shared.was_contributory() {
                return Err(integrity());
            }
            let public = PublicKey::from(self.data.public.expect("checked at open"));
            let wk = x25519_wrap_key(shared.as_bytes(), &eph_pub, &public, &self.data.id);
            let nonce: [u8; NONCE_LEN] = w.ciphertext[32..32 + NONCE_LEN]
                .try_into()
                .expect("length checked");
            let mut buf = Zeroizing::new(w.ciphertext[32 + NONCE_LEN..].to_vec());
            aead::open(&wk, &nonce, &aad(&self.data.id, ctx), &mut buf[..])
                .map_err(|_| integrity())?;
            Key32::from_slice(&buf[..32]).ok_or_else(integrity)
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

fn aad(kek_id: &str, ctx: &Context) -> Vec<u8> {
    let mut a = b"custody-local-wrap-v1".to_vec();
    a.extend_from_slice(kek_id.as_bytes());
    a.extend_from_slice(&context_bytes(ctx));
    a
}

fn x25519_wrap_key(shared: &[u8; 32], eph: &PublicKey, public: &PublicKey, kek_id: &str) -> Key32 {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(eph.as_bytes());
    salt[32..].copy_from_slice(public.as_bytes());
    let mut out = [0u8; 32];
    kdf::hkdf(
        &salt,
        shared,
        &[b"custody/v1/local-x25519-wrap", kek_id.as_bytes()],
        &mut out,
    );
    Key32::from_bytes(&mut out)
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
        audit(
            if r.is_ok() {
                "decrypt"
            } else {
                "decrypt-refused"
            },
            &wrapped.kek,
            ctx,
        );
        r
    }

    async fn encrypt(&self, purpose: Purpose, key: &Key32, ctx: &Context) -> Result<WrappedKey> {
        let w = self.wrap(purpose, key, ctx)?;
        audit("encrypt", &w.kek, ctx);
        Ok(w)
    }

    fn backend(&self) -> &'static str {
        "local"
    }

    async fn describe(&self) -> Result<Vec<KekInfo>> {
        Ok(vec![
            KekInfo {
                reference: self.meta_ref(),
                purpose: "meta".into(),
                algorithm: ALG_META.into(),
                created: Some(self.meta.created),
                can_decrypt: self.meta.secret.is_some(),
            },
            KekInfo {
                reference: self.data_ref(),
                purpose: "data".into(),
                algorithm: ALG_DATA.into(),
                created: Some(self.data.created),
                can_decrypt: self.data.secret.is_some(),
            },
        ])
    }
}

mod b64 {
    use super::*;
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s).map_err(serde::de::Error::custom)
    }
}

mod opt_b64 {
    use super::*;
    pub fn serialize<S: serde::Serializer>(
        v: &Option<Vec<u8>>,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&B64.encode(v)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<Vec<u8>>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| B64.decode(s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::wrapped::context;
    use crate::id::Id;

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

    #[test]
    fn fail_group_readable_file_and_wrong_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let pass = SecretString::from("correct horse".to_string());
        LocalKeyring::create(dir.path(), Some(&pass)).unwrap();
        let path = LocalKeyring::file_path(dir.path());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("sealed"));
        assert!(LocalKeyring::open(dir.path(), Some(&pass)).is_ok());
        let wrong = SecretString::from("wrong".to_string());
        let e = LocalKeyring::open(dir.path(), Some(&wrong)).unwrap_err();
        assert!(e.to_string().contains("wrong passphrase"), "{e}");
        assert!(LocalKeyring::open(dir.path(), None)
            .unwrap_err()
            .is_key_service());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = LocalKeyring::open(dir.path(), Some(&pass)).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }
}
