//! Writer provenance (docs/FORMAT.md §17): what an enrolled writer's signature does and does
//! not buy it, a key that was never enrolled, and a revoked writer.

use super::*;
use custody::format::garbage::LockRecord;
use custody::identity::WriterIdentity;
use custody::LockId;

/// `snapshots --json` ids, whatever the exit code (an untrusted snapshot makes it 3).
fn listed_ids(e: &Estate) -> Vec<SnapshotId> {
    let run = e.r.run(&["--json", "snapshots"]);
    serde_json::from_slice::<custody::repo::snapshots::SnapshotTable>(&run.stdout)
        .map(|t| t.0.into_iter().map(|s| s.id).collect())
        .unwrap_or_default()
}

/// `restore latest --host alpha` must give alpha's genuine newest snapshot.
fn latest_alpha_is_genuine(e: &Estate, f: &mut Findings) {
    let out = e.r.sb.path("latest-alpha");
    let run = e.r.run(&[
        "restore",
        "latest",
        "--host",
        "alpha",
        "--target",
        out.to_str().unwrap(),
    ]);
    f.expect(
        run.code == EXIT_OK && !out.join("data/pwned.txt").exists(),
        || {
            format!(
                "restore latest --host alpha exited {} (pwned.txt: {}): {}",
                run.code,
                out.join("data/pwned.txt").exists(),
                brief(&run.stderr)
            )
        },
    );
    if run.code == EXIT_OK {
        let files = e.genuine[1].files.clone();
        let same = std::panic::catch_unwind(|| assert_same_tree(&files, &out.join("data")));
        f.expect(same.is_ok(), || {
            "latest --host alpha restored other files".into()
        });
    }
}

fn past_dated_other_host(e: &Estate, f: &mut Findings) {
    let s = Session::start(&e.w).unwrap();
    let tree = plant_tree(&e.w, &s);
    let alpha = &e.genuine[1];
    // Twelve snapshots claiming alpha's host and path, one per day back, then one a minute
    // from now (within the clock-skew allowance): they would fill alpha's daily slots and
    // make `latest --host alpha` the writer's, were groups made by host and paths alone.
    for day in 1..=12 {
        let time = Utc::now() - chrono::Duration::days(day);
        e.w.save_snapshot(&s, &manifest(&s, alpha.host, &alpha.path, time, tree))
            .unwrap();
    }
    let newest = manifest(
        &s,
        alpha.host,
        &alpha.path,
        Utc::now() + chrono::Duration::minutes(1),
        tree,
    );
    e.w.save_snapshot(&s, &newest).unwrap();
    owner_routine(e, &[POLICY, &["--keep-last", "1"]], false, &[EXIT_OK], f);
    let now = listed_ids(e);
    for g in e.kept() {
        f.expect(now.contains(&g.id), || {
            format!("forget removed {}, which the policy keeps", g.label())
        });
    }
    restores(e, &e.kept(), "after", f);
}

/// Attack 9: an enrolled writer signs snapshots claiming alpha's host and path, dated on each
/// of the last twelve days and a minute ahead. Expected: `forget` groups by writer, so alpha's
/// genuine snapshots keep their slots (with `--keep-last 1` too) and restore after the
/// routine. (`latest --host alpha` does return the writer's newest: a host name is the
/// writer's claim; `snapshots` and `forget` show which writer made each.)
#[test]
fn past_dated_snapshots_claiming_another_host_do_not_steer_forget() {
    on_both(past_dated_other_host);
}

fn claims_another_writer(e: &Estate, f: &mut Findings) {
    let s = Session::start(&e.w).unwrap();
    let tree = plant_tree(&e.w, &s);
    let alpha = &e.genuine[1];
    let mut forged = manifest(&s, alpha.host, &alpha.path, Utc::now(), tree);
    // The owner's own id, read from the writer's identity file.
    let identity = WriterIdentity::open(
        &WriterIdentity::path_in(&e.r.sb.path("writer-keyring")),
        None,
    )
    .unwrap();
    forged.writer = Some(identity.owner);
    let id = e.w.save_snapshot(&s, &forged).unwrap();
    latest_alpha_is_genuine(e, f);
    check_names(e, &[id.id()], f);
    owner_routine(e, &[POLICY], true, &[EXIT_OK], f);
    restores(e, &e.kept(), "after", f);
}

/// Attack 10: the writer signs a manifest that names the owner as its writer, to join the
/// owner's group and be `latest`. Expected: refused as untrusted (signed by one writer,
/// claiming another), named by `check`, never `latest`, and the routine keeps every genuine
/// snapshot.
#[test]
fn a_snapshot_claiming_another_writer_is_refused() {
    on_both(claims_another_writer);
}

