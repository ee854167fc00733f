//! The pack header codec (plaintext side; it is sealed by [`super::PackKey`]).
//!
//! ```text
//! magic "CPKH" | version u8 = 1 | reserved [0; 3] | count u32 LE | count x entry | zero padding
//! entry (48 bytes): id [32] | type u8 | compression u8 | reserved u16 | offset u32 | length u32 | raw_length u32
//! ```
//! The padding rounds the plaintext to a multiple of 4096 bytes so the header's size tells the
//! custodian little about how many blobs a pack holds.

use crate::compress::Compression;
use crate::crypto::envelope::ObjectKind;
use crate::id::{BlobId, Id};

pub const HEADER_MAGIC: [u8; 4] = *b"CPKH";
const HEADER_VERSION: u8 = 1;
pub const ENTRY_LEN: usize = 48;
const PAD: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
#[serde(rename_all = "lowercase")]
pub enum BlobType {
    Data = 0,
    Tree = 1,
}

impl BlobType {
    pub fn from_u8(v: u8) -> Option<BlobType> {
        match v {
            0 => Some(BlobType::Data),
            1 => Some(BlobType::Tree),
            _ => None,
        }
    }
    pub fn object_kind(self) -> ObjectKind {
        match self {
            BlobType::Data => ObjectKind::DataBlob,
            BlobType::Tree => ObjectKind::TreeBlob,
        }
    }
}

/// One blob in a pack (and, with the pack id, one index entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobEntry {
    pub id: BlobId,
    pub blob_type: BlobType,
    pub compression: Compression,
    /// Offset of the sealed blob in the pack.
    pub offset: u32,
    /// Sealed length (plaintext after compression plus envelope overhead).
    pub length: u32,
    /// Length of the chunk's plaintext.
    pub raw_length: u32,
}

pub(crate) fn put_entry(out: &mut Vec<u8>, e: &BlobEntry) {
    out.extend_from_slice(e.id.as_bytes());
    out.extend_from_slice(&[e.blob_type as u8, e.compression as u8, 0, 0]);
    out.extend_from_slice(&e.offset.to_le_bytes());
    out.extend_from_slice(&e.length.to_le_bytes());
    out.extend_from_slice(&e.raw_length.to_le_bytes());
}

pub(crate) fn get_entry(b: &[u8]) -> Result<BlobEntry, String> {
    if b.len() < ENTRY_LEN {
        return Err("entry truncated".into());
    }
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    Ok(BlobEntry {
        id: BlobId(Id::from_slice(&b[..32]).expect("32 bytes")),
        blob_type: BlobType::from_u8(b[32])
            .ok_or_else(|| format!("unknown blob type {}", b[32]))?,
        compression: Compression::from_u8(b[33])
            .ok_or_else(|| format!("unknown compression {}", b[33]))?,
        offset: u32_at(36),
        length: u32_at(40),
        raw_length: u32_at(44),
    })
}

pub fn encode_header(entries: &[BlobEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + entries.len() * ENTRY_LEN + PAD);
    out.extend_from_slice(&HEADER_MAGIC);
    out.extend_from_slice(&[HEADER_VERSION, 0, 0, 0]);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        put_entry(&mut out, e);
    }
    let padded = out.len().div_ceil(PAD) * PAD;
    out.resize(padded, 0);
    out
}

pub fn decode_header(b: &[u8]) -> Result<Vec<BlobEntry>, String> {
    if b.len() < 12 || b[..4] != HEADER_MAGIC {
        return Err("not a pack header".into());
    }
    if b[4] != HEADER_VERSION {
        return Err(format!("pack header version {} refused", b[4]));
    }
    let count = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")) as usize;
    let body = &b[12..];
    if body.len() / ENTRY_LEN < count {
        return Err("pack header truncated".into());
    }
    (0..count)
        .map(|i| get_entry(&body[i * ENTRY_LEN..]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_padding() {
        let e = BlobEntry {
            id: BlobId(Id([9; 32])),
            blob_type: BlobType::Tree,
            compression: Compression::Zstd,
            offset: 7,
            length: 100,
            raw_length: 300,
        };
        let h = encode_header(&[e, e]);
        assert_eq!(h.len() % PAD, 0);
        assert_eq!(decode_header(&h).unwrap(), vec![e, e]);
    }

    #[test]
    fn fail_bad_headers() {
        let h = encode_header(&[]);
        let mut bad = h.clone();
        bad[0] = b'X';
        assert!(decode_header(&bad).is_err());
        let mut v = h.clone();
        v[4] = 0;
        assert!(decode_header(&v).is_err());
        let mut count = h.clone();
        count[8] = 200;
        assert!(decode_header(&count).is_err());
    }
}
