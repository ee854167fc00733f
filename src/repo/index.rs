//! The in-memory index: chunk id -> pack, session and position. Built from index segments.
//!
//! Kept compact because it grows with the repository: per blob, the 32-byte id and a 20-byte
//! slot (pack number, offset, lengths, type, compression) in one list, where its place is its
//! number in a [`BlobSet`], and a 4-byte place in a hash table over the ids: about 60 bytes,
//! and up to twice that while the list has room to grow, so a million chunks take 60-120 MB
//! (the list grows in place: large allocations are remapped, not copied). (A map from id to slot and number took 57 bytes a table
//! slot, 120 MB for a million blobs, and held both tables while it grew: a 231 MB peak.)
//!
//! A blob listed in several packs keeps its first location as the one readers use and the
//! others as alternates: readers fall back to them when a copy does not verify, so a forged
//! or corrupt listing that sorts first cannot hide a genuine copy. Duplicates are rare
//! (concurrent backups, and repacked or re-encrypted packs until prune deletes the old ones),
//! so the alternates stay small.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

use super::provenance::Signer;
use super::{marks, Repository};
use crate::compress::Compression;
use crate::error::{Error, Result};
use crate::format::index::IndexSegment;
use crate::id::{BlobId, PackId, SegmentId, SessionId};
use crate::pack::{BlobEntry, BlobType};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: PackId,
    pub session: SessionId,
    pub entry: BlobEntry,
}

/// Where one blob lies: a [`BlobEntry`] without its id, and the pack by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    pack: u32,
    offset: u32,
    length: u32,
    raw_length: u32,
    blob_type: BlobType,
    compression: Compression,
}

impl Slot {
    fn entry(&self, id: BlobId) -> BlobEntry {
        BlobEntry {
            id,
            blob_type: self.blob_type,
            compression: self.compression,
            offset: self.offset,
            length: self.length,
            raw_length: self.raw_length,
        }
    }
}

#[derive(Debug, Default)]
pub struct Index {
    /// Each listed (pack, session): a pack listed under two sessions (one listing forged or
    /// corrupt) is two entries, so a reader can fall back from the wrong one.
    packs: Vec<(PackId, SessionId)>,
    pack_pos: HashMap<(PackId, SessionId), u32>,
    listed: std::collections::HashSet<PackId>,
    /// Each blob's first listing, numbered by its place (see [`Index::number`]).
    blobs: Vec<(BlobId, Slot)>,
    /// Places in `blobs`, found by id under a keyed hash (ids in a writer's segment are the
    /// writer's choice, so they must not pick the table's buckets).
    by_id: hashbrown::HashTable<u32>,
    hasher: std::hash::RandomState,
    alternates: HashMap<BlobId, Vec<Slot>>,
}

/// A set of blobs of one [`Index`], one bit each (a backup records every stored blob it
/// relies on: a million of them take 125 KB here, about 100 MB as a hash set of ids).
#[derive(Debug)]
pub struct BlobSet {
    bits: Vec<std::sync::atomic::AtomicU64>,
}

