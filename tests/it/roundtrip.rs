//! Round trips through the built binary on the embedded default (local folder + local keyring).

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;

use crate::common::*;

#[test]
fn odd_files_round_trip() {
    let sb = Sandbox::new();
    sb.init();
    let src = sb.path("src");
    write(&src.join("empty"), b"");
    write(&src.join("one"), b"x");
    // Files of one chunk whose end is a hole when restored (zero blocks are not written).
    let mut zero_tail = b"head".to_vec();
    zero_tail.resize(12 << 10, 0);
    write(&src.join("zero-tail"), &zero_tail);
    write(&src.join("zeros"), &[0; 8192]);
    write(&src.join("many-chunks.bin"), &random_bytes(5 << 20, 1));
    write(
        &src.join("text.txt"),
        &b"all work and no play\n".repeat(50_000),
    );
    write(&src.join("ünïcödé 文件 😀.txt"), b"unicode");
    write(&src.join(" spaces and\nnewline "), b"odd");
    write(&src.join("-leading-dash"), b"dash");
    // The longest name a file may have: its temporary name while restoring must still fit.
    write(&src.join("n".repeat(255)), b"long name");
    let raw = std::ffi::OsStr::from_bytes(b"not-utf8-\xff\xfe");
    write(&src.join(raw), b"latin1 name");
    write(&src.join("deep/a/b/c/d/e/f.txt"), b"deep");
    std::fs::create_dir_all(src.join("empty-dir")).unwrap();
    std::os::unix::fs::symlink("one", src.join("link-rel")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", src.join("link-dangling")).unwrap();
    std::os::unix::fs::symlink("deep/a", src.join("link-dir")).unwrap();
    write(&src.join("exec.sh"), b"#!/bin/sh\n");
    std::fs::set_permissions(src.join("exec.sh"), std::fs::Permissions::from_mode(0o751)).unwrap();
    std::fs::set_permissions(src.join("one"), std::fs::Permissions::from_mode(0o600)).unwrap();
    // Sparse: 8 MiB hole with data at both ends.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(src.join("sparse.img")).unwrap();
        f.write_all(b"head").unwrap();
        f.seek(SeekFrom::Start(8 << 20)).unwrap();
        f.write_all(b"tail").unwrap();
    }

    // The raw document first: these field names are a contract with backup jobs.
    let raw = sb
        .run(&["--json", "backup", src.to_str().unwrap()])
        .ok()
        .json();
    for field in [
        "snapshot_id",
        "files_processed",
        "bytes_processed",
        "bytes_new",
        "bytes_added",
        "duration_secs",
        "files_skipped",
        "skipped",
    ] {
        assert!(raw.get(field).is_some(), "backup --json lacks {field}");
    }
    let v: custody::repo::backup::BackupOutput =
        serde_json::from_value(raw).expect("a backup report");
    assert_eq!(v.files_skipped, 0);
    assert!(v.bytes_processed > 5 << 20);

    let out = sb.path("out");
    let r: custody::repo::restore::RestoreOutput = sb
        .run(&[
            "--json",
            "restore",
            "latest",
            "--target",
            out.to_str().unwrap(),
        ])
        .ok()
        .report();
    assert_eq!(r.snapshot_id, v.snapshot_id);
    assert_eq!(r.files_restored, v.files_processed);
    assert_eq!(r.bytes_restored, v.bytes_processed);
    assert!(r.failed.is_empty(), "{r:?}");
    assert_same_tree(&src, &restored(&out, &src));
    // The restored sparse file keeps its holes.
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(restored(&out, &sb.path("src")).join("sparse.img")).unwrap();
    assert!(
        m.blocks() * 512 < 1 << 20,
        "sparse file restored dense: {} blocks",
        m.blocks()
    );

    sb.run(&["check", "--read-data"]).ok();
}

#[test]
fn stdin_dump_ls_and_snapshot_selection() {
    let sb = Sandbox::new();
    sb.init();
    let data = random_bytes(3 << 20, 7);
    let v = sb
        .run_stdin(
            &[
                "--json",
                "backup",
                "--stdin",
                "--stdin-name",
                "db.dump",
                "--tag",
                "db,nightly",
                "--host",
                "h1",
            ],
            &data,
        )
        .ok()
        .report::<custody::repo::backup::BackupOutput>();
    let id = v.snapshot_id.to_hex();
    let d = sb.run(&["dump", &id[..8], "db.dump"]).ok();
    assert!(d.stdout == data, "dump differs from stdin");

    write(&sb.path("files/a.txt"), b"aaa");
    sb.run(&["backup", sb.path("files").to_str().unwrap(), "--host", "h2"])
        .ok();

    // latest with filters, prefixes, ambiguity and unknown ids.
    let s = sb.run(&["--json", "snapshots"]).ok().json();
    assert_eq!(s.as_array().unwrap().len(), 2);
    let d = sb.run(&["dump", "latest", "db.dump", "--host", "h1"]).ok();
    assert!(d.stdout == data);
    let d = sb.run(&["dump", "latest", "db.dump", "--tag", "db"]).ok();
    assert!(d.stdout == data);
    // `--tag a,b` is two tags, as in restic.
    let tagged: custody::repo::snapshots::SnapshotTable = sb
        .run(&["--json", "snapshots", "--tag", "nightly,db"])
        .ok()
        .report();
    assert_eq!(tagged.0.len(), 1);
    assert_eq!(tagged.0[0].tags, vec!["db", "nightly"]);
    sb.run(&["dump", "latest", "files/a.txt"]).ok();
    sb.run(&["dump", "latest", "nope", "--host", "h2"])
        .code(EXIT_ERROR);
    sb.run(&["dump", "ffffffff", "db.dump"]).code(EXIT_ERROR);
    sb.run(&["dump", "not-hex", "db.dump"]).code(EXIT_USAGE);
    // A folder is dumped as a tar stream.
    let tar = sb.run(&["dump", "latest", "files", "--host", "h2"]).ok();
    assert!(String::from_utf8_lossy(&tar.stdout).contains("files/a.txt"));

    let files = sb.path("files").display().to_string();
    let ls = sb.run(&["ls", "latest", &files]).ok().out();
    assert_eq!(
        ls.lines().collect::<Vec<_>>(),
        vec![files.clone(), format!("{files}/a.txt")]
    );
    let ls = sb
        .run(&["--json", "ls", "latest", "files/a.txt"])
        .ok()
        .report::<Vec<custody::repo::snapshots::LsEntry>>();
    assert_eq!((ls[0].kind.as_str(), ls[0].size), ("file", 3), "{ls:?}");
}

