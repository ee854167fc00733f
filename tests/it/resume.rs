//! Resuming an interrupted first backup (issue #18, docs/FORMAT.md §6 "provisional"): a long
//! backup lists its uploaded packs every so often, so that a run killed half-way is followed
//! by one that reads everything again but uploads only the rest; a prune in between keeps
//! those packs for the grace period, and collects them once an interrupted backup is
//! abandoned.

use crate::common::backend::{both, Repo};
use crate::common::*;
use custody::repo::backup::BackupOutput;

/// 8 MiB of incompressible data in 1 MiB packs; a checkpoint after the first 4 MiB.
fn big_source(r: &Repo) -> std::path::PathBuf {
    let dir = r.sb.path("big");
    for i in 0..8 {
        write(
            &dir.join(format!("part{i}")),
            &random_bytes(1 << 20, 500 + i),
        );
    }
    dir
}

fn pack_bytes(r: &Repo) -> u64 {
    let data = r.store_dir().join("data");
    walk_files(&data)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

/// The pack bytes once they stop changing: a killed client's last upload may still be
/// written by an S3 server that had received its whole body (seen once: one pack landed
/// between this reading and the prune after it).
fn settled_pack_bytes(r: &Repo) -> u64 {
    let mut last = pack_bytes(r);
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let now = pack_bytes(r);
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the data/ folder kept changing after the backup was killed");
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk_files(&p));
            } else if !e.file_name().to_string_lossy().starts_with(".tmp-") {
                out.push(p);
            }
        }
    }
    out
}

fn killed_half_way(r: &Repo, src: &std::path::Path) {
    let run = r.run_fail(
        "backup-after-checkpoint",
        &[
            "backup",
            src.to_str().unwrap(),
            "--checkpoint-size",
            "4M",
            "--uploads",
            "1",
        ],
    );
    assert!(killed(&run), "not killed at the checkpoint: {}", run.stderr);
}

fn rerun_uploads_only_the_rest(r: &Repo) {
    r.init();
    let src = big_source(r);
    killed_half_way(r, &src);
    let before = settled_pack_bytes(r);
    assert!(before >= 4 << 20, "the first run uploaded {before} bytes");
    // A prune meanwhile (default grace) keeps the checkpoint's packs for the rerun.
    r.run(&["prune"]).ok();
    assert_eq!(pack_bytes(r), before, "prune removed a checkpoint's packs");

    let out: BackupOutput = r
        .run(&["--json", "backup", src.to_str().unwrap()])
        .ok()
        .report();
    let total = 8u64 << 20;
    // Measured: the rerun's upload after an interrupt at 50%.
    assert!(
        out.bytes_added < total * 6 / 10,
        "the rerun uploaded {} of {total} bytes again",
        out.bytes_added
    );
    assert_eq!(out.files_unchanged, 0, "every file is read again: {out:?}");
    r.check();
    assert_eq!(r.restore_all(), 1);
    // Once a snapshot uses them, the checkpoint's packs are ordinary: prune keeps them.
    r.run(&["prune", "--grace", "0s"]).ok();
    r.check();
    assert_eq!(r.restore_all(), 1);
}

#[test]
fn a_rerun_after_an_interrupted_backup_uploads_only_the_rest() {
    both(rerun_uploads_only_the_rest);
}

#[test]
fn an_abandoned_checkpoint_is_collected() {
    let r = Repo::local();
    r.init();
    let src = big_source(&r);
    killed_half_way(&r, &src);
    assert!(pack_bytes(&r) >= 4 << 20);
    // Noted by one prune, condemned by the next after the grace period: with no grace
    // period (the operator vouches that no backup runs), at once.
    r.run(&["prune", "--grace", "0s"]).ok();
    assert_eq!(
        pack_bytes(&r),
        0,
        "{:?}",
        walk_files(&r.store_dir().join("data"))
    );
    r.check();
}
