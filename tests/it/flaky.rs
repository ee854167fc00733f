//! A flaky S3 server: a seeded proxy (`common::flaky`) in front of s3s-fs answers about one
//! request in five with `503 SlowDown`, a connection dropped after forwarding, or a body cut
//! short. A backup and a restore through it succeed byte for byte and leave a repository that
//! `check --read-data` passes; beyond the retry budget a backup fails clearly, commits
//! nothing, and a rerun on the healthy server succeeds.

use crate::common::flaky::FlakyProxy;
use crate::common::services::{available, s3_env, S3sFs, S3_ACCESS_KEY, S3_SECRET_KEY};
use crate::common::*;
use custody::repo::snapshots::SnapshotTable;

fn source(sb: &Sandbox, name: &str, seed: u64) -> std::path::PathBuf {
    let dir = sb.path(name);
    for i in 0..40u64 {
        let len = 1_000 + (random_bytes(2, seed + i)[0] as usize) * 700;
        write(
            &dir.join(format!("f{i:02}")),
            &random_bytes(len, seed * 100 + i),
        );
    }
    write(&dir.join("big.bin"), &random_bytes(3 << 20, seed + 1000));
    dir
}

#[test]
fn backup_and_restore_succeed_through_a_flaky_server() {
    if !available("s3s-fs") {
        return;
    }
    let server = S3sFs::start();
    let proxy = FlakyProxy::start(&server.endpoint, 20, 0x5eed_f1a4);
    let repo = ("CUSTODY_REPOSITORY", "s3://flaky/repo".to_string());
    let mut flaky = s3_env(&proxy.endpoint, S3_ACCESS_KEY, S3_SECRET_KEY);
    flaky.push(repo.clone());
    let mut healthy = s3_env(&server.endpoint, S3_ACCESS_KEY, S3_SECRET_KEY);
    healthy.push(repo);
    let sb = Sandbox::new();
    let snapshots = || -> usize {
        let t: SnapshotTable = sb.run_env(&healthy, &["--json", "snapshots"]).ok().report();
        t.0.len()
    };

    sb.run_env(&flaky, &["init", "--pack-size-mib", "1"]).ok();
    let src = source(&sb, "src", 1);
    sb.run_env(&flaky, &["backup", src.to_str().unwrap()]).ok();
    let out = sb.path("out");
    sb.run_env(
        &flaky,
        &["restore", "latest", "--target", out.to_str().unwrap()],
    )
    .ok();
    assert_same_tree(&src, &restored(&out, &src));
    sb.run_env(&flaky, &["check", "--read-data"]).ok();
    let faults = proxy.faults.load(std::sync::atomic::Ordering::Relaxed);
    assert!(faults >= 5, "the proxy misbehaved only {faults} times");

    // Beyond the budget (every request misbehaves, 2 attempts each): a clear failure, and
    // nothing committed.
    proxy.set_rate(100);
    let more = source(&sb, "more", 2);
    let mut short = flaky.clone();
    short.push(("CUSTODY_S3_MAX_ATTEMPTS", "2".into()));
    let r = sb.run_env(&short, &["backup", more.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("s3://flaky/repo") && !r.stderr.contains("panicked"),
        "{}",
        r.stderr
    );
    assert_eq!(snapshots(), 1);
    sb.run_env(&healthy, &["backup", more.to_str().unwrap()])
        .ok();
    assert_eq!(snapshots(), 2);
    sb.run_env(&healthy, &["check", "--read-data"]).ok();
}
