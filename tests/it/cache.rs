//! The local caches of index segments, and of manifests for backups and restores
//! (src/repo/cache.rs): segments are cached as stored, the owner's manifests opened and sealed
//! under its own key; a damaged or swapped entry is never trusted (the store's copy is read
//! instead), and `check` (and, for manifests, `prune`) reads the store only, so the cache
//! never hides damage there.

use crate::common::*;

fn cached(sb: &Sandbox, args: &[&str]) -> Run {
    sb.run_env(&[("CUSTODY_CACHE_DIR", sb.path("cache"))], args)
}

/// The cached objects of one folder (`index`, `snapshots`): (store path, cache path) per id,
/// in id order.
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

/// Flips one byte of a file; returns its new bytes.
fn flip_byte(path: &std::path::Path, at: usize) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 1;
    std::fs::write(path, &bytes).unwrap();
    bytes
}

/// Copies `from` over `to`; returns the bytes copied.
fn copy(from: &std::path::Path, to: &std::path::Path) -> Vec<u8> {
    let bytes = std::fs::read(from).unwrap();
    std::fs::write(to, &bytes).unwrap();
    bytes
}

/// The owner's manifest entries: not the store's ciphertext, and no plaintext (the backed-up
/// path, which every manifest names, appears in none).
fn assert_sealed_for_the_owner(
    entries: &[(std::path::PathBuf, std::path::PathBuf)],
    src: &std::path::Path,
) {
    let path = src.to_str().unwrap().as_bytes();
    for (store, cache) in entries {
        let entry = std::fs::read(cache).unwrap();
        assert_ne!(
            std::fs::read(store).unwrap(),
            entry,
            "{} is as stored",
            cache.display()
        );
        let plain = entry.windows(path.len()).any(|w| w == path);
        assert!(
            !plain,
            "{} holds the manifest in plaintext",
            cache.display()
        );
    }
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
    assert_cached_as_stored(&segs);

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
    assert_sealed_for_the_owner(&manifests, &src);
    let keys_folder = manifests[0].1.parent().unwrap().with_file_name("keys");
    assert!(!keys_folder.exists(), "key records are never cached");
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(manifests[0].1.parent().unwrap()), 0o700);
    assert_eq!(mode(&manifests[0].1), 0o600);

    // A flipped byte in the oldest entry, the second entry under the newest's name, and the
    // store's copy of the first under its own: none is taken, the store's copies are read
    // (the newest is the parent, its files unchanged) and cached again.
    let of = |id: &custody::id::SnapshotId| {
        let name = std::ffi::OsString::from(id.to_hex());
        manifests
            .iter()
            .find(|m| m.0.file_name() == Some(&name))
            .unwrap()
            .clone()
    };
    let planted = [
        (of(&ids[0]).1, flip_byte(&of(&ids[0]).1, 40)),
        (of(&ids[2]).1, copy(&of(&ids[1]).1, &of(&ids[2]).1)),
        (of(&ids[1]).1, copy(&of(&ids[1]).0, &of(&ids[1]).1)),
    ];
    let out = backup();
    assert_eq!(
        out.parent,
        Some(ids[2]),
        "the newest snapshot is the parent"
    );
    assert_eq!(out.files_unchanged, 3);
    for (entry, bytes) in &planted {
        let now = std::fs::read(entry).unwrap();
        assert_ne!(&now, bytes, "{} was taken", entry.display());
    }
    assert_sealed_for_the_owner(&entries(&sb, "snapshots"), &src);
    ids.push(out.snapshot_id);

    // Rotation wraps every key record again under a new keyring and the old one goes: the
    // cached manifests still serve (they need no session key).
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
    assert_sealed_for_the_owner(&entries(&sb, "snapshots"), &src);

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
    // A restore of one snapshot reads no history (`keys/` unlisted): it leaves the good
    // cached copy alone.
    assert!(of(&ids[0]).1.exists(), "the cached copy was dropped");

    // A session's key record deleted from the bucket, its manifest cached: the loss is not
    // hidden from a restore of that session's snapshot.
    let listing = cached(&sb, &["--key-service", &new_ring, "--json", "snapshots"]);
    let table: custody::repo::snapshots::SnapshotTable = listing.report();
    let lost = table.0.iter().find(|s| s.id == ids[1]).unwrap().session;
    std::fs::remove_file(sb.repo().join("keys").join(lost.to_hex())).unwrap();
    let run = restore(&ids[1].to_hex(), "out-lost-key");
    assert_eq!(run.code, EXIT_INTEGRITY, "{}", run.stderr);
    assert!(run.stderr.contains("missing"), "{}", run.stderr);
    // Nor from a backup, which needs no session key to read its cached history: its
    // manifest is read from the bucket again, does not open, and the backup says so.
    let args = ["--key-service", &new_ring, "backup", src.to_str().unwrap()];
    let run = cached(&sb, &args).ok();
    let warned = run.stderr.contains(&lost.to_hex()[..8]) && run.stderr.contains("missing");
    assert!(warned, "the lost key record went unnoticed: {}", run.stderr);
}

