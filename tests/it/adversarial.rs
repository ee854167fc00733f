//! The storage custodian attacks: every tampering is refused by `check --read-data` and by
//! `restore` with the integrity exit code (3) and the object named. Also: a writer's keys
//! cannot read, and keyrings refuse loose permissions and wrong passphrases.

use std::collections::HashMap;
use std::path::Path;

use crate::common::*;

fn flip(path: &Path, offset: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[offset as usize] ^= 0x40;
    std::fs::write(path, b).unwrap();
}

/// Six 1.5 MiB random files: several 1 MiB packs, so damage to one pack spares most files.
fn repo_with_files(sb: &Sandbox) -> (String, HashMap<String, Vec<u8>>) {
    sb.init();
    let mut files = HashMap::new();
    for i in 0..6 {
        let data = random_bytes(1536 * 1024, 100 + i);
        write(&sb.path(&format!("src/f{i}.bin")), &data);
        files.insert(format!("f{i}.bin"), data);
    }
    let v = sb.backup_json(&[sb.path("src").to_str().unwrap()]);
    (v.snapshot_id.to_hex(), files)
}

/// chunk id -> file name, from the decrypted trees (what a key holder sees with `cat`).
fn chunk_owners(sb: &Sandbox, snapshot: &str) -> HashMap<String, String> {
    let src = sb.tree_at(snapshot, &sb.path("src"));
    let tree = sb.run(&["cat", "tree", &src]).ok().json();
    let mut out = HashMap::new();
    for n in tree["nodes"].as_array().unwrap() {
        for c in n["content"].as_array().into_iter().flatten() {
            out.insert(
                c.as_str().unwrap().to_string(),
                n["name"].as_str().unwrap().to_string(),
            );
        }
    }
    out
}

