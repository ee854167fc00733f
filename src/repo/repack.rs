//! Copies blobs out of old packs into new packs sealed under a fresh session key: the one
//! mechanism behind `prune` (packs with unused space) and `rotate reencrypt` (packs under a
//! compromised key). Every blob is opened and verified (AEAD, commitment, HMAC of its
//! plaintext) before it is sealed again, so a damaged blob is never copied. Chunk ids do not
//! change; only the index moves.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;

use super::{Repository, Session, MAX_PACK};
use crate::compress;
use crate::error::{Error, Result};
use crate::format::index::PackEntries;
use crate::id::{PackId, SessionId};
use crate::pack::{BlobEntry, PackBuilder};
use crate::store::{object_name, FileKind};

/// Where copied blobs go: one new session, or one per source session (prune), so that the
/// snapshots that needed a source session need only its own successor (docs/FORMAT.md §19.1)
/// rather than one session holding every host's repacked blobs.
struct Destination {
    session: Session,
    builder: Option<PackBuilder>,
    /// The sessions whose blobs went here.
    sources: HashSet<SessionId>,
}

pub struct Repacker<'a> {
    repo: &'a Repository,
    per_source: bool,
    /// The first destination (the only one without `per_source`).
    dests: Vec<Destination>,
    /// Index into `dests` by source session (with `per_source`).
    by_source: HashMap<SessionId, usize>,
    written: Vec<PackEntries>,
    blobs: usize,
    bytes_written: u64,
}

impl<'a> Repacker<'a> {
    /// Starts a session (its wrapped key is stored first, as for a backup): every copied blob
    /// goes under it (`rotate reencrypt`).
    pub fn new(repo: &'a Repository) -> Result<Repacker<'a>> {
        Ok(Repacker {
            repo,
            per_source: false,
            dests: vec![Destination {
                session: Session::start(repo)?,
                builder: None,
                sources: HashSet::new(),
            }],
            by_source: HashMap::new(),
            written: Vec::new(),
            blobs: 0,
            bytes_written: 0,
        })
    }

    /// A repacker that gives each source session a new session of its own, started when its
    /// first blob is copied (prune).
    pub fn per_source(repo: &'a Repository) -> Repacker<'a> {
        Repacker {
            repo,
            per_source: true,
            dests: Vec::new(),
            by_source: HashMap::new(),
            written: Vec::new(),
            blobs: 0,
            bytes_written: 0,
        }
    }

    /// The destination session (of a repacker made by [`Repacker::new`]).
    pub fn session(&self) -> Option<&Session> {
        self.dests.first().map(|d| &d.session)
    }

    fn destination(&mut self, source: &SessionId) -> Result<usize> {
        if !self.per_source {
            self.dests[0].sources.insert(*source);
            return Ok(0);
        }
        if let Some(&i) = self.by_source.get(source) {
            return Ok(i);
        }
        self.dests.push(Destination {
            session: Session::start(self.repo)?,
            builder: None,
            sources: HashSet::from([*source]),
        });
        let i = self.dests.len() - 1;
        self.by_source.insert(*source, i);
        Ok(i)
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
        let d = self.destination(session)?;
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
            let dest = &mut self.dests[d];
            if dest.builder.is_none() {
                dest.builder = Some(PackBuilder::new(dest.session.new_pack_key()?));
            }
            let b = dest.builder.as_mut().expect("just set");
            b.add(e.blob_type, e.id, e.raw_length, |out| {
                out.extend_from_slice(&body);
                e.compression
            })?;
            self.blobs += 1;
            if b.size() >= self.repo.config().body.pack_size as usize {
                self.flush(d)?;
            }
        }
        Ok(())
    }

    fn flush(&mut self, d: usize) -> Result<()> {
        if let Some(b) = self.dests[d].builder.take().filter(|b| !b.is_empty()) {
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

    /// Stores the last packs; returns the destination sessions, the new packs' index entries
    /// and the bytes written. Every snapshot's reach that names a source session gets its
    /// destination added (docs/FORMAT.md §19.1).
    pub fn finish(mut self) -> Result<(Vec<Session>, Vec<PackEntries>, u64)> {
        for d in 0..self.dests.len() {
            self.flush(d)?;
        }
        if !self.written.is_empty() {
            let moved: HashMap<SessionId, SessionId> = self
                .dests
                .iter()
                .flat_map(|d| d.sources.iter().map(|s| (*s, d.session.id)))
                .collect();
            if let Err(e) = self.repo.extend_reach(&moved) {
                tracing::warn!("could not add the new sessions to snapshots' reach ({e}): run `custody repair reach`");
            }
        }
        let sessions = self.dests.into_iter().map(|d| d.session).collect();
        Ok((sessions, self.written, self.bytes_written))
    }
}
