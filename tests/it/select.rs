//! Choosing what to back up (issue #14): restic's `--exclude` family, cache folders, marker
//! files, a size limit, `--one-file-system` and the three `--files-from` forms, each checked
//! through what `ls` shows of the snapshot.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::common::*;
use custody::repo::snapshots::LsEntry;

/// The snapshot's paths below the source folder `src` (relative, sorted), listed by the
/// source's full path as the snapshot keeps it.
fn listed(sb: &Sandbox, src: &Path) -> Vec<String> {
    let at = src.to_str().unwrap();
    let v: Vec<LsEntry> = sb.run(&["--json", "ls", "latest", at]).ok().report();
    let mut out: Vec<String> = v
        .into_iter()
        .filter_map(|e| e.path.strip_prefix(&format!("{at}/")).map(str::to_string))
        .collect();
    out.sort();
    out
}

fn tree(sb: &Sandbox, files: &[(&str, &[u8])]) -> std::path::PathBuf {
    let src = sb.path("src");
    for (rel, data) in files {
        write(&src.join(rel), data);
    }
    src
}

#[test]
fn exclude_patterns_follow_restic() {
    let sb = Sandbox::new();
    sb.init();
    let src = tree(
        &sb,
        &[
            ("keep.txt", b"k"),
            ("a.tmp", b"t"),
            ("sub/B.TMP", b"t"),
            ("sub/c.log", b"l"),
            ("sub/keep.log", b"l"),
            ("app/node_modules/m.js", b"m"),
            ("app/main.js", b"m"),
        ],
    );
    let excludes = sb.path("excludes");
    std::fs::write(
        &excludes,
        "# logs, but not the one we keep\n\n*.log\n!keep.log\n$CUSTODY_TEST_DIR/app/node_modules\n",
    )
    .unwrap();
    let mut c = sb.cmd(&[
        "backup",
        "--exclude",
        "*.tmp",
        "--iexclude",
        "*.tmp",
        "--exclude-file",
        excludes.to_str().unwrap(),
        src.to_str().unwrap(),
    ]);
    c.env("CUSTODY_TEST_DIR", &src);
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        listed(&sb, &src),
        ["app", "app/main.js", "keep.txt", "sub", "sub/keep.log"]
    );
    // A pattern that does not parse is a usage error.
    sb.run(&["backup", "--exclude", "[", src.to_str().unwrap()])
        .code(EXIT_USAGE);
}

