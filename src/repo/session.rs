//! A writing session: one fresh data key from the key service, stored wrapped as
//! `keys/<session>` before anything sealed under it is written.

use bytes::Bytes;
use chrono::Utc;

use super::Repository;
use crate::crypto::Key32;
use crate::error::Result;
use crate::format::wrapped::{context, Purpose, WrappedKeyRecord};
use crate::format::REPO_FORMAT;
use crate::id::{Id, PackId, SessionId};
use crate::pack::PackKey;
use crate::store::FileKind;

pub struct Session {
    pub id: SessionId,
    dek: Key32,
    repo: Id,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("dek", &self.dek)
            .finish()
    }
}

impl Session {
    /// Asks the key service for a data key and stores its wrapped form. A failure here
    /// happens before any data is written, so no object ever refers to an unwrapped key.
    pub fn start(repo: &Repository) -> Result<Session> {
        let id = SessionId::random()?;
        let ctx = context(Purpose::SessionKey, &repo.id(), &id);
        let (dek, wrapped) = repo
            .key_service()
            .generate_data_key(Purpose::SessionKey, &ctx)?;
        // Nothing is sealed under a key outside the repository's key policy.
        repo.check_policy(&wrapped)?;
        let mut rec = WrappedKeyRecord {
            format: REPO_FORMAT,
            purpose: Purpose::SessionKey,
            repository: repo.id(),
            key_id: *id,
            created: Utc::now(),
            wrapped,
            signature: None,
        };
        repo.sign_key_record(&mut rec);
        let json = serde_json::to_vec_pretty(&rec).expect("record serializes");
        repo.store()
            .put_new(FileKind::Key, &id, Bytes::from(json))?;
        tracing::debug!(session = %id, "session started");
        Ok(Session {
            id,
            dek,
            repo: repo.id(),
        })
    }

    /// A session for `backup --dry-run`: a fresh key that is never wrapped or stored (nothing
    /// sealed under it is written).
    pub(crate) fn ephemeral(repo: &Repository) -> Result<Session> {
        Ok(Session {
            id: SessionId::random()?,
            dek: Key32::generate()?,
            repo: repo.id(),
        })
    }

    /// An existing session, its key unwrapped (a key holder re-signing what it sealed).
    pub(crate) fn resume(repo: &Repository, id: SessionId) -> Result<Session> {
        Ok(Session {
            id,
            dek: repo.session_key(&id)?,
            repo: repo.id(),
        })
    }

    pub fn new_pack_key(&self) -> Result<PackKey> {
        Ok(PackKey::new(
            &self.repo,
            &self.id,
            &self.dek,
            PackId::random()?,
        ))
    }

    pub fn dek(&self) -> &Key32 {
        &self.dek
    }
}
