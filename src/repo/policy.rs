//! The repository's key policy (`policy`, docs/FORMAT.md §20): plaintext JSON signed by the
//! owner, so that every client (owner, holder, writer) can verify it with the owner id it
//! already trusts, and nobody but M key holders together can weaken it. Clients keep a copy
//! beside their copy of `owner`: a policy deleted from the store is noticed.

use std::path::Path;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::provenance::Provenance;
use super::Repository;
use crate::crypto::signing;
use crate::error::{Error, Result};
use crate::format::wrapped::Purpose;
use crate::id::{Id, SessionId, SignerId};
use crate::keyservice::policy::KeyPolicy;
use crate::store::FileKind;

/// The stored record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub format: u32,
    pub repository: Id,
    /// The policy as compact JSON: the signed bytes.
    pub policy: String,
    pub created: DateTime<Utc>,
    pub signer: SignerId,
    /// Hex of the owner's Ed25519 signature over [`message`].
    pub signature: String,
}

/// What the owner signs: the repository, when the policy was set (so an older one put back
/// is recognised) and the policy's bytes.
fn message(repo: &Id, created: &DateTime<Utc>, policy: &str) -> Vec<u8> {
    let mut m = b"custody/v2/key-policy".to_vec();
    m.extend_from_slice(repo.as_bytes());
    m.extend_from_slice(&created.timestamp().to_le_bytes());
    m.extend_from_slice(&created.timestamp_subsec_nanos().to_le_bytes());
    m.extend_from_slice(policy.as_bytes());
    m
}

/// Refuses a stored record older than this client's copy: an earlier policy (perhaps a
/// looser one) put back by the custodian. Both are signed, so `created` is the owner's.
fn not_older_than_copy(store: &PolicyRecord, copy: Option<&[u8]>) -> Result<()> {
    let copy: Option<PolicyRecord> = copy.and_then(|b| serde_json::from_slice(b).ok());
    match copy {
        Some(c) if c.created > store.created => Err(Error::integrity(
            "policy",
            format!(
                "an older key policy (set {}) was put back over the one this client saw (set {})",
                crate::human::local_time(store.created),
                crate::human::local_time(c.created)
            ),
        )),
        _ => Ok(()),
    }
}

impl PolicyRecord {
    /// Verifies the record against `owner` and returns its policy.
    pub fn verify(&self, repo: &Id, owner: &SignerId) -> Result<KeyPolicy> {
        let bad = |why: &str| Error::integrity("policy", why);
        if self.format != 1 || self.repository != *repo {
            return Err(bad("a record of another repository or format"));
        }
        if self.signer != *owner {
            return Err(bad("not signed by this repository's owner"));
        }
        let sig = hex::decode(&self.signature).map_err(|_| bad("signature is not hex"))?;
        if !signing::verify(owner, &message(repo, &self.created, &self.policy), &sig) {
            return Err(bad("the owner's signature does not verify (altered)"));
        }
        KeyPolicy::parse(self.policy.as_bytes(), "in the repository")
            .map_err(|e| Error::integrity("policy", e))
    }
}

/// This client's copy of the policy record, beside its copy of `owner`.
pub fn policy_copy_path(owner_copy: &Path) -> std::path::PathBuf {
    owner_copy.with_extension("policy.json")
}

impl Repository {
    /// The key policy in force (verified at opening), if any.
    pub fn key_policy(&self) -> Option<&KeyPolicy> {
        self.policy.as_ref()
    }

    /// The owner id this client verifies the policy with.
    fn policy_signer(&self) -> Option<SignerId> {
        match &self.provenance {
            Provenance::Owner { roster, .. } | Provenance::Reader { roster } => Some(roster.owner),
            Provenance::Writer { owner, .. } => Some(*owner),
            Provenance::Legacy => None,
        }
    }