#[test]
fn caches_markers_and_sizes() {
    let sb = Sandbox::new();
    sb.init();
    let src = tree(
        &sb,
        &[
            (
                "cache/CACHEDIR.TAG",
                b"Signature: 8a477f597d28d172789f06886806bc55\n# a cache",
            ),
            ("cache/blob", b"c"),
            ("fake-cache/CACHEDIR.TAG", b"not the signature"),
            ("fake-cache/blob", b"c"),
            ("skip-me/.nobackup", b""),
            ("skip-me/data", b"d"),
            ("tagged/.marker", b"exclude this folder"),
            ("tagged/data", b"d"),
            ("other/.marker", b"something else"),
            ("other/data", b"d"),
            ("big", &[7u8; 5000]),
            ("small", &[7u8; 100]),
        ],
    );
    sb.run(&[
        "backup",
        "--exclude-caches",
        "--exclude-if-present",
        ".nobackup",
        "--exclude-if-present",
        ".marker:exclude this",
        "--exclude-larger-than",
        "4K",
        src.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(
        listed(&sb, &src),
        [
            "cache",
            "cache/CACHEDIR.TAG",
            "fake-cache",
            "fake-cache/CACHEDIR.TAG",
            "fake-cache/blob",
            "other",
            "other/.marker",
            "other/data",
            "small"
        ]
    );
}

#[test]
fn files_from_in_all_three_forms() {
    let sb = Sandbox::new();
    sb.init();
    let dir = sb.path("d");
    for name in ["a.txt", "b.txt", "c.dat", "#hash", "new\nline"] {
        write(&dir.join(name), name.as_bytes());
    }
    let list = sb.path("list");
    std::fs::write(
        &list,
        format!("# comment\n\n{0}/*.txt\n{0}/c.dat\n", dir.display()),
    )
    .unwrap();
    let verbatim = sb.path("verbatim");
    std::fs::write(&verbatim, format!("{}/#hash\n", dir.display())).unwrap();
    let raw = sb.path("raw");
    let mut r = dir.join("new\nline").as_os_str().as_bytes().to_vec();
    r.push(0);
    std::fs::write(&raw, r).unwrap();
    sb.run(&[
        "backup",
        "--files-from",
        list.to_str().unwrap(),
        "--files-from-verbatim",
        verbatim.to_str().unwrap(),
        "--files-from-raw",
        raw.to_str().unwrap(),
    ])
    .ok();
    // Each file at its full path, below the folders that lead to it.
    assert_eq!(
        listed(&sb, &dir),
        ["#hash", "a.txt", "b.txt", "c.dat", "new\nline"]
    );
    // Standard input works as a list too.
    let out = sb.run_stdin(
        &["--json", "backup", "--files-from", "-"],
        format!("{}/a.txt\n", dir.display()).as_bytes(),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// `-x`: a tmpfs mounted inside the source is kept as an empty folder (as root, where mounts
/// are allowed; skipped with the reason otherwise).
#[test]
fn one_file_system_stays_on_the_source_file_system() {
    let sb = Sandbox::new();
    sb.init();
    let src = tree(&sb, &[("here", b"h"), ("mnt/.keep", b"")]);
    let mnt = src.join("mnt");
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "none"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    }
    write(&mnt.join("elsewhere"), b"e");
    let run = sb.run(&["backup", "-x", src.to_str().unwrap()]);
    let all = sb.run(&["backup", src.to_str().unwrap()]);
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    run.ok();
    all.ok();
    let v: Vec<LsEntry> = sb
        .run(&["--json", "snapshots"])
        .ok()
        .json()
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .unwrap()
        .iter()
        .flat_map(|id| sb.run(&["--json", "ls", id]).ok().report::<Vec<LsEntry>>())
        .collect();
    let paths: Vec<&str> = v.iter().map(|e| e.path.as_str()).collect();
    // The -x snapshot has the mount point, empty; the other one has what is mounted there.
    assert_eq!(
        paths
            .iter()
            .filter(|p| **p == mnt.to_str().unwrap())
            .count(),
        2,
        "{paths:?}"
    );
    assert_eq!(
        paths
            .iter()
            .filter(|p| **p == mnt.join("elsewhere").to_str().unwrap())
            .count(),
        1,
        "{paths:?}"
    );
}

/// `backup --dry-run` reads and chunks everything, says what would be stored, and stores
/// nothing (no key record, pack, segment or snapshot); the real backup then stores that much.
#[test]
fn a_dry_run_says_what_would_be_stored_and_stores_nothing() {
    let sb = Sandbox::new();
    sb.init();
    let src = tree(
        &sb,
        &[
            ("a", &random_bytes(300_000, 1)),
            ("b.tmp", &random_bytes(200_000, 2)),
        ],
    );
    let objects = || {
        ["keys", "data", "index", "snapshots"]
            .iter()
            .map(|d| list_ids(&sb.repo().join(d)).len())
            .collect::<Vec<_>>()
    };
    let before = objects();
    let dry = sb.backup_json(&["--dry-run", "-e", "*.tmp", src.to_str().unwrap()]);
    assert!(dry.dry_run, "{dry:?}");
    assert_eq!(dry.files_processed, 1);
    assert!(dry.bytes_new >= 300_000, "{dry:?}");
    assert_eq!(objects(), before, "a dry run stored something");
    let human = sb.run(&["backup", "-n", src.to_str().unwrap()]).ok().out();
    assert!(human.contains("dry run, nothing stored"), "{human}");
    let real = sb.backup_json(&["-e", "*.tmp", src.to_str().unwrap()]);
    assert!(!real.dry_run);
    assert_eq!(real.bytes_new, dry.bytes_new);
    assert_eq!(
        sb.run(&["--json", "snapshots"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
