//! Forged snapshot manifests, sealed by sessions the writer starts itself.

use super::*;
use custody::identity::WriterIdentity;

/// The ids `snapshots --json` lists now.
fn listed(e: &Estate) -> Vec<SnapshotId> {
    let run = e.r.run(&["--json", "snapshots"]);
    let table: custody::repo::snapshots::SnapshotTable = run.ok().report();
    table.0.into_iter().map(|s| s.id).collect()
}

fn future_snapshots(e: &Estate, f: &mut Findings) {
    let s = Session::start(&e.w).unwrap();
    let own = plant_tree(&e.w, &s);
    let theirs = TreeId(e.genuine_blobs(BlobType::Tree)[0].id.id());
    let alpha = &e.genuine[1];
    for month in 1..=12 {
        let tree = if month % 2 == 0 { own } else { theirs };
        let time = Utc::now() + chrono::Duration::days(31 * month);
        let forged = manifest(&s, alpha.host, &alpha.path, time, tree);
        e.w.save_snapshot(&s, &forged).unwrap();
    }
    let within: &[&str] = &["--keep-within", "30d"];
    owner_routine(e, &[POLICY, within], false, &[EXIT_OK, EXIT_INTEGRITY], f);
    let now = listed(e);
    for g in e.kept() {
        f.expect(now.contains(&g.id), || {
            format!("forget removed {}, which the policy keeps", g.label())
        });
    }
    restores(e, &e.kept(), "after", f);
}

/// Attack 5: twelve manifests claiming alpha's host and path, dated in each of the next
/// twelve months, pointing at a genuine tree or at a tree of the writer's own. The owner then
/// forgets with `--keep-daily 7 --keep-weekly 5 --keep-monthly 12` and with `--keep-within
/// 30d`. Expected: every genuine snapshot the policy would keep without the forgeries (each
/// host's newest) is still listed after the routine, and restores.
#[test]
fn future_dated_snapshots_do_not_steer_forget() {
    on_both(future_snapshots);
}

/// A manifest of the writer's own (its planted tree, under `victim`'s host and path), sealed
/// with the library's envelope codec under the writer's own session for `victim`'s id, and
/// `signed` with the writer's key or not.
fn forged_manifest(e: &Estate, victim: &Genuine, signed: bool) -> Vec<u8> {
    let s = Session::start(&e.w).unwrap();
    let tree = plant_tree(&e.w, &s);
    let forged = manifest(&s, victim.host, &victim.path, Utc::now(), tree);
    let zero = Id::default();
    let binding = custody::crypto::envelope::Binding {
        repo: &e.w.id(),
        kind: custody::crypto::envelope::ObjectKind::Snapshot,
        container: &zero,
        object: &victim.id,
        key_id: &s.id,
    };
    let mut json = custody::format::padded_json(&forged, 1024);
    if signed {
        let path = WriterIdentity::path_in(&e.r.sb.path("writer-keyring"));
        let me = WriterIdentity::open(&path, None).unwrap();
        let kind = custody::crypto::envelope::ObjectKind::Snapshot as u8;
        json = custody::format::signature::sign(&me.key, kind, &e.w.id(), &victim.id, json);
    }
    custody::crypto::envelope::seal_object(s.dek(), &binding, &json).unwrap()
}

fn replaced_snapshot(e: &Estate, f: &mut Findings) {
    let victim = &e.genuine[3];
    // Stored over the victim's object.
    let sealed = forged_manifest(e, victim, false);
    e.w.store()
        .put(FileKind::Snapshot, &victim.id, sealed.into())
        .unwrap();

    let out = e.r.sb.path("restored-replaced");
    let run =
        e.r.run(&["restore", &victim.hex(), "--target", out.to_str().unwrap()]);
    let refused = run.code == EXIT_INTEGRITY && run.stderr.contains(&victim.hex());
    f.expect(refused, || {
        let took = out.join("pwned.txt").exists();
        format!(
            "restore of {} (replaced by the writer) exited {}{}: {}",
            victim.label(),
            run.code,
            if took {
                " with the writer's pwned.txt"
            } else {
                ""
            },
            brief(&run.stderr)
        )
    });
    check_names(e, &[victim.id.id()], f);
    owner_routine(e, &[POLICY], true, &[EXIT_OK, EXIT_INTEGRITY], f);
    restores(e, &[&e.genuine[1]], "after", f);
    // The owner removes the forged manifest by id (it does not open, so it is not read), and
    // prune runs again.
    let run = e.r.run(&["forget", &victim.hex()]);
    f.expect(run.code == EXIT_OK, || {
        format!(
            "forget of the forged manifest exited {}: {}",
            run.code,
            brief(&run.stderr)
        )
    });
    let run = e.r.run(&["prune"]);
    f.expect(run.code == EXIT_OK, || {
        format!(
            "prune after that exited {}: {}",
            run.code,
            brief(&run.stderr)
        )
    });
    restores(e, &[&e.genuine[1]], "after the clean-up", f);
}

