//! `repair index` and `repair snapshots` (issue #13, docs/FORMAT.md §14e), played from outside
//! on both stores: the whole `index/` deleted (plus junk put there), a repair killed half way
//! and run again, then byte-identical restores; a pack lost, and a new snapshot of what is
//! intact that names what it left out.

use std::path::{Path, PathBuf};

use crate::common::backend::{both, Repo};
use crate::common::*;
use custody::repo::repair::{RepairIndexReport, RepairSnapshotsReport};
use custody::repo::snapshots::SnapshotTable;

fn objects(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(objects(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn index_rebuilt(r: &Repo) {
    r.init();
    let a = r.source("a", 8, 50, Some(7));
    let b = r.source("b", 8, 51, Some(7));
    r.backup(&a);
    r.backup(&b);
    let index = r.store_dir().join("index");
    for f in objects(&index) {
        std::fs::remove_file(f).unwrap();
    }
    let junk = index.join("ab".repeat(32));
    write(&junk, &random_bytes(200, 9));
    let packs = objects(&r.store_dir().join("data")).len();
    // Nothing restores without the index.
    let t: SnapshotTable = r.run(&["--json", "snapshots"]).ok().report();
    let id = t.0[0].id.to_hex();
    let out = r.sb.path("before");
    assert_ne!(
        r.run(&["restore", &id, "--target", out.to_str().unwrap()])
            .code,
        0
    );

    let dry: RepairIndexReport = r
        .run(&["--json", "repair", "index", "--dry-run"])
        .ok()
        .report();
    assert_eq!(
        (dry.packs, dry.packs_added, dry.packs_indexed),
        (packs, packs, 0)
    );
    assert_eq!(dry.segments_removed.len(), 1, "{dry:?}");
    assert_eq!(
        objects(&index),
        vec![junk.clone()],
        "a dry run wrote or removed something"
    );

    // Killed right after its first segment: the rerun finishes, listing nothing twice.
    let killed = r.run_fail("repair-index-after-segment", &["repair", "index"]);
    assert!(crate::common::killed(&killed), "{}", killed.stderr);
    r.remove_locks();
    let done: RepairIndexReport = r.run(&["--json", "repair", "index"]).ok().report();
    assert_eq!(
        (done.packs_added, done.packs_indexed),
        (0, packs),
        "{done:?}"
    );
    assert_eq!(done.segments_removed.len(), 1, "{done:?}");
    assert!(!junk.exists());

    assert_eq!(r.restore_all(), 2);
    let chk = r.check();
    assert!(chk.problems.is_empty(), "{chk:?}");
    // Backups deduplicate against the rebuilt index.
    let v: custody::repo::backup::BackupOutput = r
        .run(&["--json", "backup", a.to_str().unwrap()])
        .ok()
        .report();
    assert_eq!(v.bytes_new, 0, "{v:?}");
}

#[test]
fn a_lost_index_is_rebuilt_from_the_packs() {
    both(index_rebuilt);
}

fn snapshot_salvaged(r: &Repo) {
    r.init();
    let src = r.source("src", 12, 60, None);
    let id = r.backup(&src);
    // One pack of file data lost (not the one holding the folder listings: `ls` still works
    // without it).
    let packs = objects(&r.store_dir().join("data"));
    let lost_pack = packs
        .iter()
        .find(|p| {
            let saved = std::fs::read(p).unwrap();
            std::fs::remove_file(p).unwrap();
            let run = r.run(&["--json", "ls", &id]);
            std::fs::write(p, saved).unwrap();
            run.code == 0
        })
        .expect("a data pack")
        .clone();
    std::fs::remove_file(&lost_pack).unwrap();

    let dry: RepairSnapshotsReport = r
        .run(&["--json", "repair", "snapshots", "--dry-run"])
        .ok()
        .report();
    assert_eq!(
        (dry.checked, dry.intact, dry.repaired.len()),
        (1, 0, 1),
        "{dry:?}"
    );
    assert!(dry.repaired[0].snapshot.is_none());
    let rep: RepairSnapshotsReport = r.run(&["--json", "repair", "snapshots"]).ok().report();
    let fixed = &rep.repaired[0];
    let new = fixed.snapshot.expect("a new snapshot").to_hex();
    assert!(
        fixed.missing_count > 0 && fixed.missing_count < 12,
        "{fixed:?}"
    );
    let t: SnapshotTable = r.run(&["--json", "snapshots"]).ok().report();
    let listed = t.0.iter().find(|s| s.id.to_hex() == new).unwrap();
    assert!(listed.tags.contains(&"repaired".to_string()));
    // The new snapshot restores: every file but those it names, byte for byte.
    let out = r.sb.path("salvaged");
    r.run(&["restore", &new, "--target", out.to_str().unwrap()])
        .ok();
    let restored = crate::common::restored(&out, &src);
    for e in std::fs::read_dir(&src).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        let lost = fixed
            .missing
            .iter()
            .any(|m| m.ends_with(&format!("/{name}")));
        let back = restored.join(&name);
        if lost {
            assert!(!back.exists(), "{name} was reported lost but restored");
        } else {
            assert_eq!(
                std::fs::read(&back).unwrap(),
                std::fs::read(src.join(&name)).unwrap(),
                "{name}"
            );
        }
    }
    // The manifest says what it left out.
    let cat = r.run(&["cat", "snapshot", &new]).ok().out();
    assert!(cat.contains("\"repaired\"") && cat.contains(&id), "{cat}");
    // A second repair finds the original damaged again but the repaired one intact.
    let again: RepairSnapshotsReport = r
        .run(&["--json", "repair", "snapshots", &new])
        .ok()
        .report();
    assert_eq!((again.intact, again.repaired.len()), (1, 0));
}

#[test]
fn a_snapshot_with_lost_data_is_salvaged_into_a_new_one() {
    both(snapshot_salvaged);
}
