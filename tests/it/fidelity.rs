//! Everything a file is (issue #14): a tree with owners, setuid/setgid/sticky bits, extended
//! attributes (a `user.*` one, a POSIX ACL, a file capability), a fifo, a character device, a
//! symlink of another owner and a sparse file, backed up and restored as root, compared field
//! by field. Skipped, with the reason printed, when not root; a non-root restore is checked to
//! say once what it could not restore.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::common::*;

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

fn mknod(p: &Path, kind: libc::mode_t, rdev: libc::dev_t) -> bool {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    unsafe { libc::mknod(c.as_ptr(), kind | 0o644, rdev) == 0 }
}

/// A POSIX ACL as Linux stores it: owner rwx, user 1234 r, group r-x, mask r-x, other ---.
fn acl() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 7u16, u32::MAX),
        (0x02, 4, 1234),
        (0x04, 5, u32::MAX),
        (0x10, 5, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// `cap_net_bind_service=ep` as a version-2 `security.capability` value.
fn capability() -> Vec<u8> {
    let mut v = 0x0200_0001u32.to_le_bytes().to_vec();
    for w in [1u32 << 10, 0, 0, 0] {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v
}

/// What the comparison looks at for each entry: type, mode, owner, mtime, rdev, xattrs.
fn describe(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let xattrs: Vec<String> = custody::xattr::read(&p)
            .into_iter()
            .map(|(n, v)| format!("{}={}", String::from_utf8_lossy(&n), hex::encode(v)))
            .collect();
        // Folder mtimes change as entries are made; compared for everything else.
        let mtime = if m.is_dir() { 0 } else { m.mtime() };
        out.push(format!(
            "{rel} mode={:o} uid={} gid={} mtime={mtime} rdev={} xattrs={xattrs:?}",
            m.mode(),
            m.uid(),
            m.gid(),
            m.rdev()
        ));
        if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_system_tree_is_restored_with_everything_it_is() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: owners, devices and capabilities need root");
        return;
    }
    let sb = Sandbox::new();
    sb.init();
    let src = sb.path("src");
    write(&src.join("owned"), b"owned by someone else");
    chown(&src.join("owned"), 1234, 5678);
    write(&src.join("setuid"), b"#!/bin/sh\n");
    std::fs::set_permissions(src.join("setuid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::create_dir_all(src.join("shared")).unwrap();
    chown(&src.join("shared"), 0, 5678);
    std::fs::set_permissions(src.join("shared"), std::fs::Permissions::from_mode(0o2775)).unwrap();
    std::fs::create_dir_all(src.join("tmp")).unwrap();
    std::fs::set_permissions(src.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    write(&src.join("attrs"), b"with attributes");
    let f = std::fs::File::open(src.join("attrs")).unwrap();
    let mut with = vec![];
    for (name, value) in [
        (&b"user.note"[..], b"kept".to_vec()),
        (b"system.posix_acl_access", acl()),
        (b"security.capability", capability()),
    ] {
        match custody::xattr::set(&f, name, &value) {
            Ok(()) => with.push(String::from_utf8_lossy(name).into_owned()),
            Err(e) => eprintln!(
                "this file system refuses {}: {e}",
                String::from_utf8_lossy(name)
            ),
        }
    }
    eprintln!("attributes under test: {with:?}");
    assert!(mknod(&src.join("fifo"), libc::S_IFIFO, 0));
    let dev = mknod(&src.join("null"), libc::S_IFCHR, libc::makedev(1, 3));
    std::os::unix::fs::symlink("owned", src.join("link")).unwrap();
    chown(&src.join("link"), 1234, 5678);
    let sparse = std::fs::File::create(src.join("sparse")).unwrap();
    sparse.set_len(64 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"end", (64 << 20) - 3).unwrap();
    drop(sparse);

    let want = describe(&src);
    sb.run(&["backup", src.to_str().unwrap()]).ok();
    let target = sb.path("target");
    let out = sb
        .run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    assert!(!out.out().contains("not restored"), "{}", out.out());
    let got = describe(&restored(&target, &src));
    assert_eq!(got, want);
    assert!(dev, "mknod of a character device failed");
    // Sparse stays sparse: 64 MiB of holes take a block or two.
    let blocks = std::fs::metadata(restored(&target, &src).join("sparse"))
        .unwrap()
        .blocks();
    assert!(blocks < 64, "{blocks} blocks");
    // The listing shows the kinds.
    let ls = sb.run(&["ls", "-l", "latest"]).ok().out();
    assert!(ls.contains("fifo") && ls.contains("chardev"), "{ls}");

    // The same restore as another user (nobody): what it can, and one summary line of what
    // it could not, never a wall of warnings.
    // nobody may enter the sandbox and read the repository, holds the keyring (which must
    // stay private), and owns the target.
    let target = sb.path("as-nobody");
    std::fs::create_dir_all(&target).unwrap();
    let root = sb.path("a").parent().unwrap().to_path_buf();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (cmd, args) in [
        ("chown", vec!["-R", "65534:65534"]),
        ("chmod", vec!["-R", "a+rX"]),
    ] {
        let paths = if cmd == "chown" {
            vec![sb.path("config"), sb.path("home"), target.clone()]
        } else {
            vec![sb.repo()]
        };
        for p in paths {
            let _ = std::fs::create_dir_all(&p);
            let ok = std::process::Command::new(cmd).args(&args).arg(&p).status();
            assert!(ok.is_ok_and(|s| s.success()), "{cmd} {}", p.display());
        }
    }
    let run = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_custody"))
        .args(["restore", "latest", "--target", target.to_str().unwrap()])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", sb.path("home"))
        .env("CUSTODY_CONFIG_DIR", sb.path("config"))
        .env("CUSTODY_REPOSITORY", sb.repo())
        .env("CUSTODY_CACHE_DIR", "off")
        .output();
    let Ok(run) = run else {
        eprintln!("skipped the restore as nobody: setpriv is not installed");
        return;
    };
    let (stdout, stderr) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert!(run.status.success(), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().chain(stderr.lines()).collect();
    let summary: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("not restored"))
        .collect();
    assert_eq!(summary.len(), 1, "{lines:?}");
    assert!(
        summary[0].contains("owners of") && summary[0].contains("devices"),
        "{}",
        summary[0]
    );
    let mine = restored(&target, &src);
    let m = std::fs::symlink_metadata(mine.join("owned")).unwrap();
    assert_eq!(
        (m.uid(), std::fs::read(mine.join("owned")).unwrap()),
        (65534, b"owned by someone else".to_vec())
    );
    // Setuid is dropped with the owner; the fifo is there, the device is not.
    let setuid = std::fs::metadata(mine.join("setuid")).unwrap().mode();
    assert_eq!(setuid & 0o6000, 0, "{setuid:o}");
    assert!(std::fs::symlink_metadata(mine.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert!(std::fs::symlink_metadata(mine.join("null")).is_err());
}
