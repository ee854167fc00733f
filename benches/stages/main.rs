//! Each pipeline stage alone, single-threaded, so the machine's stage limits are known:
//! `cargo bench --bench stages`. Inputs come from the generators of examples/mktree (prose-like
//! text and random bytes), 16 MiB each.
//!
//! `STAGES_TREE=DIR cargo bench --bench stages` instead runs the stages over one tree's own
//! files and prints the floor they set for its first backup (floor.rs); `STAGES_LEVEL` sets the
//! zstd level (3, custody's default).

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use custody::chunker::{Chunker, ChunkerParams};
use custody::compress::{self, Compression, Compressor};
use custody::crypto::kdf::HmacKey;
use custody::crypto::Key32;
use custody::pack::{decode_header, BlobType, PackBuilder, PackKey};
use custody::Id;

#[path = "../../examples/mktree/data.rs"]
mod data;
mod floor;

const LEN: usize = 16 << 20;

fn random(len: usize) -> Vec<u8> {
    data::random(&mut data::Rng(2), len)
}

/// Text as the benchmark tree holds it (examples/mktree): zstd is about a quarter slower on it
/// than on the text this bench used before, whose few thousand short words repeat more.
fn text(len: usize) -> Vec<u8> {
    let mut rng = data::Rng(1);
    let vocabulary = data::vocabulary(&mut rng);
    data::text(&mut rng, &vocabulary, len)
}

fn stages(c: &mut Criterion) {
    let key = Key32::generate().unwrap();
    let inputs = [("text", text(LEN)), ("random", random(LEN))];
    let chunker = Chunker::new(&key, ChunkerParams::DEFAULT);
    let mut g = c.benchmark_group("stage");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(LEN as u64));
    for (name, data) in &inputs {
        g.bench_with_input(BenchmarkId::new("fastcdc", name), data, |b, d| {
            b.iter(|| chunker.split(d).len())
        });
    }
    let hmac = HmacKey::new(&key);
    let chunks: Vec<&[u8]> = inputs[1].1.chunks(256 << 10).collect();
    g.bench_function("hmac-sha256-ids", |b| {
        b.iter(|| chunks.iter().map(|c| hmac.sign(c)[0] as u32).sum::<u32>())
    });
    for level in [1, 3] {
        for (name, data) in &inputs {
            let mut z = Compressor::new(level);
            let mut out = Vec::new();
            g.bench_with_input(
                BenchmarkId::new(format!("zstd-{level}"), name),
                data,
                |b, d| {
                    b.iter(|| {
                        d.chunks(256 << 10)
                            .map(|c| {
                                out.clear();
                                z.compress_into(c, &mut out);
                                out.len()
                            })
                            .sum::<usize>()
                    })
                },
            );
        }
    }
    let (_, compressed) = compress::compress(3, &inputs[0].1[..256 << 10]);
    g.bench_function("zstd-decompress-text", |b| {
        b.iter(|| {
            (0..64)
                .map(|_| {
                    compress::decompress(Compression::Zstd, compressed.clone(), 256 << 10)
                        .unwrap()
                        .len()
                })
                .sum::<usize>()
        })
    });
    let repo = Id::random().unwrap();
    let session = custody::id::SessionId::random().unwrap();
    let pk = PackKey::new(
        &repo,
        &session,
        &key,
        custody::id::PackId::random().unwrap(),
    );
    let ids: Vec<custody::id::BlobId> = chunks
        .iter()
        .map(|c| custody::id::BlobId(Id(hmac.sign(c))))
        .collect();
    g.bench_function("aes-256-gcm-seal-blobs", |b| {
        b.iter(|| {
            chunks
                .iter()
                .zip(&ids)
                .map(|(c, id)| pk.seal_blob(BlobType::Data, id, c).unwrap().len())
                .sum::<usize>()
        })
    });
    let sealed: Vec<Vec<u8>> = chunks
        .iter()
        .zip(&ids)
        .map(|(c, id)| pk.seal_blob(BlobType::Data, id, c).unwrap())
        .collect();
    g.bench_function("aes-256-gcm-open-blobs", |b| {
        b.iter(|| {
            sealed
                .iter()
                .zip(&ids)
                .map(|(s, id)| pk.open_blob(BlobType::Data, id, s).unwrap().len())
                .sum::<usize>()
        })
    });
    // Sealing raw blobs into a pack, and reading its header back.
    g.bench_function("pack-encode-decode", |b| {
        b.iter(|| {
            let mut pb = PackBuilder::new(pk.clone());
            for (c, id) in chunks.iter().zip(&ids) {
                pb.add(BlobType::Data, *id, c.len() as u32, |out| {
                    out.extend_from_slice(c);
                    Compression::None
                })
                .unwrap();
            }
            let p = pb.finish().unwrap();
            let n = p.bytes.len() as u64;
            let r = custody::pack::header_range(n, &p.bytes[p.bytes.len() - 4..]).unwrap();
            let h = pk
                .open_header(&p.bytes[r.start as usize..r.end as usize])
                .unwrap();
            decode_header(&h).unwrap().len()
        })
    });
    g.finish();
}

criterion_group!(benches, stages);

fn main() {
    if let Some(tree) = std::env::var_os("STAGES_TREE") {
        let level = std::env::var("STAGES_LEVEL").map_or(3, |l| l.parse().expect("STAGES_LEVEL"));
        floor::report(std::path::Path::new(&tree), level);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
