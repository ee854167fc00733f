//! Keyed content-defined chunking: FastCDC (Xia et al., 2016) with normalized chunking and a
//! gear table derived from the repository secret, so that chunk boundaries (and with them chunk
//! sizes) differ per repository and reveal nothing a custodian could match against known files.

use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::crypto::{kdf, Key32};

/// Chunk size bounds, stored in the repository config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub min_size: u32,
    /// Target average; a power of two.
    pub avg_size: u32,
    pub max_size: u32,
}

impl ChunkerParams {
    /// 256 KiB average, 64 KiB minimum, 1 MiB maximum: chosen by measurement
    /// (docs/FORMAT.md, "Measurement of the average chunk size").
    pub const DEFAULT: ChunkerParams = ChunkerParams {
        min_size: 64 * 1024,
        avg_size: 256 * 1024,
        max_size: 1024 * 1024,
    };

    pub fn validate(&self) -> Result<(), String> {
        if !self.avg_size.is_power_of_two() || self.avg_size < 256 {
            return Err(format!(
                "average chunk size {} is not a power of two >= 256",
                self.avg_size
            ));
        }
        if !(64 <= self.min_size
            && self.min_size <= self.avg_size
            && self.avg_size <= self.max_size)
            || self.max_size > 64 * 1024 * 1024
        {
            return Err(format!("chunk size bounds out of order: {self:?}"));
        }
        Ok(())
    }
}

/// A chunker for one repository: the keyed gear table and the masks.
#[derive(Clone)]
pub struct Chunker {
    gear: Box<[u64; 256]>,
    params: ChunkerParams,
    mask_small: u64,
    mask_large: u64,
}

impl std::fmt::Debug for Chunker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The gear table is derived from the repository secret: never print it.
        f.debug_struct("Chunker")
            .field("params", &self.params)
            .finish()
    }
}

/// A mask of `bits` ones in the top bits of the hash: top bits of a gear hash depend on the
/// last 64 input bytes, low bits only on the last few, so low-bit masks cut on tiny patterns.
fn top_mask(bits: u32) -> u64 {
    if bits == 0 {
        0
    } else {
        u64::MAX << (64 - bits)
    }
}

impl Chunker {
    /// The gear table is HKDF(gear key) -> 256 x u64, little endian.
    pub fn new(gear_key: &Key32, params: ChunkerParams) -> Chunker {
        let mut bytes = zeroize::Zeroizing::new([0u8; 256 * 8]);
        kdf::hkdf(b"", gear_key.expose(), &[kdf::label::GEAR], &mut bytes[..]);
        let mut gear = Box::new([0u64; 256]);
        for (i, g) in gear.iter_mut().enumerate() {
            *g = u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        }
        let bits = params.avg_size.trailing_zeros();
        Chunker {
            gear,
            params,
            // Normalized chunking, level 2: harder to cut before the average, easier after.
            mask_small: top_mask(bits + 2),
            mask_large: top_mask(bits.saturating_sub(2)),
        }
    }

    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Length of the next chunk at the start of `data`. `data` holds at least `max_size` bytes
    /// unless it is the end of the stream.
    pub fn next_boundary(&self, data: &[u8]) -> usize {
        let min = self.params.min_size as usize;
        let avg = self.params.avg_size as usize;
        let max = self.params.max_size as usize;
        let n = data.len().min(max);
        if n <= min {
            return n;
        }
        let normal = avg.min(n);
        let mut hash: u64 = 0;
        let mut i = min;
        while i < normal {
            hash = (hash << 1).wrapping_add(self.gear[data[i] as usize]);
            if hash & self.mask_small == 0 {
                return i + 1;
            }
            i += 1;
        }
        while i < n {
            hash = (hash << 1).wrapping_add(self.gear[data[i] as usize]);
            if hash & self.mask_large == 0 {
                return i + 1;
            }
            i += 1;
        }
        n
    }

    /// Splits a whole buffer (tests, small inputs) into chunk lengths.
    pub fn split(&self, mut data: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let n = self.next_boundary(data);
            out.push(n);
            data = &data[n..];
        }
        out
    }

    /// Streams chunks out of a reader with memory bounded by [`STREAM_BUFFER`] times the
    /// maximum chunk size.
    pub fn stream<R: Read>(&self, reader: R) -> ChunkStream<'_, R> {
        self.stream_with_buffer(reader, Vec::new())
    }

    /// Like [`Chunker::stream`], reusing a buffer from [`ChunkStream::into_buffer`] (saves
    /// allocating and zeroing it for every small file).
    pub fn stream_with_buffer<R: Read>(&self, reader: R, buf: Vec<u8>) -> ChunkStream<'_, R> {
        ChunkStream {
            chunker: self,
            reader,
            buf,
            start: 0,
            end: 0,
            eof: false,
        }
    }
}

/// A stream's buffer, in max chunk sizes.
const STREAM_BUFFER: usize = 4;