impl BlobSet {
    /// Adds blob number `n` (see [`Index::number`]); safe from several threads at once.
    pub fn insert(&self, n: u32) {
        debug_assert!(
            (n as usize) < self.bits.len() * 64,
            "blob number past the set"
        );
        if let Some(w) = self.bits.get(n as usize / 64) {
            w.fetch_or(1 << (n % 64), std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn contains(&self, n: u32) -> bool {
        self.bits
            .get(n as usize / 64)
            .is_some_and(|w| w.load(std::sync::atomic::Ordering::Relaxed) & (1 << (n % 64)) != 0)
    }

    pub fn is_empty(&self) -> bool {
        self.bits
            .iter()
            .all(|w| w.load(std::sync::atomic::Ordering::Relaxed) == 0)
    }
}

impl Index {
    pub fn add_segment(&mut self, seg: &IndexSegment) {
        self.add_segment_where(seg, |_| true)
    }

    /// Adds the packs of a segment for which `keep(pack)` holds. The first location added
    /// for a blob wins.
    pub fn add_segment_where(&mut self, seg: &IndexSegment, keep: impl Fn(&PackId) -> bool) {
        for p in seg.packs.iter().filter(|p| keep(&p.pack)) {
            self.listed.insert(p.pack);
            let pos = *self.pack_pos.entry((p.pack, p.session)).or_insert_with(|| {
                self.packs.push((p.pack, p.session));
                (self.packs.len() - 1) as u32
            });
            for b in &p.blobs {
                let slot = Slot {
                    pack: pos,
                    offset: b.offset,
                    length: b.length,
                    raw_length: b.raw_length,
                    blob_type: b.blob_type,
                    compression: b.compression,
                };
                let Index {
                    blobs,
                    by_id,
                    hasher,
                    ..
                } = self;
                let found = by_id.entry(
                    hasher.hash_one(b.id),
                    |&n| blobs[n as usize].0 == b.id,
                    |&n| hasher.hash_one(blobs[n as usize].0),
                );
                match found {
                    hashbrown::hash_table::Entry::Vacant(v) => {
                        v.insert(blobs.len() as u32);
                        blobs.push((b.id, slot));
                    }
                    // Every distinct listing is kept, even one of the same pack at another
                    // offset: which one is true is only known when it is read.
                    hashbrown::hash_table::Entry::Occupied(o)
                        if blobs[*o.get() as usize].1 != slot =>
                    {
                        let alts = self.alternates.entry(b.id).or_default();
                        if !alts.contains(&slot) {
                            alts.push(slot);
                        }
                    }
                    hashbrown::hash_table::Entry::Occupied(_) => {}
                }
            }
        }
    }

    /// An index of `segments` in which a blob's location in a pack outside `condemned` wins
    /// over one in a condemned pack (kept only as a fallback): what readers, `check` and
    /// `prune` use while garbage marks are pending.
    pub fn live_first<'a>(
        segments: impl IntoIterator<Item = &'a IndexSegment> + Clone,
        condemned: &std::collections::HashSet<PackId>,
    ) -> Index {
        let mut index = Index::default();
        for seg in segments.clone() {
            index.add_segment_where(seg, |p| !condemned.contains(p));
        }
        for seg in segments {
            index.add_segment_where(seg, |p| condemned.contains(p));
        }
        index
    }

    /// The place of blob `id` in `blobs`: its number.
    fn find(&self, id: &BlobId) -> Option<u32> {
        self.by_id
            .find(self.hasher.hash_one(id), |&n| {
                self.blobs[n as usize].0 == *id
            })
            .copied()
    }

    /// The first listing of blob `id`.
    fn slot(&self, id: &BlobId) -> Option<&Slot> {
        self.find(id).map(|n| &self.blobs[n as usize].1)
    }

    /// Where a blob lies (a chunk or tree id converts into a [`BlobId`]).
    pub fn get(&self, id: impl Into<BlobId>) -> Option<BlobLocation> {
        let id = id.into();
        self.slot(&id).map(|s| {
            let (pack, session) = self.packs[s.pack as usize];
            BlobLocation {
                pack,
                session,
                entry: s.entry(id),
            }
        })
    }

    /// Every listed location of a blob: the one [`Index::get`] gives first, then the others.
    pub fn locations(&self, id: impl Into<BlobId>) -> Vec<BlobLocation> {
        let id = id.into();
        let at = |s: &Slot| {
            let (pack, session) = self.packs[s.pack as usize];
            BlobLocation {
                pack,
                session,
                entry: s.entry(id),
            }
        };
        let first = self.slot(&id).map(at);
        let rest = self.alternates.get(&id).into_iter().flatten().map(at);
        first.into_iter().chain(rest).collect()
    }

    /// True unless the blob's listings disagree on its plaintext length (one is forged or
    /// corrupt). Cheap for the usual blob listed once.
    pub fn lengths_agree(&self, id: impl Into<BlobId>) -> bool {
        let id = id.into();
        match (self.slot(&id), self.alternates.get(&id)) {
            (Some(first), Some(alts)) => alts.iter().all(|a| a.raw_length == first.raw_length),
            _ => true,
        }
    }

    pub fn contains(&self, id: impl Into<BlobId>) -> bool {
        self.find(&id.into()).is_some()
    }

    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }

    /// The blob's number in this index, for a [`BlobSet`].
    pub fn number(&self, id: impl Into<BlobId>) -> Option<u32> {
        self.find(&id.into())
    }

    /// An empty set of this index's blobs.
    pub fn blob_set(&self) -> BlobSet {
        BlobSet {
            bits: (0..self.blobs.len().div_ceil(64))
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
        }
    }

    /// The ids of the blobs in `set`.
    pub fn members<'a>(&'a self, set: &'a BlobSet) -> impl Iterator<Item = &'a BlobId> + 'a {
        self.blobs
            .iter()
            .enumerate()
            .filter(|(n, _)| set.contains(*n as u32))
            .map(|(_, (id, _))| id)
    }

