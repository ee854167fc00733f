//! Builds a reproducible mixed tree for benchmarks and measurements:
//! compressible text, incompressible bytes, edited copies of earlier files, and thousands of
//! small files. Same seed and size, same bytes.
//!
//! Usage: cargo run --release --example mktree -- DIR [SIZE_MIB=1024] [SEED=1]

use std::io::Write;
use std::path::Path;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

fn vocabulary(rng: &mut Rng) -> Vec<String> {
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
fn text(rng: &mut Rng, vocab: &[String], len: usize) -> Vec<u8> {
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

fn random(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    rng.fill(&mut b);
    b
}

/// A copy with a few small edits: overwrites, an insertion and a deletion.
fn edit(rng: &mut Rng, data: &[u8]) -> Vec<u8> {
    let mut d = data.to_vec();
    if d.is_empty() {
        return d;
    }
    for _ in 0..3 {
        let at = rng.below(d.len() as u64) as usize;
        d[at] ^= 0x5a;
    }
    let at = rng.below(d.len() as u64) as usize;
    let n = 1 + rng.below(200) as usize;
    let ins = random(rng, n);
    d.splice(at..at, ins);
    let at = rng.below(d.len() as u64) as usize;
    let end = (at + 1 + rng.below(100) as usize).min(d.len());
    d.drain(at..end);
    d
}

fn put(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::File::create(path)
        .unwrap()
        .write_all(data)
        .unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = Path::new(args.get(1).expect("usage: mktree DIR [SIZE_MIB] [SEED]"));
    let total: usize = args.get(2).map_or(1024, |s| s.parse().unwrap()) << 20;
    let seed: u64 = args.get(3).map_or(1, |s| s.parse().unwrap());
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let vocab = vocabulary(&mut rng);

    // 35% text, 30% random, 20% edited copies, 15% small files.
    let mut originals: Vec<(String, Vec<u8>)> = Vec::new();
    let (mut n_text, mut n_rand) = (0usize, 0usize);
    let mut i = 0;
    while n_text < total * 35 / 100 {
        let len = 8_192 + rng.below(12 << 20) as usize;
        let d = text(&mut rng, &vocab, len);
        n_text += d.len();
        let name = format!("docs/{:02}/text-{i:04}.txt", i % 16);
        put(&dir.join(&name), &d);
        if originals.len() < 400 {
            originals.push((name, d));
        }
        i += 1;
    }
    while n_rand < total * 30 / 100 {
        let len = (256 << 10) + rng.below(48 << 20) as usize;
        let d = random(&mut rng, len);
        n_rand += d.len();
        let name = format!("media/blob-{i:04}.bin");
        put(&dir.join(&name), &d);
        if rng.below(3) == 0 {
            originals.push((name, d));
        }
        i += 1;
    }
    let mut n_copy = 0;
    let mut k = 0;
    while n_copy < total * 20 / 100 && !originals.is_empty() {
        let (name, d) = &originals[rng.below(originals.len() as u64) as usize];
        let e = edit(&mut rng, d);
        n_copy += e.len();
        put(
            &dir.join(format!("copies/{k:04}-{}", name.replace('/', "_"))),
            &e,
        );
        k += 1;
    }
    let mut n_small = 0;
    let mut j = 0;
    while n_small < total * 15 / 100 {
        let len = 200 + rng.below(48 << 10) as usize;
        let d = if j % 3 == 0 {
            random(&mut rng, len)
        } else {
            text(&mut rng, &vocab, len)
        };
        n_small += d.len();
        put(&dir.join(format!("small/{:03}/{j:06}.dat", j % 200)), &d);
        j += 1;
    }
    eprintln!(
        "mktree: {} MiB text, {} MiB random, {} MiB edited copies, {} MiB in {j} small files",
        n_text >> 20,
        n_rand >> 20,
        n_copy >> 20,
        n_small >> 20
    );
}
