//! The in-memory index: chunk id -> pack, session and position. Built from index segments.

use std::collections::HashMap;

use crate::format::index::IndexSegment;
use crate::id::Id;
use crate::pack::BlobEntry;

#[derive(Debug, Clone, Copy)]
pub struct BlobLocation {
    pub pack: Id,
    pub session: Id,
    pub entry: BlobEntry,
}

#[derive(Debug, Default)]
pub struct Index {
    packs: Vec<(Id, Id)>,
    pack_pos: HashMap<Id, u32>,
    blobs: HashMap<Id, (u32, BlobEntry)>,
}

impl Index {
    pub fn add_segment(&mut self, seg: &IndexSegment) {
        self.add_segment_where(seg, |_| true)
    }

    /// Adds the packs of a segment for which `keep(pack)` holds.
    pub fn add_segment_where(&mut self, seg: &IndexSegment, keep: impl Fn(&Id) -> bool) {
        for p in seg.packs.iter().filter(|p| keep(&p.pack)) {
            let pos = *self.pack_pos.entry(p.pack).or_insert_with(|| {
                self.packs.push((p.pack, p.session));
                (self.packs.len() - 1) as u32
            });
            for b in &p.blobs {
                self.blobs.entry(b.id).or_insert((pos, *b));
            }
        }
    }

    pub fn get(&self, id: &Id) -> Option<BlobLocation> {
        self.blobs.get(id).map(|(p, e)| {
            let (pack, session) = self.packs[*p as usize];
            BlobLocation {
                pack,
                session,
                entry: *e,
            }
        })
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.blobs.contains_key(id)
    }

    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }

    /// Packs with their sessions, in the order first seen.
    pub fn packs(&self) -> &[(Id, Id)] {
        &self.packs
    }

    pub fn has_pack(&self, id: &Id) -> bool {
        self.pack_pos.contains_key(id)
    }

    /// Every blob entry of one pack, as the index records it.
    pub fn pack_entries(&self) -> HashMap<Id, Vec<BlobEntry>> {
        let mut out: HashMap<Id, Vec<BlobEntry>> = HashMap::new();
        for (pos, e) in self.blobs.values() {
            out.entry(self.packs[*pos as usize].0).or_default().push(*e);
        }
        out
    }

    pub fn entries(&self) -> impl Iterator<Item = BlobLocation> + '_ {
        self.blobs.keys().filter_map(|id| self.get(id))
    }
}
