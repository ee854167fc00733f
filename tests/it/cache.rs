//! The local caches of index segments, and of manifests and key records for backups
//! (src/repo/cache.rs): they hold the store's ciphertext, a damaged or swapped entry is never
//! trusted (the store's copy is read instead), and `check` (and, for manifests, `prune`)
//! reads the store only, so the cache never hides damage there.

use crate::common::*;

fn cached(sb: &Sandbox, args: &[&str]) -> Run {
    sb.run_env(&[("CUSTODY_CACHE_DIR", sb.path("cache"))], args)
}

/// The cached objects of one folder (`index`, `snapshots`, `keys`): (store path, cache
/// path) per id, in id order.
fn entries(sb: &Sandbox, folder: &str) -> Vec<(std::path::PathBuf, std::path::PathBuf)> {
    let repo_cache = sb
        .path("cache")
        .read_dir()
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    list_ids(&repo_cache.join(folder))
        .into_iter()
        .map(|id| {
            (
                sb.repo().join(folder).join(&id),
                repo_cache.join(folder).join(&id),
            )
        })
        .collect()
}

fn segments(sb: &Sandbox) -> Vec<(std::path::PathBuf, std::path::PathBuf)> {
    entries(sb, "index")
}

fn flip_byte(path: &std::path::Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 1;
    std::fs::write(path, bytes).unwrap();
}

fn assert_cached_as_stored(entries: &[(std::path::PathBuf, std::path::PathBuf)]) {
    for (store, cache) in entries {
        let same = std::fs::read(store).unwrap() == std::fs::read(cache).unwrap();
        assert!(same, "{} differs from the store's copy", cache.display());
    }
}

#[test]
fn cached_index_segments_are_verified_and_check_reads_the_store() {
    let sb = Sandbox::new();
    cached(&sb, &["init"]).ok();
    for i in 0..2 {
        write(&sb.path(&format!("src/f{i}")), &random_bytes(50_000, i));
        cached(&sb, &["backup", sb.path("src").to_str().unwrap()]).ok();
    }
    cached(&sb, &["ls", "latest"]).ok();
    let segs = segments(&sb);
    assert_eq!(segs.len(), 2, "both segments cached after a read");
    for (store, cache) in &segs {
        assert_eq!(std::fs::read(store).unwrap(), std::fs::read(cache).unwrap());
    }
    let restore = |name: &str| {
        let out = sb.path(name);
        cached(
            &sb,
            &["restore", "latest", "--target", out.to_str().unwrap()],
        )
        .ok();
        assert_same_tree(&sb.path("src"), &restored(&out, &sb.path("src")));
    };

    // A flipped byte, and one segment's bytes under the other's name: neither opens, the
    // store's copies are read and cached again.
    let (a, b) = (&segs[0], &segs[1]);
    let mut bytes = std::fs::read(&a.1).unwrap();
    bytes[40] ^= 1;
    std::fs::write(&a.1, bytes).unwrap();
    std::fs::copy(&a.0, &b.1).unwrap();
    restore("out1");
    for (store, cache) in &segs {
        assert_eq!(std::fs::read(store).unwrap(), std::fs::read(cache).unwrap());
    }

    // Damage in the store with a good cached copy: readers may use the copy, but `check`
    // reads the store and names the segment.
    let mut bytes = std::fs::read(&a.0).unwrap();
    bytes[40] ^= 1;
    std::fs::write(&a.0, bytes).unwrap();
    restore("out2");
    let check = cached(&sb, &["check"]);
    assert_ne!(check.code, 0, "check trusted the cache: {}", check.stderr);
    let id = a.0.file_name().unwrap().to_string_lossy().into_owned();
    assert!(check.stderr.contains(&id[..8]), "{}", check.stderr);
}

