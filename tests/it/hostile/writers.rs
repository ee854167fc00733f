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
        let same = std::panic::catch_unwind(|| assert_same_tree(&files, &restored(&out, &files)));
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

/// The writer signs a manifest of its own for alpha's path, now, changed by `claim`; the
/// owner's side must refuse it: never `latest`, named by `check`, and the routine keeps
/// every genuine snapshot.
fn refused_claim(e: &Estate, f: &mut Findings, claim: impl FnOnce(&mut Snapshot)) {
    let s = Session::start(&e.w).unwrap();
    let tree = plant_tree(&e.w, &s);
    let alpha = &e.genuine[1];
    let mut forged = manifest(&s, alpha.host, &alpha.path, Utc::now(), tree);
    claim(&mut forged);
    let id = e.w.save_snapshot(&s, &forged).unwrap();
    latest_alpha_is_genuine(e, f);
    check_names(e, &[id.id()], f);
    owner_routine(e, &[POLICY], true, &[EXIT_OK], f);
    restores(e, &e.kept(), "after", f);
}

fn claims_another_writer(e: &Estate, f: &mut Findings) {
    // The owner's own id, read from the writer's identity file.
    let identity = WriterIdentity::open(
        &WriterIdentity::path_in(&e.r.sb.path("writer-keyring")),
        None,
    )
    .unwrap();
    refused_claim(e, f, |m| m.writer = Some(identity.owner));
}

fn chain_link_without_writer(e: &Estate, f: &mut Findings) {
    // A place in some chain, and no writer: signed by the writer, it would be the writer's;
    // signed again by the owner (`rotate reencrypt`), the owner's.
    let prev = e.genuine[1].id;
    refused_claim(e, f, |m| {
        m.chain = Some(custody::format::history::Link {
            chain: custody::id::ChainId(Id::default()),
            seq: 7,
            prev: Some(prev),
        })
    });
}

