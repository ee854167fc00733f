//! The per-pack key: HKDF(session DEK, pack id), so each pack's blobs and header have keys of
//! their own and a pack can be re-encrypted without touching any other.

use crate::crypto::envelope::{self, Binding, ObjectKind, OpenError};
use crate::crypto::{kdf, Key32};
use crate::error::Result;
use crate::id::{BlobId, Id, PackId, SessionId};

use super::BlobType;

#[derive(Clone)]
pub struct PackKey {
    repo: Id,
    session: SessionId,
    pack: PackId,
    key: Key32,
}

impl std::fmt::Debug for PackKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackKey")
            .field("pack", &self.pack)
            .field("session", &self.session)
            .field("key", &self.key)
            .finish()
    }
}

impl PackKey {
    pub fn new(repo: &Id, session: &SessionId, dek: &Key32, pack: PackId) -> PackKey {
        let key = kdf::derive_key(repo.as_bytes(), dek, &[kdf::label::PACK, pack.as_bytes()]);
        PackKey {
            repo: *repo,
            session: *session,
            pack,
            key,
        }
    }

    pub fn pack_id(&self) -> PackId {
        self.pack
    }

    pub fn session_id(&self) -> SessionId {
        self.session
    }

    fn binding<'a>(&'a self, kind: ObjectKind, object: &'a Id) -> Binding<'a> {
        Binding {
            repo: &self.repo,
            kind,
            container: &self.pack,
            object,
            key_id: &self.session,
        }
    }

    pub fn seal_blob(&self, t: BlobType, chunk: &BlobId, plaintext: &[u8]) -> Result<Vec<u8>> {
        envelope::seal_blob(&self.key, &self.binding(t.object_kind(), chunk), plaintext)
    }

    /// [`Self::seal_blob`] appending to `out`, of the plaintext `write` appends there (see
    /// [`envelope::seal_blob_with`]).
    pub fn seal_blob_with<T>(
        &self,
        t: BlobType,
        chunk: &BlobId,
        out: &mut Vec<u8>,
        write: impl FnOnce(&mut Vec<u8>) -> T,
    ) -> Result<T> {
        envelope::seal_blob_with(&self.key, &self.binding(t.object_kind(), chunk), out, write)
    }

    pub fn open_blob(
        &self,
        t: BlobType,
        chunk: &BlobId,
        sealed: &[u8],
    ) -> Result<Vec<u8>, OpenError> {
        envelope::open_blob(&self.key, &self.binding(t.object_kind(), chunk), sealed)
    }

    /// [`Self::open_blob`] decrypting in place (see [`envelope::open_blob_in_place`]).
    pub fn open_blob_in_place<'a>(
        &self,
        t: BlobType,
        chunk: &BlobId,
        sealed: &'a mut [u8],
    ) -> Result<&'a [u8], OpenError> {
        envelope::open_blob_in_place(&self.key, &self.binding(t.object_kind(), chunk), sealed)
    }

    pub fn seal_header(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
        envelope::seal_object(
            &self.key,
            &self.binding(ObjectKind::PackHeader, &self.pack),
            plaintext,
        )
    }

    pub fn open_header(&self, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        envelope::open_object(
            &self.key,
            &self.binding(ObjectKind::PackHeader, &self.pack),
            sealed,
        )
    }
}
