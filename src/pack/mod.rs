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

use crate::compress::Compression;
use crate::crypto::random;
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId, SessionId};

/// Bytes after the sealed header: its length.
pub const TRAILER_LEN: usize = 4;

/// Collects sealed blobs for one pack and writes them out in random order.
pub struct PackBuilder {
    key: PackKey,
    /// The sealed blobs in the order they came, each sealed where it lies: the body is
    /// written here once (by the compressor), and copied once more at finish, in shuffled
    /// order, into the pack.
    sealed: Vec<u8>,
    /// Each blob's entry, its offset being where it lies in `sealed` until finish.
    blobs: Vec<BlobEntry>,
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
        PackBuilder::with_buffer(key, Vec::new())
    }

    /// A builder that seals into `buffer` (emptied first), one that [`Self::finish_into`]
    /// gave back: a packer keeps its megabytes from pack to pack instead of faulting them in
    /// afresh.
    pub fn with_buffer(key: PackKey, mut buffer: Vec<u8>) -> PackBuilder {
        buffer.clear();
        PackBuilder {
            key,
            sealed: buffer,
            blobs: Vec::new(),
        }
    }

    pub fn key(&self) -> &PackKey {
        &self.key
    }

    /// Bytes of sealed blobs so far.
    pub fn size(&self) -> usize {
        self.sealed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Seals a blob of `raw_length` plaintext bytes whose stored body (compressed or raw, as
    /// `write` returns) is what `write` appends to the buffer it is given; returns the sealed
    /// blob. `write` must only append.
    pub fn add(
        &mut self,
        blob_type: BlobType,
        id: BlobId,
        raw_length: u32,
        write: impl FnOnce(&mut Vec<u8>) -> Compression,
    ) -> Result<&[u8]> {
        let start = self.sealed.len();
        let offset =
            u32::try_from(start).map_err(|_| Error::Internal("pack larger than 4 GiB".into()))?;
        let compression = self
            .key
            .seal_blob_with(blob_type, &id, &mut self.sealed, write)?;
        let sealed = &self.sealed[start..];
        self.blobs.push(BlobEntry {
            id,
            blob_type,
            compression,
            offset,
            length: sealed.len() as u32,
            raw_length,
        });
        Ok(sealed)
    }

    /// Shuffles blob order, writes blobs, seals the header and appends the trailer.
    pub fn finish(self) -> Result<FinishedPack> {
        self.finish_into(Vec::new()).map(|(pack, _)| pack)
    }

    /// [`PackBuilder::finish`] into `bytes` (emptied first); gives back the builder's own
    /// buffer for [`Self::with_buffer`]. A backup passes the buffer of a pack it uploaded
    /// already, so that each new pack's megabytes are not faulted in afresh (that was 85% of a
    /// first backup's page faults).
    pub fn finish_into(mut self, mut bytes: Vec<u8>) -> Result<(FinishedPack, Vec<u8>)> {
        random::shuffle(&mut self.blobs)?;
        let header_estimate = encode_header(&[]).len() + self.blobs.len() * header::ENTRY_LEN;
        bytes.clear();
        bytes.reserve(self.sealed.len() + header_estimate + 256);
        for e in &mut self.blobs {
            let at = e.offset as usize;
            e.offset = u32::try_from(bytes.len())
                .map_err(|_| Error::Internal("pack larger than 4 GiB".into()))?;
            bytes.extend_from_slice(&self.sealed[at..at + e.length as usize]);
        }
        let header = self.key.seal_header(&encode_header(&self.blobs))?;
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
        let pack = FinishedPack {
            id: self.key.pack_id(),
            session: self.key.session_id(),
            bytes,
            entries: self.blobs,
        };
        Ok((pack, self.sealed))
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
        let mut z = crate::compress::Compressor::new(3);
        for i in 0..20u8 {
            let id = crate::id::BlobId(crate::Id([i; 32]));
            // Even blobs compress, odd ones are stored raw.
            let mut plain = vec![i; 100 + i as usize];
            if i % 2 == 1 {
                crate::crypto::random::fill(&mut plain).unwrap();
            }
            let sealed = b
                .add(BlobType::Data, id, plain.len() as u32, |out| {
                    z.compress_into(&plain, out)
                })
                .unwrap();
            assert!(key.open_blob(BlobType::Data, &id, sealed).is_ok());
            chunks.push((id, plain));
        }
        let (p, buffer) = b.finish_into(Vec::new()).unwrap();
        assert!(buffer.capacity() > 0, "the builder's buffer comes back");
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
            let i = e.id.as_bytes()[0];
            let want = if i % 2 == 0 {
                Compression::Zstd
            } else {
                Compression::None
            };
            assert_eq!(e.compression, want);
            let s = &p.bytes[e.offset as usize..(e.offset + e.length) as usize];
            let body = key.open_blob(BlobType::Data, &e.id, s).unwrap();
            let plain =
                crate::compress::decompress(e.compression, body, e.raw_length as usize).unwrap();
            assert_eq!(plain, chunks[i as usize].1);
        }
    }

    #[test]
    fn fail_truncated_trailer() {
        assert!(header_range(10, &[0xff, 0xff, 0, 0]).is_err());
        assert!(header_range(10, &[1, 2]).is_err());
    }
}