#[test]
fn dedup_within_and_across_backups_and_unchanged_files_are_not_reread() {
    let sb = Sandbox::new();
    sb.init();
    let src = sb.path("src");
    let big = random_bytes(4 << 20, 3);
    write(&src.join("a.bin"), &big);
    write(&src.join("copy-of-a.bin"), &big);
    let v1 = sb.backup_json(&[src.to_str().unwrap()]);
    let new1 = v1.bytes_new;
    assert!(
        new1 < (4 << 20) + 100_000,
        "duplicate file stored twice: {new1}"
    );

    // Unchanged tree: nothing new, nothing re-read.
    let v2 = sb.backup_json(&[src.to_str().unwrap()]);
    assert_eq!(v2.bytes_new, 0);
    assert_eq!(v2.chunks_new, 0);
    assert_eq!(v2.parent, Some(v1.snapshot_id));

    // An edited copy in a new place shares most chunks (keyed CDC resynchronises).
    let mut edited = big.clone();
    edited[2 << 20] ^= 1;
    write(&sb.path("other/edited.bin"), &edited);
    let v3 = sb.backup_json(&[sb.path("other").to_str().unwrap()]);
    let new3 = v3.bytes_new;
    assert!(
        new3 < 3 << 20,
        "edited copy stored {new3} new bytes of 4 MiB"
    );
    assert!(new3 > 0);

    // --force re-reads but still dedups.
    let v4 = sb.backup_json(&["--force", src.to_str().unwrap()]);
    assert_eq!(v4.bytes_new, 0);
    assert_eq!(v4.parent, None);

    // Each snapshot restores.
    for (i, v) in [&v1, &v3].iter().enumerate() {
        let out = sb.path(&format!("out{i}"));
        sb.run(&[
            "restore",
            &v.snapshot_id.to_hex(),
            "--target",
            out.to_str().unwrap(),
        ])
        .ok();
    }
    let at = restored(&sb.path("out1"), &sb.path("other")).join("edited.bin");
    assert!(std::fs::read(at).unwrap() == edited);
    sb.run(&["check", "--read-data"]).ok();
}

#[test]
fn thousands_of_small_files_and_subset_restore() {
    let sb = Sandbox::new();
    sb.init();
    let src = sb.path("src");
    for d in 0..20 {
        for f in 0..150 {
            write(
                &src.join(format!("d{d:02}/f{f:03}.txt")),
                format!("file {d} {f}\n").as_bytes(),
            );
        }
    }
    let v = sb.backup_json(&[src.to_str().unwrap()]);
    assert_eq!(v.files_processed, 3000);
    let out = sb.path("out");
    sb.run(&["restore", "latest", "--target", out.to_str().unwrap()])
        .ok();
    assert_same_tree(&src, &restored(&out, &src));

    let sub = sb.path("sub");
    sb.run(&[
        "restore",
        "latest",
        "--target",
        sub.to_str().unwrap(),
        "--include",
        "src/d03",
        "--include",
        "/src/d07/f010.txt",
    ])
    .ok();
    assert_same_tree(&src.join("d03"), &restored(&sub, &src.join("d03")));
    assert_eq!(
        std::fs::read(restored(&sub, &sb.path("src")).join("d07/f010.txt")).unwrap(),
        b"file 7 10\n"
    );
    assert!(!restored(&sub, &sb.path("src"))
        .join("d07/f011.txt")
        .exists());
    assert!(!restored(&sub, &sb.path("src")).join("d04").exists());
    // An include that matches nothing is a usage error, not an empty restore.
    let none = sb.path("none");
    let r = sb
        .run(&[
            "restore",
            "latest",
            "--target",
            none.to_str().unwrap(),
            "--include",
            "src/d99",
        ])
        .code(EXIT_USAGE);
    assert!(
        r.stderr.contains("no such path in snapshot"),
        "{}",
        r.stderr
    );
}

/// Restore plans and writes its files in batches of 32,768 (so that its memory does not grow
/// with the snapshot's file count), two restored at once: a tree of three batches' files
/// (32,768 + 32,768 + 466), with a file of many chunks in the last and a hard link to a file
/// of the first (links are made once every batch is done), comes back whole and verified,
/// with no temporary file left behind.
#[test]
fn a_restore_of_more_files_than_a_batch_is_whole() {
    use std::os::unix::fs::MetadataExt;
    let sb = Sandbox::new();
    sb.init();
    let src = sb.path("src");
    let (dirs, per_dir) = (330, 200);
    for d in 0..dirs {
        for f in 0..per_dir {
            write(
                &src.join(format!("d{d:03}/f{f:03}")),
                format!("file {d} {f}\n").repeat(1 + f % 7).as_bytes(),
            );
        }
    }
    write(&src.join("z/big.bin"), &random_bytes(6 << 20, 3));
    std::fs::hard_link(src.join("d000/f000"), src.join("z/link")).unwrap();
    let files = dirs * per_dir + 2;
    let v = sb.backup_json(&[src.to_str().unwrap()]);
    assert_eq!(v.files_processed, files as u64);
    let out = sb.path("out");
    let r: custody::repo::restore::RestoreOutput = sb
        .run(&[
            "--json",
            "restore",
            "latest",
            "--verify",
            "--target",
            out.to_str().unwrap(),
        ])
        .ok()
        .report();
    assert_eq!(r.files_restored, files as u64);
    assert_eq!(r.verified, files as u64 - 1, "the link is not read twice");
    assert!(r.failed.is_empty(), "{r:?}");
    assert_same_tree(&src, &restored(&out, &src));
    let at = restored(&out, &src);
    let ino = |p: &str| std::fs::metadata(at.join(p)).unwrap().ino();
    assert_eq!(ino("d000/f000"), ino("z/link"));
}

