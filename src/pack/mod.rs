//! Packs: many sealed blobs in shuffled order, then the sealed pack header, then its length.
//!
//! ```text
//! blob* | sealed header (envelope, kind PackHeader) | header length: u32 LE
//! ```
//! Blobs carry no plaintext marker, so the custodian sees one opaque pack; the header (sealed
//! under the pack key) lists every blob, so an index can be rebuilt from packs alone.

mod header;
mod key;

pub use header::{decode_header, encode_header, BlobEntry, BlobType, HEADER_MAGIC};
pub(crate) use header::{get_entry as header_get_entry, put_entry as header_put_entry};
pub use key::PackKey;

use crate::crypto::random;
use crate::error::{Error, Result};
use crate::id::{PackId, SessionId};

/// Bytes after the sealed header: its length.
pub const TRAILER_LEN: usize = 4;

/// Collects sealed blobs for one pack and writes them out in random order.
pub struct PackBuilder {
    key: PackKey,
    blobs: Vec<(BlobEntry, Vec<u8>)>,
    size: usize,
}

/// A pack ready to store, with the index entries it provides.
pub struct FinishedPack {
    pub id: PackId,
    pub session: SessionId,
    pub bytes: Vec<u8>,
    pub entries: Vec<BlobEntry>,
}

impl PackBuilder {
    pub fn new(key: PackKey) -> PackBuilder {
        PackBuilder {
            key,
            blobs: Vec::new(),
            size: 0,
        }
    }

    pub fn key(&self) -> &PackKey {
        &self.key
    }

    /// Bytes of sealed blobs so far.
    pub fn size(&self) -> usize {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Adds a blob sealed with this builder's key (offset is assigned at finish).
    pub fn add(&mut self, mut entry: BlobEntry, sealed: Vec<u8>) {
        entry.length = sealed.len() as u32;
        self.size += sealed.len();
        self.blobs.push((entry, sealed));
    }

    /// Shuffles blob order, writes blobs, seals the header and appends the trailer.
    pub fn finish(self) -> Result<FinishedPack> {
        self.finish_into(Vec::new())
    }

    /// [`PackBuilder::finish`] into `bytes` (emptied first): a backup passes the buffer of a
    /// pack it uploaded already, so that each new pack's megabytes are not faulted in afresh
    /// (that was 85% of a first backup's page faults).
    pub fn finish_into(mut self, mut bytes: Vec<u8>) -> Result<FinishedPack> {
        random::shuffle(&mut self.blobs)?;
        let header_estimate = encode_header(&[]).len() + self.blobs.len() * header::ENTRY_LEN;
        bytes.clear();
        bytes.reserve(self.size + header_estimate + 256);
        let mut entries = Vec::with_capacity(self.blobs.len());
        for (mut e, b) in self.blobs {
            e.offset = u32::try_from(bytes.len())
                .map_err(|_| Error::Internal("pack larger than 4 GiB".into()))?;
            bytes.extend_from_slice(&b);
            entries.push(e);
        }
        let sealed = self.key.seal_header(&encode_header(&entries))?;
        bytes.extend_from_slice(&sealed);
        bytes.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        Ok(FinishedPack {
            id: self.key.pack_id(),
            session: self.key.session_id(),
            bytes,
            entries,
        })
    }
}

/// Where the sealed header sits in a pack of `pack_len` bytes, given the trailer's value.
pub fn header_range(pack_len: u64, trailer: &[u8]) -> Result<std::ops::Range<u64>, String> {
    let t: [u8; 4] = trailer
        .try_into()
        .map_err(|_| "pack trailer missing".to_string())?;
    let hlen = u32::from_le_bytes(t) as u64;
    if pack_len < TRAILER_LEN as u64 + hlen {
        return Err(format!(
            "pack header length {hlen} exceeds pack size {pack_len} (truncated pack)"
        ));
    }
    let end = pack_len - TRAILER_LEN as u64;
    Ok(end - hlen..end)
}

/// The session that sealed a pack, read from the plaintext envelope header of its pack header.
pub fn header_session(sealed_header: &[u8]) -> Result<SessionId, String> {
    crate::crypto::envelope::parse_header(sealed_header)
        .map(|h| SessionId(h.key_id))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::Compression;
    use crate::crypto::Key32;

    #[test]
    fn build_and_read_back() {
        let repo = crate::Id::random().unwrap();
        let session = SessionId::random().unwrap();
        let dek = Key32::generate().unwrap();
        let key = PackKey::new(&repo, &session, &dek, PackId::random().unwrap());
        let mut b = PackBuilder::new(key.clone());
        let mut chunks = Vec::new();
        for i in 0..20u8 {
            let id = crate::id::BlobId(crate::Id([i; 32]));
            let plain = vec![i; 100 + i as usize];
            let sealed = key.seal_blob(BlobType::Data, &id, &plain).unwrap();
            b.add(
                BlobEntry {
                    id,
                    blob_type: BlobType::Data,
                    compression: Compression::None,
                    offset: 0,
                    length: 0,
                    raw_length: plain.len() as u32,
                },
                sealed,
            );
            chunks.push((id, plain));
        }
        let p = b.finish().unwrap();
        let len = p.bytes.len() as u64;
        let r = header_range(len, &p.bytes[p.bytes.len() - 4..]).unwrap();
        let sealed_header = &p.bytes[r.start as usize..r.end as usize];
        assert_eq!(header_session(sealed_header).unwrap(), session);
        let entries = decode_header(&key.open_header(sealed_header).unwrap()).unwrap();
        assert_eq!(entries, p.entries);
        let order: Vec<u8> = entries.iter().map(|e| e.id.as_bytes()[0]).collect();
        assert_ne!(
            order,
            (0..20).collect::<Vec<u8>>(),
            "blob order must be shuffled"
        );
        for e in &entries {
            let s = &p.bytes[e.offset as usize..(e.offset + e.length) as usize];
            let plain = key.open_blob(BlobType::Data, &e.id, s).unwrap();
            assert_eq!(plain, chunks[e.id.as_bytes()[0] as usize].1);
        }
    }

    #[test]
    fn fail_truncated_trailer() {
        assert!(header_range(10, &[0xff, 0xff, 0, 0]).is_err());
        assert!(header_range(10, &[1, 2]).is_err());
    }
}
