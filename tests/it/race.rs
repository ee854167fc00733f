//! A hostile local user swaps folders for symlinks to a folder elsewhere while restores and
//! backups run (issue #14): both work through folder descriptors, so a restore never creates
//! or changes anything outside its target, and a backup never records a file from elsewhere
//! under a swapped folder's name, in many tries.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::common::*;

fn snapshot_of_many_folders(sb: &Sandbox) -> String {
    let src = sb.path("src");
    for d in 0..8 {
        for f in 0..40 {
            write(
                &src.join(format!("d{d}/sub/f{f}")),
                &random_bytes(2000 + f * 10, (d * 100 + f) as u64),
            );
        }
    }
    sb.backup_json(&[src.to_str().unwrap()])
        .snapshot_id
        .to_hex()
}

/// Everything under `dir` with its mode and mtime.
fn state(dir: &Path) -> Vec<(String, u32, i64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let m = std::fs::symlink_metadata(&d).unwrap();
        out.push((d.display().to_string(), m.mode(), m.mtime()));
        if m.is_dir() {
            for e in std::fs::read_dir(&d).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_folder_swapped_for_a_symlink_redirects_nothing() {
    let sb = Sandbox::new();
    sb.init();
    let id = snapshot_of_many_folders(&sb);
    let outside = sb.path("outside");
    write(&outside.join("precious"), b"do not touch");
    let before = state(&outside);
    for round in 0..12 {
        let target = sb.path(&format!("t{round}"));
        std::fs::create_dir_all(&target).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        // Where restore puts the source (its full path under the target).
        let base = restored(&target, &sb.path("src"));
        let swapper = {
            let (stop, target, outside) = (stop.clone(), base.clone(), outside.clone());
            std::thread::spawn(move || {
                let mut swaps = 0;
                while !stop.load(Ordering::Relaxed) {
                    for d in 0..8 {
                        let dir = target.join(format!("d{d}"));
                        let aside = target.join(format!(".aside{d}"));
                        if std::fs::rename(&dir, &aside).is_ok() {
                            let _ = std::os::unix::fs::symlink(&outside, &dir);
                            swaps += 1;
                            std::thread::yield_now();
                            let _ = std::fs::remove_file(&dir);
                            let _ = std::fs::rename(&aside, &dir);
                        }
                        // The deeper folder too.
                        let sub = target.join(format!("d{d}/sub"));
                        let aside = target.join(format!("d{d}/.aside"));
                        if std::fs::rename(&sub, &aside).is_ok() {
                            let _ = std::os::unix::fs::symlink(&outside, &sub);
                            swaps += 1;
                            let _ = std::fs::remove_file(&sub);
                            let _ = std::fs::rename(&aside, &sub);
                        }
                    }
                }
                swaps
            })
        };
        // The restore may fail for files whose folder was away; it must not write outside.
        let _ = sb.run(&["restore", &id, "--target", target.to_str().unwrap()]);
        stop.store(true, Ordering::Relaxed);
        let swaps = swapper.join().unwrap();
        assert!(
            swaps > 0,
            "round {round}: the swapper never found a folder to swap"
        );
        assert_eq!(
            state(&outside),
            before,
            "round {round}: something outside the target changed ({swaps} swaps)"
        );
    }
    // Without interference the same restore is complete.
    let target = sb.path("clean");
    sb.run(&["restore", &id, "--target", target.to_str().unwrap()])
        .ok();
    assert_same_tree(&sb.path("src"), &restored(&target, &sb.path("src")));
}

/// Backup walks folders by descriptor: a folder swapped for a symlink mid-walk is either
/// backed up as the folder it was or skipped, never read through the link.
#[test]
fn a_folder_swapped_mid_backup_records_nothing_from_elsewhere() {
    let sb = Sandbox::new();
    sb.init();
    let src = sb.path("src");
    for d in 0..8 {
        for f in 0..150 {
            write(
                &src.join(format!("d{d}/sub/f{f}")),
                format!("{d}/{f}").as_bytes(),
            );
        }
    }
    let outside = sb.path("outside");
    // The same names as inside a source folder, other bytes: what a walk by path would
    // record under the genuine names once a folder on the way is a link.
    for f in 0..150 {
        write(&outside.join(format!("secret{f}")), b"not to be backed up");
        write(&outside.join(format!("sub/f{f}")), b"not to be backed up");
    }
    let mut swaps_total = 0;
    for round in 0..10 {
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let (stop, src, outside) = (stop.clone(), src.clone(), outside.clone());
            std::thread::spawn(move || {
                let mut swaps = 0;
                while !stop.load(Ordering::Relaxed) {
                    for d in 0..8 {
                        for (dir, aside) in [
                            (src.join(format!("d{d}")), src.join(format!(".aside{d}"))),
                            (
                                src.join(format!("d{d}/sub")),
                                src.join(format!("d{d}/.aside")),
                            ),
                        ] {
                            if std::fs::rename(&dir, &aside).is_ok() {
                                let _ = std::os::unix::fs::symlink(&outside, &dir);
                                swaps += 1;
                                // Long enough for the walk to meet the link now and then.
                                std::thread::sleep(std::time::Duration::from_micros(300));
                                let _ = std::fs::remove_file(&dir);
                                let _ = std::fs::rename(&aside, &dir);
                            }
                        }
                    }
                }
                swaps
            })
        };
        let run = sb.run(&["--json", "backup", "--force", src.to_str().unwrap()]);
        stop.store(true, Ordering::Relaxed);
        swaps_total += swapper.join().unwrap();
        assert!(
            run.code == EXIT_OK || run.code == EXIT_INCOMPLETE,
            "round {round}: {}",
            run.stderr
        );
        let v: Vec<custody::repo::snapshots::LsEntry> =
            sb.run(&["--json", "ls", "latest"]).ok().report();
        let foreign: Vec<&str> = v
            .iter()
            .map(|e| e.path.as_str())
            .filter(|p| p.contains("secret"))
            .collect();
        assert!(
            foreign.is_empty(),
            "round {round}: recorded from elsewhere: {foreign:?}"
        );
        // What it did record under a folder's name is that folder's own files.
        let out = sb.path(&format!("check{round}"));
        sb.run(&["restore", "latest", "--target", out.to_str().unwrap()])
            .ok();
        for (path, _, _) in state(&out) {
            if let Ok(data) = std::fs::read(&path) {
                assert_ne!(data, b"not to be backed up", "round {round}: {path}");
            }
        }
    }
    assert!(swaps_total > 0, "the swapper never swapped");
}