#[track_caller]
fn refused(sb: &Sandbox, object: &str) {
    let c = sb.run(&["check", "--read-data"]).code(EXIT_INTEGRITY);
    assert!(
        c.stderr.contains(object),
        "check did not name {object}: {}",
        c.stderr
    );
    let out = sb.path(&format!("restore-{}", rand_suffix()));
    let r = sb
        .run(&["restore", "latest", "--target", out.to_str().unwrap()])
        .code(EXIT_INTEGRITY);
    assert!(
        r.stderr.contains(object),
        "restore did not name {object}: {}",
        r.stderr
    );
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

#[test]
fn flipped_byte_in_a_pack_names_the_file_and_restores_the_rest() {
    let sb = Sandbox::new();
    let (snap, files) = repo_with_files(&sb);
    let owners = chunk_owners(&sb, &snap);
    let (pack, blob, off, len) = sb
        .index_entries()
        .into_iter()
        .find(|(_, b, _, _)| owners.contains_key(b))
        .unwrap();
    flip(&pack_path(&sb.repo(), &pack), off + len / 2);
    let damaged = &owners[&blob];

    let c = sb.run(&["check", "--read-data"]).code(EXIT_INTEGRITY);
    assert!(c.stderr.contains(&pack), "{}", c.stderr);
    // Structure alone does not read data blobs: it passes.
    sb.run(&["check"]).ok();

    let out = sb.path("out");
    let r = sb
        .run(&["restore", "latest", "--target", out.to_str().unwrap()])
        .code(EXIT_INTEGRITY);
    assert!(
        r.stderr.contains(damaged.as_str()),
        "damaged file not named: {}",
        r.stderr
    );
    assert!(r.stderr.contains(&pack), "pack not named: {}", r.stderr);
    // Each failure once, and a count in the summary.
    assert_eq!(
        r.stderr.matches(damaged.as_str()).count(),
        1,
        "{}",
        r.stderr
    );
    assert!(r.out().contains("1 path(s) NOT restored"), "{}", r.out());
    for (name, data) in &files {
        let p = restored(&out, &sb.path("src")).join(name);
        if name == damaged {
            assert!(!p.exists(), "damaged file {name} was written");
        } else {
            assert!(
                std::fs::read(&p).unwrap() == *data,
                "{name} not restored intact"
            );
        }
    }
    // No temporary files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(restored(&out, &sb.path("src")))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // dump of the damaged file fails too.
    sb.run(&["dump", "latest", &format!("src/{damaged}")])
        .code(EXIT_INTEGRITY);
}

#[test]
fn truncated_pack() {
    let sb = Sandbox::new();
    repo_with_files(&sb);
    let (pack, ..) = sb.index_entries()[0].clone();
    let p = pack_path(&sb.repo(), &pack);
    let len = std::fs::metadata(&p).unwrap().len();
    // Cut into the blobs: the structure check sees it from sizes alone.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let c = sb.run(&["check"]).code(EXIT_INTEGRITY);
    assert!(c.stderr.contains(&pack), "{}", c.stderr);
    refused(&sb, &pack);
}

#[test]
fn swapped_packs() {
    let sb = Sandbox::new();
    repo_with_files(&sb);
    let mut packs: Vec<String> = sb.index_entries().into_iter().map(|e| e.0).collect();
    packs.sort();
    packs.dedup();
    assert!(packs.len() >= 3);
    let (a, b) = (
        pack_path(&sb.repo(), &packs[0]),
        pack_path(&sb.repo(), &packs[1]),
    );
    let (da, db) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    std::fs::write(&a, &db).unwrap();
    std::fs::write(&b, &da).unwrap();
    let c = sb.run(&["check", "--read-data"]).code(EXIT_INTEGRITY);
    assert!(
        c.stderr.contains(&packs[0]) && c.stderr.contains(&packs[1]),
        "{}",
        c.stderr
    );
    refused(&sb, "data/");
}

#[test]
fn blob_moved_into_another_pack() {
    let sb = Sandbox::new();
    sb.init();
    // Two sessions, one small incompressible file each: equal-length blobs in different packs.
    write(&sb.path("one/a.bin"), &random_bytes(5000, 1));
    write(&sb.path("two/b.bin"), &random_bytes(5000, 2));
    sb.backup_json(&[sb.path("one").to_str().unwrap()]);
    let before: Vec<_> = sb.index_entries();
    sb.backup_json(&[sb.path("two").to_str().unwrap()]);
    let after = sb.index_entries();
    let new: Vec<_> = after.iter().filter(|e| !before.contains(e)).collect();
    let (src_pack, _, src_off, src_len) = before.iter().find(|e| e.3 > 5000).unwrap().clone();
    let (dst_pack, _, dst_off, dst_len) = (*new.iter().find(|e| e.3 == src_len).unwrap()).clone();
    assert_eq!(src_len, dst_len);
    assert_ne!(src_pack, dst_pack);
    let src = std::fs::read(pack_path(&sb.repo(), &src_pack)).unwrap();
    let dst_path = pack_path(&sb.repo(), &dst_pack);
    let mut dst = std::fs::read(&dst_path).unwrap();
    dst[dst_off as usize..(dst_off + dst_len) as usize]
        .copy_from_slice(&src[src_off as usize..(src_off + src_len) as usize]);
    std::fs::write(&dst_path, dst).unwrap();
    let c = sb.run(&["check", "--read-data"]).code(EXIT_INTEGRITY);
    assert!(
        c.stderr.contains(&dst_pack) && c.stderr.contains("commitment"),
        "{}",
        c.stderr
    );
    let out = sb.path("out");
    let r = sb
        .run(&["restore", "latest", "--target", out.to_str().unwrap()])
        .code(EXIT_INTEGRITY);
    assert!(
        r.stderr.contains(&dst_pack) && r.stderr.contains("b.bin"),
        "{}",
        r.stderr
    );
    assert!(!restored(&out, &sb.path("two")).join("b.bin").exists());
}

#[test]
fn swapped_wrapped_key_objects() {
    let sb = Sandbox::new();
    sb.init();
    write(&sb.path("one/a"), b"first");
    sb.backup_json(&[sb.path("one").to_str().unwrap()]);
    write(&sb.path("two/b"), b"second");
    sb.backup_json(&[sb.path("two").to_str().unwrap()]);
    let keys = list_ids(&sb.repo().join("keys"));
    assert_eq!(keys.len(), 2);
    let (a, b) = (
        sb.repo().join("keys").join(&keys[0]),
        sb.repo().join("keys").join(&keys[1]),
    );
    let (da, db) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    std::fs::write(&a, &db).unwrap();
    std::fs::write(&b, &da).unwrap();
    refused(&sb, "keys/");

    // Editing the record's own id to match its new name does not help: the context is bound.
    let text = String::from_utf8(db.clone())
        .unwrap()
        .replace(&keys[1], &keys[0]);
    std::fs::write(&a, text).unwrap();
    std::fs::write(&b, &db).unwrap();
    let c = sb.run(&["check"]).code(EXIT_INTEGRITY);
    assert!(
        c.stderr.contains(&format!("keys/{}", keys[0])),
        "{}",
        c.stderr
    );
}

#[test]
fn damaged_snapshot_and_downgraded_snapshot() {
    let sb = Sandbox::new();
    sb.init();
    write(&sb.path("src/a"), b"data");
    let v = sb.backup_json(&[sb.path("src").to_str().unwrap()]);
    let id = v.snapshot_id.to_hex();
    let p = sb.repo().join("snapshots").join(&id);
    let orig = std::fs::read(&p).unwrap();
    let len = orig.len() as u64;
    flip(&p, len - 30);
    let s = sb.run(&["snapshots"]).code(EXIT_INTEGRITY);
    assert!(
        s.stderr.contains(&format!("snapshots/{id}")),
        "{}",
        s.stderr
    );
    refused(&sb, &format!("snapshots/{id}"));

    // An older envelope version is a downgrade: refused, never tried.
    let mut old = orig.clone();
    old[4] = 0;
    std::fs::write(&p, old).unwrap();
    let s = sb.run(&["snapshots"]).code(EXIT_INTEGRITY);
    assert!(s.stderr.contains("version 0 refused"), "{}", s.stderr);
}

#[test]
fn pack_copied_from_another_repository() {
    let sb = Sandbox::new();
    repo_with_files(&sb);
    let other = Sandbox::new();
    repo_with_files(&other);
    let (theirs, ..) = other.index_entries()[0].clone();
    let (ours, ..) = sb.index_entries()[0].clone();
    std::fs::copy(
        pack_path(&other.repo(), &theirs),
        pack_path(&sb.repo(), &ours),
    )
    .unwrap();
    refused(&sb, &ours);
}

#[test]
fn tampered_config_is_refused() {
    let sb = Sandbox::new();
    sb.init();
    let p = sb.repo().join("config");
    let text = std::fs::read_to_string(&p).unwrap();
    let tampered = text.replace("\"compression_level\": 3", "\"compression_level\": 0");
    assert_ne!(text, tampered);
    std::fs::write(&p, tampered).unwrap();
    let r = sb.run(&["snapshots"]).code(EXIT_INTEGRITY);
    assert!(r.stderr.contains("config"), "{}", r.stderr);
}

#[test]
fn writer_keyring_backs_up_but_cannot_read() {
    let sb = Sandbox::new();
    sb.init();
    write(&sb.path("src/a.txt"), b"owner data");
    sb.backup_json(&[sb.path("src").to_str().unwrap()]);
    let writer = sb.export_writer("writer-keyring", &[]);
    let ks = format!("local:{}", writer.display());

    // The writer backs up, with dedup against what is stored.
    write(&sb.path("w/new.txt"), b"written by the job");
    write(&sb.path("w/a.txt"), b"owner data");
    let v = sb
        .run(&[
            "--key-service",
            &ks,
            "--json",
            "backup",
            sb.path("w").to_str().unwrap(),
        ])
        .ok()
        .json();
    // New: one data chunk (a.txt is deduplicated) and four trees (`w` and the three folders
    // above it, up to the root: they hold `w` where the owner's held `src`).
    assert_eq!(v["chunks_new"], 5, "{v}");

    // ...but cannot list, restore, dump or cat anything.
    for args in [
        vec!["snapshots"],
        vec!["ls", "latest"],
        vec!["dump", "latest", "w/new.txt"],
        vec!["cat", "snapshot", "latest"],
        vec!["check"],
    ] {
        let mut a = vec!["--key-service", ks.as_str()];
        a.extend(args.iter().copied());
        let r = sb.run(&a).code(EXIT_KEY_SERVICE);
        assert!(r.stderr.contains("writer keyring"), "{}", r.stderr);
        assert!(
            r.stdout.is_empty()
                || !String::from_utf8_lossy(&r.stdout).contains("written by the job")
        );
    }
    let out = sb.path("out");
    sb.run(&[
        "--key-service",
        &ks,
        "restore",
        "latest",
        "--target",
        out.to_str().unwrap(),
    ])
    .code(EXIT_KEY_SERVICE);
    assert!(!restored(&out, &sb.path("w")).join("new.txt").exists());

    // The owner reads what the writer stored.
    let d = sb.run(&["dump", "latest", "w/new.txt"]).ok();
    assert_eq!(d.stdout, b"written by the job");
}

#[test]
fn keyring_permissions_and_passphrase() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    let ks = format!("local:{}", sb.path("ring").display());
    let with_pass = |args: &[&str], pass: Option<&str>| {
        let mut c = sb.cmd(args);
        if let Some(p) = pass {
            c.env("CUSTODY_KEYRING_PASSPHRASE", p);
        }
        let o = c.output().unwrap();
        (
            o.status.code().unwrap(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    assert_eq!(
        with_pass(&["--key-service", &ks, "init"], Some("s3cret")).0,
        0
    );
    let ring = sb.path("ring/keyring.json");
    let text = std::fs::read_to_string(&ring).unwrap();
    assert!(text.contains("argon2") || text.contains("m_cost"), "{text}");
    assert_eq!(
        std::fs::metadata(&ring).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let (code, err) = with_pass(&["--key-service", &ks, "snapshots"], None);
    assert_eq!(code, EXIT_KEY_SERVICE, "{err}");
    assert!(err.contains("CUSTODY_KEYRING_PASSPHRASE"));
    let (code, err) = with_pass(&["--key-service", &ks, "snapshots"], Some("wrong"));
    assert_eq!(code, EXIT_KEY_SERVICE);
    assert!(err.contains("wrong passphrase"), "{err}");
    assert_eq!(
        with_pass(&["--key-service", &ks, "snapshots"], Some("s3cret")).0,
        0
    );
    std::fs::write(sb.path("passfile"), "s3cret\n").unwrap();
    let pf = sb.path("passfile");
    assert_eq!(
        with_pass(
            &[
                "--key-service",
                &ks,
                "--passphrase-file",
                pf.to_str().unwrap(),
                "snapshots"
            ],
            None
        )
        .0,
        0
    );

    std::fs::set_permissions(&ring, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, err) = with_pass(&["--key-service", &ks, "snapshots"], Some("s3cret"));
    assert_eq!(code, EXIT_KEY_SERVICE);
    assert!(err.contains("chmod 600"), "{err}");
    // The passphrase never appears in output.
    assert!(!err.contains("s3cret"));
}

/// A writer keyring is never sealed with the owner's passphrase: unsealed by default (an
/// unattended job stores no secret of the owner's), or sealed with its own passphrase.
#[test]
fn writer_keyrings_have_their_own_passphrase_or_none() {
    let sb = Sandbox::new();
    let ks = format!("local:{}", sb.path("ring").display());
    let owner_pass = sb.path("owner-pass");
    std::fs::write(&owner_pass, "owner-s3cret\n").unwrap();
    let writer_pass = sb.path("writer-pass");
    std::fs::write(&writer_pass, "writer-pass\n").unwrap();
    let owner = |args: &[&str]| {
        let mut v = vec!["--key-service", &ks, "--passphrase-file"];
        v.push(owner_pass.to_str().unwrap());
        v.extend_from_slice(args);
        sb.run(&v)
    };
    owner(&["init"]).ok();
    let src = sb.path("src");
    write(&src.join("a"), &random_bytes(50_000, 1));

    // Default: unsealed, and usable with no passphrase at all.
    let plain = sb.path("writer-plain");
    owner(&[
        "key",
        "export",
        "--role",
        "writer",
        "--to",
        plain.to_str().unwrap(),
    ])
    .ok();
    let text = std::fs::read_to_string(plain.join("keyring.json")).unwrap();
    assert!(
        !text.contains("m_cost"),
        "writer keyring must not be sealed: {text}"
    );
    let plain_ks = format!("local:{}", plain.display());
    sb.run(&["--key-service", &plain_ks, "backup", src.to_str().unwrap()])
        .ok();

    // With --to-passphrase-file: sealed with the writer's passphrase, not the owner's.
    let sealed = sb.path("writer-sealed");
    owner(&[
        "key",
        "export",
        "--role",
        "writer",
        "--to",
        sealed.to_str().unwrap(),
        "--to-passphrase-file",
        writer_pass.to_str().unwrap(),
    ])
    .ok();
    let sealed_ks = format!("local:{}", sealed.display());
    let backup_with = |pass: &std::path::Path| {
        sb.run(&[
            "--key-service",
            &sealed_ks,
            "--passphrase-file",
            pass.to_str().unwrap(),
            "backup",
            src.to_str().unwrap(),
        ])
    };
    let r = backup_with(&owner_pass).code(EXIT_KEY_SERVICE);
    assert!(r.stderr.contains("wrong passphrase"), "{}", r.stderr);
    backup_with(&writer_pass).ok();

    // An owner export keeps the owner's passphrase unless told otherwise.
    let copy = sb.path("owner-copy");
    owner(&[
        "key",
        "export",
        "--role",
        "owner",
        "--to",
        copy.to_str().unwrap(),
    ])
    .ok();
    let copy_ks = format!("local:{}", copy.display());
    sb.run(&[
        "--key-service",
        &copy_ks,
        "--passphrase-file",
        owner_pass.to_str().unwrap(),
        "snapshots",
    ])
    .ok();
}

#[test]
fn missing_keyring_is_a_key_service_error() {
    let sb = Sandbox::new();
    sb.init();
    std::fs::remove_dir_all(sb.path("config")).unwrap();
    let r = sb.run(&["snapshots"]).code(EXIT_KEY_SERVICE);
    assert!(r.stderr.contains("no keyring"), "{}", r.stderr);
}

#[test]
fn backup_job_script_runs_with_a_writer_keyring() {
    let sb = Sandbox::new();
    sb.init();
    let writer = sb.export_writer("writer", &[]);
    write(&sb.path("data/a.txt"), b"nightly");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/backup-job.sh");
    let run = |paths: &str| {
        std::process::Command::new("bash")
            .arg(&script)
            .env("CUSTODY", env!("CARGO_BIN_EXE_custody"))
            .env("CUSTODY_REPOSITORY", sb.repo())
            .env("CUSTODY_KEY_SERVICE", format!("local:{}", writer.display()))
            .env("BACKUP_PATHS", paths)
            .env("BACKUP_SUMMARY_DIR", sb.path("summaries"))
            .output()
            .unwrap()
    };
    let o = run(sb.path("data").to_str().unwrap());
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let summaries = std::fs::read_dir(sb.path("summaries")).unwrap().count();
    assert_eq!(summaries, 1);
    let s = std::fs::read_dir(sb.path("summaries"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let v: custody::repo::backup::BackupOutput =
        serde_json::from_slice(&std::fs::read(s).unwrap()).unwrap();
    assert_eq!(v.files_processed, 1);
    // The owner sees the job's snapshot; a missing path is reported with exit 1.
    assert_eq!(
        sb.run(&["dump", "latest", "data/a.txt"]).ok().stdout,
        b"nightly"
    );
    let o = run(sb.path("missing").to_str().unwrap());
    assert_eq!(o.status.code(), Some(1));
}

/// 200 random bytes in `index/` and in `snapshots/` (damage, or a custodian's or writer's
/// junk) no longer stop everything: `snapshots` lists the rest and names the bad one (exit 3),
/// a restore by id or of `latest` and a backup work around them, `check` names both, and
/// prune refuses to delete anything while a snapshot cannot be read. `latest` is the newest
/// snapshot that opens, and the warning names the bad manifest (it might be newer).
#[test]
fn one_bad_object_does_not_stop_everything() {
    let sb = Sandbox::new();
    sb.init();
    let src = sb.path("src");
    write(&src.join("a"), &random_bytes(300_000, 1));
    sb.run(&["backup", src.to_str().unwrap()]).ok();
    write(&src.join("b"), &random_bytes(300_000, 2));
    sb.run(&["backup", src.to_str().unwrap()]).ok();
    let junk_segment = "ab".repeat(32);
    let junk_snapshot = "cd".repeat(32);
    write(
        &sb.repo().join("index").join(&junk_segment),
        &random_bytes(200, 3),
    );
    write(
        &sb.repo().join("snapshots").join(&junk_snapshot),
        &random_bytes(200, 4),
    );

    let r = sb.run(&["--json", "snapshots"]).code(EXIT_INTEGRITY);
    let table: custody::repo::snapshots::SnapshotTable = r.report();
    assert_eq!(table.0.len(), 2);
    assert!(r.stderr.contains(&junk_snapshot), "{}", r.stderr);
    let r = sb
        .run(&[
            "restore",
            "latest",
            "--target",
            sb.path("l").to_str().unwrap(),
        ])
        .ok();
    assert!(r.stderr.contains(&junk_snapshot), "{}", r.stderr);
    assert_same_tree(&src, &restored(&sb.path("l"), &src));

    let newest = table.0.iter().max_by_key(|s| s.time).unwrap().id.to_hex();
    let out = sb.path("out");
    sb.run(&["restore", &newest, "--target", out.to_str().unwrap()])
        .ok();
    assert_same_tree(&src, &restored(&out, &src));
    write(&src.join("c"), &random_bytes(300_000, 5));
    // The backup finds its parent past the bad manifest: unchanged files are not read.
    let b = sb.backup_json(&[src.to_str().unwrap()]);
    assert_eq!(b.files_unchanged, 2, "{b:?}");

    let c = sb.run(&["check"]).code(EXIT_INTEGRITY);
    assert!(
        c.stderr.contains(&junk_segment) && c.stderr.contains(&junk_snapshot),
        "{}",
        c.stderr
    );
    let packs = std::fs::read_dir(sb.repo().join("data"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .count();
    sb.run(&["prune", "--grace", "0s"]).code(EXIT_INTEGRITY);
    let after = std::fs::read_dir(sb.repo().join("data"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .count();
    assert_eq!(
        packs, after,
        "prune deleted packs while a snapshot was unreadable"
    );
}