    /// Packs with their sessions, in the order first seen (a pack listed under two sessions
    /// appears twice).
    pub fn packs(&self) -> &[(PackId, SessionId)] {
        &self.packs
    }

    pub fn has_pack(&self, id: &PackId) -> bool {
        self.listed.contains(id)
    }

    /// Every blob entry of each pack, as the index records it.
    pub fn pack_entries(&self) -> HashMap<PackId, Vec<BlobEntry>> {
        let mut out: HashMap<PackId, Vec<BlobEntry>> = HashMap::new();
        for (id, s) in &self.blobs {
            out.entry(self.packs[s.pack as usize].0)
                .or_default()
                .push(s.entry(*id));
        }
        out
    }

    pub fn entries(&self) -> impl Iterator<Item = BlobLocation> + '_ {
        self.blobs.iter().map(|(id, s)| {
            let (pack, session) = self.packs[s.pack as usize];
            BlobLocation {
                pack,
                session,
                entry: s.entry(*id),
            }
        })
    }
}

/// Every accepted segment, and the ids of those the owner signed.
pub type VouchedSegments = (Vec<(SegmentId, IndexSegment)>, HashSet<SegmentId>);

impl Repository {
    /// A segment that opened, `None` for one that does not or whose signer this client does
    /// not accept (warned about; a writer passes over other writers' segments quietly, since
    /// it trusts only its own and the owner's), or the error that must stop the caller (an
    /// unreachable store or key service).
    fn readable(&self, seg: Result<IndexSegment>) -> Result<Option<IndexSegment>> {
        match seg {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.is_untrusted() && self.roster().is_none() => {
                tracing::debug!("index segment not trusted by this writer: {e}");
                Ok(None)
            }
            Err(e) if e.is_integrity() => {
                tracing::warn!("index segment left out: {e}");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The packs in the store, with their sizes (one listing of `data/`).
    pub fn stored_packs(&self) -> Result<HashMap<PackId, u64>> {
        Ok(self
            .store()
            .list(crate::store::FileKind::Pack)?
            .into_iter()
            .map(|(id, size)| (PackId(id), size))
            .collect())
    }

    /// The ids of the index segments in the store (one listing of `index/`).
    pub fn segment_ids(&self) -> Result<Vec<SegmentId>> {
        self.object_ids::<IndexSegment>()
    }

    /// Seals and stores an index segment under a fresh id.
    pub fn save_index_segment(&self, seg: &IndexSegment) -> Result<SegmentId> {
        let id = SegmentId::random()?;
        self.save_object(&id, seg)?;
        Ok(id)
    }

    /// Loads every index segment for reading: a blob's location in a pack that no garbage
    /// mark condemns wins over one in a condemned pack, which is kept only as a fallback.
    /// Segments are read one at a time, so memory is the index itself. A segment that does
    /// not open (damaged or forged) is left out with a warning: only the blobs it alone lists
    /// become unreadable, and `check` names it. (Prune and re-encryption read the segments
    /// through [`Repository::load_segments`] and stop instead.)
    pub fn load_index(&self) -> Result<Index> {
        // The marks and the segments' listing are read at once.
        let (marks, listed) = super::in_flight::join(|| self.load_marks(), || self.segment_ids());
        // Marks only order the locations here, so an unreadable one is no reason to stop a read.
        let condemned = marks.map(|m| marks::Marks::of(&m)).unwrap_or_default();
        let mut index = Index::default();
        let mut fallback = Vec::new();
        let listed = listed?;
        self.forget_unlisted_segments(&listed);
        for (_, seg) in self.read_segments(&listed) {
            let Some(mut seg) = self.readable(seg.map(|(seg, _)| seg))? else {
                continue;
            };
            index.add_segment_where(&seg, |p| !condemned.packs.contains(p));
            if !condemned.packs.is_empty() {
                seg.packs.retain(|p| condemned.packs.contains(&p.pack));
                fallback.push(seg);
            }
        }
        for seg in &fallback {
            index.add_segment(seg);
        }
        Ok(index)
    }

    /// The index a backup deduplicates against: packs condemned by a garbage mark or recorded
    /// as damaged are left out, so a new snapshot never comes to depend on them. Returns the
    /// marks it saw and the segments it was built from. A segment that does not open is left
    /// out (its chunks are stored again: never skipped).
    pub fn load_index_for_backup(&self) -> Result<(Index, marks::Marks, HashSet<SegmentId>)> {
        // Marks, damage records (packs found missing or damaged: their chunks are stored
        // again, docs/FORMAT.md §14d) and the segments' listing are read at once.
        let (marks, (damaged, listed)) = super::in_flight::join(
            || self.load_marks_for_backup(),
            || super::in_flight::join(|| self.damaged_packs(), || self.segment_ids()),
        );
        let marks = marks::Marks::of(&marks?);
        let damaged = damaged?;
        let mut index = Index::default();
        let me = self.signer();
        let ids = listed?;
        self.forget_unlisted_segments(&ids);
        let mut built_from = HashSet::new();
        for (id, seg) in self.read_segments(&ids) {
            // Only what the owner vouches for (prune verifies writers' listings before it
            // lists them again under the owner's signature) and this client's own: another
            // writer's claim that a chunk is stored never makes a backup skip storing it.
            let seg = match seg {
                Ok((seg, None)) => Ok(seg),
                Ok((seg, Some(Signer::Owner(_)))) => Ok(seg),
                Ok((seg, Some(Signer::Writer(w)))) if Some(w) == me => Ok(seg),
                Ok(_) => continue,
                Err(e) => Err(e),
            };
            if let Some(seg) = self.readable(seg)? {
                index.add_segment_where(&seg, |p| !marks.packs.contains(p) && !damaged.contains(p));
                built_from.insert(id);
            }
        }
        Ok((index, marks, built_from))
    }

    /// The listed segments `ids`, in order, a window at a time (see [`super::in_flight`]); one
    /// removed since the listing (a prune superseded it) is left out.
    fn read_segments<'a>(
        &'a self,
        ids: &'a [SegmentId],
    ) -> impl Iterator<Item = (SegmentId, Result<(IndexSegment, Option<Signer>)>)> + 'a {
        ids.chunks(super::in_flight::WINDOW)
            .flat_map(move |window| {
                let read = super::in_flight::read_all(window, |id| self.load_segment(id));
                window.iter().copied().zip(read)
            })
            .filter(|(_, seg)| !matches!(seg, Err(Error::NotFound(_))))
    }

    /// One segment: the local cache's copy when it opens, verifies and was signed by the
    /// owner or this client (segments never change once stored), else the store's, which is
    /// then cached. A copy another writer signed is never taken from the cache: segment ids
    /// are random, so whoever holds a writer keyring and could write to the cache folder
    /// could put a listing of its own under a genuine segment's name.
    fn load_segment(&self, id: &SegmentId) -> Result<(IndexSegment, Option<Signer>)> {
        let cache = self.segments.as_ref();
        if let Some(bytes) = cache.and_then(|c| c.get(&id.id())) {
            let me = self.signer();
            match self.open_object_signed::<IndexSegment>(id, &bytes) {
                Ok((seg, signer))
                    if match signer {
                        None | Some(Signer::Owner(_)) => true,
                        Some(Signer::Writer(w)) => Some(w) == me,
                    } =>
                {
                    return Ok((seg, signer))
                }
                // Damaged, sealed under keys since retired, or another writer's: the store's
                // copy decides.
                _ => cache.into_iter().for_each(|c| c.remove(&id.id())),
            }
        }
        let bytes = self.store().get(crate::store::FileKind::Index, id)?;
        let seg = self.open_object_signed::<IndexSegment>(id, &bytes)?;
        if let Some(c) = cache {
            c.put(&id.id(), &bytes);
        }
        Ok(seg)
    }

    /// Drops cached segments the store no longer lists (a prune replaced them).
    fn forget_unlisted_segments(&self, listed: &[SegmentId]) {
        if let Some(c) = &self.segments {
            c.keep_only(&listed.iter().map(|s| s.id()).collect());
        }
    }

    /// Every index segment whose signer is accepted, in listing order; the first that does
    /// not open stops the load. Segments signed by someone this client does not accept (a
    /// revoked writer's later ones, or a forgery) are left out with a warning: they are claims
    /// nobody vouches for, and `check` names them.
    pub fn load_segments(&self) -> Result<Vec<(SegmentId, IndexSegment)>> {
        Ok(self.load_segments_vouched()?.0)
    }

    /// [`Repository::load_segments`], and the segments the owner signed (every one in a
    /// legacy repository, where nothing is signed): what prune has already verified or
    /// written itself. Writers' segments are claims until prune verifies them.
    pub fn load_segments_vouched(&self) -> Result<VouchedSegments> {
        let mut out = Vec::new();
        let mut vouched = HashSet::new();
        for (id, _) in self.store().list(crate::store::FileKind::Index)? {
            let id = SegmentId(id);
            match self.load_object_signed::<IndexSegment>(&id) {
                Ok((seg, signer)) => {
                    if matches!(signer, None | Some(Signer::Owner(_))) {
                        vouched.insert(id);
                    }
                    out.push((id, seg));
                }
                Err(Error::NotFound(_)) => {}
                Err(e) if e.is_untrusted() => tracing::warn!("index segment left out: {e}"),
                Err(e) => return Err(e),
            }
        }
        Ok((out, vouched))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::PackEntries;
    use crate::id::Id;

    fn blob(n: u16, offset: u32) -> BlobEntry {
        let mut id = [0u8; 32];
        id[..2].copy_from_slice(&n.to_le_bytes());
        BlobEntry {
            id: BlobId(Id(id)),
            blob_type: BlobType::Data,
            compression: Compression::None,
            offset,
            length: 100,
            raw_length: 100 + n as u32 % 2,
        }
    }

    fn segment(pack: u8, blobs: Vec<BlobEntry>) -> IndexSegment {
        IndexSegment {
            packs: vec![PackEntries {
                pack: PackId(Id([pack; 32])),
                session: SessionId(Id([0; 32])),
                blobs,
            }],
            provisional: false,
        }
    }

    #[test]
    fn blobs_are_numbered_densely_and_keep_every_distinct_listing() {
        let mut index = Index::default();
        // 3,000 blobs in pack 1; blob 7 again in pack 2 (an alternate), blob 8 again at the
        // same place in pack 1 (no alternate), and blob 9 at another place with another
        // length (listings that disagree).
        index.add_segment(&segment(
            1,
            (0..3000).map(|n| blob(n, n as u32 * 100)).collect(),
        ));
        let mut other = blob(9, 0);
        other.raw_length += 1;
        index.add_segment(&segment(2, vec![blob(7, 500), other]));
        index.add_segment(&segment(1, vec![blob(8, 800)]));
        assert_eq!(index.blob_count(), 3000);
        for n in [0u16, 7, 8, 2999] {
            let id = blob(n, 0).id;
            assert_eq!(index.number(id), Some(n as u32));
            let at = index.get(id).unwrap();
            assert_eq!(
                (at.pack, at.entry.offset),
                (PackId(Id([1; 32])), n as u32 * 100)
            );
        }
        assert!(!index.contains(blob(3000, 0).id));
        assert_eq!(index.number(blob(3000, 0).id), None);
        let seven = index.locations(blob(7, 0).id);
        assert_eq!(seven.len(), 2);
        assert_eq!(seven[1].pack, PackId(Id([2; 32])));
        assert_eq!(index.locations(blob(8, 0).id).len(), 1);
        assert!(index.lengths_agree(blob(7, 0).id));
        assert!(!index.lengths_agree(blob(9, 0).id));
        // A set of blobs by number gives back their ids.
        let set = index.blob_set();
        set.insert(index.number(blob(5, 0).id).unwrap());
        set.insert(index.number(blob(2000, 0).id).unwrap());
        let members: Vec<BlobId> = index.members(&set).copied().collect();
        assert_eq!(members, vec![blob(5, 0).id, blob(2000, 0).id]);
        assert_eq!(index.entries().count(), 3000);
        assert_eq!(index.pack_entries()[&PackId(Id([1; 32]))].len(), 3000);
    }
}