/// Cached manifests are judged on every read under the roster of now: a writer's manifest
/// the owner cached is refused once the writer's enrollment is gone from the bucket, as it
/// is without the cache.
#[test]
fn a_cached_manifest_is_judged_again_on_every_read() {
    let sb = Sandbox::new();
    cached(&sb, &["init"]).ok();
    let src = sb.path("src");
    write(&src.join("f"), &random_bytes(20_000, 1));
    let writer = sb.export_writer("writer", &[]);
    let ks = format!("local:{}", writer.display());
    let backup = [
        "--key-service",
        &ks,
        "backup",
        "--host",
        "wh",
        src.to_str().unwrap(),
    ];
    sb.run(&backup).ok();
    let restore = |to: &str| {
        let to = sb.path(to);
        let args = [
            "restore",
            "latest",
            "--host",
            "wh",
            "--target",
            to.to_str().unwrap(),
        ];
        (cached(&sb, &args), restored(&to, &src).join("f"))
    };
    let (run, file) = restore("out1");
    run.ok();
    assert!(file.exists());
    assert_eq!(
        entries(&sb, "snapshots").len(),
        1,
        "the writer's manifest is cached"
    );
    for e in std::fs::read_dir(sb.repo().join("writers")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let (run, file) = restore("out2");
    assert_ne!(
        run.code, 0,
        "restored a manifest of a writer no longer enrolled"
    );
    assert!(!file.exists());
    assert!(run.stderr.contains("untrusted"), "{}", run.stderr);
    // The restore reads its manifest from the bucket too, which refuses it as well: that
    // the cache judged the entry again shows in the entry being gone.
    assert!(
        entries(&sb, "snapshots").is_empty(),
        "the refused entry was kept"
    );
}

/// A repository with one file backed up through the cache, and the backed-up folder.
fn one_cached_backup() -> (Sandbox, std::path::PathBuf) {
    let sb = Sandbox::new();
    cached(&sb, &["init"]).ok();
    let src = sb.path("src");
    write(&src.join("f"), &random_bytes(50_000, 1));
    cached(&sb, &["backup", src.to_str().unwrap()]).ok();
    (sb, src)
}

/// After `rotate reencrypt` seals the manifests again under a new session and `prune`
/// removes the old session's key record, entries naming the old session are not used: the
/// bucket's copies are read and cached again, and backups and restores go on.
#[test]
fn cached_manifests_follow_a_reencryption() {
    let (sb, src) = one_cached_backup();
    let before: Vec<Vec<u8>> = entries(&sb, "snapshots")
        .iter()
        .map(|e| std::fs::read(&e.1).unwrap())
        .collect();
    sb.run(&["rotate", "reencrypt", "--all", "--delete-now"])
        .ok();
    sb.run(&["prune", "--grace", "0s"]).ok();
    let unwrapped = unwraps(&sb, true, &["backup", src.to_str().unwrap()]);
    assert!(
        unwrapped >= 1,
        "the re-sealed manifest was read from the bucket"
    );
    let after = entries(&sb, "snapshots");
    assert_eq!(after.len(), 2);
    assert!(after
        .iter()
        .all(|e| !before.contains(&std::fs::read(&e.1).unwrap())));
    let out = sb.path("out");
    cached(
        &sb,
        &["restore", "latest", "--target", out.to_str().unwrap()],
    )
    .ok();
    assert_same_tree(&src, &restored(&out, &src));
}

/// Session keys the key service unwrapped for one command (its audit log).
fn unwraps(sb: &Sandbox, with_cache: bool, args: &[&str]) -> usize {
    let log = sb.path("audit.log");
    let _ = std::fs::remove_file(&log);
    let args = [&["--audit-log", log.to_str().unwrap()], args].concat();
    match with_cache {
        true => cached(sb, &args),
        false => sb.run(&args),
    }
    .ok();
    std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["purpose"] == "session-key" && v["operation"] == "decrypt")
        .count()
}

