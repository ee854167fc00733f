//! Reading blobs: one ranged read (or a verified hit in the local tree cache), then AEAD and
//! commitment under the pack's key, decompression to the exact length, and HMAC(plaintext) ==
//! id. Nothing unverified is returned.

use crate::compress;
use crate::error::{Error, Result};
use crate::format::tree::Tree;
use crate::id::{BlobId, PackId, SessionId, TreeId};
use crate::pack::BlobType;
use crate::store::{object_name, FileKind};

use super::{BlobLocation, Index, Repository, SealedCache, MAX_BLOB};

impl Repository {
    /// Uses a local cache of sealed tree blobs (see [`SealedCache`]); `None` disables it.
    pub fn with_tree_cache(mut self, cache: Option<SealedCache>) -> Repository {
        self.trees = cache;
        self
    }

    pub fn tree_cache(&self) -> Option<&SealedCache> {
        self.trees.as_ref()
    }

    /// Uses a local cache of sealed index segments for the index that backup, restore and
    /// the other readers load (see [`SealedCache`]); `None` disables it.
    pub fn with_segment_cache(mut self, cache: Option<SealedCache>) -> Repository {
        self.segments = cache;
        self
    }

    /// Reads, opens, decompresses and verifies one blob: AEAD and commitment under its pack's
    /// key, then HMAC(plaintext) == id. Nothing unverified is returned. When the index lists
    /// the blob in several packs and one copy does not verify, the next is tried.
    pub fn load_blob(&self, index: &Index, id: BlobId, t: BlobType) -> Result<Vec<u8>> {
        self.load_blob_except(index, id, t, None)
    }

