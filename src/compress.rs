//! zstd compression of chunk plaintext; stored raw when compression does not shrink it.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None = 0,
    Zstd = 1,
}

impl Compression {
    pub fn from_u8(v: u8) -> Option<Compression> {
        match v {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// Compresses `data` at `level` (0 disables); returns the raw bytes when zstd does not help.
pub fn compress(level: i32, data: &[u8]) -> (Compression, Vec<u8>) {
    if level == 0 || data.len() < 64 {
        return (Compression::None, data.to_vec());
    }
    match zstd::bulk::compress(data, level) {
        Ok(c) if c.len() < data.len() => (Compression::Zstd, c),
        _ => (Compression::None, data.to_vec()),
    }
}

/// Reverses [`compress`]; `raw_len` is the exact expected size (from the pack header).
pub fn decompress(c: Compression, data: Vec<u8>, raw_len: usize) -> Result<Vec<u8>> {
    match c {
        Compression::None => Ok(data),
        Compression::Zstd => {
            let out = zstd::bulk::decompress(&data, raw_len)
                .map_err(|e| Error::invalid(format!("zstd: {e}")))?;
            if out.len() != raw_len {
                return Err(Error::invalid("decompressed length mismatch"));
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_shrinks_random_stays_raw() {
        let text = b"custody keeps ciphertext only. ".repeat(1000);
        let (c, z) = compress(3, &text);
        assert_eq!(c, Compression::Zstd);
        assert!(z.len() < text.len() / 10);
        assert_eq!(decompress(c, z, text.len()).unwrap(), text);

        let mut rnd = vec![0u8; 10_000];
        crate::crypto::random::fill(&mut rnd).unwrap();
        let (c, r) = compress(3, &rnd);
        assert_eq!(c, Compression::None);
        assert_eq!(r, rnd);
        assert_eq!(compress(0, &text).0, Compression::None);
    }

    #[test]
    fn fail_wrong_length() {
        let text = b"abc".repeat(1000);
        let (c, z) = compress(3, &text);
        assert!(decompress(c, z, 10).is_err());
    }
}