/// The owner reads a long history from its cache without asking the key service for every
/// session's key (with AWS KMS, a billed and logged call each): an unchanged backup unwraps
/// only the keys of the index it deduplicates against, not one per snapshot.
#[test]
fn a_cached_history_needs_no_key_per_snapshot() {
    let sb = Sandbox::new();
    cached(&sb, &["init"]).ok();
    let src = sb.path("src");
    for i in 0..8 {
        write(&src.join(format!("f{i}")), &random_bytes(20_000, i));
        cached(&sb, &["backup", src.to_str().unwrap()]).ok();
    }
    // Consolidates the index under the owner's session: what is left per session is the
    // history.
    sb.run(&["prune"]).ok();
    let backup = ["backup", src.to_str().unwrap()];
    let without = unwraps(&sb, false, &backup);
    assert!(without >= 8, "without the cache, {without} session keys");
    let with = unwraps(&sb, true, &backup);

    assert!(
        with <= 2,
        "with the cache, {with} session keys (8 snapshots)"
    );
    // A restore of the newest file asks for the keys of what it restores, not of the
    // history.
    let newest = src.join("f7");
    let restore = |to: &str, with_cache: bool| {
        let out = sb.path(to);
        let args = [
            "restore",
            "latest",
            "--include",
            newest.to_str().unwrap(),
            "--target",
        ];
        let n = unwraps(
            &sb,
            with_cache,
            &[&args[..], &[out.to_str().unwrap()]].concat(),
        );
        let back = std::fs::read(restored(&out, &newest)).unwrap();
        assert_eq!(back, std::fs::read(&newest).unwrap());
        n
    };
    let without = restore("out-without", false);
    let with = restore("out-with", true);

    assert!(without >= 8, "without the cache, {without} session keys");
    assert!(
        with <= 3,
        "with the cache, {with} session keys (8 snapshots)"
    );
}

/// A key service's refusal is the answer for the rest of the command: a restore asks for its
/// manifest's session key from two threads at once (the history came from the cache) and for
/// its root folder's, all one session here, and the key service is asked once.
#[test]
fn a_refused_session_key_is_asked_for_once() {
    let (sb, _) = one_cached_backup();
    let table: custody::repo::snapshots::SnapshotTable =
        cached(&sb, &["--json", "snapshots"]).ok().report();
    let record = sb.repo().join("keys").join(table.0[0].session.to_hex());
    let old = std::fs::read(&record).unwrap();
    // Every record wrapped again under a new keyring, then this session's old record put
    // back: the new keyring refuses it (it names a key it does not hold).
    let new_ring = format!("local:{}", sb.path("new-ring").display());
    sb.run(&["--key-service", &new_ring, "key", "create"]).ok();
    sb.run(&["rotate", "rewrap", "--to", &new_ring]).ok();
    std::fs::write(&record, old).unwrap();
    let log = sb.path("audit.log");
    let out = sb.path("out");
    let args = [
        "--key-service",
        &new_ring,
        "--audit-log",
        log.to_str().unwrap(),
        "restore",
        "latest",
        "--target",
        out.to_str().unwrap(),
    ];
    let run = cached(&sb, &args);
    assert_eq!(run.code, EXIT_KEY_SERVICE, "{}", run.stderr);
    let refused = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["purpose"] == "session-key" && v["operation"] == "decrypt-refused")
        .count();
    assert_eq!(refused, 1, "the key service was asked {refused} times");
}