/// Sources keep their full paths (docs/FORMAT.md §8): two that end in the same name coexist,
/// every command takes the original path, and restore puts each under the target at its path.
#[test]
fn two_paths_and_name_clash() {
    let sb = Sandbox::new();
    sb.init();
    write(&sb.path("a/x/file"), b"1");
    write(&sb.path("b/x/file"), b"2");
    write(&sb.path("a/y"), b"3");
    let (ax, bx) = (sb.path("a/x"), sb.path("b/x"));
    let (ax, bx) = (ax.to_str().unwrap(), bx.to_str().unwrap());
    sb.run(&["backup", ax, bx]).ok();
    let base = sb.path("a").parent().unwrap().display().to_string();
    let ls = sb.run(&["ls", "latest", &base]).ok().out();
    let want: Vec<String> = ["", "/a", "/a/x", "/a/x/file", "/b", "/b/x", "/b/x/file"]
        .iter()
        .map(|p| format!("{base}{p}"))
        .collect();
    assert_eq!(ls.lines().collect::<Vec<_>>(), want);
    // Every folder above the sources is listed from the root.
    let all = sb.run(&["ls", "latest"]).ok().out();
    assert_eq!(all.lines().next(), Some("/tmp"), "{all}");
    // The original path, and a path from the source's name when only one source has it.
    assert_eq!(
        sb.run(&["dump", "latest", &format!("{bx}/file")])
            .ok()
            .stdout,
        b"2"
    );
    let amb = sb.run(&["dump", "latest", "x/file"]).code(EXIT_USAGE);
    assert!(amb.stderr.contains("ambiguous"), "{}", amb.stderr);
    let out = sb.path("out");
    let o = out.to_str().unwrap();
    sb.run(&["restore", "latest", "--target", o, "--include", ax])
        .ok();
    assert_eq!(
        std::fs::read(restored(&out, &sb.path("a/x/file"))).unwrap(),
        b"1"
    );
    assert!(!restored(&out, &sb.path("b")).exists());
    sb.run(&["restore", "latest", "--target", o]).ok();
    assert_eq!(
        std::fs::read(restored(&out, &sb.path("b/x/file"))).unwrap(),
        b"2"
    );
    // A source inside another is refused: the outer one holds it.
    let nested = sb.run(&["backup", sb.path("a").to_str().unwrap(), ax]);
    nested.code(EXIT_USAGE);
    sb.run(&[
        "backup",
        sb.path("a/x").to_str().unwrap(),
        sb.path("a/y").to_str().unwrap(),
    ])
    .ok();
    let ls = sb.run(&["ls", "latest", "x"]).ok().out();
    assert_eq!(
        ls.lines().collect::<Vec<_>>(),
        [ax.to_string(), format!("{ax}/file")]
    );
    sb.run(&["backup", sb.path("missing").to_str().unwrap()])
        .code(EXIT_ERROR);
    // One missing source of two: the other is backed up, the missing one named (exit 5).
    let r = sb
        .run(&[
            "backup",
            sb.path("a/x").to_str().unwrap(),
            sb.path("missing").to_str().unwrap(),
        ])
        .code(EXIT_INCOMPLETE);
    assert!(r.stderr.contains("missing"), "{}", r.stderr);
    let ls = sb.run(&["ls", "latest", "x"]).ok().out();
    assert_eq!(
        ls.lines().collect::<Vec<_>>(),
        [ax.to_string(), format!("{ax}/file")]
    );
    // A trailing slash or a `.` part names the same source: same recorded path, and the
    // second backup finds the first as its parent.
    let plain = sb.path("a/x");
    let slashed = format!("{}/./", plain.display());
    let first = sb.backup_json(&[plain.to_str().unwrap()]);
    let second = sb.backup_json(&[slashed.as_str()]);
    assert_eq!(second.parent, Some(first.snapshot_id));
    let snaps: custody::repo::snapshots::SnapshotTable =
        sb.run(&["--json", "snapshots"]).ok().report();
    let last = snaps.0.iter().find(|s| s.id == second.snapshot_id).unwrap();
    assert_eq!(last.paths, vec![plain.display().to_string()]);
}