/// Attack 6: the writer seals a manifest of its own under a fresh session and stores it as
/// `snapshots/<id>` of beta's newest snapshot. Expected: restoring that id refuses (exit 3,
/// naming the object) instead of restoring the writer's files, check names it, and alpha's
/// snapshot still restores after the routine. (Snapshot ids are bound to their manifests:
/// docs/FORMAT.md §2.)
#[test]
fn a_snapshot_replaced_under_its_id_is_refused() {
    on_both(replaced_snapshot);
}

fn tagged_copy_claim(e: &Estate, f: &mut Findings) {
    let s = Session::start(&e.w).unwrap();
    let tree = plant_tree(&e.w, &s);
    let alpha = &e.genuine[1];
    let mut forged = manifest(&s, alpha.host, &alpha.path, Utc::now(), tree);
    // Claims to be the owner's tagged copy of a genuine snapshot.
    forged.original = Some(alpha.id);
    let id = e.w.save_snapshot(&s, &forged).unwrap();
    let run = e.r.run(&["snapshots"]);
    f.expect(
        run.code == EXIT_INTEGRITY
            && run.stderr.contains(&id.to_hex())
            && run.stderr.contains("only the owner tags"),
        || format!("snapshots exited {}: {}", run.code, brief(&run.stderr)),
    );
    // forget keeps and names it (exit 3), as any manifest it cannot trust.
    owner_routine(e, &[POLICY], true, &[EXIT_OK, EXIT_INTEGRITY], f);
    restores(e, &e.kept(), "after", f);
}

/// Attack 7: the writer stores a manifest of its own that claims to be a tagged copy
/// (`original` set), which would move it into the owner's chain once `rotate reencrypt`
/// signs it again. Expected: refused as untrusted, named, and the routine goes on.
#[test]
fn a_writer_cannot_claim_a_tagged_copy() {
    on_both(tagged_copy_claim);
}

/// The owner's cache folder, as its environment variable.
fn owner_cache(e: &Estate) -> (&'static str, String) {
    let dir = e.r.sb.path("owner-cache");
    ("CUSTODY_CACHE_DIR", dir.display().to_string())
}

