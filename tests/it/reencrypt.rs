//! `rotate reencrypt` (issue #5): rewrite what a compromised session key protects under a
//! fresh key, leave nothing of the old session behind, survive SIGKILL at each step and a
//! backup running at the same time.

use std::collections::HashSet;

use crate::common::backend::{both, Repo};
use crate::common::*;
use custody::repo::reencrypt::ReencryptReport;

/// Sessions of every indexed pack (local store only: reads the index through `cat`).
fn pack_sessions(r: &Repo) -> HashSet<String> {
    let mut out = HashSet::new();
    for seg in list_ids(&r.sb.repo().join("index")) {
        let v = r.run(&["cat", "index", &seg]).ok().json();
        for p in v["packs"].as_array().unwrap() {
            out.insert(p["session"].as_str().unwrap().to_string());
        }
    }
    out
}

fn snapshots(r: &Repo) -> Vec<(String, String)> {
    r.run(&["--json", "snapshots"])
        .ok()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["session"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn leaves_nothing_behind(r: &Repo) {
    r.init();
    let a = r.source("a", 10, 1, Some(9));
    let sa = r.backup(&a);
    let b = r.source("b", 10, 2, Some(9));
    r.backup(&b);
    let before = snapshots(r);
    let compromised = before.iter().find(|(id, _)| *id == sa).unwrap().1.clone();
    let dry = r
        .run(&[
            "--json",
            "rotate",
            "reencrypt",
            "--session",
            &compromised[..12],
            "--dry-run",
        ])
        .ok()
        .report::<ReencryptReport>();
    assert!(dry.packs > 0, "{dry:?}");
    assert_eq!(dry.snapshots_resealed, 1);
    assert!(dry.mark.is_none());
    let v = r
        .run(&[
            "--json",
            "rotate",
            "reencrypt",
            "--session",
            &compromised,
            "--delete-now",
        ])
        .ok()
        .report::<ReencryptReport>();
    assert_eq!(v.snapshots_resealed, 1, "{v:?}");
    assert!(v.sweep.as_ref().unwrap().packs_deleted > 0, "{v:?}");
    // The old wrapped key is condemned; the next prune past the grace period removes it.
    r.run(&["cat", "key", &compromised]).ok();
    r.run(&["prune", "--grace", "0s"]).ok();
    // Same snapshot ids, now sealed by the new session; the old key is gone.
    let after = snapshots(r);
    assert_eq!(
        before.iter().map(|s| &s.0).collect::<HashSet<_>>(),
        after.iter().map(|s| &s.0).collect::<HashSet<_>>()
    );
    assert!(after.iter().all(|(_, s)| *s != compromised), "{after:?}");
    let e = r.run(&["cat", "key", &compromised]);
    assert_ne!(e.code, 0, "the old wrapped key is still there");
    let chk = r.check();
    assert!(chk.problems.is_empty(), "{chk:?}");
    assert_eq!(chk.leftovers.len(), 0, "{chk:?}");
    assert_eq!(chk.condemned, 0, "{chk:?}");
    assert_eq!(r.restore_all(), 2);
    if r.sb.repo().exists() {
        // Every stored pack is indexed (no leftovers), and none is sealed by the old session.
        assert!(!pack_sessions(r).contains(&compromised));
    }
}

#[test]
fn reencrypt_leaves_no_pack_or_key_of_the_session_behind() {
    both(leaves_nothing_behind);
}

#[test]
fn reencrypt_killed_at_each_step_then_rerun_loses_nothing() {
    let r = Repo::local();
    r.init();
    let a = r.source("a", 8, 1, None);
    r.backup(&a);
    let a2 = r.source("a2", 8, 2, None);
    r.backup(&a2);
    let b = r.source("b", 8, 3, None);
    r.backup(&b);
    for point in [
        "reencrypt-after-copy",
        "reencrypt-after-index",
        "reencrypt-after-snapshot",
    ] {
        let run = r.run_fail(point, &["rotate", "reencrypt", "--all"]);
        assert!(killed(&run), "{point}: {} {}", run.code, run.stderr);
        let chk = r.check();
        assert!(chk.problems.is_empty(), "{point}: {chk:?}");
        assert_eq!(r.restore_all(), 3, "{point}");
        r.remove_locks();
    }
    let sessions_before: HashSet<String> = snapshots(&r).into_iter().map(|s| s.1).collect();
    r.run(&["rotate", "reencrypt", "--all", "--delete-now"])
        .ok();
    r.run(&["prune", "--grace", "0s"]).ok();
    let after = snapshots(&r);
    assert!(
        after.iter().all(|(_, s)| !sessions_before.contains(s)),
        "{after:?}"
    );
    let chk = r.check();
    assert!(chk.problems.is_empty(), "{chk:?}");
    assert_eq!(chk.leftovers.len(), 0, "{chk:?}");
    assert_eq!(r.restore_all(), 3);
    let live = pack_sessions(&r);
    assert!(live.is_disjoint(&sessions_before), "{live:?}");
    // Only the sessions that seal something are left.
    let keys = list_ids(&r.sb.repo().join("keys"));
    for k in &keys {
        assert!(
            live.contains(k) || after.iter().any(|(_, s)| s == k),
            "unused key {k} left behind"
        );
    }
}

#[test]
fn backup_running_during_reencryption_survives() {
    let r = Repo::local();
    r.init();
    let a = r.source("a", 20, 1, Some(4));
    r.backup(&a);
    // The backup deduplicates `a`'s data, which re-encryption moves under a new key while the
    // backup is still reading its big file.
    let src = r.sb.path("during");
    for e in std::fs::read_dir(&a).unwrap() {
        let e = e.unwrap();
        write(
            &src.join("a").join(e.file_name()),
            &std::fs::read(e.path()).unwrap(),
        );
    }
    write(&src.join("z-big.bin"), &random_bytes(64 << 20, 5));
    let child = r.spawn(&[
        "--json",
        "backup",
        src.to_str().unwrap(),
        "--workers",
        "1",
        "--uploads",
        "1",
    ]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let v = r
        .run(&["--json", "rotate", "reencrypt", "--all"])
        .ok()
        .json();
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "backup during reencrypt: {stderr}");
    assert!(v["blobs_copied"].as_u64().unwrap() > 0, "{v}");
    // Its snapshot and the old one restore, with the old packs still condemned...
    assert_eq!(r.restore_all(), 2);
    // ...and after they are deleted.
    r.run(&["prune", "--grace", "0s"]).ok();
    let chk = r.check();
    assert!(chk.problems.is_empty(), "{chk:?}");
    assert_eq!(r.restore_all(), 2);
}
