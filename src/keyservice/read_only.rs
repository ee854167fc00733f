//! A key service used to read only: it unwraps, and refuses to wrap anything new. A client
//! given no key service takes the KMS keys the repository's own records name (see
//! `repo::recorded_keys`); those names come from the store, which the custodian can edit, so
//! a key of the custodian's choosing may only ever fail to unwrap, never receive a new
//! session key (which whoever holds that key could then unwrap).

use std::sync::Arc;

use async_trait::async_trait;

use super::{Context, KekInfo, KeyService, Purpose};
use crate::crypto::Key32;
use crate::error::{Error, Result};
use crate::format::wrapped::WrappedKey;
use crate::id::Id;

impl ReadOnly {
    /// Whether `keys` is such a service (the repository then opens as a reader).
    pub fn is(keys: &dyn KeyService) -> bool {
        keys.as_any().downcast_ref::<ReadOnly>().is_some()
    }
}

#[derive(Debug)]
pub struct ReadOnly {
    inner: Arc<dyn KeyService>,
}

impl ReadOnly {
    pub fn new(inner: Arc<dyn KeyService>) -> ReadOnly {
        ReadOnly { inner }
    }

    fn refuse(&self, operation: &str) -> Error {
        Error::KeyDenied {
            key: self.inner.url(),
            operation: operation.into(),
            reason: "no key service was given, and the keys the repository's records name are \
                     used to read only; to write, give --key-service (or a profile with \
                     key_service)"
                .into(),
        }
    }
}

#[async_trait]
impl KeyService for ReadOnly {
    fn url(&self) -> String {
        self.inner.url()
    }

    async fn generate_data_key(
        &self,
        _purpose: Purpose,
        _ctx: &Context,
    ) -> Result<(Key32, WrappedKey)> {
        Err(self.refuse("generate data key"))
    }

    async fn decrypt(&self, wrapped: &WrappedKey, ctx: &Context) -> Result<Key32> {
        self.inner.decrypt(wrapped, ctx).await
    }

    async fn encrypt(&self, _purpose: Purpose, _key: &Key32, _ctx: &Context) -> Result<WrappedKey> {
        Err(self.refuse("encrypt"))
    }

    async fn rewrap(
        &self,
        _wrapped: &WrappedKey,
        _purpose: Purpose,
        _ctx: &Context,
    ) -> Result<WrappedKey> {
        Err(self.refuse("rewrap"))
    }

    async fn require_own(&self, wrapped: &WrappedKey, operation: &str) -> Result<()> {
        self.inner.require_own(wrapped, operation).await
    }

    async fn describe(&self) -> Result<Vec<KekInfo>> {
        self.inner.describe().await
    }

    /// Refused: the owner's signing key would let this client sign (checkpoints, tags,
    /// marks) with keys the store named. The repository opens as a reader instead.
    async fn owner_anchor(&self, _repo: &Id) -> Result<(Key32, String)> {
        Err(self.refuse("owner-anchor"))
    }
}