/// Iterator over the chunks of a reader; yields owned chunks (they go to other threads).
pub struct ChunkStream<'a, R> {
    chunker: &'a Chunker,
    reader: R,
    /// Allocated once ([`STREAM_BUFFER`] x max chunk size); `start..end` holds unread input.
    /// Each refill first moves the unread part (under one max chunk) to the front: with two
    /// max chunks that moved about 0.8 bytes per byte read, with four about 0.3.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl<R: Read> ChunkStream<'_, R> {
    /// Gives the buffer back for the next stream.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }

    /// Ensures at least `max_size` unread bytes are buffered, unless the input ends first.
    fn fill(&mut self) -> std::io::Result<()> {
        let max = self.chunker.params.max_size as usize;
        if self.eof || self.end - self.start >= max {
            return Ok(());
        }
        if self.buf.len() != STREAM_BUFFER * max {
            self.buf = vec![0u8; STREAM_BUFFER * max];
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        while self.end < max {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(k) => self.end += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl<R: Read> Iterator for ChunkStream<'_, R> {
    type Item = std::io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = self.fill() {
            return Some(Err(e));
        }
        let rest = &self.buf[self.start..self.end];
        if rest.is_empty() {
            return None;
        }
        let n = self.chunker.next_boundary(rest);
        let chunk = rest[..n].to_vec();
        self.start += n;
        Some(Ok(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small() -> ChunkerParams {
        ChunkerParams {
            min_size: 256,
            avg_size: 1024,
            max_size: 4096,
        }
    }

    fn key(b: u8) -> Key32 {
        Key32::from_slice(&[b; 32]).unwrap()
    }

    /// Deterministic pseudo-random bytes (xorshift) for reproducible vectors.
    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn committed_vectors() {
        // Changing these is a format change: chunk boundaries decide dedup across versions.
        let c = Chunker::new(&key(1), small());
        let lens = c.split(&data(20_000, 42));
        assert_eq!(lens.iter().sum::<usize>(), 20_000);
        assert_eq!(lens, VECTOR_KEY1);
        let c2 = Chunker::new(&key(2), small());
        assert_ne!(
            c2.split(&data(20_000, 42)),
            VECTOR_KEY1,
            "gear must be keyed"
        );
    }

    const VECTOR_KEY1: [usize; 19] = [
        1191, 1252, 829, 1337, 706, 1038, 1168, 850, 420, 816, 1294, 1371, 1051, 1500, 1344, 1191,
        1236, 1171, 235,
    ];

    #[test]
    fn committed_vector_default_params() {
        let c = Chunker::new(&key(7), ChunkerParams::DEFAULT);
        let lens = c.split(&data(8 << 20, 1));
        assert_eq!(lens, VECTOR_DEFAULT);
    }

    const VECTOR_DEFAULT: [usize; 30] = [
        275371, 272091, 326607, 267663, 316319, 185864, 244364, 429880, 248680, 303888, 288821,
        334817, 262683, 115650, 277900, 272833, 322917, 554736, 161474, 269284, 264167, 368975,
        267982, 166004, 265801, 256812, 472439, 194479, 132547, 267560,
    ];

    #[test]
    fn bounds_hold() {
        let c = Chunker::new(&key(3), small());
        let lens = c.split(&data(200_000, 7));
        for (i, &l) in lens.iter().enumerate() {
            assert!(l <= 4096);
            if i + 1 < lens.len() {
                assert!(l >= 256);
            }
        }
        // All-zero input cuts at the maximum.
        let z = c.split(&[0u8; 10_000]);
        assert_eq!(z, vec![4096, 4096, 1808]);
    }

    #[test]
    fn stream_matches_split() {
        let c = Chunker::new(&key(4), small());
        let d = data(50_000, 9);
        let streamed: Vec<usize> = c
            .stream(std::io::Cursor::new(&d))
            .map(|r| r.unwrap().len())
            .collect();
        assert_eq!(streamed, c.split(&d));
    }

    proptest! {
        #[test]
        fn concatenation_gives_input_back(seed in any::<u64>(), len in 0usize..40_000) {
            let c = Chunker::new(&key(5), small());
            let d = data(len, seed);
            let chunks: Vec<Vec<u8>> = c.stream(std::io::Cursor::new(&d)).map(|r| r.unwrap()).collect();
            prop_assert_eq!(chunks.concat(), d.clone());
            prop_assert_eq!(c.split(&d), c.split(&d));
        }

        #[test]
        fn edit_changes_only_nearby_chunks(seed in any::<u64>(), at in 0usize..60_000) {
            let c = Chunker::new(&key(6), small());
            let d = data(120_000, seed);
            let mut e = d.clone();
            e[at] ^= 0xff;
            let cuts = |v: &[u8]| -> std::collections::BTreeSet<usize> {
                let mut s = std::collections::BTreeSet::new();
                let mut pos = 0;
                for l in c.split(v) { pos += l; s.insert(pos); }
                s
            };
            let a = cuts(&d);
            let b = cuts(&e);
            // Boundaries well before the edit are unchanged, and boundaries re-synchronise after
            // it. Re-synchronising is likely, not certain (a cut skipped by the minimum size can
            // shift the next few), so the property asks for most boundaries past the edit's
            // neighbourhood to be shared, not all ("all but one" failed on a random seed, saved in
            // proptest-regressions/chunker.txt).
            for p in a.iter().filter(|&&p| p + 64 < at) {
                prop_assert!(b.contains(p));
            }
            let after: Vec<_> = a.iter().filter(|&&p| p > at + 3 * 4096).collect();
            let shared = after.iter().filter(|p| b.contains(p)).count();
            prop_assert!(after.len() < 4 || shared * 4 >= after.len() * 3, "{shared} of {}", after.len());
        }
    }
}