    /// [`Repository::load_blob`] from any listed copy but `skip` (a listing that just failed:
    /// the exact one, since a forged listing may name a genuine copy's pack with a wrong
    /// length, and the genuine listing must still be tried). An unreachable key service
    /// stops at once; integrity errors and refused keys move on to the next copy, and the
    /// first error is returned when none verifies.
    pub fn load_blob_except(
        &self,
        index: &Index,
        id: BlobId,
        t: BlobType,
        skip: Option<BlobLocation>,
    ) -> Result<Vec<u8>> {
        let mut first_err = None;
        for loc in index.locations(id) {
            if Some(loc) == skip {
                continue;
            }
            match self.load_blob_at(&loc, t) {
                Ok(plain) => return Ok(plain),
                // A refused session key (a forged listing naming a session whose record the
                // service does not hold) is one bad copy; an unreachable service stops.
                Err(e) if e.is_integrity() || matches!(e, Error::KeyDenied { .. }) => {
                    tracing::warn!(blob = %id.short(), pack = %loc.pack.short(), error = %e, "a listed copy does not verify; trying another");
                    first_err.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(first_err
            .unwrap_or_else(|| Error::integrity(format!("{t:?} blob {id}"), "not in the index")))
    }

    fn load_blob_at(&self, loc: &BlobLocation, t: BlobType) -> Result<Vec<u8>> {
        let id = loc.entry.id;
        let cache = self.trees.as_ref().filter(|_| t == BlobType::Tree);
        if let Some(sealed) = cache.and_then(|c| c.get(&id)) {
            match self.open_blob(&loc.pack, &loc.session, &loc.entry, &sealed) {
                Ok(plain) => return Ok(plain),
                // Stale (the blob now lives in another pack) or damaged: fetch it again.
                Err(_) => cache.into_iter().for_each(|c| c.remove(&id)),
            }
        }
        if loc.entry.blob_type != t {
            return Err(Error::integrity(
                format!("blob {id}"),
                format!("indexed as {:?}, expected {t:?}", loc.entry.blob_type),
            ));
        }
        if loc.entry.length as u64 > MAX_BLOB {
            return Err(Error::integrity(
                object_name(FileKind::Pack, &loc.pack),
                format!(
                    "index gives blob {} an implausible length {}",
                    id.short(),
                    loc.entry.length
                ),
            ));
        }
        let sealed = self
            .store
            .get_range(
                FileKind::Pack,
                &loc.pack,
                loc.entry.offset as u64,
                loc.entry.length as u64,
            )
            .map_err(|e| match e {
                Error::NotFound(_) => Error::integrity(
                    object_name(FileKind::Pack, &loc.pack),
                    "indexed pack is missing from the store",
                ),
                e => e,
            })?;
        let plain = self.open_blob(&loc.pack, &loc.session, &loc.entry, &sealed)?;
        if let Some(c) = cache {
            c.put(&id, &sealed);
        }
        Ok(plain)
    }

    /// Opens a sealed blob given its index entry (shared by restore and check).
    pub fn open_blob(
        &self,
        pack: &PackId,
        session: &SessionId,
        entry: &crate::pack::BlobEntry,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        let pname = object_name(FileKind::Pack, pack);
        self.check_declared_length(&pname, entry)?;
        let key = self.pack_key(session, pack)?;
        let bad = |e: &dyn std::fmt::Display| {
            Error::integrity(&pname, format!("blob {}: {e}", entry.id.short()))
        };
        let body = key
            .open_blob(entry.blob_type, &entry.id, sealed)
            .map_err(|e| bad(&e))?;
        let plain = compress::decompress(entry.compression, body, entry.raw_length as usize)
            .map_err(|e| bad(&e))?;
        self.check_plaintext(&pname, entry, &plain)?;
        Ok(plain)
    }

    /// [`Repository::open_blob`] for a reader that owns the bytes the blob lies in (a
    /// restore owns each span it reads) and holds the pack's key (one per span, not per
    /// blob): decrypted where it lies and decompressed into `scratch`, whose capacity is
    /// reused. The plaintext is in one or the other; `sealed` is left unspecified.
    pub fn open_blob_in_place<'a>(
        &self,
        key: &crate::pack::PackKey,
        entry: &crate::pack::BlobEntry,
        sealed: &'a mut [u8],
        scratch: &'a mut Vec<u8>,
    ) -> Result<&'a [u8]> {
        let pname = object_name(FileKind::Pack, &key.pack_id());
        self.check_declared_length(&pname, entry)?;
        let bad = |e: &dyn std::fmt::Display| {
            Error::integrity(&pname, format!("blob {}: {e}", entry.id.short()))
        };
        let body = key
            .open_blob_in_place(entry.blob_type, &entry.id, sealed)
            .map_err(|e| bad(&e))?;
        let plain: &[u8] = match entry.compression {
            compress::Compression::None => body,
            compress::Compression::Zstd => {
                compress::unzstd_into(body, entry.raw_length as usize, scratch)
                    .map_err(|e| bad(&e))?;
                scratch
            }
        };
        self.check_plaintext(&pname, entry, plain)?;
        Ok(plain)
    }

    /// A listing's declared length is refused before anything is allocated for it: a forged
    /// one could otherwise make every small chunk claim gigabytes.
    fn check_declared_length(&self, pname: &str, entry: &crate::pack::BlobEntry) -> Result<()> {
        let limit = match entry.blob_type {
            BlobType::Data => u64::from(self.config.body.chunker.max_size),
            BlobType::Tree => MAX_BLOB,
        };
        if u64::from(entry.raw_length) > limit {
            return Err(Error::integrity(
                pname,
                format!(
                    "blob {} declares {} bytes, more than any {:?} blob ({limit})",
                    entry.id.short(),
                    entry.raw_length,
                    entry.blob_type
                ),
            ));
        }
        Ok(())
    }

    /// The opened plaintext has the listed length and HMAC(plaintext) is its id.
    fn check_plaintext(
        &self,
        pname: &str,
        entry: &crate::pack::BlobEntry,
        plain: &[u8],
    ) -> Result<()> {
        if plain.len() != entry.raw_length as usize {
            return Err(Error::integrity(
                pname,
                format!(
                    "blob {}: {} bytes where the index says {}",
                    entry.id.short(),
                    plain.len(),
                    entry.raw_length
                ),
            ));
        }
        if self.chunk_id(plain) != *entry.id {
            return Err(Error::integrity(
                pname,
                format!("blob {}: plaintext does not match its id", entry.id.short()),
            ));
        }
        Ok(())
    }

    /// Loads several trees at once (see [`super::in_flight`]): a walk over a remote bucket
    /// is otherwise one round trip per folder. Results come in the order of `ids`.
    pub fn load_trees(&self, index: &Index, ids: &[TreeId]) -> Vec<Result<Tree>> {
        super::in_flight::read_all(ids, |id| self.load_tree(index, id))
    }

    pub fn load_tree(&self, index: &Index, id: &TreeId) -> Result<Tree> {
        let b = self.load_blob(index, (*id).into(), BlobType::Tree)?;
        Tree::decode(&b).map_err(|e| Error::integrity(format!("tree {id}"), e))
    }
}
