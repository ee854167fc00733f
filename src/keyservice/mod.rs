//! Key services: where key-encryption keys (KEKs) live. One small trait; the backend is chosen
//! by URL. The vault only ever stores wrapped keys (self-describing [`WrappedKey`] records).
//!
//! Every call carries an encryption context that binds the repository, the purpose and the key
//! id; a wrapped key presented with any other context does not open.

pub mod audit_log;
pub mod awskms;
pub mod local;
pub mod pkcs11;
pub mod policy;
pub mod quorum;
pub mod read_only;

pub use awskms::AwsKms;
pub use local::{KeyringRole, LocalKeyring};
pub use pkcs11::Pkcs11Service;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::crypto::Key32;
use crate::error::{Error, Result};
use crate::format::wrapped::{Context, Purpose, WrappedKey};
use crate::id::Id;

/// What a KEK wraps, as [`KeyService::describe`] reports it; `key list` prints these words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KekPurpose {
    /// The repository secret.
    #[serde(rename = "meta")]
    Meta,
    /// Session keys.
    #[serde(rename = "data")]
    Data,
    /// Both: one KMS key when an `awskms:` URL has no `meta=`.
    #[serde(rename = "meta+data")]
    MetaAndData,
}

impl KekPurpose {
    /// The purposes of the keys this KEK wraps.
    pub fn wraps(self) -> &'static [Purpose] {
        match self {
            KekPurpose::Meta => &[Purpose::RepositorySecret],
            KekPurpose::Data => &[Purpose::SessionKey],
            KekPurpose::MetaAndData => &[Purpose::RepositorySecret, Purpose::SessionKey],
        }
    }
}

/// A KEK as the key service describes it (no secret material).
#[derive(Debug, Clone, Serialize)]
pub struct KekInfo {
    pub reference: String,
    pub purpose: KekPurpose,
    pub algorithm: String,
    pub created: Option<chrono::DateTime<chrono::Utc>>,
    /// Whether this service can unwrap keys wrapped by this KEK.
    pub can_decrypt: bool,
    /// The serial number of the PKCS#11 token holding it (key policies name tokens by it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_serial: Option<String>,
    /// SHA-256 of a PKCS#11 data key's public half (modulus, then exponent): what
    /// `data-key-sha256` and key policies pin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key_sha256: Option<String>,
}

/// A key service as `&dyn Any`, so that one can recognise another of its own kind
/// ([`KeyService::rewrap_within`]). Implemented for every `'static` type.
pub trait AsAny: std::any::Any {
    fn as_any(&self) -> &dyn std::any::Any;
}

impl<T: std::any::Any> AsAny for T {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[async_trait]
pub trait KeyService: AsAny + Send + Sync + std::fmt::Debug {
    /// Where this service is (no credentials), for messages.
    fn url(&self) -> String;

    /// A fresh 256-bit key, in plaintext and wrapped under the KEK for `purpose`.
    async fn generate_data_key(
        &self,
        purpose: Purpose,
        ctx: &Context,
    ) -> Result<(Key32, WrappedKey)>;

    /// Unwraps a key; the context must equal the one it was wrapped with.
    async fn decrypt(&self, wrapped: &WrappedKey, ctx: &Context) -> Result<Key32>;

    /// Wraps a key given in plaintext under this service's KEK for `purpose` (rotation from
    /// another service; within one KMS, `rewrap` avoids the plaintext).
    async fn encrypt(&self, purpose: Purpose, key: &Key32, ctx: &Context) -> Result<WrappedKey>;

    /// Whether keys this service wrapped can be re-wrapped for `to` inside the service, the
    /// plaintext never reaching this process: rotation then asks `to.rewrap`. When not (the
    /// default), rotation unwraps with this service and wraps with `to`.
    fn rewrap_within(&self, _to: &dyn KeyService) -> bool {
        false
    }

    /// Refuses a wrapped key whose KEK is not one this service was given: a rewrap inside the
    /// service (KMS ReEncrypt) must not take whatever source key a record names, or a record
    /// planted under a key of someone else's choosing would be re-wrapped under the owner's
    /// new key. The default accepts (services that unwrap themselves check in `decrypt`).
    async fn require_own(&self, _wrapped: &WrappedKey, _operation: &str) -> Result<()> {
        Ok(())
    }

    /// Re-wraps a key under this service's current KEK for `purpose`. The default unwraps and
    /// wraps again in this process; KMS overrides it with ReEncrypt, where the plaintext key
    /// never leaves the service.
    async fn rewrap(
        &self,
        wrapped: &WrappedKey,
        purpose: Purpose,
        ctx: &Context,
    ) -> Result<WrappedKey> {
        let key = self.decrypt(wrapped, ctx).await?;
        self.encrypt(purpose, &key, ctx).await
    }

    /// The KEKs this service holds or points at.
    async fn describe(&self) -> Result<Vec<KekInfo>>;

    /// The *owner anchor* of a repository: 32 bytes that only a key holder of this service
    /// can compute, the same on every call. It seals the owner's signing key, so a writer
    /// (which this service refuses here) can neither use that key nor plant one of its own
    /// (docs/FORMAT.md §17.1). Returns the anchor and a description of what made it.
    async fn owner_anchor(&self, _repo: &Id) -> Result<(Key32, String)> {
        Err(Error::KeyDenied {
            key: self.url(),
            operation: "owner-anchor".into(),
            reason: "this key service cannot act as the repository's owner".into(),
        })
    }
}

/// Options a key service may need that are not part of its URL.
#[derive(Default)]
pub struct KeyServiceOptions {
    /// Seals or opens a local keyring; never taken from a command-line argument.
    pub passphrase: Option<SecretString>,
    /// Timeouts of the KMS client.
    pub aws: crate::settings::AwsSettings,
}

impl std::fmt::Debug for KeyServiceOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyServiceOptions")
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "<redacted>"),
            )
            .field("aws", &self.aws)
            .finish()
    }
}

