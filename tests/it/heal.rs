//! Damage heals instead of spreading (issue #13, docs/FORMAT.md §14d): once `check` or a
//! restore has found a pack missing or damaged, backups no longer deduplicate against it, so
//! the next backup stores those chunks again and restores (of the new snapshot, and of the old
//! one, which falls back to the new copies) work. Played by the custodian, on both stores.

use std::path::PathBuf;

use crate::common::backend::{both, Repo};
use crate::common::*;
use custody::repo::backup::BackupOutput;
use custody::repo::check::CheckReport;

fn packs(r: &Repo) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(r.store_dir().join("data")).unwrap() {
        for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out.sort();
    out
}

fn backup(r: &Repo, src: &std::path::Path) -> BackupOutput {
    r.run(&["--json", "backup", src.to_str().unwrap()])
        .ok()
        .report()
}

fn restores(r: &Repo, id: &str, src: &std::path::Path, name: &str) -> Run {
    let out = r.sb.path(name);
    let run = r.run(&["restore", id, "--target", out.to_str().unwrap()]);
    if run.code == 0 {
        assert_same_tree(src, &restored(&out, src));
    }
    run
}

fn heals(r: &Repo) {
    r.init();
    let src = r.source("src", 6, 40, None);
    let first = backup(r, &src).snapshot_id.to_hex();
    let all = packs(r);
    // The custodian deletes one data pack and flips a byte in another.
    let (gone, flipped) = (&all[0], &all[all.len() - 1]);
    std::fs::remove_file(gone).unwrap();
    let mut b = std::fs::read(flipped).unwrap();
    b[40] ^= 1;
    std::fs::write(flipped, b).unwrap();

    // Without a check, a backup of the same files still trusts the index...
    let again = backup(r, &src);
    assert_eq!(again.bytes_new, 0, "{again:?}");
    // ... a restore finds the damage, and records it.
    let run = restores(r, &first, &src, "before");
    assert_eq!(run.code, EXIT_INTEGRITY, "{}", run.stderr);
    let chk: CheckReport = r
        .run(&["--json", "check", "--read-data"])
        .code(EXIT_INTEGRITY)
        .report();
    assert!(chk.problems.len() >= 2, "{chk:?}");
    // Everything was recorded by the restore or the check (none twice).
    let healed = backup(r, &src);
    assert!(healed.bytes_new > 0, "{healed:?}");
    let new = healed.snapshot_id.to_hex();
    restores(r, &new, &src, "new").ok();
    // The old snapshot restores too: every chunk has an intact copy again.
    restores(r, &first, &src, "old").ok();
    // A third backup deduplicates against the new copies.
    assert_eq!(backup(r, &src).bytes_new, 0);
}

#[test]
fn damage_found_by_restore_or_check_is_stored_again_by_the_next_backup() {
    both(heals);
}
