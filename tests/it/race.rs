//! A hostile local user swaps folders inside the restore target for symlinks to a folder
//! elsewhere while restores run (issue #14): restore works through folder descriptors, so
//! nothing outside the target is ever created or changed, in many tries.

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
        let swapper = {
            let (stop, target, outside) = (stop.clone(), target.clone(), outside.clone());
            std::thread::spawn(move || {
                let mut swaps = 0;
                while !stop.load(Ordering::Relaxed) {
                    for d in 0..8 {
                        let dir = target.join(format!("src/d{d}"));
                        let aside = target.join(format!("src/.aside{d}"));
                        if std::fs::rename(&dir, &aside).is_ok() {
                            let _ = std::os::unix::fs::symlink(&outside, &dir);
                            swaps += 1;
                            std::thread::yield_now();
                            let _ = std::fs::remove_file(&dir);
                            let _ = std::fs::rename(&aside, &dir);
                        }
                        // The deeper folder too.
                        let sub = target.join(format!("src/d{d}/sub"));
                        let aside = target.join(format!("src/d{d}/.aside"));
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