/// The owner backs up `g`'s path again, as its host, with `cache`.
fn cached_backup(
    e: &Estate,
    cache: &(&'static str, String),
    g: &Genuine,
) -> custody::repo::backup::BackupOutput {
    let args = ["--json", "backup", &g.path, "--host", g.host];
    e.r.run_with(std::slice::from_ref(cache), &args)
        .ok()
        .report()
}

fn forged_cache_entry(e: &Estate, f: &mut Findings) {
    let cache = owner_cache(e);
    let victim = &e.genuine[3];
    let backup = || cached_backup(e, &cache, victim);
    // The owner's first backup with a cache fills it with every manifest it reads.
    let first = backup();
    f.expect(first.parent == Some(victim.id), || {
        format!("the first backup's parent is {:?}", first.parent)
    });
    let entry = |id: &SnapshotId| {
        let repo_dir = std::fs::read_dir(e.r.sb.path("owner-cache")).unwrap();
        let repo_dir = repo_dir.flatten().next().unwrap().path();
        repo_dir.join("snapshots").join(id.to_hex())
    };
    f.expect(entry(&first.snapshot_id).exists(), || {
        "the backup's own manifest is not cached".into()
    });

    // A manifest of the writer's sealed for the newest snapshot's id and signed by the
    // writer, put in the cache in place of the genuine one (the store keeps the genuine
    // one). It opens under the writer's session and its signature holds, but it is not
    // sealed for the owner, and the id is bound to the genuine manifest: the backup reads
    // the store's copy, takes it as parent and caches it again.
    let newest = Genuine {
        id: first.snapshot_id,
        host: victim.host,
        path: victim.path.clone(),
        files: victim.files.clone(),
    };
    let forged = forged_manifest(e, &newest, true);
    std::fs::write(entry(&newest.id), &forged).unwrap();
    let second = backup();
    f.expect(second.parent == Some(newest.id), || {
        format!(
            "with a forged manifest cached for {}, the backup's parent is {:?}",
            newest.id.short(),
            second.parent
        )
    });
    f.expect(second.files_unchanged > 0, || {
        "the backup read every file again (no parent tree)".into()
    });
    f.expect(
        std::fs::read(entry(&newest.id)).is_ok_and(|now| now != forged),
        || "the forged cache entry was not replaced".into(),
    );
    restores(e, &[victim], "after the forged cache entry", f);
}

/// The owner's backup caches manifests (src/repo/cache.rs). A manifest the writer sealed
/// under a genuine snapshot's id, put in that cache, is not taken: the backup's parent is the
/// genuine snapshot and the cache holds the store's copy again.
#[test]
fn a_forged_manifest_in_the_backup_cache_is_not_taken() {
    on_both(forged_cache_entry);
}

fn forged_key_record(e: &Estate, f: &mut Findings) {
    let cache = owner_cache(e);
    let victim = &e.genuine[3];
    let backup = || cached_backup(e, &cache, victim);
    // The writer wraps a key of its own under the owner's KEK for the victim's session, and
    // stores it over that session's record: the signature and time copied, so the record has
    // the genuine one's size. It unwraps, to the wrong key.
    let session = e.w.snapshot_session(&victim.id).unwrap();
    let genuine = e.w.store().get(FileKind::Key, &session).unwrap();
    let mut rec: custody::format::wrapped::WrappedKeyRecord =
        serde_json::from_slice(&genuine).unwrap();
    let ctx = custody::format::wrapped::context(
        custody::format::wrapped::Purpose::SessionKey,
        &e.w.id(),
        &session,
    );
    let (_, wrapped) =
        e.w.key_service()
            .generate_data_key(custody::format::wrapped::Purpose::SessionKey, &ctx)
            .unwrap();
    rec.wrapped = wrapped;
    let forged = serde_json::to_vec_pretty(&rec).unwrap();
    f.expect(forged.len() == genuine.len(), || {
        format!(
            "the forged record is {} bytes, the genuine {}",
            forged.len(),
            genuine.len()
        )
    });
    e.w.store()
        .put(FileKind::Key, &session, forged.into())
        .unwrap();
    // The owner's backup reads the forged record: the victim's manifest does not open, so
    // there is no parent; nothing of the forgery may be kept.
    let first = backup();
    f.expect(first.parent.is_none(), || {
        format!(
            "with a forged key record, the backup's parent is {:?}",
            first.parent
        )
    });
    // The genuine record is put back (say, from the bucket's versions): a restore on the
    // same machine, through the same cache, reads the victim again.
    e.w.store().put(FileKind::Key, &session, genuine).unwrap();
    let out = e.r.sb.path("restored-after-forged-key");
    let args = ["restore", &victim.hex(), "--target", out.to_str().unwrap()];
    let run = e.r.run_with(std::slice::from_ref(&cache), &args);
    f.expect(run.code == EXIT_OK, || {
        format!(
            "after the genuine record is back, restoring {} exited {} (the forged record was cached): {}",
            victim.label(),
            run.code,
            brief(&run.stderr)
        )
    });
}

/// A key record the writer forged for a genuine session unwraps, to a key of the writer's.
/// Key records are never cached (a record that unwraps proves nothing), so once the genuine
/// record is back in the bucket the owner's restores through the same cache read the
/// session's snapshot again.
#[test]
fn a_forged_key_record_is_not_cached() {
    on_both(forged_key_record);
}
