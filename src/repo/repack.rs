//! Copies blobs out of old packs into new packs sealed under a fresh session key: the one
//! mechanism behind `prune` (packs with unused space) and `rotate reencrypt` (packs under a
//! compromised key). Every blob is opened and verified (AEAD, commitment, HMAC of its
//! plaintext) before it is sealed again, so a damaged blob is never copied. Chunk ids do not
//! change; only the index moves.

use std::collections::HashSet;

use bytes::Bytes;

use super::{Repository, Session, MAX_PACK};
use crate::compress;
use crate::error::{Error, Result};
use crate::format::index::PackEntries;
use crate::id::{PackId, SessionId};
use crate::pack::{BlobEntry, PackBuilder};
use crate::store::{object_name, FileKind};

pub struct Repacker<'a> {
    repo: &'a Repository,
    session: Session,
    builder: Option<PackBuilder>,
    written: Vec<PackEntries>,
    /// The sessions blobs were copied from.
    sources: HashSet<SessionId>,
    blobs: usize,
    bytes_written: u64,
}

impl<'a> Repacker<'a> {
    /// Starts a session (its wrapped key is stored first, as for a backup).
    pub fn new(repo: &'a Repository) -> Result<Repacker<'a>> {
        Ok(Repacker {
            repo,
            session: Session::start(repo)?,
            builder: None,
            written: Vec::new(),
            sources: HashSet::new(),
            blobs: 0,
            bytes_written: 0,
        })
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Copies `entries` of `pack` (sealed by `session`) into new packs.
    pub fn copy(
        &mut self,
        pack: &PackId,
        session: &SessionId,
        entries: &[BlobEntry],
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.sources.insert(*session);
        let name = object_name(FileKind::Pack, pack);
        let size = self.repo.store().size(FileKind::Pack, pack)?;
        if size > MAX_PACK {
            return Err(Error::integrity(
                &name,
                format!("implausible pack size {size}"),
            ));
        }
        let bytes = self.repo.store().get(FileKind::Pack, pack)?;
        let key = self.repo.pack_key(session, pack)?;
        for e in entries {
            let end = e.offset as usize + e.length as usize;
            let sealed = bytes.get(e.offset as usize..end).ok_or_else(|| {
                Error::integrity(
                    &name,
                    format!("blob {} lies beyond the pack's end", e.id.short()),
                )
            })?;
            let body = key
                .open_blob(e.blob_type, &e.id, sealed)
                .map_err(|err| Error::integrity(&name, format!("blob {}: {err}", e.id.short())))?;
            let plain = compress::decompress(e.compression, body.clone(), e.raw_length as usize)
                .map_err(|err| Error::integrity(&name, format!("blob {}: {err}", e.id.short())))?;
            if plain.len() != e.raw_length as usize || self.repo.chunk_id(&plain) != *e.id {
                return Err(Error::integrity(
                    &name,
                    format!("blob {}: plaintext does not match its id", e.id.short()),
                ));
            }
            if self.builder.is_none() {
                self.builder = Some(PackBuilder::new(self.session.new_pack_key()?));
            }
            let b = self.builder.as_mut().expect("just set");
            let resealed = b.key().seal_blob(e.blob_type, &e.id, &body)?;
            b.add(*e, resealed);
            self.blobs += 1;
            if b.size() >= self.repo.config().body.pack_size as usize {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if let Some(b) = self.builder.take().filter(|b| !b.is_empty()) {
            let p = b.finish()?;
            self.bytes_written += p.bytes.len() as u64;
            self.repo
                .store()
                .put(FileKind::Pack, &p.id, Bytes::from(p.bytes))?;
            self.written.push(PackEntries {
                pack: p.id,
                session: p.session,
                blobs: p.entries,
            });
        }
        Ok(())
    }

    /// Stores the last pack; returns the session, the new packs' index entries and the bytes
    /// written.
    pub fn finish(mut self) -> Result<(Session, Vec<PackEntries>, u64)> {
        self.flush()?;
        // Snapshots whose blobs moved need the new session too (docs/FORMAT.md §19.1).
        if !self.written.is_empty() {
            if let Err(e) = self.repo.extend_reach(&self.sources, self.session.id) {
                tracing::warn!("could not add the new session to snapshots' reach ({e}): run `custody repair reach`");
            }
        }
        Ok((self.session, self.written, self.bytes_written))
    }
}