/// A parsed key-service URL.
#[derive(Clone, PartialEq, Eq)]
pub enum KeyServiceUrl {
    Local(PathBuf),
    AwsKms(String),
    Pkcs11(String),
    /// A quorum file: M of N holders, each any of the above (docs/FORMAT.md §11.4).
    Quorum(PathBuf),
}

impl std::fmt::Debug for KeyServiceUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyServiceUrl::Local(d) => write!(f, "Local({d:?})"),
            KeyServiceUrl::AwsKms(u) => write!(f, "AwsKms({u:?})"),
            KeyServiceUrl::Pkcs11(_) => f.write_str("Pkcs11(<redacted: may hold a PIN>)"),
            KeyServiceUrl::Quorum(p) => write!(f, "Quorum({p:?})"),
        }
    }
}

impl KeyServiceUrl {
    pub fn parse(url: &str) -> Result<KeyServiceUrl> {
        if let Some(dir) = url.strip_prefix("local:") {
            let dir = dir.strip_prefix("//").unwrap_or(dir);
            if dir.is_empty() {
                return Err(Error::invalid(
                    "local: key service needs a folder, e.g. local:/etc/custody/keyring",
                ));
            }
            return Ok(KeyServiceUrl::Local(PathBuf::from(dir)));
        }
        if url.starts_with("awskms:") {
            awskms::KmsUrl::parse(url)?;
            return Ok(KeyServiceUrl::AwsKms(url.to_string()));
        }
        if url.starts_with("pkcs11:") {
            pkcs11::Pkcs11Url::parse(url)?;
            return Ok(KeyServiceUrl::Pkcs11(url.to_string()));
        }
        if let Some(file) = url.strip_prefix("quorum:") {
            if file.is_empty() {
                return Err(Error::invalid(
                    "quorum: key service needs a file, e.g. quorum:/etc/custody/quorum.json",
                ));
            }
            return Ok(KeyServiceUrl::Quorum(PathBuf::from(file)));
        }
        for scheme in ["keyd+https:"] {
            if url.starts_with(scheme) {
                return Err(Error::Unsupported(format!(
                    "key service {scheme} is not built yet in this version"
                )));
            }
        }
        // Only the scheme is shown: a mistyped URL may still carry a PIN.
        let scheme = url.split(':').next().unwrap_or("");
        Err(Error::invalid(format!(
        "unknown key service URL scheme {scheme:?} (expected local:<dir>, awskms:<key>, pkcs11:token=... or quorum:<file>)"
    )))
    }
}

/// Opens an existing key service (network backends connect lazily, on first use).
pub fn open(
    url: &str,
    opts: &KeyServiceOptions,
    rt: &tokio::runtime::Handle,
) -> Result<Arc<dyn KeyService>> {
    match KeyServiceUrl::parse(url)? {
        KeyServiceUrl::Local(dir) => Ok(Arc::new(LocalKeyring::open(
            &dir,
            opts.passphrase.as_ref(),
        )?)),
        KeyServiceUrl::AwsKms(u) => Ok(Arc::new(rt.block_on(AwsKms::open(&u, &opts.aws))?)),
        KeyServiceUrl::Pkcs11(u) => Ok(Arc::new(Pkcs11Service::open(&u)?)),
        KeyServiceUrl::Quorum(p) => Ok(Arc::new(quorum::Quorum::open(&p, opts, rt)?)),
    }
}

/// Pins the data public key of every PKCS#11 service in `service` (itself, or a quorum's
/// holders) to `fingerprints`, from the repository's key policy (docs/FORMAT.md §20).
pub fn pin_pkcs11_data_keys(service: &dyn KeyService, fingerprints: &[String]) {
    if let Some(p) = service.as_any().downcast_ref::<Pkcs11Service>() {
        p.pin_data_keys(fingerprints);
    } else if let Some(q) = service.as_any().downcast_ref::<quorum::Quorum>() {
        q.for_each_holder_service(|s| pin_pkcs11_data_keys(s, fingerprints));
    }
}

/// The audit line of an unwrap: `decrypt`, or `decrypt-refused` when it failed. Returns the
/// result unchanged.
pub(crate) fn audit_decrypt<T>(r: Result<T>, kek: &str, ctx: &Context) -> Result<T> {
    audit(
        if r.is_ok() {
            "decrypt"
        } else {
            "decrypt-refused"
        },
        kek,
        ctx,
    );
    r
}

/// The audit line of an operation that serves a restore request (releasing or combining a
/// holder's part): the line names the request.
pub(crate) fn audit_request(op: &str, kek: &str, ctx: &Context, request: &str) {
    let mut c = ctx.clone();
    c.insert("custody:request".into(), request.into());
    audit(op, kek, &c);
}

/// One audit line per key operation: matches the key custodian's own log line by line.
pub(crate) fn audit(op: &str, kek: &str, ctx: &Context) {
    audit_log::record(op, kek, ctx);
    tracing::info!(
        target: "custody::audit",
        operation = op,
        kek = kek,
        purpose = ctx.get("custody:purpose").map(String::as_str).unwrap_or(""),
        repository = ctx.get("custody:repository").map(String::as_str).unwrap_or(""),
        key_id = ctx.get("custody:key-id").map(String::as_str).unwrap_or(""),
        "key operation"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kek_purposes_serialize_as_key_list_prints_them() {
        let all = [KekPurpose::Meta, KekPurpose::Data, KekPurpose::MetaAndData];
        assert_eq!(
            serde_json::to_value(all).unwrap(),
            serde_json::json!(["meta", "data", "meta+data"])
        );
    }
}