fn unenrolled_key(e: &Estate, f: &mut Findings) {
    // The attacker makes an identity of its own: the same owner id, a key nobody enrolled.
    let mine = WriterIdentity::open(
        &WriterIdentity::path_in(&e.r.sb.path("writer-keyring")),
        None,
    )
    .unwrap();
    let rogue = WriterIdentity {
        repository: mine.repository,
        name: "rogue".into(),
        owner: mine.owner,
        key: custody::crypto::signing::SigningKey::generate().unwrap(),
    };
    let (rt, _) = (tokio::runtime::Runtime::new().unwrap(), ());
    let store = e.w.store().inner().clone();
    let keys = e.w.key_service().inner().clone();
    let config = Repository::read_config(rt.handle(), &store).unwrap();
    let w = Repository::open(rt.handle().clone(), store, keys, config, Some(rogue)).unwrap();
    let s = Session::start(&w).unwrap();
    let tree = plant_tree(&w, &s);
    let alpha = &e.genuine[1];
    let id = w
        .save_snapshot(&s, &manifest(&s, alpha.host, &alpha.path, Utc::now(), tree))
        .unwrap();
    let seg = w
        .save_index_segment(&IndexSegment {
            packs: e.genuine_listings(BlobType::Data),
        })
        .unwrap();
    drop(w);
    drop(rt);
    latest_alpha_is_genuine(e, f);
    check_names(e, &[id.id(), seg.id()], f);
    owner_routine(e, &[POLICY], true, &[EXIT_OK], f);
    restores(e, &e.kept(), "after", f);
}

/// Attack 11: objects signed by a key that was never enrolled (a snapshot claiming alpha, a
/// segment listing every genuine data pack again). Expected: both untrusted and named by
/// `check`, the snapshot never `latest`, and the routine keeps every genuine snapshot.
#[test]
fn objects_signed_by_an_unenrolled_key_are_refused() {
    on_both(unenrolled_key);
}

fn revoked_writer(e: &Estate, f: &mut Findings) {
    // Before its revocation the writer stores a snapshot of its own (it stays valid).
    let s = Session::start(&e.w).unwrap();
    let tree = plant_tree(&e.w, &s);
    let before =
        e.w.save_snapshot(&s, &manifest(&s, "writer-host", "/srv/w", Utc::now(), tree))
            .unwrap();
    let run = e.r.run(&["--json", "key", "revoke", "writer-keyring"]);
    f.expect(run.code == EXIT_OK, || {
        format!("key revoke exited {}: {}", run.code, brief(&run.stderr))
    });
    // Afterwards (its repository still open) it stores one claiming alpha, dated now.
    let alpha = &e.genuine[1];
    let after =
        e.w.save_snapshot(&s, &manifest(&s, alpha.host, &alpha.path, Utc::now(), tree))
            .unwrap();
    let listed = listed_ids(e);
    f.expect(listed.contains(&before) && !listed.contains(&after), || {
        format!("snapshots lists {listed:?}: want {before} (before the revocation) and not {after}")
    });
    latest_alpha_is_genuine(e, f);
    check_names(e, &[after.id()], f);
    let out = e.r.sb.path("restored-before-revocation");
    let run = e.r.run(&[
        "restore",
        &before.to_hex(),
        "--target",
        out.to_str().unwrap(),
    ]);
    f.expect(run.code == EXIT_OK, || {
        format!(
            "restore of the writer's snapshot from before its revocation exited {}: {}",
            run.code,
            brief(&run.stderr)
        )
    });
    // The revoked writer's keyring is told so at its next backup.
    let keyring = e.r.sb.path("writer-keyring");
    let ks = format!("local:{}", keyring.display());
    let src = e.genuine[1].files.to_str().unwrap().to_string();
    let run = e.r.run(&["--key-service", &ks, "backup", &src]);
    f.expect(
        run.code == EXIT_KEY_SERVICE && run.stderr.contains("revoked"),
        || {
            format!(
                "a backup with the revoked keyring exited {}: {}",
                run.code,
                brief(&run.stderr)
            )
        },
    );
    let run = e.r.run(&["--json", "key", "writers"]);
    f.expect(
        run.code == EXIT_OK && String::from_utf8_lossy(&run.stdout).contains("\"revoked\""),
        || format!("key writers does not show the revocation: {}", run.out()),
    );
    owner_routine(e, &[POLICY], true, &[EXIT_OK], f);
    restores(e, &e.kept(), "after", f);
}

/// Attack 12: the owner revokes the writer (`key revoke`); the writer, its repository still
/// open, then stores a snapshot claiming alpha. Expected: that snapshot is refused (not
/// listed, never `latest`, named by `check`), the one it stored before stays valid and
/// restores, its keyring's next backup is refused (exit 4, "revoked"), `key writers` shows the
/// revocation, and the routine keeps every genuine snapshot.
#[test]
fn a_revoked_writers_later_snapshot_is_refused() {
    on_both(revoked_writer);
}

fn live_lock(e: &Estate, f: &mut Findings) {
    let now = Utc::now();
    let lock = LockRecord {
        format: 1,
        operation: "prune".into(),
        host: "backup-host".into(),
        pid: 4242,
        started: now,
        refreshed: now,
    };
    let id = LockId::random().unwrap();
    e.w.save_object(&id, &lock).unwrap();
    check_names(e, &[id.id()], f);
    owner_routine(e, &[POLICY], false, &[EXIT_OK], f);
    restores(e, &e.kept(), "after", f);
}

/// Attack 13: the writer seals a lock that looks alive (started and renewed now), as a prune
/// in progress would. Expected: only the owner's locks count, so the owner's prunes run (exit
/// 0), `check` names the lock, and every kept snapshot restores.
#[test]
fn a_writers_live_lock_does_not_block_prune() {
    on_both(live_lock);
}
