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

/// A per-thread compressor: reuses one zstd context instead of creating one per chunk.
pub struct Compressor {
    level: i32,
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl Compressor {
    /// `level` 0 disables compression.
    pub fn new(level: i32) -> Compressor {
        let zstd = if level == 0 {
            None
        } else {
            zstd::bulk::Compressor::new(level).ok()
        };
        Compressor { level, zstd }
    }

    /// Compresses `data`; returns `None` when zstd is off or does not shrink it (store raw).
    pub fn compress(&mut self, data: &[u8]) -> Option<Vec<u8>> {
        let z = self.zstd.as_mut()?;
        if data.len() < 64 {
            return None;
        }
        match z.compress(data) {
            Ok(c) if c.len() < data.len() => Some(c),
            _ => None,
        }
    }

    pub fn level(&self) -> i32 {
        self.level
    }
}

/// Compresses `data` at `level` (0 disables); returns the raw bytes when zstd does not help.
pub fn compress(level: i32, data: &[u8]) -> (Compression, Vec<u8>) {
    match Compressor::new(level).compress(data) {
        Some(c) => (Compression::Zstd, c),
        None => (Compression::None, data.to_vec()),
    }
}

/// Reverses [`compress`]; `raw_len` is the exact expected size (from the pack header).
pub fn decompress(c: Compression, data: Vec<u8>, raw_len: usize) -> Result<Vec<u8>> {
    match c {
        Compression::None => Ok(data),
        Compression::Zstd => {
            thread_local! {
                // One context per thread: creating one per chunk costs more than small chunks.
                static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
                    const { std::cell::RefCell::new(None) };
            }
            let out = DCTX
                .with(|d| {
                    let mut d = d.borrow_mut();
                    if d.is_none() {
                        *d = Some(zstd::bulk::Decompressor::new()?);
                    }
                    d.as_mut().expect("just set").decompress(&data, raw_len)
                })
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