#[test]
fn unreadable_file_is_skipped_and_reported() {
    let sb = Sandbox::new();
    let is_root = unsafe_geteuid() == 0;
    let src = sb.path("src");
    write(&src.join("ok.txt"), b"fine");
    write(&src.join("secret.txt"), b"no");
    std::fs::set_permissions(
        src.join("secret.txt"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    let run = |args: &[&str]| -> Run {
        if !is_root {
            return sb.run(args);
        }
        // Root reads everything: run as nobody, in a sandbox nobody owns.
        let c = sb.cmd(args);
        // A copy of the binary inside the sandbox: the checkout itself may sit under a folder
        // (such as /root) that nobody cannot traverse.
        let prog = sb.path("custody-bin");
        if !prog.exists() {
            std::fs::copy(c.get_program(), &prog).unwrap();
            std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut wrapped = std::process::Command::new("setpriv");
        wrapped
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(prog)
            .args(c.get_args());
        for (k, v) in c.get_envs() {
            if let Some(v) = v {
                wrapped.env(k, v);
            }
        }
        let o = wrapped.output().expect("setpriv");
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: o.stdout,
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    };
    if is_root {
        std::process::Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(sb.dir.path())
            .status()
            .unwrap();
        std::fs::set_permissions(sb.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let p = sb.dir.path().parent().unwrap();
        let mode = std::fs::metadata(p).unwrap().permissions().mode();
        assert!(
            mode & 0o001 != 0,
            "temp dir parent not traversable by nobody"
        );
    }
    run(&["init", "--pack-size-mib", "1"]).ok();
    let r = run(&["--json", "backup", src.to_str().unwrap()]).code(EXIT_INCOMPLETE);
    let v: custody::repo::backup::BackupOutput = r.report();
    assert_eq!(v.files_skipped, 1);
    assert!(v.skipped[0].path.ends_with("secret.txt"), "{v:?}");
    assert!(r.stderr.contains("could not be read"));
    let ls = run(&["ls", "latest"]).ok().out();
    assert!(ls.contains("/src/ok.txt") && !ls.contains("secret"));
}

fn unsafe_geteuid() -> u32 {
    // Avoid a libc dependency: the owner of a file we just created is our effective uid.
    use std::os::unix::fs::MetadataExt;
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().metadata().unwrap().uid()
}

#[test]
fn usage_errors_and_missing_repository() {
    let sb = Sandbox::new();
    sb.run(&["snapshots"]).code(EXIT_ERROR);
    sb.run(&["frobnicate"]).code(EXIT_USAGE);
    sb.run(&["backup"]).code(EXIT_USAGE);
    sb.init();
    sb.run(&["init"]).code(EXIT_ERROR);
    sb.run(&["check", "--read-data-subset", "5/3"])
        .code(EXIT_USAGE);
    sb.run(&["--key-service", "nosuch:x", "snapshots"])
        .code(EXIT_USAGE);
}

#[test]
fn restore_never_writes_through_a_symlink_in_the_target() {
    let sb = Sandbox::new();
    sb.init();
    write(&sb.path("src/inner/file"), b"payload");
    sb.run(&["backup", sb.path("src").to_str().unwrap()]).ok();
    let outside = sb.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let target = sb.path("target");
    let at = restored(&target, &sb.path("src"));
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    // A link where the snapshot has a folder: restore replaces the link, never follows it.
    std::os::unix::fs::symlink(&outside, &at).unwrap();
    sb.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    assert!(
        std::fs::read_dir(&outside).unwrap().next().is_none(),
        "wrote outside the target"
    );
    assert!(!std::fs::symlink_metadata(&at)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::read(restored(&target, &sb.path("src")).join("inner/file")).unwrap(),
        b"payload"
    );
}

/// Setuid and setgid bits come back only with the owner: as root both are restored; as
/// another user neither, and the summary says so once.
#[test]
fn setuid_and_setgid_bits_come_back_only_with_the_owner() {
    let sb = Sandbox::new();
    sb.init();
    write(&sb.path("src/tool"), b"#!/bin/sh\n");
    std::fs::set_permissions(sb.path("src/tool"), std::fs::Permissions::from_mode(0o6755)).unwrap();
    sb.run(&["backup", sb.path("src").to_str().unwrap()]).ok();
    let ls = sb.run(&["ls", "-l", "latest", "src/tool"]).ok().out();
    assert!(ls.contains("6755"), "the snapshot keeps the bits: {ls}");
    let out = sb.path("out");
    let run = sb
        .run(&["restore", "latest", "--target", out.to_str().unwrap()])
        .ok();
    let meta = std::fs::metadata(restored(&out, &sb.path("src")).join("tool")).unwrap();
    let mode = meta.permissions().mode() & 0o7777;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let src = std::fs::metadata(sb.path("src/tool")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            (mode, meta.uid(), meta.gid()),
            (0o6755, src.uid(), src.gid())
        );
    } else {
        assert_eq!(
            mode, 0o755,
            "restore must not create setuid/setgid files it does not own"
        );
        assert!(
            run.out().contains("setuid/setgid bits of 1 files"),
            "{}",
            run.out()
        );
    }
}

#[test]
fn edit_that_keeps_size_and_mtime_is_still_backed_up() {
    let sb = Sandbox::new();
    sb.init();
    let f = sb.path("src/doc.txt");
    write(&f, b"version one of the document");
    sb.backup_json(&[sb.path("src").to_str().unwrap()]);
    let mtime = filetime::FileTime::from_last_modification_time(&std::fs::metadata(&f).unwrap());
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&f, b"version two of the document").unwrap();
    filetime::set_file_mtime(&f, mtime).unwrap(); // as `touch -r` or `rsync -t` would
    let v = sb.backup_json(&[sb.path("src").to_str().unwrap()]);
    assert!(v.parent.is_some(), "{v:?}");
    assert!(v.chunks_new >= 1, "the edit was missed: {v}");
    assert_eq!(
        sb.run(&["dump", "latest", "src/doc.txt"]).ok().stdout,
        b"version two of the document"
    );
}

#[test]
fn tree_cache_holds_ciphertext_and_survives_damage() {
    let sb = Sandbox::new();
    let cache = sb.path("cache");
    let run = |args: &[&str]| {
        let o = sb
            .cmd(args)
            .env("CUSTODY_CACHE_DIR", &cache)
            .output()
            .unwrap();
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: o.stdout,
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    };
    run(&["init"]).ok();
    write(&sb.path("src/dir/secret-name.txt"), b"cached listing");
    run(&["backup", sb.path("src").to_str().unwrap()]).ok();
    let trees: Vec<_> = std::fs::read_dir(
        cache
            .read_dir()
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
            .join("trees"),
    )
    .unwrap()
    .map(|e| e.unwrap().path())
    .collect();
    // The root, the folders above `src`, `src` and `dir`.
    let above = sb.path("src").ancestors().count() - 1;
    assert_eq!(trees.len(), above + 2, "every tree written at pack time");
    for t in &trees {
        let b = std::fs::read(t).unwrap();
        assert!(
            !String::from_utf8_lossy(&b).contains("secret-name"),
            "plaintext in the cache"
        );
    }
    // A damaged cache entry is dropped and the tree fetched again: results stay correct.
    let mut b = std::fs::read(&trees[0]).unwrap();
    b[20] ^= 1;
    std::fs::write(&trees[0], b).unwrap();
    let ls = run(&["ls", "latest"]).ok().out();
    assert!(ls.contains("/src/dir/secret-name.txt"), "{ls}");
    let v = run(&["--json", "backup", sb.path("src").to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(v["chunks_new"], 0, "{v}");
}

#[test]
fn writer_recognises_unchanged_files_from_its_local_parent_cache() {
    let sb = Sandbox::new();
    sb.init();
    let writer = sb.export_writer("writer-keyring", &[]);
    let ks = format!("local:{}", writer.display());
    let cache = sb.path("cache");
    for i in 0..20 {
        write(
            &sb.path(&format!("src/d{}/private-name-{i}.bin", i % 4)),
            &random_bytes(30_000 + i * 1000, i as u64),
        );
    }
    let src = sb.path("src");
    let backup = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "--key-service",
            &ks,
            "--json",
            "backup",
            src.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = sb
            .cmd(&args)
            .env("CUSTODY_CACHE_DIR", &cache)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    assert_eq!(backup(&[])["files_unchanged"], 0);
    // The writer cannot read the snapshot it wrote, but its cache recognises every file.
    let v = backup(&[]);
    assert_eq!(v["files_unchanged"], 20, "{v}");
    assert_eq!(v["chunks_new"], 0, "{v}");
    // One file changed: only that one is read.
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(
        &sb.path("src/d1/private-name-5.bin"),
        b"changed by the test",
    );
    let v = backup(&[]);
    assert_eq!(v["files_unchanged"], 19, "{v}");
    let out = sb.path("out");
    sb.run(&["restore", "latest", "--target", out.to_str().unwrap()])
        .ok();
    assert_same_tree(&src, &restored(&out, &src));
    // The cache holds no plaintext names, and a damaged cache is ignored, never trusted.
    let trees = cached_trees(&cache);
    assert!(!trees.is_empty());
    for t in &trees {
        let mut b = std::fs::read(t).unwrap();
        assert!(
            !String::from_utf8_lossy(&b).contains("private-name"),
            "plaintext in the cache"
        );
        let n = b.len() - 1;
        b[n] ^= 1;
        std::fs::write(t, b).unwrap();
    }
    assert_eq!(backup(&[])["files_unchanged"], 0);
    assert_eq!(backup(&["--force"])["files_unchanged"], 0);
    assert_eq!(backup(&[])["files_unchanged"], 20);
}

/// The sealed trees under a local parent cache folder.
fn cached_trees(cache: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut dirs = vec![cache.to_path_buf()];
    let mut trees = Vec::new();
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.parent().unwrap().ends_with("trees") {
                trees.push(p);
            }
        }
    }
    trees
}

/// A key holder's backup takes its parent's folder listings from its local parent cache when
/// the cache holds that parent's root (no session key needed), and from the repository when
/// the cache is damaged or of another backup: every unchanged file is still recognised.
#[test]
fn owner_uses_its_local_parent_cache_and_the_repository_when_the_cache_fails() {
    let sb = Sandbox::new();
    sb.init();
    let cache = sb.path("cache");
    let other_cache = sb.path("other-cache");
    for i in 0..20 {
        write(
            &sb.path(&format!("src/d{}/f-{i}.bin", i % 4)),
            &random_bytes(30_000 + i * 1000, 100 + i as u64),
        );
    }
    let src = sb.path("src");
    let backup = |cache: &std::path::Path| -> serde_json::Value {
        let o = sb
            .cmd(&["--json", "backup", src.to_str().unwrap()])
            .env("CUSTODY_CACHE_DIR", cache)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    assert_eq!(backup(&cache)["files_unchanged"], 0);
    let v = backup(&cache);
    assert_eq!(v["files_unchanged"], 20, "{v}");
    assert_eq!(v["chunks_new"], 0, "{v}");
    // A cache that never saw this parent: the repository's listings.
    assert_eq!(backup(&other_cache)["files_unchanged"], 20);
    // Every cached tree damaged: the repository's listings again, never nothing.
    let trees = cached_trees(&cache);
    assert!(!trees.is_empty());
    for t in &trees {
        let mut b = std::fs::read(t).unwrap();
        let n = b.len() - 1;
        b[n] ^= 1;
        std::fs::write(t, b).unwrap();
    }
    assert_eq!(backup(&cache)["files_unchanged"], 20);
    // One file changed: only that one is read, and the restore is the tree.
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(&sb.path("src/d1/f-5.bin"), b"changed by the test");
    assert_eq!(backup(&cache)["files_unchanged"], 19);
    let out = sb.path("out");
    sb.run(&["restore", "latest", "--target", out.to_str().unwrap()])
        .ok();
    assert_same_tree(&src, &restored(&out, &src));
}

/// A reader that closes the pipe early (`custody ls latest | head`) ends the command quietly
/// with exit 0: no panic, no error message.
#[test]
fn a_closed_stdout_ends_listings_quietly() {
    let sb = Sandbox::new();
    sb.init();
    let src = sb.path("src");
    for i in 0..50 {
        write(&src.join(format!("f{i:02}")), &random_bytes(100, i));
    }
    sb.run(&["backup", src.to_str().unwrap()]).ok();
    sb.run(&["backup", src.to_str().unwrap()]).ok();
    for args in [
        &["ls", "latest"][..],
        &["ls", "-l", "latest"],
        &["--json", "snapshots"],
        &["snapshots"],
        &["dump", "latest", "src/f00"],
        &["--json", "ls", "latest"],
    ] {
        let mut child = sb
            .cmd(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The read end closes before the command has written anything.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

/// Repository strings in another tool's spelling are refused with a hint (exit 2) instead of
/// becoming a local folder of that name; restic's `s3:http://host/bucket` gets custody's.
#[test]
fn repository_strings_of_other_tools_are_refused() {
    let sb = Sandbox::new();
    let cwd = sb.path("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    for repo in [
        "sftp:user@host:/srv/repo",
        "b2:bucket:path",
        "rest:http://127.0.0.1:8000/",
        "s3:http://127.0.0.1:9000/bucket/prefix",
        "azure:container:/",
    ] {
        let out = sb
            .cmd(&["--repo", repo, "init"])
            .current_dir(&cwd)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(EXIT_USAGE), "{repo}: {stderr}");
        if repo.starts_with("s3:") {
            assert!(
                stderr.contains("s3://bucket/prefix")
                    && stderr.contains("AWS_ENDPOINT_URL=http://127.0.0.1:9000"),
                "{stderr}"
            );
        } else {
            assert!(stderr.contains("unsupported repository"), "{stderr}");
        }
    }
    assert_eq!(
        std::fs::read_dir(&cwd).unwrap().count(),
        0,
        "nothing created"
    );
    // A local folder with a colon in its name is still possible, spelled as a path.
    sb.run(&["--repo", sb.path("a:b").to_str().unwrap(), "init"])
        .ok();
}

/// Ctrl-C during a backup says what it interrupted and that nothing was committed (exit 130),
/// and the repository is left consistent.
#[test]
fn an_interrupted_backup_says_so_and_commits_nothing() {
    use std::io::Write;
    let sb = Sandbox::new();
    sb.init();
    let mut child = sb
        .cmd(&["backup", "--stdin", "--stdin-name", "stream"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(&random_bytes(2 << 20, 3)).unwrap();
    // The backup now waits for more input; the handler is long installed.
    std::thread::sleep(std::time::Duration::from_millis(500));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    drop(input);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted: backup stopped; nothing of this run was committed"),
        "{stderr}"
    );
    let snaps: custody::repo::snapshots::SnapshotTable =
        sb.run(&["--json", "snapshots"]).ok().report();
    assert!(snaps.0.is_empty());
    sb.run(&["check"]).ok();
}

/// Names of one file (hard links) are restored as names of one file again, also across
/// folders; a file with one name is not linked to anything.
#[test]
fn hard_links_are_restored_as_links() {
    use std::os::unix::fs::MetadataExt;
    let sb = Sandbox::new();
    sb.init();
    let src = sb.path("src");
    write(&src.join("a"), b"one file, three names");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::hard_link(src.join("a"), src.join("b")).unwrap();
    std::fs::hard_link(src.join("a"), src.join("sub/c")).unwrap();
    write(&src.join("alone"), b"one file, three names");
    sb.run(&["backup", src.to_str().unwrap()]).ok();
    let out = sb.path("out");
    let run = sb
        .run(&[
            "--json",
            "restore",
            "latest",
            "--target",
            out.to_str().unwrap(),
        ])
        .ok();
    assert_eq!(run.json()["files_restored"], 4, "{}", run.out());
    let ino = |p: &str| std::fs::metadata(restored(&out, &src).join(p)).unwrap();
    assert_eq!(ino("a").ino(), ino("b").ino());
    assert_eq!(ino("a").ino(), ino("sub/c").ino());
    assert_eq!(ino("a").nlink(), 3);
    assert_ne!(ino("alone").ino(), ino("a").ino());
    assert_eq!(
        std::fs::read(restored(&out, &sb.path("src")).join("sub/c")).unwrap(),
        b"one file, three names"
    );
    // Restoring again over the restored tree keeps them linked.
    sb.run(&["restore", "latest", "--target", out.to_str().unwrap()])
        .ok();
    assert_eq!(ino("a").nlink(), 3);
}

/// A rerun of restore removes the temporary files an interrupted one left (and only those).
#[test]
fn a_rerun_of_restore_cleans_an_interrupted_ones_leftovers() {
    let sb = Sandbox::new();
    sb.init();
    let src = sb.path("src");
    write(&src.join("sub/a"), b"a");
    sb.run(&["backup", src.to_str().unwrap()]).ok();
    let out = sb.path("out");
    sb.run(&["restore", "latest", "--target", out.to_str().unwrap()])
        .ok();
    let litter = restored(&out, &sb.path("src")).join("sub/.a.custody-0123456789ab-3");
    let top = restored(&out, &src).with_file_name(".src.custody-00000000abcd-0");
    let theirs = restored(&out, &sb.path("src")).join("sub/.a.custody-notours");
    for f in [&litter, &top, &theirs] {
        write(f, b"partial");
    }
    let run = sb
        .run(&[
            "--json",
            "restore",
            "latest",
            "--target",
            out.to_str().unwrap(),
        ])
        .ok();
    assert_eq!(run.json()["leftovers_removed"], 2, "{}", run.out());
    assert!(!litter.exists() && !top.exists() && theirs.exists());
}

/// Completions and the man page come from the command-line definition (#18): every shell's
/// script knows the commands and their flags, the man page is roff naming them.
#[test]
fn completions_and_man_page_are_generated() {
    let sb = Sandbox::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = sb.run(&["completions", shell]).ok().out();
        assert!(
            out.contains("restore") && out.contains("overwrite") && out.contains("audit"),
            "{shell}: {}",
            &out[..out.len().min(300)]
        );
    }
    sb.run(&["completions", "tcsh"]).code(EXIT_USAGE);
    let man = sb.run(&["man"]).ok().out();
    assert!(
        man.contains(".TH custody 1") && man.contains("restore"),
        "{}",
        &man[..300]
    );
}

/// `backup -v` lists every file it reads because it is new or changed, as restic does, and
/// not the unchanged ones.
#[test]
fn backup_verbose_lists_new_and_modified_files() {
    let sb = Sandbox::new();
    sb.init();
    let src = sb.path("src");
    write(&src.join("a.txt"), b"one");
    write(&src.join("sub/b.txt"), b"two");
    let first = sb.run(&["backup", "-v", src.to_str().unwrap()]).ok().out();
    for f in ["a.txt", "sub/b.txt"] {
        let line = format!("new      {}", src.join(f).display());
        assert!(first.lines().any(|l| l == line), "{first}");
    }
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(&src.join("a.txt"), b"one, changed");
    write(&src.join("c.txt"), b"three");
    let second = sb.run(&["backup", "-v", src.to_str().unwrap()]).ok().out();
    let listed: Vec<&str> = second
        .lines()
        .filter(|l| l.starts_with("new") || l.starts_with("modified"))
        .collect();
    assert_eq!(
        listed,
        vec![
            format!("modified {}", src.join("a.txt").display()),
            format!("new      {}", src.join("c.txt").display()),
        ],
        "{second}"
    );
}

/// `find` by name and by path across snapshots, and `diff` between two snapshots: added,
/// removed, modified, type changed and metadata-only changes, each named once.
#[test]
fn find_and_diff_across_snapshots() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    sb.init();
    let src = sb.path("src");
    write(&src.join("etc/app.conf"), b"port = 1");
    write(&src.join("etc/keep.txt"), b"same");
    write(&src.join("etc/mode.txt"), b"mode");
    write(&src.join("old.log"), b"gone later");
    write(&src.join("kind"), b"a file first");
    let snap = |sb: &Sandbox| {
        sb.run(&["--json", "backup", src.to_str().unwrap()])
            .ok()
            .json()["snapshot_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first = snap(&sb);
    write(&src.join("etc/app.conf"), b"port = 2, longer");
    std::fs::remove_file(src.join("old.log")).unwrap();
    write(&src.join("new/deep/x.conf"), b"new");
    std::fs::set_permissions(
        src.join("etc/mode.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::remove_file(src.join("kind")).unwrap();
    std::fs::create_dir(src.join("kind")).unwrap();
    let second = snap(&sb);

    let hits = sb.run(&["--json", "find", "*.conf"]).ok().json();
    let paths: Vec<(String, String)> = hits
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["snapshot"].as_str().unwrap()[..8].to_string(),
                h["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let p = |rel: &str| format!("{}/{rel}", src.display());
    assert_eq!(
        paths,
        vec![
            (first[..8].to_string(), p("etc/app.conf")),
            (second[..8].to_string(), p("etc/app.conf")),
            (second[..8].to_string(), p("new/deep/x.conf")),
        ],
        "{hits}"
    );
    let one = sb
        .run(&["--json", "find", "--snapshot", &first, "-i", "OLD.LOG"])
        .ok()
        .json();
    assert_eq!(one.as_array().unwrap().len(), 1, "{one}");
    let by_path = sb.run(&["--json", "find", "deep/*.conf"]).ok().json();
    assert_eq!(by_path.as_array().unwrap().len(), 1, "{by_path}");

    let d = sb.run(&["--json", "diff", &first, &second]).ok().json();
    let changes: Vec<(String, String)> = d["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["change"].as_str().unwrap().to_string(),
                c["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for want in [
        ("modified", p("etc/app.conf")),
        ("removed", p("old.log")),
        ("added", p("new")),
        ("added", p("new/deep/x.conf")),
        ("metadata-only", p("etc/mode.txt")),
        ("type-changed", p("kind")),
    ] {
        assert!(
            changes.contains(&(want.0.to_string(), want.1.clone())),
            "{want:?} not in {changes:?}"
        );
    }
    assert!(
        !changes.iter().any(|c| c.1 == p("etc/keep.txt")),
        "{changes:?}"
    );
    assert_eq!(d["summary"]["removed"], 1, "{d}");
    let text = sb.run(&["diff", &first, &second]).ok().out();
    assert!(
        text.contains(&format!("M    {}", p("etc/app.conf"))),
        "{text}"
    );
    assert!(text.contains("1 removed"), "{text}");
}

/// `dump` of a folder writes a tar stream that `tar -x` unpacks into the same tree (content,
/// folders, symlinks, modes), and `dump` of the snapshot root (`/`) holds every source.
#[test]
fn dump_of_a_folder_is_a_tar_stream() {
    let sb = Sandbox::new();
    sb.init();
    let src = sb.path("src");
    write(&src.join("a.bin"), &random_bytes(700_000, 3));
    write(&src.join("sub/deeper/b.txt"), b"inside");
    write(
        &src.join(format!("{}.txt", "long-name-".repeat(12))),
        b"a name past 100 bytes",
    );
    std::os::unix::fs::symlink("sub/deeper/b.txt", src.join("link")).unwrap();
    sb.run(&["backup", src.to_str().unwrap()]).ok();
    let r = sb.run(&["dump", "latest", src.to_str().unwrap()]).ok();
    let tarball = sb.path("out.tar");
    std::fs::write(&tarball, &r.stdout).unwrap();
    let out = sb.path("untarred");
    std::fs::create_dir_all(&out).unwrap();
    let status = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&tarball)
        .arg("-C")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    // tar keeps whole seconds only: content, kinds and targets are compared.
    let got = out.join("src");
    for rel in [
        "a.bin",
        "sub/deeper/b.txt",
        &format!("{}.txt", "long-name-".repeat(12)),
    ] {
        assert_eq!(
            std::fs::read(src.join(rel)).unwrap(),
            std::fs::read(got.join(rel)).unwrap(),
            "{rel}"
        );
    }
    assert_eq!(
        std::fs::read_link(got.join("link")).unwrap(),
        std::path::PathBuf::from("sub/deeper/b.txt")
    );
    let mtime = |p: &std::path::Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let secs =
        |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(
        secs(mtime(&src.join("a.bin"))),
        secs(mtime(&got.join("a.bin")))
    );
    let whole = sb.run(&["dump", "latest", "/"]).ok();
    assert!(whole.stdout.len() > 700_000);
    assert!(
        String::from_utf8_lossy(&whole.stdout).contains("deeper/b.txt"),
        "the root dump holds the sources"
    );
}

/// `init` says whether the keyring it made is protected; `key passwd` seals it with a new
/// passphrase, after which the old way in no longer opens it, and can remove it again.
#[test]
fn key_passwd_seals_and_unseals_the_keyring() {
    let sb = Sandbox::new();
    let init = sb.run(&["init"]).ok().out();
    assert!(init.contains("NOT protected by a passphrase"), "{init}");
    write(&sb.path("src/a.txt"), b"sealed later");
    sb.run(&["backup", sb.path("src").to_str().unwrap()]).ok();
    let pass = sb.path("pass");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    let p = pass.to_str().unwrap();
    sb.run(&["key", "passwd", "--new-passphrase-file", p]).ok();
    let r = sb.run(&["snapshots"]);
    assert_ne!(
        r.code, EXIT_OK,
        "a sealed keyring opened without its passphrase"
    );
    assert!(r.stderr.contains("passphrase"), "{}", r.stderr);
    sb.run(&["--passphrase-file", p, "snapshots"]).ok();
    let wrong = sb.path("wrong");
    std::fs::write(&wrong, "nope\n").unwrap();
    sb.run(&["--passphrase-file", wrong.to_str().unwrap(), "snapshots"])
        .code(EXIT_KEY_SERVICE);
    sb.run(&["--passphrase-file", p, "key", "passwd", "--no-passphrase"])
        .ok();
    sb.run(&["snapshots"]).ok();
    let sealed = sb
        .run_env(
            &[("CUSTODY_KEYRING_PASSPHRASE", "at init")],
            &["--repo", sb.path("r2").to_str().unwrap(), "init"],
        )
        .ok()
        .out();
    assert!(sealed.contains("sealed with your passphrase"), "{sealed}");
}

/// `ls` prints as it walks, in the order of the paths as strings, also where a folder's name
/// is a prefix of its siblings' (`a/…` sorts after `a-c` and `a.b`, before `a0`); `--json`
/// is one array of the same rows.
#[test]
fn ls_lists_in_path_order_as_it_walks() {
    let sb = Sandbox::new();
    sb.init();
    let src = sb.path("t");
    for f in [
        "a/f",
        "a/sub/g",
        "a-c/h",
        "a.b/x/i",
        "ab/z/j",
        "b c/k",
        "a0",
        "A",
        "_u",
        "a/sub/h h",
    ] {
        write(&src.join(f), f.as_bytes());
    }
    std::fs::create_dir_all(src.join("empty")).unwrap();
    sb.backup_json(&[src.to_str().unwrap()]);
    let root = src.display().to_string();
    let text = sb.run(&["ls", "latest", &root]).ok().out();
    let lines: Vec<&str> = text.lines().collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted);
    let rel: Vec<&str> = lines
        .iter()
        .map(|l| l.strip_prefix(root.as_str()).unwrap())
        .collect();
    assert_eq!(
        rel,
        [
            "",
            "/A",
            "/_u",
            "/a",
            "/a-c",
            "/a-c/h",
            "/a.b",
            "/a.b/x",
            "/a.b/x/i",
            "/a/f",
            "/a/sub",
            "/a/sub/g",
            "/a/sub/h h",
            "/a0",
            "/ab",
            "/ab/z",
            "/ab/z/j",
            "/b c",
            "/b c/k",
            "/empty",
        ]
    );
    let json: Vec<custody::repo::snapshots::LsEntry> =
        sb.run(&["--json", "ls", "latest", &root]).ok().report();
    let paths: Vec<&str> = json.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, lines);
    assert_eq!(json[3].kind, "dir");
    assert_eq!((json[5].kind.as_str(), json[5].size), ("file", 5));
}

/// A restore in several batches reads no byte of a pack twice when the snapshot was backed
/// up in the order it is restored: a batch is not cut inside the packs the walk is still in
/// (blob order in a pack is shuffled, so each batch would read such a pack whole).
#[test]
fn batches_do_not_read_a_pack_twice() {
    let sb = Sandbox::new();
    sb.run(&["init", "--pack-size-mib", "1"]).ok();
    let src = sb.path("src");
    let (dirs, per_dir) = (200, 200);
    for d in 0..dirs {
        for f in 0..per_dir {
            // Not compressible: 40,000 files fill about 40 packs.
            let body = random_bytes(1000, (d * per_dir + f) as u64);
            write(&src.join(format!("d{d:03}/f{f:03}")), &body);
        }
    }
    // One packer: packs hold runs of files in walk order (with one per core, the cut can
    // fall where a pack has no file among the batch's last; the restore then still reads it
    // from both batches, and this test would depend on the core count).
    sb.backup_json(&["--workers", "1", src.to_str().unwrap()]);
    let out = sb.path("out");
    let r = sb
        .run_env(
            &[("CUSTODY_LOG", "custody::repo::restore=debug")],
            &["restore", "latest", "--target", out.to_str().unwrap()],
        )
        .ok();
    assert_same_tree(&src, &restored(&out, &src));
    // pack -> [start, end) of each span read
    let mut reads: std::collections::HashMap<String, Vec<(u64, u64)>> = Default::default();
    for line in r.stderr.lines().filter(|l| l.contains("pack span read")) {
        let field = |name: &str| {
            let at = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
            line[at..].split(' ').next().unwrap().to_string()
        };
        let start: u64 = field("start").parse().unwrap();
        let length: u64 = field("length").parse().unwrap();
        reads
            .entry(field("pack"))
            .or_default()
            .push((start, start + length));
    }
    assert!(reads.len() >= 30, "{} packs read", reads.len());
    for (pack, mut spans) in reads {
        spans.sort();
        for w in spans.windows(2) {
            assert!(w[0].1 <= w[1].0, "pack {pack} read twice: {spans:?}");
        }
    }
}