    /// Loads and verifies the policy (after provenance), keeps a copy, and checks the
    /// repository secret's record against it. A policy in the store that does not verify,
    /// or one this client saw before that is gone, stops every command (exit 3).
    pub(super) fn load_key_policy(&mut self, owner_copy: Option<&Path>) -> Result<()> {
        let Some(owner) = self.policy_signer() else {
            return Ok(());
        };
        let copy_path = owner_copy.map(policy_copy_path);
        let stored = match self.store.get(FileKind::Policy, &Id::default()) {
            Ok(b) => Some(b),
            Err(Error::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let Some(bytes) = stored else {
            if copy_path.as_ref().is_some_and(|p| p.exists()) {
                return Err(Error::integrity(
                    "policy",
                    "missing: this repository had a key policy (this client keeps a copy), and it was deleted from the store",
                ));
            }
            return Ok(());
        };
        let record: PolicyRecord = serde_json::from_slice(&bytes)
            .map_err(|e| Error::integrity("policy", format!("not a policy record: {e}")))?;
        let policy = record.verify(&self.id(), &owner)?;
        not_older_than_copy(
            &record,
            copy_path
                .as_ref()
                .and_then(|p| std::fs::read(p).ok())
                .as_deref(),
        )?;
        if let Some(p) = &copy_path {
            if std::fs::read(p).ok().as_deref() != Some(&bytes[..]) {
                if let Err(e) = super::provenance::write_private(p, &bytes) {
                    tracing::warn!(
                        "could not keep a copy of the key policy at {}: {e}",
                        p.display()
                    );
                }
            }
        }
        policy.check_wrapped(&self.config.secret.wrapped)?;
        self.pin_data_keys(&policy);
        self.policy = Some(policy);
        Ok(())
    }

    /// Hands the policy's PKCS#11 data-key pins to the key service.
    fn pin_data_keys(&self, policy: &KeyPolicy) {
        if !policy.pkcs11.data_key_sha256.is_empty() {
            crate::keyservice::pin_pkcs11_data_keys(
                self.keys.inner().as_ref(),
                &policy.pkcs11.data_key_sha256,
            );
        }
    }

    /// Refuses a session's wrapped key that names a KEK outside the policy, before any key
    /// service is asked to unwrap it.
    pub(crate) fn check_policy(&self, wrapped: &crate::format::wrapped::WrappedKey) -> Result<()> {
        match &self.policy {
            Some(p) => p.check_wrapped(wrapped),
            None => Ok(()),
        }
    }

    /// `key policy set` (the owner): every wrapped key in the repository must already be
    /// inside the new policy (rewrap first otherwise), then the signed record is stored.
    pub fn set_key_policy(&mut self, policy: KeyPolicy, owner_copy: Option<&Path>) -> Result<()> {
        self.require_owner("key policy set")?;
        let Provenance::Owner { key, .. } = &self.provenance else {
            return Err(Error::invalid(
                "key policies need a signed repository (format 2): run `custody migrate` first",
            ));
        };
        policy.check_wrapped(&self.config.secret.wrapped)?;
        for (id, _) in self.store.list(FileKind::Key)? {
            let rec = self.load_key_record(&SessionId(id))?;
            if rec.purpose == Purpose::SessionKey {
                policy.check_wrapped(&rec.wrapped).map_err(|e| {
                    Error::invalid(format!(
                        "keys/{} is outside the new policy ({e}): rewrap it first (`custody rotate rewrap --to ...`)",
                        id.short()
                    ))
                })?;
            }
        }
        let body = serde_json::to_string(&policy).map_err(|e| Error::Internal(e.to_string()))?;
        let created = Utc::now();
        let record = PolicyRecord {
            format: 1,
            repository: self.id(),
            signature: hex::encode(key.sign(&message(&self.id(), &created, &body))),
            signer: key.id(),
            policy: body,
            created,
        };
        let json =
            serde_json::to_vec_pretty(&record).map_err(|e| Error::Internal(e.to_string()))?;
        self.store
            .put(FileKind::Policy, &Id::default(), Bytes::from(json.clone()))?;
        if let Some(p) = owner_copy.map(policy_copy_path) {
            super::provenance::write_private(&p, &json).map_err(|e| Error::io(p.display(), e))?;
        }
        self.pin_data_keys(&policy);
        self.policy = Some(policy);
        Ok(())
    }
}

/// The policy a rotator checks its destination against, read without opening the
/// repository: verified with the owner id of this client's copy of `owner` when it has one,
/// else of the store's.
pub async fn read_key_policy(
    store: &dyn crate::store::Store,
    repo: &Id,
    owner_copy: Option<&Path>,
) -> Result<Option<KeyPolicy>> {
    let bytes = match store.get(FileKind::Policy, &Id::default()).await {
        Ok(b) => b,
        Err(Error::NotFound(_)) => {
            if owner_copy.map(policy_copy_path).is_some_and(|p| p.exists()) {
                return Err(Error::integrity(
                    "policy",
                    "missing: deleted from the store",
                ));
            }
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let owner_bytes = match owner_copy.and_then(|p| std::fs::read(p).ok()) {
        Some(b) => Bytes::from(b),
        None => store.get(FileKind::Owner, &Id::default()).await?,
    };
    let owner: crate::format::provenance::OwnerRecord = serde_json::from_slice(&owner_bytes)
        .map_err(|e| Error::integrity("owner", format!("not an owner record: {e}")))?;
    let record: PolicyRecord = serde_json::from_slice(&bytes)
        .map_err(|e| Error::integrity("policy", format!("not a policy record: {e}")))?;
    let policy = record.verify(repo, &owner.public)?;
    let copy = owner_copy.and_then(|p| std::fs::read(policy_copy_path(p)).ok());
    not_older_than_copy(&record, copy.as_deref())?;
    Ok(Some(policy))
}
