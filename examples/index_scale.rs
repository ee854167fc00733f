//! Index scale: how long a repository with many chunks takes to load its index, and how much
//! memory the index takes, before and after consolidation (what `prune` does to segments).
//!
//! Usage: `cargo run --release --example index_scale -- REPO KEYRING_DIR [CHUNKS] [SEGMENTS]`
//! on a repository made with `custody init --key-service local:KEYRING_DIR` (no passphrase).
//! It writes CHUNKS (default 1,000,000) synthetic index entries spread over SEGMENTS (default
//! 1,000) segments, as 1,000 backup runs would, loads the index, then replaces the segments
//! with consolidated ones of 100,000 entries and loads it again. Entries point at packs that
//! do not exist: only the index is measured (`scripts/bench.sh` measures real data).

use std::time::Instant;

use custody::compress::Compression;
use custody::format::index::{IndexSegment, PackEntries};
use custody::keyservice::{self, KeyServiceOptions};
use custody::pack::{BlobEntry, BlobType};
use custody::repo::Repository;
use custody::store::{self, FileKind};

fn rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn segment(chunks: usize, per_pack: usize) -> IndexSegment {
    let mut packs = Vec::new();
    let mut left = chunks;
    while left > 0 {
        let n = left.min(per_pack);
        left -= n;
        let blobs = (0..n)
            .map(|i| BlobEntry {
                id: custody::id::BlobId::random().expect("random"),
                blob_type: BlobType::Data,
                compression: Compression::Zstd,
                offset: (i * 200_000) as u32,
                length: 200_000,
                raw_length: 262_144,
            })
            .collect();
        packs.push(PackEntries {
            pack: custody::id::PackId::random().expect("random"),
            session: custody::id::SessionId::default(),
            blobs,
        });
    }
    IndexSegment {
        packs,
        provisional: false,
    }
}

fn measure(repo: &Repository, label: &str) {
    let segments = repo.store().list(FileKind::Index).expect("list").len();
    let before = rss_mib();
    let t = Instant::now();
    let index = repo.load_index().expect("load index");
    let secs = t.elapsed().as_secs_f64();
    let after = rss_mib();
    println!(
        "{label:<14} {segments:>6} segments  {:>9} chunks  load {secs:6.2} s  index memory {:6.1} MiB",
        index.blob_count(),
        after - before
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (repo_dir, ring) = (&args[1], &args[2]);
    let chunks: usize = args
        .get(3)
        .map_or(1_000_000, |v| v.parse().expect("CHUNKS"));
    let segs: usize = args.get(4).map_or(1_000, |v| v.parse().expect("SEGMENTS"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let store = store::open(repo_dir, &Default::default(), rt.handle()).expect("store");
    let config = Repository::read_config(rt.handle(), &store).expect("config");
    let keys = keyservice::open(
        &format!("local:{ring}"),
        &KeyServiceOptions::default(),
        rt.handle(),
    )
    .expect("keyring");
    let repo = Repository::open(rt.handle().clone(), store, keys, config, None).expect("open");
    // ~64 blobs per pack, as 16 MiB packs of 256 KiB chunks have.
    for _ in 0..segs {
        repo.save_index_segment(&segment(chunks / segs, 64))
            .expect("write segment");
    }
    measure(&repo, "as written");
    // Consolidate: the same entries in segments of 100,000, old segments removed.
    let old: Vec<custody::id::SegmentId> = repo
        .store()
        .list(FileKind::Index)
        .expect("list")
        .into_iter()
        .map(|(id, _)| id.into())
        .collect();
    let mut all = Vec::new();
    for id in &old {
        all.extend(
            repo.load_object::<custody::format::index::IndexSegment>(id)
                .expect("segment")
                .packs,
        );
    }
    let mut seg = IndexSegment::default();
    let mut n = 0;
    for p in all {
        n += p.blobs.len();
        seg.packs.push(p);
        if n >= 100_000 {
            repo.save_index_segment(&std::mem::take(&mut seg))
                .expect("write");
            n = 0;
        }
    }
    if !seg.packs.is_empty() {
        repo.save_index_segment(&seg).expect("write");
    }
    for id in &old {
        repo.store().delete(FileKind::Index, id).expect("delete");
    }
    measure(&repo, "consolidated");
}
