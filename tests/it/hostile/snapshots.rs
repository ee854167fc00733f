//! Forged snapshot manifests, sealed by sessions the writer starts itself.

use super::*;

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

fn replaced_snapshot(e: &Estate, f: &mut Findings) {
    let victim = &e.genuine[3];
    let s = Session::start(&e.w).unwrap();
    let tree = plant_tree(&e.w, &s);
    let forged = manifest(&s, victim.host, &victim.path, Utc::now(), tree);
    // Sealed with the library's envelope codec under the writer's own session, and stored
    // over the victim's object.
    let zero = Id::default();
    let binding = custody::crypto::envelope::Binding {
        repo: &e.w.id(),
        kind: custody::crypto::envelope::ObjectKind::Snapshot,
        container: &zero,
        object: &victim.id,
        key_id: &s.id,
    };
    let json = custody::format::padded_json(&forged, 1024);
    let sealed = custody::crypto::envelope::seal_object(s.dek(), &binding, &json).unwrap();
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
