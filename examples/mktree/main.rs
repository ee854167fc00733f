//! Builds a reproducible mixed tree for benchmarks and measurements:
//! compressible text, incompressible bytes, edited copies of earlier files, and thousands of
//! small files. Same seed and size, same bytes.
//!
//! Usage: cargo run --release --example mktree -- DIR [SIZE_MIB=1024] [SEED=1]

use std::io::Write;
use std::path::Path;

mod data;

use data::{random, text, vocabulary, Rng};

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
