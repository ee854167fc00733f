//! restore's options with restic's names (README "Paths in a snapshot", docs/FORMAT.md §8):
//! include and exclude patterns, `--overwrite`, `--delete`, `--verify` and `--dry-run`, each
//! checked on the restored tree from outside.

use std::path::{Path, PathBuf};

use crate::common::*;

/// Every path below `root` (relative, sorted), folders included.
fn tree_of(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A source with configuration files, data and a nested folder; backed up once.
fn backed_up(sb: &Sandbox) -> PathBuf {
    sb.init();
    let src = sb.path("src");
    write(&src.join("etc/a.conf"), b"a");
    write(&src.join("etc/B.CONF"), b"B");
    write(&src.join("etc/notes.txt"), b"n");
    write(&src.join("etc/sub/c.conf"), b"c");
    write(&src.join("var/log/x.log"), b"x");
    std::fs::create_dir_all(src.join("empty")).unwrap();
    sb.run(&["backup", src.to_str().unwrap()]).ok();
    src
}

fn restore(sb: &Sandbox, out: &Path, extra: &[&str]) -> Run {
    let mut args = vec![
        "--json",
        "restore",
        "latest",
        "--target",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    sb.run(&args)
}

#[test]
fn include_and_exclude_patterns_follow_restic() {
    let sb = Sandbox::new();
    let src = backed_up(&sb);
    let out = sb.path("inc");
    restore(&sb, &out, &["--include", "*.conf"]).ok();
    // Only what matches, and the folders on the way to it (no empty ones).
    assert_eq!(
        tree_of(&restored(&out, &src)),
        ["etc", "etc/a.conf", "etc/sub", "etc/sub/c.conf"]
    );
    let out = sb.path("iinc");
    restore(&sb, &out, &["--iinclude", "*.conf", "--exclude", "sub"]).ok();
    assert_eq!(
        tree_of(&restored(&out, &src)),
        ["etc", "etc/B.CONF", "etc/a.conf"]
    );
    let out = sb.path("exc");
    let anchored = format!("{}/var", src.display());
    restore(&sb, &out, &["-e", &anchored, "--iexclude", "NOTES.*"]).ok();
    assert_eq!(
        tree_of(&restored(&out, &src)),
        [
            "empty",
            "etc",
            "etc/B.CONF",
            "etc/a.conf",
            "etc/sub",
            "etc/sub/c.conf"
        ]
    );
    // A path include still takes the whole folder, as before.
    let out = sb.path("path");
    let var = format!("{}/var", src.display());
    restore(&sb, &out, &["--include", &var]).ok();
    assert_eq!(
        tree_of(&restored(&out, &src)),
        ["var", "var/log", "var/log/x.log"]
    );
}

#[test]
fn overwrite_policies_decide_what_existing_files_become() {
    let sb = Sandbox::new();
    let src = backed_up(&sb);
    let out = sb.path("out");
    restore(&sb, &out, &[]).ok();
    let at = restored(&out, &src);
    let a = at.join("etc/a.conf");
    let notes = at.join("etc/notes.txt");
    let set_mtime = |p: &Path, secs: i64| {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(t)
            .unwrap();
    };
    // never: every existing file stays, a missing one comes back.
    std::fs::write(&a, b"local edit").unwrap();
    std::fs::remove_file(&notes).unwrap();
    let v = restore(&sb, &out, &["--overwrite", "never"]).ok().json();
    assert_eq!(std::fs::read(&a).unwrap(), b"local edit");
    assert_eq!(std::fs::read(&notes).unwrap(), b"n");
    assert_eq!(
        (v["files_restored"].as_u64(), v["files_kept"].as_u64()),
        (Some(1), Some(4))
    );
    // if-newer: a local file newer than the snapshot's stays; an older one is replaced.
    set_mtime(&a, 4_000_000_000);
    set_mtime(&notes, 1_000_000);
    std::fs::write(at.join("etc/sub/c.conf"), b"other").unwrap();
    set_mtime(&at.join("etc/sub/c.conf"), 1_000_000);
    restore(&sb, &out, &["--overwrite", "if-newer"]).ok();
    assert_eq!(std::fs::read(&a).unwrap(), b"local edit");
    assert_eq!(std::fs::read(at.join("etc/sub/c.conf")).unwrap(), b"c");
    // if-changed: a file that differs in size or time is replaced, an equal one kept.
    let v = restore(&sb, &out, &["--overwrite", "if-changed"])
        .ok()
        .json();
    assert_eq!(std::fs::read(&a).unwrap(), b"a");
    assert_eq!(v["files_restored"].as_u64(), Some(1), "{v}");
    // always (the default): everything is written again.
    std::fs::write(&notes, b"N").unwrap();
    set_mtime(&notes, 4_000_000_000);
    restore(&sb, &out, &[]).ok();
    assert_eq!(std::fs::read(&notes).unwrap(), b"n");
    let bad = sb.run(&[
        "restore",
        "latest",
        "--target",
        out.to_str().unwrap(),
        "--overwrite",
        "sometimes",
    ]);
    bad.code(EXIT_USAGE);
}

#[test]
fn delete_makes_the_sources_match_and_leaves_the_rest() {
    let sb = Sandbox::new();
    let src = backed_up(&sb);
    let out = sb.path("out");
    restore(&sb, &out, &[]).ok();
    let at = restored(&out, &src);
    write(&at.join("etc/stale.conf"), b"old");
    write(&at.join("var/old/deep/file"), b"old");
    std::os::unix::fs::symlink("/etc", at.join("etc/link-out")).unwrap();
    // Beside the source, in a folder above it: not the snapshot's to judge.
    write(&at.with_file_name("neighbour"), b"keep");
    write(&out.join("elsewhere"), b"keep");
    // The dry run counts and changes nothing.
    let v = restore(&sb, &out, &["--delete", "--dry-run"]).ok().json();
    assert_eq!(v["deleted"].as_u64(), Some(3), "{v}");
    assert!(at.join("etc/stale.conf").exists());
    let v = restore(&sb, &out, &["--delete"]).ok().json();
    // stale.conf, link-out, and old/ with deep/ and file.
    assert_eq!(v["deleted"].as_u64(), Some(5), "{v}");
    assert_eq!(
        tree_of(&at),
        [
            "empty",
            "etc",
            "etc/B.CONF",
            "etc/a.conf",
            "etc/notes.txt",
            "etc/sub",
            "etc/sub/c.conf",
            "var",
            "var/log",
            "var/log/x.log"
        ]
    );
    assert!(at.with_file_name("neighbour").exists() && out.join("elsewhere").exists());
    // The link was removed, not followed.
    assert!(Path::new("/etc").read_dir().unwrap().next().is_some());
    // With an include, only inside what is included.
    write(&at.join("etc/stale.conf"), b"old");
    write(&at.join("var/stale"), b"old");
    let etc = format!("{}/etc", src.display());
    restore(&sb, &out, &["--delete", "--include", &etc]).ok();
    assert!(!at.join("etc/stale.conf").exists() && at.join("var/stale").exists());
}

#[test]
fn verify_reads_back_and_dry_run_changes_nothing() {
    let sb = Sandbox::new();
    let src = backed_up(&sb);
    let out = sb.path("dry");
    let dry = restore(&sb, &out, &["--dry-run"]).ok().json();
    assert!(!out.exists(), "a dry run created the target");
    assert_eq!(dry["dry_run"], true);
    let out = sb.path("real");
    let real = restore(&sb, &out, &["--verify"]).ok().json();
    assert_eq!(dry["files_restored"], real["files_restored"]);
    assert_eq!(dry["bytes_restored"], real["bytes_restored"]);
    assert_eq!(real["verified"], real["files_restored"]);
    assert_same_tree(&src, &restored(&out, &src));
    // The summary line is printed on every run, terminal or not.
    let text = sb.run(&[
        "restore",
        "latest",
        "--target",
        out.to_str().unwrap(),
        "--dry-run",
    ]);
    let text = text.ok().out();
    assert!(
        text.contains("would restore") && text.contains("5 files"),
        "{text}"
    );
}

/// A disk that fills up mid-restore: every file that did not fit is named once, by its own
/// name (not the temporary one), the summary says the restore is incomplete and how many
/// paths failed, the exit code is not 0, and no temporary file is left (as root, on a small
/// tmpfs; skipped with the reason otherwise).
#[test]
fn a_full_disk_is_reported_once_per_file_with_a_count() {
    let sb = Sandbox::new();
    sb.init();
    let src = sb.path("src");
    for i in 0..6 {
        write(&src.join(format!("f{i}")), &random_bytes(600_000, i));
    }
    sb.run(&["backup", src.to_str().unwrap()]).ok();
    let small = sb.path("small");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "none"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    }
    let run = sb.run(&["restore", "latest", "--target", small.to_str().unwrap()]);
    let left = tree_of(&small);
    let _ = std::process::Command::new("umount").arg(&small).status();
    assert_eq!(run.code, EXIT_ERROR, "{}", run.stderr);
    let failed: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("not restored"))
        .collect();
    let restored_files = left
        .iter()
        .filter(|p| p.rsplit('/').next().unwrap().starts_with('f'))
        .count();
    assert_eq!(failed.len() + restored_files, 6, "{}\n{left:?}", run.stderr);
    assert!(
        failed
            .iter()
            .all(|l| l.contains("No space left") && !l.contains(".custody-")),
        "{}",
        run.stderr
    );
    let out = run.out();
    assert!(
        out.contains("INCOMPLETE")
            && out.contains(&format!("{} path(s) NOT restored", failed.len())),
        "{out}"
    );
    assert!(
        left.iter().all(|p| !p.contains(".custody-")),
        "temporary files left: {left:?}"
    );
}

/// An error with an OS cause names it once (the message already holds it).
#[test]
fn an_os_error_is_printed_once() {
    let sb = Sandbox::new();
    backed_up(&sb);
    let r = sb.run(&["restore", "latest", "--target", "/proc/1/no-such-place"]);
    assert_ne!(r.code, 0);
    assert_eq!(r.stderr.matches("os error").count(), 1, "{}", r.stderr);
}