#[test]
fn cached_manifests_are_verified_and_deleters_read_the_store() {
    let sb = Sandbox::new();
    cached(&sb, &["init"]).ok();
    let src = sb.path("src");
    let new_ring = format!("local:{}", sb.path("new-ring").display());
    let rotated = std::cell::Cell::new(false);
    let backup = || {
        let mut args = vec!["--json", "backup", src.to_str().unwrap()];
        if rotated.get() {
            args.extend(["--key-service", &new_ring]);
        }
        cached(&sb, &args)
            .ok()
            .report::<custody::repo::backup::BackupOutput>()
    };
    let mut ids = Vec::new();
    for i in 0..3 {
        write(&sb.path(&format!("src/f{i}")), &random_bytes(50_000, i));
        ids.push(backup().snapshot_id);
    }
    let manifests = entries(&sb, "snapshots");
    assert_eq!(manifests.len(), 3, "every manifest cached");
    assert_cached_as_stored(&manifests);
    let keys_folder = manifests[0].1.parent().unwrap().with_file_name("keys");
    assert!(!keys_folder.exists(), "key records are never cached");
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(manifests[0].1.parent().unwrap()), 0o700);
    assert_eq!(mode(&manifests[0].1), 0o600);

    // A flipped byte in the oldest manifest, and the second manifest's bytes under the
    // newest's name: neither is taken, the store's copies are read (the newest is the
    // parent, its files unchanged) and cached again.
    let of = |id: &custody::id::SnapshotId| {
        let name = std::ffi::OsString::from(id.to_hex());
        manifests
            .iter()
            .find(|m| m.0.file_name() == Some(&name))
            .unwrap()
    };
    flip_byte(&of(&ids[0]).1, 40);
    std::fs::copy(&of(&ids[1]).0, &of(&ids[2]).1).unwrap();
    let out = backup();
    assert_eq!(
        out.parent,
        Some(ids[2]),
        "the newest snapshot is the parent"
    );
    assert_eq!(out.files_unchanged, 3);
    assert_cached_as_stored(&entries(&sb, "snapshots"));
    ids.push(out.snapshot_id);

    // Rotation wraps every key record again under a new keyring and the old one goes: the
    // cached manifests still open, with the bucket's records.
    sb.run(&["--key-service", &new_ring, "key", "create"]).ok();
    sb.run(&["rotate", "rewrap", "--to", &new_ring]).ok();
    std::fs::remove_dir_all(sb.path("config")).unwrap();
    rotated.set(true);
    let out = backup();
    assert_eq!(
        out.parent,
        Some(ids[3]),
        "the newest snapshot is the parent"
    );
    assert_cached_as_stored(&entries(&sb, "snapshots"));

    // The oldest manifest damaged in the store, its cached copy good: a backup, and a
    // restore of `latest`, may use the copy, but a restore of that snapshot, `check` and
    // `prune` read the store: each refuses and names it.
    let victim = &ids[0].to_hex();
    let stored = sb.repo().join("snapshots").join(victim);
    flip_byte(&stored, 40);
    backup();
    let restore = |spec: &str, to: &str| {
        let to = sb.path(to);
        let args = ["--key-service", &new_ring, "restore", spec, "--target"];
        cached(&sb, &[&args[..], &[to.to_str().unwrap()]].concat())
    };
    restore("latest", "out-latest").ok();
    assert_same_tree(&src, &restored(&sb.path("out-latest"), &src));
    for cmd in ["restore", "check", "prune"] {
        let run = match cmd {
            "restore" => restore(victim, "out-victim"),
            _ => cached(&sb, &["--key-service", &new_ring, cmd]),
        };
        assert_eq!(
            run.code, EXIT_INTEGRITY,
            "{cmd} trusted the cache: {}",
            run.stderr
        );
        assert!(run.stderr.contains(&victim[..8]), "{cmd}: {}", run.stderr);
    }

    // A session's key record deleted from the bucket, its manifest cached: the loss is not
    // hidden from a restore of that session's snapshot.
    let listing = cached(&sb, &["--key-service", &new_ring, "--json", "snapshots"]);
    let table: custody::repo::snapshots::SnapshotTable = listing.report();
    let lost = table.0.iter().find(|s| s.id == ids[1]).unwrap().session;
    std::fs::remove_file(sb.repo().join("keys").join(lost.to_hex())).unwrap();
    let run = restore(&ids[1].to_hex(), "out-lost-key");
    assert_eq!(run.code, EXIT_INTEGRITY, "{}", run.stderr);
    assert!(run.stderr.contains("missing"), "{}", run.stderr);
}