/// The writer signs a manifest with a place in a chain but no writer named. Expected: refused
/// as untrusted (it would move into the owner's chain once the owner signs it again), named
/// by `check`, never `latest`, and the routine keeps every genuine snapshot.
#[test]
fn a_chain_link_without_its_writer_is_refused() {
    on_both(chain_link_without_writer);
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
            provisional: false,
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

fn poisoned_dedup(e: &Estate, f: &mut Findings) {
    // A file the attacker expects others to back up later (a common download, say).
    let future = random_bytes(600_000, 777);
    let mut claims = Vec::new();
    let mut rest = &future[..];
    for n in e.w.chunker().split(&future) {
        claims.push(BlobId(e.w.chunk_id(&rest[..n])));
        rest = &rest[n..];
    }
    // Junk sealed in a pack of its own, listed as if it held those chunks.
    let s = Session::start(&e.w).unwrap();
    let junk: Vec<Vec<u8>> = (0..claims.len())
        .map(|i| random_bytes(1000, 900 + i as u64))
        .collect();
    let mut listing = upload_pack(&e.w, &s, BlobType::Data, &junk);
    for (b, claim) in listing.blobs.iter_mut().zip(&claims) {
        b.id = *claim;
    }
    let pack = listing.pack;
    // A snapshot of its own that uses those chunks keeps the junk pack "in use", so prune
    // keeps its listing and consolidates it.
    let size = listing.blobs.iter().map(|b| b.raw_length as u64).sum();
    let content = claims.iter().map(|c| ChunkId(c.id())).collect();
    let mut tree = Tree {
        nodes: vec![file_node(b"download.bin", size, content)],
    };
    let bytes = tree.encode();
    let trees = upload_pack(&e.w, &s, BlobType::Tree, std::slice::from_ref(&bytes));
    let forged =
        e.w.save_index_segment(&IndexSegment {
            packs: vec![listing, trees],
            provisional: false,
        })
        .unwrap();
    let own = manifest(
        &s,
        "writer-host",
        "/srv/w",
        Utc::now(),
        TreeId(e.w.chunk_id(&bytes)),
    );
    e.w.save_snapshot(&s, &own).unwrap();
    // The owner's routine runs before anyone has the file: consolidation must not list the
    // claims again under the owner's signature.
    owner_routine(e, &[POLICY], false, &[EXIT_OK], f);
    // Then another enrolled writer, and the owner, back up the file.
    let dir = e.r.sb.path("victim-src");
    write(&dir.join("download.bin"), &future);
    let victim = e.r.sb.path("victim-keyring");
    e.r.run(&[
        "key",
        "export",
        "--role",
        "writer",
        "--to",
        victim.to_str().unwrap(),
        "--name",
        "victim",
    ])
    .ok();
    let ks = format!("local:{}", victim.display());
    for who in [Some(ks.as_str()), None] {
        let mut args = Vec::new();
        if let Some(k) = who {
            args.extend(["--key-service", k]);
        }
        args.extend([
            "--json",
            "backup",
            dir.to_str().unwrap(),
            "--host",
            "victim",
            "--force",
        ]);
        let run = e.r.run(&args);
        let label = if who.is_some() {
            "the victim writer"
        } else {
            "the owner"
        };
        f.expect(run.code == EXIT_OK, || {
            format!(
                "{label}'s backup exited {}: {}",
                run.code,
                brief(&run.stderr)
            )
        });
        let Ok(out) = serde_json::from_slice::<custody::repo::backup::BackupOutput>(&run.stdout)
        else {
            continue;
        };
        let target =
            e.r.sb
                .path(&format!("restored-{}", out.snapshot_id.short()));
        let r = e.r.run(&[
            "restore",
            &out.snapshot_id.to_hex(),
            "--target",
            target.to_str().unwrap(),
        ]);
        let same = r.code == EXIT_OK
            && std::fs::read(restored(&target, &dir).join("download.bin")).ok()
                == Some(future.clone());
        f.expect(same, || {
            format!(
                "DATA LOST: {label}'s backup of the file the writer claimed restores with exit {} and other bytes: {}",
                r.code,
                brief(&r.stderr)
            )
        });
    }
    // Prune may have collected the junk pack and its segment as unused by then; if not, check
    // names them.
    let run = e.r.run(&["--json", "check", "--read-data"]);
    if run.code != EXIT_OK {
        check_names(e, &[pack.id(), forged.id()], f);
    }
    restores(e, &e.kept(), "after", f);
}

/// Attack 14: an enrolled writer claims that a pack of junk it uploaded holds the chunks of a
/// file others will back up later, so that their backups skip storing them (dedup poisoning).
/// Expected: backups trust only their own segments and the owner's; prune lists a writer's
/// claims again under the owner's signature only after reading and verifying them, so the
/// claims never reach other backups; the file backed up afterwards by another writer and by
/// the owner restores byte for byte; `check --read-data` is clean (prune collected the junk)
/// or names the junk pack or the segment.
#[test]
fn claims_about_a_writers_own_pack_do_not_poison_other_backups() {
    on_both(poisoned_dedup);
}

fn foreign_key_record(e: &Estate, f: &mut Findings) {
    // A session record naming a KMS key: a local keyring refuses it as a key-service error.
    let session = SessionId::random().unwrap();
    let record = serde_json::json!({
        "format": 1,
        "purpose": "session-key",
        "repository": e.w.id().to_hex(),
        "key_id": session.to_hex(),
        "created": Utc::now().to_rfc3339(),
        "kek": "awskms:arn:aws:kms:us-east-1:123456789012:key/attacker",
        "algorithm": "aws-kms-symmetric-default",
        "ciphertext": "AAAA",
    });
    e.w.store()
        .put(
            FileKind::Key,
            &session,
            serde_json::to_vec(&record).unwrap().into(),
        )
        .unwrap();
    // A pack "of" that session, listed by a segment of the writer's.
    let seg =
        e.w.save_index_segment(&IndexSegment {
            packs: vec![PackEntries {
                pack: PackId::random().unwrap(),
                session,
                blobs: vec![e.genuine_blobs(BlobType::Data)[0]],
            }],
            provisional: false,
        })
        .unwrap();
    let run = e.r.run(&["--json", "check"]);
    f.expect(run.code == EXIT_INTEGRITY, || {
        format!(
            "check exited {} (want 3, not a key-service stop): {}",
            run.code,
            brief(&run.stderr)
        )
    });
    check_names(e, &[session.id(), seg.id()], f);
    owner_routine(e, &[POLICY], false, &[EXIT_OK], f);
    restores(e, &e.kept(), "after", f);
}

/// Attack 15: a forged `keys/<s>` record naming a KEK of another key service, and a segment
/// listing a pack of that session. Expected: the record is untrusted (not signed), so `check`
/// names it and exits 3 instead of stopping on the key service's refusal (exit 4), and the
/// routine runs and keeps every genuine snapshot.
#[test]
fn a_forged_key_record_naming_another_kek_does_not_stop_check() {
    on_both(foreign_key_record);
}
