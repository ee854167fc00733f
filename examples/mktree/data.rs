//! The kinds of data in the benchmark tree, shared by `examples/mktree` (which writes the
//! tree) and `benches/stages` (which measures each stage on the same kind of data: zstd's
//! speed depends on the text it is given).

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

pub fn vocabulary(rng: &mut Rng) -> Vec<String> {
    (0..8000)
        .map(|_| {
            let len = 2 + rng.below(9) as usize;
            (0..len)
                .map(|_| (b'a' + rng.below(26) as u8) as char)
                .collect()
        })
        .collect()
}

/// Prose-like text: words drawn with a skewed distribution, lines of varying length.
pub fn text(rng: &mut Rng, vocab: &[String], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 100);
    while out.len() < len {
        let words = 4 + rng.below(14);
        for i in 0..words {
            // Square of a uniform value: common words are much more frequent.
            let u = rng.below(1 << 16);
            let idx = (((u * u) >> 16) as usize * vocab.len()) >> 16;
            let w = &vocab[idx.min(vocab.len() - 1)];
            if i > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(w.as_bytes());
        }
        if rng.below(5) == 0 {
            out.extend_from_slice(format!(" {}", rng.below(100_000)).as_bytes());
        }
        out.extend_from_slice(b".\n");
    }
    out.truncate(len);
    out
}

pub fn random(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    rng.fill(&mut b);
    b
}
