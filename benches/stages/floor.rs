//! The stage-limited floor of a first backup of one tree: every stage a backup runs on file
//! contents, run alone on one thread over that tree's own data, in CPU-seconds; the floor is
//! their sum spread over all cores. Reading the files and writing packs (the kernel's work) are
//! not counted, so no backup can reach the floor; how close it comes is the measure.
//!
//! `STAGES_TREE=DIR cargo bench --bench stages` prints it; `FLOOR=1 scripts/bench.sh` prints
//! it beside the measured first backup.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use custody::chunker::{Chunker, ChunkerParams};
use custody::compress::Compressor;
use custody::crypto::kdf::HmacKey;
use custody::crypto::Key32;
use custody::id::{BlobId, PackId, SessionId};
use custody::pack::{BlobType, PackKey};
use custody::Id;

/// CPU-seconds this thread has used: the stages are timed by CPU, not wall clock, so a busy
/// host does not raise the floor.
fn thread_cpu() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime");
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// Runs `f`, adding the CPU time it took to `total`.
fn timed<T>(total: &mut f64, f: impl FnOnce() -> T) -> T {
    let start = thread_cpu();
    let out = f();
    *total += thread_cpu() - start;
    out
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read tree")
        .map(|e| e.expect("dir entry"))
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let kind = e.file_type().expect("file type");
        if kind.is_dir() {
            files(&e.path(), out);
        } else if kind.is_file() {
            out.push(e.path());
        }
    }
}

#[derive(Default)]
struct Stages {
    chunking: f64,
    ids: f64,
    compression: f64,
    sealing: f64,
}

pub fn report(tree: &Path, level: i32) {
    let key = Key32::generate().expect("key");
    let chunker = Chunker::new(&key, ChunkerParams::DEFAULT);
    let hmac = HmacKey::new(&key);
    let mut compressor = Compressor::new(level);
    let repo = Id::random().expect("id");
    let session = SessionId::random().expect("id");
    let pack = PackKey::new(&repo, &session, &key, PackId::random().expect("id"));

    let mut paths = Vec::new();
    files(tree, &mut paths);
    let (mut bytes, mut chunks, mut new_bytes, mut stored) = (0u64, 0u64, 0u64, 0u64);
    let mut seen = HashSet::new();
    let mut sealed = Vec::new();
    let mut t = Stages::default();
    for path in &paths {
        let data = std::fs::read(path).expect("read file");
        bytes += data.len() as u64;
        let lens = timed(&mut t.chunking, || chunker.split(&data));
        let mut at = 0;
        for len in lens {
            let chunk = &data[at..at + len];
            at += len;
            chunks += 1;
            let id = timed(&mut t.ids, || BlobId(Id(hmac.sign(chunk))));
            if !seen.insert(id) {
                continue;
            }
            new_bytes += len as u64;
            // As a packer does: zstd writes the body where it is then sealed. The sealing's
            // time is the whole less the compression's.
            sealed.clear();
            let (mut zstd, mut both) = (0.0, 0.0);
            timed(&mut both, || {
                pack.seal_blob_with(BlobType::Data, &id, &mut sealed, |out| {
                    timed(&mut zstd, || compressor.compress_into(chunk, out))
                })
            })
            .expect("seal");
            t.compression += zstd;
            t.sealing += both - zstd;
            stored += sealed.len() as u64;
        }
    }
    let total = t.chunking + t.ids + t.compression + t.sealing;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "stage floor of a first backup of {} ({:.0} MiB in {} files, {chunks} chunks, {:.0} MiB \
         new, {:.0} MiB stored, zstd level {level}):",
        tree.display(),
        mib(bytes),
        paths.len(),
        mib(new_bytes),
        mib(stored),
    );
    for (stage, secs, over) in [
        ("fastcdc", t.chunking, bytes),
        ("hmac-sha256 ids", t.ids, bytes),
        ("zstd (probe, compress)", t.compression, new_bytes),
        ("aes-256-gcm seal", t.sealing, new_bytes),
    ] {
        println!(
            "  {stage:<24}{secs:>7.2} CPU-s  ({:.0} MiB/s)",
            mib(over) / secs
        );
    }
    println!("  {:<24}{total:>7.2} CPU-s", "all stages");
    println!("floor on {cores} cores: {:.2} s", total / cores as f64);
}
