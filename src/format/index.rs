//! Index segments: which pack (and session) holds each blob. Binary, sealed under the index key.
//!
//! ```text
//! magic "CIDX" | version u8 = 1 | reserved [0; 3] | pack count u32 LE
//! per pack: pack id [32] | session id [32] | blob count u32 LE | blob count x entry (48 bytes,
//!           the same layout as pack header entries)
//! zero padding to a multiple of 4096 bytes (so a segment's size hides its exact blob count)
//! ```

use super::DecodeError;
use crate::id::{Id, PackId, SessionId};
use crate::pack::BlobEntry;

const MAGIC: [u8; 4] = *b"CIDX";
const VERSION: u8 = 1;
const PAD: usize = 4096;
/// Byte 5 (the first reserved byte), bit 0: a provisional segment.
const FLAG_PROVISIONAL: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackEntries {
    pub pack: PackId,
    pub session: SessionId,
    pub blobs: Vec<BlobEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexSegment {
    pub packs: Vec<PackEntries>,
    /// Written during a backup that has not finished (a checkpoint, so that a rerun after an
    /// interruption does not upload these packs again): until a snapshot uses their blobs,
    /// prune treats these packs as unindexed, condemning them only a grace period after it
    /// first noted them (docs/FORMAT.md §6, §14b).
    pub provisional: bool,
}

impl IndexSegment {
    pub fn encode(&self) -> Vec<u8> {
        let n: usize = self.packs.iter().map(|p| 68 + p.blobs.len() * 48).sum();
        let mut out = Vec::with_capacity(12 + n);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&[VERSION, u8::from(self.provisional), 0, 0]);
        out.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for p in &self.packs {
            out.extend_from_slice(p.pack.as_bytes());
            out.extend_from_slice(p.session.as_bytes());
            out.extend_from_slice(&(p.blobs.len() as u32).to_le_bytes());
            for b in &p.blobs {
                crate::pack::header_put_entry(&mut out, b);
            }
        }
        out.resize(out.len().div_ceil(PAD) * PAD, 0);
        out
    }

    pub fn decode(b: &[u8]) -> Result<IndexSegment, DecodeError> {
        if b.len() < 12 || b[..4] != MAGIC {
            return Err("not an index segment".into());
        }
        if b[4] != VERSION {
            return Err(DecodeError::Version {
                what: "index segment",
                found: b[4].into(),
                expected: VERSION.into(),
            });
        }
        let mut pos = 8;
        let u32_at = |pos: usize| -> Result<u32, String> {
            b.get(pos..pos + 4)
                .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
                .ok_or_else(|| "index segment truncated".to_string())
        };
        let count = u32_at(pos)? as usize;
        pos += 4;
        let mut packs = Vec::with_capacity(count.min(1 << 16));
        for _ in 0..count {
            let ids = b.get(pos..pos + 64).ok_or("index segment truncated")?;
            let pack = PackId(Id::from_slice(&ids[..32]).expect("32 bytes"));
            let session = SessionId(Id::from_slice(&ids[32..]).expect("32 bytes"));
            // Ids are random, never zero: zeros here are the padding, read because the count
            // claims more packs than the segment holds.
            if *pack == Id::default() || *session == Id::default() {
                return Err("index segment counts more packs than it holds".into());
            }
            let n = u32_at(pos + 64)? as usize;
            pos += 68;
            let body = b.get(pos..pos + n * 48).ok_or("index segment truncated")?;
            let blobs = (0..n)
                .map(|i| crate::pack::header_get_entry(&body[i * 48..]))
                .collect::<Result<Vec<_>, _>>()?;
            pos += n * 48;
            packs.push(PackEntries {
                pack,
                session,
                blobs,
            });
        }
        if b[pos..].iter().any(|&x| x != 0) {
            return Err("non-zero bytes after the index segment's entries".into());
        }
        Ok(IndexSegment {
            packs,
            provisional: b[5] & FLAG_PROVISIONAL != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::Compression;
    use crate::pack::BlobType;

    #[test]
    fn round_trip_and_fail_truncation() {
        let e = BlobEntry {
            id: crate::id::BlobId(Id([3; 32])),
            blob_type: BlobType::Data,
            compression: Compression::Zstd,
            offset: 1,
            length: 2,
            raw_length: 3,
        };
        let seg = IndexSegment {
            packs: vec![PackEntries {
                pack: PackId(Id([1; 32])),
                session: SessionId(Id([2; 32])),
                blobs: vec![e, e],
            }],
            provisional: false,
        };
        let b = seg.encode();
        assert_eq!(IndexSegment::decode(&b).unwrap(), seg);
        assert_eq!(b.len() % PAD, 0);
        assert!(IndexSegment::decode(&b[..100]).is_err());
        let mut extra = b.clone();
        extra.push(1);
        assert!(IndexSegment::decode(&extra).is_err());
        // A count one higher reads the zero padding as a pack: refused, not an empty pack.
        let mut more = b.clone();
        more[8] += 1;
        let e = IndexSegment::decode(&more).unwrap_err();
        assert!(e.to_string().contains("more packs than it holds"), "{e}");
    }
}
